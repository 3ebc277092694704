//! One descriptor chain, walked: direct or through one indirect table, every descriptor
//! checked (direction, bounds, loops) before its buffer is listed in [`Segments`].

use super::layout::desc;
use super::{
    Broken, SplitQueue, DESC_F_INDIRECT, DESC_F_NEXT, DESC_F_WRITE, MAX_QUEUE_SIZE, MAX_SEGMENTS,
};
use crate::memory::GuestMemory;

/// A descriptor as read from a table.
#[derive(Debug, Clone, Copy)]
pub(super) struct Desc {
    addr: u64,
    len: u32,
    flags: u16,
    next: u16,
}

impl Desc {
    /// Decodes a descriptor read whole from an indirect table (fields as [`desc`] places them).
    fn from_bytes(b: &[u8; desc::SIZE]) -> Self {
        Self {
            addr: u64::from_le_bytes([b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7]]),
            len: u32::from_le_bytes([b[8], b[9], b[10], b[11]]),
            flags: u16::from_le_bytes([b[12], b[13]]),
            next: u16::from_le_bytes([b[14], b[15]]),
        }
    }
}

/// The data buffers of one chain (addresses validated against guest memory).
#[derive(Debug, Clone, Copy)]
pub struct Segments {
    segs: [(u64, u32); MAX_SEGMENTS],
    n: usize,
    pub(super) total: u64,
}

impl Default for Segments {
    fn default() -> Self {
        Self {
            segs: [(0, 0); MAX_SEGMENTS],
            n: 0,
            total: 0,
        }
    }
}

impl Segments {
    /// Empties the list for the next chain (no re-zeroing: `n` bounds what is read).
    pub(super) fn clear(&mut self) {
        self.n = 0;
        self.total = 0;
    }

    /// The (guest address, length) pairs.
    pub fn as_slice(&self) -> &[(u64, u32)] {
        &self.segs[..self.n]
    }

    /// Total bytes.
    pub fn total(&self) -> u64 {
        self.total
    }

    /// Checks one descriptor (direction, bounds in guest memory) and lists its buffer: a
    /// zero-length buffer is checked but not listed; a full list is `ChainFault::TooManySegments`.
    /// Both ring layouts list their chains through here.
    #[inline(always)]
    pub(super) fn push_checked(
        &mut self,
        mem: &GuestMemory,
        addr: u64,
        len: u32,
        flags: u16,
        device_writes: bool,
    ) -> Result<(), ChainFault> {
        let writable = flags & DESC_F_WRITE != 0;
        if writable != device_writes {
            return Err(if device_writes {
                Broken::ReadOnlyRxDescriptor
            } else {
                Broken::WritableTxDescriptor
            }
            .into());
        }
        let len64 = u64::from(len);
        if mem.check_range(addr, len64).is_err() {
            return Err(Broken::BadAddress { addr, len: len64 }.into());
        }
        if len == 0 {
            return Ok(());
        }
        if self.n == MAX_SEGMENTS {
            return Err(ChainFault::TooManySegments);
        }
        self.segs[self.n] = (addr, len);
        self.n += 1;
        self.total += len64;
        Ok(())
    }
}

pub(super) enum ChainFault {
    Broken(Broken),
    TooManySegments,
}

impl From<Broken> for ChainFault {
    fn from(b: Broken) -> Self {
        ChainFault::Broken(b)
    }
}

impl SplitQueue {
    pub(super) fn read_direct(&self, i: u16) -> Result<Desc, Broken> {
        let off = desc::at(i);
        let addr = self
            .desc
            .load_u64(off + desc::ADDR)
            .ok_or(Broken::RingAccess)?;
        let len = self
            .desc
            .load_u32(off + desc::LEN)
            .ok_or(Broken::RingAccess)?;
        let flags = self
            .desc
            .load_u16(off + desc::FLAGS)
            .ok_or(Broken::RingAccess)?;
        let next = self
            .desc
            .load_u16(off + desc::NEXT)
            .ok_or(Broken::RingAccess)?;
        Ok(Desc {
            addr,
            len,
            flags,
            next,
        })
    }

    #[inline(always)]
    fn push_segment(
        &self,
        d: &Desc,
        device_writes: bool,
        segs: &mut Segments,
    ) -> Result<(), ChainFault> {
        segs.push_checked(&self.mem, d.addr, d.len, d.flags, device_writes)
    }

    /// Follows the chain at `head` (direct or through one indirect table) into `segs`.
    pub(super) fn walk(
        &self,
        head: u16,
        device_writes: bool,
        segs: &mut Segments,
    ) -> Result<(), ChainFault> {
        let size = u32::from(self.size);
        let mut d = self.read_direct(head)?;
        let mut visited = 1u32;
        loop {
            if d.flags & DESC_F_INDIRECT != 0 {
                return self.walk_indirect(&d, device_writes, segs);
            }
            self.push_segment(&d, device_writes, segs)?;
            if d.flags & DESC_F_NEXT == 0 {
                return Ok(());
            }
            if d.next >= self.size {
                return Err(Broken::NextOutOfRange { next: d.next, size }.into());
            }
            visited += 1;
            if visited > size {
                return Err(Broken::ChainTooLong { size }.into());
            }
            d = self.read_direct(d.next)?;
        }
    }

    fn walk_indirect(
        &self,
        table: &Desc,
        device_writes: bool,
        segs: &mut Segments,
    ) -> Result<(), ChainFault> {
        if !self.indirect {
            return Err(Broken::IndirectNotNegotiated.into());
        }
        if table.flags & DESC_F_NEXT != 0 {
            return Err(Broken::IndirectWithNext.into());
        }
        const ENTRY: u32 = desc::SIZE as u32;
        let count = table.len / ENTRY;
        if table.len == 0 || !table.len.is_multiple_of(ENTRY) || count > u32::from(MAX_QUEUE_SIZE) {
            return Err(Broken::IndirectTableLen { len: table.len }.into());
        }
        if self
            .mem
            .check_range(table.addr, u64::from(table.len))
            .is_err()
        {
            return Err(Broken::BadAddress {
                addr: table.addr,
                len: u64::from(table.len),
            }
            .into());
        }
        let mut i = 0u32;
        let mut visited = 0u32;
        loop {
            visited += 1;
            if visited > count {
                return Err(Broken::ChainTooLong { size: count }.into());
            }
            let mut raw = [0u8; desc::SIZE];
            self.mem
                .read(table.addr + u64::from(ENTRY * i), &mut raw)
                .map_err(|_| Broken::BadAddress {
                    addr: table.addr,
                    len: u64::from(table.len),
                })?;
            let d = Desc::from_bytes(&raw);
            if d.flags & DESC_F_INDIRECT != 0 {
                return Err(Broken::NestedIndirect.into());
            }
            self.push_segment(&d, device_writes, segs)?;
            if d.flags & DESC_F_NEXT == 0 {
                return Ok(());
            }
            if u32::from(d.next) >= count {
                return Err(Broken::NextOutOfRange {
                    next: d.next,
                    size: count,
                }
                .into());
            }
            i = u32::from(d.next);
        }
    }
}
