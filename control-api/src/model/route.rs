//! Routes and bridge entries of a VRF, and the label rule both follow toward tunnels.

use super::{is_zero, Model, NhUser, MPLS_LABEL_MAX, MPLS_LABEL_MIN, VNI_MAX};
use crate::api::TunnelEncap;
use crate::api::{BridgeEntry, IpPrefix, MacAddr, Nexthop, Route};
use crate::error::Error;

impl Model {
    /// `Ok(true)` if the prefix is new in the VRF, `Ok(false)` if it replaces a route.
    pub fn check_route_set(&self, vrf: u32, route: &Route) -> Result<bool, Error> {
        self.require_vrf(vrf)?;
        self.require_nexthop_ref("nexthop", route.nexthop)?;
        check_label(|id| self.nexthops.get(&id), route.nexthop, route.label)?;
        if let Some(name) = self.service_at(vrf, route.prefix) {
            return Err(Error::Conflict(format!(
                "{} is the VIP of service {name}: a VIP is an address of its own",
                route.prefix
            )));
        }
        Ok(!self
            .routes
            .get(&vrf)
            .is_some_and(|r| r.contains_key(&route.prefix)))
    }

    pub fn check_route_del(&self, vrf: u32, prefix: &IpPrefix) -> Result<(), Error> {
        self.require_vrf(vrf)?;
        if !self
            .routes
            .get(&vrf)
            .is_some_and(|r| r.contains_key(prefix))
        {
            return Err(Error::NotFound {
                what: "route",
                key: format!("{prefix} in vrf {vrf}"),
            });
        }
        Ok(())
    }

    pub fn commit_route_set(&mut self, vrf: u32, route: Route) {
        let user = NhUser::Route(vrf, route.prefix);
        self.add_user(route.nexthop, user.clone());
        if let Some(old) = self
            .routes
            .entry(vrf)
            .or_default()
            .insert(route.prefix, route.clone())
        {
            if old.nexthop != route.nexthop {
                self.remove_user(old.nexthop, &user);
            }
        }
    }

    pub fn commit_route_del(&mut self, vrf: u32, prefix: &IpPrefix) {
        if let Some(old) = self.routes.get_mut(&vrf).and_then(|r| r.remove(prefix)) {
            self.remove_user(old.nexthop, &NhUser::Route(vrf, *prefix));
        }
    }

    pub fn routes(&self, vrf: u32) -> Result<Vec<Route>, Error> {
        self.require_vrf(vrf)?;
        Ok(self
            .routes
            .get(&vrf)
            .map(|r| r.values().cloned().collect())
            .unwrap_or_default())
    }

    /// The route to exactly `prefix` in `vrf`, if any.
    pub fn route(&self, vrf: u32, prefix: &IpPrefix) -> Option<&Route> {
        self.routes.get(&vrf)?.get(prefix)
    }

    /// Every route of every VRF, with its VRF.
    pub fn all_routes(&self) -> impl Iterator<Item = (u32, &Route)> + '_ {
        self.routes
            .iter()
            .flat_map(|(vrf, r)| r.values().map(move |route| (*vrf, route)))
    }

    pub fn check_bridge_set(&self, vrf: u32, entry: &BridgeEntry) -> Result<bool, Error> {
        self.require_vrf(vrf)?;
        if is_zero(entry.mac) {
            return Err(Error::field(
                "mac",
                "00:00:00:00:00:00 is not a station address",
            ));
        }
        self.require_nexthop_ref("nexthop", entry.nexthop)?;
        check_label(|id| self.nexthops.get(&id), entry.nexthop, entry.label)?;
        Ok(!self
            .bridge
            .get(&vrf)
            .is_some_and(|b| b.contains_key(&entry.mac)))
    }

    pub fn check_bridge_del(&self, vrf: u32, mac: MacAddr) -> Result<(), Error> {
        self.require_vrf(vrf)?;
        if !self.bridge.get(&vrf).is_some_and(|b| b.contains_key(&mac)) {
            return Err(Error::NotFound {
                what: "bridge entry",
                key: format!("{mac} in vrf {vrf}"),
            });
        }
        Ok(())
    }

    pub fn commit_bridge_set(&mut self, vrf: u32, entry: BridgeEntry) {
        let user = NhUser::Bridge(vrf, entry.mac);
        self.add_user(entry.nexthop, user.clone());
        if let Some(old) = self
            .bridge
            .entry(vrf)
            .or_default()
            .insert(entry.mac, entry.clone())
        {
            if old.nexthop != entry.nexthop {
                self.remove_user(old.nexthop, &user);
            }
        }
    }

    pub fn commit_bridge_del(&mut self, vrf: u32, mac: MacAddr) {
        if let Some(old) = self.bridge.get_mut(&vrf).and_then(|b| b.remove(&mac)) {
            self.remove_user(old.nexthop, &NhUser::Bridge(vrf, mac));
        }
    }

    pub fn bridge(&self, vrf: u32) -> Result<Vec<BridgeEntry>, Error> {
        self.require_vrf(vrf)?;
        Ok(self
            .bridge
            .get(&vrf)
            .map(|b| b.values().cloned().collect())
            .unwrap_or_default())
    }

    /// Every bridge entry of every VRF, with its VRF.
    pub fn all_bridge(&self) -> impl Iterator<Item = (u32, &BridgeEntry)> + '_ {
        self.bridge
            .iter()
            .flat_map(|(vrf, b)| b.values().map(move |entry| (*vrf, entry)))
    }
}

/// The label rule for a route or bridge entry toward `nexthop`: required toward tunnels (a VNI
/// for VXLAN, an MPLS label 16..2^20 otherwise) unless every tunnel it reaches pushes its own
/// label, refused toward anything else.
pub(super) fn check_label<'a>(
    lookup: impl Fn(u32) -> Option<&'a Nexthop>,
    nexthop: u32,
    label: Option<u32>,
) -> Result<(), Error> {
    let direct = lookup(nexthop);
    let tunnels: Vec<(TunnelEncap, Option<u32>)> = match direct {
        Some(Nexthop::Tunnel { encap, label, .. }) => vec![(*encap, *label)],
        Some(Nexthop::Ecmp { members }) => members
            .iter()
            .filter_map(|m| match lookup(*m) {
                Some(Nexthop::Tunnel { encap, label, .. }) => Some((*encap, *label)),
                _ => None,
            })
            .collect(),
        _ => Vec::new(),
    };
    // The encapsulations the route's label is pushed into: tunnels without their own.
    let encaps: Vec<TunnelEncap> = tunnels
        .iter()
        .filter(|(_, own)| own.is_none())
        .map(|(e, _)| *e)
        .collect();
    // Out of every label's range is wrong by itself (400); whether a label belongs, and its
    // range, depend on the nexthop as configured (409).
    if let Some(l) = label.filter(|l| *l > VNI_MAX) {
        return Err(Error::field(
            "label",
            format!("{l} is outside 0..={VNI_MAX}, the range of any label"),
        ));
    }
    match (label, tunnels.is_empty()) {
        (None, true) => Ok(()),
        (Some(l), true) => Err(Error::Conflict(format!(
            "field `label`: label {l} only applies toward tunnel nexthops; nexthop {nexthop} is {}",
            direct.map_or("missing", Nexthop::type_name)
        ))),
        (None, false) if encaps.is_empty() => Ok(()),
        (None, false) => Err(Error::Conflict(format!(
            "field `label` is required toward tunnel nexthop {nexthop} (the VNI for vxlan, the MPLS label for mplsoudp/mplsogre) unless its tunnels have their own `label`"
        ))),
        (Some(l), false) => {
            for encap in encaps {
                let (min, max) = if encap.carries_mpls() {
                    (MPLS_LABEL_MIN, MPLS_LABEL_MAX)
                } else {
                    (0, VNI_MAX)
                };
                if !(min..=max).contains(&l) {
                    return Err(Error::Conflict(format!(
                        "field `label`: {l} is outside {min}..={max}, the range of a {encap} label"
                    )));
                }
            }
            Ok(())
        }
    }
}
