//! Source NAT through the real vrouterd: a kernel pod (veth, default offloads on) in VRF 1
//! reaches a "remote" namespace on the fabric side (an af-packet vif in VRF 0) behind a pool of
//! one address and four ports. The remote sees only the pool address (tcpdump there), a TCP
//! transfer and pings go through both ways intact (the remote's kernel checks every checksum),
//! the flows are listed with both tuples, an ICMP error from the remote reaches the pod's
//! socket, and flows beyond the pool's four are counted drops, not a crash.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::PathBuf;
use std::time::Duration;

use control_api::api::{FlowQuery, MacAddr, NatPool, NatPorts, VhostUserMode};
use testkit::kernel_pod::{route_in_vrf1, KernelPod};
use testkit::netns::Netns;
use testkit::testpmd::TestpmdConfig;
use testkit::vrouterd::{vhost_user_vif, Vrouterd};

const POOL: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 64);
const REMOTE: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 10);
const REMOTE_GW: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 1);
const NH_UPLINK: u32 = 10;
const PORTS: (u16, u16) = (40000, 40003);

fn vrouterd_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_vrouterd"))
}

/// The IPv4 source and destination of an Ethernet frame, if it carries IPv4.
fn ipv4_ends(f: &[u8]) -> Option<(Ipv4Addr, Ipv4Addr)> {
    if f.len() < 34 || f[12..14] != [0x08, 0x00] {
        return None;
    }
    let a = |o: usize| Ipv4Addr::new(f[o], f[o + 1], f[o + 2], f[o + 3]);
    Some((a(26), a(30)))
}

/// The remote: 203.0.113.10/24 on the far side of a router at 203.0.113.1 (see
/// [`KernelPod::remote`]).
fn remote(node: &Netns, tag: &str, gw_mac: Option<&str>) -> KernelPod {
    KernelPod::remote(node, tag, 3, REMOTE, REMOTE_GW, gw_mac)
}

/// vrouterd in `node`: `pod` in VRF 1, `remote` behind af-packet vif `uplink` in VRF 0,
/// 203.0.113.0/24 routed there, VRF 1 attached to pool `egress` (the pool address, ports
/// 40000-40003).
fn vrouterd_with_snat(node: &Netns, pod: &KernelPod, remote: &KernelPod) -> Vrouterd {
    vrouterd_with_snat_and(node, pod, remote, &[])
}

/// [`vrouterd_with_snat`] with more vrouterd options.
fn vrouterd_with_snat_and(
    node: &Netns,
    pod: &KernelPod,
    remote: &KernelPod,
    more: &[&str],
) -> Vrouterd {
    let mut args = vec!["--idle-sleep-us", "20", "--flow-entries", "4096"];
    args.extend_from_slice(more);
    let vr = Vrouterd::start_netns(Some(node), &vrouterd_bin(), &args, &[]);
    route_in_vrf1(&vr, &[("pod", pod)]);
    uplink_and_pool(&vr, remote);
    vr
}

/// `remote` behind af-packet vif `uplink` in VRF 0, 203.0.113.0/24 routed there from VRF 1,
/// VRF 1 attached to pool `egress` (the pool address, ports 40000-40003).
fn uplink_and_pool(vr: &Vrouterd, remote: &KernelPod) {
    vr.add_af_packet_vif("uplink", 0, remote);
    vr.route_to(
        NH_UPLINK,
        "uplink",
        MacAddr(remote.mac),
        &["203.0.113.0/24"],
    );
    let pool = NatPool {
        vrf: 0,
        first: POOL.into(),
        last: POOL.into(),
        ports: NatPorts {
            first: PORTS.0,
            last: PORTS.1,
        },
    };
    vr.api(|c| async move { c.nat_pool_set("egress", &pool).await })
        .expect("pool");
    vr.api(|c| async move { c.snat_set(1, "egress").await })
        .expect("attach");
}

#[test]
fn a_pod_behind_source_nat_reaches_a_remote_that_sees_only_the_pool() {
    let node = Netns::new("natnode");
    let pod = KernelPod::attached_to(Some(&node), "np", 1, 1500);
    let remote = remote(&node, "nr", Some("00:00:5e:00:01:00"));
    let vr = vrouterd_with_snat(&node, &pod, &remote);

    // What the remote sees: every IPv4 frame between it and the pool, none from the pod.
    let cap = remote.ns.capture("eth0", "ip", 8);
    let out = pod.ping(&REMOTE.to_string(), 3);
    assert!(
        out.contains("3 received"),
        "pings through NAT answered: {out}"
    );
    let (sent, got) = pod.tcp_transfer_to(&remote, REMOTE.into(), 3_000_000);
    assert_eq!(sent, got, "TCP through NAT arrives intact");
    let frames = cap.frames(Duration::from_secs(10));
    assert!(frames.len() >= 6, "tcpdump saw the pings: {}", frames.len());
    for f in &frames {
        let (s, d) = ipv4_ends(f).expect("IPv4");
        assert!(
            (s, d) == (POOL, REMOTE) || (s, d) == (REMOTE, POOL),
            "the remote sees only the pool address: {s} -> {d}"
        );
    }

    // The flows: listed with the tuple they leave with, from the pool.
    let page = vr
        .api(|c| async move {
            c.flows(&FlowQuery {
                vrf: Some(1),
                limit: Some(100),
                cursor: None,
            })
            .await
        })
        .expect("flows");
    let tcp = page
        .flows
        .iter()
        .find(|f| f.proto == 6 && f.src == std::net::IpAddr::V4(pod.ip))
        .unwrap_or_else(|| panic!("the TCP flow is listed: {page:?}"));
    let t = tcp.translated.as_ref().expect("translated tuple");
    assert_eq!((t.vrf, t.src, t.dst), (0, POOL.into(), REMOTE.into()));
    assert!((40000..=40003).contains(&t.sport), "{t:?}");

    // A UDP flow to a closed port: the remote's port unreachable, sent to the pool pair,
    // reaches the pod's socket as a refused connection (the quote translated back).
    let refused = pod.ns.exec(&[
        "python3",
        "-c",
        "import socket\ns=socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\ns.settimeout(3)\ns.connect(('203.0.113.10', 9))\ns.send(b'x')\ntry:\n s.recv(10)\n print('answered')\nexcept ConnectionRefusedError:\n print('refused')\nexcept socket.timeout:\n print('timeout')",
    ]);
    assert_eq!(
        refused.trim(),
        "refused",
        "the ICMP error reached the pod's socket"
    );

    // Three pairs taken (the ping, the TCP connection, the UDP flow): three more UDP flows
    // find one free, the others are dropped and counted.
    pod.ns.exec(&[
        "python3",
        "-c",
        "import socket\nfor p in range(3):\n s=socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\n s.sendto(b'x', ('203.0.113.10', 9000+p))",
    ]);
    let drops = vr.wait_until(
        "an exhausted pool counted",
        || {
            vr.api(|c| async move { c.dropstats().await })
                .expect("dropstats")
        },
        |d| d.reasons.get("nat_pool_exhausted").copied().unwrap_or(0) >= 2,
    );
    assert_eq!(
        drops.reasons.get("nat_pool_exhausted"),
        Some(&2),
        "{drops:?}"
    );
    let pools = vr
        .api(|c| async move { c.nat_pools().await })
        .expect("pools");
    assert_eq!(
        (pools[0].in_use, pools[0].capacity, pools[0].exhausted),
        (4, 4, 2)
    );
    let metrics = vr
        .api(|c| async move { c.metrics().await })
        .expect("metrics");
    assert!(
        metrics.contains("vrouter_nat_pool_pairs_in_use{pool=\"egress\"} 4"),
        "{metrics}"
    );
    let translated: u64 = metrics
        .lines()
        .find_map(|l| l.strip_prefix("vrouter_nat_translated_packets_total "))
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("translated packets in the metrics: {metrics}"));
    assert!(
        translated >= 6,
        "pings and TCP both ways were translated: {translated}"
    );

    // Detached: the flows go with their pairs, and the pod's traffic leaves untranslated.
    vr.api(|c| async move { c.snat_del(1).await })
        .expect("detach");
    let pools = vr
        .api(|c| async move { c.nat_pools().await })
        .expect("pools");
    assert_eq!(pools[0].in_use, 0);
    let cap = remote.ns.capture("eth0", "icmp", 1);
    // No answer comes back (the remote answers the pod's own address, which the fabric does
    // not route): only what the remote saw counts.
    let _ = pod
        .ns
        .command("ping")
        .args(["-c", "1", "-W", "1", &REMOTE.to_string()])
        .output();
    let frames = cap.frames(Duration::from_secs(10));
    assert_eq!(
        frames.first().and_then(|f| ipv4_ends(f)),
        Some((pod.ip, REMOTE)),
        "untranslated once detached"
    );
    assert!(vr.stop().success(), "vrouterd stops cleanly");
}

/// What the remote saw of one packet from the pod: everything a translation decides, with
/// the checksums checked against etherparse's, or for a checksum left to the receiver (the
/// pod's veth offloads it) the pseudo-header sum of the translated addresses; the pool port
/// as "in the pool", since the kernel and vrouterd may pick different ones.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct Seen {
    proto: u8,
    src: Ipv4Addr,
    dst: Ipv4Addr,
    sport_in_pool: bool,
    dport: u16,
    payload: Vec<u8>,
    checksums_ok: bool,
}

fn seen(f: &[u8]) -> Seen {
    use etherparse::{NetSlice, SlicedPacket, TransportSlice};
    let p = SlicedPacket::from_ethernet(f).expect("a frame etherparse reads");
    let Some(NetSlice::Ipv4(ip)) = &p.net else {
        panic!("not IPv4: {f:02x?}")
    };
    let h = ip.header().to_header();
    let ip_ok = h.header_checksum == h.calc_header_checksum();
    let (s, d) = (Ipv4Addr::from(h.source), Ipv4Addr::from(h.destination));
    let in_pool = |p: u16| (PORTS.0..=PORTS.1).contains(&p);
    match &p.transport {
        Some(TransportSlice::Udp(u)) => Seen {
            proto: 17,
            src: s,
            dst: d,
            sport_in_pool: in_pool(u.source_port()),
            dport: u.destination_port(),
            payload: u.payload().to_vec(),
            checksums_ok: ip_ok
                && (u.checksum() == u.to_header().calc_checksum_ipv4(&h, u.payload()).unwrap()
                    || u.checksum() == pseudo_header_sum(s, d, 17, u.length())),
        },
        Some(TransportSlice::Icmpv4(i)) => Seen {
            proto: 1,
            src: s,
            dst: d,
            // The kernel keeps an echo identifier it can; vrouterd takes one from the pool.
            sport_in_pool: true,
            dport: 0,
            // Ping's data starts with a timestamp: only its length is the same.
            payload: (i.payload().len() as u32).to_be_bytes().to_vec(),
            checksums_ok: ip_ok && i.checksum() == i.header().icmp_type.calc_checksum(i.payload()),
        },
        other => panic!("neither UDP nor ICMP: {other:?}"),
    }
}

/// The folded, uncomplemented pseudo-header sum: what the checksum field of a packet whose
/// checksum is left to the receiving side (offloaded on a veth: tcpdump sees it so) holds.
fn pseudo_header_sum(src: Ipv4Addr, dst: Ipv4Addr, proto: u8, len: u16) -> u16 {
    let words = |a: Ipv4Addr| {
        let o = a.octets();
        u32::from(u16::from_be_bytes([o[0], o[1]])) + u32::from(u16::from_be_bytes([o[2], o[3]]))
    };
    let mut sum = words(src) + words(dst) + u32::from(proto) + u32::from(len);
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    sum as u16
}

/// From `pod`: three UDP datagrams from three source ports and two pings to the remote;
/// what the remote captured of them, sorted.
fn send_and_capture(pod: &KernelPod, remote: &KernelPod) -> Vec<Seen> {
    send_to_and_capture(pod, REMOTE, remote)
}

/// From `from`: three UDP datagrams from source ports 5001-5003 and two pings to `dst`; what
/// `at` captured of them, sorted.
fn send_to_and_capture(from: &KernelPod, dst: Ipv4Addr, at: &KernelPod) -> Vec<Seen> {
    send_and_capture_any(
        from,
        dst.into(),
        at,
        "udp port 7000 or icmp[icmptype] == icmp-echo",
        seen,
    )
}

/// [`send_to_and_capture`] to `dst` of either family: `at` captures with `filter`, each frame
/// read by `read`.
fn send_and_capture_any<T: Ord>(
    from: &KernelPod,
    dst: IpAddr,
    at: &KernelPod,
    filter: &str,
    read: fn(&[u8]) -> T,
) -> Vec<T> {
    let cap = at.ns.capture("eth0", filter, 5);
    let family = if dst.is_ipv6() { "AF_INET6" } else { "AF_INET" };
    from.ns.exec(&[
        "python3",
        "-c",
        &format!("import socket\nfor p in (5001, 5002, 5003):\n s=socket.socket(socket.{family}, socket.SOCK_DGRAM)\n s.bind(('', p))\n s.sendto(b'oracle %d' % p, ('{dst}', 7000))"),
    ]);
    let out = from.ping(&dst.to_string(), 2);
    assert!(out.contains("2 received"), "pings answered: {out}");
    let mut seen: Vec<T> = cap
        .frames(Duration::from_secs(10))
        .iter()
        .map(|f| read(f))
        .collect();
    seen.sort();
    seen
}

/// The Linux kernel as the oracle: the same traffic from a pod through a namespace that
/// source-NATs with iptables (nf_tables) to the same pool arrives at the remote as it does
/// through vrouterd: from the pool address, ports in the pool, the same payloads, checksums
/// valid.
#[test]
fn source_nat_translates_as_the_kernel_does() {
    // The kernel: a router namespace forwarding between the pod and the remote, SNAT to the
    // pool on the remote's side.
    let router = Netns::new("natkr");
    let kpod = KernelPod::attached_to(Some(&router), "ko", 1, 1500);
    let kremote = remote(&router, "kr", None);
    router.ip(&["addr", "add", "198.18.1.1/24", "dev", &kpod.host_side]);
    router.ip(&[
        "addr",
        "add",
        &format!("{REMOTE_GW}/24"),
        "dev",
        &kremote.host_side,
    ]);
    router.exec(&["sysctl", "-qw", "net.ipv4.ip_forward=1"]);
    let to = format!("{POOL}:{}-{}", PORTS.0, PORTS.1);
    for proto in ["udp", "tcp"] {
        router.exec(&[
            "iptables",
            "-t",
            "nat",
            "-A",
            "POSTROUTING",
            "-o",
            &kremote.host_side,
            "-p",
            proto,
            "-j",
            "SNAT",
            "--to-source",
            &to,
        ]);
    }
    router.exec(&[
        "iptables",
        "-t",
        "nat",
        "-A",
        "POSTROUTING",
        "-o",
        &kremote.host_side,
        "-p",
        "icmp",
        "-j",
        "SNAT",
        "--to-source",
        &POOL.to_string(),
    ]);
    let kernel = send_and_capture(&kpod, &kremote);

    let node = Netns::new("natvr");
    let pod = KernelPod::attached_to(Some(&node), "vo", 1, 1500);
    let remote = remote(&node, "vr", Some("00:00:5e:00:01:00"));
    let vr = vrouterd_with_snat(&node, &pod, &remote);
    let ours = send_and_capture(&pod, &remote);

    assert_eq!(kernel.len(), 5, "the kernel's translations: {kernel:?}");
    for s in &kernel {
        assert!(
            s.src == POOL && s.sport_in_pool && s.checksums_ok,
            "kernel: {s:?}"
        );
    }
    assert_eq!(ours, kernel, "vrouterd translates as the kernel does");
    assert!(vr.stop().success(), "vrouterd stops cleanly");
}

/// The kernel's 1:1 NAT in `router` (`tool`: iptables or ip6tables): `floating` is `pod_ip`
/// both ways, toward the remote's side `out`.
fn one_to_one_nat(router: &Netns, tool: &str, floating: &str, pod_ip: &str, out: &str) {
    let rules: [&[&str]; 2] = [
        &[
            "PREROUTING",
            "-d",
            floating,
            "-j",
            "DNAT",
            "--to-destination",
            pod_ip,
        ],
        &[
            "POSTROUTING",
            "-s",
            pod_ip,
            "-o",
            out,
            "-j",
            "SNAT",
            "--to-source",
            floating,
        ],
    ];
    for rule in rules {
        let mut args = vec![tool, "-t", "nat", "-A"];
        args.extend_from_slice(rule);
        router.exec(&args);
    }
}

/// The kernel as the oracle for a floating IP: a router namespace doing 1:1 NAT with
/// iptables (DNAT of the floating address to the pod, SNAT of the pod's flows to it) delivers
/// the remote's datagrams and pings to the pod as vrouterd does: to the pod's address from the
/// remote's real one, ports and payloads kept, checksums valid; and the pod's own leave from
/// the floating address both ways alike.
#[test]
fn floating_ip_translates_as_the_kernels_dnat_does() {
    const FLOATING: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 200);
    let router = Netns::new("natkd");
    let kpod = KernelPod::attached_to(Some(&router), "kdo", 1, 1500);
    let kremote = remote(&router, "kdr", None);
    router.ip(&["addr", "add", "198.18.1.1/24", "dev", &kpod.host_side]);
    router.ip(&[
        "addr",
        "add",
        &format!("{REMOTE_GW}/24"),
        "dev",
        &kremote.host_side,
    ]);
    router.exec(&["sysctl", "-qw", "net.ipv4.ip_forward=1"]);
    let (floating, pod_ip) = (FLOATING.to_string(), kpod.ip.to_string());
    one_to_one_nat(&router, "iptables", &floating, &pod_ip, &kremote.host_side);
    let kernel_in = send_to_and_capture(&kremote, FLOATING, &kpod);
    let kernel_out = send_to_and_capture(&kpod, REMOTE, &kremote);

    let node = Netns::new("natvd");
    let pod = KernelPod::attached_to(Some(&node), "vdo", 1, 1500);
    let remote = remote(&node, "vdr", Some("00:00:5e:00:01:00"));
    let vr = vrouterd_with_snat(&node, &pod, &remote);
    let fip = control_api::api::FloatingIp {
        vrf: 1,
        ip: pod.ip.into(),
    };
    vr.api(|c| async move { c.floating_ip_set(FLOATING, &fip).await })
        .expect("floating ip");
    let ours_in = send_to_and_capture(&remote, FLOATING, &pod);
    let ours_out = send_to_and_capture(&pod, REMOTE, &remote);

    assert_eq!(kernel_in.len(), 5, "the kernel's inbound: {kernel_in:?}");
    for s in &kernel_in {
        assert!(
            s.src == REMOTE && s.dst == kpod.ip && s.checksums_ok,
            "kernel: {s:?}"
        );
    }
    assert!(kernel_in.iter().any(|s| s.dport == 7000));
    assert_eq!(kernel_out.len(), 5, "the kernel's outbound: {kernel_out:?}");
    for s in &kernel_out {
        assert!(s.src == FLOATING && s.checksums_ok, "kernel: {s:?}");
    }
    assert_eq!(ours_in, kernel_in, "inbound translated as the kernel does");
    assert_eq!(
        ours_out, kernel_out,
        "outbound translated as the kernel does"
    );
    assert!(vr.stop().success(), "vrouterd stops cleanly");
}

/// A floating IP: the remote reaches the pod through it (the pod sees the remote's real
/// address), and the pod's own flows toward the fabric leave from it instead of the pool.
#[test]
fn a_remote_reaches_a_pod_through_its_floating_ip() {
    const FLOATING: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 200);
    let node = Netns::new("natfip");
    let pod = KernelPod::attached_to(Some(&node), "fp", 1, 1500);
    let remote = remote(&node, "fr", Some("00:00:5e:00:01:00"));
    let vr = vrouterd_with_snat(&node, &pod, &remote);
    let fip = control_api::api::FloatingIp {
        vrf: 1,
        ip: pod.ip.into(),
    };
    vr.api(|c| async move { c.floating_ip_set(FLOATING, &fip).await })
        .expect("floating ip");

    // In: what reaches the pod comes from the remote's own address.
    let at_pod = pod.ns.capture("eth0", "tcp and src host 203.0.113.10", 1);
    let (sent, got) = remote.tcp_transfer_to(&pod, FLOATING.into(), 2_000_000);
    assert_eq!(sent, got, "TCP to the floating IP reaches the pod intact");
    let frames = at_pod.frames(Duration::from_secs(10));
    assert_eq!(
        frames.first().and_then(|f| ipv4_ends(f)),
        Some((REMOTE, pod.ip)),
        "the pod sees the remote's real address"
    );
    let out = remote.ping(&FLOATING.to_string(), 2);
    assert!(
        out.contains("2 received"),
        "the floating IP answers pings: {out}"
    );

    // Out: the pod's own flows leave from the floating IP, not from the pool.
    let at_remote = remote.ns.capture("eth0", "icmp[icmptype] == icmp-echo", 1);
    let out = pod.ping(&REMOTE.to_string(), 1);
    assert!(out.contains("1 received"), "{out}");
    let frames = at_remote.frames(Duration::from_secs(10));
    assert_eq!(
        frames.first().and_then(|f| ipv4_ends(f)),
        Some((FLOATING, REMOTE)),
        "the pod leaves from its floating IP"
    );
    let pools = vr
        .api(|c| async move { c.nat_pools().await })
        .expect("pools");
    assert_eq!(pools[0].in_use, 0, "no pool pair taken");
    assert!(vr.stop().success(), "vrouterd stops cleanly");
}

/// Flow export shows the translation: the records nfcapd receives for a pod's pings through
/// source NAT carry the pod's address and, as post-NAT fields, the pool's.
#[test]
fn exported_flow_records_carry_the_source_nat_translation() {
    let node = Netns::new("natipfix");
    let pod = KernelPod::attached_to(Some(&node), "nx", 1, 1500);
    let remote = remote(&node, "nxr", Some("00:00:5e:00:01:00"));
    let dir = tempfile::tempdir().expect("tempdir");
    // The collector on the node's loopback, beside vrouterd.
    let mut collector = testkit::process::TestProcess::spawn(
        std::path::Path::new("/usr/bin/ip"),
        &[
            "netns",
            "exec",
            node.name(),
            "nfcapd",
            "-w",
            dir.path().to_str().unwrap(),
            "-b",
            "127.0.0.1",
            "-p",
            "4739",
            "-t",
            "3600",
        ],
    );
    let vr = vrouterd_with_snat_and(
        &node,
        &pod,
        &remote,
        &["--ipfix-collector", "127.0.0.1:4739"],
    );
    let out = pod.ping(&REMOTE.to_string(), 3);
    assert!(out.contains("3 received"), "{out}");
    assert!(vr.stop().success());
    std::thread::sleep(Duration::from_millis(300));
    collector.signal("TERM");
    collector.wait(Duration::from_secs(10));
    let out = std::process::Command::new("nfdump")
        .args(["-R", dir.path().to_str().unwrap(), "-q", "-N", "-o"])
        .arg("fmt:%sa,%da,%xsa,%xda,%pr,%pkt")
        .output()
        .expect("nfdump");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let echo: Vec<Vec<String>> = text
        .lines()
        .map(|l| {
            l.split(',')
                .map(|f| f.trim().to_string())
                .collect::<Vec<_>>()
        })
        .filter(|f| f.len() == 6 && f[0] == pod.ip.to_string() && f[4] == "1")
        .collect();
    assert!(!echo.is_empty(), "the pod's echo flow was exported: {text}");
    let packets: u64 = echo.iter().map(|f| f[5].parse::<u64>().unwrap()).sum();
    assert_eq!(packets, 3, "{text}");
    for f in &echo {
        assert_eq!(
            (f[1].as_str(), f[2].as_str(), f[3].as_str()),
            ("203.0.113.10", "198.51.100.64", "203.0.113.10"),
            "to the remote, translated to the pool: {text}"
        );
    }
}

/// A DPDK pod behind source NAT: testpmd (txonly, over virtio-user) in VRF 1 sends UDP to the
/// remote, which sees every datagram from the pool address and a pool port, with valid IPv4
/// checksums and the UDP checksum testpmd left out still left out; the flow is listed with
/// both tuples and holds one pair.
#[test]
fn a_testpmd_pod_behind_source_nat_reaches_a_remote_that_sees_only_the_pool() {
    const POD_MAC: MacAddr = MacAddr([0x02, 0, 0, 0, 0x0a, 0x01]);
    let node = Netns::new("nattp");
    let remote = remote(&node, "tpr", Some("00:00:5e:00:01:00"));
    let vr = Vrouterd::start_netns(
        Some(&node),
        &vrouterd_bin(),
        &["--flow-entries", "4096"],
        &[],
    );
    vr.api(|c| async move { c.vrf_add(1).await })
        .expect("vrf 1");
    let dir = vr.socket_base().join("pod-uid-nat");
    let req = vhost_user_vif("tpod", POD_MAC, &dir, "tpod-net1", VhostUserMode::Server);
    vr.api(|c| async move { c.vif_add(&req).await })
        .expect("tpod");
    vr.route_to(1, "tpod", POD_MAC, &["198.18.1.2/32"]);
    uplink_and_pool(&vr, &remote);

    let cap = remote.ns.capture("eth0", "udp", 50);
    let pod =
        TestpmdConfig::sender(dir.join("tpod-net1"), "198.18.1.2", &REMOTE.to_string()).start();
    vr.wait_connected("tpod");
    let frames = cap.frames(Duration::from_secs(20));
    assert_eq!(frames.len(), 50, "the remote received the pod's datagrams");
    for f in &frames {
        use etherparse::{NetSlice, SlicedPacket, TransportSlice};
        let p = SlicedPacket::from_ethernet(f).expect("a frame etherparse reads");
        let Some(NetSlice::Ipv4(ip)) = &p.net else {
            panic!("not IPv4: {f:02x?}")
        };
        let h = ip.header().to_header();
        assert_eq!(h.header_checksum, h.calc_header_checksum(), "IPv4 checksum");
        assert_eq!(
            (Ipv4Addr::from(h.source), Ipv4Addr::from(h.destination)),
            (POOL, REMOTE),
            "the remote sees only the pool address"
        );
        let Some(TransportSlice::Udp(u)) = &p.transport else {
            panic!("not UDP: {f:02x?}")
        };
        assert!((PORTS.0..=PORTS.1).contains(&u.source_port()), "{u:?}");
        assert_eq!(u.checksum(), 0, "no UDP checksum sent, none made up");
    }
    let page = vr
        .api(|c| async move {
            c.flows(&FlowQuery {
                vrf: Some(1),
                limit: Some(100),
                cursor: None,
            })
            .await
        })
        .expect("flows");
    let flow = page
        .flows
        .iter()
        .find(|f| f.proto == 17 && f.src == std::net::IpAddr::V4(Ipv4Addr::new(198, 18, 1, 2)))
        .unwrap_or_else(|| panic!("the pod's flow is listed: {page:?}"));
    let t = flow.translated.as_ref().expect("translated tuple");
    assert_eq!((t.vrf, t.src, t.dst), (0, POOL.into(), REMOTE.into()));
    let pools = vr
        .api(|c| async move { c.nat_pools().await })
        .expect("pools");
    assert_eq!(pools[0].in_use, 1, "one flow, one pair");
    drop(pod);
    assert!(vr.stop().success(), "vrouterd stops cleanly");
}

/// From the pod: a UDP datagram with TTL 2 from port 5555 to 203.0.113.10:33434 on a socket
/// with IP_RECVERR; prints what its error queue reports: origin, ICMP type and code, the
/// offender's address and the datagram's payload, or "timeout".
const TTL_PROBE: &str = r#"
import select, socket, struct
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.setsockopt(socket.SOL_IP, 11, 1)  # IP_RECVERR
s.setsockopt(socket.SOL_IP, socket.IP_TTL, 2)
s.bind(("", 5555))
s.connect(("203.0.113.10", 33434))
s.send(b"probe")
p = select.poll()
p.register(s, select.POLLERR)
if not p.poll(5000):
    print("timeout")
    raise SystemExit
data, anc, _, _ = s.recvmsg(64, 256, socket.MSG_ERRQUEUE)
for level, kind, d in anc:
    if level == socket.SOL_IP and kind == 11:
        _, origin, ty, code, _, _, _ = struct.unpack("=IBBBBII", d[:16])
        print(origin, ty, code, socket.inet_ntoa(d[20:24]), data.decode())
"#;

/// TTL exceeded from beyond the NAT: a router namespace between the fabric and the remote
/// drops the pod's datagram sent with TTL 2 (vrouterd takes one) and answers the pool pair;
/// the error reaches the pod's socket (its kernel matched the quote to the socket: the pod's
/// own addresses and ports) and, captured in the pod, carries valid checksums outside and in
/// the quote.
#[test]
fn ttl_exceeded_from_beyond_the_nat_reaches_the_pods_socket() {
    const ROUTER: &str = "192.0.2.2";
    let node = Netns::new("natttl");
    let pod = KernelPod::attached_to(Some(&node), "tp", 1, 1500);
    // The router: its eth0 on vrouterd's uplink (vrouterd at 192.0.2.1, MAC given
    // statically), rt1 toward the far host.
    let router = KernelPod::attached_to(Some(&node), "tr", 3, 1500);
    router.ns.ip(&["addr", "flush", "dev", "eth0"]);
    router
        .ns
        .ip(&["addr", "add", &format!("{ROUTER}/24"), "dev", "eth0"]);
    router.ns.ip(&[
        "neigh",
        "replace",
        "192.0.2.1",
        "lladdr",
        "00:00:5e:00:01:00",
        "dev",
        "eth0",
        "nud",
        "permanent",
    ]);
    router
        .ns
        .ip(&["route", "replace", "default", "via", "192.0.2.1"]);
    let far = Netns::new("natfar");
    router.ns.veth("rt1", "eth0", Some(&far));
    router
        .ns
        .ip(&["addr", "add", &format!("{REMOTE_GW}/24"), "dev", "rt1"]);
    router.ns.exec(&["sysctl", "-qw", "net.ipv4.ip_forward=1"]);
    far.ip(&["addr", "add", &format!("{REMOTE}/24"), "dev", "eth0"]);
    far.ip(&["route", "add", "default", "via", &REMOTE_GW.to_string()]);
    let vr = vrouterd_with_snat(&node, &pod, &router);
    let out = pod.ping(&REMOTE.to_string(), 1);
    assert!(
        out.contains("1 received"),
        "the far host answers through the router: {out}"
    );

    let cap = pod.ns.capture("eth0", "icmp[icmptype] == icmp-timxceed", 1);
    let out = pod.ns.exec(&["python3", "-c", TTL_PROBE]);
    // Origin 2: ICMP; type 11 code 0: TTL exceeded in transit.
    assert_eq!(
        out.trim(),
        format!("2 11 0 {ROUTER} probe"),
        "the error reached the pod's socket"
    );
    let frames = cap.frames(Duration::from_secs(10));
    let f = frames.first().expect("the error, captured in the pod");
    let e = testkit::icmp::icmp4_error(f);
    assert_eq!((e.src, e.dst), (ROUTER.parse().unwrap(), pod.ip));
    assert_eq!(
        e.quoted,
        (pod.ip, 5555, REMOTE, 33434),
        "the quote is the pod's own datagram"
    );
    assert!(vr.stop().success(), "vrouterd stops cleanly");
}

const REMOTE6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0xff, 0, 0, 0, 0, 0x10);
const REMOTE6_GW: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0xff, 0, 0, 0, 0, 1);
const FLOATING6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0x64, 0, 0, 0, 0, 0xc8);
const POOL6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0x64, 0, 0, 0, 0, 0x40);

/// The IPv6 source and destination of an Ethernet frame, if it carries IPv6.
fn ipv6_ends(f: &[u8]) -> Option<(Ipv6Addr, Ipv6Addr)> {
    if f.len() < 54 || f[12..14] != [0x86, 0xdd] {
        return None;
    }
    let a = |o: usize| Ipv6Addr::from(<[u8; 16]>::try_from(&f[o..o + 16]).unwrap());
    Some((a(22), a(38)))
}

/// [`remote`] speaking IPv6 as well: 2001:db8:ff::10/64 behind a router at 2001:db8:ff::1
/// (whose MAC is `gw_mac` given statically, or learnt by NDP from a kernel router).
fn remote6(node: &Netns, tag: &str, gw_mac: Option<&str>) -> KernelPod {
    let r = remote(node, tag, gw_mac);
    let gw = REMOTE6_GW.to_string();
    r.ns.ip(&[
        "-6",
        "addr",
        "add",
        &format!("{REMOTE6}/64"),
        "dev",
        "eth0",
        "nodad",
    ]);
    if let Some(mac) = gw_mac {
        r.ns.ip(&[
            "-6",
            "neigh",
            "replace",
            &gw,
            "lladdr",
            mac,
            "dev",
            "eth0",
            "nud",
            "permanent",
        ]);
    }
    r.ns.ip(&["-6", "route", "replace", "default", "via", &gw]);
    r
}

/// A kernel router namespace between `pod` and `remote` (both attached to it): the pods'
/// gateways (IPv4 and IPv6) on its ends, forwarding both families.
fn kernel_router(router: &Netns, pod: &KernelPod, remote: &KernelPod) {
    for side in [&pod.host_side, &remote.host_side] {
        router.exec(&[
            "sysctl",
            "-qw",
            &format!("net.ipv6.conf.{side}.disable_ipv6=0"),
        ]);
    }
    router.ip(&["addr", "add", "198.18.1.1/24", "dev", &pod.host_side]);
    router.ip(&[
        "addr",
        "add",
        &format!("{REMOTE_GW}/24"),
        "dev",
        &remote.host_side,
    ]);
    router.ip(&[
        "-6",
        "addr",
        "add",
        &format!("{}/64", pod.gateway6()),
        "dev",
        &pod.host_side,
        "nodad",
    ]);
    router.ip(&[
        "-6",
        "addr",
        "add",
        &format!("{REMOTE6_GW}/64"),
        "dev",
        &remote.host_side,
        "nodad",
    ]);
    router.exec(&["sysctl", "-qw", "net.ipv4.ip_forward=1"]);
    router.exec(&["sysctl", "-qw", "net.ipv6.conf.all.forwarding=1"]);
}

/// vrouterd in `node`: `pod` in VRF 1, `remote` behind af-packet vif `uplink` in VRF 0 with
/// 203.0.113.0/24 and 2001:db8:ff::/64 routed there, VRF 1 attached to pool `egress`.
fn vrouterd_with_snat6(node: &Netns, pod: &KernelPod, remote: &KernelPod) -> Vrouterd {
    let vr = vrouterd_with_snat(node, pod, remote);
    vr.set_route("2001:db8:ff::/64", NH_UPLINK);
    vr
}

/// What the remote (or the pod) saw of one IPv6 packet: [`Seen`]'s fields for IPv6.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct Seen6 {
    proto: u8,
    src: Ipv6Addr,
    dst: Ipv6Addr,
    sport_in_pool: bool,
    dport: u16,
    payload: Vec<u8>,
    checksums_ok: bool,
}

/// The folded, uncomplemented IPv6 pseudo-header sum (what an offloaded checksum field holds).
fn pseudo_header_sum6(src: Ipv6Addr, dst: Ipv6Addr, proto: u8, len: u16) -> u16 {
    let mut sum: u32 = src
        .segments()
        .iter()
        .chain(dst.segments().iter())
        .map(|&w| u32::from(w))
        .sum::<u32>()
        + u32::from(proto)
        + u32::from(len);
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    sum as u16
}

fn seen6(f: &[u8]) -> Seen6 {
    use etherparse::{NetSlice, SlicedPacket, TransportSlice};
    let p = SlicedPacket::from_ethernet(f).expect("a frame etherparse reads");
    let Some(NetSlice::Ipv6(ip)) = &p.net else {
        panic!("not IPv6: {f:02x?}")
    };
    let h = ip.header().to_header();
    let (s, d) = (Ipv6Addr::from(h.source), Ipv6Addr::from(h.destination));
    let in_pool = |p: u16| (PORTS.0..=PORTS.1).contains(&p);
    match &p.transport {
        Some(TransportSlice::Udp(u)) => Seen6 {
            proto: 17,
            src: s,
            dst: d,
            sport_in_pool: in_pool(u.source_port()),
            dport: u.destination_port(),
            payload: u.payload().to_vec(),
            checksums_ok: u.checksum()
                == u.to_header().calc_checksum_ipv6(&h, u.payload()).unwrap()
                || u.checksum() == pseudo_header_sum6(s, d, 17, u.length()),
        },
        Some(TransportSlice::Icmpv6(i)) => Seen6 {
            proto: 58,
            src: s,
            dst: d,
            sport_in_pool: true,
            dport: 0,
            payload: (i.payload().len() as u32).to_be_bytes().to_vec(),
            checksums_ok: i.checksum()
                == i.icmp_type()
                    .calc_checksum(h.source, h.destination, i.payload())
                    .unwrap(),
        },
        other => panic!("neither UDP nor ICMPv6: {other:?}"),
    }
}

/// From `from`: three UDP datagrams from source ports 5001-5003 and two pings to `dst`
/// (IPv6); what `at` captured of them, sorted.
fn send6_and_capture(from: &KernelPod, dst: Ipv6Addr, at: &KernelPod) -> Vec<Seen6> {
    // Echo requests: ICMPv6 type 128 right after the IPv6 header.
    send_and_capture_any(
        from,
        dst.into(),
        at,
        "udp port 7000 or (icmp6 and ip6[40] == 128)",
        seen6,
    )
}

/// The kernel as the oracle for a floating IPv6: a router namespace doing 1:1 NAT with
/// ip6tables (DNAT of the floating address to the pod, SNAT of the pod's flows to it) delivers
/// the remote's datagrams and pings to the pod as vrouterd does (to the pod's address from the
/// remote's real one, ports and payloads kept, checksums valid), and the pod's own leave from
/// the floating address alike.
#[test]
fn floating_ipv6_translates_as_the_kernels_dnat_does() {
    let router = Netns::new("nat6kd");
    let kpod = KernelPod::attached_to(Some(&router), "k6o", 1, 1500);
    let kremote = remote6(&router, "k6r", None);
    kernel_router(&router, &kpod, &kremote);
    let (floating, pod_ip) = (FLOATING6.to_string(), kpod.ip6.to_string());
    one_to_one_nat(&router, "ip6tables", &floating, &pod_ip, &kremote.host_side);
    let kernel_in = send6_and_capture(&kremote, FLOATING6, &kpod);
    let kernel_out = send6_and_capture(&kpod, REMOTE6, &kremote);

    let node = Netns::new("nat6vd");
    let pod = KernelPod::attached_to(Some(&node), "v6o", 1, 1500);
    let remote = remote6(&node, "v6r", Some("00:00:5e:00:01:00"));
    let vr = vrouterd_with_snat6(&node, &pod, &remote);
    let fip = control_api::api::FloatingIp {
        vrf: 1,
        ip: pod.ip6.into(),
    };
    vr.api(|c| async move { c.floating_ip_set(FLOATING6, &fip).await })
        .expect("floating ip");
    let ours_in = send6_and_capture(&remote, FLOATING6, &pod);
    let ours_out = send6_and_capture(&pod, REMOTE6, &remote);

    assert_eq!(kernel_in.len(), 5, "the kernel's inbound: {kernel_in:?}");
    for s in &kernel_in {
        assert!(
            s.src == REMOTE6 && s.dst == kpod.ip6 && s.checksums_ok,
            "kernel: {s:?}"
        );
    }
    assert!(kernel_in.iter().any(|s| s.dport == 7000));
    assert_eq!(kernel_out.len(), 5, "the kernel's outbound: {kernel_out:?}");
    for s in &kernel_out {
        assert!(s.src == FLOATING6 && s.checksums_ok, "kernel: {s:?}");
    }
    assert_eq!(ours_in, kernel_in, "inbound translated as the kernel does");
    assert_eq!(
        ours_out, kernel_out,
        "outbound translated as the kernel does"
    );
    assert!(vr.stop().success(), "vrouterd stops cleanly");
}

/// NAT66 with the kernel as the oracle: the same traffic from a pod through a router
/// namespace that source-NATs with ip6tables to a pool of one IPv6 address and four ports
/// arrives at the remote as it does through vrouterd with that pool: from the pool address,
/// ports in the pool, the same payloads, checksums valid.
#[test]
fn nat66_translates_as_the_kernel_does() {
    let router = Netns::new("nat6kr");
    let kpod = KernelPod::attached_to(Some(&router), "k6s", 1, 1500);
    let kremote = remote6(&router, "k6t", None);
    kernel_router(&router, &kpod, &kremote);
    let to = format!("[{POOL6}]:{}-{}", PORTS.0, PORTS.1);
    for proto in ["udp", "tcp"] {
        router.exec(&[
            "ip6tables",
            "-t",
            "nat",
            "-A",
            "POSTROUTING",
            "-o",
            &kremote.host_side,
            "-p",
            proto,
            "-j",
            "SNAT",
            "--to-source",
            &to,
        ]);
    }
    router.exec(&[
        "ip6tables",
        "-t",
        "nat",
        "-A",
        "POSTROUTING",
        "-o",
        &kremote.host_side,
        "-p",
        "ipv6-icmp",
        "-j",
        "SNAT",
        "--to-source",
        &POOL6.to_string(),
    ]);
    let kernel = send6_and_capture(&kpod, REMOTE6, &kremote);

    let node = Netns::new("nat6vr");
    let pod = KernelPod::attached_to(Some(&node), "v6s", 1, 1500);
    let remote = remote6(&node, "v6t", Some("00:00:5e:00:01:00"));
    let vr = vrouterd_with_snat6(&node, &pod, &remote);
    pool6_attached(&vr);
    let ours = send6_and_capture(&pod, REMOTE6, &remote);

    assert_eq!(kernel.len(), 5, "the kernel's translations: {kernel:?}");
    for s in &kernel {
        assert!(
            s.src == POOL6 && s.sport_in_pool && s.checksums_ok,
            "kernel: {s:?}"
        );
    }
    assert_eq!(ours, kernel, "vrouterd translates as the kernel does");
    assert!(vr.stop().success(), "vrouterd stops cleanly");
}

/// Pool `egress6` (POOL6, ports 40000-40003) in VRF 0, VRF 1 attached to it instead of the
/// IPv4 pool.
fn pool6_attached(vr: &Vrouterd) {
    let pool = NatPool {
        vrf: 0,
        first: POOL6.into(),
        last: POOL6.into(),
        ports: NatPorts {
            first: PORTS.0,
            last: PORTS.1,
        },
    };
    vr.api(|c| async move { c.nat_pool_set("egress6", &pool).await })
        .expect("pool");
    vr.api(|c| async move { c.snat_set(1, "egress6").await })
        .expect("attach");
}

/// A floating IPv6 with real peers: the remote reaches the pod through it over TCP (the pod
/// sees the remote's real address) and pings it; the pod's own pings leave from it; the flows
/// are listed with both IPv6 tuples; the remote's port unreachable about the pod's datagram
/// reaches the pod's socket (the ICMPv6 error and its quote translated back).
#[test]
fn a_remote_reaches_a_pod_through_its_floating_ipv6() {
    let node = Netns::new("nat6fip");
    let pod = KernelPod::attached_to(Some(&node), "f6p", 1, 1500);
    let remote = remote6(&node, "f6r", Some("00:00:5e:00:01:00"));
    let vr = vrouterd_with_snat6(&node, &pod, &remote);
    let fip = control_api::api::FloatingIp {
        vrf: 1,
        ip: pod.ip6.into(),
    };
    vr.api(|c| async move { c.floating_ip_set(FLOATING6, &fip).await })
        .expect("floating ip");

    let at_pod = pod
        .ns
        .capture("eth0", "tcp and src host 2001:db8:ff::10", 1);
    let (sent, got) = remote.tcp_transfer_to(&pod, FLOATING6.into(), 2_000_000);
    assert_eq!(sent, got, "TCP to the floating IPv6 reaches the pod intact");
    let frames = at_pod.frames(Duration::from_secs(10));
    assert_eq!(
        frames.first().and_then(|f| ipv6_ends(f)),
        Some((REMOTE6, pod.ip6)),
        "the pod sees the remote's real address"
    );
    let out = remote.ping(&FLOATING6.to_string(), 2);
    assert!(
        out.contains("2 received"),
        "the floating IPv6 answers pings: {out}"
    );

    let at_remote = remote.ns.capture("eth0", "icmp6 and ip6[40] == 128", 1);
    let out = pod.ping(&REMOTE6.to_string(), 1);
    assert!(out.contains("1 received"), "{out}");
    let frames = at_remote.frames(Duration::from_secs(10));
    assert_eq!(
        frames.first().and_then(|f| ipv6_ends(f)),
        Some((FLOATING6, REMOTE6)),
        "the pod leaves from its floating IPv6"
    );

    let page = vr
        .api(|c| async move {
            c.flows(&FlowQuery {
                vrf: Some(1),
                limit: Some(100),
                cursor: None,
            })
            .await
        })
        .expect("flows");
    let echo = page
        .flows
        .iter()
        .find(|f| f.proto == 58 && f.src == std::net::IpAddr::V6(pod.ip6))
        .unwrap_or_else(|| panic!("the pod's echo flow is listed: {page:?}"));
    let t = echo.translated.as_ref().expect("translated tuple");
    assert_eq!((t.vrf, t.src, t.dst), (0, FLOATING6.into(), REMOTE6.into()));

    let refused = pod.ns.exec(&[
        "python3",
        "-c",
        "import socket\ns=socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)\ns.settimeout(3)\ns.connect(('2001:db8:ff::10', 9))\ns.send(b'x')\ntry:\n s.recv(10)\n print('answered')\nexcept ConnectionRefusedError:\n print('refused')\nexcept socket.timeout:\n print('timeout')",
    ]);
    assert_eq!(
        refused.trim(),
        "refused",
        "the ICMPv6 error reached the pod's socket"
    );
    let pools = vr
        .api(|c| async move { c.nat_pools().await })
        .expect("pools");
    assert_eq!(pools[0].in_use, 0, "no pool pair taken");
    assert!(vr.stop().success(), "vrouterd stops cleanly");
}

/// NAT66 with real peers: a kernel pod behind an IPv6 pool of one address and four ports
/// reaches the remote, which sees only the pool address, over TCP intact; flows beyond the
/// pool's four are counted drops, not a crash.
#[test]
fn a_pod_behind_nat66_reaches_a_remote_that_sees_only_the_pool() {
    let node = Netns::new("nat66");
    let pod = KernelPod::attached_to(Some(&node), "n6p", 1, 1500);
    let remote = remote6(&node, "n6r", Some("00:00:5e:00:01:00"));
    let vr = vrouterd_with_snat6(&node, &pod, &remote);
    pool6_attached(&vr);

    let cap = remote
        .ns
        .capture("eth0", "ip6 and (tcp or (icmp6 and ip6[40] == 128))", 8);
    let out = pod.ping(&REMOTE6.to_string(), 2);
    assert!(
        out.contains("2 received"),
        "pings through NAT66 answered: {out}"
    );
    let (sent, got) = pod.tcp_transfer_to(&remote, REMOTE6.into(), 2_000_000);
    assert_eq!(sent, got, "TCP through NAT66 arrives intact");
    let frames = cap.frames(Duration::from_secs(10));
    assert!(
        frames.len() >= 8,
        "tcpdump saw the traffic: {}",
        frames.len()
    );
    for f in &frames {
        let (s, d) = ipv6_ends(f).expect("IPv6");
        assert!(
            (s, d) == (POOL6, REMOTE6) || (s, d) == (REMOTE6, POOL6),
            "the remote sees only the pool address: {s} -> {d}"
        );
    }
    // Two pairs taken (the ping, the TCP connection): three more UDP flows find two free.
    pod.ns.exec(&[
        "python3",
        "-c",
        "import socket\nfor p in range(3):\n s=socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)\n s.sendto(b'x', ('2001:db8:ff::10', 9000+p))",
    ]);
    let drops = vr.wait_until(
        "an exhausted IPv6 pool counted",
        || {
            vr.api(|c| async move { c.dropstats().await })
                .expect("dropstats")
        },
        |d| d.reasons.get("nat_pool_exhausted").copied().unwrap_or(0) >= 1,
    );
    assert_eq!(
        drops.reasons.get("nat_pool_exhausted"),
        Some(&1),
        "{drops:?}"
    );
    let pools = vr
        .api(|c| async move { c.nat_pools().await })
        .expect("pools");
    let pool = pools
        .iter()
        .find(|p| p.name == "egress6")
        .expect("the IPv6 pool listed");
    assert_eq!((pool.in_use, pool.capacity, pool.exhausted), (4, 4, 1));
    assert_eq!(pool.first, std::net::IpAddr::V6(POOL6));
    assert!(vr.stop().success(), "vrouterd stops cleanly");
}

/// Hairpin with real peers: kernel pod A (behind the pool) reaches kernel pod B of the same
/// VRF through B's floating IP, which the VRF routes toward the fabric: the TCP transfer
/// arrives intact, B sees it from A's pool address, and A's pings are answered from the
/// floating IP; nothing leaves on the fabric.
#[test]
fn a_pod_reaches_a_pod_of_its_vrf_through_its_floating_ip() {
    const FLOATING: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 200);
    let node = Netns::new("nathp");
    let a = KernelPod::attached_to(Some(&node), "hpa", 1, 1500);
    let b = KernelPod::attached_to(Some(&node), "hpb", 2, 1500);
    let remote = remote(&node, "hpr", Some("00:00:5e:00:01:00"));
    let vr = Vrouterd::start_netns(
        Some(&node),
        &vrouterd_bin(),
        &["--idle-sleep-us", "20", "--flow-entries", "4096"],
        &[],
    );
    route_in_vrf1(&vr, &[("hpa", &a), ("hpb", &b)]);
    uplink_and_pool(&vr, &remote);
    vr.set_route(&format!("{FLOATING}/32"), NH_UPLINK);
    let fip = control_api::api::FloatingIp {
        vrf: 1,
        ip: b.ip.into(),
    };
    vr.api(|c| async move { c.floating_ip_set(FLOATING, &fip).await })
        .expect("floating ip");

    let on_fabric = remote.ns.capture("eth0", "ip", 1);
    let at_b = b.ns.capture("eth0", "tcp and dst host 198.18.2.2", 1);
    let (sent, got) = a.tcp_transfer_to(&b, FLOATING.into(), 1_000_000);
    assert_eq!(sent, got, "TCP through the hairpin arrives intact");
    let frames = at_b.frames(Duration::from_secs(10));
    assert_eq!(
        frames.first().and_then(|f| ipv4_ends(f)),
        Some((POOL, b.ip)),
        "pod B sees pod A's pool address"
    );
    let out = a.ping(&FLOATING.to_string(), 2);
    assert!(
        out.contains("2 received"),
        "pings through the hairpin: {out}"
    );
    assert!(
        on_fabric.frames(Duration::from_secs(1)).is_empty(),
        "nothing left on the fabric"
    );
    assert!(vr.stop().success(), "vrouterd stops cleanly");
}
