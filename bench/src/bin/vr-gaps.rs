//! vr-gaps: how much of each CPU the host takes from a busy poller right now.
//!
//! One spinning thread per CPU (all at once: a switch and its generator keep every CPU busy,
//! and the kernel's own work then has nowhere idle to go) looks at the clock for `--ms`
//! milliseconds; each step between two looks of 10 µs or more is a stall: the time an
//! interrupt, a kernel thread or the host took the CPU. Measured 2026-12-07 on the bench VMs:
//! 350-400 stalls a second of 13-30 µs on each CPU (the tick among them), 0.6-1.4 % of each
//! CPU's time, and about one a second of a millisecond or more. Every switch loses this
//! time; it is where the p99 of any of them lies at low load, and a stall longer than a ring
//! holds at the offered rate is loss whatever the switch does. `scripts/bench.sh` runs it
//! before each case's latency steps, at normal priority, as the switch's and generator's
//! threads run. One JSON line per CPU.

use std::time::{Duration, Instant};

use anyhow::Result;
use bench::gaps::Gaps;
use clap::Parser;

#[derive(Debug, Parser)]
#[command(name = "vr-gaps", about)]
struct Args {
    /// The CPUs to watch, each with a thread of its own (comma-separated).
    #[arg(long, value_delimiter = ',', default_values_t = [0usize, 1])]
    cpus: Vec<usize>,
    /// Milliseconds to watch.
    #[arg(long, default_value_t = 2000)]
    ms: u64,
}

/// Spins on the current CPU for `span`, stepping from one look at the clock to the next.
fn watch(span: Duration) -> Gaps {
    let mut g = Gaps::default();
    let start = Instant::now();
    let mut last = start;
    loop {
        let now = Instant::now();
        g.step(now.duration_since(last).as_nanos() as u64);
        last = now;
        if now.duration_since(start) >= span {
            return g;
        }
    }
}

fn main() -> Result<()> {
    let args = Args::parse();
    let span = Duration::from_millis(args.ms);
    let watched = std::thread::scope(|s| {
        let threads: Vec<_> = args
            .cpus
            .iter()
            .map(|&cpu| {
                s.spawn(move || -> Result<(usize, Gaps)> {
                    bench::pin_to_cpu(cpu)?;
                    Ok((cpu, watch(span)))
                })
            })
            .collect();
        threads
            .into_iter()
            .map(|t| {
                t.join()
                    .map_err(|_| anyhow::anyhow!("a watching thread panicked"))?
            })
            .collect::<Result<Vec<_>>>()
    })?;
    let ended = bench::unix_ms();
    for (cpu, g) in watched {
        let round = |v: f64| (v * 100.0).round() / 100.0;
        let line = serde_json::json!({
            "cpu": cpu,
            "seconds": round(g.watched_ns as f64 / 1e9),
            "stalls_per_s": {
                "over_10us": round(g.per_second(g.over_10us)),
                "over_100us": round(g.per_second(g.over_100us)),
                "over_1ms": round(g.per_second(g.over_1ms)),
            },
            "lost_pct": round(g.lost_pct()),
            "longest_us": round(g.longest_ns as f64 / 1e3),
            "unix_ms": ended,
        });
        println!("{line}");
    }
    Ok(())
}
