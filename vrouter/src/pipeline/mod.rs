//! The per-burst pipeline: ingress (vif → VRF; fabric tunnels → decap) → L2 or L3 lookup →
//! flow hook → nexthop → rewrite → per-destination TX batches. Every packet ends in exactly one
//! place: a vif's TX queue, the host queue, or the dropped list with its reason counted.
//!
//! Deterministic and I/O-free: the caller supplies packets and flushes [`TxBatches`].
//!
//! Choices worth knowing:
//! - Routed traffic is addressed to the vrouter MAC; frames to any other unicast MAC are bridged
//!   through the VRF's bridge table unchanged. Broadcast other than ARP is dropped (`multicast`).
//! - ARP requests and IPv6 neighbour solicitations from pods are answered with the vrouter MAC
//!   when the target has a route in the pod's VRF (gateways are routes to a receive nexthop,
//!   other pods are host routes), never for an address that routes back to the asking vif (its
//!   own: ARP probes, duplicate address detection). On the fabric, ARP for the
//!   fabric IP is answered with the fabric vif's MAC; other fabric ARP goes to the host.
//! - TTL is decremented once per routing vrouter: at the encapsulating side (and on L3 lookups
//!   after VXLAN decap). An MPLS label names the final nexthop directly, so MPLS decap does not
//!   decrement again; the label entry's TTL is the inner TTL after decrement.
//! - TTL expiry and too-big-with-DF produce an ICMP / ICMPv6 error when the packet came from a
//!   local vif (sent back out of it, from the fabric IP / the vrouter's link-local address);
//!   after decap they are counted drops (`ttl_exceeded`, `mtu`). Packets too big without DF are
//!   dropped (`mtu`): the data path does not fragment. A sent ICMP error is still counted, under
//!   `ttl_exceeded_icmp_sent` / `mtu_icmp_sent`.
//! - Outer headers: IPv4, TTL and DF from [`crate::tables::FabricConfig`], UDP checksum zero,
//!   UDP source port from the inner flow hash in 49152..=65535.
//! - MPLS carries IP only: bridge entries toward MPLS tunnels are dropped (`unsupported_tunnel`).

pub mod batch;
pub mod encap;
pub mod reply;

use crate::buf::PacketBuf;
use crate::meta::{self, PacketMeta, L3};
use crate::stats::{CoreStats, DropReason};
use crate::tables::{Nexthop, RouteTarget, Tables, Topology, TunnelEncap, Vif, Vrf, FABRIC_VRF};
use crate::wire::{ethernet, gre, ipv4, ipv6, mpls, udp, vxlan, MacAddr};
use arc_swap::{ArcSwap, Cache};
use arrayvec::ArrayVec;
pub use batch::TxBatches;
use reply::IcmpError;
use std::net::Ipv6Addr;
use std::sync::Arc;

/// Where one packet goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Tx(u16),
    Host,
    Drop(DropReason),
}

/// What the flow stage decides for a routed packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FlowAction {
    /// Go on with this target (the route's, or one the flow stage chose, e.g. after NAT).
    Forward(RouteTarget),
    /// Drop (counted as `flow_drop`).
    Drop,
}

/// The flow-table hook (issue 4): called once per packet between the route / bridge lookup and
/// the nexthop, with the parsed metadata (VRF, 5-tuple, flow hash, header offsets), the frame
/// (writable, for NAT; offsets in `meta` stay valid as long as header lengths do not change)
/// and the lookup result. Runs on the forwarding core: must not block or allocate.
pub trait FlowHook {
    /// Called for each routed packet of a burst right after its route lookup, before any
    /// packet of the burst reaches [`FlowHook::on_lookup`]: a chance to start loading what the
    /// lookup will read (touch its bucket) so the burst's cache misses overlap.
    #[inline(always)]
    fn prefetch(&mut self, _meta: &PacketMeta) {}

    fn on_lookup(&mut self, meta: &PacketMeta, frame: &mut [u8], target: RouteTarget)
        -> FlowAction;
}

/// No flow stage: forward by route.
#[derive(Debug, Default, Clone, Copy)]
pub struct NoFlow;

impl FlowHook for NoFlow {
    #[inline(always)]
    fn on_lookup(&mut self, _: &PacketMeta, _: &mut [u8], target: RouteTarget) -> FlowAction {
        FlowAction::Forward(target)
    }
}

/// One forwarding core's pipeline. Owns its stats and flow hook; shares the tables.
pub struct Pipeline<F: FlowHook = NoFlow> {
    tables: Arc<Tables>,
    topo: Cache<Arc<ArcSwap<Topology>>, Arc<Topology>>,
    stats: Arc<CoreStats>,
    flow: F,
    ip_id: u16,
}

struct Ctx<'a, F> {
    memo: BurstMemo,
    topo: &'a Topology,
    tables: &'a Tables,
    stats: &'a CoreStats,
    flow: &'a mut F,
    ip_id: &'a mut u16,
}

impl<F: FlowHook> Pipeline<F> {
    pub fn new(tables: Arc<Tables>, stats: Arc<CoreStats>, flow: F) -> Self {
        let topo = Cache::new(tables.topology_handle());
        Pipeline {
            tables,
            topo,
            stats,
            flow,
            ip_id: 0,
        }
    }

    pub fn stats(&self) -> &CoreStats {
        &self.stats
    }

    pub fn flow_hook(&mut self) -> &mut F {
        &mut self.flow
    }

    /// Run the packets received on vif `in_vif` (any number; handled in bursts of [`BURST`])
    /// and queue the results in `out`.
    pub fn process<B: PacketBuf>(
        &mut self,
        in_vif: u16,
        pkts: impl IntoIterator<Item = B>,
        out: &mut TxBatches<B>,
    ) {
        let Pipeline {
            tables,
            topo,
            stats,
            flow,
            ip_id,
        } = self;
        // One atomic load per call: pick up a newer topology if one was published.
        let topo: &Topology = topo.load();
        let mut cx = Ctx {
            memo: BurstMemo::default(),
            topo,
            tables,
            stats,
            flow,
            ip_id,
        };
        let mut it = pkts.into_iter();
        let mut burst: ArrayVec<B, BURST> = ArrayVec::new();
        loop {
            burst.extend(it.by_ref().take(BURST));
            if burst.is_empty() {
                break;
            }
            let full = burst.is_full();
            cx.memo = BurstMemo::default();
            cx.burst(in_vif, &mut burst, out);
            if !full {
                break;
            }
        }
    }
}

/// Packets handled together: parsing, route lookups and rewrites each run as a tight loop over
/// the burst, so the lookups' cache misses overlap instead of queueing one behind another.
pub const BURST: usize = 32;

impl<'a, F: FlowHook> Ctx<'a, F> {
    /// One burst: every packet of `bufs` ends up in `out` (which empties `bufs`).
    fn burst<B: PacketBuf>(
        &mut self,
        in_vif: u16,
        bufs: &mut ArrayVec<B, BURST>,
        out: &mut TxBatches<B>,
    ) {
        let topo: &'a Topology = self.topo;
        let stats: &'a CoreStats = self.stats;
        let in_counters = stats.vif(in_vif);
        let rx_bytes: usize = bufs.iter().map(|b| b.frame_len()).sum();
        in_counters.rx_packets.add(bufs.len() as u64);
        in_counters.rx_bytes.add(rx_bytes as u64);
        let Some(vif) = topo.vif(in_vif) else {
            for b in bufs.drain(..) {
                stats.count_drop(DropReason::InvalidVif);
                in_counters.drops.add(1);
                out.dropped.push(b);
            }
            return;
        };
        let mut metas = [PacketMeta::default(); BURST];
        let mut early: [Option<DropReason>; BURST] = [None; BURST];
        // Routed pod packets: their route is looked up in stage 2.
        let mut routed = [false; BURST];
        let mut targets: [Option<RouteTarget>; BURST] = [None; BURST];
        let pod_vrf = if vif.vrf == FABRIC_VRF {
            None
        } else {
            topo.vrf(vif.vrf)
        };
        let vrouter_mac = topo.fabric.vrouter_mac;

        // Stage 1: parse.
        for (i, b) in bufs.iter().enumerate() {
            let d = b.data();
            if let Err(r) = meta::parse_frame_into(d, b.frame_len(), &mut metas[i]) {
                early[i] = Some(r);
                continue;
            }
            let o = b.offload();
            if !o.is_none() {
                if !offload_fits(o, &metas[i], b.frame_len()) {
                    early[i] = Some(DropReason::Offload);
                    continue;
                }
                if let Some(g) = o.gso() {
                    metas[i].mtu_len = gso_mtu_len(d, &metas[i], g.size);
                }
            }
            metas[i].vrf = vif.vrf;
            let m = &metas[i];
            routed[i] = pod_vrf.is_some()
                && matches!(m.l3, L3::Ipv4 | L3::Ipv6)
                && ethernet::Frame::new_unchecked(d).dst() == vrouter_mac
                && !(m.proto == ipv6::next_header::ICMPV6 && reply::ns_target(d, m).is_some());
        }

        // Stage 2: route lookups, back to back.
        if let Some(vrf) = pod_vrf {
            for i in 0..bufs.len() {
                if routed[i] {
                    let m = &metas[i];
                    targets[i] = if m.l3 == L3::Ipv4 {
                        vrf.route_v4(m.dst_v4())
                    } else {
                        vrf.route_v6(m.dst)
                    };
                    self.flow.prefetch(m);
                }
            }
        }

        // Stage 3: nexthop, rewrite, queue.
        // TX counters are added once per run of packets to the same vif (most bursts have one).
        let mut tx_run = TxRun::default();
        for (i, mut b) in bufs.drain(..).enumerate() {
            let v = match (early[i], pod_vrf) {
                (Some(r), _) => Verdict::Drop(r),
                (None, Some(vrf)) if routed[i] => {
                    self.route(vrf, &mut metas[i], &mut b, Some(vif), Some(targets[i]))
                }
                (None, _) if vif.vrf == FABRIC_VRF => self.fabric_ingress(vif, &metas[i], &mut b),
                // A pod vif (its VRF may be gone: pod_ingress drops as invalid_vrf).
                (None, _) => self.pod_ingress(vif, &mut metas[i], &mut b),
            };
            match v {
                Verdict::Tx(vif) => {
                    tx_run.add(stats, vif, b.frame_len() as u64);
                    out.push(vif, b);
                }
                Verdict::Host => {
                    stats.to_host.add(1);
                    out.host.push(b);
                }
                Verdict::Drop(r) => {
                    stats.count_drop(r);
                    in_counters.drops.add(1);
                    out.dropped.push(b);
                }
            }
        }
        tx_run.flush(stats);
    }

    /// The VRF, borrowed from the burst's topology snapshot (no reference count touched).
    #[inline(always)]
    fn vrf(&self, id: u16) -> Result<&'a Vrf, DropReason> {
        let topo: &'a Topology = self.topo;
        topo.vrf(id).map(|v| &**v).ok_or(DropReason::InvalidVrf)
    }

    /// Whether the vrouter answers ARP / ND for `dst` in `vrf`: it has a route that does not
    /// discard.
    /// Never for an address that routes back to the asking vif itself: that is the asker's own
    /// address (duplicate address detection, ARP probes), and answering would make it give the
    /// address up.
    fn proxies(&self, target: Option<RouteTarget>, asker: u16) -> bool {
        match target.and_then(|t| self.tables.nexthops.get(t.nexthop)) {
            None | Some(Nexthop::Discard) => false,
            Some(Nexthop::Encap { vif, .. }) => vif != asker,
            Some(_) => true,
        }
    }

    // ---------------- local (pod) ingress ----------------

    fn pod_ingress<B: PacketBuf>(&mut self, vif: &Vif, m: &mut PacketMeta, b: &mut B) -> Verdict {
        let vrf = match self.vrf(vif.vrf) {
            Ok(v) => v,
            Err(r) => return Verdict::Drop(r),
        };
        let dmac = ethernet::Frame::new_unchecked(b.data()).dst();
        let vrouter_mac = self.topo.fabric.vrouter_mac;
        if m.l3 == L3::Arp {
            return self.pod_arp(vif, vrf, m, b);
        }
        if m.l3 == L3::Ipv6 {
            if let Some(t) = reply::ns_target(b.data(), m) {
                let src = Ipv6Addr::from(m.src);
                if t != src && self.proxies(vrf.route_v6(u128::from(t)), vif.index) {
                    return self.replied(reply::na_reply(b, m, t, vrouter_mac), vif);
                }
                return Verdict::Drop(DropReason::ArpNotForUs);
            }
        }
        if dmac == vrouter_mac {
            return self.route(vrf, m, b, Some(vif), None);
        }
        if dmac.is_multicast() {
            return Verdict::Drop(DropReason::Multicast);
        }
        self.bridge(vrf, m, dmac, b)
    }

    fn pod_arp<B: PacketBuf>(
        &mut self,
        vif: &Vif,
        vrf: &Vrf,
        m: &PacketMeta,
        b: &mut B,
    ) -> Verdict {
        let l3 = usize::from(m.l3_off);
        let a = crate::wire::arp::Packet::new_unchecked(&b.data()[l3..]);
        let (op, sip, tip) = (a.operation(), a.sender_ip(), a.target_ip());
        if op != crate::wire::arp::OP_REQUEST
            || tip == sip
            || !self.proxies(vrf.route_v4(u32::from(tip)), vif.index)
        {
            return Verdict::Drop(DropReason::ArpNotForUs);
        }
        self.replied(
            reply::arp_reply(b, l3, tip, self.topo.fabric.vrouter_mac),
            vif,
        )
    }

    /// An answer written into the asking packet goes back out of the vif it came from.
    fn replied(&self, answer: Result<(), DropReason>, vif: &Vif) -> Verdict {
        match answer {
            Ok(()) => {
                self.stats.replies.add(1);
                Verdict::Tx(vif.index)
            }
            Err(r) => Verdict::Drop(r),
        }
    }

    // ---------------- fabric ingress ----------------

    fn fabric_ingress<B: PacketBuf>(&mut self, vif: &Vif, m: &PacketMeta, b: &mut B) -> Verdict {
        let fabric_ip = self.topo.fabric.fabric_ip;
        let l3 = usize::from(m.l3_off);
        match m.l3 {
            L3::Arp => {
                let a = crate::wire::arp::Packet::new_unchecked(&b.data()[l3..]);
                if a.operation() == crate::wire::arp::OP_REQUEST
                    && a.target_ip() == fabric_ip
                    && !fabric_ip.is_unspecified()
                {
                    return self.replied(reply::arp_reply(b, l3, fabric_ip, vif.mac), vif);
                }
                Verdict::Host
            }
            L3::Ipv4 if m.dst_v4() == u32::from(fabric_ip) => {
                let tunnel = matches!(
                    (m.proto, m.dport),
                    (ipv4::proto::UDP, udp::PORT_VXLAN | udp::PORT_MPLS_UDP)
                        | (ipv4::proto::GRE, _)
                );
                if m.fragment {
                    // A later fragment has no port to tell; a tunnel packet must not be fragmented.
                    if tunnel || m.proto == ipv4::proto::UDP {
                        return Verdict::Drop(DropReason::FragmentedTunnel);
                    }
                    return Verdict::Host;
                }
                let l4 = usize::from(m.l4_off);
                // The tunnel packet ends where the outer IP says: drop any Ethernet padding.
                let end = usize::from(m.l3_off) + usize::from(m.l3_len);
                if b.trim(b.len().saturating_sub(end)).is_err() {
                    return Verdict::Drop(DropReason::Truncated);
                }
                match (m.proto, m.dport) {
                    (ipv4::proto::UDP, udp::PORT_VXLAN) => {
                        self.decap_vxlan(l4 + udp::HEADER_LEN, b)
                    }
                    (ipv4::proto::UDP, udp::PORT_MPLS_UDP) => {
                        self.decap_mpls(l4 + udp::HEADER_LEN, b)
                    }
                    (ipv4::proto::GRE, _) => {
                        let g = match gre::Packet::new_checked(&b.data()[l4..]) {
                            Ok(g) => g,
                            Err(e) => return Verdict::Drop(e.into()),
                        };
                        if g.protocol() != ethernet::ethertype::MPLS {
                            return Verdict::Drop(DropReason::UnsupportedTunnel);
                        }
                        let off = l4 + g.header_len();
                        self.decap_mpls(off, b)
                    }
                    _ => Verdict::Host,
                }
            }
            _ => Verdict::Host,
        }
    }

    fn decap_vxlan<B: PacketBuf>(&mut self, off: usize, b: &mut B) -> Verdict {
        let vni = match vxlan::Packet::new_checked(&b.data()[off..]) {
            Ok(v) => v.vni(),
            Err(e) => return Verdict::Drop(e.into()),
        };
        let Some(vrf_id) = self.tables.vnis.get(vni) else {
            return Verdict::Drop(DropReason::InvalidVni);
        };
        let vrf = match self.vrf(vrf_id) {
            Ok(v) => v,
            Err(r) => return Verdict::Drop(r),
        };
        if b.adj(off + vxlan::HEADER_LEN).is_err() {
            return Verdict::Drop(DropReason::Truncated);
        }
        if shift_offload(b, off + vxlan::HEADER_LEN).is_err() {
            return Verdict::Drop(DropReason::Offload);
        }
        let mut m = match meta::parse_ethernet(b.data()) {
            Ok(m) => m,
            Err(r) => return Verdict::Drop(r),
        };
        m.vrf = vrf_id;
        let dmac = ethernet::Frame::new_unchecked(b.data()).dst();
        if dmac == self.topo.fabric.vrouter_mac {
            return self.route(vrf, &mut m, b, None, None);
        }
        if dmac.is_multicast() {
            return Verdict::Drop(DropReason::Multicast);
        }
        self.bridge(vrf, &m, dmac, b)
    }

    fn decap_mpls<B: PacketBuf>(&mut self, off: usize, b: &mut B) -> Verdict {
        let label = match mpls::Entry::new_checked(&b.data()[off..]) {
            Ok(e) if e.bottom_of_stack() => e.label(),
            Ok(_) => return Verdict::Drop(DropReason::InvalidLabel),
            Err(e) => return Verdict::Drop(e.into()),
        };
        let Some(nh_id) = self.tables.labels.get(label) else {
            return Verdict::Drop(DropReason::InvalidLabel);
        };
        let ip_off = off + mpls::ENTRY_LEN;
        let m = match meta::parse_ip(b.data(), ip_off) {
            Ok(m) => m,
            Err(r) => return Verdict::Drop(r),
        };
        let nh = match self.resolve(nh_id, &m) {
            Ok(nh) => nh,
            Err(r) => return Verdict::Drop(r),
        };
        match nh {
            Nexthop::Encap { vif, dmac } => {
                let Some(out) = self.topo.vif(vif) else {
                    return Verdict::Drop(DropReason::InvalidVif);
                };
                if m.mtu_len > out.mtu {
                    return Verdict::Drop(DropReason::Mtu);
                }
                // Replace everything up to the inner IP packet with a fresh Ethernet header.
                if b.adj(ip_off - ethernet::HEADER_LEN).is_err() {
                    return Verdict::Drop(DropReason::Truncated);
                }
                if shift_offload(b, ip_off - ethernet::HEADER_LEN).is_err() {
                    return Verdict::Drop(DropReason::Offload);
                }
                let mut e = ethernet::Frame::new_unchecked(b.data_mut());
                e.set_dst(dmac);
                e.set_src(self.topo.fabric.vrouter_mac);
                e.set_ethertype(m.ethertype);
                Verdict::Tx(vif)
            }
            Nexthop::Receive => Verdict::Host,
            Nexthop::Discard => Verdict::Drop(DropReason::DiscardNexthop),
            Nexthop::Tunnel { .. } | Nexthop::Ecmp { .. } => {
                Verdict::Drop(DropReason::InvalidTunnel)
            }
        }
    }

    // ---------------- lookups ----------------

    /// Whether the nexthop just resolved was the target's own, not an ECMP member picked by
    /// hash: only then does the target id name the rewrite, so it may be memoised under it.
    #[inline(always)]
    fn resolved_directly(&self) -> bool {
        !matches!(self.memo.nh, Some((_, Nexthop::Ecmp { .. })))
    }

    /// The nexthop for `id`, with ECMP resolved to one member by `m`'s flow hash.
    #[inline(always)]
    fn resolve(&mut self, id: u32, m: &PacketMeta) -> Result<Nexthop, DropReason> {
        let nh = match self.memo.nh {
            Some((memo_id, nh)) if memo_id == id => nh,
            _ => {
                let nh = self
                    .tables
                    .nexthops
                    .get(id)
                    .ok_or(DropReason::InvalidNexthop)?;
                self.memo.nh = Some((id, nh));
                nh
            }
        };
        if let Nexthop::Ecmp { members, count } = nh {
            let m = Nexthop::ecmp_pick(&members, count, m.flow_hash())
                .ok_or(DropReason::EcmpNoMember)?;
            return match self.tables.nexthops.get(u32::from(m)) {
                Some(nh @ (Nexthop::Encap { .. } | Nexthop::Tunnel { .. })) => Ok(nh),
                _ => Err(DropReason::EcmpNoMember),
            };
        }
        Ok(nh)
    }

    fn bridge<B: PacketBuf>(
        &mut self,
        vrf: &Vrf,
        m: &PacketMeta,
        dmac: MacAddr,
        b: &mut B,
    ) -> Verdict {
        let Some(t) = vrf.bridge.get(dmac) else {
            return Verdict::Drop(DropReason::BridgeMiss);
        };
        let t = match self.flow.on_lookup(m, b.data_mut(), t) {
            FlowAction::Forward(t) => t,
            FlowAction::Drop => return Verdict::Drop(DropReason::FlowDrop),
        };
        let nh = match self.resolve(t.nexthop, m) {
            Ok(nh) => nh,
            Err(r) => return Verdict::Drop(r),
        };
        match nh {
            Nexthop::Encap { vif, .. } => match self.topo.vif(vif) {
                Some(out) if usize::from(out.mtu) + ethernet::HEADER_LEN + 4 >= wire_len(b, m) => {
                    Verdict::Tx(vif)
                }
                Some(_) => Verdict::Drop(DropReason::Mtu),
                None => Verdict::Drop(DropReason::InvalidVif),
            },
            Nexthop::Tunnel {
                encap: TunnelEncap::Vxlan,
                vif,
                sip,
                dip,
                dmac,
            } => {
                let Some(vni) = t.label else {
                    return Verdict::Drop(DropReason::InvalidVni);
                };
                let o = encap::Outer {
                    encap: TunnelEncap::Vxlan,
                    sip,
                    dip,
                    dmac,
                    label: vni,
                    mpls_ttl: 0,
                };
                self.tunnel(vif, &o, m, b, None, None)
            }
            Nexthop::Tunnel { .. } => Verdict::Drop(DropReason::UnsupportedTunnel),
            Nexthop::Receive => Verdict::Host,
            Nexthop::Discard => Verdict::Drop(DropReason::DiscardNexthop),
            Nexthop::Ecmp { .. } => Verdict::Drop(DropReason::EcmpNoMember),
        }
    }

    /// L3: route lookup in `vrf`, flow hook, nexthop, rewrite. `local` is the ingress vif when
    /// the packet came from a pod (ICMP errors go back to it). Inlined into the burst loop for
    /// its common ending (the memoised local vif); everything else is in [`Ctx::route_nexthop`].
    #[inline(always)]
    fn route<B: PacketBuf>(
        &mut self,
        vrf: &Vrf,
        m: &mut PacketMeta,
        b: &mut B,
        local: Option<&Vif>,
        looked_up: Option<Option<RouteTarget>>,
    ) -> Verdict {
        let target = match (looked_up, m.l3) {
            (Some(t), _) => t,
            (None, L3::Ipv4) => vrf.route_v4(m.dst_v4()),
            (None, L3::Ipv6) => vrf.route_v6(m.dst),
            _ => return Verdict::Drop(DropReason::UnsupportedEthertype),
        };
        let Some(target) = target else {
            return Verdict::Drop(DropReason::NoRoute);
        };
        let t = match self.flow.on_lookup(m, b.data_mut(), target) {
            FlowAction::Forward(t) => t,
            FlowAction::Drop => return Verdict::Drop(DropReason::FlowDrop),
        };
        if let Some(e) = self.memo.encap {
            // Everything the slow path below checks, in the same order of outcomes.
            if e.nexthop == t.nexthop && m.ttl > 1 && m.vlan.is_none() && m.mtu_len <= e.mtu {
                if let Err(r) = trim_padding(b, m) {
                    return Verdict::Drop(r);
                }
                let d = b.data_mut();
                decrement_ttl_in(d, m);
                if let Some(eth) = d.first_chunk_mut::<12>() {
                    *eth = e.macs;
                }
                return Verdict::Tx(e.vif);
            }
        }
        if let (Some(e), Some(label)) = (&self.memo.tunnel, t.label) {
            let encap = e.tpl.encap();
            if e.nexthop == t.nexthop
                && m.ttl > 1
                && m.vlan.is_none()
                && encap::outer_l3_len(encap, m.mtu_len) <= usize::from(e.mtu)
            {
                let (vif, vrouter_mac) = (e.vif, self.topo.fabric.vrouter_mac);
                if let Err(r) = trim_padding(b, m) {
                    return Verdict::Drop(r);
                }
                let ttl = match tunnel_payload(b, m, encap, vrouter_mac) {
                    Ok(ttl) => ttl,
                    Err(r) => return Verdict::Drop(r),
                };
                *self.ip_id = self.ip_id.wrapping_add(1);
                return match e.tpl.push(b, label, ttl, m.flow_hash(), *self.ip_id) {
                    Ok(()) => Verdict::Tx(vif),
                    Err(r) => Verdict::Drop(r),
                };
            }
        }
        self.route_nexthop(t, m, b, local)
    }

    /// The rest of [`Ctx::route`]: resolve the target's nexthop and rewrite for it.
    #[inline(never)]
    fn route_nexthop<B: PacketBuf>(
        &mut self,
        t: RouteTarget,
        m: &mut PacketMeta,
        b: &mut B,
        local: Option<&Vif>,
    ) -> Verdict {
        let nh = match self.resolve(t.nexthop, m) {
            Ok(nh) => nh,
            Err(r) => return Verdict::Drop(r),
        };
        let out = match nh {
            Nexthop::Receive => return Verdict::Host,
            Nexthop::Discard => return Verdict::Drop(DropReason::DiscardNexthop),
            Nexthop::Ecmp { .. } => return Verdict::Drop(DropReason::EcmpNoMember),
            Nexthop::Encap { vif, .. } | Nexthop::Tunnel { vif, .. } => match self.topo.vif(vif) {
                Some(v) => *v,
                None => return Verdict::Drop(DropReason::InvalidVif),
            },
        };
        if m.ttl <= 1 {
            return self.icmp_error(
                b,
                m,
                local,
                IcmpError::TimeExceeded,
                DropReason::TtlExceeded,
            );
        }
        // Strip an 802.1Q tag: routed frames leave untagged.
        if m.vlan.is_some() {
            b.data_mut().copy_within(0..12, ethernet::VLAN_TAG_LEN);
            if b.adj(ethernet::VLAN_TAG_LEN).is_err() {
                return Verdict::Drop(DropReason::Truncated);
            }
            if shift_offload(b, ethernet::VLAN_TAG_LEN).is_err() {
                return Verdict::Drop(DropReason::Offload);
            }
            ethernet::Frame::new_unchecked(b.data_mut()).set_ethertype(m.ethertype);
            m.l3_off -= ethernet::VLAN_TAG_LEN as u16;
            m.l4_off -= ethernet::VLAN_TAG_LEN as u16;
            m.vlan = None;
        }
        if let Err(r) = trim_padding(b, m) {
            return Verdict::Drop(r);
        }
        let vrouter_mac = self.topo.fabric.vrouter_mac;
        match nh {
            Nexthop::Encap { vif, dmac } => {
                if self.resolved_directly() {
                    let mut macs = [0u8; 12];
                    macs[..6].copy_from_slice(&dmac.0);
                    macs[6..].copy_from_slice(&vrouter_mac.0);
                    self.memo.encap = Some(EncapMemo {
                        nexthop: t.nexthop,
                        vif,
                        mtu: out.mtu,
                        macs,
                    });
                }
                if m.mtu_len > out.mtu {
                    return self.too_big(b, m, local, out.mtu);
                }
                decrement_ttl(b, m);
                let mut e = ethernet::Frame::new_unchecked(b.data_mut());
                e.set_dst(dmac);
                e.set_src(vrouter_mac);
                Verdict::Tx(vif)
            }
            Nexthop::Tunnel {
                encap,
                vif,
                sip,
                dip,
                dmac,
            } => {
                let Some(label) = t.label else {
                    return Verdict::Drop(if encap == TunnelEncap::Vxlan {
                        DropReason::InvalidVni
                    } else {
                        DropReason::InvalidLabel
                    });
                };
                let outer_l3 = encap::outer_l3_len(encap, m.mtu_len);
                if outer_l3 > usize::from(out.mtu) {
                    let inner_mtu =
                        usize::from(out.mtu).saturating_sub(outer_l3 - usize::from(m.mtu_len));
                    return self.too_big(b, m, local, inner_mtu as u16);
                }
                let ttl = match tunnel_payload(b, m, encap, vrouter_mac) {
                    Ok(ttl) => ttl,
                    Err(r) => return Verdict::Drop(r),
                };
                let o = encap::Outer {
                    encap,
                    sip,
                    dip,
                    dmac,
                    label,
                    mpls_ttl: ttl,
                };
                let memo_for = self.resolved_directly().then_some(t.nexthop);
                self.tunnel(vif, &o, m, b, Some(out), memo_for)
            }
            _ => Verdict::Drop(DropReason::InvalidNexthop),
        }
    }

    fn tunnel<B: PacketBuf>(
        &mut self,
        vif: u16,
        o: &encap::Outer,
        m: &PacketMeta,
        b: &mut B,
        out: Option<Vif>,
        memo_for: Option<u32>,
    ) -> Verdict {
        let out = match out.or_else(|| self.topo.vif(vif).copied()) {
            Some(v) if v.vrf == FABRIC_VRF => v,
            Some(_) => return Verdict::Drop(DropReason::InvalidTunnel),
            None => return Verdict::Drop(DropReason::InvalidVif),
        };
        if wire_len(b, m) + encap::overhead(o.encap) - ethernet::HEADER_LEN > usize::from(out.mtu) {
            return Verdict::Drop(DropReason::Mtu);
        }
        *self.ip_id = self.ip_id.wrapping_add(1);
        let tpl = match &self.memo.tpl {
            Some((v, memo_o, t)) if *v == vif && memo_o.same_tunnel(o) => t,
            _ => {
                let t = encap::Template::new(o, &out, &self.topo.fabric);
                &self.memo.tpl.insert((vif, *o, t)).2
            }
        };
        if let Some(nexthop) = memo_for {
            self.memo.tunnel = Some(TunnelMemo {
                nexthop,
                vif,
                mtu: out.mtu,
                tpl: *tpl,
            });
        }
        match tpl.push(b, o.label, o.mpls_ttl, m.flow_hash(), *self.ip_id) {
            Ok(()) => Verdict::Tx(vif),
            Err(r) => Verdict::Drop(r),
        }
    }

    fn too_big<B: PacketBuf>(
        &mut self,
        b: &mut B,
        m: &PacketMeta,
        local: Option<&Vif>,
        mtu: u16,
    ) -> Verdict {
        if !m.dont_frag {
            // No fragmentation in the data path.
            return Verdict::Drop(DropReason::Mtu);
        }
        self.icmp_error(b, m, local, IcmpError::TooBig(mtu), DropReason::Mtu)
    }

    fn icmp_error<B: PacketBuf>(
        &mut self,
        b: &mut B,
        m: &PacketMeta,
        local: Option<&Vif>,
        kind: IcmpError,
        otherwise: DropReason,
    ) -> Verdict {
        // Never answer an ICMP error with one (RFC 1812 4.3.2.7), and only toward a local vif.
        let Some(vif) = local else {
            return Verdict::Drop(otherwise);
        };
        if is_icmp_error(b.data(), m) {
            return Verdict::Drop(otherwise);
        }
        let f = &self.topo.fabric;
        let from6 = reply::link_local(f.vrouter_mac);
        match reply::icmp_error(b, m, kind, f.vrouter_mac, f.fabric_ip, from6) {
            Ok(()) => {
                // Counted as the drop it replaces, under the "ICMP sent" variant.
                self.stats.count_drop(match otherwise {
                    DropReason::TtlExceeded => DropReason::TtlExceededIcmpSent,
                    _ => DropReason::MtuIcmpSent,
                });
                Verdict::Tx(vif.index)
            }
            Err(r) => Verdict::Drop(r),
        }
    }
}

fn is_icmp_error(data: &[u8], m: &PacketMeta) -> bool {
    let t = data.get(usize::from(m.l4_off)).copied().unwrap_or(0);
    match m.proto {
        ipv4::proto::ICMP => !matches!(
            t,
            crate::wire::icmp::v4::ECHO_REQUEST | crate::wire::icmp::v4::ECHO_REPLY
        ),
        ipv4::proto::ICMPV6 => t < 128,
        _ => false,
    }
}

/// What one burst remembers between its packets. Valid for one burst only: the next burst may
/// see a newer version of the tables, so it starts from `BurstMemo::default()`.
#[derive(Default)]
struct BurstMemo {
    /// The last nexthop read in this burst: packets of a burst mostly share nexthops, and a
    /// burst may see one consistent version of a nexthop.
    nh: Option<(u32, Nexthop)>,
    /// The outer-header template of the last tunnel used in this burst.
    tpl: Option<(u16, encap::Outer, encap::Template)>,
    /// The last route target that led straight (not through ECMP) to a local vif, with
    /// everything its rewrite needs: the common case of a burst to one pod costs one compare.
    encap: Option<EncapMemo>,
    /// The same for the last route target that led straight to a tunnel.
    tunnel: Option<TunnelMemo>,
}

/// See `BurstMemo::encap`.
#[derive(Clone, Copy)]
struct EncapMemo {
    nexthop: u32,
    vif: u16,
    mtu: u16,
    /// Destination then source MAC, as they go on the wire.
    macs: [u8; 12],
}

/// See `BurstMemo::tunnel`.
struct TunnelMemo {
    nexthop: u32,
    /// The fabric vif and its MTU.
    vif: u16,
    mtu: u16,
    tpl: encap::Template,
}

/// Packets and bytes sent to one vif, not yet added to its counters.
#[derive(Default)]
struct TxRun {
    vif: u16,
    packets: u64,
    bytes: u64,
}

impl TxRun {
    #[inline(always)]
    fn add(&mut self, stats: &CoreStats, vif: u16, bytes: u64) {
        if vif != self.vif {
            self.flush(stats);
            self.vif = vif;
        }
        self.packets += 1;
        self.bytes += bytes;
    }

    #[inline(always)]
    fn flush(&mut self, stats: &CoreStats) {
        if self.packets != 0 {
            let c = stats.vif(self.vif);
            c.tx_packets.add(self.packets);
            c.tx_bytes.add(self.bytes);
            self.packets = 0;
            self.bytes = 0;
        }
    }
}

/// Drop Ethernet padding behind the IP packet: it must not be carried into a tunnel (nor out
/// of a local vif as part of the packet).
#[inline(always)]
fn trim_padding<B: PacketBuf>(b: &mut B, m: &PacketMeta) -> Result<(), DropReason> {
    let end = usize::from(m.l3_off) + usize::from(m.l3_len);
    let len = b.frame_len();
    if len > end && b.trim(len - end).is_err() {
        return Err(DropReason::Truncated);
    }
    Ok(())
}

/// Whether a packet's offload state fits the packet: a partial checksum field inside its IP
/// packet (what lies beyond is padding, trimmed on the way), GSO only for IP.
fn offload_fits(o: crate::offload::Offload, m: &PacketMeta, frame_len: usize) -> bool {
    let ip = matches!(m.l3, L3::Ipv4 | L3::Ipv6);
    let end = if ip {
        usize::from(m.l3_off) + usize::from(m.l3_len)
    } else {
        frame_len
    };
    let csum_ok = match o.csum() {
        crate::offload::Csum::Partial { start, offset } => {
            usize::from(start) + usize::from(offset) + 2 <= end.min(frame_len)
        }
        _ => true,
    };
    csum_ok && (o.gso().is_none() || ip)
}

/// The L3 length of the largest segment a GSO packet is cut into (its headers, up to the end
/// of the L4 header, and `size` payload bytes): what has to fit the egress MTU. A packet whose
/// headers do not match is left at its own length; cutting it fails later, counted.
fn gso_mtu_len(d: &[u8], m: &PacketMeta, size: u16) -> u16 {
    let l4 = usize::from(m.l4_off);
    let l4_len = match m.proto {
        ipv4::proto::TCP => d.get(l4 + 12).map_or(0, |b| usize::from(b >> 4) * 4),
        ipv4::proto::UDP => udp::HEADER_LEN,
        _ => return m.l3_len,
    };
    let seg = (l4 - usize::from(m.l3_off)) + l4_len + usize::from(size);
    u16::try_from(seg).map_or(m.l3_len, |s| s.min(m.l3_len))
}

/// The longest frame the packet puts on the wire: itself, or for a GSO packet its largest
/// segment.
#[inline(always)]
fn wire_len<B: PacketBuf>(b: &B, m: &PacketMeta) -> usize {
    if m.mtu_len < m.l3_len && matches!(m.l3, L3::Ipv4 | L3::Ipv6) {
        usize::from(m.l3_off) + usize::from(m.mtu_len)
    } else {
        b.frame_len()
    }
}

/// Tells the packet's offload state that its first `removed` bytes were taken off.
#[inline(always)]
fn shift_offload<B: PacketBuf>(b: &mut B, removed: usize) -> Result<(), ()> {
    let o = b.offload();
    if o.is_none() {
        return Ok(());
    }
    let removed = u16::try_from(removed).map_err(|_| ())?;
    b.set_offload(o.decapsulated(removed).ok_or(())?);
    Ok(())
}

/// Turn a routed frame into what a tunnel carries: TTL decremented, then the inner Ethernet
/// header addressed vrouter to vrouter (VXLAN) or stripped down to the IP packet (MPLS).
/// Returns the new TTL (the MPLS entry's).
#[inline(always)]
fn tunnel_payload<B: PacketBuf>(
    b: &mut B,
    m: &PacketMeta,
    encap: TunnelEncap,
    vrouter_mac: MacAddr,
) -> Result<u8, DropReason> {
    let ttl = decrement_ttl(b, m);
    if encap == TunnelEncap::Vxlan {
        let mut e = ethernet::Frame::new_unchecked(b.data_mut());
        e.set_dst(vrouter_mac);
        e.set_src(vrouter_mac);
    } else {
        if b.adj(usize::from(m.l3_off)).is_err() {
            return Err(DropReason::Truncated);
        }
        shift_offload(b, usize::from(m.l3_off)).map_err(|_| DropReason::Offload)?;
    }
    Ok(ttl)
}

/// Decrement the TTL / hop limit of the IP packet at `m.l3_off`; returns the new value.
#[inline(always)]
fn decrement_ttl<B: PacketBuf>(b: &mut B, m: &PacketMeta) -> u8 {
    decrement_ttl_in(b.data_mut(), m)
}

/// [`decrement_ttl`] on the frame bytes. The parse checked that the IP header is there; the
/// fixed part is taken as an array so the field updates need no further bounds checks.
#[inline(always)]
fn decrement_ttl_in(d: &mut [u8], m: &PacketMeta) -> u8 {
    let ip = d.get_mut(usize::from(m.l3_off)..).unwrap_or_default();
    if m.l3 == L3::Ipv4 {
        match ip.first_chunk_mut::<{ ipv4::MIN_HEADER_LEN }>() {
            Some(h) => ipv4::Packet::new_unchecked(h).decrement_ttl(),
            None => m.ttl,
        }
    } else {
        let t = m.ttl.saturating_sub(1);
        if let Some(h) = ip.first_chunk_mut::<{ ipv6::HEADER_LEN }>() {
            ipv6::Packet::new_unchecked(h).set_hop_limit(t);
        }
        t
    }
}
