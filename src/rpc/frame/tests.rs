//! Frame codec: header round trip, every rejected header, frames split across reads, bodies
//! handed out as slices of the read buffer.

use super::*;

fn header(method: Method, corr: u64, body_len: u32) -> FrameHeader {
    FrameHeader {
        kind: FrameKind::Request,
        method,
        status: Status::Ok,
        correlation_id: corr,
        body_len,
    }
}

#[test]
fn header_round_trips_with_the_documented_layout() {
    let h = FrameHeader {
        kind: FrameKind::Response,
        method: Method::AppendEntries,
        status: Status::NotLeader,
        correlation_id: 0x0102_0304_0506_0708,
        body_len: 5,
    };
    let b = h.encode();
    assert_eq!(&b[..4], b"TRFT");
    assert_eq!(b[4], VERSION);
    assert_eq!(b[5], 2);
    assert_eq!(&b[6..8], &[3, 0]);
    assert_eq!(&b[8..10], &[1, 0]);
    assert_eq!(&b[10..18], &[8, 7, 6, 5, 4, 3, 2, 1]);
    assert_eq!(&b[18..22], &[5, 0, 0, 0]);
    assert_eq!(FrameHeader::decode(&b, 1 << 20).unwrap(), h);
}

#[test]
fn bad_headers_are_decode_errors_naming_the_problem() {
    let good = header(Method::GetFile, 1, 10).encode();
    type Mutate = Box<dyn Fn(&mut [u8; HEADER_LEN])>;
    let cases: Vec<(Mutate, &str)> = vec![
        (Box::new(|b| b[0] = b'X'), "bad magic"),
        (Box::new(|b| b[4] = 9), "unknown version 9"),
        (Box::new(|b| b[5] = 7), "unknown kind 7"),
        (
            Box::new(|b| b[6..8].copy_from_slice(&999u16.to_le_bytes())),
            "unknown method 999",
        ),
        (
            Box::new(|b| b[8..10].copy_from_slice(&77u16.to_le_bytes())),
            "unknown status 77",
        ),
        (
            Box::new(|b| b[8..10].copy_from_slice(&2u16.to_le_bytes())),
            "request with status",
        ),
        (
            Box::new(|b| b[18..22].copy_from_slice(&u32::MAX.to_le_bytes())),
            "over the maximum",
        ),
    ];
    for (mutate, want) in cases {
        let mut b = good;
        mutate(&mut b);
        let err = FrameHeader::decode(&b, 1 << 20).unwrap_err().to_string();
        assert!(err.contains(want), "want {want:?}, got {err}");
    }
    assert!(FrameHeader::decode(&good[..10], 1 << 20).is_err());
}

#[test]
fn frames_split_anywhere_decode_the_same() {
    let mut stream = Vec::new();
    for i in 0..20u32 {
        let body = vec![i as u8; (i * 37) as usize];
        stream.extend(encode_frame(
            &header(Method::AppendEntries, u64::from(i), i * 37),
            &body,
        ));
    }
    for step in [1, 3, 22, 23, 100, 4096, stream.len()] {
        let mut d = Decoder::new(1 << 20);
        let mut got = Vec::new();
        for chunk in stream.chunks(step) {
            d.feed(chunk);
            while let Some(f) = d.next_frame().unwrap() {
                got.push(f);
            }
        }
        assert_eq!(got.len(), 20, "step {step}");
        for (i, f) in got.iter().enumerate() {
            assert_eq!(f.header.correlation_id, i as u64);
            assert_eq!(f.body.len(), i * 37);
            assert!(f.body.iter().all(|b| *b == i as u8));
        }
        assert!(!d.has_partial_frame());
    }
}

#[test]
fn bodies_are_slices_of_one_read_buffer() {
    let mut stream = Vec::new();
    for i in 0..3u64 {
        stream.extend(encode_frame(
            &header(Method::AppendEntries, i, 100),
            &[7u8; 100],
        ));
    }
    let mut d = Decoder::new(1 << 20);
    d.feed(&stream);
    let a = d.next_frame().unwrap().unwrap();
    let b = d.next_frame().unwrap().unwrap();
    // Adjacent in memory: b's body starts one header after a's ends. No copy was made.
    let a_end = a.body.as_ptr() as usize + a.body.len();
    assert_eq!(b.body.as_ptr() as usize, a_end + HEADER_LEN);
}

#[test]
fn a_large_frame_gets_a_buffer_of_its_exact_size_and_no_more() {
    let body = vec![1u8; 3 * READ_CHUNK];
    let bytes = encode_frame(
        &header(Method::InstallSnapshot, 9, body.len() as u32),
        &body,
    );
    let mut d = Decoder::new(4 * READ_CHUNK);
    d.feed(&bytes[..100]);
    assert!(d.next_frame().unwrap().is_none());
    d.feed(&bytes[100..]);
    assert!(d.capacity() <= bytes.len(), "capacity {}", d.capacity());
    let f = d.next_frame().unwrap().unwrap();
    assert_eq!(f.body.len(), body.len());
}

/// A socket with nothing more to read: records how much buffer each read was offered.
struct Dry(Vec<usize>);

impl std::io::Read for Dry {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        self.0.push(buf.len());
        Err(std::io::ErrorKind::WouldBlock.into())
    }
}

#[test]
fn a_header_announcing_a_huge_frame_costs_one_read_window_not_the_frame() {
    let max = 64 << 20;
    let mut d = Decoder::new(max);
    d.feed(&header(Method::AppendEntries, 1, (max - HEADER_LEN) as u32).encode());
    assert!(d.next_frame().unwrap().is_none());
    let mut dry = Dry(Vec::new());
    for _ in 0..3 {
        assert!(d.read_from(&mut dry).is_err());
    }
    assert!(
        dry.0.iter().all(|&n| n <= READ_WINDOW_MAX),
        "zero-filled and offered per read: {:?}",
        dry.0
    );
    assert_eq!(d.buffered(), HEADER_LEN, "nothing arrived, nothing kept");
}

/// Hands out its bytes `step` at a time (a socket whose receive buffer holds `step`), then
/// says WouldBlock; records the buffer space each read was offered (what the decoder
/// zero-filled).
struct Trickle {
    bytes: Vec<u8>,
    at: usize,
    step: usize,
    offered: usize,
}

impl std::io::Read for Trickle {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        self.offered += buf.len();
        let n = self.step.min(buf.len()).min(self.bytes.len() - self.at);
        if n == 0 {
            return Err(std::io::ErrorKind::WouldBlock.into());
        }
        buf[..n].copy_from_slice(&self.bytes[self.at..self.at + n]);
        self.at += n;
        Ok(n)
    }
}

#[test]
fn a_large_frames_tail_in_small_reads_never_moves_its_buffer_again() {
    let body = vec![3u8; 1 << 20];
    let bytes = encode_frame(&header(Method::AppendEntries, 1, body.len() as u32), &body);
    let mut d = Decoder::new(4 << 20);
    let tail = bytes.len() - 4096;
    // As a connection reads: the header is parsed as soon as it is in, so the buffer is
    // sized to the frame.
    d.feed(&bytes[..100]);
    assert!(d.next_frame().unwrap().is_none());
    d.feed(&bytes[100..tail]);
    assert!(d.next_frame().unwrap().is_none());
    let made = d.buffers_made();
    let mut src = Trickle {
        bytes: bytes[tail..].to_vec(),
        at: 0,
        step: 100,
        offered: 0,
    };
    let mut frame = None;
    while frame.is_none() {
        d.read_from(&mut src).unwrap();
        frame = d.next_frame().unwrap();
    }
    assert_eq!(frame.unwrap().body.len(), body.len());
    assert_eq!(
        d.buffers_made(),
        made,
        "41 reads of 100 bytes, no new buffer"
    );
}

#[test]
fn read_from_fills_from_a_reader_and_reports_eof() {
    let mut src: &[u8] = &encode_frame(&header(Method::Stat, 4, 3), b"abc");
    let mut d = Decoder::new(1 << 20);
    while d.read_from(&mut src).unwrap() > 0 {}
    let f = d.next_frame().unwrap().unwrap();
    assert_eq!(&f.body[..], b"abc");
    assert_eq!(d.read_from(&mut src).unwrap(), 0);
}

#[test]
fn bulk_frames_in_socket_sized_reads_zero_fill_about_what_arrives() {
    let body = vec![5u8; 2 << 20];
    let one = encode_frame(&header(Method::AppendEntries, 1, body.len() as u32), &body);
    let mut src = Trickle {
        bytes: one.repeat(8),
        at: 0,
        step: 256 << 10,
        offered: 0,
    };
    let mut d = Decoder::new(4 << 20);
    let mut frames = 0;
    while frames < 8 {
        d.read_from(&mut src).unwrap();
        while d.next_frame().unwrap().is_some() {
            frames += 1;
        }
    }
    let ratio = src.offered as f64 / src.bytes.len() as f64;
    eprintln!("zero-filled {:.2} bytes per byte received", ratio);
    assert!(
        ratio <= 2.5,
        "zero-filled {ratio:.2} bytes per byte received"
    );
}
