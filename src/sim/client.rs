//! Simulated clients and the history they record.
//!
//! Each client runs one operation at a time. It sends it to the peer it believes leads; a
//! definite refusal (not the leader, or the proposal lost its slot to another entry) sends it
//! elsewhere, so an operation is never executed twice. A client that hears nothing by the
//! operation's deadline gives up: the outcome is unknown (a write may or may not have taken
//! effect; an unknown read is dropped from the history).

use crate::sim::kv::{Cmd, Op, OpResult};
use crate::sim::linearizability::HistoryOp;

/// A peer's answer to a client.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reply {
    /// Executed, with this result.
    Done(OpResult),
    /// Not the leader (and the leader it knows, by index).
    NotLeader(Option<usize>),
    /// Proposed, but another entry was committed at its index: not executed.
    Failed,
}

/// The operation a client is running.
#[derive(Clone, Copy, Debug)]
pub struct Running {
    /// The command.
    pub cmd: Cmd,
    /// When it was invoked (history clock).
    pub invoke: u64,
    /// When the client gives up (real microseconds).
    pub deadline_us: u64,
}

/// One client.
#[derive(Clone, Debug)]
pub struct Client {
    /// Its id.
    pub id: u32,
    /// The operation in progress.
    pub running: Option<Running>,
    /// The peer it sends to.
    pub leader_guess: usize,
    /// The last value it saw per key (for compare-and-swap).
    pub last_seen: Vec<Option<u64>>,
}

/// The history of every key, and counts of outcomes.
#[derive(Clone, Debug, Default)]
pub struct History {
    /// Operations per key.
    pub per_key: Vec<Vec<HistoryOp>>,
    /// A strictly increasing clock of invocations and completions.
    clock: u64,
    /// Operations invoked.
    pub invoked: u64,
    /// Completed with a result.
    pub ok: u64,
    /// Writes whose outcome is unknown (kept, completing at infinity).
    pub unknown_writes: u64,
    /// Reads whose outcome is unknown (dropped).
    pub unknown_reads: u64,
}

impl History {
    /// A history over `keys` keys.
    pub fn new(keys: u32) -> History {
        History {
            per_key: vec![Vec::new(); keys as usize],
            ..History::default()
        }
    }

    /// The next instant of the history clock.
    pub fn tick(&mut self) -> u64 {
        self.clock += 1;
        self.clock
    }

    /// Records a completed operation.
    pub fn complete(&mut self, run: &Running, result: OpResult) {
        let complete = self.tick();
        self.ok += 1;
        self.per_key[run.cmd.key as usize].push(HistoryOp {
            client: run.cmd.client,
            invoke: run.invoke,
            complete: Some(complete),
            op: run.cmd.op,
            result: Some(result),
        });
    }

    /// Records an operation whose outcome is unknown.
    pub fn give_up(&mut self, run: &Running) {
        if run.cmd.op == Op::Get {
            self.unknown_reads += 1;
            return;
        }
        self.unknown_writes += 1;
        self.per_key[run.cmd.key as usize].push(HistoryOp {
            client: run.cmd.client,
            invoke: run.invoke,
            complete: None,
            op: run.cmd.op,
            result: None,
        });
    }

    /// Every operation that was acknowledged as having written (a put, a successful swap):
    /// each must be in the committed log.
    pub fn acknowledged_writes(&self) -> impl Iterator<Item = (u32, &HistoryOp)> + '_ {
        self.per_key.iter().enumerate().flat_map(|(k, ops)| {
            ops.iter()
                .filter(|o| {
                    matches!(
                        o.result,
                        Some(OpResult::Written) | Some(OpResult::Swapped(true))
                    )
                })
                .map(move |o| (k as u32, o))
        })
    }
}
