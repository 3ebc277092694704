//! What the state files hold: one record per accepted change, as JSON (self-describing, so a
//! record can be read by eye and a future format can still decode an old one), and the same
//! records, in an order that replays cleanly, for a snapshot of the whole model.

use std::collections::BTreeSet;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::api::{BridgeEntry, IpPrefix, MacAddr, Nexthop, Policy, Route, VifRequest};
use crate::model::Model;

/// One accepted change, as the controller replays it. Vif adds carry what a fresh request
/// cannot: the index the vif had and the directories vrouterd created for its socket (removed
/// when the vif goes, even by a later vrouterd).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "kebab-case", deny_unknown_fields)]
pub enum Record {
    VrfAdd {
        vrf: u32,
    },
    VrfDel {
        vrf: u32,
    },
    VifAdd {
        index: u32,
        vif: VifRequest,
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        created_dirs: Vec<PathBuf>,
    },
    VifDel {
        name: String,
    },
    NexthopSet {
        id: u32,
        nexthop: Nexthop,
    },
    NexthopDel {
        id: u32,
    },
    RouteSet {
        vrf: u32,
        route: Route,
    },
    RouteDel {
        vrf: u32,
        prefix: IpPrefix,
    },
    BridgeSet {
        vrf: u32,
        entry: BridgeEntry,
    },
    BridgeDel {
        vrf: u32,
        mac: MacAddr,
    },
    MplsSet {
        label: u32,
        nexthop: u32,
    },
    MplsDel {
        label: u32,
    },
    VxlanSet {
        vni: u32,
        vrf: u32,
    },
    VxlanDel {
        vni: u32,
    },
    PolicySet {
        vif: String,
        policy: Policy,
    },
    PolicyDel {
        vif: String,
    },
}

impl Record {
    /// The vif whose existence this record changes, if any.
    pub fn vif_changed(&self) -> Option<&str> {
        match self {
            Record::VifAdd { vif, .. } => Some(&vif.name),
            Record::VifDel { name } => Some(name),
            _ => None,
        }
    }

    /// What the record does, for log lines.
    pub fn describe(&self) -> String {
        serde_json::to_string(self).unwrap_or_else(|e| format!("{self:?} ({e})"))
    }
}

/// The records that rebuild `model` from an empty one: VRFs, vifs, plain nexthops, ECMP groups
/// (their members exist by then), routes, bridge entries, labels, VNIs, policies. Vifs named in
/// `fixed` come from vrouterd's command line, which adds them again at every start: their
/// policies are kept, their existence is not.
pub fn snapshot<'a>(
    model: &'a Model,
    fixed: &'a BTreeSet<String>,
) -> impl Iterator<Item = Record> + 'a {
    let vrfs = model
        .vrf_ids()
        .filter(|&v| v != 0)
        .map(|vrf| Record::VrfAdd { vrf });
    let vifs = model
        .vifs()
        .filter(|v| !fixed.contains(&v.spec.name))
        .map(|v| Record::VifAdd {
            index: v.spec.index,
            vif: v.config.to_request(),
            created_dirs: v.created_dirs.clone(),
        });
    let nexthop = |(id, nh): (u32, &Nexthop)| Record::NexthopSet {
        id,
        nexthop: nh.clone(),
    };
    let plain = model
        .nexthops()
        .filter(|(_, nh)| !matches!(nh, Nexthop::Ecmp { .. }))
        .map(nexthop);
    let ecmp = model
        .nexthops()
        .filter(|(_, nh)| matches!(nh, Nexthop::Ecmp { .. }))
        .map(nexthop);
    let routes = model.all_routes().map(|(vrf, r)| Record::RouteSet {
        vrf,
        route: r.clone(),
    });
    let bridge = model.all_bridge().map(|(vrf, e)| Record::BridgeSet {
        vrf,
        entry: e.clone(),
    });
    let mpls = model
        .mpls()
        .map(|(label, nexthop)| Record::MplsSet { label, nexthop });
    let vxlan = model
        .vxlan()
        .map(|(vni, vrf)| Record::VxlanSet { vni, vrf });
    let policies = model.vifs().filter_map(|v| {
        v.policy.as_ref().map(|p| Record::PolicySet {
            vif: v.spec.name.clone(),
            policy: p.clone(),
        })
    });
    vrfs.chain(vifs)
        .chain(plain)
        .chain(ecmp)
        .chain(routes)
        .chain(bridge)
        .chain(mpls)
        .chain(vxlan)
        .chain(policies)
}
