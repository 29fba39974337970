//! Fairness on one connection (issue 5, point 3), in its own binary so no other test shares
//! the CPU: one group streams 64 KiB calls (32 in flight) while another group's small calls
//! on the same connection wait behind at most a few large frames.
//!
//! Two measures. Frames ahead: the callee counts bulk frames as they arrive, and each small
//! call learns how many arrived between its issue and its own arrival; that is the
//! head-of-line wait in frames, independent of how fast the machine runs, and is asserted
//! (p99) in every run. Latency: each small call's p99 in bulk frame times (the stream's
//! measured pace); printed always, asserted with `TRAFT_STRICT_TIMING=1` on a quiet machine.
//! The control, measured by order rather than time: a small call queued right after a burst
//! of bulk calls waits behind the whole burst when made in the bulk group's own lane (where
//! order is kept by design, as in a FIFO transport), and behind almost none of it otherwise.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use traft::rpc::{Caller, Method, Request, Server, ServerOptions};
use traft::{Runtime, RuntimeOptions};

const BULK_BYTES: usize = 64 * 1024;
const BULK_IN_FLIGHT: usize = 32;
const SMALL_CALLS: usize = 400;
/// "A few large frames": the bound on bulk frames a small call may wait behind (p99), and
/// on its latency in bulk frame times (strict mode).
const FRAMES_ALLOWED: f64 = 8.0;
/// Structural bound on bulk frames received ahead of a small call: the one being written,
/// one more in the kernel's unsent bytes (16 KiB), and what the receive buffer holds: Linux
/// doubles the 128 KiB asked for with SO_RCVBUF, so up to 4 frames of 64 KiB. Measured on a
/// quiet machine: p99 5, every round; a FIFO (the control below) waits behind all 32.
const FRAMES_AHEAD_MAX: u64 = 6;
const T: Duration = Duration::from_secs(10);

/// The two tests measure time: they must not run at once.
static SERIAL: parking_lot::Mutex<()> = parking_lot::Mutex::new(());

struct Outcome {
    small_p50: Duration,
    small_p99: Duration,
    /// Bulk frames the callee received between a small call's issue and its arrival.
    ahead_p50: u64,
    ahead_p99: u64,
    /// Time per bulk frame while the small calls ran (the stream's pace).
    bulk_frame: Duration,
}

impl Outcome {
    fn frames(&self, d: Duration) -> f64 {
        d.as_secs_f64() / self.bulk_frame.as_secs_f64()
    }

    fn describe(&self) -> String {
        format!(
            "bulk frames ahead p50 {} p99 {}; latency p50 {:?} ({:.1} frames), p99 {:?} \
             ({:.1} frames); bulk frame {:?}",
            self.ahead_p50,
            self.ahead_p99,
            self.small_p50,
            self.frames(self.small_p50),
            self.small_p99,
            self.frames(self.small_p99),
            self.bulk_frame
        )
    }
}

struct Bulk {
    server: Arc<Server>,
    to: SocketAddr,
    caller: Caller,
    stop: AtomicBool,
    done: AtomicU64,
}

/// One bulk call; its completion starts the next until `stop`.
fn bulk_next(b: Arc<Bulk>) {
    if b.stop.load(Ordering::Relaxed) {
        return;
    }
    let body = vec![Bytes::from(vec![3u8; BULK_BYTES])];
    let b2 = b.clone();
    b.server
        .call(&b.caller, b.to, Method::AppendEntries, body, T, move |r| {
            // Calls still in flight at teardown fail with their connection.
            assert!(
                r.is_ok() || b2.stop.load(Ordering::Relaxed),
                "bulk call failed: {r:?}"
            );
            b2.done.fetch_add(1, Ordering::Relaxed);
            bulk_next(b2);
        });
}

fn start(rt: &Runtime) -> Server {
    let mut o = ServerOptions::new("127.0.0.1:0".parse().unwrap());
    o.runtime = Some(rt.clone());
    o.logger = traft::logging::discard_logger();
    Server::start(o).unwrap()
}

/// A server that answers AppendEntries (counting them as they arrive, on its IO thread) and
/// answers PreVote with that count: the bulk frames that arrived before it.
fn counting_callee(rt: &Runtime) -> (Server, Arc<AtomicU64>) {
    let callee = start(rt);
    let received = Arc::new(AtomicU64::new(0));
    let r = received.clone();
    callee
        .register(Method::AppendEntries, move |req: Request| {
            r.fetch_add(1, Ordering::SeqCst);
            req.responder.respond(Ok(vec![]));
        })
        .unwrap();
    let r = received.clone();
    callee
        .register(Method::PreVote, move |req: Request| {
            let seen = r.load(Ordering::SeqCst).to_le_bytes();
            req.responder
                .respond(Ok(vec![Bytes::copy_from_slice(&seen)]));
        })
        .unwrap();
    (callee, received)
}

fn run() -> Outcome {
    let rt = Runtime::new(RuntimeOptions {
        io_threads: 2,
        raft_threads: 2,
        disk_threads: 1,
        fsm_threads: 1,
    })
    .unwrap();
    let (callee, received) = counting_callee(&rt);
    let (bulk_caller, _q1) = Caller::start(&rt.raft_pool(), "group-1");
    let (small_caller, _q2) = Caller::start(&rt.raft_pool(), "group-2");
    let bulk = Arc::new(Bulk {
        server: Arc::new(start(&rt)),
        to: callee.local_addr(),
        caller: bulk_caller,
        stop: AtomicBool::new(false),
        done: AtomicU64::new(0),
    });
    for _ in 0..BULK_IN_FLIGHT {
        bulk_next(bulk.clone());
    }
    // Let the stream reach its pace first.
    while bulk.done.load(Ordering::Relaxed) < 500 {
        std::thread::sleep(Duration::from_millis(1));
    }
    let (t0, done0) = (Instant::now(), bulk.done.load(Ordering::Relaxed));
    let (mut lat, mut ahead) = (Vec::new(), Vec::new());
    for _ in 0..SMALL_CALLS {
        let (tx, rx) = crossbeam::channel::bounded(1);
        let body = vec![Bytes::from_static(&[1; 64])];
        let before = received.load(Ordering::SeqCst);
        let start = Instant::now();
        bulk.server
            .call(&small_caller, bulk.to, Method::PreVote, body, T, move |r| {
                let _ = tx.send((r, start.elapsed()));
            });
        let (reply, took) = rx.recv_timeout(T).unwrap();
        let seen = u64::from_le_bytes(reply.unwrap()[..8].try_into().unwrap());
        ahead.push(seen - before);
        lat.push(took);
    }
    let elapsed = t0.elapsed();
    let frames = bulk.done.load(Ordering::Relaxed) - done0;
    bulk.stop.store(true, Ordering::Relaxed);
    lat.sort_unstable();
    ahead.sort_unstable();
    let out = Outcome {
        small_p50: lat[lat.len() / 2],
        small_p99: lat[lat.len() * 99 / 100],
        ahead_p50: ahead[ahead.len() / 2],
        ahead_p99: ahead[ahead.len() * 99 / 100],
        bulk_frame: elapsed / frames.max(1) as u32,
    };
    bulk.server.shutdown();
    rt.shutdown();
    out
}

/// Strict mode (`TRAFT_STRICT_TIMING=1`) also asserts the latency bound, which only a
/// quiet machine can measure: on a shared one a stalled thread costs milliseconds.
fn strict_timing() -> bool {
    std::env::var("TRAFT_STRICT_TIMING").is_ok_and(|v| v == "1")
}

#[test]
fn another_groups_small_calls_wait_behind_at_most_a_few_bulk_frames() {
    let _serial = SERIAL.lock();
    let mut seen = Vec::new();
    // The median bound holds in every round. The p99 bounds must hold in one round: a round
    // spoiled by a stalled thread (the test thread preempted between reading the count and
    // queueing its call lets bulk frames pass it) is rerun, while head-of-line blocking
    // spoils every round. Rounds go on for 15 s (at least 5): a disturbance of a few
    // seconds (seen once in CI, right after the cluster tests: every one of 5 rounds in
    // 3 s had p99 21-105) must not decide the outcome.
    let deadline = Instant::now() + Duration::from_secs(15);
    let mut rounds = 0;
    while rounds < 5 || Instant::now() < deadline {
        rounds += 1;
        let o = run();
        seen.push(o.describe());
        assert!(
            o.ahead_p50 <= FRAMES_AHEAD_MAX,
            "small calls waited behind {} bulk frames (p50): {}",
            o.ahead_p50,
            seen.join("; ")
        );
        let latency_ok = !strict_timing() || o.frames(o.small_p99) < FRAMES_ALLOWED;
        if o.ahead_p99 <= FRAMES_AHEAD_MAX && latency_ok {
            eprintln!("fairness: {}", seen.join("; "));
            return;
        }
    }
    panic!(
        "small calls waited behind more than {FRAMES_AHEAD_MAX} bulk frames (p99){} in every \
         one of {rounds} rounds: {}",
        if strict_timing() {
            " or took too long"
        } else {
            ""
        },
        seen.join("; ")
    );
}

/// Queues a burst of `BULK_IN_FLIGHT` bulk calls, then one small call, in the bulk lane or
/// another, 40 times. Per burst: the burst's frames the callee received before the small
/// call (all of them, wherever the small call was queued), and those of them it received
/// after the small call was queued.
fn burst_then_small(same_lane: bool) -> Vec<(u64, u64)> {
    let rt = Runtime::new(RuntimeOptions {
        io_threads: 2,
        raft_threads: 2,
        disk_threads: 1,
        fsm_threads: 1,
    })
    .unwrap();
    let (callee, received) = counting_callee(&rt);
    let caller = start(&rt);
    let (bulk, _q1) = Caller::start(&rt.raft_pool(), "group-1");
    let (other, _q2) = Caller::start(&rt.raft_pool(), "group-2");
    let small = if same_lane { bulk.clone() } else { other };
    let to = callee.local_addr();
    let mut bursts = Vec::new();
    // One shared body: queueing the burst takes microseconds, so little of it can leave
    // before the small call is queued.
    let payload = Bytes::from(vec![3u8; BULK_BYTES]);
    for _ in 0..40 {
        let (tx, rx) = crossbeam::channel::unbounded();
        // Every frame of the previous burst was counted before its response left.
        let start = received.load(Ordering::SeqCst);
        for _ in 0..BULK_IN_FLIGHT {
            let tx = tx.clone();
            let body = vec![payload.clone()];
            caller.call(&bulk, to, Method::AppendEntries, body, T, move |r| {
                let _ = tx.send(r.map(|_| None));
            });
        }
        let before = received.load(Ordering::SeqCst);
        let body = vec![Bytes::from_static(&[1; 64])];
        caller.call(&small, to, Method::PreVote, body, T, move |r| {
            let _ = tx.send(r.map(|b| Some(u64::from_le_bytes(b[..8].try_into().unwrap()))));
        });
        for _ in 0..=BULK_IN_FLIGHT {
            if let Some(seen) = rx.recv_timeout(T).unwrap().unwrap() {
                bursts.push((seen - start, seen - before));
            }
        }
    }
    caller.shutdown();
    rt.shutdown();
    bursts
}

#[test]
fn a_call_queued_after_a_bulk_burst_waits_behind_it_only_in_the_same_lane() {
    let _serial = SERIAL.lock();
    // In the bulk group's own lane the order is kept (as in a FIFO transport): the small call
    // arrives after every frame of its burst, in every burst, however fast the burst left.
    let same = burst_then_small(true);
    let out_of_order: Vec<_> = same
        .iter()
        .filter(|(all, _)| *all != BULK_IN_FLIGHT as u64)
        .collect();
    assert!(
        out_of_order.is_empty(),
        "same lane: bursts whose small call overtook bulk frames (frames before it, of \
         {BULK_IN_FLIGHT}): {out_of_order:?}"
    );
    // In another lane it overtakes all but the frames already written when it was queued
    // (timing: those that left while the burst was being queued are not counted).
    let mut other: Vec<u64> = burst_then_small(false).iter().map(|b| b.1).collect();
    other.sort_unstable();
    let other = other[other.len() / 2];
    eprintln!("burst of {BULK_IN_FLIGHT}: other lane, frames ahead p50 {other}");
    assert!(
        other <= FRAMES_AHEAD_MAX,
        "other lane: {other} frames ahead"
    );
}
