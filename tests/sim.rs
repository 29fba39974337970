//! Simulator runs.
