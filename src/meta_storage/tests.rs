//! RaftMetaStorage: round trips, first start, refusals, the directory lock, corruption of
//! every byte, and a crash at every step of a change (old or new, never neither).

use super::*;
use crate::fs::{CrashMode, FaultFs, FaultKind, FaultOp, FaultRule, RealFs};

fn peer(s: &str) -> PeerId {
    s.parse().unwrap()
}

fn tempdir() -> tempfile::TempDir {
    crate::log_storage::segment::tests::tempdir()
}

#[test]
fn term_and_vote_survive_reopen() {
    let dir = tempdir();
    let mut m = RaftMetaStorage::open(RealFs::shared(), dir.path()).unwrap();
    assert!(m.is_first_start());
    assert_eq!((m.term(), m.voted_for()), (1, None));
    m.set_term_and_voted_for(3, Some(peer("10.0.0.1:8000:0")))
        .unwrap();
    drop(m);
    let mut m = RaftMetaStorage::open(RealFs::shared(), dir.path()).unwrap();
    assert!(!m.is_first_start());
    assert_eq!(
        (m.term(), m.voted_for()),
        (3, Some(peer("10.0.0.1:8000:0")))
    );
    m.set_term_and_voted_for(4, None).unwrap();
    m.set_term_and_voted_for(4, Some(peer("[::1]:9:2")))
        .unwrap();
    drop(m);
    let m = RaftMetaStorage::open(RealFs::shared(), dir.path()).unwrap();
    assert_eq!((m.term(), m.voted_for()), (4, Some(peer("[::1]:9:2"))));
}

#[test]
fn a_second_open_is_refused() {
    let dir = tempdir();
    let _m = RaftMetaStorage::open(RealFs::shared(), dir.path()).unwrap();
    let err = RaftMetaStorage::open(RealFs::shared(), dir.path())
        .err()
        .unwrap();
    assert!(matches!(err, RaftError::DirectoryLocked { .. }), "{err}");
}

#[test]
#[cfg_attr(debug_assertions, should_panic(expected = "term going backwards"))]
fn a_term_going_backwards_is_refused() {
    let dir = tempdir();
    let mut m = RaftMetaStorage::open(RealFs::shared(), dir.path()).unwrap();
    m.set_term_and_voted_for(5, None).unwrap();
    let err = m.set_term_and_voted_for(4, None).unwrap_err();
    assert!(matches!(err, RaftError::Invalid { .. }), "{err}");
}

#[test]
#[cfg_attr(debug_assertions, should_panic(expected = "second vote"))]
fn a_second_vote_in_one_term_is_refused() {
    let dir = tempdir();
    let mut m = RaftMetaStorage::open(RealFs::shared(), dir.path()).unwrap();
    m.set_term_and_voted_for(5, Some(peer("1.1.1.1:1:0")))
        .unwrap();
    let err = m
        .set_term_and_voted_for(5, Some(peer("1.1.1.2:1:0")))
        .unwrap_err();
    assert!(matches!(err, RaftError::Invalid { .. }), "{err}");
}

#[test]
fn every_flipped_bit_or_cut_is_corruption_naming_the_file() {
    let dir = tempdir();
    let mut m = RaftMetaStorage::open(RealFs::shared(), dir.path()).unwrap();
    m.set_term_and_voted_for(7, Some(peer("10.0.0.9:80:1")))
        .unwrap();
    let path = m.path().to_path_buf();
    drop(m);
    let good = std::fs::read(&path).unwrap();
    let mut variants: Vec<Vec<u8>> = (0..good.len() * 8)
        .map(|bit| {
            let mut b = good.clone();
            b[bit / 8] ^= 1 << (bit % 8);
            b
        })
        .collect();
    variants.extend((0..good.len()).map(|n| good[..n].to_vec()));
    for bad in variants {
        std::fs::write(&path, &bad).unwrap();
        match RaftMetaStorage::open(RealFs::shared(), dir.path()) {
            Err(RaftError::Corruption { file, .. }) => assert_eq!(file, path),
            Err(e) => panic!("expected Corruption, got {e}"),
            Ok(m) => panic!("damage went unnoticed: term {}", m.term()),
        }
        assert_eq!(std::fs::read(&path).unwrap(), bad, "the file was changed");
    }
}

#[test]
fn crash_at_every_step_of_a_change_leaves_old_or_new() {
    for step in 0.. {
        let dir = tempdir();
        let fs = FaultFs::new(dir.path(), step).unwrap();
        let mut m = RaftMetaStorage::open(fs.shared(), dir.path()).unwrap();
        m.set_term_and_voted_for(2, Some(peer("1.1.1.1:1:0")))
            .unwrap();
        let faults = fs.stats().faults;
        fs.inject(
            FaultRule::new(FaultOp::Any, FaultKind::Eio)
                .after(step)
                .times(1),
        );
        let r = m.set_term_and_voted_for(3, Some(peer("1.1.1.2:1:0")));
        let hit = fs.stats().faults > faults;
        if r.is_err() {
            let again = m.set_term_and_voted_for(3, None).unwrap_err();
            assert!(matches!(again, RaftError::ErrorState { .. }), "{again}");
            assert_eq!(m.term(), 2);
        }
        fs.clear_faults();
        drop(m);
        fs.crash(CrashMode::Torn).unwrap();
        let m = RaftMetaStorage::open(fs.shared(), dir.path()).unwrap();
        let got = (m.term(), m.voted_for());
        if r.is_ok() {
            assert_eq!(got, (3, Some(peer("1.1.1.2:1:0"))), "step {step}");
        } else {
            assert!(
                got == (2, Some(peer("1.1.1.1:1:0"))) || got == (3, Some(peer("1.1.1.2:1:0"))),
                "step {step}: {got:?}"
            );
        }
        if !hit {
            assert!(step >= 4, "only {step} steps");
            break;
        }
    }
}
