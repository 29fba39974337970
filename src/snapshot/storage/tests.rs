//! Snapshot storage: round trip, replacement, and what survives crashes, full disks and
//! damage.

use super::*;
use crate::fs::{CrashMode, FaultFs, FaultKind, FaultOp, FaultRule, RealFs};
use crate::logging::discard_logger;

fn conf() -> Configuration {
    Configuration::parse_voters("127.0.0.1:1:0,127.0.0.1:2:0,127.0.0.1:3:0").unwrap()
}

fn save(storage: &SnapshotStorage, index: u64, state: &[u8]) -> Result<SnapshotMeta> {
    let mut w = storage.create_writer()?;
    w.write_file("state", state)?;
    w.write_file("extra", b"x")?;
    storage.commit(w, LogId::new(index, 2), conf())
}

fn open(fs: Arc<dyn FileSystem>, dir: &Path) -> SnapshotStorage {
    SnapshotStorage::open(fs, &dir.join("snapshot"), discard_logger()).unwrap()
}

#[test]
fn a_committed_snapshot_reads_back_and_replaces_older_ones() {
    let dir = tempfile::tempdir().unwrap();
    let s = open(RealFs::shared(), dir.path());
    assert!(s.newest().unwrap().is_none());
    save(&s, 10, b"ten").unwrap();
    save(&s, 20, b"twenty").unwrap();
    let r = s.newest().unwrap().unwrap();
    assert_eq!(r.meta().last_included, LogId::new(20, 2));
    assert_eq!(r.meta().conf, conf());
    assert_eq!(r.read_file(&RealFs, "state").unwrap(), b"twenty");
    let names = RealFs.read_dir(s.dir()).unwrap();
    assert_eq!(
        names,
        vec![snapshot_name(20)],
        "older snapshots are removed"
    );
    assert_eq!(s.last_included(), Some(LogId::new(20, 2)));
}

#[test]
fn committing_an_existing_index_keeps_the_existing_snapshot() {
    let dir = tempfile::tempdir().unwrap();
    let s = open(RealFs::shared(), dir.path());
    save(&s, 10, b"first").unwrap();
    let meta = save(&s, 10, b"second").unwrap();
    let r = s.newest().unwrap().unwrap();
    assert_eq!(r.read_file(&RealFs, "state").unwrap(), b"first");
    assert_eq!(&meta, r.meta());
}

#[test]
fn an_unfinished_save_is_ignored_and_cleaned_up_at_open() {
    let dir = tempfile::tempdir().unwrap();
    let s = open(RealFs::shared(), dir.path());
    save(&s, 10, b"ten").unwrap();
    let mut w = s.create_writer().unwrap();
    w.write_file("state", b"half").unwrap();
    drop(w); // the process died mid-save
    assert_eq!(s.newest().unwrap().unwrap().meta().last_included.index, 10);
    let s = open(RealFs::shared(), dir.path());
    assert!(!s.dir().join(TEMP_DIR).exists());
}

#[test]
fn a_crash_at_any_step_of_a_save_leaves_the_old_or_the_new_snapshot() {
    for k in 0..40 {
        let dir = tempfile::tempdir().unwrap();
        let ffs = FaultFs::new(dir.path(), k).unwrap();
        let s = open(ffs.shared(), dir.path());
        save(&s, 10, b"old").unwrap();
        ffs.inject(
            FaultRule::new(FaultOp::Any, FaultKind::Eio)
                .after(k)
                .times(1),
        );
        let result = save(&s, 20, b"new");
        ffs.clear_faults();
        ffs.crash(CrashMode::Torn).unwrap();
        let s = open(ffs.shared(), dir.path());
        let r = s
            .newest()
            .unwrap()
            .expect("a snapshot survives every crash");
        let state = r.read_file(&*ffs.shared(), "state").unwrap();
        match r.meta().last_included.index {
            10 => assert_eq!(state, b"old", "k={k}"),
            20 => assert_eq!(state, b"new", "k={k}"),
            other => panic!("k={k}: unexpected snapshot {other}"),
        }
        if result.is_ok() {
            assert_eq!(
                r.meta().last_included.index,
                20,
                "k={k}: acknowledged save lost"
            );
        }
    }
}

#[test]
fn a_failed_directory_sync_ends_commits_and_a_retry_is_not_taken_for_durable() {
    let dir = tempfile::tempdir().unwrap();
    let ffs = FaultFs::new(dir.path(), 1).unwrap();
    let s = open(ffs.shared(), dir.path());
    save(&s, 10, b"old").unwrap();
    // The rename into place happened; the directory sync that makes it durable failed.
    ffs.inject(FaultRule::new(FaultOp::SyncDir, FaultKind::Eio).times(1));
    let err = save(&s, 20, b"new").unwrap_err();
    assert!(err.is_sync_failure(), "{err}");
    // The same snapshot again finds its directory in place: once accepted as is, it would
    // have been acknowledged without ever being synced.
    let again = save(&s, 20, b"new").unwrap_err();
    assert_eq!(again.to_string(), err.to_string());
    assert!(save(&s, 30, b"newer").unwrap_err().is_sync_failure());
    assert_eq!(s.failed().map(|e| e.to_string()), Some(err.to_string()));
    assert!(
        !dir.path().join("snapshot").join(TEMP_DIR).exists(),
        "aborted writers cleaned up"
    );
}

#[test]
fn a_closed_storage_refuses_commits_and_leaves_the_directory_as_it_was() {
    let dir = tempfile::tempdir().unwrap();
    let s = open(RealFs::shared(), dir.path());
    save(&s, 10, b"old").unwrap();
    // A save the state machine finishes from its own thread after its node was joined.
    let mut late = s.create_writer().unwrap();
    late.write_file("state", b"late").unwrap();
    s.close();
    let err = s.commit(late, LogId::new(20, 2), conf()).unwrap_err();
    assert!(matches!(err, RaftError::Stopped), "{err}");
    assert_eq!(s.newest().unwrap().unwrap().meta().last_included.index, 10);
    assert!(
        !dir.path().join("snapshot").join(TEMP_DIR).exists(),
        "the late writer is removed"
    );
}

#[test]
fn a_full_disk_mid_save_is_an_error_and_the_old_snapshot_stays_usable() {
    let dir = tempfile::tempdir().unwrap();
    let ffs = FaultFs::new(dir.path(), 1).unwrap();
    let s = open(ffs.shared(), dir.path());
    save(&s, 10, b"old").unwrap();
    ffs.inject(FaultRule::new(FaultOp::Write, FaultKind::ShortWrite).on_path("temp"));
    let err = save(&s, 20, &vec![7u8; 100_000]).unwrap_err();
    assert!(err.is_no_space(), "{err}");
    ffs.clear_faults();
    let r = s.newest().unwrap().unwrap();
    assert_eq!(r.meta().last_included.index, 10);
    // The next save after space is freed succeeds and replaces the half-written temp.
    save(&s, 30, b"later").unwrap();
    assert_eq!(s.newest().unwrap().unwrap().meta().last_included.index, 30);
}

#[test]
fn a_damaged_snapshot_is_skipped_for_an_older_good_one() {
    let dir = tempfile::tempdir().unwrap();
    let s = open(RealFs::shared(), dir.path());
    save(&s, 10, b"ten").unwrap();
    // Keep a copy of snapshot 10 (as a crash between rename and removal would leave it).
    let keep = dir.path().join("keep");
    std::fs::create_dir(&keep).unwrap();
    for f in ["state", "extra", META_FILE] {
        std::fs::copy(s.dir().join(snapshot_name(10)).join(f), keep.join(f)).unwrap();
    }
    save(&s, 20, b"twenty").unwrap();
    std::fs::rename(&keep, s.dir().join(snapshot_name(10))).unwrap();
    let state = s.dir().join(snapshot_name(20)).join("state");
    let mut bytes = std::fs::read(&state).unwrap();
    bytes[0] ^= 0x40;
    std::fs::write(&state, &bytes).unwrap();
    let r = s.newest().unwrap().unwrap();
    assert_eq!(
        r.meta().last_included.index,
        10,
        "the damaged newer one is skipped"
    );
    assert_eq!(
        std::fs::read(&state).unwrap(),
        bytes,
        "damaged files are left untouched"
    );
    // Damage the meta of 10 as well: nothing verifies.
    let meta = s.dir().join(snapshot_name(10)).join(META_FILE);
    let mut m = std::fs::read(&meta).unwrap();
    m[6] ^= 1;
    std::fs::write(&meta, &m).unwrap();
    assert!(s.newest().unwrap().is_none());
}

#[test]
fn writer_refuses_bad_names_and_unwritten_files() {
    let dir = tempfile::tempdir().unwrap();
    let s = open(RealFs::shared(), dir.path());
    let mut w = s.create_writer().unwrap();
    assert!(w.write_file("../escape", b"x").is_err());
    assert!(w.write_file(META_FILE, b"x").is_err());
    assert!(w.add_file("never-written").is_err());
    std::fs::write(w.path().join("own"), b"user wrote this").unwrap();
    w.add_file("own").unwrap();
    let meta = s.commit(w, LogId::new(5, 1), conf()).unwrap();
    assert_eq!(meta.files.len(), 1);
    assert_eq!(meta.files[0].size, 15);
}
