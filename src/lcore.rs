//! A forwarding lcore: owns its RX sources (a fabric RSS queue, the virtqueues of the vifs
//! assigned to it, kernel interfaces) and the TX side of the same vifs, and runs
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
    KernelRx, KernelTx, MbufBurst, Mempool, RingConsumer, RingProducer, RxQueue, StopFlag, TxQueue,
    BURST_MAX,
};
use vhost_user::{NetHdr, QueueStats, Virtqueue};
use vrouter::flow::{FlowStage, FlowTable};
use vrouter::offload::{gso, TxCaps};
use vrouter::pipeline::{Pipeline, TxBatches};
use vrouter::qsbr::Qsbr;
use vrouter::stats::MAX_VIFS;
use vrouter::{CoreStats, DropReason};

use crate::agent::{self, TrapGate};
use crate::mirror;
use crate::offload;
use crate::packet::{self, Pkt};
use crate::vhost_core::{LcoreEvent, ToVhostCore};
use vrouter::mirror::{MirrorCfg, Mirrors};

/// Microseconds between two flow-aging slices on an lcore, and the time one lcore takes to
/// age the whole table (the shortest idle timeout, a closing TCP flow's, is 10 s).
const AGE_EVERY_US: u64 = 100;
const AGE_SWEEP_MS: u64 = 1000;

/// `owner` value of a vif no lcore transmits for.
pub const NO_OWNER: u8 = u8::MAX;

/// Queue pairs a vhost-user vif can have (the API's `queues` limit).
pub const MAX_QUEUE_PAIRS: usize = 16;
/// Vrings of a vif: two per queue pair (even: guest RX, odd: guest TX).
pub const MAX_VRINGS: usize = 2 * MAX_QUEUE_PAIRS;

/// Where a multi-queue vif's packets go: the queue pairs whose guest RX ring is with an lcore,
/// in order, and the lcore that holds each. A packet's flow hash picks one of the `n` slots, so
/// a flow stays on one queue while the set of pairs stays the same.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QueueMap {
    pub n: u8,
    pub pairs: [u8; MAX_QUEUE_PAIRS],
    pub lcores: [u8; MAX_QUEUE_PAIRS],
}

impl QueueMap {
    pub const EMPTY: QueueMap = QueueMap {
        n: 0,
        pairs: [0; MAX_QUEUE_PAIRS],
        lcores: [NO_OWNER; MAX_QUEUE_PAIRS],
    };

    /// The map of `(pair, lcore)` placements (at most [`MAX_QUEUE_PAIRS`] are kept).
    pub fn new(placed: impl IntoIterator<Item = (u16, u8)>) -> QueueMap {
        let mut m = QueueMap::EMPTY;
        for (pair, lcore) in placed.into_iter().take(MAX_QUEUE_PAIRS) {
            let i = usize::from(m.n);
            m.pairs[i] = u8::try_from(pair).unwrap_or(u8::MAX);
            m.lcores[i] = lcore;
            m.n += 1;
        }
        m
    }

    /// The index of the slot serving flow hash `hash`; `None` when no pair is up.
    #[inline(always)]
    pub fn slot(&self, hash: u32) -> Option<u8> {
        if self.n == 0 {
            return None;
        }
        Some((hash % u32::from(self.n)) as u8)
    }

    /// The (pair, lcore) of slot `i` (from [`QueueMap::slot`]).
    #[inline(always)]
    pub fn at(&self, i: u8) -> (u8, u8) {
        let i = usize::from(i) % MAX_QUEUE_PAIRS;
        (self.pairs[i], self.lcores[i])
    }
}

/// Instructions from the control side and the vhost core.
pub enum LcoreCmd {
    /// Poll `rx` (if any) as vif `vif` and transmit for the vif on `tx` (if any).
    AttachEth {
        vif: u16,
        rx: Option<RxQueue>,
        tx: Option<TxQueue>,
    },
    /// Poll kernel interface `rx` as vif `vif` (frames up to `mtu`, GSO packets excepted) and
    /// transmit for the vif on `tx`.
    AttachKernel {
        vif: u16,
        mtu: u16,
        rx: KernelRx,
        tx: KernelTx,
    },
    /// A ready virtqueue of vhost-user vif `vif`: odd index = guest TX (we dequeue), even =
    /// guest RX (we enqueue).
    AttachVirtqueue { vif: u16, queue: Virtqueue },
    /// Give virtqueue `index` of `vif` back (the session needs it, or guest memory goes away).
    DetachVirtqueue {
        vif: u16,
        index: u16,
        reply: Sender<Option<Virtqueue>>,
    },
    /// Drop everything of `vif` (port queue handles are dropped here; virtqueues are returned so
    /// their memory is unmapped on the vhost core, not on the forwarding path).
    DetachVif {
        vif: u16,
        reply: Sender<Vec<Virtqueue>>,
    },
    /// Which lcore transmits for `vif` (NO_OWNER: nobody, packets to it are dropped).
    SetOwner { vif: u16, owner: u8 },
    /// Which lcore holds each up queue pair of vhost-user vif `vif`: packets to it go to the
    /// pair their flow hash picks, on that lcore (through its inbox if it is another).
    SetQueueMap { vif: u16, map: QueueMap },
    /// Where packets for the host go (the tap vif), if anywhere.
    SetHostVif { vif: Option<u16> },
    /// Copy vif `vif`'s packets as `mirror` says, or stop.
    SetMirror { vif: u16, mirror: Option<MirrorCfg> },
    /// Send a frame the control side made (an ARP request of the neighbour resolver) out of
    /// vif `vif`, counted as a packet made.
    SendFrame { vif: u16, pkt: pmd_shim::Mbuf },
}

/// Frames from the control side an lcore holds between two command drains; more are dropped.
const OUTBOX: usize = 16;

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
    /// Per mirrored vif: copies made, copies that found no buffer, and copies skipped while
    /// the analyzer's queue was full.
    pub mirror_copies: Box<[AtomicU64]>,
    pub mirror_failures: Box<[AtomicU64]>,
    pub mirror_skipped: Box<[AtomicU64]>,
    /// Frames the control side made that this lcore sent on (or dropped, counted by reason).
    pub frames_made: AtomicU64,
    /// Packets through each vring of each vhost-user vif on this lcore (`vif * MAX_VRINGS +
    /// vring`): dequeued from a guest TX ring, delivered into a guest RX ring.
    pub vring_packets: Box<[AtomicU64]>,
    /// Turns of the loop that began more than 10 µs, 100 µs and 1 ms after the one before
    /// (not counting turns after an idle nap): every packet that arrived meanwhile waited that
    /// long, whether the lcore was busy or its CPU was taken from it.
    pub poll_gaps: [AtomicU64; POLL_GAP_US.len()],
}

/// The thresholds of [`LoopCounters::poll_gaps`], in microseconds.
pub const POLL_GAP_US: [u64; 3] = [10, 100, 1000];

impl LoopCounters {
    /// Packets this lcore moved through vring `vring` of vif `vif`.
    pub fn vring(&self, vif: u16, vring: u16) -> u64 {
        self.vring_packets
            .get(usize::from(vif) * MAX_VRINGS + usize::from(vring))
            .map_or(0, |c| c.load(Ordering::Relaxed))
    }

    #[inline(always)]
    fn add_vring(&self, vif: u16, vring: u16, n: u64) {
        if let Some(c) = self
            .vring_packets
            .get(usize::from(vif) * MAX_VRINGS + usize::from(vring))
        {
            LoopCounters::add(c, n);
        }
    }
}

impl Default for LoopCounters {
    fn default() -> Self {
        LoopCounters {
            polls: AtomicU64::new(0),
            busy_polls: AtomicU64::new(0),
            busy_cycles: AtomicU64::new(0),
            total_cycles: AtomicU64::new(0),
            ring_drops: AtomicU64::new(0),
            mirror_copies: (0..MAX_VIFS).map(|_| AtomicU64::new(0)).collect(),
            mirror_failures: (0..MAX_VIFS).map(|_| AtomicU64::new(0)).collect(),
            mirror_skipped: (0..MAX_VIFS).map(|_| AtomicU64::new(0)).collect(),
            frames_made: AtomicU64::new(0),
            vring_packets: (0..MAX_VIFS * MAX_VRINGS)
                .map(|_| AtomicU64::new(0))
                .collect(),
            poll_gaps: Default::default(),
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

// The virtqueue variant is the big one and the common one: kept inline, since boxing it would
// add a pointer chase to every poll, and these values are made once and moved rarely.
#[allow(clippy::large_enum_variant)]
enum RxSource {
    Eth {
        vif: u16,
        queue: RxQueue,
    },
    /// `hold`: just handed over from another lcore; not polled until our inbox has been seen
    /// empty, so what the guest sent before the hand-over (and the old lcore routed to us)
    /// leaves before what it sends after.
    Virtq {
        vif: u16,
        queue: Virtqueue,
        hold: bool,
    },
    Kernel {
        vif: u16,
        mtu: u16,
        port: KernelRx,
    },
}

#[allow(clippy::large_enum_variant)]
enum TxSink {
    Eth(TxQueue),
    /// The guest RX rings of a vhost-user vif this lcore holds (one per queue pair it serves).
    Virtq(Vec<Virtqueue>),
    Kernel(KernelTx),
}

impl TxSink {
    /// The offloads the port finishes itself; the rest is finished before it is handed over.
    fn caps(&self) -> TxCaps {
        match self {
            TxSink::Virtq(q) => offload::virtio_caps(q.first().map_or(0, Virtqueue::features)),
            TxSink::Eth(q) => offload::eth_caps(q.offloads()),
            TxSink::Kernel(_) => offload::KERNEL_CAPS,
        }
    }
}

/// What sending needs besides the lcore's sinks: the other lcores' rings, counters, the pool
/// segments are cut from, and scratch space made once.
struct Tx<'a> {
    index: u8,
    peers: &'a mut [RingProducer],
    counters: &'a LoopCounters,
    stats: &'a CoreStats,
    pool: &'a Mempool,
    staging: &'a mut MbufBurst,
    /// Packets finished for their port (segments included), in order.
    finished: &'a mut Vec<Pkt>,
    /// Sending what another lcore handed us: a packet for a queue pair we do not hold (its
    /// map changed on the way) is dropped, never handed on again.
    relay: bool,
}

/// Room for a burst plus the most segments one packet is cut into: finishing never grows it.
const FINISHED_ROOM: usize = BURST_MAX + gso::MAX_SEGMENTS;

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
    pub events: ToVhostCore<LcoreEvent>,
    pub pool: Mempool,
    /// The pipeline's counters (drops found while finishing offloads are counted there too).
    pub stats: Arc<CoreStats>,
    pub commands: Receiver<LcoreCmd>,
    /// Producer ends of every lcore's inbox ring, by lcore index (ours included, unused).
    pub peers: Vec<RingProducer>,
    pub inbox: RingConsumer,
    pub idle_sleep: Option<Duration>,
    /// The agent channel (pkt0), when vrouterd has one: packets for the agent go through it
    /// (else they are dropped and counted); lcore 0 also takes what the agent sends.
    pub agent: Option<TrapGate>,
}

struct State {
    rx: Vec<RxSource>,
    tx: Box<[Option<TxSink>]>,
    /// The vifs whose TX sink is a virtqueue (checked for guest breakage every poll).
    virtq_tx: Vec<u16>,
    owner: Box<[u8]>,
    /// Per vhost-user vif: which lcore holds which queue pair.
    qmap: Box<[QueueMap]>,
    /// The queue pair `transmit` uses for a vif whose guest RX rings this lcore holds.
    pair: u8,
    /// Scratch for splitting a burst by queue pair (room for any burst `send` is given).
    split: Vec<Pkt>,
    rest: Vec<Pkt>,
    /// The queue-map slot of each packet in the burst being split, and in `rest`.
    slots: Vec<u8>,
    rest_slots: Vec<u8>,
    /// Some virtqueue is on hold until the inbox has been drained (see [`RxSource::Virtq`]).
    holding: bool,
    host_vif: Option<u16>,
    /// Mirrors by mirrored vif.
    mirrors: Mirrors,
    /// Copies of a burst's received packets, and of packets sent to a vif, waiting to go to
    /// their analyzer vif.
    copies_in: Copies,
    copies_out: Copies,
    /// Frames from the control side waiting to go out, with their vif.
    outbox: Vec<(u16, Pkt)>,
    agent: Option<TrapGate>,
    /// This loop turn's time (flow milliseconds), for the agent's token buckets.
    now_ms: u64,
}

/// Mirror copies of vif `from`'s packets on their way to one analyzer vif.
struct Copies {
    from: u16,
    to: u16,
    pkts: Vec<Pkt>,
}

impl Copies {
    fn new() -> Copies {
        Copies {
            from: 0,
            to: 0,
            pkts: Vec::with_capacity(BURST_MAX),
        }
    }
}

/// Copies the packets of vif `vif` its mirror wants (received ones when `ingress`, else those
/// sent to it) into `out`. The one check a vif without a mirror pays.
#[inline]
fn mirror_copies<'a>(
    mirrors: &mut Mirrors,
    out: &mut Copies,
    pool: &Mempool,
    counters: &LoopCounters,
    vif: u16,
    ingress: bool,
    pkts: impl Iterator<Item = &'a pmd_shim::Mbuf>,
) {
    let Some(m) = mirrors.get(vif, ingress) else {
        return;
    };
    out.from = vif;
    out.to = m.cfg.to;
    let n = m.copy_burst(pkts, &mut out.pkts, |p, snaplen| {
        mirror::copy(pool, p, snaplen).map(Pkt)
    });
    let i = usize::from(vif);
    LoopCounters::add(&counters.mirror_copies[i], n.made);
    LoopCounters::add(&counters.mirror_failures[i], n.failed);
    LoopCounters::add(&counters.mirror_skipped[i], n.skipped);
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
            stats,
            commands,
            mut peers,
            mut inbox,
            idle_sleep,
            agent,
        } = self;
        // Lcore 0 takes what the agent sends.
        let injects = agent
            .as_ref()
            .filter(|_| index == 0)
            .map(|g| g.shared_arc());
        let mut injected: Vec<Pkt> = Vec::with_capacity(1);
        let mut st = State {
            rx: Vec::with_capacity(64),
            tx: (0..MAX_VIFS).map(|_| None).collect(),
            virtq_tx: Vec::with_capacity(MAX_VIFS),
            owner: vec![NO_OWNER; MAX_VIFS].into_boxed_slice(),
            qmap: vec![QueueMap::EMPTY; MAX_VIFS].into_boxed_slice(),
            pair: 0,
            split: Vec::with_capacity(2 * FINISHED_ROOM),
            rest: Vec::with_capacity(2 * FINISHED_ROOM),
            slots: Vec::with_capacity(2 * FINISHED_ROOM),
            rest_slots: Vec::with_capacity(2 * FINISHED_ROOM),
            holding: false,
            host_vif: None,
            mirrors: Mirrors::new(MAX_VIFS),
            copies_in: Copies::new(),
            copies_out: Copies::new(),
            outbox: Vec::with_capacity(OUTBOX),
            agent,
            now_ms: 0,
        };
        let mut batches: TxBatches<Pkt> = TxBatches::new(BURST_MAX);
        let mut burst = MbufBurst::new();
        let mut hdrs = [NetHdr::NONE; BURST_MAX];
        let mut spare: Vec<Pkt> = Vec::with_capacity(BURST_MAX);
        let mut staging = MbufBurst::new();
        let mut finished: Vec<Pkt> = Vec::with_capacity(FINISHED_ROOM);
        let mut run: Vec<Pkt> = Vec::with_capacity(BURST_MAX);
        // The transmit context over the loop's locals, made afresh where a send needs one (a
        // macro: a value built once would hold `peers`, `staging` and `finished` borrowed for
        // the whole loop).
        macro_rules! tx {
            ($relay:expr) => {
                Tx {
                    index,
                    peers: &mut peers,
                    counters: &counters,
                    stats: &stats,
                    pool: &pool,
                    staging: &mut staging,
                    finished: &mut finished,
                    relay: $relay,
                }
            };
        }
        let mut iteration: u32 = 0;
        // Slept after the last poll: commands are read after every nap, so an idle lcore
        // answers the vhost core within one nap rather than sixteen.
        let mut napped = false;
        let tsc_per_ms = (pmd_shim::cycles::tsc_hz() / 1000).max(1);
        // Flow aging is paced by time, not by loop turns: a slice every AGE_EVERY_US, sized so
        // one lcore sweeps the whole table in about AGE_SWEEP_MS. Counted in turns, an idle
        // lcore aged hundreds of times a second more than needed, each slice a stall of
        // microseconds just when a packet is most likely to be waiting alone.
        let age_every = (tsc_per_ms * AGE_EVERY_US / 1000).max(1);
        let age_budget = flows
            .buckets()
            .div_ceil((AGE_SWEEP_MS * 1000 / AGE_EVERY_US) as usize)
            .max(1);
        let mut next_age = 0u64;
        let gap_cycles = POLL_GAP_US.map(|us| tsc_per_ms * us / 1000);
        let mut last_t0: Option<u64> = None;
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
                    st.command(cmd, &stats, &counters, &events);
                }
                if !st.outbox.is_empty() {
                    let mut tx = tx!(false);
                    st.send_outbox(&mut tx, &mut run);
                }
            }
            iteration = iteration.wrapping_add(1);
            let t0 = pmd_shim::cycles::rdtsc();
            if let Some(last) = last_t0 {
                let gap = t0.wrapping_sub(last);
                if gap > gap_cycles[0] {
                    for (count, &over) in counters.poll_gaps.iter().zip(&gap_cycles) {
                        if gap > over {
                            LoopCounters::add(count, 1);
                        }
                    }
                }
            }
            last_t0 = Some(t0);
            // Flow time in milliseconds, from the TSC (no system call per iteration).
            let now_ms = t0 / tsc_per_ms;
            st.now_ms = now_ms;
            if t0 >= next_age {
                flows.age_slice(now_ms, age_budget);
                next_age = t0 + age_every;
            }
            let mut work = 0usize;

            for i in 0..st.rx.len() {
                let in_vif = match &mut st.rx[i] {
                    RxSource::Eth { vif, queue } => {
                        let n = queue.rx_burst(&mut burst);
                        if n == 0 {
                            continue;
                        }
                        work += n;
                        mirror_copies(
                            &mut st.mirrors,
                            &mut st.copies_in,
                            &pool,
                            &counters,
                            *vif,
                            true,
                            burst.iter(),
                        );
                        pipeline.flow_hook().begin(*vif, now_ms);
                        pipeline.process(*vif, burst.drain().map(Pkt), &mut batches);
                        *vif
                    }
                    RxSource::Virtq { vif, queue, hold } => {
                        if *hold {
                            continue;
                        }
                        refill(&pool, &mut spare, &mut staging);
                        let before = queue.stats();
                        let n = queue.dequeue_burst(&mut spare[..]);
                        count_guest_drops(&stats, *vif, &before, &queue.stats());
                        if n == 0 {
                            continue;
                        }
                        work += n;
                        counters.add_vring(*vif, queue.index(), n as u64);
                        mirror_copies(
                            &mut st.mirrors,
                            &mut st.copies_in,
                            &pool,
                            &counters,
                            *vif,
                            true,
                            spare[..n].iter().map(|p| &p.0),
                        );
                        pipeline.flow_hook().begin(*vif, now_ms);
                        pipeline.process(*vif, spare.drain(..n), &mut batches);
                        *vif
                    }
                    RxSource::Kernel { vif, mtu, port } => {
                        let (vif, mtu) = (*vif, *mtu);
                        let r = port.rx_burst(&mut burst, &mut hdrs);
                        // Received, then dropped before the pipeline: counted as both.
                        let rx_drop = |reason: DropReason, n: u32| {
                            stats.vif(vif).rx_packets.add(u64::from(n));
                            stats.count_drops(reason, vif, u64::from(n));
                        };
                        rx_drop(DropReason::Truncated, r.truncated);
                        rx_drop(DropReason::Malformed, r.malformed);
                        rx_drop(DropReason::NoMbuf, r.no_mbuf);
                        if r.received == 0 {
                            continue;
                        }
                        work += r.received;
                        mirror_copies(
                            &mut st.mirrors,
                            &mut st.copies_in,
                            &pool,
                            &counters,
                            vif,
                            true,
                            burst.iter(),
                        );
                        // The header becomes the packet's offload state, or the packet a drop.
                        let pkts = burst.drain().zip(&hdrs).filter_map(|(mut m, h)| {
                            match packet::kernel_rx_offload(*h, m.pkt_len() as usize, mtu) {
                                Ok(o) => {
                                    m.set_offload(o.word());
                                    Some(Pkt(m))
                                }
                                Err(reason) => {
                                    stats.vif(vif).rx_bytes.add(u64::from(m.pkt_len()));
                                    rx_drop(reason, 1);
                                    None
                                }
                            }
                        });
                        pipeline.flow_hook().begin(vif, now_ms);
                        pipeline.process(vif, pkts, &mut batches);
                        vif
                    }
                };
                let mut tx = tx!(false);
                st.flush(&mut tx, in_vif, &mut batches);
                st.send_copies(&mut tx, true);
            }
            st.hand_back_broken(&events);

            // What the agent sends: out of a vif (made here), or through the pipeline as
            // received on one (counted received there). A few per turn.
            if let Some(shared) = &injects {
                for _ in 0..BURST_MAX {
                    let Some(i) = shared.injects.pop() else { break };
                    work += 1;
                    let mut tx = tx!(false);
                    if i.as_received {
                        pipeline.flow_hook().begin(i.vif, now_ms);
                        pipeline.process(i.vif, std::iter::once(i.pkt), &mut batches);
                        st.flush(&mut tx, i.vif, &mut batches);
                    } else {
                        stats.from_agent.add(1);
                        injected.push(i.pkt);
                        st.send(&mut tx, i.vif, &mut injected);
                        injected.clear();
                    }
                }
            }

            // Packets other lcores routed to vifs we transmit for, sent in runs per vif.
            let n = inbox.dequeue_burst(&mut burst);
            if st.holding && n < BURST_MAX {
                // Everything queued to us before this point is out of the ring: virtqueues
                // handed over since may be polled.
                st.release_holds();
            }
            if n > 0 {
                work += n;
                stats.taken_from_lcores.add(n as u64);
                let mut tx = tx!(true);
                let mut run_vif = None;
                for m in burst.drain() {
                    let vif = m.port();
                    if run_vif != Some(vif) {
                        if let Some(v) = run_vif {
                            st.send(&mut tx, v, &mut run);
                        }
                        run_vif = Some(vif);
                    }
                    run.push(Pkt(m));
                }
                if let Some(v) = run_vif {
                    st.send(&mut tx, v, &mut run);
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
                last_t0 = None;
            }
        }
        drop(reader);
        // Handles drop here, on the lcore, before anyone stops the ports.
        drop(st);
        drop(spare);
        0
    }
}

/// Counts what a guest's TX queue dropped between `before` and `after` (while dequeuing):
/// packets vif `vif` received, dropped under the reason that fits.
#[inline(always)]
fn count_guest_drops(stats: &CoreStats, vif: u16, before: &QueueStats, after: &QueueStats) {
    let malformed = (after.dropped_malformed + after.dropped_fragmented)
        .wrapping_sub(before.dropped_malformed + before.dropped_fragmented);
    let too_big = after.dropped_too_big.wrapping_sub(before.dropped_too_big);
    let bad = after
        .dropped_bad_offload
        .wrapping_sub(before.dropped_bad_offload);
    if malformed | too_big | bad != 0 {
        stats.vif(vif).rx_packets.add(malformed + too_big + bad);
        stats.count_drops(DropReason::Malformed, vif, malformed);
        stats.count_drops(DropReason::Mtu, vif, too_big);
        stats.count_drops(DropReason::Offload, vif, bad);
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
    /// Sends every per-vif batch the pipeline produced for packets from `in_vif`, hands host
    /// packets to the host vif, and releases the dropped ones (already counted by the
    /// pipeline).
    fn flush(&mut self, tx: &mut Tx<'_>, in_vif: u16, batches: &mut TxBatches<Pkt>) {
        batches.flush(|vif, q| self.send(tx, vif, q));
        if !batches.host.is_empty() {
            let mut host = std::mem::take(&mut batches.host);
            match self.host_vif {
                Some(h) => self.send(tx, h, &mut host),
                None => {
                    tx.stats
                        .count_drops(DropReason::NoHostVif, in_vif, host.len() as u64);
                    host.clear();
                }
            }
            batches.host = host;
        }
        if !batches.agent.is_empty() {
            match self.agent.as_mut() {
                Some(g) => g.hand(
                    tx.stats,
                    self.now_ms,
                    &mut batches.agent,
                    &mut batches.agent_traps,
                ),
                None => agent::drop_all(tx.stats, &mut batches.agent, &mut batches.agent_traps),
            }
        }
        batches.dropped.clear();
    }

    /// Sends `q` on vif `vif` (see [`State::transmit`]), first finishing in software the
    /// offloads our port for it does not take: a packet leaves with what its port can handle or
    /// not at all (freed, counted under the `offload` drop reason). Packets for another lcore's
    /// port go as they are; that lcore finishes them.
    fn send(&mut self, tx: &mut Tx<'_>, vif: u16, q: &mut Vec<Pkt>) {
        if let Some(map) = self.qmap.get(usize::from(vif)).copied().filter(|m| m.n > 0) {
            self.send_by_queue(tx, vif, map, q);
            return;
        }
        self.send_here(tx, vif, q);
    }

    /// Sends `q` to multi-queue vif `vif` along `map`: each packet to the queue pair its flow
    /// hash picks, on our ring for it or through the inbox of the lcore that holds it. Packets
    /// of one flow keep their order: they take one path to one queue. Nothing is allocated:
    /// packets move between `q` and two scratch vectors made with room for any burst.
    fn send_by_queue(&mut self, tx: &mut Tx<'_>, vif: u16, map: QueueMap, q: &mut Vec<Pkt>) {
        if map.n == 1 {
            // One pair up (a single-queue vif): no hash to compute.
            self.send_to_pair(tx, vif, (map.pairs[0], map.lcores[0]), q);
            return;
        }
        if map.n == 0 {
            return;
        }
        // Each packet's slot, hashed once, kept beside it as packets move.
        let mut slots = std::mem::take(&mut self.slots);
        slots.clear();
        slots.extend(q.iter().map(|p| {
            map.slot(packet::flow_hash(vrouter::PacketBuf::data(p)))
                .unwrap_or(0)
        }));
        let Some(&first) = slots.first() else {
            self.slots = slots;
            return;
        };
        if slots.iter().all(|s| *s == first) {
            // The common case: one flow, or flows that share a pair.
            self.slots = slots;
            self.send_to_pair(tx, vif, map.at(first), q);
            return;
        }
        // One run per pair, in the packets' order: the first packet's pair, then the rest,
        // which go back and forth between `q` (room for all of them) and `rest`.
        let mut split = std::mem::take(&mut self.split);
        let mut rest = std::mem::take(&mut self.rest);
        let mut rest_slots = std::mem::take(&mut self.rest_slots);
        rest_slots.clear();
        let mut from_q = true;
        loop {
            let (from, from_slots, to, to_slots) = if from_q {
                (&mut *q, &mut slots, &mut rest, &mut rest_slots)
            } else {
                (&mut rest, &mut rest_slots, &mut *q, &mut slots)
            };
            let Some(&key) = from_slots.first() else {
                break;
            };
            for (p, s) in from.drain(..).zip(from_slots.drain(..)) {
                if s == key {
                    split.push(p);
                } else {
                    to.push(p);
                    to_slots.push(s);
                }
            }
            self.send_to_pair(tx, vif, map.at(key), &mut split);
            from_q = !from_q;
        }
        q.clear();
        split.clear();
        rest.clear();
        self.split = split;
        self.rest = rest;
        self.slots = slots;
        self.rest_slots = rest_slots;
    }

    /// Sends `q` to queue pair `pair` of `vif`, held by `lcore`: on our own ring, or through
    /// that lcore's inbox (unless the packets came from another lcore's: then they are
    /// dropped, never handed on again). `q` ends empty.
    fn send_to_pair(
        &mut self,
        tx: &mut Tx<'_>,
        vif: u16,
        (pair, lcore): (u8, u8),
        q: &mut Vec<Pkt>,
    ) {
        if lcore == tx.index {
            self.pair = pair;
            self.send_here(tx, vif, q);
        } else if tx.relay {
            // Handed to us for a pair that is not ours (any more): the map changed on the way.
            tx.stats
                .count_drops(DropReason::NoTxQueue, vif, q.len() as u64);
            q.clear();
        } else {
            to_peer(tx, vif, lcore, q);
        }
    }

    /// [`State::send`] on this lcore's own port for `vif` (or its owner's inbox).
    fn send_here(&mut self, tx: &mut Tx<'_>, vif: u16, q: &mut Vec<Pkt>) {
        // Copied by the lcore that hands them to the vif's queue: packets on their way to
        // another lcore are copied there, once.
        if self.tx.get(usize::from(vif)).is_some_and(Option::is_some) {
            mirror_copies(
                &mut self.mirrors,
                &mut self.copies_out,
                tx.pool,
                tx.counters,
                vif,
                false,
                q.iter().map(|p| &p.0),
            );
        }
        self.send_only(tx, vif, q);
        self.send_copies(tx, false);
    }

    /// Sends the mirror copies waiting in `copies_in` (received packets') or `copies_out`
    /// (packets sent to a vif) to their analyzer, through `transmit`: a copy is never mirrored.
    #[inline]
    fn send_copies(&mut self, tx: &mut Tx<'_>, received: bool) {
        let copies = if received {
            &mut self.copies_in
        } else {
            &mut self.copies_out
        };
        if copies.pkts.is_empty() {
            return;
        }
        let (from, to, mut pkts) = (copies.from, copies.to, std::mem::take(&mut copies.pkts));
        let refused = self.transmit(tx, to, &mut pkts);
        if let Some(m) = self.mirrors.of(from) {
            m.sent(refused);
        }
        // Back with its capacity: nothing is allocated per burst.
        if received {
            self.copies_in.pkts = pkts;
        } else {
            self.copies_out.pkts = pkts;
        }
    }

    /// [`State::send`] without the mirror.
    fn send_only(&mut self, tx: &mut Tx<'_>, vif: u16, q: &mut Vec<Pkt>) {
        let caps = match self.tx.get(usize::from(vif)).and_then(Option::as_ref) {
            Some(sink) => sink.caps(),
            None => {
                self.transmit(tx, vif, q);
                return;
            }
        };
        // One look at each packet's flags: the common case has nothing to finish.
        if q.iter().all(|p| caps.takes(vrouter::PacketBuf::offload(p))) {
            self.transmit(tx, vif, q);
            return;
        }
        let mut out = std::mem::take(tx.finished);
        for p in q.drain(..) {
            if out.len() + offload::count_after(&p, caps) > FINISHED_ROOM {
                self.transmit(tx, vif, &mut out);
            }
            let before = out.len();
            if offload::finish(p, caps, tx.pool, &mut out).is_err() {
                tx.stats.count_drops(DropReason::Offload, vif, 1);
            } else if out.len() > before + 1 {
                // The segments are what is sent (and counted); the frame was one packet.
                tx.stats.segments_added.add((out.len() - before - 1) as u64);
            }
        }
        self.transmit(tx, vif, &mut out);
        *tx.finished = out;
    }

    /// Transmits `q` on vif `vif`: on our own queue for it, else through the owner lcore's
    /// inbox ring. Counts what its queue took as sent (packets and bytes) and everything else
    /// as a drop under its reason; `q` ends empty. Returns how many were refused for lack of
    /// room.
    fn transmit(&mut self, tx: &mut Tx<'_>, vif: u16, q: &mut Vec<Pkt>) -> u64 {
        if q.is_empty() {
            return 0;
        }
        let Tx {
            index,
            ref mut peers,
            counters,
            stats,
            ref mut staging,
            ..
        } = *tx;
        let total = q.len() as u64;
        let sent = stats.vif(vif);
        // Packets refused for lack of room.
        let mut full = 0u64;
        match self.tx.get_mut(usize::from(vif)).and_then(Option::as_mut) {
            Some(TxSink::Virtq(queues)) => {
                // The pair the flow hash picked. Not ours: with a map, the pair moved away
                // (what was queued to us for it before is dropped, never put on another
                // queue); without one yet, the first ring we hold.
                let pair = u16::from(self.pair);
                let mapped = self.qmap.get(usize::from(vif)).is_some_and(|m| m.n > 0);
                let at = match queues.iter().position(|q| q.index() / 2 == pair) {
                    Some(at) => Some(at),
                    None if !mapped => Some(0),
                    None => None,
                };
                let Some(queue) = at.and_then(|at| queues.get_mut(at)) else {
                    q.clear();
                    stats.count_drops(DropReason::NoTxQueue, vif, total);
                    return 0;
                };
                // The queue counts what it delivered and what it dropped; its counters tell
                // which packets of the burst were which.
                let before = queue.stats();
                let taken = queue.enqueue_burst(&q[..]) as u64;
                q.clear();
                let after = queue.stats();
                counters.add_vring(
                    vif,
                    queue.index(),
                    after.packets.wrapping_sub(before.packets),
                );
                sent.tx_packets
                    .add(after.packets.wrapping_sub(before.packets));
                sent.tx_bytes.add(after.bytes.wrapping_sub(before.bytes));
                let too_big = after.dropped_too_big.wrapping_sub(before.dropped_too_big);
                let bad = after
                    .dropped_bad_offload
                    .wrapping_sub(before.dropped_bad_offload);
                stats.count_drops(DropReason::Mtu, vif, too_big);
                stats.count_drops(DropReason::Offload, vif, bad);
                // Not taken: no buffer posted (or the guest broke the queue).
                full = total.saturating_sub(taken);
                stats.count_drops(DropReason::TxQueueFull, vif, full);
            }
            Some(TxSink::Kernel(port)) => {
                let r = port.tx_burst(q.iter().map(|p| (&p.0, packet::kernel_tx_hdr(p))));
                q.clear();
                sent.tx_packets.add(r.sent as u64);
                sent.tx_bytes.add(r.bytes);
                full = r.busy as u64;
                stats.count_drops(DropReason::TxQueueFull, vif, full);
                stats.count_drops(DropReason::KernelRejected, vif, r.rejected as u64);
            }
            Some(TxSink::Eth(queue)) => {
                let mut it = q.drain(..);
                loop {
                    let mut bytes = 0u64;
                    for mut p in it.by_ref() {
                        // What is left to finish, the device does (the port's caps took it).
                        if !vrouter::PacketBuf::offload(&p).is_none()
                            && (offload::request_from_device(&mut p).is_err()
                                || !queue.tx_prepare(&mut p.0))
                        {
                            stats.count_drops(DropReason::Offload, vif, 1);
                            continue;
                        }
                        bytes += u64::from(p.0.pkt_len());
                        // Never full here: the loop below drains it at BURST_MAX.
                        let _ = staging.push(p.into_mbuf());
                        if staging.is_full() {
                            break;
                        }
                    }
                    if staging.is_empty() {
                        break;
                    }
                    let n = queue.tx_burst(staging) as u64;
                    let unsent: u64 = staging.iter().map(|m| u64::from(m.pkt_len())).sum();
                    sent.tx_packets.add(n);
                    sent.tx_bytes.add(bytes - unsent);
                    full += staging.len() as u64;
                    stats.count_drops(DropReason::TxQueueFull, vif, staging.len() as u64);
                    staging.free_all();
                }
            }
            None => {
                let owner = self
                    .owner
                    .get(usize::from(vif))
                    .copied()
                    .unwrap_or(NO_OWNER);
                if owner != index && usize::from(owner) < peers.len() {
                    full = to_peer(tx, vif, owner, q);
                } else {
                    q.clear();
                    stats.count_drops(DropReason::NoTxQueue, vif, total);
                }
            }
        }
        full
    }

    /// Lets every virtqueue on hold be polled.
    fn release_holds(&mut self) {
        for src in &mut self.rx {
            if let RxSource::Virtq { hold, .. } = src {
                *hold = false;
            }
        }
        self.holding = false;
    }

    /// Stops using virtqueues the guest broke and hands them to the vhost core, which logs
    /// it and marks the vif down; every other vif keeps forwarding.
    #[inline]
    fn hand_back_broken(&mut self, events: &ToVhostCore<LcoreEvent>) {
        if self
            .rx
            .iter()
            .any(|s| matches!(s, RxSource::Virtq { queue, .. } if queue.broken().is_some()))
        {
            let mut i = 0;
            while i < self.rx.len() {
                match &self.rx[i] {
                    RxSource::Virtq { queue, .. } if queue.broken().is_some() => {
                        if let RxSource::Virtq { vif, queue, .. } = self.rx.swap_remove(i) {
                            let _ = events.send(LcoreEvent::Broken { vif, queue });
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
            if let Some(TxSink::Virtq(queues)) = slot {
                if queues.iter().any(|q| q.broken().is_some()) {
                    let mut k = 0;
                    while k < queues.len() {
                        if queues[k].broken().is_some() {
                            let queue = queues.swap_remove(k);
                            let _ = events.send(LcoreEvent::Broken { vif, queue });
                        } else {
                            k += 1;
                        }
                    }
                }
                if queues.is_empty() {
                    *slot = None;
                    self.virtq_tx.swap_remove(i);
                    continue;
                }
            }
            i += 1;
        }
    }

    fn command(
        &mut self,
        cmd: LcoreCmd,
        stats: &CoreStats,
        counters: &LoopCounters,
        events: &ToVhostCore<LcoreEvent>,
    ) {
        match cmd {
            LcoreCmd::AttachEth { vif, rx, tx } => {
                if let Some(queue) = rx {
                    self.rx.push(RxSource::Eth { vif, queue });
                }
                if let (Some(queue), Some(slot)) = (tx, self.tx.get_mut(usize::from(vif))) {
                    *slot = Some(TxSink::Eth(queue));
                }
            }
            LcoreCmd::AttachKernel { vif, mtu, rx, tx } => {
                self.rx.push(RxSource::Kernel { vif, mtu, port: rx });
                if let Some(slot) = self.tx.get_mut(usize::from(vif)) {
                    *slot = Some(TxSink::Kernel(tx));
                }
            }
            LcoreCmd::AttachVirtqueue { vif, queue } => {
                let index = queue.index();
                if index % 2 == 1 {
                    self.rx.push(RxSource::Virtq {
                        vif,
                        queue,
                        hold: true,
                    });
                    self.holding = true;
                } else if let Some(slot) = self.tx.get_mut(usize::from(vif)) {
                    match slot {
                        Some(TxSink::Virtq(queues)) => {
                            // A ring of the same index replaces the old one, which goes back
                            // to the vhost core to be dropped there: the last reference to a
                            // guest memory map unmaps it, a system call no lcore should make.
                            match queues.iter_mut().find(|q| q.index() == queue.index()) {
                                Some(old) => {
                                    let old = std::mem::replace(old, queue);
                                    let _ = events.send(LcoreEvent::Replaced { queue: old });
                                }
                                None => queues.push(queue),
                            }
                        }
                        _ => *slot = Some(TxSink::Virtq(vec![queue])),
                    }
                    if !self.virtq_tx.contains(&vif) {
                        self.virtq_tx.push(vif);
                    }
                }
                let _ = events.send(LcoreEvent::Taken { vif, index });
            }
            LcoreCmd::DetachVirtqueue { vif, index, reply } => {
                let _ = reply.send(self.take_virtqueue(vif, index));
            }
            LcoreCmd::DetachVif { vif, reply } => {
                let mut queues = Vec::new();
                let mut kept = Vec::with_capacity(self.rx.capacity());
                for src in self.rx.drain(..) {
                    match src {
                        RxSource::Virtq { vif: v, queue, .. } if v == vif => queues.push(queue),
                        RxSource::Eth { vif: v, .. } | RxSource::Kernel { vif: v, .. }
                            if v == vif => {}
                        other => kept.push(other),
                    }
                }
                self.rx = kept;
                if let Some(slot) = self.tx.get_mut(usize::from(vif)) {
                    if let Some(TxSink::Virtq(q)) = slot.take() {
                        queues.extend(q);
                    }
                }
                self.virtq_tx.retain(|&v| v != vif);
                if self.host_vif == Some(vif) {
                    self.host_vif = None;
                }
                self.mirrors.forget_vif(vif);
                let _ = reply.send(queues);
            }
            LcoreCmd::SetOwner { vif, owner } => {
                if let Some(slot) = self.owner.get_mut(usize::from(vif)) {
                    *slot = owner;
                }
            }
            LcoreCmd::SetQueueMap { vif, map } => {
                if let Some(slot) = self.qmap.get_mut(usize::from(vif)) {
                    *slot = map;
                }
            }
            LcoreCmd::SetHostVif { vif } => self.host_vif = vif,
            LcoreCmd::SetMirror { vif, mirror } => self.mirrors.set(vif, mirror),
            LcoreCmd::SendFrame { vif, pkt } => {
                // A full outbox drops the frame (freed here, counted as its egress queue being
                // full); the resolver asks again later.
                if self.outbox.len() < OUTBOX {
                    self.outbox.push((vif, Pkt(pkt)));
                } else {
                    drop(Pkt(pkt));
                    LoopCounters::add(&counters.frames_made, 1);
                    stats.count_drops(DropReason::TxQueueFull, vif, 1);
                }
            }
        }
    }

    /// Sends the control side's frames, each counted as made and then as sent or dropped.
    fn send_outbox(&mut self, tx: &mut Tx<'_>, run: &mut Vec<Pkt>) {
        let mut outbox = std::mem::take(&mut self.outbox);
        for (vif, p) in outbox.drain(..) {
            LoopCounters::add(&tx.counters.frames_made, 1);
            run.push(p);
            self.send(tx, vif, run);
        }
        self.outbox = outbox;
    }

    fn take_virtqueue(&mut self, vif: u16, index: u16) -> Option<Virtqueue> {
        if index % 2 == 1 {
            let pos = self.rx.iter().position(
                |s| matches!(s, RxSource::Virtq { vif: v, queue, .. } if *v == vif && queue.index() == index),
            )?;
            match self.rx.remove(pos) {
                RxSource::Virtq { queue, .. } => Some(queue),
                RxSource::Eth { .. } | RxSource::Kernel { .. } => None,
            }
        } else {
            let slot = self.tx.get_mut(usize::from(vif))?;
            let Some(TxSink::Virtq(queues)) = slot else {
                return None;
            };
            let at = queues.iter().position(|q| q.index() == index)?;
            let q = queues.swap_remove(at);
            if queues.is_empty() {
                *slot = None;
                self.virtq_tx.retain(|&v| v != vif);
            }
            Some(q)
        }
    }
}

/// Hands `q` to lcore `lcore`'s inbox ring, each packet tagged with vif `vif`; that lcore
/// counts them sent (or dropped) when it hands them over. What the ring has no room for is
/// dropped and counted; returns how many. `q` ends empty.
fn to_peer(tx: &mut Tx<'_>, vif: u16, lcore: u8, q: &mut Vec<Pkt>) -> u64 {
    let Tx {
        ref mut peers,
        counters,
        stats,
        ref mut staging,
        ..
    } = *tx;
    let Some(ring) = peers.get_mut(usize::from(lcore)) else {
        stats.count_drops(DropReason::NoTxQueue, vif, q.len() as u64);
        q.clear();
        return 0;
    };
    let mut full = 0u64;
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
        let n = ring.enqueue_burst(staging) as u64;
        stats.queued_to_lcores.add(n);
        let refused = staging.len() as u64;
        full += refused;
        LoopCounters::add(&counters.ring_drops, refused);
        stats.count_drops(DropReason::TxQueueFull, vif, refused);
        staging.free_all();
    }
    full
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_queue_map_picks_the_same_pair_for_a_hash_and_none_when_empty() {
        let pick = |m: &QueueMap, h: u32| m.slot(h).map(|i| m.at(i));
        assert_eq!(QueueMap::EMPTY.slot(7), None);
        // Pairs 0 and 2 up (1 is not), on lcores 1 and 0.
        let m = QueueMap::new([(0, 1), (2, 0)]);
        assert_eq!(m.n, 2);
        assert_eq!(pick(&m, 4), Some((0, 1)));
        assert_eq!(pick(&m, 5), Some((2, 0)));
        assert_eq!(pick(&m, 5), pick(&m, 5));
        // More pairs than a map holds: the first MAX_QUEUE_PAIRS are kept.
        let big = QueueMap::new((0..40u16).map(|p| (p, 0)));
        assert_eq!(usize::from(big.n), MAX_QUEUE_PAIRS);
    }
}
