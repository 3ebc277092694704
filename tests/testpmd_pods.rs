//! Two DPDK pods (testpmd over virtio-user) on one vrouterd, one vif in each vhost-user mode,
//! routed in VRF 1: counters at the pods and at GET /vifs agree exactly; deleting a vif stops its
//! traffic and removes its socket; adding it again works.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use control_api::api::{IpPrefix, MacAddr, Nexthop, Route, VhostUserMode, VifCounters};
use testkit::testpmd::{TestpmdConfig, TestpmdPod};
use testkit::vrouterd::{vhost_user_vif as vhost_vif, Vrouterd};

const MAC_A: MacAddr = MacAddr([0x02, 0, 0, 0, 0x0a, 0x01]);
const MAC_B: MacAddr = MacAddr([0x02, 0, 0, 0, 0x0b, 0x01]);

fn vrouterd_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_vrouterd"))
}

fn counters(vr: &Vrouterd, name: &str) -> VifCounters {
    vr.vif(name).status.counters
}

fn wait_connected(vr: &Vrouterd, name: &str) {
    let start = Instant::now();
    let end = start + Duration::from_secs(30);
    loop {
        let v = vr.vif(name);
        if v.status.state.to_string() == "connected" {
            eprintln!("{name} connected after {:?}", start.elapsed());
            return;
        }
        assert!(
            Instant::now() < end,
            "{name} never connected: {v:?}\n{}",
            vr.process.outputs()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The sending pod: txonly to the vrouter MAC, 198.18.1.2 → 198.18.2.2.
fn sender(socket: &Path) -> TestpmdPod {
    let mut cfg = TestpmdConfig::new(socket);
    cfg.forward_mode = "txonly".into();
    cfg.extra_app_args = vec![
        "--eth-peer=0,00:00:5e:00:01:00".into(),
        "--tx-ip=198.18.1.2,198.18.2.2".into(),
    ];
    TestpmdPod::start(cfg).expect("testpmd sender")
}

/// The receiving pod: creates its socket itself (the vif is in client mode) and counts.
fn receiver(socket: &Path) -> TestpmdPod {
    let mut cfg = TestpmdConfig::new(socket);
    cfg.server = true;
    cfg.forward_mode = "rxonly".into();
    TestpmdPod::start(cfg).expect("testpmd receiver")
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
    for (id, vif, mac) in [(1, "podA", MAC_A), (2, "podB", MAC_B)] {
        let nh = Nexthop::Encap {
            vif: vif.into(),
            dmac: mac,
        };
        vr.api(|c| async move { c.nexthop_set(id, &nh).await })
            .expect("nexthop");
    }
    for (prefix, nh) in [("198.18.1.2/32", 1), ("198.18.2.2/32", 2)] {
        let route = Route {
            prefix: prefix.parse::<IpPrefix>().expect("prefix"),
            nexthop: nh,
            label: None,
        };
        vr.api(|c| async move { c.route_set(1, &route).await })
            .expect("route");
    }

    // Round 1: traffic A → B, then both pods stop and report their totals.
    let mut pod_b = receiver(&sock_b);
    wait_connected(&vr, "podB");
    let mut pod_a = sender(&sock_a);
    wait_connected(&vr, "podA");
    std::thread::sleep(Duration::from_secs(3));
    let sent = pod_a
        .finish(Duration::from_secs(20))
        .expect("sender totals");
    std::thread::sleep(Duration::from_millis(500));
    let got = pod_b
        .finish(Duration::from_secs(20))
        .expect("receiver totals");
    let (a, b) = (counters(&vr, "podA"), counters(&vr, "podB"));
    assert!(sent.tx_packets > 10_000, "the sender sent: {sent:?}");
    assert!(got.rx_packets > 1_000, "the receiver received: {got:?}");
    assert_eq!(
        a.rx_packets, sent.tx_packets,
        "vrouterd received what pod A sent: {a:?} {sent:?}"
    );
    assert_eq!(
        b.tx_packets, got.rx_packets,
        "pod B received what vrouterd sent it: {b:?} {got:?}"
    );
    assert_eq!(
        a.rx_packets,
        b.tx_packets + b.drops,
        "every packet routed to B, sent or counted dropped"
    );

    // Round 2: new pods reconnect to the same vifs; then deleting podA stops the traffic and
    // removes its socket and the directory vrouterd created.
    let pod_b2 = receiver(&sock_b);
    wait_connected(&vr, "podB");
    let pod_a2 = sender(&sock_a);
    wait_connected(&vr, "podA");
    let before = counters(&vr, "podB").tx_packets + counters(&vr, "podB").drops;
    std::thread::sleep(Duration::from_secs(1));
    let during = counters(&vr, "podB").tx_packets + counters(&vr, "podB").drops;
    assert!(during > before, "traffic resumed after the pods restarted");
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
    std::thread::sleep(Duration::from_millis(300));
    let after_del = counters(&vr, "podB").tx_packets + counters(&vr, "podB").drops;
    std::thread::sleep(Duration::from_secs(1));
    assert_eq!(
        counters(&vr, "podB").tx_packets + counters(&vr, "podB").drops,
        after_del,
        "no traffic reaches B once A's vif is gone"
    );
    drop(pod_a2);

    // Round 3: the vif comes back and traffic with it.
    let req_a = vhost_vif("podA", MAC_A, &dir_a, "podA-net1", VhostUserMode::Server);
    vr.api(|c| async move { c.vif_add(&req_a).await })
        .expect("podA again");
    assert!(sock_a.exists());
    let nh = Nexthop::Encap {
        vif: "podA".into(),
        dmac: MAC_A,
    };
    vr.api(|c| async move { c.nexthop_set(1, &nh).await })
        .expect("nexthop to A again");
    let pod_a3 = sender(&sock_a);
    wait_connected(&vr, "podA");
    std::thread::sleep(Duration::from_secs(1));
    assert!(
        counters(&vr, "podB").tx_packets + counters(&vr, "podB").drops > after_del,
        "traffic flows again after re-adding the vif"
    );
    drop((pod_a3, pod_b2));
    let status = vr.stop();
    assert!(status.success(), "vrouterd exit {status}");
}
