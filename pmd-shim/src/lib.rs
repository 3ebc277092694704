//! DPDK 22.11 for vrouter: bindgen bindings, a C shim for DPDK's static-inline functions, and
//! safe wrappers. Every `unsafe` block of the DPDK side of the workspace lives in this crate.
//!
//! Ownership model: [`Eal`] is initialised once per process; every object holds an `Eal` handle so
//! EAL cleanup runs only after the last of them. An [`Mbuf`] is owned (freed on drop, never twice);
//! [`MbufBurst`] is a fixed array of them that bursts fill and drain without allocating. A port's
//! queues are handed out as [`RxQueue`]/[`TxQueue`] handles: owning one is the right to poll it.
//!
//! Beside the DPDK ports, [`KernelPort`] drives a kernel interface itself (an AF_PACKET socket
//! with its mmap ring, the other `unsafe` of the port drivers), keeping the kernel's per-packet
//! offload metadata that DPDK's `net_af_packet` drops.

pub mod burst;
pub mod cycles;
pub mod eal;
pub mod error;
pub mod kernel_port;
pub mod lcore;
pub mod mbuf;
pub mod memory;
pub mod mempool;
pub mod port;
pub mod ring;
mod sys;

pub use burst::{MbufBurst, BURST_MAX};
pub use eal::Eal;
pub use error::{DpdkErrno, Error, Result};
pub use kernel_port::{
    KernelPort, KernelPortConfig, KernelPortMonitor, KernelPortStats, KernelRx, KernelTx,
};
pub use lcore::{LcoreHandle, StopFlag};
pub use mbuf::{tx_flags, Mbuf, TxOffloadRequest};
pub use mempool::{Mempool, MempoolUsage};
pub use port::{
    EthPort, LinkStatus, PortConfig, PortQueues, PortStats, RxQueue, TxOffloads, TxQueue,
};
pub use ring::{mbuf_ring, RingConsumer, RingLevel, RingMode, RingProducer};
