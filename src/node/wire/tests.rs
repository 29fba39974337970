//! RaftService body codec: round trips, zero-copy payloads, checksum and truncation checks.

use bytes::Bytes;
use proptest::prelude::*;

use super::*;
use crate::core::message::{AppendEntriesResponse, TimeoutNow, VoteRequest, VoteResponse};
use crate::types::LogId;

fn header() -> AppendHeader {
    AppendHeader {
        term: 4,
        prev: LogId::new(10, 3),
        commit: 9,
        sent_ms: 77,
        round: 5,
    }
}

fn env() -> Envelope {
    Envelope {
        group: GroupId::new("g").unwrap(),
        from: "127.0.0.1:1:0".parse().unwrap(),
        to: "127.0.0.1:2:0".parse().unwrap(),
    }
}

fn join(chunks: &[Bytes]) -> Bytes {
    let mut v = Vec::new();
    for c in chunks {
        v.extend_from_slice(c);
    }
    Bytes::from(v)
}

fn entries() -> Vec<LogEntry> {
    let conf = Configuration::parse_voters("127.0.0.1:1:0,127.0.0.1:2:0").unwrap();
    let mut conf_bytes = Vec::new();
    conf.encode(&mut conf_bytes);
    vec![
        LogEntry::new(
            LogId::new(11, 3),
            EntryType::Data,
            Bytes::from(vec![7u8; 300]),
        ),
        LogEntry::new(LogId::new(12, 3), EntryType::NoOp, Bytes::new()),
        LogEntry::new(
            LogId::new(13, 4),
            EntryType::Configuration,
            Bytes::from(conf_bytes),
        ),
        LogEntry::new(LogId::new(14, 4), EntryType::Data, Bytes::from_static(b"x")),
    ]
}

#[test]
fn every_message_kind_round_trips() {
    let msgs = [
        Message::VoteRequest(VoteRequest {
            term: 5,
            last_log_id: LogId::new(9, 4),
            pre_vote: true,
            transfer: false,
        }),
        Message::VoteResponse(VoteResponse {
            term: 5,
            granted: true,
            pre_vote: false,
        }),
        Message::AppendEntriesResponse(AppendEntriesResponse {
            term: 5,
            success: false,
            index: 40,
            hint: LogId::new(33, 2),
            sent_ms: 1234,
            round: 8,
        }),
        Message::TimeoutNow(TimeoutNow { term: 9 }),
    ];
    for m in msgs {
        let got = decode(&join(&encode_message(&env(), &m))).unwrap();
        assert_eq!(got.envelope, env());
        assert_eq!(got.msg, m);
        assert!(got.entries.is_empty());
    }
}

#[test]
fn append_entries_payloads_arrive_as_slices_of_the_frame_with_checksums_verified() {
    let sent = entries();
    let chunks = encode_append(&env(), &header(), &sent);
    assert_eq!(
        chunks.len(),
        1 + 3,
        "one header chunk, then each non-empty payload"
    );
    assert_eq!(
        chunks[1].as_ptr(),
        sent[0].data.as_ptr(),
        "payloads are not copied to encode"
    );
    let body = join(&chunks);
    let got = decode(&body).unwrap();
    let Message::AppendEntries(req) = &got.msg else {
        panic!("{:?}", got.msg)
    };
    assert_eq!(req.prev, LogId::new(10, 3));
    assert_eq!(
        (req.term, req.commit, req.sent_ms, req.round),
        (4, 9, 77, 5)
    );
    assert!(req.entries[2].conf.is_some());
    assert_eq!(got.entries, sent);
    let range = body.as_ptr() as usize..body.as_ptr() as usize + body.len();
    assert!(
        range.contains(&(got.entries[0].data.as_ptr() as usize)),
        "decoded without a copy"
    );
}

#[test]
fn a_flipped_payload_bit_drops_the_whole_message() {
    let body = join(&encode_append(&env(), &header(), &entries()));
    let mut bad = body.to_vec();
    let last = bad.len() - 1;
    bad[last] ^= 1; // inside the last payload
    let err = decode(&Bytes::from(bad)).unwrap_err();
    assert!(err.to_string().contains("checksum mismatch"), "{err}");
}

#[test]
fn every_truncation_is_an_error() {
    let body = join(&encode_append(&env(), &header(), &entries()));
    for cut in 0..body.len() {
        assert!(decode(&body.slice(..cut)).is_err(), "cut at {cut}");
    }
}

proptest! {
    #[test]
    fn random_and_mutated_bodies_never_panic(
        bytes in proptest::collection::vec(any::<u8>(), 0..300),
        pos in any::<usize>(),
        val in any::<u8>()
    ) {
        let _ = decode(&Bytes::from(bytes));
        let chunks = encode_append(&env(), &header(), &entries());
        let mut body = join(&chunks).to_vec();
        let i = pos % body.len();
        body[i] = val;
        let _ = decode(&Bytes::from(body));
    }
}

#[test]
fn the_protocol_page_example_matches_the_encoding() {
    let doc =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/docs/PROTOCOL.md")).unwrap();
    let start = doc.find("```raftservice-example").unwrap();
    let block = &doc[start..];
    let block = &block[block.find('\n').unwrap() + 1..block[3..].find("```").unwrap() + 3];
    let mut want = Vec::new();
    for line in block.lines() {
        let hex = line.split("   ").next().unwrap_or("");
        for byte in hex.split_whitespace() {
            want.push(u8::from_str_radix(byte, 16).unwrap());
        }
    }
    let env = Envelope {
        group: GroupId::new("g").unwrap(),
        from: "127.0.0.1:8100:0".parse().unwrap(),
        to: "127.0.0.1:8101:0".parse().unwrap(),
    };
    let msg = Message::VoteRequest(VoteRequest {
        term: 5,
        last_log_id: LogId::new(9, 4),
        pre_vote: true,
        transfer: false,
    });
    assert_eq!(join(&encode_message(&env, &msg)).to_vec(), want);
}
