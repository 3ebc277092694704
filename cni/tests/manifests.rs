//! The example manifests under `deploy/` stay valid: every YAML document parses; each
//! NetworkAttachmentDefinition's config and the CNI config file pass the plugin's own
//! validation; networks in one VRF have no overlapping pools; the DaemonSet runs vrouterd
//! privileged on the host network with hugepages, with options vrouterd has, and with the
//! control socket and socket base the networks name, mounted from the node; the example pod
//! asks for a network that exists and mounts its own socket directory.

mod common;

use std::path::{Path, PathBuf};

use serde::Deserialize;
use serde_json::Value;
use vrouter_cni::config::{overlaps, IpamConf, NetConf};

fn deploy() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(|p| p.join("deploy"))
        .unwrap_or_default()
}

fn documents(path: &Path) -> Vec<Value> {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_yaml::Deserializer::from_str(&text)
        .map(|d| Value::deserialize(d).unwrap_or_else(|e| panic!("{}: {e}", path.display())))
        .filter(|v| !v.is_null())
        .collect()
}

fn parse_conf(what: &str, text: &str) -> NetConf {
    NetConf::parse(text.as_bytes()).unwrap_or_else(|e| panic!("{what}: {e}"))
}

#[test]
fn example_manifests_parse_and_agree_with_each_other_and_with_vrouterd() {
    let mut docs = Vec::new();
    let dir = deploy().join("kubernetes");
    for e in std::fs::read_dir(&dir).expect("deploy/kubernetes") {
        let path = e.expect("entry").path();
        if path.extension().is_some_and(|x| x == "yaml") {
            for d in documents(&path) {
                docs.push((path.display().to_string(), d));
            }
        }
    }
    let of_kind = |k: &str| -> Vec<&(String, Value)> {
        docs.iter().filter(|(_, d)| d["kind"] == k).collect()
    };

    // The networks.
    let nads = of_kind("NetworkAttachmentDefinition");
    assert!(nads.len() >= 2, "one per pod kind");
    let mut confs = Vec::new();
    for (file, d) in &nads {
        assert_eq!(d["apiVersion"], "k8s.cni.cncf.io/v1", "{file}");
        let text = d["spec"]["config"]
            .as_str()
            .unwrap_or_else(|| panic!("{file}: spec.config"));
        let conf = parse_conf(file, text);
        assert_eq!(
            conf.name,
            d["metadata"]["name"].as_str().unwrap_or_default(),
            "{file}"
        );
        confs.push((file.clone(), conf));
    }
    let kinds: Vec<_> = confs.iter().map(|(_, c)| c.interface_type).collect();
    assert!(kinds.contains(&vrouter_cni::config::InterfaceType::VhostUser));
    assert!(kinds.contains(&vrouter_cni::config::InterfaceType::Veth));

    // The CNI config file (a conflist: the runtime gives each plugin the list's name and
    // version).
    let list_path = deploy().join("cni/10-vrouter.conflist");
    let list: Value = serde_json::from_slice(&std::fs::read(&list_path).expect("conflist"))
        .expect("conflist JSON");
    let mut first = list["plugins"][0].clone();
    first["cniVersion"] = list["cniVersion"].clone();
    first["name"] = list["name"].clone();
    confs.push((
        list_path.display().to_string(),
        parse_conf("conflist", &first.to_string()),
    ));

    // Pools of networks in one VRF never overlap (the plugin would refuse the second).
    for (i, (fa, a)) in confs.iter().enumerate() {
        for (fb, b) in &confs[i + 1..] {
            if a.vrf != b.vrf {
                continue;
            }
            let (IpamConf::Builtin { pools: pa }, IpamConf::Builtin { pools: pb }) =
                (&a.ipam, &b.ipam)
            else {
                continue;
            };
            for p in pa {
                for q in pb {
                    assert!(
                        !overlaps(&p.subnet, &q.subnet),
                        "{fa} {} overlaps {fb} {}",
                        p.subnet,
                        q.subnet
                    );
                }
            }
        }
    }

    // vrouterd's DaemonSet.
    let ds = of_kind("DaemonSet");
    assert_eq!(ds.len(), 1);
    let (file, ds) = ds[0];
    let spec = &ds["spec"]["template"]["spec"];
    assert_eq!(spec["hostNetwork"], true, "{file}");
    let c = spec["containers"]
        .as_array()
        .and_then(|cs| cs.iter().find(|c| c["name"] == "vrouterd"))
        .unwrap_or_else(|| panic!("{file}: a vrouterd container"));
    assert_eq!(c["securityContext"]["privileged"], true);
    assert!(
        c["resources"]["limits"]["hugepages-2Mi"].is_string(),
        "{file}: hugepages"
    );
    let args: Vec<&str> = c["args"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .collect();
    let help = std::process::Command::new(common::vrouterd_bin())
        .arg("--help")
        .output()
        .expect("vrouterd --help");
    let help = String::from_utf8_lossy(&help.stdout);
    for a in &args {
        let flag = a.split('=').next().unwrap_or_default();
        assert!(help.contains(flag), "{file}: vrouterd has no option {flag}");
    }
    let opt = |name: &str| {
        args.iter()
            .find_map(|a| a.strip_prefix(&format!("{name}=")))
            .map(PathBuf::from)
            .unwrap_or_else(|| panic!("{file}: {name}"))
    };
    let (control, base) = (opt("--control-socket"), opt("--socket-base"));
    let mounts: Vec<&str> = c["volumeMounts"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|m| m["mountPath"].as_str())
        .collect();
    let host_paths: Vec<&str> = spec["volumes"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|v| v["hostPath"]["path"].as_str())
        .collect();
    assert!(
        mounts.contains(&base.to_str().unwrap_or_default()),
        "{file}: the socket base is mounted"
    );
    assert!(
        host_paths.contains(&base.to_str().unwrap_or_default()),
        "{file}: from the node"
    );
    for (f, conf) in &confs {
        assert_eq!(
            conf.control_socket, control,
            "{f}: controlSocket is vrouterd's"
        );
        if conf.interface_type == vrouter_cni::config::InterfaceType::VhostUser {
            assert!(
                conf.socket_base.starts_with(&base),
                "{f}: socketBase under vrouterd's"
            );
        }
    }

    // The example pod.
    for (file, pod) in of_kind("Pod") {
        let nets = pod["metadata"]["annotations"]["k8s.v1.cni.cncf.io/networks"]
            .as_str()
            .unwrap_or_else(|| panic!("{file}: networks annotation"));
        for n in nets.split(',') {
            let name = n.trim().split('@').next().unwrap_or_default();
            assert!(
                confs.iter().any(|(_, c)| c.name == name),
                "{file}: no network {name}"
            );
        }
        let mounts = pod["spec"]["containers"][0]["volumeMounts"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        assert!(
            mounts.iter().any(|m| m["subPathExpr"] == "$(POD_UID)"),
            "{file}: the pod mounts only its own socket directory"
        );
    }
}
