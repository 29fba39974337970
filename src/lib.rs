//! traft: a production Raft library on plain OS threads, modelled on Baidu's braft.
//!
//! A node joins a replication group, elects a leader, replicates a log to disk on every peer,
//! applies committed entries to the user's state machine, takes snapshots, changes membership
//! and restarts from its own disk with nothing lost. There is no async runtime: traft owns a
//! small, fixed set of named threads (see [`runtime`]) and every public call either enqueues
//! work or completes a `FnOnce(Result<_, RaftError>)` closure.
//!
//! Layout (DESIGN.md section 3): [`types`] and [`fs`] are the shared vocabulary; [`runtime`],
//! [`timer`], [`exec_queue`] and [`io_loop`] are the threads; [`error`] is the one error type.
//! [`core`] is the Raft protocol as a pure state machine (with [`ballot_box`] and [`lease`]);
//! `sim` (tests and the `sim` feature) is the deterministic simulator that checks it.

#![warn(missing_docs)]
#![doc = include_str!("../README.md")]
#![deny(clippy::undocumented_unsafe_blocks)]

pub mod ballot_box;
pub mod capi;
pub mod cli;
pub mod core;
pub mod error;
pub mod exec_queue;
pub mod fs;
pub mod fsm_caller;
pub mod io_loop;
pub mod lease;
pub mod log_manager;
pub mod log_storage;
pub mod logging;
pub mod meta_storage;
pub mod node;
pub mod node_manager;
pub mod pool;
pub mod rpc;
pub mod runtime;
#[cfg(any(test, feature = "sim"))]
pub mod sim;
pub mod snapshot;
pub mod state_machine;
pub mod testing;
pub mod timer;
pub mod types;

pub use crate::core::{Action, Actions, CoreOptions, Event, RaftCore, Role};
pub use error::{RaftError, Result};
pub use exec_queue::{Batch, ExecQueue, ExecQueueOptions, Rejected};
pub use rpc::{Caller, Method, Request, Responder, Server, ServerOptions, Status};
pub use runtime::{Runtime, RuntimeOptions};
pub use timer::{RepeatedTimer, RepeatedTimerOptions, Timer};
pub use types::{Configuration, EntryType, GroupId, LogEntry, LogId, LogRead, PeerId};
