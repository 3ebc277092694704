//! `vrouterctl nat`: source-NAT pools, the VRFs attached to them, floating IPs, service VIPs.

use std::net::{IpAddr, Ipv4Addr};

use anyhow::Context;
use clap::Subcommand;
use control_api::api::{
    FloatingIp, NatPool, NatPorts, Service, ServiceBackend, ServiceBalance, ServiceProto,
};
use control_api::Client;

use crate::output::{table, Out};

#[derive(Subcommand)]
pub enum NatCmd {
    /// Create or replace a pool: addresses FIRST..=LAST (IPv4, or IPv6 for NAT66) in VRF
    /// --vrf, each with --ports.
    PoolSet {
        /// Pool name.
        name: String,
        /// The VRF the addresses live in (where translated flows leave to), usually 0.
        #[arg(long, default_value_t = 0)]
        vrf: u32,
        /// First address.
        first: IpAddr,
        /// Last address (default: FIRST), of FIRST's family.
        last: Option<IpAddr>,
        /// Ports handed out, FIRST-LAST.
        #[arg(long, default_value = "1024-65535")]
        ports: String,
    },
    /// Remove a pool no VRF is attached to.
    PoolDel {
        /// Pool name.
        name: String,
    },
    /// List pools with their use and attached VRFs.
    Pools,
    /// Attach a VRF to source NAT: its flows toward the pool's VRF leave from the pool.
    Attach {
        /// The VRF whose flows are translated.
        vrf: u32,
        /// The pool they take addresses and ports from.
        pool: String,
    },
    /// Detach a VRF: its translated flows go, new ones leave untranslated.
    Detach {
        /// The attached VRF.
        vrf: u32,
    },
    /// Map a fabric address 1:1 to a pod address of a VRF (IPv4 to IPv4 or IPv6 to IPv6).
    FipSet {
        /// The fabric address.
        address: IpAddr,
        /// The pod's VRF.
        #[arg(long)]
        vrf: u32,
        /// The pod's address.
        #[arg(long)]
        ip: IpAddr,
    },
    /// Remove a floating IP.
    FipDel {
        /// The fabric address.
        address: IpAddr,
    },
    /// List floating IPs.
    Fips,
    /// Create a service VIP or change its backends: flows to VIP (ADDRESS:PORT) in --vrf go
    /// to one of BACKENDS (ADDRESS:PORT each), one per flow.
    SvcSet {
        /// Service name.
        name: String,
        /// The VRF of the VIP and its backends.
        #[arg(long)]
        vrf: u32,
        /// tcp or udp.
        #[arg(long, default_value = "tcp")]
        proto: String,
        /// The VIP, ADDRESS:PORT (IPv6: [ADDRESS]:PORT).
        vip: String,
        /// The backends, ADDRESS:PORT each, of the VIP's address family.
        #[arg(required = true)]
        backends: Vec<String>,
        /// How a new flow's backend is picked: hash (the flow's) or least-flows.
        #[arg(long, default_value = "hash")]
        balance: String,
    },
    /// Remove a service VIP (its flows go).
    SvcDel {
        /// Service name.
        name: String,
    },
    /// List service VIPs with each backend's flows.
    Svcs,
}

pub fn parse_endpoint(s: &str) -> anyhow::Result<(Ipv4Addr, u16)> {
    let (a, p) = s
        .rsplit_once(':')
        .with_context(|| format!("{s:?}: expected ADDRESS:PORT"))?;
    let addr = a
        .parse()
        .with_context(|| format!("{s:?}: bad IPv4 address"))?;
    let port = p.parse().with_context(|| format!("{s:?}: bad port"))?;
    Ok((addr, port))
}

/// `ADDRESS:PORT` for IPv4, `[ADDRESS]:PORT` for IPv6.
pub fn parse_ip_endpoint(s: &str) -> anyhow::Result<(std::net::IpAddr, u16)> {
    let a: std::net::SocketAddr = s
        .parse()
        .with_context(|| format!("{s:?}: expected ADDRESS:PORT or [IPV6-ADDRESS]:PORT"))?;
    Ok((a.ip(), a.port()))
}

fn parse_ports(s: &str) -> anyhow::Result<NatPorts> {
    let (a, z) = s.split_once('-').unwrap_or((s, s));
    let first = a
        .trim()
        .parse()
        .with_context(|| format!("--ports {s:?}: bad first port"))?;
    let last = z
        .trim()
        .parse()
        .with_context(|| format!("--ports {s:?}: bad last port"))?;
    Ok(NatPorts { first, last })
}

pub async fn run(cmd: NatCmd, c: &Client, out: &Out) -> anyhow::Result<()> {
    match cmd {
        NatCmd::PoolSet {
            name,
            vrf,
            first,
            last,
            ports,
        } => {
            let pool = NatPool {
                vrf,
                first,
                last: last.unwrap_or(first),
                ports: parse_ports(&ports)?,
            };
            let p = c.nat_pool_set(&name, &pool).await?;
            out.done(format!(
                "nat pool {name} set: {}-{} in vrf {}, ports {}-{} ({} pairs)",
                p.first, p.last, p.vrf, p.ports.first, p.ports.last, p.capacity
            ));
        }
        NatCmd::PoolDel { name } => {
            c.nat_pool_del(&name).await?;
            out.done(format!("nat pool {name} removed"));
        }
        NatCmd::Pools => out.show(&c.nat_pools().await?, |pools| {
            let rows: Vec<Vec<String>> = pools
                .iter()
                .map(|p| {
                    vec![
                        p.name.clone(),
                        p.vrf.to_string(),
                        format!("{}-{}", p.first, p.last),
                        format!("{}-{}", p.ports.first, p.ports.last),
                        format!("{}/{}", p.in_use, p.capacity),
                        p.exhausted.to_string(),
                        p.attached
                            .iter()
                            .map(u32::to_string)
                            .collect::<Vec<_>>()
                            .join(","),
                    ]
                })
                .collect();
            table(
                &[
                    "POOL",
                    "VRF",
                    "ADDRESSES",
                    "PORTS",
                    "IN_USE",
                    "EXHAUSTED",
                    "ATTACHED",
                ],
                &rows,
            )
        })?,
        NatCmd::Attach { vrf, pool } => {
            c.snat_set(vrf, &pool).await?;
            out.done(format!("vrf {vrf} leaves through nat pool {pool}"));
        }
        NatCmd::Detach { vrf } => {
            c.snat_del(vrf).await?;
            out.done(format!("vrf {vrf} detached from source nat"));
        }
        NatCmd::FipSet { address, vrf, ip } => {
            c.floating_ip_set(address, &FloatingIp { vrf, ip }).await?;
            out.done(format!("floating ip {address} is {ip} in vrf {vrf}"));
        }
        NatCmd::FipDel { address } => {
            c.floating_ip_del(address).await?;
            out.done(format!("floating ip {address} removed"));
        }
        NatCmd::Fips => out.show(&c.floating_ips().await?, |fips| {
            let rows: Vec<Vec<String>> = fips
                .iter()
                .map(|f| vec![f.address.to_string(), f.vrf.to_string(), f.ip.to_string()])
                .collect();
            table(&["FLOATING_IP", "VRF", "IP"], &rows)
        })?,
        NatCmd::SvcSet {
            name,
            vrf,
            proto,
            vip,
            backends,
            balance,
        } => {
            let balance = match balance.as_str() {
                "hash" => ServiceBalance::Hash,
                "least-flows" => ServiceBalance::LeastFlows,
                other => anyhow::bail!("--balance {other:?}: hash or least-flows"),
            };
            let proto = match proto.as_str() {
                "tcp" => ServiceProto::Tcp,
                "udp" => ServiceProto::Udp,
                other => anyhow::bail!("--proto {other:?}: tcp or udp"),
            };
            let (address, port) = parse_ip_endpoint(&vip)?;
            let backends = backends
                .iter()
                .map(|b| {
                    parse_ip_endpoint(b).map(|(address, port)| ServiceBackend { address, port })
                })
                .collect::<anyhow::Result<Vec<_>>>()?;
            let s = Service {
                vrf,
                address,
                port,
                proto,
                backends,
                balance,
            };
            let got = c.service_set(&name, &s).await?;
            out.done(format!(
                "service {name} set: {} in vrf {vrf}, {} backends",
                std::net::SocketAddr::new(address, port),
                got.backends.len()
            ));
        }
        NatCmd::SvcDel { name } => {
            c.service_del(&name).await?;
            out.done(format!("service {name} removed"));
        }
        NatCmd::Svcs => out.show(&c.services().await?, |svcs| {
            let rows: Vec<Vec<String>> = svcs
                .iter()
                .map(|s| {
                    vec![
                        s.name.clone(),
                        s.vrf.to_string(),
                        std::net::SocketAddr::new(s.address, s.port).to_string(),
                        format!("{:?}", s.proto).to_lowercase(),
                        match s.balance {
                            ServiceBalance::Hash => "hash".to_string(),
                            ServiceBalance::LeastFlows => "least-flows".to_string(),
                        },
                        s.backends
                            .iter()
                            .map(|b| {
                                format!(
                                    "{}={}",
                                    std::net::SocketAddr::new(b.address, b.port),
                                    b.flows
                                )
                            })
                            .collect::<Vec<_>>()
                            .join(","),
                    ]
                })
                .collect();
            table(
                &[
                    "SERVICE",
                    "VRF",
                    "VIP",
                    "PROTO",
                    "BALANCE",
                    "BACKENDS(FLOWS)",
                ],
                &rows,
            )
        })?,
    }
    Ok(())
}
