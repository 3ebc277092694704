//! Vifs: which fields each type takes, unique names, devices and interfaces, and the socket
//! directories a vif's removal hands to the vifs still inside them.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use super::{
    check_unicast, Model, IFACE_NAME_MAX, MTU_DEFAULT, MTU_MAX, MTU_MIN, MTU_MIN_IPV6, QUEUES_MAX,
    VIF_NAME_MAX, VRF_MAX,
};
use crate::api::{Policy, VifRequest, VifType};
use crate::dataplane::{VifKind, VifSpec};
use crate::error::Error;

/// A vif as the model keeps it.
#[derive(Debug, Clone)]
pub struct VifEntry {
    pub spec: VifSpec,
    /// The request as accepted, with defaults filled in.
    pub config: VifRequest,
    /// Directories created for its socket (outermost first), to remove on delete if empty.
    pub created_dirs: Vec<PathBuf>,
    pub policy: Option<Policy>,
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
    /// Validate everything about a new vif except its socket path (which needs the filesystem);
    /// returns the request with defaults filled in.
    pub fn check_vif_add(&self, req: &VifRequest) -> Result<VifRequest, Error> {
        let t = req.vif_type;
        check_name("name", &req.name, VIF_NAME_MAX)?;
        if self.vifs.contains_key(&req.name) {
            return Err(Error::AlreadyExists {
                what: "vif",
                key: req.name.clone(),
                hint: "delete it first or pick another name".to_string(),
            });
        }
        if req.vrf > VRF_MAX {
            return Err(Error::field(
                "vrf",
                format!("{} is outside 0..={VRF_MAX}", req.vrf),
            ));
        }
        if !self.vrf_exists(req.vrf) {
            return Err(Error::UnknownReference {
                field: "vrf",
                what: "vrf",
                key: req.vrf.to_string(),
                hint: format!("create it first with PUT /vrfs/{}", req.vrf),
            });
        }
        check_unicast("mac", req.mac)?;
        let mut out = req.clone();
        let mtu = req.mtu.unwrap_or(MTU_DEFAULT);
        let min = if req.ip6.is_some() {
            MTU_MIN_IPV6
        } else {
            MTU_MIN
        };
        if !(min..=MTU_MAX).contains(&mtu) {
            return Err(Error::field(
                "mtu",
                format!(
                    "{mtu} is outside {min}..={MTU_MAX}{}",
                    if req.ip6.is_some() {
                        " (IPv6 needs at least 1280)"
                    } else {
                        ""
                    }
                ),
            ));
        }
        out.mtu = Some(mtu);
        if let Some(ip) = req.ip {
            if ip.is_unspecified() || ip.is_multicast() || ip.is_broadcast() {
                return Err(Error::field(
                    "ip",
                    format!("{ip} is not a unicast host address"),
                ));
            }
        }
        if let Some(ip6) = req.ip6 {
            if ip6.is_unspecified() || ip6.is_multicast() {
                return Err(Error::field(
                    "ip6",
                    format!("{ip6} is not a unicast host address"),
                ));
            }
        }
        match t {
            VifType::VhostUser => {
                forbid("device", &req.device, t)?;
                forbid("iface", &req.iface, t)?;
                require("vhostsocket-dir", &req.vhostsocket_dir, t)?;
                require("vhostsocket-filename", &req.vhostsocket_filename, t)?;
                require("vhostuser-mode", &req.vhostuser_mode, t)?;
                let queues = req.queues.unwrap_or(1);
                if !(1..=QUEUES_MAX).contains(&queues) {
                    return Err(Error::field(
                        "queues",
                        format!("{queues} is outside 1..={QUEUES_MAX}"),
                    ));
                }
                out.queues = Some(queues);
            }
            VifType::Physical => {
                forbid_vhost(req)?;
                forbid("iface", &req.iface, t)?;
                let device = require("device", &req.device, t)?;
                if device.is_empty()
                    || device.len() > 256
                    || device.chars().any(|c| c.is_whitespace() || c.is_control())
                {
                    return Err(Error::field(
                        "device",
                        format!("{device:?} is not a PCI address or DPDK vdev string (no spaces, 1..=256 bytes)"),
                    ));
                }
                // The same device with other arguments is still the same device.
                let name = device_name(device);
                if let Some(other) = self
                    .vifs
                    .values()
                    .find(|v| v.config.device.as_deref().map(device_name) == Some(name))
                {
                    return Err(Error::AlreadyExists {
                        what: "device",
                        key: name.to_owned(),
                        hint: format!("it is attached as vif {}", other.spec.name),
                    });
                }
            }
            VifType::AfPacket | VifType::Tap => {
                forbid_vhost(req)?;
                forbid("device", &req.device, t)?;
                let iface = require("iface", &req.iface, t)?;
                let valid = !iface.is_empty()
                    && iface.len() <= IFACE_NAME_MAX
                    && iface != "."
                    && iface != ".."
                    && !iface
                        .chars()
                        .any(|c| c == '/' || c == ':' || c.is_whitespace() || c.is_control());
                if !valid {
                    return Err(Error::field(
                        "iface",
                        format!("{iface:?} is not a Linux interface name (1..={IFACE_NAME_MAX} bytes, no '/', ':' or spaces)"),
                    ));
                }
                if let Some(other) = self
                    .vifs
                    .values()
                    .find(|v| v.config.iface.as_deref() == Some(iface))
                {
                    return Err(Error::AlreadyExists {
                        what: "iface",
                        key: iface.clone(),
                        hint: format!("it is attached as vif {}", other.spec.name),
                    });
                }
            }
        }
        Ok(out)
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

fn forbid<T>(field: &str, value: &Option<T>, vif_type: VifType) -> Result<(), Error> {
    if value.is_some() {
        return Err(Error::field(
            field,
            format!("is not valid for a {vif_type} vif; remove it"),
        ));
    }
    Ok(())
}

fn require<'a, T>(field: &str, value: &'a Option<T>, vif_type: VifType) -> Result<&'a T, Error> {
    value.as_ref().ok_or_else(|| Error::MissingField {
        field: field.to_string(),
        context: format!("for a {vif_type} vif"),
    })
}

fn forbid_vhost(req: &VifRequest) -> Result<(), Error> {
    let t = req.vif_type;
    forbid("vhostsocket-dir", &req.vhostsocket_dir, t)?;
    forbid("vhostsocket-filename", &req.vhostsocket_filename, t)?;
    forbid("vhostuser-mode", &req.vhostuser_mode, t)?;
    forbid("vhostsocket-group", &req.vhostsocket_group, t)?;
    forbid("queues", &req.queues, t)
}
