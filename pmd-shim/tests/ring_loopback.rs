//! 100,000 packets through a real DPDK port (a `net_ring` vdev, whose TX ring is its own RX
//! ring) with rx_burst / tx_burst, every payload byte checked, and no mbuf leaked.

mod common;

use pmd_shim::{EthPort, Mbuf, MbufBurst, Mempool, PortConfig};

const PACKETS: u64 = 100_000;
const BURST: usize = 32;

/// Packet `seq`: a length between 60 and 1514 bytes, every byte derived from `seq`.
fn frame(seq: u64) -> Vec<u8> {
    let len = 60 + (seq.wrapping_mul(7919) % 1455) as usize;
    let mut f = Vec::with_capacity(len);
    f.extend_from_slice(&seq.to_be_bytes());
    while f.len() < len {
        let i = f.len() as u64;
        f.push((seq.wrapping_mul(31).wrapping_add(i * 7) & 0xff) as u8);
    }
    f
}

#[test]
fn hundred_thousand_packets_through_net_ring_every_byte_checked() {
    let eal = &common::eal();
    let pool = Mempool::new(eal, "ringloop", 4095, 64, 2176).expect("mempool");
    let mut port = EthPort::open(eal, "net_ring0").expect("net_ring0 vdev");
    port.configure(&PortConfig::default(), &pool)
        .expect("configure");
    let mut queues = port.start().expect("start");
    let mut rx = queues.rx.pop().expect("one rx queue");
    let mut tx = queues.tx.pop().expect("one tx queue");
    let baseline = pool.in_use();

    let (mut sent, mut received) = (0u64, 0u64);
    let mut out = MbufBurst::new();
    let mut inb = MbufBurst::new();
    let mut idle_polls = 0u32;
    while received < PACKETS {
        while sent < PACKETS && out.len() < BURST {
            let m = pool.alloc_with(&frame(sent)).expect("alloc");
            assert!(out.push(m).is_ok());
            sent += 1;
        }
        tx.tx_burst(&mut out);
        let n = rx.rx_burst(&mut inb);
        if n == 0 {
            idle_polls += 1;
            assert!(
                idle_polls < 1_000_000,
                "stalled: sent {sent}, received {received}"
            );
        }
        for m in inb.drain() {
            check(&m, received);
            received += 1;
        }
    }
    drop(out);
    assert_eq!(rx.rx_burst(&mut inb), 0, "no extra packets");
    let stats = port.stats().expect("stats");
    assert_eq!(stats.rx_packets, PACKETS);
    assert_eq!(stats.tx_packets, PACKETS);
    assert_eq!(pool.in_use(), baseline, "every mbuf went back to the pool");

    drop((rx, tx, queues));
    port.stop().expect("stop after queue handles are gone");
    drop(port);
    assert_eq!(pool.in_use(), 0);
}

fn check(m: &Mbuf, seq: u64) {
    let want = frame(seq);
    assert_eq!(m.pkt_len() as usize, want.len(), "length of packet {seq}");
    assert_eq!(m.to_vec(), want, "bytes of packet {seq}");
}
