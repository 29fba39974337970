//! Fairness tests.
