//! Two `net_af_packet` ports on a veth pair: one sends over many flows, the other receives on
//! two queues (the kernel fans packets out by flow hash). Every frame arrives once, intact, and
//! both queues carry traffic.

mod common;

use std::collections::HashSet;
use std::time::{Duration, Instant};

use pmd_shim::{EthPort, MbufBurst, Mempool, PortConfig};
use testkit::netns::HostVeth;

const PACKETS: u32 = 20_000;

/// An IPv4/UDP frame of flow `seq % 512`, carrying `seq` in its payload.
fn frame(seq: u32) -> Vec<u8> {
    let flow = seq % 512;
    let mut f = vec![0u8; 80];
    f[0..6].copy_from_slice(&[0x02, 0, 0, 0, 0, 0xbb]);
    f[6..12].copy_from_slice(&[0x02, 0, 0, 0, 0, 0xaa]);
    f[12..14].copy_from_slice(&[0x08, 0x00]);
    f[14] = 0x45;
    f[16..18].copy_from_slice(&66u16.to_be_bytes());
    f[22] = 64;
    f[23] = 17;
    f[26..30].copy_from_slice(&[198, 18, (flow >> 8) as u8, flow as u8]);
    f[30..34].copy_from_slice(&[198, 19, 0, 1]);
    f[34..36].copy_from_slice(&(1024 + flow as u16).to_be_bytes());
    f[36..38].copy_from_slice(&5001u16.to_be_bytes());
    f[38..40].copy_from_slice(&46u16.to_be_bytes());
    f[42..46].copy_from_slice(&seq.to_be_bytes());
    for (i, b) in f[46..].iter_mut().enumerate() {
        *b = (seq as usize + i) as u8;
    }
    f
}

#[test]
fn af_packet_pair_spreads_flows_over_two_rx_queues() {
    let eal = common::eal();
    let id = std::process::id() % 100_000;
    let veth = HostVeth::new(&format!("vrpa{id}"), &format!("vrpb{id}"));
    let pool = Mempool::new(&eal, "afpkt", 8191, 64, 2176).expect("mempool");

    let mut rx_port = EthPort::open(&eal, &format!("net_af_packet0,iface={},qpairs=2", veth.a()))
        .expect("af_packet rx port");
    let rx_cfg = PortConfig {
        rx_queues: 2,
        tx_queues: 2,
        ..PortConfig::default()
    };
    rx_port
        .configure(&rx_cfg, &pool)
        .expect("configure 2 queues");
    let mut tx_port = EthPort::open(&eal, &format!("net_af_packet1,iface={}", veth.b()))
        .expect("af_packet tx port");
    tx_port
        .configure(&PortConfig::default(), &pool)
        .expect("configure");
    let mut rxq = rx_port.start().expect("start").rx;
    let mut txq = tx_port.start().expect("start").tx.pop().expect("tx queue");
    assert_eq!(rxq.len(), 2);

    let mut seen = HashSet::new();
    let mut per_queue = [0u32; 2];
    let (mut next, mut inflight_since) = (0u32, Instant::now());
    let mut out = MbufBurst::new();
    let mut inb = MbufBurst::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    while seen.len() < PACKETS as usize {
        assert!(
            Instant::now() < deadline,
            "only {} of {PACKETS} arrived",
            seen.len()
        );
        // Keep at most 256 in flight: the kernel socket buffers are small.
        if next < PACKETS
            && (next as usize - seen.len() < 256
                || inflight_since.elapsed() > Duration::from_millis(200))
        {
            while next < PACKETS && !out.is_full() {
                let _ = out.push(pool.alloc_with(&frame(next)).expect("alloc"));
                next += 1;
            }
            while !out.is_empty() {
                txq.tx_burst(&mut out);
            }
            inflight_since = Instant::now();
        }
        for (q, queue) in rxq.iter_mut().enumerate() {
            queue.rx_burst(&mut inb);
            for m in inb.drain() {
                let data = m.to_vec();
                if data.len() != 80 || data[12..14] != [0x08, 0x00] {
                    continue; // not ours
                }
                let seq = u32::from_be_bytes([data[42], data[43], data[44], data[45]]);
                assert_eq!(data, frame(seq), "frame {seq} arrived intact");
                assert!(seen.insert(seq), "frame {seq} arrived twice");
                per_queue[q] += 1;
            }
        }
    }
    assert!(
        per_queue.iter().all(|&n| n > 0),
        "both RX queues carried flows: {per_queue:?}"
    );
    drop((rxq, txq));
    drop((rx_port, tx_port));
    assert_eq!(pool.in_use(), 0, "no mbuf leaked");
}
