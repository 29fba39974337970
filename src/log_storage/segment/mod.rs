//! [`SegmentLogStorage`]: the log in segment files (DESIGN.md section 5, braft's
//! SegmentLogStorage).
//!
//! A directory holds `log_meta` (first index and reset epoch), closed segments
//! `log_<first>_<last>` and at most one open segment `log_inprogress_<first>`. Segments are
//! preallocated (so a full disk is an error at creation, never a SIGBUS), mapped read-only,
//! and appended to by `pwrite` of a whole batch followed by one `fdatasync`; the next batch is
//! written only after that sync returned, so only the last batch can be torn (unless the
//! user turned syncs off: `SegmentLogStorageOptions::sync_appends`). Reads return
//! `Bytes` over the mapping. Mapped bytes are never rewritten: `truncate_suffix` seals the
//! segment at the cut by renaming it to its closed name, and a new segment takes the next
//! entries.
//!
//! New segments come from a *spare*: a file written with zeros and synced ahead of time
//! (`spare.rs`), so that appends overwrite written blocks; without a ready spare a rollover
//! preallocates the segment itself.
//!
//! Threads: mutators run on the disk pool, one at a time (a writer lock serialises them and
//! is held across their IO; readers never take it); readers run anywhere and only take the
//! index's read lock, for a lookup. Spares are prepared by a job on the pool given in the
//! options. All IO goes through [`FileSystem`].
//!
//! Recovery (at [`SegmentLogStorage::open`]) checks every record of every segment, cuts a
//! torn last batch back and fails with [`RaftError::Corruption`] for damage to anything that
//! was synced, leaving the files untouched (see `recovery.rs` and ARCHITECTURE.md).

mod format;
mod index;
mod open;
mod recovery;
mod spare;
mod writer;

pub use spare::{SegmentStats, SparePreparation};

use std::path::{Path, PathBuf};
use std::sync::Arc;

use bytes::Bytes;
use parking_lot::{Mutex, RwLock};
use slog::Logger;

use crate::error::{RaftError, Result};
use crate::fs::{DirLock, FileSystem, Mapping};
use crate::log_storage::LogStorage;
use crate::types::LogEntry;

use format::{BATCH_END_LEN, HEADER_LEN, RECORD_HEADER_LEN};
use index::Index;
use spare::Spares;
use writer::Writer;

/// Settings of a [`SegmentLogStorage`].
#[derive(Clone)]
pub struct SegmentLogStorageOptions {
    /// Bytes preallocated per segment (an entry that does not fit gets a segment of its own).
    /// In `4 KiB..=1 GiB`; default 64 MiB.
    pub segment_size: u64,
    /// Where recovery decisions (a torn tail cut back) are logged.
    pub logger: Logger,
    /// Where the next segment is prepared ahead of time (written with zeros and synced, so
    /// that appends' syncs commit no extent conversion). Default
    /// [`SparePreparation::Off`]: segments are preallocated at rollover (and the writer
    /// writes zeros ahead of small batches in them). `Node` passes its runtime's disk pool.
    pub spare: SparePreparation,
    /// Bytes appended into the open segment before its successor's spare is prepared.
    /// `None` (default): [`SPARE_AFTER_BYTES_DEFAULT`] or a quarter of `segment_size`,
    /// whichever is smaller. So a log that writes little never zero-fills a segment it does
    /// not need (a process hosting many groups would otherwise write a whole segment of
    /// zeros per group at start, competing with every group's syncs), while a busy log asks
    /// early, nearly a whole segment of appends ahead. `Some(0)`: at open and right after
    /// every rollover.
    pub spare_after_bytes: Option<u64>,
    /// `fdatasync` each appended batch before `append_entries` returns (default true). False
    /// (a node with `NodeOptions::sync` off): batches are only written, so a process crash
    /// loses nothing but a machine crash may lose acknowledged entries, and may leave a torn
    /// batch before intact ones, which recovery then reports as
    /// [`RaftError::Corruption`] instead of cutting it back. Structural changes (rollover,
    /// truncation, reset) still sync.
    pub sync_appends: bool,
}

impl Default for SegmentLogStorageOptions {
    fn default() -> SegmentLogStorageOptions {
        SegmentLogStorageOptions {
            segment_size: 64 << 20,
            logger: crate::logging::default_logger(),
            spare: SparePreparation::Off,
            spare_after_bytes: None,
            sync_appends: true,
        }
    }
}

/// Default [`SegmentLogStorageOptions::spare_after_bytes`]: a log that has written a MiB
/// into its segment is one that writes, and 1 MiB of a 64 MiB segment leaves the zero-fill
/// 63 MiB of appends to finish in.
pub const SPARE_AFTER_BYTES_DEFAULT: u64 = 1 << 20;

/// The smallest allowed `segment_size`.
pub const SEGMENT_SIZE_MIN: u64 = 4096;
/// The largest allowed `segment_size`.
pub const SEGMENT_SIZE_MAX: u64 = 1 << 30;
/// The largest entry payload a segment can hold (record offsets are `u32`).
pub const ENTRY_DATA_MAX: u64 =
    u32::MAX as u64 - HEADER_LEN - RECORD_HEADER_LEN - 4 * BATCH_END_LEN;

impl SegmentLogStorageOptions {
    /// Checks the settings.
    pub fn validate(&self) -> Result<()> {
        if !(SEGMENT_SIZE_MIN..=SEGMENT_SIZE_MAX).contains(&self.segment_size) {
            return Err(RaftError::invalid(format!(
                "SegmentLogStorageOptions.segment_size = {}, must be in \
                 {SEGMENT_SIZE_MIN}..={SEGMENT_SIZE_MAX}",
                self.segment_size
            )));
        }
        if let Some(after) = self.spare_after_bytes.filter(|a| *a >= self.segment_size) {
            return Err(RaftError::invalid(format!(
                "SegmentLogStorageOptions.spare_after_bytes = {after} must be below \
                 segment_size = {}: the spare would never be asked for",
                self.segment_size
            )));
        }
        Ok(())
    }
}

/// A log in preallocated, mapped segment files. See the module documentation.
pub struct SegmentLogStorage {
    dir: PathBuf,
    fs: Arc<dyn FileSystem>,
    /// Lock order: `writer` -> `index`; `writer` -> the spares' state.
    writer: Mutex<Writer>,
    index: RwLock<Index>,
    spares: Arc<Spares>,
    logger: Logger,
    /// Dropped last: no spare preparation touches the directory after it is released
    /// (`Drop` stops it first).
    _lock: DirLock,
}

/// A slice of a mapping that keeps the mapping alive: the owner of a read entry's payload.
struct MapSlice {
    map: Arc<dyn Mapping>,
    start: usize,
    end: usize,
}

impl AsRef<[u8]> for MapSlice {
    fn as_ref(&self) -> &[u8] {
        &self.map.bytes()[self.start..self.end]
    }
}

impl SegmentLogStorage {
    /// Opens (creating if needed) the log in `dir`: locks the directory (a second open fails
    /// with [`RaftError::DirectoryLocked`]), reads and checks every segment, and cuts a torn
    /// last batch back. Damage to synced data is [`RaftError::Corruption`] naming the file
    /// and offset; the files are then left exactly as they were.
    pub fn open(
        fs: Arc<dyn FileSystem>,
        dir: &Path,
        opts: SegmentLogStorageOptions,
    ) -> Result<SegmentLogStorage> {
        opts.validate()?;
        if !fs.is_dir(dir) {
            // A new directory is durable only once its parent's entry is.
            fs.create_dir_all(dir)?;
            fs.sync_dir(&crate::fs::parent_dir(dir)?)?;
        }
        let lock = fs.lock_dir(dir)?;
        let spare_size = match opts.spare {
            SparePreparation::Off => None,
            _ => Some(opts.segment_size),
        };
        let recovered = open::recover(&*fs, dir, spare_size, &opts.logger)?;
        let spares = Spares::new(
            fs.clone(),
            dir.to_path_buf(),
            opts.segment_size,
            opts.spare.clone(),
            recovered.spare_ready,
            opts.logger.clone(),
        );
        let mut writer = Writer::new(
            fs.clone(),
            dir,
            recovered.meta,
            recovered.open,
            spares.clone(),
            &opts,
        );
        // A recovered open segment may already be past the point where its successor is due.
        writer.request_spare_if_due();
        Ok(SegmentLogStorage {
            dir: dir.to_path_buf(),
            fs,
            writer: Mutex::new(writer),
            index: RwLock::new(recovered.index),
            spares,
            logger: opts.logger,
            _lock: lock,
        })
    }

    /// How this storage's segments were made so far (spares used, segments preallocated).
    pub fn segment_stats(&self) -> SegmentStats {
        self.spares.stats()
    }

    /// Waits up to `timeout` until a spare segment is ready or no preparation is under way;
    /// true if one is ready (tests and benches: to start from a known state).
    pub fn wait_spare_ready(&self, timeout: std::time::Duration) -> bool {
        self.spares.enabled() && self.spares.wait_ready(timeout)
    }

    /// The directory this log lives in.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The segment files' names, oldest first (for tests and tools).
    pub fn segment_names(&self) -> Result<Vec<String>> {
        let mut names: Vec<String> = self
            .fs
            .read_dir(&self.dir)?
            .into_iter()
            .filter(|n| format::parse_name(n).is_some())
            .collect();
        names.sort_by_key(|n| match format::parse_name(n) {
            Some(format::FileKind::Closed { first, .. }) => (first, 0),
            Some(format::FileKind::Open { first }) => (first, 1),
            None => (0, 0),
        });
        Ok(names)
    }
}

impl LogStorage for SegmentLogStorage {
    fn first_log_index(&self) -> u64 {
        self.index.read().first_log_index
    }

    fn last_log_index(&self) -> u64 {
        self.index.read().last_log_index
    }

    fn term_at(&self, index: u64) -> Option<u64> {
        self.index.read().term_at(index)
    }

    fn get(&self, index: u64) -> Option<LogEntry> {
        let (map, off) = self.index.read().locate(index)?;
        let Some((id, kind, crc, start, end)) = format::peek_entry(map.bytes(), off) else {
            debug_assert!(false, "entry {index} at {off} does not decode");
            slog::error!(self.logger, "indexed entry does not decode";
                "index" => index, "offset" => off);
            return None;
        };
        debug_assert_eq!(id.index, index);
        let data = Bytes::from_owner(MapSlice {
            map,
            start: start as usize,
            end: end as usize,
        });
        Some(LogEntry::with_crc(id, kind, data, crc))
    }

    fn append_entries(&self, entries: &[LogEntry]) -> Result<()> {
        self.writer.lock().append_entries(&self.index, entries)
    }

    fn truncate_prefix(&self, first_index_kept: u64) -> Result<()> {
        self.writer
            .lock()
            .truncate_prefix(&self.index, first_index_kept)
    }

    fn truncate_suffix(&self, last_index_kept: u64) -> Result<()> {
        self.writer
            .lock()
            .truncate_suffix(&self.index, last_index_kept)
    }

    fn reset(&self, next_log_index: u64) -> Result<()> {
        self.writer.lock().reset(&self.index, next_log_index)
    }

    fn sync(&self) -> Result<()> {
        self.writer.lock().sync()
    }

    fn close(&self) -> Result<()> {
        let r = self.writer.lock().close(&self.index);
        self.spares.stop();
        r
    }
}

impl Drop for SegmentLogStorage {
    fn drop(&mut self) {
        // Before the directory lock is released (fields drop after this): a spare being
        // prepared must not touch files that the next owner of the directory reads.
        self.spares.stop();
    }
}

#[cfg(test)]
pub(crate) mod tests;

#[cfg(test)]
mod torn_tests;

#[cfg(test)]
mod fault_tests;

#[cfg(test)]
mod spare_tests;
