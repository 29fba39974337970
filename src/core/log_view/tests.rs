//! LogView tests: the run-length shape against a plain vector of terms on random logs, the
//! conflict hint against a brute-force scan, and durability reports across truncations.

use proptest::prelude::*;

use super::*;
use crate::core::message::EntryMeta;
use crate::types::EntryType;

/// A plain log of terms, entry `i` at `terms[i - first]`.
struct TermLog {
    first: u64,
    base_term: u64,
    terms: Vec<u64>,
}

impl LogRead for TermLog {
    fn first_index(&self) -> u64 {
        self.first
    }
    fn last_index(&self) -> u64 {
        self.first + self.terms.len() as u64 - 1
    }
    fn term_at(&self, index: u64) -> Option<u64> {
        if index + 1 == self.first {
            return Some(self.base_term);
        }
        if index < self.first {
            return None;
        }
        self.terms.get((index - self.first) as usize).copied()
    }
}

fn terms() -> impl Strategy<Value = Vec<u64>> {
    proptest::collection::vec(0u64..3, 0..60).prop_map(|bumps| {
        let mut t = 1;
        bumps
            .into_iter()
            .map(|b| {
                t += u64::from(b == 2);
                t
            })
            .collect()
    })
}

fn metas(first: u64, terms: &[u64]) -> Vec<EntryMeta> {
    terms
        .iter()
        .enumerate()
        .map(|(i, t)| EntryMeta {
            id: LogId::new(first + i as u64, *t),
            kind: EntryType::Data,
            conf: None,
        })
        .collect()
}

proptest! {
    #[test]
    fn shape_matches_the_log(terms in terms(), first in 1u64..5) {
        let log = TermLog { first, base_term: if first == 1 { 0 } else { 1 }, terms };
        let view = LogView::from_log(&log, 0).unwrap();
        view.check().unwrap();
        prop_assert_eq!(view.last_index(), log.last_index());
        for i in 0..log.last_index() + 3 {
            prop_assert_eq!(view.term_at(i), log.term_at(i), "index {}", i);
        }
    }

    #[test]
    fn conflict_hint_matches_a_scan(terms in terms(), index in 0u64..70, term in 0u64..30) {
        let log = TermLog { first: 1, base_term: 0, terms };
        let view = LogView::from_log(&log, 0).unwrap();
        let got = view.last_at_or_below(index, term);
        let want = (0..=index.min(log.last_index()))
            .rev()
            .find(|i| log.term_at(*i).unwrap() <= term)
            .map(|i| LogId::new(i, log.term_at(i).unwrap()))
            .unwrap_or_default();
        prop_assert_eq!(got, want);
    }

    #[test]
    fn appends_and_truncations_keep_the_shape(
        ops in proptest::collection::vec((0u8..3, 1u64..5), 1..40)
    ) {
        let mut view = empty();
        let mut model: Vec<u64> = Vec::new();
        let mut term = 1;
        for (op, n) in ops {
            match op {
                0 => {
                    view.append_local(n, term);
                    model.extend(std::iter::repeat_n(term, n as usize));
                }
                1 => {
                    term += 1;
                    let ts = vec![term; n as usize];
                    view.append_received(&metas(model.len() as u64 + 1, &ts));
                    model.extend(ts);
                }
                _ => {
                    let after = (model.len() as u64).saturating_sub(n);
                    view.truncate_after(after, false);
                    model.truncate(after as usize);
                }
            }
            view.check().unwrap();
            prop_assert_eq!(view.last_index(), model.len() as u64);
            for (i, t) in model.iter().enumerate() {
                prop_assert_eq!(view.term_at(i as u64 + 1), Some(*t));
            }
        }
    }
}

fn empty() -> LogView {
    LogView::from_log(
        &TermLog {
            first: 1,
            base_term: 0,
            terms: vec![],
        },
        0,
    )
    .unwrap()
}

#[test]
fn a_report_covers_its_write_and_every_earlier_one() {
    let mut v = empty();
    let (_, a) = v.append_local(3, 1);
    let (_, b) = v.append_local(2, 1);
    assert_eq!(v.durable(), 0);
    assert!(v.on_durable(b), "the later report covers both writes");
    assert_eq!(v.durable(), 5);
    assert!(
        !v.on_durable(a),
        "an already covered report changes nothing"
    );
    assert_eq!(v.writes_outstanding(), 0);
}

#[test]
fn an_old_report_never_vouches_for_a_re_appended_entry() {
    // Figure-8 style: (2, t2) written, truncated for (2, t3), truncated again and (2, t2)
    // re-appended. The first copy's report must not make the second copy durable.
    let mut v = empty();
    v.append_received(&metas(1, &[1]));
    v.append_received(&metas(2, &[2]));
    assert!(v.on_durable(LogId::new(1, 1)));
    v.truncate_after(1, false);
    v.append_received(&metas(2, &[3]));
    v.truncate_after(1, false);
    v.append_received(&metas(2, &[2]));
    assert!(!v.on_durable(LogId::new(2, 2)), "the first copy's report");
    assert_eq!(v.durable(), 1, "capped below the later truncation");
    assert!(
        !v.on_durable(LogId::new(2, 3)),
        "the middle copy was truncated: still capped"
    );
    assert_eq!(v.durable(), 1);
    assert!(
        v.on_durable(LogId::new(2, 2)),
        "the second copy's own report"
    );
    assert_eq!(v.durable(), 2);
}

#[test]
fn truncation_lowers_the_durable_prefix() {
    let mut v = empty();
    let (_, last) = v.append_local(5, 1);
    v.on_durable(last);
    v.truncate_after(3, false);
    assert_eq!(v.durable(), 3);
    assert!(
        !v.on_durable(last),
        "a repeated report for truncated entries is ignored"
    );
    assert_eq!(v.durable(), 3);
}

#[test]
#[should_panic(expected = "would drop committed entries")]
fn truncation_below_commit_is_refused() {
    let mut v = empty();
    v.append_local(5, 1);
    v.commit_to(4);
    v.truncate_after(3, false);
}

#[test]
fn a_log_that_is_not_a_raft_log_is_refused() {
    let err = LogView::from_log(
        &TermLog {
            first: 1,
            base_term: 0,
            terms: vec![2, 1],
        },
        0,
    );
    assert!(err.unwrap_err().to_string().contains("not monotonic"));
}
