//! Packet trace through the real vrouterd: a pod's next packets, each with what vrouterd did —
//! a routed one sent to the other pod with its TTL decremented, a tunnelled one leaving the
//! fabric in VXLAN with its inner packet, a dropped one under its reason — through the API and
//! through `vrouterctl trace`.

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use control_api::api::{MacAddr, Nexthop, Route, TunnelEncap};
use testkit::frontend_pod::{udp_frame, FrontendPod, Memory};
use testkit::netns::Netns;
use testkit::vrouterd::Vrouterd;

const MAC_A: MacAddr = MacAddr([0x02, 0, 0, 0, 0x0a, 0x01]);
const MAC_B: MacAddr = MacAddr([0x02, 0, 0, 0, 0x0b, 0x01]);
const FABRIC_MAC: MacAddr = MacAddr([0x02, 0, 0, 0, 0xfa, 0x01]);
const REMOTE_MAC: MacAddr = MacAddr([0x02, 0, 0, 0, 0xfa, 0x02]);
const VROUTER_MAC: [u8; 6] = [0x00, 0x00, 0x5e, 0x00, 0x01, 0x00];

fn vrouterd_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_vrouterd"))
}

#[test]
fn a_trace_shows_routed_tunnelled_and_dropped_packets() {
    let node = Netns::new("trc");
    let remote = Netns::new("trcr");
    node.veth("fab0", "fab0", Some(&remote));
    let vr = Vrouterd::start_netns(
        Some(&node),
        &vrouterd_bin(),
        &[
            "--idle-sleep-us",
            "20",
            "--fabric",
            "net_af_packet0,iface=fab0",
            "--fabric-ip",
            "198.19.0.1",
            "--fabric-mac",
            &FABRIC_MAC.to_string(),
        ],
        &[],
    );
    // Room for a tunnel's 50 bytes in the fabric's 1500.
    let socks = vr.vhost_pods(
        &[
            (1, "podA", MAC_A, "198.18.1.2/32"),
            (2, "podB", MAC_B, "198.18.2.2/32"),
        ],
        |v| v.mtu = Some(1400),
    );
    // 198.18.7.0/24 lives on another node, over VXLAN VNI 5000.
    vr.set_nexthop(
        3,
        Nexthop::Tunnel {
            encap: TunnelEncap::Vxlan,
            vif: "fabric0".into(),
            sip: "198.19.0.1".parse().unwrap(),
            dip: "198.19.0.2".parse().unwrap(),
            dmac: Some(REMOTE_MAC),
            label: None,
        },
    );
    let remote_route = Route {
        prefix: "198.18.7.0/24".parse().unwrap(),
        nexthop: 3,
        label: Some(5000),
    };
    vr.api(|c| async move { c.route_set(1, &remote_route).await })
        .expect("remote route");
    let mut a = FrontendPod::connect(&socks[0], Memory::Memfd).expect("pod A");
    let _b = FrontendPod::connect(&socks[1], Memory::Memfd).expect("pod B");
    for n in ["podA", "podB"] {
        vr.wait_connected(n);
    }

    let routed = udp_frame(MAC_A.0, VROUTER_MAC, [198, 18, 1, 2], [198, 18, 2, 2]);
    let tunnelled = udp_frame(MAC_A.0, VROUTER_MAC, [198, 18, 1, 2], [198, 18, 7, 7]);
    let nowhere = udp_frame(MAC_A.0, VROUTER_MAC, [198, 18, 1, 2], [203, 0, 113, 9]);

    // Through the API: three packets, then the trace has ended by itself.
    vr.api(|c| async move { c.trace_start("podA", 3).await })
        .expect("trace started");
    for f in [&routed, &tunnelled, &nowhere, &routed] {
        assert_eq!(a.send(f, 1), 1);
    }
    let mut packets = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(20);
    while packets.len() < 3 && Instant::now() < deadline {
        let r = vr
            .api(|c| async move { c.trace_read("podA").await })
            .expect("trace read");
        packets.extend(r.packets);
        std::thread::sleep(Duration::from_millis(50));
    }
    let r = vr
        .api(|c| async move { c.trace_read("podA").await })
        .expect("trace read");
    assert!(
        !r.running && r.packets.is_empty(),
        "three, then it stops: {r:?}"
    );
    eprintln!("{packets:#?}");
    assert_eq!(packets.len(), 3);
    let (p1, p2, p3) = (&packets[0], &packets[1], &packets[2]);
    assert_eq!((p1.vrf, p1.length), (1, routed.len() as u32));
    assert!(
        p1.received
            .contains("198.18.1.2:40000 > 198.18.2.2:40001 udp ttl 64"),
        "{p1:?}"
    );
    assert_eq!(
        (p1.verdict.as_str(), p1.out_vif.as_deref()),
        ("sent", Some("podB"))
    );
    let sent = p1.sent.as_deref().unwrap_or_default();
    assert!(
        sent.starts_with(&format!("{MAC_B} > 00:00:5e:00:01:00, "))
            && sent.contains("198.18.2.2:40001 udp ttl 63"),
        "routed: pod B's MAC, TTL one less: {p1:?}"
    );
    assert_eq!(p2.out_vif.as_deref(), Some("fabric0"));
    let sent = p2.sent.as_deref().unwrap_or_default();
    assert!(
        sent.starts_with("vxlan vni 5000 198.19.0.1 > 198.19.0.2, inner ")
            && sent.contains("198.18.1.2:40000 > 198.18.7.7:40001 udp ttl 63"),
        "tunnelled: the outer headers, then the inner packet: {p2:?}"
    );
    assert_eq!(
        (
            p3.verdict.as_str(),
            p3.drop_reason.as_deref(),
            p3.sent.as_deref()
        ),
        ("dropped", Some("no_route"), None)
    );

    // Through vrouterctl, as an operator runs it: it waits for the packet, then shows it.
    let ctl = Command::new(testkit::vrouterd::vrouterctl_bin(&vrouterd_bin()))
        .arg("--socket")
        .arg(vr.control_socket())
        .args(["trace", "--vif", "podA", "--count", "1", "--timeout", "30"])
        .stdout(Stdio::piped())
        .spawn()
        .expect("vrouterctl");
    let pid = ctl.id();
    let start = Instant::now();
    // Until vrouterctl has armed the trace and seen a packet (it exits then).
    while std::path::Path::new(&format!("/proc/{pid}/stat")).exists()
        && start.elapsed() < Duration::from_secs(30)
    {
        a.send(&nowhere, 1);
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        if stat.contains(") Z") {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let out = ctl.wait_with_output().expect("vrouterctl");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    assert!(
        text.starts_with("#1 vrf 1 60 bytes")
            && text.contains("203.0.113.9:40001 udp ttl 64")
            && text.contains("then dropped: no_route"),
        "{text}"
    );
}
