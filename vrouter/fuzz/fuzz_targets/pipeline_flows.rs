//! The pipeline with the flow stage on: arbitrary frames set flows up, hit them, move TCP state,
//! fill a small table (full-table drops, eviction) while time passes, slices age and a vif's
//! policy comes and goes (re-evaluation of its flows). An input is a run of records, each the
//! ingress vif (fabric, two pods, unknown), a control byte, a little-endian u16 length and that
//! many frame bytes; every input starts from an empty table at time 0 with fixed hash keys, so
//! a crash replays. Control byte: low six bits advance the clock by that many 40 ms steps,
//! bit 6 ages a slice, bit 7 swaps pod 1's policy for none or back. Vif byte: the low two bits
//! pick the vif, bit 4 detaches VRF 5 from source NAT or attaches it again, bit 5 removes pod
//! 1's floating IPs (198.51.100.200 for 198.18.1.10, 2001:db8:64::c8 for 2001:db8:1::a, the
//! remote side 2001:db8:ff::/64 out of the fabric; pod 2 reaches pod 1 through the IPv4 one by
//! hairpin) or sets them again, bit 3 takes backend
//! 198.18.1.10:8081 out of service VIP 198.18.1.100:80/TCP (VRF 5, also over 198.18.1.11:8080)
//! or puts it back: after every call no flow to the VIP leaves for a backend it lacks; bit 6
//! switches the VIP's balancing between the flow hash and least flows. An IPv6 VIP
//! [2001:db8:1::100]:80/TCP (over [2001:db8:1::b]:8080 and [2001:db8:1::a]:8081) follows the same
//! changes and is checked the same way.
//! Link-local service 169.254.169.254:80/TCP leads to 198.51.100.80:8775 out of the fabric, from
//! each pod vif's own 169.254.1.x.
//! Source NAT: VRF 5 leaves for 203.0.113.0/24 through a pool of four pairs (198.51.100.64,
//! ports 40000-40003), so flows take pairs, replies come back from the fabric, the pool runs
//! out and pairs come back as flows age, are evicted or are detached: after every call the
//! pairs in use are exactly the pool's NAT flows in the table.
//! Every input runs twice, on two tables: once a packet per `process` call without prefetch
//! (the plain path), once in bursts with the prefetch stash on (a record with control byte 0
//! joins the burst before it, up to 64 from one vif: two bursts of one `process` call).
//! Bursts, prefetching and the pipeline's per-burst memos must change nothing: the same frames
//! leave by the same places, byte for byte and in the same order, the drop and vif counters
//! agree, and the two tables hold the same flows in the same slots with the same state.
//! Run (bounded): `cargo +nightly fuzz run pipeline_flows -- -max_total_time=60` from `vrouter/`.
#![no_main]

use libfuzzer_sys::fuzz_target;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, OnceLock};
use vrouter::flow::{
    Action, Cidr, FlowConfig, FlowInfo, FlowStage, FlowStats, FlowTable, FlowTimeouts, Policies,
    Policy, Rule,
};
use vrouter::nat::{FloatingIp, LinkLocal, Nat, PoolRange, Service};
use vrouter::pipeline::{Pipeline, TxBatches};
use vrouter::stats::{StatsSnapshot, VifTotals};
use vrouter::tables::Tables;
use vrouter::{CoreStats, PacketBuf, StatsRegistry, VecBuf};

#[path = "../common/checks.rs"]
mod checks;
#[path = "../common/tables.rs"]
mod tables;

/// Flow entries: small, so the table fills and new flows meet the full-table path.
const ENTRIES: usize = 64;

/// Hash keys for every input's table (fixed, so a crash replays in another process).
const SEED: [u64; 6] = [
    0x9e37_79b9_7f4a_7c15,
    0xc2b2_ae3d_27d4_eb4f,
    0x1656_67b1_9e37_79f9,
    0x85eb_ca77_c2b2_ae63,
    0x27d4_eb2f_1656_67c5,
    0xff51_afd7_ed55_8ccd,
];

fn rule(
    action: Action,
    proto: Option<u8>,
    cidr: Option<(&str, u8)>,
    ports: Option<(u16, u16)>,
) -> Rule {
    Rule {
        action,
        proto,
        cidr: cidr.map(|(a, l)| Cidr::new(a.parse().expect("address"), l).expect("cidr")),
        ports,
    }
}

/// Pod 1: deny by default. From the pod (ingress): UDP to the benchmark range, ICMP (v4), and
/// anything but TCP to 2001:db8::/32. To the pod (egress): TCP to ports 80-90, ICMP and ICMPv6.
fn pod1_policy() -> Policy {
    Policy {
        default: Action::Deny,
        ingress: vec![
            rule(Action::Allow, Some(17), Some(("198.18.0.0", 15)), None),
            rule(Action::Allow, Some(1), None, None),
            rule(Action::Deny, Some(6), Some(("2001:db8::", 32)), None),
            rule(Action::Allow, None, Some(("2001:db8::", 32)), None),
        ],
        egress: vec![
            rule(Action::Allow, Some(6), None, Some((80, 90))),
            rule(Action::Allow, Some(1), None, None),
            rule(Action::Allow, Some(58), None, None),
        ],
    }
}

/// Pod 2: allow by default, but no DNS to it.
fn pod2_policy() -> Policy {
    Policy {
        default: Action::Allow,
        ingress: vec![],
        egress: vec![rule(Action::Deny, Some(17), None, Some((53, 53)))],
    }
}

/// Where a packet left: by a vif, to the host, or dropped.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Exit {
    Vif(u16),
    Host,
    Dropped,
}

/// The frames that left, by exit, in order.
type Exits = BTreeMap<Exit, Vec<Vec<u8>>>;

/// The first record of `rest`, if whole enough: its vif byte, control byte and frame (cut
/// short where the input ends), and what follows it.
fn record(rest: &[u8]) -> Option<(u8, u8, &[u8], &[u8])> {
    let [vif, ctl, l0, l1, tail @ ..] = rest else {
        return None;
    };
    let len = usize::from(u16::from_le_bytes([*l0, *l1])).min(tail.len());
    let (frame, next) = tail.split_at(len);
    Some((*vif, *ctl, frame, next))
}

/// Records joined into one `process` call at most: two pipeline bursts.
const MAX_GROUP: usize = 64;

/// The pod VRF, attached to source NAT.
const POD_VRF: u16 = 5;

/// Pod 1's floating IP.
const FLOATING: FloatingIp = FloatingIp {
    outside: IpAddr::V4(Ipv4Addr::new(198, 51, 100, 200)),
    vrf: POD_VRF,
    inside: IpAddr::V4(Ipv4Addr::new(198, 18, 1, 10)),
};
/// Pod 1's floating IPv6.
const FLOATING6: FloatingIp = FloatingIp {
    outside: IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 0x64, 0, 0, 0, 0, 0xc8)),
    vrf: POD_VRF,
    inside: IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 1, 0, 0, 0, 0, 0xa)),
};
/// The metadata service: 169.254.169.254:80/TCP from any pod to 198.51.100.80:8775 out of
/// the fabric (both ends translated).
const LINK_LOCAL: LinkLocal = LinkLocal {
    proto: 6,
    addr: 0xa9fe_a9fe,
    port: 80,
    service_addr: 0xc633_6450,
    service_port: 8775,
};

/// Service VIP 198.18.1.100:80/TCP of the pod VRF, over both pods (`all`) or pod 2 alone,
/// balanced by flow hash or by least flows.
fn service(all: bool, least_flows: bool) -> Service {
    let v4 = |a: u32| std::net::IpAddr::from(std::net::Ipv4Addr::from(a));
    let mut backends = vec![(v4(0xc612_010b), 8080)]; // 198.18.1.11
    if all {
        backends.push((v4(0xc612_010a), 8081)); // 198.18.1.10
    }
    Service {
        vrf: POD_VRF,
        proto: 6,
        addr: std::net::IpAddr::from(std::net::Ipv4Addr::from(VIP)),
        port: 80,
        backends,
        balance: if least_flows {
            vrouter::nat::Balance::LeastFlows
        } else {
            vrouter::nat::Balance::Hash
        },
    }
}

/// The VIP.
const VIP: u32 = 0xc612_0164; // 198.18.1.100

/// IPv6 VIP [2001:db8:1::100]:80/TCP of the pod VRF over [2001:db8:1::b]:8080 and (`all`)
/// [2001:db8:1::a]:8081: it follows the IPv4 VIP's backend and balance changes.
fn service6(all: bool, least_flows: bool) -> Service {
    let mut backends = vec![(std::net::IpAddr::from(std::net::Ipv6Addr::from(VIP6_NET | 0xb)), 8080)];
    if all {
        backends.push((std::net::IpAddr::from(std::net::Ipv6Addr::from(VIP6_NET | 0xa)), 8081));
    }
    Service {
        addr: std::net::IpAddr::from(std::net::Ipv6Addr::from(VIP6)),
        backends,
        ..service(all, least_flows)
    }
}

/// 2001:db8:1::/64 (routed to pod 1 in the pod VRF) and the IPv6 VIP in it.
const VIP6_NET: u128 = 0x2001_0db8_0001_0000_0000_0000_0000_0000;
const VIP6: u128 = VIP6_NET | 0x100;

/// The pool's address, as flow keys hold it.
const POOL_ADDR: u128 = 0xc633_6440; // 198.51.100.64

/// One of the two runs: its own flow table, policies, NAT store, pipeline and counters.
struct Side<'a> {
    policies: Policies,
    nat: Nat,
    pipe: Pipeline<FlowStage>,
    stats: &'a StatsRegistry,
}

impl<'a> Side<'a> {
    fn new(
        tables: &Arc<Tables>,
        stats: &'a (StatsRegistry, Arc<CoreStats>),
        prefetch: bool,
    ) -> Self {
        let table = Arc::new(
            FlowTable::with_fixed_seed(
                FlowConfig {
                    entries: ENTRIES,
                    timeouts: FlowTimeouts {
                        tcp_established: 2_000,
                        tcp_closing: 100,
                        udp: 1_000,
                        icmp: 500,
                        other: 1_000,
                    },
                },
                SEED,
            )
            .expect("flow table"),
        );
        let nat = Nat::new(table.clone());
        nat.set_pool(
            "egress",
            0,
            PoolRange {
                first: [198, 51, 100, 64].into(),
                last: [198, 51, 100, 64].into(),
                ports: (40000, 40003),
            },
        )
        .expect("pool");
        nat.attach(POD_VRF, "egress").expect("attach");
        nat.set_floating(FLOATING).expect("floating IP");
        nat.set_floating(FLOATING6).expect("floating IPv6");
        nat.set_service(service(true, false)).expect("service");
        nat.set_service(service6(true, false)).expect("IPv6 service");
        nat.set_link_local(LINK_LOCAL).expect("link-local service");
        let policies = Policies::new(table);
        policies.set(1, Some(pod1_policy())).expect("policy");
        policies.set(2, Some(pod2_policy())).expect("policy");
        let mut stage = policies.stage(tables.clone()).with_nat(&nat);
        if prefetch {
            stage.always_prefetch();
        }
        Side {
            pipe: Pipeline::new(tables.clone(), stats.1.clone(), stage),
            policies,
            nat,
            stats: &stats.0,
        }
    }

    /// Everything the run leaves behind besides the frames: drop and vif counters (summed
    /// over every input so far: both sides always run the same ones), the table's counters and
    /// every flow entry.
    fn state(&self) -> (StatsSnapshot, Vec<VifTotals>, FlowStats, Vec<FlowInfo>) {
        let table = self.policies.table();
        (
            self.stats.snapshot(),
            (0..4).map(|v| self.stats.vif(v)).collect(),
            table.stats(),
            // Every entry in one page: a table never holds more flows than its capacity.
            table.flows(None, table.capacity(), 0).flows,
        )
    }

    /// What the control and vif bytes ask for before a record, at `now`.
    fn control(
        &self,
        ctl: u8,
        now: u64,
        pod1_guarded: bool,
        nat_toggle: Option<bool>,
        floating_toggle: Option<bool>,
        backends: Option<(bool, bool)>,
    ) {
        if let Some((all, least_flows)) = backends {
            self.nat
                .set_service(service(all, least_flows))
                .expect("service");
            self.nat
                .set_service(service6(all, least_flows))
                .expect("IPv6 service");
        }
        match floating_toggle {
            Some(true) => {
                self.nat.set_floating(FLOATING).expect("floating IP");
                self.nat.set_floating(FLOATING6).expect("floating IPv6");
            }
            Some(false) => {
                self.nat
                    .del_floating(FLOATING.outside)
                    .expect("floating IP removed");
                self.nat
                    .del_floating(FLOATING6.outside)
                    .expect("floating IPv6 removed");
            }
            None => {}
        }
        match nat_toggle {
            Some(true) => {
                self.nat.attach(POD_VRF, "egress").expect("attach");
            }
            Some(false) => self.nat.detach(POD_VRF).expect("detach"),
            None => {}
        }
        if ctl & 0x40 != 0 {
            self.policies.table().age_slice(now, 16);
        }
        if ctl & 0x80 != 0 {
            self.policies
                .set(1, pod1_guarded.then(pod1_policy))
                .expect("policy");
        }
    }

    /// Run `frames` from `vif` as one `process` call; record where they went in `exits`.
    fn run(
        &mut self,
        vif: u16,
        now: u64,
        frames: &[&[u8]],
        out: &mut TxBatches<VecBuf>,
        exits: &mut Exits,
    ) {
        out.clear();
        let before = checks::Tally::read(self.stats, vif);
        self.pipe.flow_hook().begin(vif, now);
        self.pipe
            .process(vif, frames.iter().map(|f| VecBuf::from_frame(f)), out);
        let after = checks::Tally::read(self.stats, vif);
        checks::packets_accounted(out, frames.len(), before, after);
        let mut keep = |exit, bufs: &[VecBuf]| {
            exits
                .entry(exit)
                .or_default()
                .extend(bufs.iter().map(|b| b.data().to_vec()))
        };
        for &v in out.touched() {
            keep(Exit::Vif(v), out.tx(v));
        }
        keep(Exit::Host, &out.host);
        keep(Exit::Dropped, &out.dropped);
        // One core, a small table: reservations are exact, so what is held beyond the entries
        // in use is at most one setup's worth (a flow and its reverse).
        let table = self.policies.table();
        let s = table.stats();
        let reserved = table.reserved_entries();
        assert!(
            s.active <= reserved && reserved <= s.capacity && reserved - s.active <= 2,
            "{} flows active, {reserved} reserved, capacity {}",
            s.active,
            s.capacity
        );
        // Every pair taken is held by exactly one NAT flow: none leaks, none is held twice.
        let nat_flows = table
            .flows(None, table.capacity(), 0)
            .flows
            .iter()
            .filter(|f| !f.is_reverse && f.nat.is_some_and(|t| t.src == POOL_ADDR))
            .count();
        let pool = self.nat.pool("egress").expect("pool");
        assert_eq!(pool.in_use, nat_flows as u64, "pairs in use = NAT flows");
        // Every flow to a VIP (IPv4 or IPv6) leaves for one of its backends now.
        for svc in self.nat.services() {
            let (v6, vip) = vrouter::nat::key_bits(svc.addr);
            let live: Vec<(u128, u16)> = svc
                .backends
                .iter()
                .map(|&(a, p)| (vrouter::nat::key_bits(a).1, p))
                .collect();
            for f in table.flows(None, table.capacity(), 0).flows {
                if f.is_reverse
                    || f.key.v6 != v6
                    || f.key.dst != vip
                    || f.key.dport != 80
                    || f.key.proto != 6
                {
                    continue;
                }
                if let Some(to) = f.nat {
                    assert!(
                        live.contains(&(to.dst, to.dport)),
                        "a flow to VIP {} leaves for {:?}, not a backend",
                        svc.addr,
                        to
                    );
                }
            }
        }
    }
}

fuzz_target!(|data: &[u8]| {
    // Built once: the forwarding tables (never changed), the drop counters and the output
    // queues (4096 of them: too slow to allocate per input; emptied before each call).
    // Flow state starts afresh every input.
    type Counters = (StatsRegistry, Arc<CoreStats>);
    static SHARED: OnceLock<(Arc<Tables>, [Counters; 2], Mutex<TxBatches<VecBuf>>)> =
        OnceLock::new();
    let (tables, [plain_stats, burst_stats], out) = SHARED.get_or_init(|| {
        let counters = || {
            let r = StatsRegistry::default();
            let core = r.new_core();
            (r, core)
        };
        (
            tables::tables(),
            [counters(), counters()],
            Mutex::new(TxBatches::new(32)),
        )
    });
    let mut out = out.lock().unwrap_or_else(|e| e.into_inner());
    let mut plain = Side::new(tables, plain_stats, false);
    let mut burst = Side::new(tables, burst_stats, true);
    let mut now = 0u64;
    let mut pod1_guarded = true;
    let mut nat_attached = true;
    let mut floating_set = true;
    let mut all_backends = true;
    let mut least_flows = false;

    let mut rest = data;
    let mut group: Vec<&[u8]> = Vec::with_capacity(MAX_GROUP);
    while let Some((vif, ctl, frame, next)) = record(rest) {
        rest = next;
        let nat_toggle = (vif & 0x10 != 0).then(|| {
            nat_attached = !nat_attached;
            nat_attached
        });
        let floating_toggle = (vif & 0x20 != 0).then(|| {
            floating_set = !floating_set;
            floating_set
        });
        if vif & 0x08 != 0 {
            all_backends = !all_backends;
        }
        if vif & 0x40 != 0 {
            least_flows = !least_flows;
        }
        let backends = (vif & 0x48 != 0).then_some((all_backends, least_flows));
        let vif = u16::from(vif % 4);
        now += u64::from(ctl & 0x3f) * 40;
        if ctl & 0x80 != 0 {
            pod1_guarded = !pod1_guarded;
        }
        plain.control(
            ctl,
            now,
            pod1_guarded,
            nat_toggle,
            floating_toggle,
            backends,
        );
        burst.control(
            ctl,
            now,
            pod1_guarded,
            nat_toggle,
            floating_toggle,
            backends,
        );
        // The records of a burst: this one and those after it with control byte 0.
        group.clear();
        group.push(frame);
        while let Some((v, 0, frame, next)) = record(rest) {
            if u16::from(v % 4) != vif || v & 0x78 != 0 || group.len() == MAX_GROUP {
                break;
            }
            group.push(frame);
            rest = next;
        }
        let (mut one_by_one, mut together) = (Exits::new(), Exits::new());
        for f in &group {
            plain.run(vif, now, &[f], &mut out, &mut one_by_one);
        }
        burst.run(vif, now, &group, &mut out, &mut together);
        assert_eq!(
            one_by_one,
            together,
            "a burst of {} from vif {vif} left as the packets one by one",
            group.len()
        );
        assert_eq!(
            plain.state(),
            burst.state(),
            "the same counters, table counters and flow entries after a burst of {}",
            group.len()
        );
    }
});
