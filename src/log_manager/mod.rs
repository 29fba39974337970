//! [`LogManager`] (braft's LogManager): one peer's log as the rest of the node sees it. It
//! holds the in-memory tail of entries not yet durable, carries appends and truncations out
//! through a disk queue with group commit, reports durability as a [`LogId`], wakes waiting
//! replicators, answers term lookups across the snapshot boundary, and keeps the
//! [`ConfigurationManager`].
//!
//! It decides nothing: the protocol core assigns every LogId and chooses every truncation;
//! the LogManager refuses only what would be a bug (truncating committed entries, entries out
//! of order).
//!
//! Threads: any thread calls in (the node's queue on the raft pool, replicators, the
//! FSMCaller); calls only take the state lock briefly and enqueue. The disk queue (an
//! [`ExecQueue`] on the disk pool) does the IO: it drains a batch of tasks and writes every
//! consecutive append in it with one storage call (one write, one sync), then reports
//! `on_durable(LogId)` from the disk thread. Wait callbacks run on a notification queue on
//! the raft pool, never under a lock and never on a caller's stack. An IO error is fatal:
//! `on_error` is called once, the disk queue does nothing more (a failed sync is never
//! retried), and appends are refused.

mod conf_manager;
mod disk;
mod read;
mod wait;

use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;

use parking_lot::Mutex;
use slog::Logger;

pub use conf_manager::{ConfigurationEntry, ConfigurationManager};
pub use wait::{WaitCallback, WaitId};

use crate::error::{RaftError, Result};
use crate::exec_queue::{ExecQueue, ExecQueueOptions};
use crate::log_storage::LogStorage;
use crate::runtime::Runtime;
use crate::types::codec::Reader;
use crate::types::{Configuration, EntryType, LogEntry, LogId};

use disk::DiskTask;
use wait::{Notify, Waiter};

/// Called from the disk thread with the last entry of each synced batch. Must be cheap and
/// must not block (the node turns it into an event on its own queue).
pub type DurableCallback = Arc<dyn Fn(LogId) + Send + Sync>;
/// Called once, from the disk thread, with the IO error that stopped the log.
pub type ErrorCallback = Arc<dyn Fn(RaftError) + Send + Sync>;

/// Settings of a [`LogManager`].
#[derive(Clone)]
pub struct LogManagerOptions {
    /// Where the entries live.
    pub storage: Arc<dyn LogStorage>,
    /// Whose disk pool runs the disk queue and whose raft pool runs wait callbacks.
    pub runtime: Runtime,
    /// Durability reports: see [`DurableCallback`].
    pub on_durable: DurableCallback,
    /// Fatal IO errors: see [`ErrorCallback`].
    pub on_error: ErrorCallback,
    /// The most disk tasks drained into one group commit.
    pub disk_batch_max: usize,
    /// The node's logger.
    pub logger: Logger,
}

impl LogManagerOptions {
    /// Options with callbacks that do nothing, batches of up to 256 tasks and the default
    /// logger.
    pub fn new(storage: Arc<dyn LogStorage>, runtime: Runtime) -> LogManagerOptions {
        LogManagerOptions {
            storage,
            runtime,
            on_durable: Arc::new(|_| {}),
            on_error: Arc::new(|_| {}),
            disk_batch_max: 256,
            logger: crate::logging::default_logger(),
        }
    }
}

/// An entry of the in-memory tail and the generation it was appended in.
struct MemEntry {
    entry: LogEntry,
    /// The `State::generation` of its append: a sync of an older generation (before a
    /// truncation or reset) never removes it.
    generation: u64,
}

/// What the LogManager knows, under its lock.
struct State {
    /// Invariant: `first_log_index <= last_log_index + 1`, and `first_log_index - 1 <=
    /// last_snapshot_id.index` once a snapshot is set.
    first_log_index: u64,
    last_log_index: u64,
    /// The entry just before `first_log_index`, when known (after a compaction or a reset
    /// in this life, or at index 0). Invariant: `index == first_log_index - 1` when `Some`.
    prev_log_id: Option<LogId>,
    /// Entries appended but not yet reported durable. Invariant: contiguous and, when not
    /// empty, ending at `last_log_index`.
    memory: VecDeque<MemEntry>,
    /// Payload bytes in `memory`.
    memory_bytes: usize,
    /// Bumped by every truncate_suffix and reset.
    generation: u64,
    last_snapshot_id: LogId,
    /// Invariant: never decreases; no truncation reaches at or below it.
    committed_index: u64,
    /// The last entry the disk reported durable (what storage holds).
    disk_id: LogId,
    config: ConfigurationManager,
    waiters: BTreeMap<WaitId, Waiter>,
    next_wait_id: WaitId,
    /// The fatal IO error, once one happened.
    error: Option<RaftError>,
    stopped: bool,
}

/// The part shared with the disk queue's consumer.
struct Shared {
    state: Mutex<State>,
    storage: Arc<dyn LogStorage>,
    on_durable: DurableCallback,
    on_error: ErrorCallback,
    notify: ExecQueue<Notify>,
    logger: Logger,
}

/// One peer's log: see the module documentation.
pub struct LogManager {
    shared: Arc<Shared>,
    disk: ExecQueue<DiskTask>,
}

fn decode_configuration(e: &LogEntry) -> Result<Configuration> {
    let mut r = Reader::new("Configuration", &e.data);
    let conf = Configuration::decode(&mut r)?;
    r.finish()?;
    Ok(conf)
}

/// Configuration entries of `entries`, decoded (a bad one refuses the whole batch).
fn configurations(entries: &[LogEntry]) -> Result<Vec<ConfigurationEntry>> {
    let confs = entries
        .iter()
        .filter(|e| e.kind == EntryType::Configuration);
    confs
        .map(|e| {
            Ok(ConfigurationEntry {
                id: e.id,
                conf: decode_configuration(e)?,
            })
        })
        .collect()
}

fn refuse_bug(what: String) -> RaftError {
    debug_assert!(false, "{what}");
    RaftError::invalid(what)
}

impl LogManager {
    /// Builds the manager over `opts.storage` (already opened and recovered): reads the
    /// configurations the log holds and starts the disk queue.
    pub fn new(opts: LogManagerOptions) -> Result<LogManager> {
        let storage = opts.storage;
        let (first, last) = (storage.first_log_index(), storage.last_log_index());
        let mut config = ConfigurationManager::new();
        for index in first..=last {
            let e = storage
                .get(index)
                .ok_or_else(|| RaftError::invalid(format!("log storage lost entry {index}")))?;
            if e.kind == EntryType::Configuration {
                let conf = decode_configuration(&e)?;
                config.add(ConfigurationEntry { id: e.id, conf })?;
            }
        }
        let disk_id = LogId::new(last, storage.term_at(last).unwrap_or(0));
        let notify = wait::start_notify_queue(&opts.runtime, &opts.logger);
        let shared = Arc::new(Shared {
            state: Mutex::new(State {
                first_log_index: first,
                last_log_index: last,
                prev_log_id: (first == 1).then(LogId::default),
                memory: VecDeque::new(),
                memory_bytes: 0,
                generation: 0,
                last_snapshot_id: LogId::default(),
                committed_index: 0,
                disk_id,
                config,
                waiters: BTreeMap::new(),
                next_wait_id: 1,
                error: None,
                stopped: false,
            }),
            storage,
            on_durable: opts.on_durable,
            on_error: opts.on_error,
            notify,
            logger: opts.logger.clone(),
        });
        let qopts = ExecQueueOptions {
            batch_max: opts.disk_batch_max.max(1),
            logger: opts.logger,
            ..ExecQueueOptions::new("log_manager_disk")
        };
        let consumer = shared.clone();
        let disk = ExecQueue::start(&opts.runtime.disk_pool(), qopts, move |batch| {
            disk::run_batch(&consumer, batch)
        });
        Ok(LogManager { shared, disk })
    }

    /// Appends `entries` (a leader's own proposals or entries a follower accepted): they are
    /// readable at once, written and synced by the disk queue, and reported through
    /// `on_durable` with the batch's last LogId.
    ///
    /// `entries` must be non-empty, contiguous from `last_log_index() + 1`, with terms that
    /// never decrease; configuration entries must decode. Otherwise `Invalid` and nothing
    /// changes. After a fatal IO error: `ErrorState`; after shutdown: `Stopped`.
    pub fn append_entries(&self, entries: Vec<LogEntry>) -> Result<()> {
        let confs = configurations(&entries)?;
        let (woken, last) = {
            let mut st = self.shared.state.lock();
            st.check_accepting()?;
            crate::log_storage::check_batch(&entries, st.last_log_index + 1)?;
            let last_term = self.shared.last_term(&st);
            if let Some(e) = entries.iter().find(|e| e.id.term < last_term) {
                return Err(RaftError::invalid(format!(
                    "entry {} has a term below the last entry's {last_term}",
                    e.id
                )));
            }
            for c in confs {
                st.config.add(c)?;
            }
            let generation = st.generation;
            for e in &entries {
                st.memory_bytes += e.data.len();
                st.memory.push_back(MemEntry {
                    entry: e.clone(),
                    generation,
                });
            }
            st.last_log_index = entries[entries.len() - 1].id.index;
            self.submit(&st, DiskTask::Append(generation, entries));
            (st.take_waiters(), st.last_log_index)
        };
        self.shared.dispatch(woken, Ok(last));
        Ok(())
    }

    /// Queues a disk task. Called under the state lock, so tasks reach the disk in the order
    /// their effects reached memory. The queue stops only after `stopped` is set under this
    /// same lock, which callers checked, so it never refuses here.
    fn submit(&self, _st: &State, task: DiskTask) {
        if let Err(rejected) = self.disk.submit(task) {
            debug_assert!(false, "disk queue refused a task: {}", rejected.error);
        }
    }

    /// Discards the entries after `last_index_kept` (a conflicting suffix, as the core
    /// decided): gone from every read at once, from the disk in order with appends. A
    /// truncation at or below the committed index (or into the snapshot) is refused as a bug
    /// (`Invalid`; a debug build panics).
    pub fn truncate_suffix(&self, last_index_kept: u64) -> Result<()> {
        let mut st = self.shared.state.lock();
        st.check_accepting()?;
        if last_index_kept >= st.last_log_index {
            return Ok(());
        }
        let floor = st.committed_index.max(st.last_snapshot_id.index);
        if last_index_kept < floor || last_index_kept + 1 < st.first_log_index {
            return Err(refuse_bug(format!(
                "refusing truncate_suffix({last_index_kept}): committed index {}, snapshot {}, \
                 first index {}",
                st.committed_index, st.last_snapshot_id, st.first_log_index
            )));
        }
        while st
            .memory
            .back()
            .is_some_and(|m| m.entry.id.index > last_index_kept)
        {
            let m = st.memory.pop_back().expect("invariant: back exists");
            st.memory_bytes -= m.entry.data.len();
        }
        st.last_log_index = last_index_kept;
        st.generation += 1;
        st.config.truncate_suffix(last_index_kept);
        self.submit(&st, DiskTask::TruncateSuffix(last_index_kept));
        Ok(())
    }

    /// Discards the entries before `first_index_kept` (log compaction). Only entries covered
    /// by the snapshot may go: `first_index_kept` above `last_snapshot_id().index + 1` is
    /// refused as a bug (`Invalid`; a debug build panics).
    pub fn truncate_prefix(&self, first_index_kept: u64) -> Result<()> {
        let mut st = self.shared.state.lock();
        st.check_accepting()?;
        if first_index_kept <= st.first_log_index {
            return Ok(());
        }
        if first_index_kept > st.last_snapshot_id.index + 1 {
            return Err(refuse_bug(format!(
                "refusing truncate_prefix({first_index_kept}): the snapshot ends at {}",
                st.last_snapshot_id
            )));
        }
        self.truncate_prefix_locked(&mut st, first_index_kept);
        Ok(())
    }

    fn truncate_prefix_locked(&self, st: &mut State, first_index_kept: u64) {
        if first_index_kept > st.last_log_index + 1 {
            return self.reset_locked(st, first_index_kept);
        }
        let prev_term = self.shared.term_at_locked(st, first_index_kept - 1);
        st.prev_log_id = prev_term.map(|t| LogId::new(first_index_kept - 1, t));
        while st
            .memory
            .front()
            .is_some_and(|m| m.entry.id.index < first_index_kept)
        {
            let m = st.memory.pop_front().expect("invariant: front exists");
            st.memory_bytes -= m.entry.data.len();
        }
        st.first_log_index = first_index_kept;
        st.config.truncate_prefix(first_index_kept);
        self.submit(st, DiskTask::TruncatePrefix(first_index_kept));
    }

    /// Discards every entry; the next one appended is `next_log_index`.
    fn reset_locked(&self, st: &mut State, next_log_index: u64) {
        st.memory.clear();
        st.memory_bytes = 0;
        let snap = st.last_snapshot_id;
        st.prev_log_id = (snap.index == next_log_index - 1).then_some(snap);
        st.first_log_index = next_log_index;
        st.last_log_index = next_log_index - 1;
        st.generation += 1;
        st.config.truncate_prefix(next_log_index);
        st.config.truncate_suffix(next_log_index - 1);
        self.submit(st, DiskTask::Reset(next_log_index));
    }

    /// Records a snapshot that covers the log through `last_included` (saved locally or
    /// installed from the leader), with the configuration in force there. If the log holds
    /// `last_included`, nothing is compacted here: how much the snapshot lets go is the
    /// Raft core's decision (`truncate_prefix`), except at the first snapshot after a
    /// restart when the term before the first entry is unknown: then the log is compacted up
    /// to this snapshot, so that `term_at(first_log_index() - 1)` always answers. If the log
    /// does not hold it (the log is behind, or conflicts there), the log is reset to start
    /// after the snapshot. A snapshot older than the one recorded changes nothing. The
    /// snapshot's entries count as committed.
    pub fn set_snapshot(&self, last_included: LogId, conf: Configuration) -> Result<()> {
        let mut st = self.shared.state.lock();
        st.check_accepting()?;
        if last_included.index <= st.last_snapshot_id.index {
            return Ok(());
        }
        if last_included.index + 1 < st.first_log_index {
            return Err(RaftError::invalid(format!(
                "snapshot at {last_included} is older than the log's first index {}",
                st.first_log_index
            )));
        }
        let touches = last_included.index + 1 == st.first_log_index && st.prev_log_id.is_none();
        let term = if touches {
            // The log starts right after this snapshot (compacted or reset to it in an
            // earlier life, which left the term before the first entry unknown): its base is
            // the snapshot, and nothing may be reset. (Resetting here wiped every entry after
            // an installed snapshot at the next restart, acknowledged ones included.)
            st.prev_log_id = Some(last_included);
            Some(last_included.term)
        } else {
            self.shared.term_at_locked(&st, last_included.index)
        };
        st.config.set_snapshot(ConfigurationEntry {
            id: last_included,
            conf,
        });
        st.committed_index = st.committed_index.max(last_included.index);
        st.last_snapshot_id = last_included;
        match term {
            Some(t) if t == last_included.term => {
                if st.prev_log_id.is_none() && st.first_log_index > 1 {
                    // The term before the first entry is unknown (compacted in an earlier
                    // life): compact to the snapshot so that it is the snapshot's.
                    self.truncate_prefix_locked(&mut st, last_included.index + 1);
                }
            }
            _ => self.reset_locked(&mut st, last_included.index + 1),
        }
        Ok(())
    }

    /// Tells the LogManager the committed index (it only grows; a lower value is ignored).
    pub fn set_committed_index(&self, committed_index: u64) {
        let mut st = self.shared.state.lock();
        st.committed_index = st.committed_index.max(committed_index);
    }

    /// Checks that the snapshot and the log overlap or touch (DESIGN.md section 4, step 9):
    /// without a snapshot the log must start at 1; with one at S, `first - 1 <= S <= last`.
    pub fn check_consistency(&self) -> Result<()> {
        let st = self.shared.state.lock();
        let (first, last, snap) = (st.first_log_index, st.last_log_index, st.last_snapshot_id);
        let ok = if snap.index == 0 {
            first == 1
        } else {
            snap.index + 1 >= first && snap.index <= last
        };
        if ok {
            return Ok(());
        }
        Err(RaftError::invalid(format!(
            "log [{first}, {last}] and snapshot {snap} neither overlap nor touch: entries \
             are missing"
        )))
    }

    /// Stops the LogManager: later appends and truncations answer `Stopped`, every waiter is
    /// called with `Stopped`, and the disk queue finishes what was queued (those appends are
    /// still synced and reported) and closes the storage. Idempotent; see [`LogManager::join`].
    pub fn shutdown(&self) {
        let woken = {
            let mut st = self.shared.state.lock();
            if st.stopped {
                return;
            }
            st.stopped = true;
            self.disk.stop();
            st.take_all_waiters()
        };
        self.shared.dispatch(woken, Err(RaftError::Stopped));
    }

    /// Waits until the disk queue finished after `shutdown` (the storage is closed), then
    /// until every queued wait callback ran. Must not be called from a callback of this
    /// LogManager.
    pub fn join(&self) {
        self.disk.join();
        // Wake-ups raced with shutdown may still be queued; they run before this returns.
        self.shared.notify.stop();
        self.shared.notify.join();
    }
}

impl Drop for LogManager {
    fn drop(&mut self) {
        self.shutdown();
    }
}

impl State {
    fn check_accepting(&self) -> Result<()> {
        if self.stopped {
            return Err(RaftError::Stopped);
        }
        if let Some(e) = &self.error {
            return Err(RaftError::ErrorState {
                reason: format!("log disk failed: {e}"),
            });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests;

#[cfg(test)]
mod crash_tests;
