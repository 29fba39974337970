//! [`RepeatedTimer`]: braft's RepeatedTimerTask on the timer thread.
//!
//! Contract: created stopped (`init`); `start` arms it; each firing runs the callback on the
//! timer thread and re-arms it unless it was stopped meanwhile; `stop` prevents the next
//! firing; `reset` re-arms from now (with a new timeout for `reset_ms`); `destroy` returns only
//! when no callback is running (unless called from that callback) and none will run after.
//! Timeouts are optionally randomised in `[T, 2T)` from a seeded [`Rng`].
//!
//! Lock order: repeated-timer state -> timer heap. The timer thread never holds its heap lock
//! while calling in here, and the callback runs with no lock held.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::{Arc, Weak};
use std::thread::{self, ThreadId};
use std::time::Duration;

use parking_lot::{Condvar, Mutex};

use crate::timer::{Timer, TimerId};
use crate::types::Rng;

/// Settings of a [`RepeatedTimer`].
#[derive(Clone, Debug)]
pub struct RepeatedTimerOptions {
    /// For log lines (`"election"`, `"vote"`, ...).
    pub name: String,
    /// The period T.
    pub timeout_ms: u64,
    /// Draw each period from `[T, 2T)` instead of using T.
    pub randomized: bool,
    /// Draw the first period after each `start` from `[1, T]` (braft's snapshot timer):
    /// timers of many nodes started together then do not fire together ever after.
    pub first_random: bool,
    /// Seed of the jitter.
    pub seed: u64,
}

impl RepeatedTimerOptions {
    /// A timer of period `timeout_ms`, without jitter.
    pub fn new(name: &str, timeout_ms: u64) -> RepeatedTimerOptions {
        RepeatedTimerOptions {
            name: name.into(),
            timeout_ms,
            randomized: false,
            first_random: false,
            seed: 0,
        }
    }
}

struct St {
    timeout_ms: u64,
    rng: Rng,
    stopped: bool,
    destroyed: bool,
    /// The armed one-shot, if any.
    pending: Option<TimerId>,
    /// Bumped whenever the armed one-shot is replaced or disarmed; a firing whose generation
    /// is not current is stale and does nothing.
    generation: u64,
    /// The thread running the callback right now, if any.
    running: Option<ThreadId>,
    /// Armed since the last `start`: the first period is drawn only once.
    armed_since_start: bool,
}

struct Inner {
    timer: Timer,
    opts: RepeatedTimerOptions,
    callback: Box<dyn Fn() + Send + Sync>,
    st: Mutex<St>,
    /// Signalled when a callback returns, for `destroy`.
    idle: Condvar,
}

/// A periodic timer; see the module docs for its contract. Dropping it destroys it.
pub struct RepeatedTimer {
    inner: Arc<Inner>,
}

impl RepeatedTimer {
    /// `init`: a stopped timer that will run `callback` on `timer`'s thread once started.
    pub fn new<F>(timer: &Timer, opts: RepeatedTimerOptions, callback: F) -> RepeatedTimer
    where
        F: Fn() + Send + Sync + 'static,
    {
        let st = St {
            timeout_ms: opts.timeout_ms,
            rng: Rng::new(opts.seed),
            stopped: true,
            destroyed: false,
            pending: None,
            generation: 0,
            running: None,
            armed_since_start: false,
        };
        RepeatedTimer {
            inner: Arc::new(Inner {
                timer: timer.clone(),
                opts,
                callback: Box::new(callback),
                st: Mutex::new(st),
                idle: Condvar::new(),
            }),
        }
    }

    /// Arms the timer if it is stopped. No effect once destroyed.
    pub fn start(&self) {
        let mut st = self.inner.st.lock();
        if st.destroyed || !st.stopped {
            return;
        }
        st.stopped = false;
        st.armed_since_start = false;
        if st.running.is_none() {
            Inner::arm(&self.inner, &mut st);
        }
        // Else the running callback re-arms it when it returns.
    }

    /// Disarms the timer: the next firing does not happen.
    pub fn stop(&self) {
        let mut st = self.inner.st.lock();
        if st.destroyed || st.stopped {
            return;
        }
        st.stopped = true;
        self.inner.disarm(&mut st);
    }

    /// Re-arms a started timer to fire one period from now. No effect when stopped.
    pub fn reset(&self) {
        let mut st = self.inner.st.lock();
        if st.destroyed || st.stopped {
            return;
        }
        self.inner.disarm(&mut st);
        Inner::arm(&self.inner, &mut st);
    }

    /// Sets the period to `timeout_ms` and, if started, re-arms from now.
    pub fn reset_ms(&self, timeout_ms: u64) {
        let mut st = self.inner.st.lock();
        st.timeout_ms = timeout_ms;
        if st.destroyed || st.stopped {
            return;
        }
        self.inner.disarm(&mut st);
        Inner::arm(&self.inner, &mut st);
    }

    /// Stops the timer for good. Returns when no callback of it is running and none will run
    /// again; called from its own callback, it returns at once (the callback is the last).
    pub fn destroy(&self) {
        let mut st = self.inner.st.lock();
        st.destroyed = true;
        st.stopped = true;
        self.inner.disarm(&mut st);
        let me = thread::current().id();
        while st.running.is_some_and(|t| t != me) {
            self.inner.idle.wait(&mut st);
        }
    }

    /// True while started (not stopped, not destroyed).
    pub fn is_running(&self) -> bool {
        let st = self.inner.st.lock();
        !st.stopped && !st.destroyed
    }

    /// The current period T in milliseconds.
    pub fn timeout_ms(&self) -> u64 {
        self.inner.st.lock().timeout_ms
    }
}

impl Drop for RepeatedTimer {
    fn drop(&mut self) {
        self.destroy();
    }
}

impl Inner {
    fn arm(this: &Arc<Inner>, st: &mut St) {
        let t = st.timeout_ms;
        let delay_ms = if this.opts.first_random && !st.armed_since_start {
            st.rng.range(1, t.saturating_add(1).max(2))
        } else if this.opts.randomized {
            st.rng.range(t, t.saturating_mul(2).max(t + 1))
        } else {
            t
        };
        st.armed_since_start = true;
        st.generation += 1;
        let generation = st.generation;
        let weak: Weak<Inner> = Arc::downgrade(this);
        let scheduled = this
            .timer
            .schedule_after(Duration::from_millis(delay_ms), move || {
                if let Some(inner) = weak.upgrade() {
                    inner.fire(generation);
                }
            });
        // Fails only once the runtime is shut down: then nothing fires, as after a stop.
        st.pending = scheduled.ok();
    }

    fn disarm(&self, st: &mut St) {
        st.generation += 1;
        if let Some(id) = st.pending.take() {
            self.timer.cancel(id);
        }
    }

    fn fire(self: Arc<Inner>, generation: u64) {
        let mut st = self.st.lock();
        if st.generation != generation || st.stopped || st.destroyed {
            return;
        }
        st.pending = None;
        st.running = Some(thread::current().id());
        drop(st);
        if catch_unwind(AssertUnwindSafe(|| (self.callback)())).is_err() {
            log::error!("traft timer {}: callback panicked", self.opts.name);
        }
        let mut st = self.st.lock();
        st.running = None;
        self.idle.notify_all();
        if !st.stopped && !st.destroyed && st.pending.is_none() {
            Inner::arm(&self, &mut st);
        }
    }
}
