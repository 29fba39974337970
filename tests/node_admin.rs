//! Reads, leader transfer and membership changes on real nodes over loopback TCP (the
//! harness is tests/cluster): what a user calling `read_index`, `transfer_leadership_to` and
//! `add_peer` / `remove_peer` sees.

mod cluster;

use std::time::Duration;

use bytes::Bytes;
use cluster::{election_bound, Cluster, ClusterOptions};
use traft::{GroupId, RaftError};

const WITHIN: Duration = Duration::from_secs(10);

/// Runs `op` on the current leader, asking again when leadership moved meanwhile (a loaded
/// machine delays heartbeats) or the leader answered `Busy`; returns the leader that
/// answered `Ok`.
fn on_leader(
    c: &Cluster,
    op: impl Fn(&traft::node::Node) -> Result<(), RaftError>,
    what: &str,
) -> usize {
    let deadline = std::time::Instant::now() + WITHIN;
    loop {
        let l = c.wait_leader(election_bound());
        match op(c.node(l)) {
            Ok(()) => return l,
            Err(RaftError::NotLeader { .. }) if std::time::Instant::now() < deadline => {}
            // A new leader refuses changes until its term's first entry commits; clients
            // back off and retry.
            Err(RaftError::Busy) if std::time::Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(20))
            }
            Err(e) => panic!("{what}: {e}\n{}", c.describe()),
        }
    }
}

/// Reads `read_index` on node `i` and, if it answers, what its state machine holds then.
fn read_on(c: &Cluster, i: usize) -> Result<Vec<Bytes>, RaftError> {
    let kv = c.members[i].kv.clone();
    let (tx, rx) = crossbeam::channel::bounded(1);
    c.node(i).read_index(move |r| {
        // On the fsm pool, after the state machine applied the read index.
        let _ = tx.send(r.map(|_| kv.data()));
    });
    rx.recv_timeout(WITHIN).unwrap_or(Err(RaftError::Timeout))
}

/// Issue 9: a read after an acknowledged write sees it, on any node that answers. Followers
/// answer `NotLeader` with the leader they know; a leader answers after applying the write.
/// Run with the lease (the default) and with a quorum round for every read. Leadership may
/// move during the test (a loaded machine delays heartbeats): whoever answers must still see
/// every acknowledged write.
#[test]
fn a_read_after_an_acknowledged_write_sees_it_on_any_node_that_answers() {
    for lease_reads in [true, false] {
        let mut o = ClusterOptions::new(3);
        o.lease_reads = lease_reads;
        let c = Cluster::start(&format!("read_after_write_{lease_reads}"), o);
        c.wait_leader(election_bound());
        let mut answers = 0;
        for k in 0..20 {
            let w = Bytes::from(format!("w{k}"));
            c.apply(w.clone(), WITHIN);
            let deadline = std::time::Instant::now() + WITHIN;
            let mut answered = 0;
            while answered == 0 {
                assert!(
                    std::time::Instant::now() < deadline,
                    "nobody answered a read"
                );
                for i in 0..3 {
                    match read_on(&c, i) {
                        Ok(seen) => {
                            answered += 1;
                            assert!(seen.contains(&w), "node {i} read without {w:?}");
                        }
                        Err(RaftError::NotLeader { leader }) => {
                            let known =
                                leader.is_none_or(|p| c.members.iter().any(|m| m.peer == p));
                            assert!(known, "redirected to a stranger {leader:?}");
                        }
                        Err(e) => panic!("read on {i}: {e}\n{}", c.describe()),
                    }
                }
            }
            answers += answered;
        }
        assert!(answers >= 20, "every write was read back by some leader");
    }
}

/// Issue 9: a leader cut off from its group is deposed; a read on it then fails (it cannot
/// confirm its leadership, and its lease has run out) instead of answering stale data.
#[test]
fn read_index_on_a_deposed_leader_fails() {
    let c = Cluster::start("read_on_deposed_leader", ClusterOptions::new(3));
    let l = c.wait_leader(election_bound());
    c.apply(Bytes::from_static(b"before"), WITHIN);
    let others: Vec<_> = (0..3).filter(|i| *i != l).map(|i| c.addr(i)).collect();
    c.faults.partition(&[c.addr(l)], &others);
    c.wait(
        "the majority elects another leader",
        election_bound(),
        || c.leaders().iter().any(|x| *x != l),
    );
    let r = read_on(&c, l);
    assert!(
        matches!(r, Err(RaftError::NotLeader { .. })),
        "a deposed leader answered a read: {r:?}\n{}",
        c.describe()
    );
    assert!(!c.node(l).is_leader_lease_valid());
    c.faults.heal_all();
}

/// The leader lease is valid on the leader only: at no moment do two nodes hold one.
#[test]
fn the_leader_lease_is_valid_on_the_leader_only() {
    let c = Cluster::start("leader_lease", ClusterOptions::new(3));
    c.wait_leader(election_bound());
    c.apply(Bytes::from_static(b"x"), WITHIN);
    // The nodes are asked one after another, so one sample spans a moment, not an instant: a
    // sample taken while the test thread stalled for longer than a leader change takes (an
    // election timeout) could list the old holder and the new one. Such samples are
    // dropped (`None`); a real double holder shows in quick ones.
    let holders = || -> Option<Vec<usize>> {
        let start = std::time::Instant::now();
        let h = c
            .running()
            .filter(|(_, n)| n.is_leader_lease_valid())
            .map(|(i, _)| i)
            .collect();
        (start.elapsed() < Duration::from_millis(50)).then_some(h)
    };
    // Leadership may move under load: whichever node holds the lease must be the leader.
    c.wait("the leader, and only it, holds the lease", WITHIN, || {
        holders().is_some_and(|h| h.len() == 1 && c.role(h[0]) == Some(traft::Role::Leader))
    });
    assert!(
        c.holds_for(Duration::from_millis(500), || {
            holders().is_none_or(|h| h.len() <= 1)
        }),
        "two nodes held a valid lease at once\n{}",
        c.describe()
    );
}

/// Stalls `on_leader_start` on the given state machines while alive; released on drop, so a
/// failing assertion cannot leave the cluster's shutdown waiting on a held state machine.
struct HoldLeaderStart(Vec<cluster::kv::KvHandle>);

impl HoldLeaderStart {
    fn set(&self, on: bool) {
        for kv in &self.0 {
            kv.0.lock().hold_leader_start = on;
        }
    }
}

impl Drop for HoldLeaderStart {
    fn drop(&mut self) {
        self.set(false);
    }
}

/// A new leader whose state machine has not yet applied its term's first entry reports no
/// valid lease, even once that entry committed: a local read would miss earlier writes.
#[test]
fn the_lease_waits_for_the_state_machine_to_apply_the_terms_first_entry() {
    let mut c = Cluster::start("lease_applied", ClusterOptions::new(3));
    let l = c.wait_leader(election_bound());
    c.apply(Bytes::from_static(b"before"), WITHIN);
    let old_last = c.node(l).status().last_log_id.index;
    let held_sms = HoldLeaderStart(c.members.iter().map(|m| m.kv.clone()).collect());
    held_sms.set(true);
    c.kill(l);
    let others: Vec<usize> = (0..3).filter(|i| *i != l).collect();
    let mut m = usize::MAX;
    c.wait(
        "a new leader commits its term's first entry",
        WITHIN,
        || {
            m = c.leaders().into_iter().next().unwrap_or(usize::MAX);
            m != usize::MAX && c.node(m).status().commit_index > old_last
        },
    );
    assert!(others.contains(&m));
    let held = c.holds_for(Duration::from_millis(300), || {
        !c.node(m).is_leader_lease_valid()
    });
    drop(held_sms);
    assert!(
        held,
        "the lease was valid before the state machine applied the term's first entry\n{}",
        c.describe()
    );
    c.wait("the lease is valid once applied", WITHIN, || {
        c.node(m).is_leader_lease_valid()
    });
    assert!(c.members[m]
        .kv
        .data()
        .contains(&Bytes::from_static(b"before")));
}

/// Leader transfer: the target leads next, nothing committed is lost, and writes go on.
#[test]
fn leadership_moves_to_the_chosen_voter_and_writes_go_on() {
    let c = Cluster::start("transfer", ClusterOptions::new(3));
    c.wait_leader(election_bound());
    for k in 0..10 {
        c.apply(Bytes::from(format!("a{k}")), WITHIN);
    }
    // Two requests in a row: the first transfers, the second is refused (Busy) and is the
    // only one refused. If leadership moved before they arrived, both answer NotLeader: ask
    // the new leader.
    let deadline = std::time::Instant::now() + WITHIN;
    let (old, target) = loop {
        let l = c.wait_leader(election_bound());
        let target = (l + 1) % 3;
        let (tx, rx) = crossbeam::channel::unbounded();
        for _ in 0..2 {
            let tx = tx.clone();
            c.node(l)
                .transfer_leadership_to(c.members[target].peer, move |r| {
                    let _ = tx.send(r);
                });
        }
        let mut results: Vec<_> = (0..2)
            .map(|_| rx.recv_timeout(WITHIN).expect("answer"))
            .collect();
        let moved = results
            .iter()
            .all(|r| matches!(r, Err(RaftError::NotLeader { .. })));
        if moved && std::time::Instant::now() < deadline {
            continue;
        }
        results.sort_by_key(|r| r.is_err());
        assert_eq!(
            results,
            vec![Ok(()), Err(RaftError::Busy)],
            "{}",
            c.describe()
        );
        break (l, target);
    };
    let now = c.wait_leader(election_bound());
    assert_eq!(now, target, "{}", c.describe());
    c.apply(Bytes::from_static(b"after"), WITHIN);
    c.wait("all apply the same 11 entries", WITHIN, || {
        c.members.iter().all(|m| m.kv.len() == 11)
    });
    let refused = c.node(old).transfer_leadership_to_wait(c.members[old].peer);
    assert!(
        matches!(refused, Err(RaftError::NotLeader { .. })),
        "{refused:?}"
    );
    // The state machines heard the change: the old leader stopped leading and follows the
    // target; the third node stopped following the old leader and follows the target.
    let follows_target = format!("follow {:?}", Some(c.members[target].peer));
    let third = 3 - old - target;
    let stopped_following_old = format!("stop following {:?}", Some(c.members[old].peer));
    c.wait("the role callbacks ran", WITHIN, || {
        let ev_old = c.members[old].kv.0.lock().role_events.clone();
        let ev_third = c.members[third].kv.0.lock().role_events.clone();
        let last_lead = ev_old.iter().rposition(|e| e.starts_with("lead "));
        last_lead.is_some_and(|i| ev_old[i + 1..].first().is_some_and(|e| e == "stop leading"))
            && ev_old
                .last()
                .is_some_and(|e| e.starts_with(&follows_target))
            && ev_third
                .iter()
                .any(|e| e.starts_with(&stopped_following_old))
            && ev_third
                .last()
                .is_some_and(|e| e.starts_with(&follows_target))
    });
    let ev = c.members[target].kv.0.lock().role_events.clone();
    assert!(ev.last().is_some_and(|e| e.starts_with("lead ")), "{ev:?}");
}

/// `change_peers` moves the group to a new configuration in one joint change: a voter is
/// swapped for a new node, which catches up first; reads through `read_index_wait` see
/// every write acknowledged before them.
#[test]
fn change_peers_swaps_a_voter_for_a_new_node_in_one_joint_change() {
    let mut o = ClusterOptions::new(4);
    o.spares = 1;
    let c = Cluster::start("change_peers", o);
    c.wait_leader(election_bound());
    for k in 0..20 {
        c.apply(Bytes::from(format!("c{k}")), WITHIN);
    }
    let l = c.wait_leader(election_bound());
    let gone = (l + 1) % 3;
    let conf = traft::Configuration::new((0..4).filter(|i| *i != gone).map(|i| c.members[i].peer));
    on_leader(&c, |n| n.change_peers_wait(conf.clone()), "change_peers");
    for i in (0..4).filter(|i| *i != gone) {
        c.wait("the new configuration is in force", WITHIN, || {
            c.node(i).configuration() == conf
        });
    }
    c.wait("the new voter holds everything", WITHIN, || {
        c.members[3].kv.len() == 20
    });
    c.apply(Bytes::from_static(b"after"), WITHIN);
    let l = c.wait_leader(election_bound());
    let index = c.node(l).read_index_wait().expect("read on the leader");
    assert!(index >= 22, "the read saw the write: applied {index}");
    assert!(c.members[l]
        .kv
        .data()
        .contains(&Bytes::from_static(b"after")));
}

/// `reset_peers` (braft's recovery when a majority is gone for good): the one survivor of a
/// three-voter group forces a configuration of itself alone, leads at once, and applies.
#[test]
fn reset_peers_lets_the_last_survivor_of_a_lost_majority_serve_alone() {
    let mut c = Cluster::start("reset_peers", ClusterOptions::new(3));
    c.wait_leader(election_bound());
    for k in 0..5 {
        c.apply(Bytes::from(format!("r{k}")), WITHIN);
    }
    let survivor = 0;
    c.wait("the survivor has everything", WITHIN, || {
        c.members[survivor].kv.len() == 5
    });
    c.kill(1);
    c.kill(2);
    let alone = traft::Configuration::new([c.members[survivor].peer]);
    c.node(survivor)
        .reset_peers_wait(alone.clone())
        .expect("reset_peers");
    c.wait("the survivor leads alone", election_bound(), || {
        c.node(survivor).is_leader()
    });
    c.apply_via(survivor, Bytes::from_static(b"alone"), WITHIN)
        .expect("a write with no other voter");
    assert_eq!(c.members[survivor].kv.len(), 6);
    assert_eq!(c.node(survivor).configuration(), alone);
}

/// Membership: a new node started outside the configuration is added as a voter, catches up
/// with everything, and counts; then the leader removes itself, steps down, and the others
/// go on.
#[test]
fn a_new_voter_joins_and_the_leader_removes_itself() {
    let mut o = ClusterOptions::new(4);
    o.spares = 1;
    let c = Cluster::start("membership", o);
    let l = c.wait_leader(election_bound());
    assert_ne!(l, 3, "the spare never campaigns");
    for k in 0..50 {
        c.apply(Bytes::from(format!("m{k}")), WITHIN);
    }
    let new = c.members[3].peer;
    let l = on_leader(&c, |n| n.add_peer_wait(new), "add_peer");
    assert!(c.node(l).configuration().voters().contains(&new));
    c.wait("the new voter holds everything", WITHIN, || {
        c.members[3].kv.len() == 50
    });
    // Whoever leads removes itself. Removal is not idempotent to retry blindly: when the
    // leader loses its quorum mid-change, a new leader finishes the change, and asking that
    // one to remove *itself* would remove a second member. Retries name the first leader.
    let l = c.wait_leader(election_bound());
    let old = c.members[l].peer;
    on_leader(
        &c,
        |n| {
            if n.configuration().contains(&old) {
                n.remove_peer_wait(old)
            } else {
                Ok(())
            }
        },
        "remove_peer (the leader)",
    );
    c.wait("the removed leader steps down", election_bound(), || {
        !c.node(l).is_leader()
    });
    c.wait(
        "the remaining voters elect a leader",
        election_bound(),
        || c.leaders().iter().any(|x| *x != l),
    );
    c.apply(Bytes::from_static(b"after"), WITHIN);
    for i in (0..4).filter(|i| *i != l) {
        c.wait("the members apply it", WITHIN, || {
            c.members[i].kv.len() == 51
        });
        assert!(!c.node(i).configuration().contains(&old), "node {i}");
        assert!(c.members[i].kv.violations().is_empty());
    }
}

/// The CliService from another process's point of view: a `CliClient` on a server of its own
/// finds the leader, adds a voter, moves leadership and asks for a snapshot, all over the
/// wire.
#[test]
fn the_cli_service_administers_the_group_over_the_wire() {
    let mut o = ClusterOptions::new(4);
    o.spares = 1;
    let c = Cluster::start("cli_service", o);
    let l = c.wait_leader(election_bound());
    c.apply(Bytes::from_static(b"one"), WITHIN);
    let mut so = traft::rpc::ServerOptions::new("127.0.0.1:0".parse().unwrap());
    so.runtime = Some(c.rt.clone());
    let tool = std::sync::Arc::new(traft::rpc::Server::start(so).expect("tool server"));
    let cli = traft::cli::CliClient::new(tool.clone(), WITHIN);
    let conf = c.conf();
    let leader = cli
        .get_leader(&c.group, &conf)
        .unwrap_or_else(|e| panic!("get_leader: {e}\n{}", c.describe()));
    assert!(
        c.members[..3].iter().any(|m| m.peer == leader),
        "GetLeader named {leader}; the leader was {}",
        c.members[l].peer
    );
    let new = c.members[3].peer;
    // As an operator's tool would: an election in between (a follower's sync stalled past
    // the check-quorum bound on this shared disk once) answers NotLeader; ask again.
    let deadline = std::time::Instant::now() + WITHIN;
    loop {
        match cli.add_peer(&c.group, &conf, new) {
            Ok(()) => break,
            Err(RaftError::NotLeader { .. }) if std::time::Instant::now() < deadline => {
                c.wait_leader(election_bound());
            }
            Err(e) => panic!("add_peer: {e}\n{}", c.describe()),
        }
    }
    let l = c.wait_leader(election_bound());
    c.wait(
        "the leader's configuration names the new voter",
        WITHIN,
        || c.node(l).configuration().voters().contains(&new),
    );
    let target = (l + 1) % 3;
    cli.transfer_leader(&c.group, &conf, c.members[target].peer)
        .unwrap_or_else(|e| panic!("transfer_leader: {e}\n{}", c.describe()));
    assert_eq!(c.wait_leader(election_bound()), target);
    cli.snapshot(&c.group, c.members[target].peer)
        .unwrap_or_else(|e| panic!("snapshot: {e}\n{}", c.describe()));
    let bad = cli.add_peer(&GroupId::new("no_such_group").unwrap(), &conf, new);
    assert!(bad.is_err(), "{bad:?}");
    tool.shutdown();
}

/// braft's `vote`: a follower given a short election timeout is the first to campaign once
/// the leader dies, and leads; a drift not below the timeout is refused.
///
/// Every trial checks from the nodes' logs that the voting follower campaigned first. Its
/// pre-votes are refused by the other follower until that follower's lease (T after its
/// last heartbeat) runs out, and that follower's own timer fires at a random point in
/// [T, 2T): now and then it fires first after the lease, and leads. That is the protocol
/// working (no leader is ever disrupted), so a trial the other follower wins is repeated on
/// a fresh cluster with other seeds; five lost in a row is a failure.
#[test]
fn vote_makes_a_follower_campaign_first_when_the_leader_dies() {
    let mut lost = Vec::new();
    for trial in 0..5 {
        // A seed of its own per trial: the same seed draws the same timeouts, and so
        // the same race, again.
        let mut o = ClusterOptions::new(3);
        o.seed = o.seed.wrapping_add(1000 * trial);
        let mut c = Cluster::start("vote", o);
        let l = c.wait_leader(election_bound());
        let x = (l + 1) % 3;
        c.node(x).vote(60).expect("vote");
        assert!(matches!(
            c.node(x).reset_election_timeout_ms(60, 60),
            Err(RaftError::Invalid { .. })
        ));
        let mark = c.log.mark();
        c.kill(l);
        c.wait("a new leader", election_bound(), || {
            c.leaders().iter().any(|i| *i != l)
        });
        let first = c
            .log
            .since(mark)
            .into_iter()
            .find(|line| line.contains("election timeout: campaigning"));
        let by_x = format!(" n={x} ");
        assert!(
            first.as_ref().is_some_and(|line| line.contains(&by_x)),
            "trial {trial}: the first to campaign was not n{x}: {first:?}\n{}",
            c.describe()
        );
        if c.node(x).is_leader() {
            return;
        }
        lost.push(format!("trial {trial}: {}", c.describe()));
    }
    panic!("the voting follower never led:\n{}", lost.join("\n"));
}
