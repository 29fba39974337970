//! [`Progress`]: the leader's view of one follower's log (next/match index), the replication
//! state that decides how much to send, and the bounded window of appends in flight.
//!
//! Owned by the leader's core; pure bookkeeping. Probe: one AppendEntries at a time (at most
//! one per heartbeat interval) until the follower's position is found. Replicate: pipelined
//! appends, optimistically advancing `next`, bounded by the in-flight window. Snapshot: the
//! follower needs entries the leader compacted away; a snapshot was offered and nothing else
//! is sent (but heartbeats) until the follower answers or the offer times out.

use std::collections::VecDeque;

use crate::types::LogId;

/// How the leader currently sends to a follower.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ProgressState {
    /// Searching for the follower's matching entry: one request at a time.
    Probe,
    /// Streaming: requests pipelined up to the in-flight window.
    Replicate,
    /// A snapshot was offered; waiting for the follower to install it.
    Snapshot,
}

/// The last indexes of the appends in flight to one follower, oldest first.
///
/// Invariant: strictly increasing; `len() <= capacity`.
#[derive(Clone, Debug)]
pub struct Inflights {
    last_indexes: VecDeque<u64>,
    capacity: usize,
}

impl Inflights {
    /// A window of `capacity` appends (allocated once).
    pub fn new(capacity: usize) -> Inflights {
        Inflights {
            last_indexes: VecDeque::with_capacity(capacity),
            capacity,
        }
    }

    /// True when no further append may be sent.
    pub fn is_full(&self) -> bool {
        self.last_indexes.len() >= self.capacity
    }

    /// The number of appends in flight.
    pub fn len(&self) -> usize {
        self.last_indexes.len()
    }

    /// True when nothing is in flight.
    pub fn is_empty(&self) -> bool {
        self.last_indexes.is_empty()
    }

    /// Records an append ending at `last_index`.
    pub fn add(&mut self, last_index: u64) {
        debug_assert!(!self.is_full(), "inflight window overflow");
        debug_assert!(self.last_indexes.back().is_none_or(|b| *b < last_index));
        self.last_indexes.push_back(last_index);
    }

    /// Forgets every append ending at or before `index` (acknowledged).
    pub fn free_to(&mut self, index: u64) {
        while self.last_indexes.front().is_some_and(|f| *f <= index) {
            self.last_indexes.pop_front();
        }
    }

    /// Forgets everything (the pipeline restarts).
    pub fn reset(&mut self) {
        self.last_indexes.clear();
    }

    fn check(&self) -> Result<(), String> {
        if self.last_indexes.len() > self.capacity {
            return Err(format!(
                "{} appends in flight, window {}",
                self.len(),
                self.capacity
            ));
        }
        let sorted = self
            .last_indexes
            .iter()
            .zip(self.last_indexes.iter().skip(1))
            .all(|(a, b)| a < b);
        if !sorted {
            return Err(format!("inflights out of order: {:?}", self.last_indexes));
        }
        Ok(())
    }
}

/// The leader's knowledge of one follower.
#[derive(Clone, Debug)]
pub struct Progress {
    /// The highest index known to match the leader's log durably on the follower.
    /// Invariant: `match_index < next_index`; never decreases within a term.
    pub match_index: u64,
    /// The next index to send. Invariant: `next_index <= leader's last index + 1`.
    pub next_index: u64,
    /// Probe or replicate.
    pub state: ProgressState,
    /// Probe: a request was sent and not answered; the next goes out at the next heartbeat.
    pub probe_sent: bool,
    /// Replicate: the appends in flight. Invariant: empty in Probe.
    pub inflights: Inflights,
    /// The leader-clock send time of the newest request this follower answered in this term
    /// (check-quorum and the leader lease); `None` before its first answer.
    pub last_ack_sent_ms: Option<u64>,
    /// The highest read round this follower answered in this term (ReadIndex).
    pub last_ack_round: u64,
    /// Snapshot: the last index of the snapshot offered, and when (leader clock).
    /// Invariant: `Some` exactly in the Snapshot state.
    pub snapshot: Option<(u64, u64)>,
    /// When `match_index` last moved (leader clock; the progress' creation at first): how a
    /// catching-up voter is told from a stuck one.
    pub match_moved_ms: u64,
    /// `match_index` at the previous heartbeat, and how many heartbeats it has not moved while
    /// appends were in flight (the retransmission rule).
    match_at_last_tick: u64,
    stalled_ticks: u32,
}

impl Progress {
    /// A follower about which nothing is known yet: probe from `next_index`.
    pub fn new(next_index: u64, inflight_capacity: usize) -> Progress {
        Progress {
            match_index: 0,
            next_index,
            state: ProgressState::Probe,
            probe_sent: false,
            inflights: Inflights::new(inflight_capacity),
            last_ack_sent_ms: None,
            last_ack_round: 0,
            snapshot: None,
            match_moved_ms: 0,
            match_at_last_tick: 0,
            stalled_ticks: 0,
        }
    }

    /// Switches to probing from `match_index + 1` (or keeps a lower next).
    pub fn become_probe(&mut self) {
        self.state = ProgressState::Probe;
        self.probe_sent = false;
        self.next_index = self.match_index + 1;
        self.inflights.reset();
        self.stalled_ticks = 0;
        self.snapshot = None;
    }

    /// Switches to pipelined replication from `match_index + 1`.
    pub fn become_replicate(&mut self) {
        self.state = ProgressState::Replicate;
        self.probe_sent = false;
        self.next_index = self.match_index + 1;
        self.inflights.reset();
        self.stalled_ticks = 0;
        self.snapshot = None;
    }

    /// A snapshot ending at `index` was offered at `now_ms`: send nothing else until the
    /// follower answers.
    pub fn become_snapshot(&mut self, index: u64, now_ms: u64) {
        self.state = ProgressState::Snapshot;
        self.probe_sent = false;
        self.inflights.reset();
        self.stalled_ticks = 0;
        self.snapshot = Some((index, now_ms));
    }

    /// A success acknowledged `index` at `now_ms`. Returns true if `match_index` advanced.
    pub fn maybe_update(&mut self, index: u64, now_ms: u64) -> bool {
        let advanced = index > self.match_index;
        if advanced {
            self.match_index = index;
            self.match_moved_ms = now_ms;
        }
        self.next_index = self.next_index.max(index + 1);
        self.inflights.free_to(index);
        advanced
    }

    /// A rejection of a request whose `prev.index` was `rejected`, with the leader's own
    /// answer to the follower's hint, `hint_next` (the first index to try). Returns true if
    /// the rejection was current and `next_index` moved back (send the next probe now); stale
    /// rejections, and current ones that teach nothing new, are ignored, so that duplicated
    /// rejections never multiply probes (the next heartbeat probes again).
    pub fn maybe_decrease_to(&mut self, rejected: u64, hint_next: u64) -> bool {
        match self.state {
            // Waiting for the snapshot: rejections of heartbeats teach nothing.
            ProgressState::Snapshot => false,
            ProgressState::Replicate => {
                if rejected <= self.match_index {
                    return false;
                }
                self.become_probe();
                true
            }
            ProgressState::Probe => {
                if rejected + 1 != self.next_index {
                    return false;
                }
                let next = hint_next.min(rejected).max(self.match_index + 1);
                if next == self.next_index {
                    // Nothing to move back to: only a follower that lost entries it
                    // acknowledged answers so. Do not spin on it.
                    return false;
                }
                self.next_index = next;
                self.probe_sent = false;
                true
            }
        }
    }

    /// Called every heartbeat: true when appends have been in flight for `stall_heartbeats`
    /// intervals without `match_index` moving (presumed lost: probe again).
    pub fn tick_is_stalled(&mut self, stall_heartbeats: u32) -> bool {
        let moved = self.match_index != self.match_at_last_tick;
        self.match_at_last_tick = self.match_index;
        if moved || self.inflights.is_empty() {
            self.stalled_ticks = 0;
            return false;
        }
        self.stalled_ticks += 1;
        self.stalled_ticks >= stall_heartbeats
    }

    /// Checks the invariants above against the leader's last log entry.
    pub fn check(&self, leader_last: LogId) -> Result<(), String> {
        if self.match_index >= self.next_index {
            return Err(format!(
                "match {} >= next {}",
                self.match_index, self.next_index
            ));
        }
        if self.next_index > leader_last.index + 1 {
            return Err(format!(
                "next {} beyond last {}",
                self.next_index, leader_last
            ));
        }
        if self.state != ProgressState::Replicate && !self.inflights.is_empty() {
            return Err(format!("appends in flight in state {:?}", self.state));
        }
        if (self.state == ProgressState::Snapshot) != self.snapshot.is_some() {
            return Err(format!(
                "snapshot {:?} in state {:?}",
                self.snapshot, self.state
            ));
        }
        self.inflights.check()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn window_frees_up_to_the_acknowledged_index() {
        let mut w = Inflights::new(3);
        w.add(5);
        w.add(9);
        w.add(12);
        assert!(w.is_full());
        w.free_to(9);
        assert_eq!(w.len(), 1);
        w.free_to(100);
        assert!(w.is_empty());
    }

    #[test]
    fn stale_rejections_are_ignored() {
        let mut p = Progress::new(11, 4);
        p.become_replicate();
        p.maybe_update(7, 0);
        assert!(!p.maybe_decrease_to(6, 1), "rejected below match: stale");
        assert!(p.maybe_decrease_to(9, 1));
        assert_eq!(p.state, ProgressState::Probe);
        assert_eq!(p.next_index, 8, "replicate falls back to match + 1");
        assert!(
            !p.maybe_decrease_to(9, 1),
            "probe: not the outstanding probe"
        );
        assert!(
            !p.maybe_decrease_to(7, 3),
            "already at match + 1: nothing learned"
        );
        assert_eq!(p.next_index, 8, "never below match + 1");
    }

    #[test]
    fn probe_uses_the_hint_to_skip_back() {
        let mut p = Progress::new(101, 4);
        assert!(p.maybe_decrease_to(100, 40));
        assert_eq!(p.next_index, 40);
    }

    #[test]
    fn stall_is_detected_only_with_appends_in_flight() {
        let mut p = Progress::new(1, 4);
        p.become_replicate();
        assert!(!p.tick_is_stalled(2));
        p.inflights.add(3);
        assert!(!p.tick_is_stalled(2));
        assert!(p.tick_is_stalled(2));
        p.maybe_update(3, 0);
        assert!(!p.tick_is_stalled(2));
    }
}
