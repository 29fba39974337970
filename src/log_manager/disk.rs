//! The LogManager's disk queue: runs on the disk pool, carries appends and truncations out on
//! the storage in the order they were made, with group commit.
//!
//! One drained batch of tasks costs one storage append (one write, one sync) for each run of
//! consecutive appends in it; a truncation or reset flushes the appends before it first.
//! After a storage error nothing more is done: the error goes to `on_error` once, and later
//! tasks are dropped (a failed sync is never retried, so nothing after it is acknowledged).

use crate::error::RaftError;
use crate::exec_queue::Batch;
use crate::log_manager::{Shared, State};
use crate::types::{LogEntry, LogId};

/// A change for the storage, queued in the order the LogManager's memory saw it.
pub(super) enum DiskTask {
    /// Entries of one append, with the generation they were appended in.
    Append(u64, Vec<LogEntry>),
    /// `truncate_suffix(last_index_kept)`.
    TruncateSuffix(u64),
    /// `truncate_prefix(first_index_kept)`.
    TruncatePrefix(u64),
    /// `reset(next_log_index)`.
    Reset(u64),
}

/// Appends gathered for one group commit, all of one generation.
struct Pending {
    generation: u64,
    entries: Vec<LogEntry>,
}

/// The consumer of the disk queue.
pub(super) fn run_batch(shared: &Shared, batch: &mut Batch<'_, DiskTask>) {
    let mut pending = Pending {
        generation: 0,
        entries: Vec::new(),
    };
    for task in &mut *batch {
        if shared.state.lock().error.is_some() {
            continue;
        }
        match task {
            DiskTask::Append(generation, entries) => {
                debug_assert!(pending.entries.is_empty() || pending.generation == generation);
                pending.generation = generation;
                if pending.entries.is_empty() {
                    pending.entries = entries;
                } else {
                    pending.entries.extend(entries);
                }
            }
            other => {
                shared.flush(&mut pending);
                shared.carry_out(other);
            }
        }
    }
    shared.flush(&mut pending);
    if batch.is_stopped() && shared.state.lock().error.is_none() {
        if let Err(e) = shared.storage.close() {
            slog::error!(shared.logger, "closing the log storage failed"; "error" => %e);
        }
    }
}

impl Shared {
    /// Writes and syncs the pending appends with one storage call, then reports them.
    fn flush(&self, pending: &mut Pending) {
        if pending.entries.is_empty() || self.state.lock().error.is_some() {
            pending.entries.clear();
            return;
        }
        let entries = std::mem::take(&mut pending.entries);
        if let Err(e) = self.storage.append_entries(&entries) {
            return self.fail(e);
        }
        let last = entries[entries.len() - 1].id;
        {
            let mut st = self.state.lock();
            st.disk_id = last;
            st.release_synced(pending.generation, last.index);
        }
        (self.on_durable)(last);
    }

    fn carry_out(&self, task: DiskTask) {
        if self.state.lock().error.is_some() {
            return;
        }
        let (r, durable_end) = match task {
            DiskTask::Append(..) => unreachable!("appends are gathered, not carried out"),
            DiskTask::TruncateSuffix(k) => (self.storage.truncate_suffix(k), Some(k)),
            DiskTask::TruncatePrefix(f) => (self.storage.truncate_prefix(f), None),
            DiskTask::Reset(next) => (self.storage.reset(next), Some(next - 1)),
        };
        if let Err(e) = r {
            return self.fail(e);
        }
        if let Some(end) = durable_end {
            let mut st = self.state.lock();
            if st.disk_id.index > end {
                let term = self
                    .storage
                    .term_at(end)
                    .or_else(|| {
                        (end == st.last_snapshot_id.index).then_some(st.last_snapshot_id.term)
                    })
                    .unwrap_or(0);
                st.disk_id = LogId::new(end, term);
            }
        }
    }

    /// Enters the error state: records the error, reports it once, wakes every waiter.
    fn fail(&self, error: RaftError) {
        let woken = {
            let mut st = self.state.lock();
            if st.error.is_some() {
                return;
            }
            slog::error!(self.logger, "log disk failed; the log refuses further appends";
                "error" => %error);
            st.error = Some(error.clone());
            st.take_all_waiters()
        };
        (self.on_error)(error.clone());
        let reason = format!("log disk failed: {error}");
        self.dispatch(woken, Err(RaftError::ErrorState { reason }));
    }
}

impl State {
    /// Drops from the in-memory tail the entries a sync of `generation` made durable, up to
    /// `last_index`. Entries appended after a truncation or reset belong to a newer
    /// generation and stay, whatever their index: an older sync never releases them.
    fn release_synced(&mut self, generation: u64, last_index: u64) {
        while let Some(front) = self.memory.front() {
            if front.entry.id.index > last_index || front.generation != generation {
                break;
            }
            self.memory_bytes -= front.entry.data.len();
            self.memory.pop_front();
        }
    }
}
