//! Mbuf ownership and editing: headroom prepend / adj / trim / append, refusals at the limits,
//! segment chains walked in order, bursts that free in bulk; the pool's in-use count is checked
//! after each step so a leak or double free shows up.

mod common;

use pmd_shim::{Mbuf, MbufBurst, Mempool, BURST_MAX};

fn pool(eal: &pmd_shim::Eal, name: &str) -> Mempool {
    Mempool::new(eal, name, 1023, 0, 2176).expect("mempool")
}

#[test]
fn headroom_and_tailroom_edits() {
    let pool = pool(&common::eal(), "edits");
    let mut m = pool.alloc().expect("alloc");
    assert_eq!(pool.in_use(), 1);
    assert_eq!(m.data_len(), 0);
    let headroom = m.headroom();
    assert_eq!(headroom, 128, "RTE_PKTMBUF_HEADROOM");
    m.append(100).expect("append").copy_from_slice(&[7u8; 100]);
    assert_eq!(m.data(), &[7u8; 100][..]);
    m.prepend(14).expect("prepend").copy_from_slice(&[1u8; 14]);
    assert_eq!(m.pkt_len(), 114);
    assert_eq!(&m.data()[..14], &[1u8; 14]);
    assert_eq!(m.headroom(), headroom - 14);
    m.adj(14).expect("adj");
    assert_eq!(m.data(), &[7u8; 100][..]);
    m.trim(40).expect("trim");
    assert_eq!(m.pkt_len(), 60);
    m.data_mut()[0] = 9;
    assert_eq!(m.data()[0], 9);

    // Refusals leave the packet as it was.
    assert!(m.prepend(m.headroom() + 1).is_err());
    assert!(m.adj(61).is_err());
    assert!(m.trim(61).is_err());
    assert!(m.append(m.tailroom() + 1).is_err());
    assert_eq!(m.pkt_len(), 60);
    assert_eq!(m.rss_hash(), None, "no NIC computed a hash");
    m.reset();
    assert_eq!(
        (m.pkt_len(), m.headroom()),
        (0, headroom),
        "reset gives an empty packet"
    );
    drop(m);
    assert_eq!(pool.in_use(), 0, "dropped exactly once");
}

#[test]
fn chains_are_walked_in_order() {
    let pool = pool(&common::eal(), "chains");
    let payload: Vec<u8> = (0..9000u32).map(|i| (i * 13 % 251) as u8).collect();
    let m: Mbuf = pool.alloc_with(&payload).expect("chain");
    assert!(m.nb_segs() > 1, "9000 bytes cannot fit one 2 KiB segment");
    assert!(!m.is_contiguous());
    assert!(
        m.contiguous_data().is_none(),
        "chains are refused where contiguity is required"
    );
    assert_eq!(m.pkt_len() as usize, payload.len());
    assert_eq!(m.segments().count(), usize::from(m.nb_segs()));
    assert_eq!(m.to_vec(), payload);
    assert_eq!(pool.in_use(), u32::from(m.nb_segs()));
    let mut m = m;
    m.reset();
    assert_eq!(
        (pool.in_use(), m.nb_segs(), m.pkt_len()),
        (1, 1, 0),
        "reset freed the tail segments"
    );
    drop(m);
    assert_eq!(pool.in_use(), 0, "the whole chain was freed");
}

#[test]
fn bursts_hold_free_and_refuse_overflow() {
    let eal = common::eal();
    let pool = pool(&eal, "bursts");
    let mut burst = MbufBurst::new();
    for i in 0..BURST_MAX {
        let m = pool.alloc_with(&[i as u8; 64]).expect("alloc");
        assert!(burst.push(m).is_ok());
    }
    assert!(burst.is_full());
    let extra = pool.alloc().expect("alloc");
    let extra = burst
        .push(extra)
        .expect_err("a full burst gives the mbuf back");
    drop(extra);
    assert_eq!(pool.in_use(), BURST_MAX as u32);
    assert_eq!(burst.get(5).map(|m| m.data()[0]), Some(5));
    let last = burst.pop().expect("pop");
    assert_eq!(last.data()[0], (BURST_MAX - 1) as u8);
    drop(last);
    let firsts: Vec<u8> = burst.drain().take(3).map(|m| m.data()[0]).collect();
    assert_eq!(firsts, vec![0, 1, 2]);
    assert!(
        burst.is_empty(),
        "drain empties the burst even when not consumed fully"
    );
    assert_eq!(pool.in_use(), 0, "undrained mbufs were freed");
    assert_eq!(pool.alloc_bulk(&mut burst, 10), 10);
    assert_eq!(burst.len(), 10);
    let small = Mempool::new(&eal, "bulksmall", 15, 0, 2176).expect("pool");
    let mut other = MbufBurst::new();
    assert_eq!(small.alloc_bulk(&mut other, 10), 10);
    assert_eq!(
        small.alloc_bulk(&mut other, 10),
        0,
        "only 5 left: all or nothing"
    );
    assert_eq!((other.len(), small.in_use()), (10, 10));
    drop(other);
    assert_eq!(small.in_use(), 0);
    burst.free_all();
    assert_eq!(pool.in_use(), 0);
    for _ in 0..10 {
        let _ = burst.push(pool.alloc().expect("alloc"));
    }
    drop(burst);
    assert_eq!(pool.in_use(), 0, "dropping a burst frees its mbufs");
}

#[test]
fn the_offload_word_travels_with_the_packet_and_never_outlives_it() {
    let pool = Mempool::new(&common::eal(), "offload", 1, 0, 2176).expect("one-mbuf pool");
    let mut m = pool.alloc().expect("alloc");
    assert_eq!(m.offload(), 0, "a fresh mbuf carries no offload");
    m.set_offload(0xdead_beef_0000_0042);
    assert_eq!(m.offload(), 0xdead_beef_0000_0042);
    m.append(60).expect("append");
    m.prepend(14).expect("prepend");
    assert_eq!(m.offload(), 0xdead_beef_0000_0042, "edits keep it");
    m.set_offload(0);
    assert_eq!(m.offload(), 0);
    m.set_offload(7);
    drop(m);
    // The pool holds one mbuf: this is the same buffer, and the word is gone.
    let again = pool.alloc().expect("alloc again");
    assert_eq!(
        again.offload(),
        0,
        "a reused buffer does not inherit the last packet's word"
    );
}

#[test]
fn a_packet_grows_into_new_segments_and_copies_out_across_them() {
    let pool = pool(&common::eal(), "grow");
    let mut m = pool.alloc().expect("alloc");
    let bytes: Vec<u8> = (0..9000u32).map(|i| (i * 7 % 253) as u8).collect();
    for chunk in bytes.chunks(1000) {
        m.append_grow(chunk.len() as u16)
            .expect("grow")
            .copy_from_slice(chunk);
    }
    assert_eq!(m.pkt_len(), 9000);
    assert!(m.nb_segs() >= 5, "{} segments", m.nb_segs());
    assert_eq!(m.segments().flatten().copied().collect::<Vec<u8>>(), bytes);
    let mut out = vec![0u8; 3000];
    assert_eq!(m.copy_out(1500, &mut out), 3000);
    assert_eq!(out, bytes[1500..4500]);
    assert_eq!(
        m.copy_out(8000, &mut out),
        1000,
        "stops where the packet ends"
    );
    assert_eq!(out[..1000], bytes[8000..]);
    assert!(m.append_grow(3000).is_err(), "larger than an empty segment");
    let mut cut = pool.alloc_with(&bytes).expect("chain");
    assert!(cut.truncate(3000).is_err(), "beyond the first segment");
    cut.truncate(100).expect("truncate");
    assert_eq!((cut.pkt_len(), cut.nb_segs()), (100, 1));
    assert_eq!(cut.data(), &bytes[..100]);
    drop(cut);
    let segs = usize::from(m.nb_segs());
    drop(m);
    assert_eq!(pool.in_use(), 0, "all {segs} segments freed");
}
