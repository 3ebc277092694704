//! Two kernel pods (network namespaces on veth pairs, attached as af-packet vifs) talk through
//! vrouterd routing in VRF 1: vrouterd answers their ARP for the gateway, pings cross in both
//! directions, and 100 MB of TCP arrive intact (SHA-256 compared at both ends).

use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::time::Duration;

use control_api::api::{IpPrefix, MacAddr, Nexthop, Route, VifRequest, VifType};
use testkit::netns::{host, HostVeth, Netns};
use testkit::vrouterd::Vrouterd;

fn vrouterd_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_vrouterd"))
}

struct KernelPod {
    ns: Netns,
    _veth: HostVeth,
    host_side: String,
    mac: MacAddr,
    ip: Ipv4Addr,
}

/// A namespace with `eth0` = `ip/24` (gateway `.1`), its peer `host_side` in the host namespace;
/// checksum and segmentation offloads off on both ends, since an af-packet vif sees frames
/// exactly as the kernel hands them over.
fn kernel_pod(tag: &str, n: u8) -> KernelPod {
    let ns = Netns::new(&format!("kp{tag}"));
    let host_side = format!("vk{}{tag}", std::process::id() % 100_000);
    let peer = format!("vkp{}{tag}", std::process::id() % 100_000);
    let veth = HostVeth::new(&host_side, &peer);
    host(&["ip", "link", "set", &peer, "netns", ns.name()]);
    let mac = MacAddr([0x02, 0, 0, 0, n, 0x02]);
    let ip = Ipv4Addr::new(198, 18, n, 2);
    ns.ip(&["link", "set", &peer, "name", "eth0"]);
    ns.ip(&["link", "set", "eth0", "address", &mac.to_string()]);
    ns.ip(&["addr", "add", &format!("{ip}/24"), "dev", "eth0"]);
    ns.ip(&["link", "set", "eth0", "up"]);
    ns.ip(&["route", "add", "default", "via", &format!("198.18.{n}.1")]);
    ns.exec(&[
        "ethtool", "-K", "eth0", "tx", "off", "tso", "off", "gso", "off",
    ]);
    host(&[
        "ethtool", "-K", &host_side, "tx", "off", "tso", "off", "gso", "off", "gro", "off",
    ]);
    KernelPod {
        ns,
        _veth: veth,
        host_side,
        mac,
        ip,
    }
}

const TCP_SCRIPT: &str = r#"
import socket, sys, hashlib, random
if sys.argv[1] == "server":
    s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind(("0.0.0.0", 5201)); s.listen(1); s.settimeout(120)
    print("listening", flush=True)
    c, _ = s.accept(); c.settimeout(60); h = hashlib.sha256(); n = 0
    while True:
        b = c.recv(1 << 16)
        if not b: break
        h.update(b); n += len(b)
    print(n, h.hexdigest(), flush=True)
else:
    total = int(sys.argv[3]); rng = random.Random(7); h = hashlib.sha256(); n = 0
    c = socket.create_connection((sys.argv[2], 5201), timeout=60)
    while n < total:
        b = rng.randbytes(min(1 << 16, total - n)); c.sendall(b); h.update(b); n += len(b)
    c.shutdown(socket.SHUT_WR); c.recv(1); c.close()
    print(n, h.hexdigest(), flush=True)
"#;

#[test]
fn kernel_pods_ping_and_move_100_mb_of_tcp_through_vrouterd() {
    let pod1 = kernel_pod("a", 1);
    let pod2 = kernel_pod("b", 2);
    let vr = Vrouterd::start(&vrouterd_bin(), &["--idle-sleep-us", "20"], &[]);

    vr.api(|c| async move { c.vrf_add(1).await })
        .expect("vrf 1");
    for (name, pod) in [("pod1", &pod1), ("pod2", &pod2)] {
        let mut req = VifRequest::new(name, VifType::AfPacket, 1, pod.mac);
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
                dmac: pod1.mac,
            },
        ),
        (
            2,
            Nexthop::Encap {
                vif: "pod2".into(),
                dmac: pod2.mac,
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

    let out = pod1.ns.exec(&[
        "ping",
        "-c",
        "5",
        "-i",
        "0.2",
        "-W",
        "2",
        &pod2.ip.to_string(),
    ]);
    assert!(out.contains("5 received"), "{out}");
    let out = pod2.ns.exec(&[
        "ping",
        "-c",
        "5",
        "-i",
        "0.2",
        "-W",
        "2",
        &pod1.ip.to_string(),
    ]);
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

    // 100 MB of TCP, verified end to end.
    let mut server = pod2
        .ns
        .command("python3")
        .args(["-c", TCP_SCRIPT, "server"])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("tcp server");
    let mut line = String::new();
    let mut reader = std::io::BufReader::new(server.stdout.take().expect("stdout"));
    std::io::BufRead::read_line(&mut reader, &mut line).expect("server ready");
    assert_eq!(line.trim(), "listening");
    let client = pod1.ns.exec(&[
        "python3",
        "-c",
        TCP_SCRIPT,
        "client",
        &pod2.ip.to_string(),
        "100000000",
    ]);
    line.clear();
    std::io::BufRead::read_line(&mut reader, &mut line).expect("server result");
    let _ = server.wait();
    assert!(client.trim().starts_with("100000000 "), "{client}");
    assert_eq!(client.trim(), line.trim(), "bytes and SHA-256 at both ends");

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
        counters("pod2").rx_bytes > 0 && counters("pod1").tx_packets > 0,
        "ACKs went back"
    );
    let drops = vr
        .api(|c| async move { c.dropstats().await })
        .expect("dropstats");
    assert_eq!(drops.reasons.get("no_route"), Some(&0), "{drops:?}");
    let status = vr.stop();
    assert!(status.success(), "vrouterd exit {status}");
    std::thread::sleep(Duration::from_millis(10));
}
