//! `PUT/GET/DELETE /vifs/{name}/trace`: the next packets a vif receives, each with what the
//! pipeline did with it.

use serde::{Deserialize, Serialize};

/// Packets one trace may ask for.
pub const TRACE_COUNT_MAX: u32 = 1000;

/// `PUT /vifs/{name}/trace`: trace the next `count` packets received on the vif (replacing any
/// trace running, of this vif or another).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TraceRequest {
    pub count: u32,
}

/// `GET /vifs/{name}/trace`: the packets traced since the last read, and whether the trace
/// is still running (it ends when its count is spent, or with `DELETE`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TraceResult {
    pub vif: String,
    pub running: bool,
    pub packets: Vec<TracedPacket>,
}

/// One traced packet.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TracedPacket {
    /// The ingress vif's VRF.
    pub vrf: u32,
    /// Frame length as received.
    pub length: u32,
    /// The headers as received, e.g. `02:00:00:00:0a:01 > 00:00:5e:00:01:00, 198.18.1.2:40000
    /// > 198.18.2.2:5001 udp ttl 64`.
    pub received: String,
    /// `sent`, `to host` or `dropped`.
    pub verdict: String,
    /// The vif it was sent out of.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub out_vif: Option<String>,
    /// The drop reason (as in `/dropstats`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub drop_reason: Option<String>,
    /// The headers as sent, after every rewrite, e.g. `vxlan vni 5000 198.51.100.1 >
    /// 198.51.100.2, inner 02:.. > 02:.., 198.18.1.2 > 198.18.2.7 udp ttl 63`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sent: Option<String>,
}
