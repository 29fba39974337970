//! The checks and conversions every C entry point shares: panics kept on the Rust side,
//! string and handle arguments read defensively, and completions handed to C. It never
//! dereferences a pointer the caller's contract does not vouch for.

use std::ffi::{c_char, c_void, CStr};
use std::panic::{catch_unwind, AssertUnwindSafe};

use super::{TraftDone, TraftNode, TraftStatus};
use crate::error::RaftError;

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
