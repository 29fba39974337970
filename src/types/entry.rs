//! [`LogEntry`]: one entry of the replicated log, as storage, transport and the node share it.
//!
//! The payload is a [`Bytes`]: a shared, reference-counted buffer (a slice of a received frame
//! or of a mapped log segment), so an entry moves from network to disk to state machine without
//! its data being copied. Its CRC-32C is computed once, when the leader creates the entry, and
//! travels with it end to end: stored beside it on disk, sent with it on the wire, verified by
//! a follower before it appends.

use bytes::Bytes;

use crate::error::{RaftError, Result};
use crate::types::{EntryType, LogId};

/// One log entry: position, kind, payload and the checksum that travels with it.
///
/// Invariant: `crc == LogEntry::compute_crc(id, kind, &data)` for every entry created by
/// [`LogEntry::new`]; an entry built with [`LogEntry::with_crc`] from untrusted input is
/// checked with [`LogEntry::verify`] before it is appended.
#[derive(Clone, PartialEq, Eq)]
pub struct LogEntry {
    /// Index and term.
    pub id: LogId,
    /// What the payload is.
    pub kind: EntryType,
    /// The payload: user data, an encoded [`Configuration`](crate::types::Configuration),
    /// or empty for a no-op.
    pub data: Bytes,
    /// CRC-32C over `term | index | kind | data` (integers little-endian, kind one byte).
    pub crc: u32,
}

impl LogEntry {
    /// An entry with its checksum computed.
    pub fn new(id: LogId, kind: EntryType, data: Bytes) -> LogEntry {
        let crc = LogEntry::compute_crc(id, kind, &data);
        LogEntry {
            id,
            kind,
            data,
            crc,
        }
    }

    /// An entry with a checksum received from elsewhere (wire, disk), not yet verified.
    pub fn with_crc(id: LogId, kind: EntryType, data: Bytes, crc: u32) -> LogEntry {
        LogEntry {
            id,
            kind,
            data,
            crc,
        }
    }

    /// The checksum of an entry's fields.
    pub fn compute_crc(id: LogId, kind: EntryType, data: &[u8]) -> u32 {
        let mut head = [0u8; 17];
        head[..8].copy_from_slice(&id.term.to_le_bytes());
        head[8..16].copy_from_slice(&id.index.to_le_bytes());
        head[16] = kind as u8;
        crc32c::crc32c_append(crc32c::crc32c(&head), data)
    }

    /// Checks the carried checksum against the fields.
    pub fn verify(&self) -> Result<()> {
        let want = LogEntry::compute_crc(self.id, self.kind, &self.data);
        if want != self.crc {
            return Err(RaftError::decode(
                "LogEntry",
                format!(
                    "checksum mismatch for entry {}: carried {:#010x}, computed {want:#010x}",
                    self.id, self.crc
                ),
            ));
        }
        Ok(())
    }
}

impl std::fmt::Debug for LogEntry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "LogEntry({} {:?} {} bytes crc {:#010x})",
            self.id,
            self.kind,
            self.data.len(),
            self.crc
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checksum_covers_every_field() {
        let e = LogEntry::new(
            LogId::new(7, 3),
            EntryType::Data,
            Bytes::from_static(b"abc"),
        );
        e.verify().unwrap();
        let mut bad = e.clone();
        bad.data = Bytes::from_static(b"abd");
        assert!(bad.verify().is_err());
        let mut bad = e.clone();
        bad.id.term = 4;
        assert!(bad.verify().is_err());
        let mut bad = e.clone();
        bad.id.index = 8;
        assert!(bad.verify().is_err());
        let mut bad = e;
        bad.kind = EntryType::NoOp;
        assert!(bad.verify().is_err());
    }

    #[test]
    fn cloning_shares_the_payload() {
        let e = LogEntry::new(
            LogId::new(1, 1),
            EntryType::Data,
            Bytes::from(vec![1u8; 4096]),
        );
        let c = e.clone();
        assert_eq!(
            e.data.as_ptr(),
            c.data.as_ptr(),
            "clones must not copy entry data"
        );
    }
}
