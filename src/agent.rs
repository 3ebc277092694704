//! pkt0, the agent channel (`--agent-socket PATH`): packets the pipeline hands to the agent
//! (first packets of flows a policy leaves to it, DHCP from vifs without an address) and
//! packets the agent sends out of a vif or injects as if a vif had received them. The wire
//! format is `control_api::pkt0`.
//!
//! A forwarding lcore never waits for the agent: its [`TrapGate`] rate-limits traps per vif
//! (a token bucket of the lcore's own, no shared state) and pushes them into the lcore's own
//! bounded lock-free queue, counting each packet as handed to the agent (`to_agent`) or as a
//! named drop (`no_agent`, `dhcp_no_address`, `agent_rate_limited`, `agent_queue_full`). One
//! thread owns the socket: it drains the queues into the connected agent, and reads the
//! agent's messages (verdicts install flows; sends and injects go to lcore 0's queue as mbufs,
//! counted made or received by that lcore). A malformed message is logged and skipped.

use std::collections::HashMap;
use std::io::{ErrorKind, Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use control_api::pkt0::{self, FlowTuple, Message, Pkt0Error, HEADER_LEN, MAX_PAYLOAD};
use crossbeam::queue::ArrayQueue;
use pmd_shim::Mempool;
use tracing::{error, info, warn};
use vrouter::flow::{FlowKey, Policies};
use vrouter::pipeline::{Trap, TrapReason};
use vrouter::stats::MAX_VIFS;
use vrouter::tables::Tables;
use vrouter::{CoreStats, DropReason};

use crate::packet::Pkt;

/// Room of each lcore's queue to the agent thread, and of lcore 0's queue from it.
pub const QUEUE: usize = 1024;
/// Bytes waiting for a slow agent before further traps are lost (counted).
const OUT_LIMIT: usize = 4 << 20;

/// A packet on its way from the agent to an lcore.
pub struct Injected {
    pub pkt: Pkt,
    pub vif: u16,
    /// Run through the pipeline as received on `vif` (else: sent out of it).
    pub as_received: bool,
}

/// Counters of the agent thread (its only writer).
#[derive(Debug, Default)]
pub struct AgentCounters {
    pub connections: AtomicU64,
    /// Traps written to the agent, and traps lost after the lcores handed them over (the
    /// agent went away or did not read).
    pub traps_sent: AtomicU64,
    pub traps_lost: AtomicU64,
    /// Messages received from the agent (every kind, malformed ones included), and those
    /// malformed.
    pub messages: AtomicU64,
    pub malformed: AtomicU64,
    pub verdicts: AtomicU64,
    pub verdicts_failed: AtomicU64,
    /// Sends and injects handed to lcore 0, and those that could not be (no buffer, queue
    /// full, vif out of range).
    pub sends: AtomicU64,
    pub injects: AtomicU64,
    pub inject_failed: AtomicU64,
    /// Trapped first packets not passed on: their vif already had `--agent-max-held` flows
    /// waiting for a verdict, or their flow was already waiting (a later packet of it).
    pub held_full: AtomicU64,
    pub held_repeat: AtomicU64,
}

fn bump(c: &AtomicU64) {
    c.fetch_add(1, Ordering::Relaxed);
}

/// What the lcores and the agent thread share.
pub struct AgentShared {
    pub connected: AtomicBool,
    pub traps: Box<[ArrayQueue<(Pkt, Trap)>]>,
    pub injects: ArrayQueue<Injected>,
    pub counters: AgentCounters,
    /// Traps per second per vif (per lcore), and the bucket's depth.
    pub rate: u32,
    pub burst: u32,
    /// Flows per vif held for the agent's verdict at most, and for how long (ms).
    pub max_held: usize,
    pub held_ms: u64,
}

impl AgentShared {
    pub fn new(
        lcores: usize,
        rate: u32,
        burst: u32,
        max_held: usize,
        held_ms: u64,
    ) -> Arc<AgentShared> {
        Arc::new(AgentShared {
            connected: AtomicBool::new(false),
            traps: (0..lcores).map(|_| ArrayQueue::new(QUEUE)).collect(),
            injects: ArrayQueue::new(QUEUE),
            counters: AgentCounters::default(),
            rate,
            burst: burst.max(1),
            max_held,
            held_ms,
        })
    }
}

/// One lcore's side of the channel: its queue and its vifs' token buckets.
pub struct TrapGate {
    shared: Arc<AgentShared>,
    index: usize,
    /// Per vif: thousandths of a trap, and when they were last filled (ms).
    tokens: Box<[u64]>,
    filled: Box<[u64]>,
}

impl TrapGate {
    pub fn new(shared: Arc<AgentShared>, index: usize) -> TrapGate {
        let full = u64::from(shared.burst) * 1000;
        TrapGate {
            shared,
            index,
            tokens: vec![full; MAX_VIFS].into_boxed_slice(),
            filled: vec![0; MAX_VIFS].into_boxed_slice(),
        }
    }

    pub fn shared_arc(&self) -> Arc<AgentShared> {
        Arc::clone(&self.shared)
    }

    /// Whether vif `vif` may trap one more packet at `now_ms`.
    #[inline]
    fn take(&mut self, vif: u16, now_ms: u64) -> bool {
        let i = usize::from(vif).min(MAX_VIFS - 1);
        let full = u64::from(self.shared.burst) * 1000;
        let elapsed = now_ms.saturating_sub(self.filled[i]);
        self.filled[i] = now_ms;
        let t = self.tokens[i]
            .saturating_add(elapsed.saturating_mul(u64::from(self.shared.rate)))
            .min(full);
        if t < 1000 {
            self.tokens[i] = t;
            return false;
        }
        self.tokens[i] = t - 1000;
        true
    }

    /// Hands `pkts` (with `traps[i]` for `pkts[i]`) to the agent thread, or drops and counts
    /// them; both end empty. Never blocks.
    pub fn hand(
        &mut self,
        stats: &CoreStats,
        now_ms: u64,
        pkts: &mut Vec<Pkt>,
        traps: &mut Vec<Trap>,
    ) {
        let connected = self.shared.connected.load(Ordering::Relaxed);
        for (p, t) in pkts.drain(..).zip(traps.drain(..)) {
            let refused = if !connected {
                Some(unheard(t))
            } else if !self.take(t.vif, now_ms) {
                Some(DropReason::AgentRateLimited)
            } else {
                match self.shared.traps[self.index].push((p, t)) {
                    Ok(()) => {
                        stats.to_agent.add(1);
                        None
                    }
                    Err(_) => Some(DropReason::AgentQueueFull),
                }
            };
            if let Some(r) = refused {
                stats.count_drops(r, t.vif, 1);
            }
        }
    }
}

/// What a trap is dropped as while no agent listens.
#[inline]
pub fn unheard(t: Trap) -> DropReason {
    match t.reason {
        TrapReason::Dhcp => DropReason::DhcpNoAddress,
        TrapReason::NewFlow => DropReason::NoAgent,
        // As before there was an agent to tell.
        TrapReason::Garp => DropReason::ArpNotForUs,
    }
}

/// Counts and drops packets for the agent when vrouterd has no agent socket.
pub fn drop_all(stats: &CoreStats, pkts: &mut Vec<Pkt>, traps: &mut Vec<Trap>) {
    for t in traps.drain(..) {
        stats.count_drops(unheard(t), t.vif, 1);
    }
    pkts.clear();
}

/// Binds `path` (a stale socket file is replaced) with mode 0600.
pub fn bind(path: &Path) -> Result<UnixListener> {
    if path.exists() {
        std::fs::remove_file(path)
            .with_context(|| format!("removing stale agent socket {}", path.display()))?;
    }
    let l = UnixListener::bind(path)
        .with_context(|| format!("binding agent socket {}", path.display()))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
        .with_context(|| format!("chmod 0600 {}", path.display()))?;
    l.set_nonblocking(true)?;
    Ok(l)
}

/// What the agent thread needs besides the shared state.
pub struct AgentThread {
    pub shared: Arc<AgentShared>,
    pub listener: UnixListener,
    pub path: PathBuf,
    pub policies: Arc<Policies>,
    pub tables: Arc<Tables>,
    pub pool: Mempool,
}

/// Flows whose first packet went to the agent and that wait for its verdict, by vif; a flow
/// waits at most `held_ms`, then a new packet of it goes to the agent again.
#[derive(Default)]
struct Held {
    until: HashMap<(u16, u16, FlowTuple), u64>,
    per_vif: HashMap<u16, usize>,
}

impl Held {
    fn expire(&mut self, now_ms: u64) {
        let per_vif = &mut self.per_vif;
        self.until.retain(|&(vif, _, _), &mut t| {
            let keep = t > now_ms;
            if !keep {
                if let Some(n) = per_vif.get_mut(&vif) {
                    *n = n.saturating_sub(1);
                }
            }
            keep
        });
    }

    fn decided(&mut self, vif: u16, vrf: u16, t: FlowTuple) {
        if self.until.remove(&(vif, vrf, t)).is_some() {
            if let Some(n) = self.per_vif.get_mut(&vif) {
                *n = n.saturating_sub(1);
            }
        }
    }
}

struct Peer {
    stream: UnixStream,
    out: Vec<u8>,
    inp: Vec<u8>,
}

impl AgentThread {
    /// Serves one agent at a time until `stop`; removes the socket file at the end.
    pub fn run(self, stop: &AtomicBool) {
        let tsc_per_ms = (pmd_shim::cycles::tsc_hz() / 1000).max(1);
        let mut peer: Option<Peer> = None;
        let mut chunk = vec![0u8; 64 * 1024];
        let mut held = Held::default();
        while !stop.load(Ordering::Relaxed) {
            let mut busy = false;
            let now_ms = pmd_shim::cycles::rdtsc() / tsc_per_ms;
            held.expire(now_ms);
            match self.listener.accept() {
                Ok((stream, _)) if peer.is_none() && stream.set_nonblocking(true).is_ok() => {
                    info!(path = %self.path.display(), "agent connected to pkt0");
                    bump(&self.shared.counters.connections);
                    peer = Some(Peer {
                        stream,
                        out: Vec::new(),
                        inp: Vec::new(),
                    });
                    self.shared.connected.store(true, Ordering::Relaxed);
                }
                Ok(_) => warn!("a second agent tried pkt0 while one is connected: refused"),
                Err(e) if e.kind() == ErrorKind::WouldBlock => {}
                Err(e) => warn!("pkt0 accept: {e}"),
            }
            // Traps, from every lcore's queue.
            for q in self.shared.traps.iter() {
                while let Some((p, t)) = q.pop() {
                    busy = true;
                    match peer.as_mut() {
                        Some(pr) if pr.out.len() < OUT_LIMIT => {
                            if self.hold(&mut held, &p, t, now_ms) {
                                write_trap(&mut pr.out, &p, t);
                                bump(&self.shared.counters.traps_sent);
                            }
                        }
                        _ => bump(&self.shared.counters.traps_lost),
                    }
                }
            }
            let mut gone = false;
            if let Some(pr) = peer.as_mut() {
                while !pr.out.is_empty() {
                    match pr.stream.write(&pr.out) {
                        Ok(0) => {
                            gone = true;
                            break;
                        }
                        Ok(n) => {
                            pr.out.drain(..n);
                            busy = true;
                        }
                        Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                        Err(_) => {
                            gone = true;
                            break;
                        }
                    }
                }
                loop {
                    match pr.stream.read(&mut chunk) {
                        Ok(0) => {
                            gone = true;
                            break;
                        }
                        Ok(n) => {
                            pr.inp.extend_from_slice(&chunk[..n]);
                            busy = true;
                        }
                        Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                        Err(_) => {
                            gone = true;
                            break;
                        }
                    }
                }
                self.take_messages(&mut pr.inp, now_ms, &mut held);
            }
            if gone {
                info!("agent left pkt0");
                held = Held::default();
                self.shared.connected.store(false, Ordering::Relaxed);
                peer = None;
            }
            if !busy {
                std::thread::sleep(Duration::from_millis(1));
            }
        }
        self.shared.connected.store(false, Ordering::Relaxed);
        let _ = std::fs::remove_file(&self.path);
    }

    /// Whether trapped packet `p` goes on to the agent: DHCP always; a new flow's first packet
    /// if its flow is not already held and its vif holds fewer than `max_held` (it is held
    /// from now on). Counted when not.
    fn hold(&self, held: &mut Held, p: &Pkt, t: Trap, now_ms: u64) -> bool {
        let c = &self.shared.counters;
        let Some(tuple) = (t.reason == TrapReason::NewFlow)
            .then(|| FlowTuple::of_frame(p.0.data()))
            .flatten()
        else {
            return true;
        };
        let key = (t.vif, t.vrf, tuple);
        if held.until.contains_key(&key) {
            bump(&c.held_repeat);
            return false;
        }
        let n = held.per_vif.entry(t.vif).or_insert(0);
        if *n >= self.shared.max_held {
            bump(&c.held_full);
            return false;
        }
        *n += 1;
        held.until.insert(key, now_ms + self.shared.held_ms);
        true
    }

    /// Decodes and applies every whole message at the start of `inp`, which keeps the rest.
    fn take_messages(&self, inp: &mut Vec<u8>, now_ms: u64, held: &mut Held) {
        let c = &self.shared.counters;
        let mut at = 0;
        while at < inp.len() {
            match Message::decode(&inp[at..]) {
                Ok((m, n)) => {
                    at += n;
                    bump(&c.messages);
                    if let Message::Verdict(v) = &m {
                        held.decided(v.vif, v.vrf, v.tuple);
                    }
                    self.apply(m, now_ms);
                }
                Err(Pkt0Error::Short(_)) => break,
                Err(e) => {
                    // The length field says where the next message starts: skip this one.
                    error!("pkt0: malformed message from the agent skipped: {e}");
                    bump(&c.messages);
                    bump(&c.malformed);
                    let skip = e.skip().min(inp.len() - at);
                    at += skip.max(1);
                }
            }
        }
        inp.drain(..at);
    }

    fn apply(&self, m: Message, now_ms: u64) {
        let c = &self.shared.counters;
        match m {
            Message::Verdict(v) => {
                let addr = |a: std::net::IpAddr| match a {
                    std::net::IpAddr::V4(x) => u128::from(u32::from(x)),
                    std::net::IpAddr::V6(x) => u128::from(x),
                };
                let key = FlowKey {
                    vrf: v.vrf,
                    v6: v.tuple.src.is_ipv6(),
                    proto: v.tuple.proto,
                    src: addr(v.tuple.src),
                    dst: addr(v.tuple.dst),
                    sport: v.tuple.sport,
                    dport: v.tuple.dport,
                };
                match self
                    .policies
                    .install_decided(&self.tables, key, v.vif, v.allow, now_ms)
                {
                    Ok(()) => bump(&c.verdicts),
                    Err(e) => {
                        error!("pkt0: verdict for {key:?} not installed: {e:?}");
                        bump(&c.verdicts_failed);
                    }
                }
            }
            Message::Send { vif, frame } | Message::Inject { vif, frame }
                if usize::from(vif) >= MAX_VIFS =>
            {
                error!(
                    "pkt0: vif {vif} out of range ({} bytes dropped)",
                    frame.len()
                );
                bump(&c.inject_failed);
            }
            Message::Send { vif, frame } => self.inject(vif, &frame, false),
            Message::Inject { vif, frame } => self.inject(vif, &frame, true),
            Message::Trap { .. } => {
                error!("pkt0: the agent sent a trap message; skipped");
                bump(&c.malformed);
            }
        }
    }

    fn inject(&self, vif: u16, frame: &[u8], as_received: bool) {
        let c = &self.shared.counters;
        let Ok(m) = self.pool.alloc_with(frame) else {
            bump(&c.inject_failed);
            return;
        };
        let i = Injected {
            pkt: Pkt(m),
            vif,
            as_received,
        };
        match self.shared.injects.push(i) {
            Ok(()) if as_received => bump(&c.injects),
            Ok(()) => bump(&c.sends),
            Err(_) => bump(&c.inject_failed),
        }
    }
}

/// Appends a trap message for `p` to `out` (the frame cut at pkt0's largest payload).
fn write_trap(out: &mut Vec<u8>, p: &Pkt, t: Trap) {
    let len = (p.0.pkt_len() as usize).min(MAX_PAYLOAD);
    let h = pkt0::Header {
        kind: pkt0::Kind::Trap,
        len: len as u16,
        reason: match t.reason {
            TrapReason::NewFlow => pkt0::Reason::NewFlow,
            TrapReason::Dhcp => pkt0::Reason::Dhcp,
            TrapReason::Garp => pkt0::Reason::Garp,
        },
        flags: 0,
        vif: t.vif,
        vrf: t.vrf,
        flow_id: pkt0::NO_FLOW,
    };
    out.reserve(HEADER_LEN + len);
    out.extend_from_slice(&h.encode());
    let mut left = len;
    for seg in p.0.segments() {
        let n = seg.len().min(left);
        out.extend_from_slice(&seg[..n]);
        left -= n;
    }
}
