//! The packet buffer the pipeline works on: shaped after a DPDK mbuf (one contiguous data
//! segment with headroom in front and tailroom behind), so `vrouterd` can implement it for a
//! `pmd_shim::Mbuf` newtype while tests use [`VecBuf`].

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

/// One packet in one contiguous segment. Every operation is O(1) (or O(n) in the bytes it
/// touches) and never allocates.
pub trait PacketBuf {
    /// The packet bytes.
    fn data(&self) -> &[u8];
    /// The packet bytes, writable.
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
    /// Length of the data.
    #[inline(always)]
    fn len(&self) -> usize {
        self.data().len()
    }
    /// Whether the data is empty.
    #[inline(always)]
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
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
