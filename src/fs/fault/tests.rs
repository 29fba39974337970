//! Contract tests of the FaultFs model: what survives a crash and what each fault does.

use super::*;
use crate::fs::{read_file, write_all_at, write_file_atomic, FileSystem, OpenOptions};

fn setup() -> (tempfile::TempDir, FaultFs) {
    let dir = tempfile::tempdir().unwrap();
    let fs = FaultFs::new(dir.path(), 7).unwrap();
    (dir, fs)
}

fn create_synced(fs: &FaultFs, path: &Path, data: &[u8]) {
    let f = fs.open(path, OpenOptions::CREATE_NEW).unwrap();
    write_all_at(&*f, data, 0).unwrap();
    f.sync_data().unwrap();
    fs.sync_dir(path.parent().unwrap()).unwrap();
}

#[test]
fn crash_drops_unsynced_writes_and_keeps_synced_ones() {
    let (dir, fs) = setup();
    let path = dir.path().join("a");
    create_synced(&fs, &path, b"synced..");
    let f = fs.open(&path, OpenOptions::WRITE).unwrap();
    write_all_at(&*f, b"LOST", 0).unwrap();
    fs.crash(CrashMode::DropUnsynced).unwrap();
    assert_eq!(std::fs::read(&path).unwrap(), b"synced..");
}

#[test]
fn crash_removes_a_file_whose_directory_was_not_synced() {
    let (dir, fs) = setup();
    let path = dir.path().join("new");
    let f = fs.open(&path, OpenOptions::CREATE_NEW).unwrap();
    write_all_at(&*f, b"data", 0).unwrap();
    f.sync_data().unwrap();
    fs.crash(CrashMode::DropUnsynced).unwrap();
    assert!(
        !path.exists(),
        "a file is durable only once its directory entry is"
    );
}

#[test]
fn atomic_write_leaves_old_or_new_after_a_crash_at_every_step() {
    // Crash after k operations of write_file_atomic by failing operation k+1 with EIO,
    // then crashing; the meta must read back as old or new, never missing or mixed.
    for k in 0..8 {
        let (dir, fs) = setup();
        let path = dir.path().join("meta");
        write_file_atomic(&fs, &path, b"old-contents").unwrap();
        fs.inject(
            FaultRule::new(FaultOp::Any, FaultKind::Eio)
                .after(k)
                .times(1),
        );
        let result = write_file_atomic(&fs, &path, b"new");
        fs.clear_faults();
        fs.crash(CrashMode::Torn).unwrap();
        let got = std::fs::read(&path).unwrap();
        assert!(got == b"old-contents" || got == b"new", "k={k}: {got:?}");
        if result.is_ok() {
            assert_eq!(got, b"new", "k={k}: acknowledged write lost");
        }
    }
}

#[test]
fn failed_sync_drops_the_pages_even_if_a_later_sync_succeeds() {
    let (dir, fs) = setup();
    let path = dir.path().join("log");
    create_synced(&fs, &path, &[0u8; 16]);
    let f = fs.open(&path, OpenOptions::WRITE).unwrap();
    write_all_at(&*f, b"entry", 0).unwrap();
    fs.inject(FaultRule::new(FaultOp::Sync, FaultKind::Eio).times(1));
    assert!(f.sync_data().is_err());
    f.sync_data().unwrap(); // the retry "succeeds" but the data is gone
    fs.crash(CrashMode::DropUnsynced).unwrap();
    assert_eq!(std::fs::read(&path).unwrap(), vec![0u8; 16]);
}

#[test]
fn no_space_and_short_write_are_io_errors() {
    let (dir, fs) = setup();
    let f = fs
        .open(&dir.path().join("seg"), OpenOptions::CREATE_NEW)
        .unwrap();
    fs.inject(FaultRule::new(FaultOp::Allocate, FaultKind::NoSpace).times(1));
    let err = f.allocate(1 << 20).unwrap_err();
    assert!(err.is_no_space(), "{err}");
    fs.inject(FaultRule::new(FaultOp::Write, FaultKind::ShortWrite).times(1));
    let err = write_all_at(&*f, &[1u8; 100], 0).unwrap_err();
    assert!(err.is_no_space(), "{err}");
    let mut head = [0u8; 100];
    f.read_at(&mut head, 0).unwrap();
    assert_eq!(
        &head[..50],
        &[1u8; 50][..],
        "the short write stored its prefix"
    );
    assert_eq!(&head[50..], &[0u8; 50][..]);
    assert_eq!(fs.stats().faults, 2);
}

#[test]
fn torn_crash_keeps_some_unsynced_pages_deterministically() {
    let run = |seed| {
        let dir = tempfile::tempdir().unwrap();
        let fs = FaultFs::new(dir.path(), seed).unwrap();
        let path = dir.path().join("seg");
        create_synced(&fs, &path, &vec![0u8; 16 * 4096]);
        let f = fs.open(&path, OpenOptions::WRITE).unwrap();
        write_all_at(&*f, &vec![0xAB; 16 * 4096], 0).unwrap();
        fs.crash(CrashMode::Torn).unwrap();
        let data = std::fs::read(&path).unwrap();
        (0..16)
            .map(|p| data[p * 4096] == 0xAB)
            .collect::<Vec<bool>>()
    };
    let a = run(11);
    assert_eq!(a, run(11), "same seed, same torn pages");
    assert!(a.iter().any(|k| *k) && a.iter().any(|k| !*k), "{a:?}");
}

#[test]
fn handles_from_before_a_crash_are_dead() {
    let (dir, fs) = setup();
    let path = dir.path().join("x");
    create_synced(&fs, &path, b"1");
    let f = fs.open(&path, OpenOptions::WRITE).unwrap();
    fs.crash(CrashMode::DropUnsynced).unwrap();
    assert!(f.write_at(b"2", 0).is_err());
    assert_eq!(read_file(&fs, &path, 1).unwrap(), b"1");
}

#[test]
fn rules_skip_then_fail_a_bounded_number_of_times() {
    let (dir, fs) = setup();
    let f = fs
        .open(&dir.path().join("r"), OpenOptions::CREATE_NEW)
        .unwrap();
    fs.inject(
        FaultRule::new(FaultOp::Write, FaultKind::Eio)
            .on_path("/r")
            .after(2)
            .times(1),
    );
    assert!(f.write_at(b"a", 0).is_ok());
    assert!(f.write_at(b"a", 1).is_ok());
    assert!(f.write_at(b"a", 2).is_err());
    assert!(f.write_at(b"a", 3).is_ok());
}

#[test]
fn directory_created_and_synced_survives_with_its_files() {
    let (dir, fs) = setup();
    let sub = dir.path().join("log");
    fs.create_dir_all(&sub).unwrap();
    fs.sync_dir(dir.path()).unwrap();
    create_synced(&fs, &sub.join("f"), b"kept");
    fs.crash(CrashMode::DropUnsynced).unwrap();
    assert_eq!(std::fs::read(sub.join("f")).unwrap(), b"kept");
}

#[test]
fn skip_sync_reports_success_but_makes_nothing_durable() {
    let (dir, fs) = setup();
    let path = dir.path().join("a");
    create_synced(&fs, &path, b"old.....");
    let f = fs.open(&path, OpenOptions::WRITE).unwrap();
    write_all_at(&*f, b"NEW", 0).unwrap();
    fs.inject(FaultRule::new(FaultOp::Sync, FaultKind::SkipSync).times(1));
    f.sync_data().unwrap();
    fs.crash(CrashMode::DropUnsynced).unwrap();
    assert_eq!(std::fs::read(&path).unwrap(), b"old.....");
}
