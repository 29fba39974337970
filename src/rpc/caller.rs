//! [`Caller`]: who makes calls, and where their completions run.
//!
//! A call's `done` closure never runs on an IO or timer thread: the transport wraps it with
//! its result in a [`Completion`] and hands that to the caller's [`CompletionSink`], normally
//! an [`ExecQueue`] on the raft pool, so the completions of one caller run in order, one at a
//! time. A caller is also a lane of every connection it uses: its requests leave in the order
//! it made them, and take turns with other callers' requests.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use bytes::Bytes;

use crate::error::Result;
use crate::exec_queue::{Batch, ExecQueue, ExecQueueOptions};
use crate::pool::PoolHandle;

/// The closure a call completes with: the response body, or why there is none.
pub type DoneFn = Box<dyn FnOnce(Result<Bytes>) + Send>;

/// A finished call waiting to run its `done` closure on the caller's queue.
pub struct Completion {
    done: DoneFn,
    result: Result<Bytes>,
}

impl Completion {
    pub(crate) fn new(done: DoneFn, result: Result<Bytes>) -> Completion {
        Completion { done, result }
    }

    /// The call's outcome.
    pub fn result(&self) -> &Result<Bytes> {
        &self.result
    }

    /// Runs the `done` closure with the outcome. Call it from the caller's queue.
    pub fn run(self) {
        (self.done)(self.result)
    }
}

/// Where completions go. Implemented for every `ExecQueue<T>` whose items can be made from a
/// [`Completion`] (so a node can route them into its own event queue).
pub trait CompletionSink: Send + Sync + 'static {
    /// Queues `completion`; never runs it on the calling thread. An error means the sink is
    /// gone (stopped) or full; the completion is then dropped and the drop is logged.
    fn deliver(&self, completion: Completion) -> Result<()>;
}

impl<T: From<Completion> + Send + 'static> CompletionSink for ExecQueue<T> {
    fn deliver(&self, completion: Completion) -> Result<()> {
        self.submit(T::from(completion)).map_err(|r| r.error)
    }
}

/// One caller: an identity (its lane on every connection) and the sink its completions go
/// to. Cheap to clone; clones are the same caller.
#[derive(Clone)]
pub struct Caller {
    id: u64,
    sink: Arc<dyn CompletionSink>,
}

impl Caller {
    /// A caller whose completions go to `sink`.
    pub fn new(sink: Arc<dyn CompletionSink>) -> Caller {
        static NEXT_ID: AtomicU64 = AtomicU64::new(1);
        Caller {
            id: NEXT_ID.fetch_add(1, Ordering::Relaxed),
            sink,
        }
    }

    /// A caller with its own unbounded queue on `pool` that runs each completion in order.
    /// A panicking `done` is caught and logged; the completions after it still run.
    pub fn start(pool: &PoolHandle, name: &str) -> (Caller, ExecQueue<Completion>) {
        let opts = ExecQueueOptions::new(name);
        let logger = opts.logger.clone();
        let queue = ExecQueue::start(pool, opts, move |batch: &mut Batch<'_, Completion>| {
            for c in batch {
                if catch_unwind(AssertUnwindSafe(|| c.run())).is_err() {
                    slog::error!(logger, "a call's done closure panicked; the queue goes on");
                }
            }
        });
        (Caller::new(Arc::new(queue.clone())), queue)
    }

    /// The caller's identity, unique in the process (its lane key).
    pub fn id(&self) -> u64 {
        self.id
    }

    /// Hands a completion to the sink, logging when the sink refuses it.
    pub(crate) fn complete(
        sink: &Arc<dyn CompletionSink>,
        logger: &slog::Logger,
        done: DoneFn,
        result: Result<Bytes>,
    ) {
        if let Err(e) = sink.deliver(Completion::new(done, result)) {
            slog::debug!(logger, "completion dropped: the caller's queue refused it";
                "error" => %e);
        }
    }

    pub(crate) fn sink(&self) -> &Arc<dyn CompletionSink> {
        &self.sink
    }
}
