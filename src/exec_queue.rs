//! [`ExecQueue`]: braft's execution_queue. Items submitted from any thread run in order, one
//! batch at a time, on a shared [`Pool`](crate::pool::Pool), never on two threads at once.
//!
//! A queue with work schedules itself on its pool, drains at most `batch_max` items into one
//! call of its consumer and then, if other queues wait, goes to the back of the pool's run
//! queue; so with 10,000 busy queues on 2 threads no queue waits longer than one batch of each
//! other queue. Submitting only enqueues: the caller never runs the consumer, never blocks
//! (a full bounded queue answers `Busy` and hands the item back).
//!
//! Mechanism. A queue owns its items in its own multi-producer, single-consumer queue
//! (`mpsc`: linked blocks of 63 slots, and one atomic word `tail` holding the next position
//! and two flags, `STOPPED` and `IDLE`), its consumer (behind the `runner` lock, taken for a
//! turn), a handle of its pool, and the `finished` flag `join` waits on.
//! - Submit: one CAS on `tail` reserves a slot and clears `IDLE`; the item is then written and
//!   its slot marked ready. The one submit whose CAS cleared `IDLE` schedules a turn. So
//!   invariant: a turn is scheduled or running exactly while `IDLE` is clear, and there is at
//!   most one. No second flag, no fence: every change to `tail` is a read-modify-write, so
//!   they have one order.
//! - A turn takes ready slots from its head with plain loads (no atomic read-modify-write
//!   per item, and no read of the producers' cache line while items are ready), hands them
//!   over in batches of at most `batch_max`, and after each batch yields if other jobs wait.
//!   With nothing ready at its head it reads `tail`. Items reserved and not yet written are
//!   waited for (their submits are between two instructions); a `STOPPED` tail with all
//!   taken gets the final call; otherwise the turn sets `IDLE` by a CAS against the word it
//!   read, which fails if any slot was reserved or a stop came since, and then it looks
//!   again. So no item is left without a turn.
//! - Order: positions are reserved in one total order, and a submit that starts after
//!   another returned gets a later position, so per-producer (and causal) order holds; the
//!   turn takes positions in order.
//! - Capacity counts items reserved and not yet taken by the consumer (a counter the turn
//!   publishes as it takes them); the check and the reservation use the same `tail` word and
//!   the counter only grows, so a bounded queue never holds more than its capacity.
//! - A panicking consumer is caught; the rest of its batch is taken and dropped, the turn
//!   goes on.
//!
//! Stop: items submitted before [`ExecQueue::stop`] still run; later submissions are refused
//! with [`RaftError::Stopped`]; the consumer is then called once more with an empty batch whose
//! [`Batch::is_stopped`] is true and dropped, and [`ExecQueue::join`] returns after that: what
//! the consumer owned is released when `join` returns. This is exact because `stop` sets
//! `STOPPED` with a CAS on `tail` (clearing `IDLE`, and scheduling a turn if it was set): a
//! submit whose CAS came before it has its position below the stopped tail and is run, and
//! any later submit sees `STOPPED` and is refused without reserving a position.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use parking_lot::{Condvar, Mutex};
use slog::Logger;

use crate::error::RaftError;
use crate::pool::{Job, PoolHandle};

pub use self::mpsc::Batch;
use self::mpsc::{Consuming, Queue};

mod mpsc;

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
    /// The most items queued and not yet taken by the consumer; more answer `Busy`.
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

type Consumer<T> = Box<dyn FnMut(&mut Batch<'_, T>) + Send>;

/// What only the queue's current turn touches.
struct Runner<T> {
    consumer: Consumer<T>,
    /// The final call was made; the consumer is a no-op since.
    finished: bool,
}

struct Inner<T> {
    /// Items, the stop flag, and whether a turn is scheduled (see `mpsc`).
    queue: Queue<T>,
    /// Locked for a turn; turns never overlap (one is scheduled at a time), so it is never
    /// contended and only gives the turn its mutable state.
    runner: Mutex<Runner<T>>,
    pool: PoolHandle,
    opts: ExecQueueOptions,
    /// Debug check of the single-turn invariant.
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
        ExecQueue {
            inner: Arc::new(Inner {
                queue: Queue::new(),
                runner: Mutex::new(Runner {
                    consumer: Box::new(consumer),
                    finished: false,
                }),
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
        match self.inner.queue.push(item, self.inner.opts.capacity) {
            Ok(was_idle) => {
                if was_idle {
                    self.schedule();
                }
                Ok(())
            }
            Err((error, item)) => Err(Rejected { error, item }),
        }
    }

    /// Stops the queue: what was submitted runs, later submissions are refused. Idempotent.
    pub fn stop(&self) {
        if self.inner.queue.stop() == Some(true) {
            self.schedule();
        }
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

    /// True once the queue stopped and its final consumer call returned (what `join` waits
    /// for).
    pub fn is_finished(&self) -> bool {
        *self.inner.finished.lock()
    }

    /// True once stop was requested.
    pub fn is_stopped(&self) -> bool {
        self.inner.queue.is_stopped()
    }

    /// Items queued and not yet handed to the consumer.
    pub fn len(&self) -> usize {
        self.inner.queue.len()
    }

    /// True when nothing is queued.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Schedules a turn; called by the one submit or stop that found the queue idle and
    /// cleared that state, so at most one turn is ever scheduled or running.
    fn schedule(&self) {
        let inner = &self.inner;
        if inner.pool.schedule(inner.clone()).is_err() {
            // The pool is gone; nothing will ever run this queue. join() sees the pool stopped.
            slog::warn!(inner.opts.logger, "exec queue scheduled on a stopped pool";
                "queue" => &inner.opts.name);
        }
    }
}

impl<T: Send + 'static> Inner<T> {
    fn call_consumer(&self, consumer: &mut Consumer<T>, mut batch: Batch<'_, T>) {
        if catch_unwind(AssertUnwindSafe(|| consumer(&mut batch))).is_err() {
            slog::error!(self.opts.logger, "exec queue consumer panicked; its batch is dropped";
                "queue" => &self.opts.name);
        }
        // Items the consumer left (it returned early or panicked) are dropped, never re-run:
        // a consumer that refuses its batch must not stall the queue forever.
        for _ in batch {}
    }

    /// The final call, once every item below the stopped tail was taken.
    fn finish(&self, runner: &mut Runner<T>, queue: &mut Consuming<'_, T>) {
        self.call_consumer(&mut runner.consumer, queue.batch(0, true));
        // Drop the consumer (and whatever it owns: files, locks, other queues) before `join`
        // can return, rather than whenever the last handle of this queue goes away.
        runner.consumer = Box::new(|_: &mut Batch<'_, T>| {});
        runner.finished = true;
        *self.finished.lock() = true;
        self.finished_cv.notify_all();
    }

    fn enter(&self) {
        let was_running = self.running.swap(true, Ordering::AcqRel);
        debug_assert!(
            !was_running,
            "queue {} ran on two threads at once",
            self.opts.name
        );
    }
}

impl<T: Send + 'static> Job for Inner<T> {
    fn run(self: Arc<Self>, pool: &PoolHandle) -> bool {
        self.enter();
        let mut runner = self.runner.lock();
        let mut queue = self.queue.consume();
        let max = self.opts.batch_max;
        loop {
            let mut ready = queue.ready(max);
            if ready == 0 {
                ready = queue.sync();
            }
            if ready > 0 {
                self.call_consumer(&mut runner.consumer, queue.batch(max, false));
                if pool.has_waiting() {
                    self.running.store(false, Ordering::Release);
                    return true;
                }
                continue;
            }
            // Nothing below the tail just read: carry out a stop it shows, or go idle.
            if queue.stopped() && !runner.finished {
                self.finish(&mut runner, &mut queue);
            }
            // Cleared first: once idle, a submit on another thread may start the next turn.
            self.running.store(false, Ordering::Release);
            if queue.try_idle() {
                return false;
            }
            self.enter();
        }
    }
}

#[cfg(test)]
mod tests;
