//! Overlay routes over BGP: three nodes, each vrouterd + gobgpd + vrouter-bgp with two kernel
//! pods, peering through a GoBGP route reflector (testkit::bgp). Every pod reaches every pod on
//! the other nodes over VXLAN with the VNI the routes carried (on the fabric, read by tshark); a prefix
//! two nodes advertise becomes an ECMP nexthop that spreads flows over both (counted as they
//! leave and as they arrive at each node's pod); a route removed on its node is withdrawn
//! everywhere; a node whose gobgpd dies loses its routes elsewhere within the hold time (its
//! pods' traffic a counted drop, not a black hole), and gets them back when it returns. The
//! same cluster with VPNv4/VPNv6 routes: every pod reaches every other node's pods over
//! MPLS-over-UDP or MPLS-over-GRE, as each node's routes ask, with the per-VRF label they
//! carried; a prefix nodes 2 and 3 advertise with their own labels spreads flows over both, each
//! frame with the label of the node it goes to; a route removed on its node is withdrawn
//! everywhere; an FRR bgpd standing in for a gateway originates a VPNv4 route every node
//! forwards to with its label. With FRR's bgpd as the route reflector: the same VPN test, and
//! pods reaching each other over EVPN routes, IPv4 and IPv6.

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::time::Duration;

use control_api::api::{MplsTarget, Nexthop, TunnelEncap};
use testkit::bgp::{self, Cluster, NodeOverlay, Reflector, CONVERGE, VNI};
use testkit::wait;

fn vrouterd_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_vrouterd"))
}

/// Prefixes node `i` (index) has in VRF 1 through vrouter-bgp's tunnel or ECMP nexthops.
fn remote_prefixes(c: &Cluster, i: usize) -> BTreeSet<String> {
    c.nodes[i]
        .routes()
        .into_iter()
        .filter(|r| r.nexthop >= 60_000)
        .map(|r| r.prefix.to_string())
        .collect()
}

/// The /32s of every pod not on node `i`.
fn pods_elsewhere(c: &Cluster, i: usize, except: Option<usize>) -> BTreeSet<String> {
    c.nodes
        .iter()
        .enumerate()
        .filter(|(j, _)| *j != i && Some(*j) != except)
        .flat_map(|(_, n)| n.pods.iter().map(|p| format!("{}/32", p.ip)))
        .collect()
}

/// The /32s and /128s of every pod not on node `i`.
fn pods_elsewhere46(c: &Cluster, i: usize) -> BTreeSet<String> {
    let mut s = pods_elsewhere(c, i, None);
    for (_, n) in c.nodes.iter().enumerate().filter(|(j, _)| *j != i) {
        s.extend(n.pods.iter().map(|p| format!("{}/128", p.ip6)));
    }
    s
}

#[track_caller]
fn converge(c: &Cluster, i: usize, want: &BTreeSet<String>, what: &str) {
    if let Err(seen) = wait::poll(CONVERGE, || remote_prefixes(c, i), |s| s == want) {
        panic!(
            "node {}: {what}: remote routes {seen:?}, want {want:?}\n{}",
            i + 1,
            c.outputs()
        );
    }
}

/// One ping from `from`'s pod `a` to `dst`: whether a reply came.
fn ping_ok(c: &Cluster, from: usize, a: usize, dst: &str) -> bool {
    c.nodes[from].pods[a]
        .ns
        .command("ping")
        .args(["-c", "1", "-W", "1", "-q", dst])
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false)
}

#[test]
fn three_nodes_exchange_pod_routes_over_bgp_through_a_route_reflector() {
    let vrouterd = vrouterd_bin();
    let vrouter_bgp = bgp::vrouter_bgp_bin(&vrouterd);
    let mut c = Cluster::start(&vrouterd, &vrouter_bgp, "bgc", 3);
    for i in 0..3 {
        converge(&c, i, &pods_elsewhere(&c, i, None), "after start");
    }
    // Every remote pod route is a VXLAN tunnel to the node that has the pod, carrying the VNI.
    for (i, n) in c.nodes.iter().enumerate() {
        for r in n.routes().into_iter().filter(|r| r.nexthop >= 60_000) {
            assert_eq!(r.label, Some(VNI), "node {}: {r:?}", i + 1);
            let Nexthop::Tunnel { dip, dmac, .. } = n.nexthop(r.nexthop) else {
                panic!("node {}: {r:?} is not through a tunnel", i + 1);
            };
            let owner = c
                .nodes
                .iter()
                .find(|o| {
                    o.pods
                        .iter()
                        .any(|p| format!("{}/32", p.ip) == r.prefix.to_string())
                })
                .expect("a node has the pod");
            assert_eq!(dip.to_string(), bgp::fabric_ip(owner.k), "{r:?}");
            assert_eq!(dmac, Some(bgp::fabric_mac(owner.k)), "{r:?}");
        }
    }

    // Every pod reaches every pod on the other nodes; the fabric carries VNI 1001.
    let capture = c.nodes[0]
        .ns
        .capture(testkit::overlay::FABRIC_IFACE, "udp dst port 4789", 2);
    for i in 0..3 {
        for a in 0..2 {
            for j in (0..3).filter(|j| *j != i) {
                for b in 0..2 {
                    let dst = c.nodes[j].pods[b].ip.to_string();
                    let ok = wait::poll(
                        Duration::from_secs(10),
                        || ping_ok(&c, i, a, &dst),
                        |ok| *ok,
                    );
                    assert!(
                        ok.is_ok(),
                        "pod {a} of node {} cannot reach {dst} on node {}\n{}",
                        i + 1,
                        j + 1,
                        c.outputs()
                    );
                }
            }
        }
    }
    let frames = capture.frames(Duration::from_secs(5));
    assert!(!frames.is_empty(), "no VXLAN on node 1's fabric");
    // tshark's reading of the same frames: VXLAN with the VNI, pod addresses inside.
    let pcap = testkit::netns::PcapFile::write(&frames).expect("pcap");
    let out = std::process::Command::new("tshark")
        .args([
            "-r",
            &pcap.path.display().to_string(),
            "-T",
            "fields",
            "-E",
            "separator=;",
        ])
        .args(["-e", "vxlan.vni", "-e", "ip.src", "-e", "ip.dst"])
        .output()
        .expect("tshark");
    assert!(
        out.status.success(),
        "tshark: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let lines = String::from_utf8_lossy(&out.stdout);
    assert_eq!(lines.lines().count(), frames.len(), "{lines}");
    for l in lines.lines() {
        let f: Vec<&str> = l.split(';').collect();
        assert_eq!(f[0], VNI.to_string(), "tshark: {l}");
        // Outer then inner addresses: fabric, then pods.
        assert_eq!(f.len(), 3, "tshark: {l}");
        for addrs in &f[1..] {
            assert!(
                addrs.starts_with("198.19.0.") && addrs.contains(",198.18."),
                "tshark: {l}"
            );
        }
    }
    for f in &frames {
        let p = etherparse::SlicedPacket::from_ethernet(f).expect("frame");
        let Some(etherparse::TransportSlice::Udp(udp)) = p.transport else {
            panic!("not UDP: {f:02x?}");
        };
        let vxlan = udp.payload();
        assert!(vxlan.len() >= 8 && vxlan[0] & 0x08 != 0, "{vxlan:02x?}");
        let vni = u32::from_be_bytes([0, vxlan[4], vxlan[5], vxlan[6]]);
        assert_eq!(vni, VNI, "the VNI the routes carried");
    }

    // A prefix nodes 2 and 3 both have (behind their first pod): ECMP over both on node 1.
    let anycast = "198.18.99.1/32";
    for n in &c.nodes[1..] {
        n.vr.set_route(anycast, 1);
    }
    let mut want = pods_elsewhere(&c, 0, None);
    want.insert(anycast.to_string());
    converge(&c, 0, &want, "with the anycast prefix");
    let ecmp = wait::poll(
        CONVERGE,
        || {
            let r = c.nodes[0]
                .routes()
                .into_iter()
                .find(|r| r.prefix.to_string() == anycast)
                .expect("route");
            c.nodes[0].nexthop(r.nexthop)
        },
        |nh| matches!(nh, Nexthop::Ecmp { members } if members.len() == 2),
    );
    assert!(ecmp.is_ok(), "not ECMP over nodes 2 and 3: {ecmp:?}");
    // Flows to it spread over both nodes, each frame with the VNI.
    anycast_flows_spread_over_both_nodes(&c, anycast, "udp dst port 4789", "vxlan.vni", |_| VNI);

    // A route removed on its node (the pod went) is withdrawn everywhere.
    let gone = format!("{}/32", c.nodes[1].pods[1].ip);
    c.nodes[1]
        .vr
        .api(|cl| {
            let p = gone.parse().unwrap();
            async move { cl.route_del(1, &p).await }
        })
        .expect("route del");
    want.remove(&gone);
    converge(&c, 0, &want, "after node 2 removed a pod route");
    let mut want3 = pods_elsewhere(&c, 2, None);
    want3.remove(&gone);
    // Node 3 has the anycast prefix itself: it keeps its own route.
    converge(&c, 2, &want3, "after node 2 removed a pod route");
    assert!(
        c.nodes[2]
            .routes()
            .iter()
            .any(|r| r.prefix.to_string() == anycast && r.nexthop == 1),
        "node 3's own anycast route replaced"
    );

    // Node 3's gobgpd dies (no graceful restart in this cluster): within the hold time its
    // routes leave nodes 1 and 2, the anycast prefix goes to node 2 alone, and node 3's pods
    // are no longer reachable. (With graceful restart, `a_gobgpd_restart_keeps_the_nodes_
    // routes_and_traffic_flowing`, they would stay for the restart time.)
    let t0 = std::time::Instant::now();
    let mut g = c.nodes[2].gobgpd.take().expect("gobgpd");
    g.signal("KILL");
    let _ = g.wait(Duration::from_secs(5));
    let mut want1 = pods_elsewhere(&c, 0, Some(2));
    want1.remove(&gone);
    want1.insert(anycast.to_string());
    converge(&c, 0, &want1, "after node 3 went away");
    let took = t0.elapsed();
    assert!(
        took < Duration::from_secs(u64::from(bgp::HOLD_TIME) + 5),
        "routes went after {took:?}"
    );
    // The pod routes and the anycast path are withdrawn in separate updates: the anycast route
    // may still be ECMP for a moment after node 3's pod routes have gone.
    let single = wait::poll(
        CONVERGE,
        || {
            let r = c.nodes[0]
                .routes()
                .into_iter()
                .find(|r| r.prefix.to_string() == anycast)
                .expect("anycast route");
            c.nodes[0].nexthop(r.nexthop)
        },
        |nh| matches!(nh, Nexthop::Tunnel { dip, .. } if dip.to_string() == bgp::fabric_ip(2)),
    );
    assert!(
        single.is_ok(),
        "anycast not through node 2 alone: {single:?}"
    );
    let node3_pod = c.nodes[2].pods[0].ip.to_string();
    let no_route = || {
        c.nodes[0]
            .vr
            .api(|cl| async move { cl.dropstats().await })
            .expect("dropstats")
            .reasons
            .get("no_route")
            .copied()
            .unwrap_or(0)
    };
    let before = no_route();
    assert!(!ping_ok(&c, 0, 0, &node3_pod), "node 3's pod still reached");
    // Not sent into a black hole: dropped on node 1, counted.
    assert!(
        wait::poll(Duration::from_secs(5), no_route, |n| *n > before).is_ok(),
        "pings to node 3's pod not counted as no_route drops on node 1"
    );

    // It comes back: so do its routes.
    c.nodes[2].restart_gobgpd();
    converge(&c, 0, &want, "after node 3's gobgpd restarted");
    assert!(
        wait::poll(
            Duration::from_secs(10),
            || ping_ok(&c, 0, 0, &node3_pod),
            |ok| *ok
        )
        .is_ok(),
        "node 3's pod not reached again\n{}",
        c.outputs()
    );
}

/// Node `i`'s remote routes lack none of `want`'s: panics naming `what` if they do.
#[track_caller]
fn still_there(c: &Cluster, i: usize, want: &BTreeSet<String>, what: &str) {
    let have = remote_prefixes(c, i);
    let lost: Vec<&String> = want.difference(&have).collect();
    assert!(
        lost.is_empty(),
        "node {}: {what}: {lost:?} removed\n{}",
        i + 1,
        c.outputs()
    );
}

/// Whether the reflector holds node 3's pod routes refreshed (not stale) from its gobgpd.
fn refreshed_on_the_reflector(c: &Cluster, node3: &BTreeSet<String>) -> bool {
    match c.reflector {
        Reflector::Gobgp => refreshed_on_gobgp(c, node3),
        Reflector::Frr => frr_has_node3_afresh(c, node3),
    }
}

/// FRR: the session to node 3 is up and has delivered its End-of-RIB (what ends the stale
/// period of a graceful restart), and node 3's pod routes are in its VPNv4 table.
fn frr_has_node3_afresh(c: &Cluster, node3: &BTreeSet<String>) -> bool {
    let peer = bgp::frr_vtysh(c, "show bgp neighbors 198.51.100.3 json");
    let Ok(v) = serde_json::from_str::<serde_json::Value>(&peer) else {
        return false;
    };
    let n = &v["198.51.100.3"];
    let eor = n["gracefulRestartInfo"]["endOfRibRecv"]
        .as_object()
        .is_some_and(|m| m.values().any(|b| b == true));
    let table = bgp::frr_vtysh(c, "show bgp ipv4 vpn");
    n["bgpState"] == "Established"
        && eor
        && node3
            .iter()
            .all(|p| table.contains(p.trim_end_matches("/32")))
}

fn refreshed_on_gobgp(c: &Cluster, node3: &BTreeSet<String>) -> bool {
    let table = bgp::gobgp(&c.rr_ns, &["global", "rib", "-a", "evpn", "-j"]);
    let Ok(serde_json::Value::Object(dests)) = serde_json::from_str(&table) else {
        return false;
    };
    let paths: Vec<&serde_json::Value> = dests
        .values()
        .flat_map(|d| d.as_array())
        .flatten()
        .collect();
    node3.iter().all(|p| {
        paths.iter().any(|path| {
            path["nlri"]["value"]["prefix"] == p.as_str()
                && path["stale"] != true
                && path["source-id"] == "198.51.100.3"
        })
    })
}

/// Graceful restart: node 3's gobgpd is killed and started again (`-r`, within the restart
/// time) while node 1's pod pings node 3's pod every 50 ms. Its routes stay on nodes 1 and 2
/// (the reflector keeps them, stale, until node 3 sends them again), node 3 keeps the others'
/// (vrouter-bgp waits for its gobgpd's peers' End-of-RIB before removing anything gobgpd
/// lacks), so at most a few echo requests or replies are lost; the reflector holds node 3's
/// routes refreshed afterwards.
#[test]
fn a_gobgpd_restart_keeps_the_nodes_routes_and_traffic_flowing() {
    gobgpd_restart_keeps_routes_and_traffic(Reflector::Gobgp, "bgr");
}

/// The same with FRR's bgpd as the reflector, over VPNv4/VPNv6 routes: FRR 8.4 keeps a
/// restarting peer's routes per address family it does graceful restart for, and L2VPN EVPN
/// is not one of them (its neighbour state lists only the VPN families).
#[test]
fn a_gobgpd_restart_keeps_routes_and_traffic_through_an_frr_reflector() {
    gobgpd_restart_keeps_routes_and_traffic(Reflector::Frr, "bgf");
}

/// Node 3's gobgpd killed and started again as a restarting speaker: over EVPN with a GoBGP
/// reflector, over VPNv4/VPNv6 (MPLS over UDP) with FRR.
fn gobgpd_restart_keeps_routes_and_traffic(reflector: Reflector, tag: &str) {
    let vrouterd = vrouterd_bin();
    let vrouter_bgp = bgp::vrouter_bgp_bin(&vrouterd);
    let overlay = match reflector {
        Reflector::Gobgp => NodeOverlay::Evpn,
        Reflector::Frr => NodeOverlay::Vpn { mpls_encap: "udp" },
    };
    let mut c = Cluster::start_graceful(&vrouterd, &vrouter_bgp, tag, 3, reflector, overlay);
    let want: Vec<BTreeSet<String>> = (0..3)
        .map(|i| match overlay {
            NodeOverlay::Evpn => pods_elsewhere(&c, i, None),
            NodeOverlay::Vpn { .. } => pods_elsewhere46(&c, i),
        })
        .collect();
    for (i, w) in want.iter().enumerate() {
        converge(&c, i, w, "after start");
    }
    let node3: BTreeSet<String> = c.nodes[2]
        .pods
        .iter()
        .map(|p| format!("{}/32", p.ip))
        .collect();
    assert!(
        wait::poll(
            CONVERGE,
            || refreshed_on_the_reflector(&c, &node3),
            |ok| *ok
        )
        .is_ok(),
        "the reflector lacks node 3's routes"
    );
    let dst = c.nodes[2].pods[0].ip.to_string();
    assert!(
        wait::poll(
            Duration::from_secs(10),
            || ping_ok(&c, 0, 0, &dst),
            |ok| *ok
        )
        .is_ok(),
        "node 3's pod not reached before the restart\n{}",
        c.outputs()
    );
    let ping = testkit::process::TestProcess::spawn(
        std::path::Path::new("/usr/sbin/ip"),
        &[
            "netns",
            "exec",
            c.nodes[0].pods[0].ns.name(),
            "ping",
            "-i",
            "0.05",
            "-W",
            "1",
            "-q",
            &dst,
        ],
    );
    std::thread::sleep(Duration::from_secs(1));
    let t0 = std::time::Instant::now();
    let mut g = c.nodes[2].gobgpd.take().expect("gobgpd");
    g.signal("KILL");
    let _ = g.wait(Duration::from_secs(5));
    // Down for a second and a half: the reflector's session to it is gone meanwhile.
    while t0.elapsed() < Duration::from_millis(1500) {
        for i in [0, 2] {
            still_there(&c, i, &want[i], "while node 3's gobgpd was down");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    c.nodes[2].restart_gobgpd();
    let back = std::time::Instant::now();
    let mut refreshed: Option<std::time::Instant> = None;
    // Until the reflector has node 3's routes afresh, and two seconds more.
    while refreshed.is_none_or(|t| t.elapsed() < Duration::from_secs(2)) {
        for i in [0, 2] {
            still_there(&c, i, &want[i], "while node 3's gobgpd came back");
        }
        if refreshed.is_none() && refreshed_on_the_reflector(&c, &node3) {
            refreshed = Some(std::time::Instant::now());
            eprintln!(
                "node 3's routes refreshed on the reflector {:.3} s after its gobgpd started again",
                back.elapsed().as_secs_f64()
            );
        }
        assert!(
            back.elapsed() < Duration::from_secs(u64::from(bgp::RESTART_TIME)),
            "node 3's routes not refreshed on the reflector within the restart time\n{}",
            c.outputs()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    for (i, w) in want.iter().enumerate() {
        converge(&c, i, w, "after node 3's gobgpd restarted");
    }
    ping.signal("INT");
    let mut ping = ping;
    let _ = ping.wait(Duration::from_secs(5));
    let out = ping.stdout();
    let summary = out
        .lines()
        .find(|l| l.contains("transmitted"))
        .unwrap_or_default();
    let count = |what: &str| -> u32 {
        summary
            .split(',')
            .find(|f| f.contains(what))
            .and_then(|f| f.split_whitespace().next())
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("no {what} in ping's summary: {out}"))
    };
    let (sent, received) = (count("transmitted"), count("received"));
    eprintln!(
        "across node 3's gobgpd restart: {sent} echo requests, {} lost",
        sent - received
    );
    assert!(sent >= 40, "ping sent only {sent}: {out}");
    assert!(
        sent - received <= 3,
        "{} of {sent} pings lost across node 3's gobgpd restart: {out}\n{}",
        sent - received,
        c.outputs()
    );
}

/// The UDP port of the anycast flows.
const ANYCAST_PORT: u16 = 9999;
/// How many flows (source ports) go to the anycast prefix.
const ANYCAST_FLOWS: u16 = 64;

/// Node 1's vrouter-bgp killed and started again while its ECMP group to `anycast` has a
/// tunnel with its own label per node: the new run takes over what the old one installed and
/// changes nothing in vrouterd (no nexthop or route replaced, none left behind), and flows
/// still spread with each node's label.
fn vrouter_bgp_restart_leaves_the_labelled_group_alone(c: &mut Cluster, anycast: &str) {
    let nexthops = |c: &Cluster| {
        c.nodes[0]
            .vr
            .api(|cl| async move { cl.nexthops().await })
            .expect("nexthops")
    };
    let before = nexthops(c);
    let rev = c.nodes[0]
        .vr
        .api(|cl| async move { cl.events(0, None, 0).await })
        .expect("events")
        .revision;
    c.nodes[0].restart_vrouter_bgp();
    c.nodes[0]
        .bgp
        .wait_for_output("took over what an earlier run installed", CONVERGE);
    // Time to reconcile with gobgpd's tables (it would act within this).
    std::thread::sleep(Duration::from_secs(3));
    let changes = c.nodes[0]
        .vr
        .api(|cl| async move { cl.events(rev, None, 0).await })
        .expect("events");
    assert!(
        changes.events.is_empty() && !changes.reset,
        "vrouter-bgp's restart changed node 1: {:?}\n{}",
        changes.events,
        c.outputs()
    );
    assert_eq!(nexthops(c), before, "node 1's nexthops across the restart");
    assert_anycast_ecmp(c, anycast, &bgp::label);
    anycast_flows_spread_over_both_nodes(
        c,
        anycast,
        "udp dst port 6635 or ip proto 47",
        "mpls.label",
        bgp::label,
    );
}

/// Node 1's route to `anycast` (a /32 nodes 2 and 3 both have): ECMP over a tunnel to each,
/// every member pushing that node's `label(k)` (its own, or the route's).
#[track_caller]
fn assert_anycast_ecmp(c: &Cluster, anycast: &str, label: &impl Fn(u8) -> u32) {
    let route = c.nodes[0]
        .routes()
        .into_iter()
        .find(|r| r.prefix.to_string() == anycast)
        .expect("anycast route");
    let Nexthop::Ecmp { members } = c.nodes[0].nexthop(route.nexthop) else {
        panic!("anycast not ECMP: {route:?}");
    };
    let mut nodes = BTreeSet::new();
    for m in members {
        let Nexthop::Tunnel {
            dip, label: own, ..
        } = c.nodes[0].nexthop(m)
        else {
            panic!("member {m} is not a tunnel");
        };
        let k = (2..=3)
            .find(|k| bgp::fabric_ip(*k) == dip.to_string())
            .unwrap_or_else(|| panic!("member {m} to {dip}: not node 2 or 3"));
        assert_eq!(
            own.or(route.label),
            Some(label(k)),
            "member {m} toward node {k}: own label {own:?}, route {route:?}"
        );
        nodes.insert(k);
    }
    assert_eq!(nodes, BTreeSet::from([2, 3]), "{route:?}");
}

/// [`ANYCAST_FLOWS`] UDP datagrams from node 1's first pod to `anycast`, each from a source
/// port of its own: node 1's ECMP route spreads the flows over nodes 2 and 3. Every one leaves
/// node 1's fabric (captured with `fabric_filter`) toward node 2 or 3 with that node's
/// `label(k)` in tshark's `label_field` (`vxlan.vni` or `mpls.label`), and arrives at that
/// node's first pod; both nodes get a fair share.
fn anycast_flows_spread_over_both_nodes(
    c: &Cluster,
    anycast: &str,
    fabric_filter: &str,
    label_field: &str,
    label: impl Fn(u8) -> u32,
) {
    assert_anycast_ecmp(c, anycast, &label);
    let ip = anycast.trim_end_matches("/32");
    let on_pod = format!("udp dst port {ANYCAST_PORT}");
    let fabric = c.nodes[0].ns.capture(
        testkit::overlay::FABRIC_IFACE,
        fabric_filter,
        u32::from(ANYCAST_FLOWS),
    );
    let pods: Vec<_> = c.nodes[1..]
        .iter()
        .map(|n| {
            n.pods[0]
                .ns
                .capture("eth0", &on_pod, u32::from(ANYCAST_FLOWS))
        })
        .collect();
    let send = "import socket,sys,time\n\
                dst, port, first, n = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])\n\
                for sport in range(first, first + n):\n    \
                    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\n    \
                    s.bind(('', sport))\n    \
                    s.sendto(b'anycast flow', (dst, port))\n    \
                    s.close()\n    \
                    time.sleep(0.005)\n";
    c.nodes[0].pods[0].ns.exec(&[
        "python3",
        "-c",
        send,
        ip,
        &ANYCAST_PORT.to_string(),
        "30000",
        &ANYCAST_FLOWS.to_string(),
    ]);
    let frames = fabric.frames(Duration::from_secs(5));
    let pcap = testkit::netns::PcapFile::write(&frames).expect("pcap");
    let out = std::process::Command::new("tshark")
        .args(["-r", &pcap.path.display().to_string()])
        .args([
            "-d",
            "udp.port==6635,mpls",
            "-T",
            "fields",
            "-E",
            "separator=;",
        ])
        .args(["-e", "ip.dst", "-e", label_field])
        .output()
        .expect("tshark");
    assert!(
        out.status.success(),
        "tshark: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let lines = String::from_utf8_lossy(&out.stdout);
    let mut sent = [0u32; 4];
    for l in lines.lines() {
        let f: Vec<&str> = l.split(';').collect();
        assert_eq!(f.len(), 2, "tshark: {l}");
        let k = (2..=3u8)
            .find(|k| f[0] == format!("{},{ip}", bgp::fabric_ip(*k)))
            .unwrap_or_else(|| panic!("not toward {ip} on node 2 or 3: {l}"));
        assert_eq!(f[1], label(k).to_string(), "label toward node {k}: {l}");
        sent[usize::from(k)] += 1;
    }
    assert_eq!(
        sent[2] + sent[3],
        u32::from(ANYCAST_FLOWS),
        "frames on node 1's fabric: {lines}"
    );
    let arrived: Vec<u32> = pods
        .into_iter()
        .map(|p| p.frames(Duration::from_secs(3)).len() as u32)
        .collect();
    assert_eq!(
        arrived,
        [sent[2], sent[3]],
        "flows at nodes 2 and 3's pods, as sent toward each"
    );
    for k in [2, 3] {
        assert!(
            sent[k] >= u32::from(ANYCAST_FLOWS) / 8,
            "{} of {ANYCAST_FLOWS} flows went to node {k}: {sent:?}",
            sent[k]
        );
    }
}

/// Every pod pings every pod on the other nodes (their IPv6 addresses too when `v6`).
fn ping_all(c: &Cluster, v6: bool) {
    for i in 0..c.nodes.len() {
        for a in 0..2 {
            for j in (0..c.nodes.len()).filter(|j| *j != i) {
                for b in 0..2 {
                    let pod = &c.nodes[j].pods[b];
                    let mut dsts = vec![pod.ip.to_string()];
                    if v6 {
                        dsts.push(pod.ip6.to_string());
                    }
                    for dst in dsts {
                        let ok = wait::poll(
                            Duration::from_secs(10),
                            || ping_ok(c, i, a, &dst),
                            |ok| *ok,
                        );
                        assert!(
                            ok.is_ok(),
                            "pod {a} of node {} cannot reach {dst} on node {}\n{}",
                            i + 1,
                            j + 1,
                            c.outputs()
                        );
                    }
                }
            }
        }
    }
}

#[test]
fn three_nodes_reach_each_other_over_mpls_with_vpn_routes() {
    mpls_cluster(Reflector::Gobgp, "bgv");
}

/// The same with FRR's bgpd reflecting the VPNv4/VPNv6 routes (issue 25's interop).
#[test]
fn three_nodes_reach_each_other_over_mpls_through_an_frr_route_reflector() {
    mpls_cluster(Reflector::Frr, "bgf");
}

/// EVPN type-5 routes reflected by FRR's bgpd: every pod reaches every other node's pods over
/// VXLAN, over IPv4 and, once the pods' /128s are routed, over IPv6 too.
#[test]
fn three_nodes_exchange_evpn_routes_through_an_frr_route_reflector() {
    let vrouterd = vrouterd_bin();
    let vrouter_bgp = bgp::vrouter_bgp_bin(&vrouterd);
    let c = Cluster::start_with(&vrouterd, &vrouter_bgp, "bge", 3, Reflector::Frr, |_| {
        NodeOverlay::Evpn
    });
    for i in 0..3 {
        converge(&c, i, &pods_elsewhere(&c, i, None), "after start");
    }
    let summary = bgp::frr_vtysh(&c, "show bgp l2vpn evpn summary");
    for k in 1..=3 {
        assert!(
            summary.contains(&format!("198.51.100.{k}")),
            "FRR does not peer with node {k}: {summary}"
        );
    }
    for n in &c.nodes {
        for r in n.routes().into_iter().filter(|r| r.nexthop >= 60_000) {
            assert_eq!(r.label, Some(VNI), "node {}: {r:?}", n.k);
            assert!(
                matches!(
                    n.nexthop(r.nexthop),
                    Nexthop::Tunnel {
                        encap: TunnelEncap::Vxlan,
                        ..
                    }
                ),
                "node {}: {r:?}",
                n.k
            );
        }
    }
    ping_all(&c, false);

    // The pods' IPv6 addresses routed on every node go out as IPv6 EVPN type-5 routes: every
    // pod reaches every other node's pods over IPv6 too, in VXLAN with the VNI.
    for n in &c.nodes {
        for (i, pod) in n.pods.iter().enumerate() {
            n.vr.set_route(&format!("{}/128", pod.ip6), i as u32 + 1);
            n.vr.set_route(&format!("{}/128", pod.gateway6()), 10);
        }
    }
    for i in 0..3 {
        converge(
            &c,
            i,
            &pods_elsewhere46(&c, i),
            "with the pods' IPv6 routes",
        );
    }
    for n in &c.nodes {
        for r in n.routes().into_iter().filter(|r| r.nexthop >= 60_000) {
            assert_eq!(r.label, Some(VNI), "node {}: {r:?}", n.k);
            assert!(
                matches!(
                    n.nexthop(r.nexthop),
                    Nexthop::Tunnel {
                        encap: TunnelEncap::Vxlan,
                        ..
                    }
                ),
                "node {}: {r:?}",
                n.k
            );
        }
    }
    ping_all(&c, true);
    let capture = c.nodes[0]
        .ns
        .capture(testkit::overlay::FABRIC_IFACE, "udp dst port 4789", 2);
    let dst6 = c.nodes[1].pods[0].ip6.to_string();
    assert!(ping_ok(&c, 0, 0, &dst6), "ping6 to {dst6}");
    let frames = capture.frames(Duration::from_secs(5));
    let pcap = testkit::netns::PcapFile::write(&frames).expect("pcap");
    let out = std::process::Command::new("tshark")
        .args(["-r", &pcap.path.display().to_string()])
        .args(["-T", "fields", "-E", "separator=;"])
        .args(["-e", "ip.dst", "-e", "vxlan.vni", "-e", "ipv6.dst"])
        .output()
        .expect("tshark");
    let lines = String::from_utf8_lossy(&out.stdout);
    assert_eq!(lines.lines().count(), 2, "{lines}");
    // The echo request toward node 2 and its reply from it.
    let want = [
        format!("{};{VNI};{dst6}", bgp::fabric_ip(2)),
        format!("{};{VNI};{}", bgp::fabric_ip(1), c.nodes[0].pods[0].ip6),
    ];
    for (l, want) in lines.lines().zip(want) {
        assert_eq!(l, want, "tshark: {lines}");
    }
}

/// Nodes 1 and 3 ask for MPLS-over-UDP, node 2 for MPLS-over-GRE; each has its own label.
fn mpls_cluster(reflector: Reflector, tag: &str) {
    let vrouterd = vrouterd_bin();
    let vrouter_bgp = bgp::vrouter_bgp_bin(&vrouterd);
    let encap_of = |k: u8| if k == 2 { "gre" } else { "udp" };
    let mut c = Cluster::start_with(&vrouterd, &vrouter_bgp, tag, 3, reflector, |k| {
        NodeOverlay::Vpn {
            mpls_encap: encap_of(k),
        }
    });
    for i in 0..3 {
        converge(&c, i, &pods_elsewhere46(&c, i), "after start");
    }
    if reflector == Reflector::Frr {
        // The routes went through FRR: it holds every node's pods' VPNv4 routes.
        let table = bgp::frr_vtysh(&c, "show bgp ipv4 vpn");
        for n in &c.nodes {
            for p in &n.pods {
                assert!(
                    table.contains(&p.ip.to_string()),
                    "{} not in FRR's table: {table}",
                    p.ip
                );
            }
        }
    }
    for (i, n) in c.nodes.iter().enumerate() {
        // vrouter-bgp mapped the VRF's label to it (the agent had not).
        let mpls = n.vr.api(|cl| async move { cl.mpls().await }).expect("mpls");
        assert!(
            mpls.iter()
                .any(|m| m.label == bgp::label(n.k) && m.target() == Some(MplsTarget::Vrf(1))),
            "node {}: label {} does not lead to vrf 1: {mpls:?}",
            i + 1,
            bgp::label(n.k)
        );
        // Every remote pod route: a tunnel to the pod's node in the encapsulation that node's
        // routes asked for, carrying that node's label.
        for r in n.routes().into_iter().filter(|r| r.nexthop >= 60_000) {
            let owner = c
                .nodes
                .iter()
                .find(|o| {
                    o.pods.iter().any(|p| {
                        [format!("{}/32", p.ip), format!("{}/128", p.ip6)]
                            .contains(&r.prefix.to_string())
                    })
                })
                .expect("a node has the pod");
            assert_eq!(r.label, Some(bgp::label(owner.k)), "node {}: {r:?}", i + 1);
            let Nexthop::Tunnel {
                encap, dip, dmac, ..
            } = n.nexthop(r.nexthop)
            else {
                panic!("node {}: {r:?} is not through a tunnel", i + 1);
            };
            let want = if owner.k == 2 {
                TunnelEncap::Mplsogre
            } else {
                TunnelEncap::Mplsoudp
            };
            assert_eq!(encap, want, "node {}: {r:?}", i + 1);
            assert_eq!(dip.to_string(), bgp::fabric_ip(owner.k), "{r:?}");
            assert_eq!(dmac, None, "VPN routes carry no router's MAC: {r:?}");
        }
    }

    // Every pod reaches every pod on the other nodes, over IPv4 and IPv6.
    let capture = c.nodes[0].ns.capture(
        testkit::overlay::FABRIC_IFACE,
        "udp dst port 6635 or ip proto 47",
        64,
    );
    ping_all(&c, true);
    let frames = capture.frames(Duration::from_secs(5));
    assert!(!frames.is_empty(), "no MPLS on node 1's fabric");
    // tshark's reading: MPLS over UDP 6635 toward nodes 1 and 3, over GRE toward node 2, each
    // with the label of the node it goes to; pods' addresses inside.
    let pcap = testkit::netns::PcapFile::write(&frames).expect("pcap");
    let out = std::process::Command::new("tshark")
        .args(["-r", &pcap.path.display().to_string()])
        .args([
            "-d",
            "udp.port==6635,mpls",
            "-T",
            "fields",
            "-E",
            "separator=;",
        ])
        .args(["-e", "ip.dst", "-e", "ip.proto", "-e", "mpls.label"])
        .args(["-e", "ipv6.dst"])
        .output()
        .expect("tshark");
    assert!(
        out.status.success(),
        "tshark: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let lines = String::from_utf8_lossy(&out.stdout);
    assert_eq!(lines.lines().count(), frames.len(), "{lines}");
    let mut seen = BTreeSet::new();
    for l in lines.lines() {
        let f: Vec<&str> = l.split(';').collect();
        assert_eq!(f.len(), 4, "tshark: {l}");
        let outer_dst = f[0].split(',').next().unwrap_or_default();
        let k: u8 = outer_dst
            .strip_prefix("198.19.0.")
            .and_then(|k| k.parse().ok())
            .unwrap_or_else(|| panic!("outer destination not a node: {l}"));
        let proto = f[1].split(',').next().unwrap_or_default();
        let want_proto = if k == 2 { "47" } else { "17" };
        assert_eq!(proto, want_proto, "encapsulation toward node {k}: {l}");
        assert_eq!(
            f[2],
            bgp::label(k).to_string(),
            "label toward node {k}: {l}"
        );
        let inner6 = f[3].starts_with("2001:db8:18:");
        assert!(
            inner6 || f[0].contains(",198.18."),
            "no pod address inside: {l}"
        );
        seen.insert((k, inner6));
    }
    for want in [
        (1, false),
        (1, true),
        (2, false),
        (2, true),
        (3, false),
        (3, true),
    ] {
        assert!(
            seen.contains(&want),
            "no (node, ipv6) {want:?} frame: {lines}"
        );
    }

    // A prefix nodes 2 and 3 both have (behind their first pod), each advertising it with its
    // own label: node 1 spreads flows over both, each pushing the label of the node it goes to.
    let anycast = "198.18.99.1/32";
    for n in &c.nodes[1..] {
        n.vr.set_route(anycast, 1);
    }
    let mut want = pods_elsewhere46(&c, 0);
    want.insert(anycast.to_string());
    converge(&c, 0, &want, "with the anycast prefix");
    let ecmp = wait::poll(
        CONVERGE,
        || {
            let r = c.nodes[0]
                .routes()
                .into_iter()
                .find(|r| r.prefix.to_string() == anycast)
                .expect("route");
            c.nodes[0].nexthop(r.nexthop)
        },
        |nh| matches!(nh, Nexthop::Ecmp { members } if members.len() == 2),
    );
    assert!(ecmp.is_ok(), "not ECMP over nodes 2 and 3: {ecmp:?}");
    anycast_flows_spread_over_both_nodes(
        &c,
        anycast,
        "udp dst port 6635 or ip proto 47",
        "mpls.label",
        bgp::label,
    );
    vrouter_bgp_restart_leaves_the_labelled_group_alone(&mut c, anycast);
    for n in &c.nodes[1..] {
        n.vr.api(|cl| {
            let p = anycast.parse().unwrap();
            async move { cl.route_del(1, &p).await }
        })
        .expect("anycast route del");
    }
    converge(
        &c,
        0,
        &pods_elsewhere46(&c, 0),
        "after the anycast prefix went",
    );

    // A pod gone from node 2: its routes are withdrawn on nodes 1 and 3.
    let gone = &c.nodes[1].pods[1];
    let gone = [format!("{}/32", gone.ip), format!("{}/128", gone.ip6)];
    for p in &gone {
        c.nodes[1]
            .vr
            .api(|cl| {
                let p = p.parse().unwrap();
                async move { cl.route_del(1, &p).await }
            })
            .expect("route del");
    }
    for i in [0, 2] {
        let mut want = pods_elsewhere46(&c, i);
        for p in &gone {
            want.remove(p);
        }
        converge(&c, i, &want, "after node 2 removed a pod's routes");
    }
    let dst = c.nodes[1].pods[1].ip.to_string();
    assert!(!ping_ok(&c, 0, 0, &dst), "withdrawn pod still reached");

    // A gateway stand-in, FRR's bgpd, originates a VPNv4 route with a label and no
    // encapsulation community: every node installs it in its own preferred encapsulation and
    // forwards to the gateway with the gateway's label.
    let gw = c.frr_gateway(tag);
    for n in &c.nodes {
        let got = wait::poll(
            CONVERGE,
            || {
                n.routes()
                    .into_iter()
                    .find(|r| r.prefix.to_string() == bgp::GATEWAY_PREFIX)
            },
            |r| r.is_some(),
        );
        let Ok(Some(r)) = got else {
            panic!(
                "node {}: no route to the gateway\n{}\n--- gateway\n{}",
                n.k,
                c.outputs(),
                gw.bgpd.outputs()
            );
        };
        assert_eq!(r.label, Some(bgp::GATEWAY_LABEL), "node {}: {r:?}", n.k);
        let Nexthop::Tunnel { encap, dip, .. } = n.nexthop(r.nexthop) else {
            panic!("node {}: {r:?} is not through a tunnel", n.k);
        };
        assert_eq!(dip.to_string(), bgp::GATEWAY_FABRIC_IP, "node {}", n.k);
        let want = if n.k == 2 {
            TunnelEncap::Mplsogre
        } else {
            TunnelEncap::Mplsoudp
        };
        assert_eq!(encap, want, "node {}: the node's preference", n.k);
    }
    let capture = gw.ns.capture("eth0", "udp dst port 6635 or ip proto 47", 4);
    for i in [0, 1] {
        // Nothing answers behind the gateway: the pings only have to leave.
        for _ in 0..2 {
            ping_ok(&c, i, 0, "198.18.200.1");
        }
    }
    let frames = capture.frames(Duration::from_secs(5));
    let pcap = testkit::netns::PcapFile::write(&frames).expect("pcap");
    let out = std::process::Command::new("tshark")
        .args(["-r", &pcap.path.display().to_string()])
        .args([
            "-d",
            "udp.port==6635,mpls",
            "-T",
            "fields",
            "-E",
            "separator=;",
        ])
        .args([
            "-e",
            "ip.src",
            "-e",
            "ip.dst",
            "-e",
            "ip.proto",
            "-e",
            "mpls.label",
        ])
        .output()
        .expect("tshark");
    let lines = String::from_utf8_lossy(&out.stdout);
    let mut from = BTreeSet::new();
    for l in lines.lines() {
        let f: Vec<&str> = l.split(';').collect();
        assert_eq!(f.len(), 4, "tshark: {l}");
        let src = f[0].split(',').next().unwrap_or_default();
        let proto = f[2].split(',').next().unwrap_or_default();
        assert_eq!(
            f[1],
            format!("{},198.18.200.1", bgp::GATEWAY_FABRIC_IP),
            "tshark: {l}"
        );
        assert_eq!(f[3], bgp::GATEWAY_LABEL.to_string(), "tshark: {l}");
        let want = if src == bgp::fabric_ip(2) { "47" } else { "17" };
        assert_eq!(proto, want, "tshark: {l}");
        from.insert(src.to_string());
    }
    assert_eq!(
        from,
        BTreeSet::from([bgp::fabric_ip(1), bgp::fabric_ip(2)]),
        "frames at the gateway: {lines}"
    );

    // Node 3's VRF loses its routing identity: vrouter-bgp removes the label mapping it made,
    // node 3's routes are withdrawn from node 1, and node 3 imports nothing any more.
    c.nodes[2]
        .vr
        .api(|cl| async move { cl.vrf_routing_del(1).await })
        .expect("routing del");
    let mapped = wait::poll(
        CONVERGE,
        || {
            c.nodes[2]
                .vr
                .api(|cl| async move { cl.mpls().await })
                .expect("mpls")
        },
        |m| m.iter().all(|e| e.label != bgp::label(3)),
    );
    assert!(
        mapped.is_ok(),
        "label {} still mapped: {mapped:?}",
        bgp::label(3)
    );
    let mut want1: BTreeSet<String> = pods_elsewhere46(&c, 0)
        .into_iter()
        .filter(|p| {
            !c.nodes[2]
                .pods
                .iter()
                .any(|q| *p == format!("{}/32", q.ip) || *p == format!("{}/128", q.ip6))
        })
        .collect();
    for p in &gone {
        want1.remove(p);
    }
    want1.insert(bgp::GATEWAY_PREFIX.to_string());
    converge(&c, 0, &want1, "after node 3's identity went");
    converge(&c, 2, &BTreeSet::new(), "after node 3's identity went");
}
