//! Vifs: unique names, devices and interfaces, and the socket directories a vif's removal hands
//! to the vifs still inside them. What each type takes is [`config`]'s.

mod config;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

pub use config::{kernel_device_iface, VhostUserPort, VifConfig, VifPort, KERNEL_DEVICE_PREFIX};

use super::{check_unicast, Model, VIF_NAME_MAX};
use crate::api::{Policy, VifRequest};
use crate::dataplane::{VifKind, VifSpec};
use crate::error::Error;

/// A vif as the model keeps it.
#[derive(Debug, Clone)]
pub struct VifEntry {
    /// What the dataplane runs: the vif with its index and resolved socket.
    pub spec: VifSpec,
    /// What the agent asked for, as validated.
    pub config: VifConfig,
    /// Directories created for its socket (outermost first), to remove on delete if empty.
    pub created_dirs: Vec<PathBuf>,
    pub policy: Option<Policy>,
    /// vhost-user: queue pairs pinned to a forwarding lcore (queue → lcore).
    pub pins: std::collections::BTreeMap<u32, u32>,
}

impl VifEntry {
    pub fn socket(&self) -> Option<&Path> {
        match &self.spec.kind {
            VifKind::VhostUser { socket, .. } => Some(socket),
            _ => None,
        }
    }
}

/// The device a physical vif's devargs name (a PCI address or vdev name, before the first
/// `,` of its arguments): one device backs one vif, whatever arguments each names it with.
pub fn device_name(devargs: &str) -> &str {
    devargs.split(',').next().unwrap_or_default().trim()
}

impl Model {
    /// Validate everything about a new vif except its socket path (which needs the filesystem),
    /// in the order an agent fixes a request: its name, where it goes, its addresses, then the
    /// fields of its type.
    pub fn check_vif_add(&self, req: &VifRequest) -> Result<VifConfig, Error> {
        check_name("name", &req.name, VIF_NAME_MAX)?;
        self.check_vif_name_free(&req.name)?;
        self.require_vrf_ref(req.vrf)?;
        check_unicast("mac", req.mac)?;
        let mtu = config::mtu(req)?;
        config::check_addresses(req)?;
        let dhcp = config::dhcp(req)?;
        let port = VifPort::from_request(req)?;
        self.check_port_free(&port)?;
        self.check_fabric_carries(req, &port, mtu)?;
        Ok(VifConfig {
            name: req.name.clone(),
            vrf: req.vrf,
            mac: req.mac,
            ip: req.ip,
            ip6: req.ip6,
            mtu,
            port,
            dhcp,
        })
    }

    fn check_vif_name_free(&self, name: &str) -> Result<(), Error> {
        if self.vifs.contains_key(name) {
            return Err(Error::AlreadyExists {
                what: "vif",
                key: name.to_owned(),
                hint: "delete it first or pick another name".to_string(),
            });
        }
        Ok(())
    }

    /// A device or kernel interface backs one vif. (Sockets are the controller's to check:
    /// where one lies is known only once it is resolved.)
    fn check_port_free(&self, port: &VifPort) -> Result<(), Error> {
        let attached = |what: &'static str, key: &str, other: &VifEntry| Error::AlreadyExists {
            what,
            key: key.to_owned(),
            hint: format!("it is attached as vif {}", other.spec.name),
        };
        match port {
            VifPort::VhostUser(_) => Ok(()),
            VifPort::Physical { device } if kernel_device_iface(device).is_none() => {
                // The same device with other arguments is still the same device.
                let name = device_name(device);
                let used = |v: &&VifEntry| v.config.port.device().map(device_name) == Some(name);
                match self.vifs.values().find(used) {
                    Some(other) => Err(attached("device", name, other)),
                    None => Ok(()),
                }
            }
            VifPort::Physical { .. } | VifPort::AfPacket { .. } | VifPort::Tap { .. } => {
                let iface = port.kernel_iface().unwrap_or_default();
                let used = |v: &&VifEntry| v.config.port.kernel_iface() == Some(iface);
                match self.vifs.values().find(used) {
                    Some(other) => Err(attached("iface", iface, other)),
                    None => Ok(()),
                }
            }
        }
    }

    /// A vif whose traffic may be tunnelled (in a VRF other than the fabric's 0, not itself
    /// physical) fits the fabric once encapsulated: its MTU is at most the fabric vif's less the
    /// largest tunnel headroom, or its large packets could never cross to another node (DF or
    /// IPv6 ones bounce with "too big", the others are dropped: the data path does not
    /// fragment). Checked against the fabric of the moment; without one nothing limits it here.
    fn check_fabric_carries(
        &self,
        req: &VifRequest,
        port: &VifPort,
        mtu: u32,
    ) -> Result<(), Error> {
        if req.vrf == 0 || matches!(port, VifPort::Physical { .. }) {
            return Ok(());
        }
        let is_fabric =
            |v: &&VifEntry| v.config.vrf == 0 && matches!(v.config.port, VifPort::Physical { .. });
        let Some(fabric) = self
            .vifs
            .values()
            .filter(is_fabric)
            .max_by_key(|v| v.config.mtu)
        else {
            return Ok(());
        };
        let headroom = tunnel_headroom();
        let limit = fabric.config.mtu.saturating_sub(headroom);
        if mtu <= limit {
            return Ok(());
        }
        // 409, not 400: the request is fine by itself; the fabric of the moment is the limit.
        let default = if req.mtu.is_none() {
            " (the default)"
        } else {
            ""
        };
        Err(Error::Conflict(format!(
            "field `mtu`: {mtu}{default} is more than the fabric carries: fabric vif {} has MTU \
             {}, tunnels add up to {headroom} bytes (VXLAN), so a vif in VRF {} takes at most \
             MTU {limit}; lower this MTU or raise the fabric's (--fabric-mtu)",
            fabric.spec.name, fabric.config.mtu, req.vrf,
        )))
    }

    /// The vif that already uses this socket path, if any.
    pub fn socket_user(&self, path: &Path) -> Option<&str> {
        self.vifs
            .values()
            .find(|v| v.socket() == Some(path))
            .map(|v| v.spec.name.as_str())
    }

    /// The lowest free vif index.
    pub fn free_vif_index(&self) -> u32 {
        let used: BTreeSet<u32> = self.vifs.values().map(|v| v.spec.index).collect();
        (0..).find(|i| !used.contains(i)).unwrap_or(0)
    }

    /// Queue pair `queue` of vif `name` is pinned to forwarding lcore `lcore`.
    pub fn commit_queue_pin(&mut self, name: &str, queue: u32, lcore: u32) {
        if let Some(v) = self.vifs.get_mut(name) {
            v.pins.insert(queue, lcore);
        }
    }

    pub fn vif(&self, name: &str) -> Result<&VifEntry, Error> {
        self.vifs.get(name).ok_or_else(|| Error::NotFound {
            what: "vif",
            key: name.to_string(),
        })
    }

    pub fn vifs(&self) -> impl Iterator<Item = &VifEntry> {
        self.vifs.values()
    }

    pub fn check_vif_del(&self, name: &str) -> Result<&VifEntry, Error> {
        let vif = self.vif(name)?;
        let users: Vec<String> = self
            .nexthops
            .iter()
            .filter(|(_, nh)| nh.vif() == Some(name))
            .map(|(id, _)| format!("nexthop {id}"))
            .collect();
        if !users.is_empty() {
            return Err(Error::InUse {
                what: "vif",
                key: name.to_string(),
                users,
            });
        }
        Ok(vif)
    }

    pub fn commit_vif_add(&mut self, entry: VifEntry) {
        self.vifs.insert(entry.spec.name.clone(), entry);
    }

    /// Remove a vif; returns it and the created directories that still hold other vifs'
    /// sockets, which are handed over to those vifs instead of being removed.
    pub fn commit_vif_del(&mut self, name: &str) -> Option<(VifEntry, Vec<PathBuf>)> {
        let mut entry = self.vifs.remove(name)?;
        let mut removable = Vec::new();
        for dir in std::mem::take(&mut entry.created_dirs) {
            let heir = self.vifs.values_mut().find(|v| {
                v.socket()
                    .and_then(Path::parent)
                    .is_some_and(|p| p.starts_with(&dir))
            });
            match heir {
                Some(heir) => {
                    heir.created_dirs.push(dir);
                    heir.created_dirs.sort_by_key(|d| d.components().count());
                }
                None => removable.push(dir),
            }
        }
        Some((entry, removable))
    }
}

/// Bytes the largest tunnel encapsulation puts around a pod's IP packet on the fabric: VXLAN's
/// outer IPv4, UDP and VXLAN headers and the inner Ethernet header (50).
pub fn tunnel_headroom() -> u32 {
    use vrouter::pipeline::encap::outer_l3_len;
    use vrouter::tables::TunnelEncap;
    [
        TunnelEncap::Vxlan,
        TunnelEncap::MplsUdp,
        TunnelEncap::MplsGre,
    ]
    .into_iter()
    .map(|e| outer_l3_len(e, 0))
    .max()
    .map_or(0, |n| n as u32)
}

fn check_name(field: &str, name: &str, max: usize) -> Result<(), Error> {
    let ok_chars = name
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'));
    let first_ok = name
        .chars()
        .next()
        .is_some_and(|c| c.is_ascii_alphanumeric());
    if name.is_empty() || name.len() > max || !ok_chars || !first_ok {
        return Err(Error::field(
            field,
            format!(
                "{name:?} is not a valid name: 1..={max} characters of A-Z a-z 0-9 . _ -, starting with a letter or digit"
            ),
        ));
    }
    Ok(())
}
