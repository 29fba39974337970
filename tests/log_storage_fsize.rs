//! A real "file too large" (EFBIG) from the kernel, not from the fault-injecting layer: this
//! test binary re-executes itself as a child with `RLIMIT_FSIZE` set to 1 MiB (and SIGXFSZ
//! ignored, so the call fails instead of the process dying). The child fills small segments,
//! then appends an entry whose own segment cannot be preallocated under the limit: the
//! append must fail with a clear `RaftError::Io` that says the disk (limit) is full, refuse
//! further appends, and lose nothing acknowledged; the parent, without the limit, reopens the
//! log and finds exactly the acknowledged entries.

use std::path::Path;
use std::process::Command;

use bytes::Bytes;
use traft::fs::RealFs;
use traft::log_storage::{
    LogStorage, SegmentLogStorage, SegmentLogStorageOptions, SparePreparation,
};
use traft::{EntryType, LogEntry, LogId, RaftError};

const CHILD_ENV: &str = "TRAFT_FSIZE_CHILD_DIR";
const LIMIT: u64 = 1 << 20;

fn open(dir: &Path) -> traft::Result<SegmentLogStorage> {
    let opts = SegmentLogStorageOptions {
        segment_size: 256 << 10,
        logger: traft::logging::discard_logger(),
        spare: SparePreparation::Inline,
        spare_after_bytes: None,
        sync_appends: true,
    };
    SegmentLogStorage::open(RealFs::shared(), dir, opts)
}

fn entry(index: u64, len: usize) -> LogEntry {
    let data: Vec<u8> = (0..len).map(|i| (i as u64 * 7 + index) as u8 | 1).collect();
    LogEntry::new(LogId::new(index, 1), EntryType::Data, Bytes::from(data))
}

#[test]
fn file_too_large_is_a_clear_io_error_and_loses_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "child_appends_until_the_file_size_limit",
            "--nocapture",
        ])
        .env(CHILD_ENV, dir.path())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "child failed:\n{stdout}\n{stderr}");
    let acked: u64 = stdout
        .lines()
        .find_map(|l| l.strip_prefix("CHILD acked="))
        .unwrap_or_else(|| panic!("child did not report:\n{stdout}\n{stderr}"))
        .trim()
        .parse()
        .unwrap();
    assert!(acked > 0);
    let s = open(dir.path()).unwrap();
    assert_eq!(s.last_log_index(), acked);
    for i in 1..=acked {
        assert_eq!(s.get(i), Some(entry(i, 1000)), "entry {i}");
    }
}

/// Runs only as the child of the test above.
#[test]
fn child_appends_until_the_file_size_limit() {
    let Some(dir) = std::env::var_os(CHILD_ENV) else {
        return;
    };
    let dir = Path::new(&dir);
    let limit = libc::rlimit {
        rlim_cur: LIMIT as libc::rlim_t,
        rlim_max: LIMIT as libc::rlim_t,
    };
    // SAFETY: plain libc calls on this (child) process: ignore SIGXFSZ so that exceeding the
    // limit fails the call with EFBIG, and set the file size limit.
    unsafe {
        libc::signal(libc::SIGXFSZ, libc::SIG_IGN);
        assert_eq!(libc::setrlimit(libc::RLIMIT_FSIZE, &limit), 0);
    }
    let s = open(dir).unwrap();
    let mut acked = 0;
    for i in 1..=600 {
        s.append_entries(&[entry(i, 1000)]).unwrap();
        acked = i;
    }
    let err = s.append_entries(&[entry(acked + 1, 2 << 20)]).unwrap_err();
    assert!(err.is_no_space(), "{err}");
    assert!(
        matches!(
            &err,
            RaftError::Io {
                errno: Some(libc::EFBIG),
                ..
            }
        ),
        "{err:?}"
    );
    let again = s.append_entries(&[entry(acked + 1, 10)]).unwrap_err();
    assert!(matches!(again, RaftError::ErrorState { .. }), "{again}");
    drop(s);
    // Still under the limit: the log reopens with everything acknowledged.
    let s = open(dir).unwrap();
    assert_eq!(s.last_log_index(), acked);
    println!("CHILD acked={acked}");
}
