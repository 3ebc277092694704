//! Tables live forever. Five million distinct routes (IPv4 /32s and IPv6 /64s), and as many
//! nexthops, MPLS labels, VNIs and bridge entries, are added and removed through the library,
//! a few thousand present at a time, while another thread plays a forwarding core: it forwards
//! bursts through the pipeline and looks routes and entries up directly, as a reader registered
//! with the tables' grace domain that announces a quiescent state after each burst. Every
//! answer about what exists throughout (routes in the /16s and /48s the churn runs in, the
//! test bed's routes, labels, VNIs, bridge entries and nexthops) must be exact, every packet
//! must arrive; memory (the tables' own accounting, and the process's resident set) stays
//! within 5 % of what it was after warm-up.

mod common;

use common::*;
use etherparse::PacketBuilder;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;
use vrouter::pipeline::{NoFlow, Pipeline, TxBatches};
use vrouter::tables::{LabelTarget, Nexthop, RouteTarget, Tables, TablesConfig};
use vrouter::{MacAddr, StatsRegistry, VecBuf};

/// Distinct routes added and removed.
const ROUTES: u32 = 5_000_000;
/// Routes present at a time (the other tables keep half as many).
const LIVE: u32 = 2048;
/// Memory is measured from here on.
const WARM_UP: u32 = ROUTES / 10;

/// The i-th of 2^23 distinct odd 23-bit values (an odd multiplier permutes them).
fn spread(i: u32) -> u32 {
    ((i.wrapping_mul(0x9e37_79b1) & 0x7f_ffff) << 1) | 1
}

/// The i-th churned route: three in four an IPv4 /32 in 10.0.0.0/8 with an odd last octet, the
/// fourth an IPv6 /64 in 2001:db8:ff00::/40 with an odd last bit of its prefix. Distinct for
/// distinct `i` below 2^23; never an address the reader probes (it probes even ones).
fn churned(i: u32) -> (IpAddr, u8) {
    if i % 4 == 3 {
        let p = (0x2001_0db8_ff00_u128 << 80) | (u128::from(spread(i)) << 64);
        (IpAddr::V6(Ipv6Addr::from(p)), 64)
    } else {
        (IpAddr::V4(Ipv4Addr::from(0x0a00_0000 | spread(i))), 32)
    }
}

/// What covers the addresses the reader probes: 10.x.0.0/16 and 2001:db8:ffyy::/48, each with
/// a label of its own, so a lookup that strayed into another /16's or /48's storage shows.
fn stable_v4(x: u32) -> RouteTarget {
    RouteTarget {
        nexthop: NH_B,
        label: Some(x),
    }
}
fn stable_v6(y: u32) -> RouteTarget {
    RouteTarget {
        nexthop: NH_B,
        label: Some(1000 + y),
    }
}

/// The label and nexthop ids churned at step `i`: their tables are direct arrays over the id
/// space, so ids come round again (before warm-up ends: the first pass touches pages of those
/// preallocated arrays for the first time, which is no growth).
fn label(i: u32) -> u32 {
    1000 + i % 200_000
}
fn nexthop(i: u32) -> u32 {
    100 + i % 60_000
}

fn churn_mac(i: u32) -> MacAddr {
    let b = i.to_be_bytes();
    MacAddr([0x02, 0xc0, b[0], b[1], b[2], b[3]])
}

fn rss_kib() -> u64 {
    let statm = std::fs::read_to_string("/proc/self/statm").expect("statm");
    let pages: u64 = statm
        .split_whitespace()
        .nth(1)
        .and_then(|v| v.parse().ok())
        .expect("resident pages");
    pages * 4
}

/// Storage the tables hold for what is configured: trie groups handed out (IPv4 + IPv6) and
/// entries present in the VNI and bridge tables.
fn accounting(t: &Tables) -> (usize, usize, usize) {
    let (v4, v6) = t.route_table_stats(VRF).expect("VRF 5");
    let topo = t.topology();
    let bridge = topo.vrf(VRF as u16).expect("VRF 5").bridge.occupied();
    (
        v4.groups_allocated + v6.groups_allocated,
        t.vnis.occupied(),
        bridge,
    )
}

fn udp6(dst: Ipv6Addr) -> Vec<u8> {
    let mut v = Vec::new();
    PacketBuilder::ethernet2(POD_A_MAC.0, VROUTER_MAC.0)
        .ipv6(
            "2001:db8:1::a".parse::<Ipv6Addr>().unwrap().octets(),
            dst.octets(),
            64,
        )
        .udp(40000, 5001)
        .write(&mut v, b"churn")
        .unwrap();
    v
}

/// The forwarding core: bursts from pod A to addresses that stay routed, and direct lookups of
/// everything that stays, until `stop`. Returns the lookups made.
fn forward_and_check(tables: &Arc<Tables>, stop: &AtomicBool, bursts: &AtomicU64) -> u64 {
    let grace = tables.grace().register();
    let stats = StatsRegistry::default();
    let mut pipe = Pipeline::new(tables.clone(), stats.new_core(), NoFlow);
    let mut out = TxBatches::<VecBuf>::new(64);
    let topo = tables.topology();
    let vrf = topo.vrf(VRF as u16).expect("VRF 5").clone();
    let (mut x, mut n) = (0x1234_5678u32, 0u64);
    let mut rnd = move || {
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        x
    };
    // Frames to even addresses under the stable /16s and /48s (pod B), to pod B itself, and
    // into the VXLAN tunnel; rebuilt from these each burst.
    let mut frames = Vec::new();
    for _ in 0..24 {
        let a = 0x0a00_0000 | (rnd() & 0x00ff_fffe);
        frames.push((udp4(POD_A_IP, Ipv4Addr::from(a), 64, b"churn"), POD_B));
    }
    for _ in 0..6 {
        let y = u128::from(rnd() & 0xff);
        let a = (0x2001_0db8_ff00_u128 << 80) | y << 80 | u128::from(rnd() & 0xfffe) << 64 | 7;
        frames.push((udp6(Ipv6Addr::from(a)), POD_B));
    }
    frames.push((udp4(POD_A_IP, POD_B_IP, 64, b"churn"), POD_B));
    frames.push((udp4(POD_A_IP, REMOTE_VXLAN, 64, b"churn"), FABRIC));
    let want_b = frames.iter().filter(|f| f.1 == POD_B).count();
    while !stop.load(Ordering::Relaxed) {
        out.clear();
        pipe.process(
            POD_A,
            frames.iter().map(|(f, _)| VecBuf::from_frame(f)),
            &mut out,
        );
        assert_eq!(out.dropped.len(), 0, "{:?}", stats.snapshot());
        assert_eq!(out.tx(POD_B).len(), want_b);
        assert_eq!(out.tx(FABRIC).len(), 1);
        for _ in 0..48 {
            let r = rnd();
            let a = 0x0a00_0000 | (r & 0x00ff_fffe);
            assert_eq!(vrf.route_v4(a), Some(stable_v4(r >> 16 & 0xff)), "{a:08x}");
        }
        for _ in 0..16 {
            let (y, low) = (rnd() & 0xff, u128::from(rnd() & 0xfffe));
            let a = (0x2001_0db8_ff00_u128 << 80) | u128::from(y) << 80 | low << 64 | 1;
            assert_eq!(vrf.route_v6(a), Some(stable_v6(y)), "{a:032x}");
        }
        assert_eq!(
            vrf.route_v4(u32::from(POD_A_IP)).map(|t| t.nexthop),
            Some(NH_A)
        );
        assert_eq!(
            vrf.bridge.get(REMOTE_MAC),
            Some(RouteTarget {
                nexthop: NH_VXLAN,
                label: Some(VNI)
            })
        );
        assert_eq!(vrf.bridge.get(POD_B_MAC).map(|t| t.nexthop), Some(NH_B));
        assert_eq!(
            tables.labels.get(LABEL_TO_A),
            Some(LabelTarget::Nexthop(NH_A))
        );
        assert_eq!(tables.vnis.get(VNI), Some(VRF as u16));
        assert_eq!(
            tables.nexthops.get(NH_B),
            Some(Nexthop::Encap {
                vif: POD_B,
                dmac: POD_B_MAC
            })
        );
        n += 64 + frames.len() as u64;
        grace.quiescent();
        // Now and then a nap, offline, as an lcore with --idle-sleep-us takes one: on a
        // machine with more threads than cores this one would otherwise hold a core and leave
        // the writer (and other tests) short of one.
        if bursts.fetch_add(1, Ordering::Relaxed) % 256 == 255 {
            grace.offline();
            std::thread::sleep(std::time::Duration::from_micros(20));
            grace.online();
        }
    }
    assert_eq!(stats.snapshot().total_drops(), 0);
    n
}

#[test]
fn five_million_routes_come_and_go_while_a_core_forwards_and_memory_stays_flat() {
    let tables = tables_with(TablesConfig {
        nexthops: 65536,
        v4_groups: 1 << 14,
        v6_groups: 1 << 14,
        bridge_entries: 4096,
    });
    for x in 0..256 {
        tables
            .add_route(
                VRF,
                IpAddr::V4(Ipv4Addr::new(10, x as u8, 0, 0)),
                16,
                stable_v4(x),
            )
            .unwrap();
        let p = (0x2001_0db8_ff00_u128 << 80) | u128::from(x) << 80;
        tables
            .add_route(VRF, IpAddr::V6(Ipv6Addr::from(p)), 48, stable_v6(x))
            .unwrap();
    }
    let nh = Nexthop::Encap {
        vif: POD_A,
        dmac: POD_A_MAC,
    };
    let to_a = RouteTarget {
        nexthop: NH_A,
        label: None,
    };
    let stop = AtomicBool::new(false);
    let bursts = AtomicU64::new(0);
    let t0 = Instant::now();
    let mut warm = None;
    let mut worst = (0usize, 0usize, 0usize, 0u64);
    let lookups = std::thread::scope(|s| {
        let core = s.spawn(|| forward_and_check(&tables, &stop, &bursts));
        // Stop the core however this ends (a failed check here must not leave it running).
        struct Stop<'a>(&'a AtomicBool);
        impl Drop for Stop<'_> {
            fn drop(&mut self) {
                self.0.store(true, Ordering::Relaxed);
            }
        }
        let _stop = Stop(&stop);
        for i in 0..ROUTES + LIVE {
            if i < ROUTES {
                let (a, len) = churned(i);
                tables.add_route(VRF, a, len, to_a).unwrap();
                tables.add_bridge(VRF, churn_mac(i), to_a).unwrap();
                tables.set_vni(100_000 + i, VRF).unwrap();
                tables.set_label(label(i), nexthop(i)).unwrap();
                tables.set_nexthop(nexthop(i), nh).unwrap();
            }
            if i >= LIVE {
                let (a, len) = churned(i - LIVE);
                tables.del_route(VRF, a, len).unwrap();
            }
            if i >= LIVE / 2 && i - LIVE / 2 < ROUTES {
                let j = i - LIVE / 2;
                tables.del_bridge(VRF, churn_mac(j)).unwrap();
                tables.del_vni(100_000 + j).unwrap();
                tables.del_label(label(j)).unwrap();
                tables.del_nexthop(nexthop(j)).unwrap();
            }
            if i % (ROUTES / 20) == 0 && i >= WARM_UP {
                let (groups, vnis, bridge) = accounting(&tables);
                let rss = rss_kib();
                eprintln!(
                    "{i:>8} routes in {:5.1} s: {groups} trie groups, {vnis} VNIs, {bridge} \
                     bridge entries, RSS {rss} KiB, {} bursts forwarded",
                    t0.elapsed().as_secs_f64(),
                    bursts.load(Ordering::Relaxed)
                );
                let now = (groups, vnis, bridge, rss);
                warm.get_or_insert(now);
                worst = (
                    worst.0.max(groups),
                    worst.1.max(vnis),
                    worst.2.max(bridge),
                    worst.3.max(rss),
                );
            }
        }
        stop.store(true, Ordering::Relaxed);
        core.join().expect("the core's checks held")
    });
    let warm = warm.expect("measured after warm-up");
    eprintln!(
        "{ROUTES} routes in {:.1} s; {lookups} lookups by the core; after warm-up {warm:?}, \
         at most {worst:?}",
        t0.elapsed().as_secs_f64()
    );
    assert!(bursts.load(Ordering::Relaxed) > 0, "the core forwarded");
    let within = |now: f64, then: f64| now <= then * 1.05;
    assert!(
        within(worst.0 as f64, warm.0 as f64),
        "trie groups {warm:?} → {worst:?}"
    );
    assert!(
        within(worst.1 as f64, warm.1 as f64),
        "VNIs {warm:?} → {worst:?}"
    );
    assert!(
        within(worst.2 as f64, warm.2 as f64),
        "bridge {warm:?} → {worst:?}"
    );
    assert!(
        within(worst.3 as f64, warm.3 as f64),
        "RSS {warm:?} → {worst:?}"
    );
    // Everything churned is gone again; what stays is what the bed and this test installed.
    let (v4, v6) = tables.route_table_stats(VRF).unwrap();
    assert_eq!(v4.routes + v6.routes, 256 * 2 + 10);
    assert_eq!(tables.vnis.occupied(), 1);
    assert_eq!(tables.bridge_entries(VRF).unwrap().len(), 3);
    assert_eq!(tables.labels.entries().len(), 2, "the bed's two labels");
}
