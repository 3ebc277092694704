//! Kernel pods' interfaces, through iproute2's `ip` (on every node) and util-linux's `nsenter`
//! for commands inside the pod's namespace: no netlink code of our own, and no `setns` (which
//! would need `unsafe`, forbidden in this workspace).

use std::io::Write;
use std::net::IpAddr;
use std::path::Path;
use std::process::{Command, Stdio};

use crate::error::{code, CniError, Result};

fn fail(what: &str, detail: impl std::fmt::Display) -> CniError {
    CniError::new(code::INTERFACE_FAILURE, format!("{what}: {detail}"))
}

/// Runs a command; its stderr becomes the error.
fn run(what: &str, cmd: &mut Command, stdin: Option<&str>) -> Result<String> {
    cmd.stdin(if stdin.is_some() {
        Stdio::piped()
    } else {
        Stdio::null()
    })
    .stdout(Stdio::piped())
    .stderr(Stdio::piped());
    let mut child = cmd.spawn().map_err(|e| fail(what, e))?;
    if let (Some(text), Some(mut i)) = (stdin, child.stdin.take()) {
        i.write_all(text.as_bytes()).map_err(|e| fail(what, e))?;
    }
    let out = child.wait_with_output().map_err(|e| fail(what, e))?;
    if !out.status.success() {
        return Err(fail(
            what,
            String::from_utf8_lossy(&out.stderr).trim().to_string(),
        ));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

fn ip(args: &[&str]) -> Command {
    let mut c = Command::new("ip");
    c.args(args);
    c
}

/// `ip …` inside the namespace at `netns`.
fn ns_ip(netns: &Path, args: &[&str]) -> Command {
    let mut c = Command::new("nsenter");
    c.arg(format!("--net={}", netns.display()))
        .arg("ip")
        .args(args);
    c
}

/// Whether a host interface exists.
pub fn host_link_exists(name: &str) -> bool {
    Path::new("/sys/class/net").join(name).exists()
}

/// What a kernel pod's interface gets.
pub struct VethPlan<'a> {
    pub host: &'a str,
    pub netns: &'a Path,
    pub ifname: &'a str,
    pub mac: &'a str,
    pub mtu: u32,
    /// `address/len` with its gateway.
    pub ips: &'a [(String, IpAddr)],
}

/// Creates the veth with its pod end in `netns` (named, addressed, up, default routes via the
/// gateways) and its host end up with IPv6 off (the host must not talk on a pod's link). The
/// kernel's default offloads stay on at both ends, as container runtimes leave them.
pub fn create_veth(p: &VethPlan) -> Result<()> {
    let mtu = p.mtu.to_string();
    let ns = p.netns.display().to_string();
    if !p.netns.exists() {
        return Err(CniError::new(
            code::INVALID_ENV,
            format!("CNI_NETNS {ns} does not exist"),
        ));
    }
    if run(
        "looking for the interface in the pod",
        &mut ns_ip(p.netns, &["link", "show", "dev", p.ifname]),
        None,
    )
    .is_ok()
    {
        return Err(CniError::new(
            code::INTERFACE_FAILURE,
            format!(
                "the pod's namespace {ns} already has an interface {:?}: choose another CNI_IFNAME",
                p.ifname
            ),
        ));
    }
    run(
        &format!("creating veth {} for {} in {ns}", p.host, p.ifname),
        &mut ip(&[
            "link", "add", p.host, "mtu", &mtu, "type", "veth", "peer", "name", p.ifname,
            "address", p.mac, "mtu", &mtu, "netns", &ns,
        ]),
        None,
    )?;
    // IPv6 off on the host end: no router solicitations or MLD from the host into the pod's
    // network. Best effort: a host without IPv6 has no such file.
    let _ = std::fs::write(
        format!("/proc/sys/net/ipv6/conf/{}/disable_ipv6", p.host),
        "1",
    );
    run(
        &format!("bringing up {}", p.host),
        &mut ip(&["link", "set", p.host, "up"]),
        None,
    )?;
    if p.ips.iter().any(|(_, gw)| gw.is_ipv6()) {
        let mut c = Command::new("nsenter");
        c.arg(format!("--net={ns}")).args([
            "sysctl",
            "-qw",
            &format!("net.ipv6.conf.{}.disable_ipv6=0", p.ifname),
        ]);
        run("enabling IPv6 in the pod", &mut c, None)?;
    }
    let mut batch = String::new();
    for (cidr, gw) in p.ips {
        // Batch lines take no family option: the address says it.
        if gw.is_ipv6() {
            batch.push_str(&format!("addr add {cidr} dev {} nodad\n", p.ifname));
        } else {
            batch.push_str(&format!("addr add {cidr} dev {}\n", p.ifname));
        }
    }
    batch.push_str(&format!("link set {} up\n", p.ifname));
    for (_, gw) in p.ips {
        let dst = if gw.is_ipv6() { "::/0" } else { "0.0.0.0/0" };
        batch.push_str(&format!("route replace {dst} via {gw} dev {}\n", p.ifname));
    }
    run(
        &format!("addressing {} in {ns}", p.ifname),
        &mut ns_ip(p.netns, &["-batch", "-"]),
        Some(&batch),
    )?;
    Ok(())
}

/// Deletes the veth by its host end (the pod end goes with it); gone already is fine.
pub fn delete_veth(host: &str) -> Result<()> {
    if !host_link_exists(host) {
        return Ok(());
    }
    match run(
        &format!("deleting veth {host}"),
        &mut ip(&["link", "del", host]),
        None,
    ) {
        Ok(_) => Ok(()),
        Err(_) if !host_link_exists(host) => Ok(()),
        Err(e) => Err(e),
    }
}

/// The pod end's addresses (`address/len`) and whether it is up, as the namespace sees them.
pub fn pod_addresses(netns: &Path, ifname: &str) -> Result<(Vec<String>, String)> {
    let out = run(
        &format!("reading {ifname} in {}", netns.display()),
        &mut ns_ip(netns, &["-j", "addr", "show", "dev", ifname]),
        None,
    )?;
    let v: serde_json::Value =
        serde_json::from_str(&out).map_err(|e| fail("reading `ip -j addr`", e))?;
    let link = v.get(0).cloned().unwrap_or_default();
    let addrs = link["addr_info"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|i| {
                    Some(format!(
                        "{}/{}",
                        i["local"].as_str()?,
                        i["prefixlen"].as_u64()?
                    ))
                })
                .collect()
        })
        .unwrap_or_default();
    Ok((addrs, link["address"].as_str().unwrap_or("").to_string()))
}

/// The pod's default route gateways.
pub fn pod_default_gateways(netns: &Path) -> Result<Vec<String>> {
    let mut gws = Vec::new();
    for fam in ["-4", "-6"] {
        let out = run(
            "reading the pod's routes",
            &mut ns_ip(netns, &[fam, "-j", "route", "show", "default"]),
            None,
        )?;
        let v: serde_json::Value = serde_json::from_str(&out).unwrap_or_default();
        for r in v.as_array().into_iter().flatten() {
            if let Some(g) = r["gateway"].as_str() {
                gws.push(g.to_string());
            }
        }
    }
    Ok(gws)
}
