//! The node's clock and its one-shot timers, one per core [`TimerKind`] (DESIGN.md section 4,
//! step 1): the core keeps its deadlines and asks for a wake-up with `SetTimer`/`StopTimer`;
//! each firing only enqueues `Timeout(kind)` on the node's serial queue.
//!
//! Firing callbacks run on the timer thread and must not block: they submit to an ExecQueue
//! and return. A stale or early firing is harmless (the core checks its own deadlines), so a
//! cancel that loses the race with a firing needs no care.

use std::sync::OnceLock;
use std::time::{Duration, Instant};

use parking_lot::Mutex;

use crate::core::TimerKind;
use crate::timer::{Timer, TimerId};

/// The origin of every node's millisecond clock (monotonic; shared so that all nodes of a
/// process, and the timers, agree on it).
fn origin() -> Instant {
    static ORIGIN: OnceLock<Instant> = OnceLock::new();
    *ORIGIN.get_or_init(Instant::now)
}

/// Milliseconds on the monotonic clock the cores run on.
pub fn now_ms() -> u64 {
    origin().elapsed().as_millis() as u64
}

/// The instant of a core deadline.
pub fn instant_of(at_ms: u64) -> Instant {
    origin() + Duration::from_millis(at_ms)
}

/// One armed one-shot per timer kind.
pub struct CoreTimers {
    timer: Timer,
    /// Invariant: at most one armed one-shot per kind; the id here is the armed one.
    armed: [Mutex<Option<TimerId>>; TimerKind::ALL.len()],
    fire: Box<dyn Fn(TimerKind) + Send + Sync>,
}

impl CoreTimers {
    /// Timers on `timer` whose firings call `fire` (which must only enqueue).
    pub fn new(timer: Timer, fire: impl Fn(TimerKind) + Send + Sync + 'static) -> CoreTimers {
        CoreTimers {
            timer,
            armed: Default::default(),
            fire: Box::new(fire),
        }
    }

    /// Arms `kind` to fire at `at_ms`, replacing its previous deadline.
    pub fn set(self: &std::sync::Arc<Self>, kind: TimerKind, at_ms: u64) {
        let mut slot = self.armed[kind.index()].lock();
        if let Some(old) = slot.take() {
            self.timer.cancel(old);
        }
        let me = std::sync::Arc::downgrade(self);
        // Fails only once the runtime shut down; then the node is stopping anyway.
        *slot = self
            .timer
            .schedule_at(instant_of(at_ms), move || {
                if let Some(t) = me.upgrade() {
                    (t.fire)(kind);
                }
            })
            .ok();
    }

    /// Disarms `kind`.
    pub fn stop(&self, kind: TimerKind) {
        // Bound first: in an `if let` the guard would live through the cancel (edition 2021).
        let old = self.armed[kind.index()].lock().take();
        if let Some(old) = old {
            self.timer.cancel(old);
        }
    }

    /// Disarms every kind (shutdown).
    pub fn stop_all(&self) {
        for kind in TimerKind::ALL {
            self.stop(kind);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runtime::{Runtime, RuntimeOptions};
    use crate::testing::wait_for;
    use std::sync::Arc;

    #[test]
    fn a_rearmed_timer_fires_once_at_its_last_deadline() {
        let rt = Runtime::new(RuntimeOptions {
            io_threads: 1,
            raft_threads: 1,
            disk_threads: 1,
            fsm_threads: 1,
        })
        .unwrap();
        let fired = Arc::new(Mutex::new(Vec::new()));
        let f = fired.clone();
        let t = Arc::new(CoreTimers::new(rt.timer().clone(), move |k| {
            f.lock().push((k, now_ms()))
        }));
        let now = now_ms();
        t.set(TimerKind::Election, now + 20);
        t.set(TimerKind::Election, now + 60);
        t.set(TimerKind::Heartbeat, now + 10);
        t.stop(TimerKind::Heartbeat);
        wait_for(
            "election timer",
            Duration::from_secs(5),
            || !fired.lock().is_empty(),
            String::new,
        );
        std::thread::sleep(Duration::from_millis(80));
        let got = fired.lock().clone();
        assert_eq!(got.len(), 1, "{got:?}");
        assert_eq!(got[0].0, TimerKind::Election);
        assert!(
            got[0].1 >= now + 60,
            "fired at {} before its deadline {}",
            got[0].1,
            now + 60
        );
        rt.shutdown();
    }
}
