//! The call contract: round trip, completion thread, one shared connection, order, deadlines,
//! unanswered and unknown methods, error statuses, bounds, reconnects and shutdown.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

use parking_lot::Mutex;

use super::*;
use crate::error::RaftError;
use crate::exec_queue::{Batch, ExecQueue, ExecQueueOptions};
use crate::testing::wait_for;
use crate::types::PeerId;

const T: Duration = Duration::from_secs(5);

#[test]
fn a_call_round_trips_its_body_chunks_as_one_body() {
    let rt = runtime();
    let (a, b) = (start(&rt), start(&rt));
    echo(&b, Method::AppendEntries);
    let chunks = vec![
        Bytes::from_static(b"head|"),
        Bytes::new(),
        Bytes::from(vec![9u8; 100_000]),
    ];
    let got = call_wait(&a, b.local_addr(), Method::AppendEntries, chunks, T).unwrap();
    assert_eq!(&got[..5], b"head|");
    assert_eq!(got.len(), 5 + 100_000);
    assert!(got[5..].iter().all(|x| *x == 9));
}

#[test]
fn completions_run_on_the_callers_queue_never_on_io_or_timer_threads() {
    let rt = runtime();
    let (a, b) = (start(&rt), start(&rt));
    echo(&b, Method::PreVote);
    b.register(Method::RequestVote, |req: Request| std::mem::forget(req))
        .unwrap();
    let names = Arc::new(Mutex::new(Vec::new()));
    for (method, timeout) in [
        (Method::PreVote, T),
        (Method::RequestVote, Duration::from_millis(50)),
    ] {
        let n = names.clone();
        let (tx, rx) = crossbeam::channel::bounded(1);
        a.call_default(b.local_addr(), method, vec![], timeout, move |r| {
            n.lock()
                .push(std::thread::current().name().unwrap_or("").to_string());
            let _ = tx.send(r.is_ok());
        });
        rx.recv_timeout(T).unwrap();
    }
    let names = names.lock().clone();
    assert_eq!(names.len(), 2);
    assert!(
        names.iter().all(|n| n.starts_with("traft-raft-")),
        "{names:?}"
    );
}

#[test]
fn all_callers_share_one_connection_per_remote_and_the_callee_learns_who_calls() {
    let rt = runtime();
    let (a, b) = (start(&rt), start(&rt));
    let froms = Arc::new(Mutex::new(Vec::new()));
    let f = froms.clone();
    b.register(Method::Stat, move |req: Request| {
        f.lock().push(req.from);
        req.responder.respond(Ok(vec![]));
    })
    .unwrap();
    let callers: Vec<Caller> = (0..4)
        .map(|i| Caller::start(&rt.raft_pool(), &format!("c{i}")).0)
        .collect();
    let (tx, rx) = crossbeam::channel::unbounded();
    for round in 0..50 {
        for c in &callers {
            let tx = tx.clone();
            a.call(c, b.local_addr(), Method::Stat, vec![], T, move |r| {
                let _ = tx.send((round, r.is_ok()));
            });
        }
    }
    for _ in 0..200 {
        assert!(rx.recv_timeout(T).unwrap().1);
    }
    assert_eq!(a.stats().connects, 1);
    assert_eq!(b.stats().accepted, 1);
    assert!(froms.lock().iter().all(|f| *f == a.local_addr()));
}

#[test]
fn requests_of_one_caller_arrive_in_call_order_and_complete_in_order() {
    let rt = runtime();
    let (a, b) = (start(&rt), start(&rt));
    let arrived = Arc::new(Mutex::new(Vec::new()));
    let ar = arrived.clone();
    // Responses come back from a raft-pool queue, as the node will answer.
    let q = ExecQueue::start(
        &rt.raft_pool(),
        ExecQueueOptions::new("handler"),
        |batch: &mut Batch<'_, Request>| {
            for req in batch {
                let body = req.body.clone();
                req.responder.respond(Ok(vec![body]));
            }
        },
    );
    b.register(Method::AppendEntries, move |req: Request| {
        ar.lock()
            .push(u32::from_le_bytes(req.body[..4].try_into().unwrap()));
        req.responder.respond(Ok(vec![]));
    })
    .unwrap();
    b.register_queue(Method::InstallSnapshot, q).unwrap();
    let (caller, _q) = Caller::start(&rt.raft_pool(), "ordered");
    let completed = Arc::new(Mutex::new(Vec::new()));
    const N: u32 = 2000;
    for i in 0..N {
        let body = vec![Bytes::copy_from_slice(&i.to_le_bytes())];
        a.call(
            &caller,
            b.local_addr(),
            Method::AppendEntries,
            body.clone(),
            T,
            |_| {},
        );
        let c = completed.clone();
        a.call(
            &caller,
            b.local_addr(),
            Method::InstallSnapshot,
            body,
            T,
            move |r| {
                c.lock()
                    .push(u32::from_le_bytes(r.unwrap()[..4].try_into().unwrap()));
            },
        );
    }
    wait_for(
        "every call to complete",
        T,
        || completed.lock().len() == N as usize,
        || format!("{} of {N} completed", completed.lock().len()),
    );
    assert_eq!(*arrived.lock(), (0..N).collect::<Vec<_>>());
    assert_eq!(*completed.lock(), (0..N).collect::<Vec<_>>());
}

#[test]
fn an_unanswered_call_times_out_at_its_deadline() {
    let rt = runtime();
    let (a, b) = (start(&rt), start(&rt));
    let held = Arc::new(Mutex::new(Vec::new()));
    let h = held.clone();
    b.register(Method::TimeoutNow, move |req: Request| h.lock().push(req))
        .unwrap();
    let t0 = Instant::now();
    let r = call_wait(
        &a,
        b.local_addr(),
        Method::TimeoutNow,
        vec![],
        Duration::from_millis(100),
    );
    let took = t0.elapsed();
    assert_eq!(r.unwrap_err(), RaftError::Timeout);
    assert!(
        took >= Duration::from_millis(100) && took < Duration::from_secs(2),
        "{took:?}"
    );
    // The late answer is counted as stale, not delivered twice.
    held.lock()
        .drain(..)
        .for_each(|r| r.responder.respond(Ok(vec![])));
    wait_for(
        "the stale response",
        T,
        || a.stats().stale_responses == 1,
        || format!("{:?}", a.stats()),
    );
}

#[test]
fn a_dropped_responder_answers_stopped_and_an_unserved_method_not_supported() {
    let rt = runtime();
    let (a, b) = (start(&rt), start(&rt));
    b.register(Method::Snapshot, drop::<Request>).unwrap();
    b.register(Method::GetLeader, |_req: Request| panic!("handler bug"))
        .unwrap();
    let to = b.local_addr();
    assert_eq!(
        call_wait(&a, to, Method::Snapshot, vec![], T),
        Err(RaftError::Stopped)
    );
    assert_eq!(
        call_wait(&a, to, Method::GetLeader, vec![], T),
        Err(RaftError::Stopped)
    );
    let err = call_wait(&a, to, Method::AddPeer, vec![], T).unwrap_err();
    assert!(matches!(err, RaftError::NotSupported { .. }), "{err}");
    // The IO thread survived the panicking handler.
    echo(&b, Method::Stat);
    assert!(call_wait(&a, to, Method::Stat, vec![], T).is_ok());
    assert!(
        b.register(Method::Stat, drop::<Request>).is_err(),
        "one handler per method"
    );
    assert!(b.register(Method::Hello, drop::<Request>).is_err());
}

#[test]
fn handler_errors_reach_the_caller_as_the_same_raft_error() {
    let rt = runtime();
    let (a, b) = (start(&rt), start(&rt));
    let leader: PeerId = "10.0.0.7:8100:2".parse().unwrap();
    let errors = vec![
        RaftError::NotLeader {
            leader: Some(leader),
        },
        RaftError::NotLeader { leader: None },
        RaftError::Busy,
        RaftError::invalid("bad conf"),
        RaftError::TermMismatch {
            expected: 3,
            current: 4,
        },
        RaftError::ErrorState {
            reason: "fsync failed".into(),
        },
        RaftError::AlreadyExists {
            what: "peer".into(),
        },
    ];
    let errs = Arc::new(errors.clone());
    b.register(Method::ChangePeers, move |req: Request| {
        let i = req.body[0] as usize;
        req.responder.respond(Err(errs[i].clone()));
    })
    .unwrap();
    for (i, want) in errors.iter().enumerate() {
        let body = vec![Bytes::from(vec![i as u8])];
        let got = call_wait(&a, b.local_addr(), Method::ChangePeers, body, T).unwrap_err();
        assert_eq!(&got, want);
    }
}

#[test]
fn every_error_maps_to_a_status_and_back() {
    let cases = vec![
        RaftError::Stopped,
        RaftError::Timeout,
        RaftError::decode("AppendEntries", "short"),
        RaftError::corruption(std::path::Path::new("/d/log_1"), 77, "crc"),
        RaftError::DirectoryLocked { path: "/d".into() },
        RaftError::io(
            "fdatasync",
            None,
            &std::io::Error::from_raw_os_error(libc::EIO),
        ),
        RaftError::NotSupported { what: "x" },
    ];
    for e in cases {
        let (status, body) = method::error_to_wire(&e);
        assert_ne!(status, Status::Ok);
        let back = method::error_from_wire(status, &body);
        assert_eq!(
            std::mem::discriminant(&back),
            std::mem::discriminant(&e),
            "{e} -> {status:?} -> {back}"
        );
    }
    for s in Status::ALL {
        assert_eq!(Status::from_u16(s.as_u16()).unwrap(), s);
        let _ = method::error_from_wire(s, &[0xff; 3]); // never panics on a bad body
    }
}

#[test]
fn oversized_bodies_are_invalid_and_a_full_connection_is_busy() {
    let rt = runtime();
    let mut o = opts(&rt);
    o.frame_bytes_max = 1 << 20;
    o.queued_bytes_max = 1 << 20;
    let a = Server::start(o).unwrap();
    let big = vec![Bytes::from(vec![0u8; 1 << 20])];
    let sink = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let to = sink.local_addr().unwrap();
    let err = call_wait(&a, to, Method::GetFile, big, T).unwrap_err();
    assert!(err.to_string().contains("over frame_bytes_max"), "{err}");
    // A peer that accepts and never reads: the kernel's buffers fill, then our queue.
    let _held = std::thread::spawn(move || {
        let conn = sink.accept();
        std::thread::sleep(Duration::from_secs(20));
        drop(conn);
    });
    let busy = Arc::new(AtomicUsize::new(0));
    let body = Bytes::from(vec![0u8; 256 << 10]);
    for _ in 0..400 {
        let b = busy.clone();
        a.call_default(to, Method::GetFile, vec![body.clone()], T, move |r| {
            if r == Err(RaftError::Busy) {
                b.fetch_add(1, Ordering::SeqCst);
            }
        });
        if busy.load(Ordering::SeqCst) > 0 {
            break;
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    wait_for(
        "a Busy",
        T,
        || busy.load(Ordering::SeqCst) > 0,
        || format!("{:?}", a.stats()),
    );
}

/// A peer that accepts and then reads nothing (wedged, stopped): once our frames wait with no
/// byte taken for the stall timeout, the connection is closed and its calls fail at once,
/// instead of each timing out while more frames pile up behind them.
#[test]
fn a_peer_that_stops_reading_is_closed_after_the_stall_timeout_and_its_calls_fail() {
    let rt = runtime();
    let mut o = opts(&rt);
    o.frame_stall_timeout_ms = 300;
    let a = Server::start(o).unwrap();
    let sink = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let to = sink.local_addr().unwrap();
    let _held = std::thread::spawn(move || {
        let conn = sink.accept();
        std::thread::sleep(Duration::from_secs(20));
        drop(conn);
    });
    let failed = Arc::new(Mutex::new(Vec::new()));
    let body = Bytes::from(vec![0u8; 1 << 20]);
    let started = Instant::now();
    // Enough to fill the kernel's buffers both ways (a few MiB on loopback).
    for _ in 0..24 {
        let f = failed.clone();
        let long = Duration::from_secs(60);
        a.call_default(to, Method::GetFile, vec![body.clone()], long, move |r| {
            f.lock().push(r.err());
        });
    }
    wait_for(
        "the calls fail once the peer read nothing for the stall timeout",
        Duration::from_secs(10),
        || failed.lock().len() == 24,
        || format!("{:?} {:?}", failed.lock(), a.stats()),
    );
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "not their 60 s deadline"
    );
    let errors = failed.lock();
    assert!(
        errors
            .iter()
            .all(|e| matches!(e, Some(RaftError::Io { .. }))),
        "{errors:?}"
    );
}

/// Connections beyond `accepted_connections_max` are closed at once: a peer opening sockets
/// without end cannot make the server hold a buffer per socket without end.
#[test]
fn connections_beyond_the_accept_limit_are_closed_at_once() {
    use std::io::Read;
    let rt = runtime();
    let mut o = opts(&rt);
    o.accepted_connections_max = 2;
    let a = Server::start(o).unwrap();
    let held: Vec<_> = (0..2)
        .map(|_| std::net::TcpStream::connect(a.local_addr()).unwrap())
        .collect();
    wait_for(
        "two connections adopted",
        T,
        || a.stats().accepted == 2,
        || format!("{:?}", a.stats()),
    );
    let mut extra = std::net::TcpStream::connect(a.local_addr()).unwrap();
    extra.set_read_timeout(Some(T)).unwrap();
    let mut buf = [0u8; 1];
    match extra.read(&mut buf) {
        Ok(0) => {}
        Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => {}
        other => panic!("expected the server to close it, got {other:?}"),
    }
    let stats = a.stats();
    assert_eq!((stats.accepted, stats.refused), (2, 1), "{stats:?}");
    drop(held);
}

#[test]
fn a_refused_connect_fails_fast_backs_off_and_reconnects_when_the_peer_returns() {
    let rt = runtime();
    let a = start(&rt);
    // A port with no listener: bind, note, close.
    let to = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let err = call_wait(&a, to, Method::PreVote, vec![], T).unwrap_err();
    assert!(matches!(err, RaftError::Io { .. }), "{err}");
    // Within the backoff a call fails at once, without a new connection attempt.
    let t0 = Instant::now();
    let err2 = call_wait(&a, to, Method::PreVote, vec![], T).unwrap_err();
    assert!(t0.elapsed() < Duration::from_millis(500));
    assert!(matches!(err2, RaftError::Io { .. }), "{err2}");
    let connects = a.stats().connects;
    assert!(connects <= 2, "{connects}");
    let mut o = opts(&rt);
    o.listen_addr = to;
    let b = Server::start(o).unwrap();
    echo(&b, Method::PreVote);
    wait_for(
        "a call to succeed after the peer came up",
        T,
        || call_wait(&a, to, Method::PreVote, vec![], T).is_ok(),
        || format!("{:?}", a.stats()),
    );
    // The peer restarts: calls fail while it is down, then succeed again.
    b.shutdown();
    drop(b);
    let mut o = opts(&rt);
    o.listen_addr = to;
    let b2 = Server::start(o).unwrap();
    echo(&b2, Method::PreVote);
    wait_for(
        "a call to succeed after the peer restarted",
        T,
        || call_wait(&a, to, Method::PreVote, vec![], T).is_ok(),
        || format!("{:?}", a.stats()),
    );
}

#[test]
fn shutdown_fails_waiting_calls_closes_every_socket_and_refuses_new_calls() {
    let rt = runtime();
    let (a, b) = (start(&rt), start(&rt));
    let held = Arc::new(Mutex::new(Vec::new()));
    let h = held.clone();
    b.register(Method::InstallSnapshot, move |req: Request| {
        h.lock().push(req)
    })
    .unwrap();
    let (tx, rx) = crossbeam::channel::unbounded();
    for _ in 0..10 {
        let tx = tx.clone();
        a.call_default(
            b.local_addr(),
            Method::InstallSnapshot,
            vec![],
            T,
            move |r| {
                let _ = tx.send(r);
            },
        );
    }
    wait_for(
        "requests to arrive",
        T,
        || held.lock().len() == 10,
        String::new,
    );
    a.shutdown();
    for _ in 0..10 {
        assert_eq!(rx.recv_timeout(T).unwrap(), Err(RaftError::Stopped));
    }
    assert_eq!(a.open_sockets(), 0);
    let r = call_wait(&a, b.local_addr(), Method::InstallSnapshot, vec![], T);
    assert_eq!(r, Err(RaftError::Stopped));
    // b sees its connection from a close; responding to it now is harmless.
    wait_for(
        "b to see the close",
        T,
        || b.open_sockets() == 1,
        || format!("{}", b.open_sockets()),
    );
    held.lock()
        .drain(..)
        .for_each(|r| r.responder.respond(Ok(vec![])));
}

#[test]
fn huge_timeouts_and_delays_are_capped_not_a_panic() {
    let rt = runtime();
    let faults = FaultHandle::new(5);
    let mut o = opts(&rt);
    o.fault = Some(faults.clone());
    let (a, b) = (Server::start(o).unwrap(), start(&rt));
    echo(&b, Method::Stat);
    let got = call_wait(&a, b.local_addr(), Method::Stat, vec![], Duration::MAX);
    assert!(got.is_ok());
    faults.set_link(
        a.local_addr(),
        b.local_addr(),
        LinkFaults {
            delay_ms: Some((u64::MAX, u64::MAX)),
            ..LinkFaults::default()
        },
    );
    let (tx, rx) = crossbeam::channel::bounded(1);
    a.call_default(
        b.local_addr(),
        Method::Stat,
        vec![],
        Duration::from_millis(50),
        move |r| {
            let _ = tx.send(r);
        },
    );
    assert_eq!(rx.recv_timeout(T).unwrap(), Err(RaftError::Timeout));
}

#[test]
fn options_are_validated_with_exact_messages() {
    let mut o = ServerOptions::new("127.0.0.1:0".parse().unwrap());
    o.queued_bytes_max = 10;
    let err = Server::start(o).err().unwrap().to_string();
    assert!(
        err.contains("queued_bytes_max = 10 must be >= frame_bytes_max"),
        "{err}"
    );
    let mut o = ServerOptions::new("127.0.0.1:0".parse().unwrap());
    o.reconnect_backoff_max_ms = 1;
    assert!(o.validate().is_err());
}
