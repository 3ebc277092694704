//! Incoming MPLS labels (`/mpls/{label}`) and VXLAN VNIs (`/vxlan/{vni}`).

use serde::{Deserialize, Serialize};

/// Where an incoming MPLS label leads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum MplsTarget {
    /// A nexthop: the label names the pod or tunnel the packet goes to (a per-interface label).
    Nexthop(u32),
    /// A VRF: the inner packet is routed there (a per-VRF label, as BGP L3VPN routes carry).
    Vrf(u32),
}

/// `PUT /mpls/{label}`: exactly one of `nexthop` and `vrf`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MplsRequest {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nexthop: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vrf: Option<u32>,
}

impl MplsRequest {
    /// The target the request names; `None` unless it names exactly one.
    pub fn target(&self) -> Option<MplsTarget> {
        match (self.nexthop, self.vrf) {
            (Some(nh), None) => Some(MplsTarget::Nexthop(nh)),
            (None, Some(vrf)) => Some(MplsTarget::Vrf(vrf)),
            _ => None,
        }
    }
}

impl From<MplsTarget> for MplsRequest {
    fn from(t: MplsTarget) -> Self {
        match t {
            MplsTarget::Nexthop(nh) => MplsRequest {
                nexthop: Some(nh),
                vrf: None,
            },
            MplsTarget::Vrf(vrf) => MplsRequest {
                nexthop: None,
                vrf: Some(vrf),
            },
        }
    }
}

/// A label and its target: `nexthop` or `vrf`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MplsEntry {
    pub label: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nexthop: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vrf: Option<u32>,
}

impl MplsEntry {
    pub fn new(label: u32, target: MplsTarget) -> Self {
        let r = MplsRequest::from(target);
        MplsEntry {
            label,
            nexthop: r.nexthop,
            vrf: r.vrf,
        }
    }

    /// What the entry names (`None` only for a malformed answer).
    pub fn target(&self) -> Option<MplsTarget> {
        MplsRequest {
            nexthop: self.nexthop,
            vrf: self.vrf,
        }
        .target()
    }
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
