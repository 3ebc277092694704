//! Nexthops: `PUT /nexthops/{id}` and `GET /nexthops[/{id}]`.

use std::fmt;
use std::net::IpAddr;

use serde::{Deserialize, Serialize};

use super::MacAddr;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TunnelEncap {
    Vxlan,
    Mplsoudp,
    Mplsogre,
}

impl TunnelEncap {
    /// Whether the route/bridge `label` toward this tunnel is an MPLS label (else a VNI).
    pub fn carries_mpls(&self) -> bool {
        !matches!(self, TunnelEncap::Vxlan)
    }
}

impl fmt::Display for TunnelEncap {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            TunnelEncap::Vxlan => "vxlan",
            TunnelEncap::Mplsoudp => "mplsoudp",
            TunnelEncap::Mplsogre => "mplsogre",
        })
    }
}

/// `PUT /nexthops/{id}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(
    tag = "type",
    rename_all = "lowercase",
    deny_unknown_fields,
    from = "NexthopBody"
)]
pub enum Nexthop {
    /// Deliver to a local vif, rewriting the L2 header to `dmac`.
    Encap {
        vif: String,
        dmac: MacAddr,
    },
    /// Encapsulate toward another node through the fabric vif `vif`.
    Tunnel {
        encap: TunnelEncap,
        vif: String,
        sip: IpAddr,
        dip: IpAddr,
        /// The next hop's MAC on the fabric; without it vrouterd resolves `dip` by ARP.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        dmac: Option<MacAddr>,
        /// The MPLS label (mplsoudp/mplsogre) or VNI (vxlan) this tunnel pushes, instead of
        /// the route's or bridge entry's `label`: lets an ECMP group reach nodes that each
        /// allocated their own label for one prefix.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        label: Option<u32>,
    },
    /// Spread flows over members by flow hash.
    Ecmp {
        members: Vec<u32>,
    },
    Discard,
    /// Hand to the vrouter itself (ARP, its own addresses).
    Receive,
}

/// What a nexthop request body may hold. serde lets any field through beside the tag of a
/// unit variant; `discard` and `receive` read as empty structs here, so a stray field is
/// refused for them as for the other kinds.
#[derive(Deserialize)]
#[serde(tag = "type", rename_all = "lowercase", deny_unknown_fields)]
enum NexthopBody {
    Encap {
        vif: String,
        dmac: MacAddr,
    },
    Tunnel {
        encap: TunnelEncap,
        vif: String,
        sip: IpAddr,
        dip: IpAddr,
        #[serde(default)]
        dmac: Option<MacAddr>,
        #[serde(default)]
        label: Option<u32>,
    },
    Ecmp {
        members: Vec<u32>,
    },
    Discard {},
    Receive {},
}

impl From<NexthopBody> for Nexthop {
    fn from(b: NexthopBody) -> Nexthop {
        match b {
            NexthopBody::Encap { vif, dmac } => Nexthop::Encap { vif, dmac },
            NexthopBody::Tunnel {
                encap,
                vif,
                sip,
                dip,
                dmac,
                label,
            } => Nexthop::Tunnel {
                encap,
                vif,
                sip,
                dip,
                dmac,
                label,
            },
            NexthopBody::Ecmp { members } => Nexthop::Ecmp { members },
            NexthopBody::Discard {} => Nexthop::Discard,
            NexthopBody::Receive {} => Nexthop::Receive,
        }
    }
}

impl Nexthop {
    pub fn type_name(&self) -> &'static str {
        match self {
            Nexthop::Encap { .. } => "encap",
            Nexthop::Tunnel { .. } => "tunnel",
            Nexthop::Ecmp { .. } => "ecmp",
            Nexthop::Discard => "discard",
            Nexthop::Receive => "receive",
        }
    }

    /// The vif this nexthop sends through, if any.
    pub fn vif(&self) -> Option<&str> {
        match self {
            Nexthop::Encap { vif, .. } | Nexthop::Tunnel { vif, .. } => Some(vif),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NexthopInfo {
    pub id: u32,
    #[serde(flatten)]
    pub nexthop: Nexthop,
    /// Who points at this nexthop (routes, bridge entries, labels, ECMP groups): the first
    /// ten, then "and N more".
    pub used_by: Vec<String>,
    /// How many things point at it.
    #[serde(default)]
    pub use_count: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nexthop_bodies_use_the_contract_names() {
        let nh: Nexthop = serde_json::from_str(
            r#"{"type":"tunnel","encap":"mplsoudp","vif":"fabric0","sip":"192.0.2.1","dip":"192.0.2.2","dmac":"02:00:00:00:00:02"}"#,
        )
        .unwrap();
        assert!(matches!(
            nh,
            Nexthop::Tunnel {
                encap: TunnelEncap::Mplsoudp,
                ..
            }
        ));
        // A tunnel's own label: read, and written back only when there.
        let body = r#"{"type":"tunnel","encap":"mplsogre","vif":"fabric0","sip":"192.0.2.1","dip":"192.0.2.3","label":2003}"#;
        let nh: Nexthop = serde_json::from_str(body).unwrap();
        assert!(matches!(
            nh,
            Nexthop::Tunnel {
                label: Some(2003),
                ..
            }
        ));
        assert_eq!(serde_json::to_string(&nh).unwrap(), body);
        let Nexthop::Tunnel { dmac, label, .. } = serde_json::from_str::<Nexthop>(
            r#"{"type":"tunnel","encap":"vxlan","vif":"f","sip":"192.0.2.1","dip":"192.0.2.3"}"#,
        )
        .unwrap() else {
            panic!("not a tunnel")
        };
        assert_eq!((dmac, label), (None, None));
        let nh: Nexthop = serde_json::from_str(r#"{"type":"discard"}"#).unwrap();
        assert_eq!(nh, Nexthop::Discard);
        assert!(serde_json::from_str::<Nexthop>(
            r#"{"type":"encap","vif":"a","dmac":"02:00:00:00:00:02","x":1}"#
        )
        .is_err());
    }
}
