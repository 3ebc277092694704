//! Packed virtqueues (`VIRTIO_F_RING_PACKED`) end to end: DPDK testpmd pods with
//! `packed_vq=1` on MTU 9000 vifs in both vhost-user modes, 9014-byte frames (IP packets of
//! 9000 bytes) received into mergeable buffers, routed through vrouterd with the counters at
//! both pods and at GET /vifs agreeing exactly: a virtio-user client sending to a virtio-user
//! server, then a server sending to a client.

use std::path::{Path, PathBuf};

use control_api::api::{MacAddr, VhostUserMode};
use testkit::testpmd::{TestpmdConfig, TestpmdPod};
use testkit::traffic;
use testkit::vrouterd::{vhost_user_vif as vhost_vif, Vrouterd};

const RING_PACKED: u64 = 1 << 34;
const MRG_RXBUF: u64 = 1 << 15;
/// Ethernet frame of an IP packet as large as MTU 9000 allows.
const FRAME: u64 = 9014;

fn vrouterd_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_vrouterd"))
}

/// Both ends take MTU 9000 (`--max-pkt-len` is MTU + 18): frames up to 9014 bytes.
fn jumbo(cfg: TestpmdConfig) -> TestpmdConfig {
    let mut cfg = cfg.packed();
    cfg.extra_app_args.push(String::from("--max-pkt-len=9018"));
    cfg
}

/// txonly with 9014-byte frames, one mbuf each (`--mbuf-size`), `src` → `dst`.
fn sender(socket: &Path, server: bool, src: &str, dst: &str) -> TestpmdPod {
    let mut cfg = jumbo(TestpmdConfig {
        server,
        memory_mb: 160,
        ..TestpmdConfig::sender(socket, src, dst)
    });
    cfg.extra_app_args.extend([
        String::from("--mbuf-size=9300"),
        String::from("--total-num-mbufs=4096"),
        format!("--txpkts={FRAME}"),
    ]);
    cfg.start()
}

/// rxonly into 2 KiB mbufs: the PMD joins mergeable buffers into mbuf chains (scatter).
fn receiver(socket: &Path, server: bool) -> TestpmdPod {
    let mut cfg = jumbo(TestpmdConfig {
        server,
        ..TestpmdConfig::receiver(socket)
    });
    cfg.extra_app_args.push(String::from("--enable-scatter"));
    cfg.start()
}

fn assert_packed(vr: &Vrouterd, name: &str) {
    let f = vr.vif(name).status.features.expect("negotiated features");
    assert_ne!(f & RING_PACKED, 0, "{name} negotiated packed rings: {f:#x}");
    assert_ne!(
        f & MRG_RXBUF,
        0,
        "{name} negotiated mergeable buffers: {f:#x}"
    );
}

/// One pod sends jumbo frames to another through vrouterd; every counter agrees.
fn jumbo_round(vr: &Vrouterd, from: (&str, &Path, bool, &str), to: (&str, &Path, bool, &str)) {
    let (from_vif, from_sock, from_server, src) = from;
    let (to_vif, to_sock, to_server, dst) = to;
    let mut rx = receiver(to_sock, to_server);
    vr.wait_connected(to_vif);
    let mut tx = sender(from_sock, from_server, src, dst);
    vr.wait_connected(from_vif);
    assert_packed(vr, from_vif);
    assert_packed(vr, to_vif);
    vr.wait_until(
        "jumbo frames cross",
        || {
            (
                vr.vif(from_vif).status.counters,
                vr.vif(to_vif).status.counters,
            )
        },
        |(a, b)| a.rx_packets > 2_000 && b.tx_packets > 1_000,
    );
    let t = traffic::finish(vr, &mut tx, from_vif, &mut rx, to_vif);
    assert!(t.sent.tx_packets > 2_000, "the sender sent: {:?}", t.sent);
    assert!(
        t.got.rx_packets > 1_000,
        "the receiver received: {:?}",
        t.got
    );
    t.assert_exact();
    assert_eq!(
        t.from.rx_bytes,
        t.from.rx_packets * FRAME,
        "every frame 9014 bytes: {:?}",
        t.from
    );
    assert_eq!(
        t.to.tx_bytes,
        t.to.tx_packets * FRAME,
        "and sent on whole: {:?}",
        t.to
    );
    for n in [from_vif, to_vif] {
        assert_eq!(vr.vif(n).status.broken, None, "{n}'s rings are intact");
    }
}

#[test]
fn packed_ring_testpmd_pods_in_both_modes_carry_jumbo_frames_with_exact_counters() {
    let vr = Vrouterd::start(&vrouterd_bin(), &[], &[]);
    let base = vr.socket_base();
    vr.api(|c| async move { c.vrf_add(1).await })
        .expect("vrf 1");
    // Server-mode vifs serve virtio-user clients; client-mode vifs connect to virtio-user
    // servers. Fresh vifs per round: their counters are the round's.
    let pods = [
        ("podA", 1, "198.18.1.2", VhostUserMode::Server),
        ("podB", 2, "198.18.2.2", VhostUserMode::Client),
        ("podC", 3, "198.18.3.2", VhostUserMode::Client),
        ("podD", 4, "198.18.4.2", VhostUserMode::Server),
    ];
    let mut socks = Vec::new();
    for (name, id, ip, mode) in pods {
        let mac = MacAddr([0x02, 0, 0, 0, id as u8, 0x01]);
        let dir = base.join(format!("pod-uid-{id}"));
        let file = format!("{name}-net1");
        let mut v = vhost_vif(name, mac, &dir, &file, mode);
        v.mtu = Some(9000);
        vr.add_vif(&v);
        vr.route_to(id, name, mac, &[&format!("{ip}/32")]);
        socks.push(dir.join(file));
    }
    let server = |m| m == VhostUserMode::Client; // the pod serves when its vif is a client
    let end = |k: usize| {
        let (name, _, ip, mode) = pods[k];
        (name, socks[k].as_path(), server(mode), ip)
    };
    // Round 1: a virtio-user client sends to a virtio-user server.
    jumbo_round(&vr, end(0), end(1));
    // Round 2: a virtio-user server sends to a virtio-user client.
    jumbo_round(&vr, end(2), end(3));
    let status = vr.stop();
    assert!(status.success(), "vrouterd exit {status}");
}
