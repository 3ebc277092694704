//! Nexthops, and the index of who points at each (routes, bridge entries, labels, ECMP groups)
//! that in-use checks and replacements read.

use std::collections::BTreeSet;
use std::net::IpAddr;

use super::route::check_label;
use super::{
    check_unicast, Model, NhUser, ECMP_MEMBERS_MAX, MPLS_LABEL_MAX, MPLS_LABEL_MIN, NEXTHOP_ID_MAX,
    USERS_NAMED_MAX, VNI_MAX,
};
use crate::api::Nexthop;
use crate::error::Error;

impl Model {
    pub fn nexthop(&self, id: u32) -> Result<&Nexthop, Error> {
        self.nexthops.get(&id).ok_or_else(|| Error::NotFound {
            what: "nexthop",
            key: id.to_string(),
        })
    }

    pub fn nexthops(&self) -> impl Iterator<Item = (u32, &Nexthop)> {
        self.nexthops.iter().map(|(id, nh)| (*id, nh))
    }

    /// What points at nexthop `id`, named for an error message: at most
    /// [`USERS_NAMED_MAX`] of them, then "and N more".
    pub fn nexthop_users(&self, id: u32) -> Vec<String> {
        let Some(users) = self.users.get(&id) else {
            return Vec::new();
        };
        let mut named: Vec<String> = users
            .iter()
            .take(USERS_NAMED_MAX)
            .map(NhUser::describe)
            .collect();
        if users.len() > USERS_NAMED_MAX {
            named.push(format!("and {} more", users.len() - USERS_NAMED_MAX));
        }
        named
    }

    /// How many things point at nexthop `id`.
    pub fn nexthop_use_count(&self, id: u32) -> usize {
        self.users.get(&id).map_or(0, BTreeSet::len)
    }

    pub(super) fn add_user(&mut self, nexthop: u32, user: NhUser) {
        self.users.entry(nexthop).or_default().insert(user);
    }

    pub(super) fn remove_user(&mut self, nexthop: u32, user: &NhUser) {
        if let Some(u) = self.users.get_mut(&nexthop) {
            u.remove(user);
            if u.is_empty() {
                self.users.remove(&nexthop);
            }
        }
    }

    /// `Ok(true)` if `id` is new, `Ok(false)` if it replaces an existing nexthop.
    pub fn check_nexthop_set(&self, id: u32, nh: &Nexthop) -> Result<bool, Error> {
        if !(1..=NEXTHOP_ID_MAX).contains(&id) {
            return Err(Error::InvalidPathParam {
                param: "id",
                reason: format!("{id} is outside 1..={NEXTHOP_ID_MAX}"),
            });
        }
        match nh {
            Nexthop::Encap { vif, dmac } => {
                self.require_vif_ref(vif)?;
                check_unicast("dmac", *dmac)?;
            }
            Nexthop::Tunnel {
                encap,
                vif,
                sip,
                dip,
                dmac,
                label,
            } => {
                if let Some(l) = label {
                    let (min, max) = if encap.carries_mpls() {
                        (MPLS_LABEL_MIN, MPLS_LABEL_MAX)
                    } else {
                        (0, VNI_MAX)
                    };
                    if !(min..=max).contains(l) {
                        return Err(Error::field(
                            "label",
                            format!("{l} is outside {min}..={max}, the range of a {encap} label"),
                        ));
                    }
                }
                self.require_vif_ref(vif)?;
                if let Some(v) = self.vifs.get(vif.as_str()) {
                    if v.spec.vrf != 0 {
                        return Err(Error::Conflict(format!(
                            "field `vif`: vif {vif} is in vrf {}; tunnels leave through a fabric vif in vrf 0",
                            v.spec.vrf
                        )));
                    }
                }
                if let Some(dmac) = dmac {
                    check_unicast("dmac", *dmac)?;
                }
                if sip.is_ipv4() != dip.is_ipv4() {
                    return Err(Error::field(
                        "dip",
                        format!("{dip} and sip {sip} must be of the same address family"),
                    ));
                }
                for (field, ip) in [("sip", sip), ("dip", dip)] {
                    if ip.is_unspecified() || ip.is_multicast() || is_broadcast(ip) {
                        return Err(Error::field(
                            field,
                            format!("{ip} is not a unicast address"),
                        ));
                    }
                }
            }
            Nexthop::Ecmp { members } => {
                if members.is_empty() || members.len() > ECMP_MEMBERS_MAX {
                    return Err(Error::field(
                        "members",
                        format!(
                            "an ECMP nexthop needs 1..={ECMP_MEMBERS_MAX} members, got {}",
                            members.len()
                        ),
                    ));
                }
                let mut seen = BTreeSet::new();
                for &m in members {
                    if m == id {
                        return Err(Error::Conflict(format!(
                            "field `members`: nexthop {id} cannot be its own member"
                        )));
                    }
                    if !seen.insert(m) {
                        return Err(Error::field(
                            "members",
                            format!("nexthop {m} is listed twice"),
                        ));
                    }
                    match self.nexthops.get(&m) {
                        None => {
                            return Err(Error::UnknownReference {
                                field: "members",
                                what: "nexthop",
                                key: m.to_string(),
                                hint: format!("create it first with PUT /nexthops/{m}"),
                            })
                        }
                        Some(Nexthop::Ecmp { .. }) => {
                            return Err(Error::Conflict(format!(
                                "field `members`: nexthop {m} is itself ECMP; ECMP groups do not nest"
                            )))
                        }
                        Some(other @ (Nexthop::Discard | Nexthop::Receive)) => {
                            return Err(Error::Conflict(format!(
                                "field `members`: nexthop {m} is {}; ECMP members are encap or tunnel nexthops",
                                other.type_name()
                            )))
                        }
                        Some(Nexthop::Encap { .. } | Nexthop::Tunnel { .. }) => {}
                    }
                }
                if let Some(parent) = self.nexthops.iter().find_map(|(p, n)| match n {
                    Nexthop::Ecmp { members } if members.contains(&id) => Some(*p),
                    _ => None,
                }) {
                    return Err(Error::Conflict(format!(
                        "nexthop {id} is a member of ECMP nexthop {parent} and cannot become ECMP itself"
                    )));
                }
            }
            Nexthop::Discard | Nexthop::Receive => {}
        }
        let exists = self.nexthops.contains_key(&id);
        if exists {
            // Whatever points at it must still be valid with the new definition.
            self.recheck_labels(id, nh)?;
        }
        Ok(!exists)
    }

    /// Check the routes and bridge entries that reach `changed` (directly or through an ECMP
    /// group) against its new definition `nh`.
    pub(super) fn recheck_labels(&self, changed: u32, nh: &Nexthop) -> Result<(), Error> {
        let lookup = |id: u32| {
            if id == changed {
                Some(nh)
            } else {
                self.nexthops.get(&id)
            }
        };
        let mut targets = vec![changed];
        if let Some(users) = self.users.get(&changed) {
            targets.extend(users.iter().filter_map(|u| match u {
                NhUser::Ecmp(group) => Some(*group),
                _ => None,
            }));
        }
        for target in targets {
            for user in self.users.get(&target).into_iter().flatten() {
                let label = match user {
                    NhUser::Route(vrf, prefix) => self
                        .routes
                        .get(vrf)
                        .and_then(|r| r.get(prefix))
                        .map(|r| r.label),
                    NhUser::Bridge(vrf, mac) => self
                        .bridge
                        .get(vrf)
                        .and_then(|b| b.get(mac))
                        .map(|b| b.label),
                    NhUser::Mpls(_) | NhUser::Ecmp(_) => None,
                };
                if let Some(label) = label {
                    check_label(lookup, target, label).map_err(|e| {
                        Error::Conflict(format!("{} would become invalid: {e}", user.describe()))
                    })?;
                }
            }
        }
        Ok(())
    }

    pub(super) fn require_vif_ref(&self, vif: &str) -> Result<(), Error> {
        if self.vifs.contains_key(vif) {
            Ok(())
        } else {
            Err(Error::UnknownReference {
                field: "vif",
                what: "vif",
                key: vif.to_string(),
                hint: "add it first with POST /vifs".to_string(),
            })
        }
    }

    pub(super) fn require_nexthop_ref(&self, field: &'static str, id: u32) -> Result<(), Error> {
        if self.nexthops.contains_key(&id) {
            Ok(())
        } else {
            Err(Error::UnknownReference {
                field,
                what: "nexthop",
                key: id.to_string(),
                hint: format!("create it first with PUT /nexthops/{id}"),
            })
        }
    }

    pub fn check_nexthop_del(&self, id: u32) -> Result<(), Error> {
        self.nexthop(id)?;
        let users = self.nexthop_users(id);
        if !users.is_empty() {
            return Err(Error::InUse {
                what: "nexthop",
                key: id.to_string(),
                users,
            });
        }
        Ok(())
    }

    pub fn commit_nexthop_set(&mut self, id: u32, nh: Nexthop) {
        if let Some(Nexthop::Ecmp { members }) = self.nexthops.get(&id).cloned() {
            for m in members {
                self.remove_user(m, &NhUser::Ecmp(id));
            }
        }
        if let Nexthop::Ecmp { members } = &nh {
            for &m in members {
                self.add_user(m, NhUser::Ecmp(id));
            }
        }
        self.nexthops.insert(id, nh);
    }

    pub fn commit_nexthop_del(&mut self, id: u32) {
        if let Some(Nexthop::Ecmp { members }) = self.nexthops.remove(&id) {
            for m in members {
                self.remove_user(m, &NhUser::Ecmp(id));
            }
        }
    }
}

fn is_broadcast(ip: &IpAddr) -> bool {
    matches!(ip, IpAddr::V4(v4) if v4.is_broadcast())
}
