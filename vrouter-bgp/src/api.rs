//! GoBGP's gRPC API (package `apipb`, compiled by build.rs from GoBGP's own .proto files), and
//! its paths read as [`crate::rib`] reads them: the NLRI of the families vrouter-bgp follows,
//! the next hop, and the extended communities it looks at. Read straight from the API's
//! messages ([`path_learned`]); the tests also print them in the JSON form `gobgp -j` prints
//! them ([`path_json`]), which [`crate::rib`] reads the same.

use prost::bytes::Bytes;
use prost::Message;
#[cfg(test)]
use prost_types::Any;
#[cfg(test)]
use serde_json::{json, Value};

use crate::rib::{self, Attrs, Family, Learned, Preference};

#[allow(clippy::all, clippy::pedantic, missing_docs, dead_code)]
pub mod apipb {
    tonic::include_proto!("apipb");
}

use apipb::family::{Afi, Safi};

#[cfg(test)]
/// The message name of `any` (its type URL's last part), such as `apipb.EVPNIPPrefixRoute`.
fn kind(any: &Any) -> &str {
    any.type_url.rsplit('/').next().unwrap_or_default()
}

#[cfg(test)]
fn decode<M: Message + Default>(any: &Any) -> Option<M> {
    M::decode(any.value.as_slice()).ok()
}

/// `google.protobuf.Any` read in place: its type URL and value are slices of the message
/// they came in, not copies (a table of 10,000 paths holds some 100,000 of them).
#[derive(Clone, PartialEq, Message)]
pub struct RawAny {
    #[prost(bytes = "bytes", tag = "1")]
    pub type_url: Bytes,
    #[prost(bytes = "bytes", tag = "2")]
    pub value: Bytes,
}

impl RawAny {
    /// The message name (the type URL's last part), such as `apipb.EVPNIPPrefixRoute`.
    fn kind(&self) -> &str {
        let url = std::str::from_utf8(&self.type_url).unwrap_or_default();
        url.rsplit('/').next().unwrap_or_default()
    }

    fn decode<M: Message + Default>(&self) -> Option<M> {
        M::decode(self.value.clone()).ok()
    }
}

/// `apipb.WatchEventResponse` with what vrouter-bgp reads of it: a table event's paths (peer
/// events are passed over).
#[derive(Clone, PartialEq, Message)]
pub struct WatchEvent {
    #[prost(message, optional, tag = "3")]
    pub table: Option<WatchedTable>,
}

/// `apipb.WatchEventResponse.TableEvent`.
#[derive(Clone, PartialEq, Message)]
pub struct WatchedTable {
    #[prost(message, repeated, tag = "2")]
    pub paths: Vec<Path>,
}

/// `apipb.Path` with what vrouter-bgp reads of it: the NLRI, the attributes, whether it is a
/// withdrawal, the family.
#[derive(Clone, PartialEq, Message)]
pub struct Path {
    #[prost(message, optional, tag = "1")]
    pub nlri: Option<RawAny>,
    #[prost(message, repeated, tag = "2")]
    pub pattrs: Vec<RawAny>,
    #[prost(bool, tag = "5")]
    pub is_withdraw: bool,
    #[prost(message, optional, tag = "9")]
    pub family: Option<apipb::Family>,
}

/// `apipb.LabeledVPNIPAddressPrefix` without its RD (the path's key has it).
#[derive(Clone, PartialEq, Message)]
struct VpnPrefix {
    #[prost(uint32, repeated, tag = "1")]
    labels: Vec<u32>,
    #[prost(uint32, tag = "3")]
    prefix_len: u32,
    #[prost(string, tag = "4")]
    prefix: String,
}

/// `apipb.EVPNIPPrefixRoute` with the prefix and the label (the VNI) alone.
#[derive(Clone, PartialEq, Message)]
struct EvpnPrefix {
    #[prost(string, tag = "4")]
    ip_prefix: String,
    #[prost(uint32, tag = "5")]
    ip_prefix_len: u32,
    #[prost(uint32, tag = "7")]
    label: u32,
}

/// `apipb.ExtendedCommunitiesAttribute`, its communities read in place.
#[derive(Clone, PartialEq, Message)]
struct Communities {
    #[prost(message, repeated, tag = "1")]
    communities: Vec<RawAny>,
}

#[cfg(test)]
/// Lower-case hex of `bytes` (an NLRI vrouter-bgp does not read is keyed by it).
fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
/// A route distinguisher as `gobgp -j` prints it.
fn rd(any: Option<&Any>) -> Value {
    let Some(any) = any else {
        return Value::Null;
    };
    let rd = match kind(any) {
        "apipb.RouteDistinguisherTwoOctetASN" => {
            decode::<apipb::RouteDistinguisherTwoOctetAsn>(any)
                .map(|r| json!({"type": 0, "admin": r.admin, "assigned": r.assigned}))
        }
        "apipb.RouteDistinguisherIPAddress" => decode::<apipb::RouteDistinguisherIpAddress>(any)
            .map(|r| json!({"type": 1, "admin": r.admin, "assigned": r.assigned})),
        "apipb.RouteDistinguisherFourOctetASN" => {
            decode::<apipb::RouteDistinguisherFourOctetAsn>(any)
                .map(|r| json!({"type": 2, "admin": r.admin, "assigned": r.assigned}))
        }
        _ => None,
    };
    rd.unwrap_or_else(|| json!({"raw": hex(&any.value)}))
}

#[cfg(test)]
/// An NLRI as `gobgp -j` prints it: VPN prefixes with labels and RD, EVPN type-5 routes
/// (other EVPN route types with their type only); others by their bytes.
fn nlri(any: &Any) -> Value {
    let raw = || json!({"kind": kind(any), "raw": hex(&any.value)});
    match kind(any) {
        "apipb.LabeledVPNIPAddressPrefix" => {
            decode::<apipb::LabeledVpnipAddressPrefix>(any).map(|n| {
                json!({"prefix": format!("{}/{}", n.prefix, n.prefix_len), "labels": n.labels,
                       "rd": rd(n.rd.as_ref())})
            })
        }
        "apipb.EVPNIPPrefixRoute" => decode::<apipb::EvpnipPrefixRoute>(any).map(|n| {
            json!({"type": 5, "value": {"rd": rd(n.rd.as_ref()), "etag": n.ethernet_tag,
                   "prefix": format!("{}/{}", n.ip_prefix, n.ip_prefix_len),
                   "gateway": n.gw_address, "label": n.label}})
        }),
        k if k.starts_with("apipb.EVPN") => Some(json!({"type": 0, "value": raw()})),
        _ => None,
    }
    .unwrap_or_else(raw)
}

#[cfg(test)]
/// An extended community as `gobgp -j` prints it: route targets (and other two-octet AS,
/// IPv4 and four-octet AS specific ones), encapsulation (RFC 9012), router's MAC (RFC 9135).
fn community(any: &Any) -> Option<Value> {
    // The high-order type bit 0x40: not transitive.
    let t = |base: u8, transitive: bool| if transitive { base } else { base | 0x40 };
    Some(match kind(any) {
        "apipb.TwoOctetAsSpecificExtended" => {
            let c = decode::<apipb::TwoOctetAsSpecificExtended>(any)?;
            json!({"type": t(0, c.is_transitive), "subtype": c.sub_type,
                   "value": format!("{}:{}", c.asn, c.local_admin)})
        }
        "apipb.IPv4AddressSpecificExtended" => {
            let c = decode::<apipb::IPv4AddressSpecificExtended>(any)?;
            json!({"type": t(1, c.is_transitive), "subtype": c.sub_type,
                   "value": format!("{}:{}", c.address, c.local_admin)})
        }
        "apipb.FourOctetAsSpecificExtended" => {
            let c = decode::<apipb::FourOctetAsSpecificExtended>(any)?;
            json!({"type": t(2, c.is_transitive), "subtype": c.sub_type,
                   "value": format!("{}:{}", c.asn, c.local_admin)})
        }
        "apipb.EncapExtended" => {
            let c = decode::<apipb::EncapExtended>(any)?;
            json!({"type": 3, "subtype": 12, "tunnel_type": c.tunnel_type})
        }
        "apipb.RouterMacExtended" => {
            let c = decode::<apipb::RouterMacExtended>(any)?;
            json!({"type": 6, "subtype": 3, "mac": c.mac})
        }
        _ => return None,
    })
}

#[cfg(test)]
/// A path attribute as `gobgp -j` prints it, for those [`crate::rib`] reads: MP_REACH_NLRI
/// (its next hop) and the extended communities.
fn attribute(any: &Any) -> Option<Value> {
    match kind(any) {
        "apipb.MpReachNLRIAttribute" => {
            let a = decode::<apipb::MpReachNlriAttribute>(any)?;
            Some(json!({"type": 14, "nexthop": a.next_hops.first()}))
        }
        "apipb.ExtendedCommunitiesAttribute" => {
            let a = decode::<apipb::ExtendedCommunitiesAttribute>(any)?;
            let value: Vec<Value> = a.communities.iter().filter_map(community).collect();
            Some(json!({"type": 16, "value": value}))
        }
        _ => None,
    }
}

#[cfg(test)]
/// `path` as `gobgp -j` prints it (its NLRI, the attributes [`crate::rib`] reads, best, stale,
/// and `"withdrawal": true` for a withdrawal).
pub fn path_json(path: &apipb::Path) -> Value {
    let attrs: Vec<Value> = path.pattrs.iter().filter_map(attribute).collect();
    let mut v = json!({
        "nlri": path.nlri.as_ref().map_or(Value::Null, nlri),
        "attrs": attrs,
        "best": path.best,
        "stale": path.stale,
    });
    if path.is_withdraw {
        v["withdrawal"] = Value::Bool(true);
    }
    v
}

/// What keys a path's NLRI in [`crate::Rib`]: its message name and bytes (for VPN routes the
/// RD, prefix and labels; for EVPN ones the route's fields), as gobgpd sent them for the path
/// and sends them again for its withdrawal.
pub fn path_key(path: &Path) -> Vec<u8> {
    let Some(n) = path.nlri.as_ref() else {
        return Vec::new();
    };
    let mut key = Vec::with_capacity(n.type_url.len() + 1 + n.value.len());
    key.extend_from_slice(n.kind().as_bytes());
    key.push(0);
    key.extend_from_slice(&n.value);
    key
}

/// `apipb.MpReachNLRIAttribute` with only its next hops: its NLRI, the path's own again, is
/// passed over rather than decoded once more for every path.
#[derive(Clone, PartialEq, Message)]
struct NextHops {
    #[prost(string, repeated, tag = "2")]
    next_hops: Vec<String>,
}

/// The attributes of `path` [`crate::rib`] reads: MP_REACH_NLRI's next hop, and of the
/// extended communities the transitive route targets, the encapsulations and the router's MAC
/// (as `gobgp -j` prints them and [`crate::rib`] reads them there).
fn attrs(path: &Path) -> Result<Attrs, String> {
    let mut a = Attrs::default();
    for any in &path.pattrs {
        match any.kind() {
            "apipb.MpReachNLRIAttribute" => {
                let Some(r) = any.decode::<NextHops>() else {
                    continue;
                };
                a.nexthop = r.next_hops.first().and_then(|s| s.parse().ok());
            }
            "apipb.ExtendedCommunitiesAttribute" => {
                let Some(e) = any.decode::<Communities>() else {
                    continue;
                };
                for c in &e.communities {
                    community_into(c, &mut a)?;
                }
            }
            _ => {}
        }
    }
    Ok(a)
}

/// One extended community into `a`: route targets of subtype 2 that are transitive (the
/// two-octet AS, IPv4 and four-octet AS ones), encapsulations, the router's MAC.
fn community_into(any: &RawAny, a: &mut Attrs) -> Result<(), String> {
    match any.kind() {
        "apipb.TwoOctetAsSpecificExtended" => {
            if let Some(c) = any.decode::<apipb::TwoOctetAsSpecificExtended>() {
                if c.is_transitive && c.sub_type == 2 {
                    a.target(&format!("{}:{}", c.asn, c.local_admin))?;
                }
            }
        }
        "apipb.IPv4AddressSpecificExtended" => {
            if let Some(c) = any.decode::<apipb::IPv4AddressSpecificExtended>() {
                if c.is_transitive && c.sub_type == 2 {
                    a.target(&format!("{}:{}", c.address, c.local_admin))?;
                }
            }
        }
        "apipb.FourOctetAsSpecificExtended" => {
            if let Some(c) = any.decode::<apipb::FourOctetAsSpecificExtended>() {
                if c.is_transitive && c.sub_type == 2 {
                    a.target(&format!("{}:{}", c.asn, c.local_admin))?;
                }
            }
        }
        "apipb.EncapExtended" => {
            if let Some(c) = any.decode::<apipb::EncapExtended>() {
                a.tunnels.insert(u64::from(c.tunnel_type));
            }
        }
        "apipb.RouterMacExtended" => {
            if let Some(c) = any.decode::<apipb::RouterMacExtended>() {
                a.router_mac(&c.mac)?;
            }
        }
        _ => {}
    }
    Ok(())
}

/// One best path of `family` from GoBGP's API as [`Learned`], as [`rib::path_learned`] reads
/// it from `gobgp -j`'s JSON: `Ok(None)` for a route type vrouter-bgp does not take, the
/// reason for one it refuses.
pub fn path_learned(
    path: &Path,
    family: Family,
    prefer: Preference,
) -> Result<Option<Learned>, String> {
    let nlri = path.nlri.as_ref();
    match family {
        Family::Evpn => {
            let Some(n) = nlri
                .filter(|n| n.kind() == "apipb.EVPNIPPrefixRoute")
                .and_then(RawAny::decode::<EvpnPrefix>)
            else {
                return Ok(None);
            };
            let prefix = rib::parse_prefix(&format!("{}/{}", n.ip_prefix, n.ip_prefix_len));
            rib::evpn_learned(prefix, Some(u64::from(n.label)), || attrs(path)).map(Some)
        }
        Family::Vpn => {
            let n = nlri
                .filter(|n| n.kind() == "apipb.LabeledVPNIPAddressPrefix")
                .and_then(RawAny::decode::<VpnPrefix>)
                .ok_or("no prefix")?;
            let prefix = rib::parse_prefix(&format!("{}/{}", n.prefix, n.prefix_len));
            let labels = || Ok(n.labels.iter().map(|l| Some(u64::from(*l))).collect());
            rib::vpn_learned(prefix, labels, || attrs(path), prefer.mpls).map(Some)
        }
    }
}

/// Which of [`crate::gobgp::TABLES`] a path of `family` belongs to: EVPN, VPNv4, VPNv6.
pub fn table_of(family: Option<&apipb::Family>) -> Option<usize> {
    let f = family?;
    match (Afi::try_from(f.afi).ok()?, Safi::try_from(f.safi).ok()?) {
        (Afi::L2vpn, Safi::Evpn) => Some(0),
        (Afi::Ip, Safi::MplsVpn) => Some(1),
        (Afi::Ip6, Safi::MplsVpn) => Some(2),
        _ => None,
    }
}

#[cfg(test)]
pub mod tests {
    use super::*;

    /// `p` as vrouter-bgp reads it off the wire.
    pub fn watched(p: &apipb::Path) -> Path {
        Path::decode(p.encode_to_vec().as_slice()).expect("a path")
    }

    /// `m` packed as GoBGP packs it into an `Any`.
    pub fn any<M: Message>(name: &str, m: &M) -> Any {
        Any {
            type_url: format!("type.googleapis.com/apipb.{name}"),
            value: m.encode_to_vec(),
        }
    }

    fn family(afi: Afi, safi: Safi) -> Option<apipb::Family> {
        Some(apipb::Family {
            afi: afi as i32,
            safi: safi as i32,
        })
    }

    /// A VPNv4 path as GoBGP's API carries it: the labelled VPN prefix, MP_REACH_NLRI with the
    /// next hop, a route target and the MPLS-over-UDP encapsulation community.
    pub fn vpnv4(prefix: &str, len: u32, label: u32, nexthop: &str) -> apipb::Path {
        let rd = any(
            "RouteDistinguisherIPAddress",
            &apipb::RouteDistinguisherIpAddress {
                admin: "198.19.0.2".into(),
                assigned: 1,
            },
        );
        let nlri = any(
            "LabeledVPNIPAddressPrefix",
            &apipb::LabeledVpnipAddressPrefix {
                labels: vec![label],
                rd: Some(rd),
                prefix_len: len,
                prefix: prefix.into(),
            },
        );
        let reach = any(
            "MpReachNLRIAttribute",
            &apipb::MpReachNlriAttribute {
                family: family(Afi::Ip, Safi::MplsVpn),
                next_hops: vec![nexthop.into()],
                nlris: vec![nlri.clone()],
            },
        );
        let comms = any(
            "ExtendedCommunitiesAttribute",
            &apipb::ExtendedCommunitiesAttribute {
                communities: vec![
                    any(
                        "TwoOctetAsSpecificExtended",
                        &apipb::TwoOctetAsSpecificExtended {
                            is_transitive: true,
                            sub_type: 2,
                            asn: 64512,
                            local_admin: 1,
                        },
                    ),
                    any("EncapExtended", &apipb::EncapExtended { tunnel_type: 13 }),
                ],
            },
        );
        apipb::Path {
            nlri: Some(nlri),
            pattrs: vec![reach, comms],
            best: true,
            family: family(Afi::Ip, Safi::MplsVpn),
            ..Default::default()
        }
    }

    /// An EVPN type-5 path: VNI as label, the VXLAN encapsulation and the router's MAC.
    pub fn evpn5(prefix: &str, len: u32, vni: u32, nexthop: &str, mac: &str) -> apipb::Path {
        let rd = any(
            "RouteDistinguisherTwoOctetASN",
            &apipb::RouteDistinguisherTwoOctetAsn {
                admin: 64512,
                assigned: 1,
            },
        );
        let nlri = any(
            "EVPNIPPrefixRoute",
            &apipb::EvpnipPrefixRoute {
                rd: Some(rd),
                ip_prefix: prefix.into(),
                ip_prefix_len: len,
                gw_address: "0.0.0.0".into(),
                label: vni,
                ..Default::default()
            },
        );
        let reach = any(
            "MpReachNLRIAttribute",
            &apipb::MpReachNlriAttribute {
                family: family(Afi::L2vpn, Safi::Evpn),
                next_hops: vec![nexthop.into()],
                nlris: vec![nlri.clone()],
            },
        );
        let comms = any(
            "ExtendedCommunitiesAttribute",
            &apipb::ExtendedCommunitiesAttribute {
                communities: vec![
                    any(
                        "IPv4AddressSpecificExtended",
                        &apipb::IPv4AddressSpecificExtended {
                            is_transitive: true,
                            sub_type: 2,
                            address: "198.19.0.3".into(),
                            local_admin: 7,
                        },
                    ),
                    any("EncapExtended", &apipb::EncapExtended { tunnel_type: 8 }),
                    any(
                        "RouterMacExtended",
                        &apipb::RouterMacExtended { mac: mac.into() },
                    ),
                ],
            },
        );
        apipb::Path {
            nlri: Some(nlri),
            pattrs: vec![reach, comms],
            family: family(Afi::L2vpn, Safi::Evpn),
            ..Default::default()
        }
    }

    #[test]
    fn api_paths_read_as_gobgp_prints_them() {
        let v = path_json(&vpnv4("198.18.5.0", 24, 2002, "198.19.0.2"));
        assert_eq!(v["nlri"]["prefix"], "198.18.5.0/24");
        assert_eq!(v["nlri"]["labels"], json!([2002]));
        assert_eq!(
            v["nlri"]["rd"],
            json!({"type": 1, "admin": "198.19.0.2", "assigned": 1})
        );
        assert_eq!(v["attrs"][0], json!({"type": 14, "nexthop": "198.19.0.2"}));
        assert_eq!(
            v["attrs"][1]["value"],
            json!([{"type": 0, "subtype": 2, "value": "64512:1"},
                   {"type": 3, "subtype": 12, "tunnel_type": 13}])
        );
        assert_eq!(v["best"], true);
        assert!(v.get("withdrawal").is_none());

        let mut p = evpn5("198.18.7.0", 24, 1001, "198.19.0.3", "02:00:00:00:fa:03");
        p.is_withdraw = true;
        let v = path_json(&p);
        assert_eq!(v["nlri"]["type"], 5);
        assert_eq!(v["nlri"]["value"]["prefix"], "198.18.7.0/24");
        assert_eq!(v["nlri"]["value"]["label"], 1001);
        assert_eq!(
            v["attrs"][1]["value"],
            json!([{"type": 1, "subtype": 2, "value": "198.19.0.3:7"},
                   {"type": 3, "subtype": 12, "tunnel_type": 8},
                   {"type": 6, "subtype": 3, "mac": "02:00:00:00:fa:03"}])
        );
        assert_eq!(v["withdrawal"], true);

        // Another EVPN route type: type 0, keyed by its bytes; another family: no table.
        let other = apipb::Path {
            nlri: Some(any(
                "EVPNMACIPAdvertisementRoute",
                &apipb::EvpnmacipAdvertisementRoute::default(),
            )),
            family: family(Afi::Ip, Safi::Unicast),
            ..Default::default()
        };
        let v = path_json(&other);
        assert_eq!(v["nlri"]["type"], 0);
        assert_eq!(table_of(other.family.as_ref()), None);
        assert_eq!(table_of(family(Afi::L2vpn, Safi::Evpn).as_ref()), Some(0));
        assert_eq!(table_of(family(Afi::Ip, Safi::MplsVpn).as_ref()), Some(1));
        assert_eq!(table_of(family(Afi::Ip6, Safi::MplsVpn).as_ref()), Some(2));
    }

    /// What the RIB makes of them: the same as of `gobgp -j`'s output.
    #[test]
    fn api_paths_are_learned() {
        use crate::rib::{path_learned, Encap, Family, Preference};
        let prefer = Preference {
            mpls: Encap::MplsGre,
            family: Family::Evpn,
        };
        let v = path_json(&vpnv4("198.18.5.0", 24, 2002, "198.19.0.2"));
        let l = path_learned(&v, Family::Vpn, prefer).unwrap().unwrap();
        assert_eq!(
            (
                l.prefix.to_string(),
                l.label,
                l.encap,
                l.nexthop.to_string()
            ),
            (
                "198.18.5.0/24".into(),
                2002,
                Encap::MplsUdp,
                "198.19.0.2".into()
            )
        );
        assert_eq!(l.targets.len(), 1);
        let v = path_json(&evpn5(
            "198.18.7.0",
            24,
            1001,
            "198.19.0.3",
            "02:00:00:00:fa:03",
        ));
        let l = path_learned(&v, Family::Evpn, prefer).unwrap().unwrap();
        assert_eq!(
            (l.prefix.to_string(), l.label, l.encap),
            ("198.18.7.0/24".into(), 1001, Encap::Vxlan)
        );
        assert_eq!(
            l.router_mac.map(|m| m.to_string()).as_deref(),
            Some("02:00:00:00:fa:03")
        );
    }

    /// Read straight from the API's messages, each path is what the RIB makes of it in
    /// `gobgp -j`'s form: learned alike, or refused alike with the same reason (labels out of
    /// range or stacked, encapsulations vrouterd does not speak, no router's MAC, bad next
    /// hops, route types and NLRI it does not take); a withdrawal is keyed as its path.
    #[test]
    fn api_paths_are_read_as_their_json() {
        use crate::rib::{self, Encap, Family, Preference};
        let prefer = Preference {
            mpls: Encap::MplsGre,
            family: Family::Evpn,
        };
        let with_comms = |mut p: apipb::Path, comms: Vec<Any>| {
            p.pattrs[1] = any(
                "ExtendedCommunitiesAttribute",
                &apipb::ExtendedCommunitiesAttribute { communities: comms },
            );
            p
        };
        let rt = |transitive: bool| {
            any(
                "FourOctetAsSpecificExtended",
                &apipb::FourOctetAsSpecificExtended {
                    is_transitive: transitive,
                    sub_type: 2,
                    asn: 4_200_000_001,
                    local_admin: 9,
                },
            )
        };
        let encap = |t: u32| any("EncapExtended", &apipb::EncapExtended { tunnel_type: t });
        let mac = |m: &str| {
            any(
                "RouterMacExtended",
                &apipb::RouterMacExtended { mac: m.into() },
            )
        };
        let mut stacked = vpnv4("198.18.5.0", 24, 2002, "198.19.0.2");
        stacked.nlri = Some(any(
            "LabeledVPNIPAddressPrefix",
            &apipb::LabeledVpnipAddressPrefix {
                labels: vec![2002, 2003],
                rd: None,
                prefix_len: 24,
                prefix: "198.18.5.0".into(),
            },
        ));
        let mut no_nlri = vpnv4("198.18.5.0", 24, 2002, "198.19.0.2");
        no_nlri.nlri = None;
        let vpn = [
            vpnv4("198.18.5.0", 24, 2002, "198.19.0.2"),
            vpnv4("2001:db8::", 64, 2002, "::ffff:198.19.0.2"),
            vpnv4("198.18.5.0", 24, 15, "198.19.0.2"),
            vpnv4("198.18.5.0", 24, 1 << 20, "198.19.0.2"),
            vpnv4("198.18.5.0", 33, 2002, "198.19.0.2"),
            vpnv4("198.18.5.0", 24, 2002, "0.0.0.0"),
            vpnv4("198.18.5.0", 24, 2002, "not an address"),
            stacked,
            no_nlri,
            with_comms(vpnv4("198.18.5.0", 24, 2002, "198.19.0.2"), vec![]),
            with_comms(
                vpnv4("198.18.5.0", 24, 2002, "198.19.0.2"),
                vec![rt(true), rt(false), encap(13), encap(11)],
            ),
            with_comms(
                vpnv4("198.18.5.0", 24, 2002, "198.19.0.2"),
                vec![rt(true), encap(8)],
            ),
            evpn5("198.18.7.0", 24, 1001, "198.19.0.3", "02:00:00:00:fa:03"),
        ];
        let evpn = [
            evpn5("198.18.7.0", 24, 1001, "198.19.0.3", "02:00:00:00:fa:03"),
            evpn5("2001:db8:7::", 64, 1001, "198.19.0.3", "02:00:00:00:fa:03"),
            evpn5("198.18.7.0", 24, 0, "198.19.0.3", "02:00:00:00:fa:03"),
            evpn5("198.18.7.0", 24, 1 << 24, "198.19.0.3", "02:00:00:00:fa:03"),
            evpn5("198.18.7.0", 24, 1001, "224.0.0.1", "02:00:00:00:fa:03"),
            evpn5("198.18.7.0", 24, 1001, "198.19.0.3", "not a mac"),
            with_comms(
                evpn5("198.18.7.0", 24, 1001, "198.19.0.3", "02:00:00:00:fa:03"),
                vec![rt(true), encap(8)],
            ),
            with_comms(
                evpn5("198.18.7.0", 24, 1001, "198.19.0.3", "02:00:00:00:fa:03"),
                vec![rt(true), encap(13), mac("02:00:00:00:fa:03")],
            ),
            vpnv4("198.18.5.0", 24, 2002, "198.19.0.2"),
            apipb::Path {
                nlri: Some(any(
                    "EVPNMACIPAdvertisementRoute",
                    &apipb::EvpnmacipAdvertisementRoute::default(),
                )),
                ..Default::default()
            },
        ];
        let mut learned = 0;
        let mut refused = 0;
        for (family, paths) in [(Family::Vpn, &vpn[..]), (Family::Evpn, &evpn[..])] {
            for p in paths {
                let direct = path_learned(&watched(p), family, prefer);
                let json = rib::path_learned(&path_json(p), family, prefer);
                assert_eq!(direct, json, "{family:?} {p:?}");
                match direct {
                    Ok(Some(_)) => learned += 1,
                    Err(_) => refused += 1,
                    Ok(None) => {}
                }
            }
        }
        // Each kind of case is there: learned ones, refused ones, ones not taken.
        assert_eq!((learned, refused), (6, 15));

        let p = vpnv4("198.18.5.0", 24, 2002, "198.19.0.2");
        let mut gone = p.clone();
        gone.is_withdraw = true;
        gone.pattrs.clear();
        assert_eq!(path_key(&watched(&gone)), path_key(&watched(&p)));
        assert_ne!(
            path_key(&watched(&vpnv4("198.18.6.0", 24, 2002, "198.19.0.2"))),
            path_key(&watched(&p))
        );
    }

    /// gobgpd's watch events as vrouter-bgp reads them off the wire: a table event's paths
    /// with their NLRI, attributes, family and withdrawal; a peer event has no table.
    #[test]
    fn watch_events_read_their_paths_in_place() {
        use apipb::watch_event_response::{Event, PeerEvent, TableEvent};
        let mut gone = vpnv4("198.18.5.0", 24, 2002, "198.19.0.2");
        gone.is_withdraw = true;
        let paths = vec![vpnv4("198.18.6.0", 24, 2002, "198.19.0.2"), gone];
        let table = apipb::WatchEventResponse {
            event: Some(Event::Table(TableEvent {
                paths: paths.clone(),
            })),
        };
        let got = WatchEvent::decode(table.encode_to_vec().as_slice()).unwrap();
        let got = got.table.expect("a table event").paths;
        assert_eq!(got.len(), 2);
        for (g, p) in got.iter().zip(&paths) {
            assert_eq!(*g, watched(p));
            assert_eq!(g.is_withdraw, p.is_withdraw);
            assert_eq!(g.family, p.family);
            assert_eq!(g.pattrs.len(), 2);
            let nlri = p.nlri.as_ref().unwrap();
            let raw = g.nlri.as_ref().unwrap();
            assert_eq!(raw.kind(), "apipb.LabeledVPNIPAddressPrefix");
            assert_eq!(raw.value.as_ref(), nlri.value.as_slice());
        }
        let peer = apipb::WatchEventResponse {
            event: Some(Event::Peer(PeerEvent::default())),
        };
        let got = WatchEvent::decode(peer.encode_to_vec().as_slice()).unwrap();
        assert_eq!(got.table, None);
    }
}
