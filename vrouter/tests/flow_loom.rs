//! loom over the flow table's synchronisation: the real [`FlowTable`], built on loom's atomics
//! (`--cfg loom`: see `vrouter/src/sync.rs`), in every interleaving of a few threads, and with
//! the stale values loom lets `Relaxed` loads return, checked against what a sequential table
//! would answer. Run it with
//! `RUSTFLAGS="--cfg loom" cargo test -p vrouter --test flow_loom --release`; without the cfg
//! this file is empty.
//!
//! What it covers: writers lock a bucket by moving its sequence word from even to odd, write an
//! entry's key words, meta and vifs and then its tag (`Relaxed`), and unlock with a `Release`
//! store; readers check that the sequence did not move across their `Relaxed` reads (a fence
//! between), retry a bounded number of times, then report the bucket busy (a miss: the fast
//! path then falls back to the setup path, which looks again under the lock); aging reads each
//! entry the same way and removes an expired flow under the lock.
//!
//! Sharp enough to matter (tried by hand): with the `Acquire` fence before the sequence
//! re-check taken out (`Bucket::read_keep`), or the `Release` fence after taking the lock
//! (`Bucket::lock`), the lookup and dump tests find a read pairing one flow's key with the
//! other's words; with the unlock's store `Relaxed`, all four fail. About a minute in release.

#![cfg(loom)]

use loom::sync::Arc;
use loom::thread;
use vrouter::flow::table::{Hit, InsertError, NewFlow};
use vrouter::flow::{FlowConfig, FlowKey, FlowTable, FlowTimeouts, FlowVerdict};

/// Fixed hash keys: loom replays each interleaving, and a key must land in the same slot on
/// every replay.
const SEED: [u64; 6] = [
    0x9e37_79b9_7f4a_7c15,
    0xbf58_476d_1ce4_e5b9,
    0x94d0_49bb_1331_11eb,
    0x2545_f491_4f6c_dd1d,
    0x6a09_e667_f3bc_c909,
    0xbb67_ae85_84ca_a73b,
];

/// UDP flows idle for more than this are aged.
const UDP_TIMEOUT: u64 = 10;

/// The smallest table: two buckets of eight slots, so every key's two candidate buckets are
/// the same two and writers always contend.
fn table() -> FlowTable {
    FlowTable::with_fixed_seed(
        FlowConfig {
            entries: 8,
            timeouts: FlowTimeouts {
                udp: UDP_TIMEOUT,
                ..FlowTimeouts::default()
            },
        },
        SEED,
    )
    .expect("a table of 8 entries")
}

/// The `n`-th UDP key.
fn key(n: u16) -> FlowKey {
    FlowKey {
        vrf: 1,
        v6: false,
        proto: 17,
        src: 0xc612_0001,
        dst: 0xc633_6407,
        sport: 1000 + n,
        dport: 53,
    }
}

/// One key's flow, installed alone (no reverse entry, so each setup writes one entry), with
/// vifs and a policy generation of its own: a lookup answering another flow's words for this
/// key is a torn read.
#[derive(Clone, Copy)]
struct Flow {
    key: FlowKey,
    id: u16,
}

impl Flow {
    fn new(id: u16) -> Flow {
        Flow { key: key(id), id }
    }

    fn setup(&self, now: u64) -> NewFlow {
        NewFlow {
            key: self.key,
            verdict: self.verdict(),
            with_reverse: false,
            in_vif: self.id,
            out_vif: self.id + 100,
            policy_gen: u32::from(self.id) * 1000,
            now,
            nat: None,
        }
    }

    fn verdict(&self) -> FlowVerdict {
        if self.id.is_multiple_of(2) {
            FlowVerdict::Forward
        } else {
            FlowVerdict::Drop
        }
    }

    /// Whether `hit` says what this flow's setup wrote.
    fn is_mine(&self, hit: &Hit) -> bool {
        hit.verdict == self.verdict()
            && !hit.is_reverse
            && (hit.in_vif, hit.out_vif, hit.policy_gen)
                == (self.id, self.id + 100, u32::from(self.id) * 1000)
    }

    /// A lookup's answer is a miss (absent, or the bucket busy) or this flow's own entry.
    fn check(&self, found: Option<Hit>) {
        if let Some(hit) = found {
            assert!(self.is_mine(&hit), "flow {}: torn read {hit:?}", self.id);
        }
    }

    /// The table holds this flow's entry, found by a lookup.
    fn assert_present(&self, t: &FlowTable) {
        let hit = t.lookup(&self.key);
        assert!(
            hit.is_some_and(|h| self.is_mine(&h)),
            "flow {}: {hit:?}",
            self.id
        );
    }
}

/// Every interleaving with at most `preemptions` preemptions (loom's bound: a bug needing
/// more than two or three is rare, and each one more multiplies the interleavings explored).
fn model(preemptions: usize, f: impl Fn() + Sync + Send + 'static) {
    let mut b = loom::model::Builder::new();
    b.preemption_bound = Some(preemptions);
    // A walk over the table is many atomic operations, each a branch for loom.
    b.max_branches = 100_000;
    b.check(f);
}

/// Ids of two flows whose entries take the same slot one after the other (the second set up
/// once the first is removed), found on a table of the same seed outside the threads checked.
fn slot_sharing_pair() -> (u16, u16) {
    let found = std::sync::Arc::new(std::sync::Mutex::new(None));
    let out = found.clone();
    loom::model(move || {
        let t = table();
        let slot = |f: &Flow| {
            let at = t.insert(&f.setup(0)).expect("an empty table has room");
            assert!(t.remove(&f.key));
            at
        };
        let first = Flow::new(1);
        let at = slot(&first);
        let second = (2..100)
            .find(|&id| slot(&Flow::new(id)) == at)
            .expect("a key whose first bucket is the first key's");
        *out.lock().unwrap() = Some((first.id, second));
    });
    let pair = found.lock().unwrap().take();
    pair.expect("the search ran")
}

/// A writer removes A and sets up C in the slot A had, while a reader looks both up: the
/// reader never returns one flow's words for the other's key, nor A once it has seen C.
#[test]
fn a_lookup_never_returns_a_torn_or_foreign_entry_while_its_slot_is_reused() {
    let (a, c) = slot_sharing_pair();
    model(3, move || {
        let (fa, fc) = (Flow::new(a), Flow::new(c));
        let t = Arc::new(table());
        let slot = t.insert(&fa.setup(0)).unwrap();
        let writer = {
            let t = t.clone();
            thread::spawn(move || {
                assert!(t.remove(&fa.key));
                assert_eq!(t.insert(&fc.setup(0)), Ok(slot), "C reuses A's slot");
            })
        };
        let a1 = t.lookup(&fa.key);
        let c1 = t.lookup(&fc.key);
        let a2 = t.lookup(&fa.key);
        fa.check(a1);
        fc.check(c1);
        fa.check(a2);
        // A was removed before C went in: once C is seen, A is gone.
        assert!(
            !(c1.is_some() && a2.is_some()),
            "A found after C: {a1:?} {c1:?} {a2:?}"
        );
        writer.join().unwrap();
        assert_eq!(t.lookup(&fa.key), None);
        fc.assert_present(&t);
    });
}

/// The same while the control side dumps the table: every entry it copies out is one flow's
/// own, never one flow's key with another's words.
#[test]
fn a_dump_never_copies_a_torn_entry_while_its_slot_is_reused() {
    let (a, c) = slot_sharing_pair();
    // Two: the dump reads sixteen slots, and a third preemption takes minutes.
    model(2, move || {
        let (fa, fc) = (Flow::new(a), Flow::new(c));
        let t = Arc::new(table());
        t.insert(&fa.setup(0)).unwrap();
        let writer = {
            let t = t.clone();
            thread::spawn(move || {
                assert!(t.remove(&fa.key));
                t.insert(&fc.setup(0)).unwrap();
            })
        };
        for info in t.flows(None, 16, 0).flows {
            let flow = [fa, fc]
                .into_iter()
                .find(|f| f.key == info.key)
                .unwrap_or_else(|| panic!("a key never set up: {info:?}"));
            let as_hit = Hit {
                index: info.index,
                verdict: info.verdict,
                in_vif: info.in_vif,
                out_vif: info.out_vif,
                policy_gen: info.policy_gen,
                is_reverse: info.is_reverse,
                nat: info.nat.is_some(),
                nat_dst: false,
                nat_both: false,
                partner: info.reverse,
            };
            assert!(
                flow.is_mine(&as_hit),
                "flow {}: torn copy {info:?}",
                flow.id
            );
        }
        writer.join().unwrap();
    });
}

/// The table holds `new`'s flow exactly once and `old`'s not at all.
fn assert_only(t: &FlowTable, new: &Flow, old: &Flow) {
    assert_eq!(t.lookup(&old.key), None);
    new.assert_present(t);
    assert_eq!(t.stats().active, 1);
    assert_eq!(t.flows(None, 16, 0).flows.len(), 1);
}

/// Two cores set up the same new flow at once, one of them after removing an old flow: exactly
/// one installs it, the other sees the race.
#[test]
fn racing_setups_of_one_flow_install_it_once() {
    model(3, || {
        let (old, new) = (Flow::new(1), Flow::new(2));
        let t = Arc::new(table());
        t.insert(&old.setup(0)).unwrap();
        let other = {
            let t = t.clone();
            thread::spawn(move || t.insert(&new.setup(100)))
        };
        assert!(t.remove(&old.key));
        let mine = t.insert(&new.setup(100));
        let theirs = other.join().unwrap();
        let mut results = [mine, theirs];
        results.sort_by_key(|r| r.is_err());
        assert!(results[0].is_ok(), "{results:?}");
        assert_eq!(results[1], Err(InsertError::Raced), "{results:?}");
        assert_only(&t, &new, &old);
    });
}

/// A core sets up a new flow while another ages the table: the expired flow goes, the new one
/// (seen after the aging time) never does.
#[test]
fn aging_during_a_setup_removes_only_the_expired_flow() {
    model(3, || {
        let (old, new) = (Flow::new(1), Flow::new(2));
        let t = Arc::new(table());
        t.insert(&old.setup(0)).unwrap();
        let setup = {
            let t = t.clone();
            thread::spawn(move || t.insert(&new.setup(100)))
        };
        let now = 5 * UDP_TIMEOUT;
        let aged = t.age_slice(now, t.buckets());
        assert!(setup.join().unwrap().is_ok());
        // Aging may have found the old flow's bucket busy (then it stays for the next pass).
        assert!(aged <= 1);
        if aged == 0 {
            assert_eq!(t.age_slice(now, t.buckets()), 1);
        }
        assert_only(&t, &new, &old);
    });
}
