//! Membership changes by joint consensus (Raft thesis section 4.3, braft's
//! ConfigurationCtx): catch up, then `C_old,new`, then `C_new`.
//!
//! A change moves the stable effective configuration to a stable target (voters and
//! learners). New voters first replicate as non-voting peers until their log is within
//! `catchup_margin` entries of the leader's; a voter whose log stops moving for an election
//! timeout fails the change (`Timeout`). Then the leader appends `C_old,new` (or, when the
//! voters do not change, the target itself: learners alone never change a quorum), and once
//! that commits, `C_new`. A configuration takes effect when appended (Raft's rule); joint
//! decisions need both majorities (`ballot_box`). A leader that is not a voter of `C_new`
//! leads until `C_new` commits, then steps down; not being a voter, it never campaigns. A
//! leader elected while the configuration is joint finishes the change itself.
//!
//! Rules kept here: one change at a time, none before the term's no-op commits, none while
//! an earlier configuration entry is uncommitted.

use crate::core::membership::Membership;
use crate::core::progress::Progress;
use crate::core::{Action, RaftCore, Role};
use crate::error::RaftError;
use crate::types::Configuration;

/// Where a change is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Phase {
    /// New voters are catching up.
    CatchingUp,
    /// `C_old,new` was appended at this index.
    Joint(u64),
    /// The target was appended at this index.
    Leaving(u64),
}

/// A change in progress on the leader.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct ConfChange {
    pub(crate) ctx: u64,
    pub(crate) target: Configuration,
    pub(crate) phase: Phase,
}

impl RaftCore {
    pub(super) fn handle_change_configuration(&mut self, ctx: u64, target: &Configuration) {
        let done = |result| Action::ConfChangeDone { ctx, result };
        if self.role != Role::Leader {
            let leader = self.leader;
            self.actions
                .push(done(Err(RaftError::NotLeader { leader })));
            return;
        }
        if target.is_joint() || target.voters().is_empty() {
            let why = format!("a target configuration must be stable with voters: {target:?}");
            self.actions.push(done(Err(RaftError::invalid(why))));
            return;
        }
        let effective = self.membership.effective();
        let uncommitted = self.membership.effective_index() > self.log.committed();
        let busy = self.conf_change.is_some() || self.transfer.is_some();
        if busy || effective.is_joint() || uncommitted || !self.noop_committed() {
            self.actions.push(done(Err(RaftError::Busy)));
            return;
        }
        if effective == target {
            self.actions.push(done(Ok(())));
            return;
        }
        slog::info!(self.logger, "configuration change: catching up";
            "from" => ?effective, "to" => ?target);
        self.conf_change = Some(ConfChange {
            ctx,
            target: target.clone(),
            phase: Phase::CatchingUp,
        });
        self.sync_progress();
        self.bcast_append();
        self.advance_conf_change();
    }

    /// braft's `reset_peers`: forces `conf` in a new term, without consensus (see
    /// [`Event::ResetConfiguration`](crate::core::Event::ResetConfiguration)).
    pub(super) fn handle_reset_configuration(&mut self, ctx: u64, conf: &Configuration) {
        let done = |result| Action::ConfChangeDone { ctx, result };
        if conf.is_joint() || conf.voters().is_empty() {
            let why = format!("a forced configuration must be stable with voters: {conf:?}");
            self.actions.push(done(Err(RaftError::invalid(why))));
            return;
        }
        if self.conf_change.is_some() || self.installing.is_some() {
            self.actions.push(done(Err(RaftError::Busy)));
            return;
        }
        slog::warn!(self.logger, "configuration forced without consensus";
            "from" => ?self.membership.effective(), "to" => ?conf);
        // Recorded at the commit index: a leader's truncation never reaches it, so the forced
        // configuration stays below every entry a leader may later append.
        self.membership = Membership::new(self.log.committed(), conf.clone());
        self.conf_forced = true;
        self.become_follower(self.term + 1, None);
        self.follower_lease.expire();
        self.actions.push(done(Ok(())));
        if conf.is_stable() && conf.voters().len() == 1 && conf.is_voter(&self.opts.id) {
            self.become_candidate(false); // alone: elect itself at once
        }
    }

    /// A new leader whose configuration was forced appends it, so followers learn it.
    pub(super) fn maybe_log_forced_configuration(&mut self) {
        if self.conf_forced && self.role == Role::Leader {
            self.conf_forced = false;
            let conf = self.membership.effective().clone();
            self.append_configuration(conf);
        }
    }

    /// Moves the change in progress, and a joint configuration left by an earlier leader,
    /// as far as replication and commit allow.
    pub(super) fn advance_conf_change(&mut self) {
        if self.role != Role::Leader {
            return;
        }
        let committed = self.log.committed();
        if let Some(change) = &self.conf_change {
            match change.phase {
                Phase::CatchingUp if self.new_voters_caught_up(&change.target) => {
                    let effective = self.membership.effective();
                    let next = if effective.voters() == change.target.voters() {
                        change.target.clone()
                    } else {
                        match effective.joint_to(&change.target) {
                            Ok(joint) => joint,
                            Err(e) => return self.fail_conf_change(e),
                        }
                    };
                    let index = self.append_configuration(next);
                    self.set_phase(if self.membership.effective().is_joint() {
                        Phase::Joint(index)
                    } else {
                        Phase::Leaving(index)
                    });
                }
                Phase::Leaving(index) if index <= committed => {
                    let ctx = change.ctx;
                    self.conf_change = None;
                    slog::info!(self.logger, "configuration change committed";
                        "conf" => ?self.membership.effective());
                    self.actions.push(Action::ConfChangeDone {
                        ctx,
                        result: Ok(()),
                    });
                }
                _ => {}
            }
        }
        self.maybe_leave_joint();
        self.maybe_step_down_removed();
    }

    /// Appends `C_new` once the joint configuration in force has committed.
    fn maybe_leave_joint(&mut self) {
        let effective = self.membership.effective();
        if !effective.is_joint() || self.membership.effective_index() > self.log.committed() {
            return;
        }
        let new = effective.leave_joint();
        let index = self.append_configuration(new);
        if self.conf_change.is_some() {
            self.set_phase(Phase::Leaving(index));
        }
    }

    /// A leader that is not a voter of the committed, stable configuration steps down.
    fn maybe_step_down_removed(&mut self) {
        let conf = self.membership.effective();
        let settled = conf.is_stable() && self.membership.effective_index() <= self.log.committed();
        if settled && !conf.is_voter(&self.opts.id) && self.role == Role::Leader {
            slog::info!(self.logger, "removed from the configuration: stepping down";
                "term" => self.term);
            self.removed = true;
            self.become_follower(self.term, None);
        }
    }

    fn set_phase(&mut self, phase: Phase) {
        if let Some(change) = self.conf_change.as_mut() {
            change.phase = phase;
        }
    }

    /// True when every voter of `target` that does not vote now is within the margin.
    fn new_voters_caught_up(&self, target: &Configuration) -> bool {
        let last = self.log.last_index();
        let margin = self.opts.catchup_margin;
        let effective = self.membership.effective();
        target
            .voters()
            .iter()
            .filter(|p| !effective.voters().contains(p) && **p != self.opts.id)
            .all(|p| {
                self.progress
                    .get(p)
                    .is_some_and(|pr| pr.match_index + margin >= last)
            })
    }

    /// Every heartbeat: a new voter whose log has not moved for an election timeout while
    /// it is still beyond the margin fails the change.
    pub(super) fn check_catch_up_progress(&mut self) {
        let Some(change) = &self.conf_change else {
            return;
        };
        if change.phase != Phase::CatchingUp {
            return;
        }
        let (last, margin, now) = (self.log.last_index(), self.opts.catchup_margin, self.now_ms);
        let timeout = self.opts.election_timeout_ms;
        let effective = self.membership.effective();
        // A peer installing a snapshot cannot move its match index until the copy is done;
        // it counts as catching up while it keeps answering heartbeats.
        let stuck = change.target.voters().iter().find(|p| {
            !effective.voters().contains(p)
                && **p != self.opts.id
                && self.progress.get(p).is_some_and(|pr| {
                    let installing = pr.snapshot.is_some()
                        && pr.last_ack_sent_ms.is_some_and(|a| now < a + timeout);
                    pr.match_index + margin < last
                        && now >= pr.match_moved_ms + timeout
                        && !installing
                })
        });
        if let Some(peer) = stuck.copied() {
            slog::warn!(self.logger, "configuration change: a new voter does not catch up";
                "peer" => %peer);
            self.fail_conf_change(RaftError::Timeout);
        }
    }

    fn fail_conf_change(&mut self, error: RaftError) {
        if let Some(change) = self.conf_change.take() {
            self.actions.push(Action::ConfChangeDone {
                ctx: change.ctx,
                result: Err(error),
            });
            self.sync_progress();
        }
    }

    /// Appends a configuration entry of this term; it takes effect at once.
    fn append_configuration(&mut self, conf: Configuration) -> u64 {
        let (_, id) = self.log.append_local(1, self.term);
        slog::info!(self.logger, "appending a configuration"; "id" => %id, "conf" => ?conf);
        self.membership.on_append(id.index, conf.clone());
        self.actions.push(Action::AppendConfiguration { id, conf });
        self.sync_progress();
        self.bcast_append();
        id.index
    }

    /// Makes the progress map cover exactly the peers of the effective configuration and
    /// those of a change's target, except this peer.
    pub(super) fn sync_progress(&mut self) {
        let me = self.opts.id;
        let mut set = self.membership.effective().all_peers();
        if let Some(change) = &self.conf_change {
            set.extend(change.target.all_peers());
        }
        set.remove(&me);
        let wanted: Vec<_> = set.into_iter().collect();
        let (next_index, window, now) = (
            self.log.last_index() + 1,
            self.opts.max_inflight_appends,
            self.now_ms,
        );
        self.progress.retain(|p, _| wanted.binary_search(p).is_ok());
        for p in &wanted {
            self.progress.entry(*p).or_insert_with(|| {
                let mut pr = Progress::new(next_index, window);
                pr.match_moved_ms = now;
                pr
            });
        }
        self.peer_ids = wanted;
    }
}
