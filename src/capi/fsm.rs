//! The C state machine: a [`TraftFsm`]'s callbacks behind the [`StateMachine`] trait, run by
//! the FSMCaller on the fsm pool, one call at a time per node. It owns the crossing into C
//! for applies, role changes and snapshots; it never calls C while holding a lock.

use std::ffi::CString;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use bytes::Bytes;

use super::{TraftFsm, TraftResponse, TraftSnapshotWriter, TraftStatus};
use crate::error::RaftError;
use crate::snapshot::{SnapshotReader, SnapshotWriter};
use crate::state_machine::{Iter, SnapshotDone, StateMachine};

/// A directory path for C (any bytes Linux allows, but no NUL).
fn c_path(path: &Path) -> Result<CString, RaftError> {
    CString::new(path.as_os_str().as_bytes())
        .map_err(|_| RaftError::invalid(format!("{} holds a NUL byte", path.display())))
}

/// The C state machine, driven by the FSMCaller.
pub(super) struct CStateMachine(pub(super) TraftFsm);

// SAFETY: the C contract (traft.h) requires the callbacks and `ctx` to be usable from any
// thread; traft calls them from one fsm pool thread at a time per node.
unsafe impl Send for CStateMachine {}

impl StateMachine for CStateMachine {
    fn on_apply(&mut self, iter: &mut Iter<'_>) {
        let Some(apply) = self.0.on_apply else {
            // No callback: the entries are applied as nothing (the iterator must be used up).
            return iter.for_each(drop);
        };
        for mut entry in iter {
            let mut resp = TraftResponse { bytes: Vec::new() };
            // SAFETY: `data` points into a live `Bytes` for the duration of the call, and
            // `resp` is a valid exclusive pointer for it; the C side promised `ctx` is valid.
            unsafe {
                apply(
                    self.0.ctx,
                    entry.index,
                    entry.term,
                    entry.data.as_ptr(),
                    entry.data.len(),
                    &mut resp,
                )
            };
            entry.respond(Bytes::from(resp.bytes));
        }
    }

    fn on_leader_start(&mut self, term: u64) {
        if let Some(f) = self.0.on_leader_start {
            // SAFETY: a plain call with the context the C side registered.
            unsafe { f(self.0.ctx, term) };
        }
    }

    fn on_error(&mut self, error: &RaftError) {
        if let Some(f) = self.0.on_stop {
            let text =
                std::ffi::CString::new(error.to_string().replace('\0', " ")).unwrap_or_default();
            // SAFETY: `text` lives across the call; `ctx` is the registered context.
            unsafe { f(self.0.ctx, text.as_ptr()) };
        }
    }

    fn on_snapshot_save(&mut self, writer: SnapshotWriter, done: SnapshotDone) {
        let Some(save) = self.0.on_snapshot_save else {
            drop(writer);
            return done.complete(Err(RaftError::NotSupported {
                what: "snapshots (TraftFsm::on_snapshot_save is null)",
            }));
        };
        let dir = match c_path(writer.path()) {
            Ok(dir) => dir,
            Err(e) => return done.complete(Err(e)),
        };
        let handle = Box::into_raw(Box::new(TraftSnapshotWriter { writer, done, dir }));
        // SAFETY: `handle` is a live, exclusive writer until the C side passes it to
        // `traft_snapshot_done`, which frees it; `dir` lives inside it until then.
        unsafe { save(self.0.ctx, (*handle).dir.as_ptr(), handle) };
    }

    fn on_snapshot_load(&mut self, reader: &SnapshotReader) -> Result<(), RaftError> {
        let Some(load) = self.0.on_snapshot_load else {
            return Err(RaftError::NotSupported {
                what: "snapshots (TraftFsm::on_snapshot_load is null)",
            });
        };
        let dir = c_path(reader.path())?;
        // SAFETY: `dir` lives across the call; `ctx` is the registered context.
        match unsafe { load(self.0.ctx, dir.as_ptr()) } {
            TraftStatus::TraftOk => Ok(()),
            status => Err(RaftError::invalid(format!(
                "the C state machine could not load the snapshot: status {}",
                status as i32
            ))),
        }
    }

    fn on_shutdown(&mut self) {
        if let Some(f) = self.0.on_stop {
            // SAFETY: a plain call with the registered context and a null message.
            unsafe { f(self.0.ctx, std::ptr::null()) };
        }
    }
}
