//! [`LogView`]: the core's own picture of the log's *shape* (index -> term), its commit index
//! and its durable prefix. Payloads stay with the shell's LogManager.
//!
//! Terms never decrease along a Raft log, so the shape is a short list of runs (one per term
//! present), built once from the shell's [`LogRead`] by binary search when the core starts and
//! then kept up to date by the core's own decisions (appends and truncations it orders). The
//! core therefore never reads the shell's log during a step and never sees it half-updated.
//!
//! Durability: every log write the core orders is queued here; a [`LogDurable`] report names
//! the last LogId of one write and covers it and everything before it. A report is matched to
//! the *oldest* outstanding write ending at that LogId, and the durable prefix is capped below
//! anything a later, still outstanding write touches. So an old report can never vouch for an
//! entry that was truncated and re-appended after it, even with the same LogId (RELIABILITY.md
//! trap 10).
//!
//! [`LogDurable`]: crate::core::Event::LogDurable

use std::collections::VecDeque;

use crate::core::message::EntryMeta;
use crate::error::{RaftError, Result};
use crate::types::{LogId, LogRead};

/// Entries `start..` (up to the next run's start, or the last index) all have `term`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Run {
    start: u64,
    term: u64,
}

/// A log write ordered by the core and not yet reported durable.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Write {
    Append {
        first: u64,
        last: LogId,
    },
    Truncate {
        after: u64,
    },
    /// The log was replaced by a snapshot ending at `base` (an install).
    Reset {
        base: u64,
    },
}

impl Write {
    /// The lowest index whose content this write changes.
    fn first_touched(&self) -> u64 {
        match *self {
            Write::Append { first, .. } => first,
            Write::Truncate { after } => after + 1,
            Write::Reset { base } => base + 1,
        }
    }
}

/// The log's shape, commit index and durable prefix.
#[derive(Clone, Debug)]
pub(crate) struct LogView {
    /// The entry just before the first one held: `(0, 0)` for a log that starts at 1, the
    /// snapshot's last entry otherwise.
    base: LogId,
    /// Invariant: starts strictly increase from `base.index + 1`, terms strictly increase from
    /// at least `base.term`, every start is `<= last_index`.
    runs: Vec<Run>,
    /// Invariant: `last_index >= base.index`; the log is empty when they are equal.
    last_index: u64,
    /// Invariant: `base.index <= committed <= last_index`; never decreases. Moved by the
    /// leader's quorum and the follower's leader commit.
    committed: u64,
    /// Invariant: `durable <= last_index`: entries `..= durable` of the current log are on
    /// disk. Raised by reports, lowered by truncations.
    durable: u64,
    /// Invariant: writes in the order the core gave them; each `Append` ends at an entry the
    /// write created (it may have been truncated since).
    writes: VecDeque<Write>,
}

impl LogView {
    /// The shape of `log`, which must be durable, with `committed` known committed.
    pub(crate) fn from_log(log: &dyn LogRead, committed: u64) -> Result<LogView> {
        let first = log.first_index();
        let last = log.last_index();
        let corrupt = |why: String| Err(RaftError::invalid(format!("log read: {why}")));
        if first == 0 || last + 1 < first {
            return corrupt(format!(
                "first index {first} and last index {last} disagree"
            ));
        }
        let Some(base_term) = log.term_at(first - 1) else {
            return corrupt(format!(
                "the term before the first index {first} is unknown"
            ));
        };
        let mut view = LogView {
            base: LogId::new(first - 1, base_term),
            runs: Vec::new(),
            last_index: last,
            committed: committed.clamp(first - 1, last),
            durable: last,
            writes: VecDeque::new(),
        };
        let mut start = first;
        let mut prev_term = base_term;
        while start <= last {
            let Some(term) = log.term_at(start) else {
                return corrupt(format!("no term at index {start} within {first}..={last}"));
            };
            if term < prev_term {
                return corrupt(format!("term {term} at index {start} is below {prev_term}"));
            }
            view.runs.push(Run { start, term });
            // Binary search for the last index of this term: terms never decrease.
            let (mut lo, mut hi) = (start, last);
            while lo < hi {
                let mid = lo + (hi - lo).div_ceil(2);
                match log.term_at(mid) {
                    Some(t) if t <= term => lo = mid,
                    Some(_) => hi = mid - 1,
                    None => return corrupt(format!("no term at index {mid}")),
                }
            }
            if log.term_at(lo) != Some(term) {
                return corrupt(format!("terms between {start} and {lo} are not monotonic"));
            }
            start = lo + 1;
            prev_term = term;
        }
        Ok(view)
    }

    /// The entry before the first one held (the snapshot's last, or `(0, 0)`).
    pub(crate) fn base(&self) -> LogId {
        self.base
    }

    /// The last index held (`first_index() - 1` when empty).
    pub(crate) fn last_index(&self) -> u64 {
        self.last_index
    }

    /// The last entry's LogId (the base when empty).
    pub(crate) fn last_id(&self) -> LogId {
        match self.runs.last() {
            Some(r) => LogId::new(self.last_index, r.term),
            None => self.base,
        }
    }

    /// The commit index.
    pub(crate) fn committed(&self) -> u64 {
        self.committed
    }

    /// The last index of the durable prefix.
    pub(crate) fn durable(&self) -> u64 {
        self.durable
    }

    /// The term of the entry at `index`: known for `first_index() - 1 ..= last_index()`.
    pub(crate) fn term_at(&self, index: u64) -> Option<u64> {
        if index == self.base.index {
            return Some(self.base.term);
        }
        if index < self.base.index || index > self.last_index {
            return None;
        }
        let run = self.runs.partition_point(|r| r.start <= index);
        Some(self.runs[run - 1].term)
    }

    /// True if this log holds exactly `id`.
    pub(crate) fn matches(&self, id: LogId) -> bool {
        self.term_at(id.index) == Some(id.term)
    }

    /// The last entry at or below `index` whose term is at most `term` (the conflict hint of
    /// fast back-off); the base when there is none.
    pub(crate) fn last_at_or_below(&self, index: u64, term: u64) -> LogId {
        let index = index.min(self.last_index);
        let below = self
            .runs
            .partition_point(|r| r.start <= index && r.term <= term);
        match below {
            0 => self.base,
            n => {
                let end = match self.runs.get(n) {
                    Some(next) => next.start - 1,
                    None => self.last_index,
                };
                LogId::new(end.min(index), self.runs[n - 1].term)
            }
        }
    }

    /// Appends `count` entries of `term` (a leader's batch); returns the first index and the
    /// last LogId. Queues the write.
    pub(crate) fn append_local(&mut self, count: u64, term: u64) -> (u64, LogId) {
        debug_assert!(count > 0);
        debug_assert!(
            term >= self.last_id().term,
            "a leader appends only its own term"
        );
        let first = self.last_index + 1;
        if self.runs.last().is_none_or(|r| r.term != term) {
            self.runs.push(Run { start: first, term });
        }
        self.last_index += count;
        let last = LogId::new(self.last_index, term);
        self.writes.push_back(Write::Append { first, last });
        (first, last)
    }

    /// Appends received entries that directly follow the last one. Queues the write.
    pub(crate) fn append_received(&mut self, entries: &[EntryMeta]) {
        let Some(last) = entries.last() else { return };
        let first = self.last_index + 1;
        debug_assert_eq!(
            entries[0].id.index, first,
            "received entries must follow the log"
        );
        for e in entries {
            if self.runs.last().is_none_or(|r| r.term != e.id.term) {
                debug_assert!(
                    e.id.term > self.last_id().term
                        || (self.runs.is_empty() && e.id.term >= self.base.term)
                );
                self.runs.push(Run {
                    start: e.id.index,
                    term: e.id.term,
                });
            }
            self.last_index = e.id.index;
        }
        self.writes.push_back(Write::Append {
            first,
            last: last.id,
        });
    }

    /// Drops every entry after `after`. Queues the write.
    ///
    /// # Panics
    /// If `after` is below the commit index, unless `below_commit_allowed` (a bug switch).
    pub(crate) fn truncate_after(&mut self, after: u64, below_commit_allowed: bool) {
        assert!(
            after >= self.committed || below_commit_allowed,
            "invariant: truncation after {after} would drop committed entries (commit {})",
            self.committed
        );
        if after >= self.last_index {
            return;
        }
        let keep = self.runs.partition_point(|r| r.start <= after);
        self.runs.truncate(keep);
        self.last_index = after.max(self.base.index);
        self.durable = self.durable.min(self.last_index);
        self.writes.push_back(Write::Truncate { after });
    }

    /// Forgets the entries up to `upto` (covered by a durable snapshot): the log then starts
    /// at `upto + 1`. Only committed entries are compacted.
    ///
    /// # Panics
    /// If `upto` is beyond the commit index (a bug of the caller).
    pub(crate) fn compact_to(&mut self, upto: u64) {
        assert!(
            upto <= self.committed,
            "invariant: compaction to {upto} beyond the commit index {}",
            self.committed
        );
        if upto <= self.base.index {
            return;
        }
        let term = self
            .term_at(upto)
            .expect("invariant: upto is within the log");
        let drop = self.runs.partition_point(|r| r.start <= upto);
        // The run holding `upto` continues after it, unless the next run starts right there.
        let keep_tail =
            upto < self.last_index && self.runs.get(drop).is_none_or(|r| r.start > upto + 1);
        self.runs.drain(..drop);
        if keep_tail {
            self.runs.insert(
                0,
                Run {
                    start: upto + 1,
                    term,
                },
            );
        }
        self.base = LogId::new(upto, term);
        self.durable = self.durable.max(upto);
    }

    /// Replaces the whole log by a snapshot ending at `base` (a follower's install): the log
    /// then starts at `base.index + 1`, everything up to `base` committed and durable.
    ///
    /// # Panics
    /// If `base` is not beyond the commit index (installs of stale snapshots are refused
    /// before they start).
    pub(crate) fn reset_to(&mut self, base: LogId) {
        assert!(
            base.index > self.committed,
            "invariant: an install at {base} must be beyond the commit index {}",
            self.committed
        );
        self.base = base;
        self.runs.clear();
        self.last_index = base.index;
        self.committed = base.index;
        self.durable = base.index;
        self.writes.push_back(Write::Reset { base: base.index });
    }

    /// Raises the commit index to `index` (never lowers it).
    pub(crate) fn commit_to(&mut self, index: u64) -> bool {
        debug_assert!(index <= self.last_index, "commit {index} beyond the log");
        if index > self.committed {
            self.committed = index;
            return true;
        }
        false
    }

    /// A durability report for the write that ended at `id`. Returns true if the durable
    /// prefix grew.
    pub(crate) fn on_durable(&mut self, id: LogId) -> bool {
        let found = self
            .writes
            .iter()
            .position(|w| matches!(w, Write::Append { last, .. } if *last == id));
        let Some(pos) = found else { return false };
        self.writes.drain(..=pos);
        // The log as it stood after that write is on disk up to `id`; what later writes still
        // in flight touch is not.
        let cap = self
            .writes
            .iter()
            .map(|w| w.first_touched() - 1)
            .min()
            .unwrap_or(u64::MAX);
        let durable = id.index.min(cap).min(self.last_index);
        if durable > self.durable {
            self.durable = durable;
            return true;
        }
        false
    }

    /// The number of writes not yet reported durable.
    #[cfg(test)]
    pub(crate) fn writes_outstanding(&self) -> usize {
        self.writes.len()
    }

    /// Checks the invariants above.
    pub(crate) fn check(&self) -> std::result::Result<(), String> {
        if self.last_index < self.base.index {
            return Err(format!("last {} below base {}", self.last_index, self.base));
        }
        if self.committed < self.base.index || self.committed > self.last_index {
            return Err(format!(
                "commit {} outside {}..={}",
                self.committed, self.base.index, self.last_index
            ));
        }
        if self.durable > self.last_index {
            return Err(format!(
                "durable {} beyond last {}",
                self.durable, self.last_index
            ));
        }
        let mut prev = Run {
            start: self.base.index,
            term: self.base.term,
        };
        for (i, r) in self.runs.iter().enumerate() {
            let first_ok = i > 0 || r.start == self.base.index + 1;
            if !first_ok || r.start <= prev.start || r.term < prev.term || r.start > self.last_index
            {
                return Err(format!(
                    "bad term run {r:?} after {prev:?} (last {})",
                    self.last_index
                ));
            }
            if i > 0 && r.term == prev.term {
                return Err(format!("two runs of term {}", r.term));
            }
            prev = *r;
        }
        if self.runs.is_empty() != (self.last_index == self.base.index) {
            return Err("runs and last index disagree on emptiness".into());
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests;
