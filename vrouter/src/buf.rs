//! The packet buffer the pipeline works on: shaped after a DPDK mbuf (a contiguous first
//! segment with headroom in front and tailroom behind, possibly followed by more segments of
//! payload), so `vrouterd` can implement it for a `pmd_shim::Mbuf` newtype while tests use
//! [`VecBuf`] (one segment) and [`SegBuf`] (a chain).

use crate::offload::Offload;

/// Why a buffer operation could not be done. Nothing is changed when one is returned.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum BufError {
    /// `prepend(n)` asked for more than the headroom in front of the data.
    #[error("prepend of {need} bytes needs headroom, only {have} available")]
    NoHeadroom { need: usize, have: usize },
    /// `append(n)` asked for more than the tailroom behind the data.
    #[error("append of {need} bytes needs tailroom, only {have} available")]
    NoTailroom { need: usize, have: usize },
    /// `adj(n)` / `trim(n)` asked to remove more than the data holds.
    #[error("cannot remove {need} bytes from {have} bytes of data")]
    TooShort { need: usize, have: usize },
}

/// One packet: its first segment, where every header lies, and for large packets (jumbo
/// frames, GSO) further segments of payload the pipeline never reads. Every operation is O(1)
/// (or O(n) in the bytes it touches) and never allocates.
pub trait PacketBuf {
    /// The first segment's bytes (all of a packet that fits one segment).
    fn data(&self) -> &[u8];
    /// The first segment's bytes, writable.
    fn data_mut(&mut self) -> &mut [u8];
    /// Bytes free in front of the data.
    fn headroom(&self) -> usize;
    /// Bytes free behind the data.
    fn tailroom(&self) -> usize;
    /// Grow the data by `n` bytes at the front (into the headroom), like `rte_pktmbuf_prepend`.
    fn prepend(&mut self, n: usize) -> Result<(), BufError>;
    /// Remove `n` bytes from the front, like `rte_pktmbuf_adj`.
    fn adj(&mut self, n: usize) -> Result<(), BufError>;
    /// Remove `n` bytes from the end, like `rte_pktmbuf_trim`.
    fn trim(&mut self, n: usize) -> Result<(), BufError>;
    /// Grow the data by `n` bytes at the end (into the tailroom), like `rte_pktmbuf_append`.
    fn append(&mut self, n: usize) -> Result<(), BufError>;
    /// Length of the first segment's data.
    #[inline(always)]
    fn len(&self) -> usize {
        self.data().len()
    }
    /// Whether the data is empty.
    #[inline(always)]
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// Bytes of the whole frame, every segment's.
    #[inline(always)]
    fn frame_len(&self) -> usize {
        self.len()
    }
    /// Keep only the first `n` bytes of the frame (`n` within the first segment), dropping any
    /// further segments.
    #[inline]
    fn truncate(&mut self, n: usize) -> Result<(), BufError> {
        let have = self.len();
        if n > have || self.frame_len() != have {
            return Err(BufError::TooShort { need: n, have });
        }
        self.trim(have - n)
    }
    /// The packet's checksum and segmentation state, as its ingress port described it
    /// ([`Offload::NONE`] for buffers that carry none).
    #[inline(always)]
    fn offload(&self) -> Offload {
        Offload::NONE
    }
    /// Sets the offload state (a buffer that cannot carry one ignores it, and never holds a
    /// packet that had one).
    #[inline(always)]
    fn set_offload(&mut self, _o: Offload) {}
}

/// A boxed buffer is a buffer: moving a `Box` moves a pointer, as moving an mbuf does.
impl<T: PacketBuf + ?Sized> PacketBuf for Box<T> {
    #[inline(always)]
    fn data(&self) -> &[u8] {
        (**self).data()
    }
    #[inline(always)]
    fn data_mut(&mut self) -> &mut [u8] {
        (**self).data_mut()
    }
    #[inline(always)]
    fn headroom(&self) -> usize {
        (**self).headroom()
    }
    #[inline(always)]
    fn tailroom(&self) -> usize {
        (**self).tailroom()
    }
    #[inline(always)]
    fn prepend(&mut self, n: usize) -> Result<(), BufError> {
        (**self).prepend(n)
    }
    #[inline(always)]
    fn adj(&mut self, n: usize) -> Result<(), BufError> {
        (**self).adj(n)
    }
    #[inline(always)]
    fn trim(&mut self, n: usize) -> Result<(), BufError> {
        (**self).trim(n)
    }
    #[inline(always)]
    fn append(&mut self, n: usize) -> Result<(), BufError> {
        (**self).append(n)
    }
    #[inline(always)]
    fn len(&self) -> usize {
        (**self).len()
    }
    #[inline(always)]
    fn frame_len(&self) -> usize {
        (**self).frame_len()
    }
    #[inline(always)]
    fn truncate(&mut self, n: usize) -> Result<(), BufError> {
        (**self).truncate(n)
    }
    #[inline(always)]
    fn offload(&self) -> Offload {
        (**self).offload()
    }
    #[inline(always)]
    fn set_offload(&mut self, o: Offload) {
        (**self).set_offload(o)
    }
}

/// A heap buffer with headroom, for tests, benchmarks and tools. It allocates once, when made.
#[derive(Clone, PartialEq, Eq)]
pub struct VecBuf {
    storage: Vec<u8>,
    start: usize,
    end: usize,
}

impl VecBuf {
    /// DPDK's default mbuf headroom (`RTE_PKTMBUF_HEADROOM`).
    pub const DEFAULT_HEADROOM: usize = 128;

    /// An empty buffer with `headroom` bytes in front and `capacity` bytes behind.
    pub fn with_room(headroom: usize, capacity: usize) -> Self {
        VecBuf {
            storage: vec![0; headroom + capacity],
            start: headroom,
            end: headroom,
        }
    }

    /// A buffer holding `frame`, with DPDK's default headroom and 2 KiB of room in total behind.
    pub fn from_frame(frame: &[u8]) -> Self {
        let mut b = Self::with_room(Self::DEFAULT_HEADROOM, frame.len().max(2048));
        b.end = b.start + frame.len();
        b.storage[b.start..b.end].copy_from_slice(frame);
        b
    }

    /// Replace the data with `frame`, keeping the default headroom (reuse without allocating
    /// when it fits).
    pub fn reset_to(&mut self, frame: &[u8]) {
        let head = Self::DEFAULT_HEADROOM.min(self.storage.len());
        if self.storage.len() < head + frame.len() {
            self.storage.resize(head + frame.len(), 0);
        }
        self.start = head;
        self.end = head + frame.len();
        self.storage[self.start..self.end].copy_from_slice(frame);
    }
}

/// The data, as [`PacketBuf::data`].
impl AsRef<[u8]> for VecBuf {
    #[inline(always)]
    fn as_ref(&self) -> &[u8] {
        self.data()
    }
}

impl std::fmt::Debug for VecBuf {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "VecBuf(len {}, headroom {})", self.len(), self.start)
    }
}

impl PacketBuf for VecBuf {
    #[inline(always)]
    fn data(&self) -> &[u8] {
        &self.storage[self.start..self.end]
    }
    #[inline(always)]
    fn data_mut(&mut self) -> &mut [u8] {
        &mut self.storage[self.start..self.end]
    }
    #[inline(always)]
    fn headroom(&self) -> usize {
        self.start
    }
    #[inline(always)]
    fn tailroom(&self) -> usize {
        self.storage.len() - self.end
    }
    #[inline(always)]
    fn len(&self) -> usize {
        self.end - self.start
    }
    #[inline(always)]
    fn prepend(&mut self, n: usize) -> Result<(), BufError> {
        if n > self.start {
            return Err(BufError::NoHeadroom {
                need: n,
                have: self.start,
            });
        }
        self.start -= n;
        Ok(())
    }
    #[inline(always)]
    fn adj(&mut self, n: usize) -> Result<(), BufError> {
        if n > self.end - self.start {
            return Err(BufError::TooShort {
                need: n,
                have: self.end - self.start,
            });
        }
        self.start += n;
        Ok(())
    }
    #[inline(always)]
    fn trim(&mut self, n: usize) -> Result<(), BufError> {
        if n > self.end - self.start {
            return Err(BufError::TooShort {
                need: n,
                have: self.end - self.start,
            });
        }
        self.end -= n;
        Ok(())
    }
    #[inline(always)]
    fn append(&mut self, n: usize) -> Result<(), BufError> {
        let have = self.tailroom();
        if n > have {
            return Err(BufError::NoTailroom { need: n, have });
        }
        self.end += n;
        Ok(())
    }
}

/// A packet in segments, for tests: a [`VecBuf`] first segment holding the headers, then
/// payload bytes the pipeline must carry without reading (as an mbuf chain does), and offload
/// state (a [`VecBuf`] carries none: it stays as small as the pointer-sized buffers of
/// vrouterd, so benchmarks on it measure what vrouterd runs).
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct SegBuf {
    pub head: VecBuf,
    pub tail: Vec<u8>,
    pub offload: Offload,
}

impl SegBuf {
    /// `frame` with its first `head` bytes in the first segment and the rest after it.
    pub fn split(frame: &[u8], head: usize) -> Self {
        let head = head.min(frame.len());
        SegBuf {
            head: VecBuf::from_frame(&frame[..head]),
            tail: frame[head..].to_vec(),
            offload: Offload::NONE,
        }
    }

    /// The whole frame, every segment's bytes in order.
    pub fn to_vec(&self) -> Vec<u8> {
        let mut v = self.head.data().to_vec();
        v.extend_from_slice(&self.tail);
        v
    }
}

impl PacketBuf for SegBuf {
    fn data(&self) -> &[u8] {
        self.head.data()
    }
    fn data_mut(&mut self) -> &mut [u8] {
        self.head.data_mut()
    }
    fn headroom(&self) -> usize {
        self.head.headroom()
    }
    fn tailroom(&self) -> usize {
        if self.tail.is_empty() {
            self.head.tailroom()
        } else {
            0
        }
    }
    fn prepend(&mut self, n: usize) -> Result<(), BufError> {
        self.head.prepend(n)
    }
    fn adj(&mut self, n: usize) -> Result<(), BufError> {
        self.head.adj(n)
    }
    fn trim(&mut self, n: usize) -> Result<(), BufError> {
        // Like DPDK's, from the last segment only.
        if self.tail.is_empty() {
            return self.head.trim(n);
        }
        let have = self.tail.len();
        if n > have {
            return Err(BufError::TooShort { need: n, have });
        }
        self.tail.truncate(have - n);
        Ok(())
    }
    fn append(&mut self, n: usize) -> Result<(), BufError> {
        if !self.tail.is_empty() {
            return Err(BufError::NoTailroom { need: n, have: 0 });
        }
        self.head.append(n)
    }
    fn frame_len(&self) -> usize {
        self.head.len() + self.tail.len()
    }
    fn truncate(&mut self, n: usize) -> Result<(), BufError> {
        self.tail.clear();
        self.head.truncate(n)
    }
    fn offload(&self) -> Offload {
        self.offload
    }
    fn set_offload(&mut self, o: Offload) {
        self.offload = o;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prepend_adj_trim_append_move_the_window_and_refuse_overruns() {
        let mut b = VecBuf::with_room(8, 16);
        b.append(4).unwrap();
        b.data_mut().copy_from_slice(&[1, 2, 3, 4]);
        b.prepend(2).unwrap();
        assert_eq!(b.len(), 6);
        assert_eq!(&b.data()[2..], &[1, 2, 3, 4]);
        assert_eq!(b.prepend(7), Err(BufError::NoHeadroom { need: 7, have: 6 }));
        b.adj(3).unwrap();
        assert_eq!(b.data(), &[2, 3, 4]);
        b.trim(1).unwrap();
        assert_eq!(b.data(), &[2, 3]);
        assert_eq!(b.trim(3), Err(BufError::TooShort { need: 3, have: 2 }));
        assert_eq!(
            b.append(100),
            Err(BufError::NoTailroom {
                need: 100,
                have: 13
            })
        );
        assert_eq!(b.data(), &[2, 3], "a refused operation changes nothing");
    }
}
