//! `vrouterctl vrf`: VRFs and their routing identity.

use clap::Subcommand;
use control_api::api::VrfRouting;
use control_api::Client;

use crate::output::{opt, table, Out};

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
    /// List VRFs with how many vifs, routes and bridge entries each has, and their routing
    /// identity.
    List,
    /// Set a VRF's routing identity on the fabric, as a BGP control plane advertises it.
    Routing {
        /// VRF number.
        vrf: u32,
        /// Route distinguisher: ASN:N or IPv4:N.
        #[arg(long)]
        rd: String,
        /// Route target of routes installed in the VRF (repeat for more).
        #[arg(long = "import", required = true)]
        import_targets: Vec<String>,
        /// Route target the VRF's routes are advertised with (repeat for more).
        #[arg(long = "export", required = true)]
        export_targets: Vec<String>,
        /// VXLAN VNI the VRF's traffic arrives with.
        #[arg(long)]
        vni: Option<u32>,
        /// MPLS label the VRF's traffic arrives with.
        #[arg(long)]
        label: Option<u32>,
    },
    /// Remove a VRF's routing identity.
    RoutingDel {
        /// VRF number.
        vrf: u32,
    },
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
        VrfCmd::Routing {
            vrf,
            rd,
            import_targets,
            export_targets,
            vni,
            label,
        } => {
            let r = VrfRouting {
                rd,
                import_targets,
                export_targets,
                vni,
                label,
            };
            c.vrf_routing_set(vrf, &r).await?;
            out.done(format!("vrf {vrf} routing identity set (rd {})", r.rd));
        }
        VrfCmd::RoutingDel { vrf } => {
            c.vrf_routing_del(vrf).await?;
            out.done(format!("vrf {vrf} routing identity removed"));
        }
        VrfCmd::List => out.show(&c.vrfs().await?, |v| {
            let rows: Vec<Vec<String>> = v
                .iter()
                .map(|v| {
                    let r = v.routing.as_ref();
                    vec![
                        v.vrf.to_string(),
                        v.vifs.to_string(),
                        v.routes.to_string(),
                        v.bridge_entries.to_string(),
                        r.map_or("-".into(), |r| r.rd.clone()),
                        r.map_or("-".into(), |r| r.import_targets.join(",")),
                        r.map_or("-".into(), |r| r.export_targets.join(",")),
                        opt(&r.and_then(|r| r.vni)),
                        opt(&r.and_then(|r| r.label)),
                    ]
                })
                .collect();
            table(
                &[
                    "VRF", "VIFS", "ROUTES", "BRIDGE", "RD", "IMPORT", "EXPORT", "VNI", "LABEL",
                ],
                &rows,
            )
        })?,
    }
    Ok(())
}
