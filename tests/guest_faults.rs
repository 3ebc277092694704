//! A pod that takes its shared memory away under vrouterd (truncates the file behind its memory
//! table mid-traffic) breaks only its own vif: vrouterd stays up, the vif and `/health` say why,
//! the other pods keep forwarding, and a fresh connection on the same socket works again.
//! The guilty pod is the in-repo frontend (memfd and hugetlbfs memory) or a real testpmd pod
//! whose hugepage file is truncated; the innocent ones are testpmd pods.

use std::path::{Path, PathBuf};

use control_api::api::{HealthStatus, MacAddr, VhostUserMode, VifRequest};
use testkit::frontend_pod::{udp_frame, FrontendPod, Memory};
use testkit::testpmd::{hugepage_files, TestpmdConfig, TestpmdPod};
use testkit::vrouterd::{connected, rx_packets, tx_packets, vhost_user_vif as vhost_vif, Vrouterd};

const MAC_A: MacAddr = MacAddr([0x02, 0, 0, 0, 0x0a, 0x01]);
const MAC_B: MacAddr = MacAddr([0x02, 0, 0, 0, 0x0b, 0x01]);
const MAC_G: MacAddr = MacAddr([0x02, 0, 0, 0, 0x0c, 0x01]);

fn vrouterd_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_vrouterd"))
}

/// vrouterd with three vhost-user vifs in VRF 1: podA (server mode) and podG (server mode, the
/// guilty one) send to podB (client mode, the sink).
struct Node {
    vr: Vrouterd,
    sock_a: PathBuf,
    sock_b: PathBuf,
    sock_g: PathBuf,
}

fn node() -> Node {
    let vr = Vrouterd::start(&vrouterd_bin(), &[], &[]);
    let base = vr.socket_base();
    let (dir_a, dir_b, dir_g) = (base.join("pod-a"), base.join("pod-b"), base.join("pod-g"));
    std::fs::create_dir(&dir_b).expect("pod-b dir");
    vr.api(|c| async move { c.vrf_add(1).await })
        .expect("vrf 1");
    let vifs: [VifRequest; 3] = [
        vhost_vif("podA", MAC_A, &dir_a, "net0", VhostUserMode::Server),
        vhost_vif("podB", MAC_B, &dir_b, "net0", VhostUserMode::Client),
        vhost_vif("podG", MAC_G, &dir_g, "net0", VhostUserMode::Server),
    ];
    for v in &vifs {
        vr.add_vif(v);
    }
    vr.route_to(1, "podB", MAC_B, &["198.18.2.2/32"]);
    vr.route_to(2, "podG", MAC_G, &["198.18.3.2/32"]);
    Node {
        vr,
        sock_a: dir_a.join("net0"),
        sock_b: dir_b.join("net0"),
        sock_g: dir_g.join("net0"),
    }
}

/// txonly to the vrouter MAC, `src` → 198.18.2.2 (the sink).
fn sender(socket: &Path, src: &str) -> TestpmdPod {
    TestpmdConfig::sender(socket, src, "198.18.2.2").start()
}

/// The sink: creates its socket itself (the vif is in client mode) and counts.
fn receiver(socket: &Path) -> TestpmdPod {
    TestpmdConfig::receiver(socket).as_server().start()
}

/// Starts the innocent pods and waits until A's traffic reaches B.
fn innocent_traffic(n: &Node) -> (TestpmdPod, TestpmdPod) {
    let b = receiver(&n.sock_b);
    n.vr.wait_vif("podB", "the sink connects", connected);
    let a = sender(&n.sock_a, "198.18.1.2");
    n.vr.wait_vif("podA", "the sender connects", connected);
    let b0 = tx_packets(&n.vr.vif("podB"));
    n.vr.wait_vif("podB", "A's traffic reaches B", |v| {
        tx_packets(v) >= b0 + 1000
    });
    (a, b)
}

/// podG's fault is reported on the vif and in /health; A keeps reaching B meanwhile.
fn fault_is_contained(n: &Node, what: &str) {
    let g = n.vr.wait_vif("podG", "podG reported broken", |v| {
        v.status
            .broken
            .as_deref()
            .is_some_and(|b| b.contains("memory fault"))
    });
    eprintln!("{what}: podG after the fault: {:?}", g.status);
    let h = n.vr.health();
    assert_eq!(h.status, HealthStatus::Degraded, "{what}: {h:?}");
    assert!(
        h.problems
            .iter()
            .any(|p| p.contains("podG") && p.contains("memory fault")),
        "{what}: /health names the vif and the fault: {:?}",
        h.problems
    );
    let (a0, b0) = (rx_packets(&n.vr.vif("podA")), tx_packets(&n.vr.vif("podB")));
    n.vr.wait_vif("podA", "A keeps sending", |v| rx_packets(v) >= a0 + 1000);
    n.vr.wait_vif("podB", "B keeps receiving", |v| tx_packets(v) >= b0 + 1000);
    let still = n.vr.vif("podG");
    assert!(
        still.status.broken.is_some(),
        "{what}: the reason stays until a new frontend connects: {:?}",
        still.status
    );
}

/// A fresh in-repo frontend on podG's socket carries traffic to B, and the fault is forgotten.
fn fresh_frontend_works(n: &Node, memory: Memory, what: &str) {
    let mut g = FrontendPod::connect(&n.sock_g, memory).expect("fresh frontend");
    let v =
        n.vr.wait_vif("podG", "the fresh frontend connects", connected);
    assert_eq!(v.status.broken, None, "{what}: the fault is forgotten");
    let frame = udp_frame(
        MAC_G.0,
        MacAddr::VROUTER_DEFAULT.0,
        [198, 18, 3, 2],
        [198, 18, 2, 2],
    );
    let (g0, b0) = (rx_packets(&v), tx_packets(&n.vr.vif("podB")));
    let mut sent = 0;
    let v = n.vr.wait_until(
        &format!("{what}: vrouterd takes podG's frames"),
        || {
            sent += g.send(&frame, 64);
            let v = n.vr.vif("podG");
            assert!(
                rx_packets(&v) >= g0 + 256 || sent < 100_000,
                "{what}: vrouterd never took podG's frames: {v:?}"
            );
            v
        },
        |v| rx_packets(v) >= g0 + 256,
    );
    assert!(connected(&v), "{what}: {v:?}");
    n.vr.wait_vif("podB", "B still receives", |v| tx_packets(v) > b0);
    let h = n.vr.health();
    assert!(
        !h.problems.iter().any(|p| p.contains("podG")),
        "{what}: /health no longer names podG: {:?}",
        h.problems
    );
}

fn in_repo_frontend_truncating_its_memory(memory: Memory) {
    let n = node();
    let (_a, _b) = innocent_traffic(&n);
    let mut g = FrontendPod::connect(&n.sock_g, memory).expect("guilty frontend");
    n.vr.wait_vif("podG", "podG connects", connected);
    let frame = udp_frame(
        MAC_G.0,
        MacAddr::VROUTER_DEFAULT.0,
        [198, 18, 3, 2],
        [198, 18, 2, 2],
    );
    let posted = g.send(&frame, 64);
    n.vr.wait_vif("podG", "vrouterd takes podG's frames", |v| {
        rx_packets(v) >= posted as u64
    });

    g.truncate_memory().expect("truncate");
    fault_is_contained(&n, &format!("{memory:?}"));
    drop(g);
    fresh_frontend_works(&n, memory, &format!("{memory:?}"));
    let status = n.vr.stop();
    assert!(status.success(), "vrouterd exit {status}");
}

#[test]
fn a_frontend_truncating_its_memfd_mid_traffic_breaks_only_its_vif() {
    in_repo_frontend_truncating_its_memory(Memory::Memfd);
}

#[test]
fn a_frontend_truncating_its_hugetlbfs_memory_mid_traffic_breaks_only_its_vif() {
    in_repo_frontend_truncating_its_memory(Memory::Hugetlbfs);
}

/// The same with a real DPDK pod: its hugepage files (the memory its virtio-user shares) are
/// truncated while it runs. The pod is frozen first, so that the fault is met by vrouterd's
/// forwarding core polling its rings, not preceded by the pod dying of its own SIGBUS and
/// hanging up; then it is killed and a new pod attaches to the same socket.
#[test]
fn a_testpmd_pod_whose_hugepage_file_is_truncated_breaks_only_its_vif() {
    let n = node();
    let (_a, _b) = innocent_traffic(&n);
    let mut g = sender(&n.sock_g, "198.18.3.2");
    n.vr.wait_vif("podG", "podG connects", connected);
    n.vr.wait_vif("podG", "podG's traffic", |v| rx_packets(v) >= 1000);
    let files = hugepage_files(&g.config().file_prefix);
    assert!(
        !files.is_empty(),
        "testpmd's hugepage files are on hugetlbfs"
    );

    g.freeze();
    for f in &files {
        let file = std::fs::OpenOptions::new()
            .write(true)
            .open(f)
            .unwrap_or_else(|e| panic!("opening {}: {e}", f.display()));
        file.set_len(0)
            .unwrap_or_else(|e| panic!("truncating {}: {e}", f.display()));
    }
    fault_is_contained(&n, "testpmd");
    g.kill();
    drop(g);

    let _g2 = sender(&n.sock_g, "198.18.3.2");
    let v = n.vr.wait_vif("podG", "a new pod connects", connected);
    assert_eq!(v.status.broken, None, "the fault is forgotten");
    let g0 = rx_packets(&v);
    n.vr.wait_vif("podG", "the new pod's traffic", |v| {
        rx_packets(v) >= g0 + 1000
    });
    let status = n.vr.stop();
    assert!(status.success(), "vrouterd exit {status}");
}
