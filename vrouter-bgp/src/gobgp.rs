//! GoBGP through its command line (`gobgp`, shipped with gobgpd, which talks to gobgpd's gRPC
//! API): originate and withdraw EVPN type-5 and VPNv4/VPNv6 routes in the global RIB, and read
//! the RIB.

use std::net::IpAddr;

use anyhow::{bail, Context};
use control_api::api::{IpPrefix, MacAddr};
use serde_json::Value;
use tokio::process::Command;

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

    /// The global RIBs of the families vrouter-bgp speaks: EVPN, VPNv4, VPNv6.
    pub async fn rib(&self) -> anyhow::Result<Vec<(Family, Value)>> {
        let mut out = Vec::new();
        for (family, afi) in [
            (Family::Evpn, "evpn"),
            (Family::Vpn, "vpnv4"),
            (Family::Vpn, "vpnv6"),
        ] {
            out.push((family, self.table(afi).await?));
        }
        Ok(out)
    }
}
