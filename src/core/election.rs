//! Elections: the role transitions (`become_*`), pre-vote and vote rounds, and the handling
//! of vote requests, vote responses and TimeoutNow.
//!
//! Rules kept here: a pre-vote changes nobody's term or vote; a voter that heard a leader
//! within the election timeout refuses (pre-)votes without adopting the candidate's term; a
//! rejection carrying a higher term teaches a (pre-)candidate that term (etcd issue 8243); a
//! vote is granted once per term, to a candidate whose log is at least as up-to-date, and sent
//! only once durable; a candidate counts its own vote only once durable.

use crate::ballot_box::{Ballot, VoteResult};
use crate::core::message::{Message, TimeoutNow, VoteRequest, VoteResponse};
use crate::core::options::bug;
use crate::core::{Action, RaftCore, Role, TimerKind};
use crate::types::{LogId, PeerId};

impl RaftCore {
    /// Starts an election: a pre-vote round first when enabled.
    pub(super) fn campaign(&mut self) {
        if self.opts.pre_vote {
            self.become_pre_candidate();
        } else {
            self.become_candidate(false);
        }
    }

    /// Follows `leader` (or nobody) in `term`, adopting the term if it is newer.
    pub(super) fn become_follower(&mut self, term: u64, leader: Option<PeerId>) {
        debug_assert!(term >= self.term);
        let term_changed = term > self.term;
        if term_changed {
            self.term = term;
            self.voted_for = None;
            self.leader_match_index = 0;
            self.pending_ack = None;
            self.persist_hard_state();
        }
        let was_follower = self.role == Role::Follower;
        if self.role == Role::Leader {
            self.on_leadership_lost(leader);
        }
        if self.leader != leader {
            self.pending_ack = None; // it was owed to the leader we no longer follow
        }
        self.role = Role::Follower;
        self.leader = leader;
        if leader.is_none() {
            self.follower_lease.expire();
        }
        self.progress.clear();
        self.peer_ids.clear();
        self.ballot = Ballot::new();
        self.disarm(TimerKind::Vote);
        self.disarm(TimerKind::StepDown);
        self.disarm(TimerKind::Heartbeat);
        if !was_follower || self.timers.armed(TimerKind::Election).is_none() {
            self.reset_election_timer();
        }
    }

    fn become_pre_candidate(&mut self) {
        debug_assert_ne!(self.role, Role::Leader);
        self.role = Role::PreCandidate;
        self.leader = None;
        self.pending_ack = None;
        self.follower_lease.expire();
        self.ballot = Ballot::new();
        self.ballot.record(self.opts.id, true);
        // The election timer bounds the pre-vote round.
        self.reset_election_timer();
        self.bcast_vote_requests(true, false);
        self.check_ballot();
    }

    /// Raises the term and asks for votes. `transfer`: the leader asked (TimeoutNow).
    pub(super) fn become_candidate(&mut self, transfer: bool) {
        debug_assert_ne!(self.role, Role::Leader);
        self.term += 1;
        self.voted_for = Some(self.opts.id);
        self.leader_match_index = 0;
        self.pending_ack = None;
        self.persist_hard_state();
        self.role = Role::Candidate;
        self.leader = None;
        self.follower_lease.expire();
        self.ballot = Ballot::new();
        if bug!(self, vote_before_persist) {
            self.ballot.record(self.opts.id, true);
        }
        self.disarm(TimerKind::Election);
        let vote_timeout_ms = self.vote_timeout_ms();
        self.arm(TimerKind::Vote, self.now_ms + vote_timeout_ms);
        slog::info!(self.logger, "became candidate"; "term" => self.term);
        self.bcast_vote_requests(false, transfer);
        self.check_ballot();
    }

    fn become_leader(&mut self) {
        debug_assert_eq!(self.role, Role::Candidate);
        self.role = Role::Leader;
        self.leader = Some(self.opts.id);
        self.disarm(TimerKind::Election);
        self.disarm(TimerKind::Vote);
        self.arm(
            TimerKind::Heartbeat,
            self.now_ms + self.opts.heartbeat_interval_ms,
        );
        self.arm(
            TimerKind::StepDown,
            self.now_ms + self.opts.election_timeout_ms,
        );
        self.sync_progress();
        let last = self.log.last_id();
        slog::info!(self.logger, "became leader"; "term" => self.term, "last" => %last);
        // The no-op of the new term: entries of earlier terms commit through it.
        let (_, noop) = self.log.append_local(1, self.term);
        self.actions.push(Action::AppendNoOp(noop));
        self.maybe_log_forced_configuration();
        self.bcast_append();
        self.maybe_commit();
    }

    fn bcast_vote_requests(&mut self, pre_vote: bool, transfer: bool) {
        let req = VoteRequest {
            term: if pre_vote { self.term + 1 } else { self.term },
            last_log_id: self.log.last_id(),
            pre_vote,
            transfer,
        };
        let conf = self.membership.effective();
        let me = self.opts.id;
        let voters: Vec<PeerId> = conf
            .voters()
            .iter()
            .chain(conf.old_voters())
            .filter(|p| **p != me)
            .copied()
            .collect();
        for (i, p) in voters.iter().enumerate() {
            if voters[..i].contains(p) {
                continue; // in both halves of a joint configuration
            }
            self.send(*p, Message::VoteRequest(req));
        }
    }

    /// Acts on the ballot's outcome so far.
    fn check_ballot(&mut self) {
        match self.ballot.result(self.membership.effective()) {
            VoteResult::Pending => {}
            VoteResult::Won => match self.role {
                Role::PreCandidate => self.become_candidate(false),
                Role::Candidate => self.become_leader(),
                Role::Follower | Role::Leader => {}
            },
            VoteResult::Lost => {
                let (term, role) = (self.term, self.role);
                slog::info!(self.logger, "lost the election"; "term" => term, "role" => ?role);
                self.become_follower(self.term, None);
            }
        }
    }

    /// A candidate's own vote counts once it is durable.
    pub(super) fn on_own_vote_persisted(&mut self) {
        if self.role == Role::Candidate && self.voted_for == Some(self.opts.id) {
            self.ballot.record(self.opts.id, true);
            self.check_ballot();
        }
    }

    /// True while this peer is a follower within its lease. Such a peer refuses every
    /// message of a later term that no leader sends (vote requests, and stale responses to
    /// requests it made as a candidate or leader): adopting that term would drop its lease
    /// and let it vote while the leader it protects still holds a valid lease.
    pub(super) fn protects_leader(&self) -> bool {
        self.role == Role::Follower && self.follower_lease.is_active(self.now_ms)
    }

    /// True while this peer protects a leader (itself, or one heard within the timeout).
    fn in_lease(&self) -> bool {
        match self.role {
            Role::Leader => true,
            Role::Follower => self.follower_lease.is_active(self.now_ms),
            Role::PreCandidate | Role::Candidate => false,
        }
    }

    /// Raft's "at least as up-to-date" rule: compare last terms, then last indexes. A
    /// snapshot being installed counts as held already.
    fn is_up_to_date(&self, candidate_last: LogId) -> bool {
        let installing = self
            .installing
            .as_ref()
            .map_or(LogId::default(), |i| i.last);
        candidate_last >= self.log.last_id().max(installing)
    }

    pub(super) fn handle_vote_request(&mut self, from: PeerId, req: &VoteRequest) {
        let in_lease = self.in_lease() && !req.transfer;
        if req.pre_vote {
            let grant = req.term > self.term && !in_lease && self.is_up_to_date(req.last_log_id);
            let term = if grant { req.term } else { self.term };
            self.reply_vote(
                from,
                VoteResponse {
                    term,
                    granted: grant,
                    pre_vote: true,
                },
            );
            return;
        }
        if req.term > self.term {
            if in_lease {
                slog::debug!(self.logger, "refused a disruptive vote: a leader is heard";
                    "candidate" => %from, "term" => req.term);
                let term = self.term;
                self.reply_vote(
                    from,
                    VoteResponse {
                        term,
                        granted: false,
                        pre_vote: false,
                    },
                );
                return;
            }
            self.become_follower(req.term, None);
        }
        let can_vote = req.term == self.term && self.voted_for.is_none_or(|v| v == from);
        let grant = can_vote && self.is_up_to_date(req.last_log_id);
        if grant {
            if self.voted_for.is_none() {
                self.voted_for = Some(from);
                self.persist_hard_state();
            }
            self.reset_election_timer();
        }
        let resp = VoteResponse {
            term: self.term,
            granted: grant,
            pre_vote: false,
        };
        if grant && bug!(self, vote_before_persist) {
            self.actions.push(Action::Send {
                to: from,
                msg: Message::VoteResponse(resp),
            });
            return;
        }
        self.reply_vote(from, resp);
    }

    fn reply_vote(&mut self, to: PeerId, resp: VoteResponse) {
        self.send(to, Message::VoteResponse(resp));
    }

    pub(super) fn handle_vote_response(&mut self, from: PeerId, resp: &VoteResponse) {
        if resp.term > self.term && self.protects_leader() {
            return; // a stale answer to an earlier candidacy: it must not end the lease
        }
        if resp.pre_vote {
            if resp.granted {
                if self.role == Role::PreCandidate && resp.term == self.term + 1 {
                    self.ballot.record(from, true);
                    self.check_ballot();
                }
            } else if resp.term > self.term {
                // A rejection from a peer in a later term: learn the term (etcd issue 8243).
                self.become_follower(resp.term, None);
            } else if self.role == Role::PreCandidate && resp.term == self.term {
                self.ballot.record(from, false);
                self.check_ballot();
            }
            return;
        }
        if resp.term > self.term {
            self.become_follower(resp.term, None);
            return;
        }
        if self.role == Role::Candidate && resp.term == self.term {
            self.ballot.record(from, resp.granted);
            self.check_ballot();
        }
    }

    pub(super) fn handle_timeout_now(&mut self, from: PeerId, m: &TimeoutNow) {
        if m.term < self.term {
            return;
        }
        if m.term > self.term {
            self.become_follower(m.term, Some(from));
        }
        if self.role == Role::Follower && self.can_campaign() && self.installing.is_none() {
            slog::info!(self.logger, "TimeoutNow: campaigning at once"; "from" => %from);
            self.become_candidate(true);
        }
    }
}
