//! The readers' side, run by the forwarding cores: placing a key, warming its buckets and
//! entry, lock-free lookups under the buckets' sequence words, and a hit's counters.

use super::key::Place;
use super::layout::{hit, meta_is_nat, meta_rev, meta_tcp, meta_verdict, Group};
use super::{FlowKey, FlowTable, FlowVerdict, Hit, READ_TRIES, SLOTS_PER_BUCKET};
use crate::sync::{spin_loop, Ordering};
use prefetch_index::prefetch_index;

/// A hit as the lookup read it: the entry's index and its two words, decoded only as asked.
/// The flow stage's common case (a flow decided under the current policies) needs two of
/// a [`Hit`]'s ten fields; building all ten, and keeping them for the slow path, cost about
/// 30 instructions a packet.
#[derive(Debug, Clone, Copy)]
pub(crate) struct RawHit {
    index: u32,
    meta: u64,
    vifs: u64,
}

impl RawHit {
    #[inline(always)]
    pub(crate) fn index(&self) -> u32 {
        self.index
    }

    #[inline(always)]
    pub(crate) fn policy_gen(&self) -> u32 {
        self.vifs as u32
    }

    #[inline(always)]
    pub(crate) fn verdict(&self) -> FlowVerdict {
        meta_verdict(self.meta)
    }

    #[inline(always)]
    pub(crate) fn is_nat(&self) -> bool {
        meta_is_nat(self.meta)
    }

    /// Every field.
    #[inline(always)]
    pub(crate) fn hit(&self) -> Hit {
        hit(self.index as usize, self.meta, self.vifs)
    }
}

impl FlowTable {
    /// for every retry: the caller's setup path then finds the entry under the lock).
    #[inline]
    pub fn lookup(&self, key: &FlowKey) -> Option<Hit> {
        self.lookup_placed(&self.place(key))
    }

    /// [`Self::lookup`] of a key already placed.
    #[inline(always)]
    pub(crate) fn lookup_placed(&self, p: &Place) -> Option<Hit> {
        self.lookup_placed_raw(p).map(|r| r.hit())
    }

    /// [`Self::lookup_placed`], undecoded.
    #[inline(always)]
    fn lookup_placed_raw(&self, p: &Place) -> Option<RawHit> {
        if let Some(h) = self.lookup_in(p, p.b1) {
            return Some(h);
        }
        self.lookup_in(p, p.b2)
    }

    /// Start loading `p`'s two buckets (prefetches: nothing waits for them, so the misses of
    /// a whole burst's keys are in flight at once).
    #[inline(always)]
    pub(crate) fn warm_buckets(&self, p: &Place) {
        prefetch_index(&*self.groups, p.b1);
        prefetch_index(&*self.groups, p.b2);
    }

    /// Start loading `p`'s first bucket only: where nearly every key lives while its bucket
    /// is at most half full ([`Self::preferred_free_slot`]). The second is loaded only for a
    /// key the first's tags do not hold ([`Self::warm_second_bucket`]): a hit then costs three
    /// lines (bucket, entry, counters), not four.
    #[inline(always)]
    pub(crate) fn warm_first_bucket(&self, p: &Place) {
        prefetch_index(&*self.groups, p.b1);
    }

    /// Start loading `p`'s second bucket.
    #[inline(always)]
    pub(crate) fn warm_second_bucket(&self, p: &Place) {
        prefetch_index(&*self.groups, p.b2);
    }

    /// With `p`'s first bucket (its second, if `second`) loaded: the bucket's slot whose tag
    /// matches, whose entry and counter lines this starts loading.
    #[inline(always)]
    pub(crate) fn warm_entry_in(&self, p: &Place, second: bool) -> Option<usize> {
        let b = if second { p.b2 } else { p.b1 };
        let g = self.groups.get(b)?;
        let i = g
            .bucket
            .tags
            .iter()
            .position(|t| t.load(Ordering::Relaxed) == p.tag)?;
        prefetch_index(&g.entries, i);
        prefetch_index(&g.counters, i);
        Some(b * SLOTS_PER_BUCKET + i)
    }

    /// With `p`'s buckets loaded: the slot whose tag matches, whose entry and counter lines
    /// this starts loading.
    #[inline(always)]
    pub(crate) fn warm_entry(&self, p: &Place) -> Option<usize> {
        for b in [p.b1, p.b2] {
            let Some(g) = self.groups.get(b) else {
                continue;
            };
            if let Some(i) = g
                .bucket
                .tags
                .iter()
                .position(|t| t.load(Ordering::Relaxed) == p.tag)
            {
                prefetch_index(&g.entries, i);
                prefetch_index(&g.counters, i);
                return Some(b * SLOTS_PER_BUCKET + i);
            }
        }
        None
    }

    /// With `p`'s buckets loaded: start loading the entry and counter lines of the slot a
    /// setup of `p`'s key would most likely take ([`Self::preferred_free_slot`]); the setup
    /// writes both.
    #[inline(always)]
    pub(crate) fn warm_free_slot(&self, p: &Place) {
        if let Some(i) = self.preferred_free_slot(p) {
            if let Some(g) = self.groups.get(i / SLOTS_PER_BUCKET) {
                prefetch_index(&g.entries, i % SLOTS_PER_BUCKET);
                prefetch_index(&g.counters, i % SLOTS_PER_BUCKET);
            }
        }
    }

    /// With entry `idx` (from [`Self::warm_entry`]) loaded: if it is a NAT entry, start loading
    /// its partner's entry line, whose key a NAT hit reads for the other side of the
    /// translation, and its partner's bucket line, whose sequence guards that read. A plain read, for a hint only: a stale partner index costs a wasted load.
    #[inline(always)]
    pub(crate) fn warm_nat_partner(&self, idx: usize) {
        let Some(e) = self.entry(idx) else {
            return;
        };
        let m = e.meta.load(Ordering::Relaxed);
        if let (true, Some(p)) = (meta_is_nat(m), meta_rev(m)) {
            let p = p as usize;
            if let Some(g) = self.groups.get(p / SLOTS_PER_BUCKET) {
                // The partner is read under its bucket's sequence lock: its line (the group's
                // first) as well as the entry's, or each hit waits for it alone.
                prefetch_index(&*self.groups, p / SLOTS_PER_BUCKET);
                prefetch_index(&g.entries, p % SLOTS_PER_BUCKET);
            }
        }
    }

    /// [`Self::lookup_placed`], trying slot `hint` (from [`Self::warm_entry`]) first.
    #[inline(always)]
    pub(crate) fn lookup_hinted(&self, p: &Place, hint: Option<usize>) -> Option<RawHit> {
        if let Some(h) = hint.and_then(|idx| self.lookup_slot(p, idx)) {
            return Some(h);
        }
        self.lookup_placed_raw(p)
    }

    /// [`Self::lookup`] for a burst of keys (`out[i]` for `keys[i]`): the candidate buckets
    /// and entries of all keys are read first, back to back, so their cache misses overlap
    /// instead of queueing one behind another.
    pub fn lookup_burst(&self, keys: &[FlowKey], out: &mut [Option<Hit>]) {
        const MAX: usize = 64;
        for (keys, out) in keys.chunks(MAX).zip(out.chunks_mut(MAX)) {
            let mut places = [Place::default(); MAX];
            let mut hints = [None; MAX];
            for (p, k) in places.iter_mut().zip(keys) {
                *p = self.place(k);
                self.warm_buckets(p);
            }
            for (p, h) in places[..keys.len()].iter().zip(&mut hints) {
                *h = self.warm_entry(p);
            }
            for ((o, p), h) in out.iter_mut().zip(&places[..keys.len()]).zip(hints) {
                *o = self.lookup_hinted(p, h).map(|r| r.hit());
            }
        }
    }

    /// Entry `idx` if it holds `p`'s key (a consistent read of its bucket), else `None`.
    #[inline(always)]
    fn lookup_slot(&self, p: &Place, idx: usize) -> Option<RawHit> {
        let bucket = self.bucket(idx / SLOTS_PER_BUCKET)?;
        let tag = bucket.tags.get(idx % SLOTS_PER_BUCKET)?;
        let e = self.entry(idx)?;
        let s1 = bucket.read_begin()?;
        if tag.load(Ordering::Relaxed) != p.tag {
            return None;
        }
        let same = e.is_of(&p.words);
        let (m, v) = (
            e.meta.load(Ordering::Relaxed),
            e.vifs.load(Ordering::Relaxed),
        );
        if !bucket.read_keep(same, s1) {
            return None;
        }
        Some(RawHit {
            index: idx as u32,
            meta: m,
            vifs: v,
        })
    }

    #[inline(always)]
    fn lookup_in(&self, p: &Place, b: usize) -> Option<RawHit> {
        let group = self.groups.get(b)?;
        match Self::read_bucket(group, p, b) {
            Some(found) => found,
            None => self.lookup_in_again(p, b),
        }
    }

    /// One read of bucket `b` (its `group`) for `p`'s key: `None` if a writer held or changed
    /// the bucket meanwhile (read again), else what it holds.
    #[inline(always)]
    fn read_bucket(group: &Group, p: &Place, b: usize) -> Option<Option<RawHit>> {
        let bucket = &group.bucket;
        let s1 = bucket.read_begin()?;
        let mut found = None;
        // Slot and entry side by side from the group: no index arithmetic per slot.
        for (i, (t, e)) in bucket.tags.iter().zip(&group.entries).enumerate() {
            if t.load(Ordering::Relaxed) == p.tag && e.is_of(&p.words) {
                found = Some((
                    b * SLOTS_PER_BUCKET + i,
                    e.meta.load(Ordering::Relaxed),
                    e.vifs.load(Ordering::Relaxed),
                ));
                break;
            }
        }
        if !bucket.read_valid(s1) {
            return None;
        }
        Some(found.map(|(idx, meta, vifs)| RawHit {
            index: idx as u32,
            meta,
            vifs,
        }))
    }

    /// [`Self::lookup_in`] after a read that raced a writer: out of line, so the loop that
    /// retries does not make the compiler keep every slot's address ready for the first read.
    #[cold]
    #[inline(never)]
    fn lookup_in_again(&self, p: &Place, b: usize) -> Option<RawHit> {
        let group = self.groups.get(b)?;
        for _ in 1..READ_TRIES {
            spin_loop();
            if let Some(found) = Self::read_bucket(group, p, b) {
                return found;
            }
        }
        None
    }

    /// Account a packet of `len` bytes to entry `index` at time `now`; for TCP, `tcp_flags` moves
    /// the state. Lock-free and without atomic read-modify-writes: each direction of a flow is
    /// its own entry and normally forwarded by one core (RSS), so plain load + store counters
    /// suffice; two cores hitting the same entry at once may lose an increment.
    #[inline]
    pub fn touch(&self, index: u32, len: u64, now: u64, tcp_flags: Option<u8>) {
        let Some((e, c)) = self.entry_and_counters(index as usize) else {
            return;
        };
        c.packets.store(
            c.packets.load(Ordering::Relaxed).wrapping_add(1),
            Ordering::Relaxed,
        );
        c.bytes.store(
            c.bytes.load(Ordering::Relaxed).wrapping_add(len),
            Ordering::Relaxed,
        );
        if e.seen.load(Ordering::Relaxed) < now {
            e.seen.store(now, Ordering::Relaxed);
        }
        if let Some(flags) = tcp_flags {
            let m = e.meta.load(Ordering::Relaxed);
            let next = meta_tcp(m).next(flags);
            if next != meta_tcp(m) {
                // Only the state byte changes; a concurrent removal makes the CAS fail harmlessly.
                let new = (m & !(0xff << 48)) | (next as u64) << 48;
                let _ = e
                    .meta
                    .compare_exchange(m, new, Ordering::Relaxed, Ordering::Relaxed);
            }
        }
    }

    /// Record that entry `index` was re-evaluated against policy generation `gen` with the same
    /// verdict.
    pub fn set_policy_gen(&self, index: u32, gen: u32) {
        if let Some(e) = self.entry(index as usize) {
            let v = e.vifs.load(Ordering::Relaxed);
            let _ = e.vifs.compare_exchange(
                v,
                (v & !0xffff_ffff) | u64::from(gen),
                Ordering::Relaxed,
                Ordering::Relaxed,
            );
        }
    }
}
