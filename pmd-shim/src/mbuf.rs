//! An owned DPDK packet buffer.

use std::ptr::NonNull;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

use crate::error::{Error, Result};
use crate::sys;

/// Byte offset of the offload word's dynamic field in every mbuf (0: not registered yet).
static OFFLOAD_FIELD: AtomicUsize = AtomicUsize::new(0);
/// The `ol_flags` bit that says the offload word is valid (0: not registered yet). Every path
/// that makes an mbuf (allocation, a PMD's receive) clears `ol_flags`, so a stale word from a
/// packet that used the buffer before is never read as this one's.
static OFFLOAD_FLAG: AtomicU64 = AtomicU64::new(0);

/// Registers the mbuf dynamic field and flag that carry a packet's offload word (see
/// [`Mbuf::offload`]). Idempotent; done by [`crate::Mempool::new`], before any mbuf exists.
pub(crate) fn register_offload() -> Result<()> {
    if OFFLOAD_FLAG.load(Ordering::Acquire) != 0 {
        return Ok(());
    }
    let (mut offset, mut bit) = (0i32, 0i32);
    // SAFETY: plain registration calls on an initialised EAL, writing two ints of ours.
    let r = unsafe { sys::vr_offload_register(&mut offset, &mut bit) };
    if r != 0 || offset <= 0 || !(0..64).contains(&bit) {
        return Err(Error::Mbuf("cannot register the mbuf offload field"));
    }
    OFFLOAD_FIELD.store(offset as usize, Ordering::Release);
    OFFLOAD_FLAG.store(1u64 << bit, Ordering::Release);
    Ok(())
}

/// One packet buffer (possibly the head of a segment chain), owned: freed on drop, exactly once.
///
/// `repr(transparent)` over a non-null pointer, so `Option<Mbuf>` has the layout of
/// `struct rte_mbuf *` and bursts can be handed to DPDK without conversion.
#[repr(transparent)]
pub struct Mbuf(NonNull<sys::rte_mbuf>);

// SAFETY: an mbuf is owned by exactly one `Mbuf` value; moving it to another thread moves that
// ownership. Freeing from any thread is allowed by DPDK (the mempool is thread safe).
unsafe impl Send for Mbuf {}

impl Mbuf {
    /// Takes ownership of a raw mbuf.
    ///
    /// # Safety
    /// `raw` must point to a valid mbuf that nobody else owns or frees.
    pub(crate) unsafe fn from_raw(raw: NonNull<sys::rte_mbuf>) -> Mbuf {
        Mbuf(raw)
    }

    /// Gives up ownership without freeing (the caller passed it to DPDK).
    pub(crate) fn into_raw(self) -> NonNull<sys::rte_mbuf> {
        let raw = self.0;
        std::mem::forget(self);
        raw
    }

    /// The raw pointer, still owned by `self` (for calls that edit the mbuf in place).
    pub(crate) fn as_raw_ptr(&mut self) -> *mut sys::rte_mbuf {
        self.0.as_ptr()
    }

    fn raw(&self) -> &sys::rte_mbuf {
        // SAFETY: we own a valid mbuf for as long as `self` lives.
        unsafe { self.0.as_ref() }
    }

    /// Bytes in this (first) segment.
    pub fn data_len(&self) -> u16 {
        self.raw().data_len
    }

    /// Bytes in the whole packet, all segments.
    pub fn pkt_len(&self) -> u32 {
        self.raw().pkt_len
    }

    /// Number of segments in the chain (1 for a contiguous packet).
    pub fn nb_segs(&self) -> u16 {
        self.raw().nb_segs
    }

    pub fn is_contiguous(&self) -> bool {
        self.nb_segs() == 1
    }

    /// The first segment's data.
    pub fn data(&self) -> &[u8] {
        // SAFETY: buf_addr + data_off .. + data_len lies inside the mbuf's buffer (DPDK
        // invariant kept by every operation of this type), and we own the mbuf.
        unsafe { segment_data(self.0.as_ptr()) }
    }

    /// The first segment's data, writable.
    pub fn data_mut(&mut self) -> &mut [u8] {
        let m = self.raw();
        let len = usize::from(m.data_len);
        // SAFETY: as in `data`; `&mut self` makes this the only reference into the buffer.
        unsafe {
            let start = (m.buf_addr as *mut u8).add(usize::from(m.data_off));
            std::slice::from_raw_parts_mut(start, len)
        }
    }

    /// The whole packet if it is in one segment; `None` for a chain (callers that cannot walk
    /// chains refuse them explicitly).
    pub fn contiguous_data(&self) -> Option<&[u8]> {
        self.is_contiguous().then(|| self.data())
    }

    /// Every segment's data, in order.
    pub fn segments(&self) -> Segments<'_> {
        Segments {
            next: Some(self.0),
            _owner: self,
        }
    }

    /// A copy of the whole packet (all segments); for tests and slow paths.
    pub fn to_vec(&self) -> Vec<u8> {
        let mut v = Vec::with_capacity(self.pkt_len() as usize);
        for seg in self.segments() {
            v.extend_from_slice(seg);
        }
        v
    }

    /// Free bytes in front of the data of the first segment.
    pub fn headroom(&self) -> u16 {
        // SAFETY: reads fields of our valid mbuf.
        unsafe { sys::vr_pktmbuf_headroom(self.0.as_ptr()) }
    }

    /// Free bytes after the data of the last segment.
    pub fn tailroom(&self) -> u16 {
        let mut last = self.0;
        // SAFETY: walking `next` of an owned chain visits valid mbufs only.
        while let Some(n) = NonNull::new(unsafe { last.as_ref() }.next) {
            last = n;
        }
        // SAFETY: `last` is a valid segment of our chain.
        unsafe { sys::vr_pktmbuf_tailroom(last.as_ptr()) }
    }

    /// Grows the packet at the front by `len` bytes of headroom and returns them (uninitialised
    /// contents: whatever the buffer held).
    pub fn prepend(&mut self, len: u16) -> Result<&mut [u8]> {
        // SAFETY: valid owned mbuf; DPDK checks the headroom and returns NULL if short.
        let p = unsafe { sys::vr_pktmbuf_prepend(self.0.as_ptr(), len) };
        if p.is_null() {
            return Err(Error::Mbuf("not enough headroom to prepend"));
        }
        Ok(&mut self.data_mut()[..usize::from(len)])
    }

    /// Removes `len` bytes from the front of the first segment.
    pub fn adj(&mut self, len: u16) -> Result<()> {
        // SAFETY: valid owned mbuf; DPDK refuses (NULL) if len > data_len.
        let p = unsafe { sys::vr_pktmbuf_adj(self.0.as_ptr(), len) };
        if p.is_null() {
            return Err(Error::Mbuf("adj longer than the first segment"));
        }
        Ok(())
    }

    /// Removes `len` bytes from the end of the last segment.
    pub fn trim(&mut self, len: u16) -> Result<()> {
        // SAFETY: valid owned mbuf; DPDK refuses (-1) if len > the last segment's data_len.
        let r = unsafe { sys::vr_pktmbuf_trim(self.0.as_ptr(), len) };
        if r != 0 {
            return Err(Error::Mbuf("trim longer than the last segment"));
        }
        Ok(())
    }

    /// Grows the packet at the end by `len` bytes of tailroom and returns them.
    pub fn append(&mut self, len: u16) -> Result<&mut [u8]> {
        // SAFETY: valid owned mbuf; DPDK checks the tailroom and returns NULL if short.
        let p = unsafe { sys::vr_pktmbuf_append(self.0.as_ptr(), len) };
        if p.is_null() {
            return Err(Error::Mbuf("not enough tailroom to append"));
        }
        // SAFETY: DPDK returned a pointer to `len` bytes inside the last segment's buffer that
        // now belong to this packet; `&mut self` makes the slice unique.
        Ok(unsafe { std::slice::from_raw_parts_mut(p.cast::<u8>(), usize::from(len)) })
    }

    /// Appends `tail` (a packet of its own) as further segments of this packet.
    pub fn chain(&mut self, tail: Mbuf) -> Result<()> {
        let raw_tail = tail.into_raw();
        // SAFETY: both are valid owned mbufs; on success DPDK links `tail` into our chain, which
        // now owns it; on failure (too many segments) ownership stays with us and we free it.
        let r = unsafe { sys::vr_pktmbuf_chain(self.0.as_ptr(), raw_tail.as_ptr()) };
        if r != 0 {
            // SAFETY: the chain refused it; we still own it.
            drop(unsafe { Mbuf::from_raw(raw_tail) });
            return Err(Error::Mbuf(
                "segment chain would exceed DPDK's segment limit",
            ));
        }
        Ok(())
    }

    /// Empties the packet for reuse: later segments are freed, the first gets the default
    /// headroom and no data.
    pub fn reset(&mut self) {
        // SAFETY: we own the whole chain; the tail segments are freed exactly once here and
        // unlinked before the head is reset.
        unsafe { sys::vr_pktmbuf_reset_to_empty(self.0.as_ptr()) };
    }

    /// Moves the data start of an empty mbuf to the buffer start (for follow-on segments).
    pub(crate) fn reset_headroom_to_zero(&mut self) {
        if self.raw().data_len == 0 {
            // SAFETY: an empty segment has no data to lose; we own it exclusively.
            unsafe { (*self.0.as_ptr()).data_off = 0 };
        }
    }

    /// The packet's offload word (checksum and segmentation state; its meaning is the
    /// forwarding plane's), 0 when none was set since the mbuf was allocated or received.
    #[inline]
    pub fn offload(&self) -> u64 {
        let flag = OFFLOAD_FLAG.load(Ordering::Relaxed);
        if flag == 0 || self.raw().ol_flags & flag == 0 {
            return 0;
        }
        let off = OFFLOAD_FIELD.load(Ordering::Relaxed);
        // SAFETY: the registered dynamic field is 8 aligned bytes at `off` inside every mbuf
        // (DPDK keeps the offset within the struct and aligned); we own this one.
        unsafe { std::ptr::read(self.0.as_ptr().cast::<u8>().add(off).cast::<u64>()) }
    }

    /// Sets the offload word (0 clears it).
    #[inline]
    pub fn set_offload(&mut self, word: u64) {
        let flag = OFFLOAD_FLAG.load(Ordering::Relaxed);
        if flag == 0 {
            return;
        }
        let off = OFFLOAD_FIELD.load(Ordering::Relaxed);
        // SAFETY: as in `offload`; `&mut self` makes the write exclusive.
        unsafe {
            let m = self.0.as_ptr();
            if word == 0 {
                (*m).ol_flags &= !flag;
            } else {
                std::ptr::write(m.cast::<u8>().add(off).cast::<u64>(), word);
                (*m).ol_flags |= flag;
            }
        }
    }

    /// Grows the packet by `len` bytes at the end, starting a new segment (from this mbuf's
    /// pool) when the last one is full, and returns them; `len` must fit an empty segment.
    pub fn append_grow(&mut self, len: u16) -> Result<&mut [u8]> {
        // The common case in one step: a single segment with room (DPDK's append checks it).
        let raw = self.raw();
        if raw.nb_segs == 1
            && u32::from(raw.data_off) + u32::from(raw.data_len) + u32::from(len)
                <= u32::from(raw.buf_len)
        {
            return self.append(len);
        }
        // SAFETY: we own the chain; the last segment's tailroom decides where the bytes go.
        let last_room = unsafe { sys::vr_pktmbuf_tailroom(last_segment(self.0.as_ptr())) };
        if last_room < len {
            // SAFETY: allocates from the pool our own mbuf came from, which outlives it.
            let raw = unsafe { sys::vr_pktmbuf_alloc_like(self.0.as_ptr()) };
            let mut seg = match NonNull::new(raw) {
                // SAFETY: a fresh mbuf nobody else owns.
                Some(p) => unsafe { Mbuf::from_raw(p) },
                None => return Err(Error::Mbuf("mempool empty: no segment to grow into")),
            };
            seg.reset_headroom_to_zero();
            if seg.tailroom() < len {
                return Err(Error::Mbuf("append larger than an empty segment"));
            }
            self.chain(seg)?;
        }
        self.append(len)
    }

    /// Asks the device that sends this packet to finish its checksums or segmentation: `req`
    /// says what and where the headers are (DPDK's TX offload request).
    pub fn request_tx_offload(&mut self, req: &TxOffloadRequest) {
        // SAFETY: plain field writes on our exclusively owned mbuf.
        unsafe {
            sys::vr_mbuf_set_tx_offload(
                self.0.as_ptr(),
                req.flags,
                req.l2_len,
                req.l3_len,
                req.l4_len,
                req.tso_segsz,
                req.outer_l2_len,
                req.outer_l3_len,
            )
        };
    }

    /// Keeps the packet's first `len` bytes (within the first segment), freeing every further
    /// segment.
    pub fn truncate(&mut self, len: u16) -> Result<()> {
        // SAFETY: we own the whole chain; the tail segments are freed exactly once, here.
        if unsafe { sys::vr_pktmbuf_truncate(self.0.as_ptr(), len) } != 0 {
            return Err(Error::Mbuf("truncate beyond the first segment"));
        }
        Ok(())
    }

    /// Copies the packet's bytes from `offset` into `dst` (across segments); returns how many
    /// were copied (fewer when the packet ends first).
    pub fn copy_out(&self, offset: usize, dst: &mut [u8]) -> usize {
        let mut at = 0usize;
        let mut done = 0usize;
        for seg in self.segments() {
            let end = at + seg.len();
            if end > offset + done && done < dst.len() {
                let from = offset + done - at;
                let n = (seg.len() - from).min(dst.len() - done);
                dst[done..done + n].copy_from_slice(&seg[from..from + n]);
                done += n;
            }
            at = end;
            if done == dst.len() {
                break;
            }
        }
        done
    }

    /// The RSS hash the NIC computed, if it set one.
    pub fn rss_hash(&self) -> Option<u32> {
        // SAFETY: reads fields of our valid mbuf.
        unsafe {
            (sys::vr_mbuf_has_rss_hash(self.0.as_ptr()) != 0)
                .then(|| sys::vr_mbuf_rss_hash(self.0.as_ptr()))
        }
    }

    /// The input port the mbuf was received on.
    pub fn port(&self) -> u16 {
        self.raw().port
    }

    pub fn set_port(&mut self, port: u16) {
        // SAFETY: plain field write on our exclusively owned mbuf.
        unsafe { (*self.0.as_ptr()).port = port };
    }
}

/// The first segment's bytes, as [`Mbuf::data`].
impl AsRef<[u8]> for Mbuf {
    #[inline(always)]
    fn as_ref(&self) -> &[u8] {
        self.data()
    }
}

impl Drop for Mbuf {
    fn drop(&mut self) {
        // SAFETY: we own the mbuf (and its chain); it is freed exactly once, here.
        unsafe { sys::vr_pktmbuf_free(self.0.as_ptr()) };
    }
}

impl std::fmt::Debug for Mbuf {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Mbuf")
            .field("pkt_len", &self.pkt_len())
            .field("nb_segs", &self.nb_segs())
            .field("headroom", &self.headroom())
            .finish()
    }
}

/// Iterator over the data of each segment of a chain.
pub struct Segments<'a> {
    next: Option<NonNull<sys::rte_mbuf>>,
    _owner: &'a Mbuf,
}

impl<'a> Iterator for Segments<'a> {
    type Item = &'a [u8];
    fn next(&mut self) -> Option<&'a [u8]> {
        let seg = self.next?;
        // SAFETY: `seg` is a segment of a chain borrowed for 'a; DPDK links only valid mbufs.
        self.next = NonNull::new(unsafe { seg.as_ref() }.next);
        // SAFETY: as above; the borrow of the owner keeps the chain alive and unmodified.
        Some(unsafe { segment_data(seg.as_ptr()) })
    }
}

/// A request for the device to finish a packet's checksums or segmentation (DPDK's
/// `RTE_MBUF_F_TX_*` flags and header lengths; for a tunnelled packet the `outer_` lengths are
/// the outer headers' and `l2_len` runs from the outer L4 header to the inner L3 header).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TxOffloadRequest {
    pub flags: u64,
    pub l2_len: u16,
    pub l3_len: u16,
    pub l4_len: u16,
    pub tso_segsz: u16,
    pub outer_l2_len: u16,
    pub outer_l3_len: u16,
}

/// DPDK's TX offload flags, for [`TxOffloadRequest::flags`].
pub mod tx_flags {
    use crate::sys;
    pub const IPV4: u64 = sys::RTE_MBUF_F_TX_IPV4;
    pub const IPV6: u64 = sys::RTE_MBUF_F_TX_IPV6;
    pub const IP_CKSUM: u64 = sys::RTE_MBUF_F_TX_IP_CKSUM;
    pub const TCP_CKSUM: u64 = sys::RTE_MBUF_F_TX_TCP_CKSUM;
    pub const UDP_CKSUM: u64 = sys::RTE_MBUF_F_TX_UDP_CKSUM;
    pub const TCP_SEG: u64 = sys::RTE_MBUF_F_TX_TCP_SEG;
    pub const UDP_SEG: u64 = sys::RTE_MBUF_F_TX_UDP_SEG;
    pub const OUTER_IPV4: u64 = sys::RTE_MBUF_F_TX_OUTER_IPV4;
    pub const OUTER_IP_CKSUM: u64 = sys::RTE_MBUF_F_TX_OUTER_IP_CKSUM;
    pub const TUNNEL_VXLAN: u64 = sys::RTE_MBUF_F_TX_TUNNEL_VXLAN;
    pub const TUNNEL_GRE: u64 = sys::RTE_MBUF_F_TX_TUNNEL_GRE;
    pub const TUNNEL_MPLSINUDP: u64 = sys::RTE_MBUF_F_TX_TUNNEL_MPLSINUDP;
}

/// The last segment of a chain.
///
/// # Safety
/// `m` must be a valid mbuf chain owned by the caller.
unsafe fn last_segment(m: *mut sys::rte_mbuf) -> *mut sys::rte_mbuf {
    let mut seg = m;
    // SAFETY: DPDK links only valid mbufs; the chain ends with a null `next`.
    unsafe {
        while !(*seg).next.is_null() {
            seg = (*seg).next;
        }
    }
    seg
}

/// The data of one segment.
///
/// # Safety
/// `m` must be a valid mbuf that stays alive and unmodified for `'a`.
unsafe fn segment_data<'a>(m: *const sys::rte_mbuf) -> &'a [u8] {
    // SAFETY: caller guarantees `m` is valid; DPDK keeps data_off + data_len within buf_len.
    unsafe {
        let m = &*m;
        let start = (m.buf_addr as *const u8).add(usize::from(m.data_off));
        std::slice::from_raw_parts(start, usize::from(m.data_len))
    }
}
