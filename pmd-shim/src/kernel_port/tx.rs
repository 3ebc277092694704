//! The transmit half of a kernel port: `sendmmsg`, one message per packet with an iovec for its
//! virtio-net header and one per mbuf segment; the kernel copies, so the mbufs stay the caller's.

use std::io;
use std::os::fd::AsRawFd;
use std::sync::Arc;

use super::{Shared, TxBurst};
use crate::burst::BURST_MAX;
use crate::mbuf::Mbuf;
use virtio_net_hdr::{NetHdr, LEN as VNET_HDR_LEN};

/// Most iovecs one `sendmmsg` carries (headers and segments of all its messages).
const TX_IOVS: usize = 2048;
/// The kernel's limit on iovecs per message (UIO_MAXIOV).
const IOV_PER_MSG_MAX: usize = 1024;
/// Retries of a send interrupted by a signal before the rest of the burst counts as busy.
const EINTR_RETRIES: u32 = 4;

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
    pub(super) fn new(shared: Arc<Shared>) -> KernelTx {
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
        I: IntoIterator<Item = (&'a Mbuf, NetHdr)>,
    {
        let mut r = TxBurst::default();
        let mut it = pkts.into_iter();
        let mut held: Option<(&'a Mbuf, NetHdr)> = None;
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
                        r.bytes += u64::from(msg.msg_len).saturating_sub(VNET_HDR_LEN as u64);
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
        c.tx_bytes.add(r.bytes);
        c.tx_busy.add(r.busy as u64);
        c.tx_rejected.add(r.rejected as u64);
        r
    }
}
