//! [`Params`]: the per-seed shape of a run (cluster size, timings, fault rates), drawn from the
//! seed so that different seeds explore different regimes.

use crate::core::CoreOptions;
use crate::sim::network::{Clock, LinkFaults};
use crate::sim::SimOptions;
use crate::types::Rng;

/// The timings and rates of one run.
#[derive(Clone, Debug)]
pub struct Params {
    /// Peers, voters of the first configuration and spares that changes may add.
    pub nodes: usize,
    /// Voters of the first configuration (the first `voters` peers).
    pub voters: usize,
    /// `T`.
    pub election_timeout_ms: u64,
    /// The drift bound.
    pub max_clock_drift_ms: u64,
    /// Heartbeat interval.
    pub heartbeat_ms: u64,
    /// Pre-vote on (most seeds) or off.
    pub pre_vote: bool,
    /// In-flight window.
    pub max_inflight: usize,
    /// Entries per append.
    pub max_entries: u64,
    /// The link faults at start.
    pub link_faults: LinkFaults,
    /// Disk write latency range, microseconds.
    pub disk_latency_us: (u64, u64),
    /// Client <-> peer delay range, microseconds.
    pub client_delay_us: (u64, u64),
    /// When a client gives up on an operation.
    pub op_timeout_us: u64,
    /// Time between nemesis actions, microseconds.
    pub fault_gap_us: (u64, u64),
    /// Clock rate spread, parts per million either side of real time.
    pub drift_ppm: u64,
    /// Probability that the nemesis strikes a newly elected leader within 2 ms.
    pub strike_new_leader: f64,
    /// Time between configuration changes asked of the leader; `None`: the configuration
    /// never changes.
    pub membership_gap_us: Option<(u64, u64)>,
    /// Time between leader transfers asked of the leader; `None`: none.
    pub transfer_gap_us: Option<(u64, u64)>,
    /// A peer snapshots once it applied this many entries since its last snapshot (0: never).
    pub snapshot_every: u64,
    /// How often each peer considers a snapshot.
    pub snapshot_tick_us: u64,
    /// Entries kept before a snapshot.
    pub snapshot_margin: u64,
    /// The catch-up margin of new voters.
    pub catchup_margin: u64,
    /// Leaders serve reads from their lease while it is valid.
    pub lease_reads: bool,
    /// The share of reads served by ReadIndex (the rest go through the log).
    pub read_index_share: f64,
}

impl Params {
    /// The parameters of `opts.seed`.
    pub fn from_seed(opts: &SimOptions) -> Params {
        let mut rng = Rng::new(opts.seed ^ 0x5eed_5eed_5eed_5eed);
        let t = 100;
        let drift = 10;
        let voters = opts.nodes.unwrap_or(if rng.chance(0.6) { 3 } else { 5 });
        let changes = opts.nodes.is_none() && rng.chance(0.5);
        let spares = if changes {
            rng.range(1, 8 - voters as u64) as usize
        } else {
            0
        };
        let snapshots = rng.chance(0.7);
        let mut p = Params {
            nodes: voters + spares,
            voters,
            election_timeout_ms: t,
            max_clock_drift_ms: drift,
            heartbeat_ms: CoreOptions::default_heartbeat_ms(t),
            pre_vote: rng.chance(0.9),
            max_inflight: rng.range(1, 9) as usize,
            max_entries: [1, 4, 64][rng.range(0, 3) as usize],
            link_faults: LinkFaults::clean(),
            disk_latency_us: (50, rng.range(200, 3_000)),
            client_delay_us: (100, 1_000),
            op_timeout_us: 10 * t * 1000,
            fault_gap_us: (20_000, rng.range(100_000, 800_000)),
            // Rates within +-drift/(4T): two clocks diverge by at most half the drift bound over
            // one election timeout, within the lease's assumption, leaving the lease check
            // (sim::world) a margin for millisecond rounding.
            drift_ppm: 1_000_000 * drift / (4 * t),
            strike_new_leader: 0.0,
            membership_gap_us: changes.then(|| (50_000, rng.range(100_000, 600_000))),
            transfer_gap_us: rng
                .chance(0.3)
                .then(|| (100_000, rng.range(200_000, 1_000_000))),
            snapshot_every: if snapshots { rng.range(5, 200) } else { 0 },
            snapshot_tick_us: rng.range(10_000, 100_000),
            snapshot_margin: [0, 2, 10, 50][rng.range(0, 4) as usize],
            catchup_margin: [0, 5, 50][rng.range(0, 3) as usize],
            lease_reads: rng.chance(0.5),
            read_index_share: [0.0, 0.5, 0.9][rng.range(0, 3) as usize],
        };
        if opts.faults {
            p.link_faults = p.random_link_faults(&mut rng);
        }
        if rng.chance(0.3) {
            // An election storm: faults every few heartbeats, mostly at the leader, so logs
            // diverge the way figure 8 needs.
            p.fault_gap_us = (10_000, 150_000);
            p.max_entries = 1;
            p.strike_new_leader = 0.3;
        }
        p
    }

    /// Sets the core's options from these parameters.
    pub fn apply(&self, o: &mut CoreOptions) {
        o.election_timeout_ms = self.election_timeout_ms;
        o.max_clock_drift_ms = self.max_clock_drift_ms;
        o.heartbeat_interval_ms = self.heartbeat_ms;
        o.pre_vote = self.pre_vote;
        o.max_inflight_appends = self.max_inflight;
        o.max_entries_per_append = self.max_entries;
        o.snapshot_log_margin = self.snapshot_margin;
        o.catchup_margin = self.catchup_margin;
        o.lease_reads = self.lease_reads;
    }

    /// The time to the next configuration change.
    pub fn membership_gap_us(&self, rng: &mut Rng) -> Option<u64> {
        self.membership_gap_us.map(|(a, b)| rng.range(a, b + 1))
    }

    /// The time to the next leader transfer.
    pub fn transfer_gap_us(&self, rng: &mut Rng) -> Option<u64> {
        self.transfer_gap_us.map(|(a, b)| rng.range(a, b + 1))
    }

    /// A random clock within the drift bound.
    pub fn clock(&self, rng: &mut Rng) -> Clock {
        Clock {
            offset_us: rng.range(0, 10_000_000),
            rate_ppm: rng.range(1_000_000 - self.drift_ppm, 1_000_000 + self.drift_ppm + 1),
        }
    }

    /// Random loss, duplication and delays.
    pub fn random_link_faults(&self, rng: &mut Rng) -> LinkFaults {
        LinkFaults {
            loss: [0.0, 0.0, 0.01, 0.05, 0.15][rng.range(0, 5) as usize],
            dup: [0.0, 0.01, 0.05][rng.range(0, 3) as usize],
            delay_us: (50, rng.range(300, 3_000)),
            long_delay: ([0.0, 0.01, 0.05][rng.range(0, 3) as usize], 50_000),
            fifo: rng.chance(0.5),
        }
    }

    /// One disk write's latency.
    pub fn disk_latency_us(&self, rng: &mut Rng) -> u64 {
        rng.range(self.disk_latency_us.0, self.disk_latency_us.1 + 1)
    }

    /// One client message's delay.
    pub fn client_delay_us(&self, rng: &mut Rng) -> u64 {
        rng.range(self.client_delay_us.0, self.client_delay_us.1 + 1)
    }

    /// The time to the next nemesis action.
    pub fn fault_gap_us(&self, rng: &mut Rng) -> u64 {
        rng.range(self.fault_gap_us.0, self.fault_gap_us.1 + 1)
    }

    /// The bound on the time from the heal to a working leader: per round, a follower's lease
    /// and the longest election timeout (2T + drift), then the longest vote round
    /// (2T + drift); three rounds for split votes.
    pub fn liveness_bound_us(&self) -> u64 {
        let t = self.election_timeout_ms;
        let round_ms = 2 * t + self.max_clock_drift_ms + 2 * t + self.max_clock_drift_ms;
        3 * round_ms * 1000
    }

    /// After the heal, the longest the members' applied indexes may stand still before they
    /// converged.
    pub fn converge_bound_us(&self) -> u64 {
        20 * self.election_timeout_ms * 1000
    }
}
