//! Timer lateness on an otherwise idle process (its own test binary): one-shot timers and
//! `RepeatedTimer`s fire within 10 ms of their deadline at p99. The measured figures are
//! printed (`cargo test --all-features --test timer_lateness -- --nocapture`) and recorded
//! in docs/BENCHMARKS.md. The two tests share the process's cores, so each takes a lock to
//! run alone.

use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use traft::testing::wait_for;
use traft::timer::{RepeatedTimer, RepeatedTimerOptions};
use traft::types::Rng;
use traft::{Runtime, RuntimeOptions};

/// One test at a time: lateness is measured on an otherwise idle process.
static ALONE: Mutex<()> = Mutex::new(());

/// p50, p99 and max of `late`.
fn percentiles(late: &mut [Duration]) -> (Duration, Duration, Duration) {
    late.sort();
    let n = late.len();
    (late[n / 2], late[n * 99 / 100], late[n - 1])
}

/// braft's RepeatedTimerTask contract: each period starts when the previous callback
/// returned; 20 timers of 10-40 ms periods fire for a second, and every firing's lateness
/// (its time minus the end of the previous callback plus the period) is measured.
#[test]
fn repeated_timers_fire_within_10ms_of_their_deadline_at_p99() {
    let _alone = ALONE.lock();
    let rt = Runtime::new(RuntimeOptions::default()).unwrap();
    let late = Arc::new(Mutex::new(Vec::new()));
    let mut timers = Vec::new();
    for k in 0..20u64 {
        let period = Duration::from_millis(10 + k * 30 / 19);
        let (late, last_end) = (late.clone(), Arc::new(Mutex::new(None::<Instant>)));
        let opts = RepeatedTimerOptions::new(&format!("lateness-{k}"), period.as_millis() as u64);
        let t = RepeatedTimer::new(rt.timer(), opts, move || {
            let now = Instant::now();
            let mut end = last_end.lock();
            if let Some(prev) = *end {
                late.lock()
                    .push(now.saturating_duration_since(prev + period));
            }
            // The timer re-arms right after this returns: the next period starts here.
            *end = Some(Instant::now());
        });
        t.start();
        timers.push(t);
    }
    wait_for(
        "600 firings",
        Duration::from_secs(10),
        || late.lock().len() >= 600,
        || format!("{} firings", late.lock().len()),
    );
    for t in &timers {
        t.destroy();
    }
    let mut l = late.lock().clone();
    let (p50, p99, max) = percentiles(&mut l);
    println!(
        "repeated timer lateness over {} firings: p50 {p50:?} p99 {p99:?} max {max:?}",
        l.len()
    );
    assert!(
        p99 < Duration::from_millis(10),
        "p99 lateness {p99:?} (max {max:?})"
    );
    rt.shutdown();
}

#[test]
fn timers_fire_within_10ms_of_their_deadline_at_p99() {
    let _alone = ALONE.lock();
    let rt = Runtime::new(RuntimeOptions {
        io_threads: 1,
        raft_threads: 1,
        disk_threads: 1,
        fsm_threads: 1,
    })
    .unwrap();
    const N: usize = 500;
    let late = Arc::new(Mutex::new(Vec::with_capacity(N)));
    let mut rng = Rng::new(5);
    for _ in 0..N {
        let deadline = Instant::now() + Duration::from_micros(rng.range(1_000, 1_000_000));
        let late = late.clone();
        rt.timer()
            .schedule_at(deadline, move || {
                late.lock().push(Instant::now().duration_since(deadline))
            })
            .unwrap();
    }
    wait_for(
        "all timers",
        Duration::from_secs(10),
        || late.lock().len() == N,
        || format!("{} of {N} fired", late.lock().len()),
    );
    let mut l = late.lock().clone();
    let (p50, p99, max) = percentiles(&mut l);
    println!("timer lateness over {N} timers: p50 {p50:?} p99 {p99:?} max {max:?}");
    assert!(
        p99 < Duration::from_millis(10),
        "p99 lateness {p99:?} (p50 {p50:?}, max {max:?})"
    );
    rt.shutdown();
}
