//! vr-pace: how far apart the host has put this machine's two CPUs right now.
//!
//! The machines the bench runs on are VMs on shared hosts, and the host moves their vCPUs:
//! sometimes the switch's and the generator's CPUs share a core's caches, sometimes they do
//! not. A cache line then takes about 50 or about 400 ns to go there and back (measured
//! 2026-12-07), and every switch forwards at one of two paces with it (the testpmd ceiling
//! 13.5 or 22 Mpps at 64 B, vrouterd 7.4 or 12.4), since each packet crosses between the two
//! CPUs in its virtqueues. The host changes the placement every few seconds to minutes. A
//! ratio of two switches means something only when both were measured at one placement, so
//! `scripts/bench.sh` runs this beside every measurement and `bench/report.py` compares
//! seconds measured at one pace only. A core's own speed (a chain of ALU steps, a walk through
//! 8 MiB) did not move with the pace: only the round trip does.
//!
//! The probe: a cache line handed back and forth between `--cpu` and `--beside` (each side
//! waits for the other's write, then writes) for `--ms` milliseconds, timed in batches of
//! round trips; the median batch, per round trip, in nanoseconds. The median, not the mean:
//! beside a running bench both CPUs are busy polling, and a batch during which the scheduler
//! had one side off its CPU takes milliseconds, which says nothing about the placement. One
//! probe by default; with `--every-ms`, one probe every so often until killed, each on its own
//! line with the wall-clock time it ended (to match the generator's seconds).

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::Result;
use clap::Parser;

#[derive(Debug, Parser)]
#[command(name = "vr-pace", about)]
struct Args {
    /// One end of the round trip (the switch's forwarding CPU in the bench).
    #[arg(long, default_value_t = 1)]
    cpu: usize,
    /// The other end (the generator's CPU in the bench).
    #[arg(long, default_value_t = 0)]
    beside: usize,
    /// Milliseconds each probe runs.
    #[arg(long, default_value_t = 20)]
    ms: u64,
    /// Probe every this many milliseconds until killed (0: once).
    #[arg(long, default_value_t = 0)]
    every_ms: u64,
}

/// A cache line of its own for the counter handed back and forth.
#[repr(align(128))]
struct Line(AtomicU64);

/// Round trips timed together (a look at the clock costs about as much as a near trip).
const TRIPS_PER_BATCH: u32 = 16;

/// Median nanoseconds a round trip of a cache line between the current CPU and `other` takes,
/// over `ms` milliseconds; None if no batch completed (the other CPU's side never ran).
fn round_trip_ns(ms: u64, other: usize) -> Result<Option<f64>> {
    let line = Line(AtomicU64::new(0));
    let stop = AtomicBool::new(false);
    std::thread::scope(|s| -> Result<Option<f64>> {
        let peer = s.spawn(|| -> Result<()> {
            bench::pin_to_cpu(other)?;
            // Answers each odd value with the next even one until told to stop.
            while !stop.load(Ordering::Relaxed) {
                let v = line.0.load(Ordering::Acquire);
                if v % 2 == 1 {
                    line.0.store(v + 1, Ordering::Release);
                }
                std::hint::spin_loop();
            }
            Ok(())
        });
        // The first answer says the peer runs on its CPU: time from there. Yielding while
        // waiting: under a real-time policy the peer starts on this CPU, behind us, until it
        // pins itself to its own.
        line.0.store(1, Ordering::Release);
        while line.0.load(Ordering::Acquire) != 2 {
            std::thread::yield_now();
        }
        let budget = Duration::from_millis(ms);
        let start = Instant::now();
        let mut v = 2u64;
        let mut batches: Vec<Duration> = Vec::new();
        while start.elapsed() < budget {
            let t = Instant::now();
            for _ in 0..TRIPS_PER_BATCH {
                line.0.store(v + 1, Ordering::Release);
                while line.0.load(Ordering::Acquire) != v + 2 {
                    std::hint::spin_loop();
                }
                v += 2;
            }
            batches.push(t.elapsed());
        }
        stop.store(true, Ordering::Relaxed);
        peer.join()
            .map_err(|_| anyhow::anyhow!("the round-trip peer panicked"))??;
        batches.sort_unstable();
        Ok(batches
            .get(batches.len() / 2)
            .map(|d| d.as_nanos() as f64 / f64::from(TRIPS_PER_BATCH)))
    })
}

fn main() -> Result<()> {
    let args = Args::parse();
    bench::pin_to_cpu(args.cpu)?;
    loop {
        let ns = round_trip_ns(args.ms, args.beside)?;
        let line = serde_json::json!({
            "cpu": args.cpu,
            "beside": args.beside,
            "round_trip_ns": ns.map(|ns| (ns * 10.0).round() / 10.0),
            "unix_ms": bench::unix_ms(),
        });
        println!("{line}");
        if args.every_ms == 0 {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(args.every_ms));
    }
}
