//! The frame of DESIGN.md section 6 and its incremental [`Decoder`].
//!
//! `magic "TRFT" | version u8 | kind u8 | method u16 | status u16 | correlation id u64 |
//! body length u32 | body`, integers little-endian, 22 header bytes.
//!
//! The decoder owns a connection's read buffer. It is fed by reads from the socket (on an IO
//! thread) and hands out complete frames whose bodies are `Bytes` slices of that buffer, so a
//! received payload is never copied. It never panics on any input and never allocates more
//! than `max(READ_CHUNK, frame_bytes_max)` at once: a length is checked against the maximum
//! before anything is reserved for it.

use std::io::{self, Read};

use byteorder::{ByteOrder, LittleEndian};
use bytes::{Bytes, BytesMut};

use super::method::{Method, Status};
use crate::error::{RaftError, Result};

/// The first four bytes of every frame.
pub const MAGIC: [u8; 4] = *b"TRFT";
/// The protocol version this build speaks.
pub const VERSION: u8 = 1;
/// Bytes in a frame header.
pub const HEADER_LEN: usize = 22;
/// The smallest `frame_bytes_max` accepted (a header plus a small body).
pub const FRAME_BYTES_MAX_MIN: usize = 1024;
/// Buffer size for reads. A frame larger than this gets a buffer of exactly its size, so its
/// body lands contiguous and is handed out without a copy. The received part of a frame that
/// straddles the end of a buffer is moved once into the next buffer (at most one partial
/// frame per buffer).
pub const READ_CHUNK: usize = 256 * 1024;
/// The least free space worth a read system call; below it the buffer is replaced.
const READ_SPACE_MIN: usize = 4 * 1024;
/// The most buffer space one read zero-fills and offers. A header alone can announce a frame
/// of `frame_bytes_max` (64 MiB by default): the buffer is reserved at that size (address
/// space only) but its pages are touched as the bytes arrive, so 22 bytes from a peer cost
/// at most this much memory, not the whole frame.
pub(crate) const READ_WINDOW_MAX: usize = 4 * READ_CHUNK;

/// What a frame is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum FrameKind {
    /// A call: `status` is `Ok`, the correlation id is chosen by the caller.
    Request = 1,
    /// The answer to a call, with the request's method and correlation id.
    Response = 2,
}

impl FrameKind {
    fn from_u8(v: u8) -> Result<FrameKind> {
        match v {
            1 => Ok(FrameKind::Request),
            2 => Ok(FrameKind::Response),
            other => Err(RaftError::decode(
                "frame header",
                format!("unknown kind {other}"),
            )),
        }
    }
}

/// A decoded frame header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FrameHeader {
    /// Request or response.
    pub kind: FrameKind,
    /// The method called.
    pub method: Method,
    /// `Ok` on requests; the outcome on responses.
    pub status: Status,
    /// Matches a response to its request on one connection.
    pub correlation_id: u64,
    /// Bytes of body that follow the header.
    pub body_len: u32,
}

impl FrameHeader {
    /// The 22 header bytes.
    pub fn encode(&self) -> [u8; HEADER_LEN] {
        let mut h = [0u8; HEADER_LEN];
        h[0..4].copy_from_slice(&MAGIC);
        h[4] = VERSION;
        h[5] = self.kind as u8;
        LittleEndian::write_u16(&mut h[6..8], self.method.as_u16());
        LittleEndian::write_u16(&mut h[8..10], self.status.as_u16());
        LittleEndian::write_u64(&mut h[10..18], self.correlation_id);
        LittleEndian::write_u32(&mut h[18..22], self.body_len);
        h
    }

    /// Decodes and checks a header: magic, version, kind, method, status, and that the whole
    /// frame fits in `frame_bytes_max`. `buf` must hold at least [`HEADER_LEN`] bytes.
    pub fn decode(buf: &[u8], frame_bytes_max: usize) -> Result<FrameHeader> {
        let bad = |reason: String| RaftError::decode("frame header", reason);
        if buf.len() < HEADER_LEN {
            return Err(bad(format!("{} bytes, need {HEADER_LEN}", buf.len())));
        }
        if buf[0..4] != MAGIC {
            return Err(bad(format!("bad magic {:02x?}", &buf[0..4])));
        }
        if buf[4] != VERSION {
            return Err(bad(format!(
                "unknown version {} (this build speaks {VERSION})",
                buf[4]
            )));
        }
        let kind = FrameKind::from_u8(buf[5])?;
        let method = Method::from_u16(LittleEndian::read_u16(&buf[6..8]))?;
        let status = Status::from_u16(LittleEndian::read_u16(&buf[8..10]))?;
        let correlation_id = LittleEndian::read_u64(&buf[10..18]);
        let body_len = LittleEndian::read_u32(&buf[18..22]);
        let frame_len = HEADER_LEN as u64 + u64::from(body_len);
        if frame_len > frame_bytes_max as u64 {
            return Err(bad(format!(
                "frame of {frame_len} bytes is over the maximum of {frame_bytes_max}"
            )));
        }
        if kind == FrameKind::Request && status != Status::Ok {
            return Err(bad(format!("request with status {status:?}")));
        }
        Ok(FrameHeader {
            kind,
            method,
            status,
            correlation_id,
            body_len,
        })
    }

    /// Header plus body bytes.
    pub fn frame_len(&self) -> usize {
        HEADER_LEN + self.body_len as usize
    }
}

/// A complete received frame. `body` shares the connection's read buffer.
#[derive(Clone, Debug)]
pub struct Frame {
    /// The header.
    pub header: FrameHeader,
    /// The body, a slice of the read buffer.
    pub body: Bytes,
}

/// Splits a byte stream into frames. One per connection, used on its IO thread.
pub struct Decoder {
    /// Received bytes not yet handed out as frames. Invariant: starts at a frame boundary.
    buf: BytesMut,
    /// The header of the frame at the front of `buf`, once it was read and checked.
    header: Option<FrameHeader>,
    /// The length of the last frame handed out: the next read expects one like it, so a
    /// stream of bulk frames takes one read per frame, and small messages clear little.
    last_frame_len: usize,
    frame_bytes_max: usize,
    /// Read buffers allocated so far (each allocation copies the partial frame it takes on).
    buffers_made: u64,
    /// The most buffer space the next read zero-fills: twice what the last read returned,
    /// or twice the last window when that read filled it. A bulk frame's tail arrives a
    /// socket buffer at a time; offering (and clearing) the whole rest of the frame on every
    /// read cleared about three bytes per byte received for 2 MiB frames.
    read_hint: usize,
}

impl Decoder {
    /// A decoder refusing frames longer than `frame_bytes_max` bytes (header included).
    pub fn new(frame_bytes_max: usize) -> Decoder {
        Decoder {
            buf: BytesMut::new(),
            header: None,
            last_frame_len: 0,
            frame_bytes_max: frame_bytes_max.max(FRAME_BYTES_MAX_MIN),
            buffers_made: 0,
            read_hint: READ_CHUNK,
        }
    }

    /// Bytes received and not yet handed out.
    pub fn buffered(&self) -> usize {
        self.buf.len()
    }

    /// True when part of a frame has arrived and the rest has not.
    pub fn has_partial_frame(&self) -> bool {
        !self.buf.is_empty()
    }

    /// Read buffers allocated so far (for tests: each one copies the partial frame).
    pub fn buffers_made(&self) -> u64 {
        self.buffers_made
    }

    /// Capacity of the current read buffer (for tests of the allocation bound).
    pub fn capacity(&self) -> usize {
        self.buf.capacity()
    }

    /// Bytes the current frame still needs, when its header is known.
    fn frame_wanted(&self) -> usize {
        self.header.map_or(HEADER_LEN, |h| h.frame_len())
    }

    /// Makes room for the next read: the rest of the current frame once its header is known
    /// (a buffer sized to the frame always has it, so a frame's tail arriving in small reads
    /// never moves it again), else at least [`READ_SPACE_MIN`]. A new buffer holds exactly
    /// the current frame when it is larger than [`READ_CHUNK`], else one chunk; bytes already
    /// received move into it (at most one partial frame, which also never exceeds the
    /// maximum).
    fn reserve(&mut self) {
        let len = self.buf.len();
        let wanted = self.frame_wanted();
        let spare = self.buf.capacity() - len;
        let need = match self.header {
            Some(_) if len < wanted => wanted - len,
            _ => wanted.saturating_sub(len).max(READ_SPACE_MIN),
        };
        if spare >= need {
            return;
        }
        self.buffers_made += 1;
        // Room for what is here plus what is needed: a buffer of exactly `len` bytes would
        // offer the next read nothing, which reads as end of stream.
        let cap = wanted.max(READ_CHUNK).max(len + need);
        debug_assert!(cap <= self.frame_bytes_max.max(READ_CHUNK));
        let mut fresh = BytesMut::with_capacity(cap);
        fresh.extend_from_slice(&self.buf);
        self.buf = fresh;
    }

    /// One `read` from `src` into the buffer. Returns what `read` returned (0 at EOF).
    pub fn read_from<R: Read>(&mut self, src: &mut R) -> io::Result<usize> {
        self.reserve();
        let len = self.buf.len();
        // Zero only the space this read may fill: the rest of the current frame, or one
        // frame like the last, at least a small window; small messages do not pay for
        // clearing a whole chunk.
        let expect = match self.header {
            Some(h) => h.frame_len(),
            None => self.last_frame_len,
        };
        let window = (self.buf.capacity() - len)
            .min(expect.saturating_sub(len).max(READ_SPACE_MIN * 4))
            .min(READ_WINDOW_MAX)
            .min(self.read_hint);
        self.buf.resize(len + window, 0);
        let res = src.read(&mut self.buf[len..]);
        let got = *res.as_ref().unwrap_or(&0);
        self.buf.truncate(len + got);
        if let Ok(got) = res {
            self.read_hint = match got == window {
                true => window.saturating_mul(2),
                false => got.saturating_mul(2),
            }
            .clamp(READ_CHUNK, READ_WINDOW_MAX);
        }
        res
    }

    /// Appends bytes as if read from a socket (tests and tools).
    pub fn feed(&mut self, bytes: &[u8]) {
        let mut rest = bytes;
        while !rest.is_empty() {
            self.reserve();
            let n = (self.buf.capacity() - self.buf.len()).min(rest.len());
            self.buf.extend_from_slice(&rest[..n]);
            rest = &rest[n..];
        }
    }

    /// The next complete frame, if one has arrived. An error (bad header) is final: the
    /// connection must be closed, since the stream can no longer be split into frames.
    pub fn next_frame(&mut self) -> Result<Option<Frame>> {
        let header = match self.header {
            Some(h) => h,
            None => {
                if self.buf.len() < HEADER_LEN {
                    return Ok(None);
                }
                let h = FrameHeader::decode(&self.buf[..HEADER_LEN], self.frame_bytes_max)?;
                self.header = Some(h);
                h
            }
        };
        if self.buf.len() < header.frame_len() {
            return Ok(None);
        }
        self.header = None;
        self.last_frame_len = header.frame_len();
        let mut frame = self.buf.split_to(header.frame_len());
        let body = frame.split_off(HEADER_LEN).freeze();
        Ok(Some(Frame { header, body }))
    }

    /// Describes a partial frame for a log line (`"12 of 4118 bytes"`).
    pub fn partial_description(&self) -> String {
        match self.header {
            Some(h) => format!("{} of {} bytes", self.buf.len(), h.frame_len()),
            None => format!("{} header bytes of {HEADER_LEN}", self.buf.len()),
        }
    }
}

/// Encodes a whole frame into one buffer (tests, tools and the hand-decoding example).
pub fn encode_frame(header: &FrameHeader, body: &[u8]) -> Vec<u8> {
    debug_assert_eq!(header.body_len as usize, body.len());
    let mut v = Vec::with_capacity(HEADER_LEN + body.len());
    v.extend_from_slice(&header.encode());
    v.extend_from_slice(body);
    v
}

#[cfg(test)]
mod tests;
