//! [`ExecQueue`]: braft's execution_queue. Items submitted from any thread run in order, one
//! batch at a time, on a shared [`Pool`](crate::pool::Pool), never on two threads at once.
//!
//! A queue with work schedules itself on its pool, drains at most `batch_max` items into one
//! call of its consumer and then, if other queues wait, goes to the back of the pool's run
//! queue; so with 10,000 busy queues on 2 threads no queue waits longer than one batch of each
//! other queue. Submitting only enqueues: the caller never runs the consumer, never blocks
//! (a full bounded queue answers `Busy` and hands the item back).
//!
//! Items travel through a crossbeam channel (one contended atomic per submit, like the channel
//! a user would write); scheduling uses a `scheduled` flag with SeqCst fences on both sides
//! instead of a second shared counter, and the stop protocol counts in-flight submits in
//! per-thread stripes, so that it costs no contended write either.
//!
//! Stop: items submitted before [`ExecQueue::stop`] still run; later submissions are refused
//! with [`RaftError::Stopped`]; the consumer is then called once more with an empty batch whose
//! [`Batch::is_stopped`] is true and dropped, and [`ExecQueue::join`] returns after that: what
//! the consumer owned is released when `join` returns.

use std::cell::Cell;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{fence, AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;

use crossbeam::channel::{self, Receiver, Sender};
use crossbeam::utils::{Backoff, CachePadded};
use parking_lot::{Condvar, Mutex};
use slog::Logger;

use crate::error::RaftError;
use crate::pool::{Job, PoolHandle};

/// A refused submission: why, and the item, handed back.
#[derive(Debug)]
pub struct Rejected<T> {
    /// `Stopped` after stop, `Busy` when the queue is at capacity.
    pub error: RaftError,
    /// The item that was not queued.
    pub item: T,
}

/// Settings of one queue.
#[derive(Clone)]
pub struct ExecQueueOptions {
    /// Name used in log lines.
    pub name: String,
    /// The most items handed to the consumer in one call.
    pub batch_max: usize,
    /// The most items queued and not yet taken into a batch; more answer `Busy`.
    /// `None`: unbounded.
    pub capacity: Option<usize>,
    /// Where a panicking consumer is reported.
    pub logger: Logger,
}

impl ExecQueueOptions {
    /// Options with `batch_max` 256, unbounded, logging to the default logger.
    pub fn new(name: &str) -> ExecQueueOptions {
        ExecQueueOptions {
            name: name.to_string(),
            batch_max: 256,
            capacity: None,
            logger: crate::logging::default_logger(),
        }
    }
}

/// One batch of items handed to the consumer: iterate it to take them in order.
pub struct Batch<'a, T> {
    rx: &'a Receiver<T>,
    left: usize,
    stopped: bool,
}

impl<T> Batch<'_, T> {
    /// True on the final call after [`ExecQueue::stop`]; such a batch is empty.
    pub fn is_stopped(&self) -> bool {
        self.stopped
    }

    /// The most items still to take from this batch.
    pub fn remaining(&self) -> usize {
        self.left
    }
}

impl<T> Iterator for Batch<'_, T> {
    type Item = T;

    fn next(&mut self) -> Option<T> {
        if self.left == 0 {
            return None;
        }
        match self.rx.try_recv() {
            Ok(item) => {
                self.left -= 1;
                Some(item)
            }
            Err(_) => {
                self.left = 0;
                None
            }
        }
    }
}

type Consumer<T> = Box<dyn FnMut(&mut Batch<'_, T>) + Send>;

/// Stripes of the in-flight submit counter: a submitter touches only its thread's stripe, so
/// producers on different threads do not contend on it.
const STRIPES: usize = 16;

thread_local! {
    static STRIPE: Cell<usize> = const { Cell::new(usize::MAX) };
}

fn my_stripe() -> usize {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    STRIPE.with(|s| {
        if s.get() == usize::MAX {
            s.set(NEXT.fetch_add(1, Ordering::Relaxed) % STRIPES);
        }
        s.get()
    })
}

struct Inner<T> {
    tx: Sender<T>,
    rx: Receiver<T>,
    /// Invariant: true while the queue is on its pool's run queue or running. A submitter
    /// that finds it false after sending sets it and schedules; the runner clears it only
    /// when it finds the channel empty, then looks again (the SeqCst fences on both sides
    /// make sure one of the two sees the other's write), so no item is left unscheduled and
    /// at most one runner exists.
    scheduled: AtomicBool,
    /// Set by `stop`; a submitter that sees it refuses.
    stopped: AtomicBool,
    /// Submitters between their `stopped` check and their send, by stripe. The final stop
    /// call waits for all stripes to read 0, so an item accepted just before stop still runs
    /// before it.
    in_flight: [CachePadded<AtomicUsize>; STRIPES],
    consumer: Mutex<Consumer<T>>,
    pool: PoolHandle,
    opts: ExecQueueOptions,
    /// Debug check of the single-runner invariant.
    running: AtomicBool,
    finished: Mutex<bool>,
    finished_cv: Condvar,
}

/// A serial queue on a pool. Cloning gives another handle to the same queue.
pub struct ExecQueue<T: Send + 'static> {
    inner: Arc<Inner<T>>,
}

impl<T: Send + 'static> Clone for ExecQueue<T> {
    fn clone(&self) -> Self {
        ExecQueue {
            inner: self.inner.clone(),
        }
    }
}

impl<T: Send + 'static> ExecQueue<T> {
    /// Starts a queue on `pool` whose batches go to `consumer`.
    pub fn start<F>(pool: &PoolHandle, opts: ExecQueueOptions, consumer: F) -> ExecQueue<T>
    where
        F: FnMut(&mut Batch<'_, T>) + Send + 'static,
    {
        assert!(
            opts.batch_max > 0,
            "ExecQueue {}: batch_max must be > 0",
            opts.name
        );
        let (tx, rx) = channel::unbounded();
        ExecQueue {
            inner: Arc::new(Inner {
                tx,
                rx,
                scheduled: AtomicBool::new(false),
                stopped: AtomicBool::new(false),
                in_flight: Default::default(),
                consumer: Mutex::new(Box::new(consumer)),
                pool: pool.clone(),
                opts,
                running: AtomicBool::new(false),
                finished: Mutex::new(false),
                finished_cv: Condvar::new(),
            }),
        }
    }

    /// Queues `item`. Never blocks and never runs the consumer on the calling thread.
    pub fn submit(&self, item: T) -> Result<(), Rejected<T>> {
        let inner = &*self.inner;
        let stripe = &inner.in_flight[my_stripe()];
        stripe.fetch_add(1, Ordering::SeqCst);
        let refused = if inner.stopped.load(Ordering::SeqCst) {
            Some(RaftError::Stopped)
        } else if inner.opts.capacity.is_some_and(|cap| inner.rx.len() >= cap) {
            Some(RaftError::Busy)
        } else {
            None
        };
        if let Some(error) = refused {
            stripe.fetch_sub(1, Ordering::SeqCst);
            return Err(Rejected { error, item });
        }
        // The receiver lives in `inner`, so the channel is never disconnected here.
        let sent = inner.tx.send(item);
        stripe.fetch_sub(1, Ordering::SeqCst);
        if let Err(e) = sent {
            return Err(Rejected {
                error: RaftError::Stopped,
                item: e.into_inner(),
            });
        }
        self.wake();
        Ok(())
    }

    /// Stops the queue: what was submitted runs, later submissions are refused. Idempotent.
    pub fn stop(&self) {
        if self.inner.stopped.swap(true, Ordering::SeqCst) {
            return;
        }
        self.wake();
    }

    /// Waits until the queue has stopped and its final consumer call returned. Returns at once
    /// if the pool was shut down (nothing can run the queue any more). Must not be called from
    /// the queue's own consumer.
    pub fn join(&self) {
        let inner = &self.inner;
        let mut finished = inner.finished.lock();
        while !*finished && !inner.pool.is_stopped() {
            inner
                .finished_cv
                .wait_for(&mut finished, std::time::Duration::from_millis(50));
        }
    }

    /// True once stop was requested.
    pub fn is_stopped(&self) -> bool {
        self.inner.stopped.load(Ordering::Acquire)
    }

    /// Items queued and not yet handed to the consumer.
    pub fn len(&self) -> usize {
        self.inner.rx.len()
    }

    /// True when nothing is queued.
    pub fn is_empty(&self) -> bool {
        self.inner.rx.is_empty()
    }

    /// Schedules the runner unless it is scheduled already.
    fn wake(&self) {
        // Pairs with the fence in `Inner::try_idle`: either we see `scheduled` cleared, or the
        // runner sees our item (or our stop).
        fence(Ordering::SeqCst);
        let inner = &self.inner;
        if inner.scheduled.load(Ordering::Relaxed) || inner.scheduled.swap(true, Ordering::AcqRel) {
            return;
        }
        if inner.pool.schedule(inner.clone()).is_err() {
            // The pool is gone; nothing will ever run this queue. join() sees the pool stopped.
            slog::warn!(inner.opts.logger, "exec queue scheduled on a stopped pool";
                "queue" => &inner.opts.name);
        }
    }
}

impl<T: Send + 'static> Inner<T> {
    /// True if there is something for the runner: an item, or a stop not yet carried out.
    fn has_work(&self) -> bool {
        !self.rx.is_empty() || (self.stopped.load(Ordering::SeqCst) && !*self.finished.lock())
    }

    /// Called with nothing to do: unschedules, then looks once more. True if the runner must
    /// go on (work arrived and it re-took the schedule).
    fn try_idle(&self) -> bool {
        self.running.store(false, Ordering::Release);
        self.scheduled.store(false, Ordering::SeqCst);
        fence(Ordering::SeqCst);
        if !self.has_work() || self.scheduled.swap(true, Ordering::AcqRel) {
            return false;
        }
        let was_running = self.running.swap(true, Ordering::AcqRel);
        debug_assert!(
            !was_running,
            "queue {} ran on two threads at once",
            self.opts.name
        );
        true
    }

    fn call_consumer(&self, consumer: &mut Consumer<T>, left: usize, stopped: bool) {
        let mut batch = Batch {
            rx: &self.rx,
            left,
            stopped,
        };
        if catch_unwind(AssertUnwindSafe(|| consumer(&mut batch))).is_err() {
            slog::error!(self.opts.logger, "exec queue consumer panicked; its batch is dropped";
                "queue" => &self.opts.name);
        }
        // Items the consumer left (it returned early or panicked) are dropped, never re-run:
        // a consumer that refuses its batch must not stall the queue forever.
        for _ in batch {}
    }

    /// The final call, once every submitter that passed the `stopped` check has sent.
    fn finish(&self, consumer: &mut Consumer<T>) {
        let backoff = Backoff::new();
        while self.in_flight.iter().any(|s| s.load(Ordering::SeqCst) != 0) {
            backoff.snooze();
        }
        // Late items (accepted before stop) run before the final call.
        while !self.rx.is_empty() {
            self.call_consumer(consumer, self.opts.batch_max, false);
        }
        self.call_consumer(consumer, 0, true);
        // Drop the consumer (and whatever it owns: files, locks, other queues) before `join`
        // can return, rather than whenever the last handle of this queue goes away.
        *consumer = Box::new(|_: &mut Batch<'_, T>| {});
        *self.finished.lock() = true;
        self.finished_cv.notify_all();
    }
}

impl<T: Send + 'static> Job for Inner<T> {
    fn run(self: Arc<Self>, pool: &PoolHandle) -> bool {
        let was_running = self.running.swap(true, Ordering::AcqRel);
        debug_assert!(
            !was_running,
            "queue {} ran on two threads at once",
            self.opts.name
        );
        let mut consumer = self.consumer.lock();
        loop {
            if !self.rx.is_empty() {
                let left = self.rx.len().min(self.opts.batch_max);
                self.call_consumer(&mut consumer, left, false);
                if pool.has_waiting() {
                    self.running.store(false, Ordering::Release);
                    return true;
                }
                continue;
            }
            if self.stopped.load(Ordering::SeqCst) && !*self.finished.lock() {
                self.finish(&mut consumer);
            }
            if !self.try_idle() {
                return false;
            }
        }
    }
}

#[cfg(test)]
mod tests;
