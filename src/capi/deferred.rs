//! Completions of C calls that must not run on the caller's thread before the call returns.
//!
//! A node refuses some calls at once (an oversized or unwanted task, a node shutting down)
//! and completes them on the calling thread; a C caller that holds a lock its completion
//! also takes would deadlock. While a C call runs, this module hands such a completion to
//! the runtime's raft pool instead, and counts it per node so that `traft_node_shutdown`
//! returns only after every one of them ran. It owns the per-thread "inside a C call" mark
//! and those counts; it never runs a completion under a lock of its own.

use std::cell::Cell;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::Arc;

use parking_lot::{Condvar, Mutex};

use crate::pool::{Job, PoolHandle};
use crate::runtime::Runtime;

thread_local! {
    static IN_CALL: Cell<bool> = const { Cell::new(false) };
}

/// Runs `f`, the body of a C call that registers a completion, with this thread marked as
/// inside it (restored after, also when `f` panics).
pub(super) fn in_call<R>(f: impl FnOnce() -> R) -> R {
    struct Restore(bool);
    impl Drop for Restore {
        fn drop(&mut self) {
            IN_CALL.with(|c| c.set(self.0));
        }
    }
    let _restore = Restore(IN_CALL.with(|c| c.replace(true)));
    f()
}

/// True on a thread of the runtime's pools, where a C callback runs: a blocking
/// `traft_node_shutdown` there would wait for the very queue it runs on.
pub(super) fn on_a_traft_thread() -> bool {
    Runtime::global().is_ok_and(|rt| {
        rt.raft_pool().is_current_thread()
            || rt.fsm_pool().is_current_thread()
            || rt.disk_pool().is_current_thread()
    })
}

type Completion = Box<dyn FnOnce() + Send>;

/// The completions of one node handed off their callers' threads and not yet run.
#[derive(Default)]
pub(super) struct Deferred {
    pending: Mutex<usize>,
    all_ran: Condvar,
}

impl Deferred {
    /// Runs `complete` now, unless this thread is inside a C call: then on the raft pool.
    pub(super) fn complete(self: &Arc<Self>, complete: Completion) {
        if !IN_CALL.with(Cell::get) {
            return complete();
        }
        *self.pending.lock() += 1;
        let job = Arc::new(Once {
            complete: Mutex::new(Some(complete)),
            owner: self.clone(),
        });
        let scheduled = Runtime::global()
            .map(|rt| rt.raft_pool())
            .is_ok_and(|pool| pool.schedule(job.clone()).is_ok());
        if !scheduled {
            // No pool left to run it (the runtime is shutting down): here, not never.
            job.run_once();
        }
    }

    /// Blocks until every completion handed to the pool ran.
    pub(super) fn wait_all_ran(&self) {
        let mut pending = self.pending.lock();
        while *pending > 0 {
            self.all_ran.wait(&mut pending);
        }
    }
}

/// One deferred completion as a pool job.
struct Once {
    complete: Mutex<Option<Completion>>,
    owner: Arc<Deferred>,
}

impl Once {
    fn run_once(&self) {
        let complete = self.complete.lock().take();
        let Some(complete) = complete else { return };
        // A C callback cannot unwind; the count must go down whatever the Rust side does.
        let _ = catch_unwind(AssertUnwindSafe(complete));
        let mut pending = self.owner.pending.lock();
        *pending -= 1;
        if *pending == 0 {
            self.owner.all_ran.notify_all();
        }
    }
}

impl Job for Once {
    fn run(self: Arc<Self>, _pool: &PoolHandle) -> bool {
        self.run_once();
        false
    }
}
