//! The desired configuration and every rule it must satisfy. Deterministic and free of I/O:
//! `check_*` methods validate a request against the current state without changing it; the
//! controller then applies the change to the dataplane and only on success calls the matching
//! `commit_*`. So a refused or failed request leaves the model exactly as it was.
//!
//! One module per object kind, each adding its checks and commits to [`Model`].

mod label;
mod nat;
mod nexthop;
mod policy;
mod route;
mod vif;
mod vrf;

use std::collections::{BTreeMap, BTreeSet};

use crate::api::{BridgeEntry, IpPrefix, MacAddr, Nexthop, Route};
use crate::dataplane::TableChange;
use crate::error::Error;

pub use nat::{
    service_info, NatModel, NAT_POOL_ADDRESSES_MAX, NAT_POOL_NAME_MAX, SERVICE_BACKENDS_MAX,
};
pub use vif::{
    device_name, kernel_device_iface, tunnel_headroom, VhostUserPort, VifConfig, VifEntry, VifPort,
    KERNEL_DEVICE_PREFIX,
};

/// VRF ids are 12 bits; VRF 0 is the fabric (underlay) VRF and always exists.
pub const VRF_MAX: u32 = 4095;
/// Nexthop ids are 1..=NEXTHOP_ID_MAX.
pub const NEXTHOP_ID_MAX: u32 = 65_535;
/// MPLS labels are 20 bits; 0..=15 are reserved (RFC 3032).
pub const MPLS_LABEL_MAX: u32 = (1 << 20) - 1;
pub const MPLS_LABEL_MIN: u32 = 16;
/// VXLAN network identifiers are 24 bits.
pub const VNI_MAX: u32 = (1 << 24) - 1;
pub const MTU_MIN: u32 = 68;
/// IPv6 needs links of at least 1280 bytes (RFC 8200).
pub const MTU_MIN_IPV6: u32 = 1280;
pub const MTU_MAX: u32 = 9216;
pub const MTU_DEFAULT: u32 = 1500;
pub const QUEUES_MAX: u32 = 16;
pub const ECMP_MEMBERS_MAX: usize = 32;
pub const POLICY_RULES_MAX: usize = 1024;
pub const VIF_NAME_MAX: usize = 63;
/// Linux interface names (IFNAMSIZ - 1).
pub const IFACE_NAME_MAX: usize = 15;
/// Users of a nexthop named in messages and listings before "and N more".
pub const USERS_NAMED_MAX: usize = 10;

#[derive(Debug, Clone)]
pub struct Model {
    vrfs: BTreeSet<u32>,
    vifs: BTreeMap<String, VifEntry>,
    nexthops: BTreeMap<u32, Nexthop>,
    routes: BTreeMap<u32, BTreeMap<IpPrefix, Route>>,
    bridge: BTreeMap<u32, BTreeMap<MacAddr, BridgeEntry>>,
    mpls: BTreeMap<u32, crate::api::MplsTarget>,
    vxlan: BTreeMap<u32, u32>,
    /// Reverse index: who points at each nexthop, so in-use checks and nexthop replacement
    /// cost O(users), not O(table size).
    users: BTreeMap<u32, BTreeSet<NhUser>>,
    nat: NatModel,
    /// VRF → its routing identity on the fabric.
    routing: BTreeMap<u32, crate::api::VrfRouting>,
}

/// Something that points at a nexthop.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
enum NhUser {
    Route(u32, IpPrefix),
    Bridge(u32, MacAddr),
    Mpls(u32),
    Ecmp(u32),
}

impl NhUser {
    fn describe(&self) -> String {
        match self {
            NhUser::Route(vrf, prefix) => format!("route {prefix} in vrf {vrf}"),
            NhUser::Bridge(vrf, mac) => format!("bridge entry {mac} in vrf {vrf}"),
            NhUser::Mpls(label) => format!("mpls label {label}"),
            NhUser::Ecmp(id) => format!("ecmp nexthop {id}"),
        }
    }
}

impl Default for Model {
    fn default() -> Self {
        Model {
            vrfs: BTreeSet::from([0]),
            vifs: BTreeMap::new(),
            nexthops: BTreeMap::new(),
            routes: BTreeMap::new(),
            bridge: BTreeMap::new(),
            mpls: BTreeMap::new(),
            vxlan: BTreeMap::new(),
            users: BTreeMap::new(),
            nat: NatModel::default(),
            routing: BTreeMap::new(),
        }
    }
}

/// Parse a path parameter that must be a number within `range`.
pub fn parse_param(param: &'static str, raw: &str, min: u32, max: u32) -> Result<u32, Error> {
    let v: u32 = raw.parse().map_err(|_| Error::InvalidPathParam {
        param,
        reason: format!("{raw:?} is not a number; expected {min}..={max}"),
    })?;
    if !(min..=max).contains(&v) {
        return Err(Error::InvalidPathParam {
            param,
            reason: format!("{v} is outside {min}..={max}"),
        });
    }
    Ok(v)
}

/// `00:00:00:00:00:00`: no station has it.
fn is_zero(mac: MacAddr) -> bool {
    mac.0 == [0; 6]
}

fn check_unicast(field: &str, mac: MacAddr) -> Result<(), Error> {
    if mac.is_multicast() || is_zero(mac) {
        return Err(Error::field(
            field,
            format!("{mac} is not a unicast MAC address (zero, multicast or broadcast)"),
        ));
    }
    Ok(())
}

impl Model {
    pub fn new() -> Self {
        Self::default()
    }

    /// Commit a table change its `check_*` accepted.
    pub fn commit_table(&mut self, change: &TableChange) {
        match change {
            TableChange::VrfAdd { vrf } => self.commit_vrf_add(*vrf),
            TableChange::VrfDel { vrf } => self.commit_vrf_del(*vrf),
            TableChange::NexthopSet { id, nexthop } => {
                self.commit_nexthop_set(*id, nexthop.clone())
            }
            TableChange::NexthopDel { id } => self.commit_nexthop_del(*id),
            TableChange::RouteSet { vrf, route } => self.commit_route_set(*vrf, route.clone()),
            TableChange::RouteDel { vrf, prefix } => self.commit_route_del(*vrf, prefix),
            TableChange::BridgeSet { vrf, entry } => self.commit_bridge_set(*vrf, entry.clone()),
            TableChange::BridgeDel { vrf, mac } => self.commit_bridge_del(*vrf, *mac),
            TableChange::MplsSet { label, nexthop } => {
                self.commit_mpls_set(*label, crate::api::MplsTarget::Nexthop(*nexthop))
            }
            TableChange::MplsVrfSet { label, vrf } => {
                self.commit_mpls_set(*label, crate::api::MplsTarget::Vrf(*vrf))
            }
            TableChange::MplsDel { label } => self.commit_mpls_del(*label),
            TableChange::VxlanSet { vni, vrf } => self.commit_vxlan_set(*vni, *vrf),
            TableChange::VxlanDel { vni } => self.commit_vxlan_del(*vni),
        }
    }
}

#[cfg(test)]
mod tests;

#[cfg(test)]
mod state_machine;
