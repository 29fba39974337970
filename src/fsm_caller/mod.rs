//! [`FsmCaller`]: braft's FSMCaller. Drives the user's [`StateMachine`] from a serial queue on
//! the fsm pool: committed entries in log order and in batches, leadership changes, snapshot
//! saves and loads, errors, shutdown.
//!
//! The node only enqueues here (`on_committed(index)` coalesces: many commits in one drained
//! batch cost one pass over the log). Confirmed reads wait here until the state machine has
//! applied their index, then complete on this queue, so a read callback sees every write the
//! read must see. Entries are read from a [`CommittedLog`] (the log
//! manager) as shared buffers. Every user callback runs inside `catch_unwind`: a panic puts
//! this node's FSMCaller in its error state (completions fail, nothing more is applied) and
//! reports it to the node; the pool thread and other nodes go on. Nothing here runs under a
//! lock held by another component, and no lock is held across a user callback.

mod closure_queue;

use std::collections::BTreeMap;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::Arc;

use parking_lot::Mutex;
use slog::Logger;

pub use closure_queue::ClosureQueue;

use crate::error::{RaftError, Result};
use crate::exec_queue::{Batch, ExecQueue, ExecQueueOptions};
use crate::pool::PoolHandle;
use crate::snapshot::{SnapshotMeta, SnapshotReader, SnapshotStorage};
use crate::state_machine::StateMachine;
use crate::state_machine::{Applied, ApplyDone, Iter, LeaderChangeContext, SnapshotDone};
use crate::types::codec::Reader;
use crate::types::{Configuration, EntryType, LogEntry, LogId};

/// Where the FSMCaller reads committed entries (implemented by the log manager).
pub trait CommittedLog: Send + Sync + 'static {
    /// Entries `from..=to` in order, as many as fit in `max_bytes` of payload (at least one
    /// if `from <= to`).
    fn committed_entries(&self, from: u64, to: u64, max_bytes: usize) -> Result<Vec<LogEntry>>;
    /// The configuration in force at `index` (for snapshot metas).
    fn configuration_at(&self, index: u64) -> Result<Configuration>;
}

/// What the FSMCaller reports back to its node.
pub trait FsmListener: Send + Sync + 'static {
    /// Everything up to `applied` was applied.
    fn on_applied(&self, applied: LogId);
    /// The state machine failed (a panic in a user callback, a log read error): the node
    /// enters its error state.
    fn on_fsm_error(&self, error: RaftError);
}

/// Settings of an [`FsmCaller`].
pub struct FsmCallerOptions {
    /// The fsm pool.
    pub pool: PoolHandle,
    /// Where committed entries come from.
    pub log: Arc<dyn CommittedLog>,
    /// Completions of this node's own proposals.
    pub closures: Arc<ClosureQueue>,
    /// Where applied progress and errors are reported.
    pub listener: Arc<dyn FsmListener>,
    /// The last entry already reflected in the state machine at start (the snapshot's, or
    /// what the state machine made durable itself).
    pub bootstrap_applied: LogId,
    /// The most payload bytes read from the log per pass.
    pub apply_bytes_max: usize,
    /// The node's logger.
    pub logger: Logger,
}

/// The completion of a linearizable read: called on the fsm pool once the state machine has
/// applied at least the read's index (which it gets), or with why the read failed.
pub type ReadDone = Box<dyn FnOnce(Result<u64>) + Send>;

/// A request to save a snapshot of the state as of the last applied entry.
pub struct SaveRequest {
    /// Where to write it.
    pub storage: Arc<SnapshotStorage>,
    /// Completed with the committed snapshot's meta, or why there is none.
    pub done: Box<dyn FnOnce(Result<SnapshotMeta>) + Send>,
}

enum FsmTask {
    Committed(u64),
    LeaderStart(u64),
    LeaderStop(RaftError),
    StartFollowing(LeaderChangeContext),
    StopFollowing(LeaderChangeContext),
    Error(RaftError),
    SaveSnapshot(SaveRequest),
    LoadSnapshot(SnapshotReader, Box<dyn FnOnce(Result<()>) + Send>),
    Read(u64, Vec<ReadDone>),
}

/// The driver of one node's state machine.
pub struct FsmCaller {
    queue: ExecQueue<FsmTask>,
    applied: Arc<Mutex<LogId>>,
}

/// State owned by the queue's consumer (the only place the state machine is touched).
struct Driver {
    sm: Box<dyn StateMachine>,
    opts: FsmCallerOptions,
    applied: Arc<Mutex<LogId>>,
    /// Invariant: once set, no user callback except `on_shutdown` runs again.
    error: Option<RaftError>,
    /// Reused per pass; holds the data entries handed to `on_apply`.
    batch: Vec<Applied>,
    /// Confirmed reads waiting for the state machine to reach their index.
    reads: BTreeMap<u64, Vec<ReadDone>>,
}

impl FsmCaller {
    /// Starts the FSMCaller for `sm` on the fsm pool.
    pub fn start(sm: Box<dyn StateMachine>, opts: FsmCallerOptions) -> FsmCaller {
        let applied = Arc::new(Mutex::new(opts.bootstrap_applied));
        let queue_opts = ExecQueueOptions {
            logger: opts.logger.clone(),
            ..ExecQueueOptions::new("fsm_caller")
        };
        let pool = opts.pool.clone();
        let mut driver = Driver {
            sm,
            opts,
            applied: applied.clone(),
            error: None,
            batch: Vec::new(),
            reads: BTreeMap::new(),
        };
        let queue = ExecQueue::start(&pool, queue_opts, move |batch: &mut Batch<'_, FsmTask>| {
            driver.run(batch)
        });
        FsmCaller { queue, applied }
    }

    /// The last applied entry.
    pub fn last_applied(&self) -> LogId {
        *self.applied.lock()
    }

    /// Entries up to `index` are committed.
    pub fn on_committed(&self, index: u64) -> Result<()> {
        self.submit(FsmTask::Committed(index))
    }

    /// This node became leader of `term`.
    pub fn on_leader_start(&self, term: u64) -> Result<()> {
        self.submit(FsmTask::LeaderStart(term))
    }

    /// This node stopped leading.
    pub fn on_leader_stop(&self, reason: RaftError) -> Result<()> {
        self.submit(FsmTask::LeaderStop(reason))
    }

    /// This node started following a leader.
    pub fn on_start_following(&self, ctx: LeaderChangeContext) -> Result<()> {
        self.submit(FsmTask::StartFollowing(ctx))
    }

    /// This node stopped following a leader.
    pub fn on_stop_following(&self, ctx: LeaderChangeContext) -> Result<()> {
        self.submit(FsmTask::StopFollowing(ctx))
    }

    /// The node entered its error state for `error`: tell the state machine, apply no more.
    pub fn on_error(&self, error: RaftError) -> Result<()> {
        self.submit(FsmTask::Error(error))
    }

    /// Saves a snapshot after everything committed so far is applied.
    pub fn save_snapshot(&self, req: SaveRequest) {
        if let Err(e) = self.queue.submit(FsmTask::SaveSnapshot(req)) {
            if let FsmTask::SaveSnapshot(req) = e.item {
                (req.done)(Err(e.error));
            }
        }
    }

    /// Replaces the state with `reader`'s snapshot.
    pub fn load_snapshot(&self, reader: SnapshotReader, done: Box<dyn FnOnce(Result<()>) + Send>) {
        if let Err(e) = self.queue.submit(FsmTask::LoadSnapshot(reader, done)) {
            if let FsmTask::LoadSnapshot(_, done) = e.item {
                done(Err(e.error));
            }
        }
    }

    /// Completes `dones` once the state machine has applied `index` (at once if it has).
    pub fn read_when_applied(&self, index: u64, dones: Vec<ReadDone>) {
        if let Err(e) = self.queue.submit(FsmTask::Read(index, dones)) {
            if let FsmTask::Read(_, dones) = e.item {
                dones.into_iter().for_each(|d| d(Err(e.error.clone())));
            }
        }
    }

    /// Stops: what was queued runs, then `on_shutdown`; completions still waiting fail with
    /// `Stopped`.
    pub fn shutdown(&self) {
        self.queue.stop();
    }

    /// Waits for [`FsmCaller::shutdown`] to finish.
    pub fn join(&self) {
        self.queue.join();
    }

    fn submit(&self, task: FsmTask) -> Result<()> {
        self.queue.submit(task).map_err(|r| r.error)
    }
}

impl Driver {
    fn run(&mut self, batch: &mut Batch<'_, FsmTask>) {
        if batch.is_stopped() {
            self.shutdown();
            return;
        }
        // Commits coalesce: apply once up to the highest, but before any task that follows
        // them, so callbacks keep the order in which the node issued them.
        let mut commit_to = 0;
        for task in batch {
            match task {
                FsmTask::Committed(i) => commit_to = commit_to.max(i),
                other => {
                    self.apply_up_to(commit_to);
                    self.handle(other);
                }
            }
        }
        self.apply_up_to(commit_to);
        self.release_reads();
    }

    /// Completes the reads whose index is applied (all of them, failed, in the error state).
    fn release_reads(&mut self) {
        if let Some(e) = &self.error {
            let e = e.clone();
            for done in std::mem::take(&mut self.reads).into_values().flatten() {
                // Already in the error state: a panicking completion changes nothing more.
                let _ = catch_unwind(AssertUnwindSafe(|| done(Err(e.clone()))));
            }
            return;
        }
        let applied = self.applied.lock().index;
        let waiting = self.reads.split_off(&(applied + 1));
        let ready = std::mem::replace(&mut self.reads, waiting);
        // A user's read completion that panics must not take the queue's batch (committed
        // indexes to apply) down with it: like a panic in the state machine, it puts the
        // node in its error state, and the reads not yet completed fail.
        let mut ready = ready.into_values().flatten();
        let completed = catch_unwind(AssertUnwindSafe(|| {
            for done in ready.by_ref() {
                done(Ok(applied));
            }
        }));
        if completed.is_err() {
            self.enter_error(RaftError::ErrorState {
                reason: "a read completion panicked".into(),
            });
            let e = self.error.clone().unwrap_or(RaftError::Stopped);
            for done in ready {
                let _ = catch_unwind(AssertUnwindSafe(|| done(Err(e.clone()))));
            }
            self.release_reads();
        }
    }

    fn handle(&mut self, task: FsmTask) {
        match task {
            FsmTask::Committed(_) => {}
            FsmTask::LeaderStart(term) => {
                self.user("on_leader_start", |sm| sm.on_leader_start(term))
            }
            FsmTask::LeaderStop(e) => self.user("on_leader_stop", |sm| sm.on_leader_stop(&e)),
            FsmTask::StartFollowing(c) => {
                self.user("on_start_following", |sm| sm.on_start_following(&c))
            }
            FsmTask::StopFollowing(c) => {
                self.user("on_stop_following", |sm| sm.on_stop_following(&c))
            }
            FsmTask::Error(e) => self.enter_error(e),
            FsmTask::SaveSnapshot(req) => self.save_snapshot(req),
            FsmTask::LoadSnapshot(reader, done) => done(self.load_snapshot(&reader)),
            FsmTask::Read(index, dones) => {
                self.reads.entry(index).or_default().extend(dones);
                self.release_reads();
            }
        }
    }

    /// Runs a user callback unless in the error state; a panic enters the error state.
    fn user(&mut self, what: &'static str, f: impl FnOnce(&mut dyn StateMachine)) {
        if self.error.is_some() {
            return;
        }
        let sm = &mut *self.sm;
        if catch_unwind(AssertUnwindSafe(|| f(sm))).is_err() {
            self.enter_error(RaftError::ErrorState {
                reason: format!("state machine panicked in {what}"),
            });
        }
    }

    fn enter_error(&mut self, error: RaftError) {
        if self.error.is_some() {
            return;
        }
        slog::error!(self.opts.logger, "state machine enters its error state"; "error" => %error);
        self.error = Some(error.clone());
        self.opts.closures.fail_all(&error);
        let sm = &mut *self.sm;
        if catch_unwind(AssertUnwindSafe(|| sm.on_error(&error))).is_err() {
            slog::error!(self.opts.logger, "state machine panicked in on_error");
        }
        self.opts.listener.on_fsm_error(error);
    }

    fn shutdown(&mut self) {
        let sm = &mut *self.sm;
        if catch_unwind(AssertUnwindSafe(|| sm.on_shutdown())).is_err() {
            slog::error!(self.opts.logger, "state machine panicked in on_shutdown");
        }
        self.opts.closures.fail_all(&RaftError::Stopped);
        let reads = std::mem::take(&mut self.reads).into_values().flatten();
        crate::state_machine::fail_each(reads, &RaftError::Stopped);
    }

    /// Applies committed entries after the last applied one, up to `to`.
    fn apply_up_to(&mut self, to: u64) {
        while self.error.is_none() {
            let from = self.applied.lock().index + 1;
            if from > to {
                return;
            }
            let entries = match self
                .opts
                .log
                .committed_entries(from, to, self.opts.apply_bytes_max)
            {
                Ok(e) if !e.is_empty() => e,
                Ok(_) => {
                    return self.enter_error(RaftError::ErrorState {
                        reason: format!("log returned no committed entries in {from}..={to}"),
                    })
                }
                Err(e) => return self.enter_error(e),
            };
            self.apply_entries(entries);
        }
    }

    fn apply_entries(&mut self, entries: Vec<LogEntry>) {
        let mut stale = Vec::new();
        for entry in entries {
            match entry.kind {
                EntryType::Data => {
                    let done = self.opts.closures.take(entry.id, &mut stale);
                    self.batch.push(Applied::new(
                        entry.id.index,
                        entry.id.term,
                        entry.data,
                        done,
                    ));
                }
                EntryType::NoOp => {
                    self.flush_batch();
                    self.take_done(entry.id, &mut stale);
                    self.set_applied(entry.id);
                }
                EntryType::Configuration => {
                    self.flush_batch();
                    let done = self.take_done(entry.id, &mut stale);
                    self.apply_configuration(&entry, done);
                }
            }
            if self.error.is_some() {
                break;
            }
        }
        self.flush_batch();
        let reason = RaftError::NotLeader { leader: None };
        if crate::state_machine::fail_each(stale, &reason) > 0 {
            self.enter_error(RaftError::ErrorState {
                reason: "a completion panicked".into(),
            });
        }
    }

    fn take_done(&self, id: LogId, stale: &mut Vec<ApplyDone>) -> Option<ApplyDone> {
        self.opts.closures.take(id, stale)
    }

    fn apply_configuration(&mut self, entry: &LogEntry, done: Option<ApplyDone>) {
        let conf = Configuration::decode(&mut Reader::new("configuration entry", &entry.data));
        match conf {
            Ok(conf) => self.user("on_configuration_committed", |sm| {
                sm.on_configuration_committed(&conf)
            }),
            Err(e) => self.enter_error(e),
        }
        if self.error.is_none() {
            self.set_applied(entry.id);
        }
        if let Some(done) = done {
            done(match &self.error {
                None => Ok(bytes::Bytes::new()),
                Some(e) => Err(e.clone()),
            });
        }
    }

    /// Hands the collected data entries to `on_apply`.
    fn flush_batch(&mut self) {
        let Some(last) = self.batch.last().map(|a| LogId::new(a.index, a.term)) else {
            return;
        };
        if let Some(e) = &self.error {
            for applied in self.batch.drain(..) {
                applied.fail(e);
            }
            return;
        }
        let sm = &mut *self.sm;
        let batch = &mut self.batch;
        // On a panic the entries not yet completed are dropped during unwinding and fail
        // (see `Applied`'s Drop).
        let result = catch_unwind(AssertUnwindSafe(|| {
            let mut iter = Iter::new(batch.drain(..));
            sm.on_apply(&mut iter);
            iter.remaining()
        }));
        match result {
            Ok(0) => self.set_applied(last),
            Ok(left) => {
                // As braft: the entries were handed over, so they count as applied; the
                // state machine broke its contract by not looking at them.
                slog::error!(self.opts.logger, "on_apply returned before the end of its batch";
                    "entries_not_taken" => left, "batch_end" => %last);
                self.set_applied(last);
            }
            Err(_) => self.enter_error(RaftError::ErrorState {
                reason: format!("state machine panicked in on_apply (batch ending at {last})"),
            }),
        }
    }

    fn set_applied(&self, id: LogId) {
        *self.applied.lock() = id;
        self.opts.listener.on_applied(id);
    }

    fn save_snapshot(&mut self, req: SaveRequest) {
        if let Some(e) = &self.error {
            return (req.done)(Err(e.clone()));
        }
        let applied = *self.applied.lock();
        if applied.index == 0 {
            return (req.done)(Err(RaftError::invalid("nothing applied yet to snapshot")));
        }
        let conf = match self.opts.log.configuration_at(applied.index) {
            Ok(c) => c,
            Err(e) => return (req.done)(Err(e)),
        };
        let writer = match req.storage.create_writer() {
            Ok(w) => w,
            Err(e) => return (req.done)(Err(e)),
        };
        let (storage, done) = (req.storage, req.done);
        let finish = SnapshotDone::new(move |result| {
            done(result.and_then(|w| storage.commit(w, applied, conf)));
        });
        self.user("on_snapshot_save", |sm| sm.on_snapshot_save(writer, finish));
    }

    fn load_snapshot(&mut self, reader: &SnapshotReader) -> Result<()> {
        if let Some(e) = &self.error {
            return Err(e.clone());
        }
        let sm = &mut *self.sm;
        match catch_unwind(AssertUnwindSafe(|| sm.on_snapshot_load(reader))) {
            Ok(Ok(())) => {
                self.set_applied(reader.meta().last_included);
                Ok(())
            }
            Ok(Err(e)) => Err(e),
            Err(_) => {
                let e = RaftError::ErrorState {
                    reason: "state machine panicked in on_snapshot_load".into(),
                };
                self.enter_error(e.clone());
                Err(e)
            }
        }
    }
}

#[cfg(test)]
mod tests;
