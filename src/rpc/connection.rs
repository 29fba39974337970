//! [`Conn`]: one TCP connection as an [`IoHandler`] on an IO thread, generic over its
//! [`Role`] (accepted: serves requests; outgoing: carries calls).
//!
//! Runs only on its IO thread. Reads decode into frames that are handed to the role (which
//! enqueues and returns); writes take frames from the shared outbox, lanes round robin, and
//! send everything taken with one `writev` per wakeup (bodies are never copied into a frame
//! buffer). It never blocks, never runs handlers' work or callers' `done` closures, and
//! closes on any protocol error with a logged reason, leaving other connections untouched.

use std::collections::VecDeque;
use std::io::{self, IoSlice, Write};
use std::net::SocketAddr;
use std::os::fd::AsRawFd;
use std::sync::Arc;
use std::time::{Duration, Instant};

use mio::event::Event;
use mio::net::TcpStream;
use mio::Token;
use parking_lot::MappedMutexGuard;

use super::frame::{Decoder, Frame};
use super::outbox::{OutFrame, OutState};
use super::server::ServerCtx;
use crate::error::{RaftError, Result};
use crate::io_loop::{HandlerStatus, IoContext, IoHandler, IoLoopHandle};

/// Frames are taken from the outbox until this many bytes (one bulk frame may exceed it):
/// small frames all go in one `writev`, and a frame queued later waits behind at most this
/// much plus one frame in our hands.
const WRITE_CHUNK: usize = 64 * 1024;
/// Slices per `writev` (Linux's IOV_MAX).
const IOV_MAX: usize = 1024;
/// Bytes read per wakeup before yielding to the loop's other sockets (the read resumes on
/// the loop's next round).
const READ_BUDGET: usize = 4 << 20;

/// What a connection does with what it receives, and whom it tells when it closes.
pub(crate) trait Role: Send + Sync + 'static {
    /// Accepted connections close when idle; outgoing ones are closed by their peer.
    const INBOUND: bool;
    /// Locks the connection's shared send state.
    fn out(&self) -> MappedMutexGuard<'_, OutState>;
    /// Frames of one read pass; `seen_before` frames came earlier on this connection. Must
    /// only enqueue. An error closes the connection.
    fn on_frames(this: &Arc<Self>, frames: &mut Vec<Frame>, seen_before: u64) -> Result<()>;
    /// An outgoing connection was established.
    fn on_connected(&self, token: Token);
    /// The connection closed for `reason`. Called exactly once.
    fn on_closed(&self, reason: &RaftError);
}

/// One TCP connection on its IO thread.
pub(crate) struct Conn<R: Role> {
    stream: TcpStream,
    token: Token,
    io: IoLoopHandle,
    role: Arc<R>,
    ctx: Arc<ServerCtx>,
    peer: SocketAddr,
    decoder: Decoder,
    /// Frames taken from the outbox, being written in order.
    writing: VecDeque<OutFrame>,
    /// Invariant: bytes of `writing.front()` already written; 0 when `writing` is empty.
    front_written: usize,
    connected: bool,
    opened_at: Instant,
    last_read: Instant,
    /// When the frames in `writing` last made progress (bytes written, or they were taken
    /// from the outbox): a peer that stops reading is noticed by it.
    last_write: Instant,
    frames_in: u64,
    /// Scratch for one read pass's frames.
    frames: Vec<Frame>,
    /// A read pass stopped at its budget and resumes on the next notification.
    read_more: bool,
    closed: bool,
}

impl<R: Role> Conn<R> {
    /// A handler for `stream`, registered under `token` on `io`. `first` (the hello of an
    /// outgoing connection) is written before anything from the outbox.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        stream: TcpStream,
        token: Token,
        io: IoLoopHandle,
        role: Arc<R>,
        ctx: Arc<ServerCtx>,
        peer: SocketAddr,
        connected: bool,
        first: Option<OutFrame>,
    ) -> Conn<R> {
        let now = Instant::now();
        let mut conn = Conn {
            stream,
            token,
            io,
            decoder: Decoder::new(ctx.opts.frame_bytes_max),
            role,
            ctx,
            peer,
            writing: first.into_iter().collect(),
            front_written: 0,
            connected,
            opened_at: now,
            last_read: now,
            last_write: now,
            frames_in: 0,
            frames: Vec::new(),
            read_more: false,
            closed: false,
        };
        if connected {
            conn.tune_socket();
        }
        conn
    }

    fn direction(&self) -> &'static str {
        if R::INBOUND {
            "inbound"
        } else {
            "outbound"
        }
    }

    fn tune_socket(&mut self) {
        if let Err(e) = self.stream.set_nodelay(true) {
            slog::debug!(self.ctx.logger, "set TCP_NODELAY failed"; "error" => %e);
        }
        let opts = &self.ctx.opts;
        let tcp = libc::IPPROTO_TCP;
        for (level, name, value, what) in [
            (
                libc::SOL_SOCKET,
                libc::SO_RCVBUF,
                opts.socket_recv_buffer_bytes,
                "SO_RCVBUF",
            ),
            (
                tcp,
                libc::TCP_NOTSENT_LOWAT,
                opts.socket_unsent_bytes_max,
                "TCP_NOTSENT_LOWAT",
            ),
        ] {
            if value > 0 {
                if let Err(e) = set_int_opt(&self.stream, level, name, value) {
                    slog::debug!(self.ctx.logger, "setsockopt failed";
                        "option" => what, "error" => %e);
                }
            }
        }
    }

    /// Checks whether a non-blocking connect finished. Ok(true) once connected.
    fn finish_connect(&mut self) -> Result<bool> {
        let connect_err = |e: &io::Error| RaftError::io("rpc connect", None, e);
        match self.stream.take_error() {
            Ok(Some(e)) | Err(e) => return Err(connect_err(&e)),
            Ok(None) => {}
        }
        match self.stream.peer_addr() {
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::NotConnected => return Ok(false),
            Err(e) => return Err(connect_err(&e)),
        }
        self.connected = true;
        self.tune_socket();
        self.role.on_connected(self.token);
        Ok(true)
    }

    fn on_ready(&mut self, event: &Event) -> Result<()> {
        if !self.connected && !self.finish_connect()? {
            return Ok(());
        }
        if event.is_readable() || event.is_read_closed() || event.is_error() {
            self.read_pass()?;
        }
        self.flush()
    }

    /// Reads until the socket is drained (or the budget is spent), handing each batch of
    /// frames to the role. Responses the role produces meanwhile are flushed at the end.
    fn read_pass(&mut self) -> Result<()> {
        // Pushers see this and skip their notification: the flush after this pass takes
        // their frames (see the invariant on `OutState::flush_requested`).
        self.role.out().flush_requested = true;
        let mut budget = READ_BUDGET;
        loop {
            let n = match self.decoder.read_from(&mut self.stream) {
                Ok(0) => return Err(self.eof_error()),
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(()),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(RaftError::io("rpc read", None, &e)),
            };
            self.last_read = Instant::now();
            while let Some(frame) = self.decoder.next_frame()? {
                self.frames.push(frame);
            }
            if !self.frames.is_empty() {
                let count = self.frames.len() as u64;
                self.ctx.stats.add_frames_in(count);
                let res = R::on_frames(&self.role, &mut self.frames, self.frames_in);
                self.frames.clear();
                self.frames_in += count;
                res?;
            }
            budget = budget.saturating_sub(n);
            if budget == 0 {
                self.read_more = true;
                self.io.notify(self.token);
                return Ok(());
            }
        }
    }

    fn eof_error(&self) -> RaftError {
        let kind = io::ErrorKind::UnexpectedEof;
        let message = if self.decoder.has_partial_frame() {
            format!(
                "peer closed the connection mid-frame ({} received)",
                self.decoder.partial_description()
            )
        } else {
            "peer closed the connection".to_string()
        };
        RaftError::io("rpc read", None, &io::Error::new(kind, message))
    }

    /// Writes what was taken, then takes more, until the outbox is empty or the socket is
    /// full (the writable event resumes it).
    fn flush(&mut self) -> Result<()> {
        if !self.connected {
            return Ok(());
        }
        loop {
            if self.writing.is_empty() {
                let mut out = self.role.out();
                out.outbox.take(WRITE_CHUNK, &mut self.writing);
                if self.writing.is_empty() {
                    out.flush_requested = false;
                    return Ok(());
                }
                self.last_write = Instant::now();
            }
            if !self.write_some()? {
                return Ok(());
            }
        }
    }

    /// `writev`s the frames in `writing`. Ok(true) when all were written, Ok(false) when the
    /// socket would block.
    fn write_some(&mut self) -> Result<bool> {
        loop {
            let mut iov: Vec<IoSlice<'_>> = Vec::with_capacity(IOV_MAX.min(4 * self.writing.len()));
            let mut skip = self.front_written;
            'frames: for f in &self.writing {
                let body = f.body.iter().map(|b| &b[..]);
                for piece in std::iter::once(&f.header[..]).chain(body) {
                    if skip >= piece.len() {
                        skip -= piece.len();
                        continue;
                    }
                    iov.push(IoSlice::new(&piece[skip..]));
                    skip = 0;
                    if iov.len() == IOV_MAX {
                        break 'frames;
                    }
                }
            }
            match self.stream.write_vectored(&iov) {
                Ok(0) => {
                    let e = io::Error::new(io::ErrorKind::WriteZero, "writev wrote nothing");
                    return Err(RaftError::io("rpc write", None, &e));
                }
                Ok(n) => {
                    self.last_write = Instant::now();
                    self.advance(n);
                    if self.writing.is_empty() {
                        return Ok(true);
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(false),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(RaftError::io("rpc write", None, &e)),
            }
        }
    }

    /// Drops the first `n` written bytes from `writing`.
    fn advance(&mut self, mut n: usize) {
        let mut done = 0;
        while n > 0 {
            let front = self
                .writing
                .front()
                .expect("invariant: the kernel wrote no more than we gave it")
                .len;
            let left = front - self.front_written;
            if n < left {
                self.front_written += n;
                break;
            }
            n -= left;
            self.writing.pop_front();
            self.front_written = 0;
            done += 1;
        }
        self.ctx.stats.add_frames_out(done);
    }

    /// Closes with `reason`, logged; tells the role and the server. Idempotent.
    fn close(&mut self, reason: RaftError) {
        if self.closed {
            return;
        }
        self.closed = true;
        let (log, ctx) = (&self.ctx.logger, &self.ctx);
        let (peer, dir) = (self.peer.to_string(), self.direction());
        if matches!(reason, RaftError::Decode { .. }) {
            ctx.stats.add_protocol_error();
            slog::warn!(log, "closing connection: protocol error";
                "peer" => &peer, "direction" => dir, "reason" => %reason);
        } else {
            slog::info!(log, "closing connection";
                "peer" => &peer, "direction" => dir, "reason" => %reason);
        }
        self.writing.clear();
        self.front_written = 0;
        self.role.on_closed(&reason);
        ctx.unregister(self.io.index(), self.token);
    }

    fn status(&mut self, res: Result<()>) -> HandlerStatus {
        match res {
            Ok(()) if !self.closed => HandlerStatus::Keep,
            Ok(()) => HandlerStatus::Remove,
            Err(e) => {
                self.close(e);
                HandlerStatus::Remove
            }
        }
    }

    fn check_timeouts(&self, now: Instant) -> Result<()> {
        let opts = &self.ctx.opts;
        let since_read = now.saturating_duration_since(self.last_read);
        let timed_out = |what: String| {
            let e = io::Error::new(io::ErrorKind::TimedOut, what);
            Err(RaftError::io("rpc read", None, &e))
        };
        if !self.connected {
            let limit = Duration::from_millis(opts.connect_timeout_ms);
            if now.saturating_duration_since(self.opened_at) > limit {
                let e = io::Error::new(io::ErrorKind::TimedOut, "connect timed out");
                return Err(RaftError::io("rpc connect", None, &e));
            }
            return Ok(());
        }
        let stall = Duration::from_millis(opts.frame_stall_timeout_ms);
        let since_write = now.saturating_duration_since(self.last_write);
        if !self.writing.is_empty() && since_write > stall {
            // The peer stopped reading: its calls would time out one by one while their
            // frames piled up; closing fails them at once and lets the client reconnect.
            let e = io::Error::new(
                io::ErrorKind::TimedOut,
                format!("peer read nothing for {since_write:?} with frames waiting"),
            );
            return Err(RaftError::io("rpc write", None, &e));
        }
        if self.decoder.has_partial_frame() && since_read > stall {
            return timed_out(format!(
                "peer stalled mid-frame for {since_read:?} ({} received)",
                self.decoder.partial_description()
            ));
        }
        if R::INBOUND
            && opts.idle_timeout_ms > 0
            && since_read > Duration::from_millis(opts.idle_timeout_ms)
        {
            return timed_out(format!("connection idle for {since_read:?}"));
        }
        Ok(())
    }
}

impl<R: Role> IoHandler for Conn<R> {
    fn ready(&mut self, _ctx: &mut IoContext<'_>, _token: Token, event: &Event) -> HandlerStatus {
        let res = self.on_ready(event);
        self.status(res)
    }

    fn notified(&mut self, _ctx: &mut IoContext<'_>, _token: Token) -> HandlerStatus {
        if self.ctx.is_stopped() {
            return self.status(Err(RaftError::Stopped));
        }
        let mut res = Ok(());
        if self.read_more && self.connected {
            self.read_more = false;
            res = self.read_pass();
        }
        let res = res.and_then(|()| self.flush());
        self.status(res)
    }

    fn tick(&mut self, _ctx: &mut IoContext<'_>, _token: Token, now: Instant) -> HandlerStatus {
        if self.ctx.is_stopped() {
            return self.status(Err(RaftError::Stopped));
        }
        let res = self.check_timeouts(now);
        self.status(res)
    }
}

impl<R: Role> Drop for Conn<R> {
    fn drop(&mut self) {
        // The IO loop drops its handlers when it stops: calls still waiting must hear of it.
        self.close(RaftError::Stopped);
    }
}

/// Sets an integer socket option (`SO_RCVBUF`, `TCP_NOTSENT_LOWAT`); `bytes` is clamped to
/// the C int range.
fn set_int_opt(
    stream: &TcpStream,
    level: libc::c_int,
    name: libc::c_int,
    bytes: usize,
) -> io::Result<()> {
    let value = libc::c_int::try_from(bytes).unwrap_or(libc::c_int::MAX);
    let len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
    // SAFETY: the descriptor belongs to `stream`, open for the whole call; the option value
    // points to a live c_int and `len` is its size; setsockopt only reads it.
    let rc = unsafe {
        libc::setsockopt(
            stream.as_raw_fd(),
            level,
            name,
            (&value as *const libc::c_int).cast(),
            len,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}
