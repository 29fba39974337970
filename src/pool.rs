//! [`Pool`]: a fixed set of named worker threads that run scheduled [`ExecQueue`]s.
//!
//! The pool knows nothing of items or order: it runs whatever job is scheduled on it, in
//! FIFO order, one job per thread at a time. A queue with work schedules itself, drains a
//! bounded batch and re-schedules itself at the back, which is what makes thousands of busy
//! queues fair on two threads. Workers catch panics so a bad job never kills a pool thread.
//!
//! [`ExecQueue`]: crate::exec_queue::ExecQueue

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::{self, JoinHandle, ThreadId};

use crossbeam::channel::{self, Receiver, Sender};
use parking_lot::Mutex;

use crate::error::{RaftError, Result};

/// Something a pool thread can run: one turn of a scheduled queue.
pub(crate) trait Job: Send + Sync {
    /// Runs one turn. Returns true if the job wants to run again (it goes to the back).
    fn run(self: Arc<Self>, pool: &PoolHandle) -> bool;
}

enum Msg {
    Run(Arc<dyn Job>),
    Exit,
}

/// A cheap handle to a pool, used to schedule jobs on it.
#[derive(Clone)]
pub struct PoolHandle {
    shared: Arc<Shared>,
}

struct Shared {
    name: String,
    tx: Sender<Msg>,
    rx: Receiver<Msg>,
    stopped: AtomicBool,
    thread_ids: Mutex<Vec<ThreadId>>,
}

impl PoolHandle {
    /// Schedules `job` at the back of the pool's run queue. Fails once the pool stopped.
    pub(crate) fn schedule(&self, job: Arc<dyn Job>) -> Result<()> {
        if self.shared.stopped.load(Ordering::Acquire) {
            return Err(RaftError::Stopped);
        }
        self.shared
            .tx
            .send(Msg::Run(job))
            .map_err(|_| RaftError::Stopped)
    }

    /// True when other jobs wait for a thread; a running queue then yields after its batch.
    pub(crate) fn has_waiting(&self) -> bool {
        !self.shared.rx.is_empty()
    }

    /// True once the pool was shut down.
    pub fn is_stopped(&self) -> bool {
        self.shared.stopped.load(Ordering::Acquire)
    }

    /// The pool's name (`raft`, `disk`, `fsm`).
    pub fn name(&self) -> &str {
        &self.shared.name
    }

    /// True if the calling thread is one of this pool's workers.
    pub fn is_current_thread(&self) -> bool {
        let me = thread::current().id();
        self.shared.thread_ids.lock().contains(&me)
    }
}

/// A pool of worker threads named `traft-<name>-<i>`.
pub struct Pool {
    handle: PoolHandle,
    threads: Mutex<Vec<JoinHandle<()>>>,
}

impl Pool {
    /// Starts `threads` workers named `traft-<name>-0..`.
    pub fn new(name: &str, threads: usize) -> Result<Pool> {
        if threads == 0 {
            return Err(RaftError::invalid(format!(
                "pool {name} needs at least one thread"
            )));
        }
        let (tx, rx) = channel::unbounded();
        let handle = PoolHandle {
            shared: Arc::new(Shared {
                name: name.to_string(),
                tx,
                rx,
                stopped: AtomicBool::new(false),
                thread_ids: Mutex::new(Vec::new()),
            }),
        };
        let pool = Pool {
            handle,
            threads: Mutex::new(Vec::new()),
        };
        for i in 0..threads {
            let h = pool.handle.clone();
            let spawned = thread::Builder::new()
                .name(format!("traft-{name}-{i}"))
                .spawn(move || worker(h));
            match spawned {
                Ok(t) => {
                    pool.handle.shared.thread_ids.lock().push(t.thread().id());
                    pool.threads.lock().push(t);
                }
                Err(e) => {
                    pool.shutdown();
                    return Err(RaftError::io("spawn thread", None, &e));
                }
            }
        }
        Ok(pool)
    }

    /// A handle for scheduling.
    pub fn handle(&self) -> PoolHandle {
        self.handle.clone()
    }

    /// Stops the pool: workers finish the job they run and exit; jobs still waiting are
    /// dropped (their queues see the pool stopped). Joins every worker except the calling
    /// thread. Idempotent.
    pub fn shutdown(&self) {
        if self.handle.shared.stopped.swap(true, Ordering::AcqRel) {
            return;
        }
        let threads: Vec<JoinHandle<()>> = std::mem::take(&mut *self.threads.lock());
        for _ in 0..threads.len() {
            // The channel is unbounded and we hold a receiver: send cannot fail.
            let _ = self.handle.shared.tx.send(Msg::Exit);
        }
        let me = thread::current().id();
        for t in threads {
            if t.thread().id() != me {
                let _ = t.join();
            }
        }
        // Drop whatever was still scheduled: nothing will run it.
        while self.handle.shared.rx.try_recv().is_ok() {}
    }
}

impl Drop for Pool {
    fn drop(&mut self) {
        self.shutdown();
    }
}

fn worker(pool: PoolHandle) {
    while let Ok(msg) = pool.shared.rx.recv() {
        let job = match msg {
            Msg::Run(job) => job,
            Msg::Exit => return,
        };
        // A job is a queue turn; queues catch their consumers' panics themselves, this is the
        // last line of defence for the thread.
        let again = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            let j = job.clone();
            j.run(&pool)
        }));
        match again {
            Ok(true) => {
                if pool.schedule(job).is_err() {
                    return;
                }
            }
            Ok(false) => {}
            Err(_) => log::error!(
                "traft pool {}: a job panicked; thread continues",
                pool.name()
            ),
        }
        if pool.is_stopped() {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::AtomicUsize;
    use std::time::{Duration, Instant};

    use super::*;

    struct Count(Arc<AtomicUsize>);

    impl Job for Count {
        fn run(self: Arc<Self>, _pool: &PoolHandle) -> bool {
            self.0.fetch_add(1, Ordering::Relaxed);
            false
        }
    }

    /// Jobs scheduled from several threads while workers go idle and wake again all run, and
    /// a stopped pool refuses new ones.
    #[test]
    fn every_scheduled_job_runs_while_workers_sleep_and_wake() {
        let pool = Pool::new("test", 2).unwrap();
        let ran = Arc::new(AtomicUsize::new(0));
        let per_producer = 20_000;
        thread::scope(|s| {
            for p in 0..4 {
                let (h, ran) = (pool.handle(), ran.clone());
                s.spawn(move || {
                    for i in 0..per_producer {
                        h.schedule(Arc::new(Count(ran.clone()))).unwrap();
                        // Now and then let the workers drain and go idle.
                        if (i + p) % 1000 == 0 {
                            thread::sleep(Duration::from_micros(200));
                        }
                    }
                });
            }
        });
        let deadline = Instant::now() + Duration::from_secs(30);
        while ran.load(Ordering::Relaxed) < 4 * per_producer {
            assert!(
                Instant::now() < deadline,
                "{} of {} jobs ran",
                ran.load(Ordering::Relaxed),
                4 * per_producer
            );
            thread::sleep(Duration::from_millis(1));
        }
        assert!(!pool.handle().has_waiting());
        pool.shutdown();
        assert!(pool.handle().schedule(Arc::new(Count(ran))).is_err());
    }
}
