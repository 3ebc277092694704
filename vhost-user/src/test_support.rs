//! Fixtures the crate's unit tests share (split and packed virtqueues, session).

use crate::virtqueue::{feature, VecBuffer};

/// The features the queue tests negotiate unless they say otherwise.
pub(crate) const F: u64 = feature::VERSION_1 | feature::MRG_RXBUF | feature::INDIRECT_DESC;

/// A `len`-byte test frame; `seed` tells frames apart.
pub(crate) fn frame(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(7).wrapping_add(seed))
        .collect()
}

/// `n` empty packet buffers of `capacity` bytes each.
pub(crate) fn bufs_of(n: usize, capacity: usize) -> Vec<VecBuffer> {
    (0..n).map(|_| VecBuffer::with_capacity(capacity)).collect()
}

/// `n` empty packet buffers, each large enough for any test frame but the jumbo ones.
pub(crate) fn bufs(n: usize) -> Vec<VecBuffer> {
    bufs_of(n, 10_000)
}
