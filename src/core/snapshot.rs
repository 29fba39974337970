//! Snapshot decisions: compaction after a local snapshot, offering the snapshot to a follower
//! whose next entry was compacted away, and accepting (or refusing as stale) an offer.
//!
//! The files themselves move in the shell; the core only decides. A follower accepts an offer
//! that is beyond its commit index and not already in its log; while it installs, its log and
//! commit index are frozen (appends are answered with a rejection that still renews the
//! leader's lease) and it does not campaign. The install ends with
//! [`Event::SnapshotInstalled`](crate::core::Event::SnapshotInstalled): the log restarts after
//! the snapshot, everything up to it committed, and the leader is told.
//!
//! Rules kept here: compact only what a durable snapshot covers and what is committed
//! (purged <= snapshot <= applied <= committed); never install at or below the commit index;
//! a snapshot offer unanswered for an election timeout is made again (offers can be lost).

use crate::core::membership::Membership;
use crate::core::message::{InstallSnapshotRequest, Message};
use crate::core::progress::ProgressState;
use crate::core::{Action, RaftCore};
use crate::types::{Configuration, LogId, PeerId};

/// A follower's install in progress.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Installing {
    pub(crate) from: PeerId,
    pub(crate) term: u64,
    pub(crate) last: LogId,
    pub(crate) conf: Configuration,
    pub(crate) sent_ms: u64,
    pub(crate) round: u64,
}

impl RaftCore {
    pub(super) fn handle_snapshot_saved(&mut self, last: LogId, conf: &Configuration) {
        if last.index <= self.snapshot.index {
            return; // not newer than the one we know
        }
        let in_log = self.log.term_at(last.index);
        if last.index > self.log.committed() || in_log.is_some_and(|t| t != last.term) {
            slog::error!(self.logger, "ignored a snapshot that is not of the committed log";
                "snapshot" => %last, "commit" => self.log.committed());
            return;
        }
        self.snapshot = last;
        self.snapshot_conf = conf.clone();
        let upto = last.index.saturating_sub(self.opts.snapshot_log_margin);
        if upto > self.log.base().index {
            self.log.compact_to(upto);
            self.actions.push(Action::CompactLog { upto });
        }
    }

    /// Leader: offers the snapshot to `to`, whose next entry the log no longer holds.
    pub(super) fn send_snapshot(&mut self, to: PeerId) {
        let now = self.now_ms;
        let Some(pr) = self.progress.get_mut(&to) else {
            return;
        };
        debug_assert!(self.snapshot.index >= self.log.base().index);
        pr.become_snapshot(self.snapshot.index, now);
        slog::info!(self.logger, "offering a snapshot";
            "peer" => %to, "snapshot" => %self.snapshot);
        let req = InstallSnapshotRequest {
            term: self.term,
            last: self.snapshot,
            conf: self.snapshot_conf.clone(),
            sent_ms: now,
            round: self.read_round,
        };
        self.send(to, Message::InstallSnapshot(req));
    }

    /// Leader, every heartbeat: re-offers a snapshot unanswered for an election timeout.
    /// Returns true if the follower is waiting for a snapshot (it then gets a heartbeat).
    pub(super) fn maybe_resend_snapshot(&mut self, to: PeerId) -> bool {
        let Some(pr) = self.progress.get(&to) else {
            return false;
        };
        let Some((_, sent_ms)) = pr.snapshot else {
            return false;
        };
        if self.now_ms >= sent_ms + self.opts.election_timeout_ms {
            self.send_snapshot(to);
        }
        true
    }

    pub(super) fn handle_install_snapshot(&mut self, from: PeerId, req: &InstallSnapshotRequest) {
        if req.term < self.term {
            self.reply_append(from, false, 0, LogId::default(), req.sent_ms, req.round);
            return;
        }
        if !self.accept_leader(from, req.term, "InstallSnapshot") {
            return;
        }
        if self.installing.is_some() {
            return; // one install at a time; the leader offers again if this one is older
        }
        if req.last.index <= self.log.committed() {
            // Stale: everything it holds is committed here already.
            let index = req.last.index.min(self.log.durable());
            self.reply_append(from, true, index, LogId::default(), req.sent_ms, req.round);
            return;
        }
        if self.log.matches(req.last) {
            // The log holds it: no install needed, and everything up to it is committed.
            self.leader_match_index = self.leader_match_index.max(req.last.index);
            if self.log.commit_to(req.last.index) {
                self.emit_committed();
            }
            self.queue_ack(from, req.last.index, req.sent_ms, req.round);
            return;
        }
        slog::info!(self.logger, "installing a snapshot"; "from" => %from, "snapshot" => %req.last);
        self.pending_ack = None;
        self.installing = Some(Installing {
            from,
            term: req.term,
            last: req.last,
            conf: req.conf.clone(),
            sent_ms: req.sent_ms,
            round: req.round,
        });
        self.actions.push(Action::InstallSnapshot {
            from,
            last: req.last,
            conf: req.conf.clone(),
        });
    }

    pub(super) fn handle_snapshot_installed(&mut self, last: LogId, ok: bool) {
        if self.installing.as_ref().map(|i| i.last) != Some(last) {
            slog::warn!(self.logger, "ignored a report of an install not in progress";
                "snapshot" => %last);
            return;
        }
        let inst = self.installing.take().expect("invariant: checked above");
        if !ok {
            slog::warn!(self.logger, "snapshot install failed"; "snapshot" => %last);
            return;
        }
        self.log.reset_to(last);
        self.membership = Membership::new(last.index, inst.conf.clone());
        self.handed_index = last.index;
        self.snapshot = last;
        self.snapshot_conf = inst.conf;
        self.leader_match_index = last.index;
        self.pending_ack = None;
        slog::info!(self.logger, "snapshot installed"; "snapshot" => %last);
        if self.leader == Some(inst.from) && self.term == inst.term {
            self.reply_append(
                inst.from,
                true,
                last.index,
                LogId::default(),
                inst.sent_ms,
                inst.round,
            );
        }
    }

    /// True if the follower `to` waits for a snapshot.
    pub(super) fn awaits_snapshot(&self, to: &PeerId) -> bool {
        self.progress
            .get(to)
            .is_some_and(|pr| pr.state == ProgressState::Snapshot)
    }
}
