//! The host's interruptions of a busy CPU, as a spinning thread sees them: each time between two
//! looks at the clock that is longer than a poll takes is time the CPU was taken away (an
//! interrupt, a kernel thread, the host descheduling the vCPU). A polling switch and the
//! generator lose exactly this time, packets queueing meanwhile: it sets the latency tail of
//! any switch at low load, and a stall longer than a ring's packets at the offered rate is loss.

use serde::Serialize;

/// Stalls shorter than this are the loop's own noise, not counted.
pub const MIN_GAP_NS: u64 = 10_000;

/// What one CPU lost while watched.
#[derive(Debug, Default, Clone, Copy, PartialEq, Serialize)]
pub struct Gaps {
    /// Nanoseconds watched.
    pub watched_ns: u64,
    /// Stalls of at least 10 µs, 100 µs and 1 ms.
    pub over_10us: u64,
    pub over_100us: u64,
    pub over_1ms: u64,
    /// Nanoseconds lost in stalls of at least 10 µs.
    pub lost_ns: u64,
    /// The longest stall.
    pub longest_ns: u64,
}

impl Gaps {
    /// One step between two looks at the clock, `ns` long.
    pub fn step(&mut self, ns: u64) {
        self.watched_ns += ns;
        if ns < MIN_GAP_NS {
            return;
        }
        self.over_10us += 1;
        self.over_100us += u64::from(ns >= 100_000);
        self.over_1ms += u64::from(ns >= 1_000_000);
        self.lost_ns += ns;
        self.longest_ns = self.longest_ns.max(ns);
    }

    /// Share of the watched time lost, in percent.
    pub fn lost_pct(&self) -> f64 {
        if self.watched_ns == 0 {
            return 0.0;
        }
        100.0 * self.lost_ns as f64 / self.watched_ns as f64
    }

    /// Stalls per second of each length.
    pub fn per_second(&self, count: u64) -> f64 {
        if self.watched_ns == 0 {
            return 0.0;
        }
        count as f64 * 1e9 / self.watched_ns as f64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_steps_are_watched_time_only() {
        let mut g = Gaps::default();
        for _ in 0..1000 {
            g.step(30);
        }
        g.step(9_999);
        assert_eq!(g.watched_ns, 39_999);
        assert_eq!((g.over_10us, g.lost_ns, g.longest_ns), (0, 0, 0));
        assert_eq!(g.lost_pct(), 0.0);
    }

    #[test]
    fn stalls_are_counted_by_length_and_their_time_lost() {
        let mut g = Gaps::default();
        for ns in [10_000, 150_000, 99_999, 2_500_000, 50] {
            g.step(ns);
        }
        assert_eq!((g.over_10us, g.over_100us, g.over_1ms), (4, 2, 1));
        assert_eq!(g.lost_ns, 2_759_999);
        assert_eq!(g.longest_ns, 2_500_000);
        assert_eq!(g.watched_ns, 2_760_049);
        assert_eq!(g.per_second(g.over_10us), 4.0 * 1e9 / 2_760_049.0);
    }

    #[test]
    fn the_share_lost_is_of_the_time_watched() {
        let mut g = Gaps::default();
        for _ in 0..99 {
            g.step(9_000);
        }
        g.step(109_000);
        // 109 µs lost of 1 ms watched.
        assert!((g.lost_pct() - 10.9).abs() < 1e-9, "{}", g.lost_pct());
        assert_eq!(g.per_second(g.over_100us), 1000.0);
    }
}
