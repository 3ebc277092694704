//! The vrouter forwarding plane. No I/O: it works on batches of [`PacketBuf`]s handed in by the
//! caller (DPDK mbufs in `vrouterd`, [`VecBuf`]s in tests) and hands back per-destination TX
//! batches and counted drops.
//!
//! - [`wire`]: typed packet views (Ethernet, 802.1Q, ARP, IPv4, IPv6, UDP, TCP, ICMP, GRE, MPLS,
//!   VXLAN) and checksums.
//! - [`meta`]: parse once into per-packet metadata.
//! - [`tables`]: VRFs, LPM, bridge, nexthops, MPLS labels, VNIs; updated in place while
//!   forwarding runs.
//! - [`pipeline`]: ingress → lookup → flow hook → nexthop → rewrite → TX batches.
//! - [`stats`]: per-core drop and per-vif counters.

pub mod buf;
pub mod error;
pub mod meta;
pub mod pipeline;
pub mod stats;
pub mod tables;
pub mod wire;

pub use buf::{BufError, PacketBuf, VecBuf};
pub use error::Error;
pub use stats::{CoreStats, DropReason, StatsRegistry};
pub use wire::MacAddr;
