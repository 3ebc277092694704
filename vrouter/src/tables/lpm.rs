//! Longest-prefix match as a multibit trie with controlled prefix expansion: a 16-bit first
//! level (65 536 entries, the "DIR-16" of DIR-16-8-8) followed by 8-bit groups. IPv4 takes at
//! most three memory reads; IPv6 uses the same structure with up to fifteen levels.
//!
//! Forwarding reads entries with plain atomic loads while a writer updates them in place: a new
//! group is filled before the entry pointing at it is published (release / acquire). An update
//! touches only the entries its prefix covers, never the whole table. Groups are never freed
//! (a reader may still be in one), so deleting routes does not shrink memory; the group pool is
//! bounded at construction and an insert that would exceed it fails cleanly.
//!
//! The rules themselves are also kept, writer-side only, to find the covering route a delete
//! falls back to.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, OnceLock};

use super::OwnLines;

const ROOT_BITS: u8 = 16;
const GROUP_BITS: u8 = 8;
const GROUP_SIZE: usize = 1 << GROUP_BITS;
const GROUPS_PER_CHUNK: usize = 64;

const EXT: u64 = 1 << 63;
const VALID: u64 = 1 << 62;
const DEPTH_SHIFT: u32 = 48;
/// Bits of payload a leaf stores.
pub const PAYLOAD_BITS: u32 = 48;
const PAYLOAD_MASK: u64 = (1 << PAYLOAD_BITS) - 1;

/// Why an LPM update failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LpmError {
    BadLength,
    HostBits,
    Full { groups: usize },
    NotFound,
}

#[derive(Debug, Default)]
struct Writer {
    rules: BTreeMap<(u128, u8), u64>,
    next_group: usize,
}

/// One address family's route table (keys are `bits` wide, left-aligned in nothing: an IPv4
/// key is the address as a `u128` below 2^32).
#[derive(Debug)]
pub struct Lpm {
    bits: u8,
    /// The 16-bit first level (512 KiB), allocated with the first route: a VRF that never
    /// gets routes of this family costs nothing for it.
    root: OnceLock<Box<[AtomicU64]>>,
    chunks: Box<[OnceLock<Box<[AtomicU64]>>]>,
    /// Apart from `root` and `chunks`, which every lookup reads: taking the lock writes it,
    /// and beside them each route update would evict them from the forwarding cores' caches.
    writer: OwnLines<Mutex<Writer>>,
}

#[inline(always)]
fn leaf(payload: u64, depth: u8) -> u64 {
    VALID | (u64::from(depth) << DEPTH_SHIFT) | (payload & PAYLOAD_MASK)
}
#[inline(always)]
fn depth_of(e: u64) -> u8 {
    (e >> DEPTH_SHIFT) as u8
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Mode {
    Insert,
    Delete,
}

impl Lpm {
    /// A table for `bits`-wide keys (32 or 128) with room for `max_groups` 8-bit groups.
    ///
    /// # Panics
    /// If `bits` is neither 32 nor 128 (a programming error: the tables only make these two).
    pub fn new(bits: u8, max_groups: usize) -> Self {
        assert!(
            bits == 32 || bits == 128,
            "LPM key width is 32 or 128, got {bits}"
        );
        let chunks = max_groups.div_ceil(GROUPS_PER_CHUNK);
        Lpm {
            bits,
            root: OnceLock::new(),
            chunks: (0..chunks).map(|_| OnceLock::new()).collect(),
            writer: OwnLines::default(),
        }
    }

    pub fn bits(&self) -> u8 {
        self.bits
    }

    #[inline(always)]
    fn group(&self, g: usize) -> Option<&[AtomicU64]> {
        let chunk = self.chunks.get(g / GROUPS_PER_CHUNK)?.get()?;
        let at = (g % GROUPS_PER_CHUNK) * GROUP_SIZE;
        chunk.get(at..at + GROUP_SIZE)
    }

    /// The payload of the longest prefix covering `key`.
    #[inline(always)]
    pub fn lookup(&self, key: u128) -> Option<u64> {
        let mut shift = u32::from(self.bits - ROOT_BITS);
        let root = self.root.get()?;
        let mut e = root[((key >> shift) & 0xffff) as usize].load(Ordering::Acquire);
        while e & EXT != 0 {
            shift = shift.checked_sub(u32::from(GROUP_BITS))?;
            let g = self.group((e & 0xffff_ffff) as usize)?;
            e = g[((key >> shift) & 0xff) as usize].load(Ordering::Acquire);
        }
        if e & VALID != 0 {
            Some(e & PAYLOAD_MASK)
        } else {
            None
        }
    }

    /// [`Lpm::lookup`] for a 32-bit table, unrolled, in 32-bit arithmetic (the IPv4 fast path).
    #[inline(always)]
    pub fn lookup_v4(&self, key: u32) -> Option<u64> {
        if self.bits != 32 {
            return self.lookup(u128::from(key));
        }
        let root = self.root.get()?;
        let mut e = root.get((key >> 16) as usize)?.load(Ordering::Acquire);
        if e & EXT != 0 {
            let g = self.group((e & 0xffff_ffff) as usize)?;
            e = g.get(((key >> 8) & 0xff) as usize)?.load(Ordering::Acquire);
            if e & EXT != 0 {
                let g = self.group((e & 0xffff_ffff) as usize)?;
                e = g.get((key & 0xff) as usize)?.load(Ordering::Acquire);
            }
        }
        if e & VALID != 0 {
            Some(e & PAYLOAD_MASK)
        } else {
            None
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Writer> {
        // The trie stays consistent entry by entry; a panicked writer leaves nothing half-made
        // that a reader could misread, so a poisoned lock is still usable.
        self.writer.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn check(&self, prefix: u128, len: u8) -> Result<(), LpmError> {
        if len > self.bits {
            return Err(LpmError::BadLength);
        }
        if prefix & mask_low_n(self.bits, len) != 0 {
            return Err(LpmError::HostBits);
        }
        if self.bits < 128 && prefix >> self.bits != 0 {
            return Err(LpmError::HostBits);
        }
        Ok(())
    }

    /// Add or replace the route `prefix/len` with `payload` (at most [`PAYLOAD_BITS`] bits).
    pub fn insert(&self, prefix: u128, len: u8, payload: u64) -> Result<(), LpmError> {
        self.check(prefix, len)?;
        let mut w = self.lock();
        self.paint(&mut w, prefix, len, leaf(payload, len), Mode::Insert)?;
        w.rules.insert((prefix, len), payload & PAYLOAD_MASK);
        Ok(())
    }

    /// Remove the route `prefix/len`; addresses it covered fall back to the next shorter route.
    pub fn remove(&self, prefix: u128, len: u8) -> Result<(), LpmError> {
        self.check(prefix, len)?;
        let mut w = self.lock();
        if w.rules.remove(&(prefix, len)).is_none() {
            return Err(LpmError::NotFound);
        }
        let fallback = (0..len)
            .rev()
            .find_map(|l| {
                let p = prefix & !mask_low_n(self.bits, l);
                w.rules.get(&(p, l)).map(|&v| leaf(v, l))
            })
            .unwrap_or(0);
        self.paint(&mut w, prefix, len, fallback, Mode::Delete)
    }

    /// The exact route `prefix/len`, if present (control side).
    pub fn get(&self, prefix: u128, len: u8) -> Option<u64> {
        self.lock().rules.get(&(prefix, len)).copied()
    }

    /// All routes (control side).
    pub fn routes(&self) -> Vec<(u128, u8, u64)> {
        self.lock()
            .rules
            .iter()
            .map(|(&(p, l), &v)| (p, l, v))
            .collect()
    }

    pub fn len(&self) -> usize {
        self.lock().rules.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Groups allocated so far.
    pub fn groups_used(&self) -> usize {
        self.lock().next_group
    }

    fn alloc_group(&self, w: &mut Writer, fill: u64) -> Result<usize, LpmError> {
        let g = w.next_group;
        let chunk = self
            .chunks
            .get(g / GROUPS_PER_CHUNK)
            .ok_or(LpmError::Full { groups: g })?
            .get_or_init(|| {
                (0..GROUPS_PER_CHUNK * GROUP_SIZE)
                    .map(|_| AtomicU64::new(0))
                    .collect()
            });
        let at = (g % GROUPS_PER_CHUNK) * GROUP_SIZE;
        for e in &chunk[at..at + GROUP_SIZE] {
            e.store(fill, Ordering::Relaxed);
        }
        w.next_group += 1;
        Ok(g)
    }

    /// Write `new` into every entry `prefix/len` covers, creating groups down to the level
    /// where the prefix ends (insert) and recursing into deeper groups.
    fn paint(
        &self,
        w: &mut Writer,
        prefix: u128,
        len: u8,
        new: u64,
        mode: Mode,
    ) -> Result<(), LpmError> {
        let mut start: u8 = 0;
        let mut stride = ROOT_BITS;
        let mut table: &[AtomicU64] = self.root.get_or_init(|| {
            (0..1usize << ROOT_BITS)
                .map(|_| AtomicU64::new(0))
                .collect()
        });
        loop {
            let end = start + stride;
            let shift = u32::from(self.bits - end);
            let slot = ((prefix >> shift) & ((1u128 << stride) - 1)) as usize;
            if len <= end {
                let count = 1usize << (end - len);
                for e in &table[slot..slot + count] {
                    self.paint_entry(e, new, len, mode);
                }
                return Ok(());
            }
            let e = table[slot].load(Ordering::Acquire);
            table = if e & EXT != 0 {
                self.group((e & 0xffff_ffff) as usize)
                    .ok_or(LpmError::Full {
                        groups: w.next_group,
                    })?
            } else {
                if mode == Mode::Delete {
                    // Nothing was ever painted below here.
                    return Ok(());
                }
                let g = self.alloc_group(w, e)?;
                // The group is complete before the pointer to it becomes visible.
                table[slot].store(EXT | g as u64, Ordering::Release);
                self.group(g).ok_or(LpmError::Full { groups: g })?
            };
            start = end;
            stride = GROUP_BITS;
        }
    }

    fn paint_entry(&self, e: &AtomicU64, new: u64, len: u8, mode: Mode) {
        let cur = e.load(Ordering::Acquire);
        if cur & EXT != 0 {
            if let Some(g) = self.group((cur & 0xffff_ffff) as usize) {
                for c in g {
                    self.paint_entry(c, new, len, mode);
                }
            }
            return;
        }
        let replace = match mode {
            Mode::Insert => cur & VALID == 0 || depth_of(cur) <= len,
            Mode::Delete => cur & VALID != 0 && depth_of(cur) == len,
        };
        if replace {
            e.store(new, Ordering::Release);
        }
    }
}

/// Mask of the low `bits` bits.
fn mask_low(bits: u8) -> u128 {
    if bits >= 128 {
        u128::MAX
    } else {
        (1u128 << bits) - 1
    }
}

/// Mask of the host part of a `len`-bit prefix in a `bits`-wide key.
fn mask_low_n(bits: u8, len: u8) -> u128 {
    mask_low(bits - len)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// The obviously-right reference: scan every rule.
    fn naive(rules: &BTreeMap<(u128, u8), u64>, bits: u8, key: u128) -> Option<u64> {
        rules
            .iter()
            .filter(|(&(p, l), _)| key & !mask_low_n(bits, l) == p)
            .max_by_key(|(&(_, l), _)| l)
            .map(|(_, &v)| v)
    }

    fn masked(bits: u8, addr: u128, len: u8) -> u128 {
        addr & !mask_low_n(bits, len) & mask_low(bits)
    }

    #[derive(Debug, Clone)]
    enum Op {
        Add(u128, u8, u64),
        Del(usize),
    }

    fn ops(bits: u8) -> impl Strategy<Value = Vec<Op>> {
        // Addresses drawn from a small pool of bases so prefixes overlap and nest often.
        let addr = (0usize..4, any::<u128>()).prop_map(move |(base, noise)| {
            let bases = [
                0x0a00_0000u128 << (bits - 32),
                0xc612_0000 << (bits - 32),
                0,
                mask_low(bits),
            ];
            (bases[base] ^ (noise >> (128 - bits) >> (bits / 2))) & mask_low(bits)
        });
        let op = prop_oneof![
            3 => (addr, 0..=bits, 0u64..1000).prop_map(move |(a, l, v)| Op::Add(masked(bits, a, l), l, v)),
            1 => any::<usize>().prop_map(Op::Del),
        ];
        proptest::collection::vec(op, 1..80)
    }

    fn run(bits: u8, ops: Vec<Op>, probes: Vec<u128>) -> Result<(), TestCaseError> {
        let lpm = Lpm::new(bits, 4096);
        let mut reference = BTreeMap::new();
        for op in ops {
            match op {
                Op::Add(p, l, v) => {
                    lpm.insert(p, l, v).unwrap();
                    reference.insert((p, l), v);
                }
                Op::Del(i) => {
                    if reference.is_empty() {
                        continue;
                    }
                    let k = *reference.keys().nth(i % reference.len()).unwrap();
                    reference.remove(&k);
                    lpm.remove(k.0, k.1).unwrap();
                }
            }
        }
        // Probe inside every prefix, at its edges, and at random keys.
        let mut keys: Vec<u128> = probes.into_iter().map(|p| p & mask_low(bits)).collect();
        for &(p, l) in reference.keys() {
            keys.push(p);
            keys.push(p | mask_low_n(bits, l));
            keys.push(p.wrapping_sub(1) & mask_low(bits));
        }
        for k in keys {
            let want = naive(&reference, bits, k);
            prop_assert_eq!(lpm.lookup(k), want, "key {:x}", k);
            if bits == 32 {
                prop_assert_eq!(lpm.lookup_v4(k as u32), want, "v4 key {:x}", k);
            }
        }
        Ok(())
    }

    proptest! {
        #[test]
        fn ipv4_lpm_matches_naive_reference(o in ops(32), probes in proptest::collection::vec(any::<u128>(), 32)) {
            run(32, o, probes)?;
        }

        #[test]
        fn ipv6_lpm_matches_naive_reference(o in ops(128), probes in proptest::collection::vec(any::<u128>(), 32)) {
            run(128, o, probes)?;
        }
    }

    #[test]
    fn rejects_bad_prefixes_and_missing_routes() {
        let lpm = Lpm::new(32, 16);
        assert_eq!(lpm.insert(0xc0000201, 24, 1), Err(LpmError::HostBits));
        assert_eq!(lpm.insert(0, 33, 1), Err(LpmError::BadLength));
        assert_eq!(lpm.remove(0xc0000200, 24), Err(LpmError::NotFound));
        assert_eq!(lpm.lookup(0xc0000201), None);
    }

    #[test]
    fn full_group_pool_fails_cleanly_and_keeps_old_routes() {
        let lpm = Lpm::new(32, 64);
        lpm.insert(0x0a000000, 8, 7).unwrap();
        let mut err = None;
        for i in 0..100u128 {
            if let Err(e) = lpm.insert(0x0a000000 | (i << 16) | 0x0100, 24, 1) {
                err = Some(e);
                break;
            }
        }
        assert!(matches!(err, Some(LpmError::Full { .. })));
        assert_eq!(lpm.lookup(0x0aff0001), Some(7), "the /8 still answers");
    }

    #[test]
    fn lookups_see_old_or_new_route_while_a_writer_churns() {
        use std::sync::Arc;
        let lpm = Arc::new(Lpm::new(32, 1024));
        lpm.insert(0xc6120000, 15, 1).unwrap();
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let r = {
            let (lpm, stop) = (lpm.clone(), stop.clone());
            std::thread::spawn(move || {
                let mut n = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    let v = lpm.lookup(0xc6120105);
                    assert!(v == Some(1) || v == Some(2) || v == Some(3), "{v:?}");
                    n += 1;
                }
                n
            })
        };
        for _ in 0..2000 {
            lpm.insert(0xc6120100, 24, 2).unwrap();
            lpm.insert(0xc6120104, 30, 3).unwrap();
            lpm.remove(0xc6120104, 30).unwrap();
            lpm.remove(0xc6120100, 24).unwrap();
        }
        stop.store(true, Ordering::Relaxed);
        assert!(r.join().unwrap() > 0);
    }

    #[test]
    fn a_million_ipv4_routes_fit() {
        // 1 M /24s and /32s spread over the address space.
        let lpm = Lpm::new(32, 1 << 17);
        let mut n = 0u32;
        for i in 0..(1u32 << 20) {
            // Multiplying by an odd constant permutes the 24-bit prefixes: all distinct.
            let a = (i.wrapping_mul(2_654_435_761) & 0x00ff_ffff) << 8;
            lpm.insert(u128::from(a), 24, u64::from(i)).unwrap();
            n += 1;
        }
        assert_eq!(lpm.len(), n as usize);
        let a5 = (5u32.wrapping_mul(2_654_435_761) & 0x00ff_ffff) << 8;
        assert_eq!(lpm.lookup(u128::from(a5 | 7)), Some(5));
    }
}
