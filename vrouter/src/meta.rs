//! Parse a packet once into [`PacketMeta`]: where its headers are, its addresses and ports, and
//! a flow hash. Later stages work from the metadata and never re-parse.

use crate::stats::DropReason;
use crate::wire::field::get;
use crate::wire::{arp, checksum, ethernet, icmp, ipv4, ipv6, tcp, udp, WireError};

/// What the L3 header is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum L3 {
    #[default]
    Other,
    Arp,
    Ipv4,
    Ipv6,
}

/// The parse result for one packet. Addresses are kept as `u128` (IPv4 in the low 32 bits) so
/// one flow key shape covers both families.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct PacketMeta {
    /// Offset of the L3 header in the data (after Ethernet and any 802.1Q tag).
    pub l3_off: u16,
    /// Offset of the L4 header (meaningful for IPv4 / IPv6 only).
    pub l4_off: u16,
    /// 802.1Q VLAN id, if tagged.
    pub vlan: Option<u16>,
    /// The ethertype after any VLAN tag.
    pub ethertype: u16,
    pub l3: L3,
    /// IP protocol / final next header.
    pub proto: u8,
    /// IPv4 TTL / IPv6 hop limit.
    pub ttl: u8,
    /// IPv4 DF bit (IPv6: always true, routers never fragment).
    pub dont_frag: bool,
    /// A fragment (first or later): ports are not used for the flow.
    pub fragment: bool,
    /// L3 length from the IP header (total length / 40 + payload length).
    pub l3_len: u16,
    /// The L3 length that must fit an egress MTU: `l3_len`, or for a GSO packet the length of
    /// its largest segment (set by the pipeline from the packet's offload state).
    pub mtu_len: u16,
    pub src: u128,
    pub dst: u128,
    /// Source / destination port (TCP, UDP). For ICMP / ICMPv6 the id and type stand in for
    /// ports, so an echo exchange is a flow of its own: the echo identifier as source port (0
    /// for other messages) and the message type as destination port. 0 otherwise, and for
    /// fragments.
    pub sport: u16,
    pub dport: u16,
    /// The VRF the packet is forwarded in (set by ingress).
    pub vrf: u16,
    /// Bytes of the whole frame as parsed (every segment's).
    pub frame_len: u32,
}

impl PacketMeta {
    /// [`flow_hash`] of this packet: computed where a consumer needs it (ECMP, a tunnel's UDP
    /// source port, the flow stage), not at parse time, so the plain routed path never pays
    /// for it.
    #[inline(always)]
    pub fn flow_hash(&self) -> u32 {
        flow_hash(self)
    }
    pub fn dst_v4(&self) -> u32 {
        self.dst as u32
    }
    pub fn src_v4(&self) -> u32 {
        self.src as u32
    }
}

impl From<WireError> for DropReason {
    fn from(e: WireError) -> Self {
        match e {
            WireError::Truncated => DropReason::Truncated,
            WireError::Malformed => DropReason::Malformed,
            WireError::Checksum => DropReason::BadChecksum,
            // Only a `Repr` refuses a valid header, and forwarding reads views, not `Repr`s.
            WireError::Unsupported => DropReason::Malformed,
        }
    }
}

/// Parse an Ethernet frame (optionally 802.1Q tagged) and what it carries.
#[inline]
pub fn parse_ethernet(data: &[u8]) -> Result<PacketMeta, DropReason> {
    let mut m = PacketMeta::default();
    parse_ethernet_into(data, &mut m)?;
    Ok(m)
}

/// [`parse_ethernet`] into caller-owned metadata (the pipeline keeps one per burst slot, so
/// nothing is copied around).
#[inline(always)]
pub fn parse_ethernet_into(data: &[u8], m: &mut PacketMeta) -> Result<(), DropReason> {
    parse::<false>(FrameBytes::whole(data), m)
}

/// [`parse_ethernet_into`] for a frame of `frame_len` bytes whose first segment, holding every
/// header, is `data` (a large packet in a segment chain).
#[inline(always)]
pub fn parse_frame_into(
    data: &[u8],
    frame_len: usize,
    m: &mut PacketMeta,
) -> Result<(), DropReason> {
    let f = FrameBytes {
        head: data,
        len: frame_len,
    };
    if frame_len == data.len() {
        parse::<false>(f, m)
    } else {
        parse::<true>(f, m)
    }
}

/// What the parse reads: the frame's first segment, which holds every header, and the length
/// of the whole frame (longer when its payload continues in further segments).
#[derive(Clone, Copy)]
struct FrameBytes<'a> {
    head: &'a [u8],
    len: usize,
}

impl<'a> FrameBytes<'a> {
    /// A frame in one segment.
    #[inline(always)]
    fn whole(data: &'a [u8]) -> Self {
        FrameBytes {
            head: data,
            len: data.len(),
        }
    }

    /// The first segment from `off` on, and the bytes the whole frame holds from there: for a
    /// frame in one segment (`SEG` false) the slice's own length, so a view's checks against
    /// the frame fold into the usual ones against the slice.
    #[inline(always)]
    fn from<const SEG: bool>(self, off: usize) -> (&'a [u8], usize) {
        let rest = &self.head[off..];
        let avail = if SEG {
            self.len.saturating_sub(off)
        } else {
            rest.len()
        };
        (rest, avail)
    }
}

/// The parse, compiled twice: for a frame in one segment (`SEG` false: every length check
/// against the data, as always) and for one whose payload continues in further segments
/// (lengths checked against the frame's length). The common case pays nothing for the other.
#[inline(always)]
fn parse<const SEG: bool>(f: FrameBytes<'_>, m: &mut PacketMeta) -> Result<(), DropReason> {
    let data = f.head;
    let eth = ethernet::Frame::new_checked(data)?;
    *m = PacketMeta {
        frame_len: f.len as u32,
        ..PacketMeta::default()
    };
    let mut et = eth.ethertype();
    let mut off = ethernet::HEADER_LEN;
    if et == ethernet::ethertype::VLAN {
        let tag = ethernet::VlanTag::new_checked(&data[off..])?;
        m.vlan = Some(tag.vid());
        et = tag.ethertype();
        off += ethernet::VLAN_TAG_LEN;
    }
    m.ethertype = et;
    m.l3_off = off as u16;
    match et {
        ethernet::ethertype::IPV4 => parse_ipv4::<SEG>(f, off, m)?,
        ethernet::ethertype::IPV6 => parse_ipv6::<SEG>(f, off, m)?,
        ethernet::ethertype::ARP => {
            arp::Packet::new_checked(&data[off..])?;
            m.l3 = L3::Arp;
        }
        _ => m.l3 = L3::Other,
    }
    Ok(())
}

/// Parse a bare IP packet starting at `off` (the payload of an MPLS label), by its version
/// nibble, in a frame of `frame_len` bytes whose first segment, holding every header, is `data`
/// (longer than `data` when a jumbo frame continues in further segments).
#[inline]
pub fn parse_ip(data: &[u8], frame_len: usize, off: usize) -> Result<PacketMeta, DropReason> {
    let mut m = PacketMeta {
        l3_off: off as u16,
        frame_len: frame_len as u32,
        ..PacketMeta::default()
    };
    let f = FrameBytes {
        head: data,
        len: frame_len,
    };
    let seg = frame_len != data.len();
    match data.get(off).map(|b| b >> 4) {
        Some(4) => {
            m.ethertype = ethernet::ethertype::IPV4;
            if seg {
                parse_ipv4::<true>(f, off, &mut m)?
            } else {
                parse_ipv4::<false>(f, off, &mut m)?
            }
        }
        Some(6) => {
            m.ethertype = ethernet::ethertype::IPV6;
            if seg {
                parse_ipv6::<true>(f, off, &mut m)?
            } else {
                parse_ipv6::<false>(f, off, &mut m)?
            }
        }
        Some(_) => return Err(DropReason::Malformed),
        None => return Err(DropReason::Truncated),
    }
    Ok(m)
}

#[inline(always)]
fn parse_ipv4<const SEG: bool>(
    f: FrameBytes<'_>,
    off: usize,
    m: &mut PacketMeta,
) -> Result<(), DropReason> {
    let (l3, avail) = f.from::<SEG>(off);
    let ip = ipv4::Packet::new_checked_in(l3, avail)?;
    let (data, frame_len) = (f.head, f.len);
    let hl = ip.header_len();
    let tl = usize::from(ip.total_len());
    // The fixed part as an array: every field below is read at a constant offset that the
    // compiler has checked once, and the usual 20-byte header sums in five unrolled adds.
    let Some(fixed) = data[off..].first_chunk::<{ ipv4::MIN_HEADER_LEN }>() else {
        return Err(DropReason::Truncated);
    };
    let ok = if hl == ipv4::MIN_HEADER_LEN {
        checksum::verifies(fixed)
    } else {
        checksum::verifies(&data[off..off + hl])
    };
    if !ok {
        return Err(DropReason::BadChecksum);
    }
    let ip = ipv4::Packet::new_unchecked(fixed);
    m.l3 = L3::Ipv4;
    m.proto = ip.protocol();
    m.ttl = ip.ttl();
    m.dont_frag = ip.dont_frag();
    m.fragment = ip.more_frags() || ip.frag_offset() != 0;
    m.l3_len = tl as u16;
    m.mtu_len = m.l3_len;
    let (src, dst) = (u32::from(ip.src()), u32::from(ip.dst()));
    m.src = u128::from(src);
    m.dst = u128::from(dst);
    let l4 = off + hl;
    m.l4_off = l4 as u16;
    if !m.fragment {
        if SEG {
            // The L4 header is in the first segment; its payload may continue in others.
            let avail = (off + tl).min(frame_len).saturating_sub(l4);
            parse_l4::<true>(&data[l4..(off + tl).min(data.len())], avail, m)?;
        } else {
            parse_l4::<false>(&data[l4..off + tl], 0, m)?;
        }
    }
    Ok(())
}

fn parse_ipv6<const SEG: bool>(
    f: FrameBytes<'_>,
    off: usize,
    m: &mut PacketMeta,
) -> Result<(), DropReason> {
    let (l3, avail) = f.from::<SEG>(off);
    let ip = ipv6::Packet::new_checked_in(l3, avail)?;
    let (data, frame_len) = (f.head, f.len);
    m.l3 = L3::Ipv6;
    m.ttl = ip.hop_limit();
    m.dont_frag = true;
    m.l3_len = (ipv6::HEADER_LEN as u16).saturating_add(ip.payload_len());
    m.mtu_len = m.l3_len;
    m.src = u128::from_be_bytes(ip.src_bytes());
    m.dst = u128::from_be_bytes(ip.dst_bytes());
    let end = off + usize::from(m.l3_len);
    let mut next = ip.next_header();
    let mut l4 = off + ipv6::HEADER_LEN;
    // Walk a few extension headers to find the transport header.
    for _ in 0..4 {
        use ipv6::{ext_field, next_header as nh};
        match next {
            nh::HOP_BY_HOP | nh::ROUTING | nh::DEST_OPTS => {
                let h = data
                    .get(l4..l4 + ext_field::LENGTH.end)
                    .ok_or(DropReason::Truncated)?;
                next = get(h, ext_field::NXT_HDR);
                l4 += (usize::from(get::<u8>(h, ext_field::LENGTH)) + 1) * 8;
            }
            nh::FRAGMENT => {
                let h = data
                    .get(l4..l4 + ipv6::FRAGMENT_HEADER_LEN)
                    .ok_or(DropReason::Truncated)?;
                next = get(h, ext_field::NXT_HDR);
                m.fragment = true;
                l4 += ipv6::FRAGMENT_HEADER_LEN;
            }
            _ => break,
        }
        if l4 > end {
            return Err(DropReason::Truncated);
        }
    }
    m.proto = next;
    m.l4_off = l4 as u16;
    let avail = if SEG {
        end.min(frame_len).saturating_sub(l4)
    } else {
        0
    };
    let end = if SEG { end.min(data.len()) } else { end };
    if !m.fragment && l4 <= end {
        parse_l4::<SEG>(&data[l4..end], avail, m)?;
    }
    Ok(())
}

#[inline(always)]
/// `l4` is the L4 header and what of its payload the first segment holds; `avail` the bytes of
/// the L4 packet in the whole frame.
fn parse_l4<const SEG: bool>(
    l4: &[u8],
    avail: usize,
    m: &mut PacketMeta,
) -> Result<(), DropReason> {
    match m.proto {
        ipv4::proto::UDP => {
            let u = if SEG {
                udp::Packet::new_checked_in(l4, avail)?
            } else {
                udp::Packet::new_checked(l4)?
            };
            m.sport = u.src_port();
            m.dport = u.dst_port();
        }
        ipv4::proto::TCP => {
            let t = tcp::Packet::new_checked(l4)?;
            m.sport = t.src_port();
            m.dport = t.dst_port();
        }
        ipv4::proto::ICMP | ipv4::proto::ICMPV6 => {
            let i = icmp::Packet::new_checked(l4)?;
            let echo = matches!(
                (m.proto, i.msg_type()),
                (
                    ipv4::proto::ICMP,
                    icmp::v4::ECHO_REQUEST | icmp::v4::ECHO_REPLY
                ) | (
                    ipv4::proto::ICMPV6,
                    icmp::v6::ECHO_REQUEST | icmp::v6::ECHO_REPLY
                )
            );
            if echo {
                m.sport = i.echo_ident();
            }
            m.dport = u16::from(i.msg_type());
        }
        _ => {}
    }
    Ok(())
}

/// A hash of the 5-tuple: the same for every packet of a flow (TTL, length, payload and IP id
/// do not enter), spread over all 32 bits.
#[inline(always)]
pub fn flow_hash(m: &PacketMeta) -> u32 {
    hash_parts(
        fold_addr(m.src),
        fold_addr(m.dst),
        m.sport,
        m.dport,
        m.proto,
    )
}

/// An address as 64 bits for the hash (an IPv4 address is itself).
#[inline(always)]
fn fold_addr(a: u128) -> u64 {
    (a as u64) ^ ((a >> 64) as u64).rotate_left(17)
}

#[inline(always)]
fn hash_parts(a: u64, b: u64, sport: u16, dport: u16, proto: u8) -> u32 {
    let c = (((u64::from(sport) << 16) | u64::from(dport)) << 8) | u64::from(proto);
    // Three independent multiplies (they run in parallel), then fold the well-mixed high half.
    let h = a.wrapping_mul(0x9E37_79B9_7F4A_7C15)
        ^ b.rotate_left(29).wrapping_mul(0xC2B2_AE3D_27D4_EB4F)
        ^ c.wrapping_mul(0x1656_67B1_9E37_79F9);
    ((h >> 32) ^ (h >> 7)) as u32
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::{ipv4, tcp, udp};
    use etherparse::{NetHeaders, PacketBuilder, PacketHeaders, TransportHeader, VlanHeader};
    use proptest::prelude::*;

    #[derive(Debug, Clone)]
    struct Spec {
        vlan: Option<u16>,
        v6: bool,
        l4: u8,
        src: [u8; 16],
        dst: [u8; 16],
        ttl: u8,
        sport: u16,
        dport: u16,
        payload: Vec<u8>,
    }

    fn spec() -> impl Strategy<Value = Spec> {
        (
            proptest::option::of(0u16..4096),
            any::<bool>(),
            0u8..3,
            any::<[u8; 16]>(),
            any::<[u8; 16]>(),
            any::<u8>(),
            any::<u16>(),
            any::<u16>(),
            proptest::collection::vec(any::<u8>(), 0..64),
        )
            .prop_map(
                |(vlan, v6, l4, src, dst, ttl, sport, dport, payload)| Spec {
                    vlan,
                    v6,
                    l4,
                    src,
                    dst,
                    ttl,
                    sport,
                    dport,
                    payload,
                },
            )
    }

    /// Build the frame with etherparse (the independent implementation), then tag it.
    fn build(s: &Spec) -> Vec<u8> {
        let eth = PacketBuilder::ethernet2([2, 0, 0, 0, 0, 1], [2, 0, 0, 0, 0, 2]);
        let ip = if s.v6 {
            eth.ipv6(s.src, s.dst, s.ttl)
        } else {
            let mut a = [0u8; 4];
            let mut b = [0u8; 4];
            a.copy_from_slice(&s.src[..4]);
            b.copy_from_slice(&s.dst[..4]);
            eth.ipv4(a, b, s.ttl)
        };
        let mut out = Vec::new();
        let r = match (s.l4, s.v6) {
            (0, _) => ip.udp(s.sport, s.dport).write(&mut out, &s.payload),
            (1, _) => ip
                .tcp(s.sport, s.dport, 7, 1000)
                .write(&mut out, &s.payload),
            (_, false) => ip
                .icmpv4_echo_request(s.sport, s.dport)
                .write(&mut out, &s.payload),
            (_, true) => ip
                .icmpv6_echo_request(s.sport, s.dport)
                .write(&mut out, &s.payload),
        };
        r.expect("etherparse builds the frame");
        if let Some(v) = s.vlan {
            let et = [out[12], out[13]];
            out.splice(12..14, [0x81, 0x00, (v >> 8) as u8, v as u8, et[0], et[1]]);
        }
        out
    }

    proptest! {
        #[test]
        fn parse_agrees_with_etherparse_on_valid_frames(s in spec()) {
            let frame = build(&s);
            let m = parse_ethernet(&frame).expect("valid frame parses");
            let oracle = PacketHeaders::from_ethernet_slice(&frame).expect("oracle parses");
            match oracle.vlan {
                Some(VlanHeader::Single(v)) => prop_assert_eq!(m.vlan, Some(v.vlan_id.value())),
                None => prop_assert_eq!(m.vlan, None),
                Some(other) => prop_assert!(false, "unexpected {:?}", other),
            }
            let l3 = &frame[usize::from(m.l3_off)..];
            match oracle.net.expect("oracle has an IP header") {
                NetHeaders::Ipv4(h, _) => {
                    prop_assert_eq!(m.l3, L3::Ipv4);
                    prop_assert_eq!(m.src_v4(), u32::from_be_bytes(h.source));
                    prop_assert_eq!(m.dst_v4(), u32::from_be_bytes(h.destination));
                    prop_assert_eq!(m.ttl, h.time_to_live);
                    prop_assert_eq!(m.proto, h.protocol.0);
                    prop_assert_eq!(m.dont_frag, h.dont_fragment);
                    prop_assert_eq!(m.l3_len, h.total_len);
                    let p = ipv4::Packet::new_checked(l3).unwrap();
                    prop_assert_eq!(p.ident(), h.identification);
                    prop_assert_eq!(p.checksum(), h.header_checksum);
                    prop_assert_eq!(p.header_len(), h.header_len());
                    prop_assert!(p.verify_checksum());
                }
                NetHeaders::Ipv6(h, _) => {
                    prop_assert_eq!(m.l3, L3::Ipv6);
                    prop_assert_eq!(m.src, u128::from_be_bytes(h.source));
                    prop_assert_eq!(m.dst, u128::from_be_bytes(h.destination));
                    prop_assert_eq!(m.ttl, h.hop_limit);
                    prop_assert_eq!(m.proto, h.next_header.0);
                    prop_assert_eq!(m.l3_len, 40 + h.payload_length);
                }
            }
            let l4 = &frame[usize::from(m.l4_off)..];
            match oracle.transport.expect("oracle has a transport header") {
                TransportHeader::Udp(u) => {
                    prop_assert_eq!((m.sport, m.dport), (u.source_port, u.destination_port));
                    let p = udp::Packet::new_checked(l4).unwrap();
                    prop_assert_eq!(p.len(), u.length);
                    prop_assert_eq!(p.checksum(), u.checksum);
                }
                TransportHeader::Tcp(t) => {
                    prop_assert_eq!((m.sport, m.dport), (t.source_port, t.destination_port));
                    let p = tcp::Packet::new_checked(l4).unwrap();
                    prop_assert_eq!(p.seq(), t.sequence_number);
                    prop_assert_eq!(p.window(), t.window_size);
                    prop_assert_eq!(p.checksum(), t.checksum);
                    prop_assert_eq!(p.header_len(), t.header_len());
                }
                TransportHeader::Icmpv4(_) | TransportHeader::Icmpv6(_) => {
                    // Echo: the identifier is the flow's source port, the type its destination.
                    prop_assert_eq!(m.sport, s.sport);
                    prop_assert_eq!(m.dport, if s.v6 { 128 } else { 8 });
                }
            }
        }

        #[test]
        fn flow_hash_ignores_ttl_and_payload(s in spec(), ttl2 in any::<u8>(), extra in any::<u8>()) {
            let a = parse_ethernet(&build(&s)).unwrap();
            let mut s2 = s.clone();
            s2.ttl = ttl2;
            s2.payload.push(extra);
            let b = parse_ethernet(&build(&s2)).unwrap();
            prop_assert_eq!(a.flow_hash(), b.flow_hash());
        }

        #[test]
        fn whatever_parses_the_oracle_accepts_too(
            s in spec(),
            flips in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 0..4),
            cut in any::<prop::sample::Index>(),
        ) {
            let mut frame = build(&s);
            for (i, v) in flips {
                let i = i.index(frame.len());
                frame[i] ^= v;
            }
            frame.truncate(cut.index(frame.len() + 1));
            // Never panics; when we accept an IPv4 header, so does the oracle, with the same values.
            if let Ok(m) = parse_ethernet(&frame) {
                if m.l3 == L3::Ipv4 {
                    let h = etherparse::Ipv4HeaderSlice::from_slice(&frame[usize::from(m.l3_off)..])
                        .expect("oracle accepts what we accepted");
                    prop_assert_eq!(m.dst_v4(), u32::from_be_bytes(h.destination()));
                    prop_assert_eq!(m.ttl, h.ttl());
                    prop_assert_eq!(m.proto, h.protocol().0);
                }
                if m.l3 == L3::Ipv6 {
                    let h = etherparse::Ipv6HeaderSlice::from_slice(&frame[usize::from(m.l3_off)..])
                        .expect("oracle accepts what we accepted");
                    prop_assert_eq!(m.dst, u128::from_be_bytes(h.destination()));
                }
            }
        }
    }
}
