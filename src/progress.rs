//! Telling a core that stopped from one that is idle: every watched thread bumps a counter on
//! each loop (a forwarding lcore every poll, the vhost core at least every few milliseconds,
//! busy or not), and health reports a counter that has not moved for [`STALL_AFTER`].

use std::time::{Duration, Instant};

/// No loop for this long is a stall: far beyond any loop's period, even on a loaded host.
pub const STALL_AFTER: Duration = Duration::from_secs(2);

/// The last value seen of each watched counter, and since when it has had that value.
#[derive(Debug, Default)]
pub struct ProgressWatch {
    seen: Vec<Option<(u64, Instant)>>,
}

impl ProgressWatch {
    /// Record counter `which` reading `count` at `now`; how long it has been stuck if that is
    /// [`STALL_AFTER`] or more. A counter seen for the first time is not stuck: health is read
    /// now and then, so progress shows between two reads.
    pub fn observe(&mut self, which: usize, count: u64, now: Instant) -> Option<Duration> {
        if self.seen.len() <= which {
            self.seen.resize(which + 1, None);
        }
        let slot = self.seen.get_mut(which)?;
        match slot {
            Some((last, since)) if *last == count => {
                let stuck = now.saturating_duration_since(*since);
                (stuck >= STALL_AFTER).then_some(stuck)
            }
            _ => {
                *slot = Some((count, now));
                None
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_counter_that_moves_is_never_stuck_and_one_that_stops_is_after_the_limit() {
        let mut w = ProgressWatch::default();
        let t0 = Instant::now();
        let at = |ms: u64| t0 + Duration::from_millis(ms);
        // First sight, then progress between reads however far apart.
        assert_eq!(w.observe(1, 10, at(0)), None);
        assert_eq!(w.observe(1, 11, at(60_000)), None);
        // Stopped: not yet a stall just under the limit, one from the limit on, measured from
        // when the value was first seen.
        assert_eq!(w.observe(1, 11, at(61_999)), None);
        assert_eq!(
            w.observe(1, 11, at(62_000)),
            Some(Duration::from_millis(2000))
        );
        assert_eq!(
            w.observe(1, 11, at(65_000)),
            Some(Duration::from_millis(5000))
        );
        // Moving again clears it; counters are independent.
        assert_eq!(w.observe(1, 12, at(65_001)), None);
        assert_eq!(w.observe(0, 5, at(65_001)), None);
        assert_eq!(
            w.observe(0, 5, at(70_000)),
            Some(Duration::from_millis(4999))
        );
        assert_eq!(w.observe(1, 12, at(66_000)), None);
    }
}
