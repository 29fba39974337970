//! [`MemoryLogStorage`]: the [`LogStorage`] contract over a `VecDeque` in memory.
//!
//! For tests (it is the model the property tests hold [`SegmentLogStorage`] to), benches and
//! users who want no disk. Nothing is durable; `sync` is a no-op. One short lock per call, no
//! IO, no threads.
//!
//! [`SegmentLogStorage`]: crate::log_storage::SegmentLogStorage

use std::collections::VecDeque;

use parking_lot::RwLock;

use crate::error::{RaftError, Result};
use crate::log_storage::LogStorage;
use crate::types::LogEntry;

/// A log held in memory.
#[derive(Default)]
pub struct MemoryLogStorage {
    inner: RwLock<Inner>,
}

struct Inner {
    /// Invariant: `entries[i].id.index == first_log_index + i`.
    first_log_index: u64,
    entries: VecDeque<LogEntry>,
    closed: bool,
}

impl Default for Inner {
    fn default() -> Inner {
        Inner {
            first_log_index: 1,
            entries: VecDeque::new(),
            closed: false,
        }
    }
}

impl Inner {
    fn last(&self) -> u64 {
        self.first_log_index + self.entries.len() as u64 - 1
    }

    fn at(&self, index: u64) -> Option<&LogEntry> {
        let pos = index.checked_sub(self.first_log_index)?;
        self.entries.get(usize::try_from(pos).ok()?)
    }

    fn check_open(&self) -> Result<()> {
        if self.closed {
            return Err(RaftError::Stopped);
        }
        Ok(())
    }
}

impl MemoryLogStorage {
    /// An empty log whose first index is 1.
    pub fn new() -> MemoryLogStorage {
        MemoryLogStorage::default()
    }
}

/// Checks that `entries` is non-empty and contiguous from `next`.
pub(crate) fn check_batch(entries: &[LogEntry], next: u64) -> Result<()> {
    let Some(first) = entries.first() else {
        return Err(RaftError::invalid("append_entries: empty batch"));
    };
    if first.id.index != next {
        return Err(RaftError::invalid(format!(
            "append_entries: batch starts at {}, the log expects {next}",
            first.id
        )));
    }
    for pair in entries.windows(2) {
        if pair[1].id.index != pair[0].id.index + 1 {
            return Err(RaftError::invalid(format!(
                "append_entries: {} follows {}: indexes must be contiguous",
                pair[1].id, pair[0].id
            )));
        }
    }
    Ok(())
}

impl LogStorage for MemoryLogStorage {
    fn first_log_index(&self) -> u64 {
        self.inner.read().first_log_index
    }

    fn last_log_index(&self) -> u64 {
        self.inner.read().last()
    }

    fn term_at(&self, index: u64) -> Option<u64> {
        self.inner.read().at(index).map(|e| e.id.term)
    }

    fn get(&self, index: u64) -> Option<LogEntry> {
        self.inner.read().at(index).cloned()
    }

    fn append_entries(&self, entries: &[LogEntry]) -> Result<()> {
        let mut inner = self.inner.write();
        inner.check_open()?;
        check_batch(entries, inner.last() + 1)?;
        inner.entries.extend(entries.iter().cloned());
        Ok(())
    }

    fn truncate_prefix(&self, first_index_kept: u64) -> Result<()> {
        let mut inner = self.inner.write();
        inner.check_open()?;
        if first_index_kept <= inner.first_log_index {
            return Ok(());
        }
        if first_index_kept > inner.last() + 1 {
            return Err(RaftError::invalid(format!(
                "truncate_prefix({first_index_kept}) is beyond last index {} + 1; use reset",
                inner.last()
            )));
        }
        let n = (first_index_kept - inner.first_log_index) as usize;
        inner.entries.drain(..n);
        inner.first_log_index = first_index_kept;
        Ok(())
    }

    fn truncate_suffix(&self, last_index_kept: u64) -> Result<()> {
        let mut inner = self.inner.write();
        inner.check_open()?;
        if last_index_kept >= inner.last() {
            return Ok(());
        }
        if last_index_kept + 1 < inner.first_log_index {
            return Err(RaftError::invalid(format!(
                "truncate_suffix({last_index_kept}) is below first index {} - 1",
                inner.first_log_index
            )));
        }
        let keep = (last_index_kept + 1 - inner.first_log_index) as usize;
        inner.entries.truncate(keep);
        Ok(())
    }

    fn reset(&self, next_log_index: u64) -> Result<()> {
        let mut inner = self.inner.write();
        inner.check_open()?;
        if next_log_index == 0 {
            return Err(RaftError::invalid("reset(0): log indexes start at 1"));
        }
        inner.entries.clear();
        inner.first_log_index = next_log_index;
        Ok(())
    }

    fn sync(&self) -> Result<()> {
        Ok(())
    }

    fn close(&self) -> Result<()> {
        self.inner.write().closed = true;
        Ok(())
    }
}
