//! Packets per second of the split-virtqueue fast path on one core, against the in-repo test
//! frontend: dequeue (guest TX → buffers), enqueue (buffers → guest RX, mergeable) and the
//! guest-to-guest forward, 64 B and 1500 B frames, bursts of 32.
//!
//! Only the backend call is timed: the driver side (re-publishing the same descriptors in the
//! avail ring) runs between measurements. Run: `cargo bench -p vhost-user --bench virtqueue`.
//!
//! Two cache states per case. `warm`: everything stays in this core's caches from the previous
//! burst. `cold`: before each timed burst the rings and the burst's buffers are evicted
//! (`clflush`), so every descriptor and buffer access misses, as it does when the pod on another
//! core has just written them; this is where overlapping the misses (prefetch) shows.
//!
//! `packed_dequeue` and `packed_enqueue` time the packed ring's bursts (warm) the same way,
//! through [`Virtqueue`] as the lcores call them; `split_via_enum` times the split dequeue
//! through that enum too, to compare with `dequeue/warm`.

use std::hint::black_box;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use vhost_user::frontend::{DriverQueue, GuestRam, PackedDriver, RawDesc};
use vhost_user::virtqueue::layout::{avail, desc, used};
use vhost_user::virtqueue::{feature, forward_burst, Virtqueue, DESC_F_WRITE};
use vhost_user::VecBuffer;

const BURST: usize = 32;
const SIZE: u16 = 256;
const F: u64 = feature::VERSION_1 | feature::MRG_RXBUF | feature::INDIRECT_DESC;

/// A ring whose every descriptor points at its own 2 KiB buffer, `flags` on each, the
/// buffer pre-filled with a 12-byte header and a `len`-byte frame (TX) or empty (RX).
fn ring(ram: &mut GuestRam, len: usize, flags: u16) -> Ring {
    let dq = DriverQueue::new(ram, SIZE, 64);
    let mut bufs = Vec::with_capacity(usize::from(SIZE));
    for i in 0..SIZE {
        let buf = ram.alloc(2048, 64);
        bufs.push(buf);
        let mut bytes = vec![0u8; 12];
        bytes.extend((0..len).map(|k| k as u8));
        ram.write(buf, &bytes);
        let dlen = if flags & DESC_F_WRITE != 0 {
            2048
        } else {
            (12 + len) as u32
        };
        dq.write_desc(
            ram,
            i,
            RawDesc {
                addr: buf,
                len: dlen,
                flags,
                next: 0,
            },
        );
    }
    Ring { dq, bufs, next: 0 }
}

/// A driver queue, its per-descriptor buffers, and the next descriptor to publish.
struct Ring {
    dq: DriverQueue,
    bufs: Vec<u64>,
    next: u16,
}

#[derive(Clone, Copy, PartialEq)]
enum Cache {
    Warm,
    Cold,
}

impl Cache {
    fn name(self) -> &'static str {
        match self {
            Cache::Warm => "warm",
            Cache::Cold => "cold",
        }
    }
}

impl Ring {
    /// Publishes the next burst; when `cache` is cold, evicts the rings and the first `touch`
    /// bytes of each buffer of the burst.
    fn publish_burst(&mut self, ram: &GuestRam, cache: Cache, touch: u64) {
        let first = self.next;
        for _ in 0..BURST {
            self.dq.publish(ram, self.next % SIZE);
            self.next = self.next.wrapping_add(1);
        }
        if cache == Cache::Cold {
            let mem = ram.memory();
            mem.evict(self.dq.desc, desc::table_len(SIZE));
            mem.evict(self.dq.avail, avail::len(SIZE));
            mem.evict(self.dq.used, used::len(SIZE));
            for k in 0..BURST as u16 {
                let i = usize::from(first.wrapping_add(k) % SIZE);
                mem.evict(self.bufs[i], touch);
            }
        }
    }
}

fn dequeue(c: &mut Criterion) {
    let mut g = c.benchmark_group("dequeue");
    g.throughput(Throughput::Elements(BURST as u64));
    for cache in [Cache::Warm, Cache::Cold] {
        for len in [64usize, 1500] {
            g.bench_function(format!("{}/{len}B", cache.name()), |b| {
                let mut ram = GuestRam::new(16 << 20).expect("ram");
                let mut tx = ring(&mut ram, len, 0);
                let mut q = tx.dq.backend_queue(&ram, 1, F);
                let mut bufs: Vec<VecBuffer> =
                    (0..BURST).map(|_| VecBuffer::with_capacity(2048)).collect();
                b.iter_custom(|iters| {
                    let mut total = Duration::ZERO;
                    for _ in 0..iters {
                        tx.publish_burst(&ram, cache, 12 + len as u64);
                        let t = Instant::now();
                        let n = q.dequeue_burst(black_box(&mut bufs));
                        total += t.elapsed();
                        assert_eq!(n, BURST);
                    }
                    total
                });
            });
        }
    }
    g.finish();
}

fn enqueue(c: &mut Criterion) {
    let mut g = c.benchmark_group("enqueue");
    g.throughput(Throughput::Elements(BURST as u64));
    for cache in [Cache::Warm, Cache::Cold] {
        for len in [64usize, 1500] {
            g.bench_function(format!("{}/{len}B", cache.name()), |b| {
                let mut ram = GuestRam::new(16 << 20).expect("ram");
                let mut rx = ring(&mut ram, 0, DESC_F_WRITE);
                let mut q = rx.dq.backend_queue(&ram, 0, F);
                let pkts: Vec<VecBuffer> = (0..BURST)
                    .map(|i| VecBuffer::from_frame(&vec![i as u8; len]))
                    .collect();
                b.iter_custom(|iters| {
                    let mut total = Duration::ZERO;
                    for _ in 0..iters {
                        rx.publish_burst(&ram, cache, 12 + len as u64);
                        let t = Instant::now();
                        let n = q.enqueue_burst(black_box(&pkts));
                        total += t.elapsed();
                        assert_eq!(n, BURST);
                    }
                    total
                });
            });
        }
    }
    g.finish();
}

fn guest_to_guest(c: &mut Criterion) {
    let mut g = c.benchmark_group("guest_to_guest");
    g.throughput(Throughput::Elements(BURST as u64));
    for cache in [Cache::Warm, Cache::Cold] {
        for len in [64usize, 1500] {
            g.bench_function(format!("{}/{len}B", cache.name()), |b| {
                let mut ram_a = GuestRam::new(16 << 20).expect("ram");
                let mut ram_b = GuestRam::new(16 << 20).expect("ram");
                let mut tx = ring(&mut ram_a, len, 0);
                let mut rx = ring(&mut ram_b, 0, DESC_F_WRITE);
                let mut src = tx.dq.backend_queue(&ram_a, 1, F);
                let mut dst = rx.dq.backend_queue(&ram_b, 0, F);
                b.iter_custom(|iters| {
                    let mut total = Duration::ZERO;
                    for _ in 0..iters {
                        tx.publish_burst(&ram_a, cache, 12 + len as u64);
                        rx.publish_burst(&ram_b, cache, 12 + len as u64);
                        let t = Instant::now();
                        let n = forward_burst(&mut src, &mut dst, BURST);
                        total += t.elapsed();
                        assert_eq!(n, BURST);
                    }
                    total
                });
            });
        }
    }
    g.finish();
}

/// A packed ring with one 2 KiB buffer per slot (a `len`-byte frame after a 12-byte header for
/// TX, empty for RX) and a way to make the next burst available again.
struct PackedRing {
    d: PackedDriver,
    bufs: Vec<u64>,
    len: u32,
    flags: u16,
}

impl PackedRing {
    fn new(ram: &mut GuestRam, len: usize, flags: u16) -> Self {
        let d = PackedDriver::new(ram, SIZE, 64);
        let bufs = (0..BURST)
            .map(|_| {
                let buf = ram.alloc(2048, 64);
                let mut bytes = vec![0u8; 12];
                bytes.extend((0..len).map(|k| k as u8));
                ram.write(buf, &bytes);
                buf
            })
            .collect();
        let len = if flags & DESC_F_WRITE != 0 {
            2048
        } else {
            12 + len as u32
        };
        Self {
            d,
            bufs,
            len,
            flags,
        }
    }

    /// Reaps what the device used and makes a burst of single-descriptor chains available.
    fn publish_burst(&mut self, ram: &GuestRam) {
        self.d.reap(ram);
        for (k, &buf) in self.bufs.iter().enumerate() {
            assert!(self.d.post(ram, k as u16, &[(buf, self.len, self.flags)]));
        }
    }

    fn queue(&self, ram: &GuestRam, index: u16) -> Virtqueue {
        Virtqueue::Packed(self.d.backend_queue(ram, index, F))
    }
}

fn packed(c: &mut Criterion) {
    let mut g = c.benchmark_group("packed_dequeue");
    g.throughput(Throughput::Elements(BURST as u64));
    for len in [64usize, 1500] {
        g.bench_function(format!("warm/{len}B"), |b| {
            let mut ram = GuestRam::new(16 << 20).expect("ram");
            let mut tx = PackedRing::new(&mut ram, len, 0);
            let mut q = tx.queue(&ram, 1);
            let mut bufs: Vec<VecBuffer> =
                (0..BURST).map(|_| VecBuffer::with_capacity(2048)).collect();
            b.iter_custom(|iters| {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    tx.publish_burst(&ram);
                    let t = Instant::now();
                    let n = q.dequeue_burst(black_box(&mut bufs));
                    total += t.elapsed();
                    assert_eq!(n, BURST);
                }
                total
            });
        });
    }
    g.finish();
    let mut g = c.benchmark_group("packed_enqueue");
    g.throughput(Throughput::Elements(BURST as u64));
    for len in [64usize, 1500] {
        g.bench_function(format!("warm/{len}B"), |b| {
            let mut ram = GuestRam::new(16 << 20).expect("ram");
            let mut rx = PackedRing::new(&mut ram, 0, DESC_F_WRITE);
            let mut q = rx.queue(&ram, 0);
            let pkts: Vec<VecBuffer> = (0..BURST)
                .map(|_| VecBuffer::from_frame(&vec![7u8; len]))
                .collect();
            b.iter_custom(|iters| {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    rx.publish_burst(&ram);
                    let t = Instant::now();
                    let n = q.enqueue_burst(black_box(&pkts));
                    total += t.elapsed();
                    assert_eq!(n, BURST);
                }
                total
            });
        });
    }
    g.finish();
    let mut g = c.benchmark_group("split_via_enum");
    g.throughput(Throughput::Elements(BURST as u64));
    for len in [64usize, 1500] {
        g.bench_function(format!("dequeue/warm/{len}B"), |b| {
            let mut ram = GuestRam::new(16 << 20).expect("ram");
            let mut tx = ring(&mut ram, len, 0);
            let mut q = Virtqueue::Split(tx.dq.backend_queue(&ram, 1, F));
            let mut bufs: Vec<VecBuffer> =
                (0..BURST).map(|_| VecBuffer::with_capacity(2048)).collect();
            b.iter_custom(|iters| {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    tx.publish_burst(&ram, Cache::Warm, 12 + len as u64);
                    let t = Instant::now();
                    let n = q.dequeue_burst(black_box(&mut bufs));
                    total += t.elapsed();
                    assert_eq!(n, BURST);
                }
                total
            });
        });
    }
    g.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default().warm_up_time(Duration::from_millis(500)).measurement_time(Duration::from_secs(2)).sample_size(30);
    targets = dequeue, enqueue, guest_to_guest, packed
}
criterion_main!(benches);
