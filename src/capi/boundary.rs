//! The checks and conversions every C entry point shares: panics kept on the Rust side,
//! string and handle arguments read defensively, and completions handed to C. It never
//! dereferences a pointer the caller's contract does not vouch for.

use std::ffi::{c_char, c_void, CStr};
use std::panic::{catch_unwind, AssertUnwindSafe};

use super::deferred::in_call;
use super::{TraftDone, TraftNode, TraftStatus};
use crate::error::RaftError;
use crate::types::{Configuration, PeerId};

/// Runs a C entry point's body, turning a panic into `TraftOther`.
pub(super) fn guarded(f: impl FnOnce() -> Result<(), RaftError>) -> TraftStatus {
    match catch_unwind(AssertUnwindSafe(f)) {
        Ok(Ok(())) => TraftStatus::TraftOk,
        Ok(Err(e)) => TraftStatus::from(&e),
        Err(_) => TraftStatus::TraftOther,
    }
}

/// Runs the body of a C entry point that returns a plain value: a panic answers `fallback`
/// instead of crossing into C.
pub(super) fn caught<T>(fallback: T, f: impl FnOnce() -> T) -> T {
    catch_unwind(AssertUnwindSafe(f)).unwrap_or(fallback)
}

/// Reads a C string argument.
///
/// # Safety
/// `s` is null or points to a NUL-terminated string valid for the call.
pub(super) unsafe fn arg_str<'a>(s: *const c_char, what: &str) -> Result<&'a str, RaftError> {
    if s.is_null() {
        return Err(RaftError::invalid(format!("{what} is null")));
    }
    // SAFETY: non-null and NUL-terminated by the caller's contract.
    let c = unsafe { CStr::from_ptr(s) };
    c.to_str()
        .map_err(|_| RaftError::invalid(format!("{what} is not UTF-8")))
}

/// A Rust completion that calls the C one exactly once (if there is one), off the thread
/// of the call that registered it.
pub(super) fn completion(
    node: &TraftNode,
    done: TraftDone,
    ctx: *mut c_void,
) -> impl FnOnce(Result<u64, RaftError>) + Send {
    let ctx = ctx as usize; // carried to the completion thread as an integer
    let deferred = node.deferred.clone();
    move |r| {
        let Some(done) = done else { return };
        let (status, value) = match &r {
            Ok(v) => (TraftStatus::TraftOk, *v),
            Err(e) => (TraftStatus::from(e), 0),
        };
        deferred.complete(Box::new(move || {
            // SAFETY: the completion and context the C side registered for this call.
            unsafe { done(ctx as *mut c_void, status, value) };
        }));
    }
}

/// Reads a node handle argument.
///
/// # Safety
/// `node` is null or a live handle.
pub(super) unsafe fn arg_node<'a>(node: *const TraftNode) -> Result<&'a TraftNode, RaftError> {
    // SAFETY: null or a live handle by the caller's contract.
    unsafe { node.as_ref() }.ok_or_else(|| RaftError::invalid("node is null"))
}

impl From<&RaftError> for TraftStatus {
    fn from(e: &RaftError) -> TraftStatus {
        match e {
            RaftError::NotLeader { .. } => TraftStatus::TraftNotLeader,
            RaftError::Busy => TraftStatus::TraftBusy,
            RaftError::Stopped => TraftStatus::TraftStopped,
            RaftError::Invalid { .. } | RaftError::Decode { .. } => TraftStatus::TraftInvalid,
            RaftError::Timeout => TraftStatus::TraftTimeout,
            RaftError::Io { .. } | RaftError::DirectoryLocked { .. } => TraftStatus::TraftIo,
            RaftError::Corruption { .. } => TraftStatus::TraftCorruption,
            RaftError::ErrorState { .. } => TraftStatus::TraftErrorState,
            RaftError::TermMismatch { .. } => TraftStatus::TraftTermMismatch,
            _ => TraftStatus::TraftOther,
        }
    }
}

/// Writes `text` and a NUL into `buf` when they fit in `cap` bytes; returns `text`'s length
/// either way (as `snprintf`).
///
/// # Safety
/// `buf` is null or points to `cap` writable bytes.
pub(super) unsafe fn write_text(text: &str, buf: *mut c_char, cap: usize) -> usize {
    if buf.is_null() || text.len() + 1 > cap {
        return text.len();
    }
    // SAFETY: `buf` has `cap >= len + 1` writable bytes by the caller's contract.
    unsafe {
        std::ptr::copy_nonoverlapping(text.as_ptr(), buf as *mut u8, text.len());
        *buf.add(text.len()) = 0;
    }
    text.len()
}

/// The membership and leadership operations, by name, for [`node_op`], each with what its
/// string argument is.
pub(super) enum Op {
    /// To a voter (`ip:port:idx`).
    Transfer,
    /// A peer (`ip:port:idx`).
    AddPeer,
    /// A peer (`ip:port:idx`).
    RemovePeer,
    /// A configuration (`ip:port:idx,...`).
    ChangePeers,
    /// A configuration (`ip:port:idx,...`).
    ResetPeers,
}

/// Runs `op` with its string argument `arg` and a C completion.
///
/// # Safety
/// `node` is null or a live handle; `arg` null or a NUL-terminated string.
pub(super) unsafe fn node_op(
    node: *const TraftNode,
    arg: *const c_char,
    op: Op,
    done: TraftDone,
    ctx: *mut c_void,
) -> TraftStatus {
    guarded(|| {
        // SAFETY: the caller's contract.
        let (node, arg) = unsafe { (arg_node(node)?, arg_str(arg, "peer or conf")?) };
        let to_c = completion(node, done, ctx);
        let complete = move |r: Result<(), RaftError>| to_c(r.map(|_| 0));
        let n = &node.node;
        match op {
            Op::Transfer | Op::AddPeer | Op::RemovePeer => {
                let peer: PeerId = arg.parse()?;
                in_call(|| match op {
                    Op::Transfer => n.transfer_leadership_to(peer, complete),
                    Op::AddPeer => n.add_peer(peer, complete),
                    _ => n.remove_peer(peer, complete),
                });
            }
            Op::ChangePeers | Op::ResetPeers => {
                let conf = Configuration::parse_voters(arg)?;
                in_call(|| match op {
                    Op::ChangePeers => n.change_peers(conf, complete),
                    _ => n.reset_peers(conf, complete),
                });
            }
        }
        Ok(())
    })
}
