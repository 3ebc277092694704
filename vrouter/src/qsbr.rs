//! Quiescent-state-based reclamation (QSBR): when storage that lock-free readers may still be
//! inside (an LPM trie group unlinked by a route removal) may be used again.
//!
//! The readers are the forwarding cores. Each registers once ([`Qsbr::register`]) and, at a point
//! of its loop where it holds no reference into the tables (between bursts), announces a
//! *quiescent state* ([`Reader::quiescent`]): it loads the domain's epoch and stores it in its own
//! cache line. Two plain memory operations: no locked instruction, no fence, no allocation.
//!
//! A writer unlinks storage first (readers arriving later cannot reach it), then takes a
//! [`Ticket`] ([`Qsbr::retire`]), which advances the epoch. The storage may be reused once
//! [`Qsbr::oldest`] has reached the ticket: every online reader has since announced an epoch at
//! least the ticket's. Why that suffices: a reader that loaded the new epoch (acquire) sees the
//! unlink in everything it reads afterwards, and everything it read before announcing (release)
//! happened before the writer's check (acquire), hence before the reuse.
//!
//! A reader that stops reading for a while (an lcore about to sleep, a thread that ends) goes
//! [`Reader::offline`] and never holds a grace period up; [`Reader::online`] brings it back with
//! a full fence (an announcement alone could pass a writer's check unseen and let the reader
//! read stale links). Dropping a [`Reader`] unregisters it. A reader that is online but stuck
//! holds reclamation up (writers allocate fresh storage meanwhile, up to their limit), never
//! forwarding.
//!
//! Writers never wait for readers unless they ask to ([`Qsbr::wait`], bounded): they queue what
//! they unlinked with its ticket and recycle it when [`Qsbr::oldest`] says so.

use std::cell::Cell;
use std::sync::atomic::{fence, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use crate::tables::OwnLines;

/// What an offline reader announces: larger than any ticket, so it never holds one up.
const OFFLINE: u64 = u64::MAX;

/// Marks storage unlinked at one moment: reusable once [`Qsbr::oldest`] reaches it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Ticket(u64);

/// One reader's announcement, on cache lines of its own (the reader writes it every loop).
#[derive(Debug)]
#[repr(align(128))]
struct Slot {
    seen: AtomicU64,
}

/// A reclamation domain: its epoch and its registered readers. Share it as `Arc<Qsbr>`.
#[derive(Debug)]
pub struct Qsbr {
    /// Read by every reader at every announcement; written once per [`Qsbr::retire`].
    epoch: OwnLines<AtomicU64>,
    /// Taken by writers checking grace and by (un)registration, never by a quiescent reader.
    readers: Mutex<Vec<Arc<Slot>>>,
}

impl Default for Qsbr {
    fn default() -> Self {
        Qsbr {
            epoch: OwnLines(AtomicU64::new(1)),
            readers: Mutex::new(Vec::new()),
        }
    }
}

impl Qsbr {
    pub fn new() -> Arc<Self> {
        Arc::new(Qsbr::default())
    }

    fn readers(&self) -> MutexGuard<'_, Vec<Arc<Slot>>> {
        // A list of slots, changed by single pushes and removals: consistent even if poisoned.
        self.readers.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A new reader, online. Call it on the thread that will read (or move it there).
    pub fn register(self: &Arc<Self>) -> Reader {
        let slot = Arc::new(Slot {
            seen: AtomicU64::new(OFFLINE),
        });
        self.readers().push(Arc::clone(&slot));
        let r = Reader {
            domain: Arc::clone(self),
            slot,
            online: Cell::new(false),
        };
        r.online();
        r
    }

    /// Readers registered (online or not).
    pub fn reader_count(&self) -> usize {
        self.readers().len()
    }

    /// Writer side, after unlinking: the ticket of what was unlinked.
    pub fn retire(&self) -> Ticket {
        Ticket(self.epoch.fetch_add(1, Ordering::SeqCst) + 1)
    }

    /// Every ticket up to this one has passed its grace period.
    pub fn oldest(&self) -> Ticket {
        // Pairs with the fence in `Reader::online`: either that reader's reads see what was
        // unlinked before this point, or the loads below see it online.
        fence(Ordering::SeqCst);
        let now = self.epoch.load(Ordering::Acquire);
        let min = self
            .readers()
            .iter()
            .map(|s| s.seen.load(Ordering::Acquire))
            .min()
            .unwrap_or(OFFLINE);
        Ticket(min.min(now))
    }

    /// Whether `t`'s grace period is over.
    pub fn passed(&self, t: Ticket) -> bool {
        t <= self.oldest()
    }

    /// Waits until `t`'s grace period is over, at most `timeout`; whether it is.
    pub fn wait(&self, t: Ticket, timeout: Duration) -> bool {
        let start = Instant::now();
        let mut spins = 0u32;
        loop {
            if self.passed(t) {
                return true;
            }
            if start.elapsed() >= timeout {
                return false;
            }
            // Busy readers announce every few microseconds; napping ones go offline.
            if spins < 64 {
                spins += 1;
                std::thread::yield_now();
            } else {
                std::thread::sleep(Duration::from_micros(50));
            }
        }
    }
}

/// A registered reader. One thread uses it (it is `Send`, not `Sync`).
#[derive(Debug)]
pub struct Reader {
    domain: Arc<Qsbr>,
    slot: Arc<Slot>,
    online: Cell<bool>,
}

impl Reader {
    /// Announce that this reader holds no reference into the domain's storage. While offline,
    /// nothing (go [`Reader::online`] first).
    #[inline(always)]
    pub fn quiescent(&self) {
        if self.online.get() {
            let e = self.domain.epoch.load(Ordering::Acquire);
            self.slot.seen.store(e, Ordering::Release);
        }
    }

    /// Stop reading until [`Reader::online`]: grace periods no longer wait for this reader.
    pub fn offline(&self) {
        self.online.set(false);
        self.slot.seen.store(OFFLINE, Ordering::Release);
    }

    /// Start reading again.
    pub fn online(&self) {
        let e = self.domain.epoch.load(Ordering::Acquire);
        self.slot.seen.store(e, Ordering::SeqCst);
        // Pairs with the fence in `Qsbr::oldest` (see there).
        fence(Ordering::SeqCst);
        self.online.set(true);
    }

    pub fn is_online(&self) -> bool {
        self.online.get()
    }

    /// The domain this reader belongs to.
    pub fn domain(&self) -> &Arc<Qsbr> {
        &self.domain
    }
}

impl Drop for Reader {
    fn drop(&mut self) {
        self.offline();
        self.domain
            .readers()
            .retain(|s| !Arc::ptr_eq(s, &self.slot));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grace_waits_for_every_online_reader_and_for_no_offline_one() {
        let q = Qsbr::new();
        let t0 = q.retire();
        assert!(q.passed(t0), "no readers: grace is immediate");
        let a = q.register();
        let b = q.register();
        assert_eq!(q.reader_count(), 2);
        let t = q.retire();
        assert!(!q.passed(t), "both readers may still hold what t retired");
        a.quiescent();
        assert!(!q.passed(t), "b has not announced yet");
        b.quiescent();
        assert!(q.passed(t));
        let t2 = q.retire();
        a.quiescent();
        b.offline();
        assert!(q.passed(t2), "an offline reader holds nothing up");
        b.quiescent();
        let t3 = q.retire();
        a.quiescent();
        assert!(
            q.passed(t3),
            "announcing while offline does not bring b back"
        );
        b.online();
        let t4 = q.retire();
        a.quiescent();
        assert!(!q.passed(t4), "b is back online");
        assert!(!q.wait(t4, Duration::from_millis(5)), "bounded wait");
        drop(b);
        assert!(q.passed(t4), "a dropped reader is unregistered");
        assert_eq!(q.reader_count(), 1);
    }

    #[test]
    fn a_reader_on_another_thread_lets_a_waiting_writer_through() {
        let q = Qsbr::new();
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let (q2, stop2) = (Arc::clone(&q), Arc::clone(&stop));
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let r = std::thread::spawn(move || {
            let reader = q2.register();
            ready_tx.send(()).unwrap();
            while !stop2.load(Ordering::Relaxed) {
                reader.quiescent();
                std::hint::spin_loop();
            }
        });
        ready_rx.recv().unwrap();
        for _ in 0..1000 {
            let t = q.retire();
            assert!(q.wait(t, Duration::from_secs(10)));
        }
        stop.store(true, Ordering::Relaxed);
        r.join().unwrap();
        assert_eq!(q.reader_count(), 0);
    }
}
