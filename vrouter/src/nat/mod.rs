//! Network address translation on the flow table (issue 22): source NAT, floating IPs and
//! service VIPs.
//!
//! - [`pool`]: a pool's (address, port) pairs, taken by forwarding cores a block at a time.
//! - [`pools`]: the registry that lets whoever removes a NAT flow give its pair back.
//! - [`config`]: the control-side store of pools, of which VRFs leave through them and of
//!   floating IPs, read by the flow stage through an RCU snapshot.
//! - [`rewrite`]: a translation written into a packet, checksums updated incrementally.
//!
//! # How a source-NAT flow works
//! A VRF attached to a pool whose addresses live in another VRF (typically the fabric, VRF 0)
//! has its flows toward a vif of that VRF translated. The flow stage sets such a flow up
//! inline, on the forwarding core, like any other: it takes a pair from the pool and installs
//! the forward entry under the pod's tuple and the reverse entry under the reply's tuple as
//! the far end sends it (VRF 0, far end → pool address and port), both marked NAT. A hit on the
//! forward entry rewrites the source to the pair it reads from its partner's key; a reply
//! arriving on the fabric finds the reverse entry and is rewritten back to the pod's address
//! and port (again read from its partner) and routed in the pod's VRF. No second table, no
//! rule lookup per packet. Removing the flow (aging, eviction, flush) gives the pair back.
//!
//! ICMP errors about a translated packet (their quote keyed back to the flow) are translated
//! back the same way. Traffic leaving through a tunnel stays in its VRF's overlay: untranslated.
//!
//! # Floating IPs
//! An address of the fabric VRF is a pod's, 1:1: the pod's flows toward the fabric leave from
//! it (ports kept, no pair taken, before any pool), and a packet from the fabric to it sets a
//! flow up the other way round, from the fabric path: its entry rewrites the destination to the
//! pod, the pod's replies' entry their source. Each entry says which end it rewrites.
//!
//! A pod reaching a floating IP of a pod of the node (its own VRF's or another's) from a
//! flow that would leave translated (through a pool or its own floating IP) is a hairpin:
//! set up inline with both ends translated, as a link-local service's flow is, its forward
//! entry sending the packet to the floating IP's pod from the client's outside pair, the
//! reverse entry (keyed as that pod replies, in its VRF) sending the replies back from the
//! floating IP. Nothing leaves on the fabric; a reply to the pair needs no route in the VRF.
//!
//! # Service VIPs
//! An address:port (TCP or UDP) of a VRF stands for backends of that VRF. A flow's first
//! packet to it picks one by the flow's hash (or, balanced by least flows, the backend with
//! the fewest flows now, from counters its setups and removals keep) and is set up inline (from the route lookup; the
//! VIP needs no route of its own): the forward entry, under the client's tuple to the VIP,
//! rewrites the destination to the backend, the reverse entry, under the backend's reply
//! tuple, rewrites the replies' source back to the VIP. The backend stays the flow's for its
//! life; removing a backend removes its flows (their next packet picks a live one). Per-backend
//! flow counts are read from the table, so the fast path writes no shared counter.
//!
//! # Link-local services
//! An address:port of 169.254.0.0/16 (the metadata service's 169.254.169.254:80) that every
//! pod reaches, whatever its VRF, as a service address:port of the fabric VRF. The flow's
//! first packet is set up inline with both ends translated: the forward entry, under the pod's
//! tuple, rewrites the source to the vif's own link-local address (169.254.1.0 + vif index,
//! the pod's port kept) and the destination to the service; the reverse entry, under the
//! service's reply tuple in the fabric VRF, rewrites the replies back (source to the
//! link-local address, destination to the pod). Each entry reads both from its partner's key.
//! The service sees which vif asks by the source address.
//!
//! Source NAT and floating IPs translate TCP, UDP and ICMP / ICMPv6 echo (the identifier stands
//! in for the port), over IPv4 or IPv6; link-local services are IPv4 only. Anything else
//! crossing into the pool's VRF from an attached VRF (fragments, other protocols, the family the
//! attached pool does not hand out) is dropped and counted (`nat_unsupported`); a pool without a
//! free pair drops the new flow's packet (`nat_pool_exhausted`).
//!
//! # IPv6
//! Service VIPs take IPv6 as well: an IPv6 VIP over IPv6 backends (a service's backends are of
//! its VIP's family). So do floating IPs (an IPv6 fabric address for a pod's IPv6 address: one
//! family both sides) and pools (NAT66: a pool's addresses are all IPv6, handed out 128-bit
//! pairs from the same per-core blocks; overlaps are checked within a family). Flow keys hold 128-bit addresses for both families (an IPv4 address in
//! the low 32 bits) and so does a [`Translation`], so nothing in the key or the entries changed
//! for it; [`translate`] rewrites the 128-bit address with the TCP / UDP (and ICMPv6 echo)
//! checksum updated incrementally over it, and there is no header checksum. Least-flows counts
//! know an IPv6 backend by a 47-bit digest of its address and port (a service whose backends'
//! digests collide is refused). ICMPv6 errors about a VIP's flows (destination unreachable,
//! packet too big, time exceeded, parameter problem) are translated back like ICMPv4 ones
//! ([`translate_icmp_error`]), the ICMPv6 checksum following the pseudo-header's and the
//! quote's addresses and the quoted port.

pub mod config;
pub mod pool;
pub mod pools;
pub mod rewrite;

pub use config::{
    key_bits, link_local_source, Balance, FloatingIp, LinkLocal, Nat, NatSnapshot, PoolInfo,
    Service, ServiceSnap, SnatRule, MAX_BACKENDS,
};
pub use pool::{PoolRange, PortPool};
pub use pools::{BackendCounts, PortPools};
pub use rewrite::{quoted, translate, translate_icmp_error, End, Quoted, Translation};
