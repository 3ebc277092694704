//! What a vif request means once it is valid: [`VifConfig`] holds exactly the fields its type
//! takes, none of them optional where the type requires them, so the code after validation has
//! nothing left to re-check. The checks here need nothing but the request; those against the
//! other vifs are the model's.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::PathBuf;

use crate::api::{IpPrefix, MacAddr, StaticRoute, VhostUserMode, VifRequest, VifType};
use crate::dataplane::{DhcpSettings, VifKind, VifSpec};
use crate::error::Error;
use crate::model::{IFACE_NAME_MAX, MTU_DEFAULT, MTU_MAX, MTU_MIN, MTU_MIN_IPV6, QUEUES_MAX};

/// Longest DPDK device string (PCI address or vdev with its arguments) accepted.
const DEVICE_MAX: usize = 256;

/// A physical vif whose `device` starts with this is the kernel interface named after it,
/// read and written through vrouterd's own AF_PACKET port rather than a DPDK driver: a fabric
/// on a veth or a NIC the kernel keeps, at any MTU (DPDK 22.11's `net_af_packet` and `net_tap`
/// take standard frames only). No DPDK device name starts with it.
pub const KERNEL_DEVICE_PREFIX: &str = "kernel:";

/// The kernel interface a physical vif's `device` names (`kernel:IFACE`), if it names one.
pub fn kernel_device_iface(device: &str) -> Option<&str> {
    device.strip_prefix(KERNEL_DEVICE_PREFIX)
}

/// A vif request that passed validation, defaults filled in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VifConfig {
    pub name: String,
    pub vrf: u32,
    pub mac: MacAddr,
    pub ip: Option<Ipv4Addr>,
    pub ip6: Option<Ipv6Addr>,
    pub mtu: u32,
    pub port: VifPort,
    /// With `ip` and `prefix-len`: what its DHCP answers hand out.
    pub dhcp: Option<DhcpSettings>,
}

/// What the vif attaches to, with the fields of its type.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VifPort {
    VhostUser(VhostUserPort),
    /// A PCI address (vfio), a DPDK vdev string, or `kernel:IFACE` (a kernel interface on
    /// vrouterd's own AF_PACKET port, see [`KERNEL_DEVICE_PREFIX`]).
    Physical {
        device: String,
    },
    /// A kernel interface attached with AF_PACKET.
    AfPacket {
        iface: String,
    },
    /// A kernel tap interface for the host.
    Tap {
        iface: String,
    },
}

/// A vhost-user socket as the request names it (the controller resolves it below the socket
/// base).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VhostUserPort {
    pub dir: PathBuf,
    pub filename: String,
    pub mode: VhostUserMode,
    /// Group that may reach the socket, by name.
    pub group: Option<String>,
    pub queues: u32,
}

impl VifPort {
    /// The type-dependent fields of `req`: each one its type requires present, each other one
    /// absent, each well-formed.
    pub(super) fn from_request(req: &VifRequest) -> Result<VifPort, Error> {
        let t = req.vif_type;
        Ok(match t {
            VifType::VhostUser => {
                forbid("device", &req.device, t)?;
                forbid("iface", &req.iface, t)?;
                VifPort::VhostUser(VhostUserPort {
                    dir: require("vhostsocket-dir", &req.vhostsocket_dir, t)?.clone(),
                    filename: require("vhostsocket-filename", &req.vhostsocket_filename, t)?
                        .clone(),
                    mode: *require("vhostuser-mode", &req.vhostuser_mode, t)?,
                    group: req.vhostsocket_group.clone(),
                    queues: queues(req.queues)?,
                })
            }
            VifType::Physical => {
                forbid_vhost(req)?;
                forbid("iface", &req.iface, t)?;
                VifPort::Physical {
                    device: device(require("device", &req.device, t)?)?,
                }
            }
            VifType::AfPacket => VifPort::AfPacket {
                iface: kernel_iface(req)?,
            },
            VifType::Tap => VifPort::Tap {
                iface: kernel_iface(req)?,
            },
        })
    }

    /// The DPDK device string of a physical vif.
    pub fn device(&self) -> Option<&str> {
        match self {
            VifPort::Physical { device } => Some(device),
            _ => None,
        }
    }

    /// The kernel interface of an af-packet or tap vif, or of a physical vif on one.
    pub fn kernel_iface(&self) -> Option<&str> {
        match self {
            VifPort::AfPacket { iface } | VifPort::Tap { iface } => Some(iface),
            VifPort::Physical { device } => kernel_device_iface(device),
            VifPort::VhostUser(_) => None,
        }
    }

    pub fn vif_type(&self) -> VifType {
        match self {
            VifPort::VhostUser(_) => VifType::VhostUser,
            VifPort::Physical { .. } => VifType::Physical,
            VifPort::AfPacket { .. } => VifType::AfPacket,
            VifPort::Tap { .. } => VifType::Tap,
        }
    }
}

impl VifConfig {
    /// The request as accepted: what the agent sent, with the defaults it left out filled in.
    /// Answers and saved state carry it.
    pub fn to_request(&self) -> VifRequest {
        let mut req = VifRequest::new(&self.name, self.port.vif_type(), self.vrf, self.mac);
        req.ip = self.ip;
        req.ip6 = self.ip6;
        req.mtu = Some(self.mtu);
        if let Some(d) = &self.dhcp {
            req.prefix_len = Some(d.prefix_len);
            req.gateway = Some(d.gateway);
            req.dns_servers = d.dns_servers.clone();
            req.static_routes = d
                .static_routes
                .iter()
                .filter_map(|&(p, len, via)| {
                    let prefix = IpPrefix::new(IpAddr::V4(p), len).ok()?;
                    Some(StaticRoute { prefix, via })
                })
                .collect();
            req.lease_time = Some(d.lease_time);
        }
        match &self.port {
            VifPort::VhostUser(v) => {
                req.vhostsocket_dir = Some(v.dir.clone());
                req.vhostsocket_filename = Some(v.filename.clone());
                req.vhostuser_mode = Some(v.mode);
                req.vhostsocket_group = v.group.clone();
                req.queues = Some(v.queues);
            }
            VifPort::Physical { device } => req.device = Some(device.clone()),
            VifPort::AfPacket { iface } | VifPort::Tap { iface } => req.iface = Some(iface.clone()),
        }
        req
    }

    /// The vif as the dataplane opens it, at `index`, attached as `kind`.
    pub fn spec(&self, index: u32, kind: VifKind) -> VifSpec {
        VifSpec {
            index,
            name: self.name.clone(),
            vrf: self.vrf,
            mac: self.mac,
            ip: self.ip,
            ip6: self.ip6,
            mtu: self.mtu,
            kind,
            dhcp: self.dhcp.clone(),
        }
    }
}

/// The MTU asked for, or the default; IPv6 needs a larger minimum.
pub(super) fn mtu(req: &VifRequest) -> Result<u32, Error> {
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
    Ok(mtu)
}

/// The vif's own addresses, if given, are unicast host addresses.
pub(super) fn check_addresses(req: &VifRequest) -> Result<(), Error> {
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
    Ok(())
}

/// DHCP servers a lease names at most (option 6).
pub const DNS_SERVERS_MAX: usize = 4;
/// Classless static routes a lease carries at most (option 121).
pub const STATIC_ROUTES_MAX: usize = 16;
/// The lease time when none is given: a day.
pub const LEASE_TIME_DEFAULT: u32 = 86_400;
/// The shortest lease time taken.
pub const LEASE_TIME_MIN: u32 = 60;

/// The vif's DHCP lease: with `ip` and `prefix-len`, on a pod's vif (vhost-user, af-packet);
/// the other DHCP fields need both.
pub(super) fn dhcp(req: &VifRequest) -> Result<Option<DhcpSettings>, Error> {
    let Some(prefix_len) = req.prefix_len else {
        let given = [
            ("gateway", req.gateway.is_some()),
            ("dns-servers", !req.dns_servers.is_empty()),
            ("static-routes", !req.static_routes.is_empty()),
            ("lease-time", req.lease_time.is_some()),
        ];
        if let Some((field, _)) = given.iter().find(|(_, g)| *g) {
            return Err(Error::field(
                *field,
                "is a DHCP setting and needs `ip` and `prefix-len` (the address DHCP hands out)",
            ));
        }
        return Ok(None);
    };
    if !matches!(req.vif_type, VifType::VhostUser | VifType::AfPacket) {
        return Err(Error::field(
            "prefix-len",
            format!(
                "is not valid for a {} vif (DHCP is served to pods: vhost-user and af-packet vifs); remove it",
                req.vif_type
            ),
        ));
    }
    let Some(address) = req.ip else {
        return Err(Error::MissingField {
            field: "ip".to_string(),
            context: "with `prefix-len` (the address the vif's DHCP hands out)".to_string(),
        });
    };
    if !(1..=30).contains(&prefix_len) {
        return Err(Error::field(
            "prefix-len",
            format!(
                "{prefix_len} is outside 1..=30 (the subnet must hold the address and its gateway)"
            ),
        ));
    }
    let mask = u32::MAX << (32 - u32::from(prefix_len));
    let network = u32::from(address) & mask;
    let broadcast = network | !mask;
    let subnet = format!("{}/{prefix_len}", Ipv4Addr::from(network));
    // An address of the subnet a host may have: not its network or broadcast address.
    let host_in_subnet = |a: Ipv4Addr| {
        let a = u32::from(a);
        a & mask == network && a != network && a != broadcast
    };
    if !host_in_subnet(address) {
        return Err(Error::field(
            "ip",
            format!("{address} is the network or broadcast address of {subnet}"),
        ));
    }
    let gateway = req.gateway.unwrap_or(Ipv4Addr::from(network + 1));
    if gateway == address {
        let why = if req.gateway.is_none() {
            " (the default: the subnet's first address); give `gateway`"
        } else {
            ""
        };
        return Err(Error::field(
            "gateway",
            format!("{gateway} is the vif's own `ip`{why}"),
        ));
    }
    if !host_in_subnet(gateway) {
        return Err(Error::field(
            "gateway",
            format!("{gateway} is not a host address of the vif's subnet {subnet}"),
        ));
    }
    if req.dns_servers.len() > DNS_SERVERS_MAX {
        return Err(Error::field(
            "dns-servers",
            format!(
                "{} servers; at most {DNS_SERVERS_MAX}",
                req.dns_servers.len()
            ),
        ));
    }
    if let Some(d) = req
        .dns_servers
        .iter()
        .find(|d| d.is_unspecified() || d.is_broadcast() || d.is_multicast())
    {
        return Err(Error::field(
            "dns-servers",
            format!("{d} is not a unicast address"),
        ));
    }
    if req.static_routes.len() > STATIC_ROUTES_MAX {
        return Err(Error::field(
            "static-routes",
            format!(
                "{} routes; at most {STATIC_ROUTES_MAX}",
                req.static_routes.len()
            ),
        ));
    }
    let mut static_routes = Vec::with_capacity(req.static_routes.len());
    for r in &req.static_routes {
        let IpAddr::V4(p) = r.prefix.addr() else {
            return Err(Error::field(
                "static-routes",
                format!("{} is not an IPv4 prefix", r.prefix),
            ));
        };
        if r.prefix.prefix_len() == 0 {
            return Err(Error::field(
                "static-routes",
                "0.0.0.0/0 is the gateway's route (sent with the others); set `gateway` instead",
            ));
        }
        if !host_in_subnet(r.via) {
            return Err(Error::field(
                "static-routes",
                format!(
                    "via {} (for {}) is not a host address of the vif's subnet {subnet}",
                    r.via, r.prefix
                ),
            ));
        }
        static_routes.push((p, r.prefix.prefix_len(), r.via));
    }
    let lease_time = req.lease_time.unwrap_or(LEASE_TIME_DEFAULT);
    if lease_time < LEASE_TIME_MIN {
        return Err(Error::field(
            "lease-time",
            format!("{lease_time} s is shorter than {LEASE_TIME_MIN} s"),
        ));
    }
    Ok(Some(DhcpSettings {
        address,
        prefix_len,
        gateway,
        dns_servers: req.dns_servers.clone(),
        static_routes,
        lease_time,
    }))
}

/// Queue pairs of a vhost-user vif: one unless asked for more.
fn queues(asked: Option<u32>) -> Result<u32, Error> {
    let queues = asked.unwrap_or(1);
    if !(1..=QUEUES_MAX).contains(&queues) {
        return Err(Error::field(
            "queues",
            format!("{queues} is outside 1..={QUEUES_MAX}"),
        ));
    }
    Ok(queues)
}

fn device(device: &str) -> Result<String, Error> {
    if device.is_empty()
        || device.len() > DEVICE_MAX
        || device.chars().any(|c| c.is_whitespace() || c.is_control())
    {
        return Err(Error::field(
            "device",
            format!(
                "{device:?} is not a PCI address or DPDK vdev string (no spaces, 1..={DEVICE_MAX} bytes)"
            ),
        ));
    }
    if let Some(iface) = kernel_device_iface(device) {
        check_iface_name("device", iface)?;
    }
    Ok(device.to_owned())
}

/// The kernel interface of an af-packet or tap vif.
fn kernel_iface(req: &VifRequest) -> Result<String, Error> {
    let t = req.vif_type;
    forbid_vhost(req)?;
    forbid("device", &req.device, t)?;
    let iface = require("iface", &req.iface, t)?;
    check_iface_name("iface", iface)?;
    Ok(iface.clone())
}

/// `iface`, given in `field`, is a name Linux takes for an interface.
fn check_iface_name(field: &str, iface: &str) -> Result<(), Error> {
    let valid = !iface.is_empty()
        && iface.len() <= IFACE_NAME_MAX
        && iface != "."
        && iface != ".."
        && !iface
            .chars()
            .any(|c| c == '/' || c == ':' || c.is_whitespace() || c.is_control());
    if !valid {
        return Err(Error::field(
            field,
            format!(
                "{iface:?} is not a Linux interface name (1..={IFACE_NAME_MAX} bytes, no '/', ':' or spaces)"
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
