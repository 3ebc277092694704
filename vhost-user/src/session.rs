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
mod tests {
    use super::*;
    use crate::codec::{self, decode, Header, RequestCode, FLAG_NEED_REPLY, FLAG_VERSION_1};
    use crate::frontend::{DriverQueue, GuestRam};
    use crate::memory::RegionSpec;
    use crate::virtqueue::VecBuffer;
    use std::os::fd::AsFd;

    fn msg(
        request: impl Into<u32>,
        need_reply: bool,
        payload: &[u8],
        fds: Vec<OwnedFd>,
    ) -> Message {
        let flags = FLAG_VERSION_1 | if need_reply { FLAG_NEED_REPLY } else { 0 };
        decode(
            Header {
                request: request.into(),
                flags,
                size: payload.len() as u32,
            },
            payload,
            fds,
        )
        .unwrap()
    }

    /// Replies in `out`, as (request, payload) pairs.
    fn replies(out: &Output) -> Vec<(u32, Vec<u8>)> {
        let mut v = Vec::new();
        let mut b = &out.reply[..];
        while b.len() >= 12 {
            let req = u32::from_le_bytes(b[0..4].try_into().unwrap());
            let size = u32::from_le_bytes(b[8..12].try_into().unwrap()) as usize;
            v.push((req, b[12..12 + size].to_vec()));
            b = &b[12 + size..];
        }
        v
    }

    /// A reply as [`replies`] lists it.
    fn reply(request: RequestCode, payload: Vec<u8>) -> (u32, Vec<u8>) {
        (request.into(), payload)
    }

    fn send(s: &mut Session, m: Message) -> Output {
        let mut out = Output::default();
        s.handle(m, &mut out);
        out
    }

    fn ack(s: &mut Session, request: impl Into<u32>, payload: &[u8], fds: Vec<OwnedFd>) -> u64 {
        let request = request.into();
        let out = send(s, msg(request, true, payload, fds));
        let r = replies(&out);
        assert_eq!(r.len(), 1, "one REPLY_ACK for request {request}");
        u64::from_le_bytes(r[0].1[..8].try_into().unwrap())
    }

    fn u64p(v: u64) -> Vec<u8> {
        v.to_le_bytes().to_vec()
    }

    fn dup(ram: &GuestRam) -> OwnedFd {
        ram.fd().try_clone_to_owned().unwrap()
    }

    /// A session with features, REPLY_ACK and memory negotiated.
    fn negotiated(ram: &GuestRam, features: u64) -> Session {
        let mut s = Session::new(SessionConfig {
            max_queue_pairs: 2,
            ..SessionConfig::default()
        });
        send(&mut s, msg(RequestCode::SetOwner, false, &[], vec![]));
        send(
            &mut s,
            msg(RequestCode::SetFeatures, false, &u64p(features), vec![]),
        );
        send(
            &mut s,
            msg(
                RequestCode::SetProtocolFeatures,
                false,
                &u64p(OFFERED_PROTOCOL_FEATURES),
                vec![],
            ),
        );
        let mt = codec::mem_table_payload(&[ram.region()]);
        assert_eq!(
            ack(&mut s, RequestCode::SetMemTable, &mt, vec![dup(ram)]),
            0
        );
        s
    }

    /// Configures and enables vring `index`; returns every ready event the sequence produced.
    fn start(s: &mut Session, ram: &GuestRam, index: u32, q: &DriverQueue) -> Output {
        let mut all = Output::default();
        for (c, p) in [
            (
                RequestCode::SetVringNum,
                codec::vring_state_payload(index, u32::from(q.size)),
            ),
            (
                RequestCode::SetVringBase,
                codec::vring_state_payload(index, 0),
            ),
            (
                RequestCode::SetVringAddr,
                codec::vring_addr_payload(&q.addr(ram, index)),
            ),
            (
                RequestCode::SetVringKick,
                u64p(u64::from(index) | codec::VRING_NOFD_MASK),
            ),
            (
                RequestCode::SetVringEnable,
                codec::vring_state_payload(index, 1),
            ),
        ] {
            let out = send(s, msg(c, true, &p, vec![]));
            assert_eq!(replies(&out), vec![reply(c, u64p(0))], "{c:?}");
            all.ready.extend(out.ready);
            all.stop.extend(out.stop);
        }
        all
    }

    const F: u64 = OFFERED_FEATURES;

    #[test]
    fn offers_features_protocol_features_and_queue_count() {
        let mut s = Session::new(SessionConfig {
            max_queue_pairs: 3,
            ..SessionConfig::default()
        });
        let get = |s: &mut Session, c| {
            let out = send(s, msg(c, false, &[], vec![]));
            u64::from_le_bytes(replies(&out)[0].1[..8].try_into().unwrap())
        };
        assert_eq!(get(&mut s, RequestCode::GetFeatures), OFFERED_FEATURES);
        assert_eq!(
            get(&mut s, RequestCode::GetProtocolFeatures),
            PF_MQ | PF_REPLY_ACK | PF_STATUS
        );
        assert_eq!(get(&mut s, RequestCode::GetQueueNum), 3);
        assert_eq!(s.vring_count(), 6);
        for f in [
            feature::VERSION_1,
            feature::MRG_RXBUF,
            F_MQ,
            F_PROTOCOL_FEATURES,
            feature::EVENT_IDX,
            feature::INDIRECT_DESC,
        ] {
            assert_ne!(OFFERED_FEATURES & f, 0);
        }
    }

    #[test]
    fn refused_settings_leave_no_state_behind() {
        let ram = GuestRam::new(1 << 20).unwrap();
        let mut s = negotiated(&ram, F);
        // Unoffered feature bits.
        assert_eq!(
            ack(&mut s, RequestCode::SetFeatures, &u64p(F | 1 << 40), vec![]),
            1
        );
        assert_eq!(s.features(), F);
        // Unknown protocol feature bits.
        assert_eq!(
            ack(
                &mut s,
                RequestCode::SetProtocolFeatures,
                &u64p(1 << 60),
                vec![]
            ),
            1
        );
        assert_eq!(s.protocol_features(), OFFERED_PROTOCOL_FEATURES);
        // Invalid queue sizes.
        for bad in [0u32, 3, 100, 65536] {
            assert_eq!(
                ack(
                    &mut s,
                    RequestCode::SetVringNum,
                    &codec::vring_state_payload(0, bad),
                    vec![]
                ),
                1,
                "size {bad}"
            );
            assert_eq!(s.vring(0).unwrap().size, None);
        }
        assert_eq!(
            ack(
                &mut s,
                RequestCode::SetVringNum,
                &codec::vring_state_payload(0, 256),
                vec![]
            ),
            0
        );
        assert_eq!(
            ack(
                &mut s,
                RequestCode::SetVringNum,
                &codec::vring_state_payload(0, 300),
                vec![]
            ),
            1
        );
        assert_eq!(
            s.vring(0).unwrap().size,
            Some(256),
            "the earlier valid size stays"
        );
        // Vring indexes beyond the device.
        assert_eq!(
            ack(
                &mut s,
                RequestCode::SetVringNum,
                &codec::vring_state_payload(4, 256),
                vec![]
            ),
            1
        );
        assert_eq!(
            ack(
                &mut s,
                RequestCode::SetVringEnable,
                &codec::vring_state_payload(0, 7),
                vec![]
            ),
            1
        );
        assert_eq!(
            ack(
                &mut s,
                RequestCode::SetVringBase,
                &codec::vring_state_payload(0, 70000),
                vec![]
            ),
            1
        );
        assert_eq!(s.vring(0).unwrap().base, 0);
        // A memory table whose file is too small keeps the old table.
        let small = GuestRam::new(4096).unwrap();
        let lie = RegionSpec {
            memory_size: 1 << 30,
            ..small.region()
        };
        assert_eq!(
            ack(
                &mut s,
                RequestCode::SetMemTable,
                &codec::mem_table_payload(&[lie]),
                vec![dup(&small)]
            ),
            1
        );
        assert!(s.has_memory());
        // Misaligned ring addresses.
        let a = VringAddr {
            index: 0,
            desc: 0x1001,
            ..Default::default()
        };
        assert_eq!(
            ack(
                &mut s,
                RequestCode::SetVringAddr,
                &codec::vring_addr_payload(&a),
                vec![]
            ),
            1
        );
        // Unknown requests.
        assert_eq!(ack(&mut s, 77u32, &[1, 2, 3], vec![]), 1);
    }

    #[test]
    fn overlapping_regions_are_refused() {
        let ram = GuestRam::new(1 << 20).unwrap();
        let mut s = negotiated(&ram, F);
        let r = ram.region();
        let r2 = RegionSpec {
            guest_phys_addr: r.guest_phys_addr + 4096,
            userspace_addr: r.userspace_addr + (1 << 30),
            ..r
        };
        let p = codec::mem_table_payload(&[r, r2]);
        assert_eq!(
            ack(
                &mut s,
                RequestCode::SetMemTable,
                &p,
                vec![dup(&ram), dup(&ram)]
            ),
            1
        );
    }

    #[test]
    fn queue_becomes_ready_only_when_fully_configured_and_enabled() {
        let mut ram = GuestRam::new(1 << 20).unwrap();
        let q = DriverQueue::new(&mut ram, 64, 2048);
        let mut s = negotiated(&ram, F);
        // Out of order: kick first, then the rest; ring does not start until it is enabled.
        assert_eq!(
            ack(
                &mut s,
                RequestCode::SetVringKick,
                &u64p(1 | codec::VRING_NOFD_MASK),
                vec![]
            ),
            0
        );
        assert_eq!(
            ack(
                &mut s,
                RequestCode::SetVringAddr,
                &codec::vring_addr_payload(&q.addr(&ram, 1)),
                vec![]
            ),
            0
        );
        let out = send(
            &mut s,
            msg(
                RequestCode::SetVringNum,
                false,
                &codec::vring_state_payload(1, 64),
                vec![],
            ),
        );
        assert!(out.ready.is_empty(), "not enabled yet");
        assert!(s.take_queue(1).is_err());
        let out = send(
            &mut s,
            msg(
                RequestCode::SetVringEnable,
                false,
                &codec::vring_state_payload(1, 1),
                vec![],
            ),
        );
        assert_eq!(out.ready, vec![1]);
        let vq = s.take_queue(1).unwrap();
        assert!(s.vring(1).unwrap().lent);
        assert!(s.take_queue(1).is_err(), "cannot be lent twice");
        drop(vq);
    }

    #[test]
    fn ring_messages_before_the_memory_table_wait_for_it() {
        let mut ram = GuestRam::new(1 << 20).unwrap();
        let q = DriverQueue::new(&mut ram, 64, 2048);
        let mut s = Session::new(SessionConfig::default());
        // GET_VRING_BASE for a ring nobody configured: answered, nothing created.
        let out = send(
            &mut s,
            msg(
                RequestCode::GetVringBase,
                false,
                &codec::vring_state_payload(3, 0),
                vec![],
            ),
        );
        assert_eq!(
            replies(&out),
            vec![reply(
                RequestCode::GetVringBase,
                codec::vring_state_payload(3, 0)
            )]
        );
        let out = send(
            &mut s,
            msg(
                RequestCode::GetVringBase,
                false,
                &codec::vring_state_payload(99, 0),
                vec![],
            ),
        );
        assert_eq!(
            replies(&out).len(),
            1,
            "even a ring that does not exist gets its reply"
        );
        send(
            &mut s,
            msg(RequestCode::SetFeatures, false, &u64p(F), vec![]),
        );
        let mut ready = Vec::new();
        for (c, p) in [
            (RequestCode::SetVringKick, u64p(codec::VRING_NOFD_MASK)),
            (
                RequestCode::SetVringEnable,
                codec::vring_state_payload(0, 1),
            ),
            (
                RequestCode::SetVringAddr,
                codec::vring_addr_payload(&q.addr(&ram, 0)),
            ),
            (RequestCode::SetVringNum, codec::vring_state_payload(0, 64)),
        ] {
            ready.extend(send(&mut s, msg(c, false, &p, vec![])).ready);
        }
        assert!(ready.is_empty(), "no memory yet");
        assert!(s.take_queue(0).is_err());
        let out = send(
            &mut s,
            msg(
                RequestCode::SetMemTable,
                false,
                &codec::mem_table_payload(&[ram.region()]),
                vec![dup(&ram)],
            ),
        );
        assert_eq!(out.ready, vec![0]);
        assert!(s.take_queue(0).is_ok());
    }

    #[test]
    fn without_protocol_features_rings_start_enabled() {
        let mut ram = GuestRam::new(1 << 20).unwrap();
        let q = DriverQueue::new(&mut ram, 64, 2048);
        let mut s = Session::new(SessionConfig::default());
        send(
            &mut s,
            msg(
                RequestCode::SetFeatures,
                false,
                &u64p(feature::VERSION_1),
                vec![],
            ),
        );
        send(
            &mut s,
            msg(
                RequestCode::SetMemTable,
                false,
                &codec::mem_table_payload(&[ram.region()]),
                vec![dup(&ram)],
            ),
        );
        let mut ready = Vec::new();
        for (c, p) in [
            (RequestCode::SetVringNum, codec::vring_state_payload(0, 64)),
            (
                RequestCode::SetVringAddr,
                codec::vring_addr_payload(&q.addr(&ram, 0)),
            ),
            (RequestCode::SetVringKick, u64p(codec::VRING_NOFD_MASK)),
        ] {
            let out = send(&mut s, msg(c, false, &p, vec![]));
            assert!(
                out.reply.is_empty(),
                "no REPLY_ACK without the protocol feature"
            );
            ready.extend(out.ready);
        }
        assert_eq!(ready, vec![0]);
    }

    #[test]
    fn get_vring_base_on_a_lent_ring_waits_for_the_data_path_and_reports_its_position() {
        let mut ram = GuestRam::new(1 << 20).unwrap();
        let mut dq = DriverQueue::new(&mut ram, 64, 2048);
        let mut s = negotiated(&ram, F);
        assert_eq!(start(&mut s, &ram, 1, &dq).ready, vec![1]);
        let mut vq = s.take_queue(1).unwrap();
        for _ in 0..5 {
            assert!(dq.add_tx(&mut ram, 12, &[7u8; 60], 2048, false));
        }
        let mut bufs: Vec<VecBuffer> = (0..8).map(|_| VecBuffer::with_capacity(2048)).collect();
        assert_eq!(vq.dequeue_burst(&mut bufs), 5);
        assert_eq!(bufs[4].data(), &[7u8; 60]);

        let out = send(
            &mut s,
            msg(
                RequestCode::GetVringBase,
                false,
                &codec::vring_state_payload(1, 0),
                vec![],
            ),
        );
        assert_eq!(out.stop, vec![1]);
        assert!(out.reply.is_empty(), "reply held until the ring is back");
        assert!(s.is_blocked());
        let mut out = Output::default();
        s.return_queue(vq, &mut out);
        assert!(!s.is_blocked());
        let r = replies(&out);
        assert_eq!(
            r,
            vec![reply(
                RequestCode::GetVringBase,
                codec::vring_state_payload(1, 5)
            )]
        );
        let v = s.vring(1).unwrap();
        assert!(!v.started && !v.lent, "GET_VRING_BASE stops the ring");
        assert!(out.ready.is_empty());
    }

    #[test]
    fn new_memory_table_while_rings_run_takes_them_back_first_and_restarts_them() {
        let mut ram = GuestRam::new(1 << 20).unwrap();
        let dq = DriverQueue::new(&mut ram, 64, 2048);
        let mut s = negotiated(&ram, F);
        start(&mut s, &ram, 0, &dq);
        let vq = s.take_queue(0).unwrap();
        let out = send(
            &mut s,
            msg(
                RequestCode::SetMemTable,
                true,
                &codec::mem_table_payload(&[ram.region()]),
                vec![dup(&ram)],
            ),
        );
        assert_eq!(out.stop, vec![0]);
        let mut out = Output::default();
        s.return_queue(vq, &mut out);
        assert_eq!(
            replies(&out),
            vec![reply(RequestCode::SetMemTable, u64p(0))]
        );
        assert_eq!(out.ready, vec![0], "ring restarts over the new table");
    }

    #[test]
    fn rings_outside_mapped_memory_are_refused_at_start() {
        let mut ram = GuestRam::new(1 << 20).unwrap();
        let dq = DriverQueue::new(&mut ram, 64, 2048);
        let mut s = negotiated(&ram, F);
        let mut a = dq.addr(&ram, 0);
        a.used = 0x1000; // not in the table
        for (c, p) in [
            (RequestCode::SetVringNum, codec::vring_state_payload(0, 64)),
            (RequestCode::SetVringAddr, codec::vring_addr_payload(&a)),
            (RequestCode::SetVringKick, u64p(codec::VRING_NOFD_MASK)),
            (
                RequestCode::SetVringEnable,
                codec::vring_state_payload(0, 1),
            ),
        ] {
            assert_eq!(ack(&mut s, c, &p, vec![]), 0);
        }
        let e = s.take_queue(0).unwrap_err();
        assert!(matches!(e, Error::Memory(_)), "{e}");
        assert!(s.vring(0).unwrap().failed);
        // A ring straddling the end of memory is refused too.
        let mut a = dq.addr(&ram, 0);
        a.desc = ram.uva(crate::frontend::GPA_BASE + (1 << 20) - 16 * 8);
        assert_eq!(
            ack(
                &mut s,
                RequestCode::SetVringAddr,
                &codec::vring_addr_payload(&a),
                vec![]
            ),
            0
        );
        assert!(s.take_queue(0).is_err());
    }

    #[test]
    fn broken_queue_returned_signals_the_err_eventfd_and_stays_down_until_reconfigured() {
        let mut ram = GuestRam::new(1 << 20).unwrap();
        let mut dq = DriverQueue::new(&mut ram, 8, 2048);
        let mut s = negotiated(&ram, F);
        let err = rustix::event::eventfd(0, rustix::event::EventfdFlags::NONBLOCK).unwrap();
        assert_eq!(
            ack(
                &mut s,
                RequestCode::SetVringErr,
                &u64p(1),
                vec![err.try_clone().unwrap()]
            ),
            0
        );
        start(&mut s, &ram, 1, &dq);
        let mut vq = s.take_queue(1).unwrap();
        dq.set_avail_idx(&ram, 100);
        assert_eq!(vq.dequeue_burst(&mut [VecBuffer::with_capacity(64)]), 0);
        assert!(vq.broken().is_some());
        let mut out = Output::default();
        s.return_queue(vq, &mut out);
        assert!(out.ready.is_empty());
        assert!(s.vring(1).unwrap().failed);
        let mut b = [0u8; 8];
        assert_eq!(
            rustix::io::read(&err, &mut b).unwrap(),
            8,
            "error eventfd signalled"
        );
        // Reconfiguring the ring brings it back.
        dq.set_avail_idx(&ram, 0);
        assert_eq!(start(&mut s, &ram, 1, &dq).ready, vec![1]);
    }

    #[test]
    fn reset_and_status_zero_drop_rings_and_memory() {
        let mut ram = GuestRam::new(1 << 20).unwrap();
        let dq = DriverQueue::new(&mut ram, 64, 2048);
        let mut s = negotiated(&ram, F);
        start(&mut s, &ram, 0, &dq);
        assert_eq!(ack(&mut s, RequestCode::SetStatus, &u64p(0x0f), vec![]), 0);
        let out = send(&mut s, msg(RequestCode::GetStatus, false, &[], vec![]));
        assert_eq!(replies(&out)[0].1, u64p(0x0f));
        let vq = s.take_queue(0).unwrap();
        let out = send(&mut s, msg(RequestCode::SetStatus, false, &u64p(0), vec![]));
        assert_eq!(out.stop, vec![0]);
        let mut out = Output::default();
        s.return_queue(vq, &mut out);
        assert!(!s.has_memory());
        assert_eq!(s.vring(0).unwrap().size, None);
        assert_eq!(s.status(), 0);
        assert_eq!(ack(&mut s, RequestCode::ResetOwner, &[], vec![]), 0);
    }

    #[test]
    fn get_config_reports_the_net_config_space_and_refuses_out_of_range() {
        let cfg = SessionConfig {
            mac: [2, 0, 0, 0, 0, 9],
            mtu: 9000,
            max_queue_pairs: 2,
            ..SessionConfig::default()
        };
        let mut s = Session::new(cfg);
        let p = [0u32.to_le_bytes(), 12u32.to_le_bytes(), 0u32.to_le_bytes()].concat();
        let p = [p, vec![0; 12]].concat();
        let out = send(&mut s, msg(RequestCode::GetConfig, false, &p, vec![]));
        let r = &replies(&out)[0].1;
        assert_eq!(&r[12..18], &[2, 0, 0, 0, 0, 9]);
        assert_eq!(u16::from_le_bytes([r[20], r[21]]), 2);
        assert_eq!(u16::from_le_bytes([r[22], r[23]]), 9000);
        let p = [
            250u32.to_le_bytes(),
            12u32.to_le_bytes(),
            0u32.to_le_bytes(),
        ]
        .concat();
        let p = [p, vec![0; 12]].concat();
        let out = send(&mut s, msg(RequestCode::GetConfig, false, &p, vec![]));
        assert_eq!(
            replies(&out)[0].1.len(),
            12,
            "failure: empty config payload"
        );
    }

    #[test]
    fn call_fd_change_on_a_running_ring_goes_through_the_handshake() {
        let mut ram = GuestRam::new(1 << 20).unwrap();
        let dq = DriverQueue::new(&mut ram, 64, 2048);
        let mut s = negotiated(&ram, F);
        start(&mut s, &ram, 0, &dq);
        let vq = s.take_queue(0).unwrap();
        let call = rustix::event::eventfd(0, rustix::event::EventfdFlags::empty()).unwrap();
        let out = send(
            &mut s,
            msg(RequestCode::SetVringCall, true, &u64p(0), vec![call]),
        );
        assert_eq!(out.stop, vec![0]);
        // The session refuses to take more messages meanwhile.
        let out = send(&mut s, msg(RequestCode::SetOwner, true, &[], vec![]));
        assert_eq!(replies(&out), vec![reply(RequestCode::SetOwner, u64p(1))]);
        let mut out = Output::default();
        s.return_queue(vq, &mut out);
        assert_eq!(
            replies(&out),
            vec![reply(RequestCode::SetVringCall, u64p(0))]
        );
        assert_eq!(out.ready, vec![0]);
        let _ = ram.fd().as_fd();
    }
}
