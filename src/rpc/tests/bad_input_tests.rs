//! Bad input (issue point 4): each malformed stream closes its own connection with a logged
//! reason; no IO thread panics, and other connections keep working.

use std::io::{Read, Write};
use std::net::{Shutdown, TcpStream};

use super::*;
use crate::rpc::frame::{encode_frame, FrameHeader, FrameKind, HEADER_LEN};
use crate::testing::wait_for;

const T: Duration = Duration::from_secs(5);

fn request(method: Method, body: &[u8]) -> Vec<u8> {
    let h = FrameHeader {
        kind: FrameKind::Request,
        method,
        status: Status::Ok,
        correlation_id: 1,
        body_len: body.len() as u32,
    };
    encode_frame(&h, body)
}

struct Case {
    name: &'static str,
    bytes: Vec<u8>,
    /// Half-close our side after sending (the peer then sees EOF).
    close_write: bool,
    /// What the logged reason must say.
    reason: &'static str,
}

fn cases() -> Vec<Case> {
    let good = request(Method::Stat, b"hello");
    let with = |f: &dyn Fn(&mut Vec<u8>)| {
        let mut b = good.clone();
        f(&mut b);
        b
    };
    let response = {
        let mut b = good.clone();
        b[5] = FrameKind::Response as u8;
        b
    };
    let mut hello_late = good.clone();
    hello_late.extend(request(Method::Hello, &[0]));
    vec![
        Case {
            name: "bad magic",
            bytes: with(&|b| b[..4].copy_from_slice(b"HTTP")),
            close_write: false,
            reason: "bad magic",
        },
        Case {
            name: "unknown version",
            bytes: with(&|b| b[4] = 9),
            close_write: false,
            reason: "unknown version 9",
        },
        Case {
            name: "unknown method",
            bytes: with(&|b| b[6..8].copy_from_slice(&999u16.to_le_bytes())),
            close_write: false,
            reason: "unknown method 999",
        },
        Case {
            name: "body shorter than its length",
            bytes: good[..HEADER_LEN + 2].to_vec(),
            close_write: true,
            reason: "mid-frame (24 of 27 bytes received)",
        },
        Case {
            name: "frame over the maximum",
            bytes: with(&|b| b[18..22].copy_from_slice(&(2u32 << 20).to_le_bytes())),
            close_write: false,
            reason: "over the maximum of 1048576",
        },
        Case {
            name: "half a frame, then a stall",
            bytes: good[..11].to_vec(),
            close_write: false,
            reason: "stalled mid-frame",
        },
        Case {
            name: "connect and close at once",
            bytes: vec![],
            close_write: true,
            reason: "peer closed the connection",
        },
        Case {
            name: "a response on an accepted connection",
            bytes: response,
            close_write: false,
            reason: "response on an accepted connection",
        },
        Case {
            name: "hello after the first frame",
            bytes: hello_late,
            close_write: false,
            reason: "hello after the first frame",
        },
    ]
}

#[test]
fn each_bad_stream_closes_only_its_connection_with_a_logged_reason() {
    let rt = runtime();
    let log = LogCapture::default();
    let mut o = opts(&rt);
    o.logger = log.logger();
    o.frame_bytes_max = 1 << 20;
    o.queued_bytes_max = 1 << 20;
    o.frame_stall_timeout_ms = 300;
    let b = Server::start(o).unwrap();
    echo(&b, Method::Stat);
    let a = start(&rt);
    // A connection that stays open through every case, and must keep working.
    assert!(call_wait(&a, b.local_addr(), Method::Stat, vec![], T).is_ok());
    for case in cases() {
        let mut s = TcpStream::connect(b.local_addr()).unwrap();
        s.set_read_timeout(Some(T)).unwrap();
        s.write_all(&case.bytes).unwrap();
        if case.close_write {
            s.shutdown(Shutdown::Write).unwrap();
        }
        // The server closes: we read EOF (or a reset), never a hang.
        let mut rest = Vec::new();
        let r = s.read_to_end(&mut rest);
        assert!(
            r.is_ok()
                || r.as_ref()
                    .is_err_and(|e| e.kind() == std::io::ErrorKind::ConnectionReset),
            "{}: {r:?}",
            case.name
        );
        wait_for(
            case.name,
            T,
            || log.contains(case.reason),
            || log.lines().join("\n"),
        );
        let body = vec![Bytes::from_static(b"still fine")];
        let got = call_wait(&a, b.local_addr(), Method::Stat, body, T).unwrap();
        assert_eq!(&got[..], b"still fine", "after {}", case.name);
    }
    assert_eq!(b.stats().protocol_errors, 6, "{:?}", b.stats());
    assert_eq!(
        a.stats().connects,
        1,
        "the healthy connection was never dropped"
    );
    let warned = log.lines().iter().filter(|l| l.starts_with("WARN")).count();
    assert_eq!(warned, 6, "{}", log.lines().join("\n"));
}

#[test]
fn a_peer_without_hello_is_known_by_its_socket_address() {
    let rt = runtime();
    let b = start(&rt);
    let froms = Arc::new(parking_lot::Mutex::new(Vec::new()));
    let f = froms.clone();
    b.register(Method::GetLeader, move |req: Request| {
        f.lock().push(req.from);
        req.responder
            .respond(Ok(vec![Bytes::from_static(b"leader?")]));
    })
    .unwrap();
    let mut s = TcpStream::connect(b.local_addr()).unwrap();
    s.set_read_timeout(Some(T)).unwrap();
    s.write_all(&request(Method::GetLeader, b"")).unwrap();
    let mut resp = vec![0u8; HEADER_LEN + 7];
    s.read_exact(&mut resp).unwrap();
    let h = FrameHeader::decode(&resp[..HEADER_LEN], 1 << 20).unwrap();
    assert_eq!(h.kind, FrameKind::Response);
    assert_eq!(h.correlation_id, 1);
    assert_eq!(&resp[HEADER_LEN..], b"leader?");
    assert_eq!(froms.lock()[0], s.local_addr().unwrap());
}
