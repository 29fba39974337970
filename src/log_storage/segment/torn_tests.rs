//! Recovery (RELIABILITY.md trap 8): a torn last batch is cut back to exactly the entries
//! wholly written, at every byte offset and with its pages written back in any order; a
//! flipped bit in anything synced is `Corruption` naming file and offset, with the files left
//! untouched.
//!
//! `TRAFT_STORAGE_HEAVY=1` runs the torn-tail sweep with multi-page entries (every offset of
//! ~12 KiB instead of ~400 bytes).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use super::tests::{assert_log, entries, entry, open_fault, open_real, tempdir};
use super::*;
use crate::fs::{CrashMode, FaultFs, FaultKind, FaultOp, FaultRule};

const SEGMENT: u64 = 64 << 10;

fn heavy() -> bool {
    std::env::var_os("TRAFT_STORAGE_HEAVY").is_some()
}

/// Every file of a directory but the lock, by name.
fn snapshot(dir: &Path) -> BTreeMap<String, Vec<u8>> {
    let mut out = BTreeMap::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let e = e.unwrap();
        let name = e.file_name().to_string_lossy().into_owned();
        if name != "LOCK" {
            out.insert(name, std::fs::read(e.path()).unwrap());
        }
    }
    out
}

fn restore(dir: &Path, snap: &BTreeMap<String, Vec<u8>>) {
    for name in snapshot(dir).keys() {
        std::fs::remove_file(dir.join(name)).unwrap();
    }
    for (name, bytes) in snap {
        std::fs::write(dir.join(name), bytes).unwrap();
    }
}

/// A log whose open segment ends with a last batch that a crash may have torn.
struct Built {
    dir: tempfile::TempDir,
    /// The open segment.
    file: PathBuf,
    /// Entries of the batches before the last.
    before: Vec<LogEntry>,
    /// The last batch.
    last: Vec<LogEntry>,
    /// `(record start, record end)` of each entry of the last batch.
    spans: Vec<(u64, u64)>,
    /// Offset where the last batch starts and where its batch end record ends.
    batch: (u64, u64),
}

fn build(prior_batches: u64, last_count: u64, len: usize) -> Built {
    let dir = tempdir();
    let s = open_real(dir.path(), SEGMENT).unwrap();
    let mut before = Vec::new();
    for b in 0..prior_batches {
        let batch = entries(b * 3 + 1, b * 3 + 3, 1 + b / 2, 40 + 17 * b as usize);
        s.append_entries(&batch).unwrap();
        before.extend(batch);
    }
    let first = prior_batches * 3 + 1;
    let last = entries(first, first + last_count - 1, 9, len);
    s.append_entries(&last).unwrap();
    let spans: Vec<(u64, u64)> = last
        .iter()
        .map(|e| {
            let off = s.index.read().locate(e.id.index).unwrap().1;
            (off, off + format::entry_record_len(e))
        })
        .collect();
    let batch = (spans[0].0, spans[spans.len() - 1].1 + format::BATCH_END_LEN);
    let file = dir.path().join(s.segment_names().unwrap().pop().unwrap());
    drop(s); // no close: the process dies with this batch the last one written
    Built {
        dir,
        file,
        before,
        last,
        spans,
        batch,
    }
}

impl Built {
    /// The log recovery must find when bytes from `cut` on are lost.
    fn expected(&self, cut: u64) -> Vec<LogEntry> {
        let kept = self.spans.iter().take_while(|s| s.1 <= cut).count();
        let mut want = self.before.clone();
        want.extend_from_slice(&self.last[..kept]);
        want
    }
}

#[derive(Clone, Copy, Debug)]
enum Tear {
    /// Every byte from the offset on is zero, as a crash before writeback leaves it.
    Zero,
    /// The file ends at the offset, as a file system may leave it.
    Shrink,
}

fn tear(file: &Path, at: u64, how: Tear) {
    let f = std::fs::OpenOptions::new().write(true).open(file).unwrap();
    match how {
        Tear::Shrink => f.set_len(at).unwrap(),
        Tear::Zero => {
            let len = f.metadata().unwrap().len();
            use std::os::unix::fs::FileExt;
            f.write_all_at(&vec![0u8; (len - at) as usize], at).unwrap();
        }
    }
}

fn torn_tail_at_every_offset(b: Built) {
    let snap = snapshot(b.dir.path());
    let (start, end) = b.batch;
    for at in start..=end {
        for how in [Tear::Zero, Tear::Shrink] {
            restore(b.dir.path(), &snap);
            tear(&b.file, at, how);
            let s = open_real(b.dir.path(), SEGMENT)
                .unwrap_or_else(|e| panic!("torn at {at} ({how:?}): {e}"));
            let want = b.expected(at);
            assert_log(&s, 1, &want);
            if at % 16 == 0 {
                // The cut log takes new entries and keeps them.
                let next = entry(want.len() as u64 + 1, 10, 33);
                s.append_entries(std::slice::from_ref(&next)).unwrap();
                drop(s);
                let mut want = want;
                want.push(next);
                assert_log(&open_real(b.dir.path(), SEGMENT).unwrap(), 1, &want);
            }
        }
    }
}

#[test]
fn torn_tail_at_every_byte_offset_keeps_exactly_the_whole_entries() {
    torn_tail_at_every_offset(build(5, 4, 60));
    if heavy() {
        torn_tail_at_every_offset(build(3, 4, 3000));
    }
}

/// Subsets of the pages under the last batch that never reached the disk.
fn pages_of(b: &Built) -> Vec<(u64, u64)> {
    let (start, end) = b.batch;
    let mut pages = Vec::new();
    let mut p = start - start % 4096;
    while p < end {
        pages.push((p.max(start), (p + 4096).min(end)));
        p += 4096;
    }
    pages
}

#[test]
fn last_batch_written_back_out_of_order_is_recovered_as_torn() {
    let b = build(4, 8, 1700);
    let snap = snapshot(b.dir.path());
    let pages = pages_of(&b);
    assert!(
        pages.len() >= 4,
        "the last batch must span pages: {pages:?}"
    );
    for missing in 1..(1u32 << pages.len()) - 1 {
        restore(b.dir.path(), &snap);
        let mut bytes = std::fs::read(&b.file).unwrap();
        let mut first_missing = u64::MAX;
        for (i, &(lo, hi)) in pages.iter().enumerate() {
            if missing & (1 << i) != 0 {
                bytes[lo as usize..hi as usize].fill(0);
                first_missing = first_missing.min(lo);
            }
        }
        std::fs::write(&b.file, &bytes).unwrap();
        let s = open_real(b.dir.path(), SEGMENT)
            .unwrap_or_else(|e| panic!("pages missing {missing:b}: {e}"));
        assert_log(&s, 1, &b.expected(first_missing));
    }
}

#[test]
fn crash_during_the_last_batch_recovers_a_prefix_for_every_seed() {
    let mut outcomes = std::collections::BTreeSet::new();
    for seed in 0..40 {
        let dir = tempdir();
        let fs = FaultFs::new(dir.path(), seed).unwrap();
        let s = open_fault(&fs, dir.path(), SEGMENT).unwrap();
        let synced = entries(1, 12, 1, 700);
        s.append_entries(&synced).unwrap();
        fs.inject(FaultRule::new(FaultOp::Sync, FaultKind::SkipSync).times(1));
        let torn = entries(13, 24, 2, 900);
        s.append_entries(&torn).unwrap();
        drop(s);
        fs.crash(CrashMode::Torn).unwrap();
        let s = open_fault(&fs, dir.path(), SEGMENT).unwrap_or_else(|e| panic!("seed {seed}: {e}"));
        let last = s.last_log_index();
        assert!((12..=24).contains(&last), "seed {seed}: last {last}");
        let mut want = synced.clone();
        want.extend_from_slice(&torn[..(last - 12) as usize]);
        assert_log(&s, 1, &want);
        outcomes.insert(last);
    }
    // The crashes really tore the batch at different places.
    assert!(outcomes.len() >= 3, "{outcomes:?}");
}

/// Flips one bit of `file` at `at`, opens, and expects `Corruption` at `offset` with the
/// directory unchanged.
fn expect_corruption(dir: &Path, file: &Path, at: u64, offset: u64) {
    let mut bytes = std::fs::read(file).unwrap();
    bytes[at as usize] ^= 1 << (at % 8);
    std::fs::write(file, &bytes).unwrap();
    let before = snapshot(dir);
    match open_real(dir, SEGMENT) {
        Err(RaftError::Corruption {
            file: f, offset: o, ..
        }) => {
            assert_eq!(f, file, "flip at {at}");
            assert_eq!(o, offset, "flip at {at}");
        }
        Err(e) => panic!("flip at {at}: expected Corruption, got {e}"),
        Ok(s) => panic!(
            "flip at {at} went unnoticed: log now ends at {}",
            s.last_log_index()
        ),
    }
    assert!(snapshot(dir) == before, "flip at {at}: files changed");
    bytes[at as usize] ^= 1 << (at % 8);
    std::fs::write(file, &bytes).unwrap();
}

#[test]
fn flipped_bit_before_the_last_batch_is_corruption_at_its_record() {
    let b = build(5, 4, 60);
    let s = open_real(b.dir.path(), SEGMENT).unwrap();
    // Entries 4..=6 are the second batch; 7 starts the third.
    let (_, start) = s.index.read().locate(4).unwrap();
    let (_, next) = s.index.read().locate(7).unwrap();
    drop(s);
    let spans = record_spans(&b.file, start, next);
    for at in start..next {
        let rec = spans.iter().rev().find(|s| **s <= at).copied().unwrap();
        expect_corruption(b.dir.path(), &b.file, at, rec);
    }
}

/// Record start offsets from `start` up to `end` (entries and batch ends).
fn record_spans(file: &Path, start: u64, end: u64) -> Vec<u64> {
    let bytes = std::fs::read(file).unwrap();
    let header = format::decode_header(&bytes).unwrap();
    let mut out = Vec::new();
    let mut off = start;
    while off < end {
        out.push(off);
        off = match format::decode_record(&bytes, off, header.salt).unwrap() {
            format::Record::Entry { end, .. } => end,
            format::Record::BatchEnd { record_end, .. } => record_end,
        };
    }
    out
}

#[test]
fn flipped_bit_in_the_last_batch_after_a_crash_is_corruption() {
    let b = build(5, 4, 60);
    let spans = record_spans(&b.file, b.batch.0, b.batch.1);
    let entries_end = b.spans[b.spans.len() - 1].1;
    for at in b.batch.0..entries_end {
        let rec = spans.iter().rev().find(|s| **s <= at).copied().unwrap();
        expect_corruption(b.dir.path(), &b.file, at, rec);
    }
}

#[test]
fn flipped_bit_in_the_last_batch_after_a_clean_close_is_corruption() {
    let b = build(5, 4, 60);
    open_real(b.dir.path(), SEGMENT).unwrap().close().unwrap();
    let spans = record_spans(&b.file, b.batch.0, b.batch.1);
    for at in b.batch.0..b.batch.1 {
        let rec = spans.iter().rev().find(|s| **s <= at).copied().unwrap();
        expect_corruption(b.dir.path(), &b.file, at, rec);
    }
}

#[test]
fn flipped_bit_in_a_closed_segment_or_a_header_is_corruption() {
    let dir = tempdir();
    let s = open_real(dir.path(), 4096).unwrap();
    for i in 1..=20 {
        s.append_entries(&[entry(i, 1, 400)]).unwrap();
    }
    let closed = dir.path().join(format::closed_name(1, 8));
    assert!(closed.exists(), "{:?}", s.segment_names());
    drop(s);
    for at in [0, 20, 44, 48, 50, 60, 73, 200, 460, 2000] {
        let offset = if at < format::HEADER_LEN {
            0
        } else {
            48 + (at - 48) / 466 * 466
        };
        expect_corruption(dir.path(), &closed, at, offset);
    }
}

#[test]
fn flipped_bit_in_log_meta_is_corruption() {
    let dir = tempdir();
    open_real(dir.path(), 4096)
        .unwrap()
        .append_entries(&entries(1, 3, 1, 10))
        .unwrap();
    let meta = dir.path().join(format::META_FILE);
    for at in 0..format::META_LEN as u64 {
        expect_corruption(dir.path(), &meta, at, 0);
    }
}

#[test]
fn a_missing_segment_in_the_middle_is_corruption() {
    let dir = tempdir();
    let s = open_real(dir.path(), 4096).unwrap();
    for i in 1..=20 {
        s.append_entries(&[entry(i, 1, 400)]).unwrap();
    }
    drop(s);
    std::fs::remove_file(dir.path().join(format::closed_name(9, 16))).unwrap();
    let err = open_real(dir.path(), 4096).err().unwrap();
    assert!(
        matches!(&err, RaftError::Corruption { reason, .. } if reason.contains("missing")),
        "{err}"
    );
}

#[test]
fn a_lost_rollover_rename_is_redone_but_an_overlap_is_corruption() {
    let build = |dir: &Path, first: u64, last: u64| {
        let s = open_real(dir, 4096).unwrap();
        s.reset(first).unwrap(); // both logs at epoch 1
        for i in first..=last {
            s.append_entries(&[entry(i, 1, 400)]).unwrap();
        }
    };
    let (dir, other) = (tempdir(), tempdir());
    build(dir.path(), 1, 20);
    let sealed = dir.path().join(format::closed_name(1, 8));
    let reopened = dir.path().join(format::open_name(1));
    // The rollover's rename of 1..=8 was lost: redone at open.
    std::fs::rename(&sealed, &reopened).unwrap();
    let clean = open_real(dir.path(), 4096).unwrap();
    assert_log(
        &clean,
        1,
        &(1..=20).map(|i| entry(i, 1, 400)).collect::<Vec<_>>(),
    );
    drop(clean);
    assert!(sealed.exists());
    // Now an open segment holding 1..=8 followed by a segment starting at 5.
    build(other.path(), 5, 12);
    for name in [format::closed_name(9, 16), format::open_name(17)] {
        std::fs::remove_file(dir.path().join(name)).unwrap();
    }
    std::fs::rename(&sealed, &reopened).unwrap();
    let overlap = format::open_name(5);
    std::fs::copy(other.path().join(&overlap), dir.path().join(&overlap)).unwrap();
    let before = snapshot(dir.path());
    let err = open_real(dir.path(), 4096).err().unwrap();
    assert!(
        matches!(&err, RaftError::Corruption { file, .. } if *file == reopened),
        "{err}"
    );
    assert!(snapshot(dir.path()) == before, "files changed");
}
