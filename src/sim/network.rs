//! The simulated network and clocks.
//!
//! Network: every directed link can be cut (symmetric partitions are two cuts, a one-way
//! partition one, a bridge keeps one peer connected to both sides); a message on a live link
//! is lost with probability `loss`, duplicated with probability `dup`, and delayed by a random
//! amount (occasionally a long one), so messages also arrive out of order. Clocks: each peer's
//! monotonic clock runs at its own rate, within the drift bound, from its own offset.

use crate::types::Rng;

/// Loss, duplication and delay of the live links.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct LinkFaults {
    /// Probability that a message is lost.
    pub loss: f64,
    /// Probability that a message is delivered twice.
    pub dup: f64,
    /// The usual delay range, microseconds.
    pub delay_us: (u64, u64),
    /// Probability of a long delay (reordering), and its upper bound in microseconds.
    pub long_delay: (f64, u64),
    /// Each link delivers in send order, like one TCP connection; otherwise messages overtake
    /// each other freely (datagrams, or frames on connections that broke and reconnected).
    pub fifo: bool,
}

impl LinkFaults {
    /// A clean network: no loss or duplication, short delays.
    pub fn clean() -> LinkFaults {
        LinkFaults {
            loss: 0.0,
            dup: 0.0,
            delay_us: (100, 1_000),
            long_delay: (0.0, 0),
            fifo: true,
        }
    }
}

/// Which directed links are cut, and the faults of the others.
#[derive(Clone, Debug)]
pub struct Network {
    n: usize,
    /// `cut[from * n + to]`.
    cut: Vec<bool>,
    /// The latest delivery time scheduled on each link (FIFO links deliver after it).
    last_delivery_us: Vec<u64>,
    /// The faults in force.
    pub faults: LinkFaults,
}

/// What the network does with one message.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fate {
    /// Dropped (cut link or loss).
    Lost,
    /// Delivered after these delays (one, or two when duplicated), microseconds.
    Delivered(u64, Option<u64>),
}

impl Network {
    /// A fully connected network of `n` peers.
    pub fn new(n: usize, faults: LinkFaults) -> Network {
        Network {
            n,
            cut: vec![false; n * n],
            last_delivery_us: vec![0; n * n],
            faults,
        }
    }

    /// True if `from -> to` is cut.
    pub fn is_cut(&self, from: usize, to: usize) -> bool {
        self.cut[from * self.n + to]
    }

    /// Cuts or restores `from -> to`.
    pub fn set_cut(&mut self, from: usize, to: usize, cut: bool) {
        self.cut[from * self.n + to] = cut;
    }

    /// Restores every link.
    pub fn heal(&mut self) {
        self.cut.iter_mut().for_each(|c| *c = false);
    }

    /// Cuts every link between `side` and the rest, both ways.
    pub fn partition(&mut self, side: &[bool]) {
        for a in 0..self.n {
            for b in 0..self.n {
                if side[a] != side[b] {
                    self.set_cut(a, b, true);
                }
            }
        }
    }

    /// Splits the others into two sides that cannot talk, both connected to `bridge`.
    pub fn bridge(&mut self, bridge: usize, left: &[bool]) {
        for a in 0..self.n {
            for b in 0..self.n {
                if a != bridge && b != bridge && left[a] != left[b] {
                    self.set_cut(a, b, true);
                }
            }
        }
    }

    /// Decides the fate of a message sent at `now_us`: lost, or delivered after a delay (two
    /// delays when duplicated).
    pub fn route(&mut self, rng: &mut Rng, now_us: u64, from: usize, to: usize) -> Fate {
        if self.is_cut(from, to) || rng.chance(self.faults.loss) {
            return Fate::Lost;
        }
        let first = self.arrival(rng, now_us, from, to);
        let second = rng
            .chance(self.faults.dup)
            .then(|| self.arrival(rng, now_us, from, to));
        Fate::Delivered(first, second)
    }

    /// The delay of one delivery, after every earlier one on the link when FIFO.
    fn arrival(&mut self, rng: &mut Rng, now_us: u64, from: usize, to: usize) -> u64 {
        let mut at = now_us + self.delay(rng);
        let last = &mut self.last_delivery_us[from * self.n + to];
        if self.faults.fifo {
            at = at.max(*last);
        }
        *last = (*last).max(at);
        at - now_us
    }

    fn delay(&self, rng: &mut Rng) -> u64 {
        let (p, max) = self.faults.long_delay;
        if rng.chance(p) {
            return rng.range(self.faults.delay_us.1, max.max(self.faults.delay_us.1 + 1));
        }
        rng.range(self.faults.delay_us.0, self.faults.delay_us.1 + 1)
    }

    /// True if every pair among `members` can talk both ways.
    pub fn fully_connected(&self, members: &[usize]) -> bool {
        members
            .iter()
            .all(|a| members.iter().all(|b| a == b || !self.is_cut(*a, *b)))
    }
}

/// A peer's monotonic clock: `local = offset + real * rate` (rate in parts per million).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Clock {
    /// Local microseconds at real time 0.
    pub offset_us: u64,
    /// Parts per million of real time; within `1e6 * (1 +- drift)`.
    pub rate_ppm: u64,
}

impl Clock {
    /// The local time, in milliseconds, at real time `real_us`.
    pub fn local_ms(&self, real_us: u64) -> u64 {
        let scaled = u128::from(real_us) * u128::from(self.rate_ppm) / 1_000_000;
        (u128::from(self.offset_us) + scaled) as u64 / 1000
    }

    /// The earliest real time at which the local clock reads `local_ms` (or more).
    pub fn real_us_at(&self, local_ms: u64) -> u64 {
        let local_us = u128::from(local_ms) * 1000;
        let Some(since) = local_us.checked_sub(u128::from(self.offset_us)) else {
            return 0;
        };
        let real = (since * 1_000_000).div_ceil(u128::from(self.rate_ppm));
        // Rounding may leave us one microsecond short; step until the clock reads local_ms.
        let mut real = real as u64;
        while self.local_ms(real) < local_ms {
            real += 1;
        }
        real
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clock_inverse_is_the_first_instant_reading_the_time() {
        let c = Clock {
            offset_us: 12_345,
            rate_ppm: 1_037_000,
        };
        for ms in [13, 100, 5_000, 123_456] {
            let r = c.real_us_at(ms);
            assert!(c.local_ms(r) >= ms);
            assert!(r == 0 || c.local_ms(r - 1) < ms);
        }
    }

    #[test]
    fn bridge_keeps_the_bridge_connected_to_both_sides() {
        let mut n = Network::new(5, LinkFaults::clean());
        n.bridge(2, &[true, true, false, false, false]);
        assert!(n.fully_connected(&[0, 1, 2]));
        assert!(n.fully_connected(&[2, 3, 4]));
        assert!(n.is_cut(0, 3) && n.is_cut(4, 1));
    }
}
