//! The mutators of a [`SegmentLogStorage`](super::SegmentLogStorage): append (with segment
//! rollover), truncate_prefix, truncate_suffix, reset, sync and close.
//!
//! Runs on the disk pool, one call at a time, under the storage's writer lock (which readers
//! never take). The write discipline that recovery relies on:
//! - a batch is written with one `pwrite` at the open segment's `write_offset` (entries, then
//!   its batch end) and synced before it is published to readers and before anything else is
//!   written to that segment;
//! - bytes at and after `write_offset` read as zeros and were never written with anything
//!   else: a new segment is a spare whose every byte was written with zeros and synced
//!   (`spare.rs`), or, when none is ready, a preallocated file; nothing below `write_offset`
//!   is ever written again (a torn segment is sealed, never appended to);
//! - any IO error leaves the storage failed: no further writes, no retried sync.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use parking_lot::RwLock;
use slog::Logger;

use crate::error::{RaftError, Result};
use crate::fs::{self, File, FileSystem, OpenOptions};
use crate::log_storage::memory::check_batch;
use crate::log_storage::segment::format::{
    self, encode_batch_end, encode_entry, entry_record_len, BatchEnd, LogMeta, SegmentHeader,
    BATCH_END_LEN, HEADER_LEN, META_FILE,
};
use crate::log_storage::segment::index::{Index, SegmentView};
use crate::log_storage::segment::spare::{Spares, ZEROS};
use crate::log_storage::segment::{SegmentLogStorageOptions, ENTRY_DATA_MAX};
use crate::types::LogEntry;

/// The segment appends go to.
pub(crate) struct OpenSegment {
    pub file: Arc<dyn File>,
    pub first_index: u64,
    pub salt: u64,
    /// Invariant: every byte at and after this offset reads as zero and was never written
    /// with anything but zeros.
    pub write_offset: u64,
    /// The file's preallocated length.
    pub capacity: u64,
    /// Every block below this offset was written (zeros or records), so an append below it
    /// syncs no extent conversion: `capacity` for a segment made from a spare, the frontier
    /// of the zeros written ahead of the batches for one preallocated here ([`ZERO_AHEAD`]).
    pub zeroed: u64,
}

/// How far ahead of the last batch a preallocated segment's blocks are written with zeros.
/// Its extents are *unwritten* (`fallocate`): a sync of a batch landing in them also commits
/// their conversion to the ext4 journal (docs/BENCHMARKS.md: fdatasync p50 172 us against
/// 127 us over written blocks). Spares avoid that for the segments after the first, but a
/// log's first segment (and one made when appends outran the spare) is preallocated here,
/// and a fresh node spends its first 64 MiB of appends there. So when a batch ends less than
/// this far before the frontier, the writer writes zeros up to twice this far past the
/// batch, before the batch's sync, which then writes them back and commits their
/// conversion once: about one append in 256 KiB carries 256 KiB of zeros and one
/// conversion, the others none. Zeros over zeros keep the invariant of `write_offset`.
/// Only batches smaller than [`ZERO_AHEAD_BATCH_MAX`] do it.
pub(crate) const ZERO_AHEAD: u64 = 256 << 10;

/// The largest batch (bytes) that writes zeros ahead. The zeros double the bytes written,
/// and save one extent conversion per sync (about 45 us on the bench machine): worth it
/// while a batch's own write time is small next to that, i.e. for batches of a few KiB (a
/// consensus log's usual case), not for bulk ones (the log_storage bench measured 64 KiB
/// to 1 MiB batches at 0.27-0.45 of the raw baseline with zeros ahead of every batch).
pub(crate) const ZERO_AHEAD_BATCH_MAX: u64 = 16 << 10;

impl OpenSegment {
    /// Writes zeros past `end` (the end of the batch about to be synced) when the frontier
    /// of written blocks is within [`ZERO_AHEAD`] of it. Never writes below `end`.
    fn zero_ahead(&mut self, end: u64) -> Result<()> {
        if self.zeroed >= end.saturating_add(ZERO_AHEAD).min(self.capacity) {
            return Ok(());
        }
        let to = end.saturating_add(2 * ZERO_AHEAD).min(self.capacity);
        let mut off = self.zeroed.max(end);
        while off < to {
            let n = (to - off).min(ZEROS.len() as u64);
            fs::write_all_at(&*self.file, &ZEROS[..n as usize], off)?;
            off += n;
        }
        self.zeroed = to;
        Ok(())
    }

    /// Bytes a batch's entries may take: the rest minus its batch end and the space kept for
    /// the close record.
    fn room(&self) -> u64 {
        self.capacity
            .saturating_sub(self.write_offset)
            .saturating_sub(2 * BATCH_END_LEN)
    }
}

/// The writer's state.
pub(crate) struct Writer {
    fs: Arc<dyn FileSystem>,
    dir: PathBuf,
    meta: LogMeta,
    open: Option<OpenSegment>,
    /// Reused encoding buffer of one batch.
    buf: Vec<u8>,
    /// The first IO error; once set, every mutator refuses.
    failed: Option<RaftError>,
    closed: bool,
    segment_size: u64,
    /// The spare segment rollovers take (`spare.rs`).
    spares: Arc<Spares>,
    /// Bytes of entries in the open segment after which the next spare is asked for.
    spare_after: u64,
    /// The next spare was asked for since the last rollover: at most once per segment, so
    /// a failing preparation (a nearly full disk) is retried once per rollover, not on
    /// every append.
    spare_asked: bool,
    /// `SegmentLogStorageOptions::sync_appends`.
    sync_appends: bool,
    logger: Logger,
}

fn new_salt() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u64(crate::types::Rng::from_entropy().next_u64());
    h.finish()
}

impl Writer {
    /// The writer of a log just opened: `meta` as read, `open` the recovered open segment
    /// (if any) that appends go on in.
    pub fn new(
        fs: Arc<dyn FileSystem>,
        dir: &Path,
        meta: LogMeta,
        open: Option<OpenSegment>,
        spares: Arc<Spares>,
        opts: &SegmentLogStorageOptions,
    ) -> Writer {
        Writer {
            fs,
            dir: dir.to_path_buf(),
            meta,
            open,
            buf: Vec::new(),
            failed: None,
            closed: false,
            segment_size: opts.segment_size,
            spares,
            spare_after: opts
                .spare_after_bytes
                .unwrap_or((opts.segment_size / 4).min(super::SPARE_AFTER_BYTES_DEFAULT)),
            spare_asked: false,
            sync_appends: opts.sync_appends,
            logger: opts.logger.clone(),
        }
    }

    /// The segment appends go to (tests).
    #[cfg(test)]
    pub fn open_segment(&self) -> Option<&OpenSegment> {
        self.open.as_ref()
    }

    /// Asks for the next segment's spare once the open segment holds `spare_after` bytes
    /// of entries (at once when that is 0). Cheap when nothing is due or one is asked for
    /// already: called after every append.
    pub fn request_spare_if_due(&mut self) {
        if self.spare_asked {
            return;
        }
        let due = match &self.open {
            Some(open) => open.write_offset.saturating_sub(HEADER_LEN) >= self.spare_after,
            None => self.spare_after == 0,
        };
        if due {
            self.spare_asked = true;
            self.spares.request();
        }
    }

    fn check_usable(&self) -> Result<()> {
        if self.closed {
            return Err(RaftError::Stopped);
        }
        match &self.failed {
            Some(e) => Err(RaftError::ErrorState {
                reason: format!("log storage failed earlier: {e}"),
            }),
            None => Ok(()),
        }
    }

    /// Runs a mutation; an error from it fails the storage for good.
    fn guarded<T>(&mut self, f: impl FnOnce(&mut Writer) -> Result<T>) -> Result<T> {
        self.check_usable()?;
        let r = f(self);
        if let Err(e) = &r {
            if !matches!(e, RaftError::Invalid { .. }) {
                slog::error!(self.logger, "log storage failed; refusing further writes";
                    "error" => %e);
                self.failed = Some(e.clone());
            }
        }
        r
    }

    /// [`LogStorage::append_entries`](crate::log_storage::LogStorage::append_entries): one
    /// write and, with `sync_appends`, one sync per batch; `index` learns the entries after.
    pub fn append_entries(&mut self, index: &RwLock<Index>, entries: &[LogEntry]) -> Result<()> {
        self.guarded(|w| {
            check_batch(entries, index.read().last_log_index + 1)?;
            if let Some(e) = entries
                .iter()
                .find(|e| e.data.len() as u64 > ENTRY_DATA_MAX)
            {
                return Err(RaftError::invalid(format!(
                    "entry {} has {} bytes; a segment holds at most {ENTRY_DATA_MAX}",
                    e.id,
                    e.data.len()
                )));
            }
            debug_assert!(entries.iter().all(|e| e.verify().is_ok()), "bad entry CRC");
            let mut i = 0;
            while i < entries.len() {
                i = w.append_chunk(index, &entries[i..])? + i;
            }
            w.request_spare_if_due();
            Ok(())
        })
    }

    /// Writes as many of `entries` as fit in the open segment (rolling to a new one first if
    /// not even the first fits) as one synced batch; returns how many.
    fn append_chunk(&mut self, index: &RwLock<Index>, entries: &[LogEntry]) -> Result<usize> {
        let first_len = entry_record_len(&entries[0]);
        if self.open.as_ref().is_none_or(|o| o.room() < first_len) {
            self.roll(index, entries[0].id.index, first_len)?;
        }
        let Some(open) = self.open.as_mut() else {
            return Err(invariant("no open segment after rollover"));
        };
        let room = open.room();
        let (mut used, mut n) = (0u64, 0usize);
        for e in entries {
            let len = entry_record_len(e);
            if used + len > room {
                break;
            }
            used += len;
            n += 1;
        }
        let batch = &entries[..n];
        self.buf.clear();
        let start = open.write_offset;
        let mut offsets = Vec::with_capacity(n);
        for e in batch {
            offsets.push((start + self.buf.len() as u64) as u32);
            encode_entry(&mut self.buf, e);
        }
        let end = BatchEnd {
            start,
            first_index: batch[0].id.index,
            last_index: batch[n - 1].id.index,
        };
        encode_batch_end(&mut self.buf, open.salt, &end);
        fs::write_all_at(&*open.file, &self.buf, start)?;
        if self.sync_appends {
            if (self.buf.len() as u64) < ZERO_AHEAD_BATCH_MAX {
                open.zero_ahead(start + self.buf.len() as u64)?;
            }
            open.file.sync_data()?;
        }
        open.write_offset += self.buf.len() as u64;
        let mut idx = index.write();
        let Some(seg) = idx.segments.last_mut().filter(|s| s.open) else {
            return Err(invariant("open segment missing from the index"));
        };
        seg.offsets.extend_from_slice(&offsets);
        idx.last_log_index = end.last_index;
        idx.push_terms(batch.iter().map(|e| (e.id.index, e.id.term)));
        Ok(n)
    }

    /// Seals the open segment (or removes it if it holds nothing) and creates a new one
    /// starting at `first_index` with room for a record of `need` bytes.
    fn roll(&mut self, index: &RwLock<Index>, first_index: u64, need: u64) -> Result<()> {
        if let Some(old) = self.open.take() {
            let from = self.dir.join(format::open_name(old.first_index));
            let mut idx = index.write();
            let seg = idx.segments.last_mut().filter(|s| s.open);
            match seg {
                Some(seg) if !seg.offsets.is_empty() => {
                    seg.open = false;
                    let last = seg.last_index();
                    drop(idx);
                    // The directory sync of the new segment's creation makes this durable.
                    self.fs.rename(
                        &from,
                        &self.dir.join(format::closed_name(old.first_index, last)),
                    )?;
                }
                Some(_) => {
                    // Open but empty (and too small for the entry): nothing to seal.
                    idx.segments.pop();
                    drop(idx);
                    self.fs.remove_file(&from)?;
                }
                None => return Err(invariant("the open segment is not last in the index")),
            }
        }
        // An entry larger than a segment gets one of exactly its size: nothing else fits.
        let capacity = self.segment_size.max(HEADER_LEN + need + 2 * BATCH_END_LEN);
        let from_spare = capacity == self.segment_size && self.spares.take();
        let seg = if from_spare {
            self.segment_from_spare(first_index, capacity)?
        } else {
            self.create_segment(first_index, capacity)?
        };
        self.spares.count_segment(from_spare);
        // Mapped before the index lock: readers never wait behind an fstat and an mmap.
        let map = seg.file.map(capacity)?;
        index.write().segments.push(SegmentView {
            first_index,
            offsets: Vec::new(),
            map,
            open: true,
        });
        self.open = Some(seg);
        // `log_spare` was renamed away above (or none was ready): the new segment asks for
        // its successor's spare when due.
        self.spare_asked = false;
        self.request_spare_if_due();
        Ok(())
    }

    /// Removes a stale file at the open segment's name: one of an older epoch whose removal
    /// failed; its inode lives on for any reader still holding its mapping.
    fn remove_stale(&self, path: &Path) -> Result<()> {
        if self.fs.exists(path) {
            self.fs.remove_file(path)?;
        }
        Ok(())
    }

    /// Makes the ready spare (claimed by the caller) the open segment: the same steps as
    /// [`Writer::create_segment`] with "create and preallocate" replaced by "rename the
    /// spare", so every crash state is one that creation could leave, plus a `log_spare`
    /// holding a header, which recovery discards. The spare's bytes are zeros that were
    /// written and synced, so appends to it overwrite written blocks and their syncs commit
    /// no extent conversion.
    fn segment_from_spare(&mut self, first_index: u64, capacity: u64) -> Result<OpenSegment> {
        let path = self.dir.join(format::open_name(first_index));
        self.remove_stale(&path)?;
        self.fs.rename(&self.spares.spare_path(), &path)?;
        // Reopened under its new name, so errors and fault rules name the segment.
        let file = self.fs.open(&path, OpenOptions::WRITE)?;
        let size = file.size()?;
        if size != capacity {
            return Err(invariant(&format!(
                "spare segment has {size} bytes, expected {capacity}"
            )));
        }
        self.finish_segment(file, first_index, capacity, capacity)
    }

    /// Creates and preallocates a segment (no spare ready, spares off, or an entry larger
    /// than a segment). Its extents are unwritten: correct, but each sync also commits
    /// their conversion.
    fn create_segment(&mut self, first_index: u64, capacity: u64) -> Result<OpenSegment> {
        let path = self.dir.join(format::open_name(first_index));
        self.remove_stale(&path)?;
        let file = self.fs.open(&path, OpenOptions::CREATE_NEW)?;
        if let Err(e) = file.allocate(capacity) {
            let _ = self.fs.remove_file(&path);
            return Err(e);
        }
        self.finish_segment(file, first_index, capacity, HEADER_LEN)
    }

    /// Writes and syncs the header of a new segment file (named, every byte after the header
    /// zeros), then syncs the directory: only then may entries go in.
    fn finish_segment(
        &mut self,
        file: Arc<dyn File>,
        first_index: u64,
        capacity: u64,
        zeroed: u64,
    ) -> Result<OpenSegment> {
        let header = SegmentHeader {
            first_index,
            epoch: self.meta.epoch,
            salt: new_salt(),
        };
        fs::write_all_at(&*file, &format::encode_header(&header), 0)?;
        file.sync_data()?;
        self.fs.sync_dir(&self.dir)?;
        Ok(OpenSegment {
            file,
            first_index,
            salt: header.salt,
            write_offset: HEADER_LEN,
            capacity,
            zeroed,
        })
    }

    fn segment_path(&self, seg: &SegmentView, last: u64) -> PathBuf {
        if seg.open {
            self.dir.join(format::open_name(seg.first_index))
        } else {
            self.dir.join(format::closed_name(seg.first_index, last))
        }
    }

    /// [`LogStorage::truncate_suffix`](crate::log_storage::LogStorage::truncate_suffix).
    pub fn truncate_suffix(&mut self, index: &RwLock<Index>, last_index_kept: u64) -> Result<()> {
        self.guarded(|w| {
            let mut idx = index.write();
            if last_index_kept >= idx.last_log_index {
                return Ok(());
            }
            if last_index_kept + 1 < idx.first_log_index {
                return Err(RaftError::invalid(format!(
                    "truncate_suffix({last_index_kept}) is below first index {} - 1",
                    idx.first_log_index
                )));
            }
            // Paths before the index forgets the entries (names carry the last index).
            let cut = idx
                .segments
                .iter()
                .rfind(|s| s.first_index <= last_index_kept)
                .filter(|s| s.last_index() > last_index_kept)
                .map(|s| w.segment_path(s, s.last_index()));
            let removed = idx.truncate_suffix(last_index_kept);
            let removed: Vec<PathBuf> = removed
                .iter()
                .rev()
                .map(|s| w.segment_path(s, s.last_index()))
                .collect();
            let sealed = idx.segments.last().map(|s| (s.first_index, s.open));
            drop(idx);
            if sealed.is_none_or(|(_, open)| !open) {
                w.open = None;
            }
            // Highest first, each made durable: a crash leaves a prefix of the old log.
            for path in removed {
                w.fs.remove_file(&path)?;
                w.fs.sync_dir(&w.dir)?;
            }
            if let (Some(from), Some((first, _))) = (cut, sealed) {
                let to = w.dir.join(format::closed_name(first, last_index_kept));
                w.fs.rename(&from, &to)?;
                w.fs.sync_dir(&w.dir)?;
            }
            Ok(())
        })
    }

    /// [`LogStorage::truncate_prefix`](crate::log_storage::LogStorage::truncate_prefix).
    pub fn truncate_prefix(&mut self, index: &RwLock<Index>, first_index_kept: u64) -> Result<()> {
        self.guarded(|w| {
            let (first, last) = {
                let idx = index.read();
                (idx.first_log_index, idx.last_log_index)
            };
            if first_index_kept <= first {
                return Ok(());
            }
            if first_index_kept > last + 1 {
                return Err(RaftError::invalid(format!(
                    "truncate_prefix({first_index_kept}) is beyond last index {last} + 1; \
                     use reset"
                )));
            }
            let meta = LogMeta {
                first_log_index: first_index_kept,
                epoch: w.meta.epoch,
            };
            w.write_meta(meta)?;
            let removed = index.write().truncate_prefix(first_index_kept);
            for seg in &removed {
                if seg.open {
                    w.open = None;
                }
                // Recovery removes these too if the removal is lost: log_meta is durable.
                w.fs.remove_file(&w.segment_path(seg, seg.last_index()))?;
            }
            Ok(())
        })
    }

    /// [`LogStorage::reset`](crate::log_storage::LogStorage::reset).
    pub fn reset(&mut self, index: &RwLock<Index>, next_log_index: u64) -> Result<()> {
        self.guarded(|w| {
            if next_log_index == 0 {
                return Err(RaftError::invalid("reset(0): log indexes start at 1"));
            }
            // The new epoch makes every existing segment stale at once, durably.
            let meta = LogMeta {
                first_log_index: next_log_index,
                epoch: w.meta.epoch + 1,
            };
            w.write_meta(meta)?;
            let old = std::mem::replace(&mut *index.write(), Index::empty(next_log_index));
            w.open = None;
            for seg in &old.segments {
                let path = w.segment_path(seg, seg.last_index());
                if let Err(e) = w.fs.remove_file(&path) {
                    // Harmless: recovery removes segments of an older epoch.
                    slog::warn!(w.logger, "reset: could not remove a stale segment";
                        "file" => %path.display(), "error" => %e);
                }
            }
            Ok(())
        })
    }

    fn write_meta(&mut self, meta: LogMeta) -> Result<()> {
        let path = self.dir.join(META_FILE);
        fs::write_file_atomic(&*self.fs, &path, &format::encode_meta(&meta))?;
        self.meta = meta;
        Ok(())
    }

    /// Syncs the open segment's data (the barrier of `LogStorage::sync`).
    pub fn sync(&mut self) -> Result<()> {
        self.guarded(|w| match &w.open {
            Some(open) => open.file.sync_data(),
            None => Ok(()),
        })
    }

    /// Writes the close record: an empty batch end after the last batch, synced, proving to
    /// the next open that every batch before it was synced. Later mutators answer `Stopped`.
    pub fn close(&mut self, index: &RwLock<Index>) -> Result<()> {
        if self.closed {
            return Ok(());
        }
        let r = match self.failed {
            Some(_) => Ok(()),
            None => self.guarded(|w| w.write_close_record(index)),
        };
        self.closed = true;
        r
    }

    fn write_close_record(&mut self, index: &RwLock<Index>) -> Result<()> {
        let Some(open) = self.open.as_mut() else {
            return Ok(());
        };
        if open.capacity - open.write_offset < BATCH_END_LEN {
            // No room (a previous life's close record took the reserve): that record still
            // proves everything before it synced, and nothing was appended since.
            return Ok(());
        }
        // The open segment is the last one: its next entry is the log's next.
        let next = index.read().last_log_index + 1;
        let start = open.write_offset;
        self.buf.clear();
        let end = BatchEnd {
            start,
            first_index: next,
            last_index: next - 1,
        };
        encode_batch_end(&mut self.buf, open.salt, &end);
        fs::write_all_at(&*open.file, &self.buf, start)?;
        open.file.sync_data()?;
        open.write_offset += self.buf.len() as u64;
        Ok(())
    }
}

fn invariant(what: &str) -> RaftError {
    RaftError::ErrorState {
        reason: format!("invariant broken in the log writer: {what}"),
    }
}
