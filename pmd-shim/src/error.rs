//! The one error type of pmd-shim: what failed, with which value, and DPDK's own words for it.

use std::fmt;

/// An errno value as DPDK reported it, printed with DPDK's own `rte_strerror` text.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DpdkErrno(pub i32);

impl fmt::Display for DpdkErrno {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} (errno {})", crate::eal::strerror(self.0), self.0)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("EAL initialisation failed: {errno}: {hint}")]
    EalInit { errno: DpdkErrno, hint: String },
    #[error("EAL can be initialised only once per process (it was already {0})")]
    EalOnce(&'static str),
    #[error("EAL argument {0:?} contains a NUL byte")]
    EalArgument(String),
    #[error("{what} name {name:?} is invalid: {why}")]
    InvalidName {
        what: &'static str,
        name: String,
        why: &'static str,
    },
    #[error(
        "creating mempool {name:?} ({size} mbufs, cache {cache}, data room {data_room}): {errno}"
    )]
    MempoolCreate {
        name: String,
        size: u32,
        cache: u32,
        data_room: u16,
        errno: DpdkErrno,
    },
    #[error("mempool {name:?} has no free mbufs ({in_use} of {size} in use)")]
    MempoolExhausted {
        name: String,
        in_use: u32,
        size: u32,
    },
    #[error("creating ring {name:?} of {size} slots: {errno}")]
    RingCreate {
        name: String,
        size: u32,
        errno: DpdkErrno,
    },
    #[error("ring {name:?}: {why}")]
    RingHandle { name: String, why: &'static str },
    #[error("probing device {devargs:?}: {errno}")]
    DeviceProbe { devargs: String, errno: DpdkErrno },
    #[error(
        "no ethdev port named {0:?} (probed devices are named by their PCI address or vdev name)"
    )]
    PortNotFound(String),
    #[error("port {port} ({name}): {op} failed: {errno}")]
    Port {
        port: u16,
        name: String,
        op: &'static str,
        errno: DpdkErrno,
    },
    #[error("port {port} ({name}): {why}")]
    PortUsage {
        port: u16,
        name: String,
        why: String,
    },
    #[error("port {port} ({name}) cannot take MTU {mtu}: its largest is {max_mtu}")]
    MtuTooBig {
        port: u16,
        name: String,
        mtu: u16,
        max_mtu: u16,
    },
    #[error(
        "port {port} ({name}): MTU {mtu} frames do not fit its {room}-byte receive buffers and \
         the device cannot receive a frame into several"
    )]
    RxBuffersTooSmall {
        port: u16,
        name: String,
        mtu: u16,
        room: u16,
    },
    #[error("lcore {lcore}: {why}")]
    Lcore { lcore: u32, why: String },
    #[error("mbuf: {0}")]
    Mbuf(&'static str),
    #[error("kernel port on {iface:?}: {op}: {source}")]
    KernelPort {
        iface: String,
        op: &'static str,
        source: std::io::Error,
    },
}

pub type Result<T> = std::result::Result<T, Error>;
