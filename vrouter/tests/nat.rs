//! Source NAT through the real pipeline and flow stage: pod traffic toward the fabric leaves
//! with a pool address and port, replies find their way back to the pod, pairs come back to
//! the pool when flows go, an exhausted pool and untranslatable packets are counted drops.
//! etherparse checks every checksum of what leaves.

mod common;

use common::*;
use etherparse::{NetSlice, PacketBuilder, SlicedPacket, TransportSlice};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::Arc;
use vrouter::flow::{Action, FlowConfig, FlowStage, FlowTable, FlowTimeouts, Policies, Policy};
use vrouter::nat::{link_local_source, Balance, FloatingIp, LinkLocal, Nat, PoolRange, Service};
use vrouter::pipeline::{Pipeline, TxBatches};
use vrouter::tables::{Nexthop, RouteTarget};
use vrouter::{DropReason, PacketBuf, StatsRegistry, VecBuf};

const REMOTE: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 7);
const POOL_FIRST: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 64);
const POOL_LAST: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 65);
const PORTS: (u16, u16) = (40000, 40001);
const NH_FABRIC: u32 = 30;

struct NatBed {
    tables: Arc<vrouter::tables::Tables>,
    nat: Nat,
    policies: Policies,
    stats: StatsRegistry,
    pipe: Pipeline<FlowStage>,
    out: TxBatches<VecBuf>,
    now: u64,
}

/// The test tables with VRF 5 routing 203.0.113.0/24 to the fabric vif (VRF 0).
fn routed_to_the_fabric() -> Arc<vrouter::tables::Tables> {
    let tables = tables();
    tables
        .set_nexthop(
            NH_FABRIC,
            Nexthop::Encap {
                vif: FABRIC,
                dmac: PEER_MAC,
            },
        )
        .unwrap();
    tables
        .add_route(
            VRF,
            ip(Ipv4Addr::new(203, 0, 113, 0)),
            24,
            RouteTarget {
                nexthop: NH_FABRIC,
                label: None,
            },
        )
        .unwrap();
    tables
}

/// VRF 5 (pods A and B) routes 203.0.113.0/24 to the fabric vif (VRF 0) and is attached to
/// a pool of two addresses with two ports each (four pairs).
fn bed() -> NatBed {
    let tables = routed_to_the_fabric();
    let table = Arc::new(
        FlowTable::new(FlowConfig {
            entries: 1024,
            timeouts: FlowTimeouts {
                tcp_established: 1000,
                tcp_closing: 100,
                udp: 1000,
                icmp: 1000,
                other: 1000,
            },
        })
        .unwrap(),
    );
    let policies = Policies::new(table.clone());
    let nat = Nat::new(table);
    nat.set_pool(
        "egress",
        0,
        PoolRange {
            first: POOL_FIRST.into(),
            last: POOL_LAST.into(),
            ports: PORTS,
        },
    )
    .unwrap();
    nat.attach(VRF as u16, "egress").unwrap();
    let stats = StatsRegistry::default();
    let stage = policies.stage(tables.clone()).with_nat(&nat);
    NatBed {
        pipe: Pipeline::new(tables.clone(), stats.new_core(), stage),
        tables,
        nat,
        policies,
        stats,
        out: TxBatches::new(64),
        now: 1,
    }
}

impl NatBed {
    /// Run one frame from `vif`; where it went: `Some(vif)` with the frame, or `None`.
    fn run(&mut self, vif: u16, frame: &[u8]) -> Option<(u16, Vec<u8>)> {
        self.out.clear();
        self.pipe.flow_hook().begin(vif, self.now);
        self.pipe
            .process(vif, [VecBuf::from_frame(frame)], &mut self.out);
        let touched = self.out.touched().to_vec();
        touched
            .first()
            .map(|&v| (v, self.out.tx(v)[0].data().to_vec()))
    }

    fn drops(&self, r: DropReason) -> u64 {
        self.stats.snapshot().drop_count(r)
    }

    fn pool_in_use(&self) -> u64 {
        self.nat.pool("egress").unwrap().in_use
    }
}

#[derive(Debug, Clone, Copy)]
enum P {
    Syn,
    Udp,
    Echo,
    EchoReply,
}

fn frame(src: Ipv4Addr, dst: Ipv4Addr, p: P, sport: u16, dport: u16) -> Vec<u8> {
    frame_of(src.into(), dst.into(), p, sport, dport)
}

/// A frame from pod A of either family (both addresses of one), its ICMP of that family.
fn frame_of(src: IpAddr, dst: IpAddr, p: P, sport: u16, dport: u16) -> Vec<u8> {
    let eth = PacketBuilder::ethernet2(POD_A_MAC.0, VROUTER_MAC.0);
    let b = match (src, dst) {
        (IpAddr::V4(s), IpAddr::V4(d)) => eth.ipv4(s.octets(), d.octets(), 64),
        (IpAddr::V6(s), IpAddr::V6(d)) => eth.ipv6(s.octets(), d.octets(), 64),
        _ => panic!("{src} and {dst} are of two families"),
    };
    let mut v = Vec::new();
    let pay = b"nat test payload";
    match (p, src.is_ipv4()) {
        (P::Syn, _) => b.tcp(sport, dport, 7, 64000).syn().write(&mut v, pay),
        (P::Udp, _) => b.udp(sport, dport).write(&mut v, pay),
        (P::Echo, true) => b.icmpv4_echo_request(sport, 1).write(&mut v, pay),
        (P::EchoReply, true) => b.icmpv4_echo_reply(sport, 1).write(&mut v, pay),
        (P::Echo, false) => b.icmpv6_echo_request(sport, 1).write(&mut v, pay),
        (P::EchoReply, false) => b.icmpv6_echo_reply(sport, 1).write(&mut v, pay),
    }
    .unwrap();
    v
}

/// What a frame that left says: addresses and ports (ICMP: the identifier as both), every
/// checksum checked against etherparse's.
fn tuple(f: &[u8]) -> (Ipv4Addr, u16, Ipv4Addr, u16) {
    let p = SlicedPacket::from_ethernet(f).unwrap();
    let Some(NetSlice::Ipv4(ip)) = &p.net else {
        panic!("not IPv4")
    };
    let h = ip.header().to_header();
    assert_eq!(h.header_checksum, h.calc_header_checksum(), "IPv4 checksum");
    let (s, d) = (Ipv4Addr::from(h.source), Ipv4Addr::from(h.destination));
    match &p.transport {
        Some(TransportSlice::Tcp(t)) => {
            let want = t.to_header().calc_checksum_ipv4(&h, t.payload()).unwrap();
            assert_eq!(t.checksum(), want, "TCP checksum");
            (s, t.source_port(), d, t.destination_port())
        }
        Some(TransportSlice::Udp(u)) => {
            let want = u.to_header().calc_checksum_ipv4(&h, u.payload()).unwrap();
            assert_eq!(u.checksum(), want, "UDP checksum");
            (s, u.source_port(), d, u.destination_port())
        }
        Some(TransportSlice::Icmpv4(i)) => {
            let want = i.header().icmp_type.calc_checksum(i.payload());
            assert_eq!(i.checksum(), want, "ICMP checksum");
            let id = u16::from_be_bytes([i.slice()[4], i.slice()[5]]);
            (s, id, d, id)
        }
        _ => panic!("no transport header"),
    }
}

fn in_pool(a: Ipv4Addr, port: u16) -> bool {
    (u32::from(POOL_FIRST)..=u32::from(POOL_LAST)).contains(&u32::from(a))
        && (PORTS.0..=PORTS.1).contains(&port)
}

#[test]
fn tcp_leaves_with_a_pool_pair_and_replies_come_back_to_the_pod() {
    let mut b = bed();
    let (vif, out) = b
        .run(POD_A, &frame(POD_A_IP, REMOTE, P::Syn, 5555, 80))
        .expect("forwarded");
    assert_eq!(vif, FABRIC);
    let (s, sp, d, dp) = tuple(&out);
    assert!(in_pool(s, sp), "{s}:{sp} from the pool");
    assert_eq!((d, dp), (REMOTE, 80));
    assert_eq!(b.pool_in_use(), 1);

    // The flow shows both tuples.
    let flows = b.policies.table().flows(None, 16, 0).flows;
    let fwd = flows.iter().find(|f| !f.is_reverse).expect("forward entry");
    let shown = fwd.nat.expect("translated tuple");
    assert_eq!((shown.src as u32, shown.sport), (u32::from(s), sp));
    assert_eq!((shown.vrf, fwd.key.vrf), (0, VRF as u16));

    // The reply, as the remote sends it to the pool pair, reaches pod A untranslated back.
    let mut reply = frame(REMOTE, s, P::Syn, 80, sp);
    reply[0..6].copy_from_slice(&FABRIC_MAC.0);
    let (vif, back) = b.run(FABRIC, &reply).expect("forwarded to the pod");
    assert_eq!(vif, POD_A);
    assert_eq!(tuple(&back), (REMOTE, 80, POD_A_IP, 5555));
    assert_eq!(&back[0..6], &POD_A_MAC.0, "addressed to the pod");
    assert_eq!(b.stats.snapshot().nat_translated, 2);

    // The same flow again takes the same pair.
    let (_, again) = b
        .run(POD_A, &frame(POD_A_IP, REMOTE, P::Syn, 5555, 80))
        .unwrap();
    assert_eq!(tuple(&again).0, s);
    assert_eq!(tuple(&again).1, sp);
    assert_eq!(b.pool_in_use(), 1);
}

#[test]
fn icmp_echo_identifiers_are_translated_both_ways() {
    let mut b = bed();
    let (_, out) = b
        .run(POD_A, &frame(POD_A_IP, REMOTE, P::Echo, 77, 0))
        .unwrap();
    let (s, id, d, _) = tuple(&out);
    assert!(in_pool(s, id), "{s} id {id} from the pool");
    assert_eq!(d, REMOTE);
    let reply = frame(REMOTE, s, P::EchoReply, id, 0);
    let (vif, back) = b.run(FABRIC, &reply).expect("back to the pod");
    assert_eq!(vif, POD_A);
    assert_eq!(tuple(&back), (REMOTE, 77, POD_A_IP, 77));
}

#[test]
fn udp_flows_take_distinct_pairs_until_the_pool_is_exhausted() {
    let mut b = bed();
    let mut pairs = std::collections::HashSet::new();
    for sport in 1..=4 {
        let (_, out) = b
            .run(POD_A, &frame(POD_A_IP, REMOTE, P::Udp, sport, 53))
            .unwrap();
        let (s, sp, _, _) = tuple(&out);
        assert!(in_pool(s, sp));
        assert!(pairs.insert((s, sp)), "{s}:{sp} taken twice");
    }
    assert_eq!(b.pool_in_use(), 4);
    assert_eq!(b.run(POD_A, &frame(POD_A_IP, REMOTE, P::Udp, 5, 53)), None);
    assert_eq!(b.drops(DropReason::NatPoolExhausted), 1);
    assert_eq!(b.nat.pool("egress").unwrap().exhausted, 1);
    // Traffic inside the VRF is not translated and needs no pair.
    let (vif, inside) = b
        .run(POD_A, &frame(POD_A_IP, POD_B_IP, P::Udp, 9, 9))
        .unwrap();
    assert_eq!(vif, POD_B);
    assert_eq!(tuple(&inside), (POD_A_IP, 9, POD_B_IP, 9));
}

#[test]
fn aged_and_detached_flows_give_their_pairs_back() {
    let mut b = bed();
    for sport in 1..=4 {
        b.run(POD_A, &frame(POD_A_IP, REMOTE, P::Udp, sport, 53))
            .unwrap();
    }
    assert_eq!(b.pool_in_use(), 4);
    let table = b.policies.table().clone();
    let aged = table.age_slice(b.now + 5000, table.buckets());
    assert_eq!(aged, 4);
    assert_eq!(b.pool_in_use(), 0);
    b.now += 5000;
    b.run(POD_A, &frame(POD_A_IP, REMOTE, P::Udp, 9, 53))
        .unwrap();
    assert_eq!(b.pool_in_use(), 1);

    // Detached: the flow goes with its pair, and new flows leave untranslated.
    b.nat.detach(VRF as u16).unwrap();
    assert_eq!(b.pool_in_use(), 0);
    assert_eq!(table.stats().active, 0);
    let (_, out) = b
        .run(POD_A, &frame(POD_A_IP, REMOTE, P::Udp, 9, 53))
        .unwrap();
    assert_eq!(tuple(&out), (POD_A_IP, 9, REMOTE, 53));
}

#[test]
fn untranslatable_packets_are_counted_drops() {
    let mut b = bed();
    // An echo reply (nothing asked it from outside), a fragment, a GRE packet.
    assert_eq!(
        b.run(POD_A, &frame(POD_A_IP, REMOTE, P::EchoReply, 1, 0)),
        None
    );
    assert_eq!(b.drops(DropReason::NatUnsupported), 1);
    // IPv4 header word `at` (bytes from the IP header) set to `v`, checksum kept right.
    let set_word = |f: &mut Vec<u8>, at: usize, v: u16| {
        let old = u16::from_be_bytes([f[14 + at], f[15 + at]]);
        f[14 + at..16 + at].copy_from_slice(&v.to_be_bytes());
        let sum = u16::from_be_bytes([f[24], f[25]]);
        let fixed = vrouter::wire::checksum::update16(sum, old, v);
        f[24..26].copy_from_slice(&fixed.to_be_bytes());
    };
    let mut frag = frame(POD_A_IP, REMOTE, P::Udp, 1, 2);
    set_word(&mut frag, 6, 0x2000); // more fragments
    assert_eq!(b.run(POD_A, &frag), None);
    assert_eq!(b.drops(DropReason::NatUnsupported), 2);
    let mut gre = frame(POD_A_IP, REMOTE, P::Udp, 1, 2);
    set_word(&mut gre, 8, 0x402f); // TTL 64, protocol GRE
    assert_eq!(b.run(POD_A, &gre), None);
    assert_eq!(b.drops(DropReason::NatUnsupported), 3);
    assert_eq!(b.pool_in_use(), 0);
}

#[test]
fn fabric_traffic_without_a_nat_flow_still_goes_to_the_host() {
    let mut b = bed();
    let f = frame(REMOTE, POOL_FIRST, P::Udp, 1, PORTS.0);
    assert_eq!(b.run(FABRIC, &f), None);
    assert_eq!(b.out.host.len(), 1);
}

#[test]
fn a_denying_policy_takes_no_pair_and_a_policy_change_keeps_allowed_nat_flows() {
    let mut b = bed();
    let deny = Policy {
        default: Action::Deny,
        ingress: vec![],
        egress: vec![],
    };
    b.policies.set(POD_A, Some(deny)).unwrap();
    assert_eq!(b.run(POD_A, &frame(POD_A_IP, REMOTE, P::Udp, 1, 53)), None);
    assert_eq!(b.drops(DropReason::FlowDrop), 1);
    assert_eq!(b.pool_in_use(), 0);
    b.policies.set(POD_A, None).unwrap();
    let (_, first) = b
        .run(POD_A, &frame(POD_A_IP, REMOTE, P::Udp, 2, 53))
        .unwrap();
    // Another vif's policy changes the generation: the NAT flow (no policy) keeps its pair.
    let allow = Policy {
        default: Action::Allow,
        ingress: vec![],
        egress: vec![],
    };
    b.policies.set(POD_B, Some(allow)).unwrap();
    let (_, second) = b
        .run(POD_A, &frame(POD_A_IP, REMOTE, P::Udp, 2, 53))
        .unwrap();
    assert_eq!(tuple(&first), tuple(&second));
    assert_eq!(b.pool_in_use(), 1);
}

#[test]
fn pools_refuse_overlaps_unknown_names_and_detaching_what_is_in_use() {
    let b = bed();
    let r = |a: [u8; 4], z: [u8; 4]| PoolRange {
        first: a.into(),
        last: z.into(),
        ports: (1024, 2047),
    };
    let e = b
        .nat
        .set_pool("other", 0, r([198, 51, 100, 65], [198, 51, 100, 70]))
        .unwrap_err();
    assert!(
        e.to_string().contains("shares addresses with pool egress"),
        "{e}"
    );
    // The same addresses in another VRF are another pool's business.
    b.nat
        .set_pool("other", 7, r([198, 51, 100, 65], [198, 51, 100, 70]))
        .unwrap();
    assert!(b
        .nat
        .del_pool("egress")
        .unwrap_err()
        .to_string()
        .contains("detach"));
    assert!(b.nat.attach(5, "nope").is_err());
    assert!(b
        .nat
        .attach(7, "other")
        .unwrap_err()
        .to_string()
        .contains("itself"));
    b.nat.del_pool("other").unwrap();
    assert_eq!(b.nat.pools().len(), 1);
}

/// An ICMPv4 error from `from` to `to` quoting `quoted` (a frame as it left): its IPv4 header
/// and the first 8 bytes after it, as routers quote.
fn icmp_error(from: Ipv4Addr, to: Ipv4Addr, ty: u8, quoted: &[u8]) -> Vec<u8> {
    icmp_error_between(PEER_MAC, FABRIC_MAC, from, to, ty, quoted)
}

/// [`icmp_error`] from a pod (to the vrouter's MAC).
fn icmp_error_from_pod(from: Ipv4Addr, to: Ipv4Addr, ty: u8, quoted: &[u8]) -> Vec<u8> {
    icmp_error_between(POD_A_MAC, VROUTER_MAC, from, to, ty, quoted)
}

fn icmp_error_between(
    smac: vrouter::MacAddr,
    dmac: vrouter::MacAddr,
    from: Ipv4Addr,
    to: Ipv4Addr,
    ty: u8,
    quoted: &[u8],
) -> Vec<u8> {
    let ip = &quoted[14..];
    let ihl = usize::from(ip[0] & 0x0f) * 4;
    let quote = &ip[..ihl + 8];
    let b = PacketBuilder::ethernet2(smac.0, dmac.0).ipv4(from.octets(), to.octets(), 64);
    let icmp = match ty {
        3 => etherparse::Icmpv4Type::DestinationUnreachable(
            etherparse::icmpv4::DestUnreachableHeader::Port,
        ),
        _ => etherparse::Icmpv4Type::TimeExceeded(
            etherparse::icmpv4::TimeExceededCode::TtlExceededInTransit,
        ),
    };
    let mut v = Vec::new();
    b.icmpv4(icmp).write(&mut v, quote).unwrap();
    v
}

/// The quote of an ICMP error frame: its IPv4 header checksum checked, and its source and
/// source port (for a quoted echo, the identifier).
fn quote_of(f: &[u8]) -> (Ipv4Addr, u16) {
    let (s, sp, _, _) = quoted_tuple(f);
    (s, sp)
}

/// The tuple an ICMP error frame quotes (TCP / UDP), its IPv4 header checksum checked.
fn quoted_tuple(f: &[u8]) -> (Ipv4Addr, u16, Ipv4Addr, u16) {
    let e = 14 + 20 + 8;
    let ihl = usize::from(f[e] & 0x0f) * 4;
    let h = etherparse::Ipv4HeaderSlice::from_slice(&f[e..e + ihl])
        .unwrap()
        .to_header();
    assert_eq!(
        h.header_checksum,
        h.calc_header_checksum(),
        "quoted IPv4 checksum"
    );
    let l4 = e + ihl;
    let port = |at: usize| u16::from_be_bytes([f[at], f[at + 1]]);
    if h.protocol == etherparse::IpNumber::ICMP {
        let id = port(l4 + 4);
        return (
            Ipv4Addr::from(h.source),
            id,
            Ipv4Addr::from(h.destination),
            id,
        );
    }
    (
        Ipv4Addr::from(h.source),
        port(l4),
        Ipv4Addr::from(h.destination),
        port(l4 + 2),
    )
}

#[test]
fn icmp_errors_about_translated_packets_reach_the_pod_with_the_quote_translated_back() {
    let mut b = bed();
    let (_, udp) = b
        .run(POD_A, &frame(POD_A_IP, REMOTE, P::Udp, 5555, 9))
        .unwrap();
    let (pool, pool_port, _, _) = tuple(&udp);
    let (_, echo) = b
        .run(POD_A, &frame(POD_A_IP, REMOTE, P::Echo, 77, 0))
        .unwrap();
    tuple(&echo);
    let router = Ipv4Addr::new(203, 0, 113, 254);
    for (from, ty, quoted, want_port) in [
        (REMOTE, 3, &udp, 5555),
        (router, 11, &udp, 5555),
        (router, 11, &echo, 77),
    ] {
        let err = icmp_error(from, pool, ty, quoted);
        let (vif, back) = b.run(FABRIC, &err).expect("to the pod");
        assert_eq!(vif, POD_A);
        let (s, _, d, _) = tuple(&back);
        assert_eq!((s, d), (from, POD_A_IP), "outer addresses");
        assert_eq!(
            quote_of(&back),
            (POD_A_IP, want_port),
            "the quote is the pod's packet"
        );
    }
    // An error about a pair no flow holds is the host's, as before.
    let mut other = udp.clone();
    other[14 + 20..14 + 22].copy_from_slice(&pool_port.wrapping_add(1).to_be_bytes());
    assert_eq!(b.run(FABRIC, &icmp_error(REMOTE, pool, 3, &other)), None);
    assert_eq!(b.out.host.len(), 1);
}

/// Four cores set NAT flows up at once from one pool (more flows than pairs), while a fifth
/// ages and another flushes: afterwards no two flows hold the same pair, and the pairs in use
/// are exactly the NAT flows left (none leaked, none given back twice).
#[test]
fn cores_setting_up_and_aging_at_once_never_share_or_leak_a_pair() {
    let tables = routed_to_the_fabric();
    let table = Arc::new(
        FlowTable::new(FlowConfig {
            entries: 8192,
            timeouts: FlowTimeouts {
                udp: 50,
                ..FlowTimeouts::default()
            },
        })
        .unwrap(),
    );
    let policies = Policies::new(table.clone());
    let nat = Nat::new(table.clone());
    nat.set_pool(
        "egress",
        0,
        PoolRange {
            first: Ipv4Addr::new(198, 51, 100, 64).into(),
            last: Ipv4Addr::new(198, 51, 100, 67).into(),
            ports: (40000, 40255),
        },
    )
    .unwrap();
    nat.attach(VRF as u16, "egress").unwrap();
    let stats = StatsRegistry::default();
    let done = std::sync::atomic::AtomicBool::new(false);
    std::thread::scope(|s| {
        let workers: Vec<_> = (0..4u16)
            .map(|core| {
                let stage = policies.stage(tables.clone()).with_nat(&nat);
                let mut pipe = Pipeline::new(tables.clone(), stats.new_core(), stage);
                s.spawn(move || {
                    let mut out = TxBatches::<VecBuf>::new(64);
                    for round in 0..6u64 {
                        let frames: Vec<VecBuf> = (0..300u16)
                            .map(|i| {
                                let f = frame(POD_A_IP, REMOTE, P::Udp, core * 1000 + i, 53);
                                VecBuf::from_frame(&f)
                            })
                            .collect();
                        out.clear();
                        pipe.flow_hook().begin(POD_A, round * 100);
                        pipe.process(POD_A, frames, &mut out);
                    }
                })
            })
            .collect();
        let table = &table;
        let done = &done;
        s.spawn(move || {
            let mut now = 0;
            while !done.load(std::sync::atomic::Ordering::Relaxed) {
                now += 20;
                table.age_slice(now, 64);
            }
        });
        for w in workers {
            w.join().unwrap();
        }
        table.flush();
        done.store(true, std::sync::atomic::Ordering::Relaxed);
    });
    // One more round after the flush, from one core, so flows and pairs are left to compare.
    let mut b_pipe = Pipeline::new(
        tables.clone(),
        stats.new_core(),
        policies.stage(tables.clone()).with_nat(&nat),
    );
    let mut out = TxBatches::<VecBuf>::new(64);
    b_pipe.flow_hook().begin(POD_A, 1_000_000);
    let frames: Vec<VecBuf> = (0..1100u16)
        .map(|i| VecBuf::from_frame(&frame(POD_A_IP, REMOTE, P::Udp, 20000 + i, 53)))
        .collect();
    b_pipe.process(POD_A, frames, &mut out);

    let flows = table.flows(None, table.capacity(), 0).flows;
    let pairs: Vec<(u128, u16)> = flows
        .iter()
        .filter(|f| !f.is_reverse)
        .filter_map(|f| f.nat.map(|k| (k.src, k.sport)))
        .collect();
    let distinct: std::collections::HashSet<_> = pairs.iter().collect();
    assert_eq!(distinct.len(), pairs.len(), "no pair held by two flows");
    let pool = nat.pool("egress").unwrap();
    assert_eq!(pool.in_use, pairs.len() as u64, "pairs in use = NAT flows");
    assert_eq!(
        pool.in_use, 1024,
        "the pool filled up again after the flush"
    );
    assert!(
        stats.snapshot().drop_count(DropReason::NatPoolExhausted) >= 76,
        "the flows beyond the pool were counted"
    );
}

#[test]
fn overlay_traffic_of_an_attached_vrf_stays_untranslated() {
    let mut b = bed();
    // 198.18.2.0/24 is reached through a VXLAN tunnel out of the fabric vif: the packet stays
    // in VRF 5's overlay, so its inner source is the pod's.
    let (vif, out) = b
        .run(POD_A, &frame(POD_A_IP, REMOTE_VXLAN, P::Udp, 1, 2))
        .expect("tunnelled");
    assert_eq!(vif, FABRIC);
    let inner = &out[14 + 20 + 8 + 8..];
    assert_eq!(tuple(inner), (POD_A_IP, 1, REMOTE_VXLAN, 2));
    assert_eq!(b.pool_in_use(), 0);
    assert_eq!(b.stats.snapshot().nat_translated, 0);
}

const FLOATING: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 200);

fn with_floating_ip(b: &NatBed) {
    b.nat
        .set_floating(FloatingIp {
            outside: FLOATING.into(),
            vrf: VRF as u16,
            inside: POD_B_IP.into(),
        })
        .unwrap();
}

/// [`with_floating_ip`], with VRF 5 routing the floating IP toward the fabric (as an agent
/// would, for pods that reach it by that address).
fn with_floating_ip_routed(b: &NatBed) {
    with_floating_ip(b);
    b.tables
        .add_route(
            VRF,
            ip(FLOATING),
            32,
            RouteTarget {
                nexthop: NH_FABRIC,
                label: None,
            },
        )
        .unwrap();
}

#[test]
fn a_floating_ip_reaches_its_pod_from_outside_and_the_pod_answers_from_it() {
    let mut b = bed();
    with_floating_ip(&b);
    // In: the remote's datagram to the floating IP reaches pod B, from the remote's address.
    let (vif, inbound) = b
        .run(FABRIC, &frame(REMOTE, FLOATING, P::Udp, 7, 53))
        .expect("to the pod");
    assert_eq!(vif, POD_B);
    assert_eq!(tuple(&inbound), (REMOTE, 7, POD_B_IP, 53));
    // The pod's answer leaves from the floating IP, its port kept.
    let (vif, answer) = b
        .run(POD_B, &frame(POD_B_IP, REMOTE, P::Udp, 53, 7))
        .expect("to the fabric");
    assert_eq!(vif, FABRIC);
    assert_eq!(tuple(&answer), (FLOATING, 53, REMOTE, 7));
    // A ping to the floating IP is answered from it.
    let (_, echo) = b
        .run(FABRIC, &frame(REMOTE, FLOATING, P::Echo, 9, 0))
        .unwrap();
    assert_eq!(tuple(&echo), (REMOTE, 9, POD_B_IP, 9));
    let (_, reply) = b
        .run(POD_B, &frame(POD_B_IP, REMOTE, P::EchoReply, 9, 0))
        .unwrap();
    assert_eq!(tuple(&reply), (FLOATING, 9, REMOTE, 9));
    // No pair of the pool was taken; the flows show the floating IP.
    assert_eq!(b.pool_in_use(), 0);
    let flows = b.policies.table().flows(None, 64, 0).flows;
    assert!(flows.iter().any(|f| f.key.vrf == VRF as u16
        && f.nat
            .is_some_and(|t| t.src == u128::from(u32::from(FLOATING)))));
}

#[test]
fn a_pod_with_a_floating_ip_leaves_from_it_rather_than_from_the_pool() {
    let mut b = bed();
    with_floating_ip(&b);
    let (_, out) = b
        .run(POD_B, &frame(POD_B_IP, REMOTE, P::Syn, 6000, 80))
        .unwrap();
    assert_eq!(tuple(&out), (FLOATING, 6000, REMOTE, 80));
    assert_eq!(b.pool_in_use(), 0, "no pair taken");
    // Pod A has no floating IP: it still leaves through the pool.
    let (_, a) = b
        .run(POD_A, &frame(POD_A_IP, REMOTE, P::Syn, 6000, 80))
        .unwrap();
    assert!(in_pool(tuple(&a).0, tuple(&a).1));
    // The reply, and an ICMP error about the pod's packet, come back to pod B.
    let mut reply = frame(REMOTE, FLOATING, P::Syn, 80, 6000);
    reply[0..6].copy_from_slice(&FABRIC_MAC.0);
    let (vif, back) = b.run(FABRIC, &reply).unwrap();
    assert_eq!((vif, tuple(&back)), (POD_B, (REMOTE, 80, POD_B_IP, 6000)));
    let (vif, err) = b
        .run(FABRIC, &icmp_error(REMOTE, FLOATING, 3, &out))
        .unwrap();
    assert_eq!(vif, POD_B);
    assert_eq!(quote_of(&err), (POD_B_IP, 6000));
    // Removed: its flows go; the pod's next flow leaves through the pool.
    b.nat.del_floating(FLOATING.into()).unwrap();
    let table = b.policies.table().clone();
    assert!(table
        .flows(None, 64, 0)
        .flows
        .iter()
        .all(|f| f.key.dst != u128::from(u32::from(FLOATING))
            && f.nat
                .is_none_or(|t| t.src != u128::from(u32::from(FLOATING)))));
    let (_, later) = b
        .run(POD_B, &frame(POD_B_IP, REMOTE, P::Syn, 6001, 80))
        .unwrap();
    assert!(in_pool(tuple(&later).0, tuple(&later).1));
    assert_eq!(
        b.run(FABRIC, &frame(REMOTE, FLOATING, P::Udp, 7, 53)),
        None,
        "the host's"
    );
}

#[test]
fn floating_ips_refuse_pool_addresses_and_a_second_address_per_pod() {
    let b = bed();
    with_floating_ip(&b);
    let f = |outside: Ipv4Addr, inside: Ipv4Addr| FloatingIp {
        outside: outside.into(),
        vrf: VRF as u16,
        inside: inside.into(),
    };
    let e = b.nat.set_floating(f(POOL_FIRST, POD_A_IP)).unwrap_err();
    assert!(e.to_string().contains("address of NAT pool egress"), "{e}");
    let e = b
        .nat
        .set_floating(f(Ipv4Addr::new(198, 51, 100, 201), POD_B_IP))
        .unwrap_err();
    assert!(
        e.to_string()
            .contains("has floating IP 198.51.100.200 already"),
        "{e}"
    );
    let e = b
        .nat
        .set_pool(
            "wide",
            0,
            PoolRange {
                first: Ipv4Addr::new(198, 51, 100, 192).into(),
                last: Ipv4Addr::new(198, 51, 100, 223).into(),
                ports: (1024, 2047),
            },
        )
        .unwrap_err();
    assert!(e.to_string().contains("198.51.100.200"), "{e}");
    assert_eq!(
        b.nat.set_floating(f(FLOATING, POD_B_IP)),
        Ok(false),
        "the same again"
    );
    assert_eq!(b.nat.floating_ips().len(), 1);
}

const VIP: Ipv4Addr = Ipv4Addr::new(198, 18, 1, 100);
const BACKEND_PORTS: [u16; 3] = [8080, 8081, 8082];

/// Service VIP 198.18.1.100:80/TCP of VRF 5 over three backends on pod B (one port each).
fn with_service(b: &NatBed, ports: &[u16]) -> bool {
    b.nat
        .set_service(Service {
            vrf: VRF as u16,
            proto: 6,
            addr: VIP.into(),
            port: 80,
            backends: ports.iter().map(|p| (POD_B_IP.into(), *p)).collect(),
            balance: Balance::Hash,
        })
        .unwrap()
}

fn service_flows(b: &NatBed) -> Vec<u64> {
    b.nat.service_flows(VRF as u16, 6, VIP.into(), 80).unwrap()
}

/// Pod A's SYN from `sport` to the VIP: the backend port it reached on pod B.
fn to_vip(b: &mut NatBed, sport: u16) -> u16 {
    let (vif, out) = b
        .run(POD_A, &frame(POD_A_IP, VIP, P::Syn, sport, 80))
        .expect("forwarded to a backend");
    assert_eq!(vif, POD_B);
    let (s, sp, d, dp) = tuple(&out);
    assert_eq!((s, sp, d), (POD_A_IP, sport, POD_B_IP));
    dp
}

#[test]
fn a_vip_spreads_flows_over_its_backends_sticky_and_replies_come_from_the_vip() {
    let mut b = bed();
    assert!(with_service(&b, &BACKEND_PORTS));
    assert!(!with_service(&b, &BACKEND_PORTS), "the same service again");
    let mut chosen = std::collections::HashMap::new();
    for sport in 1000..1090 {
        let port = to_vip(&mut b, sport);
        assert!(BACKEND_PORTS.contains(&port), "backend port {port}");
        chosen.insert(sport, port);
    }
    let per = service_flows(&b);
    assert_eq!(per.iter().sum::<u64>(), 90);
    assert!(
        per.iter().all(|n| *n > 0),
        "every backend gets flows: {per:?}"
    );
    for (i, p) in BACKEND_PORTS.iter().enumerate() {
        let n = chosen.values().filter(|c| *c == p).count() as u64;
        assert_eq!(per[i], n, "backend {p}'s flows");
    }
    // Sticky: the flow's later packets go to the same backend.
    for (sport, port) in chosen.iter().take(20) {
        assert_eq!(to_vip(&mut b, *sport), *port);
    }
    // The backend's reply reaches pod A from the VIP, checksums right.
    let (sport, port) = chosen.iter().next().map(|(s, p)| (*s, *p)).unwrap();
    let (vif, back) = b
        .run(POD_B, &frame(POD_B_IP, POD_A_IP, P::Syn, port, sport))
        .expect("the reply is forwarded");
    assert_eq!(vif, POD_A);
    assert_eq!(tuple(&back), (VIP, 80, POD_A_IP, sport));
    // Pod B talking to pod A on its own is not translated.
    let (_, plain) = b
        .run(POD_B, &frame(POD_B_IP, POD_A_IP, P::Syn, 7000, 7001))
        .unwrap();
    assert_eq!(tuple(&plain), (POD_B_IP, 7000, POD_A_IP, 7001));
}

#[test]
fn a_removed_backend_loses_its_flows_and_gets_no_new_ones() {
    let mut b = bed();
    with_service(&b, &BACKEND_PORTS);
    let mut chosen = Vec::new();
    for sport in 2000..2060 {
        chosen.push((sport, to_vip(&mut b, sport)));
    }
    let before = service_flows(&b);
    assert!(before[1] > 0);
    // 8081 goes: its flows with it, the others' kept.
    assert!(with_service(&b, &[8080, 8082]));
    assert_eq!(service_flows(&b), vec![before[0], before[2]]);
    assert_eq!(
        b.policies.table().stats().active as u64,
        2 * (before[0] + before[2]),
        "both entries of every kept flow, none of the removed backend's"
    );
    for (sport, port) in &chosen {
        let now = to_vip(&mut b, *sport);
        if *port == 8081 {
            assert_ne!(
                now, 8081,
                "a flow of the removed backend set up again elsewhere"
            );
        } else {
            assert_eq!(now, *port, "flow {sport} kept its backend");
        }
    }
    for sport in 3000..3100 {
        assert_ne!(to_vip(&mut b, sport), 8081, "new flow {sport}");
    }
    // The removed backend's late reply is not made to look like the VIP's.
    let (sport, _) = *chosen.iter().find(|(_, p)| *p == 8081).unwrap();
    b.nat.del_service(VRF as u16, 6, VIP.into(), 80).unwrap();
    let (_, late) = b
        .run(POD_B, &frame(POD_B_IP, POD_A_IP, P::Syn, 8081, sport))
        .unwrap();
    assert_eq!(tuple(&late).0, POD_B_IP);
    // Deleted: its flows went, and the VIP (no route) is not reached any more.
    assert!(b.nat.services().is_empty());
    assert_eq!(b.run(POD_A, &frame(POD_A_IP, VIP, P::Syn, 2000, 80)), None);
    assert_eq!(b.drops(DropReason::NoRoute), 1);
}

#[test]
fn services_refuse_bad_backends_and_pool_addresses() {
    let b = bed();
    let svc = |addr: Ipv4Addr, proto: u8, backends: Vec<(IpAddr, u16)>| Service {
        vrf: VRF as u16,
        proto,
        addr: addr.into(),
        port: 80,
        backends,
        balance: Balance::Hash,
    };
    let bk = IpAddr::from(POD_B_IP);
    let err = |s: Service| b.nat.set_service(s).unwrap_err().to_string();
    assert!(err(svc(VIP, 6, vec![])).contains("no backends"));
    assert!(err(svc(VIP, 6, vec![(bk, 1), (bk, 1)])).contains("listed twice"));
    assert!(err(svc(VIP, 1, vec![(bk, 1)])).contains("protocol 1"));
    b.nat
        .set_pool(
            "inside",
            VRF as u16 + 1,
            PoolRange {
                first: VIP.into(),
                last: VIP.into(),
                ports: PORTS,
            },
        )
        .unwrap();
    // A pool of another VRF does not collide; one of the VIP's VRF does.
    assert!(b.nat.set_service(svc(VIP, 6, vec![(bk, 1)])).unwrap());
    let mut other = svc(POOL_FIRST, 17, vec![(bk, 1)]);
    other.vrf = 0;
    assert!(err(other).contains("NAT pool egress"));
    assert!(b.nat.del_service(VRF as u16, 17, VIP.into(), 80).is_err());
}

const METADATA: Ipv4Addr = Ipv4Addr::new(169, 254, 169, 254);
const METADATA_SERVICE: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 80);

fn metadata() -> LinkLocal {
    LinkLocal {
        proto: 6,
        addr: METADATA.into(),
        port: 80,
        service_addr: METADATA_SERVICE.into(),
        service_port: 8775,
    }
}

#[test]
fn a_link_local_service_is_reached_from_each_vifs_own_link_local_source_and_answers_back() {
    let mut b = bed();
    let fabric = RouteTarget {
        nexthop: NH_FABRIC,
        label: None,
    };
    b.tables
        .add_route(0, ip(METADATA_SERVICE), 32, fabric)
        .unwrap();
    assert!(b.nat.set_link_local(metadata()).unwrap());
    assert!(!b.nat.set_link_local(metadata()).unwrap(), "the same again");

    let to_metadata = frame(POD_A_IP, METADATA, P::Syn, 5555, 80);
    let (vif, out) = b.run(POD_A, &to_metadata).expect("forwarded");
    assert_eq!(vif, FABRIC);
    let source_a = Ipv4Addr::from(link_local_source(POD_A));
    assert_eq!(source_a, Ipv4Addr::new(169, 254, 1, POD_A as u8));
    assert_eq!(tuple(&out), (source_a, 5555, METADATA_SERVICE, 8775));
    assert_eq!(&out[0..6], &PEER_MAC.0, "to the fabric route's nexthop");
    assert_eq!(
        b.pool_in_use(),
        0,
        "no pool pair: the VRF's source NAT is not involved"
    );
    // Pod B, from the same port, from its own address.
    let (_, out) = b
        .run(POD_B, &frame(POD_B_IP, METADATA, P::Syn, 5555, 80))
        .expect("forwarded");
    let source_b = Ipv4Addr::from(link_local_source(POD_B));
    assert_eq!(tuple(&out), (source_b, 5555, METADATA_SERVICE, 8775));

    // The service answers pod A's vif address: back to pod A, from the metadata address.
    let mut reply = frame(METADATA_SERVICE, source_a, P::Syn, 8775, 5555);
    reply[0..6].copy_from_slice(&FABRIC_MAC.0);
    let (vif, back) = b.run(FABRIC, &reply).expect("to the pod");
    assert_eq!(vif, POD_A);
    assert_eq!(tuple(&back), (METADATA, 80, POD_A_IP, 5555));
    assert_eq!(&back[0..6], &POD_A_MAC.0);
    // The flow's next packet takes the same way, from its entries.
    let (_, again) = b.run(POD_A, &to_metadata).expect("forwarded");
    assert_eq!(tuple(&again), (source_a, 5555, METADATA_SERVICE, 8775));
    let flows = b.policies.table().flows(None, 16, 0).flows;
    let fwd = flows
        .iter()
        .find(|f| !f.is_reverse && f.key.src == u128::from(u32::from(POD_A_IP)))
        .expect("pod A's flow");
    let shown = fwd.nat.expect("translated tuple");
    assert_eq!(
        (shown.vrf, shown.src as u32, shown.sport),
        (0, u32::from(source_a), 5555)
    );
    assert_eq!(shown.dst as u32, u32::from(METADATA_SERVICE));

    // UDP to the same address:port is no service: unrouted, dropped.
    let before = b.drops(DropReason::NoRoute);
    assert!(b
        .run(POD_A, &frame(POD_A_IP, METADATA, P::Udp, 5555, 80))
        .is_none());
    assert_eq!(b.drops(DropReason::NoRoute), before + 1);
    // Removed: its flows go, and the next packet finds no route.
    b.nat.del_link_local(6, METADATA.into(), 80).unwrap();
    assert!(b.policies.table().flows(None, 16, 0).flows.is_empty());
    assert!(b.run(POD_A, &to_metadata).is_none());
    assert_eq!(b.drops(DropReason::NoRoute), before + 2);
    // The reply of a flow that is gone goes to the host, untranslated.
    b.out.clear();
    let _ = b.run(FABRIC, &reply);
    assert_eq!(b.out.host.len(), 1);

    // Not link-local, or a vif's own source address: refused.
    for bad in [
        LinkLocal {
            addr: u32::from(Ipv4Addr::new(198, 18, 1, 1)),
            ..metadata()
        },
        LinkLocal {
            addr: link_local_source(3),
            ..metadata()
        },
        LinkLocal {
            proto: 1,
            ..metadata()
        },
        LinkLocal {
            service_port: 0,
            ..metadata()
        },
    ] {
        assert!(b.nat.set_link_local(bad).is_err(), "{bad:?}");
    }
}

/// A pod answering a reply that came back through source NAT with an ICMP error: the error
/// leaves from the pool pair, its quote translated to what the remote sent.
#[test]
fn icmp_errors_from_a_pod_behind_source_nat_leave_from_the_pool() {
    let mut b = bed();
    let (_, udp) = b
        .run(POD_A, &frame(POD_A_IP, REMOTE, P::Udp, 5555, 9))
        .unwrap();
    let (pool, pool_port, _, _) = tuple(&udp);
    let reply = {
        let b = PacketBuilder::ethernet2(PEER_MAC.0, FABRIC_MAC.0).ipv4(
            REMOTE.octets(),
            pool.octets(),
            64,
        );
        let mut v = Vec::new();
        b.udp(9, pool_port).write(&mut v, b"reply").unwrap();
        v
    };
    let (vif, at_pod) = b.run(FABRIC, &reply).expect("the reply reaches the pod");
    assert_eq!(vif, POD_A);
    assert_eq!(tuple(&at_pod), (REMOTE, 9, POD_A_IP, 5555));
    let err = icmp_error_from_pod(POD_A_IP, REMOTE, 3, &at_pod);
    let (vif, out) = b.run(POD_A, &err).expect("the error leaves");
    assert_eq!(vif, FABRIC);
    let (s, _, d, _) = tuple(&out);
    assert_eq!((s, d), (pool, REMOTE), "from the pool address");
    assert_eq!(quoted_tuple(&out), (REMOTE, 9, pool, pool_port));
    // An error quoting a packet of no flow is not translated: NAT cannot, so it is dropped.
    let mut other = at_pod.clone();
    other[14 + 20..14 + 22].copy_from_slice(&10u16.to_be_bytes());
    let before = b.drops(DropReason::NatUnsupported);
    assert_eq!(
        b.run(POD_A, &icmp_error_from_pod(POD_A_IP, REMOTE, 3, &other)),
        None
    );
    assert_eq!(b.drops(DropReason::NatUnsupported), before + 1);
}

/// ICMP errors about a VIP flow's packets, either way, are translated back: the backend's
/// port unreachable reaches the client from the VIP, quoting the client's packet to the VIP
/// (a router's error keeps the router's address); the client's error about a reply from the
/// VIP reaches the backend, quoting the backend's own packet.
#[test]
fn icmp_errors_about_vip_flows_are_translated_back() {
    let mut b = bed();
    with_service(&b, &BACKEND_PORTS);
    let sport = 4242;
    let (vif, at_backend) = b
        .run(POD_A, &frame(POD_A_IP, VIP, P::Syn, sport, 80))
        .unwrap();
    assert_eq!(vif, POD_B);
    let (_, _, _, port) = tuple(&at_backend);

    // From the backend (as pod B sends it; the MAC does not matter to routing).
    let err = icmp_error_from_pod(POD_B_IP, POD_A_IP, 3, &at_backend);
    let (vif, out) = b.run(POD_B, &err).expect("to the client");
    assert_eq!(vif, POD_A);
    let (s, _, d, _) = tuple(&out);
    assert_eq!((s, d), (VIP, POD_A_IP), "from the VIP");
    assert_eq!(quoted_tuple(&out), (POD_A_IP, sport, VIP, 80));
    let router = Ipv4Addr::new(198, 18, 1, 254);
    let err = icmp_error_from_pod(router, POD_A_IP, 11, &at_backend);
    let (_, out) = b.run(POD_B, &err).expect("to the client");
    let (s, _, d, _) = tuple(&out);
    assert_eq!((s, d), (router, POD_A_IP), "a router keeps its address");
    assert_eq!(quoted_tuple(&out), (POD_A_IP, sport, VIP, 80));

    // From the client, about the backend's reply it got from the VIP (the VIP has no route).
    let (_, reply) = b
        .run(POD_B, &frame(POD_B_IP, POD_A_IP, P::Syn, port, sport))
        .unwrap();
    assert_eq!(tuple(&reply), (VIP, 80, POD_A_IP, sport));
    let err = icmp_error_from_pod(POD_A_IP, VIP, 3, &reply);
    let (vif, out) = b.run(POD_A, &err).expect("to the backend");
    assert_eq!(vif, POD_B);
    let (s, _, d, _) = tuple(&out);
    assert_eq!((s, d), (POD_A_IP, POD_B_IP));
    assert_eq!(quoted_tuple(&out), (POD_B_IP, port, POD_A_IP, sport));

    // The service gone, such an error has no route.
    b.nat.del_service(VRF as u16, 6, VIP.into(), 80).unwrap();
    let before = b.drops(DropReason::NoRoute);
    assert_eq!(b.run(POD_A, &err), None);
    assert_eq!(b.drops(DropReason::NoRoute), before + 1);
}

/// Least flows: each new flow goes to the backend holding the fewest now. Thirty flows split
/// ten each; six of one backend's go (removed from the table, as aging would), and the next
/// six new flows all go to it; switching back to the hash starts the service's flows afresh.
#[test]
fn a_least_flows_vip_gives_new_flows_to_the_backend_with_fewest() {
    let mut b = bed();
    let svc = |balance| Service {
        vrf: VRF as u16,
        proto: 6,
        addr: VIP.into(),
        port: 80,
        backends: BACKEND_PORTS
            .iter()
            .map(|p| (POD_B_IP.into(), *p))
            .collect(),
        balance,
    };
    assert!(b.nat.set_service(svc(Balance::LeastFlows)).unwrap());
    let mut chosen = Vec::new();
    for sport in 5000..5030 {
        chosen.push((sport, to_vip(&mut b, sport)));
    }
    assert_eq!(service_flows(&b), vec![10, 10, 10]);
    let table = b.policies.table().clone();
    for (sport, _) in chosen.iter().filter(|(_, p)| *p == 8081).take(6) {
        let key = vrouter::flow::FlowKey {
            vrf: VRF as u16,
            v6: false,
            proto: 6,
            src: u128::from(u32::from(POD_A_IP)),
            dst: u128::from(u32::from(VIP)),
            sport: *sport,
            dport: 80,
        };
        assert!(table.remove(&key), "flow {sport} removed");
    }
    assert_eq!(service_flows(&b), vec![10, 4, 10]);
    for sport in 6000..6006 {
        assert_eq!(to_vip(&mut b, sport), 8081, "new flow {sport}");
    }
    // Even again: one each.
    let mut next: Vec<u16> = (6006..6009).map(|s| to_vip(&mut b, s)).collect();
    next.sort();
    assert_eq!(next, BACKEND_PORTS.to_vec());
    assert_eq!(service_flows(&b), vec![11, 11, 11]);
    // Back to the hash: the flows go, and new ones are spread by hash again.
    assert!(b.nat.set_service(svc(Balance::Hash)).unwrap());
    assert_eq!(service_flows(&b), vec![0, 0, 0]);
    assert_eq!(b.policies.table().stats().active, 0);
}

/// A change waits for the forwarding cores to leave the old snapshot before removing the flows
/// it no longer allows: a core that has not announced a quiescent state since the change holds
/// the removal of a backend (so it cannot set a flow up to it after the scan), and lets it go as
/// soon as it announces one.
#[test]
fn a_backend_removal_waits_for_the_cores_to_leave_the_old_set() {
    let table = Arc::new(
        FlowTable::new(FlowConfig {
            entries: 1024,
            timeouts: FlowTimeouts {
                tcp_established: 1000,
                tcp_closing: 100,
                udp: 1000,
                icmp: 1000,
                other: 1000,
            },
        })
        .unwrap(),
    );
    let grace = vrouter::qsbr::Qsbr::new();
    let nat = Arc::new(Nat::new(table).with_grace(grace.clone()));
    let svc = |ports: &[u16]| Service {
        vrf: VRF as u16,
        proto: 6,
        addr: VIP.into(),
        port: 80,
        backends: ports.iter().map(|p| (POD_B_IP.into(), *p)).collect(),
        balance: Balance::Hash,
    };
    assert!(nat.set_service(svc(&BACKEND_PORTS)).unwrap(), "no core yet");
    let core = grace.register();
    let changing = {
        let nat = nat.clone();
        std::thread::spawn(move || nat.set_service(svc(&[8080, 8082])).unwrap())
    };
    std::thread::sleep(std::time::Duration::from_millis(50));
    assert!(
        !changing.is_finished(),
        "the change waits for the core's quiescent state"
    );
    core.quiescent();
    assert!(changing.join().unwrap(), "and then completes");
    assert_eq!(nat.services()[0].backends.len(), 2);
}

/// A policy change re-decides a VIP flow on the backend tuple it was set up with, not the VIP
/// tuple it is keyed by: once pod B's policy refuses backend port 8081, the flows that went
/// there are dropped at their next packet (and not set up again), the others kept.
#[test]
fn a_policy_change_re_decides_vip_flows_on_their_backend_tuple() {
    let mut b = bed();
    with_service(&b, &BACKEND_PORTS);
    let mut chosen = Vec::new();
    for sport in 7000..7030 {
        chosen.push((sport, to_vip(&mut b, sport)));
    }
    assert!(chosen.iter().any(|(_, p)| *p == 8081));
    let refuse_8081 = Policy {
        default: Action::Allow,
        ingress: vec![],
        egress: vec![vrouter::flow::Rule {
            action: Action::Deny,
            proto: Some(6),
            cidr: None,
            ports: Some((8081, 8081)),
        }],
    };
    b.policies.set(POD_B, Some(refuse_8081)).unwrap();
    let before = b.drops(DropReason::FlowDrop);
    for (sport, port) in &chosen {
        let out = b.run(POD_A, &frame(POD_A_IP, VIP, P::Syn, *sport, 80));
        if *port == 8081 {
            assert_eq!(out, None, "flow {sport} to 8081 dropped");
        } else {
            let (vif, f) = out.expect("kept");
            assert_eq!((vif, tuple(&f).3), (POD_B, *port), "flow {sport} kept");
        }
    }
    let refused = chosen.iter().filter(|(_, p)| *p == 8081).count() as u64;
    assert_eq!(b.drops(DropReason::FlowDrop), before + refused);
    assert_eq!(service_flows(&b)[1], 0, "none left to 8081");
}

/// A pod reached through its floating IP answers with an ICMP error (a closed port): the error
/// leaves from the floating IP, quoting the remote's datagram as the remote sent it.
#[test]
fn a_pods_icmp_error_about_an_inbound_floating_ip_flow_leaves_from_the_floating_ip() {
    let mut b = bed();
    with_floating_ip(&b);
    let (vif, inbound) = b
        .run(FABRIC, &frame(REMOTE, FLOATING, P::Udp, 7, 53))
        .expect("to the pod");
    assert_eq!(vif, POD_B);
    let err = icmp_error_between(POD_B_MAC, VROUTER_MAC, POD_B_IP, REMOTE, 3, &inbound);
    let (vif, out) = b.run(POD_B, &err).expect("the error leaves");
    assert_eq!(vif, FABRIC);
    let (s, _, d, _) = tuple(&out);
    assert_eq!((s, d), (FLOATING, REMOTE), "from the floating IP");
    assert_eq!(quoted_tuple(&out), (REMOTE, 7, FLOATING, 53));
}

const POD_A_IP6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 1, 0, 0, 0, 0, 0xa);
const POD_B_IP6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 1, 0, 0, 0, 0, 0xb);
const VIP6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 1, 0, 0, 0, 0, 0x100);

fn frame6(src: Ipv6Addr, dst: Ipv6Addr, p: P, sport: u16, dport: u16) -> Vec<u8> {
    frame_of(src.into(), dst.into(), p, sport, dport)
}

/// [`tuple`] for IPv6: the L4 checksum (over the pseudo-header with both 128-bit addresses)
/// checked against etherparse's.
fn tuple6(f: &[u8]) -> (Ipv6Addr, u16, Ipv6Addr, u16) {
    let p = SlicedPacket::from_ethernet(f).unwrap();
    let Some(NetSlice::Ipv6(ip)) = &p.net else {
        panic!("not IPv6")
    };
    let h = ip.header().to_header();
    let (s, d) = (Ipv6Addr::from(h.source), Ipv6Addr::from(h.destination));
    match &p.transport {
        Some(TransportSlice::Tcp(t)) => {
            let want = t.to_header().calc_checksum_ipv6(&h, t.payload()).unwrap();
            assert_eq!(t.checksum(), want, "TCP checksum");
            (s, t.source_port(), d, t.destination_port())
        }
        Some(TransportSlice::Udp(u)) => {
            let want = u.to_header().calc_checksum_ipv6(&h, u.payload()).unwrap();
            assert_eq!(u.checksum(), want, "UDP checksum");
            (s, u.source_port(), d, u.destination_port())
        }
        Some(TransportSlice::Icmpv6(i)) => {
            let want = i
                .icmp_type()
                .calc_checksum(h.source, h.destination, i.payload())
                .unwrap();
            assert_eq!(i.checksum(), want, "ICMPv6 checksum");
            let id = u16::from_be_bytes([i.slice()[4], i.slice()[5]]);
            (s, id, d, id)
        }
        _ => panic!("no TCP / UDP / ICMPv6 header"),
    }
}

fn service6(proto: u8, balance: Balance) -> Service {
    Service {
        vrf: VRF as u16,
        proto,
        addr: VIP6.into(),
        port: 80,
        backends: BACKEND_PORTS
            .iter()
            .map(|p| (POD_B_IP6.into(), *p))
            .collect(),
        balance,
    }
}

/// An IPv6 VIP: pod A's TCP and UDP flows to [2001:db8:1::100]:80 reach one of pod B's three
/// ports (every one over 60 flows), with checksums valid after the 128-bit rewrite; pod B's
/// replies come back from the VIP; the flows are counted per backend; an IPv4 twin VIP of the
/// same bits is not confused with it.
#[test]
fn an_ipv6_vip_spreads_flows_and_its_replies_come_back_from_it() {
    for (proto, p) in [(6u8, P::Syn), (17, P::Udp)] {
        for balance in [Balance::Hash, Balance::LeastFlows] {
            let mut b = bed();
            assert!(b.nat.set_service(service6(proto, balance)).unwrap());
            let mut seen = [0u32; 3];
            for sport in 2000..2060 {
                let (vif, out) = b
                    .run(POD_A, &frame6(POD_A_IP6, VIP6, p, sport, 80))
                    .expect("forwarded to a backend");
                assert_eq!(vif, POD_B);
                let (s, sp, d, dp) = tuple6(&out);
                assert_eq!((s, sp, d), (POD_A_IP6, sport, POD_B_IP6));
                let i = BACKEND_PORTS
                    .iter()
                    .position(|&x| x == dp)
                    .expect("a backend");
                seen[i] += 1;
                // The same flow again: the same backend.
                let (_, again) = b
                    .run(POD_A, &frame6(POD_A_IP6, VIP6, p, sport, 80))
                    .unwrap();
                assert_eq!(tuple6(&again).3, dp);
                // The backend's reply comes back from the VIP.
                let (vif, back) = b
                    .run(POD_B, &frame6(POD_B_IP6, POD_A_IP6, p, dp, sport))
                    .expect("reply forwarded");
                assert_eq!(vif, POD_A);
                assert_eq!(tuple6(&back), (VIP6, 80, POD_A_IP6, sport));
            }
            assert!(seen.iter().all(|&n| n > 0), "{proto} {balance:?}: {seen:?}");
            if balance == Balance::LeastFlows {
                assert_eq!(seen, [20, 20, 20]);
            }
            let flows = b
                .nat
                .service_flows(VRF as u16, proto, VIP6.into(), 80)
                .unwrap();
            assert_eq!(flows, seen.map(u64::from).to_vec());
            // The IPv4 address of the same low bits is no VIP: plain routing (no route).
            let v4_twin = Ipv4Addr::from(VIP6.to_bits() as u32);
            let before = b.drops(DropReason::NoRoute);
            assert_eq!(b.run(POD_A, &frame(POD_A_IP, v4_twin, p, 2000, 80)), None);
            assert_eq!(b.drops(DropReason::NoRoute), before + 1);
            b.nat
                .del_service(VRF as u16, proto, VIP6.into(), 80)
                .unwrap();
            assert!(b.policies.table().flows(None, 16, 0).flows.is_empty());
        }
    }
}

/// A VIP and backends of different families are refused, naming the backend; an IPv6 VIP's
/// ICMPv6 echo is not translated (no VIP for it: no route, dropped).
#[test]
fn an_ipv6_vip_refuses_ipv4_backends() {
    let mut b = bed();
    let mut s = service6(6, Balance::Hash);
    s.backends.push((POD_B_IP.into(), 8080));
    let e = b.nat.set_service(s).unwrap_err().to_string();
    assert!(e.contains("198.18.1.11") && e.contains("family"), "{e}");
    assert!(b.nat.set_service(service6(6, Balance::Hash)).unwrap());
    let before = b.drops(DropReason::NoRoute);
    assert_eq!(b.run(POD_A, &frame6(POD_A_IP6, VIP6, P::Echo, 7, 1)), None);
    assert_eq!(b.drops(DropReason::NoRoute), before + 1);
}

/// An ICMPv6 port unreachable from an IPv6 VIP's backend about the client's datagram reaches
/// the client from the VIP, quoting the client's datagram to the VIP, its ICMPv6 checksum
/// (pseudo-header and quote) the one etherparse computes.
#[test]
fn an_ipv6_backends_port_unreachable_reaches_the_client_from_the_vip() {
    let mut b = bed();
    assert!(b.nat.set_service(service6(17, Balance::Hash)).unwrap());
    let sent = frame6(POD_A_IP6, VIP6, P::Udp, 6000, 80);
    let (_, to_backend) = b.run(POD_A, &sent).expect("to a backend");
    let (_, _, _, port) = tuple6(&to_backend);
    let mut err = Vec::new();
    PacketBuilder::ethernet2(POD_B_MAC.0, VROUTER_MAC.0)
        .ipv6(POD_B_IP6.octets(), POD_A_IP6.octets(), 64)
        .icmpv6(etherparse::Icmpv6Type::DestinationUnreachable(
            etherparse::icmpv6::DestUnreachableCode::Port,
        ))
        .write(&mut err, &to_backend[14..])
        .unwrap();
    let (vif, out) = b.run(POD_B, &err).expect("the error forwarded");
    assert_eq!(vif, POD_A);
    let p = SlicedPacket::from_ethernet(&out).unwrap();
    let Some(NetSlice::Ipv6(ip)) = &p.net else {
        panic!("not IPv6")
    };
    let h = ip.header().to_header();
    assert_eq!(
        (Ipv6Addr::from(h.source), Ipv6Addr::from(h.destination)),
        (VIP6, POD_A_IP6),
        "from the VIP"
    );
    let Some(TransportSlice::Icmpv6(i)) = &p.transport else {
        panic!("not ICMPv6")
    };
    assert_eq!(
        i.checksum(),
        i.icmp_type()
            .calc_checksum(h.source, h.destination, i.payload())
            .unwrap(),
        "ICMPv6 checksum"
    );
    // The quote is what pod A sent, byte for byte but for the hop limit the vrouter took off
    // and the quoted UDP checksum (a quote's is left as it is).
    let mut quote = i.payload().to_vec();
    let mut want = sent[14..].to_vec();
    want[7] -= 1;
    for q in [&mut quote, &mut want] {
        q[46..48].copy_from_slice(&[0, 0]);
    }
    assert_eq!(quote, want, "the quote is pod A's datagram to the VIP");
    assert_ne!(port, 80);
}

const REMOTE6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0xff, 0, 0, 0, 0, 7);
const FLOATING6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0x64, 0, 0, 0, 0, 0xc8);
const POOL6_FIRST: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0x64, 0, 0, 0, 0, 0x40);
const POOL6_LAST: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0x64, 0, 0, 0, 0, 0x41);

/// 2001:db8:ff::/64 (the remote's) routed from VRF 5 to the fabric vif.
fn v6_uplink(b: &NatBed) {
    b.tables
        .add_route(
            VRF,
            IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 0xff, 0, 0, 0, 0, 0)),
            64,
            RouteTarget {
                nexthop: NH_FABRIC,
                label: None,
            },
        )
        .unwrap();
}

/// An ICMPv6 error of type `ty` (1: destination unreachable, 3: time exceeded) from `from` to
/// `to` on the fabric, quoting the IPv6 packet of frame `quoted`.
fn icmp6_error(from: Ipv6Addr, to: Ipv6Addr, ty: u8, quoted: &[u8]) -> Vec<u8> {
    let t = match ty {
        1 => etherparse::Icmpv6Type::DestinationUnreachable(
            etherparse::icmpv6::DestUnreachableCode::Port,
        ),
        _ => etherparse::Icmpv6Type::TimeExceeded(
            etherparse::icmpv6::TimeExceededCode::HopLimitExceeded,
        ),
    };
    let mut v = Vec::new();
    PacketBuilder::ethernet2(PEER_MAC.0, FABRIC_MAC.0)
        .ipv6(from.octets(), to.octets(), 64)
        .icmpv6(t)
        .write(&mut v, &quoted[14..])
        .unwrap();
    v
}

/// An ICMPv6 error frame: its ICMPv6 checksum checked against etherparse's; its outer source
/// and destination and the source address and port its quote holds.
fn error6(f: &[u8]) -> (Ipv6Addr, Ipv6Addr, Ipv6Addr, u16) {
    let p = SlicedPacket::from_ethernet(f).unwrap();
    let Some(NetSlice::Ipv6(ip)) = &p.net else {
        panic!("not IPv6")
    };
    let h = ip.header().to_header();
    let Some(TransportSlice::Icmpv6(i)) = &p.transport else {
        panic!("not ICMPv6")
    };
    assert_eq!(
        i.checksum(),
        i.icmp_type()
            .calc_checksum(h.source, h.destination, i.payload())
            .unwrap(),
        "ICMPv6 checksum"
    );
    let q = i.payload();
    let src: [u8; 16] = q[8..24].try_into().unwrap();
    (
        Ipv6Addr::from(h.source),
        Ipv6Addr::from(h.destination),
        Ipv6Addr::from(src),
        u16::from_be_bytes([q[40], q[41]]),
    )
}

/// A floating IPv6: the remote's datagrams and pings to it reach pod B from the remote's own
/// address, pod B's flows toward the fabric leave from it (ports kept) and their replies and
/// ICMPv6 errors come back to it translated (checksums etherparse's); the flows show both
/// tuples; a floating IP of mixed families is refused; removed, its flows go.
#[test]
fn a_floating_ipv6_maps_a_pod_both_ways() {
    let mut b = bed();
    v6_uplink(&b);
    let mixed = b
        .nat
        .set_floating(FloatingIp {
            outside: FLOATING6.into(),
            vrf: VRF as u16,
            inside: POD_B_IP.into(),
        })
        .unwrap_err()
        .to_string();
    assert!(mixed.contains("address families"), "{mixed}");
    b.nat
        .set_floating(FloatingIp {
            outside: FLOATING6.into(),
            vrf: VRF as u16,
            inside: POD_B_IP6.into(),
        })
        .unwrap();
    // In.
    let (vif, inbound) = b
        .run(FABRIC, &frame6(REMOTE6, FLOATING6, P::Udp, 7, 53))
        .expect("to the pod");
    assert_eq!(vif, POD_B);
    assert_eq!(tuple6(&inbound), (REMOTE6, 7, POD_B_IP6, 53));
    assert_eq!(&inbound[0..6], &POD_B_MAC.0, "addressed to the pod");
    let (vif, answer) = b
        .run(POD_B, &frame6(POD_B_IP6, REMOTE6, P::Udp, 53, 7))
        .expect("to the fabric");
    assert_eq!(vif, FABRIC);
    assert_eq!(tuple6(&answer), (FLOATING6, 53, REMOTE6, 7));
    let (_, echo) = b
        .run(FABRIC, &frame6(REMOTE6, FLOATING6, P::Echo, 9, 0))
        .expect("the ping to the pod");
    assert_eq!(tuple6(&echo), (REMOTE6, 9, POD_B_IP6, 9));
    let (_, reply) = b
        .run(POD_B, &frame6(POD_B_IP6, REMOTE6, P::EchoReply, 9, 0))
        .expect("the echo reply out");
    assert_eq!(tuple6(&reply), (FLOATING6, 9, REMOTE6, 9));
    // Out: the pod's own flow, its reply and an ICMPv6 error about it.
    let (vif, out) = b
        .run(POD_B, &frame6(POD_B_IP6, REMOTE6, P::Syn, 6000, 80))
        .expect("out");
    assert_eq!(vif, FABRIC);
    assert_eq!(tuple6(&out), (FLOATING6, 6000, REMOTE6, 80));
    let (vif, back) = b
        .run(FABRIC, &frame6(REMOTE6, FLOATING6, P::Syn, 80, 6000))
        .expect("the reply");
    assert_eq!(
        (vif, tuple6(&back)),
        (POD_B, (REMOTE6, 80, POD_B_IP6, 6000))
    );
    let (vif, err) = b
        .run(FABRIC, &icmp6_error(REMOTE6, FLOATING6, 1, &out))
        .expect("the error to the pod");
    assert_eq!(vif, POD_B);
    assert_eq!(error6(&err), (REMOTE6, POD_B_IP6, POD_B_IP6, 6000));
    // A router on the way keeps its own address as the error's source.
    let router = Ipv6Addr::new(0x2001, 0xdb8, 0xff, 0, 0, 0, 0, 1);
    let (_, err) = b
        .run(FABRIC, &icmp6_error(router, FLOATING6, 3, &out))
        .expect("the error to the pod");
    assert_eq!(error6(&err), (router, POD_B_IP6, POD_B_IP6, 6000));
    // No pair taken; the flows show both tuples.
    assert_eq!(b.pool_in_use(), 0);
    let flows = b.policies.table().flows(None, 64, 0).flows;
    let tcp = flows
        .iter()
        .find(|f| !f.is_reverse && f.key.proto == 6)
        .expect("the TCP flow");
    let t = tcp.nat.expect("translated tuple");
    assert_eq!(
        (tcp.key.vrf, tcp.key.src, t.vrf, t.src),
        (VRF as u16, POD_B_IP6.to_bits(), 0, FLOATING6.to_bits())
    );
    assert_eq!(b.stats.snapshot().drop_count(DropReason::NatUnsupported), 0);
    // Removed: its flows go, and a packet to it is the host's.
    b.nat.del_floating(FLOATING6.into()).unwrap();
    assert!(b
        .policies
        .table()
        .flows(None, 64, 0)
        .flows
        .iter()
        .all(|f| f.nat.is_none()));
    assert_eq!(
        b.run(FABRIC, &frame6(REMOTE6, FLOATING6, P::Udp, 7, 53)),
        None
    );
    assert_eq!(b.out.host.len(), 1);
    // Pod B's IPv6 flows now leave through the VRF's IPv4 pool: not translated, counted.
    assert_eq!(
        b.run(POD_B, &frame6(POD_B_IP6, REMOTE6, P::Udp, 53, 7)),
        None
    );
    assert_eq!(b.drops(DropReason::NatUnsupported), 1);
}

fn in_pool6(a: Ipv6Addr, port: u16) -> bool {
    (POOL6_FIRST.to_bits()..=POOL6_LAST.to_bits()).contains(&a.to_bits())
        && (PORTS.0..=PORTS.1).contains(&port)
}

/// NAT66: VRF 5 attached to an IPv6 pool of two addresses and two ports: TCP, UDP and ICMPv6
/// echo leave from distinct pairs of it (checksums etherparse's) and their replies come back
/// to the pod; the fifth flow finds the pool exhausted (counted), IPv4 flows are not
/// translated by it (counted); aged flows give their pairs back. Overlaps are checked within a
/// family only.
#[test]
fn nat66_flows_leave_from_an_ipv6_pool_until_it_is_exhausted() {
    let mut b = bed();
    v6_uplink(&b);
    let range6 = |first: Ipv6Addr, last: Ipv6Addr| PoolRange {
        first: first.into(),
        last: last.into(),
        ports: PORTS,
    };
    b.nat
        .set_pool("egress6", 0, range6(POOL6_FIRST, POOL6_LAST))
        .unwrap();
    let e = b
        .nat
        .set_pool("other6", 0, range6(POOL6_LAST, FLOATING6))
        .unwrap_err()
        .to_string();
    assert!(e.contains("shares addresses with pool egress6"), "{e}");
    // The IPv4 pool's bits in an IPv6 address: no overlap across families.
    let twin = Ipv6Addr::from(u128::from(u32::from(POOL_FIRST)));
    assert!(b.nat.set_pool("twin6", 0, range6(twin, twin)).unwrap());
    b.nat.attach(VRF as u16, "egress6").unwrap();

    let (vif, out) = b
        .run(POD_A, &frame6(POD_A_IP6, REMOTE6, P::Syn, 5555, 80))
        .expect("out");
    assert_eq!(vif, FABRIC);
    let (s, sp, d, dp) = tuple6(&out);
    assert!(in_pool6(s, sp), "[{s}]:{sp} from the pool");
    assert_eq!((d, dp), (REMOTE6, 80));
    let (vif, back) = b
        .run(FABRIC, &frame6(REMOTE6, s, P::Syn, 80, sp))
        .expect("the reply");
    assert_eq!(
        (vif, tuple6(&back)),
        (POD_A, (REMOTE6, 80, POD_A_IP6, 5555))
    );
    let flows = b.policies.table().flows(None, 16, 0).flows;
    let fwd = flows.iter().find(|f| !f.is_reverse).expect("forward entry");
    let t = fwd.nat.expect("translated tuple");
    assert_eq!((t.vrf, t.src, t.sport), (0, s.to_bits(), sp));
    // An ICMPv6 error about it comes back to the pod, quote and all.
    let (vif, err) = b
        .run(FABRIC, &icmp6_error(REMOTE6, s, 1, &out))
        .expect("the error");
    assert_eq!(vif, POD_A);
    assert_eq!(error6(&err), (REMOTE6, POD_A_IP6, POD_A_IP6, 5555));

    let (_, echo) = b
        .run(POD_A, &frame6(POD_A_IP6, REMOTE6, P::Echo, 77, 0))
        .expect("the ping out");
    let (es, id, _, _) = tuple6(&echo);
    assert!(in_pool6(es, id), "[{es}] id {id} from the pool");
    let (vif, echo_back) = b
        .run(FABRIC, &frame6(REMOTE6, es, P::EchoReply, id, 0))
        .expect("the echo reply");
    assert_eq!(
        (vif, tuple6(&echo_back)),
        (POD_A, (REMOTE6, 77, POD_A_IP6, 77))
    );
    let mut pairs = std::collections::HashSet::from([(s, sp), (es, id)]);
    for sport in 1..=2 {
        let (_, u) = b
            .run(POD_A, &frame6(POD_A_IP6, REMOTE6, P::Udp, sport, 53))
            .expect("out");
        let (us, up, _, _) = tuple6(&u);
        assert!(in_pool6(us, up));
        assert!(pairs.insert((us, up)), "[{us}]:{up} taken twice");
    }
    assert_eq!(b.nat.pool("egress6").unwrap().in_use, 4);
    assert_eq!(
        b.run(POD_A, &frame6(POD_A_IP6, REMOTE6, P::Udp, 3, 53)),
        None
    );
    assert_eq!(b.drops(DropReason::NatPoolExhausted), 1);
    assert_eq!(b.nat.pool("egress6").unwrap().exhausted, 1);
    // IPv4 from the VRF: its pool is IPv6 now.
    assert_eq!(b.run(POD_A, &frame(POD_A_IP, REMOTE, P::Udp, 1, 53)), None);
    assert_eq!(b.drops(DropReason::NatUnsupported), 1);
    assert_eq!(b.pool_in_use(), 0, "the IPv4 pool untouched");
    // Aged: every pair back.
    let table = b.policies.table().clone();
    table.age_slice(b.now + 5000, table.buckets());
    assert_eq!(b.nat.pool("egress6").unwrap().in_use, 0);
}

/// Hairpin: pod A reaches pod B, of its own VRF, through B's floating IP. The flow never
/// leaves: it reaches B from A's outside address (a pool pair; over IPv6, A's own floating
/// IP) and B's replies come back to A from the floating IP, both ends rewritten both ways
/// (checksums etherparse's), even with no route in the VRF to the pool address (only one to
/// the floating IP). Removing the floating IP removes the flow and gives its pair back.
#[test]
fn a_pod_reaches_a_pod_of_its_vrf_through_its_floating_ip_and_back() {
    let mut b = bed();
    with_floating_ip_routed(&b);
    let (vif, there) = b
        .run(POD_A, &frame(POD_A_IP, FLOATING, P::Udp, 5000, 53))
        .expect("to pod B");
    assert_eq!(vif, POD_B);
    assert_eq!(&there[0..6], &POD_B_MAC.0, "addressed to pod B");
    let (s, sp, d, dp) = tuple(&there);
    assert!(in_pool(s, sp), "{s}:{sp} from the pool");
    assert_eq!((d, dp), (POD_B_IP, 53));
    let (vif, back) = b
        .run(POD_B, &frame(POD_B_IP, s, P::Udp, 53, sp))
        .expect("the reply to pod A");
    assert_eq!(vif, POD_A);
    assert_eq!(tuple(&back), (FLOATING, 53, POD_A_IP, 5000));
    // Echo: the identifier from the pool there, A's own back.
    let (_, echo) = b
        .run(POD_A, &frame(POD_A_IP, FLOATING, P::Echo, 7, 0))
        .expect("the ping to pod B");
    let (es, id, ed, _) = tuple(&echo);
    assert!(in_pool(es, id) && ed == POD_B_IP, "{es} id {id} to {ed}");
    let (vif, reply) = b
        .run(POD_B, &frame(POD_B_IP, es, P::EchoReply, id, 0))
        .expect("the echo reply to pod A");
    assert_eq!((vif, tuple(&reply)), (POD_A, (FLOATING, 7, POD_A_IP, 7)));
    assert_eq!(b.pool_in_use(), 2);
    assert_eq!(b.stats.snapshot().nat_translated, 4);
    // The floating IP goes: so do the hairpin flows, their pairs back in the pool.
    b.nat.del_floating(FLOATING.into()).unwrap();
    assert_eq!(b.pool_in_use(), 0);

    // IPv6: A leaves from its own floating IPv6 to B's.
    let a6 = Ipv6Addr::new(0x2001, 0xdb8, 0x64, 0, 0, 0, 0, 0xca);
    for (outside, inside) in [(FLOATING6, POD_B_IP6), (a6, POD_A_IP6)] {
        b.nat
            .set_floating(FloatingIp {
                outside: outside.into(),
                vrf: VRF as u16,
                inside: inside.into(),
            })
            .unwrap();
    }
    b.tables
        .add_route(
            VRF,
            IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 0x64, 0, 0, 0, 0, 0)),
            64,
            RouteTarget {
                nexthop: NH_FABRIC,
                label: None,
            },
        )
        .unwrap();
    let (vif, there) = b
        .run(POD_A, &frame6(POD_A_IP6, FLOATING6, P::Syn, 6000, 80))
        .expect("to pod B");
    assert_eq!((vif, tuple6(&there)), (POD_B, (a6, 6000, POD_B_IP6, 80)));
    let (vif, back) = b
        .run(POD_B, &frame6(POD_B_IP6, a6, P::Syn, 80, 6000))
        .expect("the reply to pod A");
    assert_eq!(
        (vif, tuple6(&back)),
        (POD_A, (FLOATING6, 80, POD_A_IP6, 6000))
    );
    assert_eq!(b.pool_in_use(), 0);
}

/// An ICMP error from pod B about pod A's datagram through the hairpin (B's port
/// unreachable, to A's pool pair, which the VRF does not route) reaches A from the floating
/// IP, quoting A's datagram as A sent it (A's address and port, to the floating IP).
#[test]
fn a_port_unreachable_through_the_hairpin_reaches_the_client_from_the_floating_ip() {
    let mut b = bed();
    with_floating_ip_routed(&b);
    let (_, there) = b
        .run(POD_A, &frame(POD_A_IP, FLOATING, P::Udp, 5000, 53))
        .expect("to pod B");
    let (s, _, _, _) = tuple(&there);
    let err = icmp_error_between(POD_B_MAC, VROUTER_MAC, POD_B_IP, s, 3, &there);
    let (vif, out) = b.run(POD_B, &err).expect("the error to pod A");
    assert_eq!(vif, POD_A);
    let p = SlicedPacket::from_ethernet(&out).unwrap();
    let Some(NetSlice::Ipv4(ip4)) = &p.net else {
        panic!("not IPv4")
    };
    let h = ip4.header().to_header();
    assert_eq!(h.header_checksum, h.calc_header_checksum(), "IPv4 checksum");
    assert_eq!(
        (Ipv4Addr::from(h.source), Ipv4Addr::from(h.destination)),
        (FLOATING, POD_A_IP),
        "from the floating IP to pod A"
    );
    let Some(TransportSlice::Icmpv4(i)) = &p.transport else {
        panic!("not ICMP")
    };
    assert_eq!(
        i.checksum(),
        i.header().icmp_type.calc_checksum(i.payload()),
        "ICMP checksum"
    );
    assert_eq!(quoted_tuple(&out), (POD_A_IP, 5000, FLOATING, 53));
}
