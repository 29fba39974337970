//! Linearizable reads on the leader: ReadIndex and lease reads.
//!
//! A read batch is answered with an index: the shell serves the reads once its state machine
//! has applied that index. The index is the commit index when the read arrived, taken only
//! after the term's no-op has committed (before that, the commit index may lag behind what an
//! earlier leader committed). It is released when leadership is confirmed *after* the read
//! arrived: by a heartbeat round (`read_round`, echoed by followers) acknowledged by a quorum,
//! or at once while the leader lease is valid (lease reads, when enabled). The lease is
//! refused once a TimeoutNow went out in this term: the target's voters ignore their
//! follower leases, so the lease argument no longer holds.
//!
//! Rules kept here: never release a read before the no-op of the term commits; never answer
//! a read on a peer that is not leader; a round counts only acknowledgements of requests sent
//! after the read arrived.

use crate::ballot_box::joint_quorum_value;
use crate::core::options::bug;
use crate::core::{Action, RaftCore, Role};
use crate::error::RaftError;
use crate::types::LogId;

/// A read batch waiting for its round to be acknowledged by a quorum.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct PendingRead {
    pub(crate) ctx: u64,
    /// The commit index when the read arrived.
    pub(crate) index: u64,
    /// The round whose quorum acknowledgement releases it.
    pub(crate) round: u64,
}

impl RaftCore {
    pub(super) fn handle_read_index(&mut self, ctx: u64) {
        if self.role != Role::Leader {
            let error = RaftError::NotLeader {
                leader: self.leader,
            };
            self.actions.push(Action::RejectRead { ctx, error });
            return;
        }
        if !self.noop_committed() && !bug!(self, read_before_noop) {
            self.reads_waiting.push(ctx);
            return;
        }
        let index = self.log.committed();
        self.start_reads(&[ctx], index);
    }

    /// True once an entry of the current term (its no-op, first) has committed.
    pub(super) fn noop_committed(&self) -> bool {
        self.log.term_at(self.log.committed()) == Some(self.term)
    }

    /// Confirms leadership for reads that must see `index`: at once under a valid lease,
    /// else with a new heartbeat round.
    fn start_reads(&mut self, ctxs: &[u64], index: u64) {
        if self.opts.lease_reads && self.lease_valid() {
            for &ctx in ctxs {
                self.actions.push(Action::ReadReady { ctx, index });
            }
            return;
        }
        self.read_round += 1;
        let round = self.read_round;
        for &ctx in ctxs {
            self.reads.push_back(PendingRead { ctx, index, round });
        }
        self.bcast_heartbeats_now();
        self.maybe_release_reads();
    }

    /// The term's no-op committed: start the reads that waited for it.
    pub(super) fn start_waiting_reads(&mut self) {
        if self.reads_waiting.is_empty() || !self.noop_committed() {
            return;
        }
        let ctxs = std::mem::take(&mut self.reads_waiting);
        let index = self.log.committed();
        self.start_reads(&ctxs, index);
        self.reads_waiting = ctxs;
        self.reads_waiting.clear();
    }

    /// Releases every read whose round a quorum has acknowledged.
    pub(super) fn maybe_release_reads(&mut self) {
        if self.reads.is_empty() {
            return;
        }
        let (me, own_round) = (self.opts.id, self.read_round);
        let progress = &self.progress;
        let confirmed = joint_quorum_value(
            self.membership.effective(),
            |p| match p {
                p if *p == me => own_round,
                p => progress.get(p).map_or(0, |pr| pr.last_ack_round),
            },
            &mut self.scratch,
        );
        while let Some(read) = self.reads.front().copied() {
            if read.round > confirmed {
                break;
            }
            self.reads.pop_front();
            self.actions.push(Action::ReadReady {
                ctx: read.ctx,
                index: read.index,
            });
        }
    }

    /// True while this leader may serve reads from its lease.
    fn lease_valid(&mut self) -> bool {
        let now = self.now_ms;
        self.leader_lease_until_ms()
            .is_some_and(|until| now < until)
    }

    /// Sends every follower a heartbeat now (carrying the current round).
    pub(super) fn bcast_heartbeats_now(&mut self) {
        for i in 0..self.peer_ids.len() {
            let peer = self.peer_ids[i];
            self.send_heartbeat(peer);
        }
    }

    /// An empty AppendEntries at the follower's known match point.
    pub(super) fn send_heartbeat(&mut self, peer: crate::types::PeerId) {
        let Some(pr) = self.progress.get(&peer) else {
            return;
        };
        let match_index = pr.match_index;
        let prev = LogId::new(match_index, self.log.term_at(match_index).unwrap_or(0));
        self.send_append(peer, self.append_send(prev, match_index));
    }
}
