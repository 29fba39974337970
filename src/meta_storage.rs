//! [`RaftMetaStorage`] (braft's LocalRaftMetaStorage): the peer's current term and the vote
//! it cast in that term, durable before any message that depends on them is sent.
//!
//! One file, `raft_meta`: `magic "TRAFTMET" | version u32 | term u64 | voted_for (optional
//! PeerId) | crc u32` over everything before the crc. Every change replaces it atomically
//! (temp file, sync, rename, directory sync: RELIABILITY.md trap 9), so after a crash it holds
//! the old or the new value, never neither and never a mix. A damaged file is
//! [`RaftError::Corruption`] naming it; it is never guessed around.
//!
//! Blocking IO: called on the disk pool. The storage refuses a term that goes backwards or a
//! second, different vote in one term (both would be bugs of the caller), and after an IO
//! error it refuses every further change: a failed sync is never retried.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::error::{RaftError, Result};
use crate::fs::{self, DirLock, FileSystem};
use crate::types::codec::{put_u32, put_u64, Reader};
use crate::types::PeerId;

const MAGIC: &[u8; 8] = b"TRAFTMET";
const VERSION: u32 = 1;
/// The meta file's name inside its directory.
pub const META_FILE: &str = "raft_meta";
/// Far more than a term and a vote take: a longer file is damaged and is not read.
const META_BYTES_MAX: u64 = 64 * 1024;

/// Term and vote of one peer, durable.
pub struct RaftMetaStorage {
    fs: Arc<dyn FileSystem>,
    path: PathBuf,
    /// Invariant: never decreases.
    term: u64,
    /// Invariant: changes within a term only from `None`.
    voted_for: Option<PeerId>,
    first_start: bool,
    failed: Option<RaftError>,
    _lock: DirLock,
}

fn encode(term: u64, voted_for: Option<&PeerId>) -> Vec<u8> {
    let mut b = Vec::with_capacity(64);
    b.extend_from_slice(MAGIC);
    put_u32(&mut b, VERSION);
    put_u64(&mut b, term);
    PeerId::encode_opt(voted_for, &mut b);
    let crc = crc32c::crc32c(&b);
    put_u32(&mut b, crc);
    b
}

fn decode(bytes: &[u8]) -> std::result::Result<(u64, Option<PeerId>), String> {
    if bytes.len() < MAGIC.len() + 4 + 8 + 1 + 4 {
        return Err(format!("{} bytes is too short for raft_meta", bytes.len()));
    }
    let (body, crc) = bytes.split_at(bytes.len() - 4);
    if &body[..8] != MAGIC {
        return Err("bad raft_meta magic".into());
    }
    let want = u32::from_le_bytes([crc[0], crc[1], crc[2], crc[3]]);
    let got = crc32c::crc32c(body);
    if want != got {
        return Err(format!(
            "raft_meta checksum {want:#010x} != computed {got:#010x}"
        ));
    }
    let mut r = Reader::new("raft_meta", &body[8..]);
    let version = r.u32().map_err(|e| e.to_string())?;
    if version != VERSION {
        return Err(format!(
            "raft_meta format version {version} is not supported (this build reads {VERSION})"
        ));
    }
    let term = r.u64().map_err(|e| e.to_string())?;
    let voted_for = PeerId::decode_opt(&mut r).map_err(|e| e.to_string())?;
    r.finish().map_err(|e| e.to_string())?;
    Ok((term, voted_for))
}

impl RaftMetaStorage {
    /// Opens the meta in `dir` (created if missing), locking the directory: a second open
    /// fails with [`RaftError::DirectoryLocked`]. A directory without a meta file is a first
    /// start: term 1, no vote (braft's defaults), and nothing is written until the first
    /// change.
    pub fn open(fs: Arc<dyn FileSystem>, dir: &Path) -> Result<RaftMetaStorage> {
        if !fs.is_dir(dir) {
            fs.create_dir_all(dir)?;
            fs.sync_dir(&fs::parent_dir(dir)?)?;
        }
        let lock = fs.lock_dir(dir)?;
        let path = dir.join(META_FILE);
        let (term, voted_for, first_start) = if fs.exists(&path) {
            let bytes = fs::read_file(&*fs, &path, META_BYTES_MAX)?;
            let (term, vote) = decode(&bytes).map_err(|r| RaftError::corruption(&path, 0, r))?;
            (term, vote, false)
        } else {
            (1, None, true)
        };
        Ok(RaftMetaStorage {
            fs,
            path,
            term,
            voted_for,
            first_start,
            failed: None,
            _lock: lock,
        })
    }

    /// The current term.
    pub fn term(&self) -> u64 {
        self.term
    }

    /// The vote cast in the current term, if any.
    pub fn voted_for(&self) -> Option<PeerId> {
        self.voted_for
    }

    /// True if the directory held no meta when opened (a brand-new peer).
    pub fn is_first_start(&self) -> bool {
        self.first_start
    }

    /// The meta file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Durably records `term` and `voted_for`; returns once they survive a crash.
    ///
    /// Refuses with [`RaftError::Invalid`] a term below the current one, or a different vote
    /// in the same term once one was cast (both are bugs of the caller: a vote must never go
    /// backwards). After an IO error every later call answers
    /// [`RaftError::ErrorState`]; the values stay what they were.
    pub fn set_term_and_voted_for(&mut self, term: u64, voted_for: Option<PeerId>) -> Result<()> {
        if let Some(e) = &self.failed {
            return Err(RaftError::ErrorState {
                reason: format!("meta storage failed earlier: {e}"),
            });
        }
        if term < self.term {
            debug_assert!(false, "term going backwards: {} -> {term}", self.term);
            return Err(RaftError::invalid(format!(
                "term {term} is below the current term {}",
                self.term
            )));
        }
        if term == self.term && self.voted_for.is_some() && voted_for != self.voted_for {
            debug_assert!(false, "second vote in term {term}");
            return Err(RaftError::invalid(format!(
                "already voted for {:?} in term {term}",
                self.voted_for
            )));
        }
        let bytes = encode(term, voted_for.as_ref());
        if let Err(e) = fs::write_file_atomic(&*self.fs, &self.path, &bytes) {
            self.failed = Some(e.clone());
            return Err(e);
        }
        self.term = term;
        self.voted_for = voted_for;
        Ok(())
    }
}

#[cfg(test)]
mod tests;
