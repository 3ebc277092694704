//! Overlay between compute nodes: two vrouterd processes joined by a veth fabric carry pod
//! traffic in VXLAN, then MPLS-over-UDP, then MPLS-over-GRE — each checked by a capture on the
//! fabric dissected by tshark and by TCP data arriving intact both ways. The pods keep their
//! veths' default offloads: their 64 KB segments reach vrouterd whole and are cut to the
//! fabric's MTU in software (the fabric's DPDK port takes no offload). The same at MTU 9000,
//! on a fabric vrouterd reads through its own AF_PACKET port (`kernel:IFACE`) at 9000 plus the
//! tunnel headroom: 8,000-byte DF pings and TCP in jumbo frames over IPv4 and IPv6, every
//! frame's checksums right on the wire, and a pod MTU the fabric cannot carry refused at vif add. And interop: a namespace with a Linux `vxlan` device, as a remote
//! node, reaches a pod behind vrouterd and the reverse.

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use control_api::api::{
    BridgeEntry, MacAddr, Nexthop, TunnelEncap, VhostUserMode, VifRequest, VifType,
};
use testkit::kernel_pod::KernelPod;
use testkit::netns::{pcap_frames_so_far, temp_path, Netns};
use testkit::overlay::{
    self, Fabric, TwoNodes, FABRIC_IFACE, FABRIC_IP_1, FABRIC_MAC_1, LABEL, TUNNEL_HEADROOM,
};
use testkit::process::TestProcess;
use testkit::vrouterd::vhost_user_vif;
use testkit::wait;

/// Jumbo pods, over a fabric at 9000 and the largest tunnel headroom.
const JUMBO_POD_MTU: u32 = 9000;

fn vrouterd_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_vrouterd"))
}

/// tcpdump on an interface of namespace `ns`, writing a pcap; stopped and dissected with
/// `dissect`.
struct FabricCapture {
    process: TestProcess,
    path: PathBuf,
}

impl FabricCapture {
    fn start(ns: &Netns, iface: &str, filter: &str) -> FabricCapture {
        let path = temp_path("fabric", "pcap");
        let path_text = path.display().to_string();
        let mut process = TestProcess::spawn(
            Path::new("/usr/sbin/ip"),
            &[
                "netns",
                "exec",
                ns.name(),
                "tcpdump",
                "-i",
                iface,
                "-U",
                "-n",
                "-w",
                &path_text,
                filter,
            ],
        );
        process.wait_for_output("listening on", Duration::from_secs(10));
        FabricCapture { process, path }
    }

    /// Once tcpdump has written over `frames` frames, stops it and dissects the capture with
    /// tshark (MPLS-over-UDP decoded on 6635, IP, UDP and TCP checksums verified: their
    /// `*.checksum.status` fields say 0 bad, 1 good, 2 not verified).
    fn dissect(mut self, frames: usize, fields: &[&str]) -> Vec<String> {
        // tcpdump hands frames over in blocks: those just captured may not be written yet.
        wait::until(
            "tcpdump writes the frames it captured",
            wait::DEADLINE,
            || pcap_frames_so_far(&self.path),
            |&written| written > frames,
        );
        self.process.signal("INT");
        let _ = self.process.wait(Duration::from_secs(10));
        let mut args = vec![
            "-r".to_owned(),
            self.path.display().to_string(),
            "-d".to_owned(),
            "udp.port==6635,mpls".to_owned(),
            "-o".to_owned(),
            "ip.check_checksum:TRUE".to_owned(),
            "-o".to_owned(),
            "udp.check_checksum:TRUE".to_owned(),
            "-o".to_owned(),
            "tcp.check_checksum:TRUE".to_owned(),
            "-T".to_owned(),
            "fields".to_owned(),
            "-E".to_owned(),
            "separator=;".to_owned(),
            "-E".to_owned(),
            "aggregator=,".to_owned(),
        ];
        for f in fields {
            args.push("-e".to_owned());
            args.push((*f).to_owned());
        }
        let out = Command::new("tshark").args(&args).output().expect("tshark");
        assert!(
            out.status.success(),
            "tshark: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(str::to_owned)
            .collect()
    }
}

impl Drop for FabricCapture {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

fn assert_pods_talk(a: &KernelPod, b: &KernelPod, what: &str) {
    let out = a.ping(&b.ip.to_string(), 3);
    assert!(out.contains("3 received"), "{what}: {out}");
    for (from, to) in [(a, b), (b, a)] {
        let (sent, got) = from.tcp_transfer(to, 5_000_000);
        assert!(sent.starts_with("5000000 "), "{what}: {sent}");
        assert_eq!(sent, got, "{what}: TCP data intact (bytes and SHA-256)");
    }
}

#[test]
fn two_vrouterds_carry_pods_over_vxlan_mplsoudp_and_mplsogre() {
    let nodes = TwoNodes::start(&vrouterd_bin(), "o", Fabric::dpdk);
    let (pod1, pod2) = (&nodes.pod1, &nodes.pod2);

    for (encap, filter, name) in [
        (TunnelEncap::Vxlan, "udp port 4789", "vxlan"),
        (TunnelEncap::Mplsoudp, "udp port 6635", "mplsoudp"),
        (TunnelEncap::Mplsogre, "ip proto 47", "mplsogre"),
    ] {
        nodes.tunnel(encap);
        let capture = FabricCapture::start(&nodes.node2, FABRIC_IFACE, filter);
        assert_pods_talk(pod1, pod2, name);
        let label_field = match encap {
            TunnelEncap::Vxlan => "vxlan.vni",
            _ => "mpls.label",
        };
        let rows = capture.dissect(1000, &["ip.src", "ip.dst", label_field, "frame.len"]);
        assert!(
            rows.len() > 1000,
            "{name}: the transfer crossed the fabric ({} frames)",
            rows.len()
        );
        // Repeated fields come comma-joined: outer address first, then the inner one.
        let mut both_ways = (false, false);
        for row in &rows {
            let cols: Vec<&str> = row.split(';').collect();
            assert_eq!(cols.len(), 4, "{name}: {row}");
            // The pods' 64 KB segments were cut to the fabric's MTU (its port takes no offload).
            let len: usize = cols[3].parse().expect("frame length");
            assert!(len <= 1514, "{name}: a {len}-byte frame on the fabric");
            let src: Vec<&str> = cols[0].split(',').collect();
            let dst: Vec<&str> = cols[1].split(',').collect();
            assert_eq!(cols[2], LABEL.to_string(), "{name}: label / VNI: {row}");
            match (src.as_slice(), dst.as_slice()) {
                (["198.19.0.1", "198.18.1.2"], ["198.19.0.2", "198.18.2.2"]) => both_ways.0 = true,
                (["198.19.0.2", "198.18.2.2"], ["198.19.0.1", "198.18.1.2"]) => both_ways.1 = true,
                _ => panic!("{name}: unexpected outer/inner addresses in {row}"),
            }
        }
        assert!(both_ways.0 && both_ways.1, "{name}: tunnelled both ways");
    }
    let vifs = nodes
        .vr1
        .api(|c| async move { c.vifs().await })
        .expect("vifs");
    let pod = vifs
        .iter()
        .find(|v| v.config.name == "pod")
        .map(|v| v.status.counters)
        .expect("pod vif");
    assert!(
        pod.rx_bytes / pod.rx_packets.max(1) > 1514,
        "the pod's segments came as GSO packets: {pod:?}"
    );
    let (s1, s2) = nodes.stop();
    assert!(s1.success() && s2.success(), "vrouterd exits {s1} {s2}");
}

/// Three pings with DF set (IPv6 has no other kind) and `size` bytes of payload from `a` to
/// `to`, all answered.
fn assert_df_pings(a: &KernelPod, to: IpAddr, size: u32, what: &str) {
    let out = a.ns.exec(&[
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
        &size.to_string(),
        &to.to_string(),
    ]);
    assert!(out.contains("3 received"), "{what} to {to}: {out}");
}

#[test]
fn two_vrouterds_carry_jumbo_frames_over_a_kernel_fabric_in_each_encapsulation() {
    let nodes = TwoNodes::start(&vrouterd_bin(), "j", |iface| {
        Fabric::kernel(iface, JUMBO_POD_MTU)
    });
    let (vr1, vr2, pod1, pod2) = (&nodes.vr1, &nodes.vr2, &nodes.pod1, &nodes.pod2);
    let fabric_mtu = JUMBO_POD_MTU + TUNNEL_HEADROOM;
    let f = vr1.vif("fabric0");
    assert_eq!(f.config.mtu, Some(fabric_mtu));
    assert_eq!(f.config.device.as_deref(), Some("kernel:fab0"));
    assert_eq!(f.status.state, control_api::api::VifState::Up, "{f:?}");

    // One byte more than the fabric carries with VXLAN's headroom: refused, naming the limit.
    let dir = vr1.socket_base().join("big");
    let mut big = vhost_user_vif(
        "big",
        MacAddr([2, 0, 0, 0, 0x0e, 1]),
        &dir,
        "net0",
        VhostUserMode::Server,
    );
    big.mtu = Some(JUMBO_POD_MTU + 1);
    let err = vr1
        .api(|c| async move { c.vif_add(&big).await })
        .expect_err("MTU 9001 over a 9050 fabric");
    let msg = err.to_string();
    assert!(
        msg.contains("at most MTU 9000") && msg.contains("fabric0") && msg.contains("9050"),
        "the refusal names the limit and the fabric: {msg}"
    );
    assert!(!dir.exists(), "nothing made on disk");
    let names: Vec<String> = vr1
        .api(|c| async move { c.vifs().await })
        .expect("vifs")
        .into_iter()
        .map(|v| v.config.name)
        .collect();
    assert_eq!(names, ["fabric0", "pod"], "nothing added");
    // A kernel fabric on an interface that is not there is refused, naming it.
    let mut ghost = VifRequest::new(
        "fabric1",
        VifType::Physical,
        0,
        MacAddr([2, 0, 0, 0, 0xfa, 9]),
    );
    ghost.device = Some("kernel:vjghost0".into());
    let err = vr1
        .api(|c| async move { c.vif_add(&ghost).await })
        .expect_err("no such interface");
    assert!(err.to_string().contains("vjghost0"), "{err}");
    // Nor on one whose own MTU (1500) would make the kernel refuse the jumbo frames.
    nodes.node1.veth("fabx0", "fabx1", None);
    let mut small = VifRequest::new(
        "fabric1",
        VifType::Physical,
        0,
        MacAddr([2, 0, 0, 0, 0xfa, 9]),
    );
    small.device = Some("kernel:fabx0".into());
    small.mtu = Some(fabric_mtu);
    let err = vr1
        .api(|c| async move { c.vif_add(&small).await })
        .expect_err("interface MTU below the vif's");
    assert!(
        err.to_string()
            .contains("interface fabx0 has MTU 1500, less than the vif's 9050"),
        "{err}"
    );

    for (encap, filter, name) in [
        (TunnelEncap::Vxlan, "udp port 4789", "vxlan"),
        (TunnelEncap::Mplsoudp, "udp port 6635", "mplsoudp"),
        (TunnelEncap::Mplsogre, "ip proto 47", "mplsogre"),
    ] {
        nodes.tunnel(encap);
        let capture = FabricCapture::start(&nodes.node2, FABRIC_IFACE, filter);
        for (from, to) in [(pod1, pod2), (pod2, pod1)] {
            assert_df_pings(from, IpAddr::V4(to.ip), 8000, name);
            assert_df_pings(from, IpAddr::V6(to.ip6), 8000, name);
            let (sent, got) = from.tcp_transfer(to, 10_000_000);
            assert!(sent.starts_with("10000000 "), "{name}: {sent}");
            assert_eq!(sent, got, "{name}: TCP data intact (bytes and SHA-256)");
        }
        let (sent, got) = pod1.tcp_transfer_to(pod2, IpAddr::V6(pod2.ip6), 10_000_000);
        assert!(sent.starts_with("10000000 "), "{name}: {sent}");
        assert_eq!(sent, got, "{name}: TCP over IPv6 intact");
        let rows = capture.dissect(
            1000,
            &[
                "ip.src",
                "ip.dst",
                "frame.len",
                "ip.checksum.status",
                "udp.checksum.status",
                "tcp.checksum.status",
                "tcp.checksum",
                "tcp.checksum_calculated",
            ],
        );
        let mut jumbo = [0usize; 2];
        let mut tcp_verified = 0;
        for row in &rows {
            let cols: Vec<&str> = row.split(';').collect();
            assert_eq!(cols.len(), 8, "{name}: {row}");
            // None bad on the wire, whatever the pods' partial checksums and 64 KB segments
            // were when they reached vrouterd: the outer IPv4 header and an inner one (IPv6
            // has no header checksum), the outer UDP (VXLAN and MPLS-over-UDP leave it zero:
            // not present) and the inner TCP. A TCP sum completed to 0xffff rather than 0x0000
            // is the same one's-complement zero (Linux's own software checksum writes it so);
            // tshark calls it bad, a receiver takes it.
            let ip: Vec<&str> = cols[3].split(',').collect();
            assert!(
                !ip.is_empty() && ip.len() <= 2 && ip.iter().all(|s| *s == "1"),
                "{name}: IPv4 headers verified: {row}"
            );
            assert_ne!(cols[4], "0", "{name}: outer UDP checksum: {row}");
            let tcp_ok = cols[5] == "1" || (cols[6] == "0xffff" && cols[7] == "0x0000");
            assert!(
                cols[5].is_empty() || tcp_ok,
                "{name}: inner TCP checksum: {row}"
            );
            if tcp_ok {
                tcp_verified += 1;
            }
            let len: usize = cols[2].parse().expect("frame length");
            // Cut to the fabric's MTU, no more: segments of the pods' 9000-byte MTU.
            assert!(
                len <= fabric_mtu as usize + 14,
                "{name}: a {len}-byte frame on the fabric"
            );
            let dir = match cols[0].split(',').next() {
                Some("198.19.0.1") => 0,
                Some("198.19.0.2") => 1,
                _ => panic!("{name}: unexpected outer source in {row}"),
            };
            if len > 8000 {
                jumbo[dir] += 1;
            }
        }
        eprintln!(
            "{name}: {jumbo:?} frames over 8000 bytes each way, of {}; inner TCP checksums \
             verified good in {tcp_verified}",
            rows.len()
        );
        // 10 MB each way, written 64 KB at a time: seven 8,948-byte segments of each, over a
        // thousand frames each way; and every data segment's inner TCP checksum was checked.
        assert!(
            tcp_verified > 2000,
            "{name}: inner TCP checksums verified ({tcp_verified})"
        );
        assert!(
            jumbo[0] > 900 && jumbo[1] > 900,
            "{name}: jumbo frames crossed both ways ({jumbo:?} of {} frames)",
            rows.len()
        );
    }
    for vr in [vr1, vr2] {
        let drops = vr
            .api(|c| async move { c.dropstats().await })
            .expect("dropstats");
        for reason in ["mtu", "mtu_icmp_sent", "offload", "malformed"] {
            assert_eq!(drops.reasons.get(reason), Some(&0), "{reason}: {drops:?}");
        }
        let f = vr.vif("fabric0").status.counters;
        assert!(
            f.rx_bytes > 30_000_000 && f.tx_bytes > 30_000_000,
            "the transfers crossed the kernel fabric port: {f:?}"
        );
    }
    let (s1, s2) = nodes.stop();
    assert!(s1.success() && s2.success(), "vrouterd exits {s1} {s2}");
}

#[test]
fn linux_vxlan_node_and_a_pod_behind_vrouterd_reach_each_other() {
    let remote = Netns::new("vxr");
    let node = Netns::new("vxn");
    node.veth("fab0", "fab0", Some(&remote));
    let remote_fabric = "fab0".to_owned();
    remote.ip(&["addr", "add", "198.19.0.2/24", "dev", &remote_fabric]);
    let remote_fabric_mac =
        remote.exec(&["cat", &format!("/sys/class/net/{remote_fabric}/address")]);
    let remote_fabric_mac: MacAddr = remote_fabric_mac.trim().parse().expect("mac");
    // The remote node's overlay interface: VNI 100 to vrouterd's fabric address.
    remote.ip(&[
        "link",
        "add",
        "vx0",
        "type",
        "vxlan",
        "id",
        &LABEL.to_string(),
        "local",
        "198.19.0.2",
        "remote",
        "198.19.0.1",
        "dstport",
        "4789",
        "dev",
        &remote_fabric,
    ]);
    let vx_mac = MacAddr([0x02, 0, 0, 0, 0x77, 0x01]);
    remote.ip(&[
        "link",
        "set",
        "vx0",
        "address",
        &vx_mac.to_string(),
        "mtu",
        "1400",
        "up",
    ]);
    remote.ip(&["addr", "add", "198.18.1.3/24", "dev", "vx0"]);

    let fabric = Fabric::dpdk(FABRIC_IFACE);
    let pod = KernelPod::attached_to(Some(&node), "vx", 1, fabric.pod_mtu);
    let vr = overlay::node(
        &vrouterd_bin(),
        &node,
        &fabric,
        FABRIC_IP_1,
        FABRIC_MAC_1,
        &pod,
    );
    // The remote's fabric neighbour for vrouterd's address, and the pod's MAC over the overlay.
    remote.ip(&[
        "neigh",
        "replace",
        "198.19.0.1",
        "lladdr",
        &FABRIC_MAC_1.to_string(),
        "dev",
        &remote_fabric,
    ]);
    remote.ip(&[
        "neigh",
        "add",
        "198.18.1.2",
        "lladdr",
        &MacAddr(pod.mac).to_string(),
        "dev",
        "vx0",
    ]);
    pod.ns.ip(&[
        "neigh",
        "add",
        "198.18.1.3",
        "lladdr",
        &vx_mac.to_string(),
        "dev",
        "eth0",
    ]);
    // L2 over VXLAN: the remote host's MAC is bridged into the tunnel with VNI 100; frames from
    // the tunnel to the pod's MAC are bridged to the pod.
    let nh = Nexthop::Tunnel {
        encap: TunnelEncap::Vxlan,
        vif: "fabric0".into(),
        sip: "198.19.0.1".parse().expect("ip"),
        dip: "198.19.0.2".parse().expect("ip"),
        dmac: Some(remote_fabric_mac),
        label: None,
    };
    vr.api(|c| async move { c.nexthop_set(3, &nh).await })
        .expect("tunnel nexthop");
    for entry in [
        BridgeEntry {
            mac: vx_mac,
            nexthop: 3,
            label: Some(LABEL),
        },
        BridgeEntry {
            mac: MacAddr(pod.mac),
            nexthop: 1,
            label: None,
        },
    ] {
        vr.api(|c| async move { c.bridge_set(1, &entry).await })
            .expect("bridge entry");
    }

    let out = pod.ping("198.18.1.3", 3);
    assert!(out.contains("3 received"), "pod → Linux vxlan node: {out}");
    let out = remote.exec(&["ping", "-c", "3", "-i", "0.2", "-W", "2", "198.18.1.2"]);
    assert!(out.contains("3 received"), "Linux vxlan node → pod: {out}");
    assert!(vr.stop().success());
}
