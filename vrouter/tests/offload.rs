//! Offloads through the pipeline: a GSO packet with a partial checksum, as a guest or a kernel
//! pod hands it over (64 KB in a segment chain), is routed to a pod and into each tunnel with
//! its offload state kept right (checksum start moved with every header added or removed), the
//! MTU checked against its segments rather than its own length, and cut afterwards into
//! segments that etherparse finds correct, payload intact.

mod common;
use common::*;
use etherparse::{Icmpv4Slice, NetHeaders, PacketBuilder, PacketHeaders, TransportHeader};
use std::net::Ipv4Addr;
use vrouter::offload::{csum, gso, Csum, Gso, GsoKind, Offload};
use vrouter::pipeline::{NoFlow, Pipeline, TxBatches};
use vrouter::wire::checksum;
use vrouter::{DropReason, PacketBuf, SegBuf, StatsRegistry};

struct SegBed {
    stats: StatsRegistry,
    pipe: Pipeline<NoFlow>,
    out: TxBatches<SegBuf>,
}

fn seg_bed() -> SegBed {
    let stats = StatsRegistry::default();
    SegBed {
        pipe: Pipeline::new(tables(), stats.new_core(), NoFlow),
        stats,
        out: TxBatches::new(64),
    }
}

/// A TCP/IPv4 GSO frame from pod A to `dst` (DF set), its checksum field holding the
/// pseudo-header sum, in a chain whose first segment holds 200 bytes; and its payload.
fn gso_tcp4(dst: Ipv4Addr, payload_len: usize, mss: u16) -> (SegBuf, Vec<u8>) {
    let payload: Vec<u8> = (0..payload_len).map(|i| (i * 11 % 251) as u8).collect();
    let mut f = Vec::new();
    PacketBuilder::ethernet2(POD_A_MAC.0, VROUTER_MAC.0)
        .ipv4(POD_A_IP.octets(), dst.octets(), 64)
        .tcp(40000, 5201, 1000, 64000)
        .ack(1)
        .psh()
        .write(&mut f, &payload)
        .unwrap();
    set_df(&mut f, 14, true);
    let l4_len = (f.len() - 34) as u16;
    let pseudo = checksum::pseudo_v4(POD_A_IP.octets(), dst.octets(), 6, l4_len);
    f[50..52].copy_from_slice(&checksum::fold(pseudo).to_be_bytes());
    let mut b = SegBuf::split(&f, 200);
    b.set_offload(Offload::new(
        Csum::Partial {
            start: 34,
            offset: 16,
        },
        Some(Gso {
            kind: GsoKind::Tcp4,
            size: mss,
            ecn: false,
        }),
    ));
    (b, payload)
}

/// Cuts a packet the pipeline let through, as the egress would, and completes checksums.
fn cut(b: &SegBuf) -> Vec<Vec<u8>> {
    let frame = b.to_vec();
    let plan = gso::Plan::new(b.data(), frame.len(), b.offload()).expect("a valid GSO packet");
    let Csum::Partial { start, offset } = plan.segment_offload().csum() else {
        panic!("segments keep a partial checksum");
    };
    (0..plan.count())
        .map(|i| {
            let mut seg = vec![0u8; plan.header_len()];
            let range = plan.segment(i, &mut seg);
            seg.extend_from_slice(&frame[range]);
            csum::complete(&mut seg, usize::from(start), usize::from(offset)).unwrap();
            seg
        })
        .collect()
}

/// The payload of an Ethernet/IPv4/TCP segment, after checking its IP and TCP checksums and
/// TTL.
fn tcp_payload(seg: &[u8], ttl: u8) -> Vec<u8> {
    let h = PacketHeaders::from_ethernet_slice(seg).unwrap();
    let payload = h.payload.slice().to_vec();
    let (NetHeaders::Ipv4(ip, _), TransportHeader::Tcp(t)) = (h.net.unwrap(), h.transport.unwrap())
    else {
        panic!("TCP over IPv4");
    };
    assert_eq!(ip.header_checksum, ip.calc_header_checksum());
    assert_eq!(ip.time_to_live, ttl);
    assert_eq!(t.checksum, t.calc_checksum_ipv4(&ip, &payload).unwrap());
    payload
}

impl SegBed {
    fn one_out(&mut self, b: SegBuf, vif: u16) -> SegBuf {
        self.out.clear();
        self.pipe.process(POD_A, [b], &mut self.out);
        assert_eq!(self.out.dropped.len(), 0, "{:?}", self.stats.snapshot());
        assert_eq!(
            self.out.tx(vif).len(),
            1,
            "touched {:?}",
            self.out.touched()
        );
        let mut got = None;
        self.out.flush(|v, q| {
            if v == vif {
                got = q.pop();
            }
        });
        got.expect("one packet")
    }
}

#[test]
fn a_gso_packet_is_routed_to_a_pod_whole_and_cuts_into_right_segments() {
    let mut bed = seg_bed();
    let (b, payload) = gso_tcp4(POD_B_IP, 30_000, 1448);
    let len = b.frame_len();
    let o = b.offload();
    let out = bed.one_out(b, POD_B);
    assert_eq!(
        out.frame_len(),
        len,
        "the payload segments went along untouched"
    );
    assert_eq!(
        out.offload(),
        o,
        "same offsets: the L2 header kept its size"
    );
    assert_eq!(&out.data()[..6], &POD_B_MAC.0);
    let segs = cut(&out);
    assert_eq!(segs.len(), 30_000usize.div_ceil(1448));
    let joined: Vec<u8> = segs.iter().flat_map(|s| tcp_payload(s, 63)).collect();
    assert_eq!(joined, payload);
    let snap = &bed.stats;
    assert_eq!(
        snap.vif(POD_A).rx_bytes,
        len as u64,
        "bytes count every segment"
    );
}

#[test]
fn a_gso_packet_into_a_vxlan_tunnel_has_its_offload_moved_behind_the_outer_headers() {
    let mut bed = seg_bed();
    let (b, payload) = gso_tcp4(REMOTE_VXLAN, 20_000, 1398);
    let out = bed.one_out(b, FABRIC);
    let o = out.offload();
    assert_eq!(o.inner(), 50, "Ethernet + IPv4 + UDP + VXLAN in front");
    assert!(!o.inner_is_ip());
    assert_eq!(
        o.csum(),
        Csum::Partial {
            start: 84,
            offset: 16
        }
    );
    let segs = cut(&out);
    let mut joined = Vec::new();
    for s in &segs {
        let h = PacketHeaders::from_ethernet_slice(s).unwrap();
        let NetHeaders::Ipv4(outer, _) = h.net.unwrap() else {
            panic!("outer IPv4")
        };
        assert_eq!(usize::from(outer.total_len), s.len() - 14);
        assert_eq!(outer.header_checksum, outer.calc_header_checksum());
        assert!(s.len() - 14 <= 1500, "each segment fits the fabric MTU");
        joined.extend(tcp_payload(&s[50..], 63));
    }
    assert_eq!(joined, payload);
}

#[test]
fn a_gso_packet_into_an_mpls_tunnel_starts_at_ip_behind_the_label() {
    let mut bed = seg_bed();
    let (b, payload) = gso_tcp4(REMOTE_MPLS_UDP, 10_000, 1400);
    let out = bed.one_out(b, FABRIC);
    let o = out.offload();
    // The inner Ethernet header went, outer Ethernet + IPv4 + UDP + MPLS came.
    assert_eq!(o.inner(), 46);
    assert!(o.inner_is_ip());
    assert_eq!(
        o.csum(),
        Csum::Partial {
            start: 34 - 14 + 46,
            offset: 16
        }
    );
    let mut joined = Vec::new();
    for s in cut(&out) {
        let mut framed = vec![0u8; 12];
        framed.extend_from_slice(&[0x08, 0x00]);
        framed.extend_from_slice(&s[46..]);
        joined.extend(tcp_payload(&framed, 63));
    }
    assert_eq!(joined, payload);
}

/// The MTU is checked against the segments: a GSO packet far larger than the MTU goes when its
/// segments fit, and gets "fragmentation needed" naming the room left when they do not.
#[test]
fn gso_packets_are_checked_against_the_mtu_by_their_segments() {
    let mut bed = seg_bed();
    // 1398 + 40 + 50 of tunnel = 1488: fits (above). 1448 + 40 + 50 = 1538 does not.
    let (b, _) = gso_tcp4(REMOTE_VXLAN, 20_000, 1448);
    let before = bed.stats.snapshot().drop_count(DropReason::MtuIcmpSent);
    bed.out.clear();
    bed.pipe.process(POD_A, [b], &mut bed.out);
    assert_eq!(
        bed.stats.snapshot().drop_count(DropReason::MtuIcmpSent),
        before + 1
    );
    let q = bed.out.tx(POD_A);
    assert_eq!(q.len(), 1, "the error goes back to the sender");
    let reply = &q[0];
    assert_eq!(
        reply.offload(),
        Offload::NONE,
        "a reply of our own carries no offload"
    );
    assert_eq!(
        reply.frame_len(),
        reply.len(),
        "the payload segments were let go"
    );
    let icmp = Icmpv4Slice::from_slice(&reply.data()[34..]).unwrap();
    assert_eq!(icmp.type_u8(), 3);
    assert_eq!(icmp.code_u8(), 4);
    assert_eq!(
        u16::from_be_bytes([icmp.bytes5to8()[2], icmp.bytes5to8()[3]]),
        1450,
        "the MTU left inside the tunnel"
    );
    // Straight to a pod: segments of 1500 + 40 do not fit its 1500.
    let (b, _) = gso_tcp4(POD_B_IP, 5_000, 1500);
    bed.out.clear();
    bed.pipe.process(POD_A, [b], &mut bed.out);
    assert_eq!(bed.out.tx(POD_A).len(), 1, "fragmentation needed");
    assert_eq!(bed.out.tx(POD_B).len(), 0);
}

/// Offload state that does not fit the packet (found by fuzzing: a partial checksum field in
/// Ethernet padding, which the pipeline trims away) is dropped at ingress, counted.
#[test]
fn a_partial_checksum_outside_the_ip_packet_is_dropped() {
    let mut bed = seg_bed();
    let mut f = udp4(POD_A_IP, POD_B_IP, 64, b"x");
    f.extend_from_slice(&[0u8; 40]); // padding after the IP packet
    let mut b = SegBuf::split(&f, f.len());
    let start = (f.len() - 10) as u16;
    b.set_offload(Offload::new(Csum::Partial { start, offset: 6 }, None));
    bed.out.clear();
    bed.pipe.process(POD_A, [b], &mut bed.out);
    assert_eq!(bed.out.dropped.len(), 1);
    assert_eq!(bed.stats.snapshot().drop_count(DropReason::Offload), 1);
}

/// A large packet without offloads, its payload in further segments (a jumbo frame as a guest
/// or a NIC hands it over): parsed from its first segment, checked against its whole length.
#[test]
fn a_chained_udp_packet_is_parsed_from_its_first_segment() {
    let mut bed = seg_bed();
    let f = udp4(POD_A_IP, POD_B_IP, 64, &[7u8; 1400]);
    let out = bed.one_out(SegBuf::split(&f, 60), POD_B);
    assert_eq!(out.frame_len(), f.len());
    assert_eq!(
        &out.to_vec()[34..],
        &f[34..],
        "UDP header and payload as they were"
    );
    // Cut short: the IP length says more than the frame holds.
    let short = SegBuf::split(&f[..f.len() - 10], 60);
    bed.out.clear();
    bed.pipe.process(POD_A, [short], &mut bed.out);
    assert_eq!(bed.out.dropped.len(), 1);
    assert_eq!(bed.stats.snapshot().drop_count(DropReason::Truncated), 1);
}

/// A tunnel frame from the peer to the fabric IP: outer Ethernet and IPv4, then UDP to `dport`
/// or (without one) GRE carrying MPLS, then `tunnel`.
fn from_peer(dport: Option<u16>, tunnel: &[u8]) -> Vec<u8> {
    let mut f = Vec::new();
    let outer = PacketBuilder::ethernet2(PEER_MAC.0, FABRIC_MAC.0).ipv4(
        PEER_IP.octets(),
        FABRIC_IP.octets(),
        64,
    );
    match dport {
        Some(port) => outer.udp(51000, port).write(&mut f, tunnel).unwrap(),
        None => {
            let gre = [&[0, 0, 0x88, 0x47][..], tunnel].concat();
            outer.write(&mut f, etherparse::IpNumber(47), &gre).unwrap()
        }
    }
    f
}

/// A jumbo frame from another node arrives in a chain (a kernel fabric port, a NIC receiving
/// scattered): after decapsulation its inner packet is parsed from the first segment and checked
/// against the whole frame, and reaches the pod whole, in each encapsulation.
#[test]
fn a_chained_tunnel_frame_is_decapsulated_whole() {
    let payload: Vec<u8> = (0..1400).map(|i| (i * 7 % 251) as u8).collect();
    let mut inner_ip = Vec::new();
    PacketBuilder::ipv4(REMOTE_VXLAN.octets(), POD_A_IP.octets(), 20)
        .udp(5001, 40000)
        .write(&mut inner_ip, &payload)
        .unwrap();
    let inner_frame = [
        &VROUTER_MAC.0[..],
        &REMOTE_MAC.0[..],
        &[0x08, 0x00][..],
        &inner_ip[..],
    ]
    .concat();
    let vxlan = [
        &[0x08, 0, 0, 0, 0x00, 0x13, 0x88, 0x00][..],
        &inner_frame[..],
    ]
    .concat();
    let label = ((LABEL_TO_A << 12) | 0x100 | 20).to_be_bytes();
    let mpls = [&label[..], &inner_ip[..]].concat();
    for (name, frame) in [
        ("vxlan", from_peer(Some(4789), &vxlan)),
        ("mplsoudp", from_peer(Some(6635), &mpls)),
        ("mplsogre", from_peer(None, &mpls)),
    ] {
        let mut bed = seg_bed();
        // Every header in the first 100 bytes, the payload in the rest of the chain.
        bed.pipe
            .process(FABRIC, [SegBuf::split(&frame, 100)], &mut bed.out);
        assert_eq!(
            bed.out.dropped.len(),
            0,
            "{name}: {:?}",
            bed.stats.snapshot()
        );
        let mut got = None;
        bed.out.flush(|v, q| {
            if v == POD_A {
                got = q.pop();
            }
        });
        let out = got
            .unwrap_or_else(|| panic!("{name}: nothing for pod A"))
            .to_vec();
        assert_eq!(out.len(), 14 + inner_ip.len(), "{name}: the whole packet");
        assert_eq!(&out[..6], &POD_A_MAC.0, "{name}");
        assert_eq!(
            &out[14 + 20..],
            &inner_ip[20..],
            "{name}: UDP and payload intact"
        );
    }
}
