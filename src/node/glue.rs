//! Small adapters between the node and its components: the log manager as the FSMCaller's
//! source, the FSMCaller's reports as node events, the term/vote writer on the disk pool, and
//! the storage wrapper for `sync = false`. Each only forwards or enqueues.

use std::sync::{Arc, Weak};

use super::event::NodeEvent;
use super::init::Parts;
use super::NodeShared;
use crate::core::HardState;
use crate::error::{RaftError, Result};
use crate::exec_queue::{Batch, ExecQueue, ExecQueueOptions};
use crate::fsm_caller::{CommittedLog, FsmCaller, FsmListener};
use crate::log_manager::LogManager;
use crate::log_storage::LogStorage;
use crate::meta_storage::RaftMetaStorage;
use crate::pool::PoolHandle;
use crate::snapshot::SnapshotStorage;
use crate::state_machine::LeaderChangeContext;
use crate::types::{Configuration, LogEntry, LogId};

/// The log manager as the FSMCaller reads it, and the initial configuration: a log without
/// configuration entries (and without a snapshot recording one) was written under it.
pub(crate) struct LogSource(pub Arc<LogManager>, pub Configuration);

impl CommittedLog for LogSource {
    fn committed_entries(&self, from: u64, to: u64, max_bytes: usize) -> Result<Vec<LogEntry>> {
        let count = usize::try_from(to + 1 - from).unwrap_or(usize::MAX);
        let entries = self.0.entries(from, count, max_bytes);
        if entries.is_empty() {
            return Err(RaftError::ErrorState {
                reason: format!("committed entry {from} is not in the log"),
            });
        }
        Ok(entries)
    }

    fn configuration_at(&self, index: u64) -> Result<Configuration> {
        let known = self.0.configuration_at(index).conf;
        Ok(if known.is_empty() {
            self.1.clone()
        } else {
            known
        })
    }
}

/// The FSMCaller's reports, as events on the node's queue.
pub(crate) struct FsmToNode(pub Weak<NodeShared>);

impl FsmListener for FsmToNode {
    fn on_applied(&self, _applied: LogId) {
        // Nothing waits on applied progress yet (status reads the FSMCaller directly).
    }

    fn on_fsm_error(&self, error: RaftError) {
        if let Some(node) = self.0.upgrade() {
            node.submit(NodeEvent::Fatal(error));
        }
    }
}

/// Starts the term/vote writer: a queue on the disk pool that writes the newest state of
/// each drained batch atomically (temp, sync, rename, sync dir) and reports it durable. A
/// failed write is fatal for the node and never retried.
pub(crate) fn start_meta_writer(
    mut meta: RaftMetaStorage,
    pool: &PoolHandle,
    node: Weak<NodeShared>,
    logger: slog::Logger,
) -> ExecQueue<HardState> {
    let opts = ExecQueueOptions {
        logger,
        ..ExecQueueOptions::new("raft_meta")
    };
    ExecQueue::start(pool, opts, move |batch: &mut Batch<'_, HardState>| {
        // States only move forward, so the last of a batch covers the ones before it.
        let Some(hs) = batch.last() else {
            return;
        };
        let result = meta.set_term_and_voted_for(hs.term, hs.voted_for);
        if let Some(node) = node.upgrade() {
            node.submit(match result {
                Ok(()) => NodeEvent::HardStatePersisted(hs),
                Err(e) => NodeEvent::Fatal(e),
            });
        }
    })
}

/// A log storage whose `sync` does nothing (`NodeOptions::sync = false`): entries count as
/// durable once written. Trades the guarantee of RELIABILITY.md for latency, on request.
pub(crate) struct NoSync(pub Arc<dyn LogStorage>);

impl LogStorage for NoSync {
    fn first_log_index(&self) -> u64 {
        self.0.first_log_index()
    }
    fn last_log_index(&self) -> u64 {
        self.0.last_log_index()
    }
    fn term_at(&self, index: u64) -> Option<u64> {
        self.0.term_at(index)
    }
    fn get(&self, index: u64) -> Option<LogEntry> {
        self.0.get(index)
    }
    fn append_entries(&self, entries: &[LogEntry]) -> Result<()> {
        self.0.append_entries(entries)
    }
    fn truncate_prefix(&self, first_index_kept: u64) -> Result<()> {
        self.0.truncate_prefix(first_index_kept)
    }
    fn truncate_suffix(&self, last_index_kept: u64) -> Result<()> {
        self.0.truncate_suffix(last_index_kept)
    }
    fn reset(&self, next_log_index: u64) -> Result<()> {
        self.0.reset(next_log_index)
    }
    fn sync(&self) -> Result<()> {
        Ok(())
    }
    fn close(&self) -> Result<()> {
        self.0.close()
    }
}

impl Parts {
    /// Queues term and vote for the meta writer.
    pub(crate) fn persist_hard_state(&self, hs: HardState) -> Result<()> {
        self.meta.submit(hs).map_err(|r| r.error)
    }

    /// Tells the state machine when the followed leader changes.
    pub(crate) fn follow(&self, now: Option<LeaderChangeContext>) {
        let mut following = self.following.lock();
        let same = match (&*following, &now) {
            (Some(a), Some(b)) => a.leader == b.leader && a.term == b.term,
            (None, None) => true,
            _ => false,
        };
        if same {
            return;
        }
        if let Some(old) = following.take() {
            let _ = self.fsm.on_stop_following(old);
        }
        if let Some(new) = now {
            let _ = self.fsm.on_start_following(new.clone());
            *following = Some(new);
        }
    }
}

/// Loads the newest snapshot into the state machine and records it with the log manager.
pub(crate) fn load_snapshot(
    fsm: &FsmCaller,
    storage: &SnapshotStorage,
    log: &LogManager,
) -> Result<Option<LogId>> {
    let Some(reader) = storage.newest()? else {
        return Ok(None);
    };
    let meta = reader.meta().clone();
    let (tx, rx) = crossbeam::channel::bounded(1);
    fsm.load_snapshot(
        reader,
        Box::new(move |r| {
            let _ = tx.send(r);
        }),
    );
    rx.recv().map_err(|_| RaftError::Stopped)??;
    log.set_snapshot(meta.last_included, meta.conf)?;
    Ok(Some(meta.last_included))
}
