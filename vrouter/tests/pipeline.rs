//! Pipeline behaviour: routing, rewrite, ARP / ND answers, ICMP errors, ECMP, drops by reason,
//! counters, live table updates, and random input that must never panic.

mod common;
use common::*;
use etherparse::{Icmpv4Slice, Icmpv6Slice, Ipv4HeaderSlice, PacketBuilder, SlicedPacket};
use proptest::prelude::*;
use std::net::{Ipv4Addr, Ipv6Addr};
use std::sync::Arc;
use vrouter::pipeline::{FlowAction, FlowHook, Pipeline, TxBatches};
use vrouter::tables::{Nexthop, RouteTarget, Vif, VifKind};
use vrouter::{DropReason, PacketBuf, StatsRegistry, VecBuf};

fn dropped_as(bed: &mut Bed, vif: u16, frame: &[u8], reason: DropReason) {
    let before = bed.stats.snapshot().drop_count(reason);
    let out = bed.run(vif, frame);
    assert_eq!(
        out.dropped.len(),
        1,
        "dropped, not forwarded (touched {:?})",
        out.touched()
    );
    assert_eq!(
        bed.stats.snapshot().drop_count(reason),
        before + 1,
        "counted as {}",
        reason.name()
    );
}

#[test]
fn routes_pod_to_pod_with_ttl_and_checksum_rewritten() {
    let mut bed = bed();
    let inp = udp4(POD_A_IP, POD_B_IP, 64, b"to pod b");
    let out = bed.forward(POD_A, &inp, POD_B);
    assert_eq!(&out[0..6], &POD_B_MAC.0, "destination MAC is pod B");
    assert_eq!(&out[6..12], &VROUTER_MAC.0, "source MAC is the vrouter");
    let ip = Ipv4HeaderSlice::from_slice(&out[14..]).unwrap();
    assert_eq!(ip.ttl(), 63);
    assert_eq!(
        ip.header_checksum(),
        ip.to_header().calc_header_checksum(),
        "incremental checksum right"
    );
    assert_eq!(&out[34..], &inp[34..], "L4 untouched");
    let a = bed.stats.vif(POD_A);
    let b = bed.stats.vif(POD_B);
    assert_eq!((a.rx_packets, a.rx_bytes), (1, inp.len() as u64));
    // Sends are counted where a queue accepts them (the lcore), not where they are decided.
    assert_eq!((b.tx_packets, b.tx_bytes), (0, 0));
}

#[test]
fn routes_ipv6_with_hop_limit_decremented() {
    let mut bed = bed();
    let mut inp = Vec::new();
    let a: Ipv6Addr = "2001:db8:1::a".parse().unwrap();
    let b: Ipv6Addr = "2001:db8:1::b".parse().unwrap();
    PacketBuilder::ethernet2(POD_A_MAC.0, VROUTER_MAC.0)
        .ipv6(a.octets(), b.octets(), 9)
        .tcp(1234, 80, 1, 100)
        .write(&mut inp, b"v6")
        .unwrap();
    let out = bed.forward(POD_A, &inp, POD_B);
    assert_eq!(out[14 + 7], 8, "hop limit");
    assert_eq!(&out[0..6], &POD_B_MAC.0);
    // And into an MPLS-over-UDP tunnel.
    let mut t = Vec::new();
    PacketBuilder::ethernet2(POD_A_MAC.0, VROUTER_MAC.0)
        .ipv6(
            a.octets(),
            "2001:db8:3::7".parse::<Ipv6Addr>().unwrap().octets(),
            9,
        )
        .udp(1, 2)
        .write(&mut t, b"v6 tunnel")
        .unwrap();
    let out = bed.forward(POD_A, &t, FABRIC);
    let p = SlicedPacket::from_ethernet(&out).unwrap();
    assert!(
        matches!(p.transport, Some(etherparse::TransportSlice::Udp(ref u)) if u.destination_port() == 6635)
    );
    assert_eq!(out[14 + 20 + 8 + 4] >> 4, 6, "inner IPv6 after the label");
}

#[test]
fn vlan_tagged_frames_are_routed_untagged() {
    let mut bed = bed();
    let mut inp = udp4(POD_A_IP, POD_B_IP, 64, b"tagged");
    inp.splice(12..12, [0x81, 0x00, 0x00, 0x07]);
    let out = bed.forward(POD_A, &inp, POD_B);
    assert_eq!(&out[12..14], &[0x08, 0x00]);
    assert_eq!(out.len(), inp.len() - 4);
    assert_eq!(Ipv4HeaderSlice::from_slice(&out[14..]).unwrap().ttl(), 63);
}

#[test]
fn every_drop_is_counted_by_reason() {
    let mut bed = bed();
    dropped_as(
        &mut bed,
        POD_A,
        &udp4(POD_A_IP, Ipv4Addr::new(203, 0, 113, 9), 64, b"x"),
        DropReason::NoRoute,
    );
    dropped_as(
        &mut bed,
        POD_A,
        &udp4(POD_A_IP, DISCARDED, 64, b"x"),
        DropReason::DiscardNexthop,
    );
    dropped_as(
        &mut bed,
        77,
        &udp4(POD_A_IP, POD_B_IP, 64, b"x"),
        DropReason::InvalidVif,
    );
    dropped_as(&mut bed, POD_A, &[0u8; 10], DropReason::Truncated);
    let mut bad = udp4(POD_A_IP, POD_B_IP, 64, b"x");
    bad[24] ^= 0xff;
    dropped_as(&mut bed, POD_A, &bad, DropReason::BadChecksum);
    let mut short = udp4(POD_A_IP, POD_B_IP, 64, b"xxxxxxxx");
    short.truncate(short.len() - 4);
    dropped_as(&mut bed, POD_A, &short, DropReason::Truncated);
    let mut unknown_mac = udp4(POD_A_IP, POD_B_IP, 64, b"x");
    unknown_mac[0..6].copy_from_slice(&[2, 9, 9, 9, 9, 9]);
    dropped_as(&mut bed, POD_A, &unknown_mac, DropReason::BridgeMiss);
    let mut bcast = udp4(POD_A_IP, POD_B_IP, 64, b"x");
    bcast[0..6].copy_from_slice(&[0xff; 6]);
    dropped_as(&mut bed, POD_A, &bcast, DropReason::Multicast);
    // Fabric: unknown VNI, unknown label, label stack deeper than one.
    let vx = |vni: u32| {
        let mut v = vec![0x08, 0, 0, 0];
        v.extend_from_slice(&(vni << 8).to_be_bytes());
        v.extend_from_slice(&udp4(POD_A_IP, POD_B_IP, 64, b"x"));
        v
    };
    dropped_as(
        &mut bed,
        FABRIC,
        &fabric_udp(4789, &vx(4242)),
        DropReason::InvalidVni,
    );
    let mut ipkt = Vec::new();
    PacketBuilder::ipv4([198, 18, 2, 7], POD_A_IP.octets(), 9)
        .udp(1, 2)
        .write(&mut ipkt, b"x")
        .unwrap();
    let labelled = |label: u32, bos: u32| {
        [
            ((label << 12) | (bos << 8) | 9).to_be_bytes().to_vec(),
            ipkt.clone(),
        ]
        .concat()
    };
    dropped_as(
        &mut bed,
        FABRIC,
        &fabric_udp(6635, &labelled(999, 1)),
        DropReason::InvalidLabel,
    );
    dropped_as(
        &mut bed,
        FABRIC,
        &fabric_udp(6635, &labelled(LABEL_TO_A, 0)),
        DropReason::InvalidLabel,
    );
    // A per-VRF label whose inner packet the VRF has no route for, or that is not IP.
    let mut unrouted = Vec::new();
    PacketBuilder::ipv4([198, 18, 2, 7], [203, 0, 113, 5], 9)
        .udp(1, 2)
        .write(&mut unrouted, b"x")
        .unwrap();
    let vrf_label = ((LABEL_TO_VRF << 12) | 0x100 | 9).to_be_bytes().to_vec();
    dropped_as(
        &mut bed,
        FABRIC,
        &fabric_udp(6635, &[vrf_label.clone(), unrouted].concat()),
        DropReason::NoRoute,
    );
    dropped_as(
        &mut bed,
        FABRIC,
        &fabric_udp(6635, &[vrf_label, vec![0x20; 40]].concat()),
        DropReason::UnsupportedEthertype,
    );
    // A VXLAN header without the I flag.
    let mut noflag = vx(VNI);
    noflag[0] = 0;
    dropped_as(
        &mut bed,
        FABRIC,
        &fabric_udp(4789, &noflag),
        DropReason::Malformed,
    );
    // A tunnel route whose nexthop id was never configured.
    bed.tables
        .add_route(
            VRF,
            ip(Ipv4Addr::new(198, 18, 50, 0)),
            24,
            RouteTarget {
                nexthop: 99,
                label: None,
            },
        )
        .unwrap();
    dropped_as(
        &mut bed,
        POD_A,
        &udp4(POD_A_IP, Ipv4Addr::new(198, 18, 50, 1), 64, b"x"),
        DropReason::InvalidNexthop,
    );
    let s = bed.stats.snapshot();
    assert_eq!(s.total_drops(), 15);
    assert_eq!(bed.stats.vif(POD_A).drops, 8);
}

/// A fabric frame from the peer to the fabric IP, UDP to `dport`.
fn fabric_udp(dport: u16, payload: &[u8]) -> Vec<u8> {
    let mut v = Vec::new();
    PacketBuilder::ethernet2(PEER_MAC.0, FABRIC_MAC.0)
        .ipv4(PEER_IP.octets(), FABRIC_IP.octets(), 64)
        .udp(50000, dport)
        .write(&mut v, payload)
        .unwrap();
    v
}

fn arp_request(src_mac: vrouter::MacAddr, sip: Ipv4Addr, tip: Ipv4Addr) -> Vec<u8> {
    let mut v = vec![0xff; 6];
    v.extend_from_slice(&src_mac.0);
    v.extend_from_slice(&[0x08, 0x06, 0, 1, 0x08, 0, 6, 4, 0, 1]);
    v.extend_from_slice(&src_mac.0);
    v.extend_from_slice(&sip.octets());
    v.extend_from_slice(&[0; 6]);
    v.extend_from_slice(&tip.octets());
    v.resize(60, 0);
    v
}

#[test]
fn arp_is_answered_for_the_gateway_known_hosts_and_the_fabric_ip_only() {
    let mut bed = bed();
    for target in [GATEWAY, POD_B_IP, REMOTE_VXLAN] {
        let out = bed.forward(POD_A, &arp_request(POD_A_MAC, POD_A_IP, target), POD_A);
        assert_eq!(&out[0..6], &POD_A_MAC.0, "to the asker");
        assert_eq!(&out[6..12], &VROUTER_MAC.0);
        assert_eq!(&out[20..22], &[0, 2], "reply");
        assert_eq!(
            &out[22..28],
            &VROUTER_MAC.0,
            "sender MAC: the vrouter (proxy)"
        );
        assert_eq!(
            &out[28..32],
            &target.octets(),
            "sender IP: the target asked for"
        );
        assert_eq!(&out[32..38], &POD_A_MAC.0);
        assert_eq!(&out[38..42], &POD_A_IP.octets());
    }
    dropped_as(
        &mut bed,
        POD_A,
        &arp_request(POD_A_MAC, POD_A_IP, Ipv4Addr::new(203, 0, 113, 1)),
        DropReason::ArpNotForUs,
    );
    dropped_as(
        &mut bed,
        POD_A,
        &arp_request(POD_A_MAC, POD_A_IP, DISCARDED),
        DropReason::ArpNotForUs,
    );
    // A gratuitous ARP (a guest announcing itself, as after a live migration), request or
    // reply, is not answered: it is the agent's, to move the pod's routes to this vif.
    let garp = arp_request(POD_A_MAC, POD_A_IP, POD_A_IP);
    let mut garp_reply = garp.clone();
    garp_reply[20..22].copy_from_slice(&[0, 2]);
    for f in [garp, garp_reply] {
        let out = bed.run(POD_A, &f);
        assert!(out.dropped.is_empty() && out.touched().is_empty());
        assert_eq!(
            out.agent_traps,
            vec![vrouter::pipeline::Trap {
                reason: vrouter::pipeline::TrapReason::Garp,
                vif: POD_A,
                vrf: VRF as u16,
            }]
        );
        assert_eq!(vrouter::PacketBuf::data(&out.agent[0]), &f[..]);
    }
    // An ARP probe (sender 0.0.0.0) for the pod's own address is not answered either.
    dropped_as(
        &mut bed,
        POD_A,
        &arp_request(POD_A_MAC, Ipv4Addr::UNSPECIFIED, POD_A_IP),
        DropReason::ArpNotForUs,
    );
    // But pod B asking for pod A is.
    bed.forward(POD_B, &arp_request(POD_B_MAC, POD_B_IP, POD_A_IP), POD_B);
    let out = bed.forward(FABRIC, &arp_request(PEER_MAC, PEER_IP, FABRIC_IP), FABRIC);
    assert_eq!(
        &out[22..28],
        &FABRIC_MAC.0,
        "the fabric IP is at the fabric vif's MAC"
    );
    // Other fabric ARP is the host's business.
    let out = bed.run(
        FABRIC,
        &arp_request(PEER_MAC, PEER_IP, Ipv4Addr::new(198, 51, 100, 77)),
    );
    assert_eq!(out.host.len(), 1);
    assert_eq!(bed.stats.snapshot().replies, 5);
}

#[test]
fn neighbour_solicitation_gets_a_valid_advertisement() {
    let mut bed = bed();
    let src: Ipv6Addr = "2001:db8:1::a".parse().unwrap();
    let target: Ipv6Addr = "2001:db8:1::b".parse().unwrap();
    let snm: Ipv6Addr = "ff02::1:ff00:b".parse().unwrap();
    let mut ns_body = vec![0u8; 4];
    ns_body.extend_from_slice(&target.octets());
    ns_body.extend_from_slice(&[1, 1]);
    ns_body.extend_from_slice(&POD_A_MAC.0);
    let mut frame = Vec::new();
    PacketBuilder::ethernet2(POD_A_MAC.0, [0x33, 0x33, 0xff, 0, 0, 0x0b])
        .ipv6(src.octets(), snm.octets(), 255)
        .icmpv6_raw(135, 0, [0; 4])
        .write(&mut frame, &ns_body[4..])
        .unwrap();
    let out = bed.forward(POD_A, &frame, POD_A);
    assert_eq!(&out[0..6], &POD_A_MAC.0);
    assert_eq!(&out[6..12], &VROUTER_MAC.0);
    let ip = etherparse::Ipv6HeaderSlice::from_slice(&out[14..]).unwrap();
    assert_eq!(ip.source_addr(), target);
    assert_eq!(ip.destination_addr(), src);
    assert_eq!(ip.hop_limit(), 255);
    let icmp = Icmpv6Slice::from_slice(&out[54..]).unwrap();
    assert!(
        icmp.is_checksum_valid(target.octets(), src.octets()),
        "ICMPv6 checksum (etherparse)"
    );
    assert_eq!(out[54], 136, "neighbour advertisement");
    assert_eq!(out[58] & 0xe0, 0xe0, "router, solicited, override");
    assert_eq!(&out[62..78], &target.octets());
    assert_eq!(&out[78..80], &[2, 1], "target link-layer address option");
    assert_eq!(&out[80..86], &VROUTER_MAC.0);

    // Duplicate address detection for the pod's own address (source ::) gets no answer.
    let mut dad = Vec::new();
    PacketBuilder::ethernet2(POD_A_MAC.0, [0x33, 0x33, 0xff, 0, 0, 0x0a])
        .ipv6(
            [0; 16],
            "ff02::1:ff00:a".parse::<Ipv6Addr>().unwrap().octets(),
            255,
        )
        .icmpv6_raw(135, 0, [0; 4])
        .write(&mut dad, &src.octets())
        .unwrap();
    dropped_as(&mut bed, POD_A, &dad, DropReason::ArpNotForUs);
}

#[test]
fn ttl_expiry_sends_icmp_time_exceeded_back_to_the_pod() {
    let mut bed = bed();
    let inp = udp4(POD_A_IP, POD_B_IP, 1, b"expiring");
    let out = bed.forward(POD_A, &inp, POD_A);
    assert_eq!(&out[0..6], &POD_A_MAC.0);
    let ip = Ipv4HeaderSlice::from_slice(&out[14..]).unwrap();
    assert_eq!(ip.destination_addr(), POD_A_IP);
    assert_eq!(ip.protocol(), etherparse::IpNumber::ICMP);
    assert_eq!(ip.header_checksum(), ip.to_header().calc_header_checksum());
    let icmp = Icmpv4Slice::from_slice(&out[34..]).unwrap();
    assert_eq!((out[34], out[35]), (11, 0), "time exceeded in transit");
    assert_eq!(
        icmp.checksum(),
        icmp.icmp_type().calc_checksum(icmp.payload())
    );
    assert_eq!(
        &out[42..],
        &inp[14..14 + 28],
        "quotes the IP header and 8 bytes"
    );
    assert_eq!(
        bed.stats
            .snapshot()
            .drop_count(DropReason::TtlExceededIcmpSent),
        1
    );
    // An expiring ICMP error is dropped, not answered.
    let mut err = Vec::new();
    PacketBuilder::ethernet2(POD_A_MAC.0, VROUTER_MAC.0)
        .ipv4(POD_A_IP.octets(), POD_B_IP.octets(), 1)
        .icmpv4_raw(3, 1, [0; 4])
        .write(&mut err, &[0; 28])
        .unwrap();
    dropped_as(&mut bed, POD_A, &err, DropReason::TtlExceeded);
}

#[test]
fn too_big_with_df_gets_fragmentation_needed_and_without_df_is_dropped() {
    let mut bed = bed();
    bed.tables
        .set_vif(Vif {
            index: POD_B,
            kind: VifKind::Pod,
            vrf: VRF as u16,
            mac: POD_B_MAC,
            mtu: 576,
        })
        .unwrap();
    let mut inp = udp4(POD_A_IP, POD_B_IP, 64, &[7u8; 1000]);
    set_df(&mut inp, 14, true);
    let out = bed.forward(POD_A, &inp, POD_A);
    assert_eq!(
        (out[34], out[35]),
        (3, 4),
        "destination unreachable, fragmentation needed"
    );
    assert_eq!(u16::from_be_bytes([out[40], out[41]]), 576, "next-hop MTU");
    set_df(&mut inp, 14, false);
    dropped_as(&mut bed, POD_A, &inp, DropReason::Mtu);
    // Through a tunnel the advertised MTU leaves room for the outer headers.
    let mut big = udp4(POD_A_IP, REMOTE_MPLS_GRE, 64, &[7u8; 1460]);
    set_df(&mut big, 14, true);
    let out = bed.forward(POD_A, &big, POD_A);
    assert_eq!(u16::from_be_bytes([out[40], out[41]]), 1500 - 20 - 4 - 4);
}

#[test]
fn ecmp_keeps_each_flow_on_one_member_and_uses_all() {
    let mut bed = bed();
    bed.tables
        .set_nexthop(30, Nexthop::ecmp(&[NH_A, NH_B]).unwrap())
        .unwrap();
    bed.tables
        .add_route(
            VRF,
            ip(Ipv4Addr::new(198, 18, 7, 0)),
            24,
            RouteTarget {
                nexthop: 30,
                label: None,
            },
        )
        .unwrap();
    let mut per_vif = [0u32; 3];
    for port in 0..200u16 {
        let mut frame = Vec::new();
        PacketBuilder::ethernet2(POD_A_MAC.0, VROUTER_MAC.0)
            .ipv4(POD_A_IP.octets(), [198, 18, 7, 7], 64)
            .udp(10000 + port, 80)
            .write(&mut frame, b"ecmp")
            .unwrap();
        let first = bed.run(POD_A, &frame).touched().to_vec();
        assert_eq!(first.len(), 1);
        for _ in 0..3 {
            assert_eq!(
                bed.run(POD_A, &frame).touched(),
                first.as_slice(),
                "same flow, same member"
            );
        }
        per_vif[usize::from(first[0])] += 1;
    }
    assert!(
        per_vif[1] > 50 && per_vif[2] > 50,
        "both members used: {per_vif:?}"
    );
}

#[test]
fn flow_hook_sees_routed_packets_and_can_drop_them() {
    struct DenyPort(u16, u32);
    impl FlowHook for DenyPort {
        fn on_lookup(
            &mut self,
            m: &vrouter::meta::PacketMeta,
            frame: &mut [u8],
            t: RouteTarget,
        ) -> FlowAction {
            assert_eq!(
                u16::from_be_bytes([
                    frame[usize::from(m.l4_off) + 2],
                    frame[usize::from(m.l4_off) + 3]
                ]),
                m.dport
            );
            self.1 += 1;
            assert_eq!(m.vrf, VRF as u16);
            if m.dport == self.0 {
                FlowAction::Drop
            } else {
                FlowAction::Forward(t)
            }
        }
    }
    let tables = tables();
    let stats = StatsRegistry::default();
    let mut pipe = Pipeline::new(tables, stats.new_core(), DenyPort(5001, 0));
    let mut out = TxBatches::new(8);
    pipe.process(
        POD_A,
        [VecBuf::from_frame(&udp4(POD_A_IP, POD_B_IP, 64, b"x"))],
        &mut out,
    );
    assert_eq!(out.dropped.len(), 1);
    assert_eq!(stats.snapshot().drop_count(DropReason::FlowDrop), 1);
    assert_eq!(pipe.flow_hook().1, 1);
}

#[test]
fn route_changes_apply_to_the_next_burst_and_while_forwarding() {
    let mut bed = bed();
    let frame = udp4(POD_A_IP, Ipv4Addr::new(198, 18, 60, 1), 64, b"moving");
    dropped_as(&mut bed, POD_A, &frame, DropReason::NoRoute);
    bed.tables
        .add_route(
            VRF,
            ip(Ipv4Addr::new(198, 18, 60, 0)),
            24,
            RouteTarget {
                nexthop: NH_B,
                label: None,
            },
        )
        .unwrap();
    bed.forward(POD_A, &frame, POD_B);
    bed.tables
        .add_route(
            VRF,
            ip(Ipv4Addr::new(198, 18, 60, 0)),
            25,
            RouteTarget {
                nexthop: NH_A,
                label: None,
            },
        )
        .unwrap();
    bed.forward(POD_A, &frame, POD_A);
    // A new vif appears in a new topology snapshot, picked up at the next burst.
    bed.tables
        .set_vif(Vif {
            index: 9,
            kind: VifKind::Pod,
            vrf: VRF as u16,
            mac: POD_A_MAC,
            mtu: 1500,
        })
        .unwrap();
    bed.forward(9, &udp4(POD_A_IP, POD_B_IP, 64, b"x"), POD_B);

    // A writer churning routes and nexthops while a core forwards: every packet ends up
    // exactly once in a valid place.
    let tables = bed.tables.clone();
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let writer = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            let mut n = 0u32;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let p = ip(Ipv4Addr::new(198, 18, 60, 0));
                tables
                    .add_route(
                        VRF,
                        p,
                        26,
                        RouteTarget {
                            nexthop: NH_B,
                            label: None,
                        },
                    )
                    .unwrap();
                tables.del_route(VRF, p, 26).unwrap();
                tables
                    .set_nexthop(
                        NH_B,
                        Nexthop::Encap {
                            vif: POD_B,
                            dmac: POD_B_MAC,
                        },
                    )
                    .unwrap();
                n += 1;
            }
            n
        })
    };
    let mut out = TxBatches::new(32);
    for _ in 0..2000 {
        out.clear();
        bed.pipe
            .process(POD_A, (0..32).map(|_| VecBuf::from_frame(&frame)), &mut out);
        let sent: usize = out.touched().iter().map(|&v| out.tx(v).len()).sum();
        let s = bed.stats.snapshot();
        assert_eq!(
            sent,
            32,
            "drops: {:?}",
            s.drops.iter().filter(|d| d.1 > 0).collect::<Vec<_>>()
        );
        assert!(out.touched().iter().all(|&v| v == POD_A || v == POD_B));
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    assert!(writer.join().unwrap() > 0);
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]
    /// Random bytes, and valid frames with random corruption, on every kind of vif: never a
    /// panic, and every packet ends up in exactly one place (sent, to the host, dropped, or
    /// for the agent: a gratuitous ARP).
    #[test]
    fn random_input_never_panics_and_every_packet_is_accounted(
        frames in proptest::collection::vec(
            prop_oneof![
                proptest::collection::vec(any::<u8>(), 0..200),
                (0usize..6, proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 0..6),
                 any::<prop::sample::Index>())
                    .prop_map(|(kind, flips, cut)| {
                        let mut f = match kind {
                            0 => udp4(POD_A_IP, POD_B_IP, 64, b"abc"),
                            1 => udp4(POD_A_IP, REMOTE_VXLAN, 64, b"abc"),
                            2 => fabric_udp(4789, &[[0x08, 0, 0, 0, 0, 0x13, 0x88, 0].as_slice(), &udp4(POD_A_IP, POD_B_IP, 3, b"q")].concat()),
                            3 => fabric_udp(6635, &[[0, 0x0c, 0x81, 9].as_slice(), &udp4(POD_A_IP, POD_B_IP, 3, b"q")[14..]].concat()),
                            4 => arp_request(POD_A_MAC, POD_A_IP, GATEWAY),
                            _ => udp4(POD_A_IP, POD_B_IP, 1, b"ttl"),
                        };
                        for (i, v) in flips { let i = i.index(f.len()); f[i] ^= v; }
                        f.truncate(cut.index(f.len() + 1));
                        f
                    }),
            ],
            1..32,
        ),
        vif in 0u16..4,
    ) {
        thread_local! {
            // One test bed for all cases: building the tables per case would dominate.
            static BED: std::cell::RefCell<Bed> = std::cell::RefCell::new(bed());
        }
        BED.with(|bed| -> Result<(), TestCaseError> {
        let mut bed = bed.borrow_mut();
        let drops = |s: &vrouter::stats::StatsSnapshot| {
            s.total_drops() - s.drop_count(DropReason::TtlExceededIcmpSent) - s.drop_count(DropReason::MtuIcmpSent)
        };
        let before = drops(&bed.stats.snapshot());
        let n = frames.len();
        let mut out = TxBatches::new(32);
        bed.pipe.process(vif, frames.iter().map(|f| VecBuf::from_frame(f)), &mut out);
        let sent: usize = out.touched().iter().map(|&v| out.tx(v).len()).sum();
        prop_assert_eq!(sent + out.host.len() + out.dropped.len() + out.agent.len(), n);
        prop_assert_eq!(drops(&bed.stats.snapshot()) - before, out.dropped.len() as u64);
        for &v in out.touched() {
            for b in out.tx(v) {
                prop_assert!(b.len() >= 14, "every frame sent has an Ethernet header");
            }
        }
        Ok(())
        })?;
    }
}

/// One frame of the burst-equivalence test: a destination, a TTL, a size, a VLAN tag, padding.
fn mixed_frame(dst: usize, ttl: u8, big: bool, vlan: bool, pad: usize, df: bool) -> Vec<u8> {
    let dsts = [
        POD_B_IP,
        POD_A_IP,
        REMOTE_VXLAN,
        REMOTE_MPLS_UDP,
        REMOTE_MPLS_GRE,
        GATEWAY,
        DISCARDED,
    ];
    let payload = vec![0x5a; if big { 1480 } else { 18 }];
    let mut f = udp4(POD_A_IP, dsts[dst % dsts.len()], ttl, &payload);
    set_df(&mut f, 14, df);
    f.extend(std::iter::repeat_n(0xee, pad));
    if vlan {
        f.splice(12..12, [0x81, 0x00, 0x00, 0x07]);
    }
    f
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 300, ..ProptestConfig::default() })]
    /// The pipeline remembers the last nexthop, tunnel template and local-vif rewrite within a
    /// burst. Whatever the mix of packets in a burst (same and different nexthops, TTL expiry,
    /// too big, VLAN tags, padding), each packet must come out exactly as it does alone.
    #[test]
    fn a_burst_forwards_each_packet_as_it_would_alone(
        frames in proptest::collection::vec(
            (0usize..7, prop_oneof![Just(64u8), Just(1u8), Just(2u8)], proptest::bool::weighted(0.1),
             proptest::bool::weighted(0.1), prop_oneof![Just(0usize), Just(6usize)], any::<bool>())
                .prop_map(|(d, ttl, big, vlan, pad, df)| mixed_frame(d, ttl, big, vlan, pad, df)),
            1..=32,
        ),
    ) {
        thread_local! {
            // Two identical beds fed the same packets in the same order, so per-pipeline state
            // (the outer IP id) stays in step.
            static BEDS: std::cell::RefCell<(Bed, Bed)> = std::cell::RefCell::new((bed(), bed()));
        }
        BEDS.with(|beds| -> Result<(), TestCaseError> {
            let (together, alone) = &mut *beds.borrow_mut();
            let mut out = TxBatches::new(32);
            together.pipe.process(POD_A, frames.iter().map(|f| VecBuf::from_frame(f)), &mut out);
            let mut want: std::collections::BTreeMap<&str, Vec<Vec<u8>>> = Default::default();
            let mut got: std::collections::BTreeMap<&str, Vec<Vec<u8>>> = Default::default();
            let name = |v: u16| match v { FABRIC => "fabric", POD_A => "pod a", POD_B => "pod b", _ => "other" };
            for &v in out.touched() {
                got.entry(name(v)).or_default().extend(out.tx(v).iter().map(|b| b.data().to_vec()));
            }
            got.entry("host").or_default().extend(out.host.iter().map(|b| b.data().to_vec()));
            got.entry("dropped").or_default().extend(out.dropped.iter().map(|b| b.data().to_vec()));
            for f in &frames {
                let o = alone.run(POD_A, f);
                for &v in o.touched() {
                    want.entry(name(v)).or_default().extend(o.tx(v).iter().map(|b| b.data().to_vec()));
                }
                want.entry("host").or_default().extend(o.host.iter().map(|b| b.data().to_vec()));
                want.entry("dropped").or_default().extend(o.dropped.iter().map(|b| b.data().to_vec()));
            }
            prop_assert_eq!(got, want);
            prop_assert_eq!(together.stats.snapshot(), alone.stats.snapshot());
            for v in [FABRIC, POD_A, POD_B] {
                prop_assert_eq!(together.stats.vif(v), alone.stats.vif(v), "vif {} counters", v);
            }
            Ok(())
        })?;
    }
}

/// A burst of VXLAN packets to different inner destinations and VNIs (VRFs): each goes where
/// its own VRF routes its own destination, whatever the packet before it looked up.
#[test]
fn a_burst_of_decapsulated_packets_is_routed_per_vrf_and_destination() {
    let mut bed = bed();
    // VNI 6000 → VRF 6, where pod A's address routes to pod B.
    bed.tables.add_vrf(6).unwrap();
    bed.tables.set_vni(6000, 6).unwrap();
    let to_b = RouteTarget {
        nexthop: NH_B,
        label: None,
    };
    bed.tables
        .add_route(6, std::net::IpAddr::V4(POD_A_IP), 32, to_b)
        .unwrap();
    let vxlan = |vni: u32, dst: Ipv4Addr| {
        let mut inner = udp4(REMOTE_VXLAN, dst, 64, b"decapsulated");
        inner[6..12].copy_from_slice(&REMOTE_MAC.0);
        let mut payload = vec![0x08, 0, 0, 0];
        payload.extend_from_slice(&(vni << 8).to_be_bytes());
        payload.extend_from_slice(&inner);
        fabric_udp(4789, &payload)
    };
    let burst = [
        (vxlan(VNI, POD_A_IP), POD_A),
        (vxlan(VNI, POD_A_IP), POD_A),
        (vxlan(VNI, POD_B_IP), POD_B),
        (vxlan(6000, POD_A_IP), POD_B),
        (vxlan(VNI, POD_A_IP), POD_A),
    ];
    // Between two packets of a known VNI, one of a VNI no VRF has: dropped, and the burst's
    // memory of the VNI before it neither answers for it nor is lost.
    let unknown = vxlan(7777, POD_A_IP);
    let frames: Vec<&Vec<u8>> = burst[..4]
        .iter()
        .map(|(f, _)| f)
        .chain([&unknown])
        .chain(burst[4..].iter().map(|(f, _)| f))
        .collect();
    let invalid_vni = bed.stats.snapshot().drop_count(DropReason::InvalidVni);
    bed.out.clear();
    bed.pipe.process(
        FABRIC,
        frames.iter().map(|f| VecBuf::from_frame(f)),
        &mut bed.out,
    );
    assert_eq!(bed.out.dropped.len(), 1, "{:?}", bed.stats.snapshot());
    assert_eq!(
        bed.stats.snapshot().drop_count(DropReason::InvalidVni),
        invalid_vni + 1
    );
    for (vif, want) in [(POD_A, 3), (POD_B, 2)] {
        let got = bed.out.tx(vif);
        assert_eq!(got.len(), want, "to vif {vif}");
        let mac = if vif == POD_A { POD_A_MAC } else { POD_B_MAC };
        assert!(got.iter().all(|b| b.data()[..6] == mac.0));
    }
}

/// A trace of pod A records its next packets, each with its verdict and the headers it came in
/// and went out with; packets of other vifs and packets past the count are not traced.
#[test]
fn a_trace_records_the_next_packets_of_one_vif_with_their_verdicts() {
    use vrouter::pipeline::trace::Tracer;
    let mut bed = bed();
    let tracer = Arc::new(Tracer::default());
    bed.pipe.set_tracer(tracer.clone());
    tracer.start(POD_A, 3);
    let routed = udp4(POD_A_IP, POD_B_IP, 64, b"routed");
    let tunnelled = udp4(POD_A_IP, REMOTE_VXLAN, 64, b"tunnelled");
    let unroutable = udp4(POD_A_IP, Ipv4Addr::new(203, 0, 113, 9), 64, b"nowhere");
    bed.run(POD_B, &udp4(POD_B_IP, POD_A_IP, 64, b"other vif"));
    for f in [&routed, &tunnelled, &unroutable, &routed] {
        bed.run(POD_A, f);
    }
    let r = tracer.drain();
    assert_eq!(r.len(), 3, "the count, and only pod A's packets");
    assert!(r.iter().all(|r| r.in_vif == POD_A && r.vrf == VRF as u16));
    assert_eq!(r[0].verdict, vrouter::pipeline::Verdict::Tx(POD_B));
    assert_eq!(&r[0].input[..routed.len()], &routed[..]);
    assert_eq!(r[0].in_len as usize, routed.len());
    assert_eq!(&r[0].output[..6], &POD_B_MAC.0, "out with pod B's MAC");
    assert_eq!(r[0].output[22], 63, "TTL one less");
    assert_eq!(r[1].verdict, vrouter::pipeline::Verdict::Tx(FABRIC));
    assert_eq!(
        r[1].out_len as usize,
        tunnelled.len() + 50,
        "VXLAN's 50 bytes in front"
    );
    assert_eq!(
        &r[1].output[36..38],
        &4789u16.to_be_bytes(),
        "outer UDP to 4789"
    );
    assert_eq!(
        r[2].verdict,
        vrouter::pipeline::Verdict::Drop(DropReason::NoRoute)
    );
    assert_eq!(r[2].out_len, 0);
    assert_eq!(tracer.vif(), None, "the trace ends when its count is spent");
}
