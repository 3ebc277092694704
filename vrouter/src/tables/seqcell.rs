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
    use std::sync::Arc;

    #[test]
    fn readers_never_see_a_torn_record() {
        let cell = Arc::new(SeqCell::<4>::default());
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let seen = Arc::new(std::sync::atomic::AtomicU64::new(0));
        let reader = {
            let (cell, stop, seen) = (cell.clone(), stop.clone(), seen.clone());
            std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    if let Some(w) = cell.read() {
                        assert!(w.iter().all(|&x| x == w[0]), "torn read {w:?}");
                        seen.fetch_add(1, Ordering::Relaxed);
                    }
                }
            })
        };
        // Optimised, 200 000 writes can be over before the reader runs: go on writing until it
        // has read a good number of records meanwhile (or it plainly cannot).
        let t0 = std::time::Instant::now();
        let mut i = 0u64;
        while i < 200_000
            || seen.load(Ordering::Relaxed) < 10_000
                && t0.elapsed() < std::time::Duration::from_secs(10)
        {
            cell.write([i; 4]);
            i += 1;
        }
        stop.store(true, Ordering::Relaxed);
        reader.join().unwrap();
        assert!(seen.load(Ordering::Relaxed) > 0);
    }
}
