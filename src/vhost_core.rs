//! The vhost core: one thread serving every vhost-user socket (accept or connect with retry,
//! protocol messages, peer loss, reconnect). When a vif's virtqueue is ready it hands it to the
//! vif's forwarding lcore; when the session needs it back, or the peer is gone, it asks the
//! lcore for it and waits until the lcore has let go before the queue (and with the last queue,
//! the guest memory mapping) is dropped here.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crossbeam::channel::{bounded, Receiver, RecvTimeoutError, Sender};
use tracing::{info, warn};
use vhost_user::{Mode, PortConfig, PortEvent, PortState, SessionConfig, VhostUserPort, Virtqueue};

use crate::lcore::LcoreCmd;

/// How long the vhost core waits for a forwarding lcore to give a queue back. Lcores read
/// their commands every few microseconds; this only guards against a wedged lcore.
const LCORE_REPLY_TIMEOUT: Duration = Duration::from_secs(2);
/// While waiting for an lcore, the loop counter moves this often: the vhost core is waiting on
/// purpose, not stuck (health tells a stuck lcore by its own poll counter).
const WAIT_SLICE: Duration = Duration::from_millis(100);
/// Longest sleep between polls when nothing is due.
const IDLE_POLL: Duration = Duration::from_millis(5);

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
}

/// What the forwarding lcores report back.
pub enum LcoreEvent {
    /// The guest broke this queue's rules; the lcore stopped using it.
    QueueBroken { vif: u16, queue: Virtqueue },
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
}

pub type StatusMap = Arc<Mutex<HashMap<u16, VhostStatus>>>;

struct VhostVif {
    name: String,
    port: VhostUserPort,
    lcore: u8,
    lent: BTreeSet<u16>,
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
}

impl VhostCore {
    /// Serves until `stop` is set. Queues still lent when it returns stay with their lcores,
    /// which drop them when they stop.
    pub fn run(self, stop: &AtomicBool) {
        let mut vifs: BTreeMap<u16, VhostVif> = BTreeMap::new();
        let mut events = Vec::new();
        while !stop.load(Ordering::Relaxed) {
            self.loops.fetch_add(1, Ordering::Relaxed);
            while let Ok(cmd) = self.commands.try_recv() {
                self.command(cmd, &mut vifs);
            }
            while let Ok(ev) = self.lcore_events.try_recv() {
                match ev {
                    LcoreEvent::QueueBroken { vif, queue } => {
                        if let Some(v) = vifs.get_mut(&vif) {
                            warn!(vif = %v.name, socket = %v.port.path().display(), queue = queue.index(),
                                  reason = ?queue.broken(), "guest broke a virtqueue: queue stopped");
                            v.lent.remove(&queue.index());
                            if v.broken.is_none() {
                                v.broken = queue.broken().map(|b| {
                                    format!("the guest broke virtqueue {}: {b}", queue.index())
                                });
                            }
                            v.port.return_queue(queue, &mut events);
                            self.handle_events(vif, v, &mut events);
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
            wait_for_work(&vifs, next);
        }
        // Leave nothing lent: the lcores are still running at this point.
        for (&vif, v) in vifs.iter_mut() {
            self.reclaim_all(vif, v);
        }
    }

    fn command(&self, cmd: VhostCmd, vifs: &mut BTreeMap<u16, VhostVif>) {
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
                            lent: BTreeSet::new(),
                            broken: None,
                        },
                    );
                });
                self.publish(vifs);
                let _ = reply.send(result.map_err(|e| e.to_string()));
            }
            VhostCmd::Del { vif, reply } => {
                if let Some(mut v) = vifs.remove(&vif) {
                    self.reclaim_all(vif, &mut v);
                    info!(vif = %v.name, socket = %v.port.path().display(), "vhost-user vif removed");
                    // Dropping the port closes the connection (and the listening socket).
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
                            if let Some(tx) = self.lcores.get(usize::from(v.lcore)) {
                                if tx.send(LcoreCmd::AttachVirtqueue { vif, queue }).is_ok() {
                                    v.lent.insert(i);
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
                        if v.lent.remove(&i) {
                            if let Some(q) = self.reclaim(vif, v.lcore, i) {
                                v.port.return_queue(q, events);
                            }
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

    /// Takes every queue of the vif back from its lcore and drops them here (with the last one
    /// the guest memory is unmapped, after the lcore can no longer touch it).
    fn reclaim_all(&self, vif: u16, v: &mut VhostVif) {
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
                        first_pair_lent: v.lent.contains(&0) && v.lent.contains(&1),
                        lcore: v.lcore,
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

/// Sleeps until a socket has something or `until`, whichever comes first.
fn wait_for_work(vifs: &BTreeMap<u16, VhostVif>, until: Instant) {
    let timeout = until
        .saturating_duration_since(Instant::now())
        .min(IDLE_POLL);
    if vifs.is_empty() {
        std::thread::sleep(timeout);
        return;
    }
    let mut fds: Vec<rustix::event::PollFd<'_>> = vifs
        .values()
        .map(|v| {
            rustix::event::PollFd::from_borrowed_fd(v.port.poll_fd(), rustix::event::PollFlags::IN)
        })
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
