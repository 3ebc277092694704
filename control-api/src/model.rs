//! The desired configuration and every rule it must satisfy. Deterministic and free of I/O:
//! `check_*` methods validate a request against the current state without changing it; the
//! controller then applies the change to the dataplane and only on success calls the matching
//! `commit_*`. So a refused or failed request leaves the model exactly as it was.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::path::{Path, PathBuf};

use crate::api::{
    BridgeEntry, IpPrefix, MacAddr, Nexthop, Policy, PolicyRule, Route, TunnelEncap, VifRequest,
    VifType, VrfInfo,
};
use crate::dataplane::{VifKind, VifSpec};
use crate::error::Error;

/// VRF ids are 12 bits; VRF 0 is the fabric (underlay) VRF and always exists.
pub const VRF_MAX: u32 = 4095;
/// Nexthop ids are 1..=NEXTHOP_ID_MAX.
pub const NEXTHOP_ID_MAX: u32 = 65_535;
/// MPLS labels are 20 bits; 0..=15 are reserved (RFC 3032).
pub const MPLS_LABEL_MAX: u32 = (1 << 20) - 1;
pub const MPLS_LABEL_MIN: u32 = 16;
/// VXLAN network identifiers are 24 bits.
pub const VNI_MAX: u32 = (1 << 24) - 1;
pub const MTU_MIN: u32 = 68;
/// IPv6 needs links of at least 1280 bytes (RFC 8200).
pub const MTU_MIN_IPV6: u32 = 1280;
pub const MTU_MAX: u32 = 9216;
pub const MTU_DEFAULT: u32 = 1500;
pub const QUEUES_MAX: u32 = 16;
pub const ECMP_MEMBERS_MAX: usize = 32;
pub const POLICY_RULES_MAX: usize = 1024;
pub const VIF_NAME_MAX: usize = 63;
/// Linux interface names (IFNAMSIZ - 1).
pub const IFACE_NAME_MAX: usize = 15;
/// Users of a nexthop named in messages and listings before "and N more".
pub const USERS_NAMED_MAX: usize = 10;

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

#[derive(Debug, Clone)]
pub struct Model {
    vrfs: BTreeSet<u32>,
    vifs: BTreeMap<String, VifEntry>,
    nexthops: BTreeMap<u32, Nexthop>,
    routes: BTreeMap<u32, BTreeMap<IpPrefix, Route>>,
    bridge: BTreeMap<u32, BTreeMap<MacAddr, BridgeEntry>>,
    mpls: BTreeMap<u32, u32>,
    vxlan: BTreeMap<u32, u32>,
    /// Reverse index: who points at each nexthop, so in-use checks and nexthop replacement
    /// cost O(users), not O(table size).
    users: BTreeMap<u32, BTreeSet<NhUser>>,
}

/// Something that points at a nexthop.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
enum NhUser {
    Route(u32, IpPrefix),
    Bridge(u32, MacAddr),
    Mpls(u32),
    Ecmp(u32),
}

impl NhUser {
    fn describe(&self) -> String {
        match self {
            NhUser::Route(vrf, prefix) => format!("route {prefix} in vrf {vrf}"),
            NhUser::Bridge(vrf, mac) => format!("bridge entry {mac} in vrf {vrf}"),
            NhUser::Mpls(label) => format!("mpls label {label}"),
            NhUser::Ecmp(id) => format!("ecmp nexthop {id}"),
        }
    }
}

impl Default for Model {
    fn default() -> Self {
        Model {
            vrfs: BTreeSet::from([0]),
            vifs: BTreeMap::new(),
            nexthops: BTreeMap::new(),
            routes: BTreeMap::new(),
            bridge: BTreeMap::new(),
            mpls: BTreeMap::new(),
            vxlan: BTreeMap::new(),
            users: BTreeMap::new(),
        }
    }
}

/// Parse a path parameter that must be a number within `range`.
pub fn parse_param(param: &'static str, raw: &str, min: u32, max: u32) -> Result<u32, Error> {
    let v: u32 = raw.parse().map_err(|_| Error::InvalidPathParam {
        param,
        reason: format!("{raw:?} is not a number; expected {min}..={max}"),
    })?;
    if !(min..=max).contains(&v) {
        return Err(Error::InvalidPathParam {
            param,
            reason: format!("{v} is outside {min}..={max}"),
        });
    }
    Ok(v)
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

/// `00:00:00:00:00:00`: no station has it.
fn is_zero(mac: MacAddr) -> bool {
    mac.0 == [0; 6]
}

fn check_unicast(field: &str, mac: MacAddr) -> Result<(), Error> {
    if mac.is_multicast() || is_zero(mac) {
        return Err(Error::field(
            field,
            format!("{mac} is not a unicast MAC address (zero, multicast or broadcast)"),
        ));
    }
    Ok(())
}

impl Model {
    pub fn new() -> Self {
        Self::default()
    }

    // ---- VRFs --------------------------------------------------------------------------------

    pub fn vrf_exists(&self, vrf: u32) -> bool {
        self.vrfs.contains(&vrf)
    }

    fn require_vrf(&self, vrf: u32) -> Result<(), Error> {
        if self.vrf_exists(vrf) {
            Ok(())
        } else {
            Err(Error::NotFound {
                what: "vrf",
                key: vrf.to_string(),
            })
        }
    }

    /// `Ok(true)` if the VRF is new, `Ok(false)` if it already exists (nothing to do).
    pub fn check_vrf_add(&self, vrf: u32) -> Result<bool, Error> {
        Ok(!self.vrfs.contains(&vrf))
    }

    pub fn check_vrf_del(&self, vrf: u32) -> Result<(), Error> {
        if vrf == 0 {
            return Err(Error::Conflict(
                "vrf 0 is the fabric VRF and cannot be removed".to_string(),
            ));
        }
        self.require_vrf(vrf)?;
        let mut users: Vec<String> = self
            .vifs
            .values()
            .filter(|v| v.spec.vrf == vrf)
            .map(|v| format!("vif {}", v.spec.name))
            .collect();
        let routes = self.routes.get(&vrf).map_or(0, BTreeMap::len);
        if routes > 0 {
            users.push(format!("{routes} route(s)"));
        }
        let bridge = self.bridge.get(&vrf).map_or(0, BTreeMap::len);
        if bridge > 0 {
            users.push(format!("{bridge} bridge entrie(s)"));
        }
        users.extend(
            self.vxlan
                .iter()
                .filter(|(_, v)| **v == vrf)
                .map(|(vni, _)| format!("vxlan vni {vni}")),
        );
        if !users.is_empty() {
            return Err(Error::InUse {
                what: "vrf",
                key: vrf.to_string(),
                users,
            });
        }
        Ok(())
    }

    pub fn commit_vrf_add(&mut self, vrf: u32) {
        self.vrfs.insert(vrf);
    }

    pub fn commit_vrf_del(&mut self, vrf: u32) {
        self.vrfs.remove(&vrf);
        self.routes.remove(&vrf);
        self.bridge.remove(&vrf);
    }

    /// Every VRF id, ascending.
    pub fn vrf_ids(&self) -> impl Iterator<Item = u32> + '_ {
        self.vrfs.iter().copied()
    }

    pub fn vrfs(&self) -> Vec<VrfInfo> {
        self.vrfs
            .iter()
            .map(|&vrf| VrfInfo {
                vrf,
                vifs: self.vifs.values().filter(|v| v.spec.vrf == vrf).count() as u32,
                routes: self.routes.get(&vrf).map_or(0, BTreeMap::len) as u32,
                bridge_entries: self.bridge.get(&vrf).map_or(0, BTreeMap::len) as u32,
            })
            .collect()
    }

    // ---- vifs --------------------------------------------------------------------------------

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

    // ---- nexthops ----------------------------------------------------------------------------

    pub fn nexthop(&self, id: u32) -> Result<&Nexthop, Error> {
        self.nexthops.get(&id).ok_or_else(|| Error::NotFound {
            what: "nexthop",
            key: id.to_string(),
        })
    }

    pub fn nexthops(&self) -> impl Iterator<Item = (u32, &Nexthop)> {
        self.nexthops.iter().map(|(id, nh)| (*id, nh))
    }

    /// What points at nexthop `id`, named for an error message: at most
    /// [`USERS_NAMED_MAX`] of them, then "and N more".
    pub fn nexthop_users(&self, id: u32) -> Vec<String> {
        let Some(users) = self.users.get(&id) else {
            return Vec::new();
        };
        let mut named: Vec<String> = users
            .iter()
            .take(USERS_NAMED_MAX)
            .map(NhUser::describe)
            .collect();
        if users.len() > USERS_NAMED_MAX {
            named.push(format!("and {} more", users.len() - USERS_NAMED_MAX));
        }
        named
    }

    /// How many things point at nexthop `id`.
    pub fn nexthop_use_count(&self, id: u32) -> usize {
        self.users.get(&id).map_or(0, BTreeSet::len)
    }

    fn add_user(&mut self, nexthop: u32, user: NhUser) {
        self.users.entry(nexthop).or_default().insert(user);
    }

    fn remove_user(&mut self, nexthop: u32, user: &NhUser) {
        if let Some(u) = self.users.get_mut(&nexthop) {
            u.remove(user);
            if u.is_empty() {
                self.users.remove(&nexthop);
            }
        }
    }

    /// `Ok(true)` if `id` is new, `Ok(false)` if it replaces an existing nexthop.
    pub fn check_nexthop_set(&self, id: u32, nh: &Nexthop) -> Result<bool, Error> {
        if !(1..=NEXTHOP_ID_MAX).contains(&id) {
            return Err(Error::InvalidPathParam {
                param: "id",
                reason: format!("{id} is outside 1..={NEXTHOP_ID_MAX}"),
            });
        }
        match nh {
            Nexthop::Encap { vif, dmac } => {
                self.require_vif_ref(vif)?;
                check_unicast("dmac", *dmac)?;
            }
            Nexthop::Tunnel {
                vif,
                sip,
                dip,
                dmac,
                ..
            } => {
                self.require_vif_ref(vif)?;
                if let Some(v) = self.vifs.get(vif.as_str()) {
                    if v.spec.vrf != 0 {
                        return Err(Error::field(
                            "vif",
                            format!(
                                "vif {vif} is in vrf {}; tunnels leave through a fabric vif in vrf 0",
                                v.spec.vrf
                            ),
                        ));
                    }
                }
                check_unicast("dmac", *dmac)?;
                if sip.is_ipv4() != dip.is_ipv4() {
                    return Err(Error::field(
                        "dip",
                        format!("{dip} and sip {sip} must be of the same address family"),
                    ));
                }
                for (field, ip) in [("sip", sip), ("dip", dip)] {
                    if ip.is_unspecified() || ip.is_multicast() || is_broadcast(ip) {
                        return Err(Error::field(
                            field,
                            format!("{ip} is not a unicast address"),
                        ));
                    }
                }
            }
            Nexthop::Ecmp { members } => {
                if members.is_empty() || members.len() > ECMP_MEMBERS_MAX {
                    return Err(Error::field(
                        "members",
                        format!(
                            "an ECMP nexthop needs 1..={ECMP_MEMBERS_MAX} members, got {}",
                            members.len()
                        ),
                    ));
                }
                let mut seen = BTreeSet::new();
                for &m in members {
                    if m == id {
                        return Err(Error::field(
                            "members",
                            format!("nexthop {id} cannot be its own member"),
                        ));
                    }
                    if !seen.insert(m) {
                        return Err(Error::field(
                            "members",
                            format!("nexthop {m} is listed twice"),
                        ));
                    }
                    match self.nexthops.get(&m) {
                        None => {
                            return Err(Error::UnknownReference {
                                field: "members",
                                what: "nexthop",
                                key: m.to_string(),
                                hint: format!("create it first with PUT /nexthops/{m}"),
                            })
                        }
                        Some(Nexthop::Ecmp { .. }) => {
                            return Err(Error::field(
                                "members",
                                format!("nexthop {m} is itself ECMP; ECMP groups do not nest"),
                            ))
                        }
                        Some(_) => {}
                    }
                }
                if let Some(parent) = self.nexthops.iter().find_map(|(p, n)| match n {
                    Nexthop::Ecmp { members } if members.contains(&id) => Some(*p),
                    _ => None,
                }) {
                    return Err(Error::Conflict(format!(
                        "nexthop {id} is a member of ECMP nexthop {parent} and cannot become ECMP itself"
                    )));
                }
            }
            Nexthop::Discard | Nexthop::Receive => {}
        }
        let exists = self.nexthops.contains_key(&id);
        if exists {
            // Whatever points at it must still be valid with the new definition.
            self.recheck_labels(id, nh)?;
        }
        Ok(!exists)
    }

    /// Check the routes and bridge entries that reach `changed` (directly or through an ECMP
    /// group) against its new definition `nh`.
    fn recheck_labels(&self, changed: u32, nh: &Nexthop) -> Result<(), Error> {
        let lookup = |id: u32| {
            if id == changed {
                Some(nh)
            } else {
                self.nexthops.get(&id)
            }
        };
        let mut targets = vec![changed];
        if let Some(users) = self.users.get(&changed) {
            targets.extend(users.iter().filter_map(|u| match u {
                NhUser::Ecmp(group) => Some(*group),
                _ => None,
            }));
        }
        for target in targets {
            for user in self.users.get(&target).into_iter().flatten() {
                let label = match user {
                    NhUser::Route(vrf, prefix) => self
                        .routes
                        .get(vrf)
                        .and_then(|r| r.get(prefix))
                        .map(|r| r.label),
                    NhUser::Bridge(vrf, mac) => self
                        .bridge
                        .get(vrf)
                        .and_then(|b| b.get(mac))
                        .map(|b| b.label),
                    NhUser::Mpls(_) | NhUser::Ecmp(_) => None,
                };
                if let Some(label) = label {
                    check_label(lookup, target, label).map_err(|e| {
                        Error::Conflict(format!("{} would become invalid: {e}", user.describe()))
                    })?;
                }
            }
        }
        Ok(())
    }

    fn require_vif_ref(&self, vif: &str) -> Result<(), Error> {
        if self.vifs.contains_key(vif) {
            Ok(())
        } else {
            Err(Error::UnknownReference {
                field: "vif",
                what: "vif",
                key: vif.to_string(),
                hint: "add it first with POST /vifs".to_string(),
            })
        }
    }

    fn require_nexthop_ref(&self, field: &'static str, id: u32) -> Result<(), Error> {
        if self.nexthops.contains_key(&id) {
            Ok(())
        } else {
            Err(Error::UnknownReference {
                field,
                what: "nexthop",
                key: id.to_string(),
                hint: format!("create it first with PUT /nexthops/{id}"),
            })
        }
    }

    pub fn check_nexthop_del(&self, id: u32) -> Result<(), Error> {
        self.nexthop(id)?;
        let users = self.nexthop_users(id);
        if !users.is_empty() {
            return Err(Error::InUse {
                what: "nexthop",
                key: id.to_string(),
                users,
            });
        }
        Ok(())
    }

    pub fn commit_nexthop_set(&mut self, id: u32, nh: Nexthop) {
        if let Some(Nexthop::Ecmp { members }) = self.nexthops.get(&id).cloned() {
            for m in members {
                self.remove_user(m, &NhUser::Ecmp(id));
            }
        }
        if let Nexthop::Ecmp { members } = &nh {
            for &m in members {
                self.add_user(m, NhUser::Ecmp(id));
            }
        }
        self.nexthops.insert(id, nh);
    }

    pub fn commit_nexthop_del(&mut self, id: u32) {
        if let Some(Nexthop::Ecmp { members }) = self.nexthops.remove(&id) {
            for m in members {
                self.remove_user(m, &NhUser::Ecmp(id));
            }
        }
    }

    // ---- routes and bridge entries -----------------------------------------------------------

    /// `Ok(true)` if the prefix is new in the VRF, `Ok(false)` if it replaces a route.
    pub fn check_route_set(&self, vrf: u32, route: &Route) -> Result<bool, Error> {
        self.require_vrf(vrf)?;
        self.require_nexthop_ref("nexthop", route.nexthop)?;
        check_label(|id| self.nexthops.get(&id), route.nexthop, route.label)?;
        Ok(!self
            .routes
            .get(&vrf)
            .is_some_and(|r| r.contains_key(&route.prefix)))
    }

    pub fn check_route_del(&self, vrf: u32, prefix: &IpPrefix) -> Result<(), Error> {
        self.require_vrf(vrf)?;
        if !self
            .routes
            .get(&vrf)
            .is_some_and(|r| r.contains_key(prefix))
        {
            return Err(Error::NotFound {
                what: "route",
                key: format!("{prefix} in vrf {vrf}"),
            });
        }
        Ok(())
    }

    pub fn commit_route_set(&mut self, vrf: u32, route: Route) {
        let user = NhUser::Route(vrf, route.prefix);
        self.add_user(route.nexthop, user.clone());
        if let Some(old) = self
            .routes
            .entry(vrf)
            .or_default()
            .insert(route.prefix, route.clone())
        {
            if old.nexthop != route.nexthop {
                self.remove_user(old.nexthop, &user);
            }
        }
    }

    pub fn commit_route_del(&mut self, vrf: u32, prefix: &IpPrefix) {
        if let Some(old) = self.routes.get_mut(&vrf).and_then(|r| r.remove(prefix)) {
            self.remove_user(old.nexthop, &NhUser::Route(vrf, *prefix));
        }
    }

    pub fn routes(&self, vrf: u32) -> Result<Vec<Route>, Error> {
        self.require_vrf(vrf)?;
        Ok(self
            .routes
            .get(&vrf)
            .map(|r| r.values().cloned().collect())
            .unwrap_or_default())
    }

    /// Every route of every VRF, with its VRF.
    pub fn all_routes(&self) -> impl Iterator<Item = (u32, &Route)> + '_ {
        self.routes
            .iter()
            .flat_map(|(vrf, r)| r.values().map(move |route| (*vrf, route)))
    }

    pub fn check_bridge_set(&self, vrf: u32, entry: &BridgeEntry) -> Result<bool, Error> {
        self.require_vrf(vrf)?;
        if is_zero(entry.mac) {
            return Err(Error::field(
                "mac",
                "00:00:00:00:00:00 is not a station address",
            ));
        }
        self.require_nexthop_ref("nexthop", entry.nexthop)?;
        check_label(|id| self.nexthops.get(&id), entry.nexthop, entry.label)?;
        Ok(!self
            .bridge
            .get(&vrf)
            .is_some_and(|b| b.contains_key(&entry.mac)))
    }

    pub fn check_bridge_del(&self, vrf: u32, mac: MacAddr) -> Result<(), Error> {
        self.require_vrf(vrf)?;
        if !self.bridge.get(&vrf).is_some_and(|b| b.contains_key(&mac)) {
            return Err(Error::NotFound {
                what: "bridge entry",
                key: format!("{mac} in vrf {vrf}"),
            });
        }
        Ok(())
    }

    pub fn commit_bridge_set(&mut self, vrf: u32, entry: BridgeEntry) {
        let user = NhUser::Bridge(vrf, entry.mac);
        self.add_user(entry.nexthop, user.clone());
        if let Some(old) = self
            .bridge
            .entry(vrf)
            .or_default()
            .insert(entry.mac, entry.clone())
        {
            if old.nexthop != entry.nexthop {
                self.remove_user(old.nexthop, &user);
            }
        }
    }

    pub fn commit_bridge_del(&mut self, vrf: u32, mac: MacAddr) {
        if let Some(old) = self.bridge.get_mut(&vrf).and_then(|b| b.remove(&mac)) {
            self.remove_user(old.nexthop, &NhUser::Bridge(vrf, mac));
        }
    }

    pub fn bridge(&self, vrf: u32) -> Result<Vec<BridgeEntry>, Error> {
        self.require_vrf(vrf)?;
        Ok(self
            .bridge
            .get(&vrf)
            .map(|b| b.values().cloned().collect())
            .unwrap_or_default())
    }

    /// Every bridge entry of every VRF, with its VRF.
    pub fn all_bridge(&self) -> impl Iterator<Item = (u32, &BridgeEntry)> + '_ {
        self.bridge
            .iter()
            .flat_map(|(vrf, b)| b.values().map(move |entry| (*vrf, entry)))
    }

    // ---- incoming labels and VNIs ------------------------------------------------------------

    pub fn check_mpls_set(&self, label: u32, nexthop: u32) -> Result<bool, Error> {
        self.require_nexthop_ref("nexthop", nexthop)?;
        Ok(!self.mpls.contains_key(&label))
    }

    pub fn check_mpls_del(&self, label: u32) -> Result<(), Error> {
        if !self.mpls.contains_key(&label) {
            return Err(Error::NotFound {
                what: "mpls label",
                key: label.to_string(),
            });
        }
        Ok(())
    }

    pub fn commit_mpls_set(&mut self, label: u32, nexthop: u32) {
        self.add_user(nexthop, NhUser::Mpls(label));
        if let Some(old) = self.mpls.insert(label, nexthop) {
            if old != nexthop {
                self.remove_user(old, &NhUser::Mpls(label));
            }
        }
    }

    pub fn commit_mpls_del(&mut self, label: u32) {
        if let Some(old) = self.mpls.remove(&label) {
            self.remove_user(old, &NhUser::Mpls(label));
        }
    }

    pub fn mpls(&self) -> impl Iterator<Item = (u32, u32)> + '_ {
        self.mpls.iter().map(|(l, n)| (*l, *n))
    }

    pub fn check_vxlan_set(&self, vni: u32, vrf: u32) -> Result<bool, Error> {
        if vrf > VRF_MAX {
            return Err(Error::field(
                "vrf",
                format!("{vrf} is outside 0..={VRF_MAX}"),
            ));
        }
        if !self.vrf_exists(vrf) {
            return Err(Error::UnknownReference {
                field: "vrf",
                what: "vrf",
                key: vrf.to_string(),
                hint: format!("create it first with PUT /vrfs/{vrf}"),
            });
        }
        Ok(!self.vxlan.contains_key(&vni))
    }

    pub fn check_vxlan_del(&self, vni: u32) -> Result<(), Error> {
        if !self.vxlan.contains_key(&vni) {
            return Err(Error::NotFound {
                what: "vxlan vni",
                key: vni.to_string(),
            });
        }
        Ok(())
    }

    pub fn commit_vxlan_set(&mut self, vni: u32, vrf: u32) {
        self.vxlan.insert(vni, vrf);
    }

    pub fn commit_vxlan_del(&mut self, vni: u32) {
        self.vxlan.remove(&vni);
    }

    pub fn vxlan(&self) -> impl Iterator<Item = (u32, u32)> + '_ {
        self.vxlan.iter().map(|(v, r)| (*v, *r))
    }

    // ---- policy ------------------------------------------------------------------------------

    pub fn check_policy_set(&self, name: &str, policy: &Policy) -> Result<u32, Error> {
        let vif = self.vif(name)?;
        for (dir, rules) in [("ingress", &policy.ingress), ("egress", &policy.egress)] {
            if rules.len() > POLICY_RULES_MAX {
                return Err(Error::field(
                    dir,
                    format!(
                        "{} rules is more than the {POLICY_RULES_MAX} allowed",
                        rules.len()
                    ),
                ));
            }
            for (i, rule) in rules.iter().enumerate() {
                check_rule(&format!("{dir}[{i}]"), rule)?;
            }
        }
        Ok(vif.spec.index)
    }

    pub fn commit_policy(&mut self, name: &str, policy: Option<Policy>) {
        if let Some(v) = self.vifs.get_mut(name) {
            v.policy = policy;
        }
    }
}

fn forbid_vhost(req: &VifRequest) -> Result<(), Error> {
    let t = req.vif_type;
    forbid("vhostsocket-dir", &req.vhostsocket_dir, t)?;
    forbid("vhostsocket-filename", &req.vhostsocket_filename, t)?;
    forbid("vhostuser-mode", &req.vhostuser_mode, t)?;
    forbid("vhostsocket-group", &req.vhostsocket_group, t)?;
    forbid("queues", &req.queues, t)
}

fn is_broadcast(ip: &IpAddr) -> bool {
    matches!(ip, IpAddr::V4(v4) if v4.is_broadcast())
}

fn check_rule(field: &str, rule: &PolicyRule) -> Result<(), Error> {
    if let Some(ports) = rule.ports {
        if !rule.proto.has_ports() {
            return Err(Error::field(
                format!("{field}.ports"),
                format!(
                    "ports {ports} only apply to tcp, udp or sctp, not to proto {}",
                    rule.proto
                ),
            ));
        }
    }
    Ok(())
}

/// The label rule for a route or bridge entry toward `nexthop`: required toward tunnels (a VNI
/// for VXLAN, an MPLS label 16..2^20 otherwise), refused toward anything else.
fn check_label<'a>(
    lookup: impl Fn(u32) -> Option<&'a Nexthop>,
    nexthop: u32,
    label: Option<u32>,
) -> Result<(), Error> {
    let direct = lookup(nexthop);
    let encaps: Vec<TunnelEncap> = match direct {
        Some(Nexthop::Tunnel { encap, .. }) => vec![*encap],
        Some(Nexthop::Ecmp { members }) => members
            .iter()
            .filter_map(|m| match lookup(*m) {
                Some(Nexthop::Tunnel { encap, .. }) => Some(*encap),
                _ => None,
            })
            .collect(),
        _ => Vec::new(),
    };
    match (label, encaps.is_empty()) {
        (None, true) => Ok(()),
        (Some(l), true) => Err(Error::field(
            "label",
            format!(
                "label {l} only applies toward tunnel nexthops; nexthop {nexthop} is {}",
                direct.map_or("missing", Nexthop::type_name)
            ),
        )),
        (None, false) => Err(Error::MissingField {
            field: "label".to_string(),
            context: format!(
                "toward tunnel nexthop {nexthop} (the VNI for vxlan, the MPLS label for mplsoudp/mplsogre)"
            ),
        }),
        (Some(l), false) => {
            for encap in encaps {
                let (min, max) = if encap.carries_mpls() {
                    (MPLS_LABEL_MIN, MPLS_LABEL_MAX)
                } else {
                    (0, VNI_MAX)
                };
                if !(min..=max).contains(&l) {
                    return Err(Error::field(
                        "label",
                        format!("{l} is outside {min}..={max}, the range of a {encap} label"),
                    ));
                }
            }
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::{PolicyAction, PortRange, Proto, VhostUserMode};

    fn mac(last: u8) -> MacAddr {
        MacAddr([2, 0, 0, 0, 0, last])
    }

    fn add_af_packet(m: &mut Model, name: &str, vrf: u32, index: u32) {
        let mut req = VifRequest::new(name, VifType::AfPacket, vrf, mac(index as u8 + 1));
        req.iface = Some(format!("veth{index}"));
        let config = m.check_vif_add(&req).unwrap();
        m.commit_vif_add(VifEntry {
            spec: VifSpec {
                index,
                name: name.into(),
                vrf,
                mac: req.mac,
                ip: None,
                ip6: None,
                mtu: 1500,
                kind: VifKind::AfPacket {
                    iface: req.iface.clone().unwrap(),
                },
            },
            config,
            created_dirs: vec![],
            policy: None,
        });
    }

    fn tunnel(encap: TunnelEncap) -> Nexthop {
        Nexthop::Tunnel {
            encap,
            vif: "fabric".into(),
            sip: "192.0.2.1".parse().unwrap(),
            dip: "192.0.2.2".parse().unwrap(),
            dmac: mac(9),
        }
    }

    fn code(e: Error) -> (u16, String) {
        (e.status(), e.code().to_string())
    }

    #[test]
    fn a_device_backs_one_vif_whatever_its_arguments() {
        assert_eq!(device_name("net_null7,size=64"), "net_null7");
        assert_eq!(device_name("0000:00:08.0"), "0000:00:08.0");
        let mut m = Model::new();
        let physical = |name: &str, device: &str| {
            let mut req = VifRequest::new(name, VifType::Physical, 0, mac(1));
            req.device = Some(device.into());
            req
        };
        let req = physical("fab0", "net_af_packet0,iface=veth0");
        let config = m.check_vif_add(&req).unwrap();
        m.commit_vif_add(VifEntry {
            spec: VifSpec {
                index: 0,
                name: "fab0".into(),
                vrf: 0,
                mac: req.mac,
                ip: None,
                ip6: None,
                mtu: 1500,
                kind: VifKind::Physical {
                    device: req.device.clone().unwrap(),
                },
            },
            config,
            created_dirs: vec![],
            policy: None,
        });
        for other in [
            "net_af_packet0,iface=veth0",
            "net_af_packet0,iface=veth1",
            "net_af_packet0",
        ] {
            let e = m.check_vif_add(&physical("fab1", other)).unwrap_err();
            assert_eq!(code(e), (409, "already-exists".into()), "{other}");
        }
        m.check_vif_add(&physical("fab1", "net_af_packet1,iface=veth0"))
            .expect("another device");
    }

    #[test]
    fn vif_fields_are_checked_per_type() {
        let m = Model::new();
        let mut req = VifRequest::new("pod1", VifType::VhostUser, 0, mac(1));
        let e = m.check_vif_add(&req).unwrap_err();
        assert!(e.to_string().contains("vhostsocket-dir"), "{e}");
        req.vhostsocket_dir = Some("/var/run/vrouter/p".into());
        req.vhostsocket_filename = Some("s".into());
        req.vhostuser_mode = Some(VhostUserMode::Server);
        let ok = m.check_vif_add(&req).unwrap();
        assert_eq!((ok.mtu, ok.queues), (Some(1500), Some(1)));
        req.device = Some("0000:00:01.0".into());
        assert!(m
            .check_vif_add(&req)
            .unwrap_err()
            .to_string()
            .contains("`device`"));
        req.device = None;
        req.vrf = 7;
        assert_eq!(
            code(m.check_vif_add(&req).unwrap_err()),
            (400, "unknown-reference".into())
        );
        req.vrf = 5000;
        assert!(m
            .check_vif_add(&req)
            .unwrap_err()
            .to_string()
            .contains("0..=4095"));
        req.vrf = 0;
        req.mtu = Some(9217);
        assert!(m.check_vif_add(&req).is_err());
        req.mtu = Some(1000);
        req.ip6 = Some("2001:db8::1".parse().unwrap());
        assert!(m
            .check_vif_add(&req)
            .unwrap_err()
            .to_string()
            .contains("1280"));
        req.ip6 = None;
        req.mtu = None;
        req.mac = MacAddr([0xff; 6]);
        assert!(m
            .check_vif_add(&req)
            .unwrap_err()
            .to_string()
            .contains("unicast"));
        req.mac = mac(1);
        req.name = "../evil".into();
        assert!(m.check_vif_add(&req).is_err());
    }

    #[test]
    fn duplicates_conflict() {
        let mut m = Model::new();
        add_af_packet(&mut m, "a", 0, 0);
        let mut req = VifRequest::new("a", VifType::AfPacket, 0, mac(5));
        req.iface = Some("vethX".into());
        assert_eq!(
            code(m.check_vif_add(&req).unwrap_err()),
            (409, "already-exists".into())
        );
        req.name = "b".into();
        req.iface = Some("veth0".into());
        let e = m.check_vif_add(&req).unwrap_err();
        assert_eq!(e.status(), 409);
        assert!(e.to_string().contains("vif a"), "{e}");
    }

    #[test]
    fn nexthops_need_their_vifs_and_members() {
        let mut m = Model::new();
        let encap = Nexthop::Encap {
            vif: "a".into(),
            dmac: mac(1),
        };
        assert_eq!(
            code(m.check_nexthop_set(1, &encap).unwrap_err()),
            (400, "unknown-reference".into())
        );
        add_af_packet(&mut m, "a", 0, 0);
        assert!(m.check_nexthop_set(1, &encap).unwrap());
        m.commit_nexthop_set(1, encap.clone());
        assert!(
            !m.check_nexthop_set(1, &encap).unwrap(),
            "a replace is not new"
        );
        assert!(m.check_nexthop_set(0, &encap).is_err());
        let ecmp = |members: Vec<u32>| Nexthop::Ecmp { members };
        assert!(m.check_nexthop_set(2, &ecmp(vec![1, 3])).is_err());
        assert!(m.check_nexthop_set(2, &ecmp(vec![1, 1])).is_err());
        assert!(m.check_nexthop_set(2, &ecmp(vec![2])).is_err());
        assert!(m.check_nexthop_set(2, &ecmp(vec![])).is_err());
        m.commit_nexthop_set(2, ecmp(vec![1]));
        assert!(m
            .check_nexthop_set(3, &ecmp(vec![2]))
            .unwrap_err()
            .to_string()
            .contains("nest"));
        m.commit_nexthop_set(4, Nexthop::Discard);
        assert_eq!(
            code(m.check_nexthop_set(1, &ecmp(vec![4])).unwrap_err()).0,
            409
        );
        // In use: deleting names the user; so does deleting the vif.
        let e = m.check_nexthop_del(1).unwrap_err();
        assert_eq!(e.status(), 409);
        assert!(e.to_string().contains("ecmp nexthop 2"), "{e}");
        let e = m.check_vif_del("a").unwrap_err();
        assert!(e.to_string().contains("nexthop 1"), "{e}");
        assert!(m.check_nexthop_del(2).is_ok());
    }

    #[test]
    fn labels_follow_the_tunnel_encapsulation() {
        let mut m = Model::new();
        add_af_packet(&mut m, "fabric", 0, 0);
        m.commit_vrf_add(1);
        m.commit_nexthop_set(1, tunnel(TunnelEncap::Vxlan));
        m.commit_nexthop_set(2, tunnel(TunnelEncap::Mplsoudp));
        m.commit_nexthop_set(3, Nexthop::Discard);
        let route = |nexthop, label| Route {
            prefix: "198.18.2.0/24".parse().unwrap(),
            nexthop,
            label,
        };
        assert!(m.check_route_set(1, &route(1, Some(VNI_MAX))).unwrap());
        assert!(m.check_route_set(1, &route(1, Some(VNI_MAX + 1))).is_err());
        assert_eq!(
            code(m.check_route_set(1, &route(1, None)).unwrap_err()),
            (400, "missing-field".into())
        );
        assert!(
            m.check_route_set(1, &route(2, Some(15))).is_err(),
            "reserved label"
        );
        assert!(m
            .check_route_set(1, &route(2, Some(MPLS_LABEL_MAX + 1)))
            .is_err());
        assert!(m.check_route_set(1, &route(2, Some(100))).is_ok());
        assert!(
            m.check_route_set(1, &route(3, Some(100))).is_err(),
            "no label toward discard"
        );
        assert_eq!(
            code(m.check_route_set(1, &route(9, None)).unwrap_err()).1,
            "unknown-reference"
        );
        assert_eq!(
            code(m.check_route_set(2, &route(3, None)).unwrap_err()),
            (404, "not-found".into())
        );
        // A replacement that would invalidate a route's label is refused.
        m.commit_route_set(1, route(1, Some(5_000_000)));
        let e = m
            .check_nexthop_set(1, &tunnel(TunnelEncap::Mplsogre))
            .unwrap_err();
        assert_eq!(e.status(), 409);
        assert!(e.to_string().contains("198.18.2.0/24"), "{e}");
        assert!(m.check_nexthop_set(1, &tunnel(TunnelEncap::Vxlan)).is_ok());
        // The VRF now has a route: it cannot go.
        assert_eq!(m.check_vrf_del(1).unwrap_err().status(), 409);
        assert_eq!(m.check_vrf_del(0).unwrap_err().status(), 409);
    }

    #[test]
    fn tunnels_leave_through_the_fabric_vrf() {
        let mut m = Model::new();
        m.commit_vrf_add(1);
        add_af_packet(&mut m, "fabric", 0, 0);
        add_af_packet(&mut m, "pod", 1, 1);
        assert!(m.check_nexthop_set(1, &tunnel(TunnelEncap::Vxlan)).is_ok());
        let mut nh = tunnel(TunnelEncap::Vxlan);
        if let Nexthop::Tunnel { vif, .. } = &mut nh {
            *vif = "pod".into();
        }
        let e = m.check_nexthop_set(1, &nh).unwrap_err();
        assert!(e.to_string().contains("vrf 0"), "{e}");
    }

    #[test]
    fn the_user_index_follows_replacements_and_deletes() {
        let mut m = Model::new();
        add_af_packet(&mut m, "fabric", 0, 0);
        m.commit_vrf_add(1);
        for id in [1, 2, 3] {
            m.commit_nexthop_set(id, Nexthop::Discard);
        }
        let prefix: IpPrefix = "198.18.0.0/15".parse().unwrap();
        m.commit_route_set(
            1,
            Route {
                prefix,
                nexthop: 1,
                label: None,
            },
        );
        m.commit_route_set(
            1,
            Route {
                prefix,
                nexthop: 2,
                label: None,
            },
        );
        assert!(
            m.check_nexthop_del(1).is_ok(),
            "the replaced route released nexthop 1"
        );
        assert_eq!(m.nexthop_users(2), vec!["route 198.18.0.0/15 in vrf 1"]);
        m.commit_nexthop_set(
            4,
            Nexthop::Ecmp {
                members: vec![1, 3],
            },
        );
        m.commit_nexthop_set(4, Nexthop::Ecmp { members: vec![3] });
        assert!(
            m.check_nexthop_del(1).is_ok(),
            "the replaced group released member 1"
        );
        assert_eq!(m.nexthop_users(3), vec!["ecmp nexthop 4"]);
        m.commit_mpls_set(100, 3);
        m.commit_mpls_set(100, 1);
        assert_eq!(m.nexthop_users(3), vec!["ecmp nexthop 4"]);
        m.commit_nexthop_del(4);
        assert!(m.nexthop_users(3).is_empty());
        m.commit_route_del(1, &prefix);
        m.commit_mpls_del(100);
        assert!(m.users.is_empty(), "{:?}", m.users);
        // A route through an ECMP group is rechecked when a member changes.
        m.commit_nexthop_set(5, tunnel(TunnelEncap::Vxlan));
        m.commit_nexthop_set(6, Nexthop::Ecmp { members: vec![5] });
        m.commit_route_set(
            1,
            Route {
                prefix,
                nexthop: 6,
                label: Some(5_000_000),
            },
        );
        let e = m
            .check_nexthop_set(5, &tunnel(TunnelEncap::Mplsogre))
            .unwrap_err();
        assert!(
            e.to_string().contains("route 198.18.0.0/15 in vrf 1"),
            "{e}"
        );
    }

    #[test]
    fn many_users_are_summarised() {
        let mut m = Model::new();
        m.commit_nexthop_set(1, Nexthop::Discard);
        for i in 0..25u32 {
            let prefix = IpPrefix::new(
                IpAddr::V4(std::net::Ipv4Addr::from(0xc612_0000 + (i << 8))),
                24,
            )
            .unwrap();
            m.commit_route_set(
                0,
                Route {
                    prefix,
                    nexthop: 1,
                    label: None,
                },
            );
        }
        let users = m.nexthop_users(1);
        assert_eq!(users.len(), USERS_NAMED_MAX + 1);
        assert_eq!(users.last().unwrap(), "and 15 more");
        assert_eq!(m.nexthop_use_count(1), 25);
        assert!(m
            .check_nexthop_del(1)
            .unwrap_err()
            .to_string()
            .contains("and 15 more"));
    }

    #[test]
    fn policy_rules_are_checked() {
        let mut m = Model::new();
        add_af_packet(&mut m, "a", 0, 0);
        let rule = |proto, ports| PolicyRule {
            action: PolicyAction::Allow,
            proto,
            cidr: None,
            ports,
        };
        let mut p = Policy {
            default: PolicyAction::Deny,
            ingress: vec![rule(
                Proto::TCP,
                Some(PortRange {
                    first: 80,
                    last: 80,
                }),
            )],
            egress: vec![],
        };
        assert_eq!(m.check_policy_set("a", &p).unwrap(), 0);
        p.egress
            .push(rule(Proto::ICMP, Some(PortRange { first: 1, last: 2 })));
        let e = m.check_policy_set("a", &p).unwrap_err();
        assert!(e.to_string().contains("egress[0].ports"), "{e}");
        assert_eq!(m.check_policy_set("zz", &p).unwrap_err().status(), 404);
    }

    #[test]
    fn created_dirs_pass_to_a_vif_still_inside_them() {
        let mut m = Model::new();
        let vhost = |name: &str, idx: u32, sock: &str, created: Vec<PathBuf>| VifEntry {
            spec: VifSpec {
                index: idx,
                name: name.into(),
                vrf: 0,
                mac: mac(idx as u8 + 1),
                ip: None,
                ip6: None,
                mtu: 1500,
                kind: VifKind::VhostUser {
                    socket: sock.into(),
                    mode: VhostUserMode::Server,
                    queues: 1,
                    group: None,
                },
            },
            config: VifRequest::new(name, VifType::VhostUser, 0, mac(1)),
            created_dirs: created,
            policy: None,
        };
        m.commit_vif_add(vhost("a", 0, "/b/pod/a.sock", vec!["/b/pod".into()]));
        m.commit_vif_add(vhost("b", 1, "/b/pod/b.sock", vec![]));
        assert_eq!(m.socket_user(Path::new("/b/pod/b.sock")), Some("b"));
        assert_eq!(m.free_vif_index(), 2);
        let (_, removable) = m.commit_vif_del("a").unwrap();
        assert!(removable.is_empty());
        assert_eq!(m.free_vif_index(), 0);
        let (_, removable) = m.commit_vif_del("b").unwrap();
        assert_eq!(removable, vec![PathBuf::from("/b/pod")]);
    }
}

/// Random operation sequences against the model: whatever is accepted, the configuration never
/// refers to something that does not exist, and the user index matches a recomputation.
#[cfg(test)]
mod state_machine {
    use super::*;
    use proptest::prelude::*;

    #[derive(Debug, Clone)]
    enum Op {
        VrfAdd(u32),
        VrfDel(u32),
        VifAdd(u8, u32),
        VifDel(u8),
        NhEncap(u32, u8),
        NhTunnel(u32, u8, u8, bool),
        NhEcmp(u32, Vec<u32>),
        NhDiscard(u32),
        NhDel(u32),
        RouteSet(u32, u8, u32, Option<u32>),
        RouteDel(u32, u8),
        BridgeSet(u32, u8, u32, Option<u32>),
        BridgeDel(u32, u8),
        MplsSet(u32, u32),
        MplsDel(u32),
        VxlanSet(u32, u32),
        VxlanDel(u32),
    }

    fn op() -> impl Strategy<Value = Op> {
        let vrf = 0u32..3;
        let nh = 1u32..6;
        let label = prop_oneof![Just(None), Just(Some(100u32)), Just(Some(5_000_000u32))];
        prop_oneof![
            vrf.clone().prop_map(Op::VrfAdd),
            vrf.clone().prop_map(Op::VrfDel),
            (0u8..4, vrf.clone()).prop_map(|(v, r)| Op::VifAdd(v, r)),
            (0u8..4).prop_map(Op::VifDel),
            (nh.clone(), 0u8..4).prop_map(|(n, v)| Op::NhEncap(n, v)),
            (nh.clone(), 0u8..4, 0u8..3, any::<bool>())
                .prop_map(|(n, v, e, ipv6)| Op::NhTunnel(n, v, e, ipv6)),
            (nh.clone(), proptest::collection::vec(1u32..6, 0..4))
                .prop_map(|(n, m)| Op::NhEcmp(n, m)),
            nh.clone().prop_map(Op::NhDiscard),
            nh.clone().prop_map(Op::NhDel),
            (vrf.clone(), 0u8..3, nh.clone(), label.clone())
                .prop_map(|(r, p, n, l)| Op::RouteSet(r, p, n, l)),
            (vrf.clone(), 0u8..3).prop_map(|(r, p)| Op::RouteDel(r, p)),
            (vrf.clone(), 0u8..3, nh.clone(), label)
                .prop_map(|(r, m, n, l)| Op::BridgeSet(r, m, n, l)),
            (vrf.clone(), 0u8..3).prop_map(|(r, m)| Op::BridgeDel(r, m)),
            (16u32..19, nh.clone()).prop_map(|(l, n)| Op::MplsSet(l, n)),
            (16u32..19).prop_map(Op::MplsDel),
            (1u32..3, vrf.clone()).prop_map(|(v, r)| Op::VxlanSet(v, r)),
            (1u32..3).prop_map(Op::VxlanDel),
        ]
    }

    fn prefix(i: u8) -> IpPrefix {
        ["198.18.0.0/15", "198.18.1.0/24", "2001:db8::/32"][usize::from(i % 3)]
            .parse()
            .unwrap()
    }

    fn mac(i: u8) -> MacAddr {
        MacAddr([2, 0, 0, 0, 0, i + 1])
    }

    /// Apply one op the way the controller does (dataplane always accepting).
    fn apply(m: &mut Model, op: Op) {
        match op {
            Op::VrfAdd(v) => {
                if m.check_vrf_add(v).unwrap() {
                    m.commit_vrf_add(v)
                }
            }
            Op::VrfDel(v) => {
                if m.check_vrf_del(v).is_ok() {
                    m.commit_vrf_del(v)
                }
            }
            Op::VifAdd(i, vrf) => {
                let mut req = VifRequest::new(&format!("v{i}"), VifType::Tap, vrf, mac(i));
                req.iface = Some(format!("tap{i}"));
                if let Ok(config) = m.check_vif_add(&req) {
                    let index = m.free_vif_index();
                    m.commit_vif_add(VifEntry {
                        spec: VifSpec {
                            index,
                            name: req.name.clone(),
                            vrf,
                            mac: req.mac,
                            ip: None,
                            ip6: None,
                            mtu: 1500,
                            kind: VifKind::Tap {
                                iface: format!("tap{i}"),
                            },
                        },
                        config,
                        created_dirs: vec![],
                        policy: None,
                    });
                }
            }
            Op::VifDel(i) => {
                let name = format!("v{i}");
                if m.check_vif_del(&name).is_ok() {
                    m.commit_vif_del(&name);
                }
            }
            Op::NhEncap(id, v) => set_nh(
                m,
                id,
                Nexthop::Encap {
                    vif: format!("v{v}"),
                    dmac: mac(9),
                },
            ),
            Op::NhTunnel(id, v, e, ipv6) => {
                let encap = [
                    TunnelEncap::Vxlan,
                    TunnelEncap::Mplsoudp,
                    TunnelEncap::Mplsogre,
                ][usize::from(e)];
                let (sip, dip): (IpAddr, IpAddr) = if ipv6 {
                    (
                        "2001:db8::1".parse().unwrap(),
                        "2001:db8::2".parse().unwrap(),
                    )
                } else {
                    ("192.0.2.1".parse().unwrap(), "192.0.2.2".parse().unwrap())
                };
                set_nh(
                    m,
                    id,
                    Nexthop::Tunnel {
                        encap,
                        vif: format!("v{v}"),
                        sip,
                        dip,
                        dmac: mac(9),
                    },
                )
            }
            Op::NhEcmp(id, members) => set_nh(m, id, Nexthop::Ecmp { members }),
            Op::NhDiscard(id) => set_nh(m, id, Nexthop::Discard),
            Op::NhDel(id) => {
                if m.check_nexthop_del(id).is_ok() {
                    m.commit_nexthop_del(id)
                }
            }
            Op::RouteSet(vrf, p, nexthop, label) => {
                let r = Route {
                    prefix: prefix(p),
                    nexthop,
                    label,
                };
                if m.check_route_set(vrf, &r).is_ok() {
                    m.commit_route_set(vrf, r)
                }
            }
            Op::RouteDel(vrf, p) => {
                if m.check_route_del(vrf, &prefix(p)).is_ok() {
                    m.commit_route_del(vrf, &prefix(p))
                }
            }
            Op::BridgeSet(vrf, i, nexthop, label) => {
                let e = BridgeEntry {
                    mac: mac(i),
                    nexthop,
                    label,
                };
                if m.check_bridge_set(vrf, &e).is_ok() {
                    m.commit_bridge_set(vrf, e)
                }
            }
            Op::BridgeDel(vrf, i) => {
                if m.check_bridge_del(vrf, mac(i)).is_ok() {
                    m.commit_bridge_del(vrf, mac(i))
                }
            }
            Op::MplsSet(l, n) => {
                if m.check_mpls_set(l, n).is_ok() {
                    m.commit_mpls_set(l, n)
                }
            }
            Op::MplsDel(l) => {
                if m.check_mpls_del(l).is_ok() {
                    m.commit_mpls_del(l)
                }
            }
            Op::VxlanSet(v, r) => {
                if m.check_vxlan_set(v, r).is_ok() {
                    m.commit_vxlan_set(v, r)
                }
            }
            Op::VxlanDel(v) => {
                if m.check_vxlan_del(v).is_ok() {
                    m.commit_vxlan_del(v)
                }
            }
        }
    }

    fn set_nh(m: &mut Model, id: u32, nh: Nexthop) {
        if m.check_nexthop_set(id, &nh).is_ok() {
            m.commit_nexthop_set(id, nh)
        }
    }

    fn check_invariants(m: &Model) -> Result<(), String> {
        let lookup = |id: u32| m.nexthops.get(&id);
        for v in m.vifs.values() {
            if !m.vrfs.contains(&v.spec.vrf) {
                return Err(format!("vif {} in missing vrf {}", v.spec.name, v.spec.vrf));
            }
        }
        let mut expected: BTreeMap<u32, BTreeSet<NhUser>> = BTreeMap::new();
        for (id, nh) in &m.nexthops {
            if let Some(vif) = nh.vif() {
                if !m.vifs.contains_key(vif) {
                    return Err(format!("nexthop {id} names missing vif {vif}"));
                }
            }
            if let Nexthop::Ecmp { members } = nh {
                for mem in members {
                    match m.nexthops.get(mem) {
                        None => return Err(format!("ecmp {id} member {mem} missing")),
                        Some(Nexthop::Ecmp { .. }) => return Err(format!("ecmp {id} nests {mem}")),
                        Some(_) => {}
                    }
                    expected.entry(*mem).or_default().insert(NhUser::Ecmp(*id));
                }
            }
        }
        for (vrf, routes) in &m.routes {
            for r in routes.values() {
                if !m.vrfs.contains(vrf) || !m.nexthops.contains_key(&r.nexthop) {
                    return Err(format!("route {} in vrf {vrf} dangles", r.prefix));
                }
                check_label(lookup, r.nexthop, r.label)
                    .map_err(|e| format!("route {}: {e}", r.prefix))?;
                expected
                    .entry(r.nexthop)
                    .or_default()
                    .insert(NhUser::Route(*vrf, r.prefix));
            }
        }
        for (vrf, entries) in &m.bridge {
            for b in entries.values() {
                if !m.vrfs.contains(vrf) || !m.nexthops.contains_key(&b.nexthop) {
                    return Err(format!("bridge {} in vrf {vrf} dangles", b.mac));
                }
                check_label(lookup, b.nexthop, b.label)
                    .map_err(|e| format!("bridge {}: {e}", b.mac))?;
                expected
                    .entry(b.nexthop)
                    .or_default()
                    .insert(NhUser::Bridge(*vrf, b.mac));
            }
        }
        for (label, nh) in &m.mpls {
            if !m.nexthops.contains_key(nh) {
                return Err(format!("mpls {label} dangles"));
            }
            expected
                .entry(*nh)
                .or_default()
                .insert(NhUser::Mpls(*label));
        }
        for (vni, vrf) in &m.vxlan {
            if !m.vrfs.contains(vrf) {
                return Err(format!("vni {vni} dangles"));
            }
        }
        if expected != m.users {
            return Err(format!(
                "user index {:?} != recomputed {expected:?}",
                m.users
            ));
        }
        Ok(())
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]
        #[test]
        fn accepted_changes_never_leave_dangling_references(ops in proptest::collection::vec(op(), 1..60)) {
            let mut m = Model::new();
            for op in ops {
                apply(&mut m, op.clone());
                if let Err(e) = check_invariants(&m) {
                    prop_assert!(false, "after {op:?}: {e}");
                }
            }
        }
    }
}
