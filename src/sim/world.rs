//! The simulated world: one event queue in real (simulated) microseconds, the peers, the
//! network, the clients, and the checks run after every step. Everything random draws from
//! one [`Rng`] seeded by the run's seed, and the queue breaks time ties by insertion order, so
//! a seed replays exactly.

use std::cmp::Ordering;
use std::collections::{BinaryHeap, VecDeque};

use crate::core::message::{AppendEntriesRequest, Message};
use crate::core::{CoreOptions, Event, HardState, InitialState, RaftCore, Role, TimerKind};
use crate::logging::discard_logger;
use crate::sim::checks::Checker;
use crate::sim::client::{Client, History, Reply};
use crate::sim::kv::Cmd;
use crate::sim::network::Network;
use crate::sim::node::{SimNode, SimSnapshot};
use crate::sim::{Params, SimOptions, Stats};
use crate::types::{Configuration, PeerId, Rng};

/// What travels beside a message: the commands of an AppendEntries' entries (aligned with
/// them), or the snapshot an InstallSnapshot offers.
#[derive(Clone, Debug)]
pub(crate) enum Payload {
    None,
    Cmds(Vec<Option<Cmd>>),
    Snapshot(Box<SimSnapshot>),
}

/// What an action of the step may refer to.
#[derive(Clone, Copy)]
pub(crate) enum StepCtx<'a> {
    None,
    /// The AppendEntries just stepped and its commands.
    Append(&'a AppendEntriesRequest, &'a [Option<Cmd>]),
    /// The snapshot of the InstallSnapshot just stepped.
    Snapshot(&'a SimSnapshot),
}

/// More events in flight than any sane run has: a message storm, reported as a failure.
const EVENTS_IN_FLIGHT_MAX: usize = 200_000;
/// More steps than any sane run of the default size takes.
const STEPS_MAX: u64 = 20_000_000;

/// Something that happens at an instant.
#[derive(Debug)]
pub(crate) enum Ev {
    Deliver {
        from: usize,
        to: usize,
        life: u32,
        msg: Message,
        payload: Payload,
    },
    SnapshotTick {
        node: usize,
    },
    SnapshotSaved {
        node: usize,
        life: u32,
        snap: Box<SimSnapshot>,
    },
    Membership,
    Transfer,
    Timer {
        node: usize,
        life: u32,
        kind: TimerKind,
        token: u64,
    },
    DiskDone {
        node: usize,
        life: u32,
    },
    MetaDone {
        node: usize,
        life: u32,
        hs: HardState,
    },
    Request {
        node: usize,
        cmd: Cmd,
    },
    Flush {
        node: usize,
        life: u32,
    },
    Reply {
        client: u32,
        op_id: u64,
        reply: Reply,
    },
    ClientWake {
        client: u32,
    },
    Fault,
    Restart {
        node: usize,
    },
    Strike {
        node: usize,
        term: u64,
    },
    Crash {
        node: usize,
    },
    Heal,
}

impl Ev {
    /// The peer whose process handles this event (deferred while it is paused).
    fn node(&self) -> Option<usize> {
        match self {
            Ev::Deliver { to, .. } => Some(*to),
            Ev::Timer { node, .. }
            | Ev::DiskDone { node, .. }
            | Ev::MetaDone { node, .. }
            | Ev::Request { node, .. }
            | Ev::SnapshotTick { node }
            | Ev::SnapshotSaved { node, .. }
            | Ev::Flush { node, .. } => Some(*node),
            _ => None,
        }
    }
}

struct Scheduled {
    time_us: u64,
    seq: u64,
    ev: Ev,
}

impl PartialEq for Scheduled {
    fn eq(&self, o: &Self) -> bool {
        (self.time_us, self.seq) == (o.time_us, o.seq)
    }
}
impl Eq for Scheduled {}
impl PartialOrd for Scheduled {
    fn partial_cmp(&self, o: &Self) -> Option<Ordering> {
        Some(self.cmp(o))
    }
}
impl Ord for Scheduled {
    fn cmp(&self, o: &Self) -> Ordering {
        // BinaryHeap is a max-heap: the earliest (time, seq) must compare greatest.
        (o.time_us, o.seq).cmp(&(self.time_us, self.seq))
    }
}

/// One line of the trace kept for failure reports.
#[derive(Clone, Debug)]
pub(crate) struct TraceLine {
    pub time_us: u64,
    pub what: String,
}

/// The world of one run.
pub struct World {
    pub(crate) opts: SimOptions,
    pub(crate) params: Params,
    pub(crate) rng: Rng,
    pub(crate) now_us: u64,
    seq: u64,
    queue: BinaryHeap<Scheduled>,
    pub(crate) nodes: Vec<SimNode>,
    pub(crate) ids: Vec<PeerId>,
    /// The configuration the group starts with (the first `params.voters` peers; the others
    /// are spares that configuration changes may add).
    pub(crate) conf: Configuration,
    /// Names read batches and configuration changes.
    pub(crate) next_ctx: u64,
    pub(crate) net: Network,
    pub(crate) clients: Vec<Client>,
    pub(crate) history: History,
    pub(crate) checker: Checker,
    pub(crate) stats: Stats,
    pub(crate) steps: u64,
    trace: VecDeque<TraceLine>,
    /// The time of the final heal, once it happened.
    pub(crate) healed_at_us: Option<u64>,
    /// When a working leader (one that committed an entry of its term) appeared after heal.
    pub(crate) leader_after_heal_us: Option<u64>,
    /// Every peer holds and applied the leader's whole log.
    pub(crate) converged: bool,
    /// After the heal: the sum of the members' applied indexes, and when it last changed.
    pub(crate) catch_up_mark: (u64, u64),
    /// Set by scripted scenarios: no clients, no random faults.
    pub(crate) scripted: bool,
    /// Per peer: until when (real microseconds) its leader lease is valid; 0 if none.
    lease_until_us: Vec<u64>,
}

impl World {
    /// A world for `opts` with the seed-derived `params`.
    pub fn new(opts: SimOptions, params: Params) -> World {
        let mut rng = Rng::new(opts.seed);
        let n = params.nodes;
        let ids: Vec<PeerId> = (0..n)
            .map(|i| {
                format!("10.0.0.{}:8000:0", i + 1)
                    .parse()
                    .expect("invariant: a valid peer id")
            })
            .collect();
        let nodes = (0..n)
            .map(|i| SimNode::new(ids[i], params.clock(&mut rng), opts.keys))
            .collect();
        let clients = (0..opts.clients)
            .map(|id| Client {
                id,
                running: None,
                leader_guess: rng.range(0, n as u64) as usize,
                last_seen: vec![None; opts.keys as usize],
            })
            .collect();
        let conf = Configuration::new(ids.iter().take(params.voters).copied());
        World {
            net: Network::new(n, params.link_faults),
            checker: Checker::new(&ids, &conf),
            conf,
            next_ctx: 0,
            history: History::new(opts.keys),
            stats: Stats::default(),
            opts,
            params,
            rng,
            now_us: 0,
            seq: 0,
            queue: BinaryHeap::new(),
            nodes,
            ids,
            clients,
            steps: 0,
            trace: VecDeque::new(),
            healed_at_us: None,
            leader_after_heal_us: None,
            converged: false,
            catch_up_mark: (0, 0),
            scripted: false,
            lease_until_us: vec![0; n],
        }
    }

    /// Schedules `ev` `after_us` from now.
    pub(crate) fn schedule(&mut self, after_us: u64, ev: Ev) {
        self.seq += 1;
        self.queue.push(Scheduled {
            time_us: self.now_us + after_us,
            seq: self.seq,
            ev,
        });
    }

    /// Starts every peer, and the clients and faults of a random run.
    pub(crate) fn start(&mut self) -> Result<(), String> {
        for i in 0..self.nodes.len() {
            self.restart(i)?;
        }
        if self.scripted {
            return Ok(());
        }
        for c in 0..self.clients.len() as u32 {
            let after = self.rng.range(0, 2_000);
            self.schedule(after, Ev::ClientWake { client: c });
        }
        if self.opts.faults {
            let after = self.params.fault_gap_us(&mut self.rng);
            self.schedule(after, Ev::Fault);
        }
        if self.params.membership_gap_us.is_some() {
            self.schedule_membership();
        }
        if self.params.transfer_gap_us.is_some() {
            self.schedule_transfer();
        }
        if self.params.snapshot_every > 0 {
            for node in 0..self.nodes.len() {
                let after = self.rng.range(0, self.params.snapshot_tick_us);
                self.schedule(after, Ev::SnapshotTick { node });
            }
        }
        Ok(())
    }

    /// Runs events until `until_us` (or the queue empties, or the run converged).
    pub(crate) fn run_until(&mut self, until_us: u64) -> Result<(), String> {
        while let Some(next) = self.queue.peek() {
            if next.time_us > until_us || self.converged {
                break;
            }
            let Scheduled { time_us, ev, .. } = self.queue.pop().expect("invariant: peeked");
            self.now_us = time_us;
            self.dispatch(ev)?;
            self.steps += 1;
            if self.queue.len() > EVENTS_IN_FLIGHT_MAX || self.steps > STEPS_MAX {
                return Err(format!(
                    "runaway run: {} events in flight after {} steps (a message storm?)",
                    self.queue.len(),
                    self.steps
                ));
            }
            if self.steps % self.opts.full_check_every == 0 {
                self.checker.full(&self.nodes, None)?;
            }
            if self.healed_at_us.is_some() && !self.scripted {
                self.watch_after_heal()?;
            }
        }
        self.now_us = self
            .now_us
            .max(until_us.min(self.queue.peek().map_or(until_us, |s| s.time_us)));
        Ok(())
    }

    fn dispatch(&mut self, ev: Ev) -> Result<(), String> {
        if let Some(n) = ev.node() {
            let until = self.nodes[n].paused_until_us;
            if until > self.now_us {
                self.seq += 1;
                self.queue.push(Scheduled {
                    time_us: until,
                    seq: self.seq,
                    ev,
                });
                return Ok(());
            }
        }
        match ev {
            Ev::Deliver {
                from,
                to,
                life,
                msg,
                payload,
            } => self.deliver(from, to, life, &msg, &payload),
            Ev::Timer {
                node,
                life,
                kind,
                token,
            } => {
                let n = &self.nodes[node];
                if n.life != life || !n.is_up() || n.timer_tokens[kind.index()] != token {
                    return Ok(());
                }
                self.note(|| format!("peer {node}: {kind:?} timer"));
                self.step_node(node, Event::Timeout(kind), StepCtx::None)
            }
            Ev::DiskDone { node, life } => self.disk_done(node, life),
            Ev::MetaDone { node, life, hs } => {
                if self.nodes[node].life != life || !self.nodes[node].is_up() {
                    return Ok(());
                }
                self.nodes[node].durable_hs = hs;
                self.step_node(node, Event::HardStatePersisted(hs), StepCtx::None)
            }
            Ev::SnapshotTick { node } => self.snapshot_tick(node),
            Ev::SnapshotSaved { node, life, snap } => self.snapshot_saved(node, life, *snap),
            Ev::Membership => self.change_membership(),
            Ev::Transfer => self.transfer_leader(),
            Ev::Request { node, cmd } => self.request(node, cmd),
            Ev::Flush { node, life } => self.flush(node, life),
            Ev::Reply {
                client,
                op_id,
                reply,
            } => {
                self.client_reply(client, op_id, reply);
                Ok(())
            }
            Ev::ClientWake { client } => {
                self.client_wake(client);
                Ok(())
            }
            Ev::Fault => self.inject_fault(),
            Ev::Restart { node } => self.restart(node),
            Ev::Strike { node, term } => self.strike(node, term),
            Ev::Crash { node } => self.crash(node),
            Ev::Heal => self.heal(),
        }
    }

    fn deliver(
        &mut self,
        from: usize,
        to: usize,
        life: u32,
        msg: &Message,
        payload: &Payload,
    ) -> Result<(), String> {
        if self.nodes[to].life != life || !self.nodes[to].is_up() {
            return Ok(());
        }
        if self.net.is_cut(from, to) {
            self.stats.messages_lost += 1; // a partition also drops what was in flight
            return Ok(());
        }
        self.note(|| format!("{from} -> {to}: {}", describe(msg)));
        let from_id = self.ids[from];
        let ctx = match (msg, payload) {
            (Message::AppendEntries(r), Payload::Cmds(cmds)) => StepCtx::Append(r, cmds),
            (Message::InstallSnapshot(_), Payload::Snapshot(s)) => StepCtx::Snapshot(s),
            _ => StepCtx::None,
        };
        self.step_node(to, Event::Message { from: from_id, msg }, ctx)
    }

    fn disk_done(&mut self, node: usize, life: u32) -> Result<(), String> {
        let n = &mut self.nodes[node];
        if n.life != life || !n.is_up() {
            return Ok(());
        }
        match n.complete_write()? {
            Some(crate::sim::node::DiskOp::Append(entries)) => {
                let last = entries[entries.len() - 1].id;
                self.step_node(node, Event::LogDurable(last), StepCtx::None)
            }
            Some(crate::sim::node::DiskOp::Install(snap)) => self.installed(node, *snap),
            _ => Ok(()),
        }
    }

    /// (Re)starts peer `i` from its disk.
    pub(crate) fn restart(&mut self, i: usize) -> Result<(), String> {
        if self.nodes[i].is_up() {
            return Ok(());
        }
        let mut opts = CoreOptions::new(self.ids[i]);
        self.params.apply(&mut opts);
        opts.bugs = self.opts.bugs;
        let node = &mut self.nodes[i];
        let snapshot = node.snapshot_id();
        if node.durable_log.id_at(snapshot.index) != Some(snapshot) {
            // The log does not reach the snapshot: it restarts after it (braft's
            // set_snapshot at load).
            node.durable_log.reset(snapshot);
        }
        let init = InitialState {
            hard_state: node.durable_hs,
            configurations: node.restored_configurations(&self.conf),
            applied_index: node.applied,
            snapshot,
            snapshot_conf: node
                .snapshot
                .as_ref()
                .map(|s| s.conf.clone())
                .unwrap_or_default(),
        };
        let core = RaftCore::new(
            opts,
            init,
            &node.durable_log,
            self.rng.fork(),
            discard_logger(),
        )
        .map_err(|e| format!("peer {i}: restart: {e}"))?;
        node.log = node.durable_log.clone();
        node.core = Some(core);
        node.timer_tokens = [0; 4];
        node.disk_free_us = self.now_us;
        node.meta_free_us = self.now_us;
        let (hs, last) = (node.durable_hs, node.log.last_id());
        self.note(|| format!("peer {i}: start (durable {hs:?}, log to {last})"));
        let node = &mut self.nodes[i];
        let local = node.clock.local_ms(self.now_us);
        let actions: Vec<_> = node
            .core
            .as_mut()
            .expect("invariant: just started")
            .start(local)
            .drain()
            .collect();
        for a in actions {
            self.carry_out(i, a, StepCtx::None)?;
        }
        self.checker.after_step(i, &self.nodes[i])
    }

    /// Steps peer `n`'s core with `event` and carries out what it asks.
    pub(crate) fn step_node(
        &mut self,
        n: usize,
        event: Event<'_>,
        ctx: StepCtx<'_>,
    ) -> Result<(), String> {
        let node = &mut self.nodes[n];
        let local = node.clock.local_ms(self.now_us);
        let Some(core) = node.core.as_mut() else {
            return Ok(());
        };
        let mut actions = std::mem::take(&mut node.actions);
        actions.extend(core.step(local, event).drain());
        for a in actions.drain(..) {
            self.carry_out(n, a, ctx)?;
        }
        self.nodes[n].actions = actions;
        let node = &self.nodes[n];
        let Some(core) = node.core.as_ref() else {
            return Ok(()); // the step's actions crashed it (a strike)
        };
        core.check_invariants()?;
        let commit_before = self.checker.commit_seen(n, node.life);
        self.checker.after_step(n, node)?;
        if core.role() == Role::Leader && core.commit_index() > commit_before {
            self.checker
                .check_commit_safety(core.commit_index(), &self.nodes)?;
            self.checker
                .check_commit_quorum(n, commit_before, &self.nodes)?;
        }
        self.check_leases(n)
    }

    /// At most one leader lease is valid at any instant (DESIGN.md's lease rule).
    fn check_leases(&mut self, n: usize) -> Result<(), String> {
        let node = &mut self.nodes[n];
        let until_ms = node.core.as_mut().and_then(|c| c.leader_lease_until_ms());
        self.lease_until_us[n] = until_ms.map_or(0, |ms| node.clock.real_us_at(ms));
        let now = self.now_us;
        let valid: Vec<usize> = (0..self.nodes.len())
            .filter(|i| self.lease_until_us[*i] > now)
            .collect();
        if valid.len() > 1 {
            return Err(format!("two valid leader leases at once: peers {valid:?}"));
        }
        for l in valid {
            self.check_lease_protected(l)?;
        }
        Ok(())
    }

    /// The lease argument itself: while a leader's lease is valid, a majority of each voter
    /// set of its configuration refuses votes for another candidate (the leader itself, a
    /// crashed voter, which refuses for `T` after it restarts, or a follower whose lease from
    /// a leader contact lasts, in real time, at least as long as the leader's lease).
    fn check_lease_protected(&self, l: usize) -> Result<(), String> {
        let until_us = self.lease_until_us[l];
        let t_ms = self.params.election_timeout_ms;
        let leader = self.nodes[l].core();
        let protected = |p: &PeerId| {
            let Some(i) = self.ids.iter().position(|x| x == p) else {
                return false;
            };
            let node = &self.nodes[i];
            match &node.core {
                _ if i == l => true,
                None => true,
                Some(c) if c.role() != Role::Follower => false,
                Some(c) => c
                    .follower_lease_contact_ms()
                    .is_some_and(|ms| node.clock.real_us_at(ms + t_ms) >= until_us),
            }
        };
        let conf = leader.configuration();
        for half in [conf.voters(), conf.old_voters()] {
            if half.is_empty() {
                continue;
            }
            let count = half.iter().filter(|p| protected(p)).count();
            if count < half.len() / 2 + 1 {
                return Err(format!(
                    "peer {l}'s leader lease (until {} ms) is valid while only {count} of {} \
                     voters {:?} would refuse another candidate",
                    until_us / 1000,
                    half.len(),
                    half
                ));
            }
        }
        Ok(())
    }

    /// A fresh name for a read batch or a configuration change.
    pub(crate) fn ctx(&mut self) -> u64 {
        self.next_ctx += 1;
        self.next_ctx
    }

    /// Crashes peer `i`: it loses everything not durable, and holds no lease any more.
    pub(crate) fn crash_node(&mut self, i: usize) {
        self.nodes[i].crash(self.opts.keys);
        self.lease_until_us[i] = 0;
    }

    /// Records a line of the trace. Tracing is off in normal runs (formatting costs); a
    /// failing seed is replayed with it on, which reproduces the run exactly.
    pub(crate) fn note(&mut self, what: impl FnOnce() -> String) {
        if self.opts.trace_lines == 0 {
            return;
        }
        if self.trace.len() >= self.opts.trace_lines {
            self.trace.pop_front();
        }
        self.trace.push_back(TraceLine {
            time_us: self.now_us,
            what: what(),
        });
    }

    /// The trace and every peer's state, for a failure report.
    pub(crate) fn dump(&self) -> Vec<String> {
        let mut out: Vec<String> = self
            .trace
            .iter()
            .map(|l| format!("{:>12.3} ms  {}", l.time_us as f64 / 1000.0, l.what))
            .collect();
        for (i, n) in self.nodes.iter().enumerate() {
            out.push(match &n.core {
                Some(c) => format!(
                    "peer {i}: {:?} term {} leader {:?} commit {} applied {} last {} durable {} \
                     first {} snapshot {} conf {}",
                    c.role(),
                    c.term(),
                    c.leader()
                        .and_then(|l| self.ids.iter().position(|p| *p == l)),
                    c.commit_index(),
                    n.applied,
                    c.last_log_id(),
                    c.durable_index(),
                    c.first_index(),
                    n.snapshot_id(),
                    c.configuration()
                ),
                None => format!("peer {i}: down"),
            });
        }
        out
    }
}

/// A short description of a message for the trace.
pub(crate) fn describe(msg: &Message) -> String {
    match msg {
        Message::VoteRequest(m) => format!(
            "{} t{} last {}",
            if m.pre_vote { "PreVote" } else { "Vote" },
            m.term,
            m.last_log_id
        ),
        Message::VoteResponse(m) => format!(
            "{}Resp t{} {}",
            if m.pre_vote { "PreVote" } else { "Vote" },
            m.term,
            if m.granted { "granted" } else { "refused" }
        ),
        Message::AppendEntries(m) => format!(
            "Append t{} prev {} n={} commit {}",
            m.term,
            m.prev,
            m.entries.len(),
            m.commit
        ),
        Message::AppendEntriesResponse(m) => format!(
            "AppendResp t{} {} {} hint {}",
            m.term,
            if m.success { "ok" } else { "reject" },
            m.index,
            m.hint
        ),
        Message::TimeoutNow(m) => format!("TimeoutNow t{}", m.term),
        Message::InstallSnapshot(m) => format!("InstallSnapshot t{} {}", m.term, m.last),
    }
}
