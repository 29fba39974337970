//! The deterministic simulator of the Raft core, over many seeds (docs/TESTING.md, "The Raft
//! core and its simulator"). Seeds are split across four tests so the test harness runs them
//! in parallel. `TRAFT_SIM_SEED=<n>` replays exactly seed n; `TRAFT_SIM_SEEDS=<count>` runs
//! more seeds. Run with `--nocapture` to see the figures.

use std::time::Instant;

use traft::core::{BugSwitches, Role};
use traft::sim::scenario::Scenario;
use traft::sim::{run, seeds_from_env, FaultCounts, SimOptions, SimReport};

/// Seeds in the default run (split over the four `seeds_*` tests).
const DEFAULT_SEEDS: u64 = 1_000;
const PARTS: u64 = 4;

fn run_part(part: u64) {
    let seeds = seeds_from_env(0, DEFAULT_SEEDS);
    let mine: Vec<u64> = seeds
        .iter()
        .enumerate()
        .filter(|(i, _)| *i as u64 % PARTS == part)
        .map(|(_, s)| *s)
        .collect();
    let started = Instant::now();
    let mut reports = Vec::new();
    for seed in mine {
        match run(&SimOptions::new(seed)) {
            Ok(r) => reports.push(r),
            Err(failure) => panic!("{failure}"),
        }
    }
    summarize(part, &reports, started.elapsed().as_secs_f64());
}

fn summarize(part: u64, reports: &[SimReport], secs: f64) {
    if reports.is_empty() {
        return;
    }
    let sum = |f: fn(&SimReport) -> u64| reports.iter().map(f).sum::<u64>();
    let steps = sum(|r| r.steps);
    let mut faults = FaultCounts::default();
    for r in reports {
        let f = r.stats.faults;
        faults.partitions += f.partitions;
        faults.one_way += f.one_way;
        faults.bridges += f.bridges;
        faults.crashes += f.crashes;
        faults.pauses += f.pauses;
        faults.link_changes += f.link_changes;
        faults.strikes += f.strikes;
    }
    eprintln!(
        "sim part {part}: {} seeds, {} ops invoked, {} completed, {} unknown writes, {} unknown \
         reads, {} ops checked, {} entries committed, {} elections, {} steps, {:.0} simulated \
         s, {:.1} s wall, {:.0} steps/s, max heal-to-leader {} ms, messages {} (lost {}, \
         duplicated {}), faults {faults:?}",
        reports.len(),
        sum(|r| r.ops_invoked),
        sum(|r| r.ops_ok),
        sum(|r| r.unknown_writes),
        sum(|r| r.unknown_reads),
        sum(|r| r.ops_checked),
        sum(|r| r.committed),
        sum(|r| r.elections),
        steps,
        sum(|r| r.sim_ms) as f64 / 1000.0,
        secs,
        steps as f64 / secs,
        reports
            .iter()
            .map(|r| r.heal_to_leader_ms)
            .max()
            .unwrap_or(0),
        sum(|r| r.stats.messages),
        sum(|r| r.stats.messages_lost),
        sum(|r| r.stats.messages_duplicated),
    );
    eprintln!(
        "sim part {part}: read batches {}, transfers {} asked / {} moved leadership, \
         configuration changes {} asked / {} committed / {} refused or failed, snapshots {} \
         saved / {} installed, seeds with 6-7 peers {}, healed during a joint phase {}",
        sum(|r| r.stats.read_batches),
        sum(|r| r.stats.transfers_asked),
        sum(|r| r.stats.transfers_done),
        sum(|r| r.stats.conf_changes_asked),
        sum(|r| r.stats.conf_changes_done),
        sum(|r| r.stats.conf_changes_failed),
        sum(|r| r.stats.snapshots_saved),
        sum(|r| r.stats.snapshots_installed),
        reports.iter().filter(|r| r.nodes >= 6).count(),
        sum(|r| r.stats.healed_in_joint),
    );
}

#[test]
fn seeds_part_0() {
    run_part(0);
}

#[test]
fn seeds_part_1() {
    run_part(1);
}

#[test]
fn seeds_part_2() {
    run_part(2);
}

#[test]
fn seeds_part_3() {
    run_part(3);
}

#[test]
fn a_seed_replays_exactly() {
    let a = run(&SimOptions::new(7)).unwrap();
    let b = run(&SimOptions::new(7)).unwrap();
    assert_eq!(
        (a.steps, a.sim_ms, a.committed, a.ops_ok),
        (b.steps, b.sim_ms, b.committed, b.ops_ok)
    );
}

/// Runs seeds from 0 with `bugs` until one fails; returns the seed and the violation.
fn first_catch(bugs: BugSwitches, promise_checks: bool, max_seeds: u64) -> Option<(u64, String)> {
    (0..max_seeds).find_map(|seed| {
        let mut opts = SimOptions::new(seed);
        opts.bugs = bugs;
        opts.promise_checks = promise_checks;
        run(&opts).err().map(|f| (seed, f.message))
    })
}

fn assert_caught(name: &str, bugs: BugSwitches, promise_checks: bool, within: u64) {
    match first_catch(bugs, promise_checks, within) {
        Some((seed, message)) => eprintln!("bug {name}: caught at seed {seed}: {message}"),
        None => panic!("bug {name} was not caught within {within} seeds"),
    }
}

fn vote_bug() -> BugSwitches {
    BugSwitches {
        vote_before_persist: true,
        ..BugSwitches::default()
    }
}

/// RELIABILITY trap 2. The promise check catches it at the first vote of seed 0.
#[test]
fn bug_vote_counted_before_persisted_is_caught() {
    assert_caught("vote_before_persist", vote_bug(), true, 3);
}

/// The same bug seen end to end, without the promise check: two leaders in one term, after
/// the nemesis crashed a voter between its grant and its save (first at seed 103; 42 of the
/// first 1,000 seeds).
#[test]
fn bug_vote_counted_before_persisted_breaks_election_safety() {
    assert_caught("vote_before_persist (end to end)", vote_bug(), false, 400);
}

/// RELIABILITY trap 1 (figure 8). The commit-safety oracle catches it at seed 4 (46 of the
/// first 1,000 seeds).
#[test]
fn bug_commit_previous_term_is_caught() {
    let bugs = BugSwitches {
        commit_previous_term: true,
        ..BugSwitches::default()
    };
    assert_caught("commit_previous_term", bugs, true, 100);
}

/// RELIABILITY trap 3. The core's invariants or the durability checks catch it at seed 0
/// (969 of the first 1,000 seeds).
#[test]
fn bug_truncate_below_commit_is_caught() {
    let bugs = BugSwitches {
        truncate_below_commit: true,
        ..BugSwitches::default()
    };
    assert_caught("truncate_below_commit", bugs, true, 5);
}

/// RELIABILITY trap 5: a leader lease as long as the election timeout, without the drift
/// margin. The lease check (a valid lease needs a majority whose follower leases outlast it,
/// in real time) catches it as soon as a leader's clock runs slower than its followers'.
#[test]
fn bug_lease_without_drift_margin_is_caught() {
    let bugs = BugSwitches {
        lease_without_drift: true,
        ..BugSwitches::default()
    };
    assert_caught("lease_without_drift", bugs, true, 20);
}

/// RELIABILITY trap 6: a joint configuration committing with the new majority alone. The
/// commit-quorum check (durable on a majority of both voter sets) catches it.
#[test]
fn bug_joint_commit_with_the_new_majority_only_is_caught() {
    let bugs = BugSwitches {
        joint_commit_new_majority_only: true,
        ..BugSwitches::default()
    };
    assert_caught("joint_commit_new_majority_only", bugs, true, 100);
}

/// RELIABILITY trap 6: a leader removed by a change keeps campaigning. The check that every
/// leader is a voter of its own configuration catches it when it wins again.
#[test]
fn bug_removed_leader_keeps_campaigning_is_caught() {
    let bugs = BugSwitches {
        removed_peer_campaigns: true,
        ..BugSwitches::default()
    };
    assert_caught("removed_peer_campaigns", bugs, true, 100);
}

/// A ReadIndex answered before the term's no-op committed: the new leader's commit index may
/// lag behind what its predecessor committed. The read check (a released read index is at
/// least every index committed before the read arrived) catches it.
#[test]
fn bug_read_index_before_the_noop_commits_is_caught() {
    let bugs = BugSwitches {
        read_before_noop: true,
        ..BugSwitches::default()
    };
    assert_caught("read_before_noop", bugs, true, 100);
}

/// How many of the first `TRAFT_SIM_SEEDS` seeds (default 200) catch each bug switch, for
/// docs/TESTING.md. Opt-in: `cargo test --release --all-features --test sim bug_survey --
/// --ignored --nocapture`.
#[test]
#[ignore]
fn bug_survey() {
    let seeds = seeds_from_env(0, 200);
    let switches: [(&str, BugSwitches); 8] = [
        ("vote_before_persist", vote_bug()),
        (
            "commit_previous_term",
            BugSwitches {
                commit_previous_term: true,
                ..Default::default()
            },
        ),
        (
            "truncate_below_commit",
            BugSwitches {
                truncate_below_commit: true,
                ..Default::default()
            },
        ),
        (
            "lease_without_drift",
            BugSwitches {
                lease_without_drift: true,
                ..Default::default()
            },
        ),
        (
            "joint_commit_new_majority_only",
            BugSwitches {
                joint_commit_new_majority_only: true,
                ..Default::default()
            },
        ),
        (
            "removed_peer_campaigns",
            BugSwitches {
                removed_peer_campaigns: true,
                ..Default::default()
            },
        ),
        (
            "read_before_noop",
            BugSwitches {
                read_before_noop: true,
                ..Default::default()
            },
        ),
        ("vote_before_persist (no promise check)", vote_bug()),
    ];
    for (k, (name, bugs)) in switches.iter().enumerate() {
        let caught: Vec<u64> = seeds
            .iter()
            .copied()
            .filter(|seed| {
                let mut opts = SimOptions::new(*seed);
                opts.bugs = *bugs;
                opts.promise_checks = k != 7;
                run(&opts).is_err()
            })
            .collect();
        eprintln!(
            "survey {name}: caught in {} of {} seeds, first {:?}",
            caught.len(),
            seeds.len(),
            caught.first()
        );
    }
}

/// etcd issue 8243: a peer isolated in an old term while the others' terms rise, healed as
/// the leader dies, must not strand the two survivors.
#[test]
fn liveness_old_term_peer_and_dead_leader_elect_within_bound() {
    let mut s = Scenario::new(3, 11).unwrap();
    let t = s.t_ms();
    let (mut leader, _) = s.run_until_leader(20 * t).unwrap();
    let lonely = (leader + 1) % 3;
    s.isolate(lonely);
    for _ in 0..4 {
        // Depose the leader by a crash and restart; the other survivor takes over.
        s.crash(leader);
        s.restart(leader).unwrap();
        let (next, _) = s.run_until_leader(20 * t).unwrap();
        assert_ne!(next, lonely);
        leader = next;
    }
    assert!(s.term(leader) > s.term(lonely) + 2, "terms diverged");
    s.heal_links();
    s.crash(leader);
    let bound = 12 * t + 60;
    let (new, took) = s.run_until_leader(bound).unwrap();
    assert_ne!(new, leader);
    eprintln!("8243 scenario: leader after {took} ms (bound {bound} ms)");
}

/// A bridge: two sides that cannot talk, one peer that talks to both. A leader appears and
/// stays; the cut-off side does not keep deposing it.
#[test]
fn liveness_bridge_topology_elects_a_stable_leader() {
    for seed in 0..5 {
        let mut s = Scenario::new(5, 100 + seed).unwrap();
        let t = s.t_ms();
        s.bridge(2, &[true, true, false, false, false]);
        let (leader, took) = s.run_until_leader(12 * t + 60).unwrap();
        let elections = s.elections();
        s.run_for(50 * t).unwrap();
        assert_eq!(
            s.leader(),
            Some(leader),
            "seed {seed}: the leader changed\n{}",
            s.dump()
        );
        assert_eq!(
            s.elections(),
            elections,
            "seed {seed}: elections kept happening"
        );
        eprintln!(
            "bridge seed {seed}: leader {leader} after {took} ms, stable for {} ms",
            50 * t
        );
    }
}

/// Check-quorum: an isolated leader steps down within two election timeouts, and the
/// majority elects a new one within the bound; the isolated peer never raises its term
/// (pre-vote) and rejoins without deposing the new leader.
#[test]
fn liveness_isolated_leader_steps_down_and_rejoins_quietly() {
    let mut s = Scenario::new(3, 5).unwrap();
    let t = s.t_ms();
    let (old, _) = s.run_until_leader(20 * t).unwrap();
    let term = s.term(old);
    s.isolate(old);
    s.run_for(2 * t + 20).unwrap();
    assert_ne!(
        s.role(old),
        Some(Role::Leader),
        "check-quorum stepped it down"
    );
    let (new, _) = s.run_until_leader(12 * t + 60).unwrap();
    assert_ne!(new, old);
    s.run_for(20 * t).unwrap();
    assert_eq!(s.term(old), term, "pre-vote kept the isolated peer's term");
    let new_term = s.term(new);
    s.heal_links();
    s.run_for(20 * t).unwrap();
    assert_eq!(s.leader(), Some(new));
    assert_eq!(s.term(new), new_term, "the rejoining peer did not disrupt");
}
