//! Counters: every drop under a named reason, per-vif packets and bytes. Each forwarding core
//! owns one [`CoreStats`] and is its only writer, so an increment is a plain load + store (no
//! locked read-modify-write, no cache line shared with another writer); readers on other threads
//! sum all cores' values.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

/// The vif index space (indexes `0..MAX_VIFS`).
pub const MAX_VIFS: usize = 1024;

macro_rules! drop_reasons {
    ($($(#[$doc:meta])* $name:ident = $text:literal,)*) => {
        /// Why a packet was dropped (after the Contrail `dropstats` categories).
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        #[repr(u8)]
        pub enum DropReason { $($(#[$doc])* $name,)* }

        impl DropReason {
            pub const ALL: &'static [DropReason] = &[$(DropReason::$name,)*];
            pub const COUNT: usize = Self::ALL.len();
            /// A stable snake_case name for APIs and metrics.
            pub fn name(self) -> &'static str {
                match self { $(DropReason::$name => $text,)* }
            }
        }
    };
}

drop_reasons! {
    /// A header is shorter than it must be (or than its own length fields say).
    Truncated = "truncated",
    /// A header field holds an impossible value (IP version, lengths, GRE version...).
    Malformed = "malformed",
    /// IPv4 header checksum wrong.
    BadChecksum = "bad_checksum",
    /// The packet came in on a vif index that is not configured.
    InvalidVif = "invalid_vif",
    /// The vif's (or VNI's) VRF does not exist.
    InvalidVrf = "invalid_vrf",
    /// Neither IPv4, IPv6 nor ARP where L3 was needed.
    UnsupportedEthertype = "unsupported_ethertype",
    /// No route for the destination in the VRF.
    NoRoute = "no_route",
    /// No bridge entry for the destination MAC.
    BridgeMiss = "bridge_miss",
    /// Broadcast / multicast that is not ARP or ND (no flooding in this data path).
    Multicast = "multicast",
    /// TTL / hop limit would reach zero; no ICMP error could be sent back.
    TtlExceeded = "ttl_exceeded",
    /// TTL exceeded and an ICMP time-exceeded went back (counted so it shows in dropstats).
    TtlExceededIcmpSent = "ttl_exceeded_icmp_sent",
    /// Too big for the egress MTU with DF set (or IPv6); no ICMP error could be sent back. Or a
    /// frame from a kernel interface or a guest longer than its vif's MTU allows, or one too
    /// big for the receive buffers a guest without mergeable buffers posted.
    Mtu = "mtu",
    /// Too big with DF: an ICMP fragmentation-needed / packet-too-big went back.
    MtuIcmpSent = "mtu_icmp_sent",
    /// MPLS label with no entry in the label table (or a label stack deeper than one).
    InvalidLabel = "invalid_label",
    /// VXLAN VNI with no entry in the VNI table.
    InvalidVni = "invalid_vni",
    /// The route, label or bridge entry points at a nexthop id that is not configured.
    InvalidNexthop = "invalid_nexthop",
    /// The nexthop says discard.
    DiscardNexthop = "discard",
    /// ECMP nexthop with no usable member.
    EcmpNoMember = "ecmp_no_member",
    /// Not enough headroom to push the tunnel headers.
    NoHeadroom = "no_headroom",
    /// A fragmented outer packet addressed to the tunnel ports (no reassembly here).
    FragmentedTunnel = "fragmented_tunnel",
    /// Tunnel packet the vrouter does not speak (GRE payload not MPLS, L2 over MPLS...).
    UnsupportedTunnel = "unsupported_tunnel",
    /// ARP or ND that is not for an address the vrouter answers for.
    ArpNotForUs = "arp_not_for_us",
    /// The flow stage (policy) said drop.
    FlowDrop = "flow_drop",
    /// A tunnel nexthop whose outgoing vif is not on the fabric, or a loop back to the ingress.
    InvalidTunnel = "invalid_tunnel",
    /// A packet's checksum or segmentation offload could not be finished for its egress: its
    /// headers did not match what its ingress claimed, or no buffer was left for a segment. Or
    /// the offload header a kernel interface gave a frame did not add up.
    Offload = "offload",
    /// A frame arrived but the packet pool had no buffer left to receive it into.
    NoMbuf = "no_mbuf",
    /// The egress queue was full: a guest's RX ring with no buffer posted, a NIC or kernel
    /// socket queue, or the ring to the lcore that transmits for the vif.
    TxQueueFull = "tx_queue_full",
    /// A kernel interface refused a frame at send (too big for its MTU, or an offload header
    /// it would not take).
    KernelRejected = "kernel_rejected",
    /// For the host (fabric traffic that is not for a tunnel, ARP not for the fabric address, a
    /// receive route) while no host (tap) vif takes it.
    NoHostVif = "no_host_vif",
    /// Sent to a vif no lcore transmits for (being added or removed).
    NoTxQueue = "no_tx_queue",
    /// A new flow leaving through source NAT found no free address and port in its pool.
    NatPoolExhausted = "nat_pool_exhausted",
    /// A packet leaving through source NAT that it cannot translate: not IPv4, a fragment,
    /// neither TCP, UDP nor an ICMP echo request.
    NatUnsupported = "nat_unsupported",
    /// DHCP from a pod vif that has no address to hand out (no `ip` and `prefix-len`) while
    /// no agent is connected to pkt0 (with one, it goes to the agent).
    DhcpNoAddress = "dhcp_no_address",
    /// DHCP the vrouter takes without answering: RELEASE and DECLINE (the address is the
    /// vif's, fixed by its configuration), a REQUEST that chose another server, BOOTP replies,
    /// messages without a type vrouterd answers.
    DhcpIgnored = "dhcp_ignored",
    /// To a tunnel nexthop without a `dmac` whose underlay neighbour (the tunnel's far end)
    /// has no MAC yet: vrouterd is asking for it by ARP, or it stopped answering.
    NeighbourUnresolved = "neighbour_unresolved",
    /// For the agent (a trapped first packet, DHCP without an address) while no agent is
    /// connected to pkt0.
    NoAgent = "no_agent",
    /// For the agent, over its vif's trap rate (`--agent-trap-rate`, per forwarding core).
    AgentRateLimited = "agent_rate_limited",
    /// For the agent, while the queue to the agent thread was full.
    AgentQueueFull = "agent_queue_full",
}

/// A counter with exactly one writer (its core). `add` is a relaxed load and store: on x86 two
/// plain moves, no lock prefix.
#[derive(Debug, Default)]
pub struct Counter(AtomicU64);

impl Counter {
    #[inline(always)]
    pub fn add(&self, n: u64) {
        self.0.store(
            self.0.load(Ordering::Relaxed).wrapping_add(n),
            Ordering::Relaxed,
        );
    }
    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// Per-vif counters of one core. `rx` counts every frame the vif gave us (those dropped before
/// the pipeline too); `tx` what its queue accepted, counted by the lcore that handed it over
/// (never what was only decided: a refused packet is a drop, not a send); `drops` the vif's
/// received packets dropped and the packets to it its queue refused.
#[derive(Debug, Default)]
pub struct VifCounters {
    pub rx_packets: Counter,
    pub rx_bytes: Counter,
    pub tx_packets: Counter,
    pub tx_bytes: Counter,
    pub drops: Counter,
}

/// One forwarding core's counters. Written only by the core that owns it.
#[repr(align(64))]
#[derive(Debug)]
pub struct CoreStats {
    drops: [Counter; DropReason::COUNT],
    vifs: Box<[VifCounters]>,
    /// Packets answered by the vrouter itself (ARP, NA, DHCP).
    pub replies: Counter,
    /// Packets handed to the host (receive nexthop, fabric traffic not for a tunnel).
    pub to_host: Counter,
    /// Packets queued to the lcore that transmits for their vif, and taken from other lcores
    /// to transmit: a packet is counted sent (`tx_packets`) by the lcore that hands it to the
    /// vif's queue, so per lcore `rx + taken_from_lcores + segments_added = tx +
    /// queued_to_lcores + drops`.
    pub queued_to_lcores: Counter,
    pub taken_from_lcores: Counter,
    /// Packets added by cutting GSO frames into segments in software (a frame cut into 45
    /// segments adds 44): the segments are what is sent and counted.
    pub segments_added: Counter,
    /// Packets whose addresses source NAT rewrote (both directions).
    pub nat_translated: Counter,
    /// Packets handed to the agent's queue (pkt0), and packets the agent sent out of a vif
    /// (made here; those it injects as received are counted received on their vif).
    pub to_agent: Counter,
    pub from_agent: Counter,
}

impl Default for CoreStats {
    fn default() -> Self {
        CoreStats {
            drops: std::array::from_fn(|_| Counter::default()),
            vifs: (0..MAX_VIFS).map(|_| VifCounters::default()).collect(),
            replies: Counter::default(),
            to_host: Counter::default(),
            queued_to_lcores: Counter::default(),
            taken_from_lcores: Counter::default(),
            segments_added: Counter::default(),
            nat_translated: Counter::default(),
            to_agent: Counter::default(),
            from_agent: Counter::default(),
        }
    }
}

impl CoreStats {
    #[inline(always)]
    pub fn count_drop(&self, r: DropReason) {
        self.drops[r as usize].add(1);
    }
    /// `n` drops for `r`, of packets vif `vif` received or was sent.
    #[inline(always)]
    pub fn count_drops(&self, r: DropReason, vif: u16, n: u64) {
        if n != 0 {
            self.drops[r as usize].add(n);
            self.vif(vif).drops.add(n);
        }
    }
    pub fn drops(&self, r: DropReason) -> u64 {
        self.drops[r as usize].get()
    }
    /// The counters of vif `vif` (indexes past [`MAX_VIFS`] share the last slot, which no
    /// configured vif can have).
    #[inline(always)]
    pub fn vif(&self, vif: u16) -> &VifCounters {
        let i = usize::from(vif).min(MAX_VIFS - 1);
        &self.vifs[i]
    }
}

/// Totals over all cores, as read by the control side.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StatsSnapshot {
    pub drops: Vec<(DropReason, u64)>,
    pub replies: u64,
    pub to_host: u64,
    pub nat_translated: u64,
}

impl StatsSnapshot {
    pub fn drop_count(&self, r: DropReason) -> u64 {
        self.drops
            .iter()
            .find(|(d, _)| *d == r)
            .map_or(0, |(_, n)| *n)
    }
    pub fn total_drops(&self) -> u64 {
        self.drops.iter().map(|(_, n)| n).sum()
    }
}

/// Per-vif totals over all cores.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct VifTotals {
    pub rx_packets: u64,
    pub rx_bytes: u64,
    pub tx_packets: u64,
    pub tx_bytes: u64,
    pub drops: u64,
}

/// Where the cores' stats are registered so the control side can sum them. The mutex is taken
/// only when a core starts and when stats are read, never per packet.
#[derive(Debug, Default)]
pub struct StatsRegistry {
    cores: Mutex<Vec<Arc<CoreStats>>>,
}

impl StatsRegistry {
    /// A new per-core stats block, registered for reading.
    pub fn new_core(&self) -> Arc<CoreStats> {
        let s = Arc::new(CoreStats::default());
        self.lock().push(s.clone());
        s
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Arc<CoreStats>>> {
        // A poisoned registry still holds valid counters.
        self.cores.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn snapshot(&self) -> StatsSnapshot {
        let cores = self.lock();
        StatsSnapshot {
            drops: DropReason::ALL
                .iter()
                .map(|&r| (r, cores.iter().map(|c| c.drops(r)).sum()))
                .collect(),
            replies: cores.iter().map(|c| c.replies.get()).sum(),
            to_host: cores.iter().map(|c| c.to_host.get()).sum(),
            nat_translated: cores.iter().map(|c| c.nat_translated.get()).sum(),
        }
    }

    pub fn vif(&self, vif: u16) -> VifTotals {
        let cores = self.lock();
        let mut t = VifTotals::default();
        for c in cores.iter() {
            let v = c.vif(vif);
            t.rx_packets += v.rx_packets.get();
            t.rx_bytes += v.rx_bytes.get();
            t.tx_packets += v.tx_packets.get();
            t.tx_bytes += v.tx_bytes.get();
            t.drops += v.drops.get();
        }
        t
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn registry_sums_every_core() {
        let reg = StatsRegistry::default();
        let a = reg.new_core();
        let b = reg.new_core();
        a.count_drop(DropReason::NoRoute);
        b.count_drop(DropReason::NoRoute);
        b.count_drop(DropReason::Mtu);
        a.vif(3).rx_packets.add(2);
        b.vif(3).rx_packets.add(5);
        let s = reg.snapshot();
        assert_eq!(s.drop_count(DropReason::NoRoute), 2);
        assert_eq!(s.drop_count(DropReason::Mtu), 1);
        assert_eq!(s.total_drops(), 3);
        assert_eq!(reg.vif(3).rx_packets, 7);
        let names: std::collections::HashSet<_> =
            DropReason::ALL.iter().map(|r| r.name()).collect();
        assert_eq!(
            names.len(),
            DropReason::COUNT,
            "drop reason names are unique"
        );
    }
}
