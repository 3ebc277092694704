//! `vrouterctl link-local`: link-local services (the metadata service at 169.254.169.254:80),
//! reached from every pod and answered by a service on the fabric side.

use std::net::Ipv4Addr;

use clap::Subcommand;
use control_api::api::{LinkLocalService, ServiceProto};
use control_api::Client;

use crate::output::{table, Out};

#[derive(Subcommand)]
pub enum LinkLocalCmd {
    /// Create or replace a link-local service: TCP (or UDP) from any pod to --address:--port
    /// goes to SERVICE_ADDRESS:SERVICE_PORT, routed in the fabric VRF, from the pod's vif's
    /// own link-local address (169.254.1.0 + vif index).
    Set {
        /// Service name.
        name: String,
        /// The service's address and port on the fabric side, ADDRESS:PORT.
        service: String,
        /// The link-local address pods use.
        #[arg(long, default_value_t = LinkLocalService::METADATA)]
        address: Ipv4Addr,
        /// The port pods use.
        #[arg(long, default_value_t = 80)]
        port: u16,
        /// tcp or udp.
        #[arg(long, default_value = "tcp")]
        proto: String,
    },
    /// Remove a link-local service (its flows go).
    Del {
        /// Service name.
        name: String,
    },
    /// List link-local services.
    List,
}

pub async fn run(cmd: LinkLocalCmd, c: &Client, out: &Out) -> anyhow::Result<()> {
    match cmd {
        LinkLocalCmd::Set {
            name,
            service,
            address,
            port,
            proto,
        } => {
            let proto = match proto.as_str() {
                "tcp" => ServiceProto::Tcp,
                "udp" => ServiceProto::Udp,
                other => anyhow::bail!("--proto {other:?}: tcp or udp"),
            };
            let (service_address, service_port) = crate::nat::parse_endpoint(&service)?;
            let s = LinkLocalService {
                address,
                port,
                proto,
                service_address,
                service_port,
            };
            c.link_local_set(&name, &s).await?;
            out.done(format!(
                "link-local service {name} set: {address}:{port} -> {service_address}:{service_port}"
            ));
        }
        LinkLocalCmd::Del { name } => {
            c.link_local_del(&name).await?;
            out.done(format!("link-local service {name} removed"));
        }
        LinkLocalCmd::List => out.show(&c.link_locals().await?, |all| {
            let rows: Vec<Vec<String>> = all
                .iter()
                .map(|l| {
                    let s = l.service;
                    vec![
                        l.name.clone(),
                        format!("{}:{}", s.address, s.port),
                        format!("{:?}", s.proto).to_lowercase(),
                        format!("{}:{}", s.service_address, s.service_port),
                    ]
                })
                .collect();
            table(&["NAME", "ADDRESS", "PROTO", "SERVICE"], &rows)
        })?,
    }
    Ok(())
}
