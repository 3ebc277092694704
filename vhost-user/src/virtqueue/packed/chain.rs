//! One chain of the packed ring, walked from the queue's avail position: every descriptor
//! available under the wrap counter it is read with, checked (direction, bounds, length of the
//! chain, buffer id) before its buffer is listed in [`Segments`]; an indirect descriptor's table
//! is walked whole.

use super::super::chain::{ChainFault, Segments};
use super::super::{Broken, DESC_F_INDIRECT, DESC_F_NEXT, DESC_F_WRITE, MAX_QUEUE_SIZE};
use super::{desc, PackedQueue, Pos, DESC_F_AVAIL, DESC_F_USED};

/// A walked chain: the buffer id to return, the ring slots it took, and whether it had more
/// buffers than the fast path follows (its list is then incomplete: the caller drops it).
#[derive(Debug, Clone, Copy)]
pub(super) struct Chain {
    pub(super) id: u16,
    pub(super) slots: u16,
    pub(super) too_many: bool,
}

/// Whether a descriptor with `flags` is available to a device reading it with wrap counter
/// `wrap`: AVAIL equal to it, USED not.
#[inline(always)]
fn is_avail(flags: u16, wrap: bool) -> bool {
    (flags & DESC_F_AVAIL != 0) == wrap && (flags & DESC_F_USED != 0) != wrap
}

impl PackedQueue {
    /// Whether the descriptor at the avail position is available: the burst's stop test. The
    /// acquire load orders the reads of the chain after it (the driver makes a chain's first
    /// descriptor available last).
    #[inline(always)]
    pub(super) fn head_ready(&self) -> Result<bool, Broken> {
        if self.taken() == self.size {
            // A whole ring taken in this burst: the rest waits for the used descriptors.
            return Ok(false);
        }
        let flags = self
            .ring
            .load_u16_acquire(desc::at(self.avail.idx) + desc::FLAGS)
            .ok_or(Broken::RingAccess)?;
        Ok(is_avail(flags, self.avail.wrap))
    }

    /// Walks the chain at the avail position (whose head [`PackedQueue::head_ready`] found
    /// available) into `segs`. Does not move the avail position.
    pub(super) fn walk(&self, device_writes: bool, segs: &mut Segments) -> Result<Chain, Broken> {
        let mut at = self.avail;
        let mut slots = 0u16;
        let mut too_many = false;
        let limit = self.size.saturating_sub(self.taken());
        loop {
            let off = desc::at(at.idx);
            let flags = self
                .ring
                .load_u16(off + desc::FLAGS)
                .ok_or(Broken::RingAccess)?;
            if slots > 0 && !is_avail(flags, at.wrap) {
                // The driver makes every descriptor of a chain available before its head: one
                // that is not, under the wrap counter its slot is read with, is a driver bug.
                return Err(Broken::ChainDescNotAvailable { slot: at.idx });
            }
            slots += 1;
            let addr = self
                .ring
                .load_u64(off + desc::ADDR)
                .ok_or(Broken::RingAccess)?;
            let len = self
                .ring
                .load_u32(off + desc::LEN)
                .ok_or(Broken::RingAccess)?;
            if flags & DESC_F_INDIRECT != 0 {
                if flags & DESC_F_NEXT != 0 {
                    return Err(Broken::IndirectWithNext);
                }
                too_many |= self.walk_indirect(addr, len, device_writes, segs)?;
            } else {
                match segs.push_checked(&self.mem, addr, len, flags, device_writes) {
                    Ok(()) => {}
                    Err(ChainFault::TooManySegments) => too_many = true,
                    Err(ChainFault::Broken(b)) => return Err(b),
                }
            }
            if flags & DESC_F_NEXT == 0 {
                // The buffer id is the last descriptor's.
                let id = self
                    .ring
                    .load_u16(off + desc::ID)
                    .ok_or(Broken::RingAccess)?;
                if id >= self.size {
                    return Err(Broken::BufferIdOutOfRange { id });
                }
                return Ok(Chain {
                    id,
                    slots,
                    too_many,
                });
            }
            if slots == limit {
                // Longer than the ring (a driver that keeps flipping flags behind us could
                // make it look endless), or running into slots this burst already took.
                return Err(Broken::ChainTooLong {
                    size: u32::from(self.size),
                });
            }
            at = at.advance(1, self.size);
        }
    }

    /// Lists every entry of an indirect table (packed layout, sequential: only their WRITE flag
    /// counts). Returns whether it had more buffers than the fast path follows.
    fn walk_indirect(
        &self,
        addr: u64,
        len: u32,
        device_writes: bool,
        segs: &mut Segments,
    ) -> Result<bool, Broken> {
        if !self.indirect {
            return Err(Broken::IndirectNotNegotiated);
        }
        const ENTRY: u32 = desc::SIZE as u32;
        let count = len / ENTRY;
        if len == 0 || !len.is_multiple_of(ENTRY) || count > u32::from(MAX_QUEUE_SIZE) {
            return Err(Broken::IndirectTableLen { len });
        }
        let bad = Broken::BadAddress {
            addr,
            len: u64::from(len),
        };
        if self.mem.check_range(addr, u64::from(len)).is_err() {
            return Err(bad);
        }
        let mut too_many = false;
        for i in 0..count {
            let mut raw = [0u8; desc::SIZE];
            self.mem
                .read(addr + u64::from(ENTRY * i), &mut raw)
                .map_err(|_| bad)?;
            let b_addr = u64::from_le_bytes([
                raw[0], raw[1], raw[2], raw[3], raw[4], raw[5], raw[6], raw[7],
            ]);
            let b_len = u32::from_le_bytes([raw[8], raw[9], raw[10], raw[11]]);
            let flags = u16::from_le_bytes([raw[14], raw[15]]) & DESC_F_WRITE;
            match segs.push_checked(&self.mem, b_addr, b_len, flags, device_writes) {
                Ok(()) => {}
                Err(ChainFault::TooManySegments) => too_many = true,
                Err(ChainFault::Broken(b)) => return Err(b),
            }
        }
        Ok(too_many)
    }

    /// Cache hints for the next `count` available descriptors from the avail position: the
    /// buffer each names, at most `want` bytes (write intent for RX), so their misses overlap
    /// instead of being taken one chain at a time. Hints only: nothing read here is trusted or
    /// kept (the walk that follows checks every descriptor), and a hint at an unmapped address
    /// is ignored.
    pub(super) fn prefetch_ahead(&self, count: u16, device_writes: bool, want: u64) {
        let mut at = self.avail;
        for _ in 0..count.min(self.size) {
            let off = desc::at(at.idx);
            let Some(flags) = self.ring.load_u16(off + desc::FLAGS) else {
                return;
            };
            if !is_avail(flags, at.wrap) {
                return;
            }
            if let (Some(addr), Some(len)) = (
                self.ring.load_u64(off + desc::ADDR),
                self.ring.load_u32(off + desc::LEN),
            ) {
                let len = u64::from(len).min(want);
                if device_writes {
                    self.mem.prefetch_write(addr, len);
                } else {
                    self.mem.prefetch(addr, len);
                }
            }
            at = at.advance(1, self.size);
        }
    }

    /// Ring slots taken in this burst and not yet returned (the avail position's lead over the
    /// used one).
    #[inline(always)]
    fn taken(&self) -> u16 {
        let (avail, used) = (u32::from(self.avail.idx), u32::from(self.used.idx));
        let lead = if self.avail.wrap == self.used.wrap {
            avail.saturating_sub(used)
        } else {
            u32::from(self.size) + avail - used.min(u32::from(self.size) + avail)
        };
        // The avail position is never more than a ring ahead: bounded all the same.
        lead.min(u32::from(self.size)) as u16
    }

    /// Moves the avail position past a walked chain.
    #[inline(always)]
    pub(super) fn consume(&mut self, slots: u16) {
        self.avail = self.avail.advance(slots, self.size);
    }

    /// Queues the used descriptor of a chain for the burst's end.
    #[inline(always)]
    pub(super) fn push_used(&mut self, c: &Chain, len: u32) {
        self.shadow.push(super::UsedElem {
            id: c.id,
            len,
            slots: c.slots,
        });
    }

    /// The avail position and pending used descriptors, to roll a partial frame back.
    pub(super) fn checkpoint(&self) -> (Pos, usize) {
        (self.avail, self.shadow.len())
    }

    pub(super) fn rollback(&mut self, cp: (Pos, usize)) {
        self.avail = cp.0;
        self.shadow.truncate(cp.1);
    }
}
