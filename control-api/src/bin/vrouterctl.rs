//! `vrouterctl`: drive vrouterd over its control socket. Human tables by default, `--json` for
//! the raw answers.

use std::io::Read;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{bail, Context};
use clap::{Args, Parser, Subcommand, ValueEnum};
use control_api::api::{
    BridgeEntry, FlowQuery, IpPrefix, MacAddr, Nexthop, Policy, PolicyAction, PolicyRule, Proto,
    Route, TunnelEncap, VhostUserMode, VifInfo, VifRequest, VifType,
};
use control_api::Client;
use serde::Serialize;

#[derive(Parser)]
#[command(
    name = "vrouterctl",
    version,
    about = "Drive vrouterd over its REST control socket"
)]
struct Cli {
    /// vrouterd's control socket.
    #[arg(
        long,
        global = true,
        env = "VROUTER_SOCKET",
        default_value = "/var/run/vrouter/vrouter.sock"
    )]
    socket: PathBuf,
    /// Print the raw JSON answers instead of tables.
    #[arg(long, global = true)]
    json: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// VRFs (routing instances; 0 is the fabric).
    #[command(subcommand)]
    Vrf(VrfCmd),
    /// Virtual interfaces: pods (vhost-user), kernel interfaces, the fabric NIC.
    #[command(subcommand)]
    Vif(VifCmd),
    /// Nexthops.
    #[command(subcommand, name = "nh")]
    Nh(NhCmd),
    /// Routes of a VRF.
    #[command(subcommand)]
    Route(RouteCmd),
    /// L2 (bridge) entries of a VRF.
    #[command(subcommand)]
    Bridge(BridgeCmd),
    /// Incoming MPLS labels.
    #[command(subcommand)]
    Mpls(MplsCmd),
    /// Incoming VXLAN VNIs.
    #[command(subcommand)]
    Vxlan(VxlanCmd),
    /// Per-vif security policy.
    #[command(subcommand)]
    Policy(PolicyCmd),
    /// The flow table.
    #[command(subcommand)]
    Flows(FlowsCmd),
    /// Packet counters, total and per lcore.
    Stats,
    /// Drops per reason.
    Dropstats,
    /// Mempools, rings, lcores and vif states.
    Health,
    /// Counters in Prometheus text format.
    Metrics,
}

#[derive(Subcommand)]
enum VrfCmd {
    Add { vrf: u32 },
    Del { vrf: u32 },
    List,
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
struct VifAdd {
    name: String,
    #[arg(long = "type", value_enum)]
    vif_type: TypeArg,
    #[arg(long)]
    vrf: u32,
    #[arg(long)]
    mac: MacAddr,
    #[arg(long)]
    ip: Option<Ipv4Addr>,
    #[arg(long)]
    ip6: Option<Ipv6Addr>,
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
    #[arg(long)]
    queues: Option<u32>,
    /// physical: PCI address or DPDK vdev string.
    #[arg(long)]
    device: Option<String>,
    /// af-packet/tap: kernel interface.
    #[arg(long)]
    iface: Option<String>,
}

#[derive(Subcommand)]
enum VifCmd {
    Add(Box<VifAdd>),
    Del { name: String },
    List,
    Show { name: String },
}

#[derive(Subcommand)]
enum NhKind {
    /// Deliver to a local vif.
    Encap {
        #[arg(long)]
        vif: String,
        #[arg(long)]
        dmac: MacAddr,
    },
    /// Tunnel to another node.
    Tunnel {
        #[arg(long, value_enum)]
        encap: EncapArg,
        #[arg(long)]
        vif: String,
        #[arg(long)]
        sip: IpAddr,
        #[arg(long)]
        dip: IpAddr,
        #[arg(long)]
        dmac: MacAddr,
    },
    /// Spread over members by flow hash.
    Ecmp {
        #[arg(long, value_delimiter = ',', required = true)]
        members: Vec<u32>,
    },
    Discard,
    Receive,
}

#[derive(Clone, Copy, ValueEnum)]
enum EncapArg {
    Vxlan,
    Mplsoudp,
    Mplsogre,
}

#[derive(Subcommand)]
enum NhCmd {
    Set {
        id: u32,
        #[command(subcommand)]
        kind: NhKind,
    },
    Del {
        id: u32,
    },
    List,
    Show {
        id: u32,
    },
}

#[derive(Subcommand)]
enum RouteCmd {
    Add {
        #[arg(long)]
        vrf: u32,
        prefix: IpPrefix,
        #[arg(long = "nh")]
        nexthop: u32,
        #[arg(long)]
        label: Option<u32>,
    },
    Del {
        #[arg(long)]
        vrf: u32,
        prefix: IpPrefix,
    },
    List {
        #[arg(long)]
        vrf: u32,
    },
}

#[derive(Subcommand)]
enum BridgeCmd {
    Add {
        #[arg(long)]
        vrf: u32,
        mac: MacAddr,
        #[arg(long = "nh")]
        nexthop: u32,
        #[arg(long)]
        label: Option<u32>,
    },
    Del {
        #[arg(long)]
        vrf: u32,
        mac: MacAddr,
    },
    List {
        #[arg(long)]
        vrf: u32,
    },
}

#[derive(Subcommand)]
enum MplsCmd {
    Set {
        label: u32,
        #[arg(long = "nh")]
        nexthop: u32,
    },
    Del {
        label: u32,
    },
    List,
}

#[derive(Subcommand)]
enum VxlanCmd {
    Set {
        vni: u32,
        #[arg(long)]
        vrf: u32,
    },
    Del {
        vni: u32,
    },
    List,
}

#[derive(Clone, Copy, ValueEnum)]
enum ActionArg {
    Allow,
    Deny,
}

#[derive(Subcommand)]
enum PolicyCmd {
    /// Set a vif's policy from a JSON file (`-` = stdin) or from rules on the command line.
    Set {
        vif: String,
        /// A JSON policy document ({"default","ingress","egress"}).
        #[arg(long, conflicts_with_all = ["default", "ingress", "egress"])]
        file: Option<PathBuf>,
        #[arg(long, value_enum)]
        default: Option<ActionArg>,
        /// "ACTION [PROTO] [CIDR] [PORTS]", e.g. "allow tcp 198.18.0.0/15 80-90"; repeatable.
        #[arg(long)]
        ingress: Vec<String>,
        /// Same syntax as --ingress.
        #[arg(long)]
        egress: Vec<String>,
    },
    Show {
        vif: String,
    },
    Del {
        vif: String,
    },
}

#[derive(Subcommand)]
enum FlowsCmd {
    List {
        #[arg(long)]
        vrf: Option<u32>,
        #[arg(long)]
        limit: Option<u32>,
        #[arg(long)]
        cursor: Option<String>,
        /// Follow cursors to the end.
        #[arg(long)]
        all: bool,
    },
    Flush,
    Stats,
}

/// A plain text table with columns as wide as their widest cell.
fn table(headers: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = headers.iter().map(|h| h.len()).collect();
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.len());
        }
    }
    let line = |cells: Vec<&str>| {
        let mut s = String::new();
        for (i, (cell, w)) in cells.iter().zip(&widths).enumerate() {
            if i + 1 == widths.len() {
                s.push_str(cell);
            } else {
                s.push_str(&format!("{cell:<w$}  "));
            }
        }
        s.trim_end().to_string()
    };
    let mut out = line(headers.to_vec());
    out.push('\n');
    for row in rows {
        out.push_str(&line(row.iter().map(String::as_str).collect()));
        out.push('\n');
    }
    out
}

fn opt<T: ToString>(v: &Option<T>) -> String {
    v.as_ref().map_or("-".to_string(), T::to_string)
}

fn parse_rule(text: &str) -> anyhow::Result<PolicyRule> {
    let mut words = text.split_whitespace();
    let action = match words.next() {
        Some("allow") => PolicyAction::Allow,
        Some("deny") => PolicyAction::Deny,
        other => bail!("rule {text:?}: starts with {other:?}; expected allow or deny"),
    };
    let mut rule = PolicyRule {
        action,
        proto: Proto::Any,
        cidr: None,
        ports: None,
    };
    for (i, w) in words.enumerate() {
        if i == 0
            && !w.contains('/')
            && !w
                .chars()
                .next()
                .is_some_and(|c| c.is_ascii_digit() && w.contains('-'))
        {
            if let Ok(p) = w.parse::<Proto>() {
                rule.proto = p;
                continue;
            }
        }
        if w.contains('/') {
            rule.cidr = Some(w.parse().map_err(|e: control_api::api::SyntaxError| {
                anyhow::anyhow!("rule {text:?}: {e}")
            })?);
        } else {
            rule.ports = Some(w.parse().map_err(|e: control_api::api::SyntaxError| {
                anyhow::anyhow!("rule {text:?}: {e}")
            })?);
        }
    }
    Ok(rule)
}

struct Out {
    json: bool,
}

impl Out {
    /// Print `value` as JSON, or as the human text `human` makes of it.
    fn show<T: Serialize>(
        &self,
        value: &T,
        human: impl FnOnce(&T) -> String,
    ) -> anyhow::Result<()> {
        if self.json {
            println!("{}", serde_json::to_string_pretty(value)?);
        } else {
            print!("{}", human(value));
        }
        Ok(())
    }

    fn done(&self, what: String) {
        if self.json {
            println!("{}", serde_json::json!({ "ok": what }));
        } else {
            println!("{what}");
        }
    }
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

fn nexthop_desc(nh: &Nexthop) -> String {
    match nh {
        Nexthop::Encap { vif, dmac } => format!("vif {vif} dmac {dmac}"),
        Nexthop::Tunnel {
            encap,
            vif,
            sip,
            dip,
            dmac,
        } => format!("{encap} {sip} -> {dip} via {vif} dmac {dmac}"),
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

fn rule_rows(dir: &str, rules: &[PolicyRule]) -> Vec<Vec<String>> {
    rules
        .iter()
        .enumerate()
        .map(|(i, r)| {
            vec![
                dir.to_string(),
                i.to_string(),
                r.action.to_string(),
                r.proto.to_string(),
                r.cidr.map_or("any".into(), |c| c.to_string()),
                r.ports.map_or("any".into(), |p| p.to_string()),
            ]
        })
        .collect()
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    let c = Client::new(&cli.socket);
    let out = Out { json: cli.json };
    match cli.command {
        Command::Vrf(cmd) => match cmd {
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
        },
        Command::Vif(cmd) => match cmd {
            VifCmd::Add(a) => {
                let vif_type = match a.vif_type {
                    TypeArg::VhostUser => VifType::VhostUser,
                    TypeArg::Physical => VifType::Physical,
                    TypeArg::AfPacket => VifType::AfPacket,
                    TypeArg::Tap => VifType::Tap,
                };
                let mut req = VifRequest::new(&a.name, vif_type, a.vrf, a.mac);
                req.ip = a.ip;
                req.ip6 = a.ip6;
                req.mtu = a.mtu;
                req.vhostsocket_dir = a.socket_dir;
                req.vhostsocket_filename = a.socket_file;
                req.vhostuser_mode = a.mode.map(|m| match m {
                    ModeArg::Server => VhostUserMode::Server,
                    ModeArg::Client => VhostUserMode::Client,
                });
                req.vhostsocket_group = a.socket_group;
                req.queues = a.queues;
                req.device = a.device;
                req.iface = a.iface;
                let v = c.vif_add(&req).await?;
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
            VifCmd::List => out.show(&c.vifs().await?, |v| vif_rows(v))?,
            VifCmd::Show { name } => out.show(&c.vif(&name).await?, vif_detail)?,
        },
        Command::Nh(cmd) => match cmd {
            NhCmd::Set { id, kind } => {
                let nh = match kind {
                    NhKind::Encap { vif, dmac } => Nexthop::Encap { vif, dmac },
                    NhKind::Tunnel {
                        encap,
                        vif,
                        sip,
                        dip,
                        dmac,
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
                    },
                    NhKind::Ecmp { members } => Nexthop::Ecmp { members },
                    NhKind::Discard => Nexthop::Discard,
                    NhKind::Receive => Nexthop::Receive,
                };
                let info = c.nexthop_set(id, &nh).await?;
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
        },
        Command::Route(cmd) => match cmd {
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
        },
        Command::Bridge(cmd) => match cmd {
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
        },
        Command::Mpls(cmd) => match cmd {
            MplsCmd::Set { label, nexthop } => {
                c.mpls_set(label, nexthop).await?;
                out.done(format!("mpls label {label} -> nexthop {nexthop}"));
            }
            MplsCmd::Del { label } => {
                c.mpls_del(label).await?;
                out.done(format!("mpls label {label} removed"));
            }
            MplsCmd::List => out.show(&c.mpls().await?, |m| {
                let rows: Vec<Vec<String>> = m
                    .iter()
                    .map(|m| vec![m.label.to_string(), m.nexthop.to_string()])
                    .collect();
                table(&["LABEL", "NEXTHOP"], &rows)
            })?,
        },
        Command::Vxlan(cmd) => match cmd {
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
        },
        Command::Policy(cmd) => match cmd {
            PolicyCmd::Set {
                vif,
                file,
                default,
                ingress,
                egress,
            } => {
                let policy: Policy = match file {
                    Some(path) => {
                        let mut text = String::new();
                        if path.as_os_str() == "-" {
                            std::io::stdin().read_to_string(&mut text)?;
                        } else {
                            text = std::fs::read_to_string(&path)
                                .with_context(|| format!("reading {}", path.display()))?;
                        }
                        serde_json::from_str(&text).with_context(|| {
                            format!("{} is not a policy document", path.display())
                        })?
                    }
                    None => Policy {
                        default: match default {
                            Some(ActionArg::Deny) => PolicyAction::Deny,
                            Some(ActionArg::Allow) => PolicyAction::Allow,
                            None => bail!("give --default allow|deny (and rules), or --file"),
                        },
                        ingress: ingress
                            .iter()
                            .map(|r| parse_rule(r))
                            .collect::<Result<_, _>>()?,
                        egress: egress
                            .iter()
                            .map(|r| parse_rule(r))
                            .collect::<Result<_, _>>()?,
                    },
                };
                c.policy_set(&vif, &policy).await?;
                out.done(format!(
                    "policy of vif {vif} set: default {}, {} ingress and {} egress rules",
                    policy.default,
                    policy.ingress.len(),
                    policy.egress.len()
                ));
            }
            PolicyCmd::Show { vif } => out.show(&c.policy(&vif).await?, |p| {
                let mut rows = rule_rows("ingress", &p.ingress);
                rows.extend(rule_rows("egress", &p.egress));
                format!(
                    "default {}\n{}",
                    p.default,
                    table(&["DIR", "#", "ACTION", "PROTO", "CIDR", "PORTS"], &rows)
                )
            })?,
            PolicyCmd::Del { vif } => {
                c.policy_del(&vif).await?;
                out.done(format!("policy of vif {vif} removed"));
            }
        },
        Command::Flows(cmd) => match cmd {
            FlowsCmd::List {
                vrf,
                limit,
                cursor,
                all,
            } => {
                let mut query = FlowQuery { vrf, limit, cursor };
                let mut page = c.flows(&query).await?;
                while all && page.next_cursor.is_some() {
                    query.cursor = page.next_cursor.take();
                    let next = c.flows(&query).await?;
                    page.flows.extend(next.flows);
                    page.next_cursor = next.next_cursor;
                }
                out.show(&page, |p| {
                    let rows: Vec<Vec<String>> = p
                        .flows
                        .iter()
                        .map(|f| {
                            vec![
                                f.index.to_string(),
                                f.vrf.to_string(),
                                format!("{}:{}", f.src, f.sport),
                                format!("{}:{}", f.dst, f.dport),
                                Proto::Number(f.proto).to_string(),
                                format!("{:?}", f.action).to_lowercase(),
                                f.packets.to_string(),
                                f.bytes.to_string(),
                                f.tcp_state.clone().unwrap_or_else(|| "-".into()),
                            ]
                        })
                        .collect();
                    let mut s = table(
                        &[
                            "INDEX",
                            "VRF",
                            "SOURCE",
                            "DESTINATION",
                            "PROTO",
                            "ACTION",
                            "PACKETS",
                            "BYTES",
                            "TCP",
                        ],
                        &rows,
                    );
                    if let Some(c) = &p.next_cursor {
                        s.push_str(&format!("more: --cursor {c}\n"));
                    }
                    s
                })?;
            }
            FlowsCmd::Flush => {
                let r = c.flush_flows().await?;
                out.show(&r, |r| format!("{} flows flushed\n", r.flushed))?;
            }
            FlowsCmd::Stats => out.show(&c.flow_stats().await?, |s| {
                table(
                    &[
                        "CAPACITY",
                        "ACTIVE",
                        "CREATED",
                        "AGED",
                        "EVICTED",
                        "TABLE_FULL_DROPS",
                    ],
                    &[vec![
                        s.capacity.to_string(),
                        s.active.to_string(),
                        s.created.to_string(),
                        s.aged.to_string(),
                        s.evicted.to_string(),
                        s.table_full_drops.to_string(),
                    ]],
                )
            })?,
        },
        Command::Stats => out.show(&c.stats().await?, |s| {
            let mut rows: Vec<Vec<String>> = s
                .lcores
                .iter()
                .map(|l| {
                    vec![
                        l.lcore.to_string(),
                        l.rx_packets.to_string(),
                        l.rx_bytes.to_string(),
                        l.tx_packets.to_string(),
                        l.tx_bytes.to_string(),
                        l.drops.to_string(),
                        format!("{:.0}%", l.busy_ratio * 100.0),
                    ]
                })
                .collect();
            rows.push(vec![
                "total".into(),
                s.rx_packets.to_string(),
                s.rx_bytes.to_string(),
                s.tx_packets.to_string(),
                s.tx_bytes.to_string(),
                s.drops.to_string(),
                String::new(),
            ]);
            table(
                &[
                    "LCORE", "RX_PKTS", "RX_BYTES", "TX_PKTS", "TX_BYTES", "DROPS", "BUSY",
                ],
                &rows,
            )
        })?,
        Command::Dropstats => out.show(&c.dropstats().await?, |d| {
            let mut rows: Vec<Vec<String>> = d
                .reasons
                .iter()
                .map(|(r, n)| vec![r.clone(), n.to_string()])
                .collect();
            rows.push(vec!["total".into(), d.total.to_string()]);
            table(&["REASON", "PACKETS"], &rows)
        })?,
        Command::Health => out.show(&c.health().await?, |h| {
            let mut s = format!(
                "status {}\n",
                serde_json::to_value(h.status)
                    .ok()
                    .and_then(|v| v.as_str().map(str::to_string))
                    .unwrap_or_default()
            );
            for p in &h.problems {
                s.push_str(&format!("problem: {p}\n"));
            }
            let mut rows: Vec<Vec<String>> = h
                .mempools
                .iter()
                .map(|m| {
                    vec![
                        "mempool".into(),
                        m.name.clone(),
                        format!("{}/{}", m.in_use, m.size),
                    ]
                })
                .collect();
            rows.extend(h.rings.iter().map(|r| {
                vec![
                    "ring".into(),
                    r.name.clone(),
                    format!("{}/{}", r.used, r.size),
                ]
            }));
            rows.extend(h.lcores.iter().map(|l| {
                vec![
                    format!("lcore {}", l.role),
                    l.lcore.to_string(),
                    format!("{:.0}% busy", l.busy_ratio * 100.0),
                ]
            }));
            rows.extend(
                h.vifs
                    .iter()
                    .map(|v| vec!["vif".into(), v.name.clone(), v.state.to_string()]),
            );
            s.push_str(&table(&["KIND", "NAME", "STATE"], &rows));
            s
        })?,
        Command::Metrics => print!("{}", c.metrics().await?),
    }
    Ok(())
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("vrouterctl: cannot start: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            match e.downcast_ref::<control_api::Error>() {
                Some(control_api::Error::Api {
                    status,
                    code,
                    message,
                }) => {
                    eprintln!("vrouterctl: {message} ({status} {code})")
                }
                _ => eprintln!("vrouterctl: {e:#}"),
            }
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rules_parse_from_words() {
        let r = parse_rule("allow tcp 198.18.0.0/15 80-90").unwrap();
        assert_eq!(r.proto, Proto::TCP);
        assert_eq!(r.cidr.unwrap().to_string(), "198.18.0.0/15");
        assert_eq!(r.ports.unwrap().to_string(), "80-90");
        let r = parse_rule("deny").unwrap();
        assert_eq!((r.action, r.proto), (PolicyAction::Deny, Proto::Any));
        let r = parse_rule("allow 47").unwrap();
        assert_eq!(r.proto, Proto::Number(47));
        assert!(parse_rule("maybe tcp").is_err());
        assert!(parse_rule("allow tcp 99999").is_err());
    }

    #[test]
    fn tables_align_columns() {
        let t = table(&["A", "LONGER"], &[vec!["xyz".into(), "1".into()]]);
        assert_eq!(t, "A    LONGER\nxyz  1\n");
    }
}
