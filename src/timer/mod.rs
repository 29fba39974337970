//! The timer thread (`traft-timer`): one binary heap of deadlines, and one-shot callbacks run on
//! that thread when their deadline passes. [`RepeatedTimer`] (braft's RepeatedTimerTask) is
//! built on it.
//!
//! Callbacks must be short and must never block on disk, network or user code: they enqueue
//! an event somewhere and return. A panicking callback is caught and logged; the thread goes
//! on. Cancelling is O(1) (the heap entry is skipped when it surfaces) and cancelled entries
//! are swept once they outnumber live ones, so heavy schedule/cancel traffic (RPC deadlines)
//! keeps the heap bounded.

mod repeated;

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::Arc;
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use parking_lot::{Condvar, Mutex, MutexGuard};

pub use repeated::{RepeatedTimer, RepeatedTimerOptions};

use crate::error::{RaftError, Result};

/// Identifies one scheduled callback, for [`Timer::cancel`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct TimerId(u64);

type Callback = Box<dyn FnOnce() + Send>;

/// Sweep cancelled heap entries once there are at least this many of them.
const SWEEP_MIN: usize = 1024;

struct State {
    /// (deadline, id): ids break ties so equal deadlines fire in scheduling order.
    heap: BinaryHeap<Reverse<(Instant, u64)>>,
    /// Live callbacks by id. Invariant: every key has exactly one heap entry.
    callbacks: HashMap<u64, Callback>,
    next_id: u64,
    stopped: bool,
}

struct Shared {
    state: Mutex<State>,
    cv: Condvar,
}

/// A handle to a timer thread. Cloning shares the thread.
#[derive(Clone)]
pub struct Timer {
    shared: Arc<Shared>,
}

impl Timer {
    /// Starts a timer thread named `traft-timer`; the handle joins it.
    pub(crate) fn start() -> Result<(Timer, JoinHandle<()>)> {
        let shared = Arc::new(Shared {
            state: Mutex::new(State {
                heap: BinaryHeap::new(),
                callbacks: HashMap::new(),
                next_id: 0,
                stopped: false,
            }),
            cv: Condvar::new(),
        });
        let s = shared.clone();
        let handle = thread::Builder::new()
            .name("traft-timer".to_string())
            .spawn(move || run(&s))
            .map_err(|e| RaftError::io("spawn thread", None, &e))?;
        Ok((Timer { shared }, handle))
    }

    /// Runs `f` on the timer thread at `deadline` (at once if it has passed).
    pub fn schedule_at<F>(&self, deadline: Instant, f: F) -> Result<TimerId>
    where
        F: FnOnce() + Send + 'static,
    {
        let mut st = self.shared.state.lock();
        if st.stopped {
            return Err(RaftError::Stopped);
        }
        let id = st.next_id;
        st.next_id += 1;
        let earliest = st.heap.peek().is_none_or(|Reverse((d, _))| deadline < *d);
        st.heap.push(Reverse((deadline, id)));
        st.callbacks.insert(id, Box::new(f));
        drop(st);
        if earliest {
            self.shared.cv.notify_one();
        }
        Ok(TimerId(id))
    }

    /// Runs `f` on the timer thread after `delay`.
    pub fn schedule_after<F>(&self, delay: Duration, f: F) -> Result<TimerId>
    where
        F: FnOnce() + Send + 'static,
    {
        self.schedule_at(deadline_after(delay), f)
    }

    /// Cancels a scheduled callback. True if it had not started and now never will; false if
    /// it already ran, is running, or was cancelled before.
    pub fn cancel(&self, id: TimerId) -> bool {
        let mut st = self.shared.state.lock();
        let removed = st.callbacks.remove(&id.0).is_some();
        if removed {
            sweep_if_needed(&mut st);
        }
        removed
    }

    /// Callbacks scheduled and not yet run or cancelled.
    pub fn pending(&self) -> usize {
        self.shared.state.lock().callbacks.len()
    }

    /// Stops the thread; callbacks not yet run are dropped. The caller joins the thread.
    pub(crate) fn stop(&self) {
        let mut st = self.shared.state.lock();
        st.stopped = true;
        st.callbacks.clear();
        st.heap.clear();
        drop(st);
        self.shared.cv.notify_all();
    }
}

/// `now + after`, or about 136 years from now where that sum would overflow `Instant` (a
/// caller's `Duration::MAX` means "no deadline", not a panic).
pub(crate) fn deadline_after(after: Duration) -> Instant {
    let now = Instant::now();
    now.checked_add(after)
        .unwrap_or_else(|| now + Duration::from_secs(u64::from(u32::MAX)))
}

fn sweep_if_needed(st: &mut MutexGuard<'_, State>) {
    let stale = st.heap.len() - st.callbacks.len();
    if stale >= SWEEP_MIN && stale > st.callbacks.len() {
        let State {
            heap, callbacks, ..
        } = &mut **st;
        heap.retain(|Reverse((_, id))| callbacks.contains_key(id));
    }
}

fn run(shared: &Shared) {
    let mut st = shared.state.lock();
    loop {
        if st.stopped {
            return;
        }
        let Some(&Reverse((deadline, id))) = st.heap.peek() else {
            shared.cv.wait(&mut st);
            continue;
        };
        if !st.callbacks.contains_key(&id) {
            st.heap.pop(); // cancelled
            continue;
        }
        if deadline > Instant::now() {
            shared.cv.wait_until(&mut st, deadline);
            continue;
        }
        st.heap.pop();
        let Some(cb) = st.callbacks.remove(&id) else {
            continue;
        };
        MutexGuard::unlocked(&mut st, || {
            if catch_unwind(AssertUnwindSafe(cb)).is_err() {
                log::error!("traft-timer: a timer callback panicked; the timer thread goes on");
            }
        });
    }
}

#[cfg(test)]
mod tests;
