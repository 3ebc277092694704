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
//! Receive: a TPACKET_V3 ring shared with the kernel (blocks of variable-size frames, handed to
//! us when full or `retire_ms` after their first frame); every frame is copied into an mbuf
//! chain from the port's pool (headers in the first segment) and the block given back when all
//! its frames are taken. Transmit: `sendmmsg`, one message per packet with an iovec for the
//! header and one per mbuf segment; the kernel copies, so the mbufs stay the caller's.
//!
//! Non-blocking throughout, no allocation per packet, bursts bounded by [`BURST_MAX`], errors
//! counted ([`KernelPortStats`]) rather than raised, and every offset and length the kernel
//! writes in the ring is checked against the block before anything is read through it.

use std::ffi::CString;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::ptr::NonNull;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::Arc;

use crate::burst::{MbufBurst, BURST_MAX};
use crate::error::{Error, Result};
use crate::mbuf::Mbuf;
use crate::mempool::Mempool;

/// Bytes of the virtio-net header in front of every frame (no `num_buffers`).
pub const VNET_HDR_LEN: usize = 10;

/// The virtio-net header of one frame (virtio 1.x 5.1.6, little endian), as the kernel wrote
/// it or as it is to be sent. What the fields mean, and whether they add up, is the caller's
/// business: this port only carries them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct VnetHdr {
    pub flags: u8,
    pub gso_type: u8,
    pub hdr_len: u16,
    pub gso_size: u16,
    pub csum_start: u16,
    pub csum_offset: u16,
}

impl VnetHdr {
    /// `flags`: the checksum is partial, to be completed from `csum_start` into
    /// `csum_start + csum_offset`.
    pub const NEEDS_CSUM: u8 = 1;
    /// `flags`: the checksum was verified.
    pub const DATA_VALID: u8 = 2;
    /// `gso_type`: TCP over IPv4.
    pub const GSO_TCPV4: u8 = 1;
    /// `gso_type`: TCP over IPv6.
    pub const GSO_TCPV6: u8 = 4;
    /// `gso_type`: UDP segmentation.
    pub const GSO_UDP_L4: u8 = 5;
    /// `gso_type` flag: TCP with ECN.
    pub const GSO_ECN: u8 = 0x80;

    /// Nothing to finish: complete checksum, no segmentation.
    pub const NONE: VnetHdr = VnetHdr {
        flags: 0,
        gso_type: 0,
        hdr_len: 0,
        gso_size: 0,
        csum_start: 0,
        csum_offset: 0,
    };

    pub fn from_bytes(b: &[u8; VNET_HDR_LEN]) -> VnetHdr {
        VnetHdr {
            flags: b[0],
            gso_type: b[1],
            hdr_len: u16::from_le_bytes([b[2], b[3]]),
            gso_size: u16::from_le_bytes([b[4], b[5]]),
            csum_start: u16::from_le_bytes([b[6], b[7]]),
            csum_offset: u16::from_le_bytes([b[8], b[9]]),
        }
    }

    pub fn to_bytes(self) -> [u8; VNET_HDR_LEN] {
        let mut b = [0u8; VNET_HDR_LEN];
        b[0] = self.flags;
        b[1] = self.gso_type;
        b[2..4].copy_from_slice(&self.hdr_len.to_le_bytes());
        b[4..6].copy_from_slice(&self.gso_size.to_le_bytes());
        b[6..8].copy_from_slice(&self.csum_start.to_le_bytes());
        b[8..10].copy_from_slice(&self.csum_offset.to_le_bytes());
        b
    }
}

/// How to open a [`KernelPort`].
#[derive(Debug, Clone)]
pub struct KernelPortConfig {
    /// Bytes per receive block, a multiple of the page size. A frame must fit one block with
    /// its headers: the default 256 KiB holds three 64 KB GSO frames, or ~170 full-size ones.
    pub block_size: u32,
    /// Blocks in the receive ring (default 16: 4 MiB of kernel memory per port).
    pub blocks: u32,
    /// Milliseconds after which the kernel hands over a block that is not full (the latency a
    /// lone frame sees at worst; default 1, the smallest).
    pub retire_ms: u32,
    /// Send straight to the driver, past the interface's queueing discipline and the kernel's
    /// packet taps (a capture on the interface then does not see what we send).
    pub qdisc_bypass: bool,
    /// Receive every frame the interface sees, whatever its destination MAC.
    pub promiscuous: bool,
    /// Socket send buffer: how many bytes of sent packets the kernel may hold before sends
    /// report the port busy.
    pub sndbuf: u32,
}

impl Default for KernelPortConfig {
    fn default() -> Self {
        KernelPortConfig {
            block_size: 256 * 1024,
            blocks: 16,
            retire_ms: 1,
            qdisc_bypass: false,
            promiscuous: true,
            sndbuf: 4 * 1024 * 1024,
        }
    }
}

/// Counters of one port; sums since it was opened.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct KernelPortStats {
    /// Frames delivered into mbufs, and their bytes.
    pub rx_packets: u64,
    pub rx_bytes: u64,
    /// Frames the kernel cut short (larger than a ring block holds), dropped.
    pub rx_truncated: u64,
    /// Frames whose ring entry did not add up (offsets outside their block), dropped; the rest
    /// of such a block is skipped.
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
    pub busy: usize,
    pub rejected: usize,
}

/// One counter with a single writer: a relaxed load and store, no locked instruction.
#[derive(Debug, Default)]
struct Counter(AtomicU64);

impl Counter {
    fn add(&self, n: u64) {
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
struct Counters {
    rx_packets: Counter,
    rx_bytes: Counter,
    rx_truncated: Counter,
    rx_malformed: Counter,
    rx_no_mbuf: Counter,
    tx_packets: Counter,
    tx_bytes: Counter,
    tx_busy: Counter,
    tx_rejected: Counter,
    /// Added to by every reader of the kernel's clear-on-read statistics (hence a real atomic
    /// add: two readers may run at once).
    rx_ring_full: AtomicU64,
}

/// The socket and what both halves and the monitor share; the socket closes when the last of
/// them goes.
#[derive(Debug)]
struct Shared {
    fd: OwnedFd,
    iface: String,
    ifindex: u32,
    counters: Counters,
}

/// An open kernel port: its receive and transmit halves (see [`KernelPort::split`]).
#[derive(Debug)]
pub struct KernelPort {
    rx: KernelRx,
    tx: KernelTx,
}

// `tpacket_block_desc`: version, offset_to_priv, then `tpacket_hdr_v1`.
const BLK_VERSION: usize = 0;
const BLK_STATUS: usize = 8;
const BLK_NUM_PKTS: usize = 12;
const BLK_FIRST: usize = 16;
const BLK_LEN: usize = 20;
/// The block header with its 8-byte alignment: where the kernel puts the first frame when
/// there is no private area.
const BLK_HDR_LEN: usize = 48;

// `tpacket3_hdr`.
const FR_NEXT: usize = 0;
const FR_SNAPLEN: usize = 12;
const FR_LEN: usize = 16;
const FR_STATUS: usize = 20;
const FR_MAC: usize = 24;
const FR_VLAN_TCI: usize = 32;
const FR_VLAN_TPID: usize = 36;
const FR_HDR_LEN: usize = 48;
/// `tpacket3_hdr` 16-aligned plus `sockaddr_ll`: nothing of the frame (nor its virtio-net
/// header, right in front of it) may start before this.
const TPACKET3_HDRLEN: usize = 48 + 20;

const TPACKET_V3: libc::c_int = 2;
const TP_STATUS_KERNEL: u32 = 0;
const TP_STATUS_USER: u32 = 1;
const TP_STATUS_VLAN_VALID: u32 = 1 << 4;
const TP_STATUS_VLAN_TPID_VALID: u32 = 1 << 6;

const ETH_HLEN: usize = 14;
const ETH_ALEN2: usize = 12;
const VLAN_HLEN: u16 = 4;

/// Most iovecs one `sendmmsg` carries (headers and segments of all its messages).
const TX_IOVS: usize = 2048;
/// The kernel's limit on iovecs per message (UIO_MAXIOV).
const IOV_PER_MSG_MAX: usize = 1024;
/// Retries of a send interrupted by a signal before the rest of the burst counts as busy.
const EINTR_RETRIES: u32 = 4;

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
        let page = page_size();
        if cfg.block_size == 0 || !(cfg.block_size as usize).is_multiple_of(page) {
            return Err(bad(
                "the block size must be a positive multiple of the page size",
            ));
        }
        if cfg.blocks == 0 || cfg.block_size.checked_mul(cfg.blocks).is_none() {
            return Err(bad(
                "the ring needs at least one block and must fit in 4 GiB",
            ));
        }
        if (cfg.block_size as usize) < BLK_HDR_LEN + TPACKET3_HDRLEN + 16 + VNET_HDR_LEN + 1518 {
            return Err(bad("the block size cannot hold a full-size frame"));
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
        setsockopt(&fd, libc::SOL_PACKET, libc::PACKET_VERSION, &TPACKET_V3)
            .map_err(|e| err("PACKET_VERSION", e))?;
        // What we send is not received back.
        setsockopt(&fd, libc::SOL_PACKET, libc::PACKET_IGNORE_OUTGOING, &one)
            .map_err(|e| err("PACKET_IGNORE_OUTGOING", e))?;
        if cfg.qdisc_bypass {
            setsockopt(&fd, libc::SOL_PACKET, libc::PACKET_QDISC_BYPASS, &one)
                .map_err(|e| err("PACKET_QDISC_BYPASS", e))?;
        }
        let sndbuf = libc::c_int::try_from(cfg.sndbuf).unwrap_or(libc::c_int::MAX);
        // Beyond net.core.wmem_max needs CAP_NET_ADMIN; without it the capped size serves.
        if setsockopt(&fd, libc::SOL_SOCKET, libc::SO_SNDBUFFORCE, &sndbuf).is_err() {
            setsockopt(&fd, libc::SOL_SOCKET, libc::SO_SNDBUF, &sndbuf)
                .map_err(|e| err("SO_SNDBUF", e))?;
        }
        // For TPACKET_V3 the frame size only has to divide the block: frames vary in size.
        let frame_size = 2048u32;
        let req = libc::tpacket_req3 {
            tp_block_size: cfg.block_size,
            tp_block_nr: cfg.blocks,
            tp_frame_size: frame_size,
            tp_frame_nr: cfg.block_size / frame_size * cfg.blocks,
            tp_retire_blk_tov: cfg.retire_ms.max(1),
            tp_sizeof_priv: 0,
            tp_feature_req_word: 0,
        };
        setsockopt(&fd, libc::SOL_PACKET, libc::PACKET_RX_RING, &req)
            .map_err(|e| err("PACKET_RX_RING", e))?;
        let ring = Ring::map(&fd, cfg.block_size as usize, cfg.blocks as usize)
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
            rx: KernelRx {
                shared: shared.clone(),
                ring,
                pool: pool.clone(),
                seg_room: usize::from(pool.data_room()),
                block: 0,
                cursor: None,
            },
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
    pub fn rx_burst(&mut self, out: &mut MbufBurst, hdrs: &mut [VnetHdr; BURST_MAX]) -> RxBurst {
        self.rx.rx_burst(out, hdrs)
    }

    /// See [`KernelTx::tx_burst`].
    pub fn tx_burst<'a, I>(&mut self, pkts: I) -> TxBurst
    where
        I: IntoIterator<Item = (&'a Mbuf, VnetHdr)>,
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
        let Ok(name) = CString::new(self.shared.iface.as_str()) else {
            return false;
        };
        // SAFETY: a valid C string, only read.
        if unsafe { libc::if_nametoindex(name.as_ptr()) } != self.shared.ifindex {
            return false;
        }
        // SAFETY: ifreq is plain data; all-zero is valid before the name is filled in.
        let mut ifr: libc::ifreq = unsafe { std::mem::zeroed() };
        for (d, s) in ifr.ifr_name.iter_mut().zip(name.as_bytes()) {
            *d = *s as libc::c_char;
        }
        // SAFETY: SIOCGIFFLAGS reads the NUL-terminated name (the name is shorter than the
        // array, checked at open) and writes the flags into our ifreq.
        let r = unsafe {
            libc::ioctl(
                self.shared.fd.as_raw_fd(),
                libc::SIOCGIFFLAGS,
                &mut ifr as *mut libc::ifreq,
            )
        };
        if r != 0 {
            return false;
        }
        // SAFETY: after SIOCGIFFLAGS the union holds the flags.
        let flags = libc::c_int::from(unsafe { ifr.ifr_ifru.ifru_flags });
        flags & libc::IFF_UP != 0 && flags & libc::IFF_RUNNING != 0
    }

    /// The counters, the kernel's ring drops read (and added up) now.
    pub fn stats(&self) -> KernelPortStats {
        let c = &self.shared.counters;
        // SAFETY: tpacket_stats_v3 is plain data.
        let mut st: libc::tpacket_stats_v3 = unsafe { std::mem::zeroed() };
        let mut len = std::mem::size_of::<libc::tpacket_stats_v3>() as libc::socklen_t;
        // SAFETY: the kernel writes at most `len` bytes into `st` and updates `len`.
        let r = unsafe {
            libc::getsockopt(
                self.shared.fd.as_raw_fd(),
                libc::SOL_PACKET,
                libc::PACKET_STATISTICS,
                (&mut st as *mut libc::tpacket_stats_v3).cast(),
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

/// The receive ring as mapped into our memory: `blocks` blocks of `block_size` bytes.
#[derive(Debug)]
struct Ring {
    base: NonNull<u8>,
    block_size: usize,
    blocks: usize,
}

impl Ring {
    fn map(fd: &OwnedFd, block_size: usize, blocks: usize) -> io::Result<Ring> {
        let len = block_size * blocks;
        // SAFETY: maps the socket's ring (set up just before, exactly `len` bytes) shared with
        // the kernel; a failure returns MAP_FAILED and maps nothing.
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                fd.as_raw_fd(),
                0,
            )
        };
        if p == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        let base = NonNull::new(p.cast::<u8>()).ok_or_else(|| io::Error::other("mmap gave 0"))?;
        Ok(Ring {
            base,
            block_size,
            blocks,
        })
    }

    /// The status word of block `b`, through which the kernel and we hand the block over.
    fn status(&self, b: usize) -> &AtomicU32 {
        assert!(b < self.blocks);
        // SAFETY: the word lies inside the mapping (b < blocks), 4-aligned (blocks start on
        // pages), and lives as long as `self`; the kernel and we only ever access it whole.
        unsafe {
            AtomicU32::from_ptr(
                self.base
                    .as_ptr()
                    .add(b * self.block_size + BLK_STATUS)
                    .cast(),
            )
        }
    }

    /// A field of block `b` at `off` (the caller keeps `off + 4` within the block). Only read
    /// while the block is ours (the kernel leaves it alone until we give it back).
    fn u32_at(&self, b: usize, off: usize) -> u32 {
        assert!(b < self.blocks && off + 4 <= self.block_size);
        // SAFETY: in bounds as asserted; unaligned reads are fine for any offset.
        unsafe {
            std::ptr::read_unaligned(
                self.base
                    .as_ptr()
                    .add(b * self.block_size + off)
                    .cast::<u32>(),
            )
        }
    }

    fn u16_at(&self, b: usize, off: usize) -> u16 {
        assert!(b < self.blocks && off + 2 <= self.block_size);
        // SAFETY: as in `u32_at`.
        unsafe {
            std::ptr::read_unaligned(
                self.base
                    .as_ptr()
                    .add(b * self.block_size + off)
                    .cast::<u16>(),
            )
        }
    }

    /// Bytes `off..off + len` of block `b`, which must be ours and lie within the block.
    fn bytes(&self, b: usize, off: usize, len: usize) -> &[u8] {
        assert!(b < self.blocks && off.checked_add(len).is_some_and(|e| e <= self.block_size));
        // SAFETY: in bounds as asserted; the kernel does not write a block handed to us, and
        // the slice does not outlive the borrow of the ring (nor, by the caller's use, the
        // block's hand-back).
        unsafe {
            std::slice::from_raw_parts(self.base.as_ptr().add(b * self.block_size + off), len)
        }
    }
}

impl Drop for Ring {
    fn drop(&mut self) {
        // SAFETY: unmaps exactly what `map` mapped; no slice into it outlives `self`.
        unsafe { libc::munmap(self.base.as_ptr().cast(), self.block_size * self.blocks) };
    }
}

/// Where we are inside a block handed to us.
#[derive(Debug, Clone, Copy)]
struct Cursor {
    /// Frames not yet taken.
    left: u32,
    /// Offset of the next frame's header.
    off: usize,
    /// Where the block's frames end (its `blk_len`).
    end: usize,
}

/// One frame's ring entry, checked.
enum Entry {
    /// The frame is at `mac..mac + len` of the block, its virtio-net header right in front.
    Frame {
        mac: usize,
        len: usize,
        vlan: Option<[u8; 4]>,
        next: usize,
    },
    /// Cut short by the kernel, or shorter than an Ethernet header: dropped.
    Truncated { next: usize },
    /// Offsets that do not fit the block: the rest of the block cannot be trusted.
    Malformed,
}

/// The receive half of a kernel port.
#[derive(Debug)]
pub struct KernelRx {
    shared: Arc<Shared>,
    ring: Ring,
    pool: Mempool,
    /// Bytes in a follow-on segment (a whole buffer: they carry no headroom).
    seg_room: usize,
    /// The next block to read.
    block: usize,
    cursor: Option<Cursor>,
}

// SAFETY: the ring mapping is owned by this value alone (the pointer is never shared), and the
// socket behind `shared` may be used from any thread.
unsafe impl Send for KernelRx {}

impl KernelRx {
    /// Receives up to `out.room()` frames into `out`, each with its virtio-net header in
    /// `hdrs` at the same index as its mbuf in `out`. A frame with a VLAN tag the kernel took
    /// off into its metadata gets the tag back in place (and the header's offsets moved past
    /// it). Never blocks: returns at once when the kernel has handed nothing over.
    pub fn rx_burst(&mut self, out: &mut MbufBurst, hdrs: &mut [VnetHdr; BURST_MAX]) -> RxBurst {
        let mut r = RxBurst::default();
        let mut bytes = 0u64;
        while !out.is_full() {
            let Some(mut cur) = self.cursor.or_else(|| self.open_block(&mut r)) else {
                break;
            };
            if cur.left == 0 {
                self.release_block();
                continue;
            }
            let entry = self.entry(&cur);
            cur.left -= 1;
            let next = match entry {
                Entry::Malformed => {
                    // This entry and every one after it in the block.
                    r.malformed += 1 + cur.left;
                    cur.left = 0;
                    0
                }
                Entry::Truncated { next } => {
                    r.truncated += 1;
                    next
                }
                Entry::Frame {
                    mac,
                    len,
                    vlan,
                    next,
                } => {
                    let b = self.block;
                    let mut hdr = VnetHdr::NONE;
                    let raw = self.ring.bytes(b, mac - VNET_HDR_LEN, VNET_HDR_LEN);
                    if let Ok(h) = <&[u8; VNET_HDR_LEN]>::try_from(raw) {
                        hdr = VnetHdr::from_bytes(h);
                    }
                    let frame = self.ring.bytes(b, mac, len);
                    let copied = match vlan {
                        None => copy_frame(&self.pool, self.seg_room, &[frame]),
                        Some(tag) => {
                            // Offsets were taken without the tag; it goes back in front of them.
                            if hdr.flags & VnetHdr::NEEDS_CSUM != 0 {
                                hdr.csum_start = hdr.csum_start.saturating_add(VLAN_HLEN);
                            }
                            if hdr.hdr_len != 0 {
                                hdr.hdr_len = hdr.hdr_len.saturating_add(VLAN_HLEN);
                            }
                            let (macs, rest) = frame.split_at(ETH_ALEN2);
                            copy_frame(&self.pool, self.seg_room, &[macs, &tag, rest])
                        }
                    };
                    match copied {
                        Some(m) => {
                            bytes += u64::from(m.pkt_len());
                            hdrs[out.len()] = hdr;
                            // Never full: the loop stops when it is.
                            let _ = out.push(m);
                            r.received += 1;
                        }
                        None => r.no_mbuf += 1,
                    }
                    next
                }
            };
            if cur.left > 0 && next < FR_HDR_LEN {
                // The next entry must lie past this one's header (the kernel's offsets only grow).
                r.malformed += cur.left;
                cur.left = 0;
            }
            if cur.left == 0 {
                // Handed back at once, not at the next call: the kernel may be waiting for it.
                self.release_block();
            } else {
                cur.off += next;
                self.cursor = Some(cur);
            }
        }
        let c = &self.shared.counters;
        c.rx_packets.add(r.received as u64);
        c.rx_bytes.add(bytes);
        c.rx_truncated.add(u64::from(r.truncated));
        c.rx_malformed.add(u64::from(r.malformed));
        c.rx_no_mbuf.add(u64::from(r.no_mbuf));
        r
    }

    /// Takes the next block if the kernel has handed it over and its header adds up; a block
    /// whose header does not is given straight back (counted malformed).
    fn open_block(&mut self, r: &mut RxBurst) -> Option<Cursor> {
        let b = self.block;
        if self.ring.status(b).load(Ordering::Acquire) & TP_STATUS_USER == 0 {
            return None;
        }
        let version = self.ring.u32_at(b, BLK_VERSION);
        let count = self.ring.u32_at(b, BLK_NUM_PKTS);
        let first = self.ring.u32_at(b, BLK_FIRST) as usize;
        let end = self.ring.u32_at(b, BLK_LEN) as usize;
        let cur = if version as libc::c_int != TPACKET_V3
            || end > self.ring.block_size
            || first < BLK_HDR_LEN
            || first > end
        {
            r.malformed += count.max(1);
            Cursor {
                left: 0,
                off: 0,
                end: 0,
            }
        } else {
            Cursor {
                left: count,
                off: first,
                end,
            }
        };
        self.cursor = Some(cur);
        Some(cur)
    }

    /// Gives the current block back to the kernel and moves to the next one.
    fn release_block(&mut self) {
        self.ring
            .status(self.block)
            .store(TP_STATUS_KERNEL, Ordering::Release);
        self.block = (self.block + 1) % self.ring.blocks;
        self.cursor = None;
    }

    /// The entry at the cursor, checked against the block: its header, its virtio-net header
    /// and its frame must all lie within the block's frames.
    fn entry(&self, cur: &Cursor) -> Entry {
        let (b, off) = (self.block, cur.off);
        if off.checked_add(FR_HDR_LEN).is_none_or(|e| e > cur.end) {
            return Entry::Malformed;
        }
        let next = self.ring.u32_at(b, off + FR_NEXT) as usize;
        let snaplen = self.ring.u32_at(b, off + FR_SNAPLEN) as usize;
        let len = self.ring.u32_at(b, off + FR_LEN) as usize;
        let status = self.ring.u32_at(b, off + FR_STATUS);
        let mac = usize::from(self.ring.u16_at(b, off + FR_MAC));
        if mac < TPACKET3_HDRLEN + VNET_HDR_LEN
            || (off + mac).checked_add(snaplen).is_none_or(|e| e > cur.end)
            || snaplen > len
        {
            return Entry::Malformed;
        }
        if snaplen < len || len < ETH_HLEN {
            return Entry::Truncated { next };
        }
        let vlan = (status & TP_STATUS_VLAN_VALID != 0).then(|| {
            let tci = self.ring.u32_at(b, off + FR_VLAN_TCI) as u16;
            let tpid = if status & TP_STATUS_VLAN_TPID_VALID != 0 {
                self.ring.u16_at(b, off + FR_VLAN_TPID)
            } else {
                0x8100
            };
            let mut tag = [0u8; 4];
            tag[..2].copy_from_slice(&tpid.to_be_bytes());
            tag[2..].copy_from_slice(&tci.to_be_bytes());
            tag
        });
        Entry::Frame {
            mac: off + mac,
            len,
            vlan,
            next,
        }
    }
}

/// An mbuf chain holding `pieces` back to back: the first segment filled first (the headers
/// must be there), then whole segments. `None` when the pool ran dry (nothing is kept).
fn copy_frame(pool: &Mempool, seg_room: usize, pieces: &[&[u8]]) -> Option<Mbuf> {
    let mut m = pool.alloc()?;
    let mut room = usize::from(m.tailroom());
    for piece in pieces {
        let mut rest = *piece;
        while !rest.is_empty() {
            let (n, dst) = if room > 0 {
                let n = rest.len().min(room);
                room -= n;
                (n, m.append(n as u16).ok()?)
            } else {
                let n = rest.len().min(seg_room);
                room = seg_room - n;
                (n, m.append_grow(n as u16).ok()?)
            };
            dst.copy_from_slice(&rest[..n]);
            rest = &rest[n..];
        }
    }
    Some(m)
}

/// The transmit half of a kernel port.
pub struct KernelTx {
    shared: Arc<Shared>,
    /// Scratch for one `sendmmsg`: messages, their iovecs, their headers. Written and used
    /// within one `tx_burst`; the pointers in them mean nothing between calls.
    msgs: Box<[libc::mmsghdr]>,
    iovs: Box<[libc::iovec]>,
    hdrs: Box<[[u8; VNET_HDR_LEN]]>,
}

// SAFETY: the raw pointers in the scratch arrays are only followed during a `tx_burst` call
// (which borrows everything they point to); the socket may be used from any thread.
unsafe impl Send for KernelTx {}

impl std::fmt::Debug for KernelTx {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KernelTx")
            .field("iface", &self.shared.iface)
            .finish()
    }
}

impl KernelTx {
    fn new(shared: Arc<Shared>) -> KernelTx {
        // SAFETY: mmsghdr and iovec are plain data (pointers and lengths); all-zero is valid.
        let (msg, iov) = unsafe {
            (
                std::mem::zeroed::<libc::mmsghdr>(),
                std::mem::zeroed::<libc::iovec>(),
            )
        };
        KernelTx {
            shared,
            msgs: vec![msg; BURST_MAX].into_boxed_slice(),
            iovs: vec![iov; TX_IOVS].into_boxed_slice(),
            hdrs: vec![[0u8; VNET_HDR_LEN]; BURST_MAX].into_boxed_slice(),
        }
    }

    /// Sends every packet of `pkts` with its virtio-net header (the kernel checks the header
    /// against the frame and finishes the checksum or segmentation it asks for). The mbufs are
    /// only read: the caller frees them afterwards, sent or not. Stops trying at the first
    /// "busy" (the socket's send buffer is full); what was not sent is counted in the result.
    pub fn tx_burst<'a, I>(&mut self, pkts: I) -> TxBurst
    where
        I: IntoIterator<Item = (&'a Mbuf, VnetHdr)>,
    {
        let mut r = TxBurst::default();
        let mut bytes = 0u64;
        let mut it = pkts.into_iter();
        let mut held: Option<(&'a Mbuf, VnetHdr)> = None;
        let fd = self.shared.fd.as_raw_fd();
        'batches: loop {
            let (mut nmsg, mut niov) = (0usize, 0usize);
            while nmsg < BURST_MAX {
                let Some((m, h)) = held.take().or_else(|| it.next()) else {
                    break;
                };
                let need = 1 + usize::from(m.nb_segs());
                if need > IOV_PER_MSG_MAX.min(TX_IOVS) {
                    r.rejected += 1;
                    continue;
                }
                if niov + need > TX_IOVS {
                    held = Some((m, h));
                    break;
                }
                self.hdrs[nmsg] = h.to_bytes();
                let first = niov;
                self.iovs[niov] = libc::iovec {
                    iov_base: self.hdrs[nmsg].as_mut_ptr().cast(),
                    iov_len: VNET_HDR_LEN,
                };
                niov += 1;
                for seg in m.segments().filter(|s| !s.is_empty()) {
                    // The kernel only reads through iov_base (a send).
                    self.iovs[niov] = libc::iovec {
                        iov_base: seg.as_ptr().cast_mut().cast(),
                        iov_len: seg.len(),
                    };
                    niov += 1;
                }
                let msg = &mut self.msgs[nmsg];
                // SAFETY: msghdr is plain data; all-zero (no address, no control) is valid.
                msg.msg_hdr = unsafe { std::mem::zeroed() };
                msg.msg_hdr.msg_iov = self.iovs[first..].as_mut_ptr();
                msg.msg_hdr.msg_iovlen = niov - first;
                msg.msg_len = 0;
                nmsg += 1;
            }
            if nmsg == 0 {
                break;
            }
            let (mut done, mut interrupted) = (0usize, 0u32);
            while done < nmsg {
                // SAFETY: msgs[done..nmsg] are filled in above; their iovecs point into
                // `self.hdrs` and into mbuf segments borrowed for 'a, all alive during the call;
                // the kernel reads them and writes only `msg_len`.
                let n = unsafe {
                    libc::sendmmsg(
                        fd,
                        self.msgs[done..nmsg].as_mut_ptr(),
                        (nmsg - done) as libc::c_uint,
                        libc::MSG_DONTWAIT,
                    )
                };
                if n == 0 {
                    // Not a documented answer; treated as busy rather than retried forever.
                    r.busy += nmsg - done + usize::from(held.is_some()) + it.count();
                    break 'batches;
                }
                if n > 0 {
                    let n = n as usize;
                    for msg in &self.msgs[done..done + n] {
                        // The kernel counts the header it read as sent.
                        bytes += u64::from(msg.msg_len).saturating_sub(VNET_HDR_LEN as u64);
                    }
                    r.sent += n;
                    done += n;
                    continue;
                }
                match io::Error::last_os_error().raw_os_error() {
                    Some(libc::EINTR) if interrupted < EINTR_RETRIES => interrupted += 1,
                    Some(libc::EAGAIN) | Some(libc::EINTR) => {
                        // The send buffer is full: nothing more goes now.
                        r.busy += nmsg - done + usize::from(held.is_some()) + it.count();
                        break 'batches;
                    }
                    // The interface dropped this one (its queue is full); try the next.
                    Some(libc::ENOBUFS) => {
                        r.busy += 1;
                        done += 1;
                    }
                    _ => {
                        r.rejected += 1;
                        done += 1;
                    }
                }
            }
        }
        let c = &self.shared.counters;
        c.tx_packets.add(r.sent as u64);
        c.tx_bytes.add(bytes);
        c.tx_busy.add(r.busy as u64);
        c.tx_rejected.add(r.rejected as u64);
        r
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_header_is_little_endian_in_virtio_order() {
        let h = VnetHdr {
            flags: VnetHdr::NEEDS_CSUM,
            gso_type: VnetHdr::GSO_TCPV6 | VnetHdr::GSO_ECN,
            hdr_len: 0x0102,
            gso_size: 1428,
            csum_start: 54,
            csum_offset: 16,
        };
        let b = h.to_bytes();
        assert_eq!(b, [1, 0x84, 2, 1, 0x94, 5, 54, 0, 16, 0]);
        assert_eq!(VnetHdr::from_bytes(&b), h);
    }

    #[test]
    fn kernel_layout_constants_match_libc() {
        assert_eq!(std::mem::size_of::<libc::tpacket3_hdr>(), FR_HDR_LEN);
        assert_eq!(libc::TPACKET3_HDRLEN, TPACKET3_HDRLEN);
        assert_eq!(
            std::mem::size_of::<libc::tpacket_block_desc>().next_multiple_of(8),
            BLK_HDR_LEN
        );
        assert_eq!(libc::TP_STATUS_USER, TP_STATUS_USER);
        assert_eq!(libc::TP_STATUS_VLAN_VALID, TP_STATUS_VLAN_VALID);
        assert_eq!(libc::TP_STATUS_VLAN_TPID_VALID, TP_STATUS_VLAN_TPID_VALID);
    }

    #[test]
    fn field_offsets_match_the_kernel_structs() {
        use std::mem::offset_of;
        let v1 = offset_of!(libc::tpacket_block_desc, hdr);
        assert_eq!(offset_of!(libc::tpacket_block_desc, version), BLK_VERSION);
        assert_eq!(
            v1 + offset_of!(libc::tpacket_hdr_v1, block_status),
            BLK_STATUS
        );
        assert_eq!(
            v1 + offset_of!(libc::tpacket_hdr_v1, num_pkts),
            BLK_NUM_PKTS
        );
        assert_eq!(
            v1 + offset_of!(libc::tpacket_hdr_v1, offset_to_first_pkt),
            BLK_FIRST
        );
        assert_eq!(v1 + offset_of!(libc::tpacket_hdr_v1, blk_len), BLK_LEN);
        assert_eq!(offset_of!(libc::tpacket3_hdr, tp_next_offset), FR_NEXT);
        assert_eq!(offset_of!(libc::tpacket3_hdr, tp_snaplen), FR_SNAPLEN);
        assert_eq!(offset_of!(libc::tpacket3_hdr, tp_len), FR_LEN);
        assert_eq!(offset_of!(libc::tpacket3_hdr, tp_status), FR_STATUS);
        assert_eq!(offset_of!(libc::tpacket3_hdr, tp_mac), FR_MAC);
        let hv1 = offset_of!(libc::tpacket3_hdr, hv1);
        assert_eq!(
            hv1 + offset_of!(libc::tpacket_hdr_variant1, tp_vlan_tci),
            FR_VLAN_TCI
        );
        assert_eq!(
            hv1 + offset_of!(libc::tpacket_hdr_variant1, tp_vlan_tpid),
            FR_VLAN_TPID
        );
    }
}
