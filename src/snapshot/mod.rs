//! Snapshots (DESIGN.md section 5): the on-disk format and the local snapshot storage.
//!
//! A snapshot is a directory `snapshot_<index:020>/` holding the user's files and
//! `__raft_snapshot_meta` (the last included LogId, the configuration at that index, and the
//! size and CRC-32C of every file). It is written under `temp/` and renamed into place only
//! once every file, the meta and the directory are durable, so a crash leaves either the old
//! snapshot or the new one, never a half-written one under a snapshot name.
//!
//! This module does file work only: it runs on whatever thread calls it (the fsm pool for
//! saves, the node's init for loads) and never calls user code.

mod meta;
mod storage;

pub use meta::{SnapshotFile, SnapshotMeta, META_BYTES_MAX, META_FILE};
pub use storage::{SnapshotReader, SnapshotStorage, SnapshotWriter};
