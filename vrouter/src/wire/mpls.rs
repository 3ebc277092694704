//! One MPLS label stack entry (RFC 3032): label (20 bits), traffic class (3), bottom of stack
//! (1), TTL (8).

use super::{be32, put32, WireError};

pub const ENTRY_LEN: usize = 4;
/// Largest label value.
pub const MAX_LABEL: u32 = (1 << 20) - 1;

#[derive(Debug, Clone, Copy)]
pub struct Entry<T: AsRef<[u8]>> {
    buf: T,
}

impl<T: AsRef<[u8]>> Entry<T> {
    #[inline]
    pub fn new_unchecked(buf: T) -> Self {
        Entry { buf }
    }
    #[inline]
    pub fn new_checked(buf: T) -> Result<Self, WireError> {
        if buf.as_ref().len() < ENTRY_LEN {
            return Err(WireError::Truncated);
        }
        Ok(Entry { buf })
    }
    #[inline]
    pub fn label(&self) -> u32 {
        be32(self.buf.as_ref(), 0) >> 12
    }
    #[inline]
    pub fn tc(&self) -> u8 {
        ((be32(self.buf.as_ref(), 0) >> 9) & 7) as u8
    }
    #[inline]
    pub fn bottom_of_stack(&self) -> bool {
        be32(self.buf.as_ref(), 0) & 0x100 != 0
    }
    #[inline]
    pub fn ttl(&self) -> u8 {
        self.buf.as_ref()[3]
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Entry<T> {
    #[inline]
    pub fn set(&mut self, label: u32, tc: u8, bos: bool, ttl: u8) {
        let v = ((label & MAX_LABEL) << 12)
            | (u32::from(tc & 7) << 9)
            | (u32::from(bos) << 8)
            | u32::from(ttl);
        put32(self.buf.as_mut(), 0, v);
    }
}
