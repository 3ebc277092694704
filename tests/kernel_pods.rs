//! Two kernel pods (network namespaces on veths with the kernel's default offloads, attached as
//! af-packet vifs) talk through vrouterd routing in VRF 1: vrouterd answers their ARP and
//! neighbour solicitations for the gateway, pings cross in both directions, and 100 MB of TCP
//! each way arrive intact (SHA-256 compared at both ends) and under iperf3, over IPv4 and IPv6.
//! The pods' TCP hands vrouterd 64 KB segments with partial checksums; they must leave toward
//! the other pod as such (the kernel port takes them whole), and the counters must add up.

use std::net::IpAddr;
use std::path::PathBuf;
use std::time::Instant;

use testkit::kernel_pod::{route_in_vrf1, KernelPod};
use testkit::netns::Netns;
use testkit::vrouterd::Vrouterd;

fn vrouterd_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_vrouterd"))
}

const BYTES: u64 = 100_000_000;

/// vrouterd as compute node `node`, its forwarding lcore napping 20 µs when idle.
fn start_vrouterd(node: &Netns) -> Vrouterd {
    Vrouterd::start_netns(Some(node), &vrouterd_bin(), &["--idle-sleep-us", "20"], &[])
}

#[test]
fn kernel_pods_with_default_offloads_ping_and_move_100_mb_of_tcp_each_way_through_vrouterd() {
    let t0 = Instant::now();
    // The node's own namespace keeps its interfaces apart from other tests'.
    let node = Netns::new("kpnode");
    let pod1 = KernelPod::attached_to(Some(&node), "a", 1, 1500);
    let pod2 = KernelPod::attached_to(Some(&node), "b", 2, 1500);
    let vr = start_vrouterd(&node);

    route_in_vrf1(&vr, &[("pod1", &pod1), ("pod2", &pod2)]);

    let out = pod1.ping(&pod2.ip.to_string(), 5);
    assert!(out.contains("5 received"), "{out}");
    let out = pod2.ping(&pod1.ip.to_string(), 5);
    assert!(out.contains("5 received"), "{out}");
    assert!(
        out.contains("ttl=63"),
        "vrouterd decrements the TTL once: {out}"
    );
    let out = pod1.ping(&pod2.ip6.to_string(), 3);
    assert!(out.contains("3 received"), "{out}");
    let out = pod2.ping(&pod1.ip6.to_string(), 3);
    assert!(
        out.contains("3 received") && out.contains("ttl=63"),
        "{out}"
    );
    let neigh = pod1.ns.exec(&["ip", "neigh", "show", "198.18.1.1"]);
    assert!(
        neigh.contains("00:00:5e:00:01:00"),
        "ARP for the gateway answered with the vrouter MAC: {neigh}"
    );
    let neigh = pod1
        .ns
        .exec(&["ip", "-6", "neigh", "show", "2001:db8:18:1::1"]);
    assert!(
        neigh.contains("00:00:5e:00:01:00"),
        "ND for the gateway answered with the vrouter MAC: {neigh}"
    );

    for (from, to, addr) in [
        (&pod1, &pod2, IpAddr::V4(pod2.ip)),
        (&pod2, &pod1, IpAddr::V4(pod1.ip)),
        (&pod1, &pod2, IpAddr::V6(pod2.ip6)),
        (&pod2, &pod1, IpAddr::V6(pod1.ip6)),
    ] {
        let t = Instant::now();
        let (sent, received) = from.tcp_transfer_to(to, addr, BYTES);
        assert!(sent.starts_with(&format!("{BYTES} ")), "{addr}: {sent}");
        assert_eq!(sent, received, "{addr}: bytes and SHA-256 at both ends");
        eprintln!(
            "checksummed transfer to {addr}: {BYTES} bytes in {:.2} s",
            t.elapsed().as_secs_f64()
        );
        let perf = from.iperf3(to, addr, BYTES);
        assert!(perf.sent >= BYTES, "{addr}: iperf3 {perf:?}");
        eprintln!(
            "iperf3 to {addr}: {} bytes received in {:.2} s, {:.2} Gbit/s",
            perf.received, perf.seconds, perf.gbit_per_s
        );
    }

    let vifs = vr.api(|c| async move { c.vifs().await }).expect("vifs");
    let counters = |name: &str| {
        vifs.iter()
            .find(|v| v.config.name == name)
            .map(|v| v.status.counters)
            .expect("vif listed")
    };
    let (c1, c2) = (counters("pod1"), counters("pod2"));
    eprintln!("pod1 {c1:?}\npod2 {c2:?}");
    // Nearly 400 MB each way (iperf3 stops its connections when the last bytes are written,
    // not when they arrived), mostly in 64 KB segments: far fewer packets than MSS-sized ones
    // would be (276,000 per 400 MB).
    for c in [c1, c2] {
        assert!(c.rx_bytes > 3 * BYTES && c.tx_bytes > 3 * BYTES, "{c:?}");
        assert!(
            c.rx_packets < 200_000,
            "the pods' segments came as GSO packets: {c:?}"
        );
    }
    // What one vif received the other sent (less ARP / ND, answered by vrouterd, and the
    // multicast the pods' kernels send on their own, dropped).
    assert!(c1.rx_packets >= c2.tx_packets && c2.rx_packets >= c1.tx_packets);
    assert!(c1.rx_packets - c2.tx_packets < 100 && c2.rx_packets - c1.tx_packets < 100);
    let vif_states: Vec<_> = vifs.iter().map(|v| v.status.state).collect();
    assert!(
        vif_states
            .iter()
            .all(|s| *s == control_api::api::VifState::Up),
        "{vif_states:?}"
    );
    let drops = vr
        .api(|c| async move { c.dropstats().await })
        .expect("dropstats");
    eprintln!("{drops:?}");
    // The only drops: what the pods' kernels send on their own (router solicitations and MLD
    // reports, which vrouterd does not flood; neighbour probes for nobody it answers for).
    let chatter: u64 = ["multicast", "arp_not_for_us"]
        .iter()
        .map(|r| drops.reasons.get(*r).copied().unwrap_or(0))
        .sum();
    assert_eq!(drops.total, chatter, "{drops:?}");
    assert_eq!(
        c1.drops + c2.drops,
        chatter,
        "the vifs' drops are the same ones"
    );
    for reason in [
        "no_route",
        "offload",
        "mtu",
        "truncated",
        "malformed",
        "no_mbuf",
        "kernel_ring_full",
        "tx_queue_full",
    ] {
        assert_eq!(drops.reasons.get(reason), Some(&0), "{reason}: {drops:?}");
    }
    let status = vr.stop();
    assert!(status.success(), "vrouterd exit {status}");
    eprintln!("test took {:.1} s", t0.elapsed().as_secs_f64());
}

#[test]
fn frames_beyond_the_vif_mtu_are_dropped_and_counted_and_a_missing_interface_is_refused() {
    use control_api::api::{MacAddr, VifRequest, VifType};
    let node = Netns::new("kpmtu");
    // The pod's veth takes 9000 bytes (both ends, or the veth itself drops the big frames);
    // its vif has the API's default MTU, 1500.
    let pod1 = KernelPod::attached_to(Some(&node), "m", 1, 9000);
    node.ip(&["link", "set", &pod1.host_side, "mtu", "9000"]);
    let pod2 = KernelPod::attached_to(Some(&node), "n", 2, 1500);
    let vr = start_vrouterd(&node);
    route_in_vrf1(&vr, &[("pod1", &pod1), ("pod2", &pod2)]);
    let out = pod1.ping(&pod2.ip.to_string(), 2);
    assert!(out.contains("2 received"), "{out}");

    // 2028-byte IP packets, not GSO, not to be fragmented: longer than the vif allows.
    let status = pod1
        .ns
        .command("ping")
        .args(["-c", "3", "-i", "0.2", "-W", "1", "-s", "2000", "-M", "do"])
        .arg(pod2.ip.to_string())
        .stdout(std::process::Stdio::null())
        .status()
        .expect("ping");
    assert!(!status.success(), "no reply to frames beyond the MTU");
    let drops = vr
        .api(|c| async move { c.dropstats().await })
        .expect("dropstats");
    assert_eq!(drops.reasons.get("mtu"), Some(&3), "{drops:?}");
    let c = vr.vif("pod1").status.counters;
    assert!(c.drops >= 3, "counted as the vif's drops: {c:?}");

    let mut req = VifRequest::new("ghost", VifType::AfPacket, 1, MacAddr([2, 0, 0, 0, 9, 9]));
    req.iface = Some("vkghost0".into());
    let err = vr
        .api(|c| async move { c.vif_add(&req).await })
        .expect_err("no such interface");
    let text = err.to_string();
    assert!(
        text.contains("vkghost0"),
        "the error names the interface: {text}"
    );
    assert!(vr.stop().success());
}
