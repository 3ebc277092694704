//! IPv4 headers (RFC 791).

use super::checksum;
use super::{be16, be32, put16, WireError};
use std::net::Ipv4Addr;

pub const MIN_HEADER_LEN: usize = 20;

pub mod proto {
    pub const ICMP: u8 = 1;
    pub const TCP: u8 = 6;
    pub const UDP: u8 = 17;
    pub const GRE: u8 = 47;
    pub const ICMPV6: u8 = 58;
}

const FLAG_DF: u16 = 0x4000;
const FLAG_MF: u16 = 0x2000;

#[derive(Debug, Clone, Copy)]
pub struct Packet<T: AsRef<[u8]>> {
    buf: T,
}

impl<T: AsRef<[u8]>> Packet<T> {
    #[inline]
    pub fn new_unchecked(buf: T) -> Self {
        Packet { buf }
    }
    /// Checks version, header length and that the buffer holds `total_len` bytes (it may hold
    /// more: Ethernet padding).
    #[inline]
    pub fn new_checked(buf: T) -> Result<Self, WireError> {
        let b = buf.as_ref();
        if b.len() < MIN_HEADER_LEN {
            return Err(WireError::Truncated);
        }
        if b[0] >> 4 != 4 {
            return Err(WireError::Malformed);
        }
        let hl = usize::from(b[0] & 0xf) * 4;
        let tl = usize::from(be16(b, 2));
        if hl < MIN_HEADER_LEN || tl < hl {
            return Err(WireError::Malformed);
        }
        if b.len() < hl || b.len() < tl {
            return Err(WireError::Truncated);
        }
        Ok(Packet { buf })
    }

    /// [`Packet::new_checked`] for a packet whose header is in `buf` and whose bytes continue
    /// in further segments: `total_len` is checked against `frame_avail`, the bytes the whole
    /// frame holds from the header on.
    #[inline]
    pub fn new_checked_in(buf: T, frame_avail: usize) -> Result<Self, WireError> {
        let b = buf.as_ref();
        if b.len() < MIN_HEADER_LEN {
            return Err(WireError::Truncated);
        }
        if b[0] >> 4 != 4 {
            return Err(WireError::Malformed);
        }
        let hl = usize::from(b[0] & 0xf) * 4;
        let tl = usize::from(be16(b, 2));
        if hl < MIN_HEADER_LEN || tl < hl {
            return Err(WireError::Malformed);
        }
        if b.len() < hl || frame_avail.max(b.len()) < tl {
            return Err(WireError::Truncated);
        }
        Ok(Packet { buf })
    }
    #[inline]
    pub fn into_inner(self) -> T {
        self.buf
    }
    #[inline]
    pub fn header_len(&self) -> usize {
        usize::from(self.buf.as_ref()[0] & 0xf) * 4
    }
    #[inline]
    pub fn dscp_ecn(&self) -> u8 {
        self.buf.as_ref()[1]
    }
    #[inline]
    pub fn total_len(&self) -> u16 {
        be16(self.buf.as_ref(), 2)
    }
    #[inline]
    pub fn ident(&self) -> u16 {
        be16(self.buf.as_ref(), 4)
    }
    #[inline]
    pub fn dont_frag(&self) -> bool {
        be16(self.buf.as_ref(), 6) & FLAG_DF != 0
    }
    #[inline]
    pub fn more_frags(&self) -> bool {
        be16(self.buf.as_ref(), 6) & FLAG_MF != 0
    }
    /// Fragment offset in 8-byte units.
    #[inline]
    pub fn frag_offset(&self) -> u16 {
        be16(self.buf.as_ref(), 6) & 0x1fff
    }
    #[inline]
    pub fn ttl(&self) -> u8 {
        self.buf.as_ref()[8]
    }
    #[inline]
    pub fn protocol(&self) -> u8 {
        self.buf.as_ref()[9]
    }
    #[inline]
    pub fn checksum(&self) -> u16 {
        be16(self.buf.as_ref(), 10)
    }
    #[inline]
    pub fn src(&self) -> Ipv4Addr {
        Ipv4Addr::from(be32(self.buf.as_ref(), 12))
    }
    #[inline]
    pub fn dst(&self) -> Ipv4Addr {
        Ipv4Addr::from(be32(self.buf.as_ref(), 16))
    }
    /// Whether the header checksum is right.
    #[inline]
    pub fn verify_checksum(&self) -> bool {
        checksum::verifies(&self.buf.as_ref()[..self.header_len()])
    }
    /// The payload, up to `total_len` (Ethernet padding excluded).
    #[inline]
    pub fn payload(&self) -> &[u8] {
        &self.buf.as_ref()[self.header_len()..usize::from(self.total_len())]
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Packet<T> {
    /// Write version 4 and a header length of `len` bytes (a multiple of 4).
    #[inline]
    pub fn set_version_and_len(&mut self, len: usize) {
        self.buf.as_mut()[0] = 0x40 | ((len / 4) as u8 & 0xf);
    }
    #[inline]
    pub fn set_dscp_ecn(&mut self, v: u8) {
        self.buf.as_mut()[1] = v;
    }
    #[inline]
    pub fn set_total_len(&mut self, v: u16) {
        put16(self.buf.as_mut(), 2, v);
    }
    #[inline]
    pub fn set_ident(&mut self, v: u16) {
        put16(self.buf.as_mut(), 4, v);
    }
    /// Flags and fragment offset: DF as given, MF clear, offset 0.
    #[inline]
    pub fn set_flags_unfragmented(&mut self, df: bool) {
        put16(self.buf.as_mut(), 6, if df { FLAG_DF } else { 0 });
    }
    #[inline]
    pub fn set_ttl(&mut self, v: u8) {
        self.buf.as_mut()[8] = v;
    }
    #[inline]
    pub fn set_protocol(&mut self, v: u8) {
        self.buf.as_mut()[9] = v;
    }
    #[inline]
    pub fn set_checksum(&mut self, v: u16) {
        put16(self.buf.as_mut(), 10, v);
    }
    #[inline]
    pub fn set_src(&mut self, a: Ipv4Addr) {
        self.buf.as_mut()[12..16].copy_from_slice(&a.octets());
    }
    #[inline]
    pub fn set_dst(&mut self, a: Ipv4Addr) {
        self.buf.as_mut()[16..20].copy_from_slice(&a.octets());
    }
    /// Compute and write the header checksum.
    #[inline]
    pub fn fill_checksum(&mut self) {
        self.set_checksum(0);
        let hl = self.header_len();
        let c = checksum::checksum(&self.buf.as_ref()[..hl]);
        self.set_checksum(c);
    }
    /// Decrement the TTL by one and patch the checksum incrementally (RFC 1624). Returns the
    /// new TTL. The caller checks for expiry first: the TTL must be at least 1, as the constant
    /// checksum patch assumes the TTL/protocol word loses exactly 0x0100 (a TTL of 0 would wrap
    /// to 255 and leave a wrong checksum).
    #[inline(always)]
    pub fn decrement_ttl(&mut self) -> u8 {
        let b = self.buf.as_mut();
        debug_assert!(b[8] > 0, "decrement_ttl on an expired packet");
        let ttl = b[8].wrapping_sub(1);
        b[8] = ttl;
        // In memory order: no byte swaps (see `ttl_decremented_ne`).
        let hc = u16::from_ne_bytes([b[10], b[11]]);
        [b[10], b[11]] = checksum::ttl_decremented_ne(hc).to_ne_bytes();
        ttl
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        /// The constant-patch checksum update leaves a header that verifies, and equals a full
        /// recomputation, for every TTL the pipeline decrements (1..=255).
        #[test]
        fn decrement_ttl_keeps_the_header_checksum_right(
            mut header in proptest::collection::vec(any::<u8>(), MIN_HEADER_LEN),
            ttl in 1u8..,
        ) {
            let mut p = Packet::new_unchecked(&mut header[..]);
            p.set_version_and_len(MIN_HEADER_LEN);
            p.set_ttl(ttl);
            p.fill_checksum();
            prop_assert_eq!(p.decrement_ttl(), ttl - 1);
            prop_assert_eq!(p.ttl(), ttl - 1);
            prop_assert!(p.verify_checksum());
            let patched = p.checksum();
            p.fill_checksum();
            prop_assert_eq!(patched, p.checksum());
        }
    }
}
