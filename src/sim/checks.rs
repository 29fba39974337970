//! The simulator's safety checks, from cheap (after every step) to full (every K steps and at
//! the end). Each returns an error describing the first violation.
//!
//! Cheap: at most one leader per term; a leader is a voter of its configuration or of the
//! committed one; a peer's
//! term and vote never go backwards (in memory within a life, on disk across lives);
//! purged <= snapshot <= applied <= committed <= last; every newly committed entry agrees with
//! every entry ever committed at its index; a new leader of term T holds every entry committed
//! in a term before T (leader completeness); nothing is promised before it is durable (a vote
//! grant, an acknowledgement, a leadership); a commit is safe (no peer lacking the entry could
//! still be elected under its own configuration); a commit is durable on a majority of each
//! voter set of the leader's configuration (joint decisions need both). Full: every peer's
//! committed prefix agrees with the committed history; every committed entry is durable on a
//! majority of the newest settled configuration; log matching between every pair of peers.

use std::collections::{BTreeMap, BTreeSet, HashSet};

use crate::core::message::{AppendEntriesResponse, Message, VoteResponse};
use crate::core::{HardState, Role};
use crate::sim::node::{SimLog, SimNode};
use crate::types::{Configuration, LogId, PeerId};

/// What the checker remembers across steps.
#[derive(Default)]
pub struct Checker {
    /// The peers, by index.
    ids: Vec<PeerId>,
    /// The configuration the group started with.
    initial: Configuration,
    /// The leader of each term seen.
    leaders: BTreeMap<u64, usize>,
    /// Per peer: (life, term, vote) last seen in memory.
    seen: Vec<(u32, HardState)>,
    /// Per peer: the durable term/vote last seen.
    seen_durable: Vec<HardState>,
    /// Per peer: its commit index last seen in this life, and whether it was leader.
    commit_seen: Vec<(u32, u64, bool)>,
    /// Every entry ever committed, by index (index i at position i - 1).
    pub committed: Vec<LogId>,
    /// The client operations of the committed entries.
    pub committed_ops: HashSet<u64>,
    /// The term in which each entry was first seen committed (the committing leader's term:
    /// followers learn a commit only after their leader).
    committed_in_term: Vec<u64>,
    /// Leaders elected.
    pub elections: u64,
}

fn vote_advances(before: &HardState, after: &HardState) -> bool {
    after.term > before.term
        || (after.term == before.term
            && (before.voted_for.is_none() || before.voted_for == after.voted_for))
}

/// A majority of a voter set (an empty set places no constraint).
fn majority_of(half: &BTreeSet<PeerId>, count: impl Fn(&PeerId) -> bool) -> bool {
    half.is_empty() || half.iter().filter(|p| count(p)).count() > half.len() / 2
}

impl Checker {
    /// A checker for the peers `ids`, starting in configuration `initial`.
    pub fn new(ids: &[PeerId], initial: &Configuration) -> Checker {
        let n = ids.len();
        Checker {
            ids: ids.to_vec(),
            initial: initial.clone(),
            seen: vec![(0, HardState::default()); n],
            seen_durable: vec![HardState::default(); n],
            commit_seen: vec![(0, 0, false); n],
            ..Checker::default()
        }
    }

    /// The commit index last seen on peer `i` in its life `life`.
    pub fn commit_seen(&self, i: usize, life: u32) -> u64 {
        let (l, commit, _) = self.commit_seen[i];
        if l == life {
            commit
        } else {
            0
        }
    }

    fn node_of<'a>(&self, nodes: &'a [SimNode], p: &PeerId) -> Option<&'a SimNode> {
        self.ids.iter().position(|x| x == p).map(|k| &nodes[k])
    }

    /// The cheap checks after peer `i` stepped.
    pub fn after_step(&mut self, i: usize, node: &SimNode) -> Result<(), String> {
        let Some(core) = node.core.as_ref() else {
            return Ok(());
        };
        let hs = core.hard_state();
        let (life, before) = self.seen[i];
        if life == node.life && !vote_advances(&before, &hs) {
            return Err(format!(
                "peer {i}: term/vote went backwards: {before:?} -> {hs:?}"
            ));
        }
        self.seen[i] = (node.life, hs);
        if !vote_advances(&self.seen_durable[i], &node.durable_hs) {
            return Err(format!(
                "peer {i}: durable term/vote went backwards: {:?} -> {:?}",
                self.seen_durable[i], node.durable_hs
            ));
        }
        self.seen_durable[i] = node.durable_hs;
        let commit = core.commit_index();
        let last = core.last_log_id();
        let (purged, snapshot) = (node.log.base.index, node.snapshot_id().index);
        let ordered = purged <= snapshot
            && snapshot <= node.applied
            && node.applied <= commit
            && commit <= last.index;
        if !ordered || last != node.log.last_id() || core.first_index() != purged + 1 {
            return Err(format!(
                "peer {i}: purged {purged} snapshot {snapshot} applied {} commit {commit} last \
                 {last} (shell log {}..={}, core first {})",
                node.applied,
                node.log.base,
                node.log.last_id(),
                core.first_index()
            ));
        }
        self.check_new_commits(i, node, commit)?;
        if core.role() == Role::Leader {
            self.check_leader(i, node)?;
        }
        Ok(())
    }

    fn check_new_commits(&mut self, i: usize, node: &SimNode, commit: u64) -> Result<(), String> {
        let (life, seen, _) = self.commit_seen[i];
        let from = if life == node.life { seen } else { 0 };
        for index in from + 1..=commit {
            let Some(id) = node.log.id_at(index) else {
                // Covered by a snapshot: committed, and recorded when first committed.
                if index > self.committed.len() as u64 {
                    return Err(format!(
                        "peer {i}: committed {index}, which it does not hold and nobody \
                         committed before"
                    ));
                }
                continue;
            };
            match self.committed.get(index as usize - 1) {
                Some(c) if *c != id => {
                    return Err(format!(
                        "peer {i}: committed {id} where {c} was committed before"
                    ))
                }
                Some(_) => {}
                None if index == node.log.base.index => {
                    return Err(format!("peer {i}: its snapshot {id} was never committed"));
                }
                None => {
                    self.committed.push(id);
                    self.committed_in_term.push(node.core().term());
                    let op = node.log.get(index).and_then(|e| e.cmd).map(|c| c.op_id);
                    self.committed_ops.extend(op);
                }
            }
        }
        let leading = node.core().role() == Role::Leader;
        self.commit_seen[i] = (node.life, commit.max(from), leading);
        Ok(())
    }

    /// The log peer `c` would campaign with, and the configuration it would count votes in.
    fn candidate_view<'a>(&self, c: &'a SimNode) -> (&'a SimLog, Configuration) {
        match &c.core {
            Some(core) => (&c.log, core.configuration().clone()),
            None => (&c.durable_log, c.restored_configuration(&self.initial)),
        }
    }

    /// The newest log position peer `v` holds durably (its log or its snapshot).
    fn durable_last(v: &SimNode) -> LogId {
        v.durable_log.last_id().max(v.snapshot_id())
    }

    /// The commit-safety oracle, after a leader's commit advanced to `commit`: a peer that
    /// lacks the committed entry must not be electable, i.e. in some voter set of its own
    /// configuration fewer than a majority may hold a durable log no newer than its log. In
    /// Raft the commit quorum durably holds an entry of the leader's term at or after `commit`,
    /// newer than any log lacking it; an entry of an earlier term committed by counting
    /// replicas (figure 8) fails this at once.
    pub fn check_commit_safety(&self, commit: u64, nodes: &[SimNode]) -> Result<(), String> {
        let Some(entry) = self.committed.get(commit as usize - 1).copied() else {
            return Ok(());
        };
        for (c, cand) in nodes.iter().enumerate() {
            let (log, conf) = self.candidate_view(cand);
            if commit <= log.base.index || log.id_at(commit) == Some(entry) || conf.is_empty() {
                continue;
            }
            let cand_last = log.last_id();
            let would_vote = |p: &PeerId| {
                self.node_of(nodes, p)
                    .is_some_and(|v| Self::durable_last(v) <= cand_last)
            };
            let electable = [conf.voters(), conf.old_voters()]
                .iter()
                .all(|half| majority_of(half, would_vote));
            if electable {
                return Err(format!(
                    "committed {entry} is unsafe: peer {c} lacks it yet a majority of {conf} \
                     would elect it (its last {cand_last})"
                ));
            }
        }
        Ok(())
    }

    /// After leader `l`'s commit advanced from `before`: the newly committed entries are
    /// durable on a majority of every voter set of its configuration (both, when joint).
    pub fn check_commit_quorum(
        &self,
        l: usize,
        before: u64,
        nodes: &[SimNode],
    ) -> Result<(), String> {
        let core = nodes[l].core();
        let commit = core.commit_index();
        let Some(id) = nodes[l].log.id_at(commit) else {
            return Ok(());
        };
        let conf = core.configuration();
        let holds = |p: &PeerId| self.node_of(nodes, p).is_some_and(|v| v.holds_durably(id));
        for half in [conf.voters(), conf.old_voters()] {
            if !majority_of(half, holds) {
                return Err(format!(
                    "peer {l} committed {before}..={commit} in {conf}, but {id} is durable on \
                     no majority of {half:?}"
                ));
            }
        }
        Ok(())
    }

    fn check_leader(&mut self, i: usize, node: &SimNode) -> Result<(), String> {
        let core = node.core();
        let term = core.term();
        match self.leaders.get(&term) {
            Some(l) if *l != i => {
                return Err(format!("two leaders in term {term}: peers {l} and {i}"));
            }
            Some(_) => return Ok(()),
            None => {}
        }
        self.leaders.insert(term, i);
        self.elections += 1;
        let want = HardState {
            term,
            voted_for: Some(node.id),
        };
        if node.durable_hs != want {
            return Err(format!(
                "peer {i}: leader of term {term} before its vote is durable"
            ));
        }
        // Only a peer that votes in a configuration not known superseded may campaign: the
        // one in force at its commit index or a newer one in its log.
        let confs = core.configurations_since_commit();
        if !confs.iter().any(|c| c.is_voter(&node.id)) {
            let confs: Vec<String> = confs.iter().map(|c| c.to_string()).collect();
            return Err(format!(
                "peer {i}: leader of term {term} is a voter of none of its configurations \
                 since its commit index: {}",
                confs.join("; ")
            ));
        }
        // Leader completeness: every entry committed in an earlier term. (An election delayed
        // in the network may make a leader of term T after term T + 1 committed more.)
        let base = node.log.base;
        if base.index > 0 && self.committed.get(base.index as usize - 1) != Some(&base) {
            return Err(format!(
                "peer {i}: leader of term {term} starts after {base}, which was not committed"
            ));
        }
        for (k, c) in self.committed.iter().enumerate() {
            let index = k as u64 + 1;
            let holds = index <= base.index || node.log.id_at(index) == Some(*c);
            if self.committed_in_term[k] < term && !holds {
                return Err(format!(
                    "peer {i}: leader of term {term} lacks {c}, committed in term {}",
                    self.committed_in_term[k]
                ));
            }
        }
        Ok(())
    }

    /// Checks a message peer `i` is about to send: nothing it promises may be volatile.
    pub fn on_send(
        &self,
        i: usize,
        to: PeerId,
        msg: &Message,
        node: &SimNode,
    ) -> Result<(), String> {
        match msg {
            Message::VoteResponse(VoteResponse {
                term,
                granted: true,
                pre_vote: false,
            }) => {
                let hs = node.durable_hs;
                let durable = hs.term > *term || (hs.term == *term && hs.voted_for == Some(to));
                if !durable {
                    return Err(format!(
                        "peer {i}: granted its term-{term} vote to {to} before it was durable \
                         ({hs:?})"
                    ));
                }
            }
            Message::AppendEntriesResponse(AppendEntriesResponse {
                success: true,
                index,
                ..
            }) => {
                let durable = match node.log.id_at(*index) {
                    Some(id) => node.holds_durably(id),
                    None => *index <= node.snapshot_id().index,
                };
                if !durable {
                    return Err(format!(
                        "peer {i}: acknowledged index {index} before it was durable"
                    ));
                }
            }
            _ => {}
        }
        Ok(())
    }

    /// The full checks over every peer; `leader`, if given, is a working leader whose
    /// configuration tells which majority must hold the committed entries.
    pub fn full(&self, nodes: &[SimNode], leader: Option<usize>) -> Result<(), String> {
        for (i, node) in nodes.iter().enumerate() {
            let Some(core) = node.core.as_ref() else {
                continue;
            };
            for index in node.log.base.index.max(1)..=core.commit_index() {
                let id = node.log.id_at(index);
                if id.is_some() && self.committed.get(index as usize - 1) != id.as_ref() {
                    return Err(format!(
                        "peer {i}: committed prefix differs at index {index}"
                    ));
                }
            }
        }
        if let Some(l) = self.newest_leader(nodes, leader) {
            self.committed_on_a_majority_of_disks(nodes, l)?;
        }
        for a in 0..nodes.len() {
            for b in a + 1..nodes.len() {
                log_matching(&nodes[a].log, &nodes[b].log)
                    .map_err(|e| format!("peers {a} and {b}: {e}"))?;
            }
        }
        Ok(())
    }

    /// The up leader of the highest term, if its configuration is settled (stable and
    /// committed): every committed entry is then durable on a majority of it.
    fn newest_leader(&self, nodes: &[SimNode], hint: Option<usize>) -> Option<usize> {
        let leader = (0..nodes.len())
            .filter(|k| {
                nodes[*k]
                    .core
                    .as_ref()
                    .is_some_and(|c| c.role() == Role::Leader)
            })
            .max_by_key(|k| nodes[*k].core().term())
            .or(hint)?;
        let core = nodes[leader].core();
        let settled = core.configuration().is_stable()
            && core.configuration_index() <= core.commit_index()
            && core.term_at(core.commit_index()) == Some(core.term());
        settled.then_some(leader)
    }

    fn committed_on_a_majority_of_disks(&self, nodes: &[SimNode], l: usize) -> Result<(), String> {
        let core = nodes[l].core();
        let conf = core.configuration();
        let upto = (core.commit_index() as usize).min(self.committed.len());
        for c in &self.committed[..upto] {
            let holds = |p: &PeerId| self.node_of(nodes, p).is_some_and(|v| v.holds_durably(*c));
            if !majority_of(conf.voters(), holds) {
                return Err(format!(
                    "committed entry {c} is durable on no majority of {conf}"
                ));
            }
        }
        Ok(())
    }
}

/// Raft's log matching property: if two logs hold an entry with the same LogId, they are
/// identical up to it (compared where both hold entries).
pub fn log_matching(a: &SimLog, b: &SimLog) -> Result<(), String> {
    let from = a.base.index.max(b.base.index) + 1;
    let to = a.last_index().min(b.last_index());
    let mut first_diff = None;
    for index in from..=to {
        let (x, y) = (a.get(index), b.get(index));
        if x != y && first_diff.is_none() {
            first_diff = Some(index);
        }
        if let (Some(fd), Some(x), Some(y)) = (first_diff, x, y) {
            if x.id == y.id {
                return Err(format!("both hold {} but differ at index {fd}", x.id));
            }
        }
    }
    Ok(())
}
