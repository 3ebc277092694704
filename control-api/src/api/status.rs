//! Counters and health: `GET /stats`, `GET /dropstats`, `GET /health`.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::VifState;

#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct LcoreStats {
    pub lcore: u32,
    pub rx_packets: u64,
    pub rx_bytes: u64,
    pub tx_packets: u64,
    pub tx_bytes: u64,
    pub drops: u64,
    /// Packets this lcore queued to the lcore that transmits for their vif, and packets it
    /// took from other lcores to transmit; packets it made (segments cut from GSO frames in
    /// software beyond the frame itself, ICMP errors sent in place of a dropped packet, mirror
    /// copies). Every
    /// packet is accounted for once: `rx_packets + taken_from_lcores + packets_made =
    /// tx_packets + queued_to_lcores + drops` (up to packets in flight between lcores).
    #[serde(default)]
    pub queued_to_lcores: u64,
    #[serde(default)]
    pub taken_from_lcores: u64,
    #[serde(default)]
    pub packets_made: u64,
    /// Share of recent poll iterations that found work, 0.0..=1.0.
    pub busy_ratio: f64,
    /// Poll loop turns that began long after the one before: what a packet arriving then
    /// waited on top of its own processing (the lcore busy, or its CPU taken from it).
    #[serde(default)]
    pub poll_gaps: PollGaps,
}

/// Counts of poll loop turns that began more than 10 µs, 100 µs and 1 ms after the turn
/// before (each count includes the ones after it; turns after an idle nap are not counted).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PollGaps {
    pub over_10us: u64,
    pub over_100us: u64,
    pub over_1ms: u64,
}

/// `GET /stats`: totals and the per-lcore breakdown they are the sum of.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Stats {
    pub rx_packets: u64,
    pub rx_bytes: u64,
    pub tx_packets: u64,
    pub tx_bytes: u64,
    pub drops: u64,
    /// Packets whose addresses source NAT rewrote (both directions).
    #[serde(default)]
    pub nat_translated: u64,
    pub lcores: Vec<LcoreStats>,
}

/// `GET /dropstats`: packets dropped per named reason.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DropStats {
    pub total: u64,
    pub reasons: BTreeMap<String, u64>,
}

/// `GET /agent`: the agent channel (pkt0, `vrouterd --agent-socket`) as its own thread counts
/// it. Packets the forwarding lcores refused to trap are drops in `/dropstats` (`no_agent`,
/// `agent_rate_limited`, ...); these count what reached the channel and what the agent sent.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AgentStats {
    /// vrouterd runs an agent socket; every counter stays 0 when not.
    pub enabled: bool,
    /// An agent is connected now.
    pub connected: bool,
    /// Agents that connected since vrouterd started.
    pub connections: u64,
    /// Trapped packets written to the agent, and those lost after the lcores handed them over
    /// (the agent left or did not read).
    pub traps_sent: u64,
    pub traps_lost: u64,
    /// Messages received from the agent, every kind, malformed ones included.
    pub messages: u64,
    /// Messages that did not decode (or a kind the agent may not send): logged and skipped.
    pub malformed: u64,
    /// Verdicts installed as flows, and verdicts that could not be (flow table full, ...).
    pub verdicts: u64,
    pub verdicts_failed: u64,
    /// Frames the agent sent out of a vif, and frames it injected as received on one, handed
    /// to the forwarding lcore; sends and injects that could not be (no buffer, queue full,
    /// vif out of range).
    pub sends: u64,
    pub injects: u64,
    pub inject_failed: u64,
    /// Trapped first packets not passed on: their vif held `--agent-max-held` flows waiting for
    /// a verdict already, or their flow was waiting already.
    pub held_full: u64,
    pub held_repeat: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum HealthStatus {
    Ok,
    Degraded,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MempoolHealth {
    pub name: String,
    pub in_use: u64,
    pub size: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RingHealth {
    pub name: String,
    pub used: u64,
    pub size: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LcoreHealth {
    pub lcore: u32,
    /// `forwarding`, `vhost` or `control`.
    pub role: String,
    pub busy_ratio: f64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VifHealth {
    pub name: String,
    pub state: VifState,
}

/// `GET /health`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Health {
    pub status: HealthStatus,
    pub mempools: Vec<MempoolHealth>,
    pub rings: Vec<RingHealth>,
    pub lcores: Vec<LcoreHealth>,
    #[serde(default)]
    pub vifs: Vec<VifHealth>,
    /// Why the status is degraded, one line each.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub problems: Vec<String>,
}
