//! Stateful flows and security policy (issue 4).
//!
//! - [`table`]: the preallocated flow table (lock-free lookups, bucket-locked inserts, aging,
//!   paged dump, counters).
//! - NAT flows ([`crate::nat`]) are set up by the same stage, with their pool pair.
//! - [`policy`]: per-vif ingress / egress rules and their evaluation.
//! - [`stage`]: the pipeline's [`crate::pipeline::FlowHook`] ([`FlowStage`]) and the policy
//!   store ([`Policies`]).
//!
//! # Wiring
//! One `Arc<FlowTable>` and one [`Policies`] per process; each forwarding core builds its
//! pipeline with `Pipeline::new(tables, stats, policies.stage(tables.clone()))`, calls
//! `pipe.flow_hook().begin(in_vif, now_ms)` before each `process` (where the stage also takes
//! the current policies and NAT store, once for the burst), and
//! `table.age_slice(now_ms, budget)` at a steady pace (vrouterd: every 100 µs, a budget that
//! sweeps the table in a second). The pipeline calls
//! `FlowHook::prefetch` for each routed packet of a burst before the burst's lookups; with a
//! table too large to stay cached, the stage hashes the keys there once and loads their
//! buckets, then their entries, so a burst's cache misses overlap.

pub mod policy;
pub mod stage;
pub mod table;

pub use policy::{Action, Cidr, Policy, Rule};
pub use stage::{FlowStage, Policies, PolicySnapshot};
pub use table::{
    FlowConfig, FlowInfo, FlowKey, FlowPage, FlowStats, FlowTable, FlowTimeouts, FlowVerdict,
    NatSetup, SetupCredit, TcpState,
};
