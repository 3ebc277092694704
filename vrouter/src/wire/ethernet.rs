//! Ethernet II frames and 802.1Q tags.

use super::field::{check_len, view};
use super::{MacAddr, WireError};

pub mod field {
    use crate::wire::field::{Field, Rest};
    pub const DESTINATION: Field = 0..6;
    pub const SOURCE: Field = 6..12;
    /// Destination then source: what a forwarding rewrite replaces, in one copy.
    pub const ADDRESSES: Field = 0..12;
    pub const ETHERTYPE: Field = 12..14;
    pub const PAYLOAD: Rest = 14..;
}

/// An 802.1Q tag as it follows the source MAC (the 0x8100 TPID is the frame's ethertype).
pub mod tag_field {
    use crate::wire::field::Field;
    /// Priority (3 bits), drop eligible (1), VLAN id (12).
    pub const TCI: Field = 0..2;
    /// The ethertype of what follows the tag.
    pub const ETHERTYPE: Field = 2..4;
}

pub const HEADER_LEN: usize = field::PAYLOAD.start;
pub const VLAN_TAG_LEN: usize = tag_field::ETHERTYPE.end;

pub mod ethertype {
    pub const IPV4: u16 = 0x0800;
    pub const ARP: u16 = 0x0806;
    pub const VLAN: u16 = 0x8100;
    pub const IPV6: u16 = 0x86dd;
    pub const MPLS: u16 = 0x8847;
}

const VID_MASK: u16 = 0x0fff;

view! {
    /// An Ethernet II frame.
    pub struct Frame;
    dst / set_dst: MacAddr = field::DESTINATION;
    src / set_src: MacAddr = field::SOURCE;
    ethertype / set_ethertype: u16 = field::ETHERTYPE;
}

impl<T: AsRef<[u8]>> Frame<T> {
    /// Checks that the header fits.
    #[inline(always)]
    pub fn check(&self) -> Result<(), WireError> {
        check_len(self.buf.as_ref(), HEADER_LEN)
    }
    #[inline]
    pub fn payload(&self) -> &[u8] {
        &self.buf.as_ref()[field::PAYLOAD]
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Frame<T> {
    #[inline]
    pub fn payload_mut(&mut self) -> &mut [u8] {
        &mut self.buf.as_mut()[field::PAYLOAD]
    }
}

view! {
    /// An 802.1Q tag: TCI then the inner ethertype.
    pub struct VlanTag;
    tci / set_tci: u16 = tag_field::TCI;
    ethertype / set_ethertype: u16 = tag_field::ETHERTYPE;
}

impl<T: AsRef<[u8]>> VlanTag<T> {
    /// Checks that the tag fits.
    #[inline(always)]
    pub fn check(&self) -> Result<(), WireError> {
        check_len(self.buf.as_ref(), VLAN_TAG_LEN)
    }
    #[inline]
    pub fn pcp(&self) -> u8 {
        (self.tci() >> 13) as u8
    }
    #[inline]
    pub fn vid(&self) -> u16 {
        self.tci() & VID_MASK
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> VlanTag<T> {
    /// Sets the VLAN id, keeping priority and drop eligibility.
    #[inline]
    pub fn set_vid(&mut self, vid: u16) {
        let tci = (self.tci() & !VID_MASK) | (vid & VID_MASK);
        self.set_tci(tci);
    }
}

/// An Ethernet II header as values.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Repr {
    pub dst: MacAddr,
    pub src: MacAddr,
    pub ethertype: u16,
}

impl Repr {
    pub fn parse<T: AsRef<[u8]> + ?Sized>(frame: &Frame<&T>) -> Result<Repr, WireError> {
        frame.check()?;
        Ok(Repr {
            dst: frame.dst(),
            src: frame.src(),
            ethertype: frame.ethertype(),
        })
    }

    /// Bytes [`Repr::emit`] writes.
    pub const fn buffer_len(&self) -> usize {
        HEADER_LEN
    }

    /// Writes the header into the first [`Repr::buffer_len`] bytes of `frame`.
    #[inline]
    pub fn emit<T: AsRef<[u8]> + AsMut<[u8]> + ?Sized>(&self, frame: &mut Frame<&mut T>) {
        frame.set_dst(self.dst);
        frame.set_src(self.src);
        frame.set_ethertype(self.ethertype);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use etherparse::{EtherType, Ethernet2Header};
    use proptest::prelude::*;

    fn mac() -> impl Strategy<Value = MacAddr> {
        any::<[u8; 6]>().prop_map(MacAddr)
    }

    fn repr() -> impl Strategy<Value = Repr> {
        (mac(), mac(), any::<u16>()).prop_map(|(dst, src, ethertype)| Repr {
            dst,
            src,
            ethertype,
        })
    }

    proptest! {
        #[test]
        fn emit_then_parse_round_trips(r in repr()) {
            let mut b = [0u8; HEADER_LEN];
            r.emit(&mut Frame::new_unchecked(&mut b[..]));
            prop_assert_eq!(Repr::parse(&Frame::new_unchecked(&b[..])), Ok(r));
        }

        #[test]
        fn agrees_with_etherparse(r in repr()) {
            let mut b = [0u8; HEADER_LEN];
            r.emit(&mut Frame::new_unchecked(&mut b[..]));
            let (h, rest) = Ethernet2Header::from_slice(&b).expect("oracle parses");
            prop_assert!(rest.is_empty());
            prop_assert_eq!((h.destination, h.source, h.ether_type.0), (r.dst.0, r.src.0, r.ethertype));
            let oracle = Ethernet2Header {
                destination: r.dst.0,
                source: r.src.0,
                ether_type: EtherType(r.ethertype),
            }
            .to_bytes();
            prop_assert_eq!(Repr::parse(&Frame::new_unchecked(&oracle[..])), Ok(r));
        }

        #[test]
        fn vlan_id_keeps_the_priority(tci in any::<u16>(), vid in any::<u16>()) {
            let mut b = [0u8; VLAN_TAG_LEN];
            b[tag_field::TCI].copy_from_slice(&tci.to_be_bytes());
            let mut t = VlanTag::new_checked(&mut b[..]).unwrap();
            t.set_vid(vid);
            prop_assert_eq!(t.vid(), vid & 0x0fff);
            prop_assert_eq!(t.pcp(), (tci >> 13) as u8);
        }
    }

    #[test]
    fn short_frames_are_truncated() {
        let b = [0u8; HEADER_LEN - 1];
        assert_eq!(
            Repr::parse(&Frame::new_unchecked(&b[..])),
            Err(WireError::Truncated)
        );
        assert!(Frame::new_checked(&b[..]).is_err());
    }
}
