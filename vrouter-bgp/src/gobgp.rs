//! GoBGP through its command line (`gobgp`, shipped with gobgpd, which talks to gobgpd's gRPC
//! API): originate and withdraw EVPN type-5 routes in the global RIB, and read the RIB.

use std::net::IpAddr;

use anyhow::{bail, Context};
use control_api::api::{IpPrefix, MacAddr};
use serde_json::Value;
use tokio::process::Command;

/// One EVPN type-5 route this node originates.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Advert {
    pub prefix: IpPrefix,
    /// Route distinguisher, `ASN:N` or `IPv4:N`.
    pub rd: String,
    /// Route targets, `ASN:N` or `IPv4:N` (no `target:`).
    pub targets: Vec<String>,
    pub vni: u32,
}

pub struct Gobgp {
    /// gobgpd's gRPC address (`-u HOST -p PORT`).
    pub host: String,
    pub port: u16,
    /// This node's tunnel endpoint and fabric MAC: every route's next hop and router's MAC.
    pub nexthop: IpAddr,
    pub router_mac: MacAddr,
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

    fn nlri(a: &Advert) -> Vec<String> {
        let mut v: Vec<String> = ["global", "rib", "-a", "evpn"].map(String::from).to_vec();
        v.push(String::new()); // add / del
        v.extend(["prefix".into(), a.prefix.to_string()]);
        if matches!(a.prefix.addr(), IpAddr::V6(_)) {
            v.extend(["gw".into(), "::".into()]);
        }
        v.extend(["etag".into(), "0".into(), "rd".into(), a.rd.clone()]);
        v
    }

    pub async fn add(&self, a: &Advert) -> anyhow::Result<()> {
        let mut args = Self::nlri(a);
        args[4] = "add".into();
        args.extend(["label".into(), a.vni.to_string()]);
        args.push("rt".into());
        args.extend(a.targets.iter().cloned());
        args.extend([
            "encap".into(),
            "vxlan".into(),
            "router-mac".into(),
            self.router_mac.to_string(),
            "nexthop".into(),
            self.nexthop.to_string(),
        ]);
        self.run(&args).await.map(drop)
    }

    pub async fn del(&self, a: &Advert) -> anyhow::Result<()> {
        let mut args = Self::nlri(a);
        args[4] = "del".into();
        self.run(&args).await.map(drop)
    }

    /// The global EVPN RIB as `gobgp -j` prints it (null when empty).
    pub async fn rib(&self) -> anyhow::Result<Value> {
        let args: Vec<String> = ["global", "rib", "-a", "evpn", "-j"]
            .map(String::from)
            .to_vec();
        let out = self.run(&args).await?;
        let text = String::from_utf8_lossy(&out);
        if text.trim().is_empty() || text.contains("not in table") {
            return Ok(Value::Null);
        }
        serde_json::from_slice(&out).context("gobgp rib json")
    }
}
