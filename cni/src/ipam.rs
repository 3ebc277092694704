//! The built-in IPAM: named pools per network, one address per address family per
//! (container, interface), pools of different networks never overlapping within a VRF.
//! Everything here works on a [`State`] the caller holds locked.

use std::net::IpAddr;

use crate::config::{from_u128, overlaps, to_u128, PoolConf};
use crate::error::{code, CniError, Result};
use crate::store::{Allocation, PoolRecord, State};

/// An address with its pool's prefix length and gateway.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lease {
    pub ip: IpAddr,
    pub prefix_len: u8,
    pub gateway: IpAddr,
}

impl Lease {
    pub fn cidr(&self) -> String {
        format!("{}/{}", self.ip, self.prefix_len)
    }
}

fn pool_key(network: &str, pool: &str) -> String {
    format!("{network}/{pool}")
}

/// Refuses pools that overlap another network's pool in use in the same VRF, or that differ
/// from what this network's same-named pool was registered with while it holds addresses.
pub fn check_pools(state: &State, network: &str, vrf: u32, pools: &[PoolConf]) -> Result<()> {
    for (i, p) in pools.iter().enumerate() {
        let path = format!("ipam.pools[{i}].subnet");
        let key = pool_key(network, &p.name);
        if let Some(r) = state.pools.get(&key) {
            if r.subnet != p.subnet.to_string() || r.vrf != vrf {
                return Err(CniError::config(
                    &path,
                    format!(
                        "pool {:?} of network {network:?} holds addresses of {} in VRF {}; this configuration says {} in VRF {vrf}: delete its pods first, or give the pool a new name",
                        p.name, r.subnet, r.vrf, p.subnet
                    ),
                ));
            }
        }
        for (k, r) in &state.pools {
            if *k == key || r.vrf != vrf {
                continue;
            }
            let Ok(other) = r.subnet.parse() else {
                continue;
            };
            if overlaps(&p.subnet, &other) {
                return Err(CniError::config(
                    &path,
                    format!(
                        "{} overlaps pool {:?} ({}) of network {:?} in VRF {vrf}: pools in one VRF must not overlap",
                        p.subnet, r.pool, r.subnet, r.network
                    ),
                ));
            }
        }
    }
    Ok(())
}

/// Gives (container, ifname) one address of each family the pools offer, the first pool of a
/// family with room serving it. Asking again returns the same addresses.
pub fn allocate(
    state: &mut State,
    network: &str,
    vrf: u32,
    pools: &[PoolConf],
    container_id: &str,
    ifname: &str,
) -> Result<Vec<Lease>> {
    check_pools(state, network, vrf, pools)?;
    let mut leases = Vec::new();
    for v4 in [true, false] {
        let family: Vec<&PoolConf> = pools.iter().filter(|p| p.is_ipv4() == v4).collect();
        if family.is_empty() {
            continue;
        }
        if let Some(l) = existing(state, network, &family, container_id, ifname) {
            leases.push(l);
            continue;
        }
        let mut got = None;
        for p in &family {
            if let Some(ip) = free_address(state, network, p) {
                got = Some((p, ip));
                break;
            }
        }
        let Some((p, ip)) = got else {
            let names: Vec<String> = family
                .iter()
                .map(|p| format!("{:?} ({}, {} addresses)", p.name, p.subnet, p.size()))
                .collect();
            return Err(CniError::new(
                code::POOL_EXHAUSTED,
                format!(
                    "network {network:?}: no free IPv{} address: every address of pool {} is in use; add a pool to `ipam.pools` or delete pods",
                    if v4 { 4 } else { 6 },
                    names.join(", ")
                ),
            ));
        };
        let key = pool_key(network, &p.name);
        state.pools.entry(key.clone()).or_insert(PoolRecord {
            network: network.to_string(),
            pool: p.name.clone(),
            vrf,
            subnet: p.subnet.to_string(),
        });
        state.allocations.insert(
            ip,
            Allocation {
                network: network.to_string(),
                pool: p.name.clone(),
                container_id: container_id.to_string(),
                ifname: ifname.to_string(),
            },
        );
        state.last.insert(key, ip);
        leases.push(Lease {
            ip,
            prefix_len: p.subnet.prefix_len(),
            gateway: p.gateway,
        });
    }
    Ok(leases)
}

fn existing(
    state: &State,
    network: &str,
    family: &[&PoolConf],
    container_id: &str,
    ifname: &str,
) -> Option<Lease> {
    state.allocations.iter().find_map(|(ip, a)| {
        if a.network != network || a.container_id != container_id || a.ifname != ifname {
            return None;
        }
        let p = family
            .iter()
            .find(|p| p.name == a.pool && p.subnet.contains(*ip))?;
        Some(Lease {
            ip: *ip,
            prefix_len: p.subnet.prefix_len(),
            gateway: p.gateway,
        })
    })
}

/// The next free address after the pool's last one, wrapping around once.
fn free_address(state: &State, network: &str, p: &PoolConf) -> Option<IpAddr> {
    let in_use = state
        .allocations
        .range(p.first..=p.last)
        .filter(|(ip, a)| a.network == network && a.pool == p.name && **ip != p.gateway)
        .count() as u128;
    // Addresses of the range taken by anyone (another network's pool cannot overlap it, but a
    // stale record must still not be handed out twice).
    if in_use >= p.size() {
        return None;
    }
    let (first, last) = (to_u128(p.first), to_u128(p.last));
    let start = state
        .last
        .get(&pool_key(network, &p.name))
        .map(|ip| to_u128(*ip))
        .filter(|v| *v >= first && *v < last)
        .map_or(first, |v| v + 1);
    let v4 = p.is_ipv4();
    let mut v = start;
    // Each step passes one address in use (or the gateway), so this ends within
    // in_use + 2 steps of finding one.
    loop {
        let ip = from_u128(v, v4);
        if ip != p.gateway && !state.allocations.contains_key(&ip) {
            return Some(ip);
        }
        v = if v >= last { first } else { v + 1 };
        if v == start {
            return None;
        }
    }
}

/// Frees what (container, ifname) holds in `network`; pools left empty are unregistered.
/// Returns the addresses freed.
pub fn release(state: &mut State, network: &str, container_id: &str, ifname: &str) -> Vec<IpAddr> {
    let freed: Vec<IpAddr> = state
        .allocations
        .iter()
        .filter(|(_, a)| {
            a.network == network && a.container_id == container_id && a.ifname == ifname
        })
        .map(|(ip, _)| *ip)
        .collect();
    for ip in &freed {
        state.allocations.remove(ip);
    }
    let empty: Vec<String> = state
        .pools
        .iter()
        .filter(|(_, r)| {
            !state
                .allocations
                .values()
                .any(|a| a.network == r.network && a.pool == r.pool)
        })
        .map(|(k, _)| k.clone())
        .collect();
    // `last` stays: the next pod must not get the address just freed, even from a pool that
    // was empty for a moment.
    for k in empty {
        state.pools.remove(&k);
    }
    freed
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::parse_pools;

    fn pools(v: serde_json::Value) -> Vec<PoolConf> {
        parse_pools(v.as_object().expect("object")).expect("pools")
    }

    #[test]
    fn dual_stack_leases_are_distinct_until_exhaustion_then_a_clear_error() {
        let p = pools(serde_json::json!({"pools": [
            {"name": "v4", "subnet": "198.18.1.0/29"},
            {"name": "v6", "subnet": "2001:db8:18:1::/64"}]}));
        let mut s = State::default();
        let mut seen = std::collections::BTreeSet::new();
        // 198.18.1.0/29: .1 is the gateway, .7 broadcast: .2 to .6.
        for i in 0..5 {
            let l = allocate(&mut s, "n", 1, &p, &format!("c{i}"), "eth0").expect("lease");
            assert_eq!(l.len(), 2);
            assert!(l[0].ip.is_ipv4() && l[1].ip.is_ipv6());
            assert_eq!(l[0].gateway.to_string(), "198.18.1.1");
            assert!(seen.insert(l[0].ip) && seen.insert(l[1].ip));
        }
        let e = allocate(&mut s, "n", 1, &p, "c9", "eth0").expect_err("full");
        assert_eq!(e.code, code::POOL_EXHAUSTED);
        assert!(
            e.msg.contains("\"v4\"") && e.msg.contains("198.18.1.0/29"),
            "{e}"
        );
        // Asking again for c0 gives c0's addresses back; releasing frees them for others.
        let again = allocate(&mut s, "n", 1, &p, "c0", "eth0").expect("same");
        assert!(seen.contains(&again[0].ip));
        let freed = release(&mut s, "n", "c0", "eth0");
        assert_eq!(freed.len(), 2);
        let l = allocate(&mut s, "n", 1, &p, "c9", "eth0").expect("room again");
        assert_eq!(l[0].ip, again[0].ip);
    }

    #[test]
    fn released_addresses_are_not_reused_at_once() {
        let p = pools(serde_json::json!({"pools": [{"name": "v4", "subnet": "198.18.2.0/24"}]}));
        let mut s = State::default();
        let a = allocate(&mut s, "n", 1, &p, "a", "eth0").expect("a");
        release(&mut s, "n", "a", "eth0");
        let b = allocate(&mut s, "n", 1, &p, "b", "eth0").expect("b");
        assert_ne!(a[0].ip, b[0].ip);
        assert_eq!(a[0].ip.to_string(), "198.18.2.2");
    }

    #[test]
    fn pools_may_not_overlap_in_one_vrf_but_may_in_another() {
        let a = pools(serde_json::json!({"pools": [{"name": "p", "subnet": "198.18.0.0/16"}]}));
        let b = pools(serde_json::json!({"pools": [{"name": "q", "subnet": "198.18.7.0/24"}]}));
        let mut s = State::default();
        allocate(&mut s, "neta", 1, &a, "c1", "eth0").expect("a");
        let before = s.clone();
        let e = allocate(&mut s, "netb", 1, &b, "c2", "eth0").expect_err("overlap");
        assert_eq!(e.code, code::INVALID_CONFIG);
        assert!(
            e.msg.contains("`ipam.pools[0].subnet`") && e.msg.contains("neta"),
            "{e}"
        );
        assert_eq!(s, before, "nothing changed");
        allocate(&mut s, "netb", 2, &b, "c2", "eth0").expect("other VRF");
        // Once network a holds nothing, its pool no longer blocks b in VRF 1.
        release(&mut s, "neta", "c1", "eth0");
        release(&mut s, "netb", "c2", "eth0");
        assert!(s.pools.is_empty());
        allocate(&mut s, "netb", 1, &b, "c2", "eth0").expect("free now");
    }

    #[test]
    fn a_pool_holding_addresses_cannot_change_its_subnet() {
        let a = pools(serde_json::json!({"pools": [{"name": "p", "subnet": "198.18.0.0/24"}]}));
        let b = pools(serde_json::json!({"pools": [{"name": "p", "subnet": "198.18.9.0/24"}]}));
        let mut s = State::default();
        allocate(&mut s, "n", 1, &a, "c1", "eth0").expect("a");
        let e = allocate(&mut s, "n", 1, &b, "c2", "eth0").expect_err("changed");
        assert!(e.msg.contains("198.18.0.0/24"), "{e}");
    }

    #[test]
    fn a_second_pool_of_a_family_takes_over_when_the_first_is_full() {
        let p = pools(serde_json::json!({"pools": [
            {"name": "small", "subnet": "198.18.3.0/30"},
            {"name": "more", "subnet": "198.18.4.0/24"}]}));
        let mut s = State::default();
        let a = allocate(&mut s, "n", 1, &p, "a", "eth0").expect("a");
        let b = allocate(&mut s, "n", 1, &p, "b", "eth0").expect("b");
        assert_eq!(a[0].ip.to_string(), "198.18.3.2");
        assert_eq!(b[0].ip.to_string(), "198.18.4.2");
        assert_eq!(b[0].gateway.to_string(), "198.18.4.1");
    }
}
