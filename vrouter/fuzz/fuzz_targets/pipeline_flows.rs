//! The pipeline with the flow stage on: arbitrary frames set flows up, hit them, move TCP state,
//! fill a small table (full-table drops, eviction) while time passes, slices age and a vif's
//! policy comes and goes (re-evaluation of its flows). Input: the ingress vif (fabric, two pods,
//! unknown), a control byte, then the frame. Control byte: low six bits advance the clock by
//! that many 40 ms steps, bit 6 ages a slice, bit 7 swaps pod 1's policy for none or back.
//! Run (bounded): `cargo +nightly fuzz run pipeline_flows -- -max_total_time=60` from `vrouter/`.
#![no_main]

use libfuzzer_sys::fuzz_target;
use std::sync::{Arc, OnceLock};
use vrouter::flow::{
    Action, Cidr, FlowConfig, FlowStage, FlowTable, FlowTimeouts, Policies, Policy, Rule,
};
use vrouter::pipeline::{Pipeline, TxBatches};
use vrouter::{PacketBuf, StatsRegistry, VecBuf};

#[path = "../common/tables.rs"]
mod tables;

/// Flow entries: small, so the table fills and new flows meet the full-table path.
const ENTRIES: usize = 64;

struct Bed {
    policies: Policies,
    pipe: Pipeline<FlowStage>,
    out: TxBatches<VecBuf>,
    now: u64,
    pod1_guarded: bool,
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
        cidr: cidr.map(|(a, l)| Cidr::new(a.parse().expect("address"), l).expect("cidr")),
        ports,
    }
}

/// Pod 1: deny by default. From the pod (ingress): UDP to the benchmark range, ICMP, anything
/// but TCP to 2001:db8::/32. To the pod (egress): TCP to ports 80-90, ICMP and ICMPv6.
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

fn bed() -> Bed {
    let tables = tables::tables();
    let table = Arc::new(
        FlowTable::new(FlowConfig {
            entries: ENTRIES,
            timeouts: FlowTimeouts {
                tcp_established: 2_000,
                tcp_closing: 100,
                udp: 1_000,
                icmp: 500,
                other: 1_000,
            },
        })
        .expect("flow table"),
    );
    let policies = Policies::new(table);
    policies.set(1, Some(pod1_policy())).expect("policy");
    policies.set(2, Some(pod2_policy())).expect("policy");
    let stats = StatsRegistry::default();
    let pipe = Pipeline::new(tables.clone(), stats.new_core(), policies.stage(tables));
    Bed {
        policies,
        pipe,
        out: TxBatches::new(32),
        now: 0,
        pod1_guarded: true,
    }
}

fuzz_target!(|data: &[u8]| {
    static BED: OnceLock<std::sync::Mutex<Bed>> = OnceLock::new();
    let bed = BED.get_or_init(|| std::sync::Mutex::new(bed()));
    let [vif, ctl, frame @ ..] = data else {
        return;
    };
    let mut bed = bed.lock().unwrap_or_else(|e| e.into_inner());
    let Bed {
        policies,
        pipe,
        out,
        now,
        pod1_guarded,
    } = &mut *bed;
    *now += u64::from(ctl & 0x3f) * 40;
    if ctl & 0x40 != 0 {
        policies.table().age_slice(*now, 16);
    }
    if ctl & 0x80 != 0 {
        *pod1_guarded = !*pod1_guarded;
        let p = pod1_guarded.then(pod1_policy);
        policies.set(1, p).expect("policy");
    }
    out.clear();
    let vif = u16::from(vif % 4);
    pipe.flow_hook().begin(vif, *now);
    pipe.process(vif, [VecBuf::from_frame(frame)], out);
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
    let s = policies.table().stats();
    assert!(
        s.active <= s.capacity,
        "{} flows in a table of {}",
        s.active,
        s.capacity
    );
});
