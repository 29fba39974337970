//! Linearizable reads (Raft thesis section 6.4): ReadIndex waits for the term's no-op,
//! confirms leadership with a heartbeat round sent after the read arrived, and is refused
//! off the leader; a lease read is served at once while the lease is valid, and never after
//! the leader told another peer to campaign.

use super::*;
use crate::error::RaftError;

fn no_lease(i: usize) -> CoreOptions {
    let mut o = options(i);
    o.lease_reads = false;
    o
}

fn read(c: &mut Cluster, i: usize, ctx: u64) {
    c.step(i, Event::ReadIndex { ctx });
}

fn ready(outcomes: &[Action]) -> Vec<(u64, u64)> {
    outcomes
        .iter()
        .filter_map(|a| match a {
            Action::ReadReady { ctx, index } => Some((*ctx, *index)),
            _ => None,
        })
        .collect()
}

fn round_of(msg: &Message) -> Option<u64> {
    match msg {
        Message::AppendEntries(m) => Some(m.round),
        Message::AppendEntriesResponse(m) => Some(m.round),
        _ => None,
    }
}

/// §6.4 step 1: a new leader's commit index may lag behind its predecessor's until its
/// no-op commits; a read waits for that, then takes the commit index.
#[test]
fn read_index_waits_for_the_terms_noop_to_commit() {
    let mut c = Cluster::with_options(3, no_lease);
    c.expire_election_timer(0);
    c.deliver_all_dropping(|_, _, m| matches!(m, Message::AppendEntriesResponse(_)));
    assert_eq!(c.core(0).role(), Role::Leader);
    assert_eq!(c.core(0).commit_index(), 0, "the no-op is not committed");
    read(&mut c, 0, 7);
    c.deliver_all();
    assert!(ready(&c.outcomes(0)).is_empty(), "no read before the no-op");
    c.advance(3 * c.heartbeat());
    assert_eq!(c.core(0).commit_index(), 1);
    assert_eq!(ready(&c.outcomes(0)), vec![(7, 1)]);
}

/// §6.4 step 2: only acknowledgements of a round sent after the read arrived confirm it,
/// and a quorum of them is needed.
#[test]
fn a_read_needs_a_quorum_to_answer_a_round_sent_after_it() {
    let mut c = Cluster::with_options(3, no_lease);
    c.elect(0);
    c.propose(0, 2);
    c.deliver_all();
    // A heartbeat round leaves before the read arrives.
    let at = c.nodes[0].timers[TimerKind::Heartbeat.index()].unwrap();
    c.now = at;
    c.step(0, Event::Timeout(TimerKind::Heartbeat));
    let old_round = c.net.iter().find_map(|(_, _, m)| round_of(m)).unwrap();
    read(&mut c, 0, 9);
    let commit = c.core(0).commit_index();
    // The old round's heartbeats and answers arrive: they prove nothing about the read.
    for _ in 0..2 {
        c.deliver_if(|_, _, m| round_of(m) == Some(old_round));
    }
    assert!(
        ready(&c.outcomes(0)).is_empty(),
        "an older round does not count"
    );
    // One follower answers the new round: with the leader, a quorum of three.
    c.deliver_if(|_, to, m| to == 1 && matches!(m, Message::AppendEntries(_)));
    assert!(
        ready(&c.outcomes(0)).is_empty(),
        "the answer is not back yet"
    );
    c.deliver_if(|from, _, m| from == 1 && matches!(m, Message::AppendEntriesResponse(_)));
    assert_eq!(ready(&c.outcomes(0)), vec![(9, commit)]);
}

/// A lease read needs no round while the lease is valid; once TimeoutNow went out in the
/// term the lease is void (the target's voters ignore their leases) and reads take a round.
#[test]
fn a_lease_read_is_served_at_once_but_never_after_timeout_now() {
    let mut c = Cluster::new(3);
    c.elect(0);
    c.advance(c.heartbeat());
    read(&mut c, 0, 1);
    assert_eq!(ready(&c.outcomes(0)).len(), 1, "served from the lease");
    assert!(c.net.is_empty(), "without a heartbeat round");
    c.step(
        0,
        Event::TransferLeader {
            ctx: 1,
            to: peer(1),
        },
    );
    assert!(c
        .net
        .iter()
        .any(|(_, _, m)| matches!(m, Message::TimeoutNow(_))));
    c.net.clear(); // the TimeoutNow is lost: 0 stays leader, but its lease is gone
    read(&mut c, 0, 2);
    assert!(
        ready(&c.outcomes(0)).is_empty(),
        "no lease read after TimeoutNow"
    );
    assert!(!c.net.is_empty(), "a round went out instead");
    c.deliver_all();
    assert_eq!(ready(&c.outcomes(0)).len(), 1, "confirmed by the round");
}

/// A read on a follower is refused with the leader to ask; a leader cut off from its quorum
/// never confirms a read and refuses it when check-quorum steps it down.
#[test]
fn reads_are_refused_off_the_leader_and_by_a_deposed_leader() {
    let mut c = Cluster::with_options(3, no_lease);
    c.elect(0);
    read(&mut c, 1, 3);
    let refused = c.outcomes(1);
    let to_leader = RaftError::NotLeader {
        leader: Some(peer(0)),
    };
    assert_eq!(
        refused,
        vec![Action::RejectRead {
            ctx: 3,
            error: to_leader
        }]
    );
    c.isolate(0);
    read(&mut c, 0, 4);
    c.deliver_all();
    assert!(ready(&c.outcomes(0)).is_empty());
    c.advance(2 * T);
    assert_ne!(c.core(0).role(), Role::Leader, "check-quorum");
    let out = c.outcomes(0);
    assert!(
        out.iter()
            .any(|a| matches!(a, Action::RejectRead { ctx: 4, .. })),
        "{out:?}"
    );
    assert!(ready(&out).is_empty());
}

/// Found by review: the leader lease (what `Node::is_leader_lease_valid` reports) is not
/// valid before the term's no-op commits: until then the new leader's commit index may lag
/// writes an earlier leader committed and acknowledged.
#[test]
fn the_lease_is_not_valid_before_the_terms_noop_commits() {
    let mut c = Cluster::new(3);
    c.elect(0);
    c.cut.insert((0, 2));
    c.cut.insert((2, 0));
    c.propose(0, 3);
    c.deliver_all();
    assert_eq!(
        c.core(0).commit_index(),
        4,
        "the old leader committed 2..=4"
    );
    assert_eq!(
        c.core(1).commit_index(),
        1,
        "1 has not heard the commit yet"
    );
    c.crash(0);
    c.heal();
    c.expire_election_timer(1);
    for _ in 0..6 {
        c.deliver_if(|_, _, m| matches!(m, Message::VoteRequest(_) | Message::VoteResponse(_)));
    }
    assert_eq!(c.core(1).role(), Role::Leader);
    c.deliver_if(|_, to, m| to == 2 && matches!(m, Message::AppendEntries(_)));
    c.deliver_if(|_, _, m| matches!(m, Message::AppendEntriesResponse(_)));
    assert!(c.core(1).commit_index() < 4);
    assert_eq!(c.nodes[1].core.leader_lease_until_ms(), None);
    c.deliver_all();
    c.advance(c.heartbeat());
    assert!(c.core(1).noop_committed());
    assert!(
        c.nodes[1].core.leader_lease_until_ms().is_some(),
        "valid once the no-op commits"
    );
}
