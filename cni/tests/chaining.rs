//! With Debian's containernetworking-plugins (`/usr/lib/cni`): `host-local` as the delegated
//! IPAM of two kernel pods that then ping each other through vrouterd (its addresses, its
//! store files, released on DEL), and `tuning` chained after `vrouter-cni`, receiving its
//! result as `prevResult` and passing it on, as a runtime runs a conflist.

mod common;

use std::path::Path;

use common::*;
use serde_json::{json, Value};
use testkit::netns::Netns;

fn received(ping: &str) -> u32 {
    ping.split(", ")
        .find_map(|p| p.strip_suffix(" received"))
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or(0)
}

fn address(result: &Value, v6: bool) -> String {
    result["ips"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|i| i["address"].as_str())
        .find(|a| a.contains(':') == v6)
        .unwrap_or_default()
        .to_string()
}

#[test]
fn host_local_as_delegated_ipam_and_tuning_after_vrouter_cni() {
    assert!(
        Path::new(SYSTEM_CNI_DIR).join("host-local").is_file(),
        "containernetworking-plugins is not installed (scripts/install-deps.sh installs it)"
    );
    let node = Netns::new("cnichain");
    let pod1 = Netns::new("cnichp1");
    let pod2 = Netns::new("cnichp2");
    let vr = start_vrouterd(&node);
    let tmp = tempfile::tempdir().expect("tmp");
    let path = cni_path(tmp.path());
    let hl_dir = tmp.path().join("host-local");
    let conf = json!({"cniVersion": "1.0.0", "name": "chained", "type": "vrouter-cni",
        "interfaceType": "veth", "controlSocket": vr.control_socket(), "vrf": 9,
        "dataDir": tmp.path().join("store"),
        "ipam": {"type": "host-local", "dataDir": hl_dir, "ranges": [
            [{"subnet": "198.18.90.0/24"}], [{"subnet": "2001:db8:18:90::/64"}]]}});
    let tuning = json!({"cniVersion": "1.0.0", "name": "chained", "type": "tuning",
        "promisc": true, "sysctl": {"net.ipv4.conf.eth0.arp_announce": "2"},
        "dataDir": tmp.path().join("tuning")});
    let run = |plugin: &str, command, cid: &str, ns: &Netns, conf: &Value| {
        let netns = netns_path(ns);
        Call {
            plugin,
            command,
            container_id: cid,
            ifname: "eth0",
            netns: Some(&netns),
            args: "",
            cni_path: &path,
            node: Some(&node),
        }
        .run(conf)
    };
    let tuning_bin = format!("{SYSTEM_CNI_DIR}/tuning");
    let (c1, c2) = (container_id(1), container_id(2));

    // The conflist [vrouter-cni, tuning]: each result goes to the next plugin as prevResult.
    let r1 = run(CNI_BIN, "ADD", &c1, &pod1, &conf).ok();
    let t1 = run(&tuning_bin, "ADD", &c1, &pod1, &with_prev(&tuning, &r1)).ok();
    let r2 = run(CNI_BIN, "ADD", &c2, &pod2, &conf).ok();
    let t2 = run(&tuning_bin, "ADD", &c2, &pod2, &with_prev(&tuning, &r2)).ok();
    eprintln!("vrouter-cni: {r1}\ntuning: {t1}");
    // tuning passed the addresses on, and did its job inside the pod.
    assert_eq!(t1["ips"], r1["ips"]);
    assert_eq!(t1["interfaces"], r1["interfaces"]);
    let link = pod1.ip(&["link", "show", "dev", "eth0"]);
    assert!(link.contains("PROMISC"), "{link}");
    let sysctl = pod1.exec(&["sysctl", "-n", "net.ipv4.conf.eth0.arp_announce"]);
    assert_eq!(sysctl.trim(), "2");

    // host-local chose the addresses, gateways its .1 / ::1, and keeps its own records.
    let (a1, a2) = (address(&r1, false), address(&r2, false));
    assert!(a1.starts_with("198.18.90.") && a1.ends_with("/24"), "{r1}");
    assert!(address(&r1, true).starts_with("2001:db8:18:90::"), "{r1}");
    assert_ne!(a1, a2);
    assert_eq!(r1["ips"][0]["gateway"], "198.18.90.1");
    let ip1 = a1.split('/').next().unwrap_or_default().to_string();
    let ip2 = a2.split('/').next().unwrap_or_default().to_string();
    let record = hl_dir.join("chained").join(&ip1);
    let held = std::fs::read_to_string(&record).expect("host-local's record");
    assert!(held.contains(&c1), "{held}");

    // The pods talk through vrouterd, over both families.
    let out = pod1.exec(&["ping", "-c", "3", "-i", "0.2", "-W", "2", &ip2]);
    assert_eq!(received(&out), 3, "{out}");
    let ip2_6 = address(&r2, true);
    let ip2_6 = ip2_6.split('/').next().unwrap_or_default();
    let out = pod1.exec(&["ping", "-c", "3", "-i", "0.2", "-W", "2", ip2_6]);
    assert_eq!(received(&out), 3, "{out}");

    // CHECK along the chain, with the chain's final result.
    run(CNI_BIN, "CHECK", &c1, &pod1, &with_prev(&conf, &t1)).ok();
    run(&tuning_bin, "CHECK", &c1, &pod1, &with_prev(&tuning, &t1)).ok();

    // DEL in reverse order; host-local's records go too.
    for (cid, ns, t) in [(&c1, &pod1, &t1), (&c2, &pod2, &t2)] {
        run(&tuning_bin, "DEL", cid, ns, &with_prev(&tuning, t)).ok();
        run(CNI_BIN, "DEL", cid, ns, &with_prev(&conf, t)).ok();
    }
    assert!(!record.exists(), "host-local still holds {ip1}");
    assert!(!hl_dir.join("chained").join(&ip2).exists());
    assert!(vr
        .api(|c| async move { c.vifs().await })
        .expect("vifs")
        .is_empty());
    assert!(!link_exists(pod1.name(), "eth0"));
    assert!(vr.stop().success());
}
