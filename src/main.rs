//! vrouterd: the vrouter data-plane process.

mod cli;
mod datapath;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use pmd_shim::{Eal, EthPort, Mempool, PortConfig};
use tracing::{info, warn};

use crate::datapath::{LcoreCounters, LcoreWork};

fn main() {
    let opts = match cli::parse() {
        Ok(o) => o,
        Err(e) => {
            eprintln!("vrouterd: {e:#}");
            std::process::exit(2);
        }
    };
    init_logging(&opts.log_level);
    if let Err(e) = run(&opts) {
        eprintln!("vrouterd: {e:#}");
        std::process::exit(1);
    }
}

fn init_logging(level: &str) {
    let filter = tracing_subscriber::EnvFilter::try_new(level)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
}

fn run(opts: &cli::Options) -> Result<()> {
    let started = Instant::now();
    let deadline = cli::run_deadline(opts);
    let shutdown = Arc::new(AtomicBool::new(false));
    for signal in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        signal_hook::flag::register(signal, Arc::clone(&shutdown))
            .context("installing the SIGINT/SIGTERM handler")?;
    }

    let eal = Eal::init(&opts.eal_argv()).context("starting DPDK")?;
    info!(main_lcore = eal.main_lcore(), fwd_lcores = ?opts.fwd_lcores.0, "EAL initialised");
    let pool = Mempool::new(&eal, "vr_pkts", opts.mbufs, 256, 2048 + 128)
        .context("creating the packet mempool (more hugepages, or a smaller --mbufs)")?;

    let nq = u16::try_from(opts.fwd_lcores.0.len()).context("too many forwarding lcores")?;
    let mut fabric = None;
    let mut per_lcore: Vec<LcoreWork> = opts
        .fwd_lcores
        .0
        .iter()
        .map(|_| LcoreWork {
            rx: Vec::new(),
            tx: Vec::new(),
            counters: Arc::new(LcoreCounters::default()),
            idle_sleep: (opts.idle_sleep_us > 0).then(|| Duration::from_micros(opts.idle_sleep_us)),
        })
        .collect();
    if let Some(devargs) = &opts.fabric {
        let mut port =
            EthPort::open(&eal, devargs).with_context(|| format!("opening fabric {devargs}"))?;
        let cfg = PortConfig {
            rx_queues: nq,
            tx_queues: nq,
            promiscuous: true,
            ..PortConfig::default()
        };
        port.configure(&cfg, &pool)
            .context("configuring the fabric port")?;
        let queues = port.start().context("starting the fabric port")?;
        for ((work, rx), tx) in per_lcore.iter_mut().zip(queues.rx).zip(queues.tx) {
            work.rx.push(rx);
            work.tx.push(tx);
        }
        let mac = port.mac().map(fmt_mac).unwrap_or_default();
        info!(fabric = %devargs, port = port.id(), %mac, queues = nq, "fabric port up");
        fabric = Some(port);
    }

    let counters: Vec<Arc<LcoreCounters>> =
        per_lcore.iter().map(|w| Arc::clone(&w.counters)).collect();
    let mut lcores = Vec::new();
    for (&lcore, work) in opts.fwd_lcores.0.iter().zip(per_lcore) {
        let handle = eal
            .launch(lcore, move |stop| work.run(stop))
            .with_context(|| format!("launching forwarding lcore {lcore}"))?;
        info!(lcore, "forwarding lcore polling");
        lcores.push(handle);
    }

    while !shutdown.load(Ordering::Relaxed) && deadline.is_none_or(|d| Instant::now() < d) {
        std::thread::sleep(Duration::from_millis(20));
    }
    info!(
        reason = if shutdown.load(Ordering::Relaxed) {
            "signal"
        } else {
            "--run-for elapsed"
        },
        "shutting down"
    );
    for h in &lcores {
        h.stop();
    }
    for h in lcores {
        let (lcore, code) = (h.lcore(), h.join());
        if code != 0 {
            warn!(lcore, code, "forwarding lcore exited with an error");
        }
    }
    if let Some(mut port) = fabric {
        if let Err(e) = port.stop() {
            warn!("stopping the fabric port: {e}");
        }
        let stats = port.stats().unwrap_or_default();
        info!(
            rx = stats.rx_packets,
            tx = stats.tx_packets,
            "fabric port closed"
        );
    }
    for (lcore, c) in opts.fwd_lcores.0.iter().zip(&counters) {
        let s = c.snapshot();
        println!(
            "vrouterd: lcore {lcore}: {} polls, {} busy, {} packets, {} bytes received",
            s.polls, s.busy_polls, s.rx_packets, s.rx_bytes
        );
    }
    drop(pool);
    drop(eal);
    println!(
        "vrouterd: stopped cleanly after {:.1}s",
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

fn fmt_mac(m: [u8; 6]) -> String {
    m.iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}
