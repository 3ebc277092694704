//! The receive half of a kernel port: frames from the ring's slots, and frames too long for a
//! slot (a 64 KB GSO packet, a jumbo frame) from the socket's receive queue where the kernel
//! keeps them whole, each copied into an mbuf chain from the port's pool.

use std::io;
use std::os::fd::AsRawFd;
use std::sync::Arc;

use super::ring::{RxRing, Slot};
use super::{RxBurst, Shared};
use crate::burst::{MbufBurst, BURST_MAX};
use crate::mbuf::Mbuf;
use crate::mempool::Mempool;
use virtio_net_hdr::{NetHdr, LEN as VNET_HDR_LEN};

const ETH_HLEN: usize = 14;
const ETH_ALEN2: usize = 12;
const VLAN_HLEN: u16 = 4;

/// The longest frame read whole from the receive queue: a GSO packet of the kernel's default
/// 64 KB limit with its link headers. A longer one (BIG TCP raised on the interface) is
/// counted truncated and dropped.
pub const QUEUED_FRAME_MAX: usize = 65_536 + 256;

/// The receive half of a kernel port.
#[derive(Debug)]
pub struct KernelRx {
    pub(super) shared: Arc<Shared>,
    ring: RxRing,
    pool: Mempool,
    /// Bytes in a follow-on segment (a whole buffer: they carry no headroom).
    seg_room: usize,
    /// The next slot to read.
    head: usize,
    /// Where a frame read from the receive queue lands, its virtio-net header first.
    queued: Box<[u8]>,
}

// SAFETY: the ring mapping is owned by this value alone (the pointer is never shared), and the
// socket behind `shared` may be used from any thread.
unsafe impl Send for KernelRx {}

/// One frame to copy out: its header, its bytes and the VLAN tag to put back.
struct Taken<'a> {
    hdr: NetHdr,
    frame: &'a [u8],
    vlan: Option<[u8; 4]>,
}

impl KernelRx {
    pub(super) fn new(shared: Arc<Shared>, ring: RxRing, pool: &Mempool) -> KernelRx {
        KernelRx {
            shared,
            ring,
            pool: pool.clone(),
            seg_room: usize::from(pool.data_room()),
            head: 0,
            queued: vec![0u8; VNET_HDR_LEN + QUEUED_FRAME_MAX].into_boxed_slice(),
        }
    }

    /// Receives up to `out.room()` frames into `out`, each with its virtio-net header in
    /// `hdrs` at the same index as its mbuf in `out`. A frame with a VLAN tag the kernel took
    /// off into its metadata gets the tag back in place (and the header's offsets moved past
    /// it). Never blocks: returns at once when the kernel has handed nothing over.
    pub fn rx_burst(&mut self, out: &mut MbufBurst, hdrs: &mut [NetHdr; BURST_MAX]) -> RxBurst {
        let mut r = RxBurst::default();
        let mut bytes = 0u64;
        while !out.is_full() {
            let head = self.head;
            let Some(slot) = self.ring.slot(head) else {
                break;
            };
            let taken = match slot {
                Slot::Frame { hdr, frame, vlan } => Some(Taken { hdr, frame, vlan }),
                Slot::InQueue { vlan } => match read_queued(&self.shared, &mut self.queued) {
                    Ok(Some((hdr, frame))) => Some(Taken { hdr, frame, vlan }),
                    Ok(None) => {
                        r.truncated += 1;
                        None
                    }
                    Err(()) => {
                        r.malformed += 1;
                        None
                    }
                },
                Slot::Truncated => {
                    r.truncated += 1;
                    None
                }
                Slot::Malformed { queued } => {
                    if queued {
                        // Its whole copy waits in the queue: drop it too, or every later
                        // frame would be matched with the one before it.
                        let _ = read_queued(&self.shared, &mut self.queued);
                    }
                    r.malformed += 1;
                    None
                }
            };
            if let Some(t) = taken {
                match copy_out(&self.pool, self.seg_room, t) {
                    Some((m, hdr)) => {
                        bytes += u64::from(m.pkt_len());
                        hdrs[out.len()] = hdr;
                        // Never full: the loop stops when it is.
                        let _ = out.push(m);
                        r.received += 1;
                    }
                    None => r.no_mbuf += 1,
                }
            }
            // Handed back at once: the kernel may be waiting for it.
            self.ring.release(head);
            self.head = (head + 1) % self.ring.slots();
        }
        let c = &self.shared.counters;
        c.rx_packets.add(r.received as u64);
        c.rx_bytes.add(bytes);
        c.rx_truncated.add(u64::from(r.truncated));
        c.rx_malformed.add(u64::from(r.malformed));
        c.rx_no_mbuf.add(u64::from(r.no_mbuf));
        r
    }
}

/// Reads the next frame the kernel queued whole: `Ok(None)` when it was longer than we take
/// (or shorter than a header and an Ethernet header), `Err` when the queue had nothing (the
/// ring said it would).
fn read_queued<'b>(shared: &Shared, buf: &'b mut [u8]) -> Result<Option<(NetHdr, &'b [u8])>, ()> {
    let n = loop {
        // MSG_TRUNC: the length of the frame, even when longer than the buffer.
        // SAFETY: the kernel writes at most `buf.len()` bytes into `buf`, which we own.
        let n = unsafe {
            libc::recv(
                shared.fd.as_raw_fd(),
                buf.as_mut_ptr().cast(),
                buf.len(),
                libc::MSG_DONTWAIT | libc::MSG_TRUNC,
            )
        };
        if n >= 0 {
            break n as usize;
        }
        if io::Error::last_os_error().raw_os_error() != Some(libc::EINTR) {
            return Err(());
        }
    };
    if n > buf.len() || n < VNET_HDR_LEN + ETH_HLEN {
        return Ok(None);
    }
    let (hdr, frame) = buf[..n].split_at(VNET_HDR_LEN);
    let mut h = [0u8; VNET_HDR_LEN];
    h.copy_from_slice(hdr);
    Ok(Some((NetHdr::from_bytes(&h), frame)))
}

/// The frame as an mbuf chain, its VLAN tag put back after the MAC addresses (and the header's
/// offsets, taken without the tag, moved past it). `None` when the pool ran dry.
fn copy_out(pool: &Mempool, seg_room: usize, t: Taken<'_>) -> Option<(Mbuf, NetHdr)> {
    let mut hdr = t.hdr;
    let m = match t.vlan {
        None => copy_frame(pool, seg_room, &[t.frame])?,
        Some(tag) => {
            if hdr.flags & virtio_net_hdr::FLAG_NEEDS_CSUM != 0 {
                hdr.csum_start = hdr.csum_start.saturating_add(VLAN_HLEN);
            }
            if hdr.hdr_len != 0 {
                hdr.hdr_len = hdr.hdr_len.saturating_add(VLAN_HLEN);
            }
            let (macs, rest) = t.frame.split_at(ETH_ALEN2);
            copy_frame(pool, seg_room, &[macs, &tag, rest])?
        }
    };
    Some((m, hdr))
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
