//! Micro-benchmark of the flow table: lookup-hit cycles per packet with 1 K, 100 K and 1 M flows
//! (table alone, and through the `FlowStage` hook as the pipeline calls it), setup rate (new
//! flows per second on one core, a flow being an entry and its reverse), and memory for 1 M
//! flows. Figures are cycles per packet from this thread's on-CPU time (so other load on the
//! machine does not count), with the TSC's wall figure beside. The goal figure is the hook in
//! bursts of 32 (prefetch for the burst, then lookups), as the pipeline runs it.
//! Tables are backed by huge pages as vrouterd backs its table (`VR_BENCH_PAGES=4k`: 4 KiB
//! pages, for comparison). Source NAT flows: hits and setups through the hook beside the plain
//! ones. Run: `cargo bench -p bench --bench flow` (add `-- quick` to skip 1 M).

use std::sync::Arc;
use vrouter::flow::table::NewFlow;
use vrouter::flow::{
    Action, FlowConfig, FlowKey, FlowStage, FlowTable, FlowVerdict, Policies, Policy,
};
use vrouter::meta::{PacketMeta, L3};
use vrouter::nat::{Nat, PoolRange};
use vrouter::pipeline::{FlowAction, FlowHook};
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
        nat: None,
    }
}

/// Whether tables are backed by huge pages as in vrouterd (`VR_BENCH_PAGES=4k`: not).
fn huge_pages() -> bool {
    std::env::var("VR_BENCH_PAGES").map_or(true, |v| v != "4k")
}

/// A table for `flows` flows and their reverses, and how many bytes of it are on huge pages.
fn table(flows: usize) -> (FlowTable, usize) {
    let huge = std::cell::Cell::new(0);
    // Without THP the table stays on 4 KiB pages and the header line says so (0 MiB huge).
    let advise = |start, len| match pmd_shim::memory::back_with_huge_pages(start, len) {
        Ok(b) => huge.set(b.huge),
        Err(e) => eprintln!("madvise(MADV_HUGEPAGE) refused: {e}; the table is on 4 KiB pages"),
    };
    // With `VR_BENCH_FLOWS` the table is as large as vrouterd's default (`--flow-entries`),
    // as in `scripts/bench.sh`'s flow cases; otherwise just large enough.
    let entries = if std::env::var("VR_BENCH_FLOWS").is_ok() {
        (2 * flows).max(vrouter::flow::table::DEFAULT_ENTRIES)
    } else {
        2 * flows
    };
    let t = FlowTable::with_memory_advice(
        FlowConfig {
            entries,
            ..FlowConfig::default()
        },
        huge_pages().then_some(&advise as &dyn Fn(usize, usize)),
    )
    .expect("flow table");
    (t, huge.get())
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

/// Nanoseconds this thread has been on a CPU: time the scheduler gave to the other benchmarks
/// sharing the machine is not counted.
fn on_cpu_ns() -> u64 {
    pmd_shim::cycles::thread_cpu_ns()
}

/// Cycles per operation of `run` (which performs `ops` operations): by the TSC (wall) and by
/// this thread's on-CPU time at the TSC rate.
struct Cost {
    wall: f64,
    on_cpu: f64,
    /// On-CPU seconds.
    secs: f64,
}

fn measure(hz: f64, ops: u64, run: impl FnOnce()) -> Cost {
    let n0 = on_cpu_ns();
    let c0 = pmd_shim::cycles::rdtsc();
    run();
    let c1 = pmd_shim::cycles::rdtsc();
    let n1 = on_cpu_ns();
    let secs = (n1 - n0) as f64 / 1e9;
    Cost {
        wall: (c1 - c0) as f64 / ops as f64,
        on_cpu: secs * hz / ops as f64,
        secs,
    }
}

impl std::fmt::Display for Cost {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:6.1} ({:6.1} wall)", self.on_cpu, self.wall)
    }
}

fn bench_tables() -> Arc<Tables> {
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
    tables
}

/// [`bench_tables`] with a fabric vif (VRF 0) that [`TO_FABRIC`] sends plain IP out of: where
/// VRF 5's flows leave through source NAT.
fn nat_tables() -> Arc<Tables> {
    let tables = bench_tables();
    let mac = MacAddr([2, 0, 0, 0, 0, 0xf]);
    tables
        .set_vif(Vif {
            index: FABRIC,
            kind: VifKind::Physical,
            vrf: 0,
            mac,
            mtu: 1500,
        })
        .expect("vif");
    tables
        .set_nexthop(
            2,
            Nexthop::Encap {
                vif: FABRIC,
                dmac: mac,
            },
        )
        .expect("nexthop");
    tables
}

const FABRIC: u16 = 0;

const TO_FABRIC: RouteTarget = RouteTarget {
    nexthop: 2,
    label: None,
};

fn allow_all() -> Policy {
    Policy {
        default: Action::Allow,
        ingress: vec![],
        egress: vec![],
    }
}

const TARGET: RouteTarget = RouteTarget {
    nexthop: 1,
    label: None,
};

/// Drive the stage the way a forwarding core does: `begin`, then `prefetch` for each packet of
/// a burst of 32, then `on_lookup` for each. Returns how many packets were forwarded.
fn run_bursts(stage: &mut FlowStage, now: u64, metas: &[PacketMeta], packets: usize) -> u64 {
    run_bursts_to(stage, now, metas, packets, TARGET)
}

/// [`run_bursts`] toward `target`; a translated packet counts as forwarded.
fn run_bursts_to(
    stage: &mut FlowStage,
    now: u64,
    metas: &[PacketMeta],
    packets: usize,
    target: RouteTarget,
) -> u64 {
    let mut frame = [0u8; 64];
    let mut forwarded = 0u64;
    let mut done = 0;
    // `VR_BENCH_CLOCK=1`: the clock moves on at every burst, as vrouterd's millisecond clock
    // does for flows each hit less often than once a millisecond (65,536 flows at 10 Mpps):
    // every hit then also writes its entry's last-seen time.
    let tick = u64::from(std::env::var_os("VR_BENCH_CLOCK").is_some_and(|v| v == "1"));
    while done < packets {
        let start = done % metas.len();
        let end = (start + 32).min(metas.len()).min(start + packets - done);
        let burst = &metas[start..end];
        stage.begin(POD_A, now + tick * (done as u64 / 32));
        for m in burst {
            stage.prefetch(m);
        }
        for m in burst {
            if let FlowAction::Forward(_) | FlowAction::Nat(..) =
                stage.on_lookup(m, &mut frame, target)
            {
                forwarded += 1;
            }
        }
        done += burst.len();
    }
    forwarded
}

fn main() {
    let quick = std::env::args().any(|a| a == "quick");
    // `-- profile`: 1 M flows (1 K with `quick`), and mostly the goal figure's loop (for
    // `perf record`).
    let profile = std::env::args().any(|a| a == "profile");
    let hz = pmd_shim::cycles::tsc_hz() as f64;
    println!(
        "flow table benchmark, TSC {:.2} GHz; cycles per packet on CPU (wall in brackets); \
         table memory on {} pages (VR_BENCH_PAGES=4k|huge)",
        hz / 1e9,
        if huge_pages() { "huge" } else { "4 KiB" }
    );
    // `VR_BENCH_FLOWS=65536`: that many flows only (the size `scripts/bench.sh` runs
    // vrouterd's flow case at); `VR_BENCH_LOOKUPS`: lookups per figure (e.g. fewer under
    // callgrind).
    let flows_env: Option<u32> = std::env::var("VR_BENCH_FLOWS")
        .ok()
        .and_then(|v| v.parse().ok());
    let flows_only = flows_env.map(|n| [n]);
    let sizes: &[u32] = if let Some(n) = &flows_only {
        n
    } else if profile && quick {
        &[1_000]
    } else if profile {
        &[1_000_000]
    } else if quick {
        &[1_000, 100_000]
    } else {
        &[1_000, 100_000, 1_000_000]
    };
    let lookups: usize = if quick { 1_000_000 } else { 4_000_000 };
    let (lookups, burst_lookups) = if profile {
        (32, 40_000_000)
    } else {
        (lookups, lookups)
    };
    let (lookups, burst_lookups) = match std::env::var("VR_BENCH_LOOKUPS")
        .ok()
        .and_then(|v| v.parse().ok())
    {
        Some(n) => (n, n),
        None => (lookups, burst_lookups),
    };
    for &n in sizes {
        // Setup: repeated on fresh tables up to 1 M flows, so the run is long enough to measure.
        let reps = if flows_env.is_some() {
            1
        } else {
            (1_000_000 / n).max(1)
        };
        let mut setup = Cost {
            wall: 0.0,
            on_cpu: 0.0,
            secs: 0.0,
        };
        let (first, mut huge) = table(n as usize);
        let mut t = Arc::new(first);
        for rep in 0..reps {
            if rep > 0 {
                let (next, h) = table(n as usize);
                (t, huge) = (Arc::new(next), h);
            }
            let c = measure(hz, u64::from(n), || {
                for i in 0..n {
                    t.insert(&new_flow(i)).expect("setup");
                }
            });
            setup.wall += c.wall / f64::from(reps);
            setup.on_cpu += c.on_cpu / f64::from(reps);
            setup.secs += c.secs;
        }
        let order: Vec<FlowKey> = shuffled(n).into_iter().map(key).collect();

        // Table alone: lookup + counter update, as the hook does on a hit.
        let mut hits = 0u64;
        let single = measure(hz, lookups as u64, || {
            for j in 0..lookups {
                let k = &order[j % order.len()];
                if let Some(h) = t.lookup(k) {
                    t.touch(h.index, 64, 2, None);
                    hits += 1;
                }
            }
        });
        assert_eq!(hits, lookups as u64);

        // The table in bursts of 32 (`lookup_burst`), then the counter updates.
        let mut out = [None; 32];
        let mut hits = 0u64;
        let bursts = lookups / 32;
        let burst = measure(hz, (bursts * 32) as u64, || {
            for j in 0..bursts {
                let start = (j * 32) % (order.len().saturating_sub(32).max(1));
                let keys = &order[start..(start + 32).min(order.len())];
                t.lookup_burst(keys, &mut out[..keys.len()]);
                for h in out[..keys.len()].iter().flatten() {
                    t.touch(h.index, 64, 2, None);
                    hits += 1;
                }
            }
        });
        assert_eq!(hits, (bursts * 32) as u64);

        // Through the hook, with policy on the ingress vif (no nexthop read on a hit).
        let tables = bench_tables();
        let policies = Policies::new(t.clone());
        policies.set(POD_A, Some(allow_all())).expect("policy");
        // The flows were installed under generation 0: move them to the current one first.
        let mut stage = policies.stage(tables.clone());
        stage.begin(POD_A, 3);
        let metas: Vec<PacketMeta> = order.iter().map(meta_of).collect();
        let mut frame = [0u8; 64];
        for m in &metas {
            stage.on_lookup(m, &mut frame, TARGET);
        }
        let before = t.stats().created;
        let hook = measure(hz, lookups as u64, || {
            for j in 0..lookups {
                std::hint::black_box(stage.on_lookup(&metas[j % metas.len()], &mut frame, TARGET));
            }
        });
        // As the pipeline runs it: bursts of 32, prefetch then lookup.
        let mut forwarded = 0;
        let hook_burst = measure(hz, burst_lookups as u64, || {
            forwarded = run_bursts(&mut stage, 3, &metas, burst_lookups);
        });
        assert_eq!(forwarded, burst_lookups as u64);
        assert_eq!(t.stats().created, before, "every lookup was a hit");

        println!(
            "{n:>9} flows: hit {single} cycles/pkt (table), {burst} (table, bursts of 32), \
             {hook} (FlowStage), {hook_burst} (FlowStage, bursts of 32); \
             setup {:.2} M flows/s/core ({:.2} wall); table {:.1} MiB ({:.1} on huge pages)",
            hz / setup.on_cpu / 1e6,
            hz / setup.wall / 1e6,
            t.memory_bytes() as f64 / (1024.0 * 1024.0),
            huge as f64 / (1024.0 * 1024.0)
        );
    }

    // Source NAT through the hook, no policy: setups (a pool pair taken, the flow and its
    // reverse under the translated key installed) and hits (the forward entry, then its
    // partner's key for the pair), in bursts of 32, to compare with the plain figures above.
    // The header rewrite is the pipeline's, not counted here.
    if !profile {
        for &n in sizes {
            let (t, _) = table(n as usize);
            let t = Arc::new(t);
            let tables = nat_tables();
            let policies = Policies::new(t.clone());
            let nat = Nat::new(t.clone());
            nat.set_pool(
                "bench",
                0,
                PoolRange {
                    first: [198, 51, 100, 0].into(),
                    last: [198, 51, 100, 255].into(),
                    ports: (1024, 65535),
                },
            )
            .expect("pool");
            nat.attach(VRF, "bench").expect("attach");
            let mut stage = policies.stage(tables).with_nat(&nat);
            let order: Vec<PacketMeta> =
                shuffled(n).into_iter().map(|i| meta_of(&key(i))).collect();
            let mut translated = 0;
            let setup = measure(hz, u64::from(n), || {
                translated = run_bursts_to(&mut stage, 1, &order, order.len(), TO_FABRIC);
            });
            assert_eq!(translated, u64::from(n));
            assert_eq!(t.stats().created, u64::from(n), "every setup installed");
            let hit = measure(hz, burst_lookups as u64, || {
                translated = run_bursts_to(&mut stage, 2, &order, burst_lookups, TO_FABRIC);
            });
            assert_eq!(translated, burst_lookups as u64);
            assert_eq!(t.stats().created, u64::from(n), "every lookup was a hit");
            println!(
                "{n:>9} NAT flows: hit {hit} cycles/pkt (FlowStage, bursts of 32); \
                 setup {:.2} M flows/s/core ({:.2} wall)",
                hz / setup.on_cpu / 1e6,
                hz / setup.wall / 1e6,
            );
        }
    }

    // Setup through the hook in bursts of 32: every packet a new flow (policy evaluation +
    // install of the flow and its reverse), into fresh tables of each size, repeated up to
    // 1 M setups so the on-CPU time is long enough to measure.
    // (`profile` is about the hit path: no setup runs.)
    let setup_sizes: &[u32] = if profile {
        &[]
    } else if quick {
        &[100_000]
    } else {
        &[100_000, 1_000_000]
    };
    for &n in setup_sizes {
        let reps = (1_000_000 / n).max(1);
        let metas: Vec<PacketMeta> = (0..n).map(|i| meta_of(&key(i))).collect();
        let (mut on_cpu, mut wall, mut secs) = (0.0, 0.0, 0.0);
        for _ in 0..reps {
            let t = Arc::new(table(n as usize).0);
            let policies = Policies::new(t.clone());
            policies.set(POD_A, Some(allow_all())).expect("policy");
            let mut stage = policies.stage(bench_tables());
            stage.begin(POD_A, 1);
            let mut forwarded = 0;
            let cost = measure(hz, u64::from(n), || {
                forwarded = run_bursts(&mut stage, 1, &metas, metas.len());
            });
            assert_eq!(forwarded, u64::from(n));
            assert_eq!(t.stats().created, u64::from(n));
            on_cpu += cost.on_cpu / f64::from(reps);
            wall += cost.wall / f64::from(reps);
            secs += cost.secs;
        }
        println!(
            "setup through FlowStage, bursts of 32, into {n} flows ({reps} x): {:.2} M flows/s/core \
             ({:.2} wall, {secs:.2} s on CPU)",
            hz / on_cpu / 1e6,
            hz / wall / 1e6,
        );
    }

    // The same on two cores at once, each core its own flows, into one table and (the control:
    // the cores share nothing but the machine) into a table each. A cache line that every setup
    // writes would travel between the cores and make the first slower than the second.
    for (&n, shared) in setup_sizes.iter().flat_map(|n| [(n, true), (n, false)]) {
        let reps = (1_000_000 / n).max(1);
        let mut rates = [0.0f64; 2];
        for _ in 0..reps {
            // Room for what each core holds back for its next setups (64 entries at most each;
            // 64 more flows are 128 entries).
            let size = if shared { n } else { n / 2 } + 64;
            let all: Vec<Policies> = (0..if shared { 1 } else { 2 })
                .map(|_| {
                    let p = Policies::new(Arc::new(table(size as usize).0));
                    p.set(POD_A, Some(allow_all())).expect("policy");
                    p
                })
                .collect();
            let tables = bench_tables();
            let start = std::sync::Barrier::new(2);
            let per_core: Vec<f64> = std::thread::scope(|s| {
                let threads: Vec<_> = (0..2u32)
                    .map(|c| {
                        let policies = &all[c as usize % all.len()];
                        let (tables, start) = (tables.clone(), &start);
                        s.spawn(move || {
                            let metas: Vec<PacketMeta> = (c * n / 2..(c + 1) * n / 2)
                                .map(|i| meta_of(&key(i)))
                                .collect();
                            let mut stage = policies.stage(tables);
                            stage.begin(POD_A, 1);
                            start.wait();
                            let mut forwarded = 0;
                            let cost = measure(hz, metas.len() as u64, || {
                                forwarded = run_bursts(&mut stage, 1, &metas, metas.len());
                            });
                            assert_eq!(forwarded, metas.len() as u64);
                            hz / cost.on_cpu / 1e6
                        })
                    })
                    .collect();
                threads
                    .into_iter()
                    .map(|h| h.join().expect("setup thread"))
                    .collect()
            });
            let created: u64 = all.iter().map(|p| p.table().stats().created).sum();
            assert_eq!(created, u64::from(n));
            for (r, c) in rates.iter_mut().zip(&per_core) {
                *r += c / f64::from(reps);
            }
        }
        println!(
            "setup through FlowStage on 2 cores at once, {n} flows into {}: {:.2} and {:.2} \
             M flows/s/core ({reps} x)",
            if shared { "one table" } else { "a table each" },
            rates[0],
            rates[1]
        );
    }
    println!("goals: hit <= 60 cycles @1K, <= 200 @1M; >= 2 M setups/s/core; 1 M flows <= 256 MiB");
    println!("{}", bench::clock_note());
}
