//! The leader's side of replication: proposals, what to send each follower (probe or
//! pipeline), heartbeats and retransmission, AppendEntries responses with fast back-off, the
//! commit rule, check-quorum and the lease.
//!
//! Rules kept here: the leader assigns LogIds in its own term; a follower's match index counts
//! only what it acknowledged as durable, the leader's own only what its LogManager reported
//! durable; an index commits only when a quorum (both halves when joint) holds it *and* it is
//! an entry of the current term (Raft figure 8).

use crate::ballot_box::{joint_quorum_value, quorum_value};
use crate::core::message::AppendEntriesResponse;
use crate::core::options::bug;
use crate::core::progress::ProgressState;
use crate::core::{Action, AppendSend, RaftCore, Role};
use crate::error::RaftError;
use crate::types::{LogId, PeerId};

impl RaftCore {
    pub(super) fn handle_propose(&mut self, count: u64) {
        if count == 0 {
            return;
        }
        if self.role != Role::Leader || self.transfer.is_some() {
            let error = match self.role {
                Role::Leader => RaftError::Busy, // leadership is being handed over
                _ => RaftError::NotLeader {
                    leader: self.leader,
                },
            };
            self.actions.push(Action::RejectProposals { count, error });
            return;
        }
        let (first_index, last) = self.log.append_local(count, self.term);
        self.actions
            .push(Action::AppendProposals { first_index, last });
        self.bcast_append();
    }

    /// Sends every follower what its progress allows.
    pub(super) fn bcast_append(&mut self) {
        for i in 0..self.peer_ids.len() {
            let peer = self.peer_ids[i];
            while self.maybe_send_append(peer) {}
        }
    }

    /// Sends `to` the next AppendEntries its progress allows. Returns true if it sent one in
    /// the pipelined state (so the caller may try again); false once nothing more may go.
    pub(super) fn maybe_send_append(&mut self, to: PeerId) -> bool {
        let last = self.log.last_index();
        let max_entries = self.opts.max_entries_per_append;
        let Some(pr) = self.progress.get_mut(&to) else {
            return false;
        };
        match pr.state {
            ProgressState::Snapshot => return false,
            ProgressState::Probe if pr.probe_sent => return false,
            ProgressState::Replicate if pr.inflights.is_full() || pr.next_index > last => {
                return false
            }
            _ => {}
        }
        let prev_index = pr.next_index - 1;
        let Some(prev_term) = self.log.term_at(prev_index) else {
            // Compacted away: only the snapshot can bring this follower up.
            self.send_snapshot(to);
            return false;
        };
        let last_index = last.min(prev_index + max_entries);
        let pipelined = pr.state == ProgressState::Replicate;
        if pipelined {
            pr.next_index = last_index + 1;
            pr.inflights.add(last_index);
        } else {
            pr.probe_sent = true;
        }
        let prev = LogId::new(prev_index, prev_term);
        self.send_append(to, self.append_send(prev, last_index));
        pipelined
    }

    pub(super) fn append_send(&self, prev: LogId, last_index: u64) -> AppendSend {
        AppendSend {
            term: self.term,
            prev,
            last_index,
            commit: self.log.committed(),
            sent_ms: self.now_ms,
            round: self.read_round,
        }
    }

    /// Every heartbeat interval: retransmit stalled pipelines, re-probe, and otherwise send a
    /// heartbeat that proves leadership and carries the commit index.
    pub(super) fn bcast_heartbeat(&mut self) {
        let stall_heartbeats = self.opts.stall_heartbeats;
        for i in 0..self.peer_ids.len() {
            let peer = self.peer_ids[i];
            if self.maybe_resend_snapshot(peer) {
                self.send_heartbeat(peer); // keeps the lease and check-quorum informed
                continue;
            }
            let Some(pr) = self.progress.get_mut(&peer) else {
                continue;
            };
            if pr.state == ProgressState::Replicate && pr.tick_is_stalled(stall_heartbeats) {
                slog::debug!(self.logger, "pipeline stalled: probing again"; "peer" => %peer);
                pr.become_probe();
            }
            if pr.state == ProgressState::Probe {
                pr.probe_sent = false;
                self.maybe_send_append(peer);
                continue;
            }
            if !self.maybe_send_append(peer) && !self.awaits_snapshot(&peer) {
                // Nothing new may go: a heartbeat at the known match point.
                self.send_heartbeat(peer);
            }
        }
    }

    pub(super) fn handle_append_response(&mut self, from: PeerId, resp: &AppendEntriesResponse) {
        if resp.term > self.term && self.protects_leader() {
            return; // a stale answer to an earlier leadership: it must not end the lease
        }
        if resp.term > self.term {
            slog::info!(self.logger, "a follower is in a later term: stepping down";
                "peer" => %from, "term" => resp.term);
            self.become_follower(resp.term, None);
            return;
        }
        if self.role != Role::Leader || resp.term < self.term {
            return;
        }
        if resp.success && resp.index > self.log.last_index() {
            slog::warn!(self.logger, "ignored an acknowledgement beyond my log";
                "peer" => %from, "index" => resp.index);
            return;
        }
        let hint_next = self
            .log
            .last_at_or_below(resp.hint.index, resp.hint.term)
            .index
            + 1;
        let now_ms = self.now_ms;
        let Some(pr) = self.progress.get_mut(&from) else {
            return;
        };
        // A forged future send time or round must not extend the lease or confirm a read.
        let sent_ms = resp.sent_ms.min(now_ms);
        pr.last_ack_sent_ms = Some(pr.last_ack_sent_ms.unwrap_or(0).max(sent_ms));
        pr.last_ack_round = pr.last_ack_round.max(resp.round.min(self.read_round));
        self.maybe_release_reads();
        let Some(pr) = self.progress.get_mut(&from) else {
            return;
        };
        if !resp.success {
            if pr.maybe_decrease_to(resp.index, hint_next) {
                self.maybe_send_append(from);
            }
            return;
        }
        let advanced = pr.maybe_update(resp.index, now_ms);
        if pr
            .snapshot
            .is_some_and(|(index, _)| pr.match_index >= index)
        {
            pr.become_probe(); // installed: replicate from after it
        }
        if pr.state == ProgressState::Probe && pr.match_index == resp.index {
            pr.become_replicate();
        }
        if advanced {
            self.maybe_commit();
            self.maybe_send_timeout_now();
            self.advance_conf_change();
        }
        if self.role == Role::Leader {
            while self.maybe_send_append(from) {}
        }
    }

    /// Commits the highest index a quorum holds durably, if it is of the current term.
    pub(super) fn maybe_commit(&mut self) {
        if self.role != Role::Leader {
            return;
        }
        let me = self.opts.id;
        let durable = self.log.durable();
        let progress = &self.progress;
        let match_of = |p: &PeerId| match p {
            p if *p == me => durable,
            p => progress.get(p).map_or(0, |pr| pr.match_index),
        };
        let conf = self.membership.effective();
        let index = if conf.is_joint() && bug!(self, joint_commit_new_majority_only) {
            quorum_value(conf.voters(), match_of, &mut self.scratch)
        } else {
            joint_quorum_value(conf, match_of, &mut self.scratch)
        };
        if index <= self.log.committed() {
            return;
        }
        let current_term = self.log.term_at(index) == Some(self.term);
        if !current_term && !bug!(self, commit_previous_term) {
            return; // figure 8: an earlier term's entry commits only through one of ours
        }
        self.log.commit_to(index);
        self.emit_committed();
        self.start_waiting_reads();
        self.advance_conf_change();
    }

    pub(super) fn handle_unreachable(&mut self, peer: PeerId) {
        if let Some(pr) = self.progress.get_mut(&peer) {
            if pr.state != ProgressState::Probe {
                pr.become_probe(); // a snapshot offer is made again at the next probe
            }
        }
    }

    /// The latest leader-clock send time that a quorum has acknowledged a request from
    /// (itself counting as now); 0 before any quorum answered.
    pub(super) fn quorum_ack_sent_ms(&mut self) -> u64 {
        let (me, now) = (self.opts.id, self.now_ms);
        let progress = &self.progress;
        joint_quorum_value(
            self.membership.effective(),
            |p| match p {
                p if *p == me => now,
                p => progress
                    .get(p)
                    .and_then(|pr| pr.last_ack_sent_ms)
                    .unwrap_or(0),
            },
            &mut self.scratch,
        )
    }

    /// Leader only: the time (this peer's clock) until which no other leader can exist, from
    /// the quorum's acknowledgements; `None` when not leader, before the term's no-op
    /// committed, during a transfer, or when no quorum answered yet.
    pub fn leader_lease_until_ms(&mut self) -> Option<u64> {
        // Until the term's no-op commits, this leader's commit index may lag what an earlier
        // leader committed: its state is not yet one a lease may serve reads from.
        let usable = self.role == Role::Leader && self.noop_committed();
        if !usable || self.lease_void || self.transfer.is_some() {
            return None;
        }
        let quorum_ack_ms = self.quorum_ack_sent_ms();
        (quorum_ack_ms > 0 || self.peer_ids.is_empty())
            .then(|| self.leader_lease.valid_until_ms(quorum_ack_ms))
    }
}
