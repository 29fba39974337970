//! [`Server`]: a listening socket, its accepted connections, its outgoing connections (one
//! per remote endpoint, shared by every caller), the handler table, and shutdown.
//!
//! Public calls (`start`, `register`, `call`, `shutdown`) run on user or raft-pool threads
//! and only enqueue; sockets live on the runtime's IO threads. `start` and `shutdown` wait
//! for the IO threads, so they must not be called from one.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use mio::net::TcpListener;
use mio::{Interest, Token};
use parking_lot::{Condvar, Mutex, RwLock};
use slog::Logger;

use super::caller::Caller;
use super::client::ClientConn;
use super::frame::HEADER_LEN;
use super::inbound::{Inbound, Request};
use super::method::Method;
use super::options::ServerOptions;
use super::Delivery;
use crate::error::{RaftError, Result};
use crate::exec_queue::ExecQueue;
use crate::io_loop::{HandlerStatus, IoContext, IoHandler, IoLoopHandle};
use crate::runtime::Runtime;

/// A request handler: runs on an IO thread, must only enqueue (see [`Server::register`]).
pub type Handler = Arc<dyn Fn(Request) + Send + Sync>;

/// The longest call deadline; longer timeouts are cut to it (an `Instant` cannot hold
/// `Duration::MAX` from now).
pub const CALL_TIMEOUT_MAX: Duration = Duration::from_secs(24 * 3600);

/// How long `shutdown` waits for the IO threads to close this server's sockets.
const SHUTDOWN_WAIT: Duration = Duration::from_secs(5);

/// Counters of one server, for tests and status pages.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ServerStats {
    /// Connections accepted.
    pub accepted: u64,
    /// Connections closed at once because `accepted_connections_max` were open.
    pub refused: u64,
    /// Outgoing connections attempted.
    pub connects: u64,
    /// Sockets closed (connections in either direction, and the listener).
    pub closed: u64,
    /// Connections closed because the peer broke the protocol.
    pub protocol_errors: u64,
    /// Frames received.
    pub frames_in: u64,
    /// Frames written to sockets.
    pub frames_out: u64,
    /// Responses that matched no waiting call (it had timed out, or a duplicate).
    pub stale_responses: u64,
}

#[derive(Default)]
pub(crate) struct Stats {
    accepted: AtomicU64,
    refused: AtomicU64,
    connects: AtomicU64,
    closed: AtomicU64,
    protocol_errors: AtomicU64,
    frames_in: AtomicU64,
    frames_out: AtomicU64,
    stale_responses: AtomicU64,
}

impl Stats {
    /// Counts frames read.
    pub fn add_frames_in(&self, n: u64) {
        self.frames_in.fetch_add(n, Ordering::Relaxed);
    }
    /// Counts frames written.
    pub fn add_frames_out(&self, n: u64) {
        if n > 0 {
            self.frames_out.fetch_add(n, Ordering::Relaxed);
        }
    }
    /// Counts a connection closed for a protocol error.
    pub fn add_protocol_error(&self) {
        self.protocol_errors.fetch_add(1, Ordering::Relaxed);
    }
    /// Counts a connection made.
    pub fn add_connect(&self) {
        self.connects.fetch_add(1, Ordering::Relaxed);
    }
    /// Counts a response that found no waiting call.
    pub fn add_stale_response(&self) {
        self.stale_responses.fetch_add(1, Ordering::Relaxed);
    }
    fn snapshot(&self) -> ServerStats {
        let g = |a: &AtomicU64| a.load(Ordering::Relaxed);
        ServerStats {
            accepted: g(&self.accepted),
            refused: g(&self.refused),
            connects: g(&self.connects),
            closed: g(&self.closed),
            protocol_errors: g(&self.protocol_errors),
            frames_in: g(&self.frames_in),
            frames_out: g(&self.frames_out),
            stale_responses: g(&self.stale_responses),
        }
    }
}

/// An accepted connection's place under `accepted_connections_max` while it travels to its
/// IO loop; given up when dropped, which is after the connection is in `conns` or is gone.
pub(crate) struct Adoption(Arc<ServerCtx>);

impl Drop for Adoption {
    fn drop(&mut self) {
        self.0.adopting.fetch_sub(1, Ordering::AcqRel);
    }
}

/// What every socket of one server shares.
pub(crate) struct ServerCtx {
    pub opts: ServerOptions,
    pub runtime: Runtime,
    pub logger: Logger,
    pub local_addr: SocketAddr,
    /// Handlers by `Method::index()`.
    handlers: RwLock<Vec<Option<Handler>>>,
    pub stats: Stats,
    stopped: AtomicBool,
    /// Every open socket of this server, by (IO loop index, token), for shutdown.
    conns: Mutex<HashMap<(usize, Token), IoLoopHandle>>,
    conns_cv: Condvar,
    /// Accepted connections on their way to their IO loop, not yet in `conns`: counted
    /// against `accepted_connections_max` so a burst of accepts cannot pass the bound while
    /// the adoptions are in flight.
    adopting: AtomicUsize,
    /// Spreads connections over the runtime's IO loops.
    next_loop: AtomicUsize,
}

impl ServerCtx {
    /// True once the server is shutting down.
    pub fn is_stopped(&self) -> bool {
        self.stopped.load(Ordering::Acquire)
    }

    /// The handler of `method`, cloned out so it runs without the lock held.
    pub fn handler(&self, method: Method) -> Option<Handler> {
        self.handlers.read()[method.index()].clone()
    }

    /// Records an open socket (listener or connection).
    pub fn register(&self, io: &IoLoopHandle, token: Token) {
        self.conns.lock().insert((io.index(), token), io.clone());
    }

    /// Reserves a place for an accepted connection until it is registered (or dropped).
    pub fn reserve_adoption(self: &Arc<Self>) -> Adoption {
        self.adopting.fetch_add(1, Ordering::AcqRel);
        Adoption(self.clone())
    }

    /// Open sockets plus accepted connections still on their way to their IO loop.
    fn open_or_adopting(&self) -> usize {
        self.conns.lock().len() + self.adopting.load(Ordering::Acquire)
    }

    /// Forgets a closed socket.
    pub fn unregister(&self, loop_index: usize, token: Token) {
        let mut conns = self.conns.lock();
        if conns.remove(&(loop_index, token)).is_some() {
            self.stats.closed.fetch_add(1, Ordering::Relaxed);
        }
        if conns.is_empty() {
            self.conns_cv.notify_all();
        }
    }

    /// The IO loop for the next connection (round robin).
    pub fn next_io_loop(&self) -> IoLoopHandle {
        self.runtime
            .io_loop(self.next_loop.fetch_add(1, Ordering::Relaxed))
    }

    /// What the fault layer does with a frame from this server to `to`.
    pub fn delivery(&self, to: SocketAddr) -> Delivery {
        #[cfg(any(test, feature = "fault-injection"))]
        if let Some(f) = &self.opts.fault {
            return f.decide(self.local_addr, to);
        }
        let _ = to;
        Delivery::NORMAL
    }
}

struct ServerInner {
    ctx: Arc<ServerCtx>,
    /// One outgoing connection per remote endpoint, created on first call.
    clients: RwLock<HashMap<SocketAddr, Arc<ClientConn>>>,
    /// Its queue is never stopped, so calls made after shutdown still complete (`Stopped`).
    default_caller: Caller,
}

/// A transport endpoint: listens, serves registered methods, and makes calls.
///
/// Dropping it shuts it down.
pub struct Server {
    inner: Arc<ServerInner>,
}

impl Server {
    /// Binds `opts.listen_addr` and starts serving on the runtime's IO loops.
    pub fn start(opts: ServerOptions) -> Result<Server> {
        opts.validate()?;
        let runtime = match &opts.runtime {
            Some(rt) => rt.clone(),
            None => Runtime::global()?,
        };
        let bind_err = |e: std::io::Error| RaftError::io("rpc bind", None, &e);
        let std_listener = std::net::TcpListener::bind(opts.listen_addr).map_err(bind_err)?;
        std_listener.set_nonblocking(true).map_err(bind_err)?;
        let local_addr = std_listener.local_addr().map_err(bind_err)?;
        let logger = opts
            .logger
            .new(slog::o!("server" => local_addr.to_string()));
        let ctx = Arc::new(ServerCtx {
            runtime: runtime.clone(),
            logger,
            local_addr,
            handlers: RwLock::new(vec![None; Method::ALL.len()]),
            stats: Stats::default(),
            stopped: AtomicBool::new(false),
            conns: Mutex::new(HashMap::new()),
            conns_cv: Condvar::new(),
            adopting: AtomicUsize::new(0),
            next_loop: AtomicUsize::new(0),
            opts,
        });
        let (default_caller, _) = Caller::start(&runtime.raft_pool(), "rpc-default");
        let server = Server {
            inner: Arc::new(ServerInner {
                ctx: ctx.clone(),
                clients: RwLock::new(HashMap::new()),
                default_caller,
            }),
        };
        server.listen(TcpListener::from_std(std_listener))?;
        slog::info!(ctx.logger, "rpc server listening"; "addr" => %local_addr);
        Ok(server)
    }

    /// Registers the listener on an IO loop and waits until it is.
    fn listen(&self, mut listener: TcpListener) -> Result<()> {
        let ctx = self.inner.ctx.clone();
        let io = ctx.runtime.io_loop(ctx.local_addr.port() as usize);
        let (tx, rx) = crossbeam::channel::bounded(1);
        let task_ctx = ctx.clone();
        io.execute(Box::new(move |lp: &mut IoContext<'_>| {
            let token = lp.next_token();
            let res = lp
                .registry()
                .register(&mut listener, token, Interest::READABLE)
                .map_err(|e| RaftError::io("rpc listen", None, &e));
            if res.is_ok() {
                task_ctx.register(lp.handle(), token);
                let me = Listener {
                    listener: Some(listener),
                    ctx: task_ctx,
                    token,
                };
                lp.insert(token, Box::new(me));
            }
            let _ = tx.send(res);
        }))?;
        rx.recv_timeout(SHUTDOWN_WAIT)
            .map_err(|_| RaftError::Stopped)
            .and_then(|r| r)
    }

    /// The address the server listens on (with the real port when bound to port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.inner.ctx.local_addr
    }

    /// The longest frame this server sends or accepts (header included).
    pub fn frame_bytes_max(&self) -> usize {
        self.inner.ctx.opts.frame_bytes_max
    }

    /// The runtime serving this server.
    pub fn runtime(&self) -> &Runtime {
        &self.inner.ctx.runtime
    }

    /// Serves `method` with `handler`, replacing no other: a method has at most one handler.
    ///
    /// The handler runs on an IO thread for every request of that method. It must only
    /// enqueue (the request, with its [`Responder`](super::Responder), goes to a queue on a
    /// worker pool, e.g. with [`Server::register_queue`]): it must not block, take a lock a
    /// slow thread may hold, or call `register`. A panicking handler is caught and logged;
    /// its request is answered `Stopped`.
    pub fn register<H>(&self, method: Method, handler: H) -> Result<()>
    where
        H: Fn(Request) + Send + Sync + 'static,
    {
        if method == Method::Hello {
            return Err(RaftError::invalid("Method::Hello is the transport's own"));
        }
        let mut handlers = self.inner.ctx.handlers.write();
        let slot = &mut handlers[method.index()];
        if slot.is_some() {
            return Err(RaftError::AlreadyExists {
                what: format!("a handler for {method}"),
            });
        }
        *slot = Some(Arc::new(handler));
        Ok(())
    }

    /// Serves `method` by submitting each request to `queue` (normally on the raft pool),
    /// whose consumer answers through `request.responder`. A refused submission (queue full
    /// or stopped) is answered at once with that error.
    pub fn register_queue(&self, method: Method, queue: ExecQueue<Request>) -> Result<()> {
        self.register(method, move |req: Request| {
            if let Err(rejected) = queue.submit(req) {
                rejected.item.responder.respond(Err(rejected.error));
            }
        })
    }

    /// Stops serving `method`; later requests for it are answered `UnknownMethod`.
    pub fn unregister(&self, method: Method) {
        self.inner.ctx.handlers.write()[method.index()] = None;
    }

    /// The caller used by [`Server::call_default`]: one queue on the raft pool.
    pub fn default_caller(&self) -> &Caller {
        &self.inner.default_caller
    }

    /// Calls `method` on the server listening at `to`, with `body` (chunks sent as they are,
    /// never copied). `done` gets the response body or the error, always exactly once, on
    /// `caller`'s queue (never on an IO or timer thread): `Timeout` after `timeout`, `Busy`
    /// when the connection's queue is full, `Invalid` for a body over the frame maximum,
    /// `Io` when the connection failed (a call made while reconnecting is backed off fails
    /// at once with the last connection error), `Stopped` after shutdown, or the error the
    /// remote handler answered. Requests of one caller to one address leave in call order.
    /// `timeout` is capped at [`CALL_TIMEOUT_MAX`].
    pub fn call<F>(
        &self,
        caller: &Caller,
        to: SocketAddr,
        method: Method,
        body: Vec<Bytes>,
        timeout: Duration,
        done: F,
    ) where
        F: FnOnce(Result<Bytes>) + Send + 'static,
    {
        let ctx = &self.inner.ctx;
        let body_len: usize = body.iter().map(Bytes::len).sum();
        let refused = if method == Method::Hello {
            Some(RaftError::invalid("Method::Hello cannot be called"))
        } else if HEADER_LEN + body_len > ctx.opts.frame_bytes_max {
            Some(RaftError::invalid(format!(
                "a {method} body of {body_len} bytes is over frame_bytes_max = {}",
                ctx.opts.frame_bytes_max
            )))
        } else if ctx.is_stopped() {
            Some(RaftError::Stopped)
        } else {
            None
        };
        if let Some(e) = refused {
            Caller::complete(caller.sink(), &ctx.logger, Box::new(done), Err(e));
            return;
        }
        let client = self.client(to);
        let timeout = timeout.min(CALL_TIMEOUT_MAX);
        client.call(caller, method, body, timeout, Box::new(done));
    }

    /// [`Server::call`] with the [`Server::default_caller`].
    pub fn call_default<F>(
        &self,
        to: SocketAddr,
        method: Method,
        body: Vec<Bytes>,
        timeout: Duration,
        done: F,
    ) where
        F: FnOnce(Result<Bytes>) + Send + 'static,
    {
        let caller = self.inner.default_caller.clone();
        self.call(&caller, to, method, body, timeout, done);
    }

    /// The outgoing connection to `to`, created on first use.
    fn client(&self, to: SocketAddr) -> Arc<ClientConn> {
        if let Some(c) = self.inner.clients.read().get(&to) {
            return c.clone();
        }
        let mut clients = self.inner.clients.write();
        clients
            .entry(to)
            .or_insert_with(|| {
                ClientConn::new(self.inner.ctx.clone(), to, self.inner.ctx.next_io_loop())
            })
            .clone()
    }

    /// Counters.
    pub fn stats(&self) -> ServerStats {
        self.inner.ctx.stats.snapshot()
    }

    /// Sockets (listener and connections) open right now.
    pub fn open_sockets(&self) -> usize {
        self.inner.ctx.conns.lock().len()
    }

    /// Stops listening, drops every handler, closes every connection, fails every waiting
    /// call with `Stopped`, and waits (up to 5 s; not at all on an IO thread) for the
    /// sockets to close.
    /// Idempotent.
    pub fn shutdown(&self) {
        let ctx = &self.inner.ctx;
        if ctx.stopped.swap(true, Ordering::AcqRel) {
            return;
        }
        // Handlers may own queues of requests whose responders point back at this server;
        // dropping them breaks that cycle.
        ctx.handlers.write().iter_mut().for_each(|h| *h = None);
        let clients: Vec<_> = self.inner.clients.read().values().cloned().collect();
        for c in clients {
            c.fail_all(&RaftError::Stopped);
        }
        let conns: Vec<_> = ctx
            .conns
            .lock()
            .iter()
            .map(|(k, io)| (k.1, io.clone()))
            .collect();
        for (token, io) in conns {
            io.notify(token);
        }
        let on_io_thread = std::thread::current()
            .name()
            .is_some_and(|n| n.starts_with("traft-io-"));
        if !on_io_thread {
            let deadline = Instant::now() + SHUTDOWN_WAIT;
            let mut conns = ctx.conns.lock();
            // Sockets on a loop that already stopped were dropped with it.
            conns.retain(|_, io| !io.is_stopped());
            while !conns.is_empty() && Instant::now() < deadline {
                ctx.conns_cv.wait_until(&mut conns, deadline);
            }
            if !conns.is_empty() {
                slog::warn!(ctx.logger, "shutdown: sockets still open"; "count" => conns.len());
            }
        }
        slog::info!(ctx.logger, "rpc server stopped");
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// The listening socket, on one IO loop; spreads accepted connections over all loops.
struct Listener {
    /// Invariant: `Some` until `stop`, which closes it before unregistering, so that
    /// `shutdown` (which waits for every handler to unregister) returns with the port free.
    listener: Option<TcpListener>,
    ctx: Arc<ServerCtx>,
    token: Token,
}

impl IoHandler for Listener {
    fn ready(
        &mut self,
        lp: &mut IoContext<'_>,
        _t: Token,
        _e: &mio::event::Event,
    ) -> HandlerStatus {
        if self.ctx.is_stopped() {
            return self.stop(lp);
        }
        self.accept_all(lp);
        HandlerStatus::Keep
    }

    fn notified(&mut self, lp: &mut IoContext<'_>, _token: Token) -> HandlerStatus {
        if self.ctx.is_stopped() {
            return self.stop(lp);
        }
        HandlerStatus::Keep
    }

    fn tick(&mut self, lp: &mut IoContext<'_>, _token: Token, _now: Instant) -> HandlerStatus {
        if self.ctx.is_stopped() {
            return self.stop(lp);
        }
        // Readiness is edge-triggered: connections left queued by a failed accept are
        // picked up here.
        self.accept_all(lp);
        HandlerStatus::Keep
    }
}

impl Listener {
    fn accept_all(&mut self, lp: &mut IoContext<'_>) {
        let Some(listener) = &self.listener else {
            return;
        };
        loop {
            match listener.accept() {
                Ok((stream, peer)) => {
                    // Every open socket of this server, the listener included, is in `conns`
                    // or on its way there; outgoing ones count too, which only makes the
                    // bound earlier.
                    let open = self.ctx.open_or_adopting();
                    if open > self.ctx.opts.accepted_connections_max {
                        self.ctx.stats.refused.fetch_add(1, Ordering::Relaxed);
                        slog::debug!(self.ctx.logger, "connection refused: too many open";
                            "peer" => %peer, "open" => open);
                        drop(stream);
                        continue;
                    }
                    self.ctx.stats.accepted.fetch_add(1, Ordering::Relaxed);
                    let place = self.ctx.reserve_adoption();
                    Inbound::adopt(&self.ctx, lp, stream, peer, place);
                }
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => {
                    // EMFILE and friends: the connection stays queued in the kernel.
                    slog::warn!(self.ctx.logger, "accept failed"; "error" => %e);
                    return;
                }
            }
        }
    }

    fn stop(&mut self, lp: &mut IoContext<'_>) -> HandlerStatus {
        if let Some(mut listener) = self.listener.take() {
            let _ = lp.registry().deregister(&mut listener);
            drop(listener); // the port is free before shutdown can return
        }
        self.ctx.unregister(lp.handle().index(), self.token);
        HandlerStatus::Remove
    }
}
