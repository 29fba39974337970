//! The benchmark line: N nodes per group, G groups, in one process on loopback TCP; C client
//! threads each apply fixed-size payloads in a closed loop through the leader of one group.
//! Prints one machine-readable line per configuration, plus, in the same run, this machine's
//! loopback round trip and fdatasync latency.
//!
//! Run: `cargo run --release --example bench` (the default matrix), or one configuration:
//! `cargo run --release --example bench -- --nodes 3 --groups 1 --clients 256 --payload 64
//!  --log memory --sync on --secs 5`. `--log both` runs the memory and the disk line;
//! `--rounds N` repeats everything N times (each round measures the machine again and starts
//! one line later), then prints each line's medians. Whenever a disk line has its memory
//! line, a `ratio` line gives disk / memory per round and their median; a 1-client line with
//! sync on gets a `floor` line: p50 over the round's loopback RTT + fdatasync p50.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use traft::node::{Node, NodeOptions, Task};
use traft::node_manager::NodeManager;
use traft::rpc::{Server, ServerOptions};
use traft::snapshot::{SnapshotReader, SnapshotWriter};
use traft::state_machine::{Iter, SnapshotDone, StateMachine};
use traft::{Configuration, GroupId, PeerId, Runtime, RuntimeOptions};

#[derive(Clone, Debug)]
struct Config {
    nodes: usize,
    groups: usize,
    clients: usize,
    payload: usize,
    disk: bool,
    sync: bool,
    secs: u64,
    /// Clients are OS threads blocking on each apply, or closed-loop chains of callbacks (a
    /// completion issues the client's next apply), as async clients would be.
    threads: bool,
}

/// A state machine that only counts (the bench measures the replication path).
struct Counter(Arc<AtomicU64>);

impl StateMachine for Counter {
    fn on_apply(&mut self, iter: &mut Iter<'_>) {
        let n = iter.count() as u64;
        self.0.fetch_add(n, Ordering::Relaxed);
    }

    fn on_snapshot_save(&mut self, mut writer: SnapshotWriter, done: SnapshotDone) {
        let count = self.0.load(Ordering::Relaxed).to_le_bytes();
        match writer.write_file("count", &count) {
            Ok(()) => done.complete(Ok(writer)),
            Err(e) => done.complete(Err(e)),
        }
    }

    fn on_snapshot_load(&mut self, reader: &SnapshotReader) -> traft::Result<()> {
        let bytes = std::fs::read(reader.file_path("count"))
            .map_err(|e| traft::RaftError::io("read", Some(&reader.file_path("count")), &e))?;
        let mut b = [0u8; 8];
        b.copy_from_slice(bytes.get(..8).unwrap_or(&[0; 8]));
        self.0.store(u64::from_le_bytes(b), Ordering::Relaxed);
        Ok(())
    }
}

struct Result {
    ops_per_s: f64,
    p50_us: u64,
    p99_us: u64,
    p999_us: u64,
    errors: u64,
}

fn percentile(sorted: &[u32], p: f64) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    u64::from(sorted[i])
}

fn run(cfg: &Config, rt: &Runtime) -> Result {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut servers = Vec::new();
    for _ in 0..cfg.nodes {
        let mut so = ServerOptions::new("127.0.0.1:0".parse().expect("addr"));
        so.runtime = Some(rt.clone());
        so.logger = traft::logging::discard_logger();
        let s = Arc::new(Server::start(so).expect("server"));
        NodeManager::global().add_service(&s).expect("add_service");
        servers.push(s);
    }
    let peers: Vec<PeerId> = servers
        .iter()
        .map(|s| PeerId::new(s.local_addr(), 0))
        .collect();
    let conf = Configuration::new(peers.iter().copied());
    let mut groups: Vec<Vec<Node>> = Vec::new();
    for g in 0..cfg.groups {
        let group = GroupId::new(&format!("bench{g}")).expect("group");
        let mut nodes = Vec::new();
        for (i, peer) in peers.iter().enumerate() {
            let path = dir.path().join(format!("g{g}n{i}"));
            let sm = Box::new(Counter(Arc::new(AtomicU64::new(0))));
            let mut opts = NodeOptions::new(sm, path, conf.clone());
            opts.election_timeout_ms = 1000;
            opts.snapshot_interval_s = std::env::var("BENCH_SNAPSHOT_S")
                .ok()
                .and_then(|v| v.parse().ok())
                .unwrap_or(0);
            opts.memory_log = !cfg.disk;
            opts.sync = cfg.sync;
            opts.runtime = Some(rt.clone());
            opts.logger = Some(traft::logging::discard_logger());
            let node = Node::new(group.clone(), *peer);
            node.init(opts).expect("init");
            nodes.push(node);
        }
        groups.push(nodes);
    }
    let leaders: Vec<Node> = groups
        .iter()
        .map(|nodes| {
            let start = Instant::now();
            loop {
                if let Some(l) = nodes.iter().find(|n| n.is_leader()) {
                    break l.clone();
                }
                assert!(start.elapsed() < Duration::from_secs(10), "no leader");
                std::thread::sleep(Duration::from_millis(5));
            }
        })
        .collect();
    let result = if cfg.threads {
        drive(cfg, &leaders)
    } else {
        drive_callbacks(cfg, &leaders)
    };
    for nodes in &groups {
        for n in nodes {
            n.shutdown();
        }
        for n in nodes {
            n.join();
        }
    }
    for s in &servers {
        NodeManager::global().remove_service(s.local_addr());
        s.shutdown();
    }
    result
}

/// C client threads, each bound to one group's leader, apply in a closed loop.
fn drive(cfg: &Config, leaders: &[Node]) -> Result {
    let stop = AtomicBool::new(false);
    let errors = AtomicU64::new(0);
    let payload = Bytes::from(vec![7u8; cfg.payload]);
    let warmup = Duration::from_millis(500);
    let measure = Duration::from_secs(cfg.secs);
    let (ops, mut lat) = std::thread::scope(|s| {
        let handles: Vec<_> = (0..cfg.clients)
            .map(|c| {
                let leader = &leaders[c % leaders.len()];
                let (stop, errors, payload) = (&stop, &errors, &payload);
                s.spawn(move || {
                    let mut lat: Vec<u32> = Vec::with_capacity(1 << 16);
                    let begin = Instant::now();
                    let mut ops = 0u64;
                    while !stop.load(Ordering::Relaxed) {
                        let t = Instant::now();
                        let (task, w) = Task::waitable(payload.clone());
                        leader.apply(task);
                        if w.wait().is_err() {
                            errors.fetch_add(1, Ordering::Relaxed);
                            continue;
                        }
                        if t.duration_since(begin) >= warmup {
                            ops += 1;
                            lat.push(t.elapsed().as_micros().min(u32::MAX as u128) as u32);
                        }
                    }
                    (ops, lat)
                })
            })
            .collect();
        std::thread::sleep(warmup + measure);
        stop.store(true, Ordering::Relaxed);
        let mut ops = 0;
        let mut lat = Vec::new();
        for h in handles {
            let (o, l) = h.join().expect("client");
            ops += o;
            lat.extend(l);
        }
        (ops, lat)
    });
    lat.sort_unstable();
    Result {
        ops_per_s: ops as f64 / measure.as_secs_f64(),
        p50_us: percentile(&lat, 0.50),
        p99_us: percentile(&lat, 0.99),
        p999_us: percentile(&lat, 0.999),
        errors: errors.load(Ordering::Relaxed),
    }
}

/// One closed-loop client made of callbacks: each completion records its latency and issues
/// the next apply, until stopped.
struct Chain {
    leader: Node,
    payload: Bytes,
    stop: Arc<AtomicBool>,
    measuring: Arc<AtomicBool>,
    errors: Arc<AtomicU64>,
    lat: parking_lot::Mutex<Vec<u32>>,
    done: AtomicBool,
}

fn issue(chain: Arc<Chain>) {
    let start = Instant::now();
    let c = chain.clone();
    let task = Task::new(chain.payload.clone(), move |r| {
        if r.is_err() {
            c.errors.fetch_add(1, Ordering::Relaxed);
        } else if c.measuring.load(Ordering::Relaxed) {
            let us = start.elapsed().as_micros().min(u32::MAX as u128) as u32;
            c.lat.lock().push(us);
        }
        if c.stop.load(Ordering::Relaxed) {
            c.done.store(true, Ordering::Release);
        } else {
            issue(c);
        }
    });
    chain.leader.apply(task);
}

fn drive_callbacks(cfg: &Config, leaders: &[Node]) -> Result {
    let stop = Arc::new(AtomicBool::new(false));
    let measuring = Arc::new(AtomicBool::new(false));
    let errors = Arc::new(AtomicU64::new(0));
    let payload = Bytes::from(vec![7u8; cfg.payload]);
    let chains: Vec<Arc<Chain>> = (0..cfg.clients)
        .map(|c| {
            Arc::new(Chain {
                leader: leaders[c % leaders.len()].clone(),
                payload: payload.clone(),
                stop: stop.clone(),
                measuring: measuring.clone(),
                errors: errors.clone(),
                lat: parking_lot::Mutex::new(Vec::with_capacity(1 << 16)),
                done: AtomicBool::new(false),
            })
        })
        .collect();
    for c in &chains {
        issue(c.clone());
    }
    std::thread::sleep(Duration::from_millis(500));
    measuring.store(true, Ordering::Relaxed);
    let started = Instant::now();
    std::thread::sleep(Duration::from_secs(cfg.secs));
    measuring.store(false, Ordering::Relaxed);
    let elapsed = started.elapsed();
    stop.store(true, Ordering::Relaxed);
    let deadline = Instant::now() + Duration::from_secs(10);
    while chains.iter().any(|c| !c.done.load(Ordering::Acquire)) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(5));
    }
    let mut lat: Vec<u32> = chains.iter().flat_map(|c| c.lat.lock().clone()).collect();
    lat.sort_unstable();
    Result {
        ops_per_s: lat.len() as f64 / elapsed.as_secs_f64(),
        p50_us: percentile(&lat, 0.50),
        p99_us: percentile(&lat, 0.99),
        p999_us: percentile(&lat, 0.999),
        errors: errors.load(Ordering::Relaxed),
    }
}

/// Round trip of a 64-byte ping-pong over loopback TCP (std, blocking): the floor under one
/// replication round.
fn loopback_rtt_us() -> (u64, u64) {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("addr");
    let echo = std::thread::spawn(move || {
        let (mut s, _) = listener.accept().expect("accept");
        s.set_nodelay(true).ok();
        let mut buf = [0u8; 64];
        while s.read_exact(&mut buf).is_ok() {
            if s.write_all(&buf).is_err() {
                break;
            }
        }
    });
    let mut c = TcpStream::connect(addr).expect("connect");
    c.set_nodelay(true).ok();
    let mut buf = [1u8; 64];
    let mut samples = Vec::with_capacity(5000);
    for _ in 0..5000 {
        let t = Instant::now();
        c.write_all(&buf).expect("write");
        c.read_exact(&mut buf).expect("read");
        samples.push(t.elapsed().as_micros() as u32);
    }
    drop(c);
    let _ = echo.join();
    samples.sort_unstable();
    (percentile(&samples, 0.5), percentile(&samples, 0.99))
}

/// fdatasync latency of a 4 KiB write in a temp dir: into a hole of a sparse file
/// (`written = false`: each sync also commits the block's allocation, what a plain append
/// costs), or over blocks that were written with zeros and synced before (`written = true`:
/// what an append into one of the log's spare segments costs).
fn fdatasync_us(written: bool) -> (u64, u64) {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .truncate(true)
        .write(true)
        .open(dir.path().join("sync"))
        .expect("open");
    if written {
        f.write_all(&vec![0u8; 4 << 20]).expect("zeros");
    } else {
        f.set_len(4 << 20).expect("set_len");
    }
    f.sync_all().expect("sync");
    let block = [5u8; 4096];
    let mut samples = Vec::with_capacity(300);
    for i in 0..300u64 {
        use std::io::Seek;
        f.seek(std::io::SeekFrom::Start((i % 1000) * 4096))
            .expect("seek");
        f.write_all(&block).expect("write");
        let t = Instant::now();
        f.sync_data().expect("fdatasync");
        samples.push(t.elapsed().as_micros() as u32);
    }
    samples.sort_unstable();
    (percentile(&samples, 0.5), percentile(&samples, 0.99))
}

/// The command line: the configurations to run and how many rounds of them.
struct Plan {
    configs: Vec<Config>,
    rounds: usize,
}

/// The default matrix: callbacks and threads, memory and disk, 1, 64 and 256 clients.
fn matrix() -> Vec<Config> {
    let mut v = Vec::new();
    for threads in [false, true] {
        for disk in [false, true] {
            for clients in [1, 64, 256] {
                v.push(Config {
                    nodes: 3,
                    groups: 1,
                    clients,
                    payload: 64,
                    disk,
                    sync: true,
                    secs: 5,
                    threads,
                });
            }
        }
    }
    v
}

const USAGE: &str = "\
usage: bench [--nodes N] [--groups N] [--clients N] [--clients-as callbacks|threads]
             [--payload BYTES] [--log memory|disk|both] [--sync on|off] [--secs N]
             [--rounds N]
With no option but --rounds: the default matrix (1, 64 and 256 clients, callbacks and
threads, memory and disk log). Any other option runs that one configuration (defaults:
3 nodes, 1 group, 64 clients as callbacks, 64-byte payload, memory log, sync on, 5 s).";

/// Exits with the usage and `msg` (status 2), as a command-line tool does on bad input.
fn usage_error(msg: &str) -> ! {
    eprintln!("bench: {msg}\n{USAGE}");
    std::process::exit(2)
}

fn parse_args() -> Plan {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mut cfg = Config {
        nodes: 3,
        groups: 1,
        clients: 64,
        payload: 64,
        disk: false,
        sync: true,
        secs: 5,
        threads: false,
    };
    let (mut rounds, mut one_config, mut both_logs) = (1, false, false);
    let mut it = args.iter();
    while let Some(k) = it.next() {
        if k == "--help" || k == "-h" {
            println!("{USAGE}");
            std::process::exit(0);
        }
        let Some(v) = it.next().map(String::as_str) else {
            usage_error(&format!("{k} needs a value"));
        };
        let num = |min: usize| match v.parse::<usize>() {
            Ok(n) if n >= min => n,
            _ => usage_error(&format!("{k} needs a number >= {min}, got {v:?}")),
        };
        let pick = |choices: &[&str]| {
            if !choices.contains(&v) {
                usage_error(&format!("{k} is one of {}, got {v:?}", choices.join("|")));
            }
        };
        one_config |= k != "--rounds";
        match k.as_str() {
            "--nodes" => cfg.nodes = num(1),
            "--groups" => cfg.groups = num(1),
            "--clients" => cfg.clients = num(1),
            "--payload" => cfg.payload = num(0),
            "--secs" => cfg.secs = num(1) as u64,
            "--log" => {
                pick(&["memory", "disk", "both"]);
                cfg.disk = v == "disk";
                both_logs = v == "both";
            }
            "--sync" => {
                pick(&["on", "off"]);
                cfg.sync = v == "on";
            }
            "--clients-as" => {
                pick(&["callbacks", "threads"]);
                cfg.threads = v == "threads";
            }
            "--rounds" => rounds = num(1),
            other => usage_error(&format!("unknown option {other}")),
        }
    }
    let configs = match (one_config, both_logs) {
        (false, _) => matrix(),
        (true, false) => vec![cfg],
        (true, true) => vec![
            Config {
                disk: false,
                ..cfg.clone()
            },
            Config { disk: true, ..cfg },
        ],
    };
    Plan { configs, rounds }
}

/// The configuration's fields in the bench line's order; without `log` when `with_log` is
/// false, so that a memory line and its disk line share a key.
fn fields(cfg: &Config, with_log: bool) -> String {
    let log = match (with_log, cfg.disk) {
        (false, _) => "",
        (true, true) => " log=disk",
        (true, false) => " log=memory",
    };
    format!(
        "nodes={} groups={} clients={} clients_as={} payload={}{log} sync={}",
        cfg.nodes,
        cfg.groups,
        cfg.clients,
        if cfg.threads { "threads" } else { "callbacks" },
        cfg.payload,
        if cfg.sync { "on" } else { "off" },
    )
}

/// A memory line and its disk line share this key.
fn key(cfg: &Config) -> String {
    fields(cfg, false)
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    match v.len() {
        0 => 0.0,
        n if n % 2 == 1 => v[n / 2],
        n => (v[n / 2 - 1] + v[n / 2]) / 2.0,
    }
}

fn list(v: &[f64]) -> String {
    v.iter()
        .map(|x| format!("{x:.2}"))
        .collect::<Vec<_>>()
        .join(",")
}

/// One round's measurement of this machine's floor.
struct Machine {
    rtt50: u64,
    sync50: u64,
}

fn measure_machine(round: usize) -> Machine {
    let (rtt50, rtt99) = loopback_rtt_us();
    let (sync50, sync99) = fdatasync_us(false);
    let (wsync50, wsync99) = fdatasync_us(true);
    println!(
        "machine round={round} loopback_rtt_p50_us={rtt50} loopback_rtt_p99_us={rtt99} \
         fdatasync_p50_us={sync50} fdatasync_p99_us={sync99} \
         fdatasync_written_p50_us={wsync50} fdatasync_written_p99_us={wsync99}"
    );
    Machine { rtt50, sync50 }
}

fn main() {
    // One disk thread per node of the group: three nodes in one process would otherwise wait
    // for each other's fdatasync on the default two disk threads.
    let disk_threads = std::env::var("BENCH_DISK_THREADS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(3);
    let rt = Runtime::new(RuntimeOptions {
        disk_threads,
        ..RuntimeOptions::default()
    })
    .expect("runtime");
    let plan = parse_args();
    let n = plan.configs.len();
    // results[config][round] and the round's machine floor.
    let mut results: Vec<Vec<Result>> = (0..n).map(|_| Vec::new()).collect();
    let mut machines = Vec::new();
    for round in 1..=plan.rounds {
        machines.push(measure_machine(round));
        // Each round starts one configuration later, so no line always runs first.
        for i in (0..n).map(|i| (i + round - 1) % n) {
            let cfg = &plan.configs[i];
            let r = run(cfg, &rt);
            println!(
                "bench {} ops_per_s={:.0} p50_us={} p99_us={} p999_us={} errors={} \
                 round={round}",
                fields(cfg, true),
                r.ops_per_s,
                r.p50_us,
                r.p99_us,
                r.p999_us,
                r.errors
            );
            results[i].push(r);
        }
    }
    summarize(&plan, &results, &machines);
    rt.shutdown();
}

/// The goals' figures from same-round pairs: disk over memory per round, and one client's
/// p50 over its round's loopback RTT + fdatasync. With several rounds, also each line's
/// medians.
fn summarize(plan: &Plan, results: &[Vec<Result>], machines: &[Machine]) {
    if plan.rounds > 1 {
        for (cfg, rs) in plan.configs.iter().zip(results) {
            let ops: Vec<f64> = rs.iter().map(|r| r.ops_per_s).collect();
            let (lo, hi) = ops
                .iter()
                .fold((f64::MAX, 0f64), |(lo, hi), &x| (lo.min(x), hi.max(x)));
            println!(
                "median {} rounds={} ops_per_s={:.0} ops_per_s_min={lo:.0} \
                 ops_per_s_max={hi:.0} p50_us={:.0} p99_us={:.0} p999_us={:.0}",
                fields(cfg, true),
                plan.rounds,
                median(ops),
                median(rs.iter().map(|r| r.p50_us as f64).collect()),
                median(rs.iter().map(|r| r.p99_us as f64).collect()),
                median(rs.iter().map(|r| r.p999_us as f64).collect()),
            );
        }
    }
    for (i, cfg) in plan.configs.iter().enumerate() {
        if !cfg.disk {
            continue;
        }
        let memory = plan
            .configs
            .iter()
            .position(|m| !m.disk && key(m) == key(cfg));
        if let Some(m) = memory {
            let ratios: Vec<f64> = results[i]
                .iter()
                .zip(&results[m])
                .map(|(d, m)| d.ops_per_s / m.ops_per_s.max(1.0))
                .collect();
            println!(
                "ratio {} disk_over_memory={:.2} per_round={}",
                key(cfg),
                median(ratios.clone()),
                list(&ratios)
            );
        }
        if cfg.clients == 1 && cfg.sync {
            let floors: Vec<f64> = results[i]
                .iter()
                .zip(machines)
                .map(|(r, m)| r.p50_us as f64 / (m.rtt50 + m.sync50).max(1) as f64)
                .collect();
            println!(
                "floor {} p50_over_rtt_plus_fdatasync={:.2} per_round={}",
                key(cfg),
                median(floors.clone()),
                list(&floors)
            );
        }
    }
}
