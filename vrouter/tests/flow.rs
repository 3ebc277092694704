//! The flow stage through the real pipeline: policies, stateful replies, policy changes, aging
//! and a full table, for TCP / UDP / ICMP over IPv4 and IPv6.

mod common;

use common::*;
use etherparse::PacketBuilder;
use std::net::IpAddr;
use std::sync::Arc;
use vrouter::flow::{
    Action, Cidr, FlowConfig, FlowStage, FlowTable, FlowTimeouts, FlowVerdict, Policies, Policy,
    Rule,
};
use vrouter::pipeline::{Pipeline, TxBatches};
use vrouter::tables::Tables;
use vrouter::{DropReason, MacAddr, StatsRegistry, VecBuf};

const V6_A: &str = "2001:db8:1::a";
const V6_B: &str = "2001:db8:1::b";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum P {
    /// TCP with these flags.
    Tcp(Flags),
    Udp,
    /// ICMP / ICMPv6 echo request (true) or reply (false).
    Echo(bool),
    /// ICMP / ICMPv6 destination unreachable (host / address).
    Unreachable,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Flags {
    Syn,
    SynAck,
    Ack,
    Fin,
}

/// A frame from `from`'s MAC to the vrouter.
fn frame(from: MacAddr, src: &str, dst: &str, p: P, sport: u16, dport: u16) -> Vec<u8> {
    let src: IpAddr = src.parse().unwrap();
    let dst: IpAddr = dst.parse().unwrap();
    let eth = PacketBuilder::ethernet2(from.0, VROUTER_MAC.0);
    let ipb = match (src, dst) {
        (IpAddr::V4(s), IpAddr::V4(d)) => eth.ipv4(s.octets(), d.octets(), 64),
        (IpAddr::V6(s), IpAddr::V6(d)) => eth.ipv6(s.octets(), d.octets(), 64),
        _ => panic!("mixed families"),
    };
    let v6 = src.is_ipv6();
    let mut v = Vec::new();
    let payload = b"flow test payload";
    match p {
        P::Tcp(f) => {
            let t = ipb.tcp(sport, dport, 1000, 64000);
            let t = match f {
                Flags::Syn => t.syn(),
                Flags::SynAck => t.syn().ack(1),
                Flags::Ack => t.ack(1),
                Flags::Fin => t.fin().ack(1),
            };
            t.write(&mut v, payload).unwrap()
        }
        P::Udp => ipb.udp(sport, dport).write(&mut v, payload).unwrap(),
        P::Echo(req) => match (v6, req) {
            (false, true) => ipb.icmpv4_echo_request(sport, 1).write(&mut v, payload),
            (false, false) => ipb.icmpv4_echo_reply(sport, 1).write(&mut v, payload),
            (true, true) => ipb.icmpv6_echo_request(sport, 1).write(&mut v, payload),
            (true, false) => ipb.icmpv6_echo_reply(sport, 1).write(&mut v, payload),
        }
        .unwrap(),
        P::Unreachable if v6 => ipb
            .icmpv6(etherparse::Icmpv6Type::DestinationUnreachable(
                etherparse::icmpv6::DestUnreachableCode::Address,
            ))
            .write(&mut v, payload)
            .unwrap(),
        P::Unreachable => ipb
            .icmpv4(etherparse::Icmpv4Type::DestinationUnreachable(
                etherparse::icmpv4::DestUnreachableHeader::Host,
            ))
            .write(&mut v, payload)
            .unwrap(),
    }
    v
}

struct FlowBed {
    tables: Arc<Tables>,
    stats: StatsRegistry,
    policies: Policies,
    pipe: Pipeline<FlowStage>,
    out: TxBatches<VecBuf>,
    now: u64,
}

fn flow_bed(entries: usize) -> FlowBed {
    let tables = tables();
    let stats = StatsRegistry::default();
    let table = Arc::new(
        FlowTable::new(FlowConfig {
            entries,
            timeouts: FlowTimeouts {
                tcp_established: 10_000,
                tcp_closing: 100,
                udp: 1_000,
                icmp: 500,
                other: 1_000,
            },
        })
        .unwrap(),
    );
    let policies = Policies::new(table);
    let pipe = Pipeline::new(
        tables.clone(),
        stats.new_core(),
        policies.stage(tables.clone()),
    );
    FlowBed {
        tables,
        stats,
        policies,
        pipe,
        out: TxBatches::new(64),
        now: 0,
    }
}

impl FlowBed {
    /// Send one frame in on `vif`: the vif it went out of, or the drop reason.
    fn send(&mut self, vif: u16, frame: &[u8]) -> Result<u16, DropReason> {
        self.out.clear();
        self.pipe.flow_hook().begin(vif, self.now);
        let before = self.stats.snapshot();
        self.pipe
            .process(vif, [VecBuf::from_frame(frame)], &mut self.out);
        if self.out.dropped.len() == 1 {
            let after = self.stats.snapshot();
            let r = DropReason::ALL
                .iter()
                .copied()
                .find(|&r| after.drop_count(r) > before.drop_count(r))
                .expect("a drop is counted");
            return Err(r);
        }
        let touched = self.out.touched();
        assert_eq!(touched.len(), 1, "one output queue: {touched:?}");
        Ok(touched[0])
    }

    fn table(&self) -> &FlowTable {
        self.policies.table()
    }

    fn flow_drops(&self) -> u64 {
        self.stats.snapshot().drop_count(DropReason::FlowDrop)
    }
}

fn rule(
    action: Action,
    proto: Option<u8>,
    cidr: Option<(&str, u8)>,
    ports: Option<(u16, u16)>,
) -> Rule {
    Rule {
        action,
        proto,
        cidr: cidr.map(|(a, l)| Cidr::new(a.parse().unwrap(), l).unwrap()),
        ports,
    }
}

/// Pod B accepts only what its egress rules allow (traffic the vrouter sends to it).
fn only_allow_to_b(rules: Vec<Rule>) -> Policy {
    Policy {
        default: Action::Deny,
        ingress: vec![rule(Action::Allow, None, None, None)],
        egress: rules,
    }
}

fn addrs(v6: bool) -> (&'static str, &'static str) {
    if v6 {
        (V6_A, V6_B)
    } else {
        ("198.18.1.10", "198.18.1.11")
    }
}

#[test]
fn vifs_without_policy_skip_the_flow_table() {
    let mut bed = flow_bed(1024);
    let (a, b) = addrs(false);
    let f = frame(POD_A_MAC, a, b, P::Udp, 40000, 53);
    assert_eq!(bed.send(POD_A, &f), Ok(POD_B));
    // A policy on an unrelated vif does not pull these vifs into the table either.
    bed.policies.set(7, Some(only_allow_to_b(vec![]))).unwrap();
    assert_eq!(bed.send(POD_A, &f), Ok(POD_B));
    assert_eq!(bed.table().stats().created, 0);
    assert_eq!(bed.table().stats().active, 0);
}

#[test]
fn a_forwarding_core_holds_table_capacity_in_chunks_and_gives_it_back_when_it_stops() {
    // Large enough for the stage to reserve in chunks rather than per setup.
    let mut bed = flow_bed(1 << 16);
    let (a, b) = addrs(false);
    bed.policies
        .set(
            POD_B,
            Some(only_allow_to_b(vec![rule(Action::Allow, None, None, None)])),
        )
        .unwrap();
    for port in 40000..40003 {
        let f = frame(POD_A_MAC, a, b, P::Udp, port, 53);
        assert_eq!(bed.send(POD_A, &f), Ok(POD_B));
    }
    let table = bed.table();
    assert_eq!((table.stats().active, table.stats().created), (6, 3));
    let held = table.reserved_entries() - table.stats().active;
    assert!(held > 0, "the stage holds a reserve for its next setups");
    let FlowBed { pipe, policies, .. } = bed;
    drop(pipe);
    assert_eq!(policies.table().reserved_entries(), 6);
}

#[test]
fn agent_flows_are_trapped_until_the_agent_decides_them() {
    use vrouter::flow::FlowKey;
    use vrouter::pipeline::{Trap, TrapReason};
    for v6 in [false, true] {
        let mut bed = flow_bed(1024);
        let (a, b) = addrs(v6);
        bed.policies
            .set(
                POD_A,
                Some(Policy {
                    default: Action::Agent,
                    ingress: vec![rule(Action::Deny, Some(6), None, Some((22, 22)))],
                    egress: vec![],
                }),
            )
            .unwrap();
        let dns = frame(POD_A_MAC, a, b, P::Udp, 40000, 53);
        let trap = |bed: &mut FlowBed, f: &[u8]| {
            bed.out.clear();
            bed.pipe.flow_hook().begin(POD_A, bed.now);
            let drops = bed.stats.snapshot().total_drops();
            bed.pipe
                .process(POD_A, [VecBuf::from_frame(f)], &mut bed.out);
            assert_eq!(bed.stats.snapshot().total_drops(), drops);
            assert!(bed.out.touched().is_empty() && bed.out.dropped.is_empty());
            assert_eq!(bed.out.agent.len(), 1);
            bed.out.agent_traps[0]
        };
        let want = Trap {
            reason: TrapReason::NewFlow,
            vif: POD_A,
            vrf: VRF as u16,
        };
        assert_eq!(trap(&mut bed, &dns), want);
        // Undecided: the next packet too, and nothing is installed.
        assert_eq!(trap(&mut bed, &dns), want);
        assert_eq!(bed.table().stats().active, 0);
        // A deny rule still wins over the agent.
        let ssh = frame(POD_A_MAC, a, b, P::Tcp(Flags::Syn), 40000, 22);
        assert_eq!(bed.send(POD_A, &ssh), Err(DropReason::FlowDrop));
        // The agent allows the DNS flow: it passes, and its replies too.
        let ip = |s: &str| -> u128 {
            match s.parse::<IpAddr>().unwrap() {
                IpAddr::V4(x) => u128::from(u32::from(x)),
                IpAddr::V6(x) => u128::from(x),
            }
        };
        let key = |proto, sport, dport| FlowKey {
            vrf: VRF as u16,
            v6,
            proto,
            src: ip(a),
            dst: ip(b),
            sport,
            dport,
        };
        let udp = 17;
        bed.policies
            .install_decided(&bed.tables, key(udp, 40000, 53), POD_A, true, bed.now)
            .unwrap();
        assert_eq!(bed.send(POD_A, &dns), Ok(POD_B));
        let reply = frame(POD_B_MAC, b, a, P::Udp, 53, 40000);
        assert_eq!(bed.send(POD_B, &reply), Ok(POD_A));
        // And denies another: dropped without asking again.
        let other = frame(POD_A_MAC, a, b, P::Udp, 40001, 53);
        assert_eq!(trap(&mut bed, &other), want);
        bed.policies
            .install_decided(&bed.tables, key(udp, 40001, 53), POD_A, false, bed.now)
            .unwrap();
        assert_eq!(bed.send(POD_A, &other), Err(DropReason::FlowDrop));
    }
}

#[test]
fn denied_flow_is_dropped_and_counted() {
    for v6 in [false, true] {
        let mut bed = flow_bed(1024);
        let (a, b) = addrs(v6);
        let proto = Some(6);
        bed.policies
            .set(
                POD_B,
                Some(Policy {
                    default: Action::Allow,
                    ingress: vec![],
                    egress: vec![rule(Action::Deny, proto, None, Some((22, 22)))],
                }),
            )
            .unwrap();
        let ssh = frame(POD_A_MAC, a, b, P::Tcp(Flags::Syn), 40000, 22);
        assert_eq!(bed.send(POD_A, &ssh), Err(DropReason::FlowDrop));
        assert_eq!(bed.send(POD_A, &ssh), Err(DropReason::FlowDrop));
        assert_eq!(bed.flow_drops(), 2);
        let flows = bed.table().flows(None, 10, 0).flows;
        assert_eq!(
            flows.len(),
            1,
            "a denied flow is installed alone: {flows:?}"
        );
        assert_eq!(flows[0].verdict, FlowVerdict::Drop);
        assert_eq!(flows[0].packets, 2);
        assert_eq!((flows[0].in_vif, flows[0].out_vif), (POD_A, POD_B));
        // Another port of the same pair is allowed.
        let web = frame(POD_A_MAC, a, b, P::Tcp(Flags::Syn), 40000, 80);
        assert_eq!(bed.send(POD_A, &web), Ok(POD_B));
        assert_eq!(bed.table().stats().created, 2);
    }
}

#[test]
fn allowed_flows_and_their_replies_pass_but_unsolicited_traffic_does_not() {
    for v6 in [false, true] {
        for (proto, p, reply, port) in [
            (6u8, P::Tcp(Flags::Syn), P::Tcp(Flags::SynAck), 80u16),
            (17, P::Udp, P::Udp, 53),
            (if v6 { 58 } else { 1 }, P::Echo(true), P::Echo(false), 0),
        ] {
            let ctx = format!("v6={v6} proto={proto}");
            let mut bed = flow_bed(1024);
            let (a, b) = addrs(v6);
            let net = if v6 {
                ("2001:db8:1::", 64)
            } else {
                ("198.18.1.0", 24)
            };
            let ports = (port != 0).then_some((port, port));
            bed.policies
                .set(
                    POD_B,
                    Some(only_allow_to_b(vec![rule(
                        Action::Allow,
                        Some(proto),
                        Some(net),
                        ports,
                    )])),
                )
                .unwrap();
            let (sp, dp) = if port == 0 { (7, 7) } else { (40000, port) };
            let into_b = frame(POD_A_MAC, a, b, p, sp + 1, dp);
            if port != 0 {
                let wrong_port = frame(POD_A_MAC, a, b, p, sp, dp + 1);
                assert_eq!(
                    bed.send(POD_A, &wrong_port),
                    Err(DropReason::FlowDrop),
                    "{ctx}"
                );
            }
            let allowed = frame(POD_A_MAC, a, b, p, sp, dp);
            assert_eq!(bed.send(POD_A, &allowed), Ok(POD_B), "{ctx}");
            let reply_f = frame(POD_B_MAC, b, a, reply, dp, sp);
            for _ in 0..3 {
                assert_eq!(bed.send(POD_B, &reply_f), Ok(POD_A), "{ctx}: reply");
            }
            assert_eq!(
                bed.send(POD_A, &into_b),
                Ok(POD_B),
                "{ctx}: a second allowed flow"
            );
            // From outside the allowed prefix into B: denied.
            let stranger = if v6 { "2001:db8:3::5" } else { "198.18.3.5" };
            let outside = frame(POD_A_MAC, stranger, b, p, sp, dp);
            assert_eq!(
                bed.send(POD_A, &outside),
                Err(DropReason::FlowDrop),
                "{ctx}: outside cidr"
            );
            // The reply direction's counters are on the reverse entry.
            let flows = bed.table().flows(None, 100, 0).flows;
            let rev = flows
                .iter()
                .find(|f| f.is_reverse && f.packets == 3)
                .unwrap_or_else(|| panic!("{ctx}: reverse entry with 3 packets in {flows:?}"));
            assert_eq!(rev.verdict, FlowVerdict::Forward);
            assert_eq!(rev.key.proto, proto);
            assert_eq!(rev.key.v6, v6);
        }
    }
}

/// The ICMP type is part of the key: an echo request and its reply are a flow and its reverse,
/// while an echo *request* from the other side, or an error message, does not ride on a ping
/// the pod sent (with only the identifier in the key, both matched the ping's reverse entry).
#[test]
fn icmp_echo_request_and_reply_pair_up_and_other_icmp_types_do_not_ride_on_them() {
    for v6 in [false, true] {
        let ctx = format!("v6={v6}");
        let mut bed = flow_bed(1024);
        let (a, b) = addrs(v6);
        // Pod A may send anything and receives only replies of what it sent.
        bed.policies
            .set(
                POD_A,
                Some(Policy {
                    default: Action::Deny,
                    ingress: vec![rule(Action::Allow, None, None, None)],
                    egress: vec![],
                }),
            )
            .unwrap();
        let id = 0;
        let request = frame(POD_A_MAC, a, b, P::Echo(true), id, 0);
        let reply = frame(POD_B_MAC, b, a, P::Echo(false), id, 0);
        let request_from_b = frame(POD_B_MAC, b, a, P::Echo(true), id, 0);
        let unreachable_from_b = frame(POD_B_MAC, b, a, P::Unreachable, 0, 0);

        // Before A pings: B's request and an unsolicited reply are denied.
        assert_eq!(
            bed.send(POD_B, &request_from_b),
            Err(DropReason::FlowDrop),
            "{ctx}"
        );
        assert_eq!(
            bed.send(POD_B, &reply),
            Err(DropReason::FlowDrop),
            "{ctx}: unsolicited reply"
        );
        // Denied flows are installed alone: flush them so the ping below is a new flow.
        bed.table().flush();

        assert_eq!(bed.send(POD_A, &request), Ok(POD_B), "{ctx}: request");
        for _ in 0..2 {
            assert_eq!(bed.send(POD_B, &reply), Ok(POD_A), "{ctx}: reply");
        }
        assert_eq!(bed.send(POD_A, &request), Ok(POD_B), "{ctx}: 2nd request");
        // Same hosts, same identifier, other types: not part of A's ping.
        assert_eq!(
            bed.send(POD_B, &request_from_b),
            Err(DropReason::FlowDrop),
            "{ctx}: B's echo request with A's identifier"
        );
        assert_eq!(
            bed.send(POD_B, &unreachable_from_b),
            Err(DropReason::FlowDrop),
            "{ctx}: destination unreachable"
        );

        // The ping is one flow and its reverse, keyed by identifier and type.
        let (req_type, reply_type) = if v6 { (128, 129) } else { (8, 0) };
        let flows = bed.table().flows(None, 100, 0).flows;
        let fwd = flows
            .iter()
            .find(|f| f.verdict == FlowVerdict::Forward && !f.is_reverse)
            .unwrap_or_else(|| panic!("{ctx}: no forward entry in {flows:?}"));
        let rev = flows
            .iter()
            .find(|f| Some(f.index) == fwd.reverse)
            .unwrap_or_else(|| panic!("{ctx}: no reverse entry in {flows:?}"));
        assert_eq!((fwd.key.sport, fwd.key.dport), (id, req_type), "{ctx}");
        assert_eq!((rev.key.sport, rev.key.dport), (id, reply_type), "{ctx}");
        assert_eq!(rev.key, fwd.key.reverse(), "{ctx}");
        assert_eq!((fwd.packets, rev.packets), (2, 2), "{ctx}");
        // The two other messages are flows of their own, denied.
        let denied: Vec<u16> = flows
            .iter()
            .filter(|f| f.verdict == FlowVerdict::Drop)
            .map(|f| f.key.dport)
            .collect();
        let unreachable_type = if v6 { 1 } else { 3 };
        assert_eq!(denied.len(), 2, "{ctx}: {flows:?}");
        assert!(
            denied.contains(&req_type) && denied.contains(&unreachable_type),
            "{ctx}: {denied:?}"
        );
    }
}

#[test]
fn a_policy_change_takes_effect_on_existing_flows() {
    let mut bed = flow_bed(1024);
    let (a, b) = addrs(false);
    let allow_udp = only_allow_to_b(vec![rule(Action::Allow, Some(17), None, None)]);
    bed.policies.set(POD_B, Some(allow_udp.clone())).unwrap();
    let f = frame(POD_A_MAC, a, b, P::Udp, 40000, 53);
    let r = frame(POD_B_MAC, b, a, P::Udp, 53, 40000);
    assert_eq!(bed.send(POD_A, &f), Ok(POD_B));
    assert_eq!(bed.send(POD_B, &r), Ok(POD_A));
    assert_eq!(bed.policies.get(POD_B), Some(allow_udp.clone()));

    // Now UDP into B is denied: setting the policy removes the flow, and its next packet is
    // set up again under the new rules.
    let removed = bed
        .policies
        .set(POD_B, Some(only_allow_to_b(vec![])))
        .unwrap();
    assert_eq!(removed, 1);
    assert_eq!(bed.send(POD_A, &f), Err(DropReason::FlowDrop));
    let flows = bed.table().flows(None, 10, 0).flows;
    assert_eq!(flows.len(), 1);
    assert_eq!(flows[0].verdict, FlowVerdict::Drop);

    // A change on another vif moves the generation: flows re-check lazily and keep their verdict.
    bed.policies
        .set(POD_A, Some(only_allow_to_b(vec![])))
        .unwrap();
    assert_eq!(bed.send(POD_A, &f), Err(DropReason::FlowDrop));
    bed.policies.set(POD_A, None).unwrap();

    // Allowed again: the denied flow is re-evaluated away and the next packet passes.
    bed.policies.set(POD_B, Some(allow_udp)).unwrap();
    assert_eq!(bed.send(POD_A, &f), Ok(POD_B));
    assert_eq!(bed.send(POD_B, &r), Ok(POD_A));

    // Removing the last policy takes the vifs off the table: their flows go.
    bed.policies.set(POD_B, None).unwrap();
    assert_eq!(bed.table().stats().active, 0);
    assert_eq!(bed.send(POD_A, &f), Ok(POD_B));
    assert_eq!(bed.table().stats().active, 0);
}

#[test]
fn a_flow_set_up_from_a_stale_snapshot_is_rechecked_on_its_next_packet() {
    // A core that loaded generation 1 may install its flow after the control side published
    // generation 2 and ran its re-evaluation scan: the flow's next packet re-checks it.
    let mut bed = flow_bed(1024);
    let (a, b) = addrs(true);
    let allow_all = only_allow_to_b(vec![rule(Action::Allow, None, None, None)]);
    bed.policies.set(POD_B, Some(allow_all)).unwrap();
    let stale_gen = bed.policies.snapshot().generation;
    bed.policies
        .set(POD_B, Some(only_allow_to_b(vec![])))
        .unwrap();
    let key = vrouter::flow::FlowKey {
        vrf: VRF as u16,
        v6: true,
        proto: 6,
        src: "2001:db8:1::a"
            .parse::<std::net::Ipv6Addr>()
            .unwrap()
            .into(),
        dst: "2001:db8:1::b"
            .parse::<std::net::Ipv6Addr>()
            .unwrap()
            .into(),
        sport: 40000,
        dport: 443,
    };
    bed.table()
        .insert(&vrouter::flow::table::NewFlow {
            key,
            verdict: FlowVerdict::Forward,
            with_reverse: true,
            in_vif: POD_A,
            out_vif: POD_B,
            policy_gen: stale_gen,
            now: 0,
            nat: None,
        })
        .unwrap();
    let f = frame(POD_A_MAC, a, b, P::Tcp(Flags::Syn), 40000, 443);
    assert_eq!(bed.send(POD_A, &f), Err(DropReason::FlowDrop));
    let flows = bed.table().flows(None, 10, 0).flows;
    assert_eq!(flows.len(), 1, "{flows:?}");
    assert_eq!(flows[0].verdict, FlowVerdict::Drop);
    assert_eq!(flows[0].policy_gen, bed.policies.snapshot().generation);
    // The reply direction of the stale flow is gone too.
    let r = frame(POD_B_MAC, b, a, P::Tcp(Flags::SynAck), 443, 40000);
    assert_eq!(bed.send(POD_B, &r), Ok(POD_A));
    assert!(bed
        .table()
        .flows(None, 10, 0)
        .flows
        .iter()
        .all(|f| f.in_vif == POD_B || f.verdict == FlowVerdict::Drop));
}

#[test]
fn aging_removes_idle_flows_on_time() {
    let mut bed = flow_bed(1024);
    let (a, b) = addrs(false);
    bed.policies
        .set(
            POD_B,
            Some(only_allow_to_b(vec![rule(Action::Allow, None, None, None)])),
        )
        .unwrap();
    let udp = frame(POD_A_MAC, a, b, P::Udp, 40000, 53);
    let udp_reply = frame(POD_B_MAC, b, a, P::Udp, 53, 40000);
    let icmp = frame(POD_A_MAC, a, b, P::Echo(true), 9, 0);
    let syn = frame(POD_A_MAC, a, b, P::Tcp(Flags::Syn), 40001, 80);
    let synack = frame(POD_B_MAC, b, a, P::Tcp(Flags::SynAck), 80, 40001);
    let ack = frame(POD_A_MAC, a, b, P::Tcp(Flags::Ack), 40001, 80);
    let fin = frame(POD_A_MAC, a, b, P::Tcp(Flags::Fin), 40001, 80);
    for (vif, f) in [
        (POD_A, &udp),
        (POD_A, &icmp),
        (POD_A, &syn),
        (POD_B, &synack),
        (POD_A, &ack),
    ] {
        assert!(bed.send(vif, f).is_ok());
    }
    assert_eq!(bed.table().stats().active, 6);
    let all = bed.table().buckets();
    // Replies refresh the pair.
    bed.now = 400;
    assert_eq!(bed.send(POD_B, &udp_reply), Ok(POD_A));
    assert_eq!(bed.table().age_slice(500, all), 0);
    assert_eq!(bed.table().age_slice(501, all), 1, "ICMP idle 501 > 500");
    assert_eq!(bed.table().age_slice(1400, all), 0);
    assert_eq!(bed.table().age_slice(1401, all), 1, "UDP idle since 400");
    assert_eq!(
        bed.table().age_slice(10_000, all),
        0,
        "established TCP lives 10 s"
    );
    bed.now = 10_000;
    assert_eq!(bed.send(POD_A, &fin), Ok(POD_B));
    assert_eq!(bed.table().age_slice(10_100, all), 0);
    assert_eq!(bed.table().age_slice(10_101, all), 1, "closing TCP: 100");
    let s = bed.table().stats();
    assert_eq!((s.aged, s.active, s.created), (3, 0, 3));
    // Aged flows are set up anew by their next packet.
    assert_eq!(bed.send(POD_A, &udp), Ok(POD_B));
    assert_eq!(bed.table().stats().created, 4);
}

#[test]
fn a_full_table_drops_new_flows_while_existing_ones_keep_forwarding() {
    let mut bed = flow_bed(8);
    let (a, b) = addrs(false);
    bed.policies
        .set(
            POD_B,
            Some(only_allow_to_b(vec![rule(Action::Allow, None, None, None)])),
        )
        .unwrap();
    let flow = |port| frame(POD_A_MAC, a, b, P::Udp, port, 53);
    for port in 1000..1004 {
        assert_eq!(bed.send(POD_A, &flow(port)), Ok(POD_B));
    }
    assert_eq!(bed.table().stats().active, 8);
    for port in 2000..2010 {
        assert_eq!(bed.send(POD_A, &flow(port)), Err(DropReason::FlowDrop));
    }
    assert_eq!(bed.table().stats().table_full, 10);
    for port in 1000..1004 {
        assert_eq!(bed.send(POD_A, &flow(port)), Ok(POD_B));
        let reply = frame(POD_B_MAC, b, a, P::Udp, 53, port);
        assert_eq!(bed.send(POD_B, &reply), Ok(POD_A));
    }
    // Once the old flows are idle past their timeout, a new flow evicts one.
    bed.now = 5_000;
    assert_eq!(bed.send(POD_A, &flow(3000)), Ok(POD_B));
    assert!(bed.table().stats().evicted >= 1);
    // And flush empties it.
    bed.table().flush();
    assert_eq!(bed.table().stats().active, 0);
    let _ = &bed.tables;
}

#[test]
fn the_egress_vif_is_resolved_through_tunnel_nexthops_and_ingress_rules_see_the_destination() {
    let mut bed = flow_bed(1024);
    let a = "198.18.1.10";
    // A policy on the fabric vif: the egress vif of a tunnel route is the fabric vif.
    bed.policies
        .set(
            FABRIC,
            Some(Policy {
                default: Action::Allow,
                ingress: vec![],
                egress: vec![rule(Action::Deny, Some(17), None, Some((53, 53)))],
            }),
        )
        .unwrap();
    let dns = frame(POD_A_MAC, a, "198.18.2.7", P::Udp, 40000, 53);
    let ntp = frame(POD_A_MAC, a, "198.18.2.7", P::Udp, 40000, 123);
    assert_eq!(bed.send(POD_A, &dns), Err(DropReason::FlowDrop));
    assert_eq!(bed.send(POD_A, &ntp), Ok(FABRIC));
    let flows = bed.table().flows(None, 10, 0).flows;
    assert!(flows
        .iter()
        .all(|f| f.out_vif == FABRIC && f.in_vif == POD_A));
    // Pod A's own ingress rules (packets the vrouter receives from A) match on the destination.
    bed.policies.set(FABRIC, None).unwrap();
    bed.policies
        .set(
            POD_A,
            Some(Policy {
                default: Action::Allow,
                ingress: vec![rule(Action::Deny, None, Some(("198.18.3.0", 24)), None)],
                egress: vec![],
            }),
        )
        .unwrap();
    let to_mpls = frame(POD_A_MAC, a, "198.18.3.7", P::Echo(true), 5, 0);
    let to_vxlan = frame(POD_A_MAC, a, "198.18.2.7", P::Echo(true), 5, 0);
    assert_eq!(bed.send(POD_A, &to_mpls), Err(DropReason::FlowDrop));
    assert_eq!(bed.send(POD_A, &to_vxlan), Ok(FABRIC));
    let _ = &bed.tables;
}

/// Driving the stage as the pipeline does — `prefetch` for a burst, then `on_lookup` — with
/// packets the pipeline drops in between (prefetched, never looked up), a burst dropped
/// whole, repeated flows and new flows among known ones, decides and counts exactly like
/// `on_lookup` alone.
#[test]
fn prefetched_bursts_decide_and_count_like_lookups_alone() {
    use vrouter::flow::FlowInfo;
    use vrouter::meta::{PacketMeta, L3};
    use vrouter::pipeline::{FlowAction, FlowHook};
    use vrouter::tables::RouteTarget;

    let target = RouteTarget {
        nexthop: NH_B,
        label: None,
    };
    let meta = |i: u32| {
        let v6 = i.is_multiple_of(3);
        PacketMeta {
            l3: if v6 { L3::Ipv6 } else { L3::Ipv4 },
            proto: if i.is_multiple_of(2) { 17 } else { 6 },
            src: if v6 {
                0x2001_0db8_0001_0000_0000_0000_0000_0000 | u128::from(i % 23)
            } else {
                u128::from(0xc612_0100u32 | (i % 23))
            },
            dst: if v6 {
                0x2001_0db8_0001_0000_0000_0000_0000_000b
            } else {
                u128::from(0xc612_010bu32)
            },
            sport: 40_000 + (i % 23) as u16,
            // Every fifth flow to a port the policy denies.
            dport: if (i % 23).is_multiple_of(5) { 53 } else { 80 },
            vrf: VRF as u16,
            l3_off: 14,
            l4_off: if v6 { 54 } else { 34 },
            ..PacketMeta::default()
        }
    };
    let policy = Policy {
        default: Action::Allow,
        ingress: vec![rule(Action::Deny, None, None, Some((53, 53)))],
        egress: vec![],
    };
    let stage = || {
        let t = Arc::new(
            FlowTable::new(FlowConfig {
                entries: 16_384,
                ..FlowConfig::default()
            })
            .unwrap(),
        );
        // Enough other flows that the stage prefetches (a small table stays cached and is not).
        for i in 0..4000u32 {
            let key = vrouter::flow::FlowKey {
                vrf: 9,
                v6: false,
                proto: 17,
                src: u128::from(0xc612_0000u32 | i),
                dst: u128::from(0xc612_ff01u32),
                sport: 1000,
                dport: 2000,
            };
            t.insert(&vrouter::flow::table::NewFlow {
                key,
                verdict: FlowVerdict::Forward,
                with_reverse: true,
                in_vif: POD_A,
                out_vif: POD_B,
                policy_gen: 0,
                now: 1,
                nat: None,
            })
            .unwrap();
        }
        let policies = Policies::new(t.clone());
        policies.set(POD_A, Some(policy.clone())).unwrap();
        let mut s = policies.stage(tables());
        s.begin(POD_A, 1);
        assert!(s.prefetches());
        (t, s)
    };
    let (t_burst, mut burst) = stage();
    let (t_alone, mut alone) = stage();
    let mut frame = [0u8; 128];
    let mut decided = 0;
    for b in 0..8u32 {
        let metas: Vec<PacketMeta> = (b * 32..b * 32 + 32).map(meta).collect();
        for m in &metas {
            burst.prefetch(m);
        }
        if b == 3 {
            continue; // the whole burst dropped before the flow stage
        }
        for (i, m) in metas.iter().enumerate() {
            if i % 7 == 3 {
                continue; // dropped between route lookup and flow stage
            }
            let x = burst.on_lookup(m, &mut frame, target);
            let y = alone.on_lookup(m, &mut frame, target);
            assert_eq!(x, y, "burst {b} packet {i}");
            let denied = m.dport == 53;
            assert_eq!(x == FlowAction::Drop, denied, "burst {b} packet {i}");
            decided += 1;
        }
    }
    assert!(decided > 150);
    let dump = |t: &FlowTable| {
        let mut v: Vec<(bool, u8, u16, u128, bool, u64)> = t
            .flows(Some(VRF as u16), usize::MAX, 0)
            .flows
            .iter()
            .map(|f: &FlowInfo| {
                let k = f.key;
                let fwd = f.verdict == FlowVerdict::Forward;
                (k.v6, k.proto, k.dport, k.src, fwd, f.packets)
            })
            .collect();
        v.sort();
        v
    };
    assert_eq!(dump(&t_burst), dump(&t_alone));
    assert_eq!(t_burst.stats().created, t_alone.stats().created);
    assert!(t_burst.stats().created > 23);
}

impl FlowBed {
    /// Send `frames` in on `vif` as one `process` call (one burst): how many went out of
    /// `POD_B` and how many were dropped.
    fn send_burst(&mut self, vif: u16, frames: &[Vec<u8>]) -> (usize, usize) {
        self.out.clear();
        self.pipe.flow_hook().begin(vif, self.now);
        self.pipe.process(
            vif,
            frames.iter().map(|f| VecBuf::from_frame(f)),
            &mut self.out,
        );
        (self.out.tx(POD_B).len(), self.out.dropped.len())
    }
}

#[test]
fn a_burst_counts_every_packet_and_a_policy_change_applies_from_the_next_burst() {
    // The flow stage takes the policies once per burst: every packet of a burst is counted
    // on its flow (many of one flow, two flows interleaved, with and without the burst's
    // prefetch path), and a policy set between two bursts decides the whole second one.
    for prefetch in [false, true] {
        let mut bed = flow_bed(1024);
        if prefetch {
            bed.pipe.flow_hook().always_prefetch();
        }
        let (a, b) = addrs(false);
        bed.policies
            .set(
                POD_B,
                Some(only_allow_to_b(vec![rule(
                    Action::Allow,
                    Some(17),
                    None,
                    None,
                )])),
            )
            .unwrap();
        let one = frame(POD_A_MAC, a, b, P::Udp, 40000, 53);
        let two = frame(POD_A_MAC, a, b, P::Udp, 40001, 53);
        let mut burst = vec![one.clone(); 20];
        burst.extend((0..12).flat_map(|_| [one.clone(), two.clone()]));
        assert_eq!(burst.len(), 44, "more than one pipeline burst of 32");
        for round in 1..=3u64 {
            bed.now += 1;
            assert_eq!(
                bed.send_burst(POD_A, &burst),
                (44, 0),
                "prefetch {prefetch}"
            );
            let flows = bed.table().flows(None, 10, 0).flows;
            let count = |sport: u16| {
                let f = flows
                    .iter()
                    .find(|f| !f.is_reverse && f.key.sport == sport)
                    .expect("the flow is installed");
                (f.packets, f.bytes, f.last_seen)
            };
            assert_eq!(
                count(40000),
                (32 * round, 32 * round * one.len() as u64, bed.now),
                "prefetch {prefetch}, round {round}"
            );
            assert_eq!(
                count(40001),
                (12 * round, 12 * round * two.len() as u64, bed.now),
                "prefetch {prefetch}, round {round}"
            );
        }
        // UDP into B denied between two bursts: the whole next burst is dropped.
        let drops = bed.flow_drops();
        bed.policies
            .set(POD_B, Some(only_allow_to_b(vec![])))
            .unwrap();
        assert_eq!(
            bed.send_burst(POD_A, &burst),
            (0, 44),
            "prefetch {prefetch}"
        );
        assert_eq!(bed.flow_drops() - drops, 44);
        // And allowed again from the burst after.
        bed.policies.set(POD_B, None).unwrap();
        assert_eq!(
            bed.send_burst(POD_A, &burst),
            (44, 0),
            "prefetch {prefetch}"
        );
    }
}
