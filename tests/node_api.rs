//! Node API behaviour on small clusters: init order on first start and on restart, snapshots
//! and compaction, bounds of the apply path, replay after a restart, the services registered
//! by `add_service`, shutdown, and init failures that undo themselves.

mod cluster;

use std::time::Duration;

use bytes::Bytes;
use cluster::{election_bound, Cluster, ClusterOptions};
use traft::node::Task;
use traft::rpc::Method;
use traft::RaftError;

const WITHIN: Duration = Duration::from_secs(10);

fn steps(c: &Cluster, i: usize) -> Vec<(u8, String)> {
    c.node(i).init_trace().into_iter().map(|s| (s.number, s.what)).collect()
}

#[test]
fn init_runs_the_documented_steps_in_order_on_first_start_and_on_restart_with_a_snapshot() {
    let mut c = Cluster::start("init_order", ClusterOptions::new(1));
    c.wait_leader(election_bound());
    let first = steps(&c, 0);
    let numbers: Vec<u8> = first.iter().map(|s| s.0).collect();
    assert_eq!(numbers, (1..=17).collect::<Vec<_>>(), "{first:#?}");
    assert!(first[7].1.contains("no snapshot"), "{first:#?}");
    for i in 0..30 {
        c.apply(Bytes::from(format!("s{i}")), WITHIN);
    }
    c.node(0).snapshot_wait().expect("snapshot");
    for i in 0..10 {
        c.apply(Bytes::from(format!("tail{i}")), WITHIN);
    }
    c.kill(0);
    c.restart(0).expect("restart");
    let again = steps(&c, 0);
    let numbers: Vec<u8> = again.iter().map(|s| s.0).collect();
    assert_eq!(numbers, (1..=17).collect::<Vec<_>>(), "{again:#?}");
    assert!(again[7].1.contains("snapshot (31, t"), "step 8 loads the snapshot: {again:#?}");
    assert!(again[4].1.contains("on disk"), "{again:#?}");
    c.wait_leader(election_bound());
    c.wait("snapshot + replayed tail", WITHIN, || c.members[0].kv.len() == 40);
    let kv = c.members[0].kv.0.lock();
    assert_eq!(kv.snapshots_loaded, 1);
    assert!(kv.violations.is_empty(), "{:?}", kv.violations);
}

#[test]
fn a_snapshot_compacts_the_log_keeping_the_margin() {
    let mut o = ClusterOptions::new(1);
    o.snapshot_log_margin = 5;
    let c = Cluster::start("compaction_margin", o);
    c.wait_leader(election_bound());
    for i in 0..50 {
        c.apply(Bytes::from(format!("c{i}")), WITHIN);
    }
    c.node(0).snapshot_wait().expect("snapshot");
    let st = c.node(0).status();
    assert_eq!(st.first_log_index, st.applied.index - 5 + 1, "{st}");
}

#[test]
fn a_follower_behind_the_compaction_point_is_reported_in_status() {
    let mut o = ClusterOptions::new(3);
    o.snapshot_log_margin = 0;
    let mut c = Cluster::start("behind_compaction", o);
    let l = c.wait_leader(election_bound());
    let f = (l + 1) % 3;
    c.kill(f);
    for i in 0..40 {
        c.apply(Bytes::from(format!("b{i}")), WITHIN);
    }
    c.node(l).snapshot_wait().expect("snapshot");
    c.restart(f).expect("restart");
    let peer = c.members[f].peer;
    c.wait("status reports the follower behind compaction", WITHIN, || {
        let st = c.node(l).status();
        st.replicators.iter().any(|(p, _, _, behind)| *p == peer && *behind > 0)
    });
    let text = c.node(l).status().to_string();
    assert!(text.contains("BEHIND COMPACTION"), "{text}");
}

#[test]
fn an_oversized_task_is_invalid_and_a_full_apply_queue_is_busy() {
    let c = Cluster::start("apply_bounds", ClusterOptions::new(1));
    let l = c.wait_leader(election_bound());
    let (task, w) = Task::waitable(Bytes::from(vec![0u8; (1 << 20) + 1]));
    c.node(l).apply(task);
    assert!(matches!(w.wait_timeout(WITHIN), Err(RaftError::Invalid { .. })));
    // Flood far past apply_queue_capacity from this thread faster than one queue drains.
    let mut busy = 0;
    let mut waiters = Vec::new();
    for i in 0..200_000u32 {
        let (task, w) = Task::waitable(Bytes::from(i.to_le_bytes().to_vec()));
        c.node(l).apply(task);
        waiters.push(w);
    }
    for w in waiters {
        match w.wait_timeout(WITHIN) {
            Ok(_) => {}
            Err(RaftError::Busy) => busy += 1,
            Err(e) => panic!("{e}"),
        }
    }
    assert!(busy > 0, "a bounded apply queue must refuse with Busy under a flood");
}

#[test]
fn shutdown_fails_unfinished_tasks_with_stopped_and_the_directory_can_be_reused() {
    let mut c = Cluster::start("shutdown_stops", ClusterOptions::new(3));
    let l = c.wait_leader(election_bound());
    let others: Vec<_> = (0..3).filter(|i| *i != l).map(|i| c.addr(i)).collect();
    c.faults.partition(&[c.addr(l)], &others);
    let (task, w) = Task::waitable(Bytes::from_static(b"never committed"));
    c.node(l).apply(task);
    c.kill(l);
    let r = w.wait_timeout(WITHIN);
    assert!(
        matches!(r, Err(RaftError::Stopped) | Err(RaftError::NotLeader { .. })),
        "{r:?}"
    );
    c.faults.heal_all();
    c.restart(l).expect("re-init from the same directory");
    c.wait_leader(election_bound());
}

#[test]
fn a_failed_init_undoes_itself_and_reports_a_clear_error() {
    let mut c = Cluster::start("init_undo", ClusterOptions::new(1));
    c.wait_leader(election_bound());
    c.kill(0);
    let meta = c.members[0].dir.join("meta").join("raft_meta");
    let mut bytes = std::fs::read(&meta).expect("meta file");
    bytes[10] ^= 0xff;
    std::fs::write(&meta, &bytes).expect("write");
    c.fs.rescan().expect("rescan");
    let err = c.restart(0).unwrap_err();
    assert!(matches!(err, RaftError::Corruption { .. }), "{err}");
    // Everything the failed init started was stopped: the directory lock is free again.
    bytes[10] ^= 0xff;
    std::fs::write(&meta, &bytes).expect("write");
    c.fs.rescan().expect("rescan");
    c.restart(0).expect("init after repair");
    c.wait_leader(election_bound());
}

#[test]
fn add_service_serves_stat_and_answers_cli_and_file_as_not_supported() {
    let c = Cluster::start("services", ClusterOptions::new(1));
    c.wait_leader(election_bound());
    let server = &c.members[0].server;
    let addr = server.local_addr();
    let call = |m: Method| {
        let (tx, rx) = crossbeam::channel::bounded(1);
        server.call_default(addr, m, vec![], Duration::from_secs(5), move |r| {
            let _ = tx.send(r);
        });
        rx.recv().expect("answer")
    };
    let stat = call(Method::Stat).expect("stat");
    let text = String::from_utf8_lossy(&stat);
    assert!(text.contains("group: services") && text.contains("role: Some(Leader)") || text.contains("role: Leader"), "{text}");
    for m in [Method::AddPeer, Method::GetFile, Method::TransferLeader] {
        assert!(matches!(call(m), Err(RaftError::NotSupported { .. })), "{m}");
    }
}
