//! Two kernel pods (network namespaces on veth pairs, attached as af-packet vifs) talk through
//! vrouterd routing in VRF 1: vrouterd answers their ARP for the gateway, pings cross in both
//! directions, and 100 MB of TCP arrive intact (SHA-256 compared at both ends).

use std::path::PathBuf;

use testkit::kernel_pod::{route_in_vrf1, KernelPod};
use testkit::netns::Netns;
use testkit::vrouterd::Vrouterd;

fn vrouterd_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_vrouterd"))
}

#[test]
fn kernel_pods_ping_and_move_100_mb_of_tcp_through_vrouterd() {
    // The node's own namespace keeps its AF_PACKET fanout groups apart from other tests'.
    let node = Netns::new("kpnode");
    let pod1 = KernelPod::attached_to(Some(&node), "a", 1, 1500);
    let pod2 = KernelPod::attached_to(Some(&node), "b", 2, 1500);
    let vr = Vrouterd::start_netns(
        Some(&node),
        &vrouterd_bin(),
        &["--idle-sleep-us", "20"],
        &[],
    );

    route_in_vrf1(&vr, &[("pod1", &pod1), ("pod2", &pod2)]);

    let out = pod1.ping(&pod2.ip.to_string(), 5);
    assert!(out.contains("5 received"), "{out}");
    let out = pod2.ping(&pod1.ip.to_string(), 5);
    assert!(out.contains("5 received"), "{out}");
    assert!(
        out.contains("ttl=63"),
        "vrouterd decrements the TTL once: {out}"
    );
    let neigh = pod1.ns.exec(&["ip", "neigh", "show", "198.18.1.1"]);
    assert!(
        neigh.contains("00:00:5e:00:01:00"),
        "ARP for the gateway answered with the vrouter MAC: {neigh}"
    );

    let (sent, received) = pod1.tcp_transfer(&pod2, 100_000_000);
    assert!(sent.starts_with("100000000 "), "{sent}");
    assert_eq!(sent, received, "bytes and SHA-256 at both ends");

    let vifs = vr.api(|c| async move { c.vifs().await }).expect("vifs");
    // 100 MB in segments of at most 1448 bytes: at least 69,000 packets from pod1 to pod2.
    let counters = |name: &str| {
        vifs.iter()
            .find(|v| v.config.name == name)
            .map(|v| v.status.counters)
            .expect("vif listed")
    };
    assert!(counters("pod1").rx_packets > 69_000, "{vifs:?}");
    assert!(counters("pod2").tx_packets > 69_000, "{vifs:?}");
    assert!(
        counters("pod2").rx_packets > 0 && counters("pod1").tx_packets > 0,
        "ACKs went back"
    );
    let drops = vr
        .api(|c| async move { c.dropstats().await })
        .expect("dropstats");
    assert_eq!(drops.reasons.get("no_route"), Some(&0), "{drops:?}");
    let status = vr.stop();
    assert!(status.success(), "vrouterd exit {status}");
}
