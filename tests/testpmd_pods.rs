//! Two DPDK pods (testpmd over virtio-user) on one vrouterd, one vif in each vhost-user mode,
//! routed in VRF 1: counters at the pods and at GET /vifs agree exactly; deleting a vif stops its
//! traffic and removes its socket; adding it again works.

use std::path::{Path, PathBuf};
use std::time::Duration;

use control_api::api::{IpPrefix, MacAddr, Nexthop, VhostUserMode, VifCounters};
use testkit::testpmd::{TestpmdConfig, TestpmdPod};
use testkit::traffic;
use testkit::vrouterd::{vhost_user_vif as vhost_vif, Vrouterd};

const MAC_A: MacAddr = MacAddr([0x02, 0, 0, 0, 0x0a, 0x01]);
const MAC_B: MacAddr = MacAddr([0x02, 0, 0, 0, 0x0b, 0x01]);

fn vrouterd_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_vrouterd"))
}

fn counters(vr: &Vrouterd, name: &str) -> VifCounters {
    vr.vif(name).status.counters
}

/// What vrouterd passed on toward B: sent, or dropped on the way.
fn routed_to_b(vr: &Vrouterd) -> u64 {
    let b = counters(vr, "podB");
    b.tx_packets + b.drops
}

/// The sending pod: txonly to the vrouter MAC, 198.18.1.2 → 198.18.2.2.
fn sender(socket: &Path) -> TestpmdPod {
    TestpmdConfig::sender(socket, "198.18.1.2", "198.18.2.2").start()
}

/// The receiving pod: creates its socket itself (the vif is in client mode) and counts.
fn receiver(socket: &Path) -> TestpmdPod {
    TestpmdConfig::receiver(socket).as_server().start()
}

#[test]
fn testpmd_pods_in_both_modes_routed_with_matching_counters_and_vif_delete_readd() {
    let vr = Vrouterd::start(&vrouterd_bin(), &[], &[]);
    let base = vr.socket_base();
    let dir_a = base.join("pod-uid-a");
    let dir_b = base.join("pod-uid-b");
    let sock_a = dir_a.join("podA-net1");
    let sock_b = dir_b.join("podB-net1");

    vr.api(|c| async move { c.vrf_add(1).await })
        .expect("vrf 1");
    let req_a = vhost_vif("podA", MAC_A, &dir_a, "podA-net1", VhostUserMode::Server);
    let info = vr
        .api(|c| {
            let r = req_a.clone();
            async move { c.vif_add(&r).await }
        })
        .expect("podA (server mode)");
    assert_eq!(info.status.state.to_string(), "listening");
    assert!(sock_a.exists(), "vrouterd created the server-mode socket");
    let req_b = vhost_vif("podB", MAC_B, &dir_b, "podB-net1", VhostUserMode::Client);
    let info = vr
        .api(|c| async move { c.vif_add(&req_b).await })
        .expect("podB (client mode)");
    assert_eq!(info.status.state.to_string(), "connecting");
    vr.route_to(1, "podA", MAC_A, &["198.18.1.2/32"]);
    vr.route_to(2, "podB", MAC_B, &["198.18.2.2/32"]);

    // Round 1: traffic A → B, then both pods stop and report their totals.
    let mut pod_b = receiver(&sock_b);
    vr.wait_connected("podB");
    let mut pod_a = sender(&sock_a);
    vr.wait_connected("podA");
    // Enough traffic for the totals below to mean something.
    vr.wait_until(
        "A's traffic reaches B",
        || (counters(&vr, "podA"), counters(&vr, "podB")),
        |(a, b)| a.rx_packets > 10_000 && b.tx_packets > 1_000,
    );
    let tally = traffic::finish(&vr, &mut pod_a, "podA", &mut pod_b, "podB");
    let (sent, got) = (tally.sent, tally.got);
    assert!(sent.tx_packets > 10_000, "the sender sent: {sent:?}");
    assert!(got.rx_packets > 1_000, "the receiver received: {got:?}");
    tally.assert_exact();

    // Round 2: new pods reconnect to the same vifs; then deleting podA stops the traffic and
    // removes its socket and the directory vrouterd created.
    let pod_b2 = receiver(&sock_b);
    vr.wait_connected("podB");
    let pod_a2 = sender(&sock_a);
    vr.wait_connected("podA");
    let before = routed_to_b(&vr);
    vr.wait_until(
        "traffic resumed after the pods restarted",
        || routed_to_b(&vr),
        |&during| during > before,
    );
    // What refers to the vif goes first (the API refuses to delete a vif still in use).
    let prefix_a: IpPrefix = "198.18.1.2/32".parse().expect("prefix");
    vr.api(|c| async move { c.route_del(1, &prefix_a).await })
        .expect("route to A");
    vr.api(|c| async move { c.nexthop_del(1).await })
        .expect("nexthop to A");
    vr.api(|c| async move { c.vif_del("podA").await })
        .expect("delete podA");
    assert!(!sock_a.exists(), "deleting the vif removed its socket");
    assert!(!dir_a.exists(), "and the directory vrouterd created for it");
    // The removal returned once the lcores let go of A's queues: what A sent before is
    // counted. An absence takes a while to show: B's count must stay put for a second.
    let after_del = routed_to_b(&vr);
    std::thread::sleep(Duration::from_secs(1));
    assert_eq!(
        routed_to_b(&vr),
        after_del,
        "no traffic reaches B once A's vif is gone"
    );
    drop(pod_a2);

    // Round 3: the vif comes back and traffic with it.
    let req_a = vhost_vif("podA", MAC_A, &dir_a, "podA-net1", VhostUserMode::Server);
    vr.api(|c| async move { c.vif_add(&req_a).await })
        .expect("podA again");
    assert!(sock_a.exists());
    vr.set_nexthop(
        1,
        Nexthop::Encap {
            vif: "podA".into(),
            dmac: MAC_A,
        },
    );
    let pod_a3 = sender(&sock_a);
    vr.wait_connected("podA");
    vr.wait_until(
        "traffic flows again after re-adding the vif",
        || routed_to_b(&vr),
        |&now| now > after_del,
    );
    drop((pod_a3, pod_b2));
    let status = vr.stop();
    assert!(status.success(), "vrouterd exit {status}");
}
