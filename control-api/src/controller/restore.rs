//! Start-up with `--state-dir`: the saved changes are replayed through the same validation and
//! dataplane calls as API requests, then the journal is attached so every later change is
//! saved.
//!
//! A saved change that no longer applies (a vif whose interface vanished while vrouterd was
//! down, a socket directory now refused) is skipped with a warning naming its file, offset and
//! the reason, and so is whatever depended on it; the rest is restored. A vrouterd that refused
//! to start would cut off every pod for the sake of one, while the agent can see (GET) and
//! re-add what is missing. After skips a fresh snapshot is written, so the files describe what
//! runs, not changes that failed.

use std::collections::BTreeSet;
use std::path::PathBuf;

use tracing::{info, warn};

use super::{Controller, SavedVif};
use crate::api::{FloatingIp, QueuePin, SnatAttachment};
use crate::dataplane::{DataplaneErrorKind, TableChange};
use crate::error::Error;
use crate::journal::{Journal, Loaded, Located, NatRecord, Record, RoutingRecord, VifRecord};

/// What a restore did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Restored {
    /// Saved changes applied.
    pub applied: usize,
    /// Saved changes that failed to apply (each logged).
    pub skipped: usize,
    /// Saved adds and deletes of vifs the command line owns, left to it.
    pub fixed: usize,
    /// A torn last journal record that was dropped: file and byte offset.
    pub torn: Option<(PathBuf, u64)>,
}

impl Controller {
    /// Replays `loaded` and attaches its journal. `fixed` names the vifs vrouterd's command
    /// line added (the fabric port): they are neither replayed nor saved. Call once, before the
    /// control socket opens.
    pub fn restore(&self, mut loaded: Loaded, fixed: BTreeSet<String>) -> Result<Restored, Error> {
        let _span = tracing::info_span!("restore", dir = %loaded.dir().display()).entered();
        if self.journal().is_some() {
            return Err(Error::Internal("state restored twice".into()));
        }
        let mut done = Restored {
            torn: loaded.torn.clone(),
            ..Restored::default()
        };
        for saved in std::mem::take(&mut loaded.records) {
            if saved
                .record
                .vif_changed()
                .is_some_and(|v| fixed.contains(v))
            {
                info!(
                    file = %saved.file.display(),
                    offset = saved.offset,
                    "saved change to a vif the command line owns left out: {}",
                    saved.record.describe()
                );
                done.fixed += 1;
                continue;
            }
            match self.replay(&saved.record) {
                Ok(()) => done.applied += 1,
                // Not this record's fault (the vhost core is gone: vrouterd is stopping):
                // skipping it, and saving what is left, would lose it for good.
                Err(Error::Dataplane(e)) if e.kind == DataplaneErrorKind::Unavailable => {
                    return Err(Error::Dataplane(e));
                }
                Err(e) => {
                    skipped(&saved, &e);
                    done.skipped += 1;
                }
            }
        }
        let mut journal = Journal::attach(loaded, fixed)?;
        if done.skipped > 0 {
            journal.compact(&self.model().clone())?;
        }
        *self.journal() = Some(journal);
        Ok(done)
    }

    /// One saved change, as the API request that made it.
    fn replay(&self, record: &Record) -> Result<(), Error> {
        match record {
            Record::Table(change) => self.replay_table(change),
            Record::Vif(vif) => self.replay_vif(vif),
            Record::Nat(nat) => self.replay_nat(nat),
            Record::Routing(RoutingRecord::VrfRoutingSet { vrf, routing }) => {
                self.routing_set(*vrf, routing).map(drop)
            }
            Record::Routing(RoutingRecord::VrfRoutingDel { vrf }) => self.routing_del(*vrf),
        }
    }

    fn replay_nat(&self, record: &NatRecord) -> Result<(), Error> {
        match record {
            NatRecord::NatPoolSet { name, pool } => self.nat_pool_set(name, pool).map(drop),
            NatRecord::NatPoolDel { name } => self.nat_pool_del(name),
            NatRecord::SnatSet { vrf, pool } => self
                .snat_set(*vrf, &SnatAttachment { pool: pool.clone() })
                .map(drop),
            NatRecord::SnatDel { vrf } => self.snat_del(*vrf),
            NatRecord::FloatingIpSet { address, vrf, ip } => self
                .floating_ip_set(*address, &FloatingIp { vrf: *vrf, ip: *ip })
                .map(drop),
            NatRecord::FloatingIpDel { address } => self.floating_ip_del(*address),
            NatRecord::ServiceSet { name, service } => self.service_set(name, service).map(drop),
            NatRecord::ServiceDel { name } => self.service_del(name),
            NatRecord::LinkLocalSet { name, service } => {
                self.link_local_set(name, service).map(drop)
            }
            NatRecord::LinkLocalDel { name } => self.link_local_del(name),
        }
    }

    fn replay_vif(&self, record: &VifRecord) -> Result<(), Error> {
        match record {
            VifRecord::VifAdd {
                index,
                vif,
                created_dirs,
            } => {
                let saved = SavedVif {
                    index: *index,
                    created_dirs,
                };
                self.vif_add_as(vif, Some(saved)).map(drop)
            }
            VifRecord::VifDel { name } => self.vif_del(name),
            VifRecord::PolicySet { vif, policy } => self.policy_set(vif, policy).map(drop),
            VifRecord::PolicyDel { vif } => self.policy_del(vif),
            VifRecord::QueuePin { vif, queue, lcore } => {
                // A pin to an lcore this vrouterd does not run is not worth refusing the
                // whole state over: the queue is placed by load instead, and said so.
                match self.queue_pin(vif, *queue, QueuePin { lcore: *lcore }) {
                    Err(Error::Dataplane(e)) => {
                        tracing::warn!(vif = %vif, queue, lcore, "queue pin not restored: {e}");
                        Ok(())
                    }
                    other => other.map(drop),
                }
            }
        }
    }

    fn replay_table(&self, change: &TableChange) -> Result<(), Error> {
        match change {
            TableChange::VrfAdd { vrf } => self.vrf_add(*vrf).map(drop),
            TableChange::VrfDel { vrf } => self.vrf_del(*vrf),
            TableChange::NexthopSet { id, nexthop } => self.nexthop_set(*id, nexthop).map(drop),
            TableChange::NexthopDel { id } => self.nexthop_del(*id),
            TableChange::RouteSet { vrf, route } => self.route_set(*vrf, route).map(drop),
            TableChange::RouteDel { vrf, prefix } => self.route_del(*vrf, prefix),
            TableChange::BridgeSet { vrf, entry } => self.bridge_set(*vrf, entry).map(drop),
            TableChange::BridgeDel { vrf, mac } => self.bridge_del(*vrf, *mac),
            TableChange::MplsSet { label, nexthop } => self.mpls_set(*label, *nexthop).map(drop),
            TableChange::MplsVrfSet { label, vrf } => self.mpls_set_vrf(*label, *vrf).map(drop),
            TableChange::MplsDel { label } => self.mpls_del(*label),
            TableChange::VxlanSet { vni, vrf } => self.vxlan_set(*vni, *vrf).map(drop),
            TableChange::VxlanDel { vni } => self.vxlan_del(*vni),
        }
    }
}

fn skipped(saved: &Located, e: &Error) {
    warn!(
        file = %saved.file.display(),
        offset = saved.offset,
        "saved change not restored ({e}): {}",
        saved.record.describe()
    );
}
