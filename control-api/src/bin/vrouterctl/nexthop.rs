//! `vrouterctl nh`: nexthops.

use std::net::IpAddr;

use clap::{Subcommand, ValueEnum};
use control_api::api::{MacAddr, Nexthop, TunnelEncap};
use control_api::Client;

use crate::output::{table, Out};

#[derive(Subcommand)]
pub enum NhCmd {
    /// Create or replace a nexthop.
    Set {
        /// Nexthop id.
        id: u32,
        #[command(subcommand)]
        kind: NhKind,
    },
    /// Remove a nexthop nothing uses any more.
    Del {
        /// Nexthop id.
        id: u32,
    },
    /// List nexthops with how many use each.
    List,
    /// Show one nexthop and what uses it.
    Show {
        /// Nexthop id.
        id: u32,
    },
}

#[derive(Subcommand)]
pub enum NhKind {
    /// Deliver to a local vif.
    Encap {
        /// The vif to send out of.
        #[arg(long)]
        vif: String,
        /// Destination MAC written into the frame.
        #[arg(long)]
        dmac: MacAddr,
    },
    /// Tunnel to another node.
    Tunnel {
        /// Encapsulation.
        #[arg(long, value_enum)]
        encap: EncapArg,
        /// The fabric vif the tunnel leaves by.
        #[arg(long)]
        vif: String,
        /// Outer source address (this node's).
        #[arg(long)]
        sip: IpAddr,
        /// Outer destination address (the other node's).
        #[arg(long)]
        dip: IpAddr,
        /// Outer destination MAC (the next hop on the fabric); without it vrouterd resolves
        /// the dip by ARP (`vrouterctl neigh`).
        #[arg(long)]
        dmac: Option<MacAddr>,
        /// The MPLS label (mplsoudp/mplsogre) or VNI (vxlan) this tunnel pushes itself,
        /// instead of the route's (an ECMP member toward a node with its own label).
        #[arg(long)]
        label: Option<u32>,
    },
    /// Spread over members by flow hash.
    Ecmp {
        /// Member nexthop ids, comma-separated.
        #[arg(long, value_delimiter = ',', required = true)]
        members: Vec<u32>,
    },
    /// Drop the packet.
    Discard,
    /// Hand the packet to the vrouter itself (ARP, its own addresses).
    Receive,
}

#[derive(Clone, Copy, ValueEnum)]
pub enum EncapArg {
    Vxlan,
    Mplsoudp,
    Mplsogre,
}

impl NhKind {
    /// The nexthop these options spell.
    fn nexthop(self) -> Nexthop {
        match self {
            NhKind::Encap { vif, dmac } => Nexthop::Encap { vif, dmac },
            NhKind::Tunnel {
                encap,
                vif,
                sip,
                dip,
                dmac,
                label,
            } => Nexthop::Tunnel {
                encap: match encap {
                    EncapArg::Vxlan => TunnelEncap::Vxlan,
                    EncapArg::Mplsoudp => TunnelEncap::Mplsoudp,
                    EncapArg::Mplsogre => TunnelEncap::Mplsogre,
                },
                vif,
                sip,
                dip,
                dmac,
                label,
            },
            NhKind::Ecmp { members } => Nexthop::Ecmp { members },
            NhKind::Discard => Nexthop::Discard,
            NhKind::Receive => Nexthop::Receive,
        }
    }
}

pub async fn run(cmd: NhCmd, c: &Client, out: &Out) -> anyhow::Result<()> {
    match cmd {
        NhCmd::Set { id, kind } => {
            let info = c.nexthop_set(id, &kind.nexthop()).await?;
            out.show(&info, |i| {
                format!(
                    "nexthop {} set: {} {}\n",
                    i.id,
                    i.nexthop.type_name(),
                    nexthop_desc(&i.nexthop)
                )
            })?;
        }
        NhCmd::Del { id } => {
            c.nexthop_del(id).await?;
            out.done(format!("nexthop {id} removed"));
        }
        NhCmd::List => out.show(&c.nexthops().await?, |nhs| {
            let rows: Vec<Vec<String>> = nhs
                .iter()
                .map(|n| {
                    vec![
                        n.id.to_string(),
                        n.nexthop.type_name().into(),
                        nexthop_desc(&n.nexthop),
                        n.use_count.to_string(),
                    ]
                })
                .collect();
            table(&["ID", "TYPE", "DETAIL", "USERS"], &rows)
        })?,
        NhCmd::Show { id } => out.show(&c.nexthop(id).await?, |n| {
            format!(
                "id      {}\ntype    {}\ndetail  {}\nused by {}\n",
                n.id,
                n.nexthop.type_name(),
                nexthop_desc(&n.nexthop),
                if n.used_by.is_empty() {
                    "-".into()
                } else {
                    n.used_by.join(", ")
                }
            )
        })?,
    }
    Ok(())
}

/// A nexthop's fields after its type, in one line.
fn nexthop_desc(nh: &Nexthop) -> String {
    match nh {
        Nexthop::Encap { vif, dmac } => format!("vif {vif} dmac {dmac}"),
        Nexthop::Tunnel {
            encap,
            vif,
            sip,
            dip,
            dmac,
            label,
        } => {
            let mut s = match dmac {
                Some(dmac) => format!("{encap} {sip} -> {dip} via {vif} dmac {dmac}"),
                None => format!("{encap} {sip} -> {dip} via {vif} dmac resolved"),
            };
            if let Some(l) = label {
                s += &format!(" label {l}");
            }
            s
        }
        Nexthop::Ecmp { members } => format!(
            "members {}",
            members
                .iter()
                .map(u32::to_string)
                .collect::<Vec<_>>()
                .join(",")
        ),
        Nexthop::Discard | Nexthop::Receive => String::new(),
    }
}
