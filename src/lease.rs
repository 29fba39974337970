//! Leases (braft's LeaderLease and FollowerLease): the leader's promise that no other leader
//! can exist until a time, and the follower's refusal to help elect one while it hears from a
//! leader.
//!
//! Owned by the [`core`](crate::core) and run inside a core step; plain arithmetic on the
//! monotonic milliseconds the core is given, no clock of its own, no IO.
//!
//! Why the two fit together: a follower that received an AppendEntries refuses (pre-)votes for
//! `election_timeout_ms` on its own clock after receiving it. The leader counts its lease from
//! the time it *sent* the request that a quorum acknowledged, which is before any of them
//! received it, and the lease lasts `election_timeout_ms - max_clock_drift_ms` on the leader's
//! clock. So while the leader's lease is valid, every member of that quorum still refuses
//! votes, even when the leader's clock runs slower than theirs by up to the drift bound, and no
//! other candidate can gather a majority.

/// A follower's memory of its leader: while it is active, (pre-)votes that would depose the
/// leader are refused (Raft thesis section 9.6, braft's FollowerLease).
///
/// Invariant: `last_leader_contact_ms` only moves forward while set (time is monotonic).
#[derive(Clone, Debug)]
pub struct FollowerLease {
    timeout_ms: u64,
    /// When this follower last heard from a leader of its current term, on its own clock;
    /// `None` once it knows there is no leader (it voted, or the leader stepped down).
    last_leader_contact_ms: Option<u64>,
}

impl FollowerLease {
    /// A lease that lasts `timeout_ms` (the election timeout) after each contact.
    pub fn new(timeout_ms: u64) -> FollowerLease {
        FollowerLease {
            timeout_ms,
            last_leader_contact_ms: None,
        }
    }

    /// Sets the timeout (the election timeout changed); the last contact is kept.
    pub fn set_timeout(&mut self, timeout_ms: u64) {
        self.timeout_ms = timeout_ms;
    }

    /// A leader was heard at `now_ms`.
    pub fn renew(&mut self, now_ms: u64) {
        let last = self.last_leader_contact_ms.unwrap_or(0);
        self.last_leader_contact_ms = Some(last.max(now_ms));
    }

    /// There is no leader to protect any more.
    pub fn expire(&mut self) {
        self.last_leader_contact_ms = None;
    }

    /// True while a leader was heard within the timeout: disruptive votes are refused.
    pub fn is_active(&self, now_ms: u64) -> bool {
        match self.last_leader_contact_ms {
            Some(t) => now_ms < t.saturating_add(self.timeout_ms),
            None => false,
        }
    }

    /// The last contact with a leader, if any is remembered.
    pub fn last_contact_ms(&self) -> Option<u64> {
        self.last_leader_contact_ms
    }
}

/// The leader's side: how long after a quorum's acknowledgement it may assume it is still the
/// only leader.
#[derive(Clone, Copy, Debug)]
pub struct LeaderLease {
    /// Invariant: `lease_ms = election_timeout_ms - max_clock_drift_ms` (> 0, checked by
    /// `CoreOptions::validate`).
    lease_ms: u64,
}

impl LeaderLease {
    /// The lease for the given timings; `max_clock_drift_ms` must be below the timeout.
    pub fn new(election_timeout_ms: u64, max_clock_drift_ms: u64) -> LeaderLease {
        debug_assert!(max_clock_drift_ms < election_timeout_ms);
        LeaderLease {
            lease_ms: election_timeout_ms.saturating_sub(max_clock_drift_ms),
        }
    }

    /// How long the lease lasts after the send time of the quorum's acknowledged requests.
    pub fn lease_ms(&self) -> u64 {
        self.lease_ms
    }

    /// The end of the lease, given `quorum_ack_sent_ms`: the latest send time (leader clock)
    /// such that a quorum acknowledged a request sent at or after it.
    pub fn valid_until_ms(&self, quorum_ack_sent_ms: u64) -> u64 {
        quorum_ack_sent_ms.saturating_add(self.lease_ms)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn follower_lease_refuses_votes_only_within_the_timeout() {
        let mut l = FollowerLease::new(100);
        assert!(!l.is_active(0), "no leader heard yet");
        l.renew(50);
        assert!(l.is_active(50));
        assert!(l.is_active(149));
        assert!(!l.is_active(150));
        l.renew(10);
        assert_eq!(l.last_contact_ms(), Some(50), "contact never moves back");
        l.expire();
        assert!(!l.is_active(60));
    }

    #[test]
    fn leader_lease_is_shorter_than_the_timeout_by_the_drift() {
        let l = LeaderLease::new(1000, 100);
        assert_eq!(l.lease_ms(), 900);
        assert_eq!(l.valid_until_ms(5_000), 5_900);
    }

    /// The arithmetic behind the module doc: with clock rates within the drift bound, a
    /// follower's lease (started when it received the request) outlasts the leader's lease
    /// (started when it sent it) in real time.
    #[test]
    fn follower_lease_outlasts_leader_lease_under_bounded_drift() {
        let (timeout, drift) = (1000u64, 100u64);
        // Worst case: the follower's clock runs fast and the leader's slow, by rates whose
        // divergence over one timeout stays within the drift bound.
        let fast = 1.0 + drift as f64 / (2.0 * timeout as f64);
        let slow = 1.0 - drift as f64 / (2.0 * timeout as f64);
        let follower_real_ms = timeout as f64 / fast;
        let leader_real_ms = LeaderLease::new(timeout, drift).lease_ms() as f64 / slow;
        assert!(follower_real_ms >= leader_real_ms);
    }
}
