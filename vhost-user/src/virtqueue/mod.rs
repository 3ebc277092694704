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
//!
//! Rooms: `buffer` is what the fast path fills and drains; [`layout`] says where each ring field
//! lies; `ring` reads the avail ring and publishes the used ring; `chain` walks one descriptor
//! chain; `tx` is the guest's TX side (dequeue), `rx` its RX side (enqueue, mergeable buffers),
//! and `forward` the guest-to-guest copy that joins them.

use std::os::fd::OwnedFd;
use std::sync::Arc;

use crate::memory::{GuestMemory, RingArea};
use crate::net_hdr;
use crate::MemoryError;

mod buffer;
mod chain;
mod forward;
pub mod layout;
pub mod packed;
mod ring;
mod rx;
mod tx;

#[cfg(test)]
mod tests;

pub use buffer::{PacketBuffer, VecBuffer, MAX_APPEND};
pub use chain::Segments;
pub use forward::forward_burst;
pub use packed::PackedQueue;

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
    /// VIRTIO_F_RING_PACKED: the packed ring layout ([`super::PackedQueue`]).
    pub const RING_PACKED: u64 = 1 << 34;
}

/// How many avail entries one round of cache hints covers: a burst. Bounded so one round's lines
/// (descriptors, the first lines of each buffer, used entries) stay within L1 and the core's
/// outstanding-miss capacity; longer bursts get a new round every this many chains.
pub const PREFETCH_AHEAD: u16 = 32;

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
    /// Packed ring: a descriptor of a chain (after its first) not available under the wrap
    /// counter its slot is read with.
    #[error(
        "packed ring: chained descriptor in slot {slot} is not available (wrap counter misuse)"
    )]
    ChainDescNotAvailable { slot: u16 },
    /// Packed ring: a buffer id that names no slot of the ring.
    #[error("packed ring: buffer id {id} is outside the ring")]
    BufferIdOutOfRange { id: u16 },
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
    /// Guest-physical addresses of the three rings: the descriptor table (packed: the
    /// descriptor ring).
    pub desc_gpa: u64,
    /// Avail ring (packed: the driver event suppression area).
    pub avail_gpa: u64,
    /// Used ring (packed: the device event suppression area).
    pub used_gpa: u64,
    /// First avail index to process (`SET_VRING_BASE`; packed: bits 0-14 the slot, bit 15 its
    /// wrap counter).
    pub base: u16,
    /// Negotiated virtio features.
    pub features: u64,
    /// Call eventfd, if the guest wants interrupts.
    pub call: Option<Arc<OwnedFd>>,
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
        let desc = (s.mem).ring_area(
            s.desc_gpa,
            layout::desc::table_len(size),
            layout::desc::ALIGN,
        )?;
        let avail =
            (s.mem).ring_area(s.avail_gpa, layout::avail::len(size), layout::avail::ALIGN)?;
        let used = (s.mem).ring_area(s.used_gpa, layout::used::len(size), layout::used::ALIGN)?;
        let hdr_len = if s.features & (feature::MRG_RXBUF | feature::VERSION_1) != 0 {
            12
        } else {
            10
        };
        let used_idx = used
            .load_u16(layout::used::IDX)
            .ok_or(MemoryError::OutOfRange {
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
            .store_u16(layout::used::FLAGS, USED_F_NO_NOTIFY)
            .ok_or(MemoryError::OutOfRange {
                addr: s.used_gpa,
                len: 2,
            })?;
        q.suppress_kicks();
        Ok(q)
    }

    /// Logs used-ring writes at `gpa` (the ring's `log_guest_addr`) instead of at the ring's own
    /// address, when the memory logs at all (live migration).
    pub fn log_used_at(&mut self, gpa: u64) {
        self.used.set_log_addr(gpa);
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
        mark_broken(&mut self.broken, &self.mem, self.index, "vring", why);
    }

    /// The scratch list for one burst call; [`SplitQueue::put_scratch`] returns it.
    fn take_scratch(&mut self) -> Box<Segments> {
        // Always present between calls; the default is a fallback that never runs.
        self.scratch.take().unwrap_or_default()
    }

    fn put_scratch(&mut self, segs: Box<Segments>) {
        self.scratch = Some(segs);
    }
}

/// Stops a queue (`broken`, first cause kept) for `why`, logged once as `what` `index`. Rings
/// read as zeros after a memory fault and look broken in other ways first: the fault, when there
/// is one, is named as the cause.
fn mark_broken(
    broken: &mut Option<Broken>,
    mem: &GuestMemory,
    index: u16,
    what: &str,
    why: Broken,
) {
    let why = match mem.fault() {
        Some(f) => Broken::MemoryFault { gpa: f.gpa },
        None => why,
    };
    if broken.is_none() {
        tracing::error!(
            queue = index,
            "{what} {index} broken by the guest: {why}; it stays stopped until reconfigured"
        );
        *broken = Some(why);
    }
}

/// A virtqueue of either layout, as negotiated (`VIRTIO_F_RING_PACKED`): what the session lends
/// the forwarding threads. One match per burst call; each layout's burst loop is its own.
#[derive(Debug)]
pub enum Virtqueue {
    /// The split layout.
    Split(SplitQueue),
    /// The packed layout.
    Packed(PackedQueue),
}

macro_rules! either {
    ($self:expr, $q:ident => $e:expr) => {
        match $self {
            Virtqueue::Split($q) => $e,
            Virtqueue::Packed($q) => $e,
        }
    };
}

impl Virtqueue {
    /// Builds the queue in the layout the features name.
    pub fn new(s: QueueSetup) -> Result<Self, MemoryError> {
        if s.features & feature::RING_PACKED != 0 {
            PackedQueue::new(s).map(Self::Packed)
        } else {
            SplitQueue::new(s).map(Self::Split)
        }
    }

    /// Guest TX → `bufs` (see [`SplitQueue::dequeue_burst`]).
    #[inline]
    pub fn dequeue_burst<B: PacketBuffer>(&mut self, bufs: &mut [B]) -> usize {
        either!(self, q => q.dequeue_burst(bufs))
    }

    /// `pkts` → guest RX (see [`SplitQueue::enqueue_burst`]).
    #[inline]
    pub fn enqueue_burst<B: PacketBuffer>(&mut self, pkts: &[B]) -> usize {
        either!(self, q => q.enqueue_burst(pkts))
    }

    /// Vring index.
    pub fn index(&self) -> u16 {
        either!(self, q => q.index())
    }

    /// Log used-ring writes at guest address `gpa` (VHOST_VRING_F_LOG) instead of where the
    /// ring lies. A split ring only: a packed ring's used descriptors are written into its
    /// descriptor ring, whose own pages are logged as they are written, which is exactly what
    /// the frontend must copy again.
    pub fn log_used_at(&mut self, gpa: u64) {
        if let Self::Split(q) = self {
            q.log_used_at(gpa);
        }
    }

    /// The virtio features the guest negotiated.
    pub fn features(&self) -> u64 {
        either!(self, q => q.features())
    }

    /// Queue size.
    pub fn size(&self) -> u16 {
        either!(self, q => q.size())
    }

    /// Where the queue stands, as `GET_VRING_BASE` reports it (split: the next avail index;
    /// packed: the next slot with its wrap counter in bit 15).
    pub fn next_avail(&self) -> u16 {
        either!(self, q => q.next_avail())
    }

    /// Whether an access to this queue's guest memory has faulted.
    pub fn memory_faulted(&self) -> bool {
        either!(self, q => q.memory_faulted())
    }

    /// Why the queue is broken, if it is.
    pub fn broken(&self) -> Option<Broken> {
        either!(self, q => q.broken())
    }

    /// Counters.
    pub fn stats(&self) -> QueueStats {
        either!(self, q => q.stats())
    }

    /// Length of the virtio-net header on this queue.
    pub fn header_len(&self) -> usize {
        either!(self, q => q.header_len())
    }

    /// Whether this is a packed ring.
    pub fn is_packed(&self) -> bool {
        matches!(self, Self::Packed(_))
    }
}
