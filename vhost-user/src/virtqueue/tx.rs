//! The guest's TX side: chains taken from the avail ring, their virtio-net header checked and
//! stripped, their frames handed to a sink: packet buffers ([`SplitQueue::dequeue_burst`]) or
//! another device's RX ring (`forward_burst`).

use super::chain::{ChainFault, Segments};
use super::QueueStats;
use super::{PacketBuffer, SplitQueue, MAX_APPEND, PREFETCH_AHEAD};
use crate::memory::{GuestMemory, PREFETCH_MAX};
use crate::net_hdr::NetHdr;

/// What became of one TX chain handed to a [`TxSink`].
pub(super) enum Taken {
    /// The frame went on; the chain is completed.
    Delivered,
    /// The frame was dropped (and counted); the chain is completed all the same.
    Dropped,
    /// The sink can take nothing more (no room, or it broke): the chain stays in the ring for
    /// the next burst.
    Stop,
}

/// Where the TX loop hands the chains it takes.
pub(super) trait TxSink {
    /// Whether dropped chains count against the burst's budget as delivered ones do.
    const DROPS_SPEND: bool;
    /// Cache hints of its own for a round of `count` chains, after the source's.
    fn hint(&self, count: u16);
    /// One walked chain whose virtio-net header `hdr` is checked; `spent` is the budget used so
    /// far in this burst.
    fn take(&mut self, src: &mut SplitQueue, segs: &Segments, hdr: NetHdr, spent: usize) -> Taken;
}

/// Dequeue's sink: one packet buffer per delivered frame, in order.
struct IntoBuffers<'a, B>(&'a mut [B]);

impl<B: PacketBuffer> TxSink for IntoBuffers<'_, B> {
    // A dropped chain fills no buffer: the burst goes on until the buffers are full.
    const DROPS_SPEND: bool = false;

    #[inline(always)]
    fn hint(&self, _count: u16) {}

    #[inline(always)]
    fn take(&mut self, src: &mut SplitQueue, segs: &Segments, hdr: NetHdr, spent: usize) -> Taken {
        // Only delivered frames spend, so `spent` is the next buffer to fill.
        let Some(buf) = self.0.get_mut(spent) else {
            return Taken::Stop;
        };
        if src.copy_chain_into(segs, hdr, buf) {
            Taken::Delivered
        } else {
            Taken::Dropped
        }
    }
}

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
        let budget = bufs.len();
        self.take_tx_chains(avail_idx, budget, &mut IntoBuffers(bufs))
    }

    /// The TX burst: takes chains from `last_avail` up to `avail_idx` and at most `budget` of
    /// them (as `sink` spends it), hinting a round of chains at a time, walks and checks each,
    /// hands it to `sink` and completes it (a TX chain is completed with length 0: the device
    /// writes nothing into it). Stops early at a chain that breaks the queue, which is not
    /// completed, or when the sink is full. Returns the budget spent.
    #[inline]
    pub(super) fn take_tx_chains<S: TxSink>(
        &mut self,
        avail_idx: u16,
        budget: usize,
        sink: &mut S,
    ) -> usize {
        let mut spent = 0;
        let mut segs = self.take_scratch();
        // Chains left in the current round of hints.
        let mut hinted = 0u16;
        while self.last_avail != avail_idx && spent < budget {
            if hinted == 0 {
                // Chains not taken (malformed, dropped) also consume an entry, so a round covers
                // at most the entries left and the budget left.
                let ready = avail_idx.wrapping_sub(self.last_avail);
                let room = u16::try_from(budget - spent).unwrap_or(u16::MAX);
                hinted = ready.min(room).min(PREFETCH_AHEAD);
                self.prefetch_chains(self.last_avail, hinted, false, |_| PREFETCH_MAX);
                sink.hint(hinted);
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
            let taken = match self.walk(head, false, &mut segs) {
                Ok(()) => match self.tx_header(&segs) {
                    Some(hdr) => sink.take(self, &segs, hdr, spent),
                    None => Taken::Dropped,
                },
                Err(ChainFault::TooManySegments) => {
                    self.stats.dropped_fragmented += 1;
                    Taken::Dropped
                }
                Err(ChainFault::Broken(b)) => {
                    self.mark_broken(b);
                    break;
                }
            };
            match taken {
                Taken::Delivered => spent += 1,
                Taken::Dropped => spent += usize::from(S::DROPS_SPEND),
                Taken::Stop => break,
            }
            self.push_used(head, 0);
            self.last_avail = self.last_avail.wrapping_add(1);
        }
        self.put_scratch(segs);
        self.flush_used();
        spent
    }

    /// The virtio-net header of a walked TX chain, checked (see [`tx_header`]).
    #[inline]
    fn tx_header(&mut self, segs: &Segments) -> Option<NetHdr> {
        tx_header(
            &self.mem,
            self.hdr_len,
            self.tx_offloads.then_some(self.features),
            &mut self.stats,
            segs,
        )
    }

    /// Copies the frame after the header into `buf` (see [`copy_chain_into`]).
    #[inline]
    fn copy_chain_into<B: PacketBuffer>(
        &mut self,
        segs: &Segments,
        net_hdr: NetHdr,
        buf: &mut B,
    ) -> bool {
        copy_chain_into(&self.mem, self.hdr_len, &mut self.stats, segs, net_hdr, buf)
    }
}

/// The virtio-net header of a walked TX chain, checked against the negotiated features and
/// the frame; `None`, counted, when the chain is shorter than the header or its offloads do
/// not add up. `offloads` is the negotiated feature set when the guest may send offloads
/// (the header is then read), `None` when it may not. Both ring layouts use it.
#[inline]
pub(super) fn tx_header(
    mem: &GuestMemory,
    hdr_len: usize,
    offloads: Option<u64>,
    stats: &mut QueueStats,
    segs: &Segments,
) -> Option<NetHdr> {
    if segs.total < hdr_len as u64 {
        stats.dropped_malformed += 1;
        return None;
    }
    let Some(features) = offloads else {
        return Some(NetHdr::NONE);
    };
    let hdr = read_tx_hdr(mem, hdr_len, features, segs);
    if hdr.is_none() {
        stats.dropped_bad_offload += 1;
    }
    hdr
}

/// Copies the frame after the `hdr_len`-byte header into `buf` and hands `net_hdr` over with
/// it; false, counted, when it does not fit. Both ring layouts use it.
#[inline]
pub(super) fn copy_chain_into<B: PacketBuffer>(
    mem: &GuestMemory,
    hdr_len: usize,
    stats: &mut QueueStats,
    segs: &Segments,
    net_hdr: NetHdr,
    buf: &mut B,
) -> bool {
    let hdr = hdr_len as u64;
    buf.reset();
    let mut pos = 0u64; // position in the chain
    for &(addr, len) in segs.as_slice() {
        let (s0, s1) = (pos, pos + u64::from(len));
        pos = s1;
        let mut a = s0.max(hdr);
        while a < s1 {
            let n = ((s1 - a) as usize).min(MAX_APPEND);
            let Some(dst) = buf.append(n) else {
                stats.dropped_too_big += 1;
                return false;
            };
            if dst.len() != n || mem.read(addr + (a - s0), dst).is_err() {
                // Checked during the walk; only a buffer breaking its contract gets here.
                stats.dropped_malformed += 1;
                return false;
            }
            a += n as u64;
        }
    }
    buf.set_net_hdr(net_hdr);
    stats.packets += 1;
    stats.bytes += segs.total - hdr;
    true
}

/// The offload fields of the virtio-net header at the start of a TX chain, checked; `None`
/// when they do not add up.
fn read_tx_hdr(
    mem: &GuestMemory,
    hdr_len: usize,
    features: u64,
    segs: &Segments,
) -> Option<NetHdr> {
    let mut b = [0u8; 10];
    let mut got = 0usize;
    for &(addr, len) in segs.as_slice() {
        let n = (len as usize).min(b.len() - got);
        mem.read(addr, &mut b[got..got + n]).ok()?;
        got += n;
        if got == b.len() {
            break;
        }
    }
    let frame_len = (segs.total as usize).checked_sub(hdr_len)?;
    NetHdr::from_bytes(&b).parse_tx(features, frame_len).ok()
}
