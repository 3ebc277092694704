//! The topology the vrouter's integration tests share: one fabric vif, two pods in VRF 5, and
//! tunnel routes of each encapsulation toward a second node.
#![allow(dead_code)]

use etherparse::PacketBuilder;
use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;
use vrouter::pipeline::{NoFlow, Pipeline, TxBatches};
use vrouter::tables::{
    FabricConfig, Nexthop, RouteTarget, Tables, TablesConfig, TunnelEncap, Vif, VifKind,
};
use vrouter::{MacAddr, StatsRegistry, VecBuf};

pub const FABRIC: u16 = 0;
pub const POD_A: u16 = 1;
pub const POD_B: u16 = 2;
pub const VRF: u32 = 5;
pub const VNI: u32 = 5000;
pub const LABEL_UDP: u32 = 100;
pub const LABEL_GRE: u32 = 101;
pub const LABEL_TO_A: u32 = 200;
/// A per-VRF label: the inner packet is routed in VRF.
pub const LABEL_TO_VRF: u32 = 300;

pub const FABRIC_MAC: MacAddr = MacAddr([0x02, 0, 0, 0, 0x0f, 0x01]);
pub const PEER_MAC: MacAddr = MacAddr([0x02, 0, 0, 0, 0x0f, 0x02]);
pub const POD_A_MAC: MacAddr = MacAddr([0x02, 0, 0, 0, 0, 0x0a]);
pub const POD_B_MAC: MacAddr = MacAddr([0x02, 0, 0, 0, 0, 0x0b]);
pub const REMOTE_MAC: MacAddr = MacAddr([0x02, 0, 0, 0, 0, 0x99]);
pub const VROUTER_MAC: MacAddr = MacAddr::VROUTER_DEFAULT;

pub const FABRIC_IP: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 1);
pub const PEER_IP: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 2);
pub const POD_A_IP: Ipv4Addr = Ipv4Addr::new(198, 18, 1, 10);
pub const POD_B_IP: Ipv4Addr = Ipv4Addr::new(198, 18, 1, 11);
pub const GATEWAY: Ipv4Addr = Ipv4Addr::new(198, 18, 1, 1);
/// Behind the peer node, one /24 per encapsulation.
pub const REMOTE_VXLAN: Ipv4Addr = Ipv4Addr::new(198, 18, 2, 7);
pub const REMOTE_MPLS_UDP: Ipv4Addr = Ipv4Addr::new(198, 18, 3, 7);
pub const REMOTE_MPLS_GRE: Ipv4Addr = Ipv4Addr::new(198, 18, 4, 7);
pub const DISCARDED: Ipv4Addr = Ipv4Addr::new(198, 18, 9, 7);

pub const NH_A: u32 = 1;
pub const NH_B: u32 = 2;
pub const NH_RECEIVE: u32 = 3;
pub const NH_DISCARD: u32 = 4;
pub const NH_VXLAN: u32 = 10;
pub const NH_MPLS_UDP: u32 = 11;
pub const NH_MPLS_GRE: u32 = 12;

pub fn ip(a: Ipv4Addr) -> IpAddr {
    IpAddr::V4(a)
}

pub fn tables() -> Arc<Tables> {
    tables_with(TablesConfig {
        nexthops: 256,
        v4_groups: 256,
        v6_groups: 256,
        bridge_entries: 64,
    })
}

/// [`tables`] with other sizes.
pub fn tables_with(config: TablesConfig) -> Arc<Tables> {
    let t = Tables::new(config);
    t.set_fabric(FabricConfig {
        vrouter_mac: VROUTER_MAC,
        fabric_ip: FABRIC_IP,
        outer_ttl: 64,
        outer_df: true,
    });
    t.add_vrf(VRF).unwrap();
    t.set_vif(Vif {
        index: FABRIC,
        kind: VifKind::Physical,
        vrf: 0,
        mac: FABRIC_MAC,
        mtu: 1500,
    })
    .unwrap();
    t.set_vif(Vif {
        index: POD_A,
        kind: VifKind::Pod,
        vrf: VRF as u16,
        mac: POD_A_MAC,
        mtu: 1500,
    })
    .unwrap();
    t.set_vif(Vif {
        index: POD_B,
        kind: VifKind::Pod,
        vrf: VRF as u16,
        mac: POD_B_MAC,
        mtu: 1500,
    })
    .unwrap();
    t.set_nexthop(
        NH_A,
        Nexthop::Encap {
            vif: POD_A,
            dmac: POD_A_MAC,
        },
    )
    .unwrap();
    t.set_nexthop(
        NH_B,
        Nexthop::Encap {
            vif: POD_B,
            dmac: POD_B_MAC,
        },
    )
    .unwrap();
    t.set_nexthop(NH_RECEIVE, Nexthop::Receive).unwrap();
    t.set_nexthop(NH_DISCARD, Nexthop::Discard).unwrap();
    for (id, encap) in [
        (NH_VXLAN, TunnelEncap::Vxlan),
        (NH_MPLS_UDP, TunnelEncap::MplsUdp),
        (NH_MPLS_GRE, TunnelEncap::MplsGre),
    ] {
        t.set_nexthop(
            id,
            Nexthop::Tunnel {
                encap,
                vif: FABRIC,
                sip: FABRIC_IP,
                dip: PEER_IP,
                dmac: PEER_MAC,
                label: None,
            },
        )
        .unwrap();
    }
    let r = |nexthop, label| RouteTarget { nexthop, label };
    t.add_route(VRF, ip(POD_A_IP), 32, r(NH_A, None)).unwrap();
    t.add_route(VRF, ip(POD_B_IP), 32, r(NH_B, None)).unwrap();
    t.add_route(VRF, ip(GATEWAY), 32, r(NH_RECEIVE, None))
        .unwrap();
    t.add_route(
        VRF,
        ip(Ipv4Addr::new(198, 18, 2, 0)),
        24,
        r(NH_VXLAN, Some(VNI)),
    )
    .unwrap();
    t.add_route(
        VRF,
        ip(Ipv4Addr::new(198, 18, 3, 0)),
        24,
        r(NH_MPLS_UDP, Some(LABEL_UDP)),
    )
    .unwrap();
    t.add_route(
        VRF,
        ip(Ipv4Addr::new(198, 18, 4, 0)),
        24,
        r(NH_MPLS_GRE, Some(LABEL_GRE)),
    )
    .unwrap();
    t.add_route(
        VRF,
        ip(Ipv4Addr::new(198, 18, 9, 0)),
        24,
        r(NH_DISCARD, None),
    )
    .unwrap();
    t.add_route(VRF, "2001:db8:1::a".parse().unwrap(), 128, r(NH_A, None))
        .unwrap();
    t.add_route(VRF, "2001:db8:1::b".parse().unwrap(), 128, r(NH_B, None))
        .unwrap();
    t.add_route(
        VRF,
        "2001:db8:3::".parse().unwrap(),
        64,
        r(NH_MPLS_UDP, Some(LABEL_UDP)),
    )
    .unwrap();
    t.set_label(LABEL_TO_A, NH_A).unwrap();
    t.set_label_vrf(LABEL_TO_VRF, VRF).unwrap();
    t.set_vni(VNI, VRF).unwrap();
    t.add_bridge(VRF, POD_A_MAC, r(NH_A, None)).unwrap();
    t.add_bridge(VRF, POD_B_MAC, r(NH_B, None)).unwrap();
    t.add_bridge(VRF, REMOTE_MAC, r(NH_VXLAN, Some(VNI)))
        .unwrap();
    Arc::new(t)
}

pub struct Bed {
    pub tables: Arc<Tables>,
    pub stats: StatsRegistry,
    pub pipe: Pipeline<NoFlow>,
    pub out: TxBatches<VecBuf>,
}

pub fn bed() -> Bed {
    let tables = tables();
    let stats = StatsRegistry::default();
    let pipe = Pipeline::new(tables.clone(), stats.new_core(), NoFlow);
    Bed {
        tables,
        stats,
        pipe,
        out: TxBatches::new(64),
    }
}

impl Bed {
    /// Run one frame in on `vif`; returns the output queues (cleared at the next call).
    pub fn run(&mut self, vif: u16, frame: &[u8]) -> &TxBatches<VecBuf> {
        self.out.clear();
        self.pipe
            .process(vif, [VecBuf::from_frame(frame)], &mut self.out);
        &self.out
    }

    /// Run one frame and return the single frame sent out of `vif`.
    pub fn forward(&mut self, vif: u16, frame: &[u8], expect_out: u16) -> Vec<u8> {
        let out = self.run(vif, frame);
        assert_eq!(
            out.dropped.len(),
            0,
            "dropped; stats {:?}",
            self.stats.snapshot()
        );
        let q = out.tx(expect_out);
        assert_eq!(
            q.len(),
            1,
            "one frame out of vif {expect_out}, touched {:?}",
            out.touched()
        );
        vrouter::PacketBuf::data(&q[0]).to_vec()
    }
}

/// A UDP/IPv4 frame from pod A to the vrouter MAC.
pub fn udp4(src: Ipv4Addr, dst: Ipv4Addr, ttl: u8, payload: &[u8]) -> Vec<u8> {
    let mut v = Vec::new();
    PacketBuilder::ethernet2(POD_A_MAC.0, VROUTER_MAC.0)
        .ipv4(src.octets(), dst.octets(), ttl)
        .udp(40000, 5001)
        .write(&mut v, payload)
        .unwrap();
    v
}

/// The same frame with DF set (etherparse's builder leaves DF as it likes; force it).
pub fn set_df(frame: &mut [u8], l3: usize, df: bool) {
    let mut h = etherparse::Ipv4HeaderSlice::from_slice(&frame[l3..])
        .unwrap()
        .to_header();
    h.dont_fragment = df;
    h.header_checksum = h.calc_header_checksum();
    let mut out = Vec::new();
    h.write(&mut out).unwrap();
    frame[l3..l3 + out.len()].copy_from_slice(&out);
}
