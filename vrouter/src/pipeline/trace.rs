//! Packet trace: the next N packets received on one vif, each with the pipeline's decision and
//! the headers it came in and went out with. Off, it costs one relaxed load per burst; on, only
//! bursts from the traced vif pay (a copy of each packet's headers), and records go to a
//! bounded lock-free queue the control side drains, dropped when it is full.

use std::sync::atomic::{AtomicU32, Ordering};

use crossbeam_queue::ArrayQueue;

use super::Verdict;

/// Bytes of a packet's start kept, in and out: every header vrouterd reads or writes (outer
/// Ethernet, IPv4, UDP, VXLAN, inner Ethernet, IPv6, TCP) fits.
pub const TRACE_BYTES: usize = 160;
/// Records the queue holds before the control side reads them.
pub const TRACE_QUEUE: usize = 1024;
const OFF: u32 = u32::MAX;

/// One traced packet.
#[derive(Debug, Clone, Copy)]
pub struct TraceRecord {
    pub in_vif: u16,
    /// The ingress vif's VRF (a decapsulated packet's own VRF shows in its output).
    pub vrf: u16,
    pub verdict: Verdict,
    pub in_len: u32,
    pub input: [u8; TRACE_BYTES],
    /// The packet as it left (after every rewrite); empty for a drop.
    pub out_len: u32,
    pub output: [u8; TRACE_BYTES],
}

/// What the control side arms and drains; shared by every lcore's pipeline.
#[derive(Debug)]
pub struct Tracer {
    vif: AtomicU32,
    /// Packets still to trace.
    left: AtomicU32,
    records: ArrayQueue<TraceRecord>,
}

impl Default for Tracer {
    fn default() -> Self {
        Tracer {
            vif: AtomicU32::new(OFF),
            left: AtomicU32::new(0),
            records: ArrayQueue::new(TRACE_QUEUE),
        }
    }
}

impl Tracer {
    /// Traces the next `count` packets received on `vif` (replacing any trace running).
    pub fn start(&self, vif: u16, count: u32) {
        self.vif.store(OFF, Ordering::Release);
        while self.records.pop().is_some() {}
        self.left.store(count, Ordering::Release);
        self.vif.store(u32::from(vif), Ordering::Release);
    }

    pub fn stop(&self) {
        self.vif.store(OFF, Ordering::Release);
        self.left.store(0, Ordering::Release);
    }

    /// The vif being traced, if any.
    pub fn vif(&self) -> Option<u16> {
        u16::try_from(self.vif.load(Ordering::Acquire)).ok()
    }

    /// Records traced since the last call.
    pub fn drain(&self) -> Vec<TraceRecord> {
        std::iter::from_fn(|| self.records.pop()).collect()
    }

    /// Whether packets from `vif` are being traced: the one check every burst pays.
    #[inline(always)]
    pub(super) fn wants(&self, vif: u16) -> bool {
        self.vif.load(Ordering::Relaxed) == u32::from(vif)
    }

    /// Takes one packet's share of the count; false once it is spent (the trace then stops).
    /// `vif` is the packet's ingress vif: a burst that saw an earlier trace must not spend a
    /// newer one's count, and the trace ends with its last packet, not the one after.
    pub(super) fn take_one(&self, vif: u16) -> bool {
        let traced = u32::from(vif);
        if self.vif.load(Ordering::Acquire) != traced {
            return false;
        }
        match self
            .left
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| n.checked_sub(1))
        {
            Ok(left) => {
                if left == 1 {
                    // Only this trace's end: a newer trace on another vif stays on.
                    let _ =
                        self.vif
                            .compare_exchange(traced, OFF, Ordering::AcqRel, Ordering::Relaxed);
                }
                true
            }
            Err(_) => false,
        }
    }

    /// Queues a record; a full queue (a reader that does not read) drops it.
    pub(super) fn push(&self, r: TraceRecord) {
        let _ = self.records.push(r);
    }
}

/// The headers of a traced burst's packets as they came in, kept by the pipeline (made once).
pub(super) struct Inputs {
    pub(super) bytes: [[u8; TRACE_BYTES]; super::BURST],
    pub(super) lens: [u32; super::BURST],
}

impl Inputs {
    pub(super) fn new() -> Box<Inputs> {
        Box::new(Inputs {
            bytes: [[0; TRACE_BYTES]; super::BURST],
            lens: [0; super::BURST],
        })
    }
}

/// Copies the start of `data` into a trace buffer.
pub(super) fn keep(data: &[u8], into: &mut [u8; TRACE_BYTES]) {
    let n = data.len().min(TRACE_BYTES);
    into[..n].copy_from_slice(&data[..n]);
    into[n..].fill(0);
}
