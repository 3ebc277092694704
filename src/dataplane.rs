//! vrouterd's side of the control API: every validated change becomes a table update (published
//! RCU-style by the `vrouter` crate, so forwarding never waits), a port opened and its queues
//! handed to lcores, or a request to the vhost core; reads sum the per-lcore counters.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use control_api::api::{
    DropStats, FlowAction as ApiFlowAction, FlowEntry, FlowPage, FlowQuery, FlowStats, Health,
    HealthStatus, LcoreHealth, LcoreStats, MempoolHealth, Nexthop as ApiNexthop, PolicyAction,
    Proto, RingHealth, Stats, TunnelEncap as ApiEncap, VhostUserMode, VifCounters, VifState,
    VifStatus,
};
use control_api::model::device_name;
use control_api::{
    Change, Dataplane, DataplaneError, DataplaneErrorKind, TableChange, VifKind as ApiVifKind,
    VifSpec,
};
use crossbeam::channel::{bounded, Sender};
use pmd_shim::{
    Eal, EthPort, KernelPort, KernelPortConfig, KernelPortMonitor, Mempool, PortConfig, RingLevel,
    RingProducer,
};
use tracing::{info, info_span, warn};
use vrouter::flow::{self, Policies};
use vrouter::stats::MAX_VIFS;
use vrouter::tables::{FabricConfig, Nexthop, RouteTarget, Tables, TunnelEncap, Vif, VifKind};
use vrouter::{CoreStats, DropReason, MacAddr};

use crate::lcore::{LcoreCmd, LoopCounters, NO_OWNER};
use crate::progress::ProgressWatch;
use crate::vhost_core::{StatusMap, VhostCmd};

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
    /// Vifs polled by each lcore, for least-loaded placement.
    load: Vec<u32>,
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
    vhost: Sender<VhostCmd>,
    /// Lock order: `registry` before `vhost_status`, never the reverse (`vif_status` holds the
    /// first while it takes the second). Neither is held while waiting on another thread.
    vhost_status: StatusMap,
    registry: Mutex<Registry>,
    policies: Arc<Policies>,
    vhost_loops: Arc<AtomicU64>,
    /// Health's memory of the cores' loop counters (taken alone, by health only).
    progress: Mutex<ProgressWatch>,
    /// Frames the kernel dropped for kernel vifs since removed (their sockets are gone).
    kernel_drops_retired: AtomicU64,
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
    pub vhost: Sender<VhostCmd>,
    pub vhost_status: StatusMap,
    /// The vhost core's loop counter.
    pub vhost_loops: Arc<AtomicU64>,
    pub fabric: FabricConfig,
    pub policies: Arc<Policies>,
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
            fabric,
            policies,
        } = parts;
        let registry = Registry {
            load: vec![0; lcores.len()],
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
            vhost_loops,
            progress: Mutex::new(ProgressWatch::default()),
            kernel_drops_retired: AtomicU64::new(0),
        }
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

    fn add_vif(&self, spec: &VifSpec) -> Result<(), DataplaneError> {
        let index = u16::try_from(spec.index)
            .ok()
            .filter(|&i| usize::from(i) < MAX_VIFS)
            .ok_or_else(|| {
                DataplaneError::new(
                    DataplaneErrorKind::TableFull,
                    format!(
                        "vif table is full (limit {MAX_VIFS} vifs): index {} does not fit; \
                         remove vifs first",
                        spec.index
                    ),
                )
            })?;
        let vrf = u16::try_from(spec.vrf).map_err(|_| rejected("vrf out of range"))?;
        let mtu = u16::try_from(spec.mtu).unwrap_or(u16::MAX);
        // The registry is read here and written at the end, not held in between: opening a
        // device or waiting for the vhost core can take seconds, and status and health reads
        // take it. The controller applies one change at a time, so nothing else writes it
        // meanwhile.
        let physical_device = match &spec.kind {
            ApiVifKind::Physical { device } => Some(device_name(device).to_owned()),
            _ => None,
        };
        let lcore = {
            let reg = self.registry();
            if let Some(other) = physical_device.as_ref().and_then(|d| reg.devices.get(d)) {
                return Err(rejected(format!(
                    "device {:?} already backs vif index {other}; one device per vif",
                    physical_device.as_deref().unwrap_or_default()
                )));
            }
            least_loaded(&reg.load)
        };
        let (io, kind, placed) = match &spec.kind {
            ApiVifKind::VhostUser {
                socket,
                mode,
                queues,
                group,
            } => {
                let (reply, answer) = bounded(1);
                self.vhost
                    .send(VhostCmd::Add {
                        vif: index,
                        name: spec.name.clone(),
                        socket: socket.clone(),
                        mode: match mode {
                            VhostUserMode::Server => vhost_user::Mode::Server,
                            VhostUserMode::Client => vhost_user::Mode::Client,
                        },
                        queue_pairs: u16::try_from(*queues).unwrap_or(1).max(1),
                        group: *group,
                        mac: spec.mac.0,
                        mtu,
                        lcore,
                        reply,
                    })
                    .map_err(|_| {
                        DataplaneError::new(
                            DataplaneErrorKind::Unavailable,
                            "the vhost core is not running",
                        )
                    })?;
                let Ok(added) = answer.recv_timeout(REPLY_TIMEOUT) else {
                    // It may still add the vif when it wakes; commands run in order, so this
                    // removal follows and nothing is left behind.
                    self.release_io(index, &spec.name, VifIo::Vhost, false);
                    return Err(DataplaneError::new(
                        DataplaneErrorKind::Unavailable,
                        "the vhost core did not answer",
                    ));
                };
                added.map_err(|e| {
                    rejected(format!("vhost-user socket {}: {e}", socket.display()))
                })?;
                (VifIo::Vhost, VifKind::Pod, Some(lcore))
            }
            ApiVifKind::Physical { device } => {
                let n = u16::try_from(self.lcores.len()).unwrap_or(1);
                let port = self.open_port(device, n, mtu)?;
                (
                    VifIo::Eth {
                        port,
                        per_lcore: true,
                    },
                    VifKind::Physical,
                    None,
                )
            }
            ApiVifKind::AfPacket { iface } => {
                // Our own AF_PACKET port rather than DPDK's net_af_packet: it keeps the
                // kernel's offload header, without which a pod's TCP (partial checksums,
                // 64 KB segments) does not survive the trip.
                let port = KernelPort::open(iface, &self.pool, &KernelPortConfig::for_mtu(mtu))
                    .map_err(|e| rejected(e.to_string()))?;
                let monitor = port.monitor();
                let (rx, tx) = port.split();
                let Some(l) = self.lcores.get(usize::from(lcore)) else {
                    return Err(rejected("no forwarding lcore to poll the interface"));
                };
                // Dropped with the command (closing the socket) if the lcore is gone.
                let _ = l.commands.send(LcoreCmd::AttachKernel {
                    vif: index,
                    mtu,
                    rx,
                    tx,
                });
                (VifIo::Kernel { monitor }, VifKind::Pod, Some(lcore))
            }
            ApiVifKind::Tap { iface } => {
                // Named after the vif index, so it can never collide with another vif's
                // device (or a --fabric vdev).
                let devargs = format!("net_tap_vif{index},iface={iface}");
                let port = self.open_port(&devargs, 1, mtu)?;
                (
                    VifIo::Eth {
                        port,
                        per_lcore: false,
                    },
                    VifKind::Host,
                    Some(lcore),
                )
            }
        };
        let mut io = io;
        // Hand the port's queues to the lcores before the vif appears in the tables.
        if let VifIo::Eth { port, per_lcore } = &mut io {
            // A port that did not start is closed as it is dropped: nothing to take back.
            let queues = port
                .start()
                .map_err(|e| rejected(format!("starting {}: {e}", spec.name)))?;
            if *per_lcore {
                for ((l, rx), tx) in self.lcores.iter().zip(queues.rx).zip(queues.tx) {
                    let _ = l.commands.send(LcoreCmd::AttachEth {
                        vif: index,
                        rx: Some(rx),
                        tx: Some(tx),
                    });
                }
            } else if let Some(l) = self.lcores.get(usize::from(lcore)) {
                let mut rx = queues.rx;
                let mut tx = queues.tx;
                let _ = l.commands.send(LcoreCmd::AttachEth {
                    vif: index,
                    rx: rx.pop(),
                    tx: tx.pop(),
                });
            }
        }
        let mut reg = self.registry();
        if let Some(l) = placed {
            self.broadcast(|| LcoreCmd::SetOwner {
                vif: index,
                owner: l,
            });
        }
        // The one step after the queues went out that can fail (the controller checked the
        // VRF, so it should not): if it does, take everything back as a removal would.
        if let Err(e) = self.tables.set_vif(Vif {
            index,
            kind,
            vrf,
            mac: MacAddr(spec.mac.0),
            mtu,
        }) {
            drop(reg);
            self.release_io(index, &spec.name, io, placed.is_some());
            return Err(table_err(e));
        }
        if let Some(load) = placed.and_then(|l| reg.load.get_mut(usize::from(l))) {
            *load += 1;
        }
        if kind == VifKind::Host {
            self.broadcast(|| LcoreCmd::SetHostVif { vif: Some(index) });
        }
        if kind == VifKind::Physical {
            if let Some(IpAddr::V4(ip)) = spec.ip.map(IpAddr::V4) {
                reg.fabric.fabric_ip = ip;
                self.tables.set_fabric(reg.fabric);
            }
        }
        if let Some(device) = physical_device {
            reg.devices.insert(device, index);
        }
        reg.by_name.insert(spec.name.clone(), index);
        reg.vifs.insert(
            index,
            VifRuntime {
                index,
                name: spec.name.clone(),
                io,
                lcore: placed,
            },
        );
        info!(vif = %spec.name, index, lcore = ?placed, "vif added");
        Ok(())
    }

    /// Opens and configures a DPDK port for a vif of `mtu`, with the device's TX offloads on.
    /// A device that cannot receive MTU-sized frames into the packet pool's buffers, nor spread
    /// them over several, gets its own pool of large buffers; an MTU beyond the device's is
    /// refused, naming its limit.
    fn open_port(&self, devargs: &str, queues: u16, mtu: u16) -> Result<EthPort, DataplaneError> {
        let mut port = EthPort::open(&self.eal, devargs)
            .map_err(|e| rejected(format!("device {devargs:?}: {e}")))?;
        let cfg = PortConfig {
            rx_queues: queues,
            tx_queues: queues,
            promiscuous: true,
            mtu,
            tx_offloads: true,
            ..PortConfig::default()
        };
        let configured = match port.configure(&cfg, &self.pool) {
            Err(pmd_shim::Error::RxBuffersTooSmall { .. }) => {
                let pool = self.jumbo_pool()?;
                port.configure(&cfg, pool)
            }
            other => other,
        };
        configured.map_err(|e| rejected(format!("configuring {devargs:?}: {e}")))?;
        Ok(port)
    }

    fn jumbo_pool(&self) -> Result<&Mempool, DataplaneError> {
        if let Some(p) = self.jumbo.get() {
            return Ok(p);
        }
        let p = Mempool::new(&self.eal, "vr_jumbo", JUMBO_MBUFS, 256, JUMBO_DATA_ROOM).map_err(
            |e| {
                rejected(format!(
                    "a port needs {JUMBO_MBUFS} receive buffers of {JUMBO_DATA_ROOM} bytes for \
                     its MTU and they could not be made (more hugepages?): {e}"
                ))
            },
        )?;
        Ok(self.jumbo.get_or_init(|| p))
    }

    fn del_vif(&self, spec: &VifSpec) -> Result<(), DataplaneError> {
        let mut reg = self.registry();
        let Some(index) = reg.by_name.get(&spec.name).copied() else {
            return Ok(());
        };
        // First out of the tables, so no lcore routes to it any more; then take its queues back.
        self.tables.del_vif(index).map_err(table_err)?;
        let Some(rt) = reg.vifs.remove(&index) else {
            return Ok(());
        };
        reg.by_name.remove(&rt.name);
        reg.devices.retain(|_, &mut v| v != index);
        if let Some(l) = rt.lcore.and_then(|l| reg.load.get_mut(usize::from(l))) {
            *l = l.saturating_sub(1);
        }
        // Out of the registry: what follows waits on other threads, without holding it.
        drop(reg);
        self.release_io(index, &rt.name, rt.io, rt.lcore.is_some());
        info!(vif = %rt.name, index = rt.index, "vif removed");
        Ok(())
    }

    /// Take a vif's I/O back from the cores that use it: its vhost-user port from the vhost
    /// core, or its ethdev queues from the lcores, then stop and close the port. `owned`: its
    /// queues were given an owner lcore, to be cleared first. The vif must already be out of
    /// the tables (or never have been in them). Waits on the cores; call without the registry.
    fn release_io(&self, index: u16, name: &str, io: VifIo, owned: bool) {
        if owned {
            self.broadcast(|| LcoreCmd::SetOwner {
                vif: index,
                owner: NO_OWNER,
            });
        }
        match io {
            VifIo::Vhost => {
                let (reply, answer) = bounded(1);
                if self.vhost.send(VhostCmd::Del { vif: index, reply }).is_ok()
                    && answer.recv_timeout(REPLY_TIMEOUT).is_err()
                {
                    warn!(vif = %name, "the vhost core did not confirm the removal");
                }
            }
            VifIo::Eth { mut port, .. } => {
                for l in &self.lcores {
                    let (reply, answer) = bounded(1);
                    if l.commands
                        .send(LcoreCmd::DetachVif { vif: index, reply })
                        .is_ok()
                        && answer.recv_timeout(REPLY_TIMEOUT).is_err()
                    {
                        warn!(vif = %name, lcore = l.lcore, "lcore did not release the port's queues");
                    }
                }
                if let Err(e) = port.stop() {
                    warn!(vif = %name, "stopping port: {e}");
                }
                drop(port);
            }
            VifIo::Kernel { monitor } => {
                for l in &self.lcores {
                    let (reply, answer) = bounded(1);
                    if l.commands
                        .send(LcoreCmd::DetachVif { vif: index, reply })
                        .is_ok()
                        && answer.recv_timeout(REPLY_TIMEOUT).is_err()
                    {
                        warn!(vif = %name, lcore = l.lcore, "lcore did not release the interface");
                    }
                }
                // The socket closes with the monitor, after this last read of its drops.
                self.kernel_drops_retired
                    .fetch_add(monitor.stats().rx_ring_full, Ordering::Relaxed);
            }
        }
    }

    fn nexthop(&self, nh: &ApiNexthop) -> Result<Nexthop, DataplaneError> {
        let reg = self.registry();
        Ok(match nh {
            ApiNexthop::Discard => Nexthop::Discard,
            ApiNexthop::Receive => Nexthop::Receive,
            ApiNexthop::Encap { vif, dmac } => Nexthop::Encap {
                vif: Self::vif_index(&reg, vif)?,
                dmac: MacAddr(dmac.0),
            },
            ApiNexthop::Tunnel {
                encap,
                vif,
                sip,
                dip,
                dmac,
            } => {
                let (IpAddr::V4(sip), IpAddr::V4(dip)) = (sip, dip) else {
                    return Err(rejected(
                        "tunnel endpoints must be IPv4 (the fabric is IPv4)",
                    ));
                };
                Nexthop::Tunnel {
                    encap: match encap {
                        ApiEncap::Vxlan => TunnelEncap::Vxlan,
                        ApiEncap::Mplsoudp => TunnelEncap::MplsUdp,
                        ApiEncap::Mplsogre => TunnelEncap::MplsGre,
                    },
                    vif: Self::vif_index(&reg, vif)?,
                    sip: *sip,
                    dip: *dip,
                    dmac: MacAddr(dmac.0),
                }
            }
            ApiNexthop::Ecmp { members } => Nexthop::ecmp(members).map_err(table_err)?,
        })
    }

    /// Frames the kernel dropped because a kernel vif's ring was full: per lcore id for the
    /// vifs there are, and the total of those removed since.
    fn kernel_ring_drops(&self) -> (HashMap<u32, u64>, u64) {
        let mut per_lcore = HashMap::new();
        let reg = self.registry();
        for rt in reg.vifs.values() {
            if let VifIo::Kernel { monitor } = &rt.io {
                let lcore = rt
                    .lcore
                    .and_then(|l| self.lcores.get(usize::from(l)))
                    .map_or(u32::MAX, |h| h.lcore);
                *per_lcore.entry(lcore).or_insert(0) += monitor.stats().rx_ring_full;
            }
        }
        (per_lcore, self.kernel_drops_retired.load(Ordering::Relaxed))
    }

    fn vif_counters(&self, index: u16) -> VifCounters {
        let mut c = VifCounters::default();
        for l in &self.lcores {
            let v = l.stats.vif(index);
            c.rx_packets += v.rx_packets.get();
            c.rx_bytes += v.rx_bytes.get();
            c.tx_packets += v.tx_packets.get();
            c.tx_bytes += v.tx_bytes.get();
            c.drops += v.drops.get();
            let refused = l
                .counters
                .tx_refused
                .get(usize::from(index))
                .map_or(0, |r| r.load(Ordering::Relaxed));
            c.tx_packets = c.tx_packets.saturating_sub(refused);
            c.drops += refused;
        }
        c
    }
}

/// The forwarding lcores' flow clock: milliseconds of TSC.
fn flow_clock_ms() -> u64 {
    pmd_shim::cycles::rdtsc() / (pmd_shim::cycles::tsc_hz() / 1000).max(1)
}

/// A policy of the API as the flow stage holds it.
fn flow_policy(p: &control_api::api::Policy) -> Result<flow::Policy, DataplaneError> {
    let action = |a: PolicyAction| match a {
        PolicyAction::Allow => flow::Action::Allow,
        PolicyAction::Deny => flow::Action::Deny,
    };
    let rules = |rs: &[control_api::api::PolicyRule]| -> Result<Vec<flow::Rule>, DataplaneError> {
        rs.iter()
            .map(|r| {
                Ok(flow::Rule {
                    action: action(r.action),
                    proto: match r.proto {
                        Proto::Any => None,
                        Proto::Number(n) => Some(n),
                    },
                    cidr: r
                        .cidr
                        .map(|c| flow::Cidr::new(c.addr(), c.prefix_len()))
                        .transpose()
                        .map_err(table_err)?,
                    ports: r.ports.map(|p| (p.first, p.last)),
                })
            })
            .collect()
    };
    Ok(flow::Policy {
        default: action(p.default),
        ingress: rules(&p.ingress)?,
        egress: rules(&p.egress)?,
    })
}

fn flow_entry(f: &flow::FlowInfo, now_ms: u64) -> FlowEntry {
    let addr = |a: u128| {
        if f.key.v6 {
            IpAddr::V6(std::net::Ipv6Addr::from(a))
        } else {
            IpAddr::V4(std::net::Ipv4Addr::from(a as u32))
        }
    };
    FlowEntry {
        index: u64::from(f.index),
        vrf: u32::from(f.key.vrf),
        src: addr(f.key.src),
        dst: addr(f.key.dst),
        proto: f.key.proto,
        sport: f.key.sport,
        dport: f.key.dport,
        action: match f.verdict {
            flow::FlowVerdict::Forward => ApiFlowAction::Forward,
            flow::FlowVerdict::Drop => ApiFlowAction::Drop,
        },
        reverse: f.reverse.map(u64::from),
        packets: f.packets,
        bytes: f.bytes,
        tcp_state: (f.key.proto == 6).then(|| {
            match f.tcp {
                flow::TcpState::None => "none",
                flow::TcpState::Syn => "syn",
                flow::TcpState::Established => "established",
                flow::TcpState::Fin => "fin",
                flow::TcpState::Rst => "rst",
            }
            .to_owned()
        }),
        idle_ms: now_ms.saturating_sub(f.last_seen),
    }
}

fn least_loaded(load: &[u32]) -> u8 {
    load.iter()
        .enumerate()
        .min_by_key(|(_, &n)| n)
        .map_or(0, |(i, _)| i as u8)
}

fn busy_ratio(c: &LoopCounters) -> f64 {
    let total = c.total_cycles.load(Ordering::Relaxed);
    if total == 0 {
        return 0.0;
    }
    c.busy_cycles.load(Ordering::Relaxed) as f64 / total as f64
}

impl Dataplane for VrouterDataplane {
    fn apply(&self, change: &Change) -> Result<(), DataplaneError> {
        let _span = info_span!("apply", op = change.op()).entered();
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
                    MacAddr(entry.mac.0),
                    RouteTarget {
                        nexthop: entry.nexthop,
                        label: entry.label,
                    },
                )
                .map_err(table_err),
            Change::Table(TableChange::BridgeDel { vrf, mac }) => self
                .tables
                .del_bridge(*vrf, MacAddr(mac.0))
                .map_err(table_err),
            Change::Table(TableChange::MplsSet { label, nexthop }) => {
                self.tables.set_label(*label, *nexthop).map_err(table_err)
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
            Change::PolicyDel { vif, name } => {
                let index = u16::try_from(*vif)
                    .map_err(|_| rejected(format!("vif {name}: index out of range")))?;
                let removed = self.policies.set(index, None).map_err(table_err)?;
                info!(vif = %name, flows_removed = removed, "policy removed");
                Ok(())
            }
        }
    }

    fn vif_status(&self, vif: &VifSpec) -> VifStatus {
        let reg = self.registry();
        let Some(&index) = reg.by_name.get(&vif.name) else {
            return VifStatus {
                state: VifState::Down,
                features: None,
                queues_enabled: 0,
                lcore: None,
                broken: None,
                counters: VifCounters::default(),
            };
        };
        let rt = reg.vifs.get(&index);
        let counters = self.vif_counters(index);
        let lcore_id = |l: u8| self.lcores.get(usize::from(l)).map(|h| h.lcore);
        match rt.map(|r| &r.io) {
            Some(VifIo::Vhost) => {
                let st = self
                    .vhost_status
                    .lock()
                    .ok()
                    .and_then(|m| m.get(&index).cloned());
                let broken = st.as_ref().and_then(|s| s.broken.clone());
                let (state, features, lent) = match st {
                    Some(s) if s.queues_lent > 0 => {
                        (VifState::Connected, s.features, s.queues_lent)
                    }
                    Some(s) => (
                        match s.state {
                            vhost_user::PortState::Listening => VifState::Listening,
                            vhost_user::PortState::Connecting => VifState::Connecting,
                            vhost_user::PortState::Connected => VifState::Connecting,
                        },
                        s.features,
                        0,
                    ),
                    None => (VifState::Down, None, 0),
                };
                VifStatus {
                    state,
                    features,
                    queues_enabled: lent / 2,
                    lcore: rt.and_then(|r| r.lcore).and_then(lcore_id),
                    broken,
                    counters,
                }
            }
            Some(VifIo::Eth { port, .. }) => {
                let up = port.link().map(|l| l.up).unwrap_or(false);
                VifStatus {
                    state: if up { VifState::Up } else { VifState::Down },
                    features: None,
                    queues_enabled: 1,
                    lcore: rt.and_then(|r| r.lcore).and_then(lcore_id),
                    broken: None,
                    counters,
                }
            }
            Some(VifIo::Kernel { monitor }) => {
                let mut counters = counters;
                // Frames the kernel could not put in the ring are this vif's drops too.
                counters.drops += monitor.stats().rx_ring_full;
                VifStatus {
                    state: if monitor.link_up() {
                        VifState::Up
                    } else {
                        VifState::Down
                    },
                    features: None,
                    queues_enabled: 1,
                    lcore: rt.and_then(|r| r.lcore).and_then(lcore_id),
                    broken: None,
                    counters,
                }
            }
            None => VifStatus {
                state: VifState::Down,
                features: None,
                queues_enabled: 0,
                lcore: None,
                broken: None,
                counters,
            },
        }
    }

    fn stats(&self) -> Result<Stats, DataplaneError> {
        let (kernel_drops, retired) = self.kernel_ring_drops();
        let mut total = Stats {
            rx_packets: 0,
            rx_bytes: 0,
            tx_packets: 0,
            tx_bytes: 0,
            drops: 0,
            lcores: Vec::new(),
        };
        for l in &self.lcores {
            let mut s = LcoreStats {
                lcore: l.lcore,
                rx_packets: 0,
                rx_bytes: 0,
                tx_packets: 0,
                tx_bytes: 0,
                drops: 0,
                busy_ratio: busy_ratio(&l.counters),
            };
            for v in 0..MAX_VIFS as u16 {
                let c = l.stats.vif(v);
                s.rx_packets += c.rx_packets.get();
                s.rx_bytes += c.rx_bytes.get();
                s.tx_packets += c.tx_packets.get();
                s.tx_bytes += c.tx_bytes.get();
                let refused = l.counters.tx_refused[usize::from(v)].load(Ordering::Relaxed);
                s.tx_packets = s.tx_packets.saturating_sub(refused);
            }
            s.drops = DropReason::ALL
                .iter()
                .map(|&r| l.stats.drops(r))
                .sum::<u64>()
                + l.counters
                    .tx_refused
                    .iter()
                    .map(|r| r.load(Ordering::Relaxed))
                    .sum::<u64>();
            s.drops += kernel_drops.get(&l.lcore).copied().unwrap_or(0);
            total.rx_packets += s.rx_packets;
            total.rx_bytes += s.rx_bytes;
            total.tx_packets += s.tx_packets;
            total.tx_bytes += s.tx_bytes;
            total.drops += s.drops;
            total.lcores.push(s);
        }
        total.drops += retired;
        Ok(total)
    }

    fn dropstats(&self) -> Result<DropStats, DataplaneError> {
        let mut d = DropStats::default();
        for &r in DropReason::ALL {
            let n: u64 = self.lcores.iter().map(|l| l.stats.drops(r)).sum();
            d.reasons.insert(r.name().to_owned(), n);
            d.total += n;
        }
        let refused: u64 = self
            .lcores
            .iter()
            .map(|l| {
                l.counters
                    .tx_refused
                    .iter()
                    .map(|r| r.load(Ordering::Relaxed))
                    .sum::<u64>()
            })
            .sum();
        d.reasons.insert("tx_queue_full".to_owned(), refused);
        d.total += refused;
        let (kernel, retired) = self.kernel_ring_drops();
        let ring_full = kernel.values().sum::<u64>() + retired;
        d.reasons.insert("kernel_ring_full".to_owned(), ring_full);
        d.total += ring_full;
        Ok(d)
    }

    fn health(&self) -> Result<Health, DataplaneError> {
        let usage = self.pool.usage();
        let mut problems = Vec::new();
        if u64::from(usage.in_use) * 10 > u64::from(usage.size) * 9 {
            problems.push(format!(
                "mempool {} is {}% in use",
                self.pool.name(),
                usage.in_use * 100 / usage.size.max(1)
            ));
        }
        let rings: Vec<RingHealth> = self
            .lcores
            .iter()
            .map(|l| RingHealth {
                name: l.inbox.ring_name().to_owned(),
                used: u64::from(l.inbox.count()),
                size: u64::from(l.inbox.capacity()),
            })
            .collect();
        for r in &rings {
            if r.used * 10 > r.size * 9 {
                problems.push(format!(
                    "ring {} is nearly full ({}/{})",
                    r.name, r.used, r.size
                ));
            }
        }
        // A core whose loop counter stands still is stuck, not idle (idle ones still loop).
        {
            let now = Instant::now();
            let mut watch = self.progress.lock().unwrap_or_else(|e| e.into_inner());
            for (i, l) in self.lcores.iter().enumerate() {
                let polls = l.counters.polls.load(Ordering::Relaxed);
                if let Some(stuck) = watch.observe(i, polls, now) {
                    problems.push(format!(
                        "forwarding lcore {} has not polled for {:.1} s",
                        l.lcore,
                        stuck.as_secs_f64()
                    ));
                }
            }
            let loops = self.vhost_loops.load(Ordering::Relaxed);
            if let Some(stuck) = watch.observe(self.lcores.len(), loops, now) {
                problems.push(format!(
                    "the vhost core has not run for {:.1} s: vhost-user sockets go unserved",
                    stuck.as_secs_f64()
                ));
            }
        }
        // The status lock is released before the registry is taken (the lock order above).
        let broken: Vec<(u16, String)> = self.vhost_status.lock().map_or_else(
            |_| Vec::new(),
            |m| {
                m.iter()
                    .filter_map(|(&i, s)| s.broken.clone().map(|why| (i, why)))
                    .collect()
            },
        );
        if !broken.is_empty() {
            let reg = self.registry();
            for (idx, why) in broken {
                let name = reg.vifs.get(&idx).map_or("?", |r| r.name.as_str());
                problems.push(format!(
                    "vif {name}: {why}; its queues are stopped until the guest reconnects or \
                     resets them"
                ));
            }
        }
        Ok(Health {
            status: if problems.is_empty() {
                HealthStatus::Ok
            } else {
                HealthStatus::Degraded
            },
            mempools: vec![MempoolHealth {
                name: self.pool.name().to_owned(),
                in_use: u64::from(usage.in_use),
                size: u64::from(usage.size),
            }],
            rings,
            lcores: self
                .lcores
                .iter()
                .map(|l| LcoreHealth {
                    lcore: l.lcore,
                    role: "forwarding".to_owned(),
                    busy_ratio: busy_ratio(&l.counters),
                })
                .collect(),
            vifs: Vec::new(),
            problems,
        })
    }

    fn flows(&self, q: &FlowQuery) -> Result<FlowPage, DataplaneError> {
        let vrf = q
            .vrf
            .map(|v| u16::try_from(v).map_err(|_| rejected(format!("vrf {v} is out of range"))))
            .transpose()?;
        let cursor = match &q.cursor {
            Some(c) => c
                .parse::<usize>()
                .map_err(|_| rejected(format!("cursor {c:?} is not one this API returned")))?,
            None => 0,
        };
        let limit = q.limit.unwrap_or(1000) as usize;
        let page = self.policies.table().flows(vrf, limit, cursor);
        let now = flow_clock_ms();
        Ok(FlowPage {
            flows: page.flows.iter().map(|f| flow_entry(f, now)).collect(),
            next_cursor: page.next.map(|n| n.to_string()),
        })
    }

    fn flush_flows(&self) -> Result<u64, DataplaneError> {
        Ok(self.policies.table().flush() as u64)
    }

    fn flow_stats(&self) -> Result<FlowStats, DataplaneError> {
        let s = self.policies.table().stats();
        Ok(FlowStats {
            capacity: s.capacity as u64,
            active: s.active as u64,
            created: s.created,
            aged: s.aged,
            evicted: s.evicted,
            table_full_drops: s.table_full,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn full_tables_are_507_table_full_naming_table_limit_and_remedy() {
        use vrouter::Error as E;
        let full = |e: E| {
            let d = table_err(e);
            assert_eq!(d.kind, DataplaneErrorKind::TableFull, "{}", d.message);
            assert_eq!((d.kind.status(), d.kind.code()), (507, "table-full"));
            d.message
        };
        let m = full(E::RouteTableFull {
            vrf: 3,
            family: "IPv6",
            limit: 16384,
        });
        assert!(
            m.starts_with("IPv6 route table of VRF 3 is full (limit 16384 trie groups)")
                && m.contains("--route-groups-v6"),
            "{m}"
        );
        let m = full(E::BridgeTableFull {
            vrf: 3,
            capacity: 4096,
        });
        assert!(
            m.starts_with("bridge table of VRF 3 is full (limit 4096 entries)")
                && m.contains("--bridge-entries"),
            "{m}"
        );
        let m = full(E::TableFull {
            table: "vxlan",
            capacity: 65536,
        });
        assert!(
            m.starts_with("vxlan table is full (limit 65536 entries)"),
            "{m}"
        );
        let m = full(E::NexthopOutOfRange {
            id: 70000,
            capacity: 65536,
        });
        assert!(
            m.starts_with("nexthop table is full (limit 65536 ids"),
            "{m}"
        );
        // Everything else stays a rejection.
        let d = table_err(E::NoSuchVrf(9));
        assert_eq!(d.kind, DataplaneErrorKind::Rejected);
    }
}
