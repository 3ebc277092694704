//! Several threads inserting, looking up, removing and aging in one flow table at once, each
//! checked against its own reference model, and the final table checked against all of them.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Barrier};
use vrouter::flow::table::{InsertError, NewFlow};
use vrouter::flow::{FlowConfig, FlowKey, FlowTable, FlowTimeouts, FlowVerdict};

const WORKERS: u16 = 3;
const OPS: usize = 4000;
/// Live flows are stamped with this time; the ager runs at `AGE_NOW`, so they never expire.
const LIVE_TIME: u64 = 1_000_000;
const AGE_NOW: u64 = 500_000;
const SHARED: u16 = 64;

struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

fn key(owner: u16, n: u32) -> FlowKey {
    FlowKey {
        vrf: 2,
        v6: n.is_multiple_of(2),
        proto: 17,
        src: 0x2001_0db8_0000_0000_0000_0000_0000_0000 | u128::from(owner) << 32 | u128::from(n),
        dst: 0x2001_0db8_0000_0000_0000_0000_ffff_0001,
        sport: (n % 60000) as u16,
        dport: owner,
    }
}

fn new_flow(key: FlowKey, verdict: FlowVerdict, now: u64) -> NewFlow {
    NewFlow {
        key,
        verdict,
        with_reverse: verdict == FlowVerdict::Forward,
        in_vif: 1,
        out_vif: 2,
        policy_gen: 0,
        now,
        nat: None,
    }
}

/// A lookup may miss while writers keep its buckets busy (the fast path then falls back to the
/// setup path); a key that must be there is retried until the writers are done.
fn must_find(t: &FlowTable, k: &FlowKey) -> vrouter::flow::table::Hit {
    for _ in 0..100_000 {
        if let Some(h) = t.lookup(k) {
            return h;
        }
        std::thread::yield_now();
    }
    panic!("{k:?} missing")
}

#[derive(Default)]
struct Model {
    live: HashMap<FlowKey, FlowVerdict>,
    old: HashSet<FlowKey>,
    removed: HashSet<FlowKey>,
}

fn worker(t: &FlowTable, owner: u16, seed: u64) -> (Model, Vec<FlowKey>, u64) {
    let mut fulls = 0;
    let mut rng = Rng(seed);
    let mut m = Model::default();
    let mut won_shared = Vec::new();
    let mut next = 0u32;
    let mut live_keys: Vec<FlowKey> = Vec::new();
    for op in 0..OPS {
        // Shared keys: every worker tries each once; exactly one may win.
        if op % 50 == 0 && (op / 50) < usize::from(SHARED) {
            let k = key(1000, (op / 50) as u32);
            match t.insert(&new_flow(k, FlowVerdict::Forward, LIVE_TIME)) {
                Ok(_) => won_shared.push(k),
                Err(InsertError::Raced) => {}
                Err(InsertError::Full) => fulls += 1,
            }
        }
        match rng.next() % 10 {
            0..=2 => {
                let k = key(owner, next);
                next += 1;
                let v = if rng.next().is_multiple_of(4) {
                    FlowVerdict::Drop
                } else {
                    FlowVerdict::Forward
                };
                match t.insert(&new_flow(k, v, LIVE_TIME)) {
                    Ok(_) => {
                        m.live.insert(k, v);
                        live_keys.push(k);
                    }
                    Err(InsertError::Full) => fulls += 1,
                    Err(e) => panic!("{k:?}: {e:?}"),
                }
            }
            3 => {
                let k = key(owner, next);
                next += 1;
                match t.insert(&new_flow(k, FlowVerdict::Forward, 0)) {
                    Ok(_) => {
                        m.old.insert(k);
                    }
                    Err(InsertError::Full) => fulls += 1,
                    Err(e) => panic!("{k:?}: {e:?}"),
                }
            }
            4 if !live_keys.is_empty() => {
                let i = (rng.next() % live_keys.len() as u64) as usize;
                let k = live_keys.swap_remove(i);
                must_find(t, &k);
                assert!(t.remove(&k));
                m.live.remove(&k);
                m.removed.insert(k);
            }
            _ if !live_keys.is_empty() => {
                let k = live_keys[(rng.next() % live_keys.len() as u64) as usize];
                let v = m.live[&k];
                let h = must_find(t, &k);
                assert_eq!(h.verdict, v);
                assert!(!h.is_reverse);
                if v == FlowVerdict::Forward {
                    assert!(must_find(t, &k.reverse()).is_reverse);
                } else {
                    assert!(t.lookup(&k.reverse()).is_none(), "reverse of denied {k:?}");
                }
                t.touch(h.index, 100, LIVE_TIME, None);
            }
            _ => {}
        }
        if op % 97 == 0 {
            for k in m.removed.iter().take(8) {
                assert!(t.lookup(k).is_none(), "removed {k:?} came back");
            }
            for k in m.old.iter().take(8) {
                if let Some(h) = t.lookup(k) {
                    assert_eq!(h.verdict, FlowVerdict::Forward);
                }
            }
        }
    }
    (m, won_shared, fulls)
}

#[test]
fn inserts_lookups_removals_and_aging_at_once_match_the_model() {
    run(32 * 1024, false);
}

/// Near capacity: setups move entries between buckets and evict aged ones while others read.
#[test]
fn the_same_near_capacity() {
    run(4 * 1024, true);
}

fn run(entries: usize, expect_full: bool) {
    let t = Arc::new(
        FlowTable::new(FlowConfig {
            entries,
            timeouts: FlowTimeouts {
                udp: 100,
                ..FlowTimeouts::default()
            },
        })
        .unwrap(),
    );
    let done = Arc::new(AtomicBool::new(false));
    let start = Arc::new(Barrier::new(usize::from(WORKERS) + 1));
    let ager = {
        let (t, done, start) = (t.clone(), done.clone(), start.clone());
        std::thread::spawn(move || {
            start.wait();
            let mut aged = 0;
            while !done.load(Ordering::Relaxed) {
                aged += t.age_slice(AGE_NOW, 4);
            }
            aged
        })
    };
    let workers: Vec<_> = (0..WORKERS)
        .map(|w| {
            let (t, start) = (t.clone(), start.clone());
            std::thread::spawn(move || {
                start.wait();
                worker(&t, w, 0x9e37_79b9_7f4a_7c15 ^ ((u64::from(w) + 1) * 7919))
            })
        })
        .collect();
    let results: Vec<(Model, Vec<FlowKey>, u64)> =
        workers.into_iter().map(|h| h.join().unwrap()).collect();
    done.store(true, Ordering::Relaxed);
    let aged_during = ager.join().unwrap();
    let aged_after = t.age_slice(AGE_NOW, t.buckets());

    let fulls: u64 = results.iter().map(|r| r.2).sum();
    // Each shared key was won by exactly one worker.
    let mut shared: Vec<FlowKey> = results.iter().flat_map(|r| r.1.iter().copied()).collect();
    let n_shared = shared.len();
    shared.sort_by_key(|k| k.sport);
    shared.dedup();
    assert_eq!(n_shared, shared.len(), "a shared key was installed twice");
    if !expect_full {
        assert_eq!(shared.len(), usize::from(SHARED));
    }

    // The table holds exactly the live flows of every model plus the shared ones.
    let mut expect: HashMap<FlowKey, FlowVerdict> = HashMap::new();
    let mut old = 0;
    for (m, _, _) in &results {
        expect.extend(m.live.iter().map(|(k, v)| (*k, *v)));
        old += m.old.len();
    }
    expect.extend(shared.iter().map(|k| (*k, FlowVerdict::Forward)));
    let mut got: HashMap<FlowKey, FlowVerdict> = HashMap::new();
    let mut reverse = 0;
    let mut cursor = Some(0);
    while let Some(c) = cursor {
        let page = t.flows(None, 1000, c);
        for f in page.flows {
            if f.is_reverse {
                reverse += 1;
                continue;
            }
            if let Some(r) = f.reverse {
                let rv = t.flows(None, 1, r as usize).flows;
                assert_eq!(rv[0].index, r);
                assert_eq!(rv[0].key, f.key.reverse());
                assert_eq!(rv[0].reverse, Some(f.index));
            }
            assert!(got.insert(f.key, f.verdict).is_none(), "duplicate {f:?}");
        }
        cursor = page.next;
    }
    assert_eq!(got, expect);
    let forwards = expect
        .values()
        .filter(|v| **v == FlowVerdict::Forward)
        .count();
    assert_eq!(reverse, forwards);
    let s = t.stats();
    assert_eq!(s.active, expect.len() + forwards);
    // Every old flow was aged (or evicted) and nothing else was.
    assert_eq!(
        (aged_during + aged_after) as u64 + s.evicted,
        old as u64,
        "stats {s:?}"
    );
    assert_eq!(s.table_full, fulls);
    assert_eq!(fulls > 0, expect_full, "table full {fulls} times");
}
