//! The guest's RX side on a packed ring: frames written, after a virtio-net header, into the
//! chains the guest made available, spread over several chains with mergeable buffers, all or
//! nothing per frame.

use super::super::rx::{write_stream, BufferFrame, FrameSource, Placed};
use super::super::{Broken, PacketBuffer, PREFETCH_AHEAD};
use super::PackedQueue;
use crate::net_hdr;

impl PackedQueue {
    /// `pkts` → guest RX. Returns how many packets were consumed from the front of `pkts`
    /// (delivered, or dropped and counted when they fit no RX chain); stops when the guest has
    /// no more buffers, leaving the rest to the caller.
    pub fn enqueue_burst<B: PacketBuffer>(&mut self, pkts: &[B]) -> usize {
        if pkts.is_empty() || !self.usable() {
            return 0;
        }
        let mut consumed = 0;
        let mut segs = self.take_scratch();
        let hdr = self.hdr_len as u64;
        for (i, p) in pkts.iter().enumerate() {
            if i % usize::from(PREFETCH_AHEAD) == 0 {
                // One buffer per packet is the common case; a frame spanning several makes the
                // hints run a little short: harmless.
                let left = u16::try_from(pkts.len() - i).unwrap_or(u16::MAX);
                self.prefetch_ahead(left.min(PREFETCH_AHEAD), true, hdr + p.len() as u64);
            }
            match self.place(&BufferFrame(p), &mut segs) {
                Placed::Delivered | Placed::Dropped => consumed += 1,
                Placed::NoRoom | Placed::Broken => break,
            }
        }
        self.put_scratch(segs);
        self.flush_used();
        consumed
    }

    /// Copies `frame` into RX chains from the avail position, mergeable across chains when
    /// negotiated. Rolls back on NoRoom so nothing partial is published.
    fn place<S: FrameSource + ?Sized>(
        &mut self,
        frame: &S,
        segs: &mut super::super::chain::Segments,
    ) -> Placed {
        let hdr_len = self.hdr_len;
        let total = hdr_len + frame.len();
        let mut hdr = frame.net_hdr();
        if self.features & net_hdr::F_GUEST_CSUM == 0 {
            hdr.flags &= !net_hdr::FLAG_DATA_VALID;
        }
        if !hdr.is_none() && !hdr.fits_rx(self.features) {
            self.stats.dropped_bad_offload += 1;
            return Placed::Dropped;
        }
        let saved = self.checkpoint();
        let mut written = 0usize;
        let mut num_buffers = 0u16;
        let mut hdr_gpa = 0u64;
        loop {
            match self.head_ready() {
                Ok(true) => {}
                Ok(false) => {
                    self.rollback(saved);
                    return Placed::NoRoom;
                }
                Err(b) => {
                    self.mark_broken(b);
                    self.rollback(saved);
                    return Placed::Broken;
                }
            }
            segs.clear();
            let fault = match self.walk(true, segs) {
                Ok(c) if c.too_many => Err(Broken::RxChainTooFragmented),
                Ok(c) => match segs.as_slice().first() {
                    Some(&(_, l)) if num_buffers == 0 && (l as usize) < hdr_len => {
                        Err(Broken::RxBufferTooSmall {
                            len: l,
                            hdr: hdr_len,
                        })
                    }
                    None if num_buffers == 0 => Err(Broken::RxBufferTooSmall {
                        len: 0,
                        hdr: hdr_len,
                    }),
                    _ => Ok(c),
                },
                Err(b) => Err(b),
            };
            let chain = match fault {
                Ok(c) => c,
                Err(b) => {
                    self.mark_broken(b);
                    self.rollback(saved);
                    return Placed::Broken;
                }
            };
            if !self.mrg_rxbuf && (segs.total() as usize) < total {
                // Does not fit the one chain a non-mergeable packet may use: drop the packet,
                // leave the chain for the next one.
                self.stats.dropped_too_big += 1;
                return Placed::Dropped;
            }
            if num_buffers == 0 {
                hdr_gpa = segs.as_slice()[0].0;
            }
            let mut chain_written = 0u32;
            for &(addr, len) in segs.as_slice() {
                if written == total {
                    break;
                }
                let n = (len as usize).min(total - written);
                if write_stream(&self.mem, hdr_len, frame, hdr, written, addr, n).is_err() {
                    self.mark_broken(Broken::BadAddress {
                        addr,
                        len: n as u64,
                    });
                    self.rollback(saved);
                    return Placed::Broken;
                }
                written += n;
                chain_written += n as u32;
            }
            self.push_used(&chain, chain_written);
            self.consume(chain.slots);
            num_buffers += 1;
            if written == total {
                break;
            }
        }
        if num_buffers > 1
            && self
                .mem
                .write(hdr_gpa + 10, &num_buffers.to_le_bytes())
                .is_err()
        {
            self.mark_broken(Broken::BadAddress {
                addr: hdr_gpa,
                len: 12,
            });
            return Placed::Broken;
        }
        self.stats.packets += 1;
        self.stats.bytes += frame.len() as u64;
        Placed::Delivered
    }
}
