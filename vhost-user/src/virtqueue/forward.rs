//! Guest to guest: frames taken from one device's TX ring and written straight into another's
//! RX ring, one copy, no packet buffer in between.

use super::chain::Segments;
use super::rx::{FrameSource, Placed};
use super::tx::{Taken, TxSink};
use super::SplitQueue;
use crate::memory::{copy_guest_to_guest, GuestMemory};
use crate::net_hdr::NetHdr;
use crate::MemoryError;

/// A frame still in another guest's TX buffers (after its virtio-net header).
struct GuestFrame<'a> {
    mem: &'a GuestMemory,
    segs: &'a Segments,
    skip: u64,
    hdr: NetHdr,
}

impl FrameSource for GuestFrame<'_> {
    #[inline]
    fn len(&self) -> usize {
        (self.segs.total - self.skip) as usize
    }
    #[inline]
    fn net_hdr(&self) -> NetHdr {
        self.hdr
    }
    #[inline]
    fn copy_out(
        &self,
        off: usize,
        dst: &GuestMemory,
        gpa: u64,
        len: usize,
    ) -> Result<(), MemoryError> {
        // Walk the source segments, copying the overlap of [skip+off, skip+off+len) with each.
        let (start, end) = (self.skip + off as u64, self.skip + (off + len) as u64);
        let mut pos = 0u64;
        for &(addr, slen) in self.segs.as_slice() {
            let (s0, s1) = (pos, pos + u64::from(slen));
            pos = s1;
            let (a, b) = (start.max(s0), end.min(s1));
            if a < b {
                copy_guest_to_guest(self.mem, addr + (a - s0), dst, gpa + (a - start), b - a)?;
            }
        }
        Ok(())
    }
}

/// Moves up to `max` packets from `src`'s TX ring straight into `dst`'s RX ring: one copy,
/// guest to guest. Returns how many packets left `src` (delivered or dropped and counted).
pub fn forward_burst(src: &mut SplitQueue, dst: &mut SplitQueue, max: usize) -> usize {
    let Some(src_avail) = src.avail_window() else {
        return 0;
    };
    let Some(dst_avail) = dst.avail_window() else {
        return 0;
    };
    if src_avail == src.last_avail || max == 0 {
        return 0;
    }
    let segs = dst.take_scratch();
    let mut into = IntoRing {
        dst,
        avail_idx: dst_avail,
        segs,
    };
    let moved = src.take_tx_chains(src_avail, max, &mut into);
    let IntoRing { dst, segs, .. } = into;
    dst.put_scratch(segs);
    dst.flush_used();
    moved
}

/// Forwarding's sink: the destination's RX ring, up to its `avail->idx` as loaded for the burst.
struct IntoRing<'a> {
    dst: &'a mut SplitQueue,
    avail_idx: u16,
    /// The destination's chain scratch list, for the burst.
    segs: Box<Segments>,
}

impl TxSink for IntoRing<'_> {
    // The caller's `max` bounds the chains taken off the source ring, whatever becomes of them.
    const DROPS_SPEND: bool = true;

    #[inline(always)]
    fn hint(&self, count: u16) {
        // The frame lengths are known only once the source chains are walked: hint the
        // header and the first line of each frame, the whole of a small packet.
        let ready = self.avail_idx.wrapping_sub(self.dst.last_avail).min(count);
        self.dst
            .prefetch_chains(self.dst.last_avail, ready, true, |_| 128);
    }

    #[inline(always)]
    fn take(&mut self, src: &mut SplitQueue, segs: &Segments, hdr: NetHdr, _spent: usize) -> Taken {
        // A header the destination may not take drops the packet: this path copies bytes, it
        // completes nothing.
        if !(hdr.is_none() || hdr.fits_rx(self.dst.features)) {
            src.stats.dropped_bad_offload += 1;
            return Taken::Dropped;
        }
        let frame = GuestFrame {
            mem: &src.mem,
            segs,
            skip: src.hdr_len as u64,
            hdr,
        };
        match self.dst.place(&frame, self.avail_idx, &mut self.segs) {
            Placed::Delivered => {
                let len = frame.len() as u64;
                src.stats.packets += 1;
                src.stats.bytes += len;
                Taken::Delivered
            }
            Placed::Dropped => Taken::Dropped,
            Placed::NoRoom | Placed::Broken => Taken::Stop,
        }
    }
}
