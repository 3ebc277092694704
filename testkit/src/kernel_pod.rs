//! Kernel pods: a network namespace with `eth0` on a veth whose other end stays in the host
//! namespace (where vrouterd attaches it as an af-packet vif), TCP transfers checked by SHA-256
//! at both ends, and iperf3 runs between pods.
//!
//! The veth keeps the kernel's default offloads, as container runtimes leave them: the pod's TCP
//! hands its veth 64 KB segments with partial checksums, and whatever attaches to the other end
//! must carry that state (or finish it) rather than take the frames as complete.

use std::io::BufRead;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::process::Stdio;

use crate::netns::{host, HostVeth, Netns};

/// One kernel pod.
pub struct KernelPod {
    pub ns: Netns,
    _veth: HostVeth,
    /// The veth end in the host namespace (the af-packet vif's `iface`).
    pub host_side: String,
    pub mac: [u8; 6],
    pub ip: Ipv4Addr,
    pub ip6: Ipv6Addr,
}

/// What one iperf3 run measured: bytes the client sent, and what the receiver counted (its
/// count stops when the client says the test is over, so it can fall a little short).
#[derive(Debug, Clone, Copy)]
pub struct Iperf {
    pub sent: u64,
    pub received: u64,
    pub seconds: f64,
    /// At the receiver.
    pub gbit_per_s: f64,
}

impl KernelPod {
    /// A pod with `eth0` = `198.18.<n>.2/24` and `2001:db8:18:<n>::2/64`, MAC
    /// `02:00:00:00:<n>:02`, default routes via `198.18.<n>.1` and `2001:db8:18:<n>::1`, the given
    /// MTU, and the kernel's default offloads on both veth ends. `tag` makes the interface names
    /// unique within the process.
    pub fn new(tag: &str, n: u8, mtu: u32) -> KernelPod {
        Self::attached_to(None, tag, n, mtu)
    }

    /// The pod's IPv4 gateway (`198.18.<n>.1`).
    pub fn gateway(&self) -> Ipv4Addr {
        let [a, b, c, _] = self.ip.octets();
        Ipv4Addr::new(a, b, c, 1)
    }

    /// The pod's IPv6 gateway (`2001:db8:18:<n>::1`).
    pub fn gateway6(&self) -> Ipv6Addr {
        let mut s = self.ip6.segments();
        s[7] = 1;
        Ipv6Addr::from(s)
    }

    /// A host beyond the fabric, for NAT and service tests: a pod of `node` re-addressed as
    /// `addr`/24 on the far side of a router at `router`, whose MAC is `router_mac` given
    /// statically (vrouterd answers ARP on the fabric only for its own fabric address) or, with
    /// `None`, learnt by ARP from a kernel router that answers it.
    pub fn remote(
        node: &Netns,
        tag: &str,
        n: u8,
        addr: Ipv4Addr,
        router: Ipv4Addr,
        router_mac: Option<&str>,
    ) -> KernelPod {
        let remote = Self::attached_to(Some(node), tag, n, 1500);
        let (ns, router) = (&remote.ns, router.to_string());
        ns.ip(&["addr", "flush", "dev", "eth0"]);
        ns.ip(&["addr", "add", &format!("{addr}/24"), "dev", "eth0"]);
        if let Some(mac) = router_mac {
            ns.ip(&[
                "neigh",
                "replace",
                &router,
                "lladdr",
                mac,
                "dev",
                "eth0",
                "nud",
                "permanent",
            ]);
        }
        ns.ip(&["route", "replace", "default", "via", &router]);
        remote
    }

    /// As [`KernelPod::new`], with the vif side of the veth in `node`'s namespace (where that
    /// node's vrouterd runs) instead of the host's.
    pub fn attached_to(node: Option<&Netns>, tag: &str, n: u8, mtu: u32) -> KernelPod {
        let pod = Self::unaddressed(node, tag, n, mtu);
        let (ns, ip, ip6) = (&pod.ns, pod.ip, pod.ip6);
        ns.ip(&["addr", "add", &format!("{ip}/24"), "dev", "eth0"]);
        ns.ip(&["addr", "add", &format!("{ip6}/64"), "dev", "eth0", "nodad"]);
        ns.ip(&["route", "add", "default", "via", &format!("198.18.{n}.1")]);
        ns.ip(&[
            "-6",
            "route",
            "add",
            "default",
            "via",
            &format!("2001:db8:18:{n:x}::1"),
        ]);
        pod
    }

    /// As [`KernelPod::attached_to`], but with `eth0` up and no address or route: a pod that
    /// takes its configuration by DHCP (`ip` and `ip6` are what it is meant to get).
    pub fn unaddressed(node: Option<&Netns>, tag: &str, n: u8, mtu: u32) -> KernelPod {
        let ns = Netns::new(&format!("kp{tag}"));
        let id = std::process::id() % 100_000;
        let host_side = format!("vk{id}{tag}");
        let peer = format!("vkp{id}{tag}");
        let veth = HostVeth::new(&host_side, &peer);
        host(&["ip", "link", "set", &peer, "netns", ns.name()]);
        if let Some(n) = node {
            host(&["ip", "link", "set", &host_side, "netns", n.name()]);
            host(&["ip", "-n", n.name(), "link", "set", &host_side, "up"]);
        }
        let mac = [0x02, 0, 0, 0, n, 0x02];
        let ip = Ipv4Addr::new(198, 18, n, 2);
        let ip6 = Ipv6Addr::new(0x2001, 0xdb8, 0x18, u16::from(n), 0, 0, 0, 2);
        let mac_text = mac
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect::<Vec<_>>()
            .join(":");
        ns.ip(&["link", "set", &peer, "name", "eth0"]);
        ns.ip(&[
            "link",
            "set",
            "eth0",
            "address",
            &mac_text,
            "mtu",
            &mtu.to_string(),
        ]);
        // HostVeth made both ends without IPv6; the pod speaks it.
        ns.exec(&["sysctl", "-qw", "net.ipv6.conf.eth0.disable_ipv6=0"]);
        ns.ip(&["link", "set", "eth0", "up"]);
        KernelPod {
            ns,
            _veth: veth,
            host_side,
            mac,
            ip,
            ip6,
        }
    }

    /// Pings `dst` `count` times; returns ping's output (panics if ping fails outright).
    pub fn ping(&self, dst: &str, count: u32) -> String {
        self.ns.exec(&[
            "ping",
            "-c",
            &count.to_string(),
            "-i",
            "0.2",
            "-W",
            "2",
            dst,
        ])
    }

    /// Sends `bytes` of seeded pseudo-random data over TCP to `server`'s IPv4 address (it
    /// listens inside its namespace) and returns (sent line, received line): each
    /// `"<bytes> <sha256>"`.
    pub fn tcp_transfer(&self, server: &KernelPod, bytes: u64) -> (String, String) {
        self.tcp_transfer_to(server, IpAddr::V4(server.ip), bytes)
    }

    /// As [`KernelPod::tcp_transfer`], to `addr` (one of `server`'s addresses, IPv4 or IPv6).
    pub fn tcp_transfer_to(
        &self,
        server: &KernelPod,
        addr: IpAddr,
        bytes: u64,
    ) -> (String, String) {
        let srv = server.tcp_server();
        let sent = self
            .tcp_send(addr, srv.port(), bytes)
            .unwrap_or_else(|e| panic!("{e}"));
        let received = srv.finish().unwrap_or_else(|e| panic!("{e}"));
        (sent, received)
    }

    /// Starts a TCP server in the pod (on all its addresses, IPv4 and IPv6) that reads one
    /// connection to its end and reports `"<bytes> <sha256>"` of what arrived; returns once it
    /// listens.
    pub fn tcp_server(&self) -> TcpServer {
        let mut child = self
            .ns
            .command("python3")
            .args(["-c", TCP_SCRIPT, "server"])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("tcp server");
        let mut reader = std::io::BufReader::new(child.stdout.take().expect("stdout"));
        let mut line = String::new();
        reader.read_line(&mut line).expect("server ready");
        assert_eq!(line.trim(), "listening");
        TcpServer { child, reader }
    }

    /// Sends `bytes` of seeded pseudo-random data over TCP to `dst`:`port` and returns
    /// `"<bytes> <sha256>"` of what was sent, or what went wrong.
    pub fn tcp_send(
        &self,
        dst: impl Into<IpAddr>,
        port: u16,
        bytes: u64,
    ) -> Result<String, String> {
        tcp_send_in(&self.ns, dst, port, bytes)
    }

    /// [`KernelPod::tcp_send`] at no more than `per_second` bytes a second (a stream that must
    /// last a while, however fast the host is today).
    pub fn tcp_send_paced(
        &self,
        dst: impl Into<IpAddr>,
        port: u16,
        bytes: u64,
        per_second: u64,
    ) -> Result<String, String> {
        tcp_send_with(&self.ns, dst.into(), port, bytes, per_second)
    }

    /// Runs iperf3 from this pod to `server` at `addr` for `bytes` bytes and returns what it
    /// measured (iperf3 checks no data: pair it with [`KernelPod::tcp_transfer_to`]).
    pub fn iperf3(&self, server: &KernelPod, addr: IpAddr, bytes: u64) -> Iperf {
        self.iperf3_run(server, addr, &["-n", &bytes.to_string()])
    }

    /// Runs iperf3 from this pod to `server` at `addr` for `seconds` with `streams` parallel
    /// connections (benchmarks).
    pub fn iperf3_timed(
        &self,
        server: &KernelPod,
        addr: IpAddr,
        seconds: u32,
        streams: u32,
    ) -> Iperf {
        self.iperf3_run(
            server,
            addr,
            &["-t", &seconds.to_string(), "-P", &streams.to_string()],
        )
    }

    fn iperf3_run(&self, server: &KernelPod, addr: IpAddr, how: &[&str]) -> Iperf {
        let mut srv = server
            .ns
            .command("iperf3")
            .args(["-s", "-1", "-p", "5202", "--forceflush"])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("iperf3 server");
        let mut reader = std::io::BufReader::new(srv.stdout.take().expect("stdout"));
        let mut line = String::new();
        while !line.contains("Server listening") {
            line.clear();
            let n = reader.read_line(&mut line).expect("iperf3 server output");
            assert!(n > 0, "iperf3 server exited before listening");
        }
        let addr = addr.to_string();
        let mut args = vec!["iperf3", "-c", &addr, "-p", "5202", "-J"];
        args.extend_from_slice(how);
        let out = self.ns.exec(&args);
        let _ = srv.wait();
        let v: serde_json::Value = serde_json::from_str(&out).expect("iperf3 JSON");
        let recv = &v["end"]["sum_received"];
        let (Some(sent), Some(received), Some(seconds), Some(bps)) = (
            v["end"]["sum_sent"]["bytes"].as_u64(),
            recv["bytes"].as_u64(),
            recv["seconds"].as_f64(),
            recv["bits_per_second"].as_f64(),
        ) else {
            panic!("iperf3 reported no sums: {out}");
        };
        Iperf {
            sent,
            received,
            seconds,
            gbit_per_s: bps / 1e9,
        }
    }
}

/// A TCP server in a kernel pod, from [`KernelPod::tcp_server`]; killed on drop.
pub struct TcpServer {
    child: std::process::Child,
    reader: std::io::BufReader<std::process::ChildStdout>,
}

impl TcpServer {
    /// The port it listens on (all addresses of the pod).
    pub fn port(&self) -> u16 {
        5201
    }

    /// Waits for the connection to end (the server gives up 60 s after the last data, 120 s
    /// after starting without a connection) and returns `"<bytes> <sha256>"` of what arrived.
    pub fn finish(mut self) -> Result<String, String> {
        let mut line = String::new();
        let _ = self.reader.read_line(&mut line);
        if line.trim().is_empty() {
            let _ = self.child.kill();
            let mut err = String::new();
            if let Some(mut e) = self.child.stderr.take() {
                let _ = std::io::Read::read_to_string(&mut e, &mut err);
            }
            return Err(format!(
                "TCP server got no complete connection: {}",
                err.lines().last().unwrap_or("")
            ));
        }
        Ok(line.trim().to_owned())
    }
}

impl Drop for TcpServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

const TCP_SCRIPT: &str = r#"
import socket, sys, hashlib, random, time
if sys.argv[1] == "server":
    s = socket.create_server(("", 5201), family=socket.AF_INET6, dualstack_ipv6=True)
    s.settimeout(120)
    print("listening", flush=True)
    c, _ = s.accept(); c.settimeout(60); h = hashlib.sha256(); n = 0
    while True:
        b = c.recv(1 << 16)
        if not b: break
        h.update(b); n += len(b)
    print(n, h.hexdigest(), flush=True)
else:
    total = int(sys.argv[3]); rng = random.Random(7); h = hashlib.sha256(); n = 0
    port = int(sys.argv[4]) if len(sys.argv) > 4 else 5201
    rate = int(sys.argv[5]) if len(sys.argv) > 5 else 0
    c = socket.create_connection((sys.argv[2], port), timeout=60); t0 = time.monotonic()
    while n < total:
        b = rng.randbytes(min(1 << 16, total - n)); c.sendall(b); h.update(b); n += len(b)
        if rate:
            ahead = n / rate - (time.monotonic() - t0)
            if ahead > 0: time.sleep(ahead)
    c.shutdown(socket.SHUT_WR); c.recv(1); c.close()
    print(n, h.hexdigest(), flush=True)
"#;

/// Attaches `pods` to `vr` as af-packet vifs in VRF 1 named as given, with host routes (IPv4 and
/// IPv6) and an encap nexthop (ids 1, 2, …) to each and receive routes for each pod's gateways.
pub fn route_in_vrf1(vr: &crate::vrouterd::Vrouterd, pods: &[(&str, &KernelPod)]) {
    route_in_vrf1_mtu(vr, pods, None);
}

/// [`route_in_vrf1`] with the vifs' MTU given (the pods' own, for jumbo frames).
pub fn route_in_vrf1_mtu(
    vr: &crate::vrouterd::Vrouterd,
    pods: &[(&str, &KernelPod)],
    mtu: Option<u32>,
) {
    use control_api::api::{MacAddr, Nexthop, VifRequest, VifType};
    vr.api(|c| async move { c.vrf_add(1).await })
        .expect("vrf 1");
    let receive = pods.len() as u32 + 1;
    vr.set_nexthop(receive, Nexthop::Receive);
    for (i, (name, pod)) in pods.iter().enumerate() {
        let mut req = VifRequest::new(name, VifType::AfPacket, 1, MacAddr(pod.mac));
        req.iface = Some(pod.host_side.clone());
        req.mtu = mtu;
        vr.add_vif(&req);
        let id = i as u32 + 1;
        vr.route_to(
            id,
            name,
            MacAddr(pod.mac),
            &[&format!("{}/32", pod.ip), &format!("{}/128", pod.ip6)],
        );
        vr.set_route(&format!("{}/32", pod.gateway()), receive);
        vr.set_route(&format!("{}/128", pod.gateway6()), receive);
    }
}

/// [`KernelPod::tcp_send`] from any namespace (a node's own, where its host interface is).
pub fn tcp_send_in(
    ns: &Netns,
    dst: impl Into<IpAddr>,
    port: u16,
    bytes: u64,
) -> Result<String, String> {
    tcp_send_with(ns, dst.into(), port, bytes, 0)
}

/// [`tcp_send_in`] at no more than `per_second` bytes a second (0: as fast as it goes).
fn tcp_send_with(
    ns: &Netns,
    dst: IpAddr,
    port: u16,
    bytes: u64,
    per_second: u64,
) -> Result<String, String> {
    let start = std::time::Instant::now();
    let out = ns
        .command("python3")
        .args([
            "-c",
            TCP_SCRIPT,
            "client",
            &dst.to_string(),
            &bytes.to_string(),
            &port.to_string(),
            &per_second.to_string(),
        ])
        .output()
        .map_err(|e| format!("cannot run the TCP client: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "TCP client in {} to {dst}:{port} failed ({}) after {:?}: {}",
            ns.name(),
            out.status,
            start.elapsed(),
            String::from_utf8_lossy(&out.stderr)
                .lines()
                .last()
                .unwrap_or("")
        ));
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
}
