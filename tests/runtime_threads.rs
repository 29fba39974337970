//! Runtime thread ownership, in its own test binary so no other test's threads are counted:
//! the default runtime appears lazily, an explicit runtime starts exactly the threads its
//! options name, and shutdown joins every one of them.

use std::time::Duration;

use traft::testing::wait_for;
use traft::{Runtime, RuntimeOptions};

/// Names of this process's threads that traft owns (`traft-*`), from /proc/self/task.
fn traft_threads() -> Vec<String> {
    let mut names = Vec::new();
    for entry in std::fs::read_dir("/proc/self/task").expect("procfs") {
        let comm = entry.expect("task").path().join("comm");
        if let Ok(name) = std::fs::read_to_string(comm) {
            let name = name.trim().to_string();
            if name.starts_with("traft-") {
                names.push(name);
            }
        }
    }
    names.sort();
    names
}

/// The `traft-*` threads still waiting for work (state `S`, sleeping). A thread that was
/// joined may linger in /proc/self/task for a moment after `join` returned: the kernel wakes
/// the joiner when it clears the thread's id, early in the thread's exit, and the task then
/// shows `R` or `D` until it is dead (`Z`, `X`); so only a sleeping thread is certainly one
/// that was not joined (a pool or IO thread left running sleeps in its wait). One that
/// never stops is caught by the wait for the list to empty, after each check.
fn live_traft_threads() -> Vec<String> {
    let mut live = Vec::new();
    for entry in std::fs::read_dir("/proc/self/task").expect("procfs") {
        let dir = entry.expect("task").path();
        let name = std::fs::read_to_string(dir.join("comm")).unwrap_or_default();
        let stat = std::fs::read_to_string(dir.join("stat")).unwrap_or_default();
        // The state follows the parenthesised command name: "tid (comm) S ...".
        let state = stat
            .rsplit_once(") ")
            .and_then(|(_, rest)| rest.chars().next());
        if name.trim().starts_with("traft-") && state == Some('S') {
            live.push(name.trim().to_string());
        }
    }
    live
}

#[test]
fn runtimes_own_their_named_threads_and_shutdown_joins_them_all() {
    assert!(
        traft_threads().is_empty(),
        "no traft thread before first use: {:?}",
        traft_threads()
    );

    let opts = RuntimeOptions {
        io_threads: 2,
        raft_threads: 3,
        disk_threads: 2,
        fsm_threads: 1,
    };
    let rt = Runtime::new(opts.clone()).unwrap();
    // A thread names itself as it starts: wait for all of them to have done so.
    wait_for(
        "every runtime thread to start",
        Duration::from_secs(5),
        || traft_threads().len() == opts.thread_count(),
        || format!("{:?}", traft_threads()),
    );
    let names = traft_threads();
    assert_eq!(names.len(), opts.thread_count(), "{names:?}");
    for expected in [
        "traft-timer",
        "traft-io-0",
        "traft-io-1",
        "traft-raft-0",
        "traft-raft-1",
        "traft-raft-2",
        "traft-disk-0",
        "traft-disk-1",
        "traft-fsm-0",
    ] {
        assert!(
            names.iter().any(|n| n == expected),
            "{expected} missing from {names:?}"
        );
    }
    rt.shutdown();
    // shutdown joined every thread: none may still be alive the moment it returns.
    assert_eq!(live_traft_threads(), Vec::<String>::new());
    wait_for(
        "explicit runtime threads to exit",
        Duration::from_secs(5),
        || traft_threads().is_empty(),
        || format!("{:?}", traft_threads()),
    );

    // The process-wide default is created lazily, shared, and shut down like any other.
    let g1 = Runtime::global().unwrap();
    let g2 = Runtime::global().unwrap();
    let want = g1.options().thread_count();
    wait_for(
        "default runtime threads",
        Duration::from_secs(5),
        || traft_threads().len() == want,
        || format!("{:?}", traft_threads()),
    );
    drop(g2);
    g1.shutdown();
    assert_eq!(live_traft_threads(), Vec::<String>::new());
    wait_for(
        "default runtime threads to exit",
        Duration::from_secs(5),
        || traft_threads().is_empty(),
        || format!("{:?}", traft_threads()),
    );

    // Dropping the last handle of an explicit runtime also stops its threads.
    let rt = Runtime::new(opts).unwrap();
    drop(rt);
    wait_for(
        "dropped runtime threads to exit",
        Duration::from_secs(5),
        || traft_threads().is_empty(),
        || format!("{:?}", traft_threads()),
    );
}
