//! A serial queue on the runtime's raft pool, as traft's own components use them: producers
//! on any thread submit, the consumer sees the items in order, in batches, one batch at a time.
//!
//! Run: `cargo run --example serial_queue`

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use traft::{Batch, ExecQueue, ExecQueueOptions, Runtime, RuntimeOptions};

fn main() -> traft::Result<()> {
    let rt = Runtime::new(RuntimeOptions::default())?;
    let total = Arc::new(AtomicU64::new(0));
    let batches = Arc::new(AtomicU64::new(0));
    let (t, b) = (total.clone(), batches.clone());
    let queue = ExecQueue::start(
        &rt.raft_pool(),
        ExecQueueOptions::new("example"),
        move |batch: &mut Batch<'_, u64>| {
            b.fetch_add(1, Ordering::Relaxed);
            for v in batch {
                t.fetch_add(v, Ordering::Relaxed);
            }
        },
    );
    std::thread::scope(|s| {
        for p in 0..4u64 {
            let q = queue.clone();
            s.spawn(move || {
                for i in 0..100_000 {
                    // Never blocks; an error would hand the item back.
                    let _ = q.submit(p * 100_000 + i);
                }
            });
        }
    });
    queue.stop();
    queue.join();
    println!(
        "sum {} in {} batches",
        total.load(Ordering::Relaxed),
        batches.load(Ordering::Relaxed)
    );
    rt.shutdown();
    Ok(())
}
