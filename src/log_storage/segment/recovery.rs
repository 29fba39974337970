//! Reading segment files back at open, and the decision between a torn tail and corruption
//! (RELIABILITY.md trap 8; the argument is in ARCHITECTURE.md, "Torn tail or corruption").
//!
//! Pure functions over a segment's bytes: no IO, no state. A closed segment (and any segment
//! followed by another) must be whole: every record of its range verifies, or the open fails
//! with [`RaftError::Corruption`]. Only the last segment may end in a torn batch, and it is cut
//! back only when the damage cannot lie in bytes that were synced.

use std::path::Path;

use crate::error::{RaftError, Result};
use crate::log_storage::segment::format::{
    decode_record, BatchEnd, Record, SegmentHeader, BATCH_END_LEN, HEADER_LEN, TYPE_BATCH_END,
};

/// The granularity at which a disk may lose part of a write: a sector never written back
/// reads as the zeros it held before (segments are preallocated with zeros and bytes past the
/// last batch are never written twice).
pub(crate) const SECTOR: u64 = 512;

/// The entries found in a segment.
#[derive(Debug)]
pub(crate) struct Scanned {
    /// The index of the segment's first entry (from its header).
    pub first_index: u64,
    /// Invariant: `offsets[i]` is the byte offset of entry `first_index + i`'s record.
    pub offsets: Vec<u32>,
    /// Term runs `(first index of the run, term)`, ascending, covering every entry.
    pub terms: Vec<(u64, u64)>,
    /// Offset just past the last record kept.
    pub end: u64,
}

impl Scanned {
    /// Index of the last entry kept (`first_index - 1` when none).
    pub fn last_index(&self) -> u64 {
        self.first_index + self.offsets.len() as u64 - 1
    }
}

/// What the last segment of the log holds.
#[derive(Debug)]
pub(crate) enum OpenScan {
    /// Every batch ends with its batch-end record and only zeros follow: appends go on at
    /// `end`.
    Clean(Scanned),
    /// The last batch was torn: the entries before the damage are kept, the rest is cut.
    /// The string says what was found at the cut.
    Torn(Scanned, String),
}

/// The result of walking records from the header until the first invalid one.
struct Walk {
    scanned: Scanned,
    /// Offset where the current batch starts (just past the last batch end, or the header).
    batch_start: u64,
    /// `(start, record end)` of the last batch end walked over.
    last_end: Option<(u64, u64)>,
    /// Offset of the first invalid record and why it is invalid (`None`: stopped at `last`).
    failure: Option<(u64, String)>,
}

/// Walks records from the header: entries must be contiguous from the header's first index
/// with terms that never decrease, and each batch end must close exactly the batch before it.
/// Stops after entry `stop_after` if given, else at the first invalid record.
fn walk(bytes: &[u8], header: &SegmentHeader, stop_after: Option<u64>) -> Walk {
    let mut w = Walk {
        scanned: Scanned {
            first_index: header.first_index,
            offsets: Vec::new(),
            terms: Vec::new(),
            end: HEADER_LEN,
        },
        batch_start: HEADER_LEN,
        last_end: None,
        failure: None,
    };
    let mut next = header.first_index;
    let mut batch_first = next;
    let mut off = HEADER_LEN;
    while stop_after.is_none_or(|last| next <= last) {
        let problem = match decode_record(bytes, off, header.salt) {
            Ok(Record::Entry { id, end, .. }) => {
                let last_term = w.scanned.terms.last().map_or(0, |t| t.1);
                if id.index != next {
                    Some(format!(
                        "entry {id} at {off} where index {next} was expected"
                    ))
                } else if id.term < last_term {
                    Some(format!(
                        "entry {id} at {off}: term below the previous {last_term}"
                    ))
                } else {
                    if id.term != last_term || w.scanned.terms.is_empty() {
                        w.scanned.terms.push((id.index, id.term));
                    }
                    // Segments are at most u32::MAX bytes (SegmentLogStorageOptions).
                    w.scanned.offsets.push(off as u32);
                    next += 1;
                    off = end;
                    w.scanned.end = end;
                    None
                }
            }
            Ok(Record::BatchEnd { end, record_end }) => {
                let want = BatchEnd {
                    start: w.batch_start,
                    first_index: batch_first,
                    last_index: next - 1,
                };
                if end != want {
                    Some(format!(
                        "batch end at {off} is {end:?}, its batch is {want:?}"
                    ))
                } else {
                    w.last_end = Some((end.start, record_end));
                    w.batch_start = record_end;
                    batch_first = next;
                    off = record_end;
                    w.scanned.end = record_end;
                    None
                }
            }
            Err(reason) => Some(reason),
        };
        if let Some(reason) = problem {
            w.failure = Some((off, reason));
            break;
        }
    }
    w
}

/// Reads a segment that must be whole through entry `last` (a closed segment, or one
/// followed by another segment). Any invalid record is corruption.
pub(crate) fn scan_whole(
    path: &Path,
    bytes: &[u8],
    header: &SegmentHeader,
    last: u64,
) -> Result<Scanned> {
    let w = walk(bytes, header, Some(last));
    if let Some((off, reason)) = w.failure {
        return Err(RaftError::corruption(
            path,
            off,
            format!("{reason} (entries through {last} were synced)"),
        ));
    }
    Ok(w.scanned)
}

/// Reads an open segment that a later segment follows (a rollover sealed it after its last
/// sync, and the rename was lost): it must hold exactly the entries through `last`, whole. Any
/// damage, a missing entry, or a valid entry beyond `last` (overlapping the next segment) is
/// corruption, never a cut.
pub(crate) fn scan_exact(
    path: &Path,
    bytes: &[u8],
    header: &SegmentHeader,
    last: u64,
) -> Result<Scanned> {
    let scanned = scan_whole(path, bytes, header, last)?;
    let beyond = walk(bytes, header, None);
    if beyond.scanned.last_index() > last {
        return Err(RaftError::corruption(
            path,
            scanned.end,
            format!(
                "open segment holds entries through {}, but the next segment starts at {}",
                beyond.scanned.last_index(),
                last + 1
            ),
        ));
    }
    Ok(scanned)
}

/// Offset just past the last non-zero byte (0 if every byte is zero).
pub(crate) fn nonzero_end(bytes: &[u8]) -> u64 {
    const CHUNK: usize = 4096;
    let mut end = bytes.len();
    while end > 0 {
        let start = end.saturating_sub(CHUNK);
        let chunk = &bytes[start..end];
        // An OR-fold vectorises, unlike a short-circuiting search.
        if chunk.iter().fold(0u8, |a, &b| a | b) != 0 {
            let last = chunk.iter().rposition(|&b| b != 0).unwrap_or(0);
            return (start + last + 1) as u64;
        }
        end = start;
    }
    0
}

/// Every valid batch end (salt and checksum verified) whose record starts in `from..to`,
/// with its record offset and record end.
fn batch_ends_in(bytes: &[u8], from: u64, to: u64, salt: u64) -> Vec<(u64, BatchEnd, u64)> {
    let salt_bytes = salt.to_le_bytes();
    let mut found = Vec::new();
    let last_start = (bytes.len() as u64).saturating_sub(BATCH_END_LEN);
    let mut p = from;
    while p < to && p <= last_start {
        let o = p as usize;
        if bytes[o + 24] == TYPE_BATCH_END
            && bytes[o..o + 4] == 16u32.to_le_bytes()
            && bytes[o + 8..o + 16] == salt_bytes
        {
            if let Ok(Record::BatchEnd { end, record_end }) = decode_record(bytes, p, salt) {
                // A genuine batch end starts its batch at or before itself.
                if end.start >= HEADER_LEN && end.start <= p {
                    found.push((p, end, record_end));
                }
            }
        }
        p += 1;
    }
    found
}

/// True if some sector-aligned piece of `from..to` holds only zeros: a part of a write that
/// never reached the disk.
fn has_zero_sector(bytes: &[u8], from: u64, to: u64) -> bool {
    let to = to.min(bytes.len() as u64);
    let mut s = from - from % SECTOR;
    while s < to {
        let (lo, hi) = (s.max(from), (s + SECTOR).min(to));
        if lo < hi && bytes[lo as usize..hi as usize].iter().all(|&b| b == 0) {
            return true;
        }
        s += SECTOR;
    }
    false
}

/// Reads the last segment of the log, which may end in a torn batch.
///
/// Walks records to the first invalid one, at `x`. Then decides:
/// - nothing but zeros from `x` on: a clean end (if `x` closes a batch) or a torn one;
/// - otherwise the last batch started at or after `lower`, the largest bound the surviving
///   batch-end records prove (a batch end followed by any non-zero byte proves the next batch
///   was started, which happens only after this one's sync returned; a batch end alone
///   proves its own batch started at its `start`). Damage below `lower` hit synced bytes:
///   corruption. Damage at or after it lies in the last batch; if that batch's own end record
///   survived, the damage must include a sector that was never written back (all zeros),
///   else it is a flipped bit, not a torn write: corruption.
pub(crate) fn scan_last(path: &Path, bytes: &[u8], header: &SegmentHeader) -> Result<OpenScan> {
    let w = walk(bytes, header, None);
    let Some((x, reason)) = w.failure else {
        // `walk` without a stop index ends only at an invalid record.
        return Ok(OpenScan::Clean(w.scanned));
    };
    let nz_end = nonzero_end(bytes);
    if nz_end <= x {
        if x == w.batch_start {
            return Ok(OpenScan::Clean(w.scanned));
        }
        let why = format!("the last batch has no batch end: cut at {x} ({reason})");
        return Ok(OpenScan::Torn(w.scanned, why));
    }
    // Non-zero bytes follow the damage; the walk stopped at a batch end or the header, and
    // something was written after it.
    let mut lower = w.last_end.map_or(HEADER_LEN, |(_, end)| end);
    let mut covering = None;
    for (p, end, record_end) in batch_ends_in(bytes, x, nz_end, header.salt) {
        let bound = if nz_end > record_end {
            record_end
        } else {
            end.start
        };
        lower = lower.max(bound);
        if end.start <= x && x < p {
            covering = Some(p);
        }
    }
    if x < lower {
        return Err(RaftError::corruption(
            path,
            x,
            format!(
                "{reason}; a later batch starts at or after {lower}, so these bytes were \
                 synced: not a torn write"
            ),
        ));
    }
    if let Some(p) = covering {
        if !has_zero_sector(bytes, x, p) {
            return Err(RaftError::corruption(
                path,
                x,
                format!(
                    "{reason}; the batch's end record at {p} survived and no sector before it \
                     is missing, so the bytes were changed, not torn"
                ),
            ));
        }
    }
    let why = format!("torn last batch: cut at {x} ({reason})");
    Ok(OpenScan::Torn(w.scanned, why))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nonzero_end_finds_the_last_written_byte() {
        let mut b = vec![0u8; 10_000];
        assert_eq!(nonzero_end(&b), 0);
        b[0] = 1;
        assert_eq!(nonzero_end(&b), 1);
        b[8191] = 3;
        assert_eq!(nonzero_end(&b), 8192);
        b[9999] = 3;
        assert_eq!(nonzero_end(&b), 10_000);
    }

    #[test]
    fn zero_sectors_are_found_at_any_alignment() {
        let mut b = vec![1u8; 4096];
        assert!(!has_zero_sector(&b, 10, 4000));
        b[1024..1536].fill(0);
        assert!(has_zero_sector(&b, 10, 4000));
        assert!(!has_zero_sector(&b, 1536, 4000));
        // A partial sector at the start counts: the piece of a missing page before it.
        b[600..1024].fill(0);
        assert!(has_zero_sector(&b, 700, 1000));
    }
}
