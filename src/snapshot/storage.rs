//! [`SnapshotStorage`]: braft's LocalSnapshotStorage. Writes a snapshot under `temp/`, makes
//! it durable, renames it to `snapshot_<index:020>/`, and removes older ones; finds the newest
//! snapshot that verifies, skipping (and logging) half-written or damaged ones.
//!
//! All IO goes through the file layer. A failure while writing (a full disk: RELIABILITY.md
//! trap 11) leaves the previous snapshot and the log untouched; the half-written `temp/` is
//! removed on the next write or open.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use parking_lot::{Condvar, Mutex};
use slog::Logger;

use super::meta::{check_file_name, SnapshotFile, SnapshotMeta, META_BYTES_MAX, META_FILE};
use crate::error::{RaftError, Result};
use crate::fs::{self, FileSystem, OpenOptions};
use crate::types::{Configuration, LogId};

const TEMP_DIR: &str = "temp";
/// Where a snapshot copied from the leader is assembled (apart from local saves, which may
/// run at the same time).
const INSTALL_DIR: &str = "install";
const PREFIX: &str = "snapshot_";
/// Chunk size for checksumming user files.
const CHUNK_BYTES: usize = 1 << 20;

/// The snapshots of one node, in one directory.
pub struct SnapshotStorage {
    fs: Arc<dyn FileSystem>,
    dir: PathBuf,
    logger: Logger,
    /// The newest committed snapshot's LogId, as last written or found.
    last: Mutex<Option<LogId>>,
    /// Whether commits may run, and how many do.
    commits: Mutex<Commits>,
    /// Signalled when the last running commit ends (for `close`).
    commits_idle: Condvar,
}

/// What admits a commit to a [`SnapshotStorage`].
#[derive(Default)]
struct Commits {
    running: usize,
    /// Set by [`SnapshotStorage::close`]: a state machine may finish a save from its own
    /// thread after its node was joined, and must not write into a directory another node
    /// may own by then.
    closed: bool,
    /// The sync failure that ended commits: after it a snapshot directory may exist without
    /// being durable, and a later commit must not take it for one.
    failed: Option<RaftError>,
}

/// A snapshot being written: the user puts files in [`SnapshotWriter::path`].
pub struct SnapshotWriter {
    fs: Arc<dyn FileSystem>,
    root: PathBuf,
    temp: PathBuf,
    files: Vec<String>,
}

/// A committed, verified snapshot to load from.
#[derive(Clone, Debug)]
pub struct SnapshotReader {
    path: PathBuf,
    meta: SnapshotMeta,
}

fn snapshot_name(index: u64) -> String {
    format!("{PREFIX}{index:020}")
}

fn parse_snapshot_name(name: &str) -> Option<u64> {
    let digits = name.strip_prefix(PREFIX)?;
    if digits.len() != 20 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

impl SnapshotStorage {
    /// Opens (creating if needed) the snapshot directory `dir` and removes a `temp/` left by a
    /// save that never finished.
    pub fn open(fs: Arc<dyn FileSystem>, dir: &Path, logger: Logger) -> Result<SnapshotStorage> {
        if !fs.is_dir(dir) {
            fs.create_dir_all(dir)?;
            fs.sync_dir(&fs::parent_dir(dir)?)?;
        }
        for unfinished in [TEMP_DIR, INSTALL_DIR] {
            let temp = dir.join(unfinished);
            if fs.exists(&temp) {
                slog::info!(logger, "removing an unfinished snapshot";
                    "path" => %temp.display());
                fs.remove_dir_all(&temp)?;
                fs.sync_dir(dir)?;
            }
        }
        Ok(SnapshotStorage {
            fs,
            dir: dir.to_path_buf(),
            logger,
            last: Mutex::new(None),
            commits: Mutex::new(Commits::default()),
            commits_idle: Condvar::new(),
        })
    }

    /// The directory holding the snapshots.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The LogId of the newest snapshot written or found by this storage, if any.
    pub fn last_included(&self) -> Option<LogId> {
        *self.last.lock()
    }

    /// Starts a new snapshot in a fresh `temp/` directory.
    pub fn create_writer(&self) -> Result<SnapshotWriter> {
        self.writer_in(TEMP_DIR)
    }

    /// Starts a snapshot copied from another peer, in a directory of its own.
    pub fn create_install_writer(&self) -> Result<SnapshotWriter> {
        self.writer_in(INSTALL_DIR)
    }

    fn writer_in(&self, name: &str) -> Result<SnapshotWriter> {
        let temp = self.dir.join(name);
        if self.fs.exists(&temp) {
            self.fs.remove_dir_all(&temp)?;
        }
        self.fs.create_dir_all(&temp)?;
        Ok(SnapshotWriter {
            fs: self.fs.clone(),
            root: self.dir.clone(),
            temp,
            files: Vec::new(),
        })
    }

    /// Makes `writer`'s files a snapshot of the state up to `last_included`, durable before
    /// it returns, and removes older snapshots. If a snapshot at that index exists already it
    /// is kept (it holds the same state) and the new one discarded. A failed sync is final:
    /// this and every later commit return it (see [`SnapshotStorage::failed`]).
    pub fn commit(
        &self,
        writer: SnapshotWriter,
        last_included: LogId,
        conf: Configuration,
    ) -> Result<SnapshotMeta> {
        let refused = {
            let mut c = self.commits.lock();
            match (&c.failed, c.closed) {
                (Some(e), _) => Some(e.clone()),
                (None, true) => Some(RaftError::Stopped),
                (None, false) => {
                    c.running += 1;
                    None
                }
            }
        };
        if let Some(e) = refused {
            let _ = writer.abort();
            return Err(e);
        }
        let result = self.commit_synced(writer, last_included, conf);
        let mut c = self.commits.lock();
        c.running -= 1;
        if c.running == 0 {
            self.commits_idle.notify_all();
        }
        let newly_failed = match &result {
            Err(e) if e.is_sync_failure() && c.failed.is_none() => {
                c.failed = Some(e.clone());
                true
            }
            _ => false,
        };
        drop(c);
        if newly_failed {
            slog::error!(self.logger, "a snapshot sync failed; no further snapshot commits";
                "error" => ?result.as_ref().err());
        }
        result
    }

    /// Refuses every later commit (`Stopped`) and waits for the ones running: after it
    /// returns, this storage writes nothing more (its node is joined).
    pub fn close(&self) {
        let mut c = self.commits.lock();
        c.closed = true;
        while c.running > 0 {
            self.commits_idle.wait(&mut c);
        }
    }

    /// The sync failure that stopped this storage's commits, if one happened.
    pub fn failed(&self) -> Option<RaftError> {
        self.commits.lock().failed.clone()
    }

    fn commit_synced(
        &self,
        writer: SnapshotWriter,
        last_included: LogId,
        conf: Configuration,
    ) -> Result<SnapshotMeta> {
        let meta = writer.seal(last_included, conf)?;
        let target = self.dir.join(snapshot_name(last_included.index));
        if self.fs.exists(&target) {
            self.fs.remove_dir_all(&writer.temp)?;
            let existing = self.read_verified(&target)?;
            self.advance_last(existing.meta.last_included);
            return Ok(existing.meta);
        }
        self.fs.rename(&writer.temp, &target)?;
        self.fs.sync_dir(&self.dir)?;
        self.advance_last(last_included);
        self.remove_older_than(last_included.index)?;
        Ok(meta)
    }

    /// Records `id` as the newest committed snapshot unless a newer one is already known:
    /// committing an older snapshot (a slow install racing a local save) must never make
    /// the storage forget the newer one it still holds on disk.
    fn advance_last(&self, id: LogId) {
        let mut last = self.last.lock();
        if last.is_none_or(|l| l.index < id.index) {
            *last = Some(id);
        }
    }

    /// Reads up to `max_bytes` of file `name` (`None`: the meta file) of the committed
    /// snapshot ending at `index`, from `offset`; also tells whether the read reached the
    /// file's end. A snapshot replaced by a newer one is gone: the reader learns it from the
    /// error and asks for the newer one. Serves the leader side of a remote install.
    pub fn read_chunk(
        &self,
        index: u64,
        name: Option<&str>,
        offset: u64,
        max_bytes: usize,
    ) -> Result<(Vec<u8>, bool)> {
        let name = match name {
            Some(n) => {
                check_file_name(n)?;
                n
            }
            None => META_FILE,
        };
        let path = self.dir.join(snapshot_name(index)).join(name);
        if !self.fs.exists(&path) {
            return Err(RaftError::invalid(format!(
                "snapshot {index} has no file {name:?} here (replaced by a newer one?)"
            )));
        }
        let file = self.fs.open(&path, OpenOptions::READ)?;
        let size = file.size()?;
        let n = size.saturating_sub(offset).min(max_bytes as u64) as usize;
        let mut buf = vec![0u8; n];
        fs::read_exact_at(&*file, &mut buf, offset)?;
        Ok((buf, offset + n as u64 >= size))
    }

    /// The newest snapshot that verifies (meta checksum, every file's size and checksum).
    /// Damaged or unreadable ones are skipped with a logged reason and left untouched.
    pub fn newest(&self) -> Result<Option<SnapshotReader>> {
        let mut indexes: Vec<u64> = self
            .fs
            .read_dir(&self.dir)?
            .iter()
            .filter_map(|n| parse_snapshot_name(n))
            .collect();
        indexes.sort_unstable_by(|a, b| b.cmp(a));
        for index in indexes {
            let path = self.dir.join(snapshot_name(index));
            match self.read_verified(&path) {
                Ok(reader) if reader.meta.last_included.index == index => {
                    *self.last.lock() = Some(reader.meta.last_included);
                    return Ok(Some(reader));
                }
                Ok(reader) => {
                    slog::error!(self.logger, "skipping snapshot: meta names another index";
                    "path" => %path.display(), "meta_index" => reader.meta.last_included.index)
                }
                Err(e) => slog::error!(self.logger, "skipping damaged snapshot";
                    "path" => %path.display(), "reason" => %e),
            }
        }
        Ok(None)
    }

    fn read_verified(&self, path: &Path) -> Result<SnapshotReader> {
        let meta_path = path.join(META_FILE);
        let meta = SnapshotMeta::decode(
            &fs::read_file(&*self.fs, &meta_path, META_BYTES_MAX as u64)?,
            &meta_path,
        )?;
        for f in &meta.files {
            let file_path = path.join(&f.name);
            let (size, crc) = checksum_file(&*self.fs, &file_path)?;
            if size != f.size || crc != f.crc {
                return Err(RaftError::corruption(
                    &file_path,
                    0,
                    format!(
                        "snapshot file has size {size} crc {crc:#010x}, \
                         meta records size {} crc {:#010x}",
                        f.size, f.crc
                    ),
                ));
            }
        }
        Ok(SnapshotReader {
            path: path.to_path_buf(),
            meta,
        })
    }

    fn remove_older_than(&self, index: u64) -> Result<()> {
        let mut removed = false;
        for name in self.fs.read_dir(&self.dir)? {
            if parse_snapshot_name(&name).is_some_and(|i| i < index) {
                self.fs.remove_dir_all(&self.dir.join(&name))?;
                removed = true;
            }
        }
        if removed {
            self.fs.sync_dir(&self.dir)?;
        }
        Ok(())
    }
}

/// Size and CRC-32C of a file, read in chunks through the file layer.
fn checksum_file(fs: &dyn FileSystem, path: &Path) -> Result<(u64, u32)> {
    let file = fs.open(path, OpenOptions::READ)?;
    let size = file.size()?;
    let mut buf = vec![0u8; CHUNK_BYTES];
    let (mut crc, mut off) = (0u32, 0u64);
    while off < size {
        let n = ((size - off) as usize).min(buf.len());
        fs::read_exact_at(&*file, &mut buf[..n], off)?;
        crc = crc32c::crc32c_append(crc, &buf[..n]);
        off += n as u64;
    }
    Ok((size, crc))
}

impl SnapshotWriter {
    /// The directory to put the snapshot's files in.
    pub fn path(&self) -> &Path {
        &self.temp
    }

    /// Records a file the caller wrote into [`SnapshotWriter::path`] itself.
    pub fn add_file(&mut self, name: &str) -> Result<()> {
        check_file_name(name)?;
        if !self.fs.exists(&self.temp.join(name)) {
            return Err(RaftError::invalid(format!(
                "snapshot file {name:?} was not written to {}",
                self.temp.display()
            )));
        }
        if !self.files.iter().any(|f| f == name) {
            self.files.push(name.to_string());
        }
        Ok(())
    }

    /// Writes a whole file into the snapshot through the file layer and records it.
    pub fn write_file(&mut self, name: &str, contents: &[u8]) -> Result<()> {
        check_file_name(name)?;
        let file = self.fs.open(
            &self.temp.join(name),
            OpenOptions {
                truncate: true,
                ..OpenOptions::CREATE
            },
        )?;
        fs::write_all_at(&*file, contents, 0)?;
        self.add_file(name)
    }

    /// Writes `data` at `offset` of file `name` (created if new) and records the file: how a
    /// snapshot copied in chunks is assembled.
    pub fn write_at(&mut self, name: &str, data: &[u8], offset: u64) -> Result<()> {
        check_file_name(name)?;
        let file = self.fs.open(&self.temp.join(name), OpenOptions::CREATE)?;
        fs::write_all_at(&*file, data, offset)?;
        self.add_file(name)
    }

    /// Checksums and syncs every file, writes and syncs the meta, syncs the directory.
    fn seal(&self, last_included: LogId, conf: Configuration) -> Result<SnapshotMeta> {
        let mut files = Vec::with_capacity(self.files.len());
        for name in &self.files {
            let path = self.temp.join(name);
            let (size, crc) = checksum_file(&*self.fs, &path)?;
            self.fs.open(&path, OpenOptions::READ)?.sync_all()?;
            files.push(SnapshotFile {
                name: name.clone(),
                size,
                crc,
            });
        }
        let meta = SnapshotMeta {
            last_included,
            conf,
            files,
        };
        let meta_file = self
            .fs
            .open(&self.temp.join(META_FILE), OpenOptions::CREATE_NEW)?;
        let encoded = meta.encode();
        if encoded.len() > META_BYTES_MAX {
            return Err(RaftError::invalid(format!(
                "a snapshot of {} files makes a meta of {} bytes, over META_BYTES_MAX = \
                 {META_BYTES_MAX}",
                meta.files.len(),
                encoded.len()
            )));
        }
        fs::write_all_at(&*meta_file, &encoded, 0)?;
        meta_file.sync_all()?;
        self.fs.sync_dir(&self.temp)?;
        Ok(meta)
    }

    /// Discards the unfinished snapshot.
    pub fn abort(self) -> Result<()> {
        self.fs.remove_dir_all(&self.temp)?;
        self.fs.sync_dir(&self.root)
    }
}

impl SnapshotReader {
    /// The snapshot's directory.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// What the snapshot contains.
    pub fn meta(&self) -> &SnapshotMeta {
        &self.meta
    }

    /// The path of one of the snapshot's files.
    pub fn file_path(&self, name: &str) -> PathBuf {
        self.path.join(name)
    }

    /// Reads a whole file of the snapshot.
    pub fn read_file(&self, fs: &dyn FileSystem, name: &str) -> Result<Vec<u8>> {
        check_file_name(name)?;
        if !self.meta.files.iter().any(|f| f.name == name) {
            return Err(RaftError::invalid(format!("snapshot has no file {name:?}")));
        }
        fs::read_file(fs, &self.path.join(name), u64::MAX)
    }
}

#[cfg(test)]
mod tests;
