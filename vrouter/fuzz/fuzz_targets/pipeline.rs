//! Feed arbitrary frames through the pipeline on every kind of vif. The first byte picks the
//! ingress vif (fabric, pod, unknown); the rest is the frame. Run (bounded):
//! `cargo +nightly fuzz run pipeline -- -max_total_time=60` from `vrouter/`.
#![no_main]

use libfuzzer_sys::fuzz_target;
use std::sync::{Arc, OnceLock};
use vrouter::pipeline::{NoFlow, Pipeline, TxBatches};
use vrouter::tables::{
    FabricConfig, Nexthop, RouteTarget, Tables, TablesConfig, TunnelEncap, Vif, VifKind,
};
use vrouter::{MacAddr, PacketBuf, StatsRegistry, VecBuf};

fn tables() -> Arc<Tables> {
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
            },
        )
        .expect("nh");
    }
    t.set_nexthop(20, Nexthop::ecmp(&[1, 2, 10]).expect("ecmp"))
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
        ("2001:db8:1::", 64, r(1, None)),
        ("2001:db8:3::", 64, r(11, Some(100))),
    ] {
        t.add_route(5, p.parse().expect("prefix"), l, t_)
            .expect("route");
    }
    t.set_label(200, 1).expect("label");
    t.set_vni(5000, 5).expect("vni");
    t.add_bridge(5, mac(0x0b), r(2, None)).expect("bridge");
    t.add_bridge(5, mac(0x99), r(10, Some(5000)))
        .expect("bridge");
    Arc::new(t)
}

struct Bed {
    pipe: Pipeline<NoFlow>,
    out: TxBatches<VecBuf>,
}

fuzz_target!(|data: &[u8]| {
    static BED: OnceLock<std::sync::Mutex<Bed>> = OnceLock::new();
    let bed = BED.get_or_init(|| {
        let stats = StatsRegistry::default();
        std::sync::Mutex::new(Bed {
            pipe: Pipeline::new(tables(), stats.new_core(), NoFlow),
            out: TxBatches::new(32),
        })
    });
    let Some((&vif, frame)) = data.split_first() else {
        return;
    };
    let mut bed = bed.lock().unwrap_or_else(|e| e.into_inner());
    let Bed { pipe, out } = &mut *bed;
    out.clear();
    pipe.process(u16::from(vif % 4), [VecBuf::from_frame(frame)], out);
    let sent: usize = out.touched().iter().map(|&v| out.tx(v).len()).sum();
    assert_eq!(
        sent + out.host.len() + out.dropped.len(),
        1,
        "every packet lands in exactly one place"
    );
    for &v in out.touched() {
        for b in out.tx(v) {
            assert!(b.len() >= 14);
        }
    }
});
