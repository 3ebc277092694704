//! ICMP (RFC 792) and ICMPv6 (RFC 4443) messages share a layout: type, code, checksum, then a
//! 4-byte field (unused / MTU / id+seq / flags) and the body. [`v4::Repr`] and [`v6::Repr`]
//! are the messages vrouterd sends.

use super::checksum;
use super::field::{check_len, get, view};
use super::WireError;
use std::net::Ipv6Addr;

pub mod field {
    use crate::wire::field::{Field, Rest};
    pub const TYPE: Field = 0..1;
    pub const CODE: Field = 1..2;
    pub const CHECKSUM: Field = 2..4;
    /// The rest of the header, whose meaning depends on the type (the fields below).
    pub const REST_OF_HEADER: Field = 4..8;
    /// Echo request / reply: the identifier.
    pub const ECHO_IDENT: Field = 4..6;
    /// ICMPv4 fragmentation needed: the next-hop MTU (RFC 1191; the two bytes before it are
    /// unused).
    pub const MTU_V4: Field = 6..8;
    /// ICMPv6 packet too big: the MTU.
    pub const MTU_V6: Field = 4..8;
    /// Neighbour advertisement: router, solicited and override flags, the rest reserved.
    pub const ND_FLAGS: Field = 4..8;
    /// Neighbour solicitation / advertisement: the target address.
    pub const ND_TARGET: Field = 8..24;
    /// Neighbour discovery options.
    pub const ND_OPTIONS: Rest = 24..;
    /// What follows the header: for errors, the packet that caused them.
    pub const BODY: Rest = 8..;
}

/// A neighbour discovery option (RFC 4861 section 4.6).
pub mod nd_opt_field {
    use crate::wire::field::Field;
    pub const TYPE: Field = 0..1;
    /// In units of 8 bytes, this header included.
    pub const LENGTH: Field = 1..2;
    /// Source / target link-layer address options: the address (Ethernet).
    pub const LL_ADDR: Field = 2..8;
}

pub const HEADER_LEN: usize = field::BODY.start;

view! {
    /// An ICMP or ICMPv6 message.
    pub struct Packet;
    msg_type / set_msg_type: u8 = field::TYPE;
    code / set_code: u8 = field::CODE;
    checksum / set_checksum: u16 = field::CHECKSUM;
    /// The 4 bytes after the checksum (rest of header).
    rest / set_rest: u32 = field::REST_OF_HEADER;
    echo_ident: u16 = field::ECHO_IDENT;
}

impl<T: AsRef<[u8]>> Packet<T> {
    /// Checks that the header fits.
    #[inline]
    pub fn check(&self) -> Result<(), WireError> {
        check_len(self.buf.as_ref(), HEADER_LEN)
    }
    #[inline]
    pub fn body(&self) -> &[u8] {
        &self.buf.as_ref()[field::BODY]
    }
    /// The target of a neighbour solicitation or advertisement (the buffer must hold
    /// [`v6::ND_LEN`] bytes).
    #[inline]
    pub fn nd_target(&self) -> Ipv6Addr {
        get(self.buf.as_ref(), field::ND_TARGET)
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Packet<T> {
    /// Computes the ICMPv4 checksum over the whole buffer and writes it.
    #[inline]
    pub fn fill_checksum_v4(&mut self) {
        self.set_checksum(0);
        let c = checksum::checksum(self.buf.as_ref());
        self.set_checksum(c);
    }
    /// Computes the ICMPv6 checksum over the whole buffer and the pseudo-header of an IPv6
    /// packet from `src` to `dst`, and writes it.
    #[inline]
    pub fn fill_checksum_v6(&mut self, src: Ipv6Addr, dst: Ipv6Addr) {
        self.set_checksum(0);
        let c = checksum::upper_layer_v6(
            src,
            dst,
            super::ipv6::next_header::ICMPV6,
            self.buf.as_ref(),
        );
        self.set_checksum(c);
    }
}

pub mod v4 {
    use super::{checksum, field, Packet, WireError, HEADER_LEN};
    use crate::wire::field::{get, set};

    pub const ECHO_REPLY: u8 = 0;
    pub const DEST_UNREACHABLE: u8 = 3;
    pub const CODE_FRAG_NEEDED: u8 = 4;
    pub const ECHO_REQUEST: u8 = 8;
    pub const TIME_EXCEEDED: u8 = 11;
    /// Time exceeded: TTL exceeded in transit.
    pub const CODE_TTL_EXCEEDED: u8 = 0;
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

    /// The ICMPv4 messages vrouterd sends, as values. The body (the start of the packet the
    /// message is about) is not part of it: it is already in place behind the header.
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    pub enum Repr {
        /// Time exceeded: TTL exceeded in transit.
        TimeExceeded,
        /// Destination unreachable: fragmentation needed and DF set, with the next-hop MTU
        /// (RFC 1191).
        FragNeeded { mtu: u16 },
    }

    impl Repr {
        /// Reads a message whose checksum verifies over the whole buffer. Other messages are
        /// `Unsupported`.
        pub fn parse<T: AsRef<[u8]> + ?Sized>(p: &Packet<&T>) -> Result<Repr, WireError> {
            p.check()?;
            if !checksum::verifies(p.buf.as_ref()) {
                return Err(WireError::Checksum);
            }
            match (p.msg_type(), p.code()) {
                (TIME_EXCEEDED, CODE_TTL_EXCEEDED) => Ok(Repr::TimeExceeded),
                (DEST_UNREACHABLE, CODE_FRAG_NEEDED) => Ok(Repr::FragNeeded {
                    mtu: get(p.buf.as_ref(), field::MTU_V4),
                }),
                _ => Err(WireError::Unsupported),
            }
        }

        /// Bytes of header [`Repr::emit`] writes.
        pub const fn buffer_len(&self) -> usize {
            HEADER_LEN
        }

        /// Writes the header into `p`, which holds the whole message (the body in place
        /// behind the header), and the checksum over all of it.
        #[inline]
        pub fn emit<T: AsRef<[u8]> + AsMut<[u8]> + ?Sized>(&self, p: &mut Packet<&mut T>) {
            let (t, code) = match *self {
                Repr::TimeExceeded => (TIME_EXCEEDED, CODE_TTL_EXCEEDED),
                Repr::FragNeeded { .. } => (DEST_UNREACHABLE, CODE_FRAG_NEEDED),
            };
            p.set_msg_type(t);
            p.set_code(code);
            p.set_rest(0);
            if let Repr::FragNeeded { mtu } = *self {
                set(p.buf.as_mut(), field::MTU_V4, mtu);
            }
            p.fill_checksum_v4();
        }
    }
}

pub mod v6 {
    use super::{field, nd_opt_field, Packet, WireError, HEADER_LEN};
    use crate::wire::field::{get, set};
    use crate::wire::{checksum, ipv6, MacAddr};
    use std::net::Ipv6Addr;

    pub const PACKET_TOO_BIG: u8 = 2;
    pub const TIME_EXCEEDED: u8 = 3;
    /// Time exceeded: hop limit exceeded in transit.
    pub const CODE_HOP_LIMIT_EXCEEDED: u8 = 0;
    pub const ECHO_REQUEST: u8 = 128;
    pub const ECHO_REPLY: u8 = 129;
    /// Query types and their replies (RFC 4443).
    pub const QUERY_REPLY_PAIRS: [(u8, u8); 1] = [(ECHO_REQUEST, ECHO_REPLY)];
    pub const ROUTER_SOLICIT: u8 = 133;
    pub const ROUTER_ADVERT: u8 = 134;
    pub const NEIGHBOR_SOLICIT: u8 = 135;
    pub const NEIGHBOR_ADVERT: u8 = 136;
    /// NS / NA: header (4) + reserved/flags (4) + target address (16).
    pub const ND_LEN: usize = field::ND_OPTIONS.start;
    pub const OPT_SOURCE_LLADDR: u8 = 1;
    pub const OPT_TARGET_LLADDR: u8 = 2;
    /// A link-layer address option for Ethernet, in bytes.
    pub const LLADDR_OPT_LEN: usize = nd_opt_field::LL_ADDR.end;
    /// NA flags: router, solicited, override.
    pub const NA_ROUTER: u32 = 0x8000_0000;
    pub const NA_SOLICITED: u32 = 0x4000_0000;
    pub const NA_OVERRIDE: u32 = 0x2000_0000;
    const NA_FLAGS: u32 = NA_ROUTER | NA_SOLICITED | NA_OVERRIDE;
    pub const OPT_PREFIX_INFO: u8 = 3;
    pub const OPT_MTU: u8 = 5;
    /// Prefix information flags: on-link, autonomous address configuration.
    pub const PREFIX_ON_LINK: u8 = 0x80;
    pub const PREFIX_AUTONOMOUS: u8 = 0x40;
    /// A router advertisement as vrouterd sends it: the fixed part (16 bytes), the source
    /// link-layer address (8), MTU (8) and prefix information (32) options.
    pub const RA_LEN: usize = 64;
    /// The hop limit a router advertisement suggests.
    const RA_HOP_LIMIT: u8 = 64;

    /// The ICMPv6 messages vrouterd sends, as values. An error's body (the start of the packet
    /// it is about) is not part of it: it is already in place behind the header.
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    pub enum Repr {
        /// Time exceeded: hop limit exceeded in transit.
        TimeExceeded,
        /// Packet too big, with the MTU of the next hop.
        PacketTooBig { mtu: u32 },
        /// Neighbour advertisement: "`target` is at `lladdr`".
        NeighborAdvert {
            /// [`NA_ROUTER`], [`NA_SOLICITED`], [`NA_OVERRIDE`].
            flags: u32,
            target: Ipv6Addr,
            /// The target link-layer address option.
            lladdr: Option<MacAddr>,
        },
        /// Router advertisement (RFC 4861 section 4.2) from a router at `lladdr`, with the
        /// link's MTU and one prefix.
        RouterAdvert {
            /// Seconds it is a default router for.
            router_lifetime: u16,
            lladdr: MacAddr,
            mtu: u32,
            prefix: Ipv6Addr,
            prefix_len: u8,
            /// [`PREFIX_ON_LINK`], [`PREFIX_AUTONOMOUS`].
            prefix_flags: u8,
            valid_lifetime: u32,
            preferred_lifetime: u32,
        },
    }

    impl Repr {
        /// Reads a message sent from `src` to `dst` whose checksum verifies over the whole
        /// buffer. Other messages are `Unsupported`.
        pub fn parse<T: AsRef<[u8]> + ?Sized>(
            src: Ipv6Addr,
            dst: Ipv6Addr,
            p: &Packet<&T>,
        ) -> Result<Repr, WireError> {
            p.check()?;
            let b = p.buf.as_ref();
            let sum = checksum::pseudo_v6(
                src.octets(),
                dst.octets(),
                ipv6::next_header::ICMPV6,
                b.len() as u32,
            );
            if checksum::fold(checksum::sum(sum, b)) != 0xffff {
                return Err(WireError::Checksum);
            }
            match (p.msg_type(), p.code()) {
                (TIME_EXCEEDED, CODE_HOP_LIMIT_EXCEEDED) => Ok(Repr::TimeExceeded),
                (PACKET_TOO_BIG, 0) => Ok(Repr::PacketTooBig {
                    mtu: get(b, field::MTU_V6),
                }),
                (NEIGHBOR_ADVERT, 0) => {
                    if b.len() < ND_LEN {
                        return Err(WireError::Truncated);
                    }
                    Ok(Repr::NeighborAdvert {
                        flags: get::<u32>(b, field::ND_FLAGS) & NA_FLAGS,
                        target: p.nd_target(),
                        lladdr: target_lladdr(&b[field::ND_OPTIONS])?,
                    })
                }
                _ => Err(WireError::Unsupported),
            }
        }

        /// Bytes [`Repr::emit`] writes: the header of an error, the whole of an
        /// advertisement.
        pub const fn buffer_len(&self) -> usize {
            match self {
                Repr::NeighborAdvert {
                    lladdr: Some(_), ..
                } => ND_LEN + LLADDR_OPT_LEN,
                Repr::NeighborAdvert { lladdr: None, .. } => ND_LEN,
                Repr::RouterAdvert { .. } => RA_LEN,
                _ => HEADER_LEN,
            }
        }

        /// Writes the message into `p`, which holds all of it (an error's body in place behind
        /// the header), and the checksum over all of it as sent from `src` to `dst`.
        #[inline]
        pub fn emit<T: AsRef<[u8]> + AsMut<[u8]> + ?Sized>(
            &self,
            src: Ipv6Addr,
            dst: Ipv6Addr,
            p: &mut Packet<&mut T>,
        ) {
            match *self {
                Repr::TimeExceeded => {
                    p.set_msg_type(TIME_EXCEEDED);
                    p.set_code(CODE_HOP_LIMIT_EXCEEDED);
                    p.set_rest(0);
                }
                Repr::PacketTooBig { mtu } => {
                    p.set_msg_type(PACKET_TOO_BIG);
                    p.set_code(0);
                    set(p.buf.as_mut(), field::MTU_V6, mtu);
                }
                Repr::NeighborAdvert {
                    flags,
                    target,
                    lladdr,
                } => {
                    p.set_msg_type(NEIGHBOR_ADVERT);
                    p.set_code(0);
                    let b = p.buf.as_mut();
                    set(b, field::ND_FLAGS, flags & NA_FLAGS);
                    set(b, field::ND_TARGET, target);
                    if let Some(mac) = lladdr {
                        let opt = &mut b[field::ND_OPTIONS];
                        set(opt, nd_opt_field::TYPE, OPT_TARGET_LLADDR);
                        set(opt, nd_opt_field::LENGTH, (LLADDR_OPT_LEN / 8) as u8);
                        set(opt, nd_opt_field::LL_ADDR, mac);
                    }
                }
                Repr::RouterAdvert {
                    router_lifetime,
                    lladdr,
                    mtu,
                    prefix,
                    prefix_len,
                    prefix_flags,
                    valid_lifetime,
                    preferred_lifetime,
                } => {
                    p.set_msg_type(ROUTER_ADVERT);
                    p.set_code(0);
                    let b = &mut p.buf.as_mut()[..RA_LEN];
                    b[4] = RA_HOP_LIMIT;
                    // No managed / other-configuration flags: nothing is served by DHCPv6.
                    b[5] = 0;
                    b[6..8].copy_from_slice(&router_lifetime.to_be_bytes());
                    // Reachable time and retransmission timer: unspecified.
                    b[8..16].fill(0);
                    b[16..18].copy_from_slice(&[OPT_SOURCE_LLADDR, 1]);
                    b[18..24].copy_from_slice(&lladdr.0);
                    b[24..28].copy_from_slice(&[OPT_MTU, 1, 0, 0]);
                    b[28..32].copy_from_slice(&mtu.to_be_bytes());
                    b[32..36].copy_from_slice(&[OPT_PREFIX_INFO, 4, prefix_len, prefix_flags]);
                    b[36..40].copy_from_slice(&valid_lifetime.to_be_bytes());
                    b[40..44].copy_from_slice(&preferred_lifetime.to_be_bytes());
                    b[44..48].fill(0);
                    b[48..64].copy_from_slice(&prefix.octets());
                }
            }
            p.fill_checksum_v6(src, dst);
        }
    }

    /// The target link-layer address among neighbour discovery `options`, if there is one.
    fn target_lladdr(mut options: &[u8]) -> Result<Option<MacAddr>, WireError> {
        let mut found = None;
        while !options.is_empty() {
            if options.len() < nd_opt_field::LENGTH.end {
                return Err(WireError::Truncated);
            }
            let len = usize::from(get::<u8>(options, nd_opt_field::LENGTH)) * 8;
            if len == 0 {
                return Err(WireError::Malformed);
            }
            let opt = options.get(..len).ok_or(WireError::Truncated)?;
            if get::<u8>(opt, nd_opt_field::TYPE) == OPT_TARGET_LLADDR && len == LLADDR_OPT_LEN {
                found = Some(get(opt, nd_opt_field::LL_ADDR));
            }
            options = &options[len..];
        }
        Ok(found)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::MacAddr;
    use etherparse::{icmpv4, icmpv6, Icmpv4Header, Icmpv4Type, Icmpv6Header, Icmpv6Type};
    use proptest::prelude::*;

    fn body() -> impl Strategy<Value = Vec<u8>> {
        proptest::collection::vec(any::<u8>(), 0..64)
    }

    fn v4_repr() -> impl Strategy<Value = v4::Repr> {
        prop_oneof![
            Just(v4::Repr::TimeExceeded),
            any::<u16>().prop_map(|mtu| v4::Repr::FragNeeded { mtu }),
        ]
    }

    fn v6_error() -> impl Strategy<Value = v6::Repr> {
        prop_oneof![
            Just(v6::Repr::TimeExceeded),
            any::<u32>().prop_map(|mtu| v6::Repr::PacketTooBig { mtu }),
        ]
    }

    fn v6_na() -> impl Strategy<Value = v6::Repr> {
        (0u32..8, any::<[u8; 16]>(), any::<Option<[u8; 6]>>()).prop_map(|(f, t, mac)| {
            v6::Repr::NeighborAdvert {
                flags: f << 29,
                target: Ipv6Addr::from(t),
                lladdr: mac.map(MacAddr),
            }
        })
    }

    /// The message as emitted: header, then `body` for an error.
    fn emitted_v4(r: &v4::Repr, body: &[u8]) -> Vec<u8> {
        let mut b = vec![0xee; r.buffer_len()];
        b.extend_from_slice(body);
        r.emit(&mut Packet::new_unchecked(&mut b[..]));
        b
    }

    fn emitted_v6(r: &v6::Repr, src: Ipv6Addr, dst: Ipv6Addr, body: &[u8]) -> Vec<u8> {
        let mut b = vec![0xee; r.buffer_len()];
        if !matches!(r, v6::Repr::NeighborAdvert { .. }) {
            b.extend_from_slice(body);
        }
        r.emit(src, dst, &mut Packet::new_unchecked(&mut b[..]));
        b
    }

    fn oracle_v4(r: &v4::Repr) -> Icmpv4Type {
        match *r {
            v4::Repr::TimeExceeded => {
                Icmpv4Type::TimeExceeded(icmpv4::TimeExceededCode::TtlExceededInTransit)
            }
            v4::Repr::FragNeeded { mtu } => Icmpv4Type::DestinationUnreachable(
                icmpv4::DestUnreachableHeader::FragmentationNeeded { next_hop_mtu: mtu },
            ),
        }
    }

    /// etherparse decodes no neighbour discovery: an advertisement is its `Unknown` type, with
    /// the target and option as payload, written out here per RFC 4861 4.4 and 4.6.1.
    fn oracle_v6(r: &v6::Repr) -> (Icmpv6Type, Vec<u8>) {
        match *r {
            v6::Repr::TimeExceeded => (
                Icmpv6Type::TimeExceeded(icmpv6::TimeExceededCode::HopLimitExceeded),
                vec![],
            ),
            v6::Repr::PacketTooBig { mtu } => (Icmpv6Type::PacketTooBig { mtu }, vec![]),
            v6::Repr::NeighborAdvert {
                flags,
                target,
                lladdr,
            } => {
                let mut payload = target.octets().to_vec();
                if let Some(mac) = lladdr {
                    payload.extend_from_slice(&[2, 1]);
                    payload.extend_from_slice(&mac.0);
                }
                let t = Icmpv6Type::Unknown {
                    type_u8: 136,
                    code_u8: 0,
                    bytes5to8: flags.to_be_bytes(),
                };
                (t, payload)
            }
            // RFC 4861 4.2 (fixed part), 4.6.1 (source link-layer address), 4.6.2 (prefix
            // information), 4.6.4 (MTU).
            v6::Repr::RouterAdvert {
                router_lifetime,
                lladdr,
                mtu,
                prefix,
                prefix_len,
                prefix_flags,
                valid_lifetime,
                preferred_lifetime,
            } => {
                let l = router_lifetime.to_be_bytes();
                let t = Icmpv6Type::Unknown {
                    type_u8: 134,
                    code_u8: 0,
                    bytes5to8: [64, 0, l[0], l[1]],
                };
                let mut payload = vec![0u8; 8];
                payload.extend_from_slice(&[1, 1]);
                payload.extend_from_slice(&lladdr.0);
                payload.extend_from_slice(&[5, 1, 0, 0]);
                payload.extend_from_slice(&mtu.to_be_bytes());
                payload.extend_from_slice(&[3, 4, prefix_len, prefix_flags]);
                payload.extend_from_slice(&valid_lifetime.to_be_bytes());
                payload.extend_from_slice(&preferred_lifetime.to_be_bytes());
                payload.extend_from_slice(&[0; 4]);
                payload.extend_from_slice(&prefix.octets());
                (t, payload)
            }
        }
    }

    #[test]
    fn a_router_advertisement_is_laid_out_as_rfc_4861_says() {
        let r = v6::Repr::RouterAdvert {
            router_lifetime: 9000,
            lladdr: MacAddr([0, 0, 0x5e, 0, 1, 0]),
            mtu: 1400,
            prefix: "2001:db8:18:1::".parse().unwrap(),
            prefix_len: 64,
            prefix_flags: v6::PREFIX_ON_LINK | v6::PREFIX_AUTONOMOUS,
            valid_lifetime: 2_592_000,
            preferred_lifetime: 604_800,
        };
        let (src, dst): (Ipv6Addr, Ipv6Addr) = (
            "fe80::200:5eff:fe00:100".parse().unwrap(),
            "fe80::1".parse().unwrap(),
        );
        let mut b = vec![0xaa; r.buffer_len()];
        r.emit(src, dst, &mut Packet::new_unchecked(&mut b[..]));
        let (t, payload) = oracle_v6(&r);
        let h = Icmpv6Header::with_checksum(t, src.octets(), dst.octets(), &payload).unwrap();
        let mut want = h.to_bytes().to_vec();
        want.extend_from_slice(&payload);
        assert_eq!(b, want);
    }

    proptest! {
        #[test]
        fn v4_emit_then_parse_round_trips(r in v4_repr(), body in body()) {
            let b = emitted_v4(&r, &body);
            prop_assert_eq!(v4::Repr::parse(&Packet::new_unchecked(&b[..])), Ok(r));
            let p = Packet::new_unchecked(&b[..]);
            prop_assert_eq!(p.body(), &body[..]);
        }

        #[test]
        fn v4_agrees_with_etherparse(r in v4_repr(), body in body()) {
            let b = emitted_v4(&r, &body);
            let (h, rest) = Icmpv4Header::from_slice(&b).expect("oracle parses");
            prop_assert_eq!(rest, &body[..]);
            prop_assert_eq!(&h.icmp_type, &oracle_v4(&r));
            prop_assert_eq!(h.checksum, h.icmp_type.calc_checksum(&body));
            let mut oracle = Icmpv4Header::with_checksum(oracle_v4(&r), &body).to_bytes().to_vec();
            oracle.extend_from_slice(&body);
            prop_assert_eq!(v4::Repr::parse(&Packet::new_unchecked(&oracle[..])), Ok(r));
        }

        #[test]
        fn v6_emit_then_parse_round_trips(
            r in prop_oneof![v6_error(), v6_na()],
            src in any::<[u8; 16]>(),
            dst in any::<[u8; 16]>(),
            body in body(),
        ) {
            let (src, dst) = (Ipv6Addr::from(src), Ipv6Addr::from(dst));
            let b = emitted_v6(&r, src, dst, &body);
            prop_assert_eq!(v6::Repr::parse(src, dst, &Packet::new_unchecked(&b[..])), Ok(r));
        }

        #[test]
        fn v6_agrees_with_etherparse(
            r in prop_oneof![v6_error(), v6_na()],
            src in any::<[u8; 16]>(),
            dst in any::<[u8; 16]>(),
            body in body(),
        ) {
            let (src6, dst6) = (Ipv6Addr::from(src), Ipv6Addr::from(dst));
            let b = emitted_v6(&r, src6, dst6, &body);
            let (t, mut payload) = oracle_v6(&r);
            if payload.is_empty() {
                payload = body.clone();
            }
            let (h, rest) = Icmpv6Header::from_slice(&b).expect("oracle parses");
            prop_assert_eq!(rest, &payload[..]);
            prop_assert_eq!(&h.icmp_type, &t);
            prop_assert_eq!(h.checksum, t.calc_checksum(src, dst, &payload).unwrap());
            let mut oracle = Icmpv6Header::with_checksum(t, src, dst, &payload)
                .unwrap()
                .to_bytes()
                .to_vec();
            oracle.extend_from_slice(&payload);
            prop_assert_eq!(v6::Repr::parse(src6, dst6, &Packet::new_unchecked(&oracle[..])), Ok(r));
        }
    }

    #[test]
    fn parse_refuses_bad_checksums_and_other_messages() {
        let b = emitted_v4(&v4::Repr::TimeExceeded, b"quote");
        let mut bad = b.clone();
        bad[HEADER_LEN] ^= 1;
        assert_eq!(
            v4::Repr::parse(&Packet::new_unchecked(&bad[..])),
            Err(WireError::Checksum)
        );
        let mut echo = b;
        echo[field::TYPE.start] = v4::ECHO_REQUEST;
        Packet::new_unchecked(&mut echo[..]).fill_checksum_v4();
        assert_eq!(
            v4::Repr::parse(&Packet::new_unchecked(&echo[..])),
            Err(WireError::Unsupported)
        );
        let (src, dst) = (Ipv6Addr::LOCALHOST, Ipv6Addr::UNSPECIFIED);
        let b = emitted_v6(&v6::Repr::TimeExceeded, src, dst, b"quote");
        assert_eq!(
            // Sent elsewhere than it says: the pseudo-header does not match.
            v6::Repr::parse(src, Ipv6Addr::LOCALHOST, &Packet::new_unchecked(&b[..])),
            Err(WireError::Checksum)
        );
        assert_eq!(
            v4::Repr::parse(&Packet::new_unchecked(&b[..HEADER_LEN - 1])),
            Err(WireError::Truncated)
        );
    }

    #[test]
    fn a_solicitation_names_its_target() {
        let target = Ipv6Addr::new(0xfd00, 0, 0, 0, 0, 0, 0, 1);
        let mut ns = [0u8; v6::ND_LEN];
        ns[field::TYPE.start] = v6::NEIGHBOR_SOLICIT;
        ns[field::ND_TARGET].copy_from_slice(&target.octets());
        assert_eq!(Packet::new_checked(&ns[..]).unwrap().nd_target(), target);
    }
}
