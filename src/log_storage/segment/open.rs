//! Opening a segment directory: read `log_meta`, read and check every segment, decide what
//! to keep, and only then change files (remove stale segments, seal a torn last segment).
//!
//! Runs once, on the thread that opens the storage. Every check happens before the first
//! change, so a [`RaftError::Corruption`] leaves the directory exactly as it was found.
//! Spare segments (`spare.rs`) are kept only when provably whole; a half-prepared one is
//! removed, never used.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use slog::Logger;

use crate::error::{RaftError, Result};
use crate::fs::{self, FileSystem, Mapping, OpenOptions};
use crate::log_storage::segment::format::{
    self, decode_header, FileKind, HeaderError, LogMeta, SegmentHeader, HEADER_LEN, META_FILE,
};
use crate::log_storage::segment::index::{Index, SegmentView};
use crate::log_storage::segment::recovery::{self, OpenScan, Scanned};
use crate::log_storage::segment::spare::{SPARE_FILE, SPARE_TMP};
use crate::log_storage::segment::writer::OpenSegment;
use crate::types::LOG_INDEX_MAX;

/// What recovery found: the meta, the read view, the segment appends continue in, and
/// whether a ready spare segment was kept.
pub(crate) struct Recovered {
    pub meta: LogMeta,
    pub index: Index,
    pub open: Option<OpenSegment>,
    pub spare_ready: bool,
}

/// A segment file with a valid header, not yet scanned.
struct Candidate {
    path: PathBuf,
    kind: FileKind,
    header: SegmentHeader,
    map: Arc<dyn Mapping>,
}

/// A segment to keep, scanned.
struct Kept {
    path: PathBuf,
    scanned: Scanned,
    map: Arc<dyn Mapping>,
    salt: u64,
    /// Still the open segment after recovery (clean end, last in the log).
    open: bool,
}

/// Changes to make once every check passed.
#[derive(Default)]
struct Plan {
    remove: Vec<PathBuf>,
    /// `(from, to)` renames sealing a segment at its last good entry.
    seal: Vec<(PathBuf, PathBuf)>,
}

/// Far more than `log_meta` takes: a longer file is damaged and is not read.
const META_BYTES_MAX: u64 = 4096;

fn load_meta(fs: &dyn FileSystem, dir: &Path, names: &[String]) -> Result<LogMeta> {
    let path = dir.join(META_FILE);
    if names.iter().any(|n| n == META_FILE) {
        let bytes = fs::read_file(fs, &path, META_BYTES_MAX)?;
        return format::decode_meta(&bytes).map_err(|r| RaftError::corruption(&path, 0, r));
    }
    if let Some(seg) = names.iter().find(|n| format::parse_name(n).is_some()) {
        return Err(RaftError::corruption(
            &path,
            0,
            format!("log_meta is missing while segment {seg} exists"),
        ));
    }
    let meta = LogMeta {
        first_log_index: 1,
        epoch: 0,
    };
    fs::write_file_atomic(fs, &path, &format::encode_meta(&meta))?;
    Ok(meta)
}

/// The first index a segment's name gives, checked (with its last) to lie in
/// `1..=LOG_INDEX_MAX`.
fn index_range(path: &Path, kind: FileKind) -> Result<u64> {
    let (first, last) = match kind {
        FileKind::Closed { first, last } => (first, last),
        FileKind::Open { first } => (first, first),
    };
    if first == 0 || last > LOG_INDEX_MAX {
        return Err(RaftError::corruption(
            path,
            0,
            format!("segment indexes outside 1..={LOG_INDEX_MAX} in its name"),
        ));
    }
    Ok(first)
}

fn map_file(fs: &dyn FileSystem, path: &Path) -> Result<Arc<dyn Mapping>> {
    let file = fs.open(path, OpenOptions::READ)?;
    let len = file.size()?;
    // Offsets inside a segment are u32 (SegmentLogStorageOptions bounds segments below
    // 4 GiB): a longer file is not one this storage wrote.
    if len > u64::from(u32::MAX) {
        return Err(RaftError::corruption(
            path,
            0,
            format!("a segment of {len} bytes; segments are under 4 GiB"),
        ));
    }
    file.map(len)
}

/// Reads the header of every segment that may hold live entries; schedules the others for
/// removal.
fn candidates(
    fs: &dyn FileSystem,
    dir: &Path,
    meta: &LogMeta,
    names: &[String],
    plan: &mut Plan,
) -> Result<Vec<Candidate>> {
    let mut out = Vec::new();
    for name in names {
        let Some(kind) = format::parse_name(name) else {
            continue;
        };
        let path = dir.join(name);
        if let FileKind::Closed { last, .. } = kind {
            if last < meta.first_log_index {
                plan.remove.push(path);
                continue;
            }
        }
        let map = map_file(fs, &path)?;
        let header = match decode_header(map.bytes()) {
            Ok(h) => h,
            Err(HeaderError::Version(v)) => {
                return Err(RaftError::corruption(
                    &path,
                    8,
                    format!(
                        "segment format version {v} is not supported (this build reads {})",
                        format::VERSION
                    ),
                ))
            }
            Err(HeaderError::Damaged(reason)) => {
                let empty = recovery::nonzero_end(map.bytes()) <= HEADER_LEN;
                if matches!(kind, FileKind::Open { .. }) && empty {
                    // A creation cut short: nothing was ever appended to it.
                    plan.remove.push(path);
                    continue;
                }
                return Err(RaftError::corruption(&path, 0, reason));
            }
        };
        if header.epoch < meta.epoch {
            plan.remove.push(path);
            continue;
        }
        let first = index_range(&path, kind)?;
        if header.epoch > meta.epoch || header.first_index != first {
            return Err(RaftError::corruption(
                &path,
                16,
                format!(
                    "header (first index {}, epoch {}) does not match the name and log_meta \
                     (epoch {})",
                    header.first_index, header.epoch, meta.epoch
                ),
            ));
        }
        out.push(Candidate {
            path,
            kind,
            header,
            map,
        });
    }
    out.sort_by_key(|c| {
        (
            c.header.first_index,
            matches!(c.kind, FileKind::Open { .. }),
        )
    });
    Ok(out)
}

/// Scans every candidate: all but the last must be whole; the last may end torn.
fn scan(dir: &Path, cands: Vec<Candidate>, logger: &Logger, plan: &mut Plan) -> Result<Vec<Kept>> {
    let n = cands.len();
    let next_firsts: Vec<u64> = cands.iter().skip(1).map(|c| c.header.first_index).collect();
    let mut kept = Vec::with_capacity(n);
    for (i, c) in cands.into_iter().enumerate() {
        let bytes = c.map.bytes();
        let (scanned, open) = match (c.kind, next_firsts.get(i)) {
            (FileKind::Closed { last, .. }, _) => {
                if last + 1 < c.header.first_index {
                    return Err(RaftError::corruption(
                        &c.path,
                        0,
                        "name's last index < first",
                    ));
                }
                (
                    recovery::scan_whole(&c.path, bytes, &c.header, last)?,
                    false,
                )
            }
            (FileKind::Open { .. }, Some(&next)) => {
                // A rollover sealed this one after its last sync; the rename was lost.
                let last = next.saturating_sub(1);
                (
                    recovery::scan_exact(&c.path, bytes, &c.header, last)?,
                    false,
                )
            }
            (FileKind::Open { .. }, None) => {
                match recovery::scan_last(&c.path, bytes, &c.header)? {
                    OpenScan::Clean(s) => (s, true),
                    OpenScan::Torn(s, why) => {
                        slog::warn!(logger, "log recovery: cutting a torn tail";
                        "file" => %c.path.display(), "reason" => why,
                        "last_index_kept" => s.last_index());
                        (s, false)
                    }
                }
            }
        };
        if scanned.offsets.is_empty() && !open {
            plan.remove.push(c.path);
            continue;
        }
        let mut path = c.path;
        if matches!(c.kind, FileKind::Open { .. }) && !open {
            let to = dir.join(format::closed_name(
                scanned.first_index,
                scanned.last_index(),
            ));
            plan.seal.push((path, to.clone()));
            path = to;
        }
        kept.push(Kept {
            path,
            scanned,
            map: c.map,
            salt: c.header.salt,
            open,
        });
    }
    Ok(kept)
}

/// Drops segments whose entries all precede `first_log_index` and checks the rest are
/// contiguous and reach it.
fn check_contiguous(meta: &LogMeta, kept: Vec<Kept>, plan: &mut Plan) -> Result<Vec<Kept>> {
    let mut out: Vec<Kept> = Vec::with_capacity(kept.len());
    for k in kept {
        let s = &k.scanned;
        if !s.offsets.is_empty() && s.last_index() < meta.first_log_index {
            plan.remove.push(k.path);
            continue;
        }
        let want = match out.last() {
            Some(prev) => prev.scanned.last_index() + 1,
            None if s.first_index <= meta.first_log_index => s.first_index,
            None => meta.first_log_index,
        };
        if s.first_index != want {
            return Err(RaftError::corruption(
                &k.path,
                0,
                format!(
                    "segment starts at index {} but the log continues at {want}: entries are \
                     missing",
                    s.first_index
                ),
            ));
        }
        out.push(k);
    }
    if let Some(last) = out.last() {
        if last.scanned.last_index() + 1 < meta.first_log_index {
            return Err(RaftError::corruption(
                &last.path,
                0,
                format!(
                    "log ends at {} before first_log_index {}",
                    last.scanned.last_index(),
                    meta.first_log_index
                ),
            ));
        }
    }
    Ok(out)
}

/// Decides about spare segments (`spare.rs`): a half-prepared `log_spare.tmp` is removed
/// unread; a `log_spare` is kept only when spares are on (`spare_size` is `Some`), its length
/// is the segment size and its header area is still zeros. Its data area needs no check: it
/// was all zeros and synced before the file got that name, and nothing but a header is ever
/// written to it under that name (by a rollover whose rename a crash undid; that header
/// would name a first index the file does not get at its next use, so such a file goes).
/// Returns true if `log_spare` is kept.
fn check_spare(
    fs: &dyn FileSystem,
    dir: &Path,
    names: &[String],
    spare_size: Option<u64>,
    plan: &mut Plan,
) -> Result<bool> {
    if names.iter().any(|n| n == SPARE_TMP) {
        plan.remove.push(dir.join(SPARE_TMP));
    }
    if !names.iter().any(|n| n == SPARE_FILE) {
        return Ok(false);
    }
    let path = dir.join(SPARE_FILE);
    let Some(size) = spare_size else {
        plan.remove.push(path);
        return Ok(false);
    };
    let file = fs.open(&path, OpenOptions::READ)?;
    let mut head = [0u8; HEADER_LEN as usize];
    let usable = file.size()? == size && {
        fs::read_exact_at(&*file, &mut head, 0)?;
        head.iter().all(|&b| b == 0)
    };
    if !usable {
        plan.remove.push(path);
    }
    Ok(usable)
}

fn apply(fs: &dyn FileSystem, dir: &Path, names: &[String], plan: &Plan) -> Result<()> {
    let mut changed = false;
    for p in &plan.remove {
        fs.remove_file(p)?;
        changed = true;
    }
    for (from, to) in &plan.seal {
        fs.rename(from, to)?;
        changed = true;
    }
    let tmp = fs::temp_path(&dir.join(META_FILE));
    if names.iter().any(|n| dir.join(n) == tmp) {
        fs.remove_file(&tmp)?;
        changed = true;
    }
    if changed {
        fs.sync_dir(dir)?;
    }
    Ok(())
}

/// Opens the log in `dir` (already locked): see the module documentation. `spare_size` is
/// the size of a spare segment, `None` when spares are off.
pub(crate) fn recover(
    fs: &dyn FileSystem,
    dir: &Path,
    spare_size: Option<u64>,
    logger: &Logger,
) -> Result<Recovered> {
    let names = fs.read_dir(dir)?;
    let meta = load_meta(fs, dir, &names)?;
    let mut plan = Plan::default();
    let cands = candidates(fs, dir, &meta, &names, &mut plan)?;
    let kept = scan(dir, cands, logger, &mut plan)?;
    let kept = check_contiguous(&meta, kept, &mut plan)?;
    let spare_ready = check_spare(fs, dir, &names, spare_size, &mut plan)?;
    apply(fs, dir, &names, &plan)?;

    let mut index = Index::empty(meta.first_log_index);
    let mut open = None;
    for k in kept {
        if k.open {
            let file = fs.open(&k.path, OpenOptions::WRITE)?;
            open = Some(OpenSegment {
                file,
                first_index: k.scanned.first_index,
                salt: k.salt,
                write_offset: k.scanned.end,
                capacity: k.map.bytes().len() as u64,
                // Which blocks past the end were written (a spare's were) is not known:
                // zeros are written ahead again from here.
                zeroed: k.scanned.end,
            });
        }
        index.last_log_index = k.scanned.last_index();
        index.push_terms(k.scanned.terms.iter().copied());
        index.segments.push(SegmentView {
            first_index: k.scanned.first_index,
            offsets: k.scanned.offsets,
            map: k.map,
            open: k.open,
        });
    }
    // Trims the term runs of entries before first_log_index; no segment is dropped here.
    let _none = index.truncate_prefix(meta.first_log_index);
    Ok(Recovered {
        meta,
        index,
        open,
        spare_ready,
    })
}
