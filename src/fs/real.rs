//! [`RealFs`]: the file layer over the operating system (`pread`, `pwrite`, `fdatasync`,
//! `fallocate`, `flock`, `mmap`). Each call is one system call; nothing is cached or retried.

use std::fs;
use std::io;
use std::os::unix::fs::FileExt;
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::error::{RaftError, Result};
use crate::fs::{DirLock, File, FileSystem, Mapping, OpenOptions};

/// The real file system.
#[derive(Clone, Copy, Debug, Default)]
pub struct RealFs;

impl RealFs {
    /// The real file system as a shareable trait object.
    pub fn shared() -> Arc<dyn FileSystem> {
        Arc::new(RealFs)
    }
}

fn err(op: &'static str, path: &Path, e: &io::Error) -> RaftError {
    RaftError::io(op, Some(path), e)
}

/// An open OS file.
struct RealFile {
    file: fs::File,
    path: PathBuf,
}

struct RealMapping(memmap2::Mmap);

impl Mapping for RealMapping {
    fn bytes(&self) -> &[u8] {
        &self.0
    }
}

impl File for RealFile {
    fn path(&self) -> &Path {
        &self.path
    }

    fn read_at(&self, buf: &mut [u8], offset: u64) -> Result<usize> {
        self.file
            .read_at(buf, offset)
            .map_err(|e| err("read", &self.path, &e))
    }

    fn write_at(&self, buf: &[u8], offset: u64) -> Result<usize> {
        self.file
            .write_at(buf, offset)
            .map_err(|e| err("write", &self.path, &e))
    }

    fn sync_data(&self) -> Result<()> {
        self.file
            .sync_data()
            .map_err(|e| err("fdatasync", &self.path, &e))
    }

    fn sync_all(&self) -> Result<()> {
        self.file
            .sync_all()
            .map_err(|e| err("fsync", &self.path, &e))
    }

    fn size(&self) -> Result<u64> {
        self.file
            .metadata()
            .map(|m| m.len())
            .map_err(|e| err("stat", &self.path, &e))
    }

    fn set_len(&self, len: u64) -> Result<()> {
        self.file
            .set_len(len)
            .map_err(|e| err("ftruncate", &self.path, &e))
    }

    fn allocate(&self, len: u64) -> Result<()> {
        let len_off = libc::off_t::try_from(len).map_err(|_| {
            RaftError::invalid(format!("allocation of {len} bytes is out of range"))
        })?;
        // SAFETY: fallocate only reads its integer arguments; the fd is owned by self.file and
        // open for the duration of the call.
        let rc = unsafe { libc::fallocate(self.file.as_raw_fd(), 0, 0, len_off) };
        if rc == 0 {
            return Ok(());
        }
        let e = io::Error::last_os_error();
        if e.raw_os_error() == Some(libc::EOPNOTSUPP) {
            // File systems without fallocate (tmpfs on old kernels): extend by writing zeros
            // so that the space is still reserved before anything is mapped.
            return self.zero_fill(len);
        }
        Err(err("fallocate", &self.path, &e))
    }

    fn map(&self, len: u64) -> Result<Arc<dyn Mapping>> {
        let file_len = self.size()?;
        if len > file_len {
            return Err(RaftError::invalid(format!(
                "cannot map {len} bytes of {}: file has {file_len}",
                self.path.display()
            )));
        }
        let len = usize::try_from(len)
            .map_err(|_| RaftError::invalid(format!("mapping of {len} bytes is out of range")))?;
        if len == 0 {
            return Ok(Arc::new(EmptyMapping));
        }
        // SAFETY: the mapping is read-only and covers only bytes below the file's current
        // length. traft never truncates a file below a range a live mapping covers and never
        // rewrites mapped bytes (segments are sealed and renamed instead), so the bytes seen
        // through the mapping neither change nor vanish while it is alive.
        let map = unsafe { memmap2::MmapOptions::new().len(len).map(&self.file) }
            .map_err(|e| err("mmap", &self.path, &e))?;
        Ok(Arc::new(RealMapping(map)))
    }
}

impl RealFile {
    fn zero_fill(&self, len: u64) -> Result<()> {
        let cur = self.size()?;
        let zeros = vec![0u8; 64 * 1024];
        let mut off = cur;
        while off < len {
            let n = ((len - off) as usize).min(zeros.len());
            crate::fs::write_all_at(self, &zeros[..n], off)?;
            off += n as u64;
        }
        Ok(())
    }
}

struct EmptyMapping;

impl Mapping for EmptyMapping {
    fn bytes(&self) -> &[u8] {
        &[]
    }
}

/// A held `flock` on a directory's `LOCK` file; released when dropped (the fd closes).
struct FlockGuard {
    _file: fs::File,
}

impl FileSystem for RealFs {
    fn open(&self, path: &Path, opts: OpenOptions) -> Result<Arc<dyn File>> {
        let file = fs::OpenOptions::new()
            .read(true)
            .write(opts.write)
            .create(opts.create && !opts.create_new)
            .create_new(opts.create_new)
            .truncate(opts.truncate)
            .open(path)
            .map_err(|e| err("open", path, &e))?;
        Ok(Arc::new(RealFile {
            file,
            path: path.to_path_buf(),
        }))
    }

    fn rename(&self, from: &Path, to: &Path) -> Result<()> {
        fs::rename(from, to).map_err(|e| err("rename", from, &e))
    }

    fn remove_file(&self, path: &Path) -> Result<()> {
        fs::remove_file(path).map_err(|e| err("unlink", path, &e))
    }

    fn remove_dir_all(&self, path: &Path) -> Result<()> {
        fs::remove_dir_all(path).map_err(|e| err("rmdir", path, &e))
    }

    fn create_dir_all(&self, path: &Path) -> Result<()> {
        fs::create_dir_all(path).map_err(|e| err("mkdir", path, &e))
    }

    fn read_dir(&self, path: &Path) -> Result<Vec<String>> {
        let mut names = Vec::new();
        for entry in fs::read_dir(path).map_err(|e| err("readdir", path, &e))? {
            let entry = entry.map_err(|e| err("readdir", path, &e))?;
            names.push(entry.file_name().to_string_lossy().into_owned());
        }
        names.sort();
        Ok(names)
    }

    fn sync_dir(&self, path: &Path) -> Result<()> {
        let dir = fs::File::open(path).map_err(|e| err("open dir", path, &e))?;
        dir.sync_all().map_err(|e| err("fsync dir", path, &e))
    }

    fn exists(&self, path: &Path) -> bool {
        path.exists()
    }

    fn is_dir(&self, path: &Path) -> bool {
        path.is_dir()
    }

    fn lock_dir(&self, dir: &Path) -> Result<DirLock> {
        let path = dir.join("LOCK");
        let file = fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(|e| err("open", &path, &e))?;
        // SAFETY: flock takes an fd we own and plain flags; no memory is passed.
        let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
        if rc != 0 {
            let e = io::Error::last_os_error();
            if e.raw_os_error() == Some(libc::EWOULDBLOCK) {
                return Err(RaftError::DirectoryLocked {
                    path: dir.to_path_buf(),
                });
            }
            return Err(err("flock", &path, &e));
        }
        Ok(Box::new(FlockGuard { _file: file }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fs::{read_file, write_all_at, write_file_atomic};

    #[test]
    fn write_sync_map_read_back() {
        let dir = tempfile::tempdir().unwrap();
        let fs = RealFs;
        let path = dir.path().join("f");
        let f = fs.open(&path, OpenOptions::CREATE_NEW).unwrap();
        f.allocate(8192).unwrap();
        assert_eq!(f.size().unwrap(), 8192);
        write_all_at(&*f, b"hello", 100).unwrap();
        f.sync_data().unwrap();
        let m = f.map(8192).unwrap();
        assert_eq!(&m.bytes()[100..105], b"hello");
        assert!(f.map(8193).is_err());
    }

    #[test]
    fn atomic_write_replaces_contents() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("meta");
        write_file_atomic(&RealFs, &path, b"one").unwrap();
        write_file_atomic(&RealFs, &path, b"two!").unwrap();
        assert_eq!(read_file(&RealFs, &path, 4).unwrap(), b"two!");
        assert_eq!(
            RealFs.read_dir(dir.path()).unwrap(),
            vec!["meta".to_string()]
        );
    }

    #[test]
    fn a_file_longer_than_its_bound_is_corrupt_and_nothing_is_allocated_for_it() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("meta");
        write_file_atomic(&RealFs, &path, b"small").unwrap();
        // A damaged meta file of 1 TiB (sparse): reading it whole would abort the process.
        std::fs::OpenOptions::new()
            .write(true)
            .open(&path)
            .unwrap()
            .set_len(1 << 40)
            .unwrap();
        match read_file(&RealFs, &path, 4096) {
            Err(RaftError::Corruption { file, reason, .. }) => {
                assert_eq!(file, path);
                assert!(reason.contains("1099511627776 bytes"), "{reason}");
            }
            other => panic!("expected Corruption, got {other:?}"),
        }
    }

    #[test]
    fn second_lock_on_a_directory_fails_clearly() {
        let dir = tempfile::tempdir().unwrap();
        let first = RealFs.lock_dir(dir.path()).unwrap();
        let err = RealFs.lock_dir(dir.path()).unwrap_err();
        assert!(matches!(err, RaftError::DirectoryLocked { .. }), "{err}");
        drop(first);
        RealFs.lock_dir(dir.path()).unwrap();
    }

    #[test]
    fn errors_name_the_operation_and_path() {
        let err = RealFs
            .open(Path::new("/nonexistent/x"), OpenOptions::READ)
            .err()
            .unwrap();
        let text = err.to_string();
        assert!(
            text.contains("open") && text.contains("/nonexistent/x"),
            "{text}"
        );
    }
}
