//! The flow stage in the pipeline ([`FlowStage`], a [`FlowHook`]) and the control-side policy
//! store ([`Policies`]) it reads through an RCU snapshot.

use super::policy::{Action, Policy};
use super::table::{
    nat_port_of_reply, FlowKey, FlowTable, FlowVerdict, Hit, InsertError, NatSetup, NewFlow, Place,
    SetupCredit, NO_VIF,
};
use crate::meta::{PacketMeta, L3};
use crate::nat::{
    self, End, FloatingIp, LinkLocal, Nat, NatSnapshot, ServiceSnap, SnatRule, Translation,
};
use crate::pipeline::{FlowAction, FlowHook, Inbound, BURST};
use crate::stats::{DropReason, MAX_VIFS};
use crate::tables::{Nexthop, RouteTarget, Tables, Topology, FABRIC_VRF};
use crate::wire::{icmp, ipv4};
use crate::Error;
use arc_swap::{ArcSwap, Cache};
use std::sync::{Arc, Mutex};

/// All vifs' policies at one moment. `generation` grows with every change; a flow remembers
/// the generation it was evaluated against and is re-evaluated when it differs.
#[derive(Debug, Clone)]
pub struct PolicySnapshot {
    pub generation: u32,
    by_vif: Box<[Option<Arc<Policy>>]>,
    count: usize,
}

impl PolicySnapshot {
    #[inline(always)]
    pub fn get(&self, vif: u16) -> Option<&Policy> {
        self.by_vif.get(usize::from(vif))?.as_deref()
    }

    /// The verdict for a new flow entering from `in_vif` and leaving through `out_vif`, or
    /// `None` when neither has a policy (the flow table is skipped).
    pub fn evaluate(&self, key: &FlowKey, in_vif: u16, out_vif: u16) -> Option<FlowVerdict> {
        let pin = self.get(in_vif);
        let pout = self.get(out_vif);
        if pin.is_none() && pout.is_none() {
            return None;
        }
        let allowed = pin.is_none_or(|p| p.ingress_action(key) == Action::Allow)
            && pout.is_none_or(|p| p.egress_action(key) == Action::Allow);
        Some(if allowed {
            FlowVerdict::Forward
        } else {
            FlowVerdict::Drop
        })
    }

    /// Whether a new flow's first packet goes to the agent: one of the two vifs' policies
    /// says `agent` for it and neither says deny.
    pub fn to_agent(&self, key: &FlowKey, in_vif: u16, out_vif: u16) -> bool {
        let a = self.get(in_vif).map(|p| p.ingress_action(key));
        let b = self.get(out_vif).map(|p| p.egress_action(key));
        (a == Some(Action::Agent) || b == Some(Action::Agent))
            && a != Some(Action::Deny)
            && b != Some(Action::Deny)
    }
}

/// The policy store: the control side sets policies here; every [`FlowStage`] reads them.
#[derive(Debug)]
pub struct Policies {
    current: Arc<ArcSwap<PolicySnapshot>>,
    table: Arc<FlowTable>,
    writer: Mutex<()>,
}

impl Policies {
    pub fn new(table: Arc<FlowTable>) -> Policies {
        Policies {
            current: Arc::new(ArcSwap::from_pointee(PolicySnapshot {
                generation: 0,
                by_vif: (0..MAX_VIFS).map(|_| None).collect(),
                count: 0,
            })),
            table,
            writer: Mutex::new(()),
        }
    }

    pub fn table(&self) -> &Arc<FlowTable> {
        &self.table
    }

    pub fn snapshot(&self) -> Arc<PolicySnapshot> {
        self.current.load_full()
    }

    pub fn get(&self, vif: u16) -> Option<Policy> {
        self.current.load().get(vif).cloned()
    }

    /// Set (`Some`) or remove (`None`) vif `vif`'s policy, then re-evaluate that vif's flows:
    /// those whose verdict changes are removed (their next packet is set up under the new
    /// policy), the others keep their state and counters. Flows of other vifs are re-checked
    /// lazily on their next packet (the generation moved). Returns the number of flows removed.
    pub fn set(&self, vif: u16, policy: Option<Policy>) -> Result<usize, Error> {
        if usize::from(vif) >= MAX_VIFS {
            return Err(Error::VifOutOfRange(u32::from(vif)));
        }
        if let Some(p) = &policy {
            p.validate()?;
        }
        let _w = self.writer.lock().unwrap_or_else(|e| e.into_inner());
        let old = self.current.load_full();
        let mut by_vif = old.by_vif.clone();
        by_vif[usize::from(vif)] = policy.map(Arc::new);
        let next = Arc::new(PolicySnapshot {
            generation: old.generation.wrapping_add(1),
            count: by_vif.iter().filter(|p| p.is_some()).count(),
            by_vif,
        });
        self.current.store(next.clone());
        Ok(self.table.remove_where(|f| {
            (f.in_vif == vif || f.out_vif == vif)
                && verdict_of(&next, &f.key, f.in_vif, f.out_vif, f.nat.is_some())
                    != Some(f.verdict)
        }))
    }

    /// Installs a flow the agent decided (a pkt0 verdict about a packet a policy's `agent`
    /// action trapped): `key` as the flow's first packet had it, entering by `in_vif`;
    /// allowed flows with their reverse. Decided under the current policies, so later packets
    /// hit it without the agent (until a policy change re-evaluates it: policies say `agent`,
    /// not the agent's verdict, so it is removed and its next packet trapped again). `now` in
    /// the table's time unit (the forwarding cores' milliseconds). An entry already there is
    /// replaced.
    pub fn install_decided(
        &self,
        tables: &Tables,
        key: FlowKey,
        in_vif: u16,
        allow: bool,
        now: u64,
    ) -> Result<(), InsertError> {
        let topo = tables.topology();
        let target = route_in(&topo, key.vrf, key.v6, key.dst);
        let out_vif = target.map_or(NO_VIF, |t| egress(tables, t, || 0).0);
        let verdict = if allow {
            FlowVerdict::Forward
        } else {
            FlowVerdict::Drop
        };
        let new = NewFlow {
            key,
            verdict,
            with_reverse: allow,
            in_vif,
            out_vif,
            policy_gen: self.current.load().generation,
            now,
            nat: None,
        };
        self.table.remove(&key);
        if allow {
            self.table.remove(&new.reverse_key());
        }
        self.table.insert(&new).map(|_| ())
    }

    /// A flow stage for one forwarding core (translating nothing until given a NAT store with
    /// [`FlowStage::with_nat`]).
    pub fn stage(&self, tables: Arc<Tables>) -> FlowStage {
        let mut policies = Cache::new(self.current.clone());
        let mut nat = Cache::new(Arc::new(ArcSwap::from_pointee(NatSnapshot::empty())));
        let mut topo = Cache::new(tables.topology_handle());
        let seen = Seen {
            pol: policies.load().clone(),
            nat: nat.load().clone(),
            topo: topo.load().clone(),
            active: false,
            link_local: false,
            nat_any: false,
        };
        let mut stage = FlowStage {
            table: self.table.clone(),
            policies,
            nat,
            nat_cursors: vec![0; 256].into_boxed_slice(),
            topo,
            seen,
            tables,
            in_vif: NO_VIF,
            now: 0,
            burst: Burst::default(),
            credit: SetupCredit::chunked(),
            always_prefetch: false,
        };
        stage.refresh();
        stage
    }
}

/// Above this share of its capacity in use (3/8: a third of its slots), enough of a table's
/// buckets are half full that keys often live in their second bucket (see
/// `FlowTable::preferred_free_slot`): `prefetch` then loads both buckets of each key ahead, not
/// only the first (a key in its second bucket would make the burst wait for it).
#[inline(always)]
fn loads_both_buckets(reserved: usize, capacity: usize) -> bool {
    reserved > capacity / 8 * 3
}

/// Flows this few stay in a core's caches (about three lines each: bucket, entry, counters):
/// placing their keys ahead and warming their lines costs more than the misses it saves, so
/// `prefetch` does nothing while the table holds no more entries than this (counting those
/// reserved in cores' setup credits: a few dozen per core, which hardly moves the line).
const CACHED_ENTRIES: usize = (1 << 20) / (3 * 64);

/// The places of a burst's keys, computed by [`FlowHook::prefetch`] (which also starts loading
/// their buckets) and taken by [`FlowHook::on_lookup`] in the same order, so each key is
/// hashed once and the burst's cache misses overlap.
#[derive(Debug)]
struct Burst {
    places: [Place; BURST],
    /// The slot whose tag matched, found while warming the entries.
    hints: [Option<usize>; BURST],
    /// For keys no tag matched (new flows, most likely): the reverse key's place, whose
    /// buckets the setup will lock.
    reverse: [Option<Place>; BURST],
    len: usize,
    /// The next place `on_lookup` expects (packets the pipeline drops before it are skipped).
    next: usize,
    /// The entries have been warmed: the burst's `on_lookup` calls have begun, and the next
    /// `prefetch` starts a new burst.
    warmed: bool,
    /// The table stays cached: `prefetch` does nothing.
    cached: bool,
    /// The table is full enough that many keys live in their second bucket: `prefetch`
    /// loads both buckets, not just the first.
    both: bool,
}

impl Default for Burst {
    fn default() -> Self {
        Burst {
            places: [Place::default(); BURST],
            hints: [None; BURST],
            reverse: [None; BURST],
            len: 0,
            next: 0,
            warmed: true,
            cached: true,
            both: false,
        }
    }
}

impl Burst {
    #[inline(always)]
    fn push(&mut self, table: &FlowTable, key: &FlowKey) {
        // A full stash whose lookups never came (every packet dropped before the flow stage)
        // is stale too.
        if self.warmed || self.len == BURST {
            self.len = 0;
            self.next = 0;
            self.warmed = false;
        }
        let Some(p) = self.places.get_mut(self.len) else {
            return;
        };
        *p = table.place(key);
        table.warm_first_bucket(p);
        if self.both {
            table.warm_second_bucket(p);
        }
        self.len += 1;
    }

    /// Before the burst's first lookup: with the buckets loaded, start loading the entries
    /// their tags point at; where no tag matched (a new flow, most likely), the slot its setup
    /// will probably take and the reverse key's buckets; with `nat` (translated flows may
    /// exist), the entries' NAT partners too.
    #[inline(always)]
    fn warm(&mut self, table: &FlowTable, nat: bool) {
        if self.warmed {
            return;
        }
        self.warmed = true;
        // The first buckets, loaded since `push`: a key their tags do not hold (in its second
        // bucket, or new) has its second bucket loaded now, while the pass goes on.
        for (p, h) in self.places[..self.len].iter().zip(&mut self.hints) {
            *h = table.warm_entry_in(p, false);
            if h.is_none() {
                table.warm_second_bucket(p);
            }
        }
        for ((p, h), r) in self.places[..self.len]
            .iter()
            .zip(&mut self.hints)
            .zip(&mut self.reverse)
        {
            *r = None;
            if h.is_some() {
                continue;
            }
            *h = table.warm_entry_in(p, true);
            if h.is_none() {
                let rp = table.place(&p.key().reverse());
                table.warm_buckets(&rp);
                table.warm_free_slot(p);
                *r = Some(rp);
            }
        }
        // By now the reverse keys' buckets have had the rest of the pass to arrive: start
        // loading the slots their setups will write too, so those stores do not miss while
        // the setup holds its bucket locks.
        for rp in self.reverse[..self.len].iter().flatten() {
            table.warm_free_slot(rp);
        }
        // And the entries found have had it too: a NAT hit reads its partner's key, in
        // another bucket, so start loading that as well.
        if nat {
            for h in self.hints[..self.len].iter().flatten() {
                table.warm_nat_partner(*h);
            }
        }
    }

    /// Where in the burst the key with these words is stashed (its place, slot hint and reverse
    /// key's place are at that index), or `None` if it is not. An index, not copies: a hit
    /// reads the place where it lies, and only a setup copies it and the reverse key's.
    #[inline(always)]
    fn take(&mut self, words: &[u64; 5]) -> Option<usize> {
        let from = self.next.min(self.len);
        let j = from
            + self.places[from..self.len]
                .iter()
                .position(|p| p.is_of(words))?;
        self.next = j + 1;
        Some(j)
    }
}

/// The policies, NAT store and topology as a burst sees them, with what every packet would
/// otherwise ask of them. Taken once per burst ([`FlowStage::begin`]), not checked for a newer
/// version at each packet: a change takes effect from the next burst, microseconds later, as
/// it would for a packet that arrived just before it. Each `Arc` is cloned only when its store
/// moved on (one reference count update per change, none per burst).
struct Seen {
    pol: Arc<PolicySnapshot>,
    nat: Arc<NatSnapshot>,
    topo: Arc<Topology>,
    /// Policies on some vif or anything translated: the flow table has a say.
    active: bool,
    /// `nat.has_link_local()`.
    link_local: bool,
    /// `nat.any()`.
    nat_any: bool,
}

/// `held` made the store's current version if it is not already.
#[inline(always)]
fn keep_current<T>(cache: &mut Cache<Arc<ArcSwap<T>>, Arc<T>>, held: &mut Arc<T>) {
    let current = cache.load();
    if !Arc::ptr_eq(current, held) {
        *held = Arc::clone(current);
    }
}

/// One core's flow stage. Before each [`crate::pipeline::Pipeline::process`] call, tell it the
/// receiving vif and the time: `pipe.flow_hook().begin(in_vif, now)`. That is also when it
/// takes the current policies and NAT store: a change reaches a core's packets from its next
/// `begin` on.
pub struct FlowStage {
    table: Arc<FlowTable>,
    policies: Cache<Arc<ArcSwap<PolicySnapshot>>, Arc<PolicySnapshot>>,
    /// Which VRFs leave through source NAT, and from which pools.
    nat: Cache<Arc<ArcSwap<NatSnapshot>>, Arc<NatSnapshot>>,
    /// Per pool slot, the block this core takes pairs from next.
    nat_cursors: Box<[usize]>,
    /// The vifs' VRFs (does a flow leave toward a NAT pool's VRF?).
    topo: Cache<Arc<ArcSwap<Topology>>, Arc<Topology>>,
    /// What the burst under way sees of the three: taken at [`FlowStage::begin`].
    seen: Seen,
    tables: Arc<Tables>,
    in_vif: u16,
    now: u64,
    burst: Burst,
    /// This core's share of the table's capacity, so its setups write no shared counter.
    credit: SetupCredit,
    /// Prefetch whatever the table's size (tests and fuzzing: the stash path on a small table).
    always_prefetch: bool,
}

impl Drop for FlowStage {
    fn drop(&mut self) {
        self.table.release(&mut self.credit);
    }
}

impl FlowStage {
    /// The burst that follows came in on `in_vif`, at `now` (the table's time unit); it is
    /// decided under the policies and NAT store as they are now.
    pub fn begin(&mut self, in_vif: u16, now: u64) {
        self.in_vif = in_vif;
        self.now = now;
        self.refresh();
        let reserved = self.table.reserved_entries();
        self.burst.cached = !self.always_prefetch && reserved <= CACHED_ENTRIES;
        self.burst.both = loads_both_buckets(reserved, self.table.capacity());
    }

    /// Take the prefetch path (stash, warm, hinted lookups) at every burst, however few
    /// entries the table holds: for tests and fuzzing, which check it against the plain path
    /// on tables small enough to set up and reach every state of.
    #[doc(hidden)]
    pub fn always_prefetch(&mut self) {
        self.always_prefetch = true;
    }

    /// Whether `prefetch` places and warms the keys of the bursts that follow (the table holds
    /// too many entries to stay cached); decided at each [`Self::begin`].
    pub fn prefetches(&self) -> bool {
        !self.burst.cached
    }

    /// Take the current policies, NAT store and topology for the burst that follows.
    #[inline]
    fn refresh(&mut self) {
        let s = &mut self.seen;
        keep_current(&mut self.policies, &mut s.pol);
        keep_current(&mut self.nat, &mut s.nat);
        keep_current(&mut self.topo, &mut s.topo);
        s.nat_any = s.nat.any();
        s.link_local = s.nat.has_link_local();
        s.active = s.pol.count != 0 || s.nat_any;
    }

    pub fn table(&self) -> &Arc<FlowTable> {
        &self.table
    }

    /// Translate flows as `nat` says (it must be the store of this stage's flow table, whose
    /// entries record its pools). Each stage starts its pool cursors at blocks of its own.
    pub fn with_nat(mut self, nat: &Nat) -> FlowStage {
        let (handle, ordinal) = nat.for_stage();
        self.nat = Cache::new(handle);
        self.refresh();
        for (slot, c) in self.nat_cursors.iter_mut().enumerate() {
            // Far apart per core (a large odd stride), different per pool.
            *c = ordinal.wrapping_mul(0x9e37).wrapping_add(slot * 7);
        }
        self
    }
}

/// How a flow leaves translated.
#[derive(Debug, Clone, Copy)]
enum Leaving<'s> {
    /// From the pod's floating IP, its ports kept.
    Floating(FloatingIp),
    /// From a pair of the pool its VRF is attached to.
    Pool(&'s SnatRule),
}

/// How the packet's flow, leaving as plain IP through vif `plain_out` (`None`: through a
/// tunnel, or not at all), is translated, if it is: a pod with a floating IP leaves from it
/// toward the fabric; a VRF attached to a pool leaves from the pool toward the pool's VRF.
/// `topo` is read only for a VRF that translates anything.
#[inline]
fn leaving<'s>(
    nat: &NatSnapshot,
    snat: Option<&'s SnatRule>,
    topo: Option<&Topology>,
    m: &PacketMeta,
    plain_out: Option<u16>,
) -> Option<Leaving<'s>> {
    let out_vrf = topo?.vif(plain_out?)?.vrf;
    if out_vrf == FABRIC_VRF && nat.has_floating(m.vrf) {
        if let Some(f) = nat.floating_of(m.vrf, m.l3 == L3::Ipv6, m.src) {
            return Some(Leaving::Floating(*f));
        }
    }
    snat.filter(|r| r.toward_vrf == out_vrf).map(Leaving::Pool)
}

/// What a hit on a NAT entry that rewrites the source does: its source becomes the address and
/// port its partner (keyed as the other direction arrives on the outside) holds. An entry that
/// rewrites the destination hit here (a reply that came through a tunnel, not the fabric's
/// plain IP path) is forwarded as routed.
///
/// `service` is the topology when the packet's VRF has service VIPs: an entry rewriting the
/// destination within its own VRF is then a VIP flow's, sent to the backend its partner holds.
#[inline]
fn nat_hit(
    table: &FlowTable,
    hit: &Hit,
    target: RouteTarget,
    service: Option<(&Topology, u16)>,
    topo: Option<&Topology>,
) -> FlowAction {
    if hit.verdict == FlowVerdict::Drop {
        return FlowAction::Drop;
    }
    if hit.nat_both {
        // Both ends translated (a hairpin through a floating IP, a link-local service's flow
        // seen inside a VRF): routed where the partner says.
        return match (table.nat_partner(hit), topo) {
            (Some(p), Some(topo)) => both_ways(topo, &p),
            _ => FlowAction::Drop,
        };
    }
    if hit.nat_dst {
        let Some((topo, vrf)) = service else {
            return FlowAction::Forward(target);
        };
        return match table.nat_partner(hit) {
            Some(backend) if backend.vrf == vrf => to_backend(topo, &backend),
            Some(_) => FlowAction::Forward(target),
            None => FlowAction::Drop,
        };
    }
    match table.nat_partner(hit) {
        Some(reply) => FlowAction::Nat(
            target,
            Translation {
                end: End::Source,
                addr: reply.dst,
                port: nat_port_of_reply(&reply),
            },
        ),
        // Removed under us: never translate with a pair that may be another flow's.
        None => FlowAction::Drop,
    }
}

/// The route to `addr` (IPv6 if `v6`, else IPv4 in the low 32 bits) in VRF `vrf`.
#[inline]
fn route_in(topo: &Topology, vrf: u16, v6: bool, addr: u128) -> Option<RouteTarget> {
    let v = topo.vrf(vrf)?;
    if v6 {
        v.route_v6(addr)
    } else {
        v.route_v4(addr as u32)
    }
}

/// A packet of a flow translated at both ends whose other entry's key is `p` (as the other
/// direction arrives): it leaves as the reverse of `p`, from `p`'s destination (and port, or
/// ICMP identifier) to its source, routed in `p`'s VRF.
fn both_ways(topo: &Topology, p: &FlowKey) -> FlowAction {
    let route = route_in(topo, p.vrf, p.v6, p.src);
    match route {
        Some(t) => FlowAction::Nat2(
            t,
            Translation {
                end: End::Source,
                addr: p.dst,
                port: nat_port_of_reply(p),
            },
            Translation {
                end: End::Destination,
                addr: p.src,
                port: p.sport,
            },
        ),
        None => FlowAction::Refused(DropReason::NoRoute),
    }
}

/// A VIP flow's packet to the backend `backend` (the reverse entry's key: the backend is its
/// source), routed in its VRF.
fn to_backend(topo: &Topology, backend: &FlowKey) -> FlowAction {
    let route = route_in(topo, backend.vrf, backend.v6, backend.src);
    match route {
        Some(t) => FlowAction::Nat(
            t,
            Translation {
                end: End::Destination,
                addr: backend.src,
                port: backend.sport,
            },
        ),
        None => FlowAction::Refused(DropReason::NoRoute),
    }
}

/// A link-local service flow's packet, whose reply key is `reply` (the service as its source,
/// the vif's link-local address and the pod's port as its destination), routed in the fabric
/// VRF to the service.
fn to_link_local_service(topo: &Topology, reply: &FlowKey) -> FlowAction {
    match topo
        .vrf(FABRIC_VRF)
        .and_then(|v| v.route_v4(reply.src as u32))
    {
        Some(t) => twice(t, reply),
        None => FlowAction::Refused(DropReason::NoRoute),
    }
}

/// Both ends of a link-local service flow's packet, from its reply key.
fn twice(target: RouteTarget, reply: &FlowKey) -> FlowAction {
    FlowAction::Nat2(
        target,
        Translation {
            end: End::Source,
            addr: reply.dst,
            port: reply.dport,
        },
        Translation {
            end: End::Destination,
            addr: reply.src,
            port: reply.sport,
        },
    )
}

/// Whether source NAT or a floating IP can translate the packet: IPv4 or IPv6, not a
/// fragment, TCP, UDP or an ICMP / ICMPv6 echo request.
fn translatable(m: &PacketMeta) -> bool {
    !m.fragment
        && match (m.l3, m.proto) {
            (L3::Ipv4 | L3::Ipv6, ipv4::proto::TCP | ipv4::proto::UDP) => true,
            (L3::Ipv4, ipv4::proto::ICMP) => m.dport == u16::from(icmp::v4::ECHO_REQUEST),
            (L3::Ipv6, ipv4::proto::ICMPV6) => m.dport == u16::from(icmp::v6::ECHO_REQUEST),
            _ => false,
        }
}

/// Whether a service VIP can translate the packet: TCP or UDP, IPv4 or IPv6, not a fragment.
fn serviceable(m: &PacketMeta) -> bool {
    matches!(m.l3, L3::Ipv4 | L3::Ipv6)
        && !m.fragment
        && matches!(m.proto, ipv4::proto::TCP | ipv4::proto::UDP)
}

/// The vif a target sends out of (`NO_VIF` for receive / discard / unknown). `hash` (the
/// packet's flow hash) is asked for only when the target is ECMP.
fn egress_vif(tables: &Tables, target: RouteTarget, hash: impl FnOnce() -> u32) -> u16 {
    egress(tables, target, hash).0
}

/// [`egress_vif`], and whether the packet leaves by it as plain IP (an encap nexthop): only
/// then can it leave the VRF translated. Through a tunnel it stays in its VRF's overlay.
fn egress(tables: &Tables, target: RouteTarget, hash: impl FnOnce() -> u32) -> (u16, bool) {
    let mut nh = tables.nexthops.get(target.nexthop);
    if let Some(Nexthop::Ecmp { members, count }) = nh {
        nh = Nexthop::ecmp_pick(&members, count, hash())
            .and_then(|m| tables.nexthops.get(u32::from(m)));
    }
    match nh {
        Some(Nexthop::Encap { vif, .. }) => (vif, true),
        Some(Nexthop::Tunnel { vif, .. }) => (vif, false),
        _ => (NO_VIF, false),
    }
}

/// The flow key of a packet. For ICMP the metadata already carries the echo identifier as
/// source port and the message type as destination port.
#[inline(always)]
fn key_of(m: &PacketMeta) -> FlowKey {
    FlowKey {
        vrf: m.vrf,
        v6: m.l3 == L3::Ipv6,
        proto: m.proto,
        src: m.src,
        dst: m.dst,
        sport: m.sport,
        dport: m.dport,
    }
}

fn action(v: FlowVerdict, target: RouteTarget) -> FlowAction {
    match v {
        FlowVerdict::Forward => FlowAction::Forward(target),
        FlowVerdict::Drop => FlowAction::Drop,
    }
}

impl FlowHook for FlowStage {
    #[inline]
    fn prefetch(&mut self, m: &PacketMeta) {
        if self.burst.cached || !self.seen.active || !matches!(m.l3, L3::Ipv4 | L3::Ipv6) {
            return;
        }
        self.burst.push(&self.table, &key_of(m));
    }

    #[inline]
    fn on_lookup(&mut self, m: &PacketMeta, frame: &mut [u8], target: RouteTarget) -> FlowAction {
        let link_local = if self.seen.link_local && m.l3 == L3::Ipv4 {
            self.seen
                .nat
                .link_local(m.proto, m.dst_v4(), m.dport)
                .copied()
        } else {
            None
        };
        if let Some(l) = link_local {
            return self.link_local_flow(m, frame, l);
        }
        let FlowStage {
            table,
            seen,
            nat_cursors,
            tables,
            in_vif,
            now,
            burst,
            credit,
            ..
        } = self;
        let (in_vif, now) = (*in_vif, *now);
        if !seen.active || !matches!(m.l3, L3::Ipv4 | L3::Ipv6) {
            return FlowAction::Forward(target);
        }
        let pol: &PolicySnapshot = &seen.pol;
        let nat: &NatSnapshot = &seen.nat;
        let snat = nat.snat(m.vrf);
        let services = nat.has_service(m.vrf);
        let translates = snat.is_some() || nat.has_floating(m.vrf) || services;
        // The vifs' VRFs matter only to a VRF that translates something.
        let topo: Option<&Topology> = translates.then_some(&*seen.topo);
        let mut out_vif = None;
        // Whether the flow table speaks for the packet at all depends on where it leaves; a
        // VRF that translates looks its flow up first (a NAT flow's hit needs no egress) and
        // asks only on a miss, below.
        if pol.get(in_vif).is_none() && !translates {
            let o = egress_vif(tables, target, || m.flow_hash());
            if pol.get(o).is_none() {
                return FlowAction::Forward(target);
            }
            out_vif = Some(o);
        }
        let icmp_error = match m.proto {
            ipv4::proto::ICMP => is_error_type(m.dport),
            // ICMPv6 errors that quote (RFC 4443).
            ipv4::proto::ICMPV6 => matches!(m.dport, 1..=4),
            _ => false,
        };
        if icmp_error && translates {
            let service = topo.filter(|_| services).map(|t| (t, m.vrf));
            if let Some(a) = icmp_error_action(table, m, frame, target, service, topo) {
                return a;
            }
        }
        // Only the key's words on the fast path: the slow path rebuilds the key from `m`, so
        // it is not kept (spilled) across the lookup.
        let words = key_of(m).words();
        // While the table stays cached nothing was stashed: skip looking.
        let stashed = if burst.cached {
            None
        } else {
            burst.warm(table, seen.nat_any);
            burst.take(&words)
        };
        let fresh;
        let (place, hint): (&Place, Option<usize>) =
            match stashed.and_then(|j| Some((burst.places.get(j)?, *burst.hints.get(j)?))) {
                Some(p) => p,
                None => {
                    fresh = table.place_words(words);
                    (&fresh, None)
                }
            };
        let tcp_flags = (m.proto == 6 && !m.fragment)
            .then(|| frame.get(usize::from(m.l4_off) + 13).copied())
            .flatten();
        // The whole frame: a large packet's payload may lie in segments `frame` does not show.
        let len = u64::from(m.frame_len).max(frame.len() as u64);
        let table = &**table;
        // The common case, kept small: a hit on a flow decided under the current policies.
        let first = table.lookup_hinted(place, hint);
        if let Some(raw) = first {
            if raw.policy_gen() == pol.generation {
                table.touch(raw.index(), len, now, tcp_flags);
                if raw.is_nat() {
                    let service = topo.filter(|_| services).map(|t| (t, m.vrf));
                    return nat_hit(table, &raw.hit(), target, service, topo);
                }
                return action(raw.verdict(), target);
            }
        }
        let first = first.map(|r| r.hit());
        if translates {
            let (o, plain) = egress(tables, target, || m.flow_hash());
            if pol.get(in_vif).is_none()
                && pol.get(o).is_none()
                && !services
                && leaving(nat, snat, topo, m, plain.then_some(o)).is_none()
            {
                return FlowAction::Forward(target);
            }
            out_vif = Some(o);
        }
        let pkt = Packet {
            meta: m,
            place: *place,
            reverse: stashed.and_then(|j| burst.reverse.get(j).copied().flatten()),
            len,
            tcp_flags,
            target,
            first,
        };
        let mut setup = Setup {
            table,
            credit,
            pol,
            tables,
            topo,
            nat,
            snat,
            nat_cursors,
        };
        decide(&mut setup, in_vif, out_vif, now, &pkt)
    }

    #[cold]
    fn unrouted(&mut self, m: &PacketMeta, frame: &[u8]) -> Option<RouteTarget> {
        let nat: &NatSnapshot = self.nat.load();
        let v6 = match m.l3 {
            L3::Ipv4 => false,
            L3::Ipv6 => true,
            _ => return None,
        };
        // A VIP's flows always leave with the backend's route: this target is never used
        // (an invalid nexthop, dropped if it were). So do ICMP errors about the replies a VIP
        // sent (quoting the VIP as their source).
        let to_vip = nat.has_service(m.vrf)
            && (nat.service(m.vrf, m.proto, v6, m.dst, m.dport).is_some()
                || nat::quoted(frame, m)
                    .is_some_and(|q| nat.service(m.vrf, q.proto, q.v6, q.src, q.sport).is_some()));
        // A hairpin flow's reply (or an ICMP error about its client's packet), to the outside
        // address its client's flow took (which the VRF need not route): its entry says where
        // it goes.
        let hairpin = || {
            let both = |k: &FlowKey| self.table.lookup(k).is_some_and(|h| h.nat && h.nat_both);
            // Only a VRF with a floating IP's pod can hold a hairpin flow's far end.
            nat.has_floating(m.vrf)
                && (both(&key_of(m))
                    || nat::quoted(frame, m).is_some_and(|q| {
                        both(
                            &FlowKey {
                                vrf: m.vrf,
                                v6: q.v6,
                                proto: q.proto,
                                src: q.src,
                                dst: q.dst,
                                sport: q.sport,
                                dport: q.dport,
                            }
                            .reverse(),
                        )
                    }))
        };
        if v6 {
            return (to_vip || hairpin()).then_some(UNROUTED);
        }
        // A link-local service's flows leave with the service's route in the fabric VRF.
        let link_local =
            nat.has_link_local() && nat.link_local(m.proto, m.dst_v4(), m.dport).is_some();
        (to_vip || link_local || hairpin()).then_some(UNROUTED)
    }

    fn on_fabric(&mut self, m: &PacketMeta, frame: &[u8]) -> Inbound {
        let nat: &NatSnapshot = self.nat.load();
        if !nat.any_fabric() || !matches!(m.l3, L3::Ipv4 | L3::Ipv6) || m.fragment {
            return Inbound::Host;
        }
        let table = &*self.table;
        let inbound = |h: &Hit| h.nat && h.nat_dst;
        let key = key_of(m);
        let hit = match table.lookup(&key).filter(inbound) {
            Some(hit) if hit.nat_both => {
                // A link-local service's reply: back from the link-local address to the pod.
                let len = u64::from(m.frame_len).max(frame.len() as u64);
                table.touch(hit.index, len, self.now, None);
                return match table.nat_partner(&hit) {
                    Some(pod) => Inbound::Translate2(
                        pod.vrf,
                        back_to(&pod),
                        Translation {
                            end: End::Source,
                            addr: pod.dst,
                            port: pod.dport,
                        },
                    ),
                    None => Inbound::Drop(DropReason::FlowDrop),
                };
            }
            Some(hit) => {
                let tcp_flags = (m.proto == ipv4::proto::TCP)
                    .then(|| frame.get(usize::from(m.l4_off) + 13).copied())
                    .flatten();
                let len = u64::from(m.frame_len).max(frame.len() as u64);
                table.touch(hit.index, len, self.now, tcp_flags);
                hit
            }
            None => {
                // An ICMP error about a packet that left through NAT: the flow is the one
                // whose reply the quoted packet's would be (an error does not keep the flow
                // alive).
                let quoted = nat::quoted(frame, m).and_then(|q| {
                    let left = FlowKey {
                        vrf: m.vrf,
                        v6: q.v6,
                        proto: q.proto,
                        src: q.src,
                        dst: q.dst,
                        sport: q.sport,
                        dport: q.dport,
                    };
                    table.lookup(&left.reverse()).filter(inbound)
                });
                match quoted {
                    Some(hit) => hit,
                    None => {
                        return match nat.floating(m.l3 == L3::Ipv6, m.dst) {
                            Some(f) => {
                                let f = *f;
                                self.floating_inbound(m, &key, f, frame)
                            }
                            None => Inbound::Host,
                        }
                    }
                }
            }
        };
        match table.nat_partner(&hit) {
            Some(pod) => Inbound::Translate(pod.vrf, back_to(&pod)),
            // Removed under us: never translate with another flow's tuple.
            None => Inbound::Drop(DropReason::FlowDrop),
        }
    }
}

/// The target [`FlowHook::unrouted`] gives a packet to a VIP (or an ICMP error about a VIP's
/// reply): an invalid nexthop, replaced by the backend's route, dropped if it were not.
const UNROUTED: RouteTarget = RouteTarget {
    nexthop: u32::MAX,
    label: None,
};

/// Whether an ICMPv4 type (as the metadata's destination port holds it) is an error that
/// quotes the packet it answers: destination unreachable, time exceeded, parameter problem.
#[inline(always)]
fn is_error_type(ty: u16) -> bool {
    matches!(ty, 3 | 11 | 12)
}

/// An ICMPv4 error inside a VRF that translates, about a packet of a NAT flow (its quote,
/// reversed, is the key of the flow's entry for the error's direction): translated as that
/// entry translates its packets, the quote with it. An entry that rewrites the source (the
/// error leaves through source NAT or a floating IP, or comes from a VIP's backend) gives the
/// quote's destination (and the error's source, if the translated host sent it) the pair,
/// floating IP or VIP; one that rewrites the destination toward a VIP's backend (an error from
/// a client about a reply it got from the VIP) sends it to the backend, quote and all; one that
/// rewrites both ends (a hairpin, a link-local service) sends it where that entry's packets go,
/// both ends of the error and of its quote translated. `None`:
/// not about a NAT flow, decided as any other packet.
#[cold]
#[inline(never)]
fn icmp_error_action(
    table: &FlowTable,
    m: &PacketMeta,
    frame: &[u8],
    target: RouteTarget,
    service: Option<(&Topology, u16)>,
    topo: Option<&Topology>,
) -> Option<FlowAction> {
    let found = nat::quoted(frame, m).and_then(|q| {
        let quoted = FlowKey {
            vrf: m.vrf,
            v6: q.v6,
            proto: q.proto,
            src: q.src,
            dst: q.dst,
            sport: q.sport,
            dport: q.dport,
        };
        table.lookup(&quoted.reverse()).filter(|h| h.nat)
    });
    let Some(hit) = found else {
        // An error about a VIP's reply whose flow is gone: nowhere to send it.
        return (target == UNROUTED).then_some(FlowAction::Refused(DropReason::NoRoute));
    };
    // Errors do not keep a flow alive: no touch.
    match nat_hit(table, &hit, target, service, topo) {
        // A destination-rewriting entry outside a VIP (hit through a tunnel) is not ours.
        FlowAction::Forward(_) => None,
        a => Some(a),
    }
}

/// The translation that takes a packet coming in from outside to the pod whose tuple `pod`
/// (the flow's entry on the pod's side) is: its source is where the packet goes.
fn back_to(pod: &FlowKey) -> Translation {
    Translation {
        end: End::Destination,
        addr: pod.src,
        port: pod.sport,
    }
}

impl FlowStage {
    /// A pod's packet to link-local service `l`: its flow's entries say where it goes (both
    /// ends rewritten from the reverse entry's key), or it is set up now: from the vif's
    /// link-local source and the pod's port to the service, routed in the fabric VRF, decided
    /// by the vif's policies. Denied flows are not installed.
    #[cold]
    #[inline(never)]
    fn link_local_flow(&mut self, m: &PacketMeta, frame: &[u8], l: LinkLocal) -> FlowAction {
        if !translatable(m) {
            return FlowAction::Refused(DropReason::NatUnsupported);
        }
        let key = key_of(m);
        let tcp_flags = (m.proto == ipv4::proto::TCP)
            .then(|| frame.get(usize::from(m.l4_off) + 13).copied())
            .flatten();
        let len = u64::from(m.frame_len).max(frame.len() as u64);
        let topo: &Topology = self.topo.load();
        let table = &*self.table;
        let place = table.place(&key);
        if let Some(hit) = table.lookup_placed(&place) {
            table.touch(hit.index, len, self.now, tcp_flags);
            return match table.nat_partner(&hit) {
                Some(r) if hit.nat_both && !hit.nat_dst => to_link_local_service(topo, &r),
                // Set up before the service existed (its flows were removed as it was set)
                // or removed under us: never send it untranslated.
                _ => FlowAction::Drop,
            };
        }
        let fabric = topo.vrf(FABRIC_VRF);
        let Some(target) = fabric.and_then(|v| v.route_v4(l.service_addr)) else {
            return FlowAction::Refused(DropReason::NoRoute);
        };
        let out = egress_vif(&self.tables, target, || m.flow_hash());
        let pol: &PolicySnapshot = self.policies.load();
        if verdict_of(pol, &key, self.in_vif, out, true) != Some(FlowVerdict::Forward) {
            return FlowAction::Drop;
        }
        let source = nat::link_local_source(self.in_vif);
        let reply = FlowKey {
            vrf: FABRIC_VRF,
            v6: false,
            proto: m.proto,
            src: u128::from(l.service_addr),
            dst: u128::from(source),
            sport: l.service_port,
            dport: m.sport,
        };
        let new = NewFlow {
            key,
            verdict: FlowVerdict::Forward,
            with_reverse: true,
            in_vif: self.in_vif,
            out_vif: out,
            policy_gen: pol.generation,
            now: self.now,
            nat: Some(NatSetup {
                reverse: reply,
                pool: 0,
                forward_rewrites_dst: false,
                both: true,
            }),
        };
        let rev = table.place(&reply);
        match table.insert_placed(&new, &place, Some(&rev), &mut self.credit) {
            Ok(idx) => {
                table.touch(idx, len, self.now, tcp_flags);
                twice(target, &reply)
            }
            Err(InsertError::Full) => FlowAction::Drop,
            // Another core set it up just now (or another flow holds the reply's key).
            Err(InsertError::Raced) => match table.lookup_placed(&place) {
                Some(hit) if hit.nat_both && !hit.nat_dst => match table.nat_partner(&hit) {
                    Some(r) => to_link_local_service(topo, &r),
                    None => FlowAction::Drop,
                },
                _ => FlowAction::Drop,
            },
        }
    }

    /// The first packet of a flow to floating IP `f` from outside: decided by the pod's
    /// policies and set up inline, the inbound entry rewriting the destination to the pod,
    /// the pod's replies' entry rewriting their source to the floating IP. Denied flows are
    /// not installed (each of their packets is decided again).
    #[cold]
    #[inline(never)]
    fn floating_inbound(
        &mut self,
        m: &PacketMeta,
        key: &FlowKey,
        f: FloatingIp,
        frame: &[u8],
    ) -> Inbound {
        if !translatable(m) {
            return Inbound::Drop(DropReason::NatUnsupported);
        }
        let inside = f.inside_bits();
        let pod_side = FlowKey {
            vrf: f.vrf,
            dst: inside,
            ..*key
        };
        let topo: &Topology = self.topo.load();
        let route = route_in(topo, f.vrf, key.v6, inside);
        let Some(target) = route else {
            return Inbound::Drop(DropReason::NoRoute);
        };
        let pod_vif = egress_vif(&self.tables, target, || m.flow_hash());
        let pol: &PolicySnapshot = self.policies.load();
        let verdict = verdict_of(pol, &pod_side, self.in_vif, pod_vif, true);
        if verdict != Some(FlowVerdict::Forward) {
            return Inbound::Drop(DropReason::FlowDrop);
        }
        let new = NewFlow {
            key: *key,
            verdict: FlowVerdict::Forward,
            with_reverse: true,
            in_vif: self.in_vif,
            out_vif: pod_vif,
            policy_gen: pol.generation,
            now: self.now,
            nat: Some(NatSetup {
                reverse: pod_side.reverse(),
                pool: 0,
                forward_rewrites_dst: true,
                both: false,
            }),
        };
        let table = &*self.table;
        let place = table.place(key);
        let rev = table.place(&new.reverse_key());
        let len = u64::from(m.frame_len).max(frame.len() as u64);
        match table.insert_placed(&new, &place, Some(&rev), &mut self.credit) {
            Ok(idx) => {
                table.touch(idx, len, self.now, None);
                Inbound::Translate(f.vrf, back_to(&new.reverse_key()))
            }
            Err(InsertError::Full) => Inbound::Drop(DropReason::FlowDrop),
            // Another core set it up just now: its entry says where to.
            Err(InsertError::Raced) => match table
                .lookup_placed(&place)
                .filter(|h| h.nat && h.nat_dst)
                .and_then(|h| table.nat_partner(&h))
            {
                Some(pod) => Inbound::Translate(pod.vrf, back_to(&pod)),
                None => Inbound::Drop(DropReason::FlowDrop),
            },
        }
    }
}

/// What a setup reads and writes besides the packet.
struct Setup<'a> {
    table: &'a FlowTable,
    credit: &'a mut SetupCredit,
    pol: &'a PolicySnapshot,
    tables: &'a Tables,
    /// The topology, read when the packet's VRF translates something.
    topo: Option<&'a Topology>,
    nat: &'a NatSnapshot,
    /// The packet's VRF's source-NAT rule, if attached.
    snat: Option<&'a SnatRule>,
    nat_cursors: &'a mut [usize],
}

/// What the slow path needs of a packet.
struct Packet<'m> {
    meta: &'m PacketMeta,
    place: Place,
    reverse: Option<Place>,
    len: u64,
    tcp_flags: Option<u8>,
    target: RouteTarget,
    /// What the fast path's lookup found (a flow decided under older policies), if anything.
    first: Option<Hit>,
}

/// The packet's flow is new, or was decided under older policies: decide it (again) and
/// install it. Out of line, so the hit path stays small.
#[cold]
#[inline(never)]
fn decide(s: &mut Setup, in_vif: u16, out_vif: Option<u16>, now: u64, p: &Packet) -> FlowAction {
    let (table, pol) = (s.table, s.pol);
    let Packet {
        meta,
        place,
        reverse,
        len,
        tcp_flags,
        target,
        first,
    } = *p;
    let key = key_of(meta);
    let services = s.nat.has_service(meta.vrf);
    let service = s.topo.filter(|_| services).map(|t| (t, meta.vrf));
    let vip = if services && matches!(meta.l3, L3::Ipv4 | L3::Ipv6) {
        s.nat.service(
            meta.vrf,
            meta.proto,
            meta.l3 == L3::Ipv6,
            meta.dst,
            meta.dport,
        )
    } else {
        None
    };
    let mut found = first;
    for _ in 0..2 {
        if let Some(hit) = found.take() {
            if hit.policy_gen != pol.generation {
                // Policies changed since this flow was decided: decide again, on the tuple it
                // was decided on. A VIP flow's forward entry (keyed to the VIP) was decided on
                // the backend's tuple, which its partner holds reversed; any other NAT entry
                // rewriting the destination (hit here only through a tunnel) is re-decided
                // from its partner, by the packets that set it up.
                let fk = if hit.nat && hit.nat_dst {
                    service
                        .and_then(|(_, vrf)| table.nat_partner(&hit).filter(|b| b.vrf == vrf))
                        .map(|backend_side| backend_side.reverse())
                } else if hit.is_reverse {
                    Some(key.reverse())
                } else {
                    Some(key)
                };
                if let Some(fk) = fk {
                    if verdict_of(pol, &fk, hit.in_vif, hit.out_vif, hit.nat) != Some(hit.verdict) {
                        table.remove(&key);
                        found = table.lookup_placed(&place);
                        continue;
                    }
                    table.set_policy_gen(hit.index, pol.generation);
                }
            }
            table.touch(hit.index, len, now, tcp_flags);
            if hit.nat {
                return nat_hit(table, &hit, target, service, s.topo);
            }
            return action(hit.verdict, target);
        }
        if let Some(svc) = vip {
            return setup_service(s, in_vif, now, p, svc);
        }
        // Miss: decide from the policies and install the flow (and its reverse if allowed).
        let (out, plain) = egress(s.tables, target, || meta.flow_hash());
        let out = out_vif.unwrap_or(out);
        let how = leaving(s.nat, s.snat, s.topo, meta, plain.then_some(out));
        if pol.to_agent(&key, in_vif, out) {
            return FlowAction::Agent;
        }
        let Some(verdict) = verdict_of(pol, &key, in_vif, out, how.is_some()) else {
            return FlowAction::Forward(target);
        };
        let mut new = NewFlow {
            key,
            verdict,
            with_reverse: verdict == FlowVerdict::Forward,
            in_vif,
            out_vif: out,
            policy_gen: pol.generation,
            now,
            nat: None,
        };
        // Translated: the source from the pool (a pair taken) or the floating IP (ports
        // kept); the reverse entry under the key the replies arrive with.
        let mut pair = None;
        let mut translation = None;
        let mut hairpin = None;
        if let (Some(how), FlowVerdict::Forward) = (how, verdict) {
            if !translatable(meta) {
                return FlowAction::Refused(DropReason::NatUnsupported);
            }
            let (toward, addr, port, slot) = match how {
                // A pool hands out addresses of its own family only: the other family's
                // flows from the VRF are not translated (counted).
                Leaving::Pool(rule) if rule.pool.range().v6() != key.v6 => {
                    return FlowAction::Refused(DropReason::NatUnsupported);
                }
                Leaving::Pool(rule) => {
                    let slot = rule.pool.slot();
                    let Some(cursor) = s.nat_cursors.get_mut(usize::from(slot)) else {
                        return FlowAction::Refused(DropReason::NatUnsupported);
                    };
                    let Some((addr, port)) = rule.pool.take(cursor) else {
                        return FlowAction::Refused(DropReason::NatPoolExhausted);
                    };
                    pair = Some((rule, addr, port));
                    (rule.toward_vrf, addr, port, slot)
                }
                Leaving::Floating(f) => (FABRIC_VRF, f.outside_bits(), key.sport, 0),
            };
            let leaving = FlowKey {
                vrf: toward,
                src: addr,
                sport: port,
                ..key
            };
            new.nat = Some(NatSetup {
                reverse: leaving.reverse(),
                pool: slot,
                forward_rewrites_dst: false,
                both: false,
            });
            translation = Some(Translation {
                end: End::Source,
                addr,
                port,
            });
            // Hairpin: the destination is a floating IP of a pod of this node. The flow does
            // not leave: it goes to that pod, from the outside address (so the pod's replies
            // come back through the translation), both ends rewritten.
            let floating_dst = if toward == FABRIC_VRF {
                s.nat.floating(key.v6, key.dst).copied()
            } else {
                None
            };
            if let Some(f) = floating_dst {
                let give_back = || {
                    if let Some((rule, addr, port)) = pair {
                        rule.pool.give_back(addr, port);
                    }
                };
                let to_pod = FlowKey {
                    vrf: f.vrf,
                    dst: f.inside_bits(),
                    ..leaving
                };
                let reply = to_pod.reverse();
                let action = match s.topo {
                    Some(topo) => both_ways(topo, &reply),
                    None => FlowAction::Drop,
                };
                let FlowAction::Nat2(pod_target, _, _) = action else {
                    give_back();
                    return action;
                };
                let pod_vif = egress_vif(s.tables, pod_target, || meta.flow_hash());
                let pod_key = FlowKey {
                    vrf: f.vrf,
                    dst: f.inside_bits(),
                    ..key
                };
                if verdict_of(pol, &pod_key, in_vif, pod_vif, true) != Some(FlowVerdict::Forward) {
                    give_back();
                    return FlowAction::Drop;
                }
                new.out_vif = pod_vif;
                new.nat = Some(NatSetup {
                    reverse: reply,
                    pool: slot,
                    forward_rewrites_dst: false,
                    both: true,
                });
                hairpin = Some(action);
            }
        }
        let rev = new.with_reverse.then(|| match (new.nat, reverse) {
            (None, Some(r)) => r,
            _ => table.place(&new.reverse_key()),
        });
        let installed = table.insert_placed(&new, &place, rev.as_ref(), s.credit);
        if let (Err(_), Some((rule, addr, port))) = (installed, pair) {
            rule.pool.give_back(addr, port);
        }
        match installed {
            Ok(idx) => {
                table.touch(idx, len, now, tcp_flags);
                if let Some(a) = hairpin {
                    return a;
                }
                if let Some(x) = translation {
                    return FlowAction::Nat(target, x);
                }
                return action(verdict, target);
            }
            Err(InsertError::Full) => return FlowAction::Drop,
            // Another core set up this flow (or its reply) just now: look up again, and if it
            // still is not there, decide this packet alone (a NAT flow cannot go untranslated:
            // dropped).
            Err(InsertError::Raced) => {
                if let Some(hit) = table.lookup_placed(&place) {
                    table.touch(hit.index, len, now, tcp_flags);
                    if hit.nat {
                        return nat_hit(table, &hit, target, service, s.topo);
                    }
                    return action(hit.verdict, target);
                }
                if translation.is_some() {
                    return FlowAction::Drop;
                }
                return action(verdict, target);
            }
        }
    }
    // Re-evaluated away twice in a row (policies changing under us): drop this packet.
    FlowAction::Drop
}

/// The first packet of a flow to a service VIP: a backend chosen as the service balances, the flow
/// decided by the policies of the vifs it enters and leaves by (toward that backend) and set
/// up inline, the forward entry rewriting the destination to the backend, the reverse entry
/// (keyed as the backend replies) the replies' source back to the VIP. Denied flows are not
/// installed.
#[cold]
#[inline(never)]
fn setup_service(
    s: &mut Setup,
    in_vif: u16,
    now: u64,
    p: &Packet,
    svc: &ServiceSnap,
) -> FlowAction {
    let (table, meta) = (s.table, p.meta);
    if !serviceable(meta) {
        return FlowAction::Refused(DropReason::NatUnsupported);
    }
    let Some(topo) = s.topo else {
        return FlowAction::Drop;
    };
    let backends = &svc.backends;
    let n = backends.len().max(1);
    let from = meta.flow_hash() as usize % n;
    // Least flows: the backend with the fewest now, ties going to the first from the hash's
    // pick on; counted up here, down if the flow is not installed (or when it goes).
    let (pick, counted) = match &svc.least {
        None => (from, None),
        Some((counts, places)) => {
            let at = |i: usize| places.get(i % n).copied().unwrap_or(u8::MAX);
            let best = (from..from + n)
                .min_by_key(|&i| counts.count(at(i)))
                .unwrap_or(from)
                % n;
            counts.add(at(best));
            (best, Some((counts, at(best))))
        }
    };
    let uncount = || {
        if let Some((c, place)) = counted {
            c.sub(place);
        }
    };
    let Some(&(addr, port)) = backends.get(pick) else {
        uncount();
        return FlowAction::Drop;
    };
    let pool = counted.map_or(0, |(c, _)| c.slot());
    let key = key_of(meta);
    let to_backend_key = FlowKey {
        dst: addr,
        dport: port,
        ..key
    };
    let route = route_in(topo, meta.vrf, key.v6, addr);
    let Some(target) = route else {
        uncount();
        return FlowAction::Refused(DropReason::NoRoute);
    };
    let out = egress_vif(s.tables, target, || meta.flow_hash());
    let verdict = verdict_of(s.pol, &to_backend_key, in_vif, out, true);
    if verdict != Some(FlowVerdict::Forward) {
        uncount();
        return FlowAction::Drop;
    }
    let new = NewFlow {
        key,
        verdict: FlowVerdict::Forward,
        with_reverse: true,
        in_vif,
        out_vif: out,
        policy_gen: s.pol.generation,
        now,
        nat: Some(NatSetup {
            reverse: to_backend_key.reverse(),
            pool,
            forward_rewrites_dst: true,
            both: false,
        }),
    };
    let rev = table.place(&new.reverse_key());
    let installed = table.insert_placed(&new, &p.place, Some(&rev), s.credit);
    if installed.is_err() {
        uncount();
    }
    match installed {
        Ok(idx) => {
            table.touch(idx, p.len, now, p.tcp_flags);
            FlowAction::Nat(
                target,
                Translation {
                    end: End::Destination,
                    addr,
                    port,
                },
            )
        }
        Err(InsertError::Full) => FlowAction::Drop,
        // Another core set it up just now: its entry says which backend.
        Err(InsertError::Raced) => match table.lookup_placed(&p.place) {
            Some(hit) if hit.nat => {
                table.touch(hit.index, p.len, now, p.tcp_flags);
                nat_hit(table, &hit, p.target, Some((topo, meta.vrf)), Some(topo))
            }
            _ => FlowAction::Drop,
        },
    }
}

/// The verdict of the policies for a flow, or for a translated flow that no policy speaks
/// for, forward (a NAT flow needs its entries whether or not a policy guards it).
fn verdict_of(
    pol: &PolicySnapshot,
    key: &FlowKey,
    in_vif: u16,
    out_vif: u16,
    nat: bool,
) -> Option<FlowVerdict> {
    pol.evaluate(key, in_vif, out_vif)
        .or(nat.then_some(FlowVerdict::Forward))
}
