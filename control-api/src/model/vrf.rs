//! VRFs: VRF 0 (the fabric) always exists; a VRF goes only once nothing is in it.

use std::collections::BTreeMap;

use super::{Model, MPLS_LABEL_MAX, MPLS_LABEL_MIN, VNI_MAX, VRF_MAX};

/// Most route targets a VRF imports or exports.
pub const ROUTE_TARGETS_MAX: usize = 64;
use crate::api::{RouteTag, VrfInfo, VrfRouting};
use crate::error::Error;

impl Model {
    pub fn vrf_exists(&self, vrf: u32) -> bool {
        self.vrfs.contains(&vrf)
    }

    pub(super) fn require_vrf(&self, vrf: u32) -> Result<(), Error> {
        if self.vrf_exists(vrf) {
            Ok(())
        } else {
            Err(Error::NotFound {
                what: "vrf",
                key: vrf.to_string(),
            })
        }
    }

    /// A body's `vrf` field (a vif's, a VNI's): a VRF id that exists.
    pub(super) fn require_vrf_ref(&self, vrf: u32) -> Result<(), Error> {
        if vrf > VRF_MAX {
            return Err(Error::field(
                "vrf",
                format!("{vrf} is outside 0..={VRF_MAX}"),
            ));
        }
        if !self.vrf_exists(vrf) {
            return Err(Error::UnknownReference {
                field: "vrf",
                what: "vrf",
                key: vrf.to_string(),
                hint: format!("create it first with PUT /vrfs/{vrf}"),
            });
        }
        Ok(())
    }

    /// `Ok(true)` if the VRF is new, `Ok(false)` if it already exists (nothing to do).
    pub fn check_vrf_add(&self, vrf: u32) -> Result<bool, Error> {
        Ok(!self.vrfs.contains(&vrf))
    }

    pub fn check_vrf_del(&self, vrf: u32) -> Result<(), Error> {
        if vrf == 0 {
            return Err(Error::Conflict(
                "vrf 0 is the fabric VRF and cannot be removed".to_string(),
            ));
        }
        self.require_vrf(vrf)?;
        let mut users: Vec<String> = self
            .vifs
            .values()
            .filter(|v| v.spec.vrf == vrf)
            .map(|v| format!("vif {}", v.spec.name))
            .collect();
        let routes = self.routes.get(&vrf).map_or(0, BTreeMap::len);
        if routes > 0 {
            users.push(format!("{routes} route(s)"));
        }
        let bridge = self.bridge.get(&vrf).map_or(0, BTreeMap::len);
        if bridge > 0 {
            users.push(format!("{bridge} bridge entrie(s)"));
        }
        users.extend(
            self.vxlan
                .iter()
                .filter(|(_, v)| **v == vrf)
                .map(|(vni, _)| format!("vxlan vni {vni}")),
        );
        users.extend(self.mpls_users_of_vrf(vrf));
        users.extend(self.nat_users_of_vrf(vrf));
        if self.routing.contains_key(&vrf) {
            users.push(format!("its routing identity (/vrfs/{vrf}/routing)"));
        }
        if !users.is_empty() {
            return Err(Error::InUse {
                what: "vrf",
                key: vrf.to_string(),
                users,
            });
        }
        Ok(())
    }

    pub fn commit_vrf_add(&mut self, vrf: u32) {
        self.vrfs.insert(vrf);
    }

    pub fn commit_vrf_del(&mut self, vrf: u32) {
        self.vrfs.remove(&vrf);
        self.routes.remove(&vrf);
        self.bridge.remove(&vrf);
    }

    /// Every VRF id, ascending.
    pub fn vrf_ids(&self) -> impl Iterator<Item = u32> + '_ {
        self.vrfs.iter().copied()
    }

    pub fn vrfs(&self) -> Vec<VrfInfo> {
        self.vrfs
            .iter()
            .map(|&vrf| VrfInfo {
                vrf,
                vifs: self.vifs.values().filter(|v| v.spec.vrf == vrf).count() as u32,
                routes: self.routes.get(&vrf).map_or(0, BTreeMap::len) as u32,
                bridge_entries: self.bridge.get(&vrf).map_or(0, BTreeMap::len) as u32,
                routing: self.routing.get(&vrf).cloned(),
            })
            .collect()
    }

    /// Checks `PUT /vrfs/{vrf}/routing`; `Ok(true)` if the VRF had none, `Ok(false)` if it
    /// replaces one (or is the same).
    pub fn check_routing_set(&self, vrf: u32, r: &VrfRouting) -> Result<bool, Error> {
        self.require_vrf(vrf)?;
        if vrf == 0 {
            return Err(Error::Conflict(
                "vrf 0 is the fabric (underlay) and is not advertised as a VPN".into(),
            ));
        }
        let rd = RouteTag::parse(&r.rd).map_err(|e| Error::field("rd", e))?;
        for (field, targets) in [
            ("import_targets", &r.import_targets),
            ("export_targets", &r.export_targets),
        ] {
            if targets.is_empty() {
                return Err(Error::field(field, "at least one route target is needed"));
            }
            if targets.len() > ROUTE_TARGETS_MAX {
                return Err(Error::field(
                    field,
                    format!(
                        "{} route targets; at most {ROUTE_TARGETS_MAX}",
                        targets.len()
                    ),
                ));
            }
            let mut seen = std::collections::BTreeSet::new();
            for t in targets {
                RouteTag::parse_target(t).map_err(|e| Error::field(field, e))?;
                if !seen.insert(t) {
                    return Err(Error::field(field, format!("{t} is listed twice")));
                }
            }
        }
        if r.vni.is_none() && r.label.is_none() {
            return Err(Error::field(
                "vni",
                "give the VXLAN vni and/or the MPLS label the VRF's traffic arrives with",
            ));
        }
        if let Some(vni) = r.vni {
            if !(1..=VNI_MAX).contains(&vni) {
                return Err(Error::field(
                    "vni",
                    format!("{vni} is outside 1..={VNI_MAX}"),
                ));
            }
            if let Some(&other) = self.vxlan.get(&vni).filter(|&&v| v != vrf) {
                return Err(Error::Conflict(format!(
                    "vni {vni} is mapped to vrf {other} (/vxlan/{vni}), not to vrf {vrf}"
                )));
            }
        }
        if let Some(label) = r.label {
            if !(MPLS_LABEL_MIN..=MPLS_LABEL_MAX).contains(&label) {
                return Err(Error::field(
                    "label",
                    format!("{label} is outside {MPLS_LABEL_MIN}..={MPLS_LABEL_MAX}"),
                ));
            }
        }
        for (&other, o) in self.routing.iter().filter(|(v, _)| **v != vrf) {
            if RouteTag::parse(&o.rd).ok() == Some(rd) {
                return Err(Error::Conflict(format!(
                    "route distinguisher {} is vrf {other}'s; each VRF needs its own",
                    r.rd
                )));
            }
            if r.vni.is_some() && o.vni == r.vni {
                return Err(Error::Conflict(format!(
                    "vni {} names vrf {other} already",
                    o.vni.unwrap_or_default()
                )));
            }
            if r.label.is_some() && o.label == r.label {
                return Err(Error::Conflict(format!(
                    "label {} names vrf {other} already",
                    o.label.unwrap_or_default()
                )));
            }
        }
        Ok(!self.routing.contains_key(&vrf))
    }

    pub fn commit_routing_set(&mut self, vrf: u32, r: VrfRouting) {
        self.routing.insert(vrf, r);
    }

    pub fn routing(&self, vrf: u32) -> Result<&VrfRouting, Error> {
        self.require_vrf(vrf)?;
        self.routing.get(&vrf).ok_or_else(|| Error::NotFound {
            what: "routing identity of vrf",
            key: vrf.to_string(),
        })
    }

    pub fn commit_routing_del(&mut self, vrf: u32) {
        self.routing.remove(&vrf);
    }

    /// Every VRF's routing identity (for snapshots).
    pub fn all_routing(&self) -> impl Iterator<Item = (u32, &VrfRouting)> + '_ {
        self.routing.iter().map(|(v, r)| (*v, r))
    }
}
