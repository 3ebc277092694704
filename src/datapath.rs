//! The forwarding lcores: each owns its queues and runs the poll loop until told to stop.
//!
//! For now the loop receives and releases packets (the pipeline arrives with the forwarding
//! plane); what it already has is the shape: owned queues, a fixed burst, per-lcore counters
//! written by one thread and read by others, and an optional idle back-off.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use pmd_shim::{MbufBurst, RxQueue, StopFlag, TxQueue};

/// Counters of one forwarding lcore. Only that lcore writes them (plain load + store, no
/// read-modify-write shared across cores); readers sum them when asked.
#[derive(Debug, Default)]
#[repr(align(64))]
pub struct LcoreCounters {
    pub polls: AtomicU64,
    pub busy_polls: AtomicU64,
    pub rx_packets: AtomicU64,
    pub rx_bytes: AtomicU64,
}

impl LcoreCounters {
    #[inline]
    fn add(counter: &AtomicU64, n: u64) {
        // Single writer: a relaxed load and store is enough and costs no locked instruction.
        counter.store(counter.load(Ordering::Relaxed) + n, Ordering::Relaxed);
    }

    pub fn snapshot(&self) -> LcoreSnapshot {
        LcoreSnapshot {
            polls: self.polls.load(Ordering::Relaxed),
            busy_polls: self.busy_polls.load(Ordering::Relaxed),
            rx_packets: self.rx_packets.load(Ordering::Relaxed),
            rx_bytes: self.rx_bytes.load(Ordering::Relaxed),
        }
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LcoreSnapshot {
    pub polls: u64,
    pub busy_polls: u64,
    pub rx_packets: u64,
    pub rx_bytes: u64,
}

/// What one forwarding lcore owns.
pub struct LcoreWork {
    pub rx: Vec<RxQueue>,
    pub tx: Vec<TxQueue>,
    pub counters: Arc<LcoreCounters>,
    pub idle_sleep: Option<Duration>,
}

impl LcoreWork {
    /// The poll loop; returns 0 when stopped.
    pub fn run(mut self, stop: StopFlag) -> i32 {
        let mut burst = MbufBurst::new();
        while !stop.should_stop() {
            let mut got = 0u64;
            let mut bytes = 0u64;
            for rxq in &mut self.rx {
                let n = rxq.rx_burst(&mut burst);
                if n == 0 {
                    continue;
                }
                got += n as u64;
                bytes += burst.iter().map(|m| u64::from(m.pkt_len())).sum::<u64>();
                // No pipeline yet: received packets are released in one bulk free.
                burst.free_all();
            }
            LcoreCounters::add(&self.counters.polls, 1);
            if got > 0 {
                LcoreCounters::add(&self.counters.busy_polls, 1);
                LcoreCounters::add(&self.counters.rx_packets, got);
                LcoreCounters::add(&self.counters.rx_bytes, bytes);
            } else if let Some(nap) = self.idle_sleep {
                std::thread::sleep(nap);
            }
        }
        // Queue handles drop here, on the lcore, before the port can be stopped.
        drop(self.tx);
        drop(self.rx);
        0
    }
}
