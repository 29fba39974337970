//! Leader transfer (Raft thesis section 3.10): proposals are refused while it runs, the
//! target is brought up to date before TimeoutNow, the target wins the next term, and a
//! transfer that does not finish within an election timeout is abandoned.

use super::*;
use crate::error::RaftError;

fn transfer(c: &mut Cluster, from: usize, to: usize) {
    let ctx = to as u64;
    c.step(from, Event::TransferLeader { ctx, to: peer(to) });
}

fn done(outcomes: &[Action]) -> Vec<Result<(), RaftError>> {
    outcomes
        .iter()
        .filter_map(|a| match a {
            Action::TransferDone { result, .. } => Some(result.clone()),
            _ => None,
        })
        .collect()
}

/// A lagging target first receives the leader's whole log; TimeoutNow follows; it wins the
/// next term with the log intact, and the old leader reports the transfer done.
#[test]
fn a_lagging_target_catches_up_then_takes_over() {
    let mut c = Cluster::new(3);
    c.elect(0);
    c.cut.insert((0, 2));
    c.propose(0, 5);
    c.deliver_all();
    let last = c.core(0).last_log_id();
    transfer(&mut c, 0, 2);
    c.propose(0, 1);
    assert_eq!(
        c.core(0).last_log_id(),
        last,
        "proposals refused while transferring"
    );
    assert!(
        !c.net
            .iter()
            .any(|(_, _, m)| matches!(m, Message::TimeoutNow(_))),
        "no TimeoutNow before the target caught up"
    );
    c.heal();
    c.advance(3 * c.heartbeat());
    assert_eq!(c.leaders(), vec![2]);
    assert!(c.core(2).term() > c.core(0).term() - 1);
    assert!(
        c.core(2).last_log_id().index > last.index,
        "its log held every entry"
    );
    assert_eq!(done(&c.outcomes(0)), vec![Ok(())]);
}

/// A target that never answers: the leader resumes after an election timeout.
#[test]
fn a_transfer_to_a_dead_target_is_abandoned_after_an_election_timeout() {
    let mut c = Cluster::new(3);
    c.elect(0);
    c.crash(2);
    c.propose(0, 1);
    c.deliver_all();
    transfer(&mut c, 0, 2);
    c.advance(T / 2);
    assert!(done(&c.outcomes(0)).is_empty(), "still trying");
    c.advance(T);
    assert_eq!(done(&c.outcomes(0)), vec![Err(RaftError::Timeout)]);
    assert_eq!(c.leaders(), vec![0]);
    let last = c.core(0).last_log_id();
    c.propose(0, 1);
    assert_eq!(
        c.core(0).last_log_id().index,
        last.index + 1,
        "proposals taken again"
    );
}

/// Refusals: a follower, a target outside the voters, a second transfer; and a transfer to
/// the leader itself is done at once.
#[test]
fn transfers_that_cannot_run_are_refused() {
    let mut c = Cluster::new(3);
    c.elect(0);
    transfer(&mut c, 1, 2);
    assert!(matches!(
        &done(&c.outcomes(1))[..],
        [Err(RaftError::NotLeader { .. })]
    ));
    c.step(
        0,
        Event::TransferLeader {
            ctx: 7,
            to: peer(7),
        },
    );
    assert!(matches!(
        &done(&c.outcomes(0))[..],
        [Err(RaftError::Invalid { .. })]
    ));
    transfer(&mut c, 0, 0);
    assert_eq!(done(&c.outcomes(0)), vec![Ok(())]);
    c.cut.insert((0, 1));
    c.propose(0, 1);
    transfer(&mut c, 0, 1);
    transfer(&mut c, 0, 2);
    assert_eq!(done(&c.outcomes(0)), vec![Err(RaftError::Busy)]);
}
