//! End to end through the LogManager and a SegmentLogStorage on the fault-injecting file
//! layer: random appends and truncations, then a crash at a random moment while the disk
//! queue is busy. Every LogId reported durable must be on disk after recovery, and what is on
//! disk must be a prefix of the log the LogManager was asked to build (acknowledged writes
//! lost: must be 0). `TRAFT_LM_CRASH_SEEDS=N` runs more seeds (default 8); a failure names
//! its seed.

use std::sync::Arc;

use super::tests::harness;
use super::*;
use crate::fs::{CrashMode, FaultFs};
use crate::log_storage::segment::tests::{entry, tempdir};
use crate::log_storage::{SegmentLogStorage, SegmentLogStorageOptions};
use crate::types::Rng;

fn open(fs: &FaultFs, dir: &std::path::Path) -> SegmentLogStorage {
    let opts = SegmentLogStorageOptions {
        segment_size: 16 << 10,
        logger: crate::logging::discard_logger(),
        spare: crate::log_storage::SparePreparation::Inline,
        spare_after_bytes: None,
        sync_appends: true,
    };
    SegmentLogStorage::open(fs.shared(), dir, opts).unwrap()
}

fn append(lm: &LogManager, log: &mut Vec<LogId>, term: u64, rng: &mut Rng) {
    let n = 1 + rng.next_u64() % 5;
    let batch: Vec<LogEntry> = (0..n)
        .map(|i| {
            entry(
                log.len() as u64 + 1 + i,
                term,
                (rng.next_u64() % 700) as usize,
            )
        })
        .collect();
    log.extend(batch.iter().map(|e| e.id));
    lm.append_entries(batch).unwrap();
}

fn run(seed: u64) {
    let dir = tempdir();
    let fs = FaultFs::new(dir.path(), seed).unwrap();
    let storage = Arc::new(open(&fs, dir.path()));
    let h = harness(storage.clone());
    let mut rng = Rng::new(seed);
    let (mut log, mut term) = (Vec::new(), 1);
    for _ in 0..150 {
        let roll = rng.next_u64() % 100;
        let committed = h.lm.committed_index();
        if roll < 80 || log.len() as u64 <= committed {
            append(&h.lm, &mut log, term, &mut rng);
        } else if roll < 95 {
            let cut = committed + rng.next_u64() % (log.len() as u64 - committed);
            h.lm.truncate_suffix(cut).unwrap();
            log.truncate(cut as usize);
            term += 1;
        } else {
            let durable = h.lm.last_durable_id();
            if durable.index > 0 && log.get(durable.index as usize - 1) == Some(&durable) {
                h.lm.set_committed_index(durable.index);
            }
        }
    }
    // Everything of phase one carried out; then appends only, and a crash among them.
    append(&h.lm, &mut log, term, &mut rng);
    h.wait_durable_id(*log.last().unwrap());
    for _ in 0..rng.next_u64() % 60 {
        append(&h.lm, &mut log, term, &mut rng);
    }
    fs.crash(CrashMode::Torn).unwrap();
    h.lm.shutdown();
    h.lm.join();
    // Every report comes from a sync that returned before the crash (later ones fail).
    let last_report = *h.durable.lock().last().unwrap();
    drop(h);
    drop(storage);
    let s = open(&fs, dir.path());
    let last = s.last_log_index();
    assert!(
        last <= log.len() as u64,
        "seed {seed}: more entries than appended"
    );
    for i in 1..=last {
        assert_eq!(
            s.term_at(i),
            Some(log[i as usize - 1].term),
            "seed {seed}: entry {i}"
        );
    }
    assert!(
        last >= last_report.index && s.term_at(last_report.index) == Some(last_report.term),
        "seed {seed}: {last_report} was reported durable but recovery ends at {last}"
    );
}

#[test]
fn entries_reported_durable_survive_a_crash_at_any_moment() {
    let seeds = std::env::var("TRAFT_LM_CRASH_SEEDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(8);
    for seed in 0..seeds {
        run(seed);
    }
}
