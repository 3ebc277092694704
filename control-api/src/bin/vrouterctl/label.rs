//! `vrouterctl mpls` and `vrouterctl vxlan`: what arriving labels and VNIs lead to.

use clap::Subcommand;
use control_api::api::MplsTarget;
use control_api::Client;

use crate::output::{table, Out};

#[derive(Subcommand)]
pub enum MplsCmd {
    /// Map an incoming MPLS label to a nexthop or a VRF (create or replace).
    #[command(group(clap::ArgGroup::new("target").required(true).args(["nexthop", "vrf"])))]
    Set {
        /// The label.
        label: u32,
        /// Nexthop id packets with this label go to (a per-interface label).
        #[arg(long = "nh")]
        nexthop: Option<u32>,
        /// VRF the inner packet is routed in (a per-VRF label, as BGP L3VPN uses).
        #[arg(long)]
        vrf: Option<u32>,
    },
    /// Remove a label.
    Del {
        /// The label.
        label: u32,
    },
    /// List labels and their nexthops.
    List,
}

#[derive(Subcommand)]
pub enum VxlanCmd {
    /// Map an incoming VXLAN VNI to a VRF (create or replace).
    Set {
        /// The VNI.
        vni: u32,
        /// The VRF packets with this VNI are forwarded in.
        #[arg(long)]
        vrf: u32,
    },
    /// Remove a VNI.
    Del {
        /// The VNI.
        vni: u32,
    },
    /// List VNIs and their VRFs.
    List,
}

pub async fn run_mpls(cmd: MplsCmd, c: &Client, out: &Out) -> anyhow::Result<()> {
    match cmd {
        MplsCmd::Set {
            label,
            nexthop,
            vrf,
        } => {
            let (target, what) = match (nexthop, vrf) {
                (Some(nh), _) => (MplsTarget::Nexthop(nh), format!("nexthop {nh}")),
                (None, Some(vrf)) => (MplsTarget::Vrf(vrf), format!("vrf {vrf}")),
                (None, None) => anyhow::bail!("give --nh or --vrf"),
            };
            c.mpls_set_target(label, target).await?;
            out.done(format!("mpls label {label} -> {what}"));
        }
        MplsCmd::Del { label } => {
            c.mpls_del(label).await?;
            out.done(format!("mpls label {label} removed"));
        }
        MplsCmd::List => out.show(&c.mpls().await?, |m| {
            let rows: Vec<Vec<String>> = m
                .iter()
                .map(|m| {
                    let target = match m.target() {
                        Some(MplsTarget::Nexthop(nh)) => format!("nexthop {nh}"),
                        Some(MplsTarget::Vrf(vrf)) => format!("vrf {vrf}"),
                        None => "?".to_string(),
                    };
                    vec![m.label.to_string(), target]
                })
                .collect();
            table(&["LABEL", "TARGET"], &rows)
        })?,
    }
    Ok(())
}

pub async fn run_vxlan(cmd: VxlanCmd, c: &Client, out: &Out) -> anyhow::Result<()> {
    match cmd {
        VxlanCmd::Set { vni, vrf } => {
            c.vxlan_set(vni, vrf).await?;
            out.done(format!("vxlan vni {vni} -> vrf {vrf}"));
        }
        VxlanCmd::Del { vni } => {
            c.vxlan_del(vni).await?;
            out.done(format!("vxlan vni {vni} removed"));
        }
        VxlanCmd::List => out.show(&c.vxlan().await?, |m| {
            let rows: Vec<Vec<String>> = m
                .iter()
                .map(|m| vec![m.vni.to_string(), m.vrf.to_string()])
                .collect();
            table(&["VNI", "VRF"], &rows)
        })?,
    }
    Ok(())
}
