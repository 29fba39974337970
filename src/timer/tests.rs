//! Timer and RepeatedTimer contract tests. The lateness bound is checked in its own test
//! binary (tests/timer_lateness.rs) so that other tests do not load the machine meanwhile.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;

use super::*;
use crate::testing::wait_for;
use crate::types::Rng;

struct TestTimer {
    timer: Timer,
    thread: Option<JoinHandle<()>>,
}

impl TestTimer {
    fn new() -> TestTimer {
        let (timer, thread) = Timer::start().unwrap();
        TestTimer {
            timer,
            thread: Some(thread),
        }
    }
}

impl Drop for TestTimer {
    fn drop(&mut self) {
        self.timer.stop();
        if let Some(t) = self.thread.take() {
            t.join().unwrap();
        }
    }
}

fn repeated(
    t: &Timer,
    ms: u64,
    randomized: bool,
    f: impl Fn() + Send + Sync + 'static,
) -> RepeatedTimer {
    let opts = RepeatedTimerOptions {
        randomized,
        seed: 1,
        ..RepeatedTimerOptions::new("test", ms)
    };
    RepeatedTimer::new(t, opts, f)
}

fn counter() -> (Arc<AtomicU64>, impl Fn() + Send + Sync + 'static) {
    let c = Arc::new(AtomicU64::new(0));
    let c2 = c.clone();
    (c, move || {
        c2.fetch_add(1, Ordering::SeqCst);
    })
}

#[test]
fn ten_thousand_timers_in_one_heap_fire_in_deadline_order() {
    let t = TestTimer::new();
    let fired = Arc::new(Mutex::new(Vec::with_capacity(10_000)));
    let base = Instant::now() + Duration::from_millis(50);
    let mut rng = Rng::new(99);
    let mut expected = Vec::new();
    for i in 0..10_000u64 {
        let deadline = base + Duration::from_micros(rng.range(0, 200_000));
        expected.push((deadline, i));
        let f = fired.clone();
        t.timer
            .schedule_at(deadline, move || f.lock().push(i))
            .unwrap();
    }
    expected.sort();
    let want: Vec<u64> = expected.iter().map(|(_, i)| *i).collect();
    wait_for(
        "all timers to fire",
        Duration::from_secs(10),
        || fired.lock().len() == 10_000,
        || format!("{} fired", fired.lock().len()),
    );
    assert_eq!(*fired.lock(), want);
}

#[test]
fn a_cancelled_timer_never_runs() {
    let t = TestTimer::new();
    let (count, f) = counter();
    let id = t
        .timer
        .schedule_after(Duration::from_millis(20), f)
        .unwrap();
    assert!(t.timer.cancel(id));
    assert!(!t.timer.cancel(id), "cancelling twice reports false");
    let (count2, f2) = counter();
    t.timer
        .schedule_after(Duration::from_millis(40), f2)
        .unwrap();
    wait_for(
        "later timer",
        Duration::from_secs(5),
        || count2.load(Ordering::SeqCst) == 1,
        String::new,
    );
    assert_eq!(count.load(Ordering::SeqCst), 0);
}

#[test]
fn heavy_schedule_and_cancel_keeps_the_heap_bounded() {
    let t = TestTimer::new();
    for _ in 0..100_000 {
        let id = t
            .timer
            .schedule_after(Duration::from_secs(60), || {})
            .unwrap();
        t.timer.cancel(id);
    }
    let heap_len = t.timer.shared.state.lock().heap.len();
    assert!(
        heap_len <= 2 * SWEEP_MIN,
        "heap kept {heap_len} dead entries"
    );
}

#[test]
fn repeated_timer_fires_repeatedly_once_started() {
    let t = TestTimer::new();
    let (count, f) = counter();
    let rt = repeated(&t.timer, 5, false, f);
    std::thread::sleep(Duration::from_millis(30));
    assert_eq!(count.load(Ordering::SeqCst), 0, "init leaves it stopped");
    rt.start();
    wait_for(
        "3 firings",
        Duration::from_secs(5),
        || count.load(Ordering::SeqCst) >= 3,
        || format!("{} firings", count.load(Ordering::SeqCst)),
    );
}

#[test]
fn stop_prevents_the_next_firing() {
    let t = TestTimer::new();
    let (count, f) = counter();
    let rt = repeated(&t.timer, 30, false, f);
    rt.start();
    std::thread::sleep(Duration::from_millis(10));
    rt.stop();
    std::thread::sleep(Duration::from_millis(100));
    assert_eq!(count.load(Ordering::SeqCst), 0);
    assert!(!rt.is_running());
}

#[test]
fn reset_reschedules_from_now() {
    let t = TestTimer::new();
    let (count, f) = counter();
    let rt = repeated(&t.timer, 60, false, f);
    rt.start();
    let started = Instant::now();
    // Keep resetting, as a follower hearing heartbeats does: it must never fire.
    while started.elapsed() < Duration::from_millis(300) {
        rt.reset();
        std::thread::sleep(Duration::from_millis(10));
    }
    assert_eq!(count.load(Ordering::SeqCst), 0);
    let last_reset = Instant::now();
    rt.reset();
    wait_for(
        "firing after resets stop",
        Duration::from_secs(5),
        || count.load(Ordering::SeqCst) >= 1,
        String::new,
    );
    assert!(last_reset.elapsed() >= Duration::from_millis(60));
    rt.reset_ms(10);
    assert_eq!(rt.timeout_ms(), 10);
}

#[test]
fn randomized_periods_lie_in_t_to_2t() {
    let t = TestTimer::new();
    let stamps = Arc::new(Mutex::new(Vec::new()));
    let s = stamps.clone();
    let rt = repeated(&t.timer, 20, true, move || s.lock().push(Instant::now()));
    let start = Instant::now();
    rt.start();
    wait_for(
        "10 firings",
        Duration::from_secs(10),
        || stamps.lock().len() >= 10,
        String::new,
    );
    rt.destroy();
    let stamps = stamps.lock();
    let mut prev = start;
    let mut distinct = std::collections::BTreeSet::new();
    for s in stamps.iter() {
        let gap = s.duration_since(prev);
        assert!(
            gap >= Duration::from_millis(20),
            "gap {gap:?} shorter than T"
        );
        // 2T plus scheduling slack on a loaded test machine.
        assert!(
            gap < Duration::from_millis(40 + 25),
            "gap {gap:?} longer than 2T"
        );
        distinct.insert(gap.as_millis());
        prev = *s;
    }
    assert!(
        distinct.len() > 2,
        "periods are not randomised: {distinct:?}"
    );
}

#[test]
fn destroy_raced_from_many_threads_leaves_no_callback_running_or_to_come() {
    let t = TestTimer::new();
    for round in 0..20u64 {
        let in_cb = Arc::new(AtomicBool::new(false));
        let (count, _) = counter();
        let (c, flag) = (count.clone(), in_cb.clone());
        let rt = Arc::new(repeated(&t.timer, 1, false, move || {
            flag.store(true, Ordering::SeqCst);
            std::thread::sleep(Duration::from_micros(300));
            c.fetch_add(1, Ordering::SeqCst);
            flag.store(false, Ordering::SeqCst);
        }));
        rt.start();
        std::thread::scope(|s| {
            for th in 0..8u64 {
                let (rt, in_cb) = (rt.clone(), in_cb.clone());
                s.spawn(move || {
                    let mut rng = Rng::new(round * 100 + th);
                    for _ in 0..20 {
                        match rng.range(0, 4) {
                            0 => rt.start(),
                            1 => rt.stop(),
                            2 => rt.reset(),
                            _ => std::thread::sleep(Duration::from_micros(rng.range(0, 500))),
                        }
                    }
                    rt.destroy();
                    assert!(
                        !in_cb.load(Ordering::SeqCst),
                        "callback running after destroy returned"
                    );
                });
            }
        });
        let after = count.load(Ordering::SeqCst);
        rt.start(); // no effect once destroyed
        std::thread::sleep(Duration::from_millis(10));
        assert_eq!(
            count.load(Ordering::SeqCst),
            after,
            "round {round}: fired after destroy"
        );
    }
}

#[test]
fn destroy_from_its_own_callback_returns_and_ends_the_timer() {
    let t = TestTimer::new();
    let slot: Arc<Mutex<Option<Arc<RepeatedTimer>>>> = Arc::new(Mutex::new(None));
    let (count, _) = counter();
    let (s, c) = (slot.clone(), count.clone());
    let rt = Arc::new(repeated(&t.timer, 2, false, move || {
        c.fetch_add(1, Ordering::SeqCst);
        let me = s.lock().clone();
        if let Some(me) = me {
            me.destroy();
        }
    }));
    *slot.lock() = Some(rt.clone());
    rt.start();
    wait_for(
        "first firing",
        Duration::from_secs(5),
        || count.load(Ordering::SeqCst) >= 1,
        String::new,
    );
    std::thread::sleep(Duration::from_millis(20));
    assert_eq!(count.load(Ordering::SeqCst), 1);
    slot.lock().take();
}

#[test]
fn a_panicking_callback_does_not_stop_the_timer_thread() {
    let t = TestTimer::new();
    t.timer
        .schedule_after(Duration::from_millis(1), || panic!("bad callback"))
        .unwrap();
    let (count, f) = counter();
    t.timer.schedule_after(Duration::from_millis(5), f).unwrap();
    wait_for(
        "later callback",
        Duration::from_secs(5),
        || count.load(Ordering::SeqCst) == 1,
        String::new,
    );
}

#[test]
fn a_delay_of_duration_max_schedules_far_away_instead_of_panicking() {
    let far = deadline_after(Duration::MAX);
    assert!(far > Instant::now() + Duration::from_secs(100 * 365 * 24 * 3600));
    let t = TestTimer::new();
    let id = t.timer.schedule_after(Duration::MAX, || {}).unwrap();
    assert!(t.timer.cancel(id), "scheduled, not run");
}

#[test]
fn a_first_random_timer_fires_first_within_one_period_then_every_period() {
    const T: u64 = 1000;
    // A seed whose first draw is short, so that "sooner than T" shows.
    let seed = (0..).find(|s| Rng::new(*s).range(1, T + 1) < 300).unwrap();
    let t = TestTimer::new();
    let fired = Arc::new(Mutex::new(Vec::new()));
    let f = fired.clone();
    let opts = RepeatedTimerOptions {
        first_random: true,
        seed,
        ..RepeatedTimerOptions::new("first_random", T)
    };
    let timer = RepeatedTimer::new(&t.timer, opts, move || f.lock().push(Instant::now()));
    let started = Instant::now();
    timer.start();
    let state = fired.clone();
    wait_for(
        "two firings",
        Duration::from_secs(5),
        || fired.lock().len() >= 2,
        || format!("{:?}", state.lock()),
    );
    timer.destroy();
    let at = fired.lock().clone();
    assert!(
        at[0] - started < Duration::from_millis(T * 7 / 10),
        "first firing after {:?}, not drawn below T",
        at[0] - started
    );
    assert!(at[1] - at[0] >= Duration::from_millis(T), "then every T");
}
