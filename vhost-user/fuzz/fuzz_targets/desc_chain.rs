//! Arbitrary guest memory under a split virtqueue: descriptor tables, avail ring and buffers
//! all come from the fuzzer. Dequeue, enqueue and guest-to-guest forwarding must never panic
//! nor touch memory outside the guest's (bounds checks would fault otherwise).
//!
//! Input: byte 0 picks the queue size (2..=64), byte 1 the features (bit 0 MRG_RXBUF, bit 1
//! INDIRECT_DESC, bit 2 EVENT_IDX); the rest is copied over guest RAM from its first byte, where
//! the descriptor table, avail ring and used ring lie in that order (see `DriverQueue::new`).
#![no_main]

use libfuzzer_sys::fuzz_target;
use vhost_user::frontend::{DriverQueue, GuestRam};
use vhost_user::virtqueue::{feature, forward_burst};
use vhost_user::{PacketBuffer, VecBuffer};

const RAM: u64 = 64 * 1024;

fuzz_target!(|data: &[u8]| {
    if data.len() < 2 {
        return;
    }
    let size = 2u16 << (data[0] % 6);
    let mut features = feature::VERSION_1;
    if data[1] & 1 != 0 {
        features |= feature::MRG_RXBUF;
    }
    if data[1] & 2 != 0 {
        features |= feature::INDIRECT_DESC;
    }
    if data[1] & 4 != 0 {
        features |= feature::EVENT_IDX;
    }
    let Ok(mut ram) = GuestRam::new(RAM) else {
        return;
    };
    let dq = DriverQueue::new(&mut ram, size, 64);
    let image = &data[2..data.len().min(RAM as usize + 2)];
    ram.write(vhost_user::frontend::GPA_BASE, image);

    let mut tx = dq.backend_queue(&ram, 1, features);
    let mut bufs: Vec<VecBuffer> = (0..8).map(|_| VecBuffer::with_capacity(4096)).collect();
    let _ = tx.dequeue_burst(&mut bufs);
    for b in &bufs {
        let _ = b.piece(0).map(<[u8]>::len);
    }

    let mut rx = dq.backend_queue(&ram, 0, features);
    let pkts = [
        VecBuffer::from_frame(&[0xab; 60]),
        VecBuffer::from_frame(&[0xcd; 3000]),
    ];
    let _ = rx.enqueue_burst(&pkts);

    let mut src = dq.backend_queue(&ram, 1, features);
    let mut dst = dq.backend_queue(&ram, 0, features);
    let _ = forward_burst(&mut src, &mut dst, 8);
});
