use super::credit::{CHUNKED_FROM, CREDIT_CHUNK};
use super::key::icmp_reply_type;
use super::*;

fn key(i: u32, proto: u8) -> FlowKey {
    FlowKey {
        vrf: 3,
        v6: false,
        proto,
        src: u128::from(0xc612_0000u32 | i),
        dst: u128::from(0xc633_6407u32),
        sport: 1024 + (i % 50000) as u16,
        dport: 80,
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

fn table(entries: usize) -> FlowTable {
    FlowTable::new(FlowConfig {
        entries,
        timeouts: FlowTimeouts {
            tcp_established: 1000,
            tcp_closing: 10,
            udp: 100,
            icmp: 50,
            other: 100,
        },
    })
    .unwrap()
}

#[test]
fn a_bucket_entry_and_group_have_the_intended_layout() {
    use std::mem::{align_of, size_of};
    assert_eq!((size_of::<Bucket>(), align_of::<Bucket>()), (64, 64));
    assert_eq!((size_of::<Entry>(), align_of::<Entry>()), (64, 64));
    assert_eq!(size_of::<Counters>(), 16);
    assert_eq!(size_of::<Group>(), 64 + 8 * 64 + 8 * 16);
    // 1 M flows (2 M entries, an eighth more slots) within 256 MiB.
    let entries = 2_000_000usize;
    let groups = (entries + entries / 8).div_ceil(SLOTS_PER_BUCKET);
    assert!(groups * size_of::<Group>() <= 256 << 20);
    let t = table(1000);
    assert_eq!(
        t.memory_bytes(),
        (1000 + 125usize).div_ceil(SLOTS_PER_BUCKET) * size_of::<Group>()
    );
}

#[test]
fn icmp_queries_and_replies_answer_each_other_and_other_types_stay() {
    for (q, r) in [(8, 0), (13, 14), (15, 16), (17, 18)] {
        assert_eq!(icmp_reply_type(1, q), r, "ICMPv4 {q}");
        assert_eq!(icmp_reply_type(1, r), q, "ICMPv4 {r}");
    }
    assert_eq!(icmp_reply_type(58, 128), 129);
    assert_eq!(icmp_reply_type(58, 129), 128);
    // Errors and neighbour discovery are not queries; TCP/UDP ports are not types.
    for (proto, ty) in [(1, 3), (1, 11), (58, 1), (58, 135), (6, 8), (17, 128)] {
        assert_eq!(icmp_reply_type(proto, ty), ty, "proto {proto} type {ty}");
    }
}

#[test]
fn the_memory_advice_covers_the_whole_table_once_before_it_is_used() {
    let calls = std::cell::RefCell::new(Vec::new());
    let t = FlowTable::with_memory_advice(
        FlowConfig {
            entries: 5000,
            ..FlowConfig::default()
        },
        Some(&|start, len| calls.borrow_mut().push((start, len))),
    )
    .unwrap();
    let range = t.groups.as_ptr_range();
    assert_eq!(
        *calls.borrow(),
        [(range.start as usize, t.memory_bytes())],
        "one call, over every group"
    );
    // ... which holds every slot the table was sized for.
    let advised_slots = t.memory_bytes() / std::mem::size_of::<Group>() * SLOTS_PER_BUCKET;
    assert!(advised_slots >= 5000, "{advised_slots} slots advised");
    // The table works as any other afterwards.
    assert!(t
        .insert(&new_flow(key(1, 17), FlowVerdict::Forward, 1))
        .is_ok());
    assert!(t.lookup(&key(1, 17)).is_some());
}

#[test]
fn bad_sizes_are_refused() {
    assert!(FlowTable::new(FlowConfig {
        entries: 0,
        ..FlowConfig::default()
    })
    .is_err());
    assert!(FlowTable::new(FlowConfig {
        entries: MAX_ENTRIES + 1,
        ..FlowConfig::default()
    })
    .is_err());
}

#[test]
fn insert_installs_forward_and_reverse_linked() {
    let t = table(64);
    let k = key(1, 6);
    assert_eq!(t.lookup(&k), None);
    let fi = t.insert(&new_flow(k, FlowVerdict::Forward, 5)).unwrap();
    let f = t.lookup(&k).unwrap();
    let r = t.lookup(&k.reverse()).unwrap();
    assert_eq!(f.index, fi);
    assert!(!f.is_reverse && r.is_reverse);
    assert_eq!((f.in_vif, f.out_vif), (1, 2));
    let page = t.flows(None, 10, 0);
    assert_eq!(page.flows.len(), 2);
    let fwd = page.flows.iter().find(|x| x.index == fi).unwrap();
    assert_eq!(fwd.reverse, Some(r.index));
    assert_eq!(fwd.key, k);
    assert_eq!(t.stats().active, 2);
    assert_eq!(t.stats().created, 1);
    // A second setup of the same key is a race, not a duplicate.
    assert_eq!(
        t.insert(&new_flow(k, FlowVerdict::Forward, 5)),
        Err(InsertError::Raced)
    );
    assert_eq!(t.stats().active, 2);
}

#[test]
fn denied_flows_are_installed_alone() {
    let t = table(64);
    let k = key(2, 17);
    t.insert(&new_flow(k, FlowVerdict::Drop, 0)).unwrap();
    assert_eq!(t.lookup(&k).unwrap().verdict, FlowVerdict::Drop);
    assert_eq!(t.lookup(&k.reverse()), None);
}

#[test]
fn icmp_reverse_keeps_the_identifier_and_pairs_query_and_reply_types() {
    for (proto, request, reply) in [(1u8, 8u16, 0u16), (1, 13, 14), (58, 128, 129)] {
        let k = FlowKey {
            dport: request,
            ..key(3, proto)
        };
        let r = k.reverse();
        assert_eq!((r.sport, r.dport), (k.sport, reply));
        assert_eq!((r.src, r.dst), (k.dst, k.src));
        assert_eq!(r.reverse(), k);
    }
    // Other types keep their type: an error is not the reverse of an echo.
    let unreachable = FlowKey {
        dport: 3,
        ..key(3, 1)
    };
    assert_eq!(unreachable.reverse().dport, 3);
    let echo = FlowKey {
        dport: 8,
        ..key(3, 1)
    };
    assert_ne!(echo.reverse(), unreachable.reverse());
    // ICMPv6 numbers mean other things in ICMPv4 and back.
    let v4_128 = FlowKey {
        dport: 128,
        ..key(3, 1)
    };
    assert_eq!(v4_128.reverse().dport, 128);
    let u = key(3, 17).reverse();
    assert_eq!((u.sport, u.dport), (80, key(3, 17).sport));
}

/// Install `f` (and its reverse) from `credit`, as a forwarding core's stage does.
fn insert_from(t: &FlowTable, f: &NewFlow, credit: &mut SetupCredit) -> Result<u32, InsertError> {
    let rev = f.with_reverse.then(|| t.place(&f.key.reverse()));
    t.insert_placed(f, &t.place(&f.key), rev.as_ref(), credit)
}

#[test]
fn setup_credits_reserve_in_chunks_and_never_exceed_capacity() {
    let t = table(CHUNKED_FROM);
    let (mut a, mut b) = (SetupCredit::chunked(), SetupCredit::chunked());
    let flow = |i| new_flow(key(i, 17), FlowVerdict::Forward, 0);
    // The first setup takes a chunk; the next 31 (two entries each) take from it.
    insert_from(&t, &flow(0), &mut a).unwrap();
    assert_eq!(
        (t.reserved_entries(), a.entries()),
        (CREDIT_CHUNK, CREDIT_CHUNK - 2)
    );
    for i in 1..32 {
        insert_from(&t, &flow(i), &mut a).unwrap();
    }
    assert_eq!((t.reserved_entries(), a.entries()), (CREDIT_CHUNK, 0));
    assert_eq!((t.stats().active, t.stats().created), (64, 32));

    // Two setters-up taking turns until neither gets a flow in.
    let (mut installed, mut fails_in_a_row) = (32u64, 0);
    for i in 32u32.. {
        let c = if i % 2 == 0 { &mut a } else { &mut b };
        match insert_from(&t, &flow(i), c) {
            Ok(_) => (installed, fails_in_a_row) = (installed + 1, 0),
            Err(e) => {
                assert_eq!(e, InsertError::Full);
                fails_in_a_row += 1;
                if fails_in_a_row == 2 {
                    break;
                }
            }
        }
        assert!(t.reserved_entries() <= t.capacity());
        if i % 4096 == 0 {
            let held = a.entries() + b.entries();
            assert_eq!(t.reserved_entries(), t.stats().active + held);
        }
    }
    let s = t.stats();
    assert_eq!(s.created, installed);
    assert_eq!(s.active as u64, 2 * installed);
    // Only what the credits hold is left unused: less than a chunk each.
    assert_eq!(s.active + a.entries() + b.entries(), t.capacity());
    assert!(a.entries() < CREDIT_CHUNK && b.entries() < CREDIT_CHUNK);
    t.release(&mut a);
    t.release(&mut b);
    assert_eq!(t.reserved_entries(), s.active);
    // What flows free goes back to the table.
    assert!(t.remove(&key(0, 17)));
    assert_eq!(t.reserved_entries(), s.active - 2);
    assert_eq!(t.stats().active, s.active - 2);
}

#[test]
fn small_tables_reserve_exactly_what_a_setup_needs() {
    let t = table(16);
    let mut c = SetupCredit::chunked();
    insert_from(&t, &new_flow(key(1, 17), FlowVerdict::Forward, 0), &mut c).unwrap();
    assert_eq!((t.reserved_entries(), c.entries()), (2, 0));
}

#[test]
fn an_insert_refused_for_full_buckets_gives_its_reservation_back() {
    // Fill both buckets of one key with drop flows that never go idle (now = 0, looked at
    // at 0) while the table as a whole has room: that key's insert is refused after it
    // has reserved its entry, which must go back to the table, not vanish.
    let t = table(64);
    let target = key(0, 17);
    let pair = |p: &Place| (p.b1.min(p.b2), p.b1.max(p.b2));
    let want = pair(&t.place(&target));
    let mut filled = 0;
    for i in 1u32.. {
        if filled == 2 * SLOTS_PER_BUCKET {
            break;
        }
        let k = key(i, 17);
        if pair(&t.place(&k)) == want {
            t.insert(&new_flow(k, FlowVerdict::Drop, 0)).unwrap();
            filled += 1;
        }
    }
    assert_eq!(t.stats().active, 2 * SLOTS_PER_BUCKET);
    for _ in 0..5 {
        assert_eq!(
            t.insert(&new_flow(target, FlowVerdict::Drop, 0)),
            Err(InsertError::Full)
        );
        assert_eq!(t.reserved_entries(), t.stats().active);
    }
    t.flush();
    assert_eq!((t.reserved_entries(), t.stats().active), (0, 0));
    // And the whole capacity is there to be used again.
    let fits = (1000..2000u32)
        .filter(|&i| t.insert(&new_flow(key(i, 6), FlowVerdict::Drop, 0)).is_ok())
        .count();
    assert!(
        fits >= 60,
        "only {fits} of 64 entries usable after the refusals"
    );
}

#[test]
fn a_credit_never_holds_more_than_a_chunk() {
    let t = table(CHUNKED_FROM);
    let mut c = SetupCredit::chunked();
    // One entry left, a two-entry setup: topped up to a chunk, not a chunk more.
    assert!(t.reserve(&mut c, 1));
    assert_eq!(c.entries(), CREDIT_CHUNK - 1);
    for _ in 0..CREDIT_CHUNK - 2 {
        assert!(t.reserve(&mut c, 1));
    }
    assert_eq!(c.entries(), 1);
    assert!(t.reserve(&mut c, 2));
    assert_eq!(c.entries(), CREDIT_CHUNK - 2);
    // A refused insert hands its two entries back: a chunk at most.
    c.entries += 2;
    assert!(c.entries() <= CREDIT_CHUNK);
    assert_eq!(t.reserved_entries(), 2 * CREDIT_CHUNK - 1);
    t.release(&mut c);
    assert_eq!(t.reserved_entries(), CREDIT_CHUNK - 1);
}

#[test]
fn full_table_refuses_then_counts() {
    let t = table(16);
    let mut ok = 0;
    for i in 0..16 {
        if t.insert(&new_flow(key(i, 17), FlowVerdict::Forward, 0))
            .is_ok()
        {
            ok += 1;
        }
    }
    assert_eq!(ok, 8);
    assert_eq!(t.stats().active, 16);
    assert_eq!(t.stats().table_full, 8);
    // Existing flows still hit.
    for i in 0..16 {
        if let Some(h) = t.lookup(&key(i, 17)) {
            assert_eq!(h.verdict, FlowVerdict::Forward);
        }
    }
    // Once idle past the UDP timeout they can be evicted for a new flow.
    t.insert(&new_flow(key(100, 17), FlowVerdict::Forward, 1000))
        .unwrap();
    assert!(t.stats().evicted >= 1);
    assert!(t.stats().active <= 16);
}

#[test]
fn aging_respects_per_protocol_timeouts_and_the_later_direction() {
    let t = table(64);
    let udp = key(1, 17);
    let icmp = key(2, 1);
    let tcp = key(3, 6);
    for k in [udp, icmp, tcp] {
        t.insert(&new_flow(k, FlowVerdict::Forward, 0)).unwrap();
    }
    // Establish the TCP flow; the reply direction keeps the UDP flow alive.
    let h = t.lookup(&tcp).unwrap();
    t.touch(h.index, 60, 0, Some(0x02));
    let r = t.lookup(&tcp.reverse()).unwrap();
    t.touch(r.index, 60, 0, Some(0x12));
    let ur = t.lookup(&udp.reverse()).unwrap();
    t.touch(ur.index, 60, 90, None);
    let all = t.buckets();
    assert_eq!(t.age_slice(50, all), 0);
    assert_eq!(t.age_slice(51, all), 1); // ICMP, 50 idle
    assert!(t.lookup(&icmp).is_none() && t.lookup(&icmp.reverse()).is_none());
    assert_eq!(t.age_slice(190, all), 0); // UDP reply seen at 90
    assert_eq!(t.age_slice(191, all), 1);
    assert_eq!(t.age_slice(1000, all), 0); // TCP established: 1000
    t.touch(h.index, 60, 1000, Some(0x11)); // FIN: closing timeout
    assert_eq!(t.age_slice(1010, all), 0);
    assert_eq!(t.age_slice(1011, all), 1);
    let s = t.stats();
    assert_eq!((s.aged, s.active, s.created), (3, 0, 3));
}

#[test]
fn age_slice_covers_the_table_in_steps() {
    let t = table(256);
    for i in 0..50 {
        t.insert(&new_flow(key(i, 17), FlowVerdict::Forward, 0))
            .unwrap();
    }
    let mut aged = 0;
    for _ in 0..t.buckets() {
        aged += t.age_slice(1000, 1);
    }
    assert_eq!(aged, 50);
    assert_eq!(t.stats().active, 0);
}

#[test]
fn fills_to_capacity_by_moving_entries_between_their_buckets() {
    // Each table has its own random hash seed: small ones are filled many times over.
    let sizes = [64; 40]
        .into_iter()
        .chain([1000; 20])
        .chain([2000; 20])
        .chain([200_000]);
    for entries in sizes {
        let t = table(entries);
        for i in 0..(entries / 2) as u32 {
            let k = FlowKey {
                sport: (i % 60_000) as u16,
                src: u128::from(i / 60_000),
                ..key(0, 17)
            };
            t.insert(&new_flow(k, FlowVerdict::Forward, 0))
                .unwrap_or_else(|e| panic!("{entries}: flow {i}: {e:?}"));
        }
        assert_eq!(t.stats().active, entries);
        assert_eq!(t.stats().evicted, 0);
        // Every flow is still found and linked to its reverse after the moves.
        for f in t.flows(None, usize::MAX, 0).flows {
            let r = f.reverse.unwrap();
            let rv = t.flows(None, 1, r as usize).flows;
            assert_eq!(rv[0].key, f.key.reverse());
            assert_eq!(rv[0].reverse, Some(f.index));
            assert_eq!(t.lookup(&f.key).unwrap().index, f.index);
        }
    }
}

#[test]
fn tcp_state_machine() {
    use TcpState::*;
    assert_eq!(None.next(0x02), Syn);
    assert_eq!(Syn.next(0x12), Established);
    assert_eq!(Syn.next(0x10), Established);
    assert_eq!(Established.next(0x10), Established);
    assert_eq!(Established.next(0x11), Fin);
    assert_eq!(Fin.next(0x10), Fin);
    assert_eq!(Established.next(0x04), Rst);
}

#[test]
fn burst_lookup_matches_single_lookups() {
    let t = table(1024);
    for i in 0..100 {
        t.insert(&new_flow(key(i, 17), FlowVerdict::Forward, 0))
            .unwrap();
    }
    let keys: Vec<FlowKey> = (0..150)
        .map(|i| key(i, 17))
        .chain((0..50).map(|i| key(i, 17).reverse()))
        .collect();
    let mut out = vec![None; keys.len()];
    t.lookup_burst(&keys, &mut out);
    for (k, o) in keys.iter().zip(&out) {
        assert_eq!(*o, t.lookup(k));
    }
    assert_eq!(out.iter().filter(|o| o.is_some()).count(), 150);
}

#[test]
fn dump_pages_filter_and_flush() {
    let t = table(256);
    for i in 0..30 {
        let mut k = key(i, 6);
        k.vrf = if i % 3 == 0 { 7 } else { 3 };
        t.insert(&new_flow(k, FlowVerdict::Forward, 0)).unwrap();
    }
    let mut seen = Vec::new();
    let mut cursor = Some(0);
    while let Some(c) = cursor {
        let p = t.flows(Some(7), 4, c);
        assert!(p.flows.len() <= 4);
        seen.extend(p.flows);
        cursor = p.next;
    }
    assert_eq!(seen.len(), 20);
    assert!(seen.iter().all(|f| f.key.vrf == 7));
    assert_eq!(t.flush(), 30);
    assert_eq!(t.stats().active, 0);
    assert!(t.flows(None, 100, 0).flows.is_empty());
}
