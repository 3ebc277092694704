//! Routes and bridge entries of a VRF: `/vrfs/{vrf}/routes` and `/vrfs/{vrf}/bridge`.

use serde::{Deserialize, Serialize};

use super::{IpPrefix, MacAddr};

/// `PUT /vrfs/{vrf}/routes`; also an element of `GET /vrfs/{vrf}/routes`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Route {
    pub prefix: IpPrefix,
    pub nexthop: u32,
    /// MPLS label (MPLSoUDP/MPLSoGRE) or VNI (VXLAN) pushed toward a tunnel nexthop.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub label: Option<u32>,
}

/// `PUT /vrfs/{vrf}/bridge`; also an element of `GET /vrfs/{vrf}/bridge`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BridgeEntry {
    pub mac: MacAddr,
    pub nexthop: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub label: Option<u32>,
}
