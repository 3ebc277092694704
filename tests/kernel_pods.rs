//! Two kernel pods (network namespaces on veth pairs, attached as af-packet vifs) talk through
//! vrouterd routing in VRF 1: vrouterd answers their ARP for the gateway, pings cross in both
//! directions, and 100 MB of TCP arrive intact (SHA-256 compared at both ends).

use std::path::PathBuf;

use control_api::api::{IpPrefix, MacAddr, Nexthop, Route, VifRequest, VifType};
use testkit::kernel_pod::KernelPod;
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

    vr.api(|c| async move { c.vrf_add(1).await })
        .expect("vrf 1");
    for (name, pod) in [("pod1", &pod1), ("pod2", &pod2)] {
        let mut req = VifRequest::new(name, VifType::AfPacket, 1, MacAddr(pod.mac));
        req.iface = Some(pod.host_side.clone());
        let info = vr
            .api(|c| async move { c.vif_add(&req).await })
            .expect("af-packet vif");
        assert_eq!(info.status.state.to_string(), "up", "{info:?}");
    }
    let nexthops = [
        (
            1,
            Nexthop::Encap {
                vif: "pod1".into(),
                dmac: MacAddr(pod1.mac),
            },
        ),
        (
            2,
            Nexthop::Encap {
                vif: "pod2".into(),
                dmac: MacAddr(pod2.mac),
            },
        ),
        (3, Nexthop::Receive),
    ];
    for (id, nh) in nexthops {
        vr.api(|c| async move { c.nexthop_set(id, &nh).await })
            .expect("nexthop");
    }
    for (prefix, nh) in [
        ("198.18.1.2/32", 1),
        ("198.18.2.2/32", 2),
        ("198.18.1.1/32", 3),
        ("198.18.2.1/32", 3),
    ] {
        let route = Route {
            prefix: prefix.parse::<IpPrefix>().expect("prefix"),
            nexthop: nh,
            label: None,
        };
        vr.api(|c| async move { c.route_set(1, &route).await })
            .expect("route");
    }

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
