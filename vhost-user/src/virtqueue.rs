//! Split virtqueue fast path: burst dequeue (guest TX), burst enqueue (guest RX, mergeable
//! buffers), and a guest-to-guest burst that copies once between two devices.
//!
//! Per burst: one acquire load of `avail->idx`; one pass over the burst's head descriptors that
//! hints the buffers they name and the used entries about to be written, so those misses overlap
//! instead of being taken one packet at a time (the lines were just written by the guest's core);
//! used entries collected in a shadow ring and published with one release store of `used->idx`;
//! the call eventfd written only when the guest asked (`VRING_AVAIL_F_NO_INTERRUPT` clear, or
//! the EVENT_IDX `used_event` crossed). The backend polls, so it tells the guest not to kick
//! (`VRING_USED_F_NO_NOTIFY`, and with EVENT_IDX an `avail_event` kept behind the ring).
//!
//! Nothing the guest writes is trusted. A malformed chain (loop, too long, index or address out of
//! range, wrong direction, bad or nested indirect table, an avail index jump) marks the queue
//! broken with one log line: it then does nothing until the session rebuilds it. No path panics,
//! allocates or touches memory outside the mapped regions.

use std::os::fd::OwnedFd;
use std::sync::atomic::{fence, Ordering};
use std::sync::Arc;

use crate::memory::{copy_guest_to_guest, GuestMemory, RingArea, PREFETCH_MAX};
use crate::net_hdr::{self, NetHdr};
use crate::MemoryError;

/// Descriptor flag: the chain continues at `next`.
pub const DESC_F_NEXT: u16 = 1;
/// Descriptor flag: device-writable buffer.
pub const DESC_F_WRITE: u16 = 2;
/// Descriptor flag: the buffer is a table of descriptors.
pub const DESC_F_INDIRECT: u16 = 4;
/// Avail flag: the guest needs no interrupt.
pub const AVAIL_F_NO_INTERRUPT: u16 = 1;
/// Used flag: the device needs no kick.
pub const USED_F_NO_NOTIFY: u16 = 1;
/// Largest split queue.
pub const MAX_QUEUE_SIZE: u16 = 32768;
/// Most data descriptors one packet may use (longer chains are dropped, not followed).
pub const MAX_SEGMENTS: usize = 64;

/// Feature bits the virtqueue honours.
pub mod feature {
    /// VIRTIO_NET_F_MRG_RXBUF.
    pub const MRG_RXBUF: u64 = 1 << 15;
    /// VIRTIO_RING_F_INDIRECT_DESC.
    pub const INDIRECT_DESC: u64 = 1 << 28;
    /// VIRTIO_RING_F_EVENT_IDX.
    pub const EVENT_IDX: u64 = 1 << 29;
    /// VIRTIO_F_VERSION_1.
    pub const VERSION_1: u64 = 1 << 32;
}

/// How many avail entries one round of cache hints covers: a burst. Bounded so one round's lines
/// (descriptors, the first lines of each buffer, used entries) stay within L1 and the core's
/// outstanding-miss capacity; longer bursts get a new round every this many chains.
pub const PREFETCH_AHEAD: u16 = 32;

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
    /// it only asks for what the guest negotiated ([`SplitQueue::features`]); a header that
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

/// Why a queue was marked broken.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Broken {
    /// `avail->idx` moved further than the queue size since the last burst.
    #[error("avail index jumped from {last} to {avail}, more than the queue size")]
    AvailIdxJump { last: u16, avail: u16 },
    /// A head index in the avail ring outside the descriptor table.
    #[error("avail ring names descriptor {head}, outside the table")]
    HeadOutOfRange { head: u16 },
    /// A `next` outside the (direct or indirect) table.
    #[error("descriptor chain continues at {next}, outside its table of {size}")]
    NextOutOfRange { next: u16, size: u32 },
    /// The chain visits more descriptors than its table has: a loop or an over-long chain.
    #[error("descriptor chain longer than its table of {size} (a loop?)")]
    ChainTooLong { size: u32 },
    /// An indirect descriptor although INDIRECT_DESC was not negotiated.
    #[error("indirect descriptor used but INDIRECT_DESC not negotiated")]
    IndirectNotNegotiated,
    /// An indirect table whose length is not a positive multiple of 16 (or is too large).
    #[error("indirect table length {len} is invalid")]
    IndirectTableLen { len: u32 },
    /// An indirect descriptor that also has NEXT set.
    #[error("indirect descriptor also has NEXT set")]
    IndirectWithNext,
    /// An indirect descriptor inside an indirect table.
    #[error("nested indirect descriptor")]
    NestedIndirect,
    /// A buffer outside guest memory (or overflowing u64).
    #[error("buffer {addr:#x}+{len} is not in mapped guest memory")]
    BadAddress { addr: u64, len: u64 },
    /// A device-writable descriptor in a TX chain.
    #[error("TX chain has a device-writable descriptor")]
    WritableTxDescriptor,
    /// An RX descriptor the guest did not mark writable.
    #[error("RX chain has a descriptor the guest did not mark writable")]
    ReadOnlyRxDescriptor,
    /// An RX chain with more descriptors than the fast path follows.
    #[error("RX chain has more than {MAX_SEGMENTS} descriptors")]
    RxChainTooFragmented,
    /// A first RX buffer smaller than the virtio-net header.
    #[error("RX buffer of {len} bytes cannot hold the {hdr}-byte virtio-net header")]
    RxBufferTooSmall { len: u32, hdr: usize },
    /// A ring field outside its validated window (cannot happen with a consistent size).
    #[error("ring access out of its window")]
    RingAccess,
    /// The frontend took guest memory away under us (truncated, shrank or punched a hole in
    /// the file behind a region); the faulting region now reads as zeros.
    #[error("guest memory fault at {gpa:#x}: the frontend truncated or shrank its memory file")]
    MemoryFault { gpa: u64 },
}

/// Per-queue counters, read by the owner thread.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct QueueStats {
    /// Packets delivered (dequeued into buffers or enqueued to the guest).
    pub packets: u64,
    /// Frame bytes of those packets (no virtio-net header).
    pub bytes: u64,
    /// TX chains shorter than the virtio-net header.
    pub dropped_malformed: u64,
    /// Packets that did not fit the buffer (dequeue) or a non-mergeable RX chain (enqueue).
    pub dropped_too_big: u64,
    /// TX chains with more than [`MAX_SEGMENTS`] descriptors.
    pub dropped_fragmented: u64,
    /// Call-eventfd writes.
    pub kicks: u64,
    /// Packets whose offload header did not add up (TX: not negotiated, or inconsistent with
    /// the frame; RX: asked for what the guest did not negotiate).
    pub dropped_bad_offload: u64,
}

/// Everything a queue needs, translated and validated by the session.
#[derive(Debug)]
pub struct QueueSetup {
    /// Vring index (even: guest RX, odd: guest TX).
    pub index: u16,
    /// Queue size (power of two, at most [`MAX_QUEUE_SIZE`]).
    pub size: u16,
    /// The guest's memory.
    pub mem: Arc<GuestMemory>,
    /// Guest-physical addresses of the three rings.
    pub desc_gpa: u64,
    /// Avail ring.
    pub avail_gpa: u64,
    /// Used ring.
    pub used_gpa: u64,
    /// First avail index to process (`SET_VRING_BASE`).
    pub base: u16,
    /// Negotiated virtio features.
    pub features: u64,
    /// Call eventfd, if the guest wants interrupts.
    pub call: Option<Arc<OwnedFd>>,
}

/// A descriptor as read from a table.
#[derive(Debug, Clone, Copy)]
struct Desc {
    addr: u64,
    len: u32,
    flags: u16,
    next: u16,
}

impl Desc {
    fn from_bytes(b: &[u8; 16]) -> Self {
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
    total: u64,
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
    fn clear(&mut self) {
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
}

enum ChainFault {
    Broken(Broken),
    TooManySegments,
}

impl From<Broken> for ChainFault {
    fn from(b: Broken) -> Self {
        ChainFault::Broken(b)
    }
}

/// Where an enqueued frame's bytes come from.
trait FrameSource {
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
struct BufferFrame<'a, B: PacketBuffer>(&'a B);

impl<B: PacketBuffer> FrameSource for BufferFrame<'_, B> {
    fn len(&self) -> usize {
        self.0.len()
    }
    fn net_hdr(&self) -> NetHdr {
        self.0.net_hdr()
    }
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

/// Outcome of placing one frame into the RX ring.
enum Placed {
    Delivered,
    Dropped,
    NoRoom,
    Broken,
}

/// One split virtqueue, owned by the thread that polls it.
#[derive(Debug)]
pub struct SplitQueue {
    index: u16,
    size: u16,
    mem: Arc<GuestMemory>,
    desc: RingArea,
    avail: RingArea,
    used: RingArea,
    last_avail: u16,
    used_idx: u16,
    hdr_len: usize,
    mrg_rxbuf: bool,
    event_idx: bool,
    indirect: bool,
    /// Negotiated virtio features.
    features: u64,
    /// The guest may put offloads in the headers it sends: read and check them.
    tx_offloads: bool,
    call: Option<Arc<OwnedFd>>,
    shadow: Vec<(u32, u32)>,
    /// The chain scratch list, allocated once with the queue (it is 1 KiB: building it on the
    /// stack per burst call showed in profiles). Taken for a burst and put back after.
    scratch: Option<Box<Segments>>,
    broken: Option<Broken>,
    stats: QueueStats,
}

impl SplitQueue {
    /// Builds a queue over validated ring addresses. Fails if a ring is not inside one mapped
    /// region or is misaligned.
    pub fn new(s: QueueSetup) -> Result<Self, MemoryError> {
        let size = s.size;
        if size == 0 || size > MAX_QUEUE_SIZE || !size.is_power_of_two() {
            return Err(MemoryError::OutOfRange {
                addr: s.desc_gpa,
                len: u64::from(size),
            });
        }
        let n = u64::from(size);
        let desc = s.mem.ring_area(s.desc_gpa, 16 * n, 16)?;
        let avail = s.mem.ring_area(s.avail_gpa, 6 + 2 * n, 2)?;
        let used = s.mem.ring_area(s.used_gpa, 6 + 8 * n, 4)?;
        let hdr_len = if s.features & (feature::MRG_RXBUF | feature::VERSION_1) != 0 {
            12
        } else {
            10
        };
        let used_idx = used.load_u16(2).ok_or(MemoryError::OutOfRange {
            addr: s.used_gpa,
            len: 4,
        })?;
        let mut last_avail = s.base;
        if used_idx != s.base {
            // We complete every chain in the burst that takes it, so the two agree unless the
            // frontend changed them; follow the used ring, which is what the guest will reap.
            tracing::info!(
                queue = s.index,
                base = s.base,
                used_idx,
                "frontend's vring base differs from the used index (normal when the backend reattaches to a running pod); resuming at the used index"
            );
            last_avail = used_idx;
        }
        let q = Self {
            index: s.index,
            size,
            mem: s.mem,
            desc,
            avail,
            used,
            last_avail,
            used_idx,
            hdr_len,
            mrg_rxbuf: s.features & feature::MRG_RXBUF != 0,
            event_idx: s.features & feature::EVENT_IDX != 0,
            indirect: s.features & feature::INDIRECT_DESC != 0,
            features: s.features,
            tx_offloads: s.features
                & (net_hdr::F_CSUM
                    | net_hdr::F_HOST_TSO4
                    | net_hdr::F_HOST_TSO6
                    | net_hdr::F_HOST_USO)
                != 0,
            call: s.call,
            shadow: Vec::with_capacity(usize::from(size)),
            scratch: Some(Box::default()),
            broken: None,
            stats: QueueStats::default(),
        };
        // We poll: ask the guest not to kick.
        q.used
            .store_u16(0, USED_F_NO_NOTIFY)
            .ok_or(MemoryError::OutOfRange {
                addr: s.used_gpa,
                len: 2,
            })?;
        q.suppress_kicks();
        Ok(q)
    }

    /// Vring index.
    pub fn index(&self) -> u16 {
        self.index
    }

    /// The virtio features the guest negotiated (which offloads it sends and takes).
    pub fn features(&self) -> u64 {
        self.features
    }

    /// Queue size.
    pub fn size(&self) -> u16 {
        self.size
    }

    /// The next avail index to process (what `GET_VRING_BASE` reports).
    pub fn next_avail(&self) -> u16 {
        self.last_avail
    }

    /// Whether an access to this queue's guest memory has faulted (the frontend took pages away
    /// under us): its next burst stops it with [`Broken::MemoryFault`].
    pub fn memory_faulted(&self) -> bool {
        self.mem.faulted()
    }

    /// Why the queue is broken, if it is.
    pub fn broken(&self) -> Option<Broken> {
        self.broken
    }

    /// Counters.
    pub fn stats(&self) -> QueueStats {
        self.stats
    }

    /// Length of the virtio-net header on this queue.
    pub fn header_len(&self) -> usize {
        self.hdr_len
    }

    fn mark_broken(&mut self, why: Broken) {
        // Rings read as zeros after a memory fault and look broken in other ways first: name
        // the cause.
        let why = match self.mem.fault() {
            Some(f) => Broken::MemoryFault { gpa: f.gpa },
            None => why,
        };
        if self.broken.is_none() {
            tracing::error!(
                queue = self.index,
                "vring {} broken by the guest: {why}; it stays stopped until reconfigured",
                self.index
            );
            self.broken = Some(why);
        }
    }

    fn suppress_kicks(&self) {
        if self.event_idx {
            // avail_event just behind our position: the guest's need_event test stays false
            // until it wraps the whole index space.
            let _ = self.used.store_u16(
                4 + 8 * usize::from(self.size),
                self.last_avail.wrapping_sub(1),
            );
        }
    }

    /// Loads `avail->idx` once for the burst and checks it against the queue size.
    fn avail_window(&mut self) -> Option<u16> {
        if self.broken.is_some() {
            return None;
        }
        if self.mem.faulted() {
            let gpa = self.mem.fault().map_or(0, |f| f.gpa);
            self.mark_broken(Broken::MemoryFault { gpa });
            return None;
        }
        let Some(avail_idx) = self.avail.load_u16_acquire(2) else {
            self.mark_broken(Broken::RingAccess);
            return None;
        };
        if avail_idx.wrapping_sub(self.last_avail) > self.size {
            self.mark_broken(Broken::AvailIdxJump {
                last: self.last_avail,
                avail: avail_idx,
            });
            return None;
        }
        Some(avail_idx)
    }

    fn avail_head(&self, idx: u16) -> Result<u16, Broken> {
        let slot = usize::from(idx & (self.size - 1));
        let head = self
            .avail
            .load_u16(4 + 2 * slot)
            .ok_or(Broken::RingAccess)?;
        if head >= self.size {
            return Err(Broken::HeadOutOfRange { head });
        }
        Ok(head)
    }

    /// The scratch list for one burst call; [`SplitQueue::put_scratch`] returns it.
    fn take_scratch(&mut self) -> Box<Segments> {
        // Always present between calls; the default is a fallback that never runs.
        self.scratch.take().unwrap_or_default()
    }

    fn put_scratch(&mut self, segs: Box<Segments>) {
        self.scratch = Some(segs);
    }

    /// Cache hints for the `count` chains at avail entries `from..`: the buffer each head
    /// descriptor names, `want(k)` bytes of the `k`-th (write intent for RX), then the used
    /// entries these chains will complete. The descriptor loads here are independent of one
    /// another, so the core overlaps their misses by itself (a separate descriptor-prefetch pass
    /// measured no faster cold and slower warm). Hints only: nothing read here is trusted or
    /// kept; the walk that follows validates every chain as before, and a hint at an unmapped
    /// address is ignored.
    fn prefetch_chains(
        &self,
        from: u16,
        count: u16,
        device_writes: bool,
        want: impl Fn(u16) -> u64,
    ) {
        let mask = self.size - 1;
        for k in 0..count {
            let slot = usize::from(from.wrapping_add(k) & mask);
            let Some(h) = self.avail.load_u16(4 + 2 * slot).filter(|&h| h < self.size) else {
                continue;
            };
            let off = 16 * usize::from(h);
            let (Some(addr), Some(len)) = (self.desc.load_u64(off), self.desc.load_u32(off + 8))
            else {
                continue;
            };
            let len = u64::from(len).min(want(k));
            if device_writes {
                self.mem.prefetch_write(addr, len);
            } else {
                self.mem.prefetch(addr, len);
            }
        }
        let first = usize::from(self.used_idx.wrapping_add(self.shadow.len() as u16) & mask);
        let n = usize::from(count).min(usize::from(self.size));
        let to_end = n.min(usize::from(self.size) - first);
        self.used.prefetch_write(4 + 8 * first, 8 * to_end);
        if n > to_end {
            self.used.prefetch_write(4, 8 * (n - to_end));
        }
    }

    fn read_direct(&self, i: u16) -> Result<Desc, Broken> {
        let off = 16 * usize::from(i);
        let addr = self.desc.load_u64(off).ok_or(Broken::RingAccess)?;
        let len = self.desc.load_u32(off + 8).ok_or(Broken::RingAccess)?;
        let flags = self.desc.load_u16(off + 12).ok_or(Broken::RingAccess)?;
        let next = self.desc.load_u16(off + 14).ok_or(Broken::RingAccess)?;
        Ok(Desc {
            addr,
            len,
            flags,
            next,
        })
    }

    fn push_segment(
        &self,
        d: &Desc,
        device_writes: bool,
        segs: &mut Segments,
    ) -> Result<(), ChainFault> {
        let writable = d.flags & DESC_F_WRITE != 0;
        if writable != device_writes {
            return Err(if device_writes {
                Broken::ReadOnlyRxDescriptor
            } else {
                Broken::WritableTxDescriptor
            }
            .into());
        }
        let len = u64::from(d.len);
        if self.mem.check_range(d.addr, len).is_err() {
            return Err(Broken::BadAddress { addr: d.addr, len }.into());
        }
        if d.len == 0 {
            return Ok(());
        }
        if segs.n == MAX_SEGMENTS {
            return Err(ChainFault::TooManySegments);
        }
        segs.segs[segs.n] = (d.addr, d.len);
        segs.n += 1;
        segs.total += len;
        Ok(())
    }

    /// Follows the chain at `head` (direct or through one indirect table) into `segs`.
    fn walk(&self, head: u16, device_writes: bool, segs: &mut Segments) -> Result<(), ChainFault> {
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
        let count = table.len / 16;
        if table.len == 0 || table.len & 15 != 0 || count > u32::from(MAX_QUEUE_SIZE) {
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
            let mut raw = [0u8; 16];
            self.mem
                .read(table.addr + 16 * u64::from(i), &mut raw)
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

    fn push_used(&mut self, head: u16, len: u32) {
        self.shadow.push((u32::from(head), len));
    }

    /// Publishes the shadow used entries with one release store, then kicks if asked.
    fn flush_used(&mut self) {
        if self.shadow.is_empty() {
            return;
        }
        let old = self.used_idx;
        let mask = self.size - 1;
        let mut idx = old;
        for &(id, len) in &self.shadow {
            let off = 4 + 8 * usize::from(idx & mask);
            if self.used.store_u32(off, id).is_none() || self.used.store_u32(off + 4, len).is_none()
            {
                self.broken = Some(Broken::RingAccess);
                return;
            }
            idx = idx.wrapping_add(1);
        }
        self.shadow.clear();
        self.used_idx = idx;
        if self.used.store_u16_release(2, idx).is_none() {
            self.mark_broken(Broken::RingAccess);
            return;
        }
        self.suppress_kicks();
        self.kick_if_asked(old, idx);
    }

    fn kick_if_asked(&mut self, old: u16, new: u16) {
        let Some(call) = &self.call else { return };
        // The used index store must be visible before we read the guest's wish.
        fence(Ordering::SeqCst);
        let wanted = if self.event_idx {
            match self.avail.load_u16(4 + 2 * usize::from(self.size)) {
                // vring_need_event: did [old, new) cross used_event?
                Some(used_event) => {
                    new.wrapping_sub(used_event).wrapping_sub(1) < new.wrapping_sub(old)
                }
                None => true,
            }
        } else {
            self.avail
                .load_u16(0)
                .is_some_and(|f| f & AVAIL_F_NO_INTERRUPT == 0)
        };
        if wanted {
            // A full eventfd counter (EAGAIN) still means the guest will wake: nothing to do.
            let _ = rustix::io::write(call.as_ref(), &1u64.to_ne_bytes());
            self.stats.kicks += 1;
        }
    }

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
    fn read_tx_hdr(&self, segs: &Segments) -> Option<NetHdr> {
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
    fn place<S: FrameSource + ?Sized>(
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
    fn write_stream<S: FrameSource + ?Sized>(
        &self,
        frame: &S,
        net_hdr: NetHdr,
        at: usize,
        gpa: u64,
        n: usize,
    ) -> Result<(), MemoryError> {
        let mut hdr = [0u8; 12];
        hdr[..10].copy_from_slice(&net_hdr.to_bytes());
        if self.hdr_len == 12 {
            hdr[10] = 1; // num_buffers, patched later when a frame spans several chains
        }
        let hdr = &hdr[..self.hdr_len];
        let mut done = 0;
        if at < hdr.len() {
            let k = (hdr.len() - at).min(n);
            self.mem.write(gpa, &hdr[at..at + k])?;
            done = k;
        }
        if done < n {
            let foff = at + done - hdr.len();
            frame.copy_out(foff, &self.mem, gpa + done as u64, n - done)?;
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::frontend::{self, DriverQueue, GuestRam, RawDesc};

    const F: u64 = feature::VERSION_1 | feature::MRG_RXBUF | feature::INDIRECT_DESC;

    fn frame(len: usize, seed: u8) -> Vec<u8> {
        (0..len)
            .map(|i| (i as u8).wrapping_mul(7).wrapping_add(seed))
            .collect()
    }

    fn setup(size: u16, buf: u32, features: u64) -> (GuestRam, DriverQueue, SplitQueue) {
        let mut ram = GuestRam::new(8 << 20).unwrap();
        let dq = DriverQueue::new(&mut ram, size, buf);
        let q = dq.backend_queue(&ram, 1, features);
        (ram, dq, q)
    }

    fn bufs(n: usize) -> Vec<VecBuffer> {
        (0..n).map(|_| VecBuffer::with_capacity(10_000)).collect()
    }

    #[test]
    fn dequeue_strips_header_from_single_chained_and_indirect_chains() {
        let (mut ram, mut dq, mut q) = setup(64, 2048, F);
        let a = frame(60, 1);
        let b = frame(1500, 2);
        let c = frame(3000, 3);
        assert!(dq.add_tx(&mut ram, 12, &a, 2048, false));
        assert!(
            dq.add_tx(&mut ram, 12, &b, 100, false),
            "16 descriptors, header split from data"
        );
        assert!(
            dq.add_tx(&mut ram, 12, &c, 100, true),
            "indirect table of 31 entries"
        );
        let mut out = bufs(8);
        assert_eq!(q.dequeue_burst(&mut out), 3);
        assert_eq!(out[0].data(), &a[..]);
        assert_eq!(out[1].data(), &b[..]);
        assert_eq!(out[2].data(), &c[..]);
        let used = dq.reap(&ram);
        assert_eq!(used.len(), 3, "every chain returned to the guest");
        assert_eq!(q.broken(), None);
        assert_eq!(q.stats().packets, 3);
        assert_eq!(
            dq.used_flags(&ram),
            USED_F_NO_NOTIFY,
            "polling backend asks for no kicks"
        );
    }

    /// The 12-byte header a guest writes: offload fields, then num_buffers.
    fn hdr_bytes(h: NetHdr) -> Vec<u8> {
        let mut b = h.to_bytes().to_vec();
        b.extend_from_slice(&[0, 0]);
        b
    }

    fn tso4(len: u16) -> NetHdr {
        NetHdr {
            flags: net_hdr::FLAG_NEEDS_CSUM,
            gso_type: net_hdr::gso::TCPV4,
            hdr_len: 66,
            gso_size: len,
            csum_start: 34,
            csum_offset: 16,
        }
    }

    #[test]
    fn offload_headers_a_guest_sends_are_checked_and_handed_over() {
        let features = F | net_hdr::OFFLOAD_FEATURES;
        let (mut ram, mut dq, mut q) = setup(64, 2048, features);
        let big = frame(60_000, 9);
        // A 60 KB TSO packet over 30 descriptors, a partial checksum, then three that lie.
        assert!(dq.add_tx_with_hdr(&mut ram, &hdr_bytes(tso4(1448)), &big, 2048, true));
        let partial = NetHdr {
            flags: net_hdr::FLAG_NEEDS_CSUM,
            csum_start: 34,
            csum_offset: 16,
            ..NetHdr::NONE
        };
        let small = frame(100, 1);
        assert!(dq.add_tx_with_hdr(&mut ram, &hdr_bytes(partial), &small, 2048, false));
        let outside = NetHdr {
            csum_start: 90,
            ..partial
        };
        assert!(dq.add_tx_with_hdr(&mut ram, &hdr_bytes(outside), &small, 2048, false));
        let unknown = NetHdr {
            gso_type: 9,
            ..tso4(1448)
        };
        assert!(dq.add_tx_with_hdr(&mut ram, &hdr_bytes(unknown), &small, 2048, false));
        let no_csum = NetHdr {
            flags: 0,
            ..tso4(1448)
        };
        assert!(dq.add_tx_with_hdr(&mut ram, &hdr_bytes(no_csum), &small, 2048, false));
        let mut out: Vec<VecBuffer> = (0..8).map(|_| VecBuffer::with_capacity(65_536)).collect();
        assert_eq!(q.dequeue_burst(&mut out), 2);
        assert_eq!(out[0].data(), &big[..]);
        assert_eq!(out[0].hdr(), tso4(1448));
        assert_eq!(out[1].data(), &small[..]);
        assert_eq!(out[1].hdr(), partial);
        assert_eq!(q.stats().dropped_bad_offload, 3);
        assert_eq!(
            dq.reap(&ram).len(),
            5,
            "dropped chains go back to the guest too"
        );
        assert_eq!(
            q.broken(),
            None,
            "a bad header drops the packet, not the queue"
        );

        // A guest that negotiated no offload: its header is not read at all.
        let (mut ram, mut dq, mut q) = setup(64, 2048, F);
        assert!(dq.add_tx_with_hdr(&mut ram, &hdr_bytes(outside), &small, 2048, false));
        let mut out = bufs(2);
        assert_eq!(q.dequeue_burst(&mut out), 1);
        assert_eq!(out[0].hdr(), NetHdr::NONE);
    }

    #[test]
    fn offload_headers_go_to_guests_that_negotiated_them_and_no_others() {
        let tso = VecBuffer::from_frame(&frame(20_000, 3)).with_hdr(tso4(1448));
        let plain = VecBuffer::from_frame(&frame(80, 4));
        // Negotiated: the header arrives as given (num_buffers after it).
        let mut ram = GuestRam::new(8 << 20).unwrap();
        let mut dq = DriverQueue::new(&mut ram, 64, 2048);
        let mut q = dq.backend_queue(&ram, 0, F | net_hdr::OFFLOAD_FEATURES);
        for _ in 0..32 {
            assert!(dq.add_rx(&ram, 1, 2048));
        }
        assert_eq!(q.enqueue_burst(&[tso.clone(), plain.clone()]), 2);
        let used = dq.reap(&ram);
        let first = dq.rx_bytes(&ram, used[0].0, used[0].1);
        assert_eq!(
            NetHdr::from_bytes(first[..10].try_into().unwrap()),
            tso4(1448)
        );
        let nb = usize::from(u16::from_le_bytes([first[10], first[11]]));
        assert_eq!(
            nb,
            20_012usize.div_ceil(2048),
            "spread over mergeable buffers"
        );
        let last = dq.rx_bytes(&ram, used[nb].0, used[nb].1);
        assert_eq!(
            &last[..10],
            &[0u8; 10],
            "a plain packet gets an empty header"
        );
        // Not negotiated: dropped and counted, the plain packet still delivered.
        let mut ram = GuestRam::new(8 << 20).unwrap();
        let mut dq = DriverQueue::new(&mut ram, 64, 2048);
        let mut q = dq.backend_queue(&ram, 0, F | net_hdr::F_GUEST_CSUM);
        for _ in 0..32 {
            assert!(dq.add_rx(&ram, 1, 2048));
        }
        assert_eq!(q.enqueue_burst(&[tso, plain]), 2);
        assert_eq!(q.stats().dropped_bad_offload, 1);
        assert_eq!(q.stats().packets, 1);
    }

    /// An mbuf-chain-like buffer: fixed 2 KiB segments, a piece never split across two.
    struct Segmented {
        segs: Vec<Vec<u8>>,
        max_segs: usize,
    }

    impl PacketBuffer for Segmented {
        fn reset(&mut self) {
            self.segs.clear();
        }
        fn append(&mut self, len: usize) -> Option<&mut [u8]> {
            let fits = self.segs.last().is_some_and(|s| s.len() + len <= 2048);
            if !fits {
                if self.segs.len() == self.max_segs || len > 2048 {
                    return None;
                }
                self.segs.push(Vec::with_capacity(2048));
            }
            let seg = self.segs.last_mut()?;
            let at = seg.len();
            seg.resize(at + len, 0);
            Some(&mut seg[at..])
        }
        fn len(&self) -> usize {
            self.segs.iter().map(Vec::len).sum()
        }
        fn piece(&self, i: usize) -> Option<&[u8]> {
            self.segs.get(i).map(Vec::as_slice)
        }
    }

    #[test]
    fn segmented_buffers_carry_jumbo_frames_both_ways() {
        let (mut ram, mut dq, mut q) = setup(64, 4096, F);
        let jumbo = frame(9000, 4);
        assert!(
            dq.add_tx(&mut ram, 12, &jumbo, 1000, false),
            "odd-sized guest pieces"
        );
        assert!(dq.add_tx(&mut ram, 12, &jumbo, 4096, false));
        let mut out: Vec<Segmented> = (0..2)
            .map(|_| Segmented {
                segs: Vec::new(),
                max_segs: 8,
            })
            .collect();
        assert_eq!(q.dequeue_burst(&mut out), 2);
        for o in &out {
            assert!(o.segs.len() > 4, "spread over segments");
            assert_eq!(o.segs.concat(), jumbo);
        }
        let (ram2, mut rxq, _) = setup(64, 1536, F);
        let mut rx = rxq.backend_queue(&ram2, 0, F);
        for _ in 0..16 {
            assert!(rxq.add_rx(&ram2, 1, 1536));
        }
        assert_eq!(rx.enqueue_burst(&out), 2);
        assert_eq!(rxq.receive(&ram2, 12, true), vec![jumbo.clone(), jumbo]);
        // Too few segments: dropped and counted, not truncated.
        let mut tiny = [Segmented {
            segs: Vec::new(),
            max_segs: 2,
        }];
        assert!(dq.add_tx(&mut ram, 12, &frame(9000, 1), 4096, false));
        assert_eq!(q.dequeue_burst(&mut tiny), 0);
        assert_eq!(q.stats().dropped_too_big, 1);
    }

    #[test]
    fn dequeue_drops_oversize_and_headerless_packets_but_returns_their_chains() {
        let (mut ram, mut dq, mut q) = setup(16, 2048, F);
        assert!(dq.add_tx(&mut ram, 12, &frame(1000, 0), 2048, false));
        assert!(dq.add_tx(&mut ram, 0, &[1, 2, 3], 2048, false));
        assert!(dq.add_tx(&mut ram, 12, &frame(64, 9), 2048, false));
        let mut small = [VecBuffer::with_capacity(100), VecBuffer::with_capacity(100)];
        assert_eq!(q.dequeue_burst(&mut small), 1);
        assert_eq!(small[0].data(), &frame(64, 9)[..]);
        let s = q.stats();
        assert_eq!((s.dropped_too_big, s.dropped_malformed), (1, 1));
        assert_eq!(dq.reap(&ram).len(), 3);
    }

    #[test]
    fn enqueue_fills_rx_buffers_with_header_and_frame() {
        let (mut ram, mut rxq, _) = setup(64, 2048, F);
        let mut q = rxq.backend_queue(&ram, 0, feature::VERSION_1);
        for _ in 0..4 {
            assert!(rxq.add_rx(&ram, 1, 2048));
        }
        let pkts: Vec<VecBuffer> = (0..3)
            .map(|i| VecBuffer::from_frame(&frame(60 + i * 500, i as u8)))
            .collect();
        assert_eq!(q.enqueue_burst(&pkts), 3);
        let got = rxq.receive(&ram, 12, false);
        assert_eq!(got.len(), 3);
        for (g, p) in got.iter().zip(&pkts) {
            assert_eq!(&g[..], p.data());
        }
        let _ = &mut ram;
    }

    #[test]
    fn large_frames_span_mergeable_buffers_with_num_buffers_set() {
        let (ram, mut rxq, _) = setup(64, 1536, F);
        let mut q = rxq.backend_queue(&ram, 0, F);
        for _ in 0..16 {
            assert!(rxq.add_rx(&ram, 1, 1536));
        }
        let big = VecBuffer::from_frame(&frame(9000, 5));
        let small = VecBuffer::from_frame(&frame(64, 6));
        assert_eq!(q.enqueue_burst(&[big.clone(), small.clone()]), 2);
        let got = rxq.receive(&ram, 12, true);
        assert_eq!(got.len(), 2);
        assert_eq!(got[0], big.data());
        assert_eq!(got[1], small.data());
    }

    #[test]
    fn non_mergeable_frames_use_chained_rx_descriptors_or_are_dropped() {
        let (ram, mut rxq, _) = setup(64, 1024, F);
        let mut q = rxq.backend_queue(&ram, 0, feature::VERSION_1);
        assert!(rxq.add_rx(&ram, 3, 1024), "one 3072-byte chain");
        let fits = VecBuffer::from_frame(&frame(3000, 1));
        let too_big = VecBuffer::from_frame(&frame(5000, 2));
        assert_eq!(
            q.enqueue_burst(&[too_big, fits.clone()]),
            2,
            "the big one is dropped, the next delivered"
        );
        assert_eq!(q.stats().dropped_too_big, 1);
        let got = rxq.receive(&ram, 12, false);
        assert_eq!(got, vec![fits.data().to_vec()]);
    }

    #[test]
    fn enqueue_without_room_publishes_nothing_and_rolls_back_partial_mergeable_frames() {
        let (ram, mut rxq, _) = setup(16, 1024, F);
        let mut q = rxq.backend_queue(&ram, 0, F);
        let p = VecBuffer::from_frame(&frame(64, 0));
        assert_eq!(
            q.enqueue_burst(std::slice::from_ref(&p)),
            0,
            "no RX buffers posted"
        );
        assert!(rxq.add_rx(&ram, 1, 1024));
        assert!(rxq.add_rx(&ram, 1, 1024));
        let big = VecBuffer::from_frame(&frame(4000, 0));
        assert_eq!(q.enqueue_burst(&[big]), 0, "needs 4 buffers, 2 posted");
        assert_eq!(rxq.used_idx(&ram), 0, "nothing published");
        assert_eq!(q.next_avail(), 0, "rolled back");
        assert_eq!(q.enqueue_burst(&[p.clone(), p.clone()]), 2);
        assert_eq!(rxq.receive(&ram, 12, true).len(), 2);
    }

    #[test]
    fn forward_burst_copies_guest_to_guest_once() {
        let (mut ram_a, mut txa, _) = setup(64, 2048, F);
        let mut src = txa.backend_queue(&ram_a, 1, F);
        let (ram_b, mut rxb, _) = setup(64, 1024, F);
        let mut dst = rxb.backend_queue(&ram_b, 0, F);
        for _ in 0..20 {
            assert!(rxb.add_rx(&ram_b, 1, 1024));
        }
        let frames = [frame(64, 1), frame(1500, 2), frame(9000, 3)];
        assert!(txa.add_tx(&mut ram_a, 12, &frames[0], 2048, false));
        assert!(txa.add_tx(&mut ram_a, 12, &frames[1], 300, false));
        assert!(txa.add_tx(&mut ram_a, 12, &frames[2], 1000, true));
        assert_eq!(forward_burst(&mut src, &mut dst, 32), 3);
        let got = rxb.receive(&ram_b, 12, true);
        assert_eq!(got, frames.to_vec());
        assert_eq!(txa.reap(&ram_a).len(), 3);
        assert_eq!(src.stats().packets, 3);
        assert_eq!(dst.stats().packets, 3);
    }

    #[test]
    fn forward_burst_stops_without_losing_source_packets_when_destination_is_full() {
        let (mut ram_a, mut txa, _) = setup(16, 2048, F);
        let mut src = txa.backend_queue(&ram_a, 1, F);
        let (ram_b, mut rxb, _) = setup(16, 2048, F);
        let mut dst = rxb.backend_queue(&ram_b, 0, F);
        assert!(rxb.add_rx(&ram_b, 1, 2048));
        assert!(txa.add_tx(&mut ram_a, 12, &frame(100, 1), 2048, false));
        assert!(txa.add_tx(&mut ram_a, 12, &frame(100, 2), 2048, false));
        assert_eq!(forward_burst(&mut src, &mut dst, 32), 1);
        assert_eq!(
            src.next_avail(),
            1,
            "second packet stays in the source ring"
        );
        assert!(rxb.add_rx(&ram_b, 1, 2048));
        assert_eq!(forward_burst(&mut src, &mut dst, 32), 1);
        assert_eq!(
            rxb.receive(&ram_b, 12, true),
            vec![frame(100, 1), frame(100, 2)]
        );
    }

    fn eventfd() -> Arc<OwnedFd> {
        Arc::new(
            rustix::event::eventfd(
                0,
                rustix::event::EventfdFlags::NONBLOCK | rustix::event::EventfdFlags::CLOEXEC,
            )
            .unwrap(),
        )
    }

    fn kicks(fd: &OwnedFd) -> u64 {
        let mut b = [0u8; 8];
        match rustix::io::read(fd, &mut b) {
            Ok(8) => u64::from_ne_bytes(b),
            _ => 0,
        }
    }

    fn queue_with_call(
        ram: &GuestRam,
        dq: &DriverQueue,
        features: u64,
        call: &Arc<OwnedFd>,
    ) -> SplitQueue {
        SplitQueue::new(QueueSetup {
            index: 0,
            size: dq.size,
            mem: Arc::clone(ram.memory()),
            desc_gpa: dq.desc,
            avail_gpa: dq.avail,
            used_gpa: dq.used,
            base: 0,
            features,
            call: Some(Arc::clone(call)),
        })
        .unwrap()
    }

    #[test]
    fn call_eventfd_is_written_only_when_the_guest_asks() {
        let (ram, mut rxq, _) = setup(16, 2048, F);
        let call = eventfd();
        let mut q = queue_with_call(&ram, &rxq, feature::VERSION_1, &call);
        let p = [VecBuffer::from_frame(&frame(64, 0))];
        rxq.set_avail_flags(&ram, AVAIL_F_NO_INTERRUPT);
        assert!(rxq.add_rx(&ram, 1, 2048));
        assert_eq!(q.enqueue_burst(&p), 1);
        assert_eq!(kicks(&call), 0, "polling guest: no interrupt");
        rxq.set_avail_flags(&ram, 0);
        assert!(rxq.add_rx(&ram, 1, 2048));
        assert_eq!(q.enqueue_burst(&p), 1);
        assert_eq!(
            kicks(&call),
            1,
            "interrupt-driven guest gets one kick per burst"
        );
    }

    #[test]
    fn event_idx_kicks_only_when_used_event_is_crossed() {
        let (ram, mut rxq, _) = setup(16, 2048, F);
        let call = eventfd();
        let mut q = queue_with_call(&ram, &rxq, F | feature::EVENT_IDX, &call);
        let p = [VecBuffer::from_frame(&frame(64, 0))];
        for _ in 0..4 {
            assert!(rxq.add_rx(&ram, 1, 2048));
        }
        rxq.set_used_event(&ram, 2); // wake me when used idx passes 2
        assert_eq!(q.enqueue_burst(&p), 1); // used 0 -> 1
        assert_eq!(q.enqueue_burst(&p), 1); // 1 -> 2
        assert_eq!(kicks(&call), 0);
        assert_eq!(q.enqueue_burst(&p), 1); // 2 -> 3 crosses 2
        assert_eq!(kicks(&call), 1);
        // avail_event is kept behind the ring so the guest never needs to kick us.
        let avail_event = {
            let b = ram.read(rxq.used + 4 + 8 * 16, 2);
            u16::from_le_bytes([b[0], b[1]])
        };
        assert_eq!(avail_event, q.next_avail().wrapping_sub(1));
    }

    fn assert_broken(
        mut q: SplitQueue,
        ram: &GuestRam,
        dq: &DriverQueue,
        want: fn(&Broken) -> bool,
    ) {
        let mut out = bufs(4);
        assert_eq!(q.dequeue_burst(&mut out), 0);
        let b = q.broken();
        assert!(b.as_ref().is_some_and(want), "got {b:?}");
        assert_eq!(dq.used_idx(ram), 0, "the bad chain is not completed");
        assert_eq!(q.dequeue_burst(&mut out), 0, "a broken queue stays stopped");
    }

    fn buf(ram: &mut GuestRam) -> u64 {
        let a = ram.alloc(64, 8);
        ram.write(a, &[0u8; 64]);
        a
    }

    #[test]
    fn looping_chain_marks_the_queue_broken() {
        let (mut ram, mut dq, _) = setup(8, 2048, F);
        let a = buf(&mut ram);
        // 0 -> 1 -> 0 -> ...
        dq.write_desc(
            &ram,
            0,
            RawDesc {
                addr: a,
                len: 64,
                flags: DESC_F_NEXT,
                next: 1,
            },
        );
        dq.write_desc(
            &ram,
            1,
            RawDesc {
                addr: a,
                len: 64,
                flags: DESC_F_NEXT,
                next: 0,
            },
        );
        dq.publish(&ram, 0);
        let q = dq.backend_queue(&ram, 1, F);
        assert_broken(q, &ram, &dq, |b| {
            matches!(b, Broken::ChainTooLong { size: 8 })
        });
    }

    #[test]
    fn chain_longer_than_the_queue_marks_the_queue_broken() {
        let (mut ram, mut dq, _) = setup(8, 2048, F);
        let a = buf(&mut ram);
        // 0 -> 1 -> ... -> 7 -> 7: every index is legal, the walk still never ends.
        for i in 0..8u16 {
            dq.write_desc(
                &ram,
                i,
                RawDesc {
                    addr: a,
                    len: 8,
                    flags: DESC_F_NEXT,
                    next: (i + 1).min(7),
                },
            );
        }
        dq.publish(&ram, 0);
        let q = dq.backend_queue(&ram, 1, F);
        assert_broken(q, &ram, &dq, |b| {
            matches!(b, Broken::ChainTooLong { size: 8 })
        });
    }

    #[test]
    fn hostile_descriptors_each_mark_the_queue_broken_with_a_reason() {
        type Case = (
            &'static str,
            fn(u64, u64) -> Vec<RawDesc>,
            u64,
            fn(&Broken) -> bool,
        );
        let cases: Vec<Case> = vec![
            (
                "next out of range",
                |a, _| {
                    vec![RawDesc {
                        addr: a,
                        len: 64,
                        flags: DESC_F_NEXT,
                        next: 8,
                    }]
                },
                F,
                |b| matches!(b, Broken::NextOutOfRange { next: 8, .. }),
            ),
            (
                "address outside memory",
                |_, _| {
                    vec![RawDesc {
                        addr: 0x10,
                        len: 64,
                        flags: 0,
                        next: 0,
                    }]
                },
                F,
                |b| matches!(b, Broken::BadAddress { .. }),
            ),
            (
                "length past the end of memory",
                |a, _| {
                    vec![RawDesc {
                        addr: a,
                        len: u32::MAX,
                        flags: 0,
                        next: 0,
                    }]
                },
                F,
                |b| matches!(b, Broken::BadAddress { .. }),
            ),
            (
                "u64 overflow",
                |_, _| {
                    vec![RawDesc {
                        addr: u64::MAX - 8,
                        len: 64,
                        flags: 0,
                        next: 0,
                    }]
                },
                F,
                |b| matches!(b, Broken::BadAddress { .. }),
            ),
            (
                "writable TX descriptor",
                |a, _| {
                    vec![RawDesc {
                        addr: a,
                        len: 64,
                        flags: DESC_F_WRITE,
                        next: 0,
                    }]
                },
                F,
                |b| matches!(b, Broken::WritableTxDescriptor),
            ),
            (
                "indirect not negotiated",
                |_, t| {
                    vec![RawDesc {
                        addr: t,
                        len: 32,
                        flags: DESC_F_INDIRECT,
                        next: 0,
                    }]
                },
                feature::VERSION_1,
                |b| matches!(b, Broken::IndirectNotNegotiated),
            ),
            (
                "indirect table length",
                |_, t| {
                    vec![RawDesc {
                        addr: t,
                        len: 20,
                        flags: DESC_F_INDIRECT,
                        next: 0,
                    }]
                },
                F,
                |b| matches!(b, Broken::IndirectTableLen { len: 20 }),
            ),
            (
                "empty indirect table",
                |_, t| {
                    vec![RawDesc {
                        addr: t,
                        len: 0,
                        flags: DESC_F_INDIRECT,
                        next: 0,
                    }]
                },
                F,
                |b| matches!(b, Broken::IndirectTableLen { len: 0 }),
            ),
            (
                "indirect with next",
                |_, t| {
                    vec![RawDesc {
                        addr: t,
                        len: 32,
                        flags: DESC_F_INDIRECT | DESC_F_NEXT,
                        next: 1,
                    }]
                },
                F,
                |b| matches!(b, Broken::IndirectWithNext),
            ),
            (
                "indirect table outside memory",
                |_, _| {
                    vec![RawDesc {
                        addr: 0x20,
                        len: 32,
                        flags: DESC_F_INDIRECT,
                        next: 0,
                    }]
                },
                F,
                |b| matches!(b, Broken::BadAddress { .. }),
            ),
        ];
        for (name, descs, features, want) in cases {
            let (mut ram, mut dq, _) = setup(8, 2048, features);
            let a = buf(&mut ram);
            let t = ram.alloc(64, 16);
            // A valid two-entry indirect table at t, used where the case points at it.
            ram.write(
                t,
                &RawDesc {
                    addr: a,
                    len: 32,
                    flags: DESC_F_NEXT,
                    next: 1,
                }
                .to_bytes(),
            );
            ram.write(
                t + 16,
                &RawDesc {
                    addr: a,
                    len: 32,
                    flags: 0,
                    next: 0,
                }
                .to_bytes(),
            );
            for (i, d) in descs(a, t).iter().enumerate() {
                dq.write_desc(&ram, i as u16, *d);
            }
            dq.publish(&ram, 0);
            let q = dq.backend_queue(&ram, 1, features);
            eprintln!("case: {name}");
            assert_broken(q, &ram, &dq, want);
        }
    }

    #[test]
    fn nested_and_looping_indirect_tables_mark_the_queue_broken() {
        for (name, entries, want) in [
            (
                "nested",
                [
                    RawDesc {
                        addr: 0,
                        len: 32,
                        flags: DESC_F_INDIRECT,
                        next: 0,
                    },
                    RawDesc::default(),
                ],
                "nested",
            ),
            (
                "looping",
                [
                    RawDesc {
                        addr: 0,
                        len: 8,
                        flags: DESC_F_NEXT,
                        next: 1,
                    },
                    RawDesc {
                        addr: 0,
                        len: 8,
                        flags: DESC_F_NEXT,
                        next: 0,
                    },
                ],
                "loop",
            ),
            (
                "next past table",
                [
                    RawDesc {
                        addr: 0,
                        len: 8,
                        flags: DESC_F_NEXT,
                        next: 2,
                    },
                    RawDesc::default(),
                ],
                "next",
            ),
        ] {
            let (mut ram, mut dq, _) = setup(8, 2048, F);
            let a = buf(&mut ram);
            let t = ram.alloc(32, 16);
            for (i, e) in entries.iter().enumerate() {
                let addr = if e.flags & DESC_F_INDIRECT != 0 { t } else { a };
                ram.write(t + 16 * i as u64, &RawDesc { addr, ..*e }.to_bytes());
            }
            dq.write_desc(
                &ram,
                0,
                RawDesc {
                    addr: t,
                    len: 32,
                    flags: DESC_F_INDIRECT,
                    next: 0,
                },
            );
            dq.publish(&ram, 0);
            let q = dq.backend_queue(&ram, 1, F);
            eprintln!("case: {name}");
            assert_broken(
                q,
                &ram,
                &dq,
                match want {
                    "nested" => |b| matches!(b, Broken::NestedIndirect),
                    "loop" => |b| matches!(b, Broken::ChainTooLong { size: 2 }),
                    _ => |b| matches!(b, Broken::NextOutOfRange { next: 2, size: 2 }),
                },
            );
        }
    }

    #[test]
    fn head_out_of_range_and_avail_index_jump_mark_the_queue_broken() {
        let (ram, mut dq, _) = setup(8, 2048, F);
        dq.publish(&ram, 9);
        let q = dq.backend_queue(&ram, 1, F);
        assert_broken(q, &ram, &dq, |b| {
            matches!(b, Broken::HeadOutOfRange { head: 9 })
        });

        let (ram, mut dq, _) = setup(8, 2048, F);
        dq.set_avail_idx(&ram, 9);
        let q = dq.backend_queue(&ram, 1, F);
        assert_broken(q, &ram, &dq, |b| {
            matches!(b, Broken::AvailIdxJump { last: 0, avail: 9 })
        });
    }

    #[test]
    fn rx_descriptors_not_marked_writable_break_the_queue_not_the_other_devices() {
        let (mut ram, mut rxq, _) = setup(8, 2048, F);
        let a = buf(&mut ram);
        rxq.write_desc(
            &ram,
            0,
            RawDesc {
                addr: a,
                len: 64,
                flags: 0,
                next: 0,
            },
        );
        rxq.publish(&ram, 0);
        let mut bad = rxq.backend_queue(&ram, 0, F);
        let p = [VecBuffer::from_frame(&frame(60, 0))];
        assert_eq!(bad.enqueue_burst(&p), 0);
        assert_eq!(bad.broken(), Some(Broken::ReadOnlyRxDescriptor));
        assert_eq!(
            ram.read(a, 64),
            vec![0u8; 64],
            "nothing written into the read-only buffer"
        );
        // Another device keeps working.
        let (ram2, mut rx2, _) = setup(8, 2048, F);
        let mut good = rx2.backend_queue(&ram2, 0, F);
        assert!(rx2.add_rx(&ram2, 1, 2048));
        assert_eq!(good.enqueue_burst(&p), 1);
        assert_eq!(rx2.receive(&ram2, 12, true), vec![frame(60, 0)]);
    }

    #[test]
    fn rx_buffer_smaller_than_the_header_breaks_the_queue() {
        let (mut ram, mut rxq, _) = setup(8, 2048, F);
        let a = buf(&mut ram);
        rxq.write_desc(
            &ram,
            0,
            RawDesc {
                addr: a,
                len: 4,
                flags: DESC_F_WRITE,
                next: 0,
            },
        );
        rxq.publish(&ram, 0);
        let mut q = rxq.backend_queue(&ram, 0, F);
        assert_eq!(q.enqueue_burst(&[VecBuffer::from_frame(&frame(60, 0))]), 0);
        assert!(matches!(
            q.broken(),
            Some(Broken::RxBufferTooSmall { len: 4, hdr: 12 })
        ));
    }

    /// The hints of a burst run ahead of the checks: a bad chain behind good ones must still
    /// stop the queue at that chain, after the good ones are delivered and completed.
    #[test]
    fn a_bad_chain_behind_prefetched_good_ones_stops_the_queue_there() {
        let ram_end = frontend::GPA_BASE + (8 << 20);
        type BadTail = (&'static str, Option<RawDesc>, fn(&Broken) -> bool);
        let bad_tails: [BadTail; 4] = [
            ("head outside the table", None, |b| {
                matches!(b, Broken::HeadOutOfRange { head: 99 })
            }),
            (
                "buffer past the end of guest memory",
                Some(RawDesc {
                    addr: ram_end + 4096,
                    len: 64,
                    flags: 0,
                    next: 0,
                }),
                |b| matches!(b, Broken::BadAddress { .. }),
            ),
            (
                "buffer straddling the end of guest memory",
                Some(RawDesc {
                    addr: ram_end - 32,
                    len: 64,
                    flags: 0,
                    next: 0,
                }),
                |b| matches!(b, Broken::BadAddress { .. }),
            ),
            (
                "device-writable TX buffer",
                Some(RawDesc {
                    addr: frontend::GPA_BASE,
                    len: 64,
                    flags: DESC_F_WRITE,
                    next: 0,
                }),
                |b| matches!(b, Broken::WritableTxDescriptor),
            ),
        ];
        for (name, bad, want) in bad_tails {
            let (mut ram, mut dq, mut q) = setup(16, 2048, F);
            let good: Vec<Vec<u8>> = (0..3).map(|i| frame(60 + i, i as u8)).collect();
            for f in &good {
                assert!(dq.add_tx(&mut ram, 12, f, 2048, false));
            }
            match bad {
                Some(d) => {
                    dq.write_desc(&ram, 10, d);
                    dq.publish(&ram, 10);
                }
                None => dq.publish(&ram, 99),
            }
            assert!(dq.add_tx(&mut ram, 12, &frame(70, 9), 2048, false));
            let mut out = bufs(8);
            assert_eq!(q.dequeue_burst(&mut out), 3, "{name}");
            for (o, f) in out.iter().zip(&good) {
                assert_eq!(o.data(), &f[..], "{name}");
            }
            assert!(
                q.broken().as_ref().is_some_and(want),
                "{name}: {:?}",
                q.broken()
            );
            assert_eq!(
                dq.reap(&ram).len(),
                3,
                "{name}: the good chains are completed"
            );
            assert_eq!(q.next_avail(), 3, "{name}: stopped at the bad chain");
            assert_eq!(q.dequeue_burst(&mut out), 0, "{name}: stays stopped");
        }
    }

    #[test]
    fn a_bad_rx_chain_behind_prefetched_good_ones_writes_nothing_past_them() {
        let ram_end = frontend::GPA_BASE + (8 << 20);
        let (ram, mut rxq, _) = setup(16, 2048, F);
        let mut q = rxq.backend_queue(&ram, 0, F);
        // The last 64 bytes of guest memory, marked; the bad chain's buffer starts inside them
        // and runs past the end, so a write-intent hint there must not turn into a write.
        let canary = vec![0xa5u8; 64];
        ram.write(ram_end - 64, &canary);
        assert!(rxq.add_rx(&ram, 1, 2048));
        assert!(rxq.add_rx(&ram, 1, 2048));
        rxq.write_desc(
            &ram,
            10,
            RawDesc {
                addr: ram_end - 32,
                len: 2048,
                flags: DESC_F_WRITE,
                next: 0,
            },
        );
        rxq.publish(&ram, 10);
        assert!(rxq.add_rx(&ram, 1, 2048));
        let pkts: Vec<VecBuffer> = (0..4)
            .map(|i| VecBuffer::from_frame(&frame(64, i)))
            .collect();
        assert_eq!(q.enqueue_burst(&pkts), 2);
        assert!(
            matches!(q.broken(), Some(Broken::BadAddress { .. })),
            "{:?}",
            q.broken()
        );
        assert_eq!(
            rxq.receive(&ram, 12, true),
            vec![frame(64, 0), frame(64, 1)]
        );
        assert_eq!(ram.read(ram_end - 64, 64), canary, "nothing written there");
    }

    #[test]
    fn bursts_longer_than_one_round_of_hints_carry_every_frame_in_order() {
        let n = 3 * usize::from(PREFETCH_AHEAD) + 5;
        let frames: Vec<Vec<u8>> = (0..n).map(|i| frame(60 + i % 40, i as u8)).collect();
        let (mut ram, mut dq, mut q) = setup(128, 2048, F);
        for f in &frames {
            assert!(dq.add_tx(&mut ram, 12, f, 2048, false));
        }
        let mut out = bufs(n);
        assert_eq!(q.dequeue_burst(&mut out), n);
        for (o, f) in out.iter().zip(&frames) {
            assert_eq!(o.data(), &f[..]);
        }
        assert_eq!(dq.reap(&ram).len(), n);

        let (ram2, mut rxq, _) = setup(128, 2048, F);
        let mut rx = rxq.backend_queue(&ram2, 0, F);
        for _ in 0..n {
            assert!(rxq.add_rx(&ram2, 1, 2048));
        }
        assert_eq!(rx.enqueue_burst(&out), n);
        assert_eq!(rxq.receive(&ram2, 12, true), frames);

        // And guest to guest, in one call.
        for f in &frames {
            assert!(dq.add_tx(&mut ram, 12, f, 2048, false));
        }
        for _ in 0..n {
            assert!(rxq.add_rx(&ram2, 1, 2048));
        }
        assert_eq!(forward_burst(&mut q, &mut rx, n), n);
        assert_eq!(rxq.receive(&ram2, 12, true), frames);
    }

    #[test]
    fn chains_with_more_segments_than_the_fast_path_follows_are_dropped_not_followed() {
        let (mut ram, mut dq, mut q) = setup(128, 2048, F);
        assert!(
            dq.add_tx(&mut ram, 12, &frame(100, 0), 1, false),
            "112 one-byte descriptors"
        );
        assert!(dq.add_tx(&mut ram, 12, &frame(10, 1), 2048, false));
        let mut out = bufs(4);
        assert_eq!(q.dequeue_burst(&mut out), 1);
        assert_eq!(out[0].data(), &frame(10, 1)[..]);
        assert_eq!(q.stats().dropped_fragmented, 1);
        assert_eq!(q.broken(), None);
    }
}
