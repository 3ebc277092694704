//! What GoBGP's RIB says, in vrouterd's terms: EVPN type-5 (IP prefix) routes as `gobgp global
//! rib -a evpn -j` prints them, reduced to the best path of each destination with what a tunnel
//! to its node needs (next hop, router's MAC, VNI, encapsulation), and the routes each VRF
//! imports from them. Pure: no I/O, so every rule is unit-tested.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, Ipv4Addr};

use control_api::api::{IpPrefix, MacAddr, RouteTag, VrfRouting};
use serde_json::Value;

/// RFC 9012 tunnel type of VXLAN in the encapsulation extended community.
pub const TUNNEL_TYPE_VXLAN: u64 = 8;
/// VXLAN network identifiers are 24 bits.
pub const VNI_MAX: u32 = (1 << 24) - 1;

/// One best path of an EVPN type-5 route, as vrouterd can use it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Learned {
    pub prefix: IpPrefix,
    pub nexthop: IpAddr,
    pub router_mac: MacAddr,
    pub vni: u32,
    pub targets: BTreeSet<RouteTag>,
}

/// A remote node's tunnel endpoint: where, and the MAC its fabric port answers to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Endpoint {
    pub ip: IpAddr,
    pub mac: [u8; 6],
}

/// What to install for one prefix in one VRF: tunnels to every node advertising it (ECMP
/// when more than one) and the VNI packets carry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Remote {
    pub endpoints: BTreeSet<Endpoint>,
    pub vni: u32,
}

/// The best paths of `rib` (the JSON object `gobgp global rib -a evpn -j` prints), each
/// usable one as [`Learned`]; a path that is not (another route type, no router's MAC, an
/// encapsulation other than VXLAN, a VNI out of range, an unparsable field) goes to `ignored`
/// with the reason, never into the result.
pub fn best_paths(rib: &Value, ignored: &mut Vec<String>) -> Vec<Learned> {
    let mut out = Vec::new();
    let Some(dests) = rib.as_object() else {
        if !rib.is_null() {
            ignored.push(format!("rib is not an object: {rib}"));
        }
        return out;
    };
    for (dest, paths) in dests {
        for path in paths.as_array().into_iter().flatten() {
            if path["best"] != Value::Bool(true) {
                continue;
            }
            match learned(path) {
                Ok(Some(l)) => out.push(l),
                Ok(None) => {}
                Err(why) => ignored.push(format!("{dest}: {why}")),
            }
        }
    }
    out
}

fn learned(path: &Value) -> Result<Option<Learned>, String> {
    let nlri = &path["nlri"];
    if nlri["type"] != 5 {
        return Ok(None);
    }
    let v = &nlri["value"];
    let prefix: IpPrefix = v["prefix"]
        .as_str()
        .ok_or("no prefix")?
        .parse()
        .map_err(|e| format!("prefix: {e}"))?;
    let label = v["label"].as_u64().ok_or("no label")?;
    let vni = u32::try_from(label)
        .ok()
        .filter(|l| (1..=VNI_MAX).contains(l))
        .ok_or(format!("vni {label} is outside 1..={VNI_MAX}"))?;
    let mut nexthop = None;
    let mut router_mac = None;
    let mut tunnel = None;
    let mut targets = BTreeSet::new();
    for attr in path["attrs"].as_array().into_iter().flatten() {
        match attr["type"].as_u64() {
            // MP_REACH_NLRI
            Some(14) => {
                nexthop = attr["nexthop"]
                    .as_str()
                    .and_then(|s| s.parse::<IpAddr>().ok());
            }
            // Extended communities
            Some(16) => {
                for c in attr["value"].as_array().into_iter().flatten() {
                    match (c["type"].as_u64(), c["subtype"].as_u64()) {
                        // Route target (two-octet AS, IPv4, four-octet AS)
                        (Some(0..=2), Some(2)) => {
                            let s = c["value"].as_str().ok_or("route target without value")?;
                            targets.insert(RouteTag::parse_target(s)?);
                        }
                        // Encapsulation (RFC 9012)
                        (Some(3), Some(12)) => tunnel = c["tunnel_type"].as_u64(),
                        // EVPN router's MAC (RFC 9135)
                        (Some(6), Some(3)) => {
                            let m = c["mac"].as_str().ok_or("router's MAC without mac")?;
                            router_mac = Some(
                                m.parse::<MacAddr>()
                                    .map_err(|e| format!("router's MAC: {e}"))?,
                            );
                        }
                        _ => {}
                    }
                }
            }
            _ => {}
        }
    }
    if let Some(t) = tunnel.filter(|t| *t != TUNNEL_TYPE_VXLAN) {
        return Err(format!(
            "tunnel type {t}: vrouter takes EVPN type-5 over VXLAN (8) only"
        ));
    }
    let nexthop = nexthop.ok_or("no next hop")?;
    if nexthop.is_unspecified() || nexthop == IpAddr::V4(Ipv4Addr::BROADCAST) {
        return Err(format!("next hop {nexthop} is no tunnel endpoint"));
    }
    let router_mac = router_mac.ok_or("no router's MAC extended community")?;
    Ok(Some(Learned {
        prefix,
        nexthop,
        router_mac,
        vni,
        targets,
    }))
}

/// The remote routes each VRF imports from `learned`: a path goes to every VRF with one of its
/// route targets among the VRF's import targets, unless it comes from this node (`own` next
/// hop) or names a prefix this node has itself in that VRF (`local`). Paths for one prefix
/// that disagree on the VNI: the lowest VNI wins (a route carries one), the others are
/// reported in `ignored`.
pub fn imports(
    learned: &[Learned],
    routing: &BTreeMap<u32, VrfRouting>,
    own: IpAddr,
    local: &BTreeSet<(u32, IpPrefix)>,
    ignored: &mut Vec<String>,
) -> BTreeMap<(u32, IpPrefix), Remote> {
    let mut by_vrf: BTreeMap<(u32, IpPrefix), BTreeMap<u32, BTreeSet<Endpoint>>> = BTreeMap::new();
    for l in learned {
        if l.nexthop == own {
            continue;
        }
        let mut matched = false;
        for (&vrf, r) in routing {
            let imports: BTreeSet<RouteTag> = r
                .import_targets
                .iter()
                .filter_map(|t| RouteTag::parse_target(t).ok())
                .collect();
            if imports.is_disjoint(&l.targets) {
                continue;
            }
            matched = true;
            if local.contains(&(vrf, l.prefix)) {
                continue;
            }
            by_vrf
                .entry((vrf, l.prefix))
                .or_default()
                .entry(l.vni)
                .or_default()
                .insert(Endpoint {
                    ip: l.nexthop,
                    mac: l.router_mac.0,
                });
        }
        if !matched {
            ignored.push(format!(
                "{} from {}: no VRF imports its route targets",
                l.prefix, l.nexthop
            ));
        }
    }
    by_vrf
        .into_iter()
        .filter_map(|(key, mut vnis)| {
            let (vni, endpoints) = vnis.pop_first()?;
            for (other, eps) in vnis {
                ignored.push(format!(
                    "{} in vrf {}: vni {other} from {eps:?} differs from vni {vni}",
                    key.1, key.0
                ));
            }
            Some((key, Remote { endpoints, vni }))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn path(prefix: &str, label: u64, nh: &str, rt: &str, tunnel: u64, mac: &str) -> Value {
        json!({"nlri": {"type": 5, "value": {"rd": {"type": 0, "admin": 64512, "assigned": 1},
                 "esi": "single-homed", "etag": 0, "prefix": prefix, "gateway": "0.0.0.0", "label": label}},
               "best": true,
               "attrs": [{"type": 1, "value": 2},
                         {"type": 16, "value": [{"type": 0, "subtype": 2, "value": rt},
                                                {"type": 3, "subtype": 12, "tunnel_type": tunnel},
                                                {"type": 6, "subtype": 3, "mac": mac}]},
                         {"type": 14, "nexthop": nh, "afi": 25, "safi": 70}]})
    }

    fn routing(rt: &str) -> VrfRouting {
        VrfRouting {
            rd: "64512:1".into(),
            import_targets: vec![rt.into()],
            export_targets: vec![rt.into()],
            vni: Some(1001),
            label: None,
        }
    }

    #[test]
    fn best_paths_take_type5_vxlan_routes_and_name_what_they_ignore() {
        let mut second = path(
            "198.18.9.0/24",
            1001,
            "198.19.0.3",
            "64512:1",
            8,
            "02:00:00:00:fa:03",
        );
        second["best"] = json!(false);
        let rib = json!({
            "a": [path("198.18.2.0/24", 1001, "198.19.0.2", "64512:1", 8, "02:00:00:00:fa:02"), second],
            "b": [path("198.18.3.0/24", 1001, "198.19.0.3", "64512:1", 11, "02:00:00:00:fa:03")],
            "c": [path("198.18.4.0/24", 1 << 24, "198.19.0.4", "64512:1", 8, "02:00:00:00:fa:04")],
            "d": [path("198.18.5.0/24", 1001, "198.19.0.5", "64512:1", 8, "nope")],
            "e": [json!({"best": true, "nlri": {"type": 2, "value": {}}, "attrs": []})],
        });
        let mut ignored = Vec::new();
        let got = best_paths(&rib, &mut ignored);
        assert_eq!(got.len(), 1, "{got:?}");
        assert_eq!(got[0].prefix, "198.18.2.0/24".parse().unwrap());
        assert_eq!(got[0].nexthop, "198.19.0.2".parse::<IpAddr>().unwrap());
        assert_eq!(got[0].vni, 1001);
        assert_eq!(got[0].router_mac.0, [2, 0, 0, 0, 0xfa, 2]);
        assert_eq!(ignored.len(), 3, "{ignored:?}");
        assert!(ignored[0].contains("tunnel type 11"), "{ignored:?}");
        assert!(ignored[1].contains("vni 16777216"), "{ignored:?}");
        assert!(ignored[2].contains("router's MAC"), "{ignored:?}");
    }

    #[test]
    fn imports_follow_route_targets_skip_own_and_local_and_group_nodes_for_ecmp() {
        let rib = json!({
            "a": [path("198.18.2.0/24", 1001, "198.19.0.2", "64512:1", 8, "02:00:00:00:fa:02")],
            "b": [path("198.18.9.0/24", 1001, "198.19.0.2", "target:64512:1", 8, "02:00:00:00:fa:02")],
            "c": [path("198.18.9.0/24", 1001, "198.19.0.3", "64512:1", 8, "02:00:00:00:fa:03")],
            "d": [path("198.18.1.0/24", 1001, "198.19.0.1", "64512:1", 8, "02:00:00:00:fa:01")],
            "e": [path("198.18.7.0/24", 1001, "198.19.0.3", "64512:7", 8, "02:00:00:00:fa:03")],
            "f": [path("198.18.8.0/24", 1001, "198.19.0.3", "64512:1", 8, "02:00:00:00:fa:03")],
        });
        let mut ignored = Vec::new();
        let learned = best_paths(&rib, &mut ignored);
        let vrfs = BTreeMap::from([(1, routing("target:64512:1"))]);
        let local = BTreeSet::from([(1, "198.18.8.0/24".parse().unwrap())]);
        let own: IpAddr = "198.19.0.1".parse().unwrap();
        let got = imports(&learned, &vrfs, own, &local, &mut ignored);
        let keys: Vec<String> = got.keys().map(|(v, p)| format!("{v} {p}")).collect();
        assert_eq!(keys, ["1 198.18.2.0/24", "1 198.18.9.0/24"]);
        let ecmp = &got[&(1, "198.18.9.0/24".parse().unwrap())];
        assert_eq!(ecmp.endpoints.len(), 2);
        assert_eq!(ecmp.vni, 1001);
        assert!(
            ignored.iter().any(|i| i.contains("198.18.7.0/24")),
            "{ignored:?}"
        );
    }
}
