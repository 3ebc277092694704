//! The controller: one change at a time, validate → prepare the filesystem → apply to the
//! dataplane → commit to the model → save it (with a state directory, before answering); any
//! failure before the commit undoes the earlier steps, so a refused request changes nothing. Changes serialise on their own lock; the model's lock is held only to check
//! and to commit, never across the dataplane call (which can wait seconds on the vhost core),
//! so reads see the model from before a change or after it and never wait for one. Blocking
//! (file system, dataplane); the server calls it off the async runtime.

use crate::events::Events;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

use tracing::info;

use crate::api::{
    BridgeEntry, DropStats, FloatingIp, FloatingIpInfo, FlowPage, FlowQuery, FlowStats,
    FlushResult, Health, IpPrefix, MacAddr, Mirror, MirrorInfo, MplsEntry, MplsTarget, NatPool,
    NatPoolInfo, Nexthop, NexthopInfo, Policy, QueuePin, Route, SnatAttachment, Stats,
    TraceRequest, TraceResult, VifInfo, VifRequest, VrfInfo, VrfRouting, VxlanEntry,
    MIRROR_SNAPLEN_MAX, MIRROR_SNAPLEN_MIN, TRACE_COUNT_MAX,
};
use crate::dataplane::{Change, Dataplane, DataplaneErrorKind, TableChange, VifKind, VifSpec};
use crate::error::Error;
use crate::journal::{Journal, NatRecord, Record, RoutingRecord, VifRecord};
use crate::model::{
    Model, VhostUserPort, VifConfig, VifEntry, VifPort, MPLS_LABEL_MAX, MPLS_LABEL_MIN,
    NEXTHOP_ID_MAX, VNI_MAX, VRF_MAX,
};
use crate::socket_path::{self, SocketBase, SocketPlan, SocketRule};

mod batch;
mod restore;
pub use restore::Restored;

/// What saved state says of a vif being restored.
#[derive(Debug, Clone, Copy)]
struct SavedVif<'a> {
    /// The index it had.
    index: u32,
    /// The directories an earlier vrouterd created for its socket.
    created_dirs: &'a [PathBuf],
}

/// Default and largest page of `GET /flows`.
pub const FLOWS_LIMIT_DEFAULT: u32 = 100;
pub const FLOWS_LIMIT_MAX: u32 = 10_000;

/// Settings the controller needs from vrouterd's command line.
#[derive(Debug, Clone)]
pub struct ControllerConfig {
    /// `--socket-base`: every vhost-user socket directory lies below it.
    pub socket_base: PathBuf,
    /// `--vrouter-mac`: the MAC pods send routed traffic to.
    pub vrouter_mac: MacAddr,
}

impl Default for ControllerConfig {
    fn default() -> Self {
        ControllerConfig {
            socket_base: PathBuf::from("/var/run/vrouter"),
            vrouter_mac: MacAddr::VROUTER_DEFAULT,
        }
    }
}

/// Whether a PUT created something new (201) or replaced / confirmed what was there (200).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Created,
    Replaced,
}

impl Outcome {
    fn from_new(new: bool) -> Self {
        if new {
            Outcome::Created
        } else {
            Outcome::Replaced
        }
    }
}

pub struct Controller {
    /// Held by a change from its checks to its commit, so nothing else changes the model in
    /// between (the model's own lock is released meanwhile).
    changing: Mutex<()>,
    model: Mutex<Model>,
    dataplane: Arc<dyn Dataplane>,
    base: SocketBase,
    vrouter_mac: MacAddr,
    /// The `--state-dir` writer, once [`Controller::restore`] attached it; `None` keeps
    /// nothing on disk. Used under `changing`, so records follow the order of the changes.
    journal: Mutex<Option<Journal>>,
    /// The vif the packet trace was last started on (the dataplane runs one trace at a time).
    traced: Mutex<Option<String>>,
    /// Mirrors by mirrored vif (diagnostics: not saved in --state-dir).
    mirrors: Mutex<BTreeMap<String, Mirror>>,
    /// Every accepted change, for `GET /events`.
    events: Events,
}

impl Controller {
    /// A controller with an empty model (only VRF 0). Creates the socket base if missing.
    pub fn new(config: ControllerConfig, dataplane: Arc<dyn Dataplane>) -> Result<Self, Error> {
        Ok(Controller {
            changing: Mutex::new(()),
            model: Mutex::new(Model::new()),
            dataplane,
            base: SocketBase::new(&config.socket_base)?,
            vrouter_mac: config.vrouter_mac,
            journal: Mutex::new(None),
            traced: Mutex::new(None),
            mirrors: Mutex::new(BTreeMap::new()),
            events: Events::new(),
        })
    }

    /// The change stream.
    pub fn events(&self) -> &Events {
        &self.events
    }

    pub fn socket_base(&self) -> &SocketBase {
        &self.base
    }

    /// Taken first by every change; see `changing`.
    fn change(&self) -> MutexGuard<'_, ()> {
        // Guards no data: a panic while it was held leaves nothing to repair.
        self.changing.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Held briefly: never across a dataplane call or file-system work.
    fn model(&self) -> MutexGuard<'_, Model> {
        // Every commit happens after all fallible steps, so a panic elsewhere cannot leave the
        // model half-changed: a poisoned lock still guards a consistent model.
        self.model.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Publishes a committed change on the change stream and makes it durable before it is
    /// acknowledged: one fsynced journal record, or a whole snapshot when the journal is due
    /// for compaction or a save failed before (without a state directory, nothing on disk).
    /// Call with `changing` held, after the model commit.
    fn save(&self, record: impl FnOnce() -> Record) -> Result<(), Error> {
        self.save_records(vec![record()])
    }

    /// [`Controller::save`] for any number of records: each published, all appended in one
    /// journal write (or a snapshot when one is due).
    fn save_records(&self, records: Vec<Record>) -> Result<(), Error> {
        // The changes stand in the model and the dataplane whether or not they reach the disk.
        self.events
            .publish_all(records.iter().map(Record::event).collect());
        let mut journal = self.journal();
        let Some(journal) = journal.as_mut() else {
            return Ok(());
        };
        let records: Vec<Record> = records.into_iter().filter(|r| journal.keeps(r)).collect();
        if records.is_empty() {
            return Ok(());
        }
        if journal.wants_snapshot() {
            // The snapshot holds these changes too.
            let model = self.model().clone();
            return journal.compact(&model).map_err(unsaved);
        }
        journal.append_all(&records).map_err(unsaved)?;
        if journal.wants_snapshot() {
            // The changes are on disk already; a failed compaction is retried by the next one.
            let model = self.model().clone();
            if let Err(e) = journal.compact(&model) {
                tracing::warn!("writing a state snapshot failed: {e}; the next change retries");
            }
        }
        Ok(())
    }

    fn journal(&self) -> MutexGuard<'_, Option<Journal>> {
        // Set once, then appended to under `changing`: a panic cannot leave it half-changed.
        self.journal.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn apply(&self, change: &Change) -> Result<(), Error> {
        self.dataplane.apply(change).map_err(|e| {
            tracing::warn!(op = change.op(), error = %e, "dataplane refused change; nothing changed");
            match e.kind {
                DataplaneErrorKind::TableFull => Error::TableFull(e.message),
                _ => Error::Dataplane(e),
            }
        })
    }

    /// A checked table change, with `changing` held (`_held`) since its checks: into the
    /// dataplane, then the model, then the journal.
    fn change_tables(&self, _held: &MutexGuard<'_, ()>, change: TableChange) -> Result<(), Error> {
        self.apply(&Change::Table(change.clone()))?;
        self.model().commit_table(&change);
        self.save(|| Record::Table(change))
    }

    // ---- VRFs --------------------------------------------------------------------------------

    pub fn vrf_add(&self, vrf: u32) -> Result<Outcome, Error> {
        let _span = tracing::info_span!("vrf_add", vrf).entered();
        check_range("vrf", vrf, 0, VRF_MAX)?;
        let held = self.change();
        if !self.model().check_vrf_add(vrf)? {
            return Ok(Outcome::Replaced);
        }
        self.change_tables(&held, TableChange::VrfAdd { vrf })?;
        info!("vrf added");
        Ok(Outcome::Created)
    }

    pub fn vrf_del(&self, vrf: u32) -> Result<(), Error> {
        let _span = tracing::info_span!("vrf_del", vrf).entered();
        check_range("vrf", vrf, 0, VRF_MAX)?;
        let held = self.change();
        self.model().check_vrf_del(vrf)?;
        self.change_tables(&held, TableChange::VrfDel { vrf })?;
        info!("vrf removed");
        Ok(())
    }

    pub fn vrfs(&self) -> Vec<VrfInfo> {
        self.model().vrfs()
    }

    /// `PUT /vrfs/{vrf}/routing`. Control-plane state: nothing changes in the dataplane.
    pub fn routing_set(&self, vrf: u32, r: &VrfRouting) -> Result<Outcome, Error> {
        let _span = tracing::info_span!("vrf_routing_set", vrf, rd = %r.rd).entered();
        check_range("vrf", vrf, 0, VRF_MAX)?;
        let _change = self.change();
        let new = {
            let model = self.model();
            let new = model.check_routing_set(vrf, r)?;
            if model.routing(vrf).ok() == Some(r) {
                return Ok(Outcome::Replaced);
            }
            new
        };
        self.model().commit_routing_set(vrf, r.clone());
        self.save(|| {
            Record::Routing(RoutingRecord::VrfRoutingSet {
                vrf,
                routing: r.clone(),
            })
        })?;
        info!(vni = ?r.vni, label = ?r.label, "vrf routing identity set");
        Ok(Outcome::from_new(new))
    }

    pub fn routing(&self, vrf: u32) -> Result<VrfRouting, Error> {
        check_range("vrf", vrf, 0, VRF_MAX)?;
        self.model().routing(vrf).cloned()
    }

    pub fn routing_del(&self, vrf: u32) -> Result<(), Error> {
        let _span = tracing::info_span!("vrf_routing_del", vrf).entered();
        check_range("vrf", vrf, 0, VRF_MAX)?;
        let _change = self.change();
        self.model().routing(vrf)?;
        self.model().commit_routing_del(vrf);
        self.save(|| Record::Routing(RoutingRecord::VrfRoutingDel { vrf }))?;
        info!("vrf routing identity removed");
        Ok(())
    }

    // ---- vifs --------------------------------------------------------------------------------

    pub fn vif_add(&self, req: &VifRequest) -> Result<VifInfo, Error> {
        self.vif_add_as(req, None)
    }

    /// A vif add; `saved` (a restore) asks for the index the vif had, when free, and names the
    /// directories an earlier vrouterd created for its socket.
    fn vif_add_as(&self, req: &VifRequest, saved: Option<SavedVif<'_>>) -> Result<VifInfo, Error> {
        let _span = tracing::info_span!("vif_add", vif = %req.name).entered();
        let _change = self.change();
        let (config, index) = self.check_vif_add(req, saved.map(|s| s.index))?;
        let (kind, socket) = self.attachment(&config)?;
        let spec = config.spec(index, kind);
        let mut created_dirs = self.open_vif(&spec, socket.as_ref())?;
        if let (Some(saved), Some(socket)) = (saved, &socket) {
            created_dirs =
                adopt_created_dirs(created_dirs, saved.created_dirs, &socket.dir, &self.base);
        }
        self.commit_vif_add(VifEntry {
            spec,
            config,
            created_dirs,
            policy: None,
            pins: Default::default(),
        })
    }

    /// The validated request and the index the vif gets: the one asked for if it is free, else
    /// the lowest free one.
    fn check_vif_add(
        &self,
        req: &VifRequest,
        asked: Option<u32>,
    ) -> Result<(VifConfig, u32), Error> {
        let model = self.model();
        let config = model.check_vif_add(req)?;
        let index = asked
            .filter(|&i| model.vifs().all(|v| v.spec.index != i))
            .unwrap_or_else(|| model.free_vif_index());
        Ok((config, index))
    }

    /// What the dataplane opens for a validated vif, and for vhost-user the checked socket
    /// location (nothing created yet).
    fn attachment(&self, config: &VifConfig) -> Result<(VifKind, Option<SocketPlan>), Error> {
        Ok(match &config.port {
            VifPort::VhostUser(port) => {
                let socket = self.socket_plan(port)?;
                let kind = VifKind::VhostUser {
                    socket: socket.path.clone(),
                    mode: port.mode,
                    queues: port.queues,
                    group: socket.group,
                };
                (kind, Some(socket))
            }
            VifPort::Physical { device } => (
                VifKind::Physical {
                    device: device.clone(),
                },
                None,
            ),
            VifPort::AfPacket { iface } => (
                VifKind::AfPacket {
                    iface: iface.clone(),
                },
                None,
            ),
            VifPort::Tap { iface } => (
                VifKind::Tap {
                    iface: iface.clone(),
                },
                None,
            ),
        })
    }

    /// Where a vhost-user socket goes, checked against the isolation rules and the other vifs.
    fn socket_plan(&self, port: &VhostUserPort) -> Result<SocketPlan, Error> {
        // Resolving the path and the group reads the disk and maybe NSS: not under the
        // model's lock.
        let plan = self
            .base
            .plan(&port.dir, &port.filename, port.group.as_deref())?
            .for_mode(port.mode);
        let in_use = self.model().socket_user(&plan.path).map(str::to_owned);
        if let Some(other) = in_use {
            return Err(Error::Socket {
                rule: SocketRule::InUse,
                message: format!(
                    "socket path {} is already used by vif {other}; every vif needs its own",
                    plan.path.display()
                ),
            });
        }
        Ok(plan)
    }

    /// Everything is checked: create the socket's missing directories, then hand the vif to
    /// the dataplane. Returns the directories created; if the dataplane refuses, they are
    /// removed again.
    fn open_vif(&self, spec: &VifSpec, socket: Option<&SocketPlan>) -> Result<Vec<PathBuf>, Error> {
        let created = match socket {
            Some(socket) => socket.create_dirs(&self.base)?,
            None => Vec::new(),
        };
        if let Err(e) = self.apply(&Change::VifAdd { vif: spec.clone() }) {
            socket_path::remove_created_dirs(&created);
            return Err(e);
        }
        Ok(created)
    }

    /// The dataplane runs the vif: record it in the model and save it.
    fn commit_vif_add(&self, entry: VifEntry) -> Result<VifInfo, Error> {
        info!(
            index = entry.spec.index,
            attached = %entry.spec.kind,
            "vif added"
        );
        let info = self.vif_info(&entry);
        let record = Record::Vif(VifRecord::VifAdd {
            index: entry.spec.index,
            vif: Box::new(entry.config.to_request()),
            created_dirs: entry.created_dirs.clone(),
        });
        self.model().commit_vif_add(entry);
        self.save(|| record)?;
        Ok(info)
    }

    pub fn vif_del(&self, name: &str) -> Result<(), Error> {
        let _span = tracing::info_span!("vif_del", vif = %name).entered();
        let _change = self.change();
        let spec = self.model().check_vif_del(name)?.spec.clone();
        self.apply(&Change::VifDel { vif: spec })?;
        let committed = self.model().commit_vif_del(name);
        let saved = self.save(|| {
            Record::Vif(VifRecord::VifDel {
                name: name.to_owned(),
            })
        });
        if let Some((entry, removable)) = committed {
            if let VifKind::VhostUser {
                socket,
                mode: crate::api::VhostUserMode::Server,
                ..
            } = &entry.spec.kind
            {
                // In client mode the socket is the pod's; only ours is removed.
                socket_path::remove_socket_file(socket);
            }
            socket_path::remove_created_dirs(&removable);
            info!(attached = %entry.spec.kind, "vif removed");
            // Mirrors of the vif, or to it, end with it.
            let mut mirrors = self.mirrors();
            // A collector's copies leave by the fabric vif: they end with it too.
            let fabric = matches!(entry.spec.kind, VifKind::Physical { .. });
            mirrors.retain(|from, m| {
                let ends = from == name
                    || m.to.as_deref() == Some(name)
                    || (fabric && m.collector.is_some());
                if ends && from != name {
                    if let Ok(v) = self.model().vif(from) {
                        let _ = self.dataplane.mirror_del(&v.spec);
                    }
                }
                !ends
            });
            drop(mirrors);
            // A trace of the vif ends with it (its index may be given to another vif).
            let mut traced = self.traced();
            if traced.as_deref() == Some(name) {
                let _ = self.dataplane.trace_stop();
                *traced = None;
            }
        }
        saved
    }

    fn vif_info(&self, entry: &VifEntry) -> VifInfo {
        VifInfo {
            config: entry.config.to_request(),
            index: entry.spec.index,
            socket: entry.socket().map(PathBuf::from),
            vrouter_mac: self.vrouter_mac,
            status: self.dataplane.vif_status(&entry.spec),
        }
    }

    pub fn vifs(&self) -> Vec<VifInfo> {
        let entries: Vec<VifEntry> = self.model().vifs().cloned().collect();
        let mut out: Vec<VifInfo> = entries.iter().map(|e| self.vif_info(e)).collect();
        out.sort_by_key(|v| v.index);
        out
    }

    pub fn vif(&self, name: &str) -> Result<VifInfo, Error> {
        let entry = self.model().vif(name)?.clone();
        Ok(self.vif_info(&entry))
    }

    /// Every vif's spec, for vrouterd's shutdown (remove sockets) and health.
    pub fn vif_specs(&self) -> Vec<VifSpec> {
        self.model().vifs().map(|v| v.spec.clone()).collect()
    }

    /// Shutdown: remove every server-mode vif socket and the directories created for vifs
    /// (where empty). Call after the dataplane stopped serving the sockets. The model is kept,
    /// so this is safe to call more than once.
    pub fn remove_socket_files(&self) {
        let model = self.model();
        let mut dirs: Vec<PathBuf> = Vec::new();
        for vif in model.vifs() {
            if let VifKind::VhostUser {
                socket,
                mode: crate::api::VhostUserMode::Server,
                ..
            } = &vif.spec.kind
            {
                socket_path::remove_socket_file(socket);
                info!(vif = %vif.spec.name, socket = %socket.display(), "socket removed at shutdown");
            }
            dirs.extend(vif.created_dirs.iter().cloned());
        }
        dirs.sort_by_key(|d| d.components().count());
        dirs.dedup();
        socket_path::remove_created_dirs(&dirs);
    }

    // ---- nexthops ----------------------------------------------------------------------------

    pub fn nexthop_set(&self, id: u32, nexthop: &Nexthop) -> Result<Outcome, Error> {
        let _span =
            tracing::info_span!("nexthop_set", nexthop = id, kind = nexthop.type_name()).entered();
        let held = self.change();
        let new = self.model().check_nexthop_set(id, nexthop)?;
        let nexthop = nexthop.clone();
        self.change_tables(&held, TableChange::NexthopSet { id, nexthop })?;
        info!(created = new, "nexthop set");
        Ok(Outcome::from_new(new))
    }

    pub fn nexthop_del(&self, id: u32) -> Result<(), Error> {
        let _span = tracing::info_span!("nexthop_del", nexthop = id).entered();
        let held = self.change();
        self.model().check_nexthop_del(id)?;
        self.change_tables(&held, TableChange::NexthopDel { id })?;
        info!("nexthop removed");
        Ok(())
    }

    pub fn nexthops(&self) -> Vec<NexthopInfo> {
        let model = self.model();
        model
            .nexthops()
            .map(|(id, nh)| NexthopInfo {
                id,
                nexthop: nh.clone(),
                used_by: model.nexthop_users(id),
                use_count: model.nexthop_use_count(id) as u64,
            })
            .collect()
    }

    pub fn nexthop(&self, id: u32) -> Result<NexthopInfo, Error> {
        let model = self.model();
        Ok(NexthopInfo {
            id,
            nexthop: model.nexthop(id)?.clone(),
            used_by: model.nexthop_users(id),
            use_count: model.nexthop_use_count(id) as u64,
        })
    }

    // ---- routes and bridge entries -----------------------------------------------------------

    pub fn route_set(&self, vrf: u32, route: &Route) -> Result<Outcome, Error> {
        let _span =
            tracing::info_span!("route_set", vrf, prefix = %route.prefix, nexthop = route.nexthop)
                .entered();
        check_range("vrf", vrf, 0, VRF_MAX)?;
        let held = self.change();
        let new = self.model().check_route_set(vrf, route)?;
        let route = route.clone();
        self.change_tables(&held, TableChange::RouteSet { vrf, route })?;
        info!(created = new, "route set");
        Ok(Outcome::from_new(new))
    }

    pub fn route_del(&self, vrf: u32, prefix: &IpPrefix) -> Result<(), Error> {
        let _span = tracing::info_span!("route_del", vrf, prefix = %prefix).entered();
        check_range("vrf", vrf, 0, VRF_MAX)?;
        let held = self.change();
        self.model().check_route_del(vrf, prefix)?;
        let prefix = *prefix;
        self.change_tables(&held, TableChange::RouteDel { vrf, prefix })?;
        info!("route removed");
        Ok(())
    }

    pub fn routes(&self, vrf: u32) -> Result<Vec<Route>, Error> {
        check_range("vrf", vrf, 0, VRF_MAX)?;
        self.model().routes(vrf)
    }

    pub fn bridge_set(&self, vrf: u32, entry: &BridgeEntry) -> Result<Outcome, Error> {
        let _span = tracing::info_span!("bridge_set", vrf, mac = %entry.mac).entered();
        check_range("vrf", vrf, 0, VRF_MAX)?;
        let held = self.change();
        let new = self.model().check_bridge_set(vrf, entry)?;
        let entry = entry.clone();
        self.change_tables(&held, TableChange::BridgeSet { vrf, entry })?;
        info!(created = new, "bridge entry set");
        Ok(Outcome::from_new(new))
    }

    pub fn bridge_del(&self, vrf: u32, mac: MacAddr) -> Result<(), Error> {
        let _span = tracing::info_span!("bridge_del", vrf, mac = %mac).entered();
        check_range("vrf", vrf, 0, VRF_MAX)?;
        let held = self.change();
        self.model().check_bridge_del(vrf, mac)?;
        self.change_tables(&held, TableChange::BridgeDel { vrf, mac })?;
        info!("bridge entry removed");
        Ok(())
    }

    pub fn bridge(&self, vrf: u32) -> Result<Vec<BridgeEntry>, Error> {
        check_range("vrf", vrf, 0, VRF_MAX)?;
        self.model().bridge(vrf)
    }

    // ---- labels and VNIs ---------------------------------------------------------------------

    /// Incoming `label` → nexthop `nexthop`.
    pub fn mpls_set(&self, label: u32, nexthop: u32) -> Result<Outcome, Error> {
        self.mpls_set_target(label, MplsTarget::Nexthop(nexthop))
    }

    /// Incoming `label` → VRF `vrf` (a per-VRF label).
    pub fn mpls_set_vrf(&self, label: u32, vrf: u32) -> Result<Outcome, Error> {
        self.mpls_set_target(label, MplsTarget::Vrf(vrf))
    }

    pub fn mpls_set_target(&self, label: u32, target: MplsTarget) -> Result<Outcome, Error> {
        let _span = tracing::info_span!("mpls_set", label, target = ?target).entered();
        check_range("label", label, MPLS_LABEL_MIN, MPLS_LABEL_MAX)?;
        let held = self.change();
        let new = self.model().check_mpls_set(label, target)?;
        let change = match target {
            MplsTarget::Nexthop(nexthop) => TableChange::MplsSet { label, nexthop },
            MplsTarget::Vrf(vrf) => TableChange::MplsVrfSet { label, vrf },
        };
        self.change_tables(&held, change)?;
        info!(created = new, "mpls label set");
        Ok(Outcome::from_new(new))
    }

    pub fn mpls_del(&self, label: u32) -> Result<(), Error> {
        let _span = tracing::info_span!("mpls_del", label).entered();
        check_range("label", label, MPLS_LABEL_MIN, MPLS_LABEL_MAX)?;
        let held = self.change();
        self.model().check_mpls_del(label)?;
        self.change_tables(&held, TableChange::MplsDel { label })?;
        info!("mpls label removed");
        Ok(())
    }

    pub fn mpls(&self) -> Vec<MplsEntry> {
        self.model()
            .mpls()
            .map(|(label, target)| MplsEntry::new(label, target))
            .collect()
    }

    pub fn vxlan_set(&self, vni: u32, vrf: u32) -> Result<Outcome, Error> {
        let _span = tracing::info_span!("vxlan_set", vni, vrf).entered();
        check_range("vni", vni, 0, VNI_MAX)?;
        let held = self.change();
        let new = self.model().check_vxlan_set(vni, vrf)?;
        self.change_tables(&held, TableChange::VxlanSet { vni, vrf })?;
        info!(created = new, "vxlan vni set");
        Ok(Outcome::from_new(new))
    }

    pub fn vxlan_del(&self, vni: u32) -> Result<(), Error> {
        let _span = tracing::info_span!("vxlan_del", vni).entered();
        check_range("vni", vni, 0, VNI_MAX)?;
        let held = self.change();
        self.model().check_vxlan_del(vni)?;
        self.change_tables(&held, TableChange::VxlanDel { vni })?;
        info!("vxlan vni removed");
        Ok(())
    }

    pub fn vxlan(&self) -> Vec<VxlanEntry> {
        self.model()
            .vxlan()
            .map(|(vni, vrf)| VxlanEntry { vni, vrf })
            .collect()
    }

    // ---- policy ------------------------------------------------------------------------------

    pub fn policy_set(&self, name: &str, policy: &Policy) -> Result<Outcome, Error> {
        let _span = tracing::info_span!("policy_set", vif = %name).entered();
        let _change = self.change();
        let (index, new) = {
            let model = self.model();
            let index = model.check_policy_set(name, policy)?;
            (index, model.vif(name)?.policy.is_none())
        };
        self.apply(&Change::PolicySet {
            vif: index,
            name: name.to_string(),
            policy: policy.clone(),
        })?;
        self.model().commit_policy(name, Some(policy.clone()));
        self.save(|| {
            Record::Vif(VifRecord::PolicySet {
                vif: name.to_owned(),
                policy: policy.clone(),
            })
        })?;
        info!(
            ingress = policy.ingress.len(),
            egress = policy.egress.len(),
            "policy set"
        );
        Ok(Outcome::from_new(new))
    }

    // ---- queue placement -----------------------------------------------------------------

    /// Serves queue pair `queue` of vhost-user vif `name` on forwarding lcore `pin.lcore` from
    /// now on (kept with the vif's other settings).
    pub fn queue_pin(&self, name: &str, queue: u32, pin: QueuePin) -> Result<Outcome, Error> {
        let _span = tracing::info_span!("queue_pin", vif = %name, queue).entered();
        let _change = self.change();
        let (spec, new) = {
            let model = self.model();
            let v = model.vif(name)?;
            let VifKind::VhostUser { queues, .. } = &v.spec.kind else {
                return Err(Error::Conflict(format!(
                    "{name} is not a vhost-user vif: only vhost-user queues are placed on lcores"
                )));
            };
            if queue >= *queues {
                return Err(Error::NotFound {
                    what: "queue pair",
                    key: format!(
                        "{queue} of vif {name}, which has {queues} (0..={})",
                        queues - 1
                    ),
                });
            }
            (v.spec.clone(), !v.pins.contains_key(&queue))
        };
        self.dataplane.queue_pin(&spec, queue, pin.lcore)?;
        self.model().commit_queue_pin(name, queue, pin.lcore);
        self.save(|| {
            Record::Vif(VifRecord::QueuePin {
                vif: name.to_owned(),
                queue,
                lcore: pin.lcore,
            })
        })?;
        info!(lcore = pin.lcore, "queue pair pinned");
        Ok(Outcome::from_new(new))
    }

    // ---- source NAT ------------------------------------------------------------------------

    pub fn nat_pool_set(&self, name: &str, pool: &NatPool) -> Result<Outcome, Error> {
        let _span = tracing::info_span!("nat_pool_set", pool = %name).entered();
        let _change = self.change();
        let new = self.model().check_nat_pool_set(name, pool)?;
        if self.model().nat_pool(name).ok() == Some(pool) {
            return Ok(Outcome::Replaced);
        }
        self.apply(&Change::NatPoolSet {
            name: name.to_string(),
            pool: pool.clone(),
        })?;
        self.model().commit_nat_pool_set(name, pool.clone());
        self.save(|| {
            Record::Nat(NatRecord::NatPoolSet {
                name: name.to_string(),
                pool: pool.clone(),
            })
        })?;
        info!(first = %pool.first, last = %pool.last, vrf = pool.vrf, "nat pool set");
        Ok(Outcome::from_new(new))
    }

    pub fn nat_pool_del(&self, name: &str) -> Result<(), Error> {
        let _span = tracing::info_span!("nat_pool_del", pool = %name).entered();
        let _change = self.change();
        self.model().check_nat_pool_del(name)?;
        self.apply(&Change::NatPoolDel {
            name: name.to_string(),
        })?;
        self.model().commit_nat_pool_del(name);
        self.save(|| {
            Record::Nat(NatRecord::NatPoolDel {
                name: name.to_string(),
            })
        })?;
        info!("nat pool removed");
        Ok(())
    }

    pub fn nat_pools(&self) -> Result<Vec<NatPoolInfo>, Error> {
        let usage = self.dataplane.nat_pools()?;
        Ok(self.model().nat_pools(&usage))
    }

    pub fn nat_pool(&self, name: &str) -> Result<NatPoolInfo, Error> {
        self.model().nat_pool(name)?;
        self.nat_pools()?
            .into_iter()
            .find(|p| p.name == name)
            .ok_or_else(|| Error::NotFound {
                what: "nat pool",
                key: name.to_string(),
            })
    }

    pub fn snat_set(&self, vrf: u32, a: &SnatAttachment) -> Result<Outcome, Error> {
        let _span = tracing::info_span!("snat_set", vrf, pool = %a.pool).entered();
        check_range("vrf", vrf, 0, VRF_MAX)?;
        let _change = self.change();
        let (new, attached) = {
            let model = self.model();
            (model.check_snat_set(vrf, a)?, model.snat(vrf).is_ok())
        };
        if !new {
            return Ok(Outcome::Replaced);
        }
        self.apply(&Change::SnatSet {
            vrf,
            pool: a.pool.clone(),
        })?;
        self.model().commit_snat_set(vrf, a);
        self.save(|| {
            Record::Nat(NatRecord::SnatSet {
                vrf,
                pool: a.pool.clone(),
            })
        })?;
        info!("vrf attached to source nat");
        Ok(Outcome::from_new(!attached))
    }

    pub fn snat(&self, vrf: u32) -> Result<SnatAttachment, Error> {
        check_range("vrf", vrf, 0, VRF_MAX)?;
        self.model().snat(vrf)
    }

    pub fn snat_del(&self, vrf: u32) -> Result<(), Error> {
        let _span = tracing::info_span!("snat_del", vrf).entered();
        check_range("vrf", vrf, 0, VRF_MAX)?;
        let _change = self.change();
        self.model().check_snat_del(vrf)?;
        self.apply(&Change::SnatDel { vrf })?;
        self.model().commit_snat_del(vrf);
        self.save(|| Record::Nat(NatRecord::SnatDel { vrf }))?;
        info!("vrf detached from source nat");
        Ok(())
    }

    pub fn floating_ip_set(
        &self,
        address: std::net::IpAddr,
        f: &FloatingIp,
    ) -> Result<Outcome, Error> {
        let _span = tracing::info_span!("floating_ip_set", %address).entered();
        let _change = self.change();
        let new = self.model().check_floating_ip_set(address, f)?;
        let same = self
            .model()
            .floating_ip(address)
            .is_ok_and(|o| (o.vrf, o.ip) == (f.vrf, f.ip));
        if same {
            return Ok(Outcome::Replaced);
        }
        self.apply(&Change::FloatingIpSet {
            address,
            vrf: f.vrf,
            ip: f.ip,
        })?;
        self.model().commit_floating_ip_set(address, f.clone());
        self.save(|| {
            Record::Nat(NatRecord::FloatingIpSet {
                address,
                vrf: f.vrf,
                ip: f.ip,
            })
        })?;
        info!(vrf = f.vrf, ip = %f.ip, "floating ip set");
        Ok(Outcome::from_new(new))
    }

    pub fn floating_ip_del(&self, address: std::net::IpAddr) -> Result<(), Error> {
        let _span = tracing::info_span!("floating_ip_del", %address).entered();
        let _change = self.change();
        self.model().check_floating_ip_del(address)?;
        self.apply(&Change::FloatingIpDel { address })?;
        self.model().commit_floating_ip_del(address);
        self.save(|| Record::Nat(NatRecord::FloatingIpDel { address }))?;
        info!("floating ip removed");
        Ok(())
    }

    pub fn service_set(&self, name: &str, svc: &crate::api::Service) -> Result<Outcome, Error> {
        let _span = tracing::info_span!("service_set", service = %name).entered();
        let _change = self.change();
        let new = self.model().check_service_set(name, svc)?;
        if self.model().service(name).is_ok_and(|o| o == svc) {
            return Ok(Outcome::Replaced);
        }
        self.apply(&Change::ServiceSet {
            service: svc.clone(),
        })?;
        self.model().commit_service_set(name, svc.clone());
        self.save(|| {
            Record::Nat(NatRecord::ServiceSet {
                name: name.to_string(),
                service: svc.clone(),
            })
        })?;
        info!(vrf = svc.vrf, address = %svc.address, port = svc.port, backends = svc.backends.len(), "service set");
        Ok(Outcome::from_new(new))
    }

    pub fn service_del(&self, name: &str) -> Result<(), Error> {
        let _span = tracing::info_span!("service_del", service = %name).entered();
        let _change = self.change();
        let service = self.model().service(name)?.clone();
        self.apply(&Change::ServiceDel { service })?;
        self.model().commit_service_del(name);
        self.save(|| {
            Record::Nat(NatRecord::ServiceDel {
                name: name.to_string(),
            })
        })?;
        info!("service removed");
        Ok(())
    }

    pub fn link_local_set(
        &self,
        name: &str,
        svc: &crate::api::LinkLocalService,
    ) -> Result<Outcome, Error> {
        let _span = tracing::info_span!("link_local_set", service = %name).entered();
        let _change = self.change();
        let new = self.model().check_link_local_set(name, svc)?;
        let old = self.model().link_local(name).ok().copied();
        if old == Some(*svc) {
            return Ok(Outcome::Replaced);
        }
        // A replacement at another address:port: the old one goes first.
        if let Some(old) =
            old.filter(|o| (o.address, o.port, o.proto) != (svc.address, svc.port, svc.proto))
        {
            self.apply(&Change::LinkLocalDel { service: old })?;
        }
        self.apply(&Change::LinkLocalSet { service: *svc })?;
        self.model().commit_link_local_set(name, *svc);
        self.save(|| {
            Record::Nat(NatRecord::LinkLocalSet {
                name: name.to_string(),
                service: *svc,
            })
        })?;
        info!(address = %svc.address, port = svc.port, service_address = %svc.service_address, service_port = svc.service_port, "link-local service set");
        Ok(Outcome::from_new(new))
    }

    pub fn link_local_del(&self, name: &str) -> Result<(), Error> {
        let _span = tracing::info_span!("link_local_del", service = %name).entered();
        let _change = self.change();
        let service = *self.model().link_local(name)?;
        self.apply(&Change::LinkLocalDel { service })?;
        self.model().commit_link_local_del(name);
        self.save(|| {
            Record::Nat(NatRecord::LinkLocalDel {
                name: name.to_string(),
            })
        })?;
        info!("link-local service removed");
        Ok(())
    }

    pub fn link_local(&self, name: &str) -> Result<crate::api::LinkLocalServiceInfo, Error> {
        let service = *self.model().link_local(name)?;
        Ok(crate::api::LinkLocalServiceInfo {
            name: name.to_string(),
            service,
        })
    }

    pub fn link_locals(&self) -> Vec<crate::api::LinkLocalServiceInfo> {
        self.model().link_local_infos()
    }

    /// Service `name` with its backends' flows.
    pub fn service(&self, name: &str) -> Result<crate::api::ServiceInfo, Error> {
        let svc = self.model().service(name)?.clone();
        let flows = self.dataplane.service_flows(&svc)?;
        Ok(crate::model::service_info(name, &svc, &flows))
    }

    pub fn services(&self) -> Result<Vec<crate::api::ServiceInfo>, Error> {
        let all: Vec<(String, crate::api::Service)> = self
            .model()
            .services()
            .map(|(n, s)| (n.to_string(), s.clone()))
            .collect();
        all.into_iter()
            .map(|(n, s)| {
                let flows = self.dataplane.service_flows(&s)?;
                Ok(crate::model::service_info(&n, &s, &flows))
            })
            .collect()
    }

    pub fn floating_ips(&self) -> Vec<FloatingIpInfo> {
        self.model().floating_ips()
    }

    pub fn floating_ip(&self, address: std::net::IpAddr) -> Result<FloatingIpInfo, Error> {
        self.model().floating_ip(address)
    }

    pub fn policy_del(&self, name: &str) -> Result<(), Error> {
        let _span = tracing::info_span!("policy_del", vif = %name).entered();
        let _change = self.change();
        let index = {
            let model = self.model();
            let vif = model.vif(name)?;
            if vif.policy.is_none() {
                return Err(Error::NotFound {
                    what: "policy of vif",
                    key: name.to_string(),
                });
            }
            vif.spec.index
        };
        self.apply(&Change::PolicyDel {
            vif: index,
            name: name.to_string(),
        })?;
        self.model().commit_policy(name, None);
        self.save(|| {
            Record::Vif(VifRecord::PolicyDel {
                vif: name.to_owned(),
            })
        })?;
        info!("policy removed");
        Ok(())
    }

    /// The vif the trace was last started on (see `traced`).
    fn traced(&self) -> MutexGuard<'_, Option<String>> {
        self.traced.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn mirrors(&self) -> MutexGuard<'_, BTreeMap<String, Mirror>> {
        self.mirrors.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The mirrored vifs' mirrors and what each did.
    pub fn mirror_list(&self) -> Vec<(String, MirrorInfo)> {
        let names: Vec<String> = self.mirrors().keys().cloned().collect();
        names
            .into_iter()
            .filter_map(|n| self.mirror(&n).ok().map(|m| (n, m)))
            .collect()
    }

    /// Copies vif `name`'s packets to the vif `m.to` names (replacing a mirror of `name`).
    pub fn mirror_set(&self, name: &str, m: &Mirror) -> Result<Outcome, Error> {
        let invalid = |field: &str, reason: String| Error::InvalidField {
            field: field.into(),
            reason,
        };
        match (&m.to, &m.collector) {
            (Some(to), None) if to == name => {
                return Err(invalid("to", format!("{name} cannot mirror to itself")));
            }
            (Some(_), None) | (None, Some(_)) => {}
            _ => {
                return Err(invalid(
                    "to",
                    "give either an analyzer vif (`to`) or a `collector`".into(),
                ))
            }
        }
        if let Some(c) = &m.collector {
            if !(1..=VNI_MAX).contains(&c.vni) {
                return Err(invalid(
                    "collector.vni",
                    format!("{} is not in 1..={VNI_MAX}", c.vni),
                ));
            }
        }
        if let Some(n) = m.snaplen {
            if !(MIRROR_SNAPLEN_MIN..=MIRROR_SNAPLEN_MAX).contains(&n) {
                return Err(invalid(
                    "snaplen",
                    format!("{n} is not in {MIRROR_SNAPLEN_MIN}..={MIRROR_SNAPLEN_MAX}"),
                ));
            }
        }
        if m.sample == Some(0) {
            return Err(invalid("sample", "0: one packet in 0 means none".into()));
        }
        if let Some(f) = &m.filter {
            if f.ports.is_some() && !f.proto.is_some_and(|p| p.has_ports()) {
                return Err(invalid(
                    "filter.ports",
                    "ports need proto tcp, udp or sctp".into(),
                ));
            }
        }
        // Serialised with vif removals, so no mirror outlives its vif in the lcores.
        let _change = self.change();
        {
            // No chains: a copy is never mirrored again (two vifs mirroring each other would
            // send copies round for ever).
            let mirrors = self.mirrors();
            if let Some(to) = &m.to {
                if mirrors.contains_key(to) {
                    return Err(Error::Conflict(format!(
                        "{to} is mirrored itself: an analyzer vif cannot be"
                    )));
                }
            }
            if let Some((from, _)) = mirrors
                .iter()
                .find(|(from, o)| o.to.as_deref() == Some(name) && from.as_str() != name)
            {
                return Err(Error::Conflict(format!(
                    "{name} is {from}'s analyzer: an analyzer vif cannot be mirrored"
                )));
            }
        }
        let (spec, to) = {
            let model = self.model();
            let spec = model.vif(name)?.spec.clone();
            if m.collector.is_some()
                && !model
                    .vifs()
                    .any(|v| matches!(v.spec.kind, VifKind::Physical { .. }))
            {
                return Err(Error::Conflict(
                    "a collector is reached over the fabric, and there is no fabric vif".into(),
                ));
            }
            let to = match &m.to {
                Some(to) => Some(
                    model
                        .vif(to)
                        .map_err(|_| {
                            Error::Conflict(format!("the analyzer vif {to} does not exist"))
                        })?
                        .spec
                        .clone(),
                ),
                None => None,
            };
            (spec, to)
        };
        let mut mirrors = self.mirrors();
        self.dataplane.mirror_set(&spec, to.as_ref(), m)?;
        let new = mirrors.insert(name.to_string(), m.clone()).is_none();
        info!(vif = %name, to = ?m.to, collector = ?m.collector, "mirror set");
        Ok(Outcome::from_new(new))
    }

    pub fn mirror(&self, name: &str) -> Result<MirrorInfo, Error> {
        let spec = self.model().vif(name)?.spec.clone();
        let mirror = self
            .mirrors()
            .get(name)
            .cloned()
            .ok_or_else(|| Error::NotFound {
                what: "mirror of vif",
                key: name.to_string(),
            })?;
        let (copies, copy_failures, copies_skipped) = self.dataplane.mirror_counts(&spec);
        Ok(MirrorInfo {
            mirror,
            copies,
            copy_failures,
            copies_skipped,
        })
    }

    pub fn mirror_del(&self, name: &str) -> Result<(), Error> {
        let _change = self.change();
        let spec = self.model().vif(name)?.spec.clone();
        let mut mirrors = self.mirrors();
        if !mirrors.contains_key(name) {
            return Err(Error::NotFound {
                what: "mirror of vif",
                key: name.to_string(),
            });
        }
        self.dataplane.mirror_del(&spec)?;
        mirrors.remove(name);
        Ok(())
    }

    /// Starts tracing the next `req.count` packets of vif `name`, replacing any trace running.
    pub fn trace_start(&self, name: &str, req: TraceRequest) -> Result<TraceRequest, Error> {
        if !(1..=TRACE_COUNT_MAX).contains(&req.count) {
            return Err(Error::InvalidField {
                field: "count".into(),
                reason: format!("{} is not in 1..={TRACE_COUNT_MAX}", req.count),
            });
        }
        let spec = self.model().vif(name)?.spec.clone();
        let mut traced = self.traced();
        self.dataplane.trace_start(&spec, req.count)?;
        *traced = Some(name.to_string());
        info!(vif = %name, count = req.count, "packet trace started");
        Ok(req)
    }

    /// The packets of vif `name`'s trace since the last read.
    pub fn trace_read(&self, name: &str) -> Result<TraceResult, Error> {
        self.model().vif(name)?;
        let traced = self.traced();
        match traced.as_deref() {
            Some(t) if t == name => {
                let (running, packets) = self.dataplane.trace_read()?;
                Ok(TraceResult {
                    vif: name.to_string(),
                    running,
                    packets,
                })
            }
            Some(other) => Err(Error::Conflict(format!(
                "the packet trace is of vif {other}; start one on {name} first"
            ))),
            None => Err(Error::NotFound {
                what: "packet trace of vif",
                key: format!("{name} (start one with PUT)"),
            }),
        }
    }

    /// Stops vif `name`'s trace (what it traced and nobody read is dropped).
    pub fn trace_stop(&self, name: &str) -> Result<(), Error> {
        self.model().vif(name)?;
        let mut traced = self.traced();
        match traced.as_deref() {
            Some(t) if t == name => {
                self.dataplane.trace_stop()?;
                *traced = None;
                Ok(())
            }
            _ => Err(Error::NotFound {
                what: "packet trace of vif",
                key: name.to_string(),
            }),
        }
    }

    pub fn policy(&self, name: &str) -> Result<Policy, Error> {
        self.model()
            .vif(name)?
            .policy
            .clone()
            .ok_or_else(|| Error::NotFound {
                what: "policy of vif",
                key: format!("{name} (a vif without policy skips the flow table)"),
            })
    }

    // ---- live state --------------------------------------------------------------------------

    pub fn flows(&self, mut query: FlowQuery) -> Result<FlowPage, Error> {
        if let Some(vrf) = query.vrf {
            check_query("vrf", vrf, 0, VRF_MAX)?;
        }
        let limit = query.limit.unwrap_or(FLOWS_LIMIT_DEFAULT);
        check_query("limit", limit, 1, FLOWS_LIMIT_MAX)?;
        query.limit = Some(limit);
        Ok(self.dataplane.flows(&query)?)
    }

    pub fn flush_flows(&self) -> Result<FlushResult, Error> {
        let _span = tracing::info_span!("flows_flush").entered();
        let flushed = self.dataplane.flush_flows()?;
        info!(flushed, "flows flushed");
        Ok(FlushResult { flushed })
    }

    pub fn flow_stats(&self) -> Result<FlowStats, Error> {
        Ok(self.dataplane.flow_stats()?)
    }

    pub fn stats(&self) -> Result<Stats, Error> {
        Ok(self.dataplane.stats()?)
    }

    pub fn dropstats(&self) -> Result<DropStats, Error> {
        Ok(self.dataplane.dropstats()?)
    }

    pub fn neighbours(&self) -> Result<Vec<crate::api::Neighbour>, Error> {
        Ok(self.dataplane.neighbours()?)
    }

    pub fn agent_stats(&self) -> Result<crate::api::AgentStats, Error> {
        Ok(self.dataplane.agent_stats()?)
    }

    /// The dataplane's health, with the vif list taken from the model (every configured vif,
    /// with its live state) so none is missing.
    pub fn health(&self) -> Result<Health, Error> {
        let mut health = self.dataplane.health()?;
        health.vifs = self
            .vifs()
            .into_iter()
            .map(|v| crate::api::VifHealth {
                name: v.config.name,
                state: v.status.state,
            })
            .collect();
        Ok(health)
    }
}

/// A save that failed after its change took effect: the answer says so.
fn unsaved(e: Error) -> Error {
    match e {
        Error::Filesystem { path, source, .. } => Error::Filesystem {
            action: "the change took effect but is not saved yet (the next change saves it): \
                     writing",
            path,
            source,
        },
        other => Error::Internal(format!(
            "the change took effect but is not saved yet (the next change saves it): {other}"
        )),
    }
}

/// The directories a vif's socket lies in that vrouterd created: those created now, plus those
/// an earlier vrouterd created (`earlier`, from saved state) that still exist, lie below the
/// socket base and hold `socket_dir`. Outermost first.
fn adopt_created_dirs(
    now: Vec<PathBuf>,
    earlier: &[PathBuf],
    socket_dir: &Path,
    base: &SocketBase,
) -> Vec<PathBuf> {
    let mut dirs: Vec<PathBuf> = earlier
        .iter()
        .filter(|d| {
            d.starts_with(base.root())
                && d.as_path() != base.root()
                && socket_dir.starts_with(d)
                && d.is_dir()
        })
        .cloned()
        .chain(now)
        .collect();
    dirs.sort_by_key(|d| d.components().count());
    dirs.dedup();
    dirs
}

fn check_range(param: &'static str, v: u32, min: u32, max: u32) -> Result<(), Error> {
    if (min..=max).contains(&v) {
        Ok(())
    } else {
        Err(Error::InvalidPathParam {
            param,
            reason: format!("{v} is outside {min}..={max}"),
        })
    }
}

fn check_query(param: &str, v: u32, min: u32, max: u32) -> Result<(), Error> {
    if (min..=max).contains(&v) {
        Ok(())
    } else {
        Err(Error::InvalidQuery(format!(
            "`{param}`: {v} is outside {min}..={max}"
        )))
    }
}

/// Nexthop ids accepted in paths.
pub const NEXTHOP_ID_RANGE: (u32, u32) = (1, NEXTHOP_ID_MAX);
