//! DHCP from vrouterd to a kernel pod: busybox `udhcpc` in a pod with no address gets its
//! address, gateway, MTU, DNS server and a classless static route from its vif's settings, the
//! pod's kernel takes them (a script applies what udhcpc reports), and the pod then talks to
//! another pod through vrouterd. A pod whose vif has no address gets no answer, counted as
//! `dhcp_no_address`. The same pod takes its IPv6 address (SLAAC in the advertised /64) and
//! default router from vrouterd's router advertisement.

use std::net::{Ipv4Addr, Ipv6Addr};
use std::path::PathBuf;

use control_api::api::{MacAddr, StaticRoute, VifRequest, VifType};
use testkit::kernel_pod::KernelPod;
use testkit::netns::{temp_path, Netns};
use testkit::vrouterd::Vrouterd;

fn vrouterd_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_vrouterd"))
}

/// What udhcpc runs on each event: on `bound`, configure eth0 as told (address, MTU, the
/// classless static routes, else the router as default) and write udhcpc's variables to
/// `$DHCP_OUT` for the test to read.
const SCRIPT: &str = r#"#!/bin/sh
case "$1" in
deconfig)
    ip -4 addr flush dev "$interface"
    ;;
bound|renew)
    ip addr replace "$ip/$mask" dev "$interface"
    [ -n "$mtu" ] && ip link set "$interface" mtu "$mtu"
    if [ -n "$staticroutes" ]; then
        set -- $staticroutes
        while [ $# -ge 2 ]; do
            ip route replace "$1" via "$2" dev "$interface"
            shift 2
        done
    elif [ -n "$router" ]; then
        ip route replace default via "$router" dev "$interface"
    fi
    env | grep -E '^(ip|mask|router|dns|mtu|staticroutes|serverid|lease)=' > "$DHCP_OUT"
    ;;
esac
exit 0
"#;

const LEASE_IP: Ipv4Addr = Ipv4Addr::new(198, 18, 1, 2);
const GATEWAY: &str = "198.18.1.1";
const ROUTED: &str = "203.0.113.0/24";
const DNS: &str = "192.0.2.53";

#[test]
fn a_kernel_pod_takes_address_gateway_mtu_and_a_route_by_dhcp_and_then_passes_traffic() {
    testkit::netns::require_root();
    let node = Netns::new("dhcpnode");
    let pod1 = KernelPod::unaddressed(Some(&node), "d", 1, 1500);
    let pod2 = KernelPod::attached_to(Some(&node), "e", 2, 1500);
    let vr = Vrouterd::start_netns(
        Some(&node),
        &vrouterd_bin(),
        &["--idle-sleep-us", "20"],
        &[],
    );
    vr.api(|c| async move { c.vrf_add(1).await })
        .expect("vrf 1");
    let receive = 9;
    vr.set_nexthop(receive, control_api::api::Nexthop::Receive);

    let mut req = VifRequest::new("pod1", VifType::AfPacket, 1, MacAddr(pod1.mac));
    req.iface = Some(pod1.host_side.clone());
    req.ip = Some(LEASE_IP);
    req.prefix_len = Some(24);
    req.mtu = Some(1400);
    req.dns_servers = vec![DNS.parse().unwrap()];
    req.static_routes = vec![StaticRoute {
        prefix: ROUTED.parse().unwrap(),
        via: GATEWAY.parse().unwrap(),
    }];
    req.lease_time = Some(600);
    // IPv6 by router advertisement: the address the pod makes from its MAC in the /64.
    let m = pod1.mac;
    let slaac = Ipv6Addr::new(
        0x2001,
        0xdb8,
        0x18,
        1,
        u16::from_be_bytes([m[0] ^ 2, m[1]]),
        u16::from_be_bytes([m[2], 0xff]),
        u16::from_be_bytes([0xfe, m[3]]),
        u16::from_be_bytes([m[4], m[5]]),
    );
    req.ip6 = Some(slaac);
    let info = vr.add_vif(&req);
    assert_eq!(
        info.config.gateway,
        Some(GATEWAY.parse().unwrap()),
        "the default gateway, the subnet's first address, is echoed back"
    );
    vr.route_to(
        1,
        "pod1",
        MacAddr(pod1.mac),
        &[&format!("{LEASE_IP}/32"), &format!("{slaac}/128")],
    );

    let mut req = VifRequest::new("pod2", VifType::AfPacket, 1, MacAddr(pod2.mac));
    req.iface = Some(pod2.host_side.clone());
    vr.add_vif(&req);
    // Pod 2 also answers for an address in the statically routed prefix.
    pod2.ns
        .ip(&["addr", "add", "203.0.113.5/32", "dev", "eth0"]);
    vr.route_to(
        2,
        "pod2",
        MacAddr(pod2.mac),
        &[
            &format!("{}/32", pod2.ip),
            &format!("{}/128", pod2.ip6),
            "203.0.113.5/32",
        ],
    );
    vr.set_route(&format!("{}/32", pod2.gateway()), receive);
    vr.set_route(&format!("{}/128", pod2.gateway6()), receive);
    // Pod 1 solicits a router again now that its vif is there.
    pod1.ns.ip(&["link", "set", "eth0", "down"]);
    pod1.ns.ip(&["link", "set", "eth0", "up"]);

    let script = temp_path("udhcpc", "sh");
    std::fs::write(&script, SCRIPT).expect("script");
    std::fs::set_permissions(&script, std::os::unix::fs::PermissionsExt::from_mode(0o755))
        .expect("chmod");
    let out_file = temp_path("udhcpc", "env");
    let run = pod1
        .ns
        .command("busybox")
        .args([
            "udhcpc", "-i", "eth0", "-f", "-q", "-n", "-t", "5", "-T", "1",
        ])
        .args(["-O", "mtu", "-O", "staticroutes", "-s"])
        .arg(&script)
        .env("DHCP_OUT", &out_file)
        .output()
        .expect("busybox udhcpc (busybox-static, scripts/install-deps.sh)");
    let log = String::from_utf8_lossy(&run.stderr).into_owned();
    assert!(run.status.success(), "udhcpc got no lease: {log}");
    let env = std::fs::read_to_string(&out_file).expect("the script ran on bound");
    eprintln!("udhcpc: {log}\n{env}");
    for want in [
        format!("ip={LEASE_IP}"),
        "mask=24".to_string(),
        format!("router={GATEWAY}"),
        format!("serverid={GATEWAY}"),
        format!("dns={DNS}"),
        "mtu=1400".to_string(),
        "lease=600".to_string(),
        format!("staticroutes={ROUTED} {GATEWAY} 0.0.0.0/0 {GATEWAY}"),
    ] {
        assert!(env.lines().any(|l| l.trim() == want), "{want} in {env}");
    }
    let _ = std::fs::remove_file(&script);
    let _ = std::fs::remove_file(&out_file);

    // The pod's kernel holds what DHCP said.
    let addr = pod1.ns.exec(&["ip", "-4", "addr", "show", "dev", "eth0"]);
    assert!(addr.contains(&format!("{LEASE_IP}/24")), "{addr}");
    let link = pod1.ns.exec(&["ip", "link", "show", "dev", "eth0"]);
    assert!(link.contains("mtu 1400"), "{link}");
    let routes = pod1.ns.exec(&["ip", "-4", "route", "show"]);
    assert!(
        routes.contains(&format!("default via {GATEWAY}")),
        "{routes}"
    );
    assert!(
        routes.contains(&format!("{ROUTED} via {GATEWAY}")),
        "{routes}"
    );

    // And traffic flows: through the default route, and through the static one.
    let out = pod1.ping(&pod2.ip.to_string(), 3);
    assert!(out.contains("3 received"), "{out}");
    let out = pod1.ping("203.0.113.5", 3);
    assert!(out.contains("3 received"), "{out}");
    let out = pod2.ping(&LEASE_IP.to_string(), 3);
    assert!(out.contains("3 received"), "{out}");
    let (sent, received) = pod1.tcp_transfer(&pod2, 2_000_000);
    assert_eq!(sent, received, "bytes and SHA-256 at both ends");
    // IPv6: the address made in the advertised prefix, the vrouter as default router, and
    // traffic both ways.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    loop {
        let addr = pod1
            .ns
            .exec(&["ip", "-6", "addr", "show", "dev", "eth0", "scope", "global"]);
        let route = pod1.ns.exec(&["ip", "-6", "route", "show", "default"]);
        if addr.contains(&format!("{slaac}/64")) && !addr.contains("tentative") {
            assert!(
                route.contains("via fe80::200:5eff:fe00:100") && route.contains("proto ra"),
                "default route from the advertisement: {route}"
            );
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no address from router advertisements: {addr} {route}"
        );
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    let out = pod1.ping(&pod2.ip6.to_string(), 3);
    assert!(out.contains("3 received"), "{out}");
    let out = pod2.ping(&slaac.to_string(), 3);
    assert!(out.contains("3 received"), "{out}");

    let neigh = pod1.ns.exec(&["ip", "neigh", "show", GATEWAY]);
    assert!(
        neigh.contains("00:00:5e:00:01:00"),
        "the gateway is the vrouter, unrouted: {neigh}"
    );

    // Pod 2's vif has no address to hand out: no lease, and the requests counted.
    let run = pod2
        .ns
        .command("busybox")
        .args([
            "udhcpc", "-i", "eth0", "-f", "-q", "-n", "-t", "2", "-T", "1",
        ])
        .args(["-s", "/bin/true"])
        .output()
        .expect("udhcpc");
    assert!(!run.status.success(), "no lease for pod 2");
    let drops = vr
        .api(|c| async move { c.dropstats().await })
        .expect("dropstats");
    let no_address = drops.reasons.get("dhcp_no_address").copied().unwrap_or(0);
    assert!(no_address >= 2, "{drops:?}");
    for reason in ["dhcp_ignored", "malformed", "truncated", "offload"] {
        assert_eq!(drops.reasons.get(reason), Some(&0), "{reason}: {drops:?}");
    }
    assert!(vr.stop().success());
}

/// Router advertisements also come unsolicited, every `--ra-interval-secs`, to all nodes: a
/// pod that never solicits again keeps its IPv6 default router. The pod here already has its
/// address; what it captures without asking is the advertisement of its /64.
#[test]
fn a_pod_hears_unsolicited_router_advertisements() {
    testkit::netns::require_root();
    let node = Netns::new("ranode");
    let pod = KernelPod::attached_to(Some(&node), "ra", 1, 1500);
    let vr = Vrouterd::start_netns(
        Some(&node),
        &vrouterd_bin(),
        &["--idle-sleep-us", "20", "--ra-interval-secs", "1"],
        &[],
    );
    vr.api(|c| async move { c.vrf_add(1).await })
        .expect("vrf 1");
    let mut req = VifRequest::new("pod", VifType::AfPacket, 1, MacAddr(pod.mac));
    req.iface = Some(pod.host_side.clone());
    req.ip6 = Some(pod.ip6);
    vr.add_vif(&req);
    // Only to all nodes: an answer to a solicitation goes to the asker.
    let cap = pod.ns.capture(
        "eth0",
        "icmp6 and ip6[40] == 134 and ip6 dst host ff02::1",
        2,
    );
    let frames = cap.frames(std::time::Duration::from_secs(10));
    assert_eq!(
        frames.len(),
        2,
        "two advertisements in 10 s at one a second"
    );
    for f in &frames {
        assert_eq!(&f[0..6], &[0x33, 0x33, 0, 0, 0, 1], "all nodes' MAC");
        let p = etherparse::SlicedPacket::from_ethernet(f).expect("etherparse reads it");
        let Some(etherparse::TransportSlice::Icmpv6(icmp)) = &p.transport else {
            panic!("ICMPv6: {f:02x?}")
        };
        let m = icmp.slice();
        assert_eq!(m[0], 134, "router advertisement");
        assert!(u16::from_be_bytes([m[6], m[7]]) > 0, "a default router");
        let mut prefix = pod.ip6.octets();
        prefix[8..].fill(0);
        assert_eq!(&m[48..64], &prefix, "the vif's /64");
    }
    assert!(vr.stop().success());
}
