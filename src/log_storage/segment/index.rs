//! The in-memory index of a [`SegmentLogStorage`](super::SegmentLogStorage): which segment
//! holds each index, the record offset of every entry, and the terms as runs.
//!
//! Readers take the index's read lock for a lookup (no IO under it: they copy out a mapping
//! handle and an offset and decode the record after releasing it). The writer takes the write
//! lock only to publish entries it has already written and synced, or to hide entries before
//! it removes them.

use std::sync::Arc;

use crate::fs::Mapping;

/// One segment as readers see it.
pub(crate) struct SegmentView {
    /// Index of the segment's first entry.
    pub first_index: u64,
    /// Invariant: `offsets[i]` is the record offset of entry `first_index + i`, and only
    /// entries that are synced (or recovered) are listed.
    pub offsets: Vec<u32>,
    /// The whole file, mapped read-only. Invariant: bytes below the last listed record's end
    /// never change while this mapping lives.
    pub map: Arc<dyn Mapping>,
    /// True for the open segment (`log_inprogress_*`), which is always the last.
    pub open: bool,
}

impl SegmentView {
    /// Index of the last entry (`first_index - 1` when it holds none).
    pub fn last_index(&self) -> u64 {
        self.first_index + self.offsets.len() as u64 - 1
    }
}

/// The read view of the whole log.
pub(crate) struct Index {
    /// Invariant: `first_log_index <= last_log_index + 1`.
    pub first_log_index: u64,
    pub last_log_index: u64,
    /// Invariant: ascending and contiguous (`s[i+1].first_index == s[i].last_index() + 1`);
    /// the first one holds `first_log_index` (or the log is empty), the last one ends at
    /// `last_log_index`; only the last may be open.
    pub segments: Vec<SegmentView>,
    /// Term runs `(first index of the run, term)`, ascending in both; they cover
    /// `first_log_index..=last_log_index` and may start earlier.
    pub terms: Vec<(u64, u64)>,
}

impl Index {
    /// An empty log starting at `first_log_index`.
    pub fn empty(first_log_index: u64) -> Index {
        Index {
            first_log_index,
            last_log_index: first_log_index - 1,
            segments: Vec::new(),
            terms: Vec::new(),
        }
    }

    fn contains(&self, index: u64) -> bool {
        index >= self.first_log_index && index <= self.last_log_index
    }

    /// The mapping and record offset of entry `index`.
    pub fn locate(&self, index: u64) -> Option<(Arc<dyn Mapping>, u64)> {
        if !self.contains(index) {
            return None;
        }
        let pos = self
            .segments
            .partition_point(|s| s.first_index <= index)
            .checked_sub(1)?;
        let seg = &self.segments[pos];
        let off = *seg.offsets.get((index - seg.first_index) as usize)?;
        Some((seg.map.clone(), u64::from(off)))
    }

    /// The term of entry `index`.
    pub fn term_at(&self, index: u64) -> Option<u64> {
        if !self.contains(index) {
            return None;
        }
        let pos = self
            .terms
            .partition_point(|r| r.0 <= index)
            .checked_sub(1)?;
        Some(self.terms[pos].1)
    }

    /// Adds term runs for entries appended in order.
    pub fn push_terms(&mut self, runs: impl IntoIterator<Item = (u64, u64)>) {
        for (index, term) in runs {
            match self.terms.last() {
                Some(&(_, t)) if t == term => {}
                _ => self.terms.push((index, term)),
            }
        }
    }

    /// Hides every entry after `last_index_kept`; returns the segments that now hold none
    /// (in the order they appear, lowest first). The segment holding `last_index_kept` keeps
    /// its mapping and is marked closed.
    pub fn truncate_suffix(&mut self, last_index_kept: u64) -> Vec<SegmentView> {
        let keep = self
            .segments
            .partition_point(|s| s.first_index <= last_index_kept);
        let removed = self.segments.split_off(keep);
        if let Some(seg) = self.segments.last_mut() {
            if seg.last_index() > last_index_kept {
                seg.offsets
                    .truncate((last_index_kept + 1 - seg.first_index) as usize);
                seg.open = false;
            }
        }
        let runs = self.terms.partition_point(|r| r.0 <= last_index_kept);
        self.terms.truncate(runs);
        self.last_log_index = last_index_kept;
        removed
    }

    /// Hides every entry before `first_index_kept`; returns the segments that held only such
    /// entries.
    pub fn truncate_prefix(&mut self, first_index_kept: u64) -> Vec<SegmentView> {
        let drop = self
            .segments
            .iter()
            .take_while(|s| s.last_index() < first_index_kept && !s.offsets.is_empty())
            .count();
        let removed: Vec<SegmentView> = self.segments.drain(..drop).collect();
        let runs = self.terms.partition_point(|r| r.0 <= first_index_kept);
        if runs > 1 {
            self.terms.drain(..runs - 1);
        }
        self.first_log_index = first_index_kept;
        removed
    }
}
