//! `vrouterctl agent-tap`: an example agent on vrouterd's pkt0 socket (`--agent-socket`). It
//! prints every packet vrouterd hands to the agent (reason, vif, VRF, the flow's tuple) and,
//! with `--allow` or `--deny`, decides each trapped new flow that way (an allowed flow's
//! packet is injected back, so it is delivered too).

use std::path::PathBuf;

use anyhow::Context;
use control_api::pkt0::{Connection, FlowTuple, Message, Reason, Verdict};

#[derive(clap::Args)]
pub struct AgentTapArgs {
    /// vrouterd's agent socket.
    #[arg(long, default_value = "/var/run/vrouter/pkt0.sock")]
    agent_socket: PathBuf,
    /// Allow every trapped new flow (and deliver its first packet).
    #[arg(long, conflicts_with = "deny")]
    allow: bool,
    /// Deny every trapped new flow.
    #[arg(long)]
    deny: bool,
    /// Stop after this many packets (0: until interrupted).
    #[arg(long, default_value_t = 0)]
    count: u64,
}

pub fn run(a: AgentTapArgs, json: bool) -> anyhow::Result<()> {
    let mut c = Connection::connect(&a.agent_socket)
        .with_context(|| format!("connecting to {}", a.agent_socket.display()))?;
    let mut seen = 0u64;
    while a.count == 0 || seen < a.count {
        let m = match c.recv() {
            Ok(m) => m,
            Err(e) if e.kind() == std::io::ErrorKind::InvalidData => {
                eprintln!("vrouterctl: skipped a message: {e}");
                continue;
            }
            Err(e) => return Err(e).context("reading pkt0"),
        };
        let Message::Trap {
            reason,
            vif,
            vrf,
            frame,
            ..
        } = m
        else {
            eprintln!("vrouterctl: vrouterd sent a non-trap message: {m:?}");
            continue;
        };
        seen += 1;
        let tuple = FlowTuple::of_frame(&frame);
        let decided = match (reason, tuple) {
            (Reason::NewFlow, Some(t)) if a.allow || a.deny => {
                c.send(&Message::Verdict(Verdict {
                    vif,
                    vrf,
                    allow: a.allow,
                    tuple: t,
                }))?;
                if a.allow {
                    c.send(&Message::Inject {
                        vif,
                        frame: frame.clone(),
                    })?;
                }
                Some(if a.allow { "allow" } else { "deny" })
            }
            _ => None,
        };
        if json {
            let t = tuple.map(|t| {
                serde_json::json!({"proto": t.proto, "src": t.src, "dst": t.dst,
                    "sport": t.sport, "dport": t.dport})
            });
            println!(
                "{}",
                serde_json::json!({"reason": reason.name(), "vif": vif, "vrf": vrf,
                    "length": frame.len(), "flow": t, "verdict": decided})
            );
        } else {
            let flow = tuple.map_or_else(
                || "-".to_owned(),
                |t| format!("{} {}:{} > {}:{}", t.proto, t.src, t.sport, t.dst, t.dport),
            );
            println!(
                "{:<9} vif {vif:<4} vrf {vrf:<4} {:>5} B  {flow}{}",
                reason.name(),
                frame.len(),
                decided.map_or(String::new(), |d| format!("  -> {d}"))
            );
        }
        use std::io::Write;
        let _ = std::io::stdout().flush();
    }
    Ok(())
}
