//! Per-destination TX batches: the pipeline's output for one burst.

use crate::stats::MAX_VIFS;

/// Packets of one burst grouped by where they go. Every queue is allocated once with room for
/// `burst` packets, so steady-state forwarding never allocates as long as it is flushed after
/// each burst of at most `burst` packets.
#[derive(Debug)]
pub struct TxBatches<B> {
    vifs: Box<[Vec<B>]>,
    touched: Vec<u16>,
    /// For the host / agent (receive nexthop, fabric traffic not addressed to a tunnel).
    pub host: Vec<B>,
    /// Dropped packets (already counted): the caller frees or recycles them.
    pub dropped: Vec<B>,
    /// For the agent (pkt0), not counted yet: the caller counts each as handed over or
    /// dropped. `agent_traps[i]` says why `agent[i]` is there.
    pub agent: Vec<B>,
    pub agent_traps: Vec<super::Trap>,
}

impl<B> TxBatches<B> {
    pub fn new(burst: usize) -> Self {
        TxBatches {
            vifs: (0..MAX_VIFS).map(|_| Vec::with_capacity(burst)).collect(),
            touched: Vec::with_capacity(MAX_VIFS),
            host: Vec::with_capacity(burst),
            dropped: Vec::with_capacity(burst),
            agent: Vec::with_capacity(burst),
            agent_traps: Vec::with_capacity(burst),
        }
    }

    #[inline(always)]
    pub(crate) fn push(&mut self, vif: u16, b: B) {
        // Vif indexes come from the topology, which only holds indexes below MAX_VIFS.
        if let Some(q) = self.vifs.get_mut(usize::from(vif)) {
            if q.is_empty() {
                self.touched.push(vif);
            }
            q.push(b);
        } else {
            self.dropped.push(b);
        }
    }

    #[inline]
    pub(crate) fn push_agent(&mut self, b: B, t: super::Trap) {
        self.agent.push(b);
        self.agent_traps.push(t);
    }

    /// The packets queued for `vif`.
    pub fn tx(&self, vif: u16) -> &[B] {
        self.vifs
            .get(usize::from(vif))
            .map_or(&[], |q| q.as_slice())
    }

    /// Vifs with packets queued, in the order they were first used.
    pub fn touched(&self) -> &[u16] {
        &self.touched
    }

    /// Hand every non-empty queue to `send` (which takes what it transmits out of the Vec);
    /// whatever it leaves is dropped, and all queues are empty afterwards.
    pub fn flush(&mut self, mut send: impl FnMut(u16, &mut Vec<B>)) {
        for &vif in &self.touched {
            let q = &mut self.vifs[usize::from(vif)];
            send(vif, q);
            q.clear();
        }
        self.touched.clear();
    }

    /// Empty every queue (tests; or the caller after handling host and dropped itself).
    pub fn clear(&mut self) {
        self.flush(|_, _| {});
        self.host.clear();
        self.dropped.clear();
        self.agent.clear();
        self.agent_traps.clear();
    }
}
