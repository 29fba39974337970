//! Cluster behaviour tests on loopback TCP (the harness is tests/cluster): elections, leader
//! loss, partitions, catch-up, restarts, and faults of one node that leave the rest serving.

mod cluster;

use std::time::Duration;

use bytes::Bytes;
use cluster::{election_bound, Cluster, ClusterOptions};

#[test]
fn a_single_node_elects_itself_at_init_and_applies() {
    let c = Cluster::start("single_node_elects_itself", ClusterOptions::new(1));
    let l = c.wait_leader(election_bound());
    assert_eq!(l, 0);
    for i in 0..10 {
        c.apply(Bytes::from(format!("v{i}")), Duration::from_secs(5));
    }
    c.wait_applied(11, Duration::from_secs(5));
    assert_eq!(c.members[0].kv.len(), 10);
    let trace = c.node(0).init_trace();
    let numbers: Vec<u8> = trace.iter().map(|s| s.number).collect();
    assert_eq!(numbers, (1..=17).collect::<Vec<u8>>(), "{trace:#?}");
}

#[test]
fn three_nodes_elect_exactly_one_leader_within_the_election_bound() {
    let c = Cluster::start("three_nodes_elect_one", ClusterOptions::new(3));
    let l = c.wait_leader(election_bound());
    c.apply(Bytes::from_static(b"x"), Duration::from_secs(5));
    c.wait("all apply the entry", Duration::from_secs(5), || {
        c.members.iter().all(|m| m.kv.len() == 1)
    });
    assert_eq!(c.leaders(), vec![l]);
}
