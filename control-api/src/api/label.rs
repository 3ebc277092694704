//! Incoming MPLS labels (`/mpls/{label}`) and VXLAN VNIs (`/vxlan/{vni}`).

use serde::{Deserialize, Serialize};

/// `PUT /mpls/{label}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MplsRequest {
    pub nexthop: u32,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MplsEntry {
    pub label: u32,
    pub nexthop: u32,
}

/// `PUT /vxlan/{vni}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VxlanRequest {
    pub vrf: u32,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VxlanEntry {
    pub vni: u32,
    pub vrf: u32,
}
