//! The transport (DESIGN.md section 6; braft's brpc layer, reduced to what Raft needs): a
//! framed TCP protocol on the runtime's mio IO loops, calls multiplexed by correlation id over
//! one outgoing connection per remote endpoint, and, for tests, a fault layer.
//!
//! - [`Server`] listens, serves registered [`Method`]s and makes calls ([`Server::call`]).
//! - [`frame`]: the wire format and its decoder; [`method`]: method and status numbers.
//! - [`Caller`]: who calls and where completions run (a queue on the raft pool).
//! - `fault` (feature `fault-injection`): drop, delay, duplicate, partition per link.
//!
//! Threads: sockets are owned by the IO threads (`traft-io-N`), which parse and write bytes,
//! call handlers that only enqueue, and hand completions to callers' queues; deadlines fire
//! on the timer thread, which only enqueues too. Nothing here runs a handler's work or a
//! caller's `done` closure on an IO or timer thread, and nothing blocks them. Bodies travel
//! as `bytes::Bytes` chunks: written with `writev`, received as slices of the read buffer,
//! never copied. docs/PROTOCOL.md describes the bytes on the wire.

mod caller;
mod client;
mod connection;
#[cfg(any(test, feature = "fault-injection"))]
pub mod fault;
pub mod frame;
mod inbound;
pub mod method;
mod options;
mod outbox;
mod server;

use std::time::Instant;

pub use caller::{Caller, Completion, CompletionSink, DoneFn};
pub use inbound::{Request, Responder};
pub use method::{Method, Status};
pub use options::ServerOptions;
pub use server::{Handler, Server, ServerStats, CALL_TIMEOUT_MAX};

#[cfg(any(test, feature = "fault-injection"))]
pub use fault::{FaultHandle, FaultStats, LinkFaults};

/// What happens to one outgoing frame: sent `copies` times (0: dropped), now or at
/// `delay_until`. Only the fault layer makes it anything but [`Delivery::NORMAL`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Delivery {
    pub copies: u8,
    pub delay_until: Option<Instant>,
}

impl Delivery {
    /// Sent once, now.
    pub const NORMAL: Delivery = Delivery {
        copies: 1,
        delay_until: None,
    };
}

#[cfg(test)]
mod tests;
