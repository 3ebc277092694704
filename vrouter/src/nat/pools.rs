//! The flow table's registry of pools: a NAT flow's entry records its pool's slot, so that the
//! code removing the flow (aging on any core, eviction, the control side) gives the pair back
//! to the right pool.

use super::PortPool;
use arc_swap::ArcSwapOption;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

/// Slots 1..=255 hold pools (0 in an entry means "no pool").
pub const MAX_POOLS: usize = 255;

#[derive(Debug)]
pub struct PortPools {
    slots: Box<[ArcSwapOption<PortPool>]>,
    /// Where the search for a free slot starts: after the last one taken, so a slot a removed
    /// pool left is reused as late as possible (a flow set up just before its pool went could
    /// still give a pair back to that slot).
    next: AtomicUsize,
}

impl Default for PortPools {
    fn default() -> Self {
        PortPools {
            slots: (0..=MAX_POOLS).map(|_| ArcSwapOption::empty()).collect(),
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
            .find(|&s| self.slots.get(s).is_some_and(|x| x.load().is_none()))?;
        self.next.store(slot, Ordering::Relaxed);
        u8::try_from(slot).ok()
    }

    /// Put `pool` in its slot.
    pub fn register(&self, pool: Arc<PortPool>) {
        if let Some(s) = self.slots.get(usize::from(pool.slot())) {
            s.store(Some(pool));
        }
    }

    /// Empty slot `slot` (its flows were removed first).
    pub fn unregister(&self, slot: u8) {
        if let Some(s) = self.slots.get(usize::from(slot)) {
            s.store(None);
        }
    }

    /// Give a pair back to the pool in `slot`.
    pub fn give_back(&self, slot: u8, addr: u32, port: u16) {
        if let Some(pool) = self.slots.get(usize::from(slot)).map(|s| s.load()) {
            if let Some(p) = pool.as_ref() {
                p.give_back(addr, port);
            }
        }
    }
}
