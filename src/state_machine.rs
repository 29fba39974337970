//! The user's side of traft: the [`StateMachine`] trait, the [`Iter`] of committed entries it
//! applies, and the completion types that tell a client how its task ended.
//!
//! Every callback runs on the fsm pool (`traft-fsm-N`), one at a time per node, never under a
//! traft lock. A panic in a callback is caught there: the node goes to its error state and
//! calls [`StateMachine::on_error`]; the pool and every other node go on.

use std::fmt;

use bytes::Bytes;

use crate::error::{RaftError, Result};
use crate::snapshot::{SnapshotReader, SnapshotWriter};
use crate::types::{Configuration, PeerId};

/// Completion of an applied task: `Ok(response)` once the entry was applied (the response is
/// whatever the state machine passed to [`Applied::respond`], empty by default), or the error
/// that kept it from being committed or applied.
pub type ApplyDone = Box<dyn FnOnce(Result<Bytes>) + Send>;

/// Completion of a user-visible operation that returns nothing.
pub type Done = Box<dyn FnOnce(Result<()>) + Send>;

/// Runs each of `dones` with `error`, every one of them even if one panics (a user bug must
/// not leave the others waiting forever, nor reach the caller mid-loop). Returns how many
/// panicked; the caller decides what a panic means where it stands.
pub(crate) fn fail_each<T>(
    dones: impl IntoIterator<Item = Box<dyn FnOnce(Result<T>) + Send>>,
    error: &RaftError,
) -> usize {
    let mut panicked = 0;
    for done in dones {
        let e = error.clone();
        if std::panic::catch_unwind(std::panic::AssertUnwindSafe(move || done(Err(e)))).is_err() {
            panicked += 1;
        }
    }
    panicked
}

/// Who leads, from a follower's point of view.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LeaderChangeContext {
    /// The leader followed (or stopped being followed).
    pub leader: Option<PeerId>,
    /// Its term.
    pub term: u64,
    /// Why following stopped (for `on_stop_following`), if for an error.
    pub reason: Option<RaftError>,
}

/// The replicated state machine a node drives. Only `on_apply` is required.
pub trait StateMachine: Send + 'static {
    /// Applies a batch of committed data entries, in log order. Each [`Applied`] may carry a
    /// response for the client that proposed it; an entry's completion runs when it is dropped.
    fn on_apply(&mut self, iter: &mut Iter<'_>);

    /// The node is shutting down; no callback follows.
    fn on_shutdown(&mut self) {}

    /// Writes the state up to the last applied entry into `writer` and completes `done`
    /// (possibly later, from another thread). The default reports `NotSupported`.
    fn on_snapshot_save(&mut self, writer: SnapshotWriter, done: SnapshotDone) {
        drop(writer);
        done.complete(Err(RaftError::NotSupported {
            what: "snapshots (StateMachine::on_snapshot_save)",
        }));
    }

    /// Replaces the whole state with the snapshot's. The default reports `NotSupported`.
    fn on_snapshot_load(&mut self, reader: &SnapshotReader) -> Result<()> {
        let _ = reader;
        Err(RaftError::NotSupported {
            what: "snapshots (StateMachine::on_snapshot_load)",
        })
    }

    /// This node became leader of `term`.
    fn on_leader_start(&mut self, term: u64) {
        let _ = term;
    }

    /// This node stopped being leader.
    fn on_leader_stop(&mut self, reason: &RaftError) {
        let _ = reason;
    }

    /// The node entered its error state; it applies nothing more.
    fn on_error(&mut self, error: &RaftError) {
        let _ = error;
    }

    /// A configuration entry was committed (applied in log order between data batches).
    fn on_configuration_committed(&mut self, conf: &Configuration) {
        let _ = conf;
    }

    /// This node started following a leader.
    fn on_start_following(&mut self, ctx: &LeaderChangeContext) {
        let _ = ctx;
    }

    /// This node stopped following a leader.
    fn on_stop_following(&mut self, ctx: &LeaderChangeContext) {
        let _ = ctx;
    }

    /// The last log index whose effect the state machine has made durable on its own (etcd's
    /// `Applied`); a restart replays only entries after it. 0: nothing (the default).
    fn durable_index(&self) -> u64 {
        0
    }
}

/// Completion handle for [`StateMachine::on_snapshot_save`]; dropping it unfinished reports
/// an error, so a save never hangs.
pub struct SnapshotDone {
    inner: Option<Box<dyn FnOnce(Result<SnapshotWriter>) + Send>>,
}

impl SnapshotDone {
    pub(crate) fn new(f: impl FnOnce(Result<SnapshotWriter>) + Send + 'static) -> SnapshotDone {
        SnapshotDone {
            inner: Some(Box::new(f)),
        }
    }

    /// Finishes the save: `Ok(writer)` with the files written, or the error.
    pub fn complete(mut self, result: Result<SnapshotWriter>) {
        if let Some(f) = self.inner.take() {
            f(result);
        }
    }
}

impl Drop for SnapshotDone {
    fn drop(&mut self) {
        if let Some(f) = self.inner.take() {
            f(Err(RaftError::invalid(
                "on_snapshot_save dropped its SnapshotDone without completing it",
            )));
        }
    }
}

/// One committed data entry being applied.
///
/// Its completion runs when it is dropped: with `Ok` and the response set by
/// [`Applied::respond`], or, if dropped while the state machine is panicking, with the error
/// the node enters.
pub struct Applied {
    /// The entry's index.
    pub index: u64,
    /// The entry's term.
    pub term: u64,
    /// The task's data (shared, not copied).
    pub data: Bytes,
    response: Bytes,
    done: Option<ApplyDone>,
}

impl Applied {
    pub(crate) fn new(index: u64, term: u64, data: Bytes, done: Option<ApplyDone>) -> Applied {
        Applied {
            index,
            term,
            data,
            response: Bytes::new(),
            done,
        }
    }

    /// Sets the response handed to the client's completion (on the leader that proposed it).
    pub fn respond(&mut self, response: Bytes) {
        self.response = response;
    }

    /// True if a client on this node waits for this entry (this node proposed it as leader).
    pub fn has_done(&self) -> bool {
        self.done.is_some()
    }

    /// Completes the entry with `error` instead of applying it.
    pub(crate) fn fail(mut self, error: &RaftError) {
        if let Some(done) = self.done.take() {
            done(Err(error.clone()));
        }
    }
}

impl Drop for Applied {
    fn drop(&mut self) {
        if let Some(done) = self.done.take() {
            if std::thread::panicking() {
                done(Err(RaftError::ErrorState {
                    reason: format!("state machine panicked applying entry {}", self.index),
                }));
            } else {
                done(Ok(std::mem::take(&mut self.response)));
            }
        }
    }
}

impl fmt::Debug for Applied {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "Applied({}, t{}, {} bytes)",
            self.index,
            self.term,
            self.data.len()
        )
    }
}

/// The committed data entries of one `on_apply` call, in log order.
pub struct Iter<'a> {
    entries: std::vec::Drain<'a, Applied>,
}

impl<'a> Iter<'a> {
    pub(crate) fn new(entries: std::vec::Drain<'a, Applied>) -> Iter<'a> {
        Iter { entries }
    }

    /// Entries left in this batch.
    pub fn remaining(&self) -> usize {
        self.entries.len()
    }
}

impl Iterator for Iter<'_> {
    type Item = Applied;

    fn next(&mut self) -> Option<Applied> {
        self.entries.next()
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        self.entries.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use parking_lot::Mutex;
    use std::sync::Arc;

    fn recorder() -> (Arc<Mutex<Vec<Result<Bytes>>>>, impl Fn() -> ApplyDone) {
        let got = Arc::new(Mutex::new(Vec::new()));
        let g = got.clone();
        (got, move || {
            let g = g.clone();
            Box::new(move |r| g.lock().push(r)) as ApplyDone
        })
    }

    #[test]
    fn dropping_an_applied_entry_completes_it_with_its_response() {
        let (got, done) = recorder();
        let mut a = Applied::new(1, 1, Bytes::from_static(b"x"), Some(done()));
        assert!(a.has_done());
        a.respond(Bytes::from_static(b"42"));
        drop(a);
        drop(Applied::new(2, 1, Bytes::new(), Some(done())));
        assert_eq!(
            *got.lock(),
            vec![Ok(Bytes::from_static(b"42")), Ok(Bytes::new())]
        );
    }

    #[test]
    fn an_entry_dropped_by_a_panic_completes_with_an_error() {
        let (got, done) = recorder();
        let a = Applied::new(7, 1, Bytes::new(), Some(done()));
        let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(move || {
            let _a = a;
            panic!("user bug");
        }));
        assert!(r.is_err());
        assert!(matches!(got.lock()[0], Err(RaftError::ErrorState { .. })));
    }

    #[test]
    fn an_unfinished_snapshot_done_reports_an_error() {
        let got = Arc::new(Mutex::new(None));
        let g = got.clone();
        drop(SnapshotDone::new(move |r| *g.lock() = Some(r.is_err())));
        assert_eq!(*got.lock(), Some(true));
    }
}
