//! loom over the flow table's bucket protocol: every interleaving of a few threads (and the
//! stale values loom lets `Relaxed` loads return) checked against what a sequential table
//! would answer.
//!
//! The table (`vrouter::flow::table`) keeps its entries in large preallocated arrays of `std`
//! atomics; loom's atomics cannot stand in for those without rewriting the table around them.
//! So these tests run loom over a small model of one bucket that follows the table's protocol
//! step for step, with the same orderings (keep the two in step when either changes):
//! - writers lock the bucket by moving its sequence word from even to odd (`Acquire` CAS, then
//!   a `Release` fence), write an entry's key words, meta and last-seen time and then its tag
//!   (all `Relaxed`), and unlock with a plain `Release` store of the next even value;
//!   a removal clears the tag under the lock;
//! - readers load the sequence (`Acquire`), retry while it is odd, read tags, then the key
//!   words and meta of a tag match (`Relaxed`), fence (`Acquire`), and retry if the sequence
//!   moved; after a bounded number of tries they report the bucket busy (the fast path then
//!   falls back to the setup path, which looks again under the lock);
//! - aging reads each slot like a reader and removes an expired flow by key, under the lock.
//!
//! (The burst path's hinted read of one slot, `lookup_slot`, is the same read on one slot.)
//! The model is sharp enough to matter: with the reader's `Acquire` fence removed, or the
//! unlock store made `Relaxed`, these tests fail (tried by hand); a reader without its sequence
//! re-check is caught by a test below.

use loom::sync::atomic::{fence, AtomicU32, AtomicU64, Ordering};
use loom::sync::Arc;
use loom::thread;

const SLOTS: usize = 2;
const READ_TRIES: usize = 2;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Key {
    words: [u64; 2],
    tag: u32,
}

/// The meta word written with a key: a read returning another key's meta is a torn read.
fn meta_of(k: &Key) -> u64 {
    k.words[0].wrapping_mul(0x9e37_79b9) ^ k.words[1] ^ 0x5a5a
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Read {
    Found(u64),
    Missing,
    /// Writers kept the bucket busy for every try.
    Busy,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum InsertError {
    Raced,
    Full,
}

struct Bucket {
    seq: AtomicU32,
    tags: [AtomicU32; SLOTS],
    keys: [[AtomicU64; 2]; SLOTS],
    metas: [AtomicU64; SLOTS],
    seen: [AtomicU64; SLOTS],
    /// The reader skips its sequence re-check (to show the tests catch that bug).
    broken_reader: bool,
}

impl Bucket {
    fn new(broken_reader: bool) -> Bucket {
        Bucket {
            seq: AtomicU32::new(0),
            tags: std::array::from_fn(|_| AtomicU32::new(0)),
            keys: std::array::from_fn(|_| std::array::from_fn(|_| AtomicU64::new(0))),
            metas: std::array::from_fn(|_| AtomicU64::new(0)),
            seen: std::array::from_fn(|_| AtomicU64::new(0)),
            broken_reader,
        }
    }

    /// The table uses `compare_exchange_weak` here; the strong one differs only by spurious
    /// failures, which retry the same way and would only multiply loom's branches.
    fn lock(&self) {
        loop {
            let s = self.seq.load(Ordering::Relaxed);
            if s & 1 == 0
                && self
                    .seq
                    .compare_exchange(s, s.wrapping_add(1), Ordering::Acquire, Ordering::Relaxed)
                    .is_ok()
            {
                fence(Ordering::Release);
                return;
            }
            thread::yield_now();
        }
    }

    fn unlock(&self) {
        let s = self.seq.load(Ordering::Relaxed);
        self.seq.store(s.wrapping_add(1), Ordering::Release);
    }

    fn key_at(&self, i: usize) -> [u64; 2] {
        [
            self.keys[i][0].load(Ordering::Relaxed),
            self.keys[i][1].load(Ordering::Relaxed),
        ]
    }

    fn find_locked(&self, k: &Key) -> Option<usize> {
        (0..SLOTS)
            .find(|&i| self.tags[i].load(Ordering::Relaxed) == k.tag && self.key_at(i) == k.words)
    }

    fn insert(&self, k: &Key, now: u64) -> Result<usize, InsertError> {
        self.lock();
        let r = if self.find_locked(k).is_some() {
            Err(InsertError::Raced)
        } else if let Some(i) = (0..SLOTS).find(|&i| self.tags[i].load(Ordering::Relaxed) == 0) {
            self.keys[i][0].store(k.words[0], Ordering::Relaxed);
            self.keys[i][1].store(k.words[1], Ordering::Relaxed);
            self.metas[i].store(meta_of(k), Ordering::Relaxed);
            self.seen[i].store(now, Ordering::Relaxed);
            self.tags[i].store(k.tag, Ordering::Relaxed);
            Ok(i)
        } else {
            Err(InsertError::Full)
        };
        self.unlock();
        r
    }

    fn remove(&self, k: &Key) -> bool {
        self.lock();
        let found = self.find_locked(k);
        if let Some(i) = found {
            if self.tags[i].load(Ordering::Relaxed) != 0 {
                self.tags[i].store(0, Ordering::Relaxed);
            }
        }
        self.unlock();
        found.is_some()
    }

    fn lookup(&self, k: &Key) -> Read {
        for _ in 0..READ_TRIES {
            let s1 = self.seq.load(Ordering::Acquire);
            if s1 & 1 == 1 {
                thread::yield_now();
                continue;
            }
            let mut found = None;
            for i in 0..SLOTS {
                if self.tags[i].load(Ordering::Relaxed) != k.tag {
                    continue;
                }
                if self.key_at(i) == k.words {
                    found = Some(self.metas[i].load(Ordering::Relaxed));
                    break;
                }
            }
            fence(Ordering::Acquire);
            if !self.broken_reader && self.seq.load(Ordering::Relaxed) != s1 {
                continue;
            }
            return found.map_or(Read::Missing, Read::Found);
        }
        Read::Busy
    }

    /// A consistent copy of slot `i` (key, meta, last seen), as the table's `read_entry`.
    fn read_slot(&self, i: usize) -> Option<(Key, u64, u64)> {
        for _ in 0..READ_TRIES {
            let s1 = self.seq.load(Ordering::Acquire);
            if s1 & 1 == 1 {
                thread::yield_now();
                continue;
            }
            let tag = self.tags[i].load(Ordering::Relaxed);
            let words = self.key_at(i);
            let meta = self.metas[i].load(Ordering::Relaxed);
            let seen = self.seen[i].load(Ordering::Relaxed);
            fence(Ordering::Acquire);
            if self.seq.load(Ordering::Relaxed) != s1 {
                continue;
            }
            return (tag != 0).then_some((Key { words, tag }, meta, seen));
        }
        None
    }

    /// Remove the flows idle for more than `timeout` at `now`; returns how many.
    fn age(&self, now: u64, timeout: u64) -> usize {
        let mut aged = 0;
        for i in 0..SLOTS {
            if let Some((k, meta, seen)) = self.read_slot(i) {
                assert_eq!(meta, meta_of(&k), "aging read a torn entry");
                if now.saturating_sub(seen) > timeout && self.remove(&k) {
                    aged += 1;
                }
            }
        }
        aged
    }
}

fn model(preemptions: usize, f: impl Fn() + Sync + Send + 'static) {
    let mut b = loom::model::Builder::new();
    b.preemption_bound = Some(preemptions);
    b.max_branches = 100_000;
    b.check(f);
}

// Two keys with the same tag and first word: only the second word tells them apart, so a read
// mixing one entry's key with the next one's meta would pass the tag and key checks.
const A: Key = Key {
    words: [1, 2],
    tag: 7,
};
const C: Key = Key {
    words: [1, 3],
    tag: 7,
};

/// A writer removes A and installs C in the slot A had, while a reader looks both up.
fn slot_reuse(broken_reader: bool) {
    model(2, move || {
        let b = Arc::new(Bucket::new(broken_reader));
        assert_eq!(b.insert(&A, 0), Ok(0));
        let w = {
            let b = b.clone();
            thread::spawn(move || {
                assert!(b.remove(&A));
                assert_eq!(b.insert(&C, 0), Ok(0), "C reuses A's slot");
            })
        };
        let a1 = b.lookup(&A);
        let c = b.lookup(&C);
        let a2 = b.lookup(&A);
        for (r, k) in [(a1, A), (c, C), (a2, A)] {
            assert!(
                matches!(r, Read::Missing | Read::Busy) || r == Read::Found(meta_of(&k)),
                "{k:?}: {r:?}"
            );
        }
        // Once C is seen, A (removed before C went in) must not be seen again.
        assert!(
            !(matches!(c, Read::Found(_)) && matches!(a2, Read::Found(_))),
            "A found after C: {a1:?} {c:?} {a2:?}"
        );
        w.join().unwrap();
        assert_eq!(b.lookup(&A), Read::Missing);
        assert_eq!(b.lookup(&C), Read::Found(meta_of(&C)));
    });
}

#[test]
fn a_reader_never_returns_a_torn_or_foreign_entry_while_its_slot_is_reused() {
    slot_reuse(false);
}

/// The model is strong enough to matter: a reader that skips the sequence re-check returns
/// the new entry's meta for the old key in some interleaving, and loom finds it.
#[test]
fn without_the_sequence_recheck_a_torn_read_is_found() {
    let caught = std::panic::catch_unwind(|| slot_reuse(true));
    assert!(
        caught.is_err(),
        "loom found no torn read in the broken reader"
    );
}

const OLD: Key = Key {
    words: [9, 9],
    tag: 3,
};
const NEW: Key = Key {
    words: [5, 6],
    tag: 4,
};

/// The bucket holds `NEW` exactly once and `OLD` not at all.
fn assert_only_new(b: &Bucket) {
    assert_eq!(b.lookup(&OLD), Read::Missing);
    assert_eq!(b.lookup(&NEW), Read::Found(meta_of(&NEW)));
    let copies = (0..SLOTS)
        .filter(|&i| b.read_slot(i).is_some_and(|(k, _, _)| k == NEW))
        .count();
    assert_eq!(copies, 1);
}

/// Two cores set up the same new flow at once (in a full bucket whose old flow one of them
/// removes first): exactly one installs it, the other sees the race.
#[test]
fn racing_setups_of_one_flow_install_it_once() {
    model(2, || {
        let b = Arc::new(Bucket::new(false));
        assert_eq!(b.insert(&OLD, 0), Ok(0));
        let other = {
            let b = b.clone();
            thread::spawn(move || b.insert(&NEW, 100))
        };
        assert!(b.remove(&OLD));
        let mine = b.insert(&NEW, 100);
        let theirs = other.join().unwrap();
        let mut results = [mine, theirs];
        results.sort_by_key(|r| r.is_err());
        assert!(results[0].is_ok(), "{results:?}");
        assert_eq!(results[1], Err(InsertError::Raced), "{results:?}");
        assert_only_new(&b);
    });
}

/// A core sets up a new flow while another ages the bucket: the expired flow goes, the new
/// one (seen after the aging time) never does, and aging never reads a torn entry.
#[test]
fn aging_during_a_setup_removes_only_the_expired_flow() {
    model(2, || {
        let b = Arc::new(Bucket::new(false));
        assert_eq!(b.insert(&OLD, 0), Ok(0));
        let setup = {
            let b = b.clone();
            thread::spawn(move || b.insert(&NEW, 100))
        };
        let aged = b.age(50, 10);
        assert!(setup.join().unwrap().is_ok());
        // Aging may have found the old flow busy (then it stays for the next pass).
        assert!(aged <= 1);
        if aged == 0 {
            assert_eq!(b.age(50, 10), 1);
        }
        assert_only_new(&b);
    });
}
