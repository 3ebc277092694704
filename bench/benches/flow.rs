//! Micro-benchmark of the flow table: lookup-hit cycles per packet with 1 K, 100 K and 1 M flows
//! (table alone, and through the `FlowStage` hook as the pipeline calls it), setup rate (new
//! flows per second on one core, a flow being an entry and its reverse), and memory for 1 M
//! flows. Run: `cargo bench -p bench --bench flow` (add `-- quick` to skip 1 M).

use std::sync::Arc;
use std::time::Instant;
use vrouter::flow::table::NewFlow;
use vrouter::flow::{Action, FlowConfig, FlowKey, FlowTable, FlowVerdict, Policies, Policy};
use vrouter::meta::{PacketMeta, L3};
use vrouter::pipeline::FlowHook;
use vrouter::tables::{Nexthop, RouteTarget, Tables, TablesConfig, Vif, VifKind};
use vrouter::MacAddr;

const VRF: u16 = 5;
const POD_A: u16 = 1;
const POD_B: u16 = 2;

/// The i-th flow: 198.18.0.0/15 sources, a TEST-NET-2 destination, varied ports.
fn key(i: u32) -> FlowKey {
    FlowKey {
        vrf: VRF,
        v6: false,
        proto: 17,
        src: u128::from(0xc612_0000u32 | (i & 0x1_ffff)),
        dst: u128::from(0xc633_6400u32 | (i >> 17)),
        sport: (i % 50_000) as u16 + 1024,
        dport: 53,
    }
}

fn new_flow(i: u32) -> NewFlow {
    NewFlow {
        key: key(i),
        verdict: FlowVerdict::Forward,
        with_reverse: true,
        in_vif: POD_A,
        out_vif: POD_B,
        policy_gen: 0,
        now: 1,
    }
}

fn table(flows: usize) -> FlowTable {
    FlowTable::new(FlowConfig {
        entries: 2 * flows,
        ..FlowConfig::default()
    })
    .expect("flow table")
}

/// A permutation of 0..n (so hits are spread, not sequential in memory).
fn shuffled(n: u32) -> Vec<u32> {
    let mut v: Vec<u32> = (0..n).collect();
    let mut s = 0x9e37_79b9_7f4a_7c15u64;
    for i in (1..v.len()).rev() {
        s ^= s << 13;
        s ^= s >> 7;
        s ^= s << 17;
        v.swap(i, (s % (i as u64 + 1)) as usize);
    }
    v
}

fn meta_of(k: &FlowKey) -> PacketMeta {
    PacketMeta {
        l3: L3::Ipv4,
        proto: k.proto,
        src: k.src,
        dst: k.dst,
        sport: k.sport,
        dport: k.dport,
        vrf: k.vrf,
        l3_off: 14,
        l4_off: 34,
        ..PacketMeta::default()
    }
}

fn setup(flows: u32) -> (f64, FlowTable) {
    let t = table(flows as usize);
    let t0 = Instant::now();
    for i in 0..flows {
        t.insert(&new_flow(i)).expect("setup");
    }
    let s = t0.elapsed().as_secs_f64();
    (flows as f64 / s, t)
}

fn main() {
    let quick = std::env::args().any(|a| a == "quick");
    let hz = pmd_shim::cycles::tsc_hz() as f64;
    println!("flow table benchmark, TSC {:.2} GHz", hz / 1e9);
    let sizes: &[u32] = if quick {
        &[1_000, 100_000]
    } else {
        &[1_000, 100_000, 1_000_000]
    };
    let lookups = if quick { 1_000_000 } else { 4_000_000 };
    for &n in sizes {
        let (rate, t) = setup(n);
        let t = Arc::new(t);
        let order: Vec<FlowKey> = shuffled(n).into_iter().map(key).collect();

        // Table alone: lookup + counter update, as the hook does on a hit.
        let mut hits = 0u64;
        let c0 = pmd_shim::cycles::rdtsc();
        for j in 0..lookups {
            let k = &order[j % order.len()];
            if let Some(h) = t.lookup(k) {
                t.touch(h.index, 64, 2, None);
                hits += 1;
            }
        }
        let table_cycles = (pmd_shim::cycles::rdtsc() - c0) as f64 / lookups as f64;
        assert_eq!(hits, lookups as u64);

        // The table in bursts of 32 (`lookup_burst`), then the counter updates.
        let mut out = [None; 32];
        let mut hits = 0u64;
        let bursts = lookups / 32;
        let c0 = pmd_shim::cycles::rdtsc();
        for j in 0..bursts {
            let start = (j * 32) % (order.len().saturating_sub(32).max(1));
            let keys = &order[start..(start + 32).min(order.len())];
            t.lookup_burst(keys, &mut out[..keys.len()]);
            for h in out[..keys.len()].iter().flatten() {
                t.touch(h.index, 64, 2, None);
                hits += 1;
            }
        }
        let burst_cycles = (pmd_shim::cycles::rdtsc() - c0) as f64 / hits as f64;
        assert_eq!(hits, (bursts * 32) as u64);

        // Through the hook, with policy on the ingress vif (no nexthop read on a hit).
        let tables = Arc::new(Tables::new(TablesConfig {
            nexthops: 16,
            v4_groups: 64,
            v6_groups: 64,
            bridge_entries: 16,
        }));
        tables.add_vrf(u32::from(VRF)).expect("vrf");
        tables
            .set_vif(Vif {
                index: POD_B,
                kind: VifKind::Pod,
                vrf: VRF,
                mac: MacAddr([2, 0, 0, 0, 0, 0xb]),
                mtu: 1500,
            })
            .expect("vif");
        tables
            .set_nexthop(
                1,
                Nexthop::Encap {
                    vif: POD_B,
                    dmac: MacAddr([2, 0, 0, 0, 0, 0xb]),
                },
            )
            .expect("nexthop");
        let policies = Policies::new(t.clone());
        let allow = Policy {
            default: Action::Allow,
            ingress: vec![],
            egress: vec![],
        };
        policies.set(POD_A, Some(allow)).expect("policy");
        // The flows were installed under generation 0: move them to the current one first.
        let mut stage = policies.stage(tables.clone());
        stage.begin(POD_A, 3);
        let metas: Vec<PacketMeta> = order.iter().map(meta_of).collect();
        let mut frame = [0u8; 64];
        let target = RouteTarget {
            nexthop: 1,
            label: None,
        };
        for m in &metas {
            stage.on_lookup(m, &mut frame, target);
        }
        let before = t.stats().created;
        let c0 = pmd_shim::cycles::rdtsc();
        for j in 0..lookups {
            std::hint::black_box(stage.on_lookup(&metas[j % metas.len()], &mut frame, target));
        }
        let hook_cycles = (pmd_shim::cycles::rdtsc() - c0) as f64 / lookups as f64;
        assert_eq!(t.stats().created, before, "every lookup was a hit");

        println!(
            "{n:>9} flows: hit {table_cycles:6.1} cycles/pkt (table), {burst_cycles:6.1} (table, bursts of 32), \
             {hook_cycles:6.1} (FlowStage); \
             setup {:.2} M flows/s/core; table {:.1} MiB",
            rate / 1e6,
            t.memory_bytes() as f64 / (1024.0 * 1024.0)
        );
    }

    // Setup through the hook: every packet a new flow (policy evaluation + install).
    let n = if quick { 100_000 } else { 1_000_000 };
    let t = Arc::new(table(n as usize));
    let tables = Arc::new(Tables::new(TablesConfig {
        nexthops: 16,
        v4_groups: 64,
        v6_groups: 64,
        bridge_entries: 16,
    }));
    let policies = Policies::new(t.clone());
    policies
        .set(
            POD_A,
            Some(Policy {
                default: Action::Allow,
                ingress: vec![],
                egress: vec![],
            }),
        )
        .expect("policy");
    let mut stage = policies.stage(tables);
    stage.begin(POD_A, 1);
    let metas: Vec<PacketMeta> = (0..n).map(|i| meta_of(&key(i))).collect();
    let mut frame = [0u8; 64];
    let target = RouteTarget {
        nexthop: 1,
        label: None,
    };
    let t0 = Instant::now();
    for m in &metas {
        std::hint::black_box(stage.on_lookup(m, &mut frame, target));
    }
    let rate = f64::from(n) / t0.elapsed().as_secs_f64();
    assert_eq!(t.stats().created, u64::from(n));
    println!(
        "setup through FlowStage ({n} new flows): {:.2} M flows/s/core",
        rate / 1e6
    );
    println!("goals: hit <= 60 cycles @1K, <= 200 @1M; >= 2 M setups/s/core; 1 M flows <= 256 MiB");
}
