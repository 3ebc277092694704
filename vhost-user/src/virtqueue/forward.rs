//! Guest to guest: frames taken from one device's TX ring and written straight into another's
//! RX ring, one copy, no packet buffer in between.

use super::chain::{ChainFault, Segments};
use super::rx::{FrameSource, Placed};
use super::{SplitQueue, PREFETCH_AHEAD};
use crate::memory::{copy_guest_to_guest, GuestMemory, PREFETCH_MAX};
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
    fn len(&self) -> usize {
        (self.segs.total - self.skip) as usize
    }
    fn net_hdr(&self) -> NetHdr {
        self.hdr
    }
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
    let mut moved = 0;
    let (mut segs, mut rx_segs) = (src.take_scratch(), dst.take_scratch());
    let mut hinted = 0u16;
    while src.last_avail != src_avail && moved < max {
        if hinted == 0 {
            let ready = src_avail.wrapping_sub(src.last_avail);
            let room = u16::try_from(max - moved).unwrap_or(u16::MAX);
            hinted = ready.min(room).min(PREFETCH_AHEAD);
            src.prefetch_chains(src.last_avail, hinted, false, |_| PREFETCH_MAX);
            // The frame lengths are known only once the source chains are walked: hint the
            // header and the first line of each frame, the whole of a small packet.
            let dst_ready = dst_avail.wrapping_sub(dst.last_avail).min(hinted);
            dst.prefetch_chains(dst.last_avail, dst_ready, true, |_| 128);
        }
        hinted -= 1;
        let head = match src.avail_head(src.last_avail) {
            Ok(h) => h,
            Err(b) => {
                src.mark_broken(b);
                break;
            }
        };
        segs.clear();
        match src.walk(head, false, &mut segs) {
            Ok(()) if segs.total < src.hdr_len as u64 => src.stats.dropped_malformed += 1,
            Ok(()) => {
                let hdr = if src.tx_offloads {
                    src.read_tx_hdr(&segs)
                } else {
                    Some(NetHdr::NONE)
                };
                // A header the source may not send, or the destination may not take, drops the
                // packet: this path copies bytes, it completes nothing.
                let Some(hdr) = hdr.filter(|h| h.is_none() || h.fits_rx(dst.features)) else {
                    src.stats.dropped_bad_offload += 1;
                    src.push_used(head, 0);
                    src.last_avail = src.last_avail.wrapping_add(1);
                    moved += 1;
                    continue;
                };
                let frame = GuestFrame {
                    mem: &src.mem,
                    segs: &segs,
                    skip: src.hdr_len as u64,
                    hdr,
                };
                match dst.place(&frame, dst_avail, &mut rx_segs) {
                    Placed::Delivered => {
                        src.stats.packets += 1;
                        src.stats.bytes += frame.len() as u64;
                    }
                    Placed::Dropped => {}
                    Placed::NoRoom | Placed::Broken => break,
                }
            }
            Err(ChainFault::TooManySegments) => src.stats.dropped_fragmented += 1,
            Err(ChainFault::Broken(b)) => {
                src.mark_broken(b);
                break;
            }
        }
        src.push_used(head, 0);
        src.last_avail = src.last_avail.wrapping_add(1);
        moved += 1;
    }
    src.put_scratch(segs);
    dst.put_scratch(rx_segs);
    src.flush_used();
    dst.flush_used();
    moved
}
