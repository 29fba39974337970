//! The cluster harness: N nodes of one group in one process on loopback TCP, each with its
//! own transport server, real storage in a temp dir (through a seeded fault-injecting file
//! system), the transport's seeded fault layer between them, and waits with deadlines that
//! print every node's state on failure. Real threads make it seeded, not deterministic.

#![allow(dead_code)]

pub mod kv;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use traft::fs::{FaultFs, FileSystem};
use traft::node::{Node, NodeOptions, NodeStatus, Task};
use traft::node_manager::NodeManager;
use traft::rpc::{FaultHandle, Server, ServerOptions};
use traft::testing::{poll_until, wait_for};
use traft::{Configuration, GroupId, PeerId, RaftError, Role, Runtime, RuntimeOptions};

pub use kv::{KvHandle, KvSm};

/// How many of the newest log lines a failure description carries.
const LOG_TAIL_LINES: usize = 300;

/// Every node's log lines (member number first), the newest [`LOG_TAIL_LINES`] kept for a
/// failure description; with `TRAFT_TEST_LOG` set each line also goes to stderr as written.
pub struct LogTail {
    // A test that panics while a node logs leaves at worst a half-pushed line behind.
    lines: std::panic::AssertUnwindSafe<Arc<parking_lot::Mutex<Lines>>>,
    echo: bool,
}

/// The kept lines and how many were ever written.
#[derive(Default)]
struct Lines {
    kept: std::collections::VecDeque<String>,
    written: u64,
}

impl Clone for LogTail {
    fn clone(&self) -> LogTail {
        LogTail {
            lines: std::panic::AssertUnwindSafe(Arc::clone(&self.lines)),
            echo: self.echo,
        }
    }
}

impl LogTail {
    fn new() -> LogTail {
        LogTail {
            lines: std::panic::AssertUnwindSafe(Arc::default()),
            echo: std::env::var_os("TRAFT_TEST_LOG").is_some(),
        }
    }

    /// The kept lines, oldest first.
    pub fn dump(&self) -> String {
        let lines = self.lines.lock();
        let mut s = String::new();
        for l in lines.kept.iter() {
            s.push_str(l);
            s.push('\n');
        }
        s
    }

    /// A mark for [`LogTail::since`]: the number of lines written so far.
    pub fn mark(&self) -> u64 {
        self.lines.lock().written
    }

    /// The lines written after `mark` that are still kept, oldest first.
    pub fn since(&self, mark: u64) -> Vec<String> {
        let lines = self.lines.lock();
        let first_kept = lines.written - lines.kept.len() as u64;
        let skip = mark.saturating_sub(first_kept) as usize;
        lines.kept.iter().skip(skip).cloned().collect()
    }
}

impl slog::Drain for LogTail {
    type Ok = ();
    type Err = slog::Never;

    fn log(&self, r: &slog::Record<'_>, kv: &slog::OwnedKVList) -> Result<(), slog::Never> {
        struct Line(String);
        impl slog::Serializer for Line {
            fn emit_arguments(
                &mut self,
                key: slog::Key,
                val: &std::fmt::Arguments<'_>,
            ) -> slog::Result {
                // Group and peer are on every line; the member number says it shorter.
                if key != "group" && key != "peer" {
                    self.0.push_str(&format!(" {key}={val}"));
                }
                Ok(())
            }
        }
        let mut line = Line(String::new());
        let _ = slog::KV::serialize(kv, r, &mut line);
        let _ = slog::KV::serialize(&r.kv(), r, &mut line);
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        let text = format!(
            "{}.{:03} {} {}{}",
            now.as_secs() % 1000,
            now.subsec_millis(),
            r.level().as_short_str(),
            r.msg(),
            line.0
        );
        if self.echo {
            eprintln!("{text}");
        }
        let mut lines = self.lines.lock();
        if lines.kept.len() == LOG_TAIL_LINES {
            lines.kept.pop_front();
        }
        lines.kept.push_back(text);
        lines.written += 1;
        Ok(())
    }
}

/// Election timeout used by cluster tests (ms): short, but well above scheduling noise.
pub const ELECTION_TIMEOUT_MS: u64 = 300;
pub const DRIFT_MS: u64 = 50;

/// Scheduling slack added to protocol bounds: a loaded 2-core machine delays timers and
/// threads by tens of milliseconds, now and then by a few hundred.
pub const SLACK_MS: u64 = 600;

/// How long to wait for a leader: 2T + drift + the vote timeout (DESIGN.md section 4), plus
/// the slack.
pub fn election_bound() -> Duration {
    let t = ELECTION_TIMEOUT_MS;
    Duration::from_millis(2 * t + DRIFT_MS + (t + DRIFT_MS) + SLACK_MS)
}

/// How long a leader that lost its quorum may lead on: the stepdown timer checks every T
/// that a quorum answered within the last T, so at most 2T, plus the slack.
pub fn stepdown_bound() -> Duration {
    Duration::from_millis(2 * ELECTION_TIMEOUT_MS + SLACK_MS)
}

/// One peer's slot: its server stays up across node restarts (same address, same PeerId).
pub struct Member {
    pub peer: PeerId,
    pub server: Arc<Server>,
    pub dir: PathBuf,
    pub node: Option<Node>,
    pub kv: KvHandle,
}

/// Cluster tests run one at a time: each runs 3-5 nodes on its own runtime, and several at
/// once on 2 cores starve each other's timers into spurious elections.
static ONE_AT_A_TIME: parking_lot::Mutex<()> = parking_lot::Mutex::new(());

pub struct Cluster {
    /// Held for the cluster's life (see ONE_AT_A_TIME). Declared first: dropped last.
    _turn: Option<parking_lot::MutexGuard<'static, ()>>,
    pub name: String,
    pub group: GroupId,
    pub rt: Runtime,
    pub faults: FaultHandle,
    pub fs: FaultFs,
    pub root: tempfile::TempDir,
    pub members: Vec<Member>,
    pub seed: u64,
    pub memory_log: bool,
    /// The first configuration: every member but the spares.
    pub initial: Configuration,
    /// Every node's newest log lines, printed with a failure's state.
    pub log: LogTail,
}

/// Options of a cluster.
#[derive(Clone)]
pub struct ClusterOptions {
    pub nodes: usize,
    pub memory_log: bool,
    pub snapshot_interval_s: u64,
    pub snapshot_log_margin: u64,
    pub seed: u64,
    pub apply_queue_capacity: Option<usize>,
    /// The last `spares` members start outside the configuration (an empty initial
    /// configuration: they wait to be added).
    pub spares: usize,
    pub lease_reads: bool,
    pub unsynced_bytes_max: Option<usize>,
    pub incoming_bytes_max: Option<usize>,
}

impl ClusterOptions {
    pub fn new(nodes: usize) -> ClusterOptions {
        ClusterOptions {
            nodes,
            memory_log: false,
            snapshot_interval_s: 0,
            snapshot_log_margin: 1000,
            seed: std::env::var("TRAFT_CLUSTER_SEED")
                .ok()
                .and_then(|s| s.parse().ok())
                .unwrap_or(42),
            apply_queue_capacity: None,
            spares: 0,
            lease_reads: true,
            unsynced_bytes_max: None,
            incoming_bytes_max: None,
        }
    }
}

impl Cluster {
    /// Starts servers for `opts.nodes` peers and inits every node with the full voter set.
    pub fn start(name: &str, opts: ClusterOptions) -> Cluster {
        let turn = ONE_AT_A_TIME.lock();
        eprintln!(
            "cluster {name}: seed {} (TRAFT_CLUSTER_SEED to replay the choices)",
            opts.seed
        );
        let rt = Runtime::new(RuntimeOptions {
            io_threads: 1,
            raft_threads: 2,
            disk_threads: 2,
            fsm_threads: 1,
        })
        .expect("runtime");
        let root = tempfile::tempdir().expect("tempdir");
        let fs = FaultFs::new(root.path(), opts.seed).expect("faultfs");
        let faults = FaultHandle::new(opts.seed);
        let mut members = Vec::new();
        for i in 0..opts.nodes {
            let mut so = ServerOptions::new("127.0.0.1:0".parse::<SocketAddr>().expect("addr"));
            so.runtime = Some(rt.clone());
            so.fault = Some(faults.clone());
            let server = Arc::new(Server::start(so).expect("server"));
            NodeManager::global()
                .add_service(&server)
                .expect("add_service");
            let peer = PeerId::new(server.local_addr(), 0);
            members.push(Member {
                peer,
                server,
                dir: root.path().join(format!("n{i}")),
                node: None,
                kv: KvHandle::default(),
            });
        }
        let mut c = Cluster {
            _turn: Some(turn),
            name: name.to_string(),
            group: GroupId::new(name).expect("group"),
            rt,
            faults,
            fs,
            root,
            members,
            seed: opts.seed,
            memory_log: opts.memory_log,
            initial: Configuration::default(),
            log: LogTail::new(),
        };
        let voters = opts.nodes - opts.spares;
        c.initial = Configuration::new(c.members[..voters].iter().map(|m| m.peer));
        for i in 0..opts.nodes {
            let conf = if i < voters {
                c.initial.clone()
            } else {
                Configuration::default()
            };
            c.start_node_with(i, conf, &opts).expect("init");
        }
        c
    }

    /// The first configuration of the group.
    pub fn conf(&self) -> Configuration {
        self.initial.clone()
    }

    pub fn node_options(&self, i: usize, conf: Configuration, o: &ClusterOptions) -> NodeOptions {
        let m = &self.members[i];
        let mut opts = NodeOptions::new(Box::new(KvSm::new(m.kv.clone())), &m.dir, conf);
        opts.election_timeout_ms = ELECTION_TIMEOUT_MS;
        opts.max_clock_drift_ms = DRIFT_MS;
        opts.snapshot_interval_s = o.snapshot_interval_s;
        opts.snapshot_log_margin = o.snapshot_log_margin;
        opts.memory_log = o.memory_log;
        opts.runtime = Some(self.rt.clone());
        opts.fs = self.fs.shared() as Arc<dyn FileSystem>;
        opts.seed = Some(self.seed.wrapping_add(i as u64));
        opts.lease_reads = o.lease_reads;
        if let Some(max) = o.unsynced_bytes_max {
            opts.unsynced_bytes_max = max;
        }
        if let Some(max) = o.incoming_bytes_max {
            opts.incoming_bytes_max = max;
        }
        if let Some(cap) = o.apply_queue_capacity {
            opts.apply_queue_capacity = cap;
        }
        opts.logger = Some(slog::Logger::root(self.log.clone(), slog::o!("n" => i)));
        opts
    }

    pub fn start_node_with(
        &mut self,
        i: usize,
        conf: Configuration,
        o: &ClusterOptions,
    ) -> traft::Result<()> {
        let opts = self.node_options(i, conf, o);
        let node = Node::new(self.group.clone(), self.members[i].peer);
        node.init(opts)?;
        self.members[i].node = Some(node);
        Ok(())
    }

    /// Restarts node `i` from its data directory (its state machine starts empty).
    pub fn restart(&mut self, i: usize) -> traft::Result<()> {
        self.members[i].kv.reset();
        let o = ClusterOptions {
            memory_log: self.memory_log,
            ..ClusterOptions::new(self.members.len())
        };
        let conf = self.conf();
        self.start_node_with(i, conf, &o)
    }

    /// Stops node `i` (its server stays up, answering that no such node is here).
    pub fn kill(&mut self, i: usize) {
        if let Some(n) = self.members[i].node.take() {
            n.shutdown();
            n.join();
        }
    }

    pub fn node(&self, i: usize) -> &Node {
        self.members[i].node.as_ref().expect("node is running")
    }

    pub fn running(&self) -> impl Iterator<Item = (usize, &Node)> {
        self.members
            .iter()
            .enumerate()
            .filter_map(|(i, m)| m.node.as_ref().map(|n| (i, n)))
    }

    pub fn addr(&self, i: usize) -> SocketAddr {
        self.members[i].peer.addr()
    }

    /// Every running node's status, one per line block.
    pub fn describe(&self) -> String {
        let mut s = format!("cluster {} seed {}\n", self.name, self.seed);
        for (i, m) in self.members.iter().enumerate() {
            match &m.node {
                Some(n) => {
                    let st: NodeStatus = n.status();
                    s.push_str(&format!(
                        "n{i} {}: role {:?} term {} leader {:?} commit {} applied {} last {} \
                         kv {} entries{}\n",
                        m.peer,
                        st.role,
                        st.term,
                        st.leader,
                        st.commit_index,
                        st.applied,
                        st.last_log_id,
                        m.kv.len(),
                        st.error.map(|e| format!(" ERROR {e}")).unwrap_or_default()
                    ));
                }
                None => s.push_str(&format!("n{i} {}: down\n", m.peer)),
            }
        }
        s.push_str("--- newest log lines (n = member) ---\n");
        s.push_str(&self.log.dump());
        s
    }

    /// The indexes of running leaders in the highest term any running node knows.
    pub fn leaders(&self) -> Vec<usize> {
        self.running()
            .filter(|(_, n)| n.is_leader())
            .map(|(i, _)| i)
            .collect()
    }

    /// Waits until exactly one running node leads and every running member of its
    /// configuration agrees on it.
    pub fn wait_leader(&self, within: Duration) -> usize {
        let mut found = None;
        wait_for(
            "one agreed leader",
            within,
            || {
                let leaders = self.leaders();
                if leaders.len() != 1 {
                    return false;
                }
                let l = leaders[0];
                let lp = self.members[l].peer;
                let conf = self.node(l).configuration();
                let agreed = self
                    .running()
                    .filter(|(i, _)| conf.contains(&self.members[*i].peer))
                    .all(|(_, n)| n.leader_id() == Some(lp));
                if agreed {
                    found = Some(l);
                }
                agreed
            },
            || self.describe(),
        );
        found.expect("leader")
    }

    /// Applies `data` through node `i`, retrying on the leader when redirected, within `within`.
    pub fn apply_via(&self, i: usize, data: Bytes, within: Duration) -> traft::Result<Bytes> {
        let node = self.node(i);
        let (task, waiter) = Task::waitable(data);
        node.apply(task);
        waiter.wait_timeout(within)
    }

    /// Applies on whichever node leads now, retrying on NotLeader until `within` passes.
    pub fn apply(&self, data: Bytes, within: Duration) -> Bytes {
        let deadline = std::time::Instant::now() + within;
        loop {
            let leader = self.leaders().first().copied();
            if let Some(l) = leader {
                match self.apply_via(l, data.clone(), Duration::from_secs(5)) {
                    Ok(r) => return r,
                    // The outcome is unknown or the node cannot lead any more (it entered its
                    // error state): ask whoever leads next.
                    Err(RaftError::NotLeader { .. })
                    | Err(RaftError::Timeout)
                    | Err(RaftError::Busy)
                    | Err(RaftError::ErrorState { .. }) => {}
                    Err(e) => panic!("apply failed: {e}\n{}", self.describe()),
                }
            }
            if std::time::Instant::now() > deadline {
                panic!(
                    "no leader applied {data:?} within {within:?}\n{}",
                    self.describe()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Waits until every running node has applied at least `index`.
    pub fn wait_applied(&self, index: u64, within: Duration) {
        wait_for(
            &format!("every running node to apply {index}"),
            within,
            || {
                self.running()
                    .all(|(_, n)| n.status().applied.index >= index)
            },
            || self.describe(),
        );
    }

    /// Waits until the condition holds, with the cluster described on failure.
    pub fn wait(&self, what: &str, within: Duration, cond: impl FnMut() -> bool) {
        wait_for(what, within, cond, || self.describe());
    }

    pub fn role(&self, i: usize) -> Option<Role> {
        self.members[i].node.as_ref().and_then(|n| n.status().role)
    }

    /// True if `cond` keeps holding for `span` (checked often).
    pub fn holds_for(&self, span: Duration, mut cond: impl FnMut() -> bool) -> bool {
        poll_until(span, || !cond()).is_err()
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for i in 0..self.members.len() {
            self.kill(i);
        }
        for m in &self.members {
            NodeManager::global().remove_service(m.server.local_addr());
            m.server.shutdown();
        }
        self.rt.shutdown();
        self._turn.take();
    }
}
