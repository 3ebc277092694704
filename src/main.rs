//! vrouterd: the vrouter data-plane process.
//!
//! Threads: pinned forwarding lcores (EAL workers) run [`lcore::Lcore`]; the main thread, on the
//! vhost lcore, serves every vhost-user socket ([`vhost_core::VhostCore`]); a control thread on
//! the same CPU runs the REST API (tokio), applying changes through [`dataplane`].

mod agent;
mod cli;
mod config;
mod dataplane;
mod flow_export;
mod lcore;
mod mirror;
mod neigh;
mod notify;
mod offload;
mod packet;
mod progress;
mod router_adverts;
mod vhost_core;

use std::collections::BTreeSet;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{anyhow, Context, Result};
use control_api::api::{VifRequest, VifType};
use control_api::journal::Loaded;
use control_api::{ControlSocket, Controller, ControllerConfig, ServeOptions};
use crossbeam::channel::unbounded;
use pmd_shim::{mbuf_ring, Eal, Mempool, RingMode};
use tracing::{info, warn};
use vrouter::flow::{FlowConfig, FlowTable, Policies};
use vrouter::nat::Nat;
use vrouter::pipeline::Pipeline;
use vrouter::tables::{FabricConfig, Tables};

use crate::dataplane::{DataplaneParts, LcoreHandleInfo, VrouterDataplane};
use crate::lcore::{Lcore, LoopCounters};
use crate::vhost_core::VhostCore;

/// The vif `--fabric` adds at every start; the command line owns it, so saved state leaves it
/// out.
const FABRIC_VIF: &str = "fabric0";
/// The vif `--host-iface` adds at every start (the host's tap), owned by the command line too.
const HOST_VIF: &str = "vhost0";

/// Slots in each lcore's inbox ring (packets other lcores route to vifs it transmits for).
const INBOX_SLOTS: u32 = 4096;

/// How long the control runtime's one blocking thread (if it ever starts one) may idle before
/// tokio ends it: about a century, i.e. never (std saturates a wait that overflows the clock).
const CONTROL_THREAD_KEEP_ALIVE: Duration = Duration::from_secs(100 * 365 * 24 * 3600);

/// Back the flow table with transparent huge pages (its lookups otherwise wait on TLB misses);
/// without them it still works, on 4 KiB pages, so a refusal is a warning.
fn flow_table_on_huge_pages(start: usize, len: usize) {
    let mib = |b: usize| b as f64 / f64::from(1 << 20);
    match pmd_shim::memory::back_with_huge_pages(start, len) {
        Ok(b) if b.huge >= b.eligible => info!(
            "flow table: {:.1} of {:.1} MiB on huge pages",
            mib(b.huge),
            mib(len)
        ),
        Ok(b) => warn!(
            "flow table: only {:.1} of {:.1} MiB on huge pages (collapse errno {:?}; \
             /sys/kernel/mm/transparent_hugepage/enabled says whether THP is on): lookups in a \
             large table will be slower",
            mib(b.huge),
            mib(len),
            b.collapse_error
        ),
        Err(e) => warn!("flow table: no huge pages ({e}): lookups in a large table will be slower"),
    }
}

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

/// Pins the calling thread to `cpu` (the control side stays off the forwarding CPUs).
fn pin_current_thread(cpu: u32) {
    let mut set = rustix::thread::CpuSet::new();
    set.set(cpu as usize);
    if let Err(e) = rustix::thread::sched_setaffinity(None, &set) {
        warn!(cpu, "could not pin the control thread: {e}");
    }
}

/// Restores the saved state (if any) and binds the control socket; `None` if vrouterd is
/// already shutting down.
fn open_control(
    ctrl: &Controller,
    saved: Option<Loaded>,
    fixed: BTreeSet<String>,
    path: &Path,
    shutdown: &AtomicBool,
) -> Result<Option<ControlSocket>> {
    if shutdown.load(Ordering::Relaxed) {
        return Ok(None);
    }
    if let Some(saved) = saved {
        let dir = saved.dir().to_path_buf();
        let done = ctrl
            .restore(saved, fixed)
            .with_context(|| format!("restoring the saved state in {}", dir.display()))?;
        if done.skipped > 0 {
            warn!(
                dir = %dir.display(),
                applied = done.applied,
                skipped = done.skipped,
                "state restored, but some saved changes no longer apply (logged above)"
            );
        } else {
            info!(dir = %dir.display(), applied = done.applied, "state restored");
        }
    }
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent)
            .with_context(|| format!("creating {}", parent.display()))?;
    }
    let socket = ControlSocket::bind(path)
        .with_context(|| format!("binding the control socket {}", path.display()))?;
    Ok(Some(socket))
}

fn run(opts: &cli::Options) -> Result<()> {
    let started = Instant::now();
    let shutdown = Arc::new(AtomicBool::new(false));
    // The vhost core (this thread, later) sleeps until its doorbell rings: whatever sets
    // `shutdown` rings it too. Commands and lcore events for it ring it as well.
    let vhost_bell = vhost_core::Doorbell::new().context("creating the vhost core's doorbell")?;
    for signal in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        signal_hook::flag::register(signal, Arc::clone(&shutdown))
            .context("installing the SIGINT/SIGTERM handler")?;
        vhost_bell
            .ring_on_signal(signal)
            .context("installing the SIGINT/SIGTERM handler")?;
    }
    if let Some(deadline) = cli::run_deadline(opts) {
        let flag = Arc::clone(&shutdown);
        let bell = vhost_bell.clone();
        std::thread::Builder::new()
            .name("run-for".into())
            .spawn(move || {
                while Instant::now() < deadline && !flag.load(Ordering::Relaxed) {
                    std::thread::sleep(Duration::from_millis(20));
                }
                flag.store(true, Ordering::Relaxed);
                bell.ring();
            })
            .context("starting the --run-for timer")?;
    }

    // Read and verified before anything starts: a damaged file stops vrouterd here, with
    // nothing applied.
    let saved = opts
        .state_dir
        .as_deref()
        .map(|dir| {
            Loaded::open(dir).with_context(|| {
                format!("reading the saved state in --state-dir {}", dir.display())
            })
        })
        .transpose()?;

    let eal = Eal::init(&opts.eal_argv()).context("starting DPDK")?;
    info!(main_lcore = eal.main_lcore(), fwd_lcores = ?opts.fwd_lcores.0, "EAL initialised");
    // Before any guest memory is mapped, and before DPDK can next swap SIGBUS handlers while
    // it allocates (it puts back whatever it found): a guest that truncates its memory must
    // never take the process down.
    if !vhost_user::memory::fault::install() {
        return Err(anyhow!(
            "cannot install the SIGBUS handler that contains guest-memory faults"
        ));
    }
    let pool = Mempool::new(&eal, "vr_pkts", opts.mbufs, 256, 2048 + 128)
        .context("creating the packet mempool (more hugepages, or a smaller --mbufs)")?;
    let tables = Arc::new(Tables::new(opts.tables_config()));
    let flow_table = Arc::new(
        FlowTable::with_memory_advice(
            FlowConfig {
                entries: opts.flow_entries,
                ..FlowConfig::default()
            },
            Some(&flow_table_on_huge_pages),
        )
        .map_err(|e| anyhow!("--flow-entries {}: {e}", opts.flow_entries))?,
    );
    let policies = Arc::new(Policies::new(Arc::clone(&flow_table)));
    let nat = Arc::new(Nat::new(Arc::clone(&flow_table)).with_grace(Arc::clone(tables.grace())));
    let fabric = FabricConfig {
        vrouter_mac: opts.vrouter_mac,
        fabric_ip: opts.fabric_ip.unwrap_or(std::net::Ipv4Addr::UNSPECIFIED),
        ..FabricConfig::default()
    };

    // Forwarding lcores: each gets a command channel and an inbox ring every other lcore can
    // produce into.
    let n = opts.fwd_lcores.0.len();
    let mut producers = Vec::with_capacity(n);
    let mut consumers = Vec::with_capacity(n);
    for i in 0..n {
        let (p, c) = mbuf_ring(
            &eal,
            &format!("vr_inbox{i}"),
            INBOX_SLOTS,
            RingMode::MultiProducerSingleConsumer,
        )
        .context("creating an lcore inbox ring")?;
        producers.push(p);
        consumers.push(c);
    }
    let agent_shared = opts.agent_socket.as_ref().map(|_| {
        agent::AgentShared::new(
            n,
            opts.agent_trap_rate,
            opts.agent_trap_burst,
            opts.agent_max_held as usize,
            opts.agent_held_ms,
        )
    });
    let (event_tx, event_rx) = vhost_core::to_vhost_core(&vhost_bell);
    let mut lcores = Vec::with_capacity(n);
    let mut handles = Vec::with_capacity(n);
    let tracer = Arc::new(vrouter::pipeline::trace::Tracer::default());
    for (i, (&lcore_id, inbox)) in opts.fwd_lcores.0.iter().zip(consumers).enumerate() {
        // Unbounded: a send never blocks the vhost core or the control side (which may hold
        // the registry that health reads need), even on a wedged lcore, and no command is
        // dropped while the lcore runs, so one that recovers catches up in order. Commands come
        // at the pace of control operations and guest (re)connections; waits for an lcore's
        // replies are what time out.
        let (cmd_tx, cmd_rx) = unbounded();
        let stats = Arc::new(vrouter::CoreStats::default());
        let counters = Arc::new(LoopCounters::default());
        let peers = producers
            .iter()
            .map(|p| p.try_clone())
            .collect::<Result<Vec<_>, _>>()
            .context("cloning ring producers")?;
        let mut pipeline = Pipeline::new(
            Arc::clone(&tables),
            Arc::clone(&stats),
            policies.stage(Arc::clone(&tables)).with_nat(&nat),
        );
        pipeline.set_tracer(Arc::clone(&tracer));
        lcores.push(Lcore {
            index: u8::try_from(i).context("at most 255 forwarding lcores")?,
            pipeline,
            grace: Arc::clone(tables.grace()),
            flows: Arc::clone(&flow_table),
            counters: Arc::clone(&counters),
            events: event_tx.clone(),
            pool: pool.clone(),
            stats: Arc::clone(&stats),
            commands: cmd_rx,
            peers,
            inbox,
            idle_sleep: (opts.idle_sleep_us > 0).then(|| Duration::from_micros(opts.idle_sleep_us)),
            agent: agent_shared
                .as_ref()
                .map(|s| agent::TrapGate::new(Arc::clone(s), i)),
        });
        handles.push(LcoreHandleInfo {
            lcore: lcore_id,
            commands: cmd_tx,
            stats,
            counters,
            inbox: producers[i].try_clone().context("cloning ring producer")?,
        });
    }
    drop(producers);

    let (vhost_tx, vhost_rx) = vhost_core::to_vhost_core(&vhost_bell);
    let vhost_status = Arc::new(Mutex::new(Default::default()));
    let vhost_loops = Arc::new(AtomicU64::new(0));
    // Queues per forwarding lcore, for placement: by the registry and the vhost core.
    let load: crate::vhost_core::LcoreLoad =
        Arc::new((0..handles.len()).map(|_| AtomicU32::new(0)).collect());
    let vhost_core = VhostCore {
        commands: vhost_rx,
        lcore_events: event_rx,
        lcores: handles.iter().map(|h| h.commands.clone()).collect(),
        status: Arc::clone(&vhost_status),
        loops: Arc::clone(&vhost_loops),
        load: Arc::clone(&load),
        bell: vhost_bell.clone(),
    };
    // The neighbour resolver's requests go out through the first forwarding lcore.
    let neigh_lcore = handles.first().map(|h| h.commands.clone());
    let ra_lcore = handles.first().map(|h| h.commands.clone());
    let dataplane = Arc::new(VrouterDataplane::new(DataplaneParts {
        eal: eal.clone(),
        pool: pool.clone(),
        tables: Arc::clone(&tables),
        lcores: handles,
        vhost: vhost_tx,
        vhost_status,
        vhost_loops,
        load,
        fabric,
        policies: Arc::clone(&policies),
        tracer,
        nat: Arc::clone(&nat),
    }));
    let ctrl = Arc::new(
        Controller::new(
            ControllerConfig {
                socket_base: opts.socket_base.clone(),
                vrouter_mac: opts.vrouter_mac,
            },
            dataplane.clone(),
        )
        .context("setting up the control model (--socket-base)")?,
    );

    // The agent channel's thread owns its socket.
    let agent_stop = Arc::new(AtomicBool::new(false));
    let agent_thread = match (&opts.agent_socket, &agent_shared) {
        (Some(path), Some(shared)) => {
            let listener = agent::bind(path)?;
            dataplane.set_agent(Arc::clone(shared));
            let t = agent::AgentThread {
                shared: Arc::clone(shared),
                listener,
                path: path.clone(),
                policies: Arc::clone(&policies),
                tables: Arc::clone(&tables),
                pool: pool.clone(),
            };
            let stop = Arc::clone(&agent_stop);
            let cpu = opts.vhost_lcore;
            info!(path = %path.display(), "agent channel (pkt0) listening");
            Some(
                std::thread::Builder::new()
                    .name("pkt0".into())
                    .spawn(move || {
                        pin_current_thread(cpu);
                        t.run(&stop)
                    })
                    .context("starting the agent channel thread")?,
            )
        }
        _ => None,
    };

    let mut running = Vec::new();
    for (lcore, work) in opts.fwd_lcores.0.iter().copied().zip(lcores) {
        let handle = eal
            .launch(lcore, move |stop| work.run(stop))
            .with_context(|| format!("launching forwarding lcore {lcore}"))?;
        info!(lcore, "forwarding lcore polling");
        running.push(handle);
    }

    // Flow export reads the table from a thread of its own.
    let export_stop = Arc::new(AtomicBool::new(false));
    let exporter = match opts.ipfix_collector {
        Some(collector) => Some(
            flow_export::spawn(
                flow_export::ExportConfig {
                    collector,
                    active_timeout: Duration::from_secs(opts.ipfix_active_timeout),
                    poll: Duration::from_secs(1),
                    max_rate: opts.ipfix_max_rate,
                    template_every: Duration::from_secs(30),
                },
                Arc::clone(&flow_table),
                dataplane::flow_clock_ms,
                Arc::clone(&export_stop),
            )
            .map(|(handle, stats)| {
                dataplane.set_flow_export(collector, stats);
                handle
            })
            .with_context(|| format!("starting flow export to {collector}"))?,
        ),
        None => None,
    };

    // The fabric port before the control API: a vif add from the API waits for the vhost core
    // (this thread, once it runs), and would wait in vain behind this add's turn.
    if let Some(devargs) = &opts.fabric {
        let mut req = VifRequest::new(FABRIC_VIF, VifType::Physical, 0, opts.fabric_mac);
        req.device = Some(devargs.clone());
        req.ip = opts.fabric_ip;
        req.mtu = opts.fabric_mtu;
        match ctrl.vif_add(&req) {
            Ok(v) => info!(fabric = %devargs, index = v.index, "fabric port up"),
            Err(e) => {
                shutdown.store(true, Ordering::Relaxed);
                warn!(fabric = %devargs, "adding the fabric port failed: {e}");
            }
        }
    }
    if let Some(iface) = &opts.host_iface {
        let mut req = VifRequest::new(HOST_VIF, VifType::Tap, 0, opts.fabric_mac);
        req.iface = Some(iface.clone());
        match ctrl.vif_add(&req) {
            Ok(v) => info!(iface = %iface, index = v.index, "host interface up"),
            Err(e) => {
                shutdown.store(true, Ordering::Relaxed);
                warn!(iface = %iface, "adding the host interface failed: {e}");
            }
        }
    }
    // Underlay neighbours of tunnel nexthops without a dmac, resolved by ARP.
    let neigh_stop = Arc::new(AtomicBool::new(false));
    let resolver = match neigh_lcore {
        Some(l) => {
            let r = Arc::new(neigh::Resolver::new(
                Arc::clone(&tables),
                pool.clone(),
                l,
                std::time::Duration::from_secs(opts.neigh_reachable_secs),
            ));
            dataplane.set_resolver(Arc::clone(&r));
            Some(
                r.spawn(Arc::clone(&neigh_stop))
                    .context("starting the neighbour resolver")?,
            )
        }
        None => None,
    };
    // Unsolicited router advertisements to the vifs with an ip6.
    let ra_stop = Arc::new(AtomicBool::new(false));
    let advertiser = match ra_lcore {
        Some(l) if opts.ra_interval_secs > 0 => Some(
            Arc::new(router_adverts::Advertiser::new(
                Arc::clone(&tables),
                pool.clone(),
                l,
                std::time::Duration::from_secs(opts.ra_interval_secs),
            ))
            .spawn(Arc::clone(&ra_stop))
            .context("starting the router advertiser")?,
        ),
        _ => None,
    };

    // The control API, on its own thread pinned to the vhost lcore's CPU. It restores the
    // saved state first (vif adds wait for the vhost core, this thread's job from now on), then
    // opens the control socket: the agent never sees a half-restored vrouterd.
    let (stop_api_tx, stop_api_rx) = tokio::sync::oneshot::channel::<()>();
    let api_ctrl = Arc::clone(&ctrl);
    let vhost_cpu = opts.vhost_lcore;
    let control_socket = opts.control_socket.clone();
    let fixed: BTreeSet<String> = opts
        .fabric
        .iter()
        .map(|_| FABRIC_VIF.to_owned())
        .chain(opts.host_iface.iter().map(|_| HOST_VIF.to_owned()))
        .collect();
    let api_shutdown = Arc::clone(&shutdown);
    let api_bell = vhost_bell.clone();
    let api = std::thread::Builder::new()
        .name("control-api".into())
        .spawn(move || -> Result<()> {
            pin_current_thread(vhost_cpu);
            let opened = open_control(&api_ctrl, saved, fixed, &control_socket, &api_shutdown);
            let socket = match opened {
                Ok(Some(socket)) => socket,
                Ok(None) => return Ok(()),
                Err(e) => {
                    api_shutdown.store(true, Ordering::Relaxed);
                    api_bell.ring();
                    return Err(e);
                }
            };
            // Bound and listening: a client's connection waits in the backlog until the
            // server below accepts it, so the API answers from here on.
            notify::notify(&format!(
                "READY=1\nSTATUS=control API on {}",
                control_socket.display()
            ));
            // The server runs controller calls on its own two threads (changes, reads), started
            // with it and kept for its life. Nothing here should use tokio's blocking pool; if
            // something ever does, one thread kept for good is the pool, rather than threads
            // that come and go with the load (each brings a stack and a malloc arena with it at
            // some random later moment; tests/restart.rs watches vrouterd's thread ids).
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .max_blocking_threads(1)
                .thread_keep_alive(CONTROL_THREAD_KEEP_ALIVE)
                .build()
                .context("starting the control runtime")?;
            rt.block_on(control_api::serve(
                socket,
                api_ctrl,
                ServeOptions::default(),
                async move {
                    let _ = stop_api_rx.await;
                },
            ))
            .context("serving the control API")
        })
        .context("starting the control thread")?;

    // The main thread is the vhost core until shutdown.
    vhost_core.run(&shutdown);
    let reason = match cli::run_deadline(opts) {
        _ if api.is_finished() => "the control API ended",
        Some(_) if started.elapsed().as_secs_f64() >= opts.run_for => "--run-for elapsed",
        _ => "signal",
    };
    info!(reason, "shutting down");
    notify::notify(&format!("STOPPING=1\nSTATUS=shutting down ({reason})"));

    let _ = stop_api_tx.send(());
    let api_outcome = api
        .join()
        .unwrap_or_else(|_| Err(anyhow!("the control API thread panicked")));
    for h in &running {
        h.stop();
    }
    for h in running {
        let (lcore, code) = (h.lcore(), h.join());
        if code != 0 {
            warn!(lcore, code, "forwarding lcore exited with an error");
        }
    }
    neigh_stop.store(true, Ordering::Relaxed);
    if let Some(h) = resolver {
        let _ = h.join();
    }
    ra_stop.store(true, Ordering::Relaxed);
    if let Some(h) = advertiser {
        let _ = h.join();
    }
    agent_stop.store(true, Ordering::Relaxed);
    if let Some(h) = agent_thread {
        let _ = h.join();
    }
    // The flows' last records, now that no packet moves them.
    export_stop.store(true, Ordering::Relaxed);
    if let Some(h) = exporter {
        let _ = h.join();
    }
    let stats = ctrl.stats().ok();
    for (lcore, polls, busy) in dataplane.loop_summary() {
        let rx = stats
            .as_ref()
            .and_then(|s| s.lcores.iter().find(|l| l.lcore == lcore))
            .map_or(0, |l| l.rx_packets);
        println!("vrouterd: lcore {lcore}: {polls} polls, {busy} busy, {rx} packets received");
    }
    // Vif sockets and the directories vrouterd created for them go; ports close with the
    // dataplane, after the lcores let go of their queues.
    ctrl.remove_socket_files();
    drop(ctrl);
    drop(dataplane);
    drop(tables);
    drop(pool);
    drop(eal);
    api_outcome?;
    println!(
        "vrouterd: stopped cleanly after {:.1}s",
        started.elapsed().as_secs_f64()
    );
    Ok(())
}
