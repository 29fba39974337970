//! Spare segments: a segment file prepared ahead of use, so that appends go to blocks that
//! were really written (zeros) and synced, and a rollover costs a rename, a header write and
//! two syncs instead of a preallocation.
//!
//! Why: a segment preallocated with `fallocate` alone has *unwritten* extents; every
//! `fdatasync` of an append into such a segment also commits the extent conversion to the
//! ext4 journal (docs/BENCHMARKS.md measured fdatasync p50 172 us fallocated against 127 us
//! zero-filled). Writing 64 MiB of zeros when the segment is needed would stall the append
//! that rolls over, so it is done ahead of time, by a job on the runtime's disk pool. The
//! writer asks for it once the open segment holds 1 MiB of entries
//! (`SegmentLogStorageOptions::spare_after_bytes`), so a log that writes little never
//! zero-fills a segment it will not reach.
//!
//! Preparation, in order (each step through the file layer):
//! 1. create `log_spare.tmp`, `allocate` its whole length (a full disk fails here, before any
//!    byte is written: an error at preparation, never a SIGBUS later);
//! 2. write zeros over every byte, in chunks of [`CHUNK`], syncing every [`SYNC_EVERY`] bytes
//!    and at the end;
//! 3. rename it to `log_spare` and sync the directory: the spare is *ready*.
//!
//! Invariant: a file named `log_spare` is [`SegmentLogStorageOptions::segment_size`] bytes
//! that were all written with zeros and synced before it got that name; after that only a
//! rollover writes to it (the header, through its new name), so a `log_spare` found at open
//! holds zeros, or zeros and a header when a crash undid the rollover's rename. Recovery
//! keeps it only if its length is right and its header area is still zeros (see `open.rs`),
//! and removes `log_spare.tmp` unread: a half-filled spare is never used.
//!
//! A failed preparation (full disk, EIO) is logged and its file removed; nothing was
//! promised on it. The next rollover then preallocates a segment itself as before
//! (`Writer::create_segment`), where a full disk is the append's error, and the new segment
//! asks for a spare again when due: at most one request per segment, so a nearly full disk
//! costs one failed preparation per rollover, not one per append. A spare is never a
//! reason to fail the log.
//!
//! Threads: in [`SparePreparation::Pool`] mode the job runs on the given pool (the runtime's
//! disk pool), one chunk per turn, then goes to the back of the pool's queue, so a log's disk
//! queue never waits behind more than one chunk. It is not paced by the appends: pacing
//! (keeping the zeros a fixed ratio ahead of the appended bytes, to spread their writeback
//! over the segment's life) was tried and measured no different from writing them at once
//! (docs/BENCHMARKS.md). Its state is under a mutex held only to read or flip flags, never
//! across IO. Stopping (close or drop of the storage) waits for a turn in progress, so no
//! job touches the directory once the storage released its lock.
//!
//! [`SegmentLogStorageOptions::segment_size`]: super::SegmentLogStorageOptions::segment_size

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use parking_lot::{Condvar, Mutex};
use slog::Logger;

use crate::error::{RaftError, Result};
use crate::fs::{self, File, FileSystem, OpenOptions};
use crate::pool::{Job, PoolHandle};

/// The name of a ready spare segment.
pub(crate) const SPARE_FILE: &str = "log_spare";
/// The name of a spare being prepared.
pub(crate) const SPARE_TMP: &str = "log_spare.tmp";

/// Bytes of zeros written per step; a pool turn is one step, so a log's disk queue waiting
/// for a thread waits for at most one step (tens of microseconds, plus a sync every
/// [`SYNC_EVERY`]).
const CHUNK: u64 = 256 << 10;
/// Bytes written between two syncs of the spare: its writeback then happens in pieces of
/// about a millisecond of disk time instead of one long flush (64 MiB: tens of
/// milliseconds) that concurrent log syncs would queue behind.
const SYNC_EVERY: u64 = 1 << 20;

/// A block of zeros to write from (spares, and the writer's zeros ahead of its batches).
pub(crate) static ZEROS: [u8; CHUNK as usize] = [0; CHUNK as usize];

/// Where spare segments are prepared (see the module documentation of `spare.rs`).
#[derive(Clone, Default)]
pub enum SparePreparation {
    /// No spares: each segment is preallocated (`fallocate`) when a rollover needs it, and
    /// its syncs pay the unwritten-extent conversion. No thread does any work ahead of time.
    #[default]
    Off,
    /// On the thread that asks for one, inside that call: the append that makes the open
    /// segment cross `spare_after_bytes` (or open and each rollover, with `Some(0)`) writes
    /// a whole segment's worth of zeros under the storage's writer lock. Deterministic, for
    /// tests and single-threaded tools; never for a node.
    Inline,
    /// By a job on this pool (such as a [`Runtime`](crate::Runtime)'s disk pool),
    /// one 256 KiB chunk per turn.
    /// A rollover that finds no ready spare (appends outran the preparation) preallocates a
    /// segment itself as in `Off` mode, without waiting.
    Pool(PoolHandle),
}

/// Counts of how segments were made, for tests and monitoring.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SegmentStats {
    /// Segments that were a ready spare, renamed into place.
    pub from_spare: u64,
    /// Segments preallocated at rollover (no spare ready, spares off, or an entry larger than
    /// a segment).
    pub preallocated: u64,
    /// Spares prepared (including one found ready at open).
    pub spares_prepared: u64,
    /// Preparations that failed (logged; their file removed).
    pub spare_failures: u64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum JobState {
    /// No job exists.
    Idle,
    /// A job is queued on the pool (or between turns).
    Scheduled,
    /// A job is doing IO now; `stop` waits for it.
    Running,
}

/// A preparation in progress.
#[derive(Default)]
struct Progress {
    file: Option<Arc<dyn File>>,
    /// Bytes of zeros written so far.
    written: u64,
}

struct State {
    /// `log_spare` exists and satisfies the module's invariant.
    ready: bool,
    job: JobState,
    /// Set by `stop`: no more IO, no new jobs.
    stopped: bool,
    /// The pool job's progress between turns (taken out while a turn runs).
    progress: Option<Progress>,
    stats: SegmentStats,
}

/// The spare of one log directory, shared by its writer and the preparation job.
pub(crate) struct Spares {
    fs: Arc<dyn FileSystem>,
    dir: PathBuf,
    size: u64,
    mode: SparePreparation,
    logger: Logger,
    state: Mutex<State>,
    changed: Condvar,
}

impl Spares {
    /// `ready`: recovery found a valid `log_spare` (see `open.rs`).
    pub fn new(
        fs: Arc<dyn FileSystem>,
        dir: PathBuf,
        size: u64,
        mode: SparePreparation,
        ready: bool,
        logger: Logger,
    ) -> Arc<Spares> {
        Arc::new(Spares {
            fs,
            dir,
            size,
            mode,
            logger,
            state: Mutex::new(State {
                ready,
                job: JobState::Idle,
                stopped: false,
                progress: None,
                stats: SegmentStats {
                    spares_prepared: u64::from(ready),
                    ..SegmentStats::default()
                },
            }),
            changed: Condvar::new(),
        })
    }

    /// True if spares are prepared at all.
    pub fn enabled(&self) -> bool {
        !matches!(self.mode, SparePreparation::Off)
    }

    /// Where the ready spare lives (`log_spare` in the log's directory).
    pub fn spare_path(&self) -> PathBuf {
        self.dir.join(SPARE_FILE)
    }

    /// Claims the ready spare, if any. The caller then owns `log_spare` and must rename it
    /// away before calling [`Spares::request`] (a new spare is renamed to that name).
    pub fn take(&self) -> bool {
        std::mem::take(&mut self.state.lock().ready)
    }

    /// Records how a segment was made.
    pub fn count_segment(&self, from_spare: bool) {
        let mut st = self.state.lock();
        if from_spare {
            st.stats.from_spare += 1;
        } else {
            st.stats.preallocated += 1;
        }
    }

    /// How the log's segments were made so far.
    pub fn stats(&self) -> SegmentStats {
        self.state.lock().stats
    }

    /// Makes sure a spare is ready or on its way: prepares it now (`Inline`) or schedules a
    /// job (`Pool`). No-op when one is ready, a job exists, or after `stop`.
    pub fn request(self: &Arc<Self>) {
        {
            let mut st = self.state.lock();
            if st.stopped || st.ready || st.job != JobState::Idle {
                return;
            }
            if let SparePreparation::Pool(_) = self.mode {
                st.job = JobState::Scheduled;
            }
        }
        match &self.mode {
            SparePreparation::Off => {}
            SparePreparation::Inline => self.prepare_inline(),
            SparePreparation::Pool(pool) => {
                let job = Arc::new(PrepareJob(self.clone()));
                if pool.schedule(job).is_err() {
                    // The pool stopped (the runtime is shutting down): no spare, rollovers
                    // preallocate.
                    self.set_job(JobState::Idle);
                }
            }
        }
    }

    /// Ends preparation for good: no job starts IO after this returns, and one doing IO now
    /// is waited for (at most one step). A half-prepared `log_spare.tmp` may stay behind;
    /// the next open removes it.
    pub fn stop(&self) {
        let mut st = self.state.lock();
        st.stopped = true;
        while st.job == JobState::Running {
            self.changed.wait(&mut st);
        }
    }

    /// Waits until a spare is ready or no preparation is under way; true if one is ready.
    pub fn wait_ready(&self, timeout: Duration) -> bool {
        let deadline = crate::timer::deadline_after(timeout);
        let mut st = self.state.lock();
        while !st.ready && st.job != JobState::Idle {
            if self.changed.wait_until(&mut st, deadline).timed_out() {
                break;
            }
        }
        st.ready
    }

    fn set_job(&self, job: JobState) {
        self.state.lock().job = job;
        self.changed.notify_all();
    }

    fn prepare_inline(&self) {
        let mut p = Progress::default();
        loop {
            match self.step(&mut p) {
                Ok(false) => {}
                Ok(true) => return self.finished(),
                Err(e) => return self.discard(p, &e),
            }
        }
    }

    /// One step of preparation; true when the spare is ready.
    fn step(&self, p: &mut Progress) -> Result<bool> {
        let tmp = self.dir.join(SPARE_TMP);
        let Some(file) = &p.file else {
            if self.fs.exists(&tmp) {
                self.fs.remove_file(&tmp)?;
            }
            let file = self.fs.open(&tmp, OpenOptions::CREATE_NEW)?;
            p.file = Some(file.clone());
            // Every block reserved before a byte is written: a full disk fails here.
            file.allocate(self.size)?;
            return Ok(false);
        };
        if p.written < self.size {
            let n = (self.size - p.written).min(CHUNK);
            fs::write_all_at(&**file, &ZEROS[..n as usize], p.written)?;
            p.written += n;
            if p.written % SYNC_EVERY == 0 || p.written == self.size {
                file.sync_data()?;
            }
            return Ok(false);
        }
        // Every byte is zeros and synced: only now does the file get the name recovery uses.
        self.fs.rename(&tmp, &self.spare_path())?;
        self.fs.sync_dir(&self.dir)?;
        Ok(true)
    }

    fn finished(&self) {
        let mut st = self.state.lock();
        st.ready = true;
        st.stats.spares_prepared += 1;
        st.job = JobState::Idle;
        drop(st);
        self.changed.notify_all();
    }

    /// A failed preparation: log it and remove its file (under either name: it is not
    /// ready, so nothing else uses `log_spare` now). Removal failures only leave a file that
    /// the next preparation or open removes.
    fn discard(&self, p: Progress, e: &RaftError) {
        slog::warn!(self.logger, "preparing a spare log segment failed; rollovers preallocate";
            "error" => %e);
        drop(p.file);
        for path in [self.dir.join(SPARE_TMP), self.spare_path()] {
            if self.fs.exists(&path) {
                if let Err(e) = self.fs.remove_file(&path) {
                    slog::warn!(self.logger, "could not remove a failed spare segment";
                        "file" => %path.display(), "error" => %e);
                }
            }
        }
        let mut st = self.state.lock();
        st.stats.spare_failures += 1;
        st.job = JobState::Idle;
        drop(st);
        self.changed.notify_all();
    }
}

/// The pool job preparing one spare.
struct PrepareJob(Arc<Spares>);

/// Leaves `Running` if a turn unwinds (a panic in the file layer), so `stop` never waits
/// for a turn that will not finish.
struct RunningGuard<'a>(&'a Spares);

impl Drop for RunningGuard<'_> {
    fn drop(&mut self) {
        let mut st = self.0.state.lock();
        if st.job == JobState::Running {
            st.job = JobState::Idle;
            drop(st);
            self.0.changed.notify_all();
        }
    }
}

impl Job for PrepareJob {
    fn run(self: Arc<Self>, _pool: &PoolHandle) -> bool {
        let sp = &*self.0;
        let mut p = {
            let mut st = sp.state.lock();
            if st.stopped {
                st.job = JobState::Idle;
                drop(st);
                sp.changed.notify_all();
                return false;
            }
            st.job = JobState::Running;
            st.progress.take().unwrap_or_default()
        };
        let _guard = RunningGuard(sp);
        match sp.step(&mut p) {
            Ok(true) => {
                sp.finished();
                false
            }
            Ok(false) => {
                // One step per turn: back of the pool's queue, behind any log that waits.
                let mut st = sp.state.lock();
                st.job = if st.stopped {
                    JobState::Idle
                } else {
                    st.progress = Some(p);
                    JobState::Scheduled
                };
                let again = !st.stopped;
                drop(st);
                sp.changed.notify_all();
                again
            }
            Err(e) => {
                sp.discard(p, &e);
                false
            }
        }
    }
}
