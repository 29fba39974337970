//! [`SnapshotMeta`]: the `__raft_snapshot_meta` file of a snapshot and its encoding.
//!
//! Layout (little-endian): `magic "TRSM" | version u8 | last_included LogId (16) |
//! Configuration | file count u32 | per file: name (u32 length + bytes) | size u64 | crc u32 |
//! crc32c of everything before it, u32`. An unknown version is refused, never guessed.

use std::path::Path;

use crate::error::{RaftError, Result};
use crate::types::codec::{put_bytes32, put_u32, put_u64, put_u8, Reader};
use crate::types::{Configuration, LogId};

/// Name of the meta file inside a snapshot directory.
pub const META_FILE: &str = "__raft_snapshot_meta";
const MAGIC: &[u8; 4] = b"TRSM";
const VERSION: u8 = 1;
/// The longest file name accepted in a snapshot.
const NAME_LEN_MAX: usize = 255;
/// The largest meta file written, read or copied from a leader (about 240,000 files of
/// 255-byte names): a bound on what a damaged file or a faulty leader can make a peer
/// allocate.
pub const META_BYTES_MAX: usize = 64 << 20;

/// One user file of a snapshot, as recorded in its meta.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SnapshotFile {
    /// File name, relative to the snapshot directory (no `/`).
    pub name: String,
    /// Size in bytes.
    pub size: u64,
    /// CRC-32C of the contents.
    pub crc: u32,
}

/// What a snapshot contains: the state up to and including `last_included`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SnapshotMeta {
    /// The last log entry whose effect the snapshot includes.
    pub last_included: LogId,
    /// The configuration in force at `last_included` (possibly joint).
    pub conf: Configuration,
    /// The user's files, with sizes and checksums.
    pub files: Vec<SnapshotFile>,
}

impl SnapshotMeta {
    /// The encoded meta file.
    pub fn encode(&self) -> Vec<u8> {
        let mut buf = Vec::with_capacity(64 + 32 * self.files.len());
        buf.extend_from_slice(MAGIC);
        put_u8(&mut buf, VERSION);
        self.last_included.encode(&mut buf);
        self.conf.encode(&mut buf);
        // File counts are bounded by what a directory can hold, far below u32::MAX.
        put_u32(&mut buf, self.files.len() as u32);
        for f in &self.files {
            put_bytes32(&mut buf, f.name.as_bytes());
            put_u64(&mut buf, f.size);
            put_u32(&mut buf, f.crc);
        }
        let crc = crc32c::crc32c(&buf);
        put_u32(&mut buf, crc);
        buf
    }

    /// Decodes a meta file read from `path`; any damage is [`RaftError::Corruption`].
    pub fn decode(bytes: &[u8], path: &Path) -> Result<SnapshotMeta> {
        let corrupt =
            |offset: usize, reason: String| RaftError::corruption(path, offset as u64, reason);
        if bytes.len() < MAGIC.len() + 1 + 4 {
            return Err(corrupt(
                0,
                format!("meta file too short ({} bytes)", bytes.len()),
            ));
        }
        let (body, tail) = bytes.split_at(bytes.len() - 4);
        let stored = u32::from_le_bytes([tail[0], tail[1], tail[2], tail[3]]);
        if crc32c::crc32c(body) != stored {
            return Err(corrupt(body.len(), "meta checksum mismatch".into()));
        }
        if &body[..4] != MAGIC {
            return Err(corrupt(0, "bad magic".into()));
        }
        if body[4] != VERSION {
            return Err(corrupt(4, format!("unknown meta version {}", body[4])));
        }
        let mut r = Reader::new("snapshot meta", &body[5..]);
        let at = |r: &Reader<'_>| 5 + r.position();
        let parsed = (|| {
            let last_included = LogId::decode(&mut r)?;
            let conf = Configuration::decode(&mut r)?;
            let n = r.count(4 + 1 + 8 + 4)?;
            let mut files = Vec::with_capacity(n);
            for _ in 0..n {
                let name = std::str::from_utf8(r.bytes32()?)
                    .map_err(|_| r.error("file name is not utf-8"))?
                    .to_string();
                check_file_name(&name).map_err(|e| r.error(e.to_string()))?;
                files.push(SnapshotFile {
                    name,
                    size: r.u64()?,
                    crc: r.u32()?,
                });
            }
            r.finish()?;
            Ok(SnapshotMeta {
                last_included,
                conf,
                files,
            })
        })();
        parsed.map_err(|e: RaftError| corrupt(at(&r), e.to_string()))
    }
}

/// Checks that `name` can be a file of a snapshot: a plain name, not the meta file.
pub(crate) fn check_file_name(name: &str) -> Result<()> {
    let bad = name.is_empty()
        || name.len() > NAME_LEN_MAX
        || name.contains('/')
        || name.contains('\0')
        || name == "."
        || name == ".."
        || name == META_FILE;
    if bad {
        return Err(RaftError::invalid(format!(
            "snapshot file name {name:?} must be a plain name (1..={NAME_LEN_MAX} bytes, no '/'), \
             not {META_FILE}"
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn meta() -> SnapshotMeta {
        SnapshotMeta {
            last_included: LogId::new(120, 4),
            conf: Configuration::parse_voters("127.0.0.1:1:0,127.0.0.1:2:0").unwrap(),
            files: vec![
                SnapshotFile {
                    name: "data".into(),
                    size: 10,
                    crc: 7,
                },
                SnapshotFile {
                    name: "index".into(),
                    size: 0,
                    crc: 0,
                },
            ],
        }
    }

    #[test]
    fn meta_round_trips() {
        let m = meta();
        assert_eq!(
            SnapshotMeta::decode(&m.encode(), Path::new("m")).unwrap(),
            m
        );
    }

    #[test]
    fn every_flipped_bit_is_corruption_naming_the_file() {
        let bytes = meta().encode();
        for i in 0..bytes.len() * 8 {
            let mut b = bytes.clone();
            b[i / 8] ^= 1 << (i % 8);
            let path = Path::new("/s/__raft_snapshot_meta");
            let err = SnapshotMeta::decode(&b, path).unwrap_err();
            assert!(
                matches!(err, RaftError::Corruption { ref file, .. } if file == path),
                "bit {i}: {err}"
            );
        }
    }

    #[test]
    fn bad_file_names_are_refused() {
        for name in ["", "a/b", "..", META_FILE] {
            assert!(check_file_name(name).is_err(), "{name:?}");
        }
        check_file_name("state.bin").unwrap();
    }

    proptest! {
        #[test]
        fn random_and_truncated_bytes_never_panic(
            bytes in proptest::collection::vec(any::<u8>(), 0..200),
            cut in any::<usize>()
        ) {
            let _ = SnapshotMeta::decode(&bytes, Path::new("m"));
            let good = meta().encode();
            let cut = cut % good.len();
            prop_assert!(SnapshotMeta::decode(&good[..cut], Path::new("m")).is_err());
        }
    }
}
