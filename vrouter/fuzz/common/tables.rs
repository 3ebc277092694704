//! The forwarding state both pipeline targets run against: a fabric vif, two pod vifs in VRF 5
//! (one with a small MTU), local, tunnel (VXLAN / MPLSoUDP / MPLSoGRE), ECMP, receive and plain
//! fabric (203.0.113.0/24: what source NAT translates) nexthops, IPv4 and IPv6 routes, a label,
//! a VNI and bridge entries; pod 1 answers DHCP.

use std::sync::Arc;
use vrouter::tables::{
    FabricConfig, Nexthop, RouteTarget, Tables, TablesConfig, TunnelEncap, Vif, VifKind,
};
use vrouter::wire::dhcp::{Lease, Route};
use vrouter::MacAddr;

pub fn tables() -> Arc<Tables> {
    let t = Tables::new(TablesConfig {
        nexthops: 64,
        v4_groups: 256,
        v6_groups: 256,
        bridge_entries: 64,
    });
    let ip = |s: &str| s.parse().expect("address");
    t.set_fabric(FabricConfig {
        fabric_ip: ip("198.51.100.1"),
        ..FabricConfig::default()
    });
    t.add_vrf(5).expect("vrf");
    let mac = |b| MacAddr([2, 0, 0, 0, 0, b]);
    t.set_vif(Vif {
        index: 0,
        kind: VifKind::Physical,
        vrf: 0,
        mac: mac(0xf1),
        mtu: 1500,
    })
    .expect("vif");
    t.set_vif(Vif {
        index: 1,
        kind: VifKind::Pod,
        vrf: 5,
        mac: mac(0x0a),
        mtu: 1500,
    })
    .expect("vif");
    t.set_vif(Vif {
        index: 2,
        kind: VifKind::Pod,
        vrf: 5,
        mac: mac(0x0b),
        mtu: 600,
    })
    .expect("vif");
    t.set_nexthop(
        1,
        Nexthop::Encap {
            vif: 1,
            dmac: mac(0x0a),
        },
    )
    .expect("nh");
    t.set_nexthop(
        2,
        Nexthop::Encap {
            vif: 2,
            dmac: mac(0x0b),
        },
    )
    .expect("nh");
    t.set_nexthop(3, Nexthop::Receive).expect("nh");
    for (id, encap) in [
        (10, TunnelEncap::Vxlan),
        (11, TunnelEncap::MplsUdp),
        (12, TunnelEncap::MplsGre),
    ] {
        let (sip, dip) = (ip("198.51.100.1"), ip("198.51.100.2"));
        t.set_nexthop(
            id,
            Nexthop::Tunnel {
                encap,
                vif: 0,
                sip,
                dip,
                dmac: mac(0xf2),
                label: None,
            },
        )
        .expect("nh");
    }
    t.set_nexthop(20, Nexthop::ecmp(&[1, 2, 10]).expect("ecmp"))
        .expect("nh");
    // Plain IP out of the fabric vif: where VRF 5 leaves through source NAT when attached.
    t.set_nexthop(
        30,
        Nexthop::Encap {
            vif: 0,
            dmac: mac(0xf2),
        },
    )
    .expect("nh");
    let r = |nexthop, label| RouteTarget { nexthop, label };
    for (p, l, t_) in [
        ("198.18.1.10", 32, r(1, None)),
        ("198.18.1.11", 32, r(2, None)),
        ("198.18.1.1", 32, r(3, None)),
        ("198.18.2.0", 24, r(10, Some(5000))),
        ("198.18.3.0", 24, r(11, Some(100))),
        ("198.18.4.0", 24, r(12, Some(101))),
        ("198.18.5.0", 24, r(20, Some(102))),
        ("203.0.113.0", 24, r(30, None)),
        ("2001:db8:1::", 64, r(1, None)),
        ("2001:db8:3::", 64, r(11, Some(100))),
        // Out of the fabric as plain IPv6: where pod 1's floating IPv6 flows leave.
        ("2001:db8:ff::", 64, r(30, None)),
        // Pod 1's floating IP, routed out of the fabric: pod 2 reaches it by hairpin.
        ("198.51.100.200", 32, r(30, None)),
    ] {
        t.add_route(5, p.parse().expect("prefix"), l, t_)
            .expect("route");
    }
    // Pod 1 answers DHCP (198.18.1.10/24, gateway 198.18.1.1); pod 2 has no address.
    let lease = Lease {
        address: ip("198.18.1.10"),
        prefix_len: 24,
        gateway: ip("198.18.1.1"),
        dns: [ip("192.0.2.53")].into_iter().collect(),
        mtu: Some(1500),
        routes: [Route {
            prefix: ip("203.0.113.0"),
            len: 24,
            router: ip("198.18.1.1"),
        }]
        .into_iter()
        .collect(),
        lease_time: 600,
    };
    t.set_dhcp(1, Some(lease)).expect("dhcp");
    // The fabric VRF reaches 198.51.100.80 (a link-local service's far end) out of the fabric.
    t.add_route(
        0,
        "198.51.100.80".parse().expect("address"),
        32,
        r(30, None),
    )
    .expect("route");
    t.set_label(200, 1).expect("label");
    // A per-VRF label: the inner packet is routed in VRF 5.
    t.set_label_vrf(300, 5).expect("vrf label");
    t.set_vni(5000, 5).expect("vni");
    t.add_bridge(5, mac(0x0b), r(2, None)).expect("bridge");
    t.add_bridge(5, mac(0x99), r(10, Some(5000)))
        .expect("bridge");
    Arc::new(t)
}
