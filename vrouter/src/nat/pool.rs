//! A source-NAT pool's (address, port) pairs: one bit each, taken by forwarding cores a block
//! (one 64-bit word) at a time and given back by whoever removes the flow.

use super::config::key_bits;
use crate::sync::{AtomicU64, Ordering};
use std::net::IpAddr;

/// Addresses one pool may hold: its bitmap stays at most 2 MiB (256 × 65,535 ports).
pub const MAX_POOL_ADDRESSES: u32 = 256;

/// Words a setup looks at before calling the pool exhausted: a full pool costs a failing
/// setup a bounded scan, not one over the whole bitmap. Pools of up to 4,096 pairs are
/// scanned whole, so their exhaustion is exact; a larger, nearly full pool may refuse a setup
/// while a few pairs are free elsewhere (the core's next setup scans on from there).
const MAX_SCAN_WORDS: usize = 64;

/// What a pool hands out: the addresses `first..=last` (IPv4, or IPv6 for NAT66: both of one
/// family), each with the ports `ports.0..=ports.1` (also the ICMP / ICMPv6 echo identifiers
/// it hands out).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PoolRange {
    pub first: IpAddr,
    pub last: IpAddr,
    pub ports: (u16, u16),
}

impl PoolRange {
    /// Whether its addresses are IPv6.
    #[inline(always)]
    pub fn v6(&self) -> bool {
        self.first.is_ipv6()
    }

    /// The first and last addresses as flow keys hold them.
    #[inline(always)]
    fn bits(&self) -> (u128, u128) {
        (key_bits(self.first).1, key_bits(self.last).1)
    }

    /// Whether the range is one a pool can hold; the error says what is wrong with it.
    pub fn validate(&self) -> Result<(), crate::Error> {
        if self.first.is_ipv6() != self.last.is_ipv6() {
            return Err(crate::Error::NatBadRange(format!(
                "first address {} and last {} are of different address families",
                self.first, self.last
            )));
        }
        let (first, last) = self.bits();
        if first > last {
            return Err(crate::Error::NatBadRange(format!(
                "first address {} is above last {}",
                self.first, self.last
            )));
        }
        if last - first >= u128::from(MAX_POOL_ADDRESSES) {
            return Err(crate::Error::NatBadRange(format!(
                "{}..={} holds {} addresses; at most {MAX_POOL_ADDRESSES} are allowed",
                self.first,
                self.last,
                (last - first).saturating_add(1)
            )));
        }
        let special = match (self.first, self.last) {
            (IpAddr::V4(f), IpAddr::V4(l)) => {
                f.is_unspecified() || f.is_broadcast() || l.is_broadcast()
            }
            (f, l) => f.is_unspecified() || f.is_multicast() || l.is_multicast(),
        };
        if special {
            return Err(crate::Error::NatBadRange(format!(
                "{}..={} holds an unspecified, broadcast or multicast address",
                self.first, self.last
            )));
        }
        let (lo, hi) = self.ports;
        if lo == 0 || lo > hi {
            return Err(crate::Error::NatBadRange(format!(
                "port range {lo}..={hi} must be non-empty and start at 1 or above"
            )));
        }
        Ok(())
    }

    /// Whether two ranges share an address (never across address families).
    pub fn overlaps(&self, other: &PoolRange) -> bool {
        let ((a, b), (c, d)) = (self.bits(), other.bits());
        self.v6() == other.v6() && a <= d && c <= b
    }

    /// Whether `addr` is one of the range's addresses.
    pub fn contains(&self, addr: IpAddr) -> bool {
        addr.is_ipv6() == self.v6() && self.contains_bits(key_bits(addr).1)
    }

    /// Whether `addr`, as flow keys of the range's family hold it, is one of its addresses.
    #[inline]
    pub fn contains_bits(&self, addr: u128) -> bool {
        let (first, last) = self.bits();
        (first..=last).contains(&addr)
    }

    fn addresses(&self) -> u32 {
        let (first, last) = self.bits();
        u32::try_from(last.saturating_sub(first))
            .unwrap_or(u32::MAX - 1)
            .saturating_add(1)
    }

    fn ports_per_address(&self) -> u32 {
        u32::from(self.ports.1) - u32::from(self.ports.0) + 1
    }
}

/// One pool's pairs in use. Shared by the forwarding cores (which take pairs) and by whoever
/// removes flows (which give them back): every change is one atomic operation on one word, no
/// lock. Each core takes pairs from a block (word) of its own until the block is full, so two
/// cores write the same word only where their cursors meet.
#[derive(Debug)]
pub struct PortPool {
    range: PoolRange,
    /// The pool's slot in the flow table's registry: what a flow entry records, so removing
    /// the flow gives its pair back to this pool.
    slot: u8,
    /// Bit `i` of word `w`: pair `64 w + i` is taken (pairs run address by address, port by
    /// port). The bits past the last pair are set for good.
    words: Box<[AtomicU64]>,
    /// Setups refused because no pair was free (written only then).
    exhausted: AtomicU64,
}

impl PortPool {
    /// An empty pool over `range` (validated by the caller) in registry slot `slot`.
    pub fn new(range: PoolRange, slot: u8) -> PortPool {
        let pairs = range.addresses() as usize * range.ports_per_address() as usize;
        let n = pairs.div_ceil(64);
        let words: Box<[AtomicU64]> = (0..n).map(|_| AtomicU64::new(0)).collect();
        let tail = pairs % 64;
        if tail != 0 {
            if let Some(last) = words.last() {
                last.store(!0u64 << tail, Ordering::Relaxed);
            }
        }
        PortPool {
            range,
            slot,
            words,
            exhausted: AtomicU64::new(0),
        }
    }

    pub fn range(&self) -> PoolRange {
        self.range
    }

    pub fn slot(&self) -> u8 {
        self.slot
    }

    /// The pairs it holds.
    pub fn capacity(&self) -> u64 {
        u64::from(self.range.addresses()) * u64::from(self.range.ports_per_address())
    }

    /// The pairs taken now (a walk over the bitmap: for the control side).
    pub fn in_use(&self) -> u64 {
        let set: u64 = self
            .words
            .iter()
            .map(|w| u64::from(w.load(Ordering::Relaxed).count_ones()))
            .sum();
        let padding = self.words.len() as u64 * 64 - self.capacity();
        set - padding
    }

    /// Setups refused because the pool was exhausted.
    pub fn exhausted(&self) -> u64 {
        self.exhausted.load(Ordering::Relaxed)
    }

    /// Take a free pair, looking from the caller's block `cursor` on (moved to where the
    /// pair was found). `None` (counted) when none is free within the scan.
    pub fn take(&self, cursor: &mut usize) -> Option<(u128, u16)> {
        let n = self.words.len();
        if n == 0 {
            return None;
        }
        let scan = n.min(MAX_SCAN_WORDS);
        for k in 0..scan {
            let w = (*cursor + k) % n;
            let Some(word) = self.words.get(w) else {
                continue;
            };
            let mut seen = word.load(Ordering::Relaxed);
            while seen != u64::MAX {
                let bit = (!seen).trailing_zeros();
                let prev = word.fetch_or(1 << bit, Ordering::Relaxed);
                if prev & (1 << bit) == 0 {
                    *cursor = w;
                    return Some(self.pair(w * 64 + bit as usize));
                }
                seen = prev | 1 << bit;
            }
        }
        *cursor = (*cursor + scan) % n;
        self.exhausted.fetch_add(1, Ordering::Relaxed);
        None
    }

    /// Give a pair back (a flow using it was removed). A pair outside the pool is ignored.
    pub fn give_back(&self, addr: u128, port: u16) {
        let Some(i) = self.index(addr, port) else {
            return;
        };
        if let Some(word) = self.words.get(i / 64) {
            word.fetch_and(!(1 << (i % 64)), Ordering::Relaxed);
        }
    }

    /// Whether a pair is taken.
    pub fn is_taken(&self, addr: u128, port: u16) -> bool {
        self.index(addr, port)
            .and_then(|i| self.words.get(i / 64).map(|w| (w, i % 64)))
            .is_some_and(|(w, b)| w.load(Ordering::Relaxed) & (1 << b) != 0)
    }

    fn pair(&self, i: usize) -> (u128, u16) {
        let per = self.range.ports_per_address() as usize;
        let addr = self.range.bits().0 + (i / per) as u128;
        let port = self.range.ports.0 + (i % per) as u16;
        (addr, port)
    }

    fn index(&self, addr: u128, port: u16) -> Option<usize> {
        let (lo, hi) = self.range.ports;
        if !self.range.contains_bits(addr) || !(lo..=hi).contains(&port) {
            return None;
        }
        let a = (addr - self.range.bits().0) as usize;
        Some(a * self.range.ports_per_address() as usize + usize::from(port - lo))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    fn range(first: &str, last: &str, ports: (u16, u16)) -> PoolRange {
        // Either family: the text says which.
        PoolRange {
            first: first.parse().unwrap(),
            last: last.parse().unwrap(),
            ports,
        }
    }

    #[test]
    fn hands_out_every_pair_once_then_refuses_counted() {
        let pool = PortPool::new(range("198.51.100.10", "198.51.100.12", (1000, 1029)), 1);
        assert_eq!(pool.capacity(), 90);
        let mut cursor = 0;
        let mut seen = HashSet::new();
        for _ in 0..90 {
            let (a, p) = pool.take(&mut cursor).expect("a free pair");
            assert!(pool.range().contains_bits(a), "{a:#x} in the pool");
            assert!((1000..=1029).contains(&p), "port {p} in range");
            assert!(seen.insert((a, p)), "{a:#x}:{p} handed out twice");
        }
        assert_eq!(pool.in_use(), 90);
        assert_eq!(pool.take(&mut cursor), None);
        assert_eq!(pool.exhausted(), 1);
        // One given back is the one handed out next.
        let back = *seen.iter().next().unwrap();
        pool.give_back(back.0, back.1);
        assert!(!pool.is_taken(back.0, back.1));
        assert_eq!(pool.in_use(), 89);
        assert_eq!(pool.take(&mut cursor), Some(back));
    }

    #[test]
    fn pairs_outside_the_pool_are_not_given_back() {
        let pool = PortPool::new(range("198.51.100.10", "198.51.100.10", (2000, 2001)), 1);
        let mut c = 0;
        let a = pool.take(&mut c).unwrap();
        pool.give_back(a.0 + 1, a.1);
        pool.give_back(a.0, 1999);
        assert!(pool.is_taken(a.0, a.1));
        assert_eq!(pool.in_use(), 1);
    }

    #[test]
    fn cores_with_their_own_cursors_never_share_a_pair() {
        let pool = std::sync::Arc::new(PortPool::new(
            range("198.51.100.1", "198.51.100.4", (1024, 2047)),
            1,
        ));
        let taken: Vec<Vec<(u128, u16)>> = std::thread::scope(|s| {
            let hs: Vec<_> = (0..4)
                .map(|k| {
                    let pool = pool.clone();
                    s.spawn(move || {
                        let mut cursor = k * 16;
                        (0..1000)
                            .map(|_| pool.take(&mut cursor).expect("room"))
                            .collect::<Vec<_>>()
                    })
                })
                .collect();
            hs.into_iter().map(|h| h.join().unwrap()).collect()
        });
        let all: HashSet<_> = taken.iter().flatten().copied().collect();
        assert_eq!(all.len(), 4000, "every pair taken by exactly one core");
        assert_eq!(pool.in_use(), 4000);
    }

    #[test]
    fn bad_ranges_say_what_is_wrong() {
        let e = |r: PoolRange| r.validate().unwrap_err().to_string();
        assert!(e(range("198.51.100.9", "198.51.100.8", (1, 2))).contains("above last"));
        assert!(e(range("198.18.0.0", "198.18.1.0", (1, 2))).contains("at most 256"));
        assert!(e(range("198.51.100.1", "198.51.100.1", (0, 2))).contains("port range"));
        assert!(e(range("198.51.100.1", "198.51.100.1", (9, 2))).contains("port range"));
        assert!(range("198.51.100.1", "198.51.100.1", (9, 9))
            .validate()
            .is_ok());
        let a = range("198.51.100.1", "198.51.100.8", (1, 2));
        assert!(a.overlaps(&range("198.51.100.8", "198.51.100.9", (1, 2))));
        assert!(!a.overlaps(&range("198.51.100.9", "198.51.100.9", (1, 2))));
    }

    #[test]
    fn an_ipv6_pool_hands_out_its_own_pairs_and_overlaps_only_its_family() {
        let r = range("2001:db8:64::fe", "2001:db8:64::101", (7000, 7001));
        assert!(r.validate().is_ok());
        let pool = PortPool::new(r, 2);
        assert_eq!(pool.capacity(), 8);
        let mut cursor = 3;
        let mut seen = HashSet::new();
        for _ in 0..8 {
            let (a, p) = pool.take(&mut cursor).expect("a free pair");
            let a6 = std::net::Ipv6Addr::from(a);
            assert!(r.contains(a6.into()), "{a6} in the pool");
            assert!(seen.insert((a, p)), "{a6}:{p} handed out twice");
        }
        assert_eq!(pool.take(&mut cursor), None);
        assert_eq!(pool.exhausted(), 1);
        let back = *seen.iter().next().unwrap();
        pool.give_back(back.0, back.1);
        assert_eq!(pool.take(&mut cursor), Some(back));
        // An IPv4 address whose bits fall in the range is not one of its addresses.
        let low = range("::c633:6401", "::c633:6402", (1, 2));
        assert!(!low.contains("198.51.100.1".parse().unwrap()));
        assert!(!low.overlaps(&range("198.51.100.1", "198.51.100.2", (1, 2))));
        assert!(low.overlaps(&range("::c633:6402", "::c633:6409", (1, 2))));
        let e = |r: PoolRange| r.validate().unwrap_err().to_string();
        assert!(e(range("198.51.100.1", "2001:db8::1", (1, 2))).contains("address families"));
        assert!(e(range("2001:db8::", "2001:db8::1:0", (1, 2))).contains("at most 256"));
        assert!(e(range("::", "::1", (1, 2))).contains("unspecified"));
        assert!(e(range("ff02::1", "ff02::2", (1, 2))).contains("multicast"));
    }
}
