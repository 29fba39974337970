//! Calls per second and latency over one loopback connection: traft's transport against the
//! transport a user would write with std (blocking `TcpStream`, a length prefix, a client
//! with a writer thread and a reader thread so it pipelines too, the server one thread per
//! connection). Request bodies of 64 B and 64 KiB, responses of 64 B; 1 and 64 calls in
//! flight. Both sides are completion-driven: each completion issues the next call.
//!
//! Run: `cargo bench --bench rpc`; the summary alone (alternating rounds, medians):
//! `cargo bench --bench rpc -- --summary`. `TRAFT_RPC_ROUNDS=N` sets the rounds (default 7);
//! `TRAFT_RPC_RCVBUF=bytes` and `TRAFT_RPC_LOWAT=bytes` override
//! `ServerOptions::socket_recv_buffer_bytes` (0: the kernel's autotuning) and
//! `socket_unsent_bytes_max`, to show what the bounded window costs; `TRAFT_RPC_BODIES=64,2097152`
//! runs other body sizes.

use std::collections::HashMap;
use std::io::{BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use criterion::{BenchmarkId, Criterion};
use crossbeam::channel::{self, Sender};
use parking_lot::Mutex;
use traft::rpc::{Caller, Method, Request, Server, ServerOptions};
use traft::{Runtime, RuntimeOptions};

const BODIES: [usize; 2] = [64, 64 * 1024];

/// The request body sizes to run: `TRAFT_RPC_BODIES=64,2097152` overrides [`BODIES`].
fn bodies() -> Vec<usize> {
    std::env::var("TRAFT_RPC_BODIES")
        .ok()
        .map(|v| v.split(',').filter_map(|b| b.trim().parse().ok()).collect())
        .filter(|v: &Vec<usize>| !v.is_empty())
        .unwrap_or_else(|| BODIES.to_vec())
}
const IN_FLIGHT: [usize; 2] = [1, 64];
const RESPONSE: usize = 64;
const TIMEOUT: Duration = Duration::from_secs(30);

/// Calls per run: enough for a stable p99, short enough for alternating rounds.
fn calls_for(body: usize, in_flight: usize) -> usize {
    match (body > 1024, in_flight > 1) {
        (false, false) => 4_000,
        (false, true) => 40_000,
        (true, false) => 2_000,
        (true, true) => 8_000,
    }
}

/// One run's figures.
#[derive(Clone, Copy, Debug)]
struct Run {
    calls_per_s: f64,
    p50_us: f64,
    p99_us: f64,
}

fn figures(n: usize, elapsed: Duration, mut lat: Vec<Duration>) -> Run {
    lat.sort_unstable();
    let pct = |p: f64| lat[((lat.len() as f64 * p) as usize).min(lat.len() - 1)];
    Run {
        calls_per_s: n as f64 / elapsed.as_secs_f64(),
        p50_us: pct(0.50).as_secs_f64() * 1e6,
        p99_us: pct(0.99).as_secs_f64() * 1e6,
    }
}

/// Keeps `in_flight` calls going until `n` completed; each completion starts the next call.
type Issue = Box<dyn Fn(Arc<Driver>, Instant) + Send + Sync>;

struct Driver {
    issue: Issue,
    n: usize,
    started: AtomicUsize,
    latencies: Mutex<Vec<Duration>>,
    done: Sender<()>,
}

impl Driver {
    fn run(issue: Issue, n: usize, in_flight: usize) -> (Duration, Vec<Duration>) {
        let (done, rx) = channel::bounded(1);
        let d = Arc::new(Driver {
            issue,
            n,
            started: AtomicUsize::new(0),
            latencies: Mutex::new(Vec::with_capacity(n)),
            done,
        });
        let t0 = Instant::now();
        for _ in 0..in_flight {
            d.next();
        }
        rx.recv_timeout(TIMEOUT * 2).expect("bench run finished");
        let elapsed = t0.elapsed();
        let lat = std::mem::take(&mut *d.latencies.lock());
        (elapsed, lat)
    }

    fn next(self: &Arc<Self>) {
        if self.started.fetch_add(1, Ordering::Relaxed) < self.n {
            (self.issue)(self.clone(), Instant::now());
        }
    }

    fn completed(self: &Arc<Self>, t0: Instant, ok: bool) {
        assert!(ok, "bench call failed");
        let mut lat = self.latencies.lock();
        lat.push(t0.elapsed());
        let all = lat.len() == self.n;
        drop(lat);
        if all {
            let _ = self.done.send(());
        } else {
            self.next();
        }
    }
}

/// traft: two servers on separate runtimes (two processes' worth of threads), one call path.
struct Traft {
    client: Arc<Server>,
    server: Server,
    caller: Caller,
    runtimes: [Runtime; 2],
}

fn traft_setup() -> Traft {
    let opts = RuntimeOptions {
        io_threads: 1,
        raft_threads: 2,
        disk_threads: 1,
        fsm_threads: 1,
    };
    let runtimes = [
        Runtime::new(opts.clone()).expect("runtime"),
        Runtime::new(opts).expect("runtime"),
    ];
    let start = |rt: &Runtime| {
        let mut o = ServerOptions::new("127.0.0.1:0".parse().expect("addr"));
        o.runtime = Some(rt.clone());
        o.logger = traft::logging::discard_logger();
        if let Some(v) = std::env::var("TRAFT_RPC_RCVBUF")
            .ok()
            .and_then(|v| v.parse().ok())
        {
            o.socket_recv_buffer_bytes = v;
        }
        if let Some(v) = std::env::var("TRAFT_RPC_LOWAT")
            .ok()
            .and_then(|v| v.parse().ok())
        {
            o.socket_unsent_bytes_max = v;
        }
        Server::start(o).expect("server")
    };
    let server = start(&runtimes[1]);
    let reply = Bytes::from(vec![7u8; RESPONSE]);
    server
        .register(Method::AppendEntries, move |req: Request| {
            req.responder.respond(Ok(vec![reply.clone()]));
        })
        .expect("register");
    let client = Arc::new(start(&runtimes[0]));
    let (caller, _queue) = Caller::start(&runtimes[0].raft_pool(), "bench");
    Traft {
        client,
        server,
        caller,
        runtimes,
    }
}

fn run_traft(t: &Traft, body: usize, in_flight: usize) -> Run {
    let n = calls_for(body, in_flight);
    let (client, caller, to) = (t.client.clone(), t.caller.clone(), t.server.local_addr());
    let payload = Bytes::from(vec![1u8; body]);
    let issue: Issue = Box::new(move |d: Arc<Driver>, t0: Instant| {
        client.call(
            &caller,
            to,
            Method::AppendEntries,
            vec![payload.clone()],
            TIMEOUT,
            move |r| d.completed(t0, r.is_ok_and(|b| b.len() == RESPONSE)),
        );
    });
    let (elapsed, lat) = Driver::run(issue, n, in_flight);
    figures(n, elapsed, lat)
}

type Pending = Arc<Mutex<HashMap<u64, Box<dyn FnOnce(Vec<u8>) + Send>>>>;

/// The std baseline: frame = `len u32 | id u64 | body`, one `write_all` per frame.
struct Baseline {
    writer: Sender<(u64, Bytes)>,
    pending: Pending,
    next_id: AtomicUsize,
}

fn write_frame(w: &mut impl Write, id: u64, body: &[u8]) -> std::io::Result<()> {
    let mut buf = Vec::with_capacity(12 + body.len());
    buf.extend_from_slice(&(body.len() as u32).to_le_bytes());
    buf.extend_from_slice(&id.to_le_bytes());
    buf.extend_from_slice(body);
    w.write_all(&buf)
}

fn read_frame(r: &mut impl Read) -> std::io::Result<(u64, Vec<u8>)> {
    let mut head = [0u8; 12];
    r.read_exact(&mut head)?;
    let len = u32::from_le_bytes(head[..4].try_into().expect("4 bytes")) as usize;
    let id = u64::from_le_bytes(head[4..].try_into().expect("8 bytes"));
    let mut body = vec![0u8; len];
    r.read_exact(&mut body)?;
    Ok((id, body))
}

/// Starts the baseline server (a thread per connection) and a connected client (a writer
/// thread and a reader thread). The threads end when the bench process exits.
fn baseline_setup() -> Baseline {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr: SocketAddr = listener.local_addr().expect("addr");
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            std::thread::spawn(move || {
                let _ = stream.set_nodelay(true);
                let mut w = stream.try_clone().expect("clone");
                let mut r = BufReader::new(stream);
                let reply = vec![7u8; RESPONSE];
                while let Ok((id, _body)) = read_frame(&mut r) {
                    if write_frame(&mut w, id, &reply).is_err() {
                        break;
                    }
                }
            });
        }
    });
    let stream = TcpStream::connect(addr).expect("connect");
    stream.set_nodelay(true).expect("nodelay");
    let mut w = stream.try_clone().expect("clone");
    let (writer, rx) = channel::unbounded::<(u64, Bytes)>();
    std::thread::spawn(move || {
        for (id, body) in rx {
            if write_frame(&mut w, id, &body).is_err() {
                break;
            }
        }
    });
    let pending: Pending = Arc::new(Mutex::new(HashMap::new()));
    let p = pending.clone();
    std::thread::spawn(move || {
        let mut r = BufReader::new(stream);
        while let Ok((id, body)) = read_frame(&mut r) {
            let done = p.lock().remove(&id);
            if let Some(done) = done {
                done(body);
            }
        }
    });
    Baseline {
        writer,
        pending,
        next_id: AtomicUsize::new(0),
    }
}

fn run_baseline(b: &Arc<Baseline>, body: usize, in_flight: usize) -> Run {
    let n = calls_for(body, in_flight);
    let payload = Bytes::from(vec![1u8; body]);
    let base = b.clone();
    let issue: Issue = Box::new(move |d: Arc<Driver>, t0: Instant| {
        let id = base.next_id.fetch_add(1, Ordering::Relaxed) as u64;
        let done = Box::new(move |resp: Vec<u8>| d.completed(t0, resp.len() == RESPONSE));
        base.pending.lock().insert(id, done);
        base.writer
            .send((id, payload.clone()))
            .expect("writer alive");
    });
    let (elapsed, lat) = Driver::run(issue, n, in_flight);
    figures(n, elapsed, lat)
}

fn criterion_benches(c: &mut Criterion, t: &Traft, b: &Arc<Baseline>) {
    let mut g = c.benchmark_group("rpc");
    g.sample_size(10);
    g.measurement_time(Duration::from_secs(3));
    for body in bodies() {
        for in_flight in IN_FLIGHT {
            let n = calls_for(body, in_flight) as u32;
            let id = format!("body{body}_inflight{in_flight}");
            g.bench_function(BenchmarkId::new("traft", &id), |bch| {
                bch.iter_custom(|iters| {
                    let start = Instant::now();
                    for _ in 0..iters {
                        run_traft(t, body, in_flight);
                    }
                    start.elapsed() / n
                })
            });
            g.bench_function(BenchmarkId::new("std_threads", &id), |bch| {
                bch.iter_custom(|iters| {
                    let start = Instant::now();
                    for _ in 0..iters {
                        run_baseline(b, body, in_flight);
                    }
                    start.elapsed() / n
                })
            });
        }
    }
    g.finish();
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// Alternates baseline and traft runs; medians of each figure and of per-round ratios.
fn summary(t: &Traft, b: &Arc<Baseline>, rounds: usize) {
    println!("\nrpc summary ({rounds} alternating rounds per case; medians):");
    for body in bodies() {
        for in_flight in IN_FLIGHT {
            let (mut tr, mut bs, mut ratio, mut dp50) = (vec![], vec![], vec![], vec![]);
            for _ in 0..rounds {
                let base = run_baseline(b, body, in_flight);
                let ours = run_traft(t, body, in_flight);
                ratio.push(ours.calls_per_s / base.calls_per_s);
                dp50.push(ours.p50_us - base.p50_us);
                tr.push(ours);
                bs.push(base);
            }
            let m = |v: &[Run], f: fn(&Run) -> f64| median(v.iter().map(f).collect());
            println!(
                "rpc body={body} in_flight={in_flight} traft_calls_per_s={:.0} \
                 traft_p50_us={:.0} traft_p99_us={:.0} std_calls_per_s={:.0} std_p50_us={:.0} \
                 std_p99_us={:.0} ratio={:.2} p50_delta_us={:+.0}",
                m(&tr, |r| r.calls_per_s),
                m(&tr, |r| r.p50_us),
                m(&tr, |r| r.p99_us),
                m(&bs, |r| r.calls_per_s),
                m(&bs, |r| r.p50_us),
                m(&bs, |r| r.p99_us),
                median(ratio),
                median(dp50),
            );
        }
    }
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let summary_only = args.iter().any(|a| a == "--summary");
    let rounds = std::env::var("TRAFT_RPC_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(7);
    let t = traft_setup();
    let b = Arc::new(baseline_setup());
    if !summary_only {
        let mut c = Criterion::default().configure_from_args();
        criterion_benches(&mut c, &t, &b);
        c.final_summary();
    }
    summary(&t, &b, rounds);
    t.server.shutdown();
    t.client.shutdown();
    for rt in &t.runtimes {
        rt.shutdown();
    }
}
