//! Snapshot decisions: compaction keeps a margin; a follower whose next entry was compacted
//! gets the snapshot, installs it (log frozen, no campaign meanwhile) and then replicates
//! from after it; offers it does not need are refused or fast-forwarded; a lost offer is
//! made again.

use super::*;

fn margin(i: usize) -> CoreOptions {
    let mut o = options(i);
    o.snapshot_log_margin = 2;
    o
}

/// Tells node `i` that a snapshot up to its commit index is durable.
fn save_snapshot(c: &mut Cluster, i: usize) -> LogId {
    let commit = c.core(i).commit_index();
    let last = LogId::new(commit, c.core(i).term_at(commit).unwrap());
    let conf = c.core(i).configuration().clone();
    c.step(i, Event::SnapshotSaved { last, conf: &conf });
    last
}

fn installs(outcomes: &[Action]) -> Vec<LogId> {
    outcomes
        .iter()
        .filter_map(|a| match a {
            Action::InstallSnapshot { last, .. } => Some(*last),
            _ => None,
        })
        .collect()
}

/// Completes node `i`'s install of the leader's snapshot `last`: its shell log becomes the
/// leader's prefix, and the core is told.
fn finish_install(c: &mut Cluster, i: usize, leader: usize, last: LogId) {
    let prefix = c.nodes[leader].log[..last.index as usize].to_vec();
    c.nodes[i].log = prefix.clone();
    c.nodes[i].durable_log = prefix;
    c.nodes[i].installed = last.index;
    c.step(i, Event::SnapshotInstalled { last, ok: true });
}

#[test]
fn a_snapshot_compacts_the_log_keeping_the_margin() {
    let mut c = Cluster::with_options(3, margin);
    c.elect(0);
    c.propose(0, 9);
    c.advance(2 * c.heartbeat());
    let last = save_snapshot(&mut c, 0);
    assert_eq!(last.index, 10);
    assert_eq!(c.outcomes(0), vec![Action::CompactLog { upto: 8 }]);
    assert_eq!(c.core(0).first_index(), 9);
    assert_eq!(c.core(0).snapshot(), last);
    let older = LogId::new(5, last.term);
    let conf = c.core(0).configuration().clone();
    c.step(
        0,
        Event::SnapshotSaved {
            last: older,
            conf: &conf,
        },
    );
    assert!(
        c.outcomes(0).is_empty(),
        "an older snapshot changes nothing"
    );
}

/// A follower that was down while the leader compacted gets the snapshot; while it installs
/// it neither appends nor campaigns; afterwards it replicates the rest.
#[test]
fn a_follower_behind_the_compaction_point_installs_the_snapshot_and_catches_up() {
    let mut c = Cluster::with_options(3, margin);
    c.elect(0);
    c.crash(2);
    c.propose(0, 9);
    c.advance(2 * c.heartbeat());
    let snap = save_snapshot(&mut c, 0);
    c.propose(0, 3);
    c.restart(2);
    c.advance(T + 3 * c.heartbeat());
    let wanted = installs(&c.outcomes(2));
    assert_eq!(wanted, vec![snap], "the snapshot is offered");
    assert_eq!(c.core(2).installing(), Some(snap));
    let before = c.core(2).last_log_id();
    c.advance(3 * T);
    assert!(
        installs(&c.outcomes(2)).is_empty(),
        "repeated offers are ignored"
    );
    assert_eq!(
        c.core(2).role(),
        Role::Follower,
        "no campaign while installing"
    );
    assert_eq!(c.core(2).last_log_id(), before, "the log stays frozen");
    finish_install(&mut c, 2, 0, snap);
    assert_eq!(c.core(2).first_index(), snap.index + 1);
    assert_eq!(c.core(2).commit_index(), snap.index);
    c.advance(3 * c.heartbeat());
    assert_eq!(c.core(2).last_log_id(), c.core(0).last_log_id());
    assert_eq!(c.core(2).commit_index(), c.core(0).commit_index());
    assert_eq!(
        c.nodes[2].applied.first(),
        Some(&(snap.index + 1)),
        "entries the snapshot holds are never handed out again"
    );
}

/// An offer at or below the commit index is stale (answered, not installed); an offer whose
/// last entry the log holds only moves the commit index.
#[test]
fn offers_the_follower_does_not_need_are_not_installed() {
    let mut c = Cluster::with_options(3, margin);
    c.elect(0);
    c.propose(0, 4);
    c.advance(2 * c.heartbeat());
    let snap = save_snapshot(&mut c, 0);
    let offer = |last: LogId| {
        Message::InstallSnapshot(crate::core::message::InstallSnapshotRequest {
            term: 1,
            last,
            conf: conf_of(&[0, 1, 2], &[]),
            sent_ms: 0,
            round: 0,
        })
    };
    let msg = offer(snap);
    c.step(
        1,
        Event::Message {
            from: peer(0),
            msg: &msg,
        },
    );
    assert!(
        installs(&c.outcomes(1)).is_empty(),
        "stale: already committed"
    );
    c.propose(0, 2);
    c.deliver_if(|_, to, m| to == 1 && matches!(m, Message::AppendEntries(_)));
    c.net.clear();
    let last = c.core(1).last_log_id();
    assert!(c.core(1).commit_index() < last.index);
    let msg = offer(last);
    c.step(
        1,
        Event::Message {
            from: peer(0),
            msg: &msg,
        },
    );
    assert!(
        installs(&c.outcomes(1)).is_empty(),
        "held in the log: no install"
    );
    assert_eq!(c.core(1).commit_index(), last.index, "fast-forwarded");
}

/// An offer lost on the way (here: sent while the follower was down) is made again after
/// an election timeout, not before.
#[test]
fn a_lost_snapshot_offer_is_made_again() {
    let mut c = Cluster::with_options(3, margin);
    c.elect(0);
    c.crash(2);
    c.propose(0, 9);
    c.advance(2 * c.heartbeat());
    save_snapshot(&mut c, 0);
    c.advance(2 * c.heartbeat());
    let state = c.core(0).progress(&peer(2)).unwrap().state;
    assert_eq!(
        state,
        crate::core::ProgressState::Snapshot,
        "offered to the dead peer"
    );
    c.restart(2);
    c.advance(2 * c.heartbeat());
    assert!(installs(&c.outcomes(2)).is_empty(), "not offered again yet");
    c.advance(T);
    assert_eq!(installs(&c.outcomes(2)).len(), 1, "the offer came again");
}
