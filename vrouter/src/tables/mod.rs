//! Forwarding state, updatable while cores forward (RCU-style):
//!
//! - Route, nexthop, bridge, label and VNI entries are updated **in place** with atomic stores
//!   (or per-record sequence locks): an update costs what it touches, never the table size.
//! - The topology (which VRFs exist, the vifs, the fabric settings) is an immutable
//!   [`Topology`] published through `arc_swap`; each core checks for a new one once per batch
//!   through an `arc_swap::Cache` (one atomic load). Changing it copies at most a few thousand
//!   slot pointers (4096 VRFs, 1024 vifs), not any route.
//!
//! Writers are serialised by one mutex that only the control side takes.
//!
//! Storage a removal frees is reused: nexthops, labels and flows by their index; bridge and VNI
//! slots at once (a removal moves the rest of the probe chain back, see [`small`]); trie groups
//! after a grace period of the [`Tables::grace`] domain, which every forwarding core registers
//! with and announces quiescent states to (see [`crate::qsbr`]). Memory follows what is
//! configured, however long the churn.

pub mod lpm;
pub mod neigh;
pub mod nexthop;
pub mod seqcell;
pub mod small;

use crate::qsbr::Qsbr;
use crate::stats::MAX_VIFS;
use crate::wire::dhcp::Lease;
use crate::wire::MacAddr;
use crate::Error;
use arc_swap::ArcSwap;
use lpm::{Lpm, LpmError, LpmStats};
pub use neigh::Neighbours;
pub use nexthop::{Nexthop, NexthopTable, TunnelEncap};
pub use small::LabelTarget;
use small::{BridgeTable, LabelTable, VniTable};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::{Arc, Mutex};

/// VRF ids are `0..MAX_VRFS`; VRF 0 is the fabric (underlay).
pub const MAX_VRFS: usize = 4096;
/// The fabric / underlay VRF.
pub const FABRIC_VRF: u16 = 0;

/// What a route or bridge entry resolves to: a nexthop and, toward a tunnel, the MPLS label or
/// VXLAN VNI to push.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RouteTarget {
    pub nexthop: u32,
    pub label: Option<u32>,
}

impl RouteTarget {
    const LABEL_PRESENT: u64 = 1 << 47;

    /// Packed into 48 bits: nexthop (23 bits), label present (1), label (24).
    pub(crate) fn to_payload(self) -> u64 {
        u64::from(self.nexthop & 0x7f_ffff)
            | self.label.map_or(0, |l| {
                Self::LABEL_PRESENT | (u64::from(l & 0xff_ffff) << 23)
            })
    }
    #[inline(always)]
    pub(crate) fn from_payload(p: u64) -> Self {
        RouteTarget {
            nexthop: (p & 0x7f_ffff) as u32,
            label: (p & Self::LABEL_PRESENT != 0).then_some(((p >> 23) & 0xff_ffff) as u32),
        }
    }
}

/// How a vif is attached (informational for the pipeline: fabric behaviour comes from the VRF).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VifKind {
    /// A pod / VM port (vhost-user, af-packet, tap).
    Pod,
    /// A fabric NIC (in VRF 0).
    Physical,
    /// The host interface (vhost0) / agent.
    Host,
}

/// One vif as the forwarding plane sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Vif {
    pub index: u16,
    pub kind: VifKind,
    pub vrf: u16,
    /// The vif's own MAC (a fabric vif sources outer frames from it and answers ARP with it).
    pub mac: MacAddr,
    /// Largest L3 packet the vif takes.
    pub mtu: u16,
}

/// Settings of the vrouter as a whole.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FabricConfig {
    /// The MAC pods send routed traffic to (and proxy ARP / ND answers carry).
    pub vrouter_mac: MacAddr,
    /// The vrouter's address on the fabric: tunnels terminate here.
    pub fabric_ip: Ipv4Addr,
    /// Outer IPv4 TTL of tunnel packets.
    pub outer_ttl: u8,
    /// Set DF on outer IPv4 headers.
    pub outer_df: bool,
}

impl Default for FabricConfig {
    fn default() -> Self {
        FabricConfig {
            vrouter_mac: MacAddr::VROUTER_DEFAULT,
            fabric_ip: Ipv4Addr::UNSPECIFIED,
            outer_ttl: 64,
            outer_df: true,
        }
    }
}

/// One VRF's tables.
#[derive(Debug)]
pub struct Vrf {
    pub id: u16,
    pub v4: Lpm,
    pub v6: Lpm,
    pub bridge: BridgeTable,
}

impl Vrf {
    #[inline(always)]
    pub fn route_v4(&self, dst: u32) -> Option<RouteTarget> {
        self.v4.lookup_v4(dst).map(RouteTarget::from_payload)
    }
    #[inline(always)]
    pub fn route_v6(&self, dst: u128) -> Option<RouteTarget> {
        self.v6.lookup(dst).map(RouteTarget::from_payload)
    }
}

/// The slowly-changing part, published as a whole.
#[derive(Debug, Clone)]
pub struct Topology {
    pub vrfs: Box<[Option<Arc<Vrf>>]>,
    pub vifs: Box<[Option<Vif>]>,
    /// What each vif's DHCP answers hand out, by vif index (none: DHCP from it is dropped).
    pub dhcp: Box<[Option<Arc<Lease>>]>,
    /// What each vif's router advertisements say, by vif index (none: solicitations dropped).
    pub ra: Box<[Option<RouterAdvert>]>,
    pub fabric: FabricConfig,
    /// The fabric vif (the first physical one): where the host's own traffic leaves.
    pub fabric_vif: Option<u16>,
}

/// What a pod vif's router advertisements say: its `ip6`'s /64, on-link, autonomous when the
/// vif's address is the one the pod makes from its MAC there (modified EUI-64), and the MTU.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RouterAdvert {
    pub prefix: Ipv6Addr,
    pub autonomous: bool,
    pub mtu: u16,
}

impl Topology {
    #[inline(always)]
    pub fn vrf(&self, id: u16) -> Option<&Arc<Vrf>> {
        self.vrfs.get(usize::from(id))?.as_ref()
    }
    #[inline(always)]
    pub fn vif(&self, index: u16) -> Option<&Vif> {
        self.vifs.get(usize::from(index))?.as_ref()
    }
    /// What vif `index`'s router advertisements say, if it has an IPv6 address.
    #[inline(always)]
    pub fn ra(&self, index: u16) -> Option<&RouterAdvert> {
        self.ra.get(usize::from(index))?.as_ref()
    }
    /// The DHCP lease vif `index` hands out, if it has an address.
    #[inline(always)]
    pub fn dhcp(&self, index: u16) -> Option<&Lease> {
        self.dhcp.get(usize::from(index))?.as_deref()
    }
}

/// Sizes fixed at start-up. Memory: the label table is 4 MiB and the VNI table 512 KiB, once;
/// nexthops about 80 bytes each; per VRF, 512 KiB for each address family that has routes,
/// plus 2 KiB per trie group (allocated 64 at a time, as many as were ever in use at once:
/// freed groups are reused), plus 48 bytes per bridge entry.
#[derive(Debug, Clone, Copy)]
pub struct TablesConfig {
    /// Nexthop ids are `0..nexthops` (at most 65536: ECMP members are 16-bit).
    pub nexthops: usize,
    /// 8-bit trie groups per VRF for IPv4 (each 2 KiB, allocated 64 at a time on demand).
    /// 1 M /24 routes spread over the whole space need about 65 536.
    pub v4_groups: usize,
    /// The same for IPv6.
    pub v6_groups: usize,
    /// Bridge entries per VRF.
    pub bridge_entries: usize,
}

impl Default for TablesConfig {
    fn default() -> Self {
        TablesConfig {
            nexthops: 65536,
            v4_groups: 1 << 17,
            v6_groups: 1 << 14,
            bridge_entries: 4096,
        }
    }
}

/// A value on cache lines of its own: 128 bytes, a line and the one the adjacent-line
/// prefetcher pairs with it. For writer-side state (a lock) that would otherwise share a line
/// with what forwarding cores read on every packet, so that control-plane updates do not evict
/// it from their caches.
#[derive(Debug, Default)]
#[repr(align(128))]
pub(crate) struct OwnLines<T>(pub(crate) T);

impl<T> std::ops::Deref for OwnLines<T> {
    type Target = T;
    fn deref(&self) -> &T {
        &self.0
    }
}

/// All forwarding state. Share it as `Arc<Tables>` between the control side and every core.
#[derive(Debug)]
pub struct Tables {
    config: TablesConfig,
    topo: Arc<ArcSwap<Topology>>,
    /// Where freed trie groups wait for the forwarding cores to move on.
    grace: Arc<Qsbr>,
    pub nexthops: NexthopTable,
    pub labels: LabelTable,
    pub vnis: VniTable,
    /// Underlay neighbours, for tunnel nexthops without a `dmac`.
    pub neighbours: Neighbours,
    /// Apart from the tables' handles above, which forwarding reads per burst and per packet.
    writer: OwnLines<Mutex<()>>,
}

fn vrf_id(vrf: u32) -> Result<u16, Error> {
    if vrf as usize >= MAX_VRFS {
        return Err(Error::VrfOutOfRange(vrf));
    }
    Ok(vrf as u16)
}

fn split(addr: IpAddr) -> (u128, u8) {
    match addr {
        IpAddr::V4(a) => (u128::from(u32::from(a)), 32),
        IpAddr::V6(a) => (u128::from(a), 128),
    }
}

impl Tables {
    /// Tables with the fabric VRF 0 present and no vifs.
    pub fn new(config: TablesConfig) -> Self {
        let grace = Qsbr::new();
        let mut vrfs: Vec<Option<Arc<Vrf>>> = vec![None; MAX_VRFS];
        vrfs[0] = Some(Arc::new(Self::make_vrf(&config, &grace, FABRIC_VRF)));
        let topo = Topology {
            vrfs: vrfs.into_boxed_slice(),
            vifs: vec![None; MAX_VIFS].into_boxed_slice(),
            dhcp: vec![None; MAX_VIFS].into_boxed_slice(),
            ra: vec![None; MAX_VIFS].into_boxed_slice(),
            fabric: FabricConfig::default(),
            fabric_vif: None,
        };
        Tables {
            config,
            topo: Arc::new(ArcSwap::from_pointee(topo)),
            grace,
            nexthops: NexthopTable::new(config.nexthops.min(65536)),
            labels: LabelTable::default(),
            vnis: VniTable::default(),
            neighbours: Neighbours::default(),
            writer: OwnLines::default(),
        }
    }

    fn make_vrf(config: &TablesConfig, grace: &Arc<Qsbr>, id: u16) -> Vrf {
        Vrf {
            id,
            v4: Lpm::with_grace(32, config.v4_groups, Arc::clone(grace)),
            v6: Lpm::with_grace(128, config.v6_groups, Arc::clone(grace)),
            bridge: BridgeTable::new(config.bridge_entries),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, ()> {
        self.writer.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The reclamation domain of every VRF's route tables. Each thread that looks routes up
    /// while others change them (a forwarding core) registers a reader here and announces a
    /// quiescent state between bursts; [`Tables::lookup_route`] needs none.
    pub fn grace(&self) -> &Arc<Qsbr> {
        &self.grace
    }

    /// The sizes the tables were made with.
    pub fn config(&self) -> TablesConfig {
        self.config
    }

    /// The published topology handle (a core wraps it in an `arc_swap::Cache`).
    pub fn topology_handle(&self) -> Arc<ArcSwap<Topology>> {
        self.topo.clone()
    }

    /// The current topology (control side).
    pub fn topology(&self) -> Arc<Topology> {
        self.topo.load_full()
    }

    fn publish(&self, f: impl FnOnce(&mut Topology) -> Result<(), Error>) -> Result<(), Error> {
        let mut t = Topology::clone(&self.topo.load());
        f(&mut t)?;
        self.topo.store(Arc::new(t));
        Ok(())
    }

    /// `f` on VRF `vrf` of the current topology, borrowed through an arc-swap guard. Not a
    /// clone of its `Arc`: that writes the reference count twice per route update, in the
    /// VRF's own allocation, which forwarding cores read for every packet. (The slowdown
    /// route churn caused, a fifth at 1 k routes in the pipeline benchmark's "l3 while routes
    /// change", came mostly from the LPM writer's lock: see `OwnLines`.)
    fn with_vrf<R>(&self, vrf: u32, f: impl FnOnce(&Vrf) -> Result<R, Error>) -> Result<R, Error> {
        let id = vrf_id(vrf)?;
        let topo = self.topo.load();
        f(topo.vrf(id).ok_or(Error::NoSuchVrf(id))?)
    }

    // ---- VRFs, vifs, fabric ----

    /// Create VRF `vrf` (idempotent: an existing VRF keeps its routes).
    pub fn add_vrf(&self, vrf: u32) -> Result<(), Error> {
        let id = vrf_id(vrf)?;
        let _w = self.lock();
        if self.topo.load().vrf(id).is_some() {
            return Ok(());
        }
        let v = Arc::new(Self::make_vrf(&self.config, &self.grace, id));
        self.publish(|t| {
            t.vrfs[usize::from(id)] = Some(v);
            Ok(())
        })
    }

    /// Remove VRF `vrf` and its routes. Refused for the fabric VRF and while vifs or VNIs use it.
    pub fn del_vrf(&self, vrf: u32) -> Result<(), Error> {
        let id = vrf_id(vrf)?;
        let _w = self.lock();
        if id == FABRIC_VRF {
            return Err(Error::VrfInUse(id));
        }
        let topo = self.topo.load();
        topo.vrf(id).ok_or(Error::NoSuchVrf(id))?;
        if topo.vifs.iter().flatten().any(|v| v.vrf == id) || self.vnis.uses_vrf(id) {
            return Err(Error::VrfInUse(id));
        }
        self.publish(|t| {
            t.vrfs[usize::from(id)] = None;
            Ok(())
        })
    }

    pub fn vrf_ids(&self) -> Vec<u16> {
        self.topo
            .load()
            .vrfs
            .iter()
            .flatten()
            .map(|v| v.id)
            .collect()
    }

    /// Add or replace a vif. Its VRF must exist.
    pub fn set_vif(&self, vif: Vif) -> Result<(), Error> {
        if usize::from(vif.index) >= MAX_VIFS {
            return Err(Error::VifOutOfRange(u32::from(vif.index)));
        }
        let _w = self.lock();
        self.publish(|t| {
            t.vrf(vif.vrf).ok_or(Error::NoSuchVrf(vif.vrf))?;
            t.vifs[usize::from(vif.index)] = Some(vif);
            if vif.kind == VifKind::Physical && t.fabric_vif.is_none() {
                t.fabric_vif = Some(vif.index);
            } else if vif.kind != VifKind::Physical && t.fabric_vif == Some(vif.index) {
                t.fabric_vif = None;
            }
            Ok(())
        })
    }

    pub fn del_vif(&self, index: u16) -> Result<(), Error> {
        let _w = self.lock();
        self.publish(|t| {
            let slot = t
                .vifs
                .get_mut(usize::from(index))
                .ok_or(Error::VifOutOfRange(u32::from(index)))?;
            slot.take().ok_or(Error::NoSuchVif(index))?;
            if t.fabric_vif == Some(index) {
                t.fabric_vif = t
                    .vifs
                    .iter()
                    .flatten()
                    .find(|v| v.kind == VifKind::Physical)
                    .map(|v| v.index);
            }
            t.dhcp[usize::from(index)] = None;
            t.ra[usize::from(index)] = None;
            Ok(())
        })
    }

    /// Set (or with `None` clear) what vif `index`'s router advertisements say.
    pub fn set_ra(&self, index: u16, ra: Option<RouterAdvert>) -> Result<(), Error> {
        let _w = self.lock();
        self.publish(|t| {
            let slot =
                t.ra.get_mut(usize::from(index))
                    .ok_or(Error::VifOutOfRange(u32::from(index)))?;
            *slot = ra;
            Ok(())
        })
    }

    /// Set (or with `None` clear) what vif `index`'s DHCP answers hand out.
    pub fn set_dhcp(&self, index: u16, lease: Option<Lease>) -> Result<(), Error> {
        let _w = self.lock();
        self.publish(|t| {
            let slot = t
                .dhcp
                .get_mut(usize::from(index))
                .ok_or(Error::VifOutOfRange(u32::from(index)))?;
            *slot = lease.map(Arc::new);
            Ok(())
        })
    }

    pub fn set_fabric(&self, fabric: FabricConfig) {
        let _w = self.lock();
        // Cannot fail: the closure always succeeds.
        let _ = self.publish(|t| {
            t.fabric = fabric;
            Ok(())
        });
    }

    // ---- nexthops ----

    pub fn set_nexthop(&self, id: u32, nh: Nexthop) -> Result<(), Error> {
        let _w = self.lock();
        self.nexthops.set(id, nh)
    }

    pub fn del_nexthop(&self, id: u32) -> Result<(), Error> {
        let _w = self.lock();
        self.nexthops.remove(id)
    }

    // ---- routes ----

    fn check_target(&self, target: RouteTarget) -> Result<(), Error> {
        let cap = self.nexthops.capacity() as u32;
        if target.nexthop >= cap {
            return Err(Error::NexthopOutOfRange {
                id: target.nexthop,
                capacity: cap,
            });
        }
        if let Some(l) = target.label {
            if l > 0xff_ffff {
                return Err(Error::RouteLabelOutOfRange(l));
            }
        }
        Ok(())
    }

    fn lpm_err(vrf: u16, addr: IpAddr, len: u8, e: LpmError) -> Error {
        match e {
            LpmError::BadLength => Error::PrefixLen {
                addr,
                len,
                max: if addr.is_ipv4() { 32 } else { 128 },
            },
            LpmError::HostBits => Error::PrefixHostBits { addr, len },
            LpmError::Full { limit } => Error::RouteTableFull {
                vrf,
                family: if addr.is_ipv4() { "IPv4" } else { "IPv6" },
                limit,
            },
            LpmError::NotFound => Error::NoSuchRoute { vrf, addr, len },
        }
    }

    /// Add or replace the route `addr/len` in `vrf`.
    pub fn add_route(
        &self,
        vrf: u32,
        addr: IpAddr,
        len: u8,
        target: RouteTarget,
    ) -> Result<(), Error> {
        self.check_target(target)?;
        self.with_vrf(vrf, |v| {
            let (key, _) = split(addr);
            let lpm = if addr.is_ipv4() { &v.v4 } else { &v.v6 };
            lpm.insert(key, len, target.to_payload())
                .map_err(|e| Self::lpm_err(v.id, addr, len, e))
        })
    }

    pub fn del_route(&self, vrf: u32, addr: IpAddr, len: u8) -> Result<(), Error> {
        self.with_vrf(vrf, |v| {
            let (key, _) = split(addr);
            let lpm = if addr.is_ipv4() { &v.v4 } else { &v.v6 };
            lpm.remove(key, len)
                .map_err(|e| Self::lpm_err(v.id, addr, len, e))
        })
    }

    /// Longest-prefix match, as forwarding would do it, from any thread (under the route
    /// table's writer lock: no group is recycled meanwhile).
    pub fn lookup_route(&self, vrf: u32, addr: IpAddr) -> Result<Option<RouteTarget>, Error> {
        self.with_vrf(vrf, |v| {
            Ok(match addr {
                IpAddr::V4(a) => v.v4.lookup_locked(u128::from(u32::from(a))),
                IpAddr::V6(a) => v.v6.lookup_locked(u128::from(a)),
            }
            .map(RouteTarget::from_payload))
        })
    }

    /// Trie group accounting of `vrf`'s IPv4 and IPv6 tables.
    pub fn route_table_stats(&self, vrf: u32) -> Result<(LpmStats, LpmStats), Error> {
        self.with_vrf(vrf, |v| Ok((v.v4.stats(), v.v6.stats())))
    }

    /// Every route of `vrf` as (prefix, length, target).
    pub fn routes(&self, vrf: u32) -> Result<Vec<(IpAddr, u8, RouteTarget)>, Error> {
        let (v4, v6) = self.with_vrf(vrf, |v| Ok((v.v4.routes(), v.v6.routes())))?;
        let v4 = v4.into_iter().map(|(p, l, t)| {
            (
                IpAddr::V4(Ipv4Addr::from(p as u32)),
                l,
                RouteTarget::from_payload(t),
            )
        });
        let v6 = v6.into_iter().map(|(p, l, t)| {
            (
                IpAddr::V6(Ipv6Addr::from(p)),
                l,
                RouteTarget::from_payload(t),
            )
        });
        Ok(v4.chain(v6).collect())
    }

    // ---- bridge, labels, VNIs ----

    pub fn add_bridge(&self, vrf: u32, mac: MacAddr, target: RouteTarget) -> Result<(), Error> {
        self.check_target(target)?;
        self.with_vrf(vrf, |v| {
            let _w = self.lock();
            v.bridge.set(mac, target).map_err(|e| match e {
                Error::TableFull { capacity, .. } => Error::BridgeTableFull {
                    vrf: v.id,
                    capacity,
                },
                other => other,
            })
        })
    }

    pub fn del_bridge(&self, vrf: u32, mac: MacAddr) -> Result<(), Error> {
        self.with_vrf(vrf, |v| {
            let _w = self.lock();
            v.bridge.remove(mac)
        })
    }

    pub fn bridge_entries(&self, vrf: u32) -> Result<Vec<(MacAddr, RouteTarget)>, Error> {
        self.with_vrf(vrf, |v| Ok(v.bridge.entries()))
    }

    /// Incoming MPLS `label` → nexthop `nexthop`.
    pub fn set_label(&self, label: u32, nexthop: u32) -> Result<(), Error> {
        self.check_target(RouteTarget {
            nexthop,
            label: None,
        })?;
        let _w = self.lock();
        self.labels.set(label, LabelTarget::Nexthop(nexthop))
    }

    /// Incoming MPLS `label` → VRF `vrf` (which must exist): the inner packet is routed there.
    pub fn set_label_vrf(&self, label: u32, vrf: u32) -> Result<(), Error> {
        let id = self.with_vrf(vrf, |v| Ok(v.id))?;
        let _w = self.lock();
        self.labels.set(label, LabelTarget::Vrf(id))
    }

    pub fn del_label(&self, label: u32) -> Result<(), Error> {
        let _w = self.lock();
        self.labels.remove(label)
    }

    /// Incoming VXLAN `vni` → VRF `vrf` (which must exist).
    pub fn set_vni(&self, vni: u32, vrf: u32) -> Result<(), Error> {
        let id = self.with_vrf(vrf, |v| Ok(v.id))?;
        let _w = self.lock();
        self.vnis.set(vni, id)
    }

    pub fn del_vni(&self, vni: u32) -> Result<(), Error> {
        let _w = self.lock();
        self.vnis.remove(vni)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn small() -> Tables {
        Tables::new(TablesConfig {
            nexthops: 64,
            v4_groups: 256,
            v6_groups: 256,
            bridge_entries: 16,
        })
    }

    #[test]
    fn vrf_lifecycle_and_route_errors_name_the_problem() {
        let t = small();
        let a: IpAddr = "198.18.2.0".parse().unwrap();
        let tgt = RouteTarget {
            nexthop: 1,
            label: Some(100),
        };
        assert_eq!(t.add_route(7, a, 24, tgt), Err(Error::NoSuchVrf(7)));
        assert_eq!(t.add_vrf(4096), Err(Error::VrfOutOfRange(4096)));
        t.add_vrf(7).unwrap();
        t.add_route(7, a, 24, tgt).unwrap();
        assert_eq!(
            t.lookup_route(7, "198.18.2.9".parse().unwrap()),
            Ok(Some(tgt))
        );
        assert_eq!(
            t.lookup_route(0, "198.18.2.9".parse().unwrap()),
            Ok(None),
            "VRFs are separate"
        );
        assert!(matches!(
            t.add_route(7, "198.18.2.1".parse().unwrap(), 24, tgt),
            Err(Error::PrefixHostBits { .. })
        ));
        assert!(matches!(
            t.add_route(7, a, 40, tgt),
            Err(Error::PrefixLen { .. })
        ));
        assert!(matches!(
            t.add_route(
                7,
                a,
                24,
                RouteTarget {
                    nexthop: 64,
                    label: None
                }
            ),
            Err(Error::NexthopOutOfRange { .. })
        ));
        let v6: IpAddr = "2001:db8::".parse().unwrap();
        t.add_route(7, v6, 32, tgt).unwrap();
        assert_eq!(t.routes(7).unwrap().len(), 2);
        t.set_vif(Vif {
            index: 3,
            kind: VifKind::Pod,
            vrf: 7,
            mac: MacAddr([2, 0, 0, 0, 0, 3]),
            mtu: 1500,
        })
        .unwrap();
        assert_eq!(t.del_vrf(7), Err(Error::VrfInUse(7)));
        t.del_vif(3).unwrap();
        t.del_vrf(7).unwrap();
        assert_eq!(t.lookup_route(7, a), Err(Error::NoSuchVrf(7)));
        assert_eq!(t.del_vrf(0), Err(Error::VrfInUse(0)));
    }

    #[test]
    fn route_target_packs_and_unpacks() {
        for t in [
            RouteTarget {
                nexthop: 0,
                label: None,
            },
            RouteTarget {
                nexthop: 65535,
                label: Some(0xff_ffff),
            },
            RouteTarget {
                nexthop: 12,
                label: Some(0),
            },
        ] {
            assert_eq!(RouteTarget::from_payload(t.to_payload()), t);
            assert!(t.to_payload() < 1 << lpm::PAYLOAD_BITS);
        }
    }
}
