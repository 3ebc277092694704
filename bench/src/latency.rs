//! One-way latency of generated frames: a fixed histogram filled on the generator's core (no
//! allocation per packet) and read as percentiles at the end.

/// Width of a bucket and the range covered; slower packets land in the last bucket.
const BUCKET_NS: u64 = 50;
const BUCKETS: usize = 200_000; // 10 ms

/// Latencies in `BUCKET_NS` buckets, recorded from TSC differences.
pub struct Histogram {
    counts: Box<[u64]>,
    ns_per_cycle: f64,
    samples: u64,
    max_ns: u64,
}

/// What a run's latencies come to, in microseconds; a percentile beyond the histogram's
/// 10 ms is `None` (null in JSON): only the maximum is known there.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
pub struct Percentiles {
    pub samples: u64,
    pub p50_us: Option<f64>,
    pub p99_us: Option<f64>,
    pub p999_us: Option<f64>,
    pub max_us: f64,
    /// The tail's shape: the share of samples over each of [`TAIL_US`] microseconds. Three
    /// percentiles of two switches can differ for many reasons; these say whether one of them
    /// has more packets late, or the same packets later.
    pub share_over_us: [(u64, f64); TAIL_US.len()],
}

/// The latencies, in microseconds, whose shares of late samples [`Percentiles`] gives.
pub const TAIL_US: [u64; 6] = [5, 10, 20, 50, 100, 1000];

impl Histogram {
    /// A histogram for a TSC running at `tsc_hz`.
    pub fn new(tsc_hz: u64) -> Histogram {
        Histogram {
            counts: vec![0; BUCKETS].into_boxed_slice(),
            ns_per_cycle: 1e9 / tsc_hz.max(1) as f64,
            samples: 0,
            max_ns: 0,
        }
    }

    /// Records one packet sent at TSC `sent` and received at `received`.
    #[inline]
    pub fn record(&mut self, sent: u64, received: u64) {
        let ns = (received.saturating_sub(sent) as f64 * self.ns_per_cycle) as u64;
        let i = ((ns / BUCKET_NS) as usize).min(BUCKETS - 1);
        self.counts[i] += 1;
        self.samples += 1;
        self.max_ns = self.max_ns.max(ns);
    }

    /// The latency below which a share `q` (0..1) of the samples lie: the upper edge of the
    /// bucket where that share is reached; `None` when it is reached only past the last.
    fn quantile_us(&self, q: f64) -> Option<f64> {
        let want = ((self.samples as f64) * q).ceil().max(1.0) as u64;
        let mut seen = 0;
        for (i, &c) in self.counts[..BUCKETS - 1].iter().enumerate() {
            seen += c;
            if seen >= want {
                return Some(((i as u64 + 1) * BUCKET_NS) as f64 / 1000.0);
            }
        }
        None
    }

    /// The share of samples over `us` microseconds (to the bucket: those in buckets from the
    /// one starting at `us` on).
    fn share_over(&self, us: u64) -> f64 {
        let first = ((us * 1000 / BUCKET_NS) as usize).min(BUCKETS);
        let late: u64 = self.counts[first..].iter().sum();
        late as f64 / self.samples.max(1) as f64
    }

    pub fn percentiles(&self) -> Option<Percentiles> {
        (self.samples > 0).then(|| Percentiles {
            samples: self.samples,
            p50_us: self.quantile_us(0.50),
            p99_us: self.quantile_us(0.99),
            p999_us: self.quantile_us(0.999),
            max_us: self.max_ns as f64 / 1000.0,
            share_over_us: TAIL_US.map(|us| (us, self.share_over(us))),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_come_from_the_recorded_latencies() {
        // A 1 GHz TSC: one cycle is one nanosecond.
        let mut h = Histogram::new(1_000_000_000);
        assert_eq!(h.percentiles(), None);
        for i in 0..1000u64 {
            // 990 packets at 1 µs, 9 at 20 µs, one at 500 µs.
            let lat = match i {
                0..=989 => 1_000,
                990..=998 => 20_000,
                _ => 500_000,
            };
            h.record(1_000_000, 1_000_000 + lat);
        }
        let p = h.percentiles().unwrap();
        assert_eq!(p.samples, 1000);
        assert_eq!(
            p.p50_us,
            Some(1.05),
            "the bucket holding 1 µs ends at 1.05 µs"
        );
        assert_eq!(p.p99_us, Some(1.05), "the 990th sample is still 1 µs");
        assert_eq!(p.p999_us, Some(20.05));
        assert_eq!(p.max_us, 500.0);
        let share = |us| p.share_over_us.iter().find(|(t, _)| *t == us).unwrap().1;
        assert_eq!(share(5), 0.01);
        assert_eq!(
            share(20),
            0.01,
            "a sample at 20 µs is in the bucket from 20 µs"
        );
        assert_eq!(share(50), 0.001);
        assert_eq!(share(1000), 0.0);
        // Past the histogram's range only the maximum is known.
        let mut slow = Histogram::new(1_000_000_000);
        slow.record(0, 50_000_000);
        let p = slow.percentiles().unwrap();
        assert_eq!((p.p50_us, p.max_us), (None, 50_000.0));
        // A clock that seems to go backwards is no latency, not a huge one.
        h.record(10, 5);
        assert_eq!(h.percentiles().unwrap().samples, 1001);
    }
}
