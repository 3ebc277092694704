//! A small record readers can load while one writer replaces it: a sequence lock built only
//! from atomics. Readers never block the writer and never write shared memory; a reader that
//! overlaps a write retries (a handful of times, then reports "busy" so the fast path never
//! spins unboundedly). Writers must be serialised by the caller (the table's writer mutex).

use std::sync::atomic::{fence, AtomicU32, AtomicU64, Ordering};

#[derive(Debug)]
pub struct SeqCell<const N: usize> {
    seq: AtomicU32,
    words: [AtomicU64; N],
}

impl<const N: usize> Default for SeqCell<N> {
    fn default() -> Self {
        SeqCell {
            seq: AtomicU32::new(0),
            words: std::array::from_fn(|_| AtomicU64::new(0)),
        }
    }
}

impl<const N: usize> SeqCell<N> {
    /// A consistent copy of the words, or `None` if a write kept overlapping.
    #[inline(always)]
    pub fn read(&self) -> Option<[u64; N]> {
        for _ in 0..16 {
            let s1 = self.seq.load(Ordering::Acquire);
            if s1 & 1 == 1 {
                std::hint::spin_loop();
                continue;
            }
            let out: [u64; N] = std::array::from_fn(|i| self.words[i].load(Ordering::Relaxed));
            fence(Ordering::Acquire);
            if self.seq.load(Ordering::Relaxed) == s1 {
                return Some(out);
            }
        }
        None
    }

    /// Replace the words. Only one writer at a time (callers hold their table's writer lock).
    pub fn write(&self, v: [u64; N]) {
        let s = self.seq.load(Ordering::Relaxed);
        self.seq.store(s.wrapping_add(1), Ordering::Relaxed);
        fence(Ordering::Release);
        for (w, x) in self.words.iter().zip(v) {
            w.store(x, Ordering::Relaxed);
        }
        self.seq.store(s.wrapping_add(2), Ordering::Release);
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
        let reader = {
            let (cell, stop) = (cell.clone(), stop.clone());
            std::thread::spawn(move || {
                let mut seen = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    if let Some(w) = cell.read() {
                        assert!(w.iter().all(|&x| x == w[0]), "torn read {w:?}");
                        seen += 1;
                    }
                }
                seen
            })
        };
        for i in 0..200_000u64 {
            cell.write([i; 4]);
        }
        stop.store(true, Ordering::Relaxed);
        assert!(reader.join().unwrap() > 0);
    }
}
