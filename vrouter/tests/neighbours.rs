//! Underlay neighbours and the host interface: a tunnel nexthop without a `dmac` sends to the
//! MAC ARP told (dropped, counted, until then; a new MAC replaces the old), and the host's own
//! frames from its tap vif leave by the fabric untouched.

mod common;
use common::*;
use std::net::Ipv4Addr;
use vrouter::tables::{Nexthop, TunnelEncap, Vif, VifKind};
use vrouter::{DropReason, MacAddr, PacketBuf};

const NH_UNRESOLVED: u32 = 20;
const NEW_PEER_MAC: MacAddr = MacAddr([0x02, 0, 0, 0, 0x0f, 0x22]);
const HOST: u16 = 7;

fn arp(op: u16, src_mac: MacAddr, sip: Ipv4Addr, dst_mac: MacAddr, tip: Ipv4Addr) -> Vec<u8> {
    let mut v = dst_mac.0.to_vec();
    v.extend_from_slice(&src_mac.0);
    v.extend_from_slice(&[0x08, 0x06, 0, 1, 0x08, 0, 6, 4]);
    v.extend_from_slice(&op.to_be_bytes());
    v.extend_from_slice(&src_mac.0);
    v.extend_from_slice(&sip.octets());
    v.extend_from_slice(&dst_mac.0);
    v.extend_from_slice(&tip.octets());
    v.resize(60, 0);
    v
}

fn unresolved_bed() -> Bed {
    let bed = bed();
    bed.tables
        .set_nexthop(
            NH_UNRESOLVED,
            Nexthop::Tunnel {
                encap: TunnelEncap::MplsUdp,
                vif: FABRIC,
                sip: FABRIC_IP,
                dip: PEER_IP,
                dmac: MacAddr([0; 6]),
                label: None,
            },
        )
        .unwrap();
    bed.tables
        .add_route(
            VRF,
            ip(Ipv4Addr::new(198, 18, 3, 0)),
            24,
            vrouter::tables::RouteTarget {
                nexthop: NH_UNRESOLVED,
                label: Some(LABEL_UDP),
            },
        )
        .unwrap();
    bed
}

#[test]
fn a_tunnel_without_dmac_waits_for_arp_and_follows_a_new_mac() {
    let mut bed = unresolved_bed();
    let pkt = udp4(POD_A_IP, REMOTE_MPLS_UDP, 64, b"hello");
    // Not even asked for: dropped under its reason.
    let before = bed
        .stats
        .snapshot()
        .drop_count(DropReason::NeighbourUnresolved);
    assert_eq!(bed.run(POD_A, &pkt).dropped.len(), 1);
    assert!(bed.tables.neighbours.insert(PEER_IP));
    assert_eq!(bed.run(POD_A, &pkt).dropped.len(), 1);
    assert_eq!(
        bed.stats
            .snapshot()
            .drop_count(DropReason::NeighbourUnresolved),
        before + 2
    );
    // The peer's reply to our request: learnt, and still the host's to see.
    let reply = arp(2, PEER_MAC, PEER_IP, FABRIC_MAC, FABRIC_IP);
    assert_eq!(bed.run(FABRIC, &reply).host.len(), 1);
    let out = bed.forward(POD_A, &pkt, FABRIC);
    assert_eq!(
        &out[0..6],
        &PEER_MAC.0,
        "outer destination: the MAC ARP told"
    );
    assert_eq!(&out[6..12], &FABRIC_MAC.0);
    // A gratuitous ARP with a new MAC moves the tunnel to it.
    let garp = arp(1, NEW_PEER_MAC, PEER_IP, MacAddr::BROADCAST, PEER_IP);
    bed.run(FABRIC, &garp);
    let out = bed.forward(POD_A, &pkt, FABRIC);
    assert_eq!(&out[0..6], &NEW_PEER_MAC.0);
    // So does its request for the fabric IP (answered as before).
    let ask = arp(1, PEER_MAC, PEER_IP, MacAddr::BROADCAST, FABRIC_IP);
    let answer = bed.forward(FABRIC, &ask, FABRIC);
    assert_eq!(&answer[22..28], &FABRIC_MAC.0);
    let out = bed.forward(POD_A, &pkt, FABRIC);
    assert_eq!(&out[0..6], &PEER_MAC.0);
    // An explicit dmac wins over what ARP says.
    let out = bed.forward(POD_A, &udp4(POD_A_IP, REMOTE_VXLAN, 64, b"x"), FABRIC);
    assert_eq!(&out[0..6], &PEER_MAC.0);
    bed.run(FABRIC, &garp);
    let out = bed.forward(POD_A, &udp4(POD_A_IP, REMOTE_VXLAN, 64, b"x"), FABRIC);
    assert_eq!(&out[0..6], &PEER_MAC.0, "the nexthop's own dmac");
    // Forgotten (it stopped answering): dropped again.
    bed.tables.neighbours.forget(PEER_IP);
    assert_eq!(bed.run(POD_A, &pkt).dropped.len(), 1);
}

#[test]
fn the_hosts_frames_leave_by_the_fabric_as_written() {
    let mut bed = bed();
    bed.tables
        .set_vif(Vif {
            index: HOST,
            kind: VifKind::Host,
            vrf: 0,
            mac: FABRIC_MAC,
            mtu: 1500,
        })
        .unwrap();
    // ARP from the host, then an IPv4 packet to a peer: both out of the fabric, untouched.
    let ask = arp(1, FABRIC_MAC, FABRIC_IP, MacAddr::BROADCAST, PEER_IP);
    let out = bed.forward(HOST, &ask, FABRIC);
    assert_eq!(out, ask);
    let mut ping = udp4(FABRIC_IP, PEER_IP, 64, b"ping");
    ping[0..6].copy_from_slice(&PEER_MAC.0);
    ping[6..12].copy_from_slice(&FABRIC_MAC.0);
    assert_eq!(bed.forward(HOST, &ping, FABRIC), ping);
    // Fabric traffic for the node that is not a tunnel goes to the host.
    let mut back = udp4(PEER_IP, FABRIC_IP, 64, b"pong");
    back[0..6].copy_from_slice(&FABRIC_MAC.0);
    let out = bed.run(FABRIC, &back);
    assert_eq!(out.host.len(), 1);
    assert_eq!(PacketBuf::data(&out.host[0]), &back[..]);
    // Without a fabric vif the host's frames are counted drops.
    bed.tables.del_vif(FABRIC).unwrap();
    let before = bed.stats.snapshot().drop_count(DropReason::NoTxQueue);
    assert_eq!(bed.run(HOST, &ping).dropped.len(), 1);
    assert_eq!(
        bed.stats.snapshot().drop_count(DropReason::NoTxQueue),
        before + 1
    );
}
