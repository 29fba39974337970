//! The node's API beyond `apply`: linearizable reads ([`Node::read_index`]), the leader
//! lease, leader transfer and membership changes. Each call only enqueues on the node's
//! queue; the core decides, and the completion runs once with the outcome (reads on the fsm
//! pool after the state machine caught up, the others on the raft pool). The `*_wait`
//! forms block the calling thread for synchronous callers; never call them from a state
//! machine callback.

use crossbeam::channel;

use super::event::{NodeEvent, PeerChange};
use super::timers::now_ms;
use super::{active, Node};
use crate::error::{RaftError, Result};
use crate::types::{Configuration, PeerId};

/// Blocks until a completion fills `rx`; a completion dropped unrun means the node stopped.
fn wait<T>(rx: channel::Receiver<Result<T>>) -> Result<T> {
    rx.recv().unwrap_or(Err(RaftError::Stopped))
}

impl Node {
    /// A linearizable read barrier. `done` runs on the fsm pool once this node, as leader,
    /// has confirmed its leadership after the call (a heartbeat round acknowledged by a
    /// quorum, or the leader lease when valid and `lease_reads` is on) and its state machine
    /// has applied every entry committed before the call. `done` gets the applied index;
    /// reading the state machine from `done` (or after it) sees every write acknowledged
    /// before the call. Fails with `NotLeader { leader }` off the leader or if leadership is
    /// lost first, `Stopped` at shutdown. Reads arriving together share one round.
    pub fn read_index(&self, done: impl FnOnce(Result<u64>) + Send + 'static) {
        if let Err(e) = active(&self.shared) {
            return done(Err(e));
        }
        self.shared.submit(NodeEvent::Read(Box::new(done)));
    }

    /// [`Node::read_index`], blocking until the read may be served.
    pub fn read_index_wait(&self) -> Result<u64> {
        let (tx, rx) = channel::bounded(1);
        self.read_index(move |r| {
            let _ = tx.send(r);
        });
        wait(rx)
    }

    /// True while this node leads with a valid lease: a quorum acknowledged it recently
    /// enough that no other leader can exist yet (clocks within `max_clock_drift_ms`). A
    /// read served locally while this holds is linearizable, without a round trip; braft's
    /// `is_leader_lease_valid`. False until this node's state machine has applied the
    /// term's first entry, so a local read also sees every write earlier leaders acknowledged.
    pub fn is_leader_lease_valid(&self) -> bool {
        if active(&self.shared).is_err() {
            return false;
        }
        // The caller reads its state machine next, so the lease only counts once the
        // machine holds the term's no-op: then it holds every entry an earlier leader
        // acknowledged. Read before the core lock (the two locks never nest); the applied
        // index only grows, so an early read is the conservative one.
        let applied_term = match self.shared.parts() {
            Some(parts) => parts.fsm.last_applied().term,
            None => return false,
        };
        let now = now_ms();
        let mut core = self.shared.core.lock();
        core.as_mut()
            .filter(|c| c.term() == applied_term)
            .and_then(|c| c.leader_lease_until_ms())
            .is_some_and(|until| now < until)
    }

    /// Hands leadership to the voter `peer`: proposals answer `Busy` meanwhile, `peer` is
    /// brought up to date and told to campaign. `done` gets `Ok` once leadership left this
    /// node, `Timeout` if `peer` did not take over within an election timeout (this node
    /// leads on), `NotLeader`, `Invalid` (not a voter) or `Busy` (a transfer or
    /// configuration change runs).
    pub fn transfer_leadership_to(
        &self,
        peer: PeerId,
        done: impl FnOnce(Result<()>) + Send + 'static,
    ) {
        if let Err(e) = active(&self.shared) {
            return done(Err(e));
        }
        self.shared
            .submit(NodeEvent::Transfer(peer, Box::new(done)));
    }

    /// [`Node::transfer_leadership_to`], blocking for the outcome.
    pub fn transfer_leadership_to_wait(&self, peer: PeerId) -> Result<()> {
        let (tx, rx) = channel::bounded(1);
        self.transfer_leadership_to(peer, move |r| {
            let _ = tx.send(r);
        });
        wait(rx)
    }

    /// Moves the group to `conf` (voters and learners) by joint consensus: new voters first
    /// catch up to within `catchup_margin` entries, then `C_old,new` and `C_new` commit in
    /// turn. `done` gets `Ok` once `conf` is committed; `Busy` while another change or a
    /// transfer runs, or before this leader's first commit; `Timeout` if a new voter stops
    /// catching up; `NotLeader` off the leader. A leader not in `conf` steps down once it
    /// commits.
    pub fn change_peers(
        &self,
        conf: Configuration,
        done: impl FnOnce(Result<()>) + Send + 'static,
    ) {
        self.change(PeerChange::Set(conf), Box::new(done));
    }

    /// Adds `peer` as a voter (a learner already present is promoted); see
    /// [`Node::change_peers`].
    pub fn add_peer(&self, peer: PeerId, done: impl FnOnce(Result<()>) + Send + 'static) {
        self.change(PeerChange::AddVoter(peer), Box::new(done));
    }

    /// Adds `peer` as a learner (it receives every entry, never votes or counts).
    pub fn add_learner(&self, peer: PeerId, done: impl FnOnce(Result<()>) + Send + 'static) {
        self.change(PeerChange::AddLearner(peer), Box::new(done));
    }

    /// Removes `peer`, voter or learner; see [`Node::change_peers`].
    pub fn remove_peer(&self, peer: PeerId, done: impl FnOnce(Result<()>) + Send + 'static) {
        self.change(PeerChange::Remove(peer), Box::new(done));
    }

    /// [`Node::change_peers`], blocking for the outcome.
    pub fn change_peers_wait(&self, conf: Configuration) -> Result<()> {
        self.change_wait(PeerChange::Set(conf))
    }

    /// [`Node::add_peer`], blocking for the outcome.
    pub fn add_peer_wait(&self, peer: PeerId) -> Result<()> {
        self.change_wait(PeerChange::AddVoter(peer))
    }

    /// [`Node::add_learner`], blocking for the outcome.
    pub fn add_learner_wait(&self, peer: PeerId) -> Result<()> {
        self.change_wait(PeerChange::AddLearner(peer))
    }

    /// [`Node::remove_peer`], blocking for the outcome.
    pub fn remove_peer_wait(&self, peer: PeerId) -> Result<()> {
        self.change_wait(PeerChange::Remove(peer))
    }

    /// Forces this node's configuration to `conf` without consensus (braft's `reset_peers`),
    /// for recovery when a majority of the group is lost for good: the node starts a new
    /// term under `conf` (alone in it, it leads at once) and logs `conf` when it leads. Not
    /// safe if the lost peers come back with their old configuration: use it only on peers
    /// that will never meet them again. The forced configuration lives in memory until it
    /// is logged; a restart before that returns to the logged one.
    pub fn reset_peers(&self, conf: Configuration, done: impl FnOnce(Result<()>) + Send + 'static) {
        if let Err(e) = active(&self.shared) {
            return done(Err(e));
        }
        self.shared
            .submit(NodeEvent::ResetPeers(conf, Box::new(done)));
    }

    /// [`Node::reset_peers`], blocking for the outcome.
    pub fn reset_peers_wait(&self, conf: Configuration) -> Result<()> {
        let (tx, rx) = channel::bounded(1);
        self.reset_peers(conf, move |r| {
            let _ = tx.send(r);
        });
        wait(rx)
    }

    /// Changes the election timeout `T` and the clock-drift bound at run time (braft's
    /// `reset_election_timeout_ms`): heartbeats become `T / 10`, leases and timers follow.
    /// The leader lease assumes the same `T` on every peer: change it on all of them (and
    /// turn `lease_reads` off meanwhile if reads must stay linearizable during the change).
    /// `Invalid` if the drift is not below `T` or `T` is outside 10 ms..=one hour
    /// ([`ELECTION_TIMEOUT_MAX_MS`](crate::node::options::ELECTION_TIMEOUT_MAX_MS)).
    pub fn reset_election_timeout_ms(
        &self,
        election_timeout_ms: u64,
        max_clock_drift_ms: u64,
    ) -> Result<()> {
        active(&self.shared)?;
        let mut check = crate::core::CoreOptions::new(self.shared.peer);
        check.election_timeout_ms = election_timeout_ms;
        check.max_clock_drift_ms = max_clock_drift_ms;
        check.heartbeat_interval_ms =
            crate::core::CoreOptions::default_heartbeat_ms(election_timeout_ms);
        check.validate()?;
        if election_timeout_ms < 10 {
            return Err(RaftError::invalid("election_timeout_ms must be >= 10"));
        }
        self.shared.submit(NodeEvent::SetElectionTimeout(
            election_timeout_ms,
            max_clock_drift_ms,
        ));
        Ok(())
    }

    /// braft's `vote`: gives this node the election timeout `election_timeout_ms` (the drift
    /// bound shrinks to stay below it) and restarts its election timer, so that a node given
    /// a short timeout campaigns first once the leader is gone. Unlike braft, it still waits
    /// out its follower lease before campaigning: skipping it would let the leader's lease
    /// reads go stale without the leader knowing.
    pub fn vote(&self, election_timeout_ms: u64) -> Result<()> {
        let drift = self.status_drift().min(election_timeout_ms / 2);
        self.reset_election_timeout_ms(election_timeout_ms, drift)
    }

    fn status_drift(&self) -> u64 {
        self.shared
            .with_core(|c| c.options().max_clock_drift_ms)
            .unwrap_or(0)
    }

    /// The configuration in force on this node (the newest in its log, committed or not).
    pub fn configuration(&self) -> Configuration {
        self.shared
            .with_core(|c| c.configuration().clone())
            .unwrap_or_default()
    }

    fn change(&self, change: PeerChange, done: crate::state_machine::Done) {
        if let Err(e) = active(&self.shared) {
            return done(Err(e));
        }
        self.shared.submit(NodeEvent::ChangePeers(change, done));
    }

    fn change_wait(&self, change: PeerChange) -> Result<()> {
        let (tx, rx) = channel::bounded(1);
        self.change(
            change,
            Box::new(move |r| {
                let _ = tx.send(r);
            }),
        );
        wait(rx)
    }
}
