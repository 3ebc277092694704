//! Golden packets: a pod frame in → the exact fabric frame out, per encapsulation, and the
//! reverse. Expected frames are assembled here field by field (outer IPv4 checksums by
//! etherparse, an independent implementation), not by the code under test.

mod common;
use common::*;
use etherparse::{IpNumber, Ipv4Header, PacketBuilder};
use std::net::Ipv4Addr;
use vrouter::tables::{Nexthop, RouteTarget, TunnelEncap};
use vrouter::MacAddr;

const PAYLOAD: &[u8] = b"golden packet payload";

fn eth(dst: MacAddr, src: MacAddr, ethertype: u16) -> Vec<u8> {
    [dst.0.as_slice(), &src.0, &ethertype.to_be_bytes()].concat()
}

fn outer_ip(proto: u8, payload_len: usize, ident: u16) -> Vec<u8> {
    let mut h = Ipv4Header::new(
        payload_len as u16,
        64,
        IpNumber(proto),
        FABRIC_IP.octets(),
        PEER_IP.octets(),
    )
    .unwrap();
    h.identification = ident;
    h.dont_fragment = true;
    h.header_checksum = h.calc_header_checksum();
    let mut v = Vec::new();
    h.write(&mut v).unwrap();
    v
}

fn udp_hdr(sport: u16, dport: u16, len: usize) -> Vec<u8> {
    [
        sport.to_be_bytes(),
        dport.to_be_bytes(),
        (len as u16).to_be_bytes(),
        [0, 0],
    ]
    .concat()
}

/// The inner IP packet of `frame` (after a 14-byte Ethernet header) with TTL lowered by one and
/// its checksum recomputed by etherparse.
fn routed_inner_ip(frame: &[u8]) -> Vec<u8> {
    let (mut h, rest) = Ipv4Header::from_slice(&frame[14..]).unwrap();
    h.time_to_live -= 1;
    h.header_checksum = h.calc_header_checksum();
    let mut v = Vec::new();
    h.write(&mut v).unwrap();
    v.extend_from_slice(&rest[..usize::from(h.total_len) - h.header_len()]);
    v
}

fn sport_of(out: &[u8]) -> u16 {
    let s = u16::from_be_bytes([out[34], out[35]]);
    assert!(s >= 49152, "entropy source port {s} in 49152..=65535");
    s
}

fn pod_frame(dst: Ipv4Addr) -> Vec<u8> {
    let mut f = udp4(POD_A_IP, dst, 64, PAYLOAD);
    set_df(&mut f, 14, true);
    f
}

#[test]
fn vxlan_encap_of_a_routed_packet_is_exact() {
    let mut bed = bed();
    let inp = pod_frame(REMOTE_VXLAN);
    let out = bed.forward(POD_A, &inp, FABRIC);
    let inner = [eth(VROUTER_MAC, VROUTER_MAC, 0x0800), routed_inner_ip(&inp)].concat();
    let expected = [
        eth(PEER_MAC, FABRIC_MAC, 0x0800),
        outer_ip(17, 8 + 8 + inner.len(), 1),
        udp_hdr(sport_of(&out), 4789, 8 + 8 + inner.len()),
        vec![0x08, 0, 0, 0, 0x00, 0x13, 0x88, 0x00], // I flag, VNI 5000
        inner,
    ]
    .concat();
    assert_eq!(out, expected);
}

#[test]
fn mpls_over_udp_encap_is_exact() {
    let mut bed = bed();
    let inp = pod_frame(REMOTE_MPLS_UDP);
    let out = bed.forward(POD_A, &inp, FABRIC);
    let inner = routed_inner_ip(&inp);
    let label = (LABEL_UDP << 12) | 0x100 | 63; // bottom of stack, TTL = inner TTL after decrement
    let expected = [
        eth(PEER_MAC, FABRIC_MAC, 0x0800),
        outer_ip(17, 8 + 4 + inner.len(), 1),
        udp_hdr(sport_of(&out), 6635, 8 + 4 + inner.len()),
        label.to_be_bytes().to_vec(),
        inner,
    ]
    .concat();
    assert_eq!(out, expected);
}

#[test]
fn mpls_over_gre_encap_is_exact() {
    let mut bed = bed();
    let inp = pod_frame(REMOTE_MPLS_GRE);
    let out = bed.forward(POD_A, &inp, FABRIC);
    let inner = routed_inner_ip(&inp);
    let label = (LABEL_GRE << 12) | 0x100 | 63;
    let expected = [
        eth(PEER_MAC, FABRIC_MAC, 0x0800),
        outer_ip(47, 4 + 4 + inner.len(), 1),
        vec![0, 0, 0x88, 0x47],
        label.to_be_bytes().to_vec(),
        inner,
    ]
    .concat();
    assert_eq!(out, expected);
}

#[test]
fn entropy_port_follows_the_inner_flow() {
    let mut bed = bed();
    let a1 = bed.forward(POD_A, &pod_frame(REMOTE_MPLS_UDP), FABRIC);
    let a2 = bed.forward(
        POD_A,
        &udp4(POD_A_IP, REMOTE_MPLS_UDP, 9, b"other payload, same flow"),
        FABRIC,
    );
    assert_eq!(
        sport_of(&a1),
        sport_of(&a2),
        "same 5-tuple, same source port"
    );
    let ports: std::collections::HashSet<u16> = (0..64u8)
        .map(|i| {
            sport_of(&bed.forward(
                POD_A,
                &udp4(POD_A_IP, Ipv4Addr::new(198, 18, 3, i), 64, PAYLOAD),
                FABRIC,
            ))
        })
        .collect();
    assert!(
        ports.len() > 48,
        "different flows spread over source ports: {}",
        ports.len()
    );
}

/// A fabric frame from the peer carrying `tunnel` (the bytes after the outer UDP / GRE header
/// kind given by `proto` / `dport`).
fn fabric_frame(proto: u8, dport: Option<u16>, tunnel: &[u8]) -> Vec<u8> {
    let l4 = match dport {
        Some(p) => [udp_hdr(51000, p, 8 + tunnel.len()), tunnel.to_vec()].concat(),
        None => [vec![0, 0, 0x88, 0x47], tunnel.to_vec()].concat(),
    };
    let mut h = Ipv4Header::new(
        l4.len() as u16,
        64,
        IpNumber(proto),
        PEER_IP.octets(),
        FABRIC_IP.octets(),
    )
    .unwrap();
    h.header_checksum = h.calc_header_checksum();
    let mut ip = Vec::new();
    h.write(&mut ip).unwrap();
    [eth(FABRIC_MAC, PEER_MAC, 0x0800), ip, l4].concat()
}

fn remote_ip_packet(ttl: u8) -> Vec<u8> {
    let mut v = Vec::new();
    PacketBuilder::ipv4(REMOTE_VXLAN.octets(), POD_A_IP.octets(), ttl)
        .udp(5001, 40000)
        .write(&mut v, PAYLOAD)
        .unwrap();
    v
}

#[test]
fn vxlan_decap_routes_to_the_pod_exactly() {
    let mut bed = bed();
    let inner = [eth(VROUTER_MAC, REMOTE_MAC, 0x0800), remote_ip_packet(20)].concat();
    let vx = [vec![0x08, 0, 0, 0, 0x00, 0x13, 0x88, 0x00], inner.clone()].concat();
    let out = bed.forward(FABRIC, &fabric_frame(17, Some(4789), &vx), POD_A);
    let expected = [eth(POD_A_MAC, VROUTER_MAC, 0x0800), routed_inner_ip(&inner)].concat();
    assert_eq!(out, expected);
}

#[test]
fn vxlan_decap_bridges_a_frame_unchanged() {
    let mut bed = bed();
    let inner = [eth(POD_B_MAC, REMOTE_MAC, 0x0800), remote_ip_packet(20)].concat();
    let vx = [vec![0x08, 0, 0, 0, 0x00, 0x13, 0x88, 0x00], inner.clone()].concat();
    // Ethernet padding after the outer packet must not reach the pod.
    let mut frame = fabric_frame(17, Some(4789), &vx);
    frame.extend_from_slice(&[0; 6]);
    assert_eq!(bed.forward(FABRIC, &frame, POD_B), inner);
}

#[test]
fn mpls_over_udp_and_gre_decap_deliver_the_inner_packet_exactly() {
    let mut bed = bed();
    let ipkt = remote_ip_packet(20);
    let label = ((LABEL_TO_A << 12) | 0x100 | 20).to_be_bytes();
    let payload = [label.to_vec(), ipkt.clone()].concat();
    let expected = [eth(POD_A_MAC, VROUTER_MAC, 0x0800), ipkt].concat();
    assert_eq!(
        bed.forward(FABRIC, &fabric_frame(17, Some(6635), &payload), POD_A),
        expected
    );
    assert_eq!(
        bed.forward(FABRIC, &fabric_frame(47, None, &payload), POD_A),
        expected
    );
}

/// A per-VRF label (BGP L3VPN's): the inner packet is routed in the VRF, as a VXLAN packet to
/// the vrouter's MAC is: TTL lowered, the pod's MAC from its route; IPv4 and IPv6 alike.
#[test]
fn mpls_decap_with_a_vrf_label_routes_the_inner_packet_in_the_vrf() {
    let mut bed = bed();
    let label = |ttl: u32| ((LABEL_TO_VRF << 12) | 0x100 | ttl).to_be_bytes().to_vec();
    let framed = [eth(VROUTER_MAC, REMOTE_MAC, 0x0800), remote_ip_packet(20)].concat();
    let expected = [
        eth(POD_A_MAC, VROUTER_MAC, 0x0800),
        routed_inner_ip(&framed),
    ]
    .concat();
    let payload = [label(20), remote_ip_packet(20)].concat();
    assert_eq!(
        bed.forward(FABRIC, &fabric_frame(17, Some(6635), &payload), POD_A),
        expected
    );
    assert_eq!(
        bed.forward(FABRIC, &fabric_frame(47, None, &payload), POD_A),
        expected
    );

    let mut v6 = Vec::new();
    PacketBuilder::ipv6(
        "2001:db8:3::7"
            .parse::<std::net::Ipv6Addr>()
            .unwrap()
            .octets(),
        "2001:db8:1::b"
            .parse::<std::net::Ipv6Addr>()
            .unwrap()
            .octets(),
        9,
    )
    .udp(5001, 40000)
    .write(&mut v6, PAYLOAD)
    .unwrap();
    let mut routed6 = v6.clone();
    routed6[7] = 8;
    let payload = [label(9), v6].concat();
    assert_eq!(
        bed.forward(FABRIC, &fabric_frame(17, Some(6635), &payload), POD_B),
        [eth(POD_B_MAC, VROUTER_MAC, 0x86dd), routed6].concat()
    );
}

#[test]
fn l2_vxlan_encap_carries_the_frame_unchanged() {
    let mut bed = bed();
    let mut inp = udp4(POD_A_IP, Ipv4Addr::new(198, 18, 1, 99), 64, PAYLOAD);
    inp[0..6].copy_from_slice(&REMOTE_MAC.0);
    let out = bed.forward(POD_A, &inp, FABRIC);
    let expected = [
        eth(PEER_MAC, FABRIC_MAC, 0x0800),
        outer_ip(17, 16 + inp.len(), 1),
        udp_hdr(sport_of(&out), 4789, 16 + inp.len()),
        vec![0x08, 0, 0, 0, 0x00, 0x13, 0x88, 0x00],
        inp.clone(),
    ]
    .concat();
    assert_eq!(out, expected);
}

/// A second node on the fabric, for ECMP over two nodes.
const PEER2_IP: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 3);
const PEER2_MAC: MacAddr = MacAddr([0x02, 0, 0, 0, 0x0f, 0x03]);

/// The exact fabric frame `inp` (a pod frame routed toward a tunnel) becomes toward `dip` /
/// `dmac` in `encap`, pushing `label`, as the `ident`-th tunnelled packet; the UDP source
/// port is read from `out` (the flow's entropy).
fn tunnelled(
    encap: TunnelEncap,
    inp: &[u8],
    out: &[u8],
    (dip, dmac): (Ipv4Addr, MacAddr),
    label: u32,
    ident: u16,
) -> Vec<u8> {
    let ip = |proto: u8, len: usize| {
        let mut h = Ipv4Header::new(
            len as u16,
            64,
            IpNumber(proto),
            FABRIC_IP.octets(),
            dip.octets(),
        )
        .unwrap();
        h.identification = ident;
        h.dont_fragment = true;
        h.header_checksum = h.calc_header_checksum();
        let mut v = Vec::new();
        h.write(&mut v).unwrap();
        v
    };
    let entry = ((label << 12) | 0x100 | 63).to_be_bytes().to_vec();
    let l2 = eth(dmac, FABRIC_MAC, 0x0800);
    match encap {
        TunnelEncap::Vxlan => {
            let inner = [eth(VROUTER_MAC, VROUTER_MAC, 0x0800), routed_inner_ip(inp)].concat();
            let vni = label.to_be_bytes();
            [
                l2,
                ip(17, 8 + 8 + inner.len()),
                udp_hdr(sport_of(out), 4789, 8 + 8 + inner.len()),
                vec![0x08, 0, 0, 0, vni[1], vni[2], vni[3], 0],
                inner,
            ]
            .concat()
        }
        TunnelEncap::MplsUdp => {
            let inner = routed_inner_ip(inp);
            [
                l2,
                ip(17, 8 + 4 + inner.len()),
                udp_hdr(sport_of(out), 6635, 8 + 4 + inner.len()),
                entry,
                inner,
            ]
            .concat()
        }
        TunnelEncap::MplsGre => {
            let inner = routed_inner_ip(inp);
            [
                l2,
                ip(47, 4 + 4 + inner.len()),
                vec![0, 0, 0x88, 0x47],
                entry,
                inner,
            ]
            .concat()
        }
    }
}

fn tunnel_to(encap: TunnelEncap, dip: Ipv4Addr, dmac: MacAddr, label: Option<u32>) -> Nexthop {
    Nexthop::Tunnel {
        encap,
        vif: FABRIC,
        sip: FABRIC_IP,
        dip,
        dmac,
        label,
    }
}

/// ECMP over two nodes that allocated different labels (VNIs) for one prefix: the route
/// carries the first node's, the tunnel to the second pushes its own. Every flow's frame is
/// exact, toward whichever node its hash picked, with that node's label.
#[test]
fn ecmp_members_toward_two_nodes_push_each_node_s_own_label() {
    for (encap, first, second) in [
        (TunnelEncap::MplsUdp, 2002, 2003),
        (TunnelEncap::MplsGre, 2002, 2003),
        (TunnelEncap::Vxlan, 1002, 1003),
    ] {
        let mut bed = bed();
        let t = &bed.tables;
        t.set_nexthop(20, tunnel_to(encap, PEER_IP, PEER_MAC, None))
            .unwrap();
        t.set_nexthop(21, tunnel_to(encap, PEER2_IP, PEER2_MAC, Some(second)))
            .unwrap();
        t.set_nexthop(22, Nexthop::ecmp(&[20, 21]).unwrap())
            .unwrap();
        t.add_route(
            VRF,
            ip(Ipv4Addr::new(198, 18, 6, 0)),
            24,
            RouteTarget {
                nexthop: 22,
                label: Some(first),
            },
        )
        .unwrap();
        let mut per_node = [0u32; 2];
        for i in 0..64u8 {
            let inp = pod_frame(Ipv4Addr::new(198, 18, 6, i));
            let out = bed.forward(POD_A, &inp, FABRIC);
            let to_second = out[30..34] == PEER2_IP.octets();
            let (node, label) = if to_second {
                ((PEER2_IP, PEER2_MAC), second)
            } else {
                ((PEER_IP, PEER_MAC), first)
            };
            let want = tunnelled(encap, &inp, &out, node, label, u16::from(i) + 1);
            assert_eq!(out, want, "{encap:?} flow {i} toward {}", node.0);
            per_node[usize::from(to_second)] += 1;
        }
        assert!(
            per_node.iter().all(|n| *n >= 8),
            "{encap:?}: flows spread over both nodes: {per_node:?}"
        );
    }
}

/// A tunnel with its own label reached straight from routes: a burst to it (the memoised path
/// after its first packet) pushes the tunnel's label whatever the route carries, and a route
/// without a label reaches it too.
#[test]
fn a_tunnel_s_own_label_wins_in_a_burst_and_stands_in_for_a_missing_one() {
    let mut bed = bed();
    let t = &bed.tables;
    t.set_nexthop(
        23,
        tunnel_to(TunnelEncap::MplsGre, PEER2_IP, PEER2_MAC, Some(2003)),
    )
    .unwrap();
    for (net, label) in [(7, Some(2002)), (8, None)] {
        t.add_route(
            VRF,
            ip(Ipv4Addr::new(198, 18, net, 0)),
            24,
            RouteTarget { nexthop: 23, label },
        )
        .unwrap();
    }
    let inps: Vec<Vec<u8>> = (0..4u8)
        .map(|i| pod_frame(Ipv4Addr::new(198, 18, 7 + i % 2, i)))
        .collect();
    bed.out.clear();
    bed.pipe.process(
        POD_A,
        inps.iter().map(|f| vrouter::VecBuf::from_frame(f)),
        &mut bed.out,
    );
    let q = bed.out.tx(FABRIC);
    assert_eq!(q.len(), inps.len(), "dropped: {:?}", bed.out.dropped.len());
    for (i, (inp, out)) in inps.iter().zip(q).enumerate() {
        let out = vrouter::PacketBuf::data(out);
        let want = tunnelled(
            TunnelEncap::MplsGre,
            inp,
            out,
            (PEER2_IP, PEER2_MAC),
            2003,
            i as u16 + 1,
        );
        assert_eq!(out, want.as_slice(), "packet {i}");
    }
}

/// A bridged frame toward a MAC behind an ECMP group of VXLAN tunnels: the member toward the
/// node with its own VNI carries that VNI, the other the bridge entry's.
#[test]
fn l2_vxlan_ecmp_members_carry_each_node_s_own_vni() {
    let mut bed = bed();
    let t = &bed.tables;
    t.set_nexthop(20, tunnel_to(TunnelEncap::Vxlan, PEER_IP, PEER_MAC, None))
        .unwrap();
    t.set_nexthop(
        21,
        tunnel_to(TunnelEncap::Vxlan, PEER2_IP, PEER2_MAC, Some(5003)),
    )
    .unwrap();
    t.set_nexthop(22, Nexthop::ecmp(&[20, 21]).unwrap())
        .unwrap();
    let anycast_mac = MacAddr([0x02, 0, 0, 0, 0, 0x98]);
    t.add_bridge(
        VRF,
        anycast_mac,
        RouteTarget {
            nexthop: 22,
            label: Some(VNI),
        },
    )
    .unwrap();
    let mut per_node = [0u32; 2];
    for i in 0..64u8 {
        let mut inp = udp4(POD_A_IP, Ipv4Addr::new(198, 18, 1, i), 64, PAYLOAD);
        inp[0..6].copy_from_slice(&anycast_mac.0);
        let out = bed.forward(POD_A, &inp, FABRIC);
        let to_second = out[30..34] == PEER2_IP.octets();
        let (dmac, vni) = if to_second {
            (PEER2_MAC, 5003u32)
        } else {
            (PEER_MAC, VNI)
        };
        let v = vni.to_be_bytes();
        assert_eq!(out[..6], dmac.0, "flow {i}");
        assert_eq!(
            out[42..50],
            [0x08, 0, 0, 0, v[1], v[2], v[3], 0],
            "flow {i}: VXLAN header toward node {}",
            if to_second { 2 } else { 1 }
        );
        assert_eq!(out[50..], inp[..], "flow {i}: the frame unchanged");
        per_node[usize::from(to_second)] += 1;
    }
    assert!(per_node.iter().all(|n| *n >= 8), "{per_node:?}");
}
