//! The one error type of traft, [`RaftError`], and the crate's [`Result`] alias.
//!
//! Every fallible call in the library returns a `RaftError`; every variant carries what the
//! caller needs to act on it (the leader to redirect to, the file and offset that are corrupt).
//! It is `Clone` so that one failure can complete many waiting closures. This module never
//! formats an error into a bare `String` error type, and never panics on bad input.

use std::fmt;
use std::io;
use std::path::{Path, PathBuf};

use crate::types::PeerId;

/// The crate's result type: `Result<T, RaftError>` unless said otherwise.
pub type Result<T, E = RaftError> = std::result::Result<T, E>;

/// Everything that can go wrong in traft.
///
/// Variants are stable in meaning: a caller may match on them to decide what to do next
/// (redirect on `NotLeader`, back off on `Busy`, give up on `Stopped`).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum RaftError {
    /// This peer is not the leader. `leader` is the leader it last heard of, if any.
    NotLeader {
        /// The leader this peer believes in, to redirect the request to.
        leader: Option<PeerId>,
    },
    /// Retry later: a bounded queue or budget is full, or the leader is in the middle of
    /// something the request must wait for (a configuration change, a leader transfer, its
    /// term's first entry not yet committed).
    Busy,
    /// The component was stopped (shutdown, or a queue after `stop`).
    Stopped,
    /// The caller passed something unusable: a bad option, an oversized entry, a bad peer id.
    Invalid {
        /// What is wrong with it, precisely enough to fix.
        reason: String,
    },
    /// An operating-system IO call failed.
    Io {
        /// The operation that failed (`"open"`, `"fdatasync"`, `"fallocate"`, ...).
        op: &'static str,
        /// The file or directory it was applied to, when there is one.
        path: Option<PathBuf>,
        /// The error kind, for matching (`StorageFull` for ENOSPC).
        kind: io::ErrorKind,
        /// The raw OS error number, when the OS gave one.
        errno: Option<i32>,
        /// The OS's description of the error.
        message: String,
    },
    /// Data that was durable is damaged: a checksum mismatch in synced data, a meta file that
    /// does not parse. The files are left untouched for inspection.
    Corruption {
        /// The damaged file.
        file: PathBuf,
        /// Byte offset of the damaged record in `file`.
        offset: u64,
        /// What check failed.
        reason: String,
    },
    /// Bytes from the network (or a foreign file) do not decode: truncated, out of range, an
    /// unknown tag or version.
    Decode {
        /// What was being decoded (`"PeerId"`, `"frame header"`).
        what: &'static str,
        /// Why it was rejected.
        reason: String,
    },
    /// A deadline passed before the operation completed.
    Timeout,
    /// A task carried an `expected_term` that is not the leader's current term.
    TermMismatch {
        /// The term the caller expected.
        expected: u64,
        /// The term the leader is actually in.
        current: u64,
    },
    /// The requested operation exists in the protocol but this build does not serve it.
    NotSupported {
        /// The operation.
        what: &'static str,
    },
    /// Something with the same identity already exists (a group+peer registered twice).
    AlreadyExists {
        /// What exists already.
        what: String,
    },
    /// Another open instance holds the data directory's lock.
    DirectoryLocked {
        /// The locked directory.
        path: PathBuf,
    },
    /// The node is in its error state (fsync failure, full disk, a panic in a user callback)
    /// and refuses further work until it is shut down.
    ErrorState {
        /// The failure that put it there.
        reason: String,
    },
}

impl RaftError {
    /// An [`RaftError::Invalid`] with the given reason.
    pub fn invalid(reason: impl Into<String>) -> RaftError {
        RaftError::Invalid {
            reason: reason.into(),
        }
    }

    /// A [`RaftError::Decode`] for `what`, with the given reason.
    pub fn decode(what: &'static str, reason: impl Into<String>) -> RaftError {
        RaftError::Decode {
            what,
            reason: reason.into(),
        }
    }

    /// A [`RaftError::Corruption`] of `file` at `offset`.
    pub fn corruption(file: &Path, offset: u64, reason: impl Into<String>) -> RaftError {
        RaftError::Corruption {
            file: file.to_path_buf(),
            offset,
            reason: reason.into(),
        }
    }

    /// A [`RaftError::Io`] for `op` on `path`, from an `io::Error`.
    pub fn io(op: &'static str, path: Option<&Path>, err: &io::Error) -> RaftError {
        RaftError::Io {
            op,
            path: path.map(Path::to_path_buf),
            kind: err.kind(),
            errno: err.raw_os_error(),
            message: err.to_string(),
        }
    }

    /// True for a failed fsync or fdatasync (of a file or a directory). Fatal for the node
    /// that met it: what the sync covered may or may not be on disk, and a retry that
    /// succeeds proves nothing about the pages the failed one dropped.
    pub fn is_sync_failure(&self) -> bool {
        matches!(self, RaftError::Io { op, .. } if op.starts_with("fsync") || *op == "fdatasync")
    }

    /// True for an IO error that means the disk (or the file-size limit) is full.
    pub fn is_no_space(&self) -> bool {
        match self {
            RaftError::Io { kind, errno, .. } => {
                *kind == io::ErrorKind::StorageFull
                    || *kind == io::ErrorKind::FileTooLarge
                    || *errno == Some(libc::ENOSPC)
                    || *errno == Some(libc::EFBIG)
            }
            _ => false,
        }
    }
}

impl fmt::Display for RaftError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RaftError::NotLeader { leader: Some(l) } => write!(f, "not the leader; leader is {l}"),
            RaftError::NotLeader { leader: None } => write!(f, "not the leader; leader unknown"),
            RaftError::Busy => write!(f, "busy: retry later"),
            RaftError::Stopped => write!(f, "stopped"),
            RaftError::Invalid { reason } => write!(f, "invalid argument: {reason}"),
            RaftError::Io {
                op, path, message, ..
            } => match path {
                Some(p) => write!(f, "io error in {op} on {}: {message}", p.display()),
                None => write!(f, "io error in {op}: {message}"),
            },
            RaftError::Corruption {
                file,
                offset,
                reason,
            } => write!(
                f,
                "corruption in {} at offset {offset}: {reason}",
                file.display()
            ),
            RaftError::Decode { what, reason } => write!(f, "cannot decode {what}: {reason}"),
            RaftError::Timeout => write!(f, "timed out"),
            RaftError::TermMismatch { expected, current } => write!(
                f,
                "term mismatch: task expected term {expected}, leader is in term {current}"
            ),
            RaftError::NotSupported { what } => write!(f, "not supported: {what}"),
            RaftError::AlreadyExists { what } => write!(f, "already exists: {what}"),
            RaftError::DirectoryLocked { path } => write!(
                f,
                "data directory {} is locked by another open instance",
                path.display()
            ),
            RaftError::ErrorState { reason } => write!(f, "node is in its error state: {reason}"),
        }
    }
}

impl std::error::Error for RaftError {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn display_names_what_the_caller_needs() {
        let leader: PeerId = "127.0.0.1:8100:2".parse().unwrap();
        let e = RaftError::NotLeader {
            leader: Some(leader),
        };
        assert_eq!(e.to_string(), "not the leader; leader is 127.0.0.1:8100:2");
        let e = RaftError::corruption(Path::new("/d/log_1"), 4096, "crc mismatch");
        assert_eq!(
            e.to_string(),
            "corruption in /d/log_1 at offset 4096: crc mismatch"
        );
    }

    #[test]
    fn io_error_keeps_kind_and_errno() {
        let os = io::Error::from_raw_os_error(libc::ENOSPC);
        let e = RaftError::io("fallocate", Some(Path::new("/x")), &os);
        assert!(e.is_no_space());
        assert!(e.to_string().contains("fallocate"));
        let eio = RaftError::io("write", None, &io::Error::from_raw_os_error(libc::EIO));
        assert!(!eio.is_no_space());
    }
}
