//! The core's deadlines and the timer actions that mirror them to the shell.
//!
//! The core is the source of truth for when something is due; the shell's timers only wake it.
//! Each firing is checked against the core's own deadline, so early, late, duplicated and
//! stale firings change nothing.

use crate::core::options::bug;
use crate::core::{Action, CoreOptions, RaftCore, Role, TimerKind};
use crate::lease::LeaderLease;

/// Deadlines of the core and what the shell was told to arm.
#[derive(Clone, Debug)]
pub(super) struct Timers {
    /// Invariant: exactly the timers the shell was last told to arm (`SetTimer`) and not yet
    /// told to stop or seen fire.
    pub(super) armed: [Option<u64>; 4],
    /// Follower and pre-candidate: the election timeout counts from here (the last contact
    /// with a leader, a vote granted, the start of a round).
    pub(super) election_base_ms: u64,
    /// The randomised election timeout now in force, in `[T, 2T)`.
    election_timeout_ms: u64,
}

impl Timers {
    pub(super) fn new(election_timeout_ms: u64) -> Timers {
        Timers {
            armed: [None; 4],
            election_base_ms: 0,
            election_timeout_ms,
        }
    }

    /// The deadline the shell was told for `kind`.
    pub(super) fn armed(&self, kind: TimerKind) -> Option<u64> {
        self.armed[kind.index()]
    }
}

impl RaftCore {
    /// Tells the shell to fire `kind` at `at_ms` (unless it already will).
    pub(super) fn arm(&mut self, kind: TimerKind, at_ms: u64) {
        if self.timers.armed[kind.index()] != Some(at_ms) {
            self.timers.armed[kind.index()] = Some(at_ms);
            self.actions.push(Action::SetTimer { timer: kind, at_ms });
        }
    }

    /// Tells the shell to stop `kind` (if armed).
    pub(super) fn disarm(&mut self, kind: TimerKind) {
        if self.timers.armed[kind.index()].take().is_some() {
            self.actions.push(Action::StopTimer(kind));
        }
    }

    /// Restarts the election timeout from now with a fresh random length in `[T, 2T)`.
    pub(super) fn reset_election_timer(&mut self) {
        let t = self.opts.election_timeout_ms;
        self.timers.election_timeout_ms = self.rng.range(t, 2 * t);
        self.timers.election_base_ms = self.now_ms;
        self.arm(
            TimerKind::Election,
            self.now_ms + self.timers.election_timeout_ms,
        );
    }

    /// A randomised vote timeout: `T + max_clock_drift_ms`, plus up to `T` of jitter so that
    /// candidates that split a vote do not retry in lockstep.
    pub(super) fn vote_timeout_ms(&mut self) -> u64 {
        let t = self.opts.election_timeout_ms;
        let base = t + self.opts.max_clock_drift_ms;
        self.rng.range(base, base + t)
    }

    pub(super) fn handle_set_election_timeout(&mut self, t: u64, drift: u64) {
        let mut opts = self.opts.clone();
        opts.election_timeout_ms = t;
        opts.max_clock_drift_ms = drift;
        opts.heartbeat_interval_ms = CoreOptions::default_heartbeat_ms(t);
        if let Err(e) = opts.validate() {
            slog::warn!(self.logger, "ignored an invalid election timeout"; "error" => %e);
            return;
        }
        let from_ms = self.opts.election_timeout_ms;
        slog::info!(self.logger, "election timeout changed";
            "from_ms" => from_ms, "to_ms" => t, "drift_ms" => drift);
        self.opts = opts;
        self.follower_lease.set_timeout(t);
        self.leader_lease = LeaderLease::new(t, drift);
        match self.role {
            Role::Follower | Role::PreCandidate => self.reset_election_timer(),
            Role::Leader => {
                self.arm(
                    TimerKind::Heartbeat,
                    self.now_ms + self.opts.heartbeat_interval_ms,
                );
                self.arm(TimerKind::StepDown, self.now_ms + t);
            }
            Role::Candidate => {} // the round runs out under the old timeout, the next one is new
        }
    }

    pub(super) fn handle_timeout(&mut self, kind: TimerKind) {
        let Some(at_ms) = self.timers.armed[kind.index()] else {
            return; // stopped since: a stale firing
        };
        if self.now_ms < at_ms {
            // Fired early by our clock: the shell's timer is spent, so arm it again.
            self.actions.push(Action::SetTimer { timer: kind, at_ms });
            return;
        }
        self.timers.armed[kind.index()] = None;
        match kind {
            TimerKind::Election => self.on_election_timeout(),
            TimerKind::Vote => self.on_vote_timeout(),
            TimerKind::StepDown => self.on_stepdown_timeout(),
            TimerKind::Heartbeat => self.on_heartbeat_timeout(),
        }
    }

    fn on_election_timeout(&mut self) {
        if !matches!(self.role, Role::Follower | Role::PreCandidate) {
            return;
        }
        let due = self.timers.election_base_ms + self.timers.election_timeout_ms;
        if self.now_ms < due {
            // A leader (or a candidate we voted for) was heard since the timer was armed.
            self.arm(TimerKind::Election, due);
            return;
        }
        let voter = self.can_campaign() || (self.removed && bug!(self, removed_peer_campaigns));
        if !voter || self.installing.is_some() {
            // Learners and peers whose removal is committed never campaign; nor does a peer
            // whose log is being replaced by a snapshot.
            self.reset_election_timer();
            return;
        }
        slog::info!(self.logger, "election timeout: campaigning";
            "term" => self.term, "pre_vote" => self.opts.pre_vote);
        self.campaign();
    }

    fn on_vote_timeout(&mut self) {
        if self.role != Role::Candidate {
            return;
        }
        slog::info!(self.logger, "vote timeout: starting over"; "term" => self.term);
        self.become_follower(self.term, None);
        self.campaign();
    }

    fn on_stepdown_timeout(&mut self) {
        if self.role != Role::Leader {
            return;
        }
        let t = self.opts.election_timeout_ms;
        let quorum_ack_ms = self.quorum_ack_sent_ms();
        if self.now_ms.saturating_sub(quorum_ack_ms) >= t {
            slog::warn!(self.logger, "check-quorum: no quorum heard within the election timeout";
                "term" => self.term, "quorum_ack_ms" => quorum_ack_ms, "now_ms" => self.now_ms);
            self.become_follower(self.term, None);
            return;
        }
        self.arm(TimerKind::StepDown, self.now_ms + t);
    }

    fn on_heartbeat_timeout(&mut self) {
        if self.role != Role::Leader {
            return;
        }
        self.check_transfer_deadline();
        self.check_catch_up_progress();
        self.bcast_heartbeat();
        self.arm(
            TimerKind::Heartbeat,
            self.now_ms + self.opts.heartbeat_interval_ms,
        );
    }
}
