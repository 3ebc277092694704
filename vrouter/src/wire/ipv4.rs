//! IPv4 headers (RFC 791).

use super::checksum;
use super::field::{array, check_len, checked_in_frame, get, set, view};
use super::WireError;
use std::net::Ipv4Addr;

pub mod field {
    use crate::wire::field::Field;
    /// Version (4 bits) and header length in 32-bit words (4 bits).
    pub const VER_IHL: Field = 0..1;
    pub const DSCP_ECN: Field = 1..2;
    pub const LENGTH: Field = 2..4;
    pub const IDENT: Field = 4..6;
    /// Flags (3 bits) and fragment offset in 8-byte units (13 bits).
    pub const FLG_OFF: Field = 6..8;
    pub const TTL: Field = 8..9;
    pub const PROTOCOL: Field = 9..10;
    pub const CHECKSUM: Field = 10..12;
    pub const SRC_ADDR: Field = 12..16;
    pub const DST_ADDR: Field = 16..20;
}

pub const MIN_HEADER_LEN: usize = field::DST_ADDR.end;

pub mod proto {
    pub const ICMP: u8 = 1;
    pub const TCP: u8 = 6;
    pub const UDP: u8 = 17;
    pub const GRE: u8 = 47;
    pub const ICMPV6: u8 = 58;
}

const FLAG_DF: u16 = 0x4000;
const FLAG_MF: u16 = 0x2000;
const FRAG_OFFSET_MASK: u16 = 0x1fff;

view! {
    /// An IPv4 header and what follows it.
    pub struct Packet;
    dscp_ecn / set_dscp_ecn: u8 = field::DSCP_ECN;
    total_len / set_total_len: u16 = field::LENGTH;
    ident / set_ident: u16 = field::IDENT;
    ttl / set_ttl: u8 = field::TTL;
    protocol / set_protocol: u8 = field::PROTOCOL;
    checksum / set_checksum: u16 = field::CHECKSUM;
    src / set_src: Ipv4Addr = field::SRC_ADDR;
    dst / set_dst: Ipv4Addr = field::DST_ADDR;
}

checked_in_frame!(Packet);

impl<T: AsRef<[u8]>> Packet<T> {
    /// Checks version and header length, and that the packet (`frame_avail` bytes, or the
    /// buffer if longer) holds `total_len` bytes; it may hold more (Ethernet padding).
    #[inline(always)]
    pub fn check_in(&self, frame_avail: usize) -> Result<(), WireError> {
        let len = self.buf.as_ref().len();
        check_len(self.buf.as_ref(), MIN_HEADER_LEN)?;
        if self.version() != 4 {
            return Err(WireError::Malformed);
        }
        let hl = self.header_len();
        let tl = usize::from(self.total_len());
        if hl < MIN_HEADER_LEN || tl < hl {
            return Err(WireError::Malformed);
        }
        if len < hl || frame_avail.max(len) < tl {
            return Err(WireError::Truncated);
        }
        Ok(())
    }
    #[inline]
    pub fn version(&self) -> u8 {
        self.buf.as_ref()[field::VER_IHL.start] >> 4
    }
    #[inline]
    pub fn header_len(&self) -> usize {
        usize::from(self.buf.as_ref()[field::VER_IHL.start] & 0xf) * 4
    }
    #[inline]
    fn flags_offset(&self) -> u16 {
        get(self.buf.as_ref(), field::FLG_OFF)
    }
    #[inline]
    pub fn dont_frag(&self) -> bool {
        self.flags_offset() & FLAG_DF != 0
    }
    #[inline]
    pub fn more_frags(&self) -> bool {
        self.flags_offset() & FLAG_MF != 0
    }
    /// Fragment offset in 8-byte units.
    #[inline]
    pub fn frag_offset(&self) -> u16 {
        self.flags_offset() & FRAG_OFFSET_MASK
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
        self.buf.as_mut()[field::VER_IHL.start] = 0x40 | ((len / 4) as u8 & 0xf);
    }
    /// Flags and fragment offset: DF as given, MF clear, offset 0.
    #[inline]
    pub fn set_flags_unfragmented(&mut self, df: bool) {
        set(
            self.buf.as_mut(),
            field::FLG_OFF,
            if df { FLAG_DF } else { 0 },
        );
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
        let ttl = &mut b[field::TTL.start];
        debug_assert!(*ttl > 0, "decrement_ttl on an expired packet");
        *ttl = ttl.wrapping_sub(1);
        let ttl = *ttl;
        // In memory order: no byte swaps (see `ttl_decremented_ne`).
        let c = &mut b[field::CHECKSUM];
        let hc = u16::from_ne_bytes(array(c));
        c.copy_from_slice(&checksum::ttl_decremented_ne(hc).to_ne_bytes());
        ttl
    }
}

/// An IPv4 header without options, as values. Fragments are not represented.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Repr {
    pub src: Ipv4Addr,
    pub dst: Ipv4Addr,
    pub protocol: u8,
    /// Bytes after the header.
    pub payload_len: usize,
    pub ttl: u8,
    pub ident: u16,
    pub dont_frag: bool,
    pub dscp_ecn: u8,
}

impl Repr {
    /// Reads a checked header; its options, if any, are skipped. A fragment is `Unsupported`.
    pub fn parse<T: AsRef<[u8]> + ?Sized>(p: &Packet<&T>) -> Result<Repr, WireError> {
        p.check()?;
        if !p.verify_checksum() {
            return Err(WireError::Checksum);
        }
        if p.more_frags() || p.frag_offset() != 0 {
            return Err(WireError::Unsupported);
        }
        Ok(Repr {
            src: p.src(),
            dst: p.dst(),
            protocol: p.protocol(),
            payload_len: usize::from(p.total_len()) - p.header_len(),
            ttl: p.ttl(),
            ident: p.ident(),
            dont_frag: p.dont_frag(),
            dscp_ecn: p.dscp_ecn(),
        })
    }

    /// Bytes [`Repr::emit`] writes.
    pub const fn buffer_len(&self) -> usize {
        MIN_HEADER_LEN
    }

    /// Writes the header, checksum included, into the first [`Repr::buffer_len`] bytes of `p`.
    #[inline]
    pub fn emit<T: AsRef<[u8]> + AsMut<[u8]> + ?Sized>(&self, p: &mut Packet<&mut T>) {
        p.set_version_and_len(MIN_HEADER_LEN);
        p.set_dscp_ecn(self.dscp_ecn);
        p.set_total_len((MIN_HEADER_LEN + self.payload_len) as u16);
        p.set_ident(self.ident);
        p.set_flags_unfragmented(self.dont_frag);
        p.set_ttl(self.ttl);
        p.set_protocol(self.protocol);
        p.set_src(self.src);
        p.set_dst(self.dst);
        p.fill_checksum();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use etherparse::{IpNumber, Ipv4Dscp, Ipv4Ecn, Ipv4Header};
    use proptest::prelude::*;

    fn repr() -> impl Strategy<Value = Repr> {
        (
            any::<[u8; 4]>(),
            any::<[u8; 4]>(),
            any::<u8>(),
            0usize..=usize::from(u16::MAX) - MIN_HEADER_LEN,
            any::<u8>(),
            any::<u16>(),
            any::<bool>(),
            any::<u8>(),
        )
            .prop_map(
                |(src, dst, protocol, payload_len, ttl, ident, dont_frag, dscp_ecn)| Repr {
                    src: Ipv4Addr::from(src),
                    dst: Ipv4Addr::from(dst),
                    protocol,
                    payload_len,
                    ttl,
                    ident,
                    dont_frag,
                    dscp_ecn,
                },
            )
    }

    /// A header as emitted, with room for the payload it announces.
    fn emitted(r: &Repr) -> Vec<u8> {
        let mut b = vec![0xee; MIN_HEADER_LEN + r.payload_len];
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
            let (h, _) = Ipv4Header::from_slice(&b).expect("oracle parses");
            prop_assert_eq!(h.source, r.src.octets());
            prop_assert_eq!(h.destination, r.dst.octets());
            prop_assert_eq!(h.protocol, IpNumber(r.protocol));
            prop_assert_eq!(usize::from(h.total_len), MIN_HEADER_LEN + r.payload_len);
            prop_assert_eq!(h.time_to_live, r.ttl);
            prop_assert_eq!(h.identification, r.ident);
            prop_assert_eq!(h.dont_fragment, r.dont_frag);
            prop_assert!(!h.more_fragments);
            prop_assert_eq!(h.fragment_offset.value(), 0);
            prop_assert_eq!((h.dscp.value() << 2) | h.ecn.value(), r.dscp_ecn);
            prop_assert_eq!(h.header_checksum, h.calc_header_checksum());
        }

        #[test]
        fn parse_agrees_with_etherparse(r in repr()) {
            let mut h = Ipv4Header::new(r.payload_len as u16, r.ttl, IpNumber(r.protocol), r.src.octets(), r.dst.octets())
                .expect("payload fits");
            h.identification = r.ident;
            h.dont_fragment = r.dont_frag;
            h.dscp = Ipv4Dscp::try_new(r.dscp_ecn >> 2).unwrap();
            h.ecn = Ipv4Ecn::try_new(r.dscp_ecn & 3).unwrap();
            h.header_checksum = h.calc_header_checksum();
            let mut b = h.to_bytes().to_vec();
            b.resize(MIN_HEADER_LEN + r.payload_len, 0);
            prop_assert_eq!(Repr::parse(&Packet::new_unchecked(&b[..])), Ok(r));
        }
    }

    #[test]
    fn parse_refuses_bad_checksums_and_fragments() {
        let r = Repr {
            src: Ipv4Addr::new(192, 0, 2, 1),
            dst: Ipv4Addr::new(192, 0, 2, 2),
            protocol: proto::UDP,
            payload_len: 8,
            ttl: 64,
            ident: 7,
            dont_frag: false,
            dscp_ecn: 0,
        };
        let mut b = emitted(&r);
        b[field::TTL.start] -= 1;
        assert_eq!(
            Repr::parse(&Packet::new_unchecked(&b[..])),
            Err(WireError::Checksum)
        );
        let mut b = emitted(&r);
        let mut p = Packet::new_unchecked(&mut b[..]);
        set(p.buf, field::FLG_OFF, FLAG_MF);
        p.fill_checksum();
        assert_eq!(
            Repr::parse(&Packet::new_unchecked(&b[..])),
            Err(WireError::Unsupported)
        );
        assert_eq!(
            Repr::parse(&Packet::new_unchecked(&b[..MIN_HEADER_LEN])),
            Err(WireError::Truncated)
        );
    }

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
