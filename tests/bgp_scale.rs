//! vrouter-bgp at scale (issue 25): two nodes (vrouterd + gobgpd + vrouter-bgp each) behind a
//! GoBGP route reflector, and an FRR bgpd gateway stand-in (testkit::bgp) that originates
//! 10,000 VPNv4 /32s at once. Measured and printed, the goals compared (issue 25's goals are
//! reported, not asserted: on a 2-CPU machine FRR and GoBGP alone take longer): how long until
//! every node's vrouterd holds all of them, in routes per second end to end (the gateway told
//! to originate them → the last one installed; goal ≥ 20,000/s), each stage of the way
//! (origination: the gateway, the reflector, node 1's gobgpd; then our intake: vrouter-bgp
//! reading them, its batches, vrouterd); our intake alone (node 2's vrouter-bgp started again
//! with its gobgpd holding the 10,000 and its vrouterd none); the same for their withdrawal;
//! and, with the 10,000 in place, how long one new route takes from its node's vrouterd to
//! traffic over it from the other node (goal ≤ 1 s). Then node 1's vrouter-bgp is killed and
//! restarted (graceful restart). Asserted: every route arrives, with the gateway's label
//! through one tunnel to it; our intake ends within [`INTAKE_MAX`] of gobgpd having the last
//! route, and takes the 10,000 alone within [`INTAKE_MAX`] too; traffic flows over the new
//! route within [`ONE_ROUTE_MAX`]; across the restart no route or nexthop is removed and the
//! nexthop ids stay, and a route learned after it carries traffic; every one of the 10,000
//! goes again.
//!
//! `BGP_SCALE_BIN_DIR=target/release` runs the release builds of vrouterd and vrouter-bgp
//! found there (`cargo build --release -p vrouterd -p vrouter-bgp`) instead of the test's.

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use control_api::api::{Nexthop, TunnelEncap};
use testkit::bgp::{self, Cluster, NodeOverlay, Reflector, CONVERGE};
use testkit::wait;

const ROUTES: usize = 10_000;
/// Goals of issue 25.
const GOAL_ROUTES_PER_S: f64 = 20_000.0;
const GOAL_ONE_ROUTE: Duration = Duration::from_secs(1);
/// What these machines achieve with room (debug builds, two CPUs shared with other builds):
/// our intake of the 10,000 took 0.44–0.53 s alone and ended 0.02–0.20 s after gobgpd had the
/// last at load averages of 3–5 (1.0–1.6 s and 0.4–1.9 s at 12–19, before its costs were
/// removed); one route carried traffic after 0.12–2.0 s.
const INTAKE_MAX: Duration = Duration::from_secs(5);
const ONE_ROUTE_MAX: Duration = Duration::from_secs(5);

fn vrouterd_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_vrouterd"))
}

/// The gateway's scale prefixes: /32s from 198.19.128.0 on (TEST-NET 198.18.0.0/15, clear of
/// the fabric's 198.19.0.0/24 and the pods).
fn scale_prefixes() -> Vec<String> {
    (0..ROUTES)
        .map(|i| format!("198.19.{}.{}/32", 128 + i / 256, i % 256))
        .collect()
}

/// How many routes node `i`'s VRF 1 holds (`GET /vrfs`: cheap to ask while 10,000 arrive;
/// which ones is checked once they are all there).
fn held(c: &Cluster, i: usize) -> usize {
    c.nodes[i]
        .vr
        .api(|cl| async move { cl.vrfs().await })
        .expect("vrfs")
        .iter()
        .find(|v| v.vrf == 1)
        .map_or(0, |v| v.routes as usize)
}

fn report(what: &str, took: Duration) -> f64 {
    let rate = ROUTES as f64 / took.as_secs_f64();
    let verdict = if rate >= GOAL_ROUTES_PER_S {
        "meets"
    } else {
        "misses"
    };
    eprintln!(
        "bgp scale: {what}: {ROUTES} routes in {:.3} s = {rate:.0} routes/s ({verdict} the goal of {GOAL_ROUTES_PER_S:.0}/s)",
        took.as_secs_f64()
    );
    rate
}

/// When a count seen along the way (routes at one stage of the pipeline) first left its value
/// before the change and when it reached its value after, since the change began.
#[derive(Debug, Default, Clone, Copy)]
struct Stage {
    first: Option<Duration>,
    all: Option<Duration>,
}

impl Stage {
    fn see(&mut self, t: Duration, n: usize, from: usize, to: usize) {
        if n != from && self.first.is_none() {
            self.first = Some(t);
        }
        if n == to && self.all.is_none() {
            self.all = Some(t);
        }
    }

    fn show(&self) -> String {
        let s =
            |d: Option<Duration>| d.map_or("-".to_string(), |d| format!("{:.3}", d.as_secs_f64()));
        format!("first {} s, all {} s", s(self.first), s(self.all))
    }
}

/// How many VPNv4 destinations the gobgpd of `ns` holds (`gobgp global rib summary`).
fn gobgp_vpnv4(ns: &testkit::netns::Netns) -> usize {
    let out = bgp::gobgp(ns, &["global", "rib", "summary", "-a", "vpnv4"]);
    out.split("Destination: ")
        .nth(1)
        .and_then(|r| r.split(',').next())
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or(0)
}

/// How many VPNv4 prefixes the FRR gateway has sent the reflector (`pfxSnt`).
fn frr_sent(gw: &bgp::FrrGateway) -> usize {
    let out = gw.vtysh("show bgp ipv4 vpn summary json");
    out.split("\"pfxSnt\":")
        .nth(1)
        .and_then(|r| r.split([',', '}']).next())
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or(0)
}

/// Seconds since midnight UTC, now or of a log line's RFC 3339 timestamp.
fn day_secs(t: SystemTime) -> f64 {
    t.duration_since(UNIX_EPOCH).expect("clock").as_secs_f64() % 86_400.0
}

fn log_secs(line: &str) -> Option<f64> {
    let hms = line.split_whitespace().next()?.split('T').nth(1)?;
    let mut f = hms.trim_end_matches('Z').split(':');
    let (h, m, s): (f64, f64, f64) = (
        f.next()?.parse().ok()?,
        f.next()?.parse().ok()?,
        f.next()?.parse().ok()?,
    );
    Some(h * 3600.0 + m * 60.0 + s)
}

fn log_field(line: &str, key: &str) -> Option<usize> {
    line.split_whitespace()
        .find_map(|w| w.strip_prefix(key)?.strip_prefix('='))
        .and_then(|v| v.parse().ok())
}

/// What a node's vrouter-bgp logged after `since` (seconds of the day).
struct Intake {
    /// When it read the first and the `want`th best-path change from gobgpd.
    read: Stage,
    /// When it sent the first and the last of `want` routes to vrouterd.
    sent: Stage,
    /// Each batch: routes, the time working it out (`prep_ms`), vrouterd's answer
    /// (`batch_ms`).
    batches: Vec<(usize, usize, usize)>,
}

impl Intake {
    fn show(&self) -> String {
        let (prep, vrouterd) = self
            .batches
            .iter()
            .fold((0, 0), |(p, v), b| (p.max(b.1), v + b.2));
        format!(
            "{} batches; vrouterd answering them {:.3} s in all, vrouter-bgp working one out {:.3} s at most",
            self.batches.len(),
            vrouterd as f64 / 1000.0,
            prep as f64 / 1000.0
        )
    }
}

fn intake_log(out: &str, since: f64, want: usize) -> Intake {
    let (mut seen, mut sent) = (Stage::default(), Stage::default());
    let (mut paths, mut routes) = (0, 0);
    let mut batches = Vec::new();
    for line in out.lines() {
        let Some(t) = log_secs(line).map(|t| t - since).filter(|t| *t >= 0.0) else {
            continue;
        };
        let t = Duration::from_secs_f64(t);
        if line.contains("best paths changed in gobgpd") {
            paths += log_field(line, "paths").unwrap_or(0);
            seen.see(t, paths.min(want), 0, want);
        } else if line.contains("remote routes installed") {
            let n = log_field(line, "routes").unwrap_or(0);
            routes += n;
            batches.push((
                n,
                log_field(line, "prep_ms").unwrap_or(0),
                log_field(line, "batch_ms").unwrap_or(0),
            ));
            sent.see(t, routes.min(want), 0, want);
        }
    }
    Intake {
        read: seen,
        sent,
        batches,
    }
}

#[test]
fn ten_thousand_routes_from_the_reflector_reach_vrouterd_and_one_more_converges() {
    let (vrouterd, vrouter_bgp) = match std::env::var_os("BGP_SCALE_BIN_DIR") {
        Some(dir) => {
            let dir = PathBuf::from(dir);
            (dir.join("vrouterd"), dir.join("vrouter-bgp"))
        }
        None => {
            let vrouterd = vrouterd_bin();
            let vrouter_bgp = bgp::vrouter_bgp_bin(&vrouterd);
            (vrouterd, vrouter_bgp)
        }
    };
    eprintln!(
        "bgp scale: {} and {}",
        vrouterd.display(),
        vrouter_bgp.display()
    );
    let mut c = Cluster::start_with(&vrouterd, &vrouter_bgp, "bgs", 2, Reflector::Gobgp, |_| {
        NodeOverlay::Evpn
    });
    let gw = c.frr_gateway("bgs");
    // Sessions up, everything settled: the gateway's own route is on both nodes.
    for (i, n) in c.nodes.iter().enumerate() {
        let got = wait::poll(
            CONVERGE,
            || {
                n.routes()
                    .iter()
                    .any(|r| r.prefix.to_string() == bgp::GATEWAY_PREFIX)
            },
            |ok| *ok,
        );
        assert!(
            got.is_ok(),
            "node {}: no route to the gateway\n{}\n--- gateway\n{}",
            i + 1,
            c.outputs(),
            gw.bgpd.outputs()
        );
    }

    // 10,000 routes at once. Each stage of the way is sampled in the background (each count
    // is a `vtysh` or `gobgp` run, a few percent of the two CPUs): what the gateway sent, what
    // the reflector and node 1's gobgpd hold; node 1's vrouter-bgp logs what it read and sent.
    let prefixes = scale_prefixes();
    let want: BTreeSet<String> = prefixes.iter().cloned().collect();
    let base: Vec<usize> = (0..c.nodes.len()).map(|i| held(&c, i)).collect();
    let (rr_ns, n1_ns) = (&c.rr_ns, &c.nodes[0].ns);
    let counts: [&(dyn Fn() -> usize + Sync); 3] =
        [&|| frr_sent(&gw), &|| gobgp_vpnv4(rr_ns), &|| {
            gobgp_vpnv4(n1_ns)
        }];
    let from = counts.map(|count| count());
    let stages = Mutex::new([Stage::default(); 3]);
    let stop = AtomicBool::new(false);
    let since = day_secs(SystemTime::now());
    let t0 = Instant::now();
    let mut vr1 = Stage::default();
    let (told, took) = std::thread::scope(|s| {
        s.spawn(|| {
            while !stop.load(Ordering::Relaxed) {
                for (i, count) in counts.iter().enumerate() {
                    let n = count();
                    let t = t0.elapsed();
                    stages.lock().expect("stages")[i].see(t, n, from[i], from[i] + ROUTES);
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        });
        /// Stops the sampler however the scope ends.
        struct Stop<'a>(&'a AtomicBool);
        impl Drop for Stop<'_> {
            fn drop(&mut self) {
                self.0.store(true, Ordering::Relaxed);
            }
        }
        let _stop = Stop(&stop);
        // The gateway is told in the background: the nodes are watched from the start.
        let origination = s.spawn(|| {
            gw.originate(&prefixes, false);
            t0.elapsed()
        });
        let mut took = Vec::new();
        for i in 0..c.nodes.len() {
            let got = wait::poll(
                Duration::from_secs(120),
                || {
                    let n = held(&c, i);
                    if i == 0 {
                        vr1.see(t0.elapsed(), n, base[0], base[0] + ROUTES);
                    }
                    n
                },
                |n| *n == base[i] + ROUTES,
            );
            assert!(
                got.is_ok(),
                "node {}: {got:?} routes, want {} + {ROUTES}\n{}",
                i + 1,
                base[i],
                c.outputs()
            );
            took.push(t0.elapsed());
        }
        // The sampler sees the last stages complete too.
        let _ = wait::poll(
            Duration::from_secs(5),
            || {
                stages
                    .lock()
                    .expect("stages")
                    .iter()
                    .all(|s| s.all.is_some())
            },
            |done| *done,
        );
        (origination.join().expect("originating"), took)
    });
    let [frr, rr, gobgpd] = stages.into_inner().expect("stages");
    let intake = wait::poll(
        Duration::from_secs(5),
        || intake_log(&c.nodes[0].bgp.outputs(), since, ROUTES),
        |i| i.sent.all.is_some(),
    )
    .unwrap_or_else(|i| i);
    eprintln!(
        "bgp scale: {ROUTES} routes, seconds after the gateway was told to originate them:\n\
         \x20 the gateway took the `network` commands in {:.3} s\n\
         \x20 the gateway sent them to the reflector: {}\n\
         \x20 the reflector holds them: {}\n\
         \x20 node 1's gobgpd holds them: {}\n\
         \x20 node 1's vrouter-bgp read them (gobgpd's gRPC watch): {}\n\
         \x20 node 1's vrouter-bgp sent them to vrouterd: {} ({})\n\
         \x20 node 1's vrouterd holds them: {}",
        told.as_secs_f64(),
        frr.show(),
        rr.show(),
        gobgpd.show(),
        intake.read.show(),
        intake.sent.show(),
        intake.show(),
        vr1.show(),
    );
    report("install, node 1, end to end", took[0]);
    report(
        "install, every node, end to end",
        *took.iter().max().expect("nodes"),
    );
    // Origination: the gateway told → node 1's gobgpd holds the last route. Our intake: node
    // 1's gobgpd → its vrouterd, pipelined with the arrival; what is left once gobgpd has them
    // all is ours alone.
    if let (Some(g_first), Some(g_all), Some(v_all)) = (gobgpd.first, gobgpd.all, vr1.all) {
        eprintln!(
            "bgp scale: origination (gateway told → node 1's gobgpd holds all): {:.3} s; \
             our intake (node 1's gobgpd holds the first → vrouterd holds all): {:.3} s, \
             of which after gobgpd held the last: {:.3} s",
            g_all.as_secs_f64(),
            v_all.saturating_sub(g_first).as_secs_f64(),
            v_all.saturating_sub(g_all).as_secs_f64(),
        );
        report(
            "our intake, node 1 (gobgpd's first → vrouterd's last)",
            v_all.saturating_sub(g_first),
        );
        assert!(
            v_all.saturating_sub(g_all) <= INTAKE_MAX,
            "node 1's vrouterd had the last route {:?} after its gobgpd",
            v_all.saturating_sub(g_all)
        );
    }

    // Every one carries the gateway's label, through one tunnel to the gateway.
    for (i, n) in c.nodes.iter().enumerate() {
        let routes: Vec<_> = n
            .routes()
            .into_iter()
            .filter(|r| want.contains(&r.prefix.to_string()))
            .collect();
        assert_eq!(routes.len(), ROUTES, "node {}", i + 1);
        assert!(
            routes
                .iter()
                .all(|r| r.label == Some(bgp::GATEWAY_LABEL) && r.nexthop == routes[0].nexthop),
            "node {}: routes differ in label or nexthop",
            i + 1
        );
        let Nexthop::Tunnel { encap, dip, .. } = n.nexthop(routes[0].nexthop) else {
            panic!("node {}: not through a tunnel", i + 1);
        };
        assert_eq!(encap, TunnelEncap::Mplsoudp, "node {}", i + 1);
        assert_eq!(dip.to_string(), bgp::GATEWAY_FABRIC_IP, "node {}", i + 1);
    }

    // With the 10,000 in place: one new route on node 2 (an address its first pod answers
    // to), timed until node 1's pod gets a reply through it.
    let anycast = "198.18.99.1";
    c.nodes[1].pods[0]
        .ns
        .ip(&["addr", "add", &format!("{anycast}/32"), "dev", "eth0"]);
    let t0 = Instant::now();
    c.nodes[1].vr.set_route(&format!("{anycast}/32"), 1);
    // One echo request after another (each waiting 100 ms for its reply; an ICMP error while
    // no route is there ends one at once) until the first reply.
    let mut replied = false;
    while !replied && t0.elapsed() < Duration::from_secs(30) {
        replied = c.nodes[0].pods[0]
            .ns
            .command("ping")
            .args(["-c", "1", "-W", "0.1", "-q", anycast])
            .output()
            .expect("ping")
            .status
            .success();
        if !replied {
            std::thread::sleep(Duration::from_millis(10));
        }
    }
    let one = t0.elapsed();
    assert!(replied, "no reply through the new route\n{}", c.outputs());
    eprintln!(
        "bgp scale: one route change with {ROUTES} routes in place: traffic through it after {:.3} s ({} the goal of {:.1} s)",
        one.as_secs_f64(),
        if one <= GOAL_ONE_ROUTE { "meets" } else { "misses" },
        GOAL_ONE_ROUTE.as_secs_f64()
    );
    assert!(
        one <= ONE_ROUTE_MAX,
        "traffic through one new route after {one:?}"
    );

    // Graceful restart: node 1's vrouter-bgp is killed and started again; it takes over what
    // it installed (no route or nexthop removed, the tunnels keep their ids) and reconciles
    // with gobgpd's paths.
    let (gw_route, ids) = {
        let routes = c.nodes[0].routes();
        let gw_route = routes
            .iter()
            .find(|r| r.prefix.to_string() == bgp::GATEWAY_PREFIX)
            .cloned()
            .expect("gateway route");
        let ids: BTreeSet<u32> = routes
            .iter()
            .filter(|r| r.nexthop >= 60_000)
            .map(|r| r.nexthop)
            .collect();
        (gw_route, ids)
    };
    let rev = c.nodes[0]
        .vr
        .api(|cl| async move { cl.events(0, None, 0).await })
        .expect("events")
        .revision;
    let t0 = Instant::now();
    c.nodes[0].restart_vrouter_bgp();
    c.nodes[0]
        .bgp
        .wait_for_output("took over what an earlier run installed", CONVERGE);
    // Reconciled: it reads gobgpd's tables and installs what differs (nothing). A new route
    // from node 2 proves it follows again.
    let again = "198.18.99.2";
    c.nodes[1].pods[0]
        .ns
        .ip(&["addr", "add", &format!("{again}/32"), "dev", "eth0"]);
    c.nodes[1].vr.set_route(&format!("{again}/32"), 1);
    let out = c.nodes[0].pods[0]
        .ns
        .command("ping")
        .args(["-c", "1", "-w", "30", "-i", "0.01", "-q", again])
        .output()
        .expect("ping");
    assert!(
        out.status.success(),
        "no reply through a route learned after the restart\n{}",
        c.outputs()
    );
    eprintln!(
        "bgp scale: vrouter-bgp restarted with {ROUTES} routes in place: following again after {:.3} s",
        t0.elapsed().as_secs_f64()
    );
    let page = c.nodes[0]
        .vr
        .api(|cl| async move { cl.events(rev, None, 0).await })
        .expect("events");
    assert!(!page.reset);
    let removed: Vec<String> = page
        .events
        .iter()
        .filter(|e| {
            let op = e.change["op"].as_str().unwrap_or_default();
            op == "route-del" || op == "nexthop-del"
        })
        .map(|e| e.change.to_string())
        .collect();
    assert!(
        removed.is_empty(),
        "removed while vrouter-bgp restarted: {removed:?}"
    );
    let routes = c.nodes[0].routes();
    assert_eq!(held(&c, 0), base[0] + ROUTES + 2);
    assert!(routes.contains(&gw_route), "the gateway's route changed");
    let ids_after: BTreeSet<u32> = routes
        .iter()
        .filter(|r| r.nexthop >= 60_000 && r.prefix.to_string() != format!("{again}/32"))
        .map(|r| r.nexthop)
        .collect();
    assert_eq!(ids_after, ids, "nexthop ids changed");

    // Our intake alone, BGP's pace out of the way: node 2's vrouter-bgp stopped, the 10,000
    // removed from its vrouterd (its gobgpd keeps them), and started again: it reads gobgpd's
    // tables whole and installs them all.
    c.nodes[1].stop_vrouter_bgp();
    let scale: Vec<control_api::api::IpPrefix> = prefixes
        .iter()
        .map(|p| p.parse().expect("prefix"))
        .collect();
    for chunk in scale.chunks(control_api::api::ROUTE_BATCH_MAX) {
        let b = control_api::api::RouteBatch {
            set: Vec::new(),
            delete: chunk.to_vec(),
        };
        c.nodes[1]
            .vr
            .api(|cl| async move { cl.routes_batch(1, &b).await })
            .expect("removing the routes");
    }
    assert_eq!(held(&c, 1), base[1] + 2);
    let since = day_secs(SystemTime::now());
    let t0 = Instant::now();
    c.nodes[1].start_vrouter_bgp();
    let got = wait::poll(
        Duration::from_secs(120),
        || held(&c, 1),
        |n| *n == base[1] + ROUTES + 2,
    );
    assert!(
        got.is_ok(),
        "node 2: {got:?} routes after vrouter-bgp started again\n{}",
        c.outputs()
    );
    let alone = t0.elapsed();
    // Its log line for the last batch comes once vrouterd answered it.
    let intake = wait::poll(
        Duration::from_secs(5),
        || intake_log(&c.nodes[1].bgp.outputs(), since, ROUTES),
        |i| i.sent.all.is_some(),
    )
    .unwrap_or_else(|i| i);
    eprintln!(
        "bgp scale: node 2's vrouter-bgp started with its gobgpd holding the {ROUTES}: read them {}, sent them {} ({})",
        intake.read.show(),
        intake.sent.show(),
        intake.show()
    );
    report(
        "our intake alone, node 2 (vrouter-bgp started → vrouterd holds all)",
        alone,
    );
    assert!(
        alone <= INTAKE_MAX,
        "node 2's vrouter-bgp took {alone:?} to install the {ROUTES}"
    );

    // And the 10,000 go.
    let t0 = Instant::now();
    gw.originate(&prefixes, true);
    let mut took = Vec::new();
    for (i, base) in base.iter().enumerate() {
        // The two routes added since are there too.
        let got = wait::poll(Duration::from_secs(120), || held(&c, i), |n| *n == base + 2);
        assert!(
            got.is_ok(),
            "node {}: {got:?} routes, want {base} + 2\n{}",
            i + 1,
            c.outputs()
        );
        took.push(t0.elapsed());
    }
    report("withdrawal, every node", *took.iter().max().expect("nodes"));
    // None of them is left; the gateway's own route stays.
    for n in &c.nodes {
        let routes = n.routes();
        assert!(!routes.iter().any(|r| want.contains(&r.prefix.to_string())));
        assert!(routes
            .iter()
            .any(|r| r.prefix.to_string() == bgp::GATEWAY_PREFIX));
    }
}
