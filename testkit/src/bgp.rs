//! A cluster of compute nodes exchanging overlay routes over BGP: each node a network namespace
//! with vrouterd (fabric port `kernel:fab0`), gobgpd and vrouter-bgp, and two kernel pods in
//! VRF 1; a GoBGP route reflector in a namespace of its own; all joined by one bridge (in a
//! "fabric" namespace) that carries both the tunnels (198.19.0.0/24, vrouterd's fabric
//! addresses) and the BGP sessions (198.51.100.0/24 on each node's kernel `ctl0`). Private
//! ASN 64512, iBGP, EVPN and L3VPN (IPv4, IPv6) address families, hold time 3 s.
//!
//! Node `k` (1-based) has fabric address 198.19.0.k, fabric MAC 02:00:00:00:fa:0k, BGP
//! address 198.51.100.k, and pods 198.18.(10k+1).2 and 198.18.(10k+2).2, each advertised as
//! a /32 with route distinguisher 198.19.0.k:1 and route target 64512:1: with
//! [`NodeOverlay::Evpn`] as an EVPN type-5 route with VNI [`VNI`]; with [`NodeOverlay::Vpn`]
//! as a VPNv4 route with MPLS label [`label`]`(k)`, and the pods' IPv6 addresses
//! (2001:db8:18:(10k+j)::2) as /128 VPNv6 routes too.

use std::path::{Path, PathBuf};
use std::time::Duration;

use control_api::api::{MacAddr, Nexthop, Route, VifRequest, VifType, VrfRouting};

use crate::kernel_pod::KernelPod;
use crate::netns::{temp_path, Netns};
use crate::overlay::{Fabric, FABRIC_IFACE};
use crate::process::TestProcess;
use crate::vrouterd::Vrouterd;

pub const ASN: u32 = 64512;
/// The VNI of VRF 1 on every node.
pub const VNI: u32 = 1001;
pub const ROUTE_TARGET: &str = "target:64512:1";
/// The route reflector's BGP address.
pub const RR_IP: &str = "198.51.100.254";
/// Pods' MTU: room for VXLAN within the fabric's 1450.
pub const POD_MTU: u32 = 1400;
/// BGP hold time, seconds (the smallest RFC 4271 allows): a node gone is noticed in it.
pub const HOLD_TIME: u32 = 3;
/// Graceful restart (RFC 4724) restart time, seconds: how long the peers of a node whose
/// gobgpd went away keep its routes (stale) before withdrawing them, waiting for it to come
/// back (restarted with `-r`) and refresh them. gobgpd opens a session 5–10 s after it
/// starts (its connect-retry timer has a floor of 5 s, jittered): the restart time leaves
/// room for that.
pub const RESTART_TIME: u32 = 20;

const IP: &str = "/usr/sbin/ip";

/// The FRR gateway's BGP address (a route reflector client of every cluster), fabric address,
/// and the VPNv4 route it originates: prefix, label (no encapsulation community), RD.
pub const GATEWAY_BGP_IP: &str = "198.51.100.250";
pub const GATEWAY_FABRIC_IP: &str = "198.19.0.250";
pub const GATEWAY_PREFIX: &str = "198.18.200.0/24";
pub const GATEWAY_LABEL: u32 = 3000;

/// A gateway stand-in on the fabric: FRR's bgpd (no zebra) peering with the route reflector
/// and originating one static VPNv4 route, [`GATEWAY_PREFIX`] with label [`GATEWAY_LABEL`],
/// route target 64512:1, next hop [`GATEWAY_FABRIC_IP`], no encapsulation community. Its
/// kernel interface `eth0` on the fabric bridge holds both addresses. Fields drop in order.
pub struct FrrGateway {
    pub bgpd: TestProcess,
    dir: PathBuf,
    pub ns: Netns,
}

impl FrrGateway {
    /// `vtysh -c COMMAND` against the gateway's bgpd.
    pub fn vtysh(&self, command: &str) -> String {
        self.ns.exec(&[
            "vtysh",
            "--vty_socket",
            &self.dir.display().to_string(),
            "-d",
            "bgpd",
            "-c",
            command,
        ])
    }

    /// Originates (or with `withdraw`, stops originating) VPNv4 routes to `prefixes` like
    /// [`GATEWAY_PREFIX`] (label [`GATEWAY_LABEL`], route target 64512:1, next hop
    /// [`GATEWAY_FABRIC_IP`]): one `vtysh -f` run, however many.
    pub fn originate(&self, prefixes: &[String], withdraw: bool) {
        let mut s = format!("router bgp {ASN}\n address-family ipv4 vpn\n");
        for p in prefixes {
            let line = format!("network {p} rd {GATEWAY_BGP_IP}:1 label {GATEWAY_LABEL}");
            // FRR's `no network` takes no route-map.
            s += &if withdraw {
                format!("  no {line}\n")
            } else {
                format!("  {line} route-map GW\n")
            };
        }
        s += " exit-address-family\n";
        let path = self.dir.join("originate.conf");
        std::fs::write(&path, s).expect("writing vtysh commands");
        self.ns.exec(&[
            "vtysh",
            "--vty_socket",
            &self.dir.display().to_string(),
            "-d",
            "bgpd",
            "-f",
            &path.display().to_string(),
        ]);
    }
}

impl Drop for FrrGateway {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// The route reflector's implementation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reflector {
    /// GoBGP's gobgpd.
    Gobgp,
    /// FRR's bgpd (`/usr/lib/frr/bgpd`, Debian `frr`), without zebra.
    Frr,
}

/// FRR bgpd's configuration: the reflector `router_id` for each of `clients` in the VPNv4,
/// VPNv6 and EVPN families, with [`HOLD_TIME`].
fn frr_config(router_id: &str, clients: &[String], graceful: bool) -> String {
    let mut s = format!(
        "frr defaults traditional\nhostname rr\nlog stdout warnings\n!\nrouter bgp {ASN}\n \
         bgp router-id {router_id}\n bgp cluster-id {router_id}\n no bgp default ipv4-unicast\n"
    );
    if !graceful {
        // FRR helps a restarting peer by default; without graceful restart it must not.
        s += " bgp graceful-restart-disable\n";
    }
    for n in clients {
        s += &format!(
            " neighbor {n} remote-as {ASN}\n neighbor {n} timers 1 {HOLD_TIME}\n neighbor {n} timers connect 1\n"
        );
    }
    for family in ["ipv4 vpn", "ipv6 vpn", "l2vpn evpn"] {
        s += &format!(" address-family {family}\n");
        for n in clients {
            s += &format!("  neighbor {n} activate\n  neighbor {n} route-reflector-client\n");
        }
        s += " exit-address-family\n";
    }
    s + "!\n"
}

/// FRR's bgpd in `ns` with configuration `conf`, listening on `address`, its vty socket in
/// `dir`.
fn frr_bgpd(ns: &Netns, conf: &str, address: &str, dir: &Path) -> TestProcess {
    std::fs::create_dir_all(dir).expect("bgpd's directory");
    let path = dir.join("bgpd.conf");
    std::fs::write(&path, conf).expect("writing bgpd.conf");
    let d = dir.display().to_string();
    TestProcess::spawn(
        Path::new(IP),
        &[
            "netns",
            "exec",
            ns.name(),
            "/usr/lib/frr/bgpd",
            "-f",
            &path.display().to_string(),
            "--no_zebra",
            "--skip_runas",
            "--no_kernel",
            "--listenon",
            address,
            "--vty_port",
            "0",
            "--vty_socket",
            &d,
            "--pid_file",
            &format!("{d}/bgpd.pid"),
            "--log",
            "stdout",
        ],
    )
}

/// FRR bgpd's configuration for [`FrrGateway`].
fn frr_gateway_config() -> String {
    format!(
        "frr defaults traditional\nhostname gw\nlog stdout warnings\n!\n\
         route-map GW permit 10\n set extcommunity rt 64512:1\n set ipv4 vpn next-hop {GATEWAY_FABRIC_IP}\n!\n\
         router bgp {ASN}\n bgp router-id {GATEWAY_BGP_IP}\n no bgp default ipv4-unicast\n no bgp network import-check\n\
         \x20neighbor {RR_IP} remote-as {ASN}\n neighbor {RR_IP} timers 1 {HOLD_TIME}\n neighbor {RR_IP} timers connect 1\n\
         \x20address-family ipv4 vpn\n  neighbor {RR_IP} activate\n\
         \x20 network {GATEWAY_PREFIX} rd {GATEWAY_BGP_IP}:1 label {GATEWAY_LABEL} route-map GW\n exit-address-family\n!\n"
    )
}

/// `vtysh -c COMMAND` against the FRR bgpd of a cluster started with [`Reflector::Frr`].
pub fn frr_vtysh(c: &Cluster, command: &str) -> String {
    c.rr_ns.exec(&[
        "vtysh",
        "--vty_socket",
        &c.rr_config.display().to_string(),
        "-d",
        "bgpd",
        "-c",
        command,
    ])
}

/// How node `k`'s VRF 1 reaches and is reached by the others.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NodeOverlay {
    /// VRF 1's identity has VNI [`VNI`] (mapped to it): EVPN type-5 over VXLAN.
    Evpn,
    /// VRF 1's identity has MPLS label [`label`]`(k)` (vrouter-bgp maps it to the VRF), and
    /// vrouter-bgp runs with `--mpls-encap MPLS_ENCAP` (`udp` or `gre`): VPNv4/VPNv6 over
    /// MPLS. The pods' IPv6 addresses are routed too.
    Vpn { mpls_encap: &'static str },
}

/// Node `k`'s per-VRF MPLS label of VRF 1 with [`NodeOverlay::Vpn`].
pub fn label(k: u8) -> u32 {
    2000 + u32::from(k)
}

pub fn fabric_ip(k: u8) -> String {
    format!("198.19.0.{k}")
}

pub fn fabric_mac(k: u8) -> MacAddr {
    MacAddr([0x02, 0, 0, 0, 0xfa, k])
}

/// Builds vrouter-bgp (another package of the workspace) beside `vrouterd`; its path.
pub fn vrouter_bgp_bin(vrouterd: &Path) -> PathBuf {
    let workspace = Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("testkit lies in the workspace");
    let status = std::process::Command::new(env!("CARGO"))
        .current_dir(workspace)
        .args(["build", "--locked", "-p", "vrouter-bgp"])
        .status()
        .expect("cargo build vrouter-bgp");
    assert!(status.success(), "building vrouter-bgp failed");
    let bin = vrouterd.with_file_name("vrouter-bgp");
    assert!(bin.is_file(), "{} after the build", bin.display());
    bin
}

/// gobgpd's TOML: `router_id` peering with each of `neighbors` (iBGP, EVPN, VPNv4, VPNv6), as their route
/// reflector when `reflector`; listening for BGP only then. With `graceful`, graceful restart
/// for every family, restart time [`RESTART_TIME`]: a peer's routes outlive its gobgpd's
/// restart (when it comes back with `-r`), and are withdrawn when it is not back in time;
/// without, a peer's routes go when its session does (at the latest after [`HOLD_TIME`]).
fn gobgpd_config(router_id: &str, neighbors: &[String], reflector: bool, graceful: bool) -> String {
    let port = if reflector { "" } else { "  port = -1\n" };
    let mut s = format!("[global.config]\n  as = {ASN}\n  router-id = \"{router_id}\"\n{port}");
    if reflector {
        s += &format!("  local-address-list = [\"{router_id}\"]\n");
    }
    for n in neighbors {
        s += &format!(
            "[[neighbors]]\n  [neighbors.config]\n    neighbor-address = \"{n}\"\n    peer-as = {ASN}\n\
             \x20 [neighbors.timers.config]\n    hold-time = {HOLD_TIME}\n    keepalive-interval = 1\n    connect-retry = 1\n\
             \x20 [neighbors.transport.config]\n    passive-mode = {reflector}\n"
        );
        if graceful {
            s += &format!(
                "  [neighbors.graceful-restart.config]\n    enabled = true\n    restart-time = {RESTART_TIME}\n"
            );
        }
        if reflector {
            s += &format!(
                "  [neighbors.route-reflector.config]\n    route-reflector-client = true\n    route-reflector-cluster-id = \"{router_id}\"\n"
            );
        }
        for family in ["l2vpn-evpn", "l3vpn-ipv4-unicast", "l3vpn-ipv6-unicast"] {
            s += &format!(
                "  [[neighbors.afi-safis]]\n    [neighbors.afi-safis.config]\n      afi-safi-name = \"{family}\"\n"
            );
            if graceful {
                s += "    [neighbors.afi-safis.mp-graceful-restart.config]\n      enabled = true\n";
            }
        }
    }
    s
}

/// gobgpd in `ns` with configuration `toml`; with `restarting`, as a graceful restart's
/// restarting speaker (`-r`: its peers keep the routes they had from it until it has sent
/// its own again).
pub fn gobgpd(ns: &Netns, toml: &str, restarting: bool) -> (TestProcess, PathBuf) {
    let path = temp_path("gobgpd", "toml");
    std::fs::write(&path, toml).expect("writing gobgpd.toml");
    let path_s = path.display().to_string();
    let mut args = vec![
        "netns",
        "exec",
        ns.name(),
        "gobgpd",
        "-f",
        &path_s,
        "-t",
        "toml",
        "--api-hosts",
        "127.0.0.1:50051",
        "--pprof-disable",
    ];
    if restarting {
        args.push("-r");
    }
    let p = TestProcess::spawn(Path::new(IP), &args);
    (p, path)
}

/// `gobgp ARGS` against the gobgpd of `ns`.
pub fn gobgp(ns: &Netns, args: &[&str]) -> String {
    let mut full = vec!["gobgp"];
    full.extend_from_slice(args);
    ns.exec(&full)
}

/// One node. Fields drop in order: vrouter-bgp, gobgpd, vrouterd, pods, namespace.
pub struct BgpNode {
    pub k: u8,
    pub overlay: NodeOverlay,
    pub bgp: TestProcess,
    /// How `bgp` was started (`ip netns exec ... vrouter-bgp ...`).
    bgp_args: Vec<String>,
    pub gobgpd: Option<TestProcess>,
    gobgpd_config: PathBuf,
    pub vr: Vrouterd,
    pub pods: [KernelPod; 2],
    pub ns: Netns,
}

impl BgpNode {
    /// Starts node `k`'s gobgpd again (after a test stopped it), as a graceful restart's
    /// restarting speaker: its peers keep its routes (if within [`RESTART_TIME`]) until it
    /// has sent them again.
    pub fn restart_gobgpd(&mut self) {
        let toml = std::fs::read_to_string(&self.gobgpd_config).expect("config");
        let (p, path) = gobgpd(&self.ns, &toml, true);
        let _ = std::fs::remove_file(&self.gobgpd_config);
        self.gobgpd = Some(p);
        self.gobgpd_config = path;
    }

    /// Stops node `k`'s vrouter-bgp (SIGKILL: no chance to tidy up) and starts it again.
    pub fn restart_vrouter_bgp(&mut self) {
        self.stop_vrouter_bgp();
        self.start_vrouter_bgp();
    }

    /// Stops node `k`'s vrouter-bgp (SIGKILL), to be started again with
    /// [`BgpNode::start_vrouter_bgp`].
    pub fn stop_vrouter_bgp(&mut self) {
        self.bgp.signal("KILL");
        let _ = self.bgp.wait(Duration::from_secs(5));
    }

    /// Starts node `k`'s vrouter-bgp again, as it was started first.
    pub fn start_vrouter_bgp(&mut self) {
        self.bgp = TestProcess::spawn(Path::new(IP), &self.bgp_args);
    }

    /// VRF 1's routes.
    pub fn routes(&self) -> Vec<Route> {
        self.vr
            .api(|c| async move { c.routes(1).await })
            .expect("routes")
    }

    pub fn nexthop(&self, id: u32) -> Nexthop {
        self.vr
            .api(|c| async move { c.nexthop(id).await })
            .expect("nexthop")
            .nexthop
    }
}

impl Drop for BgpNode {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.gobgpd_config);
    }
}

/// The whole cluster. Fields drop in order: nodes, reflector, namespaces.
pub struct Cluster {
    pub nodes: Vec<BgpNode>,
    pub rr: TestProcess,
    pub reflector: Reflector,
    /// gobgpd's configuration file, or bgpd's directory.
    rr_config: PathBuf,
    pub rr_ns: Netns,
    pub fabric: Netns,
}

impl Drop for Cluster {
    fn drop(&mut self) {
        match self.reflector {
            Reflector::Gobgp => {
                let _ = std::fs::remove_file(&self.rr_config);
            }
            Reflector::Frr => {
                let _ = std::fs::remove_dir_all(&self.rr_config);
            }
        }
    }
}

impl Cluster {
    /// Starts `n` nodes (at most 9) and the reflector; `tag` (a few characters) keeps names
    /// apart from other tests'. Returns at once: routes converge in the background. Every
    /// node's VRF 1 is EVPN over VXLAN.
    pub fn start(vrouterd: &Path, vrouter_bgp: &Path, tag: &str, n: u8) -> Cluster {
        Self::start_with(vrouterd, vrouter_bgp, tag, n, Reflector::Gobgp, |_| {
            NodeOverlay::Evpn
        })
    }

    /// As [`Cluster::start`] with `reflector` as the route reflector and every node's VRF 1
    /// reached as `overlay`, every BGP speaker with graceful restart ([`RESTART_TIME`]).
    pub fn start_graceful(
        vrouterd: &Path,
        vrouter_bgp: &Path,
        tag: &str,
        n: u8,
        reflector: Reflector,
        overlay: NodeOverlay,
    ) -> Cluster {
        Self::start_full(vrouterd, vrouter_bgp, tag, n, reflector, |_| overlay, true)
    }

    /// As [`Cluster::start`], with `reflector` as the route reflector and node `k`'s VRF 1
    /// reached as `overlay(k)` says.
    pub fn start_with(
        vrouterd: &Path,
        vrouter_bgp: &Path,
        tag: &str,
        n: u8,
        reflector: Reflector,
        overlay: impl Fn(u8) -> NodeOverlay,
    ) -> Cluster {
        Self::start_full(vrouterd, vrouter_bgp, tag, n, reflector, overlay, false)
    }

    fn start_full(
        vrouterd: &Path,
        vrouter_bgp: &Path,
        tag: &str,
        n: u8,
        reflector: Reflector,
        overlay: impl Fn(u8) -> NodeOverlay,
        graceful: bool,
    ) -> Cluster {
        assert!((1..=9).contains(&n));
        let fabric_ns = Netns::new(&format!("{tag}fab"));
        fabric_ns.ip(&["link", "add", "br0", "type", "bridge"]);
        fabric_ns.ip(&["link", "set", "br0", "up"]);
        let port = |name: &str, mtu: &str| {
            fabric_ns.ip(&["link", "set", name, "master", "br0", "mtu", mtu, "up"]);
        };
        let fabric = Fabric::kernel(FABRIC_IFACE, POD_MTU);
        let fabric_mtu = fabric.mtu.to_string();

        let rr_ns = Netns::new(&format!("{tag}rr"));
        fabric_ns.veth("crr", "ctl0", Some(&rr_ns));
        port("crr", "1500");
        rr_ns.ip(&["addr", "add", &format!("{RR_IP}/24"), "dev", "ctl0"]);
        let mut clients: Vec<String> = (1..=n).map(|k| format!("198.51.100.{k}")).collect();
        clients.push(GATEWAY_BGP_IP.into());
        let (rr, rr_config) = match reflector {
            Reflector::Gobgp => gobgpd(
                &rr_ns,
                &gobgpd_config(RR_IP, &clients, true, graceful),
                false,
            ),
            Reflector::Frr => {
                let dir = temp_path("bgpd", "d");
                let p = frr_bgpd(&rr_ns, &frr_config(RR_IP, &clients, graceful), RR_IP, &dir);
                (p, dir)
            }
        };

        let mut nodes = Vec::new();
        for k in 1..=n {
            let ns = Netns::new(&format!("{tag}n{k}"));
            fabric_ns.veth(&format!("f{k}"), FABRIC_IFACE, Some(&ns));
            port(&format!("f{k}"), &fabric_mtu);
            ns.ip(&["link", "set", FABRIC_IFACE, "mtu", &fabric_mtu]);
            fabric_ns.veth(&format!("c{k}"), "ctl0", Some(&ns));
            port(&format!("c{k}"), "1500");
            ns.ip(&["addr", "add", &format!("198.51.100.{k}/24"), "dev", "ctl0"]);
            let pods = [1, 2].map(|j| {
                let pod =
                    KernelPod::attached_to(Some(&ns), &format!("{tag}{k}{j}"), 10 * k + j, POD_MTU);
                ns.ip(&["link", "set", &pod.host_side, "mtu", &POD_MTU.to_string()]);
                pod
            });
            let node_overlay = overlay(k);
            let vr = node_vrouterd(vrouterd, &ns, &fabric, k, &pods, node_overlay);
            let (gobgpd, gobgpd_config) = gobgpd(
                &ns,
                &gobgpd_config(
                    &format!("198.51.100.{k}"),
                    &[RR_IP.to_string()],
                    false,
                    graceful,
                ),
                false,
            );
            let mut args = vec![
                "netns".to_string(),
                "exec".into(),
                ns.name().into(),
                vrouter_bgp.display().to_string(),
                "--vrouter-socket".into(),
                vr.control_socket().display().to_string(),
                "--fabric-ip".into(),
                fabric_ip(k),
                "--poll-ms".into(),
                "200".into(),
                "--restart-time".into(),
                RESTART_TIME.to_string(),
            ];
            if let NodeOverlay::Vpn { mpls_encap } = node_overlay {
                args.extend(["--mpls-encap".into(), mpls_encap.into()]);
            }
            let bgp = TestProcess::spawn(Path::new(IP), &args);
            nodes.push(BgpNode {
                k,
                overlay: node_overlay,
                bgp,
                bgp_args: args,
                gobgpd: Some(gobgpd),
                gobgpd_config,
                vr,
                pods,
                ns,
            });
        }
        Cluster {
            nodes,
            rr,
            reflector,
            rr_config,
            rr_ns,
            fabric: fabric_ns,
        }
    }

    /// Starts an [`FrrGateway`] on the fabric (namespace `{tag}gw`).
    pub fn frr_gateway(&self, tag: &str) -> FrrGateway {
        let ns = Netns::new(&format!("{tag}gw"));
        self.fabric.veth("cgw", "eth0", Some(&ns));
        self.fabric
            .ip(&["link", "set", "cgw", "master", "br0", "mtu", "1500", "up"]);
        for a in [GATEWAY_BGP_IP, GATEWAY_FABRIC_IP] {
            ns.ip(&["addr", "add", &format!("{a}/24"), "dev", "eth0"]);
        }
        let dir = temp_path("bgpd-gw", "d");
        let bgpd = frr_bgpd(&ns, &frr_gateway_config(), GATEWAY_BGP_IP, &dir);
        FrrGateway { bgpd, dir, ns }
    }

    /// Every process's output, for assertion messages.
    pub fn outputs(&self) -> String {
        let mut s = format!("--- reflector\n{}\n", self.rr.outputs());
        for n in &self.nodes {
            s += &format!("--- node {} vrouter-bgp\n{}\n", n.k, n.bgp.outputs());
            if let Some(g) = &n.gobgpd {
                s += &format!("--- node {} gobgpd\n{}\n", n.k, g.outputs());
            }
        }
        s
    }
}

/// vrouterd of node `k` with its pods in VRF 1 (nexthops 1 and 2, /32 routes, /128 ones too
/// with [`NodeOverlay::Vpn`]; their gateways answered by vrouterd) and VRF 1's routing
/// identity: VNI [`VNI`] decapsulated into VRF 1, or label [`label`]`(k)` (left for
/// vrouter-bgp to map).
fn node_vrouterd(
    binary: &Path,
    ns: &Netns,
    fabric: &Fabric,
    k: u8,
    pods: &[KernelPod; 2],
    overlay: NodeOverlay,
) -> Vrouterd {
    let (mac, mtu, ip) = (
        fabric_mac(k).to_string(),
        fabric.mtu.to_string(),
        fabric_ip(k),
    );
    let vr = Vrouterd::start_netns(
        Some(ns),
        binary,
        &[
            "--idle-sleep-us",
            "50",
            "--fabric",
            &fabric.device,
            "--fabric-mtu",
            &mtu,
            "--fabric-ip",
            &ip,
            "--fabric-mac",
            &mac,
        ],
        &[],
    );
    vr.api(|c| async move { c.vrf_add(1).await })
        .expect("vrf 1");
    vr.set_nexthop(10, Nexthop::Receive);
    for (i, pod) in pods.iter().enumerate() {
        let (id, name) = (i as u32 + 1, format!("pod{}", i + 1));
        let mut req = VifRequest::new(&name, VifType::AfPacket, 1, MacAddr(pod.mac));
        req.iface = Some(pod.host_side.clone());
        req.mtu = Some(fabric.pod_mtu);
        vr.add_vif(&req);
        vr.set_nexthop(
            id,
            Nexthop::Encap {
                vif: name,
                dmac: MacAddr(pod.mac),
            },
        );
        vr.set_route(&format!("{}/32", pod.ip), id);
        vr.set_route(&format!("{}/32", pod.gateway()), 10);
        if overlay != NodeOverlay::Evpn {
            vr.set_route(&format!("{}/128", pod.ip6), id);
            vr.set_route(&format!("{}/128", pod.gateway6()), 10);
        }
    }
    let (vni, label) = match overlay {
        NodeOverlay::Evpn => {
            vr.api(|c| async move { c.vxlan_set(VNI, 1).await })
                .expect("vni");
            (Some(VNI), None)
        }
        NodeOverlay::Vpn { .. } => (None, Some(label(k))),
    };
    let routing = VrfRouting {
        rd: format!("{ip}:1"),
        import_targets: vec![ROUTE_TARGET.into()],
        export_targets: vec![ROUTE_TARGET.into()],
        vni,
        label,
    };
    vr.api(|c| async move { c.vrf_routing_set(1, &routing).await })
        .expect("vrf routing identity");
    vr
}

/// How long routes may take to spread: sessions up (connect-retry 1 s), then vrouter-bgp's
/// polls.
pub const CONVERGE: Duration = Duration::from_secs(30);
