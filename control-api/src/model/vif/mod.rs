//! Vifs: unique names, devices and interfaces, and the socket directories a vif's removal hands
//! to the vifs still inside them. What each type takes is [`config`]'s.

mod config;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

pub use config::{VhostUserPort, VifConfig, VifPort};

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
        let port = VifPort::from_request(req)?;
        self.check_port_free(&port)?;
        Ok(VifConfig {
            name: req.name.clone(),
            vrf: req.vrf,
            mac: req.mac,
            ip: req.ip,
            ip6: req.ip6,
            mtu,
            port,
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
            VifPort::Physical { device } => {
                // The same device with other arguments is still the same device.
                let name = device_name(device);
                let used = |v: &&VifEntry| v.config.port.device().map(device_name) == Some(name);
                match self.vifs.values().find(used) {
                    Some(other) => Err(attached("device", name, other)),
                    None => Ok(()),
                }
            }
            VifPort::AfPacket { iface } | VifPort::Tap { iface } => {
                let used = |v: &&VifEntry| v.config.port.kernel_iface() == Some(iface.as_str());
                match self.vifs.values().find(used) {
                    Some(other) => Err(attached("iface", iface, other)),
                    None => Ok(()),
                }
            }
        }
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
