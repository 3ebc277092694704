//! Guests as they really come: real Linux VMs (QEMU, TCG, a Debian kernel and a
//! busybox initramfs, built by `scripts/vm-image.sh`) attached to vrouterd over vhost-user in
//! both modes, routed in VRF 1 to a kernel pod whose veth keeps the kernel's default offloads,
//! and to a second VM. Each test boots its guests once and runs every check on them: pings both
//! ways, the virtio offloads the guest negotiated (CSUM, GUEST_CSUM, HOST_TSO4/6, GUEST_TSO4/6),
//! and 16 MiB of TCP each way with the SHA-256 compared at both ends. And a guest at MTU 9000
//! on one node with a kernel pod on another, across a VXLAN fabric on vrouterd's kernel port:
//! 8,000-byte pings and TCP each way in jumbo frames. And a guest that gives up its boot-time
//! address for the one its vif hands out by DHCP (busybox udhcpc in the guest: address, gateway,
//! MTU, DNS, a classless static route) and then reaches a pod; the same guest makes its IPv6
//! address in the /64 vrouterd advertises (SLAAC from the router advertisement answering its
//! router solicitation), takes vrouterd as its default router, and pings and sends TCP to the
//! pod over IPv6.
//!
//! Pings must work before anything else is worth checking, so they fail the test at once; the
//! offload and TCP checks are each recorded and all reported together at the end, so one
//! failing check does not hide what the others would have shown.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use control_api::api::{TunnelEncap, VhostUserMode};
use testkit::kernel_pod::{route_in_vrf1, KernelPod};
use testkit::netns::Netns;
use testkit::overlay::{self, Fabric, TwoNodes, FABRIC_IP_1, FABRIC_IP_2, FABRIC_MAC_1};
use testkit::vm::{
    feature, route_vm_in_vrf1, tcp_pod_to_vm, tcp_vm_to_pod, tcp_vm_to_vm, GuestRam, Transfer, Vm,
    VmConfig,
};
use testkit::vrouterd::Vrouterd;

/// At least 10 MB each way: the transfer a guest with its offloads switched off by hand
/// completes, so one with them on must too.
const BYTES: u64 = 16 << 20;

/// The offloads a guest must get: checksum offload both ways and TSO in both directions.
const OFFLOADS: [(u32, &str); 6] = [
    (feature::CSUM, "CSUM"),
    (feature::GUEST_CSUM, "GUEST_CSUM"),
    (feature::HOST_TSO4, "HOST_TSO4"),
    (feature::HOST_TSO6, "HOST_TSO6"),
    (feature::GUEST_TSO4, "GUEST_TSO4"),
    (feature::GUEST_TSO6, "GUEST_TSO6"),
];

fn vrouterd_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_vrouterd"))
}

/// vrouterd for guests: its forwarding lcore backs off 20 µs when idle, so the TCG guests (one
/// thread each, on the same 2 cores) get CPU time.
fn start_vrouterd(node: Option<&Netns>) -> Vrouterd {
    Vrouterd::start_netns(node, &vrouterd_bin(), &["--idle-sleep-us", "20"], &[])
}

/// Checks that are recorded rather than failing the test at once.
#[derive(Default)]
struct Checks(Vec<String>);

impl Checks {
    fn record(&mut self, failure: String) {
        eprintln!("CHECK FAILED: {failure}");
        self.0.push(failure);
    }

    fn transfer(&mut self, what: &str, result: Result<Transfer, String>) {
        match result {
            Ok(t) if t.verified() => eprintln!("{what}: verified, {}", t.sent),
            Ok(t) => self.record(format!(
                "{what}: data differs: sent {}, received {}",
                t.sent, t.received
            )),
            Err(e) => self.record(format!("{what}: {e}")),
        }
    }

    fn finish(self) {
        assert!(
            self.0.is_empty(),
            "{} check(s) failed:\n- {}",
            self.0.len(),
            self.0.join("\n- ")
        );
    }
}

/// Waits for the vif to be connected and the guest's link to be up.
fn wait_attached(vr: &Vrouterd, name: &str, vm: &mut Vm) {
    vr.wait_connected(name);
    if let Err(e) = vm.wait_until(
        "grep -q 1 /sys/class/net/eth0/carrier",
        Duration::from_secs(30),
    ) {
        panic!("{e}\n{}", vm.console());
    }
}

/// Logs what the guest and vrouterd say was negotiated; records the offloads missing.
fn check_offloads(vr: &Vrouterd, name: &str, vm: &mut Vm, checks: &mut Checks) {
    let guest = vm.negotiated_features();
    let backend = vr.vif(name).status.features;
    eprintln!(
        "{name}: guest negotiated {guest:#x} {:?}; vrouterd reports {:?} {:?}",
        feature::names(guest),
        backend.map(|b| format!("{b:#x}")),
        backend.map(feature::names)
    );
    let missing: Vec<&str> = OFFLOADS
        .iter()
        .filter(|(bit, _)| guest & (1u64 << bit) == 0)
        .map(|(_, n)| *n)
        .collect();
    if !missing.is_empty() {
        checks.record(format!(
            "{name}: the guest did not negotiate {missing:?} (it negotiated {:?})",
            feature::names(guest)
        ));
    }
}

/// Logs the vifs' counters, the drops vrouterd counted and how long the test took.
fn log_counters(vr: &Vrouterd, vifs: &[&str], start: Instant) {
    let drops = vr
        .api(|c| async move { c.dropstats().await })
        .expect("dropstats");
    for name in vifs {
        eprintln!("{name} counters {:?}", vr.vif(name).status.counters);
    }
    eprintln!(
        "dropstats {:?}; test took {:?}",
        drops
            .reasons
            .iter()
            .filter(|(_, n)| **n > 0)
            .collect::<Vec<_>>(),
        start.elapsed()
    );
}

fn vm_and_kernel_pod_with_default_offloads(mode: VhostUserMode) {
    let start = Instant::now();
    // The node's own namespace keeps its AF_PACKET fanout groups apart from other tests'.
    let node = Netns::new("vmnode");
    let pod = KernelPod::attached_to(Some(&node), "p", 1, 1500);
    let vr = start_vrouterd(Some(&node));
    // Nexthop 1 to the pod, 2 = receive (for each gateway), 3 to the VM.
    route_in_vrf1(&vr, &[("pod1", &pod)]);
    let socket = vr.socket_base().join("vm-uid-5").join("vm5-net0");
    let cfg = VmConfig::new("vm5", 5, socket, mode);
    route_vm_in_vrf1(&vr, "vm5", &cfg, 3, 2);
    let mut vm = Vm::boot(cfg);
    wait_attached(&vr, "vm5", &mut vm);
    let vm_ip = vm.config().ip;

    let (ok, out) = vm.ping(pod.ip, 5);
    assert!(ok, "VM → pod ping: {out}\n{}", vr.process.outputs());
    let out = pod.ping(&vm_ip.to_string(), 5);
    assert!(out.contains("5 received"), "pod → VM ping: {out}");

    let mut checks = Checks::default();
    check_offloads(&vr, "vm5", &mut vm, &mut checks);
    // Each transfer's failure message says how many segments the guest dropped for a bad
    // checksum meanwhile: the tell-tale of partial checksums forwarded to a guest that did
    // not negotiate GUEST_CSUM.
    for dir in ["VM → pod", "pod → VM"] {
        let t = Instant::now();
        let bad_before = vm.tcp_checksum_errors();
        let result = if dir == "VM → pod" {
            tcp_vm_to_pod(&mut vm, &pod, BYTES)
        } else {
            tcp_pod_to_vm(&pod, &mut vm, BYTES)
        };
        let bad = vm.tcp_checksum_errors() - bad_before;
        checks.transfer(
            &format!("{dir} TCP (the guest dropped {bad} segments for a bad checksum)"),
            result,
        );
        eprintln!("{dir} TCP took {:?}", t.elapsed());
    }
    log_counters(&vr, &["vm5"], start);
    checks.finish();
    drop(vm);
    let status = vr.stop();
    assert!(status.success(), "vrouterd exit {status}");
}

#[test]
fn vm_on_server_mode_vif_and_kernel_pod_with_default_offloads() {
    vm_and_kernel_pod_with_default_offloads(VhostUserMode::Server);
}

#[test]
fn vm_on_client_mode_vif_and_kernel_pod_with_default_offloads() {
    vm_and_kernel_pod_with_default_offloads(VhostUserMode::Client);
}

/// A guest with packed virtqueues (`packed=on`) on a vif in `mode`: it negotiates them, pings
/// the kernel pod and moves verified TCP both ways.
fn vm_with_packed_rings(mode: VhostUserMode) {
    let start = Instant::now();
    let node = Netns::new("vmnode");
    let pod = KernelPod::attached_to(Some(&node), "p", 1, 1500);
    let vr = start_vrouterd(Some(&node));
    route_in_vrf1(&vr, &[("pod1", &pod)]);
    let socket = vr.socket_base().join("vm-uid-7").join("vm7-net0");
    let mut cfg = VmConfig::new("vm7", 7, socket, mode);
    cfg.packed = true;
    route_vm_in_vrf1(&vr, "vm7", &cfg, 3, 2);
    let mut vm = Vm::boot(cfg);
    wait_attached(&vr, "vm7", &mut vm);
    let guest = vm.negotiated_features();
    let backend = vr.vif("vm7").status.features.unwrap_or(0);
    assert_ne!(
        guest & 1 << 34,
        0,
        "the guest uses packed rings: {guest:#x}"
    );
    assert_ne!(backend & 1 << 34, 0, "so does vrouterd: {backend:#x}");
    let vm_ip = vm.config().ip;
    let (ok, out) = vm.ping(pod.ip, 5);
    assert!(ok, "VM → pod ping: {out}\n{}", vr.process.outputs());
    let out = pod.ping(&vm_ip.to_string(), 5);
    assert!(out.contains("5 received"), "pod → VM ping: {out}");
    let mut checks = Checks::default();
    checks.transfer("VM → pod TCP", tcp_vm_to_pod(&mut vm, &pod, BYTES));
    checks.transfer("pod → VM TCP", tcp_pod_to_vm(&pod, &mut vm, BYTES));
    log_counters(&vr, &["vm7"], start);
    checks.finish();
    assert_eq!(vr.vif("vm7").status.broken, None);
    drop(vm);
    let status = vr.stop();
    assert!(status.success(), "vrouterd exit {status}");
}

#[test]
fn vm_with_packed_rings_on_server_mode_vif_moves_verified_tcp() {
    vm_with_packed_rings(VhostUserMode::Server);
}

#[test]
fn vm_with_packed_rings_on_client_mode_vif_moves_verified_tcp() {
    vm_with_packed_rings(VhostUserMode::Client);
}

#[test]
fn two_vms_one_per_vhost_user_mode() {
    let start = Instant::now();
    let vr = start_vrouterd(None);
    let base = vr.socket_base();
    // VM A on a server-mode vif (QEMU connects), VM B on a client-mode vif (QEMU listens).
    let cfg_a = VmConfig::new(
        "vmA",
        5,
        base.join("vm-uid-a").join("vmA-net0"),
        VhostUserMode::Server,
    );
    let mut cfg_b = VmConfig::new(
        "vmB",
        6,
        base.join("vm-uid-b").join("vmB-net0"),
        VhostUserMode::Client,
    );
    // A's RAM is on hugetlbfs, B's in a memfd of ordinary pages: vrouterd maps either.
    cfg_b.ram = GuestRam::Memfd;
    route_vm_in_vrf1(&vr, "vmA", &cfg_a, 1, 3);
    route_vm_in_vrf1(&vr, "vmB", &cfg_b, 2, 3);
    let mut a = Vm::boot(cfg_a);
    let mut b = Vm::boot(cfg_b);
    wait_attached(&vr, "vmA", &mut a);
    wait_attached(&vr, "vmB", &mut b);
    let (ip_a, ip_b) = (a.config().ip, b.config().ip);

    let (ok, out) = a.ping(ip_b, 5);
    assert!(ok, "A → B ping: {out}\n{}", vr.process.outputs());
    let (ok, out) = b.ping(ip_a, 5);
    assert!(ok, "B → A ping: {out}\n{}", vr.process.outputs());

    let mut checks = Checks::default();
    check_offloads(&vr, "vmA", &mut a, &mut checks);
    check_offloads(&vr, "vmB", &mut b, &mut checks);
    let t = Instant::now();
    checks.transfer("A → B TCP", tcp_vm_to_vm(&mut a, &mut b, BYTES));
    eprintln!("A → B TCP took {:?}", t.elapsed());
    let t = Instant::now();
    checks.transfer("B → A TCP", tcp_vm_to_vm(&mut b, &mut a, BYTES));
    eprintln!("B → A TCP took {:?}", t.elapsed());

    log_counters(&vr, &["vmA", "vmB"], start);
    checks.finish();
    drop((a, b));
    let status = vr.stop();
    assert!(status.success(), "vrouterd exit {status}");
}

#[test]
fn vm_and_kernel_pod_on_two_nodes_over_a_kernel_fabric_at_mtu_9000() {
    let start = Instant::now();
    // Node 1 carries the guest (and a pod of its own), node 2 the pod it talks to; VXLAN
    // between them over a veth fabric at 9050 on vrouterd's kernel port.
    let nodes = TwoNodes::start(&vrouterd_bin(), "v", |iface| Fabric::kernel(iface, 9000));
    nodes.tunnel(TunnelEncap::Vxlan);
    let (vr1, pod) = (&nodes.vr1, &nodes.pod2);
    let mut cfg = VmConfig::new(
        "vm5",
        5,
        vr1.socket_base().join("vm-uid-5").join("vm5-net0"),
        VhostUserMode::Server,
    );
    cfg.mtu = 9000;
    // Nexthop 4 to the guest (1 is node 1's pod, 2 receive, 3 the tunnel); node 2 reaches its
    // subnet through the tunnel (the VNI names VRF 1, where node 1 routes it to the guest).
    route_vm_in_vrf1(vr1, "vm5", &cfg, 4, 2);
    overlay::tunnel_to(
        &nodes.vr2,
        TunnelEncap::Vxlan,
        FABRIC_IP_2,
        FABRIC_IP_1,
        FABRIC_MAC_1,
        &["198.18.5.0/24"],
    );
    let mut vm = Vm::boot(cfg);
    wait_attached(vr1, "vm5", &mut vm);
    let vm_ip = vm.config().ip;

    // The guest's ping sets DF (Linux's default for ping sockets); the pod's asks for it.
    let (rc, out) = vm.run(&format!("ping -c 3 -i 0.2 -W 2 -s 8000 {}", pod.ip));
    assert!(
        rc == 0 && out.contains("3 packets received"),
        "VM → pod 8,000-byte ping: {out}\n{}",
        vr1.process.outputs()
    );
    let out = pod.ns.exec(&[
        "ping",
        "-c",
        "3",
        "-i",
        "0.2",
        "-W",
        "2",
        "-M",
        "do",
        "-s",
        "8000",
        &vm_ip.to_string(),
    ]);
    assert!(
        out.contains("3 received"),
        "pod → VM 8,000-byte DF ping: {out}"
    );

    let mut checks = Checks::default();
    check_offloads(vr1, "vm5", &mut vm, &mut checks);
    for dir in ["VM → pod", "pod → VM"] {
        let t = Instant::now();
        let result = if dir == "VM → pod" {
            tcp_vm_to_pod(&mut vm, pod, BYTES)
        } else {
            tcp_pod_to_vm(pod, &mut vm, BYTES)
        };
        checks.transfer(&format!("{dir} TCP across the fabric"), result);
        eprintln!("{dir} TCP took {:?}", t.elapsed());
    }
    let fabric = vr1.vif("fabric0").status.counters;
    eprintln!("fabric0 counters {fabric:?}");
    // Both transfers crossed node 1's fabric (data out, then data in), in jumbo frames: with
    // an ACK for every two segments, far larger on average than 1,500-byte frames can be.
    let (bytes, packets) = (
        fabric.rx_bytes + fabric.tx_bytes,
        fabric.rx_packets + fabric.tx_packets,
    );
    if fabric.rx_bytes < BYTES || fabric.tx_bytes < BYTES || bytes / packets.max(1) < 3000 {
        checks.record(format!(
            "node 1's fabric did not carry both transfers in jumbo frames: {fabric:?}"
        ));
    }
    log_counters(vr1, &["vm5"], start);
    checks.finish();
    drop(vm);
    let (s1, s2) = nodes.stop();
    assert!(s1.success() && s2.success(), "vrouterd exits {s1} {s2}");
}

/// What busybox udhcpc runs in the guest on `bound`: address, MTU, the classless static routes
/// (else the router as default), and udhcpc's variables kept for the test.
const GUEST_DHCP_SCRIPT: &str = r#"#!/bin/sh
case "$1" in
deconfig) ip -4 addr flush dev "$interface" ;;
bound|renew)
    ip addr replace "$ip/$mask" dev "$interface"
    [ -n "$mtu" ] && ip link set "$interface" mtu "$mtu"
    if [ -n "$staticroutes" ]; then
        set -- $staticroutes
        while [ $# -ge 2 ]; do ip route replace "$1" via "$2" dev "$interface"; shift 2; done
    elif [ -n "$router" ]; then
        ip route replace default via "$router" dev "$interface"
    fi
    env | grep -E '^(ip|mask|router|dns|mtu|staticroutes|serverid|lease)=' > /tmp/dhcp.env
    ;;
esac
exit 0
"#;

#[test]
fn vm_takes_address_gateway_mtu_and_a_route_by_dhcp_and_then_reaches_a_pod() {
    use control_api::api::{MacAddr, StaticRoute};
    let start = Instant::now();
    let node = Netns::new("vmdhcp");
    let pod = KernelPod::attached_to(Some(&node), "q", 1, 1500);
    let vr = start_vrouterd(Some(&node));
    route_in_vrf1(&vr, &[("pod1", &pod)]);
    let socket = vr.socket_base().join("vm-uid-6").join("vm6-net0");
    // The guest boots with the address on its command line (198.18.6.2) and gives it up for
    // the one its vif hands out by DHCP.
    let cfg = VmConfig::new("vm6", 6, socket, VhostUserMode::Server);
    let leased: std::net::Ipv4Addr = "198.18.6.9".parse().unwrap();
    let dir = cfg.socket.parent().expect("socket directory").to_path_buf();
    let file = cfg
        .socket
        .file_name()
        .unwrap()
        .to_string_lossy()
        .into_owned();
    let mut req =
        testkit::vrouterd::vhost_user_vif("vm6", MacAddr(cfg.mac), &dir, &file, cfg.vrouterd_mode);
    req.ip = Some(leased);
    req.prefix_len = Some(24);
    req.mtu = Some(1400);
    req.dns_servers = vec!["192.0.2.53".parse().unwrap()];
    req.static_routes = vec![StaticRoute {
        prefix: "198.18.1.0/24".parse().unwrap(),
        via: "198.18.6.1".parse().unwrap(),
    }];
    req.lease_time = Some(3600);
    // IPv6 by router advertisement: the address the guest makes from its MAC (modified EUI-64)
    // in the /64 vrouterd advertises.
    let m = cfg.mac;
    let slaac = std::net::Ipv6Addr::new(
        0x2001,
        0xdb8,
        0x18,
        6,
        u16::from_be_bytes([m[0] ^ 2, m[1]]),
        u16::from_be_bytes([m[2], 0xff]),
        u16::from_be_bytes([0xfe, m[3]]),
        u16::from_be_bytes([m[4], m[5]]),
    );
    req.ip6 = Some(slaac);
    vr.add_vif(&req);
    vr.route_to(
        3,
        "vm6",
        MacAddr(cfg.mac),
        &[&format!("{leased}/32"), &format!("{slaac}/128")],
    );
    let mut vm = Vm::boot(cfg);
    wait_attached(&vr, "vm6", &mut vm);

    vm.check(&format!(
        "cat > /tmp/dhcp.sh <<'EOF'\n{GUEST_DHCP_SCRIPT}EOF\nchmod +x /tmp/dhcp.sh"
    ));
    vm.check("ip -4 addr flush dev eth0; ip -4 route flush dev eth0 || true");
    let (rc, log) = vm.run_timeout(
        "busybox udhcpc -i eth0 -f -q -n -t 5 -T 2 -O mtu -O staticroutes -s /tmp/dhcp.sh 2>&1",
        Duration::from_secs(60),
    );
    assert_eq!(rc, 0, "udhcpc in the guest got no lease: {log}");
    let env = vm.check("cat /tmp/dhcp.env");
    eprintln!("guest udhcpc: {log}\n{env}");
    for want in [
        format!("ip={leased}"),
        "mask=24".to_string(),
        "router=198.18.6.1".to_string(),
        "mtu=1400".to_string(),
        "dns=192.0.2.53".to_string(),
        "staticroutes=198.18.1.0/24 198.18.6.1 0.0.0.0/0 198.18.6.1".to_string(),
    ] {
        assert!(env.lines().any(|l| l.trim() == want), "{want} in {env}");
    }
    let addr = vm.check("ip -4 addr show dev eth0");
    assert!(addr.contains(&format!("{leased}/24")), "{addr}");
    let link = vm.check("ip link show dev eth0");
    assert!(link.contains("mtu 1400"), "{link}");
    let routes = vm.check("ip -4 route show");
    assert!(routes.contains("198.18.1.0/24 via 198.18.6.1"), "{routes}");

    let (ok, out) = vm.ping(pod.ip, 3);
    assert!(ok, "VM → pod ping: {out}");
    let out = pod.ping(&leased.to_string(), 3);
    assert!(out.contains("3 received"), "pod → VM ping: {out}");

    // IPv6: the guest solicited a router when its link came up (and keeps soliciting until
    // answered); the advertisement gave it its address and the vrouter as default router.
    let global = format!("ip -6 addr show dev eth0 scope global | grep -q '{slaac}/64'");
    if let Err(e) = vm.wait_until(
        &format!("{global} && ! ip -6 addr show dev eth0 | grep -q tentative"),
        Duration::from_secs(60),
    ) {
        let (_, addr) = vm.run("ip -6 addr show dev eth0; ip -6 route show");
        panic!("no SLAAC address {slaac} in the guest: {e}\n{addr}");
    }
    let route = vm.check("ip -6 route show default");
    assert!(
        route.contains("via fe80::200:5eff:fe00:100"),
        "default route from the advertisement: {route}"
    );
    let (ok, out) = vm.ping(pod.ip6, 3);
    assert!(ok, "VM → pod IPv6 ping: {out}");
    let out = pod.ping(&slaac.to_string(), 3);
    assert!(out.contains("3 received"), "pod → VM IPv6 ping: {out}");
    let server = pod.tcp_server();
    let sent = vm
        .tcp_send(pod.ip6, server.port(), 1 << 20, Duration::from_secs(120))
        .expect("VM → pod TCP over IPv6");
    let received = server.finish().expect("the pod's TCP server");
    assert_eq!(sent, received, "VM → pod TCP over IPv6: bytes and SHA-256");
    log_counters(&vr, &["vm6"], start);
    drop(vm);
    assert!(vr.stop().success());
}
