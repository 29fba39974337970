//! The core's hot path does not allocate: once a three-peer group is warmed up, proposing,
//! replicating, acknowledging, committing and heartbeating make no heap allocation inside any
//! `RaftCore::step` (counted by a per-thread counting allocator; the test's own message
//! plumbing allocates outside the counted calls). Its own binary: it installs a global
//! allocator.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::collections::VecDeque;

use traft::core::message::{AppendEntriesRequest, EntryMeta, Message};
use traft::core::{Action, CoreOptions, Event, InitialState, RaftCore, Role, TimerKind};
use traft::logging::discard_logger;
use traft::types::{Configuration, EntryType, LogId, LogRead, PeerId, Rng};

struct Counting;

thread_local! {
    static ALLOCATIONS: Cell<u64> = const { Cell::new(0) };
}

fn count() {
    // try_with: the thread-local may already be gone while a thread exits.
    let _ = ALLOCATIONS.try_with(|c| c.set(c.get() + 1));
}

// SAFETY: every call is forwarded unchanged to the system allocator; counting touches only a
// const-initialised thread-local Cell, which never allocates.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        count();
        // SAFETY: the caller's contract for `alloc` is passed through.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: `ptr` came from `System` via `alloc`/`realloc` above.
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        count();
        // SAFETY: as for `dealloc`; the caller's contract for `realloc` is passed through.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

fn allocations() -> u64 {
    ALLOCATIONS.with(|c| c.get())
}

struct Empty;
impl LogRead for Empty {
    fn first_index(&self) -> u64 {
        1
    }
    fn last_index(&self) -> u64 {
        0
    }
    fn term_at(&self, index: u64) -> Option<u64> {
        (index == 0).then_some(0)
    }
}

/// Three cores whose persistence completes at once and whose messages arrive in order.
struct Group {
    ids: Vec<PeerId>,
    cores: Vec<RaftCore>,
    logs: Vec<Vec<LogId>>,
    net: VecDeque<(usize, usize, Message)>,
    reports: VecDeque<(usize, Event<'static>)>,
    now: u64,
    /// Allocations counted inside `step` calls while `counting`.
    counted: u64,
    counting: bool,
}

impl Group {
    fn new() -> Group {
        let ids: Vec<PeerId> = (0..3)
            .map(|i| format!("10.0.0.{}:1:0", i + 1).parse().unwrap())
            .collect();
        let conf = Configuration::new(ids.iter().copied());
        let cores = (0..3)
            .map(|i| {
                let mut o = CoreOptions::new(ids[i]);
                o.election_timeout_ms = 100;
                o.max_clock_drift_ms = 10;
                o.heartbeat_interval_ms = 10;
                let init = InitialState {
                    configurations: vec![(0, conf.clone())],
                    ..InitialState::default()
                };
                RaftCore::new(o, init, &Empty, Rng::new(i as u64), discard_logger()).unwrap()
            })
            .collect();
        let mut g = Group {
            ids,
            cores,
            logs: vec![Vec::new(); 3],
            net: VecDeque::new(),
            reports: VecDeque::new(),
            now: 0,
            counted: 0,
            counting: false,
        };
        for i in 0..3 {
            let actions: Vec<Action> = g.cores[i].start(0).drain().collect();
            g.carry_out(i, actions, None);
        }
        g
    }

    fn step(&mut self, i: usize, ev: Event<'_>, metas: Option<&[EntryMeta]>) {
        let before = allocations();
        let actions = self.cores[i].step(self.now, ev);
        let after = allocations();
        if self.counting {
            self.counted += after - before;
        }
        let list: Vec<Action> = actions.drain().collect();
        self.carry_out(i, list, metas);
    }

    fn carry_out(&mut self, i: usize, actions: Vec<Action>, metas: Option<&[EntryMeta]>) {
        for a in actions {
            match a {
                Action::PersistHardState(hs) => {
                    self.reports.push_back((i, Event::HardStatePersisted(hs)))
                }
                Action::TruncateLog { after } => self.logs[i].truncate(after as usize),
                Action::AppendReceived { range } => {
                    self.logs[i].extend(metas.unwrap()[range].iter().map(|m| m.id));
                    let last = *self.logs[i].last().unwrap();
                    self.reports.push_back((i, Event::LogDurable(last)));
                }
                Action::AppendProposals { first_index, last } => {
                    self.logs[i]
                        .extend((first_index..=last.index).map(|x| LogId::new(x, last.term)));
                    self.reports.push_back((i, Event::LogDurable(last)));
                }
                Action::AppendNoOp(id) => {
                    self.logs[i].push(id);
                    self.reports.push_back((i, Event::LogDurable(id)));
                }
                Action::Send { to, msg } => {
                    let to = self.ids.iter().position(|p| *p == to).unwrap();
                    self.net.push_back((i, to, msg));
                }
                Action::SendAppend { to, send } => {
                    let to = self.ids.iter().position(|p| *p == to).unwrap();
                    let entries = (send.prev.index + 1..=send.last_index)
                        .map(|x| EntryMeta {
                            id: self.logs[i][x as usize - 1],
                            kind: EntryType::Data,
                            conf: None,
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
                    self.net.push_back((i, to, Message::AppendEntries(req)));
                }
                _ => {}
            }
        }
    }

    /// Delivers every report and message until quiet.
    fn settle(&mut self) {
        loop {
            if let Some((i, ev)) = self.reports.pop_front() {
                self.step(i, ev, None);
            } else if let Some((from, to, msg)) = self.net.pop_front() {
                let metas = match &msg {
                    Message::AppendEntries(r) => Some(r.entries.clone()),
                    _ => None,
                };
                let from = self.ids[from];
                self.step(to, Event::Message { from, msg: &msg }, metas.as_deref());
            } else {
                return;
            }
        }
    }
}

#[test]
fn the_hot_path_makes_no_allocation() {
    let before = allocations();
    let probe = std::hint::black_box(vec![1u8; 10]);
    assert!(allocations() > before, "the counter sees allocations");
    drop(probe);
    let mut g = Group::new();
    g.now = 300;
    g.step(0, Event::Timeout(TimerKind::Election), None);
    g.settle();
    assert_eq!(g.cores[0].role(), Role::Leader);
    // Warm up: buffers grow to their working size.
    for _ in 0..200 {
        g.step(0, Event::Propose { count: 8 }, None);
        g.settle();
    }
    g.counting = true;
    let commit_before = g.cores[0].commit_index();
    for round in 0..2_000u64 {
        g.now += 1;
        g.step(
            0,
            Event::Propose {
                count: 1 + round % 8,
            },
            None,
        );
        if round % 10 == 0 {
            g.step(0, Event::Timeout(TimerKind::Heartbeat), None);
        }
        g.settle();
    }
    assert!(g.cores[0].commit_index() > commit_before + 2_000);
    assert_eq!(
        g.counted, 0,
        "allocations inside RaftCore::step on the hot path"
    );
}
