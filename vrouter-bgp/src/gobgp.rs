//! gobgpd: its best paths followed through its gRPC API (`WatchEvent`, the table whole first,
//! then each change) as [`RibUpdate`]s, and its peers asked about there (`ListPeer`); EVPN
//! type-5 and VPNv4/VPNv6 routes originated and withdrawn in its global RIB through its
//! command line (`gobgp`, shipped with gobgpd).

use std::net::IpAddr;

use anyhow::{bail, Context};
use control_api::api::{IpPrefix, MacAddr};
use tokio::process::Command;
use tokio::sync::mpsc;

use crate::rib::{Encap, Family};

/// How one route this node originates reaches it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Overlay {
    /// EVPN type-5 with the VNI, the VXLAN encapsulation community and the router's MAC.
    Evpn { vni: u32 },
    /// VPNv4/VPNv6 with the MPLS label and the encapsulation community of `encap`.
    Vpn { label: u32, encap: Encap },
}

/// One route this node originates.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Advert {
    pub prefix: IpPrefix,
    /// Route distinguisher, `ASN:N` or `IPv4:N`.
    pub rd: String,
    /// Route targets, `ASN:N` or `IPv4:N` (no `target:`).
    pub targets: Vec<String>,
    pub overlay: Overlay,
}

impl Advert {
    pub fn family(&self) -> Family {
        match self.overlay {
            Overlay::Evpn { .. } => Family::Evpn,
            Overlay::Vpn { .. } => Family::Vpn,
        }
    }
}

pub struct Gobgp {
    /// gobgpd's gRPC address (`-u HOST -p PORT`).
    pub host: String,
    pub port: u16,
    /// This node's tunnel endpoint and fabric MAC: every route's next hop and router's MAC.
    pub nexthop: IpAddr,
    pub router_mac: MacAddr,
}

/// `gobgp`'s name of an address family, for a prefix of that family.
fn afi(family: Family, prefix: &IpPrefix) -> &'static str {
    match (family, prefix.addr()) {
        (Family::Evpn, _) => "evpn",
        (Family::Vpn, IpAddr::V4(_)) => "vpnv4",
        (Family::Vpn, IpAddr::V6(_)) => "vpnv6",
    }
}

impl Gobgp {
    async fn run(&self, args: &[String]) -> anyhow::Result<Vec<u8>> {
        let out = Command::new("gobgp")
            .arg("-u")
            .arg(&self.host)
            .arg("-p")
            .arg(self.port.to_string())
            .args(args)
            .kill_on_drop(true)
            .output()
            .await
            .context("running gobgp")?;
        if !out.status.success() {
            bail!(
                "gobgp {}: {}{}",
                args.join(" "),
                String::from_utf8_lossy(&out.stdout).trim(),
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        Ok(out.stdout)
    }

    /// `global rib -a FAMILY add|del NLRI`: the words naming the route (GoBGP keys VPN routes
    /// by RD and prefix, but its parser wants a label in a `del` too).
    fn nlri(a: &Advert, verb: &str) -> Vec<String> {
        let mut v: Vec<String> = ["global", "rib", "-a", afi(a.family(), &a.prefix), verb]
            .map(String::from)
            .to_vec();
        match a.overlay {
            Overlay::Evpn { .. } => {
                v.extend(["prefix".into(), a.prefix.to_string()]);
                if matches!(a.prefix.addr(), IpAddr::V6(_)) {
                    v.extend(["gw".into(), "::".into()]);
                }
                v.extend(["etag".into(), "0".into(), "rd".into(), a.rd.clone()]);
            }
            Overlay::Vpn { label, .. } => {
                v.push(a.prefix.to_string());
                v.extend(["label".into(), label.to_string(), "rd".into(), a.rd.clone()]);
            }
        }
        v
    }

    pub async fn add(&self, a: &Advert) -> anyhow::Result<()> {
        let mut args = Self::nlri(a, "add");
        if let Overlay::Evpn { vni } = a.overlay {
            args.extend(["label".into(), vni.to_string()]);
        }
        args.push("rt".into());
        args.extend(a.targets.iter().cloned());
        match a.overlay {
            Overlay::Evpn { .. } => args.extend([
                "encap".into(),
                "vxlan".into(),
                "router-mac".into(),
                self.router_mac.to_string(),
            ]),
            Overlay::Vpn { encap, .. } => args.extend([
                "encap".into(),
                match encap {
                    Encap::MplsGre => "mpls-in-gre",
                    _ => "mpls-in-udp",
                }
                .into(),
            ]),
        }
        args.extend(["nexthop".into(), self.nexthop.to_string()]);
        self.run(&args).await.map(drop)
    }

    pub async fn del(&self, a: &Advert) -> anyhow::Result<()> {
        self.run(&Self::nlri(a, "del")).await.map(drop)
    }

    /// Whether gobgpd has all its peers' routes: every peer's session is up and has sent
    /// End-of-RIB for each family it does graceful restart in (`ListPeer` on its gRPC API).
    pub async fn peers_synced(&self) -> anyhow::Result<bool> {
        use crate::api::apipb::{self, gobgp_api_client::GobgpApiClient};
        let mut client = GobgpApiClient::connect(format!("http://{}:{}", self.host, self.port))
            .await
            .context("connecting to gobgpd's gRPC API")?;
        let mut peers = client
            .list_peer(apipb::ListPeerRequest::default())
            .await
            .context("listing gobgpd's peers")?
            .into_inner();
        let mut all = Vec::new();
        while let Some(p) = peers.message().await.context("listing gobgpd's peers")? {
            all.extend(p.peer);
        }
        Ok(peers_synced(&all))
    }

    /// Follows the best paths of every table in [`TABLES`] in the background, sending
    /// [`RibUpdate`]s on the returned channel: first each table whole ([`RibUpdate::Table`],
    /// as gobgpd's watch starts with them, so nothing falls between), then each change; when
    /// gobgpd goes away, [`RibUpdate::Lost`] for each, and the same again once it is back.
    pub fn watch(&self) -> mpsc::UnboundedReceiver<RibUpdate> {
        let (tx, rx) = mpsc::unbounded_channel();
        let g = Gobgp {
            host: self.host.clone(),
            port: self.port,
            nexthop: self.nexthop,
            router_mac: self.router_mac,
        };
        tokio::spawn(async move {
            loop {
                if let Err(e) = g.monitor(&tx).await {
                    tracing::debug!("following gobgpd's tables: {e:#}");
                }
                for table in 0..TABLES.len() {
                    if tx.send(RibUpdate::Lost { table }).is_err() {
                        return;
                    }
                }
                tokio::time::sleep(std::time::Duration::from_millis(200)).await;
            }
        });
        rx
    }

    /// One watch of gobgpd's best paths (`WatchEvent` with the current ones first: the whole
    /// tables, then each change), until it ends.
    async fn monitor(&self, tx: &mpsc::UnboundedSender<RibUpdate>) -> anyhow::Result<()> {
        use crate::api::apipb::{self, watch_event_request};
        let channel =
            tonic::transport::Endpoint::from_shared(format!("http://{}:{}", self.host, self.port))?
                .connect()
                .await
                .context("connecting to gobgpd's gRPC API")?;
        let request = apipb::WatchEventRequest {
            peer: None,
            table: Some(watch_event_request::Table {
                filters: vec![watch_event_request::table::Filter {
                    r#type: watch_event_request::table::filter::Type::Best as i32,
                    init: true,
                }],
            }),
        };
        // The generated client's WatchEvent, reading only what vrouter-bgp uses of each path,
        // in place ([`crate::api::WatchEvent`]).
        let mut grpc = tonic::client::Grpc::new(channel).max_decoding_message_size(usize::MAX);
        grpc.ready()
            .await
            .context("connecting to gobgpd's gRPC API")?;
        let codec =
            tonic::codec::ProstCodec::<apipb::WatchEventRequest, crate::api::WatchEvent>::default();
        let method =
            tonic::codegen::http::uri::PathAndQuery::from_static("/apipb.GobgpApi/WatchEvent");
        let mut events = grpc
            .server_streaming(tonic::Request::new(request), method, codec)
            .await
            .context("watching gobgpd's best paths")?
            .into_inner();
        let mut whole = true;
        while let Some(event) = events.message().await? {
            let Some(t) = event.table else {
                continue;
            };
            // The whole table comes in one message.
            let mut by_table: [Vec<crate::api::Path>; 3] = Default::default();
            for p in t.paths {
                if let Some(table) = crate::api::table_of(p.family.as_ref()) {
                    by_table[table].push(p);
                }
            }
            for (table, paths) in by_table.into_iter().enumerate() {
                let u = if whole {
                    RibUpdate::Table { table, paths }
                } else if paths.is_empty() {
                    continue;
                } else {
                    RibUpdate::Paths { table, paths }
                };
                if tx.send(u).is_err() {
                    return Ok(());
                }
            }
            whole = false;
        }
        bail!("gobgpd's best-path watch ended")
    }
}

/// [`Gobgp::peers_synced`] of gobgpd's peers: each established, with End-of-RIB received in
/// every family graceful restart was agreed for.
fn peers_synced(peers: &[crate::api::apipb::Peer]) -> bool {
    use crate::api::apipb::peer_state::SessionState;
    peers.iter().all(|p| {
        p.state
            .as_ref()
            .is_some_and(|s| s.session_state == SessionState::Established as i32)
            && p.afi_safis.iter().all(|a| {
                let s = a
                    .mp_graceful_restart
                    .as_ref()
                    .and_then(|g| g.state.as_ref());
                s.is_none_or(|s| !s.enabled || s.end_of_rib_received)
            })
    })
}

/// The tables vrouter-bgp follows: each family's, with `gobgp`'s name for it.
pub const TABLES: [(Family, &str); 3] = [
    (Family::Evpn, "evpn"),
    (Family::Vpn, "vpnv4"),
    (Family::Vpn, "vpnv6"),
];

/// What changed in one of [`TABLES`] (by index): paths as GoBGP's API sends them.
#[derive(Debug)]
pub enum RibUpdate {
    /// Every best path of the table: what it holds replaces what was known.
    Table {
        table: usize,
        paths: Vec<crate::api::Path>,
    },
    /// New best paths, and withdrawn ones (`is_withdraw`).
    Paths {
        table: usize,
        paths: Vec<crate::api::Path>,
    },
    /// The table cannot be followed (gobgpd is gone): what it held is unknown until the next
    /// [`RibUpdate::Table`].
    Lost { table: usize },
}

#[cfg(test)]
mod tests {
    use super::*;

    /// gobgpd's peers (`ListPeer`): synced once every peer is established and has sent
    /// End-of-RIB in each family graceful restart was agreed for.
    #[test]
    fn peers_are_synced_once_each_is_up_with_end_of_rib_where_agreed() {
        use crate::api::apipb::{self, peer_state::SessionState};
        let family = |gr: bool, eor: bool| apipb::AfiSafi {
            mp_graceful_restart: Some(apipb::MpGracefulRestart {
                state: Some(apipb::MpGracefulRestartState {
                    enabled: gr,
                    end_of_rib_received: eor,
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        };
        let peer = |state: SessionState, families: Vec<apipb::AfiSafi>| apipb::Peer {
            state: Some(apipb::PeerState {
                neighbor_address: "198.51.100.254".into(),
                session_state: state as i32,
                ..Default::default()
            }),
            afi_safis: families,
            ..Default::default()
        };
        let up = peer(
            SessionState::Established,
            vec![family(true, true), family(false, false)],
        );
        assert!(peers_synced(std::slice::from_ref(&up)));
        assert!(peers_synced(&[]), "no peers: nothing to wait for");
        assert!(!peers_synced(&[
            up.clone(),
            peer(SessionState::Established, vec![family(true, false)])
        ]));
        // Idle, or connecting: its routes are still to come.
        assert!(!peers_synced(&[peer(
            SessionState::Idle,
            vec![family(false, false)]
        )]));
        assert!(!peers_synced(&[apipb::Peer::default()]));
    }
}
