//! The Raft node: one peer of one group (braft's NodeImpl), the shell around the pure
//! [`RaftCore`].
//!
//! Every core step runs on the node's serial queue on the raft pool (`event.rs`): timers, the
//! RaftService, the disk queue and user threads calling [`Node::apply`] only enqueue events
//! there. A step holds the node's core lock briefly; its actions (persist, append, send,
//! commit) are carried out after the lock is released. Messages that depend on persisted
//! state are held inside the core until the persistence is reported, so nothing is promised
//! before it is durable. Nothing here blocks an IO or timer thread or calls user code under a
//! lock; user callbacks run on the fsm pool (`fsm_caller`).
//!
//! Lock order: `NodeShared::state` -> `NodeShared::core`; neither is held across IO or a call
//! into another component.

mod admin;
mod apply;
mod event;
mod glue;
mod incoming;
mod init;
mod install;
mod lifecycle;
pub mod options;
mod replicator;
mod status;
pub mod timers;
pub mod wire;

use std::sync::{Arc, OnceLock};

use parking_lot::{Condvar, Mutex};
use slog::Logger;

pub use apply::{Task, TaskWaiter};
pub use init::InitStep;
pub use options::NodeOptions;
pub use status::{FollowerStatus, NodeStatus};

use crate::core::{RaftCore, Role};
use crate::error::{RaftError, Result};
use crate::exec_queue::ExecQueue;
use crate::fsm_caller::ClosureQueue;
use crate::types::{GroupId, PeerId};
use event::NodeEvent;
use init::Parts;

/// Where a node is in its life.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Lifecycle {
    /// Created, not yet (or not successfully) initialized.
    New,
    /// Initialized and running.
    Active,
    /// Stopped working after a fatal error (fsync failure, full disk, a state machine
    /// panic); only shutdown is possible.
    Error(RaftError),
    /// `shutdown` was called.
    ShuttingDown,
}

impl NodeShared {
    /// The node's logger: the user's once init installed it, else the default (which
    /// forwards to the `log` facade). Every line carries the group and the peer.
    pub(crate) fn logger(&self) -> &Logger {
        self.custom_logger.get().unwrap_or(&self.default_logger)
    }

    /// Installs the user's logger; only the first call has an effect (init runs once).
    pub(crate) fn set_logger(&self, parent: &Logger) {
        let _ =
            self.custom_logger
                .set(crate::logging::node_logger(parent, &self.group, &self.peer));
    }
}

/// Everything the node's threads share.
pub(crate) struct NodeShared {
    pub(crate) group: GroupId,
    pub(crate) peer: PeerId,
    /// The logger until init installs the user's ([`NodeOptions::logger`]).
    default_logger: Logger,
    /// The user's logger (group and peer added), set once by init after the options
    /// validate.
    custom_logger: OnceLock<Logger>,
    /// Invariant: moves New -> Active -> (Error ->) ShuttingDown, never back.
    pub(crate) state: Mutex<Lifecycle>,
    /// Signalled when shutdown finished (for `join`).
    pub(crate) joined: Condvar,
    pub(crate) shut_down: Mutex<bool>,
    /// Set by the first `join`, which does the joining.
    pub(crate) joining: std::sync::atomic::AtomicBool,
    /// The protocol; `None` until init step 13.
    pub(crate) core: Mutex<Option<RaftCore>>,
    /// The serial queue every step runs on; set at init step 2.
    pub(crate) events: OnceLock<ExecQueue<NodeEvent>>,
    /// Components built by init (steps 1-12); set once they all exist, taken by `join` so
    /// that dropping them releases the data directory.
    pub(crate) parts: Mutex<Option<Arc<Parts>>>,
    /// Bounds checked by `apply` on the caller's thread, set by init.
    pub(crate) limits: OnceLock<init::Limits>,
    /// Mirrors `state == Active`, for the apply hot path (no lock).
    pub(crate) active: std::sync::atomic::AtomicBool,
    /// Log bytes appended and not yet durable, as the node's queue last saw them.
    pub(crate) unsynced_bytes: std::sync::atomic::AtomicUsize,
    /// The init steps as they ran (DESIGN.md section 4), for tests and status.
    pub(crate) trace: Mutex<Vec<InitStep>>,
    /// Tasks accepted by `apply` and not yet proposed (bounded by the options).
    pub(crate) pending_applies: std::sync::atomic::AtomicUsize,
    /// RaftService messages received and not yet handled
    /// ([`NodeOptions::incoming_bytes_max`]).
    pub(crate) incoming: incoming::Incoming,
    /// The leader the core knew after its last step, for `leader_id` (and GetLeader on the
    /// IO thread) without the core lock. Lock order: taken after the core lock is released,
    /// or under it (start), never the other way round.
    leader: Mutex<Option<PeerId>>,
}

impl NodeShared {
    /// Records the leader the core knows after a step (see `NodeShared::leader`).
    pub(crate) fn note_leader(&self, leader: Option<PeerId>) {
        *self.leader.lock() = leader;
    }

    /// Queues an event on the node's serial queue. Dropped (and logged) once the queue
    /// stopped; events carry no promise to anyone, so dropping one after shutdown is safe.
    pub(crate) fn submit(&self, ev: NodeEvent) {
        let Some(q) = self.events.get() else {
            return;
        };
        if let Err(rejected) = q.submit(ev) {
            rejected.item.fail(&rejected.error);
        }
    }

    /// The error to answer a new request with, if the node is not active.
    pub(crate) fn refusal(&self) -> Option<RaftError> {
        match &*self.state.lock() {
            Lifecycle::Active => None,
            Lifecycle::New => Some(RaftError::invalid("node is not initialized")),
            Lifecycle::Error(e) => Some(RaftError::ErrorState {
                reason: e.to_string(),
            }),
            Lifecycle::ShuttingDown => Some(RaftError::Stopped),
        }
    }

    fn with_core<T>(&self, f: impl FnOnce(&RaftCore) -> T) -> Option<T> {
        self.core.lock().as_ref().map(f)
    }

    /// The components, while the node is initialized and not yet joined.
    pub(crate) fn parts(&self) -> Option<Arc<Parts>> {
        self.parts.lock().clone()
    }

    /// Fails, with `error`, the completions of this leader's tasks whose entries are not
    /// known to be committed (step-down, error state, shutdown). Committed ones stay: the
    /// state machine applies them and completes them with their response.
    pub(crate) fn fail_uncommitted(&self, closures: &ClosureQueue, error: &RaftError) {
        let committed = self.with_core(|c| c.commit_index()).unwrap_or(0);
        closures.fail_after(committed, error);
    }

    /// Takes the components out, the lock released before the caller drops them (dropping
    /// the last handle closes files).
    pub(crate) fn take_parts(&self) -> Option<Arc<Parts>> {
        self.parts.lock().take()
    }

    /// New -> Active at the end of init, unless a `shutdown` came first: then false, and the
    /// node stays shutting down (init undoes itself).
    pub(crate) fn activate(&self) -> bool {
        let mut st = self.state.lock();
        if *st != Lifecycle::New {
            return false;
        }
        self.active
            .store(true, std::sync::atomic::Ordering::Release);
        *st = Lifecycle::Active;
        true
    }

    /// Moves the lifecycle, keeping `active` in step. Lock order: state -> (nothing).
    pub(crate) fn set_state(&self, next: Lifecycle) {
        let mut st = self.state.lock();
        self.active.store(
            next == Lifecycle::Active,
            std::sync::atomic::Ordering::Release,
        );
        *st = next;
    }
}

/// One peer of one replication group. Cheap to clone; clones are the same node.
#[derive(Clone)]
pub struct Node {
    shared: Arc<NodeShared>,
}

impl Node {
    /// A node for `peer` in `group`, not yet started: call [`Node::init`].
    pub fn new(group: GroupId, peer: PeerId) -> Node {
        let logger = crate::logging::node_logger(&crate::logging::default_logger(), &group, &peer);
        Node {
            shared: Arc::new(NodeShared {
                group,
                peer,
                default_logger: logger,
                custom_logger: OnceLock::new(),
                state: Mutex::new(Lifecycle::New),
                joined: Condvar::new(),
                shut_down: Mutex::new(false),
                joining: std::sync::atomic::AtomicBool::new(false),
                core: Mutex::new(None),
                events: OnceLock::new(),
                parts: Mutex::new(None),
                limits: OnceLock::new(),
                active: std::sync::atomic::AtomicBool::new(false),
                unsynced_bytes: std::sync::atomic::AtomicUsize::new(0),
                trace: Mutex::new(Vec::new()),
                pending_applies: std::sync::atomic::AtomicUsize::new(0),
                incoming: incoming::Incoming::default(),
                leader: Mutex::new(None),
            }),
        }
    }

    /// The group.
    pub fn group(&self) -> &GroupId {
        &self.shared.group
    }

    /// This peer.
    pub fn peer(&self) -> PeerId {
        self.shared.peer
    }

    /// The leader this node knows of, if any (none once it stopped or failed).
    pub fn leader_id(&self) -> Option<PeerId> {
        if !self
            .shared
            .active
            .load(std::sync::atomic::Ordering::Acquire)
        {
            return None;
        }
        *self.shared.leader.lock()
    }

    /// True while this node leads its group (never once it stopped or entered its error
    /// state: it then serves nothing, whatever its core last decided).
    pub fn is_leader(&self) -> bool {
        self.shared
            .active
            .load(std::sync::atomic::Ordering::Acquire)
            && self.shared.with_core(|c| c.role() == Role::Leader) == Some(true)
    }

    /// The current term.
    pub fn term(&self) -> u64 {
        self.shared.with_core(|c| c.term()).unwrap_or(0)
    }

    /// The init steps as they ran, in order (DESIGN.md section 4).
    pub fn init_trace(&self) -> Vec<InitStep> {
        self.shared.trace.lock().clone()
    }

    /// Stops the node: timers, replicators and queues stop; tasks not yet committed fail
    /// with `Stopped` (committed ones are applied and complete with their response first);
    /// the state machine gets `on_shutdown`. Returns at once; [`Node::join`] waits for the
    /// end. Idempotent.
    pub fn shutdown(&self) {
        lifecycle::shutdown(&self.shared);
    }

    /// Waits until [`Node::shutdown`] has finished: every queue drained and stopped, the
    /// data directory unlocked (so a new node can be initialized from it). Call it from a
    /// thread of your own, not from a state machine callback.
    pub fn join(&self) {
        lifecycle::join(&self.shared);
    }

    /// Saves a snapshot of the state machine now and compacts the log behind it (keeping
    /// `snapshot_log_margin` entries); `done` gets the outcome. A request made while a save
    /// runs completes with that save.
    pub fn snapshot(&self, done: impl FnOnce(Result<()>) + Send + 'static) {
        if let Err(e) = active(&self.shared) {
            return done(Err(e));
        }
        self.shared.submit(NodeEvent::Snapshot(Box::new(done)));
    }

    /// [`Node::snapshot`], waiting for the outcome.
    pub fn snapshot_wait(&self) -> Result<()> {
        let (tx, rx) = crossbeam::channel::bounded(1);
        self.snapshot(move |r| {
            let _ = tx.send(r);
        });
        rx.recv().unwrap_or(Err(RaftError::Stopped))
    }

    /// The node's error, if it entered its error state.
    pub fn error(&self) -> Option<RaftError> {
        match &*self.shared.state.lock() {
            Lifecycle::Error(e) => Some(e.clone()),
            _ => None,
        }
    }

    pub(crate) fn shared(&self) -> &Arc<NodeShared> {
        &self.shared
    }

    pub(crate) fn from_shared(shared: Arc<NodeShared>) -> Node {
        Node { shared }
    }
}

impl std::fmt::Debug for Node {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Node({} {})", self.shared.group, self.shared.peer)
    }
}

impl Node {
    /// Answers a FileService `GetFile` for this node's snapshot (on its snapshot queue).
    pub(crate) fn serve_file(&self, req: crate::rpc::Request) {
        match self.shared.parts() {
            Some(parts) => {
                if let Err(rejected) = parts.snapshot_io.submit(install::SnapshotIo::Serve(req)) {
                    if let install::SnapshotIo::Serve(req) = rejected.item {
                        req.responder.respond(Err(rejected.error));
                    }
                }
            }
            None => req.responder.respond(Err(RaftError::Stopped)),
        }
    }
}

/// Queues a RaftService body for its node (the node manager's routing, on an IO thread):
/// `Busy` when the node holds [`NodeOptions::incoming_bytes_max`] of unhandled messages.
pub(crate) fn deliver(shared: &NodeShared, body: bytes::Bytes) -> Result<()> {
    let max = shared
        .limits
        .get()
        .map_or(options::INCOMING_BYTES_MAX_DEFAULT, |l| {
            l.incoming_bytes_max
        });
    let permit = shared.incoming.admit(body.len(), max)?;
    shared.submit(NodeEvent::Rpc(body, permit));
    Ok(())
}

/// Result of checking that a call is allowed now.
pub(crate) fn active(shared: &NodeShared) -> Result<()> {
    match shared.refusal() {
        None => Ok(()),
        Some(e) => Err(e),
    }
}
