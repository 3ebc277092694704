//! The plugin's life beyond the first ADD: VERSION names the versions it speaks; a result in
//! the version the runtime asked for; CHECK notices a vif a restarted vrouterd no longer has,
//! and ADD again rebuilds it (same addresses, same socket); DEL while vrouterd is down fails as
//! "try again later" and keeps its record, and succeeds once vrouterd is back; GC (CNI 1.1)
//! takes away the attachments the runtime no longer lists, and STATUS follows vrouterd; a pod's
//! two vhost-user interfaces share its socket directory, which goes with the last of them.

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

#[test]
fn cni_1_1_gc_takes_away_what_the_runtime_no_longer_lists_and_status_follows_vrouterd() {
    let node = Netns::new("cnigc");
    let vr = start_vrouterd(&node);
    let tmp = tempfile::tempdir().expect("tmp");
    let path = cni_path(tmp.path());
    let conf = json!({"cniVersion": "1.1.0", "name": "gc", "type": "vrouter-cni",
        "interfaceType": "vhost-user", "controlSocket": vr.control_socket(), "vrf": 8,
        "socketBase": vr.socket_base(), "dataDir": tmp.path().join("store"),
        "ipam": {"type": "vrouter-ipam", "pools": [{"name": "v4", "subnet": "198.18.110.0/24"}]}});
    let ids: Vec<String> = (1..=3).map(container_id).collect();
    let args: Vec<String> = (1..=3)
        .map(|i| format!("K8S_POD_UID=uid-gc-{}-{i}", std::process::id()))
        .collect();
    let call = |plugin, command, i: usize, conf: &Value| {
        Call {
            plugin,
            command,
            container_id: ids.get(i).map(String::as_str).unwrap_or(""),
            ifname: if i < ids.len() { "net1" } else { "" },
            netns: None,
            args: args.get(i).map(String::as_str).unwrap_or(""),
            cni_path: &path,
            node: Some(&node),
        }
        .run(conf)
    };
    let results: Vec<Value> = (0..3)
        .map(|i| call(CNI_BIN, "ADD", i, &conf).ok())
        .collect();
    assert_eq!(results[0]["cniVersion"], "1.1.0");
    call(CNI_BIN, "STATUS", 9, &conf).ok();

    // The runtime still runs only the first pod.
    let mut gc = conf.clone();
    gc["cni.dev/valid-attachments"] = json!([{"containerID": ids[0], "ifname": "net1"}]);
    call(CNI_BIN, "GC", 9, &gc).ok();
    let vifs: Vec<String> = vr
        .api(|c| async move { c.vifs().await })
        .expect("vifs")
        .into_iter()
        .map(|v| v.config.name)
        .collect();
    assert_eq!(vifs, vec![format!("{}-net1", &ids[0][..12])]);
    for i in 1..3 {
        let dir = vr
            .socket_base()
            .join(format!("uid-gc-{}-{}", std::process::id(), i + 1));
        assert!(!dir.exists(), "{} left behind", dir.display());
    }
    let state = store(&tmp.path().join("store"));
    assert_eq!(
        state["attachments"].as_object().map(|o| o.len()),
        Some(1),
        "{state}"
    );
    assert_eq!(
        state["allocations"].as_object().map(|o| o.len()),
        Some(1),
        "{state}"
    );
    call(CNI_BIN, "CHECK", 0, &with_prev(&conf, &results[0])).ok();
    // GC without the list is a configuration error naming it.
    let msg = call(CNI_BIN, "GC", 9, &conf).err(7);
    assert!(msg.contains("cni.dev/valid-attachments"), "{msg}");

    // vrouter-ipam on its own: GC frees what the list does not name.
    let ipam_conf = json!({"cniVersion": "1.1.0", "name": "gc-ipam", "type": "x",
        "ipam": {"type": "vrouter-ipam", "dataDir": tmp.path().join("ipam"),
            "pools": [{"name": "v4", "subnet": "198.18.111.0/24"}]}});
    for i in 0..3 {
        call(IPAM_BIN, "ADD", i, &ipam_conf).ok();
    }
    let mut gc = ipam_conf.clone();
    gc["cni.dev/valid-attachments"] = json!([{"containerID": ids[2], "ifname": "net1"}]);
    call(IPAM_BIN, "GC", 9, &gc).ok();
    let held = store(&tmp.path().join("ipam"))["allocations"].clone();
    let holders: Vec<&str> = held
        .as_object()
        .into_iter()
        .flatten()
        .filter_map(|(_, a)| a["container_id"].as_str())
        .collect();
    assert_eq!(holders, vec![ids[2].as_str()], "{held}");

    call(CNI_BIN, "DEL", 0, &conf).ok();
    assert!(vr.stop().success());
    // vrouterd gone: STATUS says the plugin cannot serve ADD.
    let msg = call(CNI_BIN, "STATUS", 9, &conf).err(50);
    assert!(msg.contains("vrouterd"), "{msg}");
}

#[test]
fn a_pods_interfaces_share_its_socket_directory_until_the_last_is_deleted() {
    let node = Netns::new("cnitwo");
    let vr = start_vrouterd(&node);
    let tmp = tempfile::tempdir().expect("tmp");
    let path = cni_path(tmp.path());
    let net = |name: &str, mode: &str, subnet: &str| {
        json!({"cniVersion": "1.0.0", "name": name, "type": "vrouter-cni",
            "interfaceType": "vhost-user", "vhostuserMode": mode,
            "controlSocket": vr.control_socket(), "vrf": 8, "socketBase": vr.socket_base(),
            "dataDir": tmp.path().join("store"),
            "ipam": {"type": "vrouter-ipam", "pools": [{"name": "v4", "subnet": subnet}]}})
    };
    let (n1, n2) = (
        net("one", "server", "198.18.120.0/24"),
        net("two", "client", "198.18.121.0/24"),
    );
    let cid = container_id(1);
    let uid = format!("uid-two-{}", std::process::id());
    let args = format!("K8S_POD_UID={uid}");
    let call = |command, ifname, conf: &Value| {
        Call {
            plugin: CNI_BIN,
            command,
            container_id: &cid,
            ifname,
            netns: None,
            args: &args,
            cni_path: &path,
            node: Some(&node),
        }
        .run(conf)
    };
    let r1 = call("ADD", "net1", &n1).ok();
    let r2 = call("ADD", "net2", &n2).ok();
    let dir = vr.socket_base().join(&uid);
    let s1 = dir.join(format!("{}-net1", &cid[..12]));
    let s2 = dir.join(format!("{}-net2", &cid[..12]));
    assert_eq!(r1["interfaces"][0]["socketPath"], s1.display().to_string());
    assert_eq!(r2["interfaces"][0]["socketPath"], s2.display().to_string());
    // Each interface its own facts, in the one directory.
    let facts = |ifname: &str| -> Value {
        let f = dir.join(format!("{}-{ifname}.json", &cid[..12]));
        serde_json::from_slice(&std::fs::read(&f).expect("facts")).expect("JSON")
    };
    assert_eq!(facts("net1")["vhostuserMode"], "server");
    assert_eq!(facts("net2")["vhostuserMode"], "client");
    assert_eq!(facts("net2")["ips"], r2["ips"]);
    assert!(s1.exists(), "vrouterd listens on net1's socket");

    call("DEL", "net1", &n1).ok();
    assert!(!s1.exists());
    assert!(dir.exists(), "net2 still lives there");
    assert!(dir.join(format!("{}-net2.json", &cid[..12])).exists());
    call("CHECK", "net2", &with_prev(&n2, &r2)).ok();
    call("DEL", "net2", &n2).ok();
    assert!(!dir.exists(), "{} left behind", dir.display());
    assert!(vr
        .api(|c| async move { c.vifs().await })
        .expect("vifs")
        .is_empty());
    assert!(vr.stop().success());
}
