//! SegmentLogStorage append throughput with sync on, against the raw baseline: the same bytes
//! written with one `pwrite` + one `fdatasync` per batch to a plain file prepared as a segment
//! is (preallocated and zero-filled; `TRAFT_BENCH_RAW=fallocate` preallocates only, as
//! segments were before spares). The storage prepares its spare segments on a disk pool of
//! one thread, as a node does on its runtime's.
//! Entries of 256 B and 4 KiB, batches of 1, 32 and 256 entries. After criterion's report,
//! prints the measured fdatasync latency and one summary line per case: entries/s and MB/s
//! of both, and the median of per-round ratios (storage / baseline) over alternating rounds.
//!
//! Files go to `target/bench-log-storage` (a real disk, not tmpfs); `TRAFT_BENCH_DIR`
//! overrides. Run: `cargo bench --bench log_storage`; the summary alone:
//! `cargo bench --bench log_storage -- --summary`.

use std::fs::{File, OpenOptions};
use std::os::unix::fs::FileExt;
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use bytes::Bytes;
use criterion::{BenchmarkId, Criterion, Throughput};
use traft::fs::RealFs;
use traft::log_storage::{
    LogStorage, SegmentLogStorage, SegmentLogStorageOptions, SegmentStats, SparePreparation,
};
use traft::pool::{Pool, PoolHandle};
use traft::{EntryType, LogEntry, LogId};

const SIZES: [usize; 2] = [256, 4096];
const BATCHES: [usize; 3] = [1, 32, 256];
/// Record header + batch-end record: the bytes the storage adds, which the baseline writes
/// too ("the same bytes").
const RECORD_HEADER: usize = 25;
const BATCH_END: usize = 41;
const ROUNDS: usize = 21;

fn bench_dir() -> PathBuf {
    let dir = std::env::var_os("TRAFT_BENCH_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("target/bench-log-storage"));
    std::fs::create_dir_all(&dir).expect("bench dir");
    dir
}

/// Batches per timed run: about 20-100 ms each on a disk syncing in ~0.2 ms, so that many
/// short alternating rounds see the same background load.
fn batches_per_run(size: usize, batch: usize) -> usize {
    match (size, batch) {
        (_, 1) => 200,
        (_, 32) => 100,
        (256, _) => 50,
        _ => 10,
    }
}

fn batch_bytes(size: usize, batch: usize) -> usize {
    batch * (RECORD_HEADER + size) + BATCH_END
}

/// Bytes appended to a storage before its closed segments are dropped (not timed).
const STORAGE_BYTES_KEPT: usize = 512 << 20;
/// Size of the raw baseline's preallocated file, as a segment's; recreated (not timed) when
/// full, where the storage pays its segment rollover inside the timing.
const RAW_FILE_BYTES: u64 = 64 << 20;

/// One storage for a case, appended to across runs.
struct StorageCase {
    storage: SegmentLogStorage,
    payload: Bytes,
    batch: usize,
    next: u64,
    bytes_since_compaction: usize,
}

impl StorageCase {
    fn new(dir: &Path, pool: &PoolHandle, size: usize, batch: usize) -> StorageCase {
        let path = dir.join(format!("storage-{size}-{batch}"));
        let _ = std::fs::remove_dir_all(&path);
        let opts = SegmentLogStorageOptions {
            logger: traft::logging::discard_logger(),
            spare: SparePreparation::Pool(pool.clone()),
            // The steady state of a busy log: every segment comes from a spare, the first
            // one too (a node's first segment is preallocated; its successors are spares).
            spare_after_bytes: Some(0),
            ..SegmentLogStorageOptions::default()
        };
        let storage = SegmentLogStorage::open(RealFs::shared(), &path, opts).expect("open");
        storage.wait_spare_ready(Duration::from_secs(60));
        let payload = Bytes::from((0..size).map(|i| (i * 31 + 7) as u8).collect::<Vec<u8>>());
        let mut case = StorageCase {
            storage,
            payload,
            batch,
            next: 1,
            bytes_since_compaction: 0,
        };
        case.run(1); // creates the first segment outside any timing
        case
    }

    /// Entries built up front: the leader computes each CRC once, not the storage.
    fn batches(&mut self, n: usize) -> Vec<Vec<LogEntry>> {
        (0..n)
            .map(|_| {
                (0..self.batch)
                    .map(|_| {
                        self.next += 1;
                        let id = LogId::new(self.next - 1, 1);
                        LogEntry::new(id, EntryType::Data, self.payload.clone())
                    })
                    .collect()
            })
            .collect()
    }

    fn run(&mut self, n: usize) -> Duration {
        let batches = self.batches(n);
        let start = Instant::now();
        for b in &batches {
            self.storage.append_entries(b).expect("append");
        }
        let elapsed = start.elapsed();
        // Keep the disk use bounded: drop closed segments now and then (not timed).
        self.bytes_since_compaction += n * batch_bytes(self.payload.len(), self.batch);
        if self.bytes_since_compaction > STORAGE_BYTES_KEPT {
            let last = self.storage.last_log_index();
            self.storage.truncate_prefix(last).expect("truncate_prefix");
            self.bytes_since_compaction = 0;
        }
        elapsed
    }
}

/// The raw baseline: the same bytes per batch, one pwrite + one fdatasync each, appended at
/// increasing offsets of a plain file preallocated with fallocate and zero-filled (as a
/// segment is; [`raw_zero_filled`]: false preallocates only).
struct RawCase {
    path: PathBuf,
    file: File,
    offset: u64,
    buf: Vec<u8>,
}

impl RawCase {
    fn new(dir: &Path, bytes: usize) -> RawCase {
        let path = dir.join("raw.bin");
        let file = fresh_preallocated(&path, RAW_FILE_BYTES);
        RawCase {
            path,
            file,
            offset: 0,
            buf: vec![0x5au8; bytes],
        }
    }

    /// Runs `n` batches; returns the time and each sync's latency.
    fn run(&mut self, n: usize) -> (Duration, Vec<Duration>) {
        let bytes = self.buf.len() as u64;
        if self.offset + bytes * n as u64 > RAW_FILE_BYTES {
            self.file = fresh_preallocated(&self.path, RAW_FILE_BYTES.max(bytes * n as u64));
            self.offset = 0;
        }
        let mut syncs = Vec::with_capacity(n);
        let start = Instant::now();
        for _ in 0..n {
            self.file
                .write_all_at(&self.buf, self.offset)
                .expect("pwrite");
            self.offset += bytes;
            let t = Instant::now();
            self.file.sync_data().expect("fdatasync");
            syncs.push(t.elapsed());
        }
        (start.elapsed(), syncs)
    }
}

fn fresh_preallocated(path: &Path, len: u64) -> File {
    let _ = std::fs::remove_file(path);
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create_new(true)
        .open(path)
        .expect("create");
    // SAFETY: fallocate on an fd we own, integer arguments only.
    let rc = unsafe { libc::fallocate(file.as_raw_fd(), 0, 0, len as libc::off_t) };
    assert_eq!(rc, 0, "fallocate: {}", std::io::Error::last_os_error());
    if raw_zero_filled() {
        let zeros = vec![0u8; 1 << 20];
        let mut off = 0;
        while off < len {
            let n = (len - off).min(zeros.len() as u64) as usize;
            file.write_all_at(&zeros[..n], off).expect("zero-fill");
            off += n as u64;
        }
    }
    file.sync_all().expect("fsync");
    file
}

/// True unless `TRAFT_BENCH_RAW=fallocate`: the baseline file is zero-filled like a segment.
fn raw_zero_filled() -> bool {
    std::env::var("TRAFT_BENCH_RAW").map_or(true, |v| v != "fallocate")
}

fn criterion_benches(c: &mut Criterion, dir: &Path, pool: &PoolHandle) {
    for size in SIZES {
        let mut g = c.benchmark_group(format!("log_storage_{size}B"));
        g.sample_size(10);
        g.warm_up_time(Duration::from_millis(500));
        g.measurement_time(Duration::from_secs(3));
        for batch in BATCHES {
            g.throughput(Throughput::Elements(batch as u64));
            let bytes = batch_bytes(size, batch);
            let mut raw = RawCase::new(dir, bytes);
            g.bench_function(BenchmarkId::new("raw_pwrite_fdatasync", batch), |b| {
                b.iter_custom(|iters| raw.run(iters as usize).0)
            });
            let mut case = StorageCase::new(dir, pool, size, batch);
            g.bench_function(BenchmarkId::new("segment_storage", batch), |b| {
                b.iter_custom(|iters| case.run(iters as usize))
            });
        }
        g.finish();
    }
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn percentile(v: &mut [Duration], p: f64) -> Duration {
    v.sort();
    v[((v.len() - 1) as f64 * p) as usize]
}

/// fdatasync latency after a 4 KiB pwrite, as the baseline at batch 1 of 4 KiB sees it.
fn sync_latency(dir: &Path) {
    let (_, mut syncs) = RawCase::new(dir, 4096).run(1000);
    println!(
        "\nfdatasync after a 4 KiB pwrite (1000 syncs): p50={:.3}ms p90={:.3}ms p99={:.3}ms",
        percentile(&mut syncs, 0.5).as_secs_f64() * 1e3,
        percentile(&mut syncs, 0.9).as_secs_f64() * 1e3,
        percentile(&mut syncs, 0.99).as_secs_f64() * 1e3,
    );
}

/// Alternates baseline and storage runs so that drift of the machine's speed hits both
/// alike; reports the median of each and the median of per-round ratios.
fn summary(dir: &Path, pool: &PoolHandle) {
    sync_latency(dir);
    println!(
        "log_storage summary ({ROUNDS} alternating rounds per case; medians; raw file {}):",
        if raw_zero_filled() {
            "zero-filled"
        } else {
            "fallocated"
        }
    );
    for size in SIZES {
        for batch in BATCHES {
            let n = batches_per_run(size, batch);
            let bytes = batch_bytes(size, batch);
            let mut case = StorageCase::new(dir, pool, size, batch);
            let mut raw_case = RawCase::new(dir, bytes);
            let (mut st, mut raw, mut ratio, mut sync) = (vec![], vec![], vec![], vec![]);
            for round in 0..ROUNDS {
                // Alternate which side goes first, so neither always follows the other's
                // writeback.
                let ((r, syncs), s) = if round % 2 == 0 {
                    let r = raw_case.run(n);
                    (r, case.run(n))
                } else {
                    let s = case.run(n);
                    (raw_case.run(n), s)
                };
                let entries = (n * batch) as f64;
                raw.push(entries / r.as_secs_f64());
                st.push(entries / s.as_secs_f64());
                ratio.push(r.as_secs_f64() / s.as_secs_f64());
                sync.push(median(syncs.iter().map(Duration::as_secs_f64).collect()));
            }
            let mb = |eps: f64| eps * size as f64 / 1e6;
            let (st, raw) = (median(st), median(raw));
            println!(
                "log_storage size={size}B batch={batch} storage_entries_per_s={st:.0} \
                 storage_MB_per_s={:.1} raw_entries_per_s={raw:.0} raw_MB_per_s={:.1} \
                 raw_fdatasync_p50={:.3}ms ratio={:.2} segments_from_spare={} \
                 segments_preallocated={}",
                mb(st),
                mb(raw),
                median(sync) * 1e3,
                median(ratio),
                stats_of(&case).from_spare,
                stats_of(&case).preallocated,
            );
        }
    }
}

fn stats_of(case: &StorageCase) -> SegmentStats {
    case.storage.segment_stats()
}

fn main() {
    let dir = bench_dir();
    // Where the storage prepares spare segments: a node's disk pool.
    let pool = Pool::new("disk", 1).expect("pool");
    let summary_only = std::env::args().any(|a| a == "--summary");
    if !summary_only {
        let mut c = Criterion::default().configure_from_args();
        criterion_benches(&mut c, &dir, &pool.handle());
        c.final_summary();
    }
    summary(&dir, &pool.handle());
    let _ = std::fs::remove_dir_all(&dir);
}
