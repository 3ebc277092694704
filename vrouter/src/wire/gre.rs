//! GRE headers (RFC 2784 / RFC 2890): flags, protocol and the optional checksum, key and
//! sequence words.

use super::{be16, put16, WireError};

pub const BASE_LEN: usize = 4;
const C: u16 = 0x8000;
const K: u16 = 0x2000;
const S: u16 = 0x1000;

#[derive(Debug, Clone, Copy)]
pub struct Packet<T: AsRef<[u8]>> {
    buf: T,
}

impl<T: AsRef<[u8]>> Packet<T> {
    #[inline]
    pub fn new_unchecked(buf: T) -> Self {
        Packet { buf }
    }
    /// Checks version 0, no routing bit, and that the optional words fit.
    #[inline]
    pub fn new_checked(buf: T) -> Result<Self, WireError> {
        let b = buf.as_ref();
        if b.len() < BASE_LEN {
            return Err(WireError::Truncated);
        }
        let f = be16(b, 0);
        if f & 0x0007 != 0 || f & 0x4000 != 0 {
            return Err(WireError::Malformed);
        }
        let p = Packet { buf };
        if p.buf.as_ref().len() < p.header_len() {
            return Err(WireError::Truncated);
        }
        Ok(p)
    }
    #[inline]
    pub fn flags(&self) -> u16 {
        be16(self.buf.as_ref(), 0)
    }
    #[inline]
    pub fn has_checksum(&self) -> bool {
        self.flags() & C != 0
    }
    #[inline]
    pub fn has_key(&self) -> bool {
        self.flags() & K != 0
    }
    #[inline]
    pub fn has_seq(&self) -> bool {
        self.flags() & S != 0
    }
    #[inline]
    pub fn protocol(&self) -> u16 {
        be16(self.buf.as_ref(), 2)
    }
    #[inline]
    pub fn header_len(&self) -> usize {
        BASE_LEN
            + 4 * (usize::from(self.has_checksum())
                + usize::from(self.has_key())
                + usize::from(self.has_seq()))
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Packet<T> {
    /// A 4-byte GRE header: no optional fields, version 0, the given protocol.
    #[inline]
    pub fn fill_basic(&mut self, protocol: u16) {
        put16(self.buf.as_mut(), 0, 0);
        put16(self.buf.as_mut(), 2, protocol);
    }
}
