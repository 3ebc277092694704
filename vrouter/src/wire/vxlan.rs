//! VXLAN headers (RFC 7348): flags (I bit), 24-bit VNI.

use super::{be32, put32, WireError};

pub const HEADER_LEN: usize = 8;
const FLAG_I: u8 = 0x08;

#[derive(Debug, Clone, Copy)]
pub struct Packet<T: AsRef<[u8]>> {
    buf: T,
}

impl<T: AsRef<[u8]>> Packet<T> {
    /// Checks the length and that the I flag (valid VNI) is set.
    #[inline]
    pub fn new_checked(buf: T) -> Result<Self, WireError> {
        let b = buf.as_ref();
        if b.len() < HEADER_LEN {
            return Err(WireError::Truncated);
        }
        if b[0] & FLAG_I == 0 {
            return Err(WireError::Malformed);
        }
        Ok(Packet { buf })
    }
    #[inline]
    pub fn flags(&self) -> u8 {
        self.buf.as_ref()[0]
    }
    #[inline]
    pub fn vni(&self) -> u32 {
        be32(self.buf.as_ref(), 4) >> 8
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Packet<T> {
    #[inline]
    pub fn new_unchecked_mut(buf: T) -> Self {
        Packet { buf }
    }
    /// Flags = I, reserved zero, the given VNI.
    #[inline]
    pub fn fill(&mut self, vni: u32) {
        put32(self.buf.as_mut(), 0, u32::from(FLAG_I) << 24);
        put32(self.buf.as_mut(), 4, (vni & 0x00ff_ffff) << 8);
    }
}
