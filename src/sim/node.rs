//! One simulated peer: its core, its in-memory log (the LogManager's view) and disk model
//! (what a crash keeps), its state machine, and the proposals it waits on.
//!
//! The disk model: writes (appends, truncations) and meta writes complete in order, each after
//! a random latency; a write is durable exactly when it completes. A crash keeps what
//! completed and loses everything else (RELIABILITY.md: a crash drops every unsynced write).

use std::collections::{BTreeMap, VecDeque};

use crate::core::{Action, HardState, RaftCore};
use crate::sim::kv::{Cmd, KvStore};
use crate::sim::network::Clock;
use crate::types::{EntryType, LogId, LogRead, PeerId};

/// One log entry as the simulated LogManager holds it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SimEntry {
    /// Index and term.
    pub id: LogId,
    /// Kind.
    pub kind: EntryType,
    /// The client command of a data entry.
    pub cmd: Option<Cmd>,
}

/// A log write waiting on the simulated disk.
#[derive(Clone, Debug)]
pub enum DiskOp {
    /// Append these entries (they follow the log).
    Append(Vec<SimEntry>),
    /// Drop everything after this index.
    Truncate(u64),
}

/// A proposal this peer made for a client, waiting to be applied.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Proposal {
    /// The LogId the core gave it.
    pub id: LogId,
    /// Who asked.
    pub client: u32,
    /// The operation.
    pub op_id: u64,
}

/// A `LogRead` over a slice of entries starting at index 1.
pub struct LogSlice<'a>(pub &'a [SimEntry]);

impl LogRead for LogSlice<'_> {
    fn first_index(&self) -> u64 {
        1
    }
    fn last_index(&self) -> u64 {
        self.0.len() as u64
    }
    fn term_at(&self, index: u64) -> Option<u64> {
        match index {
            0 => Some(0),
            i => self.0.get(i as usize - 1).map(|e| e.id.term),
        }
    }
}

/// A simulated peer.
pub struct SimNode {
    /// Its identity.
    pub id: PeerId,
    /// The running core; `None` while crashed.
    pub core: Option<RaftCore>,
    /// Incremented by each crash; events of an earlier life are dropped.
    pub life: u32,
    /// Its monotonic clock.
    pub clock: Clock,
    /// Events for it wait until this real time (a paused process).
    pub paused_until_us: u64,
    /// The LogManager's log (index i at position i - 1).
    pub log: Vec<SimEntry>,
    /// What survives a crash.
    pub durable_log: Vec<SimEntry>,
    /// Log writes in flight, in order.
    pub disk: VecDeque<DiskOp>,
    /// When the disk finishes its queue (real microseconds).
    pub disk_free_us: u64,
    /// Term and vote on disk.
    pub durable_hs: HardState,
    /// When the meta writes in flight finish.
    pub meta_free_us: u64,
    /// The state machine and what it applied.
    pub fsm: KvStore,
    /// The last index applied in this life.
    pub applied: u64,
    /// Proposals waiting to be applied, by index.
    pub pending: BTreeMap<u64, Proposal>,
    /// Client commands received and not yet proposed, and whether a flush is scheduled.
    pub batch: Vec<Cmd>,
    /// A flush of `batch` is scheduled.
    pub flush_scheduled: bool,
    /// The latest token of each timer; a firing with an older token is dropped.
    pub timer_tokens: [u64; 4],
    /// Reused action buffer.
    pub actions: Vec<Action>,
}

impl SimNode {
    /// A fresh peer with an empty disk.
    pub fn new(id: PeerId, clock: Clock, keys: u32) -> SimNode {
        SimNode {
            id,
            core: None,
            life: 0,
            clock,
            paused_until_us: 0,
            log: Vec::new(),
            durable_log: Vec::new(),
            disk: VecDeque::new(),
            disk_free_us: 0,
            durable_hs: HardState::default(),
            meta_free_us: 0,
            fsm: KvStore::new(keys),
            applied: 0,
            pending: BTreeMap::new(),
            batch: Vec::new(),
            flush_scheduled: false,
            timer_tokens: [0; 4],
            actions: Vec::new(),
        }
    }

    /// True while running (not crashed).
    pub fn is_up(&self) -> bool {
        self.core.is_some()
    }

    /// The core (panics if crashed: callers check `is_up`).
    pub fn core(&self) -> &RaftCore {
        self.core.as_ref().expect("invariant: the node is up")
    }

    /// Carries out a completed disk write on the durable log.
    pub fn complete_write(&mut self) -> Option<DiskOp> {
        let op = self.disk.pop_front()?;
        match &op {
            DiskOp::Append(entries) => {
                let first = entries[0].id.index as usize;
                assert_eq!(
                    first,
                    self.durable_log.len() + 1,
                    "a write must follow the durable log"
                );
                self.durable_log.extend_from_slice(entries);
            }
            DiskOp::Truncate(after) => self.durable_log.truncate(*after as usize),
        }
        Some(op)
    }

    /// Loses everything not durable and stops the core.
    pub fn crash(&mut self, keys: u32) {
        // A crashed process holds no lease: it serves nothing until it restarts as follower.
        self.core = None;
        self.life += 1;
        self.log = self.durable_log.clone();
        self.disk.clear();
        self.fsm = KvStore::new(keys);
        self.applied = 0;
        self.pending.clear();
        self.batch.clear();
        self.flush_scheduled = false;
        self.paused_until_us = 0;
    }
}
