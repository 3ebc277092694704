//! `vrouterctl`: drive vrouterd over its control socket. Human tables by default, `--json` for
//! the raw answers. One module per object kind parses and prints its subcommands; this one
//! holds the command line and hands each subcommand to its module.

mod agent;
mod flow;
mod label;
mod link_local;
mod mirror;
mod nat;
mod nexthop;
mod output;
mod policy;
mod rate;
mod route;
mod status;
mod trace;
mod vif;
mod vrf;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use control_api::Client;

use output::Out;

#[derive(Parser)]
#[command(
    name = "vrouterctl",
    version,
    about = "Drive vrouterd over its REST control socket"
)]
struct Cli {
    /// vrouterd's control socket.
    #[arg(
        long,
        global = true,
        env = "VROUTER_SOCKET",
        default_value = "/var/run/vrouter/vrouter.sock"
    )]
    socket: PathBuf,
    /// Print the raw JSON answers instead of tables.
    #[arg(long, global = true)]
    json: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// VRFs (routing instances; 0 is the fabric).
    #[command(subcommand)]
    Vrf(vrf::VrfCmd),
    /// Virtual interfaces: pods (vhost-user), kernel interfaces, the fabric NIC.
    #[command(subcommand)]
    Vif(vif::VifCmd),
    /// Nexthops: where routes, bridge entries and labels send packets.
    #[command(subcommand, name = "nh")]
    Nh(nexthop::NhCmd),
    /// Routes of a VRF.
    #[command(subcommand)]
    Route(route::RouteCmd),
    /// L2 (bridge) entries of a VRF.
    #[command(subcommand)]
    Bridge(route::BridgeCmd),
    /// Incoming MPLS labels.
    #[command(subcommand)]
    Mpls(label::MplsCmd),
    /// Incoming VXLAN VNIs.
    #[command(subcommand)]
    Vxlan(label::VxlanCmd),
    /// Per-vif security policy.
    #[command(subcommand)]
    Policy(policy::PolicyCmd),
    /// Copies of a vif's packets to an analyzer vif.
    #[command(subcommand)]
    Mirror(mirror::MirrorCmd),
    /// NAT: source-NAT pools, the VRFs whose flows leave through them, floating IPs, service
    /// VIPs.
    #[command(subcommand)]
    Nat(nat::NatCmd),
    /// Link-local services (metadata): reached from every pod, answered on the fabric side.
    #[command(subcommand)]
    LinkLocal(link_local::LinkLocalCmd),
    /// The flow table.
    #[command(subcommand)]
    Flows(flow::FlowsCmd),
    /// Packet counters, total and per lcore.
    Stats {
        /// Per-second rates per lcore, refreshed in place (`--json`: a line per refresh).
        #[arg(long)]
        rate: bool,
        #[command(flatten)]
        refresh: rate::Refresh,
    },
    /// Drops per reason.
    Dropstats,
    /// Underlay neighbours vrouterd resolves by ARP (tunnel nexthops without --dmac).
    Neigh,
    /// The agent channel's counters (pkt0, `vrouterd --agent-socket`): traps sent, messages
    /// from the agent, malformed ones, verdicts, sends and injects.
    Agent,
    /// The next packets a vif receives, with what vrouterd did with each (VRF, verdict, the
    /// headers in and out).
    Trace(trace::TraceArgs),
    /// Mempools, rings, lcores and vif states.
    Health,
    /// Counters in Prometheus text format.
    Metrics,
    /// The changes vrouterd accepted (the change stream): those kept, then with --follow each
    /// as it comes, a line each (`--json`: the change's JSON).
    Events {
        /// Only changes after this revision.
        #[arg(long, default_value_t = 0)]
        since: u64,
        /// Keep waiting for changes until interrupted.
        #[arg(long)]
        follow: bool,
    },
    /// An example agent on the pkt0 socket (`vrouterd --agent-socket`): prints the packets
    /// vrouterd hands to the agent; `--allow` / `--deny` decide trapped new flows.
    AgentTap(agent::AgentTapArgs),
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    let c = Client::new(&cli.socket);
    let out = Out { json: cli.json };
    match cli.command {
        Command::Vrf(cmd) => vrf::run(cmd, &c, &out).await,
        Command::Vif(cmd) => vif::run(cmd, &c, &out).await,
        Command::Nh(cmd) => nexthop::run(cmd, &c, &out).await,
        Command::Route(cmd) => route::run_route(cmd, &c, &out).await,
        Command::Bridge(cmd) => route::run_bridge(cmd, &c, &out).await,
        Command::Mpls(cmd) => label::run_mpls(cmd, &c, &out).await,
        Command::Vxlan(cmd) => label::run_vxlan(cmd, &c, &out).await,
        Command::Policy(cmd) => policy::run(cmd, &c, &out).await,
        Command::Mirror(cmd) => mirror::run(cmd, &c, &out).await,
        Command::Nat(cmd) => nat::run(cmd, &c, &out).await,
        Command::LinkLocal(cmd) => link_local::run(cmd, &c, &out).await,
        Command::Flows(cmd) => flow::run(cmd, &c, &out).await,
        Command::Stats { rate: false, .. } => out.show(&c.stats().await?, status::stats),
        Command::Stats {
            rate: true,
            refresh,
        } => {
            rate::watch(
                refresh,
                out.json,
                || async { Ok(c.stats().await?) },
                rate::lcore_rates,
                rate::lcore_table,
            )
            .await
        }
        Command::Dropstats => out.show(&c.dropstats().await?, status::dropstats),
        Command::Neigh => out.show(&c.neighbours().await?, |n| status::neighbours(n)),
        Command::Agent => out.show(&c.agent_stats().await?, status::agent),
        Command::Trace(a) => trace::run(a, &c, &out).await,
        Command::Health => out.show(&c.health().await?, status::health),
        Command::Metrics => {
            print!("{}", c.metrics().await?);
            Ok(())
        }
        Command::Events { since, follow } => events(&c, since, follow, out.json).await,
        // Blocking reads on a socket of its own, off the runtime's thread.
        Command::AgentTap(a) => tokio::task::spawn_blocking(move || agent::run(a, out.json))
            .await
            .map_err(|e| anyhow::anyhow!("agent-tap: {e}"))?,
    }
}

/// Prints the changes after `since`; with `follow`, waits for more until interrupted. A reset
/// (vrouterd restarted, or this reader fell too far behind) is said, and reading goes on from
/// the latest revision.
async fn events(c: &Client, mut since: u64, follow: bool, json: bool) -> anyhow::Result<()> {
    let mut epoch: Option<String> = None;
    loop {
        let wait_ms = if follow { 30_000 } else { 0 };
        let page = c.events(since, epoch.as_deref(), wait_ms).await?;
        if page.reset && epoch.is_none() && since == 0 {
            // More changes than are kept: start from the oldest kept.
            since = page
                .revision
                .saturating_sub(control_api::events::RETAINED as u64 - 1);
            epoch = Some(page.epoch);
            continue;
        }
        if page.reset {
            eprintln!(
                "vrouterctl: changes after revision {since} are gone (vrouterd restarted or they \
                 aged out): re-read the state; going on from revision {}",
                page.revision
            );
        }
        for e in &page.events {
            if json {
                println!(
                    "{}",
                    serde_json::json!({"revision": e.revision, "change": e.change})
                );
            } else {
                let op = e.change["op"].as_str().unwrap_or("?").to_owned();
                let mut rest = e.change.clone();
                if let Some(o) = rest.as_object_mut() {
                    o.remove("op");
                }
                println!("{:>8}  {op:<18} {rest}", e.revision);
            }
        }
        use std::io::Write;
        let _ = std::io::stdout().flush();
        since = page.revision;
        epoch = Some(page.epoch);
        if !follow && page.events.len() < control_api::events::PAGE_MAX && !page.reset {
            return Ok(());
        }
        if !follow && page.reset {
            return Ok(());
        }
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("vrouterctl: cannot start: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            match e.downcast_ref::<control_api::Error>() {
                Some(control_api::Error::Api {
                    status,
                    code,
                    message,
                }) => {
                    eprintln!("vrouterctl: {message} ({status} {code})")
                }
                _ => eprintln!("vrouterctl: {e:#}"),
            }
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    use super::*;

    /// `vrouterctl <cmd> --help` says what every subcommand and every argument is for.
    #[test]
    fn every_subcommand_and_argument_has_help() {
        fn walk(cmd: &clap::Command, path: &str, missing: &mut Vec<String>) {
            for arg in cmd.get_arguments() {
                let id = arg.get_id().as_str();
                if !matches!(id, "help" | "version") && arg.get_help().is_none() {
                    missing.push(format!("{path} {id}"));
                }
            }
            for sub in cmd.get_subcommands() {
                let path = format!("{path} {}", sub.get_name());
                if sub.get_about().is_none() {
                    missing.push(path.clone());
                }
                walk(sub, &path, missing);
            }
        }
        let mut missing = Vec::new();
        walk(&Cli::command(), "vrouterctl", &mut missing);
        assert!(missing.is_empty(), "without help text: {missing:?}");
    }
}
