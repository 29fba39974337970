//! [`Scenario`]: the simulator driven by a script instead of the nemesis, for the liveness
//! traps (etcd issue 8243, bridge topologies, check-quorum): the test says which links to cut,
//! which peers to crash, and how long to run, and every check still runs after every step.

use crate::core::Role;
use crate::sim::network::LinkFaults;
use crate::sim::world::World;
use crate::sim::{Params, SimOptions};

/// A scripted run over `n` peers, a clean network, no clients.
pub struct Scenario {
    world: Box<World>,
}

impl Scenario {
    /// Starts `n` peers with timings from `seed` (pre-vote on).
    pub fn new(n: usize, seed: u64) -> Result<Scenario, String> {
        let mut opts = SimOptions::new(seed);
        opts.nodes = Some(n);
        opts.faults = false;
        opts.client_ops = 0;
        let mut params = Params::from_seed(&opts);
        params.pre_vote = true;
        params.link_faults = LinkFaults::clean();
        let mut world = Box::new(World::new(opts, params));
        world.scripted = true;
        world.start()?;
        Ok(Scenario { world })
    }

    /// The election timeout `T` in milliseconds.
    pub fn t_ms(&self) -> u64 {
        self.world.params.election_timeout_ms
    }

    /// Simulated time, milliseconds.
    pub fn now_ms(&self) -> u64 {
        self.world.now_us / 1000
    }

    /// Runs for `ms` of simulated time.
    pub fn run_for(&mut self, ms: u64) -> Result<(), String> {
        let until = self.world.now_us + ms * 1000;
        self.world.run_until(until)?;
        let leader = self.world.working_leader();
        self.world.checker.full(&self.world.nodes, leader)
    }

    /// Runs until a working leader exists (one that committed an entry of its term), for at
    /// most `ms`; returns it and the time it took.
    pub fn run_until_leader(&mut self, ms: u64) -> Result<(usize, u64), String> {
        let start = self.world.now_us;
        let step_us = 1_000;
        while self.world.now_us < start + ms * 1000 {
            if let Some(l) = self.world.working_leader() {
                return Ok((l, (self.world.now_us - start) / 1000));
            }
            let until = self.world.now_us + step_us;
            self.world.run_until(until)?;
        }
        Err(format!(
            "no leader within {ms} ms\n{}",
            self.world.dump().join("\n")
        ))
    }

    /// The working leader, if any.
    pub fn leader(&self) -> Option<usize> {
        self.world.working_leader()
    }

    /// Peer `i`'s term (0 while down).
    pub fn term(&self, i: usize) -> u64 {
        self.world.nodes[i].core.as_ref().map_or(0, |c| c.term())
    }

    /// Peer `i`'s role, if up.
    pub fn role(&self, i: usize) -> Option<Role> {
        self.world.nodes[i].core.as_ref().map(|c| c.role())
    }

    /// Leaders elected so far.
    pub fn elections(&self) -> u64 {
        self.world.checker.elections
    }

    /// Cuts every link of `i`.
    pub fn isolate(&mut self, i: usize) {
        for j in 0..self.world.nodes.len() {
            if j != i {
                self.world.net.set_cut(i, j, true);
                self.world.net.set_cut(j, i, true);
            }
        }
    }

    /// Cuts `from -> to` only.
    pub fn cut(&mut self, from: usize, to: usize) {
        self.world.net.set_cut(from, to, true);
    }

    /// Splits the others into `left` and the rest, both connected to `bridge`.
    pub fn bridge(&mut self, bridge: usize, left: &[bool]) {
        self.world.net.bridge(bridge, left);
    }

    /// Restores every link.
    pub fn heal_links(&mut self) {
        self.world.net.heal();
    }

    /// Crashes peer `i` (losing what it had not synced).
    pub fn crash(&mut self, i: usize) {
        self.world.crash_node(i);
    }

    /// Restarts peer `i` from its disk.
    pub fn restart(&mut self, i: usize) -> Result<(), String> {
        self.world.restart(i)
    }

    /// The state of every peer and the last events, for failure messages.
    pub fn dump(&self) -> String {
        self.world.dump().join("\n")
    }
}
