//! `Node::init`, written as the 17 numbered steps of DESIGN.md section 4 (braft's
//! NodeImpl::init), each a call recorded in the init trace; a failing step undoes what the
//! steps before it started, in reverse order, and returns its error (a panicking step too).
//! Shutdown and join are in lifecycle.rs.
//!
//! Runs on the caller's thread. Step 8 blocks it while the state machine loads its snapshot
//! on the fsm pool; nothing else here waits.

use std::sync::atomic::Ordering;
use std::sync::{Arc, Weak};

use parking_lot::Mutex;

use super::event::{run_batch, NodeEvent, ShellState};
use super::glue::{start_meta_writer, FsmToNode, LogSource, NoSync};
use super::install::{SnapshotIo, SnapshotIoState};
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
    LogStorage, MemoryLogStorage, SegmentLogStorage, SegmentLogStorageOptions, SparePreparation,
};
use crate::meta_storage::RaftMetaStorage;
use crate::node_manager::NodeManager;
use crate::rpc::{Caller, Completion, Server};
use crate::runtime::Runtime;
use crate::snapshot::SnapshotStorage;
use crate::state_machine::LeaderChangeContext;
use crate::timer::{RepeatedTimer, RepeatedTimerOptions};
use crate::types::{Configuration, LogId, Rng};

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
    /// Checked by the node manager's routing, not by `apply`.
    pub incoming_bytes_max: usize,
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
    /// Snapshot file work on the disk pool: serving GetFile, copying an install.
    pub snapshot_io: ExecQueue<SnapshotIo>,
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
    slog::info!(shared.logger(), "init"; "step" => number, "what" => &what);
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
        // After validation: a refused init leaves the node re-initializable, and the
        // corrected options' logger must be the one kept.
        if let Some(parent) = &opts.logger {
            self.shared.set_logger(parent);
        }
        let mut undo = Undo::default();
        // A panic in a step (a bug, or the user's state machine) is undone like an error,
        // so that nothing it started keeps running.
        let steps = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            init_steps(&self.shared, opts, &mut undo)
        }));
        let reason = "init panicked".to_string();
        match steps.unwrap_or(Err(RaftError::ErrorState { reason })) {
            Ok(()) => Ok(()),
            Err(e) => {
                slog::error!(self.shared.logger(), "init failed; undoing"; "error" => %e);
                undo.run();
                self.shared.set_state(Lifecycle::ShuttingDown);
                drop(self.shared.take_parts());
                self.shared.joining.store(true, Ordering::Release);
                super::lifecycle::mark_joined(&self.shared);
                Err(e)
            }
        }
    }
}

/// What every step needs.
struct Ctx<'a> {
    shared: &'a Arc<NodeShared>,
    weak: Weak<NodeShared>,
    runtime: Runtime,
    logger: slog::Logger,
    undo: &'a mut Undo,
}

impl Ctx<'_> {
    /// A callback that submits `make(arg)` to the node's queue while the node exists.
    fn to_node<A: 'static>(
        &self,
        make: impl Fn(A) -> NodeEvent + Send + Sync + 'static,
    ) -> impl Fn(A) + Send + Sync + 'static {
        let w = self.weak.clone();
        move |a| {
            if let Some(node) = w.upgrade() {
                node.submit(make(a));
            }
        }
    }
}

fn init_steps(shared: &Arc<NodeShared>, mut opts: NodeOptions, undo: &mut Undo) -> Result<()> {
    let runtime = match &opts.runtime {
        Some(rt) => rt.clone(),
        None => Runtime::global()?,
    };
    let server = NodeManager::global()
        .server_for(shared.peer.addr())
        .ok_or_else(|| {
            RaftError::invalid(format!(
                "no Server at {} is registered: start one on the peer's address and call \
                 NodeManager::add_service first",
                shared.peer.addr()
            ))
        })?;
    opts.check_frame(server.frame_bytes_max())?;
    let mut cx = Ctx {
        shared,
        weak: Arc::downgrade(shared),
        runtime,
        logger: shared.logger().clone(),
        undo,
    };
    let (timers, snapshot_timer) = step1_timers(&mut cx, &opts);
    step2_apply_queue(&mut cx);
    let closures = step3_fsm_caller_queue(&cx);
    let core_opts = step4_leases(&cx, &opts)?;
    let (dir_lock, log) = step5_log(&mut cx, &opts)?;
    let fsm = step6_fsm_caller(&mut cx, &mut opts, &log, &closures);
    trace(shared, 7, "ballot box: commits go to the fsm caller");
    let snapshots = step8_snapshot(&cx, &opts, &fsm, &log)?;
    log.check_consistency()?;
    trace(shared, 9, "log and snapshot consistent");
    let configurations = step10_configuration(&cx, &opts, &log);
    let conf = configurations
        .last()
        .map(|(_, c)| c.clone())
        .unwrap_or_default();
    let snapshot_conf = configurations[0].1.clone();
    let (hard_state, meta) = step11_meta(&mut cx, &opts)?;
    let (caller, caller_queue) = Caller::start(&cx.runtime.raft_pool(), "node-rpc");
    let q = caller_queue.clone();
    cx.undo.push(move || {
        q.stop();
        q.join();
    });
    let replicators = step12_replicators(&cx, &opts, &core_opts, &log, &server, &caller);
    let snapshot_io = start_snapshot_io(&mut cx, &snapshots, &server, &caller);
    let init = InitialState {
        hard_state,
        configurations,
        applied_index: fsm.last_applied().index,
        snapshot: log.last_snapshot_id(),
        snapshot_conf,
    };
    let parts = Parts {
        log,
        meta,
        fsm,
        closures,
        snapshots: Some(snapshots),
        timers,
        snapshot_timer,
        replicators,
        server,
        caller,
        caller_queue,
        snapshot_io,
        limits: Limits {
            entry_bytes_max: opts.entry_bytes_max,
            unsynced_bytes_max: opts.unsynced_bytes_max,
            apply_queue_capacity: opts.apply_queue_capacity,
            incoming_bytes_max: opts.incoming_bytes_max,
        },
        following: Mutex::new(None),
        _dir_lock: dir_lock,
    };
    let parts = step13_core(&cx, &opts, core_opts, init, parts)?;
    step14_snapshot_timer(&mut cx, &parts);
    steps15_to_17_start(&cx, &conf)
}

/// 1. The core's timers (election, vote, stepdown, heartbeat) and the snapshot timer.
fn step1_timers(cx: &mut Ctx<'_>, opts: &NodeOptions) -> (Arc<CoreTimers>, Option<RepeatedTimer>) {
    let timers = Arc::new(CoreTimers::new(
        cx.runtime.timer().clone(),
        cx.to_node(NodeEvent::Timeout),
    ));
    let t = timers.clone();
    cx.undo.push(move || t.stop_all());
    let snapshot_timer = (opts.snapshot_interval_s > 0).then(|| {
        let t_opts = RepeatedTimerOptions {
            first_random: true,
            seed: opts.seed.unwrap_or_else(|| Rng::from_entropy().next_u64()),
            ..RepeatedTimerOptions::new("snapshot", opts.snapshot_interval_s * 1000)
        };
        let tick = cx.to_node(|()| NodeEvent::SnapshotTick);
        RepeatedTimer::new(cx.runtime.timer(), t_opts, move || tick(()))
    });
    trace(
        cx.shared,
        1,
        format!(
            "timers: election {} ms, vote {} ms, stepdown {} ms, snapshot {} s",
            opts.election_timeout_ms,
            opts.vote_timeout_ms(),
            opts.election_timeout_ms,
            opts.snapshot_interval_s
        ),
    );
    (timers, snapshot_timer)
}

/// 2. The node's serial queue, which also batches applied tasks into log entries.
fn step2_apply_queue(cx: &mut Ctx<'_>) {
    let qopts = ExecQueueOptions {
        logger: cx.logger.clone(),
        ..ExecQueueOptions::new("node")
    };
    let w = cx.weak.clone();
    let mut state = ShellState::default();
    let events = ExecQueue::start(&cx.runtime.raft_pool(), qopts, move |b| {
        run_batch(&w, &mut state, b)
    });
    let q = events.clone();
    cx.undo.push(move || {
        q.stop();
        q.join();
    });
    let _ = cx.shared.events.set(events);
    trace(cx.shared, 2, "apply queue started");
}

/// 3. The FSMCaller's completion queue; the log manager reports errors through the node,
///    which tells the state machine.
fn step3_fsm_caller_queue(cx: &Ctx<'_>) -> Arc<ClosureQueue> {
    trace(cx.shared, 3, "fsm caller: closure queue created");
    Arc::new(ClosureQueue::new())
}

/// 4. Leader and follower leases: owned by the core, sized here.
fn step4_leases(cx: &Ctx<'_>, opts: &NodeOptions) -> Result<CoreOptions> {
    let mut core_opts = CoreOptions::new(cx.shared.peer);
    core_opts.election_timeout_ms = opts.election_timeout_ms;
    core_opts.max_clock_drift_ms = opts.max_clock_drift_ms;
    core_opts.heartbeat_interval_ms = opts.heartbeat_interval_ms();
    core_opts.max_inflight_appends = opts.inflight_appends_max;
    core_opts.catchup_margin = opts.catchup_margin;
    core_opts.snapshot_log_margin = opts.snapshot_log_margin;
    core_opts.lease_reads = opts.lease_reads;
    core_opts.validate()?;
    trace(
        cx.shared,
        4,
        format!(
            "leases: leader lease {} ms, follower lease {} ms",
            opts.election_timeout_ms - opts.max_clock_drift_ms,
            opts.election_timeout_ms
        ),
    );
    Ok(core_opts)
}

/// 5. Lock the data directory (before any file is read), open the log and its manager.
fn step5_log(cx: &mut Ctx<'_>, opts: &NodeOptions) -> Result<(DirLock, Arc<LogManager>)> {
    let fs = &opts.fs;
    if !fs.is_dir(&opts.data_path) {
        fs.create_dir_all(&opts.data_path)?;
        fs.sync_dir(&crate::fs::parent_dir(&opts.data_path)?)?;
    }
    let dir_lock = fs.lock_dir(&opts.data_path)?;
    let storage: Arc<dyn LogStorage> = if opts.memory_log {
        Arc::new(MemoryLogStorage::new())
    } else {
        let seg_opts = SegmentLogStorageOptions {
            logger: cx.logger.clone(),
            // Segments are prepared ahead (zero-filled and synced) on the disk pool, so that
            // appends' syncs commit no extent conversion; without syncs there is nothing to
            // gain from the zeros. Small batches in a segment that is not a spare (the first)
            // get zeros written ahead by the writer instead. Without spares the fresh-start
            // bench's small-batch lines ran faster, but bulk batches (64 KiB-1 MiB) fell to
            // 0.48-0.57 of raw writes (docs/BENCHMARKS.md, "Zeros ahead").
            spare: match opts.sync {
                true => SparePreparation::Pool(cx.runtime.disk_pool()),
                false => SparePreparation::Off,
            },
            sync_appends: opts.sync,
            ..SegmentLogStorageOptions::default()
        };
        let dir = opts.data_path.join("log");
        Arc::new(SegmentLogStorage::open(fs.clone(), &dir, seg_opts)?)
    };
    let storage: Arc<dyn LogStorage> = match opts.sync {
        true => storage,
        false => Arc::new(NoSync(storage)),
    };
    let mut lm_opts = LogManagerOptions::new(storage, cx.runtime.clone());
    lm_opts.logger = cx.logger.clone();
    lm_opts.on_durable = Arc::new(cx.to_node(NodeEvent::LogDurable));
    lm_opts.on_error = Arc::new(cx.to_node(NodeEvent::Fatal));
    let log = Arc::new(LogManager::new(lm_opts)?);
    let l = log.clone();
    cx.undo.push(move || {
        l.shutdown();
        l.join();
    });
    let kind = if opts.memory_log {
        "in memory"
    } else {
        "on disk"
    };
    let (first, last) = (log.first_log_index(), log.last_log_index());
    trace(
        cx.shared,
        5,
        format!("data directory locked; log {kind} (entries {first}..={last})"),
    );
    Ok((dir_lock, log))
}

/// 6. The FSMCaller, from the bootstrap id (0, 0), or from what the state machine made
///    durable itself.
fn step6_fsm_caller(
    cx: &mut Ctx<'_>,
    opts: &mut NodeOptions,
    log: &Arc<LogManager>,
    closures: &Arc<ClosureQueue>,
) -> Arc<FsmCaller> {
    let bootstrap = match opts.fsm.durable_index() {
        0 => LogId::default(),
        i => LogId::new(i, crate::types::LogRead::term_at(&**log, i).unwrap_or(0)),
    };
    let fsm = Arc::new(FsmCaller::start(
        std::mem::replace(&mut opts.fsm, Box::new(Unset)),
        FsmCallerOptions {
            pool: cx.runtime.fsm_pool(),
            log: Arc::new(LogSource(log.clone(), opts.initial_conf.clone())),
            closures: closures.clone(),
            listener: Arc::new(FsmToNode(cx.weak.clone())),
            bootstrap_applied: bootstrap,
            apply_bytes_max: opts.append_entries_bytes_max,
            logger: cx.logger.clone(),
        },
    ));
    let f = fsm.clone();
    cx.undo.push(move || {
        f.shutdown();
        f.join();
    });
    trace(cx.shared, 6, format!("fsm caller started at {bootstrap}"));
    fsm
}

/// 8. Snapshot storage; the newest good snapshot is loaded into the state machine.
fn step8_snapshot(
    cx: &Ctx<'_>,
    opts: &NodeOptions,
    fsm: &FsmCaller,
    log: &LogManager,
) -> Result<Arc<SnapshotStorage>> {
    let dir = opts.data_path.join("snapshot");
    let storage = Arc::new(SnapshotStorage::open(
        opts.fs.clone(),
        &dir,
        cx.logger.clone(),
    )?);
    let loaded = super::glue::load_snapshot(fsm, &storage, log)?;
    trace(
        cx.shared,
        8,
        match loaded {
            Some(id) => format!("snapshot {id} loaded"),
            None => "no snapshot".into(),
        },
    );
    Ok(storage)
}

/// 10. The configuration: the newest in the log or snapshot, else the initial one. A log
///     that holds entries but no configuration entry was written under the initial
///     configuration (leaders open their terms with a no-op, not a configuration entry).
///     Returns every configuration known, oldest first (the core keeps the older ones, since
///     an uncommitted configuration entry may yet be truncated), the newest in force.
fn step10_configuration(
    cx: &Ctx<'_>,
    opts: &NodeOptions,
    log: &LogManager,
) -> Vec<(u64, Configuration)> {
    let snapshot = log.last_snapshot_id();
    let recorded = log.configuration_at(snapshot.index).conf;
    let base = match snapshot.index {
        // A snapshot of a log without configuration entries (made by an older version)
        // records none: that log was written under the initial configuration.
        index if index > 0 && !recorded.is_empty() => (index, recorded),
        index => (index, opts.initial_conf.clone()),
    };
    let mut list = vec![base];
    list.extend(
        log.configurations_after(snapshot.index)
            .into_iter()
            .map(|e| (e.id.index, e.conf)),
    );
    let (index, conf) = list.last().cloned().unwrap_or_default();
    trace(
        cx.shared,
        10,
        format!("configuration {conf} (from index {index})"),
    );
    list
}

/// 11. Term and vote, and the queue that persists them.
fn step11_meta(cx: &mut Ctx<'_>, opts: &NodeOptions) -> Result<(HardState, ExecQueue<HardState>)> {
    let meta = RaftMetaStorage::open(opts.fs.clone(), &opts.data_path.join("meta"))?;
    let hs = HardState {
        term: meta.term(),
        voted_for: meta.voted_for(),
    };
    let first = if meta.is_first_start() {
        " (first start)"
    } else {
        ""
    };
    let queue = start_meta_writer(
        meta,
        &cx.runtime.disk_pool(),
        cx.weak.clone(),
        cx.logger.clone(),
    );
    let q = queue.clone();
    cx.undo.push(move || {
        q.stop();
        q.join();
    });
    trace(
        cx.shared,
        11,
        format!("meta: term {} voted for {:?}{first}", hs.term, hs.voted_for),
    );
    Ok((hs, queue))
}

/// 12. The replicator group.
fn step12_replicators(
    cx: &Ctx<'_>,
    opts: &NodeOptions,
    core_opts: &CoreOptions,
    log: &Arc<LogManager>,
    server: &Arc<Server>,
    caller: &Caller,
) -> ReplicatorGroup {
    let group = ReplicatorGroup::new(ReplicatorEnv {
        group: cx.shared.group.clone(),
        me: cx.shared.peer,
        log: log.clone(),
        server: server.clone(),
        caller: caller.clone(),
        pool: cx.runtime.raft_pool(),
        node: cx.weak.clone(),
        append_entries_bytes_max: opts.append_entries_bytes_max,
        entries_per_append_max: core_opts.max_entries_per_append as usize,
        logger: cx.logger.clone(),
    });
    let every = opts.heartbeat_interval_ms();
    trace(
        cx.shared,
        12,
        format!("replicator group: heartbeat every {every} ms"),
    );
    group
}

/// The node's snapshot queue on the disk pool (part of step 12: braft's replicators carry
/// snapshot installs).
fn start_snapshot_io(
    cx: &mut Ctx<'_>,
    storage: &Arc<SnapshotStorage>,
    server: &Arc<Server>,
    caller: &Caller,
) -> ExecQueue<SnapshotIo> {
    let state = SnapshotIoState::new(
        cx.weak.clone(),
        storage.clone(),
        server.clone(),
        caller.clone(),
        cx.logger.clone(),
    );
    let queue = super::install::start_queue(&cx.runtime.disk_pool(), state, &cx.logger);
    let q = queue.clone();
    cx.undo.push(move || {
        q.stop();
        q.join();
    });
    queue
}

/// 13. The core, a follower; the node is assembled.
fn step13_core(
    cx: &Ctx<'_>,
    opts: &NodeOptions,
    core_opts: CoreOptions,
    init: InitialState,
    parts: Parts,
) -> Result<Arc<Parts>> {
    let (term, applied) = (init.hard_state.term, init.applied_index);
    let rng = Rng::new(opts.seed.unwrap_or_else(|| Rng::from_entropy().next_u64()));
    let core = RaftCore::new(core_opts, init, &*parts.log, rng, cx.logger.clone())?;
    *cx.shared.core.lock() = Some(core);
    let _ = cx.shared.limits.set(parts.limits.clone());
    let parts = Arc::new(parts);
    *cx.shared.parts.lock() = Some(parts.clone());
    trace(
        cx.shared,
        13,
        format!("state: follower, term {term}, applied {applied}"),
    );
    Ok(parts)
}

/// 14. The snapshot timer.
fn step14_snapshot_timer(cx: &mut Ctx<'_>, parts: &Arc<Parts>) {
    match &parts.snapshot_timer {
        Some(t) => {
            t.start();
            let p = parts.clone();
            cx.undo.push(move || {
                if let Some(t) = &p.snapshot_timer {
                    t.destroy();
                }
            });
            trace(cx.shared, 14, "snapshot timer started");
        }
        None => trace(cx.shared, 14, "no snapshot timer (interval 0)"),
    }
}

/// Steps 15 to 17: step_down (the election timer starts) unless the node is alone; join the
/// node manager; the only voter elects itself at once. The core starts on the node's queue.
fn steps15_to_17_start(cx: &Ctx<'_>, conf: &Configuration) -> Result<()> {
    let shared = cx.shared;
    let alone = conf.is_stable() && conf.voters().len() == 1 && conf.is_voter(&shared.peer);
    shared.activate().then_some(()).ok_or(RaftError::Stopped)?; // a shutdown came first
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

/// A placeholder left in the options once the state machine moved into the FSMCaller.
struct Unset;

impl crate::state_machine::StateMachine for Unset {
    fn on_apply(&mut self, _iter: &mut crate::state_machine::Iter<'_>) {}
}
