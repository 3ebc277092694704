//! What GoBGP's RIB says, in vrouterd's terms: EVPN type-5 (IP prefix) routes and VPNv4/VPNv6
//! (L3VPN, RFC 4364/4659) routes, reduced to the best path of each destination with what a
//! tunnel to its node needs (next hop, router's MAC, VNI or MPLS label, encapsulation), and
//! the routes each VRF imports from them. The rules for one path ([`evpn_learned`],
//! [`vpn_learned`]) take its fields whichever form they came in: GoBGP's API messages
//! ([`crate::api::path_learned`]), or in the tests the JSON `gobgp global rib -a
//! evpn|vpnv4|vpnv6 -j` prints ([`path_learned`]). Pure: no I/O, so every rule is unit-tested.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, Ipv4Addr};

use control_api::api::{IpPrefix, MacAddr, RouteTag, TunnelEncap, VrfRouting};
#[cfg(test)]
use serde_json::Value;

/// RFC 9012 tunnel types in the encapsulation extended community.
pub const TUNNEL_TYPE_VXLAN: u64 = 8;
pub const TUNNEL_TYPE_MPLS_GRE: u64 = 11;
pub const TUNNEL_TYPE_MPLS_UDP: u64 = 13;
/// VXLAN network identifiers are 24 bits.
pub const VNI_MAX: u32 = (1 << 24) - 1;
/// MPLS labels are 20 bits; 0–15 are reserved (RFC 3032).
pub const MPLS_LABEL_MIN: u32 = 16;
pub const MPLS_LABEL_MAX: u32 = (1 << 20) - 1;

/// The address families vrouter-bgp speaks: EVPN type-5 over VXLAN, L3VPN over MPLS.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Family {
    Evpn,
    Vpn,
}

/// A tunnel's encapsulation (vrouterd's [`TunnelEncap`], ordered for use in keys).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Encap {
    Vxlan,
    MplsUdp,
    MplsGre,
}

impl Encap {
    pub fn tunnel(self) -> TunnelEncap {
        match self {
            Encap::Vxlan => TunnelEncap::Vxlan,
            Encap::MplsUdp => TunnelEncap::Mplsoudp,
            Encap::MplsGre => TunnelEncap::Mplsogre,
        }
    }

    /// The RFC 9012 tunnel type.
    pub fn tunnel_type(self) -> u64 {
        match self {
            Encap::Vxlan => TUNNEL_TYPE_VXLAN,
            Encap::MplsUdp => TUNNEL_TYPE_MPLS_UDP,
            Encap::MplsGre => TUNNEL_TYPE_MPLS_GRE,
        }
    }
}

/// What this node prefers where a choice is left to it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Preference {
    /// The MPLS encapsulation of the VPN routes it originates, and of learned VPN paths that
    /// carry no encapsulation community (or both MPLS ones).
    pub mpls: Encap,
    /// The family installed when a prefix is learned both as EVPN and as VPN paths.
    pub family: Family,
}

/// One best path of an EVPN type-5 or VPN route, as vrouterd can use it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Learned {
    pub family: Family,
    pub prefix: IpPrefix,
    pub nexthop: IpAddr,
    /// EVPN: the router's MAC; VPN: none (vrouterd resolves the next hop by ARP/ND).
    pub router_mac: Option<MacAddr>,
    /// The VNI (EVPN) or MPLS label (VPN) packets to this path carry.
    pub label: u32,
    pub encap: Encap,
    pub targets: BTreeSet<RouteTag>,
}

/// A remote node's tunnel endpoint: where, how, the MAC its fabric port answers to, and the
/// VNI or label the tunnel pushes itself when it differs from the route's (a node that
/// allocated its own label for a prefix other nodes advertise too).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Endpoint {
    pub ip: IpAddr,
    pub encap: Encap,
    pub mac: Option<[u8; 6]>,
    pub label: Option<u32>,
}

/// What to install for one prefix in one VRF: tunnels to every node advertising it (ECMP
/// when more than one) and the VNI or label packets carry, unless their tunnel has its own.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Remote {
    pub endpoints: BTreeSet<Endpoint>,
    pub label: u32,
}

/// The best paths of `rib` (the JSON object `gobgp global rib -a evpn|vpnv4|vpnv6 -j` prints
/// for `family`), each usable one as [`Learned`]; a path that is not (another route type, no
/// router's MAC on an EVPN route, an encapsulation vrouterd does not speak for the family, a
/// VNI or label out of range, a label stack, an unparsable field) goes to `ignored` with the
/// reason, never into the result.
#[cfg(test)] // vrouter-bgp reads paths one by one ([`path_learned`]); the tests use tables.
pub fn best_paths(
    rib: &Value,
    family: Family,
    prefer: Preference,
    ignored: &mut Vec<String>,
) -> Vec<Learned> {
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
            match path_learned(path, family, prefer) {
                Ok(Some(l)) => out.push(l),
                Ok(None) => {}
                Err(why) => ignored.push(format!("{dest}: {why}")),
            }
        }
    }
    out
}

#[cfg(test)] // vrouter-bgp reads GoBGP's API messages (crate::api); the tests use JSON.
/// One best path of `family` (as `gobgp -j` prints it, in a table or a monitor line) as
/// [`Learned`]: `Ok(None)` for a route type vrouter-bgp does not take (not EVPN type 5), the
/// reason for one it refuses.
pub fn path_learned(
    path: &Value,
    family: Family,
    prefer: Preference,
) -> Result<Option<Learned>, String> {
    match family {
        Family::Evpn => learned_evpn(path),
        Family::Vpn => learned_vpn(path, prefer.mpls),
    }
}

/// What a path's attributes say, whatever its family: read from `gobgp -j`'s JSON
/// ([`attrs`]) or straight from GoBGP's API ([`crate::api::path_learned`]).
#[derive(Default)]
pub struct Attrs {
    /// MP_REACH_NLRI's next hop, when it parses.
    pub nexthop: Option<IpAddr>,
    /// The EVPN router's MAC extended community (RFC 9135).
    pub router_mac: Option<MacAddr>,
    /// The encapsulation extended communities' tunnel types (RFC 9012).
    pub tunnels: BTreeSet<u64>,
    /// The route targets.
    pub targets: BTreeSet<RouteTag>,
}

impl Attrs {
    /// A route target extended community's value (`ASN:N`, `IPv4:N`).
    pub fn target(&mut self, value: &str) -> Result<(), String> {
        self.targets.insert(RouteTag::parse_target(value)?);
        Ok(())
    }

    /// The router's MAC extended community's MAC.
    pub fn router_mac(&mut self, mac: &str) -> Result<(), String> {
        let m = mac.parse::<MacAddr>();
        self.router_mac = Some(m.map_err(|e| format!("router's MAC: {e}"))?);
        Ok(())
    }
}

#[cfg(test)] // vrouter-bgp reads GoBGP's API messages (crate::api); the tests use JSON.
fn attrs(path: &Value) -> Result<Attrs, String> {
    let mut a = Attrs::default();
    for attr in path["attrs"].as_array().into_iter().flatten() {
        match attr["type"].as_u64() {
            // MP_REACH_NLRI
            Some(14) => {
                a.nexthop = attr["nexthop"]
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
                            a.target(s)?;
                        }
                        // Encapsulation (RFC 9012)
                        (Some(3), Some(12)) => {
                            if let Some(t) = c["tunnel_type"].as_u64() {
                                a.tunnels.insert(t);
                            }
                        }
                        // EVPN router's MAC (RFC 9135)
                        (Some(6), Some(3)) => {
                            let m = c["mac"].as_str().ok_or("router's MAC without mac")?;
                            a.router_mac(m)?;
                        }
                        _ => {}
                    }
                }
            }
            _ => {}
        }
    }
    Ok(a)
}

fn tunnel_endpoint(nexthop: Option<IpAddr>) -> Result<IpAddr, String> {
    let mut nexthop = nexthop.ok_or("no next hop")?;
    // A VPNv6 route's IPv4 next hop may come as an IPv4-mapped IPv6 address (RFC 4659).
    if let IpAddr::V6(v6) = nexthop {
        if let Some(v4) = v6.to_ipv4_mapped() {
            nexthop = IpAddr::V4(v4);
        }
    }
    if nexthop.is_unspecified()
        || nexthop.is_multicast()
        || nexthop == IpAddr::V4(Ipv4Addr::BROADCAST)
    {
        return Err(format!("next hop {nexthop} is no tunnel endpoint"));
    }
    Ok(nexthop)
}

#[cfg(test)] // vrouter-bgp reads GoBGP's API messages (crate::api); the tests use JSON.
fn prefix_of(nlri: &Value) -> Result<IpPrefix, String> {
    parse_prefix(nlri["prefix"].as_str().ok_or("no prefix")?)
}

/// An NLRI's prefix, `ADDR/LEN`.
pub fn parse_prefix(s: &str) -> Result<IpPrefix, String> {
    s.parse().map_err(|e| format!("prefix: {e}"))
}

#[cfg(test)] // vrouter-bgp reads GoBGP's API messages (crate::api); the tests use JSON.
fn learned_evpn(path: &Value) -> Result<Option<Learned>, String> {
    let nlri = &path["nlri"];
    if nlri["type"] != 5 {
        return Ok(None);
    }
    let v = &nlri["value"];
    evpn_learned(prefix_of(v), v["label"].as_u64(), || attrs(path)).map(Some)
}

/// An EVPN type-5 path as [`Learned`], from its prefix, its label (the VNI) and its attributes
/// (read only once the NLRI passed), whichever form they were read from.
pub fn evpn_learned(
    prefix: Result<IpPrefix, String>,
    label: Option<u64>,
    attrs: impl FnOnce() -> Result<Attrs, String>,
) -> Result<Learned, String> {
    let prefix = prefix?;
    let label = label.ok_or("no label")?;
    let vni = u32::try_from(label)
        .ok()
        .filter(|l| (1..=VNI_MAX).contains(l))
        .ok_or(format!("vni {label} is outside 1..={VNI_MAX}"))?;
    let a = attrs()?;
    if let Some(t) = a.tunnels.iter().find(|t| **t != TUNNEL_TYPE_VXLAN) {
        return Err(format!(
            "tunnel type {t}: vrouter takes EVPN type-5 over VXLAN (8) only"
        ));
    }
    let nexthop = tunnel_endpoint(a.nexthop)?;
    let router_mac = a.router_mac.ok_or("no router's MAC extended community")?;
    Ok(Learned {
        family: Family::Evpn,
        prefix,
        nexthop,
        router_mac: Some(router_mac),
        label: vni,
        encap: Encap::Vxlan,
        targets: a.targets,
    })
}

#[cfg(test)] // vrouter-bgp reads GoBGP's API messages (crate::api); the tests use JSON.
fn learned_vpn(path: &Value, prefer: Encap) -> Result<Option<Learned>, String> {
    let nlri = &path["nlri"];
    let labels = || {
        let labels = nlri["labels"].as_array().ok_or("no labels")?;
        Ok(labels.iter().map(Value::as_u64).collect())
    };
    vpn_learned(prefix_of(nlri), labels, || attrs(path), prefer).map(Some)
}

/// A VPNv4/VPNv6 path as [`Learned`], from its prefix, its label stack (`None` for a label
/// that is no number) and its attributes (read only once the NLRI passed), whichever form
/// they were read from.
pub fn vpn_learned(
    prefix: Result<IpPrefix, String>,
    labels: impl FnOnce() -> Result<Vec<Option<u64>>, String>,
    attrs: impl FnOnce() -> Result<Attrs, String>,
    prefer: Encap,
) -> Result<Learned, String> {
    let prefix = prefix?;
    let labels = labels()?;
    let [label] = labels.as_slice() else {
        return Err(format!(
            "{} labels: vrouter takes one (a per-VRF or per-prefix label)",
            labels.len()
        ));
    };
    let label = label.ok_or("label is no number")?;
    let label = u32::try_from(label)
        .ok()
        .filter(|l| (MPLS_LABEL_MIN..=MPLS_LABEL_MAX).contains(l))
        .ok_or(format!(
            "label {label} is outside {MPLS_LABEL_MIN}..={MPLS_LABEL_MAX}"
        ))?;
    let a = attrs()?;
    // RFC 9012: several encapsulation communities offer a choice; none leaves it to us.
    let offered = |e: Encap| a.tunnels.contains(&e.tunnel_type());
    let other = match prefer {
        Encap::MplsGre => Encap::MplsUdp,
        _ => Encap::MplsGre,
    };
    let encap = if a.tunnels.is_empty() || offered(prefer) {
        prefer
    } else if offered(other) {
        other
    } else {
        return Err(format!(
            "tunnel types {:?}: vrouter takes VPN routes over MPLS-over-UDP (13) or MPLS-over-GRE (11)",
            a.tunnels
        ));
    };
    let nexthop = tunnel_endpoint(a.nexthop)?;
    Ok(Learned {
        family: Family::Vpn,
        prefix,
        nexthop,
        router_mac: None,
        label,
        encap,
        targets: a.targets,
    })
}

/// The remote routes each VRF imports from `learned`: a path goes to every VRF with one of its
/// route targets among the VRF's import targets, unless it comes from this node (`own` next
/// hop) or names a prefix this node has itself in that VRF (`local`). A prefix learned both as
/// EVPN and as VPN paths takes the preferred family's. Paths for one prefix that disagree on
/// the VNI or label (each node allocates its own): the route carries the lowest, and the
/// tunnels to the nodes that advertised another one push theirs.
pub fn imports(
    learned: &[Learned],
    routing: &BTreeMap<u32, VrfRouting>,
    own: IpAddr,
    local: &BTreeSet<(u32, IpPrefix)>,
    prefer: Family,
    ignored: &mut Vec<String>,
) -> BTreeMap<(u32, IpPrefix), Remote> {
    // Every (VRF and prefix, family, label, node) a path brings, sorted: each VRF's prefix
    // with its families in order, each family's labels lowest first.
    let mut found: Vec<((u32, IpPrefix), Family, u32, Endpoint)> = Vec::new();
    // Each VRF's import targets, read once for all the paths.
    let routing: Vec<(u32, BTreeSet<RouteTag>)> = routing
        .iter()
        .map(|(&vrf, r)| {
            let imports = r
                .import_targets
                .iter()
                .filter_map(|t| RouteTag::parse_target(t).ok())
                .collect();
            (vrf, imports)
        })
        .collect();
    for l in learned {
        if l.nexthop == own {
            continue;
        }
        let mut matched = false;
        for (vrf, imports) in &routing {
            let vrf = *vrf;
            if imports.is_disjoint(&l.targets) {
                continue;
            }
            matched = true;
            if local.contains(&(vrf, l.prefix)) {
                continue;
            }
            let node = Endpoint {
                ip: l.nexthop,
                encap: l.encap,
                mac: l.router_mac.map(|m| m.0),
                label: None,
            };
            found.push(((vrf, l.prefix), l.family, l.label, node));
        }
        if !matched {
            ignored.push(format!(
                "{} from {}: no VRF imports its route targets",
                l.prefix, l.nexthop
            ));
        }
    }
    found.sort_unstable();
    found.dedup();
    // In key order already: the map is built at once.
    found
        .chunk_by(|a, b| a.0 == b.0)
        .filter_map(|paths| {
            let key = paths[0].0;
            let family = if paths.iter().any(|p| p.1 == prefer) {
                prefer
            } else {
                paths[0].1
            };
            let mut passed: Vec<Family> =
                paths.iter().map(|p| p.1).filter(|f| *f != family).collect();
            passed.dedup();
            for f in passed {
                ignored.push(format!(
                    "{} in vrf {}: {f:?} paths passed over for {family:?} ones",
                    key.1, key.0
                ));
            }
            let mut chosen = paths.iter().filter(|p| p.1 == family).peekable();
            let label = chosen.peek()?.2;
            let endpoints = chosen
                .map(|&(_, _, l, e)| {
                    if l == label {
                        e
                    } else {
                        Endpoint {
                            label: Some(l),
                            ..e
                        }
                    }
                })
                .collect();
            Some((key, Remote { endpoints, label }))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const PREFER: Preference = Preference {
        mpls: Encap::MplsUdp,
        family: Family::Evpn,
    };

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

    /// A VPN path as `gobgp global rib -a vpnv4 -j` prints it (gobgp 3.10), with the given
    /// encapsulation communities.
    fn vpn(prefix: &str, labels: &[u64], nh: &str, rt: &str, tunnels: &[u64]) -> Value {
        let rd = json!({"type": 1, "admin": "198.19.0.2", "assigned": 1});
        let mut comms = vec![json!({"type": 0, "subtype": 2, "value": rt})];
        comms.extend(
            tunnels
                .iter()
                .map(|t| json!({"type": 3, "subtype": 12, "tunnel_type": t})),
        );
        json!({"nlri": {"prefix": prefix, "labels": labels, "rd": rd},
               "best": true,
               "attrs": [{"type": 1, "value": 2},
                         {"type": 16, "value": comms},
                         {"type": 14, "nexthop": nh, "afi": 1, "safi": 128,
                          "value": [{"prefix": prefix, "labels": labels, "rd": rd}]}],
               "stale": false})
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
        let got = best_paths(&rib, Family::Evpn, PREFER, &mut ignored);
        assert_eq!(got.len(), 1, "{got:?}");
        assert_eq!(got[0].prefix, "198.18.2.0/24".parse().unwrap());
        assert_eq!(got[0].nexthop, "198.19.0.2".parse::<IpAddr>().unwrap());
        assert_eq!(got[0].label, 1001);
        assert_eq!(got[0].encap, Encap::Vxlan);
        assert_eq!(got[0].router_mac.unwrap().0, [2, 0, 0, 0, 0xfa, 2]);
        assert_eq!(ignored.len(), 3, "{ignored:?}");
        assert!(ignored[0].contains("tunnel type 11"), "{ignored:?}");
        assert!(ignored[1].contains("vni 16777216"), "{ignored:?}");
        assert!(ignored[2].contains("router's MAC"), "{ignored:?}");
    }

    #[test]
    fn ipv6_type5_routes_are_learned_over_an_ipv4_fabric() {
        let mut p = path(
            "2001:db8:18:15::2/128",
            1001,
            "198.19.0.2",
            "64512:1",
            8,
            "02:00:00:00:fa:02",
        );
        p["nlri"]["value"]["gateway"] = json!("::");
        let rib = json!({ "a": [p] });
        let mut ignored = Vec::new();
        let got = best_paths(&rib, Family::Evpn, PREFER, &mut ignored);
        assert!(ignored.is_empty(), "{ignored:?}");
        assert_eq!(got.len(), 1, "{got:?}");
        assert_eq!(got[0].prefix, "2001:db8:18:15::2/128".parse().unwrap());
        assert_eq!(got[0].nexthop, "198.19.0.2".parse::<IpAddr>().unwrap());
        let vrfs = BTreeMap::from([(1, routing("target:64512:1"))]);
        let own: IpAddr = "198.19.0.1".parse().unwrap();
        let got = imports(
            &got,
            &vrfs,
            own,
            &BTreeSet::new(),
            Family::Evpn,
            &mut ignored,
        );
        let r = &got[&(1, "2001:db8:18:15::2/128".parse().unwrap())];
        assert_eq!(r.label, 1001);
        assert_eq!(r.endpoints.first().unwrap().encap, Encap::Vxlan);
    }

    #[test]
    fn vpn_paths_take_one_label_in_range_and_an_mpls_encapsulation() {
        let rib = json!({
            "udp": [vpn("198.18.2.0/24", &[2002], "198.19.0.2", "64512:1", &[13])],
            "gre": [vpn("198.18.3.0/24", &[2003], "198.19.0.3", "64512:1", &[11])],
            "none": [vpn("198.18.4.0/24", &[2004], "198.19.0.4", "64512:1", &[])],
            "both": [vpn("198.18.5.0/24", &[2005], "198.19.0.5", "64512:1", &[11, 13])],
            "v6": [vpn("2001:db8:6::/64", &[2006], "198.19.0.6", "64512:1", &[11])],
            "vxlan": [vpn("198.18.7.0/24", &[2007], "198.19.0.7", "64512:1", &[8])],
            "reserved": [vpn("198.18.8.0/24", &[3], "198.19.0.8", "64512:1", &[13])],
            "big": [vpn("198.18.9.0/24", &[1 << 20], "198.19.0.9", "64512:1", &[13])],
            "stack": [vpn("198.18.10.0/24", &[2010, 2011], "198.19.0.10", "64512:1", &[13])],
            "nonh": [vpn("198.18.11.0/24", &[2011], "0.0.0.0", "64512:1", &[13])],
            "w6": [vpn("2001:db8:c::/64", &[2012], "::ffff:198.19.0.12", "64512:1", &[])],
        });
        let mut ignored = Vec::new();
        let prefer = Preference {
            mpls: Encap::MplsGre,
            family: Family::Evpn,
        };
        let got = best_paths(&rib, Family::Vpn, prefer, &mut ignored);
        let seen: Vec<(String, u32, Encap)> = got
            .iter()
            .map(|l| (l.prefix.to_string(), l.label, l.encap))
            .collect();
        assert_eq!(
            seen,
            [
                ("198.18.5.0/24".into(), 2005, Encap::MplsGre), // both offered: ours
                ("198.18.3.0/24".into(), 2003, Encap::MplsGre),
                ("198.18.4.0/24".into(), 2004, Encap::MplsGre), // none: ours
                ("198.18.2.0/24".into(), 2002, Encap::MplsUdp), // theirs
                ("2001:db8:6::/64".into(), 2006, Encap::MplsGre),
                ("2001:db8:c::/64".into(), 2012, Encap::MplsGre),
            ]
        );
        assert_eq!(got[5].nexthop, "198.19.0.12".parse::<IpAddr>().unwrap());
        assert!(got
            .iter()
            .all(|l| l.family == Family::Vpn && l.router_mac.is_none()));
        assert_eq!(got[3].nexthop, "198.19.0.2".parse::<IpAddr>().unwrap());
        let expect = [
            "1048576",
            "0.0.0.0",
            "label 3 ",
            "2 labels",
            "tunnel types {8}",
        ];
        assert_eq!(ignored.len(), expect.len(), "{ignored:?}");
        for e in expect {
            assert!(ignored.iter().any(|i| i.contains(e)), "{e}: {ignored:?}");
        }
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
        let learned = best_paths(&rib, Family::Evpn, PREFER, &mut ignored);
        let vrfs = BTreeMap::from([(1, routing("target:64512:1"))]);
        let local = BTreeSet::from([(1, "198.18.8.0/24".parse().unwrap())]);
        let own: IpAddr = "198.19.0.1".parse().unwrap();
        let got = imports(&learned, &vrfs, own, &local, Family::Evpn, &mut ignored);
        let keys: Vec<String> = got.keys().map(|(v, p)| format!("{v} {p}")).collect();
        assert_eq!(keys, ["1 198.18.2.0/24", "1 198.18.9.0/24"]);
        let ecmp = &got[&(1, "198.18.9.0/24".parse().unwrap())];
        assert_eq!(ecmp.endpoints.len(), 2);
        assert_eq!(ecmp.label, 1001);
        assert!(
            ignored.iter().any(|i| i.contains("198.18.7.0/24")),
            "{ignored:?}"
        );
    }

    #[test]
    fn imports_keep_every_node_of_an_ecmp_prefix_with_its_own_vni_or_label() {
        let evpn = json!({
            "a": [path("198.18.9.0/24", 1003, "198.19.0.3", "64512:1", 8, "02:00:00:00:fa:03")],
            "b": [path("198.18.9.0/24", 1002, "198.19.0.2", "64512:1", 8, "02:00:00:00:fa:02")],
            "c": [path("198.18.9.0/24", 1002, "198.19.0.4", "64512:1", 8, "02:00:00:00:fa:04")],
        });
        let vpns = json!({
            "d": [vpn("198.18.5.0/24", &[2004], "198.19.0.4", "64512:1", &[13])],
            "e": [vpn("198.18.5.0/24", &[2003], "198.19.0.3", "64512:1", &[11])],
            "f": [vpn("198.18.5.0/24", &[2002], "198.19.0.2", "64512:1", &[13])],
        });
        let mut ignored = Vec::new();
        let mut learned = best_paths(&evpn, Family::Evpn, PREFER, &mut ignored);
        learned.extend(best_paths(&vpns, Family::Vpn, PREFER, &mut ignored));
        let vrfs = BTreeMap::from([(1, routing("target:64512:1"))]);
        let own: IpAddr = "198.19.0.1".parse().unwrap();
        let got = imports(
            &learned,
            &vrfs,
            own,
            &BTreeSet::new(),
            Family::Evpn,
            &mut ignored,
        );
        assert!(ignored.is_empty(), "{ignored:?}");
        let members = |p: &str| -> (u32, Vec<(String, Option<u32>)>) {
            let r = &got[&(1, p.parse().unwrap())];
            let eps = r
                .endpoints
                .iter()
                .map(|e| (e.ip.to_string(), e.label))
                .collect();
            (r.label, eps)
        };
        // The route carries the lowest; the tunnels toward nodes with another push theirs.
        assert_eq!(
            members("198.18.9.0/24"),
            (
                1002,
                vec![
                    ("198.19.0.2".into(), None),
                    ("198.19.0.3".into(), Some(1003)),
                    ("198.19.0.4".into(), None),
                ]
            )
        );
        assert_eq!(
            members("198.18.5.0/24"),
            (
                2002,
                vec![
                    ("198.19.0.2".into(), None),
                    ("198.19.0.3".into(), Some(2003)),
                    ("198.19.0.4".into(), Some(2004)),
                ]
            )
        );
        // A tunnel pushing its own label is a tunnel of its own: not the one to the same node
        // that other routes share.
        let r5 = &got[&(1, "198.18.5.0/24".parse().unwrap())];
        let to3 = r5.endpoints.iter().find(|e| e.label.is_some()).unwrap();
        assert_ne!(
            *to3,
            Endpoint {
                label: None,
                ..*to3
            }
        );
    }

    #[test]
    fn imports_mix_mpls_encapsulations_in_ecmp_and_pick_the_preferred_family() {
        let evpn = json!({
            "a": [path("198.18.9.0/24", 1001, "198.19.0.4", "64512:1", 8, "02:00:00:00:fa:04")],
        });
        let vpns = json!({
            "b": [vpn("198.18.9.0/24", &[2002], "198.19.0.2", "64512:1", &[13])],
            "c": [vpn("198.18.9.0/24", &[2002], "198.19.0.3", "64512:1", &[11])],
            "d": [vpn("198.18.5.0/24", &[2002], "198.19.0.2", "64512:1", &[13])],
            "e": [vpn("198.18.5.0/24", &[2003], "198.19.0.3", "64512:1", &[13])],
        });
        let mut ignored = Vec::new();
        let mut learned = best_paths(&evpn, Family::Evpn, PREFER, &mut ignored);
        learned.extend(best_paths(&vpns, Family::Vpn, PREFER, &mut ignored));
        assert!(ignored.is_empty(), "{ignored:?}");
        let vrfs = BTreeMap::from([(1, routing("target:64512:1"))]);
        let own: IpAddr = "198.19.0.1".parse().unwrap();
        let p9: IpPrefix = "198.18.9.0/24".parse().unwrap();
        let p5: IpPrefix = "198.18.5.0/24".parse().unwrap();

        let got = imports(
            &learned,
            &vrfs,
            own,
            &BTreeSet::new(),
            Family::Vpn,
            &mut ignored,
        );
        let r = &got[&(1, p9)];
        assert_eq!(r.label, 2002);
        let eps: Vec<(String, Encap)> = r
            .endpoints
            .iter()
            .map(|e| (e.ip.to_string(), e.encap))
            .collect();
        assert_eq!(
            eps,
            [
                ("198.19.0.2".into(), Encap::MplsUdp),
                ("198.19.0.3".into(), Encap::MplsGre)
            ]
        );
        assert!(r.endpoints.iter().all(|e| e.mac.is_none()));
        // Two labels for one prefix (each node its own): the route carries the lowest, the
        // tunnel to the node with the other pushes that one.
        assert_eq!(got[&(1, p5)].label, 2002);
        let eps: Vec<(String, Option<u32>)> = got[&(1, p5)]
            .endpoints
            .iter()
            .map(|e| (e.ip.to_string(), e.label))
            .collect();
        assert_eq!(
            eps,
            [
                ("198.19.0.2".into(), None),
                ("198.19.0.3".into(), Some(2003))
            ]
        );
        assert!(!ignored.iter().any(|i| i.contains("2003")), "{ignored:?}");
        assert!(
            ignored.iter().any(|i| i.contains("Evpn paths passed over")),
            "{ignored:?}"
        );

        ignored.clear();
        let got = imports(
            &learned,
            &vrfs,
            own,
            &BTreeSet::new(),
            Family::Evpn,
            &mut ignored,
        );
        let r = &got[&(1, p9)];
        assert_eq!(r.label, 1001);
        assert_eq!(r.endpoints.len(), 1);
        assert_eq!(r.endpoints.first().unwrap().encap, Encap::Vxlan);
        // Only VPN paths for it: those, whatever the preference.
        assert_eq!(got[&(1, p5)].label, 2002);
    }
}
