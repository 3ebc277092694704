//! The table's memory: buckets (sequence word and tags), entries, counters, grouped per bucket,
//! and the encoding of an entry's words.

use super::state::{FlowVerdict, TcpState};
use super::{Hit, NO_REVERSE, SLOTS_PER_BUCKET};
use crate::sync::{fence, spin_loop, AtomicU32, AtomicU64, Ordering};

/// A bucket's line: its sequence lock and its slots' tags.
#[derive(Debug, Default)]
#[repr(align(64))]
pub(super) struct Bucket {
    /// Even: stable; odd: a writer holds the bucket.
    seq: AtomicU32,
    /// Non-zero: the slot is in use and this is its key's tag.
    pub(super) tags: [AtomicU32; SLOTS_PER_BUCKET],
    /// Flows whose forward entry was installed in this bucket: counted here, under its lock,
    /// with a plain store (no counter that every core's setups write).
    pub(super) created: AtomicU64,
}

/// The sequence lock. Writers `lock` (or `try_lock`), write the bucket's tags and its slots'
/// entries with `Relaxed` stores, and `unlock`. Readers take `read_begin`, read with `Relaxed`
/// loads, and keep what they read only if `read_valid` says no writer came in between; they
/// never write the bucket, so lookups from many cores share no cache line in writing.
impl Bucket {
    /// Reader: the sequence to check the read against, or `None` while a writer holds the
    /// bucket.
    #[inline(always)]
    pub(super) fn read_begin(&self) -> Option<u32> {
        let s = self.seq.load(Ordering::Acquire);
        (s & 1 == 0).then_some(s)
    }

    /// Reader: whether what was read since `read_begin` returned `s` is consistent (no writer
    /// took the bucket meanwhile).
    #[inline(always)]
    pub(super) fn read_valid(&self, s: u32) -> bool {
        self.read_keep(true, s)
    }

    /// Reader: whether to keep what was read since `read_begin` returned `s`: the reader
    /// `wants` it and it is consistent. The fence comes first either way, so that a reader's
    /// own test (a key that did not match) does not leave it on one branch only.
    #[inline(always)]
    pub(super) fn read_keep(&self, wants: bool, s: u32) -> bool {
        // Pairs with the fence in `lock`: a load that saw a writer's store makes the load
        // below see that writer's sequence move.
        fence(Ordering::Acquire);
        wants && self.seq.load(Ordering::Relaxed) == s
    }

    /// Writer: take the bucket, waiting while another writer holds it.
    #[inline]
    pub(super) fn lock(&self) {
        loop {
            let s = self.seq.load(Ordering::Relaxed);
            if s & 1 == 0
                && self
                    .seq
                    .compare_exchange_weak(
                        s,
                        s.wrapping_add(1),
                        Ordering::Acquire,
                        Ordering::Relaxed,
                    )
                    .is_ok()
            {
                // Orders the odd sequence before this writer's entry stores.
                fence(Ordering::Release);
                return;
            }
            spin_loop();
        }
    }

    /// Writer: take the bucket if no other writer holds it.
    #[inline]
    pub(super) fn try_lock(&self) -> bool {
        let s = self.seq.load(Ordering::Relaxed);
        if s & 1 == 0
            && self
                .seq
                .compare_exchange(s, s.wrapping_add(1), Ordering::Acquire, Ordering::Relaxed)
                .is_ok()
        {
            fence(Ordering::Release);
            return true;
        }
        false
    }

    /// Writer: let the bucket go.
    #[inline]
    pub(super) fn unlock(&self) {
        // We hold it, so no other writer moves it: a plain release store (no locked
        // instruction that would wait for this setup's entry writes to reach memory).
        let s = self.seq.load(Ordering::Relaxed);
        self.seq.store(s.wrapping_add(1), Ordering::Release);
    }
}

/// What a lookup reads, in one cache line of its own. Words: `meta` = verdict (8) | tcp state
/// (8) | flags (8) | NAT pool slot (8) | reverse index (32); `vifs` = in vif (16) | out vif (16) |
/// policy generation (32).
#[derive(Debug, Default)]
#[repr(align(64))]
pub(super) struct Entry {
    pub(super) key: [AtomicU64; 5],
    pub(super) meta: AtomicU64,
    pub(super) vifs: AtomicU64,
    pub(super) seen: AtomicU64,
}

impl Entry {
    /// Whether the entry holds the key with these words: all five compared without branching
    /// (one test instead of a branch per word).
    #[inline(always)]
    pub(super) fn is_of(&self, w: &[u64; 5]) -> bool {
        self.key
            .iter()
            .zip(w)
            .fold(0, |d, (k, w)| d | (k.load(Ordering::Relaxed) ^ w))
            == 0
    }
}

/// An entry's packet and byte counters, beside the entries (four per cache line): only
/// written on a hit, never read by a lookup, so they stay out of the entry's line.
#[derive(Debug, Default)]
pub(super) struct Counters {
    pub(super) packets: AtomicU64,
    pub(super) bytes: AtomicU64,
}

const FLAG_REVERSE: u64 = 1;
/// The flow is translated (its partner's key holds the other side of the translation).
const FLAG_NAT: u64 = 2;
/// A translated entry whose packets have their destination rewritten (they come back
/// through the translation: a source-NAT flow's replies, a floating IP's inbound packets);
/// without it, their source.
const FLAG_NAT_DST: u64 = 4;
/// A translated flow whose packets have both ends rewritten (a link-local service's: the
/// pod's source to its per-vif link-local address, the link-local address to the service),
/// each from its partner's key.
const FLAG_NAT_BOTH: u64 = 8;

pub(super) fn meta_word(verdict: FlowVerdict, tcp: TcpState, reverse_flag: bool, rev: u32) -> u64 {
    let v = match verdict {
        FlowVerdict::Forward => 1u64,
        FlowVerdict::Drop => 2,
    };
    v << 56 | (tcp as u64) << 48 | u64::from(reverse_flag) << 40 | u64::from(rev)
}

/// `m` marked as a NAT entry (rewriting its packets' destination if `dst`) whose pair came
/// from the pool in registry slot `pool` (0: none, a floating IP's).
pub(super) fn with_nat(m: u64, pool: u8, dst: bool, both: bool) -> u64 {
    let dst = if dst { FLAG_NAT_DST } else { 0 };
    let both = if both { FLAG_NAT_BOTH } else { 0 };
    m | (FLAG_NAT | dst | both) << 40 | u64::from(pool) << 32
}

#[inline]
pub(super) fn meta_nat_both(m: u64) -> bool {
    (m >> 40) & FLAG_NAT_BOTH != 0
}

#[inline]
pub(super) fn meta_nat_dst(m: u64) -> bool {
    (m >> 40) & FLAG_NAT_DST != 0
}

#[inline]
pub(super) fn meta_is_nat(m: u64) -> bool {
    (m >> 40) & FLAG_NAT != 0
}

#[inline]
pub(super) fn meta_pool(m: u64) -> u8 {
    (m >> 32) as u8
}

#[inline]
pub(super) fn meta_verdict(m: u64) -> FlowVerdict {
    if (m >> 56) as u8 == 1 {
        FlowVerdict::Forward
    } else {
        FlowVerdict::Drop
    }
}
#[inline]
pub(super) fn meta_tcp(m: u64) -> TcpState {
    TcpState::from_u8((m >> 48) as u8)
}
#[inline]
pub(super) fn meta_is_reverse(m: u64) -> bool {
    (m >> 40) & FLAG_REVERSE == 1
}
#[inline]
pub(super) fn meta_rev(m: u64) -> Option<u32> {
    let r = m as u32;
    (r != NO_REVERSE).then_some(r)
}
pub(super) fn vifs_word(in_vif: u16, out_vif: u16, gen: u32) -> u64 {
    u64::from(in_vif) << 48 | u64::from(out_vif) << 32 | u64::from(gen)
}

#[inline(always)]
pub(super) fn hit(idx: usize, m: u64, v: u64) -> Hit {
    Hit {
        index: idx as u32,
        verdict: meta_verdict(m),
        is_reverse: meta_is_reverse(m),
        nat: meta_is_nat(m),
        nat_dst: meta_nat_dst(m),
        nat_both: meta_nat_both(m),
        partner: meta_rev(m),
        in_vif: (v >> 48) as u16,
        out_vif: (v >> 32) as u16,
        policy_gen: v as u32,
    }
}

/// A bucket with its slots' entries and counters, contiguous: a lookup that finds its key in
/// its first bucket touches one page, not three (page walks are what a large table's lookups
/// wait for most).
#[derive(Debug, Default)]
#[repr(C, align(64))]
pub(super) struct Group {
    pub(super) bucket: Bucket,
    pub(super) entries: [Entry; SLOTS_PER_BUCKET],
    pub(super) counters: [Counters; SLOTS_PER_BUCKET],
}
