//! `wait(after_index, callback)`: how replicators learn that the log grew.
//!
//! A waiter is woken once an entry beyond `after_index` exists, or with an error once the
//! LogManager stops or fails. Callbacks never run under the LogManager's lock and never on
//! the stack of the call that woke them: they go to a notification [`ExecQueue`] on the raft
//! pool, one queue item per wake-up. A callback must be cheap (the replicator enqueues an
//! event on its own queue).

use std::panic::{catch_unwind, AssertUnwindSafe};

use slog::Logger;

use crate::error::{RaftError, Result};
use crate::exec_queue::{Batch, ExecQueue, ExecQueueOptions, Rejected};
use crate::log_manager::{LogManager, Shared, State};
use crate::runtime::Runtime;

/// Identifies a registered waiter, for [`LogManager::remove_waiter`].
pub type WaitId = u64;

/// Called with the last log index once the log grew past the waited index, or with
/// `Stopped` / `ErrorState` when it never will.
pub type WaitCallback = Box<dyn FnOnce(Result<u64>) + Send>;

/// A registered waiter.
pub(super) struct Waiter {
    after_index: u64,
    callback: WaitCallback,
}

/// One wake-up: callbacks and what to tell them.
pub(super) struct Notify {
    callbacks: Vec<WaitCallback>,
    result: Result<u64>,
}

/// Starts the notification queue on the raft pool.
pub(super) fn start_notify_queue(runtime: &Runtime, logger: &Logger) -> ExecQueue<Notify> {
    let opts = ExecQueueOptions {
        logger: logger.clone(),
        ..ExecQueueOptions::new("log_manager_notify")
    };
    let log = logger.clone();
    ExecQueue::start(
        &runtime.raft_pool(),
        opts,
        move |batch: &mut Batch<'_, Notify>| {
            for n in batch {
                for cb in n.callbacks {
                    let result = n.result.clone();
                    if catch_unwind(AssertUnwindSafe(|| cb(result))).is_err() {
                        slog::error!(log, "a log wait callback panicked");
                    }
                }
            }
        },
    )
}

impl State {
    /// Removes the waiters the log has now grown past.
    pub(super) fn take_waiters(&mut self) -> Vec<WaitCallback> {
        let last = self.last_log_index;
        let ready: Vec<WaitId> = self
            .waiters
            .iter()
            .filter(|(_, w)| w.after_index < last)
            .map(|(id, _)| *id)
            .collect();
        ready
            .into_iter()
            .filter_map(|id| self.waiters.remove(&id))
            .map(|w| w.callback)
            .collect()
    }

    /// Removes every waiter.
    pub(super) fn take_all_waiters(&mut self) -> Vec<WaitCallback> {
        std::mem::take(&mut self.waiters)
            .into_values()
            .map(|w| w.callback)
            .collect()
    }
}

impl Shared {
    /// Hands callbacks to the notification queue. Called without the state lock.
    pub(super) fn dispatch(&self, callbacks: Vec<WaitCallback>, result: Result<u64>) {
        if callbacks.is_empty() {
            return;
        }
        if let Err(rejected) = self.notify.submit(Notify { callbacks, result }) {
            // The queue stops only in `join`, after the disk queue finished and after
            // `shutdown` refused new waiters: nothing is left to wake by then.
            debug_assert!(false, "notify queue refused a wake-up: {}", rejected.error);
            slog::error!(
                self.logger,
                "wait callbacks dropped: notification queue stopped"
            );
        }
    }
}

impl LogManager {
    /// Calls `callback` once the log holds an entry after `after_index` (with the last log
    /// index then), or with `Stopped` / `ErrorState` once it never will. If the log already
    /// holds one, the callback is queued at once. Never runs it on this call's stack.
    ///
    /// After [`LogManager::shutdown`] the waiter is refused and the callback handed back.
    pub fn wait(
        &self,
        after_index: u64,
        callback: WaitCallback,
    ) -> std::result::Result<WaitId, Rejected<WaitCallback>> {
        let mut st = self.shared.state.lock();
        if st.stopped {
            return Err(Rejected {
                error: RaftError::Stopped,
                item: callback,
            });
        }
        let id = st.next_wait_id;
        st.next_wait_id += 1;
        let now = match &st.error {
            Some(e) => Some(Err(RaftError::ErrorState {
                reason: format!("log disk failed: {e}"),
            })),
            None if st.last_log_index > after_index => Some(Ok(st.last_log_index)),
            None => None,
        };
        match now {
            Some(result) => {
                drop(st);
                self.shared.dispatch(vec![callback], result);
            }
            None => {
                st.waiters.insert(
                    id,
                    Waiter {
                        after_index,
                        callback,
                    },
                );
            }
        }
        Ok(id)
    }

    /// Cancels a waiter. True if it was removed before being woken (its callback will not
    /// run); false if it was already woken (its callback runs or ran) or never existed.
    pub fn remove_waiter(&self, id: WaitId) -> bool {
        self.shared.state.lock().waiters.remove(&id).is_some()
    }
}
