//! `vrouter-bgp`: a node's BGP control plane. It follows vrouterd's change stream (`GET
//! /events`, re-reading the state on a reset), originates every local pod route of each VRF
//! that has a routing identity with a VNI as an EVPN type-5 route in the node's gobgpd
//! (route distinguisher, export route targets, the VNI as label, the VXLAN encapsulation
//! community, the fabric MAC as router's MAC, the fabric address as next hop), and installs
//! the best paths gobgpd learns from its peers into the VRFs importing their route targets:
//! one tunnel nexthop per remote node, an ECMP nexthop when several nodes advertise a prefix,
//! routes carrying the VNI. Routes a peer withdraws (or that go with a session) are removed.
//!
//! gobgpd is driven through its `gobgp` command line (which uses gobgpd's gRPC API).

mod gobgp;
mod rib;

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use clap::Parser;
use control_api::api::{IpPrefix, MacAddr, Nexthop, Route, RouteTag, TunnelEncap, VrfRouting};
use control_api::Client;
use serde_json::Value;
use tracing::{info, warn};

use gobgp::{Advert, Gobgp};
use rib::{Endpoint, Remote};

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
    /// How often gobgpd's RIB is read for learned routes, in milliseconds.
    #[arg(long, default_value_t = 300)]
    poll_ms: u64,
}

/// What vrouterd holds that matters here, kept current from the change stream.
#[derive(Default)]
struct Local {
    routing: BTreeMap<u32, VrfRouting>,
    routes: BTreeMap<(u32, IpPrefix), Route>,
    nexthops: BTreeMap<u32, Nexthop>,
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

    /// What this node advertises: each pod route of each VRF with a VNI.
    fn adverts(&self) -> BTreeMap<(u32, IpPrefix), Advert> {
        self.pod_routes()
            .into_iter()
            .filter_map(|(vrf, prefix)| {
                let r = self.routing.get(&vrf)?;
                let targets = r
                    .export_targets
                    .iter()
                    .filter_map(|t| RouteTag::parse_target(t).ok())
                    .map(|t| t.to_string())
                    .collect();
                Some((
                    (vrf, prefix),
                    Advert {
                        prefix,
                        rd: r.rd.clone(),
                        targets,
                        vni: r.vni?,
                    },
                ))
            })
            .collect()
    }
}

fn field<T: serde::de::DeserializeOwned>(ch: &Value, k: &str) -> Option<T> {
    serde_json::from_value(ch[k].clone()).ok()
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

struct Daemon {
    args: Args,
    vr: Client,
    bgp: Gobgp,
    local: Local,
    advertised: BTreeMap<(u32, IpPrefix), Advert>,
    installed: Installed,
}

impl Daemon {
    /// Removes what an earlier run left: routes to its nexthops, the nexthops, and the routes
    /// it originated in gobgpd.
    async fn clean_up(&mut self) -> anyhow::Result<()> {
        let ours = |id: u32| (TUNNEL_IDS.0..=ECMP_IDS.1).contains(&id);
        let stale: Vec<(u32, IpPrefix)> = self
            .local
            .routes
            .iter()
            .filter(|(_, r)| ours(r.nexthop))
            .map(|(k, _)| *k)
            .collect();
        for (vrf, prefix) in stale {
            self.vr.route_del(vrf, &prefix).await?;
            self.local.routes.remove(&(vrf, prefix));
        }
        let mut ids: Vec<u32> = self
            .local
            .nexthops
            .keys()
            .copied()
            .filter(|i| ours(*i))
            .collect();
        ids.sort_by_key(|i| std::cmp::Reverse(*i)); // ECMP groups before their members
        for id in ids {
            self.vr.nexthop_del(id).await?;
            self.local.nexthops.remove(&id);
        }
        let mut ignored = Vec::new();
        let rib = self.bgp.rib().await?;
        for l in rib::best_paths(&rib, &mut ignored) {
            if l.nexthop == self.args.fabric_ip {
                // The RD is not in Learned: withdraw under every RD this node uses.
                for r in self.local.routing.values() {
                    let a = Advert {
                        prefix: l.prefix,
                        rd: r.rd.clone(),
                        targets: Vec::new(),
                        vni: l.vni,
                    };
                    let _ = self.bgp.del(&a).await;
                }
            }
        }
        Ok(())
    }

    async fn advertise(&mut self) {
        let want = self.local.adverts();
        let gone: Vec<_> = self
            .advertised
            .iter()
            .filter(|(k, a)| want.get(k) != Some(a))
            .map(|(k, a)| (*k, a.clone()))
            .collect();
        for (k, a) in gone {
            match self.bgp.del(&a).await {
                Ok(()) => {
                    info!(vrf = k.0, prefix = %k.1, "withdrawn");
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
                    info!(vrf = k.0, prefix = %k.1, vni = a.vni, rd = %a.rd, "advertised");
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
            encap: TunnelEncap::Vxlan,
            vif: self.args.fabric_vif.clone(),
            sip: self.args.fabric_ip,
            dip: ep.ip,
            dmac: Some(MacAddr(ep.mac)),
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

    async fn install(&mut self) -> anyhow::Result<()> {
        let rib = match self.bgp.rib().await {
            Ok(rib) => rib,
            Err(e) => {
                // gobgpd is gone or restarting: what it had is lost, advertise it all again.
                self.advertised.clear();
                return Err(e);
            }
        };
        let mut ignored = Vec::new();
        let learned = rib::best_paths(&rib, &mut ignored);
        // A route of this node's missing from the RIB (gobgpd restarted between two reads) is
        // advertised again.
        let own: BTreeSet<IpPrefix> = learned
            .iter()
            .filter(|l| l.nexthop == self.args.fabric_ip)
            .map(|l| l.prefix)
            .collect();
        self.advertised.retain(|_, a| own.contains(&a.prefix));
        let want = rib::imports(
            &learned,
            &self.local.routing,
            self.args.fabric_ip,
            &self.local.pod_routes(),
            &mut ignored,
        );
        for i in &ignored {
            tracing::debug!("ignored: {i}");
        }
        let gone: Vec<(u32, IpPrefix)> = self
            .installed
            .routes
            .keys()
            .filter(|k| !want.contains_key(k))
            .copied()
            .collect();
        for (vrf, prefix) in gone {
            self.vr.route_del(vrf, &prefix).await?;
            self.installed.routes.remove(&(vrf, prefix));
            info!(vrf, %prefix, "remote route removed");
        }
        for (k, remote) in want {
            if self.installed.routes.get(&k) == Some(&remote) {
                continue;
            }
            let nexthop = self.nexthop_for(&remote).await?;
            let route = Route {
                prefix: k.1,
                nexthop,
                label: Some(remote.vni),
            };
            self.vr.route_set(k.0, &route).await?;
            info!(vrf = k.0, prefix = %k.1, nexthop, vni = remote.vni, nodes = remote.endpoints.len(), "remote route installed");
            self.installed.routes.insert(k, remote);
        }
        self.release_unused().await
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

    /// Follows the change stream; re-reads the state when it says reset.
    async fn run(&mut self) -> anyhow::Result<()> {
        let mut first = self.vr.events(0, None, 0).await?;
        let (mut epoch, mut revision) = (first.epoch.clone(), first.revision);
        self.local = Local::read(&self.vr).await?;
        self.clean_up().await?;
        first.events.clear();
        let poll = Duration::from_millis(self.args.poll_ms);
        loop {
            self.advertise().await;
            if let Err(e) = self.install().await {
                warn!("installing learned routes: {e:#}");
            }
            let page = match self
                .vr
                .events(revision, Some(&epoch), poll.as_millis() as u64)
                .await
            {
                Ok(p) => p,
                Err(e) => {
                    warn!("reading vrouterd's changes: {e:#}");
                    tokio::time::sleep(poll).await;
                    continue;
                }
            };
            let mut reread = page.reset;
            for ev in &page.events {
                if !self.local.apply(&ev.change) {
                    warn!("unreadable change {}: re-reading", ev.change);
                    reread = true;
                }
            }
            if page.epoch != epoch {
                info!("vrouterd restarted: re-reading its state");
                reread = true;
            }
            (epoch, revision) = (page.epoch, page.revision);
            if reread {
                self.local = Local::read(&self.vr).await?;
                // A restarted vrouterd has none of what was installed: start over.
                if page.reset {
                    self.installed = Installed::default();
                    self.clean_up().await?;
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
    let mut d = Daemon {
        args,
        vr,
        bgp,
        local: Local::default(),
        advertised: BTreeMap::new(),
        installed: Installed::default(),
    };
    loop {
        if let Err(e) = d.run().await {
            warn!("{e:#}; starting over");
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }
}
