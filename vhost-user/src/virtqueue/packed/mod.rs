//! Packed virtqueue fast path (virtio 1.2 "Packed Virtqueues", `VIRTIO_F_RING_PACKED`): burst
//! dequeue (guest TX) and burst enqueue (guest RX, mergeable buffers), with the guarantees of
//! the split ring.
//!
//! One ring of descriptors carries both directions. The driver makes a descriptor available by
//! writing its AVAIL flag equal to its wrap counter and USED to the inverse; the device returns
//! a buffer by writing one used descriptor (the buffer id of the chain, the bytes written, AVAIL
//! and USED both equal to its own wrap counter) in the slot where the chain began, then skips
//! the chain's slots. This device completes every chain it takes within the burst that takes
//! it, so its used position always equals its avail position between bursts: one 15-bit index
//! and a wrap bit say where the queue stands (what `GET_VRING_BASE` reports).
//!
//! Nothing the guest writes is trusted: every descriptor of a chain must be available under the
//! wrap counter the chain is read with, a chain may not be longer than the ring, its buffer id
//! must name a slot of the ring, addresses and directions are checked as on the split ring, and
//! an indirect table (only with INDIRECT_DESC) must be a positive multiple of 16 bytes inside
//! guest memory. A violation marks the queue [`Broken`] with one log line; it then does nothing
//! until the session rebuilds it. No path panics, allocates or touches memory outside the
//! mapped regions. Buffers and used descriptors are written through the same guest-memory
//! functions as the split ring's ([`GuestMemory::write`], [`RingArea`] stores).
//!
//! Notifications: the device event suppression area says `RING_EVENT_FLAGS_DISABLE` (this
//! backend polls); the driver's area is read after each published burst: ENABLE interrupts,
//! DISABLE does not, DESC (with EVENT_IDX) interrupts when the used position crosses the
//! descriptor offset and wrap counter the driver gave.

use std::os::fd::OwnedFd;
use std::sync::atomic::{fence, Ordering};
use std::sync::Arc;

use super::chain::Segments;
use super::layout::packed::{desc, event};
use super::{feature, Broken, QueueSetup, QueueStats, MAX_QUEUE_SIZE};
use crate::memory::{GuestMemory, RingArea};
use crate::net_hdr;
use crate::MemoryError;

mod chain;
mod rx;
mod tx;

#[cfg(test)]
mod tests;

/// Descriptor flag: the driver's half of the hand-over (its wrap counter when available).
pub const DESC_F_AVAIL: u16 = 1 << 7;
/// Descriptor flag: the device's half of the hand-over (its wrap counter when used).
pub const DESC_F_USED: u16 = 1 << 15;
/// Event suppression: notify on every buffer.
pub const RING_EVENT_FLAGS_ENABLE: u16 = 0;
/// Event suppression: do not notify.
pub const RING_EVENT_FLAGS_DISABLE: u16 = 1;
/// Event suppression: notify when the given descriptor position is reached (EVENT_IDX).
pub const RING_EVENT_FLAGS_DESC: u16 = 2;
/// Bit 15 of a packed ring position (`SET_VRING_BASE`, event offsets): the wrap counter.
pub const WRAP_BIT: u16 = 1 << 15;

/// A slot of the ring and the wrap counter it is read (or written) with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Pos {
    idx: u16,
    wrap: bool,
}

impl Pos {
    /// From the vhost-user encoding: bits 0-14 the slot, bit 15 the wrap counter.
    fn from_base(base: u16) -> Self {
        Self {
            idx: base & !WRAP_BIT,
            wrap: base & WRAP_BIT != 0,
        }
    }

    fn to_base(self) -> u16 {
        self.idx | if self.wrap { WRAP_BIT } else { 0 }
    }

    /// `n` slots further on in a ring of `size` (`n <= size`), toggling the wrap counter when
    /// the ring's end is passed.
    #[inline(always)]
    fn advance(self, n: u16, size: u16) -> Self {
        let next = u32::from(self.idx) + u32::from(n);
        if next >= u32::from(size) {
            Self {
                idx: (next - u32::from(size)) as u16,
                wrap: !self.wrap,
            }
        } else {
            Self {
                idx: next as u16,
                wrap: self.wrap,
            }
        }
    }
}

/// A used descriptor waiting for the burst's end: the chain's buffer id, the bytes written into
/// it, and how many ring slots the chain took.
#[derive(Debug, Clone, Copy)]
struct UsedElem {
    id: u16,
    len: u32,
    slots: u16,
}

/// One packed virtqueue, owned by the thread that polls it.
#[derive(Debug)]
pub struct PackedQueue {
    index: u16,
    size: u16,
    mem: Arc<GuestMemory>,
    ring: RingArea,
    /// The driver's event suppression structure (when to interrupt it).
    driver_event: RingArea,
    /// Next slot to read and the wrap counter it must be available under.
    avail: Pos,
    /// Where the next used descriptor goes.
    used: Pos,
    hdr_len: usize,
    mrg_rxbuf: bool,
    event_idx: bool,
    indirect: bool,
    features: u64,
    tx_offloads: bool,
    call: Option<Arc<OwnedFd>>,
    shadow: Vec<UsedElem>,
    scratch: Option<Box<Segments>>,
    broken: Option<Broken>,
    stats: QueueStats,
}

impl PackedQueue {
    /// Builds a queue over validated ring addresses: `desc_gpa` is the descriptor ring,
    /// `avail_gpa` the driver event suppression area and `used_gpa` the device's (where
    /// vhost-user's `SET_VRING_ADDR` puts them); `base` is bits 0-14 the next slot and bit 15
    /// its wrap counter. Fails if a ring is not inside one mapped region, is misaligned, or the
    /// base lies outside the ring.
    pub fn new(s: QueueSetup) -> Result<Self, MemoryError> {
        let size = s.size;
        let start = Pos::from_base(s.base);
        if size == 0 || size > MAX_QUEUE_SIZE || start.idx >= size {
            return Err(MemoryError::OutOfRange {
                addr: s.desc_gpa,
                len: u64::from(size),
            });
        }
        let ring = (s.mem).ring_area(s.desc_gpa, desc::ring_len(size), desc::ALIGN)?;
        let driver_event = (s.mem).ring_area(s.avail_gpa, event::LEN, event::ALIGN)?;
        let device_event = (s.mem).ring_area(s.used_gpa, event::LEN, event::ALIGN)?;
        // We poll: ask the guest not to kick. The device area is read by the driver only; the
        // queue keeps no handle on it.
        device_event
            .store_u16(event::FLAGS, RING_EVENT_FLAGS_DISABLE)
            .ok_or(MemoryError::OutOfRange {
                addr: s.used_gpa,
                len: event::LEN,
            })?;
        let hdr_len = if s.features & (feature::MRG_RXBUF | feature::VERSION_1) != 0 {
            12
        } else {
            10
        };
        Ok(Self {
            index: s.index,
            size,
            mem: s.mem,
            ring,
            driver_event,
            avail: start,
            used: start,
            hdr_len,
            mrg_rxbuf: s.features & feature::MRG_RXBUF != 0,
            event_idx: s.features & feature::EVENT_IDX != 0,
            indirect: s.features & feature::INDIRECT_DESC != 0,
            features: s.features,
            tx_offloads: s.features
                & (net_hdr::F_CSUM
                    | net_hdr::F_HOST_TSO4
                    | net_hdr::F_HOST_TSO6
                    | net_hdr::F_HOST_USO)
                != 0,
            call: s.call,
            shadow: Vec::with_capacity(usize::from(size)),
            scratch: Some(Box::default()),
            broken: None,
            stats: QueueStats::default(),
        })
    }

    /// Vring index.
    pub fn index(&self) -> u16 {
        self.index
    }

    /// The virtio features the guest negotiated.
    pub fn features(&self) -> u64 {
        self.features
    }

    /// Queue size.
    pub fn size(&self) -> u16 {
        self.size
    }

    /// Where the queue stands, as `GET_VRING_BASE` reports it for a packed ring: bits 0-14 the
    /// next slot to read, bit 15 its wrap counter (the used position is the same).
    pub fn next_avail(&self) -> u16 {
        self.avail.to_base()
    }

    /// Whether an access to this queue's guest memory has faulted.
    pub fn memory_faulted(&self) -> bool {
        self.mem.faulted()
    }

    /// Why the queue is broken, if it is.
    pub fn broken(&self) -> Option<Broken> {
        self.broken
    }

    /// Counters.
    pub fn stats(&self) -> QueueStats {
        self.stats
    }

    /// Length of the virtio-net header on this queue.
    pub fn header_len(&self) -> usize {
        self.hdr_len
    }

    fn mark_broken(&mut self, why: Broken) {
        super::mark_broken(&mut self.broken, &self.mem, self.index, "packed vring", why);
    }

    /// Whether a burst may run: not broken, guest memory intact.
    #[inline]
    fn usable(&mut self) -> bool {
        if self.broken.is_some() {
            return false;
        }
        if self.mem.faulted() {
            let gpa = self.mem.fault().map_or(0, |f| f.gpa);
            self.mark_broken(Broken::MemoryFault { gpa });
            return false;
        }
        true
    }

    fn take_scratch(&mut self) -> Box<Segments> {
        self.scratch.take().unwrap_or_default()
    }

    fn put_scratch(&mut self, segs: Box<Segments>) {
        self.scratch = Some(segs);
    }

    /// Publishes the burst's used descriptors as one batch: every descriptor's id and length,
    /// the flags of all but the first, then (release) the first one's flags. The driver reads
    /// used descriptors in ring order, so it sees the whole burst at once or none of it: a
    /// frame spread over several mergeable buffers never shows up in part (DPDK's packed RX
    /// counts a frame whose later buffers it cannot see yet as an error). Then interrupts the
    /// guest if it asked.
    fn flush_used(&mut self) {
        let Some(&first) = self.shadow.first() else {
            return;
        };
        let old = self.used;
        let bits = |at: Pos, len: u32| {
            let mut flags = if at.wrap {
                DESC_F_AVAIL | DESC_F_USED
            } else {
                0
            };
            if len > 0 {
                flags |= super::DESC_F_WRITE;
            }
            flags
        };
        let mut ok = self.write_used(old, first.id, first.len);
        let mut at = old.advance(first.slots, self.size);
        for i in 1..self.shadow.len() {
            let e = self.shadow[i];
            ok &= self.write_used(at, e.id, e.len)
                && self
                    .ring
                    .store_u16(desc::at(at.idx) + desc::FLAGS, bits(at, e.len))
                    .is_some();
            at = at.advance(e.slots, self.size);
        }
        ok &= self
            .ring
            .store_u16_release(desc::at(old.idx) + desc::FLAGS, bits(old, first.len))
            .is_some();
        if !ok {
            self.mark_broken(Broken::RingAccess);
            return;
        }
        self.shadow.clear();
        self.used = at;
        self.kick_if_asked(old, at);
    }

    /// Writes the id and length of the used descriptor at `at` (not its flags).
    #[inline(always)]
    fn write_used(&self, at: Pos, id: u16, len: u32) -> bool {
        let off = desc::at(at.idx);
        self.ring.store_u32(off + desc::LEN, len).is_some()
            && self.ring.store_u16(off + desc::ID, id).is_some()
    }

    fn kick_if_asked(&mut self, old: Pos, new: Pos) {
        let Some(call) = &self.call else { return };
        // The used flags must be visible before we read the guest's wish.
        fence(Ordering::SeqCst);
        let flags = self.driver_event.load_u16(event::FLAGS).unwrap_or(0) & 3;
        let wanted = match flags {
            RING_EVENT_FLAGS_DISABLE => false,
            RING_EVENT_FLAGS_DESC if self.event_idx => {
                match self.driver_event.load_u16(event::OFF_WRAP) {
                    Some(off_wrap) => need_event(Pos::from_base(off_wrap), old, new, self.size),
                    None => true,
                }
            }
            // ENABLE, and DESC from a driver that did not negotiate EVENT_IDX: interrupt.
            _ => true,
        };
        if wanted {
            let _ = rustix::io::write(call.as_ref(), &1u64.to_ne_bytes());
            self.stats.kicks += 1;
        }
    }
}

/// Whether moving the used position from `old` to `new` (at most a whole ring on) crossed the
/// driver's event position `ev`: the split ring's `vring_need_event`, with the positions laid
/// on one line by their wrap counters.
fn need_event(ev: Pos, old: Pos, new: Pos, size: u16) -> bool {
    let size = i32::from(size);
    let new_l = i32::from(new.idx);
    let old_l = if old.idx < new.idx {
        i32::from(old.idx)
    } else {
        i32::from(old.idx) - size
    };
    let ev_l = if ev.wrap == new.wrap {
        i32::from(ev.idx)
    } else {
        i32::from(ev.idx) - size
    };
    ((new_l - ev_l - 1) as u16) < ((new_l - old_l) as u16)
}
