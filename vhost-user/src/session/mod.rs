//! The vhost-user protocol state machine, sans I/O: feed it decoded messages, it returns reply
//! bytes and queue hand-over events.
//!
//! Queue hand-over is an explicit quiesce handshake. When a vring becomes ready the session
//! reports it in [`Output::ready`]; the driver takes it with [`Session::take_queue`] and gives the
//! [`SplitQueue`] to a forwarding thread. A later message that touches a lent vring (its
//! `GET_VRING_BASE`, a new call fd, a new memory table, a reset, …) is held: the session lists the
//! vrings it needs back in [`Output::stop`] and reports itself [`Session::is_blocked`]; the driver
//! fetches them from the forwarding threads and hands them back with [`Session::return_queue`],
//! which then processes the held message. Guest memory is an `Arc`, so a mapping lives until the
//! last queue using it is dropped, even on peer loss.
//!
//! A refused request changes nothing: every handler validates first and applies after.

use std::os::fd::OwnedFd;
use std::sync::Arc;

use crate::codec::{ConfigSpace, Header, Message, Request, VringAddr};
use crate::error::Error;
use crate::memory::GuestMemory;
use crate::virtqueue::layout::{avail, desc, used};
use crate::virtqueue::{feature, QueueSetup, SplitQueue, MAX_QUEUE_SIZE};

/// VHOST_USER_F_PROTOCOL_FEATURES.
pub const F_PROTOCOL_FEATURES: u64 = 1 << 30;
/// VIRTIO_NET_F_MQ.
pub const F_MQ: u64 = 1 << 22;
/// VIRTIO_NET_F_MTU.
pub const F_MTU: u64 = 1 << 3;
/// VIRTIO_NET_F_STATUS.
pub const F_STATUS: u64 = 1 << 16;

/// Protocol feature: multiple queues.
pub const PF_MQ: u64 = 1 << 0;
/// Protocol feature: REPLY_ACK.
pub const PF_REPLY_ACK: u64 = 1 << 3;
/// Protocol feature: SET_STATUS/GET_STATUS.
pub const PF_STATUS: u64 = 1 << 16;

/// The virtio features this backend offers.
pub const OFFERED_FEATURES: u64 = feature::VERSION_1
    | feature::MRG_RXBUF
    | feature::EVENT_IDX
    | feature::INDIRECT_DESC
    | F_MQ
    | F_STATUS
    | F_PROTOCOL_FEATURES
    | crate::net_hdr::OFFLOAD_FEATURES;
/// The protocol features this backend offers.
pub const OFFERED_PROTOCOL_FEATURES: u64 = PF_MQ | PF_REPLY_ACK | PF_STATUS;

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
}

impl Output {
    /// Clears everything for reuse.
    pub fn clear(&mut self) {
        self.reply.clear();
        self.ready.clear();
        self.stop.clear();
    }
}

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
    announced: bool,
    failed: bool,
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
    vrings: Vec<Vring>,
    pending: Option<Message>,
}

enum Outcome {
    /// Request handled; ack 0 if asked.
    Ok,
    /// Request refused; ack 1 if asked.
    Refused,
    /// The request produced its own reply.
    Replied,
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
            out.stop.extend(stop);
            self.pending = Some(msg);
            return;
        }
        self.apply(msg, out);
        self.announce_ready(out);
    }

    /// Takes a ready vring for the data path.
    pub fn take_queue(&mut self, index: u16) -> Result<SplitQueue, Error> {
        let features = self.features;
        let mem = self.memory.clone();
        let protocol_enabled = self.features & F_PROTOCOL_FEATURES != 0;
        let v = self
            .vrings
            .get_mut(usize::from(index))
            .ok_or(Error::VringIndex(u32::from(index)))?;
        let not_ready = |why| Error::NotReady { index, why };
        if v.lent {
            return Err(not_ready("already lent"));
        }
        let mem = mem.ok_or(not_ready("no memory table"))?;
        let size = v.size.ok_or(not_ready("no size"))?;
        let addr = v.addr.ok_or(not_ready("no ring addresses"))?;
        if !v.started {
            return Err(not_ready("no kick"));
        }
        if protocol_enabled && !v.enabled {
            return Err(not_ready("disabled"));
        }
        if v.failed {
            return Err(not_ready("broken"));
        }
        let built = (|| {
            let setup = QueueSetup {
                index,
                size,
                desc_gpa: mem.uva_to_gpa(addr.desc, desc::table_len(size))?,
                avail_gpa: mem.uva_to_gpa(addr.avail, avail::len(size))?,
                used_gpa: mem.uva_to_gpa(addr.used, used::len(size))?,
                mem: Arc::clone(&mem),
                base: v.base,
                features,
                call: v.call.clone(),
            };
            SplitQueue::new(setup)
        })();
        match built {
            Ok(q) => {
                v.lent = true;
                v.announced = false;
                Ok(q)
            }
            Err(e) => {
                tracing::error!(dev = %self.cfg.name, vring = index, %e, "rings are not in mapped guest memory; vring not started");
                v.failed = true;
                v.announced = false;
                signal_err(v);
                Err(e.into())
            }
        }
    }

    /// Gives a lent vring back (after the data path stopped using it). Processes a held message
    /// once every vring it waits for is back.
    pub fn return_queue(&mut self, q: SplitQueue, out: &mut Output) {
        let name = self.cfg.name.clone();
        if let Some(v) = self.vrings.get_mut(usize::from(q.index())) {
            if v.lent {
                v.lent = false;
                v.base = q.next_avail();
                if let Some(why) = q.broken() {
                    tracing::error!(dev = %name, vring = q.index(), %why, "vring came back broken; it stays stopped until reconfigured");
                    v.failed = true;
                    signal_err(v);
                }
            }
        }
        drop(q);
        if let Some(msg) = self.pending.take() {
            if self.lent_touched_by(&msg.request).is_empty() {
                self.apply(msg, out);
            } else {
                self.pending = Some(msg);
            }
        }
        if self.pending.is_none() {
            self.announce_ready(out);
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

    fn ack(&self, msg: &Message, outcome: Outcome, out: &mut Output) {
        let code = match outcome {
            Outcome::Replied => return,
            Outcome::Ok => 0u64,
            Outcome::Refused => 1u64,
        };
        if msg.header.need_reply() && self.protocol & PF_REPLY_ACK != 0 {
            msg.header.reply(&code.to_le_bytes(), &mut out.reply);
        }
    }

    fn refuse(&self, msg: &Message, why: &str) -> Outcome {
        tracing::warn!(dev = %self.cfg.name, req = msg.request.name(), "refused: {why}");
        Outcome::Refused
    }

    fn apply(&mut self, msg: Message, out: &mut Output) {
        let outcome = self.apply_inner(&msg, out);
        self.ack(&msg, outcome, out);
    }

    fn vring_mut(&mut self, index: u32) -> Option<&mut Vring> {
        self.vrings.get_mut(index as usize)
    }

    fn apply_inner(&mut self, msg: &Message, out: &mut Output) -> Outcome {
        let reply_u64 = |v: u64, out: &mut Output| {
            msg.header.reply(&v.to_le_bytes(), &mut out.reply);
            Outcome::Replied
        };
        // Take ownership of fds carried by the message without consuming it (logs need it).
        match &msg.request {
            Request::GetFeatures => reply_u64(self.cfg.features, out),
            Request::SetFeatures(f) => {
                if f & !self.cfg.features != 0 {
                    return self.refuse(
                        msg,
                        &format!(
                            "features {f:#x} include bits not offered ({:#x})",
                            self.cfg.features
                        ),
                    );
                }
                self.features = *f;
                Outcome::Ok
            }
            Request::SetOwner => {
                self.owner = true;
                Outcome::Ok
            }
            Request::ResetOwner | Request::ResetDevice => {
                self.reset();
                Outcome::Ok
            }
            Request::SetMemTable(..) => self.set_mem_table(msg),
            Request::SetVringNum(s) => {
                if s.num == 0 || s.num > u32::from(MAX_QUEUE_SIZE) || !s.num.is_power_of_two() {
                    return self.refuse(
                        msg,
                        &format!("queue size {} is not a power of two in 1..=32768", s.num),
                    );
                }
                let Some(v) = self.vring_mut(s.index) else {
                    return self.refuse(msg, &format!("no vring {}", s.index));
                };
                v.size = Some(s.num as u16);
                v.failed = false;
                Outcome::Ok
            }
            Request::SetVringAddr(a) => {
                if a.desc % desc::ALIGN != 0
                    || a.avail % avail::ALIGN != 0
                    || a.used % used::ALIGN != 0
                {
                    return self.refuse(
                        msg,
                        &format!(
                            "misaligned rings desc={:#x} avail={:#x} used={:#x}",
                            a.desc, a.avail, a.used
                        ),
                    );
                }
                let Some(v) = self.vring_mut(a.index) else {
                    return self.refuse(msg, &format!("no vring {}", a.index));
                };
                v.addr = Some(*a);
                v.failed = false;
                Outcome::Ok
            }
            Request::SetVringBase(s) => {
                if s.num > 0xffff {
                    return self.refuse(msg, &format!("base {} exceeds 16 bits", s.num));
                }
                let Some(v) = self.vring_mut(s.index) else {
                    return self.refuse(msg, &format!("no vring {}", s.index));
                };
                v.base = s.num as u16;
                v.failed = false;
                Outcome::Ok
            }
            Request::GetVringBase(s) => {
                let base = match self.vring_mut(s.index) {
                    Some(v) => {
                        // Stops the ring (spec): it restarts with the next kick.
                        v.started = false;
                        v.kick = None;
                        u32::from(v.base)
                    }
                    None => {
                        tracing::warn!(dev = %self.cfg.name, index = s.index, "GET_VRING_BASE for a vring that does not exist; replying 0");
                        0
                    }
                };
                let mut p = s.index.to_le_bytes().to_vec();
                p.extend_from_slice(&base.to_le_bytes());
                msg.header.reply(&p, &mut out.reply);
                Outcome::Replied
            }
            Request::SetVringKick(_) | Request::SetVringCall(_) | Request::SetVringErr(_) => {
                self.set_vring_fd(msg)
            }
            Request::GetProtocolFeatures => reply_u64(OFFERED_PROTOCOL_FEATURES, out),
            Request::SetProtocolFeatures(f) => {
                if f & !OFFERED_PROTOCOL_FEATURES != 0 {
                    return self.refuse(
                        msg,
                        &format!("protocol features {f:#x} include bits not offered"),
                    );
                }
                self.protocol = *f;
                Outcome::Ok
            }
            Request::GetQueueNum => reply_u64(u64::from(self.cfg.max_queue_pairs), out),
            Request::SetVringEnable(s) => {
                if s.num > 1 {
                    return self.refuse(msg, &format!("enable value {} is not 0 or 1", s.num));
                }
                let Some(v) = self.vring_mut(s.index) else {
                    return self.refuse(msg, &format!("no vring {}", s.index));
                };
                v.enabled = s.num == 1;
                Outcome::Ok
            }
            Request::SendRarp(_) => Outcome::Ok,
            Request::NetSetMtu(m) => {
                if !(68..=65535).contains(m) {
                    return self.refuse(msg, &format!("MTU {m} outside 68..=65535"));
                }
                self.mtu = *m as u16;
                Outcome::Ok
            }
            Request::GetConfig(c) => {
                self.get_config(&msg.header, c, out);
                Outcome::Replied
            }
            Request::SetStatus(s) => {
                if *s == 0 {
                    self.reset();
                }
                self.status = *s;
                Outcome::Ok
            }
            Request::GetStatus => reply_u64(u64::from(self.status), out),
            Request::Unknown(c) => self.refuse(msg, &format!("unknown request code {c}")),
        }
    }

    fn set_mem_table(&mut self, msg: &Message) -> Outcome {
        // The fds live in the message; we need them by value, so rebuild from duplicates.
        let Request::SetMemTable(specs, fds) = &msg.request else {
            return Outcome::Refused;
        };
        let dups: Result<Vec<OwnedFd>, _> = fds.iter().map(|f| f.try_clone()).collect();
        let dups = match dups {
            Ok(d) => d,
            Err(e) => return self.refuse(msg, &format!("cannot duplicate region fds: {e}")),
        };
        match GuestMemory::map(specs, dups) {
            Ok(m) => {
                tracing::info!(dev = %self.cfg.name, regions = m.region_count(), "memory table mapped");
                self.memory = Some(Arc::new(m));
                for v in &mut self.vrings {
                    v.failed = false;
                }
                Outcome::Ok
            }
            Err(e) => self.refuse(msg, &format!("memory table: {e}")),
        }
    }

    fn set_vring_fd(&mut self, msg: &Message) -> Outcome {
        let (f, kind) = match &msg.request {
            Request::SetVringKick(f) => (f, 0),
            Request::SetVringCall(f) => (f, 1),
            Request::SetVringErr(f) => (f, 2),
            _ => return Outcome::Refused,
        };
        let fd = match f.fd.as_ref().map(|fd| fd.try_clone()).transpose() {
            Ok(fd) => fd,
            Err(e) => return self.refuse(msg, &format!("cannot duplicate fd: {e}")),
        };
        let Some(v) = self.vring_mut(f.index) else {
            return self.refuse(msg, &format!("no vring {}", f.index));
        };
        match kind {
            0 => {
                v.kick = fd;
                v.started = true;
                v.failed = false;
            }
            1 => v.call = fd.map(Arc::new),
            _ => v.err = fd,
        }
        Outcome::Ok
    }

    fn get_config(&self, header: &Header, c: &ConfigSpace, out: &mut Output) {
        // struct virtio_net_config: mac[6], status u16, max_virtqueue_pairs u16, mtu u16.
        let mut space = [0u8; 12];
        space[..6].copy_from_slice(&self.cfg.mac);
        space[6..8].copy_from_slice(&1u16.to_le_bytes()); // VIRTIO_NET_S_LINK_UP
        space[8..10].copy_from_slice(&self.cfg.max_queue_pairs.to_le_bytes());
        space[10..12].copy_from_slice(&self.mtu.to_le_bytes());
        let (off, size) = (c.offset as usize, c.size as usize);
        let mut p = Vec::with_capacity(12 + size);
        p.extend_from_slice(&c.offset.to_le_bytes());
        match off.checked_add(size) {
            Some(end) if size <= 256 && end <= 256 => {
                p.extend_from_slice(&c.size.to_le_bytes());
                p.extend_from_slice(&c.flags.to_le_bytes());
                p.extend((off..end).map(|i| space.get(i).copied().unwrap_or(0)));
            }
            _ => {
                // Failure is a reply with an empty config payload.
                tracing::warn!(dev = %self.cfg.name, offset = c.offset, size = c.size, "GET_CONFIG outside the config space");
                p.extend_from_slice(&0u32.to_le_bytes());
                p.extend_from_slice(&c.flags.to_le_bytes());
            }
        }
        header.reply(&p, &mut out.reply);
    }

    fn reset(&mut self) {
        for v in &mut self.vrings {
            *v = Vring::default();
        }
        self.features = 0;
        self.status = 0;
        self.memory = None;
    }

    /// Reports vrings that became ready, once each: a vring already announced and not yet
    /// taken is not reported again (the driver takes it with its latest configuration), and one
    /// that stopped being ready is forgotten so it is reported when it is ready again.
    fn announce_ready(&mut self, out: &mut Output) {
        let has_memory = self.memory.is_some();
        let protocol_enabled = self.features & F_PROTOCOL_FEATURES != 0;
        for (i, v) in self.vrings.iter_mut().enumerate() {
            if v.lent {
                continue;
            }
            let enabled = !protocol_enabled || v.enabled;
            let ready = has_memory
                && !v.failed
                && v.started
                && enabled
                && v.size.is_some()
                && v.addr.is_some();
            if ready && !v.announced {
                out.ready.push(i as u16);
            }
            v.announced = ready;
        }
    }
}

fn signal_err(v: &Vring) {
    if let Some(err) = &v.err {
        let _ = rustix::io::write(err, &1u64.to_ne_bytes());
    }
}

#[cfg(test)]
mod tests;
