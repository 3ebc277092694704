//! vhost0 and underlay neighbour resolution through the real vrouterd. A node namespace runs
//! vrouterd with its fabric on a veth (`kernel:`) to a "remote node" namespace and the host
//! interface `--host-iface`: the node's own stack (the host) sits behind that tap with the
//! fabric address. The remote is a plain kernel that also terminates VXLAN for the node's pod
//! (VNI 100), reached through a tunnel nexthop without a `dmac`: vrouterd resolves the remote's
//! MAC by ARP, and again after the remote's MAC changes.

use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::time::Duration;

use control_api::api::{
    BridgeEntry, MacAddr, Neighbour, NeighbourState, Nexthop, TunnelEncap, VifRequest, VifType,
};
use testkit::kernel_pod::{tcp_send_in, KernelPod};
use testkit::netns::Netns;
use testkit::vrouterd::Vrouterd;

const FABRIC_IP: &str = "198.19.0.1";
const REMOTE_IP: Ipv4Addr = Ipv4Addr::new(198, 19, 0, 2);
const FABRIC_MAC: &str = "02:00:00:00:fa:01";
/// The remote's VXLAN device (the pod reaches it bridged: Linux drops VXLAN frames whose
/// source is its own MAC, as routed ones from vrouterd, vrouter MAC to vrouter MAC, would be).
const REMOTE_VX_MAC: [u8; 6] = [0x02, 0, 0, 0, 0x0b, 0x02];
const HOST_IFACE: &str = "vh0";
const NEW_REMOTE_MAC: [u8; 6] = [0x02, 0, 0, 0, 0xfb, 0x99];
const VNI: u32 = 100;

fn vrouterd_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_vrouterd"))
}

fn mac_text(m: [u8; 6]) -> String {
    MacAddr(m).to_string()
}

fn neighbours(vr: &Vrouterd) -> Vec<Neighbour> {
    vr.api(|c| async move { c.neighbours().await })
        .expect("GET /neighbours")
}

/// The remote's neighbour entry once it has MAC `mac`.
fn resolved_to(vr: &Vrouterd, mac: [u8; 6]) -> Neighbour {
    let seen = vr.wait_until(
        &format!("the remote resolved to {}", mac_text(mac)),
        || neighbours(vr),
        |n| {
            n.iter().any(|n| {
                n.address == REMOTE_IP
                    && n.mac == Some(MacAddr(mac))
                    && n.state == NeighbourState::Reachable
            })
        },
    );
    seen.into_iter()
        .find(|n| n.address == REMOTE_IP)
        .expect("entry")
}

/// Pings from `ns` until one round gets every answer (the kernels' neighbour caches settle).
fn pings(ns: &Netns, dst: &str, what: &str) {
    for _ in 0..20 {
        let out = ns
            .command("ping")
            .args(["-c", "3", "-i", "0.2", "-W", "1", dst])
            .output()
            .expect("ping");
        if String::from_utf8_lossy(&out.stdout).contains(" 3 received") {
            return;
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    panic!("{what}: pings to {dst} from {} not answered", ns.name());
}

#[test]
fn the_host_reaches_the_fabric_through_vhost0_and_tunnels_resolve_their_neighbour() {
    testkit::netns::require_root();
    let node = Netns::new("vh0node");
    // The remote node: its eth0 is the fabric's far end (its near end, in the node, is
    // vrouterd's fabric port).
    let remote = KernelPod::attached_to(Some(&node), "vhr", 3, 1500);
    remote.ns.ip(&["addr", "flush", "dev", "eth0"]);
    remote
        .ns
        .ip(&["addr", "add", &format!("{REMOTE_IP}/24"), "dev", "eth0"]);
    // The node's kernel must not answer ARP on the fabric port itself: vrouterd owns it (a
    // NIC bound to vfio would be invisible to the kernel).
    node.ip(&["link", "set", &remote.host_side, "arp", "off"]);
    let pod = KernelPod::attached_to(Some(&node), "vhp", 1, 1400);
    let vr = Vrouterd::start_netns(
        Some(&node),
        &vrouterd_bin(),
        &[
            "--idle-sleep-us",
            "20",
            "--fabric",
            &format!("kernel:{}", remote.host_side),
            "--fabric-ip",
            FABRIC_IP,
            "--fabric-mac",
            FABRIC_MAC,
            "--host-iface",
            HOST_IFACE,
            "--neigh-reachable-secs",
            "2",
        ],
        &[],
    );
    // The tap carries the fabric MAC; its address and routes are the host's to set.
    let link = node.ip(&["link", "show", HOST_IFACE]);
    assert!(
        link.contains(FABRIC_MAC),
        "vhost0 has the fabric MAC: {link}"
    );
    node.ip(&["addr", "add", &format!("{FABRIC_IP}/24"), "dev", HOST_IFACE]);
    node.ip(&["link", "set", HOST_IFACE, "up"]);

    // The pod in VRF 1, the remote's VXLAN end for it behind a tunnel without a dmac.
    vr.api(|c| async move { c.vrf_add(1).await })
        .expect("vrf 1");
    let mut req = VifRequest::new("pod", VifType::AfPacket, 1, MacAddr(pod.mac));
    req.iface = Some(pod.host_side.clone());
    req.mtu = Some(1400);
    vr.add_vif(&req);
    vr.set_nexthop(
        1,
        Nexthop::Encap {
            vif: "pod".into(),
            dmac: MacAddr(pod.mac),
        },
    );
    vr.set_nexthop(2, Nexthop::Receive);
    vr.set_route(&format!("{}/32", pod.ip), 1);
    vr.set_route(&format!("{}/32", pod.gateway()), 2);
    vr.api(|c| async move { c.vxlan_set(VNI, 1).await })
        .expect("vni");
    vr.set_nexthop(
        3,
        Nexthop::Tunnel {
            encap: TunnelEncap::Vxlan,
            vif: "fabric0".into(),
            sip: FABRIC_IP.parse().unwrap(),
            dip: REMOTE_IP.into(),
            dmac: None,
            label: None,
        },
    );
    for (mac, nexthop, label) in [(REMOTE_VX_MAC, 3, Some(VNI)), (pod.mac, 1, None)] {
        let entry = BridgeEntry {
            mac: MacAddr(mac),
            nexthop,
            label,
        };
        vr.api(|c| async move { c.bridge_set(1, &entry).await })
            .expect("bridge entry");
    }
    // The pod reaches the remote's overlay address on its link.
    let p = &pod.ns;
    p.ip(&["route", "add", "198.18.2.0/24", "dev", "eth0"]);
    p.ip(&[
        "neigh",
        "replace",
        "198.18.2.2",
        "lladdr",
        &mac_text(REMOTE_VX_MAC),
        "dev",
        "eth0",
        "nud",
        "permanent",
    ]);
    // The remote's VXLAN device for VNI 100, its far end the node's fabric address.
    let r = &remote.ns;
    r.ip(&[
        "link",
        "add",
        "vx0",
        "type",
        "vxlan",
        "id",
        "100",
        "local",
        "198.19.0.2",
        "remote",
        FABRIC_IP,
        "dstport",
        "4789",
        "dev",
        "eth0",
    ]);
    r.ip(&[
        "link",
        "set",
        "vx0",
        "address",
        &mac_text(REMOTE_VX_MAC),
        "up",
    ]);
    r.ip(&["addr", "add", "198.18.2.2/24", "dev", "vx0"]);
    r.ip(&["route", "add", "198.18.1.0/24", "dev", "vx0"]);
    r.ip(&[
        "neigh",
        "replace",
        &pod.ip.to_string(),
        "lladdr",
        &mac_text(pod.mac),
        "dev",
        "vx0",
        "nud",
        "permanent",
    ]);

    // Resolved by vrouterd itself.
    let first = resolved_to(&vr, remote.mac);
    assert_eq!(first.vif, "fabric0");
    assert!(first.requests >= 1, "asked by ARP: {first:?}");

    // The host pings the remote and moves 10 MB of TCP to it while the pod's overlay traffic
    // flows through the tunnel.
    pings(&node, &REMOTE_IP.to_string(), "host to remote");
    std::thread::scope(|s| {
        let overlay = s.spawn(|| pod.ping("198.18.2.2", 25));
        let srv = remote.tcp_server();
        let sent =
            tcp_send_in(&node, REMOTE_IP, srv.port(), 10_000_000).unwrap_or_else(|e| panic!("{e}"));
        let got = srv.finish().unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(sent, got, "10 MB from the host arrive intact");
        assert!(sent.starts_with("10000000 "), "{sent}");
        let out = overlay.join().expect("pod ping");
        assert!(
            out.contains(" 25 received"),
            "overlay pings answered meanwhile: {out}"
        );
    });
    let host_vif = vr.vif("vhost0");
    assert!(
        testkit::vrouterd::rx_packets(&host_vif) > 5000,
        "the host's segments came in on vhost0: {host_vif:?}"
    );

    // The remote's MAC changes: vrouterd follows it, and both the host and the pod get through.
    r.ip(&["link", "set", "eth0", "address", &mac_text(NEW_REMOTE_MAC)]);
    let moved = resolved_to(&vr, NEW_REMOTE_MAC);
    assert!(moved.mac_changes >= 1, "{moved:?}");
    pings(
        &pod.ns,
        "198.18.2.2",
        "pod to remote overlay after the MAC change",
    );
    pings(
        &node,
        &REMOTE_IP.to_string(),
        "host to remote after the MAC change",
    );

    // The remote goes quiet: the neighbour fails and tunnel packets are counted drops.
    r.ip(&["link", "set", "eth0", "down"]);
    vr.wait_until(
        "the silent remote failed",
        || neighbours(&vr),
        |n| {
            n.iter()
                .any(|n| n.state == NeighbourState::Failed && n.mac.is_none())
        },
    );
    // Unanswered (the remote is down): only what vrouterd counted matters.
    let _ = pod
        .ns
        .command("ping")
        .args(["-c", "2", "-i", "0.2", "-W", "1", "198.18.2.2"])
        .output();
    let drops = vr
        .api(|c| async move { c.dropstats().await })
        .expect("dropstats");
    assert!(
        drops
            .reasons
            .get("neighbour_unresolved")
            .is_some_and(|&n| n >= 1),
        "counted: {drops:?}"
    );
    assert!(vr.stop().success(), "vrouterd stopped cleanly");
}
