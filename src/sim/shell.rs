//! The simulated shell: carries out a core's actions the way the node will (log writes on the
//! simulated disk, messages on the simulated network, committed entries into the state
//! machine, timers on the peer's own clock), and runs the clients.

use crate::core::message::{AppendEntriesRequest, EntryMeta, Message, VoteResponse};
use crate::core::{Action, AppendSend, Event, Role};
use crate::sim::client::{Reply, Running};
use crate::sim::kv::{Cmd, Op, OpResult};
use crate::sim::network::Fate;
use crate::sim::node::{DiskOp, Proposal, SimEntry};
use crate::sim::world::{Ev, World};
use crate::types::{EntryType, LogId};

impl World {
    /// Carries out one action of peer `n`. `req` is the AppendEntries just stepped, if any.
    pub(crate) fn carry_out(
        &mut self,
        n: usize,
        action: Action,
        req: Option<(&AppendEntriesRequest, &[Option<Cmd>])>,
    ) -> Result<(), String> {
        match action {
            Action::PersistHardState(hs) => {
                let life = self.nodes[n].life;
                let lat = self.params.disk_latency_us(&mut self.rng);
                let node = &mut self.nodes[n];
                let done = node.meta_free_us.max(self.now_us) + lat;
                node.meta_free_us = done;
                self.schedule(done - self.now_us, Ev::MetaDone { node: n, life, hs });
            }
            Action::TruncateLog { after } => {
                self.nodes[n].log.truncate(after as usize);
                self.write(n, DiskOp::Truncate(after));
            }
            Action::AppendReceived { range } => {
                let (req, cmds) = req.ok_or("AppendReceived without an AppendEntries")?;
                let entries: Vec<SimEntry> = range
                    .map(|k| SimEntry {
                        id: req.entries[k].id,
                        kind: req.entries[k].kind,
                        cmd: cmds[k],
                    })
                    .collect();
                self.append(n, entries)?;
            }
            Action::AppendProposals { first_index, last } => {
                self.append_proposals(n, first_index, last)?
            }
            Action::AppendNoOp(id) => {
                let noop = SimEntry {
                    id,
                    kind: EntryType::NoOp,
                    cmd: None,
                };
                self.append(n, vec![noop])?
            }
            Action::RejectProposals { leader, .. } => {
                let hint = leader.and_then(|l| self.ids.iter().position(|p| *p == l));
                for cmd in std::mem::take(&mut self.nodes[n].batch) {
                    self.reply(cmd.client, cmd.op_id, Reply::NotLeader(hint));
                }
            }
            Action::Send { to, msg } => self.send(n, to, msg, Vec::new())?,
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
        if entries[0].id.index != node.log.len() as u64 + 1 {
            return Err(format!(
                "peer {n}: append at {} to a log of {}",
                entries[0].id,
                node.log.len()
            ));
        }
        node.log.extend_from_slice(&entries);
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

    fn send(
        &mut self,
        n: usize,
        to: crate::types::PeerId,
        msg: Message,
        cmds: Vec<Option<Cmd>>,
    ) -> Result<(), String> {
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
                        cmds: cmds.clone(),
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
                        cmds,
                    },
                );
            }
        }
        Ok(())
    }

    fn send_append(
        &mut self,
        n: usize,
        to: crate::types::PeerId,
        send: AppendSend,
    ) -> Result<(), String> {
        let log = &self.nodes[n].log;
        let (from, to_idx) = (send.prev.index as usize, send.last_index as usize);
        if to_idx > log.len()
            || log
                .get(from.wrapping_sub(1))
                .map_or(from != 0, |e| e.id != send.prev)
        {
            return Err(format!(
                "peer {n}: SendAppend {send:?} does not match its log of {}",
                log.len()
            ));
        }
        let slice = &log[from..to_idx];
        let entries = slice
            .iter()
            .map(|e| EntryMeta {
                id: e.id,
                kind: e.kind,
                conf: None,
            })
            .collect();
        let cmds = slice.iter().map(|e| e.cmd).collect();
        let req = AppendEntriesRequest {
            term: send.term,
            prev: send.prev,
            commit: send.commit,
            sent_ms: send.sent_ms,
            entries,
        };
        self.send(n, to, Message::AppendEntries(req), cmds)
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
            let entry = self.nodes[n].log[index as usize - 1];
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
        node.batch.push(cmd);
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
        let count = node.batch.len() as u64;
        if count == 0 {
            return Ok(());
        }
        self.stats.proposal_batches += 1;
        self.step_node(n, Event::Propose { count }, None)
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
        let cmd = Cmd {
            client: c,
            op_id,
            key,
            op,
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
