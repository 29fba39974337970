//! A linearizability checker for one key's history (Wing & Gong's search with Lowe's
//! memoisation, as Porcupine implements it): find an order of the operations that respects
//! real time (an operation that completed before another began comes first) and in which every
//! result matches a sequential register with compare-and-swap.
//!
//! Histories are checked per key (linearizability is compositional). An operation whose
//! outcome is unknown (the client gave up) completes "at infinity": it may take effect at any
//! point after its invocation, or never (placing it last affects no observed result).
//! Runs in the test thread; no IO. The search is exponential in the worst case, so it takes
//! a step budget and reports when it gives up.

use std::collections::HashSet;

use crate::sim::kv::{Op, OpResult};

/// One operation of a history on a single key.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HistoryOp {
    /// The client (for messages only).
    pub client: u32,
    /// When it was invoked: a strictly increasing history clock.
    pub invoke: u64,
    /// When it completed, or `None` when its outcome is unknown.
    pub complete: Option<u64>,
    /// What was asked.
    pub op: Op,
    /// What was answered (`None` when unknown).
    pub result: Option<OpResult>,
}

/// The checker's verdict.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// A valid order exists.
    Linearizable,
    /// No order exists.
    NotLinearizable,
    /// The search exceeded its step budget.
    GaveUp,
}

/// The sequential model: a register of `Option<u64>` with compare-and-swap. Returns whether
/// the operation's (known) result is possible from `state`, and the state after it.
pub fn model_step(op: &HistoryOp, state: Option<u64>) -> (bool, Option<u64>) {
    match (op.op, op.result) {
        (Op::Put(v), _) => (true, Some(v)),
        (Op::Get, Some(OpResult::Value(v))) => (v == state, state),
        (Op::Get, _) => (true, state),
        (Op::Cas { expected, new }, result) => {
            let ok = state == Some(expected);
            let after = if ok { Some(new) } else { state };
            match result {
                Some(OpResult::Swapped(claimed)) => (claimed == ok, after),
                _ => (true, after),
            }
        }
    }
}

/// The doubly linked list of call and return events the search lifts operations out of.
struct Events {
    /// (operation, is_call) per event; event 0 is the head sentinel.
    kind: Vec<(usize, bool)>,
    next: Vec<usize>,
    prev: Vec<usize>,
    /// The event index of each operation's return.
    ret_of: Vec<usize>,
}

const END: usize = usize::MAX;

impl Events {
    fn new(ops: &[HistoryOp]) -> Events {
        // (time, is_return, op): calls and returns in real-time order; unknown returns last.
        let mut order: Vec<(u64, bool, usize)> = Vec::with_capacity(ops.len() * 2);
        for (i, o) in ops.iter().enumerate() {
            order.push((o.invoke, false, i));
            order.push((o.complete.unwrap_or(u64::MAX), true, i));
        }
        order.sort_unstable();
        let n = order.len();
        let mut ev = Events {
            kind: vec![(0, false)],
            next: vec![if n == 0 { END } else { 1 }],
            prev: vec![END],
            ret_of: vec![0; ops.len()],
        };
        for (k, (_, is_return, op)) in order.into_iter().enumerate() {
            let idx = k + 1;
            ev.kind.push((op, !is_return));
            ev.next.push(if idx == n { END } else { idx + 1 });
            ev.prev.push(idx - 1);
            if is_return {
                ev.ret_of[op] = idx;
            }
        }
        ev
    }

    fn unlink(&mut self, e: usize) {
        let (p, n) = (self.prev[e], self.next[e]);
        self.next[p] = n;
        if n != END {
            self.prev[n] = p;
        }
    }

    fn relink(&mut self, e: usize) {
        let (p, n) = (self.prev[e], self.next[e]);
        self.next[p] = e;
        if n != END {
            self.prev[n] = e;
        }
    }

    /// Removes an operation's call and return (linearized).
    fn lift(&mut self, call: usize) {
        let ret = self.ret_of[self.kind[call].0];
        self.unlink(call);
        self.unlink(ret);
    }

    /// Puts them back, in reverse order of removal.
    fn unlift(&mut self, call: usize) {
        let ret = self.ret_of[self.kind[call].0];
        self.relink(ret);
        self.relink(call);
    }
}

/// Checks one key's history, starting from an unwritten register, within `step_budget`.
pub fn check(ops: &[HistoryOp], step_budget: u64) -> Verdict {
    let mut ev = Events::new(ops);
    let words = ops.len().div_ceil(64);
    let mut linearized = vec![0u64; words];
    let mut cache: HashSet<(Vec<u64>, Option<u64>)> = HashSet::new();
    let mut stack: Vec<(usize, Option<u64>)> = Vec::new();
    let mut state: Option<u64> = None;
    let mut cur = ev.next[0];
    let mut steps = 0u64;
    loop {
        steps += 1;
        if steps > step_budget {
            return Verdict::GaveUp;
        }
        if cur == END {
            return Verdict::Linearizable; // every operation placed
        }
        let (op, is_call) = ev.kind[cur];
        if is_call {
            let (ok, after) = model_step(&ops[op], state);
            if ok {
                linearized[op / 64] |= 1 << (op % 64);
                if cache.insert((linearized.clone(), after)) {
                    stack.push((cur, state));
                    state = after;
                    ev.lift(cur);
                    cur = ev.next[0];
                    continue;
                }
                linearized[op / 64] &= !(1 << (op % 64));
            }
            cur = ev.next[cur];
        } else {
            // An operation returned before being placed: undo the last choice.
            let Some((call, before)) = stack.pop() else {
                return Verdict::NotLinearizable;
            };
            let op = ev.kind[call].0;
            linearized[op / 64] &= !(1 << (op % 64));
            state = before;
            ev.unlift(call);
            cur = ev.next[call];
        }
    }
}
