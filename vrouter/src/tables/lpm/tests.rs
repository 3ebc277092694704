use super::pool::{FULL_WAIT, RECLAIM_BATCH, RETIRED_HIGH};
use super::*;
use proptest::prelude::*;
use std::time::{Duration, Instant};

/// The obviously-right reference: scan every rule.
fn naive(rules: &BTreeMap<(u128, u8), u64>, bits: u8, key: u128) -> Option<u64> {
    rules
        .iter()
        .filter(|(&(p, l), _)| key & !mask_low_n(bits, l) == p)
        .max_by_key(|(&(_, l), _)| l)
        .map(|(_, &v)| v)
}

fn masked(bits: u8, addr: u128, len: u8) -> u128 {
    addr & !mask_low_n(bits, len) & mask_low(bits)
}

#[derive(Debug, Clone)]
enum Op {
    Add(u128, u8, u64),
    Del(usize),
}

fn ops(bits: u8) -> impl Strategy<Value = Vec<Op>> {
    // Addresses drawn from a small pool of bases so prefixes overlap and nest often.
    let addr = (0usize..4, any::<u128>()).prop_map(move |(base, noise)| {
        let bases = [
            0x0a00_0000u128 << (bits - 32),
            0xc612_0000 << (bits - 32),
            0,
            mask_low(bits),
        ];
        (bases[base] ^ (noise >> (128 - bits) >> (bits / 2))) & mask_low(bits)
    });
    let op = prop_oneof![
        3 => (addr, 0..=bits, 0u64..1000).prop_map(move |(a, l, v)| Op::Add(masked(bits, a, l), l, v)),
        1 => any::<usize>().prop_map(Op::Del),
    ];
    proptest::collection::vec(op, 1..80)
}

/// As [`ops`], with as many removals as additions and longer runs: groups are emptied,
/// folded and reused over and over. Lengths lean towards the ones that take groups.
fn churn_ops(bits: u8) -> impl Strategy<Value = Vec<Op>> {
    let addr = (0usize..3, any::<u128>()).prop_map(move |(base, noise)| {
        let bases = [
            0x0a00_0000u128 << (bits - 32),
            0xc612_0000 << (bits - 32),
            0,
        ];
        (bases[base] ^ (noise >> (128 - bits) >> (bits / 2))) & mask_low(bits)
    });
    let len = prop_oneof![
        1 => 0..=bits,
        2 => (bits / 2)..=bits,
        1 => Just(bits),
    ];
    let op = prop_oneof![
        1 => (addr, len, 0u64..8).prop_map(move |(a, l, v)| Op::Add(masked(bits, a, l), l, v)),
        1 => any::<usize>().prop_map(Op::Del),
    ];
    proptest::collection::vec(op, 1..300)
}

/// Every probe key answers as the reference does.
fn compare(
    lpm: &Lpm,
    reference: &BTreeMap<(u128, u8), u64>,
    bits: u8,
    probes: &[u128],
) -> Result<(), TestCaseError> {
    // Probe inside every prefix, at its edges, and at random keys.
    let mut keys: Vec<u128> = probes.iter().map(|p| p & mask_low(bits)).collect();
    for &(p, l) in reference.keys() {
        keys.push(p);
        keys.push(p | mask_low_n(bits, l));
        keys.push(p.wrapping_sub(1) & mask_low(bits));
    }
    for k in keys {
        let want = naive(reference, bits, k);
        prop_assert_eq!(lpm.lookup(k), want, "key {:x}", k);
        if bits == 32 {
            prop_assert_eq!(lpm.lookup_v4(k as u32), want, "v4 key {:x}", k);
        }
    }
    Ok(())
}

/// Applies `op` to the table and the reference; false if it was a removal from an empty
/// table (nothing done).
fn apply(lpm: &Lpm, reference: &mut BTreeMap<(u128, u8), u64>, op: &Op) -> bool {
    match *op {
        Op::Add(p, l, v) => {
            lpm.insert(p, l, v).unwrap();
            reference.insert((p, l), v);
        }
        Op::Del(i) => {
            if reference.is_empty() {
                return false;
            }
            let k = *reference.keys().nth(i % reference.len()).unwrap();
            reference.remove(&k);
            lpm.remove(k.0, k.1).unwrap();
        }
    }
    true
}

/// Applies `ops`, comparing with the reference along the way and at the end; then removes
/// every route (no group may stay in use) and applies them again on recycled groups.
fn run_and_drain(bits: u8, ops: Vec<Op>, probes: Vec<u128>) -> Result<(), TestCaseError> {
    let lpm = Lpm::new(bits, 4096);
    let mut reference = BTreeMap::new();
    for round in 0..2 {
        for (n, op) in ops.iter().enumerate() {
            if !apply(&lpm, &mut reference, op) {
                continue;
            }
            if n % 16 == 0 {
                compare(&lpm, &reference, bits, &probes)?;
            }
        }
        compare(&lpm, &reference, bits, &probes)?;
        let s = lpm.stats();
        prop_assert_eq!(s.routes, reference.len());
        prop_assert_eq!(
            s.groups_in_use + s.groups_retired + s.groups_free,
            s.groups_allocated
        );
        let keys: Vec<_> = reference.keys().copied().collect();
        for (p, l) in keys {
            reference.remove(&(p, l));
            lpm.remove(p, l).unwrap();
        }
        compare(&lpm, &reference, bits, &probes)?;
        let s = lpm.stats();
        prop_assert_eq!(s.groups_in_use, 0, "round {}: {:?}", round, s);
        prop_assert_eq!(
            s.groups_free,
            s.groups_allocated,
            "no readers: all reusable"
        );
    }
    Ok(())
}

/// Applies `ops`, then compares with the reference.
fn run(bits: u8, ops: Vec<Op>, probes: Vec<u128>) -> Result<(), TestCaseError> {
    let lpm = Lpm::new(bits, 4096);
    let mut reference = BTreeMap::new();
    for op in &ops {
        apply(&lpm, &mut reference, op);
    }
    compare(&lpm, &reference, bits, &probes)
}

proptest! {
    #[test]
    fn ipv4_lpm_matches_naive_reference(o in ops(32), probes in proptest::collection::vec(any::<u128>(), 32)) {
        run(32, o, probes)?;
    }

    #[test]
    fn ipv6_lpm_matches_naive_reference(o in ops(128), probes in proptest::collection::vec(any::<u128>(), 32)) {
        run(128, o, probes)?;
    }

    #[test]
    fn ipv4_lpm_under_delete_heavy_churn_matches_reference_and_frees_every_group(
        o in churn_ops(32),
        probes in proptest::collection::vec(any::<u128>(), 32),
    ) {
        run_and_drain(32, o, probes)?;
    }

    #[test]
    fn ipv6_lpm_under_delete_heavy_churn_matches_reference_and_frees_every_group(
        o in churn_ops(128),
        probes in proptest::collection::vec(any::<u128>(), 32),
    ) {
        run_and_drain(128, o, probes)?;
    }
}

#[test]
fn emptied_groups_fold_into_their_parent_and_are_reused() {
    let lpm = Lpm::new(32, 64);
    lpm.insert(0x0a000000, 8, 1).unwrap();
    // A /32 takes two groups (below the /16 and below the /24).
    lpm.insert(0x0a010203, 32, 2).unwrap();
    assert_eq!(lpm.stats().groups_in_use, 2);
    lpm.remove(0x0a010203, 32).unwrap();
    let s = lpm.stats();
    assert_eq!((s.groups_in_use, s.groups_free), (0, 2), "{s:?}");
    assert_eq!(lpm.lookup_v4(0x0a010203), Some(1), "falls back to the /8");
    // Distinct prefixes one after another: the same two groups serve them all.
    for i in 0..10_000u32 {
        let a = 0x0b000000 | (i.wrapping_mul(2_654_435_761) & 0x00ff_ffff);
        lpm.insert(u128::from(a), 32, 3).unwrap();
        assert_eq!(lpm.lookup_v4(a), Some(3));
        lpm.remove(u128::from(a), 32).unwrap();
        assert_eq!(lpm.lookup_v4(a), None);
    }
    let s = lpm.stats();
    // Unlinked groups are retired in batches, fresh storage serving meanwhile.
    assert_eq!(s.groups_in_use, 0, "{s:?}");
    assert!(s.groups_allocated <= 2 + RECLAIM_BATCH + 2, "{s:?}");
    // A uniform group of routes longer than its parent entry stays: two /17s fill the
    // group below 10.1/16, and removing one must give back exactly its half.
    lpm.insert(0x0a010000, 17, 4).unwrap();
    lpm.insert(0x0a018000, 17, 4).unwrap();
    lpm.remove(0x0a010000, 17).unwrap();
    assert_eq!(lpm.lookup_v4(0x0a010001), Some(1));
    assert_eq!(lpm.lookup_v4(0x0a018001), Some(4));
    lpm.remove(0x0a018000, 17).unwrap();
    assert_eq!(lpm.lookup_v4(0x0a018001), Some(1));
    assert_eq!(lpm.stats().groups_in_use, 0);
}

#[test]
fn a_registered_reader_holds_retired_groups_until_it_announces() {
    let lpm = Lpm::new(32, 64);
    let reader = lpm.grace().register();
    lpm.insert(0x0a010203, 32, 2).unwrap();
    lpm.remove(0x0a010203, 32).unwrap();
    let s = lpm.stats();
    assert_eq!((s.groups_retired, s.groups_free), (2, 0), "{s:?}");
    // Meanwhile new groups come from fresh storage.
    lpm.insert(0x0a020304, 32, 2).unwrap();
    assert_eq!(lpm.stats().groups_allocated, 4);
    lpm.remove(0x0a020304, 32).unwrap();
    reader.quiescent();
    // The first two are reusable; the last two got their ticket (their grace period began)
    // only now, after the reader's announcement.
    let s = lpm.stats();
    assert_eq!((s.groups_retired, s.groups_free), (2, 2), "{s:?}");
    reader.quiescent();
    let s = lpm.stats();
    assert_eq!((s.groups_retired, s.groups_free), (0, 4), "{s:?}");
    // An offline reader holds nothing up.
    reader.offline();
    lpm.insert(0x0a010203, 32, 2).unwrap();
    lpm.remove(0x0a010203, 32).unwrap();
    assert_eq!(lpm.stats().groups_retired, 0);
    assert_eq!(lpm.stats().groups_allocated, 4);
}

#[test]
fn a_slow_reader_holds_up_removals_not_storage() {
    use std::sync::atomic::AtomicBool;
    let lpm = Lpm::new(32, 1 << 14);
    let stop = AtomicBool::new(false);
    std::thread::scope(|s| {
        let (tx, rx) = std::sync::mpsc::channel::<()>();
        let (lpm, stop) = (&lpm, &stop);
        s.spawn(move || {
            let r = lpm.grace().register();
            tx.send(()).unwrap();
            // Announces once a millisecond: a thousand times slower than an lcore.
            while !stop.load(Ordering::Relaxed) {
                std::thread::sleep(Duration::from_millis(1));
                r.quiescent();
            }
        });
        rx.recv().unwrap();
        for i in 0..3000u32 {
            let a = u128::from(i.wrapping_mul(2_654_435_761));
            lpm.insert(a, 32, 1).unwrap();
            lpm.remove(a, 32).unwrap();
            let st = lpm.stats();
            assert!(st.groups_retired <= RETIRED_HIGH + 2, "{st:?}");
        }
        stop.store(true, Ordering::Relaxed);
    });
    let st = lpm.stats();
    assert!(st.groups_allocated <= RETIRED_HIGH + 4, "{st:?}");
}

#[test]
fn a_stuck_reader_stalls_removals_only_each_time_the_backlog_doubles() {
    let lpm = Lpm::new(32, 1 << 12);
    let reader = lpm.grace().register();
    let t0 = Instant::now();
    // 320 routes, each retiring two groups on removal: waits at 257 and at about 514.
    for i in 0..320u32 {
        let a = u128::from(i.wrapping_mul(2_654_435_761));
        lpm.insert(a, 32, 1).unwrap();
        lpm.remove(a, 32).unwrap();
    }
    let waited = t0.elapsed();
    assert!(
        waited >= 2 * FULL_WAIT && waited < 3 * FULL_WAIT,
        "{waited:?}"
    );
    assert_eq!(lpm.stats().groups_retired, 640);
    // Once it moves again, they are all recycled.
    reader.quiescent();
    let _ = lpm.stats();
    reader.quiescent();
    let s = lpm.stats();
    assert_eq!((s.groups_retired, s.groups_free), (0, 640), "{s:?}");
}

#[test]
fn a_full_pool_waits_for_a_grace_period_then_fails_without_a_trace() {
    // Two groups: a /32 needs both.
    let lpm = Lpm::new(32, 2);
    let reader = lpm.grace().register();
    lpm.insert(0x0a010203, 32, 2).unwrap();
    lpm.remove(0x0a010203, 32).unwrap();
    // Both retired, the reader still online: the insert waits, then gives up.
    let t0 = Instant::now();
    assert_eq!(
        lpm.insert(0x0a020304, 32, 3),
        Err(LpmError::Full { limit: 2 })
    );
    assert!(t0.elapsed() >= FULL_WAIT);
    assert_eq!(lpm.lookup_v4(0x0a020304), None);
    assert_eq!(lpm.stats().groups_in_use, 0, "nothing half-made");
    // A reader that announces while the writer waits lets it through.
    std::thread::scope(|s| {
        let (tx, rx) = std::sync::mpsc::channel::<()>();
        let lpm = &lpm;
        let waiter = s.spawn(move || {
            tx.send(()).unwrap();
            lpm.insert(0x0a020304, 32, 3)
        });
        rx.recv().unwrap();
        std::thread::sleep(Duration::from_millis(20));
        reader.quiescent();
        assert_eq!(waiter.join().unwrap(), Ok(()));
    });
    assert_eq!(lpm.lookup_v4(0x0a020304), Some(3));
    // A /24 elsewhere needs one group more than the pool has left.
    assert_eq!(
        lpm.insert(0x0b000100, 24, 1),
        Err(LpmError::Full { limit: 2 })
    );
    assert_eq!(lpm.stats().groups_in_use, 2);
}

/// A reader looks up addresses covered by routes that exist throughout, in /16s where a
/// writer keeps adding and removing longer routes to other addresses: the groups below
/// the addresses read are made, folded away, retired and reused under other /16s (filled
/// with those /16s' routes) all the time. A lookup that read a group after its reuse would
/// answer another /16's route; none may.
#[test]
fn readers_never_miss_a_route_that_exists_while_groups_are_recycled() {
    use std::sync::atomic::AtomicBool;
    const SLASH16S: u32 = 64;
    // Stable: 10.i.0.0/16 → i; in even /16s also 10.i.0.1/32 → 1000 + i (so their
    // second-level group stays, and only third-level ones come and go).
    // Room for the stable groups and a few hundred more: the churn below makes far more
    // groups than that, so it must reuse them.
    let lpm = Lpm::new(32, 1024);
    for i in 0..SLASH16S {
        lpm.insert(u128::from(0x0a00_0000 | i << 16), 16, u64::from(i))
            .unwrap();
        if i.is_multiple_of(2) {
            lpm.insert(u128::from(0x0a00_0001 | i << 16), 32, u64::from(1000 + i))
                .unwrap();
        }
    }
    let stop = AtomicBool::new(false);
    let reads = std::sync::atomic::AtomicU64::new(0);
    let mut rounds = 0u32;
    std::thread::scope(|s| {
        let reader = s.spawn(|| {
            let r = lpm.grace().register();
            let (mut n, mut x) = (0u64, 1u32);
            while !stop.load(Ordering::Relaxed) {
                for _ in 0..64 {
                    x ^= x << 13;
                    x ^= x >> 17;
                    x ^= x << 5;
                    let i = x % SLASH16S;
                    // 10.i.X.Z with X even and Z in 64..128: the writer's /32s have Z of
                    // 128 or more and its /24s an odd X, so only the /16 covers these.
                    let (a, want) = if i.is_multiple_of(2) && x & 0x8000_0000 != 0 {
                        (0x0a00_0001 | i << 16, 1000 + i)
                    } else {
                        (
                            0x0a00_0040 | i << 16 | (x >> 8 & 0xfe00) | (x >> 24 & 0x3f),
                            i,
                        )
                    };
                    assert_eq!(lpm.lookup_v4(a), Some(u64::from(want)), "{a:08x}");
                    n += 1;
                }
                reads.store(n, Ordering::Relaxed);
                r.quiescent();
            }
            n
        });
        // No clock: the churn goes on until the reader has looked up a good number of
        // addresses meanwhile (or its checks failed and it stopped).
        while (rounds < 20_000 || reads.load(Ordering::Relaxed) < 500_000) && !reader.is_finished()
        {
            let i = rounds % SLASH16S;
            let r = rounds.wrapping_mul(2_654_435_761);
            let a = 0x0a00_0000 | i << 16 | (r & 0xfe00) | 0x80 | (r & 0x7f);
            let b = 0x0a00_0000 | i << 16 | (r >> 8 & 0xfe00) | 0x100;
            lpm.insert(u128::from(a), 32, 7).unwrap();
            lpm.insert(u128::from(b), 24, 8).unwrap();
            lpm.remove(u128::from(a), 32).unwrap();
            lpm.remove(u128::from(b), 24).unwrap();
            rounds += 1;
        }
        stop.store(true, Ordering::Relaxed);
        assert!(reader.join().expect("the reader's checks held") >= 500_000);
    });
    let s = lpm.stats();
    // What the stable routes need: in each even /16, one group below it and one below its
    // 10.i.0/24; the odd ones' groups were all folded away.
    assert_eq!(s.groups_in_use, 64, "{s:?}");
    // Each round made a group below a /24 and, in odd /16s, one below the /16.
    assert!(rounds > 2 * 1024, "{rounds} rounds");
    assert!(s.groups_allocated <= 1024, "{s:?}");
}

#[test]
fn rejects_bad_prefixes_and_missing_routes() {
    let lpm = Lpm::new(32, 16);
    assert_eq!(lpm.insert(0xc0000201, 24, 1), Err(LpmError::HostBits));
    assert_eq!(lpm.insert(0, 33, 1), Err(LpmError::BadLength));
    assert_eq!(lpm.remove(0xc0000200, 24), Err(LpmError::NotFound));
    assert_eq!(lpm.lookup(0xc0000201), None);
}

#[test]
fn full_group_pool_fails_cleanly_and_keeps_old_routes() {
    let lpm = Lpm::new(32, 64);
    lpm.insert(0x0a000000, 8, 7).unwrap();
    let mut err = None;
    for i in 0..100u128 {
        if let Err(e) = lpm.insert(0x0a000000 | (i << 16) | 0x0100, 24, 1) {
            err = Some(e);
            break;
        }
    }
    assert!(matches!(err, Some(LpmError::Full { .. })));
    assert_eq!(lpm.lookup(0x0aff0001), Some(7), "the /8 still answers");
}

#[test]
fn lookups_see_old_or_new_route_while_a_writer_churns() {
    use std::sync::Arc;
    let lpm = Arc::new(Lpm::new(32, 1024));
    lpm.insert(0xc6120000, 15, 1).unwrap();
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let reads = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let r = {
        let (lpm, stop, reads) = (lpm.clone(), stop.clone(), reads.clone());
        std::thread::spawn(move || {
            let reader = lpm.grace().register();
            let mut n = 0u64;
            while !stop.load(Ordering::Relaxed) {
                let v = lpm.lookup(0xc6120105);
                assert!(v == Some(1) || v == Some(2) || v == Some(3), "{v:?}");
                n += 1;
                reads.store(n, Ordering::Relaxed);
                reader.quiescent();
            }
            n
        })
    };
    // Optimised, a fixed count of rounds can be over before the reader starts: churn until
    // it has looked up a good number of times meanwhile (or its check failed and it stopped).
    let mut rounds = 0u32;
    while (rounds < 2000 || reads.load(Ordering::Relaxed) < 50_000) && !r.is_finished() {
        lpm.insert(0xc6120100, 24, 2).unwrap();
        lpm.insert(0xc6120104, 30, 3).unwrap();
        lpm.remove(0xc6120104, 30).unwrap();
        lpm.remove(0xc6120100, 24).unwrap();
        rounds += 1;
    }
    stop.store(true, Ordering::Relaxed);
    assert!(r.join().unwrap() >= 50_000);
}

#[test]
fn a_million_ipv4_routes_fit() {
    // 1 M /24s and /32s spread over the address space.
    let lpm = Lpm::new(32, 1 << 17);
    let mut n = 0u32;
    for i in 0..(1u32 << 20) {
        // Multiplying by an odd constant permutes the 24-bit prefixes: all distinct.
        let a = (i.wrapping_mul(2_654_435_761) & 0x00ff_ffff) << 8;
        lpm.insert(u128::from(a), 24, u64::from(i)).unwrap();
        n += 1;
    }
    assert_eq!(lpm.len(), n as usize);
    let a5 = (5u32.wrapping_mul(2_654_435_761) & 0x00ff_ffff) << 8;
    assert_eq!(lpm.lookup(u128::from(a5 | 7)), Some(5));
}
