//! What the fast path fills (dequeue) and drains (enqueue): the [`PacketBuffer`] trait, and
//! [`VecBuffer`], its plain heap implementation for tests and tools.

use crate::net_hdr::NetHdr;

/// Largest piece [`PacketBuffer::append`] is asked for: a 2 KiB mbuf segment always fits one.
pub const MAX_APPEND: usize = 2048;

/// A packet buffer the fast path fills (dequeue) or drains (enqueue). The vrouter implements it
/// on DPDK mbufs (possibly chained: a 9000-byte frame spans several 2 KiB segments); tests use
/// [`VecBuffer`]. Implementations must not allocate from the heap per packet.
pub trait PacketBuffer {
    /// Empties the buffer for reuse.
    fn reset(&mut self);
    /// Grows the packet by `len` (at most [`MAX_APPEND`]) bytes at the end and returns them as
    /// one contiguous slice, or `None` when there is no room (the packet is then dropped and
    /// counted). A segmented buffer may start a new segment for a piece that does not fit the
    /// current one.
    fn append(&mut self, len: usize) -> Option<&mut [u8]>;
    /// Packet length in bytes (Ethernet frame, no virtio-net header).
    fn len(&self) -> usize;
    /// Whether the packet is empty.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// The packet's `i`-th contiguous piece, in order; `None` past the last.
    fn piece(&self, i: usize) -> Option<&[u8]>;
    /// Dequeue: what the guest's virtio-net header says of the packet, already checked against
    /// the negotiated features and the frame ([`NetHdr::NONE`] when it says nothing).
    #[inline(always)]
    fn set_net_hdr(&mut self, _hdr: NetHdr) {}
    /// Enqueue: the virtio-net header to give the guest with the packet. The caller makes sure
    /// it only asks for what the guest negotiated ([`SplitQueue::features`](super::SplitQueue::features)); a header that
    /// does not fit them drops the packet (counted).
    #[inline(always)]
    fn net_hdr(&self) -> NetHdr {
        NetHdr::NONE
    }
}

/// A fixed-capacity heap buffer: allocated once, reused for every packet.
#[derive(Debug, Clone)]
pub struct VecBuffer {
    bytes: Vec<u8>,
    len: usize,
    hdr: NetHdr,
}

impl VecBuffer {
    /// A buffer that holds frames of up to `capacity` bytes.
    pub fn with_capacity(capacity: usize) -> Self {
        Self {
            bytes: vec![0; capacity],
            len: 0,
            hdr: NetHdr::NONE,
        }
    }

    /// A buffer holding a copy of `frame`.
    pub fn from_frame(frame: &[u8]) -> Self {
        Self {
            bytes: frame.to_vec(),
            len: frame.len(),
            hdr: NetHdr::NONE,
        }
    }

    /// The packet bytes.
    pub fn data(&self) -> &[u8] {
        &self.bytes[..self.len]
    }

    /// The virtio-net header's offload fields (set on dequeue, given on enqueue).
    pub fn hdr(&self) -> NetHdr {
        self.hdr
    }

    /// Sets the header given with the packet on enqueue.
    pub fn with_hdr(mut self, hdr: NetHdr) -> Self {
        self.hdr = hdr;
        self
    }
}

impl PacketBuffer for VecBuffer {
    fn reset(&mut self) {
        self.len = 0;
        self.hdr = NetHdr::NONE;
    }

    fn set_net_hdr(&mut self, hdr: NetHdr) {
        self.hdr = hdr;
    }

    fn net_hdr(&self) -> NetHdr {
        self.hdr
    }

    fn append(&mut self, len: usize) -> Option<&mut [u8]> {
        let end = self.len.checked_add(len)?;
        let s = self.bytes.get_mut(self.len..end)?;
        self.len = end;
        Some(s)
    }

    fn len(&self) -> usize {
        self.len
    }

    fn piece(&self, i: usize) -> Option<&[u8]> {
        (i == 0).then(|| self.data())
    }
}
