//! The packed virtqueue against the in-repo packed driver: frames both ways over many wraps of
//! the ring, mergeable buffers, indirect tables, event suppression, and hostile rings (each
//! breaking only its own queue).

use std::os::fd::OwnedFd;
use std::sync::Arc;

use super::super::*;
use super::*;
use crate::frontend::{GuestRam, PackedDesc, PackedDriver, GPA_BASE};
use crate::test_support::{bufs, frame, F};

fn setup(size: u16, buf: u32, features: u64) -> (GuestRam, PackedDriver, PackedQueue) {
    let mut ram = GuestRam::new(16 << 20).unwrap();
    let d = PackedDriver::new(&mut ram, size, buf);
    let q = d.backend_queue(&ram, 1, features);
    (ram, d, q)
}

#[test]
fn dequeue_strips_header_from_single_chained_and_indirect_chains() {
    let (mut ram, mut d, mut q) = setup(64, 2048, F);
    assert_eq!(
        d.device_event_flags(&ram),
        RING_EVENT_FLAGS_DISABLE,
        "a polling backend asks for no kicks"
    );
    let a = frame(60, 1);
    let b = frame(1500, 2);
    let c = frame(3000, 3);
    assert!(d.add_tx(&mut ram, 12, &a, 2048, false));
    assert!(d.add_tx(&mut ram, 12, &b, 100, false), "16 descriptors");
    assert!(
        d.add_tx(&mut ram, 12, &c, 100, true),
        "indirect table of 31"
    );
    let mut out = bufs(8);
    assert_eq!(q.dequeue_burst(&mut out), 3);
    assert_eq!(out[0].data(), &a[..]);
    assert_eq!(out[1].data(), &b[..]);
    assert_eq!(out[2].data(), &c[..]);
    let used = d.reap(&ram);
    assert_eq!(used.len(), 3, "every chain returned to the guest");
    assert!(
        used.iter().all(|&(_, len)| len == 0),
        "TX chains return length 0"
    );
    assert_eq!(q.broken(), None);
    assert_eq!(q.stats().packets, 3);
    assert_eq!(d.free_slots(), 64, "every slot handed back");
}

#[test]
fn frames_cross_many_wraps_of_the_ring_both_ways_in_order() {
    // 8 slots, chains of 1 to 3 slots: the wrap counters flip many times, chains straddle the
    // ring's end.
    let (mut ram, mut tx, mut txq) = setup(8, 2048, F);
    let mut rx = PackedDriver::new(&mut ram, 8, 4096);
    let mut rxq = rx.backend_queue(&ram, 0, F);
    let mut out = bufs(4);
    let mut sent = 0usize;
    let mut got = Vec::new();
    for round in 0..200u32 {
        let len = 100 + (round as usize * 37) % 250;
        let f = frame(len, round as u8);
        assert!(
            tx.add_tx(&mut ram, 12, &f, 128, false),
            "room in round {round}"
        );
        sent += 1;
        let n = txq.dequeue_burst(&mut out);
        assert_eq!(n, 1, "round {round}");
        assert_eq!(out[0].data(), &f[..], "round {round}");
        tx.reap(&ram);
        assert!(rx.add_rx(&mut ram, 1 + round as usize % 2, 1024));
        assert_eq!(rxq.enqueue_burst(&out[..1]), 1, "round {round}");
        got.extend(rx.receive(&ram, 12, true));
    }
    assert_eq!(got.len(), sent);
    for (i, g) in got.iter().enumerate() {
        assert_eq!(g, &frame(100 + (i * 37) % 250, i as u8), "frame {i}");
    }
    assert_eq!(txq.broken(), None);
    assert_eq!(rxq.broken(), None);
    assert_eq!(
        txq.next_avail(),
        tx.base(),
        "backend and driver agree on slot and wrap counter"
    );
}

#[test]
fn jumbo_frames_span_mergeable_buffers_with_num_buffers_set() {
    let (mut ram, mut d, _) = setup(64, 2048, F);
    let mut q = d.backend_queue(&ram, 0, F);
    for _ in 0..16 {
        assert!(d.add_rx(&mut ram, 1, 2048));
    }
    let big = frame(9000, 5);
    let small = frame(64, 6);
    let pkts = [
        VecBuffer::from_frame(&big),
        VecBuffer::from_frame(&small),
        VecBuffer::from_frame(&big),
    ];
    assert_eq!(q.enqueue_burst(&pkts), 3);
    let got = d.receive_with_hdr(&ram, 12, true);
    assert_eq!(got.len(), 3);
    assert_eq!(got[0].1, big);
    assert_eq!(
        u16::from_le_bytes([got[0].0[10], got[0].0[11]]),
        5,
        "9012 B over 5 buffers"
    );
    assert_eq!(got[1].1, small);
    assert_eq!(got[2].1, big);
    assert_eq!(q.stats().packets, 3);
}

#[test]
fn enqueue_without_room_publishes_nothing_and_rolls_back_partial_frames() {
    let (mut ram, mut d, _) = setup(16, 2048, F);
    let mut q = d.backend_queue(&ram, 0, F);
    for _ in 0..2 {
        assert!(d.add_rx(&mut ram, 1, 2048));
    }
    let before = q.next_avail();
    assert_eq!(
        q.enqueue_burst(&[VecBuffer::from_frame(&frame(9000, 1))]),
        0
    );
    assert_eq!(q.next_avail(), before, "partial frame rolled back");
    assert!(d.reap(&ram).is_empty(), "nothing published");
    for _ in 0..3 {
        assert!(d.add_rx(&mut ram, 1, 2048));
    }
    assert_eq!(
        q.enqueue_burst(&[VecBuffer::from_frame(&frame(9000, 1))]),
        1
    );
    assert_eq!(d.receive(&ram, 12, true), vec![frame(9000, 1)]);
    assert_eq!(q.broken(), None);
}

#[test]
fn non_mergeable_frames_use_chained_rx_descriptors_or_are_dropped() {
    let f = feature::VERSION_1;
    let (mut ram, mut d, _) = setup(16, 4096, f);
    let mut q = d.backend_queue(&ram, 0, f);
    assert!(d.add_rx(&mut ram, 3, 1024), "one 3-descriptor chain");
    let ok = frame(2000, 1);
    assert_eq!(q.enqueue_burst(&[VecBuffer::from_frame(&ok)]), 1);
    assert_eq!(d.receive(&ram, 12, false), vec![ok]);
    assert!(d.add_rx(&mut ram, 1, 1024));
    assert_eq!(
        q.enqueue_burst(&[VecBuffer::from_frame(&frame(2000, 2))]),
        1
    );
    assert_eq!(q.stats().dropped_too_big, 1);
    assert!(
        d.reap(&ram).is_empty(),
        "the chain stays for the next packet"
    );
}

#[test]
fn chains_with_more_segments_than_the_fast_path_follows_are_dropped_and_returned() {
    let (mut ram, mut d, mut q) = setup(128, 2048, F);
    let f = frame(100 * (MAX_SEGMENTS + 2), 4);
    assert!(d.add_tx(&mut ram, 12, &f, 100, false));
    let ok = frame(60, 1);
    assert!(d.add_tx(&mut ram, 12, &ok, 2048, false));
    let mut out = bufs(4);
    assert_eq!(q.dequeue_burst(&mut out), 1);
    assert_eq!(out[0].data(), &ok[..]);
    assert_eq!(q.stats().dropped_fragmented, 1);
    assert_eq!(d.reap(&ram).len(), 2);
    assert_eq!(q.broken(), None);
}

fn eventfd() -> Arc<OwnedFd> {
    Arc::new(
        rustix::event::eventfd(
            0,
            rustix::event::EventfdFlags::NONBLOCK | rustix::event::EventfdFlags::CLOEXEC,
        )
        .unwrap(),
    )
}

fn kicks(fd: &OwnedFd) -> u64 {
    let mut b = [0u8; 8];
    match rustix::io::read(fd, &mut b) {
        Ok(8) => u64::from_ne_bytes(b),
        _ => 0,
    }
}

fn queue_with_call(
    ram: &GuestRam,
    d: &PackedDriver,
    features: u64,
    call: &Arc<OwnedFd>,
) -> PackedQueue {
    PackedQueue::new(QueueSetup {
        index: 0,
        size: d.size,
        mem: Arc::clone(ram.memory()),
        desc_gpa: d.ring,
        avail_gpa: d.driver_event,
        used_gpa: d.device_event,
        base: d.base(),
        features: features | feature::RING_PACKED,
        call: Some(Arc::clone(call)),
    })
    .unwrap()
}

#[test]
fn call_eventfd_follows_the_driver_event_flags() {
    let (mut ram, mut d, _) = setup(16, 2048, F);
    let call = eventfd();
    let mut q = queue_with_call(&ram, &d, F, &call);
    let p = [VecBuffer::from_frame(&frame(64, 0))];
    d.set_driver_event(&ram, RING_EVENT_FLAGS_DISABLE, 0);
    assert!(d.add_rx(&mut ram, 1, 2048));
    assert_eq!(q.enqueue_burst(&p), 1);
    assert_eq!(kicks(&call), 0, "DISABLE: no interrupt");
    d.set_driver_event(&ram, RING_EVENT_FLAGS_ENABLE, 0);
    assert!(d.add_rx(&mut ram, 1, 2048));
    assert_eq!(q.enqueue_burst(&p), 1);
    assert_eq!(kicks(&call), 1, "ENABLE: one interrupt per burst");
}

#[test]
fn event_idx_desc_kicks_only_when_the_offset_and_wrap_are_crossed() {
    let (mut ram, mut d, _) = setup(4, 2048, F);
    let call = eventfd();
    let mut q = queue_with_call(&ram, &d, F | feature::EVENT_IDX, &call);
    let p = [VecBuffer::from_frame(&frame(64, 0))];
    // Wake me when the device has used slot 1 of the next lap (wrap counter 0).
    d.set_driver_event(&ram, RING_EVENT_FLAGS_DESC, 1);
    let mut kicked = Vec::new();
    for _ in 0..8 {
        assert!(d.add_rx(&mut ram, 1, 2048));
        assert_eq!(q.enqueue_burst(&p), 1);
        d.reap(&ram);
        kicked.push(kicks(&call));
    }
    // Used positions after each burst: 1,2,3,0' ,1',2',3',0 — slot 1 of lap 2 is written by
    // the sixth burst (position 1' -> 2').
    assert_eq!(kicked, vec![0, 0, 0, 0, 0, 1, 0, 0]);
}

fn expect_broken(
    q: &mut PackedQueue,
    d: &mut PackedDriver,
    ram: &GuestRam,
    want: fn(&Broken) -> bool,
) {
    let mut out = bufs(4);
    assert_eq!(q.dequeue_burst(&mut out), 0);
    let b = q.broken();
    assert!(b.as_ref().is_some_and(want), "got {b:?}");
    assert!(d.reap(ram).is_empty(), "the bad chain is not completed");
    assert_eq!(q.dequeue_burst(&mut out), 0, "a broken queue stays stopped");
}

fn buf(ram: &mut GuestRam) -> u64 {
    let a = ram.alloc(64, 8);
    ram.write(a, &[0u8; 64]);
    a
}

/// A TX queue whose driver posted `chain` (hostile) behind one good frame; the good frame
/// goes through, the chain breaks the queue, a second queue on the same guest goes on.
fn hostile_tx(
    features: u64,
    chain: impl FnOnce(&mut GuestRam, &mut PackedDriver),
    want: fn(&Broken) -> bool,
) {
    let (mut ram, mut d, mut q) = setup(16, 2048, features);
    let mut other = PackedDriver::new(&mut ram, 16, 2048);
    let mut oq = other.backend_queue(&ram, 3, features);
    let good = frame(60, 9);
    assert!(d.add_tx(&mut ram, 12, &good, 2048, false));
    let mut out = bufs(4);
    assert_eq!(q.dequeue_burst(&mut out), 1);
    assert_eq!(d.reap(&ram).len(), 1);
    chain(&mut ram, &mut d);
    expect_broken(&mut q, &mut d, &ram, want);
    assert!(other.add_tx(&mut ram, 12, &good, 2048, false));
    assert_eq!(oq.dequeue_burst(&mut out), 1, "the other queue goes on");
    assert_eq!(oq.broken(), None);
}

#[test]
fn out_of_range_and_wrapping_addresses_break_the_queue() {
    hostile_tx(
        F,
        |ram, d| {
            assert!(d.post(ram, 0, &[(GPA_BASE + (64 << 20), 64, 0)]));
        },
        |b| matches!(b, Broken::BadAddress { .. }),
    );
    hostile_tx(
        F,
        |ram, d| {
            assert!(d.post(ram, 0, &[(u64::MAX - 8, 64, 0)]));
        },
        |b| matches!(b, Broken::BadAddress { .. }),
    );
}

#[test]
fn bad_buffer_ids_break_the_queue() {
    hostile_tx(
        F,
        |ram, d| {
            let a = buf(ram);
            assert!(d.post(ram, 16, &[(a, 64, 0)]));
        },
        |b| matches!(b, Broken::BufferIdOutOfRange { id: 16 }),
    );
    hostile_tx(
        F,
        |ram, d| {
            let a = buf(ram);
            assert!(d.post(ram, u16::MAX, &[(a, 32, 0), (a, 32, 0)]));
        },
        |b| matches!(b, Broken::BufferIdOutOfRange { id: u16::MAX }),
    );
}

#[test]
fn a_chained_descriptor_not_available_under_its_wrap_counter_breaks_the_queue() {
    hostile_tx(
        F,
        |ram, d| {
            let a = buf(ram);
            let (slot, wrap) = d.avail_pos();
            // Second descriptor written with the wrong wrap counter, then the head.
            d.write_slot(
                ram,
                slot + 1,
                PackedDesc {
                    addr: a,
                    len: 32,
                    id: 0,
                    flags: PackedDriver::avail_bits(!wrap),
                },
            );
            d.write_slot(
                ram,
                slot,
                PackedDesc {
                    addr: a,
                    len: 32,
                    id: 0,
                    flags: DESC_F_NEXT | PackedDriver::avail_bits(wrap),
                },
            );
        },
        |b| matches!(b, Broken::ChainDescNotAvailable { .. }),
    );
    // A descriptor marked both AVAIL and USED as the device writes them is not available.
    hostile_tx(
        F,
        |ram, d| {
            let a = buf(ram);
            let (slot, wrap) = d.avail_pos();
            let used_like = if wrap { DESC_F_AVAIL | DESC_F_USED } else { 0 };
            d.write_slot(
                ram,
                slot + 1,
                PackedDesc {
                    addr: a,
                    len: 32,
                    id: 0,
                    flags: used_like,
                },
            );
            d.write_slot(
                ram,
                slot,
                PackedDesc {
                    addr: a,
                    len: 32,
                    id: 0,
                    flags: DESC_F_NEXT | PackedDriver::avail_bits(wrap),
                },
            );
        },
        |b| matches!(b, Broken::ChainDescNotAvailable { .. }),
    );
}

#[test]
fn a_chain_around_the_whole_ring_breaks_the_queue() {
    // Every slot available with NEXT, under the wrap counter each is read with: the chain
    // never ends (the driver flips flags at the ring's end to keep it going).
    hostile_tx(
        F,
        |ram, d| {
            let a = buf(ram);
            let (slot, wrap) = d.avail_pos();
            for k in 1..d.size {
                let s = (slot + k) % d.size;
                let w = if slot + k >= d.size { !wrap } else { wrap };
                d.write_slot(
                    ram,
                    s,
                    PackedDesc {
                        addr: a,
                        len: 8,
                        id: 0,
                        flags: DESC_F_NEXT | PackedDriver::avail_bits(w),
                    },
                );
            }
            d.write_slot(
                ram,
                slot,
                PackedDesc {
                    addr: a,
                    len: 8,
                    id: 0,
                    flags: DESC_F_NEXT | PackedDriver::avail_bits(wrap),
                },
            );
        },
        |b| matches!(b, Broken::ChainTooLong { .. }),
    );
}

#[test]
fn bad_indirect_tables_break_the_queue() {
    // Not negotiated.
    hostile_tx(
        feature::VERSION_1,
        |ram, d| {
            let t = ram.alloc(16, 16);
            assert!(d.post(ram, 0, &[(t, 16, DESC_F_INDIRECT)]));
        },
        |b| matches!(b, Broken::IndirectNotNegotiated),
    );
    // Zero and non-multiple-of-16 lengths.
    hostile_tx(
        F,
        |ram, d| {
            let t = ram.alloc(16, 16);
            assert!(d.post(ram, 0, &[(t, 0, DESC_F_INDIRECT)]));
        },
        |b| matches!(b, Broken::IndirectTableLen { len: 0 }),
    );
    hostile_tx(
        F,
        |ram, d| {
            let t = ram.alloc(32, 16);
            assert!(d.post(ram, 0, &[(t, 24, DESC_F_INDIRECT)]));
        },
        |b| matches!(b, Broken::IndirectTableLen { len: 24 }),
    );
    // Table outside guest memory.
    hostile_tx(
        F,
        |ram, d| {
            assert!(d.post(ram, 0, &[(GPA_BASE + (32 << 20), 64, DESC_F_INDIRECT)]));
        },
        |b| matches!(b, Broken::BadAddress { .. }),
    );
    // A table entry pointing outside guest memory.
    hostile_tx(
        F,
        |ram, d| {
            let t = ram.alloc(32, 16);
            let a = buf(ram);
            ram.write(
                t,
                &PackedDesc {
                    addr: a,
                    len: 32,
                    id: 0,
                    flags: 0,
                }
                .to_bytes(),
            );
            ram.write(
                t + 16,
                &PackedDesc {
                    addr: 0x10,
                    len: 32,
                    id: 0,
                    flags: 0,
                }
                .to_bytes(),
            );
            assert!(d.post(ram, 0, &[(t, 32, DESC_F_INDIRECT)]));
        },
        |b| matches!(b, Broken::BadAddress { addr: 0x10, .. }),
    );
    // INDIRECT with NEXT.
    hostile_tx(
        F,
        |ram, d| {
            let t = ram.alloc(16, 16);
            let a = buf(ram);
            ram.write(
                t,
                &PackedDesc {
                    addr: a,
                    len: 32,
                    id: 0,
                    flags: 0,
                }
                .to_bytes(),
            );
            assert!(d.post(
                ram,
                0,
                &[(t, 16, DESC_F_INDIRECT | DESC_F_NEXT), (a, 16, 0)]
            ));
        },
        |b| matches!(b, Broken::IndirectWithNext),
    );
}

#[test]
fn descriptors_in_the_wrong_direction_break_their_queue() {
    hostile_tx(
        F,
        |ram, d| {
            let a = buf(ram);
            assert!(d.post(ram, 0, &[(a, 64, DESC_F_WRITE)]));
        },
        |b| matches!(b, Broken::WritableTxDescriptor),
    );
    // RX: a read-only descriptor, a first buffer shorter than the header, a zero-length chain.
    for (descs, want) in [
        (
            vec![(0u64, 64u32, 0u16)],
            (|b: &Broken| matches!(b, Broken::ReadOnlyRxDescriptor)) as fn(&Broken) -> bool,
        ),
        (vec![(0, 8, DESC_F_WRITE)], |b| {
            matches!(b, Broken::RxBufferTooSmall { len: 8, .. })
        }),
        (vec![(0, 0, DESC_F_WRITE)], |b| {
            matches!(b, Broken::RxBufferTooSmall { len: 0, .. })
        }),
    ] {
        let (mut ram, mut d, _) = setup(16, 2048, F);
        let mut q = d.backend_queue(&ram, 0, F);
        let a = buf(&mut ram);
        let descs: Vec<_> = descs.into_iter().map(|(_, l, f)| (a, l, f)).collect();
        assert!(d.post(&ram, 0, &descs));
        assert_eq!(q.enqueue_burst(&[VecBuffer::from_frame(&frame(60, 1))]), 0);
        let b = q.broken();
        assert!(b.as_ref().is_some_and(want), "got {b:?}");
        assert!(d.reap(&ram).is_empty());
        assert_eq!(a, a);
    }
}

#[test]
fn zero_length_tx_chains_are_dropped_and_returned() {
    let (mut ram, mut d, mut q) = setup(16, 2048, F);
    let a = buf(&mut ram);
    assert!(d.post(&ram, 0, &[(a, 0, 0)]));
    let mut out = bufs(2);
    assert_eq!(q.dequeue_burst(&mut out), 0);
    assert_eq!(q.stats().dropped_malformed, 1);
    assert_eq!(d.reap(&ram), vec![(0, 0)]);
    assert_eq!(q.broken(), None);
}

#[test]
fn queues_resume_at_the_base_with_its_wrap_counter() {
    let (mut ram, mut d, mut q) = setup(8, 2048, F);
    let mut out = bufs(4);
    for i in 0..11u8 {
        assert!(d.add_tx(&mut ram, 12, &frame(60, i), 2048, false));
        assert_eq!(q.dequeue_burst(&mut out), 1);
        d.reap(&ram);
    }
    let base = q.next_avail();
    assert_eq!(base, 3, "slot 3, wrap counter 0 after one lap");
    drop(q);
    // The session rebuilds the queue from GET_VRING_BASE's value.
    let mut q = Virtqueue::new(QueueSetup {
        index: 1,
        size: 8,
        mem: Arc::clone(ram.memory()),
        desc_gpa: d.ring,
        avail_gpa: d.driver_event,
        used_gpa: d.device_event,
        base,
        features: F | feature::RING_PACKED,
        call: None,
    })
    .unwrap();
    assert!(q.is_packed());
    let f = frame(70, 42);
    assert!(d.add_tx(&mut ram, 12, &f, 2048, false));
    assert_eq!(q.dequeue_burst(&mut out), 1);
    assert_eq!(out[0].data(), &f[..]);
    assert_eq!(
        d.reap(&ram).len(),
        1,
        "the driver sees it used with the right wrap counter"
    );
    // A base outside the ring is refused.
    let bad = PackedQueue::new(QueueSetup {
        index: 1,
        size: 8,
        mem: Arc::clone(ram.memory()),
        desc_gpa: d.ring,
        avail_gpa: d.driver_event,
        used_gpa: d.device_event,
        base: 8,
        features: F | feature::RING_PACKED,
        call: None,
    });
    assert!(bad.is_err());
}

#[test]
fn need_event_follows_wrap_counters() {
    let p = |idx, wrap| Pos { idx, wrap };
    // Event at slot 2 of this lap: 1 -> 3 crosses, 3 -> 5 does not.
    assert!(need_event(p(2, true), p(1, true), p(3, true), 8));
    assert!(!need_event(p(2, true), p(3, true), p(5, true), 8));
    // Across the ring's end: 6 -> 1' crosses 7 and 0'.
    assert!(need_event(p(7, true), p(6, true), p(1, false), 8));
    assert!(need_event(p(0, false), p(6, true), p(1, false), 8));
    assert!(!need_event(p(1, false), p(6, true), p(1, false), 8));
}
