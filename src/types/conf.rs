//! [`Configuration`]: the peer sets of a group, including the old set of a joint configuration.
//!
//! This is a value type with its binary encoding (used in configuration log entries and snapshot
//! metas). Quorum arithmetic lives in the core's ballot box, not here.

use std::collections::BTreeSet;
use std::fmt;

use crate::error::{RaftError, Result};
use crate::types::codec::{put_u32, Reader};
use crate::types::PeerId;

/// The membership of a group at one point of its log.
///
/// Invariant: `voters` and `learners` are disjoint.
/// Invariant: `old_voters` is non-empty exactly while the configuration is joint (C_old,new);
/// then decisions need a majority of `voters` *and* a majority of `old_voters`.
/// A learner receives every entry but never votes and never counts toward a quorum; a peer
/// being demoted may be in `old_voters` and `learners` at once during the joint phase.
///
/// Binary form: `count u32 | voters...`, then the same for `learners` and `old_voters`, each
/// peer in the [`PeerId`] encoding, each set in ascending order.
#[derive(Clone, Default, PartialEq, Eq, Hash)]
pub struct Configuration {
    voters: BTreeSet<PeerId>,
    learners: BTreeSet<PeerId>,
    old_voters: BTreeSet<PeerId>,
}

impl Configuration {
    /// A stable configuration of `voters`, no learners.
    pub fn new(voters: impl IntoIterator<Item = PeerId>) -> Configuration {
        Configuration {
            voters: voters.into_iter().collect(),
            ..Configuration::default()
        }
    }

    /// A configuration with the given parts, checked against the invariants above.
    pub fn from_parts(
        voters: BTreeSet<PeerId>,
        learners: BTreeSet<PeerId>,
        old_voters: BTreeSet<PeerId>,
    ) -> Result<Configuration> {
        if let Some(p) = voters.intersection(&learners).next() {
            return Err(RaftError::invalid(format!(
                "peer {p} is both a voter and a learner"
            )));
        }
        Ok(Configuration {
            voters,
            learners,
            old_voters,
        })
    }

    /// The joint configuration that moves from `self` (which must be stable) to `new`.
    pub fn joint_to(&self, new: &Configuration) -> Result<Configuration> {
        if self.is_joint() || new.is_joint() {
            return Err(RaftError::invalid(
                "a joint configuration can only be entered from a stable one",
            ));
        }
        Configuration::from_parts(
            new.voters.clone(),
            new.learners.clone(),
            self.voters.clone(),
        )
    }

    /// The stable configuration a joint one leaves to (`C_new`); `self` when already stable.
    pub fn leave_joint(&self) -> Configuration {
        Configuration {
            voters: self.voters.clone(),
            learners: self.learners.clone(),
            old_voters: BTreeSet::new(),
        }
    }

    /// The voters (of `C_new` while joint).
    pub fn voters(&self) -> &BTreeSet<PeerId> {
        &self.voters
    }

    /// The learners.
    pub fn learners(&self) -> &BTreeSet<PeerId> {
        &self.learners
    }

    /// The voters of `C_old` while joint; empty when stable.
    pub fn old_voters(&self) -> &BTreeSet<PeerId> {
        &self.old_voters
    }

    /// True during the joint phase of a membership change.
    pub fn is_joint(&self) -> bool {
        !self.old_voters.is_empty()
    }

    /// True when not joint.
    pub fn is_stable(&self) -> bool {
        !self.is_joint()
    }

    /// True when there are no voters at all (a node not yet configured).
    pub fn is_empty(&self) -> bool {
        self.voters.is_empty() && self.old_voters.is_empty()
    }

    /// True if `peer` votes in either half of the configuration.
    pub fn is_voter(&self, peer: &PeerId) -> bool {
        self.voters.contains(peer) || self.old_voters.contains(peer)
    }

    /// True if `peer` is a learner (and not also an old voter).
    pub fn is_learner(&self, peer: &PeerId) -> bool {
        self.learners.contains(peer) && !self.old_voters.contains(peer)
    }

    /// True if `peer` is in any of the sets.
    pub fn contains(&self, peer: &PeerId) -> bool {
        self.is_voter(peer) || self.learners.contains(peer)
    }

    /// Every peer in any set, ascending, each once.
    pub fn all_peers(&self) -> BTreeSet<PeerId> {
        let mut all = self.voters.clone();
        all.extend(self.learners.iter().copied());
        all.extend(self.old_voters.iter().copied());
        all
    }

    /// Appends the binary encoding.
    pub fn encode(&self, buf: &mut Vec<u8>) {
        for set in [&self.voters, &self.learners, &self.old_voters] {
            // A set is bounded by the number of distinct addresses; far below u32::MAX.
            put_u32(buf, set.len() as u32);
            for p in set {
                p.encode(buf);
            }
        }
    }

    /// Reads a configuration, enforcing its invariants.
    pub fn decode(r: &mut Reader<'_>) -> Result<Configuration> {
        let mut sets: [BTreeSet<PeerId>; 3] = Default::default();
        for set in sets.iter_mut() {
            let n = r.count(PeerId::ENCODED_LEN_MIN)?;
            for _ in 0..n {
                if !set.insert(PeerId::decode(r)?) {
                    return Err(r.error("duplicate peer in a configuration set"));
                }
            }
        }
        let [voters, learners, old_voters] = sets;
        Configuration::from_parts(voters, learners, old_voters).map_err(|e| r.error(e.to_string()))
    }

    /// Parses braft's text form: comma-separated peer ids, all voters (`"a:1:0,b:2:0"`).
    pub fn parse_voters(s: &str) -> Result<Configuration> {
        let mut voters = BTreeSet::new();
        for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            voters.insert(part.parse::<PeerId>()?);
        }
        Ok(Configuration::new(voters))
    }
}

impl fmt::Display for Configuration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let list = |set: &BTreeSet<PeerId>| {
            set.iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join(",")
        };
        write!(f, "{}", list(&self.voters))?;
        if !self.learners.is_empty() {
            write!(f, " learners={}", list(&self.learners))?;
        }
        if self.is_joint() {
            write!(f, " old={}", list(&self.old_voters))?;
        }
        Ok(())
    }
}

impl fmt::Debug for Configuration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Configuration({self})")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str) -> PeerId {
        s.parse().unwrap()
    }

    #[test]
    fn joint_configuration_has_both_voter_sets() {
        let old = Configuration::parse_voters("1.1.1.1:1:0,1.1.1.2:1:0,1.1.1.3:1:0").unwrap();
        let new = Configuration::parse_voters("1.1.1.1:1:0,1.1.1.2:1:0,1.1.1.4:1:0").unwrap();
        let joint = old.joint_to(&new).unwrap();
        assert!(joint.is_joint());
        assert!(joint.is_voter(&p("1.1.1.3:1:0")));
        assert!(joint.is_voter(&p("1.1.1.4:1:0")));
        assert_eq!(joint.leave_joint(), new);
        assert!(joint.joint_to(&new).is_err());
    }

    #[test]
    fn voter_and_learner_overlap_is_refused() {
        let v: BTreeSet<_> = [p("1.1.1.1:1:0")].into();
        let err = Configuration::from_parts(v.clone(), v, BTreeSet::new()).unwrap_err();
        assert!(err.to_string().contains("both a voter and a learner"));
    }
}
