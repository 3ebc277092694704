//! Many plugins at once on one node, and plugins killed half-way: 200 concurrent ADDs from one
//! pool hand out 200 distinct addresses (through `vrouter-ipam`, and through `vrouter-cni`
//! against a real vrouterd); ADDs killed at random moments (of IPAM, of DPDK pods, of kernel
//! pods) leave a store in which every address is either free or held by the container that
//! asked, and DEL then clears each one completely: no vif, veth, socket directory or record.

mod common;

use std::collections::BTreeSet;
use std::io::Write;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::*;
use serde_json::{json, Value};
use testkit::netns::Netns;

const N: u32 = 200;

/// Starts a plugin without waiting for it.
fn spawn(plugin: &str, command: &str, cid: &str, args: &str, conf: &Value) -> Child {
    let mut child = Command::new(plugin)
        .env_clear()
        .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
        .env("CNI_COMMAND", command)
        .env("CNI_CONTAINERID", cid)
        .env("CNI_IFNAME", "net1")
        .env("CNI_ARGS", args)
        .env("CNI_PATH", "/nonexistent")
        .env("CNI_NETNS", "")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("plugin");
    let _ = child
        .stdin
        .take()
        .expect("stdin")
        .write_all(conf.to_string().as_bytes());
    child
}

fn result_of(child: Child) -> Value {
    let out = child.wait_with_output().expect("plugin output");
    assert!(
        out.status.success(),
        "{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("result JSON")
}

fn addresses(results: &[Value]) -> Vec<String> {
    results
        .iter()
        .flat_map(|r| r["ips"].as_array().cloned().unwrap_or_default())
        .filter_map(|i| i["address"].as_str().map(str::to_string))
        .collect()
}

fn ipam_conf(dir: &std::path::Path) -> Value {
    json!({"cniVersion": "1.0.0", "name": "many", "type": "whatever", "vrf": 3,
        "ipam": {"type": "vrouter-ipam", "dataDir": dir, "pools": [
            {"name": "v4", "subnet": "198.18.64.0/23"},
            {"name": "v6", "subnet": "2001:db8:18:64::/64"}]}})
}

#[test]
fn two_hundred_concurrent_ipam_adds_get_distinct_addresses_and_exhaustion_is_clear() {
    let tmp = tempfile::tempdir().expect("tmp");
    let conf = ipam_conf(tmp.path());
    let children: Vec<Child> = (0..N)
        .map(|i| spawn(IPAM_BIN, "ADD", &container_id(i), "", &conf))
        .collect();
    let results: Vec<Value> = children.into_iter().map(result_of).collect();
    let addrs = addresses(&results);
    assert_eq!(addrs.len(), 2 * N as usize, "one IPv4 and one IPv6 each");
    let distinct: BTreeSet<&String> = addrs.iter().collect();
    assert_eq!(distinct.len(), addrs.len(), "an address handed out twice");
    assert!(addrs
        .iter()
        .all(|a| a.starts_with("198.18.6") || a.starts_with("2001:db8:18:64::")));
    let state = store(tmp.path());
    assert_eq!(
        state["allocations"].as_object().map(|o| o.len()),
        Some(2 * N as usize)
    );

    // A /23 holds 509 pod addresses; with 200 given, a /24-sized pool runs out at 253.
    let small = json!({"cniVersion": "1.0.0", "name": "tiny", "type": "x", "vrf": 3,
        "ipam": {"type": "vrouter-ipam", "dataDir": tmp.path(), "pools": [
            {"name": "v4", "subnet": "198.19.0.0/30"}]}});
    result_of(spawn(IPAM_BIN, "ADD", "first", "", &small));
    let out = spawn(IPAM_BIN, "ADD", "second", "", &small)
        .wait_with_output()
        .expect("output");
    assert!(!out.status.success());
    let err: Value = serde_json::from_slice(&out.stdout).expect("error JSON");
    assert_eq!(err["code"], 101, "{err}");
    let msg = err["msg"].as_str().unwrap_or_default();
    assert!(
        msg.contains("198.19.0.0/30") && msg.contains("no free IPv4"),
        "{msg}"
    );

    // DEL frees each; CHECK of a freed one knows nothing of it.
    for i in 0..N {
        let o = spawn(IPAM_BIN, "DEL", &container_id(i), "", &conf)
            .wait_with_output()
            .expect("del");
        assert!(o.status.success());
    }
    let state = store(tmp.path());
    assert_eq!(
        state["allocations"].as_object().map(|o| o.len()),
        Some(1),
        "{state}"
    );
    let o = spawn(IPAM_BIN, "CHECK", &container_id(0), "", &conf)
        .wait_with_output()
        .expect("check");
    let err: Value = serde_json::from_slice(&o.stdout).expect("error JSON");
    assert_eq!(err["code"], 3, "{err}");
}

#[test]
fn ipam_adds_killed_half_way_leave_every_address_held_by_its_container_or_free() {
    let tmp = tempfile::tempdir().expect("tmp");
    let conf = ipam_conf(tmp.path());
    let n = 60;
    // Killed from the moment they start to well after most have finished.
    let children: Vec<Child> = (0..n)
        .map(|i| spawn(IPAM_BIN, "ADD", &container_id(i), "", &conf))
        .collect();
    for (i, mut c) in children.into_iter().enumerate() {
        std::thread::sleep(Duration::from_micros(500 * (i as u64 % 7)));
        let _ = c.kill();
        let _ = c.wait();
    }
    let state = store(tmp.path());
    let allocs = state["allocations"]
        .as_object()
        .cloned()
        .unwrap_or_default();
    eprintln!("{} addresses survived the kills", allocs.len());
    let ids: BTreeSet<String> = (0..n).map(container_id).collect();
    for a in allocs.values() {
        let cid = a["container_id"].as_str().unwrap_or_default();
        assert!(
            ids.contains(cid),
            "held by a container that never asked: {a}"
        );
    }
    // Each container holds at most its two addresses, one per family.
    for cid in &ids {
        let held: Vec<&String> = allocs
            .iter()
            .filter(|(_, a)| a["container_id"] == *cid)
            .map(|(ip, _)| ip)
            .collect();
        assert!(held.len() <= 2, "{cid}: {held:?}");
        assert!(held.len() != 2 || held[0].contains(':') != held[1].contains(':'));
    }
    // The runtime DELs what failed and ADDs again: everyone gets a distinct pair, as if nothing
    // had happened.
    for i in 0..n {
        let o = spawn(IPAM_BIN, "DEL", &container_id(i), "", &conf)
            .wait_with_output()
            .expect("del");
        assert!(o.status.success());
    }
    assert_eq!(store(tmp.path())["allocations"], json!({}));
    let results: Vec<Value> = (0..n)
        .map(|i| spawn(IPAM_BIN, "ADD", &container_id(i), "", &conf))
        .collect::<Vec<_>>()
        .into_iter()
        .map(result_of)
        .collect();
    let addrs = addresses(&results);
    let distinct: BTreeSet<&String> = addrs.iter().collect();
    assert_eq!(distinct.len(), 2 * n as usize);
}

fn cni_conf(vr: &testkit::vrouterd::Vrouterd, data: &std::path::Path) -> Value {
    json!({"cniVersion": "1.0.0", "name": "dpdk", "type": "vrouter-cni",
        "interfaceType": "vhost-user", "controlSocket": vr.control_socket(), "vrf": 5,
        "socketBase": vr.socket_base(), "dataDir": data,
        "ipam": {"type": "vrouter-ipam", "pools": [
            {"name": "v4", "subnet": "198.18.80.0/23"},
            {"name": "v6", "subnet": "2001:db8:18:80::/64"}]}})
}

fn uid_args(i: u32) -> String {
    format!(
        "K8S_POD_NAMESPACE=default;K8S_POD_NAME=p{i};K8S_POD_UID=uid-{}-{i}",
        std::process::id()
    )
}

#[test]
fn two_hundred_concurrent_cni_adds_against_vrouterd_then_dels_clear_everything() {
    let node = Netns::new("cnimany");
    let vr = start_vrouterd(&node);
    let tmp = tempfile::tempdir().expect("tmp");
    let conf = cni_conf(&vr, tmp.path());
    let children: Vec<Child> = (0..N)
        .map(|i| spawn(CNI_BIN, "ADD", &container_id(i), &uid_args(i), &conf))
        .collect();
    let results: Vec<Value> = children.into_iter().map(result_of).collect();
    let addrs = addresses(&results);
    let distinct: BTreeSet<&String> = addrs.iter().collect();
    assert_eq!(
        distinct.len(),
        2 * N as usize,
        "an address handed out twice"
    );
    let vifs = vr.api(|c| async move { c.vifs().await }).expect("vifs");
    assert_eq!(vifs.len(), N as usize);
    let routes = vr
        .api(|c| async move { c.routes(5).await })
        .expect("routes");
    // Two host routes per pod, and the two gateways.
    assert_eq!(routes.len(), 2 * N as usize + 2, "{routes:?}");

    let children: Vec<Child> = (0..N)
        .map(|i| spawn(CNI_BIN, "DEL", &container_id(i), &uid_args(i), &conf))
        .collect();
    for c in children {
        let o = c.wait_with_output().expect("del");
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stdout));
    }
    assert!(vr
        .api(|c| async move { c.vifs().await })
        .expect("vifs")
        .is_empty());
    assert!(vr
        .api(|c| async move { c.nexthops().await })
        .expect("nexthops")
        .is_empty());
    let left: Vec<_> = std::fs::read_dir(vr.socket_base()).expect("base").collect();
    assert!(left.is_empty(), "{left:?}");
    assert_eq!(store(tmp.path())["attachments"], json!({}));
    assert!(vr.stop().success());
}

#[test]
fn cni_adds_killed_half_way_are_cleared_by_del_on_vrouterd_and_in_the_store() {
    let node = Netns::new("cnikill");
    let vr = start_vrouterd(&node);
    let tmp = tempfile::tempdir().expect("tmp");
    let conf = cni_conf(&vr, tmp.path());
    let n = 40;
    for round in 0..4u64 {
        let children: Vec<Child> = (0..n)
            .map(|i| spawn(CNI_BIN, "ADD", &container_id(i), &uid_args(i), &conf))
            .collect();
        for (i, mut c) in children.into_iter().enumerate() {
            std::thread::sleep(Duration::from_millis((i as u64 + round) % 5));
            let _ = c.kill();
            let _ = c.wait();
        }
        let state = store(tmp.path());
        let ids: BTreeSet<String> = (0..n).map(container_id).collect();
        for a in state["allocations"].as_object().into_iter().flatten() {
            assert!(
                ids.contains(a.1["container_id"].as_str().unwrap_or_default()),
                "{a:?}"
            );
        }
        // Every vif on vrouterd belongs to an attachment the store recorded before making it.
        let vifs = vr.api(|c| async move { c.vifs().await }).expect("vifs");
        let recorded: BTreeSet<String> = state["attachments"]
            .as_object()
            .into_iter()
            .flatten()
            .filter_map(|(_, a)| a["vif"].as_str().map(str::to_string))
            .collect();
        for v in &vifs {
            assert!(
                recorded.contains(&v.config.name),
                "{} is not in the store",
                v.config.name
            );
        }
        eprintln!(
            "round {round}: {} vifs, {} recorded after the kills",
            vifs.len(),
            recorded.len()
        );
        for i in 0..n {
            let o = spawn(CNI_BIN, "DEL", &container_id(i), &uid_args(i), &conf)
                .wait_with_output()
                .expect("del");
            assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stdout));
        }
        assert!(vr
            .api(|c| async move { c.vifs().await })
            .expect("vifs")
            .is_empty());
        assert!(vr
            .api(|c| async move { c.nexthops().await })
            .expect("nexthops")
            .is_empty());
        let state = store(tmp.path());
        assert_eq!(state["attachments"], json!({}));
        assert_eq!(state["allocations"], json!({}));
        let left: Vec<_> = std::fs::read_dir(vr.socket_base()).expect("base").collect();
        assert!(left.is_empty(), "{left:?}");
    }
    assert!(vr.stop().success());
}

#[test]
fn kernel_pod_adds_killed_half_way_leave_no_veth_after_del() {
    let node = Netns::new("cnikillk");
    let vr = start_vrouterd(&node);
    let tmp = tempfile::tempdir().expect("tmp");
    let conf = json!({"cniVersion": "1.0.0", "name": "kernel", "type": "vrouter-cni",
        "interfaceType": "veth", "controlSocket": vr.control_socket(), "vrf": 5,
        "dataDir": tmp.path(),
        "ipam": {"type": "vrouter-ipam", "pools": [
            {"name": "v4", "subnet": "198.18.82.0/24"},
            {"name": "v6", "subnet": "2001:db8:18:82::/64"}]}});
    let n = 12u32;
    let pods: Vec<Netns> = (0..n).map(|_| Netns::new("cnikp")).collect();
    // Run in the node's namespace, as the runtime on that node would (`ip netns exec` execs
    // the plugin, so killing the child kills the plugin).
    let spawn_in_node = |command: &str, i: u32| {
        let mut child = Command::new("ip")
            .args(["netns", "exec", node.name(), CNI_BIN])
            .env_clear()
            .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
            .env("CNI_COMMAND", command)
            .env("CNI_CONTAINERID", container_id(i))
            .env("CNI_IFNAME", "eth0")
            .env("CNI_ARGS", "")
            .env("CNI_PATH", "/nonexistent")
            .env("CNI_NETNS", netns_path(&pods[i as usize]))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("plugin");
        let _ = child
            .stdin
            .take()
            .expect("stdin")
            .write_all(conf.to_string().as_bytes());
        child
    };
    let host_ends = || -> Vec<String> {
        node.ip(&["-o", "link", "show"])
            .lines()
            .filter_map(|l| l.split(": ").nth(1))
            .map(|n| n.split('@').next().unwrap_or_default().to_string())
            .filter(|n| n.starts_with("vr"))
            .collect()
    };
    for round in 0..3u64 {
        let children: Vec<Child> = (0..n).map(|i| spawn_in_node("ADD", i)).collect();
        for (i, mut c) in children.into_iter().enumerate() {
            std::thread::sleep(Duration::from_millis(3 * ((i as u64 + round) % 6)));
            let _ = c.kill();
            let _ = c.wait();
        }
        eprintln!(
            "round {round}: {} host ends after the kills",
            host_ends().len()
        );
        for i in 0..n {
            let o = spawn_in_node("DEL", i).wait_with_output().expect("del");
            assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stdout));
        }
        assert_eq!(host_ends(), Vec::<String>::new());
        for p in &pods {
            assert!(!link_exists(p.name(), "eth0"), "{} keeps eth0", p.name());
        }
        assert!(vr
            .api(|c| async move { c.vifs().await })
            .expect("vifs")
            .is_empty());
        let state = store(tmp.path());
        assert_eq!(state["attachments"], json!({}));
        assert_eq!(state["allocations"], json!({}));
    }
    assert!(vr.stop().success());
}
