//! `vrouter-bgp`: a node's BGP control plane. It follows vrouterd's change stream (`GET
//! /events`, re-reading the state on a reset) and originates every local pod route of each VRF
//! that has a routing identity in the node's gobgpd: with a VNI as an EVPN type-5 route
//! (route distinguisher, export route targets, the VNI as label, the VXLAN encapsulation
//! community, the fabric MAC as router's MAC, the fabric address as next hop), with an MPLS
//! label as a VPNv4/VPNv6 route (the label, the MPLS-over-UDP or MPLS-over-GRE encapsulation
//! community by `--mpls-encap`; it maps the label to the VRF in vrouterd when nothing else
//! has). It installs the best paths gobgpd learns from its peers into the VRFs importing
//! their route targets: one tunnel nexthop per remote node and encapsulation, an ECMP nexthop
//! when several nodes advertise a prefix, routes carrying the VNI or label (when those nodes
//! advertise different ones, the route carries the lowest and each other node gets a tunnel
//! nexthop pushing its own). Routes a peer
//! withdraws (or that go with a session) are removed.
//!
//! gobgpd's best paths are followed through its gRPC API (`WatchEvent`: the tables whole, then
//! each change); routes are originated and withdrawn through its `gobgp` command line. Learned
//! routes go into vrouterd in batches (`PATCH /vrfs/{vrf}/routes`, up to 4096 a request).

mod api;
mod gobgp;
mod rib;

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use clap::Parser;
use control_api::api::{
    IpPrefix, MacAddr, MplsTarget, Nexthop, Route, RouteBatch, RouteTag, TunnelEncap, VrfRouting,
    ROUTE_BATCH_MAX,
};
use control_api::Client;
use serde_json::Value;
use tracing::{info, warn};

use gobgp::{Advert, Gobgp, Overlay, RibUpdate, TABLES};
use rib::{Encap, Endpoint, Family, Preference, Remote};

/// Nexthop ids vrouter-bgp owns in vrouterd: tunnels to remote nodes, then ECMP groups.
const TUNNEL_IDS: (u32, u32) = (60_000, 62_999);
const ECMP_IDS: (u32, u32) = (63_000, 65_535);
/// ECMP members vrouterd takes in one group.
const ECMP_MEMBERS_MAX: usize = 32;

#[derive(Parser)]
#[command(version, about)]
struct Args {
    /// vrouterd's control socket.
    #[arg(long, default_value = "/var/run/vrouter/vrouter.sock")]
    vrouter_socket: PathBuf,
    /// This node's tunnel endpoint (vrouterd's --fabric-ip).
    #[arg(long)]
    fabric_ip: IpAddr,
    /// vrouterd's fabric vif (its MAC is advertised as the router's MAC; tunnels leave by it).
    #[arg(long, default_value = "fabric0")]
    fabric_vif: String,
    /// gobgpd's gRPC address.
    #[arg(long, default_value = "127.0.0.1")]
    gobgp_host: String,
    #[arg(long, default_value_t = 50051)]
    gobgp_port: u16,
    /// The longest one wait on vrouterd's change stream lasts, in milliseconds (changes and
    /// gobgpd's best-path changes end it at once).
    #[arg(long, default_value_t = 300)]
    poll_ms: u64,
    /// The MPLS encapsulation this node's VPN routes ask for (their encapsulation community),
    /// and the one used toward learned VPN paths that carry none.
    #[arg(long, value_enum, default_value_t = MplsEncap::Udp)]
    mpls_encap: MplsEncap,
    /// Which family's paths are installed for a prefix learned both as EVPN type-5 (VXLAN)
    /// and as VPN (MPLS) routes.
    #[arg(long, value_enum, default_value_t = Prefer::Evpn)]
    prefer: Prefer,
    /// Graceful restart: after gobgpd's tables are read anew (it or this daemon started),
    /// installed routes they lack stay until every gobgpd peer has sent End-of-RIB, for at
    /// most this many seconds (gobgpd's restart time).
    #[arg(long, default_value_t = 120)]
    restart_time: u64,
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum MplsEncap {
    /// MPLS-over-UDP (RFC 7510), tunnel type 13.
    Udp,
    /// MPLS-over-GRE (RFC 4023), tunnel type 11.
    Gre,
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum Prefer {
    Evpn,
    Vpn,
}

impl Args {
    fn preference(&self) -> Preference {
        Preference {
            mpls: match self.mpls_encap {
                MplsEncap::Udp => Encap::MplsUdp,
                MplsEncap::Gre => Encap::MplsGre,
            },
            family: match self.prefer {
                Prefer::Evpn => Family::Evpn,
                Prefer::Vpn => Family::Vpn,
            },
        }
    }
}

/// What vrouterd holds that matters here, kept current from the change stream.
#[derive(Default)]
struct Local {
    routing: BTreeMap<u32, VrfRouting>,
    routes: BTreeMap<(u32, IpPrefix), Route>,
    nexthops: BTreeMap<u32, Nexthop>,
    mpls: BTreeMap<u32, MplsTarget>,
}

impl Local {
    async fn read(c: &Client) -> anyhow::Result<Local> {
        let mut l = Local::default();
        for v in c.vrfs().await? {
            if let Some(r) = v.routing {
                l.routing.insert(v.vrf, r);
            }
            for r in c.routes(v.vrf).await? {
                l.routes.insert((v.vrf, r.prefix), r);
            }
        }
        for n in c.nexthops().await? {
            l.nexthops.insert(n.id, n.nexthop);
        }
        for m in c.mpls().await? {
            if let Some(t) = m.target() {
                l.mpls.insert(m.label, t);
            }
        }
        Ok(l)
    }

    /// Applies one change of the stream; false if it cannot be read (then re-read it all).
    fn apply(&mut self, ch: &Value) -> bool {
        let vrf = || ch["vrf"].as_u64().map(|v| v as u32);
        match ch["op"].as_str().unwrap_or_default() {
            "vrf-routing-set" => match (vrf(), field::<VrfRouting>(ch, "routing")) {
                (Some(v), Some(r)) => {
                    self.routing.insert(v, r);
                }
                _ => return false,
            },
            "vrf-routing-del" => match vrf() {
                Some(v) => {
                    self.routing.remove(&v);
                }
                None => return false,
            },
            "route-set" => match (vrf(), field::<Route>(ch, "route")) {
                (Some(v), Some(r)) => {
                    self.routes.insert((v, r.prefix), r);
                }
                _ => return false,
            },
            "route-del" => match (vrf(), field::<IpPrefix>(ch, "prefix")) {
                (Some(v), Some(p)) => {
                    self.routes.remove(&(v, p));
                }
                _ => return false,
            },
            "nexthop-set" => match (ch["id"].as_u64(), field::<Nexthop>(ch, "nexthop")) {
                (Some(id), Some(n)) => {
                    self.nexthops.insert(id as u32, n);
                }
                _ => return false,
            },
            "nexthop-del" => match ch["id"].as_u64() {
                Some(id) => {
                    self.nexthops.remove(&(id as u32));
                }
                None => return false,
            },
            "mpls-set" => match (ch["label"].as_u64(), ch["nexthop"].as_u64()) {
                (Some(l), Some(n)) => {
                    self.mpls.insert(l as u32, MplsTarget::Nexthop(n as u32));
                }
                _ => return false,
            },
            "mpls-vrf-set" => match (ch["label"].as_u64(), vrf()) {
                (Some(l), Some(v)) => {
                    self.mpls.insert(l as u32, MplsTarget::Vrf(v));
                }
                _ => return false,
            },
            "mpls-del" => match ch["label"].as_u64() {
                Some(l) => {
                    self.mpls.remove(&(l as u32));
                }
                None => return false,
            },
            "vrf-del" => match vrf() {
                Some(v) => {
                    self.routing.remove(&v);
                    self.routes.retain(|(rv, _), _| *rv != v);
                }
                None => return false,
            },
            _ => {}
        }
        true
    }

    /// The pod routes of this node: routes to a vif of its own (an encap nexthop).
    fn pod_routes(&self) -> BTreeSet<(u32, IpPrefix)> {
        self.routes
            .iter()
            .filter(|(_, r)| matches!(self.nexthops.get(&r.nexthop), Some(Nexthop::Encap { .. })))
            .map(|(k, _)| *k)
            .collect()
    }

    /// The pod routes of this node (as [`Local::pod_routes`]) to any of `prefixes`, in any VRF
    /// with a routing identity.
    fn pod_routes_of(&self, prefixes: impl Iterator<Item = IpPrefix>) -> BTreeSet<(u32, IpPrefix)> {
        let mut out = BTreeSet::new();
        for prefix in prefixes {
            for vrf in self.routing.keys() {
                let pod = self.routes.get(&(*vrf, prefix)).is_some_and(|r| {
                    matches!(self.nexthops.get(&r.nexthop), Some(Nexthop::Encap { .. }))
                });
                if pod {
                    out.insert((*vrf, prefix));
                }
            }
        }
        out
    }

    /// What this node advertises: each pod route of each VRF with a VNI as EVPN, and with a
    /// label (when `label_ok` says the label leads to the VRF) as VPN, in `mpls`.
    fn adverts(
        &self,
        mpls: Encap,
        label_ok: impl Fn(u32, u32) -> bool,
    ) -> BTreeMap<AdvertKey, Advert> {
        let mut out = BTreeMap::new();
        for (vrf, prefix) in self.pod_routes() {
            let Some(r) = self.routing.get(&vrf) else {
                continue;
            };
            let targets: Vec<String> = r
                .export_targets
                .iter()
                .filter_map(|t| RouteTag::parse_target(t).ok())
                .map(|t| t.to_string())
                .collect();
            let mut overlays = Vec::new();
            if let Some(vni) = r.vni {
                overlays.push(Overlay::Evpn { vni });
            }
            if let Some(label) = r.label.filter(|l| label_ok(*l, vrf)) {
                overlays.push(Overlay::Vpn { label, encap: mpls });
            }
            for overlay in overlays {
                let a = Advert {
                    prefix,
                    rd: r.rd.clone(),
                    targets: targets.clone(),
                    overlay,
                };
                out.insert((vrf, prefix, a.family()), a);
            }
        }
        out
    }
}

/// One originated route: VRF, prefix, family.
type AdvertKey = (u32, IpPrefix, Family);

fn field<T: serde::de::DeserializeOwned>(ch: &Value, k: &str) -> Option<T> {
    serde_json::from_value(ch[k].clone()).ok()
}

/// gobgpd's best paths as its watch reports them: per table of [`TABLES`], each path by its
/// NLRI ([`api::path_key`]: RD and prefix), as vrouterd can use it (`None`: refused, logged
/// when it came); a table is `None` until it was read whole, and again while gobgpd is gone.
struct Rib {
    tables: [Option<BTreeMap<Vec<u8>, Option<rib::Learned>>>; 3],
    prefer: Preference,
    /// A table was read whole since [`Rib::reloaded`] last said so.
    reloaded: bool,
    /// The prefixes whose paths changed since [`Rib::take_changed`]; `None`: any may have (a
    /// table was read whole).
    changed: Option<BTreeSet<IpPrefix>>,
}

/// Prefixes changed on either side: `None` (any) when either says so.
fn union(
    a: Option<BTreeSet<IpPrefix>>,
    b: Option<BTreeSet<IpPrefix>>,
) -> Option<BTreeSet<IpPrefix>> {
    let (mut a, b) = (a?, b?);
    a.extend(b);
    Some(a)
}

impl Rib {
    fn new(prefer: Preference) -> Rib {
        Rib {
            tables: [None, None, None],
            prefer,
            reloaded: false,
            changed: None,
        }
    }

    /// Applies `u`; how many paths it carried.
    fn apply(&mut self, u: RibUpdate) -> usize {
        let prefer = self.prefer;
        let learned = |table: usize, path: &api::Path| {
            let family = TABLES[table].0;
            match api::path_learned(path, family, prefer) {
                Ok(l) => l,
                Err(why) => {
                    tracing::debug!("ignored: {:?}: {why}", path.nlri);
                    None
                }
            }
        };
        match u {
            RibUpdate::Table { table, paths } => {
                let n = paths.len();
                let t = paths
                    .iter()
                    .map(|p| (api::path_key(p), learned(table, p)))
                    .collect();
                self.tables[table] = Some(t);
                self.reloaded = true;
                self.changed = None;
                n
            }
            RibUpdate::Paths { table, paths } => {
                let Some(t) = self.tables[table].as_mut() else {
                    return 0;
                };
                let mut touched = Vec::new();
                for p in &paths {
                    let key = api::path_key(p);
                    let old = if p.is_withdraw {
                        t.remove(&key)
                    } else {
                        let l = learned(table, p);
                        touched.extend(l.as_ref().map(|l| l.prefix));
                        t.insert(key, l)
                    };
                    touched.extend(old.flatten().map(|l| l.prefix));
                }
                if let Some(c) = self.changed.as_mut() {
                    c.extend(touched);
                }
                paths.len()
            }
            RibUpdate::Lost { table } => {
                self.tables[table] = None;
                0
            }
        }
    }

    /// Whether every table was read.
    fn ready(&self) -> anyhow::Result<()> {
        for (t, (_, afi)) in self.tables.iter().zip(TABLES) {
            if t.is_none() {
                anyhow::bail!("gobgpd's {afi} table is not read (yet)");
            }
        }
        Ok(())
    }

    /// Every usable best path (for a prefix in `scope`, when there is one), once every table
    /// was read.
    fn learned(&self, scope: Option<&BTreeSet<IpPrefix>>) -> anyhow::Result<Vec<rib::Learned>> {
        self.ready()?;
        let in_scope = |l: &&rib::Learned| scope.is_none_or(|s| s.contains(&l.prefix));
        Ok(self
            .tables
            .iter()
            .flatten()
            .flat_map(|t| t.values().flatten().filter(in_scope).cloned())
            .collect())
    }

    /// The prefixes whose paths changed since the last call (`None`: any may have).
    fn take_changed(&mut self) -> Option<BTreeSet<IpPrefix>> {
        self.changed.replace(BTreeSet::new())
    }

    fn reloaded(&mut self) -> bool {
        std::mem::take(&mut self.reloaded)
    }
}

/// What woke the main loop.
enum Woke {
    Changes(Result<control_api::events::EventPage, control_api::Error>),
    Rib(Option<RibUpdate>),
}

/// Whether vrouter-bgp owns nexthop `id` (tunnels and ECMP groups it made).
fn ours(id: u32) -> bool {
    (TUNNEL_IDS.0..=ECMP_IDS.1).contains(&id)
}

/// What this daemon put into vrouterd.
#[derive(Default)]
struct Installed {
    routes: BTreeMap<(u32, IpPrefix), Remote>,
    tunnels: BTreeMap<Endpoint, u32>,
    groups: BTreeMap<BTreeSet<u32>, u32>,
}

fn free_id(used: impl Iterator<Item = u32>, (lo, hi): (u32, u32)) -> anyhow::Result<u32> {
    let used: BTreeSet<u32> = used.collect();
    (lo..=hi)
        .find(|i| !used.contains(i))
        .context("no free nexthop id left")
}

/// How long gobgpd's best paths must stay unchanged, once its peers are synchronised after a
/// restart, before installed routes its tables lack are removed.
const SETTLE_QUIET: Duration = Duration::from_secs(3);

struct Daemon {
    args: Args,
    vr: Client,
    bgp: Gobgp,
    local: Local,
    advertised: BTreeMap<AdvertKey, Advert>,
    installed: Installed,
    /// Labels this run mapped to a VRF in vrouterd (`PUT /mpls/{label}` with the VRF): removed
    /// again when the VRF's identity no longer has the label.
    mapped: BTreeMap<u32, u32>,
    /// Labels already warned about (mapped elsewhere), so the warning comes once.
    conflicts: BTreeSet<(u32, u32)>,
    rib: Rib,
    updates: tokio::sync::mpsc::UnboundedReceiver<RibUpdate>,
    /// Until when installed routes gobgpd's tables lack stay (graceful restart: its peers
    /// may not have sent everything yet), unless its peers are all synchronised before.
    settle: Option<tokio::time::Instant>,
    /// When gobgpd's best paths last changed (graceful restart: settled only once they have
    /// been quiet for [`SETTLE_QUIET`] after its peers are synchronised).
    rib_changed: tokio::time::Instant,
    /// When gobgpd's peers were first seen synchronised while settling.
    synced_at: Option<tokio::time::Instant>,
    /// The prefixes vrouterd's changes may have changed the imports of since the last install
    /// (`None`: any may have, such as after a VRF identity changed).
    local_changed: Option<BTreeSet<IpPrefix>>,
}

impl Daemon {
    /// Takes over what an earlier run (or this one, before vrouterd restarted with its
    /// `--state-dir`) installed, so that forwarding goes on while vrouter-bgp restarts: its
    /// tunnels from this node's fabric address, its ECMP groups of them, and the routes through
    /// those become this run's, reconciled with gobgpd's paths once those are read (what they
    /// no longer want is removed then, what they want differently replaced). Routes and
    /// nexthops in its id ranges it cannot read back are removed now.
    async fn adopt(&mut self) -> anyhow::Result<()> {
        self.installed = Installed::default();
        self.local_changed = None;
        let mut tunnels: BTreeMap<u32, Endpoint> = BTreeMap::new();
        for (id, nh) in &self.local.nexthops {
            let Nexthop::Tunnel {
                encap,
                vif,
                sip,
                dip,
                dmac,
                label,
            } = nh
            else {
                continue;
            };
            if !(TUNNEL_IDS.0..=TUNNEL_IDS.1).contains(id)
                || *vif != self.args.fabric_vif
                || *sip != self.args.fabric_ip
            {
                continue;
            }
            let ep = Endpoint {
                ip: *dip,
                encap: match encap {
                    TunnelEncap::Vxlan => Encap::Vxlan,
                    TunnelEncap::Mplsoudp => Encap::MplsUdp,
                    TunnelEncap::Mplsogre => Encap::MplsGre,
                },
                mac: dmac.map(|m| m.0),
                label: *label,
            };
            if let std::collections::btree_map::Entry::Vacant(e) = self.installed.tunnels.entry(ep)
            {
                e.insert(*id);
                tunnels.insert(*id, ep);
            }
        }
        let mut groups: BTreeMap<u32, BTreeSet<Endpoint>> = BTreeMap::new();
        for (id, nh) in &self.local.nexthops {
            let Nexthop::Ecmp { members } = nh else {
                continue;
            };
            let ids: BTreeSet<u32> = members.iter().copied().collect();
            let eps: Option<BTreeSet<Endpoint>> =
                ids.iter().map(|m| tunnels.get(m).copied()).collect();
            match eps {
                Some(eps)
                    if (ECMP_IDS.0..=ECMP_IDS.1).contains(id)
                        && eps.len() > 1
                        && !self.installed.groups.contains_key(&ids) =>
                {
                    self.installed.groups.insert(ids, *id);
                    groups.insert(*id, eps);
                }
                _ => {}
            }
        }
        let mut stale: BTreeMap<u32, Vec<IpPrefix>> = BTreeMap::new();
        for ((vrf, prefix), r) in &self.local.routes {
            if !ours(r.nexthop) {
                continue;
            }
            let endpoints = tunnels
                .get(&r.nexthop)
                .map(|ep| BTreeSet::from([*ep]))
                .or_else(|| groups.get(&r.nexthop).cloned());
            match (endpoints, r.label) {
                (Some(endpoints), Some(label)) => {
                    self.installed
                        .routes
                        .insert((*vrf, *prefix), Remote { endpoints, label });
                }
                _ => stale.entry(*vrf).or_default().push(*prefix),
            }
        }
        for (vrf, prefixes) in stale {
            for chunk in prefixes.chunks(ROUTE_BATCH_MAX) {
                let b = RouteBatch {
                    set: Vec::new(),
                    delete: chunk.to_vec(),
                };
                self.vr.routes_batch(vrf, &b).await?;
                for p in chunk {
                    self.local.routes.remove(&(vrf, *p));
                }
            }
        }
        let adopted: BTreeSet<u32> = tunnels.keys().chain(groups.keys()).copied().collect();
        let mut ids: Vec<u32> = self
            .local
            .nexthops
            .keys()
            .copied()
            .filter(|i| ours(*i) && !adopted.contains(i))
            .collect();
        ids.sort_by_key(|i| std::cmp::Reverse(*i)); // ECMP groups before their members
        for id in ids {
            self.vr.nexthop_del(id).await?;
            self.local.nexthops.remove(&id);
        }
        if !self.installed.routes.is_empty() {
            info!(
                routes = self.installed.routes.len(),
                tunnels = self.installed.tunnels.len(),
                groups = self.installed.groups.len(),
                "took over what an earlier run installed"
            );
        }
        Ok(())
    }

    /// Withdraws this node's route `l` from gobgpd (the RD is not in [`rib::Learned`]: under
    /// every RD this node uses).
    async fn withdraw_own(&self, l: &rib::Learned) {
        for r in self.local.routing.values() {
            let a = Advert {
                prefix: l.prefix,
                rd: r.rd.clone(),
                targets: Vec::new(),
                overlay: match l.family {
                    Family::Evpn => Overlay::Evpn { vni: l.label },
                    Family::Vpn => Overlay::Vpn {
                        label: l.label,
                        encap: l.encap,
                    },
                },
            };
            let _ = self.bgp.del(&a).await;
        }
    }

    /// What this node should advertise now.
    fn wanted_adverts(&self) -> BTreeMap<AdvertKey, Advert> {
        let mpls = &self.local.mpls;
        self.local
            .adverts(self.args.preference().mpls, |label, vrf| {
                mpls.get(&label) == Some(&MplsTarget::Vrf(vrf))
            })
    }

    /// Makes each VRF identity's label lead to its VRF in vrouterd (unless the label already
    /// leads elsewhere: then the VRF's VPN routes are not originated), and removes the
    /// mappings this run made whose identity no longer has the label.
    async fn map_labels(&mut self) {
        let want: BTreeMap<u32, u32> = self
            .local
            .routing
            .iter()
            .filter_map(|(vrf, r)| Some((r.label?, *vrf)))
            .collect();
        let stale: Vec<(u32, u32)> = self
            .mapped
            .iter()
            .filter(|(l, v)| want.get(l) != Some(v))
            .map(|(l, v)| (*l, *v))
            .collect();
        for (label, vrf) in stale {
            if self.local.mpls.get(&label) == Some(&MplsTarget::Vrf(vrf)) {
                match self.vr.mpls_del(label).await {
                    Ok(()) => {
                        info!(label, vrf, "label no longer leads to the vrf");
                        self.local.mpls.remove(&label);
                    }
                    Err(e) => {
                        warn!("removing label {label} of vrf {vrf}: {e:#}");
                        continue;
                    }
                }
            }
            self.mapped.remove(&label);
        }
        for (label, vrf) in want {
            match self.local.mpls.get(&label) {
                Some(MplsTarget::Vrf(v)) if *v == vrf => {}
                None => match self.vr.mpls_set_vrf(label, vrf).await {
                    Ok(_) => {
                        info!(label, vrf, "label leads to the vrf");
                        self.local.mpls.insert(label, MplsTarget::Vrf(vrf));
                        self.mapped.insert(label, vrf);
                    }
                    Err(e) => warn!("mapping label {label} to vrf {vrf}: {e:#}"),
                },
                Some(other) => {
                    if self.conflicts.insert((label, vrf)) {
                        warn!(
                            "label {label} of vrf {vrf} leads to {other:?}: its VPN routes are not advertised"
                        );
                    }
                }
            }
        }
    }

    async fn advertise(&mut self) {
        self.map_labels().await;
        let want = self.wanted_adverts();
        let gone: Vec<_> = self
            .advertised
            .iter()
            .filter(|(k, a)| want.get(k) != Some(a))
            .map(|(k, a)| (*k, a.clone()))
            .collect();
        for (k, a) in gone {
            match self.bgp.del(&a).await {
                Ok(()) => {
                    info!(vrf = k.0, prefix = %k.1, family = ?k.2, "withdrawn");
                    self.advertised.remove(&k);
                }
                Err(e) => warn!("withdrawing {} from vrf {}: {e:#}", k.1, k.0),
            }
        }
        for (k, a) in want {
            if self.advertised.contains_key(&k) {
                continue;
            }
            match self.bgp.add(&a).await {
                Ok(()) => {
                    info!(vrf = k.0, prefix = %k.1, overlay = ?a.overlay, rd = %a.rd, "advertised");
                    self.advertised.insert(k, a);
                }
                Err(e) => warn!("advertising {} of vrf {}: {e:#}", k.1, k.0),
            }
        }
    }

    async fn tunnel(&mut self, ep: Endpoint) -> anyhow::Result<u32> {
        if let Some(id) = self.installed.tunnels.get(&ep) {
            return Ok(*id);
        }
        let id = free_id(self.installed.tunnels.values().copied(), TUNNEL_IDS)?;
        let nh = Nexthop::Tunnel {
            encap: ep.encap.tunnel(),
            vif: self.args.fabric_vif.clone(),
            sip: self.args.fabric_ip,
            dip: ep.ip,
            dmac: ep.mac.map(MacAddr),
            label: ep.label,
        };
        self.vr.nexthop_set(id, &nh).await?;
        self.installed.tunnels.insert(ep, id);
        Ok(id)
    }

    async fn nexthop_for(&mut self, remote: &Remote) -> anyhow::Result<u32> {
        let mut members = BTreeSet::new();
        for ep in remote.endpoints.iter().take(ECMP_MEMBERS_MAX) {
            members.insert(self.tunnel(*ep).await?);
        }
        if members.len() == 1 {
            return Ok(*members.first().expect("one"));
        }
        if let Some(id) = self.installed.groups.get(&members) {
            return Ok(*id);
        }
        let id = free_id(self.installed.groups.values().copied(), ECMP_IDS)?;
        let nh = Nexthop::Ecmp {
            members: members.iter().copied().collect(),
        };
        self.vr.nexthop_set(id, &nh).await?;
        self.installed.groups.insert(members, id);
        Ok(id)
    }

    /// Installs what gobgpd's best paths and vrouterd's VRF identities want, removes what they
    /// no longer want: for the prefixes whose paths or local routes changed since the last
    /// time, or all of them when anything else changed.
    async fn install(&mut self) -> anyhow::Result<()> {
        let started = std::time::Instant::now();
        if let Err(e) = self.rib.ready() {
            // gobgpd is not up (yet): what was installed stays until its tables are read.
            tracing::debug!("{e:#}");
            return Ok(());
        }
        let reloaded = self.rib.reloaded();
        if reloaded {
            self.settle =
                Some(tokio::time::Instant::now() + Duration::from_secs(self.args.restart_time));
            self.synced_at = None;
        }
        // Graceful restart: routes gobgpd lacks stay while its peers are still sending theirs.
        let settling = match self.settle {
            Some(until) if tokio::time::Instant::now() < until => {
                match self.bgp.peers_synced().await {
                    // Synchronised is not yet done: a restarting gobgpd chooses its best
                    // paths once every peer's End-of-RIB is in (RFC 4724 4.1), which reach
                    // the watch just after; and it counts a family its peer does no graceful
                    // restart in as synchronised when the session comes up, before that
                    // peer's routes (an FRR reflector's VPN routes). So: synchronised, and
                    // the tables quiet for a moment since.
                    Ok(true) => {
                        let now = tokio::time::Instant::now();
                        let since = *self.synced_at.get_or_insert(now);
                        now.duration_since(since.max(self.rib_changed)) < SETTLE_QUIET
                    }
                    Ok(false) => {
                        self.synced_at = None;
                        true
                    }
                    Err(e) => {
                        tracing::debug!("gobgpd's peers: {e:#}");
                        true
                    }
                }
            }
            Some(_) => {
                warn!("gobgpd's peers not all synchronised within the restart time: going by its tables");
                false
            }
            None => false,
        };
        // Taken: a failure below leaves "any" for the next time.
        let mut scope = union(self.rib.take_changed(), self.local_changed.take());
        if !settling && self.settle.take().is_some() {
            info!("gobgpd's peers have sent their routes (End-of-RIB)");
            // What was kept meanwhile goes now if nothing wants it.
            scope = None;
        }
        let learned = self.rib.learned(scope.as_ref())?;
        let mut ignored = Vec::new();
        if reloaded {
            // gobgpd's tables were read anew (at start, or it restarted): a route of this
            // node's missing from them is advertised again, and one there that this node no
            // longer has (an earlier run's, its pod gone meanwhile) is withdrawn.
            let own: BTreeSet<(Family, IpPrefix)> = learned
                .iter()
                .filter(|l| l.nexthop == self.args.fabric_ip)
                .map(|l| (l.family, l.prefix))
                .collect();
            self.advertised
                .retain(|_, a| own.contains(&(a.family(), a.prefix)));
            let want: BTreeSet<(Family, IpPrefix)> = self
                .wanted_adverts()
                .values()
                .map(|a| (a.family(), a.prefix))
                .collect();
            for l in learned.iter().filter(|l| l.nexthop == self.args.fabric_ip) {
                if !want.contains(&(l.family, l.prefix)) {
                    info!(prefix = %l.prefix, family = ?l.family, "withdrawing an earlier run's route");
                    self.withdraw_own(l).await;
                }
            }
        }
        let want = rib::imports(
            &learned,
            &self.local.routing,
            self.args.fabric_ip,
            &self.local.pod_routes_of(learned.iter().map(|l| l.prefix)),
            self.args.preference().family,
            &mut ignored,
        );
        for i in &ignored {
            tracing::debug!("ignored: {i}");
        }
        let gone: Vec<(u32, IpPrefix)> = self
            .installed
            .routes
            .keys()
            .filter(|k| scope.as_ref().is_none_or(|s| s.contains(&k.1)) && !want.contains_key(k))
            .copied()
            .collect();
        if settling && !gone.is_empty() {
            tracing::debug!(
                routes = gone.len(),
                "kept until gobgpd's peers have sent End-of-RIB"
            );
        }
        let gone = if settling { Vec::new() } else { gone };
        // Tunnels and groups may be left unused when routes go or change.
        let mut release = scope.is_none() || !gone.is_empty();
        let mut dels: BTreeMap<u32, Vec<IpPrefix>> = BTreeMap::new();
        for (vrf, prefix) in gone {
            if self
                .local
                .routes
                .get(&(vrf, prefix))
                .is_some_and(|r| ours(r.nexthop))
            {
                dels.entry(vrf).or_default().push(prefix);
            } else {
                // Gone from vrouterd already (its VRF went, or someone removed it).
                self.installed.routes.remove(&(vrf, prefix));
            }
        }
        // vrouterd's time on this pass's batches so far.
        let mut answered = Duration::ZERO;
        for (vrf, prefixes) in dels {
            for chunk in prefixes.chunks(ROUTE_BATCH_MAX) {
                let b = RouteBatch {
                    set: Vec::new(),
                    delete: chunk.to_vec(),
                };
                let t = std::time::Instant::now();
                self.vr.routes_batch(vrf, &b).await?;
                answered += t.elapsed();
                for prefix in chunk {
                    self.installed.routes.remove(&(vrf, *prefix));
                    self.local.routes.remove(&(vrf, *prefix));
                    tracing::debug!(vrf, %prefix, "remote route removed");
                }
                info!(vrf, routes = chunk.len(), "remote routes removed");
            }
        }
        let mut sets: BTreeMap<u32, Vec<(Route, Remote)>> = BTreeMap::new();
        for (k, remote) in want {
            match self.installed.routes.get(&k) {
                Some(r) if *r == remote => continue,
                Some(_) => release = true,
                None => {}
            }
            let nexthop = self.nexthop_for(&remote).await?;
            let route = Route {
                prefix: k.1,
                nexthop,
                label: Some(remote.label),
            };
            sets.entry(k.0).or_default().push((route, remote));
        }
        for (vrf, routes) in sets {
            for chunk in routes.chunks(ROUTE_BATCH_MAX) {
                let b = RouteBatch {
                    set: chunk.iter().map(|(r, _)| r.clone()).collect(),
                    delete: Vec::new(),
                };
                let t = std::time::Instant::now();
                // This pass's own time before the batch (working out what to send).
                let prep_ms = t
                    .duration_since(started)
                    .saturating_sub(answered)
                    .as_millis() as u64;
                self.vr.routes_batch(vrf, &b).await?;
                answered += t.elapsed();
                let batch_ms = t.elapsed().as_millis() as u64;
                for (route, remote) in chunk {
                    tracing::debug!(vrf, prefix = %route.prefix, nexthop = route.nexthop, label = remote.label, nodes = remote.endpoints.len(), "remote route installed");
                    self.installed
                        .routes
                        .insert((vrf, route.prefix), remote.clone());
                    self.local.routes.insert((vrf, route.prefix), route.clone());
                }
                info!(
                    vrf,
                    routes = chunk.len(),
                    prep_ms,
                    batch_ms,
                    "remote routes installed"
                );
            }
        }
        if release {
            self.release_unused().await?;
        }
        self.local_changed.get_or_insert_default();
        Ok(())
    }

    /// Removes ECMP groups, then tunnels, no installed route uses any more.
    async fn release_unused(&mut self) -> anyhow::Result<()> {
        let mut used_groups = BTreeSet::new();
        let mut used_tunnels = BTreeSet::new();
        for remote in self.installed.routes.values() {
            let members: BTreeSet<u32> = remote
                .endpoints
                .iter()
                .take(ECMP_MEMBERS_MAX)
                .filter_map(|ep| self.installed.tunnels.get(ep).copied())
                .collect();
            used_tunnels.extend(members.iter().copied());
            if members.len() > 1 {
                used_groups.insert(members);
            }
        }
        let groups: Vec<_> = self
            .installed
            .groups
            .iter()
            .filter(|(m, _)| !used_groups.contains(*m))
            .map(|(m, id)| (m.clone(), *id))
            .collect();
        for (m, id) in groups {
            self.vr.nexthop_del(id).await?;
            self.installed.groups.remove(&m);
        }
        let tunnels: Vec<_> = self
            .installed
            .tunnels
            .iter()
            .filter(|(_, id)| !used_tunnels.contains(*id))
            .map(|(ep, id)| (*ep, *id))
            .collect();
        for (ep, id) in tunnels {
            self.vr.nexthop_del(id).await?;
            self.installed.tunnels.remove(&ep);
        }
        Ok(())
    }

    /// Notes what a change of vrouterd's may change in the imports: a route (not one this
    /// daemon installed) its prefix; a VRF identity, a VRF, a nexthop not its own, anything.
    fn note_local(&mut self, ch: &Value) {
        let Some(changed) = self.local_changed.as_mut() else {
            return;
        };
        let prefix = match ch["op"].as_str().unwrap_or_default() {
            "route-set" => {
                if ch["route"]["nexthop"]
                    .as_u64()
                    .is_some_and(|n| u32::try_from(n).is_ok_and(ours))
                {
                    return;
                }
                field::<IpPrefix>(&ch["route"], "prefix")
            }
            "route-del" => field::<IpPrefix>(ch, "prefix"),
            "nexthop-set" | "nexthop-del"
                if ch["id"]
                    .as_u64()
                    .is_some_and(|n| u32::try_from(n).is_ok_and(ours)) =>
            {
                return;
            }
            "vrf-routing-set" | "vrf-routing-del" | "vrf-del" | "nexthop-set" | "nexthop-del" => {
                None
            }
            _ => return,
        };
        match prefix {
            Some(p) => {
                changed.insert(p);
            }
            None => self.local_changed = None,
        }
    }

    /// Follows the change stream (re-reading the state when it says reset) and gobgpd's best
    /// paths; after each change, advertises and installs what differs.
    async fn run(&mut self) -> anyhow::Result<()> {
        let mut first = self.vr.events(0, None, 0).await?;
        let (mut epoch, mut revision) = (first.epoch.clone(), first.revision);
        self.local = Local::read(&self.vr).await?;
        self.adopt().await?;
        first.events.clear();
        let poll = Duration::from_millis(self.args.poll_ms);
        loop {
            // Installing first: when gobgpd's tables were read anew, it finds this node's
            // routes they lack, advertised again at once.
            if let Err(e) = self.install().await {
                warn!("installing learned routes: {e:#}");
            }
            // Once gobgpd's tables are read: after a restart its peers' routes go into
            // vrouterd first (gobgpd still holds this node's own; install found those it
            // lacks), and gobgpd is not asked to originate while it cannot be followed.
            if self.rib.ready().is_ok() {
                self.advertise().await;
            }
            let woke = tokio::select! {
                p = self.vr.events(revision, Some(&epoch), poll.as_millis() as u64) => Woke::Changes(p),
                u = self.updates.recv() => Woke::Rib(u),
            };
            let mut page = match woke {
                Woke::Rib(u) => {
                    let Some(u) = u else {
                        anyhow::bail!("gobgpd's table monitors ended");
                    };
                    let mut paths = self.rib.apply(u);
                    // Take whatever else came meanwhile before acting on it.
                    while let Ok(u) = self.updates.try_recv() {
                        paths += self.rib.apply(u);
                    }
                    if paths > 0 {
                        self.rib_changed = tokio::time::Instant::now();
                        info!(paths, "best paths changed in gobgpd");
                    }
                    continue;
                }
                Woke::Changes(Ok(p)) => p,
                Woke::Changes(Err(e)) => {
                    warn!("reading vrouterd's changes: {e:#}");
                    tokio::time::sleep(poll).await;
                    continue;
                }
            };
            let restarted = page.epoch != epoch;
            let mut reread = page.reset;
            loop {
                for ev in &page.events {
                    if !self.local.apply(&ev.change) {
                        warn!("unreadable change {}: re-reading", ev.change);
                        reread = true;
                    }
                    self.note_local(&ev.change);
                }
                (epoch, revision) = (page.epoch.clone(), page.revision);
                // A full page: more are waiting (a batch's changes); read them all first.
                if page.reset || page.events.len() < control_api::events::PAGE_MAX {
                    break;
                }
                page = self.vr.events(revision, Some(&epoch), 0).await?;
                reread |= page.reset;
            }
            if restarted {
                info!("vrouterd restarted: re-reading its state");
                reread = true;
            }
            if reread {
                self.local = Local::read(&self.vr).await?;
                self.local_changed = None;
                // A restarted vrouterd has what it restored from its --state-dir, or nothing:
                // take over what is there. (A reader that fell behind only re-reads.)
                if restarted {
                    self.adopt().await?;
                }
            }
        }
    }
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .with_ansi(false)
        .init();
    let args = Args::parse();
    let vr = Client::new(&args.vrouter_socket);
    // The fabric vif's MAC: the router's MAC remote tunnels address.
    let router_mac = loop {
        match vr.vif(&args.fabric_vif).await {
            Ok(v) => break v.config.mac,
            Err(e) => {
                warn!("waiting for vrouterd's {}: {e:#}", args.fabric_vif);
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
        }
    };
    let bgp = Gobgp {
        host: args.gobgp_host.clone(),
        port: args.gobgp_port,
        nexthop: args.fabric_ip,
        router_mac,
    };
    info!(fabric_ip = %args.fabric_ip, %router_mac, "vrouter-bgp starting");
    let updates = bgp.watch();
    let rib = Rib::new(args.preference());
    let mut d = Daemon {
        args,
        vr,
        bgp,
        local: Local::default(),
        advertised: BTreeMap::new(),
        installed: Installed::default(),
        mapped: BTreeMap::new(),
        conflicts: BTreeSet::new(),
        rib,
        updates,
        settle: None,
        rib_changed: tokio::time::Instant::now(),
        synced_at: None,
        local_changed: None,
    };
    loop {
        if let Err(e) = d.run().await {
            warn!("{e:#}; starting over");
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use control_api::dataplane::TableChange;
    use control_api::journal::RoutingRecord;

    /// Best paths as gobgpd's watch sends them: a VPNv4 best path, then its withdrawal.
    #[test]
    fn the_rib_follows_watched_paths_and_withdrawals() {
        let paths = vec![api::tests::watched(&api::tests::vpnv4(
            "198.18.5.0",
            24,
            2002,
            "198.19.0.2",
        ))];
        let prefer = Preference {
            mpls: Encap::MplsUdp,
            family: Family::Evpn,
        };
        let mut rib = Rib::new(prefer);
        assert!(rib.learned(None).is_err(), "no table read yet");
        for table in 0..3 {
            rib.apply(RibUpdate::Table {
                table,
                paths: Vec::new(),
            });
        }
        assert!(rib.reloaded());
        assert!(!rib.reloaded(), "said once");
        assert_eq!(rib.take_changed(), None, "read whole: anything changed");
        assert_eq!(rib.take_changed(), Some(BTreeSet::new()));
        rib.apply(RibUpdate::Paths {
            table: 1,
            paths: paths.clone(),
        });
        let prefix: IpPrefix = "198.18.5.0/24".parse().unwrap();
        assert_eq!(rib.take_changed(), Some(BTreeSet::from([prefix])));
        let other: BTreeSet<IpPrefix> = BTreeSet::from(["198.18.6.0/24".parse().unwrap()]);
        assert!(
            rib.learned(Some(&other)).unwrap().is_empty(),
            "out of scope"
        );
        let l = rib.learned(None).unwrap();
        assert_eq!(l.len(), 1);
        assert_eq!(
            (l[0].prefix.to_string(), l[0].label, l[0].encap),
            ("198.18.5.0/24".to_string(), 2002, Encap::MplsUdp)
        );
        // The same path again changes nothing; its withdrawal removes it.
        rib.apply(RibUpdate::Paths {
            table: 1,
            paths: paths.clone(),
        });
        assert_eq!(rib.learned(None).unwrap().len(), 1);
        let mut gone = paths;
        gone[0].is_withdraw = true;
        gone[0].pattrs.clear();
        rib.take_changed();
        rib.apply(RibUpdate::Paths {
            table: 1,
            paths: gone,
        });
        assert!(rib.learned(None).unwrap().is_empty());
        assert_eq!(
            rib.take_changed(),
            Some(BTreeSet::from([prefix])),
            "a withdrawal changes its prefix"
        );
        // gobgpd gone: unknown until read again.
        rib.apply(RibUpdate::Lost { table: 0 });
        assert!(rib.learned(None).is_err());
    }

    fn change<T: serde::Serialize>(c: T) -> Value {
        serde_json::to_value(c).expect("json")
    }

    /// The change stream's own forms (vrouterd's serde) of a pod, an identity with a label and
    /// that label's mapping: the pod route is advertised as VPN only while the label leads to
    /// the VRF, as EVPN too when the identity has a VNI.
    #[test]
    fn stream_changes_feed_vpn_adverts_gated_by_the_label_mapping() {
        let mut l = Local::default();
        let prefix: IpPrefix = "198.18.11.2/32".parse().unwrap();
        let mut routing = VrfRouting {
            rd: "198.19.0.1:1".into(),
            import_targets: vec!["target:64512:1".into()],
            export_targets: vec!["target:64512:1".into()],
            vni: None,
            label: Some(2001),
        };
        for c in [
            change(TableChange::NexthopSet {
                id: 1,
                nexthop: Nexthop::Encap {
                    vif: "pod1".into(),
                    dmac: MacAddr([2, 0, 0, 0, 0x11, 2]),
                },
            }),
            change(TableChange::RouteSet {
                vrf: 1,
                route: Route {
                    prefix,
                    nexthop: 1,
                    label: None,
                },
            }),
            change(RoutingRecord::VrfRoutingSet {
                vrf: 1,
                routing: routing.clone(),
            }),
        ] {
            assert!(l.apply(&c), "{c}");
        }
        let gated = |l: &Local| {
            let mpls = &l.mpls;
            l.adverts(Encap::MplsGre, |label, vrf| {
                mpls.get(&label) == Some(&MplsTarget::Vrf(vrf))
            })
        };
        assert!(
            gated(&l).is_empty(),
            "advertised before the label leads to the vrf"
        );

        assert!(l.apply(&change(TableChange::MplsVrfSet {
            label: 2001,
            vrf: 1
        })));
        let got = gated(&l);
        let a = &got[&(1, prefix, Family::Vpn)];
        assert_eq!(
            a.overlay,
            Overlay::Vpn {
                label: 2001,
                encap: Encap::MplsGre
            }
        );
        assert_eq!(
            (a.rd.as_str(), a.targets.clone()),
            ("198.19.0.1:1", vec!["64512:1".to_string()])
        );

        // A VNI too: both families.
        routing.vni = Some(1001);
        assert!(l.apply(&change(RoutingRecord::VrfRoutingSet { vrf: 1, routing })));
        let keys: Vec<Family> = gated(&l).keys().map(|k| k.2).collect();
        assert_eq!(keys, [Family::Evpn, Family::Vpn]);

        // The label led elsewhere, or nowhere: no VPN advert.
        assert!(l.apply(&change(TableChange::MplsSet {
            label: 2001,
            nexthop: 1
        })));
        assert_eq!(
            gated(&l).keys().map(|k| k.2).collect::<Vec<_>>(),
            [Family::Evpn]
        );
        assert!(l.apply(&change(TableChange::MplsDel { label: 2001 })));
        assert!(l.mpls.is_empty());
    }
}
