//! The messages peers exchange (RaftService bodies): plain structs with one binary encoding.
//!
//! Entry payloads are *not* part of these structs: an [`AppendEntriesRequest`] carries each
//! entry's metadata (term, kind, and the configuration of a configuration entry) and the node
//! appends the payloads after it on the wire. Every decoder checks lengths before it allocates
//! and rejects structurally impossible messages (entry terms going backwards, an entry term
//! above the leader's) with a [`RaftError::Decode`]; nothing here panics on any input.
//!
//! Encodings (little-endian; `LogId` = `index u64 | term u64`):
//! - VoteRequest: `term u64 | last_log_id | flags u8` (bit 0 pre-vote, bit 1 transfer)
//! - VoteResponse: `term u64 | flags u8` (bit 0 granted, bit 1 pre-vote)
//! - AppendEntriesRequest: `term u64 | prev | commit u64 | sent_ms u64 | round u64 |
//!   count u32 | count x (term u64 | kind u8 | configuration if kind = 3)`; entry `i` has
//!   index `prev.index + 1 + i`
//! - AppendEntriesResponse: `term u64 | flags u8` (bit 0 success) `| index u64 | hint |
//!   sent_ms u64 | round u64`
//! - TimeoutNow: `term u64`
//! - InstallSnapshotRequest: `term u64 | last LogId | configuration | sent_ms u64 | round u64`
//! - [`Message`]: `tag u8` (1-6 in the order above) then the body.

use crate::error::{RaftError, Result};
use crate::types::codec::{put_u32, put_u64, put_u8, Reader};
use crate::types::{Configuration, EntryType, LogId, LOG_INDEX_MAX};

/// A request for a vote (or, with `pre_vote`, for the opinion whether one would be granted).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct VoteRequest {
    /// The candidate's term (for a pre-vote: the term it would campaign in).
    pub term: u64,
    /// The candidate's last log entry (the "at least as up-to-date" rule).
    pub last_log_id: LogId,
    /// A pre-vote: nobody changes term or vote because of it.
    pub pre_vote: bool,
    /// Sent because the leader asked (TimeoutNow): voters ignore their follower lease.
    pub transfer: bool,
}

/// The answer to a [`VoteRequest`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct VoteResponse {
    /// A granted pre-vote echoes the request's term; otherwise the voter's current term.
    pub term: u64,
    /// The vote was granted.
    pub granted: bool,
    /// Answers a pre-vote.
    pub pre_vote: bool,
}

/// One entry's metadata in an AppendEntries; its payload travels beside it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EntryMeta {
    /// Index and term.
    pub id: LogId,
    /// What the entry carries.
    pub kind: EntryType,
    /// The configuration of a [`EntryType::Configuration`] entry; `None` for other kinds.
    pub conf: Option<Box<Configuration>>,
}

/// The fields of an AppendEntries before its entries (what the node encodes from an
/// [`AppendSend`](crate::core::AppendSend)).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AppendHeader {
    /// The leader's term.
    pub term: u64,
    /// The entry before the entries.
    pub prev: LogId,
    /// The leader's commit index.
    pub commit: u64,
    /// The leader's clock at the send.
    pub sent_ms: u64,
    /// The leader's read round at the send.
    pub round: u64,
}

/// AppendEntries (a heartbeat when `entries` is empty).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AppendEntriesRequest {
    /// The leader's term.
    pub term: u64,
    /// The entry before `entries`; the follower must hold exactly it.
    pub prev: LogId,
    /// The leader's commit index.
    pub commit: u64,
    /// The leader's clock when it sent this; echoed in the response, never interpreted.
    pub sent_ms: u64,
    /// The leader's read round when it sent this; echoed in the response (ReadIndex).
    pub round: u64,
    /// Entries `prev.index + 1 ..`, in order.
    pub entries: Vec<EntryMeta>,
}

/// The answer to an [`AppendEntriesRequest`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AppendEntriesResponse {
    /// The follower's term.
    pub term: u64,
    /// The follower holds the leader's log up to `index`, durably.
    pub success: bool,
    /// Success: the last index durably matching the leader. Rejection: the rejected
    /// request's `prev.index`.
    pub index: u64,
    /// Rejection: the follower's last entry at or below `prev.index` whose term is at most
    /// `prev.term`, so the leader can skip a whole conflicting term at once.
    pub hint: LogId,
    /// The `sent_ms` of the newest request this response covers.
    pub sent_ms: u64,
    /// The highest `round` of the requests this response covers.
    pub round: u64,
}

/// The leader offers its snapshot to a follower whose next entry it no longer holds. The
/// snapshot's data travels beside it (the node's file service, the simulator's payload); the
/// follower answers with an [`AppendEntriesResponse`] once it has installed it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InstallSnapshotRequest {
    /// The leader's term.
    pub term: u64,
    /// The last entry the snapshot includes.
    pub last: LogId,
    /// The configuration in force at `last`.
    pub conf: Configuration,
    /// As in [`AppendEntriesRequest::sent_ms`].
    pub sent_ms: u64,
    /// As in [`AppendEntriesRequest::round`].
    pub round: u64,
}

/// The leader asks this peer to campaign at once (leader transfer).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TimeoutNow {
    /// The leader's term.
    pub term: u64,
}

/// Any message of the core.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Message {
    /// See [`VoteRequest`].
    VoteRequest(VoteRequest),
    /// See [`VoteResponse`].
    VoteResponse(VoteResponse),
    /// See [`AppendEntriesRequest`].
    AppendEntries(AppendEntriesRequest),
    /// See [`AppendEntriesResponse`].
    AppendEntriesResponse(AppendEntriesResponse),
    /// See [`TimeoutNow`].
    TimeoutNow(TimeoutNow),
    /// See [`InstallSnapshotRequest`].
    InstallSnapshot(InstallSnapshotRequest),
}

impl Message {
    /// The sender's term carried by the message.
    pub fn term(&self) -> u64 {
        match self {
            Message::VoteRequest(m) => m.term,
            Message::VoteResponse(m) => m.term,
            Message::AppendEntries(m) => m.term,
            Message::AppendEntriesResponse(m) => m.term,
            Message::TimeoutNow(m) => m.term,
            Message::InstallSnapshot(m) => m.term,
        }
    }

    /// Appends `tag | body`.
    pub fn encode(&self, buf: &mut Vec<u8>) {
        match self {
            Message::VoteRequest(m) => {
                put_u8(buf, 1);
                m.encode(buf);
            }
            Message::VoteResponse(m) => {
                put_u8(buf, 2);
                m.encode(buf);
            }
            Message::AppendEntries(m) => {
                put_u8(buf, 3);
                m.encode(buf);
            }
            Message::AppendEntriesResponse(m) => {
                put_u8(buf, 4);
                m.encode(buf);
            }
            Message::TimeoutNow(m) => {
                put_u8(buf, 5);
                put_u64(buf, m.term);
            }
            Message::InstallSnapshot(m) => {
                put_u8(buf, 6);
                m.encode(buf);
            }
        }
    }

    /// Reads `tag | body`.
    pub fn decode(r: &mut Reader<'_>) -> Result<Message> {
        Ok(match r.u8()? {
            1 => Message::VoteRequest(VoteRequest::decode(r)?),
            2 => Message::VoteResponse(VoteResponse::decode(r)?),
            3 => Message::AppendEntries(AppendEntriesRequest::decode(r)?),
            4 => Message::AppendEntriesResponse(AppendEntriesResponse::decode(r)?),
            5 => Message::TimeoutNow(TimeoutNow { term: r.u64()? }),
            6 => Message::InstallSnapshot(InstallSnapshotRequest::decode(r)?),
            other => return Err(r.error(format!("unknown message tag {other}"))),
        })
    }

    /// Decodes a whole buffer holding exactly one message.
    pub fn decode_exact(bytes: &[u8]) -> Result<Message> {
        let mut r = Reader::new("Message", bytes);
        let m = Message::decode(&mut r)?;
        r.finish()?;
        Ok(m)
    }
}

/// Reads a flags byte, refusing bits outside `known`.
fn flags(r: &mut Reader<'_>, known: u8) -> Result<u8> {
    let f = r.u8()?;
    if f & !known != 0 {
        return Err(r.error(format!("unknown flag bits {:#04x}", f & !known)));
    }
    Ok(f)
}

impl VoteRequest {
    /// Appends the body.
    pub fn encode(&self, buf: &mut Vec<u8>) {
        put_u64(buf, self.term);
        self.last_log_id.encode(buf);
        put_u8(
            buf,
            u8::from(self.pre_vote) | (u8::from(self.transfer) << 1),
        );
    }

    /// Reads the body.
    pub fn decode(r: &mut Reader<'_>) -> Result<VoteRequest> {
        let term = r.u64()?;
        let last_log_id = LogId::decode(r)?;
        let f = flags(r, 0b11)?;
        if last_log_id.term > term {
            return Err(r.error("last log term above the candidate's term"));
        }
        Ok(VoteRequest {
            term,
            last_log_id,
            pre_vote: f & 1 != 0,
            transfer: f & 2 != 0,
        })
    }
}

impl VoteResponse {
    /// Appends the body.
    pub fn encode(&self, buf: &mut Vec<u8>) {
        put_u64(buf, self.term);
        put_u8(buf, u8::from(self.granted) | (u8::from(self.pre_vote) << 1));
    }

    /// Reads the body.
    pub fn decode(r: &mut Reader<'_>) -> Result<VoteResponse> {
        let term = r.u64()?;
        let f = flags(r, 0b11)?;
        Ok(VoteResponse {
            term,
            granted: f & 1 != 0,
            pre_vote: f & 2 != 0,
        })
    }
}

/// The smallest encoded entry metadata: `term u64 | kind u8`.
const ENTRY_META_LEN_MIN: usize = 9;

impl EntryMeta {
    /// Appends one entry's metadata (the node encodes straight from its log entries).
    pub fn encode_parts(
        term: u64,
        kind: EntryType,
        conf: Option<&Configuration>,
        buf: &mut Vec<u8>,
    ) {
        put_u64(buf, term);
        put_u8(buf, kind as u8);
        if let Some(c) = conf {
            c.encode(buf);
        }
    }
}

impl AppendEntriesRequest {
    /// Appends everything before the entries (the node then appends `count` entry metadata
    /// with [`EntryMeta::encode_parts`]).
    pub fn encode_header(header: &AppendHeader, count: u32, buf: &mut Vec<u8>) {
        put_u64(buf, header.term);
        header.prev.encode(buf);
        put_u64(buf, header.commit);
        put_u64(buf, header.sent_ms);
        put_u64(buf, header.round);
        put_u32(buf, count);
    }

    /// Everything but the entries.
    pub fn header(&self) -> AppendHeader {
        AppendHeader {
            term: self.term,
            prev: self.prev,
            commit: self.commit,
            sent_ms: self.sent_ms,
            round: self.round,
        }
    }

    /// Appends the body.
    ///
    /// # Panics
    /// If there are more than `u32::MAX` entries; the core sends at most
    /// `max_entries_per_append`.
    pub fn encode(&self, buf: &mut Vec<u8>) {
        let count = u32::try_from(self.entries.len())
            .expect("invariant: an AppendEntries holds fewer than 2^32 entries");
        Self::encode_header(&self.header(), count, buf);
        for e in &self.entries {
            EntryMeta::encode_parts(e.id.term, e.kind, e.conf.as_deref(), buf);
        }
    }

    /// Reads the body and checks it with [`AppendEntriesRequest::validate`].
    pub fn decode(r: &mut Reader<'_>) -> Result<AppendEntriesRequest> {
        let term = r.u64()?;
        let prev = LogId::decode(r)?;
        let commit = r.u64()?;
        let sent_ms = r.u64()?;
        let round = r.u64()?;
        let count = r.count(ENTRY_META_LEN_MIN)?;
        if prev.index.checked_add(count as u64).is_none() {
            return Err(r.error("entry indexes overflow"));
        }
        let mut entries = Vec::with_capacity(count);
        for i in 0..count as u64 {
            let entry_term = r.u64()?;
            let kind = EntryType::from_u8(r.u8()?).map_err(|e| r.error(e.to_string()))?;
            let conf = match kind {
                EntryType::Configuration => Some(Box::new(Configuration::decode(r)?)),
                _ => None,
            };
            let id = LogId::new(prev.index + 1 + i, entry_term);
            entries.push(EntryMeta { id, kind, conf });
        }
        let req = AppendEntriesRequest {
            term,
            prev,
            commit,
            sent_ms,
            round,
            entries,
        };
        req.validate().map_err(|e| r.error(e.to_string()))?;
        Ok(req)
    }

    /// Checks what every well-formed request satisfies: indexes follow `prev` without gaps,
    /// terms never go backwards and never exceed the leader's term, and a configuration
    /// entry (only it) carries its configuration.
    pub fn validate(&self) -> Result<()> {
        let bad = |why: String| Err(RaftError::decode("AppendEntriesRequest", why));
        if self.prev.term > self.term {
            return bad(format!("prev {} is above term {}", self.prev, self.term));
        }
        let last = self.prev.index.saturating_add(self.entries.len() as u64);
        if last > LOG_INDEX_MAX || self.commit > LOG_INDEX_MAX {
            return bad(format!(
                "indexes past LOG_INDEX_MAX (prev {}, {} entries, commit {})",
                self.prev,
                self.entries.len(),
                self.commit
            ));
        }
        let mut expect = self.prev;
        for e in &self.entries {
            if Some(e.id.index) != expect.index.checked_add(1) {
                return bad(format!("entry {} does not follow {}", e.id, expect));
            }
            if e.id.term < expect.term || e.id.term > self.term {
                return bad(format!(
                    "entry {} has a term outside {}..={}",
                    e.id, expect.term, self.term
                ));
            }
            if (e.kind == EntryType::Configuration) != e.conf.is_some() {
                return bad(format!(
                    "entry {} of kind {:?} and its configuration disagree",
                    e.id, e.kind
                ));
            }
            expect = e.id;
        }
        Ok(())
    }

    /// The LogId of the last entry carried, or `prev` for a heartbeat.
    pub fn last_id(&self) -> LogId {
        self.entries.last().map_or(self.prev, |e| e.id)
    }
}

impl AppendEntriesResponse {
    /// Appends the body.
    pub fn encode(&self, buf: &mut Vec<u8>) {
        put_u64(buf, self.term);
        put_u8(buf, u8::from(self.success));
        put_u64(buf, self.index);
        self.hint.encode(buf);
        put_u64(buf, self.sent_ms);
        put_u64(buf, self.round);
    }

    /// Reads the body.
    pub fn decode(r: &mut Reader<'_>) -> Result<AppendEntriesResponse> {
        let term = r.u64()?;
        let success = flags(r, 0b1)? != 0;
        Ok(AppendEntriesResponse {
            term,
            success,
            index: r.u64()?,
            hint: LogId::decode(r)?,
            sent_ms: r.u64()?,
            round: r.u64()?,
        })
    }
}

impl InstallSnapshotRequest {
    /// Appends the body.
    pub fn encode(&self, buf: &mut Vec<u8>) {
        put_u64(buf, self.term);
        self.last.encode(buf);
        self.conf.encode(buf);
        put_u64(buf, self.sent_ms);
        put_u64(buf, self.round);
    }

    /// Reads the body; a snapshot of a later term than the leader's, or of index 0, or
    /// without voters, is refused.
    pub fn decode(r: &mut Reader<'_>) -> Result<InstallSnapshotRequest> {
        let term = r.u64()?;
        let last = LogId::decode(r)?;
        let conf = Configuration::decode(r)?;
        let req = InstallSnapshotRequest {
            term,
            last,
            conf,
            sent_ms: r.u64()?,
            round: r.u64()?,
        };
        if req.last.term > req.term || req.last.index == 0 || req.last.index > LOG_INDEX_MAX {
            return Err(r.error(format!("snapshot {} from term {}", req.last, req.term)));
        }
        if req.conf.is_empty() {
            return Err(r.error("a snapshot without voters"));
        }
        Ok(req)
    }
}

#[cfg(test)]
mod proptests;
