//! A fixed-capacity array of owned mbufs: what rx/tx bursts and rings fill and drain, with no
//! heap allocation.

use crate::mbuf::Mbuf;
use crate::sys;

/// Largest burst; 64 covers every burst size vrouter uses (32 is typical).
pub const BURST_MAX: usize = 64;

/// Up to [`BURST_MAX`] owned mbufs. Invariant: `slots[..len]` are `Some`, the rest `None`.
///
/// `Option<Mbuf>` has the layout of `struct rte_mbuf *` (null for `None`), so DPDK writes and
/// reads the slots directly.
pub struct MbufBurst {
    len: usize,
    slots: [Option<Mbuf>; BURST_MAX],
}

impl Default for MbufBurst {
    fn default() -> Self {
        Self::new()
    }
}

impl MbufBurst {
    pub const fn new() -> MbufBurst {
        MbufBurst {
            len: 0,
            slots: [const { None }; BURST_MAX],
        }
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub fn is_full(&self) -> bool {
        self.len == BURST_MAX
    }

    /// Free slots left.
    pub fn room(&self) -> usize {
        BURST_MAX - self.len
    }

    /// Adds an mbuf at the end; gives it back if the burst is full.
    pub fn push(&mut self, m: Mbuf) -> Result<(), Mbuf> {
        if self.is_full() {
            return Err(m);
        }
        self.slots[self.len] = Some(m);
        self.len += 1;
        Ok(())
    }

    /// Removes the last mbuf.
    pub fn pop(&mut self) -> Option<Mbuf> {
        if self.len == 0 {
            return None;
        }
        self.len -= 1;
        self.slots[self.len].take()
    }

    pub fn get(&self, i: usize) -> Option<&Mbuf> {
        self.slots[..self.len].get(i).and_then(Option::as_ref)
    }

    pub fn get_mut(&mut self, i: usize) -> Option<&mut Mbuf> {
        self.slots[..self.len].get_mut(i).and_then(Option::as_mut)
    }

    pub fn iter(&self) -> impl Iterator<Item = &Mbuf> {
        self.slots[..self.len].iter().flatten()
    }

    pub fn iter_mut(&mut self) -> impl Iterator<Item = &mut Mbuf> {
        self.slots[..self.len].iter_mut().flatten()
    }

    /// Takes every mbuf out, front to back, leaving the burst empty (mbufs the iterator did not
    /// yield are freed when it drops).
    pub fn drain(&mut self) -> Drain<'_> {
        let len = std::mem::take(&mut self.len);
        Drain {
            slots: self.slots[..len].iter_mut(),
        }
    }

    /// Frees every mbuf in one call to DPDK.
    pub fn free_all(&mut self) {
        if self.len == 0 {
            return;
        }
        // SAFETY: slots[..len] are owned non-null mbufs (layout of `struct rte_mbuf *`); DPDK
        // frees each; afterwards the slots are overwritten with None without running Drop.
        unsafe {
            sys::rte_pktmbuf_free_bulk(self.raw_slots(), self.len as u32);
        }
        for slot in &mut self.slots[..self.len] {
            // Ownership went to DPDK above: forget, don't drop.
            if let Some(m) = slot.take() {
                m.into_raw();
            }
        }
        self.len = 0;
    }

    /// Pointer to slot 0 as DPDK's `struct rte_mbuf **`.
    pub(crate) fn raw_slots(&mut self) -> *mut *mut sys::rte_mbuf {
        self.slots.as_mut_ptr().cast()
    }

    /// Records that DPDK stored `n` new mbufs in the free slots starting at `len`.
    ///
    /// # Safety
    /// DPDK must have written `n` valid, owned mbuf pointers to `slots[len..len + n]`.
    pub(crate) unsafe fn filled(&mut self, n: usize) {
        debug_assert!(self.len + n <= BURST_MAX);
        self.len += n;
    }

    /// Pointer to the first free slot, for DPDK to fill.
    pub(crate) fn raw_free_slots(&mut self) -> *mut *mut sys::rte_mbuf {
        // Slots past len are None (null), so DPDK may overwrite them freely.
        self.slots[self.len..].as_mut_ptr().cast()
    }

    /// Records that DPDK took ownership of the first `n` mbufs; the rest move to the front.
    ///
    /// # Safety
    /// DPDK must have taken ownership of the mbufs in `slots[..n]` (they must not be freed here).
    pub(crate) unsafe fn consumed_front(&mut self, n: usize) {
        let n = n.min(self.len);
        for slot in &mut self.slots[..n] {
            if let Some(m) = slot.take() {
                m.into_raw();
            }
        }
        self.slots[..self.len].rotate_left(n);
        self.len -= n;
    }
}

/// Iterator returned by [`MbufBurst::drain`].
pub struct Drain<'a> {
    slots: std::slice::IterMut<'a, Option<Mbuf>>,
}

impl Iterator for Drain<'_> {
    type Item = Mbuf;
    fn next(&mut self) -> Option<Mbuf> {
        self.slots.next().and_then(Option::take)
    }
}

impl Drop for Drain<'_> {
    fn drop(&mut self) {
        // Keep the burst's invariant (slots past len are None): free what was not taken.
        for slot in &mut self.slots {
            drop(slot.take());
        }
    }
}

impl std::fmt::Debug for MbufBurst {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MbufBurst").field("len", &self.len).finish()
    }
}

// The layout promise the raw-pointer casts above rely on.
const _: () =
    assert!(std::mem::size_of::<Option<Mbuf>>() == std::mem::size_of::<*mut sys::rte_mbuf>());

impl Drop for MbufBurst {
    fn drop(&mut self) {
        self.free_all();
    }
}
