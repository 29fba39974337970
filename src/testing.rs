//! Test helpers shared by unit tests, integration tests and benches.
//!
//! Tests never sleep and hope: they wait for a condition with a deadline, and on timeout fail
//! with a description of the state they were waiting on (every node's term, role, commit...).

use std::time::{Duration, Instant};

/// Polls `cond` until it holds or `timeout` passes. On timeout, panics with `what` and the
/// output of `state`, so the failure says what was expected and what was there instead.
///
/// # Panics
/// When the deadline passes; this is a test assertion.
#[track_caller]
pub fn wait_for<C, S>(what: &str, timeout: Duration, mut cond: C, state: S)
where
    C: FnMut() -> bool,
    S: Fn() -> String,
{
    if let Err(elapsed) = poll_until(timeout, &mut cond) {
        panic!(
            "timed out after {elapsed:?} waiting for {what}\n--- state ---\n{}",
            state()
        );
    }
}

/// Polls `cond` until it holds (Ok with the time it took) or `timeout` passes (Err with the
/// time waited). Polls quickly at first, then every few milliseconds.
pub fn poll_until<C>(timeout: Duration, mut cond: C) -> Result<Duration, Duration>
where
    C: FnMut() -> bool,
{
    let start = Instant::now();
    let mut pause = Duration::from_micros(50);
    loop {
        if cond() {
            return Ok(start.elapsed());
        }
        let elapsed = start.elapsed();
        if elapsed >= timeout {
            return Err(elapsed);
        }
        std::thread::sleep(pause.min(timeout - elapsed));
        pause = (pause * 2).min(Duration::from_millis(5));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wait_for_returns_once_the_condition_holds() {
        let mut n = 0;
        wait_for(
            "n to reach 3",
            Duration::from_secs(1),
            || {
                n += 1;
                n >= 3
            },
            String::new,
        );
    }

    #[test]
    fn wait_for_fails_with_the_state_printed() {
        let r = std::panic::catch_unwind(|| {
            wait_for(
                "never",
                Duration::from_millis(20),
                || false,
                || "node 1: term 3".into(),
            );
        });
        let msg = r.unwrap_err();
        let msg = msg.downcast_ref::<String>().unwrap();
        assert!(
            msg.contains("waiting for never") && msg.contains("node 1: term 3"),
            "{msg}"
        );
    }
}
