//! [`ServerOptions`]: where a [`Server`](super::Server) listens, which runtime runs it, and
//! every bound of the transport, validated with exact messages.

use std::net::SocketAddr;

use slog::Logger;

use super::frame::FRAME_BYTES_MAX_MIN;
use crate::error::{RaftError, Result};
use crate::runtime::Runtime;

/// Settings of one [`Server`](super::Server).
#[derive(Clone)]
pub struct ServerOptions {
    /// Address to listen on; port 0 picks a free port (read it back with `local_addr`).
    pub listen_addr: SocketAddr,
    /// The runtime whose IO loops, timer and raft pool serve this server; `None` uses
    /// [`Runtime::global`].
    pub runtime: Option<Runtime>,
    /// Where connection events and closing reasons are logged.
    pub logger: Logger,
    /// The largest frame (header + body) sent or accepted. A received frame over it closes
    /// its connection; a call with a larger body fails with `Invalid`. Default 64 MiB.
    pub frame_bytes_max: usize,
    /// Bytes queued on one connection and not yet taken by its IO thread; a call beyond it
    /// fails with `Busy` (a response beyond it is replaced by a `Busy` status). Default
    /// 64 MiB.
    pub queued_bytes_max: usize,
    /// Receive buffer of every connection (`SO_RCVBUF`; Linux doubles it for bookkeeping).
    /// It bounds the TCP window, so bulk data that the receiver has not read yet waits in the
    /// sender's outbox, where callers take turns, instead of in the receiver's kernel queue,
    /// where a heartbeat would queue behind all of it. A heartbeat then waits behind at most
    /// about this plus `socket_unsent_bytes_max` plus one frame. The price: one connection
    /// carries at most about this much per round trip, for all groups together (128 KiB per
    /// 100 us is 1.3 GB/s, per 1 ms 130 MB/s), so raise it for links whose bandwidth-delay
    /// product is larger (0 keeps the kernel's autotuning: full throughput, unbounded
    /// head-of-line wait). Default 128 KiB.
    pub socket_recv_buffer_bytes: usize,
    /// Unsent bytes the kernel may hold per socket (`TCP_NOTSENT_LOWAT`): like the receive
    /// buffer, keeps the backlog in the outbox. Costs no throughput (it does not limit the
    /// window). 0 leaves the kernel default. Default 16 KiB.
    pub socket_unsent_bytes_max: usize,
    /// An outgoing connection not established within this fails its calls. Default 1000.
    pub connect_timeout_ms: u64,
    /// First delay before reconnecting after a failed connection; doubles per failure.
    /// Default 10.
    pub reconnect_backoff_min_ms: u64,
    /// Cap of the reconnect delay. Default 1000.
    pub reconnect_backoff_max_ms: u64,
    /// A connection with part of a frame received and no byte for this long, or with frames
    /// to write and none of their bytes taken by the peer for this long, is closed (its
    /// calls fail at once; the client reconnects). Default 10000.
    pub frame_stall_timeout_ms: u64,
    /// An accepted connection that received nothing for this long is closed; 0 never.
    /// Default 300000.
    pub idle_timeout_ms: u64,
    /// Accepted connections open at once; a peer connecting beyond it is closed at once
    /// (each connection may hold up to a frame of buffer). Default 1000.
    pub accepted_connections_max: usize,
    /// The fault layer shared by every server of a test (feature `fault-injection`).
    #[cfg(any(test, feature = "fault-injection"))]
    pub fault: Option<super::fault::FaultHandle>,
}

impl ServerOptions {
    /// Defaults, listening on `listen_addr`.
    pub fn new(listen_addr: SocketAddr) -> ServerOptions {
        ServerOptions {
            listen_addr,
            runtime: None,
            logger: crate::logging::component_logger(&crate::logging::default_logger(), "rpc"),
            frame_bytes_max: 64 << 20,
            queued_bytes_max: 64 << 20,
            socket_recv_buffer_bytes: 128 << 10,
            socket_unsent_bytes_max: 16 << 10,
            connect_timeout_ms: 1000,
            reconnect_backoff_min_ms: 10,
            reconnect_backoff_max_ms: 1000,
            frame_stall_timeout_ms: 10_000,
            idle_timeout_ms: 300_000,
            accepted_connections_max: 1000,
            #[cfg(any(test, feature = "fault-injection"))]
            fault: None,
        }
    }

    /// Checks every bound; the message names the field and the rule.
    pub fn validate(&self) -> Result<()> {
        let bad = |s: String| Err(RaftError::invalid(format!("ServerOptions.{s}")));
        if self.frame_bytes_max < FRAME_BYTES_MAX_MIN || self.frame_bytes_max > u32::MAX as usize {
            return bad(format!(
                "frame_bytes_max = {} must be in {FRAME_BYTES_MAX_MIN}..={}",
                self.frame_bytes_max,
                u32::MAX
            ));
        }
        if self.queued_bytes_max < self.frame_bytes_max {
            return bad(format!(
                "queued_bytes_max = {} must be >= frame_bytes_max = {}",
                self.queued_bytes_max, self.frame_bytes_max
            ));
        }
        for (name, v) in [
            ("connect_timeout_ms", self.connect_timeout_ms),
            ("reconnect_backoff_min_ms", self.reconnect_backoff_min_ms),
            ("frame_stall_timeout_ms", self.frame_stall_timeout_ms),
            (
                "accepted_connections_max",
                self.accepted_connections_max as u64,
            ),
        ] {
            if v == 0 {
                return bad(format!("{name} must be > 0"));
            }
        }
        if self.reconnect_backoff_max_ms < self.reconnect_backoff_min_ms {
            return bad(format!(
                "reconnect_backoff_max_ms = {} must be >= reconnect_backoff_min_ms = {}",
                self.reconnect_backoff_max_ms, self.reconnect_backoff_min_ms
            ));
        }
        Ok(())
    }
}
