//! Ethernet II frames and 802.1Q tags.

use super::{be16, mac_at, put16, MacAddr, WireError};

pub const HEADER_LEN: usize = 14;
pub const VLAN_TAG_LEN: usize = 4;

pub mod ethertype {
    pub const IPV4: u16 = 0x0800;
    pub const ARP: u16 = 0x0806;
    pub const VLAN: u16 = 0x8100;
    pub const IPV6: u16 = 0x86dd;
    pub const MPLS: u16 = 0x8847;
}

/// An Ethernet II frame.
#[derive(Debug, Clone, Copy)]
pub struct Frame<T: AsRef<[u8]>> {
    buf: T,
}

impl<T: AsRef<[u8]>> Frame<T> {
    #[inline(always)]
    pub fn new_unchecked(buf: T) -> Self {
        Frame { buf }
    }
    #[inline(always)]
    pub fn new_checked(buf: T) -> Result<Self, WireError> {
        if buf.as_ref().len() < HEADER_LEN {
            return Err(WireError::Truncated);
        }
        Ok(Frame { buf })
    }
    #[inline]
    pub fn into_inner(self) -> T {
        self.buf
    }
    #[inline(always)]
    pub fn dst(&self) -> MacAddr {
        mac_at(self.buf.as_ref(), 0)
    }
    #[inline(always)]
    pub fn src(&self) -> MacAddr {
        mac_at(self.buf.as_ref(), 6)
    }
    #[inline(always)]
    pub fn ethertype(&self) -> u16 {
        be16(self.buf.as_ref(), 12)
    }
    #[inline]
    pub fn payload(&self) -> &[u8] {
        &self.buf.as_ref()[HEADER_LEN..]
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Frame<T> {
    #[inline(always)]
    pub fn set_dst(&mut self, m: MacAddr) {
        self.buf.as_mut()[0..6].copy_from_slice(&m.0);
    }
    #[inline(always)]
    pub fn set_src(&mut self, m: MacAddr) {
        self.buf.as_mut()[6..12].copy_from_slice(&m.0);
    }
    #[inline(always)]
    pub fn set_ethertype(&mut self, t: u16) {
        put16(self.buf.as_mut(), 12, t);
    }
    #[inline]
    pub fn payload_mut(&mut self) -> &mut [u8] {
        &mut self.buf.as_mut()[HEADER_LEN..]
    }
}

/// An 802.1Q tag as it follows the source MAC: TCI then the inner ethertype (the 0x8100 TPID
/// itself is the frame's ethertype).
#[derive(Debug, Clone, Copy)]
pub struct VlanTag<T: AsRef<[u8]>> {
    buf: T,
}

impl<T: AsRef<[u8]>> VlanTag<T> {
    #[inline(always)]
    pub fn new_checked(buf: T) -> Result<Self, WireError> {
        if buf.as_ref().len() < VLAN_TAG_LEN {
            return Err(WireError::Truncated);
        }
        Ok(VlanTag { buf })
    }
    #[inline]
    pub fn pcp(&self) -> u8 {
        self.buf.as_ref()[0] >> 5
    }
    #[inline]
    pub fn vid(&self) -> u16 {
        be16(self.buf.as_ref(), 0) & 0x0fff
    }
    #[inline(always)]
    pub fn ethertype(&self) -> u16 {
        be16(self.buf.as_ref(), 2)
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> VlanTag<T> {
    #[inline]
    pub fn set_vid(&mut self, vid: u16) {
        let tci = (be16(self.buf.as_ref(), 0) & 0xf000) | (vid & 0x0fff);
        put16(self.buf.as_mut(), 0, tci);
    }
    #[inline(always)]
    pub fn set_ethertype(&mut self, t: u16) {
        put16(self.buf.as_mut(), 2, t);
    }
}
