//! A state machine that makes its own state durable (reports `durable_index`) gets only the
//! entries after that index replayed at restart.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use parking_lot::Mutex;
use traft::node::{Node, NodeOptions};
use traft::node_manager::NodeManager;
use traft::rpc::{Server, ServerOptions};
use traft::state_machine::{Iter, StateMachine};
use traft::testing::wait_for;
use traft::{Configuration, GroupId, PeerId, Runtime, RuntimeOptions};

#[derive(Default)]
struct Seen {
    indexes: Vec<u64>,
}

struct DurableSm {
    seen: Arc<Mutex<Seen>>,
    durable: u64,
}

impl StateMachine for DurableSm {
    fn on_apply(&mut self, iter: &mut Iter<'_>) {
        for e in iter {
            self.seen.lock().indexes.push(e.index);
        }
    }
    fn durable_index(&self) -> u64 {
        self.durable
    }
}

fn start(
    rt: &Runtime,
    server: &Arc<Server>,
    dir: &std::path::Path,
    durable: u64,
) -> (Node, Arc<Mutex<Seen>>) {
    let seen = Arc::new(Mutex::new(Seen::default()));
    let peer = PeerId::new(server.local_addr(), 0);
    let sm = DurableSm {
        seen: seen.clone(),
        durable,
    };
    let mut opts = NodeOptions::new(Box::new(sm), dir, Configuration::new([peer]));
    opts.election_timeout_ms = 200;
    opts.max_clock_drift_ms = 20;
    opts.runtime = Some(rt.clone());
    let node = Node::new(GroupId::new("replay").unwrap(), peer);
    node.init(opts).unwrap();
    (node, seen)
}

/// A small runtime of its own and a server on it with traft's services.
fn runtime_and_server() -> (Runtime, Arc<Server>) {
    let rt = Runtime::new(RuntimeOptions {
        io_threads: 1,
        raft_threads: 2,
        disk_threads: 1,
        fsm_threads: 1,
    })
    .unwrap();
    let mut so = ServerOptions::new("127.0.0.1:0".parse().unwrap());
    so.runtime = Some(rt.clone());
    let server = Arc::new(Server::start(so).unwrap());
    NodeManager::global().add_service(&server).unwrap();
    (rt, server)
}

#[test]
fn replay_after_restart_starts_after_the_state_machines_durable_index() {
    let (rt, server) = runtime_and_server();
    let dir = tempfile::tempdir().unwrap();
    let (node, seen) = start(&rt, &server, dir.path(), 0);
    wait_for(
        "leader",
        Duration::from_secs(5),
        || node.is_leader(),
        String::new,
    );
    for i in 0..20 {
        node.apply_wait(Bytes::from(format!("d{i}"))).unwrap();
    }
    let all = seen.lock().indexes.clone();
    assert_eq!(all.len(), 20);
    node.shutdown();
    node.join();
    // The state machine says it made everything up to the 12th data entry durable itself.
    let durable = all[11];
    let (node, seen) = start(&rt, &server, dir.path(), durable);
    wait_for(
        "replay",
        Duration::from_secs(5),
        || seen.lock().indexes.len() == 8,
        || format!("{:?}", seen.lock().indexes),
    );
    assert_eq!(
        seen.lock().indexes,
        all[12..].to_vec(),
        "only entries after the durable index"
    );
    node.shutdown();
    node.join();
    server.shutdown();
    rt.shutdown();
}

/// Saves an empty snapshot; on load, says it started loading and waits until released.
struct SlowLoad {
    loading: crossbeam::channel::Sender<()>,
    release: crossbeam::channel::Receiver<()>,
}

impl StateMachine for SlowLoad {
    fn on_apply(&mut self, iter: &mut Iter<'_>) {
        iter.for_each(drop);
    }
    fn on_snapshot_save(
        &mut self,
        mut writer: traft::snapshot::SnapshotWriter,
        done: traft::state_machine::SnapshotDone,
    ) {
        match writer.write_file("state", b"") {
            Ok(()) => done.complete(Ok(writer)),
            Err(e) => done.complete(Err(e)),
        }
    }
    fn on_snapshot_load(&mut self, _reader: &traft::snapshot::SnapshotReader) -> traft::Result<()> {
        let _ = self.loading.send(());
        let _ = self.release.recv_timeout(Duration::from_secs(10));
        Ok(())
    }
}

/// A `shutdown` that runs while `init` is still loading the snapshot wins: init fails with
/// `Stopped` and undoes itself, instead of leaving a node that says it is active with its
/// queues stopped. (This pins the outcome for a shutdown in the middle of init; one that
/// lands just before init's last step is what `NodeShared::activate` covers, a window this
/// test does not reach.)
#[test]
fn a_shutdown_during_init_makes_init_fail_with_stopped() {
    let (rt, server) = runtime_and_server();
    let dir = tempfile::tempdir().unwrap();
    let peer = PeerId::new(server.local_addr(), 0);
    let (loading_tx, loading) = crossbeam::channel::unbounded();
    let (release, release_rx) = crossbeam::channel::unbounded();
    let options = |sm: SlowLoad| {
        let mut opts = NodeOptions::new(Box::new(sm), dir.path(), Configuration::new([peer]));
        opts.runtime = Some(rt.clone());
        opts
    };
    let sm = || SlowLoad {
        loading: loading_tx.clone(),
        release: release_rx.clone(),
    };
    let group = GroupId::new("init_race").unwrap();
    let node = Node::new(group.clone(), peer);
    node.init(options(sm())).unwrap();
    wait_for(
        "leader",
        Duration::from_secs(5),
        || node.is_leader(),
        String::new,
    );
    node.apply_wait(Bytes::from_static(b"x")).unwrap();
    node.snapshot_wait().unwrap();
    node.shutdown();
    node.join();
    // Second life: init stops inside the snapshot load while another thread shuts down.
    let node = Node::new(group, peer);
    let n = node.clone();
    let opts = options(sm());
    let init = std::thread::spawn(move || n.init(opts));
    loading
        .recv_timeout(Duration::from_secs(10))
        .expect("init loads the snapshot");
    node.shutdown();
    release.send(()).unwrap();
    let result = init.join().unwrap();
    assert!(
        matches!(result, Err(traft::RaftError::Stopped)),
        "{result:?}"
    );
    assert!(node.error().is_none() && !node.is_leader());
    node.join();
    server.shutdown();
    rt.shutdown();
}
