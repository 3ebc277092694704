//! NAT: source-NAT pools (`/nat/pools`, `/nat/pools/{name}`), the VRFs attached to them
//! (`/vrfs/{vrf}/snat`), floating IPs (`/nat/floating-ips/{address}`), service VIPs
//! (`/nat/services/{name}`).

use std::net::{IpAddr, Ipv4Addr};

use serde::{Deserialize, Serialize};

/// `PUT /nat/pools/{name}`: addresses `first..=last` in VRF `vrf` (IPv4, or IPv6 for NAT66:
/// both of one family), each with the ports `ports.first..=ports.last` (also the ICMP / ICMPv6
/// echo identifiers handed out). Flows of an attached VRF toward a vif of `vrf`, of the pool's
/// address family, leave from one of these pairs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NatPool {
    pub vrf: u32,
    pub first: IpAddr,
    pub last: IpAddr,
    #[serde(default)]
    pub ports: NatPorts,
}

/// A pool's port range; 1024..=65535 unless given.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NatPorts {
    pub first: u16,
    pub last: u16,
}

impl Default for NatPorts {
    fn default() -> Self {
        NatPorts {
            first: 1024,
            last: 65535,
        }
    }
}

/// A pool as listed: its configuration, its use and the VRFs attached to it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NatPoolInfo {
    pub name: String,
    pub vrf: u32,
    pub first: IpAddr,
    pub last: IpAddr,
    pub ports: NatPorts,
    /// Address and port pairs it holds.
    pub capacity: u64,
    /// Pairs held by flows now.
    pub in_use: u64,
    /// New flows dropped because no pair was free (`nat_pool_exhausted`).
    pub exhausted: u64,
    /// VRFs whose flows leave through it.
    pub attached: Vec<u32>,
}

/// `PUT /vrfs/{vrf}/snat`: the VRF's flows toward the pool's VRF leave through pool `pool`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SnatAttachment {
    pub pool: String,
}

/// `PUT /nat/floating-ips/{address}`: the fabric address `{address}` is pod address `ip` of
/// VRF `vrf`, both ways. IPv4 or IPv6, the same family both sides.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FloatingIp {
    pub vrf: u32,
    pub ip: IpAddr,
}

/// A floating IP as listed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FloatingIpInfo {
    pub address: IpAddr,
    pub vrf: u32,
    pub ip: IpAddr,
}

/// What the dataplane says of a pool's use.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct NatPoolUsage {
    pub name: String,
    pub capacity: u64,
    pub in_use: u64,
    pub exhausted: u64,
}

/// A service VIP's transport protocol.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ServiceProto {
    Tcp,
    Udp,
}

impl ServiceProto {
    /// The IP protocol number.
    pub fn number(self) -> u8 {
        match self {
            ServiceProto::Tcp => 6,
            ServiceProto::Udp => 17,
        }
    }
}

/// `PUT /link-local-services/{name}`: TCP or UDP from any pod to `address:port` (link-local,
/// 169.254.169.254:80 unless given) goes to `service-address:service-port`, routed in the
/// fabric VRF, from the pod's vif's own link-local address (169.254.1.0 + vif index).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LinkLocalService {
    #[serde(default = "LinkLocalService::default_address")]
    pub address: Ipv4Addr,
    #[serde(default = "LinkLocalService::default_port")]
    pub port: u16,
    #[serde(default = "LinkLocalService::default_proto")]
    pub proto: ServiceProto,
    #[serde(rename = "service-address")]
    pub service_address: Ipv4Addr,
    #[serde(rename = "service-port")]
    pub service_port: u16,
}

impl LinkLocalService {
    /// The metadata service's address.
    pub const METADATA: Ipv4Addr = Ipv4Addr::new(169, 254, 169, 254);
    fn default_address() -> Ipv4Addr {
        Self::METADATA
    }
    fn default_port() -> u16 {
        80
    }
    fn default_proto() -> ServiceProto {
        ServiceProto::Tcp
    }
}

/// A link-local service as listed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LinkLocalServiceInfo {
    pub name: String,
    #[serde(flatten)]
    pub service: LinkLocalService,
}

/// A service backend: an address and port of a pod of the service's VRF (of the VIP's
/// address family).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServiceBackend {
    pub address: IpAddr,
    pub port: u16,
}

/// How a service picks a new flow's backend.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ServiceBalance {
    /// By the flow's hash.
    #[default]
    Hash,
    /// The backend with the fewest flows now.
    LeastFlows,
}

impl ServiceBalance {
    /// The default (left out when saved, so older journals read the same).
    pub fn is_hash(&self) -> bool {
        *self == ServiceBalance::Hash
    }
}

/// `PUT /nat/services/{name}`: flows to `address:port` (`proto`) in VRF `vrf` go to one of
/// `backends`, picked per flow as `balance` says (its hash by default) and kept for its life.
/// IPv4 or IPv6: the backends are of the VIP's address family.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Service {
    pub vrf: u32,
    pub address: IpAddr,
    pub port: u16,
    pub proto: ServiceProto,
    pub backends: Vec<ServiceBackend>,
    #[serde(default, skip_serializing_if = "ServiceBalance::is_hash")]
    pub balance: ServiceBalance,
}

/// A backend as listed, with the flows it holds now.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServiceBackendInfo {
    pub address: IpAddr,
    pub port: u16,
    pub flows: u64,
}

/// A service as listed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServiceInfo {
    pub name: String,
    pub vrf: u32,
    pub address: IpAddr,
    pub port: u16,
    pub proto: ServiceProto,
    pub backends: Vec<ServiceBackendInfo>,
    pub balance: ServiceBalance,
}
