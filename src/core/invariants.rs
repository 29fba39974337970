//! [`RaftCore::check_invariants`]: every `Invariant:` of the core checked in one place, for
//! tests and the simulator to call after each step.

use crate::core::{RaftCore, Role, TimerKind};

impl RaftCore {
    /// Checks the core's invariants; the error names the first one broken.
    pub fn check_invariants(&self) -> Result<(), String> {
        self.check_inner().map_err(|e| {
            format!(
                "{} (peer {}, term {}, role {:?}, commit {}, last {})",
                e,
                self.opts.id,
                self.term,
                self.role,
                self.log.committed(),
                self.log.last_id()
            )
        })
    }

    fn check_inner(&self) -> Result<(), String> {
        self.log.check()?;
        self.membership.check()?;
        if self.handed_index != self.log.committed() {
            return Err(format!("handed out {} != commit", self.handed_index));
        }
        if self.persisted.term > self.term {
            return Err(format!("persisted term {} ahead", self.persisted.term));
        }
        if !self.outbox.is_empty() && self.hard_state_durable() {
            return Err("messages held although the hard state is durable".into());
        }
        if self.leader_match_index > self.log.last_index() {
            return Err(format!(
                "leader match {} beyond the log",
                self.leader_match_index
            ));
        }
        if self.pending_ack.is_some() && (self.role != Role::Follower || self.leader.is_none()) {
            return Err("an acknowledgement pending outside a followed term".into());
        }
        let base = self.log.base();
        if base.index > self.snapshot.index || self.snapshot.index > self.log.committed() {
            return Err(format!(
                "purged {} / snapshot {} / commit {} out of order",
                base,
                self.snapshot,
                self.log.committed()
            ));
        }
        if self.installing.is_some() && (self.role != Role::Follower || self.pending_ack.is_some())
        {
            return Err("an install in progress outside a quiet follower".into());
        }
        let leading = self.role == Role::Leader;
        let leader_only = !self.reads.is_empty()
            || !self.reads_waiting.is_empty()
            || self.transfer.is_some()
            || self.conf_change.is_some()
            || self.lease_void;
        if leader_only && !leading {
            return Err("leader requests kept outside leadership".into());
        }
        let rounds_sorted = self
            .reads
            .iter()
            .zip(self.reads.iter().skip(1))
            .all(|(a, b)| a.round <= b.round && b.round <= self.read_round);
        if !rounds_sorted {
            return Err("read rounds out of order".into());
        }
        self.check_role()
    }

    fn check_role(&self) -> Result<(), String> {
        let me = Some(self.opts.id);
        let armed = |k: TimerKind| self.timers.armed(k).is_some();
        let leader_only_timers = armed(TimerKind::StepDown) || armed(TimerKind::Heartbeat);
        match self.role {
            Role::Leader => {
                if self.voted_for != me || self.leader != me {
                    return Err("a leader that did not vote for itself".into());
                }
                if armed(TimerKind::Election) || armed(TimerKind::Vote) || !leader_only_timers {
                    return Err("leader timers wrong".into());
                }
                let mut peers = self.membership.effective().all_peers();
                if let Some(change) = &self.conf_change {
                    peers.extend(change.target.all_peers());
                }
                peers.remove(&self.opts.id);
                let want = peers.len();
                let same =
                    self.progress.keys().eq(peers.iter()) && self.peer_ids.iter().eq(peers.iter());
                if !same {
                    return Err(format!(
                        "{} progress entries for {want} peers",
                        self.progress.len()
                    ));
                }
                for (p, pr) in &self.progress {
                    pr.check(self.log.last_id())
                        .map_err(|e| format!("progress of {p}: {e}"))?;
                }
            }
            Role::Candidate => {
                if self.voted_for != me || self.leader.is_some() || !armed(TimerKind::Vote) {
                    return Err("candidate state wrong".into());
                }
            }
            Role::PreCandidate | Role::Follower => {
                if self.leader == me || armed(TimerKind::Vote) || leader_only_timers {
                    return Err("follower state wrong".into());
                }
            }
        }
        if self.role != Role::Leader && !(self.progress.is_empty() && self.peer_ids.is_empty()) {
            return Err("progress kept outside leadership".into());
        }
        Ok(())
    }
}
