//! The flow table: `GET /flows`, `DELETE /flows`, `GET /flows/stats`.

use std::net::IpAddr;

use serde::{Deserialize, Serialize};

/// `GET /flows?vrf=&limit=&cursor=`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FlowQuery {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vrf: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limit: Option<u32>,
    /// Opaque: the `next_cursor` of the previous page.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cursor: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FlowAction {
    Forward,
    Drop,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FlowEntry {
    pub index: u64,
    pub vrf: u32,
    pub src: IpAddr,
    pub dst: IpAddr,
    pub proto: u8,
    /// Source port; for ICMP / ICMPv6 the echo identifier (0 for other messages).
    pub sport: u16,
    /// Destination port; for ICMP / ICMPv6 the message type.
    pub dport: u16,
    pub action: FlowAction,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reverse: Option<u64>,
    pub packets: u64,
    pub bytes: u64,
    /// TCP state for aging (`syn`, `established`, `fin`, `rst`), absent for other protocols.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tcp_state: Option<String>,
    /// Milliseconds since the flow last saw a packet.
    pub idle_ms: u64,
    /// A source-NAT flow: its packets as they leave translated (for the forward entry the
    /// tuple on the pool's side, for the reverse entry the pod's).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub translated: Option<FlowTuple>,
}

/// A flow's identity, as a translated flow's packets leave.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FlowTuple {
    pub vrf: u32,
    pub src: IpAddr,
    pub dst: IpAddr,
    pub sport: u16,
    pub dport: u16,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FlowPage {
    pub flows: Vec<FlowEntry>,
    /// Pass as `cursor` to get the next page; absent on the last page.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_cursor: Option<String>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct FlowStats {
    pub capacity: u64,
    pub active: u64,
    pub created: u64,
    pub aged: u64,
    pub evicted: u64,
    pub table_full_drops: u64,
    /// IPFIX flow export, when vrouterd exports (`--ipfix-collector`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub export: Option<FlowExportStats>,
}

/// What the IPFIX exporter has done since vrouterd started.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct FlowExportStats {
    pub collector: std::net::SocketAddr,
    /// Flow records sent, and the messages that carried them (and the templates).
    pub records: u64,
    pub messages: u64,
    /// Records not sent: past `--ipfix-max-rate`.
    pub dropped_records: u64,
    /// Messages the socket refused (e.g. the collector unreachable).
    pub send_errors: u64,
}

/// `DELETE /flows`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct FlushResult {
    pub flushed: u64,
}
