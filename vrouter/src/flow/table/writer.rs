//! The writers' side: setups (from the forwarding cores' slow path), removals, evictions and
//! moves, each under the locks of the buckets it changes.

use super::key::nat_port_of_reply;
use super::key::Place;
use super::layout::{
    meta_is_nat, meta_nat_dst, meta_pool, meta_rev, meta_tcp, meta_word, vifs_word, with_nat, Entry,
};
use super::state::TcpState;
use super::{
    FlowKey, FlowTable, InsertError, NewFlow, SetupCredit, NO_REVERSE, RELOCATE_DEPTH,
    SLOTS_PER_BUCKET,
};
use crate::sync::Ordering;

impl FlowTable {
    fn lock(&self, b: usize) {
        if let Some(bucket) = self.bucket(b) {
            bucket.lock();
        }
    }

    fn try_lock(&self, b: usize) -> bool {
        self.bucket(b).is_some_and(|bucket| bucket.try_lock())
    }

    fn unlock(&self, b: usize) {
        if let Some(bucket) = self.bucket(b) {
            bucket.unlock();
        }
    }

    /// Lock a set of buckets in ascending order (duplicates once); returns them sorted.
    fn lock_all<const N: usize>(&self, mut bs: [usize; N]) -> ([usize; N], usize) {
        bs.sort_unstable();
        let mut n = 0;
        for i in 0..N {
            if i == 0 || bs[i] != bs[n - 1] {
                bs[n] = bs[i];
                n += 1;
            }
        }
        for &b in &bs[..n] {
            self.lock(b);
        }
        (bs, n)
    }

    fn unlock_all(&self, bs: &[usize]) {
        for &b in bs.iter().rev() {
            self.unlock(b);
        }
    }

    /// Under the lock of `p`'s buckets: the entry holding `p`'s key.
    fn find_locked(&self, p: &Place) -> Option<usize> {
        [p.b1, p.b2].into_iter().find_map(|b| {
            let mut tagged = self.slots_tagged(b, p.tag);
            while let Some(idx) = Self::first_slot(b, tagged) {
                tagged &= tagged - 1;
                if self.entry(idx).is_some_and(|e| e.is_of(&p.words)) {
                    return Some(idx);
                }
            }
            None
        })
    }

    /// The slots of bucket `b` whose tag is `tag` (0: the free ones), one bit each: the
    /// bucket's tags read once, then counted or searched as bits.
    #[inline(always)]
    fn slots_tagged(&self, b: usize, tag: u32) -> u32 {
        self.bucket(b).map_or(0, |bk| {
            bk.tags.iter().enumerate().fold(0, |m, (i, t)| {
                m | (u32::from(t.load(Ordering::Relaxed) == tag) << i)
            })
        })
    }

    /// The first slot of the `mask` of bucket `b`, as an entry index.
    #[inline(always)]
    fn first_slot(b: usize, mask: u32) -> Option<usize> {
        (mask != 0).then(|| b * SLOTS_PER_BUCKET + mask.trailing_zeros() as usize)
    }

    fn free_slot(&self, b: usize) -> Option<usize> {
        Self::first_slot(b, self.slots_tagged(b, 0))
    }

    fn free_slots(&self, b: usize) -> usize {
        self.slots_tagged(b, 0).count_ones() as usize
    }

    /// The free slot a new entry placed at `p` takes: the first free slot of the first bucket
    /// while that is at most half full, else of the bucket with more free slots (the first on
    /// a tie). At the loads tables mostly run at nearly every key is then in its first bucket,
    /// the only one the flow stage loads ahead of a lookup; a fuller table balances its two
    /// choices as before (preferring the first for longer, so that more lookups end in the
    /// first bucket, made a table of 100 K fill to only 98 %).
    #[inline(always)]
    pub(super) fn preferred_free_slot(&self, p: &Place) -> Option<usize> {
        let (f1, f2) = (self.slots_tagged(p.b1, 0), self.slots_tagged(p.b2, 0));
        if f1.count_ones() as usize >= SLOTS_PER_BUCKET / 2 || f1.count_ones() >= f2.count_ones() {
            Self::first_slot(p.b1, f1)
        } else {
            Self::first_slot(p.b2, f2)
        }
    }

    /// Under the lock of bucket `b`: a free slot, or one freed by evicting a closed or expired
    /// flow.
    fn claim_slot(
        &self,
        b: usize,
        held: &[usize],
        now: u64,
        pinned: Option<usize>,
    ) -> Option<usize> {
        let bucket = self.bucket(b)?;
        if let Some(i) = bucket
            .tags
            .iter()
            .position(|t| t.load(Ordering::Relaxed) == 0)
        {
            return Some(b * SLOTS_PER_BUCKET + i);
        }
        self.evict_in(b, held, now)
            .or_else(|| self.relocate_from(b, held, pinned, RELOCATE_DEPTH))
    }

    /// Under the lock of bucket `b` (full): move one of its entries to that entry's other
    /// candidate bucket if it has room, or (`depth` > 0) if room can be made there the same way
    /// (cuckoo steps), updating the moved entries' partners' reverse indexes. Buckets not in
    /// `held` are only taken without waiting. `pinned` is never moved. Returns the freed slot.
    fn relocate_from(
        &self,
        b: usize,
        held: &[usize],
        pinned: Option<usize>,
        depth: u32,
    ) -> Option<usize> {
        for i in 0..SLOTS_PER_BUCKET {
            let idx = b * SLOTS_PER_BUCKET + i;
            if Some(idx) == pinned {
                continue;
            }
            let e = self.entry(idx)?;
            let words: [u64; 5] = std::array::from_fn(|w| e.key[w].load(Ordering::Relaxed));
            let p = self.place_words(words);
            let alt = if p.b1 == b { p.b2 } else { p.b1 };
            if alt == b || (depth == 0 && self.free_slots(alt) == 0) {
                continue;
            }
            let mine = held.contains(&alt);
            let took_alt = !mine && self.try_lock(alt);
            if !mine && !took_alt {
                continue;
            }
            let mut with_alt = [usize::MAX; 8];
            let n = held.len().min(with_alt.len() - 1);
            with_alt[..n].copy_from_slice(&held[..n]);
            with_alt[n] = alt;
            let to = self.free_slot(alt).or_else(|| {
                (depth > 0)
                    .then(|| self.relocate_from(alt, &with_alt[..=n], pinned, depth - 1))
                    .flatten()
            });
            let moved = to.is_some_and(|to| {
                // The partner is read only now: a step made above may have moved it.
                let partner = meta_rev(e.meta.load(Ordering::Relaxed));
                let pb = partner.map(|r| r as usize / SLOTS_PER_BUCKET);
                let need_pb = pb.filter(|&x| x != alt && !held.contains(&x));
                let took_pb = need_pb.is_some_and(|x| self.try_lock(x));
                let ok = need_pb.is_none() || took_pb;
                if ok {
                    self.move_entry(idx, to, p.tag);
                    if let Some(pe) = partner.and_then(|r| self.entry(r as usize)) {
                        let pm = pe.meta.load(Ordering::Relaxed);
                        pe.meta
                            .store((pm & !0xffff_ffff) | to as u64, Ordering::Relaxed);
                    }
                }
                if let (true, Some(x)) = (took_pb, need_pb) {
                    self.unlock(x);
                }
                ok
            });
            if took_alt {
                self.unlock(alt);
            }
            if moved {
                return Some(idx);
            }
        }
        None
    }

    /// Under the locks of both buckets: copy entry `from` to the free slot `to` and free `from`.
    fn move_entry(&self, from: usize, to: usize, tag: u32) {
        let (Some(a), Some(z)) = (self.entry(from), self.entry(to)) else {
            return;
        };
        for (k, src) in z.key.iter().zip(&a.key) {
            k.store(src.load(Ordering::Relaxed), Ordering::Relaxed);
        }
        for (dst, src) in [(&z.meta, &a.meta), (&z.vifs, &a.vifs), (&z.seen, &a.seen)] {
            dst.store(src.load(Ordering::Relaxed), Ordering::Relaxed);
        }
        if let (Some(cf), Some(ct)) = (self.counter(from), self.counter(to)) {
            ct.packets
                .store(cf.packets.load(Ordering::Relaxed), Ordering::Relaxed);
            ct.bytes
                .store(cf.bytes.load(Ordering::Relaxed), Ordering::Relaxed);
        }
        let tag_of = |i: usize| {
            self.bucket(i / SLOTS_PER_BUCKET)
                .and_then(|bk| bk.tags.get(i % SLOTS_PER_BUCKET))
        };
        if let (Some(tf), Some(tt)) = (tag_of(from), tag_of(to)) {
            tt.store(tag, Ordering::Relaxed);
            tf.store(0, Ordering::Relaxed);
        }
    }

    /// Under the lock of bucket `b`: evict one closed or expired flow of it whose partner's
    /// bucket is `held` or can be taken without waiting. Returns the freed slot.
    fn evict_in(&self, b: usize, held: &[usize], now: u64) -> Option<usize> {
        let bucket = self.bucket(b)?;
        for i in 0..SLOTS_PER_BUCKET {
            let idx = b * SLOTS_PER_BUCKET + i;
            if bucket.tags[i].load(Ordering::Relaxed) == 0 || !self.evictable(idx, now) {
                continue;
            }
            let partner = self
                .entry(idx)
                .and_then(|e| meta_rev(e.meta.load(Ordering::Relaxed)));
            match partner {
                None => self.clear_locked(idx),
                Some(r) => {
                    let pb = r as usize / SLOTS_PER_BUCKET;
                    let mine = held.contains(&pb);
                    let took = !mine && self.try_lock(pb);
                    if !mine && !took {
                        continue;
                    }
                    self.clear_locked(idx);
                    self.clear_locked(r as usize);
                    if took {
                        self.unlock(pb);
                    }
                }
            }
            self.tally.evicted.fetch_add(1, Ordering::Relaxed);
            return Some(idx);
        }
        None
    }

    /// Closed (FIN / RST) or idle beyond its timeout.
    fn evictable(&self, idx: usize, now: u64) -> bool {
        let Some(e) = self.entry(idx) else {
            return false;
        };
        let m = e.meta.load(Ordering::Relaxed);
        let (tcp, seen) = self.pair_state(m, e);
        let proto = (e.key[0].load(Ordering::Relaxed) >> 40) as u8;
        tcp >= TcpState::Fin || now.saturating_sub(seen) > self.timeouts.for_flow(proto, tcp)
    }

    /// The later TCP state and last-seen time of an entry and its partner.
    fn pair_state(&self, m: u64, e: &Entry) -> (TcpState, u64) {
        let mut tcp = meta_tcp(m);
        let mut seen = e.seen.load(Ordering::Relaxed);
        if let Some(p) = meta_rev(m).and_then(|r| self.entry(r as usize)) {
            tcp = tcp.max(meta_tcp(p.meta.load(Ordering::Relaxed)));
            seen = seen.max(p.seen.load(Ordering::Relaxed));
        }
        (tcp, seen)
    }

    /// Under the lock of its bucket: free entry `idx`.
    fn clear_locked(&self, idx: usize) {
        let b = idx / SLOTS_PER_BUCKET;
        if let Some(t) = self
            .bucket(b)
            .and_then(|bk| bk.tags.get(idx % SLOTS_PER_BUCKET))
        {
            // Under the bucket's lock: no other writer, so no locked exchange is needed.
            if t.load(Ordering::Relaxed) != 0 {
                self.give_back_pair(idx);
                t.store(0, Ordering::Relaxed);
                self.tally.reserved.fetch_sub(1, Ordering::Relaxed);
            }
        }
    }

    /// Under the lock of its bucket, as entry `idx` goes: if it is a source-NAT flow's reply
    /// entry (keyed by the pool's address and port, as replies arrive), its pair goes back to
    /// the pool. The other entry gives nothing back, so a pair is given back once per flow; a
    /// floating IP's flows (pool 0) hold none. A least-flows VIP's flow counts its backend
    /// down as its backend-side entry goes (once per flow too).
    fn give_back_pair(&self, idx: usize) {
        let Some(e) = self.entry(idx) else {
            return;
        };
        let m = e.meta.load(Ordering::Relaxed);
        if !meta_is_nat(m) || meta_pool(m) == 0 {
            return;
        }
        let key = FlowKey::from_words(std::array::from_fn(|w| e.key[w].load(Ordering::Relaxed)));
        if meta_nat_dst(m) {
            self.nat_pools
                .give_back(meta_pool(m), key.dst, nat_port_of_reply(&key));
        } else {
            // A least-flows VIP's backend-side entry (the backend is its source) counts its
            // backend's flows down; a source-NAT flow's pod-side entry finds no counts there.
            self.nat_pools
                .release_backend(meta_pool(m), key.src, key.sport);
        }
    }

    fn write_entry(&self, idx: usize, p: &Place, meta: u64, vifs: u64, now: u64) {
        let Some(e) = self.entry(idx) else {
            return;
        };
        for (k, w) in e.key.iter().zip(&p.words) {
            k.store(*w, Ordering::Relaxed);
        }
        e.meta.store(meta, Ordering::Relaxed);
        e.vifs.store(vifs, Ordering::Relaxed);
        e.seen.store(now, Ordering::Relaxed);
        if let Some(c) = self.counter(idx) {
            c.packets.store(0, Ordering::Relaxed);
            c.bytes.store(0, Ordering::Relaxed);
        }
        if let Some(t) = self
            .bucket(idx / SLOTS_PER_BUCKET)
            .and_then(|bk| bk.tags.get(idx % SLOTS_PER_BUCKET))
        {
            t.store(p.tag, Ordering::Relaxed);
        }
    }

    /// Install a flow (and its reverse when `f.with_reverse`) at once: both or neither. Returns
    /// the forward entry's index. Takes the buckets of both keys (at most four) in order.
    pub fn insert(&self, f: &NewFlow) -> Result<u32, InsertError> {
        let fwd = self.place(&f.key);
        let rev = f.with_reverse.then(|| self.place(&f.reverse_key()));
        // An unchunked credit reserves exactly what a setup needs; a failed insert hands its
        // reservation back to the credit, which must then go back to the table.
        let mut credit = SetupCredit::default();
        let installed = self.insert_placed(f, &fwd, rev.as_ref(), &mut credit);
        self.release(&mut credit);
        installed
    }

    /// [`Self::insert`] of keys already placed (`rev`: the reverse key's place, if installed),
    /// reserving the entries from `credit`.
    pub(crate) fn insert_placed(
        &self,
        f: &NewFlow,
        fwd: &Place,
        rev: Option<&Place>,
        credit: &mut SetupCredit,
    ) -> Result<u32, InsertError> {
        // Load all candidate buckets at once before locking them one by one: a lock is a
        // locked instruction, which would otherwise wait for each bucket's miss in turn.
        self.warm_buckets(fwd);
        if let Some(r) = rev {
            self.warm_buckets(r);
        }
        let need = 1 + usize::from(rev.is_some());
        let r = match rev {
            Some(rv) => {
                let (bs, n) = self.lock_all([fwd.b1, fwd.b2, rv.b1, rv.b2]);
                let r = self.insert_locked(f, fwd, Some(rv), &bs[..n], need, credit);
                self.unlock_all(&bs[..n]);
                r
            }
            None => {
                let (bs, n) = self.lock_all([fwd.b1, fwd.b2]);
                let r = self.insert_locked(f, fwd, None, &bs[..n], need, credit);
                self.unlock_all(&bs[..n]);
                r
            }
        };
        match r {
            Ok(_) => {}
            Err(InsertError::Full) => {
                self.tally.table_full.fetch_add(1, Ordering::Relaxed);
            }
            Err(InsertError::Raced) => {
                self.tally.setup_races.fetch_add(1, Ordering::Relaxed);
            }
        }
        r
    }

    fn insert_locked(
        &self,
        f: &NewFlow,
        fwd: &Place,
        rev: Option<&Place>,
        held: &[usize],
        need: usize,
        credit: &mut SetupCredit,
    ) -> Result<u32, InsertError> {
        if self.find_locked(fwd).is_some() || rev.is_some_and(|r| self.find_locked(r).is_some()) {
            return Err(InsertError::Raced);
        }
        // At capacity: make room by evicting a closed or expired flow near the new one.
        while !self.reserve(credit, need) {
            if self.evict_in(fwd.b1, held, f.now).is_none()
                && self.evict_in(fwd.b2, held, f.now).is_none()
            {
                return Err(InsertError::Full);
            }
        }
        // A key goes to the less loaded of its two buckets; when both are full, to a slot
        // freed by eviction or by moving an entry to its other bucket.
        let claim = |p: &Place, pinned: Option<usize>| {
            self.preferred_free_slot(p).or_else(|| {
                [p.b1, p.b2]
                    .into_iter()
                    .find_map(|b| self.claim_slot(b, held, f.now, pinned))
            })
        };
        // Entries reserved but not written go back to the credit.
        let Some(fi) = claim(fwd, None) else {
            credit.entries += need;
            return Err(InsertError::Full);
        };
        let vifs = vifs_word(f.in_vif, f.out_vif, f.policy_gen);
        // The forward entry goes in first (so the reverse cannot take its slot) and learns its
        // partner's index after; readers see neither until the buckets are released.
        let nat = |m: u64, fwd: bool| {
            f.nat.map_or(m, |n| {
                with_nat(m, n.pool, n.forward_rewrites_dst == fwd, n.both)
            })
        };
        let m = nat(
            meta_word(f.verdict, TcpState::None, false, NO_REVERSE),
            true,
        );
        self.write_entry(fi, fwd, m, vifs, f.now);
        if let Some(rp) = rev {
            let Some(ri) = claim(rp, Some(fi)) else {
                // `clear_locked` gives the forward entry's reservation back to the table.
                self.clear_locked(fi);
                credit.entries += 1;
                return Err(InsertError::Full);
            };
            self.write_entry(
                ri,
                rp,
                nat(meta_word(f.verdict, TcpState::None, true, fi as u32), false),
                vifs,
                f.now,
            );
            if let Some(e) = self.entry(fi) {
                e.meta.store(
                    nat(meta_word(f.verdict, TcpState::None, false, ri as u32), true),
                    Ordering::Relaxed,
                );
            }
        }
        // The forward entry's bucket is one of `held`: no other writer.
        if let Some(bk) = self.bucket(fi / SLOTS_PER_BUCKET) {
            let n = bk.created.load(Ordering::Relaxed);
            bk.created.store(n + 1, Ordering::Relaxed);
        }
        Ok(fi as u32)
    }

    /// Remove `key`'s flow and its partner. Returns whether it was there.
    pub fn remove(&self, key: &FlowKey) -> bool {
        let p = self.place(key);
        let mut partner_bucket = p.b1;
        loop {
            let (bs, n) = self.lock_all([p.b1, p.b2, partner_bucket]);
            let Some(idx) = self.find_locked(&p) else {
                self.unlock_all(&bs[..n]);
                return false;
            };
            let partner = self
                .entry(idx)
                .and_then(|e| meta_rev(e.meta.load(Ordering::Relaxed)));
            match partner {
                Some(r) if !bs[..n].contains(&(r as usize / SLOTS_PER_BUCKET)) => {
                    // The partner lives elsewhere: take its bucket too and look again.
                    partner_bucket = r as usize / SLOTS_PER_BUCKET;
                    self.unlock_all(&bs[..n]);
                }
                _ => {
                    self.clear_locked(idx);
                    if let Some(r) = partner {
                        self.clear_locked(r as usize);
                    }
                    self.unlock_all(&bs[..n]);
                    return true;
                }
            }
        }
    }
}
