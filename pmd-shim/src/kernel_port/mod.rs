//! A kernel network interface (a pod's veth, a tap, a NIC the kernel drives) as a port that
//! keeps the kernel's per-packet offload metadata instead of dropping it.
//!
//! An AF_PACKET socket bound to the interface in the caller's network namespace, with
//! `PACKET_VNET_HDR`: every frame the kernel hands over comes with a virtio-net header saying
//! whether its transport checksum is partial (only the pseudo-header sum is in the field, as
//! the kernel leaves it for offload) and whether it is a GSO packet (up to 64 KB, to be cut into
//! segments of `gso_size`); every frame we send carries one telling the kernel what is left to
//! finish. DPDK's `net_af_packet` has no such header: it passes partial checksums on as if
//! complete and truncates the big frames, which breaks TCP with a veth's default offloads.
//!
//! Receive ([`rx`]): a TPACKET_V2 ring of fixed-size slots shared with the kernel
//! ([`ring`]), each handed over the moment its frame is written, so a lone frame waits for
//! nothing (TPACKET_V3's blocks are handed over when full or after a timer of at least a
//! millisecond, which made every round trip through the port a millisecond or more). A frame
//! too long for a slot is kept whole in the socket's receive queue (`PACKET_COPY_THRESH`) and
//! read from there when its slot comes up. Transmit ([`tx`]): `sendmmsg` with an iovec per
//! mbuf segment.
//!
//! Non-blocking throughout, no allocation per packet, bursts bounded by [`BURST_MAX`], errors
//! counted ([`KernelPortStats`]) rather than raised, and every offset and length the kernel
//! writes in the ring is checked against its slot before anything is read through it.

mod ring;
mod rx;
mod tx;

use std::ffi::CString;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

pub use rx::{KernelRx, QUEUED_FRAME_MAX};
pub use tx::KernelTx;
use virtio_net_hdr::NetHdr;

use crate::burst::{MbufBurst, BURST_MAX};
use crate::error::{Error, Result};
use crate::mbuf::Mbuf;
use crate::mempool::Mempool;
use ring::{RxRing, SLOT_OVERHEAD, TPACKET_V2};

/// How to open a [`KernelPort`].
#[derive(Debug, Clone)]
pub struct KernelPortConfig {
    /// Bytes per receive ring slot, a power of two from 2 KiB to 64 KiB: frames up to this
    /// less 76 bytes come through the ring, longer ones through the socket's receive queue
    /// (one system call each). [`KernelPortConfig::for_mtu`] picks it for an MTU.
    pub slot_size: u32,
    /// Bytes of the receive ring (default 4 MiB: 2048 slots of 2 KiB).
    pub ring_bytes: u32,
    /// Send straight to the driver, past the interface's queueing discipline and the kernel's
    /// packet taps (a capture on the interface then does not see what we send).
    pub qdisc_bypass: bool,
    /// Receive every frame the interface sees, whatever its destination MAC.
    pub promiscuous: bool,
    /// Socket send buffer: how many bytes of sent packets the kernel may hold before sends
    /// report the port busy.
    pub sndbuf: u32,
    /// Socket receive buffer: how many bytes of frames too long for a slot the kernel may keep
    /// whole for us; beyond it they are cut short (and dropped). Only frames waiting count, so
    /// the default 16 MiB (a few milliseconds of a pod's TCP at full speed, for a forwarding
    /// core that was preempted) costs nothing while the port keeps up.
    pub rcvbuf: u32,
}

impl Default for KernelPortConfig {
    fn default() -> Self {
        KernelPortConfig {
            slot_size: 2048,
            ring_bytes: 4 << 20,
            qdisc_bypass: false,
            promiscuous: true,
            sndbuf: 4 << 20,
            rcvbuf: 16 << 20,
        }
    }
}

impl KernelPortConfig {
    /// The default with slots that hold a full frame of an interface of this MTU (a VLAN tag
    /// included), so that only GSO packets take the slower way through the receive queue.
    pub fn for_mtu(mtu: u16) -> KernelPortConfig {
        let frame = usize::from(mtu) + 14 + 4;
        let slot = (SLOT_OVERHEAD + frame)
            .next_power_of_two()
            .clamp(2048, 64 << 10);
        KernelPortConfig {
            slot_size: slot as u32,
            ..KernelPortConfig::default()
        }
    }
}

/// Counters of one port; sums since it was opened.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct KernelPortStats {
    /// Frames delivered into mbufs, and their bytes.
    pub rx_packets: u64,
    pub rx_bytes: u64,
    /// Frames the kernel cut short (longer than a ring slot with no room left in the socket to
    /// keep them whole, or longer than [`QUEUED_FRAME_MAX`]), dropped.
    pub rx_truncated: u64,
    /// Frames whose ring slot did not add up (offsets outside the slot), dropped.
    pub rx_malformed: u64,
    /// Frames dropped because the pool had no mbuf left for them.
    pub rx_no_mbuf: u64,
    /// Frames the kernel dropped because the ring was full (read from the socket).
    pub rx_ring_full: u64,
    /// Packets the kernel took, and their bytes (virtio-net headers not counted).
    pub tx_packets: u64,
    pub tx_bytes: u64,
    /// Packets not sent because the socket's send buffer was full or the interface dropped
    /// them.
    pub tx_busy: u64,
    /// Packets the kernel refused (a header that does not match the frame, a frame too long
    /// for the MTU, the interface gone).
    pub tx_rejected: u64,
}

/// What one [`KernelRx::rx_burst`] did besides delivering frames: the drops, by cause.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RxBurst {
    pub received: usize,
    pub truncated: u32,
    pub malformed: u32,
    pub no_mbuf: u32,
}

/// What one [`KernelTx::tx_burst`] did with the packets it was given.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TxBurst {
    pub sent: usize,
    /// Frame bytes of the packets sent (virtio-net headers not counted).
    pub bytes: u64,
    pub busy: usize,
    pub rejected: usize,
}

/// One counter with a single writer: a relaxed load and store, no locked instruction.
#[derive(Debug, Default)]
pub(super) struct Counter(AtomicU64);

impl Counter {
    pub(super) fn add(&self, n: u64) {
        if n != 0 {
            self.0.store(
                self.0.load(Ordering::Relaxed).wrapping_add(n),
                Ordering::Relaxed,
            );
        }
    }
    fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

#[derive(Debug, Default)]
pub(super) struct Counters {
    pub(super) rx_packets: Counter,
    pub(super) rx_bytes: Counter,
    pub(super) rx_truncated: Counter,
    pub(super) rx_malformed: Counter,
    pub(super) rx_no_mbuf: Counter,
    pub(super) tx_packets: Counter,
    pub(super) tx_bytes: Counter,
    pub(super) tx_busy: Counter,
    pub(super) tx_rejected: Counter,
    /// Added to by every reader of the kernel's clear-on-read statistics (hence a real atomic
    /// add: two readers may run at once).
    rx_ring_full: AtomicU64,
}

/// The socket and what both halves and the monitor share; the socket closes when the last of
/// them goes.
#[derive(Debug)]
pub(super) struct Shared {
    pub(super) fd: OwnedFd,
    iface: String,
    ifindex: u32,
    pub(super) counters: Counters,
}

/// An open kernel port: its receive and transmit halves (see [`KernelPort::split`]).
#[derive(Debug)]
pub struct KernelPort {
    rx: KernelRx,
    tx: KernelTx,
}

/// Ring blocks: the kernel allocates each as one piece of contiguous memory, so they stay
/// small; a slot larger than this gets a block of its own size.
const BLOCK_BYTES: u32 = 64 << 10;

impl KernelPort {
    /// Opens interface `iface` of the caller's network namespace; received frames are copied
    /// into mbufs from `pool`.
    pub fn open(iface: &str, pool: &Mempool, cfg: &KernelPortConfig) -> Result<KernelPort> {
        let err = |op: &'static str, source: io::Error| Error::KernelPort {
            iface: iface.to_owned(),
            op,
            source,
        };
        let bad = |why: &'static str| err("configuration", io::Error::other(why));
        if !cfg.slot_size.is_power_of_two() || !(2048..=64 << 10).contains(&cfg.slot_size) {
            return Err(bad(
                "the slot size must be a power of two from 2 KiB to 64 KiB",
            ));
        }
        let page = page_size() as u32;
        let block_size = BLOCK_BYTES.max(cfg.slot_size).next_multiple_of(page);
        let blocks = cfg.ring_bytes / block_size;
        if blocks == 0 {
            return Err(bad("the ring must hold at least one block of 64 KiB"));
        }
        let name = CString::new(iface).map_err(|_| bad("the interface name contains NUL"))?;
        if iface.is_empty() || iface.len() >= libc::IFNAMSIZ {
            return Err(bad("interface names are 1 to 15 bytes"));
        }
        // SAFETY: a valid C string; the call only reads it.
        let ifindex = unsafe { libc::if_nametoindex(name.as_ptr()) };
        if ifindex == 0 {
            return Err(err("looking up the interface", io::Error::last_os_error()));
        }
        // Protocol 0: nothing is received before the bind below names the interface.
        // SAFETY: plain system call; a non-negative result is a new descriptor we own.
        let raw = unsafe {
            libc::socket(
                libc::AF_PACKET,
                libc::SOCK_RAW | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
                0,
            )
        };
        if raw < 0 {
            return Err(err("socket(AF_PACKET)", io::Error::last_os_error()));
        }
        // SAFETY: `raw` is an open descriptor nobody else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        let one: libc::c_int = 1;
        // The header must be asked for before the ring exists (the kernel refuses it after).
        setsockopt(&fd, libc::SOL_PACKET, libc::PACKET_VNET_HDR, &one)
            .map_err(|e| err("PACKET_VNET_HDR", e))?;
        setsockopt(&fd, libc::SOL_PACKET, libc::PACKET_VERSION, &TPACKET_V2)
            .map_err(|e| err("PACKET_VERSION", e))?;
        // Frames too long for a slot are kept whole in the receive queue for us to read.
        setsockopt(&fd, libc::SOL_PACKET, libc::PACKET_COPY_THRESH, &one)
            .map_err(|e| err("PACKET_COPY_THRESH", e))?;
        // What we send is not received back.
        setsockopt(&fd, libc::SOL_PACKET, libc::PACKET_IGNORE_OUTGOING, &one)
            .map_err(|e| err("PACKET_IGNORE_OUTGOING", e))?;
        if cfg.qdisc_bypass {
            setsockopt(&fd, libc::SOL_PACKET, libc::PACKET_QDISC_BYPASS, &one)
                .map_err(|e| err("PACKET_QDISC_BYPASS", e))?;
        }
        // Beyond net.core.{w,r}mem_max needs CAP_NET_ADMIN; without it the capped size serves.
        for (force, plain, bytes, what) in [
            (
                libc::SO_SNDBUFFORCE,
                libc::SO_SNDBUF,
                cfg.sndbuf,
                "SO_SNDBUF",
            ),
            (
                libc::SO_RCVBUFFORCE,
                libc::SO_RCVBUF,
                cfg.rcvbuf,
                "SO_RCVBUF",
            ),
        ] {
            let bytes = libc::c_int::try_from(bytes).unwrap_or(libc::c_int::MAX);
            if setsockopt(&fd, libc::SOL_SOCKET, force, &bytes).is_err() {
                setsockopt(&fd, libc::SOL_SOCKET, plain, &bytes).map_err(|e| err(what, e))?;
            }
        }
        let req = libc::tpacket_req {
            tp_block_size: block_size,
            tp_block_nr: blocks,
            tp_frame_size: cfg.slot_size,
            tp_frame_nr: block_size / cfg.slot_size * blocks,
        };
        setsockopt(&fd, libc::SOL_PACKET, libc::PACKET_RX_RING, &req)
            .map_err(|e| err("PACKET_RX_RING", e))?;
        let ring = RxRing::map(
            &fd,
            block_size as usize,
            blocks as usize,
            cfg.slot_size as usize,
        )
        .map_err(|e| err("mapping the ring", e))?;
        // SAFETY: sockaddr_ll is plain data; all-zero is a valid value to fill in.
        let mut sll: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
        sll.sll_family = libc::AF_PACKET as u16;
        sll.sll_protocol = (libc::ETH_P_ALL as u16).to_be();
        sll.sll_ifindex = ifindex as i32;
        // SAFETY: a valid sockaddr_ll of the size given, read by the kernel only.
        let r = unsafe {
            libc::bind(
                fd.as_raw_fd(),
                (&sll as *const libc::sockaddr_ll).cast(),
                std::mem::size_of::<libc::sockaddr_ll>() as libc::socklen_t,
            )
        };
        if r != 0 {
            return Err(err("bind", io::Error::last_os_error()));
        }
        if cfg.promiscuous {
            let mreq = libc::packet_mreq {
                mr_ifindex: ifindex as i32,
                mr_type: libc::PACKET_MR_PROMISC as u16,
                mr_alen: 0,
                mr_address: [0; 8],
            };
            // Undone by the kernel when the socket closes.
            setsockopt(&fd, libc::SOL_PACKET, libc::PACKET_ADD_MEMBERSHIP, &mreq)
                .map_err(|e| err("PACKET_ADD_MEMBERSHIP", e))?;
        }
        let shared = Arc::new(Shared {
            fd,
            iface: iface.to_owned(),
            ifindex,
            counters: Counters::default(),
        });
        Ok(KernelPort {
            rx: KernelRx::new(shared.clone(), ring, pool),
            tx: KernelTx::new(shared),
        })
    }

    /// The receive and transmit halves, to be polled by one thread each (or the same one).
    pub fn split(self) -> (KernelRx, KernelTx) {
        (self.rx, self.tx)
    }

    /// A handle for reading the port's state and counters from another thread.
    pub fn monitor(&self) -> KernelPortMonitor {
        KernelPortMonitor {
            shared: self.rx.shared.clone(),
        }
    }

    /// See [`KernelRx::rx_burst`].
    pub fn rx_burst(&mut self, out: &mut MbufBurst, hdrs: &mut [NetHdr; BURST_MAX]) -> RxBurst {
        self.rx.rx_burst(out, hdrs)
    }

    /// See [`KernelTx::tx_burst`].
    pub fn tx_burst<'a, I>(&mut self, pkts: I) -> TxBurst
    where
        I: IntoIterator<Item = (&'a Mbuf, NetHdr)>,
    {
        self.tx.tx_burst(pkts)
    }
}

/// Reads a kernel port's state and counters; cheap to clone, usable from any thread.
#[derive(Debug, Clone)]
pub struct KernelPortMonitor {
    shared: Arc<Shared>,
}

impl KernelPortMonitor {
    pub fn iface(&self) -> &str {
        &self.shared.iface
    }

    pub fn ifindex(&self) -> u32 {
        self.shared.ifindex
    }

    /// Whether the interface the port was opened on still exists under its name and is up
    /// with a carrier (a veth whose peer is up).
    pub fn link_up(&self) -> bool {
        let Some(ifr) = self.ifreq(libc::SIOCGIFFLAGS) else {
            return false;
        };
        // SAFETY: after SIOCGIFFLAGS the union holds the flags.
        let flags = libc::c_int::from(unsafe { ifr.ifr_ifru.ifru_flags });
        flags & libc::IFF_UP != 0 && flags & libc::IFF_RUNNING != 0
    }

    /// The interface's MTU now (the longest frame the kernel sends on it, less its link
    /// header, unless the frame is a GSO packet); `None` if it is gone.
    pub fn mtu(&self) -> Option<u32> {
        let ifr = self.ifreq(libc::SIOCGIFMTU)?;
        // SAFETY: after SIOCGIFMTU the union holds the MTU.
        u32::try_from(unsafe { ifr.ifr_ifru.ifru_mtu }).ok()
    }

    /// The answer to interface ioctl `request` (one that fills in an `ifreq`) for the
    /// interface the port was opened on, if it still exists under its name.
    fn ifreq(&self, request: libc::c_ulong) -> Option<libc::ifreq> {
        let name = CString::new(self.shared.iface.as_str()).ok()?;
        // SAFETY: a valid C string, only read.
        if unsafe { libc::if_nametoindex(name.as_ptr()) } != self.shared.ifindex {
            return None;
        }
        // SAFETY: ifreq is plain data; all-zero is valid before the name is filled in.
        let mut ifr: libc::ifreq = unsafe { std::mem::zeroed() };
        for (d, s) in ifr.ifr_name.iter_mut().zip(name.as_bytes()) {
            *d = *s as libc::c_char;
        }
        // SAFETY: the request reads the NUL-terminated name (the name is shorter than the
        // array, checked at open) and writes its answer into our ifreq.
        let r = unsafe {
            libc::ioctl(
                self.shared.fd.as_raw_fd(),
                request,
                &mut ifr as *mut libc::ifreq,
            )
        };
        (r == 0).then_some(ifr)
    }

    /// The counters, the kernel's ring drops read (and added up) now.
    pub fn stats(&self) -> KernelPortStats {
        let c = &self.shared.counters;
        // SAFETY: tpacket_stats is plain data.
        let mut st: libc::tpacket_stats = unsafe { std::mem::zeroed() };
        let mut len = std::mem::size_of::<libc::tpacket_stats>() as libc::socklen_t;
        // SAFETY: the kernel writes at most `len` bytes into `st` and updates `len`.
        let r = unsafe {
            libc::getsockopt(
                self.shared.fd.as_raw_fd(),
                libc::SOL_PACKET,
                libc::PACKET_STATISTICS,
                (&mut st as *mut libc::tpacket_stats).cast(),
                &mut len,
            )
        };
        if r == 0 {
            // The kernel clears its counters as it reports them.
            c.rx_ring_full
                .fetch_add(u64::from(st.tp_drops), Ordering::Relaxed);
        }
        KernelPortStats {
            rx_packets: c.rx_packets.get(),
            rx_bytes: c.rx_bytes.get(),
            rx_truncated: c.rx_truncated.get(),
            rx_malformed: c.rx_malformed.get(),
            rx_no_mbuf: c.rx_no_mbuf.get(),
            rx_ring_full: c.rx_ring_full.load(Ordering::Relaxed),
            tx_packets: c.tx_packets.get(),
            tx_bytes: c.tx_bytes.get(),
            tx_busy: c.tx_busy.get(),
            tx_rejected: c.tx_rejected.get(),
        }
    }
}

fn setsockopt<T>(fd: &OwnedFd, level: libc::c_int, name: libc::c_int, val: &T) -> io::Result<()> {
    // SAFETY: `val` is a live value of exactly the size passed; the kernel only reads it.
    let r = unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            level,
            name,
            (val as *const T).cast(),
            std::mem::size_of::<T>() as libc::socklen_t,
        )
    };
    if r == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

fn page_size() -> usize {
    // SAFETY: plain query.
    let p = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    usize::try_from(p).unwrap_or(4096).max(1)
}
