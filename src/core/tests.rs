//! Core tests: a small scripted cluster (this file) and scenario tests in the Raft paper's
//! terms (`tests/*_tests.rs`). The cluster is fully manual: the test says when messages are
//! delivered, dropped or reordered, when persistence completes and when time passes, so each
//! scenario reads as a script.

mod election_tests;
mod figure8_tests;
mod membership_tests;
mod read_tests;
mod replication_tests;
mod snapshot_tests;
mod transfer_tests;

use std::collections::{BTreeSet, VecDeque};

use super::message::{AppendEntriesRequest, EntryMeta, Message};
use super::*;
use crate::logging::discard_logger;
use crate::types::{EntryType, LogRead};

pub(super) const T: u64 = 100;

/// One peer: its core, its log of LogIds and what is durable.
pub(super) struct Node {
    pub core: RaftCore,
    pub id: PeerId,
    /// The shell's log (index i at position i - 1).
    pub log: Vec<LogId>,
    pub durable_log: Vec<LogId>,
    pub durable_hs: HardState,
    /// Persistence reports not yet given to the core, in order.
    pub pending: VecDeque<Event<'static>>,
    /// Indexes handed out as committed, in order.
    pub applied: Vec<u64>,
    pub timers: [Option<u64>; 4],
    pub up: bool,
    /// The configurations of the configuration entries in `log`, by index.
    pub confs: std::collections::BTreeMap<u64, Configuration>,
    /// The last index of a snapshot installed in this life (entries before it are never
    /// handed out).
    pub installed: u64,
    /// Answers to requests and snapshot decisions, in order (reads, transfers, changes,
    /// compactions, installs), for the tests to inspect.
    pub outcomes: Vec<Action>,
}

impl LogRead for Vec<LogId> {
    fn first_index(&self) -> u64 {
        1
    }
    fn last_index(&self) -> u64 {
        self.len() as u64
    }
    fn term_at(&self, index: u64) -> Option<u64> {
        match index {
            0 => Some(0),
            i => self.get(i as usize - 1).map(|id| id.term),
        }
    }
}

pub(super) fn peer(i: usize) -> PeerId {
    format!("10.0.0.{}:8000:0", i + 1).parse().unwrap()
}

pub(super) fn options(i: usize) -> CoreOptions {
    let mut o = CoreOptions::new(peer(i));
    o.election_timeout_ms = T;
    o.max_clock_drift_ms = 10;
    o.heartbeat_interval_ms = 10;
    o.max_inflight_appends = 4;
    o.max_entries_per_append = 8;
    o
}

/// A manual cluster of `n` peers.
pub(super) struct Cluster {
    pub nodes: Vec<Node>,
    pub now: u64,
    /// Messages in flight, in send order: (from, to, message).
    pub net: VecDeque<(usize, usize, Message)>,
    /// Persistence completes at once when true; otherwise tests call `persist`.
    pub auto_persist: bool,
    /// Links that drop everything, (from, to).
    pub cut: BTreeSet<(usize, usize)>,
    pub opts: fn(usize) -> CoreOptions,
    /// The first configuration: peers `0..voters`; the others are spares.
    pub voters: usize,
}

impl Cluster {
    pub fn new(n: usize) -> Cluster {
        Cluster::with_options(n, options)
    }

    pub fn with_options(n: usize, opts: fn(usize) -> CoreOptions) -> Cluster {
        Cluster::with_spares(n, 0, opts)
    }

    /// `voters` peers in the first configuration and `spares` more outside it.
    pub fn with_spares(voters: usize, spares: usize, opts: fn(usize) -> CoreOptions) -> Cluster {
        let n = voters + spares;
        let mut c = Cluster {
            nodes: Vec::new(),
            now: 0,
            net: VecDeque::new(),
            auto_persist: true,
            cut: BTreeSet::new(),
            opts,
            voters,
        };
        for i in 0..n {
            let core = c.make_core(i, &Vec::new(), HardState::default(), 0);
            c.nodes.push(Node {
                core,
                id: peer(i),
                log: Vec::new(),
                durable_log: Vec::new(),
                durable_hs: HardState::default(),
                pending: VecDeque::new(),
                applied: Vec::new(),
                timers: [None; 4],
                up: true,
                confs: Default::default(),
                installed: 0,
                outcomes: Vec::new(),
            });
            c.start(i);
        }
        c
    }

    /// A core over `log` (durable), restoring the configurations that log holds after the
    /// first one, as a shell does at init.
    fn make_core(&self, i: usize, log: &Vec<LogId>, hs: HardState, applied: u64) -> RaftCore {
        let mut configurations = vec![(0, Configuration::new((0..self.voters).map(peer)))];
        if let Some(node) = self.nodes.get(i) {
            let held = |k: &u64| {
                *k <= log.len() as u64 && node.log.get(*k as usize - 1) == log.get(*k as usize - 1)
            };
            configurations.extend(
                node.confs
                    .iter()
                    .filter(|(k, _)| held(k))
                    .map(|(k, c)| (*k, c.clone())),
            );
        }
        let init = InitialState {
            hard_state: hs,
            configurations,
            applied_index: applied,
            snapshot: LogId::default(),
            snapshot_conf: Configuration::default(),
        };
        RaftCore::new(
            (self.opts)(i),
            init,
            log,
            Rng::new(i as u64 + 1),
            discard_logger(),
        )
        .unwrap()
    }

    fn start(&mut self, i: usize) {
        let now = self.now;
        let actions: Vec<Action> = self.nodes[i].core.start(now).drain().collect();
        self.carry_out(i, actions, None);
        if self.auto_persist {
            self.persist(i);
        }
    }

    /// Steps `event` on node `i` and carries out the actions (and, with auto-persist, the
    /// persistence reports they cause).
    pub fn step(&mut self, i: usize, event: Event<'_>) {
        let metas = match event {
            Event::Message {
                msg: Message::AppendEntries(req),
                ..
            } => Some(req.entries.clone()),
            _ => None,
        };
        let now = self.now;
        let actions: Vec<Action> = self.nodes[i].core.step(now, event).drain().collect();
        self.carry_out(i, actions, metas.as_deref());
        self.nodes[i].core.check_invariants().unwrap();
        if self.auto_persist {
            self.persist(i);
        }
    }

    /// Completes node `i`'s outstanding persistence, reporting it in order.
    pub fn persist(&mut self, i: usize) {
        while let Some(ev) = self.nodes[i].pending.pop_front() {
            match ev {
                Event::HardStatePersisted(hs) => self.nodes[i].durable_hs = hs,
                Event::LogDurable(id) => {
                    let n = id.index as usize;
                    if self.nodes[i].log.get(n.wrapping_sub(1)) == Some(&id) || n == 0 {
                        self.nodes[i].durable_log = self.nodes[i].log[..n].to_vec();
                    }
                }
                _ => {}
            }
            let now = self.now;
            let actions: Vec<Action> = self.nodes[i].core.step(now, ev).drain().collect();
            self.carry_out(i, actions, None);
            self.nodes[i].core.check_invariants().unwrap();
        }
    }

    fn carry_out(&mut self, i: usize, actions: Vec<Action>, metas: Option<&[EntryMeta]>) {
        for a in actions {
            let node = &mut self.nodes[i];
            match a {
                Action::PersistHardState(hs) => {
                    node.pending.push_back(Event::HardStatePersisted(hs))
                }
                Action::TruncateLog { after } => {
                    node.log.truncate(after as usize);
                    node.confs.retain(|k, _| *k <= after);
                }
                Action::AppendReceived { range } => {
                    let metas = metas.expect("AppendReceived without a message");
                    for m in &metas[range.clone()] {
                        if let Some(c) = &m.conf {
                            node.confs.insert(m.id.index, (**c).clone());
                        }
                    }
                    node.log.extend(metas[range].iter().map(|m| m.id));
                    node.pending
                        .push_back(Event::LogDurable(*node.log.last().unwrap()));
                }
                Action::AppendProposals { first_index, last } => {
                    assert_eq!(first_index, node.log.len() as u64 + 1);
                    node.log
                        .extend((first_index..=last.index).map(|x| LogId::new(x, last.term)));
                    node.pending.push_back(Event::LogDurable(last));
                }
                Action::AppendNoOp(id) => {
                    assert_eq!(id.index, node.log.len() as u64 + 1);
                    node.log.push(id);
                    node.pending.push_back(Event::LogDurable(id));
                }
                Action::Send { to, msg } => self.send(i, to, msg),
                Action::AppendConfiguration { id, conf } => {
                    assert_eq!(id.index, node.log.len() as u64 + 1);
                    node.log.push(id);
                    node.confs.insert(id.index, conf);
                    node.pending.push_back(Event::LogDurable(id));
                }
                Action::SendAppend { to, send } => {
                    let entries = (send.prev.index + 1..=send.last_index)
                        .map(|x| {
                            let conf = node.confs.get(&x).cloned().map(Box::new);
                            let kind = match conf {
                                Some(_) => EntryType::Configuration,
                                None => EntryType::Data,
                            };
                            EntryMeta {
                                id: node.log[x as usize - 1],
                                kind,
                                conf,
                            }
                        })
                        .collect();
                    let req = AppendEntriesRequest {
                        term: send.term,
                        prev: send.prev,
                        commit: send.commit,
                        sent_ms: send.sent_ms,
                        round: send.round,
                        entries,
                    };
                    self.send(i, to, Message::AppendEntries(req));
                }
                Action::Committed {
                    first_index,
                    last_index,
                } => {
                    let next = node.applied.last().map_or(node.installed + 1, |l| l + 1);
                    assert_eq!(next, first_index);
                    node.applied.extend(first_index..=last_index);
                }
                Action::SetTimer { timer, at_ms } => node.timers[timer.index()] = Some(at_ms),
                Action::StopTimer(timer) => node.timers[timer.index()] = None,
                Action::RoleChanged { .. } | Action::RejectProposals { .. } => {}
                Action::ReadReady { .. }
                | Action::RejectRead { .. }
                | Action::TransferDone { .. }
                | Action::ConfChangeDone { .. }
                | Action::CompactLog { .. }
                | Action::InstallSnapshot { .. } => node.outcomes.push(a),
            }
        }
    }

    fn send(&mut self, from: usize, to: PeerId, msg: Message) {
        let to = self.index_of(to);
        self.net.push_back((from, to, msg));
    }

    pub fn index_of(&self, p: PeerId) -> usize {
        self.nodes.iter().position(|n| n.id == p).unwrap()
    }

    /// Delivers every message in flight (and those they cause) in order, dropping cut links
    /// and messages to crashed peers.
    pub fn deliver_all(&mut self) {
        let mut budget = 100_000;
        while let Some((from, to, msg)) = self.net.pop_front() {
            budget -= 1;
            assert!(budget > 0, "messages never settle");
            if self.cut.contains(&(from, to)) || !self.nodes[to].up || !self.nodes[from].up {
                continue;
            }
            let from_id = self.nodes[from].id;
            self.step(
                to,
                Event::Message {
                    from: from_id,
                    msg: &msg,
                },
            );
        }
    }

    /// Delivers only the messages matching `pick`; the rest stay in flight, in order.
    pub fn deliver_if(&mut self, pick: impl Fn(usize, usize, &Message) -> bool) {
        let batch: Vec<_> = self.net.drain(..).collect();
        let mut keep = VecDeque::new();
        for (from, to, msg) in batch {
            if !pick(from, to, &msg) {
                keep.push_back((from, to, msg));
                continue;
            }
            if self.cut.contains(&(from, to)) || !self.nodes[to].up {
                continue;
            }
            let from_id = self.nodes[from].id;
            self.step(
                to,
                Event::Message {
                    from: from_id,
                    msg: &msg,
                },
            );
        }
        keep.extend(self.net.drain(..));
        self.net = keep;
    }

    /// Delivers until quiet, dropping every message `drop` selects (checked when delivered).
    pub fn deliver_all_dropping(&mut self, mut drop: impl FnMut(usize, usize, &Message) -> bool) {
        let mut budget = 10_000;
        while !self.net.is_empty() {
            budget -= 1;
            assert!(budget > 0, "messages never settle");
            let (from, to, msg) = self.net.pop_front().unwrap();
            if drop(from, to, &msg) || self.cut.contains(&(from, to)) || !self.nodes[to].up {
                continue;
            }
            let from_id = self.nodes[from].id;
            self.step(
                to,
                Event::Message {
                    from: from_id,
                    msg: &msg,
                },
            );
        }
    }

    /// Advances time to `now + ms`, firing every due timer in deadline order, delivering
    /// messages between firings.
    pub fn advance(&mut self, ms: u64) {
        let end = self.now + ms;
        loop {
            let next = (0..self.nodes.len())
                .filter(|i| self.nodes[*i].up)
                .flat_map(|i| TimerKind::ALL.map(|k| (self.nodes[i].timers[k.index()], i, k)))
                .filter_map(|(at, i, k)| at.map(|at| (at, i, k)))
                .filter(|(at, _, _)| *at <= end)
                .min();
            let Some((at, i, k)) = next else { break };
            self.now = self.now.max(at);
            self.nodes[i].timers[k.index()] = None;
            self.step(i, Event::Timeout(k));
            self.deliver_all();
        }
        self.now = end;
    }

    /// Makes node `i`'s election timeout expire now (time moves past its deadline and every
    /// lease it could have started), without delivering anything.
    pub fn expire_election_timer(&mut self, i: usize) {
        self.nodes[i].timers[TimerKind::Election.index()] = None;
        let due = self.nodes[i].core.timers.election_base_ms + 2 * T;
        self.now = self.now.max(due);
        self.nodes[i].core.timers.armed[TimerKind::Election.index()] = Some(self.now);
        self.step(i, Event::Timeout(TimerKind::Election));
    }

    /// Makes node `i` campaign now and delivers until quiet.
    pub fn campaign(&mut self, i: usize) {
        self.expire_election_timer(i);
        self.deliver_all();
    }

    /// Replaces node `i` with a fresh core over `log` (all durable) and hard state `hs`.
    pub fn reset_node(&mut self, i: usize, log: Vec<LogId>, hs: HardState) {
        self.nodes[i].durable_log = log;
        self.nodes[i].durable_hs = hs;
        self.restart(i);
    }

    pub fn isolate(&mut self, i: usize) {
        for j in 0..self.nodes.len() {
            if j != i {
                self.cut.insert((i, j));
                self.cut.insert((j, i));
            }
        }
    }

    pub fn heal(&mut self) {
        self.cut.clear();
    }

    pub fn crash(&mut self, i: usize) {
        self.nodes[i].up = false;
        self.nodes[i].pending.clear();
        self.net.retain(|(_, to, _)| *to != i);
    }

    /// Restarts node `i` from its durable log and hard state.
    pub fn restart(&mut self, i: usize) {
        let log = self.nodes[i].durable_log.clone();
        let hs = self.nodes[i].durable_hs;
        let core = self.make_core(i, &log, hs, 0);
        let node = &mut self.nodes[i];
        node.core = core;
        node.confs.retain(|k, _| *k <= log.len() as u64);
        node.log = log;
        node.applied.clear();
        node.installed = 0;
        node.timers = [None; 4];
        node.up = true;
        self.start(i);
    }

    pub fn propose(&mut self, i: usize, count: u64) {
        self.step(i, Event::Propose { count });
    }

    pub fn leaders(&self) -> Vec<usize> {
        (0..self.nodes.len())
            .filter(|i| self.nodes[*i].up && self.nodes[*i].core.role() == Role::Leader)
            .collect()
    }

    pub fn core(&self, i: usize) -> &RaftCore {
        &self.nodes[i].core
    }

    /// Takes node `i`'s answers and snapshot decisions so far.
    pub fn outcomes(&mut self, i: usize) -> Vec<Action> {
        std::mem::take(&mut self.nodes[i].outcomes)
    }

    /// Elects node `i` and lets its no-op commit everywhere.
    pub fn elect(&mut self, i: usize) {
        self.campaign(i);
        self.advance(3 * self.heartbeat());
        assert_eq!(self.core(i).role(), Role::Leader);
        assert!(self.core(i).noop_committed());
    }

    pub fn heartbeat(&self) -> u64 {
        (self.opts)(0).heartbeat_interval_ms
    }
}

/// A configuration of peers `ids` as voters and `learners` as learners.
pub(super) fn conf_of(ids: &[usize], learners: &[usize]) -> Configuration {
    Configuration::from_parts(
        ids.iter().map(|i| peer(*i)).collect(),
        learners.iter().map(|i| peer(*i)).collect(),
        BTreeSet::new(),
    )
    .unwrap()
}

#[test]
fn a_lone_voter_elects_itself_at_start_once_its_vote_is_durable() {
    let mut c = Cluster::new(1);
    assert_eq!(
        c.core(0).role(),
        Role::Leader,
        "auto-persist reported the vote"
    );
    assert_eq!(c.core(0).term(), 1);
    c.propose(0, 3);
    assert_eq!(
        c.core(0).commit_index(),
        4,
        "no-op + 3 entries, quorum of one"
    );
    assert_eq!(c.nodes[0].applied, vec![1, 2, 3, 4]);
}

#[test]
fn early_and_stale_timer_firings_change_nothing() {
    let mut c = Cluster::new(3);
    let at = c.nodes[0].timers[TimerKind::Election.index()].unwrap();
    let actions: Vec<Action> = c.nodes[0]
        .core
        .step(at - 1, Event::Timeout(TimerKind::Election))
        .drain()
        .collect();
    assert_eq!(
        actions,
        vec![Action::SetTimer {
            timer: TimerKind::Election,
            at_ms: at
        }],
        "early: re-armed"
    );
    let actions: Vec<Action> = c.nodes[0]
        .core
        .step(at, Event::Timeout(TimerKind::Heartbeat))
        .drain()
        .collect();
    assert!(actions.is_empty(), "never armed: ignored");
    assert_eq!(c.core(0).role(), Role::Follower);
}

#[test]
fn a_restarted_core_rebuilds_its_log_shape_and_commits_nothing_twice() {
    let mut c = Cluster::new(3);
    c.campaign(0);
    c.propose(0, 5);
    c.deliver_all();
    c.advance(20);
    let leader_log = c.nodes[0].log.clone();
    c.crash(1);
    c.restart(1);
    assert_eq!(c.core(1).last_log_id(), *leader_log.last().unwrap());
    assert_eq!(
        c.core(1).commit_index(),
        0,
        "commit is learned again from the leader"
    );
    c.advance(20);
    assert_eq!(c.core(1).commit_index(), 6);
    assert_eq!(c.nodes[1].applied, (1..=6).collect::<Vec<_>>());
}

#[test]
fn bad_options_are_refused_with_the_reason() {
    let mut o = options(0);
    o.max_clock_drift_ms = T;
    let err = o.validate().unwrap_err().to_string();
    assert!(err.contains("max_clock_drift_ms"), "{err}");
    let mut o = options(0);
    o.heartbeat_interval_ms = 0;
    assert!(o
        .validate()
        .unwrap_err()
        .to_string()
        .contains("heartbeat_interval_ms"));
}

#[test]
fn persistence_reports_that_go_backwards_or_were_never_asked_are_ignored() {
    let mut c = Cluster::new(3);
    c.auto_persist = false;
    c.expire_election_timer(0); // pre-vote: nothing to persist yet
    c.deliver_all();
    let me = peer(0);
    let voted = HardState {
        term: 1,
        voted_for: Some(me),
    };
    assert_eq!(c.core(0).hard_state(), voted);
    let never = HardState {
        term: 1,
        voted_for: Some(peer(2)),
    };
    c.step(0, Event::HardStatePersisted(never));
    assert!(c.net.is_empty(), "a state never asked for releases nothing");
    c.step(0, Event::HardStatePersisted(voted));
    assert!(
        !c.net.is_empty(),
        "the vote requests go out once the vote is durable"
    );
    c.net.clear();
    c.step(
        0,
        Event::HardStatePersisted(HardState {
            term: 1,
            voted_for: None,
        }),
    );
    assert_eq!(
        c.nodes[0].core.persisted, voted,
        "an older report never replaces a newer one"
    );
}

#[test]
fn an_unreachable_follower_is_probed_again() {
    let mut c = Cluster::new(3);
    c.campaign(0);
    c.propose(0, 3);
    c.deliver_all();
    assert_eq!(
        c.core(0).progress(&peer(1)).unwrap().state,
        ProgressState::Replicate
    );
    c.step(0, Event::PeerUnreachable(peer(1)));
    let pr = c.core(0).progress(&peer(1)).unwrap();
    assert_eq!(pr.state, ProgressState::Probe);
    assert_eq!(pr.next_index, pr.match_index + 1);
}
