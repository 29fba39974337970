//! [`CoreOptions`]: the core's timing and flow-control settings, validated; and the test-only
//! [`BugSwitches`] that re-introduce classic Raft bugs so the simulator can prove it catches
//! them.

use crate::error::{RaftError, Result};
use crate::types::PeerId;

/// The longest election timeout accepted (one hour): a longer one is a mistake (seconds
/// given as milliseconds, say), and the timer arithmetic on it (`2 * T`, `T + drift`) must
/// not overflow.
pub const ELECTION_TIMEOUT_MAX_MS: u64 = 3_600_000;

/// The settings of one [`RaftCore`](crate::core::RaftCore).
#[derive(Clone, Debug)]
pub struct CoreOptions {
    /// This peer.
    pub id: PeerId,
    /// `T`: a follower that hears no leader for a randomised `[T, 2T)` starts an election.
    pub election_timeout_ms: u64,
    /// The most two peers' clocks may drift apart over one election timeout. The leader lease
    /// is `T - max_clock_drift_ms`; the vote timeout is at least `T + max_clock_drift_ms`.
    pub max_clock_drift_ms: u64,
    /// How often the leader sends heartbeats (braft: `T / 10`, at least 10 ms).
    pub heartbeat_interval_ms: u64,
    /// Ask for a pre-vote before raising the term (on by default).
    pub pre_vote: bool,
    /// AppendEntries in flight per follower in the pipelined (replicate) state.
    pub max_inflight_appends: usize,
    /// Entries per AppendEntries.
    pub max_entries_per_append: u64,
    /// Heartbeat intervals without progress, with appends in flight, after which the leader
    /// assumes they were lost and probes the follower again (the core's retransmission rule).
    pub stall_heartbeats: u32,
    /// Serve reads from the leader lease while it is valid (no heartbeat round); otherwise
    /// every read confirms leadership with a quorum round (ReadIndex). Safe only under the
    /// clock-drift bound; check-quorum, which the lease needs, is always on.
    pub lease_reads: bool,
    /// A new voter joins the configuration only once its log is within this many entries of
    /// the leader's (braft's `catchup_margin`).
    pub catchup_margin: u64,
    /// After a snapshot, keep this many entries before it in the log for followers that are
    /// slightly behind (so they need no snapshot).
    pub snapshot_log_margin: u64,
    /// Deliberately broken behaviour, for the simulator's bug re-introduction tests.
    #[cfg(any(test, feature = "sim"))]
    pub bugs: BugSwitches,
}

impl CoreOptions {
    /// Defaults for `id`: T = 1000 ms, drift 100 ms, heartbeat T / 10, pre-vote on, 256
    /// appends in flight, 512 entries per append, stall after 2 heartbeats, lease reads on,
    /// catch-up margin 1000 entries, 1000 entries kept before a snapshot.
    pub fn new(id: PeerId) -> CoreOptions {
        let election_timeout_ms = 1000;
        CoreOptions {
            id,
            election_timeout_ms,
            max_clock_drift_ms: 100,
            heartbeat_interval_ms: CoreOptions::default_heartbeat_ms(election_timeout_ms),
            pre_vote: true,
            max_inflight_appends: 256,
            max_entries_per_append: 512,
            stall_heartbeats: 2,
            lease_reads: true,
            catchup_margin: 1000,
            snapshot_log_margin: 1000,
            #[cfg(any(test, feature = "sim"))]
            bugs: BugSwitches::default(),
        }
    }

    /// braft's heartbeat interval for an election timeout: `T / 10`, at least 10 ms.
    pub fn default_heartbeat_ms(election_timeout_ms: u64) -> u64 {
        (election_timeout_ms / 10).max(10)
    }

    /// Rejects settings the protocol cannot run with, saying exactly what is wrong.
    pub fn validate(&self) -> Result<()> {
        let bad = |why: String| Err(RaftError::invalid(why));
        if self.election_timeout_ms == 0 || self.election_timeout_ms > ELECTION_TIMEOUT_MAX_MS {
            return bad(format!(
                "election_timeout_ms = {} must be in 1..={ELECTION_TIMEOUT_MAX_MS}",
                self.election_timeout_ms
            ));
        }
        if self.max_clock_drift_ms >= self.election_timeout_ms {
            return bad(format!(
                "max_clock_drift_ms ({}) must be below election_timeout_ms ({}): the leader \
                 lease is their difference",
                self.max_clock_drift_ms, self.election_timeout_ms
            ));
        }
        if self.heartbeat_interval_ms == 0 || self.heartbeat_interval_ms >= self.election_timeout_ms
        {
            return bad(format!(
                "heartbeat_interval_ms ({}) must be in 1..election_timeout_ms ({})",
                self.heartbeat_interval_ms, self.election_timeout_ms
            ));
        }
        if self.max_inflight_appends == 0 || self.max_entries_per_append == 0 {
            return bad("max_inflight_appends and max_entries_per_append must be > 0".into());
        }
        if self.stall_heartbeats == 0 {
            return bad("stall_heartbeats must be > 0".into());
        }
        Ok(())
    }
}

/// Classic Raft bugs, re-introduced on purpose (tests and the `sim` feature only). Each must
/// be caught by the simulator; `tests/sim.rs` asserts within how many seeds.
#[cfg(any(test, feature = "sim"))]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct BugSwitches {
    /// Send a vote grant, and count a candidate's own vote, before the vote is persisted.
    pub vote_before_persist: bool,
    /// Commit an entry of an earlier term once a majority stores it (Raft figure 8).
    pub commit_previous_term: bool,
    /// A follower replaces its log after a (possibly stale) AppendEntries' last entry with
    /// nothing, even at or below its commit index, instead of truncating only on a conflict.
    pub truncate_below_commit: bool,
    /// The leader lease lasts the whole election timeout, without the clock-drift margin.
    pub lease_without_drift: bool,
    /// A joint configuration commits with a majority of `C_new` alone.
    pub joint_commit_new_majority_only: bool,
    /// A peer removed from the configuration keeps campaigning.
    pub removed_peer_campaigns: bool,
    /// ReadIndex answers with the commit index before the term's no-op has committed.
    pub read_before_noop: bool,
}

/// Reads a bug switch: always false outside tests and the `sim` feature.
macro_rules! bug {
    ($core:expr, $name:ident) => {{
        #[cfg(any(test, feature = "sim"))]
        let on = $core.opts.bugs.$name;
        #[cfg(not(any(test, feature = "sim")))]
        let on = false;
        on
    }};
}
pub(crate) use bug;
