//! [`NodeOptions`]: everything a node is configured with, validated before `init` touches
//! anything (raft-rs's `Config::validate`: every refusal names the field and the rule).

use std::path::PathBuf;
use std::sync::Arc;

use slog::Logger;

use crate::error::{RaftError, Result};
use crate::fs::{FileSystem, RealFs};
use crate::runtime::Runtime;
use crate::state_machine::StateMachine;
use crate::types::Configuration;

/// The largest entry payload accepted by default (1 MiB).
pub const ENTRY_BYTES_MAX_DEFAULT: usize = 1 << 20;
/// Default [`NodeOptions::incoming_bytes_max`]: twice a leader's default window to one
/// follower (`inflight_appends_max` 64 x `append_entries_bytes_max` 2 MiB).
pub const INCOMING_BYTES_MAX_DEFAULT: usize = 256 << 20;
pub use crate::core::ELECTION_TIMEOUT_MAX_MS;
/// The longest snapshot interval accepted (ten years; 0 turns the timer off).
pub const SNAPSHOT_INTERVAL_MAX_S: u64 = 10 * 365 * 24 * 3600;
/// The largest `entry_bytes_max` accepted: what a segment of the disk log can hold, and
/// below the 4 GiB a payload's length field carries on the wire.
pub const ENTRY_BYTES_LIMIT: usize = crate::log_storage::segment::ENTRY_DATA_MAX as usize;

/// How a node is set up. Build with [`NodeOptions::new`] and adjust fields.
pub struct NodeOptions {
    /// A follower that hears no leader for a random time in `[T, 2T)` starts an election.
    pub election_timeout_ms: u64,
    /// The most two nodes' clocks may drift apart over an election timeout; the leader lease
    /// is shorter than the election timeout by this much. Default 100.
    pub max_clock_drift_ms: u64,
    /// Take a snapshot every this many seconds (0: only on request). Default 3600.
    pub snapshot_interval_s: u64,
    /// Entries kept in the log behind a snapshot, so a slightly lagging follower can catch up
    /// from the log instead of a snapshot. Default 1000.
    pub snapshot_log_margin: u64,
    /// The group's configuration when this node's log is empty (first start).
    pub initial_conf: Configuration,
    /// The user's state machine.
    pub fsm: Box<dyn StateMachine>,
    /// The node's data directory (`log/`, `meta/`, `snapshot/` below it).
    pub data_path: PathBuf,
    /// Keep the log in memory only (no data directory for the log; meta and snapshots still
    /// go to `data_path`). For tests and benchmarks.
    pub memory_log: bool,
    /// fdatasync each log batch before counting it durable. Turning this off trades
    /// durability for latency: an entry then counts as soon as it is written.
    pub sync: bool,
    /// The largest entry payload `apply` accepts.
    pub entry_bytes_max: usize,
    /// Tasks queued in `apply` and not yet appended; more answer `Busy`.
    pub apply_queue_capacity: usize,
    /// Bytes appended to the log and not yet durable; more answer `Busy`.
    pub unsynced_bytes_max: usize,
    /// Bytes of RaftService messages received and not yet handled by the node's queue; a
    /// message past it is answered `Busy` and dropped (the sender's protocol takes it as
    /// lost and sends again), so a peer sending faster than the node handles cannot grow
    /// its queue without limit. A node holding nothing always takes one message. Default
    /// [`INCOMING_BYTES_MAX_DEFAULT`], above what one honest leader can have in flight
    /// (`inflight_appends_max` AppendEntries of `append_entries_bytes_max`).
    pub incoming_bytes_max: usize,
    /// The most payload bytes in one AppendEntries.
    pub append_entries_bytes_max: usize,
    /// The most AppendEntries in flight to one follower (pipelining window).
    pub inflight_appends_max: usize,
    /// A new voter must be within this many entries of the leader before it is added.
    pub catchup_margin: u64,
    /// Serve `read_index` from the leader lease while it is valid (no heartbeat round).
    /// Safe while clocks drift apart by at most `max_clock_drift_ms` per election timeout;
    /// turn it off to confirm every read with a quorum round. Default on.
    pub lease_reads: bool,
    /// The threads to run on (default: the process-wide runtime).
    pub runtime: Option<Runtime>,
    /// The file layer (default: the real file system; tests pass a FaultFs).
    pub fs: Arc<dyn FileSystem>,
    /// Seed of the election jitter (default: from the clock).
    pub seed: Option<u64>,
    /// The parent logger (default: forwards to the `log` facade).
    pub logger: Option<Logger>,
}

impl NodeOptions {
    /// Options with braft-like defaults for `fsm`, `data_path` and `initial_conf`.
    pub fn new(
        fsm: Box<dyn StateMachine>,
        data_path: impl Into<PathBuf>,
        initial_conf: Configuration,
    ) -> NodeOptions {
        NodeOptions {
            election_timeout_ms: 1000,
            max_clock_drift_ms: 100,
            snapshot_interval_s: 3600,
            snapshot_log_margin: 1000,
            initial_conf,
            fsm,
            data_path: data_path.into(),
            memory_log: false,
            sync: true,
            entry_bytes_max: ENTRY_BYTES_MAX_DEFAULT,
            apply_queue_capacity: 64 * 1024,
            unsynced_bytes_max: 64 << 20,
            incoming_bytes_max: INCOMING_BYTES_MAX_DEFAULT,
            append_entries_bytes_max: 2 << 20,
            inflight_appends_max: 64,
            catchup_margin: 1000,
            lease_reads: true,
            runtime: None,
            fs: RealFs::shared(),
            seed: None,
            logger: None,
        }
    }

    /// Checks every field; the error names the field and the rule it breaks.
    pub fn validate(&self) -> Result<()> {
        let rule = |ok: bool, msg: String| {
            if ok {
                Ok(())
            } else {
                Err(RaftError::invalid(msg))
            }
        };
        rule(
            (10..=ELECTION_TIMEOUT_MAX_MS).contains(&self.election_timeout_ms),
            format!(
                "election_timeout_ms = {} must be in 10..={ELECTION_TIMEOUT_MAX_MS}",
                self.election_timeout_ms
            ),
        )?;
        rule(
            self.snapshot_interval_s <= SNAPSHOT_INTERVAL_MAX_S,
            format!(
                "snapshot_interval_s = {} must be <= {SNAPSHOT_INTERVAL_MAX_S} (0: no timer)",
                self.snapshot_interval_s
            ),
        )?;
        rule(
            self.max_clock_drift_ms < self.election_timeout_ms,
            format!(
                "max_clock_drift_ms = {} must be below election_timeout_ms = {} (the leader \
                 lease is the difference)",
                self.max_clock_drift_ms, self.election_timeout_ms
            ),
        )?;
        rule(
            self.entry_bytes_max > 0
                && self.entry_bytes_max <= self.append_entries_bytes_max.min(ENTRY_BYTES_LIMIT),
            format!(
                "entry_bytes_max = {} must be in 1..=append_entries_bytes_max ({}) and <= \
                 {ENTRY_BYTES_LIMIT}",
                self.entry_bytes_max, self.append_entries_bytes_max
            ),
        )?;
        rule(
            self.apply_queue_capacity > 0,
            "apply_queue_capacity must be > 0".into(),
        )?;
        rule(
            self.unsynced_bytes_max >= self.entry_bytes_max,
            format!(
                "unsynced_bytes_max = {} must be >= entry_bytes_max = {}",
                self.unsynced_bytes_max, self.entry_bytes_max
            ),
        )?;
        rule(
            self.incoming_bytes_max > 0,
            "incoming_bytes_max must be > 0".into(),
        )?;
        rule(
            self.inflight_appends_max > 0,
            "inflight_appends_max must be > 0".into(),
        )?;
        rule(
            !self.data_path.as_os_str().is_empty(),
            "data_path must be set".into(),
        )
    }

    /// Checks the options against the node's server: an AppendEntries carries up to
    /// `append_entries_bytes_max` of payload plus each entry's header, and must fit a frame,
    /// or replication would fail the same send forever.
    pub(crate) fn check_frame(&self, frame_bytes_max: usize) -> Result<()> {
        if self.append_entries_bytes_max > frame_bytes_max / 2 {
            return Err(RaftError::invalid(format!(
                "append_entries_bytes_max = {} must be at most half the server's \
                 frame_bytes_max ({frame_bytes_max}), leaving room for the entries' headers",
                self.append_entries_bytes_max
            )));
        }
        Ok(())
    }

    /// The heartbeat interval: a tenth of the election timeout, at least 10 ms (braft).
    pub fn heartbeat_interval_ms(&self) -> u64 {
        (self.election_timeout_ms / 10).max(10)
    }

    /// The vote timeout: a candidate's round outlives the followers' leases it must wait out.
    pub fn vote_timeout_ms(&self) -> u64 {
        self.election_timeout_ms + self.max_clock_drift_ms
    }

    /// How long a test should wait for a leader (DESIGN.md section 4): a follower's lease and
    /// pre-vote come first, so 2T + drift + the vote timeout.
    pub fn election_bound_ms(&self) -> u64 {
        2 * self.election_timeout_ms + self.max_clock_drift_ms + self.vote_timeout_ms()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state_machine::Iter;

    struct Nothing;
    impl StateMachine for Nothing {
        fn on_apply(&mut self, iter: &mut Iter<'_>) {
            iter.for_each(drop);
        }
    }

    fn opts() -> NodeOptions {
        let conf = Configuration::parse_voters("127.0.0.1:1:0").unwrap();
        NodeOptions::new(Box::new(Nothing), "/tmp/unused", conf)
    }

    fn refused(change: impl FnOnce(&mut NodeOptions), field: &str) {
        let mut o = opts();
        change(&mut o);
        let e = o.validate().expect_err(field);
        assert!(matches!(e, RaftError::Invalid { .. }), "{e}");
        assert!(e.to_string().contains(field), "{field}: {e}");
    }

    #[test]
    fn values_whose_arithmetic_would_overflow_are_refused_naming_the_field() {
        opts().validate().unwrap();
        refused(
            |o| o.election_timeout_ms = ELECTION_TIMEOUT_MAX_MS + 1,
            "election_timeout_ms",
        );
        refused(|o| o.election_timeout_ms = u64::MAX, "election_timeout_ms");
        refused(|o| o.snapshot_interval_s = u64::MAX, "snapshot_interval_s");
        refused(
            |o| {
                o.append_entries_bytes_max = usize::MAX;
                o.unsynced_bytes_max = usize::MAX;
                o.entry_bytes_max = ENTRY_BYTES_LIMIT + 1;
            },
            "entry_bytes_max",
        );
        let o = opts();
        assert!(o.check_frame(64 << 20).is_ok());
        let e = o.check_frame(1 << 20).unwrap_err();
        assert!(e.to_string().contains("append_entries_bytes_max"), "{e}");
        let mut o = opts();
        o.election_timeout_ms = ELECTION_TIMEOUT_MAX_MS;
        o.snapshot_interval_s = SNAPSHOT_INTERVAL_MAX_S;
        o.validate().unwrap();
    }
}
