//! The flow table's registry of pools: a NAT flow's entry records its pool's slot, so that the
//! code removing the flow (aging on any core, eviction, the control side) gives the pair back
//! to the right pool. A service VIP balanced by least flows takes a slot of the same numbering
//! for its backends' flow counts, which its flows' removal counts down.

use super::PortPool;
use arc_swap::ArcSwapOption;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;

/// Slots 1..=255 hold pools or least-flows services' counts (0 in an entry means "none").
pub const MAX_POOLS: usize = 255;

/// Backends a service's counts can tell apart at once: its own (at most 64) and those of the
/// set it replaces, whose flows are still being removed.
pub const COUNTED_BACKENDS: usize = 128;

/// The flows each backend of a least-flows service holds now: counted up by the core that sets
/// a flow up, down by whoever removes it (the flow's backend-side entry names the backend).
/// The control side gives each backend a place before publishing it, and frees the places of
/// backends it removed once their flows are gone.
#[derive(Debug)]
pub struct BackendCounts {
    slot: u8,
    /// Per place: 0 (free) or `1 << 48 | address << 16 | port`.
    ids: [AtomicU64; COUNTED_BACKENDS],
    counts: [AtomicU64; COUNTED_BACKENDS],
}

/// A backend's id in its place: exact for an IPv4 address (as flow keys hold it, in the low
/// 32 bits); for an IPv6 address a 47-bit digest of it (its two halves mixed), marked apart from
/// the IPv4 ids. Two backends of one service sharing a digest would share a count (the balance
/// a little off, nothing else): [`BackendCounts::assign`] refuses such a set.
fn backend_id(addr: u128, port: u16) -> u64 {
    match u32::try_from(addr) {
        Ok(a) => 1 << 48 | u64::from(a) << 16 | u64::from(port),
        Err(_) => {
            let mixed = ((addr >> 64) as u64)
                .wrapping_mul(0x9e37_79b9_7f4a_7c15)
                .rotate_left(29)
                ^ (addr as u64);
            let digest = mixed.wrapping_mul(0xff51_afd7_ed55_8ccd) >> 17;
            1 << 63 | (digest & ((1 << 47) - 1)) << 16 | u64::from(port)
        }
    }
}

impl BackendCounts {
    pub fn new(slot: u8) -> BackendCounts {
        BackendCounts {
            slot,
            ids: std::array::from_fn(|_| AtomicU64::new(0)),
            counts: std::array::from_fn(|_| AtomicU64::new(0)),
        }
    }

    /// The registry slot its flows' entries record.
    pub fn slot(&self) -> u8 {
        self.slot
    }

    /// The place of backend `addr:port`, if it has one.
    pub fn place_of(&self, addr: u128, port: u16) -> Option<usize> {
        let id = backend_id(addr, port);
        self.ids
            .iter()
            .position(|i| i.load(Ordering::Relaxed) == id)
    }

    /// The control side: give each of `backends` a place (keeping those they have). `None`
    /// if there are not enough free places.
    pub fn assign(&self, backends: &[(u128, u16)]) -> Option<Vec<u8>> {
        let ids: Vec<u64> = backends.iter().map(|&(a, p)| backend_id(a, p)).collect();
        if ids.iter().enumerate().any(|(i, id)| ids[..i].contains(id)) {
            return None;
        }
        backends
            .iter()
            .map(|&(a, p)| {
                let at = match self.place_of(a, p) {
                    Some(at) => at,
                    None => {
                        let at = self
                            .ids
                            .iter()
                            .position(|i| i.load(Ordering::Relaxed) == 0)?;
                        self.counts[at].store(0, Ordering::Relaxed);
                        self.ids[at].store(backend_id(a, p), Ordering::Relaxed);
                        at
                    }
                };
                u8::try_from(at).ok()
            })
            .collect()
    }

    /// The control side: free the places of `backends` (their flows were removed).
    pub fn forget(&self, backends: &[(u128, u16)]) {
        for &(a, p) in backends {
            if let Some(at) = self.place_of(a, p) {
                self.ids[at].store(0, Ordering::Relaxed);
            }
        }
    }

    /// Flows the backend at `place` holds now.
    #[inline]
    pub fn count(&self, place: u8) -> u64 {
        self.counts
            .get(usize::from(place))
            .map_or(u64::MAX, |c| c.load(Ordering::Relaxed))
    }

    /// A flow to the backend at `place` was set up.
    #[inline]
    pub fn add(&self, place: u8) {
        if let Some(c) = self.counts.get(usize::from(place)) {
            c.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// A flow to the backend at `place` went (or was never installed).
    #[inline]
    pub fn sub(&self, place: u8) {
        if let Some(c) = self.counts.get(usize::from(place)) {
            // Never below zero: a flow set up before its backend had a place is not counted.
            let _ = c.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_sub(1));
        }
    }
}

#[derive(Debug)]
pub struct PortPools {
    slots: Box<[ArcSwapOption<PortPool>]>,
    counts: Box<[ArcSwapOption<BackendCounts>]>,
    /// Where the search for a free slot starts: after the last one taken, so a slot a removed
    /// pool left is reused as late as possible (a flow set up just before its pool went could
    /// still give a pair back to that slot).
    next: AtomicUsize,
}

impl Default for PortPools {
    fn default() -> Self {
        PortPools {
            slots: (0..=MAX_POOLS).map(|_| ArcSwapOption::empty()).collect(),
            counts: (0..=MAX_POOLS).map(|_| ArcSwapOption::empty()).collect(),
            next: AtomicUsize::new(0),
        }
    }
}

impl PortPools {
    /// A slot no pool holds (the control side, under its own lock, is the only caller).
    pub fn free_slot(&self) -> Option<u8> {
        let from = self.next.load(Ordering::Relaxed);
        let slot = (0..MAX_POOLS)
            .map(|k| (from + k) % MAX_POOLS + 1)
            .find(|&s| {
                self.slots.get(s).is_some_and(|x| x.load().is_none())
                    && self.counts.get(s).is_some_and(|x| x.load().is_none())
            })?;
        self.next.store(slot, Ordering::Relaxed);
        u8::try_from(slot).ok()
    }

    /// Put `pool` in its slot.
    pub fn register(&self, pool: Arc<PortPool>) {
        if let Some(s) = self.slots.get(usize::from(pool.slot())) {
            s.store(Some(pool));
        }
    }

    /// Put a least-flows service's counts in their slot.
    pub fn register_counts(&self, counts: Arc<BackendCounts>) {
        if let Some(s) = self.counts.get(usize::from(counts.slot())) {
            s.store(Some(counts));
        }
    }

    /// Empty slot `slot` (its flows were removed first).
    pub fn unregister(&self, slot: u8) {
        if let Some(s) = self.slots.get(usize::from(slot)) {
            s.store(None);
        }
        if let Some(s) = self.counts.get(usize::from(slot)) {
            s.store(None);
        }
    }

    /// A flow of the least-flows service in `slot` to backend `addr:port` went: count it down.
    pub fn release_backend(&self, slot: u8, addr: u128, port: u16) {
        if let Some(c) = self.counts.get(usize::from(slot)).map(|s| s.load()) {
            if let Some(c) = c.as_ref() {
                if let Some(at) = c.place_of(addr, port) {
                    c.sub(at as u8);
                }
            }
        }
    }

    /// Give a pair back to the pool in `slot`.
    pub fn give_back(&self, slot: u8, addr: u128, port: u16) {
        if let Some(pool) = self.slots.get(usize::from(slot)).map(|s| s.load()) {
            if let Some(p) = pool.as_ref() {
                p.give_back(addr, port);
            }
        }
    }
}
