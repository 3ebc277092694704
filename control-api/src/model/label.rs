//! Incoming MPLS labels (to a nexthop or a VRF) and VXLAN VNIs (to a VRF).

use super::{Model, NhUser};
use crate::api::MplsTarget;
use crate::error::Error;

impl Model {
    pub fn check_mpls_set(&self, label: u32, target: MplsTarget) -> Result<bool, Error> {
        match target {
            MplsTarget::Nexthop(nh) => self.require_nexthop_ref("nexthop", nh)?,
            MplsTarget::Vrf(vrf) => self.require_vrf_ref(vrf)?,
        }
        Ok(!self.mpls.contains_key(&label))
    }

    pub fn check_mpls_del(&self, label: u32) -> Result<(), Error> {
        if !self.mpls.contains_key(&label) {
            return Err(Error::NotFound {
                what: "mpls label",
                key: label.to_string(),
            });
        }
        Ok(())
    }

    pub fn commit_mpls_set(&mut self, label: u32, target: MplsTarget) {
        if let MplsTarget::Nexthop(nh) = target {
            self.add_user(nh, NhUser::Mpls(label));
        }
        if let Some(MplsTarget::Nexthop(old)) = self.mpls.insert(label, target) {
            if target != MplsTarget::Nexthop(old) {
                self.remove_user(old, &NhUser::Mpls(label));
            }
        }
    }

    pub fn commit_mpls_del(&mut self, label: u32) {
        if let Some(MplsTarget::Nexthop(old)) = self.mpls.remove(&label) {
            self.remove_user(old, &NhUser::Mpls(label));
        }
    }

    pub fn mpls(&self) -> impl Iterator<Item = (u32, MplsTarget)> + '_ {
        self.mpls.iter().map(|(l, t)| (*l, *t))
    }

    /// The labels that lead into `vrf`, for the refusal to remove it.
    pub(super) fn mpls_users_of_vrf(&self, vrf: u32) -> impl Iterator<Item = String> + '_ {
        self.mpls
            .iter()
            .filter(move |(_, t)| **t == MplsTarget::Vrf(vrf))
            .map(|(label, _)| format!("mpls label {label}"))
    }

    pub fn check_vxlan_set(&self, vni: u32, vrf: u32) -> Result<bool, Error> {
        self.require_vrf_ref(vrf)?;
        Ok(!self.vxlan.contains_key(&vni))
    }

    pub fn check_vxlan_del(&self, vni: u32) -> Result<(), Error> {
        if !self.vxlan.contains_key(&vni) {
            return Err(Error::NotFound {
                what: "vxlan vni",
                key: vni.to_string(),
            });
        }
        Ok(())
    }

    pub fn commit_vxlan_set(&mut self, vni: u32, vrf: u32) {
        self.vxlan.insert(vni, vrf);
    }

    pub fn commit_vxlan_del(&mut self, vni: u32) {
        self.vxlan.remove(&vni);
    }

    pub fn vxlan(&self) -> impl Iterator<Item = (u32, u32)> + '_ {
        self.vxlan.iter().map(|(v, r)| (*v, *r))
    }
}
