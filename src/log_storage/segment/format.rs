//! The on-disk format of the segmented log (DESIGN.md section 5): file names, the segment
//! header, entry records, batch-end records and `log_meta`. All integers little-endian, every
//! structure checksummed with CRC-32C. Pure encoding and decoding: no IO, no state.
//!
//! Segment file: `header (48 bytes) | record | record | ...`, the rest preallocated zeros.
//! - header: `magic "TRAFTLOG" | version u32 | flags u32 (0) | first_index u64 | epoch u64 |
//!   salt u64 | crc u32 (over the 40 bytes before it) | reserved u32 (0)`.
//! - record header (25 bytes): `len u32 | crc u32 | term u64 | index u64 | type u8`, then
//!   `len` bytes of data.
//!   - entry (`type` = the [`EntryType`] byte, 1..=3): `crc` is the entry's own CRC, computed
//!     once by the leader over `term | index | type | data` and carried end to end.
//!   - batch end (`type` = [`TYPE_BATCH_END`]): closes one appended batch. `len` = 16,
//!     `term` = the segment's salt, `index` = the batch's last index (first - 1 for an empty
//!     batch), data = `start offset u64 | first index u64`; `crc` covers every other byte of
//!     the record. The salt is random per segment, so no payload can forge one.
//!
//! `log_meta`: `magic "TRAFTLMT" | version u32 | first_log_index u64 | epoch u64 | crc u32`.

use byteorder::{ByteOrder, LittleEndian as LE};

use crate::types::{EntryType, LogEntry, LogId};

/// The format version this build writes and reads.
pub(crate) const VERSION: u32 = 1;

const SEGMENT_MAGIC: &[u8; 8] = b"TRAFTLOG";
const META_MAGIC: &[u8; 8] = b"TRAFTLMT";

/// Bytes of a segment header.
pub(crate) const HEADER_LEN: u64 = 48;
/// Bytes of a record header.
pub(crate) const RECORD_HEADER_LEN: u64 = 25;
/// The record type of a batch end.
pub(crate) const TYPE_BATCH_END: u8 = 0x7F;
/// Bytes of a batch-end record.
pub(crate) const BATCH_END_LEN: u64 = RECORD_HEADER_LEN + 16;
/// Bytes of `log_meta`.
pub(crate) const META_LEN: usize = 32;

/// Name of the log's meta file.
pub(crate) const META_FILE: &str = "log_meta";

/// The decoded header of a segment file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct SegmentHeader {
    pub first_index: u64,
    pub epoch: u64,
    pub salt: u64,
}

/// A segment header, encoded.
pub(crate) fn encode_header(h: &SegmentHeader) -> [u8; HEADER_LEN as usize] {
    let mut b = [0u8; HEADER_LEN as usize];
    b[..8].copy_from_slice(SEGMENT_MAGIC);
    LE::write_u32(&mut b[8..12], VERSION);
    LE::write_u64(&mut b[16..24], h.first_index);
    LE::write_u64(&mut b[24..32], h.epoch);
    LE::write_u64(&mut b[32..40], h.salt);
    let crc = crc32c::crc32c(&b[..40]);
    LE::write_u32(&mut b[40..44], crc);
    b
}

/// Why a header does not decode.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum HeaderError {
    /// Not a header at all (short, bad magic or checksum): possibly a creation cut short.
    Damaged(String),
    /// A well-formed header of a version this build does not read: never a guess.
    Version(u32),
}

/// Decodes a segment header from the first bytes of a file.
pub(crate) fn decode_header(bytes: &[u8]) -> Result<SegmentHeader, HeaderError> {
    if bytes.len() < HEADER_LEN as usize {
        return Err(HeaderError::Damaged(format!(
            "file of {} bytes is shorter than a segment header",
            bytes.len()
        )));
    }
    let b = &bytes[..HEADER_LEN as usize];
    if &b[..8] != SEGMENT_MAGIC {
        return Err(HeaderError::Damaged("bad segment magic".into()));
    }
    let (want, got) = (LE::read_u32(&b[40..44]), crc32c::crc32c(&b[..40]));
    if want != got {
        return Err(HeaderError::Damaged(format!(
            "segment header checksum {want:#010x} != computed {got:#010x}"
        )));
    }
    let version = LE::read_u32(&b[8..12]);
    if version != VERSION {
        return Err(HeaderError::Version(version));
    }
    if b[12..16] != [0; 4] || b[44..48] != [0; 4] {
        return Err(HeaderError::Damaged(
            "reserved header bytes are not zero".into(),
        ));
    }
    Ok(SegmentHeader {
        first_index: LE::read_u64(&b[16..24]),
        epoch: LE::read_u64(&b[24..32]),
        salt: LE::read_u64(&b[32..40]),
    })
}

/// Encoded size of an entry's record.
pub(crate) fn entry_record_len(e: &LogEntry) -> u64 {
    RECORD_HEADER_LEN + e.data.len() as u64
}

/// Appends an entry's record. The caller bounds `data` below `u32::MAX`.
pub(crate) fn encode_entry(buf: &mut Vec<u8>, e: &LogEntry) {
    let mut h = [0u8; RECORD_HEADER_LEN as usize];
    debug_assert!(e.data.len() < u32::MAX as usize);
    LE::write_u32(&mut h[0..4], e.data.len() as u32);
    LE::write_u32(&mut h[4..8], e.crc);
    LE::write_u64(&mut h[8..16], e.id.term);
    LE::write_u64(&mut h[16..24], e.id.index);
    h[24] = e.kind as u8;
    buf.extend_from_slice(&h);
    buf.extend_from_slice(&e.data);
}

/// The batch end closing entries `first..=last` that start at byte `start` of the segment.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct BatchEnd {
    pub start: u64,
    pub first_index: u64,
    pub last_index: u64,
}

fn batch_end_crc(rec: &[u8]) -> u32 {
    crc32c::crc32c_append(crc32c::crc32c(&rec[0..4]), &rec[8..BATCH_END_LEN as usize])
}

/// Appends a batch-end record.
pub(crate) fn encode_batch_end(buf: &mut Vec<u8>, salt: u64, end: &BatchEnd) {
    let mut r = [0u8; BATCH_END_LEN as usize];
    LE::write_u32(&mut r[0..4], 16);
    LE::write_u64(&mut r[8..16], salt);
    LE::write_u64(&mut r[16..24], end.last_index);
    r[24] = TYPE_BATCH_END;
    LE::write_u64(&mut r[25..33], end.start);
    LE::write_u64(&mut r[33..41], end.first_index);
    let crc = batch_end_crc(&r);
    LE::write_u32(&mut r[4..8], crc);
    buf.extend_from_slice(&r);
}

/// One record read back from a segment.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Record {
    /// An entry whose checksum verified; its data is `bytes[data_start..end]`.
    Entry {
        id: LogId,
        kind: EntryType,
        crc: u32,
        data_start: u64,
        end: u64,
    },
    /// A batch end whose checksum and salt verified.
    BatchEnd { end: BatchEnd, record_end: u64 },
}

/// Decodes and verifies the record at `off` of a segment's `bytes`. The error says why the
/// bytes there are not a valid record (zeros, a short file, a checksum mismatch, ...).
pub(crate) fn decode_record(bytes: &[u8], off: u64, salt: u64) -> Result<Record, String> {
    let len_total = bytes.len() as u64;
    if off + RECORD_HEADER_LEN > len_total {
        return Err(format!(
            "record header at {off} runs past end of file {len_total}"
        ));
    }
    let o = off as usize;
    let h = &bytes[o..o + RECORD_HEADER_LEN as usize];
    let len = LE::read_u32(&h[0..4]) as u64;
    let end = off + RECORD_HEADER_LEN + len;
    if end > len_total {
        return Err(format!(
            "record of {len} bytes at {off} runs past end of file"
        ));
    }
    let (crc, term, index, ty) = (
        LE::read_u32(&h[4..8]),
        LE::read_u64(&h[8..16]),
        LE::read_u64(&h[16..24]),
        h[24],
    );
    if ty == TYPE_BATCH_END {
        let r = &bytes[o..end as usize];
        if len != 16 || term != salt || crc != batch_end_crc(r) {
            return Err(format!("damaged batch-end record at {off}"));
        }
        let end_rec = BatchEnd {
            start: LE::read_u64(&r[25..33]),
            first_index: LE::read_u64(&r[33..41]),
            last_index: index,
        };
        return Ok(Record::BatchEnd {
            end: end_rec,
            record_end: end,
        });
    }
    if ty == 0 && len == 0 && crc == 0 && term == 0 && index == 0 {
        return Err(format!("zeros at {off}: no record was written here"));
    }
    let kind = EntryType::from_u8(ty).map_err(|_| format!("unknown record type {ty} at {off}"))?;
    let id = LogId::new(index, term);
    let data = &bytes[(off + RECORD_HEADER_LEN) as usize..end as usize];
    let computed = LogEntry::compute_crc(id, kind, data);
    if computed != crc {
        return Err(format!(
            "entry record at {off} ({id}): checksum {crc:#010x} != computed {computed:#010x}"
        ));
    }
    Ok(Record::Entry {
        id,
        kind,
        crc,
        data_start: off + RECORD_HEADER_LEN,
        end,
    })
}

/// The position fields of an entry record at `off`, unverified: the read path's decoding of
/// records that recovery (or the writer) already verified. `None` if they do not fit.
pub(crate) fn peek_entry(bytes: &[u8], off: u64) -> Option<(LogId, EntryType, u32, u64, u64)> {
    let o = usize::try_from(off).ok()?;
    let h = bytes.get(o..o + RECORD_HEADER_LEN as usize)?;
    let len = LE::read_u32(&h[0..4]) as u64;
    let kind = EntryType::from_u8(h[24]).ok()?;
    let id = LogId::new(LE::read_u64(&h[16..24]), LE::read_u64(&h[8..16]));
    let data_start = off + RECORD_HEADER_LEN;
    let end = data_start + len;
    if end > bytes.len() as u64 {
        return None;
    }
    Some((id, kind, LE::read_u32(&h[4..8]), data_start, end))
}

/// The durable state of the log as a whole.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct LogMeta {
    /// Entries before this index are discarded (compacted into a snapshot).
    pub first_log_index: u64,
    /// Bumped by every reset; segments of an older epoch hold discarded entries.
    pub epoch: u64,
}

/// `log_meta`, encoded.
pub(crate) fn encode_meta(m: &LogMeta) -> [u8; META_LEN] {
    let mut b = [0u8; META_LEN];
    b[..8].copy_from_slice(META_MAGIC);
    LE::write_u32(&mut b[8..12], VERSION);
    LE::write_u64(&mut b[12..20], m.first_log_index);
    LE::write_u64(&mut b[20..28], m.epoch);
    let crc = crc32c::crc32c(&b[..28]);
    LE::write_u32(&mut b[28..32], crc);
    b
}

/// Decodes `log_meta`; the error is the reason for a `Corruption`.
pub(crate) fn decode_meta(b: &[u8]) -> Result<LogMeta, String> {
    if b.len() != META_LEN {
        return Err(format!(
            "log_meta has {} bytes, expected {META_LEN}",
            b.len()
        ));
    }
    if &b[..8] != META_MAGIC {
        return Err("bad log_meta magic".into());
    }
    let (want, got) = (LE::read_u32(&b[28..32]), crc32c::crc32c(&b[..28]));
    if want != got {
        return Err(format!(
            "log_meta checksum {want:#010x} != computed {got:#010x}"
        ));
    }
    let version = LE::read_u32(&b[8..12]);
    if version != VERSION {
        return Err(format!(
            "log_meta format version {version} is not supported (this build reads {VERSION})"
        ));
    }
    let first_log_index = LE::read_u64(&b[12..20]);
    if first_log_index == 0 {
        return Err("log_meta first_log_index is 0".into());
    }
    Ok(LogMeta {
        first_log_index,
        epoch: LE::read_u64(&b[20..28]),
    })
}

/// What a file in the log directory is, by its name.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum FileKind {
    /// `log_<first>_<last>`.
    Closed { first: u64, last: u64 },
    /// `log_inprogress_<first>`.
    Open { first: u64 },
}

/// The name of a closed segment.
pub(crate) fn closed_name(first: u64, last: u64) -> String {
    format!("log_{first:020}_{last:020}")
}

/// The name of the open segment.
pub(crate) fn open_name(first: u64) -> String {
    format!("log_inprogress_{first:020}")
}

fn index20(s: &str) -> Option<u64> {
    if s.len() != 20 || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse().ok()
}

/// Parses a segment file name; `None` for any other file.
pub(crate) fn parse_name(name: &str) -> Option<FileKind> {
    if let Some(rest) = name.strip_prefix("log_inprogress_") {
        return index20(rest).map(|first| FileKind::Open { first });
    }
    let rest = name.strip_prefix("log_")?;
    let (a, b) = rest.split_once('_')?;
    Some(FileKind::Closed {
        first: index20(a)?,
        last: index20(b)?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    #[test]
    fn names_round_trip_and_other_files_are_not_segments() {
        assert_eq!(
            parse_name(&closed_name(1, 20)),
            Some(FileKind::Closed { first: 1, last: 20 })
        );
        assert_eq!(parse_name(&open_name(7)), Some(FileKind::Open { first: 7 }));
        for other in [
            "log_meta",
            "log_meta.tmp",
            "log_spare",
            "log_spare.tmp",
            "LOCK",
            "log_1_2",
            "log_inprogress_x",
        ] {
            assert_eq!(parse_name(other), None, "{other}");
        }
    }

    #[test]
    fn records_round_trip_and_any_flipped_bit_is_detected() {
        let e = LogEntry::new(
            LogId::new(5, 2),
            EntryType::Data,
            Bytes::from_static(b"hey"),
        );
        let mut buf = vec![0u8; 3];
        encode_entry(&mut buf, &e);
        let end = BatchEnd {
            start: 3,
            first_index: 5,
            last_index: 5,
        };
        encode_batch_end(&mut buf, 99, &end);
        let Ok(Record::Entry { id, end: e_end, .. }) = decode_record(&buf, 3, 99) else {
            panic!("entry does not decode");
        };
        assert_eq!(id, e.id);
        let got = decode_record(&buf, e_end, 99).unwrap();
        assert!(matches!(got, Record::BatchEnd { end: b, .. } if b == end));
        assert!(decode_record(&buf, e_end, 98).is_err(), "salt must match");
        for bit in 24..buf.len() * 8 {
            let mut bad = buf.clone();
            bad[bit / 8] ^= 1 << (bit % 8);
            let at = if bit / 8 < e_end as usize { 3 } else { e_end };
            assert!(decode_record(&bad, at, 99).is_err(), "bit {bit} undetected");
        }
    }

    #[test]
    fn header_and_meta_reject_damage_and_unknown_versions() {
        let h = SegmentHeader {
            first_index: 9,
            epoch: 1,
            salt: 77,
        };
        let b = encode_header(&h);
        assert_eq!(decode_header(&b).unwrap(), h);
        let mut bad = b;
        bad[20] ^= 4;
        assert!(matches!(decode_header(&bad), Err(HeaderError::Damaged(_))));
        let mut v2 = b;
        LE::write_u32(&mut v2[8..12], 2);
        let crc = crc32c::crc32c(&v2[..40]);
        LE::write_u32(&mut v2[40..44], crc);
        assert_eq!(decode_header(&v2), Err(HeaderError::Version(2)));
        let m = LogMeta {
            first_log_index: 3,
            epoch: 4,
        };
        assert_eq!(decode_meta(&encode_meta(&m)).unwrap(), m);
        let mut bad = encode_meta(&m);
        bad[13] ^= 1;
        assert!(decode_meta(&bad).is_err());
    }
}
