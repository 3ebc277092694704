//! UDP headers (RFC 768).

use super::{be16, put16, WireError};

pub const HEADER_LEN: usize = 8;
pub const PORT_VXLAN: u16 = 4789;
pub const PORT_MPLS_UDP: u16 = 6635;

#[derive(Debug, Clone, Copy)]
pub struct Packet<T: AsRef<[u8]>> {
    buf: T,
}

impl<T: AsRef<[u8]>> Packet<T> {
    #[inline]
    pub fn new_unchecked(buf: T) -> Self {
        Packet { buf }
    }
    /// Checks the header fits and that the length field is at least 8 and within the buffer.
    #[inline]
    pub fn new_checked(buf: T) -> Result<Self, WireError> {
        let avail = buf.as_ref().len();
        Self::new_checked_in(buf, avail)
    }

    /// [`Packet::new_checked`] for a datagram whose header is in `buf` and whose payload
    /// continues in further segments: the length field is checked against `frame_avail`, the
    /// bytes the whole frame holds from the header on.
    #[inline]
    pub fn new_checked_in(buf: T, frame_avail: usize) -> Result<Self, WireError> {
        let b = buf.as_ref();
        if b.len() < HEADER_LEN {
            return Err(WireError::Truncated);
        }
        let l = usize::from(be16(b, 4));
        if l < HEADER_LEN {
            return Err(WireError::Malformed);
        }
        if l > frame_avail.max(b.len()) {
            return Err(WireError::Truncated);
        }
        Ok(Packet { buf })
    }
    #[inline]
    pub fn src_port(&self) -> u16 {
        be16(self.buf.as_ref(), 0)
    }
    #[inline]
    pub fn dst_port(&self) -> u16 {
        be16(self.buf.as_ref(), 2)
    }
    #[inline]
    pub fn len(&self) -> u16 {
        be16(self.buf.as_ref(), 4)
    }
    #[inline]
    pub fn is_empty(&self) -> bool {
        self.len() as usize == HEADER_LEN
    }
    #[inline]
    pub fn checksum(&self) -> u16 {
        be16(self.buf.as_ref(), 6)
    }
    #[inline]
    pub fn payload(&self) -> &[u8] {
        &self.buf.as_ref()[HEADER_LEN..usize::from(self.len())]
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Packet<T> {
    #[inline]
    pub fn set_src_port(&mut self, v: u16) {
        put16(self.buf.as_mut(), 0, v);
    }
    #[inline]
    pub fn set_dst_port(&mut self, v: u16) {
        put16(self.buf.as_mut(), 2, v);
    }
    #[inline]
    pub fn set_len(&mut self, v: u16) {
        put16(self.buf.as_mut(), 4, v);
    }
    #[inline]
    pub fn set_checksum(&mut self, v: u16) {
        put16(self.buf.as_mut(), 6, v);
    }
}
