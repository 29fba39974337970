//! FSMCaller contract: order, batching, completions, configuration entries, panics,
//! snapshots and shutdown.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use bytes::Bytes;

use super::*;
use crate::fs::RealFs;
use crate::logging::discard_logger;
use crate::pool::Pool;
use crate::snapshot::SnapshotWriter;
use crate::testing::wait_for;

struct VecLog {
    entries: Mutex<Vec<LogEntry>>,
    conf: Configuration,
}

impl CommittedLog for VecLog {
    fn committed_entries(&self, from: u64, to: u64, max_bytes: usize) -> Result<Vec<LogEntry>> {
        let all = self.entries.lock();
        let mut out = Vec::new();
        let mut bytes = 0;
        for e in all.iter().filter(|e| (from..=to).contains(&e.id.index)) {
            if !out.is_empty() && bytes + e.data.len() > max_bytes {
                break;
            }
            bytes += e.data.len();
            out.push(e.clone());
        }
        Ok(out)
    }

    fn configuration_at(&self, _index: u64) -> Result<Configuration> {
        Ok(self.conf.clone())
    }
}

#[derive(Default)]
struct Record {
    applied: Vec<u64>,
    batches: usize,
    events: Vec<String>,
    applied_ids: Vec<LogId>,
    errors: Vec<RaftError>,
}

#[derive(Clone, Default)]
struct Shared(Arc<Mutex<Record>>);

struct TestSm {
    rec: Shared,
    panic_at: Option<u64>,
    state: Vec<u8>,
}

impl StateMachine for TestSm {
    fn on_apply(&mut self, iter: &mut Iter<'_>) {
        self.rec.0.lock().batches += 1;
        for mut e in iter {
            if Some(e.index) == self.panic_at {
                panic!("user bug at {}", e.index);
            }
            self.state.extend_from_slice(&e.data);
            self.rec.0.lock().applied.push(e.index);
            e.respond(Bytes::from(e.index.to_string()));
        }
    }
    fn on_leader_start(&mut self, term: u64) {
        self.rec
            .0
            .lock()
            .events
            .push(format!("leader_start {term}"));
    }
    fn on_configuration_committed(&mut self, conf: &Configuration) {
        self.rec
            .0
            .lock()
            .events
            .push(format!("conf {}", conf.voters().len()));
    }
    fn on_error(&mut self, e: &RaftError) {
        self.rec.0.lock().events.push(format!("error {e}"));
    }
    fn on_shutdown(&mut self) {
        self.rec.0.lock().events.push("shutdown".into());
    }
    fn on_snapshot_save(&mut self, mut writer: SnapshotWriter, done: SnapshotDone) {
        match writer.write_file("state", &self.state) {
            Ok(()) => done.complete(Ok(writer)),
            Err(e) => done.complete(Err(e)),
        }
    }
    fn on_snapshot_load(&mut self, reader: &SnapshotReader) -> Result<()> {
        self.state = reader.read_file(&RealFs, "state")?;
        Ok(())
    }
}

impl FsmListener for Shared {
    fn on_applied(&self, applied: LogId) {
        self.0.lock().applied_ids.push(applied);
    }
    fn on_fsm_error(&self, error: RaftError) {
        self.0.lock().errors.push(error);
    }
}

fn conf() -> Configuration {
    Configuration::parse_voters("127.0.0.1:1:0,127.0.0.1:2:0").unwrap()
}

fn entry(index: u64, kind: EntryType, data: &[u8]) -> LogEntry {
    LogEntry::new(LogId::new(index, 1), kind, Bytes::copy_from_slice(data))
}

struct Setup {
    _pool: Pool,
    fsm: FsmCaller,
    rec: Shared,
    log: Arc<VecLog>,
    closures: Arc<ClosureQueue>,
}

fn setup(panic_at: Option<u64>, entries: Vec<LogEntry>) -> Setup {
    let pool = Pool::new("t-fsm", 1).unwrap();
    let rec = Shared::default();
    let log = Arc::new(VecLog {
        entries: Mutex::new(entries),
        conf: conf(),
    });
    let closures = Arc::new(ClosureQueue::new());
    let sm = TestSm {
        rec: rec.clone(),
        panic_at,
        state: Vec::new(),
    };
    let fsm = FsmCaller::start(
        Box::new(sm),
        FsmCallerOptions {
            pool: pool.handle(),
            log: log.clone(),
            closures: closures.clone(),
            listener: Arc::new(rec.clone()),
            bootstrap_applied: LogId::default(),
            apply_bytes_max: 64,
            logger: discard_logger(),
        },
    );
    Setup {
        _pool: pool,
        fsm,
        rec,
        log,
        closures,
    }
}

type Results = Arc<Mutex<Vec<(u64, Result<Bytes>)>>>;

fn done_into(results: &Results, index: u64) -> ApplyDone {
    let r = results.clone();
    Box::new(move |res| r.lock().push((index, res)))
}

fn data_entries(n: u64) -> Vec<LogEntry> {
    (1..=n)
        .map(|i| entry(i, EntryType::Data, &[i as u8; 8]))
        .collect()
}

#[test]
fn committed_entries_apply_in_order_once_with_their_responses() {
    let s = setup(None, data_entries(100));
    let results: Results = Default::default();
    for i in (2..=100).step_by(7) {
        s.closures.push(LogId::new(i, 1), done_into(&results, i));
    }
    for i in 1..=100 {
        s.fsm.on_committed(i).unwrap();
    }
    wait_for(
        "all applied",
        Duration::from_secs(5),
        || s.fsm.last_applied().index == 100,
        || format!("{:?}", s.fsm.last_applied()),
    );
    let rec = s.rec.0.lock();
    assert_eq!(
        rec.applied,
        (1..=100).collect::<Vec<_>>(),
        "in order, each once"
    );
    assert!(
        rec.batches < 100,
        "commits coalesce into batches ({} batches)",
        rec.batches
    );
    let res = results.lock();
    assert_eq!(res.len(), 15);
    for (i, r) in res.iter() {
        assert_eq!(r.as_ref().unwrap(), &Bytes::from(i.to_string()));
    }
    assert_eq!(*rec.applied_ids.last().unwrap(), LogId::new(100, 1));
}

#[test]
fn configuration_and_noop_entries_keep_their_place_in_the_order() {
    let mut entries = data_entries(2);
    entries.push(entry(3, EntryType::NoOp, b""));
    let mut conf_bytes = Vec::new();
    conf().encode(&mut conf_bytes);
    entries.push(entry(4, EntryType::Configuration, &conf_bytes));
    entries.push(entry(5, EntryType::Data, b"x"));
    let s = setup(None, entries);
    s.fsm.on_leader_start(3).unwrap();
    s.fsm.on_committed(5).unwrap();
    wait_for(
        "applied 5",
        Duration::from_secs(5),
        || s.fsm.last_applied().index == 5,
        String::new,
    );
    let rec = s.rec.0.lock();
    assert_eq!(rec.applied, vec![1, 2, 5]);
    assert_eq!(
        rec.events,
        vec!["leader_start 3".to_string(), "conf 2".to_string()]
    );
}

#[test]
fn a_panic_in_on_apply_enters_the_error_state_and_fails_what_follows() {
    let s = setup(Some(5), data_entries(10));
    let results: Results = Default::default();
    for i in 1..=10 {
        s.closures.push(LogId::new(i, 1), done_into(&results, i));
    }
    s.fsm.on_committed(10).unwrap();
    wait_for(
        "error reported",
        Duration::from_secs(5),
        || !s.rec.0.lock().errors.is_empty(),
        || format!("{:?}", results.lock()),
    );
    wait_for(
        "all completions",
        Duration::from_secs(5),
        || results.lock().len() == 10,
        String::new,
    );
    let res = results.lock();
    for (i, r) in res.iter() {
        if *i < 5 {
            assert!(r.is_ok(), "{i} was applied before the panic");
        } else {
            assert!(matches!(r, Err(RaftError::ErrorState { .. })), "{i}: {r:?}");
        }
    }
    drop(res);
    // Nothing more is applied; on_error was told once.
    s.log
        .entries
        .lock()
        .extend((11..=12).map(|i| entry(i, EntryType::Data, b"z")));
    s.fsm.on_committed(12).unwrap();
    s.fsm.shutdown();
    s.fsm.join();
    let rec = s.rec.0.lock();
    assert_eq!(rec.applied, vec![1, 2, 3, 4]);
    assert_eq!(
        rec.events.iter().filter(|e| e.starts_with("error")).count(),
        1
    );
}

#[test]
fn the_pool_thread_survives_a_panicking_state_machine() {
    let s = setup(Some(1), data_entries(3));
    s.fsm.on_committed(3).unwrap();
    wait_for(
        "error reported",
        Duration::from_secs(5),
        || !s.rec.0.lock().errors.is_empty(),
        String::new,
    );
    let other = setup(None, data_entries(3));
    other.fsm.on_committed(3).unwrap();
    wait_for(
        "other node applies",
        Duration::from_secs(5),
        || other.fsm.last_applied().index == 3,
        String::new,
    );
}

#[test]
fn a_snapshot_saved_after_applying_loads_back() {
    let dir = tempfile::tempdir().unwrap();
    let storage = Arc::new(
        SnapshotStorage::open(RealFs::shared(), &dir.path().join("snap"), discard_logger())
            .unwrap(),
    );
    let s = setup(None, data_entries(4));
    let (tx, rx) = crossbeam::channel::bounded(1);
    s.fsm.on_committed(4).unwrap();
    s.fsm.save_snapshot(SaveRequest {
        storage: storage.clone(),
        done: Box::new(move |r| tx.send(r).unwrap()),
    });
    let meta = rx.recv_timeout(Duration::from_secs(5)).unwrap().unwrap();
    assert_eq!(
        meta.last_included,
        LogId::new(4, 1),
        "saved after everything committed"
    );
    assert_eq!(meta.conf, conf());
    let reader = storage.newest().unwrap().unwrap();
    let fresh = setup(None, Vec::new());
    let loaded = Arc::new(AtomicBool::new(false));
    let l = loaded.clone();
    fresh.fsm.load_snapshot(
        reader,
        Box::new(move |r| l.store(r.is_ok(), Ordering::SeqCst)),
    );
    wait_for(
        "loaded",
        Duration::from_secs(5),
        || loaded.load(Ordering::SeqCst),
        String::new,
    );
    assert_eq!(fresh.fsm.last_applied(), LogId::new(4, 1));
}

#[test]
fn shutdown_calls_on_shutdown_and_fails_waiting_completions() {
    let s = setup(None, data_entries(2));
    let results: Results = Default::default();
    s.closures.push(LogId::new(7, 1), done_into(&results, 7));
    s.fsm.shutdown();
    s.fsm.join();
    assert!(matches!(results.lock()[0].1, Err(RaftError::Stopped)));
    assert_eq!(s.rec.0.lock().events, vec!["shutdown".to_string()]);
    assert_eq!(s.fsm.on_committed(1), Err(RaftError::Stopped));
}
