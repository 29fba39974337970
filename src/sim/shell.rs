//! The simulated shell: carries out a core's actions the way the node will (log writes on the
//! simulated disk, messages on the simulated network, committed entries into the state
//! machine, timers on the peer's own clock), and runs the clients.

use std::sync::Arc;

use crate::core::message::{AppendEntriesRequest, EntryMeta, Message, VoteResponse};
use crate::core::{Action, AppendSend, Event, Role};
use crate::error::RaftError;
use crate::sim::client::{Reply, Running};
use crate::sim::kv::{Cmd, Op, OpResult};
use crate::sim::network::Fate;
use crate::sim::node::{DiskOp, Proposal, ReadBatch, SimEntry};
use crate::sim::world::{Ev, Payload, StepCtx, World};
use crate::types::{EntryType, LogId, PeerId};

impl World {
    /// Carries out one action of peer `n`. `ctx` is what the stepped event carried.
    pub(crate) fn carry_out(
        &mut self,
        n: usize,
        action: Action,
        ctx: StepCtx<'_>,
    ) -> Result<(), String> {
        if !self.nodes[n].is_up() {
            return Ok(()); // an earlier action of the step crashed it
        }
        match action {
            Action::PersistHardState(hs) => {
                let life = self.nodes[n].life;
                let lat = self.params.disk_latency_us(&mut self.rng);
                let node = &mut self.nodes[n];
                let done = node.meta_free_us.max(self.now_us) + lat;
                node.meta_free_us = done;
                self.schedule(done - self.now_us, Ev::MetaDone { node: n, life, hs });
            }
            Action::RejectProposals { error, .. } => {
                let reply = self.refusal(n, &error);
                for cmd in std::mem::take(&mut self.nodes[n].batch) {
                    self.reply(cmd.client, cmd.op_id, reply);
                }
            }
            Action::ReadReady { ctx, index } => self.read_ready(n, ctx, index)?,
            Action::RejectRead { ctx, error } => {
                let reply = self.refusal(n, &error);
                let batch = self.nodes[n].reads_asked.remove(&ctx);
                for cmd in batch.map(|b| b.cmds).unwrap_or_default() {
                    self.reply(cmd.client, cmd.op_id, reply);
                }
            }
            Action::TransferDone { result, .. } => {
                self.stats.transfers_done += u64::from(result.is_ok());
            }
            Action::ConfChangeDone { result, .. } => match result {
                Ok(()) => self.stats.conf_changes_done += 1,
                Err(_) => self.stats.conf_changes_failed += 1,
            },
            Action::Send { to, msg } => self.send_message(n, to, msg)?,
            Action::SendAppend { to, send } => self.send_append(n, to, send)?,
            Action::Committed {
                first_index,
                last_index,
            } => self.apply(n, first_index, last_index)?,
            Action::RoleChanged { role, term, .. } => self.on_role_changed(n, role, term),
            Action::SetTimer { timer, at_ms } => {
                let node = &mut self.nodes[n];
                node.timer_tokens[timer.index()] += 1;
                let (token, life) = (node.timer_tokens[timer.index()], node.life);
                let at_us = node.clock.real_us_at(at_ms).max(self.now_us);
                let ev = Ev::Timer {
                    node: n,
                    life,
                    kind: timer,
                    token,
                };
                self.schedule(at_us - self.now_us, ev);
            }
            Action::StopTimer(timer) => self.nodes[n].timer_tokens[timer.index()] += 1,
            log_action => self.carry_out_log(n, log_action, ctx)?,
        }
        Ok(())
    }

    /// Carries out an action on peer `n`'s log: truncations, appends, compaction, installs.
    fn carry_out_log(&mut self, n: usize, action: Action, ctx: StepCtx<'_>) -> Result<(), String> {
        let entry = |id, kind, conf| SimEntry {
            id,
            kind,
            cmd: None,
            conf,
        };
        match action {
            Action::TruncateLog { after } => {
                self.nodes[n].log.truncate_after(after);
                self.write(n, DiskOp::Truncate(after));
            }
            Action::AppendReceived { range } => {
                let StepCtx::Append(req, cmds) = ctx else {
                    return Err("AppendReceived without an AppendEntries".into());
                };
                let entries: Vec<SimEntry> = range
                    .map(|k| SimEntry {
                        cmd: cmds[k],
                        ..entry(
                            req.entries[k].id,
                            req.entries[k].kind,
                            req.entries[k]
                                .conf
                                .as_ref()
                                .map(|c| Arc::new((**c).clone())),
                        )
                    })
                    .collect();
                self.append(n, entries)?;
            }
            Action::AppendProposals { first_index, last } => {
                self.append_proposals(n, first_index, last)?
            }
            Action::AppendNoOp(id) => self.append(n, vec![entry(id, EntryType::NoOp, None)])?,
            Action::AppendConfiguration { id, conf } => {
                let conf = Some(Arc::new(conf));
                self.append(n, vec![entry(id, EntryType::Configuration, conf)])?
            }
            Action::CompactLog { upto } => {
                let node = &mut self.nodes[n];
                let snap = node.snapshot_id();
                if upto > snap.index {
                    return Err(format!(
                        "peer {n}: compaction to {upto} beyond snapshot {snap}"
                    ));
                }
                node.log.compact_to(upto, snap);
                self.write(
                    n,
                    DiskOp::Compact {
                        upto,
                        snapshot: snap,
                    },
                );
            }
            Action::InstallSnapshot { last, .. } => {
                let StepCtx::Snapshot(snap) = ctx else {
                    return Err("InstallSnapshot without a snapshot".into());
                };
                if snap.last != last {
                    return Err(format!(
                        "peer {n}: told to install {last}, got {}",
                        snap.last
                    ));
                }
                self.write(n, DiskOp::Install(Box::new(snap.clone())));
            }
            other => return Err(format!("peer {n}: unexpected action {other:?}")),
        }
        Ok(())
    }

    /// Appends the batch peer `n` proposed, remembering which client waits on which index.
    fn append_proposals(&mut self, n: usize, first_index: u64, last: LogId) -> Result<(), String> {
        let batch = std::mem::take(&mut self.nodes[n].batch);
        if batch.len() as u64 != last.index - first_index + 1 {
            return Err(format!(
                "peer {n}: {} proposals got {first_index}..={last}",
                batch.len()
            ));
        }
        let mut entries = Vec::with_capacity(batch.len());
        for (k, cmd) in batch.into_iter().enumerate() {
            let id = LogId::new(first_index + k as u64, last.term);
            entries.push(SimEntry {
                id,
                kind: EntryType::Data,
                cmd: Some(cmd),
                conf: None,
            });
            let p = Proposal {
                id,
                client: cmd.client,
                op_id: cmd.op_id,
            };
            self.nodes[n].pending.insert(id.index, p);
        }
        self.append(n, entries)
    }

    /// How a refusal reaches a client: redirected to the leader named, or back to this peer
    /// later when it is busy (a leader transfer).
    fn refusal(&self, n: usize, error: &RaftError) -> Reply {
        match error {
            RaftError::NotLeader { leader } => {
                Reply::NotLeader(leader.and_then(|l| self.ids.iter().position(|p| *p == l)))
            }
            _ => Reply::NotLeader(Some(n)),
        }
    }

    /// A read batch is confirmed at `index`: it must see every commit made before it
    /// arrived; it is served once the state machine reaches `index`.
    fn read_ready(&mut self, n: usize, ctx: u64, index: u64) -> Result<(), String> {
        let Some(batch) = self.nodes[n].reads_asked.remove(&ctx) else {
            return Err(format!("peer {n}: ReadReady for an unknown batch {ctx}"));
        };
        if index < batch.committed_at_arrival {
            return Err(format!(
                "peer {n}: a read released at index {index}, but {} was committed before it \
                 arrived (a stale read)",
                batch.committed_at_arrival
            ));
        }
        self.nodes[n].reads_ready.push((index, batch.cmds));
        self.serve_reads(n);
        Ok(())
    }

    /// Answers the confirmed reads whose index the state machine has reached.
    pub(crate) fn serve_reads(&mut self, n: usize) {
        let applied = self.nodes[n].applied;
        let ready = std::mem::take(&mut self.nodes[n].reads_ready);
        let (serve, wait): (Vec<_>, Vec<_>) = ready.into_iter().partition(|(i, _)| *i <= applied);
        self.nodes[n].reads_ready = wait;
        for (_, cmds) in serve {
            for cmd in cmds {
                let value = self.nodes[n].fsm.get(cmd.key);
                self.reply(cmd.client, cmd.op_id, Reply::Done(OpResult::Value(value)));
            }
        }
    }

    /// Sends a message; an InstallSnapshot carries the snapshot it names.
    fn send_message(&mut self, n: usize, to: PeerId, msg: Message) -> Result<(), String> {
        let payload = match &msg {
            Message::InstallSnapshot(req) => match &self.nodes[n].snapshot {
                Some(s) if s.last == req.last => Payload::Snapshot(Box::new(s.clone())),
                _ => return Err(format!("peer {n} offers snapshot {} it lacks", req.last)),
            },
            _ => Payload::None,
        };
        self.send(n, to, msg, payload)
    }

    /// Sometimes crashes a peer right after it granted a vote (RELIABILITY.md trap 2: the
    /// grant must have been durable).
    fn maybe_strike_voter(&mut self, n: usize) {
        let strike = self.opts.faults && self.healed_at_us.is_none();
        if strike && self.rng.chance(self.params.strike_new_leader) {
            let after = self.rng.range(0, 1_500);
            self.schedule(after, Ev::Crash { node: n });
        }
    }

    fn on_role_changed(&mut self, n: usize, role: Role, term: u64) {
        if role != Role::Leader {
            return;
        }
        self.stats.leader_changes += 1;
        self.stats.max_term = self.stats.max_term.max(term);
        let strike = self.opts.faults && self.healed_at_us.is_none();
        if strike && self.rng.chance(self.params.strike_new_leader) {
            let after = self.rng.range(0, 2_000);
            self.schedule(after, Ev::Strike { node: n, term });
        }
    }

    fn append(&mut self, n: usize, entries: Vec<SimEntry>) -> Result<(), String> {
        let node = &mut self.nodes[n];
        if entries[0].id.index != node.log.last_index() + 1 {
            return Err(format!(
                "peer {n}: append at {} to a log ending at {}",
                entries[0].id,
                node.log.last_id()
            ));
        }
        node.log.append(&entries)?;
        self.write(n, DiskOp::Append(entries));
        Ok(())
    }

    /// Queues a log write on peer `n`'s disk; writes complete in order.
    fn write(&mut self, n: usize, op: DiskOp) {
        let lat = self.params.disk_latency_us(&mut self.rng);
        let node = &mut self.nodes[n];
        node.disk.push_back(op);
        let done = node.disk_free_us.max(self.now_us) + lat;
        node.disk_free_us = done;
        let life = node.life;
        self.schedule(done - self.now_us, Ev::DiskDone { node: n, life });
    }

    fn send(&mut self, n: usize, to: PeerId, msg: Message, payload: Payload) -> Result<(), String> {
        if self.opts.promise_checks {
            self.checker.on_send(n, to, &msg, &self.nodes[n])?;
        }
        if let Message::VoteResponse(VoteResponse {
            granted: true,
            pre_vote: false,
            ..
        }) = msg
        {
            self.maybe_strike_voter(n);
        }
        let Some(to) = self.ids.iter().position(|p| *p == to) else {
            return Err(format!("peer {n} sent to a stranger {to}"));
        };
        self.stats.messages += 1;
        let life = self.nodes[to].life;
        match self.net.route(&mut self.rng, self.now_us, n, to) {
            Fate::Lost => self.stats.messages_lost += 1,
            Fate::Delivered(first, second) => {
                if let Some(d) = second {
                    self.stats.messages_duplicated += 1;
                    let copy = Ev::Deliver {
                        from: n,
                        to,
                        life,
                        msg: msg.clone(),
                        payload: payload.clone(),
                    };
                    self.schedule(d, copy);
                }
                self.schedule(
                    first,
                    Ev::Deliver {
                        from: n,
                        to,
                        life,
                        msg,
                        payload,
                    },
                );
            }
        }
        Ok(())
    }

    fn send_append(&mut self, n: usize, to: PeerId, send: AppendSend) -> Result<(), String> {
        let log = &self.nodes[n].log;
        let heartbeat = send.last_index == send.prev.index;
        // A heartbeat's prev may lie before the log (a follower behind the compaction point,
        // or one whose match is not known): it carries a term the follower will not match.
        let prev_ok = heartbeat || log.id_at(send.prev.index) == Some(send.prev);
        if send.last_index > log.last_index() || !prev_ok {
            return Err(format!(
                "peer {n}: SendAppend {send:?} does not match its log {}..={}",
                log.base,
                log.last_id()
            ));
        }
        let entries: Vec<&SimEntry> = (send.prev.index + 1..=send.last_index)
            .filter_map(|i| log.get(i))
            .collect();
        if entries.len() as u64 != send.last_index - send.prev.index {
            return Err(format!(
                "peer {n}: SendAppend {send:?} reaches compacted entries"
            ));
        }
        let metas = entries
            .iter()
            .map(|e| EntryMeta {
                id: e.id,
                kind: e.kind,
                conf: e.conf.as_ref().map(|c| Box::new((**c).clone())),
            })
            .collect();
        let cmds = entries.iter().map(|e| e.cmd).collect();
        let req = AppendEntriesRequest {
            term: send.term,
            prev: send.prev,
            commit: send.commit,
            sent_ms: send.sent_ms,
            round: send.round,
            entries: metas,
        };
        self.send(n, to, Message::AppendEntries(req), Payload::Cmds(cmds))
    }

    /// Applies entries `first..=last` to peer `n`'s state machine and answers its clients.
    fn apply(&mut self, n: usize, first: u64, last: u64) -> Result<(), String> {
        if first != self.nodes[n].applied + 1 {
            return Err(format!(
                "peer {n}: handed {first}..={last} after applying {}",
                self.nodes[n].applied
            ));
        }
        for index in first..=last {
            let Some(entry) = self.nodes[n].log.get(index).cloned() else {
                return Err(format!("peer {n}: committed {index} is not in its log"));
            };
            // Entries committed by this very step are recorded by the checker after it.
            let known = self.checker.committed.get(index as usize - 1);
            if known.is_some_and(|c| *c != entry.id) {
                return Err(format!(
                    "peer {n}: applies {} which is not the committed entry",
                    entry.id
                ));
            }
            let result = entry.cmd.map(|cmd| self.nodes[n].fsm.apply(&cmd));
            self.nodes[n].applied = index;
            let Some(p) = self.nodes[n].pending.remove(&index) else {
                continue;
            };
            let reply = match result {
                Some(r) if p.id == entry.id => Reply::Done(r),
                _ => Reply::Failed, // another entry took its slot: it was not executed
            };
            self.reply(p.client, p.op_id, reply);
        }
        self.serve_reads(n);
        Ok(())
    }

    fn reply(&mut self, client: u32, op_id: u64, reply: Reply) {
        let after = self.params.client_delay_us(&mut self.rng);
        self.schedule(
            after,
            Ev::Reply {
                client,
                op_id,
                reply,
            },
        );
    }

    /// A client request arrives at peer `n`.
    pub(crate) fn request(&mut self, n: usize, cmd: Cmd) -> Result<(), String> {
        let node = &self.nodes[n];
        let Some(core) = node.core.as_ref() else {
            return Ok(());
        };
        if core.role() != Role::Leader {
            let hint = core
                .leader()
                .and_then(|l| self.ids.iter().position(|p| *p == l));
            self.reply(cmd.client, cmd.op_id, Reply::NotLeader(hint));
            return Ok(());
        }
        let life = node.life;
        let node = &mut self.nodes[n];
        if cmd.via_read_index {
            node.read_batch.push(cmd);
        } else {
            node.batch.push(cmd);
        }
        if !node.flush_scheduled {
            node.flush_scheduled = true;
            let after = self.rng.range(0, 1_000);
            self.schedule(after, Ev::Flush { node: n, life });
        }
        Ok(())
    }

    /// Proposes the requests batched at peer `n`.
    pub(crate) fn flush(&mut self, n: usize, life: u32) -> Result<(), String> {
        let node = &mut self.nodes[n];
        if node.life != life || !node.is_up() {
            return Ok(());
        }
        node.flush_scheduled = false;
        if !node.read_batch.is_empty() {
            let cmds = std::mem::take(&mut node.read_batch);
            let ctx = self.ctx();
            let batch = ReadBatch {
                cmds,
                committed_at_arrival: self.checker.committed.len() as u64,
            };
            self.nodes[n].reads_asked.insert(ctx, batch);
            self.stats.read_batches += 1;
            self.step_node(n, Event::ReadIndex { ctx }, StepCtx::None)?;
        }
        let count = self.nodes[n].batch.len() as u64;
        if count == 0 || !self.nodes[n].is_up() {
            return Ok(());
        }
        self.stats.proposal_batches += 1;
        self.step_node(n, Event::Propose { count }, StepCtx::None)
    }

    /// A client's timer: give up on an expired operation, or start the next one.
    pub(crate) fn client_wake(&mut self, c: u32) {
        let client = &self.clients[c as usize];
        if let Some(run) = client.running {
            if self.now_us < run.deadline_us {
                return;
            }
            self.history.give_up(&run);
            self.clients[c as usize].running = None;
        }
        if self.history.invoked >= self.opts.client_ops {
            if self.clients.iter().all(|c| c.running.is_none()) && self.healed_at_us.is_none() {
                self.schedule(0, Ev::Heal);
            }
            return;
        }
        self.start_op(c);
    }

    fn start_op(&mut self, c: u32) {
        self.history.invoked += 1;
        let op_id = self.history.invoked;
        let key = self.rng.range(0, u64::from(self.opts.keys)) as u32;
        let client = &self.clients[c as usize];
        let roll = self.rng.range(0, 100);
        let op = if roll < 45 {
            Op::Put(op_id)
        } else if roll < 80 {
            Op::Get
        } else {
            let expected = client.last_seen[key as usize].unwrap_or(op_id / 2);
            Op::Cas {
                expected,
                new: op_id,
            }
        };
        let via_read_index = op == Op::Get && self.rng.chance(self.params.read_index_share);
        let cmd = Cmd {
            client: c,
            op_id,
            key,
            op,
            via_read_index,
        };
        let invoke = self.history.tick();
        let deadline_us = self.now_us + self.params.op_timeout_us;
        self.clients[c as usize].running = Some(Running {
            cmd,
            invoke,
            deadline_us,
        });
        self.send_request(c, cmd);
        self.schedule(self.params.op_timeout_us, Ev::ClientWake { client: c });
    }

    fn send_request(&mut self, c: u32, cmd: Cmd) {
        let node = self.clients[c as usize].leader_guess;
        let after = self.params.client_delay_us(&mut self.rng);
        self.schedule(after, Ev::Request { node, cmd });
    }

    /// A peer's answer reaches client `c`.
    pub(crate) fn client_reply(&mut self, c: u32, op_id: u64, reply: Reply) {
        let Some(run) = self.clients[c as usize].running else {
            return;
        };
        if run.cmd.op_id != op_id {
            return; // for an operation given up on
        }
        match reply {
            Reply::Done(result) => {
                self.history.complete(&run, result);
                let seen = match (run.cmd.op, result) {
                    (Op::Put(v), _) | (Op::Cas { new: v, .. }, OpResult::Swapped(true)) => Some(v),
                    (_, OpResult::Value(v)) => v,
                    _ => self.clients[c as usize].last_seen[run.cmd.key as usize],
                };
                let client = &mut self.clients[c as usize];
                client.last_seen[run.cmd.key as usize] = seen;
                client.running = None;
                let think = self.rng.range(0, 2_000);
                self.schedule(think, Ev::ClientWake { client: c });
            }
            Reply::NotLeader(_) | Reply::Failed if self.now_us < run.deadline_us => {
                // A definite refusal: the operation was not executed, so it may go elsewhere.
                let guess = match reply {
                    Reply::NotLeader(Some(l)) => l,
                    _ => self.rng.range(0, self.nodes.len() as u64) as usize,
                };
                self.clients[c as usize].leader_guess = guess;
                let backoff = self.rng.range(2_000, 6_000);
                self.schedule(
                    backoff,
                    Ev::Request {
                        node: guess,
                        cmd: run.cmd,
                    },
                );
            }
            Reply::NotLeader(_) | Reply::Failed => {}
        }
    }
}
