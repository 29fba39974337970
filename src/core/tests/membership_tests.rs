//! Membership changes by joint consensus (Raft thesis section 4.3): new voters catch up
//! first, `C_old,new` needs both majorities, `C_new` follows, a removed leader steps down and
//! never campaigns, a leader elected mid-change finishes it, learners never vote or count, and
//! one change runs at a time.

use super::*;
use crate::error::RaftError;

/// New voters must hold the leader's whole log before the joint phase.
fn no_margin(i: usize) -> CoreOptions {
    let mut o = options(i);
    o.catchup_margin = 0;
    o
}

fn change(c: &mut Cluster, leader: usize, ctx: u64, target: &Configuration) {
    c.step(leader, Event::ChangeConfiguration { ctx, target });
}

fn done(outcomes: &[Action]) -> Vec<(u64, Result<(), RaftError>)> {
    outcomes
        .iter()
        .filter_map(|a| match a {
            Action::ConfChangeDone { ctx, result } => Some((*ctx, result.clone())),
            _ => None,
        })
        .collect()
}

/// §4.3: replacing two voters goes through `C_old,new`, which cannot commit on the new
/// majority alone; once both agree, `C_new` commits and the change is done.
#[test]
fn a_joint_configuration_needs_both_majorities() {
    let mut c = Cluster::with_spares(3, 2, options);
    c.elect(0);
    c.propose(0, 3);
    c.deliver_all();
    let target = conf_of(&[0, 3, 4], &[]);
    change(&mut c, 0, 1, &target);
    let joint = c.core(0).configuration().clone();
    assert!(
        joint.is_joint(),
        "within the catch-up margin: joint at once: {joint}"
    );
    let joint_index = c.core(0).configuration_index();
    // The old voters 1 and 2 hear nothing: the new majority {0, 3, 4} alone cannot commit.
    c.cut.extend([(0, 1), (0, 2)]);
    c.propose(0, 1);
    c.advance(3 * c.heartbeat());
    assert!(
        c.core(0).commit_index() < joint_index,
        "committed without C_old's majority"
    );
    c.heal();
    c.advance(5 * c.heartbeat());
    assert_eq!(c.core(0).configuration(), &target);
    assert_eq!(done(&c.outcomes(0)), vec![(1, Ok(()))]);
    for i in [3, 4] {
        assert_eq!(c.core(i).configuration(), &target, "peer {i}");
        assert_eq!(c.core(i).commit_index(), c.core(0).commit_index());
    }
}

/// §4.2.2: a leader not in `C_new` steps down once `C_new` commits, never campaigns again,
/// and the new configuration elects a leader of its own.
#[test]
fn a_removed_leader_steps_down_after_c_new_commits_and_never_campaigns() {
    let mut c = Cluster::new(3);
    c.elect(0);
    let target = conf_of(&[1, 2], &[]);
    change(&mut c, 0, 5, &target);
    c.advance(5 * c.heartbeat());
    assert_eq!(done(&c.outcomes(0)), vec![(5, Ok(()))]);
    assert_ne!(c.core(0).role(), Role::Leader);
    let term = c.core(0).term();
    c.advance(10 * T);
    let leaders = c.leaders();
    assert_eq!(leaders.len(), 1);
    assert!(leaders[0] == 1 || leaders[0] == 2);
    assert_eq!(c.core(0).role(), Role::Follower);
    assert_eq!(c.core(0).term(), term, "the removed peer never campaigned");
}

/// A leader elected while the configuration is joint finishes the change with `C_new`.
#[test]
fn a_leader_elected_in_the_joint_phase_finishes_the_change() {
    let mut c = Cluster::with_spares(3, 1, options);
    c.elect(0);
    change(&mut c, 0, 1, &conf_of(&[0, 1, 2, 3], &[]));
    c.advance(c.heartbeat());
    // Commit the joint entry, then cut the leader off before it appends C_new everywhere.
    c.advance(2 * c.heartbeat());
    c.isolate(0);
    c.advance(5 * T);
    let leaders: Vec<_> = c.leaders().into_iter().filter(|l| *l != 0).collect();
    assert_eq!(leaders.len(), 1, "a new leader in the joint configuration");
    let l = leaders[0];
    c.advance(5 * c.heartbeat());
    assert!(
        c.core(l).configuration().is_stable(),
        "{}",
        c.core(l).configuration()
    );
    assert_eq!(c.core(l).configuration(), &conf_of(&[0, 1, 2, 3], &[]));
    assert!(c.core(l).configuration_index() <= c.core(l).commit_index());
}

/// Learners receive every entry but are never asked for votes, never campaign and never
/// count: the group commits with a learner cut off, and a learner-only change needs no
/// joint phase.
#[test]
fn learners_replicate_but_never_vote_or_count() {
    let mut c = Cluster::with_spares(3, 1, options);
    c.elect(0);
    let target = conf_of(&[0, 1, 2], &[3]);
    change(&mut c, 0, 1, &target);
    c.advance(3 * c.heartbeat());
    assert_eq!(done(&c.outcomes(0)), vec![(1, Ok(()))]);
    assert_eq!(
        c.core(3).configuration(),
        &target,
        "one entry, no joint phase"
    );
    c.propose(0, 4);
    c.advance(2 * c.heartbeat());
    assert_eq!(
        c.core(3).commit_index(),
        c.core(0).commit_index(),
        "it replicates"
    );
    c.isolate(3);
    c.propose(0, 2);
    c.advance(2 * c.heartbeat());
    assert!(
        c.core(0).commit_index() > c.core(3).commit_index(),
        "commits without it"
    );
    c.advance(5 * T);
    assert_eq!(
        c.core(3).role(),
        Role::Follower,
        "a learner never campaigns"
    );
    assert_eq!(c.core(3).voted_for(), None);
}

/// One change at a time; a new voter that never catches up fails the change with Timeout
/// and the configuration stays as it was.
#[test]
fn a_second_change_is_busy_and_a_voter_that_never_catches_up_times_out() {
    let mut c = Cluster::with_spares(3, 2, no_margin);
    c.elect(0);
    c.crash(3);
    let before = c.core(0).configuration().clone();
    change(&mut c, 0, 1, &conf_of(&[0, 1, 2, 3], &[]));
    change(&mut c, 0, 2, &conf_of(&[0, 1, 2, 4], &[]));
    assert_eq!(done(&c.outcomes(0)), vec![(2, Err(RaftError::Busy))]);
    c.advance(2 * T);
    assert_eq!(done(&c.outcomes(0)), vec![(1, Err(RaftError::Timeout))]);
    assert_eq!(c.core(0).configuration(), &before);
    change(&mut c, 0, 3, &conf_of(&[0, 1, 2, 4], &[]));
    c.advance(5 * c.heartbeat());
    assert_eq!(
        done(&c.outcomes(0)),
        vec![(3, Ok(()))],
        "the next change runs"
    );
}

/// openraft issue 2091: removing the leader of a two-voter group. `C_old,new` commits, the
/// leader appends `C_new = {1}` and crashes before it spreads. Its log is the newest, so 1
/// cannot win without its vote, and under `C_new` it is no voter. Being a voter of its
/// committed configuration, it may still campaign (its own vote does not count under
/// `C_new`); it wins with 1's vote, commits `C_new`, and steps down for 1.
#[test]
fn a_removed_leader_that_crashed_before_c_new_spread_does_not_strand_the_group() {
    let mut c = Cluster::new(2);
    c.elect(0);
    let target = conf_of(&[1], &[]);
    change(&mut c, 0, 1, &target);
    assert!(c.core(0).configuration().is_joint());
    c.deliver_if(|_, to, _| to == 1); // 1 stores C_old,new and acknowledges it
    c.cut.insert((0, 1)); // C_new, appended once that commits, never reaches 1
    c.deliver_all();
    assert_eq!(
        c.core(0).configuration(),
        &target,
        "C_new appended on 0 only"
    );
    c.crash(0);
    c.restart(0);
    c.heal();
    c.advance(20 * T);
    assert_eq!(c.leaders(), vec![1], "the group elects its remaining voter");
    assert_eq!(c.core(1).configuration(), &target);
    assert!(c.core(1).configuration_index() <= c.core(1).commit_index());
}

/// Sim seed 29288 (a 50,000-seed soak, stop 15): as above, but the removed leader had itself
/// been added by a configuration its restart cannot know committed (a restarted peer's
/// commit index starts at its snapshot, here 0, where it was no voter). Neither the
/// committed nor the effective configuration names it, yet its vote is the one the others
/// need. Every configuration after its commit index counts: it campaigns, wins under
/// `C_new`, commits it, and steps down for 0.
#[test]
fn a_removed_leader_added_after_its_commit_index_does_not_strand_the_group() {
    let mut c = Cluster::with_spares(1, 1, options);
    c.elect(0);
    let both = conf_of(&[0, 1], &[]);
    change(&mut c, 0, 1, &both);
    c.advance(5 * c.heartbeat());
    assert_eq!(c.core(1).configuration(), &both, "1 added");
    c.step(
        0,
        Event::TransferLeader {
            ctx: 2,
            to: peer(1),
        },
    );
    c.advance(10 * c.heartbeat());
    assert_eq!(c.leaders(), vec![1], "leadership moved to the added voter");
    let target = conf_of(&[0], &[]);
    change(&mut c, 1, 3, &target);
    assert!(c.core(1).configuration().is_joint());
    c.deliver_if(|_, to, _| to == 0); // 0 stores C_old,new and acknowledges it
    c.cut.insert((1, 0)); // C_new, appended once that commits, never reaches 0
    c.deliver_all();
    assert_eq!(
        c.core(1).configuration(),
        &target,
        "C_new appended on 1 only"
    );
    c.crash(1);
    c.restart(1);
    assert!(
        !c.core(1).committed_configuration().is_voter(&peer(1))
            && !c.core(1).configuration().is_voter(&peer(1)),
        "after its restart 1 votes in neither the committed nor the effective configuration"
    );
    c.heal();
    c.advance(20 * T);
    assert_eq!(c.leaders(), vec![0], "the group elects its remaining voter");
    assert_eq!(c.core(0).configuration(), &target);
    assert!(c.core(0).configuration_index() <= c.core(0).commit_index());
}

/// braft's `reset_peers`: the majority is gone for good; the survivor forces a configuration
/// of itself, leads at once in a new term, logs the forced configuration and commits again.
#[test]
fn a_forced_configuration_lets_a_lone_survivor_lead_again() {
    let mut c = Cluster::new(3);
    c.elect(0);
    c.crash(1);
    c.crash(2);
    c.advance(3 * T);
    assert_ne!(
        c.core(0).role(),
        Role::Leader,
        "no quorum: check-quorum stepped it down"
    );
    let term = c.core(0).term();
    let alone = conf_of(&[0], &[]);
    c.step(
        0,
        Event::ResetConfiguration {
            ctx: 9,
            conf: &alone,
        },
    );
    assert_eq!(done(&c.outcomes(0)), vec![(9, Ok(()))]);
    assert_eq!(c.leaders(), vec![0]);
    assert!(c.core(0).term() > term);
    assert_eq!(c.core(0).configuration(), &alone);
    assert_eq!(
        c.nodes[0].confs.values().last(),
        Some(&alone),
        "logged once it leads"
    );
    let commit = c.core(0).commit_index();
    c.propose(0, 2);
    assert_eq!(c.core(0).commit_index(), commit + 2, "commits alone");
    let joint = conf_of(&[0], &[]).joint_to(&conf_of(&[0, 1], &[])).unwrap();
    c.step(
        0,
        Event::ResetConfiguration {
            ctx: 10,
            conf: &joint,
        },
    );
    assert!(matches!(
        &done(&c.outcomes(0))[..],
        [(10, Err(RaftError::Invalid { .. }))]
    ));
}

fn compacting(i: usize) -> CoreOptions {
    let mut o = options(i);
    o.snapshot_log_margin = 0;
    o.catchup_margin = 0;
    o
}

/// Found by review: a new voter that needs a snapshot cannot move its match index while it
/// copies it; as long as it answers heartbeats the change waits for it, however long the
/// copy takes, and then commits.
#[test]
fn a_new_voter_installing_a_long_snapshot_does_not_time_out_the_change() {
    let mut c = Cluster::with_spares(3, 1, compacting);
    c.elect(0);
    c.propose(0, 5);
    c.advance(2 * c.heartbeat());
    let commit = c.core(0).commit_index();
    let last = LogId::new(commit, c.core(0).term_at(commit).unwrap());
    let conf = c.core(0).configuration().clone();
    c.step(0, Event::SnapshotSaved { last, conf: &conf });
    let target = conf_of(&[0, 1, 2, 3], &[]);
    change(&mut c, 0, 7, &target);
    c.advance(3 * c.heartbeat());
    assert_eq!(c.core(3).installing(), Some(last), "the new voter installs");
    c.advance(3 * T); // the copy takes three election timeouts
    assert!(
        done(&c.outcomes(0)).is_empty(),
        "the change gave up on an installing voter"
    );
    let prefix = c.nodes[0].log[..last.index as usize].to_vec();
    c.nodes[3].log = prefix.clone();
    c.nodes[3].durable_log = prefix;
    c.nodes[3].installed = last.index;
    c.step(3, Event::SnapshotInstalled { last, ok: true });
    c.advance(5 * c.heartbeat());
    assert_eq!(done(&c.outcomes(0)), vec![(7, Ok(()))]);
    assert_eq!(c.core(0).configuration(), &target);
}

/// Found by review: a forced configuration is recorded at the commit index, so a leader
/// that truncates the forcing peer's uncommitted entries and appends a configuration entry
/// of its own supersedes it cleanly (it used to trip the membership order in debug builds).
#[test]
fn a_forced_configuration_is_superseded_by_a_leaders_configuration_entry() {
    let mut c = Cluster::with_spares(3, 1, options);
    c.elect(0);
    c.isolate(0);
    c.propose(0, 3); // entries only 0 holds
    c.deliver_all();
    let l0 = c.core(0).last_log_id();
    c.campaign(1);
    c.advance(3 * c.heartbeat());
    assert_eq!(c.core(1).role(), Role::Leader);
    let target = conf_of(&[0, 1, 2], &[3]);
    change(&mut c, 1, 1, &target);
    c.advance(3 * c.heartbeat());
    assert!(c.core(1).configuration_index() <= l0.index);
    let forced = conf_of(&[0, 1], &[]);
    c.step(
        0,
        Event::ResetConfiguration {
            ctx: 9,
            conf: &forced,
        },
    );
    assert_eq!(c.core(0).configuration_index(), c.core(0).commit_index());
    c.heal();
    c.advance(5 * c.heartbeat());
    assert_eq!(
        c.core(0).configuration(),
        &target,
        "the leader's configuration wins"
    );
}
