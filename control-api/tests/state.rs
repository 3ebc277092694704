//! `--state-dir` at the controller: what one controller accepted, a second one restored from
//! the same directory has too (model, indices, the dataplane's tables, the directories it
//! created), also through a compaction; the command line's vifs are never saved; a saved change
//! that no longer applies is skipped and the files rewritten to what runs.

mod common;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use common::MemDataplane;
use control_api::api::{
    BridgeEntry, FloatingIp, MacAddr, NatPool, Nexthop, Policy, Route, SnatAttachment,
    VhostUserMode, VifRequest, VifType,
};
use control_api::journal::{Loaded, COMPACT_MIN_RECORDS, JOURNAL, SNAPSHOT};
use control_api::{Controller, ControllerConfig};
use serde_json::json;

struct Node {
    ctrl: Controller,
    dp: Arc<MemDataplane>,
}

/// A controller on `root/pods` with a fresh in-memory dataplane; `fabric` adds vif `fabric0`
/// first, as vrouterd's `--fabric` does; then the state in `root/state` is restored.
fn start(root: &Path, fabric: bool) -> (Node, control_api::controller::Restored) {
    let dp = Arc::new(MemDataplane::default());
    let ctrl = Controller::new(
        ControllerConfig {
            socket_base: root.join("pods"),
            vrouter_mac: MacAddr::VROUTER_DEFAULT,
        },
        dp.clone(),
    )
    .unwrap();
    let mut fixed = BTreeSet::new();
    if fabric {
        let mut req = VifRequest::new("fabric0", VifType::Physical, 0, mac(0xf0));
        req.device = Some("net_null0".into());
        // Jumbo, as underlays run: pods at the default 1500 fit with a tunnel's headers.
        req.mtu = Some(9000);
        ctrl.vif_add(&req).unwrap();
        fixed.insert("fabric0".to_owned());
    }
    let loaded = Loaded::open(&root.join("state")).unwrap();
    let restored = ctrl.restore(loaded, fixed).unwrap();
    (Node { ctrl, dp }, restored)
}

fn mac(last: u8) -> MacAddr {
    MacAddr([0x02, 0, 0, 0, 0, last])
}

fn vhost(name: &str, dir: &Path, mode: VhostUserMode, last: u8) -> VifRequest {
    let mut req = VifRequest::new(name, VifType::VhostUser, 1, mac(last));
    req.vhostsocket_dir = Some(dir.to_path_buf());
    req.vhostsocket_filename = Some("net0".into());
    req.vhostuser_mode = Some(mode);
    req
}

fn af_packet(name: &str, iface: &str, last: u8) -> VifRequest {
    let mut req = VifRequest::new(name, VifType::AfPacket, 1, mac(last));
    req.iface = Some(iface.into());
    req
}

fn route(prefix: &str, nexthop: u32, label: Option<u32>) -> Route {
    Route {
        prefix: prefix.parse().unwrap(),
        nexthop,
        label,
    }
}

/// Everything the API shows of the configuration (no live counters).
fn config(c: &Controller) -> serde_json::Value {
    let vrfs: Vec<u32> = c.vrfs().iter().map(|v| v.vrf).collect();
    let vifs: Vec<_> = c
        .vifs()
        .into_iter()
        .map(|v| json!([v.index, v.config, v.socket, c.policy(&v.config.name).ok()]))
        .collect();
    let per_vrf: Vec<_> = vrfs
        .iter()
        .map(|&v| json!([v, c.routes(v).unwrap(), c.bridge(v).unwrap()]))
        .collect();
    json!({
        "vrfs": c.vrfs(), "vifs": vifs, "nexthops": c.nexthops(), "tables": per_vrf,
        "mpls": c.mpls(), "vxlan": c.vxlan(), "nat_pools": c.nat_pools().unwrap(),
        "floating_ips": c.floating_ips(), "services": c.services().unwrap(),
        "link_local": c.link_locals(),
    })
}

/// The dataplane's tables, comparably.
fn programmed(dp: &MemDataplane) -> String {
    dp.with(|s| {
        format!(
            "{:?} {:?} {:?} {:?} {:?} {:?} {:?} {:?}",
            s.vrfs, s.vifs, s.nexthops, s.routes, s.bridge, s.mpls, s.vxlan, s.policies
        )
    })
}

/// One of every kind of object, with a hole in the vif indices.
fn configure(c: &Controller, pods: &Path) {
    c.vrf_add(1).unwrap();
    c.vrf_add(2).unwrap();
    c.vrf_add(3).unwrap();
    c.vrf_del(3).unwrap();
    std::fs::create_dir_all(pods.join("pod-b")).unwrap();
    c.vif_add(&vhost(
        "podA",
        &pods.join("pod-a/net"),
        VhostUserMode::Server,
        1,
    ))
    .unwrap();
    c.vif_add(&af_packet("gone", "vkgone", 9)).unwrap();
    c.vif_add(&vhost(
        "podB",
        &pods.join("pod-b"),
        VhostUserMode::Client,
        2,
    ))
    .unwrap();
    c.vif_del("gone").unwrap();
    // With DHCP settings, which must come back as they were.
    let mut pod_k = af_packet("podK", "vk0", 3);
    pod_k.ip = Some("198.18.3.2".parse().unwrap());
    pod_k.prefix_len = Some(24);
    pod_k.dns_servers = vec!["192.0.2.53".parse().unwrap()];
    pod_k.static_routes = vec![control_api::api::StaticRoute {
        prefix: "203.0.113.0/24".parse().unwrap(),
        via: "198.18.3.1".parse().unwrap(),
    }];
    pod_k.lease_time = Some(3600);
    c.vif_add(&pod_k).unwrap();
    let nexthops = [
        (
            1,
            json!({"type": "encap", "vif": "podA", "dmac": "02:00:00:00:00:01"}),
        ),
        (
            2,
            json!({"type": "encap", "vif": "podB", "dmac": "02:00:00:00:00:02"}),
        ),
        (
            3,
            json!({"type": "tunnel", "encap": "vxlan", "vif": "fabric0",
                   "sip": "192.0.2.1", "dip": "192.0.2.2", "dmac": "02:00:00:00:00:99"}),
        ),
        (4, json!({"type": "ecmp", "members": [1, 2]})),
        (5, json!({"type": "receive"})),
        // A tunnel pushing its own label (an ECMP member toward a node with its own).
        (
            6,
            json!({"type": "tunnel", "encap": "mplsoudp", "vif": "fabric0",
                   "sip": "192.0.2.1", "dip": "192.0.2.3", "label": 2003}),
        ),
    ];
    for (id, nh) in nexthops {
        let nh: Nexthop = serde_json::from_value(nh).unwrap();
        c.nexthop_set(id, &nh).unwrap();
    }
    c.route_set(1, &route("198.18.1.0/24", 4, None)).unwrap();
    c.route_set(1, &route("198.18.9.0/24", 3, Some(5001)))
        .unwrap();
    c.route_set(2, &route("2001:db8::/64", 5, None)).unwrap();
    c.route_set(1, &route("198.18.8.0/24", 6, None)).unwrap();
    c.route_set(1, &route("198.18.7.0/24", 5, None)).unwrap();
    c.route_del(1, &"198.18.7.0/24".parse().unwrap()).unwrap();
    let entry = BridgeEntry {
        mac: mac(0x42),
        nexthop: 3,
        label: Some(5002),
    };
    c.bridge_set(1, &entry).unwrap();
    c.mpls_set(100, 1).unwrap();
    c.mpls_set(101, 2).unwrap();
    c.mpls_del(101).unwrap();
    c.vxlan_set(5001, 1).unwrap();
    let routing = |rd: &str, vni: Option<u32>, label: Option<u32>| control_api::api::VrfRouting {
        rd: rd.into(),
        import_targets: vec!["target:64512:1".into(), "64512:99".into()],
        export_targets: vec!["target:64512:1".into()],
        vni,
        label,
    };
    c.routing_set(1, &routing("64512:1", Some(5001), None))
        .unwrap();
    c.routing_set(2, &routing("64512:2", None, Some(2002)))
        .unwrap();
    c.routing_del(2).unwrap();
    // Replaced: the last one counts.
    c.routing_set(1, &routing("192.0.2.1:1", Some(5001), Some(1001)))
        .unwrap();
    let policy: Policy = serde_json::from_value(json!({
        "default": "deny",
        "ingress": [{"action": "allow", "proto": "tcp", "ports": "80"}],
        "egress": [{"action": "allow"}],
    }))
    .unwrap();
    c.policy_set("podK", &policy).unwrap();
    c.policy_set("fabric0", &policy).unwrap();
    let pool = |first: &str, last: &str| -> NatPool {
        serde_json::from_value(json!({"vrf": 0, "first": first, "last": last,
                                      "ports": {"first": 40000, "last": 40999}}))
        .unwrap()
    };
    c.nat_pool_set("egress", &pool("198.51.100.64", "198.51.100.71"))
        .unwrap();
    c.nat_pool_set("gone", &pool("198.51.100.80", "198.51.100.80"))
        .unwrap();
    c.nat_pool_del("gone").unwrap();
    let egress = SnatAttachment {
        pool: "egress".into(),
    };
    c.snat_set(1, &egress).unwrap();
    c.snat_set(2, &egress).unwrap();
    c.snat_del(2).unwrap();
    let fip = |ip: &str| FloatingIp {
        vrf: 1,
        ip: ip.parse().unwrap(),
    };
    c.floating_ip_set("198.51.100.200".parse().unwrap(), &fip("198.18.1.10"))
        .unwrap();
    c.floating_ip_set("198.51.100.201".parse().unwrap(), &fip("198.18.1.11"))
        .unwrap();
    c.floating_ip_del("198.51.100.201".parse().unwrap())
        .unwrap();
    let svc = |ports: &[u16]| control_api::api::Service {
        vrf: 1,
        address: "198.18.1.100".parse().unwrap(),
        port: 80,
        proto: control_api::api::ServiceProto::Tcp,
        backends: ports
            .iter()
            .map(|p| control_api::api::ServiceBackend {
                address: "198.18.1.10".parse().unwrap(),
                port: *p,
            })
            .collect(),
        balance: Default::default(),
    };
    c.service_set("web", &svc(&[8080, 8081])).unwrap();
    c.service_set("web", &svc(&[8081])).unwrap();
    c.service_set("gone", &{
        let mut s = svc(&[1]);
        s.proto = control_api::api::ServiceProto::Udp;
        s
    })
    .unwrap();
    c.service_del("gone").unwrap();
    let md = |port: u16| control_api::api::LinkLocalService {
        address: control_api::api::LinkLocalService::METADATA,
        port,
        proto: control_api::api::ServiceProto::Tcp,
        service_address: "198.51.100.80".parse().unwrap(),
        service_port: 8775,
    };
    c.link_local_set("metadata", &md(80)).unwrap();
    c.link_local_set("gone", &md(81)).unwrap();
    c.link_local_del("gone").unwrap();
}

#[test]
fn everything_accepted_is_restored_after_a_crash_and_again_after_a_compaction() {
    let root = tempfile::tempdir().unwrap();
    let pods = root.path().join("pods");
    let (first, restored) = start(root.path(), true);
    assert_eq!(
        restored,
        Default::default(),
        "an empty directory restores nothing"
    );
    configure(&first.ctrl, &pods);
    let want = config(&first.ctrl);
    let want_dp = programmed(&first.dp);
    // A crash: nothing cleaned up, the server-mode socket file stays behind.
    drop(first);
    assert!(pods.join("pod-a/net/net0").exists());

    let (second, restored) = start(root.path(), true);
    assert_eq!(restored.skipped, 0, "{restored:?}");
    assert_eq!(config(&second.ctrl), want);
    assert_eq!(programmed(&second.dp), want_dp);
    assert_eq!(
        second.ctrl.vif("podK").unwrap().index,
        2,
        "the index it had"
    );
    let k = second.ctrl.vif("podK").unwrap().config;
    assert_eq!(
        (k.prefix_len, k.lease_time, k.static_routes.len()),
        (Some(24), Some(3600), 1),
        "its DHCP settings"
    );
    assert_eq!(second.ctrl.link_locals().len(), 1, "the link-local service");

    // Enough changes to compact the journal into a snapshot, then a restart reads that.
    let c = &second.ctrl;
    for i in 0..COMPACT_MIN_RECORDS {
        let prefix = format!("10.{}.{}.0/24", i / 256, i % 256);
        c.route_set(2, &route(&prefix, 5, None)).unwrap();
    }
    let snapshot = root.path().join("state").join(SNAPSHOT);
    assert!(snapshot.exists(), "a snapshot was written");
    let want = config(c);
    let want_dp = programmed(&second.dp);
    drop(second);
    let (third, restored) = start(root.path(), true);
    assert!(
        restored.applied > COMPACT_MIN_RECORDS as usize,
        "{restored:?}"
    );
    assert_eq!(restored.skipped, 0);
    assert_eq!(config(&third.ctrl), want);
    assert_eq!(programmed(&third.dp), want_dp);

    // The directories the first controller created are still known as created: they go with
    // the vif; the pod's own directory stays.
    c_del_all_users_of(&third.ctrl, "podA");
    third.ctrl.vif_del("podA").unwrap();
    assert!(!pods.join("pod-a").exists(), "created dirs removed");
    assert!(pods.join("pod-b").exists());
}

/// Removes what refers to vif `name`: routes of VRF 1, labels, the ECMP group, its nexthops.
fn c_del_all_users_of(c: &Controller, name: &str) {
    for vrf in [1] {
        for r in c.routes(vrf).unwrap() {
            c.route_del(vrf, &r.prefix).unwrap();
        }
        for b in c.bridge(vrf).unwrap() {
            c.bridge_del(vrf, b.mac).unwrap();
        }
    }
    for m in c.mpls() {
        c.mpls_del(m.label).unwrap();
    }
    c.nexthop_del(4).unwrap();
    let own: Vec<u32> = c
        .nexthops()
        .into_iter()
        .filter(|n| n.nexthop.vif() == Some(name))
        .map(|n| n.id)
        .collect();
    for id in own {
        c.nexthop_del(id).unwrap();
    }
}

#[test]
fn the_command_line_vifs_are_never_saved_nor_duplicated() {
    let root = tempfile::tempdir().unwrap();
    let (first, _) = start(root.path(), true);
    first.ctrl.vif_del("fabric0").unwrap();
    let mut req = VifRequest::new("fabric0", VifType::Physical, 0, mac(0xf1));
    req.device = Some("net_null1".into());
    first.ctrl.vif_add(&req).unwrap();
    first.ctrl.vrf_add(7).unwrap();
    drop(first);
    let journal = std::fs::read(root.path().join("state").join(JOURNAL)).unwrap();
    assert!(
        !String::from_utf8_lossy(&journal).contains("fabric0"),
        "nothing about the command line's vif is saved"
    );
    let (second, restored) = start(root.path(), true);
    assert_eq!((restored.applied, restored.skipped), (1, 0));
    let fabric = second.ctrl.vif("fabric0").unwrap();
    assert_eq!(
        fabric.config.device.as_deref(),
        Some("net_null0"),
        "the command line's"
    );
    drop(second);

    // A vif of that name saved by a vrouterd without --fabric gives way to the command line.
    let other = tempfile::tempdir().unwrap();
    let (no_fabric, _) = start(other.path(), false);
    no_fabric.ctrl.vif_add(&req).unwrap();
    drop(no_fabric);
    let (with_fabric, restored) = start(other.path(), true);
    assert_eq!((restored.fixed, restored.skipped), (1, 0));
    assert_eq!(
        with_fabric
            .ctrl
            .vif("fabric0")
            .unwrap()
            .config
            .device
            .as_deref(),
        Some("net_null0")
    );
}

#[test]
fn a_saved_change_that_no_longer_applies_is_skipped_and_the_files_rewritten() {
    let root = tempfile::tempdir().unwrap();
    let pods = root.path().join("pods");
    let (first, _) = start(root.path(), false);
    first.ctrl.vrf_add(1).unwrap();
    std::fs::create_dir_all(pods.join("pod-x")).unwrap();
    first
        .ctrl
        .vif_add(&vhost(
            "podX",
            &pods.join("pod-x"),
            VhostUserMode::Client,
            7,
        ))
        .unwrap();
    let nh = Nexthop::Encap {
        vif: "podX".into(),
        dmac: mac(7),
    };
    first.ctrl.nexthop_set(1, &nh).unwrap();
    first
        .ctrl
        .route_set(1, &route("198.18.7.2/32", 1, None))
        .unwrap();
    first.ctrl.vrf_add(2).unwrap();
    drop(first);
    // While vrouterd was down the pod's directory became a file: its vif is refused now, and
    // what hangs on it with it.
    std::fs::remove_dir(pods.join("pod-x")).unwrap();
    std::fs::write(pods.join("pod-x"), b"not a directory").unwrap();

    let (second, restored) = start(root.path(), false);
    assert_eq!(
        (restored.applied, restored.skipped),
        (2, 3),
        "vrfs 1 and 2 restored; vif, nexthop and route skipped: {restored:?}"
    );
    let vrfs: Vec<u32> = second.ctrl.vrfs().iter().map(|v| v.vrf).collect();
    assert_eq!(vrfs, [0, 1, 2]);
    assert!(second.ctrl.vif("podX").is_err());
    drop(second);
    assert!(root.path().join("state").join(SNAPSHOT).exists());
    let (_third, restored) = start(root.path(), false);
    assert_eq!(
        (restored.applied, restored.skipped),
        (2, 0),
        "the files now hold what ran"
    );
}

#[test]
fn a_journal_that_is_not_attached_writes_nothing() {
    let root = tempfile::tempdir().unwrap();
    let dp = Arc::new(MemDataplane::default());
    let ctrl = Controller::new(
        ControllerConfig {
            socket_base: root.path().join("pods"),
            vrouter_mac: MacAddr::VROUTER_DEFAULT,
        },
        dp,
    )
    .unwrap();
    ctrl.vrf_add(1).unwrap();
    ctrl.vif_add(&af_packet("podK", "vk0", 3)).unwrap();
    let files: Vec<PathBuf> = std::fs::read_dir(root.path())
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(files, [root.path().join("pods")], "only the socket base");
}

/// A route batch is saved with one journal write: after a crash every item of it is back, in
/// the model and the dataplane, and a later batch's deletes too.
#[test]
fn a_route_batch_is_restored_whole() {
    let root = tempfile::tempdir().unwrap();
    let (first, _) = start(root.path(), false);
    let c = &first.ctrl;
    c.vrf_add(1).unwrap();
    c.nexthop_set(3, &Nexthop::Discard).unwrap();
    let set: Vec<Route> = (0..500)
        .map(|i| route(&format!("198.18.{}.{}/32", i / 256, i % 256), 3, None))
        .collect();
    let b = control_api::api::RouteBatch {
        set,
        delete: Vec::new(),
    };
    assert_eq!(c.route_batch(1, &b).unwrap().created, 500);
    let gone: Vec<_> = b.set[..100].iter().map(|r| r.prefix).collect();
    let d = control_api::api::RouteBatch {
        set: Vec::new(),
        delete: gone,
    };
    assert_eq!(c.route_batch(1, &d).unwrap().deleted, 100);
    let want = config(c);
    let want_dp = programmed(&first.dp);
    drop(first);

    let (second, restored) = start(root.path(), false);
    assert_eq!(restored.skipped, 0, "{restored:?}");
    assert_eq!(config(&second.ctrl), want);
    assert_eq!(programmed(&second.dp), want_dp);
    assert_eq!(second.ctrl.routes(1).unwrap().len(), 400);
}
