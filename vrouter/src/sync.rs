//! The atomics the flow table synchronises with: `std`'s, or loom's models of them when built
//! with `--cfg loom`, so that `tests/flow_loom.rs` explores the real table's protocol (every
//! interleaving of a few threads, and the stale values `Relaxed` loads may return) rather than
//! a copy of it. Plain re-exports: the normal build compiles to `std`'s atomics as before.
//!
//! A spin loop waits with [`spin_loop`]: loom's yields to the other threads, without which a
//! modelled thread spinning on a lock would never let its holder run.

#[cfg(not(loom))]
pub(crate) use std::hint::spin_loop;
#[cfg(not(loom))]
pub(crate) use std::sync::atomic::{fence, AtomicU32, AtomicU64, AtomicUsize, Ordering};

#[cfg(loom)]
pub(crate) use loom::hint::spin_loop;
#[cfg(loom)]
pub(crate) use loom::sync::atomic::{fence, AtomicU32, AtomicU64, AtomicUsize, Ordering};
