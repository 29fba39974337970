//! LogManager behaviour: reads from the in-memory tail, group commit, durability reports that
//! never acknowledge a newer entry (ABA), refused truncations of committed entries, fatal IO
//! errors, waiters, the snapshot boundary, configurations, the AppendEntries byte budget,
//! and shutdown.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::SeqCst};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use parking_lot::{Condvar, Mutex};

use super::*;
use crate::log_storage::segment::tests::{entries, entry, tempdir};
use crate::log_storage::{MemoryLogStorage, SegmentLogStorage, SegmentLogStorageOptions};
use crate::runtime::RuntimeOptions;
use crate::testing::wait_for;
use crate::types::LogRead;

const WAIT: Duration = Duration::from_secs(10);

/// A memory storage whose appends can be held at a gate, fail on demand, and are recorded.
#[derive(Default)]
struct Gated {
    inner: MemoryLogStorage,
    /// Append calls numbered below this may proceed.
    allowed: Mutex<u64>,
    cv: Condvar,
    started: AtomicU64,
    /// The LogIds of each append call, in order.
    calls: Mutex<Vec<Vec<LogId>>>,
    fail_next: AtomicBool,
    closed: AtomicBool,
}

impl Gated {
    fn new(open: bool) -> Arc<Gated> {
        let g = Gated::default();
        *g.allowed.lock() = if open { u64::MAX } else { 0 };
        Arc::new(g)
    }

    fn allow(&self, calls: u64) {
        *self.allowed.lock() = calls;
        self.cv.notify_all();
    }

    fn calls(&self) -> Vec<Vec<LogId>> {
        self.calls.lock().clone()
    }

    /// Opens the gate when dropped, so that a failing test cannot leave the disk thread
    /// stuck at it (the harness joins the disk queue on drop). Declare it after the harness.
    fn opened_on_drop(self: &Arc<Gated>) -> impl Drop {
        struct Open(Arc<Gated>);
        impl Drop for Open {
            fn drop(&mut self) {
                self.0.allow(u64::MAX);
            }
        }
        Open(self.clone())
    }
}

impl LogStorage for Gated {
    fn first_log_index(&self) -> u64 {
        self.inner.first_log_index()
    }
    fn last_log_index(&self) -> u64 {
        self.inner.last_log_index()
    }
    fn term_at(&self, index: u64) -> Option<u64> {
        self.inner.term_at(index)
    }
    fn get(&self, index: u64) -> Option<LogEntry> {
        self.inner.get(index)
    }
    fn append_entries(&self, entries: &[LogEntry]) -> Result<()> {
        let n = self.started.fetch_add(1, SeqCst);
        let mut allowed = self.allowed.lock();
        while *allowed <= n {
            self.cv.wait(&mut allowed);
        }
        drop(allowed);
        self.calls
            .lock()
            .push(entries.iter().map(|e| e.id).collect());
        if self.fail_next.swap(false, SeqCst) {
            let e = std::io::Error::from_raw_os_error(libc::EIO);
            return Err(RaftError::io("fdatasync", None, &e));
        }
        self.inner.append_entries(entries)
    }
    fn truncate_prefix(&self, first_index_kept: u64) -> Result<()> {
        self.inner.truncate_prefix(first_index_kept)
    }
    fn truncate_suffix(&self, last_index_kept: u64) -> Result<()> {
        self.inner.truncate_suffix(last_index_kept)
    }
    fn reset(&self, next_log_index: u64) -> Result<()> {
        self.inner.reset(next_log_index)
    }
    fn sync(&self) -> Result<()> {
        Ok(())
    }
    fn close(&self) -> Result<()> {
        self.closed.store(true, SeqCst);
        self.inner.close()
    }
}

pub(super) struct Harness {
    pub rt: Runtime,
    pub lm: LogManager,
    pub durable: Arc<Mutex<Vec<LogId>>>,
    pub errors: Arc<Mutex<Vec<RaftError>>>,
}

fn runtime() -> Runtime {
    Runtime::new(RuntimeOptions {
        io_threads: 1,
        raft_threads: 2,
        disk_threads: 1,
        fsm_threads: 1,
    })
    .unwrap()
}

pub(super) fn harness(storage: Arc<dyn LogStorage>) -> Harness {
    let rt = runtime();
    let durable = Arc::new(Mutex::new(Vec::new()));
    let errors = Arc::new(Mutex::new(Vec::new()));
    let (d, e) = (durable.clone(), errors.clone());
    let opts = LogManagerOptions {
        on_durable: Arc::new(move |id| d.lock().push(id)),
        on_error: Arc::new(move |err| e.lock().push(err)),
        logger: crate::logging::discard_logger(),
        ..LogManagerOptions::new(storage, rt.clone())
    };
    Harness {
        lm: LogManager::new(opts).unwrap(),
        rt,
        durable,
        errors,
    }
}

impl Harness {
    fn wait_durable(&self, n: usize) {
        wait_for(
            &format!("{n} durability reports"),
            WAIT,
            || self.durable.lock().len() >= n,
            || format!("reports: {:?}", self.durable.lock()),
        );
    }

    /// Waits for a durability report of `id` (appends may be group-committed together).
    pub(super) fn wait_durable_id(&self, id: LogId) {
        wait_for(
            &format!("a durability report of {id}"),
            WAIT,
            || self.durable.lock().contains(&id),
            || format!("reports: {:?}", self.durable.lock()),
        );
    }
}

impl Drop for Harness {
    fn drop(&mut self) {
        self.lm.shutdown();
        self.lm.join();
        self.rt.shutdown();
    }
}

fn conf_entry(index: u64, term: u64, peers: &str) -> LogEntry {
    let mut buf = Vec::new();
    Configuration::parse_voters(peers).unwrap().encode(&mut buf);
    LogEntry::new(
        LogId::new(index, term),
        EntryType::Configuration,
        Bytes::from(buf),
    )
}

#[test]
fn appended_entries_are_readable_at_once_and_reported_durable_in_order() {
    let g = Gated::new(false);
    let h = harness(g.clone());
    let _open = g.opened_on_drop();
    h.lm.append_entries(entries(1, 3, 1, 10)).unwrap();
    h.lm.append_entries(entries(4, 5, 2, 10)).unwrap();
    assert_eq!(h.lm.get(4), Some(entry(4, 2, 10)));
    assert_eq!(h.lm.last_log_id(), LogId::new(5, 2));
    assert_eq!(h.lm.term_at(2), Some(1));
    assert_eq!(h.lm.unsynced_bytes(), 50);
    assert!(h.durable.lock().is_empty(), "reported before the sync");
    g.allow(u64::MAX);
    h.wait_durable_id(LogId::new(5, 2));
    let reports = h.durable.lock().clone();
    assert_eq!(*reports.last().unwrap(), LogId::new(5, 2), "{reports:?}");
    assert!(reports.windows(2).all(|w| w[0].index < w[1].index));
    assert_eq!(h.lm.last_durable_id(), LogId::new(5, 2));
    assert_eq!(h.lm.unsynced_bytes(), 0);
    assert_eq!(h.lm.get(4), Some(entry(4, 2, 10)), "read back from storage");
}

#[test]
fn group_commit_writes_queued_appends_with_one_storage_call() {
    let g = Gated::new(false);
    let h = harness(g.clone());
    let _open = g.opened_on_drop();
    h.lm.append_entries(entries(1, 1, 1, 8)).unwrap();
    wait_for(
        "the disk thread inside the first append",
        WAIT,
        || g.started.load(SeqCst) == 1,
        String::new,
    );
    for i in 2..=101 {
        h.lm.append_entries(vec![entry(i, 1, 8)]).unwrap();
    }
    g.allow(u64::MAX);
    h.wait_durable(2);
    let calls = g.calls();
    assert_eq!(
        calls.len(),
        2,
        "one write+sync per drained batch, got {} calls",
        calls.len()
    );
    assert_eq!(calls[1].len(), 100);
    assert_eq!(
        *h.durable.lock(),
        vec![LogId::new(1, 1), LogId::new(101, 1)]
    );
}

#[test]
fn an_older_sync_never_reports_the_entry_that_replaced_it() {
    let g = Gated::new(false);
    let h = harness(g.clone());
    let _open = g.opened_on_drop();
    h.lm.append_entries(entries(1, 3, 1, 10)).unwrap();
    wait_for(
        "the old batch at the disk",
        WAIT,
        || g.started.load(SeqCst) == 1,
        String::new,
    );
    // A new leader's entries replace 2..=3 at the same indexes.
    h.lm.truncate_suffix(1).unwrap();
    h.lm.append_entries(entries(2, 3, 2, 10)).unwrap();
    assert_eq!(h.lm.get(3), Some(entry(3, 2, 10)));
    g.allow(1); // the old batch's sync completes; the new one waits at the gate
    h.wait_durable(1);
    let old = h.durable.lock()[0];
    assert_eq!(old, LogId::new(3, 1), "the report names what was synced");
    assert_ne!(
        h.lm.term_at(old.index),
        Some(old.term),
        "and the caller can tell"
    );
    assert_eq!(
        h.lm.get(3),
        Some(entry(3, 2, 10)),
        "the new entry is still served"
    );
    assert_eq!(
        h.lm.unsynced_bytes(),
        20,
        "the new entries stay in memory until synced"
    );
    assert_eq!(h.lm.last_durable_id().index, 1);
    g.allow(u64::MAX);
    h.wait_durable(2);
    assert_eq!(h.durable.lock()[1], LogId::new(3, 2));
    let want = [vec![entry(1, 1, 10)], entries(2, 3, 2, 10)].concat();
    assert_eq!((1..=3).map(|i| g.get(i).unwrap()).collect::<Vec<_>>(), want);
}

fn refused(f: impl FnOnce() -> Result<()>) {
    let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(f));
    let debug = cfg!(debug_assertions);
    match outcome {
        Err(_) if debug => {}
        Err(_) => panic!("panicked in a release build"),
        Ok(_) if debug => panic!("a debug build must panic on the bug"),
        Ok(r) => assert!(matches!(r, Err(RaftError::Invalid { .. })), "{r:?}"),
    }
}

#[test]
fn truncating_committed_entries_is_refused_as_a_bug() {
    let h = harness(Gated::new(true));
    h.lm.append_entries(entries(1, 10, 1, 4)).unwrap();
    h.lm.set_committed_index(5);
    h.lm.set_committed_index(3); // never goes back
    assert_eq!(h.lm.committed_index(), 5);
    refused(|| h.lm.truncate_suffix(4));
    refused(|| h.lm.truncate_prefix(3));
    assert_eq!(
        h.lm.last_log_index(),
        10,
        "a refused truncation changes nothing"
    );
    h.lm.truncate_suffix(5).unwrap();
    assert_eq!(h.lm.last_log_id(), LogId::new(5, 1));
}

#[test]
fn bad_appends_are_refused_and_change_nothing() {
    let h = harness(Gated::new(true));
    h.lm.append_entries(entries(1, 3, 2, 4)).unwrap();
    for bad in [vec![], entries(5, 5, 2, 4), entries(4, 4, 1, 4)] {
        let err = h.lm.append_entries(bad).unwrap_err();
        assert!(matches!(err, RaftError::Invalid { .. }), "{err}");
    }
    let mut bad_conf = conf_entry(4, 2, "1.1.1.1:1:0");
    bad_conf.data = Bytes::from_static(b"\xff\xff");
    assert!(h.lm.append_entries(vec![bad_conf]).is_err());
    assert_eq!(h.lm.last_log_index(), 3);
}

#[test]
fn a_fatal_io_error_is_reported_once_and_refuses_appends_without_retrying() {
    let g = Gated::new(true);
    let h = harness(g.clone());
    let _open = g.opened_on_drop();
    h.lm.append_entries(entries(1, 2, 1, 4)).unwrap();
    h.wait_durable(1);
    let woken = Arc::new(Mutex::new(None));
    let w = woken.clone();
    h.lm.wait(10, Box::new(move |r| *w.lock() = Some(r)))
        .map_err(|r| r.error)
        .unwrap();
    g.fail_next.store(true, SeqCst);
    h.lm.append_entries(entries(3, 4, 1, 4)).unwrap();
    wait_for(
        "on_error",
        WAIT,
        || !h.errors.lock().is_empty(),
        String::new,
    );
    let err = h.lm.append_entries(entries(5, 5, 1, 4)).unwrap_err();
    assert!(matches!(err, RaftError::ErrorState { .. }), "{err}");
    assert!(matches!(
        h.lm.truncate_suffix(3),
        Err(RaftError::ErrorState { .. })
    ));
    wait_for(
        "the waiter woken",
        WAIT,
        || woken.lock().is_some(),
        String::new,
    );
    assert!(matches!(
        *woken.lock(),
        Some(Err(RaftError::ErrorState { .. }))
    ));
    // Let the disk queue finish everything it will ever do.
    h.lm.shutdown();
    h.lm.join();
    assert_eq!(h.errors.lock().len(), 1);
    assert!(
        !g.closed.load(SeqCst),
        "a failed log must not write a close record"
    );
    assert_eq!(g.started.load(SeqCst), 2, "the failed write was retried");
    assert_eq!(
        *h.durable.lock(),
        vec![LogId::new(2, 1)],
        "a failed batch was acknowledged"
    );
}

#[test]
fn waiters_run_off_the_callers_stack_and_can_be_cancelled() {
    let h = harness(Gated::new(true));
    h.lm.append_entries(entries(1, 2, 1, 4)).unwrap();
    let got = Arc::new(Mutex::new(Vec::new()));
    let record = |tag: &'static str| -> WaitCallback {
        let got = got.clone();
        Box::new(move |r| {
            let thread = std::thread::current().name().unwrap_or("").to_string();
            got.lock().push((tag, r, thread));
        })
    };
    let held = Mutex::new(());
    {
        // A caller holding its own lock must not have the callback run inside it.
        let _guard = held.lock();
        h.lm.wait(1, record("ready")).map_err(|r| r.error).unwrap();
        assert!(got.lock().is_empty(), "ran on the caller's stack");
    }
    let later = h.lm.wait(2, record("later")).map_err(|r| r.error).unwrap();
    let cancelled =
        h.lm.wait(2, record("cancelled"))
            .map_err(|r| r.error)
            .unwrap();
    assert!(h.lm.remove_waiter(cancelled));
    assert!(!h.lm.remove_waiter(cancelled));
    h.lm.append_entries(entries(3, 3, 1, 4)).unwrap();
    wait_for(
        "two callbacks",
        WAIT,
        || got.lock().len() == 2,
        || format!("{:?}", got.lock().len()),
    );
    assert!(!h.lm.remove_waiter(later), "already woken");
    for (tag, r, thread) in got.lock().iter() {
        assert!(thread.starts_with("traft-raft"), "{tag} ran on {thread}");
        assert!(r.is_ok(), "{tag}: {r:?}");
    }
    let pending =
        h.lm.wait(100, record("stopped"))
            .map_err(|r| r.error)
            .unwrap();
    let _ = pending;
    h.lm.shutdown();
    wait_for(
        "the stop wake-up",
        WAIT,
        || got.lock().len() == 3,
        String::new,
    );
    assert!(matches!(got.lock()[2].1, Err(RaftError::Stopped)));
    let refused = h.lm.wait(100, record("after")).unwrap_err();
    assert!(matches!(refused.error, RaftError::Stopped));
    assert!(matches!(
        h.lm.append_entries(entries(4, 4, 1, 1)),
        Err(RaftError::Stopped)
    ));
}

#[test]
fn terms_answer_across_the_snapshot_boundary() {
    let g = Gated::new(true);
    let h = harness(g.clone());
    let _open = g.opened_on_drop();
    let conf = Configuration::parse_voters("1.1.1.1:1:0").unwrap();
    h.lm.append_entries(entries(1, 10, 1, 4)).unwrap();
    h.wait_durable(1);
    assert_eq!((h.lm.term_at(0), h.lm.term_at(11)), (Some(0), None));
    h.lm.set_snapshot(LogId::new(5, 1), conf.clone()).unwrap();
    assert_eq!(
        h.lm.first_log_index(),
        1,
        "the first snapshot compacts nothing"
    );
    h.lm.set_snapshot(LogId::new(8, 1), conf.clone()).unwrap();
    assert_eq!(
        h.lm.first_log_index(),
        1,
        "compaction is the core's decision, not the snapshot's"
    );
    h.lm.truncate_prefix(6).unwrap();
    assert_eq!(h.lm.term_at(5), Some(1));
    assert_eq!(h.lm.term_at(4), None);
    h.lm.check_consistency().unwrap();
    // A snapshot beyond the log: the log restarts after it.
    h.lm.set_snapshot(LogId::new(20, 3), conf.clone()).unwrap();
    assert_eq!((h.lm.first_log_index(), h.lm.last_log_index()), (21, 20));
    assert_eq!(h.lm.last_log_id(), LogId::new(20, 3));
    assert_eq!(h.lm.term_at(20), Some(3));
    h.lm.check_consistency().unwrap();
    assert_eq!(h.lm.configuration_at(25).id, LogId::new(20, 3));
    h.lm.append_entries(entries(21, 22, 3, 4)).unwrap();
    // A snapshot conflicting with the log at its index resets it.
    h.lm.set_snapshot(LogId::new(22, 4), conf).unwrap();
    assert_eq!((h.lm.first_log_index(), h.lm.last_log_index()), (23, 22));
    wait_for(
        "the storage reset",
        WAIT,
        || g.first_log_index() == 23,
        String::new,
    );
    assert_eq!(g.last_log_index(), 22);
}

#[test]
fn check_consistency_finds_a_gap_between_snapshot_and_log() {
    let storage = Arc::new(MemoryLogStorage::new());
    storage.append_entries(&entries(1, 10, 1, 4)).unwrap();
    storage.truncate_prefix(6).unwrap();
    let h = harness(storage);
    assert!(
        h.lm.check_consistency().is_err(),
        "no snapshot and no entries 1..5"
    );
    let conf = Configuration::parse_voters("1.1.1.1:1:0").unwrap();
    h.lm.set_snapshot(LogId::new(5, 1), conf).unwrap();
    h.lm.check_consistency().unwrap();
    assert_eq!(h.lm.first_log_index(), 6);
    assert_eq!(
        h.lm.last_log_index(),
        10,
        "the entries after the snapshot stay"
    );
    assert_eq!(h.lm.term_at(5), Some(1));
}

/// After a restart, a log that starts right after the snapshot (compacted with no margin, or
/// reset to it by an install) keeps every entry: the snapshot is its base.
#[test]
fn a_restarted_log_starting_right_after_the_snapshot_keeps_its_entries() {
    let storage = Arc::new(MemoryLogStorage::new());
    storage.append_entries(&entries(1, 10, 1, 4)).unwrap();
    storage.truncate_prefix(6).unwrap(); // log 6..=10 after a compaction (or install) to 5
    let h = harness(storage.clone());
    let conf = Configuration::parse_voters("1.1.1.1:1:0").unwrap();
    h.lm.set_snapshot(LogId::new(5, 1), conf).unwrap();
    assert_eq!((h.lm.first_log_index(), h.lm.last_log_index()), (6, 10));
    assert_eq!(h.lm.term_at(5), Some(1));
    h.lm.check_consistency().unwrap();
}

#[test]
fn after_a_restart_the_first_snapshot_compacts_to_itself_so_first_minus_one_answers() {
    let storage = Arc::new(MemoryLogStorage::new());
    storage.append_entries(&entries(1, 10, 1, 4)).unwrap();
    storage.truncate_prefix(4).unwrap(); // compacted in an earlier life, up to snapshot 3
    let h = harness(storage.clone());
    assert_eq!(h.lm.term_at(3), None, "unknown before the snapshot is set");
    let conf = Configuration::parse_voters("1.1.1.1:1:0").unwrap();
    h.lm.set_snapshot(LogId::new(7, 1), conf).unwrap();
    h.lm.check_consistency().unwrap();
    let first = h.lm.first_log_index();
    assert_eq!(first, 8);
    assert_eq!(h.lm.term_at(first - 1), Some(1));
    wait_for(
        "the compaction on disk",
        WAIT,
        || storage.first_log_index() == 8,
        String::new,
    );
}

#[test]
fn configurations_follow_appends_truncations_and_restarts() {
    let storage = Arc::new(MemoryLogStorage::new());
    let h = harness(storage.clone());
    h.lm.append_entries(vec![conf_entry(1, 1, "1.1.1.1:1:0"), entry(2, 1, 4)])
        .unwrap();
    h.lm.append_entries(vec![conf_entry(3, 1, "1.1.1.1:1:0,1.1.1.2:1:0")])
        .unwrap();
    assert_eq!(h.lm.configuration_at(2).id, LogId::new(1, 1));
    assert_eq!(h.lm.last_configuration().id, LogId::new(3, 1));
    h.lm.truncate_suffix(2).unwrap();
    assert_eq!(h.lm.last_configuration().id, LogId::new(1, 1));
    h.lm.append_entries(vec![conf_entry(3, 2, "1.1.1.3:1:0")])
        .unwrap();
    h.wait_durable_id(LogId::new(3, 2));
    drop(h);
    let reopened = harness(storage);
    let last = reopened.lm.last_configuration();
    assert_eq!(last.id, LogId::new(3, 2));
    assert_eq!(
        last.conf,
        Configuration::parse_voters("1.1.1.3:1:0").unwrap()
    );
}

#[test]
fn entries_for_append_entries_respect_count_and_byte_budget() {
    let g = Gated::new(true);
    let h = harness(g.clone());
    let _open = g.opened_on_drop();
    h.lm.append_entries(entries(1, 6, 1, 100)).unwrap();
    h.wait_durable(1);
    g.allow(0);
    h.lm.append_entries(entries(7, 10, 1, 100)).unwrap(); // stays in memory
    let ids = |v: Vec<LogEntry>| v.iter().map(|e| e.id.index).collect::<Vec<_>>();
    assert_eq!(ids(h.lm.entries(5, 4, 10_000)), vec![5, 6, 7, 8]);
    assert_eq!(ids(h.lm.entries(5, 100, 250)), vec![5, 6]);
    assert_eq!(ids(h.lm.entries(9, 100, 1)), vec![9], "at least one entry");
    assert!(h.lm.entries(11, 10, 10_000).is_empty());
    assert!(h.lm.entries(0, 10, 10_000).is_empty());
    g.allow(u64::MAX);
}

#[test]
fn shutdown_syncs_what_was_queued_and_closes_the_storage() {
    let dir = tempdir();
    let opts = || SegmentLogStorageOptions {
        segment_size: 1 << 16,
        logger: crate::logging::discard_logger(),
        spare: crate::log_storage::SparePreparation::Inline,
        spare_after_bytes: None,
        sync_appends: true,
    };
    let open = || SegmentLogStorage::open(crate::fs::RealFs::shared(), dir.path(), opts());
    let storage = Arc::new(open().unwrap());
    let h = harness(storage.clone());
    for i in 1..=200 {
        h.lm.append_entries(vec![entry(i, 1 + i / 50, 30)]).unwrap();
    }
    h.lm.shutdown();
    h.lm.join();
    assert!(matches!(
        storage.append_entries(&entries(201, 201, 9, 1)),
        Err(RaftError::Stopped)
    ));
    assert_eq!(*h.durable.lock().last().unwrap(), LogId::new(200, 5));
    drop(h);
    drop(storage);
    let reopened = open().unwrap();
    assert_eq!(reopened.last_log_index(), 200);
    assert_eq!(reopened.get(137), Some(entry(137, 1 + 137 / 50, 30)));
}
