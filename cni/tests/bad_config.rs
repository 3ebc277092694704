//! Bad configuration and a bad environment are refused with the spec's error codes and a
//! message naming the field (or variable) to fix, and change nothing: not vrouterd's vifs,
//! nexthops, VRFs or routes, not the socket base, not the store.

mod common;

use common::*;
use serde_json::{json, Value};
use testkit::netns::Netns;
use testkit::vrouterd::Vrouterd;

/// Everything the plugin could have changed.
fn snapshot(vr: &Vrouterd, data: &std::path::Path) -> String {
    let vifs: Vec<String> = vr
        .api(|c| async move { c.vifs().await })
        .expect("vifs")
        .into_iter()
        .map(|v| v.config.name)
        .collect();
    let nexthops: Vec<u32> = vr
        .api(|c| async move { c.nexthops().await })
        .expect("nexthops")
        .into_iter()
        .map(|n| n.id)
        .collect();
    let vrfs = vr.api(|c| async move { c.vrfs().await }).expect("vrfs");
    let mut routes = Vec::new();
    for v in &vrfs {
        let id = v.vrf;
        routes.push(format!(
            "{:?}",
            vr.api(|c| async move { c.routes(id).await })
                .expect("routes")
        ));
    }
    let mut files: Vec<String> = walk(&vr.socket_base());
    files.sort();
    format!(
        "vifs {vifs:?}\nnexthops {nexthops:?}\nvrfs {vrfs:?}\nroutes {routes:?}\nfiles {files:?}\nstore {}",
        store(data)
    )
}

fn walk(dir: &std::path::Path) -> Vec<String> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        out.push(e.path().display().to_string());
        if e.path().is_dir() {
            out.extend(walk(&e.path()));
        }
    }
    out
}

#[test]
fn bad_configurations_are_refused_naming_the_field_and_change_nothing() {
    let node = Netns::new("cnibad");
    let pod = Netns::new("cnibadpod");
    let vr = start_vrouterd(&node);
    let tmp = tempfile::tempdir().expect("tmp");
    let data = tmp.path().join("store");
    let path = cni_path(tmp.path());
    let outside = tempfile::tempdir().expect("outside the socket base");
    let good = json!({"cniVersion": "1.0.0", "name": "net-a", "type": "vrouter-cni",
        "interfaceType": "vhost-user", "controlSocket": vr.control_socket(), "vrf": 4,
        "socketBase": vr.socket_base(), "dataDir": data,
        "ipam": {"type": "vrouter-ipam", "pools": [{"name": "v4", "subnet": "198.18.0.0/16"}]}});
    let args = format!("K8S_POD_UID=uid-bad-{}", std::process::id());
    let pod_path = netns_path(&pod);
    let call = |command, cid: &str, ifname, netns, conf: &Value| {
        Call {
            plugin: CNI_BIN,
            command,
            container_id: cid,
            ifname,
            netns,
            args: &args,
            cni_path: &path,
            node: Some(&node),
        }
        .run(conf)
    };
    // One pod in network A, whose pool the others must not overlap in VRF 4.
    let first = container_id(1);
    call("ADD", &first, "net1", None, &good).ok();
    let before = snapshot(&vr, &data);

    let patched = |patch: Value| {
        let mut c = good.clone();
        for (k, v) in patch.as_object().expect("object") {
            if v.is_null() {
                c.as_object_mut().expect("object").remove(k);
            } else {
                c[k] = v.clone();
            }
        }
        c
    };
    let other = container_id(2);
    let cases: Vec<(&str, Value, u64, &str)> = vec![
        ("missing name", patched(json!({"name": null})), 7, "`name`"),
        (
            "missing interfaceType",
            patched(json!({"interfaceType": null})),
            7,
            "`interfaceType`",
        ),
        (
            "unknown interfaceType",
            patched(json!({"interfaceType": "sriov"})),
            7,
            "`interfaceType`",
        ),
        ("missing vrf", patched(json!({"vrf": null})), 7, "`vrf`"),
        ("missing ipam", patched(json!({"ipam": null})), 7, "`ipam`"),
        (
            "missing ipam.type",
            patched(json!({"ipam": {"pools": []}})),
            7,
            "`ipam.type`",
        ),
        (
            "missing pools",
            patched(json!({"ipam": {"type": "vrouter-ipam"}})),
            7,
            "`ipam.pools`",
        ),
        (
            "pools overlapping each other",
            patched(
                json!({"name": "net-b", "ipam": {"type": "vrouter-ipam", "pools": [
                {"name": "a", "subnet": "198.19.0.0/24"}, {"name": "b", "subnet": "198.19.0.128/25"}]}}),
            ),
            7,
            "`ipam.pools[1].subnet`",
        ),
        (
            "a pool overlapping another network's in the VRF",
            patched(
                json!({"name": "net-b", "ipam": {"type": "vrouter-ipam", "pools": [
                {"name": "v4", "subnet": "198.18.9.0/24"}]}}),
            ),
            7,
            "`ipam.pools[0].subnet`",
        ),
        (
            "socketBase outside vrouterd's --socket-base",
            patched(
                json!({"name": "net-c", "socketBase": outside.path(), "ipam": {"type": "vrouter-ipam",
                "pools": [{"name": "v4", "subnet": "198.19.1.0/24"}]}}),
            ),
            7,
            "`socketBase`",
        ),
        (
            "bad vhostuserMode",
            patched(json!({"vhostuserMode": "both"})),
            7,
            "`vhostuserMode`",
        ),
        (
            "unsupported cniVersion",
            patched(json!({"cniVersion": "0.1.0"})),
            1,
            "`cniVersion`",
        ),
        (
            "an IPAM plugin not on CNI_PATH",
            patched(json!({"ipam": {"type": "no-such-ipam"}})),
            7,
            "`ipam.type`",
        ),
    ];
    for (what, conf, code, field) in cases {
        let msg = call("ADD", &other, "net1", None, &conf).err(code);
        assert!(msg.contains(field), "{what}: {field} not named in {msg:?}");
        assert_eq!(snapshot(&vr, &data), before, "{what} changed something");
    }
    // An address someone else routes in the VRF (here: the pool's next one) is not taken over.
    vr.set_nexthop(7, control_api::api::Nexthop::Discard);
    let route = control_api::api::Route {
        prefix: "198.18.0.3/32".parse().expect("prefix"),
        nexthop: 7,
        label: None,
    };
    vr.api(|c| async move { c.route_set(4, &route).await })
        .expect("foreign route");
    let with_foreign = snapshot(&vr, &data);
    let msg = call("ADD", &other, "net1", None, &good).err(7);
    assert!(
        msg.contains("`ipam`") && msg.contains("198.18.0.3/32"),
        "{msg}"
    );
    assert_eq!(
        snapshot(&vr, &data),
        with_foreign,
        "a refused address changed something"
    );
    let p: control_api::api::IpPrefix = "198.18.0.3/32".parse().expect("prefix");
    vr.api(|c| async move { c.route_del(4, &p).await })
        .expect("route gone");
    vr.api(|c| async move { c.nexthop_del(7).await })
        .expect("nexthop gone");
    assert_eq!(snapshot(&vr, &data), before);

    // The same pool in another VRF is fine: VRFs keep pools apart.
    let ok = patched(
        json!({"name": "net-b", "vrf": 6, "ipam": {"type": "vrouter-ipam", "pools": [
        {"name": "v4", "subnet": "198.18.9.0/24"}]}}),
    );
    call("ADD", &other, "net1", None, &ok).ok();
    call("DEL", &other, "net1", None, &ok).ok();
    // A pod that came and went leaves only its pool's last-used address (so that the next pod
    // does not get the same one at once).
    let mut last = store(&data);
    assert_eq!(last["last"]["net-b/v4"], "198.18.9.2", "{last}");
    last["last"]
        .as_object_mut()
        .expect("last")
        .remove("net-b/v4");
    std::fs::write(data.join("state.json"), last.to_string()).expect("store");
    assert_eq!(snapshot(&vr, &data), before);

    // The environment: named by its variable, nothing changed.
    let veth = patched(json!({"interfaceType": "veth", "socketBase": null}));
    for (what, cid, ifname, netns, code, name) in [
        ("no container id", "", "net1", None, 4, "CNI_CONTAINERID"),
        (
            "a bad interface name",
            other.as_str(),
            "much-too-long-ifname",
            None,
            4,
            "CNI_IFNAME",
        ),
        (
            "a veth pod without a netns",
            other.as_str(),
            "eth0",
            None,
            4,
            "CNI_NETNS",
        ),
    ] {
        let conf = if name == "CNI_NETNS" { &veth } else { &good };
        let msg = call("ADD", cid, ifname, netns, conf).err(code);
        assert!(msg.contains(name), "{what}: {msg}");
        assert_eq!(snapshot(&vr, &data), before, "{what} changed something");
    }
    // socketBase on a veth pod is a field it does not support.
    let mut v = veth.clone();
    v["socketBase"] = json!(vr.socket_base());
    let msg = call("ADD", &other, "eth0", Some(&pod_path), &v).err(2);
    assert!(msg.contains("`socketBase`"), "{msg}");
    // An interface name the pod already has.
    pod.ip(&[
        "link", "add", "eth0", "type", "veth", "peer", "name", "eth0p",
    ]);
    let msg = call("ADD", &other, "eth0", Some(&pod_path), &veth).err(102);
    assert!(msg.contains("eth0"), "{msg}");
    assert_eq!(snapshot(&vr, &data), before);

    call("DEL", &first, "net1", None, &good).ok();
    assert!(vr.stop().success());
}
