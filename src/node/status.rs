//! [`NodeStatus`]: a snapshot of one node's state for users, tests and the Stat service.

use std::fmt;

use super::{Lifecycle, Node};
use crate::core::{ProgressState, Role};
use crate::error::RaftError;
use crate::types::{Configuration, GroupId, LogId, PeerId};

/// What the leader knows of one follower (braft's replicator status).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FollowerStatus {
    /// The follower.
    pub peer: PeerId,
    /// The highest index known to be durable on it and to match the leader's log.
    pub match_index: u64,
    /// The next index to send it.
    pub next_index: u64,
    /// Probing, pipelining, or waiting for a snapshot install.
    pub state: ProgressState,
    /// The last index of the snapshot offered to it, while it installs one.
    pub snapshot_offered: Option<u64>,
}

/// What a node is doing, read under its locks at one moment.
#[derive(Clone, Debug)]
pub struct NodeStatus {
    /// The group.
    pub group: GroupId,
    /// This peer.
    pub peer: PeerId,
    /// `None` before init and after join; the role otherwise.
    pub role: Option<Role>,
    /// The current term.
    pub term: u64,
    /// The leader known, if any.
    pub leader: Option<PeerId>,
    /// The commit index.
    pub commit_index: u64,
    /// The last applied entry.
    pub applied: LogId,
    /// The last log entry.
    pub last_log_id: LogId,
    /// The first index the log holds.
    pub first_log_index: u64,
    /// The configuration in force.
    pub conf: Configuration,
    /// Per follower (leader only): frames sent, entries sent, and the first index it needs
    /// that the log no longer holds (0: none; it then waits for a snapshot install).
    pub replicators: Vec<(PeerId, u64, u64, u64)>,
    /// Per follower (leader only): match and next index, replication state.
    pub followers: Vec<FollowerStatus>,
    /// The newest snapshot the node knows of (`(0, 0)`: none).
    pub snapshot: LogId,
    /// The snapshot this node installs from its leader, if it is installing one.
    pub installing: Option<LogId>,
    /// Tasks accepted by `apply` and not yet proposed.
    pub pending_applies: usize,
    /// Bytes of RaftService messages received and not yet handled
    /// (`NodeOptions::incoming_bytes_max` bounds it).
    pub incoming_bytes: usize,
    /// The node's error, in its error state.
    pub error: Option<RaftError>,
    /// Shut down (or never initialized).
    pub stopped: bool,
}

impl Node {
    /// The node's state now.
    pub fn status(&self) -> NodeStatus {
        let shared = &self.shared;
        let lifecycle = shared.state.lock().clone();
        let mut st = NodeStatus {
            group: shared.group.clone(),
            peer: shared.peer,
            role: None,
            term: 0,
            leader: None,
            commit_index: 0,
            applied: LogId::default(),
            last_log_id: LogId::default(),
            first_log_index: 0,
            conf: Configuration::default(),
            replicators: Vec::new(),
            followers: Vec::new(),
            snapshot: LogId::default(),
            installing: None,
            pending_applies: shared
                .pending_applies
                .load(std::sync::atomic::Ordering::Relaxed),
            incoming_bytes: shared.incoming.bytes(),
            error: match &lifecycle {
                Lifecycle::Error(e) => Some(e.clone()),
                _ => None,
            },
            stopped: matches!(lifecycle, Lifecycle::ShuttingDown | Lifecycle::New),
        };
        shared.with_core(|c| {
            st.role = Some(c.role());
            st.term = c.term();
            st.leader = c.leader();
            st.commit_index = c.commit_index();
            st.last_log_id = c.last_log_id();
            st.conf = c.configuration().clone();
            st.snapshot = c.snapshot();
            st.installing = c.installing();
            st.followers = c
                .followers()
                .map(|(p, pr)| FollowerStatus {
                    peer: *p,
                    match_index: pr.match_index,
                    next_index: pr.next_index,
                    state: pr.state,
                    snapshot_offered: pr.snapshot.map(|(index, _)| index),
                })
                .collect();
        });
        if let Some(parts) = shared.parts() {
            st.applied = parts.fsm.last_applied();
            st.first_log_index = parts.log.first_log_index();
            st.replicators = parts.replicators.stats();
        }
        st
    }
}

impl fmt::Display for NodeStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "group: {}", self.group)?;
        writeln!(f, "peer: {}", self.peer)?;
        match self.role {
            Some(r) => writeln!(f, "role: {r:?}")?,
            None => writeln!(f, "role: -")?,
        }
        writeln!(f, "term: {}", self.term)?;
        match self.leader {
            Some(l) => writeln!(f, "leader: {l}")?,
            None => writeln!(f, "leader: -")?,
        }
        writeln!(f, "conf: {}", self.conf)?;
        writeln!(
            f,
            "log: first {} last {}",
            self.first_log_index, self.last_log_id
        )?;
        writeln!(f, "commit: {}", self.commit_index)?;
        writeln!(f, "applied: {}", self.applied)?;
        writeln!(f, "snapshot: {}", self.snapshot)?;
        if let Some(s) = self.installing {
            writeln!(f, "installing snapshot: {s}")?;
        }
        for fs in &self.followers {
            write!(
                f,
                "follower {}: match {} next {} {:?}",
                fs.peer, fs.match_index, fs.next_index, fs.state
            )?;
            match fs.snapshot_offered {
                Some(i) => writeln!(f, " (snapshot {i} offered)")?,
                None => writeln!(f)?,
            }
        }
        writeln!(f, "pending_applies: {}", self.pending_applies)?;
        writeln!(f, "incoming_bytes: {}", self.incoming_bytes)?;
        for (p, frames, entries, behind) in &self.replicators {
            write!(f, "replicator {p}: frames {frames} entries {entries}")?;
            if *behind > 0 {
                write!(
                    f,
                    " BEHIND COMPACTION (needs {behind}, snapshot install required)"
                )?;
            }
            writeln!(f)?;
        }
        if let Some(e) = &self.error {
            writeln!(f, "error: {e}")?;
        }
        if self.stopped {
            writeln!(f, "stopped")?;
        }
        Ok(())
    }
}
