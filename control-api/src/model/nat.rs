//! Source NAT: pools (addresses and ports in one VRF: VRF 0, the fabric, for now) and the VRFs
//! attached to them. A pool's addresses never overlap another pool's in the same VRF; a pool in
//! use is not changed or removed; a VRF is attached to a pool of another VRF.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr};

use super::Model;
use crate::api::{
    FloatingIp, FloatingIpInfo, LinkLocalService, LinkLocalServiceInfo, NatPool, NatPoolInfo,
    NatPoolUsage, Service, ServiceBackendInfo, ServiceInfo, SnatAttachment,
};
use crate::error::Error;

/// Addresses a pool may hold (the dataplane keeps one bit per address and port).
pub const NAT_POOL_ADDRESSES_MAX: u32 = 256;
/// Pool names, as long as vif names.
pub const NAT_POOL_NAME_MAX: usize = 63;

/// The NAT part of the model.
#[derive(Debug, Clone, Default)]
pub struct NatModel {
    pools: BTreeMap<String, NatPool>,
    /// Attached VRF → pool name.
    snat: BTreeMap<u32, String>,
    /// Fabric address → the pod address it is.
    floating: BTreeMap<IpAddr, FloatingIp>,
    services: BTreeMap<String, Service>,
    link_local: BTreeMap<String, LinkLocalService>,
}

/// Backends a service may have.
pub const SERVICE_BACKENDS_MAX: usize = 64;

impl Model {
    /// Check `PUT /nat/pools/{name}`; whether it creates a pool (false: the same pool again).
    pub fn check_nat_pool_set(&self, name: &str, pool: &NatPool) -> Result<bool, Error> {
        check_pool_name(name)?;
        if pool.vrf != 0 {
            // Replies come back through the fabric's ingress only: a pool in another VRF
            // would translate one way.
            return Err(Error::field(
                "vrf",
                format!(
                    "{}: source NAT pools live in VRF 0 (the fabric) for now",
                    pool.vrf
                ),
            ));
        }
        check_range(pool)?;
        if let Some(old) = self.nat.pools.get(name) {
            if old == pool {
                return Ok(false);
            }
            let users = self.pool_users(name);
            if !users.is_empty() {
                return Err(Error::Conflict(format!(
                    "nat pool {name} is in use by {}: detach them before changing it",
                    users.join(", ")
                )));
            }
        }
        if let Some(f) = self
            .nat
            .floating
            .keys()
            .find(|a| pool.vrf == 0 && pool_holds(pool, **a))
        {
            return Err(Error::Conflict(format!(
                "nat pool {name} ({}-{}) holds floating IP {f}; remove it or leave it out of the pool",
                pool.first, pool.last
            )));
        }
        if let Some((other, o)) = self.nat.pools.iter().find(|(n, o)| {
            n.as_str() != name
                && o.vrf == pool.vrf
                && o.first.is_ipv6() == pool.first.is_ipv6()
                && bits(o.first) <= bits(pool.last)
                && bits(pool.first) <= bits(o.last)
        }) {
            return Err(Error::Conflict(format!(
                "nat pool {name} ({}-{}) overlaps nat pool {other} ({}-{}) in vrf {}; pools of one VRF must not share addresses",
                pool.first, pool.last, o.first, o.last, pool.vrf
            )));
        }
        Ok(!self.nat.pools.contains_key(name))
    }

    pub fn commit_nat_pool_set(&mut self, name: &str, pool: NatPool) {
        self.nat.pools.insert(name.to_string(), pool);
    }

    pub fn check_nat_pool_del(&self, name: &str) -> Result<(), Error> {
        check_pool_name(name)?;
        self.nat_pool(name)?;
        let users = self.pool_users(name);
        if !users.is_empty() {
            return Err(Error::InUse {
                what: "nat pool",
                key: name.to_string(),
                users,
            });
        }
        Ok(())
    }

    pub fn commit_nat_pool_del(&mut self, name: &str) {
        self.nat.pools.remove(name);
    }

    pub fn nat_pool(&self, name: &str) -> Result<&NatPool, Error> {
        check_pool_name(name)?;
        self.nat.pools.get(name).ok_or_else(|| Error::NotFound {
            what: "nat pool",
            key: name.to_string(),
        })
    }

    /// Every pool with what the dataplane says of its use (absent: none in use).
    pub fn nat_pools(&self, usage: &[NatPoolUsage]) -> Vec<NatPoolInfo> {
        self.nat
            .pools
            .iter()
            .map(|(name, p)| {
                let u = usage.iter().find(|u| &u.name == name);
                let addrs = u64::try_from(bits(p.last).saturating_sub(bits(p.first)))
                    .unwrap_or(u64::MAX - 1)
                    + 1;
                let ports = u64::from(p.ports.last - p.ports.first) + 1;
                NatPoolInfo {
                    name: name.clone(),
                    vrf: p.vrf,
                    first: p.first,
                    last: p.last,
                    ports: p.ports,
                    capacity: u.map_or(addrs * ports, |u| u.capacity),
                    in_use: u.map_or(0, |u| u.in_use),
                    exhausted: u.map_or(0, |u| u.exhausted),
                    attached: self
                        .nat
                        .snat
                        .iter()
                        .filter(|(_, n)| *n == name)
                        .map(|(v, _)| *v)
                        .collect(),
                }
            })
            .collect()
    }

    /// Check `PUT /vrfs/{vrf}/snat`; whether it attaches the VRF anew (false: the same
    /// attachment again).
    pub fn check_snat_set(&self, vrf: u32, a: &SnatAttachment) -> Result<bool, Error> {
        self.require_vrf(vrf)?;
        let Some(pool) = self.nat.pools.get(&a.pool) else {
            return Err(Error::UnknownReference {
                field: "pool",
                what: "nat pool",
                key: a.pool.clone(),
                hint: "create it first with PUT /nat/pools/{name}".to_string(),
            });
        };
        if pool.vrf == vrf {
            return Err(Error::Conflict(format!(
                "nat pool {} has its addresses in vrf {vrf} itself; attach a VRF to a pool of the VRF its flows leave to",
                a.pool
            )));
        }
        Ok(self.nat.snat.get(&vrf) != Some(&a.pool))
    }

    pub fn commit_snat_set(&mut self, vrf: u32, a: &SnatAttachment) {
        self.nat.snat.insert(vrf, a.pool.clone());
    }

    pub fn snat(&self, vrf: u32) -> Result<SnatAttachment, Error> {
        self.require_vrf(vrf)?;
        self.nat
            .snat
            .get(&vrf)
            .map(|p| SnatAttachment { pool: p.clone() })
            .ok_or_else(|| Error::NotFound {
                what: "snat attachment of vrf",
                key: vrf.to_string(),
            })
    }

    pub fn check_snat_del(&self, vrf: u32) -> Result<(), Error> {
        self.snat(vrf).map(|_| ())
    }

    pub fn commit_snat_del(&mut self, vrf: u32) {
        self.nat.snat.remove(&vrf);
    }

    /// Every pool, by name (for snapshots).
    pub fn nat_pool_configs(&self) -> impl Iterator<Item = (&str, &NatPool)> + '_ {
        self.nat.pools.iter().map(|(n, p)| (n.as_str(), p))
    }

    /// Every attachment: VRF, pool name (for snapshots).
    pub fn snat_attachments(&self) -> impl Iterator<Item = (u32, &str)> + '_ {
        self.nat.snat.iter().map(|(v, p)| (*v, p.as_str()))
    }

    /// Check `PUT /nat/floating-ips/{address}`; whether it creates one (false: the same
    /// again, or a replacement).
    pub fn check_floating_ip_set(&self, address: IpAddr, f: &FloatingIp) -> Result<bool, Error> {
        check_floating_address(address)?;
        if address.is_ipv6() != f.ip.is_ipv6() {
            return Err(Error::field(
                "ip",
                format!(
                    "{} and floating IP {address} are of different address families; a floating IP maps IPv4 to IPv4 or IPv6 to IPv6",
                    f.ip
                ),
            ));
        }
        if f.vrf == 0 {
            return Err(Error::field(
                "vrf",
                "a floating IP is a pod address of another VRF than the fabric's (0)",
            ));
        }
        self.require_vrf_ref(f.vrf)?;
        if !is_unicast_ip(f.ip) {
            return Err(Error::field(
                "ip",
                format!("{} is not a unicast address", f.ip),
            ));
        }
        if let Some((name, _)) = self
            .nat
            .pools
            .iter()
            .find(|(_, p)| p.vrf == 0 && pool_holds(p, address))
        {
            return Err(Error::Conflict(format!(
                "{address} is an address of nat pool {name}; a floating IP needs an address of its own"
            )));
        }
        if let Some((other, _)) = self
            .nat
            .floating
            .iter()
            .find(|(a, o)| **a != address && (o.vrf, o.ip) == (f.vrf, f.ip))
        {
            return Err(Error::Conflict(format!(
                "{} in vrf {} has floating IP {other} already",
                f.ip, f.vrf
            )));
        }
        Ok(!self.nat.floating.contains_key(&address))
    }

    pub fn commit_floating_ip_set(&mut self, address: IpAddr, f: FloatingIp) {
        self.nat.floating.insert(address, f);
    }

    pub fn floating_ip(&self, address: IpAddr) -> Result<FloatingIpInfo, Error> {
        check_floating_address(address)?;
        self.nat
            .floating
            .get(&address)
            .map(|f| FloatingIpInfo {
                address,
                vrf: f.vrf,
                ip: f.ip,
            })
            .ok_or_else(|| Error::NotFound {
                what: "floating IP",
                key: address.to_string(),
            })
    }

    pub fn floating_ips(&self) -> Vec<FloatingIpInfo> {
        self.nat
            .floating
            .iter()
            .map(|(a, f)| FloatingIpInfo {
                address: *a,
                vrf: f.vrf,
                ip: f.ip,
            })
            .collect()
    }

    pub fn check_floating_ip_del(&self, address: IpAddr) -> Result<(), Error> {
        self.floating_ip(address).map(drop)
    }

    pub fn commit_floating_ip_del(&mut self, address: IpAddr) {
        self.nat.floating.remove(&address);
    }

    /// Check `PUT /nat/services/{name}`; whether it creates one (false: the same again, or a
    /// replacement).
    pub fn check_service_set(&self, name: &str, s: &Service) -> Result<bool, Error> {
        check_pool_name(name)?;
        self.require_vrf_ref(s.vrf)?;
        if !is_unicast_ip(s.address) {
            return Err(Error::field(
                "address",
                format!("{} is not a unicast address", s.address),
            ));
        }
        if s.port == 0 {
            return Err(Error::field("port", "0 is not a service port"));
        }
        if s.backends.is_empty() {
            return Err(Error::field(
                "backends",
                "a service needs at least one backend",
            ));
        }
        if s.backends.len() > SERVICE_BACKENDS_MAX {
            return Err(Error::field(
                "backends",
                format!(
                    "{} backends; at most {SERVICE_BACKENDS_MAX} are allowed",
                    s.backends.len()
                ),
            ));
        }
        for (i, b) in s.backends.iter().enumerate() {
            if b.address.is_ipv6() != s.address.is_ipv6() {
                return Err(Error::field(
                    "backends",
                    format!(
                        "backend {} is not of the address family of the VIP {}",
                        b.address, s.address
                    ),
                ));
            }
            if !is_unicast_ip(b.address) || b.port == 0 {
                return Err(Error::field(
                    "backends",
                    format!(
                        "{}:{} is not a unicast address and a port 1..=65535",
                        b.address, b.port
                    ),
                ));
            }
            if s.backends[..i].contains(b) {
                return Err(Error::field(
                    "backends",
                    format!("{}:{} is listed twice", b.address, b.port),
                ));
            }
            if (b.address, b.port) == (s.address, s.port) {
                return Err(Error::field("backends", "a backend is the VIP itself"));
            }
        }
        let host_len = if s.address.is_ipv6() { 128 } else { 32 };
        if let Some(r) = self
            .routes(s.vrf)?
            .into_iter()
            .find(|r| r.prefix.contains(s.address) && r.prefix.prefix_len() == host_len)
        {
            return Err(Error::Conflict(format!(
                "{} is route {} of vrf {}: a VIP is an address of its own",
                s.address, r.prefix, s.vrf
            )));
        }
        if let Some((pool, _)) = self
            .nat
            .pools
            .iter()
            .find(|(_, p)| p.vrf == s.vrf && pool_holds(p, s.address))
        {
            return Err(Error::Conflict(format!(
                "{} is an address of nat pool {pool} in vrf {}",
                s.address, s.vrf
            )));
        }
        if s.vrf == 0 && self.nat.floating.contains_key(&s.address) {
            return Err(Error::Conflict(format!("{} is a floating IP", s.address)));
        }
        if let Some((other, _)) = self.nat.services.iter().find(|(n, o)| {
            n.as_str() != name
                && (o.vrf, o.address, o.port, o.proto) == (s.vrf, s.address, s.port, s.proto)
        }) {
            return Err(Error::Conflict(format!(
                "service {other} is {}:{} ({:?}) in vrf {} already",
                s.address, s.port, s.proto, s.vrf
            )));
        }
        if let Some(old) = self.nat.services.get(name) {
            if (old.vrf, old.address, old.port, old.proto) != (s.vrf, s.address, s.port, s.proto) {
                return Err(Error::Conflict(format!(
                    "service {name} is {}:{} in vrf {}: only its backends change; remove it to move it",
                    old.address, old.port, old.vrf
                )));
            }
        }
        Ok(!self.nat.services.contains_key(name))
    }

    /// The service whose VIP host route `prefix` of VRF `vrf` would be.
    pub(super) fn service_at(&self, vrf: u32, prefix: crate::api::IpPrefix) -> Option<&str> {
        let host_len = if prefix.addr().is_ipv6() { 128 } else { 32 };
        (prefix.prefix_len() == host_len)
            .then(|| {
                self.nat
                    .services
                    .iter()
                    .find(|(_, s)| s.vrf == vrf && prefix.addr() == s.address)
            })
            .flatten()
            .map(|(n, _)| n.as_str())
    }

    pub fn commit_service_set(&mut self, name: &str, s: Service) {
        self.nat.services.insert(name.to_string(), s);
    }

    /// Service `name` as configured.
    pub fn service(&self, name: &str) -> Result<&Service, Error> {
        check_pool_name(name)?;
        self.nat.services.get(name).ok_or_else(|| Error::NotFound {
            what: "service",
            key: name.to_string(),
        })
    }

    pub fn commit_service_del(&mut self, name: &str) {
        self.nat.services.remove(name);
    }

    /// Every service, by name (for listings and snapshots).
    pub fn services(&self) -> impl Iterator<Item = (&str, &Service)> + '_ {
        self.nat.services.iter().map(|(n, s)| (n.as_str(), s))
    }

    /// What ties VRF `vrf` to NAT, for its removal: pools in it, its attachment, its floating
    /// IPs.
    pub(super) fn nat_users_of_vrf(&self, vrf: u32) -> Vec<String> {
        let mut users: Vec<String> = self
            .nat
            .pools
            .iter()
            .filter(|(_, p)| p.vrf == vrf)
            .map(|(n, _)| format!("nat pool {n}"))
            .collect();
        if let Some(p) = self.nat.snat.get(&vrf) {
            users.push(format!("its snat attachment to nat pool {p}"));
        }
        users.extend(
            self.nat
                .floating
                .iter()
                .filter(|(_, f)| f.vrf == vrf)
                .map(|(a, _)| format!("floating IP {a}")),
        );
        users.extend(
            self.nat
                .services
                .iter()
                .filter(|(_, s)| s.vrf == vrf)
                .map(|(n, _)| format!("service {n}")),
        );
        users
    }

    fn pool_users(&self, name: &str) -> Vec<String> {
        self.nat
            .snat
            .iter()
            .filter(|(_, n)| n.as_str() == name)
            .map(|(v, _)| format!("snat of vrf {v}"))
            .collect()
    }
}

impl Model {
    /// Check `PUT /link-local-services/{name}`; whether it creates one (false: the same
    /// again, or a replacement).
    pub fn check_link_local_set(&self, name: &str, s: &LinkLocalService) -> Result<bool, Error> {
        check_pool_name(name)?;
        let [a, b, c, _] = s.address.octets();
        if (a, b) != (169, 254) {
            return Err(Error::field(
                "address",
                format!("{} is not a link-local address (169.254.0.0/16)", s.address),
            ));
        }
        if (1..=4).contains(&c) {
            return Err(Error::field(
                "address",
                format!(
                    "{} is in 169.254.1.0-169.254.4.255, the vifs' own link-local sources",
                    s.address
                ),
            ));
        }
        if s.port == 0 {
            return Err(Error::field("port", "0 is not a service port"));
        }
        if !is_unicast(s.service_address) {
            return Err(Error::field(
                "service-address",
                format!("{} is not a unicast address", s.service_address),
            ));
        }
        if s.service_port == 0 {
            return Err(Error::field("service-port", "0 is not a service port"));
        }
        if let Some((other, _)) = self.nat.link_local.iter().find(|(n, o)| {
            n.as_str() != name && (o.address, o.port, o.proto) == (s.address, s.port, s.proto)
        }) {
            return Err(Error::Conflict(format!(
                "link-local service {other} is {}:{} ({:?}) already",
                s.address, s.port, s.proto
            )));
        }
        Ok(!self.nat.link_local.contains_key(name))
    }

    pub fn commit_link_local_set(&mut self, name: &str, s: LinkLocalService) {
        self.nat.link_local.insert(name.to_string(), s);
    }

    /// Link-local service `name` as configured.
    pub fn link_local(&self, name: &str) -> Result<&LinkLocalService, Error> {
        check_pool_name(name)?;
        self.nat
            .link_local
            .get(name)
            .ok_or_else(|| Error::NotFound {
                what: "link-local service",
                key: name.to_string(),
            })
    }

    pub fn commit_link_local_del(&mut self, name: &str) {
        self.nat.link_local.remove(name);
    }

    /// Every link-local service, by name.
    pub fn link_locals(&self) -> impl Iterator<Item = (&str, &LinkLocalService)> + '_ {
        self.nat.link_local.iter().map(|(n, s)| (n.as_str(), s))
    }

    pub fn link_local_infos(&self) -> Vec<LinkLocalServiceInfo> {
        self.link_locals()
            .map(|(n, s)| LinkLocalServiceInfo {
                name: n.to_string(),
                service: *s,
            })
            .collect()
    }
}

fn check_pool_name(name: &str) -> Result<(), Error> {
    let ok = !name.is_empty()
        && name.len() <= NAT_POOL_NAME_MAX
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
        && name.starts_with(|c: char| c.is_ascii_alphanumeric());
    if !ok {
        return Err(Error::InvalidPathParam {
            param: "name",
            reason: format!(
                "{name:?} is not a valid name: 1..={NAT_POOL_NAME_MAX} characters of A-Z a-z 0-9 . _ -, starting with a letter or digit"
            ),
        });
    }
    Ok(())
}

fn is_unicast(a: Ipv4Addr) -> bool {
    !(a.is_unspecified() || a.is_broadcast() || a.is_multicast())
}

fn is_unicast_ip(a: std::net::IpAddr) -> bool {
    match a {
        std::net::IpAddr::V4(a) => is_unicast(a),
        std::net::IpAddr::V6(a) => !(a.is_unspecified() || a.is_multicast() || a.is_loopback()),
    }
}

/// An address's bits (an IPv4 address in the low 32).
fn bits(a: IpAddr) -> u128 {
    match a {
        IpAddr::V4(a) => u128::from(u32::from(a)),
        IpAddr::V6(a) => u128::from(a),
    }
}

/// Whether `a` is one of pool `p`'s addresses (of its family).
fn pool_holds(p: &NatPool, a: IpAddr) -> bool {
    a.is_ipv6() == p.first.is_ipv6() && (bits(p.first)..=bits(p.last)).contains(&bits(a))
}

fn check_floating_address(a: IpAddr) -> Result<(), Error> {
    if !is_unicast_ip(a) {
        return Err(Error::InvalidPathParam {
            param: "address",
            reason: format!("{a} is not a unicast address"),
        });
    }
    Ok(())
}

fn check_range(p: &NatPool) -> Result<(), Error> {
    if p.first.is_ipv6() != p.last.is_ipv6() {
        return Err(Error::field(
            "last",
            format!(
                "{} and first {} are of different address families; a pool is IPv4 or IPv6",
                p.last, p.first
            ),
        ));
    }
    let (first, last) = (bits(p.first), bits(p.last));
    if !is_unicast_ip(p.first) || !is_unicast_ip(p.last) {
        return Err(Error::field(
            "first",
            format!(
                "{}-{}: a pool's addresses must be unicast (not unspecified, loopback, multicast or broadcast)",
                p.first, p.last
            ),
        ));
    }
    if first > last {
        return Err(Error::field(
            "last",
            format!("{} is below first {}", p.last, p.first),
        ));
    }
    if last - first >= u128::from(NAT_POOL_ADDRESSES_MAX) {
        return Err(Error::field(
            "last",
            format!(
                "{}-{} holds {} addresses; at most {NAT_POOL_ADDRESSES_MAX} are allowed",
                p.first,
                p.last,
                (last - first).saturating_add(1)
            ),
        ));
    }
    if p.ports.first == 0 || p.ports.first > p.ports.last {
        return Err(Error::field(
            "ports",
            format!(
                "{}-{} is not a port range: first must be 1..=last",
                p.ports.first, p.ports.last
            ),
        ));
    }
    Ok(())
}

/// A service as listed, `flows` per backend (absent: none).
pub fn service_info(name: &str, s: &Service, flows: &[u64]) -> ServiceInfo {
    ServiceInfo {
        name: name.to_string(),
        vrf: s.vrf,
        address: s.address,
        port: s.port,
        proto: s.proto,
        backends: s
            .backends
            .iter()
            .enumerate()
            .map(|(i, b)| ServiceBackendInfo {
                address: b.address,
                port: b.port,
                flows: flows.get(i).copied().unwrap_or(0),
            })
            .collect(),
        balance: s.balance,
    }
}
