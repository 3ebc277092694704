//! GoBGP through its command line (`gobgp`, shipped with gobgpd, which talks to gobgpd's gRPC
//! API): originate and withdraw EVPN type-5 and VPNv4/VPNv6 routes in the global RIB, read the
//! RIB, and follow its best-path changes (`gobgp monitor global rib -j`) as [`RibUpdate`]s.

use std::net::IpAddr;

use anyhow::{bail, Context};
use control_api::api::{IpPrefix, MacAddr};
use serde_json::Value;
use tokio::io::AsyncBufReadExt;
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
    /// End-of-RIB for each family it does graceful restart in (`gobgp neighbor -j`).
    pub async fn peers_synced(&self) -> anyhow::Result<bool> {
        let out = self
            .run(&["neighbor".to_string(), "-j".to_string()])
            .await?;
        let peers: Value = serde_json::from_slice(&out).context("gobgp neighbor json")?;
        Ok(peers_synced(&peers))
    }

    /// One address family's global RIB as `gobgp -j` prints it (null when empty).
    async fn table(&self, afi: &str) -> anyhow::Result<Value> {
        let args: Vec<String> = ["global", "rib", "-a", afi, "-j"]
            .map(String::from)
            .to_vec();
        let out = self.run(&args).await?;
        let text = String::from_utf8_lossy(&out);
        if text.trim().is_empty() || text.contains("not in table") {
            return Ok(Value::Null);
        }
        serde_json::from_slice(&out).with_context(|| format!("gobgp {afi} rib json"))
    }

    /// Follows the best paths of every table in [`TABLES`] in the background, sending
    /// [`RibUpdate`]s on the returned channel: first each table whole ([`RibUpdate::Table`],
    /// read after the monitor started, so nothing falls between), then each change; when
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

    /// One run of `gobgp monitor global rib -j`, until it ends. (gobgp 3.10's monitor reports
    /// every family's best paths whatever `-a` says: each is sorted by its NLRI.)
    async fn monitor(&self, tx: &mpsc::UnboundedSender<RibUpdate>) -> anyhow::Result<()> {
        let mut child = Command::new("gobgp")
            .arg("-u")
            .arg(&self.host)
            .arg("-p")
            .arg(self.port.to_string())
            .args(["monitor", "global", "rib", "-a", "vpnv4", "-j"])
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .context("running gobgp monitor")?;
        let stdout = child.stdout.take().context("gobgp monitor's output")?;
        // The monitor runs before the tables are read: a change in between is in both, and
        // applying it again changes nothing.
        for (table, (_, afi)) in TABLES.into_iter().enumerate() {
            let whole = self.table(afi).await?;
            let mut paths = Vec::new();
            for dest in whole.as_object().into_iter().flat_map(|o| o.values()) {
                for path in dest.as_array().into_iter().flatten() {
                    if path["best"] == Value::Bool(true) {
                        paths.push(path.clone());
                    }
                }
            }
            if tx.send(RibUpdate::Table { table, paths }).is_err() {
                return Ok(());
            }
        }
        let mut lines = tokio::io::BufReader::new(stdout).lines();
        while let Some(line) = lines.next_line().await? {
            let Ok(Value::Array(paths)) = serde_json::from_str::<Value>(&line) else {
                tracing::debug!("gobgp monitor: unreadable line {line}");
                continue;
            };
            let mut by_table: [Vec<Value>; 3] = Default::default();
            for p in paths {
                if let Some(t) = table_of(&p["nlri"]) {
                    by_table[t].push(p);
                }
            }
            for (table, paths) in by_table.into_iter().enumerate() {
                if !paths.is_empty() && tx.send(RibUpdate::Paths { table, paths }).is_err() {
                    return Ok(());
                }
            }
        }
        bail!("gobgp monitor ended")
    }
}

/// [`Gobgp::peers_synced`] of `gobgp neighbor -j`'s peers: each established (session state
/// 6), with End-of-RIB received in every family graceful restart was agreed for.
fn peers_synced(peers: &Value) -> bool {
    peers.as_array().is_some_and(|ps| {
        ps.iter().all(|p| {
            p["state"]["session_state"] == 6
                && p["afi_safis"].as_array().into_iter().flatten().all(|a| {
                    let s = &a["mp_graceful_restart"]["state"];
                    s["enabled"] != true || s["end_of_rib_received"] == true
                })
        })
    })
}

/// Which of [`TABLES`] a path with this NLRI (as `gobgp -j` prints it) belongs to: EVPN routes
/// have a route type and value, VPN routes an RD and labels beside an IPv4 or IPv6 prefix;
/// other families none.
fn table_of(nlri: &Value) -> Option<usize> {
    if nlri["value"].is_object() {
        return Some(0);
    }
    if !nlri["labels"].is_array() || nlri["rd"].is_null() {
        return None;
    }
    let prefix: IpPrefix = nlri["prefix"].as_str()?.parse().ok()?;
    Some(match prefix.addr() {
        IpAddr::V4(_) => 1,
        IpAddr::V6(_) => 2,
    })
}

/// The tables vrouter-bgp follows: each family's, with `gobgp`'s name for it.
pub const TABLES: [(Family, &str); 3] = [
    (Family::Evpn, "evpn"),
    (Family::Vpn, "vpnv4"),
    (Family::Vpn, "vpnv6"),
];

/// What changed in one of [`TABLES`] (by index).
#[derive(Debug)]
pub enum RibUpdate {
    /// Every best path of the table: what it holds replaces what was known.
    Table { table: usize, paths: Vec<Value> },
    /// New best paths, and withdrawn ones (`"withdrawal": true`), as `gobgp monitor -j`
    /// prints them.
    Paths { table: usize, paths: Vec<Value> },
    /// The table cannot be followed (gobgpd is gone): what it held is unknown until the next
    /// [`RibUpdate::Table`].
    Lost { table: usize },
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn monitor_paths_are_sorted_into_tables_by_their_nlri() {
        let rd = json!({"type": 1, "admin": "198.19.0.2", "assigned": 1});
        let evpn =
            json!({"type": 5, "value": {"rd": rd, "prefix": "198.18.7.0/24", "label": 1001}});
        let v4 = json!({"prefix": "198.18.5.0/24", "labels": [2002], "rd": rd});
        let v6 = json!({"prefix": "2001:db8::/64", "labels": [2002], "rd": rd});
        let unicast = json!({"prefix": "198.18.5.0/24"});
        assert_eq!(table_of(&evpn), Some(0));
        assert_eq!(table_of(&v4), Some(1));
        assert_eq!(table_of(&v6), Some(2));
        assert_eq!(table_of(&unicast), None);
        assert_eq!(table_of(&json!(null)), None);
    }

    /// `gobgp neighbor -j` (gobgp 3.10: its API's `Peer`s, protobuf field names): synced once
    /// every peer is established and has sent End-of-RIB in each family graceful restart was
    /// agreed for.
    #[test]
    fn peers_are_synced_once_each_is_up_with_end_of_rib_where_agreed() {
        let family = |gr: bool, eor: bool| {
            json!({"config": {"family": {"afi": 1, "safi": 128}, "enabled": true},
                   "mp_graceful_restart": {"config": {"enabled": true},
                                           "state": {"enabled": gr, "end_of_rib_received": eor}}})
        };
        let peer = |state: u64, families: Vec<Value>| {
            json!({"conf": {"neighbor_address": "198.51.100.254", "peer_asn": 64512},
                   "state": {"neighbor_address": "198.51.100.254", "session_state": state},
                   "afi_safis": families})
        };
        let up = peer(6, vec![family(true, true), family(false, false)]);
        assert!(peers_synced(&json!([up.clone()])));
        assert!(peers_synced(&json!([])), "no peers: nothing to wait for");
        assert!(!peers_synced(&json!([
            up.clone(),
            peer(6, vec![family(true, false)])
        ])));
        // Idle, or connecting: its routes are still to come.
        assert!(!peers_synced(&json!([peer(1, vec![family(false, false)])])));
        assert!(!peers_synced(&json!([{"conf": {}, "state": {}}])));
        assert!(!peers_synced(&json!(null)));
    }
}
