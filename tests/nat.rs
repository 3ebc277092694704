//! Source NAT through the real vrouterd: a kernel pod (veth, default offloads on) in VRF 1
//! reaches a "remote" namespace on the fabric side (an af-packet vif in VRF 0) behind a pool of
//! one address and four ports. The remote sees only the pool address (tcpdump there), a TCP
//! transfer and pings go through both ways intact (the remote's kernel checks every checksum),
//! the flows are listed with both tuples, an ICMP error from the remote reaches the pod's
//! socket, and flows beyond the pool's four are counted drops, not a crash.

use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::time::Duration;

use control_api::api::{FlowQuery, MacAddr, NatPool, NatPorts, VifRequest, VifType};
use testkit::kernel_pod::{route_in_vrf1, KernelPod};
use testkit::netns::Netns;
use testkit::vrouterd::Vrouterd;

const POOL: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 64);
const REMOTE: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 10);
const REMOTE_GW: &str = "203.0.113.1";
const NH_UPLINK: u32 = 10;

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

#[test]
fn a_pod_behind_source_nat_reaches_a_remote_that_sees_only_the_pool() {
    let node = Netns::new("natnode");
    let pod = KernelPod::attached_to(Some(&node), "np", 1, 1500);
    // The remote: a namespace on the fabric side, 203.0.113.10/24, reaching the pool through
    // the vrouter (its MAC, statically: vrouterd answers ARP on the fabric only for its own
    // fabric address).
    let remote = KernelPod::attached_to(Some(&node), "nr", 3, 1500);
    remote.ns.ip(&["addr", "flush", "dev", "eth0"]);
    remote
        .ns
        .ip(&["addr", "add", &format!("{REMOTE}/24"), "dev", "eth0"]);
    remote.ns.ip(&[
        "neigh",
        "replace",
        REMOTE_GW,
        "lladdr",
        "00:00:5e:00:01:00",
        "dev",
        "eth0",
        "nud",
        "permanent",
    ]);
    remote
        .ns
        .ip(&["route", "replace", "default", "via", REMOTE_GW]);

    let vr = Vrouterd::start_netns(
        Some(&node),
        &vrouterd_bin(),
        &["--idle-sleep-us", "20", "--flow-entries", "4096"],
        &[],
    );
    route_in_vrf1(&vr, &[("pod", &pod)]);
    let mut uplink = VifRequest::new("uplink", VifType::AfPacket, 0, MacAddr(remote.mac));
    uplink.iface = Some(remote.host_side.clone());
    vr.add_vif(&uplink);
    vr.route_to(
        NH_UPLINK,
        "uplink",
        MacAddr(remote.mac),
        &["203.0.113.0/24"],
    );
    let pool = NatPool {
        vrf: 0,
        first: POOL,
        last: POOL,
        ports: NatPorts {
            first: 40000,
            last: 40003,
        },
    };
    vr.api(|c| async move { c.nat_pool_set("egress", &pool).await })
        .expect("pool");
    vr.api(|c| async move { c.snat_set(1, "egress").await })
        .expect("attach");

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
