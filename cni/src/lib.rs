//! `vrouter-cni`: a CNI 1.0 plugin that attaches pods to vrouterd through its REST socket.
//!
//! - DPDK pods (`"interfaceType": "vhost-user"`) get a vhost-user vif whose socket lives in a
//!   directory of their own, `<socketBase>/<K8S_POD_UID>/<container-id[:12]>-<ifname>`, and a
//!   JSON file beside it with the facts the application in the pod needs.
//! - Kernel pods (`"interfaceType": "veth"`) get a veth whose pod end is addressed inside
//!   `CNI_NETNS` and whose host end is an af-packet vif.
//!
//! Either way the pod's addresses are routed to it in its VRF (`/32`, `/128` through a
//! nexthop of its own) and its gateways are answered by vrouterd (routes to a receive nexthop).
//! Addresses come from the built-in pools ([`ipam`], also the `vrouter-ipam` plugin) or from
//! any IPAM plugin on `CNI_PATH`. What ADD made is recorded in a node-local store ([`store`])
//! so that DEL takes away exactly that.

pub mod config;
pub mod error;
pub mod ipam;
pub mod ipam_plugin;
pub mod netif;
pub mod plugin;
pub mod store;

pub use error::{CniError, Result};

/// Reads the environment and stdin, runs `f`, prints its result or the CNI error object on
/// stdout, and returns the exit code.
pub fn main_with(f: fn(&config::Env, &[u8]) -> Result<serde_json::Value>) -> i32 {
    use std::io::{Read, Write};
    let mut stdin = Vec::new();
    let read = std::io::stdin().read_to_end(&mut stdin);
    // Errors are answered in the version the runtime speaks, when it said.
    let version = serde_json::from_slice::<serde_json::Value>(&stdin)
        .ok()
        .and_then(|v| v["cniVersion"].as_str().map(str::to_string))
        .unwrap_or_else(|| "1.0.0".to_string());
    let out = match read {
        Ok(_) => config::Env::read(|k| std::env::var(k).ok()).and_then(|e| f(&e, &stdin)),
        Err(e) => Err(CniError::io(format!(
            "reading the configuration on stdin: {e}"
        ))),
    };
    let mut so = std::io::stdout().lock();
    match out {
        Ok(v) => {
            if !v.is_null() {
                let _ = writeln!(so, "{v}");
            }
            0
        }
        Err(e) => {
            let _ = writeln!(so, "{}", e.to_json(&version));
            eprintln!("{e}");
            1
        }
    }
}
