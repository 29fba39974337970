//! The Raft node: one peer of one group (braft's NodeImpl). Work in progress on the
//! integration branch; see the module list for what exists.

pub mod options;
pub mod timers;
pub mod wire;

pub use options::NodeOptions;
