//! The numbers on the wire: [`Method`] (which service call a frame is) and [`Status`] (how a
//! call ended), with the mapping between a [`RaftError`] and an error response's status and
//! body.
//!
//! Pure values and codecs, no threads or IO. Decoding is total: an unknown number is a
//! [`RaftError::Decode`], never a panic. docs/PROTOCOL.md lists every number; a test checks
//! the two agree.

use std::fmt;
use std::path::PathBuf;

use bytes::Bytes;

use crate::error::RaftError;
use crate::types::codec::{put_bytes32, put_u64, Reader};
use crate::types::PeerId;

/// Every method of the protocol, by wire number (u16).
///
/// Numbers are grouped by service: 0 is the transport's own hello, 1-15 RaftService, 16-31
/// FileService, 32-47 CliService, 48-63 RaftStat. A number not listed here closes the
/// connection that carried it (DESIGN.md section 6).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[repr(u16)]
pub enum Method {
    /// Transport hello: the first frame on an outgoing connection, carrying the sender's
    /// listen address. Never answered, never handed to a handler.
    Hello = 0,
    /// RaftService: pre-vote (a candidate asks whether it could win before bumping its term).
    PreVote = 1,
    /// RaftService: vote request.
    RequestVote = 2,
    /// RaftService: append entries (and heartbeats, which carry none).
    AppendEntries = 3,
    /// RaftService: install a snapshot (the follower then fetches files with GetFile).
    InstallSnapshot = 4,
    /// RaftService: leadership transfer, "start an election now".
    TimeoutNow = 5,
    /// FileService: read a chunk of a snapshot file.
    GetFile = 16,
    /// CliService: add a peer to a group.
    AddPeer = 32,
    /// CliService: remove a peer from a group.
    RemovePeer = 33,
    /// CliService: replace a group's configuration.
    ChangePeers = 34,
    /// CliService: force a peer's configuration (unsafe recovery).
    ResetPeer = 35,
    /// CliService: take a snapshot now.
    Snapshot = 36,
    /// CliService: transfer leadership to a peer.
    TransferLeader = 37,
    /// CliService: ask who leads a group.
    GetLeader = 38,
    /// RaftStat: a node's status as text.
    Stat = 48,
}

impl Method {
    /// Every method, in wire-number order.
    pub const ALL: [Method; 15] = [
        Method::Hello,
        Method::PreVote,
        Method::RequestVote,
        Method::AppendEntries,
        Method::InstallSnapshot,
        Method::TimeoutNow,
        Method::GetFile,
        Method::AddPeer,
        Method::RemovePeer,
        Method::ChangePeers,
        Method::ResetPeer,
        Method::Snapshot,
        Method::TransferLeader,
        Method::GetLeader,
        Method::Stat,
    ];

    /// The method with wire number `n`.
    pub fn from_u16(n: u16) -> Result<Method, RaftError> {
        Method::ALL
            .iter()
            .copied()
            .find(|m| *m as u16 == n)
            .ok_or_else(|| RaftError::decode("frame header", format!("unknown method {n}")))
    }

    /// The wire number.
    pub fn as_u16(self) -> u16 {
        self as u16
    }

    /// Position in [`Method::ALL`], for tables indexed by method.
    pub fn index(self) -> usize {
        // ALL is in wire-number order and small; a linear scan beats a match table here.
        Method::ALL
            .iter()
            .position(|m| *m == self)
            .expect("invariant: Method::ALL lists every method")
    }

    /// The service the method belongs to, as named in DESIGN.md section 6.
    pub fn service(self) -> &'static str {
        match self as u16 {
            0 => "Transport",
            1..=15 => "RaftService",
            16..=31 => "FileService",
            32..=47 => "CliService",
            _ => "RaftStat",
        }
    }
}

impl fmt::Display for Method {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self, f)
    }
}

/// How a call ended, by wire number (u16). A request carries `Ok`; a response carries `Ok`
/// and the reply body, or an error status and an error body (see [`error_to_wire`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u16)]
pub enum Status {
    /// Success; the body is the method's reply.
    Ok = 0,
    /// [`RaftError::NotLeader`]; body: the leader as an optional PeerId.
    NotLeader = 1,
    /// [`RaftError::Busy`]; empty body.
    Busy = 2,
    /// [`RaftError::Stopped`]; body: UTF-8 text (why), may be empty.
    Stopped = 3,
    /// [`RaftError::Invalid`]; body: UTF-8 reason.
    Invalid = 4,
    /// [`RaftError::Timeout`]; empty body.
    Timeout = 5,
    /// [`RaftError::NotSupported`]; body: UTF-8 text naming what.
    NotSupported = 6,
    /// The server knows the method but serves no handler for it; body: UTF-8 text.
    UnknownMethod = 7,
    /// [`RaftError::Decode`]: the request body did not decode; body: UTF-8 reason.
    Decode = 8,
    /// [`RaftError::TermMismatch`]; body: expected u64, current u64.
    TermMismatch = 9,
    /// [`RaftError::AlreadyExists`]; body: UTF-8 text naming what.
    AlreadyExists = 10,
    /// [`RaftError::ErrorState`]; body: UTF-8 reason.
    ErrorState = 11,
    /// [`RaftError::Io`] on the remote side; body: UTF-8 message.
    Io = 12,
    /// [`RaftError::Corruption`] on the remote side; body: offset u64, file (bytes32),
    /// reason (rest, UTF-8).
    Corruption = 13,
    /// [`RaftError::DirectoryLocked`] on the remote side; body: the path, UTF-8.
    DirectoryLocked = 14,
}

impl Status {
    /// Every status, in wire-number order.
    pub const ALL: [Status; 15] = [
        Status::Ok,
        Status::NotLeader,
        Status::Busy,
        Status::Stopped,
        Status::Invalid,
        Status::Timeout,
        Status::NotSupported,
        Status::UnknownMethod,
        Status::Decode,
        Status::TermMismatch,
        Status::AlreadyExists,
        Status::ErrorState,
        Status::Io,
        Status::Corruption,
        Status::DirectoryLocked,
    ];

    /// The status with wire number `n`.
    pub fn from_u16(n: u16) -> Result<Status, RaftError> {
        Status::ALL
            .iter()
            .copied()
            .find(|s| *s as u16 == n)
            .ok_or_else(|| RaftError::decode("frame header", format!("unknown status {n}")))
    }

    /// The wire number.
    pub fn as_u16(self) -> u16 {
        self as u16
    }
}

/// The status and body of an error response for `err`.
pub fn error_to_wire(err: &RaftError) -> (Status, Bytes) {
    let text = |s: &str| Bytes::copy_from_slice(s.as_bytes());
    match err {
        RaftError::NotLeader { leader } => {
            let mut b = Vec::with_capacity(PeerId::ENCODED_LEN_MAX);
            PeerId::encode_opt(leader.as_ref(), &mut b);
            (Status::NotLeader, Bytes::from(b))
        }
        RaftError::Busy => (Status::Busy, Bytes::new()),
        RaftError::Stopped => (Status::Stopped, Bytes::new()),
        RaftError::Invalid { reason } => (Status::Invalid, text(reason)),
        RaftError::Timeout => (Status::Timeout, Bytes::new()),
        RaftError::NotSupported { what } => (Status::NotSupported, text(what)),
        RaftError::Decode { what, reason } => (Status::Decode, text(&format!("{what}: {reason}"))),
        RaftError::TermMismatch { expected, current } => {
            let mut b = Vec::with_capacity(16);
            put_u64(&mut b, *expected);
            put_u64(&mut b, *current);
            (Status::TermMismatch, Bytes::from(b))
        }
        RaftError::AlreadyExists { what } => (Status::AlreadyExists, text(what)),
        RaftError::ErrorState { reason } => (Status::ErrorState, text(reason)),
        RaftError::Io { .. } => (Status::Io, text(&err.to_string())),
        RaftError::Corruption {
            file,
            offset,
            reason,
        } => {
            let mut b = Vec::new();
            put_u64(&mut b, *offset);
            put_bytes32(&mut b, file.to_string_lossy().as_bytes());
            b.extend_from_slice(reason.as_bytes());
            (Status::Corruption, Bytes::from(b))
        }
        RaftError::DirectoryLocked { path } => {
            (Status::DirectoryLocked, text(&path.to_string_lossy()))
        }
    }
}

/// The error an error response stands for. A body that does not decode still gives an
/// error of the status's kind, with what could be read; `Ok` is not an error and maps to
/// `Invalid` (a caller bug).
pub fn error_from_wire(status: Status, body: &[u8]) -> RaftError {
    let text = || String::from_utf8_lossy(body).into_owned();
    match status {
        Status::Ok => RaftError::invalid("error_from_wire called with status Ok"),
        Status::NotLeader => {
            let leader = PeerId::decode_opt(&mut Reader::new("NotLeader body", body))
                .ok()
                .flatten();
            RaftError::NotLeader { leader }
        }
        Status::Busy => RaftError::Busy,
        Status::Stopped => RaftError::Stopped,
        Status::Invalid => RaftError::invalid(text()),
        Status::Timeout => RaftError::Timeout,
        Status::NotSupported => RaftError::NotSupported {
            what: "an operation the remote server does not support",
        },
        Status::UnknownMethod => RaftError::NotSupported {
            what: "a method the remote server does not serve",
        },
        Status::Decode => RaftError::decode("request (as the remote server read it)", text()),
        Status::TermMismatch => {
            let mut r = Reader::new("TermMismatch body", body);
            match (r.u64(), r.u64()) {
                (Ok(expected), Ok(current)) => RaftError::TermMismatch { expected, current },
                _ => RaftError::decode("TermMismatch body", "shorter than 16 bytes"),
            }
        }
        Status::AlreadyExists => RaftError::AlreadyExists { what: text() },
        Status::ErrorState => RaftError::ErrorState { reason: text() },
        Status::Io => RaftError::Io {
            op: "remote operation",
            path: None,
            kind: std::io::ErrorKind::Other,
            errno: None,
            message: text(),
        },
        Status::Corruption => corruption_from_wire(body),
        Status::DirectoryLocked => RaftError::DirectoryLocked {
            path: PathBuf::from(text()),
        },
    }
}

fn corruption_from_wire(body: &[u8]) -> RaftError {
    let mut r = Reader::new("Corruption body", body);
    let (Ok(offset), Ok(file)) = (r.u64(), r.bytes32()) else {
        return RaftError::decode("Corruption body", "truncated");
    };
    let rest = r.bytes(r.remaining()).unwrap_or(&[]);
    RaftError::Corruption {
        file: PathBuf::from(String::from_utf8_lossy(file).into_owned()),
        offset,
        reason: String::from_utf8_lossy(rest).into_owned(),
    }
}
