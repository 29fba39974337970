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

#[test]
fn replay_after_restart_starts_after_the_state_machines_durable_index() {
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
