//! Vifs' ports and sockets: opening them, handing their queues to the forwarding lcores and
//! taking them back.

use std::net::IpAddr;
use std::sync::atomic::Ordering;

use control_api::api::VhostUserMode;
use control_api::model::{device_name, kernel_device_iface};
use control_api::{
    DataplaneError, DataplaneErrorKind, DhcpSettings, VifKind as ApiVifKind, VifSpec,
};
use crossbeam::channel::bounded;
use pmd_shim::{EthPort, KernelPort, KernelPortConfig, KernelPortMonitor, Mempool, PortConfig};
use tracing::{info, warn};
use vrouter::stats::MAX_VIFS;
use vrouter::tables::{RouterAdvert, Vif, VifKind};
use vrouter::wire::dhcp::{self, Lease, Route};

use crate::lcore::{LcoreCmd, NO_OWNER};
use crate::vhost_core::{least_loaded, VhostCmd};

use super::{
    rejected, table_err, VifIo, VifRuntime, VrouterDataplane, JUMBO_DATA_ROOM, JUMBO_MBUFS,
    REPLY_TIMEOUT,
};

impl VrouterDataplane {
    pub(super) fn add_vif(&self, spec: &VifSpec) -> Result<(), DataplaneError> {
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
        let (mut io, kind, placed) = self.open_io(spec, index, mtu, lcore)?;
        // Hand the port's queues to the lcores before the vif appears in the tables.
        if let VifIo::Eth { port, per_lcore } = &mut io {
            self.hand_out_queues(spec, index, lcore, port, *per_lcore)?;
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
            mac: spec.mac,
            mtu,
        }) {
            drop(reg);
            self.release_io(index, &spec.name, io, placed.is_some());
            return Err(table_err(e));
        }
        // Its DHCP lease (validated by the controller: fits the lease's bounds), and for a pod
        // with an IPv6 address, router advertisements of its /64.
        let ra = match (kind, spec.ip6) {
            (VifKind::Pod, Some(ip6)) => Some(router_advert(ip6, spec.mac, mtu)),
            _ => None,
        };
        let addressing = self
            .tables
            .set_dhcp(index, spec.dhcp.as_ref().map(|d| lease(d, mtu)))
            .and_then(|()| self.tables.set_ra(index, ra));
        if let Err(e) = addressing {
            drop(reg);
            let _ = self.tables.del_vif(index);
            self.release_io(index, &spec.name, io, placed.is_some());
            return Err(table_err(e));
        }
        // A vhost-user vif's queue pairs are counted by the vhost core as they come up.
        if !matches!(io, VifIo::Vhost) {
            if let Some(load) = placed.and_then(|l| reg.load.get(usize::from(l))) {
                load.fetch_add(1, Ordering::Relaxed);
            }
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

    /// Opens what carries the vif's packets (a vhost-user socket on the vhost core, a DPDK
    /// port, a kernel socket on lcore `lcore`): the I/O, the vif's kind in the tables, and the
    /// lcore that owns it (none for a DPDK fabric port, polled by every lcore).
    fn open_io(
        &self,
        spec: &VifSpec,
        index: u16,
        mtu: u16,
        lcore: u8,
    ) -> Result<(VifIo, VifKind, Option<u8>), DataplaneError> {
        Ok(match &spec.kind {
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
                if let Some(iface) = kernel_device_iface(device) {
                    // A fabric on a kernel interface: one socket, so one lcore polls it and
                    // the others hand it their packets through that lcore's ring.
                    let port = open_kernel(iface, &self.pool, mtu)?;
                    // The kernel refuses to send frames beyond the interface's MTU: a
                    // fabric vif larger than it would lose every large tunnel packet.
                    let have = port.monitor().mtu().unwrap_or(0);
                    if have < u32::from(mtu) {
                        return Err(rejected(format!(
                            "interface {iface} has MTU {have}, less than the vif's {mtu}: \
                             raise it (ip link set {iface} mtu {mtu}) or lower the vif's"
                        )));
                    }
                    let monitor = self.attach_kernel(port, index, mtu, lcore)?;
                    return Ok((VifIo::Kernel { monitor }, VifKind::Physical, Some(lcore)));
                }
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
                let port = open_kernel(iface, &self.pool, mtu)?;
                let monitor = self.attach_kernel(port, index, mtu, lcore)?;
                (VifIo::Kernel { monitor }, VifKind::Pod, Some(lcore))
            }
            ApiVifKind::Tap { iface } => {
                // Named after the vif index, so it can never collide with another vif's
                // device (or a --fabric vdev).
                // With the vif's MAC (vhost0: the fabric's): the kernel's side takes it.
                let devargs = format!("net_tap_vif{index},iface={iface},mac={}", spec.mac);
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
        })
    }

    /// Hands kernel port `port` of vif `index` to lcore `lcore`, which polls it and transmits
    /// on it.
    fn attach_kernel(
        &self,
        port: KernelPort,
        index: u16,
        mtu: u16,
        lcore: u8,
    ) -> Result<KernelPortMonitor, DataplaneError> {
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
        Ok(monitor)
    }

    /// Starts a DPDK port and gives its queues out: one pair to every lcore for a fabric port,
    /// the one pair to `lcore` otherwise.
    fn hand_out_queues(
        &self,
        spec: &VifSpec,
        index: u16,
        lcore: u8,
        port: &mut EthPort,
        per_lcore: bool,
    ) -> Result<(), DataplaneError> {
        // A port that did not start is closed as it is dropped: nothing to take back.
        let queues = port
            .start()
            .map_err(|e| rejected(format!("starting {}: {e}", spec.name)))?;
        if per_lcore {
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
        Ok(())
    }

    /// Opens and configures a DPDK port for a vif of `mtu`, with the device's TX offloads on.
    /// A device that cannot receive MTU-sized frames into the packet pool's buffers, nor spread
    /// them over several, gets its own pool of large buffers; an MTU beyond the device's is
    /// refused, naming its limit.
    pub(super) fn open_port(
        &self,
        devargs: &str,
        queues: u16,
        mtu: u16,
    ) -> Result<EthPort, DataplaneError> {
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

    pub(super) fn jumbo_pool(&self) -> Result<&Mempool, DataplaneError> {
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

    pub(super) fn del_vif(&self, spec: &VifSpec) -> Result<(), DataplaneError> {
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
        if !matches!(rt.io, VifIo::Vhost) {
            if let Some(l) = rt.lcore.and_then(|l| reg.load.get(usize::from(l))) {
                let _ = l.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_sub(1));
            }
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
    /// Asks every lcore to let go of vif `index`'s queues and waits for each to confirm; one
    /// that does not within the reply timeout is named in a warning about `what`.
    fn detach_from_lcores(&self, index: u16, name: &str, what: &str) {
        for l in &self.lcores {
            let (reply, answer) = bounded(1);
            if l.commands
                .send(LcoreCmd::DetachVif { vif: index, reply })
                .is_ok()
                && answer.recv_timeout(REPLY_TIMEOUT).is_err()
            {
                warn!(vif = %name, lcore = l.lcore, "lcore did not release {what}");
            }
        }
    }

    pub(super) fn release_io(&self, index: u16, name: &str, io: VifIo, owned: bool) {
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
                self.detach_from_lcores(index, name, "the port's queues");
                if let Err(e) = port.stop() {
                    warn!(vif = %name, "stopping port: {e}");
                }
                drop(port);
            }
            VifIo::Kernel { monitor } => {
                self.detach_from_lcores(index, name, "the interface");
                // The socket closes with the monitor, after this last read of its drops.
                self.kernel_drops_retired
                    .fetch_add(monitor.stats().rx_ring_full, Ordering::Relaxed);
            }
        }
    }
}

/// Opens kernel interface `iface` for a vif of `mtu`, its frames copied into `pool`'s mbufs. Our
/// own AF_PACKET port rather than DPDK's net_af_packet: it keeps the kernel's offload header,
/// without which a pod's TCP (partial checksums, 64 KB segments) does not survive the trip, and
/// takes frames of any MTU.
fn open_kernel(iface: &str, pool: &Mempool, mtu: u16) -> Result<KernelPort, DataplaneError> {
    KernelPort::open(iface, pool, &KernelPortConfig::for_mtu(mtu))
        .map_err(|e| rejected(e.to_string()))
}

/// What the forwarding plane hands out by DHCP for a vif: its settings, and its MTU.
fn lease(d: &DhcpSettings, mtu: u16) -> Lease {
    Lease {
        address: d.address,
        prefix_len: d.prefix_len,
        gateway: d.gateway,
        dns: d.dns_servers.iter().copied().take(dhcp::MAX_DNS).collect(),
        mtu: Some(mtu),
        routes: d
            .static_routes
            .iter()
            .take(dhcp::MAX_ROUTES)
            .map(|&(prefix, len, router)| Route {
                prefix,
                len,
                router,
            })
            .collect(),
        lease_time: d.lease_time,
    }
}

/// What a pod vif with IPv6 address `ip6` advertises: `ip6`'s /64, autonomous (the pod makes
/// its address there itself) when `ip6` is the address made from the pod's MAC by modified
/// EUI-64, as Linux does by default; otherwise on-link only (the pod's address is given it
/// another way).
fn router_advert(
    ip6: std::net::Ipv6Addr,
    mac: control_api::api::MacAddr,
    mtu: u16,
) -> RouterAdvert {
    let o = ip6.octets();
    let mut prefix = [0u8; 16];
    prefix[..8].copy_from_slice(&o[..8]);
    let eui = vrouter::pipeline::reply::link_local(mac).octets();
    RouterAdvert {
        prefix: std::net::Ipv6Addr::from(prefix),
        autonomous: o[8..] == eui[8..],
        mtu,
    }
}
