//! The IO threads (`traft-io-N`): mio event loops that own sockets and never block.
//!
//! Each loop owns a set of [`IoHandler`]s keyed by mio `Token`. Readiness events go to the
//! handler of their token. Other threads reach a loop through its [`IoLoopHandle`]: `execute`
//! runs a closure on the loop thread (to register a new socket), `notify(token)` asks a handler
//! to look at its shared state again (new frames to write). Both wake the loop with one
//! `mio::Waker` call, coalesced: many notifications between two wakeups cost one wake.
//!
//! What runs here must never block and never run request handlers or user callbacks: handlers
//! parse and write bytes, and hand work to queues on the worker pools.

use std::collections::HashMap;
use std::io;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use crossbeam::queue::SegQueue;
use mio::event::Event;
use mio::{Events, Poll, Registry, Token, Waker};
use parking_lot::Mutex;

use crate::error::{RaftError, Result};

/// The token reserved for the loop's waker.
const WAKE_TOKEN: Token = Token(usize::MAX);
/// How often handlers get [`IoHandler::tick`] (idle timeouts, reconnect backoff).
pub const TICK_INTERVAL: Duration = Duration::from_millis(50);

/// What a handler wants after a call: stay registered, or be removed (and dropped).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HandlerStatus {
    /// Keep the handler.
    Keep,
    /// Remove and drop it; it must have deregistered (or closed) its source.
    Remove,
}

/// A socket owner living on one IO thread.
pub trait IoHandler: Send {
    /// The handler's source is ready.
    fn ready(&mut self, ctx: &mut IoContext<'_>, token: Token, event: &Event) -> HandlerStatus;
    /// Another thread called [`IoLoopHandle::notify`] for this token.
    fn notified(&mut self, ctx: &mut IoContext<'_>, token: Token) -> HandlerStatus;
    /// Called every [`TICK_INTERVAL`] or so.
    fn tick(&mut self, _ctx: &mut IoContext<'_>, _token: Token, _now: Instant) -> HandlerStatus {
        HandlerStatus::Keep
    }
}

/// A task run on the loop thread.
pub type IoTask = Box<dyn FnOnce(&mut IoContext<'_>) + Send>;

/// What a handler or task can do on its loop: register sources and add handlers.
pub struct IoContext<'a> {
    registry: &'a Registry,
    handlers: &'a mut HashMap<Token, Box<dyn IoHandler>>,
    next_token: &'a mut usize,
    handle: &'a IoLoopHandle,
}

impl IoContext<'_> {
    /// The loop's mio registry.
    pub fn registry(&self) -> &Registry {
        self.registry
    }

    /// A fresh token for a source about to be registered.
    pub fn next_token(&mut self) -> Token {
        let t = Token(*self.next_token);
        *self.next_token += 1;
        t
    }

    /// Installs `handler` for `token` (whose source the caller registered).
    pub fn insert(&mut self, token: Token, handler: Box<dyn IoHandler>) {
        self.handlers.insert(token, handler);
    }

    /// Removes the handler of `token` (not the one currently being called).
    pub fn remove(&mut self, token: Token) -> Option<Box<dyn IoHandler>> {
        self.handlers.remove(&token)
    }

    /// A handle to this loop, for handing to other threads.
    pub fn handle(&self) -> &IoLoopHandle {
        self.handle
    }
}

struct Shared {
    waker: Waker,
    tasks: SegQueue<IoTask>,
    notes: SegQueue<Token>,
    /// Set when a wake is already pending: later notifications skip the syscall.
    woken: AtomicBool,
    stopped: AtomicBool,
    index: usize,
}

/// A cheap, cloneable handle to one IO loop, usable from any thread.
#[derive(Clone)]
pub struct IoLoopHandle {
    shared: Arc<Shared>,
}

impl IoLoopHandle {
    /// Runs `task` on the loop thread. Fails once the loop stopped.
    pub fn execute(&self, task: IoTask) -> Result<()> {
        if self.shared.stopped.load(Ordering::Acquire) {
            return Err(RaftError::Stopped);
        }
        self.shared.tasks.push(task);
        self.wake();
        Ok(())
    }

    /// Asks the handler of `token` to look at its shared state again.
    pub fn notify(&self, token: Token) {
        self.shared.notes.push(token);
        self.wake();
    }

    /// The loop's index N in `traft-io-N`.
    pub fn index(&self) -> usize {
        self.shared.index
    }

    /// True once the loop was shut down.
    pub fn is_stopped(&self) -> bool {
        self.shared.stopped.load(Ordering::Acquire)
    }

    fn wake(&self) {
        if !self.shared.woken.swap(true, Ordering::AcqRel) {
            if let Err(e) = self.shared.waker.wake() {
                log::error!("traft-io-{}: waker failed: {e}", self.shared.index);
            }
        }
    }
}

/// One IO thread and its handle; shutting it down joins the thread.
pub struct IoLoop {
    handle: IoLoopHandle,
    thread: Mutex<Option<JoinHandle<()>>>,
}

impl IoLoop {
    /// Starts loop `index` on a thread named `traft-io-<index>`.
    pub fn start(index: usize) -> Result<IoLoop> {
        let poll = Poll::new().map_err(|e| RaftError::io("epoll_create", None, &e))?;
        let waker = Waker::new(poll.registry(), WAKE_TOKEN)
            .map_err(|e| RaftError::io("eventfd", None, &e))?;
        let handle = IoLoopHandle {
            shared: Arc::new(Shared {
                waker,
                tasks: SegQueue::new(),
                notes: SegQueue::new(),
                woken: AtomicBool::new(false),
                stopped: AtomicBool::new(false),
                index,
            }),
        };
        let h = handle.clone();
        let thread = thread::Builder::new()
            .name(format!("traft-io-{index}"))
            .spawn(move || run(poll, h))
            .map_err(|e| RaftError::io("spawn thread", None, &e))?;
        Ok(IoLoop {
            handle,
            thread: Mutex::new(Some(thread)),
        })
    }

    /// A handle to the loop.
    pub fn handle(&self) -> IoLoopHandle {
        self.handle.clone()
    }

    /// Stops the loop, drops every handler (closing its sockets) and joins the thread.
    pub fn shutdown(&self) {
        self.handle.shared.stopped.store(true, Ordering::Release);
        let _ = self.handle.shared.waker.wake();
        // Bound first, so the lock is not held through the join.
        let thread = self.thread.lock().take();
        if let Some(t) = thread {
            if t.thread().id() != thread::current().id() {
                let _ = t.join();
            }
        }
    }
}

impl Drop for IoLoop {
    fn drop(&mut self) {
        self.shutdown();
    }
}

fn run(mut poll: Poll, handle: IoLoopHandle) {
    let mut events = Events::with_capacity(1024);
    let mut handlers: HashMap<Token, Box<dyn IoHandler>> = HashMap::new();
    let mut next_token = 0usize;
    let mut last_tick = Instant::now();
    let shared = handle.shared.clone();
    let mut notes = Vec::new();
    while !shared.stopped.load(Ordering::Acquire) {
        if let Err(e) = poll.poll(&mut events, Some(TICK_INTERVAL)) {
            if e.kind() != io::ErrorKind::Interrupted {
                log::error!("traft-io-{}: poll failed: {e}", shared.index);
            }
            continue;
        }
        // Clear before draining: a notification racing with the drain re-wakes the loop.
        // A swap, not a store: a notifier that saw `woken` set skipped its wake, and this RMW
        // reads its write, so its queued task or note is visible to the drain below.
        shared.woken.swap(false, Ordering::AcqRel);
        let registry = poll.registry();
        let mut ctx = IoContext {
            registry,
            handlers: &mut handlers,
            next_token: &mut next_token,
            handle: &handle,
        };
        for event in events.iter() {
            let token = event.token();
            if token != WAKE_TOKEN {
                dispatch(&mut ctx, token, |h, c| h.ready(c, token, event));
            }
        }
        while let Some(task) = shared.tasks.pop() {
            // A panicking task (a bug) must not end the loop: every socket on it would be
            // left with nobody to serve it while `execute` still accepted work.
            if catch_unwind(AssertUnwindSafe(|| task(&mut ctx))).is_err() {
                log::error!(
                    "traft-io-{}: a task panicked; the loop goes on",
                    shared.index
                );
            }
        }
        notes.clear();
        while let Some(t) = shared.notes.pop() {
            notes.push(t);
        }
        notes.sort_unstable();
        notes.dedup();
        for &token in &notes {
            dispatch(&mut ctx, token, |h, c| h.notified(c, token));
        }
        let now = Instant::now();
        if now.duration_since(last_tick) >= TICK_INTERVAL {
            last_tick = now;
            let tokens: Vec<Token> = ctx.handlers.keys().copied().collect();
            for token in tokens {
                dispatch(&mut ctx, token, |h, c| h.tick(c, token, now));
            }
        }
    }
    // Dropping the handlers closes every socket this loop owned.
    drop(handlers);
}

/// Calls `f` on the handler of `token` with the handler taken out of the map, so that it may
/// add or remove other handlers through the context.
fn dispatch<F>(ctx: &mut IoContext<'_>, token: Token, f: F)
where
    F: FnOnce(&mut Box<dyn IoHandler>, &mut IoContext<'_>) -> HandlerStatus,
{
    let Some(mut h) = ctx.handlers.remove(&token) else {
        return; // removed earlier in this round
    };
    // A handler that panics (a bug) is dropped, closing its socket; the loop and the other
    // handlers on it go on (their peers would otherwise wait on a dead thread).
    match catch_unwind(AssertUnwindSafe(|| f(&mut h, ctx))) {
        Ok(HandlerStatus::Keep) => {
            ctx.handlers.insert(token, h);
        }
        Ok(_) => {}
        Err(_) => log::error!("traft-io: a handler panicked; its connection is closed"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::wait_for;
    use mio::net::TcpStream;
    use mio::Interest;
    use std::io::{Read, Write};
    use std::sync::atomic::AtomicUsize;

    struct Echo {
        stream: TcpStream,
        notified: Arc<AtomicUsize>,
    }

    impl IoHandler for Echo {
        fn ready(&mut self, _ctx: &mut IoContext<'_>, _t: Token, _e: &Event) -> HandlerStatus {
            let mut buf = [0u8; 64];
            loop {
                match self.stream.read(&mut buf) {
                    Ok(0) => return HandlerStatus::Remove,
                    Ok(n) => {
                        let _ = self.stream.write_all(&buf[..n]);
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => return HandlerStatus::Keep,
                    Err(_) => return HandlerStatus::Remove,
                }
            }
        }
        fn notified(&mut self, _ctx: &mut IoContext<'_>, _t: Token) -> HandlerStatus {
            self.notified.fetch_add(1, Ordering::SeqCst);
            HandlerStatus::Keep
        }
    }

    #[test]
    fn a_panicking_task_leaves_the_loop_serving() {
        let lp = IoLoop::start(0).unwrap();
        lp.handle()
            .execute(Box::new(|_| panic!("a bug in an io task")))
            .unwrap();
        let (tx, rx) = crossbeam::channel::bounded(1);
        lp.handle()
            .execute(Box::new(move |_| tx.send(()).unwrap()))
            .unwrap();
        rx.recv_timeout(Duration::from_secs(5))
            .expect("the loop still runs tasks");
        lp.shutdown();
    }

    #[test]
    fn handler_gets_readiness_and_notifications_on_the_io_thread() {
        let lp = IoLoop::start(0).unwrap();
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let notified = Arc::new(AtomicUsize::new(0));
        let (tx, rx) = crossbeam::channel::bounded(1);
        let n = notified.clone();
        lp.handle()
            .execute(Box::new(move |ctx| {
                let mut stream = TcpStream::connect(addr).unwrap();
                let token = ctx.next_token();
                ctx.registry()
                    .register(&mut stream, token, Interest::READABLE)
                    .unwrap();
                ctx.insert(
                    token,
                    Box::new(Echo {
                        stream,
                        notified: n,
                    }),
                );
                assert!(thread::current().name().unwrap().starts_with("traft-io-"));
                tx.send(token).unwrap();
            }))
            .unwrap();
        let token = rx.recv().unwrap();
        let (mut server_side, _) = listener.accept().unwrap();
        server_side.write_all(b"ping").unwrap();
        let mut back = [0u8; 4];
        server_side.read_exact(&mut back).unwrap();
        assert_eq!(&back, b"ping");
        for _ in 0..100 {
            lp.handle().notify(token);
        }
        wait_for(
            "notification",
            Duration::from_secs(5),
            || notified.load(Ordering::SeqCst) >= 1,
            String::new,
        );
        lp.shutdown();
        assert!(lp.handle().execute(Box::new(|_| {})).is_err());
        // The loop dropped the client socket: the server side reads EOF.
        let mut rest = Vec::new();
        server_side.read_to_end(&mut rest).unwrap();
    }
}
