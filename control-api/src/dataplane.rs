//! The hook vrouterd implements: the controller calls [`Dataplane::apply`] with each validated
//! [`Change`] before it commits the change to its model, and reads live state through the other
//! methods. An `Err` from `apply` means "not applied": the controller leaves its model (and the
//! filesystem) as it was before the request.

use std::fmt;
use std::net::{Ipv4Addr, Ipv6Addr};
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::api::{
    BridgeEntry, DropStats, FlowPage, FlowQuery, FlowStats, Health, IpPrefix, MacAddr, Mirror,
    NatPool, NatPoolUsage, Nexthop, Policy, Route, Stats, TracedPacket, VhostUserMode, VifStatus,
};

/// A vif as the dataplane needs it: validated, with its index and resolved socket path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VifSpec {
    pub index: u32,
    pub name: String,
    pub vrf: u32,
    pub mac: MacAddr,
    pub ip: Option<Ipv4Addr>,
    pub ip6: Option<Ipv6Addr>,
    pub mtu: u32,
    pub kind: VifKind,
    /// What the vif's DHCP answers hand out (none: DHCP from it is dropped).
    pub dhcp: Option<DhcpSettings>,
}

/// A vif's DHCP lease, validated: its address in a subnet of 1..=30 bits, a gateway in it
/// that is neither the address nor the subnet's network or broadcast address, routes via
/// addresses of the subnet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DhcpSettings {
    pub address: Ipv4Addr,
    pub prefix_len: u8,
    pub gateway: Ipv4Addr,
    pub dns_servers: Vec<Ipv4Addr>,
    /// (prefix, length, via)
    pub static_routes: Vec<(Ipv4Addr, u8, Ipv4Addr)>,
    /// Seconds (`u32::MAX`: infinite).
    pub lease_time: u32,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VifKind {
    VhostUser {
        /// The resolved socket path, inside directories that already exist.
        socket: PathBuf,
        mode: VhostUserMode,
        queues: u32,
        /// Group that may reach the socket (`vhostsocket-group`): a server-mode socket is made
        /// group read-write for it.
        group: Option<u32>,
    },
    /// A PCI address (vfio) or a DPDK vdev string.
    Physical { device: String },
    /// A kernel interface attached with AF_PACKET.
    AfPacket { iface: String },
    /// A kernel tap interface for the host.
    Tap { iface: String },
}

impl std::fmt::Display for VifKind {
    /// What the vif is attached to, for logs: `vhost-user socket /run/…`, `device …`,
    /// `interface …`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            VifKind::VhostUser { socket, .. } => {
                write!(f, "vhost-user socket {}", socket.display())
            }
            VifKind::Physical { device } => write!(f, "device {device}"),
            VifKind::AfPacket { iface } => write!(f, "interface {iface} (af_packet)"),
            VifKind::Tap { iface } => write!(f, "tap interface {iface}"),
        }
    }
}

/// A validated change to the forwarding tables. The dataplane applies it, and the journal saves
/// it as it is (so its serde form is the state files' format for these changes).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "kebab-case", deny_unknown_fields)]
pub enum TableChange {
    VrfAdd {
        vrf: u32,
    },
    VrfDel {
        vrf: u32,
    },
    /// Create or replace; every nexthop it names already exists.
    NexthopSet {
        id: u32,
        nexthop: Nexthop,
    },
    NexthopDel {
        id: u32,
    },
    RouteSet {
        vrf: u32,
        route: Route,
    },
    RouteDel {
        vrf: u32,
        prefix: IpPrefix,
    },
    BridgeSet {
        vrf: u32,
        entry: BridgeEntry,
    },
    BridgeDel {
        vrf: u32,
        mac: MacAddr,
    },
    MplsSet {
        label: u32,
        nexthop: u32,
    },
    /// A per-VRF label: the inner packet is routed in `vrf`.
    MplsVrfSet {
        label: u32,
        vrf: u32,
    },
    MplsDel {
        label: u32,
    },
    VxlanSet {
        vni: u32,
        vrf: u32,
    },
    VxlanDel {
        vni: u32,
    },
}

impl TableChange {
    /// Short name for logs and spans.
    pub fn op(&self) -> &'static str {
        match self {
            TableChange::VrfAdd { .. } => "vrf_add",
            TableChange::VrfDel { .. } => "vrf_del",
            TableChange::NexthopSet { .. } => "nexthop_set",
            TableChange::NexthopDel { .. } => "nexthop_del",
            TableChange::RouteSet { .. } => "route_set",
            TableChange::RouteDel { .. } => "route_del",
            TableChange::BridgeSet { .. } => "bridge_set",
            TableChange::BridgeDel { .. } => "bridge_del",
            TableChange::MplsSet { .. } => "mpls_set",
            TableChange::MplsVrfSet { .. } => "mpls_vrf_set",
            TableChange::MplsDel { .. } => "mpls_del",
            TableChange::VxlanSet { .. } => "vxlan_set",
            TableChange::VxlanDel { .. } => "vxlan_del",
        }
    }
}

/// One validated change, in the order the controller applies them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    Table(TableChange),
    VifAdd {
        vif: VifSpec,
    },
    /// The vif's socket file and created directories are removed by the controller after this
    /// succeeds; the dataplane must have stopped using the socket by then.
    VifDel {
        vif: VifSpec,
    },
    /// Set (or replace) a vif's policy; flows of that vif must be re-evaluated or flushed.
    PolicySet {
        vif: u32,
        name: String,
        policy: Policy,
    },
    /// Remove a vif's policy: it skips the flow table again.
    PolicyDel {
        vif: u32,
        name: String,
    },
    /// Create or replace a NAT pool (never one a VRF is attached to).
    NatPoolSet {
        name: String,
        pool: NatPool,
    },
    /// Remove a NAT pool no VRF is attached to.
    NatPoolDel {
        name: String,
    },
    /// Attach VRF `vrf` to source NAT through pool `pool` (replacing an earlier attachment,
    /// whose flows go).
    SnatSet {
        vrf: u32,
        pool: String,
    },
    /// Detach VRF `vrf`: its translated flows go, new ones leave untranslated.
    SnatDel {
        vrf: u32,
    },
    /// Set (or replace, its flows going) the floating IP `address`.
    FloatingIpSet {
        address: std::net::IpAddr,
        vrf: u32,
        ip: std::net::IpAddr,
    },
    /// Remove the floating IP `address`; its flows go.
    FloatingIpDel {
        address: std::net::IpAddr,
    },
    /// Set (or replace) a service VIP: flows to a backend it no longer has go.
    ServiceSet {
        service: crate::api::Service,
    },
    /// Remove a service VIP; its flows go.
    ServiceDel {
        service: crate::api::Service,
    },
    /// Set (or replace) a link-local service; flows to its address go.
    LinkLocalSet {
        service: crate::api::LinkLocalService,
    },
    /// Remove a link-local service; its flows go.
    LinkLocalDel {
        service: crate::api::LinkLocalService,
    },
}

impl Change {
    /// Short name for logs and spans.
    pub fn op(&self) -> &'static str {
        match self {
            Change::Table(change) => change.op(),
            Change::VifAdd { .. } => "vif_add",
            Change::VifDel { .. } => "vif_del",
            Change::PolicySet { .. } => "policy_set",
            Change::PolicyDel { .. } => "policy_del",
            Change::NatPoolSet { .. } => "nat_pool_set",
            Change::NatPoolDel { .. } => "nat_pool_del",
            Change::SnatSet { .. } => "snat_set",
            Change::SnatDel { .. } => "snat_del",
            Change::FloatingIpSet { .. } => "floating_ip_set",
            Change::FloatingIpDel { .. } => "floating_ip_del",
            Change::ServiceSet { .. } => "service_set",
            Change::ServiceDel { .. } => "service_del",
            Change::LinkLocalSet { .. } => "link_local_set",
            Change::LinkLocalDel { .. } => "link_local_del",
        }
    }
}

/// How a dataplane failure is reported to the agent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DataplaneErrorKind {
    /// The request is fine by the model but the dataplane cannot take it (e.g. a DPDK device
    /// string that does not probe): 400.
    Rejected,
    /// Out of a dataplane resource other than table space (no free lcore queue): 507.
    Exhausted,
    /// A forwarding table (routes, bridge, VNIs, nexthops, vifs) is at its limit; the message
    /// names the table and the limit: 507, code `table-full`.
    TableFull,
    /// Temporarily unable (vhost core busy, shutting down): 503.
    Unavailable,
    /// A bug or an unexpected failure: 500.
    Internal,
}

impl DataplaneErrorKind {
    pub fn status(&self) -> u16 {
        match self {
            DataplaneErrorKind::Rejected => 400,
            DataplaneErrorKind::Exhausted | DataplaneErrorKind::TableFull => 507,
            DataplaneErrorKind::Unavailable => 503,
            DataplaneErrorKind::Internal => 500,
        }
    }

    pub fn code(&self) -> &'static str {
        match self {
            DataplaneErrorKind::Rejected => "dataplane-rejected",
            DataplaneErrorKind::Exhausted => "dataplane-exhausted",
            DataplaneErrorKind::TableFull => "table-full",
            DataplaneErrorKind::Unavailable => "dataplane-unavailable",
            DataplaneErrorKind::Internal => "dataplane-internal",
        }
    }
}

/// A dataplane failure: what kind, and a message for the agent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DataplaneError {
    pub kind: DataplaneErrorKind,
    pub message: String,
}

impl DataplaneError {
    pub fn new(kind: DataplaneErrorKind, message: impl Into<String>) -> Self {
        DataplaneError {
            kind,
            message: message.into(),
        }
    }
}

impl fmt::Display for DataplaneError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for DataplaneError {}

/// What vrouterd implements. Methods may block briefly (the controller calls them off the async
/// runtime); they are called one at a time for changes, concurrently for reads.
pub trait Dataplane: Send + Sync + 'static {
    /// Apply one validated change, or refuse it leaving the dataplane as it was.
    fn apply(&self, change: &Change) -> Result<(), DataplaneError>;
    /// Live state and counters of a vif that `apply(VifAdd)` accepted.
    fn vif_status(&self, vif: &VifSpec) -> VifStatus;
    fn stats(&self) -> Result<Stats, DataplaneError>;
    fn dropstats(&self) -> Result<DropStats, DataplaneError>;
    fn health(&self) -> Result<Health, DataplaneError>;
    /// A page of the flow table; `query.limit` is already bounded by the controller.
    fn flows(&self, query: &FlowQuery) -> Result<FlowPage, DataplaneError>;
    /// Remove every flow; returns how many there were.
    fn flush_flows(&self) -> Result<u64, DataplaneError>;
    fn flow_stats(&self) -> Result<FlowStats, DataplaneError>;
    /// Trace the next `count` packets received on `vif` (replacing any trace running).
    fn trace_start(&self, vif: &VifSpec, count: u32) -> Result<(), DataplaneError> {
        let _ = (vif, count);
        Err(DataplaneError::new(
            DataplaneErrorKind::Unavailable,
            "this dataplane does not trace packets",
        ))
    }
    /// Whether the trace still runs, and the packets traced since the last call.
    fn trace_read(&self) -> Result<(bool, Vec<TracedPacket>), DataplaneError> {
        Err(DataplaneError::new(
            DataplaneErrorKind::Unavailable,
            "this dataplane does not trace packets",
        ))
    }
    fn trace_stop(&self) -> Result<(), DataplaneError> {
        Ok(())
    }
    /// Copy `vif`'s packets to the analyzer vif `to`, or to `mirror.collector`, as `mirror`
    /// says (replacing a mirror of `vif`).
    fn mirror_set(
        &self,
        vif: &VifSpec,
        to: Option<&VifSpec>,
        mirror: &Mirror,
    ) -> Result<(), DataplaneError> {
        let _ = (vif, to, mirror);
        Err(DataplaneError::new(
            DataplaneErrorKind::Unavailable,
            "this dataplane does not mirror packets",
        ))
    }
    fn mirror_del(&self, vif: &VifSpec) -> Result<(), DataplaneError> {
        let _ = vif;
        Ok(())
    }
    /// Copies made of `vif`'s packets, copies that found no buffer, and copies skipped while
    /// the analyzer's queue was full.
    fn mirror_counts(&self, vif: &VifSpec) -> (u64, u64, u64) {
        let _ = vif;
        (0, 0, 0)
    }
    /// The NAT pools' use (a dataplane without NAT has none to report).
    fn nat_pools(&self) -> Result<Vec<NatPoolUsage>, DataplaneError> {
        Ok(Vec::new())
    }
    /// The flows a service holds now, per backend in its order (none without NAT).
    fn service_flows(&self, _service: &crate::api::Service) -> Result<Vec<u64>, DataplaneError> {
        Ok(Vec::new())
    }
    /// Serve queue pair `queue` of vhost-user vif `vif` on forwarding lcore `lcore` from now on
    /// (moving it there if it is up elsewhere). An lcore that is not a forwarding lcore is
    /// refused, naming the ones there are.
    fn queue_pin(&self, vif: &VifSpec, queue: u32, lcore: u32) -> Result<(), DataplaneError> {
        let _ = (vif, queue, lcore);
        Err(DataplaneError::new(
            DataplaneErrorKind::Rejected,
            "this dataplane does not place queues on lcores",
        ))
    }
    /// The underlay neighbours vrouterd resolves (none where it resolves none).
    fn neighbours(&self) -> Result<Vec<crate::api::Neighbour>, DataplaneError> {
        Ok(Vec::new())
    }
    /// The agent channel's counters (not enabled where there is none).
    fn agent_stats(&self) -> Result<crate::api::AgentStats, DataplaneError> {
        Ok(crate::api::AgentStats::default())
    }
}
