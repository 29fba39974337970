//! Snapshots in the simulated shell: each peer saves its applied state now and then (the save
//! takes a disk write's time and is durable when it completes; then the core is told and may
//! compact the log), and a follower installs a snapshot the leader offered (on its disk queue,
//! after the writes before it; then the state machine and the log restart from it).

use crate::core::Event;
use crate::sim::node::SimSnapshot;
use crate::sim::world::{Ev, StepCtx, World};
use crate::types::Configuration;

impl World {
    /// Peer `n` considers a snapshot; the next tick is scheduled.
    pub(crate) fn snapshot_tick(&mut self, n: usize) -> Result<(), String> {
        let next = self.params.snapshot_tick_us;
        if self.healed_at_us.is_none() || !self.converged {
            self.schedule(next, Ev::SnapshotTick { node: n });
        }
        let node = &self.nodes[n];
        let due = node.applied >= node.snapshot_id().index + self.params.snapshot_every;
        if !node.is_up() || node.saving || !due || node.applied == 0 {
            return Ok(());
        }
        let Some(last) = node.log.id_at(node.applied) else {
            return Err(format!(
                "peer {n}: applied {} is not in its log",
                node.applied
            ));
        };
        let snap = SimSnapshot {
            last,
            conf: self.configuration_at(n, last.index),
            fsm: node.fsm.clone(),
        };
        let life = node.life;
        self.nodes[n].saving = true;
        let after = self.params.disk_latency_us(&mut self.rng);
        self.schedule(
            after,
            Ev::SnapshotSaved {
                node: n,
                life,
                snap: Box::new(snap),
            },
        );
        Ok(())
    }

    /// The configuration in force at `index` on peer `n` (the newest entry at or before it,
    /// else its snapshot's, else the first configuration).
    fn configuration_at(&self, n: usize, index: u64) -> Configuration {
        let node = &self.nodes[n];
        let in_log = node
            .log
            .entries
            .iter()
            .rev()
            .filter(|e| e.id.index <= index)
            .find_map(|e| e.conf.as_ref().map(|c| (**c).clone()));
        in_log
            .or_else(|| node.snapshot.as_ref().map(|s| s.conf.clone()))
            .unwrap_or_else(|| self.conf.clone())
    }

    /// A save finished: the snapshot is durable; the core is told.
    pub(crate) fn snapshot_saved(
        &mut self,
        n: usize,
        life: u32,
        snap: SimSnapshot,
    ) -> Result<(), String> {
        let node = &mut self.nodes[n];
        if node.life != life || !node.is_up() {
            return Ok(());
        }
        node.saving = false;
        if snap.last.index <= node.snapshot_id().index {
            return Ok(()); // an install overtook it
        }
        let (last, conf) = (snap.last, snap.conf.clone());
        node.snapshot = Some(snap);
        self.stats.snapshots_saved += 1;
        self.note(|| format!("peer {n}: snapshot saved at {last}"));
        let event = Event::SnapshotSaved { last, conf: &conf };
        self.step_node(n, event, StepCtx::None)
    }

    /// An install finished on the disk: the state machine and the in-memory log restart from
    /// the snapshot (the durable ones already did); proposals it covers can no longer be
    /// answered (their outcome is unknown to this peer).
    pub(crate) fn installed(&mut self, n: usize, snap: SimSnapshot) -> Result<(), String> {
        let node = &mut self.nodes[n];
        let last = snap.last;
        node.log.reset(last);
        node.fsm = snap.fsm;
        node.applied = last.index;
        node.pending.retain(|index, _| *index > last.index);
        self.stats.snapshots_installed += 1;
        self.note(|| format!("peer {n}: snapshot {last} installed"));
        self.step_node(
            n,
            Event::SnapshotInstalled { last, ok: true },
            StepCtx::None,
        )?;
        self.serve_reads(n);
        Ok(())
    }
}
