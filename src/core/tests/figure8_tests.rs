//! Raft paper figure 8, scripted step by step with five peers S1..S5 (indexes 0..4): an entry
//! of an earlier term stored on a majority must not be committed by counting replicas, because
//! a later leader may still overwrite it. With the bug switch on, the script shows exactly that
//! overwrite of a "committed" entry.

use super::*;

fn one_entry_per_append(i: usize) -> CoreOptions {
    let mut o = options(i);
    o.max_entries_per_append = 1;
    o
}

fn one_entry_with_bug(i: usize) -> CoreOptions {
    let mut o = one_entry_per_append(i);
    o.bugs.commit_previous_term = true;
    o
}

fn is_append_to(m: &Message, to: usize, wanted: usize) -> bool {
    to == wanted && matches!(m, Message::AppendEntries(_))
}

fn carries(m: &Message, index: u64) -> bool {
    matches!(m, Message::AppendEntries(r) if r.entries.iter().any(|e| e.id.index == index))
}

/// Steps (a)-(c) of the figure. Returns the cluster with S1 leader of term 4, index 2 (term 2)
/// on S1, S2, S3 and index 3 (term 4) on S1 and S2 (a minority; the paper has it on S1 only,
/// which makes no difference to the hazard).
fn figure_8_until_c(opts: fn(usize) -> CoreOptions) -> Cluster {
    let mut c = Cluster::with_options(5, opts);
    for i in 0..5 {
        c.reset_node(
            i,
            vec![LogId::new(1, 1)],
            HardState {
                term: 1,
                voted_for: None,
            },
        );
    }
    // (a) S1 leads term 2 and its entry (2, t2) reaches S2 only.
    c.expire_election_timer(0);
    c.deliver_all_dropping(|from, to, m| {
        from == 0 && to >= 2 && matches!(m, Message::AppendEntries(_))
    });
    assert_eq!(c.leaders(), vec![0]);
    assert_eq!(c.core(0).term(), 2);
    assert_eq!(c.nodes[1].log, vec![LogId::new(1, 1), LogId::new(2, 2)]);
    // (b) S1 crashes; S5 leads term 3 with S3, S4 and stores (2, t3) only itself.
    c.crash(0);
    c.expire_election_timer(4);
    c.deliver_all_dropping(|from, _, m| from == 4 && matches!(m, Message::AppendEntries(_)));
    assert_eq!(c.leaders(), vec![4]);
    assert_eq!(c.core(4).term(), 3);
    assert_eq!(c.nodes[4].log, vec![LogId::new(1, 1), LogId::new(2, 3)]);
    // (c) S5 crashes; S1 restarts and leads term 4 (its first pre-vote teaches it term 3).
    c.crash(4);
    c.restart(0);
    c.expire_election_timer(0);
    c.deliver_all();
    c.expire_election_timer(0);
    let mut s3_probe_seen = false;
    c.deliver_all_dropping(|_, to, m| {
        // S1 copies (2, t2) to S3 but its own entry (3, t4) reaches only S2 (still a
        // minority): S3's first probe carries index 3 and is rejected, later ones are lost.
        if to == 2 && carries(m, 3) {
            let drop = s3_probe_seen;
            s3_probe_seen = true;
            return drop;
        }
        is_append_to(m, to, 3)
    });
    assert_eq!(c.leaders(), vec![0]);
    assert_eq!(c.core(0).term(), 4);
    for i in [0, 1, 2] {
        assert_eq!(
            c.nodes[i].log[1],
            LogId::new(2, 2),
            "S{} holds (2, t2)",
            i + 1
        );
    }
    assert_eq!(c.nodes[0].log.len(), 3);
    c
}

/// (d): S1 crashes, S5 is elected by S3, S4 (S2's log is newer) and overwrites index 2.
fn figure_8_d(c: &mut Cluster) {
    c.crash(0);
    c.restart(4);
    c.expire_election_timer(4);
    c.deliver_all();
    c.expire_election_timer(4);
    c.deliver_all();
    assert_eq!(c.leaders(), vec![4]);
    for i in [1, 2, 3] {
        assert_eq!(
            c.nodes[i].log[1],
            LogId::new(2, 3),
            "S{} now holds (2, t3)",
            i + 1
        );
    }
}

#[test]
fn figure_8_an_old_term_entry_on_a_majority_is_not_committed() {
    let mut c = figure_8_until_c(one_entry_per_append);
    assert_eq!(
        c.core(0).commit_index(),
        0,
        "(2, t2) is on a majority but of an earlier term"
    );
    figure_8_d(&mut c);
    // Nothing committed was overwritten: index 2 was never handed out anywhere.
    for n in &c.nodes {
        assert!(!n.applied.contains(&2) || n.log[1] == LogId::new(2, 3));
    }
}

#[test]
fn figure_8_it_commits_through_an_entry_of_the_current_term() {
    let mut c = figure_8_until_c(one_entry_per_append);
    // (e) instead: S1 stays up and its own entry (3, t4) reaches a majority.
    c.advance(30);
    assert_eq!(
        c.core(0).commit_index(),
        3,
        "(3, t4) commits and with it (2, t2)"
    );
    c.crash(0);
    c.restart(4);
    c.expire_election_timer(4);
    c.deliver_all();
    c.expire_election_timer(4);
    c.deliver_all();
    assert_ne!(
        c.core(4).role(),
        Role::Leader,
        "S5's log is behind the committed entries"
    );
}

#[test]
fn figure_8_with_the_bug_a_committed_entry_is_overwritten() {
    let mut c = figure_8_until_c(one_entry_with_bug);
    assert_eq!(
        c.core(0).commit_index(),
        2,
        "the bug commits (2, t2) by counting replicas"
    );
    assert!(c.nodes[0].applied.contains(&2));
    figure_8_d(&mut c);
    assert_eq!(
        c.nodes[1].log[1],
        LogId::new(2, 3),
        "the 'committed' entry was overwritten"
    );
}
