//! ARP for Ethernet / IPv4 (RFC 826). Other hardware or protocol types are `Malformed`.

use super::{be16, be32, mac_at, put16, MacAddr, WireError};
use std::net::Ipv4Addr;

pub const PACKET_LEN: usize = 28;
pub const OP_REQUEST: u16 = 1;
pub const OP_REPLY: u16 = 2;

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
        let b = buf.as_ref();
        if b.len() < PACKET_LEN {
            return Err(WireError::Truncated);
        }
        if be16(b, 0) != 1 || be16(b, 2) != 0x0800 || b[4] != 6 || b[5] != 4 {
            return Err(WireError::Malformed);
        }
        Ok(Packet { buf })
    }
    #[inline]
    pub fn operation(&self) -> u16 {
        be16(self.buf.as_ref(), 6)
    }
    #[inline]
    pub fn sender_mac(&self) -> MacAddr {
        mac_at(self.buf.as_ref(), 8)
    }
    #[inline]
    pub fn sender_ip(&self) -> Ipv4Addr {
        Ipv4Addr::from(be32(self.buf.as_ref(), 14))
    }
    #[inline]
    pub fn target_mac(&self) -> MacAddr {
        mac_at(self.buf.as_ref(), 18)
    }
    #[inline]
    pub fn target_ip(&self) -> Ipv4Addr {
        Ipv4Addr::from(be32(self.buf.as_ref(), 24))
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Packet<T> {
    /// Write the fixed Ethernet/IPv4 fields (hardware/protocol types and sizes).
    #[inline]
    pub fn fill_fixed(&mut self) {
        let b = self.buf.as_mut();
        put16(b, 0, 1);
        put16(b, 2, 0x0800);
        b[4] = 6;
        b[5] = 4;
    }
    #[inline]
    pub fn set_operation(&mut self, op: u16) {
        put16(self.buf.as_mut(), 6, op);
    }
    #[inline]
    pub fn set_sender_mac(&mut self, m: MacAddr) {
        self.buf.as_mut()[8..14].copy_from_slice(&m.0);
    }
    #[inline]
    pub fn set_sender_ip(&mut self, ip: Ipv4Addr) {
        self.buf.as_mut()[14..18].copy_from_slice(&ip.octets());
    }
    #[inline]
    pub fn set_target_mac(&mut self, m: MacAddr) {
        self.buf.as_mut()[18..24].copy_from_slice(&m.0);
    }
    #[inline]
    pub fn set_target_ip(&mut self, ip: Ipv4Addr) {
        self.buf.as_mut()[24..28].copy_from_slice(&ip.octets());
    }
}
