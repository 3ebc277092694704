//! The vhost-user protocol state machine, sans I/O: feed it decoded messages, it returns reply
//! bytes and queue hand-over events.
//!
//! Queue hand-over is an explicit quiesce handshake. When a vring becomes ready the session
//! reports it in [`Output::ready`]; the driver takes it with [`Session::take_queue`] and gives the
//! [`Virtqueue`] to a forwarding thread. A later message that touches a lent vring (its
//! `GET_VRING_BASE`, a new call fd, a new memory table, a reset, …) is held: the session lists the
//! vrings it needs back in [`Output::stop`] and reports itself [`Session::is_blocked`]; the driver
//! fetches them from the forwarding threads and hands them back with [`Session::return_queue`],
//! which then processes the held message. Guest memory is an `Arc`, so a mapping lives until the
//! last queue using it is dropped, even on peer loss.
//!
//! A refused request changes nothing: every handler validates first and applies after.
//!
//! Rooms: this module holds the session's state and the hand-over of vrings to the data path;
//! `dispatch` sends each request to its handler and answers it; `rings` sets up the memory
//! table and the vrings and builds a ready vring into a [`Virtqueue`].

use std::os::fd::OwnedFd;
use std::sync::Arc;

use crate::codec::{Message, Request, VringAddr};
use crate::memory::{DirtyLog, GuestMemory};
use crate::virtqueue::{feature, Virtqueue};

mod dispatch;
mod rings;
#[cfg(test)]
mod tests;

use dispatch::Outcome;

/// VHOST_USER_F_PROTOCOL_FEATURES.
pub const F_PROTOCOL_FEATURES: u64 = 1 << 30;
/// VIRTIO_NET_F_MQ.
pub const F_MQ: u64 = 1 << 22;
/// VIRTIO_NET_F_MTU.
pub const F_MTU: u64 = 1 << 3;
/// VIRTIO_NET_F_STATUS.
pub const F_STATUS: u64 = 1 << 16;

/// VHOST_F_LOG_ALL: the frontend migrates the guest; log every write into guest memory.
pub const F_LOG_ALL: u64 = 1 << 26;
/// VIRTIO_NET_F_GUEST_ANNOUNCE: the guest announces itself (gratuitous ARP) after migration;
/// the frontend (QEMU) asks it to, so the backend needs no SEND_RARP.
pub const F_GUEST_ANNOUNCE: u64 = 1 << 21;

/// Protocol feature: multiple queues.
pub const PF_MQ: u64 = 1 << 0;
/// Protocol feature: the dirty log is shared memory passed with SET_LOG_BASE.
pub const PF_LOG_SHMFD: u64 = 1 << 1;
/// Protocol feature: REPLY_ACK.
pub const PF_REPLY_ACK: u64 = 1 << 3;
/// Protocol feature: SET_STATUS/GET_STATUS.
pub const PF_STATUS: u64 = 1 << 16;

/// The virtio features this backend offers.
pub const OFFERED_FEATURES: u64 = feature::VERSION_1
    | feature::MRG_RXBUF
    | feature::EVENT_IDX
    | feature::INDIRECT_DESC
    | feature::RING_PACKED
    | F_MQ
    | F_STATUS
    | F_PROTOCOL_FEATURES
    | F_LOG_ALL
    | F_GUEST_ANNOUNCE
    | crate::net_hdr::OFFLOAD_FEATURES;
/// The protocol features this backend offers.
pub const OFFERED_PROTOCOL_FEATURES: u64 = PF_MQ | PF_LOG_SHMFD | PF_REPLY_ACK | PF_STATUS;

/// Per-device settings.
#[derive(Debug, Clone)]
pub struct SessionConfig {
    /// Queue pairs offered (`GET_QUEUE_NUM`); vrings are `2 * max_queue_pairs`.
    pub max_queue_pairs: u16,
    /// Virtio features offered (a subset of [`OFFERED_FEATURES`]).
    pub features: u64,
    /// MAC reported in the config space.
    pub mac: [u8; 6],
    /// MTU reported in the config space.
    pub mtu: u16,
    /// Name for log lines (the vif name or socket path).
    pub name: String,
}

impl Default for SessionConfig {
    fn default() -> Self {
        Self {
            max_queue_pairs: 4,
            features: OFFERED_FEATURES,
            mac: [0; 6],
            mtu: 1500,
            name: String::from("vhost-user"),
        }
    }
}

/// What the driver must do after a message.
#[derive(Debug, Default)]
pub struct Output {
    /// Encoded replies to send, in order.
    pub reply: Vec<u8>,
    /// Vrings that became ready: take them with [`Session::take_queue`].
    pub ready: Vec<u16>,
    /// Lent vrings the session needs back before it can go on: return them with
    /// [`Session::return_queue`].
    pub stop: Vec<u16>,
    /// The frontend must be dropped: a request failed that the protocol gives no way to refuse
    /// (a `SET_LOG_BASE` whose log cannot be mapped: the frontend waits for a reply that
    /// cannot say "failed", and would migrate without the pages we write).
    pub close: Option<String>,
}

impl Output {
    /// Clears everything for reuse.
    pub fn clear(&mut self) {
        self.reply.clear();
        self.ready.clear();
        self.stop.clear();
        self.close = None;
    }
}

/// What the frontend set up for one vring, and where the vring stands in the hand-over.
#[derive(Debug, Default)]
struct Vring {
    size: Option<u16>,
    addr: Option<VringAddr>,
    base: u16,
    started: bool,
    kick: Option<OwnedFd>,
    call: Option<Arc<OwnedFd>>,
    err: Option<OwnedFd>,
    enabled: bool,
    lent: bool,
    /// Asked back (listed in [`Output::stop`]) and not returned yet.
    stopping: bool,
    announced: bool,
    failed: bool,
}

impl Vring {
    /// Tells the frontend, through its error eventfd if it gave one, that the vring broke.
    fn signal_err(&self) {
        if let Some(err) = &self.err {
            let _ = rustix::io::write(err, &1u64.to_ne_bytes());
        }
    }
}

/// Observable state of one vring, for status reporting and tests.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VringInfo {
    /// Configured size.
    pub size: Option<u16>,
    /// Next avail index (as last known to the session).
    pub base: u16,
    /// Kick received and not stopped since.
    pub started: bool,
    /// Enabled by SET_VRING_ENABLE (or implicitly).
    pub enabled: bool,
    /// Currently handed to the data path.
    pub lent: bool,
    /// Came back broken and waits for reconfiguration.
    pub failed: bool,
}

/// One frontend's session.
#[derive(Debug)]
pub struct Session {
    cfg: SessionConfig,
    features: u64,
    protocol: u64,
    owner: bool,
    status: u8,
    mtu: u16,
    memory: Option<Arc<GuestMemory>>,
    /// The dirty log of `SET_LOG_BASE`; queues log into it while `F_LOG_ALL` is negotiated.
    log: Option<Arc<DirtyLog>>,
    /// `SET_LOG_FD`'s eventfd, kept for the session's life (the frontend syncs the log itself).
    log_fd: Option<OwnedFd>,
    vrings: Vec<Vring>,
    pending: Option<Message>,
}

impl Session {
    /// A fresh session.
    pub fn new(cfg: SessionConfig) -> Self {
        let n = usize::from(cfg.max_queue_pairs.max(1)) * 2;
        let mtu = cfg.mtu;
        Self {
            cfg,
            features: 0,
            protocol: 0,
            owner: false,
            status: 0,
            mtu,
            memory: None,
            log: None,
            log_fd: None,
            vrings: (0..n).map(|_| Vring::default()).collect(),
            pending: None,
        }
    }

    /// Negotiated virtio features.
    pub fn features(&self) -> u64 {
        self.features
    }

    /// Negotiated protocol features.
    pub fn protocol_features(&self) -> u64 {
        self.protocol
    }

    /// Device status byte (`SET_STATUS`).
    pub fn status(&self) -> u8 {
        self.status
    }

    /// Number of vrings.
    pub fn vring_count(&self) -> usize {
        self.vrings.len()
    }

    /// State of vring `i`.
    pub fn vring(&self, i: usize) -> Option<VringInfo> {
        self.vrings.get(i).map(|v| VringInfo {
            size: v.size,
            base: v.base,
            started: v.started,
            enabled: v.enabled,
            lent: v.lent,
            failed: v.failed,
        })
    }

    /// Whether a memory table is mapped.
    pub fn has_memory(&self) -> bool {
        self.memory.is_some()
    }

    /// The dirty log, if the frontend set one (`SET_LOG_BASE`).
    pub fn dirty_log(&self) -> Option<&Arc<DirtyLog>> {
        self.log.as_ref()
    }

    /// Whether queues taken now log their writes: `F_LOG_ALL` negotiated and a log set.
    pub fn logging(&self) -> bool {
        self.features & F_LOG_ALL != 0 && self.log.is_some()
    }

    /// A fault in the mapped memory table: the frontend took pages away under us. The session
    /// cannot go on with that memory; the driver drops the frontend.
    pub fn memory_fault(&self) -> Option<crate::memory::GuestFault> {
        self.memory.as_ref()?.fault()
    }

    /// A message is held until lent vrings come back: feed no more messages until then.
    pub fn is_blocked(&self) -> bool {
        self.pending.is_some()
    }

    /// Vrings currently lent to the data path.
    pub fn lent(&self) -> impl Iterator<Item = u16> + '_ {
        self.vrings
            .iter()
            .enumerate()
            .filter(|(_, v)| v.lent)
            .map(|(i, _)| i as u16)
    }

    /// Handles one message. Must not be called while [`Session::is_blocked`].
    pub fn handle(&mut self, msg: Message, out: &mut Output) {
        if self.pending.is_some() {
            tracing::error!(dev = %self.cfg.name, req = msg.request.name(), "message fed to a blocked session; refused");
            self.ack(&msg, Outcome::Refused, out);
            return;
        }
        let stop = self.lent_touched_by(&msg.request);
        if !stop.is_empty() {
            self.ask_back(stop, out);
            self.pending = Some(msg);
            return;
        }
        self.apply(msg, out);
        self.announce_ready(out);
    }

    /// Gives a lent vring back (after the data path stopped using it). Processes a held message
    /// once every vring it waits for is back.
    pub fn return_queue(&mut self, q: Virtqueue, out: &mut Output) {
        let name = self.cfg.name.clone();
        if let Some(v) = self.vrings.get_mut(usize::from(q.index())) {
            if v.lent {
                v.lent = false;
                v.stopping = false;
                v.base = q.next_avail();
                if let Some(why) = q.broken() {
                    tracing::error!(dev = %name, vring = q.index(), %why, "vring came back broken; it stays stopped until reconfigured");
                    v.failed = true;
                    v.signal_err();
                }
            }
        }
        drop(q);
        if let Some(msg) = self.pending.take() {
            let stop = self.lent_touched_by(&msg.request);
            if stop.is_empty() {
                self.apply(msg, out);
            } else {
                // A vring the driver took after the message came in (it was announced ready
                // just before) must come back too: ask for it.
                self.ask_back(stop, out);
                self.pending = Some(msg);
            }
        }
        if self.pending.is_none() {
            self.announce_ready(out);
        }
    }

    /// Lists the lent vrings of `stop` not asked back yet in `out.stop`.
    fn ask_back(&mut self, stop: Vec<u16>, out: &mut Output) {
        for i in stop {
            if let Some(v) = self.vrings.get_mut(usize::from(i)) {
                if !v.stopping {
                    v.stopping = true;
                    out.stop.push(i);
                }
            }
        }
    }

    fn vring_of(&self, req: &Request) -> Option<u32> {
        match req {
            Request::SetVringNum(s)
            | Request::SetVringBase(s)
            | Request::GetVringBase(s)
            | Request::SetVringEnable(s) => Some(s.index),
            Request::SetVringAddr(a) => Some(a.index),
            Request::SetVringKick(f) | Request::SetVringCall(f) | Request::SetVringErr(f) => {
                Some(f.index)
            }
            _ => None,
        }
    }

    fn lent_touched_by(&self, req: &Request) -> Vec<u16> {
        let all = matches!(
            req,
            Request::SetMemTable(..)
                | Request::SetLogBase(..)
                | Request::SetFeatures(_)
                | Request::ResetOwner
                | Request::ResetDevice
                | Request::SetStatus(0)
        );
        if all {
            return self.lent().collect();
        }
        match self.vring_of(req) {
            Some(i) if self.vrings.get(i as usize).is_some_and(|v| v.lent) => vec![i as u16],
            _ => Vec::new(),
        }
    }

    fn reset(&mut self) {
        for v in &mut self.vrings {
            *v = Vring::default();
        }
        self.features = 0;
        self.status = 0;
        self.memory = None;
        self.log = None;
    }
}
