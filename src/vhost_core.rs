//! The vhost core: one thread serving every vhost-user socket (accept or connect with retry,
//! protocol messages, peer loss, reconnect). When a vif's virtqueue is ready it hands it to the
//! vif's forwarding lcore; when the session needs it back, or the peer is gone, it asks the
//! lcore for it and waits until the lcore has let go before the queue (and with the last queue,
//! the guest memory mapping) is dropped here.
//!
//! Each queue pair of a vif is placed on its own lcore as it comes up: the one it is pinned to,
//! else the least loaded by queue count. Every lcore is told which lcore holds which pair (the
//! [`QueueMap`]), so it can send a vif's packets to the pair their flow hash picks. A pair moves
//! (a pin, or a rebalance when a vif goes) by a hand-over: the old lcore gives its rings back,
//! then the new one gets them; no two lcores ever hold one virtqueue.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::io::{Read, Write};
use std::os::fd::AsFd;
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crossbeam::channel::{bounded, Receiver, RecvTimeoutError, SendError, Sender};
use tracing::{info, warn};
use vhost_user::{Mode, PortConfig, PortEvent, PortState, SessionConfig, VhostUserPort, Virtqueue};

use crate::lcore::{LcoreCmd, QueueMap};

/// Queues (queue pairs, ports, kernel interfaces) each forwarding lcore serves, by lcore
/// index, for least-loaded placement; shared by the registry and the vhost core.
pub type LcoreLoad = Arc<Vec<AtomicU32>>;

/// The least loaded lcore index (the first of equals).
pub fn least_loaded(load: &[AtomicU32]) -> u8 {
    load.iter()
        .enumerate()
        .min_by_key(|(_, n)| n.load(Ordering::Relaxed))
        .map_or(0, |(i, _)| i as u8)
}

/// How long the vhost core waits for a forwarding lcore to give a queue back. Lcores read
/// their commands every few microseconds; this only guards against a wedged lcore.
const LCORE_REPLY_TIMEOUT: Duration = Duration::from_secs(2);
/// Wakes the vhost core from its poll when something is queued for it (one end of a socket
/// pair in its poll set), so it sleeps on its sockets rather than waking on a short timer: each
/// wake-up preempts whatever shares its CPU, a generator or a pod.
#[derive(Clone)]
pub struct Doorbell {
    bell: Arc<UnixStream>,
    ear: Arc<UnixStream>,
}

impl Doorbell {
    pub fn new() -> std::io::Result<Self> {
        let (bell, ear) = UnixStream::pair()?;
        bell.set_nonblocking(true)?;
        ear.set_nonblocking(true)?;
        Ok(Doorbell {
            bell: Arc::new(bell),
            ear: Arc::new(ear),
        })
    }

    /// Rings: a full socket buffer only means it is ringing already.
    pub fn ring(&self) {
        let _ = (&*self.bell).write(&[1]);
    }

    /// Rings on `signal` too (from the handler: one write, async-signal-safe).
    pub fn ring_on_signal(&self, signal: i32) -> std::io::Result<()> {
        signal_hook::low_level::pipe::register(signal, self.bell.try_clone()?)?;
        Ok(())
    }

    /// Silences it before the core looks at its channels: a ring after this wakes the next poll.
    fn silence(&self) {
        let mut rings = [0u8; 64];
        while matches!((&*self.ear).read(&mut rings), Ok(n) if n > 0) {}
    }
}

/// A channel into the vhost core whose every send rings its doorbell.
pub struct ToVhostCore<T> {
    tx: Sender<T>,
    bell: Doorbell,
}

impl<T> Clone for ToVhostCore<T> {
    fn clone(&self) -> Self {
        ToVhostCore {
            tx: self.tx.clone(),
            bell: self.bell.clone(),
        }
    }
}

impl<T> ToVhostCore<T> {
    pub fn send(&self, message: T) -> Result<(), SendError<T>> {
        self.tx.send(message)?;
        self.bell.ring();
        Ok(())
    }
}

/// An unbounded channel into the vhost core that `bell` wakes.
pub fn to_vhost_core<T>(bell: &Doorbell) -> (ToVhostCore<T>, Receiver<T>) {
    let (tx, rx) = crossbeam::channel::unbounded();
    (
        ToVhostCore {
            tx,
            bell: bell.clone(),
        },
        rx,
    )
}

/// While waiting for an lcore, the loop counter moves this often: the vhost core is waiting on
/// purpose, not stuck (health tells a stuck lcore by its own poll counter).
const WAIT_SLICE: Duration = Duration::from_millis(100);
/// Longest sleep between polls when nothing is due: commands and lcore events ring the
/// doorbell, sockets and deadlines wake the poll, so this only keeps the loop counter moving
/// well within health's stall limit.
const IDLE_POLL: Duration = Duration::from_millis(500);

/// Requests to the vhost core.
pub enum VhostCmd {
    Add {
        vif: u16,
        name: String,
        socket: PathBuf,
        mode: Mode,
        queue_pairs: u16,
        /// Group that may connect to a server-mode socket (`vhostsocket-group`).
        group: Option<u32>,
        mac: [u8; 6],
        mtu: u16,
        lcore: u8,
        reply: Sender<Result<(), String>>,
    },
    Del {
        vif: u16,
        reply: Sender<()>,
    },
    /// Serve queue pair `pair` of `vif` on lcore index `lcore` from now on (moving it there if
    /// it is up elsewhere), also after the guest reconnects.
    Pin {
        vif: u16,
        pair: u16,
        lcore: u8,
        reply: Sender<Result<(), String>>,
    },
}

/// What the forwarding lcores report back.
pub enum LcoreEvent {
    /// The guest broke this queue's rules; the lcore stopped using it.
    Broken { vif: u16, queue: Virtqueue },
    /// A ring lent again replaced this one of the same index on the lcore: it is only dropped,
    /// here rather than on the lcore.
    Replaced { queue: Virtqueue },
    /// The lcore took in ring `index` of `vif` (sent to it by `AttachVirtqueue`).
    Taken { vif: u16, index: u16 },
}

/// A vhost-user vif as status readers see it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VhostStatus {
    pub state: PortState,
    pub features: Option<u64>,
    pub queues_lent: u32,
    /// Both rings of the first queue pair are with the lcore: the vif forwards both ways.
    pub first_pair_lent: bool,
    pub lcore: u8,
    /// How the guest broke the device since it last connected (a virtqueue's rules, or its
    /// memory taken away under us), if it did.
    pub broken: Option<String>,
    /// The queue pairs up, each with the lcore index serving it and whether it is pinned there.
    pub queues: Vec<(u16, u8, bool)>,
}

pub type StatusMap = Arc<Mutex<HashMap<u16, VhostStatus>>>;

impl VhostVif {
    /// Ring `i` is no longer lent (and so no longer taken); whether it was lent.
    fn unlend(&mut self, i: u16) -> bool {
        self.taken.remove(&i);
        self.lent.remove(&i)
    }
}

struct VhostVif {
    name: String,
    port: VhostUserPort,
    /// The vif's home lcore: where its packets go while no queue pair is up.
    lcore: u8,
    queue_pairs: u16,
    lent: BTreeSet<u16>,
    /// The lent rings an lcore has said it took in: the vif is connected once both rings of
    /// its first pair are, not when they were only sent (a frame for the guest would be
    /// dropped until its RX ring is on the lcore).
    taken: BTreeSet<u16>,
    /// The lcore index serving each queue pair with a ring lent.
    placed: BTreeMap<u16, u8>,
    /// Queue pairs pinned to an lcore index.
    pins: BTreeMap<u16, u8>,
    /// Why a queue of the current frontend was broken, if one was.
    broken: Option<String>,
}

pub struct VhostCore {
    pub commands: Receiver<VhostCmd>,
    pub lcore_events: Receiver<LcoreEvent>,
    pub lcores: Vec<Sender<LcoreCmd>>,
    pub status: StatusMap,
    /// Bumped on every turn of the loop (at least every `IDLE_POLL`), for health to see it run.
    pub loops: Arc<AtomicU64>,
    /// Queues per lcore: placed queue pairs count here.
    pub load: LcoreLoad,
    /// Rung by every send on `commands` and `lcore_events`.
    pub bell: Doorbell,
}

impl VhostCore {
    /// Serves until `stop` is set. Queues still lent when it returns stay with their lcores,
    /// which drop them when they stop.
    pub fn run(self, stop: &AtomicBool) {
        let mut vifs: BTreeMap<u16, VhostVif> = BTreeMap::new();
        let mut events = Vec::new();
        while !stop.load(Ordering::Relaxed) {
            self.loops.fetch_add(1, Ordering::Relaxed);
            self.bell.silence();
            while let Ok(cmd) = self.commands.try_recv() {
                self.command(cmd, &mut vifs);
            }
            while let Ok(ev) = self.lcore_events.try_recv() {
                match ev {
                    LcoreEvent::Broken { vif, queue } => {
                        if let Some(v) = vifs.get_mut(&vif) {
                            warn!(vif = %v.name, socket = %v.port.path().display(), queue = queue.index(),
                                  reason = ?queue.broken(), "guest broke a virtqueue: queue stopped");
                            v.unlend(queue.index());
                            if v.broken.is_none() {
                                v.broken = queue.broken().map(|b| {
                                    format!("the guest broke virtqueue {}: {b}", queue.index())
                                });
                            }
                            let pair = queue.index() / 2;
                            if queue.index().is_multiple_of(2) {
                                self.broadcast_map(vif, v);
                            }
                            v.port.return_queue(queue, &mut events);
                            self.unplace_if_idle(v, pair);
                            self.handle_events(vif, v, &mut events);
                        }
                    }
                    LcoreEvent::Replaced { queue } => drop(queue),
                    LcoreEvent::Taken { vif, index } => {
                        if let Some(v) = vifs.get_mut(&vif) {
                            if v.lent.contains(&index) {
                                v.taken.insert(index);
                            }
                        }
                    }
                }
            }
            let now = Instant::now();
            let mut next = now + IDLE_POLL;
            for (&vif, v) in vifs.iter_mut() {
                v.port.process(now, &mut events);
                self.handle_events(vif, v, &mut events);
                if let Some(d) = v.port.next_deadline() {
                    next = next.min(d);
                }
            }
            self.publish(&vifs);
            wait_for_work(&self.bell, &vifs, next);
        }
        // Leave nothing lent: the lcores are still running at this point.
        for (&vif, v) in vifs.iter_mut() {
            self.reclaim_all(vif, v);
        }
    }

    fn command(&self, cmd: VhostCmd, vifs: &mut BTreeMap<u16, VhostVif>) {
        if let VhostCmd::Pin {
            vif,
            pair,
            lcore,
            reply,
        } = cmd
        {
            let result = match vifs.get_mut(&vif) {
                None => Err(format!("vif {vif} is not a vhost-user vif")),
                Some(v) if pair >= v.queue_pairs => Err(format!(
                    "queue {pair} out of range: the vif has {} queue pair(s) (0..={})",
                    v.queue_pairs,
                    v.queue_pairs.saturating_sub(1)
                )),
                Some(_) if usize::from(lcore) >= self.lcores.len() => {
                    Err(format!("no forwarding lcore index {lcore}"))
                }
                Some(v) => {
                    v.pins.insert(pair, lcore);
                    if v.placed.contains_key(&pair) {
                        self.move_pair(vif, v, pair, lcore);
                    }
                    info!(vif = %v.name, queue = pair, lcore, "queue pair pinned");
                    Ok(())
                }
            };
            self.publish(vifs);
            let _ = reply.send(result);
            return;
        }
        match cmd {
            VhostCmd::Add {
                vif,
                name,
                socket,
                mode,
                queue_pairs,
                group,
                mac,
                mtu,
                lcore,
                reply,
            } => {
                let mut cfg = PortConfig::new(socket.clone(), mode);
                cfg.socket_group = group;
                cfg.session = SessionConfig {
                    max_queue_pairs: queue_pairs.max(1),
                    mac,
                    mtu,
                    name: name.clone(),
                    ..SessionConfig::default()
                };
                let result = VhostUserPort::new(cfg).map(|port| {
                    info!(vif = %name, socket = %socket.display(), ?mode, lcore, "vhost-user vif waiting for its pod");
                    vifs.insert(
                        vif,
                        VhostVif {
                            name,
                            port,
                            lcore,
                            queue_pairs: queue_pairs.max(1),
                            lent: BTreeSet::new(),
                            taken: BTreeSet::new(),
                            placed: BTreeMap::new(),
                            pins: BTreeMap::new(),
                            broken: None,
                        },
                    );
                });
                self.publish(vifs);
                let _ = reply.send(result.map_err(|e| e.to_string()));
            }
            VhostCmd::Pin { .. } => {}
            VhostCmd::Del { vif, reply } => {
                if let Some(mut v) = vifs.remove(&vif) {
                    self.reclaim_all(vif, &mut v);
                    info!(vif = %v.name, socket = %v.port.path().display(), "vhost-user vif removed");
                    // Dropping the port closes the connection (and the listening socket).
                    self.rebalance(vifs);
                }
                self.publish(vifs);
                let _ = reply.send(());
            }
        }
    }

    fn handle_events(&self, vif: u16, v: &mut VhostVif, events: &mut Vec<PortEvent>) {
        while !events.is_empty() {
            let batch: Vec<PortEvent> = std::mem::take(events);
            for ev in batch {
                match ev {
                    PortEvent::Connected => {
                        v.broken = None;
                        info!(vif = %v.name, socket = %v.port.path().display(), "vhost-user frontend connected");
                    }
                    PortEvent::QueueReady(i) => match v.port.take_queue(i) {
                        Ok(queue) => {
                            let lcore = self.place(v, i / 2);
                            if let Some(tx) = self.lcores.get(usize::from(lcore)) {
                                if tx.send(LcoreCmd::AttachVirtqueue { vif, queue }).is_ok() {
                                    v.lent.insert(i);
                                    if i.is_multiple_of(2) {
                                        self.broadcast_map(vif, v);
                                    }
                                    info!(vif = %v.name, vring = i, lcore, "virtqueue up");
                                    if v.lent.len()
                                        == usize::from(
                                            v.port.session().map_or(0, |s| s.vring_count() as u16),
                                        )
                                    {
                                        info!(vif = %v.name, socket = %v.port.path().display(), "vif up");
                                    }
                                }
                            }
                        }
                        Err(e) => {
                            warn!(vif = %v.name, queue = i, %e, "ready queue could not be taken")
                        }
                    },
                    PortEvent::QueueStop(i) => {
                        if v.unlend(i) {
                            if i.is_multiple_of(2) {
                                // First nobody sends to it any more, then it comes back.
                                self.broadcast_map(vif, v);
                            }
                            let lcore = v.placed.get(&(i / 2)).copied().unwrap_or(v.lcore);
                            if let Some(q) = self.reclaim(vif, lcore, i) {
                                v.port.return_queue(q, events);
                            }
                            self.unplace_if_idle(v, i / 2);
                        }
                    }
                    PortEvent::Disconnected => {
                        self.reclaim_all(vif, v);
                        info!(vif = %v.name, socket = %v.port.path().display(), "vif down: frontend left");
                    }
                }
            }
        }
    }

    /// Asks the lcore for queue `index` and waits until it has let go of it.
    fn reclaim(&self, vif: u16, lcore: u8, index: u16) -> Option<Virtqueue> {
        let (reply, answer) = bounded(1);
        self.lcores
            .get(usize::from(lcore))?
            .send(LcoreCmd::DetachVirtqueue { vif, index, reply })
            .ok()?;
        self.await_lcore(&answer).flatten()
    }

    /// An lcore's reply, or `None` after [`LCORE_REPLY_TIMEOUT`] (or if it is gone).
    fn await_lcore<T>(&self, answer: &Receiver<T>) -> Option<T> {
        let deadline = Instant::now() + LCORE_REPLY_TIMEOUT;
        loop {
            self.loops.fetch_add(1, Ordering::Relaxed);
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return None;
            }
            match answer.recv_timeout(left.min(WAIT_SLICE)) {
                Ok(reply) => return Some(reply),
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => return None,
            }
        }
    }

    /// The lcore index for queue pair `pair` of `v`: where it is, else where it is pinned,
    /// else one holding the fewest of the vif's pairs (its own lcore for each, as far as there
    /// are lcores), the least loaded of those (counted there from now on).
    fn place(&self, v: &mut VhostVif, pair: u16) -> u8 {
        if let Some(&l) = v.placed.get(&pair) {
            return l;
        }
        let spread = |l: usize| v.placed.values().filter(|&&p| usize::from(p) == l).count();
        let l = v
            .pins
            .get(&pair)
            .copied()
            .filter(|&l| usize::from(l) < self.lcores.len())
            .unwrap_or_else(|| {
                self.load
                    .iter()
                    .enumerate()
                    .min_by_key(|&(l, n)| (spread(l), n.load(Ordering::Relaxed)))
                    .map_or(0, |(l, _)| l as u8)
            });
        v.placed.insert(pair, l);
        if let Some(n) = self.load.get(usize::from(l)) {
            n.fetch_add(1, Ordering::Relaxed);
        }
        l
    }

    /// Forgets where pair `pair` of `v` is once neither of its rings is lent.
    fn unplace_if_idle(&self, v: &mut VhostVif, pair: u16) {
        if v.lent.contains(&(2 * pair)) || v.lent.contains(&(2 * pair + 1)) {
            return;
        }
        if let Some(l) = v.placed.remove(&pair) {
            self.unload(l);
        }
    }

    /// Tells every lcore which lcore holds each up pair of `vif` (a pair is up, for sending to
    /// the guest, while its guest RX ring is lent).
    fn broadcast_map(&self, vif: u16, v: &VhostVif) {
        let map = QueueMap::new(
            v.placed
                .iter()
                .filter(|(p, _)| v.lent.contains(&(2 * **p)))
                .map(|(&p, &l)| (p, l)),
        );
        for tx in &self.lcores {
            let _ = tx.send(LcoreCmd::SetQueueMap { vif, map });
        }
    }

    /// One queue fewer on lcore `lcore` (never below zero).
    fn unload(&self, lcore: u8) {
        if let Some(n) = self.load.get(usize::from(lcore)) {
            let _ = n.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |x| {
                Some(x.saturating_sub(1))
            });
        }
    }

    /// Lends `queue` of `vif` to lcore `lcore`; the queue back if that lcore is gone.
    fn attach(&self, lcore: u8, vif: u16, queue: Virtqueue) -> Option<Virtqueue> {
        let Some(tx) = self.lcores.get(usize::from(lcore)) else {
            return Some(queue);
        };
        match tx.send(LcoreCmd::AttachVirtqueue { vif, queue }) {
            Ok(()) => None,
            Err(SendError(LcoreCmd::AttachVirtqueue { queue, .. })) => Some(queue),
            // Not what was sent: nothing to give back.
            Err(SendError(_)) => None,
        }
    }

    /// Moves queue pair `pair` of `vif` to lcore index `to`: the lcore holding it gives back
    /// each lent ring (it has stopped touching it when it answers), then `to` gets them, then
    /// every lcore learns the new map. Packets of a flow cannot overtake each other: the guest
    /// TX ring is polled on `to` only once `to` has sent on what the old lcore handed it.
    fn move_pair(&self, vif: u16, v: &mut VhostVif, pair: u16, to: u8) {
        let Some(&from) = v.placed.get(&pair) else {
            return;
        };
        if from == to || usize::from(to) >= self.lcores.len() {
            return;
        }
        let mut taken = Vec::new();
        for ring in [2 * pair, 2 * pair + 1] {
            if !v.lent.contains(&ring) {
                continue;
            }
            match self.reclaim(vif, from, ring) {
                Some(q) => taken.push(q),
                None => {
                    // Handed back broken meanwhile (its event says so and is handled as
                    // such), or a wedged lcore that may still hold it: either way the pair
                    // stays where it is, with what was taken of it given back there.
                    warn!(vif = %v.name, vring = ring, lcore = from, "virtqueue not handed back: queue pair not moved");
                    let mut events = Vec::new();
                    for queue in taken {
                        if let Some(queue) = self.attach(from, vif, queue) {
                            v.unlend(queue.index());
                            v.port.return_queue(queue, &mut events);
                        }
                    }
                    self.handle_events(vif, v, &mut events);
                    return;
                }
            }
        }
        v.placed.insert(pair, to);
        self.unload(from);
        if let Some(n) = self.load.get(usize::from(to)) {
            n.fetch_add(1, Ordering::Relaxed);
        }
        let mut events = Vec::new();
        for queue in taken {
            // An lcore that is gone: the ring goes back to the session, never dropped here
            // (the session counts it lent until then, and would wait for it forever).
            if let Some(queue) = self.attach(to, vif, queue) {
                v.unlend(queue.index());
                v.port.return_queue(queue, &mut events);
            }
        }
        self.unplace_if_idle(v, pair);
        self.broadcast_map(vif, v);
        info!(vif = %v.name, queue = pair, from, to, "queue pair moved");
        self.handle_events(vif, v, &mut events);
    }

    /// Evens the lcores' queue counts out after a vif left: while the busiest lcore has two or
    /// more queues than the idlest, an unpinned pair moves from the one to the other.
    fn rebalance(&self, vifs: &mut BTreeMap<u16, VhostVif>) {
        for _ in 0..64 {
            let counts: Vec<u32> = self
                .load
                .iter()
                .map(|n| n.load(Ordering::Relaxed))
                .collect();
            let (Some((max_at, &max)), Some((min_at, &min))) = (
                counts.iter().enumerate().max_by_key(|(_, &n)| n),
                counts.iter().enumerate().min_by_key(|(_, &n)| n),
            ) else {
                return;
            };
            if max < min + 2 {
                return;
            }
            let (from, to) = (max_at as u8, min_at as u8);
            // An unpinned pair on the busiest lcore, of a vif with no pair on the idlest if
            // there is one (a vif's pairs stay spread).
            let movable = |v: &VhostVif| {
                v.placed
                    .iter()
                    .find(|(p, &l)| l == from && !v.pins.contains_key(p))
                    .map(|(&p, _)| p)
            };
            let candidate = vifs
                .iter()
                .filter(|(_, v)| !v.placed.values().any(|&l| l == to))
                .find_map(|(&vif, v)| movable(v).map(|p| (vif, p)))
                .or_else(|| {
                    vifs.iter()
                        .find_map(|(&vif, v)| movable(v).map(|p| (vif, p)))
                });
            let Some((vif, pair)) = candidate else {
                return;
            };
            if let Some(v) = vifs.get_mut(&vif) {
                self.move_pair(vif, v, pair, to);
            }
        }
    }

    /// Takes every queue of the vif back from its lcores and drops them here (with the last
    /// one the guest memory is unmapped, after the lcores can no longer touch it).
    fn reclaim_all(&self, vif: u16, v: &mut VhostVif) {
        // Nobody sends to the vif's rings any more.
        for tx in &self.lcores {
            let _ = tx.send(LcoreCmd::SetQueueMap {
                vif,
                map: QueueMap::EMPTY,
            });
        }
        // Rings away from the home lcore come back one by one (and are dropped here).
        let away: Vec<(u16, u8)> = v
            .lent
            .iter()
            .filter_map(|&i| v.placed.get(&(i / 2)).map(|&l| (i, l)))
            .filter(|&(_, l)| l != v.lcore)
            .collect();
        for (ring, lcore) in away {
            if self.reclaim(vif, lcore, ring).is_none() {
                warn!(vif = %v.name, lcore, vring = ring, "lcore did not release the vif's queue");
            }
        }
        for (_, l) in std::mem::take(&mut v.placed) {
            self.unload(l);
        }
        let (reply, answer) = bounded(1);
        if let Some(tx) = self.lcores.get(usize::from(v.lcore)) {
            if tx.send(LcoreCmd::DetachVif { vif, reply }).is_ok() {
                match self.await_lcore(&answer) {
                    Some(queues) => drop(queues),
                    None => {
                        warn!(vif = %v.name, lcore = v.lcore, "lcore did not release the vif's queues")
                    }
                }
            }
        }
        v.lent.clear();
        v.taken.clear();
    }

    fn publish(&self, vifs: &BTreeMap<u16, VhostVif>) {
        if let Ok(mut map) = self.status.lock() {
            map.clear();
            for (&vif, v) in vifs {
                map.insert(
                    vif,
                    VhostStatus {
                        state: v.port.state(),
                        features: v.port.session().map(|s| s.features()),
                        queues_lent: v.lent.len() as u32,
                        first_pair_lent: [0, 1]
                            .iter()
                            .all(|i| v.lent.contains(i) && v.taken.contains(i)),
                        lcore: v.placed.get(&0).copied().unwrap_or(v.lcore),
                        queues: v
                            .placed
                            .iter()
                            .map(|(&p, &l)| (p, l, v.pins.get(&p) == Some(&l)))
                            .collect(),
                        // A memory fault cuts the frontend off: the port keeps the reason
                        // until a new frontend attaches.
                        broken: v
                            .broken
                            .clone()
                            .or_else(|| v.port.fault().map(str::to_owned)),
                    },
                );
            }
        }
    }
}

/// Sleeps until the doorbell rings, a socket has something or `until`, whichever comes first.
fn wait_for_work(bell: &Doorbell, vifs: &BTreeMap<u16, VhostVif>, until: Instant) {
    let timeout = until
        .saturating_duration_since(Instant::now())
        .min(IDLE_POLL);
    let mut fds: Vec<rustix::event::PollFd<'_>> = std::iter::once(bell.ear.as_fd())
        .chain(vifs.values().map(|v| v.port.poll_fd()))
        .map(|fd| rustix::event::PollFd::from_borrowed_fd(fd, rustix::event::PollFlags::IN))
        .collect();
    let ts = rustix::time::Timespec {
        tv_sec: timeout.as_secs() as i64,
        tv_nsec: i64::from(timeout.subsec_nanos()),
    };
    let _ = rustix::event::poll(&mut fds, Some(&ts));
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A command wakes the sleeping vhost core at once: it does not wait out its idle poll.
    #[test]
    fn a_command_rings_the_sleeping_core_awake() {
        let bell = Doorbell::new().expect("doorbell");
        let (commands_tx, commands) = to_vhost_core(&bell);
        let (_events_tx, lcore_events) = to_vhost_core(&bell);
        let loops = Arc::new(AtomicU64::new(0));
        let core = VhostCore {
            commands,
            lcore_events,
            lcores: Vec::new(),
            status: StatusMap::default(),
            loops: loops.clone(),
            load: LcoreLoad::default(),
            bell: bell.clone(),
        };
        let stop = Arc::new(AtomicBool::new(false));
        let running = {
            let stop = stop.clone();
            std::thread::spawn(move || core.run(&stop))
        };
        let start = Instant::now();
        for _ in 0..5 {
            // Asleep by now: nothing else would wake it for IDLE_POLL.
            std::thread::sleep(Duration::from_millis(50));
            let (reply, answer) = bounded(1);
            let pin = VhostCmd::Pin {
                vif: 9,
                pair: 0,
                lcore: 0,
                reply,
            };
            assert!(commands_tx.send(pin).is_ok(), "the core takes commands");
            let said = answer.recv_timeout(LCORE_REPLY_TIMEOUT).expect("an answer");
            assert!(said.unwrap_err().contains("not a vhost-user vif"));
        }
        // Five answers, each after a nap; waiting out the idle poll would take ~2 s.
        let took = start.elapsed();
        assert!(took < IDLE_POLL * 2, "five commands took {took:?}");
        let turns = loops.load(Ordering::Relaxed);
        assert!(
            turns < 30,
            "{turns} turns: the core spins instead of sleeping"
        );
        stop.store(true, Ordering::Relaxed);
        bell.ring();
        running.join().expect("vhost core");
    }

    /// While the vhost core waits for an lcore to hand a queue back, its loop counter keeps
    /// moving: health must not take a deliberate wait for a stuck vhost core.
    #[test]
    fn waiting_for_a_slow_lcore_keeps_the_loop_counter_moving() {
        let (_commands_tx, commands) = bounded(1);
        let (_events_tx, lcore_events) = bounded(1);
        let (lcore_tx, lcore_rx) = bounded(4);
        let loops = Arc::new(AtomicU64::new(0));
        let core = VhostCore {
            commands,
            lcore_events,
            lcores: vec![lcore_tx],
            status: StatusMap::default(),
            loops: loops.clone(),
            load: LcoreLoad::default(),
            bell: Doorbell::new().expect("doorbell"),
        };
        // An lcore that takes a second to answer (an idle one napping between polls).
        let lcore = std::thread::spawn(move || match lcore_rx.recv() {
            Ok(LcoreCmd::DetachVirtqueue { reply, .. }) => {
                std::thread::sleep(Duration::from_secs(1));
                reply.send(None).is_ok()
            }
            _ => false,
        });
        let start = Instant::now();
        assert!(core.reclaim(3, 0, 0).is_none(), "the lcore had no queue");
        assert!(
            start.elapsed() >= Duration::from_secs(1),
            "it waited for the answer"
        );
        let turns = loops.load(Ordering::Relaxed);
        // One turn per 100 ms slice: about ten; before, none at all.
        assert!(turns >= 5, "{turns} turns counted during a one-second wait");
        assert!(
            lcore.join().expect("lcore thread"),
            "the lcore got the command"
        );
    }
}
