//! `vrouterctl route` and `vrouterctl bridge`: the routes and L2 entries of a VRF.

use clap::Subcommand;
use control_api::api::{BridgeEntry, IpPrefix, MacAddr, Route};
use control_api::Client;

use crate::output::{opt, table, Out};

#[derive(Subcommand)]
pub enum RouteCmd {
    /// Add or replace a route.
    Add {
        /// The VRF to route in.
        #[arg(long)]
        vrf: u32,
        /// Destination prefix, e.g. 198.18.1.2/32 or 2001:db8::/64.
        prefix: IpPrefix,
        /// Nexthop id the route leads to.
        #[arg(long = "nh")]
        nexthop: u32,
        /// MPLS label or VNI pushed toward a tunnel nexthop.
        #[arg(long)]
        label: Option<u32>,
    },
    /// Remove a route.
    Del {
        /// The VRF the route is in.
        #[arg(long)]
        vrf: u32,
        /// Destination prefix.
        prefix: IpPrefix,
    },
    /// List a VRF's routes.
    List {
        /// The VRF to list.
        #[arg(long)]
        vrf: u32,
    },
}

#[derive(Subcommand)]
pub enum BridgeCmd {
    /// Add or replace a bridge entry.
    Add {
        /// The VRF to bridge in.
        #[arg(long)]
        vrf: u32,
        /// Destination MAC.
        mac: MacAddr,
        /// Nexthop id frames to this MAC go to.
        #[arg(long = "nh")]
        nexthop: u32,
        /// MPLS label or VNI pushed toward a tunnel nexthop.
        #[arg(long)]
        label: Option<u32>,
    },
    /// Remove a bridge entry.
    Del {
        /// The VRF the entry is in.
        #[arg(long)]
        vrf: u32,
        /// Destination MAC.
        mac: MacAddr,
    },
    /// List a VRF's bridge entries.
    List {
        /// The VRF to list.
        #[arg(long)]
        vrf: u32,
    },
}

pub async fn run_route(cmd: RouteCmd, c: &Client, out: &Out) -> anyhow::Result<()> {
    match cmd {
        RouteCmd::Add {
            vrf,
            prefix,
            nexthop,
            label,
        } => {
            c.route_set(
                vrf,
                &Route {
                    prefix,
                    nexthop,
                    label,
                },
            )
            .await?;
            out.done(format!("route {prefix} in vrf {vrf} -> nexthop {nexthop}"));
        }
        RouteCmd::Del { vrf, prefix } => {
            c.route_del(vrf, &prefix).await?;
            out.done(format!("route {prefix} in vrf {vrf} removed"));
        }
        RouteCmd::List { vrf } => out.show(&c.routes(vrf).await?, |r| {
            let rows: Vec<Vec<String>> = r
                .iter()
                .map(|r| vec![r.prefix.to_string(), r.nexthop.to_string(), opt(&r.label)])
                .collect();
            table(&["PREFIX", "NEXTHOP", "LABEL"], &rows)
        })?,
    }
    Ok(())
}

pub async fn run_bridge(cmd: BridgeCmd, c: &Client, out: &Out) -> anyhow::Result<()> {
    match cmd {
        BridgeCmd::Add {
            vrf,
            mac,
            nexthop,
            label,
        } => {
            c.bridge_set(
                vrf,
                &BridgeEntry {
                    mac,
                    nexthop,
                    label,
                },
            )
            .await?;
            out.done(format!(
                "bridge entry {mac} in vrf {vrf} -> nexthop {nexthop}"
            ));
        }
        BridgeCmd::Del { vrf, mac } => {
            c.bridge_del(vrf, mac).await?;
            out.done(format!("bridge entry {mac} in vrf {vrf} removed"));
        }
        BridgeCmd::List { vrf } => out.show(&c.bridge(vrf).await?, |b| {
            let rows: Vec<Vec<String>> = b
                .iter()
                .map(|b| vec![b.mac.to_string(), b.nexthop.to_string(), opt(&b.label)])
                .collect();
            table(&["MAC", "NEXTHOP", "LABEL"], &rows)
        })?,
    }
    Ok(())
}
