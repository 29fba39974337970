//! [`ClosureQueue`]: the completions of tasks this node proposed as leader, by log position,
//! waiting for their entries to be applied (braft's ClosureQueue).
//!
//! The leader pushes a completion when it assigns a task its LogId (on the raft pool); the
//! FSMCaller takes it when it applies that entry (on the fsm pool). On stepping down the node
//! fails only the completions of entries not known to be committed: a committed entry is
//! applied, and completed, by the FSMCaller as usual.

use std::collections::VecDeque;

use parking_lot::Mutex;

use crate::error::RaftError;
use crate::state_machine::ApplyDone;
use crate::types::LogId;

/// Pending completions in log order.
#[derive(Default)]
pub struct ClosureQueue {
    /// Invariant: strictly increasing indexes.
    pending: Mutex<VecDeque<(LogId, ApplyDone)>>,
}

impl ClosureQueue {
    /// An empty queue.
    pub fn new() -> ClosureQueue {
        ClosureQueue::default()
    }

    /// Registers the completion of the entry at `id`. Indexes must increase; a completion for
    /// an index at or below one already queued means the log was rewritten under a leader,
    /// which never happens, so it is failed rather than queued out of order.
    pub fn push(&self, id: LogId, done: ApplyDone) {
        let mut q = self.pending.lock();
        if q.back().is_some_and(|(last, _)| last.index >= id.index) {
            drop(q);
            debug_assert!(false, "closure for {id} pushed out of order");
            done(Err(RaftError::invalid(format!(
                "completion for {id} out of order"
            ))));
            return;
        }
        q.push_back((id, done));
    }

    /// Takes the completion of the entry being applied at `id`, if this node proposed it.
    /// Completions left before `id` (their entries were replaced by another leader's) are
    /// returned in `stale` for the caller to fail outside the lock.
    pub fn take(&self, id: LogId, stale: &mut Vec<ApplyDone>) -> Option<ApplyDone> {
        let mut q = self.pending.lock();
        while let Some((front, _)) = q.front() {
            if front.index > id.index {
                return None;
            }
            let (front, done) = q.pop_front()?;
            if front == id {
                return Some(done);
            }
            stale.push(done);
        }
        None
    }

    /// Fails every completion of an entry after `committed_index` with `error` (leadership
    /// lost, shutdown, error state: those entries may or may not commit later; the committed
    /// ones are completed by the FSMCaller when it applies them). Each runs even if another
    /// panics; returns how many panicked.
    pub fn fail_after(&self, committed_index: u64, error: &RaftError) -> usize {
        let failed: Vec<ApplyDone> = {
            let mut q = self.pending.lock();
            let keep = q
                .iter()
                .take_while(|(id, _)| id.index <= committed_index)
                .count();
            q.drain(keep..).map(|(_, d)| d).collect()
        };
        crate::state_machine::fail_each(failed, error)
    }

    /// Fails every completion with `error` (the state machine stopped or failed: nothing
    /// more is applied here). Log indexes start at 1, so every queued entry is after index 0.
    pub fn fail_all(&self, error: &RaftError) -> usize {
        self.fail_after(0, error)
    }

    /// Completions waiting.
    pub fn len(&self) -> usize {
        self.pending.lock().len()
    }

    /// True when none wait.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use std::sync::Arc;

    type Log = Arc<Mutex<Vec<(u64, bool)>>>;

    fn done(log: &Log, index: u64) -> ApplyDone {
        let log = log.clone();
        Box::new(move |r: crate::Result<Bytes>| log.lock().push((index, r.is_ok())))
    }

    #[test]
    fn completions_are_taken_by_exact_log_id() {
        let log: Log = Default::default();
        let q = ClosureQueue::new();
        q.push(LogId::new(3, 2), done(&log, 3));
        q.push(LogId::new(5, 2), done(&log, 5));
        let mut stale = Vec::new();
        assert!(q.take(LogId::new(2, 2), &mut stale).is_none());
        // Index 3 was overwritten in term 3 by another leader: its completion is stale.
        assert!(q.take(LogId::new(3, 3), &mut stale).is_none());
        assert_eq!(stale.len(), 1);
        assert!(q.take(LogId::new(5, 2), &mut stale).is_some());
        assert!(q.is_empty());
    }

    #[test]
    fn stepping_down_fails_only_uncommitted_completions() {
        let log: Log = Default::default();
        let q = ClosureQueue::new();
        for i in 1..=5 {
            q.push(LogId::new(i, 1), done(&log, i));
        }
        q.fail_after(3, &RaftError::NotLeader { leader: None });
        assert_eq!(*log.lock(), vec![(4, false), (5, false)]);
        assert_eq!(q.len(), 3);
        q.fail_all(&RaftError::Stopped);
        assert_eq!(log.lock().len(), 5);
    }
}
