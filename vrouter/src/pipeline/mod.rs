//! The per-burst pipeline: ingress (vif → VRF; fabric tunnels → decap) → L2 or L3 lookup →
//! flow hook → nexthop → rewrite → per-destination TX batches. Every packet ends in exactly one
//! place: a vif's TX queue, the host queue, or the dropped list with its reason counted.
//!
//! Deterministic and I/O-free: the caller supplies packets and flushes [`TxBatches`].
//!
//! Where things are: [`Pipeline::process`] cuts the input into bursts; `burst` runs the stages
//! over one burst; `ingress` decides what a packet from a pod or from the fabric is (ARP / ND
//! answered, tunnels decapsulated); `route` turns a lookup into a nexthop and a rewrite;
//! `rewrite` holds the header edits they share, `memo` what a burst remembers, and [`encap`] /
//! [`reply`] write the headers vrouterd makes.
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
//! - DHCP from a pod (broadcast, or to its gateway) is answered by [`dhcp`] from the vif's lease
//!   and sent back out of the vif; a vif without one hands it to the agent (pkt0: the caller
//!   drops it as `dhcp_no_address` when no agent is connected). ARP for a vif's DHCP gateway
//!   is always answered.
//! - Packets for the agent ([`Verdict::Agent`]) leave in [`TxBatches::agent`] with a [`Trap`]
//!   each; the caller rate-limits, queues and counts them (none is counted here).

pub mod batch;
pub mod dhcp;
pub mod encap;
pub mod reply;
pub mod trace;

mod burst;
mod ingress;
mod memo;
mod rewrite;
mod route;

use crate::buf::PacketBuf;
use crate::meta::PacketMeta;
use crate::nat::Translation;
use crate::stats::{CoreStats, DropReason};
use crate::tables::{RouteTarget, Tables, Topology};
use arc_swap::{ArcSwap, Cache};
use arrayvec::ArrayVec;
pub use batch::TxBatches;
use memo::BurstMemo;
use std::sync::Arc;

/// Where one packet goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Tx(u16),
    Host,
    Drop(DropReason),
    /// For the agent (pkt0), trapped for this reason.
    Agent(TrapReason),
}

/// Why a packet is handed to the agent (the numbers are pkt0's header `reason`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum TrapReason {
    /// The first packet of a flow a vif policy gives the agent to decide.
    NewFlow = 1,
    /// DHCP from a pod vif without an address.
    Dhcp = 2,
    /// A gratuitous ARP from a pod (sender and target address the same): a guest announcing
    /// itself, e.g. after a live migration landed it on this vif. The agent moves its routes.
    Garp = 3,
}

/// What the agent is told about a trapped packet besides the packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Trap {
    pub reason: TrapReason,
    /// The vif it came in by.
    pub vif: u16,
    pub vrf: u16,
}

/// What the flow stage decides for a routed packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FlowAction {
    /// Go on with this target (the route's, or one the flow stage chose, e.g. after NAT).
    Forward(RouteTarget),
    /// Drop (counted as `flow_drop`).
    Drop,
    /// Go on with this target after writing this translation into the packet (a NAT flow).
    Nat(RouteTarget, Translation),
    /// Go on with this target after writing both translations (a link-local service's flow:
    /// source and destination).
    Nat2(RouteTarget, Translation, Translation),
    /// Drop, counted under this reason (a flow NAT cannot set up).
    Refused(DropReason),
    /// Hand the packet to the agent: a vif policy leaves the new flow to it.
    Agent,
}

/// The flow-table hook: called once per packet between the route / bridge lookup and
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

    /// Called for a packet its VRF has no route for, before it is dropped: a target to go on
    /// with instead, if the flow stage will choose the real one (a service VIP, which need
    /// not be routed: its flows, and ICMP errors about their replies, go to a backend's route).
    #[inline(always)]
    fn unrouted(&mut self, _meta: &PacketMeta, _frame: &[u8]) -> Option<RouteTarget> {
        None
    }

    /// Called for plain IPv4 packets from the fabric that are not tunnels to the vrouter:
    /// replies to source-NAT flows and packets to floating IPs come this way.
    #[inline(always)]
    fn on_fabric(&mut self, _meta: &PacketMeta, _frame: &[u8]) -> Inbound {
        Inbound::Host
    }
}

/// What the flow stage says of a plain IPv4 packet from the fabric.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Inbound {
    /// Not translated: the host's, as before.
    Host,
    /// Write the translation and route the packet in this VRF.
    Translate(u16, Translation),
    /// A reply of a flow with both ends translated (a link-local service's): write the
    /// first (its destination, routed on in this VRF) and the second (its source).
    Translate2(u16, Translation, Translation),
    /// Drop, counted under this reason (a floating IP's pod refuses it).
    Drop(DropReason),
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
    tracer: Option<Arc<trace::Tracer>>,
    /// The headers of a traced burst's packets as they came in.
    traced_in: Box<trace::Inputs>,
}

/// What the stages of one `process` call share: the tables as of its start, the core's stats
/// and flow hook, and what the current burst has memoised.
struct Ctx<'a, F> {
    memo: BurstMemo,
    topo: &'a Topology,
    tables: &'a Tables,
    stats: &'a CoreStats,
    flow: &'a mut F,
    ip_id: &'a mut u16,
    tracer: Option<&'a trace::Tracer>,
    traced_in: &'a mut trace::Inputs,
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
            tracer: None,
            traced_in: trace::Inputs::new(),
        }
    }

    /// Lets `tracer` trace packets this pipeline handles (see [`trace`]).
    pub fn set_tracer(&mut self, tracer: Arc<trace::Tracer>) {
        self.tracer = Some(tracer);
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
            tracer,
            traced_in,
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
            tracer: tracer.as_deref(),
            traced_in,
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
