//! `vrouterctl vif`: virtual interfaces.

use std::net::{Ipv4Addr, Ipv6Addr};
use std::path::PathBuf;

use clap::{Args, Subcommand, ValueEnum};
use control_api::api::{MacAddr, StaticRoute, VhostUserMode, VifInfo, VifRequest, VifType};
use control_api::Client;

use crate::output::{opt, table, Out};

#[derive(Subcommand)]
pub enum VifCmd {
    /// Add a vif; which options it needs depends on --type.
    Add(Box<VifAdd>),
    /// Remove a vif (and, in server mode, its socket).
    Del {
        /// The vif's name.
        name: String,
    },
    /// List vifs with their state and packet counters.
    List {
        /// Per-second rates instead of totals, refreshed in place (`--json`: a line per
        /// refresh).
        #[arg(long)]
        rate: bool,
        #[command(flatten)]
        refresh: crate::rate::Refresh,
    },
    /// Show one vif in full.
    Show {
        /// The vif's name.
        name: String,
    },
    /// Serve a vhost-user vif's queue pair on a forwarding lcore from now on (moved there at
    /// once if it is up elsewhere; kept across restarts with --state-dir).
    Pin {
        /// The vif's name.
        name: String,
        /// The queue pair (0 to queues - 1).
        queue: u32,
        /// A forwarding lcore (one of vrouterd's --fwd-lcores).
        lcore: u32,
    },
}

#[derive(Clone, Copy, ValueEnum)]
enum TypeArg {
    VhostUser,
    Physical,
    AfPacket,
    Tap,
}

#[derive(Clone, Copy, ValueEnum)]
enum ModeArg {
    Server,
    Client,
}

#[derive(Args)]
pub struct VifAdd {
    /// The vif's name, unique among vifs.
    name: String,
    /// What the vif attaches to: a pod (vhost-user), a NIC (physical) or a kernel interface.
    #[arg(long = "type", value_enum)]
    vif_type: TypeArg,
    /// The VRF it belongs to.
    #[arg(long)]
    vrf: u32,
    /// The MAC of the interface behind the vif (for vhost-user, the pod's).
    #[arg(long)]
    mac: MacAddr,
    /// The IPv4 address behind the vif.
    #[arg(long)]
    ip: Option<Ipv4Addr>,
    /// The IPv6 address behind the vif (needs an MTU of at least 1280).
    #[arg(long)]
    ip6: Option<Ipv6Addr>,
    /// The vif's MTU (vrouterd's default when not given).
    #[arg(long)]
    mtu: Option<u32>,
    /// vhost-user: the pod's socket directory (below vrouterd's --socket-base).
    #[arg(long)]
    socket_dir: Option<PathBuf>,
    /// vhost-user: the socket's file name.
    #[arg(long)]
    socket_file: Option<String>,
    /// vhost-user: the vrouter's role on the socket.
    #[arg(long, value_enum)]
    mode: Option<ModeArg>,
    /// vhost-user: group owning created directories (mode 0750).
    #[arg(long)]
    socket_group: Option<String>,
    /// vhost-user: how many queue pairs the vif offers.
    #[arg(long)]
    queues: Option<u32>,
    /// physical: PCI address, DPDK vdev string, or kernel:IFACE (a kernel interface on
    /// vrouterd's own AF_PACKET port).
    #[arg(long)]
    device: Option<String>,
    /// af-packet/tap: kernel interface.
    #[arg(long)]
    iface: Option<String>,
    /// DHCP: the prefix length of --ip's subnet; with it the vif answers DHCP with --ip.
    #[arg(long)]
    prefix_len: Option<u8>,
    /// DHCP: the pod's gateway (default: the subnet's first address).
    #[arg(long)]
    gateway: Option<Ipv4Addr>,
    /// DHCP: a DNS server (repeat for more, at most 4).
    #[arg(long = "dns")]
    dns: Vec<Ipv4Addr>,
    /// DHCP: a classless static route, PREFIX=VIA (e.g. 203.0.113.0/24=198.18.1.1; repeat).
    #[arg(long = "static-route", value_parser = parse_static_route)]
    static_routes: Vec<StaticRoute>,
    /// DHCP: the lease time in seconds (default 86400).
    #[arg(long)]
    lease_time: Option<u32>,
}

/// `PREFIX=VIA`.
fn parse_static_route(s: &str) -> Result<StaticRoute, String> {
    let (prefix, via) = s
        .split_once('=')
        .ok_or_else(|| format!("{s:?}: expected PREFIX=VIA, e.g. 203.0.113.0/24=198.18.1.1"))?;
    Ok(StaticRoute {
        prefix: prefix.parse().map_err(|e| format!("{prefix:?}: {e}"))?,
        via: via.parse().map_err(|e| format!("{via:?}: {e}"))?,
    })
}

impl VifAdd {
    /// The API request these options spell.
    fn request(self) -> VifRequest {
        let vif_type = match self.vif_type {
            TypeArg::VhostUser => VifType::VhostUser,
            TypeArg::Physical => VifType::Physical,
            TypeArg::AfPacket => VifType::AfPacket,
            TypeArg::Tap => VifType::Tap,
        };
        let mut req = VifRequest::new(&self.name, vif_type, self.vrf, self.mac);
        req.ip = self.ip;
        req.ip6 = self.ip6;
        req.mtu = self.mtu;
        req.vhostsocket_dir = self.socket_dir;
        req.vhostsocket_filename = self.socket_file;
        req.vhostuser_mode = self.mode.map(|m| match m {
            ModeArg::Server => VhostUserMode::Server,
            ModeArg::Client => VhostUserMode::Client,
        });
        req.vhostsocket_group = self.socket_group;
        req.queues = self.queues;
        req.device = self.device;
        req.iface = self.iface;
        req.prefix_len = self.prefix_len;
        req.gateway = self.gateway;
        req.dns_servers = self.dns;
        req.static_routes = self.static_routes;
        req.lease_time = self.lease_time;
        req
    }
}

pub async fn run(cmd: VifCmd, c: &Client, out: &Out) -> anyhow::Result<()> {
    match cmd {
        VifCmd::Add(a) => {
            let v = c.vif_add(&a.request()).await?;
            out.show(&v, |v| {
                format!(
                    "vif {} added: index {}, state {}{}\n",
                    v.config.name,
                    v.index,
                    v.status.state,
                    v.socket
                        .as_ref()
                        .map(|s| format!(", socket {}", s.display()))
                        .unwrap_or_default()
                )
            })?;
        }
        VifCmd::Del { name } => {
            c.vif_del(&name).await?;
            out.done(format!("vif {name} removed"));
        }
        VifCmd::List { rate: false, .. } => out.show(&c.vifs().await?, |v| vif_rows(v))?,
        VifCmd::List {
            rate: true,
            refresh,
        } => {
            crate::rate::watch(
                refresh,
                out.json,
                || async { Ok(c.vifs().await?) },
                |a: &Vec<_>, b: &Vec<_>, secs| crate::rate::vif_rates(a, b, secs),
                crate::rate::vif_table,
            )
            .await?
        }
        VifCmd::Show { name } => out.show(&c.vif(&name).await?, vif_detail)?,
        VifCmd::Pin { name, queue, lcore } => {
            c.queue_pin(&name, queue, lcore).await?;
            out.done(format!("vif {name} queue {queue} pinned to lcore {lcore}"));
        }
    }
    Ok(())
}

fn vif_rows(vifs: &[VifInfo]) -> String {
    let rows: Vec<Vec<String>> = vifs
        .iter()
        .map(|v| {
            vec![
                v.index.to_string(),
                v.config.name.clone(),
                v.config.vif_type.to_string(),
                v.config.vrf.to_string(),
                v.config.mac.to_string(),
                opt(&v.config.ip),
                v.status.state.to_string(),
                opt(&v.status.lcore),
                v.status.counters.rx_packets.to_string(),
                v.status.counters.tx_packets.to_string(),
                v.status.counters.drops.to_string(),
                v.socket
                    .as_ref()
                    .map(|p| p.display().to_string())
                    .or_else(|| v.config.iface.clone())
                    .or_else(|| v.config.device.clone())
                    .unwrap_or_default(),
            ]
        })
        .collect();
    table(
        &[
            "INDEX",
            "NAME",
            "TYPE",
            "VRF",
            "MAC",
            "IP",
            "STATE",
            "LCORE",
            "RX_PKTS",
            "TX_PKTS",
            "DROPS",
            "ATTACHMENT",
        ],
        &rows,
    )
}

fn vif_detail(v: &VifInfo) -> String {
    let mut rows = vec![
        ("name", v.config.name.clone()),
        ("index", v.index.to_string()),
        ("type", v.config.vif_type.to_string()),
        ("vrf", v.config.vrf.to_string()),
        ("mac", v.config.mac.to_string()),
        ("ip", opt(&v.config.ip)),
        ("ip6", opt(&v.config.ip6)),
        ("mtu", opt(&v.config.mtu)),
        ("state", v.status.state.to_string()),
        ("lcore", opt(&v.status.lcore)),
        (
            "features",
            v.status.features.map_or("-".into(), |f| format!("{f:#x}")),
        ),
        (
            "queues",
            format!(
                "{} enabled of {}",
                v.status.queues_enabled,
                opt(&v.config.queues)
            ),
        ),
        ("vrouter_mac", v.vrouter_mac.to_string()),
    ];
    if !v.status.queue_pairs.is_empty() {
        let pairs: Vec<String> = v
            .status
            .queue_pairs
            .iter()
            .map(|q| {
                format!(
                    "{}: lcore {}{} (rx {}, tx {})",
                    q.queue,
                    q.lcore,
                    if q.pinned { " pinned" } else { "" },
                    q.rx_packets,
                    q.tx_packets
                )
            })
            .collect();
        rows.push(("queue_pairs", pairs.join("; ")));
    }
    if let Some(s) = &v.socket {
        rows.push(("socket", s.display().to_string()));
        rows.push(("mode", opt(&v.config.vhostuser_mode)));
    }
    if let Some(i) = &v.config.iface {
        rows.push(("iface", i.clone()));
    }
    if let Some(d) = &v.config.device {
        rows.push(("device", d.clone()));
    }
    if let (Some(ip), Some(len)) = (v.config.ip, v.config.prefix_len) {
        let join = |items: Vec<String>| {
            if items.is_empty() {
                "-".to_string()
            } else {
                items.join(", ")
            }
        };
        rows.push(("dhcp", format!("{ip}/{len} via {}", opt(&v.config.gateway))));
        rows.push((
            "dns",
            join(v.config.dns_servers.iter().map(|d| d.to_string()).collect()),
        ));
        rows.push((
            "routes",
            join(
                v.config
                    .static_routes
                    .iter()
                    .map(|r| format!("{} via {}", r.prefix, r.via))
                    .collect(),
            ),
        ));
        rows.push(("lease", format!("{} s", opt(&v.config.lease_time))));
    }
    let c = v.status.counters;
    rows.push((
        "rx",
        format!("{} packets, {} bytes", c.rx_packets, c.rx_bytes),
    ));
    rows.push((
        "tx",
        format!("{} packets, {} bytes", c.tx_packets, c.tx_bytes),
    ));
    rows.push(("drops", c.drops.to_string()));
    rows.iter().map(|(k, v)| format!("{k:<12} {v}\n")).collect()
}
