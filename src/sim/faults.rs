//! Fault injection and healing: the nemesis of a random run, the final heal, and the liveness
//! and convergence watch after it.
//!
//! Faults, each with why Raft must survive it: partitions (symmetric, one-way, bridge) because
//! networks split and links fail in one direction; loss, duplication and reordering because
//! the transport may drop, resend or delay frames; crash-restart losing every unsynced write
//! because processes die and only synced data survives; pauses because a process can stall
//! (GC, swapping, a stopped VM) and wake up with stale beliefs and late timers.

use crate::core::Role;

/// After the heal, the members must converge within this much simulated time.
const CONVERGE_MAX_US: u64 = 120_000_000;
use crate::sim::network::LinkFaults;
use crate::sim::world::{Ev, World};

impl World {
    /// The nemesis: one random fault, then the next one is scheduled.
    pub(crate) fn inject_fault(&mut self) -> Result<(), String> {
        if self.healed_at_us.is_some() {
            return Ok(());
        }
        let n = self.nodes.len();
        // Half the actions aim at the current leader, the peer whose faults matter most.
        let target = match self.leader_index() {
            Some(l) if self.rng.chance(0.5) => l,
            _ => self.rng.range(0, n as u64) as usize,
        };
        match self.rng.range(0, 100) {
            0..=19 => {
                self.note(|| "nemesis: heal the network".into());
                self.net.heal();
            }
            20..=29 => {
                let side: Vec<bool> = (0..n).map(|_| self.rng.chance(0.5)).collect();
                self.note(|| format!("nemesis: partition {side:?}"));
                self.net.partition(&side);
                self.stats.faults.partitions += 1;
            }
            30..=37 => {
                let side: Vec<bool> = (0..n).map(|i| i == target).collect();
                self.note(|| format!("nemesis: isolate {target}"));
                self.net.partition(&side);
                self.stats.faults.partitions += 1;
            }
            38..=45 => {
                let (a, b) = self.two_peers();
                self.note(|| format!("nemesis: cut {a} -> {b}"));
                self.net.set_cut(a, b, true);
                self.stats.faults.one_way += 1;
            }
            46..=53 => {
                let left: Vec<bool> = (0..n).map(|_| self.rng.chance(0.5)).collect();
                self.note(|| format!("nemesis: bridge {target} between {left:?}"));
                self.net.bridge(target, &left);
                self.stats.faults.bridges += 1;
            }
            54..=73 => self.crash(target)?,
            74..=83 => self.pause(target),
            _ => {
                let faults = self.params.random_link_faults(&mut self.rng);
                self.note(|| format!("nemesis: links {faults:?}"));
                self.net.faults = faults;
                self.stats.faults.link_changes += 1;
            }
        }
        let gap = self.params.fault_gap_us(&mut self.rng);
        self.schedule(gap, Ev::Fault);
        Ok(())
    }

    fn two_peers(&mut self) -> (usize, usize) {
        let n = self.nodes.len() as u64;
        let a = self.rng.range(0, n) as usize;
        let b = (a + 1 + self.rng.range(0, n - 1) as usize) % n as usize;
        (a, b)
    }

    /// True if crashing peer `i` leaves a majority of every voter set of the configuration
    /// in force (the leader's, else the first one) running.
    fn majority_survives(&self, i: usize) -> bool {
        let conf = match self.leader_index() {
            Some(l) => self.nodes[l].core().configuration().clone(),
            None => self.conf.clone(),
        };
        [conf.voters(), conf.old_voters()].iter().all(|half| {
            let up = half
                .iter()
                .filter(|p| {
                    let k = self.ids.iter().position(|x| x == *p);
                    k.is_some_and(|k| k != i && self.nodes[k].is_up())
                })
                .count();
            half.is_empty() || up > half.len() / 2
        })
    }

    /// Crashes peer `i` (keeping a majority running), to restart it later.
    pub(crate) fn crash(&mut self, i: usize) -> Result<(), String> {
        if !self.nodes[i].is_up() || !self.majority_survives(i) {
            return Ok(()); // keep a majority running
        }
        self.note(|| format!("nemesis: crash {i}"));
        self.crash_node(i);
        self.stats.faults.crashes += 1;
        let downtime = self
            .rng
            .range(0, 2 * self.params.election_timeout_ms * 1000);
        self.schedule(downtime, Ev::Restart { node: i });
        Ok(())
    }

    fn pause(&mut self, i: usize) {
        let t_us = self.params.election_timeout_ms * 1000;
        let pause = self.rng.range(t_us / 2, 3 * t_us);
        self.note(|| format!("nemesis: pause {i} for {} ms", pause / 1000));
        // A pause only extends: events it defers keep their order (a paused process still
        // has its disk writes complete in order).
        let until = &mut self.nodes[i].paused_until_us;
        *until = (*until).max(self.now_us + pause);
        self.stats.faults.pauses += 1;
    }

    /// Strikes peer `i` if it still leads `term`: a crash or an isolation right after its
    /// election, before its first entries spread (the divergence figure 8 needs).
    pub(crate) fn strike(&mut self, i: usize, term: u64) -> Result<(), String> {
        let leads = self.nodes[i]
            .core
            .as_ref()
            .is_some_and(|c| c.role() == Role::Leader && c.term() == term);
        if !leads || self.healed_at_us.is_some() {
            return Ok(());
        }
        self.stats.faults.strikes += 1;
        if self.rng.chance(0.5) {
            return self.crash(i);
        }
        let side: Vec<bool> = (0..self.nodes.len()).map(|k| k == i).collect();
        self.note(|| format!("nemesis: strike, isolate new leader {i}"));
        self.net.partition(&side);
        Ok(())
    }

    /// The final heal: every link, every peer, no more faults.
    pub(crate) fn heal(&mut self) -> Result<(), String> {
        if self.healed_at_us.is_some() {
            return Ok(());
        }
        self.note(|| "heal: all links, all peers".into());
        let joint = self.nodes.iter().any(|n| {
            n.core
                .as_ref()
                .is_some_and(|c| c.configuration().is_joint())
        });
        self.stats.healed_in_joint = u64::from(joint);
        self.healed_at_us = Some(self.now_us);
        self.catch_up_mark = (u64::MAX, self.now_us + self.params.liveness_bound_us());
        self.net.heal();
        self.net.faults = LinkFaults::clean();
        for i in 0..self.nodes.len() {
            self.nodes[i].paused_until_us = 0;
            self.restart(i)?;
        }
        Ok(())
    }

    /// After the heal: a working leader within the liveness bound, then every peer converged.
    pub(crate) fn watch_after_heal(&mut self) -> Result<(), String> {
        let healed = self.healed_at_us.expect("invariant: called after the heal");
        let leader = self.working_leader();
        if self.leader_after_heal_us.is_none() {
            if leader.is_some() {
                self.leader_after_heal_us = Some(self.now_us);
            } else if self.now_us > healed + self.params.liveness_bound_us() {
                return Err(format!(
                    "no leader within {} ms of the heal",
                    self.params.liveness_bound_us() / 1000
                ));
            }
        }
        if let Some(l) = leader {
            self.converged = self.all_caught_up(l);
            // Catching up is bounded by the replication settings (one entry per round trip
            // in some seeds), so what must not stop is progress: the members' applied
            // indexes must keep rising until they converge.
            let applied: u64 = self.members(l).iter().map(|k| self.nodes[*k].applied).sum();
            if applied != self.catch_up_mark.0 {
                self.catch_up_mark = (applied, self.now_us);
            }
        }
        let stalled = self.now_us > self.catch_up_mark.1 + self.params.converge_bound_us();
        let late = self.now_us > healed + self.params.liveness_bound_us() + CONVERGE_MAX_US;
        if !self.converged && (stalled || late) {
            return Err(format!(
                "peers did not converge after the heal ({})",
                if stalled { "no progress" } else { "too slow" }
            ));
        }
        Ok(())
    }

    /// A leader that has committed an entry of its own term.
    pub(crate) fn working_leader(&self) -> Option<usize> {
        self.nodes.iter().position(|n| {
            n.core.as_ref().is_some_and(|c| {
                c.role() == Role::Leader && c.term_at(c.commit_index()) == Some(c.term())
            })
        })
    }

    /// The peers of the leader's configuration (voters and learners), by index.
    pub(crate) fn members(&self, leader: usize) -> Vec<usize> {
        let conf = self.nodes[leader].core().configuration();
        (0..self.nodes.len())
            .filter(|k| conf.contains(&self.ids[*k]))
            .collect()
    }

    /// The configuration change (if any) is finished, and every member holds the leader's
    /// log and has applied all of it.
    fn all_caught_up(&self, leader: usize) -> bool {
        let lc = self.nodes[leader].core();
        let last = lc.last_log_id();
        let settled = lc.configuration().is_stable() && lc.configuration_index() <= last.index;
        settled
            && lc.commit_index() == last.index
            && self.members(leader).into_iter().all(|k| {
                let n = &self.nodes[k];
                n.core.as_ref().is_some_and(|c| {
                    c.last_log_id() == last
                        && c.commit_index() == last.index
                        && n.applied == last.index
                })
            })
    }
}
