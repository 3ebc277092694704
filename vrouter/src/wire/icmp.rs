//! ICMP (RFC 792) and ICMPv6 (RFC 4443) messages share a layout: type, code, checksum, then a
//! 4-byte field (unused / MTU / id+seq / reserved) and the body.

use super::{be16, be32, put16, put32, WireError};

pub const HEADER_LEN: usize = 8;

pub mod v4 {
    pub const ECHO_REPLY: u8 = 0;
    pub const DEST_UNREACHABLE: u8 = 3;
    pub const CODE_FRAG_NEEDED: u8 = 4;
    pub const ECHO_REQUEST: u8 = 8;
    pub const TIME_EXCEEDED: u8 = 11;
    pub const TIMESTAMP: u8 = 13;
    pub const TIMESTAMP_REPLY: u8 = 14;
    pub const INFO_REQUEST: u8 = 15;
    pub const INFO_REPLY: u8 = 16;
    /// RFC 950.
    pub const ADDRESS_MASK_REQUEST: u8 = 17;
    pub const ADDRESS_MASK_REPLY: u8 = 18;
    /// Query types and their replies (RFC 792, RFC 950): each pair answers the other.
    pub const QUERY_REPLY_PAIRS: [(u8, u8); 4] = [
        (ECHO_REQUEST, ECHO_REPLY),
        (TIMESTAMP, TIMESTAMP_REPLY),
        (INFO_REQUEST, INFO_REPLY),
        (ADDRESS_MASK_REQUEST, ADDRESS_MASK_REPLY),
    ];
}

pub mod v6 {
    pub const PACKET_TOO_BIG: u8 = 2;
    pub const TIME_EXCEEDED: u8 = 3;
    pub const ECHO_REQUEST: u8 = 128;
    pub const ECHO_REPLY: u8 = 129;
    /// Query types and their replies (RFC 4443).
    pub const QUERY_REPLY_PAIRS: [(u8, u8); 1] = [(ECHO_REQUEST, ECHO_REPLY)];
    pub const NEIGHBOR_SOLICIT: u8 = 135;
    pub const NEIGHBOR_ADVERT: u8 = 136;
    /// NS / NA: header (4) + reserved/flags (4) + target address (16).
    pub const ND_LEN: usize = 24;
    pub const OPT_SOURCE_LLADDR: u8 = 1;
    pub const OPT_TARGET_LLADDR: u8 = 2;
    /// NA flags: router, solicited, override.
    pub const NA_ROUTER: u32 = 0x8000_0000;
    pub const NA_SOLICITED: u32 = 0x4000_0000;
    pub const NA_OVERRIDE: u32 = 0x2000_0000;
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
        if buf.as_ref().len() < HEADER_LEN {
            return Err(WireError::Truncated);
        }
        Ok(Packet { buf })
    }
    #[inline]
    pub fn msg_type(&self) -> u8 {
        self.buf.as_ref()[0]
    }
    #[inline]
    pub fn code(&self) -> u8 {
        self.buf.as_ref()[1]
    }
    #[inline]
    pub fn checksum(&self) -> u16 {
        be16(self.buf.as_ref(), 2)
    }
    /// The 4 bytes after the checksum (rest of header).
    #[inline]
    pub fn rest(&self) -> u32 {
        be32(self.buf.as_ref(), 4)
    }
    #[inline]
    pub fn body(&self) -> &[u8] {
        &self.buf.as_ref()[HEADER_LEN..]
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Packet<T> {
    #[inline]
    pub fn set_msg_type(&mut self, v: u8) {
        self.buf.as_mut()[0] = v;
    }
    #[inline]
    pub fn set_code(&mut self, v: u8) {
        self.buf.as_mut()[1] = v;
    }
    #[inline]
    pub fn set_checksum(&mut self, v: u16) {
        put16(self.buf.as_mut(), 2, v);
    }
    #[inline]
    pub fn set_rest(&mut self, v: u32) {
        put32(self.buf.as_mut(), 4, v);
    }
}
