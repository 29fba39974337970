//! [`ConfigurationManager`] (braft's): every configuration the log holds, by index, plus the
//! one recorded in the newest snapshot, so that the configuration in force at any index can
//! be found.
//!
//! A plain value owned by the LogManager and changed under its lock, in step with the log:
//! appends add, truncations remove. No IO, no threads.

use std::collections::VecDeque;

use crate::error::{RaftError, Result};
use crate::types::{Configuration, LogId};

/// A configuration and the log position where it was recorded.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ConfigurationEntry {
    /// The configuration entry's position ((0, 0) for "none yet").
    pub id: LogId,
    /// The peers.
    pub conf: Configuration,
}

/// The configurations of a log.
#[derive(Debug, Default)]
pub struct ConfigurationManager {
    /// Invariant: strictly ascending by index.
    entries: VecDeque<ConfigurationEntry>,
    /// The configuration of the newest snapshot ((0, 0) and empty when none).
    snapshot: ConfigurationEntry,
}

impl ConfigurationManager {
    /// An empty manager.
    pub fn new() -> ConfigurationManager {
        ConfigurationManager::default()
    }

    /// Records the configuration entry at `entry.id`, which must follow every one recorded.
    pub fn add(&mut self, entry: ConfigurationEntry) -> Result<()> {
        if let Some(last) = self.entries.back() {
            if last.id.index >= entry.id.index {
                return Err(RaftError::invalid(format!(
                    "configuration at {} does not follow the one at {}",
                    entry.id, last.id
                )));
            }
        }
        self.entries.push_back(entry);
        Ok(())
    }

    /// Forgets configurations before `first_index_kept` (the log was compacted).
    pub fn truncate_prefix(&mut self, first_index_kept: u64) {
        while self
            .entries
            .front()
            .is_some_and(|e| e.id.index < first_index_kept)
        {
            self.entries.pop_front();
        }
    }

    /// Forgets configurations after `last_index_kept` (the log's suffix was discarded).
    pub fn truncate_suffix(&mut self, last_index_kept: u64) {
        while self
            .entries
            .back()
            .is_some_and(|e| e.id.index > last_index_kept)
        {
            self.entries.pop_back();
        }
    }

    /// Records the configuration of a new snapshot.
    pub fn set_snapshot(&mut self, entry: ConfigurationEntry) {
        debug_assert!(entry.id.index >= self.snapshot.id.index);
        self.snapshot = entry;
    }

    /// The snapshot's configuration.
    pub fn snapshot(&self) -> &ConfigurationEntry {
        &self.snapshot
    }

    /// The configuration in force at `index`: the newest recorded at or before it, the
    /// snapshot's if none is, or the empty entry when nothing is known.
    pub fn get(&self, index: u64) -> ConfigurationEntry {
        let pos = self.entries.partition_point(|e| e.id.index <= index);
        let from_log = pos.checked_sub(1).map(|p| &self.entries[p]);
        let from_snapshot = Some(&self.snapshot).filter(|s| s.id.index <= index);
        match (from_log, from_snapshot) {
            (Some(e), Some(s)) if s.id.index > e.id.index => s.clone(),
            (Some(e), _) => e.clone(),
            (None, Some(s)) => s.clone(),
            (None, None) => ConfigurationEntry::default(),
        }
    }

    /// The log's configuration entries after `index`, oldest first.
    pub fn entries_after(&self, index: u64) -> Vec<ConfigurationEntry> {
        self.entries
            .iter()
            .filter(|e| e.id.index > index)
            .cloned()
            .collect()
    }

    /// The newest configuration known (from the log or the snapshot).
    pub fn last_configuration(&self) -> ConfigurationEntry {
        match self.entries.back() {
            Some(e) if e.id.index >= self.snapshot.id.index => e.clone(),
            _ => self.snapshot.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn conf(peers: &str) -> Configuration {
        Configuration::parse_voters(peers).unwrap()
    }

    fn entry(index: u64, peers: &str) -> ConfigurationEntry {
        ConfigurationEntry {
            id: LogId::new(index, 1),
            conf: conf(peers),
        }
    }

    #[test]
    fn configuration_by_index_across_truncations_and_the_snapshot() {
        let mut m = ConfigurationManager::new();
        assert_eq!(m.get(5), ConfigurationEntry::default());
        m.add(entry(3, "1.1.1.1:1:0")).unwrap();
        m.add(entry(7, "1.1.1.1:1:0,1.1.1.2:1:0")).unwrap();
        assert!(m.add(entry(7, "1.1.1.3:1:0")).is_err());
        assert_eq!(m.get(2), ConfigurationEntry::default());
        assert_eq!(m.get(3), entry(3, "1.1.1.1:1:0"));
        assert_eq!(m.get(6), entry(3, "1.1.1.1:1:0"));
        assert_eq!(m.get(100), entry(7, "1.1.1.1:1:0,1.1.1.2:1:0"));
        m.truncate_suffix(6);
        assert_eq!(m.last_configuration(), entry(3, "1.1.1.1:1:0"));
        m.set_snapshot(entry(5, "1.1.1.9:1:0"));
        assert_eq!(m.get(4), entry(3, "1.1.1.1:1:0"));
        assert_eq!(m.get(5), entry(5, "1.1.1.9:1:0"));
        assert_eq!(m.last_configuration(), entry(5, "1.1.1.9:1:0"));
        m.truncate_prefix(6);
        assert_eq!(m.get(4), ConfigurationEntry::default());
        m.add(entry(9, "1.1.1.4:1:0")).unwrap();
        assert_eq!(m.get(8), entry(5, "1.1.1.9:1:0"));
        assert_eq!(m.last_configuration(), entry(9, "1.1.1.4:1:0"));
    }
}
