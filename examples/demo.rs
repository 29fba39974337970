//! The demo the README runs: braft's counter on a 3-node traft cluster on loopback, with real
//! storage under a temp dir. Client threads add to the counter through the log and read it
//! back through `read_index` (linearizable, without a log entry); the demo
//! kills the leader, shows the new election, goes on, restarts the killed node and shows it
//! catch up, printing per-phase throughput and latency. Then it shuts down cleanly.
//!
//! Run: `cargo run --release --example demo`

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use parking_lot::Mutex;
use traft::node::{Node, NodeOptions, Task};
use traft::node_manager::NodeManager;
use traft::rpc::{Server, ServerOptions};
use traft::snapshot::{SnapshotReader, SnapshotWriter};
use traft::state_machine::{Iter, SnapshotDone, StateMachine};
use traft::{Configuration, GroupId, PeerId, RaftError, Runtime, RuntimeOptions};

/// The replicated counter. Operation: `add <n>` (returns the new value); reads use
/// `read_index` and then look at `value` directly.
struct Counter {
    value: Arc<AtomicU64>,
}

impl StateMachine for Counter {
    fn on_apply(&mut self, iter: &mut Iter<'_>) {
        for mut e in iter {
            let op = std::str::from_utf8(&e.data).unwrap_or("");
            let n = op
                .strip_prefix("add ")
                .and_then(|n| n.parse::<u64>().ok())
                .unwrap_or(0);
            let v = self.value.fetch_add(n, Ordering::Relaxed) + n;
            e.respond(Bytes::from(v.to_string()));
        }
    }

    fn on_snapshot_save(&mut self, mut writer: SnapshotWriter, done: SnapshotDone) {
        let v = self.value.load(Ordering::Relaxed).to_le_bytes();
        match writer.write_file("counter", &v) {
            Ok(()) => done.complete(Ok(writer)),
            Err(e) => done.complete(Err(e)),
        }
    }

    fn on_snapshot_load(&mut self, reader: &SnapshotReader) -> traft::Result<()> {
        let path = reader.file_path("counter");
        let b = std::fs::read(&path).map_err(|e| RaftError::io("read", Some(&path), &e))?;
        let v = b
            .get(..8)
            .and_then(|s| s.try_into().ok())
            .map(u64::from_le_bytes);
        self.value.store(v.unwrap_or(0), Ordering::Relaxed);
        Ok(())
    }
}

struct Peer {
    peer: PeerId,
    dir: std::path::PathBuf,
    node: Option<Node>,
    value: Arc<AtomicU64>,
}

struct Demo {
    rt: Runtime,
    group: GroupId,
    conf: Configuration,
    peers: Vec<Peer>,
    _servers: Vec<Arc<Server>>,
    _dir: tempfile::TempDir,
}

impl Demo {
    fn start() -> traft::Result<Demo> {
        let rt = Runtime::new(RuntimeOptions {
            disk_threads: 3,
            ..RuntimeOptions::default()
        })?;
        let dir = tempfile::tempdir().map_err(|e| RaftError::io("tempdir", None, &e))?;
        let mut servers = Vec::new();
        let mut peers = Vec::new();
        for i in 0..3 {
            let mut so = ServerOptions::new("127.0.0.1:0".parse().expect("literal address"));
            so.runtime = Some(rt.clone());
            let server = Arc::new(Server::start(so)?);
            NodeManager::global().add_service(&server)?;
            peers.push(Peer {
                peer: PeerId::new(server.local_addr(), 0),
                dir: dir.path().join(format!("node{i}")),
                node: None,
                value: Arc::new(AtomicU64::new(0)),
            });
            servers.push(server);
        }
        let conf = Configuration::new(peers.iter().map(|p| p.peer));
        let mut demo = Demo {
            rt,
            group: GroupId::new("counter")?,
            conf,
            peers,
            _servers: servers,
            _dir: dir,
        };
        for i in 0..3 {
            demo.start_node(i)?;
        }
        Ok(demo)
    }

    fn start_node(&mut self, i: usize) -> traft::Result<()> {
        let p = &mut self.peers[i];
        p.value.store(0, Ordering::Relaxed);
        let sm = Counter {
            value: p.value.clone(),
        };
        let mut opts = NodeOptions::new(Box::new(sm), &p.dir, self.conf.clone());
        opts.election_timeout_ms = 500;
        opts.max_clock_drift_ms = 50;
        opts.runtime = Some(self.rt.clone());
        let node = Node::new(self.group.clone(), p.peer);
        node.init(opts)?;
        p.node = Some(node);
        Ok(())
    }

    fn leader(&self, within: Duration) -> Option<usize> {
        let start = Instant::now();
        while start.elapsed() < within {
            let found = self
                .peers
                .iter()
                .position(|p| p.node.as_ref().is_some_and(Node::is_leader));
            if found.is_some() {
                return found;
            }
            std::thread::sleep(Duration::from_millis(2));
        }
        None
    }

    fn current_leader(&self) -> Option<Node> {
        self.current_leader_index()
            .and_then(|i| self.peers[i].node.clone())
    }

    fn current_leader_index(&self) -> Option<usize> {
        self.peers
            .iter()
            .position(|p| p.node.as_ref().is_some_and(Node::is_leader))
    }

    /// A linearizable read of the counter on node `i`: `read_index`, then the local value.
    fn read(&self, i: usize) -> traft::Result<u64> {
        let node = self.peers[i].node.as_ref().ok_or(RaftError::Stopped)?;
        node.read_index_wait()?;
        Ok(self.peers[i].value.load(Ordering::Relaxed))
    }
}

/// Latencies and counts of one phase.
#[derive(Default)]
struct Phase {
    lat_us: Mutex<Vec<u32>>,
    adds: AtomicU64,
    reads: AtomicU64,
    redirects: AtomicU64,
}

fn run_clients(demo: &Demo, secs: u64, threads: usize) -> Phase {
    let phase = Phase::default();
    let stop = AtomicBool::new(false);
    std::thread::scope(|s| {
        for t in 0..threads {
            let (phase, stop) = (&phase, &stop);
            s.spawn(move || {
                let mut i = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    let Some(l) = demo.current_leader_index() else {
                        std::thread::sleep(Duration::from_millis(5));
                        continue;
                    };
                    let Some(leader) = demo.peers[l].node.clone() else {
                        continue;
                    };
                    i += 1;
                    let read = (i + t as u64) % 8 == 0;
                    let started = Instant::now();
                    let outcome = if read {
                        demo.read(l).map(|_| ())
                    } else {
                        let (task, w) = Task::waitable(Bytes::from_static(b"add 1"));
                        leader.apply(task);
                        w.wait_timeout(Duration::from_secs(5)).map(|_| ())
                    };
                    match outcome {
                        Ok(_) => {
                            let us = started.elapsed().as_micros() as u32;
                            phase.lat_us.lock().push(us);
                            let n = if read { &phase.reads } else { &phase.adds };
                            n.fetch_add(1, Ordering::Relaxed);
                        }
                        Err(_) => {
                            phase.redirects.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                }
            });
        }
        std::thread::sleep(Duration::from_secs(secs));
        stop.store(true, Ordering::Relaxed);
    });
    phase
}

fn report(name: &str, phase: &Phase, secs: u64) {
    let mut lat = phase.lat_us.lock().clone();
    lat.sort_unstable();
    let pct = |p: f64| {
        lat.get(((lat.len().max(1) - 1) as f64 * p) as usize)
            .copied()
            .unwrap_or(0)
    };
    let adds = phase.adds.load(Ordering::Relaxed);
    let reads = phase.reads.load(Ordering::Relaxed);
    println!(
        "  {name}: {:.0} ops/s ({adds} adds, {reads} reads, {} retried), \
         latency p50 {} us, p99 {} us",
        (adds + reads) as f64 / secs as f64,
        phase.redirects.load(Ordering::Relaxed),
        pct(0.5),
        pct(0.99)
    );
}

fn main() -> traft::Result<()> {
    println!("traft demo: a replicated counter on 3 nodes over loopback TCP, logs on disk");
    let mut demo = Demo::start()?;
    for p in &demo.peers {
        println!("  node {} data in {}", p.peer, p.dir.display());
    }
    let started = Instant::now();
    let l = demo
        .leader(Duration::from_secs(10))
        .ok_or(RaftError::Timeout)?;
    println!(
        "leader elected: {} after {:?}",
        demo.peers[l].peer,
        started.elapsed()
    );

    println!("phase 1: 16 client threads add and read for 3 s");
    report("phase 1", &run_clients(&demo, 3, 16), 3);

    let old = demo
        .leader(Duration::from_secs(5))
        .ok_or(RaftError::Timeout)?;
    println!("killing the leader {}", demo.peers[old].peer);
    let killed = Instant::now();
    if let Some(n) = demo.peers[old].node.take() {
        n.shutdown();
        n.join();
    }
    let new = demo
        .leader(Duration::from_secs(10))
        .ok_or(RaftError::Timeout)?;
    println!(
        "new leader elected: {} after {:?}",
        demo.peers[new].peer,
        killed.elapsed()
    );

    println!("phase 2: clients go on with two nodes for 3 s");
    report("phase 2", &run_clients(&demo, 3, 16), 3);

    println!(
        "restarting {} from its data directory",
        demo.peers[old].peer
    );
    let restarted = Instant::now();
    demo.start_node(old)?;
    let target = demo
        .current_leader()
        .map(|n| n.status().commit_index)
        .unwrap_or(0);
    while demo.peers[old]
        .node
        .as_ref()
        .map_or(0, |n| n.status().applied.index)
        < target
    {
        std::thread::sleep(Duration::from_millis(5));
    }
    println!(
        "  caught up to index {target} after {:?} (counter {})",
        restarted.elapsed(),
        demo.peers[old].value.load(Ordering::Relaxed)
    );

    println!("phase 3: all three nodes for 3 s");
    report("phase 3", &run_clients(&demo, 3, 16), 3);

    let l = demo.current_leader_index().ok_or(RaftError::Timeout)?;
    let value = demo.read(l)?;
    let final_leader = demo.current_leader().ok_or(RaftError::Timeout)?;
    let commit = final_leader.status().commit_index;
    while demo.peers.iter().any(|p| {
        p.node
            .as_ref()
            .is_some_and(|n| n.status().applied.index < commit)
    }) {
        std::thread::sleep(Duration::from_millis(5));
    }
    let values: Vec<u64> = demo
        .peers
        .iter()
        .map(|p| p.value.load(Ordering::Relaxed))
        .collect();
    println!("final counter {value} (read_index on the leader), on every node: {values:?}");
    if values.iter().any(|v| *v != value) {
        return Err(RaftError::invalid(format!(
            "the nodes disagree: {values:?} against {value}"
        )));
    }
    println!("shutting down");
    for p in &mut demo.peers {
        if let Some(n) = p.node.take() {
            n.shutdown();
            n.join();
        }
    }
    println!("done in {:?}", started.elapsed());
    Ok(())
}
