//! Remote snapshot install (braft's FileService and snapshot copier). The leader serves the
//! files of its snapshot in chunks (`GetFile`); a follower that its core told to install
//! copies them into its snapshot storage, checks each file's size and CRC-32C against the
//! leader's meta as the bytes arrive, commits the snapshot (durable before it is used),
//! loads it into the state machine, and then the node restarts its log after it.
//!
//! All file IO runs on the node's snapshot queue on the disk pool, never on an IO, timer or
//! raft thread; a network answer only enqueues the next step there. One copy at a time (the
//! core orders at most one install); a failed copy is aborted, its files removed, and the
//! core told, which offers the snapshot again later. A copy committed while a newer local
//! snapshot appeared is reported failed and not loaded (it stays on disk until the next
//! snapshot removes older ones). A state machine that fails to load a committed copy puts
//! the node in its error state. A snapshot the leader
//! replaced during the copy is gone: the copy fails and the next offer names the new one.
//!
//! `GetFile` body: the common header `group | sender | owner` (the follower copying, the
//! leader whose snapshot it is), then `snapshot index u64 | name (u32 length + bytes; empty:
//! the meta file) | offset u64 | max bytes u32`; answer: `eof u8 | data` (docs/PROTOCOL.md).

use std::sync::{Arc, Weak};
use std::time::Duration;

use bytes::Bytes;

use super::event::NodeEvent;
use super::NodeShared;
use crate::error::{RaftError, Result};
use crate::exec_queue::{Batch, ExecQueue, ExecQueueOptions};
use crate::pool::PoolHandle;
use crate::rpc::{Caller, Method, Request, Server};
use crate::snapshot::{SnapshotMeta, SnapshotStorage, SnapshotWriter, META_BYTES_MAX};
use crate::types::codec::{put_bytes32, put_u32, put_u64, put_u8, Reader};
use crate::types::{Configuration, GroupId, LogId, PeerId};

/// Bytes asked for per `GetFile` (well below the frame limit).
pub(crate) const CHUNK_BYTES: usize = 256 * 1024;
/// How long one `GetFile` may take before the copy fails.
const CHUNK_TIMEOUT: Duration = Duration::from_secs(10);

/// One job of the node's snapshot queue.
pub(crate) enum SnapshotIo {
    /// Leader: answer a `GetFile` request.
    Serve(Request),
    /// Follower: copy the snapshot ending at `last` from the leader `from`.
    Start {
        from: PeerId,
        last: LogId,
        conf: Configuration,
    },
    /// Follower: an answer to a `GetFile` of copy number `copy`.
    Chunk { copy: u64, result: Result<Bytes> },
}

/// A copy in progress.
struct Copy {
    number: u64,
    from: PeerId,
    last: LogId,
    conf: Configuration,
    writer: Option<SnapshotWriter>,
    /// The leader's meta file, as it arrives; then decoded.
    meta_bytes: Vec<u8>,
    meta: Option<SnapshotMeta>,
    /// The file being fetched (an index into `meta.files`), how far, and its CRC so far.
    file: usize,
    offset: u64,
    crc: u32,
}

impl Copy {
    /// Takes one `GetFile` answer: the meta file first (bounded as it arrives, then checked
    /// to name the snapshot asked for), then each file in turn, never past the size its
    /// meta gives, its size and CRC checked at its end. Nothing from the leader is trusted.
    fn take_chunk(&mut self, body: &[u8]) -> Result<()> {
        let (&flag, data) = body
            .split_first()
            .ok_or_else(|| RaftError::decode("GetFile answer", "empty body"))?;
        let eof = flag != 0;
        if data.is_empty() && !eof {
            return Err(RaftError::decode(
                "GetFile answer",
                "no data before the end",
            ));
        }
        if data.len() > CHUNK_BYTES {
            return Err(RaftError::decode(
                "GetFile answer",
                format!(
                    "{} bytes where at most {CHUNK_BYTES} were asked for",
                    data.len()
                ),
            ));
        }
        self.offset += data.len() as u64;
        if self.meta.is_none() {
            self.take_meta_bytes(data, eof)
        } else {
            self.take_file_bytes(data, eof)
        }
    }

    /// The meta file's bytes: bounded as they arrive (the leader's answers are not trusted
    /// to end), decoded at eof.
    fn take_meta_bytes(&mut self, data: &[u8], eof: bool) -> Result<()> {
        if self.offset > META_BYTES_MAX as u64 {
            return Err(RaftError::invalid(format!(
                "the leader's snapshot meta runs past META_BYTES_MAX = {META_BYTES_MAX}"
            )));
        }
        self.meta_bytes.extend_from_slice(data);
        if eof {
            let label = std::path::Path::new("leader snapshot meta");
            let meta = SnapshotMeta::decode(&self.meta_bytes, label)?;
            if meta.last_included != self.last {
                return Err(RaftError::invalid(format!(
                    "the leader's snapshot is {}, not {}",
                    meta.last_included, self.last
                )));
            }
            self.meta = Some(meta);
            self.offset = 0;
        }
        Ok(())
    }

    /// A user file's bytes (`offset` already counts them): never past the size the meta
    /// declares, checked before the write, so a faulty leader cannot fill this peer's disk.
    fn take_file_bytes(&mut self, data: &[u8], eof: bool) -> Result<()> {
        let file = self
            .meta
            .as_ref()
            .and_then(|m| m.files.get(self.file))
            .ok_or_else(|| RaftError::invalid("a GetFile answer after the last file"))?;
        if self.offset > file.size {
            return Err(RaftError::corruption(
                std::path::Path::new(&file.name),
                file.size,
                format!(
                    "the leader sent {} bytes of a file its meta says has {}",
                    self.offset, file.size
                ),
            ));
        }
        let writer = self.writer.as_mut().ok_or(RaftError::Stopped)?;
        writer.write_at(&file.name, data, self.offset - data.len() as u64)?;
        self.crc = crc32c::crc32c_append(self.crc, data);
        if eof {
            if self.offset != file.size || self.crc != file.crc {
                return Err(RaftError::Corruption {
                    file: file.name.clone().into(),
                    offset: 0,
                    reason: format!(
                        "copied {} bytes crc {:#010x}, the leader's meta says {} bytes crc \
                         {:#010x}",
                        self.offset, self.crc, file.size, file.crc
                    ),
                });
            }
            self.file += 1;
            (self.offset, self.crc) = (0, 0);
        }
        Ok(())
    }
}

/// What the snapshot queue's consumer owns.
pub(crate) struct SnapshotIoState {
    pub shared: Weak<NodeShared>,
    pub storage: Arc<SnapshotStorage>,
    pub server: Arc<Server>,
    pub caller: Caller,
    pub group: GroupId,
    pub me: PeerId,
    pub logger: slog::Logger,
    copy: Option<Copy>,
    copies: u64,
}

/// Where a `GetFile` goes and what it asks: group, the copier, the snapshot's owner.
struct FileRequest<'a> {
    group: &'a GroupId,
    sender: PeerId,
    owner: PeerId,
}

/// Encodes a `GetFile` request.
fn get_file_body(to: &FileRequest<'_>, index: u64, name: &str, offset: u64) -> Bytes {
    let mut buf = Vec::with_capacity(80 + name.len());
    to.group.encode(&mut buf);
    to.sender.encode(&mut buf);
    to.owner.encode(&mut buf);
    put_u64(&mut buf, index);
    put_bytes32(&mut buf, name.as_bytes());
    put_u64(&mut buf, offset);
    put_u32(&mut buf, CHUNK_BYTES as u32);
    Bytes::from(buf)
}

/// Serves one `GetFile` from `storage`: the answer's body, or why not.
fn serve(storage: &SnapshotStorage, body: &[u8]) -> Result<Bytes> {
    let mut r = Reader::new("GetFile", body);
    GroupId::decode_str(&mut r)?;
    PeerId::decode(&mut r)?; // sender
    PeerId::decode(&mut r)?; // owner (the router found the node by it)
    let index = r.u64()?;
    let name = std::str::from_utf8(r.bytes32()?)
        .map_err(|_| r.error("file name is not utf-8"))?
        .to_string();
    let offset = r.u64()?;
    let max = (r.u32()? as usize).min(CHUNK_BYTES);
    r.finish()?;
    let name = (!name.is_empty()).then_some(name.as_str());
    let (data, eof) = storage.read_chunk(index, name, offset, max)?;
    let mut out = Vec::with_capacity(1 + data.len());
    put_u8(&mut out, u8::from(eof));
    out.extend_from_slice(&data);
    Ok(Bytes::from(out))
}

/// Starts a node's snapshot queue on `pool` (the disk pool).
pub(crate) fn start_queue(
    pool: &PoolHandle,
    mut state: SnapshotIoState,
    logger: &slog::Logger,
) -> ExecQueue<SnapshotIo> {
    let opts = ExecQueueOptions {
        logger: logger.clone(),
        ..ExecQueueOptions::new("snapshot_io")
    };
    ExecQueue::start(pool, opts, move |batch: &mut Batch<'_, SnapshotIo>| {
        if batch.is_stopped() {
            return state.stop();
        }
        for job in batch {
            state.handle(job);
        }
    })
}

impl SnapshotIoState {
    /// A consumer state for the snapshot queue of the node `shared`.
    pub(crate) fn new(
        shared: Weak<NodeShared>,
        storage: Arc<SnapshotStorage>,
        server: Arc<Server>,
        caller: Caller,
        logger: slog::Logger,
    ) -> SnapshotIoState {
        let (group, me) = match shared.upgrade() {
            Some(n) => (n.group.clone(), n.peer),
            None => (
                GroupId::new("-").expect("invariant: a valid group id"),
                PeerId::new(std::net::SocketAddr::from(([0, 0, 0, 0], 0)), 0),
            ),
        };
        SnapshotIoState {
            group,
            me,
            shared,
            storage,
            server,
            caller,
            logger,
            copy: None,
            copies: 0,
        }
    }

    /// Runs one job.
    pub(crate) fn handle(&mut self, job: SnapshotIo) {
        match job {
            SnapshotIo::Serve(req) => {
                let answer = serve(&self.storage, &req.body).map(|b| vec![b]);
                req.responder.respond(answer);
            }
            SnapshotIo::Start { from, last, conf } => self.start(from, last, conf),
            SnapshotIo::Chunk { copy, result } => {
                if self.copy.as_ref().is_some_and(|c| c.number == copy) {
                    if let Err(e) = result.and_then(|body| self.on_chunk(&body)) {
                        self.fail(e);
                    }
                }
            }
        }
    }

    /// The queue stops (the node is being joined, after its state machine): a copy in
    /// progress is dropped (its directory is removed at the next open of the storage), and
    /// the storage refuses later commits, such as a save a state machine finishes from its
    /// own thread after the join.
    pub(crate) fn stop(&mut self) {
        if let Some(copy) = self.copy.take() {
            if let Some(w) = copy.writer {
                let _ = w.abort();
            }
        }
        self.storage.close();
    }

    fn start(&mut self, from: PeerId, last: LogId, conf: Configuration) {
        if let Some(old) = self.copy.take() {
            let last = old.last;
            self.abort(old);
            self.report(NodeEvent::SnapshotInstalled(last, false));
        }
        let writer = match self.storage.create_install_writer() {
            Ok(w) => w,
            Err(e) => {
                slog::warn!(self.logger, "snapshot install cannot start"; "error" => %e);
                return self.report(NodeEvent::SnapshotInstalled(last, false));
            }
        };
        self.copies += 1;
        slog::info!(self.logger, "copying a snapshot"; "from" => %from, "snapshot" => %last);
        self.copy = Some(Copy {
            number: self.copies,
            from,
            last,
            conf,
            writer: Some(writer),
            meta_bytes: Vec::new(),
            meta: None,
            file: 0,
            offset: 0,
            crc: 0,
        });
        self.request_next();
    }

    /// Asks the leader for the next chunk, or finishes once every file arrived.
    fn request_next(&mut self) {
        let Some(copy) = &self.copy else { return };
        let name = match &copy.meta {
            None => "",
            Some(meta) => match meta.files.get(copy.file) {
                Some(f) => f.name.as_str(),
                None => return self.finish(),
            },
        };
        let to = FileRequest {
            group: &self.group,
            sender: self.me,
            owner: copy.from,
        };
        let body = get_file_body(&to, copy.last.index, name, copy.offset);
        let (number, weak) = (copy.number, self.shared.clone());
        self.server.call(
            &self.caller,
            copy.from.addr(),
            Method::GetFile,
            vec![body],
            CHUNK_TIMEOUT,
            move |result| {
                let Some(parts) = weak.upgrade().and_then(|n| n.parts()) else {
                    return;
                };
                let _ = parts.snapshot_io.submit(SnapshotIo::Chunk {
                    copy: number,
                    result,
                });
            },
        );
    }

    /// Takes one chunk of the copy in progress and asks for the next.
    fn on_chunk(&mut self, body: &[u8]) -> Result<()> {
        let copy = self.copy.as_mut().ok_or(RaftError::Stopped)?;
        copy.take_chunk(body)?;
        self.request_next();
        Ok(())
    }

    /// Every file arrived: commit the snapshot durably, then load it into the state machine.
    fn finish(&mut self) {
        let Some(mut copy) = self.copy.take() else {
            return;
        };
        let Some(writer) = copy.writer.take() else {
            return;
        };
        let (last, conf) = (copy.last, copy.conf.clone());
        let reader = self
            .storage
            .commit(writer, last, conf.clone())
            .and_then(|_| self.storage.newest())
            .and_then(|r| r.ok_or(RaftError::Stopped))
            .and_then(|r| {
                // A newer local snapshot may have been committed while this one copied;
                // loading it would answer the leader for a snapshot it did not send.
                if r.meta().last_included == last {
                    Ok(r)
                } else {
                    Err(RaftError::invalid(format!(
                        "snapshot {last} superseded by local snapshot {}",
                        r.meta().last_included
                    )))
                }
            });
        let (reader, parts) = match (reader, self.shared.upgrade().and_then(|n| n.parts())) {
            (Ok(r), Some(p)) => (r, p),
            (Err(e), _) => return self.fail_copy(last, e),
            (_, None) => return,
        };
        let weak = self.shared.clone();
        parts.fsm.load_snapshot(
            reader,
            Box::new(move |result| {
                if let Some(node) = weak.upgrade() {
                    node.submit(NodeEvent::InstallLoaded(last, conf, result));
                }
            }),
        );
    }

    fn fail(&mut self, e: RaftError) {
        if let Some(copy) = self.copy.take() {
            let last = copy.last;
            self.abort(copy);
            self.fail_copy(last, e);
        }
    }

    fn fail_copy(&mut self, last: LogId, e: RaftError) {
        slog::warn!(self.logger, "snapshot install failed"; "snapshot" => %last, "error" => %e);
        if e.is_sync_failure() {
            // Fatal, as every failed sync: the node stops rather than retry the install.
            return self.report(NodeEvent::Fatal(e));
        }
        self.report(NodeEvent::SnapshotInstalled(last, false));
    }

    fn abort(&self, mut copy: Copy) {
        if let Some(w) = copy.writer.take() {
            if let Err(e) = w.abort() {
                slog::warn!(self.logger, "could not remove an aborted snapshot copy";
                    "error" => %e);
            }
        }
    }

    fn report(&self, ev: NodeEvent) {
        if let Some(node) = self.shared.upgrade() {
            node.submit(ev);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fs::RealFs;
    use crate::logging::discard_logger;

    fn storage_with_snapshot(dir: &std::path::Path, state: &[u8]) -> SnapshotStorage {
        let s = SnapshotStorage::open(RealFs::shared(), dir, discard_logger()).unwrap();
        let mut w = s.create_writer().unwrap();
        w.write_file("state", state).unwrap();
        let conf = Configuration::parse_voters("127.0.0.1:1:0").unwrap();
        s.commit(w, LogId::new(7, 2), conf).unwrap();
        s
    }

    fn ask(s: &SnapshotStorage, index: u64, name: &str, offset: u64) -> Result<(bool, Vec<u8>)> {
        let to = FileRequest {
            group: &GroupId::new("g").unwrap(),
            sender: "127.0.0.1:2:0".parse().unwrap(),
            owner: "127.0.0.1:1:0".parse().unwrap(),
        };
        let body = get_file_body(&to, index, name, offset);
        let answer = serve(s, &body)?;
        Ok((answer[0] != 0, answer[1..].to_vec()))
    }

    #[test]
    fn files_are_served_in_chunks_with_the_end_marked() {
        let dir = tempfile::tempdir().unwrap();
        let state: Vec<u8> = (0..CHUNK_BYTES + 1000).map(|i| i as u8).collect();
        let s = storage_with_snapshot(dir.path(), &state);
        let (eof, first) = ask(&s, 7, "state", 0).unwrap();
        assert!(!eof);
        assert_eq!(first.len(), CHUNK_BYTES);
        let (eof, rest) = ask(&s, 7, "state", CHUNK_BYTES as u64).unwrap();
        assert!(eof);
        assert_eq!([first, rest].concat(), state);
        let (eof, meta) = ask(&s, 7, "", 0).unwrap();
        assert!(eof, "the meta is small");
        let meta = SnapshotMeta::decode(&meta, std::path::Path::new("meta")).unwrap();
        assert_eq!(meta.last_included, LogId::new(7, 2));
        assert_eq!(meta.files[0].size, state.len() as u64);
    }

    /// A follower's copy of the snapshot ending at 7.2, as `start` makes it.
    fn copy_into(s: &SnapshotStorage) -> Copy {
        Copy {
            number: 1,
            from: "127.0.0.1:1:0".parse().unwrap(),
            last: LogId::new(7, 2),
            conf: Configuration::parse_voters("127.0.0.1:1:0").unwrap(),
            writer: Some(s.create_install_writer().unwrap()),
            meta_bytes: Vec::new(),
            meta: None,
            file: 0,
            offset: 0,
            crc: 0,
        }
    }

    fn answer(eof: bool, data: &[u8]) -> Vec<u8> {
        [&[u8::from(eof)][..], data].concat()
    }

    #[test]
    fn a_leader_that_sends_more_of_a_file_than_its_meta_declares_is_refused_before_the_write() {
        let leader_dir = tempfile::tempdir().unwrap();
        let leader = storage_with_snapshot(leader_dir.path(), b"ten bytes!");
        let dir = tempfile::tempdir().unwrap();
        let s = SnapshotStorage::open(RealFs::shared(), dir.path(), discard_logger()).unwrap();
        let mut copy = copy_into(&s);
        let (_, meta) = ask(&leader, 7, "", 0).unwrap();
        copy.take_chunk(&answer(true, &meta)).unwrap();
        copy.take_chunk(&answer(false, b"ten by")).unwrap();
        let e = copy
            .take_chunk(&answer(false, b"tes! and more"))
            .unwrap_err();
        assert!(matches!(e, RaftError::Corruption { .. }), "{e}");
        assert!(
            e.to_string()
                .contains("19 bytes of a file its meta says has 10"),
            "{e}"
        );
        let written = std::fs::metadata(copy.writer.as_ref().unwrap().path().join("state"));
        assert_eq!(
            written.unwrap().len(),
            6,
            "only the bytes within the declared size"
        );
    }

    #[test]
    fn a_snapshot_meta_that_never_ends_is_refused_at_its_bound() {
        let dir = tempfile::tempdir().unwrap();
        let s = SnapshotStorage::open(RealFs::shared(), dir.path(), discard_logger()).unwrap();
        let mut copy = copy_into(&s);
        let chunk = answer(false, &vec![0u8; CHUNK_BYTES]);
        let mut taken = 0;
        let e = loop {
            match copy.take_chunk(&chunk) {
                Ok(()) => taken += 1,
                Err(e) => break e,
            }
            assert!(
                taken <= META_BYTES_MAX / CHUNK_BYTES,
                "no bound on the meta"
            );
        };
        assert_eq!(taken, META_BYTES_MAX / CHUNK_BYTES);
        assert!(copy.meta_bytes.len() <= META_BYTES_MAX);
        assert!(e.to_string().contains("META_BYTES_MAX"), "{e}");
        let e = copy_into(&s)
            .take_chunk(&answer(false, &vec![0u8; CHUNK_BYTES + 1]))
            .unwrap_err();
        assert!(
            matches!(e, RaftError::Decode { .. }),
            "an answer over what was asked: {e}"
        );
    }

    #[test]
    fn a_missing_snapshot_a_bad_name_and_garbage_get_clear_errors() {
        let dir = tempfile::tempdir().unwrap();
        let s = storage_with_snapshot(dir.path(), b"x");
        let gone = ask(&s, 6, "state", 0).unwrap_err();
        assert!(
            gone.to_string().contains("replaced by a newer one"),
            "{gone}"
        );
        let escape = ask(&s, 7, "../snapshot_00000000000000000007", 0).unwrap_err();
        assert!(matches!(escape, RaftError::Invalid { .. }), "{escape}");
        let garbage = serve(&s, b"\x01\x02").unwrap_err();
        assert!(matches!(garbage, RaftError::Decode { .. }), "{garbage}");
    }
}
