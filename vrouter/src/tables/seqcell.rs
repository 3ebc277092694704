//! A small record readers can load while one writer replaces it, built only from atomics: a
//! double-buffered sequence lock. The writer fills the copy readers are *not* using, then flips
//! which copy is current, so a writer that stalls mid-update (preempted on a busy control core)
//! never holds readers up: they keep reading the other, complete copy. A reader retries only if
//! the writer flipped twice during its read, and gives up after a bounded number of tries (the
//! packet becomes a counted drop) so the fast path never spins without end. Writers must be
//! serialised by the caller (the table's writer mutex).

use std::sync::atomic::{fence, AtomicU32, AtomicU64, Ordering};

#[derive(Debug)]
struct Copy<const N: usize> {
    seq: AtomicU32,
    words: [AtomicU64; N],
}

#[derive(Debug)]
pub struct SeqCell<const N: usize> {
    current: AtomicU32,
    copies: [Copy<N>; 2],
}

impl<const N: usize> Default for SeqCell<N> {
    fn default() -> Self {
        let copy = || Copy {
            seq: AtomicU32::new(0),
            words: std::array::from_fn(|_| AtomicU64::new(0)),
        };
        SeqCell {
            current: AtomicU32::new(0),
            copies: [copy(), copy()],
        }
    }
}

impl<const N: usize> SeqCell<N> {
    /// A consistent copy of the words, or `None` if writes kept overlapping.
    #[inline(always)]
    pub fn read(&self) -> Option<[u64; N]> {
        for _ in 0..64 {
            let c = &self.copies[(self.current.load(Ordering::Acquire) & 1) as usize];
            let s1 = c.seq.load(Ordering::Acquire);
            if s1 & 1 == 1 {
                std::hint::spin_loop();
                continue;
            }
            let out: [u64; N] = std::array::from_fn(|i| c.words[i].load(Ordering::Relaxed));
            fence(Ordering::Acquire);
            if c.seq.load(Ordering::Relaxed) == s1 {
                return Some(out);
            }
        }
        None
    }

    /// Replace the words. Only one writer at a time (callers hold their table's writer lock).
    pub fn write(&self, v: [u64; N]) {
        let next = (self.current.load(Ordering::Relaxed) ^ 1) & 1;
        let c = &self.copies[next as usize];
        let s = c.seq.load(Ordering::Relaxed);
        c.seq.store(s.wrapping_add(1), Ordering::Relaxed);
        fence(Ordering::Release);
        for (w, x) in c.words.iter().zip(v) {
            w.store(x, Ordering::Relaxed);
        }
        c.seq.store(s.wrapping_add(2), Ordering::Release);
        self.current.store(next, Ordering::Release);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicBool;

    /// One writer stores records whose words are all equal while a reader checks every record
    /// it gets. Neither side stops on a clock: the writer goes on until the reader has made a
    /// good number of reads during which at least two writes completed (the only reads a torn
    /// record can come from, as the writer must lap the copy being read), so the check that
    /// matters has run however the threads were scheduled.
    #[test]
    fn readers_never_see_a_torn_record() {
        const MIN_WRITES: u64 = 200_000;
        const MIN_LAPPED_READS: u64 = 10_000;
        // Wide records: a longer read gives a lapping writer more room to tear it.
        let cell = SeqCell::<16>::default();
        let writes = AtomicU64::new(0);
        let lapped = AtomicU64::new(0);
        let stop = AtomicBool::new(false);
        let (total, got) = std::thread::scope(|s| {
            let reader = s.spawn(|| {
                let (mut total, mut got) = (0u64, 0u64);
                while !stop.load(Ordering::Acquire) {
                    let before = writes.load(Ordering::Acquire);
                    let r = cell.read();
                    let after = writes.load(Ordering::Acquire);
                    if let Some(w) = r {
                        assert!(w.iter().all(|&x| x == w[0]), "torn read {w:?}");
                        got += 1;
                    }
                    total += 1;
                    if after >= before + 2 {
                        lapped.fetch_add(1, Ordering::Relaxed);
                    }
                }
                (total, got)
            });
            let mut i = 0u64;
            // A reader that failed its check has stopped reading: stop writing too, so the
            // failure is reported rather than waited on for ever.
            while (i < MIN_WRITES || lapped.load(Ordering::Relaxed) < MIN_LAPPED_READS)
                && !reader.is_finished()
            {
                cell.write([i; 16]);
                i += 1;
                writes.store(i, Ordering::Release);
            }
            stop.store(true, Ordering::Release);
            reader.join().expect("the reader's checks held")
        });
        assert!(lapped.load(Ordering::Relaxed) >= MIN_LAPPED_READS);
        // Bounded retries may give up under this much contention, but not on every read.
        assert!(got > 0 && got <= total, "{got} of {total} reads answered");
    }
}
