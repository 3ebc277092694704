//! The NAT configuration: named pools (addresses and ports in one VRF), the VRFs attached to
//! them, and floating IPs (an address of the fabric VRF mapped 1:1 to a pod's address). The
//! control side changes it here; the flow stage reads it through an RCU snapshot
//! ([`NatSnapshot`]), one atomic load per burst.

use super::pools::BackendCounts;
use super::{PoolRange, PortPool};
use crate::flow::FlowTable;
use crate::qsbr::Qsbr;
use crate::tables::MAX_VRFS;
use crate::Error;
use arc_swap::ArcSwap;
use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

/// What a VRF attached to source NAT does: its flows toward a vif of `toward_vrf` take a pair
/// from `pool`.
#[derive(Debug, Clone)]
pub struct SnatRule {
    pub pool: Arc<PortPool>,
    pub toward_vrf: u16,
}

/// A floating IP: `outside` (an address of the fabric VRF) is the pod address `inside` of VRF
/// `vrf`, both ways. IPv4 or IPv6, the same family both sides.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FloatingIp {
    pub outside: IpAddr,
    pub vrf: u16,
    pub inside: IpAddr,
}

impl FloatingIp {
    /// Whether it is IPv6.
    #[inline(always)]
    pub fn v6(&self) -> bool {
        self.outside.is_ipv6()
    }

    /// The outside address as flow keys hold it.
    #[inline(always)]
    pub fn outside_bits(&self) -> u128 {
        key_bits(self.outside).1
    }

    /// The pod address as flow keys hold it.
    #[inline(always)]
    pub fn inside_bits(&self) -> u128 {
        key_bits(self.inside).1
    }

    fn validate(&self) -> Result<(), Error> {
        if usize::from(self.vrf) >= MAX_VRFS {
            return Err(Error::VrfOutOfRange(u32::from(self.vrf)));
        }
        if self.outside.is_ipv6() != self.inside.is_ipv6() {
            return Err(Error::NatBadFloating(format!(
                "{} and {} are of different address families",
                self.outside, self.inside
            )));
        }
        Ok(())
    }
}

/// How a service VIP picks a new flow's backend.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Balance {
    /// By the flow's hash: no state, the same flow hash always picks the same backend.
    #[default]
    Hash,
    /// The backend holding the fewest flows now (ties: from the flow's hash on). Each setup
    /// and removal writes the backend's counter (an atomic add shared by the cores).
    LeastFlows,
}

/// A service VIP: TCP or UDP to `addr:port` in VRF `vrf` goes to one of `backends`, chosen
/// per flow as `balance` says and kept for the flow's life (its entries record it). IPv4 or
/// IPv6: the backends are of the VIP's family.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Service {
    pub vrf: u16,
    pub proto: u8,
    pub addr: IpAddr,
    pub port: u16,
    /// (address, port); never empty, no duplicates.
    pub backends: Vec<(IpAddr, u16)>,
    pub balance: Balance,
}

/// An address as flow keys hold it: whether IPv6, and its bits (an IPv4 address in the low 32).
pub fn key_bits(a: IpAddr) -> (bool, u128) {
    match a {
        IpAddr::V4(a) => (false, u128::from(u32::from(a))),
        IpAddr::V6(a) => (true, u128::from(a)),
    }
}

/// Most backends a service takes.
pub const MAX_BACKENDS: usize = 64;

/// A service as the flow stage reads it.
#[derive(Debug, Clone)]
pub struct ServiceSnap {
    /// (address, port), as flow keys hold them (the VIP's family: see [`key_bits`]).
    pub backends: Box<[(u128, u16)]>,
    /// Least flows: the counts and each backend's place in them.
    pub least: Option<(Arc<BackendCounts>, Box<[u8]>)>,
}

impl Service {
    fn key(&self) -> ServiceKey {
        let (v6, addr) = key_bits(self.addr);
        (self.vrf, self.proto, v6, addr, self.port)
    }

    /// The backends as flow keys hold them.
    fn backend_bits(&self) -> Vec<(u128, u16)> {
        self.backends
            .iter()
            .map(|&(a, p)| (key_bits(a).1, p))
            .collect()
    }

    fn validate(&self) -> Result<(), Error> {
        if usize::from(self.vrf) >= MAX_VRFS {
            return Err(Error::VrfOutOfRange(u32::from(self.vrf)));
        }
        if !matches!(self.proto, 6 | 17) {
            return Err(Error::NatBadService(format!(
                "protocol {} is neither TCP (6) nor UDP (17)",
                self.proto
            )));
        }
        if self.port == 0 {
            return Err(Error::NatBadService("port 0".into()));
        }
        if self.backends.is_empty() {
            return Err(Error::NatBadService("no backends".into()));
        }
        if self.backends.len() > MAX_BACKENDS {
            return Err(Error::NatBadService(format!(
                "{} backends, more than {MAX_BACKENDS}",
                self.backends.len()
            )));
        }
        for (i, b) in self.backends.iter().enumerate() {
            if b.0.is_ipv6() != self.addr.is_ipv6() {
                return Err(Error::NatBadService(format!(
                    "backend {} is not of the VIP {}'s address family",
                    b.0, self.addr
                )));
            }
            if b.1 == 0 {
                return Err(Error::NatBadService(format!("backend {} has port 0", b.0)));
            }
            if self.backends[..i].contains(b) {
                return Err(Error::NatBadService(format!(
                    "backend {} port {} is listed twice",
                    b.0, b.1
                )));
            }
            if (b.0, b.1) == (self.addr, self.port) {
                return Err(Error::NatBadService("a backend is the VIP itself".into()));
            }
        }
        Ok(())
    }
}

/// The longest a change waits for the forwarding cores to leave the old snapshot.
const GRACE_WAIT: std::time::Duration = std::time::Duration::from_millis(500);

/// VRF, protocol, IPv6, address (as flow keys hold it), port.
type ServiceKey = (u16, u8, bool, u128, u16);

/// The link-local network (169.254.0.0/16).
pub const LINK_LOCAL_NET: u32 = 0xa9fe_0000;
/// A vif's link-local source toward link-local services is this plus its index (169.254.1.0
/// for vif 0, 169.254.1.5 for vif 5, up to 169.254.4.255 for vif 1023).
pub const LINK_LOCAL_SOURCE_BASE: u32 = 0xa9fe_0100;

/// The link-local source address (host order) of vif `vif`'s flows to a link-local service:
/// the service tells the pods apart by it.
pub fn link_local_source(vif: u16) -> u32 {
    LINK_LOCAL_SOURCE_BASE + u32::from(vif)
}

/// A link-local service: TCP or UDP to `addr:port` (169.254.0.0/16, host order) from a pod of
/// any VRF goes to `service_addr:service_port` in the fabric VRF, from the pod's vif's
/// [`link_local_source`] (the pod's source port kept); replies come back the same way.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LinkLocal {
    pub proto: u8,
    pub addr: u32,
    pub port: u16,
    pub service_addr: u32,
    pub service_port: u16,
}

impl LinkLocal {
    fn key(&self) -> LinkLocalKey {
        (self.proto, self.addr, self.port)
    }

    fn validate(&self) -> Result<(), Error> {
        let bad = |m: String| Err(Error::NatBadService(m));
        if !matches!(self.proto, 6 | 17) {
            return bad(format!(
                "protocol {} is neither TCP (6) nor UDP (17)",
                self.proto
            ));
        }
        if self.addr & 0xffff_0000 != LINK_LOCAL_NET {
            return bad(format!(
                "{} is not a link-local address (169.254.0.0/16)",
                std::net::Ipv4Addr::from(self.addr)
            ));
        }
        let sources =
            LINK_LOCAL_SOURCE_BASE..LINK_LOCAL_SOURCE_BASE + crate::stats::MAX_VIFS as u32;
        if sources.contains(&self.addr) {
            return bad(format!(
                "{} is a vif's link-local source (169.254.1.0-169.254.4.255)",
                std::net::Ipv4Addr::from(self.addr)
            ));
        }
        if self.port == 0 || self.service_port == 0 {
            return bad("port 0".into());
        }
        Ok(())
    }
}

/// Protocol, address, port.
type LinkLocalKey = (u8, u32, u16);

/// Every VRF's source-NAT rule and every floating IP at one moment.
#[derive(Debug, Clone)]
pub struct NatSnapshot {
    by_vrf: Box<[Option<SnatRule>]>,
    attached: usize,
    /// By outside address (IPv6?, bits).
    floating_out: HashMap<(bool, u128), FloatingIp>,
    /// By VRF and pod address (IPv6?, bits).
    floating_in: HashMap<(u16, bool, u128), FloatingIp>,
    /// Per VRF: some pod of it has a floating IP.
    floating_vrf: Box<[bool]>,
    services: HashMap<ServiceKey, ServiceSnap>,
    /// Per VRF: it has a service VIP.
    service_vrf: Box<[bool]>,
    link_local: HashMap<LinkLocalKey, LinkLocal>,
}

impl NatSnapshot {
    pub fn empty() -> NatSnapshot {
        NatSnapshot {
            by_vrf: (0..MAX_VRFS).map(|_| None).collect(),
            attached: 0,
            floating_out: HashMap::new(),
            floating_in: HashMap::new(),
            floating_vrf: vec![false; MAX_VRFS].into_boxed_slice(),
            services: HashMap::new(),
            service_vrf: vec![false; MAX_VRFS].into_boxed_slice(),
            link_local: HashMap::new(),
        }
    }

    /// Whether any link-local service is set.
    #[inline(always)]
    pub fn has_link_local(&self) -> bool {
        !self.link_local.is_empty()
    }

    /// The link-local service at `addr:port` (`proto`), if any.
    #[inline]
    pub fn link_local(&self, proto: u8, addr: u32, port: u16) -> Option<&LinkLocal> {
        if addr & 0xffff_0000 != LINK_LOCAL_NET {
            return None;
        }
        self.link_local.get(&(proto, addr, port))
    }

    /// Whether VRF `vrf` has a service VIP (its flows go through the flow table).
    #[inline(always)]
    pub fn has_service(&self, vrf: u16) -> bool {
        self.service_vrf
            .get(usize::from(vrf))
            .copied()
            .unwrap_or(false)
    }

    /// The VIP `addr:port` (`proto`; IPv6 if `v6`, else IPv4 in the low 32 bits) of VRF `vrf`.
    #[inline]
    pub fn service(
        &self,
        vrf: u16,
        proto: u8,
        v6: bool,
        addr: u128,
        port: u16,
    ) -> Option<&ServiceSnap> {
        self.services.get(&(vrf, proto, v6, addr, port))
    }

    /// VRF `vrf`'s rule, if it is attached.
    #[inline(always)]
    pub fn snat(&self, vrf: u16) -> Option<&SnatRule> {
        self.by_vrf.get(usize::from(vrf))?.as_ref()
    }

    /// Whether any VRF is attached or any floating IP set (if not, the flow stage has nothing
    /// to translate).
    #[inline(always)]
    pub fn any(&self) -> bool {
        self.attached != 0
            || !self.floating_out.is_empty()
            || !self.services.is_empty()
            || !self.link_local.is_empty()
    }

    /// Whether anything comes back through the fabric's plain IP ingress translated (source
    /// NAT replies, floating IPs): service VIPs alone never do.
    #[inline(always)]
    pub fn any_fabric(&self) -> bool {
        self.attached != 0 || !self.floating_out.is_empty() || !self.link_local.is_empty()
    }

    /// Whether a pod of VRF `vrf` has a floating IP.
    #[inline(always)]
    pub fn has_floating(&self, vrf: u16) -> bool {
        self.floating_vrf
            .get(usize::from(vrf))
            .copied()
            .unwrap_or(false)
    }

    /// The floating IP of pod address `inside` (IPv6 if `v6`, else IPv4 in the low 32 bits)
    /// in VRF `vrf`.
    #[inline]
    pub fn floating_of(&self, vrf: u16, v6: bool, inside: u128) -> Option<&FloatingIp> {
        self.floating_in.get(&(vrf, v6, inside))
    }

    /// The floating IP `outside` (IPv6 if `v6`) is.
    #[inline]
    pub fn floating(&self, v6: bool, outside: u128) -> Option<&FloatingIp> {
        self.floating_out.get(&(v6, outside))
    }
}

/// A pool as the control side lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PoolInfo {
    pub name: String,
    /// The VRF its addresses live in (where translated flows leave to).
    pub vrf: u16,
    pub range: PoolRange,
    /// Pairs it holds, pairs taken now, setups refused for want of one.
    pub capacity: u64,
    pub in_use: u64,
    pub exhausted: u64,
    /// The VRFs whose flows take pairs from it.
    pub attached: Vec<u16>,
}

#[derive(Debug)]
struct PoolEntry {
    vrf: u16,
    pool: Arc<PortPool>,
}

#[derive(Debug, Default)]
struct State {
    pools: BTreeMap<String, PoolEntry>,
    /// Attached VRF → pool name.
    attached: BTreeMap<u16, String>,
    /// Outside address → floating IP.
    floating: BTreeMap<IpAddr, FloatingIp>,
    services: BTreeMap<ServiceKey, Service>,
    link_local: BTreeMap<LinkLocalKey, LinkLocal>,
    /// The least-flows services' counts.
    service_counts: BTreeMap<ServiceKey, Arc<BackendCounts>>,
}

/// The source-NAT store: one per process, beside the flow table whose entries record its
/// pools.
#[derive(Debug)]
pub struct Nat {
    current: Arc<ArcSwap<NatSnapshot>>,
    table: Arc<FlowTable>,
    /// The forwarding cores' reclamation domain: after publishing, the control side waits for
    /// every core to pass a quiescent state, so none still sets flows up from the old snapshot
    /// when the flows it no longer allows are removed.
    grace: Option<Arc<Qsbr>>,
    state: Mutex<State>,
    /// Stages created so far: each starts its pool cursors elsewhere, so cores take pairs
    /// from blocks of their own.
    stages: AtomicUsize,
}

impl Nat {
    pub fn new(table: Arc<FlowTable>) -> Nat {
        Nat {
            current: Arc::new(ArcSwap::from_pointee(NatSnapshot::empty())),
            table,
            grace: None,
            state: Mutex::new(State::default()),
            stages: AtomicUsize::new(0),
        }
    }

    /// Wait, after each change, for the cores reading through `grace` (the forwarding cores,
    /// which announce a quiescent state between bursts) to let go of the old snapshot before
    /// removing the flows it allowed and the new one does not (a removed backend's, a floating
    /// IP's, a detached VRF's): else a core could set one up just after the removal scan.
    pub fn with_grace(mut self, grace: Arc<Qsbr>) -> Nat {
        self.grace = Some(grace);
        self
    }

    pub fn snapshot(&self) -> Arc<NatSnapshot> {
        self.current.load_full()
    }

    /// What a forwarding core's flow stage reads: the snapshot handle and its ordinal.
    pub(crate) fn for_stage(&self) -> (Arc<ArcSwap<NatSnapshot>>, usize) {
        (
            self.current.clone(),
            self.stages.fetch_add(1, Ordering::Relaxed),
        )
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Create pool `name` over `range` in VRF `vrf`. The same pool again is accepted (returns
    /// false: nothing changed); a different one under a name in use is refused while VRFs are
    /// attached to it, else replaces it. A range sharing an address with another pool of the
    /// same VRF is refused.
    pub fn set_pool(&self, name: &str, vrf: u16, range: PoolRange) -> Result<bool, Error> {
        if usize::from(vrf) >= MAX_VRFS {
            return Err(Error::VrfOutOfRange(u32::from(vrf)));
        }
        range.validate()?;
        let mut st = self.lock();
        if let Some(e) = st.pools.get(name) {
            if e.vrf == vrf && e.pool.range() == range {
                return Ok(false);
            }
            if st.attached.values().any(|p| p == name) {
                return Err(Error::NatPoolInUse(name.to_string()));
            }
        }
        if let Some(f) = st
            .floating
            .values()
            .find(|f| vrf == 0 && range.contains(f.outside))
        {
            return Err(Error::NatFloatingInPool {
                outside: f.outside,
                pool: name.to_string(),
            });
        }
        if let Some((other, _)) = st
            .pools
            .iter()
            .find(|(n, e)| n.as_str() != name && e.vrf == vrf && e.pool.range().overlaps(&range))
        {
            return Err(Error::NatPoolOverlap {
                pool: name.to_string(),
                other: other.clone(),
            });
        }
        let registry = self.table.nat_pools();
        if let Some(old) = st.pools.remove(name) {
            registry.unregister(old.pool.slot());
        }
        let Some(slot) = registry.free_slot() else {
            return Err(Error::TableFull {
                table: "NAT pool",
                capacity: super::pools::MAX_POOLS,
            });
        };
        let pool = Arc::new(PortPool::new(range, slot));
        registry.register(pool.clone());
        st.pools.insert(name.to_string(), PoolEntry { vrf, pool });
        Ok(true)
    }

    /// Remove pool `name`: refused while VRFs are attached to it.
    pub fn del_pool(&self, name: &str) -> Result<(), Error> {
        let mut st = self.lock();
        if !st.pools.contains_key(name) {
            return Err(Error::NoSuchNatPool(name.to_string()));
        }
        if st.attached.values().any(|p| p == name) {
            return Err(Error::NatPoolInUse(name.to_string()));
        }
        if let Some(e) = st.pools.remove(name) {
            // No VRF is attached, so no flow holds one of its pairs.
            self.table.nat_pools().unregister(e.pool.slot());
        }
        Ok(())
    }

    /// Attach VRF `vrf` to pool `pool`: its new flows toward the pool's VRF are translated.
    /// Replaces an earlier attachment (whose flows are removed). Returns whether anything
    /// changed.
    pub fn attach(&self, vrf: u16, pool: &str) -> Result<bool, Error> {
        if usize::from(vrf) >= MAX_VRFS {
            return Err(Error::VrfOutOfRange(u32::from(vrf)));
        }
        let mut st = self.lock();
        let Some(e) = st.pools.get(pool) else {
            return Err(Error::NoSuchNatPool(pool.to_string()));
        };
        if e.vrf == vrf {
            return Err(Error::NatSameVrf {
                vrf,
                pool: pool.to_string(),
            });
        }
        if st.attached.get(&vrf).is_some_and(|p| p == pool) {
            return Ok(false);
        }
        let replaced = st.attached.insert(vrf, pool.to_string()).is_some();
        self.publish(&st);
        if replaced {
            self.remove_flows_of(vrf);
        }
        Ok(true)
    }

    /// Detach VRF `vrf`: its translated flows are removed (their pairs given back); its new
    /// flows leave untranslated.
    pub fn detach(&self, vrf: u16) -> Result<(), Error> {
        let mut st = self.lock();
        if st.attached.remove(&vrf).is_none() {
            return Err(Error::NoSuchEntry {
                table: "SNAT attachment",
                key: format!("VRF {vrf}"),
            });
        }
        self.publish(&st);
        self.remove_flows_of(vrf);
        Ok(())
    }

    /// The pool VRF `vrf` is attached to.
    pub fn attachment(&self, vrf: u16) -> Option<String> {
        self.lock().attached.get(&vrf).cloned()
    }

    /// Every attachment: VRF → pool name.
    pub fn attachments(&self) -> Vec<(u16, String)> {
        self.lock()
            .attached
            .iter()
            .map(|(v, p)| (*v, p.clone()))
            .collect()
    }

    /// Whether a pool lives in VRF `vrf` or VRF `vrf` is attached to one (the VRF must stay).
    pub fn uses_vrf(&self, vrf: u16) -> bool {
        let st = self.lock();
        st.attached.contains_key(&vrf) || st.pools.values().any(|e| e.vrf == vrf)
    }

    pub fn pool(&self, name: &str) -> Option<PoolInfo> {
        let st = self.lock();
        st.pools.get(name).map(|e| info(&st, name, e))
    }

    pub fn pools(&self) -> Vec<PoolInfo> {
        let st = self.lock();
        st.pools.iter().map(|(n, e)| info(&st, n, e)).collect()
    }

    /// Set floating IP `f` (replacing one with the same outside address, whose flows go).
    /// Refused if its pod address has another floating IP, or if its outside address is in a
    /// pool of the fabric VRF.
    pub fn set_floating(&self, f: FloatingIp) -> Result<bool, Error> {
        f.validate()?;
        let mut st = self.lock();
        if st.floating.get(&f.outside) == Some(&f) {
            return Ok(false);
        }
        if let Some(other) = st
            .floating
            .values()
            .find(|o| o.outside != f.outside && (o.vrf, o.inside) == (f.vrf, f.inside))
        {
            return Err(Error::NatFloatingTaken {
                inside: f.inside,
                vrf: f.vrf,
                outside: other.outside,
            });
        }
        if let Some((name, _)) = st
            .pools
            .iter()
            .find(|(_, e)| e.vrf == 0 && e.pool.range().contains(f.outside))
        {
            return Err(Error::NatFloatingInPool {
                outside: f.outside,
                pool: name.clone(),
            });
        }
        let replaced = st.floating.insert(f.outside, f);
        self.publish(&st);
        if let Some(old) = replaced {
            self.remove_floating_flows(&old);
        }
        Ok(true)
    }

    /// Remove the floating IP `outside`: its flows go.
    pub fn del_floating(&self, outside: IpAddr) -> Result<(), Error> {
        let mut st = self.lock();
        let Some(old) = st.floating.remove(&outside) else {
            return Err(Error::NoSuchEntry {
                table: "floating IP",
                key: outside.to_string(),
            });
        };
        self.publish(&st);
        self.remove_floating_flows(&old);
        Ok(())
    }

    /// Every floating IP.
    pub fn floating_ips(&self) -> Vec<FloatingIp> {
        self.lock().floating.values().copied().collect()
    }

    /// A floating IP's flows: those whose outside tuple has the address (as source or
    /// destination, whichever direction set it up), and the hairpin flows to it from pods of
    /// the node: the client's entry keyed to the address and leaving to the pod, the pod's
    /// keyed from the pod and leaving from the address.
    fn remove_floating_flows(&self, fip: &FloatingIp) {
        let (v6, o) = (fip.v6(), fip.outside_bits());
        let (vrf, inside) = (fip.vrf, fip.inside_bits());
        self.table.remove_where(|f| {
            let outside_of =
                |k: &crate::flow::FlowKey| k.vrf == 0 && k.v6 == v6 && (k.src == o || k.dst == o);
            let hairpin = f.key.v6 == v6
                && f.nat.is_some_and(|t| {
                    t.vrf == vrf
                        && ((f.key.dst == o && t.dst == inside)
                            || (f.key.vrf == vrf && f.key.src == inside && t.src == o))
                });
            hairpin
                || f.nat.is_some_and(|t| outside_of(&t))
                || (f.nat.is_some() && outside_of(&f.key))
        });
    }

    /// Set service VIP `s` (replacing the one with the same VRF, protocol, address and
    /// port). Flows to a backend it no longer has are removed; the others keep theirs. A VIP
    /// that is an address of a NAT pool of its VRF, or a floating IP, is refused. Returns
    /// whether anything changed.
    pub fn set_service(&self, s: Service) -> Result<bool, Error> {
        s.validate()?;
        let mut st = self.lock();
        let key = s.key();
        if st.services.get(&key) == Some(&s) {
            return Ok(false);
        }
        if let Some((name, _)) = st
            .pools
            .iter()
            .find(|(_, e)| e.vrf == s.vrf && e.pool.range().contains(s.addr))
        {
            return Err(Error::NatBadService(format!(
                "{} is an address of NAT pool {name}",
                s.addr
            )));
        }
        if s.vrf == 0 && st.floating.contains_key(&s.addr) {
            return Err(Error::NatBadService(format!("{} is a floating IP", s.addr)));
        }
        let gone: Vec<(u128, u16)> = st
            .services
            .get(&key)
            .map(|old| {
                old.backends
                    .iter()
                    .filter(|b| !s.backends.contains(b))
                    .map(|&(a, p)| (key_bits(a).1, p))
                    .collect()
            })
            .unwrap_or_default();
        // A change of balance starts the service's flows afresh: the counts then cover every
        // flow there is (those set up by hash were never counted).
        let rebalanced = st
            .services
            .get(&key)
            .is_some_and(|old| old.balance != s.balance);
        let registry = self.table.nat_pools();
        let mut fresh_slot = None;
        if s.balance == Balance::LeastFlows {
            let counts = match st.service_counts.get(&key) {
                Some(c) if !rebalanced => c.clone(),
                _ => {
                    let Some(slot) = registry.free_slot() else {
                        return Err(Error::TableFull {
                            table: "NAT pool and least-flows service",
                            capacity: super::pools::MAX_POOLS,
                        });
                    };
                    fresh_slot = Some(slot);
                    Arc::new(BackendCounts::new(slot))
                }
            };
            // The old set's backends keep their places until their flows are gone: at most
            // 64 + 64 places in use.
            if counts.assign(&s.backend_bits()).is_none() {
                return Err(Error::NatBadService(
                    "too many backends changed at once".into(),
                ));
            }
            if fresh_slot.is_some() {
                registry.register_counts(counts.clone());
            }
            st.service_counts.insert(key, counts);
        }
        let balance = s.balance;
        let new = st.services.insert(key, s).is_none();
        // New flows stop picking a removed backend first, then its flows go.
        self.publish(&st);
        if new {
            // Flows to the address set up before it was a VIP would skip the translation.
            let (vrf, proto, v6, addr, port) = key;
            self.table.remove_where(|f| {
                f.key.vrf == vrf
                    && f.key.proto == proto
                    && f.key.v6 == v6
                    && (f.key.dst, f.key.dport) == (addr, port)
            });
        } else if rebalanced {
            self.remove_service_flows(key, None);
            if balance == Balance::Hash {
                if let Some(c) = st.service_counts.remove(&key) {
                    registry.unregister(c.slot());
                }
            }
        } else if !gone.is_empty() {
            self.remove_service_flows(key, Some(&gone));
            if let Some(c) = st.service_counts.get(&key) {
                c.forget(&gone);
            }
        }
        Ok(true)
    }

    /// Remove the service VIP `addr:port` (`proto`) of VRF `vrf`: its flows go.
    pub fn del_service(&self, vrf: u16, proto: u8, addr: IpAddr, port: u16) -> Result<(), Error> {
        let (v6, bits) = key_bits(addr);
        let key = (vrf, proto, v6, bits, port);
        let mut st = self.lock();
        if st.services.remove(&key).is_none() {
            return Err(Error::NoSuchEntry {
                table: "service",
                key: format!("{addr} port {port}/{proto} in VRF {vrf}"),
            });
        }
        self.publish(&st);
        self.remove_service_flows(key, None);
        if let Some(c) = st.service_counts.remove(&key) {
            self.table.nat_pools().unregister(c.slot());
        }
        Ok(())
    }

    /// Every service VIP.
    pub fn services(&self) -> Vec<Service> {
        self.lock().services.values().cloned().collect()
    }

    /// The flows of VIP `key` now, per backend (in the service's order).
    pub fn service_flows(&self, vrf: u16, proto: u8, addr: IpAddr, port: u16) -> Option<Vec<u64>> {
        let (v6, addr) = key_bits(addr);
        let backends = self
            .lock()
            .services
            .get(&(vrf, proto, v6, addr, port))?
            .backend_bits();
        let mut counts = vec![0u64; backends.len()];
        let mut cursor = 0;
        loop {
            let page = self.table.flows(Some(vrf), 4096, cursor);
            for f in &page.flows {
                if f.is_reverse || f.key.proto != proto || f.key.v6 != v6 {
                    continue;
                }
                let (vip, Some(to)) = ((f.key.dst, f.key.dport), f.nat) else {
                    continue;
                };
                if vip != (addr, port) {
                    continue;
                }
                if let Some(i) = backends
                    .iter()
                    .position(|b| (b.0, b.1) == (to.dst, to.dport))
                {
                    counts[i] += 1;
                }
            }
            match page.next {
                Some(n) => cursor = n,
                None => break,
            }
        }
        Some(counts)
    }

    /// The flows of a VIP (to backends `only`, if given): their forward entries are keyed to
    /// the VIP and leave to the backend.
    fn remove_service_flows(
        &self,
        (vrf, proto, v6, addr, port): ServiceKey,
        only: Option<&[(u128, u16)]>,
    ) {
        self.table.remove_where(|f| {
            let Some(to) = f.nat else { return false };
            f.key.vrf == vrf
                && f.key.proto == proto
                && f.key.v6 == v6
                && (f.key.dst, f.key.dport) == (addr, port)
                && to.vrf == vrf
                && only.is_none_or(|b| b.iter().any(|b| (b.0, b.1) == (to.dst, to.dport)))
        });
    }

    /// Set link-local service `l` (replacing the one at the same protocol, address and port,
    /// whose flows go). Returns whether anything changed.
    pub fn set_link_local(&self, l: LinkLocal) -> Result<bool, Error> {
        l.validate()?;
        let mut st = self.lock();
        if st.link_local.get(&l.key()) == Some(&l) {
            return Ok(false);
        }
        st.link_local.insert(l.key(), l);
        self.publish(&st);
        // Flows to it set up before (untranslated, or to the service it replaces) go.
        self.remove_link_local_flows(l.key());
        Ok(true)
    }

    /// Remove the link-local service `addr:port` (`proto`): its flows go.
    pub fn del_link_local(&self, proto: u8, addr: u32, port: u16) -> Result<(), Error> {
        let mut st = self.lock();
        if st.link_local.remove(&(proto, addr, port)).is_none() {
            return Err(Error::NoSuchEntry {
                table: "link-local service",
                key: format!("{}:{port}/{proto}", std::net::Ipv4Addr::from(addr)),
            });
        }
        self.publish(&st);
        self.remove_link_local_flows((proto, addr, port));
        Ok(())
    }

    /// Every link-local service.
    pub fn link_locals(&self) -> Vec<LinkLocal> {
        self.lock().link_local.values().copied().collect()
    }

    /// The flows to link-local `addr:port` from any VRF: their forward entries are keyed to it.
    fn remove_link_local_flows(&self, (proto, addr, port): LinkLocalKey) {
        self.table.remove_where(|f| {
            f.key.proto == proto && (f.key.dst, f.key.dport) == (u128::from(addr), port)
        });
    }

    fn publish(&self, st: &State) {
        let mut snap = NatSnapshot::empty();
        snap.link_local = st.link_local.iter().map(|(k, l)| (*k, *l)).collect();
        for f in st.floating.values() {
            snap.floating_out.insert((f.v6(), f.outside_bits()), *f);
            snap.floating_in
                .insert((f.vrf, f.v6(), f.inside_bits()), *f);
            if let Some(v) = snap.floating_vrf.get_mut(usize::from(f.vrf)) {
                *v = true;
            }
        }
        for s in st.services.values() {
            let least = st.service_counts.get(&s.key()).and_then(|c| {
                let places: Option<Box<[u8]>> = s
                    .backend_bits()
                    .iter()
                    .map(|&(a, p)| c.place_of(a, p).and_then(|at| u8::try_from(at).ok()))
                    .collect();
                Some((c.clone(), places?))
            });
            snap.services.insert(
                s.key(),
                ServiceSnap {
                    backends: s.backend_bits().into_boxed_slice(),
                    least,
                },
            );
            if let Some(v) = snap.service_vrf.get_mut(usize::from(s.vrf)) {
                *v = true;
            }
        }
        for (vrf, name) in &st.attached {
            if let (Some(e), Some(slot)) =
                (st.pools.get(name), snap.by_vrf.get_mut(usize::from(*vrf)))
            {
                *slot = Some(SnatRule {
                    pool: e.pool.clone(),
                    toward_vrf: e.vrf,
                });
                snap.attached += 1;
            }
        }
        self.current.store(Arc::new(snap));
        if let Some(g) = &self.grace {
            // Bounded: a core stuck in a burst must not hold the control side; then the race
            // this closes stays open for that change (as it was before grace periods).
            let t = g.retire();
            g.wait(t, GRACE_WAIT);
        }
    }

    fn remove_flows_of(&self, vrf: u16) {
        self.table
            .remove_where(|f| f.nat.is_some() && f.key.vrf == vrf);
    }
}

fn info(st: &State, name: &str, e: &PoolEntry) -> PoolInfo {
    PoolInfo {
        name: name.to_string(),
        vrf: e.vrf,
        range: e.pool.range(),
        capacity: e.pool.capacity(),
        in_use: e.pool.in_use(),
        exhausted: e.pool.exhausted(),
        attached: st
            .attached
            .iter()
            .filter(|(_, p)| p.as_str() == name)
            .map(|(v, _)| *v)
            .collect(),
    }
}
