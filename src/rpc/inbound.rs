//! The serving side of a connection: [`Inbound`] (the role of an accepted connection),
//! [`Request`] (what a handler gets) and [`Responder`] (how it answers, from any thread).
//!
//! Requests are decoded and handed to their method's handler on the IO thread; handlers only
//! enqueue. A responder queues its response on the connection the request came on and wakes
//! that connection's IO thread once per burst. A responder dropped unanswered answers
//! `Stopped`, so no call waits for its deadline because a request was lost on the server.

use std::net::SocketAddr;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::{Arc, OnceLock};
use std::time::Instant;

use bytes::Bytes;
use mio::net::TcpStream;
use mio::{Interest, Token};
use parking_lot::{MappedMutexGuard, Mutex, MutexGuard};

use super::connection::{Conn, Role};
use super::frame::{Frame, FrameHeader, FrameKind, HEADER_LEN};
use super::method::{error_to_wire, Method, Status};
use super::outbox::{OutFrame, OutState};
use super::server::{Adoption, ServerCtx};
use crate::error::{RaftError, Result};
use crate::io_loop::{IoContext, IoLoopHandle};
use crate::types::codec::Reader;
use crate::types::PeerId;

/// One request, as a handler receives it.
pub struct Request {
    /// The method called.
    pub method: Method,
    /// The request body: a slice of the connection's read buffer (no copy was made).
    pub body: Bytes,
    /// The caller's listen address (from its hello), or the socket's peer address when the
    /// caller sent no hello.
    pub from: SocketAddr,
    /// Answers the request; usable from any thread, exactly once.
    pub responder: Responder,
}

/// Answers one request. Usable from any thread, exactly once (it is consumed); dropping it
/// unanswered answers `Stopped` ("dropped unanswered").
pub struct Responder {
    /// Invariant: `Some` until the response is queued.
    conn: Option<Arc<Inbound>>,
    correlation_id: u64,
    method: Method,
}

impl Responder {
    /// Sends `Ok(body chunks)` or the error as the response. Never blocks; the chunks are
    /// sent as they are, never copied. A body over the frame maximum is answered `Invalid`
    /// instead; when the connection's queue is full the response becomes `Busy`; when the
    /// connection has closed the response is dropped.
    pub fn respond(mut self, result: Result<Vec<Bytes>>) {
        if let Some(conn) = self.conn.take() {
            conn.send_response(self.correlation_id, self.method, result);
        }
    }

    /// The method being answered.
    pub fn method(&self) -> Method {
        self.method
    }

    /// The request's correlation id (for logs).
    pub fn correlation_id(&self) -> u64 {
        self.correlation_id
    }
}

impl Drop for Responder {
    fn drop(&mut self) {
        if let Some(conn) = self.conn.take() {
            let body = Bytes::from_static(b"the server dropped the request unanswered");
            conn.send_frame(
                self.correlation_id,
                self.method,
                Status::Stopped,
                vec![body],
            );
        }
    }
}

/// An accepted connection's shared state.
pub(crate) struct Inbound {
    out: Mutex<OutState>,
    io: IoLoopHandle,
    ctx: Arc<ServerCtx>,
    /// The socket's peer address (the caller's ephemeral port).
    remote: SocketAddr,
    /// The caller's listen address, from its hello.
    from: OnceLock<SocketAddr>,
}

impl Inbound {
    /// Takes an accepted socket: registers it on the next IO loop (round robin). `place`
    /// keeps it counted against `accepted_connections_max` until it is registered or dropped.
    pub fn adopt(
        ctx: &Arc<ServerCtx>,
        lp: &mut IoContext<'_>,
        stream: TcpStream,
        peer: SocketAddr,
        place: Adoption,
    ) {
        let io = ctx.next_io_loop();
        if io.index() == lp.handle().index() {
            Inbound::register(ctx, lp, stream, peer);
            return;
        }
        let ctx2 = ctx.clone();
        let task = Box::new(move |lp: &mut IoContext<'_>| {
            Inbound::register(&ctx2, lp, stream, peer);
            drop(place);
        });
        if let Err(e) = io.execute(task) {
            slog::warn!(ctx.logger, "accepted connection dropped"; "peer" => %peer, "error" => %e);
        }
    }

    fn register(
        ctx: &Arc<ServerCtx>,
        lp: &mut IoContext<'_>,
        mut stream: TcpStream,
        peer: SocketAddr,
    ) {
        if ctx.is_stopped() {
            return;
        }
        let token = lp.next_token();
        let interest = Interest::READABLE | Interest::WRITABLE;
        if let Err(e) = lp.registry().register(&mut stream, token, interest) {
            slog::warn!(ctx.logger, "cannot register accepted connection";
                "peer" => %peer, "error" => %e);
            return;
        }
        let io = lp.handle().clone();
        let role = Arc::new(Inbound {
            out: Mutex::new(OutState {
                token: Some(token),
                ..OutState::default()
            }),
            io: io.clone(),
            ctx: ctx.clone(),
            remote: peer,
            from: OnceLock::new(),
        });
        ctx.register(&io, token);
        let conn = Conn::new(stream, token, io, role, ctx.clone(), peer, true, None);
        lp.insert(token, Box::new(conn));
        slog::debug!(ctx.logger, "accepted connection"; "peer" => %peer);
    }

    /// The caller's listen address if it said hello, else its socket address.
    fn caller_addr(&self) -> SocketAddr {
        self.from.get().copied().unwrap_or(self.remote)
    }

    fn send_response(self: &Arc<Self>, corr: u64, method: Method, result: Result<Vec<Bytes>>) {
        let (status, body) = match result {
            Ok(chunks) => {
                let len: usize = chunks.iter().map(Bytes::len).sum();
                if HEADER_LEN + len > self.ctx.opts.frame_bytes_max {
                    let e = RaftError::invalid(format!(
                        "the {method} response of {len} bytes is over frame_bytes_max = {}",
                        self.ctx.opts.frame_bytes_max
                    ));
                    let (s, b) = error_to_wire(&e);
                    (s, vec![b])
                } else {
                    (Status::Ok, chunks)
                }
            }
            Err(e) => {
                let (s, b) = error_to_wire(&e);
                (s, vec![b])
            }
        };
        self.send_frame(corr, method, status, body);
    }

    /// Queues a response frame (through the fault layer), `Busy` if the queue is full.
    fn send_frame(self: &Arc<Self>, corr: u64, method: Method, status: Status, body: Vec<Bytes>) {
        let header = |status, body_len| FrameHeader {
            kind: FrameKind::Response,
            method,
            status,
            correlation_id: corr,
            body_len,
        };
        let len: usize = body.iter().map(Bytes::len).sum();
        let mut frame = OutFrame::new(&header(status, len as u32), body);
        let delivery = self.ctx.delivery(self.caller_addr());
        if delivery.copies == 0 {
            return;
        }
        // Responses take turns by method: a bulk GetFile reply cannot hold up heartbeats'.
        let lane = u64::from(method.as_u16());
        let mut out = self.out.lock();
        if !out
            .outbox
            .has_room(frame.len, self.ctx.opts.queued_bytes_max)
        {
            frame = OutFrame::new(&header(Status::Busy, 0), Vec::new());
        }
        if let Some(at) = delivery.delay_until {
            drop(out);
            self.push_later(at, lane, frame, delivery.copies);
            return;
        }
        let mut wake = None;
        for _ in 1..delivery.copies {
            wake = wake.or(out.push(lane, frame.share()));
        }
        wake = wake.or(out.push(lane, frame));
        drop(out);
        if let Some(token) = wake {
            self.io.notify(token);
        }
    }

    /// The fault layer's delay: the frame joins the queue at `at`, from the timer thread.
    fn push_later(self: &Arc<Self>, at: Instant, lane: u64, frame: OutFrame, copies: u8) {
        let me = self.clone();
        let res = self.ctx.runtime.timer().schedule_at(at, move || {
            let mut out = me.out.lock();
            let mut wake = None;
            for _ in 0..copies {
                wake = wake.or(out.push(lane, frame.share()));
            }
            drop(out);
            if let Some(token) = wake {
                me.io.notify(token);
            }
        });
        if res.is_err() {
            slog::debug!(self.ctx.logger, "delayed response dropped: timer stopped");
        }
    }

    /// Hands one request to its handler, or answers `UnknownMethod` when there is none.
    fn dispatch(self: &Arc<Self>, frame: Frame) {
        let method = frame.header.method;
        let responder = Responder {
            conn: Some(self.clone()),
            correlation_id: frame.header.correlation_id,
            method,
        };
        let Some(handler) = self.ctx.handler(method) else {
            // A server shutting down has cleared its handlers before closing connections:
            // what arrives meanwhile is told `Stopped`, not that the method is unknown.
            let (status, e) = if self.ctx.is_stopped() {
                (Status::Stopped, "the server is shutting down".to_string())
            } else {
                let e = format!("no handler for {method} on {}", self.ctx.local_addr);
                (Status::UnknownMethod, e)
            };
            let body = Bytes::from(e.into_bytes());
            let mut r = responder;
            if let Some(conn) = r.conn.take() {
                conn.send_frame(r.correlation_id, method, status, vec![body]);
            }
            return;
        };
        let req = Request {
            method,
            body: frame.body,
            from: self.caller_addr(),
            responder,
        };
        // A handler bug must not take the IO thread down; its responder, dropped during the
        // unwind, answers the caller.
        if catch_unwind(AssertUnwindSafe(|| handler(req))).is_err() {
            slog::error!(self.ctx.logger, "request handler panicked"; "method" => %method);
        }
    }

    fn on_hello(&self, frame: &Frame, first: bool) -> Result<()> {
        if !first {
            return Err(RaftError::decode("hello", "hello after the first frame"));
        }
        let mut r = Reader::new("hello", &frame.body);
        let peer = PeerId::decode(&mut r)?;
        r.finish()?;
        let _ = self.from.set(peer.addr());
        Ok(())
    }
}

impl Role for Inbound {
    const INBOUND: bool = true;

    fn out(&self) -> MappedMutexGuard<'_, OutState> {
        MutexGuard::map(self.out.lock(), |o| o)
    }

    fn on_frames(this: &Arc<Self>, frames: &mut Vec<Frame>, seen_before: u64) -> Result<()> {
        for (i, frame) in frames.drain(..).enumerate() {
            match (frame.header.kind, frame.header.method) {
                (FrameKind::Response, m) => {
                    return Err(RaftError::decode(
                        "frame",
                        format!("a {m} response on an accepted connection"),
                    ));
                }
                (FrameKind::Request, Method::Hello) => {
                    this.on_hello(&frame, seen_before == 0 && i == 0)?;
                }
                (FrameKind::Request, _) => this.dispatch(frame),
            }
        }
        Ok(())
    }

    fn on_connected(&self, _token: Token) {}

    fn on_closed(&self, _reason: &RaftError) {
        let mut out = self.out.lock();
        out.closed = true;
        out.token = None;
        out.outbox.clear();
    }
}
