//! A forwarding lcore: owns its RX sources (a fabric RSS queue, the virtqueues of the vifs
//! assigned to it, single-queue kernel ports) and the TX side of the same vifs, and runs
//! rx → pipeline → per-destination TX until told to stop.
//!
//! Nothing here locks, allocates or blocks while forwarding. Between iterations the lcore holds
//! nothing of the tables, and says so to their reclamation domain (a quiescent state), so
//! storage that route removals freed can be reused; while it naps it is offline.
//! Packets for a vif another lcore
//! owns go through that lcore's multi-producer ring, tagged with the destination vif in the
//! mbuf's port field. Control reaches the lcore as [`LcoreCmd`]s on a channel it drains every
//! few iterations; replies tell the sender when the lcore has let go of something (a virtqueue
//! whose guest memory is about to be unmapped, a port about to be closed).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use crossbeam::channel::{Receiver, Sender};
use pmd_shim::{
    MbufBurst, Mempool, RingConsumer, RingProducer, RxQueue, StopFlag, TxQueue, BURST_MAX,
};
use vhost_user::SplitQueue;
use vrouter::flow::{FlowStage, FlowTable};
use vrouter::pipeline::{Pipeline, TxBatches};
use vrouter::qsbr::Qsbr;
use vrouter::stats::MAX_VIFS;

use crate::packet::Pkt;
use crate::vhost_core::LcoreEvent;

/// `owner` value of a vif no lcore transmits for.
pub const NO_OWNER: u8 = u8::MAX;

/// Instructions from the control side and the vhost core.
pub enum LcoreCmd {
    /// Poll `rx` (if any) as vif `vif` and transmit for the vif on `tx` (if any).
    AttachEth {
        vif: u16,
        rx: Option<RxQueue>,
        tx: Option<TxQueue>,
    },
    /// A ready virtqueue of vhost-user vif `vif`: odd index = guest TX (we dequeue), even =
    /// guest RX (we enqueue).
    AttachVirtqueue { vif: u16, queue: SplitQueue },
    /// Give virtqueue `index` of `vif` back (the session needs it, or guest memory goes away).
    DetachVirtqueue {
        vif: u16,
        index: u16,
        reply: Sender<Option<SplitQueue>>,
    },
    /// Drop everything of `vif` (port queue handles are dropped here; virtqueues are returned so
    /// their memory is unmapped on the vhost core, not on the forwarding path).
    DetachVif {
        vif: u16,
        reply: Sender<Vec<SplitQueue>>,
    },
    /// Which lcore transmits for `vif` (NO_OWNER: nobody, packets to it are dropped).
    SetOwner { vif: u16, owner: u8 },
    /// Where packets for the host go (the tap vif), if anywhere.
    SetHostVif { vif: Option<u16> },
}

/// Counters of the loop itself, written only by its lcore.
#[derive(Debug)]
#[repr(align(64))]
pub struct LoopCounters {
    pub polls: AtomicU64,
    pub busy_polls: AtomicU64,
    /// TSC cycles spent in polls that found packets, and in all polls.
    pub busy_cycles: AtomicU64,
    pub total_cycles: AtomicU64,
    /// Packets another lcore's inbox ring had no room for.
    pub ring_drops: AtomicU64,
    /// Per vif: packets the pipeline sent to the vif that its queue (or ring) refused. The
    /// pipeline counts a packet as transmitted when it queues it; this is what did not leave.
    pub tx_refused: Box<[AtomicU64]>,
}

impl Default for LoopCounters {
    fn default() -> Self {
        LoopCounters {
            polls: AtomicU64::new(0),
            busy_polls: AtomicU64::new(0),
            busy_cycles: AtomicU64::new(0),
            total_cycles: AtomicU64::new(0),
            ring_drops: AtomicU64::new(0),
            tx_refused: (0..MAX_VIFS).map(|_| AtomicU64::new(0)).collect(),
        }
    }
}

impl LoopCounters {
    #[inline(always)]
    fn add(c: &AtomicU64, n: u64) {
        // Single writer: load + store, no locked instruction.
        c.store(c.load(Ordering::Relaxed).wrapping_add(n), Ordering::Relaxed);
    }
}

enum RxSource {
    Eth { vif: u16, queue: RxQueue },
    Virtq { vif: u16, queue: SplitQueue },
}

enum TxSink {
    Eth(TxQueue),
    Virtq(SplitQueue),
}

/// Everything one forwarding lcore owns.
pub struct Lcore {
    pub index: u8,
    pub pipeline: Pipeline<FlowStage>,
    /// The tables' reclamation domain (`Tables::grace`); the lcore registers as a reader.
    pub grace: Arc<Qsbr>,
    /// The shared flow table, aged a slice at a time from every lcore's loop.
    pub flows: Arc<FlowTable>,
    pub counters: Arc<LoopCounters>,
    /// Tells the vhost core about queues a guest broke (handing them back).
    pub events: Sender<LcoreEvent>,
    pub pool: Mempool,
    pub commands: Receiver<LcoreCmd>,
    /// Producer ends of every lcore's inbox ring, by lcore index (ours included, unused).
    pub peers: Vec<RingProducer>,
    pub inbox: RingConsumer,
    pub idle_sleep: Option<Duration>,
}

struct State {
    rx: Vec<RxSource>,
    tx: Box<[Option<TxSink>]>,
    /// The vifs whose TX sink is a virtqueue (checked for guest breakage every poll).
    virtq_tx: Vec<u16>,
    owner: Box<[u8]>,
    host_vif: Option<u16>,
}

impl Lcore {
    /// The poll loop; returns 0 when stopped.
    pub fn run(self, stop: StopFlag) -> i32 {
        let Lcore {
            index,
            mut pipeline,
            grace,
            flows,
            counters,
            events,
            pool,
            commands,
            mut peers,
            mut inbox,
            idle_sleep,
        } = self;
        let mut st = State {
            rx: Vec::with_capacity(64),
            tx: (0..MAX_VIFS).map(|_| None).collect(),
            virtq_tx: Vec::with_capacity(MAX_VIFS),
            owner: vec![NO_OWNER; MAX_VIFS].into_boxed_slice(),
            host_vif: None,
        };
        let mut batches: TxBatches<Pkt> = TxBatches::new(BURST_MAX);
        let mut burst = MbufBurst::new();
        let mut spare: Vec<Pkt> = Vec::with_capacity(BURST_MAX);
        let mut staging = MbufBurst::new();
        let mut run: Vec<Pkt> = Vec::with_capacity(BURST_MAX);
        let mut iteration: u32 = 0;
        // Slept after the last poll: commands are read after every nap, so an idle lcore
        // answers the vhost core within one nap rather than sixteen.
        let mut napped = false;
        let tsc_per_ms = (pmd_shim::cycles::tsc_hz() / 1000).max(1);
        // Registered here, on the lcore, and gone (offline) when the loop ends.
        let reader = grace.register();
        loop {
            reader.quiescent();
            if iteration & 15 == 0 || napped {
                if stop.should_stop() {
                    break;
                }
                // Drain the whole queue, never a share of it: a backlog left by a wedged spell
                // may hold an AttachEth and, behind it, the DetachVif of a port closed since;
                // applied together, the closed port is never polled.
                while let Ok(cmd) = commands.try_recv() {
                    st.command(cmd);
                }
            }
            iteration = iteration.wrapping_add(1);
            let t0 = pmd_shim::cycles::rdtsc();
            // Flow time in milliseconds, from the TSC (no system call per iteration).
            let now_ms = t0 / tsc_per_ms;
            if iteration & 63 == 0 {
                flows.age_slice(now_ms, 16);
            }
            let mut work = 0usize;

            for i in 0..st.rx.len() {
                match &mut st.rx[i] {
                    RxSource::Eth { vif, queue } => {
                        let n = queue.rx_burst(&mut burst);
                        if n == 0 {
                            continue;
                        }
                        work += n;
                        pipeline.flow_hook().begin(*vif, now_ms);
                        pipeline.process(*vif, burst.drain().map(Pkt), &mut batches);
                    }
                    RxSource::Virtq { vif, queue } => {
                        refill(&pool, &mut spare, &mut staging);
                        let n = queue.dequeue_burst(&mut spare[..]);
                        if n == 0 {
                            continue;
                        }
                        work += n;
                        pipeline.flow_hook().begin(*vif, now_ms);
                        pipeline.process(*vif, spare.drain(..n), &mut batches);
                    }
                }
                st.flush(index, &mut batches, &mut peers, &counters, &mut staging);
            }
            st.hand_back_broken(&events);

            // Packets other lcores routed to vifs we transmit for, sent in runs per vif.
            let n = inbox.dequeue_burst(&mut burst);
            if n > 0 {
                work += n;
                let mut run_vif = None;
                for m in burst.drain() {
                    let vif = m.port();
                    if run_vif != Some(vif) {
                        if let Some(v) = run_vif {
                            st.send(index, &mut peers, &counters, &mut staging, v, &mut run);
                        }
                        run_vif = Some(vif);
                    }
                    run.push(Pkt(m));
                }
                if let Some(v) = run_vif {
                    st.send(index, &mut peers, &counters, &mut staging, v, &mut run);
                }
            }

            let spent = pmd_shim::cycles::rdtsc().wrapping_sub(t0);
            LoopCounters::add(&counters.polls, 1);
            LoopCounters::add(&counters.total_cycles, spent);
            napped = false;
            if work > 0 {
                LoopCounters::add(&counters.busy_polls, 1);
                LoopCounters::add(&counters.busy_cycles, spent);
            } else if let Some(nap) = idle_sleep {
                // Offline while asleep: writers waiting for a grace period need not wait for
                // the nap to end.
                reader.offline();
                std::thread::sleep(nap);
                reader.online();
                napped = true;
            }
        }
        drop(reader);
        // Handles drop here, on the lcore, before anyone stops the ports.
        drop(st);
        drop(spare);
        0
    }
}

/// Keeps `spare` at a full burst of empty mbufs for the next virtqueue dequeue.
#[inline]
fn refill(pool: &Mempool, spare: &mut Vec<Pkt>, staging: &mut MbufBurst) {
    let want = BURST_MAX - spare.len();
    if want == 0 {
        return;
    }
    if pool.alloc_bulk(staging, want) == 0 {
        // Pool short: take what single allocations give.
        while spare.len() < BURST_MAX {
            match pool.alloc() {
                Some(m) => spare.push(Pkt(m)),
                None => break,
            }
        }
        return;
    }
    spare.extend(staging.drain().map(Pkt));
}

impl State {
    /// Sends every per-vif batch the pipeline produced, hands host packets to the host vif,
    /// and releases the dropped ones (already counted by the pipeline).
    fn flush(
        &mut self,
        index: u8,
        batches: &mut TxBatches<Pkt>,
        peers: &mut [RingProducer],
        counters: &LoopCounters,
        staging: &mut MbufBurst,
    ) {
        batches.flush(|vif, q| self.send(index, peers, counters, staging, vif, q));
        if !batches.host.is_empty() {
            let mut host = std::mem::take(&mut batches.host);
            match self.host_vif {
                Some(h) => self.send(index, peers, counters, staging, h, &mut host),
                None => host.clear(),
            }
            batches.host = host;
        }
        batches.dropped.clear();
    }

    /// Transmits `q` on vif `vif`: on our own queue for it, else through the owner lcore's
    /// inbox ring. Whatever cannot leave is freed and counted in `tx_refused`; `q` ends empty.
    fn send(
        &mut self,
        index: u8,
        peers: &mut [RingProducer],
        counters: &LoopCounters,
        staging: &mut MbufBurst,
        vif: u16,
        q: &mut Vec<Pkt>,
    ) {
        let total = q.len();
        let sent = match self.tx.get_mut(usize::from(vif)).and_then(Option::as_mut) {
            Some(TxSink::Virtq(queue)) => {
                let n = queue.enqueue_burst(&q[..]);
                q.clear();
                n
            }
            Some(TxSink::Eth(queue)) => {
                let mut sent = 0;
                let mut it = q.drain(..);
                loop {
                    for p in it.by_ref() {
                        // Never full here: the loop below drains it at BURST_MAX.
                        let _ = staging.push(p.into_mbuf());
                        if staging.is_full() {
                            break;
                        }
                    }
                    if staging.is_empty() {
                        break;
                    }
                    sent += queue.tx_burst(staging);
                    staging.free_all();
                }
                sent
            }
            None => {
                let owner = self
                    .owner
                    .get(usize::from(vif))
                    .copied()
                    .unwrap_or(NO_OWNER);
                match peers.get_mut(usize::from(owner)) {
                    Some(ring) if owner != index => {
                        let mut sent = 0;
                        let mut it = q.drain(..);
                        loop {
                            for p in it.by_ref() {
                                let mut m = p.into_mbuf();
                                m.set_port(vif);
                                let _ = staging.push(m);
                                if staging.is_full() {
                                    break;
                                }
                            }
                            if staging.is_empty() {
                                break;
                            }
                            sent += ring.enqueue_burst(staging);
                            LoopCounters::add(&counters.ring_drops, staging.len() as u64);
                            staging.free_all();
                        }
                        sent
                    }
                    _ => {
                        q.clear();
                        0
                    }
                }
            }
        };
        if sent < total {
            if let Some(c) = counters.tx_refused.get(usize::from(vif)) {
                LoopCounters::add(c, (total - sent) as u64);
            }
        }
    }

    /// Stops using virtqueues the guest broke and hands them to the vhost core, which logs
    /// it and marks the vif down; every other vif keeps forwarding.
    #[inline]
    fn hand_back_broken(&mut self, events: &Sender<LcoreEvent>) {
        if self
            .rx
            .iter()
            .any(|s| matches!(s, RxSource::Virtq { queue, .. } if queue.broken().is_some()))
        {
            let mut i = 0;
            while i < self.rx.len() {
                match &self.rx[i] {
                    RxSource::Virtq { queue, .. } if queue.broken().is_some() => {
                        if let RxSource::Virtq { vif, queue } = self.rx.swap_remove(i) {
                            let _ = events.send(LcoreEvent::QueueBroken { vif, queue });
                        }
                    }
                    _ => i += 1,
                }
            }
        }
        let mut i = 0;
        while i < self.virtq_tx.len() {
            let vif = self.virtq_tx[i];
            let slot = &mut self.tx[usize::from(vif)];
            if matches!(slot, Some(TxSink::Virtq(q)) if q.broken().is_some()) {
                if let Some(TxSink::Virtq(queue)) = slot.take() {
                    let _ = events.send(LcoreEvent::QueueBroken { vif, queue });
                }
                self.virtq_tx.swap_remove(i);
            } else {
                i += 1;
            }
        }
    }

    fn command(&mut self, cmd: LcoreCmd) {
        match cmd {
            LcoreCmd::AttachEth { vif, rx, tx } => {
                if let Some(queue) = rx {
                    self.rx.push(RxSource::Eth { vif, queue });
                }
                if let (Some(queue), Some(slot)) = (tx, self.tx.get_mut(usize::from(vif))) {
                    *slot = Some(TxSink::Eth(queue));
                }
            }
            LcoreCmd::AttachVirtqueue { vif, queue } => {
                if queue.index() % 2 == 1 {
                    self.rx.push(RxSource::Virtq { vif, queue });
                } else if let Some(slot) = self.tx.get_mut(usize::from(vif)) {
                    *slot = Some(TxSink::Virtq(queue));
                    if !self.virtq_tx.contains(&vif) {
                        self.virtq_tx.push(vif);
                    }
                }
            }
            LcoreCmd::DetachVirtqueue { vif, index, reply } => {
                let _ = reply.send(self.take_virtqueue(vif, index));
            }
            LcoreCmd::DetachVif { vif, reply } => {
                let mut queues = Vec::new();
                let mut kept = Vec::with_capacity(self.rx.capacity());
                for src in self.rx.drain(..) {
                    match src {
                        RxSource::Virtq { vif: v, queue } if v == vif => queues.push(queue),
                        RxSource::Eth { vif: v, .. } if v == vif => {}
                        other => kept.push(other),
                    }
                }
                self.rx = kept;
                if let Some(slot) = self.tx.get_mut(usize::from(vif)) {
                    if let Some(TxSink::Virtq(q)) = slot.take() {
                        queues.push(q);
                    }
                }
                self.virtq_tx.retain(|&v| v != vif);
                if self.host_vif == Some(vif) {
                    self.host_vif = None;
                }
                let _ = reply.send(queues);
            }
            LcoreCmd::SetOwner { vif, owner } => {
                if let Some(slot) = self.owner.get_mut(usize::from(vif)) {
                    *slot = owner;
                }
            }
            LcoreCmd::SetHostVif { vif } => self.host_vif = vif,
        }
    }

    fn take_virtqueue(&mut self, vif: u16, index: u16) -> Option<SplitQueue> {
        if index % 2 == 1 {
            let pos = self.rx.iter().position(
                |s| matches!(s, RxSource::Virtq { vif: v, queue } if *v == vif && queue.index() == index),
            )?;
            match self.rx.remove(pos) {
                RxSource::Virtq { queue, .. } => Some(queue),
                RxSource::Eth { .. } => None,
            }
        } else {
            let slot = self.tx.get_mut(usize::from(vif))?;
            match slot.take() {
                Some(TxSink::Virtq(q)) if q.index() == index => {
                    self.virtq_tx.retain(|&v| v != vif);
                    Some(q)
                }
                other => {
                    *slot = other;
                    None
                }
            }
        }
    }
}
