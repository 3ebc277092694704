//! The crate's error type: what failed, with what value.

use crate::memory::RegionSpec;

/// Guest-memory failures: a refused memory table or an access outside it.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum MemoryError {
    /// The table has no region or more than the protocol allows.
    #[error("memory table has {0} regions (must be 1..=8)")]
    RegionCount(usize),
    /// One fd per region is required.
    #[error("memory table declares {regions} regions but carries {fds} fds")]
    FdCount { regions: usize, fds: usize },
    /// A zero-length region.
    #[error("memory region {0} has size 0")]
    EmptyRegion(usize),
    /// Address arithmetic of a region overflows u64.
    #[error("memory region {region} overflows u64: {spec:?}")]
    Overflow { region: usize, spec: RegionSpec },
    /// Two regions overlap in guest-physical or frontend-virtual space.
    #[error("memory regions {a} and {b} overlap")]
    Overlap { a: usize, b: usize },
    /// fstat on the region's fd failed.
    #[error("fstat of memory region {region} failed: {errno}")]
    Stat {
        region: usize,
        errno: rustix::io::Errno,
    },
    /// The region's file is shorter than offset + size: mapping it would SIGBUS on access.
    #[error(
        "memory region {region} needs {needed} bytes of its file but the file has {file_size}"
    )]
    FileTooSmall {
        region: usize,
        needed: u64,
        file_size: u64,
    },
    /// mmap refused.
    #[error("mmap of memory region {region} ({len} bytes) failed: {errno}")]
    Mmap {
        region: usize,
        len: usize,
        errno: rustix::io::Errno,
    },
    /// Every slot of the fault handler's registry is taken.
    #[error("more than {0} guest memory tables are mapped at once")]
    TooManyTables(usize),
    /// The SIGBUS handler that contains guest-memory faults is not installed, so mapping guest
    /// memory would let a guest that truncates its file crash the process.
    #[error("the guest-memory fault handler could not be installed")]
    NoFaultHandler,
    /// An access outside every mapped region.
    #[error("guest range {addr:#x}+{len} is not in mapped memory")]
    OutOfRange { addr: u64, len: u64 },
    /// A ring that is not aligned as the spec requires.
    #[error("guest address {addr:#x} is not aligned to {align}")]
    Misaligned { addr: u64, align: u64 },
}

/// Decoding failures of vhost-user messages.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum DecodeError {
    /// Header flags carry a version other than 1.
    #[error("message version {0} is not 1")]
    Version(u32),
    /// A request with the REPLY flag set.
    #[error("request {0} has the reply flag set")]
    ReplyFlag(u32),
    /// Payload size larger than any valid message.
    #[error("payload size {size} exceeds the maximum {max}")]
    PayloadTooLarge { size: u32, max: usize },
    /// Payload size does not match what the request carries.
    #[error("request {request} carries {got} payload bytes, expected {expected}")]
    PayloadSize {
        request: u32,
        got: usize,
        expected: usize,
    },
    /// Wrong number of fds for the request.
    #[error("request {request} carries {got} fds, expected {expected}")]
    FdCount {
        request: u32,
        got: usize,
        expected: usize,
    },
    /// A field holds a value the protocol does not allow.
    #[error("request {request}: invalid {field} {value}")]
    Invalid {
        request: u32,
        field: &'static str,
        value: u64,
    },
}

/// Errors of the crate's control side (sessions, sockets).
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A malformed message.
    #[error("bad message: {0}")]
    Decode(#[from] DecodeError),
    /// A refused memory table or guest access.
    #[error("guest memory: {0}")]
    Memory(#[from] MemoryError),
    /// A vring index outside the device's queues.
    #[error("vring index {0} out of range")]
    VringIndex(u32),
    /// A queue that is not configured far enough to run.
    #[error("vring {index} is not ready: {why}")]
    NotReady { index: u16, why: &'static str },
    /// Socket I/O failed.
    #[error("socket {path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
    /// The peer broke the protocol on the stream (framing lost, oversize, flood, timeout).
    #[error("peer {0}")]
    Peer(String),
    /// The frontend took its memory away under us (truncated, shrank or punched a hole in the
    /// file behind a region): the device is broken until a new frontend maps new memory.
    #[error("guest memory fault at {gpa:#x}: the frontend truncated or shrank its memory file")]
    GuestMemoryFault { gpa: u64 },
}
