//! UDP headers (RFC 768).

use super::field::{check_len, checked_in_frame, view};
use super::WireError;

pub mod field {
    use crate::wire::field::{Field, Rest};
    pub const SRC_PORT: Field = 0..2;
    pub const DST_PORT: Field = 2..4;
    /// Header and payload.
    pub const LENGTH: Field = 4..6;
    pub const CHECKSUM: Field = 6..8;
    pub const PAYLOAD: Rest = 8..;
}

pub const HEADER_LEN: usize = field::PAYLOAD.start;
pub const PORT_VXLAN: u16 = 4789;
pub const PORT_MPLS_UDP: u16 = 6635;

view! {
    /// A UDP datagram.
    pub struct Packet;
    src_port / set_src_port: u16 = field::SRC_PORT;
    dst_port / set_dst_port: u16 = field::DST_PORT;
    len / set_len: u16 = field::LENGTH;
    checksum / set_checksum: u16 = field::CHECKSUM;
}

checked_in_frame!(Packet);

impl<T: AsRef<[u8]>> Packet<T> {
    /// Checks that the header fits and that the length field is at least 8 and within the
    /// datagram (`frame_avail` bytes, or the buffer if longer).
    #[inline]
    pub fn check_in(&self, frame_avail: usize) -> Result<(), WireError> {
        let len = self.buf.as_ref().len();
        check_len(self.buf.as_ref(), HEADER_LEN)?;
        let l = usize::from(self.len());
        if l < HEADER_LEN {
            return Err(WireError::Malformed);
        }
        if l > frame_avail.max(len) {
            return Err(WireError::Truncated);
        }
        Ok(())
    }
    #[inline]
    pub fn is_empty(&self) -> bool {
        self.len() as usize == HEADER_LEN
    }
    #[inline]
    pub fn payload(&self) -> &[u8] {
        &self.buf.as_ref()[field::PAYLOAD.start..usize::from(self.len())]
    }
}

/// A UDP header as values. The checksum is not represented: vrouterd sends its tunnel
/// datagrams without one (allowed over IPv4, and what Linux sends by default), and checking
/// one needs the IP addresses around it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Repr {
    pub src_port: u16,
    pub dst_port: u16,
    /// Bytes after the header.
    pub payload_len: usize,
}

impl Repr {
    pub fn parse<T: AsRef<[u8]> + ?Sized>(p: &Packet<&T>) -> Result<Repr, WireError> {
        p.check()?;
        Ok(Repr {
            src_port: p.src_port(),
            dst_port: p.dst_port(),
            payload_len: usize::from(p.len()) - HEADER_LEN,
        })
    }

    /// Bytes [`Repr::emit`] writes.
    pub const fn buffer_len(&self) -> usize {
        HEADER_LEN
    }

    /// Writes the header, checksum zero ("none"), into the first [`Repr::buffer_len`] bytes
    /// of `p`.
    #[inline]
    pub fn emit<T: AsRef<[u8]> + AsMut<[u8]> + ?Sized>(&self, p: &mut Packet<&mut T>) {
        p.set_src_port(self.src_port);
        p.set_dst_port(self.dst_port);
        p.set_len((HEADER_LEN + self.payload_len) as u16);
        p.set_checksum(0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use etherparse::UdpHeader;
    use proptest::prelude::*;

    fn repr() -> impl Strategy<Value = Repr> {
        (any::<u16>(), any::<u16>(), 0usize..2000).prop_map(|(src_port, dst_port, payload_len)| {
            Repr {
                src_port,
                dst_port,
                payload_len,
            }
        })
    }

    fn emitted(r: &Repr) -> Vec<u8> {
        let mut b = vec![0xee; HEADER_LEN + r.payload_len];
        r.emit(&mut Packet::new_unchecked(&mut b[..]));
        b
    }

    proptest! {
        #[test]
        fn emit_then_parse_round_trips(r in repr()) {
            let b = emitted(&r);
            prop_assert_eq!(Repr::parse(&Packet::new_unchecked(&b[..])), Ok(r));
        }

        #[test]
        fn agrees_with_etherparse(r in repr(), checksum in any::<u16>()) {
            let b = emitted(&r);
            let (h, _) = UdpHeader::from_slice(&b).expect("oracle parses");
            prop_assert_eq!(
                (h.source_port, h.destination_port, usize::from(h.length), h.checksum),
                (r.src_port, r.dst_port, HEADER_LEN + r.payload_len, 0)
            );
            let oracle = UdpHeader {
                source_port: r.src_port,
                destination_port: r.dst_port,
                length: (HEADER_LEN + r.payload_len) as u16,
                checksum,
            };
            let mut b = oracle.to_bytes().to_vec();
            b.resize(HEADER_LEN + r.payload_len, 0);
            let p = Packet::new_checked(&b[..]).unwrap();
            prop_assert_eq!(p.checksum(), checksum);
            prop_assert_eq!(Repr::parse(&p), Ok(r));
        }
    }

    #[test]
    fn lengths_outside_the_buffer_or_below_the_header_are_refused() {
        let b = emitted(&Repr {
            src_port: 1,
            dst_port: 2,
            payload_len: 4,
        });
        assert_eq!(
            Packet::new_checked(&b[..11]).unwrap_err(),
            WireError::Truncated
        );
        assert!(Packet::new_checked_in(&b[..11], 12).is_ok());
        let mut b = b;
        b[field::LENGTH].copy_from_slice(&7u16.to_be_bytes());
        assert_eq!(
            Packet::new_checked(&b[..]).unwrap_err(),
            WireError::Malformed
        );
    }
}
