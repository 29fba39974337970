//! Log replication in the Raft paper's terms (section 5.3): log matching, truncation only on a
//! conflict and never at or below the commit index, the follower commit rule, durability
//! before acknowledgement, fast back-off, the in-flight window and retransmission.

use super::*;
use crate::core::message::AppendEntriesResponse;

fn ids(terms: &[u64]) -> Vec<LogId> {
    terms
        .iter()
        .enumerate()
        .map(|(i, t)| LogId::new(i as u64 + 1, *t))
        .collect()
}

fn append(term: u64, prev: LogId, commit: u64, entries: &[LogId]) -> Message {
    Message::AppendEntries(AppendEntriesRequest {
        term,
        prev,
        commit,
        sent_ms: 0,
        round: 0,
        entries: entries
            .iter()
            .map(|id| EntryMeta {
                id: *id,
                kind: EntryType::Data,
                conf: None,
            })
            .collect(),
    })
}

fn responses(c: &Cluster, from: usize) -> Vec<AppendEntriesResponse> {
    c.net
        .iter()
        .filter_map(|(f, _, m)| match m {
            Message::AppendEntriesResponse(r) if *f == from => Some(*r),
            _ => None,
        })
        .collect()
}

/// §5.3: entries commit once a majority holds them durably, and every peer's log matches.
#[test]
fn entries_commit_on_a_durable_majority_and_logs_match() {
    let mut c = Cluster::new(3);
    c.campaign(0);
    c.propose(0, 10);
    c.deliver_all();
    c.advance(20);
    for i in 0..3 {
        assert_eq!(c.nodes[i].log, c.nodes[0].log, "log matching on {i}");
        assert_eq!(c.core(i).commit_index(), 11);
        assert_eq!(c.nodes[i].applied, (1..=11).collect::<Vec<_>>());
    }
}

/// The leader's own entries count for its vote only once durable: with 5 peers and 2
/// acknowledgements, commit waits for the leader's sync.
#[test]
fn the_leader_counts_its_own_entries_only_once_durable() {
    let mut c = Cluster::new(5);
    c.campaign(0);
    c.auto_persist = false;
    c.propose(0, 1);
    c.deliver_if(|_, to, _| to == 1 || to == 2);
    c.persist(1);
    c.persist(2);
    c.deliver_if(|_, to, _| to == 0);
    assert_eq!(
        c.core(0).commit_index(),
        1,
        "the no-op only: the leader's batch is not synced"
    );
    c.persist(0);
    assert_eq!(c.core(0).commit_index(), 2);
}

/// RELIABILITY trap 10: an acknowledgement waits for the entries to be durable.
#[test]
fn an_acknowledgement_waits_for_durability() {
    let mut c = Cluster::new(3);
    c.campaign(0);
    c.auto_persist = false;
    c.propose(0, 2);
    c.deliver_if(|_, to, _| to == 1);
    assert!(responses(&c, 1).is_empty(), "nothing durable yet");
    c.persist(1);
    let acks = responses(&c, 1);
    assert_eq!(acks.len(), 1);
    assert!(acks[0].success);
    assert_eq!(acks[0].index, 3);
}

/// A follower's commit is min(leader commit, last entry known to match that leader): entries
/// left by an older leader beyond the match point are not committed.
#[test]
fn follower_commit_is_bounded_by_what_matches_the_leader() {
    let mut c = Cluster::new(3);
    c.reset_node(
        1,
        ids(&[1, 1, 1]),
        HardState {
            term: 1,
            voted_for: None,
        },
    );
    c.now = 3 * T;
    let m = append(2, LogId::new(1, 1), 5, &[]);
    c.step(
        1,
        Event::Message {
            from: peer(0),
            msg: &m,
        },
    );
    assert_eq!(
        c.core(1).commit_index(),
        1,
        "entries 2-3 of term 1 may differ from the leader"
    );
    let m = append(2, LogId::new(1, 1), 5, &[LogId::new(2, 2)]);
    c.step(
        1,
        Event::Message {
            from: peer(0),
            msg: &m,
        },
    );
    assert_eq!(
        c.nodes[1].log,
        ids(&[1, 2]),
        "the conflicting suffix was replaced"
    );
    assert_eq!(c.core(1).commit_index(), 2);
}

/// RELIABILITY trap 3: a stale or duplicated AppendEntries never truncates.
#[test]
fn stale_append_entries_never_truncate() {
    let mut c = Cluster::new(3);
    c.reset_node(
        1,
        ids(&[1, 1, 1, 1, 1]),
        HardState {
            term: 1,
            voted_for: None,
        },
    );
    c.now = 3 * T;
    let m = append(1, LogId::new(1, 1), 0, &ids(&[1, 1])[1..]);
    c.step(
        1,
        Event::Message {
            from: peer(0),
            msg: &m,
        },
    );
    assert_eq!(
        c.nodes[1].log.len(),
        5,
        "the stale request's tail is not the truth"
    );
    let acks = responses(&c, 1);
    assert!(acks[0].success && acks[0].index == 2);
}

/// A conflict at or below the commit index is refused (it cannot come from a correct leader).
#[test]
fn a_conflict_at_or_below_the_commit_index_is_refused() {
    let mut c = Cluster::new(3);
    c.reset_node(
        1,
        ids(&[1, 1, 1]),
        HardState {
            term: 1,
            voted_for: None,
        },
    );
    c.now = 3 * T;
    let m = append(1, LogId::new(3, 1), 3, &[]);
    c.step(
        1,
        Event::Message {
            from: peer(0),
            msg: &m,
        },
    );
    assert_eq!(c.core(1).commit_index(), 3);
    c.net.clear();
    let bad = append(2, LogId::new(1, 1), 3, &[LogId::new(2, 2)]);
    c.step(
        1,
        Event::Message {
            from: peer(0),
            msg: &bad,
        },
    );
    assert_eq!(c.nodes[1].log, ids(&[1, 1, 1]));
    assert!(responses(&c, 1).is_empty());
}

/// Fast back-off: a follower with a long suffix of a stale term is found in a few round
/// trips, not one per entry.
#[test]
fn fast_backoff_skips_a_whole_conflicting_term() {
    let mut c = Cluster::new(3);
    let mut stale = ids(&[1]);
    stale.extend((2..=40).map(|i| LogId::new(i, 2)));
    c.reset_node(
        1,
        stale,
        HardState {
            term: 2,
            voted_for: None,
        },
    );
    c.reset_node(
        0,
        ids(&[1, 3, 3]),
        HardState {
            term: 3,
            voted_for: None,
        },
    );
    c.reset_node(
        2,
        ids(&[1, 3, 3]),
        HardState {
            term: 3,
            voted_for: None,
        },
    );
    c.now = 3 * T;
    c.campaign(0);
    let mut rejections = 0;
    for _ in 0..10 {
        rejections += c
            .net
            .iter()
            .filter(|(f, _, m)| {
                *f == 1 && matches!(m, Message::AppendEntriesResponse(r) if !r.success)
            })
            .count();
        c.deliver_if(|_, _, _| true); // one round trip at a time
    }
    assert_eq!(c.nodes[1].log, c.nodes[0].log);
    assert!(rejections <= 2, "{rejections} rejections");
}

/// The pipeline never holds more than the in-flight window of unacknowledged appends.
#[test]
fn the_pipeline_is_bounded_by_the_inflight_window() {
    let mut c = Cluster::new(3);
    c.campaign(0);
    for _ in 0..20 {
        c.propose(0, 1);
    }
    let to_1 = c
        .net
        .iter()
        .filter(|(_, to, m)| *to == 1 && matches!(m, Message::AppendEntries(_)))
        .count();
    assert_eq!(to_1, 4, "window of 4");
    c.deliver_all();
    assert_eq!(c.nodes[1].log, c.nodes[0].log, "acks reopen the window");
}

/// Lost appends are sent again: after `stall_heartbeats` heartbeats without progress the
/// leader probes from the match index.
#[test]
fn lost_appends_are_sent_again_after_a_stall() {
    let mut c = Cluster::new(3);
    c.campaign(0);
    c.propose(0, 5);
    c.net.retain(|(_, to, _)| *to != 1); // the appends to 1 are lost
    c.deliver_all();
    c.advance(5 * 10);
    assert_eq!(c.nodes[1].log, c.nodes[0].log);
    assert_eq!(c.core(1).commit_index(), 6);
}

/// A deposed leader learns the new term from a follower's rejection and steps down.
#[test]
fn a_deposed_leader_steps_down_when_answered_with_a_later_term() {
    let mut c = Cluster::new(3);
    c.campaign(0);
    let log = c.nodes[0].log.clone();
    c.reset_node(
        1,
        log,
        HardState {
            term: 5,
            voted_for: None,
        },
    );
    c.advance(20);
    assert_ne!(c.core(0).role(), Role::Leader);
    assert_eq!(c.core(0).term(), 5);
}

/// RELIABILITY trap 10, end to end: an old durability report for an entry that was truncated
/// and re-appended with the same LogId does not make the new copy acknowledged.
#[test]
fn an_old_durability_report_never_acknowledges_a_re_appended_entry() {
    let mut c = Cluster::new(3);
    c.auto_persist = false;
    c.now = 3 * T;
    let first = append(2, LogId::default(), 0, &[LogId::new(1, 2)]);
    c.step(
        1,
        Event::Message {
            from: peer(0),
            msg: &first,
        },
    );
    let old_report = c.nodes[1].pending.pop_back().unwrap();
    let other = append(3, LogId::default(), 0, &[LogId::new(1, 3)]);
    c.step(
        1,
        Event::Message {
            from: peer(2),
            msg: &other,
        },
    );
    let again = append(4, LogId::default(), 0, &[LogId::new(1, 2)]);
    c.step(
        1,
        Event::Message {
            from: peer(0),
            msg: &again,
        },
    );
    c.nodes[1]
        .pending
        .retain(|e| matches!(e, Event::HardStatePersisted(_)));
    c.persist(1);
    c.net.clear();
    c.step(1, old_report);
    assert!(
        responses(&c, 1).is_empty(),
        "the old copy's report acknowledged the new copy"
    );
    assert_eq!(c.core(1).durable_index(), 0);
}
