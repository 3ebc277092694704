//! Software segmentation: cutting a GSO packet (a TCP stream chunk or a run of UDP datagrams
//! larger than the MTU, as a guest or a kernel pod hands it over) into packets that fit, the
//! way the Linux kernel's `tcp_gso_segment` / `__udp_gso_segment` do: every segment gets a copy
//! of the headers with its own lengths, IPv4 identification and header checksum, TCP sequence
//! number and flags (FIN and PSH on the last segment only, CWR on the first only), and an L4
//! checksum left partial (the pseudo-header sum in the field) for the caller to complete in
//! software or hand to a port that completes it.
//!
//! Tunnelled packets (the offload's `inner` offset set by encapsulation) have their outer IPv4
//! header (length, identification, checksum) and outer UDP length fixed per segment too; the
//! outer UDP checksum stays zero, as vrouterd's encapsulation writes it.
//!
//! [`Plan`] parses and checks the headers once; [`Plan::segment`] writes one segment's headers
//! into a buffer the caller provides and says which payload bytes follow them. No allocation.

use std::ops::Range;

use super::csum::OffloadError;
use super::{Csum, GsoKind, Offload};
use crate::wire::field::{Field, FieldValue};
use crate::wire::{checksum, ethernet, ipv4, ipv6, tcp, udp};

/// The most header bytes (outer and inner) a GSO packet may carry.
pub const MAX_HEADERS: usize = 256;
/// The most segments one GSO packet may be cut into (64 KiB in 128-byte segments).
pub const MAX_SEGMENTS: usize = 512;

/// How one GSO packet is cut.
#[derive(Clone)]
pub struct Plan {
    hdr: [u8; MAX_HEADERS],
    hdr_len: usize,
    payload_len: usize,
    size: usize,
    count: usize,
    tcp: bool,
    ecn: bool,
    outer_l3: Option<usize>,
    outer_udp: Option<usize>,
    l3: usize,
    l3_v4: bool,
    l4: usize,
    seg_offload: Offload,
}

impl std::fmt::Debug for Plan {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Plan")
            .field("hdr_len", &self.hdr_len)
            .field("payload_len", &self.payload_len)
            .field("size", &self.size)
            .field("count", &self.count)
            .field("tcp", &self.tcp)
            .field("outer_l3", &self.outer_l3)
            .field("l3", &self.l3)
            .field("l4", &self.l4)
            .finish()
    }
}

fn bad(why: &'static str) -> OffloadError {
    OffloadError::Headers(why)
}

/// The offset and ethertype after an Ethernet header (and up to two VLAN tags) at `at`.
fn skip_ethernet(head: &[u8], at: usize) -> Result<(usize, u16), OffloadError> {
    let mut ty = read(head, at, ethernet::field::ETHERTYPE)?;
    let mut pos = at + ethernet::HEADER_LEN;
    for _ in 0..2 {
        if ty != ethernet::ethertype::VLAN {
            break;
        }
        ty = read(head, pos, ethernet::tag_field::ETHERTYPE)?;
        pos += ethernet::VLAN_TAG_LEN;
    }
    Ok((pos, ty))
}

/// Field `f` of the header at `at` in `head`.
fn read<V: FieldValue>(head: &[u8], at: usize, f: Field) -> Result<V, OffloadError> {
    head.get(at + f.start..at + f.end)
        .map(V::read)
        .ok_or(bad("truncated"))
}

/// The first `len` bytes of the header at `at` in `head`: enough for a view to read the fields
/// within them.
fn header(head: &[u8], at: usize, len: usize) -> Result<&[u8], OffloadError> {
    head.get(at..at + len).ok_or(bad("truncated"))
}

/// The version of the IP header at `l3`: its first four bits, in IPv4 and IPv6 alike.
fn ip_version(head: &[u8], l3: usize) -> Result<u8, OffloadError> {
    let ip = ipv4::Packet::new_unchecked(header(head, l3, ipv4::field::VER_IHL.end)?);
    Ok(ip.version())
}

/// The length of the IPv4 header at `l3`, or `why` if it is not one.
fn ipv4_header_len(head: &[u8], l3: usize, why: &'static str) -> Result<usize, OffloadError> {
    let ip = ipv4::Packet::new_unchecked(header(head, l3, ipv4::field::VER_IHL.end)?);
    if ip.version() != 4 || ip.header_len() < ipv4::MIN_HEADER_LEN {
        return Err(bad(why));
    }
    Ok(ip.header_len())
}

impl Plan {
    /// Checks the headers of a GSO packet of `total_len` bytes whose first contiguous piece is
    /// `head` (every header must lie in it) against its offload state `o`.
    pub fn new(head: &[u8], total_len: usize, o: Offload) -> Result<Plan, OffloadError> {
        let gso = o.gso().ok_or(bad("no GSO asked"))?;
        let Csum::Partial { start, offset } = o.csum() else {
            return Err(bad("a GSO packet needs a partial checksum"));
        };
        let (start, offset) = (usize::from(start), usize::from(offset));
        let inner = usize::from(o.inner());
        let (mut outer_l3, mut outer_udp) = (None, None);
        if inner > 0 {
            let (l3, ty) = skip_ethernet(head, 0)?;
            if ty != ethernet::ethertype::IPV4 {
                return Err(bad("tunnel outer header is not IPv4"));
            }
            let ihl = ipv4_header_len(head, l3, "tunnel outer IPv4 header")?;
            outer_l3 = Some(l3);
            match read(head, l3, ipv4::field::PROTOCOL)? {
                ipv4::proto::UDP => outer_udp = Some(l3 + ihl),
                ipv4::proto::GRE => {}
                _ => return Err(bad("tunnel is neither UDP nor GRE")),
            }
        }
        let (l3, v4) = if inner > 0 && o.inner_is_ip() {
            (inner, ip_version(head, inner)? == 4)
        } else {
            let (l3, ty) = skip_ethernet(head, inner)?;
            match ty {
                ethernet::ethertype::IPV4 => (l3, true),
                ethernet::ethertype::IPV6 => (l3, false),
                _ => return Err(bad("not IP")),
            }
        };
        let tcp = match (gso.kind, v4) {
            (GsoKind::Tcp4, true) | (GsoKind::Tcp6, false) => true,
            (GsoKind::Udp, _) => false,
            _ => return Err(bad("IP version does not match the GSO type")),
        };
        let want_proto = if tcp {
            ipv4::proto::TCP
        } else {
            ipv4::proto::UDP
        };
        let l4 = if v4 {
            let ihl = ipv4_header_len(head, l3, "IPv4 header")?;
            let flags_offset: u16 = read(head, l3, ipv4::field::FLG_OFF)?;
            // More fragments, or an offset: a fragment. DF may be set.
            if flags_offset & 0x3fff != 0 {
                return Err(bad("IPv4 fragment"));
            }
            if read::<u8>(head, l3, ipv4::field::PROTOCOL)? != want_proto {
                return Err(bad("IPv4 protocol does not match the GSO type"));
            }
            l3 + ihl
        } else {
            if ip_version(head, l3)? != 6 {
                return Err(bad("IPv6 header"));
            }
            // Extension headers are not followed: the L4 header must come right after.
            if read::<u8>(head, l3, ipv6::field::NXT_HDR)? != want_proto {
                return Err(bad("IPv6 next header does not match the GSO type"));
            }
            l3 + ipv6::HEADER_LEN
        };
        if start != l4 {
            return Err(bad("checksum start is not the L4 header"));
        }
        let hdr_len = if tcp {
            if offset != tcp::field::CHECKSUM.start {
                return Err(bad("TCP checksum offset"));
            }
            let doff =
                tcp::Packet::new_unchecked(header(head, l4, tcp::field::FLAGS.end)?).header_len();
            if doff < tcp::MIN_HEADER_LEN {
                return Err(bad("TCP data offset"));
            }
            l4 + doff
        } else {
            if offset != udp::field::CHECKSUM.start {
                return Err(bad("UDP checksum offset"));
            }
            l4 + udp::HEADER_LEN
        };
        if hdr_len > head.len() || hdr_len > MAX_HEADERS {
            return Err(bad("headers not in the first segment"));
        }
        if hdr_len >= total_len {
            return Err(bad("no payload"));
        }
        let size = usize::from(gso.size);
        let payload_len = total_len - hdr_len;
        let count = if size == 0 {
            0
        } else {
            payload_len.div_ceil(size)
        };
        if count == 0 || count > MAX_SEGMENTS {
            return Err(OffloadError::Size {
                payload: payload_len,
                size,
            });
        }
        let mut hdr = [0u8; MAX_HEADERS];
        hdr[..hdr_len].copy_from_slice(&head[..hdr_len]);
        Ok(Plan {
            hdr,
            hdr_len,
            payload_len,
            size,
            count,
            tcp,
            ecn: gso.ecn,
            outer_l3,
            outer_udp,
            l3,
            l3_v4: v4,
            l4,
            seg_offload: o.without_gso(),
        })
    }

    /// How many segments.
    pub fn count(&self) -> usize {
        self.count
    }

    /// Header bytes in front of each segment's payload.
    pub fn header_len(&self) -> usize {
        self.hdr_len
    }

    /// The offload state of every segment: the checksum still partial, no GSO.
    pub fn segment_offload(&self) -> Offload {
        self.seg_offload
    }

    /// The length of segment `i` (headers and payload).
    pub fn segment_len(&self, i: usize) -> usize {
        self.hdr_len + self.payload_of(i).len()
    }

    fn payload_of(&self, i: usize) -> Range<usize> {
        let from = (i * self.size).min(self.payload_len);
        let to = (from + self.size).min(self.payload_len);
        self.hdr_len + from..self.hdr_len + to
    }

    /// Writes segment `i`'s headers into `out[..header_len()]` and returns the range of the
    /// original packet's bytes that follow them. `out` must hold [`Plan::header_len`] bytes.
    pub fn segment(&self, i: usize, out: &mut [u8]) -> Range<usize> {
        let payload = self.payload_of(i);
        let seg_len = self.hdr_len + payload.len();
        let h = &mut out[..self.hdr_len];
        h.copy_from_slice(&self.hdr[..self.hdr_len]);
        let step = i as u32;
        if let Some(ol3) = self.outer_l3 {
            let mut ip = ipv4::Packet::new_unchecked(&mut h[ol3..]);
            fix_ipv4(&mut ip, seg_len - ol3, step as u16);
        }
        if let Some(at) = self.outer_udp {
            let mut u = udp::Packet::new_unchecked(&mut h[at..]);
            u.set_len((seg_len - at) as u16);
            u.set_checksum(0);
        }
        let l4_len = seg_len - self.l4;
        let proto = if self.tcp {
            ipv4::proto::TCP
        } else {
            ipv4::proto::UDP
        };
        let pseudo = if self.l3_v4 {
            let mut ip = ipv4::Packet::new_unchecked(&mut h[self.l3..]);
            fix_ipv4(&mut ip, seg_len - self.l3, step as u16);
            checksum::pseudo_v4(ip.src().octets(), ip.dst().octets(), proto, l4_len as u16)
        } else {
            let mut ip = ipv6::Packet::new_unchecked(&mut h[self.l3..]);
            ip.set_payload_len((seg_len - self.l3 - ipv6::HEADER_LEN) as u16);
            checksum::pseudo_v6(ip.src_bytes(), ip.dst_bytes(), proto, l4_len as u32)
        };
        if self.tcp {
            let mut t = tcp::Packet::new_unchecked(&mut h[self.l4..]);
            t.set_seq(t.seq().wrapping_add(step.wrapping_mul(self.size as u32)));
            let mut flags = t.flags();
            if i + 1 != self.count {
                flags &= !(tcp::flag::FIN | tcp::flag::PSH);
            }
            if i != 0 && (self.ecn || flags & tcp::flag::CWR != 0) {
                flags &= !tcp::flag::CWR;
            }
            t.set_flags(flags);
            t.set_checksum(checksum::fold(pseudo));
        } else {
            let mut u = udp::Packet::new_unchecked(&mut h[self.l4..]);
            u.set_len(l4_len as u16);
            u.set_checksum(checksum::fold(pseudo));
        }
        payload
    }
}

/// Sets an IPv4 header's total length, advances its identification by `step`, and recomputes
/// its checksum.
fn fix_ipv4(ip: &mut ipv4::Packet<&mut [u8]>, total: usize, step: u16) {
    ip.set_total_len(total as u16);
    ip.set_ident(ip.ident().wrapping_add(step));
    ip.fill_checksum();
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::offload::csum;
    use crate::offload::Gso;
    use etherparse::{NetHeaders, PacketBuilder, PacketHeaders, TransportHeader};
    use proptest::prelude::*;

    // The flag bits as the tests pick them: the low byte of the flags field.
    const TCP_FIN: u8 = tcp::flag::FIN as u8;
    const TCP_PSH: u8 = tcp::flag::PSH as u8;
    const TCP_CWR: u8 = tcp::flag::CWR as u8;

    const V6_SRC: [u8; 16] = [0x20, 1, 0xd, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1];
    const V6_DST: [u8; 16] = [0x20, 1, 0xd, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2];

    /// A GSO frame as a sender with offloads hands it over: headers for the whole payload, the
    /// L4 checksum field holding the pseudo-header sum. Returns it with its L4 offset.
    fn gso_frame(v6: bool, tcp: bool, tcp_flags: u8, payload: &[u8]) -> (Vec<u8>, usize) {
        let eth = PacketBuilder::ethernet2([2, 0, 0, 0, 0, 1], [2, 0, 0, 0, 0, 2]);
        let ip = if v6 {
            eth.ipv6(V6_SRC, V6_DST, 64)
        } else {
            eth.ipv4([198, 18, 1, 2], [198, 18, 2, 2], 64)
        };
        let mut f = Vec::new();
        if tcp {
            let mut t = ip.tcp(40000, 5201, 0xffff_f000, 64000).ack(99);
            if tcp_flags & TCP_PSH != 0 {
                t = t.psh();
            }
            if tcp_flags & TCP_FIN != 0 {
                t = t.fin();
            }
            if tcp_flags & TCP_CWR != 0 {
                t = t.cwr();
            }
            // etherparse refuses lengths above 65535 only for IPv4 total length.
            t.write(&mut f, payload).unwrap();
        } else {
            ip.udp(40000, 5201).write(&mut f, payload).unwrap();
        }
        let l4 = if v6 { 54 } else { 34 };
        let off = if tcp { 16 } else { 6 };
        let len = f.len() - l4;
        let proto = if tcp { 6 } else { 17 };
        let pseudo = if v6 {
            checksum::pseudo_v6(V6_SRC, V6_DST, proto, len as u32)
        } else {
            checksum::pseudo_v4([198, 18, 1, 2], [198, 18, 2, 2], proto, len as u16)
        };
        f[l4 + off..l4 + off + 2].copy_from_slice(&checksum::fold(pseudo).to_be_bytes());
        (f, l4)
    }

    fn offload(l4: usize, tcp: bool, v6: bool, size: u16) -> Offload {
        let kind = match (tcp, v6) {
            (true, false) => GsoKind::Tcp4,
            (true, true) => GsoKind::Tcp6,
            (false, _) => GsoKind::Udp,
        };
        Offload::new(
            Csum::Partial {
                start: l4 as u16,
                offset: if tcp { 16 } else { 6 },
            },
            Some(Gso {
                kind,
                size,
                ecn: false,
            }),
        )
    }

    /// Cuts `frame` and completes every segment's checksum.
    fn cut(frame: &[u8], o: Offload) -> Vec<Vec<u8>> {
        let plan = Plan::new(frame, frame.len(), o).unwrap();
        let mut out = Vec::new();
        for i in 0..plan.count() {
            let mut seg = vec![0u8; plan.header_len()];
            let range = plan.segment(i, &mut seg);
            seg.extend_from_slice(&frame[range]);
            assert_eq!(seg.len(), plan.segment_len(i));
            let Csum::Partial { start, offset } = plan.segment_offload().csum() else {
                panic!("segments keep a partial checksum");
            };
            csum::complete(&mut seg, usize::from(start), usize::from(offset)).unwrap();
            out.push(seg);
        }
        out
    }

    /// What etherparse reads in a segment: IP total or payload length, L4 checksum right,
    /// TCP sequence number and flags, and the payload.
    struct Seen {
        ip_len: usize,
        ipv4_id: Option<u16>,
        seq: Option<u32>,
        flags: (bool, bool, bool),
        payload: Vec<u8>,
    }

    fn inspect(seg: &[u8]) -> Seen {
        let h = PacketHeaders::from_ethernet_slice(seg).unwrap();
        let payload = h.payload.slice().to_vec();
        let (ip_len, ipv4_id) = match h.net.as_ref().unwrap() {
            NetHeaders::Ipv4(ip, _) => {
                assert_eq!(
                    ip.header_checksum,
                    ip.calc_header_checksum(),
                    "IPv4 header checksum"
                );
                (usize::from(ip.total_len), Some(ip.identification))
            }
            NetHeaders::Ipv6(ip, _) => (usize::from(ip.payload_length) + 40, None),
        };
        let (seq, flags) = match (h.net.unwrap(), h.transport.unwrap()) {
            (NetHeaders::Ipv4(ip, _), TransportHeader::Tcp(t)) => {
                assert_eq!(t.checksum, t.calc_checksum_ipv4(&ip, &payload).unwrap());
                (Some(t.sequence_number), (t.fin, t.psh, t.cwr))
            }
            (NetHeaders::Ipv6(ip, _), TransportHeader::Tcp(t)) => {
                assert_eq!(t.checksum, t.calc_checksum_ipv6(&ip, &payload).unwrap());
                (Some(t.sequence_number), (t.fin, t.psh, t.cwr))
            }
            (NetHeaders::Ipv4(ip, _), TransportHeader::Udp(u)) => {
                assert_eq!(u.checksum, u.calc_checksum_ipv4(&ip, &payload).unwrap());
                assert_eq!(usize::from(u.length), payload.len() + 8);
                (None, (false, false, false))
            }
            (NetHeaders::Ipv6(ip, _), TransportHeader::Udp(u)) => {
                assert_eq!(u.checksum, u.calc_checksum_ipv6(&ip, &payload).unwrap());
                assert_eq!(usize::from(u.length), payload.len() + 8);
                (None, (false, false, false))
            }
            other => panic!("{other:?}"),
        };
        Seen {
            ip_len,
            ipv4_id,
            seq,
            flags,
            payload,
        }
    }

    fn check(v6: bool, tcp: bool, flags: u8, payload: &[u8], size: u16) {
        let (frame, l4) = gso_frame(v6, tcp, flags, payload);
        let segs = cut(&frame, offload(l4, tcp, v6, size));
        assert_eq!(segs.len(), payload.len().div_ceil(usize::from(size)));
        let mut joined = Vec::new();
        for (i, s) in segs.iter().enumerate() {
            let seen = inspect(s);
            assert_eq!(seen.ip_len, s.len() - 14, "segment {i}: IP length");
            assert!(seen.payload.len() <= usize::from(size));
            if let Some(id) = seen.ipv4_id {
                assert_eq!(id, i as u16, "segment {i}: IPv4 id steps by one");
            }
            if let Some(seq) = seen.seq {
                assert_eq!(
                    seq,
                    0xffff_f000u32.wrapping_add((i * usize::from(size)) as u32)
                );
                let last = i + 1 == segs.len();
                assert_eq!(
                    seen.flags.0,
                    last && flags & TCP_FIN != 0,
                    "FIN on the last only"
                );
                assert_eq!(
                    seen.flags.1,
                    last && flags & TCP_PSH != 0,
                    "PSH on the last only"
                );
                assert_eq!(
                    seen.flags.2,
                    i == 0 && flags & TCP_CWR != 0,
                    "CWR on the first only"
                );
            }
            joined.extend_from_slice(&seen.payload);
        }
        assert_eq!(
            joined, payload,
            "the payload, in order, nothing lost or added"
        );
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]
        #[test]
        fn segments_match_etherparse_and_rejoin_the_payload(
            v6 in any::<bool>(), tcp in any::<bool>(), flags in 0u8..=255,
            len in 1usize..40_000, size in 64u16..9000, seed in any::<u8>(),
        ) {
            let payload: Vec<u8> = (0..len).map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed)).collect();
            let len = payload.len();
            prop_assume!(len.div_ceil(usize::from(size)) <= MAX_SEGMENTS);
            check(v6, tcp, flags & (TCP_FIN | TCP_PSH | TCP_CWR), &payload, size);
        }
    }

    #[test]
    fn a_64k_tcp_packet_becomes_mss_sized_segments() {
        let payload: Vec<u8> = (0..65_000u32).map(|i| (i * 7) as u8).collect();
        check(false, true, TCP_PSH | TCP_FIN, &payload, 1448);
        check(true, true, TCP_PSH, &payload[..60_000], 1428);
        check(false, false, 0, &payload[..20_000], 1472);
    }

    /// A VXLAN-encapsulated GSO packet: outer IPv4 lengths, identification and checksum and the
    /// outer UDP length are fixed per segment; the inner packet is cut as above.
    #[test]
    fn tunnelled_packets_get_their_outer_headers_fixed_too() {
        let payload: Vec<u8> = (0..9000u32).map(|i| (i * 13) as u8).collect();
        let (inner, l4) = gso_frame(false, true, TCP_PSH, &payload);
        let mut vxlan = vec![0x08, 0, 0, 0, 0, 0, 0x64, 0];
        vxlan.extend_from_slice(&inner);
        let mut frame = Vec::new();
        PacketBuilder::ethernet2([2, 0, 0, 0, 0, 3], [2, 0, 0, 0, 0, 4])
            .ipv4([198, 51, 100, 1], [198, 51, 100, 2], 64)
            .udp(50000, 4789)
            .write(&mut frame, &vxlan)
            .unwrap();
        frame[40..42].copy_from_slice(&[0, 0]); // vrouterd sends outer UDP checksum zero
        let outer = 14 + 20 + 8 + 8;
        let o = offload(l4, true, false, 1400)
            .encapsulated(outer as u16, false)
            .unwrap();
        let segs = cut(&frame, o);
        assert_eq!(segs.len(), 9000usize.div_ceil(1400));
        let mut joined = Vec::new();
        for (i, s) in segs.iter().enumerate() {
            let h = PacketHeaders::from_ethernet_slice(s).unwrap();
            let NetHeaders::Ipv4(ip, _) = h.net.unwrap() else {
                panic!("outer IPv4")
            };
            assert_eq!(usize::from(ip.total_len), s.len() - 14);
            assert_eq!(ip.header_checksum, ip.calc_header_checksum());
            assert_eq!(ip.identification, i as u16);
            let TransportHeader::Udp(u) = h.transport.unwrap() else {
                panic!("outer UDP")
            };
            assert_eq!(usize::from(u.length), s.len() - 34);
            assert_eq!(u.checksum, 0);
            let seen = inspect(&s[outer..]);
            joined.extend_from_slice(&seen.payload);
        }
        assert_eq!(joined, payload);
    }

    /// MPLS over UDP: the inner packet starts with its IP header.
    #[test]
    fn mpls_tunnelled_packets_start_at_ip() {
        let payload: Vec<u8> = (0..5000u32).map(|i| i as u8).collect();
        let (inner, _) = gso_frame(true, true, 0, &payload);
        let mut mpls = vec![0x00, 0x01, 0x01, 0x40]; // label 16, bottom of stack, TTL 64
        mpls.extend_from_slice(&inner[14..]);
        let mut frame = Vec::new();
        PacketBuilder::ethernet2([2, 0, 0, 0, 0, 3], [2, 0, 0, 0, 0, 4])
            .ipv4([198, 51, 100, 1], [198, 51, 100, 2], 64)
            .udp(50000, 6635)
            .write(&mut frame, &mpls)
            .unwrap();
        let outer = 14 + 20 + 8 + 4;
        let o = Offload::new(
            Csum::Partial {
                start: 40,
                offset: 16,
            },
            Some(Gso {
                kind: GsoKind::Tcp6,
                size: 1000,
                ecn: false,
            }),
        )
        .encapsulated(outer as u16, true)
        .unwrap();
        let segs = cut(&frame, o);
        assert_eq!(segs.len(), 5);
        let mut joined = Vec::new();
        for s in &segs {
            // Re-frame the inner IP packet behind an Ethernet header for etherparse.
            let mut eth = inner[..14].to_vec();
            eth.extend_from_slice(&s[outer..]);
            joined.extend_from_slice(&inspect(&eth).payload);
        }
        assert_eq!(joined, payload);
    }

    #[test]
    fn inconsistent_offload_claims_are_refused() {
        let payload = vec![0u8; 3000];
        let (frame, l4) = gso_frame(false, true, 0, &payload);
        let good = offload(l4, true, false, 1448);
        assert!(Plan::new(&frame, frame.len(), good).is_ok());
        // Checksum start not at the TCP header.
        let o = Offload::new(
            Csum::Partial {
                start: 30,
                offset: 16,
            },
            good.gso(),
        );
        assert!(Plan::new(&frame, frame.len(), o).is_err());
        // Claims IPv6 on an IPv4 packet; UDP on a TCP packet.
        assert!(Plan::new(&frame, frame.len(), offload(l4, true, true, 1448)).is_err());
        assert!(Plan::new(&frame, frame.len(), offload(l4, false, false, 1448)).is_err());
        // Segment size zero; headers cut short; no partial checksum.
        assert!(Plan::new(&frame, frame.len(), offload(l4, true, false, 0)).is_err());
        assert!(Plan::new(&frame[..40], frame.len(), good).is_err());
        assert!(Plan::new(&frame, frame.len(), Offload::new(Csum::None, good.gso())).is_err());
        // Too many segments.
        assert!(Plan::new(&frame, frame.len(), offload(l4, true, false, 2)).is_err());
        // No payload at all.
        assert!(Plan::new(&frame[..54], 54, good).is_err());
    }
}
