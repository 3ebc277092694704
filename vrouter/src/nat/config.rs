//! The NAT configuration: named pools (addresses and ports in one VRF), the VRFs attached to
//! them, and floating IPs (an address of the fabric VRF mapped 1:1 to a pod's address). The
//! control side changes it here; the flow stage reads it through an RCU snapshot
//! ([`NatSnapshot`]), one atomic load per burst.

use super::{PoolRange, PortPool};
use crate::flow::FlowTable;
use crate::tables::MAX_VRFS;
use crate::Error;
use arc_swap::ArcSwap;
use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

/// What a VRF attached to source NAT does: its flows toward a vif of `toward_vrf` take a pair
/// from `pool`.
#[derive(Debug, Clone)]
pub struct SnatRule {
    pub pool: Arc<PortPool>,
    pub toward_vrf: u16,
}

/// A floating IP: `outside` (an address of the fabric VRF, host order) is the pod address
/// `inside` of VRF `vrf`, both ways.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FloatingIp {
    pub outside: u32,
    pub vrf: u16,
    pub inside: u32,
}

/// Every VRF's source-NAT rule and every floating IP at one moment.
#[derive(Debug, Clone)]
pub struct NatSnapshot {
    by_vrf: Box<[Option<SnatRule>]>,
    attached: usize,
    floating_out: HashMap<u32, FloatingIp>,
    floating_in: HashMap<(u16, u32), FloatingIp>,
    /// Per VRF: some pod of it has a floating IP.
    floating_vrf: Box<[bool]>,
}

impl NatSnapshot {
    pub fn empty() -> NatSnapshot {
        NatSnapshot {
            by_vrf: (0..MAX_VRFS).map(|_| None).collect(),
            attached: 0,
            floating_out: HashMap::new(),
            floating_in: HashMap::new(),
            floating_vrf: vec![false; MAX_VRFS].into_boxed_slice(),
        }
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
        self.attached != 0 || !self.floating_out.is_empty()
    }

    /// Whether a pod of VRF `vrf` has a floating IP.
    #[inline(always)]
    pub fn has_floating(&self, vrf: u16) -> bool {
        self.floating_vrf
            .get(usize::from(vrf))
            .copied()
            .unwrap_or(false)
    }

    /// The floating IP of pod address `inside` in VRF `vrf`.
    #[inline]
    pub fn floating_of(&self, vrf: u16, inside: u32) -> Option<&FloatingIp> {
        self.floating_in.get(&(vrf, inside))
    }

    /// The floating IP `outside` is.
    #[inline]
    pub fn floating(&self, outside: u32) -> Option<&FloatingIp> {
        self.floating_out.get(&outside)
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
    floating: BTreeMap<u32, FloatingIp>,
}

/// The source-NAT store: one per process, beside the flow table whose entries record its
/// pools.
#[derive(Debug)]
pub struct Nat {
    current: Arc<ArcSwap<NatSnapshot>>,
    table: Arc<FlowTable>,
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
            state: Mutex::new(State::default()),
            stages: AtomicUsize::new(0),
        }
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
                outside: std::net::Ipv4Addr::from(f.outside),
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
        if usize::from(f.vrf) >= MAX_VRFS {
            return Err(Error::VrfOutOfRange(u32::from(f.vrf)));
        }
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
                inside: std::net::Ipv4Addr::from(f.inside),
                vrf: f.vrf,
                outside: std::net::Ipv4Addr::from(other.outside),
            });
        }
        if let Some((name, _)) = st
            .pools
            .iter()
            .find(|(_, e)| e.vrf == 0 && e.pool.range().contains(f.outside))
        {
            return Err(Error::NatFloatingInPool {
                outside: std::net::Ipv4Addr::from(f.outside),
                pool: name.clone(),
            });
        }
        let replaced = st.floating.insert(f.outside, f).is_some();
        self.publish(&st);
        if replaced {
            self.remove_floating_flows(f.outside);
        }
        Ok(true)
    }

    /// Remove the floating IP `outside`: its flows go.
    pub fn del_floating(&self, outside: u32) -> Result<(), Error> {
        let mut st = self.lock();
        if st.floating.remove(&outside).is_none() {
            return Err(Error::NoSuchEntry {
                table: "floating IP",
                key: std::net::Ipv4Addr::from(outside).to_string(),
            });
        }
        self.publish(&st);
        self.remove_floating_flows(outside);
        Ok(())
    }

    /// Every floating IP.
    pub fn floating_ips(&self) -> Vec<FloatingIp> {
        self.lock().floating.values().copied().collect()
    }

    /// A floating IP's flows: those whose outside tuple has the address (as source or
    /// destination, whichever direction set it up).
    fn remove_floating_flows(&self, outside: u32) {
        let o = u128::from(outside);
        self.table.remove_where(|f| {
            let outside_of = |k: &crate::flow::FlowKey| k.vrf == 0 && (k.src == o || k.dst == o);
            f.nat.is_some_and(|t| outside_of(&t)) || (f.nat.is_some() && outside_of(&f.key))
        });
    }

    fn publish(&self, st: &State) {
        let mut snap = NatSnapshot::empty();
        for f in st.floating.values() {
            snap.floating_out.insert(f.outside, *f);
            snap.floating_in.insert((f.vrf, f.inside), *f);
            if let Some(v) = snap.floating_vrf.get_mut(usize::from(f.vrf)) {
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
