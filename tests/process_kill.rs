//! Crashes at any instant, for real (RELIABILITY.md: "crash at any instant (SIGKILL)";
//! DESIGN.md section 8: multi-process tests): this test binary re-executes itself as three
//! node processes of one group on loopback, each with its log on disk. The parent writes
//! through whichever process leads and, several times, SIGKILLs the leader in the middle of
//! the stream, measures how long until another leads, and restarts the killed process from
//! its data directory. At the end every process must hold the same state machine, every
//! acknowledged write exactly once, and nothing twice.
//!
//! A child reads commands on stdin and answers on stdout, one line each: `apply <payload>`
//! answers `ok <index>` or `err <error>`; `dump` answers `dump <payloads applied so far,
//! comma-separated>`; stdin closing ends it.

use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpListener};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::{Arc, Mutex as StdMutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use crossbeam::channel::{self, Receiver};
use traft::node::{Node, NodeOptions};
use traft::node_manager::NodeManager;
use traft::rpc::{Server, ServerOptions};
use traft::state_machine::{Iter, StateMachine};
use traft::{Configuration, GroupId, PeerId};

const CHILD_ENV: &str = "TRAFT_KILL_CHILD";
const GROUP: &str = "process_kill";
/// Leader kills in the default run; `TRAFT_KILL_ROUNDS=<n>` runs more.
const ROUNDS_DEFAULT: usize = 3;
const WRITES_PER_ROUND: usize = 150;
const ANSWER_WITHIN: Duration = Duration::from_secs(10);

/// The child's state machine: every applied payload, in order.
struct Recorder(Arc<StdMutex<Vec<String>>>);

impl StateMachine for Recorder {
    fn on_apply(&mut self, iter: &mut Iter<'_>) {
        for mut e in iter {
            let index = e.index;
            self.0
                .lock()
                .expect("recorder lock")
                .push(String::from_utf8_lossy(&e.data).into_owned());
            e.respond(Bytes::from(index.to_string()));
        }
    }
}

/// Child mode: one node; commands on stdin, answers on stdout.
fn child(spec: &str) {
    let mut parts = spec.split('|');
    let me: SocketAddr = parts.next().expect("addr").parse().expect("addr");
    let dir = parts.next().expect("dir").to_string();
    let conf = Configuration::parse_voters(parts.next().expect("conf")).expect("conf");
    let server = Arc::new(Server::start(ServerOptions::new(me)).expect("server"));
    NodeManager::global()
        .add_service(&server)
        .expect("services");
    let state = Arc::new(StdMutex::new(Vec::new()));
    let mut opts = NodeOptions::new(Box::new(Recorder(state.clone())), &dir, conf);
    opts.election_timeout_ms = 300;
    opts.max_clock_drift_ms = 50;
    let node = Node::new(GroupId::new(GROUP).expect("group"), PeerId::new(me, 0));
    node.init(opts).expect("init");
    let mut out = std::io::stdout();
    writeln!(out, "ready").expect("stdout");
    for line in std::io::stdin().lock().lines() {
        let Ok(line) = line else { break };
        let answer = if let Some(payload) = line.strip_prefix("apply ") {
            match node.apply_wait(Bytes::from(payload.to_string())) {
                Ok(index) => format!("ok {}", String::from_utf8_lossy(&index)),
                Err(e) => format!("err {e}"),
            }
        } else if line == "dump" {
            format!("dump {}", state.lock().expect("state").join(","))
        } else {
            format!("err unknown command {line:?}")
        };
        writeln!(out, "{answer}").expect("stdout");
        out.flush().expect("stdout");
    }
    node.shutdown();
    node.join();
}

/// A running child process and the lines it prints.
struct Proc {
    child: Child,
    stdin: ChildStdin,
    lines: Receiver<String>,
}

impl Proc {
    fn spawn(addr: SocketAddr, dir: &std::path::Path, conf: &str) -> Proc {
        let mut child = Command::new(std::env::current_exe().expect("exe"))
            .args(["--exact", "child_node_process", "--nocapture"])
            .env(CHILD_ENV, format!("{addr}|{}|{conf}", dir.display()))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn");
        let stdin = child.stdin.take().expect("stdin");
        let stdout = child.stdout.take().expect("stdout");
        let (tx, lines) = channel::unbounded();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let p = Proc {
            child,
            stdin,
            lines,
        };
        let first = p.next_line(ANSWER_WITHIN).expect("the child starts");
        assert_eq!(first, "ready");
        p
    }

    /// The next line the child printed that is an answer (the test harness prints others).
    fn next_line(&self, within: Duration) -> Option<String> {
        let deadline = Instant::now() + within;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let line = self.lines.recv_timeout(left).ok()?;
            let answer = ["ready", "ok ", "err ", "dump "]
                .iter()
                .any(|p| line.starts_with(p));
            if answer {
                return Some(line);
            }
        }
    }

    fn ask(&mut self, command: &str) -> Option<String> {
        writeln!(self.stdin, "{command}").ok()?;
        self.stdin.flush().ok()?;
        self.next_line(ANSWER_WITHIN)
    }

    fn kill(&mut self) {
        self.child.kill().expect("SIGKILL");
        let _ = self.child.wait();
    }
}

fn free_addr() -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind");
    l.local_addr().expect("addr")
}

#[test]
fn child_node_process() {
    if let Ok(spec) = std::env::var(CHILD_ENV) {
        child(&spec);
    }
}

/// Writes on whichever process answers `ok` (trying each in turn, a new payload each time:
/// a write whose outcome is unknown is never resent), until `count` are acknowledged.
fn write_until(procs: &mut [Option<Proc>], next: &mut u64, acked: &mut Vec<String>, count: usize) {
    let want = acked.len() + count;
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut i = 0;
    while acked.len() < want {
        assert!(
            Instant::now() < deadline,
            "no leader accepted writes for 60 s"
        );
        i = (i + 1) % procs.len();
        let Some(p) = procs[i].as_mut() else { continue };
        *next += 1;
        let payload = format!("w{next}");
        if let Some(answer) = p.ask(&format!("apply {payload}")) {
            if answer.starts_with("ok ") {
                acked.push(payload);
                // Keep writing to the leader while it answers.
                while acked.len() < want {
                    *next += 1;
                    let payload = format!("w{next}");
                    match p.ask(&format!("apply {payload}")) {
                        Some(a) if a.starts_with("ok ") => acked.push(payload),
                        _ => break,
                    }
                }
            }
        }
    }
}

/// Three node processes; the leader is SIGKILLed mid-stream in every round and restarted
/// from its disk: every acknowledged write survives exactly once on every process.
#[test]
fn sigkilled_leaders_lose_no_acknowledged_write() {
    if std::env::var(CHILD_ENV).is_ok() {
        return;
    }
    let root = tempfile::tempdir().expect("tempdir");
    let addrs: Vec<SocketAddr> = (0..3).map(|_| free_addr()).collect();
    let conf = addrs
        .iter()
        .map(|a| format!("{a}:0"))
        .collect::<Vec<_>>()
        .join(",");
    let dirs: Vec<_> = (0..3).map(|i| root.path().join(format!("n{i}"))).collect();
    let mut procs: Vec<Option<Proc>> = (0..3)
        .map(|i| Some(Proc::spawn(addrs[i], &dirs[i], &conf)))
        .collect();
    let (mut next, mut acked) = (0u64, Vec::new());
    let mut recoveries = Vec::new();
    let rounds = std::env::var("TRAFT_KILL_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(ROUNDS_DEFAULT);
    for round in 0..rounds {
        write_until(&mut procs, &mut next, &mut acked, WRITES_PER_ROUND);
        // Find the leader (the one that takes a write) and kill it right after.
        let probe = format!("probe{round}");
        let leader = (0..3)
            .find(|i| {
                let p = procs[*i].as_mut().expect("all run between rounds");
                p.ask(&format!("apply {probe}"))
                    .is_some_and(|a| a.starts_with("ok "))
            })
            .expect("a leader");
        acked.push(probe);
        // A write in flight when the leader dies: its outcome is unknown (it may survive,
        // once, or not at all).
        let p = procs[leader].as_mut().expect("leader");
        let _ = writeln!(p.stdin, "apply inflight{round}").and_then(|_| p.stdin.flush());
        std::thread::sleep(Duration::from_micros(200 * round as u64));
        let started = Instant::now();
        p.kill();
        procs[leader] = None;
        write_until(&mut procs, &mut next, &mut acked, 1);
        recoveries.push(started.elapsed());
        write_until(&mut procs, &mut next, &mut acked, WRITES_PER_ROUND / 2);
        procs[leader] = Some(Proc::spawn(addrs[leader], &dirs[leader], &conf));
        eprintln!(
            "round {round}: killed leader {leader} after {} writes, writes resumed after {:?}",
            acked.len(),
            recoveries[round]
        );
    }
    write_until(&mut procs, &mut next, &mut acked, 20);
    // Every process converges on the same state machine holding every acknowledged write.
    let deadline = Instant::now() + Duration::from_secs(30);
    let dumps = loop {
        let dumps: Vec<Vec<String>> = procs
            .iter_mut()
            .map(|p| {
                let answer = p.as_mut().expect("running").ask("dump").unwrap_or_default();
                let list = answer.strip_prefix("dump ").unwrap_or_default();
                list.split(',')
                    .filter(|s| !s.is_empty())
                    .map(String::from)
                    .collect()
            })
            .collect();
        let same = dumps.iter().all(|d| *d == dumps[0]);
        if same && acked.iter().all(|a| dumps[0].contains(a)) {
            break dumps;
        }
        assert!(
            Instant::now() < deadline,
            "the processes did not converge: lengths {:?}, {} acknowledged",
            dumps.iter().map(Vec::len).collect::<Vec<_>>(),
            acked.len()
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    let state = &dumps[0];
    let mut seen = std::collections::HashSet::new();
    for p in state {
        assert!(seen.insert(p), "{p} applied twice");
    }
    recoveries.sort();
    eprintln!(
        "{rounds} leaders SIGKILLed and restarted; {} writes acknowledged, all present once on \
         all 3 processes ({} applied in all); writes resumed after a kill in p50 {:?}, max {:?}",
        acked.len(),
        state.len(),
        recoveries[recoveries.len() / 2],
        recoveries[recoveries.len() - 1]
    );
    for p in procs.iter_mut().flatten() {
        p.kill();
    }
}
