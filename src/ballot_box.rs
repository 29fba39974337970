//! Quorum arithmetic (braft's BallotBox and Ballot): which index a quorum has reached, which
//! time a quorum has acknowledged, and whether an election is won, lost or still open, for
//! stable and joint (`C_old,new`) configurations alike.
//!
//! Owned by the [`core`](crate::core) and run on the node's serial queue inside a core step.
//! Pure functions and small values: no IO, no clock, no allocation on the commit path (the
//! caller lends a scratch buffer). A joint configuration needs a majority of *both* voter sets
//! for every decision; learners never count.

use std::collections::BTreeSet;

use crate::types::{Configuration, PeerId};

/// The number of votes that make a majority of `n` voters.
pub const fn majority(n: usize) -> usize {
    n / 2 + 1
}

/// The largest value `v` such that a majority of `voters` report a value `>= v`.
///
/// With match indexes this is the index a majority has stored; with acknowledgement times it
/// is the time by which a majority had answered. An empty set places no constraint and answers
/// `u64::MAX` (the absent half of a stable configuration). `scratch` is reused so the commit
/// path does not allocate.
pub fn quorum_value(
    voters: &BTreeSet<PeerId>,
    value_of: impl Fn(&PeerId) -> u64,
    scratch: &mut Vec<u64>,
) -> u64 {
    if voters.is_empty() {
        return u64::MAX;
    }
    scratch.clear();
    scratch.extend(voters.iter().map(value_of));
    scratch.sort_unstable_by(|a, b| b.cmp(a));
    scratch[majority(scratch.len()) - 1]
}

/// [`quorum_value`] over a whole configuration: the value both halves of a joint configuration
/// have reached. A configuration without voters reaches nothing (0).
pub fn joint_quorum_value(
    conf: &Configuration,
    value_of: impl Fn(&PeerId) -> u64,
    scratch: &mut Vec<u64>,
) -> u64 {
    if conf.is_empty() {
        return 0;
    }
    let new = quorum_value(conf.voters(), &value_of, scratch);
    let old = quorum_value(conf.old_voters(), &value_of, scratch);
    new.min(old)
}

/// The outcome of an election so far.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum VoteResult {
    /// A majority (of both halves, when joint) granted.
    Won,
    /// Enough voters refused that a majority can no longer be reached.
    Lost,
    /// Still open: neither of the above yet.
    Pending,
}

/// The votes of one election round (a pre-vote or a vote).
///
/// Invariant: `granted` and `rejected` are disjoint; a peer's first answer is its answer
/// (a duplicated or contradictory later response changes nothing).
#[derive(Clone, Debug, Default)]
pub struct Ballot {
    granted: BTreeSet<PeerId>,
    rejected: BTreeSet<PeerId>,
}

impl Ballot {
    /// An empty ballot.
    pub fn new() -> Ballot {
        Ballot::default()
    }

    /// Records `peer`'s answer unless it already answered.
    pub fn record(&mut self, peer: PeerId, granted: bool) {
        if self.granted.contains(&peer) || self.rejected.contains(&peer) {
            return;
        }
        if granted {
            self.granted.insert(peer);
        } else {
            self.rejected.insert(peer);
        }
    }

    /// True if `peer` granted its vote.
    pub fn granted(&self, peer: &PeerId) -> bool {
        self.granted.contains(peer)
    }

    /// The outcome under `conf` (only voters of `conf` count).
    pub fn result(&self, conf: &Configuration) -> VoteResult {
        if conf.is_empty() {
            return VoteResult::Lost;
        }
        let new = self.result_in(conf.voters());
        if conf.is_stable() {
            return new;
        }
        match (new, self.result_in(conf.old_voters())) {
            (VoteResult::Won, VoteResult::Won) => VoteResult::Won,
            (VoteResult::Lost, _) | (_, VoteResult::Lost) => VoteResult::Lost,
            _ => VoteResult::Pending,
        }
    }

    fn result_in(&self, voters: &BTreeSet<PeerId>) -> VoteResult {
        let need = majority(voters.len());
        let yes = voters.iter().filter(|p| self.granted.contains(p)).count();
        let no = voters.iter().filter(|p| self.rejected.contains(p)).count();
        if yes >= need {
            VoteResult::Won
        } else if voters.len() - no < need {
            VoteResult::Lost
        } else {
            VoteResult::Pending
        }
    }
}

#[cfg(test)]
mod tests;
