//! The split virtqueue against the in-repo driver side: frames both ways, offloads, mergeable
//! buffers, notifications, and hostile rings.

use super::*;
use crate::frontend::{self, DriverQueue, GuestRam, RawDesc};
use crate::net_hdr::{self, NetHdr};
use crate::test_support::{bufs, bufs_of, frame, F};

fn setup(size: u16, buf: u32, features: u64) -> (GuestRam, DriverQueue, SplitQueue) {
    let mut ram = GuestRam::new(8 << 20).unwrap();
    let dq = DriverQueue::new(&mut ram, size, buf);
    let q = dq.backend_queue(&ram, 1, features);
    (ram, dq, q)
}

#[test]
fn dequeue_strips_header_from_single_chained_and_indirect_chains() {
    let (mut ram, mut dq, mut q) = setup(64, 2048, F);
    let a = frame(60, 1);
    let b = frame(1500, 2);
    let c = frame(3000, 3);
    assert!(dq.add_tx(&mut ram, 12, &a, 2048, false));
    assert!(
        dq.add_tx(&mut ram, 12, &b, 100, false),
        "16 descriptors, header split from data"
    );
    assert!(
        dq.add_tx(&mut ram, 12, &c, 100, true),
        "indirect table of 31 entries"
    );
    let mut out = bufs(8);
    assert_eq!(q.dequeue_burst(&mut out), 3);
    assert_eq!(out[0].data(), &a[..]);
    assert_eq!(out[1].data(), &b[..]);
    assert_eq!(out[2].data(), &c[..]);
    let used = dq.reap(&ram);
    assert_eq!(used.len(), 3, "every chain returned to the guest");
    assert_eq!(q.broken(), None);
    assert_eq!(q.stats().packets, 3);
    assert_eq!(
        dq.used_flags(&ram),
        USED_F_NO_NOTIFY,
        "polling backend asks for no kicks"
    );
}

/// The 12-byte header a guest writes: offload fields, then num_buffers.
fn hdr_bytes(h: NetHdr) -> Vec<u8> {
    let mut b = h.to_bytes().to_vec();
    b.extend_from_slice(&[0, 0]);
    b
}

fn tso4(len: u16) -> NetHdr {
    NetHdr {
        flags: net_hdr::FLAG_NEEDS_CSUM,
        gso_type: net_hdr::gso::TCPV4,
        hdr_len: 66,
        gso_size: len,
        csum_start: 34,
        csum_offset: 16,
    }
}

#[test]
fn offload_headers_a_guest_sends_are_checked_and_handed_over() {
    let features = F | net_hdr::OFFLOAD_FEATURES;
    let (mut ram, mut dq, mut q) = setup(64, 2048, features);
    let big = frame(60_000, 9);
    // A 60 KB TSO packet over 30 descriptors, a partial checksum, then three that lie.
    assert!(dq.add_tx_with_hdr(&mut ram, &hdr_bytes(tso4(1448)), &big, 2048, true));
    let partial = NetHdr {
        flags: net_hdr::FLAG_NEEDS_CSUM,
        csum_start: 34,
        csum_offset: 16,
        ..NetHdr::NONE
    };
    let small = frame(100, 1);
    assert!(dq.add_tx_with_hdr(&mut ram, &hdr_bytes(partial), &small, 2048, false));
    let outside = NetHdr {
        csum_start: 90,
        ..partial
    };
    assert!(dq.add_tx_with_hdr(&mut ram, &hdr_bytes(outside), &small, 2048, false));
    let unknown = NetHdr {
        gso_type: 9,
        ..tso4(1448)
    };
    assert!(dq.add_tx_with_hdr(&mut ram, &hdr_bytes(unknown), &small, 2048, false));
    let no_csum = NetHdr {
        flags: 0,
        ..tso4(1448)
    };
    assert!(dq.add_tx_with_hdr(&mut ram, &hdr_bytes(no_csum), &small, 2048, false));
    let mut out = bufs_of(8, 65_536);
    assert_eq!(q.dequeue_burst(&mut out), 2);
    assert_eq!(out[0].data(), &big[..]);
    assert_eq!(out[0].hdr(), tso4(1448));
    assert_eq!(out[1].data(), &small[..]);
    assert_eq!(out[1].hdr(), partial);
    assert_eq!(q.stats().dropped_bad_offload, 3);
    assert_eq!(
        dq.reap(&ram).len(),
        5,
        "dropped chains go back to the guest too"
    );
    assert_eq!(
        q.broken(),
        None,
        "a bad header drops the packet, not the queue"
    );

    // A guest that negotiated no offload: its header is not read at all.
    let (mut ram, mut dq, mut q) = setup(64, 2048, F);
    assert!(dq.add_tx_with_hdr(&mut ram, &hdr_bytes(outside), &small, 2048, false));
    let mut out = bufs(2);
    assert_eq!(q.dequeue_burst(&mut out), 1);
    assert_eq!(out[0].hdr(), NetHdr::NONE);
}

#[test]
fn offload_headers_go_to_guests_that_negotiated_them_and_no_others() {
    let tso = VecBuffer::from_frame(&frame(20_000, 3)).with_hdr(tso4(1448));
    let plain = VecBuffer::from_frame(&frame(80, 4));
    // Negotiated: the header arrives as given (num_buffers after it).
    let mut ram = GuestRam::new(8 << 20).unwrap();
    let mut dq = DriverQueue::new(&mut ram, 64, 2048);
    let mut q = dq.backend_queue(&ram, 0, F | net_hdr::OFFLOAD_FEATURES);
    for _ in 0..32 {
        assert!(dq.add_rx(&ram, 1, 2048));
    }
    assert_eq!(q.enqueue_burst(&[tso.clone(), plain.clone()]), 2);
    let used = dq.reap(&ram);
    let first = dq.rx_bytes(&ram, used[0].0, used[0].1);
    assert_eq!(
        NetHdr::from_bytes(first[..10].try_into().unwrap()),
        tso4(1448)
    );
    let nb = usize::from(u16::from_le_bytes([first[10], first[11]]));
    assert_eq!(
        nb,
        20_012usize.div_ceil(2048),
        "spread over mergeable buffers"
    );
    let last = dq.rx_bytes(&ram, used[nb].0, used[nb].1);
    assert_eq!(
        &last[..10],
        &[0u8; 10],
        "a plain packet gets an empty header"
    );
    // Not negotiated: dropped and counted, the plain packet still delivered.
    let mut ram = GuestRam::new(8 << 20).unwrap();
    let mut dq = DriverQueue::new(&mut ram, 64, 2048);
    let mut q = dq.backend_queue(&ram, 0, F | net_hdr::F_GUEST_CSUM);
    for _ in 0..32 {
        assert!(dq.add_rx(&ram, 1, 2048));
    }
    assert_eq!(q.enqueue_burst(&[tso, plain]), 2);
    assert_eq!(q.stats().dropped_bad_offload, 1);
    assert_eq!(q.stats().packets, 1);
}

/// An mbuf-chain-like buffer: fixed 2 KiB segments, a piece never split across two.
struct Segmented {
    segs: Vec<Vec<u8>>,
    max_segs: usize,
}

impl PacketBuffer for Segmented {
    fn reset(&mut self) {
        self.segs.clear();
    }
    fn append(&mut self, len: usize) -> Option<&mut [u8]> {
        let fits = self.segs.last().is_some_and(|s| s.len() + len <= 2048);
        if !fits {
            if self.segs.len() == self.max_segs || len > 2048 {
                return None;
            }
            self.segs.push(Vec::with_capacity(2048));
        }
        let seg = self.segs.last_mut()?;
        let at = seg.len();
        seg.resize(at + len, 0);
        Some(&mut seg[at..])
    }
    fn len(&self) -> usize {
        self.segs.iter().map(Vec::len).sum()
    }
    fn piece(&self, i: usize) -> Option<&[u8]> {
        self.segs.get(i).map(Vec::as_slice)
    }
}

#[test]
fn segmented_buffers_carry_jumbo_frames_both_ways() {
    let (mut ram, mut dq, mut q) = setup(64, 4096, F);
    let jumbo = frame(9000, 4);
    assert!(
        dq.add_tx(&mut ram, 12, &jumbo, 1000, false),
        "odd-sized guest pieces"
    );
    assert!(dq.add_tx(&mut ram, 12, &jumbo, 4096, false));
    let mut out: Vec<Segmented> = (0..2)
        .map(|_| Segmented {
            segs: Vec::new(),
            max_segs: 8,
        })
        .collect();
    assert_eq!(q.dequeue_burst(&mut out), 2);
    for o in &out {
        assert!(o.segs.len() > 4, "spread over segments");
        assert_eq!(o.segs.concat(), jumbo);
    }
    let (ram2, mut rxq, _) = setup(64, 1536, F);
    let mut rx = rxq.backend_queue(&ram2, 0, F);
    for _ in 0..16 {
        assert!(rxq.add_rx(&ram2, 1, 1536));
    }
    assert_eq!(rx.enqueue_burst(&out), 2);
    assert_eq!(rxq.receive(&ram2, 12, true), vec![jumbo.clone(), jumbo]);
    // Too few segments: dropped and counted, not truncated.
    let mut tiny = [Segmented {
        segs: Vec::new(),
        max_segs: 2,
    }];
    assert!(dq.add_tx(&mut ram, 12, &frame(9000, 1), 4096, false));
    assert_eq!(q.dequeue_burst(&mut tiny), 0);
    assert_eq!(q.stats().dropped_too_big, 1);
}

#[test]
fn dequeue_drops_oversize_and_headerless_packets_but_returns_their_chains() {
    let (mut ram, mut dq, mut q) = setup(16, 2048, F);
    assert!(dq.add_tx(&mut ram, 12, &frame(1000, 0), 2048, false));
    assert!(dq.add_tx(&mut ram, 0, &[1, 2, 3], 2048, false));
    assert!(dq.add_tx(&mut ram, 12, &frame(64, 9), 2048, false));
    let mut small = [VecBuffer::with_capacity(100), VecBuffer::with_capacity(100)];
    assert_eq!(q.dequeue_burst(&mut small), 1);
    assert_eq!(small[0].data(), &frame(64, 9)[..]);
    let s = q.stats();
    assert_eq!((s.dropped_too_big, s.dropped_malformed), (1, 1));
    assert_eq!(dq.reap(&ram).len(), 3);
}

#[test]
fn enqueue_fills_rx_buffers_with_header_and_frame() {
    let (mut ram, mut rxq, _) = setup(64, 2048, F);
    let mut q = rxq.backend_queue(&ram, 0, feature::VERSION_1);
    for _ in 0..4 {
        assert!(rxq.add_rx(&ram, 1, 2048));
    }
    let pkts: Vec<VecBuffer> = (0..3)
        .map(|i| VecBuffer::from_frame(&frame(60 + i * 500, i as u8)))
        .collect();
    assert_eq!(q.enqueue_burst(&pkts), 3);
    let got = rxq.receive(&ram, 12, false);
    assert_eq!(got.len(), 3);
    for (g, p) in got.iter().zip(&pkts) {
        assert_eq!(&g[..], p.data());
    }
    let _ = &mut ram;
}

#[test]
fn large_frames_span_mergeable_buffers_with_num_buffers_set() {
    let (ram, mut rxq, _) = setup(64, 1536, F);
    let mut q = rxq.backend_queue(&ram, 0, F);
    for _ in 0..16 {
        assert!(rxq.add_rx(&ram, 1, 1536));
    }
    let big = VecBuffer::from_frame(&frame(9000, 5));
    let small = VecBuffer::from_frame(&frame(64, 6));
    assert_eq!(q.enqueue_burst(&[big.clone(), small.clone()]), 2);
    let got = rxq.receive(&ram, 12, true);
    assert_eq!(got.len(), 2);
    assert_eq!(got[0], big.data());
    assert_eq!(got[1], small.data());
}

#[test]
fn non_mergeable_frames_use_chained_rx_descriptors_or_are_dropped() {
    let (ram, mut rxq, _) = setup(64, 1024, F);
    let mut q = rxq.backend_queue(&ram, 0, feature::VERSION_1);
    assert!(rxq.add_rx(&ram, 3, 1024), "one 3072-byte chain");
    let fits = VecBuffer::from_frame(&frame(3000, 1));
    let too_big = VecBuffer::from_frame(&frame(5000, 2));
    assert_eq!(
        q.enqueue_burst(&[too_big, fits.clone()]),
        2,
        "the big one is dropped, the next delivered"
    );
    assert_eq!(q.stats().dropped_too_big, 1);
    let got = rxq.receive(&ram, 12, false);
    assert_eq!(got, vec![fits.data().to_vec()]);
}

#[test]
fn enqueue_without_room_publishes_nothing_and_rolls_back_partial_mergeable_frames() {
    let (ram, mut rxq, _) = setup(16, 1024, F);
    let mut q = rxq.backend_queue(&ram, 0, F);
    let p = VecBuffer::from_frame(&frame(64, 0));
    assert_eq!(
        q.enqueue_burst(std::slice::from_ref(&p)),
        0,
        "no RX buffers posted"
    );
    assert!(rxq.add_rx(&ram, 1, 1024));
    assert!(rxq.add_rx(&ram, 1, 1024));
    let big = VecBuffer::from_frame(&frame(4000, 0));
    assert_eq!(q.enqueue_burst(&[big]), 0, "needs 4 buffers, 2 posted");
    assert_eq!(rxq.used_idx(&ram), 0, "nothing published");
    assert_eq!(q.next_avail(), 0, "rolled back");
    assert_eq!(q.enqueue_burst(&[p.clone(), p.clone()]), 2);
    assert_eq!(rxq.receive(&ram, 12, true).len(), 2);
}

#[test]
fn forward_burst_copies_guest_to_guest_once() {
    let (mut ram_a, mut txa, _) = setup(64, 2048, F);
    let mut src = txa.backend_queue(&ram_a, 1, F);
    let (ram_b, mut rxb, _) = setup(64, 1024, F);
    let mut dst = rxb.backend_queue(&ram_b, 0, F);
    for _ in 0..20 {
        assert!(rxb.add_rx(&ram_b, 1, 1024));
    }
    let frames = [frame(64, 1), frame(1500, 2), frame(9000, 3)];
    assert!(txa.add_tx(&mut ram_a, 12, &frames[0], 2048, false));
    assert!(txa.add_tx(&mut ram_a, 12, &frames[1], 300, false));
    assert!(txa.add_tx(&mut ram_a, 12, &frames[2], 1000, true));
    assert_eq!(forward_burst(&mut src, &mut dst, 32), 3);
    let got = rxb.receive(&ram_b, 12, true);
    assert_eq!(got, frames.to_vec());
    assert_eq!(txa.reap(&ram_a).len(), 3);
    assert_eq!(src.stats().packets, 3);
    assert_eq!(dst.stats().packets, 3);
}

#[test]
fn forward_burst_stops_without_losing_source_packets_when_destination_is_full() {
    let (mut ram_a, mut txa, _) = setup(16, 2048, F);
    let mut src = txa.backend_queue(&ram_a, 1, F);
    let (ram_b, mut rxb, _) = setup(16, 2048, F);
    let mut dst = rxb.backend_queue(&ram_b, 0, F);
    assert!(rxb.add_rx(&ram_b, 1, 2048));
    assert!(txa.add_tx(&mut ram_a, 12, &frame(100, 1), 2048, false));
    assert!(txa.add_tx(&mut ram_a, 12, &frame(100, 2), 2048, false));
    assert_eq!(forward_burst(&mut src, &mut dst, 32), 1);
    assert_eq!(
        src.next_avail(),
        1,
        "second packet stays in the source ring"
    );
    assert!(rxb.add_rx(&ram_b, 1, 2048));
    assert_eq!(forward_burst(&mut src, &mut dst, 32), 1);
    assert_eq!(
        rxb.receive(&ram_b, 12, true),
        vec![frame(100, 1), frame(100, 2)]
    );
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
    dq: &DriverQueue,
    features: u64,
    call: &Arc<OwnedFd>,
) -> SplitQueue {
    SplitQueue::new(QueueSetup {
        index: 0,
        size: dq.size,
        mem: Arc::clone(ram.memory()),
        desc_gpa: dq.desc,
        avail_gpa: dq.avail,
        used_gpa: dq.used,
        base: 0,
        features,
        call: Some(Arc::clone(call)),
    })
    .unwrap()
}

#[test]
fn call_eventfd_is_written_only_when_the_guest_asks() {
    let (ram, mut rxq, _) = setup(16, 2048, F);
    let call = eventfd();
    let mut q = queue_with_call(&ram, &rxq, feature::VERSION_1, &call);
    let p = [VecBuffer::from_frame(&frame(64, 0))];
    rxq.set_avail_flags(&ram, AVAIL_F_NO_INTERRUPT);
    assert!(rxq.add_rx(&ram, 1, 2048));
    assert_eq!(q.enqueue_burst(&p), 1);
    assert_eq!(kicks(&call), 0, "polling guest: no interrupt");
    rxq.set_avail_flags(&ram, 0);
    assert!(rxq.add_rx(&ram, 1, 2048));
    assert_eq!(q.enqueue_burst(&p), 1);
    assert_eq!(
        kicks(&call),
        1,
        "interrupt-driven guest gets one kick per burst"
    );
}

#[test]
fn event_idx_kicks_only_when_used_event_is_crossed() {
    let (ram, mut rxq, _) = setup(16, 2048, F);
    let call = eventfd();
    let mut q = queue_with_call(&ram, &rxq, F | feature::EVENT_IDX, &call);
    let p = [VecBuffer::from_frame(&frame(64, 0))];
    for _ in 0..4 {
        assert!(rxq.add_rx(&ram, 1, 2048));
    }
    rxq.set_used_event(&ram, 2); // wake me when used idx passes 2
    assert_eq!(q.enqueue_burst(&p), 1); // used 0 -> 1
    assert_eq!(q.enqueue_burst(&p), 1); // 1 -> 2
    assert_eq!(kicks(&call), 0);
    assert_eq!(q.enqueue_burst(&p), 1); // 2 -> 3 crosses 2
    assert_eq!(kicks(&call), 1);
    // avail_event is kept behind the ring so the guest never needs to kick us.
    let avail_event = {
        let b = ram.read(rxq.used + layout::used::avail_event(16) as u64, 2);
        u16::from_le_bytes([b[0], b[1]])
    };
    assert_eq!(avail_event, q.next_avail().wrapping_sub(1));
}

fn assert_broken(mut q: SplitQueue, ram: &GuestRam, dq: &DriverQueue, want: fn(&Broken) -> bool) {
    let mut out = bufs(4);
    assert_eq!(q.dequeue_burst(&mut out), 0);
    let b = q.broken();
    assert!(b.as_ref().is_some_and(want), "got {b:?}");
    assert_eq!(dq.used_idx(ram), 0, "the bad chain is not completed");
    assert_eq!(q.dequeue_burst(&mut out), 0, "a broken queue stays stopped");
}

fn buf(ram: &mut GuestRam) -> u64 {
    let a = ram.alloc(64, 8);
    ram.write(a, &[0u8; 64]);
    a
}

#[test]
fn looping_chain_marks_the_queue_broken() {
    let (mut ram, mut dq, _) = setup(8, 2048, F);
    let a = buf(&mut ram);
    // 0 -> 1 -> 0 -> ...
    dq.write_desc(
        &ram,
        0,
        RawDesc {
            addr: a,
            len: 64,
            flags: DESC_F_NEXT,
            next: 1,
        },
    );
    dq.write_desc(
        &ram,
        1,
        RawDesc {
            addr: a,
            len: 64,
            flags: DESC_F_NEXT,
            next: 0,
        },
    );
    dq.publish(&ram, 0);
    let q = dq.backend_queue(&ram, 1, F);
    assert_broken(q, &ram, &dq, |b| {
        matches!(b, Broken::ChainTooLong { size: 8 })
    });
}

#[test]
fn chain_longer_than_the_queue_marks_the_queue_broken() {
    let (mut ram, mut dq, _) = setup(8, 2048, F);
    let a = buf(&mut ram);
    // 0 -> 1 -> ... -> 7 -> 7: every index is legal, the walk still never ends.
    for i in 0..8u16 {
        dq.write_desc(
            &ram,
            i,
            RawDesc {
                addr: a,
                len: 8,
                flags: DESC_F_NEXT,
                next: (i + 1).min(7),
            },
        );
    }
    dq.publish(&ram, 0);
    let q = dq.backend_queue(&ram, 1, F);
    assert_broken(q, &ram, &dq, |b| {
        matches!(b, Broken::ChainTooLong { size: 8 })
    });
}

#[test]
fn hostile_descriptors_each_mark_the_queue_broken_with_a_reason() {
    type Case = (
        &'static str,
        fn(u64, u64) -> Vec<RawDesc>,
        u64,
        fn(&Broken) -> bool,
    );
    let cases: Vec<Case> = vec![
        (
            "next out of range",
            |a, _| {
                vec![RawDesc {
                    addr: a,
                    len: 64,
                    flags: DESC_F_NEXT,
                    next: 8,
                }]
            },
            F,
            |b| matches!(b, Broken::NextOutOfRange { next: 8, .. }),
        ),
        (
            "address outside memory",
            |_, _| {
                vec![RawDesc {
                    addr: 0x10,
                    len: 64,
                    flags: 0,
                    next: 0,
                }]
            },
            F,
            |b| matches!(b, Broken::BadAddress { .. }),
        ),
        (
            "length past the end of memory",
            |a, _| {
                vec![RawDesc {
                    addr: a,
                    len: u32::MAX,
                    flags: 0,
                    next: 0,
                }]
            },
            F,
            |b| matches!(b, Broken::BadAddress { .. }),
        ),
        (
            "u64 overflow",
            |_, _| {
                vec![RawDesc {
                    addr: u64::MAX - 8,
                    len: 64,
                    flags: 0,
                    next: 0,
                }]
            },
            F,
            |b| matches!(b, Broken::BadAddress { .. }),
        ),
        (
            "writable TX descriptor",
            |a, _| {
                vec![RawDesc {
                    addr: a,
                    len: 64,
                    flags: DESC_F_WRITE,
                    next: 0,
                }]
            },
            F,
            |b| matches!(b, Broken::WritableTxDescriptor),
        ),
        (
            "indirect not negotiated",
            |_, t| {
                vec![RawDesc {
                    addr: t,
                    len: 32,
                    flags: DESC_F_INDIRECT,
                    next: 0,
                }]
            },
            feature::VERSION_1,
            |b| matches!(b, Broken::IndirectNotNegotiated),
        ),
        (
            "indirect table length",
            |_, t| {
                vec![RawDesc {
                    addr: t,
                    len: 20,
                    flags: DESC_F_INDIRECT,
                    next: 0,
                }]
            },
            F,
            |b| matches!(b, Broken::IndirectTableLen { len: 20 }),
        ),
        (
            "empty indirect table",
            |_, t| {
                vec![RawDesc {
                    addr: t,
                    len: 0,
                    flags: DESC_F_INDIRECT,
                    next: 0,
                }]
            },
            F,
            |b| matches!(b, Broken::IndirectTableLen { len: 0 }),
        ),
        (
            "indirect with next",
            |_, t| {
                vec![RawDesc {
                    addr: t,
                    len: 32,
                    flags: DESC_F_INDIRECT | DESC_F_NEXT,
                    next: 1,
                }]
            },
            F,
            |b| matches!(b, Broken::IndirectWithNext),
        ),
        (
            "indirect table outside memory",
            |_, _| {
                vec![RawDesc {
                    addr: 0x20,
                    len: 32,
                    flags: DESC_F_INDIRECT,
                    next: 0,
                }]
            },
            F,
            |b| matches!(b, Broken::BadAddress { .. }),
        ),
    ];
    for (name, descs, features, want) in cases {
        let (mut ram, mut dq, _) = setup(8, 2048, features);
        let a = buf(&mut ram);
        let t = ram.alloc(64, 16);
        // A valid two-entry indirect table at t, used where the case points at it.
        ram.write(
            t,
            &RawDesc {
                addr: a,
                len: 32,
                flags: DESC_F_NEXT,
                next: 1,
            }
            .to_bytes(),
        );
        ram.write(
            t + 16,
            &RawDesc {
                addr: a,
                len: 32,
                flags: 0,
                next: 0,
            }
            .to_bytes(),
        );
        for (i, d) in descs(a, t).iter().enumerate() {
            dq.write_desc(&ram, i as u16, *d);
        }
        dq.publish(&ram, 0);
        let q = dq.backend_queue(&ram, 1, features);
        eprintln!("case: {name}");
        assert_broken(q, &ram, &dq, want);
    }
}

#[test]
fn nested_and_looping_indirect_tables_mark_the_queue_broken() {
    for (name, entries, want) in [
        (
            "nested",
            [
                RawDesc {
                    addr: 0,
                    len: 32,
                    flags: DESC_F_INDIRECT,
                    next: 0,
                },
                RawDesc::default(),
            ],
            "nested",
        ),
        (
            "looping",
            [
                RawDesc {
                    addr: 0,
                    len: 8,
                    flags: DESC_F_NEXT,
                    next: 1,
                },
                RawDesc {
                    addr: 0,
                    len: 8,
                    flags: DESC_F_NEXT,
                    next: 0,
                },
            ],
            "loop",
        ),
        (
            "next past table",
            [
                RawDesc {
                    addr: 0,
                    len: 8,
                    flags: DESC_F_NEXT,
                    next: 2,
                },
                RawDesc::default(),
            ],
            "next",
        ),
    ] {
        let (mut ram, mut dq, _) = setup(8, 2048, F);
        let a = buf(&mut ram);
        let t = ram.alloc(32, 16);
        for (i, e) in entries.iter().enumerate() {
            let addr = if e.flags & DESC_F_INDIRECT != 0 { t } else { a };
            ram.write(t + 16 * i as u64, &RawDesc { addr, ..*e }.to_bytes());
        }
        dq.write_desc(
            &ram,
            0,
            RawDesc {
                addr: t,
                len: 32,
                flags: DESC_F_INDIRECT,
                next: 0,
            },
        );
        dq.publish(&ram, 0);
        let q = dq.backend_queue(&ram, 1, F);
        eprintln!("case: {name}");
        assert_broken(
            q,
            &ram,
            &dq,
            match want {
                "nested" => |b| matches!(b, Broken::NestedIndirect),
                "loop" => |b| matches!(b, Broken::ChainTooLong { size: 2 }),
                _ => |b| matches!(b, Broken::NextOutOfRange { next: 2, size: 2 }),
            },
        );
    }
}

#[test]
fn head_out_of_range_and_avail_index_jump_mark_the_queue_broken() {
    let (ram, mut dq, _) = setup(8, 2048, F);
    dq.publish(&ram, 9);
    let q = dq.backend_queue(&ram, 1, F);
    assert_broken(q, &ram, &dq, |b| {
        matches!(b, Broken::HeadOutOfRange { head: 9 })
    });

    let (ram, mut dq, _) = setup(8, 2048, F);
    dq.set_avail_idx(&ram, 9);
    let q = dq.backend_queue(&ram, 1, F);
    assert_broken(q, &ram, &dq, |b| {
        matches!(b, Broken::AvailIdxJump { last: 0, avail: 9 })
    });
}

#[test]
fn rx_descriptors_not_marked_writable_break_the_queue_not_the_other_devices() {
    let (mut ram, mut rxq, _) = setup(8, 2048, F);
    let a = buf(&mut ram);
    rxq.write_desc(
        &ram,
        0,
        RawDesc {
            addr: a,
            len: 64,
            flags: 0,
            next: 0,
        },
    );
    rxq.publish(&ram, 0);
    let mut bad = rxq.backend_queue(&ram, 0, F);
    let p = [VecBuffer::from_frame(&frame(60, 0))];
    assert_eq!(bad.enqueue_burst(&p), 0);
    assert_eq!(bad.broken(), Some(Broken::ReadOnlyRxDescriptor));
    assert_eq!(
        ram.read(a, 64),
        vec![0u8; 64],
        "nothing written into the read-only buffer"
    );
    // Another device keeps working.
    let (ram2, mut rx2, _) = setup(8, 2048, F);
    let mut good = rx2.backend_queue(&ram2, 0, F);
    assert!(rx2.add_rx(&ram2, 1, 2048));
    assert_eq!(good.enqueue_burst(&p), 1);
    assert_eq!(rx2.receive(&ram2, 12, true), vec![frame(60, 0)]);
}

#[test]
fn rx_buffer_smaller_than_the_header_breaks_the_queue() {
    let (mut ram, mut rxq, _) = setup(8, 2048, F);
    let a = buf(&mut ram);
    rxq.write_desc(
        &ram,
        0,
        RawDesc {
            addr: a,
            len: 4,
            flags: DESC_F_WRITE,
            next: 0,
        },
    );
    rxq.publish(&ram, 0);
    let mut q = rxq.backend_queue(&ram, 0, F);
    assert_eq!(q.enqueue_burst(&[VecBuffer::from_frame(&frame(60, 0))]), 0);
    assert!(matches!(
        q.broken(),
        Some(Broken::RxBufferTooSmall { len: 4, hdr: 12 })
    ));
}

/// The hints of a burst run ahead of the checks: a bad chain behind good ones must still
/// stop the queue at that chain, after the good ones are delivered and completed.
#[test]
fn a_bad_chain_behind_prefetched_good_ones_stops_the_queue_there() {
    let ram_end = frontend::GPA_BASE + (8 << 20);
    type BadTail = (&'static str, Option<RawDesc>, fn(&Broken) -> bool);
    let bad_tails: [BadTail; 4] = [
        ("head outside the table", None, |b| {
            matches!(b, Broken::HeadOutOfRange { head: 99 })
        }),
        (
            "buffer past the end of guest memory",
            Some(RawDesc {
                addr: ram_end + 4096,
                len: 64,
                flags: 0,
                next: 0,
            }),
            |b| matches!(b, Broken::BadAddress { .. }),
        ),
        (
            "buffer straddling the end of guest memory",
            Some(RawDesc {
                addr: ram_end - 32,
                len: 64,
                flags: 0,
                next: 0,
            }),
            |b| matches!(b, Broken::BadAddress { .. }),
        ),
        (
            "device-writable TX buffer",
            Some(RawDesc {
                addr: frontend::GPA_BASE,
                len: 64,
                flags: DESC_F_WRITE,
                next: 0,
            }),
            |b| matches!(b, Broken::WritableTxDescriptor),
        ),
    ];
    for (name, bad, want) in bad_tails {
        let (mut ram, mut dq, mut q) = setup(16, 2048, F);
        let good: Vec<Vec<u8>> = (0..3).map(|i| frame(60 + i, i as u8)).collect();
        for f in &good {
            assert!(dq.add_tx(&mut ram, 12, f, 2048, false));
        }
        match bad {
            Some(d) => {
                dq.write_desc(&ram, 10, d);
                dq.publish(&ram, 10);
            }
            None => dq.publish(&ram, 99),
        }
        assert!(dq.add_tx(&mut ram, 12, &frame(70, 9), 2048, false));
        let mut out = bufs(8);
        assert_eq!(q.dequeue_burst(&mut out), 3, "{name}");
        for (o, f) in out.iter().zip(&good) {
            assert_eq!(o.data(), &f[..], "{name}");
        }
        assert!(
            q.broken().as_ref().is_some_and(want),
            "{name}: {:?}",
            q.broken()
        );
        assert_eq!(
            dq.reap(&ram).len(),
            3,
            "{name}: the good chains are completed"
        );
        assert_eq!(q.next_avail(), 3, "{name}: stopped at the bad chain");
        assert_eq!(q.dequeue_burst(&mut out), 0, "{name}: stays stopped");
    }
}

#[test]
fn a_bad_rx_chain_behind_prefetched_good_ones_writes_nothing_past_them() {
    let ram_end = frontend::GPA_BASE + (8 << 20);
    let (ram, mut rxq, _) = setup(16, 2048, F);
    let mut q = rxq.backend_queue(&ram, 0, F);
    // The last 64 bytes of guest memory, marked; the bad chain's buffer starts inside them
    // and runs past the end, so a write-intent hint there must not turn into a write.
    let canary = vec![0xa5u8; 64];
    ram.write(ram_end - 64, &canary);
    assert!(rxq.add_rx(&ram, 1, 2048));
    assert!(rxq.add_rx(&ram, 1, 2048));
    rxq.write_desc(
        &ram,
        10,
        RawDesc {
            addr: ram_end - 32,
            len: 2048,
            flags: DESC_F_WRITE,
            next: 0,
        },
    );
    rxq.publish(&ram, 10);
    assert!(rxq.add_rx(&ram, 1, 2048));
    let pkts: Vec<VecBuffer> = (0..4)
        .map(|i| VecBuffer::from_frame(&frame(64, i)))
        .collect();
    assert_eq!(q.enqueue_burst(&pkts), 2);
    assert!(
        matches!(q.broken(), Some(Broken::BadAddress { .. })),
        "{:?}",
        q.broken()
    );
    assert_eq!(
        rxq.receive(&ram, 12, true),
        vec![frame(64, 0), frame(64, 1)]
    );
    assert_eq!(ram.read(ram_end - 64, 64), canary, "nothing written there");
}

#[test]
fn bursts_longer_than_one_round_of_hints_carry_every_frame_in_order() {
    let n = 3 * usize::from(PREFETCH_AHEAD) + 5;
    let frames: Vec<Vec<u8>> = (0..n).map(|i| frame(60 + i % 40, i as u8)).collect();
    let (mut ram, mut dq, mut q) = setup(128, 2048, F);
    for f in &frames {
        assert!(dq.add_tx(&mut ram, 12, f, 2048, false));
    }
    let mut out = bufs(n);
    assert_eq!(q.dequeue_burst(&mut out), n);
    for (o, f) in out.iter().zip(&frames) {
        assert_eq!(o.data(), &f[..]);
    }
    assert_eq!(dq.reap(&ram).len(), n);

    let (ram2, mut rxq, _) = setup(128, 2048, F);
    let mut rx = rxq.backend_queue(&ram2, 0, F);
    for _ in 0..n {
        assert!(rxq.add_rx(&ram2, 1, 2048));
    }
    assert_eq!(rx.enqueue_burst(&out), n);
    assert_eq!(rxq.receive(&ram2, 12, true), frames);

    // And guest to guest, in one call.
    for f in &frames {
        assert!(dq.add_tx(&mut ram, 12, f, 2048, false));
    }
    for _ in 0..n {
        assert!(rxq.add_rx(&ram2, 1, 2048));
    }
    assert_eq!(forward_burst(&mut q, &mut rx, n), n);
    assert_eq!(rxq.receive(&ram2, 12, true), frames);
}

#[test]
fn chains_with_more_segments_than_the_fast_path_follows_are_dropped_not_followed() {
    let (mut ram, mut dq, mut q) = setup(128, 2048, F);
    assert!(
        dq.add_tx(&mut ram, 12, &frame(100, 0), 1, false),
        "112 one-byte descriptors"
    );
    assert!(dq.add_tx(&mut ram, 12, &frame(10, 1), 2048, false));
    let mut out = bufs(4);
    assert_eq!(q.dequeue_burst(&mut out), 1);
    assert_eq!(out[0].data(), &frame(10, 1)[..]);
    assert_eq!(q.stats().dropped_fragmented, 1);
    assert_eq!(q.broken(), None);
}
