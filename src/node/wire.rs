//! The RaftService bodies on the wire: a common header, one core [`Message`], and for an
//! AppendEntries the entries' payloads and checksums after it (docs/PROTOCOL.md).
//!
//! Layout (little-endian): `group id | from PeerId | to PeerId | Message`, then for an
//! AppendEntries carrying `n` entries: `n x (payload length u32 | crc u32)` and the `n`
//! payloads back to back. Encoding produces a list of chunks so that payloads (slices of the
//! log's buffers) are written with `writev` and never copied; decoding slices the received
//! body, so payloads reach the log without a copy. A follower verifies every entry's CRC here,
//! before its core sees the message. Nothing here panics on any input.

use bytes::Bytes;

use crate::core::message::{AppendEntriesRequest, AppendHeader, EntryMeta, Message};
use crate::error::{RaftError, Result};
use crate::rpc::Method;
use crate::types::codec::{put_u32, Reader};
use crate::types::{Configuration, EntryType, GroupId, LogEntry, PeerId};

/// Who a RaftService message is from and for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Envelope {
    /// The group.
    pub group: GroupId,
    /// The sending peer.
    pub from: PeerId,
    /// The receiving peer.
    pub to: PeerId,
}

/// A decoded RaftService message: header, core message, and (for AppendEntries) its entries,
/// checksums verified.
#[derive(Debug)]
pub struct Inbound {
    /// Sender and receiver.
    pub envelope: Envelope,
    /// The core's message.
    pub msg: Message,
    /// The entries of an AppendEntries, aligned with its `entries` metadata; empty otherwise.
    pub entries: Vec<LogEntry>,
}

fn encode_envelope(env: &Envelope, buf: &mut Vec<u8>) {
    env.group.encode(buf);
    env.from.encode(buf);
    env.to.encode(buf);
}

/// Encodes a message without entries (votes, responses, TimeoutNow, heartbeats).
pub fn encode_message(env: &Envelope, msg: &Message) -> Vec<Bytes> {
    let mut buf = Vec::with_capacity(96);
    encode_envelope(env, &mut buf);
    msg.encode(&mut buf);
    vec![Bytes::from(buf)]
}

/// Encodes an AppendEntries whose entries are `entries` (consecutive, starting after `prev`):
/// one chunk of header, metadata and checksum table, then each payload as its own chunk.
///
/// # Panics
/// If more than `u32::MAX` entries or a payload over 4 GiB are passed; the replicator bounds
/// both far below.
pub fn encode_append(env: &Envelope, header: &AppendHeader, entries: &[LogEntry]) -> Vec<Bytes> {
    let count = u32::try_from(entries.len()).expect("invariant: replicator bounds entry count");
    let mut buf = Vec::with_capacity(96 + entries.len() * 17);
    encode_envelope(env, &mut buf);
    buf.push(3); // Message tag of AppendEntries
    AppendEntriesRequest::encode_header(header, count, &mut buf);
    for e in entries {
        // A configuration entry's payload is its encoded configuration; the metadata carries
        // it too so that the follower's core sees it without parsing payloads.
        let conf = match e.kind {
            EntryType::Configuration => {
                Configuration::decode(&mut Reader::new("configuration entry", &e.data)).ok()
            }
            _ => None,
        };
        EntryMeta::encode_parts(e.id.term, e.kind, conf.as_ref(), &mut buf);
    }
    for e in entries {
        let len = u32::try_from(e.data.len()).expect("invariant: entry payloads are < 4 GiB");
        put_u32(&mut buf, len);
        put_u32(&mut buf, e.crc);
    }
    let mut chunks = Vec::with_capacity(1 + entries.len());
    chunks.push(Bytes::from(buf));
    chunks.extend(
        entries
            .iter()
            .filter(|e| !e.data.is_empty())
            .map(|e| e.data.clone()),
    );
    chunks
}

/// Decodes a RaftService body. For an AppendEntries, payloads are slices of `body` and every
/// entry's checksum is verified; a mismatch is a [`RaftError::Decode`] (the whole message is
/// dropped, nothing of it appended).
pub fn decode(body: &Bytes) -> Result<Inbound> {
    let mut r = Reader::new("RaftService body", body);
    let envelope = Envelope {
        group: GroupId::decode(&mut r)?,
        from: PeerId::decode(&mut r)?,
        to: PeerId::decode(&mut r)?,
    };
    let msg = Message::decode(&mut r)?;
    let entries = match &msg {
        Message::AppendEntries(req) => decode_payloads(&mut r, body, req)?,
        _ => Vec::new(),
    };
    r.finish()?;
    Ok(Inbound {
        envelope,
        msg,
        entries,
    })
}

fn decode_payloads(
    r: &mut Reader<'_>,
    body: &Bytes,
    req: &AppendEntriesRequest,
) -> Result<Vec<LogEntry>> {
    let n = req.entries.len();
    if r.remaining() < n.saturating_mul(8) {
        return Err(r.error("entry table truncated"));
    }
    let mut table = Vec::with_capacity(n);
    for _ in 0..n {
        table.push((r.u32()? as usize, r.u32()?));
    }
    let mut entries = Vec::with_capacity(n);
    for (meta, (len, crc)) in req.entries.iter().zip(table) {
        let start = r.position();
        r.bytes(len)?;
        let entry = LogEntry::with_crc(meta.id, meta.kind, body.slice(start..start + len), crc);
        entry.verify()?;
        entries.push(entry);
    }
    Ok(entries)
}

/// A decode error for a message whose group or peer does not match the node it reached.
pub fn misdirected(env: &Envelope, reason: &str) -> RaftError {
    RaftError::invalid(format!(
        "message for {}:{} from {}: {reason}",
        env.group, env.to, env.from
    ))
}

/// The RaftService method a message travels as.
pub(crate) fn method_of(msg: &Message) -> Method {
    match msg {
        Message::VoteRequest(m) if m.pre_vote => Method::PreVote,
        Message::VoteResponse(m) if m.pre_vote => Method::PreVote,
        Message::VoteRequest(_) | Message::VoteResponse(_) => Method::RequestVote,
        Message::AppendEntries(_) | Message::AppendEntriesResponse(_) => Method::AppendEntries,
        Message::TimeoutNow(_) => Method::TimeoutNow,
        Message::InstallSnapshot(_) => Method::InstallSnapshot,
    }
}

#[cfg(test)]
mod tests;
