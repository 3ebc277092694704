//! Underlay neighbours: the MACs of fabric addresses that tunnel nexthops without a `dmac`
//! send to. A fixed table of slots, each an IPv4 key and a MAC word, made only of atomics:
//! forwarding cores read a MAC with three loads and learn one (from ARP seen on the fabric) with
//! two stores; which addresses are in the table, and when an entry is given up, is the control
//! side's business (one writer, the resolver). Nothing here locks or allocates after `new`.

use crate::wire::MacAddr;
use std::net::Ipv4Addr;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};

/// Addresses the table holds at most (each a tunnel endpoint on the fabric's subnet, or the
/// gateway toward the others).
pub const NEIGH_SLOTS: usize = 1024;

/// A key of a slot that held an address and was given up (probe chains go past it).
const TOMBSTONE: u32 = u32::MAX;
/// A key of a slot never used (probe chains end here).
const EMPTY: u32 = 0;
/// Set in a MAC word that holds a MAC.
const VALID: u64 = 1 << 63;

#[derive(Debug, Default)]
struct Slot {
    /// The IPv4 address as a u32 (`EMPTY`, `TOMBSTONE`: none).
    key: AtomicU32,
    /// `VALID | mac`, or 0 while unresolved.
    mac: AtomicU64,
    /// ARP packets that told us this address's MAC (replies, requests, gratuitous ones).
    learned: AtomicU64,
}

/// The underlay neighbour table (see the module docs).
#[derive(Debug)]
pub struct Neighbours {
    slots: Box<[Slot]>,
}

impl Default for Neighbours {
    fn default() -> Self {
        Neighbours {
            slots: (0..NEIGH_SLOTS).map(|_| Slot::default()).collect(),
        }
    }
}

#[inline(always)]
fn home(ip: u32) -> usize {
    (ip.wrapping_mul(0x9E37_79B1) >> 22) as usize % NEIGH_SLOTS
}

impl Neighbours {
    #[inline(always)]
    fn find(&self, ip: Ipv4Addr) -> Option<&Slot> {
        let key = u32::from(ip);
        if key == EMPTY || key == TOMBSTONE {
            return None;
        }
        let h = home(key);
        for i in 0..NEIGH_SLOTS {
            let s = self.slots.get((h + i) % NEIGH_SLOTS)?;
            match s.key.load(Ordering::Acquire) {
                k if k == key => return Some(s),
                EMPTY => return None,
                _ => {}
            }
        }
        None
    }

    /// The MAC of `ip` if it is resolved (fast path).
    #[inline]
    pub fn mac(&self, ip: Ipv4Addr) -> Option<MacAddr> {
        let s = self.find(ip)?;
        let w = s.mac.load(Ordering::Acquire);
        // The slot may have been given to another address meanwhile: the key must still match.
        if w & VALID == 0 || s.key.load(Ordering::Acquire) != u32::from(ip) {
            return None;
        }
        Some(MacAddr::from_u64(w & !VALID))
    }

    /// ARP on the fabric said `ip` is at `mac`: remembered if `ip` is an address we resolve
    /// (any core may call this; returns whether it was).
    #[inline]
    pub fn learn(&self, ip: Ipv4Addr, mac: MacAddr) -> bool {
        if mac.is_multicast() || mac.to_u64() == 0 {
            return false;
        }
        let Some(s) = self.find(ip) else {
            return false;
        };
        s.mac.store(VALID | mac.to_u64(), Ordering::Release);
        s.learned.fetch_add(1, Ordering::Relaxed);
        true
    }

    /// Control side: resolve `ip` from now on (unresolved until ARP tells). Already there: kept
    /// as it is. Returns false if the table is full.
    pub fn insert(&self, ip: Ipv4Addr) -> bool {
        let key = u32::from(ip);
        if key == EMPTY || key == TOMBSTONE {
            return false;
        }
        if self.find(ip).is_some() {
            return true;
        }
        let h = home(key);
        for i in 0..NEIGH_SLOTS {
            let s = &self.slots[(h + i) % NEIGH_SLOTS];
            let k = s.key.load(Ordering::Acquire);
            if k == EMPTY || k == TOMBSTONE {
                s.mac.store(0, Ordering::Release);
                s.learned.store(0, Ordering::Relaxed);
                s.key.store(key, Ordering::Release);
                return true;
            }
        }
        false
    }

    /// Control side: stop resolving `ip`.
    pub fn remove(&self, ip: Ipv4Addr) {
        if let Some(s) = self.find(ip) {
            s.mac.store(0, Ordering::Release);
            s.key.store(TOMBSTONE, Ordering::Release);
        }
    }

    /// Control side: forget `ip`'s MAC (it stopped answering); it stays in the table.
    pub fn forget(&self, ip: Ipv4Addr) {
        if let Some(s) = self.find(ip) {
            s.mac.store(0, Ordering::Release);
        }
    }

    /// Control side: `ip`'s MAC (if resolved) and how many ARP packets told it so far.
    pub fn get(&self, ip: Ipv4Addr) -> Option<(Option<MacAddr>, u64)> {
        let s = self.find(ip)?;
        let w = s.mac.load(Ordering::Acquire);
        let mac = (w & VALID != 0).then(|| MacAddr::from_u64(w & !VALID));
        Some((mac, s.learned.load(Ordering::Relaxed)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 2);
    const B: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 3);
    const M1: MacAddr = MacAddr([2, 0, 0, 0, 0, 1]);
    const M2: MacAddr = MacAddr([2, 0, 0, 0, 0, 2]);

    #[test]
    fn only_addresses_in_the_table_are_learnt_and_a_new_mac_replaces_the_old() {
        let n = Neighbours::default();
        assert!(!n.learn(A, M1));
        assert_eq!(n.mac(A), None);
        assert!(n.insert(A));
        assert_eq!(n.mac(A), None);
        assert_eq!(n.get(A), Some((None, 0)));
        assert!(n.learn(A, M1));
        assert_eq!(n.mac(A), Some(M1));
        assert!(n.learn(A, M2));
        assert_eq!(n.mac(A), Some(M2));
        assert_eq!(n.get(A), Some((Some(M2), 2)));
        // Broadcast or zero senders are never learnt.
        assert!(!n.learn(A, MacAddr::BROADCAST));
        assert!(!n.learn(A, MacAddr([0; 6])));
        assert_eq!(n.mac(B), None);
        n.forget(A);
        assert_eq!(n.mac(A), None);
        assert_eq!(n.get(A), Some((None, 2)));
        n.remove(A);
        assert_eq!(n.get(A), None);
        assert!(!n.learn(A, M1));
    }

    #[test]
    fn fills_up_reuses_removed_slots_and_keeps_chains_across_tombstones() {
        let n = Neighbours::default();
        let ip = |i: u32| Ipv4Addr::from(0xc612_0000 + i);
        for i in 1..=NEIGH_SLOTS as u32 {
            assert!(n.insert(ip(i)), "{i}");
        }
        assert!(!n.insert(ip(5000)));
        // Inserting again what is there is fine.
        assert!(n.insert(ip(7)));
        n.remove(ip(7));
        for i in (1..=NEIGH_SLOTS as u32).filter(|&i| i != 7) {
            assert!(n.learn(ip(i), M1), "{i}");
            assert_eq!(n.mac(ip(i)), Some(M1));
        }
        assert!(n.insert(ip(5000)));
        assert!(n.learn(ip(5000), M2));
        assert_eq!(n.mac(ip(5000)), Some(M2));
        assert!(!n.insert(Ipv4Addr::UNSPECIFIED));
    }
}
