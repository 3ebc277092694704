//! Port mirroring through the real vrouterd: copies of a pod's packets reach an analyzer pod
//! byte for byte — as received (ingress) or as sent to the pod (egress, after the rewrite) —
//! with the filter and the cut length honoured; an analyzer that never reads loses copies
//! (counted) and never a packet of the mirrored traffic; the per-lcore sums still balance.

use std::path::PathBuf;
use std::time::Duration;

use control_api::api::{MacAddr, Mirror, VhostUserMode};
use testkit::frontend_pod::{udp_frame, FrontendPod, Memory};
use testkit::vrouterd::{vhost_user_vif as vhost_vif, Vrouterd};

const MAC: [MacAddr; 4] = [
    MacAddr([0x02, 0, 0, 0, 0x0a, 0x01]),
    MacAddr([0x02, 0, 0, 0, 0x0b, 0x01]),
    MacAddr([0x02, 0, 0, 0, 0x0c, 0x01]),
    MacAddr([0x02, 0, 0, 0, 0x0d, 0x01]),
];
const VROUTER_MAC: [u8; 6] = [0x00, 0x00, 0x5e, 0x00, 0x01, 0x00];
/// RX buffers a frontend pod posts: what the analyzer that never reads holds.
const RING: u64 = 256;

fn vrouterd_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_vrouterd"))
}

fn mirror(json: &str) -> Mirror {
    serde_json::from_str(json).expect("mirror")
}

/// Posts `n` copies of `frame` on `p`, draining `sink` meanwhile; returns what `sink` got.
fn send(p: &mut FrontendPod, frame: &[u8], n: usize, sink: &mut FrontendPod) -> Vec<Vec<u8>> {
    let mut got = Vec::new();
    let mut left = n;
    while left > 0 {
        left -= p.send(frame, left);
        got.extend(sink.receive());
    }
    got
}

/// Frames `pod` receives until `n` arrived or a few seconds pass.
fn receive(pod: &mut FrontendPod, n: usize, mut got: Vec<Vec<u8>>) -> Vec<Vec<u8>> {
    let _ = testkit::wait::poll(
        Duration::from_secs(10),
        || {
            got.extend(pod.receive());
            got.len()
        },
        |&len| len >= n,
    );
    std::thread::sleep(Duration::from_millis(100));
    got.extend(pod.receive());
    got
}

#[test]
fn an_analyzer_pod_sees_exactly_the_mirrored_packets() {
    let vr = Vrouterd::start(&vrouterd_bin(), &["--idle-sleep-us", "20"], &[]);
    let base = vr.socket_base();
    vr.api(|c| async move { c.vrf_add(1).await })
        .expect("vrf 1");
    let names = ["podA", "podB", "analyzer", "deaf"];
    let mut socks = Vec::new();
    for (i, name) in names.iter().enumerate() {
        let dir = base.join(name);
        vr.add_vif(&vhost_vif(
            name,
            MAC[i],
            &dir,
            "net0",
            VhostUserMode::Server,
        ));
        let prefix = format!("198.18.{}.2/32", i + 1);
        vr.route_to(i as u32 + 1, name, MAC[i], &[&prefix]);
        socks.push(dir.join("net0"));
    }
    let mut a = FrontendPod::connect(&socks[0], Memory::Memfd).expect("pod A");
    let mut b = FrontendPod::connect(&socks[1], Memory::Memfd).expect("pod B");
    let mut c = FrontendPod::connect(&socks[2], Memory::Memfd).expect("analyzer");
    let _deaf = FrontendPod::connect(&socks[3], Memory::Memfd).expect("deaf analyzer");
    for n in names {
        vr.wait_connected(n);
    }
    let to_b = udp_frame(MAC[0].0, VROUTER_MAC, [198, 18, 1, 2], [198, 18, 2, 2]);

    // Ingress of A, whole: what A sent, byte for byte.
    let m = mirror(r#"{"to":"analyzer","direction":"ingress"}"#);
    vr.api(|cl| async move { cl.mirror_set("podA", &m).await })
        .expect("mirror");
    // No chains: an analyzer is not mirrored, a mirrored vif is no analyzer.
    for (from, json) in [
        ("analyzer", r#"{"to":"podB"}"#),
        ("podB", r#"{"to":"podA"}"#),
    ] {
        let m = mirror(json);
        let err = vr
            .api(|cl| async move { cl.mirror_set(from, &m).await })
            .expect_err("a chain");
        assert!(err.to_string().contains("409"), "{from}: {err}");
    }
    let got_b = send(&mut a, &to_b, 50, &mut b);
    let got_b = receive(&mut b, 50, got_b);
    assert_eq!(got_b.len(), 50, "the mirrored traffic goes on");
    let copies = receive(&mut c, 50, Vec::new());
    assert_eq!(copies.len(), 50);
    assert!(copies.iter().all(|f| f == &to_b), "copies of what A sent");

    // Egress of B, cut to 64 bytes, only UDP to port 40001: what B was sent, after the rewrite.
    let big = {
        let mut f = Vec::new();
        etherparse::PacketBuilder::ethernet2(MAC[0].0, VROUTER_MAC)
            .ipv4([198, 18, 1, 2], [198, 18, 2, 2], 64)
            .udp(40000, 40001)
            .write(&mut f, &[7u8; 400])
            .unwrap();
        f
    };
    let m = mirror(
        r#"{"to":"analyzer","direction":"egress","snaplen":64,"filter":{"proto":"udp","ports":"40001"}}"#,
    );
    vr.api(|cl| async move { cl.mirror_del("podA").await })
        .expect("mirror of A removed");
    vr.api(|cl| async move { cl.mirror_set("podB", &m).await })
        .expect("mirror");
    let mut other_port = big.clone();
    other_port[36..38].copy_from_slice(&9999u16.to_be_bytes());
    other_port[40..42].copy_from_slice(&[0, 0]);
    let mut got_b = send(&mut a, &big, 20, &mut b);
    got_b.extend(send(&mut a, &other_port, 10, &mut b));
    let got_b = receive(&mut b, 30, got_b);
    assert_eq!(got_b.len(), 30);
    let copies = receive(&mut c, 20, Vec::new());
    assert_eq!(copies.len(), 20, "only the filter's packets");
    let sent_to_b = got_b
        .iter()
        .find(|f| f[36..38] == 40001u16.to_be_bytes())
        .expect("a frame to port 40001");
    for f in &copies {
        assert_eq!(f.len(), 64, "cut to the snaplen");
        assert_eq!(
            &f[..],
            &sent_to_b[..64],
            "B's frame as sent: its MAC, TTL 63"
        );
    }
    let info = vr
        .api(|cl| async move { cl.mirror("podB").await })
        .expect("mirror info");
    assert_eq!((info.copies, info.copy_failures), (20, 0));
    let metrics = vr
        .api(|cl| async move { cl.metrics().await })
        .expect("metrics");
    assert!(
        metrics
            .lines()
            .any(|l| l == "vrouter_mirror_copies_total{vif=\"podB\"} 20"),
        "the copies in /metrics"
    );

    // An analyzer that never reads: copies beyond its ring are dropped, counted on it, and
    // every packet of the mirrored pod still arrives.
    let m = mirror(r#"{"to":"deaf","direction":"ingress"}"#);
    vr.api(|cl| async move { cl.mirror_del("podB").await })
        .expect("mirror of B removed");
    vr.api(|cl| async move { cl.mirror_set("podA", &m).await })
        .expect("mirror");
    let deaf0 = vr.vif("deaf").status.counters;
    // In rounds B's ring always has room for (a slow test process must not lose B's packets
    // to its own ring: that would be B's drop, not the mirror's).
    let mut got_b = Vec::new();
    for round in 1..=20 {
        got_b = send(&mut a, &to_b, 50, &mut b)
            .into_iter()
            .chain(got_b)
            .collect();
        got_b = receive(&mut b, 50 * round, got_b);
    }
    let drops = vr
        .api(|cl| async move { cl.dropstats().await })
        .expect("drops");
    assert_eq!(
        got_b.len(),
        1000,
        "mirroring never holds the traffic back: {:?} B {:?}",
        drops
            .reasons
            .iter()
            .filter(|(_, n)| **n > 0)
            .collect::<Vec<_>>(),
        vr.vif("podB").status.counters
    );
    // Every copy wanted was made (then sent or refused) or, while the analyzer's queue was
    // full, skipped without being made.
    let info = || {
        vr.api(|cl| async move { cl.mirror("podA").await })
            .expect("mirror info")
    };
    let wanted = |i: &control_api::api::MirrorInfo| i.copies + i.copy_failures + i.copies_skipped;
    let mut m = info();
    for _ in 0..100 {
        if wanted(&m) >= 1000 {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
        m = info();
    }
    assert_eq!(wanted(&m), 1000, "{m:?}");
    assert_eq!(m.copy_failures, 0, "{m:?}");
    let deaf = vr.wait_vif("deaf", "every copy made sent or refused", |v| {
        v.status.counters.tx_packets + v.status.counters.drops
            >= deaf0.tx_packets + deaf0.drops + m.copies
    });
    let d = deaf.status.counters;
    assert_eq!(
        d.tx_packets - deaf0.tx_packets,
        RING,
        "the deaf analyzer's ring"
    );
    assert_eq!(
        d.drops - deaf0.drops,
        m.copies - RING,
        "copies made past its ring counted as its drops"
    );
    assert!(
        m.copies_skipped >= 500,
        "a full analyzer makes the mirror back off, not copy for nothing: {m:?}"
    );
    let drops = vr
        .api(|cl| async move { cl.dropstats().await })
        .expect("drops");
    assert_eq!(drops.reasons["tx_queue_full"], m.copies - RING);

    // Copies are packets vrouterd made: the per-lcore sums still balance.
    let stats = vr.api(|cl| async move { cl.stats().await }).expect("stats");
    for l in &stats.lcores {
        assert_eq!(
            l.rx_packets + l.taken_from_lcores + l.packets_made,
            l.tx_packets + l.queued_to_lcores + l.drops,
            "{l:?}"
        );
    }

    // Stopped: no more copies.
    vr.api(|cl| async move { cl.mirror_del("podA").await })
        .expect("mirror removed");
    let got_b = send(&mut a, &to_b, 10, &mut b);
    assert_eq!(receive(&mut b, 10, got_b).len(), 10);
    assert!(c.receive().is_empty(), "no copy after the mirror is gone");
    let err = vr
        .api(|cl| async move { cl.mirror("podA").await })
        .expect_err("no mirror");
    assert!(
        err.to_string().contains("404") || err.to_string().contains("mirror"),
        "{err}"
    );
}

/// Copies to a remote collector go over the fabric in VXLAN, the original frame inside: tshark
/// on the collector's side of the fabric dissects the VNI that names the mirror and the pod's
/// own packet.
#[test]
fn a_remote_collector_gets_copies_in_vxlan_over_the_fabric() {
    use testkit::netns::{Netns, PcapFile};
    let node = Netns::new("mir");
    let collector = Netns::new("mirc");
    node.veth("fab0", "fab0", Some(&collector));
    let collector_mac = collector.exec(&["cat", "/sys/class/net/fab0/address"]);
    let vr = Vrouterd::start_netns(
        Some(&node),
        &vrouterd_bin(),
        &[
            "--idle-sleep-us",
            "20",
            "--fabric",
            "kernel:fab0",
            "--fabric-ip",
            "198.19.0.1",
        ],
        &[],
    );
    let base = vr.socket_base();
    vr.api(|c| async move { c.vrf_add(1).await })
        .expect("vrf 1");
    let mut socks = Vec::new();
    for (i, name) in ["podA", "podB"].iter().enumerate() {
        let dir = base.join(name);
        let mut v = vhost_vif(name, MAC[i], &dir, "net0", VhostUserMode::Server);
        v.mtu = Some(1400);
        vr.add_vif(&v);
        let prefix = format!("198.18.{}.2/32", i + 1);
        vr.route_to(i as u32 + 1, name, MAC[i], &[&prefix]);
        socks.push(dir.join("net0"));
    }
    let mut a = FrontendPod::connect(&socks[0], Memory::Memfd).expect("pod A");
    let mut b = FrontendPod::connect(&socks[1], Memory::Memfd).expect("pod B");
    for n in ["podA", "podB"] {
        vr.wait_connected(n);
    }
    let m = mirror(&format!(
        r#"{{"direction":"ingress","collector":{{"address":"198.19.0.2","vni":777,"mac":"{}"}}}}"#,
        collector_mac.trim()
    ));
    vr.api(|cl| async move { cl.mirror_set("podA", &m).await })
        .expect("mirror to the collector");
    let cap = collector.capture("fab0", "udp port 4789", 5);
    let to_b = udp_frame(MAC[0].0, VROUTER_MAC, [198, 18, 1, 2], [198, 18, 2, 2]);
    let got_b = send(&mut a, &to_b, 5, &mut b);
    assert_eq!(receive(&mut b, 5, got_b).len(), 5);
    let frames = cap.frames(Duration::from_secs(10));
    assert_eq!(frames.len(), 5, "one copy each");
    for f in &frames {
        assert_eq!(&f[..6], collector_mac_bytes(&collector_mac).as_slice());
        assert_eq!(
            &f[50..],
            &to_b[..],
            "the original frame inside, byte for byte"
        );
    }
    let pcap = PcapFile::write(&frames).expect("pcap");
    let out = std::process::Command::new("tshark")
        .args(["-r", pcap.path.to_str().unwrap(), "-T", "fields"])
        .args([
            "-e",
            "vxlan.vni",
            "-e",
            "ip.src",
            "-e",
            "ip.dst",
            "-e",
            "udp.dstport",
        ])
        .output()
        .expect("tshark");
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(text.lines().count(), 5, "{text}");
    for line in text.lines() {
        assert_eq!(
            line.split('\t').collect::<Vec<_>>(),
            [
                "777",
                "198.19.0.1,198.18.1.2",
                "198.19.0.2,198.18.2.2",
                "4789,40001"
            ],
            "{text}"
        );
    }
}

fn collector_mac_bytes(text: &str) -> Vec<u8> {
    text.trim()
        .split(':')
        .map(|h| u8::from_str_radix(h, 16).expect("hex"))
        .collect()
}
