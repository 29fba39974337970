//! The Raft protocol as a pure state machine ([`RaftCore`]): election with pre-vote and
//! check-quorum, replication with per-follower progress, commit by the ballot rules, leases,
//! linearizable reads (ReadIndex and lease reads), leader transfer, membership changes by
//! joint consensus with learners, and the snapshot decisions (compaction, offering a snapshot
//! to a follower that needs compacted entries, accepting or refusing one).
//!
//! It owns no thread, clock, socket or file. The node runs it on its serial queue on the raft
//! pool: one [`RaftCore::step`] per event, under the node mutex, then carries out the returned
//! [`Actions`] after releasing it. It must never block, never read the shell's log during a
//! step, and never allocate per event on the hot path (proposals, appends, acknowledgements).
//!
//! # The contract with the shell
//! - **Construction.** [`RaftCore::new`] takes the restored term/vote, configuration and applied
//!   index, and reads the (durable) log's shape once through [`LogRead`]. Then
//!   [`RaftCore::start`] gives the first actions (timers; a lone voter elects itself at once).
//! - **Events** ([`Event`]) carry no time; the time is the `now_ms` argument, a monotonic
//!   millisecond count. Randomness (election jitter) comes from the injected [`Rng`].
//! - **Timers.** The core keeps its own deadlines and tells the shell, with
//!   [`Action::SetTimer`]/[`Action::StopTimer`], when to wake it; the shell keeps one one-shot
//!   timer per [`TimerKind`] and steps [`Event::Timeout`] when it fires. A firing that is early,
//!   late, duplicated or stale is harmless. A follower does not re-arm its election timer on
//!   every heartbeat: it remembers the contact and, when the timer fires, re-arms it for the
//!   rest of the timeout (one timer action per timeout, as braft's lease check does).
//! - **Log.** The core assigns every LogId and decides every truncation (never at or below the
//!   commit index); the shell's LogManager carries the decisions out in order and reports each
//!   write's durability ([`Event::LogDurable`], with the write's last LogId).
//! - **Durability before promises.** Term and vote go out as [`Action::PersistHardState`].
//!   Every message produced while the current term/vote is not yet reported durable waits in
//!   the core's outbox; an AppendEntries acknowledgement also waits until the acknowledged
//!   entries are durable; a candidate counts its own vote only once it is durable. So the shell
//!   may send and persist in any order without ever promising what is not on disk. The leader
//!   sends its new entries before its own sync (as etcd does); they count for its own vote only
//!   after [`Event::LogDurable`].
//! - **Committed entries** are handed out once, in order ([`Action::Committed`]), except
//!   those an installed snapshot replaced.
//! - **Requests** (reads, transfers, configuration changes) are answered exactly once each,
//!   by the action their event names.

mod conf_change;
mod election;
mod event;
mod follower;
mod invariants;
mod log_view;
mod membership;
pub mod message;
mod options;
mod progress;
mod read;
mod replication;
mod snapshot;
mod timers;
mod transfer;

use std::collections::{BTreeMap, VecDeque};

use slog::Logger;

use crate::ballot_box::Ballot;
use crate::error::{RaftError, Result};
use crate::lease::{FollowerLease, LeaderLease};
use crate::types::{Configuration, LogId, LogRead, PeerId, Rng};
use conf_change::ConfChange;
use log_view::LogView;
use membership::Membership;
use message::Message;
use read::PendingRead;
use snapshot::Installing;
use timers::Timers;
use transfer::Transfer;

pub use event::{Action, Actions, AppendSend, Event, HardState, Role, TimerKind};
#[cfg(any(test, feature = "sim"))]
pub use options::BugSwitches;
pub use options::{CoreOptions, ELECTION_TIMEOUT_MAX_MS};
pub use progress::{Inflights, Progress, ProgressState};

/// What a peer restored from its disk before its core starts (DESIGN.md section 4, steps
/// 8-11).
#[derive(Clone, Debug, Default)]
pub struct InitialState {
    /// Term and vote from the meta storage.
    pub hard_state: HardState,
    /// The configurations known, oldest first, by log index: the one in force before the
    /// log's first entry (the snapshot's at its index, or the initial one at index 0), then
    /// every configuration entry of the log. The newest is in force; the others are kept
    /// because an uncommitted configuration entry may still be truncated.
    pub configurations: Vec<(u64, Configuration)>,
    /// The index the state machine has applied (entries up to it are committed).
    pub applied_index: u64,
    /// The last entry of the newest durable snapshot (`(0, 0)` when there is none). The log
    /// starts at or before `snapshot.index + 1`.
    pub snapshot: LogId,
    /// The configuration in force at `snapshot` (empty when there is none).
    pub snapshot_conf: Configuration,
}

/// An AppendEntries acknowledgement waiting for its entries to be durable.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct PendingAck {
    to: PeerId,
    /// The highest index the acknowledged requests matched.
    index: u64,
    /// The newest `sent_ms` among them, echoed to the leader.
    sent_ms: u64,
    /// The highest read round among them, echoed to the leader.
    round: u64,
}

/// One peer's Raft protocol state. See the module documentation for the contract.
pub struct RaftCore {
    opts: CoreOptions,
    logger: Logger,
    rng: Rng,
    /// The time of the current step. Invariant: never decreases.
    now_ms: u64,

    /// Invariant: never decreases; moved by `become_candidate` and higher terms heard.
    term: u64,
    /// Invariant: `Some(self)` while candidate or leader; within a term it only goes from
    /// `None` to `Some`.
    voted_for: Option<PeerId>,
    /// The newest term/vote reported durable. Invariant: never ahead of `(term, voted_for)`.
    persisted: HardState,
    /// Sends produced while `(term, voted_for)` was not durable. Invariant: empty whenever
    /// `persisted == (term, voted_for)`.
    outbox: Vec<Action>,

    role: Role,
    /// Invariant: `Some(self)` exactly while leader.
    leader: Option<PeerId>,
    membership: Membership,
    log: LogView,
    /// The last index handed out in [`Action::Committed`]. Invariant: equals the commit index
    /// after every step.
    handed_index: u64,

    /// The votes of the current (pre-)election round; empty outside one.
    ballot: Ballot,
    /// Leader only: one entry per other peer of the configuration. Invariant: empty unless
    /// leader.
    progress: BTreeMap<PeerId, Progress>,
    /// The keys of `progress`, in order, so loops over followers need no allocation.
    peer_ids: Vec<PeerId>,
    follower_lease: FollowerLease,
    leader_lease: LeaderLease,
    /// Follower: the highest index known to match the current leader's log. Invariant:
    /// `<= log.last_index()`; reset when the term changes.
    leader_match_index: u64,
    /// Follower: the acknowledgement waiting for durability.
    pending_ack: Option<PendingAck>,
    timers: Timers,
    /// (role, term, leader) last reported with [`Action::RoleChanged`].
    reported: Option<(Role, u64, Option<PeerId>)>,
    actions: Actions,
    /// Reused by quorum computations.
    scratch: Vec<u64>,

    /// The newest durable snapshot and its configuration. Invariant: `log.base().index <=
    /// snapshot.index <= commit index`.
    snapshot: LogId,
    snapshot_conf: Configuration,
    /// Follower: the snapshot being installed. Invariant: `Some` only while follower; while
    /// `Some` the log and the commit index do not change and the peer does not campaign.
    installing: Option<Installing>,
    /// Leader: reads waiting for a quorum round, oldest first. Invariant: empty unless
    /// leader; rounds non-decreasing.
    reads: VecDeque<PendingRead>,
    /// Leader: reads waiting for the term's no-op to commit. Invariant: empty unless leader.
    reads_waiting: Vec<u64>,
    /// Leader: the current read round, echoed by followers. Invariant: never decreases
    /// within a term.
    read_round: u64,
    /// Leader: the lease may not be used for the rest of the term (a TimeoutNow was sent:
    /// voters now ignore their follower leases for the target).
    lease_void: bool,
    /// Leader: the transfer in progress. Invariant: `None` unless leader.
    transfer: Option<Transfer>,
    /// Leader: the configuration change in progress. Invariant: `None` unless leader.
    conf_change: Option<ConfChange>,
    /// This peer stepped down because a committed configuration removed it (only the
    /// `removed_peer_campaigns` bug switch reads it).
    removed: bool,
    /// The configuration was forced by `ResetConfiguration` and is in no log entry yet: the
    /// next time this peer leads, it appends it.
    conf_forced: bool,
}

impl RaftCore {
    /// A core over the restored state and the shape of `log`, which must be durable (the
    /// shell syncs what it recovered before starting the core).
    pub fn new(
        opts: CoreOptions,
        init: InitialState,
        log: &dyn LogRead,
        rng: Rng,
        logger: Logger,
    ) -> Result<RaftCore> {
        opts.validate()?;
        let applied = init.applied_index.max(init.snapshot.index);
        let log = LogView::from_log(log, applied)?;
        if log.base().index > init.snapshot.index {
            return Err(RaftError::invalid(format!(
                "the log starts after {} but the snapshot ends at {}",
                log.base(),
                init.snapshot
            )));
        }
        let handed_index = log.committed();
        #[cfg(any(test, feature = "sim"))]
        let no_drift = opts.bugs.lease_without_drift;
        #[cfg(not(any(test, feature = "sim")))]
        let no_drift = false;
        let drift_ms = if no_drift { 0 } else { opts.max_clock_drift_ms };
        Ok(RaftCore {
            follower_lease: FollowerLease::new(opts.election_timeout_ms),
            leader_lease: LeaderLease::new(opts.election_timeout_ms, drift_ms),
            timers: Timers::new(opts.election_timeout_ms),
            opts,
            logger,
            rng,
            now_ms: 0,
            term: init.hard_state.term,
            voted_for: init.hard_state.voted_for,
            persisted: init.hard_state,
            outbox: Vec::new(),
            role: Role::Follower,
            leader: None,
            membership: Membership::from_list(init.configurations)?,
            log,
            handed_index,
            ballot: Ballot::new(),
            progress: BTreeMap::new(),
            peer_ids: Vec::new(),
            leader_match_index: 0,
            pending_ack: None,
            reported: None,
            actions: Actions::default(),
            scratch: Vec::new(),
            snapshot: init.snapshot,
            snapshot_conf: init.snapshot_conf,
            installing: None,
            reads: VecDeque::new(),
            reads_waiting: Vec::new(),
            read_round: 0,
            lease_void: false,
            transfer: None,
            conf_change: None,
            removed: false,
            conf_forced: false,
        })
    }

    /// Starts the core at `now_ms`: a follower that refuses votes for one election timeout
    /// (its lease from before a restart may still be running), with its election timer armed;
    /// a configuration whose only voter is this peer elects itself at once.
    pub fn start(&mut self, now_ms: u64) -> &mut Actions {
        self.actions.clear();
        self.now_ms = now_ms;
        self.follower_lease.renew(now_ms);
        let conf = self.membership.effective();
        let alone = conf.is_stable() && conf.voters().len() == 1 && conf.is_voter(&self.opts.id);
        if alone {
            self.follower_lease.expire();
            self.become_candidate(false);
        } else if !conf.is_empty() {
            self.reset_election_timer();
        }
        self.report_role();
        &mut self.actions
    }

    /// Feeds one event at `now_ms`; returns the actions to carry out, in order.
    pub fn step(&mut self, now_ms: u64, event: Event<'_>) -> &mut Actions {
        self.actions.clear();
        debug_assert!(
            now_ms >= self.now_ms,
            "time went backwards: {now_ms} < {}",
            self.now_ms
        );
        self.now_ms = self.now_ms.max(now_ms);
        match event {
            Event::Timeout(kind) => self.handle_timeout(kind),
            Event::Message { from, msg } => self.handle_message(from, msg),
            Event::Propose { count } => self.handle_propose(count),
            Event::LogDurable(id) => self.handle_log_durable(id),
            Event::HardStatePersisted(hs) => self.handle_hard_state_persisted(hs),
            Event::PeerUnreachable(peer) => self.handle_unreachable(peer),
            Event::ReadIndex { ctx } => self.handle_read_index(ctx),
            Event::TransferLeader { ctx, to } => self.handle_transfer_leader(ctx, to),
            Event::ChangeConfiguration { ctx, target } => {
                self.handle_change_configuration(ctx, target)
            }
            Event::ResetConfiguration { ctx, conf } => self.handle_reset_configuration(ctx, conf),
            Event::SetElectionTimeout {
                election_timeout_ms,
                max_clock_drift_ms,
            } => self.handle_set_election_timeout(election_timeout_ms, max_clock_drift_ms),
            Event::SnapshotSaved { last, conf } => self.handle_snapshot_saved(last, conf),
            Event::SnapshotInstalled { last, ok } => self.handle_snapshot_installed(last, ok),
        }
        self.report_role();
        &mut self.actions
    }

    fn handle_message(&mut self, from: PeerId, msg: &Message) {
        if from == self.opts.id {
            slog::warn!(self.logger, "ignored a message from myself"; "term" => msg.term());
            return;
        }
        match msg {
            Message::VoteRequest(m) => self.handle_vote_request(from, m),
            Message::VoteResponse(m) => self.handle_vote_response(from, m),
            Message::AppendEntries(m) => self.handle_append_entries(from, m),
            Message::AppendEntriesResponse(m) => self.handle_append_response(from, m),
            Message::TimeoutNow(m) => self.handle_timeout_now(from, m),
            Message::InstallSnapshot(m) => self.handle_install_snapshot(from, m),
        }
    }

    fn handle_log_durable(&mut self, id: LogId) {
        if !self.log.on_durable(id) {
            return;
        }
        match self.role {
            Role::Leader => self.maybe_commit(),
            Role::Follower => self.maybe_send_ack(),
            Role::PreCandidate | Role::Candidate => {}
        }
    }

    fn handle_hard_state_persisted(&mut self, hs: HardState) {
        let current = self.hard_state();
        // A report is of a state we asked for (the current one, or one it replaced), and
        // newer than the last report: reports may skip states but never go backwards.
        let asked = is_at_or_before(&hs, &current);
        if !asked || !is_at_or_before(&self.persisted, &hs) {
            slog::warn!(self.logger, "ignored an unexpected persistence report";
                "reported" => ?hs, "persisted" => ?self.persisted, "current" => ?current);
            return;
        }
        self.persisted = hs;
        if hs == current {
            self.flush_outbox();
            self.on_own_vote_persisted();
        }
    }

    /// The current term and vote.
    pub fn hard_state(&self) -> HardState {
        HardState {
            term: self.term,
            voted_for: self.voted_for,
        }
    }

    /// Orders the current term/vote persisted; sends wait until it is.
    fn persist_hard_state(&mut self) {
        self.actions
            .push(Action::PersistHardState(self.hard_state()));
    }

    fn hard_state_durable(&self) -> bool {
        self.persisted == self.hard_state()
    }

    /// Sends `msg` now, or once the current term/vote is durable.
    fn send(&mut self, to: PeerId, msg: Message) {
        let action = Action::Send { to, msg };
        if self.hard_state_durable() {
            self.actions.push(action);
        } else {
            self.outbox.push(action);
        }
    }

    fn send_append(&mut self, to: PeerId, send: AppendSend) {
        let action = Action::SendAppend { to, send };
        if self.hard_state_durable() {
            self.actions.push(action);
        } else {
            self.outbox.push(action);
        }
    }

    /// Releases the held sends that still make sense in the current term.
    fn flush_outbox(&mut self) {
        let (term, leading) = (self.term, self.role == Role::Leader);
        for action in self.outbox.drain(..) {
            let current = match &action {
                Action::Send { msg, .. } => msg.term() >= term,
                Action::SendAppend { send, .. } => leading && send.term == term,
                _ => false,
            };
            if current {
                self.actions.push(action);
            }
        }
    }

    /// Hands out newly committed entries.
    fn emit_committed(&mut self) {
        let committed = self.log.committed();
        if committed > self.handed_index {
            self.actions.push(Action::Committed {
                first_index: self.handed_index + 1,
                last_index: committed,
            });
            self.handed_index = committed;
            self.membership.compact(committed);
        }
    }

    fn report_role(&mut self) {
        let now = (self.role, self.term, self.leader);
        if self.reported != Some(now) {
            self.reported = Some(now);
            self.actions.push(Action::RoleChanged {
                role: self.role,
                term: self.term,
                leader: self.leader,
            });
        }
    }

    /// This peer.
    pub fn id(&self) -> PeerId {
        self.opts.id
    }

    /// The current term.
    pub fn term(&self) -> u64 {
        self.term
    }

    /// The candidate voted for in the current term.
    pub fn voted_for(&self) -> Option<PeerId> {
        self.voted_for
    }

    /// The current role.
    pub fn role(&self) -> Role {
        self.role
    }

    /// The leader of the current term, if known.
    pub fn leader(&self) -> Option<PeerId> {
        self.leader
    }

    /// The commit index.
    pub fn commit_index(&self) -> u64 {
        self.log.committed()
    }

    /// The last entry of the log (including entries not yet durable).
    pub fn last_log_id(&self) -> LogId {
        self.log.last_id()
    }

    /// The last index of the durable prefix of the log.
    pub fn durable_index(&self) -> u64 {
        self.log.durable()
    }

    /// The term of the entry at `index`, if the log holds it.
    pub fn term_at(&self, index: u64) -> Option<u64> {
        self.log.term_at(index)
    }

    /// The effective configuration (the newest in the log).
    pub fn configuration(&self) -> &Configuration {
        self.membership.effective()
    }

    /// The leader's knowledge of `peer` (leader only).
    pub fn progress(&self, peer: &PeerId) -> Option<&Progress> {
        self.progress.get(peer)
    }

    /// The leader's knowledge of every follower, learner and catching-up peer (empty unless
    /// leader).
    pub fn followers(&self) -> impl Iterator<Item = (&PeerId, &Progress)> {
        self.progress.iter()
    }

    /// The first index the log holds (entries before it are in the snapshot).
    pub fn first_index(&self) -> u64 {
        self.log.base().index + 1
    }

    /// The newest durable snapshot this core knows of.
    pub fn snapshot(&self) -> LogId {
        self.snapshot
    }

    /// The snapshot being installed (follower), if any.
    pub fn installing(&self) -> Option<LogId> {
        self.installing.as_ref().map(|i| i.last)
    }

    /// The configuration in force at the commit index (the effective one may be newer).
    pub fn committed_configuration(&self) -> &Configuration {
        self.membership.in_force_at(self.log.committed())
    }

    /// The configuration in force at the commit index and every newer one in the log, oldest
    /// first (the last is the effective one).
    pub fn configurations_since_commit(&self) -> Vec<&Configuration> {
        self.membership.since(self.log.committed()).collect()
    }

    /// True if this peer may campaign: it votes in the configuration in force at its commit
    /// index or in any newer one in its log (the effective one included). A peer whose
    /// removal is appended but not known committed may hold the only copy of `C_new`
    /// (openraft issue 2091), and the others, still in the joint configuration, need its
    /// vote but cannot get it (its log is ahead of theirs): without its own campaign the
    /// group stays leaderless. That peer may also have been added by a configuration it does
    /// not know committed (sim seed 29288), so every configuration after the committed one
    /// counts. Votes are still counted under the effective configuration, where its own does
    /// not count, so election safety is unchanged; a leader outside its configuration steps
    /// down once `C_new` commits.
    pub fn can_campaign(&self) -> bool {
        let me = &self.opts.id;
        self.membership
            .since(self.log.committed())
            .any(|c| c.is_voter(me))
    }

    /// The log index of the effective configuration.
    pub fn configuration_index(&self) -> u64 {
        self.membership.effective_index()
    }

    /// True while a configuration change or a leader transfer is in progress (leader).
    pub fn is_changing(&self) -> bool {
        self.conf_change.is_some() || self.transfer.is_some()
    }

    /// The follower lease's last contact with a leader, if one is remembered (simulator
    /// checks of the lease argument).
    pub fn follower_lease_contact_ms(&self) -> Option<u64> {
        self.follower_lease.last_contact_ms()
    }

    /// Leader: fails every request that needs leadership (reads, a transfer, a configuration
    /// change) now that it is lost; `leader` is the new leader if known.
    fn on_leadership_lost(&mut self, leader: Option<PeerId>) {
        let error = RaftError::NotLeader { leader };
        for read in self.reads.drain(..) {
            self.actions.push(Action::RejectRead {
                ctx: read.ctx,
                error: error.clone(),
            });
        }
        for ctx in self.reads_waiting.drain(..) {
            self.actions.push(Action::RejectRead {
                ctx,
                error: error.clone(),
            });
        }
        if let Some(t) = self.transfer.take() {
            let result = if t.timeout_now_sent {
                Ok(())
            } else {
                Err(error.clone())
            };
            self.actions.push(Action::TransferDone {
                ctx: t.ctx,
                to: t.to,
                result,
            });
        }
        if let Some(c) = self.conf_change.take() {
            self.actions.push(Action::ConfChangeDone {
                ctx: c.ctx,
                result: Err(error),
            });
        }
        self.lease_void = false;
    }

    /// The options the core runs with.
    pub fn options(&self) -> &CoreOptions {
        &self.opts
    }
}

/// True if `a` is `b` or a state `b` replaced: an earlier term, or the same term before its
/// vote was cast.
fn is_at_or_before(a: &HardState, b: &HardState) -> bool {
    a.term < b.term || (a.term == b.term && (a.voted_for.is_none() || a.voted_for == b.voted_for))
}

#[cfg(test)]
mod tests;
