//! [`FaultFs`]: a file layer for tests that fails on command and simulates crashes.
//!
//! It wraps the real file system under one root directory and keeps a model of what is
//! *durable*: per file, the bytes as of its last successful sync; per directory, the entries
//! as of its last directory sync. [`FaultFs::crash`] rewrites the real directory tree to that
//! model, as a power cut would leave it (pessimistically: POSIX promises nothing unsynced):
//! unsynced writes vanish, files created or renamed without a directory sync vanish or keep
//! their old names, and with [`CrashMode::Torn`] a random subset of the unsynced pages survives,
//! as a kernel writing pages back in any order leaves them.
//!
//! Faults, each with the reason the system must survive it:
//! - `NoSpace` (ENOSPC): disks fill up; must be an error, never a crash or SIGBUS.
//! - `Eio`: disks fail; on a sync it also drops the unsynced pages, as Linux does after a
//!   failed writeback, so a later "successful" sync would lie: the node must not retry.
//! - `ShortWrite`: a write that stores only a prefix, then ENOSPC on the next write.
//!
//! Test code only: it holds one mutex across the real IO to keep the model exact.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::io;
use std::path::{Component, Path, PathBuf};
use std::sync::Arc;

use parking_lot::Mutex;

use crate::error::{RaftError, Result};
use crate::fs::{File, FileSystem, RealFs};
use crate::types::Rng;

pub(super) const PAGE: u64 = 4096;

/// The operation a [`FaultRule`] applies to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FaultOp {
    /// Opening or creating a file.
    Open,
    /// `write_at`.
    Write,
    /// `read_at`.
    Read,
    /// `sync_data` and `sync_all`.
    Sync,
    /// `allocate` (fallocate).
    Allocate,
    /// `set_len`.
    SetLen,
    /// `rename`.
    Rename,
    /// `remove_file` and `remove_dir_all`.
    Remove,
    /// `sync_dir`.
    SyncDir,
    /// `create_dir_all`.
    CreateDir,
    /// Every operation above.
    Any,
}

/// What an injected fault does.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FaultKind {
    /// Fail with ENOSPC.
    NoSpace,
    /// Fail with EIO (on a sync: and drop the file's unsynced pages).
    Eio,
    /// On a write: store the first half and return its length; the file's next write fails
    /// with ENOSPC. Other operations: fail with ENOSPC.
    ShortWrite,
    /// On a file sync: report success but make nothing durable, as if the process died
    /// between its write and the sync's effect (a crash "during" a batch: its pages are then
    /// lost, or written back in any order by `crash(CrashMode::Torn)`). Other operations:
    /// no effect.
    SkipSync,
}

/// One injected fault: which operations it hits and how often.
#[derive(Clone, Debug)]
pub struct FaultRule {
    /// The operation to fail.
    pub op: FaultOp,
    /// How it fails.
    pub kind: FaultKind,
    /// Only paths containing this string (`None`: every path).
    pub path_contains: Option<String>,
    /// Let this many matching operations succeed first.
    pub skip: u64,
    /// Fail this many times, then retire (`None`: forever).
    pub times: Option<u64>,
    /// Fail each matching operation with this probability (seeded).
    pub probability: f64,
}

impl FaultRule {
    /// A rule failing every matching `op` with `kind`, forever.
    pub fn new(op: FaultOp, kind: FaultKind) -> FaultRule {
        FaultRule {
            op,
            kind,
            path_contains: None,
            skip: 0,
            times: None,
            probability: 1.0,
        }
    }

    /// Restricts the rule to paths containing `s`.
    pub fn on_path(mut self, s: &str) -> FaultRule {
        self.path_contains = Some(s.to_string());
        self
    }

    /// Lets `n` matching operations pass first.
    pub fn after(mut self, n: u64) -> FaultRule {
        self.skip = n;
        self
    }

    /// Fails only `n` times.
    pub fn times(mut self, n: u64) -> FaultRule {
        self.times = Some(n);
        self
    }
}

/// How [`FaultFs::crash`] treats unsynced data.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CrashMode {
    /// Every unsynced write is lost.
    DropUnsynced,
    /// Each unsynced page survives with probability 1/2, chosen by the FaultFs's seed.
    Torn,
}

/// Counts of the operations a [`FaultFs`] carried out (successful or not).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FsStats {
    /// `write_at` calls.
    pub writes: u64,
    /// Bytes passed to `write_at`.
    pub bytes_written: u64,
    /// `sync_data` + `sync_all` calls.
    pub syncs: u64,
    /// `sync_dir` calls.
    pub dir_syncs: u64,
    /// `rename` calls.
    pub renames: u64,
    /// Faults injected.
    pub faults: u64,
}

pub(super) type Ino = u64;

pub(super) enum Node {
    Dir {
        live: BTreeMap<String, Ino>,
        durable: BTreeMap<String, Ino>,
    },
    File {
        /// Contents as of the last successful sync.
        durable: Vec<u8>,
        /// Pages written since then.
        dirty: BTreeSet<u64>,
        /// Set by a short write: the next write fails with ENOSPC.
        fail_next_write: bool,
    },
}

pub(super) struct State {
    root: PathBuf,
    nodes: HashMap<Ino, Node>,
    next_ino: Ino,
    /// Bumped by every crash; handles from an older generation belong to a dead process.
    generation: u64,
    rules: Vec<FaultRule>,
    rng: Rng,
    stats: FsStats,
}

/// A fault-injecting, crash-simulating file system rooted at one directory.
/// Clones share the same model.
#[derive(Clone)]
pub struct FaultFs {
    state: Arc<Mutex<State>>,
}

pub(super) fn os_err(op: &'static str, path: &Path, errno: i32) -> RaftError {
    RaftError::io(op, Some(path), &io::Error::from_raw_os_error(errno))
}

impl FaultFs {
    /// A FaultFs over the existing tree at `root`; everything in it now counts as durable.
    pub fn new(root: &Path, seed: u64) -> Result<FaultFs> {
        let mut state = State {
            root: root.to_path_buf(),
            nodes: HashMap::new(),
            next_ino: 1,
            generation: 0,
            rules: Vec::new(),
            rng: Rng::new(seed),
            stats: FsStats::default(),
        };
        state.adopt_tree()?;
        Ok(FaultFs {
            state: Arc::new(Mutex::new(state)),
        })
    }

    /// The FaultFs as a shareable trait object.
    pub fn shared(&self) -> Arc<dyn FileSystem> {
        Arc::new(self.clone())
    }

    /// Adds a fault rule.
    pub fn inject(&self, rule: FaultRule) {
        self.state.lock().rules.push(rule);
    }

    /// Removes every fault rule.
    pub fn clear_faults(&self) {
        self.state.lock().rules.clear();
    }

    /// Counts of operations so far.
    pub fn stats(&self) -> FsStats {
        self.state.lock().stats
    }

    /// Declares the real tree as it is now durable (after a test edited files directly).
    pub fn rescan(&self) -> Result<()> {
        let mut st = self.state.lock();
        st.generation += 1;
        st.adopt_tree()
    }

    /// Simulates a power cut: the tree under the root becomes what was durable. Open handles
    /// from before the crash fail with EIO from now on (their process is dead).
    pub fn crash(&self, mode: CrashMode) -> Result<()> {
        let mut st = self.state.lock();
        st.crash(mode)
    }
}

impl State {
    fn alloc(&mut self, node: Node) -> Ino {
        let ino = self.next_ino;
        self.next_ino += 1;
        self.nodes.insert(ino, node);
        ino
    }

    const ROOT: Ino = 0;

    fn adopt_tree(&mut self) -> Result<()> {
        self.nodes.clear();
        self.nodes.insert(
            State::ROOT,
            Node::Dir {
                live: BTreeMap::new(),
                durable: BTreeMap::new(),
            },
        );
        let root = self.root.clone();
        self.adopt_dir(State::ROOT, &root)
    }

    fn adopt_dir(&mut self, dir_ino: Ino, dir: &Path) -> Result<()> {
        for name in RealFs.read_dir(dir)? {
            let path = dir.join(&name);
            let ino = if path.is_dir() {
                let ino = self.alloc(Node::Dir {
                    live: BTreeMap::new(),
                    durable: BTreeMap::new(),
                });
                self.adopt_dir(ino, &path)?;
                ino
            } else {
                let content =
                    std::fs::read(&path).map_err(|e| RaftError::io("read", Some(&path), &e))?;
                self.alloc(Node::File {
                    durable: content,
                    dirty: BTreeSet::new(),
                    fail_next_write: false,
                })
            };
            if let Some(Node::Dir { live, durable }) = self.nodes.get_mut(&dir_ino) {
                live.insert(name.clone(), ino);
                durable.insert(name, ino);
            }
        }
        Ok(())
    }

    /// The parent directory's inode and the last component of `path`.
    fn split(&self, path: &Path) -> Result<(Ino, String)> {
        let rel = path.strip_prefix(&self.root).map_err(|_| {
            RaftError::invalid(format!(
                "FaultFs: {} is outside its root {}",
                path.display(),
                self.root.display()
            ))
        })?;
        let mut comps: Vec<String> = Vec::new();
        for c in rel.components() {
            match c {
                Component::Normal(s) => comps.push(s.to_string_lossy().into_owned()),
                Component::CurDir => {}
                _ => {
                    return Err(RaftError::invalid(format!(
                        "FaultFs: unsupported path {}",
                        path.display()
                    )))
                }
            }
        }
        let last = comps
            .pop()
            .ok_or_else(|| RaftError::invalid("FaultFs: path is the root"))?;
        let mut ino = State::ROOT;
        for c in comps {
            ino = self
                .child(ino, &c)
                .ok_or_else(|| os_err("lookup", path, libc::ENOENT))?;
        }
        Ok((ino, last))
    }

    fn child(&self, dir: Ino, name: &str) -> Option<Ino> {
        match self.nodes.get(&dir) {
            Some(Node::Dir { live, .. }) => live.get(name).copied(),
            _ => None,
        }
    }

    fn lookup(&self, path: &Path) -> Result<Option<Ino>> {
        if path == self.root {
            return Ok(Some(State::ROOT));
        }
        let (dir, name) = self.split(path)?;
        Ok(self.child(dir, &name))
    }

    fn link(&mut self, dir: Ino, name: String, ino: Option<Ino>) {
        if let Some(Node::Dir { live, .. }) = self.nodes.get_mut(&dir) {
            match ino {
                Some(i) => live.insert(name, i),
                None => live.remove(&name),
            };
        }
    }

    /// Applies the first matching rule, if any: the errno to fail with.
    fn check(&mut self, op: FaultOp, path: &Path) -> Option<FaultKind> {
        let path_str = path.to_string_lossy();
        let mut hit = None;
        for rule in self.rules.iter_mut() {
            let op_matches = rule.op == op || rule.op == FaultOp::Any;
            let path_matches = rule
                .path_contains
                .as_deref()
                .is_none_or(|s| path_str.contains(s));
            if !op_matches || !path_matches {
                continue;
            }
            if rule.skip > 0 {
                rule.skip -= 1;
                continue;
            }
            if rule.times == Some(0) || !self.rng.chance(rule.probability) {
                continue;
            }
            if let Some(t) = rule.times.as_mut() {
                *t -= 1;
            }
            hit = Some(rule.kind);
            break;
        }
        if hit.is_some() {
            self.stats.faults += 1;
        }
        hit
    }

    fn fail(&mut self, op: FaultOp, name: &'static str, path: &Path) -> Result<()> {
        match self.check(op, path) {
            None | Some(FaultKind::SkipSync) => Ok(()),
            Some(FaultKind::Eio) => Err(os_err(name, path, libc::EIO)),
            Some(_) => Err(os_err(name, path, libc::ENOSPC)),
        }
    }

    fn sync_file(&mut self, ino: Ino, real: &dyn File) -> Result<()> {
        let len = real.size()?;
        let Some(Node::File { durable, dirty, .. }) = self.nodes.get_mut(&ino) else {
            return Ok(());
        };
        durable.resize(len as usize, 0);
        for page in std::mem::take(dirty) {
            let start = page * PAGE;
            if start >= len {
                continue;
            }
            let end = (start + PAGE).min(len);
            crate::fs::read_exact_at(real, &mut durable[start as usize..end as usize], start)?;
        }
        Ok(())
    }

    fn crash(&mut self, mode: CrashMode) -> Result<()> {
        let root = self.root.clone();
        let mut contents: HashMap<Ino, Vec<u8>> = HashMap::new();
        let mut reachable = Vec::new();
        self.durable_tree(State::ROOT, &root, &mut reachable);
        for (ino, path) in &reachable {
            let Some(Node::File { durable, dirty, .. }) = self.nodes.get(ino) else {
                continue;
            };
            let mut data = durable.clone();
            if mode == CrashMode::Torn {
                let current = std::fs::read(path).unwrap_or_default();
                for &page in dirty {
                    if !self.rng.chance(0.5) {
                        continue;
                    }
                    let start = (page * PAGE) as usize;
                    let end = (start + PAGE as usize).min(current.len());
                    if start >= end {
                        continue;
                    }
                    if data.len() < end {
                        data.resize(end, 0);
                    }
                    data[start..end].copy_from_slice(&current[start..end]);
                }
            }
            contents.insert(*ino, data);
        }
        for name in RealFs.read_dir(&root)? {
            let p = root.join(name);
            let r = if p.is_dir() {
                std::fs::remove_dir_all(&p)
            } else {
                std::fs::remove_file(&p)
            };
            r.map_err(|e| RaftError::io("crash: remove", Some(&p), &e))?;
        }
        for (ino, path) in &reachable {
            let r = match contents.get(ino) {
                Some(data) => std::fs::write(path, data),
                None => std::fs::create_dir_all(path),
            };
            r.map_err(|e| RaftError::io("crash: rebuild", Some(path), &e))?;
        }
        self.generation += 1;
        self.adopt_tree()
    }

    /// Every inode reachable through durable directory entries, parents before children.
    fn durable_tree(&self, dir: Ino, path: &Path, out: &mut Vec<(Ino, PathBuf)>) {
        if let Some(Node::Dir { durable, .. }) = self.nodes.get(&dir) {
            for (name, &ino) in durable {
                let p = path.join(name);
                out.push((ino, p.clone()));
                self.durable_tree(ino, &p, out);
            }
        }
    }
}

mod handles;

#[cfg(test)]
mod tests;
