//! [`ClientConn`]: this server's one outgoing connection to one remote endpoint, shared by
//! every caller and multiplexed by correlation id; lazy connect, capped exponential
//! backoff, call deadlines on the timer.
//!
//! `call` runs on the caller's thread and only enqueues; the socket is a [`Conn`] on an IO
//! thread; deadlines fire on the timer thread. None of them runs a `done` closure: each
//! completion goes to its caller's sink. Every call completes exactly once: by its response,
//! its deadline, the connection's failure, or shutdown, whichever removes it from `pending`
//! first.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use mio::net::TcpStream;
use mio::{Interest, Token};
use parking_lot::{MappedMutexGuard, Mutex, MutexGuard};

use super::caller::{Caller, CompletionSink, DoneFn};
use super::connection::{Conn, Role};
use super::frame::{Frame, FrameHeader, FrameKind};
use super::method::{error_from_wire, Method, Status};
use super::outbox::{OutFrame, OutState};
use super::server::ServerCtx;
use super::Delivery;
use crate::error::{RaftError, Result};
use crate::io_loop::{IoContext, IoLoopHandle};
use crate::timer::TimerId;
use crate::types::PeerId;

/// A call waiting for its response.
struct Pending {
    done: DoneFn,
    sink: Arc<dyn CompletionSink>,
    /// The deadline's timer, cancelled when the call completes otherwise.
    timer: Option<TimerId>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    /// No socket; the next call connects.
    Idle,
    /// A socket is being set up or connecting; calls queue in the outbox.
    Connecting,
    /// Established.
    Connected,
    /// The last connection failed; calls fail at once until the instant, then reconnect.
    Backoff(Instant),
}

struct ClientState {
    out: OutState,
    /// Invariant: every call that has not completed is here, under its correlation id.
    pending: HashMap<u64, Pending>,
    phase: Phase,
    next_correlation_id: u64,
    /// The next backoff; reset to the minimum when a response arrives.
    backoff_ms: u64,
    last_error: Option<RaftError>,
}

/// The outgoing connection to one endpoint (across reconnects).
pub(crate) struct ClientConn {
    ctx: Arc<ServerCtx>,
    remote: SocketAddr,
    io: IoLoopHandle,
    state: Mutex<ClientState>,
}

impl ClientConn {
    /// The connection to `remote`, handled on `io`; it connects on the first call.
    pub fn new(ctx: Arc<ServerCtx>, remote: SocketAddr, io: IoLoopHandle) -> Arc<ClientConn> {
        let backoff_ms = ctx.opts.reconnect_backoff_min_ms;
        Arc::new(ClientConn {
            state: Mutex::new(ClientState {
                out: OutState::default(),
                pending: HashMap::new(),
                phase: Phase::Idle,
                next_correlation_id: 1,
                backoff_ms,
                last_error: None,
            }),
            ctx,
            remote,
            io,
        })
    }

    /// Queues one call (see `Server::call` for the contract).
    pub fn call(
        self: &Arc<Self>,
        caller: &Caller,
        method: Method,
        body: Vec<Bytes>,
        timeout: Duration,
        done: DoneFn,
    ) {
        let body_len: usize = body.iter().map(Bytes::len).sum();
        let delivery = self.ctx.delivery(self.remote);
        let mut st = self.state.lock();
        if let Err(e) = self.admit(&st, OutFrame::len_for(body_len)) {
            drop(st);
            Caller::complete(caller.sink(), &self.ctx.logger, done, Err(e));
            return;
        }
        let connect = matches!(st.phase, Phase::Idle | Phase::Backoff(_));
        if connect {
            st.phase = Phase::Connecting;
        }
        let corr = st.next_correlation_id;
        st.next_correlation_id += 1;
        let me = Arc::downgrade(self);
        // Lock order: client state -> timer.
        let timer = self.ctx.runtime.timer().schedule_after(timeout, move || {
            if let Some(me) = me.upgrade() {
                me.expire(corr);
            }
        });
        let Ok(timer) = timer else {
            drop(st);
            Caller::complete(
                caller.sink(),
                &self.ctx.logger,
                done,
                Err(RaftError::Stopped),
            );
            return;
        };
        let sink = caller.sink().clone();
        st.pending.insert(
            corr,
            Pending {
                done,
                sink,
                timer: Some(timer),
            },
        );
        let header = FrameHeader {
            kind: FrameKind::Request,
            method,
            status: Status::Ok,
            correlation_id: corr,
            body_len: body_len as u32,
        };
        let frame = OutFrame::new(&header, body);
        let wake = self.push(&mut st, caller.id(), corr, frame, delivery);
        drop(st);
        if connect {
            self.start_connect();
        }
        if let Some(token) = wake {
            self.io.notify(token);
        }
    }

    /// Why a call cannot be queued now, if it cannot.
    fn admit(&self, st: &ClientState, frame_len: usize) -> Result<()> {
        if self.ctx.is_stopped() {
            return Err(RaftError::Stopped);
        }
        if let Phase::Backoff(until) = st.phase {
            if Instant::now() < until {
                return Err(st.last_error.clone().unwrap_or(RaftError::Stopped));
            }
        }
        if !st
            .out
            .outbox
            .has_room(frame_len, self.ctx.opts.queued_bytes_max)
        {
            return Err(RaftError::Busy);
        }
        Ok(())
    }

    /// Queues `frame` as the fault layer says: now, later (from the timer), twice, or not.
    fn push(
        self: &Arc<Self>,
        st: &mut ClientState,
        lane: u64,
        corr: u64,
        frame: OutFrame,
        delivery: Delivery,
    ) -> Option<Token> {
        if delivery.copies == 0 {
            return None; // dropped: the call ends at its deadline
        }
        if let Some(at) = delivery.delay_until {
            let me = self.clone();
            let copies = delivery.copies;
            let _ = self.ctx.runtime.timer().schedule_at(at, move || {
                let mut st = me.state.lock();
                let live = matches!(st.phase, Phase::Connecting | Phase::Connected);
                if !live || !st.pending.contains_key(&corr) {
                    return;
                }
                let mut wake = None;
                for _ in 0..copies {
                    wake = wake.or(st.out.push(lane, frame.share()));
                }
                drop(st);
                if let Some(token) = wake {
                    me.io.notify(token);
                }
            });
            return None;
        }
        let mut wake = None;
        for _ in 1..delivery.copies {
            wake = wake.or(st.out.push(lane, frame.share()));
        }
        wake.or(st.out.push(lane, frame))
    }

    /// The deadline of call `corr` passed (timer thread).
    fn expire(&self, corr: u64) {
        let pending = self.state.lock().pending.remove(&corr);
        if let Some(p) = pending {
            Caller::complete(&p.sink, &self.ctx.logger, p.done, Err(RaftError::Timeout));
        }
    }

    /// Sets up the socket on the IO loop.
    fn start_connect(self: &Arc<Self>) {
        let me = self.clone();
        let task = Box::new(move |lp: &mut IoContext<'_>| me.connect_on_loop(lp));
        if let Err(e) = self.io.execute(task) {
            self.on_closed(&e);
        }
    }

    fn connect_on_loop(self: Arc<Self>, lp: &mut IoContext<'_>) {
        if self.ctx.is_stopped() {
            self.on_closed(&RaftError::Stopped);
            return;
        }
        self.ctx.stats.add_connect();
        let mut stream = match TcpStream::connect(self.remote) {
            Ok(s) => s,
            Err(e) => return self.on_closed(&RaftError::io("rpc connect", None, &e)),
        };
        let token = lp.next_token();
        let interest = Interest::READABLE | Interest::WRITABLE;
        if let Err(e) = lp.registry().register(&mut stream, token, interest) {
            return self.on_closed(&RaftError::io("rpc register", None, &e));
        }
        self.ctx.register(&self.io, token);
        let hello = self.hello_frame();
        let (io, ctx, remote) = (self.io.clone(), self.ctx.clone(), self.remote);
        let conn = Conn::new(stream, token, io, self, ctx, remote, false, Some(hello));
        lp.insert(token, Box::new(conn));
    }

    /// The first frame: this server's listen address, so the peer can tell who calls.
    fn hello_frame(&self) -> OutFrame {
        let mut body = Vec::with_capacity(PeerId::ENCODED_LEN_MAX);
        PeerId::new(self.ctx.local_addr, 0).encode(&mut body);
        let header = FrameHeader {
            kind: FrameKind::Request,
            method: Method::Hello,
            status: Status::Ok,
            correlation_id: 0,
            body_len: body.len() as u32,
        };
        OutFrame::new(&header, vec![Bytes::from(body)])
    }

    /// Fails every waiting call with `err` (shutdown).
    pub fn fail_all(&self, err: &RaftError) {
        let pending = {
            let mut st = self.state.lock();
            st.out.outbox.clear();
            std::mem::take(&mut st.pending)
        };
        self.complete_all(pending.into_values(), err);
    }

    fn complete_all(&self, pending: impl Iterator<Item = Pending>, err: &RaftError) {
        let timer = self.ctx.runtime.timer();
        for p in pending {
            if let Some(t) = p.timer {
                timer.cancel(t);
            }
            Caller::complete(&p.sink, &self.ctx.logger, p.done, Err(err.clone()));
        }
    }
}

impl Role for ClientConn {
    const INBOUND: bool = false;

    fn out(&self) -> MappedMutexGuard<'_, OutState> {
        MutexGuard::map(self.state.lock(), |s| &mut s.out)
    }

    fn on_frames(this: &Arc<Self>, frames: &mut Vec<Frame>, _seen_before: u64) -> Result<()> {
        let mut answered = Vec::with_capacity(frames.len());
        let mut bad = None;
        {
            let mut st = this.state.lock();
            st.backoff_ms = this.ctx.opts.reconnect_backoff_min_ms;
            for f in frames.drain(..) {
                if f.header.kind != FrameKind::Response {
                    let what = format!("a {} request on an outgoing connection", f.header.method);
                    bad = Some(RaftError::decode("frame", what));
                    break;
                }
                match st.pending.remove(&f.header.correlation_id) {
                    Some(p) => answered.push((p, f)),
                    None => this.ctx.stats.add_stale_response(),
                }
            }
        }
        let timer = this.ctx.runtime.timer();
        for (p, f) in answered {
            if let Some(t) = p.timer {
                timer.cancel(t);
            }
            let result = match f.header.status {
                Status::Ok => Ok(f.body),
                s => Err(error_from_wire(s, &f.body)),
            };
            Caller::complete(&p.sink, &this.ctx.logger, p.done, result);
        }
        bad.map_or(Ok(()), Err)
    }

    fn on_connected(&self, token: Token) {
        let mut st = self.state.lock();
        st.phase = Phase::Connected;
        st.out.token = Some(token);
    }

    fn on_closed(&self, reason: &RaftError) {
        let pending = {
            let mut st = self.state.lock();
            st.out = OutState::default();
            let pending = std::mem::take(&mut st.pending);
            let quiet = pending.is_empty() && st.phase == Phase::Connected;
            st.phase = if quiet || self.ctx.is_stopped() {
                // The peer closed an idle connection: the next call reconnects at once.
                Phase::Idle
            } else {
                let backoff = st.backoff_ms;
                st.backoff_ms = backoff
                    .saturating_mul(2)
                    .min(self.ctx.opts.reconnect_backoff_max_ms);
                Phase::Backoff(crate::timer::deadline_after(Duration::from_millis(backoff)))
            };
            st.last_error = Some(reason.clone());
            pending
        };
        if !pending.is_empty() {
            slog::debug!(self.ctx.logger, "calls failed with their connection";
                "peer" => %self.remote, "count" => pending.len(), "reason" => %reason);
        }
        self.complete_all(pending.into_values(), reason);
    }
}
