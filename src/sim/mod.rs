//! The deterministic simulator (tests and the `sim` feature): N Raft cores over a simulated
//! clock, network and disk, driven by clients doing put/get/cas on a key-value store through
//! the log, under a nemesis injecting partitions, loss, duplication, reordering, crashes and
//! pauses. One u64 seed drives everything; a failing run reports its seed and, replayed with
//! tracing on, its last events.
//!
//! Runs in the calling test thread: no threads, no IO, no wall clock. Checks: the cheap
//! safety checks after every step and the full ones every `full_check_every` steps
//! ([`checks`]), the core's own `check_invariants`, liveness and convergence after the final
//! heal, every acknowledged write present, and per-key linearizability of the client history
//! ([`linearizability`]).
//!
//! Replay: `TRAFT_SIM_SEED=<n>` runs exactly seed `n`; `TRAFT_SIM_SEEDS=<count>` runs more
//! seeds (see [`seeds_from_env`]).

pub mod checks;
pub mod client;
mod faults;
pub mod kv;
pub mod linearizability;
mod membership;
pub mod network;
pub mod node;
mod params;
pub mod scenario;
mod shell;
mod snapshots;
pub mod world;

use std::collections::HashSet;
use std::fmt;

use crate::core::BugSwitches;
use crate::sim::kv::Op;
use crate::sim::linearizability::{check, Verdict};
use crate::sim::world::World;

pub use params::Params;

/// What a run does.
#[derive(Clone, Debug)]
pub struct SimOptions {
    /// Drives every random choice.
    pub seed: u64,
    /// Client operations to issue.
    pub client_ops: u64,
    /// Concurrent clients.
    pub clients: u32,
    /// Keys (histories are checked per key).
    pub keys: u32,
    /// Peers; `None` picks 3 or 5 from the seed.
    pub nodes: Option<usize>,
    /// Run the nemesis.
    pub faults: bool,
    /// Bugs to re-introduce into every core.
    pub bugs: BugSwitches,
    /// Check that nothing is promised before it is durable, at every send.
    pub promise_checks: bool,
    /// Steps between full checks.
    pub full_check_every: u64,
    /// Trace lines kept (0: no tracing; a failure is replayed with tracing on).
    pub trace_lines: usize,
    /// Step budget of the linearizability search per key.
    pub checker_budget: u64,
}

impl SimOptions {
    /// The default run for `seed`: 2,000 operations of 5 clients on 10 keys, with faults.
    pub fn new(seed: u64) -> SimOptions {
        SimOptions {
            seed,
            client_ops: 2_000,
            clients: 5,
            keys: 10,
            nodes: None,
            faults: true,
            bugs: BugSwitches::default(),
            promise_checks: true,
            full_check_every: 2_000,
            trace_lines: 0,
            checker_budget: 20_000_000,
        }
    }
}

/// Faults injected, by kind.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FaultCounts {
    /// Symmetric partitions.
    pub partitions: u64,
    /// One-way cuts.
    pub one_way: u64,
    /// Bridge topologies.
    pub bridges: u64,
    /// Crashes (each followed by a restart).
    pub crashes: u64,
    /// Pauses.
    pub pauses: u64,
    /// Changes of loss, duplication and delay.
    pub link_changes: u64,
    /// New leaders struck (crashed or isolated) right after their election.
    pub strikes: u64,
}

/// Counters of a run.
#[derive(Clone, Copy, Debug, Default)]
pub struct Stats {
    /// Faults by kind.
    pub faults: FaultCounts,
    /// Messages sent, lost, duplicated.
    pub messages: u64,
    /// Messages lost.
    pub messages_lost: u64,
    /// Messages duplicated.
    pub messages_duplicated: u64,
    /// Times a peer became leader.
    pub leader_changes: u64,
    /// The highest term that had a leader.
    pub max_term: u64,
    /// Proposal batches.
    pub proposal_batches: u64,
    /// Read batches handed to a core (ReadIndex or lease).
    pub read_batches: u64,
    /// Leader transfers asked, and those that moved leadership.
    pub transfers_asked: u64,
    /// Leader transfers that moved leadership.
    pub transfers_done: u64,
    /// Configuration changes asked of a leader.
    pub conf_changes_asked: u64,
    /// Configuration changes committed.
    pub conf_changes_done: u64,
    /// Configuration changes refused or failed (busy, lost leadership, catch-up timeout).
    pub conf_changes_failed: u64,
    /// Snapshots saved.
    pub snapshots_saved: u64,
    /// Snapshots installed on a follower.
    pub snapshots_installed: u64,
    /// 1 if the final heal came while some peer's configuration was joint (liveness must
    /// hold then too: a leader finishes the change).
    pub healed_in_joint: u64,
}

/// The figures of a successful run.
#[derive(Clone, Debug)]
pub struct SimReport {
    /// The seed.
    pub seed: u64,
    /// Peers.
    pub nodes: usize,
    /// Events stepped.
    pub steps: u64,
    /// Simulated time.
    pub sim_ms: u64,
    /// Operations invoked, completed, and of unknown outcome.
    pub ops_invoked: u64,
    /// Operations completed with a result.
    pub ops_ok: u64,
    /// Writes of unknown outcome.
    pub unknown_writes: u64,
    /// Reads of unknown outcome (not checked).
    pub unknown_reads: u64,
    /// Operations in the checked histories.
    pub ops_checked: u64,
    /// Entries committed.
    pub committed: u64,
    /// Leaders elected (distinct terms).
    pub elections: u64,
    /// From the final heal to a working leader.
    pub heal_to_leader_ms: u64,
    /// Counters.
    pub stats: Stats,
}

/// A failed run: the seed, what broke, and the last events of its replay.
#[derive(Clone, Debug)]
pub struct SimFailure {
    /// The seed to replay with `TRAFT_SIM_SEED`.
    pub seed: u64,
    /// The violation.
    pub message: String,
    /// The last events and every peer's state.
    pub trace: Vec<String>,
}

impl fmt::Display for SimFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "simulation failed: seed {}: {}", self.seed, self.message)?;
        writeln!(
            f,
            "replay: TRAFT_SIM_SEED={} cargo test --all-features --test sim",
            self.seed
        )?;
        writeln!(f, "last events:")?;
        for line in &self.trace {
            writeln!(f, "  {line}")?;
        }
        Ok(())
    }
}

/// Runs one seed; on failure, replays it with tracing to report its last events.
pub fn run(opts: &SimOptions) -> Result<SimReport, SimFailure> {
    let message = match run_world(opts) {
        Ok(report) => return Ok(report),
        Err((message, _)) => message,
    };
    let mut traced = opts.clone();
    // `TRAFT_SIM_TRACE_LINES=<n>` keeps more of the replay (the whole run, if large enough).
    traced.trace_lines = std::env::var("TRAFT_SIM_TRACE_LINES")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(80);
    let trace = match run_world(&traced) {
        Err((again, world)) if again == message => world.dump(),
        Err((other, world)) => {
            let mut t = world.dump();
            t.push(format!("(the traced replay failed differently: {other})"));
            t
        }
        Ok(_) => vec!["(the traced replay passed: the run is not deterministic!)".into()],
    };
    Err(SimFailure {
        seed: opts.seed,
        message,
        trace,
    })
}

fn run_world(opts: &SimOptions) -> Result<SimReport, (String, Box<World>)> {
    let params = Params::from_seed(opts);
    let mut world = Box::new(World::new(opts.clone(), params));
    // A panic (a broken assertion in the core) is a violation like any other: report it
    // with the seed and the trace.
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        world
            .start()
            .and_then(|_| drive(&mut world))
            .and_then(|_| finish(&world))
    }))
    .unwrap_or_else(|panic| {
        let what = panic
            .downcast_ref::<String>()
            .map(String::as_str)
            .or_else(|| panic.downcast_ref::<&str>().copied())
            .unwrap_or("a panic");
        Err(format!("panicked: {what}"))
    });
    result.map_err(|e| (e, world))
}

/// Runs the world until it converged after the heal.
fn drive(world: &mut World) -> Result<(), String> {
    const SIM_LIMIT_US: u64 = 3_600 * 1_000_000;
    while !world.converged {
        let next = world.now_us + 1_000_000;
        world.run_until(next)?;
        if world.now_us >= SIM_LIMIT_US {
            return Err("the run did not finish within an hour of simulated time".into());
        }
    }
    Ok(())
}

/// The end-of-run checks.
fn finish(world: &World) -> Result<SimReport, String> {
    let leader = world.working_leader().ok_or("no leader at the end")?;
    world.checker.full(&world.nodes, Some(leader))?;
    let lnode = &world.nodes[leader];
    for i in world.members(leader) {
        if world.nodes[i].fsm != lnode.fsm {
            return Err(format!(
                "peer {i}'s state machine differs from the leader's"
            ));
        }
    }
    let in_log: &HashSet<u64> = &world.checker.committed_ops;
    for (key, op) in world.history.acknowledged_writes() {
        let op_id = match op.op {
            Op::Put(v) | Op::Cas { new: v, .. } => v,
            Op::Get => continue,
        };
        if !in_log.contains(&op_id) {
            return Err(format!("acknowledged write {op_id} on key {key} is lost"));
        }
    }
    let mut ops_checked = 0;
    for (key, ops) in world.history.per_key.iter().enumerate() {
        ops_checked += ops.len() as u64;
        match check(ops, world.opts.checker_budget) {
            Verdict::Linearizable => {}
            Verdict::NotLinearizable => return Err(format!("key {key}: history not linearizable")),
            Verdict::GaveUp => {
                return Err(format!("key {key}: the linearizability search gave up"))
            }
        }
    }
    let h = &world.history;
    Ok(SimReport {
        seed: world.opts.seed,
        nodes: world.nodes.len(),
        steps: world.steps,
        sim_ms: world.now_us / 1000,
        ops_invoked: h.invoked,
        ops_ok: h.ok,
        unknown_writes: h.unknown_writes,
        unknown_reads: h.unknown_reads,
        ops_checked,
        committed: world.checker.committed.len() as u64,
        elections: world.checker.elections,
        heal_to_leader_ms: world
            .leader_after_heal_us
            .zip(world.healed_at_us)
            .map_or(0, |(l, h)| (l - h) / 1000),
        stats: world.stats,
    })
}

/// The seeds to run: `TRAFT_SIM_SEED=<n>` runs exactly seed `n`; otherwise seeds
/// `first..first + count`, where `TRAFT_SIM_SEEDS=<count>` overrides `default_count` and
/// `TRAFT_SIM_FIRST=<n>` overrides `first` (a soak over seeds not run before).
pub fn seeds_from_env(first: u64, default_count: u64) -> Vec<u64> {
    if let Some(seed) = std::env::var("TRAFT_SIM_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
    {
        return vec![seed];
    }
    let count = std::env::var("TRAFT_SIM_SEEDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(default_count);
    let first = std::env::var("TRAFT_SIM_FIRST")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(first);
    (first..first.saturating_add(count)).collect()
}

#[cfg(test)]
mod tests;
