//! TCP headers (RFC 9293): the fields forwarding, flow keys and segmentation need.

use super::field::{check_len, get, set, view};
use super::WireError;

pub mod field {
    use crate::wire::field::Field;
    pub const SRC_PORT: Field = 0..2;
    pub const DST_PORT: Field = 2..4;
    pub const SEQ_NUM: Field = 4..8;
    pub const ACK_NUM: Field = 8..12;
    /// Data offset in 32-bit words (4 bits), reserved (3), flags (9).
    pub const FLAGS: Field = 12..14;
    pub const WIN_SIZE: Field = 14..16;
    pub const CHECKSUM: Field = 16..18;
    pub const URGENT: Field = 18..20;
}

pub const MIN_HEADER_LEN: usize = field::URGENT.end;

/// Flag bits of [`Packet::flags`].
pub mod flag {
    pub const FIN: u16 = 0x01;
    pub const PSH: u16 = 0x08;
    pub const CWR: u16 = 0x80;
}

const FLAGS_MASK: u16 = 0x01ff;

view! {
    /// A TCP segment.
    pub struct Packet;
    src_port / set_src_port: u16 = field::SRC_PORT;
    dst_port / set_dst_port: u16 = field::DST_PORT;
    seq / set_seq: u32 = field::SEQ_NUM;
    ack: u32 = field::ACK_NUM;
    window: u16 = field::WIN_SIZE;
    checksum / set_checksum: u16 = field::CHECKSUM;
}

impl<T: AsRef<[u8]>> Packet<T> {
    /// Checks that the header, options included, fits.
    #[inline]
    pub fn check(&self) -> Result<(), WireError> {
        check_len(self.buf.as_ref(), MIN_HEADER_LEN)?;
        let hl = self.header_len();
        if hl < MIN_HEADER_LEN {
            return Err(WireError::Malformed);
        }
        check_len(self.buf.as_ref(), hl)
    }
    #[inline]
    fn offset_flags(&self) -> u16 {
        get(self.buf.as_ref(), field::FLAGS)
    }
    #[inline]
    pub fn header_len(&self) -> usize {
        usize::from(self.offset_flags() >> 12) * 4
    }
    /// The flag bits (FIN = 0x01, SYN = 0x02, RST = 0x04, PSH = 0x08, ACK = 0x10, ...).
    #[inline]
    pub fn flags(&self) -> u16 {
        self.offset_flags() & FLAGS_MASK
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Packet<T> {
    /// Sets the flag bits, keeping the data offset.
    #[inline]
    pub fn set_flags(&mut self, flags: u16) {
        let v = (self.offset_flags() & !FLAGS_MASK) | (flags & FLAGS_MASK);
        set(self.buf.as_mut(), field::FLAGS, v);
    }
}
