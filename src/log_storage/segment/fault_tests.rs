//! Faults of the file layer (ENOSPC at preallocation and at append, EIO, short writes, fsync
//! failures) and crashes in the middle of truncations and resets: a clear `RaftError::Io`,
//! nothing synced lost, a failed storage that refuses further writes and never retries a
//! sync, and a log that reopens as a prefix of what it was, never with truncated entries.

use super::tests::{assert_log, entries, entry, open_fault, tempdir};
use super::*;
use crate::fs::{CrashMode, FaultFs, FaultKind, FaultOp, FaultRule};

const SEGMENT: u64 = 8192;

/// A FaultFs log holding entries 1..=12 in 4 synced batches.
fn setup(seed: u64) -> (tempfile::TempDir, FaultFs, SegmentLogStorage, Vec<LogEntry>) {
    let dir = tempdir();
    let fs = FaultFs::new(dir.path(), seed).unwrap();
    let s = open_fault(&fs, dir.path(), SEGMENT).unwrap();
    let mut synced = Vec::new();
    for b in 0..4 {
        let batch = entries(b * 3 + 1, b * 3 + 3, 1, 300);
        s.append_entries(&batch).unwrap();
        synced.extend(batch);
    }
    (dir, fs, s, synced)
}

/// After a failure: the storage refuses writes; each way of dying, then reopening, gives back
/// exactly the synced entries, and the reopened log takes new ones.
fn check_after_failure(
    dir: &tempfile::TempDir,
    fs: &FaultFs,
    s: SegmentLogStorage,
    synced: &[LogEntry],
) {
    let err = s.append_entries(&entries(13, 13, 1, 10)).unwrap_err();
    assert!(matches!(err, RaftError::ErrorState { .. }), "{err}");
    assert!(matches!(
        s.truncate_suffix(3),
        Err(RaftError::ErrorState { .. })
    ));
    assert_log(&s, 1, synced);
    let syncs = fs.stats().syncs;
    s.close().unwrap();
    assert_eq!(fs.stats().syncs, syncs, "a failed storage synced at close");
    drop(s);
    fs.clear_faults();
    fs.crash(CrashMode::Torn).unwrap();
    let s = open_fault(fs, dir.path(), SEGMENT).unwrap();
    assert_log(&s, 1, synced);
    s.append_entries(&entries(13, 14, 2, 10)).unwrap();
}

#[test]
fn enospc_at_preallocation_is_a_clear_io_error_and_loses_nothing() {
    let (dir, fs, s, synced) = setup(1);
    fs.inject(FaultRule::new(FaultOp::Allocate, FaultKind::NoSpace));
    // Too big for the open segment's room: needs a new segment.
    let err = s.append_entries(&[entry(13, 1, 9000)]).unwrap_err();
    assert!(err.is_no_space(), "{err}");
    assert!(err.to_string().contains("fallocate"), "{err}");
    check_after_failure(&dir, &fs, s, &synced);
}

#[test]
fn write_faults_at_append_are_clear_io_errors_and_lose_nothing() {
    for kind in [FaultKind::NoSpace, FaultKind::Eio, FaultKind::ShortWrite] {
        for crash in [false, true] {
            let (dir, fs, s, synced) = setup(2);
            fs.inject(
                FaultRule::new(FaultOp::Write, kind)
                    .on_path("log_inprogress")
                    .times(1),
            );
            let batch = entries(13, 15, 1, 300);
            let err = s.append_entries(&batch).unwrap_err();
            assert!(
                matches!(err, RaftError::Io { op: "write", .. }),
                "{kind:?}: {err}"
            );
            if crash {
                check_after_failure(&dir, &fs, s, &synced);
                continue;
            }
            // No crash: what was written is still in the page cache; the unacknowledged
            // batch is a torn tail, and only its wholly written entries may come back.
            drop(s);
            fs.clear_faults();
            let s = open_fault(&fs, dir.path(), SEGMENT).unwrap();
            let last = s.last_log_index();
            assert!((12..15).contains(&last), "{kind:?}: last {last}");
            let mut want = synced.clone();
            want.extend_from_slice(&batch[..(last - 12) as usize]);
            assert_log(&s, 1, &want);
        }
    }
}

#[test]
fn fsync_failure_is_fatal_and_never_retried() {
    let (dir, fs, s, synced) = setup(3);
    fs.inject(FaultRule::new(FaultOp::Sync, FaultKind::Eio).times(1));
    let err = s.append_entries(&entries(13, 15, 1, 300)).unwrap_err();
    assert!(matches!(err, RaftError::Io { op: "fsync", .. }), "{err}");
    let syncs = fs.stats().syncs;
    assert!(matches!(s.sync(), Err(RaftError::ErrorState { .. })));
    assert!(s.append_entries(&entries(13, 13, 1, 1)).is_err());
    assert_eq!(fs.stats().syncs, syncs, "a failed sync was retried");
    check_after_failure(&dir, &fs, s, &synced);
}

#[test]
fn failures_while_creating_a_segment_are_clear_io_errors() {
    for op in [
        FaultOp::Open,
        FaultOp::Sync,
        FaultOp::SyncDir,
        FaultOp::Rename,
        FaultOp::Write,
    ] {
        let (dir, fs, s, synced) = setup(4);
        let big = entry(13, 1, 9000);
        let rule = FaultRule::new(op, FaultKind::Eio).times(1);
        // The directory's own path carries no segment name.
        fs.inject(if op == FaultOp::SyncDir {
            rule
        } else {
            rule.on_path("log_")
        });
        let err = s.append_entries(std::slice::from_ref(&big)).unwrap_err();
        assert!(matches!(err, RaftError::Io { .. }), "{op:?}: {err}");
        check_after_failure(&dir, &fs, s, &synced);
    }
}

#[test]
fn io_errors_at_open_are_io_errors_not_corruption() {
    let (dir, fs, s, _) = setup(5);
    drop(s);
    fs.inject(FaultRule::new(FaultOp::Read, FaultKind::Eio).on_path("log_meta"));
    let err = open_fault(&fs, dir.path(), SEGMENT).err().unwrap();
    assert!(matches!(err, RaftError::Io { .. }), "{err}");
    fs.clear_faults();
    fs.inject(FaultRule::new(FaultOp::Open, FaultKind::Eio).on_path("log_inprogress"));
    let err = open_fault(&fs, dir.path(), SEGMENT).err().unwrap();
    assert!(matches!(err, RaftError::Io { .. }), "{err}");
}

/// Runs `op` with an EIO injected at file-layer operation `step` (then a torn crash) for
/// every step until one runs clean; `check` sees the reopened log and whether `op` succeeded.
fn crash_at_each_step(
    build: impl Fn(&SegmentLogStorage) -> Vec<LogEntry>,
    op: impl Fn(&SegmentLogStorage) -> Result<()>,
    check: impl Fn(u64, &SegmentLogStorage, &[LogEntry], bool),
) -> u64 {
    for step in 0.. {
        let dir = tempdir();
        let fs = FaultFs::new(dir.path(), step).unwrap();
        let s = open_fault(&fs, dir.path(), 4096).unwrap();
        let old = build(&s);
        let faults = fs.stats().faults;
        fs.inject(
            FaultRule::new(FaultOp::Any, FaultKind::Eio)
                .after(step)
                .times(1),
        );
        let ok = op(&s).is_ok();
        let hit = fs.stats().faults > faults;
        fs.clear_faults();
        drop(s);
        fs.crash(CrashMode::Torn).unwrap();
        let s = open_fault(&fs, dir.path(), 4096)
            .unwrap_or_else(|e| panic!("step {step}: reopen failed: {e}"));
        check(step, &s, &old, ok);
        if !hit {
            return step;
        }
    }
    unreachable!()
}

fn twenty_entries(s: &SegmentLogStorage) -> Vec<LogEntry> {
    let old: Vec<LogEntry> = (1..=20).map(|i| entry(i, 1, 400)).collect();
    for e in &old {
        s.append_entries(std::slice::from_ref(e)).unwrap();
    }
    old
}

#[test]
fn truncate_suffix_then_crash_at_each_step_never_brings_truncated_entries_back() {
    for cut in [5, 18] {
        let new = entries(cut + 1, cut + 2, 2, 50);
        let steps = crash_at_each_step(
            twenty_entries,
            |s| {
                s.truncate_suffix(cut)?;
                s.append_entries(&new)
            },
            |step, s, old, ok| {
                let last = s.last_log_index();
                if ok {
                    let mut want = old[..cut as usize].to_vec();
                    want.extend_from_slice(&new);
                    assert_log(s, 1, &want);
                    return;
                }
                // Interrupted: a prefix of the old log, at least up to the cut, or the
                // truncated log with a prefix of the new entries; never a mix.
                let mixed = last > cut && s.term_at(cut + 1) == Some(2);
                if mixed {
                    let n = (last - cut) as usize;
                    let mut want = old[..cut as usize].to_vec();
                    want.extend_from_slice(&new[..n]);
                    assert_log(s, 1, &want);
                } else {
                    assert!(
                        last >= cut,
                        "step {step}: log ends at {last}, below the cut"
                    );
                    assert_log(s, 1, &old[..last as usize]);
                }
            },
        );
        assert!(steps >= 4, "cut {cut}: only {steps} steps");
    }
}

#[test]
fn reset_and_truncate_prefix_then_crash_at_each_step_are_atomic() {
    crash_at_each_step(
        twenty_entries,
        |s| s.reset(50),
        |step, s, old, ok| {
            if ok || s.first_log_index() == 50 {
                assert_eq!(
                    (s.first_log_index(), s.last_log_index()),
                    (50, 49),
                    "{step}"
                );
            } else {
                assert_log(s, 1, old);
            }
        },
    );
    crash_at_each_step(
        twenty_entries,
        |s| s.truncate_prefix(14),
        |step, s, old, ok| {
            let first = s.first_log_index();
            assert!(
                first == 14 || (!ok && first == 1),
                "step {step}: first {first}"
            );
            assert_log(s, first, &old[first as usize - 1..]);
        },
    );
}

#[test]
fn an_empty_open_segment_left_by_a_crash_is_reused_or_replaced() {
    for big in [false, true] {
        let (dir, fs, s, synced) = setup(6);
        // Rolls to a new segment whose first batch never reaches the disk.
        let batch_sync = FaultRule::new(FaultOp::Sync, FaultKind::SkipSync)
            .after(1)
            .times(1);
        fs.inject(batch_sync.on_path("_00000000000000000013"));
        s.append_entries(&[entry(13, 1, 9000)]).unwrap();
        drop(s);
        fs.clear_faults();
        fs.crash(CrashMode::DropUnsynced).unwrap();
        let s = open_fault(&fs, dir.path(), SEGMENT).unwrap();
        assert_log(&s, 1, &synced);
        let next = entry(13, 2, if big { 20_000 } else { 100 });
        s.append_entries(std::slice::from_ref(&next)).unwrap();
        drop(s);
        let s = open_fault(&fs, dir.path(), SEGMENT).unwrap();
        let mut want = synced.clone();
        want.push(next);
        assert_log(&s, 1, &want);
    }
}

#[test]
fn rollover_onto_a_spare_then_crash_at_each_step_keeps_every_synced_entry() {
    // Entries 21..=30 fill the open segment and roll over onto the spare (4096-byte
    // segments hold 9 of them), which prepares the next spare inline: every step of taking a
    // spare and of preparing one is interrupted once.
    let new: Vec<LogEntry> = (21..=30).map(|i| entry(i, 2, 400)).collect();
    let steps = crash_at_each_step(
        twenty_entries,
        |s| {
            for e in &new {
                s.append_entries(std::slice::from_ref(e))?;
            }
            Ok(())
        },
        |step, s, old, ok| {
            let mut all = old.to_vec();
            all.extend_from_slice(&new);
            let last = s.last_log_index();
            assert!(
                (20..=30).contains(&last) && (!ok || last == 30),
                "step {step}: log ends at {last} (op ok: {ok})"
            );
            assert_log(s, 1, &all[..last as usize]);
            // The reopened log goes on, through further rollovers.
            let more: Vec<LogEntry> = (last + 1..=last + 12).map(|i| entry(i, 3, 400)).collect();
            for e in &more {
                s.append_entries(std::slice::from_ref(e)).unwrap();
            }
        },
    );
    assert!(steps >= 20, "only {steps} steps");
}
