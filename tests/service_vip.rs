//! Service VIPs through the real vrouterd: a client kernel pod (veth, default offloads on) in
//! VRF 1 opens many short TCP connections to a VIP load-balanced over three backend kernel
//! pods. Every backend gets some; the replies come from the VIP (the client's kernel accepts
//! them only then, checksums included); a backend removed mid-way gets no new connection while
//! the others keep answering, their connections open across the removal still carry data, and
//! GET /nat/services counts each backend's flows.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::net::{Ipv4Addr, Ipv6Addr};
use std::path::PathBuf;
use std::process::{Child, Stdio};

use control_api::api::{Service, ServiceBackend, ServiceBalance, ServiceProto};
use testkit::kernel_pod::{route_in_vrf1, KernelPod};
use testkit::netns::Netns;
use testkit::vrouterd::Vrouterd;

const VIP: Ipv4Addr = Ipv4Addr::new(198, 18, 9, 100);
const BACKEND_PORT: u16 = 8080;

fn vrouterd_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_vrouterd"))
}

/// Accepts connections on BACKEND_PORT forever, answering each with its name, then echoing
/// what comes until the client closes.
const SERVER: &str = r#"
import socket, sys, threading
s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("0.0.0.0", int(sys.argv[2])))
s.listen(256)
print("listening", flush=True)
def serve(c):
    try:
        c.sendall(sys.argv[1].encode())
        while True:
            d = c.recv(64)
            if not d:
                break
            c.sendall(d)
    except OSError:
        pass
    finally:
        c.close()
while True:
    c, _ = s.accept()
    threading.Thread(target=serve, args=(c,), daemon=True).start()
"#;

/// Opens argv[3] connections to argv[1]:argv[2] and keeps them: prints each one's backend
/// name, then on a line from stdin sends "ping" on each and prints "<name> ok" or
/// "<name> broken".
const LONG: &str = r#"
import socket, sys
conns = []
for _ in range(int(sys.argv[3])):
    c = socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=3)
    conns.append((c.recv(64).decode(), c))
print(" ".join(n for n, _ in conns), flush=True)
sys.stdin.readline()
for n, c in conns:
    try:
        c.sendall(b"ping")
        ok = c.recv(64) == b"ping"
    except OSError:
        ok = False
    print(n, "ok" if ok else "broken", flush=True)
"#;

/// Opens argv[3] connections to argv[1]:argv[2] one after the other; prints how many answers
/// each name gave and how many connections failed.
const CLIENT: &str = r#"
import socket, sys, collections
counts = collections.Counter()
for _ in range(int(sys.argv[3])):
    try:
        c = socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=3)
        data = c.recv(64)
        c.close()
        counts[data.decode() or "empty"] += 1
    except OSError as e:
        counts["failed"] += 1
        print(repr(e), file=sys.stderr)
for k, v in sorted(counts.items()):
    print(k, v)
"#;

struct Server(Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn serve(pod: &KernelPod, name: &str) -> Server {
    serve_script(pod, name, SERVER)
}

fn serve_script(pod: &KernelPod, name: &str, script: &str) -> Server {
    let mut child = pod
        .ns
        .command("python3")
        .args(["-c", script, name, &BACKEND_PORT.to_string()])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("backend server");
    let mut line = String::new();
    BufReader::new(child.stdout.take().expect("stdout"))
        .read_line(&mut line)
        .expect("server ready");
    assert_eq!(line.trim(), "listening");
    Server(child)
}

fn connect_many(pod: &KernelPod, n: u32) -> BTreeMap<String, u32> {
    connect_many_to(pod, &VIP.to_string(), n)
}

fn connect_many_to(pod: &KernelPod, vip: &str, n: u32) -> BTreeMap<String, u32> {
    let out = pod
        .ns
        .command("python3")
        .args(["-c", CLIENT, vip, "80", &n.to_string()])
        .output()
        .expect("client");
    assert!(out.status.success(), "client: {out:?}");
    if !out.stderr.is_empty() {
        eprintln!("client errors: {}", String::from_utf8_lossy(&out.stderr));
    }
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.split_once(' '))
        .map(|(k, v)| (k.to_string(), v.parse().unwrap()))
        .collect()
}

fn service(backends: &[&KernelPod]) -> Service {
    Service {
        vrf: 1,
        address: VIP.into(),
        port: 80,
        proto: ServiceProto::Tcp,
        backends: backends
            .iter()
            .map(|p| ServiceBackend {
                address: p.ip.into(),
                port: BACKEND_PORT,
            })
            .collect(),
        balance: Default::default(),
    }
}

#[test]
fn a_vip_spreads_connections_over_its_backends_and_a_removed_one_gets_no_more() {
    let node = Netns::new("vipnode");
    let client = KernelPod::attached_to(Some(&node), "vc", 1, 1500);
    let b1 = KernelPod::attached_to(Some(&node), "v1", 2, 1500);
    let b2 = KernelPod::attached_to(Some(&node), "v2", 3, 1500);
    let b3 = KernelPod::attached_to(Some(&node), "v3", 4, 1500);
    let vr = Vrouterd::start_netns(
        Some(&node),
        &vrouterd_bin(),
        &["--idle-sleep-us", "20", "--flow-entries", "4096"],
        &[],
    );
    route_in_vrf1(
        &vr,
        &[("c", &client), ("b1", &b1), ("b2", &b2), ("b3", &b3)],
    );
    let _servers = [serve(&b1, "b1"), serve(&b2, "b2"), serve(&b3, "b3")];
    let all = service(&[&b1, &b2, &b3]);
    vr.api(|c| async move { c.service_set("web", &all).await })
        .expect("service");

    let first = connect_many(&client, 150);
    assert_eq!(
        first.get("failed"),
        None,
        "every connection answered: {first:?}"
    );
    for b in ["b1", "b2", "b3"] {
        assert!(
            first.get(b).copied().unwrap_or(0) > 0,
            "{b} got none: {first:?}"
        );
    }
    assert_eq!(first.values().sum::<u32>(), 150, "{first:?}");
    // The flows (not yet aged) are counted per backend.
    let listed = vr
        .api(|c| async move { c.services().await })
        .expect("services");
    let flows: u64 = listed[0].backends.iter().map(|b| b.flows).sum();
    assert!(flows > 0, "{listed:?}");

    // Connections kept open across the removal.
    let mut long = client
        .ns
        .command("python3")
        .args(["-c", LONG, &VIP.to_string(), "80", "9"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("long client");
    let mut long_out = BufReader::new(long.stdout.take().expect("stdout"));
    let mut names = String::new();
    long_out
        .read_line(&mut names)
        .expect("long connections open");
    let names: Vec<String> = names.split_whitespace().map(String::from).collect();
    assert_eq!(names.len(), 9, "{names:?}");

    // b2 goes: no new connection reaches it, the others keep answering.
    let kept = service(&[&b1, &b3]);
    vr.api(|c| async move { c.service_set("web", &kept).await })
        .expect("backend removed");
    let second = connect_many(&client, 150);
    assert_eq!(
        second.get("b2"),
        None,
        "the removed backend got new ones: {second:?}"
    );
    assert_eq!(second.get("failed"), None, "{second:?}");
    assert!(second.get("b1").copied().unwrap_or(0) > 0, "{second:?}");
    assert!(second.get("b3").copied().unwrap_or(0) > 0, "{second:?}");
    let listed = vr
        .api(|c| async move { c.services().await })
        .expect("services");
    assert_eq!(listed[0].backends.len(), 2);

    // The kept backends' open connections still carry data.
    use std::io::Write;
    long.stdin
        .take()
        .expect("stdin")
        .write_all(b"go\n")
        .expect("go");
    let mut kept_ok = 0;
    for _ in 0..9 {
        let mut line = String::new();
        long_out.read_line(&mut line).expect("result");
        let (name, state) = line.trim().split_once(' ').expect("name state");
        if name != "b2" {
            assert_eq!(state, "ok", "a kept backend's connection broke: {line}");
            kept_ok += 1;
        }
    }
    assert!(long.wait().expect("long client").success());
    assert_eq!(kept_ok, names.iter().filter(|n| *n != "b2").count());
    assert!(
        kept_ok > 0,
        "some of 9 connections went to b1 or b3: {names:?}"
    );

    // Balanced by least flows (its flows start afresh): new connections alternate.
    let mut least = service(&[&b1, &b3]);
    least.balance = ServiceBalance::LeastFlows;
    vr.api(|c| async move { c.service_set("web", &least).await })
        .expect("least flows");
    let third = connect_many(&client, 20);
    assert_eq!(third.get("failed"), None, "{third:?}");
    let (n1, n3) = (
        third.get("b1").copied().unwrap_or(0),
        third.get("b3").copied().unwrap_or(0),
    );
    assert!(
        n1.abs_diff(n3) <= 2,
        "least flows keeps them even: {third:?}"
    );
    drop(vr);
}

/// An ICMP error about a VIP flow, translated back: a UDP VIP whose backend has nothing on the
/// port answers with the backend kernel's port unreachable, which reaches the client from the
/// VIP quoting the client's own datagram to the VIP, so the client's connected socket sees
/// the connection refused (its kernel matched the quote) and the checksums hold.
#[test]
fn a_backends_port_unreachable_reaches_the_client_from_the_vip() {
    let node = Netns::new("vipicmp");
    let client = KernelPod::attached_to(Some(&node), "ic", 1, 1500);
    let backend = KernelPod::attached_to(Some(&node), "ib", 2, 1500);
    let vr = Vrouterd::start_netns(
        Some(&node),
        &vrouterd_bin(),
        &["--idle-sleep-us", "20", "--flow-entries", "4096"],
        &[],
    );
    route_in_vrf1(&vr, &[("c", &client), ("b", &backend)]);
    let svc = Service {
        vrf: 1,
        address: VIP.into(),
        port: 5353,
        proto: ServiceProto::Udp,
        backends: vec![ServiceBackend {
            address: backend.ip.into(),
            port: 5354,
        }],
        balance: Default::default(),
    };
    vr.api(|c| async move { c.service_set("dns", &svc).await })
        .expect("service");

    let cap = client
        .ns
        .capture("eth0", "icmp[icmptype] == icmp-unreach", 1);
    let out = client.ns.exec(&[
        "python3",
        "-c",
        "import socket\ns=socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\ns.settimeout(3)\ns.bind(('', 6000))\ns.connect(('198.18.9.100', 5353))\ns.send(b'x')\ntry:\n s.recv(10)\n print('answered')\nexcept ConnectionRefusedError:\n print('refused')\nexcept socket.timeout:\n print('timeout')",
    ]);
    assert_eq!(
        out.trim(),
        "refused",
        "the port unreachable reached the client's socket"
    );
    let frames = cap.frames(std::time::Duration::from_secs(10));
    let f = frames.first().expect("the error, captured at the client");
    let e = testkit::icmp::icmp4_error(f);
    assert_eq!((e.src, e.dst), (VIP, client.ip), "from the VIP");
    assert_eq!(
        e.quoted,
        (client.ip, 6000, VIP, 5353),
        "the quote is the client's datagram to the VIP"
    );
    drop(vr);
}

const VIP6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0x18, 0x99, 0, 0, 0, 0x100);

/// An IPv6 VIP over three backend pods' IPv6 addresses: 120 connections from the client's
/// kernel (which takes the SYN-ACKs only from the VIP it connected to) reach all three, a
/// backend removed gets no new one, and the listing counts the flows per backend.
#[test]
fn an_ipv6_vip_spreads_connections_over_its_backends() {
    let node = Netns::new("vip6node");
    let client = KernelPod::attached_to(Some(&node), "wc", 1, 1500);
    let b1 = KernelPod::attached_to(Some(&node), "w1", 2, 1500);
    let b2 = KernelPod::attached_to(Some(&node), "w2", 3, 1500);
    let b3 = KernelPod::attached_to(Some(&node), "w3", 4, 1500);
    let vr = Vrouterd::start_netns(
        Some(&node),
        &vrouterd_bin(),
        &["--idle-sleep-us", "20", "--flow-entries", "4096"],
        &[],
    );
    route_in_vrf1(
        &vr,
        &[("c", &client), ("b1", &b1), ("b2", &b2), ("b3", &b3)],
    );
    let server6 = SERVER
        .replace("s = socket.socket()", "s = socket.socket(socket.AF_INET6)")
        .replace("\"0.0.0.0\"", "\"::\"");
    let _servers = [
        serve_script(&b1, "b1", &server6),
        serve_script(&b2, "b2", &server6),
        serve_script(&b3, "b3", &server6),
    ];
    let svc6 = |pods: &[&KernelPod]| Service {
        vrf: 1,
        address: VIP6.into(),
        port: 80,
        proto: ServiceProto::Tcp,
        backends: pods
            .iter()
            .map(|p| ServiceBackend {
                address: p.ip6.into(),
                port: BACKEND_PORT,
            })
            .collect(),
        balance: Default::default(),
    };
    let all = svc6(&[&b1, &b2, &b3]);
    vr.api(|c| async move { c.service_set("web6", &all).await })
        .expect("IPv6 service");
    let first = connect_many_to(&client, &VIP6.to_string(), 120);
    let drops = vr
        .api(|c| async move { c.dropstats().await })
        .expect("drops");
    assert_eq!(
        first.get("failed"),
        None,
        "every connection answered: {first:?} {drops:?}"
    );
    for b in ["b1", "b2", "b3"] {
        assert!(
            first.get(b).copied().unwrap_or(0) > 0,
            "{b} got none: {first:?}"
        );
    }
    assert_eq!(first.values().sum::<u32>(), 120, "{first:?}");
    let listed = vr
        .api(|c| async move { c.services().await })
        .expect("services");
    assert_eq!(listed[0].address, std::net::IpAddr::from(VIP6));
    let flows: u64 = listed[0].backends.iter().map(|b| b.flows).sum();
    assert!(flows > 0, "{listed:?}");

    let kept = svc6(&[&b1, &b3]);
    vr.api(|c| async move { c.service_set("web6", &kept).await })
        .expect("backend removed");
    let second = connect_many_to(&client, &VIP6.to_string(), 60);
    assert_eq!(
        second.get("b2"),
        None,
        "the removed backend got new ones: {second:?}"
    );
    assert_eq!(second.get("failed"), None, "{second:?}");
    assert_eq!(second.values().sum::<u32>(), 60, "{second:?}");
    drop(vr);
}
