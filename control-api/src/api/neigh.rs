//! Underlay neighbours: `GET /neighbours`.

use std::net::IpAddr;

use serde::{Deserialize, Serialize};

use super::MacAddr;

/// Where resolving a neighbour stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum NeighbourState {
    /// Asked for, no answer yet.
    Incomplete,
    /// Its MAC was confirmed within the reachable time.
    Reachable,
    /// Older than the reachable time: still used while vrouterd asks again.
    Stale,
    /// Did not answer: packets toward it are dropped (`neighbour_unresolved`) and vrouterd keeps
    /// asking, less often.
    Failed,
}

/// One underlay neighbour: the far end of tunnel nexthops without a `dmac`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Neighbour {
    pub address: IpAddr,
    /// The fabric vif it is reached through.
    pub vif: String,
    pub state: NeighbourState,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mac: Option<MacAddr>,
    /// Seconds since its MAC was last confirmed (by any ARP from it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub confirmed_secs_ago: Option<u64>,
    /// ARP requests vrouterd sent for it.
    pub requests: u64,
    /// ARP packets from it that told its MAC.
    pub learned: u64,
    /// Times its MAC changed.
    pub mac_changes: u64,
    /// Times it stopped answering (went to `failed`).
    pub failures: u64,
}
