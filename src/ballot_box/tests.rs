//! Ballot box tests: the fast quorum functions against a brute-force model on random input
//! (the style of etcd's quorum quick tests), and elections in stable and joint configurations.

use proptest::prelude::*;
use std::collections::BTreeMap;

use super::*;

fn peer(i: u16) -> PeerId {
    format!("10.0.0.1:{}:0", 1000 + i).parse().unwrap()
}

fn set(ids: &[u16]) -> BTreeSet<PeerId> {
    ids.iter().map(|i| peer(*i)).collect()
}

/// The model: the largest candidate value that at least a majority reaches, by trying each.
fn model_quorum(values: &[u64]) -> u64 {
    if values.is_empty() {
        return u64::MAX;
    }
    let need = values.len() / 2 + 1;
    values
        .iter()
        .copied()
        .filter(|v| values.iter().filter(|w| *w >= v).count() >= need)
        .max()
        .unwrap()
}

proptest! {
    #[test]
    fn quorum_value_matches_the_model(values in proptest::collection::vec(0u64..20, 0..9)) {
        let voters: BTreeSet<PeerId> = (0..values.len() as u16).map(peer).collect();
        let by_peer: BTreeMap<PeerId, u64> = voters.iter().copied().zip(values.clone()).collect();
        let mut scratch = Vec::new();
        let got = quorum_value(&voters, |p| by_peer[p], &mut scratch);
        prop_assert_eq!(got, model_quorum(&values));
    }

    #[test]
    fn joint_quorum_is_the_minimum_of_both_halves(
        new_values in proptest::collection::vec(0u64..20, 1..6),
        old_values in proptest::collection::vec(0u64..20, 1..6),
    ) {
        // Peers 0.. are the new voters, 10.. the old ones: disjoint halves.
        let mut by_peer = BTreeMap::new();
        for (i, v) in new_values.iter().enumerate() {
            by_peer.insert(peer(i as u16), *v);
        }
        for (i, v) in old_values.iter().enumerate() {
            by_peer.insert(peer(10 + i as u16), *v);
        }
        let new: BTreeSet<PeerId> = (0..new_values.len() as u16).map(peer).collect();
        let old: BTreeSet<PeerId> = (0..old_values.len() as u16).map(|i| peer(10 + i)).collect();
        let conf = Configuration::from_parts(new, BTreeSet::new(), old).unwrap();
        let mut scratch = Vec::new();
        let got = joint_quorum_value(&conf, |p| by_peer[p], &mut scratch);
        prop_assert_eq!(got, model_quorum(&new_values).min(model_quorum(&old_values)));
    }

    #[test]
    fn ballot_matches_counting(answers in proptest::collection::vec(0u8..3, 1..8)) {
        // 0 = no answer, 1 = granted, 2 = rejected.
        let voters: BTreeSet<PeerId> = (0..answers.len() as u16).map(peer).collect();
        let conf = Configuration::new(voters.iter().copied());
        let mut b = Ballot::new();
        for (i, a) in answers.iter().enumerate() {
            if *a != 0 {
                b.record(peer(i as u16), *a == 1);
            }
        }
        let yes = answers.iter().filter(|a| **a == 1).count();
        let no = answers.iter().filter(|a| **a == 2).count();
        let need = answers.len() / 2 + 1;
        let want = if yes >= need {
            VoteResult::Won
        } else if answers.len() - no < need {
            VoteResult::Lost
        } else {
            VoteResult::Pending
        };
        prop_assert_eq!(b.result(&conf), want);
    }
}

#[test]
fn joint_election_needs_both_majorities() {
    let conf =
        Configuration::from_parts(set(&[1, 2, 3]), BTreeSet::new(), set(&[3, 4, 5])).unwrap();
    let mut b = Ballot::new();
    for p in [1, 2, 3] {
        b.record(peer(p), true);
    }
    assert_eq!(
        b.result(&conf),
        VoteResult::Pending,
        "only the new half has a majority"
    );
    b.record(peer(4), true);
    assert_eq!(b.result(&conf), VoteResult::Won);
    let mut b = Ballot::new();
    b.record(peer(4), false);
    b.record(peer(5), false);
    assert_eq!(
        b.result(&conf),
        VoteResult::Lost,
        "the old half can no longer agree"
    );
}

#[test]
fn first_answer_of_a_peer_is_final() {
    let conf = Configuration::new(set(&[1, 2, 3]));
    let mut b = Ballot::new();
    b.record(peer(2), false);
    b.record(peer(2), true);
    b.record(peer(1), true);
    assert_eq!(b.result(&conf), VoteResult::Pending);
    assert!(!b.granted(&peer(2)));
}

#[test]
fn learners_and_strangers_never_count() {
    let conf = Configuration::from_parts(set(&[1, 2, 3]), set(&[7, 8]), BTreeSet::new()).unwrap();
    let mut b = Ballot::new();
    for p in [1, 7, 8, 9] {
        b.record(peer(p), true);
    }
    assert_eq!(b.result(&conf), VoteResult::Pending);
    let mut scratch = Vec::new();
    let idx = joint_quorum_value(&conf, |p| if *p == peer(1) { 9 } else { 0 }, &mut scratch);
    assert_eq!(idx, 0);
    assert_eq!(
        joint_quorum_value(&Configuration::default(), |_| 5, &mut scratch),
        0
    );
}
