//! Ethernet ports: open (hotplug) by PCI address or vdev string, configure queues with RSS,
//! start/stop/close, and per-queue burst handles.

use std::ffi::CString;
use std::sync::Arc;

use crate::burst::{MbufBurst, BURST_MAX};
use crate::eal::{last_errno, Eal};
use crate::error::{DpdkErrno, Error, Result};
use crate::mbuf::Mbuf;
use crate::mempool::{c_text, Mempool};
use crate::sys;

/// How to set a port up.
#[derive(Debug, Clone)]
pub struct PortConfig {
    pub rx_queues: u16,
    pub tx_queues: u16,
    pub rx_descriptors: u16,
    pub tx_descriptors: u16,
    /// Spread RX over the queues by an IP/UDP/TCP hash (when there is more than one queue and
    /// the device supports it).
    pub rss: bool,
    /// Put the port in promiscuous mode (a fabric port receiving for many MACs wants this).
    pub promiscuous: bool,
    /// The device's MTU (0: leave the driver's default). Frames longer than one mbuf are
    /// received over several where the device can scatter; where it cannot, configuring fails
    /// with [`Error::RxBuffersTooSmall`] and needs a pool of larger buffers.
    pub mtu: u16,
    /// Enable the device's checksum, TSO and tunnel TSO offloads (what it has of them: see
    /// [`EthPort::tx_offloads`]).
    pub tx_offloads: bool,
}

impl Default for PortConfig {
    fn default() -> Self {
        PortConfig {
            rx_queues: 1,
            tx_queues: 1,
            rx_descriptors: 1024,
            tx_descriptors: 1024,
            rss: true,
            promiscuous: false,
            mtu: 0,
            tx_offloads: false,
        }
    }
}

/// TX offloads a configured port has enabled (`RTE_ETH_TX_OFFLOAD_*` bits).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct TxOffloads(pub u64);

impl TxOffloads {
    fn has(self, bits: u32) -> bool {
        let bits = u64::from(bits);
        self.0 & bits == bits
    }
    /// Sends chained mbufs.
    pub fn multi_seg(self) -> bool {
        self.has(sys::VR_TX_OFFLOAD_MULTI_SEGS)
    }
    /// Completes TCP and UDP checksums (and the IPv4 header's).
    pub fn l4_csum(self) -> bool {
        self.has(
            sys::VR_TX_OFFLOAD_TCP_CKSUM
                | sys::VR_TX_OFFLOAD_UDP_CKSUM
                | sys::VR_TX_OFFLOAD_IPV4_CKSUM,
        )
    }
    /// Segments TCP.
    pub fn tso(self) -> bool {
        self.has(sys::VR_TX_OFFLOAD_TCP_TSO)
    }
    /// Segments UDP.
    pub fn uso(self) -> bool {
        self.has(sys::VR_TX_OFFLOAD_UDP_TSO)
    }
    /// Checksums and segments inside VXLAN, GRE and generic UDP tunnels, outer IPv4 included.
    pub fn tunnels(self) -> bool {
        self.has(
            sys::VR_TX_OFFLOAD_OUTER_IPV4_CKSUM
                | sys::VR_TX_OFFLOAD_VXLAN_TNL_TSO
                | sys::VR_TX_OFFLOAD_GRE_TNL_TSO
                | sys::VR_TX_OFFLOAD_UDP_TNL_TSO,
        )
    }
}

/// Link state as the driver reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LinkStatus {
    pub up: bool,
    pub speed_mbps: u32,
    pub full_duplex: bool,
}

/// The basic counters of a port.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PortStats {
    pub rx_packets: u64,
    pub tx_packets: u64,
    pub rx_bytes: u64,
    pub tx_bytes: u64,
    pub rx_missed: u64,
    pub rx_errors: u64,
    pub tx_errors: u64,
    pub rx_no_mbuf: u64,
}

/// A DPDK ethdev port. Closed (and hot-unplugged, if this handle probed it) when the port handle
/// and every queue handle taken from it are gone.
pub struct EthPort {
    inner: Arc<PortInner>,
}

struct PortInner {
    id: u16,
    name: String,
    /// (bus, device name) if we hot-plugged the device and must remove it on close.
    hotplug: Option<(&'static str, String)>,
    started: std::sync::atomic::AtomicBool,
    rx_queues: u16,
    tx_queues: u16,
    /// RX descriptors hold mbufs of this pool; it must outlive the port.
    _mempool: Option<Mempool>,
    /// The TX offloads enabled at configuration (`RTE_ETH_TX_OFFLOAD_*` bits).
    tx_offloads: u64,
    _eal: Eal,
}

impl EthPort {
    /// Opens a device: a PCI address (`0000:03:00.1`, bound to vfio) or a vdev string
    /// (`net_ring0`, `net_af_packet0,iface=veth0`, `net_tap0,iface=vr0`). A device that already
    /// exists (given to EAL with `--vdev`/`-a`) is attached rather than probed again.
    pub fn open(eal: &Eal, devargs: &str) -> Result<EthPort> {
        let name = devargs.split(',').next().unwrap_or("").trim().to_owned();
        if name.is_empty() {
            return Err(Error::InvalidName {
                what: "device",
                name: devargs.to_owned(),
                why: "empty device name",
            });
        }
        if let Some(id) = port_id_by_name(&name)? {
            return Ok(Self::wrap(eal, id, name, None));
        }
        let c_args = CString::new(devargs).map_err(|_| Error::InvalidName {
            what: "device",
            name: devargs.to_owned(),
            why: "contains NUL",
        })?;
        // SAFETY: EAL is initialised (we hold `eal`); devargs is a valid C string.
        let ret = unsafe { sys::rte_dev_probe(c_args.as_ptr()) };
        if ret < 0 {
            return Err(Error::DeviceProbe {
                devargs: devargs.to_owned(),
                errno: DpdkErrno(-ret),
            });
        }
        let bus = if looks_like_pci(&name) { "pci" } else { "vdev" };
        let id = port_id_by_name(&name)?.ok_or_else(|| Error::PortNotFound(name.clone()))?;
        Ok(Self::wrap(eal, id, name.clone(), Some((bus, name))))
    }

    fn wrap(eal: &Eal, id: u16, name: String, hotplug: Option<(&'static str, String)>) -> EthPort {
        EthPort {
            inner: Arc::new(PortInner {
                id,
                name,
                hotplug,
                started: std::sync::atomic::AtomicBool::new(false),
                rx_queues: 0,
                tx_queues: 0,
                _mempool: None,
                tx_offloads: 0,
                _eal: eal.clone(),
            }),
        }
    }

    pub fn id(&self) -> u16 {
        self.inner.id
    }

    pub fn name(&self) -> &str {
        &self.inner.name
    }

    /// Configures queues and their descriptors; RX buffers come from `mempool`.
    pub fn configure(&mut self, cfg: &PortConfig, mempool: &Mempool) -> Result<()> {
        let inner = self.exclusive("configure")?;
        if inner.started.load(std::sync::atomic::Ordering::Acquire) {
            return Err(usage(inner, "configure needs a stopped port"));
        }
        if cfg.rx_queues == 0 || cfg.tx_queues == 0 {
            return Err(usage(inner, "at least one RX and one TX queue are needed"));
        }
        let id = inner.id;
        let mut setup = sys::vr_eth_setup::default();
        let room = mempool
            .data_room()
            .saturating_sub(sys::RTE_PKTMBUF_HEADROOM as u16);
        // SAFETY: valid port id; the port is stopped and nobody polls it (no queue handles);
        // `setup` is ours to fill.
        let ret = unsafe {
            sys::vr_eth_configure(
                id,
                cfg.rx_queues,
                cfg.tx_queues,
                cfg.rss.into(),
                cfg.mtu,
                room,
                cfg.tx_offloads.into(),
                &mut setup,
            )
        };
        if ret == -libc::EMSGSIZE {
            return Err(Error::MtuTooBig {
                port: id,
                name: inner.name.clone(),
                mtu: cfg.mtu,
                max_mtu: setup
                    .max_mtu
                    .min(u16::try_from(setup.max_rx_frame.saturating_sub(18)).unwrap_or(u16::MAX)),
            });
        }
        if ret == -libc::ENOBUFS {
            return Err(Error::RxBuffersTooSmall {
                port: id,
                name: inner.name.clone(),
                mtu: cfg.mtu,
                room,
            });
        }
        check(inner, "rte_eth_dev_configure", ret)?;
        inner.tx_offloads = setup.tx_offloads;
        // SAFETY: valid port id.
        let socket = unsafe { sys::rte_eth_dev_socket_id(id) };
        let socket = if socket < 0 { 0 } else { socket as u32 };
        for q in 0..cfg.rx_queues {
            // SAFETY: configured port; NULL rx_conf means the driver defaults; the mempool stays
            // alive as long as the port (kept in `_mempool`).
            let ret = unsafe {
                sys::rte_eth_rx_queue_setup(
                    id,
                    q,
                    cfg.rx_descriptors,
                    socket,
                    std::ptr::null(),
                    mempool.as_ptr(),
                )
            };
            check(inner, "rte_eth_rx_queue_setup", ret)?;
        }
        for q in 0..cfg.tx_queues {
            // SAFETY: configured port; NULL tx_conf means the driver defaults.
            let ret = unsafe {
                sys::rte_eth_tx_queue_setup(id, q, cfg.tx_descriptors, socket, std::ptr::null())
            };
            check(inner, "rte_eth_tx_queue_setup", ret)?;
        }
        if cfg.promiscuous {
            // SAFETY: valid configured port. Not every vdev supports it; failure is harmless.
            unsafe { sys::rte_eth_promiscuous_enable(id) };
        }
        inner.rx_queues = cfg.rx_queues;
        inner.tx_queues = cfg.tx_queues;
        inner._mempool = Some(mempool.clone());
        Ok(())
    }

    /// Starts the port and hands out one handle per RX and TX queue (each queue must be polled
    /// by one thread only, which owning its handle guarantees).
    pub fn start(&mut self) -> Result<PortQueues> {
        let inner = self.exclusive("start")?;
        if inner.rx_queues == 0 {
            return Err(usage(inner, "start needs a configured port"));
        }
        if !inner.started.load(std::sync::atomic::Ordering::Acquire) {
            // SAFETY: configured port, no concurrent users.
            let ret = unsafe { sys::rte_eth_dev_start(inner.id) };
            check(inner, "rte_eth_dev_start", ret)?;
            inner
                .started
                .store(true, std::sync::atomic::Ordering::Release);
        }
        let (rx_queues, tx_queues) = (inner.rx_queues, inner.tx_queues);
        let rx = (0..rx_queues)
            .map(|queue| RxQueue {
                port: Arc::clone(&self.inner),
                queue,
            })
            .collect();
        let tx = (0..tx_queues)
            .map(|queue| TxQueue {
                port: Arc::clone(&self.inner),
                queue,
            })
            .collect();
        Ok(PortQueues { rx, tx })
    }

    /// Stops the port. Every queue handle must have been dropped first.
    pub fn stop(&mut self) -> Result<()> {
        let inner = self.exclusive("stop")?;
        if inner
            .started
            .swap(false, std::sync::atomic::Ordering::AcqRel)
        {
            // SAFETY: started port with no queue handles, so nobody is polling it.
            let ret = unsafe { sys::rte_eth_dev_stop(inner.id) };
            check(inner, "rte_eth_dev_stop", ret)?;
        }
        Ok(())
    }

    /// The TX offloads enabled at configuration: what the device finishes itself.
    pub fn tx_offloads(&self) -> TxOffloads {
        TxOffloads(self.inner.tx_offloads)
    }

    /// The port's MAC address.
    pub fn mac(&self) -> Result<[u8; 6]> {
        let mut addr = sys::rte_ether_addr::default();
        // SAFETY: valid port id and a valid out pointer.
        let ret = unsafe { sys::rte_eth_macaddr_get(self.inner.id, &mut addr) };
        check(&self.inner, "rte_eth_macaddr_get", ret)?;
        Ok(addr.addr_bytes)
    }

    pub fn link(&self) -> Result<LinkStatus> {
        let (mut speed, mut up, mut fd) = (0u32, 0i32, 0i32);
        // SAFETY: valid port id and valid out pointers.
        let ret = unsafe { sys::vr_eth_link(self.inner.id, &mut speed, &mut up, &mut fd) };
        check(&self.inner, "rte_eth_link_get_nowait", ret)?;
        Ok(LinkStatus {
            up: up != 0,
            speed_mbps: speed,
            full_duplex: fd != 0,
        })
    }

    pub fn stats(&self) -> Result<PortStats> {
        let mut s = sys::rte_eth_stats::default();
        // SAFETY: valid port id and a valid out pointer.
        let ret = unsafe { sys::rte_eth_stats_get(self.inner.id, &mut s) };
        check(&self.inner, "rte_eth_stats_get", ret)?;
        Ok(PortStats {
            rx_packets: s.ipackets,
            tx_packets: s.opackets,
            rx_bytes: s.ibytes,
            tx_bytes: s.obytes,
            rx_missed: s.imissed,
            rx_errors: s.ierrors,
            tx_errors: s.oerrors,
            rx_no_mbuf: s.rx_nombuf,
        })
    }

    /// Every extended statistic the driver offers, by name.
    pub fn xstats(&self) -> Result<Vec<(String, u64)>> {
        let id = self.inner.id;
        // SAFETY: valid port id; a NULL array with n = 0 asks for the count.
        let n = unsafe { sys::rte_eth_xstats_get_names(id, std::ptr::null_mut(), 0) };
        let n =
            usize::try_from(n).map_err(|_| port_err(&self.inner, "rte_eth_xstats_get_names", n))?;
        let mut names = vec![sys::rte_eth_xstat_name::default(); n];
        let mut values = vec![sys::rte_eth_xstat::default(); n];
        // SAFETY: both arrays have room for n entries.
        let got_names = unsafe { sys::rte_eth_xstats_get_names(id, names.as_mut_ptr(), n as u32) };
        // SAFETY: as above.
        let got_values = unsafe { sys::rte_eth_xstats_get(id, values.as_mut_ptr(), n as u32) };
        if got_names < 0 || got_values < 0 {
            return Err(port_err(
                &self.inner,
                "rte_eth_xstats_get",
                got_names.min(got_values),
            ));
        }
        let count = n.min(got_names as usize).min(got_values as usize);
        Ok(values[..count]
            .iter()
            .filter_map(|v| {
                let name = names.get(usize::try_from(v.id).ok()?)?;
                Some((c_text(&name.name), v.value))
            })
            .collect())
    }

    fn exclusive(&mut self, op: &str) -> Result<&mut PortInner> {
        let (id, name) = (self.inner.id, self.inner.name.clone());
        Arc::get_mut(&mut self.inner).ok_or_else(|| Error::PortUsage {
            port: id,
            name,
            why: format!("{op} needs every queue handle of the port to be dropped first"),
        })
    }
}

impl std::fmt::Debug for EthPort {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EthPort")
            .field("id", &self.inner.id)
            .field("name", &self.inner.name)
            .finish()
    }
}

impl Drop for PortInner {
    fn drop(&mut self) {
        if *self.started.get_mut() {
            // SAFETY: last reference: no queue handle exists, nobody polls the port.
            unsafe { sys::rte_eth_dev_stop(self.id) };
        }
        // SAFETY: last reference; the port is stopped; its mempool (`_mempool`) is still alive
        // while the driver frees its RX descriptors.
        unsafe { sys::rte_eth_dev_close(self.id) };
        if let Some((bus, dev)) = &self.hotplug {
            if let (Ok(bus), Ok(dev)) = (CString::new(*bus), CString::new(dev.as_str())) {
                // SAFETY: valid C strings; the device's only port was just closed.
                unsafe { sys::rte_eal_hotplug_remove(bus.as_ptr(), dev.as_ptr()) };
            }
        }
    }
}

/// The queue handles of a started port.
#[derive(Debug)]
pub struct PortQueues {
    pub rx: Vec<RxQueue>,
    pub tx: Vec<TxQueue>,
}

/// One RX queue; owning it is the right to poll it.
pub struct RxQueue {
    port: Arc<PortInner>,
    queue: u16,
}

// The queue handle is deliberately not Clone: DPDK queues are single-consumer.
impl RxQueue {
    /// Receives into the free slots of `burst`; returns how many arrived. No allocation.
    #[inline]
    pub fn rx_burst(&mut self, burst: &mut MbufBurst) -> usize {
        let room = burst.room().min(BURST_MAX) as u16;
        if room == 0 {
            return 0;
        }
        // SAFETY: started port (queue handles exist only while started); this handle is the only
        // poller of the queue; the slots have room for `room` pointers.
        let n =
            unsafe { sys::vr_eth_rx_burst(self.port.id, self.queue, burst.raw_free_slots(), room) };
        // SAFETY: DPDK wrote n owned mbuf pointers into the free slots.
        unsafe { burst.filled(usize::from(n)) };
        usize::from(n)
    }

    pub fn port_id(&self) -> u16 {
        self.port.id
    }

    pub fn queue_id(&self) -> u16 {
        self.queue
    }
}

/// One TX queue; owning it is the right to send on it.
pub struct TxQueue {
    port: Arc<PortInner>,
    queue: u16,
}

impl TxQueue {
    /// The TX offloads the port's device finishes itself.
    pub fn offloads(&self) -> TxOffloads {
        TxOffloads(self.port.tx_offloads)
    }

    /// Fixes up what the device needs for the offloads `m` asks of it (pseudo-header checksums
    /// and the like; `rte_eth_tx_prepare`). False: the device cannot send it as asked.
    pub fn tx_prepare(&mut self, m: &mut Mbuf) -> bool {
        let mut raw = m.as_raw_ptr();
        // SAFETY: started port; this handle is the only sender on the queue; `raw` is one owned
        // mbuf, which tx_prepare edits in place and does not free.
        unsafe { sys::vr_eth_tx_prepare(self.port.id, self.queue, &mut raw, 1) == 1 }
    }

    /// Sends from the front of `burst`; returns how many the driver took. Unsent mbufs stay in
    /// `burst` (the caller retries or frees them).
    #[inline]
    pub fn tx_burst(&mut self, burst: &mut MbufBurst) -> usize {
        if burst.is_empty() {
            return 0;
        }
        let len = burst.len() as u16;
        // SAFETY: started port; this handle is the only sender on the queue; the first `len`
        // slots are owned mbufs.
        let n = unsafe { sys::vr_eth_tx_burst(self.port.id, self.queue, burst.raw_slots(), len) };
        // SAFETY: the driver took ownership of the first n mbufs.
        unsafe { burst.consumed_front(usize::from(n)) };
        usize::from(n)
    }

    pub fn port_id(&self) -> u16 {
        self.port.id
    }

    pub fn queue_id(&self) -> u16 {
        self.queue
    }
}

impl std::fmt::Debug for RxQueue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "RxQueue({}:{})", self.port.name, self.queue)
    }
}

impl std::fmt::Debug for TxQueue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "TxQueue({}:{})", self.port.name, self.queue)
    }
}

fn port_id_by_name(name: &str) -> Result<Option<u16>> {
    let c_name = CString::new(name).map_err(|_| Error::InvalidName {
        what: "device",
        name: name.to_owned(),
        why: "contains NUL",
    })?;
    let mut id = 0u16;
    // SAFETY: valid C string and out pointer.
    let ret = unsafe { sys::rte_eth_dev_get_port_by_name(c_name.as_ptr(), &mut id) };
    Ok((ret == 0).then_some(id))
}

fn looks_like_pci(name: &str) -> bool {
    // dddd:bb:dd.f or bb:dd.f
    let parts: Vec<&str> = name.split([':', '.']).collect();
    (parts.len() == 4 || parts.len() == 3)
        && parts
            .iter()
            .all(|p| p.chars().all(|c| c.is_ascii_hexdigit()))
}

fn check(inner: &PortInner, op: &'static str, ret: i32) -> Result<()> {
    if ret < 0 {
        Err(port_err(inner, op, ret))
    } else {
        Ok(())
    }
}

fn port_err(inner: &PortInner, op: &'static str, ret: i32) -> Error {
    let errno = if ret < 0 {
        DpdkErrno(-ret)
    } else {
        last_errno()
    };
    Error::Port {
        port: inner.id,
        name: inner.name.clone(),
        op,
        errno,
    }
}

fn usage(inner: &PortInner, why: &str) -> Error {
    Error::PortUsage {
        port: inner.id,
        name: inner.name.clone(),
        why: why.to_owned(),
    }
}
