//! The handles of a [`FaultFs`]: each file operation and each file-system operation checks
//! the fault rules, carries out the real call, and updates the durability model. Test code
//! only.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::sync::Arc;

use parking_lot::Mutex;

use super::{os_err, FaultFs, FaultKind, FaultOp, Ino, Node, State, PAGE};
use crate::error::{RaftError, Result};
use crate::fs::{DirLock, File, FileSystem, Mapping, OpenOptions, RealFs};

/// A file opened through a [`FaultFs`].
struct FaultFile {
    real: Arc<dyn File>,
    ino: Ino,
    generation: u64,
    state: Arc<Mutex<State>>,
}

impl FaultFile {
    fn live(&self, st: &State, op: &'static str) -> Result<()> {
        if st.generation != self.generation {
            return Err(os_err(op, self.real.path(), libc::EIO));
        }
        Ok(())
    }
}

impl File for FaultFile {
    fn path(&self) -> &Path {
        self.real.path()
    }

    fn read_at(&self, buf: &mut [u8], offset: u64) -> Result<usize> {
        let mut st = self.state.lock();
        self.live(&st, "read")?;
        st.fail(FaultOp::Read, "read", self.path())?;
        self.real.read_at(buf, offset)
    }

    fn write_at(&self, buf: &[u8], offset: u64) -> Result<usize> {
        let mut st = self.state.lock();
        self.live(&st, "write")?;
        st.stats.writes += 1;
        st.stats.bytes_written += buf.len() as u64;
        if let Some(Node::File {
            fail_next_write, ..
        }) = st.nodes.get_mut(&self.ino)
        {
            if std::mem::take(fail_next_write) {
                return Err(os_err("write", self.path(), libc::ENOSPC));
            }
        }
        let mut len = buf.len();
        match st.check(FaultOp::Write, self.path()) {
            None | Some(FaultKind::SkipSync) => {}
            Some(FaultKind::Eio) => return Err(os_err("write", self.path(), libc::EIO)),
            Some(FaultKind::NoSpace) => return Err(os_err("write", self.path(), libc::ENOSPC)),
            Some(FaultKind::ShortWrite) => len = (buf.len() / 2).max(1).min(buf.len()),
        }
        let n = self.real.write_at(&buf[..len], offset)?;
        if let Some(Node::File {
            dirty,
            fail_next_write,
            ..
        }) = st.nodes.get_mut(&self.ino)
        {
            if n > 0 {
                dirty.extend(offset / PAGE..=(offset + n as u64 - 1) / PAGE);
            }
            *fail_next_write = len < buf.len();
        }
        Ok(n)
    }

    fn sync_data(&self) -> Result<()> {
        self.sync_all()
    }

    fn sync_all(&self) -> Result<()> {
        let mut st = self.state.lock();
        self.live(&st, "fsync")?;
        st.stats.syncs += 1;
        let fault = st.check(FaultOp::Sync, self.path());
        if fault == Some(FaultKind::SkipSync) {
            return Ok(());
        }
        if let Some(kind) = fault {
            // As after a failed writeback on Linux: the dirty pages are marked clean and their
            // contents will never reach the disk, whatever later syncs report.
            if let Some(Node::File { dirty, .. }) = st.nodes.get_mut(&self.ino) {
                dirty.clear();
            }
            let errno = if kind == FaultKind::Eio {
                libc::EIO
            } else {
                libc::ENOSPC
            };
            return Err(os_err("fsync", self.path(), errno));
        }
        self.real.sync_all()?;
        st.sync_file(self.ino, &*self.real)
    }

    fn size(&self) -> Result<u64> {
        self.real.size()
    }

    fn set_len(&self, len: u64) -> Result<()> {
        let mut st = self.state.lock();
        self.live(&st, "ftruncate")?;
        st.fail(FaultOp::SetLen, "ftruncate", self.path())?;
        let old = self.real.size()?;
        self.real.set_len(len)?;
        if let Some(Node::File { dirty, .. }) = st.nodes.get_mut(&self.ino) {
            // The last partial page changed too (zeroed or cut).
            dirty.insert(len.min(old) / PAGE);
        }
        Ok(())
    }

    fn allocate(&self, len: u64) -> Result<()> {
        let mut st = self.state.lock();
        self.live(&st, "fallocate")?;
        st.fail(FaultOp::Allocate, "fallocate", self.path())?;
        self.real.allocate(len)
    }

    fn map(&self, len: u64) -> Result<Arc<dyn Mapping>> {
        let st = self.state.lock();
        self.live(&st, "mmap")?;
        self.real.map(len)
    }
}

impl FileSystem for FaultFs {
    fn open(&self, path: &Path, opts: OpenOptions) -> Result<Arc<dyn File>> {
        let mut st = self.state.lock();
        st.fail(FaultOp::Open, "open", path)?;
        let mut existing = st.lookup(path)?;
        if existing.is_none() && path.is_file() {
            // Written behind the model's back (by a test, or a LOCK file): adopt it as durable.
            let content = std::fs::read(path).map_err(|e| RaftError::io("read", Some(path), &e))?;
            let (dir, name) = st.split(path)?;
            let ino = st.alloc(Node::File {
                durable: content,
                dirty: BTreeSet::new(),
                fail_next_write: false,
            });
            if let Some(Node::Dir { live, durable }) = st.nodes.get_mut(&dir) {
                live.insert(name.clone(), ino);
                durable.insert(name, ino);
            }
            existing = Some(ino);
        }
        let real = RealFs.open(path, opts)?;
        let ino = match existing {
            Some(ino) if !opts.truncate => ino,
            _ => {
                let (dir, name) = st.split(path)?;
                // A new file (or one truncated on open) starts empty and not yet durable.
                let ino = existing.unwrap_or_else(|| {
                    st.alloc(Node::File {
                        durable: Vec::new(),
                        dirty: BTreeSet::new(),
                        fail_next_write: false,
                    })
                });
                if let Some(Node::File { dirty, .. }) = st.nodes.get_mut(&ino) {
                    dirty.insert(0);
                }
                st.link(dir, name, Some(ino));
                ino
            }
        };
        Ok(Arc::new(FaultFile {
            real,
            ino,
            generation: st.generation,
            state: self.state.clone(),
        }))
    }

    fn rename(&self, from: &Path, to: &Path) -> Result<()> {
        let mut st = self.state.lock();
        st.stats.renames += 1;
        st.fail(FaultOp::Rename, "rename", from)?;
        let ino = st
            .lookup(from)?
            .ok_or_else(|| os_err("rename", from, libc::ENOENT))?;
        let (from_dir, from_name) = st.split(from)?;
        let (to_dir, to_name) = st.split(to)?;
        RealFs.rename(from, to)?;
        st.link(from_dir, from_name, None);
        st.link(to_dir, to_name, Some(ino));
        Ok(())
    }

    fn remove_file(&self, path: &Path) -> Result<()> {
        let mut st = self.state.lock();
        st.fail(FaultOp::Remove, "unlink", path)?;
        let (dir, name) = st.split(path)?;
        RealFs.remove_file(path)?;
        st.link(dir, name, None);
        Ok(())
    }

    fn remove_dir_all(&self, path: &Path) -> Result<()> {
        let mut st = self.state.lock();
        st.fail(FaultOp::Remove, "rmdir", path)?;
        let (dir, name) = st.split(path)?;
        RealFs.remove_dir_all(path)?;
        st.link(dir, name, None);
        Ok(())
    }

    fn create_dir_all(&self, path: &Path) -> Result<()> {
        let mut st = self.state.lock();
        st.fail(FaultOp::CreateDir, "mkdir", path)?;
        let rel = path
            .strip_prefix(&st.root)
            .map(Path::to_path_buf)
            .map_err(|_| {
                RaftError::invalid(format!("FaultFs: {} is outside its root", path.display()))
            })?;
        let mut cur = st.root.clone();
        for comp in rel.components() {
            cur.push(comp);
            if st.lookup(&cur)?.is_some() {
                continue;
            }
            RealFs.create_dir_all(&cur)?;
            let ino = st.alloc(Node::Dir {
                live: BTreeMap::new(),
                durable: BTreeMap::new(),
            });
            let (dir, name) = st.split(&cur)?;
            st.link(dir, name, Some(ino));
        }
        Ok(())
    }

    fn read_dir(&self, path: &Path) -> Result<Vec<String>> {
        let _st = self.state.lock();
        RealFs.read_dir(path)
    }

    fn sync_dir(&self, path: &Path) -> Result<()> {
        let mut st = self.state.lock();
        st.stats.dir_syncs += 1;
        st.fail(FaultOp::SyncDir, "fsync dir", path)?;
        let ino = st
            .lookup(path)?
            .ok_or_else(|| os_err("fsync dir", path, libc::ENOENT))?;
        RealFs.sync_dir(path)?;
        if let Some(Node::Dir { live, durable }) = st.nodes.get_mut(&ino) {
            *durable = live.clone();
        }
        Ok(())
    }

    fn exists(&self, path: &Path) -> bool {
        let _st = self.state.lock();
        path.exists()
    }

    fn is_dir(&self, path: &Path) -> bool {
        let _st = self.state.lock();
        path.is_dir()
    }

    fn lock_dir(&self, dir: &Path) -> Result<DirLock> {
        // The LOCK file is outside the model: a crash removes it with the dead process's lock.
        RealFs.lock_dir(dir)
    }
}
