//! Timer lateness on an otherwise idle process (its own test binary, one test): one-shot
//! timers fire within 10 ms of their deadline at p99. The measured figures are printed
//! (`cargo test --test timer_lateness -- --nocapture`) and recorded in docs/BENCHMARKS.md.

use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use traft::testing::wait_for;
use traft::types::Rng;
use traft::{Runtime, RuntimeOptions};

#[test]
fn timers_fire_within_10ms_of_their_deadline_at_p99() {
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
    l.sort();
    let p50 = l[N / 2];
    let p99 = l[N * 99 / 100];
    let max = l[N - 1];
    println!("timer lateness over {N} timers: p50 {p50:?} p99 {p99:?} max {max:?}");
    assert!(
        p99 < Duration::from_millis(10),
        "p99 lateness {p99:?} (p50 {p50:?}, max {max:?})"
    );
    rt.shutdown();
}
