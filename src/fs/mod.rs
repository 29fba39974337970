//! The file layer (DESIGN.md section 5): every byte traft writes to disk goes through
//! [`FileSystem`] and [`File`], so tests can swap in `FaultFs` (feature `fault-injection`)
//! and inject ENOSPC, EIO, short writes, fsync failures and crashes that drop everything
//! unsynced.
//!
//! Errors come back as [`RaftError::Io`] naming the operation and the path. This layer never
//! retries a failed sync (a retried fsync can report success for data the kernel already
//! dropped), never panics on an OS error, and never buffers: each call is one system call.

mod real;

#[cfg(any(test, feature = "fault-injection"))]
mod fault;

use std::any::Any;
use std::path::{Path, PathBuf};
use std::sync::Arc;

pub use real::RealFs;

#[cfg(any(test, feature = "fault-injection"))]
pub use fault::{CrashMode, FaultFs, FaultKind, FaultOp, FaultRule, FsStats};

use crate::error::{RaftError, Result};

/// How to open a file.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct OpenOptions {
    /// Open for writing as well as reading.
    pub write: bool,
    /// Create the file if it does not exist.
    pub create: bool,
    /// Fail if the file exists (implies `create`).
    pub create_new: bool,
    /// Truncate to zero length on open.
    pub truncate: bool,
}

impl OpenOptions {
    /// Read-only.
    pub const READ: OpenOptions = OpenOptions {
        write: false,
        create: false,
        create_new: false,
        truncate: false,
    };
    /// Read-write, creating the file if missing.
    pub const CREATE: OpenOptions = OpenOptions {
        write: true,
        create: true,
        create_new: false,
        truncate: false,
    };
    /// Read-write, the file must not exist yet.
    pub const CREATE_NEW: OpenOptions = OpenOptions {
        write: true,
        create: true,
        create_new: true,
        truncate: false,
    };
    /// Read-write on an existing file.
    pub const WRITE: OpenOptions = OpenOptions {
        write: true,
        create: false,
        create_new: false,
        truncate: false,
    };
}

/// A read-only view of a file's bytes, shared between readers (an mmap for [`RealFs`]).
///
/// Invariant: the bytes of a mapping never change while a reader can see them; traft never
/// rewrites a mapped range (DESIGN.md section 5), and this type only ever hands out `&[u8]`.
pub trait Mapping: Send + Sync + 'static {
    /// The mapped bytes.
    fn bytes(&self) -> &[u8];
}

/// A held lock on a data directory; dropping it releases the lock.
pub type DirLock = Box<dyn Any + Send + Sync>;

/// An open file. All offsets are absolute (`pread`/`pwrite` style), so one handle can be used
/// from several threads.
pub trait File: Send + Sync {
    /// The path the file was opened at.
    fn path(&self) -> &Path;
    /// Reads up to `buf.len()` bytes at `offset`; returns how many were read (0 at end).
    fn read_at(&self, buf: &mut [u8], offset: u64) -> Result<usize>;
    /// Writes up to `buf.len()` bytes at `offset`; may write fewer (a short write).
    fn write_at(&self, buf: &[u8], offset: u64) -> Result<usize>;
    /// `fdatasync`: data and the metadata needed to read it back are durable on return.
    fn sync_data(&self) -> Result<()>;
    /// `fsync`: data and all metadata are durable on return.
    fn sync_all(&self) -> Result<()>;
    /// The file's current length.
    fn size(&self) -> Result<u64>;
    /// Sets the length (truncating or extending with zeros).
    fn set_len(&self, len: u64) -> Result<()>;
    /// Reserves `len` bytes of disk for the file (`fallocate`), extending its length; after
    /// this returns, writes below `len` cannot fail for lack of space.
    fn allocate(&self, len: u64) -> Result<()>;
    /// Maps the first `len` bytes read-only. `len` must not exceed the file's length.
    fn map(&self, len: u64) -> Result<Arc<dyn Mapping>>;
}

/// The operations traft needs from a file system. Paths are ordinary OS paths.
pub trait FileSystem: Send + Sync + 'static {
    /// Opens (or creates) a file.
    fn open(&self, path: &Path, opts: OpenOptions) -> Result<Arc<dyn File>>;
    /// Atomically renames `from` to `to`, replacing `to` if it is a file.
    fn rename(&self, from: &Path, to: &Path) -> Result<()>;
    /// Removes a file.
    fn remove_file(&self, path: &Path) -> Result<()>;
    /// Removes a directory and everything in it.
    fn remove_dir_all(&self, path: &Path) -> Result<()>;
    /// Creates a directory and its missing parents.
    fn create_dir_all(&self, path: &Path) -> Result<()>;
    /// The names in a directory, sorted.
    fn read_dir(&self, path: &Path) -> Result<Vec<String>>;
    /// Makes the directory's entries (creates, renames, removes in it) durable.
    fn sync_dir(&self, path: &Path) -> Result<()>;
    /// True if something exists at `path`.
    fn exists(&self, path: &Path) -> bool;
    /// True if `path` is a directory.
    fn is_dir(&self, path: &Path) -> bool;
    /// Takes an exclusive lock on directory `dir` (a `LOCK` file in it). A second lock on the
    /// same directory, from this process or another, fails with
    /// [`RaftError::DirectoryLocked`] until the first is dropped.
    fn lock_dir(&self, dir: &Path) -> Result<DirLock>;
}

/// Reads exactly `buf.len()` bytes at `offset`, or fails (a short file is an `UnexpectedEof`).
pub fn read_exact_at(file: &dyn File, mut buf: &mut [u8], mut offset: u64) -> Result<()> {
    while !buf.is_empty() {
        let n = file.read_at(buf, offset)?;
        if n == 0 {
            let err = std::io::Error::from(std::io::ErrorKind::UnexpectedEof);
            return Err(RaftError::io("read", Some(file.path()), &err));
        }
        buf = &mut buf[n..];
        offset += n as u64;
    }
    Ok(())
}

/// Writes all of `buf` at `offset`, continuing after short writes.
pub fn write_all_at(file: &dyn File, mut buf: &[u8], mut offset: u64) -> Result<()> {
    while !buf.is_empty() {
        let n = file.write_at(buf, offset)?;
        if n == 0 {
            let err = std::io::Error::from(std::io::ErrorKind::WriteZero);
            return Err(RaftError::io("write", Some(file.path()), &err));
        }
        buf = &buf[n..];
        offset += n as u64;
    }
    Ok(())
}

/// Reads a whole file of at most `max` bytes. A longer file is [`RaftError::Corruption`],
/// found before anything is allocated for it: a damaged length (or a sparse file of
/// gigabytes) where a small meta file belongs must not become an allocation of its size.
pub fn read_file(fs: &dyn FileSystem, path: &Path, max: u64) -> Result<Vec<u8>> {
    let file = fs.open(path, OpenOptions::READ)?;
    let len = file.size()?;
    if len > max {
        return Err(RaftError::corruption(
            path,
            0,
            format!("{len} bytes, more than the {max} this file may hold"),
        ));
    }
    let len = usize::try_from(len)
        .map_err(|_| RaftError::invalid(format!("{} is too large to read", path.display())))?;
    let mut buf = vec![0u8; len];
    read_exact_at(&*file, &mut buf, 0)?;
    Ok(buf)
}

/// Replaces `path` with `contents` atomically and durably: write a temp file beside it, sync
/// it, rename it over `path`, sync the directory. After a crash at any point, `path` holds
/// either the old or the new contents, never a mix and never nothing (RELIABILITY.md trap 9).
pub fn write_file_atomic(fs: &dyn FileSystem, path: &Path, contents: &[u8]) -> Result<()> {
    let dir = parent_dir(path)?;
    let tmp = temp_path(path);
    if fs.exists(&tmp) {
        fs.remove_file(&tmp)?;
    }
    let file = fs.open(&tmp, OpenOptions::CREATE_NEW)?;
    write_all_at(&*file, contents, 0)?;
    file.sync_all()?;
    drop(file);
    fs.rename(&tmp, path)?;
    fs.sync_dir(&dir)
}

/// The temp-file name [`write_file_atomic`] uses for `path`.
pub fn temp_path(path: &Path) -> PathBuf {
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(".tmp");
    path.with_file_name(name)
}

/// The directory containing `path`.
pub fn parent_dir(path: &Path) -> Result<PathBuf> {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => Ok(p.to_path_buf()),
        Some(_) => Ok(PathBuf::from(".")),
        None => Err(RaftError::invalid(format!(
            "{} has no parent directory",
            path.display()
        ))),
    }
}
