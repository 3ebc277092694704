//! Table and policy changes, applied one at a time as the controller hands them over.

use control_api::{Change, DataplaneError, TableChange};
use tracing::{info, info_span};
use vrouter::nat::{Balance, FloatingIp, LinkLocal, PoolRange, Service};
use vrouter::tables::RouteTarget;

use super::convert::flow_policy;
use super::{rejected, table_err, VrouterDataplane};

impl VrouterDataplane {
    pub(super) fn apply_change(&self, change: &Change) -> Result<(), DataplaneError> {
        // Route changes come by the thousand in a batch (under the batch's own span) and log
        // nothing of their own: a span each would cost more than the change.
        let routes = matches!(
            change,
            Change::Table(TableChange::RouteSet { .. } | TableChange::RouteDel { .. })
        );
        let _span = (!routes).then(|| info_span!("apply", op = change.op()).entered());
        match change {
            Change::Table(TableChange::VrfAdd { vrf }) => {
                self.tables.add_vrf(*vrf).map_err(table_err)
            }
            Change::Table(TableChange::VrfDel { vrf }) => {
                self.tables.del_vrf(*vrf).map_err(table_err)
            }
            Change::VifAdd { vif } => self.add_vif(vif),
            Change::VifDel { vif } => self.del_vif(vif),
            Change::Table(TableChange::NexthopSet { id, nexthop }) => {
                let nh = self.nexthop(nexthop)?;
                self.tables.set_nexthop(*id, nh).map_err(table_err)
            }
            Change::Table(TableChange::NexthopDel { id }) => {
                self.tables.del_nexthop(*id).map_err(table_err)
            }
            Change::Table(TableChange::RouteSet { vrf, route }) => self
                .tables
                .add_route(
                    *vrf,
                    route.prefix.addr(),
                    route.prefix.prefix_len(),
                    RouteTarget {
                        nexthop: route.nexthop,
                        label: route.label,
                    },
                )
                .map_err(table_err),
            Change::Table(TableChange::RouteDel { vrf, prefix }) => self
                .tables
                .del_route(*vrf, prefix.addr(), prefix.prefix_len())
                .map_err(table_err),
            Change::Table(TableChange::BridgeSet { vrf, entry }) => self
                .tables
                .add_bridge(
                    *vrf,
                    entry.mac,
                    RouteTarget {
                        nexthop: entry.nexthop,
                        label: entry.label,
                    },
                )
                .map_err(table_err),
            Change::Table(TableChange::BridgeDel { vrf, mac }) => {
                self.tables.del_bridge(*vrf, *mac).map_err(table_err)
            }
            Change::Table(TableChange::MplsSet { label, nexthop }) => {
                self.tables.set_label(*label, *nexthop).map_err(table_err)
            }
            Change::Table(TableChange::MplsVrfSet { label, vrf }) => {
                self.tables.set_label_vrf(*label, *vrf).map_err(table_err)
            }
            Change::Table(TableChange::MplsDel { label }) => {
                self.tables.del_label(*label).map_err(table_err)
            }
            Change::Table(TableChange::VxlanSet { vni, vrf }) => {
                self.tables.set_vni(*vni, *vrf).map_err(table_err)
            }
            Change::Table(TableChange::VxlanDel { vni }) => {
                self.tables.del_vni(*vni).map_err(table_err)
            }
            Change::PolicySet { vif, name, policy } => {
                let index = u16::try_from(*vif)
                    .map_err(|_| rejected(format!("vif {name}: index out of range")))?;
                let removed = self
                    .policies
                    .set(index, Some(flow_policy(policy)?))
                    .map_err(table_err)?;
                info!(vif = %name, flows_removed = removed, "policy set");
                Ok(())
            }
            Change::NatPoolSet { name, pool } => {
                let vrf = u16::try_from(pool.vrf)
                    .map_err(|_| rejected(format!("vrf {} is out of range", pool.vrf)))?;
                let range = PoolRange {
                    first: pool.first,
                    last: pool.last,
                    ports: (pool.ports.first, pool.ports.last),
                };
                self.nat.set_pool(name, vrf, range).map_err(table_err)?;
                info!(pool = %name, "nat pool set");
                Ok(())
            }
            Change::NatPoolDel { name } => {
                self.nat.del_pool(name).map_err(table_err)?;
                info!(pool = %name, "nat pool removed");
                Ok(())
            }
            Change::SnatSet { vrf, pool } => {
                let v = u16::try_from(*vrf)
                    .map_err(|_| rejected(format!("vrf {vrf} is out of range")))?;
                self.nat.attach(v, pool).map_err(table_err)?;
                info!(vrf, pool = %pool, "vrf attached to source nat");
                Ok(())
            }
            Change::SnatDel { vrf } => {
                let v = u16::try_from(*vrf)
                    .map_err(|_| rejected(format!("vrf {vrf} is out of range")))?;
                self.nat.detach(v).map_err(table_err)?;
                info!(vrf, "vrf detached from source nat");
                Ok(())
            }
            Change::FloatingIpSet { address, vrf, ip } => {
                let v = u16::try_from(*vrf)
                    .map_err(|_| rejected(format!("vrf {vrf} is out of range")))?;
                let f = FloatingIp {
                    outside: *address,
                    vrf: v,
                    inside: *ip,
                };
                self.nat.set_floating(f).map_err(table_err)?;
                info!(%address, vrf, %ip, "floating ip set");
                Ok(())
            }
            Change::ServiceSet { service } => {
                let s = service_of(service)?;
                self.nat.set_service(s).map_err(table_err)?;
                info!(vrf = service.vrf, address = %service.address, port = service.port, "service set");
                Ok(())
            }
            Change::ServiceDel { service } => {
                let s = service_of(service)?;
                self.nat
                    .del_service(s.vrf, s.proto, s.addr, s.port)
                    .map_err(table_err)?;
                info!(vrf = service.vrf, address = %service.address, port = service.port, "service removed");
                Ok(())
            }
            Change::LinkLocalSet { service } => {
                self.nat
                    .set_link_local(link_local_of(service))
                    .map_err(table_err)?;
                info!(address = %service.address, port = service.port, service_address = %service.service_address, "link-local service set");
                Ok(())
            }
            Change::LinkLocalDel { service } => {
                let l = link_local_of(service);
                self.nat
                    .del_link_local(l.proto, l.addr, l.port)
                    .map_err(table_err)?;
                info!(address = %service.address, port = service.port, "link-local service removed");
                Ok(())
            }
            Change::FloatingIpDel { address } => {
                self.nat.del_floating(*address).map_err(table_err)?;
                info!(%address, "floating ip removed");
                Ok(())
            }
            Change::PolicyDel { vif, name } => {
                let index = u16::try_from(*vif)
                    .map_err(|_| rejected(format!("vif {name}: index out of range")))?;
                let removed = self.policies.set(index, None).map_err(table_err)?;
                info!(vif = %name, flows_removed = removed, "policy removed");
                Ok(())
            }
        }
    }
}

/// The dataplane's form of a link-local service.
fn link_local_of(s: &control_api::api::LinkLocalService) -> LinkLocal {
    LinkLocal {
        proto: s.proto.number(),
        addr: u32::from(s.address),
        port: s.port,
        service_addr: u32::from(s.service_address),
        service_port: s.service_port,
    }
}

/// The dataplane's form of a service.
pub(super) fn service_of(s: &control_api::api::Service) -> Result<Service, DataplaneError> {
    let vrf =
        u16::try_from(s.vrf).map_err(|_| rejected(format!("vrf {} is out of range", s.vrf)))?;
    Ok(Service {
        vrf,
        proto: s.proto.number(),
        addr: s.address,
        port: s.port,
        backends: s.backends.iter().map(|b| (b.address, b.port)).collect(),
        balance: match s.balance {
            control_api::api::ServiceBalance::Hash => Balance::Hash,
            control_api::api::ServiceBalance::LeastFlows => Balance::LeastFlows,
        },
    })
}
