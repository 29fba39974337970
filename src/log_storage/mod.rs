//! Log storage (braft's LogStorage): where the entries of one peer's log live, durably.
//!
//! [`LogStorage`] is the contract; [`SegmentLogStorage`] keeps the log in preallocated,
//! mmap'd segment files (DESIGN.md section 5) and [`MemoryLogStorage`] keeps it in memory
//! (tests, benches, and users who want no disk). Mutators do blocking IO: they run on the
//! disk pool (the LogManager's disk queue), one call at a time. Readers run on any thread,
//! concurrently with a mutator, and never wait for its IO.
//!
//! A storage carries decisions out; it never makes them: which entries to append and where to
//! truncate is decided by the protocol core, and the LogManager refuses a truncation of
//! committed entries before it reaches the storage.

mod memory;
pub mod segment;

pub(crate) use memory::check_batch;
pub use memory::MemoryLogStorage;
pub use segment::{
    SegmentLogStorage, SegmentLogStorageOptions, SegmentStats, SparePreparation,
    SPARE_AFTER_BYTES_DEFAULT,
};

use crate::error::Result;
use crate::types::LogEntry;

/// The entries of one log, in index order, from `first_log_index()` to `last_log_index()`.
///
/// Contract shared by every implementation:
/// - The log is a contiguous range of indexes: `first_log_index() <= last_log_index() + 1`,
///   equal when the log is empty. A fresh storage has `first_log_index() == 1` and
///   `last_log_index() == 0`.
/// - A crash during a mutator leaves a log that is the one before the call or the one after
///   it, or in between as stated on the method (`append_entries`: a prefix of the batch;
///   `truncate_suffix`: a prefix of the old log that still holds `last_index_kept`). A
///   mutator that returned `Ok` is durable.
/// - A mutator that returns an IO error leaves the storage *failed*: later mutators answer
///   [`RaftError::ErrorState`](crate::RaftError::ErrorState) naming the first error, and a
///   failed sync is never retried (a retried fsync can report success for data the kernel
///   already dropped). Reads keep working. Reopening recovers exactly what was durable.
/// - Mutators are called from one thread at a time; readers from any thread, at any time.
///
/// # Panics
/// No method panics on any input or any disk content; bad arguments are
/// [`RaftError::Invalid`](crate::RaftError::Invalid), damaged files
/// [`RaftError::Corruption`](crate::RaftError::Corruption) at open.
pub trait LogStorage: Send + Sync + 'static {
    /// The first index held (after compaction); `last_log_index() + 1` when empty.
    fn first_log_index(&self) -> u64;

    /// The last index held; `first_log_index() - 1` when empty.
    fn last_log_index(&self) -> u64;

    /// The term of the entry at `index`, for `index` in `first..=last`; `None` otherwise
    /// (index 0 included: the term before the log is the LogManager's business).
    fn term_at(&self, index: u64) -> Option<u64>;

    /// The entry at `index`, for `index` in `first..=last`; `None` otherwise. The payload is
    /// a shared buffer (for segments: a slice of the mapping, not a copy).
    fn get(&self, index: u64) -> Option<LogEntry>;

    /// Appends `entries` and makes them durable before returning (one write and one sync
    /// for the batch, except where a batch spills into a new segment).
    ///
    /// `entries` must be non-empty and contiguous, starting at `last_log_index() + 1`;
    /// otherwise [`RaftError::Invalid`](crate::RaftError::Invalid) and nothing changes.
    /// Each entry's carried CRC is stored as is (it is verified where the entry came in).
    /// After a crash during the call, a prefix of the batch (possibly empty) comes back.
    fn append_entries(&self, entries: &[LogEntry]) -> Result<()>;

    /// Discards entries before `first_index_kept`. No-op when `first_index_kept <=
    /// first_log_index()`. Requires `first_index_kept <= last_log_index() + 1`
    /// (otherwise `Invalid`; use [`LogStorage::reset`]); at `last_log_index() + 1` the log
    /// becomes empty and the next append starts there. Durable on return.
    fn truncate_prefix(&self, first_index_kept: u64) -> Result<()>;

    /// Discards entries after `last_index_kept`. No-op when `last_index_kept >=
    /// last_log_index()`. Requires `last_index_kept >= first_log_index() - 1` (otherwise
    /// `Invalid`). Durable on return: the discarded entries never come back, even after a
    /// crash. Buffers already handed out by [`LogStorage::get`] stay valid and unchanged.
    fn truncate_suffix(&self, last_index_kept: u64) -> Result<()>;

    /// Discards every entry and makes `next_log_index` the index of the next append
    /// (`first == next`, `last == next - 1`), as installing a snapshot does. Requires
    /// `next_log_index >= 1`. Atomic and durable on return: after a crash the log is either
    /// the old one or empty at `next_log_index`, never a mix.
    fn reset(&self, next_log_index: u64) -> Result<()>;

    /// Makes everything appended durable. Appends already sync, so this is cheap; it exists
    /// for callers that need a barrier.
    fn sync(&self) -> Result<()>;

    /// Ends the storage's life cleanly (for segments: a final checkpoint record, so that the
    /// next open can tell every batch was synced). Later mutators answer `Stopped`.
    /// Idempotent.
    fn close(&self) -> Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod proptests;
