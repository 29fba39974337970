//! Items per second through one ExecQueue, against what a user would write instead: a
//! crossbeam channel feeding one dedicated consumer thread. 1 and 4 producer threads; queue
//! batch sizes 1, 16, 64 and 256. After criterion's report, prints one summary line per case
//! with both rates and their ratio (the figure docs/BENCHMARKS.md records).
//!
//! Run: `cargo bench --bench exec_queue`; the summary alone:
//! `cargo bench --bench exec_queue -- --summary`.

use std::time::{Duration, Instant};

use criterion::{BenchmarkId, Criterion, Throughput};
use crossbeam::channel;
use traft::pool::PoolHandle;
use traft::{Batch, ExecQueue, ExecQueueOptions, Runtime, RuntimeOptions};

const ITEMS: u64 = 2_000_000;
const PRODUCERS: [usize; 2] = [1, 4];
const BATCHES: [usize; 4] = [1, 16, 64, 256];

/// Sends ITEMS u64s from `producers` threads through a fresh ExecQueue; returns the time from
/// the first submit until the consumer has seen the last item.
fn run_exec_queue(pool: &PoolHandle, producers: usize, batch_max: usize) -> Duration {
    let (done_tx, done_rx) = channel::bounded(1);
    let mut seen = 0u64;
    let mut sum = 0u64;
    let opts = ExecQueueOptions {
        batch_max,
        logger: traft::logging::discard_logger(),
        ..ExecQueueOptions::new("bench")
    };
    let q = ExecQueue::start(pool, opts, move |batch: &mut Batch<'_, u64>| {
        for v in batch {
            sum = sum.wrapping_add(v);
            seen += 1;
        }
        if seen == ITEMS {
            let _ = done_tx.send(sum);
        }
    });
    let start = Instant::now();
    produce(producers, |v| {
        let _ = q.submit(v);
    });
    let _ = done_rx.recv();
    let elapsed = start.elapsed();
    q.stop();
    q.join();
    elapsed
}

/// The baseline: an unbounded crossbeam channel and one dedicated thread calling `recv`.
fn run_channel(producers: usize) -> Duration {
    let (tx, rx) = channel::unbounded::<u64>();
    let (done_tx, done_rx) = channel::bounded(1);
    let consumer = std::thread::spawn(move || {
        let mut sum = 0u64;
        for seen in 1..=ITEMS {
            let Ok(v) = rx.recv() else { break };
            sum = sum.wrapping_add(v);
            if seen == ITEMS {
                let _ = done_tx.send(sum);
            }
        }
    });
    let start = Instant::now();
    produce(producers, |v| {
        let _ = tx.send(v);
    });
    let _ = done_rx.recv();
    let elapsed = start.elapsed();
    let _ = consumer.join();
    elapsed
}

fn produce<F: Fn(u64) + Sync>(producers: usize, send: F) {
    let per = ITEMS / producers as u64;
    std::thread::scope(|s| {
        for p in 0..producers as u64 {
            let send = &send;
            s.spawn(move || {
                for i in 0..per {
                    send(p * per + i);
                }
            });
        }
    });
}

fn runtime() -> Runtime {
    Runtime::new(RuntimeOptions {
        io_threads: 1,
        raft_threads: 2,
        disk_threads: 1,
        fsm_threads: 1,
    })
    .expect("runtime")
}

fn criterion_benches(c: &mut Criterion, rt: &Runtime) {
    let mut g = c.benchmark_group("exec_queue");
    g.throughput(Throughput::Elements(ITEMS));
    g.sample_size(20);
    for producers in PRODUCERS {
        g.bench_function(BenchmarkId::new("channel_thread", producers), |b| {
            b.iter_custom(|iters| (0..iters).map(|_| run_channel(producers)).sum())
        });
        for batch in BATCHES {
            let id = BenchmarkId::new(format!("exec_queue_batch{batch}"), producers);
            g.bench_function(id, |b| {
                b.iter_custom(|iters| {
                    (0..iters)
                        .map(|_| run_exec_queue(&rt.raft_pool(), producers, batch))
                        .sum()
                })
            });
        }
    }
    g.finish();
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// Alternates baseline and queue runs so that drift of the machine's speed (other load, CPU
/// frequency) hits both alike; reports the median of each and the median of per-round ratios.
fn summary(rt: &Runtime) {
    const ROUNDS: usize = 11;
    println!("\nexec_queue summary ({ROUNDS} alternating rounds of {ITEMS} items; medians):");
    for producers in PRODUCERS {
        for batch in BATCHES {
            let (mut q, mut base, mut ratio) = (Vec::new(), Vec::new(), Vec::new());
            for _ in 0..ROUNDS {
                let b = ITEMS as f64 / run_channel(producers).as_secs_f64();
                let e =
                    ITEMS as f64 / run_exec_queue(&rt.raft_pool(), producers, batch).as_secs_f64();
                base.push(b);
                q.push(e);
                ratio.push(e / b);
            }
            println!(
                "exec_queue producers={producers} batch={batch} queue_items_per_s={:.2}M \
                 channel_items_per_s={:.2}M ratio={:.2}",
                median(q) / 1e6,
                median(base) / 1e6,
                median(ratio)
            );
        }
    }
}

fn main() {
    let rt = runtime();
    let summary_only = std::env::args().any(|a| a == "--summary");
    if !summary_only {
        let mut c = Criterion::default().configure_from_args();
        criterion_benches(&mut c, &rt);
        c.final_summary();
    }
    summary(&rt);
    rt.shutdown();
}
