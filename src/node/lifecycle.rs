//! A node's end: `shutdown` stops what it runs without waiting, `join` waits for every queue
//! and releases the data directory. Init (init.rs) undoes a failed start through the same
//! `mark_joined`. Nothing here runs user code under a lock.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use super::init::Parts;
use super::{Lifecycle, NodeShared};
use crate::error::RaftError;
use crate::node_manager::NodeManager;

/// Stops everything the node runs without waiting: timers, replicators and the node's queue
/// stop; tasks not yet committed fail with `Stopped`. The waiting is in [`join`].
pub(crate) fn shutdown(shared: &Arc<NodeShared>) {
    let was = shared.state.lock().clone();
    if was == Lifecycle::ShuttingDown {
        return;
    }
    shared.set_state(Lifecycle::ShuttingDown);
    slog::info!(shared.logger(), "shutting down");
    NodeManager::global().remove(&shared.group, &shared.peer);
    if let Some(parts) = shared.parts() {
        parts.timers.stop_all();
        if let Some(t) = &parts.snapshot_timer {
            t.stop();
        }
        parts.replicators.stop();
        // Committed entries are applied (and completed) before the state machine stops.
        shared.fail_uncommitted(&parts.closures, &RaftError::Stopped);
    }
    match shared.events.get() {
        Some(q) => q.stop(),
        None => mark_joined(shared),
    }
}

/// Waits for every queue of a shut-down node, then drops its components (releasing the data
/// directory). The first caller does the work; others wait for it. Must not be called from
/// a callback running on one of the node's own queues.
pub(crate) fn join(shared: &Arc<NodeShared>) {
    if !shared.joining.swap(true, Ordering::AcqRel) {
        if let Some(q) = shared.events.get() {
            q.join();
        }
        if let Some(parts) = shared.take_parts() {
            if let Some(t) = &parts.snapshot_timer {
                t.destroy();
            }
            parts.replicators.join();
            parts.fsm.shutdown();
            parts.fsm.join();
            parts.log.shutdown();
            parts.log.join();
            parts.meta.stop();
            parts.meta.join();
            parts.snapshot_io.stop();
            parts.snapshot_io.join();
            parts.caller_queue.stop();
            parts.caller_queue.join();
            wait_unshared(parts);
        }
        mark_joined(shared);
    }
    let mut done = shared.shut_down.lock();
    while !*done {
        shared.joined.wait(&mut done);
    }
}

pub(super) fn mark_joined(shared: &NodeShared) {
    shared.pending_applies.store(0, Ordering::Release);
    *shared.shut_down.lock() = true;
    shared.joined.notify_all();
}

/// Drops `parts` once no queue holds it any more (they were all joined, so briefly).
fn wait_unshared(mut parts: Arc<Parts>) {
    for _ in 0..1000 {
        match Arc::try_unwrap(parts) {
            Ok(p) => return drop(p),
            Err(p) => parts = p,
        }
        std::thread::sleep(std::time::Duration::from_millis(1));
    }
    debug_assert!(
        false,
        "node parts still shared 1 s after every queue was joined"
    );
}
