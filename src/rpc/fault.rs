//! The transport's fault layer (feature `fault-injection`, and unit tests): per directed
//! link `(from listen address, to listen address)`, drop every frame (a one-way partition),
//! drop a fraction, delay by a range, duplicate, and heal, controlled at run time through one
//! [`FaultHandle`] that a test creates and passes to every `Server` it builds.
//!
//! Faults apply where a frame is queued for its socket, on the sending server: requests on
//! the link caller -> callee, responses on the link callee -> caller (the callee knows the
//! caller's listen address from its hello). The transport's own hello is never faulted.
//! Each link draws from its own generator, seeded from the handle's seed and the link's
//! addresses, so a link's choices depend only on the seed and its own frame sequence (real
//! threads make a run seeded, not deterministic). Runs on whichever thread queues a frame;
//! one short lock, skipped entirely while no link has a fault.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;

use super::Delivery;
use crate::types::Rng;

/// The longest delay the layer applies; longer ranges are cut to it.
pub const DELAY_MS_MAX: u64 = 3_600_000;

/// The faults of one directed link. The default is a healthy link.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct LinkFaults {
    /// Drop every frame: `from` can no longer reach `to` (a one-way partition).
    pub drop_all: bool,
    /// Drop each frame with this probability.
    pub drop_fraction: f64,
    /// Hold each frame for a uniform draw from `min..=max` milliseconds before it is queued
    /// (at most [`DELAY_MS_MAX`]).
    pub delay_ms: Option<(u64, u64)>,
    /// Let delayed frames overtake each other; by default a link keeps TCP's order, so a
    /// frame is never released before one queued earlier on the same link.
    pub reorder: bool,
    /// Send each frame twice with this probability.
    pub duplicate_fraction: f64,
}

impl LinkFaults {
    fn is_healthy(&self) -> bool {
        *self == LinkFaults::default()
    }
}

/// What the layer did, in total or on one link.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FaultStats {
    /// Frames that crossed a link with a fault configured.
    pub frames: u64,
    /// Frames dropped.
    pub dropped: u64,
    /// Frames delayed.
    pub delayed: u64,
    /// Frames sent twice.
    pub duplicated: u64,
}

impl FaultStats {
    fn add(&mut self, o: &FaultStats) {
        self.frames += o.frames;
        self.dropped += o.dropped;
        self.delayed += o.delayed;
        self.duplicated += o.duplicated;
    }
}

struct Link {
    faults: LinkFaults,
    rng: Rng,
    /// When the last delayed frame is released (keeps order unless `reorder`).
    release_at: Option<Instant>,
    stats: FaultStats,
}

#[derive(Default)]
struct State {
    links: HashMap<(SocketAddr, SocketAddr), Link>,
}

/// The run-time control of the fault layer. Cheap to clone; clones control the same links.
#[derive(Clone)]
pub struct FaultHandle {
    seed: u64,
    state: Arc<Mutex<State>>,
    /// Invariant: true iff some link has a fault; false lets frames skip the lock.
    active: Arc<AtomicBool>,
}

impl FaultHandle {
    /// A layer with every link healthy, drawing from `seed`.
    pub fn new(seed: u64) -> FaultHandle {
        FaultHandle {
            seed,
            state: Arc::new(Mutex::new(State::default())),
            active: Arc::new(AtomicBool::new(false)),
        }
    }

    /// The seed (print it when a test fails).
    pub fn seed(&self) -> u64 {
        self.seed
    }

    /// Sets every fault of the link `from -> to` at once.
    pub fn set_link(&self, from: SocketAddr, to: SocketAddr, faults: LinkFaults) {
        self.update(from, to, |f| *f = faults.clone());
    }

    /// The faults of the link `from -> to`.
    pub fn link(&self, from: SocketAddr, to: SocketAddr) -> LinkFaults {
        let st = self.state.lock();
        st.links
            .get(&(from, to))
            .map(|l| l.faults.clone())
            .unwrap_or_default()
    }

    /// `from` can no longer reach `to`; the reverse direction is untouched.
    pub fn cut(&self, from: SocketAddr, to: SocketAddr) {
        self.update(from, to, |f| f.drop_all = true);
    }

    /// Cuts every link between the two sides, both ways.
    pub fn partition(&self, side_a: &[SocketAddr], side_b: &[SocketAddr]) {
        for &a in side_a {
            for &b in side_b {
                self.cut(a, b);
                self.cut(b, a);
            }
        }
    }

    /// Drops each frame on `from -> to` with probability `fraction`.
    pub fn drop_fraction(&self, from: SocketAddr, to: SocketAddr, fraction: f64) {
        self.update(from, to, |f| f.drop_fraction = fraction);
    }

    /// Delays each frame on `from -> to` by `min_ms..=max_ms`, keeping their order.
    pub fn delay(&self, from: SocketAddr, to: SocketAddr, min_ms: u64, max_ms: u64) {
        self.update(from, to, |f| {
            f.delay_ms = Some((min_ms, max_ms.max(min_ms)))
        });
    }

    /// Sends each frame on `from -> to` twice with probability `fraction`.
    pub fn duplicate(&self, from: SocketAddr, to: SocketAddr, fraction: f64) {
        self.update(from, to, |f| f.duplicate_fraction = fraction);
    }

    /// Makes `from -> to` healthy again (frames already delayed still arrive).
    pub fn heal(&self, from: SocketAddr, to: SocketAddr) {
        self.update(from, to, |f| *f = LinkFaults::default());
    }

    /// Makes every link healthy.
    pub fn heal_all(&self) {
        let mut st = self.state.lock();
        for link in st.links.values_mut() {
            link.faults = LinkFaults::default();
        }
        self.active.store(false, Ordering::Release);
    }

    /// Totals over every link.
    pub fn stats(&self) -> FaultStats {
        let st = self.state.lock();
        let mut total = FaultStats::default();
        for link in st.links.values() {
            total.add(&link.stats);
        }
        total
    }

    /// What happened on the link `from -> to`.
    pub fn link_stats(&self, from: SocketAddr, to: SocketAddr) -> FaultStats {
        let st = self.state.lock();
        st.links
            .get(&(from, to))
            .map(|l| l.stats)
            .unwrap_or_default()
    }

    fn update(&self, from: SocketAddr, to: SocketAddr, f: impl FnOnce(&mut LinkFaults)) {
        let mut st = self.state.lock();
        let seed = link_seed(self.seed, from, to);
        let link = st.links.entry((from, to)).or_insert_with(|| Link {
            faults: LinkFaults::default(),
            rng: Rng::new(seed),
            release_at: None,
            stats: FaultStats::default(),
        });
        f(&mut link.faults);
        let active = st.links.values().any(|l| !l.faults.is_healthy());
        self.active.store(active, Ordering::Release);
    }

    /// Decides the fate of one frame on `from -> to`.
    pub(crate) fn decide(&self, from: SocketAddr, to: SocketAddr) -> Delivery {
        if !self.active.load(Ordering::Acquire) {
            return Delivery::NORMAL;
        }
        let mut st = self.state.lock();
        let Some(link) = st.links.get_mut(&(from, to)) else {
            return Delivery::NORMAL;
        };
        if link.faults.is_healthy() {
            return Delivery::NORMAL;
        }
        link.stats.frames += 1;
        let faults = &link.faults;
        if faults.drop_all || link.rng.chance(faults.drop_fraction) {
            link.stats.dropped += 1;
            return Delivery {
                copies: 0,
                delay_until: None,
            };
        }
        let mut copies = 1;
        if link.rng.chance(faults.duplicate_fraction) {
            link.stats.duplicated += 1;
            copies = 2;
        }
        let mut delay_until = None;
        if let Some((lo, hi)) = faults.delay_ms {
            link.stats.delayed += 1;
            let hi = hi.min(DELAY_MS_MAX);
            let lo = lo.min(hi);
            let mut at = Instant::now() + Duration::from_millis(link.rng.range(lo, hi + 1));
            if !faults.reorder {
                at = link.release_at.map_or(at, |prev| prev.max(at));
                link.release_at = Some(at);
            }
            delay_until = Some(at);
        }
        Delivery {
            copies,
            delay_until,
        }
    }
}

/// A seed for one link that depends only on the handle's seed and the two addresses (not on
/// the process's hash keys), so a link's draws replay across runs.
fn link_seed(seed: u64, from: SocketAddr, to: SocketAddr) -> u64 {
    let mut rng = Rng::new(seed);
    let mut mix = rng.next_u64();
    for addr in [from, to] {
        let ip = match addr.ip() {
            IpAddr::V4(v4) => u128::from(u32::from(v4)),
            IpAddr::V6(v6) => u128::from(v6),
        };
        for word in [ip as u64, (ip >> 64) as u64, u64::from(addr.port())] {
            mix = Rng::new(mix ^ word).next_u64();
        }
    }
    mix
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(port: u16) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], port))
    }

    fn fates(h: &FaultHandle, n: usize) -> Vec<(u8, bool)> {
        (0..n)
            .map(|_| {
                let d = h.decide(addr(1), addr(2));
                (d.copies, d.delay_until.is_some())
            })
            .collect()
    }

    #[test]
    fn same_seed_same_fates_on_a_link() {
        let (a, b) = (FaultHandle::new(7), FaultHandle::new(7));
        for h in [&a, &b] {
            h.drop_fraction(addr(1), addr(2), 0.3);
            h.duplicate(addr(1), addr(2), 0.2);
        }
        let fa = fates(&a, 500);
        assert_eq!(fa, fates(&b, 500));
        let c = FaultHandle::new(8);
        c.drop_fraction(addr(1), addr(2), 0.3);
        c.duplicate(addr(1), addr(2), 0.2);
        assert_ne!(fa, fates(&c, 500));
        let s = a.link_stats(addr(1), addr(2));
        assert!(s.dropped > 100 && s.dropped < 200, "{s:?}");
        assert!(s.duplicated > 40, "{s:?}");
    }

    #[test]
    fn cut_is_one_way_and_heal_restores() {
        let h = FaultHandle::new(1);
        h.cut(addr(1), addr(2));
        assert_eq!(h.decide(addr(1), addr(2)).copies, 0);
        assert_eq!(h.decide(addr(2), addr(1)), Delivery::NORMAL);
        h.heal(addr(1), addr(2));
        assert_eq!(h.decide(addr(1), addr(2)), Delivery::NORMAL);
        h.partition(&[addr(1)], &[addr(2), addr(3)]);
        assert_eq!(h.decide(addr(3), addr(1)).copies, 0);
        h.heal_all();
        assert_eq!(h.decide(addr(3), addr(1)), Delivery::NORMAL);
        assert_eq!(h.stats().dropped, 2);
    }

    #[test]
    fn delays_stay_in_range_and_keep_order_unless_reordering() {
        let h = FaultHandle::new(3);
        h.delay(addr(1), addr(2), 5, 50);
        let start = Instant::now();
        let mut last = start;
        for _ in 0..200 {
            let at = h.decide(addr(1), addr(2)).delay_until.unwrap();
            assert!(at >= last, "released out of order");
            assert!(at >= start + Duration::from_millis(5));
            assert!(at <= Instant::now() + Duration::from_millis(50));
            last = at;
        }
        h.set_link(
            addr(1),
            addr(2),
            LinkFaults {
                delay_ms: Some((0, 50)),
                reorder: true,
                ..LinkFaults::default()
            },
        );
        let ats: Vec<Instant> = (0..200)
            .map(|_| h.decide(addr(1), addr(2)).delay_until.unwrap())
            .collect();
        assert!(
            ats.windows(2).any(|w| w[1] < w[0]),
            "reorder never reordered"
        );
    }
}
