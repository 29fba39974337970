//! Configuration changes and leader transfers asked of the leader at random times: grow,
//! shrink, replace the leader, add a learner, promote a learner, remove a learner; hand
//! leadership to another voter. Refusals (busy, not leader) are part of the run.

use std::collections::BTreeSet;

use crate::core::{Event, Role};
use crate::sim::world::{Ev, StepCtx, World};
use crate::types::{Configuration, PeerId};

/// Voters a change keeps at least and at most. Two-voter groups are where a removed leader
/// can hold the only copy of `C_new` that the other voter needs (openraft issue 2091).
const VOTERS_MIN: usize = 2;
const VOTERS_MAX: usize = 5;

impl World {
    pub(crate) fn schedule_membership(&mut self) {
        if let Some(gap) = self.params.membership_gap_us(&mut self.rng) {
            self.schedule(gap, Ev::Membership);
        }
    }

    pub(crate) fn schedule_transfer(&mut self) {
        if let Some(gap) = self.params.transfer_gap_us(&mut self.rng) {
            self.schedule(gap, Ev::Transfer);
        }
    }

    /// The peer that believes it leads (any term), if one is up.
    pub(crate) fn leader_index(&self) -> Option<usize> {
        self.nodes
            .iter()
            .position(|n| n.core.as_ref().is_some_and(|c| c.role() == Role::Leader))
    }

    /// Asks the leader for a random configuration change.
    pub(crate) fn change_membership(&mut self) -> Result<(), String> {
        if self.healed_at_us.is_some() {
            return Ok(());
        }
        self.schedule_membership();
        let Some(l) = self.leader_index() else {
            return Ok(());
        };
        let conf = self.nodes[l].core().configuration().clone();
        let Some(target) = self.random_target(&conf, l) else {
            return Ok(());
        };
        let ctx = self.ctx();
        self.stats.conf_changes_asked += 1;
        self.note(|| format!("peer {l}: asked to change {conf} to {target}"));
        let event = Event::ChangeConfiguration {
            ctx,
            target: &target,
        };
        self.step_node(l, event, StepCtx::None)
    }

    /// A random stable target reachable from `conf` by one kind of change.
    fn random_target(&mut self, conf: &Configuration, leader: usize) -> Option<Configuration> {
        if conf.is_joint() {
            return None;
        }
        let mut voters = conf.voters().clone();
        let mut learners = conf.learners().clone();
        let spares: Vec<PeerId> = self
            .ids
            .iter()
            .filter(|p| !conf.contains(p))
            .copied()
            .collect();
        let pick = |rng: &mut crate::types::Rng, set: &[PeerId]| {
            (!set.is_empty()).then(|| set[rng.range(0, set.len() as u64) as usize])
        };
        let voter_list: Vec<PeerId> = voters.iter().copied().collect();
        let learner_list: Vec<PeerId> = learners.iter().copied().collect();
        match self.rng.range(0, 6) {
            0 if voters.len() < VOTERS_MAX => {
                voters.insert(pick(&mut self.rng, &spares)?);
            }
            1 if voters.len() > VOTERS_MIN => {
                voters.remove(&pick(&mut self.rng, &voter_list)?);
            }
            2 => {
                // Replace the leader by a spare or a learner.
                let pool: Vec<PeerId> = spares.iter().chain(&learner_list).copied().collect();
                let new = pick(&mut self.rng, &pool)?;
                voters.remove(&self.ids[leader]);
                learners.remove(&new);
                voters.insert(new);
            }
            3 => {
                learners.insert(pick(&mut self.rng, &spares)?);
            }
            4 if voters.len() < VOTERS_MAX => {
                let p = pick(&mut self.rng, &learner_list)?;
                learners.remove(&p);
                voters.insert(p);
            }
            5 => {
                learners.remove(&pick(&mut self.rng, &learner_list)?);
            }
            _ => return None,
        }
        Configuration::from_parts(voters, learners, BTreeSet::new()).ok()
    }

    /// Asks the leader to hand leadership to another voter.
    pub(crate) fn transfer_leader(&mut self) -> Result<(), String> {
        if self.healed_at_us.is_some() {
            return Ok(());
        }
        self.schedule_transfer();
        let Some(l) = self.leader_index() else {
            return Ok(());
        };
        let me = self.ids[l];
        let others: Vec<PeerId> = self.nodes[l]
            .core()
            .configuration()
            .voters()
            .iter()
            .filter(|p| **p != me)
            .copied()
            .collect();
        if others.is_empty() {
            return Ok(());
        }
        let to = others[self.rng.range(0, others.len() as u64) as usize];
        self.stats.transfers_asked += 1;
        self.note(|| format!("peer {l}: asked to transfer leadership to {to}"));
        let ctx = self.ctx();
        self.step_node(l, Event::TransferLeader { ctx, to }, StepCtx::None)
    }
}
