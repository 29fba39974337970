//! Model test: random sequences of append / truncate_prefix / truncate_suffix / reset /
//! close+reopen / crash+reopen on a `SegmentLogStorage` (over the fault-injecting file layer,
//! with tiny segments so that rollover, sealing and dedicated segments happen all the time)
//! agree with `MemoryLogStorage` after every step. Every operation returned before the crash,
//! so a crash must lose nothing. `PROPTEST_CASES=N` runs more cases (default 64).

use bytes::Bytes;
use proptest::prelude::*;

use super::segment::{SegmentLogStorageOptions, SparePreparation};
use super::*;
use crate::fs::{CrashMode, FaultFs};
use crate::types::{EntryType, LogId, Rng};

#[derive(Clone, Debug)]
enum Op {
    /// `count` entries of `len` bytes; a new term first if `bump`.
    Append {
        count: u8,
        len: u16,
        bump: bool,
    },
    /// To a point of the range `first..=last + 1`, as a fraction of 256.
    TruncatePrefix(u8),
    /// To a point of `first - 1..=last`, as a fraction of 256.
    TruncateSuffix(u8),
    /// To `last + 1 + k - 3` (at least 1).
    Reset(u8),
    Reopen,
    Crash {
        torn: bool,
    },
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        8 => (1u8..12, prop_oneof![4 => 0u16..400, 1 => 3000u16..6000], any::<bool>())
            .prop_map(|(count, len, bump)| Op::Append { count, len, bump }),
        2 => any::<u8>().prop_map(Op::TruncatePrefix),
        3 => any::<u8>().prop_map(Op::TruncateSuffix),
        1 => (0u8..8).prop_map(Op::Reset),
        1 => Just(Op::Reopen),
        1 => any::<bool>().prop_map(|torn| Op::Crash { torn }),
    ]
}

struct Harness {
    dir: tempfile::TempDir,
    fs: FaultFs,
    seg: Option<SegmentLogStorage>,
    model: MemoryLogStorage,
    term: u64,
    rng: Rng,
}

impl Harness {
    fn new(seed: u64) -> Harness {
        let dir = super::segment::tests::tempdir();
        let fs = FaultFs::new(dir.path(), seed).unwrap();
        let mut h = Harness {
            dir,
            fs,
            seg: None,
            model: MemoryLogStorage::new(),
            term: 1,
            rng: Rng::new(seed),
        };
        h.reopen();
        h
    }

    fn reopen(&mut self) {
        self.seg = None;
        let opts = SegmentLogStorageOptions {
            segment_size: 4096,
            logger: crate::logging::discard_logger(),
            spare: SparePreparation::Inline,
            spare_after_bytes: None,
            sync_appends: true,
        };
        let s = SegmentLogStorage::open(self.fs.shared(), self.dir.path(), opts);
        self.seg = Some(s.unwrap_or_else(|e| panic!("reopen failed: {e}")));
    }

    fn seg(&self) -> &SegmentLogStorage {
        self.seg.as_ref().unwrap()
    }

    fn apply(&mut self, op: &Op) {
        let (first, last) = (self.model.first_log_index(), self.model.last_log_index());
        let both = |h: &Harness, f: &dyn Fn(&dyn LogStorage) -> Result<()>| {
            let (a, b) = (f(h.seg()), f(&h.model));
            assert_eq!(a, b, "{op:?}: segment and model disagree");
        };
        match *op {
            Op::Append { count, len, bump } => {
                self.term += bump as u64;
                let batch: Vec<LogEntry> = (0..count as u64)
                    .map(|i| self.entry(last + 1 + i, len as usize))
                    .collect();
                both(self, &|s| s.append_entries(&batch));
            }
            Op::TruncatePrefix(p) => {
                let to = first + u64::from(p) * (last + 2 - first) / 256;
                both(self, &|s| s.truncate_prefix(to));
            }
            Op::TruncateSuffix(p) => {
                let to = first - 1 + u64::from(p) * (last + 2 - first) / 256;
                both(self, &|s| s.truncate_suffix(to));
            }
            Op::Reset(k) => {
                let next = (last + 1 + u64::from(k)).saturating_sub(3).max(1);
                both(self, &|s| s.reset(next));
            }
            Op::Reopen => {
                self.seg().close().unwrap();
                self.reopen();
            }
            Op::Crash { torn } => {
                self.seg = None;
                let mode = if torn {
                    CrashMode::Torn
                } else {
                    CrashMode::DropUnsynced
                };
                self.fs.crash(mode).unwrap();
                self.reopen();
            }
        }
    }

    fn entry(&mut self, index: u64, len: usize) -> LogEntry {
        let data: Vec<u8> = (0..len).map(|_| self.rng.next_u64() as u8).collect();
        let kind = if len == 0 {
            EntryType::NoOp
        } else {
            EntryType::Data
        };
        LogEntry::new(LogId::new(index, self.term), kind, Bytes::from(data))
    }

    fn check(&self, step: usize) {
        let (s, m) = (self.seg(), &self.model);
        let (first, last) = (m.first_log_index(), m.last_log_index());
        assert_eq!(
            (s.first_log_index(), s.last_log_index()),
            (first, last),
            "step {step}"
        );
        for i in first.saturating_sub(1)..=last + 1 {
            assert_eq!(s.get(i), m.get(i), "step {step}: entry {i}");
            assert_eq!(s.term_at(i), m.term_at(i), "step {step}: term {i}");
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: std::env::var("PROPTEST_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(64),
        ..ProptestConfig::default()
    })]

    #[test]
    fn segment_storage_agrees_with_the_memory_model(
        seed in any::<u64>(),
        ops in proptest::collection::vec(op(), 1..40),
    ) {
        let mut h = Harness::new(seed);
        for (step, op) in ops.iter().enumerate() {
            h.apply(op);
            h.check(step);
        }
    }
}
