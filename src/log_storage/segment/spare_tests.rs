//! Spare segments (`spare.rs`): rollovers take a segment that was written with zeros and
//! synced ahead of time; a spare survives a crash only when it was whole; a half-prepared
//! spare, or one a crashed rollover had already written a header into, is removed at open and
//! never used; a full disk at preparation is logged and the log goes on, a full disk at the
//! rollover that then has to preallocate is the append's error.

use std::path::Path;
use std::time::Duration;

use super::spare::{SPARE_FILE, SPARE_TMP};
use super::tests::{assert_log, entries, entry, opts, tempdir};
use super::*;
use crate::fs::{CrashMode, FaultFs, FaultKind, FaultOp, FaultRule, FileSystem, RealFs};
use crate::pool::Pool;

const SEGMENT: u64 = 8192;

fn open_mode(
    fs: Arc<dyn FileSystem>,
    dir: &Path,
    segment_size: u64,
    spare: SparePreparation,
) -> Result<SegmentLogStorage> {
    let mut o = opts(segment_size);
    o.spare = spare;
    // Eager: these tests are about preparing and keeping spares, not about when.
    o.spare_after_bytes = Some(0);
    SegmentLogStorage::open(fs, dir, o)
}

fn inline(fs: &FaultFs, dir: &Path) -> SegmentLogStorage {
    open_mode(fs.shared(), dir, SEGMENT, SparePreparation::Inline).unwrap()
}

/// True if `path` exists, has `len` bytes and every one is zero.
fn all_zeros(path: &Path, len: u64) -> bool {
    std::fs::read(path).is_ok_and(|b| b.len() as u64 == len && b.iter().all(|&x| x == 0))
}

/// Appends `e` as a batch of its own and records it in `want`.
fn append_one(s: &SegmentLogStorage, want: &mut Vec<LogEntry>, e: LogEntry) {
    s.append_entries(std::slice::from_ref(&e)).unwrap();
    want.push(e);
}

/// Appends 1000-byte entries one per batch from `from` until the log has rolled over
/// `rollovers` more times; returns the entries.
fn append_rollovers(s: &SegmentLogStorage, from: u64, term: u64, rollovers: u64) -> Vec<LogEntry> {
    let made = |s: &SegmentLogStorage| {
        let st = s.segment_stats();
        st.from_spare + st.preallocated
    };
    let target = made(s) + rollovers;
    let mut out = Vec::new();
    let mut i = from;
    while made(s) < target {
        append_one(s, &mut out, entry(i, term, 1000));
        i += 1;
    }
    out
}

#[test]
fn rollovers_take_a_zero_filled_spare_and_prepare_the_next() {
    let dir = tempdir();
    let fs = FaultFs::new(dir.path(), 1).unwrap();
    let before = fs.stats();
    let s = inline(&fs, dir.path());
    let spare = dir.path().join(SPARE_FILE);
    assert!(
        all_zeros(&spare, SEGMENT),
        "no zero-filled spare after open"
    );
    let prep = fs.stats();
    // Every byte of the spare was written (zeros), not only preallocated, and synced.
    assert!(
        prep.bytes_written - before.bytes_written >= SEGMENT,
        "{prep:?}"
    );
    assert!(prep.syncs > before.syncs && prep.dir_syncs > before.dir_syncs);
    assert!(!dir.path().join(SPARE_TMP).exists());

    let mut want = append_rollovers(&s, 1, 1, 4);
    let st = s.segment_stats();
    assert_eq!((st.from_spare, st.preallocated), (4, 0), "{st:?}");
    assert_eq!(st.spares_prepared, 5, "{st:?}");
    assert!(all_zeros(&spare, SEGMENT), "the next spare is not ready");
    // An entry larger than a segment gets a preallocated one of its own; the spare waits.
    let next = want.len() as u64 + 1;
    let big = entry(next, 1, 20_000);
    s.append_entries(std::slice::from_ref(&big)).unwrap();
    want.push(big);
    let st = s.segment_stats();
    assert_eq!((st.from_spare, st.preallocated), (4, 1), "{st:?}");
    want.extend(append_rollovers(&s, next + 1, 1, 1));
    assert_eq!(s.segment_stats().from_spare, 5);
    assert_log(&s, 1, &want);
    drop(s);
    fs.crash(CrashMode::Torn).unwrap();
    let s = inline(&fs, dir.path());
    assert_log(&s, 1, &want);
}

#[test]
fn a_ready_spare_survives_a_crash_and_is_used_after_it() {
    let dir = tempdir();
    let fs = FaultFs::new(dir.path(), 2).unwrap();
    let s = inline(&fs, dir.path());
    let mut want = append_rollovers(&s, 1, 1, 2);
    drop(s); // no close: the process dies
    fs.crash(CrashMode::Torn).unwrap();
    let before = fs.stats();
    let s = inline(&fs, dir.path());
    assert_log(&s, 1, &want);
    // Kept as it was: open wrote nothing.
    assert_eq!(fs.stats().bytes_written, before.bytes_written);
    assert_eq!(s.segment_stats().spares_prepared, 1);
    let next = want.len() as u64 + 1;
    want.extend(append_rollovers(&s, next, 2, 1));
    let st = s.segment_stats();
    assert_eq!((st.from_spare, st.preallocated), (1, 0), "{st:?}");
    drop(s);
    fs.crash(CrashMode::Torn).unwrap();
    assert_log(&inline(&fs, dir.path()), 1, &want);
}

#[test]
fn a_spare_half_zero_filled_when_the_process_died_is_removed_never_used() {
    let dir = tempdir();
    let fs = FaultFs::new(dir.path(), 3).unwrap();
    let size = 3 << 20; // three chunks of preparation
    let open =
        |fs: &FaultFs| open_mode(fs.shared(), dir.path(), size, SparePreparation::Inline).unwrap();
    // The second chunk's write fails and the cleanup too: the process then dies with a
    // half-filled spare on disk.
    fs.inject(
        FaultRule::new(FaultOp::Write, FaultKind::Eio)
            .on_path(SPARE_TMP)
            .after(1)
            .times(1),
    );
    fs.inject(FaultRule::new(FaultOp::Remove, FaultKind::Eio).on_path(SPARE_TMP));
    let s = open(&fs);
    let st = s.segment_stats();
    assert_eq!((st.spares_prepared, st.spare_failures), (0, 1), "{st:?}");
    assert!(dir.path().join(SPARE_TMP).exists());
    let want = entries(1, 3, 1, 100);
    s.append_entries(&want).unwrap();
    assert_eq!(s.segment_stats().preallocated, 1, "a failed spare was used");
    drop(s);
    fs.clear_faults();
    fs.crash(CrashMode::Torn).unwrap();
    // Whatever survived of it, at its full length, with garbage where zeros were never
    // written (the worst case): still never used.
    let tmp = dir.path().join(SPARE_TMP);
    let mut bytes = vec![0u8; size as usize];
    bytes[1 << 20..].fill(0xA5);
    std::fs::write(&tmp, &bytes).unwrap();
    fs.rescan().unwrap();
    let s = open(&fs);
    assert_log(&s, 1, &want);
    assert!(!tmp.exists(), "the half-filled spare was not removed");
    assert!(all_zeros(&dir.path().join(SPARE_FILE), size));
    assert_eq!(s.segment_stats().spares_prepared, 1);
}

#[test]
fn a_spare_of_the_wrong_size_or_with_a_header_is_discarded_at_open() {
    let dir = tempdir();
    let s = open_mode(RealFs::shared(), dir.path(), SEGMENT, SparePreparation::Off).unwrap();
    let want = entries(1, 3, 1, 100);
    s.append_entries(&want).unwrap();
    drop(s);
    let spare = dir.path().join(SPARE_FILE);
    let mut header = vec![0u8; SEGMENT as usize];
    header[..8].copy_from_slice(b"TRAFTLOG");
    // A shorter file (another segment size), and one a crashed rollover wrote a header into.
    for bytes in [vec![0u8; 4096], header] {
        std::fs::write(&spare, &bytes).unwrap();
        let s = open_mode(
            RealFs::shared(),
            dir.path(),
            SEGMENT,
            SparePreparation::Inline,
        )
        .unwrap();
        assert_log(&s, 1, &want);
        assert!(all_zeros(&spare, SEGMENT), "the bad spare was kept");
        drop(s);
    }
    // With spares off, a leftover spare is only dead weight.
    let s = open_mode(RealFs::shared(), dir.path(), SEGMENT, SparePreparation::Off).unwrap();
    assert!(!spare.exists());
    assert_log(&s, 1, &want);
}

#[test]
fn a_full_disk_at_preparation_is_logged_and_at_rollover_is_the_appends_error() {
    let dir = tempdir();
    let fs = FaultFs::new(dir.path(), 4).unwrap();
    fs.inject(FaultRule::new(FaultOp::Allocate, FaultKind::NoSpace));
    let s = inline(&fs, dir.path());
    let st = s.segment_stats();
    assert_eq!((st.spares_prepared, st.spare_failures), (0, 1), "{st:?}");
    assert!(!dir.path().join(SPARE_TMP).exists() && !dir.path().join(SPARE_FILE).exists());
    // The first append needs a segment: preallocating it hits the full disk.
    let err = s.append_entries(&entries(1, 1, 1, 10)).unwrap_err();
    assert!(err.is_no_space(), "{err}");
    drop(s);
    fs.clear_faults();
    let s = inline(&fs, dir.path());
    s.append_entries(&entries(1, 2, 1, 10)).unwrap();
    assert_eq!(s.segment_stats().from_spare, 1);
}

#[test]
fn a_pool_prepares_spares_in_the_background() {
    let pool = Pool::new("disk", 1).unwrap();
    let dir = tempdir();
    let size = 64 << 10;
    let open = || {
        open_mode(
            RealFs::shared(),
            dir.path(),
            size,
            SparePreparation::Pool(pool.handle()),
        )
        .unwrap()
    };
    let s = open();
    let mut want = Vec::new();
    for _ in 0..3 {
        assert!(s.wait_spare_ready(Duration::from_secs(30)), "no spare");
        let next = want.len() as u64 + 1;
        want.extend(append_rollovers(&s, next, 1, 1));
    }
    let st = s.segment_stats();
    assert_eq!((st.from_spare, st.preallocated), (3, 0), "{st:?}");
    // Dropped while the next spare may be in preparation: the directory is usable at once.
    drop(s);
    let s = open();
    assert_log(&s, 1, &want);
    assert!(s.wait_spare_ready(Duration::from_secs(30)), "no spare");
    drop(s);
    // Without a running pool nothing is prepared; rollovers preallocate.
    pool.shutdown();
    let _ = std::fs::remove_file(dir.path().join(SPARE_FILE));
    let s = open();
    let next = want.len() as u64 + 1;
    want.extend(append_rollovers(&s, next, 1, 2));
    let st = s.segment_stats();
    assert_eq!((st.from_spare, st.preallocated), (0, 2), "{st:?}");
    assert_log(&s, 1, &want);
}

#[test]
fn a_log_asks_for_its_next_spare_only_once_its_segment_is_a_quarter_used() {
    let dir = tempdir();
    let fs = FaultFs::new(dir.path(), 5).unwrap();
    let mut o = opts(SEGMENT);
    o.spare = SparePreparation::Inline;
    let s = SegmentLogStorage::open(fs.shared(), dir.path(), o).unwrap();
    let spare = dir.path().join(SPARE_FILE);
    assert!(!spare.exists(), "a spare was prepared before any append");
    // 300-byte entries, one per batch: the first segment is preallocated; four stay well
    // under a quarter of it (2 KiB), eight are well over.
    let mut want = Vec::new();
    for i in 1..=8 {
        append_one(&s, &mut want, entry(i, 1, 300));
        if i <= 4 {
            assert!(!spare.exists(), "spare asked for after entry {i}");
        }
    }
    assert!(all_zeros(&spare, SEGMENT), "no spare after a quarter");
    let st = s.segment_stats();
    assert_eq!(
        (st.from_spare, st.preallocated, st.spares_prepared),
        (0, 1, 1)
    );
    // The rollover takes it, and the next is asked for only once the new segment fills.
    want.extend(append_rollovers(&s, 9, 1, 1));
    let st = s.segment_stats();
    assert_eq!(
        (st.from_spare, st.preallocated, st.spares_prepared),
        (1, 1, 1)
    );
    assert!(!spare.exists(), "the next spare came before it was due");
    assert_log(&s, 1, &want);
}

#[test]
fn a_failing_preparation_is_retried_once_per_segment_not_on_every_append() {
    let dir = tempdir();
    let fs = FaultFs::new(dir.path(), 6).unwrap();
    let s = inline(&fs, dir.path());
    fs.inject(FaultRule::new(FaultOp::Allocate, FaultKind::NoSpace).on_path(SPARE_TMP));
    // One rollover onto the spare prepared at open; its successor's preparation fails.
    let mut want = append_rollovers(&s, 1, 1, 1);
    let failures = s.segment_stats().spare_failures;
    assert_eq!(failures, 1, "{:?}", s.segment_stats());
    // Many appends into the same segment: no further attempt.
    for _ in 0..5 {
        let next = want.len() as u64 + 1;
        append_one(&s, &mut want, entry(next, 1, 100));
    }
    assert_eq!(s.segment_stats().spare_failures, failures);
    // The next segment (preallocated: no spare) asks once more.
    let next = want.len() as u64 + 1;
    want.extend(append_rollovers(&s, next, 1, 1));
    let st = s.segment_stats();
    assert_eq!(
        (st.spare_failures, st.preallocated),
        (failures + 1, 1),
        "{st:?}"
    );
    assert_log(&s, 1, &want);
}
