//! [`Runtime`]: owner of every thread traft runs (DESIGN.md section 2).
//!
//! One runtime holds the timer thread (`traft-timer`), the IO loops (`traft-io-N`) and three
//! worker pools for serial queues: `traft-raft-N` (node event queues, apply queues,
//! replicators), `traft-disk-N` (log writes and syncs), `traft-fsm-N` (user state-machine
//! callbacks). A process-wide default is created on first use; programs and tests that must
//! not share threads build their own from [`RuntimeOptions`]. Shutdown stops and joins every
//! thread. Nothing else in traft spawns threads.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;

use parking_lot::Mutex;

use crate::error::{RaftError, Result};
use crate::io_loop::{IoLoop, IoLoopHandle};
use crate::pool::{Pool, PoolHandle};
use crate::timer::Timer;

/// The most threads any one pool may have.
pub const POOL_THREADS_MAX: usize = 256;

/// Thread counts of a [`Runtime`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RuntimeOptions {
    /// IO event loops (`traft-io-N`). Default 1.
    pub io_threads: usize,
    /// Raft pool threads (`traft-raft-N`). Default: the number of CPUs, at least 2.
    pub raft_threads: usize,
    /// Disk pool threads (`traft-disk-N`): this many log syncs can be in flight across
    /// groups. Default 2.
    pub disk_threads: usize,
    /// State-machine pool threads (`traft-fsm-N`). Default 1.
    pub fsm_threads: usize,
}

impl Default for RuntimeOptions {
    fn default() -> RuntimeOptions {
        let cpus = std::thread::available_parallelism().map_or(2, |n| n.get());
        RuntimeOptions {
            io_threads: 1,
            raft_threads: cpus.max(2),
            disk_threads: 2,
            fsm_threads: 1,
        }
    }
}

impl RuntimeOptions {
    /// Checks every count is in `1..=POOL_THREADS_MAX`.
    pub fn validate(&self) -> Result<()> {
        for (name, n) in [
            ("io_threads", self.io_threads),
            ("raft_threads", self.raft_threads),
            ("disk_threads", self.disk_threads),
            ("fsm_threads", self.fsm_threads),
        ] {
            if n == 0 || n > POOL_THREADS_MAX {
                return Err(RaftError::invalid(format!(
                    "RuntimeOptions.{name} = {n}, must be in 1..={POOL_THREADS_MAX}"
                )));
            }
        }
        Ok(())
    }

    /// The number of threads a runtime with these options runs (timer included).
    pub fn thread_count(&self) -> usize {
        1 + self.io_threads + self.raft_threads + self.disk_threads + self.fsm_threads
    }
}

struct Inner {
    opts: RuntimeOptions,
    timer: Timer,
    timer_thread: Mutex<Option<JoinHandle<()>>>,
    io: Vec<IoLoop>,
    raft: Pool,
    disk: Pool,
    fsm: Pool,
    shut_down: AtomicBool,
}

impl Inner {
    fn shutdown(&self) {
        if self.shut_down.swap(true, Ordering::AcqRel) {
            return;
        }
        // Network input first, then time, then the pools that input and time feed.
        for lp in &self.io {
            lp.shutdown();
        }
        self.timer.stop();
        // Bound first, so the lock is not held through the join.
        let thread = self.timer_thread.lock().take();
        if let Some(t) = thread {
            if t.thread().id() != std::thread::current().id() {
                let _ = t.join();
            }
        }
        self.raft.shutdown();
        self.disk.shutdown();
        self.fsm.shutdown();
    }
}

impl Drop for Inner {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// The threads of traft. Cloning gives another handle to the same threads; the threads stop
/// at [`Runtime::shutdown`] or when the last handle is dropped.
#[derive(Clone)]
pub struct Runtime {
    inner: Arc<Inner>,
}

static GLOBAL: Mutex<Option<Runtime>> = Mutex::new(None);

impl Runtime {
    /// Starts a runtime's threads. On failure, whatever started is stopped again.
    pub fn new(opts: RuntimeOptions) -> Result<Runtime> {
        opts.validate()?;
        let (timer, timer_thread) = Timer::start()?;
        // Each `?` below drops what was built so far, which stops and joins it.
        let stop_timer = |e: RaftError| {
            timer.stop();
            e
        };
        let mut io = Vec::with_capacity(opts.io_threads);
        for i in 0..opts.io_threads {
            io.push(IoLoop::start(i).map_err(stop_timer)?);
        }
        let raft = Pool::new("raft", opts.raft_threads).map_err(stop_timer)?;
        let disk = Pool::new("disk", opts.disk_threads).map_err(stop_timer)?;
        let fsm = Pool::new("fsm", opts.fsm_threads).map_err(stop_timer)?;
        Ok(Runtime {
            inner: Arc::new(Inner {
                opts,
                timer,
                timer_thread: Mutex::new(Some(timer_thread)),
                io,
                raft,
                disk,
                fsm,
                shut_down: AtomicBool::new(false),
            }),
        })
    }

    /// The process-wide default runtime, created with default options on first use (and
    /// created afresh if the previous default was shut down).
    pub fn global() -> Result<Runtime> {
        let mut g = GLOBAL.lock();
        if let Some(rt) = g.as_ref() {
            if !rt.is_shut_down() {
                return Ok(rt.clone());
            }
        }
        let rt = Runtime::new(RuntimeOptions::default())?;
        *g = Some(rt.clone());
        Ok(rt)
    }

    /// The options this runtime was built with.
    pub fn options(&self) -> &RuntimeOptions {
        &self.inner.opts
    }

    /// The timer thread.
    pub fn timer(&self) -> &Timer {
        &self.inner.timer
    }

    /// The raft pool.
    pub fn raft_pool(&self) -> PoolHandle {
        self.inner.raft.handle()
    }

    /// The disk pool.
    pub fn disk_pool(&self) -> PoolHandle {
        self.inner.disk.handle()
    }

    /// The state-machine pool.
    pub fn fsm_pool(&self) -> PoolHandle {
        self.inner.fsm.handle()
    }

    /// The IO loop for `key` (spread by `key % io_threads`).
    pub fn io_loop(&self, key: usize) -> IoLoopHandle {
        self.inner.io[key % self.inner.io.len()].handle()
    }

    /// Stops and joins every thread of this runtime (except the calling one, if it is one of
    /// them). Queued work that has not started is dropped. Idempotent.
    pub fn shutdown(&self) {
        self.inner.shutdown();
    }

    /// True after [`Runtime::shutdown`].
    pub fn is_shut_down(&self) -> bool {
        self.inner.shut_down.load(Ordering::Acquire)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn options_are_validated() {
        let bad = RuntimeOptions {
            raft_threads: 0,
            ..RuntimeOptions::default()
        };
        let err = Runtime::new(bad).err().unwrap();
        assert!(err.to_string().contains("raft_threads = 0"), "{err}");
    }

    #[test]
    fn shutdown_is_idempotent_and_refuses_new_work() {
        let rt = Runtime::new(RuntimeOptions {
            io_threads: 1,
            raft_threads: 1,
            disk_threads: 1,
            fsm_threads: 1,
        })
        .unwrap();
        rt.shutdown();
        rt.shutdown();
        assert!(rt.is_shut_down());
        assert!(rt
            .timer()
            .schedule_after(std::time::Duration::ZERO, || {})
            .is_err());
        assert!(rt.io_loop(0).execute(Box::new(|_| {})).is_err());
    }
}
