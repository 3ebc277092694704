//! Pods attached by the plugin as a container runtime runs it, against a real vrouterd: two
//! DPDK pods (testpmd over virtio-user at the socket path the result names, one vif in each
//! vhost-user mode) and two kernel pods (real network namespaces) in one dual-stack network. A
//! kernel pod pings both DPDK pods, and the other kernel pod over IPv4 and IPv6; CHECK passes, and fails once something ADD made is gone; a
//! second ADD answers the same; DEL leaves no vif, nexthop, route, VRF, socket, directory,
//! veth, address or record behind, and succeeds again when everything is gone.

mod common;

use std::path::{Path, PathBuf};
use std::time::Duration;

use common::*;
use serde_json::{json, Value};
use testkit::netns::Netns;
use testkit::testpmd::{TestpmdConfig, TestpmdPod};

const VRF: u32 = 7;

fn ipam() -> Value {
    json!({"type": "vrouter-ipam", "pools": [
        {"name": "v4", "subnet": "198.18.40.0/24"},
        {"name": "v6", "subnet": "2001:db8:18:40::/64"}]})
}

/// An icmpecho pod (answers ARP and pings) on `socket`; a virtio-user server when its vif is
/// in client mode.
fn echo_pod(socket: &Path, server: bool) -> TestpmdPod {
    let cfg = TestpmdConfig {
        forward_mode: "icmpecho".into(),
        ..TestpmdConfig::receiver(socket)
    };
    if server { cfg.as_server() } else { cfg }.start()
}

fn received(ping: &str) -> u32 {
    ping.split(", ")
        .find_map(|p| p.strip_suffix(" received"))
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or(0)
}

fn first_ip(result: &Value, v6: bool) -> String {
    result["ips"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|i| i["address"].as_str())
        .find(|a| a.contains(':') == v6)
        .and_then(|a| a.split('/').next())
        .unwrap_or_default()
        .to_string()
}

#[test]
fn dpdk_and_kernel_pods_attached_by_the_plugin_ping_check_and_del_leaves_nothing() {
    let node = Netns::new("cninode");
    let pod_ns = Netns::new("cnipod");
    let pod2_ns = Netns::new("cnipod2");
    let vr = start_vrouterd(&node);
    let tmp = tempfile::tempdir().expect("tmp");
    let data = tmp.path().join("store");
    let path = cni_path(tmp.path());
    let base = vr.socket_base();
    let dpdk = |mode: &str| {
        json!({"cniVersion": "1.0.0", "name": "pods", "type": "vrouter-cni",
            "interfaceType": "vhost-user", "controlSocket": vr.control_socket(), "vrf": VRF,
            "socketBase": base, "vhostuserMode": mode, "dataDir": data, "ipam": ipam()})
    };
    let kernel = json!({"cniVersion": "1.0.0", "name": "pods", "type": "vrouter-cni",
        "interfaceType": "veth", "controlSocket": vr.control_socket(), "vrf": VRF, "mtu": 1500,
        "dataDir": data, "ipam": ipam()});
    let pid = std::process::id();
    let (cid_a, cid_b, cid_k) = (container_id(1), container_id(2), container_id(3));
    let cid_k2 = container_id(4);
    let (uid_a, uid_b) = (format!("uid-a-{pid}"), format!("uid-b-{pid}"));
    let args_a =
        format!("IgnoreUnknown=1;K8S_POD_NAMESPACE=default;K8S_POD_NAME=a;K8S_POD_UID={uid_a}");
    let args_b =
        format!("IgnoreUnknown=1;K8S_POD_NAMESPACE=default;K8S_POD_NAME=b;K8S_POD_UID={uid_b}");
    let pod_path = netns_path(&pod_ns);
    let pod2_path = netns_path(&pod2_ns);
    let call = |command, cid, ifname, netns: Option<&Path>, args, conf: &Value| {
        Call {
            plugin: CNI_BIN,
            command,
            container_id: cid,
            ifname,
            netns,
            args,
            cni_path: &path,
            node: Some(&node),
        }
        .run(conf)
    };

    // ADD, as the runtime does for each pod.
    let conf_a = dpdk("server");
    let conf_b = dpdk("client");
    let res_a = call("ADD", &cid_a, "net1", None, &args_a, &conf_a).ok();
    let res_b = call("ADD", &cid_b, "net1", None, &args_b, &conf_b).ok();
    let res_k = call("ADD", &cid_k, "eth0", Some(&pod_path), "", &kernel).ok();
    let res_k2 = call("ADD", &cid_k2, "eth0", Some(&pod2_path), "", &kernel).ok();
    eprintln!("A: {res_a}\nB: {res_b}\nK: {res_k}\nK2: {res_k2}");

    // The DPDK pod's socket where the seed says, the facts file beside it.
    let sock_a = PathBuf::from(
        res_a["interfaces"][0]["socketPath"]
            .as_str()
            .expect("socketPath"),
    );
    let sock_b = PathBuf::from(
        res_b["interfaces"][0]["socketPath"]
            .as_str()
            .expect("socketPath"),
    );
    assert_eq!(
        sock_a,
        base.join(&uid_a).join(format!("{}-net1", &cid_a[..12]))
    );
    assert_eq!(
        sock_b,
        base.join(&uid_b).join(format!("{}-net1", &cid_b[..12]))
    );
    assert!(
        sock_a.exists(),
        "server mode: vrouterd listens at {}",
        sock_a.display()
    );
    let facts: Value = serde_json::from_slice(
        &std::fs::read(
            base.join(&uid_a)
                .join(format!("{}-net1.json", &cid_a[..12])),
        )
        .expect("facts file"),
    )
    .expect("facts JSON");
    assert_eq!(facts["socketPath"], res_a["interfaces"][0]["socketPath"]);
    assert_eq!(facts["mac"], res_a["interfaces"][0]["mac"]);
    assert_eq!(facts["ips"], res_a["ips"]);
    assert_eq!(facts["vrouterMac"], "00:00:5e:00:01:00");
    assert_eq!(facts["vhostuserMode"], "server");
    // Dual stack from the pools, each pod its own addresses, gateways the pools' first.
    let ips: Vec<String> = [&res_a, &res_b, &res_k, &res_k2]
        .iter()
        .flat_map(|r| [first_ip(r, false), first_ip(r, true)])
        .collect();
    for (i, ip) in ips.iter().enumerate() {
        assert!(
            ip.starts_with(if i % 2 == 0 {
                "198.18.40."
            } else {
                "2001:db8:18:40::"
            }),
            "{ips:?}"
        );
        assert_eq!(ips.iter().filter(|o| *o == ip).count(), 1, "{ips:?}");
    }
    assert_eq!(res_a["ips"][0]["gateway"], "198.18.40.1");
    assert_eq!(
        res_k["routes"][0],
        json!({"dst": "0.0.0.0/0", "gw": "198.18.40.1"})
    );

    // The kernel pod: addressed inside its namespace, host end attached with offloads on.
    let host_end = res_k["interfaces"][0]["name"]
        .as_str()
        .expect("host end")
        .to_string();
    assert_eq!(
        res_k["interfaces"][1]["sandbox"],
        pod_path.display().to_string()
    );
    let addrs = pod_ns.ip(&["addr", "show", "dev", "eth0"]);
    assert!(
        addrs.contains(&first_ip(&res_k, false)) && addrs.contains(&first_ip(&res_k, true)),
        "{addrs}"
    );
    let features = node.exec(&["ethtool", "-k", &host_end]);
    assert!(features.contains("tx-checksumming: on"), "{features}");
    assert!(
        features.contains("generic-segmentation-offload: on"),
        "{features}"
    );

    // A second ADD for the same container answers the same and makes nothing new.
    let vifs_before = vr
        .api(|c| async move { c.vifs().await })
        .expect("vifs")
        .len();
    let again = call("ADD", &cid_a, "net1", None, &args_a, &conf_a).ok();
    assert_eq!(again, res_a);
    assert_eq!(
        vr.api(|c| async move { c.vifs().await })
            .expect("vifs")
            .len(),
        vifs_before
    );
    assert_eq!(vifs_before, 4);

    // Traffic: the kernel pod pings both DPDK pods through vrouterd.
    let mut pod_a = echo_pod(&sock_a, false);
    let mut pod_b = echo_pod(&sock_b, true);
    let vif_a = format!("{}-net1", &cid_a[..12]);
    let vif_b = format!("{}-net1", &cid_b[..12]);
    vr.wait_connected(&vif_a);
    vr.wait_connected(&vif_b);
    for target in [first_ip(&res_a, false), first_ip(&res_b, false)] {
        // "Connected" is vrouterd's side of the rings; testpmd starts forwarding a moment
        // later (much later on a loaded machine). Once it answers, it answers every ping.
        testkit::wait::until(
            &format!("the DPDK pod at {target} answers"),
            testkit::wait::DEADLINE,
            || {
                pod_ns
                    .command("ping")
                    .args(["-c", "1", "-W", "1", &target])
                    .stdout(std::process::Stdio::null())
                    .status()
                    .map(|s| s.success())
                    .unwrap_or(false)
            },
            |answered| *answered,
        );
        let out = pod_ns.exec(&["ping", "-c", "5", "-i", "0.2", "-W", "2", &target]);
        assert_eq!(received(&out), 5, "{out}");
    }
    assert!(vr.vif(&vif_a).status.counters.tx_packets >= 5);
    // Kernel pod to kernel pod, IPv4 and IPv6 (vrouterd answering neighbour discovery for the
    // IPv6 gateway and the other pod).
    for target in [first_ip(&res_k2, false), first_ip(&res_k2, true)] {
        let out = pod_ns.exec(&["ping", "-c", "3", "-i", "0.2", "-W", "2", &target]);
        assert_eq!(received(&out), 3, "{out}");
    }

    // CHECK, with the result ADD gave as prevResult.
    call(
        "CHECK",
        &cid_a,
        "net1",
        None,
        &args_a,
        &with_prev(&conf_a, &res_a),
    )
    .ok();
    call(
        "CHECK",
        &cid_b,
        "net1",
        None,
        &args_b,
        &with_prev(&conf_b, &res_b),
    )
    .ok();
    call(
        "CHECK",
        &cid_k,
        "eth0",
        Some(&pod_path),
        "",
        &with_prev(&kernel, &res_k),
    )
    .ok();
    // ... and CHECK sees what is missing: an address gone from the pod.
    pod_ns.ip(&[
        "addr",
        "del",
        &format!("{}/24", first_ip(&res_k, false)),
        "dev",
        "eth0",
    ]);
    let msg = call(
        "CHECK",
        &cid_k,
        "eth0",
        Some(&pod_path),
        "",
        &with_prev(&kernel, &res_k),
    )
    .err(103);
    assert!(msg.contains(&first_ip(&res_k, false)), "{msg}");
    // A CHECK for a container never added is an unknown container.
    let stranger = container_id(9);
    call(
        "CHECK",
        &stranger,
        "eth0",
        Some(&pod_path),
        "",
        &with_prev(&kernel, &res_k),
    )
    .err(3);

    // The pods go away, then DEL, as the runtime does; twice, the second finding nothing.
    pod_a.stop(Duration::from_secs(20));
    pod_b.stop(Duration::from_secs(20));
    for _ in 0..2 {
        call(
            "DEL",
            &cid_a,
            "net1",
            None,
            &args_a,
            &with_prev(&conf_a, &res_a),
        )
        .ok();
        call(
            "DEL",
            &cid_b,
            "net1",
            None,
            &args_b,
            &with_prev(&conf_b, &res_b),
        )
        .ok();
        call(
            "DEL",
            &cid_k,
            "eth0",
            Some(&pod_path),
            "",
            &with_prev(&kernel, &res_k),
        )
        .ok();
        call(
            "DEL",
            &cid_k2,
            "eth0",
            Some(&pod2_path),
            "",
            &with_prev(&kernel, &res_k2),
        )
        .ok();
    }
    let vifs = vr.api(|c| async move { c.vifs().await }).expect("vifs");
    assert!(vifs.is_empty(), "{vifs:?}");
    let nexthops = vr
        .api(|c| async move { c.nexthops().await })
        .expect("nexthops");
    assert!(nexthops.is_empty(), "{nexthops:?}");
    let vrfs = vr.api(|c| async move { c.vrfs().await }).expect("vrfs");
    assert!(
        vrfs.iter().all(|v| v.vrf != VRF),
        "the plugin made VRF {VRF}, and took it away: {vrfs:?}"
    );
    for dir in [base.join(&uid_a), base.join(&uid_b)] {
        assert!(!dir.exists(), "{} left behind", dir.display());
    }
    assert!(
        !link_exists(node.name(), &host_end),
        "host end {host_end} left behind"
    );
    assert!(!link_exists(pod_ns.name(), "eth0"), "pod end left behind");
    assert!(!link_exists(pod2_ns.name(), "eth0"), "pod end left behind");
    let state = store(&data);
    for key in ["attachments", "allocations", "pools", "gateways", "vrfs"] {
        assert!(
            state[key].as_object().is_none_or(|o| o.is_empty()),
            "{key} left in the store: {state}"
        );
    }
    assert!(state["receive_nexthop"].is_null(), "{state}");
    assert!(vr.stop().success());
}
