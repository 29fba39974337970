//! The follower's side of replication: checking and accepting AppendEntries, deciding
//! truncations, the follower commit rule, and durable acknowledgements.
//!
//! Rules kept here: truncate only where a received entry conflicts (same index, different
//! term), never at or below the commit index; commit = min(leader commit, the last index known
//! to match that leader's log); acknowledge an index only once it is durable.

use crate::core::message::{AppendEntriesRequest, AppendEntriesResponse, Message};
use crate::core::options::bug;
use crate::core::{Action, PendingAck, RaftCore, Role};
use crate::types::{EntryType, LogId, PeerId};

impl RaftCore {
    /// Takes `from` as the leader of `term` (at least this peer's term) after an
    /// AppendEntries or InstallSnapshot: follows it, adopting the term, and renews the
    /// follower lease and the election timer. Returns false, changing nothing, when this peer
    /// leads that term itself: two leaders of one term means a bug elsewhere, and the
    /// request (`what`) is dropped.
    pub(super) fn accept_leader(&mut self, from: PeerId, term: u64, what: &str) -> bool {
        if term == self.term && self.role == Role::Leader {
            slog::error!(self.logger, "a request from another leader of my own term";
                "request" => what, "from" => %from, "term" => self.term);
            return false;
        }
        if term > self.term || self.role != Role::Follower || self.leader != Some(from) {
            self.become_follower(term, Some(from));
        }
        self.follower_lease.renew(self.now_ms);
        self.timers.election_base_ms = self.now_ms;
        true
    }

    pub(super) fn handle_append_entries(&mut self, from: PeerId, req: &AppendEntriesRequest) {
        if req.term < self.term {
            // A deposed leader: tell it the term so it steps down.
            let (prev, sent_ms, round) = (req.prev.index, req.sent_ms, req.round);
            self.reply_append(from, false, prev, LogId::default(), sent_ms, round);
            return;
        }
        if let Err(e) = req.validate() {
            slog::warn!(self.logger, "ignored a malformed AppendEntries";
                "from" => %from, "error" => %e);
            return;
        }
        if !self.accept_leader(from, req.term, "AppendEntries") {
            return;
        }
        if self.installing.is_none() && req.prev.index < self.log.base().index {
            // The leader probes below this peer's snapshot: what the snapshot covers is
            // committed, so it matches every current leader. Tell the leader where the durable
            // committed prefix ends instead of rejecting a position this log cannot show.
            let index = self.log.committed().min(self.log.durable());
            self.leader_match_index = self.leader_match_index.max(index);
            self.queue_ack(from, index, req.sent_ms, req.round);
            return;
        }
        if self.installing.is_some() || !self.log.matches(req.prev) {
            // While a snapshot installs, the log is frozen: the rejection still answers the
            // leader's round and renews its lease.
            let hint = self.log.last_at_or_below(req.prev.index, req.prev.term);
            self.reply_append(from, false, req.prev.index, hint, req.sent_ms, req.round);
            return;
        }
        if !self.accept_entries(req) {
            return;
        }
        let matched = req.last_id().index;
        self.leader_match_index = self.leader_match_index.max(matched);
        let target = req.commit.min(self.leader_match_index);
        if self.log.commit_to(target) {
            self.emit_committed();
        }
        self.queue_ack(from, matched, req.sent_ms, req.round);
    }

    /// Where the request's entries stop matching this log: the position of the first entry
    /// to append, and whether a conflicting suffix must be truncated before it.
    fn find_new_entries(&self, req: &AppendEntriesRequest) -> (usize, bool) {
        for (k, e) in req.entries.iter().enumerate() {
            match self.log.term_at(e.id.index) {
                Some(t) if t == e.id.term => continue,
                Some(_) => return (k, true),
                None => return (k, false),
            }
        }
        (req.entries.len(), false)
    }

    /// Appends the entries this log does not hold yet, truncating a conflicting suffix first.
    /// Returns false if the request would truncate committed entries (it is then ignored).
    fn accept_entries(&mut self, req: &AppendEntriesRequest) -> bool {
        let (append_from, conflict) = self.find_new_entries(req);
        if conflict {
            let (entry, commit) = (req.entries[append_from].id, self.log.committed());
            if entry.index <= commit {
                slog::error!(self.logger, "refused an AppendEntries conflicting with commit";
                    "entry" => %entry, "commit" => commit);
                return false;
            }
            self.truncate_log(entry.index - 1);
        }
        let last = req.last_id().index;
        let stale = append_from == req.entries.len() && !req.entries.is_empty();
        if stale && bug!(self, truncate_below_commit) && self.log.last_index() > last {
            // The bug: treat a stale request as the whole truth about the log's tail.
            self.log.truncate_after(last, true);
            self.membership.on_truncate(last);
            self.leader_match_index = self.leader_match_index.min(last);
            self.actions.push(Action::TruncateLog { after: last });
        }
        if append_from < req.entries.len() {
            let new = &req.entries[append_from..];
            self.log.append_received(new);
            for e in new.iter().filter(|e| e.kind == EntryType::Configuration) {
                if let Some(conf) = &e.conf {
                    self.membership.on_append(e.id.index, (**conf).clone());
                    self.conf_forced = false; // a leader's configuration supersedes it
                }
            }
            self.actions.push(Action::AppendReceived {
                range: append_from..req.entries.len(),
            });
        }
        true
    }

    /// Drops the log after `after` (never committed entries) and the configurations in it.
    fn truncate_log(&mut self, after: u64) {
        slog::info!(self.logger, "truncating a conflicting suffix";
            "after" => after, "last" => %self.log.last_id());
        self.log.truncate_after(after, false);
        self.membership.on_truncate(after);
        self.actions.push(Action::TruncateLog { after });
    }

    /// Records that requests up to `index` matched; the acknowledgement goes out once durable.
    pub(super) fn queue_ack(&mut self, to: PeerId, index: u64, sent_ms: u64, round: u64) {
        let ack = self.pending_ack.get_or_insert(PendingAck {
            to,
            index,
            sent_ms,
            round,
        });
        ack.index = ack.index.max(index);
        ack.sent_ms = ack.sent_ms.max(sent_ms);
        ack.round = ack.round.max(round);
        self.maybe_send_ack();
    }

    /// Sends the pending acknowledgement if what it covers is durable. The acknowledged index
    /// is everything durable that matches the leader, which may be more than was asked.
    pub(super) fn maybe_send_ack(&mut self) {
        let Some(ack) = self.pending_ack else { return };
        let durable_match = self.leader_match_index.min(self.log.durable());
        if durable_match < ack.index {
            return;
        }
        self.pending_ack = None;
        let (sent_ms, round) = (ack.sent_ms, ack.round);
        self.reply_append(
            ack.to,
            true,
            durable_match,
            LogId::default(),
            sent_ms,
            round,
        );
    }

    pub(super) fn reply_append(
        &mut self,
        to: PeerId,
        success: bool,
        index: u64,
        hint: LogId,
        sent_ms: u64,
        round: u64,
    ) {
        let resp = AppendEntriesResponse {
            term: self.term,
            success,
            index,
            hint,
            sent_ms,
            round,
        };
        self.send(to, Message::AppendEntriesResponse(resp));
    }
}
