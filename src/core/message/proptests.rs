//! Property tests of the message encodings: every message round-trips; every strict prefix of
//! an encoding, random bytes and mutated encodings are errors, never panics.

use proptest::prelude::*;
use std::collections::BTreeSet;

use super::*;
use crate::types::PeerId;

fn log_id() -> impl Strategy<Value = LogId> {
    (any::<u64>(), any::<u64>()).prop_map(|(i, t)| LogId::new(i, t))
}

fn configuration() -> impl Strategy<Value = Configuration> {
    proptest::collection::btree_set(1u16..50, 1..5).prop_map(|ports| {
        let voters: BTreeSet<PeerId> = ports
            .iter()
            .map(|p| format!("10.0.0.1:{p}:0").parse().unwrap())
            .collect();
        Configuration::new(voters)
    })
}

fn append_request() -> impl Strategy<Value = AppendEntriesRequest> {
    let kinds = proptest::collection::vec((0u64..3, 0u8..3, configuration()), 0..6);
    (
        0u64..1000,
        0u64..1000,
        0..=LOG_INDEX_MAX,
        any::<u64>(),
        kinds,
        any::<u64>(),
    )
        .prop_map(|(prev_index, prev_term, commit, sent_ms, kinds, round)| {
            let mut term = prev_term;
            let mut entries = Vec::new();
            for (i, (bump, k, conf)) in kinds.into_iter().enumerate() {
                term += bump;
                let kind = [EntryType::Data, EntryType::NoOp, EntryType::Configuration][k as usize];
                let conf = (kind == EntryType::Configuration).then(|| Box::new(conf));
                let id = LogId::new(prev_index + 1 + i as u64, term);
                entries.push(EntryMeta { id, kind, conf });
            }
            AppendEntriesRequest {
                term: term + 1,
                prev: LogId::new(prev_index, prev_term),
                commit,
                sent_ms,
                round,
                entries,
            }
        })
}

fn message() -> impl Strategy<Value = Message> {
    prop_oneof![
        (0u64..u64::MAX / 2, log_id(), any::<bool>(), any::<bool>()).prop_map(
            |(term, id, pre_vote, transfer)| Message::VoteRequest(VoteRequest {
                term: term.max(id.term),
                last_log_id: id,
                pre_vote,
                transfer,
            })
        ),
        (any::<u64>(), any::<bool>(), any::<bool>()).prop_map(|(term, granted, pre_vote)| {
            Message::VoteResponse(VoteResponse {
                term,
                granted,
                pre_vote,
            })
        }),
        append_request().prop_map(Message::AppendEntries),
        (
            any::<u64>(),
            any::<bool>(),
            any::<u64>(),
            log_id(),
            any::<u64>(),
            any::<u64>()
        )
            .prop_map(|(term, success, index, hint, sent_ms, round)| {
                Message::AppendEntriesResponse(AppendEntriesResponse {
                    term,
                    success,
                    index,
                    hint,
                    sent_ms,
                    round,
                })
            }),
        any::<u64>().prop_map(|term| Message::TimeoutNow(TimeoutNow { term })),
        (
            0u64..u64::MAX / 2,
            1..=LOG_INDEX_MAX,
            configuration(),
            any::<u64>(),
            any::<u64>()
        )
            .prop_filter("a snapshot has voters", |(_, _, c, _, _)| !c.is_empty())
            .prop_map(|(term, index, conf, sent_ms, round)| {
                Message::InstallSnapshot(InstallSnapshotRequest {
                    term: term + 1,
                    last: LogId::new(index, term),
                    conf,
                    sent_ms,
                    round,
                })
            }),
    ]
}

#[test]
fn indexes_past_log_index_max_are_refused_where_arithmetic_follows() {
    let conf = Configuration::parse_voters("10.0.0.1:1:0").unwrap();
    let snapshot = |index| {
        let mut buf = Vec::new();
        InstallSnapshotRequest {
            term: 2,
            last: LogId::new(index, 1),
            conf: conf.clone(),
            sent_ms: 0,
            round: 0,
        }
        .encode(&mut buf);
        InstallSnapshotRequest::decode(&mut Reader::new("m", &buf))
    };
    assert!(snapshot(LOG_INDEX_MAX).is_ok());
    assert!(snapshot(LOG_INDEX_MAX + 1).is_err());
    assert!(snapshot(u64::MAX).is_err());
    let append = |prev_index, commit, entries: u64| AppendEntriesRequest {
        term: 2,
        prev: LogId::new(prev_index, 1),
        commit,
        sent_ms: 0,
        round: 0,
        entries: (1..=entries)
            .map(|i| EntryMeta {
                id: LogId::new(prev_index.wrapping_add(i), 1),
                kind: EntryType::Data,
                conf: None,
            })
            .collect(),
    };
    assert!(append(LOG_INDEX_MAX - 1, LOG_INDEX_MAX, 1)
        .validate()
        .is_ok());
    assert!(append(LOG_INDEX_MAX, 0, 1).validate().is_err());
    assert!(
        append(u64::MAX, 0, 0).validate().is_err(),
        "a heartbeat too"
    );
    assert!(
        append(5, u64::MAX, 0).validate().is_err(),
        "a commit index too"
    );
}

proptest! {
    #[test]
    fn every_message_round_trips(m in message()) {
        let mut buf = Vec::new();
        m.encode(&mut buf);
        prop_assert_eq!(Message::decode_exact(&buf).unwrap(), m);
    }

    #[test]
    fn every_strict_prefix_is_an_error(m in message()) {
        let mut buf = Vec::new();
        m.encode(&mut buf);
        for cut in 0..buf.len() {
            prop_assert!(Message::decode_exact(&buf[..cut]).is_err(), "prefix {cut} decoded");
        }
        buf.push(0);
        prop_assert!(Message::decode_exact(&buf).is_err(), "trailing byte accepted");
    }

    #[test]
    fn random_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
        let _ = Message::decode_exact(&bytes);
    }

    #[test]
    fn mutated_messages_decode_or_fail_cleanly(
        m in message(),
        pos in any::<usize>(),
        byte in any::<u8>(),
    ) {
        let mut buf = Vec::new();
        m.encode(&mut buf);
        let i = pos % buf.len();
        buf[i] = byte;
        if let Ok(Message::AppendEntries(req)) = Message::decode_exact(&buf) {
            prop_assert!(req.validate().is_ok(), "decode returned an invalid request");
        }
    }
}

#[test]
fn impossible_append_requests_are_refused() {
    let ok = AppendEntriesRequest {
        term: 5,
        prev: LogId::new(3, 2),
        commit: 0,
        sent_ms: 0,
        round: 0,
        entries: vec![EntryMeta {
            id: LogId::new(4, 3),
            kind: EntryType::Data,
            conf: None,
        }],
    };
    ok.validate().unwrap();
    let mut gap = ok.clone();
    gap.entries[0].id.index = 5;
    let mut backwards = ok.clone();
    backwards.entries[0].id.term = 1;
    let mut future = ok.clone();
    future.entries[0].id.term = 6;
    let mut no_conf = ok.clone();
    no_conf.entries[0].kind = EntryType::Configuration;
    for bad in [gap, backwards, future, no_conf] {
        let err = bad.validate().unwrap_err().to_string();
        assert!(err.contains("AppendEntriesRequest"), "{err}");
    }
}

#[test]
fn a_forged_entry_count_allocates_nothing() {
    let mut buf = Vec::new();
    let header = AppendHeader {
        term: 1,
        prev: LogId::default(),
        commit: 0,
        sent_ms: 0,
        round: 0,
    };
    AppendEntriesRequest::encode_header(&header, u32::MAX, &mut buf);
    let mut tagged = vec![3u8];
    tagged.extend_from_slice(&buf);
    let err = Message::decode_exact(&tagged).unwrap_err().to_string();
    assert!(err.contains("cannot fit"), "{err}");
}
