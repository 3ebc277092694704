//! `PUT/GET/DELETE /vifs/{name}/mirror`: copies of a vif's packets to an analyzer vif.

use serde::{Deserialize, Serialize};

use std::net::Ipv4Addr;

use super::{IpPrefix, MacAddr, PortRange, Proto};

/// Longest and shortest copy a mirror may be cut to.
pub const MIRROR_SNAPLEN_MIN: u32 = 64;
pub const MIRROR_SNAPLEN_MAX: u32 = 9216;

/// Which of a vif's packets are copied: those it receives, those sent to it, or both.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum MirrorDirection {
    Ingress,
    Egress,
    #[default]
    Both,
}

/// Only packets matching every field given are copied.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MirrorFilter {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub proto: Option<Proto>,
    /// Source or destination address inside it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cidr: Option<IpPrefix>,
    /// Source or destination port inside it (TCP, UDP).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ports: Option<PortRange>,
}

/// A remote collector: copies go to it over the fabric in VXLAN, each whole frame the
/// payload of a VXLAN packet with this VNI (which names the mirror to the collector).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MirrorCollector {
    pub address: Ipv4Addr,
    pub vni: u32,
    /// The fabric next hop's MAC toward it.
    pub mac: MacAddr,
}

/// `PUT /vifs/{name}/mirror`: `to` an analyzer vif, or `collector` over the fabric.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Mirror {
    /// The analyzer vif the copies are sent out of.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub to: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub collector: Option<MirrorCollector>,
    #[serde(default)]
    pub direction: MirrorDirection,
    /// Copies are cut to this many bytes (the whole frame when absent).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub snaplen: Option<u32>,
    /// One packet in `sample` is copied (every packet when absent).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sample: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub filter: Option<MirrorFilter>,
}

/// `GET /vifs/{name}/mirror`: the mirror and what it did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MirrorInfo {
    #[serde(flatten)]
    pub mirror: Mirror,
    /// Copies made, and copies that found no buffer (copies the analyzer's queue refused are
    /// its `tx_queue_full` drops).
    pub copies: u64,
    pub copy_failures: u64,
    /// Copies not made while the analyzer's queue was full (after a refusal, the next bursts'
    /// copies are skipped, so a slow analyzer costs the forwarding core nothing).
    #[serde(default)]
    pub copies_skipped: u64,
}
