//! IPv6 fixed headers (RFC 8200).

use super::field::{array, check_len, checked_in_frame, get, set, view};
use super::WireError;
use std::net::Ipv6Addr;

pub mod field {
    use crate::wire::field::{Field, Rest};
    /// Version (4 bits), traffic class (8), flow label (20).
    pub const VER_TC_FLOW: Field = 0..4;
    pub const LENGTH: Field = 4..6;
    pub const NXT_HDR: Field = 6..7;
    pub const HOP_LIMIT: Field = 7..8;
    pub const SRC_ADDR: Field = 8..24;
    pub const DST_ADDR: Field = 24..40;
    pub const PAYLOAD: Rest = 40..;
}

/// The start of every extension header the pipeline walks past (hop-by-hop, routing,
/// destination options, fragment).
pub mod ext_field {
    use crate::wire::field::Field;
    pub const NXT_HDR: Field = 0..1;
    /// In 8-byte units, not counting the first 8 (hop-by-hop, routing, destination options;
    /// reserved in a fragment header, which is always 8 bytes).
    pub const LENGTH: Field = 1..2;
}

pub const HEADER_LEN: usize = field::PAYLOAD.start;
/// The fragment header's length, fixed.
pub const FRAGMENT_HEADER_LEN: usize = 8;

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

const FLOW_LABEL_MASK: u32 = 0x000f_ffff;

view! {
    /// An IPv6 fixed header and what follows it.
    pub struct Packet;
    payload_len / set_payload_len: u16 = field::LENGTH;
    next_header / set_next_header: u8 = field::NXT_HDR;
    /// IPv6 has no header checksum: the hop limit changes freely.
    hop_limit / set_hop_limit: u8 = field::HOP_LIMIT;
    src / set_src: Ipv6Addr = field::SRC_ADDR;
    dst / set_dst: Ipv6Addr = field::DST_ADDR;
}

checked_in_frame!(Packet);

impl<T: AsRef<[u8]>> Packet<T> {
    /// Checks the version, and that the packet (`frame_avail` bytes, or the buffer if longer)
    /// holds the payload length.
    #[inline]
    pub fn check_in(&self, frame_avail: usize) -> Result<(), WireError> {
        let len = self.buf.as_ref().len();
        check_len(self.buf.as_ref(), HEADER_LEN)?;
        if self.version() != 6 {
            return Err(WireError::Malformed);
        }
        if frame_avail.max(len) < HEADER_LEN + usize::from(self.payload_len()) {
            return Err(WireError::Truncated);
        }
        Ok(())
    }
    #[inline]
    fn ver_tc_flow(&self) -> u32 {
        get(self.buf.as_ref(), field::VER_TC_FLOW)
    }
    #[inline]
    pub fn version(&self) -> u8 {
        (self.ver_tc_flow() >> 28) as u8
    }
    #[inline]
    pub fn traffic_class(&self) -> u8 {
        (self.ver_tc_flow() >> 20) as u8
    }
    #[inline]
    pub fn flow_label(&self) -> u32 {
        self.ver_tc_flow() & FLOW_LABEL_MASK
    }
    #[inline]
    pub fn src_bytes(&self) -> [u8; 16] {
        array(&self.buf.as_ref()[field::SRC_ADDR])
    }
    #[inline]
    pub fn dst_bytes(&self) -> [u8; 16] {
        array(&self.buf.as_ref()[field::DST_ADDR])
    }
    #[inline]
    pub fn payload(&self) -> &[u8] {
        &self.buf.as_ref()[self.payload_range()]
    }
    #[inline]
    fn payload_range(&self) -> core::ops::Range<usize> {
        field::PAYLOAD.start..field::PAYLOAD.start + usize::from(self.payload_len())
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Packet<T> {
    /// Version 6, the given traffic class and flow label.
    #[inline]
    pub fn set_version_tc_flow(&mut self, tc: u8, flow: u32) {
        let v = (6 << 28) | (u32::from(tc) << 20) | (flow & FLOW_LABEL_MASK);
        set(self.buf.as_mut(), field::VER_TC_FLOW, v);
    }
    #[inline]
    pub fn payload_mut(&mut self) -> &mut [u8] {
        let r = self.payload_range();
        &mut self.buf.as_mut()[r]
    }
}

/// An IPv6 fixed header as values (traffic class and flow label zero).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Repr {
    pub src: Ipv6Addr,
    pub dst: Ipv6Addr,
    pub next_header: u8,
    /// Bytes after the fixed header.
    pub payload_len: usize,
    pub hop_limit: u8,
}

impl Repr {
    pub fn parse<T: AsRef<[u8]> + ?Sized>(p: &Packet<&T>) -> Result<Repr, WireError> {
        p.check()?;
        Ok(Repr {
            src: p.src(),
            dst: p.dst(),
            next_header: p.next_header(),
            payload_len: usize::from(p.payload_len()),
            hop_limit: p.hop_limit(),
        })
    }

    /// Bytes [`Repr::emit`] writes.
    pub const fn buffer_len(&self) -> usize {
        HEADER_LEN
    }

    /// Writes the header into the first [`Repr::buffer_len`] bytes of `p`.
    #[inline]
    pub fn emit<T: AsRef<[u8]> + AsMut<[u8]> + ?Sized>(&self, p: &mut Packet<&mut T>) {
        p.set_version_tc_flow(0, 0);
        p.set_payload_len(self.payload_len as u16);
        p.set_next_header(self.next_header);
        p.set_hop_limit(self.hop_limit);
        p.set_src(self.src);
        p.set_dst(self.dst);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use etherparse::{IpNumber, Ipv6FlowLabel, Ipv6Header};
    use proptest::prelude::*;

    fn repr() -> impl Strategy<Value = Repr> {
        (
            any::<[u8; 16]>(),
            any::<[u8; 16]>(),
            any::<u8>(),
            0usize..2000,
            any::<u8>(),
        )
            .prop_map(|(src, dst, next_header, payload_len, hop_limit)| Repr {
                src: Ipv6Addr::from(src),
                dst: Ipv6Addr::from(dst),
                next_header,
                payload_len,
                hop_limit,
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
        fn emit_agrees_with_etherparse(r in repr()) {
            let b = emitted(&r);
            let (h, _) = Ipv6Header::from_slice(&b).expect("oracle parses");
            prop_assert_eq!(h.source, r.src.octets());
            prop_assert_eq!(h.destination, r.dst.octets());
            prop_assert_eq!(h.next_header, IpNumber(r.next_header));
            prop_assert_eq!(usize::from(h.payload_length), r.payload_len);
            prop_assert_eq!(h.hop_limit, r.hop_limit);
            prop_assert_eq!((h.traffic_class, h.flow_label.value()), (0, 0));
        }

        #[test]
        fn parse_agrees_with_etherparse(r in repr(), tc in any::<u8>(), flow in 0u32..=FLOW_LABEL_MASK) {
            let h = Ipv6Header {
                traffic_class: tc,
                flow_label: Ipv6FlowLabel::try_new(flow).unwrap(),
                payload_length: r.payload_len as u16,
                next_header: IpNumber(r.next_header),
                hop_limit: r.hop_limit,
                source: r.src.octets(),
                destination: r.dst.octets(),
            };
            let mut b = h.to_bytes().to_vec();
            b.resize(HEADER_LEN + r.payload_len, 0);
            let p = Packet::new_checked(&b[..]).unwrap();
            prop_assert_eq!((p.traffic_class(), p.flow_label()), (tc, flow));
            prop_assert_eq!(Repr::parse(&p), Ok(r));
        }
    }

    #[test]
    fn short_or_other_versions_are_refused() {
        let r = Repr {
            src: Ipv6Addr::LOCALHOST,
            dst: Ipv6Addr::LOCALHOST,
            next_header: next_header::UDP,
            payload_len: 8,
            hop_limit: 64,
        };
        let b = emitted(&r);
        assert_eq!(
            Packet::new_checked(&b[..HEADER_LEN + 7]).unwrap_err(),
            WireError::Truncated
        );
        let mut b = b;
        b[0] = 0x40;
        assert_eq!(
            Packet::new_checked(&b[..]).unwrap_err(),
            WireError::Malformed
        );
    }
}
