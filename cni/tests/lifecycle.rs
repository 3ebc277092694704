//! The plugin's life beyond the first ADD: VERSION names the versions it speaks; a result in
//! the version the runtime asked for; CHECK notices a vif a restarted vrouterd no longer has,
//! and ADD again
//! rebuilds it (same addresses, same socket); DEL while vrouterd is down fails as "try again
//! later" and keeps its record, and succeeds once vrouterd is back.

mod common;

use common::*;
use serde_json::{json, Value};
use testkit::netns::Netns;
use testkit::vrouterd::Vrouterd;

#[test]
fn version_names_what_the_plugins_speak() {
    let tmp = tempfile::tempdir().expect("tmp");
    let path = cni_path(tmp.path());
    for plugin in [CNI_BIN, IPAM_BIN] {
        let v = Call {
            plugin,
            command: "VERSION",
            container_id: "",
            ifname: "",
            netns: None,
            args: "",
            cni_path: &path,
            node: None,
        }
        .run(&json!({"cniVersion": "1.0.0"}))
        .ok();
        assert_eq!(v["cniVersion"], "1.0.0");
        let versions = v["supportedVersions"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        assert!(
            versions.contains(&json!("1.0.0")) && versions.contains(&json!("0.4.0")),
            "{v}"
        );
    }
    // No command at all is an environment error.
    let out = Call {
        plugin: CNI_BIN,
        command: "",
        container_id: "",
        ifname: "",
        netns: None,
        args: "",
        cni_path: &path,
        node: None,
    }
    .run(&json!({"cniVersion": "1.0.0"}));
    assert!(out.err(4).contains("CNI_COMMAND"));
}

#[test]
fn check_sees_a_lost_vif_add_rebuilds_it_and_del_waits_for_vrouterd() {
    let node = Netns::new("cnilife");
    let dir = tempfile::tempdir().expect("vrouterd dir");
    let vr = Vrouterd::start_in_netns(
        dir.path(),
        Some(&node),
        &vrouterd_bin(),
        &["--idle-sleep-us", "20"],
        &[],
    );
    let tmp = tempfile::tempdir().expect("tmp");
    let path = cni_path(tmp.path());
    let conf = json!({"cniVersion": "0.4.0", "name": "life", "type": "vrouter-cni",
        "interfaceType": "vhost-user", "controlSocket": vr.control_socket(), "vrf": 8,
        "socketBase": vr.socket_base(), "dataDir": tmp.path().join("store"),
        "ipam": {"type": "vrouter-ipam", "pools": [
            {"name": "v4", "subnet": "198.18.100.0/24"},
            {"name": "v6", "subnet": "2001:db8:18:100::/64"}]}});
    let cid = container_id(1);
    let args = format!("K8S_POD_UID=uid-life-{}", std::process::id());
    let call = |command, conf: &Value| {
        Call {
            plugin: CNI_BIN,
            command,
            container_id: &cid,
            ifname: "net1",
            netns: None,
            args: &args,
            cni_path: &path,
            node: Some(&node),
        }
        .run(conf)
    };
    let res = call("ADD", &conf).ok();
    // A 0.4.0 runtime gets a 0.4.0 result: each address with its family.
    assert_eq!(res["cniVersion"], "0.4.0");
    assert_eq!(res["ips"][0]["version"], "4");
    assert_eq!(res["ips"][1]["version"], "6");
    let vif = format!("{}-net1", &cid[..12]);
    let socket = res["interfaces"][0]["socketPath"]
        .as_str()
        .unwrap_or_default()
        .to_string();

    // vrouterd restarts without a state directory and forgets the vif: CHECK says so.
    assert!(vr.stop().success());
    let vr = Vrouterd::start_in_netns(
        dir.path(),
        Some(&node),
        &vrouterd_bin(),
        &["--idle-sleep-us", "20"],
        &[],
    );
    let msg = call("CHECK", &with_prev(&conf, &res)).err(103);
    assert!(msg.contains(&vif), "{msg}");
    // ADD again rebuilds it: the same addresses and socket, and CHECK passes.
    let again = call("ADD", &conf).ok();
    assert_eq!(again["ips"], res["ips"]);
    assert_eq!(again["interfaces"][0]["socketPath"], socket.as_str());
    assert!(std::path::Path::new(&socket).exists());
    call("CHECK", &with_prev(&conf, &again)).ok();

    // vrouterd down: DEL cannot take the vif away, says to try again, keeps its record.
    assert!(vr.stop().success());
    let msg = call("DEL", &with_prev(&conf, &again)).err(11);
    assert!(msg.contains("vrouterd"), "{msg}");
    assert_eq!(
        store(&tmp.path().join("store"))["attachments"]
            .as_object()
            .map(|o| o.len()),
        Some(1)
    );
    // Back (without a state dir: empty), DEL finishes; what vrouterd forgot is fine.
    let vr = Vrouterd::start_in_netns(
        dir.path(),
        Some(&node),
        &vrouterd_bin(),
        &["--idle-sleep-us", "20"],
        &[],
    );
    call("DEL", &with_prev(&conf, &again)).ok();
    let state = store(&tmp.path().join("store"));
    assert_eq!(state["attachments"], json!({}));
    assert_eq!(state["allocations"], json!({}));
    assert!(!std::path::Path::new(&socket).exists());
    assert!(vr.stop().success());
}
