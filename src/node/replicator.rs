//! Replicators (braft's Replicator / ReplicatorGroup): one serial queue per follower on the
//! raft pool, doing the IO the core's progress decides. No thread per follower.
//!
//! The core says *what* to send ([`AppendSend`]: `prev`, the last index, commit); the
//! replicator reads those entries from the log manager as shared buffers (no copy), splits
//! them into frames of at most `append_entries_bytes_max` bytes, and sends them in order
//! through the node's caller, so AppendEntries to one follower leave pipelined, in order, on
//! one connection. A failed send only reports the peer unreachable to the core, which decides
//! what to resend.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Weak};

use parking_lot::Mutex;

use super::event::{NodeEvent, SEND_TIMEOUT};
use super::wire::{self, Envelope};
use super::NodeShared;
use crate::core::message::AppendHeader;
use crate::core::AppendSend;
use crate::exec_queue::{Batch, ExecQueue, ExecQueueOptions};
use crate::log_manager::LogManager;
use crate::pool::PoolHandle;
use crate::rpc::{Caller, Method, Server};
use crate::types::{GroupId, LogId, LogRead, PeerId};

/// What every replicator of a node shares.
pub(crate) struct ReplicatorEnv {
    pub group: GroupId,
    pub me: PeerId,
    pub log: Arc<LogManager>,
    pub server: Arc<Server>,
    pub caller: Caller,
    pub pool: PoolHandle,
    pub node: Weak<NodeShared>,
    pub append_entries_bytes_max: usize,
    pub entries_per_append_max: usize,
    pub logger: slog::Logger,
}

/// Counters of one replicator, for status.
#[derive(Default)]
pub(crate) struct ReplicatorStats {
    /// AppendEntries frames sent.
    pub frames: AtomicU64,
    /// Entries sent.
    pub entries: AtomicU64,
    /// The first index the core asked for that the log no longer holds (0: none): the
    /// follower is behind the compaction point and needs a snapshot.
    pub behind_compaction: AtomicU64,
}

struct Replicator {
    queue: ExecQueue<AppendSend>,
    stats: Arc<ReplicatorStats>,
}

/// The replicators of a leader, one per other peer of its configuration.
pub(crate) struct ReplicatorGroup {
    env: Arc<ReplicatorEnv>,
    /// Invariant: `Some` exactly while this node leads (between `start` and `stop`).
    active: Mutex<Option<HashMap<PeerId, Replicator>>>,
    /// Queues stopped at a step-down that may still be running their last sends: `join`
    /// waits for them (they read the log and write to peers). Finished ones are dropped at
    /// each stop. Never held together with `active`.
    stopping: Mutex<Vec<ExecQueue<AppendSend>>>,
}

impl ReplicatorGroup {
    /// A group with no replicators: this node does not lead yet.
    pub fn new(env: ReplicatorEnv) -> ReplicatorGroup {
        ReplicatorGroup {
            env: Arc::new(env),
            active: Mutex::new(None),
            stopping: Mutex::new(Vec::new()),
        }
    }

    /// Starts a replicator for every peer in `peers` except this node (became leader).
    pub fn start(&self, term: u64, peers: impl IntoIterator<Item = PeerId>) {
        let mut active = self.active.lock();
        let reps = active.get_or_insert_with(HashMap::new);
        for peer in peers.into_iter().filter(|p| *p != self.env.me) {
            reps.entry(peer)
                .or_insert_with(|| start_one(&self.env, peer, term));
        }
    }

    /// Stops every replicator (stepped down, error, shutdown): sends already queued still
    /// go out (old-term frames the peers refuse), later ones are refused.
    pub fn stop(&self) {
        let reps = self.active.lock().take();
        let mut stopping = self.stopping.lock();
        stopping.retain(|q| !q.is_finished());
        for rep in reps.into_iter().flat_map(HashMap::into_values) {
            rep.queue.stop();
            stopping.push(rep.queue);
        }
    }

    /// True while leading.
    pub fn is_active(&self) -> bool {
        self.active.lock().is_some()
    }

    /// Queues an AppendEntries for `to` (a replicator is started for a peer seen first here).
    pub fn send(&self, to: PeerId, send: AppendSend) {
        let mut active = self.active.lock();
        let Some(reps) = active.as_mut() else {
            return; // not leading any more: the core's next leader term starts afresh
        };
        let rep = reps
            .entry(to)
            .or_insert_with(|| start_one(&self.env, to, send.term));
        if let Err(rejected) = rep.queue.submit(send) {
            slog::debug!(self.env.logger, "replicator refused a send"; "to" => %to,
                "error" => %rejected.error);
        }
    }

    /// Per follower: (frames sent, entries sent, first index behind compaction or 0).
    pub fn stats(&self) -> Vec<(PeerId, u64, u64, u64)> {
        let active = self.active.lock();
        let mut out: Vec<_> = active
            .iter()
            .flat_map(|m| m.iter())
            .map(|(p, r)| {
                let s = &r.stats;
                (
                    *p,
                    s.frames.load(Ordering::Relaxed),
                    s.entries.load(Ordering::Relaxed),
                    s.behind_compaction.load(Ordering::Relaxed),
                )
            })
            .collect();
        out.sort_by_key(|(p, ..)| *p);
        out
    }

    /// Stops the replicators and waits for their queues, those stopped before included
    /// (shutdown): nothing reads the log or sends for this node after it returns.
    pub fn join(&self) {
        self.stop();
        let stopping = std::mem::take(&mut *self.stopping.lock());
        for queue in stopping {
            queue.join();
        }
    }
}

fn start_one(env: &Arc<ReplicatorEnv>, peer: PeerId, term: u64) -> Replicator {
    let stats = Arc::new(ReplicatorStats::default());
    let (e, s) = (env.clone(), stats.clone());
    let opts = ExecQueueOptions {
        logger: env.logger.clone(),
        ..ExecQueueOptions::new("replicator")
    };
    slog::debug!(env.logger, "replicator started"; "to" => %peer, "term" => term);
    let queue = ExecQueue::start(&env.pool, opts, move |batch: &mut Batch<'_, AppendSend>| {
        for send in batch {
            replicate(&e, &s, peer, send);
        }
    });
    Replicator { queue, stats }
}

/// Sends one AppendSend, split into frames within the byte and count budgets.
fn replicate(env: &ReplicatorEnv, stats: &ReplicatorStats, to: PeerId, send: AppendSend) {
    let envelope = Envelope {
        group: env.group.clone(),
        from: env.me,
        to,
    };
    let mut prev = send.prev;
    loop {
        let want = send.last_index.saturating_sub(prev.index);
        let count = (want as usize).min(env.entries_per_append_max);
        let entries = if count == 0 {
            Vec::new()
        } else {
            env.log
                .entries(prev.index + 1, count, env.append_entries_bytes_max)
        };
        if count > 0 && entries.is_empty() {
            // The log no longer holds what the core asked for (compacted away, or truncated
            // by a newer term). The core learns it from the follower's rejection or its own
            // step-down and answers with a snapshot install or a fresh send.
            stats
                .behind_compaction
                .store(prev.index + 1, Ordering::Relaxed);
            slog::warn!(env.logger, "follower needs entries the log no longer holds";
                "to" => %to, "from_index" => prev.index + 1);
            return;
        }
        // The entries were read after the core chose `prev`; a truncation in between (this
        // node stepped down and a newer leader overwrote the tail) would pair `prev` with
        // entries that do not follow it. `entries` answers only with entries the log held
        // at one moment, and `prev` is checked after that read, so a truncation before or
        // during it is caught; the follower's own check cannot catch it, as the header's
        // `prev` is still true of the old log.
        if !entries.is_empty() && env.log.term_at(prev.index) != Some(prev.term) {
            slog::debug!(env.logger, "log changed under a send; dropped";
                "to" => %to, "prev" => %prev);
            return;
        }
        let next_prev = entries.last().map_or(prev, |e| e.id);
        let header = AppendHeader {
            term: send.term,
            prev,
            commit: send.commit,
            sent_ms: send.sent_ms,
            round: send.round,
        };
        let body = wire::encode_append(&envelope, &header, &entries);
        stats.frames.fetch_add(1, Ordering::Relaxed);
        stats
            .entries
            .fetch_add(entries.len() as u64, Ordering::Relaxed);
        let node = env.node.clone();
        env.server.call(
            &env.caller,
            to.addr(),
            Method::AppendEntries,
            body,
            SEND_TIMEOUT,
            move |r| {
                if r.is_err() {
                    if let Some(shared) = node.upgrade() {
                        shared.submit(NodeEvent::PeerUnreachable(to));
                    }
                }
            },
        );
        if next_prev.index >= send.last_index || entries.is_empty() {
            return;
        }
        prev = LogId::new(next_prev.index, next_prev.term);
    }
}
