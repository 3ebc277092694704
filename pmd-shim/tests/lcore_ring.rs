//! Work launched on a pinned worker lcore, fed through a single-producer ring, stopped and
//! joined; launch refusals for the main lcore and lcores outside the EAL core list.

mod common;

use pmd_shim::{mbuf_ring, Error, MbufBurst, Mempool, RingLevel, RingMode};

#[test]
fn worker_lcore_drains_a_ring_and_stops_on_request() {
    let eal = &common::eal();
    let pool = Mempool::new(eal, "lcorering", 2047, 32, 2176).expect("mempool");
    let (mut producer, mut consumer) = mbuf_ring(
        eal,
        "to-worker",
        1024,
        RingMode::SingleProducerSingleConsumer,
    )
    .expect("ring");
    assert!(
        producer.try_clone().is_err(),
        "single producer means one handle"
    );
    assert_eq!(consumer.capacity(), 1023);

    let worker = eal
        .launch(1, move |stop| {
            let mut burst = MbufBurst::new();
            let mut sum: u64 = 0;
            let mut count: i32 = 0;
            loop {
                // Read the flag before polling: an empty poll after a stop seen here means the
                // producer's last packets (enqueued before it stopped us) were all taken.
                let stopping = stop.should_stop();
                let n = consumer.dequeue_burst(&mut burst);
                for m in burst.drain() {
                    sum += u64::from(m.data()[0]);
                    count += 1;
                }
                if n == 0 && stopping {
                    break;
                }
            }
            // The sum of seq % 256 over 0..N, returned as a check of every packet's content.
            if sum == (0..50_000u64).map(|s| s % 256).sum::<u64>() {
                count
            } else {
                -2
            }
        })
        .expect("launch on lcore 1");
    assert_eq!(worker.lcore(), 1);
    assert!(
        matches!(eal.launch(1, |_| 0), Err(Error::Lcore { lcore: 1, .. })),
        "a busy lcore is refused"
    );

    let mut out = MbufBurst::new();
    let mut seq = 0u64;
    while seq < 50_000 {
        while seq < 50_000 && !out.is_full() {
            let _ = out.push(pool.alloc_with(&[(seq % 256) as u8; 60]).expect("alloc"));
            seq += 1;
        }
        producer.enqueue_burst(&mut out);
    }
    while !out.is_empty() {
        producer.enqueue_burst(&mut out);
    }
    worker.stop();
    assert_eq!(
        worker.join(),
        50_000,
        "every packet arrived with its content"
    );
    assert_eq!(pool.in_use(), 0);
}

#[test]
fn launch_refuses_main_and_disabled_lcores() {
    let eal = &common::eal();
    let main = eal.main_lcore();
    assert!(matches!(eal.launch(main, |_| 0), Err(Error::Lcore { .. })));
    let err = eal.launch(7, |_| 0).expect_err("lcore 7 is not in -l 0-1");
    assert!(
        err.to_string().contains("not in the EAL core list"),
        "{err}"
    );
}

#[test]
fn ring_drop_frees_queued_mbufs() {
    let eal = &common::eal();
    let pool = Mempool::new(eal, "ringdrop", 255, 0, 2176).expect("mempool");
    let (mut producer, consumer) =
        mbuf_ring(eal, "dropme", 64, RingMode::MultiProducerSingleConsumer).expect("ring");
    let mut second = producer.try_clone().expect("multi-producer rings clone");
    let mut burst = MbufBurst::new();
    for _ in 0..40 {
        let _ = burst.push(pool.alloc().expect("alloc"));
    }
    assert_eq!(producer.enqueue_burst(&mut burst), 40);
    for _ in 0..40 {
        let _ = burst.push(pool.alloc().expect("alloc"));
    }
    assert_eq!(
        second.enqueue_burst(&mut burst),
        23,
        "63 slots in a 64-ring"
    );
    assert_eq!(burst.len(), 17, "what did not fit stays with the caller");
    assert_eq!(consumer.count(), 63);
    drop(burst);
    drop((producer, second, consumer));
    assert_eq!(pool.in_use(), 0, "queued mbufs were freed with the ring");
    assert!(mbuf_ring(eal, "bad", 100, RingMode::SingleProducerSingleConsumer).is_err());
}
