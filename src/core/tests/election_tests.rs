//! Elections in the Raft paper's terms (section 5.2, 5.4.1 and the thesis' 9.6): election
//! safety, one vote per term and only when durable, pre-vote, the follower lease,
//! check-quorum, the vote timeout, and the etcd 8243 stranding.

use super::*;
use crate::core::message::{VoteRequest, VoteResponse};

fn no_pre_vote(i: usize) -> CoreOptions {
    let mut o = options(i);
    o.pre_vote = false;
    o
}

/// §5.2 election safety: two candidates in the same term split the voters; at most one wins.
#[test]
fn election_safety_at_most_one_leader_per_term() {
    let mut c = Cluster::with_options(5, no_pre_vote);
    c.expire_election_timer(0);
    c.expire_election_timer(1);
    assert_eq!(
        c.core(0).term(),
        c.core(1).term(),
        "both campaign in the same term"
    );
    c.deliver_all();
    let leaders = c.leaders();
    assert!(leaders.len() <= 1, "leaders {leaders:?}");
    c.advance(10 * T);
    let term = c.core(c.leaders()[0]).term();
    let in_term: Vec<_> = c
        .leaders()
        .into_iter()
        .filter(|l| c.core(*l).term() == term)
        .collect();
    assert_eq!(in_term.len(), 1);
}

/// §5.2: a voter grants at most one vote per term, first come first served.
#[test]
fn a_voter_grants_one_vote_per_term() {
    let mut c = Cluster::with_options(3, no_pre_vote);
    c.now = 3 * T; // leases from the start have expired
    let req = |term| {
        Message::VoteRequest(VoteRequest {
            term,
            last_log_id: LogId::default(),
            pre_vote: false,
            transfer: false,
        })
    };
    c.step(
        0,
        Event::Message {
            from: peer(1),
            msg: &req(1),
        },
    );
    c.step(
        0,
        Event::Message {
            from: peer(2),
            msg: &req(1),
        },
    );
    let grants: Vec<_> = c
        .net
        .iter()
        .filter_map(|(_, to, m)| match m {
            Message::VoteResponse(r) => Some((*to, r.granted)),
            _ => None,
        })
        .collect();
    assert_eq!(grants, vec![(1, true), (2, false)]);
    assert_eq!(c.core(0).voted_for(), Some(peer(1)));
}

/// RELIABILITY trap 2: a vote is promised only once it is durable.
#[test]
fn a_vote_is_sent_only_after_it_is_durable() {
    let mut c = Cluster::with_options(3, no_pre_vote);
    c.auto_persist = false;
    c.now = 3 * T;
    let req = Message::VoteRequest(VoteRequest {
        term: 1,
        last_log_id: LogId::default(),
        pre_vote: false,
        transfer: false,
    });
    c.step(
        0,
        Event::Message {
            from: peer(1),
            msg: &req,
        },
    );
    assert!(
        c.net.is_empty(),
        "the grant waits for the vote's persistence"
    );
    assert_eq!(c.nodes[0].durable_hs.voted_for, None);
    c.persist(0);
    assert_eq!(c.nodes[0].durable_hs.voted_for, Some(peer(1)));
    assert!(matches!(
        c.net.front(),
        Some((
            0,
            1,
            Message::VoteResponse(VoteResponse { granted: true, .. })
        ))
    ));
}

/// A candidate counts its own vote only once durable: with every peer granting but its own
/// vote not persisted, it is not leader yet.
#[test]
fn a_candidate_counts_its_own_vote_only_once_durable() {
    let mut c = Cluster::with_options(3, no_pre_vote);
    c.auto_persist = false;
    c.expire_election_timer(0);
    assert!(
        c.net.is_empty(),
        "vote requests wait for the term to be durable"
    );
    c.persist(0);
    // Deliver the requests, persist the voters' grants, deliver the grants.
    c.deliver_if(|_, to, _| to != 0);
    c.persist(1);
    c.persist(2);
    c.deliver_all();
    assert_eq!(c.core(0).role(), Role::Leader);
    assert_eq!(
        c.nodes[0].durable_hs,
        HardState {
            term: 1,
            voted_for: Some(peer(0))
        }
    );
}

/// Thesis 9.6: a partitioned peer's pre-votes fail without raising any term, so it rejoins
/// without deposing the leader.
#[test]
fn pre_vote_keeps_an_isolated_peer_from_raising_terms() {
    let mut c = Cluster::new(3);
    c.campaign(0);
    assert_eq!(c.leaders(), vec![0]);
    c.isolate(2);
    c.advance(20 * T);
    assert_eq!(c.core(2).term(), 1, "pre-votes never raise the term");
    c.heal();
    c.advance(5 * T);
    assert_eq!(c.leaders(), vec![0]);
    assert_eq!(c.core(0).term(), 1);
}

/// The follower lease: while followers hear the leader, a peer that does not (a one-way cut)
/// cannot gather pre-votes, and the leader stays.
#[test]
fn followers_refuse_votes_while_they_hear_a_leader() {
    let mut c = Cluster::new(3);
    c.campaign(0);
    c.cut.insert((0, 2)); // 2 no longer hears the leader; 1 does
    c.advance(10 * T);
    assert_eq!(c.leaders(), vec![0]);
    assert_eq!(c.core(0).term(), 1);
    assert_eq!(c.core(1).term(), 1);
}

/// Check-quorum: a leader that cannot reach a quorum steps down within two election timeouts
/// and the majority elects another.
#[test]
fn check_quorum_leader_steps_down_when_it_loses_its_quorum() {
    let mut c = Cluster::new(3);
    c.campaign(0);
    c.isolate(0);
    c.advance(2 * T);
    assert_ne!(c.core(0).role(), Role::Leader);
    c.advance(3 * T);
    let leaders = c.leaders();
    assert_eq!(leaders.len(), 1);
    assert_ne!(leaders[0], 0);
}

/// The vote timeout restarts a candidacy whose responses never arrive, after at least
/// `T + max_clock_drift_ms`.
#[test]
fn vote_timeout_restarts_a_stuck_candidacy() {
    let mut c = Cluster::with_options(3, no_pre_vote);
    c.isolate(0);
    c.expire_election_timer(0);
    let started = c.now;
    assert_eq!(c.core(0).role(), Role::Candidate);
    let deadline = c.nodes[0].timers[TimerKind::Vote.index()].unwrap();
    assert!(
        (started + T + 10..started + 2 * T + 10).contains(&deadline),
        "{deadline}"
    );
    c.advance(deadline - started);
    assert_eq!(c.core(0).term(), 2, "a new round in a new term");
    assert_eq!(c.core(0).role(), Role::Candidate);
}

/// etcd issue 8243: a peer left behind in term 1 comes back as the others (term 5) lose their
/// leader; its pre-votes are rejected with term 5, it learns the term, and a leader appears.
#[test]
fn a_peer_left_in_an_old_term_does_not_strand_the_group() {
    let mut c = Cluster::new(3);
    c.campaign(0);
    c.isolate(2);
    for round in 0..4 {
        let (old, new) = if round % 2 == 0 { (0, 1) } else { (1, 0) };
        c.crash(old);
        c.restart(old);
        c.campaign(new);
        assert_eq!(c.leaders(), vec![new], "round {round}");
    }
    let term = c.core(0).term();
    assert_eq!(c.core(2).term(), 1);
    assert!(term >= 5);
    let leader = c.leaders()[0];
    c.heal();
    c.crash(leader);
    c.advance(10 * T);
    assert_eq!(
        c.leaders().len(),
        1,
        "a leader appears among the two survivors"
    );
    assert!(c.core(2).term() > term);
}

/// §5.4.1 leader completeness via the voting rule: a candidate missing committed entries is
/// refused, and one that holds them wins.
#[test]
fn a_candidate_with_an_out_of_date_log_is_refused() {
    let mut c = Cluster::new(3);
    c.campaign(0);
    c.isolate(2);
    c.propose(0, 3);
    c.deliver_all();
    assert_eq!(c.core(0).commit_index(), 4);
    c.heal();
    c.crash(0);
    c.now += 3 * T;
    c.campaign(2);
    assert_ne!(c.core(2).role(), Role::Leader, "2 lacks committed entries");
    c.campaign(1);
    assert_eq!(c.leaders(), vec![1]);
}

/// The leader lease is counted from the send time of the requests a quorum acknowledged and
/// lasts `T - max_clock_drift_ms`.
#[test]
fn the_leader_lease_runs_from_the_quorum_send_time() {
    let mut c = Cluster::new(3);
    c.campaign(0);
    c.advance(35);
    let sent = c.now - c.now % 10; // the last heartbeat round
    let until = c.nodes[0].core.leader_lease_until_ms().unwrap();
    assert_eq!(until, sent + T - 10);
    c.isolate(0);
    c.advance(T);
    assert!(c.nodes[0]
        .core
        .leader_lease_until_ms()
        .is_none_or(|u| u <= c.now));
}

/// A follower within its lease keeps its term when a stale response of a later term reaches
/// it (here: an answer to an AppendEntries it sent as the previous leader). Adopting that
/// term would drop its lease, and it could then vote while its new leader's lease is valid.
#[test]
fn a_follower_in_its_lease_ignores_a_later_term_in_a_stale_response() {
    let mut c = Cluster::new(3);
    c.elect(0);
    c.elect(1);
    c.advance(c.heartbeat());
    let term = c.core(0).term();
    assert_eq!(
        c.core(0).leader(),
        Some(peer(1)),
        "0 follows 1 within its lease"
    );
    let stale = Message::AppendEntriesResponse(crate::core::message::AppendEntriesResponse {
        term: term + 1,
        success: false,
        index: 0,
        hint: LogId::default(),
        sent_ms: 0,
        round: 0,
    });
    c.step(
        0,
        Event::Message {
            from: peer(2),
            msg: &stale,
        },
    );
    assert_eq!(c.core(0).term(), term, "the lease holds the term");
    assert_eq!(c.core(0).leader(), Some(peer(1)));
}

/// braft's `reset_election_timeout_ms`: a follower given a shorter timeout campaigns first
/// once the leader is gone (its lease still waited out); an invalid one is ignored.
#[test]
fn a_shorter_election_timeout_makes_a_follower_campaign_first() {
    let mut c = Cluster::new(3);
    c.elect(0);
    c.step(
        2,
        Event::SetElectionTimeout {
            election_timeout_ms: T / 5,
            max_clock_drift_ms: 2,
        },
    );
    assert_eq!(c.core(2).options().election_timeout_ms, T / 5);
    c.step(
        1,
        Event::SetElectionTimeout {
            election_timeout_ms: 5,
            max_clock_drift_ms: 10,
        },
    );
    assert_eq!(
        c.core(1).options().election_timeout_ms,
        T,
        "drift >= T: ignored"
    );
    c.crash(0);
    c.advance(3 * T);
    assert_eq!(c.leaders(), vec![2], "the node with the short timeout won");
}
