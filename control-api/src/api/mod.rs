//! The contract: request and response bodies of control API v1 (DESIGN.md), one module per
//! object kind, all re-exported here. Field names are the wire names; changing one breaks agents.

mod batch;
mod flow;
mod label;
mod mirror;
mod nat;
mod neigh;
mod nexthop;
mod policy;
mod route;
mod status;
mod text;
mod trace;
mod vif;
mod vrf;

use serde::{Deserialize, Serialize};

pub use batch::{RouteBatch, RouteBatchResult, ROUTE_BATCH_MAX};
pub use flow::{
    FlowAction, FlowEntry, FlowExportStats, FlowPage, FlowQuery, FlowStats, FlowTuple, FlushResult,
};
pub use label::{MplsEntry, MplsRequest, MplsTarget, VxlanEntry, VxlanRequest};
pub use mirror::{
    Mirror, MirrorCollector, MirrorDirection, MirrorFilter, MirrorInfo, MIRROR_SNAPLEN_MAX,
    MIRROR_SNAPLEN_MIN,
};
pub use nat::{
    FloatingIp, FloatingIpInfo, LinkLocalService, LinkLocalServiceInfo, NatPool, NatPoolInfo,
    NatPoolUsage, NatPorts, Service, ServiceBackend, ServiceBackendInfo, ServiceBalance,
    ServiceInfo, ServiceProto, SnatAttachment,
};
pub use neigh::{Neighbour, NeighbourState};
pub use nexthop::{Nexthop, NexthopInfo, TunnelEncap};
pub use policy::{Policy, PolicyAction, PolicyRule, Proto};
pub use route::{BridgeEntry, Route};
pub use status::{
    AgentStats, DropStats, Health, HealthStatus, LcoreHealth, LcoreStats, MempoolHealth, PollGaps,
    RingHealth, Stats, VifHealth,
};
pub use text::{IpPrefix, MacAddr, PortRange, SyntaxError};
pub use trace::{TraceRequest, TraceResult, TracedPacket, TRACE_COUNT_MAX};
pub use vif::{
    QueuePin, StaticRoute, VhostUserMode, VifCounters, VifInfo, VifQueue, VifRequest, VifState,
    VifStatus, VifType,
};
pub use vrf::{RouteTag, VrfInfo, VrfRouting};

/// The error body every 4xx/5xx carries.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorBody {
    /// A short stable code, e.g. `invalid-field`, `in-use`, `socket-outside-base`.
    pub error: String,
    /// What was wrong and how to fix it.
    pub message: String,
}
