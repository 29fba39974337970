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
    // Joined threads leave /proc/self/task as they exit; join has returned, so they are gone.
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
