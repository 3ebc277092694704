//! The guest's TX side on a packed ring: chains taken from the ring, their virtio-net header
//! checked and stripped, their frames copied into packet buffers.

use super::super::tx::{copy_chain_into, tx_header};
use super::super::{PacketBuffer, PREFETCH_AHEAD};
use super::PackedQueue;
use crate::memory::PREFETCH_MAX;

impl PackedQueue {
    /// Guest TX → `bufs`: fills up to `bufs.len()` buffers with frames (virtio-net header
    /// stripped) and returns how many. Malformed or oversized packets are counted, skipped and
    /// returned to the guest; a chain that breaks the queue stops the burst there.
    pub fn dequeue_burst<B: PacketBuffer>(&mut self, bufs: &mut [B]) -> usize {
        if bufs.is_empty() || !self.usable() {
            return 0;
        }
        let mut filled = 0;
        let mut segs = self.take_scratch();
        let offloads = self.tx_offloads.then_some(self.features);
        // Chains left in the current round of cache hints.
        let mut hinted = 0u16;
        while filled < bufs.len() {
            if hinted == 0 {
                let room = u16::try_from(bufs.len() - filled).unwrap_or(u16::MAX);
                hinted = room.min(PREFETCH_AHEAD);
                self.prefetch_ahead(hinted, false, PREFETCH_MAX);
            }
            hinted -= 1;
            match self.head_ready() {
                Ok(true) => {}
                Ok(false) => break,
                Err(b) => {
                    self.mark_broken(b);
                    break;
                }
            }
            segs.clear();
            let chain = match self.walk(false, &mut segs) {
                Ok(c) => c,
                Err(b) => {
                    self.mark_broken(b);
                    break;
                }
            };
            if chain.too_many {
                self.stats.dropped_fragmented += 1;
            } else if let (Some(hdr), Some(buf)) = (
                tx_header(&self.mem, self.hdr_len, offloads, &mut self.stats, &segs),
                bufs.get_mut(filled),
            ) {
                if copy_chain_into(&self.mem, self.hdr_len, &mut self.stats, &segs, hdr, buf) {
                    filled += 1;
                }
            }
            // A TX chain is completed with length 0: the device writes nothing into it.
            self.push_used(&chain, 0);
            self.consume(chain.slots);
        }
        self.put_scratch(segs);
        self.flush_used();
        filled
    }
}
