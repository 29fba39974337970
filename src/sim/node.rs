//! One simulated peer: its core, its in-memory log (the LogManager's view) and disk model
//! (what a crash keeps), its state machine and snapshot, and the requests it waits on.
//!
//! The disk model: writes (appends, truncations, installs) and meta writes complete in order,
//! each after a random latency; a write is durable exactly when it completes. A crash keeps
//! what completed and loses everything else (RELIABILITY.md: a crash drops every unsynced
//! write). A snapshot is durable when its save completes; the log is compacted only after,
//! in memory at once and on disk in the queue's order.

use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;

use crate::core::{Action, HardState, RaftCore};
use crate::sim::kv::{Cmd, KvStore};
use crate::sim::network::Clock;
use crate::types::{Configuration, EntryType, LogId, LogRead, PeerId};

/// One log entry as the simulated LogManager holds it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SimEntry {
    /// Index and term.
    pub id: LogId,
    /// Kind.
    pub kind: EntryType,
    /// The client command of a data entry.
    pub cmd: Option<Cmd>,
    /// The configuration of a configuration entry.
    pub conf: Option<Arc<Configuration>>,
}

/// A log that starts after `base` (the snapshot's last entry, or `(0, 0)`).
///
/// Invariant: `entries[k].id.index == base.index + 1 + k`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SimLog {
    /// The entry before the first one held.
    pub base: LogId,
    /// The entries held.
    pub entries: Vec<SimEntry>,
}

impl SimLog {
    /// The last index held (`base.index` when empty).
    pub fn last_index(&self) -> u64 {
        self.base.index + self.entries.len() as u64
    }

    /// The last entry's LogId (the base when empty).
    pub fn last_id(&self) -> LogId {
        self.entries.last().map_or(self.base, |e| e.id)
    }

    /// The entry at `index`, if held.
    pub fn get(&self, index: u64) -> Option<&SimEntry> {
        let k = index.checked_sub(self.base.index + 1)?;
        self.entries.get(k as usize)
    }

    /// The LogId at `index`: held, or the base.
    pub fn id_at(&self, index: u64) -> Option<LogId> {
        if index == self.base.index {
            return Some(self.base);
        }
        self.get(index).map(|e| e.id)
    }

    /// Appends entries that follow the last one; entries at or below the base (a write that
    /// raced a compaction: the snapshot covers them) are skipped.
    pub fn append(&mut self, entries: &[SimEntry]) -> Result<(), String> {
        for e in entries {
            if e.id.index <= self.base.index {
                continue;
            }
            if e.id.index != self.last_index() + 1 {
                return Err(format!(
                    "append of {} to a log ending at {}",
                    e.id,
                    self.last_id()
                ));
            }
            self.entries.push(e.clone());
        }
        Ok(())
    }

    /// Drops every entry after `after`.
    pub fn truncate_after(&mut self, after: u64) {
        let keep = after.saturating_sub(self.base.index) as usize;
        self.entries.truncate(keep);
    }

    /// Drops the entries up to `upto`, which a snapshot ending at `snapshot` covers.
    pub fn compact_to(&mut self, upto: u64, snapshot: LogId) {
        if upto <= self.base.index {
            return;
        }
        let base = match self.id_at(upto) {
            Some(id) => id,
            // Not written here yet: the snapshot covers it, so the log restarts after it.
            None => {
                self.base = snapshot;
                self.entries.clear();
                return;
            }
        };
        let drop = (upto - self.base.index) as usize;
        self.entries.drain(..drop);
        self.base = base;
    }

    /// Replaces everything by a snapshot ending at `base`.
    pub fn reset(&mut self, base: LogId) {
        self.base = base;
        self.entries.clear();
    }
}

impl LogRead for SimLog {
    fn first_index(&self) -> u64 {
        self.base.index + 1
    }
    fn last_index(&self) -> u64 {
        SimLog::last_index(self)
    }
    fn term_at(&self, index: u64) -> Option<u64> {
        self.id_at(index).map(|id| id.term)
    }
}

/// A snapshot: the state machine at `last`, and the configuration in force there.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SimSnapshot {
    /// The last entry it includes.
    pub last: LogId,
    /// The configuration in force at `last`.
    pub conf: Configuration,
    /// The state machine after applying `last`.
    pub fsm: KvStore,
}

/// A log write waiting on the simulated disk.
#[derive(Clone, Debug)]
pub enum DiskOp {
    /// Append these entries (they follow the log).
    Append(Vec<SimEntry>),
    /// Drop everything after this index.
    Truncate(u64),
    /// Drop the entries up to `upto`, which the durable snapshot ending at `snapshot`
    /// covers. In the disk queue like every other log change, as the LogManager orders its
    /// `truncate_prefix`: applied at once, a compaction could take its base from a stale
    /// entry that a truncation still in the queue was about to replace.
    Compact {
        /// The last index dropped.
        upto: u64,
        /// The snapshot that covers them.
        snapshot: LogId,
    },
    /// Replace the state machine and the log by this snapshot.
    Install(Box<SimSnapshot>),
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

/// A batch of reads handed to the core.
#[derive(Clone, Debug)]
pub struct ReadBatch {
    /// The reads.
    pub cmds: Vec<Cmd>,
    /// The highest index committed anywhere when the batch reached the core: the index the
    /// core answers must not be below it (the reads must see every earlier commit).
    pub committed_at_arrival: u64,
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
    /// The LogManager's log.
    pub log: SimLog,
    /// What survives a crash.
    pub durable_log: SimLog,
    /// Log writes in flight, in order.
    pub disk: VecDeque<DiskOp>,
    /// When the disk finishes its queue (real microseconds).
    pub disk_free_us: u64,
    /// Term and vote on disk.
    pub durable_hs: HardState,
    /// When the meta writes in flight finish.
    pub meta_free_us: u64,
    /// The newest durable snapshot.
    pub snapshot: Option<SimSnapshot>,
    /// A snapshot save is in progress.
    pub saving: bool,
    /// The state machine and what it applied.
    pub fsm: KvStore,
    /// The last index applied (the snapshot's, right after a restart or an install).
    pub applied: u64,
    /// Proposals waiting to be applied, by index.
    pub pending: BTreeMap<u64, Proposal>,
    /// Client commands received and not yet proposed.
    pub batch: Vec<Cmd>,
    /// Reads received and not yet handed to the core.
    pub read_batch: Vec<Cmd>,
    /// A flush of `batch` and `read_batch` is scheduled.
    pub flush_scheduled: bool,
    /// Read batches the core has not answered, by ctx.
    pub reads_asked: BTreeMap<u64, ReadBatch>,
    /// Read batches confirmed, waiting for `applied` to reach their index.
    pub reads_ready: Vec<(u64, Vec<Cmd>)>,
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
            log: SimLog::default(),
            durable_log: SimLog::default(),
            disk: VecDeque::new(),
            disk_free_us: 0,
            durable_hs: HardState::default(),
            meta_free_us: 0,
            snapshot: None,
            saving: false,
            fsm: KvStore::new(keys),
            applied: 0,
            pending: BTreeMap::new(),
            batch: Vec::new(),
            read_batch: Vec::new(),
            flush_scheduled: false,
            reads_asked: BTreeMap::new(),
            reads_ready: Vec::new(),
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

    /// The durable snapshot's last entry, or `(0, 0)`.
    pub fn snapshot_id(&self) -> LogId {
        self.snapshot.as_ref().map_or(LogId::default(), |s| s.last)
    }

    /// True if `index` is durable here with LogId `id`: in the durable log, or covered by
    /// the durable snapshot (whose entries are committed, so match every leader's).
    pub fn holds_durably(&self, id: LogId) -> bool {
        id.index <= self.snapshot_id().index || self.durable_log.id_at(id.index) == Some(id)
    }

    /// Carries out a completed disk write on the durable state.
    pub fn complete_write(&mut self) -> Result<Option<DiskOp>, String> {
        let Some(op) = self.disk.pop_front() else {
            return Ok(None);
        };
        match &op {
            DiskOp::Append(entries) => self.durable_log.append(entries)?,
            DiskOp::Truncate(after) => self.durable_log.truncate_after(*after),
            DiskOp::Compact { upto, snapshot } => self.durable_log.compact_to(*upto, *snapshot),
            DiskOp::Install(snap) => {
                self.durable_log.reset(snap.last);
                self.snapshot = Some((**snap).clone());
            }
        }
        Ok(Some(op))
    }

    /// Loses everything not durable and stops the core; the state machine restarts from the
    /// durable snapshot.
    pub fn crash(&mut self, keys: u32) {
        // A crashed process holds no lease: it serves nothing until it restarts as follower.
        self.core = None;
        self.life += 1;
        self.log = self.durable_log.clone();
        self.disk.clear();
        match &self.snapshot {
            Some(s) => {
                self.fsm = s.fsm.clone();
                self.applied = s.last.index;
            }
            None => {
                self.fsm = KvStore::new(keys);
                self.applied = 0;
            }
        }
        self.saving = false;
        self.pending.clear();
        self.batch.clear();
        self.read_batch.clear();
        self.reads_asked.clear();
        self.reads_ready.clear();
        self.flush_scheduled = false;
        self.paused_until_us = 0;
    }

    /// The configurations to start the core with, oldest first: the snapshot's (or
    /// `initial`: a log without configuration entries was written under the initial
    /// configuration, DESIGN.md section 4 step 10), then those of the durable log.
    pub fn restored_configurations(&self, initial: &Configuration) -> Vec<(u64, Configuration)> {
        let base = match &self.snapshot {
            Some(s) => (s.last.index, s.conf.clone()),
            None => (0, initial.clone()),
        };
        let after = base.0;
        let from_log = self
            .durable_log
            .entries
            .iter()
            .filter(|e| e.id.index > after)
            .filter_map(|e| e.conf.as_ref().map(|c| (e.id.index, (**c).clone())));
        std::iter::once(base).chain(from_log).collect()
    }

    /// The configuration a restart would put in force: the newest of
    /// [`SimNode::restored_configurations`].
    pub fn restored_configuration(&self, initial: &Configuration) -> Configuration {
        let mut list = self.restored_configurations(initial);
        list.pop().map(|(_, c)| c).unwrap_or_default()
    }
}
