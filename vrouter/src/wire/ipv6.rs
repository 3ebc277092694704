//! IPv6 fixed headers (RFC 8200).

use super::{be16, be32, put16, put32, WireError};
use std::net::Ipv6Addr;

pub const HEADER_LEN: usize = 40;

pub mod next_header {
    pub const HOP_BY_HOP: u8 = 0;
    pub const TCP: u8 = 6;
    pub const UDP: u8 = 17;
    pub const ROUTING: u8 = 43;
    pub const FRAGMENT: u8 = 44;
    pub const ICMPV6: u8 = 58;
    pub const NO_NEXT: u8 = 59;
    pub const DEST_OPTS: u8 = 60;
}

#[derive(Debug, Clone, Copy)]
pub struct Packet<T: AsRef<[u8]>> {
    buf: T,
}

impl<T: AsRef<[u8]>> Packet<T> {
    #[inline]
    pub fn new_unchecked(buf: T) -> Self {
        Packet { buf }
    }
    #[inline]
    pub fn new_checked(buf: T) -> Result<Self, WireError> {
        let avail = buf.as_ref().len();
        Self::new_checked_in(buf, avail)
    }

    /// [`Packet::new_checked`] for a packet whose header is in `buf` and whose bytes continue
    /// in further segments: the payload length is checked against `frame_avail`, the bytes the
    /// whole frame holds from the header on.
    pub fn new_checked_in(buf: T, frame_avail: usize) -> Result<Self, WireError> {
        let b = buf.as_ref();
        if b.len() < HEADER_LEN {
            return Err(WireError::Truncated);
        }
        if b[0] >> 4 != 6 {
            return Err(WireError::Malformed);
        }
        if frame_avail.max(b.len()) < HEADER_LEN + usize::from(be16(b, 4)) {
            return Err(WireError::Truncated);
        }
        Ok(Packet { buf })
    }
    #[inline]
    pub fn traffic_class(&self) -> u8 {
        (be16(self.buf.as_ref(), 0) >> 4) as u8
    }
    #[inline]
    pub fn flow_label(&self) -> u32 {
        be32(self.buf.as_ref(), 0) & 0x000f_ffff
    }
    #[inline]
    pub fn payload_len(&self) -> u16 {
        be16(self.buf.as_ref(), 4)
    }
    #[inline]
    pub fn next_header(&self) -> u8 {
        self.buf.as_ref()[6]
    }
    #[inline]
    pub fn hop_limit(&self) -> u8 {
        self.buf.as_ref()[7]
    }
    #[inline]
    pub fn src_bytes(&self) -> [u8; 16] {
        let mut a = [0; 16];
        a.copy_from_slice(&self.buf.as_ref()[8..24]);
        a
    }
    #[inline]
    pub fn dst_bytes(&self) -> [u8; 16] {
        let mut a = [0; 16];
        a.copy_from_slice(&self.buf.as_ref()[24..40]);
        a
    }
    #[inline]
    pub fn src(&self) -> Ipv6Addr {
        Ipv6Addr::from(self.src_bytes())
    }
    #[inline]
    pub fn dst(&self) -> Ipv6Addr {
        Ipv6Addr::from(self.dst_bytes())
    }
    #[inline]
    pub fn payload(&self) -> &[u8] {
        &self.buf.as_ref()[HEADER_LEN..HEADER_LEN + usize::from(self.payload_len())]
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Packet<T> {
    /// Version 6, the given traffic class and flow label.
    #[inline]
    pub fn set_version_tc_flow(&mut self, tc: u8, flow: u32) {
        put32(
            self.buf.as_mut(),
            0,
            (6 << 28) | (u32::from(tc) << 20) | (flow & 0xfffff),
        );
    }
    #[inline]
    pub fn set_payload_len(&mut self, v: u16) {
        put16(self.buf.as_mut(), 4, v);
    }
    #[inline]
    pub fn set_next_header(&mut self, v: u8) {
        self.buf.as_mut()[6] = v;
    }
    /// IPv6 has no header checksum: the hop limit changes freely.
    #[inline]
    pub fn set_hop_limit(&mut self, v: u8) {
        self.buf.as_mut()[7] = v;
    }
    #[inline]
    pub fn set_src(&mut self, a: Ipv6Addr) {
        self.buf.as_mut()[8..24].copy_from_slice(&a.octets());
    }
    #[inline]
    pub fn set_dst(&mut self, a: Ipv6Addr) {
        self.buf.as_mut()[24..40].copy_from_slice(&a.octets());
    }
    #[inline]
    pub fn payload_mut(&mut self) -> &mut [u8] {
        let n = usize::from(self.payload_len());
        &mut self.buf.as_mut()[HEADER_LEN..HEADER_LEN + n]
    }
}
