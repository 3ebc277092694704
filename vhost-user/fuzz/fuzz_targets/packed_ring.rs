//! Arbitrary guest memory under a packed virtqueue: the descriptor ring, the event suppression
//! areas, indirect tables and buffers all come from the fuzzer, and so does the starting
//! position (slot and wrap counter). Dequeue and enqueue (mergeable jumbo frames included) must
//! never panic nor touch memory outside the guest's, and the queue's position must stay in its
//! ring.
//!
//! Input: byte 0 picks the queue size (1..=64, not only powers of two), byte 1 the features
//! (bit 0 MRG_RXBUF, bit 1 INDIRECT_DESC, bit 2 EVENT_IDX), bytes 2-3 the base (bits 0-14
//! slot, taken modulo the size, bit 15 wrap counter); the rest is copied over guest RAM from
//! its first byte, where the descriptor ring, the driver event area and the device event area
//! lie in that order (see `PackedDriver::new`).
#![no_main]

use std::sync::Arc;

use libfuzzer_sys::fuzz_target;
use vhost_user::frontend::{GuestRam, PackedDriver};
use vhost_user::virtqueue::{feature, PackedQueue, QueueSetup};
use vhost_user::{PacketBuffer, VecBuffer};

const RAM: u64 = 64 * 1024;

fuzz_target!(|data: &[u8]| {
    if data.len() < 4 {
        return;
    }
    let size = u16::from(data[0] % 64) + 1;
    let mut features = feature::VERSION_1 | feature::RING_PACKED;
    if data[1] & 1 != 0 {
        features |= feature::MRG_RXBUF;
    }
    if data[1] & 2 != 0 {
        features |= feature::INDIRECT_DESC;
    }
    if data[1] & 4 != 0 {
        features |= feature::EVENT_IDX;
    }
    let raw_base = u16::from_le_bytes([data[2], data[3]]);
    let base = (raw_base & 0x7fff) % size | (raw_base & 0x8000);
    let Ok(mut ram) = GuestRam::new(RAM) else {
        return;
    };
    let d = PackedDriver::new(&mut ram, size, 64);
    let image = &data[4..data.len().min(RAM as usize + 4)];
    ram.write(vhost_user::frontend::GPA_BASE, image);
    let queue = |index| {
        PackedQueue::new(QueueSetup {
            index,
            size,
            mem: Arc::clone(ram.memory()),
            desc_gpa: d.ring,
            avail_gpa: d.driver_event,
            used_gpa: d.device_event,
            base,
            features,
            call: None,
        })
    };

    let Ok(mut tx) = queue(1) else { return };
    let mut bufs: Vec<VecBuffer> = (0..8).map(|_| VecBuffer::with_capacity(4096)).collect();
    for _ in 0..3 {
        let n = tx.dequeue_burst(&mut bufs);
        assert!(n <= bufs.len());
        for b in &bufs[..n] {
            let _ = b.piece(0).map(<[u8]>::len);
        }
        assert!(tx.next_avail() & 0x7fff < size, "position inside the ring");
    }

    let Ok(mut rx) = queue(0) else { return };
    let pkts = [
        VecBuffer::from_frame(&[0xab; 60]),
        VecBuffer::from_frame(&[0xcd; 3000]),
        VecBuffer::from_frame(&[0xef; 9000]),
    ];
    for _ in 0..3 {
        assert!(rx.enqueue_burst(&pkts) <= pkts.len());
        assert!(rx.next_avail() & 0x7fff < size, "position inside the ring");
    }
});
