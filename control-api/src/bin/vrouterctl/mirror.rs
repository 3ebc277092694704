//! `vrouterctl mirror`: copies of a vif's packets to an analyzer vif.

use clap::{Subcommand, ValueEnum};
use control_api::api::{
    MacAddr, Mirror, MirrorCollector, MirrorDirection, MirrorFilter, MirrorInfo,
};
use control_api::Client;

use crate::output::Out;

#[derive(Clone, Copy, ValueEnum)]
pub enum DirectionArg {
    Ingress,
    Egress,
    Both,
}

#[derive(Subcommand)]
pub enum MirrorCmd {
    /// Copy a vif's packets to an analyzer vif (replacing the vif's mirror).
    Set {
        /// The mirrored vif.
        vif: String,
        /// The analyzer vif the copies go out of.
        #[arg(
            long,
            required_unless_present = "collector",
            conflicts_with = "collector"
        )]
        to: Option<String>,
        /// A remote collector's IPv4 address: copies go to it over the fabric in VXLAN.
        #[arg(long, requires_all = ["vni", "collector_mac"])]
        collector: Option<std::net::Ipv4Addr>,
        /// The VXLAN VNI the collector's copies carry (names the mirror there).
        #[arg(long)]
        vni: Option<u32>,
        /// The fabric next hop's MAC toward the collector.
        #[arg(long)]
        collector_mac: Option<MacAddr>,
        /// Packets the vif receives, packets sent to it, or both.
        #[arg(long, value_enum, default_value = "both")]
        direction: DirectionArg,
        /// Cut copies to this many bytes (64..=9216).
        #[arg(long)]
        snaplen: Option<u32>,
        /// Copy one packet in this many.
        #[arg(long)]
        sample: Option<u32>,
        /// Only this protocol (tcp, udp, icmp or a number).
        #[arg(long)]
        proto: Option<String>,
        /// Only packets from or to this prefix.
        #[arg(long)]
        cidr: Option<String>,
        /// Only packets from or to these ports ("53" or "1000-2000"; needs --proto tcp or udp).
        #[arg(long)]
        ports: Option<String>,
    },
    /// Show a vif's mirror and the copies it made.
    Show {
        /// The mirrored vif.
        vif: String,
    },
    /// Stop mirroring a vif.
    Del {
        /// The mirrored vif.
        vif: String,
    },
}

pub async fn run(cmd: MirrorCmd, c: &Client, out: &Out) -> anyhow::Result<()> {
    match cmd {
        MirrorCmd::Set {
            vif,
            to,
            collector,
            vni,
            collector_mac,
            direction,
            snaplen,
            sample,
            proto,
            cidr,
            ports,
        } => {
            let filter = MirrorFilter {
                proto: proto
                    .map(|p| serde_json::from_value(word(&p)))
                    .transpose()?,
                cidr: cidr.map(|p| p.parse()).transpose()?,
                ports: ports.map(|p| p.parse()).transpose()?,
            };
            let collector = match (collector, vni, collector_mac) {
                (Some(address), Some(vni), Some(mac)) => {
                    Some(MirrorCollector { address, vni, mac })
                }
                _ => None,
            };
            let m = Mirror {
                to,
                collector,
                direction: match direction {
                    DirectionArg::Ingress => MirrorDirection::Ingress,
                    DirectionArg::Egress => MirrorDirection::Egress,
                    DirectionArg::Both => MirrorDirection::Both,
                },
                snaplen,
                sample,
                filter: (filter != MirrorFilter::default()).then_some(filter),
            };
            let set = c.mirror_set(&vif, &m).await?;
            out.show(&set, |m| format!("{vif} mirrored to {}\n", target(m)))?;
        }
        MirrorCmd::Show { vif } => out.show(&c.mirror(&vif).await?, show)?,
        MirrorCmd::Del { vif } => {
            c.mirror_del(&vif).await?;
            out.done(format!("mirror of {vif} removed"));
        }
    }
    Ok(())
}

/// Where a mirror's copies go, in words.
fn target(m: &Mirror) -> String {
    match (&m.to, &m.collector) {
        (Some(v), _) => v.clone(),
        (None, Some(c)) => format!("collector {} (VXLAN VNI {})", c.address, c.vni),
        (None, None) => "nowhere".into(),
    }
}

/// A protocol as the API takes it: a name as a string, a number as a number.
fn word(p: &str) -> serde_json::Value {
    p.parse::<u8>()
        .map_or_else(|_| serde_json::Value::from(p), serde_json::Value::from)
}

fn show(m: &MirrorInfo) -> String {
    let mut s = format!(
        "to          {}\ndirection   {}\n",
        target(&m.mirror),
        serde_json::to_value(m.mirror.direction)
            .ok()
            .and_then(|v| v.as_str().map(str::to_owned))
            .unwrap_or_default()
    );
    if let Some(n) = m.mirror.snaplen {
        s.push_str(&format!("snaplen     {n}\n"));
    }
    if let Some(n) = m.mirror.sample {
        s.push_str(&format!("sample      1 in {n}\n"));
    }
    if let Some(f) = &m.mirror.filter {
        s.push_str(&format!(
            "filter      {}\n",
            serde_json::to_string(f).unwrap_or_default()
        ));
    }
    s.push_str(&format!(
        "copies      {} ({} found no buffer, {} skipped: analyzer full)\n",
        m.copies, m.copy_failures, m.copies_skipped
    ));
    s
}
