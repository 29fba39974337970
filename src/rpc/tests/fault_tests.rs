//! The fault layer on real servers (issue point 5): one-way cuts (requests and responses),
//! partitions and heal, a dropped fraction that matches the timeouts exactly, delays that
//! keep a link's order, duplicates the caller never sees twice.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

use parking_lot::Mutex;

use super::*;
use crate::error::RaftError;
use crate::testing::wait_for;

const SHORT: Duration = Duration::from_millis(200);
const T: Duration = Duration::from_secs(5);

/// Two servers sharing one fault handle; both count and echo `Method::Stat`.
struct Pair {
    a: Server,
    b: Server,
    faults: FaultHandle,
    served_a: Arc<AtomicUsize>,
    served_b: Arc<AtomicUsize>,
    _rt: Runtime,
}

fn counting_echo(s: &Server) -> Arc<AtomicUsize> {
    let n = Arc::new(AtomicUsize::new(0));
    let n2 = n.clone();
    s.register(Method::Stat, move |req: Request| {
        n2.fetch_add(1, Ordering::SeqCst);
        let body = req.body.clone();
        req.responder.respond(Ok(vec![body]));
    })
    .unwrap();
    n
}

fn pair(seed: u64) -> Pair {
    let rt = runtime();
    let faults = FaultHandle::new(seed);
    let start = || {
        let mut o = opts(&rt);
        o.fault = Some(faults.clone());
        Server::start(o).unwrap()
    };
    let (a, b) = (start(), start());
    let (served_a, served_b) = (counting_echo(&a), counting_echo(&b));
    Pair {
        a,
        b,
        faults,
        served_a,
        served_b,
        _rt: rt,
    }
}

fn stat(from: &Server, to: &Server, timeout: Duration) -> Result<Bytes> {
    call_wait(from, to.local_addr(), Method::Stat, vec![], timeout)
}

#[test]
fn a_one_way_cut_drops_requests_and_responses_on_that_link_only() {
    let p = pair(11);
    let (a, b) = (p.a.local_addr(), p.b.local_addr());
    assert!(stat(&p.a, &p.b, T).is_ok() && stat(&p.b, &p.a, T).is_ok());
    p.faults.cut(a, b);
    // a -> b requests vanish: b never serves them.
    let before = p.served_b.load(Ordering::SeqCst);
    assert_eq!(stat(&p.a, &p.b, SHORT), Err(RaftError::Timeout));
    assert_eq!(p.served_b.load(Ordering::SeqCst), before);
    // b -> a requests arrive and are served, but the answers travel a -> b and vanish.
    let before = p.served_a.load(Ordering::SeqCst);
    assert_eq!(stat(&p.b, &p.a, SHORT), Err(RaftError::Timeout));
    assert_eq!(p.served_a.load(Ordering::SeqCst), before + 1);
    p.faults.heal(a, b);
    assert!(stat(&p.a, &p.b, T).is_ok() && stat(&p.b, &p.a, T).is_ok());
    assert_eq!(p.faults.link_stats(a, b).dropped, 2);
}

#[test]
fn a_partition_cuts_both_ways_until_healed() {
    let p = pair(12);
    let (a, b) = (p.a.local_addr(), p.b.local_addr());
    p.faults.partition(&[a], &[b]);
    assert_eq!(stat(&p.a, &p.b, SHORT), Err(RaftError::Timeout));
    assert_eq!(stat(&p.b, &p.a, SHORT), Err(RaftError::Timeout));
    p.faults.heal_all();
    assert!(stat(&p.a, &p.b, T).is_ok() && stat(&p.b, &p.a, T).is_ok());
}

#[test]
fn a_dropped_fraction_times_out_exactly_the_dropped_calls() {
    let seed = 13;
    let p = pair(seed);
    let (a, b) = (p.a.local_addr(), p.b.local_addr());
    p.faults.drop_fraction(a, b, 0.3);
    let (tx, rx) = crossbeam::channel::unbounded();
    const N: usize = 300;
    for _ in 0..N {
        let tx = tx.clone();
        // Long enough that only a dropped request can time out, even on a loaded machine.
        p.a.call_default(b, Method::Stat, vec![], Duration::from_secs(1), move |r| {
            let _ = tx.send(r);
        });
    }
    let timeouts = (0..N)
        .filter(|_| rx.recv_timeout(T).unwrap() == Err(RaftError::Timeout))
        .count();
    let s = p.faults.link_stats(a, b);
    assert_eq!(s.dropped as usize, timeouts, "seed {seed}: {s:?}");
    assert!(
        (50..130).contains(&timeouts),
        "seed {seed}: {timeouts} of {N} dropped"
    );
    assert_eq!(p.served_b.load(Ordering::SeqCst), N - timeouts);
}

#[test]
fn a_delayed_link_is_slow_and_keeps_its_order() {
    let p = pair(14);
    let (a, b) = (p.a.local_addr(), p.b.local_addr());
    let order = Arc::new(Mutex::new(Vec::new()));
    let o = order.clone();
    p.b.register(Method::AppendEntries, move |req: Request| {
        o.lock().push(req.body[0]);
        req.responder.respond(Ok(vec![]));
    })
    .unwrap();
    p.faults.delay(a, b, 20, 60);
    let t0 = Instant::now();
    assert!(stat(&p.a, &p.b, T).is_ok());
    assert!(
        t0.elapsed() >= Duration::from_millis(20),
        "{:?}",
        t0.elapsed()
    );
    let (caller, _q) = Caller::start(&p._rt.raft_pool(), "ordered");
    let done = Arc::new(AtomicUsize::new(0));
    for i in 0..100u8 {
        let d = done.clone();
        let body = vec![Bytes::from(vec![i])];
        p.a.call(&caller, b, Method::AppendEntries, body, T, move |r| {
            assert!(r.is_ok());
            d.fetch_add(1, Ordering::SeqCst);
        });
    }
    wait_for(
        "100 delayed calls",
        T,
        || done.load(Ordering::SeqCst) == 100,
        || format!("{} done", done.load(Ordering::SeqCst)),
    );
    assert_eq!(*order.lock(), (0..100).collect::<Vec<u8>>());
    assert!(p.faults.link_stats(a, b).delayed >= 101);
}

#[test]
fn duplicated_requests_are_served_twice_and_completed_once() {
    let p = pair(15);
    let (a, b) = (p.a.local_addr(), p.b.local_addr());
    p.faults.duplicate(a, b, 1.0);
    for _ in 0..20 {
        assert!(stat(&p.a, &p.b, T).is_ok());
    }
    wait_for(
        "40 served",
        T,
        || p.served_b.load(Ordering::SeqCst) == 40,
        || format!("served {}", p.served_b.load(Ordering::SeqCst)),
    );
    wait_for(
        "20 stale answers",
        T,
        || p.a.stats().stale_responses == 20,
        || format!("{:?}", p.a.stats()),
    );
    assert_eq!(p.faults.link_stats(a, b).duplicated, 20);
}
