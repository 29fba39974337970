//! A recording state machine for cluster tests: it keeps every applied entry in order, so
//! tests can compare nodes, check nothing is applied twice, and snapshot/restore the list.
//!
//! Like a real service with retrying clients, it applies each payload once: the harness
//! retries a write whose outcome was unknown (`NotLeader` after the task was accepted, a
//! timeout), and when both attempts committed the second is a duplicate, counted and not
//! applied. Tests use unique payloads.

use std::sync::Arc;

use bytes::Bytes;
use parking_lot::Mutex;
use traft::snapshot::{SnapshotReader, SnapshotWriter};
use traft::state_machine::{Iter, SnapshotDone, StateMachine};
use traft::RaftError;

#[derive(Default)]
pub struct KvState {
    /// (index, data) of every applied data entry, in apply order.
    pub applied: Vec<(u64, Bytes)>,
    /// Problems seen (an index applied twice or out of order).
    pub violations: Vec<String>,
    pub leader_terms: Vec<u64>,
    /// The role callbacks in the order they ran: `lead t`, `stop leading`, `follow <peer> t`,
    /// `stop following <peer> t`.
    pub role_events: Vec<String>,
    pub errors: Vec<String>,
    pub snapshots_loaded: u64,
    /// Panic when applying this payload (to test a user-callback panic on one node).
    pub panic_on: Option<Bytes>,
    /// The payloads applied (what `applied` holds), to apply each once.
    pub seen: std::collections::HashSet<Bytes>,
    /// Committed payloads that were already applied: retries whose first attempt committed.
    pub duplicates: u64,
    /// While set, `on_leader_start` waits: the node's applies stall behind it, as behind a
    /// slow user callback.
    pub hold_leader_start: bool,
    /// While set, `on_snapshot_load` fails (a state machine that cannot take a snapshot).
    pub fail_load: bool,
    /// While set, `on_apply` waits before its batch: committed entries queue up unapplied.
    pub hold_apply: bool,
    /// True while `on_apply` waits on `hold_apply`.
    pub holding: bool,
}

/// Shared view of one node's state machine.
#[derive(Clone, Default)]
pub struct KvHandle(pub Arc<Mutex<KvState>>);

impl KvHandle {
    pub fn len(&self) -> usize {
        self.0.lock().applied.len()
    }
    pub fn last_index(&self) -> u64 {
        self.0.lock().applied.last().map_or(0, |(i, _)| *i)
    }
    pub fn data(&self) -> Vec<Bytes> {
        self.0
            .lock()
            .applied
            .iter()
            .map(|(_, d)| d.clone())
            .collect()
    }
    pub fn violations(&self) -> Vec<String> {
        self.0.lock().violations.clone()
    }
    /// Forgets what was applied (the node is restarting and rebuilds it); the test's
    /// fault switch `fail_load` stays, so it can be set before the node starts.
    pub fn reset(&self) {
        let mut st = self.0.lock();
        let fail_load = st.fail_load;
        *st = KvState::default();
        st.fail_load = fail_load;
    }
}

pub struct KvSm {
    h: KvHandle,
}

impl KvSm {
    pub fn new(h: KvHandle) -> KvSm {
        KvSm { h }
    }
}

fn encode(list: &[(u64, Bytes)]) -> Vec<u8> {
    let mut out = Vec::new();
    for (i, d) in list {
        out.extend_from_slice(&i.to_le_bytes());
        out.extend_from_slice(&(d.len() as u32).to_le_bytes());
        out.extend_from_slice(d);
    }
    out
}

fn decode(mut b: &[u8]) -> Option<Vec<(u64, Bytes)>> {
    let mut out = Vec::new();
    while !b.is_empty() {
        let i = u64::from_le_bytes(b.get(..8)?.try_into().ok()?);
        let n = u32::from_le_bytes(b.get(8..12)?.try_into().ok()?) as usize;
        out.push((i, Bytes::copy_from_slice(b.get(12..12 + n)?)));
        b = &b[12 + n..];
    }
    Some(out)
}

impl StateMachine for KvSm {
    fn on_apply(&mut self, iter: &mut Iter<'_>) {
        while self.h.0.lock().hold_apply {
            self.h.0.lock().holding = true;
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
        self.h.0.lock().holding = false;
        for mut e in iter {
            let mut st = self.h.0.lock();
            if st.panic_on.as_ref() == Some(&e.data) {
                drop(st);
                panic!("test state machine asked to panic at {}", e.index);
            }
            let last = st.applied.last().map_or(0, |(i, _)| *i);
            if e.index <= last {
                let v = format!("index {} applied after {last}", e.index);
                st.violations.push(v);
            }
            if st.seen.insert(e.data.clone()) {
                st.applied.push((e.index, e.data.clone()));
            } else {
                st.duplicates += 1;
            }
            e.respond(Bytes::from(e.index.to_string()));
        }
    }

    fn on_leader_start(&mut self, term: u64) {
        // Polls rather than parks so the test flips one plain field; the stall only ever
        // lasts as long as a test holds it.
        while self.h.0.lock().hold_leader_start {
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
        let mut st = self.h.0.lock();
        st.leader_terms.push(term);
        st.role_events.push(format!("lead {term}"));
    }

    fn on_leader_stop(&mut self, _reason: &RaftError) {
        self.h.0.lock().role_events.push("stop leading".into());
    }

    fn on_start_following(&mut self, ctx: &traft::state_machine::LeaderChangeContext) {
        let event = format!("follow {:?} {}", ctx.leader, ctx.term);
        self.h.0.lock().role_events.push(event);
    }

    fn on_stop_following(&mut self, ctx: &traft::state_machine::LeaderChangeContext) {
        let event = format!("stop following {:?} {}", ctx.leader, ctx.term);
        self.h.0.lock().role_events.push(event);
    }

    fn on_error(&mut self, e: &RaftError) {
        self.h.0.lock().errors.push(e.to_string());
    }

    fn on_snapshot_save(&mut self, mut writer: SnapshotWriter, done: SnapshotDone) {
        let bytes = encode(&self.h.0.lock().applied);
        match writer.write_file("kv", &bytes) {
            Ok(()) => done.complete(Ok(writer)),
            Err(e) => done.complete(Err(e)),
        }
    }

    fn on_snapshot_load(&mut self, reader: &SnapshotReader) -> traft::Result<()> {
        if self.h.0.lock().fail_load {
            return Err(RaftError::invalid(
                "the test's state machine refuses to load",
            ));
        }
        let bytes = std::fs::read(reader.file_path("kv"))
            .map_err(|e| RaftError::io("read", Some(&reader.file_path("kv")), &e))?;
        let list = decode(&bytes).ok_or_else(|| RaftError::invalid("bad kv snapshot"))?;
        let mut st = self.h.0.lock();
        st.seen = list.iter().map(|(_, d)| d.clone()).collect();
        st.applied = list;
        st.snapshots_loaded += 1;
        Ok(())
    }
}
