//! SegmentLogStorage behaviour: round trips, zero-copy reads, rollover, truncations, reset,
//! reopen after a clean close and after a crash, the directory lock, one write and one sync
//! per batch. Shared helpers for the other test modules of the log storage live here.

use std::path::Path;
use std::sync::Arc;

use bytes::Bytes;

use super::*;
use crate::fs::{CrashMode, FaultFs, RealFs};
use crate::types::{EntryType, LogId, Rng};

/// A temp dir on tmpfs when there is one: the tests sync a lot, and tmpfs syncs are free.
pub(crate) fn tempdir() -> tempfile::TempDir {
    let shm = Path::new("/dev/shm");
    if shm.is_dir() {
        if let Ok(d) = tempfile::tempdir_in(shm) {
            return d;
        }
    }
    tempfile::tempdir().unwrap()
}

/// Entry `index` of term `term` with `len` bytes of seeded random (non-zero-run) data.
pub(crate) fn entry(index: u64, term: u64, len: usize) -> LogEntry {
    let mut rng = Rng::new(index.wrapping_mul(31).wrapping_add(term));
    let data: Vec<u8> = (0..len).map(|_| (rng.next_u64() % 255 + 1) as u8).collect();
    LogEntry::new(LogId::new(index, term), EntryType::Data, Bytes::from(data))
}

/// Entries `from..=to` of term `term`, `len` bytes each.
pub(crate) fn entries(from: u64, to: u64, term: u64, len: usize) -> Vec<LogEntry> {
    (from..=to).map(|i| entry(i, term, len)).collect()
}

pub(crate) fn opts(segment_size: u64) -> SegmentLogStorageOptions {
    SegmentLogStorageOptions {
        segment_size,
        logger: crate::logging::discard_logger(),
        spare: SparePreparation::Inline,
        spare_after_bytes: None,
        sync_appends: true,
    }
}

pub(crate) fn open_real(dir: &Path, segment_size: u64) -> Result<SegmentLogStorage> {
    SegmentLogStorage::open(RealFs::shared(), dir, opts(segment_size))
}

pub(crate) fn open_fault(fs: &FaultFs, dir: &Path, segment_size: u64) -> Result<SegmentLogStorage> {
    SegmentLogStorage::open(fs.shared(), dir, opts(segment_size))
}

/// Every entry of a log, in order.
pub(crate) fn contents(s: &dyn LogStorage) -> Vec<LogEntry> {
    (s.first_log_index()..=s.last_log_index())
        .map(|i| s.get(i).unwrap_or_else(|| panic!("entry {i} missing")))
        .collect()
}

/// Asserts a log holds exactly `want`, starting at `first`.
pub(crate) fn assert_log(s: &dyn LogStorage, first: u64, want: &[LogEntry]) {
    assert_eq!(s.first_log_index(), first, "first index");
    assert_eq!(
        s.last_log_index(),
        first + want.len() as u64 - 1,
        "last index"
    );
    let got = contents(s);
    for (g, w) in got.iter().zip(want) {
        assert_eq!(g, w, "entry {}", w.id);
        assert_eq!(s.term_at(w.id.index), Some(w.id.term));
        g.verify().unwrap();
    }
}

#[test]
fn appended_entries_read_back_from_the_mapping_without_copies() {
    let dir = tempdir();
    let s = open_real(dir.path(), 1 << 20).unwrap();
    assert_eq!((s.first_log_index(), s.last_log_index()), (1, 0));
    let batch = entries(1, 10, 1, 100);
    s.append_entries(&batch).unwrap();
    assert_log(&s, 1, &batch);
    let (a, b) = (s.get(3).unwrap(), s.get(3).unwrap());
    assert_eq!(
        a.data.as_ptr(),
        b.data.as_ptr(),
        "reads must share the mapping"
    );
    assert_ne!(a.data.as_ptr(), batch[2].data.as_ptr());
    assert_eq!(s.get(0), None);
    assert_eq!(s.get(11), None);
    assert_eq!(s.term_at(11), None);
}

#[test]
fn bad_batches_are_refused_and_change_nothing() {
    let dir = tempdir();
    let s = open_real(dir.path(), 1 << 20).unwrap();
    s.append_entries(&entries(1, 3, 1, 10)).unwrap();
    for bad in [
        vec![],
        entries(5, 6, 1, 10),
        vec![entry(4, 1, 1), entry(6, 1, 1)],
    ] {
        let err = s.append_entries(&bad).unwrap_err();
        assert!(matches!(err, RaftError::Invalid { .. }), "{err}");
    }
    // Invalid arguments do not fail the storage.
    s.append_entries(&entries(4, 4, 2, 10)).unwrap();
    assert_eq!(s.last_log_index(), 4);
    assert!(s.truncate_suffix(0).is_ok());
    assert!(matches!(
        s.truncate_prefix(5),
        Err(RaftError::Invalid { .. })
    ));
}

#[test]
fn segments_roll_over_and_a_large_entry_gets_its_own() {
    let dir = tempdir();
    let s = open_real(dir.path(), 4096).unwrap();
    let mut all = Vec::new();
    for i in 1..=40 {
        let e = entry(i, 1 + i / 10, if i == 20 { 10_000 } else { 300 });
        s.append_entries(std::slice::from_ref(&e)).unwrap();
        all.push(e);
    }
    assert_log(&s, 1, &all);
    let names = s.segment_names().unwrap();
    assert!(names.len() > 3, "{names:?}");
    assert!(
        names.iter().any(|n| n == &format::closed_name(20, 20)),
        "{names:?}"
    );
    drop(s);
    let s = open_real(dir.path(), 4096).unwrap();
    assert_log(&s, 1, &all);
}

#[test]
fn one_batch_is_one_write_and_one_sync() {
    let dir = tempdir();
    let fs = FaultFs::new(dir.path(), 1).unwrap();
    let s = open_fault(&fs, dir.path(), 1 << 20).unwrap();
    s.append_entries(&entries(1, 1, 1, 10)).unwrap();
    let before = fs.stats();
    s.append_entries(&entries(2, 257, 1, 256)).unwrap();
    let after = fs.stats();
    assert_eq!(after.writes - before.writes, 1, "{before:?} {after:?}");
    assert_eq!(after.syncs - before.syncs, 1, "{before:?} {after:?}");
}

#[test]
fn reopen_after_close_and_after_crash_gives_the_same_entries() {
    let dir = tempdir();
    let fs = FaultFs::new(dir.path(), 2).unwrap();
    let log = dir.path().join("log");
    let mut want = Vec::new();
    let s = open_fault(&fs, &log, 8192).unwrap();
    for b in 0..20u64 {
        let batch = entries(b * 5 + 1, b * 5 + 5, 1 + b / 7, 200);
        s.append_entries(&batch).unwrap();
        want.extend(batch);
    }
    s.close().unwrap();
    assert!(matches!(
        s.append_entries(&entries(101, 101, 9, 1)),
        Err(RaftError::Stopped)
    ));
    drop(s);
    let clean = open_fault(&fs, &log, 8192).unwrap();
    assert_log(&clean, 1, &want);
    clean.append_entries(&entries(101, 105, 9, 200)).unwrap();
    want.extend(entries(101, 105, 9, 200));
    drop(clean); // no close: the process dies
    fs.crash(CrashMode::Torn).unwrap();
    let crashed = open_fault(&fs, &log, 8192).unwrap();
    assert_log(&crashed, 1, &want);
}

#[test]
fn truncate_suffix_seals_the_segment_and_keeps_handed_out_buffers() {
    let dir = tempdir();
    let s = open_real(dir.path(), 1 << 16).unwrap();
    s.append_entries(&entries(1, 10, 1, 100)).unwrap();
    let held = s.get(8).unwrap();
    let copy = held.data.to_vec();
    s.truncate_suffix(6).unwrap();
    assert_eq!(s.last_log_index(), 6);
    assert_eq!(s.get(8), None);
    assert_eq!(s.segment_names().unwrap(), vec![format::closed_name(1, 6)]);
    let new = entries(7, 9, 2, 100);
    s.append_entries(&new).unwrap();
    assert_eq!(held.data.to_vec(), copy, "a held buffer changed");
    held.verify().unwrap();
    let mut want = entries(1, 6, 1, 100);
    want.extend(new);
    assert_log(&s, 1, &want);
    drop(s);
    assert_log(&open_real(dir.path(), 1 << 16).unwrap(), 1, &want);
}

#[test]
fn truncate_suffix_across_segments_removes_the_later_ones() {
    let dir = tempdir();
    let s = open_real(dir.path(), 4096).unwrap();
    for i in 1..=30 {
        s.append_entries(&[entry(i, 1, 500)]).unwrap();
    }
    s.truncate_suffix(9).unwrap();
    s.append_entries(&entries(10, 12, 3, 500)).unwrap();
    let mut want = entries(1, 9, 1, 500);
    want.extend(entries(10, 12, 3, 500));
    assert_log(&s, 1, &want);
    drop(s);
    assert_log(&open_real(dir.path(), 4096).unwrap(), 1, &want);
    s_truncate_to_empty(dir.path());
}

fn s_truncate_to_empty(dir: &Path) {
    let s = open_real(dir, 4096).unwrap();
    s.truncate_suffix(0).unwrap();
    assert_eq!((s.first_log_index(), s.last_log_index()), (1, 0));
    assert!(s.segment_names().unwrap().is_empty());
    s.append_entries(&entries(1, 2, 5, 10)).unwrap();
    drop(s);
    assert_log(&open_real(dir, 4096).unwrap(), 1, &entries(1, 2, 5, 10));
}

#[test]
fn truncate_prefix_drops_whole_segments_and_survives_reopen() {
    let dir = tempdir();
    let s = open_real(dir.path(), 4096).unwrap();
    for i in 1..=30 {
        s.append_entries(&[entry(i, 1, 500)]).unwrap();
    }
    let before = s.segment_names().unwrap().len();
    s.truncate_prefix(17).unwrap();
    assert_eq!(s.get(16), None);
    assert_eq!(s.term_at(16), None);
    assert!(s.segment_names().unwrap().len() < before);
    assert_log(&s, 17, &entries(17, 30, 1, 500));
    drop(s);
    let s = open_real(dir.path(), 4096).unwrap();
    assert_log(&s, 17, &entries(17, 30, 1, 500));
    // Up to last + 1: the log is empty and continues there.
    s.truncate_prefix(31).unwrap();
    assert_eq!((s.first_log_index(), s.last_log_index()), (31, 30));
    s.append_entries(&entries(31, 32, 2, 10)).unwrap();
    drop(s);
    assert_log(
        &open_real(dir.path(), 4096).unwrap(),
        31,
        &entries(31, 32, 2, 10),
    );
}

#[test]
fn reset_discards_everything_atomically() {
    let dir = tempdir();
    let s = open_real(dir.path(), 4096).unwrap();
    for i in 1..=12 {
        s.append_entries(&[entry(i, 1, 700)]).unwrap();
    }
    let held = s.get(3).unwrap();
    s.reset(5).unwrap();
    assert_eq!((s.first_log_index(), s.last_log_index()), (5, 4));
    held.verify().unwrap();
    s.append_entries(&entries(5, 7, 4, 10)).unwrap();
    drop(s);
    let s = open_real(dir.path(), 4096).unwrap();
    assert_log(&s, 5, &entries(5, 7, 4, 10));
    assert!(matches!(s.reset(0), Err(RaftError::Invalid { .. })));
}

#[test]
fn a_second_open_of_the_same_directory_is_refused() {
    let dir = tempdir();
    let first = open_real(dir.path(), 4096).unwrap();
    let err = open_real(dir.path(), 4096).err().unwrap();
    assert!(matches!(err, RaftError::DirectoryLocked { .. }), "{err}");
    drop(first);
    open_real(dir.path(), 4096).unwrap();
}

/// A log of three entries, closed, and the path of its one segment.
fn a_closed_log_and_its_segment() -> (tempfile::TempDir, std::path::PathBuf) {
    let dir = tempdir();
    let s = open_real(dir.path(), 64 * 1024).unwrap();
    s.append_entries(&entries(1, 3, 1, 10)).unwrap();
    s.close().unwrap();
    drop(s);
    let seg = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| format::parse_name(p.file_name().unwrap().to_str().unwrap()).is_some())
        .expect("a segment");
    (dir, seg)
}

#[test]
fn a_segment_whose_name_and_header_give_index_0_or_near_u64_max_is_corrupt_not_a_panic() {
    for first in [0, u64::MAX] {
        let (dir, seg) = a_closed_log_and_its_segment();
        // A header with a valid checksum and the log's epoch, as a crafted or damaged
        // directory could hold: only the index is out of range.
        let header = format::decode_header(&std::fs::read(&seg).unwrap()).unwrap();
        let mut bytes = format::encode_header(&format::SegmentHeader {
            first_index: first,
            ..header
        })
        .to_vec();
        bytes.resize(4096, 0);
        let name = format::open_name(first);
        std::fs::write(dir.path().join(&name), bytes).unwrap();
        let err = open_real(dir.path(), 64 * 1024).err().expect("refused");
        assert!(
            matches!(&err, RaftError::Corruption { file, .. } if file.ends_with(&name)),
            "first index {first}: {err}"
        );
    }
}

#[test]
fn a_segment_file_of_4_gib_or_more_is_corrupt_not_misread() {
    let (dir, seg) = a_closed_log_and_its_segment();
    // Sparse: offsets past 4 GiB would be cut to u32 if the file were scanned.
    let f = std::fs::OpenOptions::new().write(true).open(&seg).unwrap();
    f.set_len(5 << 30).unwrap();
    let err = open_real(dir.path(), 64 * 1024).err().expect("refused");
    assert!(
        matches!(&err, RaftError::Corruption { reason, .. } if reason.contains("under 4 GiB")),
        "{err}"
    );
}

#[test]
fn bad_options_are_refused() {
    let dir = tempdir();
    let err = open_real(dir.path(), 100).err().unwrap();
    assert!(err.to_string().contains("segment_size = 100"), "{err}");
}

#[test]
fn reads_race_appends_and_truncations_without_tearing() {
    use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
    let dir = tempdir();
    let s = Arc::new(open_real(dir.path(), 8192).unwrap());
    s.append_entries(&entries(1, 1, 1, 64)).unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let reads = Arc::new(AtomicU64::new(0));
    let reader = {
        let (s, stop, reads) = (s.clone(), stop.clone(), reads.clone());
        std::thread::spawn(move || {
            while !stop.load(Relaxed) {
                for i in s.first_log_index()..=s.last_log_index() {
                    if let Some(e) = s.get(i) {
                        e.verify().unwrap();
                        reads.fetch_add(1, Relaxed);
                    }
                }
            }
        })
    };
    let mut term = 1;
    let mut round = 0u64;
    // Until both sides did real work, so that reads overlap appends and truncations.
    while round < 300 || (reads.load(Relaxed) < 20_000 && round < 100_000) {
        let last = s.last_log_index();
        if round % 10 == 9 {
            term += 1;
            s.truncate_suffix(last.saturating_sub(3).max(1)).unwrap();
        } else {
            let next = last + 1;
            s.append_entries(&entries(next, next + 2, term, 200))
                .unwrap();
        }
        round += 1;
    }
    stop.store(true, Relaxed);
    reader.join().unwrap();
}

#[test]
fn with_sync_appends_off_batches_are_written_not_synced_and_survive_a_process_restart() {
    let dir = tempdir();
    let fs = FaultFs::new(dir.path(), 11).unwrap();
    let mut o = opts(64 << 10);
    o.sync_appends = false;
    let s = SegmentLogStorage::open(fs.shared(), dir.path(), o).unwrap();
    // The first append creates the segment, which syncs (structure, not entries).
    let mut want = entries(1, 3, 1, 100);
    s.append_entries(&want).unwrap();
    let syncs = fs.stats().syncs;
    for i in 4..=40 {
        let e = entry(i, 1, 100);
        s.append_entries(std::slice::from_ref(&e)).unwrap();
        want.push(e);
    }
    assert_eq!(fs.stats().syncs, syncs, "an append synced");
    drop(s);
    // A process restart keeps the page cache: every written batch comes back.
    let s = open_fault(&fs, dir.path(), 64 << 10).unwrap();
    assert_log(&s, 1, &want);
}

#[test]
fn a_preallocated_segment_gets_zeros_written_ahead_of_its_batches_once_per_step() {
    use super::writer::ZERO_AHEAD;
    let dir = tempdir();
    let fs = FaultFs::new(dir.path(), 12).unwrap();
    let mut o = opts(4 << 20);
    // No spare: every write and sync counted below is the batches' and their zeros'.
    o.spare = SparePreparation::Off;
    let s = SegmentLogStorage::open(fs.shared(), dir.path(), o).unwrap();
    // The first append creates (preallocates) the segment.
    let mut want = vec![entry(1, 1, 1000)];
    s.append_entries(&want).unwrap();
    let mut with_zeros = 0;
    // About 3 MiB of 1000-byte entries, one per batch: no rollover in 4 MiB.
    for i in 2..=3000 {
        let before = fs.stats();
        let e = entry(i, 1, 1000);
        s.append_entries(std::slice::from_ref(&e)).unwrap();
        want.push(e);
        let after = fs.stats();
        assert_eq!(after.syncs - before.syncs, 1, "batch {i}");
        let writes = after.writes - before.writes;
        if writes > 1 {
            with_zeros += 1;
            // The zeros of one step: past this batch, at most twice the lead.
            let zeros = after.bytes_written - before.bytes_written - 1000;
            assert!(zeros <= 2 * ZERO_AHEAD, "batch {i}: {zeros} bytes of zeros");
        }
        let w = s.writer.lock();
        let open = w.open_segment().expect("open segment");
        assert!(
            open.zeroed >= (open.write_offset + ZERO_AHEAD).min(open.capacity),
            "batch {i}: zeros end at {} but the last batch at {}",
            open.zeroed,
            open.write_offset
        );
    }
    // One step per ZERO_AHEAD of appends, not one per batch.
    let steps = (3000 * 1000) / ZERO_AHEAD;
    assert!(
        (steps - 2..=steps + 2).contains(&with_zeros),
        "{with_zeros} appends wrote zeros, expected about {steps}"
    );
    // A bulk batch (over ZERO_AHEAD_BATCH_MAX) writes none, even past the frontier.
    for round in 0..20 {
        let first = want.len() as u64 + 1;
        let bulk = entries(first, first + 19, 1, 1000);
        let before = fs.stats();
        s.append_entries(&bulk).unwrap();
        want.extend(bulk);
        let after = fs.stats();
        assert_eq!(after.writes - before.writes, 1, "bulk batch {round}");
    }
    // Zeros ahead are only zeros: a torn crash, then reopen, gives back every synced entry.
    drop(s);
    fs.crash(CrashMode::Torn).unwrap();
    let s = open_fault(&fs, dir.path(), 4 << 20).unwrap();
    assert_log(&s, 1, &want);
}
