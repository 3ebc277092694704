//! Micro-benchmark of the forwarding pipeline: ns and cycles per packet in bursts of 32 for L3
//! forward to a local vif, VXLAN / MPLSoUDP / MPLSoGRE encap, VXLAN and MPLSoUDP decap, with
//! 1 k and 1 M routes. Run: `cargo bench -p bench --bench pipeline` (add `-- quick` for a
//! shorter run). Buffers are plain `VecBuf`s; restoring them to the original frame between
//! bursts is measured on its own and subtracted (in vrouterd every burst is fresh mbufs).
//! Each scenario is warmed up; then seven rounds time every scenario once each, in turn:
//! `cycles/pkt` is the fastest run (noise on a shared machine only ever adds time), `median cyc`
//! shows how noisy the runs were, and an encap's cost over L3 is taken between runs of the same
//! round (side by side in time), fastest and median.
//! "l3 while routes change" runs the L3 scenario again with another thread adding, replacing
//! and removing routes in the forwarded VRF all the while, and its rate; beside it the same
//! figures (fastest / median / on-CPU median) with the updater in another VRF of the same size
//! (the control: a busy neighbour, nothing the forwarding reads) and with none, from the same
//! rounds. "l3, mirroring off" and "l3, mirror every packet" run the L3 scenario with port
//! mirroring around the pipeline as an lcore does it (`vrouter::mirror`): no mirror set (the
//! check every burst pays), and a copy of every received packet (from spare buffers standing in
//! for the mbuf pool); their cost over L3 is the cost of mirroring off, and per mirrored packet.
//! Every run checks that each packet reached its vif. The forwarding thread is a reader
//! of the tables' grace domain and announces a quiescent state after each burst, as a vrouterd
//! lcore does once per loop (so trie groups the updater frees are reused only after it).

use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;
use std::time::Instant;
use vrouter::mirror::{Filter, MirrorCfg, Mirrors};
use vrouter::pipeline::{NoFlow, Pipeline, TxBatches};
use vrouter::qsbr::Reader;
use vrouter::tables::{
    FabricConfig, Nexthop, RouteTarget, Tables, TablesConfig, TunnelEncap, Vif, VifKind,
};
use vrouter::{MacAddr, PacketBuf, StatsRegistry, VecBuf};

const BURST: usize = 32;
const FABRIC: u16 = 0;
const POD_A: u16 = 1;
const POD_B: u16 = 2;
const VRF: u32 = 5;
const NH_POD_A: u32 = 1;
const NH_SCENARIO: u32 = 50;
const LABEL: u32 = 5000;
const LABEL_TO_A: u32 = 200;
/// The scenario the others are compared with.
const L3: &str = "l3 forward to local vif";
/// The analyzer vif of the mirroring scenarios (copies never leave the benchmark).
const MIRROR_ANALYZER: u16 = 9;
const VROUTER_MAC: MacAddr = MacAddr::VROUTER_DEFAULT;
const POD_A_MAC: MacAddr = MacAddr([2, 0, 0, 0, 0, 0x0a]);
const FABRIC_IP: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 1);
const PEER_IP: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 2);
const POD_A_IP: Ipv4Addr = Ipv4Addr::new(198, 18, 1, 10);

/// The i-th route: a /24 spread over the whole space (an odd multiplier permutes the 24-bit
/// prefixes, so distinct `i` below 2^24 give distinct /24s). The fixed /32 to pod A lies inside
/// one of them at most, and is longer, so it still wins.
fn route_prefix(i: u32) -> u32 {
    (i.wrapping_mul(2_654_435_761) & 0x00ff_ffff) << 8
}

fn build_tables(routes: u32) -> Arc<Tables> {
    let t = Tables::new(TablesConfig {
        v4_groups: 1 << 17,
        ..TablesConfig::default()
    });
    t.set_fabric(FabricConfig {
        vrouter_mac: VROUTER_MAC,
        fabric_ip: FABRIC_IP,
        outer_ttl: 64,
        outer_df: true,
    });
    t.add_vrf(VRF).expect("VRF 5");
    let vif = |index, kind, vrf: u32, mac| Vif {
        index,
        kind,
        vrf: vrf as u16,
        mac,
        mtu: 9000,
    };
    t.set_vif(vif(
        FABRIC,
        VifKind::Physical,
        0,
        MacAddr([2, 0, 0, 0, 0xf, 1]),
    ))
    .expect("fabric vif");
    t.set_vif(vif(POD_A, VifKind::Pod, VRF, POD_A_MAC))
        .expect("pod vif");
    t.set_vif(vif(
        POD_B,
        VifKind::Pod,
        VRF,
        MacAddr([2, 0, 0, 0, 0, 0x0b]),
    ))
    .expect("pod vif");
    t.set_nexthop(
        NH_POD_A,
        Nexthop::Encap {
            vif: POD_A,
            dmac: POD_A_MAC,
        },
    )
    .expect("nexthop");
    t.set_label(LABEL_TO_A, NH_POD_A).expect("label");
    t.set_vni(LABEL, VRF).expect("vni");
    t.set_nexthop(NH_SCENARIO, Nexthop::Discard)
        .expect("nexthop");
    for i in 0..routes {
        let p = IpAddr::V4(Ipv4Addr::from(route_prefix(i)));
        t.add_route(
            VRF,
            p,
            24,
            RouteTarget {
                nexthop: NH_SCENARIO,
                label: Some(LABEL),
            },
        )
        .expect("route");
    }
    t.add_route(
        VRF,
        IpAddr::V4(POD_A_IP),
        32,
        RouteTarget {
            nexthop: NH_POD_A,
            label: None,
        },
    )
    .expect("route");
    Arc::new(t)
}

fn udp_frame(
    smac: MacAddr,
    dmac: MacAddr,
    src: Ipv4Addr,
    dst: Ipv4Addr,
    sport: u16,
    payload: usize,
) -> Vec<u8> {
    let mut v = Vec::new();
    etherparse::PacketBuilder::ethernet2(smac.0, dmac.0)
        .ipv4(src.octets(), dst.octets(), 64)
        .udp(sport, 5001)
        .write(&mut v, &vec![0u8; payload])
        .expect("frame");
    v
}

/// 1024 pod frames (18 bytes of payload: 64-byte frames) to destinations spread over the routes.
fn pod_frames(routes: u32) -> Vec<Vec<u8>> {
    (0..1024u32)
        .map(|i| {
            let dst = route_prefix((i.wrapping_mul(7919)) % routes) | 5;
            udp_frame(
                POD_A_MAC,
                VROUTER_MAC,
                POD_A_IP,
                Ipv4Addr::from(dst),
                10000 + i as u16,
                18,
            )
        })
        .collect()
}

/// 1024 fabric frames carrying pod-bound packets: VXLAN (inner Ethernet to the vrouter MAC, so
/// the inner packet is routed) or MPLS over UDP (label → pod A).
fn fabric_frames(vxlan: bool) -> Vec<Vec<u8>> {
    (0..1024u32)
        .map(|i| {
            let src = Ipv4Addr::from(route_prefix(i) | 9);
            let inner = udp_frame(
                MacAddr([2, 0, 0, 0, 0, 0x99]),
                VROUTER_MAC,
                src,
                POD_A_IP,
                10000 + i as u16,
                18,
            );
            let tunnel: Vec<u8> = if vxlan {
                [
                    [0x08, 0, 0, 0].as_slice(),
                    &(LABEL << 8).to_be_bytes(),
                    &inner,
                ]
                .concat()
            } else {
                [
                    ((LABEL_TO_A << 12) | 0x100 | 64).to_be_bytes().as_slice(),
                    &inner[14..],
                ]
                .concat()
            };
            let mut v = Vec::new();
            etherparse::PacketBuilder::ethernet2([2, 0, 0, 0, 0xf, 2], [2, 0, 0, 0, 0xf, 1])
                .ipv4(PEER_IP.octets(), FABRIC_IP.octets(), 64)
                .udp(50000 + (i as u16 % 1000), if vxlan { 4789 } else { 6635 })
                .write(&mut v, &tunnel)
                .expect("frame");
            v
        })
        .collect()
}

/// One timed run of a scenario.
#[derive(Clone, Copy)]
struct Run {
    /// Wall-clock ns per packet.
    ns: f64,
    /// TSC cycles per packet (wall clock in cycles: includes time the thread was preempted).
    cycles: f64,
    /// Cycles per packet while this thread was on a CPU (CLOCK_THREAD_CPUTIME_ID), so
    /// a loaded machine does not inflate the figure.
    cpu_cycles: f64,
}

/// Nanoseconds this thread has spent on a CPU.
fn thread_cpu_ns() -> u64 {
    pmd_shim::cycles::thread_cpu_ns()
}

/// A scenario: frames entering on one vif, all expected out of another, with the scenario
/// nexthop set to `nexthop` (the routes the frames hit point at it).
struct Scenario {
    name: &'static str,
    nexthop: Nexthop,
    in_vif: u16,
    out_vif: u16,
    frames: Vec<Vec<u8>>,
    /// Boxed, so the pipeline moves 8-byte pointers as it moves mbufs in vrouterd.
    #[allow(clippy::vec_box)]
    bufs: Vec<Box<VecBuf>>,
    out: TxBatches<Box<VecBuf>>,
    runs: Vec<Run>,
    /// Port mirroring as an lcore does it around the pipeline, when the scenario has it.
    mirror: Option<MirrorBench>,
}

/// What an lcore holds for port mirroring: the mirrors, a burst's copies on their way, and
/// spare buffers standing in for its mbuf pool (copies go back to it once "sent").
struct MirrorBench {
    mirrors: Mirrors,
    copies: Vec<VecBuf>,
    spare: Vec<VecBuf>,
    /// Copies made, and whether a mirror is set.
    made: u64,
    on: bool,
}

impl MirrorBench {
    /// Mirrors as `mirror` says (`None`: mirroring off, the check every burst pays).
    fn new(mirrored: u16, mirror: Option<MirrorCfg>) -> MirrorBench {
        let on = mirror.is_some();
        let mut mirrors = Mirrors::new(16);
        mirrors.set(mirrored, mirror);
        MirrorBench {
            mirrors,
            copies: Vec::with_capacity(BURST),
            spare: (0..BURST).map(|_| VecBuf::with_room(128, 2048)).collect(),
            made: 0,
            on,
        }
    }

    /// Copies of `pkts` (received on `vif` when `ingress`, else sent to it) the mirror wants.
    #[inline]
    fn copy<'a>(&mut self, vif: u16, ingress: bool, pkts: impl Iterator<Item = &'a Box<VecBuf>>) {
        let MirrorBench {
            mirrors,
            copies,
            spare,
            made,
            ..
        } = self;
        if let Some(m) = mirrors.get(vif, ingress) {
            let n = m.copy_burst(pkts.map(|b| &**b), copies, |p: &VecBuf, snaplen| {
                let mut c = spare.pop()?;
                c.reset_to(&p.data()[..p.len().min(snaplen as usize)]);
                Some(c)
            });
            *made += n.made;
            m.sent(0);
        }
    }

    /// The copies "sent": back to the pool.
    #[inline]
    fn sent(&mut self) {
        self.spare.append(&mut self.copies);
    }
}

impl Scenario {
    fn new(
        name: &'static str,
        nexthop: Nexthop,
        in_vif: u16,
        out_vif: u16,
        frames: Vec<Vec<u8>>,
    ) -> Scenario {
        let bufs = frames[..BURST]
            .iter()
            .map(|f| Box::new(VecBuf::from_frame(f)))
            .collect();
        Scenario {
            name,
            nexthop,
            in_vif,
            out_vif,
            frames,
            bufs,
            out: TxBatches::new(BURST),
            runs: Vec::new(),
            mirror: None,
        }
    }

    /// The same scenario with port mirroring around the pipeline.
    fn mirrored(mut self, mirror: MirrorBench) -> Scenario {
        self.mirror = Some(mirror);
        self
    }

    /// Make this the scenario the tables route to, check that it forwards where it should,
    /// and warm caches, TLBs and branch predictors on it for `bursts` bursts.
    fn enter(&mut self, tables: &Tables, core: &mut Core, bursts: usize) {
        tables
            .set_nexthop(NH_SCENARIO, self.nexthop)
            .expect("scenario nexthop");
        for (b, f) in self.bufs.iter_mut().zip(&self.frames) {
            b.reset_to(f);
        }
        core.pipe
            .process(self.in_vif, self.bufs.drain(..), &mut self.out);
        assert_eq!(
            self.out.tx(self.out_vif).len(),
            BURST,
            "{} forwards every packet to vif {}",
            self.name,
            self.out_vif
        );
        let bufs = &mut self.bufs;
        self.out.flush(|_, q| bufs.append(q));
        self.time(core, true, bursts);
    }

    /// (ns, TSC cycles, on-CPU ns) for `bursts` bursts: buffers restored to the original
    /// frames, then (with `forward`) pushed through the pipeline. Checks that every packet
    /// forwarded went out of the scenario's vif.
    fn time(&mut self, core: &mut Core, forward: bool, bursts: usize) -> [f64; 3] {
        let (frames, bufs, out) = (&self.frames, &mut self.bufs, &mut self.out);
        let mut mirror = self.mirror.as_mut();
        let out_vif = self.out_vif;
        if !forward {
            // Not reading the tables: a writer alongside need not wait for this thread.
            core.grace.offline();
        }
        let mut delivered = 0usize;
        let t0 = Instant::now();
        let cpu0 = thread_cpu_ns();
        let c0 = pmd_shim::cycles::rdtsc();
        for n in 0..bursts {
            let base = (n * BURST) % frames.len();
            for (b, f) in bufs.iter_mut().zip(&frames[base..base + BURST]) {
                b.reset_to(f);
            }
            if forward {
                // As an lcore does: received packets mirrored before the pipeline, packets
                // sent to a vif as they go (the copies sent after each).
                if let Some(m) = mirror.as_deref_mut() {
                    m.copy(self.in_vif, true, bufs.iter());
                    m.sent();
                }
                core.pipe.process(self.in_vif, bufs.drain(..), out);
                out.flush(|vif, q| {
                    if let Some(m) = mirror.as_deref_mut() {
                        m.copy(vif, false, q.iter());
                        m.sent();
                    }
                    delivered += usize::from(vif == out_vif) * q.len();
                    bufs.append(q)
                });
                bufs.append(&mut out.dropped);
                // As an lcore does once per loop.
                core.grace.quiescent();
            }
        }
        let c = pmd_shim::cycles::rdtsc() - c0;
        let cpu = thread_cpu_ns() - cpu0;
        core.grace.online();
        if forward {
            assert_eq!(
                delivered,
                bursts * BURST,
                "{}: every packet out of vif {out_vif}",
                self.name
            );
        }
        [t0.elapsed().as_nanos() as f64, c as f64, cpu as f64]
    }

    /// One timed run, minus the cost of restoring the buffers (in vrouterd every burst is fresh
    /// mbufs), recorded in `runs`.
    fn run(&mut self, core: &mut Core, bursts: usize) {
        let all = self.time(core, true, bursts);
        let base = self.time(core, false, bursts);
        let pkts = (bursts * BURST) as f64;
        let hz = pmd_shim::cycles::tsc_hz() as f64;
        self.runs.push(Run {
            ns: (all[0] - base[0]) / pkts,
            cycles: (all[1] - base[1]) / pkts,
            cpu_cycles: (all[2] - base[2]) * hz / 1e9 / pkts,
        });
    }
}

/// What a forwarding core holds: its pipeline and its reader of the tables' grace domain.
struct Core {
    pipe: Pipeline<NoFlow>,
    grace: Reader,
}

/// The minimum and the median of `v`.
fn min_median(mut v: Vec<f64>) -> (f64, f64) {
    v.sort_by(f64::total_cmp);
    (
        v.first().copied().unwrap_or(0.0),
        v.get(v.len() / 2).copied().unwrap_or(0.0),
    )
}

/// Timed rounds (`VR_BENCH_REPEATS` overrides): each round times every scenario once.
const REPEATS: usize = 7;

/// A VRF with the same routes as `VRF` that no traffic uses: updates there cost the updater
/// the same, and the forwarding core nothing but the updater's presence on the machine.
const CONTROL_VRF: u32 = 6;

/// Sets its flag when dropped, panicking or not.
struct StopOnDrop<'a>(&'a std::sync::atomic::AtomicBool);

impl Drop for StopOnDrop<'_> {
    fn drop(&mut self) {
        self.0.store(true, std::sync::atomic::Ordering::Relaxed);
    }
}

/// Route updates per second made on another thread while this one forwards the L3 scenario,
/// and what they cost the forwarding. Each round times three runs: no updater; the updater in
/// `CONTROL_VRF` (the same work on tables the forwarding core does not read: what a busy
/// neighbour costs on this machine, e.g. a hyperthread sibling); the updater in the VRF being
/// forwarded. Each updater step adds a /32 (a pod's host route: it takes trie groups below
/// the root) where no traffic goes, re-adds a /24 the traffic hits (same target, so every
/// packet must still reach its vif: `Scenario::time` checks) and removes the /32 again: three
/// updates, one of them on lines the forwarding core is reading.
fn updates_while_forwarding(
    tables: &Arc<Tables>,
    core: &mut Core,
    l3: &mut Scenario,
    routes: u32,
    bursts: usize,
    rounds: usize,
) {
    let target = RouteTarget {
        nexthop: NH_SCENARIO,
        label: Some(LABEL),
    };
    tables.add_vrf(CONTROL_VRF).expect("control VRF");
    for i in 0..routes {
        let p = IpAddr::V4(Ipv4Addr::from(route_prefix(i)));
        tables
            .add_route(CONTROL_VRF, p, 24, target)
            .expect("control route");
    }
    l3.enter(tables, core, bursts / 20);
    let stop = std::sync::atomic::AtomicBool::new(false);
    // One run with an updater in `vrf` alongside: (run, updates per second).
    let run_alongside = |vrf: u32, l3: &mut Scenario, core: &mut Core| {
        stop.store(false, std::sync::atomic::Ordering::Relaxed);
        let (updates, secs) = std::thread::scope(|s| {
            let updater = s.spawn(|| {
                let t0 = Instant::now();
                let mut n = 0u64;
                let mut j = 0u32;
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    // Inside a /24 past the installed ones (the prefixes are a permutation of the
                    // 24-bit space, so no installed /24 covers it).
                    let cold = route_prefix(routes + (j % 4096)) | 7;
                    let cold = IpAddr::V4(Ipv4Addr::from(cold));
                    // One of the routes `pod_frames` sends to.
                    let hot = route_prefix(((j % 1024) * 7919) % routes);
                    let hot = IpAddr::V4(Ipv4Addr::from(hot));
                    tables.add_route(vrf, cold, 32, target).expect("add");
                    tables.add_route(vrf, hot, 24, target).expect("replace");
                    tables.del_route(vrf, cold, 32).expect("delete");
                    n += 3;
                    j = j.wrapping_add(1);
                }
                (n, t0.elapsed().as_secs_f64())
            });
            // However the run ends: a failed check panics, and the scope would then wait for
            // an updater that never stops.
            let stopper = StopOnDrop(&stop);
            l3.run(core, bursts);
            drop(stopper);
            updater.join().expect("updater")
        });
        let run = l3.runs.pop().expect("the run just made");
        (run, updates as f64 / secs)
    };
    // (TSC cycles, on-CPU cycles, updates/s) per round, for: none, control VRF, this VRF.
    let mut figures: [Vec<(f64, f64, f64)>; 3] = Default::default();
    for _ in 0..rounds {
        l3.run(core, bursts);
        let alone = l3.runs.pop().expect("the run just made");
        figures[0].push((alone.cycles, alone.cpu_cycles, 0.0));
        for (k, vrf) in [(1, CONTROL_VRF), (2, VRF)] {
            let (r, rate) = run_alongside(vrf, l3, core);
            figures[k].push((r.cycles, r.cpu_cycles, rate));
        }
    }
    let summary = |f: &[(f64, f64, f64)]| {
        let (min, med) = min_median(f.iter().map(|x| x.0).collect());
        let (_, cpu) = min_median(f.iter().map(|x| x.1).collect());
        let (_, rate) = min_median(f.iter().map(|x| x.2).collect());
        (min, med, cpu, rate)
    };
    let (a_min, a_med, a_cpu, _) = summary(&figures[0]);
    let (c_min, c_med, c_cpu, c_rate) = summary(&figures[1]);
    let (b_min, b_med, b_cpu, b_rate) = summary(&figures[2]);
    println!(
        "{:<28} {routes:>9} {:>8} {b_min:>11.1} {b_med:>11.1} {b_cpu:>15.1}   {:.2} M \
         updates/s; updater in another VRF: {c_min:.1} / {c_med:.1} / {c_cpu:.1} ({:.2} M/s); \
         none: {a_min:.1} / {a_med:.1} / {a_cpu:.1}",
        "l3 while routes change",
        "",
        b_rate / 1e6,
        c_rate / 1e6
    );
    tables.del_vrf(CONTROL_VRF).ok();
}

/// Cost of single stages on the same frames: parse only, route lookup only, nexthop read only
/// (of `l3`, the L3 local forward's nexthop, installed here whatever scenario ran last).
fn stage_breakdown(tables: &Tables, l3: Nexthop, frames: &[Vec<u8>], routes: u32, bursts: usize) {
    tables
        .set_nexthop(NH_SCENARIO, l3)
        .expect("l3 nexthop for the stage breakdown");
    let topo = tables.topology();
    let Some(vrf) = topo.vrf(VRF as u16) else {
        return;
    };
    let metas: Vec<_> = frames
        .iter()
        .filter_map(|f| vrouter::meta::parse_ethernet(f).ok())
        .collect();
    let n = bursts * BURST;
    let time = |f: &mut dyn FnMut(usize) -> u64| {
        let cpu0 = thread_cpu_ns();
        let mut acc = 0u64;
        for i in 0..n {
            acc = acc.wrapping_add(f(i % frames.len()));
        }
        let cpu = thread_cpu_ns() - cpu0;
        std::hint::black_box(acc);
        cpu as f64 * pmd_shim::cycles::tsc_hz() as f64 / 1e9 / n as f64
    };
    let parse = time(&mut |i| {
        vrouter::meta::parse_ethernet(&frames[i]).map_or(0, |m| u64::from(m.flow_hash()))
    });
    let lookup = time(&mut |i| {
        vrf.route_v4(metas[i].dst_v4())
            .map_or(0, |t| u64::from(t.nexthop))
    });
    let nexthop = time(&mut |i| {
        tables
            .nexthops
            .get(std::hint::black_box(NH_SCENARIO))
            .map_or(0, |_| i as u64 & 1)
    });
    println!(
        "{:<28} {routes:>9} {:>8} {:>11} {:>11} {:>15.1}",
        "  stage: parse", "", "", "", parse
    );
    println!(
        "{:<28} {routes:>9} {:>8} {:>11} {:>11} {:>15.1}",
        "  stage: route lookup", "", "", "", lookup
    );
    println!(
        "{:<28} {routes:>9} {:>8} {:>11} {:>11} {:>15.1}",
        "  stage: nexthop read", "", "", "", nexthop
    );
}

fn main() {
    let quick = std::env::args().any(|a| a == "quick");
    let bursts = if quick { 20_000 } else { 200_000 };
    println!(
        "vrouter pipeline micro-benchmark: bursts of {BURST}, 64-byte frames, TSC {:.2} GHz",
        pmd_shim::cycles::tsc_hz() as f64 / 1e9
    );
    println!(
        "{:<28} {:>9} {:>8} {:>11} {:>11} {:>15}",
        "scenario", "routes", "ns/pkt", "cycles/pkt", "median cyc", "on-cpu cyc/pkt"
    );
    let sizes: &[u32] = if std::env::var("VR_BENCH_SMALL").is_ok() {
        &[1_000]
    } else {
        &[1_000, 1_000_000]
    };
    for &routes in sizes {
        let t0 = Instant::now();
        let tables = build_tables(routes);
        eprintln!(
            "({routes} routes loaded in {:.2} s)",
            t0.elapsed().as_secs_f64()
        );
        let stats = StatsRegistry::default();
        let mut core = Core {
            pipe: Pipeline::new(tables.clone(), stats.new_core(), NoFlow),
            grace: tables.grace().register(),
        };
        let pods = pod_frames(routes);
        let tunnel = |encap| Nexthop::Tunnel {
            encap,
            vif: FABRIC,
            sip: FABRIC_IP,
            dip: PEER_IP,
            dmac: MacAddr([2, 0, 0, 0, 0xf, 2]),
            label: None,
        };
        let l3 = Nexthop::Encap {
            vif: POD_B,
            dmac: MacAddr([2, 0, 0, 0, 0, 0x0b]),
        };
        let only = std::env::var("VR_BENCH_ONLY").unwrap_or_default();
        let mut scenarios: Vec<Scenario> = [
            Scenario::new(L3, l3, POD_A, POD_B, pods.clone()),
            Scenario::new("l3, mirroring off", l3, POD_A, POD_B, pods.clone())
                .mirrored(MirrorBench::new(POD_A, None)),
            Scenario::new("l3, mirror every packet", l3, POD_A, POD_B, pods.clone()).mirrored(
                MirrorBench::new(
                    POD_A,
                    Some(MirrorCfg {
                        to: MIRROR_ANALYZER,
                        remote: None,
                        ingress: true,
                        egress: false,
                        snaplen: u32::MAX,
                        sample: 1,
                        filter: Filter::default(),
                    }),
                ),
            ),
            Scenario::new(
                "vxlan encap",
                tunnel(TunnelEncap::Vxlan),
                POD_A,
                FABRIC,
                pods.clone(),
            ),
            Scenario::new(
                "mpls-over-udp encap",
                tunnel(TunnelEncap::MplsUdp),
                POD_A,
                FABRIC,
                pods.clone(),
            ),
            Scenario::new(
                "mpls-over-gre encap",
                tunnel(TunnelEncap::MplsGre),
                POD_A,
                FABRIC,
                pods.clone(),
            ),
            Scenario::new(
                "vxlan decap (+ l3 route)",
                l3,
                FABRIC,
                POD_A,
                fabric_frames(true),
            ),
            Scenario::new(
                "mpls-over-udp decap",
                l3,
                FABRIC,
                POD_A,
                fabric_frames(false),
            ),
        ]
        .into_iter()
        .filter(|s| s.name.contains(only.as_str()))
        .collect();
        // Scenarios take turns, one run each per round: on a shared machine the noise drifts
        // over seconds, so runs of different scenarios in the same round are what compare
        // fairly (the encap figures are taken against the L3 run of the same round).
        for sc in scenarios.iter_mut() {
            sc.enter(&tables, &mut core, bursts / 4);
        }
        let repeats = std::env::var("VR_BENCH_REPEATS")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(REPEATS)
            .max(1);
        for _ in 0..repeats {
            for sc in scenarios.iter_mut() {
                sc.enter(&tables, &mut core, bursts / 20);
                sc.run(&mut core, bursts);
            }
        }
        let l3_runs: Option<Vec<Run>> = scenarios
            .iter()
            .find(|s| s.name == L3)
            .map(|s| s.runs.clone());
        for sc in &scenarios {
            let (min, median) = min_median(sc.runs.iter().map(|r| r.cycles).collect());
            let best = sc
                .runs
                .iter()
                .min_by(|a, b| a.cycles.total_cmp(&b.cycles))
                .copied()
                .unwrap_or(Run {
                    ns: 0.0,
                    cycles: 0.0,
                    cpu_cycles: 0.0,
                });
            let extra = match &l3_runs {
                Some(l3) if sc.name.contains("encap") || sc.name.contains("mirror") => {
                    let (l3_min, _) = min_median(l3.iter().map(|r| r.cycles).collect());
                    let (_, same_round) = min_median(
                        sc.runs
                            .iter()
                            .zip(l3)
                            .map(|(e, l)| e.cycles - l.cycles)
                            .collect(),
                    );
                    format!(
                        "   over l3: {:+.1} fastest to fastest, {same_round:+.1} median of \
                         same-round differences",
                        min - l3_min
                    )
                }
                _ => String::new(),
            };
            println!(
                "{:<28} {routes:>9} {:>8.1} {:>11.1} {:>11.1} {:>15.1}{extra}",
                sc.name, best.ns, min, median, best.cpu_cycles
            );
        }
        for sc in &scenarios {
            if let Some(m) = &sc.mirror {
                let every = m.on;
                assert!((m.made > 0) == every, "{}: {} copies made", sc.name, m.made);
            }
        }
        if let Some(sc) = scenarios.iter_mut().find(|s| s.name == L3) {
            updates_while_forwarding(&tables, &mut core, sc, routes, bursts, repeats);
        }
        if only.is_empty() {
            stage_breakdown(&tables, l3, &pods, routes, bursts);
        }
        let s = stats.snapshot();
        assert_eq!(
            s.total_drops(),
            0,
            "no drops in the benchmark: {:?}",
            s.drops.iter().filter(|d| d.1 > 0).collect::<Vec<_>>()
        );
    }
    println!(
        "goals: l3 local forward <= 80 cycles/pkt, encap <= 40 cycles more, mirroring off <= 1 \
         cycle more"
    );
    println!("{}", bench::clock_note());
}
