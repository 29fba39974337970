//! Reads of the [`LogManager`]: entries (one, or a range within a byte budget for
//! AppendEntries), terms across the snapshot boundary ([`LogRead`]), positions and
//! configurations.
//!
//! Any thread. The state lock is held only to look at the in-memory tail; entries on disk are
//! read from the storage after it is released (storage reads are lock-free mapping reads).
//! Lock order: LogManager state -> storage index (term lookups under the state lock).

use crate::log_manager::{ConfigurationEntry, LogManager, Shared, State};
use crate::types::{LogEntry, LogId, LogRead};

impl Shared {
    /// The term at `index` as the LogManager sees it: 0 at index 0, the snapshot's at its
    /// last included index, then the log's.
    pub(super) fn term_at_locked(&self, st: &State, index: u64) -> Option<u64> {
        if index == 0 {
            return Some(0);
        }
        if index == st.last_snapshot_id.index {
            return Some(st.last_snapshot_id.term);
        }
        if let Some(prev) = st.prev_log_id.filter(|p| p.index == index) {
            return Some(prev.term);
        }
        if index < st.first_log_index || index > st.last_log_index {
            return None;
        }
        if let Some(m) = st.memory_entry(index) {
            return Some(m.id.term);
        }
        self.storage.term_at(index)
    }

    /// The term of the last entry (or of the snapshot when the log is empty).
    pub(super) fn last_term(&self, st: &State) -> u64 {
        self.term_at_locked(st, st.last_log_index).unwrap_or(0)
    }
}

impl State {
    /// The in-memory entry at `index`, if it is still in the tail.
    pub(super) fn memory_entry(&self, index: u64) -> Option<&LogEntry> {
        let front = self.memory.front()?.entry.id.index;
        let pos = index.checked_sub(front)?;
        self.memory.get(pos as usize).map(|m| &m.entry)
    }

    /// Index of the first entry held in memory (`last_log_index + 1` when none).
    fn memory_first(&self) -> u64 {
        self.memory
            .front()
            .map_or(self.last_log_index + 1, |m| m.entry.id.index)
    }
}

impl LogManager {
    /// The entry at `index`, if the log holds it. Its payload is shared, never copied.
    pub fn get(&self, index: u64) -> Option<LogEntry> {
        {
            let st = self.shared.state.lock();
            if index < st.first_log_index || index > st.last_log_index {
                return None;
            }
            if let Some(e) = st.memory_entry(index) {
                return Some(e.clone());
            }
        }
        // Not in the tail: on disk, and only a later truncation (which the caller orders)
        // could remove it.
        self.shared.storage.get(index)
    }

    /// Entries from `from` on, for one AppendEntries: at most `max_count` of them and at
    /// most `max_bytes` of payload, but always at least one if `from` exists (so that an
    /// entry larger than the budget can still be sent). Empty if `from` is not in the log.
    ///
    /// The entries returned were all in the log at one moment: the disk part is read outside
    /// the lock, so a truncation (or reset) meanwhile, which may have replaced them, empties
    /// the answer instead of mixing two logs.
    pub fn entries(&self, from: u64, max_count: usize, max_bytes: usize) -> Vec<LogEntry> {
        let (disk_end, tail, generation) = {
            let st = self.shared.state.lock();
            if from < st.first_log_index || from > st.last_log_index || max_count == 0 {
                return Vec::new();
            }
            let end = st.last_log_index.min(from + max_count as u64 - 1);
            let mem_first = st.memory_first().max(from);
            let tail: Vec<LogEntry> = (mem_first..=end)
                .filter_map(|i| st.memory_entry(i).cloned())
                .collect();
            (mem_first.min(end + 1), tail, st.generation)
        };
        let mut out = Vec::with_capacity(tail.len() + (disk_end - from) as usize);
        let mut bytes = 0usize;
        let disk = (from..disk_end).map_while(|i| self.shared.storage.get(i));
        for e in disk.chain(tail) {
            if !out.is_empty() && bytes + e.data.len() > max_bytes {
                break;
            }
            bytes += e.data.len();
            out.push(e);
        }
        // A racing compaction may have removed the disk part: only a contiguous run counts.
        if out.first().is_some_and(|e| e.id.index != from) {
            out.clear();
        }
        if disk_end > from && self.shared.state.lock().generation != generation {
            out.clear();
        }
        out
    }

    /// The first index the log holds.
    pub fn first_log_index(&self) -> u64 {
        self.shared.state.lock().first_log_index
    }

    /// The last index the log holds (the snapshot's last index when the log is empty after
    /// a snapshot).
    pub fn last_log_index(&self) -> u64 {
        self.shared.state.lock().last_log_index
    }

    /// The position of the last entry, or of the snapshot when the log is empty after it.
    pub fn last_log_id(&self) -> LogId {
        let st = self.shared.state.lock();
        let last = st.last_log_index;
        LogId::new(last, self.shared.term_at_locked(&st, last).unwrap_or(0))
    }

    /// The last entry reported durable (what the storage holds).
    pub fn last_durable_id(&self) -> LogId {
        self.shared.state.lock().disk_id
    }

    /// The snapshot recorded with [`LogManager::set_snapshot`] ((0, 0) when none).
    pub fn last_snapshot_id(&self) -> LogId {
        self.shared.state.lock().last_snapshot_id
    }

    /// The committed index the node reported.
    pub fn committed_index(&self) -> u64 {
        self.shared.state.lock().committed_index
    }

    /// Payload bytes appended but not yet durable (for the node's `Busy` bound).
    pub fn unsynced_bytes(&self) -> usize {
        self.shared.state.lock().memory_bytes
    }

    /// The configuration in force at `index` (from the log or the snapshot).
    pub fn configuration_at(&self, index: u64) -> ConfigurationEntry {
        self.shared.state.lock().config.get(index)
    }

    /// The newest configuration the log or the snapshot holds.
    pub fn last_configuration(&self) -> ConfigurationEntry {
        self.shared.state.lock().config.last_configuration()
    }

    /// Every configuration entry the log holds after `index`, oldest first.
    pub fn configurations_after(&self, index: u64) -> Vec<ConfigurationEntry> {
        self.shared.state.lock().config.entries_after(index)
    }
}

impl LogRead for LogManager {
    fn first_index(&self) -> u64 {
        self.first_log_index()
    }

    fn last_index(&self) -> u64 {
        self.last_log_index()
    }

    /// Answers for `0`, for the snapshot's last included index, and for every entry held.
    fn term_at(&self, index: u64) -> Option<u64> {
        let st = self.shared.state.lock();
        self.shared.term_at_locked(&st, index)
    }
}
