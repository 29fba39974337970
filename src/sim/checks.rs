//! The simulator's safety checks, from cheap (after every step) to full (every K steps and at
//! the end). Each returns an error describing the first violation.
//!
//! Cheap: at most one leader per term; a peer's term and vote never go backwards (in memory
//! within a life, on disk across lives); applied <= committed <= last; every newly committed
//! entry agrees with every entry ever committed at its index; a new leader of term T holds
//! every entry committed in a term before T (leader completeness); nothing is promised before
//! it is durable (a vote grant, an acknowledgement, a leadership); a commit is safe (no peer
//! lacking the entry could still be elected). Full: every peer's committed prefix agrees with the
//! committed history; every committed entry is on the disks of a majority; log matching
//! between every pair of peers.

use std::collections::BTreeMap;

use crate::core::message::{AppendEntriesResponse, Message, VoteResponse};
use crate::core::{HardState, Role};
use crate::sim::node::{SimEntry, SimNode};
use crate::types::{LogId, PeerId};

/// What the checker remembers across steps.
#[derive(Default)]
pub struct Checker {
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

impl Checker {
    /// A checker for `n` peers.
    pub fn new(n: usize) -> Checker {
        Checker {
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
        let last = core.last_log_id().index;
        if node.applied > commit || commit > last || last != node.log.len() as u64 {
            return Err(format!(
                "peer {i}: applied {} commit {commit} last {last} (shell log {})",
                node.applied,
                node.log.len()
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
            let id = node.log[index as usize - 1].id;
            match self.committed.get(index as usize - 1) {
                Some(c) if *c != id => {
                    return Err(format!(
                        "peer {i}: committed {id} where {c} was committed before"
                    ))
                }
                Some(_) => {}
                None => {
                    self.committed.push(id);
                    self.committed_in_term.push(node.core().term());
                }
            }
        }
        let leading = node.core().role() == Role::Leader;
        self.commit_seen[i] = (node.life, commit.max(from), leading);
        Ok(())
    }

    /// The commit-safety oracle, after a leader's commit advanced to `commit`: a peer that
    /// lacks the committed entry must not be electable, i.e. fewer than a majority may hold a
    /// durable log no newer than its log. In Raft the commit majority durably holds an entry of
    /// the leader's term at or after `commit`, newer than any log lacking it; an entry of an
    /// earlier term committed by counting replicas (figure 8) fails this at once.
    pub fn check_commit_safety(&self, commit: u64, nodes: &[SimNode]) -> Result<(), String> {
        let Some(entry) = self.committed.get(commit as usize - 1).copied() else {
            return Ok(());
        };
        let majority = nodes.len() / 2 + 1;
        let last_of = |n: &SimNode| {
            let log = if n.is_up() { &n.log } else { &n.durable_log };
            log.last().map_or(LogId::default(), |e| e.id)
        };
        for (c, cand) in nodes.iter().enumerate() {
            let log = if cand.is_up() {
                &cand.log
            } else {
                &cand.durable_log
            };
            if log.get(commit as usize - 1).map(|e| e.id) == Some(entry) {
                continue;
            }
            let cand_last = last_of(cand);
            let voters = nodes
                .iter()
                .filter(|v| v.durable_log.last().map_or(LogId::default(), |e| e.id) <= cand_last)
                .count();
            if voters >= majority {
                return Err(format!(
                    "committed {entry} is unsafe: peer {c} lacks it yet {voters} peers would elect \
                     it (its last {cand_last})"
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
        // Leader completeness: every entry committed in an earlier term. (An election delayed
        // in the network may make a leader of term T after term T + 1 committed more.)
        for (k, c) in self.committed.iter().enumerate() {
            if self.committed_in_term[k] < term && node.log.get(k).map(|e| e.id) != Some(*c) {
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
                let n = *index as usize;
                if node.durable_log.len() < n || node.durable_log[..n] != node.log[..n] {
                    return Err(format!(
                        "peer {i}: acknowledged index {index} before it was durable"
                    ));
                }
            }
            _ => {}
        }
        Ok(())
    }

    /// The full checks over every peer.
    pub fn full(&self, nodes: &[SimNode]) -> Result<(), String> {
        for (i, node) in nodes.iter().enumerate() {
            let Some(core) = node.core.as_ref() else {
                continue;
            };
            let commit = core.commit_index() as usize;
            for (k, e) in node.log[..commit].iter().enumerate() {
                if self.committed.get(k) != Some(&e.id) {
                    return Err(format!(
                        "peer {i}: committed prefix differs at index {}",
                        k + 1
                    ));
                }
            }
        }
        self.committed_on_a_majority_of_disks(nodes)?;
        for a in 0..nodes.len() {
            for b in a + 1..nodes.len() {
                log_matching(&nodes[a].log, &nodes[b].log)
                    .map_err(|e| format!("peers {a} and {b}: {e}"))?;
            }
        }
        Ok(())
    }

    fn committed_on_a_majority_of_disks(&self, nodes: &[SimNode]) -> Result<(), String> {
        let majority = nodes.len() / 2 + 1;
        for (k, c) in self.committed.iter().enumerate() {
            let holders = nodes
                .iter()
                .filter(|n| n.durable_log.get(k).map(|e| e.id) == Some(*c))
                .count();
            if holders < majority {
                return Err(format!(
                    "committed entry {c} is durable on only {holders} peers"
                ));
            }
        }
        Ok(())
    }
}

/// Raft's log matching property: if two logs hold an entry with the same LogId, they are
/// identical up to it.
pub fn log_matching(a: &[SimEntry], b: &[SimEntry]) -> Result<(), String> {
    let common = a.len().min(b.len());
    let first_diff = (0..common).find(|k| a[*k] != b[*k]).unwrap_or(common);
    for k in first_diff..common {
        if a[k].id == b[k].id {
            return Err(format!(
                "both hold {} but differ at index {}",
                a[k].id,
                first_diff + 1
            ));
        }
    }
    Ok(())
}
