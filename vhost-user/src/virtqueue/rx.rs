//! The guest's RX side: frames written, after a virtio-net header, into the chains the guest
//! posted, spread over several chains with mergeable buffers, all or nothing per frame.

use super::chain::{ChainFault, Segments};
use super::{Broken, PacketBuffer, SplitQueue, PREFETCH_AHEAD};
use crate::memory::GuestMemory;
use crate::net_hdr::{self, NetHdr};
use crate::MemoryError;

/// Where an enqueued frame's bytes come from.
pub(super) trait FrameSource {
    fn len(&self) -> usize;
    /// The offload header to give with it.
    fn net_hdr(&self) -> NetHdr;
    fn copy_out(
        &self,
        off: usize,
        dst: &GuestMemory,
        gpa: u64,
        len: usize,
    ) -> Result<(), MemoryError>;
}

/// A packet buffer's bytes, piece by piece.
pub(super) struct BufferFrame<'a, B: PacketBuffer>(pub(super) &'a B);

impl<B: PacketBuffer> FrameSource for BufferFrame<'_, B> {
    #[inline]
    fn len(&self) -> usize {
        self.0.len()
    }
    #[inline]
    fn net_hdr(&self) -> NetHdr {
        self.0.net_hdr()
    }
    #[inline]
    fn copy_out(
        &self,
        off: usize,
        dst: &GuestMemory,
        gpa: u64,
        len: usize,
    ) -> Result<(), MemoryError> {
        let (start, end) = (off, off + len);
        let mut pos = 0usize;
        let mut i = 0;
        while let Some(p) = self.0.piece(i) {
            let (p0, p1) = (pos, pos + p.len());
            let (a, b) = (start.max(p0), end.min(p1));
            if a < b {
                dst.write(gpa + (a - start) as u64, &p[a - p0..b - p0])?;
            }
            if p1 >= end {
                return Ok(());
            }
            pos = p1;
            i += 1;
        }
        Err(MemoryError::OutOfRange {
            addr: gpa,
            len: len as u64,
        })
    }
}

/// Outcome of placing one frame into the RX ring.
pub(super) enum Placed {
    Delivered,
    Dropped,
    NoRoom,
    Broken,
}

impl SplitQueue {
    /// `pkts` → guest RX. Returns how many packets were consumed from the front of `pkts`
    /// (delivered, or dropped and counted when they fit no RX chain); stops when the guest has
    /// no more buffers, leaving the rest to the caller.
    pub fn enqueue_burst<B: PacketBuffer>(&mut self, pkts: &[B]) -> usize {
        let Some(avail_idx) = self.avail_window() else {
            return 0;
        };
        if avail_idx == self.last_avail || pkts.is_empty() {
            return 0;
        }
        let mut consumed = 0;
        let mut segs = self.take_scratch();
        let hdr = self.hdr_len as u64;
        for (i, p) in pkts.iter().enumerate() {
            if i % usize::from(PREFETCH_AHEAD) == 0 {
                // One chain per packet is the common case (mergeable buffers hold a 1518-byte
                // frame); when a frame spans several, the hints run a little short: harmless.
                let ready = avail_idx.wrapping_sub(self.last_avail);
                let left = u16::try_from(pkts.len() - i).unwrap_or(u16::MAX);
                let rest = &pkts[i..];
                self.prefetch_chains(
                    self.last_avail,
                    ready.min(left).min(PREFETCH_AHEAD),
                    true,
                    |k| rest.get(usize::from(k)).map_or(0, |p| hdr + p.len() as u64),
                );
            }
            match self.place(&BufferFrame(p), avail_idx, &mut segs) {
                Placed::Delivered | Placed::Dropped => consumed += 1,
                Placed::NoRoom | Placed::Broken => break,
            }
        }
        self.put_scratch(segs);
        self.flush_used();
        consumed
    }

    /// Copies `frame` into RX chains starting at `last_avail`, mergeable across chains when
    /// negotiated. Rolls back on NoRoom so nothing partial is published.
    pub(super) fn place<S: FrameSource + ?Sized>(
        &mut self,
        frame: &S,
        avail_idx: u16,
        segs: &mut Segments,
    ) -> Placed {
        let hdr_len = self.hdr_len;
        let total = hdr_len + frame.len();
        let mut net_hdr = frame.net_hdr();
        if self.features & net_hdr::F_GUEST_CSUM == 0 {
            // "Checksum verified" is news a guest without GUEST_CSUM does without.
            net_hdr.flags &= !net_hdr::FLAG_DATA_VALID;
        }
        if !net_hdr.is_none() && !net_hdr.fits_rx(self.features) {
            self.stats.dropped_bad_offload += 1;
            return Placed::Dropped;
        }
        let saved_avail = self.last_avail;
        let saved_shadow = self.shadow.len();
        let mut written = 0usize;
        let mut num_buffers = 0u16;
        let mut hdr_gpa = 0u64;
        loop {
            if self.last_avail == avail_idx {
                self.last_avail = saved_avail;
                self.shadow.truncate(saved_shadow);
                return Placed::NoRoom;
            }
            let head = match self.avail_head(self.last_avail) {
                Ok(h) => h,
                Err(b) => {
                    self.mark_broken(b);
                    self.last_avail = saved_avail;
                    self.shadow.truncate(saved_shadow);
                    return Placed::Broken;
                }
            };
            segs.clear();
            let fault = match self.walk(head, true, segs) {
                Ok(()) => None,
                Err(ChainFault::TooManySegments) => Some(Broken::RxChainTooFragmented),
                Err(ChainFault::Broken(b)) => Some(b),
            };
            let fault = fault.or_else(|| match segs.as_slice().first() {
                Some(&(_, l)) if num_buffers == 0 && (l as usize) < hdr_len => {
                    Some(Broken::RxBufferTooSmall {
                        len: l,
                        hdr: hdr_len,
                    })
                }
                None if num_buffers == 0 => Some(Broken::RxBufferTooSmall {
                    len: 0,
                    hdr: hdr_len,
                }),
                _ => None,
            });
            if let Some(b) = fault {
                self.mark_broken(b);
                self.last_avail = saved_avail;
                self.shadow.truncate(saved_shadow);
                return Placed::Broken;
            }
            if !self.mrg_rxbuf && (segs.total as usize) < total {
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
                if self.write_stream(frame, net_hdr, written, addr, n).is_err() {
                    self.mark_broken(Broken::BadAddress {
                        addr,
                        len: n as u64,
                    });
                    self.last_avail = saved_avail;
                    self.shadow.truncate(saved_shadow);
                    return Placed::Broken;
                }
                written += n;
                chain_written += n as u32;
            }
            self.push_used(head, chain_written);
            self.last_avail = self.last_avail.wrapping_add(1);
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

    /// Writes bytes [at, at+n) of the stream "virtio-net header ++ frame" to guest `gpa`.
    #[inline]
    fn write_stream<S: FrameSource + ?Sized>(
        &self,
        frame: &S,
        net_hdr: NetHdr,
        at: usize,
        gpa: u64,
        n: usize,
    ) -> Result<(), MemoryError> {
        write_stream(&self.mem, self.hdr_len, frame, net_hdr, at, gpa, n)
    }
}

/// Writes bytes [at, at+n) of the stream "virtio-net header (`hdr_len` bytes) ++ frame" to
/// guest `gpa`. Both ring layouts write received frames through here.
pub(super) fn write_stream<S: FrameSource + ?Sized>(
    mem: &GuestMemory,
    hdr_len: usize,
    frame: &S,
    net_hdr: NetHdr,
    at: usize,
    gpa: u64,
    n: usize,
) -> Result<(), MemoryError> {
    let mut hdr = [0u8; 12];
    hdr[..10].copy_from_slice(&net_hdr.to_bytes());
    if hdr_len == 12 {
        hdr[10] = 1; // num_buffers, patched later when a frame spans several chains
    }
    let hdr = &hdr[..hdr_len];
    let mut done = 0;
    if at < hdr.len() {
        let k = (hdr.len() - at).min(n);
        mem.write(gpa, &hdr[at..at + k])?;
        done = k;
    }
    if done < n {
        let foff = at + done - hdr.len();
        frame.copy_out(foff, mem, gpa + done as u64, n - done)?;
    }
    Ok(())
}
