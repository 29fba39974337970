//! The apply path's entry: [`Task`] and [`Node::apply`], which only checks bounds and
//! enqueues; the node's queue batches tasks into log entries (`event.rs`), the FSMCaller
//! applies them and completes each task's `done`.

use std::sync::atomic::Ordering;
use std::time::Duration;

use std::sync::Arc;

use bytes::Bytes;
use parking_lot::{Condvar, Mutex};

use super::event::NodeEvent;
use super::{active, Node};
use crate::error::{RaftError, Result};
use crate::state_machine::ApplyDone;

/// A user operation to replicate and apply.
pub struct Task {
    /// The payload, handed to `StateMachine::on_apply` as it is (shared, not copied).
    pub data: Bytes,
    /// Completed once: with the state machine's response when the entry is applied on this
    /// node, or with the error that kept it from being committed (`NotLeader { leader }`,
    /// `TermMismatch`, `Busy`, `Stopped`, `ErrorState`, `Invalid`). An entry committed while
    /// this node leads is always completed with its response, even across a shutdown.
    /// `NotLeader`, `Stopped` or `ErrorState` after the task was accepted means the outcome
    /// is unknown: its entry may still commit under a new leader.
    pub done: Option<ApplyDone>,
    /// Refuse the task with `TermMismatch` unless the leader is in exactly this term
    /// (braft's `expected_term`: a client that read state at term T writes only in term T).
    pub expected_term: Option<u64>,
}

impl Task {
    /// A task carrying `data`, completed through `done`.
    pub fn new(data: Bytes, done: impl FnOnce(Result<Bytes>) + Send + 'static) -> Task {
        Task {
            data,
            done: Some(Box::new(done)),
            expected_term: None,
        }
    }

    /// A task and a handle to wait for its outcome (for synchronous callers).
    pub fn waitable(data: Bytes) -> (Task, TaskWaiter) {
        let slot = Arc::new(Slot::default());
        let s = slot.clone();
        let task = Task::new(data, move |r| s.fill(r));
        (task, TaskWaiter { slot })
    }

    /// Sets the term the leader must be in.
    pub fn expecting_term(mut self, term: u64) -> Task {
        self.expected_term = Some(term);
        self
    }

    pub(crate) fn fail(self, error: RaftError) {
        if let Some(done) = self.done {
            done(Err(error));
        }
    }

    /// False (and the task failed with `TermMismatch`) if it expects another term.
    pub(crate) fn check_expected_term(&mut self, current: u64) -> bool {
        match self.expected_term {
            Some(expected) if expected != current => {
                if let Some(done) = self.done.take() {
                    done(Err(RaftError::TermMismatch { expected, current }));
                }
                false
            }
            _ => true,
        }
    }

    pub(crate) fn into_parts(self) -> (Bytes, Option<ApplyDone>) {
        (self.data, self.done)
    }
}

/// Where a waitable task's outcome lands. A waiter parks on the condvar at once (no spinning:
/// a benchmark's hundreds of waiting client threads must not burn the CPU the node needs).
#[derive(Default)]
struct Slot {
    result: Mutex<Option<Result<Bytes>>>,
    filled: Condvar,
}

impl Slot {
    fn fill(&self, r: Result<Bytes>) {
        *self.result.lock() = Some(r);
        self.filled.notify_one();
    }
}

/// Waits for a [`Task`] made with [`Task::waitable`].
pub struct TaskWaiter {
    slot: Arc<Slot>,
}

impl TaskWaiter {
    /// Blocks until the task completes.
    pub fn wait(self) -> Result<Bytes> {
        let mut r = self.slot.result.lock();
        loop {
            if let Some(r) = r.take() {
                return r;
            }
            self.slot.filled.wait(&mut r);
        }
    }

    /// Blocks until the task completes or `timeout` passes (`Timeout`; the task may still
    /// complete later).
    pub fn wait_timeout(self, timeout: Duration) -> Result<Bytes> {
        let deadline = crate::timer::deadline_after(timeout);
        let mut r = self.slot.result.lock();
        loop {
            if let Some(r) = r.take() {
                return r;
            }
            if self.slot.filled.wait_until(&mut r, deadline).timed_out() {
                return r.take().unwrap_or(Err(RaftError::Timeout));
            }
        }
    }
}

impl Node {
    /// Proposes `task`. Only enqueues: the outcome arrives through `task.done`. Refused at once
    /// (through `done`) with `Invalid` for a payload over `entry_bytes_max`, `Busy` when the
    /// apply queue or the unsynced log bytes are at their bounds, `NotLeader` is decided by
    /// the core when the batch is proposed.
    pub fn apply(&self, task: Task) {
        if let Err(e) = self.admit(&task) {
            return task.fail(e);
        }
        self.shared.submit(NodeEvent::Apply(task));
    }

    /// Proposes `data` and blocks until it is applied on this node (or fails).
    pub fn apply_wait(&self, data: Bytes) -> Result<Bytes> {
        let (task, waiter) = Task::waitable(data);
        self.apply(task);
        waiter.wait()
    }

    /// `Invalid` for a payload of `len` bytes over `entry_bytes_max` (once init set it):
    /// what `apply` refuses first, for callers that check before building the task.
    pub(crate) fn check_entry_len(&self, len: usize) -> Result<()> {
        match self.shared.limits.get() {
            Some(limits) if len > limits.entry_bytes_max => Err(RaftError::invalid(format!(
                "task of {len} bytes is over entry_bytes_max = {}",
                limits.entry_bytes_max
            ))),
            _ => Ok(()),
        }
    }

    fn admit(&self, task: &Task) -> Result<()> {
        let shared = &self.shared;
        if !shared.active.load(Ordering::Acquire) {
            return active(shared).and(Err(RaftError::Stopped));
        }
        let limits = shared.limits.get().ok_or(RaftError::Stopped)?;
        self.check_entry_len(task.data.len())?;
        if shared.unsynced_bytes.load(Ordering::Relaxed) > limits.unsynced_bytes_max {
            return Err(RaftError::Busy);
        }
        let queued = shared.pending_applies.fetch_add(1, Ordering::AcqRel);
        if queued >= limits.apply_queue_capacity {
            shared.pending_applies.fetch_sub(1, Ordering::AcqRel);
            return Err(RaftError::Busy);
        }
        Ok(())
    }
}
