//! `vrouter-ipam` as a plugin of its own: the built-in pools behind the IPAM plugin interface,
//! for any main plugin to delegate to (and sharing the store, lock and pools with
//! `vrouter-cni` when both name the same data directory).

use serde_json::{json, Map, Value};

use crate::config::{data_dir, parse_object, parse_pools, Env};
use crate::error::{code, CniError, Result};
use crate::ipam;
use crate::store::Store;

fn network(obj: &Map<String, Value>) -> Result<(String, u32)> {
    let name = obj
        .get("name")
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
        .ok_or_else(|| CniError::config("name", "is required"))?
        .to_string();
    // Pools are kept apart per VRF: the network's `vrf`, or VRF 1 for a plugin that has none.
    let vrf = match obj.get("vrf") {
        None | Some(Value::Null) => 1,
        Some(v) => v
            .as_u64()
            .and_then(|n| u32::try_from(n).ok())
            .ok_or_else(|| {
                CniError::config("vrf", format!("must be an unsigned integer, not {v}"))
            })?,
    };
    Ok((name, vrf))
}

fn ipam_obj(obj: &Map<String, Value>) -> Result<&Map<String, Value>> {
    obj.get("ipam")
        .and_then(Value::as_object)
        .ok_or_else(|| CniError::config("ipam", "is required"))
}

pub fn run(env: &Env, stdin: &[u8]) -> Result<Value> {
    if env.command == "VERSION" {
        return Ok(crate::plugin::version(stdin));
    }
    let obj = parse_object(stdin)?;
    let version = obj
        .get("cniVersion")
        .and_then(Value::as_str)
        .unwrap_or("1.0.0")
        .to_string();
    let (name, vrf) = network(&obj)?;
    let pools = parse_pools(ipam_obj(&obj)?)?;
    let store = Store::lock(&data_dir(&obj)?)?;
    let mut state = store.load()?;
    match env.command.as_str() {
        // The store opened and read: addresses can be handed out.
        "STATUS" => return Ok(Value::Null),
        "GC" => {
            let Some(valid) = obj
                .get("cni.dev/valid-attachments")
                .and_then(Value::as_array)
            else {
                return Err(CniError::config(
                    "cni.dev/valid-attachments",
                    "is required for GC",
                ));
            };
            let valid: Vec<(String, String)> = valid
                .iter()
                .filter_map(|v| {
                    Some((
                        v["containerID"].as_str()?.to_string(),
                        v["ifname"].as_str()?.to_string(),
                    ))
                })
                .collect();
            let stale: std::collections::BTreeSet<(String, String)> = state
                .allocations
                .values()
                .filter(|a| a.network == name)
                .map(|a| (a.container_id.clone(), a.ifname.clone()))
                .filter(|k| !valid.contains(k))
                .collect();
            for (cid, ifname) in stale {
                ipam::release(&mut state, &name, &cid, &ifname);
            }
            store.save(&state)?;
            return Ok(Value::Null);
        }
        _ => env.check_attachment()?,
    }
    match env.command.as_str() {
        "ADD" => {
            let leases = ipam::allocate(
                &mut state,
                &name,
                vrf,
                &pools,
                &env.container_id,
                &env.ifname,
            )?;
            store.save(&state)?;
            let ips: Vec<Value> = leases
                .iter()
                .map(|l| {
                    let mut v = json!({"address": l.cidr(), "gateway": l.gateway.to_string()});
                    if version.starts_with("0.") {
                        v["version"] = json!(if l.ip.is_ipv4() { "4" } else { "6" });
                    }
                    v
                })
                .collect();
            let routes: Vec<Value> = leases
                .iter()
                .map(|l| json!({"dst": if l.ip.is_ipv4() { "0.0.0.0/0" } else { "::/0" }, "gw": l.gateway.to_string()}))
                .collect();
            Ok(json!({"cniVersion": version, "ips": ips, "routes": routes, "dns": {}}))
        }
        "DEL" => {
            ipam::release(&mut state, &name, &env.container_id, &env.ifname);
            store.save(&state)?;
            Ok(Value::Null)
        }
        "CHECK" => {
            let held: Vec<_> = state
                .allocations
                .iter()
                .filter(|(_, a)| {
                    a.network == name
                        && a.container_id == env.container_id
                        && a.ifname == env.ifname
                })
                .collect();
            if held.is_empty() {
                return Err(CniError::new(
                    code::UNKNOWN_CONTAINER,
                    format!(
                        "container {} interface {} holds no address of network {name:?}",
                        env.container_id, env.ifname
                    ),
                ));
            }
            Ok(Value::Null)
        }
        other => Err(CniError::new(
            code::INVALID_ENV,
            format!("CNI_COMMAND {other:?} is not one of ADD, DEL, CHECK, STATUS, GC, VERSION"),
        )),
    }
}
