//! [`Membership`]: the configurations found in the log, so the effective one is always the
//! newest in the log (committed or not, as Raft's membership rule says) and a truncation that
//! removes a configuration entry restores the one before it.
//!
//! Part 1 never proposes configuration changes; it follows configuration entries it receives
//! and starts from the configuration the shell restored. Joint-consensus decisions and the
//! leader side come with part 2 on top of this list.

use crate::error::{RaftError, Result};
use crate::types::Configuration;

/// The configuration entries of the log, oldest first.
///
/// Invariant: non-empty; indexes strictly increase; the first element is the configuration
/// the core started from (from the snapshot or the log, at its index, or index 0).
#[derive(Clone, Debug)]
pub(crate) struct Membership {
    entries: Vec<(u64, Configuration)>,
}

impl Membership {
    /// Starts from `conf`, found at log index `index` (0 if it came from the options).
    pub(crate) fn new(index: u64, conf: Configuration) -> Membership {
        Membership {
            entries: vec![(index, conf)],
        }
    }

    /// Starts from configurations restored from disk, oldest first (see
    /// [`InitialState::configurations`](crate::core::InitialState::configurations)); none
    /// means no configuration yet (a peer that waits to be added).
    pub(crate) fn from_list(list: Vec<(u64, Configuration)>) -> Result<Membership> {
        if list.is_empty() {
            return Ok(Membership::new(0, Configuration::default()));
        }
        let m = Membership { entries: list };
        m.check().map_err(RaftError::invalid)?;
        Ok(m)
    }

    /// The effective configuration: the newest in the log.
    pub(crate) fn effective(&self) -> &Configuration {
        &self.entries[self.entries.len() - 1].1
    }

    /// The configuration in force at log index `index` (the newest at or before it, or the
    /// oldest known).
    pub(crate) fn in_force_at(&self, index: u64) -> &Configuration {
        let pos = self.entries.partition_point(|(i, _)| *i <= index);
        &self.entries[pos.saturating_sub(1)].1
    }

    /// The configuration in force at `index` and every newer one, oldest first.
    pub(crate) fn since(&self, index: u64) -> impl Iterator<Item = &Configuration> {
        let pos = self.entries.partition_point(|(i, _)| *i <= index);
        self.entries[pos.saturating_sub(1)..].iter().map(|(_, c)| c)
    }

    /// The log index of the effective configuration.
    pub(crate) fn effective_index(&self) -> u64 {
        self.entries[self.entries.len() - 1].0
    }

    /// A configuration entry was appended at `index`.
    pub(crate) fn on_append(&mut self, index: u64, conf: Configuration) {
        debug_assert!(index > self.effective_index());
        self.entries.push((index, conf));
    }

    /// Entries after `after` were truncated. Returns true if the effective one changed.
    pub(crate) fn on_truncate(&mut self, after: u64) -> bool {
        let before = self.entries.len();
        while self.entries.len() > 1 && self.entries[self.entries.len() - 1].0 > after {
            self.entries.pop();
        }
        self.entries.len() != before
    }

    /// Forgets configurations older than the one in force at `committed`: they can never be
    /// restored by a truncation.
    pub(crate) fn compact(&mut self, committed: u64) {
        let keep_from = self.entries.partition_point(|(i, _)| *i <= committed);
        if keep_from > 1 {
            self.entries.drain(..keep_from - 1);
        }
    }

    pub(crate) fn check(&self) -> std::result::Result<(), String> {
        let sorted = self.entries.windows(2).all(|w| w[0].0 < w[1].0);
        if self.entries.is_empty() || !sorted {
            return Err(format!("bad configuration list: {:?}", self.entries));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn conf(s: &str) -> Configuration {
        Configuration::parse_voters(s).unwrap()
    }

    #[test]
    fn truncating_a_configuration_entry_restores_the_previous_one() {
        let a = conf("1.1.1.1:1:0,1.1.1.2:1:0,1.1.1.3:1:0");
        let b = conf("1.1.1.1:1:0,1.1.1.2:1:0");
        let mut m = Membership::new(0, a.clone());
        m.on_append(7, b.clone());
        assert_eq!(m.effective(), &b);
        assert!(!m.on_truncate(7));
        assert!(m.on_truncate(6));
        assert_eq!(m.effective(), &a);
        assert!(
            !m.on_truncate(0),
            "the starting configuration is never dropped"
        );
    }

    #[test]
    fn compaction_keeps_the_configuration_in_force() {
        let mut m = Membership::new(0, conf("1.1.1.1:1:0"));
        m.on_append(3, conf("1.1.1.2:1:0"));
        m.on_append(9, conf("1.1.1.3:1:0"));
        m.compact(5);
        assert_eq!(m.entries.len(), 2);
        assert_eq!(m.entries[0].0, 3);
        m.check().unwrap();
    }
}
