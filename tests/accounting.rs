//! Every packet vrouterd receives is accounted for exactly once: sent (counted by the lcore
//! whose queue took it, bytes included), or dropped under the reason it should be, against the
//! vif it came in on or was refused by. A known mix goes through real ports (vhost-user pods
//! played by the in-repo frontend, a fabric on vrouterd's own kernel port on a veth): good frames, a
//! receiver that takes nothing (its RX ring fills), malformed and unroutable frames, frames too
//! big for a guest's buffers, hostile virtqueue chains, and the fabric frames that once left no
//! trace. The counters must match the mix exactly and balance per lcore.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use control_api::api::{DropStats, MacAddr, Stats, VifCounters};
use etherparse::PacketBuilder;
use testkit::frontend_pod::{udp_frame, FrontendPod, Memory};
use testkit::netns::Netns;
use testkit::vrouterd::Vrouterd;
use vhost_user::session::OFFERED_FEATURES;
use vhost_user::NetHdr;

const MAC_A: MacAddr = MacAddr([0x02, 0, 0, 0, 0x0a, 0x01]);
const MAC_B: MacAddr = MacAddr([0x02, 0, 0, 0, 0x0b, 0x01]);
const MAC_C: MacAddr = MacAddr([0x02, 0, 0, 0, 0x0c, 0x01]);
const MAC_D: MacAddr = MacAddr([0x02, 0, 0, 0, 0x0d, 0x01]);
const FABRIC_MAC: MacAddr = MacAddr([0x02, 0, 0, 0, 0xfa, 0x01]);
const VROUTER_MAC: [u8; 6] = [0x00, 0x00, 0x5e, 0x00, 0x01, 0x00];
/// VIRTIO_NET_F_MRG_RXBUF: pod D goes without, so a frame longer than one of its 2 KB
/// buffers cannot be delivered.
const MRG_RXBUF: u64 = 1 << 15;
/// RX buffers a frontend pod posts (its ring size): what pod C, which never takes, holds.
const RING: u64 = 256;

fn vrouterd_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_vrouterd"))
}

/// The mix, as counts per kind.
const GOOD_TO_B: u64 = 100;
const TO_C: u64 = 400;
const BAD_CHECKSUM: u64 = 10;
const NO_ROUTE: u64 = 5;

#[test]
fn every_packet_is_received_once_and_sent_or_dropped_under_its_reason() {
    let node = Netns::new("acct");
    let remote = Netns::new("acctr");
    node.veth("fab0", "fab0", Some(&remote));
    // A jumbo fabric on vrouterd's own kernel port, so pods up to MTU 9000 fit a tunnel.
    for ns in [&node, &remote] {
        ns.ip(&["link", "set", "fab0", "mtu", "9050"]);
    }
    // A quiet fabric: with IPv6 off on both ends no router solicitation or duplicate-address
    // probe reaches vrouterd, so the only fabric frames are the test's and counts are exact.
    for ns in [&node, &remote] {
        ns.exec(&["sysctl", "-qw", "net.ipv6.conf.fab0.disable_ipv6=1"]);
    }
    let vr = Vrouterd::start_netns(
        Some(&node),
        &vrouterd_bin(),
        &[
            "--idle-sleep-us",
            "20",
            "--fabric",
            "kernel:fab0",
            "--fabric-mtu",
            "9050",
            "--fabric-ip",
            "198.19.0.1",
            "--fabric-mac",
            &FABRIC_MAC.to_string(),
        ],
        &[],
    );
    // Pods A and D take jumbo frames, B and C 1500 bytes.
    let socks = vr.vhost_pods(
        &[
            (1, "podA", MAC_A, "198.18.1.2/32"),
            (2, "podB", MAC_B, "198.18.2.2/32"),
            (3, "podC", MAC_C, "198.18.3.2/32"),
            (4, "podD", MAC_D, "198.18.4.2/32"),
        ],
        |v| {
            v.mtu = Some(if ["podA", "podD"].contains(&v.name.as_str()) {
                9000
            } else {
                1500
            })
        },
    );
    let mut a = FrontendPod::connect(&socks[0], Memory::Memfd).expect("pod A");
    let mut b = FrontendPod::connect(&socks[1], Memory::Memfd).expect("pod B");
    // C posts its RX buffers once and never takes a packet: after RING its queue is full.
    let _c = FrontendPod::connect(&socks[2], Memory::Memfd).expect("pod C");
    let mut d = FrontendPod::connect_with(&socks[3], Memory::Memfd, OFFERED_FEATURES & !MRG_RXBUF)
        .expect("pod D");
    for n in ["podA", "podB", "podC", "podD"] {
        vr.wait_connected(n);
    }
    let stats0 = vr.api(|c| async move { c.stats().await }).expect("stats");
    let drops0 = vr
        .api(|c| async move { c.dropstats().await })
        .expect("dropstats");

    // From pod A, one kind at a time.
    let good = udp_frame(MAC_A.0, VROUTER_MAC, [198, 18, 1, 2], [198, 18, 2, 2]);
    send_all(&mut a, &good, GOOD_TO_B);
    let to_c = udp_frame(MAC_A.0, VROUTER_MAC, [198, 18, 1, 2], [198, 18, 3, 2]);
    send_all(&mut a, &to_c, TO_C);
    let mut bad_sum = good.clone();
    bad_sum[24] ^= 0xff; // the IPv4 header checksum
    send_all(&mut a, &bad_sum, BAD_CHECKSUM);
    let unroutable = udp_frame(MAC_A.0, VROUTER_MAC, [198, 18, 1, 2], [198, 18, 9, 9]);
    send_all(&mut a, &unroutable, NO_ROUTE);
    // 3,000 bytes to D, whose MTU allows it but whose 2 KB buffers cannot take it.
    let big = udp_len(MAC_A.0, [198, 18, 1, 2], [198, 18, 4, 2], 3000);
    send_all(&mut a, &big, 1);
    // 1,600 bytes with DF to B (MTU 1500): an ICMP fragmentation-needed goes back to A.
    let mut too_big = udp_len(MAC_A.0, [198, 18, 1, 2], [198, 18, 2, 2], 1600);
    set_df(&mut too_big);
    send_all(&mut a, &too_big, 1);
    // A chain shorter than the virtio-net header, and an offload header that points past the
    // frame (a partial checksum at offset 60 of a 64-byte frame).
    post(&mut a, "the short chain", |p| {
        p.send_with_hdr_bytes(&[0u8; 4], &[])
    });
    let beyond = NetHdr::from_bytes(&[1, 0, 0, 0, 0, 0, 60, 0, 6, 0]);
    post(&mut a, "the bad offload header", |p| {
        p.send_with_hdr(beyond, &good)
    });
    let from_a = GOOD_TO_B + TO_C + BAD_CHECKSUM + NO_ROUTE + 4;

    // From the fabric, the frames that once left no trace. A 10-byte runt never leaves the
    // sender: the kernel refuses a frame shorter than an Ethernet header at send (EINVAL from
    // the packet socket, `dev_validate_header`), and a NIC drops runts in hardware; vrouterd
    // cannot see one. The other three reach vrouterd, which hands them to the host — and with
    // no tap vif to take them they are counted `no_host_vif`.
    let runt = try_send_raw(&remote, "fab0", &[0xff; 10]);
    assert!(
        runt.contains("Invalid argument"),
        "the kernel refuses a 10-byte frame: {runt}"
    );
    let mut odd = vec![0xff; 6];
    odd.extend_from_slice(&[0x02, 0, 0, 0, 0xee, 1, 0x88, 0xb5]);
    odd.extend_from_slice(&[0u8; 46]);
    let mut stacked = FABRIC_MAC.0.to_vec();
    stacked.extend_from_slice(&[0x02, 0, 0, 0, 0xee, 1]);
    for vid in 1..=8u8 {
        stacked.extend_from_slice(&[0x81, 0x00, 0x00, vid]);
    }
    stacked.extend_from_slice(&good[12..]);
    let mut vxlan_elsewhere = Vec::new();
    PacketBuilder::ethernet2([0x02, 0, 0, 0, 0xee, 1], FABRIC_MAC.0)
        .ipv4([198, 19, 0, 2], [198, 19, 0, 99], 64)
        .udp(49152, 4789)
        .write(
            &mut vxlan_elsewhere,
            &[&[0x08, 0, 0, 0, 0, 0, 100, 0][..], &good].concat(),
        )
        .expect("vxlan frame");
    for f in [&odd, &stacked, &vxlan_elsewhere] {
        remote.send_raw("fab0", f);
    }

    // Wait for everything to be received, then for B to have taken what it was sent.
    vr.wait_until(
        "pod A's and the fabric's frames are all received",
        || {
            (
                vr.vif("podA").status.counters,
                vr.vif("fabric0").status.counters,
            )
        },
        |(a, f)| a.rx_packets >= from_a && f.rx_packets >= 3,
    );
    let mut got_b = Vec::new();
    let _ = testkit::wait::poll(
        Duration::from_secs(10),
        || {
            got_b.extend(b.receive());
            got_b.len() as u64
        },
        |&n| n >= GOOD_TO_B,
    );
    let got_a = a.receive();
    let got_d = d.receive();
    std::thread::sleep(Duration::from_millis(200));
    got_b.extend(b.receive());

    let stats = vr.api(|c| async move { c.stats().await }).expect("stats");
    let drops = vr
        .api(|c| async move { c.dropstats().await })
        .expect("dropstats");
    let vif = |n: &str| vr.vif(n).status.counters;
    let (va, vb, vc, vd, vf) = (
        vif("podA"),
        vif("podB"),
        vif("podC"),
        vif("podD"),
        vif("fabric0"),
    );
    eprintln!("{stats:#?}\n{drops:#?}\nA {va:?}\nB {vb:?}\nC {vc:?}\nD {vd:?}\nfabric {vf:?}");

    // Each drop under the reason it should be, and nothing else dropped.
    let delta = drop_delta(&drops0, &drops);
    let queued_at_c = TO_C - RING;
    let expected: BTreeMap<&str, u64> = [
        ("bad_checksum", BAD_CHECKSUM),
        ("no_route", NO_ROUTE),
        ("tx_queue_full", queued_at_c),
        ("mtu", 1),
        ("mtu_icmp_sent", 1),
        ("malformed", 1),
        ("offload", 1),
        ("no_host_vif", 3),
    ]
    .into_iter()
    .collect();
    assert_eq!(delta, expected, "drops by reason");
    assert_eq!(drops.total - drops0.total, expected.values().sum::<u64>());

    // Per vif: what each received, sent and dropped, bytes following packets.
    assert_eq!(
        got_b.len() as u64,
        GOOD_TO_B,
        "B got exactly the good frames"
    );
    assert!(
        got_b
            .iter()
            .all(|f| f.len() == good.len() && f[..6] == MAC_B.0 && f[22] == 63),
        "B's frames routed: its MAC, TTL one less"
    );
    assert_eq!(got_d.len(), 0, "nothing fits D's buffers");
    assert_eq!(got_a.len(), 1, "A got its ICMP error");
    let a_bytes = (GOOD_TO_B + BAD_CHECKSUM) * good.len() as u64
        + TO_C * to_c.len() as u64
        + NO_ROUTE * unroutable.len() as u64
        + (big.len() + too_big.len()) as u64;
    assert_eq!(
        (va.rx_packets, va.rx_bytes),
        (from_a, a_bytes),
        "A: every frame received; the two chains its queue refused counted without bytes \
         (the queue never copies them out)"
    );
    assert_eq!(
        (va.tx_packets, va.tx_bytes),
        (1, got_a[0].len() as u64),
        "A: the ICMP error sent"
    );
    assert_eq!(
        va.drops,
        BAD_CHECKSUM + NO_ROUTE + 2,
        "A: its own malformed traffic"
    );
    assert_eq!(
        vb,
        VifCounters {
            tx_packets: GOOD_TO_B,
            tx_bytes: GOOD_TO_B * good.len() as u64,
            ..VifCounters::default()
        },
        "B: what it got, nothing refused"
    );
    assert_eq!(
        (vc.tx_packets, vc.tx_bytes, vc.drops),
        (RING, RING * to_c.len() as u64, queued_at_c),
        "C: its ring's worth sent, the rest refused, bytes only of what was sent"
    );
    assert_eq!((vd.tx_packets, vd.tx_bytes, vd.drops), (0, 0, 1), "D");
    assert_eq!(
        (vf.rx_packets, vf.tx_packets, vf.drops),
        (3, 0, 3),
        "fabric"
    );

    // Per lcore and in total: received = sent + dropped (with what moved between lcores and
    // what vrouterd made).
    let moved = |s: &Stats| -> Vec<(u32, i128)> {
        s.lcores
            .iter()
            .map(|l| {
                let ins = l.rx_packets + l.taken_from_lcores + l.packets_made;
                let outs = l.tx_packets + l.queued_to_lcores + l.drops;
                (l.lcore, i128::from(ins) - i128::from(outs))
            })
            .collect()
    };
    assert!(
        moved(&stats).iter().all(|&(_, d)| d == 0),
        "every lcore balances: {:?}",
        moved(&stats)
    );
    assert_eq!(stats.rx_packets - stats0.rx_packets, from_a + 3);
    assert_eq!(
        stats.tx_packets - stats0.tx_packets,
        GOOD_TO_B + RING + 1,
        "sent: B's, C's ring, A's ICMP error"
    );
    assert_eq!(stats.drops - stats0.drops, drops.total - drops0.total);
}

/// Posts `n` copies of `frame` on pod `p`'s TX ring, waiting for room when it is full.
fn send_all(p: &mut FrontendPod, frame: &[u8], n: u64) {
    let mut left = n as usize;
    post(p, &format!("{n} frames"), |p| {
        left -= p.send(frame, left);
        left == 0
    });
}

/// Calls `send` on pod `p` until it says all is posted, waiting for room between calls: the
/// frames sent just before may still fill the TX ring (the lcore takes them at its own pace on
/// a loaded machine).
fn post(p: &mut FrontendPod, what: &str, mut send: impl FnMut(&mut FrontendPod) -> bool) {
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while !send(p) {
        assert!(
            std::time::Instant::now() < deadline,
            "{what} not posted: the TX ring stayed full"
        );
        std::thread::sleep(Duration::from_millis(2));
    }
}

/// A UDP frame from pod A to the vrouter MAC, `len` bytes long.
fn udp_len(src_mac: [u8; 6], src: [u8; 4], dst: [u8; 4], len: usize) -> Vec<u8> {
    let payload = vec![0x5a; len - 42];
    let mut f = Vec::new();
    PacketBuilder::ethernet2(src_mac, VROUTER_MAC)
        .ipv4(src, dst, 64)
        .udp(40000, 40001)
        .write(&mut f, &payload)
        .expect("frame");
    f
}

/// Sets DF on an Ethernet/IPv4 frame, fixing the header checksum.
fn set_df(f: &mut [u8]) {
    let mut h = etherparse::Ipv4HeaderSlice::from_slice(&f[14..])
        .expect("ipv4")
        .to_header();
    h.dont_fragment = true;
    h.header_checksum = h.calc_header_checksum();
    let mut out = Vec::new();
    h.write(&mut out).expect("header");
    f[14..14 + out.len()].copy_from_slice(&out);
}

/// Sends one raw frame out of `iface` in `ns`; the error the kernel gave, or "" when sent.
fn try_send_raw(ns: &Netns, iface: &str, frame: &[u8]) -> String {
    let hex: String = frame.iter().map(|b| format!("{b:02x}")).collect();
    let script = "import socket,sys\ns=socket.socket(socket.AF_PACKET,socket.SOCK_RAW)\ns.bind((sys.argv[1],0))\ntry:\n s.send(bytes.fromhex(sys.argv[2]))\nexcept OSError as e:\n print(e)\n";
    ns.exec(&["python3", "-c", script, iface, &hex])
}

/// How much each drop reason grew between two reads, the reasons that did not grow left out.
fn drop_delta<'a>(before: &DropStats, after: &'a DropStats) -> BTreeMap<&'a str, u64> {
    after
        .reasons
        .iter()
        .map(|(r, n)| (r.as_str(), n - before.reasons.get(r).copied().unwrap_or(0)))
        .filter(|&(_, n)| n > 0)
        .collect()
}
