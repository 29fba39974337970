//! Leader transfer (braft's `transfer_leadership_to`, Raft thesis section 3.10): the leader
//! stops taking proposals (they answer `Busy`), brings the target's log up to its own, sends
//! it TimeoutNow so it campaigns at once (its vote requests carry the transfer flag, which
//! voters honour despite their follower leases), and resumes if leadership has not moved
//! within an election timeout.
//!
//! Rules kept here: one transfer at a time and none during a configuration change; the
//! target is a voter of the effective configuration; TimeoutNow only once the target holds
//! the leader's whole log; after TimeoutNow the leader lease is void for the rest of the term.

use crate::core::message::{Message, TimeoutNow};
use crate::core::{Action, RaftCore, Role};
use crate::error::RaftError;
use crate::types::PeerId;

/// A transfer in progress.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Transfer {
    pub(crate) ctx: u64,
    pub(crate) to: PeerId,
    /// When the transfer is abandoned (leader clock).
    pub(crate) deadline_ms: u64,
    pub(crate) timeout_now_sent: bool,
}

impl RaftCore {
    pub(super) fn handle_transfer_leader(&mut self, ctx: u64, to: PeerId) {
        let refuse = |error| Action::TransferDone {
            ctx,
            to,
            result: Err(error),
        };
        if self.role != Role::Leader {
            let leader = self.leader;
            self.actions.push(refuse(RaftError::NotLeader { leader }));
            return;
        }
        if to == self.opts.id {
            self.actions.push(Action::TransferDone {
                ctx,
                to,
                result: Ok(()),
            });
            return;
        }
        let conf = self.membership.effective();
        if self.transfer.is_some() || self.conf_change.is_some() || conf.is_joint() {
            self.actions.push(refuse(RaftError::Busy));
            return;
        }
        if !conf.voters().contains(&to) {
            let why = format!("transfer target {to} is not a voter of {conf:?}");
            self.actions.push(refuse(RaftError::invalid(why)));
            return;
        }
        slog::info!(self.logger, "transferring leadership"; "to" => %to, "term" => self.term);
        self.transfer = Some(Transfer {
            ctx,
            to,
            deadline_ms: self.now_ms + self.opts.election_timeout_ms,
            timeout_now_sent: false,
        });
        while self.maybe_send_append(to) {}
        self.maybe_send_timeout_now();
    }

    /// Sends TimeoutNow once the target holds the whole log.
    pub(super) fn maybe_send_timeout_now(&mut self) {
        let Some(t) = self.transfer else { return };
        let caught_up = self
            .progress
            .get(&t.to)
            .is_some_and(|pr| pr.match_index == self.log.last_index());
        if t.timeout_now_sent || !caught_up {
            return;
        }
        self.transfer = Some(Transfer {
            timeout_now_sent: true,
            ..t
        });
        self.lease_void = true;
        let term = self.term;
        self.send(t.to, Message::TimeoutNow(TimeoutNow { term }));
    }

    /// Abandons a transfer whose deadline passed: proposals are taken again.
    pub(super) fn check_transfer_deadline(&mut self) {
        let Some(t) = self.transfer else { return };
        if self.now_ms < t.deadline_ms {
            return;
        }
        slog::warn!(self.logger, "leader transfer timed out: resuming"; "to" => %t.to);
        self.transfer = None;
        self.actions.push(Action::TransferDone {
            ctx: t.ctx,
            to: t.to,
            result: Err(RaftError::Timeout),
        });
    }
}
