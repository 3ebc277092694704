//! `vrouterctl vrf`: VRFs.

use clap::Subcommand;
use control_api::Client;

use crate::output::{table, Out};

#[derive(Subcommand)]
pub enum VrfCmd {
    /// Create a VRF (succeeds if it exists already).
    Add {
        /// VRF number.
        vrf: u32,
    },
    /// Remove a VRF no vif, route or bridge entry uses any more (not VRF 0).
    Del {
        /// VRF number.
        vrf: u32,
    },
    /// List VRFs with how many vifs, routes and bridge entries each has.
    List,
}

pub async fn run(cmd: VrfCmd, c: &Client, out: &Out) -> anyhow::Result<()> {
    match cmd {
        VrfCmd::Add { vrf } => {
            c.vrf_add(vrf).await?;
            out.done(format!("vrf {vrf} present"));
        }
        VrfCmd::Del { vrf } => {
            c.vrf_del(vrf).await?;
            out.done(format!("vrf {vrf} removed"));
        }
        VrfCmd::List => out.show(&c.vrfs().await?, |v| {
            let rows: Vec<Vec<String>> = v
                .iter()
                .map(|v| {
                    vec![
                        v.vrf.to_string(),
                        v.vifs.to_string(),
                        v.routes.to_string(),
                        v.bridge_entries.to_string(),
                    ]
                })
                .collect();
            table(&["VRF", "VIFS", "ROUTES", "BRIDGE"], &rows)
        })?,
    }
    Ok(())
}
