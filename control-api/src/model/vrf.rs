//! VRFs: VRF 0 (the fabric) always exists; a VRF goes only once nothing is in it.

use std::collections::BTreeMap;

use super::{Model, VRF_MAX};
use crate::api::VrfInfo;
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
        users.extend(self.nat_users_of_vrf(vrf));
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
            })
            .collect()
    }
}
