//! The node's serial queue (raft pool): [`NodeEvent`]s in, one core step each, actions carried
//! out after the core lock is released.
//!
//! Consecutive `Apply` events in one drained batch become one proposal (one core step, one
//! log append), which is where the apply path batches. Actions are carried out in the order
//! the core gave them; those that do IO only enqueue it (disk queue, meta queue, replicator
//! queues, the transport), so a step never blocks this thread on a disk or a socket.

use std::collections::HashMap;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Weak};
use std::time::Duration;

use bytes::Bytes;

use super::apply::Task;
use super::init::Parts;
use super::install::SnapshotIo;
use super::timers::now_ms;
use super::wire::{self, Envelope};
use super::{Lifecycle, NodeShared};
use crate::core::message::Message;
use crate::core::{Action, Event, HardState, Role, TimerKind};
use crate::error::RaftError;
use crate::exec_queue::Batch;
use crate::fsm_caller::ReadDone;
use crate::snapshot::SnapshotMeta;
use crate::state_machine::{fail_each, Done, LeaderChangeContext};
use crate::types::{Configuration, EntryType, LogEntry, LogId, PeerId};

/// How long a one-way Raft message may wait for its transport acknowledgement before the
/// peer is reported unreachable to the core.
pub(crate) const SEND_TIMEOUT: Duration = Duration::from_secs(5);

/// One input to the node's serial queue.
pub(crate) enum NodeEvent {
    /// Init finished: start the core.
    Start,
    /// A user task to propose.
    Apply(Task),
    /// A RaftService body addressed to this node, holding its bytes in the node's budget of
    /// incoming messages until handled.
    Rpc(Bytes, super::incoming::IncomingPermit),
    /// A core timer fired.
    Timeout(TimerKind),
    /// The log write ending at this LogId is durable.
    LogDurable(LogId),
    /// Term and vote are durable.
    HardStatePersisted(HardState),
    /// The transport could not deliver to this peer.
    PeerUnreachable(PeerId),
    /// The snapshot timer fired.
    SnapshotTick,
    /// A user asked for a snapshot.
    Snapshot(Done),
    /// A snapshot save finished.
    SnapshotSaved(crate::Result<SnapshotMeta>),
    /// A snapshot install ordered by the core ended (its last entry, and whether it worked).
    SnapshotInstalled(LogId, bool),
    /// A copied snapshot was loaded into the state machine: the log restarts after it, then
    /// the core is told. A failed load (or log reset) puts the node in its error state.
    InstallLoaded(LogId, Configuration, crate::Result<()>),
    /// A linearizable read.
    Read(ReadDone),
    /// A leader transfer to this peer.
    Transfer(PeerId, Done),
    /// A configuration change.
    ChangePeers(PeerChange, Done),
    /// A configuration forced without consensus (braft's `reset_peers`).
    ResetPeers(Configuration, Done),
    /// A new election timeout and drift bound (validated by the caller).
    SetElectionTimeout(u64, u64),
    /// A component failed fatally: enter the error state.
    Fatal(RaftError),
}

/// A configuration change, resolved against the effective configuration when the node's
/// queue takes it (so that `add_peer` and `remove_peer` never undo a concurrent change).
#[derive(Clone, Debug)]
pub(crate) enum PeerChange {
    /// Move to exactly this configuration.
    Set(Configuration),
    /// Add a voter.
    AddVoter(PeerId),
    /// Add a learner.
    AddLearner(PeerId),
    /// Remove a voter or learner.
    Remove(PeerId),
}

impl PeerChange {
    /// The stable configuration this change leads to from `current`.
    fn target(&self, current: &Configuration) -> crate::Result<Configuration> {
        let mut voters = current.voters().clone();
        let mut learners = current.learners().clone();
        match self {
            PeerChange::Set(conf) => return Ok(conf.clone()),
            PeerChange::AddVoter(p) => {
                learners.remove(p);
                voters.insert(*p);
            }
            PeerChange::AddLearner(p) => {
                voters.remove(p);
                learners.insert(*p);
            }
            PeerChange::Remove(p) => {
                voters.remove(p);
                learners.remove(p);
            }
        }
        Configuration::from_parts(voters, learners, Default::default())
    }
}

impl NodeEvent {
    /// Completes whatever the event carries for a user with `error` (the queue refused it).
    pub(crate) fn fail(self, error: &RaftError) {
        match self {
            NodeEvent::Apply(task) => task.fail(error.clone()),
            NodeEvent::Snapshot(done)
            | NodeEvent::Transfer(_, done)
            | NodeEvent::ChangePeers(_, done)
            | NodeEvent::ResetPeers(_, done) => done(Err(error.clone())),
            NodeEvent::Read(done) => done(Err(error.clone())),
            _ => {}
        }
    }
}

/// What the action being carried out may refer to.
enum Ctx<'a> {
    None,
    /// The entries of the AppendEntries just stepped.
    Received(&'a [LogEntry]),
    /// The tasks of the proposal just stepped.
    Proposals(&'a mut Vec<Task>),
}

/// What the node's queue keeps between batches (scratch buffers and snapshot progress).
/// It holds no reference to the node: the queue that owns it is owned by the node.
#[derive(Default)]
pub(crate) struct ShellState {
    /// Reused between steps.
    actions: Vec<Action>,
    /// `Apply` events collected from the current batch.
    proposals: Vec<Task>,
    /// Completions of snapshot requests waiting for the save in progress.
    saving: Vec<Done>,
    snapshot_running: bool,
    /// `Read` events collected from the current batch (one ReadIndex for all of them).
    reads: Vec<ReadDone>,
    /// Read batches the core has not answered yet, by ctx.
    reads_asked: HashMap<u64, Vec<ReadDone>>,
    /// Transfers the core has not answered yet, by ctx.
    transfers: HashMap<u64, Done>,
    /// Configuration changes the core has not answered yet, by ctx.
    changes: HashMap<u64, Done>,
    /// Names read batches and configuration changes.
    next_ctx: u64,
}

impl ShellState {
    /// Fails every request still waiting on the core.
    /// Fails every waiting read, transfer, membership change and snapshot request, each even
    /// if another's completion panics.
    fn fail_requests(&mut self, error: &RaftError) {
        let reads = self
            .reads
            .drain(..)
            .chain(self.reads_asked.drain().flat_map(|(_, v)| v));
        fail_each(reads, error);
        fail_each(self.transfers.drain().map(|(_, d)| d), error);
        fail_each(self.changes.drain().map(|(_, d)| d), error);
        fail_each(self.saving.drain(..), error);
    }
}

/// The consumer of the node's queue: the only place the core is stepped. Lives for one
/// drained batch.
pub(crate) struct Shell<'a> {
    shared: &'a Arc<NodeShared>,
    st: &'a mut ShellState,
}

/// Handles one drained batch of the node's queue.
pub(crate) fn run_batch(
    weak: &Weak<NodeShared>,
    st: &mut ShellState,
    batch: &mut Batch<'_, NodeEvent>,
) {
    let Some(shared) = weak.upgrade() else {
        return batch.for_each(|ev| ev.fail(&RaftError::Stopped));
    };
    let mut shell = Shell {
        shared: &shared,
        st,
    };
    shell.run(batch);
}

impl Shell<'_> {
    fn run(&mut self, batch: &mut Batch<'_, NodeEvent>) {
        if batch.is_stopped() {
            let stopped = RaftError::Stopped;
            let proposed = self.st.proposals.drain(..).filter_map(|t| t.into_parts().1);
            fail_each(proposed, &stopped);
            self.st.fail_requests(&stopped);
            return;
        }
        let Some(parts) = self.shared.parts() else {
            // Init has not assembled the node yet, or join took it apart.
            batch.for_each(|ev| ev.fail(&RaftError::Stopped));
            return;
        };
        // User completions (transfers, membership changes, refused reads and tasks) run on
        // this queue. A panic in one, or a bug, would leave the core's remaining actions of
        // that event undone and the node stalled for good: it enters the error state instead
        // (DESIGN section 7), and the rest of the batch is failed, not dropped unanswered.
        let events = catch_unwind(AssertUnwindSafe(|| self.run_events(&parts, batch)));
        if events.is_err() {
            let error = RaftError::ErrorState {
                reason: "a callback panicked on the node's queue".into(),
            };
            self.enter_error(&parts, error.clone());
            batch.for_each(|ev| ev.fail(&error));
        }
    }

    fn run_events(&mut self, parts: &Parts, batch: &mut Batch<'_, NodeEvent>) {
        for ev in batch {
            match ev {
                NodeEvent::Apply(task) => self.st.proposals.push(task),
                NodeEvent::Read(done) => self.st.reads.push(done),
                other => {
                    self.flush_proposals(parts);
                    self.flush_reads(parts);
                    self.handle(parts, other);
                }
            }
        }
        self.flush_proposals(parts);
        self.flush_reads(parts);
        let unsynced = parts.log.unsynced_bytes();
        self.shared
            .unsynced_bytes
            .store(unsynced, Ordering::Relaxed);
    }

    fn handle(&mut self, parts: &Parts, ev: NodeEvent) {
        if let Some(error) = self.shared.refusal() {
            return ev.fail(&error);
        }
        match ev {
            NodeEvent::Apply(task) => self.st.proposals.push(task),
            NodeEvent::Start => self.start_core(parts),
            NodeEvent::Rpc(body, _permit) => self.handle_rpc(parts, body),
            NodeEvent::Timeout(kind) => self.step(parts, Event::Timeout(kind), Ctx::None),
            NodeEvent::LogDurable(id) => self.step(parts, Event::LogDurable(id), Ctx::None),
            NodeEvent::HardStatePersisted(hs) => {
                self.step(parts, Event::HardStatePersisted(hs), Ctx::None)
            }
            NodeEvent::PeerUnreachable(p) => self.step(parts, Event::PeerUnreachable(p), Ctx::None),
            NodeEvent::SnapshotTick => self.start_snapshot(parts, None),
            NodeEvent::Snapshot(done) => self.start_snapshot(parts, Some(done)),
            NodeEvent::SnapshotSaved(result) => self.finish_snapshot(parts, result),
            NodeEvent::SnapshotInstalled(last, ok) => {
                self.step(parts, Event::SnapshotInstalled { last, ok }, Ctx::None)
            }
            NodeEvent::InstallLoaded(last, conf, result) => {
                // The snapshot is durable and loaded: the log restarts after it (a crash
                // before this reset is durable redoes it at init step 8).
                // A failed load leaves the state machine half-replaced and a failed log
                // reset is a disk error: either way this node's state is no longer one the
                // log describes, so it stops serving (braft's set_error on load failure).
                match result.and_then(|_| parts.log.set_snapshot(last, conf)) {
                    Ok(()) => self.step(
                        parts,
                        Event::SnapshotInstalled { last, ok: true },
                        Ctx::None,
                    ),
                    Err(e) => self.enter_error(parts, e),
                }
            }
            NodeEvent::Read(done) => self.st.reads.push(done),
            NodeEvent::Transfer(to, done) => {
                self.st.next_ctx += 1;
                let ctx = self.st.next_ctx;
                self.st.transfers.insert(ctx, done);
                self.step(parts, Event::TransferLeader { ctx, to }, Ctx::None);
            }
            NodeEvent::ChangePeers(change, done) => self.change_peers(parts, change, done),
            NodeEvent::SetElectionTimeout(t, drift) => {
                let ev = Event::SetElectionTimeout {
                    election_timeout_ms: t,
                    max_clock_drift_ms: drift,
                };
                self.step(parts, ev, Ctx::None);
            }
            NodeEvent::ResetPeers(conf, done) => {
                self.st.next_ctx += 1;
                let ctx = self.st.next_ctx;
                self.st.changes.insert(ctx, done);
                let ev = Event::ResetConfiguration { ctx, conf: &conf };
                self.step(parts, ev, Ctx::None);
            }
            NodeEvent::Fatal(error) => self.enter_error(parts, error),
        }
    }

    /// Asks the core to confirm the collected reads with one ReadIndex.
    fn flush_reads(&mut self, parts: &Parts) {
        if self.st.reads.is_empty() {
            return;
        }
        let reads = std::mem::take(&mut self.st.reads);
        if let Some(error) = self.shared.refusal() {
            return reads.into_iter().for_each(|d| d(Err(error.clone())));
        }
        self.st.next_ctx += 1;
        let ctx = self.st.next_ctx;
        self.st.reads_asked.insert(ctx, reads);
        self.step(parts, Event::ReadIndex { ctx }, Ctx::None);
    }

    fn change_peers(&mut self, parts: &Parts, change: PeerChange, done: Done) {
        let current = self.shared.with_core(|c| c.configuration().clone());
        let target = match current.map(|c| change.target(&c)) {
            Some(Ok(t)) => t,
            Some(Err(e)) => return done(Err(e)),
            None => return done(Err(RaftError::Stopped)),
        };
        self.st.next_ctx += 1;
        let ctx = self.st.next_ctx;
        self.st.changes.insert(ctx, done);
        let ev = Event::ChangeConfiguration {
            ctx,
            target: &target,
        };
        self.step(parts, ev, Ctx::None);
    }

    fn handle_rpc(&mut self, parts: &Parts, body: Bytes) {
        let inbound = match wire::decode(&body) {
            Ok(m) => m,
            Err(e) => {
                let log = &self.shared.logger();
                slog::warn!(log, "dropped an undecodable raft message"; "error" => %e);
                return;
            }
        };
        let env = &inbound.envelope;
        if env.group != self.shared.group || env.to != self.shared.peer {
            slog::warn!(self.shared.logger(), "dropped a misdirected raft message";
                "group" => %env.group, "to" => %env.to);
            return;
        }
        let ev = Event::Message {
            from: env.from,
            msg: &inbound.msg,
        };
        self.step(parts, ev, Ctx::Received(&inbound.entries));
    }

    /// Proposes the collected tasks as one batch.
    fn flush_proposals(&mut self, parts: &Parts) {
        if self.st.proposals.is_empty() {
            return;
        }
        let mut tasks = std::mem::take(&mut self.st.proposals);
        let n = tasks.len();
        self.shared.pending_applies.fetch_sub(n, Ordering::AcqRel);
        if let Some(error) = self.shared.refusal() {
            tasks.drain(..).for_each(|t| t.fail(error.clone()));
        } else {
            let term = self.shared.with_core(|c| c.term()).unwrap_or(0);
            tasks.retain_mut(|t| t.check_expected_term(term));
            if !tasks.is_empty() {
                let count = tasks.len() as u64;
                self.step(parts, Event::Propose { count }, Ctx::Proposals(&mut tasks));
            }
            // Tasks the core did not take (neither appended nor rejected) cannot exist; fail
            // any left so no completion is lost.
            tasks.drain(..).for_each(|t| t.fail(RaftError::Stopped));
        }
        self.st.proposals = tasks;
    }

    /// Steps the core with `ev` and carries out the resulting actions.
    fn step(&mut self, parts: &Parts, ev: Event<'_>, mut ctx: Ctx<'_>) {
        let leader;
        {
            let mut guard = self.shared.core.lock();
            let Some(core) = guard.as_mut() else {
                return;
            };
            self.st.actions.extend(core.step(now_ms(), ev).drain());
            leader = core.leader();
        }
        self.shared.note_leader(leader);
        let mut actions = std::mem::take(&mut self.st.actions);
        for action in actions.drain(..) {
            self.execute(parts, action, &mut ctx);
        }
        self.st.actions = actions;
    }

    /// Starts the core (init steps 15 and 17, run here so that every step of the core
    /// happens on this queue) and carries out its first actions.
    fn start_core(&mut self, parts: &Parts) {
        {
            let mut guard = self.shared.core.lock();
            let Some(core) = guard.as_mut() else {
                return;
            };
            self.st.actions.extend(core.start(now_ms()).drain());
            self.shared.note_leader(core.leader());
        }
        let mut actions = std::mem::take(&mut self.st.actions);
        for action in actions.drain(..) {
            self.execute(parts, action, &mut Ctx::None);
        }
        self.st.actions = actions;
    }

    fn execute(&mut self, parts: &Parts, action: Action, ctx: &mut Ctx<'_>) {
        let res = match action {
            Action::PersistHardState(hs) => parts.persist_hard_state(hs),
            Action::TruncateLog { after } => parts.log.truncate_suffix(after),
            Action::AppendReceived { range } => match ctx {
                Ctx::Received(entries) => parts.log.append_entries(entries[range].to_vec()),
                _ => Err(RaftError::invalid(
                    "AppendReceived outside an AppendEntries step",
                )),
            },
            Action::AppendProposals { first_index, last } => match ctx {
                Ctx::Proposals(tasks) => self.append_proposals(parts, tasks, first_index, last),
                _ => Err(RaftError::invalid(
                    "AppendProposals outside a proposal step",
                )),
            },
            Action::AppendNoOp(id) => {
                let noop = LogEntry::new(id, EntryType::NoOp, Bytes::new());
                parts.log.append_entries(vec![noop])
            }
            Action::RejectProposals { error, .. } => {
                if let Ctx::Proposals(tasks) = ctx {
                    tasks.drain(..).for_each(|t| t.fail(error.clone()));
                }
                Ok(())
            }
            Action::Send { to, msg } => {
                self.send(parts, to, &msg);
                Ok(())
            }
            Action::SendAppend { to, send } => {
                parts.replicators.send(to, send);
                Ok(())
            }
            Action::Committed { last_index, .. } => {
                parts.log.set_committed_index(last_index);
                parts.fsm.on_committed(last_index)
            }
            Action::RoleChanged { role, term, leader } => {
                self.role_changed(parts, role, term, leader);
                Ok(())
            }
            Action::SetTimer { timer, at_ms } => {
                parts.timers.set(timer, at_ms);
                Ok(())
            }
            Action::StopTimer(timer) => {
                parts.timers.stop(timer);
                Ok(())
            }
            other => self.answer(parts, other),
        };
        if let Err(e) = res {
            self.enter_error(parts, e);
        }
    }

    /// Carries out the actions that answer requests or change the log's extent.
    fn answer(&mut self, parts: &Parts, action: Action) -> crate::Result<()> {
        match action {
            Action::AppendConfiguration { id, conf } => {
                let mut data = Vec::new();
                conf.encode(&mut data);
                let entry = LogEntry::new(id, EntryType::Configuration, Bytes::from(data));
                return parts.log.append_entries(vec![entry]);
            }
            Action::ReadReady { ctx, index } => {
                let dones = self.st.reads_asked.remove(&ctx).unwrap_or_default();
                parts.fsm.read_when_applied(index, dones);
            }
            Action::RejectRead { ctx, error } => {
                let dones = self.st.reads_asked.remove(&ctx).unwrap_or_default();
                dones.into_iter().for_each(|d| d(Err(error.clone())));
            }
            Action::TransferDone { ctx, result, .. } => {
                if let Some(done) = self.st.transfers.remove(&ctx) {
                    done(result);
                }
            }
            Action::ConfChangeDone { ctx, result } => {
                if let Some(done) = self.st.changes.remove(&ctx) {
                    done(result);
                }
            }
            Action::CompactLog { upto } => {
                if upto >= parts.log.first_log_index() {
                    return parts.log.truncate_prefix(upto + 1);
                }
            }
            Action::InstallSnapshot { from, last, conf } => {
                self.install_snapshot(parts, from, last, conf);
            }
            other => {
                return Err(RaftError::invalid(format!("unexpected action {other:?}")));
            }
        }
        Ok(())
    }

    /// Appends the proposed tasks as entries `first_index..=last.index` and registers their
    /// completions; a failed append fails them.
    fn append_proposals(
        &mut self,
        parts: &Parts,
        tasks: &mut Vec<Task>,
        first_index: u64,
        last: LogId,
    ) -> crate::Result<()> {
        debug_assert_eq!(last.index + 1 - first_index, tasks.len() as u64);
        let mut entries = Vec::with_capacity(tasks.len());
        for (i, task) in tasks.drain(..).enumerate() {
            let id = LogId::new(first_index + i as u64, last.term);
            let (data, done) = task.into_parts();
            if let Some(done) = done {
                parts.closures.push(id, done);
            }
            entries.push(LogEntry::new(id, EntryType::Data, data));
        }
        parts.log.append_entries(entries)
    }

    fn send(&self, parts: &Parts, to: PeerId, msg: &Message) {
        let env = Envelope {
            group: self.shared.group.clone(),
            from: self.shared.peer,
            to,
        };
        let method = wire::method_of(msg);
        let weak = Arc::downgrade(self.shared);
        parts.server.call(
            &parts.caller,
            to.addr(),
            method,
            wire::encode_message(&env, msg),
            SEND_TIMEOUT,
            move |res| {
                if res.is_err() {
                    if let Some(shared) = weak.upgrade() {
                        shared.submit(NodeEvent::PeerUnreachable(to));
                    }
                }
            },
        );
    }

    fn role_changed(&mut self, parts: &Parts, role: Role, term: u64, leader: Option<PeerId>) {
        let was_leader = parts.replicators.is_active();
        let log = &self.shared.logger();
        slog::info!(log, "role changed"; "role" => ?role, "term" => term, "leader" => ?leader);
        if role == Role::Leader && !was_leader {
            let peers = self.shared.with_core(|c| c.configuration().all_peers());
            parts.replicators.start(term, peers.unwrap_or_default());
            let _ = parts.fsm.on_leader_start(term);
        } else if role != Role::Leader && was_leader {
            parts.replicators.stop();
            self.shared
                .fail_uncommitted(&parts.closures, &RaftError::NotLeader { leader });
            let _ = parts.fsm.on_leader_stop(RaftError::NotLeader { leader });
        }
        let following = role == Role::Follower && leader.is_some();
        parts.follow(following.then_some(LeaderChangeContext {
            leader,
            term,
            reason: None,
        }));
    }

    fn start_snapshot(&mut self, parts: &Parts, done: Option<Done>) {
        let Some(storage) = parts.snapshots.clone() else {
            if let Some(done) = done {
                done(Err(RaftError::NotSupported {
                    what: "snapshots (no snapshot storage)",
                }));
            }
            return;
        };
        self.st.saving.extend(done);
        if self.st.snapshot_running {
            return;
        }
        self.st.snapshot_running = true;
        let weak = Arc::downgrade(self.shared);
        parts.fsm.save_snapshot(crate::fsm_caller::SaveRequest {
            storage,
            done: Box::new(move |r| {
                if let Some(shared) = weak.upgrade() {
                    shared.submit(NodeEvent::SnapshotSaved(r));
                }
            }),
        });
    }

    fn finish_snapshot(&mut self, parts: &Parts, result: crate::Result<SnapshotMeta>) {
        self.st.snapshot_running = false;
        let result = result.and_then(|meta| {
            parts
                .log
                .set_snapshot(meta.last_included, meta.conf.clone())
                .map(|_| meta)
        });
        match &result {
            Ok(meta) => {
                slog::info!(self.shared.logger(), "snapshot saved";
                    "last_included" => %meta.last_included);
                // The core decides how much of the log the snapshot lets go (CompactLog).
                let ev = Event::SnapshotSaved {
                    last: meta.last_included,
                    conf: &meta.conf,
                };
                self.step(parts, ev, Ctx::None);
            }
            Err(e) => slog::warn!(self.shared.logger(), "snapshot failed"; "error" => %e),
        }
        let waiting = std::mem::take(&mut self.st.saving);
        match &result {
            Ok(_) => waiting.into_iter().for_each(|done| done(Ok(()))),
            Err(e) => {
                fail_each(waiting, e);
                // A failed sync is fatal (DESIGN section 5): never retried and then trusted.
                if e.is_sync_failure() {
                    self.enter_error(parts, e.clone());
                }
            }
        }
    }

    /// Follower: the core accepted the leader's offer of the snapshot ending at `last`; the
    /// snapshot queue copies it (`install.rs`).
    fn install_snapshot(&mut self, parts: &Parts, from: PeerId, last: LogId, conf: Configuration) {
        let start = SnapshotIo::Start { from, last, conf };
        if parts.snapshot_io.submit(start).is_err() {
            self.shared
                .submit(NodeEvent::SnapshotInstalled(last, false));
        }
    }

    /// Enters the error state: the node stops taking part (timers, replication), fails what
    /// waits, and tells the state machine. Only shutdown follows.
    pub(crate) fn enter_error(&mut self, parts: &Parts, error: RaftError) {
        {
            let mut state = self.shared.state.lock();
            match &*state {
                Lifecycle::Active => {
                    *state = Lifecycle::Error(error.clone());
                    self.shared.active.store(false, Ordering::Release);
                }
                _ => return,
            }
        }
        slog::error!(self.shared.logger(), "node enters its error state"; "error" => %error);
        parts.timers.stop_all();
        if let Some(t) = &parts.snapshot_timer {
            t.stop();
        }
        parts.replicators.stop();
        let failure = RaftError::ErrorState {
            reason: error.to_string(),
        };
        let proposed = self.st.proposals.drain(..).filter_map(|t| t.into_parts().1);
        fail_each(proposed, &failure);
        // The state machine gets on_error after the committed entries it still applies.
        self.shared.fail_uncommitted(&parts.closures, &failure);
        self.st.fail_requests(&failure);
        let _ = parts.fsm.on_error(error);
    }
}
