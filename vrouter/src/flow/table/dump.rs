//! The control side's walks over the whole table: consistent copies of entries, paged dumps,
//! removal by predicate, counters.

use super::layout::{meta_is_nat, meta_is_reverse, meta_rev, meta_tcp, meta_verdict};
use super::{FlowInfo, FlowKey, FlowPage, FlowStats, FlowTable, READ_TRIES, SLOTS_PER_BUCKET};
use crate::sync::{spin_loop, Ordering};

impl FlowTable {
    /// A consistent copy of entry `idx`, if in use.
    pub(super) fn read_entry(&self, idx: usize) -> Option<FlowInfo> {
        self.read_entry_with(idx, true)
    }

    /// [`Self::read_entry`]; `nat`: read a NAT entry's partner for its translated tuple (two
    /// more lines, the partner's bucket and entry: aging, which needs none of it, skips them
    /// and leaves `nat` empty).
    pub(super) fn read_entry_with(&self, idx: usize, nat: bool) -> Option<FlowInfo> {
        let b = idx / SLOTS_PER_BUCKET;
        let bucket = self.bucket(b)?;
        let e = self.entry(idx)?;
        let c = self.counter(idx)?;
        for _ in 0..READ_TRIES {
            let Some(s1) = bucket.read_begin() else {
                spin_loop();
                continue;
            };
            let tag = bucket
                .tags
                .get(idx % SLOTS_PER_BUCKET)?
                .load(Ordering::Relaxed);
            let key: [u64; 5] = std::array::from_fn(|i| e.key[i].load(Ordering::Relaxed));
            let m = e.meta.load(Ordering::Relaxed);
            let v = e.vifs.load(Ordering::Relaxed);
            if !bucket.read_valid(s1) {
                continue;
            }
            if tag == 0 {
                return None;
            }
            let nat = (nat && meta_is_nat(m))
                .then(|| meta_rev(m).and_then(|r| self.read_key(r as usize)))
                .flatten()
                .map(|k| k.reverse());
            return Some(FlowInfo {
                index: idx as u32,
                key: FlowKey::from_words(key),
                verdict: meta_verdict(m),
                tcp: meta_tcp(m),
                is_reverse: meta_is_reverse(m),
                reverse: meta_rev(m),
                in_vif: (v >> 48) as u16,
                out_vif: (v >> 32) as u16,
                policy_gen: v as u32,
                nat,
                packets: c.packets.load(Ordering::Relaxed),
                bytes: c.bytes.load(Ordering::Relaxed),
                last_seen: e.seen.load(Ordering::Relaxed),
            });
        }
        None
    }
    /// A consistent copy of entry `idx`'s key, if in use.
    pub(crate) fn read_key(&self, idx: usize) -> Option<FlowKey> {
        let bucket = self.bucket(idx / SLOTS_PER_BUCKET)?;
        let e = self.entry(idx)?;
        for _ in 0..READ_TRIES {
            let Some(s1) = bucket.read_begin() else {
                spin_loop();
                continue;
            };
            let tag = bucket
                .tags
                .get(idx % SLOTS_PER_BUCKET)?
                .load(Ordering::Relaxed);
            let key: [u64; 5] = std::array::from_fn(|i| e.key[i].load(Ordering::Relaxed));
            if !bucket.read_valid(s1) {
                continue;
            }
            return (tag != 0).then(|| FlowKey::from_words(key));
        }
        None
    }

    /// The key of a NAT hit's partner entry (which holds the other side of the
    /// translation), read consistently and checked to still point back at the hit: `None` if
    /// the pair was removed or moved meanwhile (the packet is then dropped, never translated
    /// with another flow's pair).
    #[inline]
    pub(crate) fn nat_partner(&self, hit: &super::Hit) -> Option<FlowKey> {
        let idx = hit.partner? as usize;
        let bucket = self.bucket(idx / SLOTS_PER_BUCKET)?;
        let e = self.entry(idx)?;
        let tag = bucket.tags.get(idx % SLOTS_PER_BUCKET)?;
        for _ in 0..READ_TRIES {
            let Some(s1) = bucket.read_begin() else {
                spin_loop();
                continue;
            };
            let in_use = tag.load(Ordering::Relaxed) != 0;
            let key: [u64; 5] = std::array::from_fn(|i| e.key[i].load(Ordering::Relaxed));
            let m = e.meta.load(Ordering::Relaxed);
            if !bucket.read_valid(s1) {
                continue;
            }
            let ours = in_use && meta_is_nat(m) && meta_rev(m) == Some(hit.index);
            return ours.then(|| FlowKey::from_words(key));
        }
        None
    }

    /// A page of flows: up to `limit` entries from entry index `cursor` on, only of `vrf` if given.
    pub fn flows(&self, vrf: Option<u16>, limit: usize, cursor: usize) -> FlowPage {
        let mut flows = Vec::with_capacity(limit.min(4096));
        let mut idx = cursor;
        while idx < self.slots() && flows.len() < limit {
            if let Some(f) = self.read_entry(idx) {
                if vrf.is_none_or(|v| v == f.key.vrf) {
                    flows.push(f);
                }
            }
            idx += 1;
        }
        FlowPage {
            flows,
            next: (idx < self.slots()).then_some(idx),
        }
    }

    /// Every flow for which `remove_if` says so is removed with its reverse (counted as
    /// evicted). Returns how many flows were removed.
    pub fn remove_where(&self, mut remove_if: impl FnMut(&FlowInfo) -> bool) -> usize {
        let mut n = 0;
        for idx in 0..self.slots() {
            let Some(info) = self.read_entry(idx) else {
                continue;
            };
            if info.is_reverse && info.reverse.is_some() {
                continue;
            }
            if remove_if(&info) && self.remove(&info.key) {
                n += 1;
            }
        }
        self.tally.evicted.fetch_add(n as u64, Ordering::Relaxed);
        n
    }

    /// Remove every flow. Returns how many were removed.
    pub fn flush(&self) -> usize {
        self.remove_where(|_| true)
    }

    /// The table's counters. Entries in use and flows created are summed over every bucket
    /// (a control-path read of the whole table: about a millisecond per million entries).
    pub fn stats(&self) -> FlowStats {
        let (mut active, mut created) = (0, 0);
        for g in self.groups.iter() {
            let b = &g.bucket;
            active += b
                .tags
                .iter()
                .filter(|t| t.load(Ordering::Relaxed) != 0)
                .count();
            created += b.created.load(Ordering::Relaxed);
        }
        FlowStats {
            capacity: self.capacity,
            active,
            created,
            aged: self.tally.aged.load(Ordering::Relaxed),
            evicted: self.tally.evicted.load(Ordering::Relaxed),
            table_full: self.tally.table_full.load(Ordering::Relaxed),
            setup_races: self.tally.setup_races.load(Ordering::Relaxed),
        }
    }
}
