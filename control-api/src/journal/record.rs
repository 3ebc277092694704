//! What the state files hold: one record per accepted change, as JSON (self-describing, so a
//! record can be read by eye and a future format can still decode an old one), and the same
//! records, in an order that replays cleanly, for a snapshot of the whole model.

use std::collections::BTreeSet;
use std::net::IpAddr;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::api::{MplsTarget, NatPool, Nexthop, Policy, VifRequest, VrfRouting};
use crate::dataplane::TableChange;
use crate::model::Model;

/// One accepted change, as the controller replays it. Each is one JSON object whose `op` says
/// what it is.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(untagged)]
pub enum Record {
    /// A table change, as the dataplane took it.
    Table(TableChange),
    /// A vif or policy change, by vif name.
    Vif(VifRecord),
    /// A source-NAT pool or attachment change.
    Nat(NatRecord),
    /// A VRF's routing identity set or removed.
    Routing(RoutingRecord),
}

/// A change to a VRF's routing identity (`/vrfs/{vrf}/routing`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "kebab-case", deny_unknown_fields)]
pub enum RoutingRecord {
    VrfRoutingSet { vrf: u32, routing: VrfRouting },
    VrfRoutingDel { vrf: u32 },
}

/// The `op` of each [`RoutingRecord`].
const ROUTING_OPS: [&str; 2] = ["vrf-routing-set", "vrf-routing-del"];

/// A change to source-NAT pools or to the VRFs attached to them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "kebab-case", deny_unknown_fields)]
pub enum NatRecord {
    NatPoolSet {
        name: String,
        pool: NatPool,
    },
    NatPoolDel {
        name: String,
    },
    SnatSet {
        vrf: u32,
        pool: String,
    },
    SnatDel {
        vrf: u32,
    },
    FloatingIpSet {
        address: IpAddr,
        vrf: u32,
        ip: IpAddr,
    },
    FloatingIpDel {
        address: IpAddr,
    },
    ServiceSet {
        name: String,
        service: crate::api::Service,
    },
    ServiceDel {
        name: String,
    },
    LinkLocalSet {
        name: String,
        service: crate::api::LinkLocalService,
    },
    LinkLocalDel {
        name: String,
    },
}

/// The `op` of each [`NatRecord`].
const NAT_OPS: [&str; 10] = [
    "nat-pool-set",
    "nat-pool-del",
    "snat-set",
    "snat-del",
    "floating-ip-set",
    "floating-ip-del",
    "service-set",
    "service-del",
    "link-local-set",
    "link-local-del",
];

/// A change to vifs or their policies. Vif adds carry what a fresh request cannot: the index the
/// vif had and the directories vrouterd created for its socket (removed when the vif goes, even
/// by a later vrouterd).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "kebab-case", deny_unknown_fields)]
pub enum VifRecord {
    VifAdd {
        index: u32,
        /// Boxed: a request is much larger than the other records.
        vif: Box<VifRequest>,
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        created_dirs: Vec<PathBuf>,
    },
    VifDel {
        name: String,
    },
    PolicySet {
        vif: String,
        policy: Policy,
    },
    PolicyDel {
        vif: String,
    },
    /// A vhost-user vif's queue pair pinned to a forwarding lcore.
    QueuePin {
        vif: String,
        queue: u32,
        lcore: u32,
    },
}

/// The `op` of each [`VifRecord`]; every other `op` is a table change's.
const VIF_OPS: [&str; 5] = [
    "vif-add",
    "vif-del",
    "policy-set",
    "policy-del",
    "queue-pin",
];

impl Record {
    /// Reads a record as `serde_json` wrote it. Its `op` decides which type decodes the rest, so
    /// a record that does not decode is reported against the fields its `op` takes.
    pub fn from_json(json: &[u8]) -> Result<Record, serde_json::Error> {
        #[derive(Deserialize)]
        struct Op {
            op: String,
        }
        let Op { op } = serde_json::from_slice(json)?;
        if VIF_OPS.contains(&op.as_str()) {
            serde_json::from_slice(json).map(Record::Vif)
        } else if NAT_OPS.contains(&op.as_str()) {
            serde_json::from_slice(json).map(Record::Nat)
        } else if ROUTING_OPS.contains(&op.as_str()) {
            serde_json::from_slice(json).map(Record::Routing)
        } else {
            serde_json::from_slice(json).map(Record::Table)
        }
    }

    /// The record as the change stream shows it: the same JSON, without the directories
    /// vrouterd created for a vif's socket (its own housekeeping).
    pub fn event(&self) -> serde_json::Value {
        let mut v = serde_json::to_value(self).unwrap_or(serde_json::Value::Null);
        if let Some(o) = v.as_object_mut() {
            o.remove("created_dirs");
        }
        v
    }

    /// The vif whose existence this record changes, if any.
    pub fn vif_changed(&self) -> Option<&str> {
        match self {
            Record::Vif(VifRecord::VifAdd { vif, .. }) => Some(&vif.name),
            Record::Vif(VifRecord::VifDel { name }) => Some(name),
            _ => None,
        }
    }

    /// What the record does, for log lines.
    pub fn describe(&self) -> String {
        serde_json::to_string(self).unwrap_or_else(|e| format!("{self:?} ({e})"))
    }
}

/// The records that rebuild `model` from an empty one: VRFs, vifs, plain nexthops, ECMP groups
/// (their members exist by then), routes, bridge entries, labels, VNIs, VRF routing
/// identities, policies, NAT pools
/// and the VRFs attached to them. Vifs named in
/// `fixed` come from vrouterd's command line, which adds them again at every start: their
/// policies are kept, their existence is not.
pub fn snapshot<'a>(
    model: &'a Model,
    fixed: &'a BTreeSet<String>,
) -> impl Iterator<Item = Record> + 'a {
    let vrfs = model
        .vrf_ids()
        .filter(|&v| v != 0)
        .map(|vrf| Record::Table(TableChange::VrfAdd { vrf }));
    let vifs = model
        .vifs()
        .filter(|v| !fixed.contains(&v.spec.name))
        .map(|v| {
            Record::Vif(VifRecord::VifAdd {
                index: v.spec.index,
                vif: Box::new(v.config.to_request()),
                created_dirs: v.created_dirs.clone(),
            })
        });
    let nexthop = |(id, nh): (u32, &Nexthop)| {
        Record::Table(TableChange::NexthopSet {
            id,
            nexthop: nh.clone(),
        })
    };
    let plain = model
        .nexthops()
        .filter(|(_, nh)| !matches!(nh, Nexthop::Ecmp { .. }))
        .map(nexthop);
    let ecmp = model
        .nexthops()
        .filter(|(_, nh)| matches!(nh, Nexthop::Ecmp { .. }))
        .map(nexthop);
    let routes = model.all_routes().map(|(vrf, r)| {
        Record::Table(TableChange::RouteSet {
            vrf,
            route: r.clone(),
        })
    });
    let bridge = model.all_bridge().map(|(vrf, e)| {
        Record::Table(TableChange::BridgeSet {
            vrf,
            entry: e.clone(),
        })
    });
    let mpls = model.mpls().map(|(label, target)| {
        Record::Table(match target {
            MplsTarget::Nexthop(nexthop) => TableChange::MplsSet { label, nexthop },
            MplsTarget::Vrf(vrf) => TableChange::MplsVrfSet { label, vrf },
        })
    });
    let vxlan = model
        .vxlan()
        .map(|(vni, vrf)| Record::Table(TableChange::VxlanSet { vni, vrf }));
    let routing = model.all_routing().map(|(vrf, r)| {
        Record::Routing(RoutingRecord::VrfRoutingSet {
            vrf,
            routing: r.clone(),
        })
    });
    let policies = model.vifs().filter_map(|v| {
        v.policy.as_ref().map(|p| {
            Record::Vif(VifRecord::PolicySet {
                vif: v.spec.name.clone(),
                policy: p.clone(),
            })
        })
    });
    let pins = model.vifs().flat_map(|v| {
        v.pins.iter().map(|(&queue, &lcore)| {
            Record::Vif(VifRecord::QueuePin {
                vif: v.spec.name.clone(),
                queue,
                lcore,
            })
        })
    });
    let pools = model.nat_pool_configs().map(|(name, pool)| {
        Record::Nat(NatRecord::NatPoolSet {
            name: name.to_string(),
            pool: pool.clone(),
        })
    });
    let snat = model.snat_attachments().map(|(vrf, pool)| {
        Record::Nat(NatRecord::SnatSet {
            vrf,
            pool: pool.to_string(),
        })
    });
    let floating = model.floating_ips().into_iter().map(|f| {
        Record::Nat(NatRecord::FloatingIpSet {
            address: f.address,
            vrf: f.vrf,
            ip: f.ip,
        })
    });
    let services = model.services().map(|(name, s)| {
        Record::Nat(NatRecord::ServiceSet {
            name: name.to_string(),
            service: s.clone(),
        })
    });
    let link_local = model.link_locals().map(|(name, s)| {
        Record::Nat(NatRecord::LinkLocalSet {
            name: name.to_string(),
            service: *s,
        })
    });
    vrfs.chain(vifs)
        .chain(plain)
        .chain(ecmp)
        .chain(routes)
        .chain(bridge)
        .chain(mpls)
        .chain(vxlan)
        .chain(routing)
        .chain(policies)
        .chain(pins)
        .chain(pools)
        .chain(snat)
        .chain(floating)
        .chain(services)
        .chain(link_local)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// One record of every `op`, byte for byte as the state files have held them since the
    /// format began (one flat enum tagged by `op`): state directories written then must still
    /// restore, and new records must stay readable by the same reader.
    const WRITTEN_BEFORE: [&str; 16] = [
        r#"{"op":"vrf-add","vrf":1}"#,
        r#"{"op":"vrf-del","vrf":1}"#,
        r#"{"op":"vif-add","index":3,"vif":{"name":"pod1","type":"vhost-user","vrf":1,"mac":"02:00:00:00:00:01","ip":"10.0.0.1","vhostsocket-dir":"/var/run/vrouter/pod1","vhostsocket-filename":"eth0.sock","vhostuser-mode":"server"},"created_dirs":["/var/run/vrouter/pod1"]}"#,
        r#"{"op":"vif-add","index":1,"vif":{"name":"tap0","type":"tap","vrf":0,"mac":"02:00:00:00:00:02","iface":"vr-tap0"}}"#,
        r#"{"op":"vif-del","name":"pod1"}"#,
        r#"{"op":"nexthop-set","id":1,"nexthop":{"type":"encap","vif":"pod1","dmac":"02:00:00:00:00:01"}}"#,
        r#"{"op":"nexthop-del","id":1}"#,
        r#"{"op":"route-set","vrf":1,"route":{"prefix":"10.0.0.1/32","nexthop":1}}"#,
        r#"{"op":"route-del","vrf":1,"prefix":"10.0.0.1/32"}"#,
        r#"{"op":"bridge-set","vrf":1,"entry":{"mac":"02:00:00:00:00:01","nexthop":1,"label":5}}"#,
        r#"{"op":"bridge-del","vrf":1,"mac":"02:00:00:00:00:01"}"#,
        r#"{"op":"mpls-set","label":100,"nexthop":1}"#,
        r#"{"op":"mpls-del","label":100}"#,
        r#"{"op":"vxlan-set","vni":5,"vrf":1}"#,
        r#"{"op":"vxlan-del","vni":5}"#,
        r#"{"op":"policy-set","vif":"pod1","policy":{"default":"deny","ingress":[{"action":"allow","proto":"tcp","ports":"80"}],"egress":[]}}"#,
    ];

    #[test]
    fn records_written_by_the_flat_format_decode_and_encode_the_same() {
        for json in WRITTEN_BEFORE {
            let record =
                Record::from_json(json.as_bytes()).unwrap_or_else(|e| panic!("{json}: {e}"));
            assert_eq!(serde_json::to_string(&record).unwrap(), json);
        }
        let del = Record::from_json(br#"{"op":"policy-del","vif":"pod1"}"#).unwrap();
        assert_eq!(
            del,
            Record::Vif(VifRecord::PolicyDel { vif: "pod1".into() })
        );
        assert_eq!(
            Record::from_json(WRITTEN_BEFORE[0].as_bytes()).unwrap(),
            Record::Table(TableChange::VrfAdd { vrf: 1 })
        );
    }

    #[test]
    fn every_vif_record_op_is_routed_to_vif_record() {
        let vif = VifRequest::new(
            "v",
            crate::api::VifType::Tap,
            0,
            crate::api::MacAddr::VROUTER_DEFAULT,
        );
        let policy = Policy {
            default: crate::api::PolicyAction::Allow,
            ingress: Vec::new(),
            egress: Vec::new(),
        };
        let all = [
            VifRecord::VifAdd {
                index: 1,
                vif: Box::new(vif),
                created_dirs: Vec::new(),
            },
            VifRecord::VifDel { name: "v".into() },
            VifRecord::PolicySet {
                vif: "v".into(),
                policy,
            },
            VifRecord::PolicyDel { vif: "v".into() },
            VifRecord::QueuePin {
                vif: "v".into(),
                queue: 1,
                lcore: 2,
            },
        ];
        for record in all {
            // Exhaustive: a new variant must be listed here, and in VIF_OPS.
            match &record {
                VifRecord::VifAdd { .. }
                | VifRecord::VifDel { .. }
                | VifRecord::PolicySet { .. }
                | VifRecord::PolicyDel { .. }
                | VifRecord::QueuePin { .. } => {}
            }
            let record = Record::Vif(record);
            let json = serde_json::to_vec(&record).unwrap();
            assert_eq!(Record::from_json(&json).unwrap(), record);
        }
    }

    #[test]
    fn every_nat_record_op_is_routed_to_nat_record() {
        let pool: NatPool = serde_json::from_str(
            r#"{"vrf":0,"first":"198.51.100.1","last":"198.51.100.2","ports":{"first":1024,"last":2047}}"#,
        )
        .unwrap();
        let all = [
            NatRecord::NatPoolSet {
                name: "egress".into(),
                pool,
            },
            NatRecord::NatPoolDel {
                name: "egress".into(),
            },
            NatRecord::SnatSet {
                vrf: 5,
                pool: "egress".into(),
            },
            NatRecord::SnatDel { vrf: 5 },
            NatRecord::FloatingIpSet {
                address: "198.51.100.200".parse().unwrap(),
                vrf: 5,
                ip: "198.18.1.11".parse().unwrap(),
            },
            NatRecord::FloatingIpDel {
                address: "198.51.100.200".parse().unwrap(),
            },
            NatRecord::ServiceSet {
                name: "web".into(),
                service: crate::api::Service {
                    vrf: 5,
                    address: "198.18.1.100".parse().unwrap(),
                    port: 80,
                    proto: crate::api::ServiceProto::Tcp,
                    backends: vec![crate::api::ServiceBackend {
                        address: "198.18.1.11".parse().unwrap(),
                        port: 8080,
                    }],
                    balance: crate::api::ServiceBalance::LeastFlows,
                },
            },
            NatRecord::ServiceDel { name: "web".into() },
            NatRecord::LinkLocalSet {
                name: "metadata".into(),
                service: crate::api::LinkLocalService {
                    address: crate::api::LinkLocalService::METADATA,
                    port: 80,
                    proto: crate::api::ServiceProto::Tcp,
                    service_address: "198.51.100.80".parse().unwrap(),
                    service_port: 8775,
                },
            },
            NatRecord::LinkLocalDel {
                name: "metadata".into(),
            },
        ];
        for record in all {
            // Exhaustive: a new variant must be listed here, and in NAT_OPS.
            let op = match &record {
                NatRecord::NatPoolSet { .. } => "nat-pool-set",
                NatRecord::NatPoolDel { .. } => "nat-pool-del",
                NatRecord::SnatSet { .. } => "snat-set",
                NatRecord::SnatDel { .. } => "snat-del",
                NatRecord::FloatingIpSet { .. } => "floating-ip-set",
                NatRecord::FloatingIpDel { .. } => "floating-ip-del",
                NatRecord::ServiceSet { .. } => "service-set",
                NatRecord::ServiceDel { .. } => "service-del",
                NatRecord::LinkLocalSet { .. } => "link-local-set",
                NatRecord::LinkLocalDel { .. } => "link-local-del",
            };
            let record = Record::Nat(record);
            let json = serde_json::to_vec(&record).unwrap();
            assert!(String::from_utf8_lossy(&json).contains(&format!("\"op\":\"{op}\"")));
            assert_eq!(Record::from_json(&json).unwrap(), record);
        }
    }

    #[test]
    fn every_routing_record_op_is_routed_to_routing_record() {
        let routing = VrfRouting {
            rd: "64512:1".into(),
            import_targets: vec!["target:64512:1".into()],
            export_targets: vec!["64512:1".into()],
            vni: Some(100),
            label: None,
        };
        for (record, op) in [
            (
                RoutingRecord::VrfRoutingSet { vrf: 1, routing },
                "vrf-routing-set",
            ),
            (RoutingRecord::VrfRoutingDel { vrf: 1 }, "vrf-routing-del"),
        ] {
            let record = Record::Routing(record);
            let json = serde_json::to_vec(&record).unwrap();
            assert!(String::from_utf8_lossy(&json).contains(&format!("\"op\":\"{op}\"")));
            assert_eq!(Record::from_json(&json).unwrap(), record);
        }
    }

    #[test]
    fn a_record_is_refused_for_the_fields_its_op_takes() {
        let e = Record::from_json(br#"{"op":"vif-del","vrf":1}"#).unwrap_err();
        assert!(e.to_string().contains("vrf"), "{e}");
        let e = Record::from_json(br#"{"op":"teleport"}"#).unwrap_err();
        assert!(e.to_string().contains("teleport"), "{e}");
        assert!(Record::from_json(br#"{"vrf":1}"#).is_err());
    }
}
