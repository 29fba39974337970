//! `Node::init`, written as the 17 numbered steps of DESIGN.md section 4 (braft's
//! NodeImpl::init), each a call recorded in the init trace; a failing step undoes what the
//! steps before it started, in reverse order, and returns its error. Also shutdown and join.
//!
//! Runs on the caller's thread. Step 8 blocks it while the state machine loads its snapshot
//! on the fsm pool; nothing else here waits.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use parking_lot::Mutex;

use super::event::{run_batch, NodeEvent, ShellState};
use super::glue::{start_meta_writer, FsmToNode, LogSource, NoSync};
use super::options::NodeOptions;
use super::replicator::{ReplicatorEnv, ReplicatorGroup};
use super::timers::CoreTimers;
use super::{Lifecycle, Node, NodeShared};
use crate::core::{CoreOptions, HardState, InitialState, RaftCore};
use crate::error::{RaftError, Result};
use crate::exec_queue::{ExecQueue, ExecQueueOptions};
use crate::fs::DirLock;
use crate::fsm_caller::{ClosureQueue, FsmCaller, FsmCallerOptions};
use crate::log_manager::{LogManager, LogManagerOptions};
use crate::log_storage::{
    LogStorage, MemoryLogStorage, SegmentLogStorage, SegmentLogStorageOptions,
};
use crate::meta_storage::RaftMetaStorage;
use crate::node_manager::NodeManager;
use crate::rpc::{Caller, Completion, Server};
use crate::runtime::Runtime;
use crate::snapshot::SnapshotStorage;
use crate::state_machine::LeaderChangeContext;
use crate::timer::{RepeatedTimer, RepeatedTimerOptions};
use crate::types::{LogId, Rng};

/// One step of `init` as it ran.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InitStep {
    /// The step's number in DESIGN.md section 4.
    pub number: u8,
    /// What it did.
    pub what: String,
}

/// Bounds `apply` checks on the caller's thread.
#[derive(Clone, Debug)]
pub(crate) struct Limits {
    pub entry_bytes_max: usize,
    pub unsynced_bytes_max: usize,
    pub apply_queue_capacity: usize,
    pub snapshot_log_margin: u64,
}

/// The components a node is made of, built by init.
pub(crate) struct Parts {
    pub log: Arc<LogManager>,
    pub meta: ExecQueue<HardState>,
    pub fsm: Arc<FsmCaller>,
    pub closures: Arc<ClosureQueue>,
    pub snapshots: Option<Arc<SnapshotStorage>>,
    pub timers: Arc<CoreTimers>,
    pub snapshot_timer: Option<RepeatedTimer>,
    pub replicators: ReplicatorGroup,
    pub server: Arc<Server>,
    pub caller: Caller,
    pub caller_queue: ExecQueue<Completion>,
    pub limits: Limits,
    pub following: Mutex<Option<LeaderChangeContext>>,
    pub _dir_lock: DirLock,
}

/// What init built so far, to undo on failure (in reverse).
#[derive(Default)]
struct Undo(Vec<Box<dyn FnOnce() + Send>>);

impl Undo {
    fn push(&mut self, f: impl FnOnce() + Send + 'static) {
        self.0.push(Box::new(f));
    }

    fn run(self) {
        for f in self.0.into_iter().rev() {
            f();
        }
    }
}

fn trace(shared: &NodeShared, number: u8, what: impl Into<String>) {
    let what = what.into();
    slog::info!(shared.logger, "init"; "step" => number, "what" => &what);
    shared.trace.lock().push(InitStep { number, what });
}

impl Node {
    /// Starts the node on `opts` (DESIGN.md section 4), on first start and on restart alike:
    /// restores term, vote, configuration and the state machine from `opts.data_path`, and
    /// joins the group. The peer's address must be served by a [`Server`] registered with
    /// [`NodeManager::add_service`]. A node is initialized at most once; after a failed
    /// init, everything it started is stopped again.
    pub fn init(&self, opts: NodeOptions) -> Result<()> {
        {
            let st = self.shared.state.lock();
            if *st != Lifecycle::New || self.shared.events.get().is_some() {
                return Err(RaftError::invalid("a node is initialized at most once"));
            }
        }
        opts.validate()?;
        let mut undo = Undo::default();
        match init_steps(&self.shared, opts, &mut undo) {
            Ok(()) => Ok(()),
            Err(e) => {
                slog::error!(self.shared.logger, "init failed; undoing"; "error" => %e);
                undo.run();
                self.shared.set_state(Lifecycle::ShuttingDown);
                self.shared.parts.lock().take();
                self.shared.joining.store(true, Ordering::Release);
                mark_joined(&self.shared);
                Err(e)
            }
        }
    }
}

fn init_steps(shared: &Arc<NodeShared>, mut opts: NodeOptions, undo: &mut Undo) -> Result<()> {
    let runtime = match &opts.runtime {
        Some(rt) => rt.clone(),
        None => Runtime::global()?,
    };
    let logger = shared.logger.clone();
    let weak = Arc::downgrade(shared);
    let server = NodeManager::global()
        .server_for(shared.peer.addr())
        .ok_or_else(|| {
            RaftError::invalid(format!(
                "no Server at {} is registered: start one on the peer's address and call \
             NodeManager::add_service first",
                shared.peer.addr()
            ))
        })?;

    // 1. The four timers of the core (election, vote, stepdown; heartbeat is the leader's
    //    fourth) and the snapshot timer.
    let w = weak.clone();
    let timers = Arc::new(CoreTimers::new(runtime.timer().clone(), move |kind| {
        if let Some(node) = w.upgrade() {
            node.submit(NodeEvent::Timeout(kind));
        }
    }));
    let t = timers.clone();
    undo.push(move || t.stop_all());
    let snapshot_timer = (opts.snapshot_interval_s > 0).then(|| {
        let w = weak.clone();
        let t_opts = RepeatedTimerOptions {
            name: "snapshot".into(),
            timeout_ms: opts.snapshot_interval_s * 1000,
            randomized: false,
            seed: 0,
        };
        RepeatedTimer::new(runtime.timer(), t_opts, move || {
            if let Some(node) = w.upgrade() {
                node.submit(NodeEvent::SnapshotTick);
            }
        })
    });
    trace(
        shared,
        1,
        format!(
            "timers: election {} ms, vote {} ms, stepdown {} ms, snapshot {} s",
            opts.election_timeout_ms,
            opts.vote_timeout_ms(),
            opts.election_timeout_ms,
            opts.snapshot_interval_s
        ),
    );

    // 2. The node's serial queue, which batches applied tasks into log entries.
    let qopts = ExecQueueOptions {
        logger: logger.clone(),
        ..ExecQueueOptions::new("node")
    };
    let w = weak.clone();
    let mut state = ShellState::default();
    let events = ExecQueue::start(&runtime.raft_pool(), qopts, move |b| {
        run_batch(&w, &mut state, b)
    });
    let q = events.clone();
    undo.push(move || {
        q.stop();
        q.join();
    });
    let _ = shared.events.set(events);
    trace(shared, 2, "apply queue started");

    // 3. The FSMCaller's completion queue and error route (the log manager reports through
    //    the node, which tells the state machine).
    let closures = Arc::new(ClosureQueue::new());
    trace(shared, 3, "fsm caller: closure queue created");

    // 4. Leader and follower leases: owned by the core, sized here.
    let mut core_opts = CoreOptions::new(shared.peer);
    core_opts.election_timeout_ms = opts.election_timeout_ms;
    core_opts.max_clock_drift_ms = opts.max_clock_drift_ms;
    core_opts.heartbeat_interval_ms = opts.heartbeat_interval_ms();
    core_opts.max_inflight_appends = opts.inflight_appends_max;
    core_opts.validate()?;
    trace(
        shared,
        4,
        format!(
            "leases: leader lease {} ms, follower lease {} ms",
            opts.election_timeout_ms - opts.max_clock_drift_ms,
            opts.election_timeout_ms
        ),
    );

    // 5. Lock the data directory, then open the log storage and the log manager.
    let fs = opts.fs.clone();
    if !fs.is_dir(&opts.data_path) {
        fs.create_dir_all(&opts.data_path)?;
        fs.sync_dir(&crate::fs::parent_dir(&opts.data_path)?)?;
    }
    let dir_lock = fs.lock_dir(&opts.data_path)?;
    let storage: Arc<dyn LogStorage> = if opts.memory_log {
        Arc::new(MemoryLogStorage::new())
    } else {
        let seg_opts = SegmentLogStorageOptions {
            logger: logger.clone(),
            ..SegmentLogStorageOptions::default()
        };
        Arc::new(SegmentLogStorage::open(
            fs.clone(),
            &opts.data_path.join("log"),
            seg_opts,
        )?)
    };
    let storage: Arc<dyn LogStorage> = if opts.sync {
        storage
    } else {
        Arc::new(NoSync(storage))
    };
    let mut lm_opts = LogManagerOptions::new(storage, runtime.clone());
    lm_opts.logger = logger.clone();
    let w = weak.clone();
    lm_opts.on_durable = Arc::new(move |id| {
        if let Some(node) = w.upgrade() {
            node.submit(NodeEvent::LogDurable(id));
        }
    });
    let w = weak.clone();
    lm_opts.on_error = Arc::new(move |e| {
        if let Some(node) = w.upgrade() {
            node.submit(NodeEvent::Fatal(e));
        }
    });
    let log = Arc::new(LogManager::new(lm_opts)?);
    let l = log.clone();
    undo.push(move || {
        l.shutdown();
        l.join();
    });
    trace(
        shared,
        5,
        format!(
            "data directory locked; log {} (entries {}..={})",
            if opts.memory_log {
                "in memory"
            } else {
                "on disk"
            },
            log.first_log_index(),
            log.last_log_index()
        ),
    );

    // 6. The FSMCaller, from the bootstrap id (0, 0) or what the state machine made durable.
    let fsm_durable = opts.fsm.durable_index();
    let bootstrap = match fsm_durable {
        0 => LogId::default(),
        i => LogId::new(i, crate::types::LogRead::term_at(&*log, i).unwrap_or(0)),
    };
    let fsm = FsmCaller::start(
        std::mem::replace(&mut opts.fsm, Box::new(super::init::Unset)),
        FsmCallerOptions {
            pool: runtime.fsm_pool(),
            log: Arc::new(LogSource(log.clone())),
            closures: closures.clone(),
            listener: Arc::new(FsmToNode(weak.clone())),
            bootstrap_applied: bootstrap,
            apply_bytes_max: opts.append_entries_bytes_max,
            logger: logger.clone(),
        },
    );
    trace(shared, 6, format!("fsm caller started at {bootstrap}"));

    // 7. The ballot box is the core's; its waiter is the FSMCaller (Committed actions).
    trace(shared, 7, "ballot box: commits go to the fsm caller");

    // 8. Snapshot storage; the newest good snapshot is loaded into the state machine.
    let snapshots = Arc::new(SnapshotStorage::open(
        fs.clone(),
        &opts.data_path.join("snapshot"),
        logger.clone(),
    )?);
    let loaded = load_snapshot(&fsm, &snapshots, &log)?;
    trace(
        shared,
        8,
        match loaded {
            Some(id) => format!("snapshot {id} loaded"),
            None => "no snapshot".into(),
        },
    );
    let fsm_ref = Arc::new(fsm);
    {
        let f = fsm_ref.clone();
        undo.push(move || {
            f.shutdown();
            f.join();
        });
    }

    // 9. Snapshot and log must overlap or touch.
    log.check_consistency()?;
    trace(shared, 9, "log and snapshot consistent");

    // 10. The configuration: the newest in the log or snapshot, else the initial one. A log
    //     that holds entries but no configuration entry was written under the initial
    //     configuration (leaders open their terms with a no-op, not a configuration entry).
    let newest = log.last_configuration();
    let (conf, conf_index) = if log.last_log_index() > 0 && !newest.conf.is_empty() {
        (newest.conf, newest.id.index)
    } else {
        (opts.initial_conf.clone(), 0)
    };
    trace(
        shared,
        10,
        format!("configuration {conf} (from index {conf_index})"),
    );

    // 11. Term and vote.
    let meta = RaftMetaStorage::open(fs.clone(), &opts.data_path.join("meta"))?;
    let hard_state = HardState {
        term: meta.term(),
        voted_for: meta.voted_for(),
    };
    let first_start = meta.is_first_start();
    let meta_queue = start_meta_writer(meta, &runtime.disk_pool(), weak.clone(), logger.clone());
    let m = meta_queue.clone();
    undo.push(move || {
        m.stop();
        m.join();
    });
    trace(
        shared,
        11,
        format!(
            "meta: term {} voted for {:?}{}",
            hard_state.term,
            hard_state.voted_for,
            if first_start { " (first start)" } else { "" }
        ),
    );

    // 12. The replicator group.
    let (caller, caller_queue) = Caller::start(&runtime.raft_pool(), "node-rpc");
    let replicators = ReplicatorGroup::new(ReplicatorEnv {
        group: shared.group.clone(),
        me: shared.peer,
        log: log.clone(),
        server: server.clone(),
        caller: caller.clone(),
        pool: runtime.raft_pool(),
        node: weak.clone(),
        append_entries_bytes_max: opts.append_entries_bytes_max,
        entries_per_append_max: core_opts.max_entries_per_append as usize,
        logger: logger.clone(),
    });
    trace(
        shared,
        12,
        format!(
            "replicator group: heartbeat every {} ms",
            opts.heartbeat_interval_ms()
        ),
    );

    // 13. The core, a follower.
    let applied = fsm_ref.last_applied();
    let init = InitialState {
        hard_state,
        conf: conf.clone(),
        conf_index,
        applied_index: applied.index,
    };
    let rng = Rng::new(opts.seed.unwrap_or_else(|| Rng::from_entropy().next_u64()));
    let core = RaftCore::new(core_opts, init, &*log, rng, logger.clone())?;
    *shared.core.lock() = Some(core);
    let limits = Limits {
        entry_bytes_max: opts.entry_bytes_max,
        unsynced_bytes_max: opts.unsynced_bytes_max,
        apply_queue_capacity: opts.apply_queue_capacity,
        snapshot_log_margin: opts.snapshot_log_margin,
    };
    let _ = shared.limits.set(limits.clone());
    let parts = Arc::new(Parts {
        log,
        meta: meta_queue,
        fsm: fsm_ref,
        closures,
        snapshots: Some(snapshots),
        timers,
        snapshot_timer,
        replicators,
        server,
        caller,
        caller_queue,
        limits,
        following: Mutex::new(None),
        _dir_lock: dir_lock,
    });
    *shared.parts.lock() = Some(parts.clone());
    trace(
        shared,
        13,
        format!(
            "state: follower, term {}, applied {applied}",
            hard_state.term
        ),
    );

    // 14. The snapshot timer.
    if let Some(t) = &parts.snapshot_timer {
        t.start();
        trace(shared, 14, "snapshot timer started");
    } else {
        trace(shared, 14, "no snapshot timer (interval 0)");
    }

    // 15-17: start the core on the node's queue; join the NodeManager in between.
    let alone = conf.is_stable() && conf.voters().len() == 1 && conf.is_voter(&shared.peer);
    shared.set_state(Lifecycle::Active);
    if !conf.is_empty() && !alone {
        shared.submit(NodeEvent::Start);
        trace(shared, 15, "step_down: follower, election timer armed");
    } else {
        trace(
            shared,
            15,
            "no step_down (empty configuration or single voter)",
        );
    }
    NodeManager::global().add(Node::from_shared(shared.clone()))?;
    trace(shared, 16, "added to the node manager");
    if alone {
        shared.submit(NodeEvent::Start);
        trace(shared, 17, "elect_self: the only voter");
    }
    Ok(())
}

/// Loads the newest snapshot into the state machine and records it with the log manager.
fn load_snapshot(
    fsm: &FsmCaller,
    storage: &SnapshotStorage,
    log: &LogManager,
) -> Result<Option<LogId>> {
    let Some(reader) = storage.newest()? else {
        return Ok(None);
    };
    let meta = reader.meta().clone();
    let (tx, rx) = crossbeam::channel::bounded(1);
    fsm.load_snapshot(
        reader,
        Box::new(move |r| {
            let _ = tx.send(r);
        }),
    );
    rx.recv().map_err(|_| RaftError::Stopped)??;
    log.set_snapshot(meta.last_included, meta.conf)?;
    Ok(Some(meta.last_included))
}

/// A placeholder left in the options once the state machine moved into the FSMCaller.
struct Unset;

impl crate::state_machine::StateMachine for Unset {
    fn on_apply(&mut self, _iter: &mut crate::state_machine::Iter<'_>) {}
}

/// Stops everything the node runs without waiting: timers, replicators and the node's queue
/// stop; tasks not yet committed fail with `Stopped`. The waiting is in [`join`].
pub(crate) fn shutdown(shared: &Arc<NodeShared>) {
    let was = shared.state.lock().clone();
    if was == Lifecycle::ShuttingDown {
        return;
    }
    shared.set_state(Lifecycle::ShuttingDown);
    slog::info!(shared.logger, "shutting down");
    NodeManager::global().remove(&shared.group, &shared.peer);
    if let Some(parts) = shared.parts() {
        parts.timers.stop_all();
        if let Some(t) = &parts.snapshot_timer {
            t.stop();
        }
        parts.replicators.stop();
        parts.closures.fail_all(&RaftError::Stopped);
    }
    match shared.events.get() {
        Some(q) => q.stop(),
        None => mark_joined(shared),
    }
}

/// Waits for every queue of a shut-down node, then drops its components (releasing the data
/// directory). The first caller does the work; others wait for it. Must not be called from
/// a callback running on one of the node's own queues.
pub(crate) fn join(shared: &Arc<NodeShared>) {
    if !shared.joining.swap(true, Ordering::AcqRel) {
        if let Some(q) = shared.events.get() {
            q.join();
        }
        let parts = shared.parts.lock().take();
        if let Some(parts) = parts {
            if let Some(t) = &parts.snapshot_timer {
                t.destroy();
            }
            parts.replicators.join();
            parts.fsm.shutdown();
            parts.fsm.join();
            parts.log.shutdown();
            parts.log.join();
            parts.meta.stop();
            parts.meta.join();
            parts.caller_queue.stop();
            parts.caller_queue.join();
            wait_unshared(parts);
        }
        mark_joined(shared);
    }
    let mut done = shared.shut_down.lock();
    while !*done {
        shared.joined.wait(&mut done);
    }
}

fn mark_joined(shared: &NodeShared) {
    shared.pending_applies.store(0, Ordering::Release);
    *shared.shut_down.lock() = true;
    shared.joined.notify_all();
}

/// Drops `parts` once no queue holds it any more (they were all joined, so briefly).
fn wait_unshared(mut parts: Arc<Parts>) {
    for _ in 0..1000 {
        match Arc::try_unwrap(parts) {
            Ok(p) => return drop(p),
            Err(p) => parts = p,
        }
        std::thread::sleep(std::time::Duration::from_millis(1));
    }
    debug_assert!(
        false,
        "node parts still shared 1 s after every queue was joined"
    );
}
