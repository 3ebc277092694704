//! The vrouter's DHCP server on the pipeline: requests built here byte by byte, answers read
//! back with etherparse (Ethernet, IPv4, UDP and its checksum) and the DHCP options by hand.

mod common;
use common::*;
use etherparse::{PacketBuilder, SlicedPacket, TransportSlice, UdpHeader};
use std::net::Ipv4Addr;
use vrouter::wire::dhcp::{Lease, Route};
use vrouter::{DropReason, MacAddr, PacketBuf, VecBuf};

const POD_A_LEASE_IP: Ipv4Addr = Ipv4Addr::new(198, 18, 1, 10);

fn lease() -> Lease {
    Lease {
        address: POD_A_LEASE_IP,
        prefix_len: 24,
        gateway: GATEWAY,
        dns: [Ipv4Addr::new(192, 0, 2, 53)].into_iter().collect(),
        mtu: Some(1450),
        routes: [Route {
            prefix: Ipv4Addr::new(203, 0, 113, 0),
            len: 24,
            router: GATEWAY,
        }]
        .into_iter()
        .collect(),
        lease_time: 600,
    }
}

/// A DHCP message from pod A: BOOTP fixed part, cookie, `options` (END added), padded to 300.
fn dhcp_frame(
    dst_mac: MacAddr,
    src: Ipv4Addr,
    dst: Ipv4Addr,
    flags: u16,
    ciaddr: Ipv4Addr,
    options: &[u8],
) -> Vec<u8> {
    let mut m = vec![0u8; 240];
    m[0] = 1;
    m[1] = 1;
    m[2] = 6;
    m[4..8].copy_from_slice(&[0xca, 0xfe, 0xf0, 0x0d]);
    m[10..12].copy_from_slice(&flags.to_be_bytes());
    m[12..16].copy_from_slice(&ciaddr.octets());
    m[28..34].copy_from_slice(&POD_A_MAC.0);
    m[236..240].copy_from_slice(&[99, 130, 83, 99]);
    m.extend_from_slice(options);
    m.push(255);
    m.resize(300, 0);
    let mut v = Vec::new();
    PacketBuilder::ethernet2(POD_A_MAC.0, dst_mac.0)
        .ipv4(src.octets(), dst.octets(), 64)
        .udp(68, 67)
        .write(&mut v, &m)
        .unwrap();
    v
}

fn discover(options: &[u8]) -> Vec<u8> {
    let mut o = vec![53, 1, 1];
    o.extend_from_slice(options);
    dhcp_frame(
        MacAddr::BROADCAST,
        Ipv4Addr::UNSPECIFIED,
        Ipv4Addr::BROADCAST,
        0,
        Ipv4Addr::UNSPECIFIED,
        &o,
    )
}

fn request(requested: Ipv4Addr, flags: u16) -> Vec<u8> {
    let mut o = vec![53, 1, 3, 50, 4];
    o.extend_from_slice(&requested.octets());
    o.extend_from_slice(&[54, 4]);
    o.extend_from_slice(&GATEWAY.octets());
    o.extend_from_slice(&[55, 4, 1, 3, 26, 121]);
    dhcp_frame(
        MacAddr::BROADCAST,
        Ipv4Addr::UNSPECIFIED,
        Ipv4Addr::BROADCAST,
        flags,
        Ipv4Addr::UNSPECIFIED,
        &o,
    )
}

/// What an answer says, read with etherparse (and the options by hand).
struct Answer {
    dst_mac: [u8; 6],
    src_mac: [u8; 6],
    src: Ipv4Addr,
    dst: Ipv4Addr,
    yiaddr: Ipv4Addr,
    xid: [u8; 4],
    options: Vec<(u8, Vec<u8>)>,
}

impl Answer {
    fn option(&self, code: u8) -> Option<&[u8]> {
        self.options
            .iter()
            .find(|(c, _)| *c == code)
            .map(|(_, v)| &v[..])
    }
}

fn read(frame: &[u8]) -> Answer {
    let p = SlicedPacket::from_ethernet(frame).expect("etherparse reads the answer");
    let Some(etherparse::NetSlice::Ipv4(ip)) = &p.net else {
        panic!("IPv4")
    };
    let iph = ip.header().to_header();
    assert_eq!(
        iph.header_checksum,
        iph.calc_header_checksum(),
        "IP checksum"
    );
    let Some(TransportSlice::Udp(u)) = &p.transport else {
        panic!("UDP")
    };
    assert_eq!((u.source_port(), u.destination_port()), (67, 68));
    let payload = u.payload();
    let want = UdpHeader::with_ipv4_checksum(67, 68, &iph, payload).unwrap();
    assert_eq!(u.checksum(), want.checksum, "UDP checksum");
    assert_eq!(usize::from(u.length()), 8 + payload.len());
    assert!(payload.len() >= 300, "BOOTP minimum");
    assert_eq!(payload[0], 2, "BOOTREPLY");
    assert_eq!(&payload[236..240], &[99, 130, 83, 99]);
    let mut options = Vec::new();
    let mut i = 240;
    while payload[i] != 255 {
        let len = usize::from(payload[i + 1]);
        options.push((payload[i], payload[i + 2..i + 2 + len].to_vec()));
        i += 2 + len;
    }
    Answer {
        dst_mac: frame[0..6].try_into().unwrap(),
        src_mac: frame[6..12].try_into().unwrap(),
        src: Ipv4Addr::from(iph.source),
        dst: Ipv4Addr::from(iph.destination),
        yiaddr: Ipv4Addr::from(<[u8; 4]>::try_from(&payload[16..20]).unwrap()),
        xid: payload[4..8].try_into().unwrap(),
        options,
    }
}

fn dhcp_bed() -> Bed {
    let bed = bed();
    bed.tables.set_dhcp(POD_A, Some(lease())).unwrap();
    bed
}

#[test]
fn discover_gets_an_offer_and_request_an_ack_back_out_of_the_pod_vif() {
    let mut bed = dhcp_bed();
    let replies = bed.stats.snapshot().replies;
    let out = bed.forward(POD_A, &discover(&[55, 2, 1, 3]), POD_A);
    let a = read(&out);
    assert_eq!(a.src_mac, VROUTER_MAC.0);
    assert_eq!(
        a.dst_mac, POD_A_MAC.0,
        "unicast to the client without the broadcast flag"
    );
    assert_eq!((a.src, a.dst), (GATEWAY, POD_A_LEASE_IP));
    assert_eq!(a.yiaddr, POD_A_LEASE_IP);
    assert_eq!(a.xid, [0xca, 0xfe, 0xf0, 0x0d]);
    assert_eq!(a.option(53), Some(&[2][..]), "OFFER");
    assert_eq!(a.option(54), Some(&GATEWAY.octets()[..]));
    assert_eq!(a.option(1), Some(&[255, 255, 255, 0][..]));
    assert_eq!(a.option(3), Some(&GATEWAY.octets()[..]));
    assert_eq!(a.option(6), Some(&[192, 0, 2, 53][..]));
    assert_eq!(a.option(26), Some(&1450u16.to_be_bytes()[..]));
    assert_eq!(a.option(51), Some(&600u32.to_be_bytes()[..]));
    assert_eq!(a.option(121), None, "not asked for");
    assert_eq!(bed.stats.snapshot().replies, replies + 1);

    let out = bed.forward(POD_A, &request(POD_A_LEASE_IP, 0x8000), POD_A);
    let a = read(&out);
    assert_eq!(a.dst_mac, [0xff; 6], "broadcast flag");
    assert_eq!(a.dst, Ipv4Addr::BROADCAST);
    assert_eq!(a.option(53), Some(&[5][..]), "ACK");
    assert_eq!(a.yiaddr, POD_A_LEASE_IP);
    assert_eq!(
        a.option(121),
        Some(&[24, 203, 0, 113, 198, 18, 1, 1, 0, 198, 18, 1, 1][..]),
        "asked for: the route and the default through the gateway"
    );
    let s = bed.stats.vif(POD_A);
    assert_eq!(s.rx_packets, 2);
    assert_eq!(s.drops, 0);
}

#[test]
fn a_request_for_another_address_is_naked_and_renewals_are_unicast() {
    let mut bed = dhcp_bed();
    let out = bed.forward(POD_A, &request(Ipv4Addr::new(198, 18, 1, 99), 0), POD_A);
    let a = read(&out);
    assert_eq!(a.option(53), Some(&[6][..]), "NAK");
    assert_eq!((a.dst, a.dst_mac), (Ipv4Addr::BROADCAST, [0xff; 6]));
    assert_eq!(a.yiaddr, Ipv4Addr::UNSPECIFIED);
    assert_eq!(a.option(51), None);

    // RENEWING: unicast to the gateway from the leased address, ciaddr set, no option 50.
    let renew = dhcp_frame(
        VROUTER_MAC,
        POD_A_LEASE_IP,
        GATEWAY,
        0,
        POD_A_LEASE_IP,
        &[53, 1, 3],
    );
    let a = read(&bed.forward(POD_A, &renew, POD_A));
    assert_eq!(a.option(53), Some(&[5][..]), "ACK");
    assert_eq!((a.dst, a.dst_mac), (POD_A_LEASE_IP, POD_A_MAC.0));
    // INFORM: configuration without a lease.
    let inform = dhcp_frame(
        VROUTER_MAC,
        POD_A_LEASE_IP,
        GATEWAY,
        0,
        POD_A_LEASE_IP,
        &[53, 1, 8],
    );
    let a = read(&bed.forward(POD_A, &inform, POD_A));
    assert_eq!(a.option(53), Some(&[5][..]));
    assert_eq!(a.option(51), None, "no lease time to an INFORM");
    assert_eq!(a.option(3), Some(&GATEWAY.octets()[..]));
}

#[test]
fn release_decline_foreign_requests_and_malformed_dhcp_are_counted_drops() {
    let mut bed = dhcp_bed();
    let any = Ipv4Addr::UNSPECIFIED;
    let b = Ipv4Addr::BROADCAST;
    for opts in [
        &[53u8, 1, 7][..],                // RELEASE
        &[53, 1, 4],                      // DECLINE
        &[53, 1, 3, 54, 4, 192, 0, 2, 1], // REQUEST for another server
        &[],                              // no message type
    ] {
        let f = dhcp_frame(MacAddr::BROADCAST, any, b, 0, any, opts);
        dropped_as(&mut bed, POD_A, &f, DropReason::DhcpIgnored);
    }
    // An option running past the end of the message.
    let mut f = discover(&[]);
    let opts = 14 + 20 + 8 + 240;
    f[opts + 3] = 61;
    f[opts + 4] = 250;
    f.truncate(opts + 50);
    fix_lengths(&mut f);
    dropped_as(&mut bed, POD_A, &f, DropReason::Truncated);
    // Too short to be DHCP at all.
    let mut f = discover(&[]);
    f.truncate(14 + 20 + 8 + 100);
    fix_lengths(&mut f);
    dropped_as(&mut bed, POD_A, &f, DropReason::Truncated);
    // A wrong cookie.
    let mut f = discover(&[]);
    f[14 + 20 + 8 + 236] = 0;
    dropped_as(&mut bed, POD_A, &f, DropReason::Malformed);
}

#[test]
fn dhcp_from_a_vif_without_an_address_goes_to_the_agent_and_arp_for_the_gateway_answered_without_a_route(
) {
    let mut bed = dhcp_bed();
    let mut f = discover(&[]);
    f[6..12].copy_from_slice(&POD_B_MAC.0);
    let drops = bed.stats.snapshot().total_drops();
    let out = bed.run(POD_B, &f);
    assert!(out.dropped.is_empty() && out.touched().is_empty());
    assert_eq!(out.agent.len(), 1, "for the agent");
    assert_eq!(
        out.agent_traps[0],
        vrouter::pipeline::Trap {
            reason: vrouter::pipeline::TrapReason::Dhcp,
            vif: POD_B,
            vrf: VRF as u16,
        }
    );
    assert_eq!(
        vrouter::PacketBuf::data(&out.agent[0]),
        &f[..],
        "handed over as it came"
    );
    assert_eq!(
        bed.stats.snapshot().total_drops(),
        drops,
        "not counted here"
    );
    // Pod A's gateway, with its route gone: still the vrouter's.
    bed.tables.del_route(VRF, ip(GATEWAY), 32).unwrap();
    let arp = arp_request(POD_A_MAC, POD_A_LEASE_IP, GATEWAY);
    let out = bed.forward(POD_A, &arp, POD_A);
    assert_eq!(&out[22..28], &VROUTER_MAC.0);
    assert_eq!(&out[28..32], &GATEWAY.octets());
    // Pod B has no lease: the same question from it goes unanswered now.
    let arp_b = arp_request(POD_B_MAC, POD_B_IP, GATEWAY);
    dropped_as(&mut bed, POD_B, &arp_b, DropReason::ArpNotForUs);
}

fn arp_request(src_mac: MacAddr, sip: Ipv4Addr, tip: Ipv4Addr) -> Vec<u8> {
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

/// After truncating a frame: its IP and UDP lengths (and IP checksum) say so.
fn fix_lengths(f: &mut [u8]) {
    let ip_len = (f.len() - 14) as u16;
    f[16..18].copy_from_slice(&ip_len.to_be_bytes());
    f[24..26].copy_from_slice(&[0, 0]);
    let mut h = etherparse::Ipv4HeaderSlice::from_slice(&f[14..])
        .unwrap()
        .to_header();
    h.header_checksum = h.calc_header_checksum();
    f[24..26].copy_from_slice(&h.header_checksum.to_be_bytes());
    f[38..40].copy_from_slice(&(ip_len - 20).to_be_bytes());
}

fn dropped_as(bed: &mut Bed, vif: u16, frame: &[u8], reason: DropReason) {
    let before = bed.stats.snapshot().drop_count(reason);
    let out = bed.run(vif, frame);
    assert_eq!(out.dropped.len(), 1, "dropped, touched {:?}", out.touched());
    assert_eq!(
        bed.stats.snapshot().drop_count(reason),
        before + 1,
        "{}",
        reason.name()
    );
}

/// A router solicitation from pod A (from its link-local address to all routers).
fn router_solicit(src: std::net::Ipv6Addr) -> Vec<u8> {
    let mut v = Vec::new();
    PacketBuilder::ethernet2(POD_A_MAC.0, [0x33, 0x33, 0, 0, 0, 2])
        .ipv6(
            src.octets(),
            "ff02::2".parse::<std::net::Ipv6Addr>().unwrap().octets(),
            255,
        )
        .icmpv6(etherparse::Icmpv6Type::Unknown {
            type_u8: 133,
            code_u8: 0,
            bytes5to8: [0; 4],
        })
        .write(&mut v, &[1, 1, 2, 0, 0, 0, 0, 0x0a])
        .unwrap();
    v
}

#[test]
fn a_router_solicitation_gets_an_advertisement_of_the_vifs_prefix_and_mtu() {
    use std::net::Ipv6Addr;
    use vrouter::tables::RouterAdvert;
    let mut bed = bed();
    let prefix: Ipv6Addr = "2001:db8:18:1::".parse().unwrap();
    bed.tables
        .set_ra(
            POD_A,
            Some(RouterAdvert {
                prefix,
                autonomous: true,
                mtu: 1400,
            }),
        )
        .unwrap();
    let asker: Ipv6Addr = "fe80::a".parse().unwrap();
    let out = bed.forward(POD_A, &router_solicit(asker), POD_A);
    let p = SlicedPacket::from_ethernet(&out).expect("etherparse reads it");
    assert_eq!(&out[0..6], &POD_A_MAC.0, "to the asker");
    assert_eq!(&out[6..12], &VROUTER_MAC.0);
    let Some(etherparse::NetSlice::Ipv6(ip)) = &p.net else {
        panic!("IPv6")
    };
    let h = ip.header();
    let router = vrouter::pipeline::reply::link_local(VROUTER_MAC);
    assert_eq!(
        h.source_addr(),
        router,
        "from the vrouter's link-local address"
    );
    assert_eq!(h.destination_addr(), asker);
    assert_eq!(h.hop_limit(), 255, "on-link proof (RFC 4861 6.1.2)");
    let Some(TransportSlice::Icmpv6(icmp)) = &p.transport else {
        panic!("ICMPv6")
    };
    let want = icmp
        .icmp_type()
        .calc_checksum(h.source(), h.destination(), icmp.payload())
        .unwrap();
    assert_eq!(icmp.checksum(), want, "ICMPv6 checksum");
    let m = icmp.slice();
    assert_eq!((m[0], m[1]), (134, 0), "router advertisement");
    assert_eq!(u16::from_be_bytes([m[6], m[7]]), 9000, "router lifetime");
    // The options by hand: source link-layer address, MTU, prefix information.
    assert_eq!(&m[16..24], &[1, 1, 0, 0, 0x5e, 0, 1, 0]);
    assert_eq!(&m[24..32], &[5, 1, 0, 0, 0, 0, 0x05, 0x78]);
    assert_eq!(&m[32..36], &[3, 4, 64, 0xc0], "/64, on-link and autonomous");
    assert_eq!(&m[48..64], &prefix.octets());

    // From the unspecified address: to all nodes.
    let out = bed.forward(POD_A, &router_solicit(Ipv6Addr::UNSPECIFIED), POD_A);
    assert_eq!(
        &out[14 + 24..14 + 40],
        &"ff02::1".parse::<Ipv6Addr>().unwrap().octets()
    );
    // The router's address is answered for (the pod resolves its default router).
    let mut ns = Vec::new();
    let mut body = router.octets().to_vec();
    body.extend_from_slice(&[1, 1]);
    body.extend_from_slice(&POD_A_MAC.0);
    PacketBuilder::ethernet2(POD_A_MAC.0, VROUTER_MAC.0)
        .ipv6(asker.octets(), router.octets(), 255)
        .icmpv6(etherparse::Icmpv6Type::Unknown {
            type_u8: 135,
            code_u8: 0,
            bytes5to8: [0; 4],
        })
        .write(&mut ns, &body)
        .unwrap();
    let out = bed.forward(POD_A, &ns, POD_A);
    assert_eq!(out[14 + 40], 136, "neighbour advertisement");
    // Pod B has no IPv6 address: its solicitations are dropped as before.
    dropped_as(
        &mut bed,
        POD_B,
        &router_solicit(asker),
        DropReason::Multicast,
    );
}

/// An unsolicited advertisement, as vrouterd sends every `--ra-interval-secs`: written over
/// whatever a buffer held, to all nodes (IPv6 and Ethernet multicast), from the vrouter's
/// link-local address, and saying what the solicited one says.
#[test]
fn an_unsolicited_advertisement_goes_to_all_nodes_and_says_what_the_solicited_one_says() {
    use std::net::Ipv6Addr;
    use vrouter::tables::RouterAdvert;
    let ra = RouterAdvert {
        prefix: "2001:db8:18:1::".parse().unwrap(),
        autonomous: false,
        mtu: 9000,
    };
    for held in [Vec::new(), vec![0xee; 9], vec![0xee; 300]] {
        let mut buf = VecBuf::from_frame(&held);
        vrouter::pipeline::reply::router_advert(&mut buf, &ra, VROUTER_MAC).unwrap();
        let out = buf.data().to_vec();
        assert_eq!(&out[0..6], &[0x33, 0x33, 0, 0, 0, 1], "all nodes' MAC");
        assert_eq!(&out[6..12], &VROUTER_MAC.0);
        let p = SlicedPacket::from_ethernet(&out).expect("etherparse reads it");
        let Some(etherparse::NetSlice::Ipv6(ip)) = &p.net else {
            panic!("IPv6")
        };
        let h = ip.header();
        assert_eq!(
            h.source_addr(),
            vrouter::pipeline::reply::link_local(VROUTER_MAC)
        );
        assert_eq!(h.destination_addr(), "ff02::1".parse::<Ipv6Addr>().unwrap());
        assert_eq!(h.hop_limit(), 255);
        assert_eq!(usize::from(h.payload_length()) + 54, out.len(), "no tail");
        let Some(TransportSlice::Icmpv6(icmp)) = &p.transport else {
            panic!("ICMPv6")
        };
        let want = icmp
            .icmp_type()
            .calc_checksum(h.source(), h.destination(), icmp.payload())
            .unwrap();
        assert_eq!(icmp.checksum(), want, "ICMPv6 checksum");
        let m = icmp.slice();
        assert_eq!((m[0], m[1]), (134, 0), "router advertisement");
        assert_eq!(u16::from_be_bytes([m[6], m[7]]), 9000, "router lifetime");
        assert_eq!(&m[24..32], &[5, 1, 0, 0, 0, 0, 0x23, 0x28], "MTU 9000");
        assert_eq!(
            &m[32..36],
            &[3, 4, 64, 0x80],
            "/64, on-link, not autonomous"
        );
        assert_eq!(&m[48..64], &ra.prefix.octets());
    }
}
