//! The boundary of the core: the [`Event`]s a shell feeds it and the [`Action`]s it answers
//! with, collected in a reusable [`Actions`] buffer.
//!
//! Values only. The contract of each event and action (what the shell must do, in which order,
//! and what it must report back) is written on the variant; `core/mod.rs` has the overview.

use std::ops::Range;

use crate::core::message::Message;
use crate::error::{RaftError, Result};
use crate::types::{Configuration, LogId, PeerId};

/// The durable part of a peer's election state (braft's `raft_meta`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct HardState {
    /// The latest term this peer has seen.
    pub term: u64,
    /// The candidate it voted for in `term`, if any.
    pub voted_for: Option<PeerId>,
}

/// The role of a peer in its current term.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Role {
    /// Follows a leader (or waits for one).
    Follower,
    /// Asks whether it could win an election, without changing its term (pre-vote).
    PreCandidate,
    /// Campaigns in a new term.
    Candidate,
    /// Leads its term.
    Leader,
}

/// The core's timers. The shell keeps one one-shot timer per kind.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum TimerKind {
    /// Follower and pre-candidate: no leader was heard for a randomised `[T, 2T)`.
    Election = 0,
    /// Candidate: the round took `T + max_clock_drift_ms` (randomised up to `2T + drift`).
    Vote = 1,
    /// Leader: check every `T` that a quorum answered within the last `T` (check-quorum).
    StepDown = 2,
    /// Leader: every heartbeat interval, heartbeats, probe retries and stall detection.
    Heartbeat = 3,
}

impl TimerKind {
    /// Every kind, in index order.
    pub const ALL: [TimerKind; 4] = [
        TimerKind::Election,
        TimerKind::Vote,
        TimerKind::StepDown,
        TimerKind::Heartbeat,
    ];

    /// A dense index for tables.
    pub fn index(self) -> usize {
        self as usize
    }
}

/// One input to [`RaftCore::step`](crate::core::RaftCore::step).
#[derive(Clone, Copy, Debug)]
pub enum Event<'a> {
    /// The shell's timer of this kind fired. Early, late, duplicated and stale firings are
    /// harmless: the core checks its own deadline and re-arms when the firing was early.
    Timeout(TimerKind),
    /// A message from a peer. For an AppendEntries, the shell keeps the payloads aligned with
    /// `entries` and appends those the core selects ([`Action::AppendReceived`]).
    Message {
        /// The sender.
        from: PeerId,
        /// The message.
        msg: &'a Message,
    },
    /// A batch of `count` user entries to append (leader only). Answered by
    /// [`Action::AppendProposals`] with their LogIds, or [`Action::RejectProposals`].
    Propose {
        /// How many entries, in the order the shell will append them.
        count: u64,
    },
    /// The log write that ended at this LogId (one [`Action::AppendProposals`],
    /// [`Action::AppendNoOp`] or [`Action::AppendReceived`]) is durable, and with it every
    /// earlier write and truncation. Report each such write exactly once, in the order the
    /// actions were given; a report that matches no outstanding write is ignored.
    LogDurable(LogId),
    /// A [`Action::PersistHardState`] is durable. Reports may skip intermediate states but
    /// never go backwards.
    HardStatePersisted(HardState),
    /// The transport could not reach this peer (a hint: its pipeline restarts with a probe).
    PeerUnreachable(PeerId),
    /// A batch of linearizable reads, named by the shell's `ctx`. Answered once, by
    /// [`Action::ReadReady`] (serve the reads once the state machine has applied the given
    /// index) or [`Action::RejectRead`].
    ReadIndex {
        /// The shell's name for the batch.
        ctx: u64,
    },
    /// Hand leadership to `to` (leader only). Answered once by [`Action::TransferDone`].
    TransferLeader {
        /// The shell's name for the request.
        ctx: u64,
        /// The voter to hand over to.
        to: PeerId,
    },
    /// Move to the stable configuration `target` (voters and learners) by joint consensus
    /// (leader only). Answered once by [`Action::ConfChangeDone`].
    ChangeConfiguration {
        /// The shell's name for the request.
        ctx: u64,
        /// The configuration to reach; must be stable.
        target: &'a Configuration,
    },
    /// Change the election timeout `T` and the clock-drift bound at run time (braft's
    /// `reset_election_timeout_ms`): the heartbeat interval becomes `T / 10` (at least 10 ms),
    /// leases and timers follow, and a follower's election timer restarts from now with the
    /// new `T`. Invalid values are ignored (the shell validates first). Leases assume the
    /// same `T` on every peer: change it everywhere.
    SetElectionTimeout {
        /// The new `T`.
        election_timeout_ms: u64,
        /// The new drift bound (below `T`).
        max_clock_drift_ms: u64,
    },
    /// Force this peer's configuration to `conf` without consensus (braft's `reset_peers`):
    /// for recovery when a majority is lost for good. It takes effect at once in a new term;
    /// the peer appends it to the log when it next leads. Answered by
    /// [`Action::ConfChangeDone`]. Safety is given up on purpose: two groups may form if the
    /// lost peers return with their old configuration.
    ResetConfiguration {
        /// The shell's name for the request.
        ctx: u64,
        /// The configuration to force; must be stable and have voters.
        conf: &'a Configuration,
    },
    /// The state machine's snapshot up to `last` is durable, with `conf` the configuration in
    /// force at `last`. The core may then let the log be compacted ([`Action::CompactLog`]).
    SnapshotSaved {
        /// The last entry the snapshot includes (applied, so committed).
        last: LogId,
        /// The configuration in force at `last`.
        conf: &'a Configuration,
    },
    /// The install ordered by [`Action::InstallSnapshot`] ended: on success the state
    /// machine holds the snapshot and the log restarts after `last`, both durably.
    SnapshotInstalled {
        /// The snapshot's last entry.
        last: LogId,
        /// False when fetching or loading failed (nothing changed).
        ok: bool,
    },
}

/// An AppendEntries for the shell's replicator to send: `prev` and the entries
/// `prev.index + 1 ..= last_index` from the local log (none for a heartbeat), with `commit`.
///
/// The shell may split the range into several consecutive frames to respect its byte limit,
/// each with the LogId of the entry before it as its `prev`, sent in order on one connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AppendSend {
    /// The leader's term.
    pub term: u64,
    /// The entry before the first one sent.
    pub prev: LogId,
    /// The last entry to send; `prev.index` for a heartbeat.
    pub last_index: u64,
    /// The leader's commit index.
    pub commit: u64,
    /// The leader's clock at the send, echoed by the response (leases, check-quorum).
    pub sent_ms: u64,
    /// The leader's read round at the send, echoed by the response (ReadIndex).
    pub round: u64,
}

/// One instruction from the core to its shell, in the order given.
///
/// Safety never depends on the order in which the shell carries out *sends* and
/// *persistence*: a message that depends on persisted state is held inside the core until the
/// persistence is reported. Log actions (truncate, append) must be carried out in order, and
/// an append must be visible to the replicator before a later [`Action::SendAppend`] reads it.
#[derive(Clone, Debug, PartialEq)]
pub enum Action {
    /// Persist term and vote atomically, then report [`Event::HardStatePersisted`].
    PersistHardState(HardState),
    /// Drop every log entry after `after`. Never at or below the commit index.
    TruncateLog {
        /// The last index kept.
        after: u64,
    },
    /// Append `entries[range]` of the AppendEntries just stepped (their LogIds are in the
    /// message's entry metadata), then report [`Event::LogDurable`] with the last one.
    AppendReceived {
        /// The indexes into the message's `entries`.
        range: Range<usize>,
    },
    /// Append the proposed batch as entries `first_index..=last.index` of term `last.term`,
    /// in proposal order, then report [`Event::LogDurable`]`(last)`.
    AppendProposals {
        /// The index given to the batch's first entry.
        first_index: u64,
        /// The LogId given to its last entry.
        last: LogId,
    },
    /// Append the leader's no-op entry for its new term, then report [`Event::LogDurable`].
    AppendNoOp(LogId),
    /// Append a configuration entry (leader), then report [`Event::LogDurable`]`(id)`.
    AppendConfiguration {
        /// Its LogId.
        id: LogId,
        /// The configuration it carries.
        conf: Configuration,
    },
    /// Refuse a proposal batch: complete its tasks with `error` (`NotLeader` with the leader
    /// to redirect to, or `Busy` while leadership is being transferred).
    RejectProposals {
        /// The size of the refused batch.
        count: u64,
        /// Why.
        error: RaftError,
    },
    /// The read batch `ctx` is confirmed: answer it once the state machine has applied
    /// `index`.
    ReadReady {
        /// The batch.
        ctx: u64,
        /// The commit index the reads must see.
        index: u64,
    },
    /// The read batch `ctx` cannot be served here.
    RejectRead {
        /// The batch.
        ctx: u64,
        /// Why (`NotLeader`, with the leader to redirect to).
        error: RaftError,
    },
    /// The outcome of an [`Event::TransferLeader`]: `Ok` once leadership left this peer
    /// after the target was told to campaign; an error if refused or timed out.
    TransferDone {
        /// The request.
        ctx: u64,
        /// The requested target.
        to: PeerId,
        /// The outcome.
        result: Result<()>,
    },
    /// The outcome of an [`Event::ChangeConfiguration`]: `Ok` once the target configuration
    /// is committed.
    ConfChangeDone {
        /// The request.
        ctx: u64,
        /// The outcome.
        result: Result<()>,
    },
    /// Entries up to `upto` are covered by a durable snapshot and may be removed from the log.
    CompactLog {
        /// The last index that may be removed.
        upto: u64,
    },
    /// Follower: fetch the snapshot ending at `last` from the leader `from`, load it into the
    /// state machine, reset the log to start after `last`, all durably, then report
    /// [`Event::SnapshotInstalled`]. Log writes ordered before this must be carried out (and
    /// reported) before the reset.
    InstallSnapshot {
        /// The leader offering it.
        from: PeerId,
        /// Its last entry.
        last: LogId,
        /// The configuration in force at `last`.
        conf: Configuration,
    },
    /// Send a message.
    Send {
        /// The receiver.
        to: PeerId,
        /// The message.
        msg: Message,
    },
    /// Send an AppendEntries built from the local log (see [`AppendSend`]).
    SendAppend {
        /// The follower.
        to: PeerId,
        /// What to send.
        send: AppendSend,
    },
    /// Entries `first_index..=last_index` are committed: hand them to the state machine in
    /// order. Each index is handed out once per life of the core.
    Committed {
        /// The first newly committed index.
        first_index: u64,
        /// The last newly committed index.
        last_index: u64,
    },
    /// The role, term or known leader changed (for the user's callbacks).
    RoleChanged {
        /// The new role.
        role: Role,
        /// The current term.
        term: u64,
        /// The leader, if known.
        leader: Option<PeerId>,
    },
    /// (Re)arm the timer of this kind to fire at `at_ms` on the shell's monotonic clock.
    SetTimer {
        /// Which timer.
        timer: TimerKind,
        /// When it fires.
        at_ms: u64,
    },
    /// Disarm the timer of this kind.
    StopTimer(TimerKind),
}

/// A reusable buffer of actions: [`RaftCore::step`](crate::core::RaftCore::step) clears and
/// fills it, the shell drains it. Its capacity is kept between steps, so a step on the hot path
/// does not allocate.
#[derive(Debug, Default)]
pub struct Actions {
    list: Vec<Action>,
}

impl Actions {
    /// The actions of the last step, in order.
    pub fn iter(&self) -> std::slice::Iter<'_, Action> {
        self.list.iter()
    }

    /// Takes the actions of the last step, in order, keeping the buffer's capacity.
    pub fn drain(&mut self) -> std::vec::Drain<'_, Action> {
        self.list.drain(..)
    }

    /// The number of actions.
    pub fn len(&self) -> usize {
        self.list.len()
    }

    /// True when the step produced nothing to do.
    pub fn is_empty(&self) -> bool {
        self.list.is_empty()
    }

    pub(crate) fn push(&mut self, action: Action) {
        self.list.push(action);
    }

    pub(crate) fn clear(&mut self) {
        self.list.clear();
    }
}
