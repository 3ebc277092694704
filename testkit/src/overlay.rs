//! Compute nodes joined by a fabric: vrouterd in a network namespace of its own with a fabric
//! port on a veth, a kernel pod in VRF 1 behind it, and tunnels between the nodes in any
//! encapsulation. Node 1's pod is 198.18.1.2 and 2001:db8:18:1::2 behind fabric address
//! 198.19.0.1, node 2's 198.18.2.2 and 2001:db8:18:2::2 behind 198.19.0.2; each node
//! decapsulates VNI / label [`LABEL`] to its pod.

use std::path::Path;
use std::process::ExitStatus;

use control_api::api::{IpPrefix, MacAddr, Nexthop, Route, TunnelEncap, VifRequest, VifType};

use crate::kernel_pod::KernelPod;
use crate::netns::Netns;
use crate::vrouterd::Vrouterd;

pub const FABRIC_MAC_1: MacAddr = MacAddr([0x02, 0, 0, 0, 0xfa, 0x01]);
pub const FABRIC_MAC_2: MacAddr = MacAddr([0x02, 0, 0, 0, 0xfa, 0x02]);
pub const FABRIC_IP_1: &str = "198.19.0.1";
pub const FABRIC_IP_2: &str = "198.19.0.2";
/// The label / VNI each node gives its local pod.
pub const LABEL: u32 = 100;
/// What the largest encapsulation (VXLAN) adds to a pod's IP packet on the fabric.
pub const TUNNEL_HEADROOM: u32 = 50;
/// The fabric's interface in each node's namespace.
pub const FABRIC_IFACE: &str = "fab0";

/// A node's fabric port: vrouterd's `--fabric` and `--fabric-mtu`, and the MTU of its pod (its
/// veth and its vif).
#[derive(Debug, Clone)]
pub struct Fabric {
    pub device: String,
    pub mtu: u32,
    pub pod_mtu: u32,
}

impl Fabric {
    /// DPDK's net_af_packet on `iface` at the default MTU, 1500, and pods at 1400: room for
    /// the largest encapsulation.
    pub fn dpdk(iface: &str) -> Fabric {
        Fabric {
            // qdisc_bypass=0: frames vrouterd sends go through the kernel's taps too, so a
            // capture on either end of the fabric sees both directions.
            device: format!("net_af_packet0,iface={iface},qdisc_bypass=0"),
            mtu: 1500,
            pod_mtu: 1400,
        }
    }

    /// vrouterd's own AF_PACKET port on `iface` (`kernel:IFACE`), for pods at `pod_mtu` and a
    /// fabric with the tunnel headroom on top.
    pub fn kernel(iface: &str, pod_mtu: u32) -> Fabric {
        Fabric {
            device: format!("kernel:{iface}"),
            mtu: pod_mtu + TUNNEL_HEADROOM,
            pod_mtu,
        }
    }
}

fn prefix(p: &str) -> IpPrefix {
    p.parse().expect("prefix")
}

/// One compute node: `binary` (vrouterd) in namespace `ns` with its fabric port `fabric`, its
/// forwarding lcore napping 20 µs when idle (nodes share a CPU), and `pod` in VRF 1 as vif
/// `pod` at the fabric's pod MTU, reachable from the fabric by [`LABEL`] as VNI and MPLS label.
pub fn node(
    binary: &Path,
    ns: &Netns,
    fabric: &Fabric,
    fabric_ip: &str,
    fabric_mac: MacAddr,
    pod: &KernelPod,
) -> Vrouterd {
    let mac = fabric_mac.to_string();
    let mtu = fabric.mtu.to_string();
    let vr = Vrouterd::start_netns(
        Some(ns),
        binary,
        &[
            "--idle-sleep-us",
            "20",
            "--fabric",
            &fabric.device,
            "--fabric-mtu",
            &mtu,
            "--fabric-ip",
            fabric_ip,
            "--fabric-mac",
            &mac,
        ],
        &[],
    );
    vr.api(|c| async move { c.vrf_add(1).await })
        .expect("vrf 1");
    let mut req = VifRequest::new("pod", VifType::AfPacket, 1, MacAddr(pod.mac));
    req.iface = Some(pod.host_side.clone());
    req.mtu = Some(fabric.pod_mtu);
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
    vr.set_route(&format!("{}/128", pod.ip6), 1);
    vr.set_route(&format!("{}/32", pod.gateway()), 2);
    vr.set_route(&format!("{}/128", pod.gateway6()), 2);
    // Decap: the VNI names VRF 1, the MPLS label names the pod's nexthop.
    vr.api(|c| async move { c.vxlan_set(LABEL, 1).await })
        .expect("vni");
    vr.api(|c| async move { c.mpls_set(LABEL, 1).await })
        .expect("label");
    vr
}

/// Points `vr`'s routes to the remote pod subnets `remote` at a tunnel of `encap` from `sip`
/// to `dip` (whose fabric MAC is `dmac`), carrying [`LABEL`].
pub fn tunnel_to(
    vr: &Vrouterd,
    encap: TunnelEncap,
    sip: &str,
    dip: &str,
    dmac: MacAddr,
    remote: &[&str],
) {
    vr.set_nexthop(
        3,
        Nexthop::Tunnel {
            encap,
            vif: "fabric0".into(),
            sip: sip.parse().expect("ip"),
            dip: dip.parse().expect("ip"),
            dmac: Some(dmac),
            label: None,
        },
    );
    for p in remote {
        let route = Route {
            prefix: prefix(p),
            nexthop: 3,
            label: Some(LABEL),
        };
        vr.api(|c| async move { c.route_set(1, &route).await })
            .expect("remote route");
    }
}

/// Two nodes whose namespaces are joined by a veth ([`FABRIC_IFACE`] at each end, at the
/// fabric's MTU), a kernel pod on each with its veth at the pod MTU (both ends: a veth end
/// takes frames up to its own MTU). Fields drop in order: vrouterds, pods, namespaces.
pub struct TwoNodes {
    pub vr1: Vrouterd,
    pub vr2: Vrouterd,
    pub pod1: KernelPod,
    pub pod2: KernelPod,
    pub node1: Netns,
    pub node2: Netns,
}

impl TwoNodes {
    /// Starts both nodes with fabric ports made by `fabric` from the fabric interface's name;
    /// `tag` (a few characters) keeps namespace and interface names apart from other tests'.
    pub fn start(binary: &Path, tag: &str, fabric: impl Fn(&str) -> Fabric) -> TwoNodes {
        let fabric = fabric(FABRIC_IFACE);
        let node1 = Netns::new(&format!("{tag}node1"));
        let node2 = Netns::new(&format!("{tag}node2"));
        node1.veth(FABRIC_IFACE, FABRIC_IFACE, Some(&node2));
        let (fabric_mtu, pod_mtu) = (fabric.mtu.to_string(), fabric.pod_mtu.to_string());
        for ns in [&node1, &node2] {
            ns.ip(&["link", "set", FABRIC_IFACE, "mtu", &fabric_mtu]);
        }
        let pod1 = KernelPod::attached_to(Some(&node1), &format!("{tag}1"), 1, fabric.pod_mtu);
        let pod2 = KernelPod::attached_to(Some(&node2), &format!("{tag}2"), 2, fabric.pod_mtu);
        for (ns, pod) in [(&node1, &pod1), (&node2, &pod2)] {
            ns.ip(&["link", "set", &pod.host_side, "mtu", &pod_mtu]);
        }
        let vr1 = node(binary, &node1, &fabric, FABRIC_IP_1, FABRIC_MAC_1, &pod1);
        let vr2 = node(binary, &node2, &fabric, FABRIC_IP_2, FABRIC_MAC_2, &pod2);
        TwoNodes {
            vr1,
            vr2,
            pod1,
            pod2,
            node1,
            node2,
        }
    }

    /// Each node's routes to the other's pod (IPv4 and IPv6) through a tunnel of `encap`.
    pub fn tunnel(&self, encap: TunnelEncap) {
        let subnets = |pod: &KernelPod| {
            let n = pod.ip.octets()[2];
            [
                format!("198.18.{n}.0/24"),
                format!("2001:db8:18:{n:x}::/64"),
            ]
        };
        for (vr, sip, dip, dmac, remote) in [
            (
                &self.vr1,
                FABRIC_IP_1,
                FABRIC_IP_2,
                FABRIC_MAC_2,
                &self.pod2,
            ),
            (
                &self.vr2,
                FABRIC_IP_2,
                FABRIC_IP_1,
                FABRIC_MAC_1,
                &self.pod1,
            ),
        ] {
            let remote = subnets(remote);
            let remote = remote.each_ref().map(String::as_str);
            tunnel_to(vr, encap, sip, dip, dmac, &remote);
        }
    }

    /// Stops both vrouterds (SIGTERM); their exit statuses.
    pub fn stop(self) -> (ExitStatus, ExitStatus) {
        (self.vr1.stop(), self.vr2.stop())
    }
}
