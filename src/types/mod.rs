//! The shared vocabulary of traft: identities, log positions, entries and their kinds,
//! configurations, the log-read trait, the encoding helpers and the seedable RNG.
//!
//! Storage, transport and the core all speak these types, so there is exactly one encoding of
//! each. This module holds values and codecs only: no threads, no IO, no clock.

pub mod codec;
mod conf;
mod entry;
mod peer;
mod rng;

use std::fmt;

pub use conf::Configuration;
pub use entry::LogEntry;
pub use peer::{GroupId, PeerId};
pub use rng::Rng;

use crate::error::{RaftError, Result};
use codec::{put_u64, Reader};

/// The highest log index traft accepts from the network or the disk (2^62): far beyond any
/// real log, and low enough that index arithmetic (`index + 1`, `index + count`) on what a
/// faulty peer or a damaged file says cannot overflow.
pub const LOG_INDEX_MAX: u64 = 1 << 62;

/// The position of an entry in the log: its index and the term of the leader that created it.
///
/// Two entries with the same `LogId` hold the same data (Raft's log matching property).
/// `LogId::default()` is `(0, 0)`, the position before the first entry.
/// Ordered by term first, then index, as braft compares them (the "more up-to-date log" rule).
#[derive(Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct LogId {
    /// The entry's index, starting at 1.
    pub index: u64,
    /// The term in which the entry was created.
    pub term: u64,
}

impl LogId {
    /// Encoded size in bytes.
    pub const ENCODED_LEN: usize = 16;

    /// `LogId { index, term }`.
    pub const fn new(index: u64, term: u64) -> LogId {
        LogId { index, term }
    }

    /// Appends `index u64 | term u64`.
    pub fn encode(&self, buf: &mut Vec<u8>) {
        put_u64(buf, self.index);
        put_u64(buf, self.term);
    }

    /// Reads a `LogId`.
    pub fn decode(r: &mut Reader<'_>) -> Result<LogId> {
        Ok(LogId {
            index: r.u64()?,
            term: r.u64()?,
        })
    }
}

impl PartialOrd for LogId {
    fn partial_cmp(&self, other: &LogId) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for LogId {
    fn cmp(&self, other: &LogId) -> std::cmp::Ordering {
        (self.term, self.index).cmp(&(other.term, other.index))
    }
}

impl fmt::Display for LogId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "({}, t{})", self.index, self.term)
    }
}

impl fmt::Debug for LogId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

/// What a log entry carries.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum EntryType {
    /// User data for the state machine.
    Data = 1,
    /// The empty entry a new leader appends to commit its term.
    NoOp = 2,
    /// A [`Configuration`] (stable or joint).
    Configuration = 3,
}

impl EntryType {
    /// The type for its wire/disk byte.
    pub fn from_u8(v: u8) -> Result<EntryType> {
        match v {
            1 => Ok(EntryType::Data),
            2 => Ok(EntryType::NoOp),
            3 => Ok(EntryType::Configuration),
            other => Err(RaftError::decode(
                "EntryType",
                format!("unknown entry type {other}"),
            )),
        }
    }
}

/// Read access to the terms of a log, all the core needs to see of it.
///
/// Contract: `first_index() <= last_index() + 1` (equal when empty); `term_at(0) == Some(0)`;
/// `term_at(i)` is `Some` for every `i` in `first_index()..=last_index()`; an implementation that
/// knows the snapshot boundary (the LogManager) also answers for `first_index() - 1`. Every
/// other index answers `None`; this is never a panic.
pub trait LogRead {
    /// The first index still held (after compaction), or `last_index() + 1` when empty.
    fn first_index(&self) -> u64;
    /// The last index held, or `first_index() - 1` when empty.
    fn last_index(&self) -> u64;
    /// The term of the entry at `index`, if known.
    fn term_at(&self, index: u64) -> Option<u64>;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_id_orders_by_term_then_index() {
        assert!(LogId::new(10, 1) < LogId::new(1, 2));
        assert!(LogId::new(1, 2) < LogId::new(2, 2));
        assert_eq!(LogId::default(), LogId::new(0, 0));
    }

    #[test]
    fn entry_type_rejects_unknown_bytes() {
        assert_eq!(EntryType::from_u8(3).unwrap(), EntryType::Configuration);
        assert!(EntryType::from_u8(0).is_err());
        assert!(EntryType::from_u8(4).is_err());
    }
}

#[cfg(test)]
mod proptests;
