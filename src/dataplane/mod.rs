//! vrouterd's side of the control API: every validated change becomes a table update (published
//! RCU-style by the `vrouter` crate, so forwarding never waits), a port opened and its queues
//! handed to lcores, or a request to the vhost core; reads sum the per-lcore counters.
//!
//! Rooms: [`changes`] applies table and policy changes, [`vif`] opens and closes the vifs'
//! ports and sockets, [`convert`] turns API objects into forwarding-plane ones, [`reads`]
//! answers status, counters, health and flow listings, [`trace`] describes traced packets.

mod changes;
mod convert;
mod reads;
mod vif;

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use control_api::api::{
    DropStats, FlowPage, FlowQuery, FlowStats, Health, Mirror, NatPoolUsage, Stats, TracedPacket,
    VifStatus,
};
use control_api::{Change, Dataplane, DataplaneError, DataplaneErrorKind, VifSpec};
use crossbeam::channel::Sender;
use pmd_shim::{Eal, EthPort, KernelPortMonitor, Mempool, RingProducer};
use vrouter::flow::Policies;
use vrouter::nat::Nat;
use vrouter::pipeline::trace::Tracer;
use vrouter::tables::{FabricConfig, Tables};
use vrouter::CoreStats;

use crate::lcore::{LcoreCmd, LoopCounters};
use crate::progress::ProgressWatch;
use crate::vhost_core::{LcoreLoad, StatusMap, ToVhostCore, VhostCmd};

const REPLY_TIMEOUT: Duration = Duration::from_secs(5);

/// One forwarding lcore as the control side sees it.
pub struct LcoreHandleInfo {
    pub lcore: u32,
    pub commands: Sender<LcoreCmd>,
    pub stats: Arc<CoreStats>,
    pub counters: Arc<LoopCounters>,
    /// A producer handle on the lcore's inbox ring, to read its fill level.
    pub inbox: RingProducer,
}

enum VifIo {
    Vhost,
    /// A DPDK port; `per_lcore` ports have a queue pair on every lcore (the fabric).
    Eth {
        port: EthPort,
        per_lcore: bool,
    },
    /// A kernel interface (af-packet vif), polled and written by its lcore; the monitor reads
    /// its link and the kernel's drop count.
    Kernel {
        monitor: KernelPortMonitor,
    },
}

struct VifRuntime {
    index: u16,
    name: String,
    io: VifIo,
    /// The lcore polling it (None for per-lcore ports).
    lcore: Option<u8>,
}

#[derive(Default)]
struct Registry {
    vifs: HashMap<u16, VifRuntime>,
    by_name: HashMap<String, u16>,
    /// Queues each lcore serves, for least-loaded placement (vhost-user queue pairs are
    /// counted by the vhost core as they come up).
    load: LcoreLoad,
    /// DPDK device names in use by physical vifs (a device can back one vif only).
    devices: HashMap<String, u16>,
    fabric: FabricConfig,
}

/// Mbufs in the pool of large receive buffers, made for the first port that needs it.
const JUMBO_MBUFS: u32 = 4095;
/// Data room of a large receive buffer: a 9216-byte MTU frame with room to spare (a driver may
/// want its whole frame slot to fit, e.g. net_af_packet's `framesz`), and headroom.
const JUMBO_DATA_ROOM: u16 = 10240 + 128;

pub struct VrouterDataplane {
    eal: Eal,
    pool: Mempool,
    /// Receive buffers for ports whose device cannot spread a jumbo frame over several mbufs.
    jumbo: std::sync::OnceLock<Mempool>,
    tables: Arc<Tables>,
    lcores: Vec<LcoreHandleInfo>,
    vhost: ToVhostCore<VhostCmd>,
    /// Lock order: `registry` before `vhost_status`, never the reverse (`vif_status` holds the
    /// first while it takes the second). Neither is held while waiting on another thread.
    vhost_status: StatusMap,
    registry: Mutex<Registry>,
    policies: Arc<Policies>,
    /// Source NAT pools and attachments (the same flow table as `policies`).
    nat: Arc<Nat>,
    vhost_loops: Arc<AtomicU64>,
    /// Health's memory of the cores' loop counters (taken alone, by health only).
    progress: Mutex<ProgressWatch>,
    /// Frames the kernel dropped for kernel vifs since removed (their sockets are gone).
    kernel_drops_retired: AtomicU64,
    tracer: Arc<Tracer>,
    /// Each mirrored vif's copy counts when its mirror was set: a mirror's figures are its own.
    mirror_base: Mutex<std::collections::HashMap<u16, (u64, u64, u64)>>,
    /// The IPFIX exporter's collector and counters, once it runs.
    flow_export: std::sync::OnceLock<(std::net::SocketAddr, Arc<crate::flow_export::ExportStats>)>,
    /// The underlay neighbour resolver, once it runs.
    resolver: std::sync::OnceLock<Arc<crate::neigh::Resolver>>,
    /// The agent channel (pkt0), once it runs.
    agent: std::sync::OnceLock<Arc<crate::agent::AgentShared>>,
}

fn rejected(msg: impl Into<String>) -> DataplaneError {
    DataplaneError::new(DataplaneErrorKind::Rejected, msg)
}

/// A table's refusal: a full table is 507 `table-full`, its message naming the table, its limit
/// and what raises it; anything else is a rejection.
fn table_err(e: vrouter::Error) -> DataplaneError {
    use vrouter::Error as E;
    let hint = match &e {
        E::RouteTableFull { family, .. } => format!(
            "remove routes, or start vrouterd with a larger --route-groups-{}",
            if *family == "IPv4" { "v4" } else { "v6" }
        ),
        E::BridgeTableFull { .. } => {
            "remove bridge entries, or start vrouterd with a larger --bridge-entries".to_owned()
        }
        E::TableFull { .. } => "remove entries first".to_owned(),
        E::NexthopOutOfRange { .. } => "use a lower nexthop id".to_owned(),
        _ => return rejected(e.to_string()),
    };
    DataplaneError::new(DataplaneErrorKind::TableFull, format!("{e}; {hint}"))
}

/// What the dataplane is made of, handed over at start-up.
pub struct DataplaneParts {
    pub eal: Eal,
    pub pool: Mempool,
    pub tables: Arc<Tables>,
    pub lcores: Vec<LcoreHandleInfo>,
    pub vhost: ToVhostCore<VhostCmd>,
    pub vhost_status: StatusMap,
    /// The vhost core's loop counter.
    pub vhost_loops: Arc<AtomicU64>,
    /// Queues per lcore, shared with the vhost core.
    pub load: LcoreLoad,
    pub fabric: FabricConfig,
    pub policies: Arc<Policies>,
    /// The packet tracer every lcore's pipeline was given.
    pub tracer: Arc<Tracer>,
    pub nat: Arc<Nat>,
}

impl VrouterDataplane {
    pub fn new(parts: DataplaneParts) -> Self {
        let DataplaneParts {
            eal,
            pool,
            tables,
            lcores,
            vhost,
            vhost_status,
            vhost_loops,
            load,
            fabric,
            policies,
            tracer,
            nat,
        } = parts;
        let registry = Registry {
            load,
            fabric,
            ..Registry::default()
        };
        tables.set_fabric(fabric);
        VrouterDataplane {
            eal,
            pool,
            jumbo: std::sync::OnceLock::new(),
            tables,
            lcores,
            vhost,
            vhost_status,
            registry: Mutex::new(registry),
            policies,
            nat,
            vhost_loops,
            progress: Mutex::new(ProgressWatch::default()),
            kernel_drops_retired: AtomicU64::new(0),
            tracer,
            mirror_base: Mutex::new(std::collections::HashMap::new()),
            flow_export: std::sync::OnceLock::new(),
            resolver: std::sync::OnceLock::new(),
            agent: std::sync::OnceLock::new(),
        }
    }

    /// The neighbour resolver runs: GET /neighbours shows what it keeps.
    pub fn set_resolver(&self, r: Arc<crate::neigh::Resolver>) {
        let _ = self.resolver.set(r);
    }

    /// The underlay neighbours, with the name of the vif each is reached through.
    pub fn neighbour_list(&self) -> Vec<control_api::api::Neighbour> {
        let Some(r) = self.resolver.get() else {
            return Vec::new();
        };
        let snapshot = r.snapshot();
        let reg = self.registry();
        let now = std::time::Instant::now();
        snapshot
            .into_iter()
            .map(|(ip, e)| control_api::api::Neighbour {
                address: ip.into(),
                vif: reg
                    .vifs
                    .get(&e.vif)
                    .map_or_else(|| e.vif.to_string(), |v| v.name.clone()),
                state: e.state,
                mac: e.mac,
                confirmed_secs_ago: e.confirmed.map(|c| now.duration_since(c).as_secs()),
                requests: e.requests,
                learned: e.learned,
                mac_changes: e.mac_changes,
                failures: e.failures,
            })
            .collect()
    }

    /// The agent channel runs: its thread's counters show in /dropstats, /agent and /metrics.
    pub fn set_agent(&self, shared: Arc<crate::agent::AgentShared>) {
        let _ = self.agent.set(shared);
    }

    /// The IPFIX exporter runs, to `collector`: GET /flows/stats and /metrics show `stats`.
    pub fn set_flow_export(
        &self,
        collector: std::net::SocketAddr,
        stats: Arc<crate::flow_export::ExportStats>,
    ) {
        let _ = self.flow_export.set((collector, stats));
    }

    /// (lcore, polls, polls that found packets) of every forwarding lcore.
    pub fn loop_summary(&self) -> Vec<(u32, u64, u64)> {
        self.lcores
            .iter()
            .map(|l| {
                (
                    l.lcore,
                    l.counters.polls.load(Ordering::Relaxed),
                    l.counters.busy_polls.load(Ordering::Relaxed),
                )
            })
            .collect()
    }

    fn registry(&self) -> MutexGuard<'_, Registry> {
        self.registry.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn mirror_base(&self) -> MutexGuard<'_, std::collections::HashMap<u16, (u64, u64, u64)>> {
        self.mirror_base.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Vif `index`'s mirror copies made, failed and skipped since vrouterd started, over every
    /// lcore.
    fn mirror_counts_since_start(&self, index: u16) -> (u64, u64, u64) {
        let i = usize::from(index);
        self.lcores.iter().fold((0, 0, 0), |(c, f, s), l| {
            (
                c + l.counters.mirror_copies[i].load(Ordering::Relaxed),
                f + l.counters.mirror_failures[i].load(Ordering::Relaxed),
                s + l.counters.mirror_skipped[i].load(Ordering::Relaxed),
            )
        })
    }

    fn broadcast(&self, make: impl Fn() -> LcoreCmd) {
        for l in &self.lcores {
            let _ = l.commands.send(make());
        }
    }

    fn vif_index(reg: &Registry, name: &str) -> Result<u16, DataplaneError> {
        reg.by_name
            .get(name)
            .copied()
            .ok_or_else(|| rejected(format!("vif {name:?} is not in the dataplane")))
    }
}

impl Dataplane for VrouterDataplane {
    fn apply(&self, change: &Change) -> Result<(), DataplaneError> {
        self.apply_change(change)
    }

    fn vif_status(&self, vif: &VifSpec) -> VifStatus {
        self.status_of_vif(vif)
    }

    fn queue_pin(&self, vif: &VifSpec, queue: u32, lcore: u32) -> Result<(), DataplaneError> {
        let index = Self::vif_index(&self.registry(), &vif.name)?;
        let Some(at) = self.lcores.iter().position(|h| h.lcore == lcore) else {
            let have: Vec<String> = self.lcores.iter().map(|h| h.lcore.to_string()).collect();
            return Err(DataplaneError::new(
                DataplaneErrorKind::Rejected,
                format!(
                    "lcore {lcore} is not a forwarding lcore (forwarding lcores: {})",
                    have.join(", ")
                ),
            ));
        };
        let pair = u16::try_from(queue).map_err(|_| rejected("queue out of range"))?;
        let (reply, answer) = crossbeam::channel::bounded(1);
        self.vhost
            .send(VhostCmd::Pin {
                vif: index,
                pair,
                lcore: u8::try_from(at).unwrap_or(u8::MAX),
                reply,
            })
            .map_err(|_| {
                DataplaneError::new(
                    DataplaneErrorKind::Unavailable,
                    "the vhost core is not running",
                )
            })?;
        match answer.recv_timeout(REPLY_TIMEOUT) {
            Ok(r) => r.map_err(rejected),
            Err(_) => Err(DataplaneError::new(
                DataplaneErrorKind::Unavailable,
                "the vhost core did not answer",
            )),
        }
    }

    fn stats(&self) -> Result<Stats, DataplaneError> {
        self.counter_totals()
    }

    fn dropstats(&self) -> Result<DropStats, DataplaneError> {
        self.drop_totals()
    }

    fn health(&self) -> Result<Health, DataplaneError> {
        self.health_report()
    }

    fn flows(&self, q: &FlowQuery) -> Result<FlowPage, DataplaneError> {
        self.flow_page(q)
    }

    fn flush_flows(&self) -> Result<u64, DataplaneError> {
        self.flush_flow_table()
    }

    fn flow_stats(&self) -> Result<FlowStats, DataplaneError> {
        self.flow_table_stats()
    }

    fn trace_start(&self, vif: &VifSpec, count: u32) -> Result<(), DataplaneError> {
        let index = Self::vif_index(&self.registry(), &vif.name)?;
        self.tracer.start(index, count);
        Ok(())
    }

    fn trace_read(&self) -> Result<(bool, Vec<TracedPacket>), DataplaneError> {
        Ok(self.traced_packets())
    }

    fn trace_stop(&self) -> Result<(), DataplaneError> {
        self.tracer.stop();
        Ok(())
    }

    fn mirror_set(
        &self,
        vif: &VifSpec,
        to: Option<&VifSpec>,
        m: &Mirror,
    ) -> Result<(), DataplaneError> {
        let reg = self.registry();
        let index = Self::vif_index(&reg, &vif.name)?;
        let (to, remote) = match (to, &m.collector) {
            (Some(to), _) => (Self::vif_index(&reg, &to.name)?, None),
            (None, Some(c)) => {
                // Over the fabric vif, from the fabric address, in VXLAN.
                let topo = self.tables.topology();
                let fabric = reg
                    .vifs
                    .values()
                    .filter_map(|v| {
                        topo.vif(v.index)
                            .filter(|t| t.kind == vrouter::tables::VifKind::Physical)
                    })
                    .min_by_key(|t| t.index)
                    .copied()
                    .ok_or_else(|| {
                        rejected("a collector is reached over the fabric: no fabric vif")
                    })?;
                let outer = vrouter::pipeline::encap::Outer {
                    encap: vrouter::tables::TunnelEncap::Vxlan,
                    sip: reg.fabric.fabric_ip,
                    dip: c.address,
                    dmac: vrouter::MacAddr(c.mac.0),
                    label: c.vni,
                    mpls_ttl: 0,
                };
                let tpl = vrouter::pipeline::encap::Template::new(&outer, &fabric, &reg.fabric);
                (fabric.index, Some((tpl, c.vni)))
            }
            (None, None) => return Err(rejected("a mirror goes to a vif or a collector")),
        };
        drop(reg);
        let mut cfg = crate::mirror::cfg(m, to, remote);
        // A copy never exceeds what its path carries: the analyzer's MTU and Ethernet header
        // (with a VLAN tag), or the fabric's MTU less the collector's outer IP, UDP and VXLAN
        // headers. A GSO packet's copy, one frame of up to 64 KB, is cut to it too.
        if let Some(out) = self.tables.topology().vif(to) {
            let limit = if cfg.remote.is_some() {
                u32::from(out.mtu).saturating_sub(36)
            } else {
                u32::from(out.mtu) + 18
            };
            cfg.snaplen = cfg.snaplen.min(limit);
        }
        let base = self.mirror_counts_since_start(index);
        self.mirror_base().insert(index, base);
        self.broadcast(|| LcoreCmd::SetMirror {
            vif: index,
            mirror: Some(cfg),
        });
        Ok(())
    }

    fn mirror_del(&self, vif: &VifSpec) -> Result<(), DataplaneError> {
        let index = Self::vif_index(&self.registry(), &vif.name)?;
        self.broadcast(|| LcoreCmd::SetMirror {
            vif: index,
            mirror: None,
        });
        Ok(())
    }

    fn mirror_counts(&self, vif: &VifSpec) -> (u64, u64, u64) {
        let Ok(index) = Self::vif_index(&self.registry(), &vif.name) else {
            return (0, 0, 0);
        };
        let (c, f, s) = self.mirror_counts_since_start(index);
        let base = self.mirror_base().get(&index).copied().unwrap_or_default();
        (
            c.saturating_sub(base.0),
            f.saturating_sub(base.1),
            s.saturating_sub(base.2),
        )
    }

    fn neighbours(&self) -> Result<Vec<control_api::api::Neighbour>, DataplaneError> {
        Ok(self.neighbour_list())
    }

    fn agent_stats(&self) -> Result<control_api::api::AgentStats, DataplaneError> {
        Ok(self.agent_counters())
    }

    fn nat_pools(&self) -> Result<Vec<NatPoolUsage>, DataplaneError> {
        Ok(self
            .nat
            .pools()
            .into_iter()
            .map(|p| NatPoolUsage {
                name: p.name,
                capacity: p.capacity,
                in_use: p.in_use,
                exhausted: p.exhausted,
            })
            .collect())
    }

    fn service_flows(
        &self,
        service: &control_api::api::Service,
    ) -> Result<Vec<u64>, DataplaneError> {
        let s = changes::service_of(service)?;
        Ok(self
            .nat
            .service_flows(s.vrf, s.proto, s.addr, s.port)
            .unwrap_or_default())
    }
}

mod trace;

pub(crate) use convert::flow_clock_ms;

#[cfg(test)]
mod tests;
