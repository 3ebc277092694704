//! VRFs: `GET /vrfs`, and a VRF's routing identity on the fabric (`/vrfs/{vrf}/routing`).

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VrfInfo {
    pub vrf: u32,
    pub vifs: u32,
    pub routes: u32,
    pub bridge_entries: u32,
    /// The VRF's routing identity, if one is set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub routing: Option<VrfRouting>,
}

/// `PUT /vrfs/{vrf}/routing`: how a control plane (vrouter-bgp) names the VRF to other nodes.
/// Its routes are advertised with route distinguisher `rd` and the `export_targets`; routes
/// carrying any of the `import_targets` are installed in it. Traffic to it arrives with VXLAN
/// VNI `vni` and/or MPLS label `label` (at least one). vrouterd keeps, checks and publishes it;
/// the agent still maps the VNI (`PUT /vxlan/{vni}`) and label (`PUT /mpls/{label}`).
///
/// A route distinguisher is `ASN:N` (ASN below 65536 and N below 2^32, or ASN up to 2^32-1 and
/// N below 65536) or `IPv4:N` (N below 65536); a route target is the same with `target:` in
/// front, or without it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VrfRouting {
    pub rd: String,
    pub import_targets: Vec<String>,
    pub export_targets: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vni: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub label: Option<u32>,
}

/// A route distinguisher or route target value, as RFC 4364 section 4.2 types it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum RouteTag {
    /// Type 0: 2-byte ASN, 4-byte number.
    As2(u16, u32),
    /// Type 1: IPv4 address, 2-byte number.
    Ip(std::net::Ipv4Addr, u16),
    /// Type 2: 4-byte ASN, 2-byte number.
    As4(u32, u16),
}

impl RouteTag {
    /// Parses `ASN:N` or `IPv4:N`; `what` names the field in the error.
    pub fn parse(s: &str) -> Result<RouteTag, String> {
        let (admin, num) = s
            .rsplit_once(':')
            .ok_or_else(|| format!("{s:?} is not ASN:N or IPv4:N"))?;
        // Plain decimal only: no sign, no leading zeros (as the OpenAPI pattern says).
        let decimal = |d: &str| {
            !d.is_empty()
                && d.bytes().all(|b| b.is_ascii_digit())
                && (d == "0" || !d.starts_with('0'))
        };
        if !decimal(num) {
            return Err(format!("{s:?}: {num:?} is not a decimal number"));
        }
        if let Ok(ip) = admin.parse::<std::net::Ipv4Addr>() {
            let n: u16 = num
                .parse()
                .map_err(|_| format!("{s:?}: after an IPv4 address the number is 0..=65535"))?;
            return Ok(RouteTag::Ip(ip, n));
        }
        let asn: u32 = Some(admin)
            .filter(|a| decimal(a))
            .ok_or(())
            .and_then(|a| a.parse().map_err(drop))
            .map_err(|_| format!("{s:?}: {admin:?} is neither an ASN nor an IPv4 address"))?;
        let n: u64 = num
            .parse()
            .map_err(|_| format!("{s:?}: {num:?} is not a number"))?;
        match (u16::try_from(asn), u32::try_from(n), u16::try_from(n)) {
            (Ok(a), Ok(n), _) => Ok(RouteTag::As2(a, n)),
            (Err(_), _, Ok(n)) => Ok(RouteTag::As4(asn, n)),
            _ => Err(format!(
                "{s:?}: with a 4-byte ASN the number is 0..=65535, with a 2-byte one 0..=4294967295"
            )),
        }
    }

    /// A route target: as [`RouteTag::parse`], `target:` in front optional.
    pub fn parse_target(s: &str) -> Result<RouteTag, String> {
        RouteTag::parse(s.strip_prefix("target:").unwrap_or(s))
    }
}

impl std::fmt::Display for RouteTag {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RouteTag::As2(a, n) => write!(f, "{a}:{n}"),
            RouteTag::Ip(ip, n) => write!(f, "{ip}:{n}"),
            RouteTag::As4(a, n) => write!(f, "{a}:{n}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn route_tags_parse_in_each_type_and_refuse_the_rest() {
        assert_eq!(RouteTag::parse("64512:7"), Ok(RouteTag::As2(64512, 7)));
        assert_eq!(
            RouteTag::parse("64512:4294967295"),
            Ok(RouteTag::As2(64512, u32::MAX))
        );
        assert_eq!(
            RouteTag::parse("4200000000:9"),
            Ok(RouteTag::As4(4_200_000_000, 9))
        );
        assert_eq!(
            RouteTag::parse("192.0.2.1:5"),
            Ok(RouteTag::Ip("192.0.2.1".parse().unwrap(), 5))
        );
        assert_eq!(
            RouteTag::parse_target("target:64512:1"),
            Ok(RouteTag::As2(64512, 1))
        );
        for bad in [
            "",
            "64512",
            "x:1",
            "64512:-1",
            "64512:4294967296",
            "4200000000:65536",
            "192.0.2.1:65536",
            "target:64512:1",
            "+1:1",
            "064512:1",
            "1:01",
            "01.2.3.4:1",
        ] {
            assert!(RouteTag::parse(bad).is_err(), "{bad}");
        }
        assert_eq!(RouteTag::As4(4_200_000_000, 9).to_string(), "4200000000:9");
    }
}
