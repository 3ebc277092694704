//! The guest's TX side: chains taken from the avail ring, their virtio-net header checked and
//! stripped, their frames copied into packet buffers.

use super::chain::{ChainFault, Segments};
use super::{PacketBuffer, SplitQueue, MAX_APPEND, PREFETCH_AHEAD};
use crate::memory::PREFETCH_MAX;
use crate::net_hdr::NetHdr;

impl SplitQueue {
    /// Guest TX → `bufs`: fills up to `bufs.len()` buffers with frames (virtio-net header
    /// stripped) and returns how many. Malformed or oversized packets are counted and skipped.
    pub fn dequeue_burst<B: PacketBuffer>(&mut self, bufs: &mut [B]) -> usize {
        let Some(avail_idx) = self.avail_window() else {
            return 0;
        };
        if avail_idx == self.last_avail || bufs.is_empty() {
            return 0;
        }
        let mut filled = 0;
        let mut segs = self.take_scratch();
        // Chains left in the current round of hints.
        let mut hinted = 0u16;
        while self.last_avail != avail_idx && filled < bufs.len() {
            if hinted == 0 {
                // Chains not taken (malformed, dropped) also consume an entry, so a round covers
                // at most the entries left and the buffers left.
                let ready = avail_idx.wrapping_sub(self.last_avail);
                let room = u16::try_from(bufs.len() - filled).unwrap_or(u16::MAX);
                hinted = ready.min(room).min(PREFETCH_AHEAD);
                self.prefetch_chains(self.last_avail, hinted, false, |_| PREFETCH_MAX);
            }
            hinted -= 1;
            let head = match self.avail_head(self.last_avail) {
                Ok(h) => h,
                Err(b) => {
                    self.mark_broken(b);
                    break;
                }
            };
            segs.clear();
            match self.walk(head, false, &mut segs) {
                Ok(()) => {
                    if self.copy_chain_into(&segs, &mut bufs[filled]) {
                        filled += 1;
                    }
                }
                Err(ChainFault::TooManySegments) => self.stats.dropped_fragmented += 1,
                Err(ChainFault::Broken(b)) => {
                    self.mark_broken(b);
                    break;
                }
            }
            self.push_used(head, 0);
            self.last_avail = self.last_avail.wrapping_add(1);
        }
        self.put_scratch(segs);
        self.flush_used();
        filled
    }

    fn copy_chain_into<B: PacketBuffer>(&mut self, segs: &Segments, buf: &mut B) -> bool {
        let hdr = self.hdr_len as u64;
        if segs.total < hdr {
            self.stats.dropped_malformed += 1;
            return false;
        }
        buf.reset();
        let net_hdr = if self.tx_offloads {
            match self.read_tx_hdr(segs) {
                Some(h) => h,
                None => {
                    self.stats.dropped_bad_offload += 1;
                    return false;
                }
            }
        } else {
            NetHdr::NONE
        };
        let mut pos = 0u64; // position in the chain
        for &(addr, len) in segs.as_slice() {
            let (s0, s1) = (pos, pos + u64::from(len));
            pos = s1;
            let mut a = s0.max(hdr);
            while a < s1 {
                let n = ((s1 - a) as usize).min(MAX_APPEND);
                let Some(dst) = buf.append(n) else {
                    self.stats.dropped_too_big += 1;
                    return false;
                };
                if dst.len() != n || self.mem.read(addr + (a - s0), dst).is_err() {
                    // Checked during the walk; only a buffer breaking its contract gets here.
                    self.stats.dropped_malformed += 1;
                    return false;
                }
                a += n as u64;
            }
        }
        buf.set_net_hdr(net_hdr);
        self.stats.packets += 1;
        self.stats.bytes += segs.total - hdr;
        true
    }

    /// The offload fields of the virtio-net header at the start of a TX chain, checked; `None`
    /// when they do not add up.
    pub(super) fn read_tx_hdr(&self, segs: &Segments) -> Option<NetHdr> {
        let mut b = [0u8; 10];
        let mut got = 0usize;
        for &(addr, len) in segs.as_slice() {
            let n = (len as usize).min(b.len() - got);
            self.mem.read(addr, &mut b[got..got + n]).ok()?;
            got += n;
            if got == b.len() {
                break;
            }
        }
        let frame_len = (segs.total as usize).checked_sub(self.hdr_len)?;
        NetHdr::from_bytes(&b)
            .parse_tx(self.features, frame_len)
            .ok()
    }
}
