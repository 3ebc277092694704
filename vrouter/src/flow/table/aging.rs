//! Aging: forwarding cores remove the flows idle past their timeouts, a slice of the table at a
//! time.

use super::layout::meta_tcp;
use super::{FlowInfo, FlowTable, SLOTS_PER_BUCKET};
use crate::sync::Ordering;

impl FlowTable {
    /// Age up to `budget` buckets (each `SLOTS_PER_BUCKET` entries) from where the last call
    /// stopped: flows idle past their timeout at `now` are removed with their reverse. Cores
    /// calling it at once age disjoint slices. Returns the number of flows aged.
    pub fn age_slice(&self, now: u64, budget: usize) -> usize {
        let nb = self.groups.len();
        let budget = budget.min(nb);
        let start = self.tally.age_cursor.fetch_add(budget, Ordering::Relaxed) % nb;
        let mut aged = 0;
        for k in 0..budget {
            let b = (start + k) % nb;
            let Some(bucket) = self.bucket(b) else {
                continue;
            };
            for i in 0..SLOTS_PER_BUCKET {
                // An empty slot (the common case) costs one load, not a consistent read: a
                // flow set up meanwhile is aged on a later round, long before its timeout.
                if bucket
                    .tags
                    .get(i)
                    .is_none_or(|t| t.load(Ordering::Relaxed) == 0)
                {
                    continue;
                }
                let idx = b * SLOTS_PER_BUCKET + i;
                let Some(info) = self.read_entry_with(idx, false) else {
                    continue;
                };
                // A pair is aged from its forward entry.
                if info.is_reverse && info.reverse.is_some() {
                    continue;
                }
                if self.expired(&info, now) && self.remove(&info.key) {
                    aged += 1;
                }
            }
        }
        self.tally.aged.fetch_add(aged as u64, Ordering::Relaxed);
        aged
    }

    fn expired(&self, info: &FlowInfo, now: u64) -> bool {
        let (mut tcp, mut seen) = (info.tcp, info.last_seen);
        if let Some(p) = info.reverse.and_then(|r| self.entry(r as usize)) {
            tcp = tcp.max(meta_tcp(p.meta.load(Ordering::Relaxed)));
            seen = seen.max(p.seen.load(Ordering::Relaxed));
        }
        now.saturating_sub(seen) > self.timeouts.for_flow(info.key.proto, tcp)
    }

    /// Number of buckets (an aging budget of this many covers the whole table).
    pub fn buckets(&self) -> usize {
        self.groups.len()
    }
}
