//! A pure-Rust vhost-user backend for the vrouter's pod-facing ports.
//!
//! Layers, each its own module:
//! - [`codec`]: the wire format (header, payloads, fds), decode and encode.
//! - [`session`]: the protocol state machine, sans I/O: messages in, replies and queue
//!   hand-over events out.
//! - [`memory`]: the frontend's memory table mapped into this process; the only `unsafe` here.
//! - [`virtqueue`]: split-virtqueue burst dequeue/enqueue and guest-to-guest copy, generic over
//!   the [`virtqueue::PacketBuffer`] trait.
//! - [`connection`] and [`port`]: non-blocking sockets (server and client mode) driving a session.
//! - [`frontend`]: a small vhost-user frontend (socket + memfd guest memory + driver-side rings)
//!   used by this crate's tests, fuzz targets and benchmarks.

pub mod codec;
pub mod connection;
pub mod error;
pub mod frontend;
pub mod memory;
pub mod port;
pub mod session;
pub mod virtqueue;

pub use error::{DecodeError, Error, MemoryError};
pub use port::{Mode, PortConfig, PortEvent, PortState, VhostUserPort};
pub use session::{Session, SessionConfig};
pub use virtqueue::{forward_burst, PacketBuffer, SplitQueue, VecBuffer};
