//! The vrouter forwarding plane. No I/O: it works on batches of [`PacketBuf`]s handed in by the
//! caller (DPDK mbufs in `vrouterd`, [`VecBuf`]s in tests) and hands back per-destination TX
//! batches and counted drops.
//!
//! - [`wire`]: typed packet views (Ethernet, 802.1Q, ARP, IPv4, IPv6, UDP, TCP, ICMP, GRE, MPLS,
//!   VXLAN) and checksums.
//! - [`meta`]: parse once into per-packet metadata.
//! - [`tables`]: VRFs, LPM, bridge, nexthops, MPLS labels, VNIs; updated in place while
//!   forwarding runs.
//! - [`mirror`]: port mirroring's choice of packets, copies and back-off.
//! - [`nat`]: source NAT on the flow table: pools, their (address, port) pairs, rewrites.
//! - [`pipeline`]: ingress → lookup → flow hook → nexthop → rewrite → TX batches.
//! - [`qsbr`]: grace periods after which storage the forwarding cores may still be reading
//!   (freed trie groups) is reused; each core announces quiescent states between bursts.
//! - [`stats`]: per-core drop and per-vif counters.
//!
//! # Wiring it into a process
//!
//! ```
//! use std::sync::Arc;
//! use vrouter::pipeline::{NoFlow, Pipeline, TxBatches};
//! use vrouter::tables::{FabricConfig, Nexthop, RouteTarget, Tables, TablesConfig, Vif, VifKind};
//! use vrouter::{MacAddr, StatsRegistry, VecBuf};
//!
//! // Control side: one `Tables` and one `StatsRegistry` for the process.
//! let tables = Arc::new(Tables::new(TablesConfig { v4_groups: 1024, ..TablesConfig::default() }));
//! let stats = StatsRegistry::default();
//! tables.set_fabric(FabricConfig { fabric_ip: "198.51.100.1".parse().unwrap(), ..FabricConfig::default() });
//! tables.add_vrf(5).unwrap();
//! let mac: MacAddr = "02:00:00:00:00:0a".parse().unwrap();
//! tables.set_vif(Vif { index: 1, kind: VifKind::Pod, vrf: 5, mac, mtu: 1500 }).unwrap();
//! tables.set_nexthop(1, Nexthop::Encap { vif: 1, dmac: mac }).unwrap();
//! tables.add_route(5, "198.18.1.10".parse().unwrap(), 32, RouteTarget { nexthop: 1, label: None }).unwrap();
//!
//! // Each forwarding core: its own pipeline and TX batches, and a reader of the tables'
//! // reclamation domain that announces a quiescent state once per loop.
//! let grace = tables.grace().register();
//! let mut pipe = Pipeline::new(tables.clone(), stats.new_core(), NoFlow);
//! let mut out = TxBatches::<VecBuf>::new(32);
//! let rx: Vec<VecBuf> = Vec::new(); // an rx burst from vif 1
//! pipe.process(1, rx, &mut out);
//! out.flush(|vif, pkts| { /* tx_burst(vif, pkts): take what was sent out of `pkts` */ let _ = (vif, pkts); });
//! out.host.clear(); // → the host interface
//! out.dropped.clear(); // → free (already counted)
//! grace.quiescent(); // nothing of the tables held past this point
//! assert_eq!(stats.snapshot().total_drops(), 0);
//! ```

pub mod buf;
pub mod error;
pub mod flow;
#[cfg(feature = "serde")]
mod mac_serde;
pub mod meta;
pub mod mirror;
pub mod nat;
pub mod offload;
pub mod pipeline;
pub mod qsbr;
pub mod stats;
mod sync;
pub mod tables;
pub mod wire;

pub use buf::{BufError, PacketBuf, SegBuf, VecBuf};
pub use error::Error;
pub use stats::{CoreStats, DropReason, StatsRegistry};
pub use wire::MacAddr;
