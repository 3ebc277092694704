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
//! - `frontend`: a small vhost-user frontend (socket + memfd guest memory + driver-side rings)
//!   used by this crate's tests, fuzz targets and benchmarks (feature `test-frontend`).
//!
//! # Wiring it into a vrouter
//!
//! One vhost thread owns every [`VhostUserPort`]; forwarding threads own [`Virtqueue`]s, split
//! or packed as the frontend negotiated (`VIRTIO_F_RING_PACKED`).
//! Guest memory is an `Arc`: a queue keeps its mapping alive, so a forwarding thread can never
//! touch unmapped memory, and the mapping goes away when the last queue is dropped. Queue
//! hand-back is an explicit handshake: a message that touches a running vring (its
//! `GET_VRING_BASE`, a new memory table, a reset, …) is held until the vhost thread returns the
//! vring with [`VhostUserPort::return_queue`].
//!
//! ```no_run
//! use std::time::{Duration, Instant};
//! use vhost_user::{Mode, PortConfig, PortEvent, VecBuffer, VhostUserPort};
//!
//! let mut port = VhostUserPort::new(PortConfig::new("/var/run/vrouter/pod/net1", Mode::Server))?;
//! let mut lent = Vec::new(); // stands in for "sent to the owning lcore"
//! let mut events = Vec::new();
//! loop {
//!     // Real code polls every port's `poll_fd()` together, with the earliest `next_deadline()`.
//!     port.wait(Duration::from_millis(100));
//!     events.clear();
//!     port.process(Instant::now(), &mut events);
//!     for ev in events.clone() {
//!         match ev {
//!             PortEvent::QueueReady(i) => lent.push(port.take_queue(i)?),
//!             PortEvent::QueueStop(i) => {
//!                 // Ask the lcore for vring i back, wait for it, then:
//!                 if let Some(k) = lent.iter().position(|q| q.index() == i) {
//!                     port.return_queue(lent.remove(k), &mut events);
//!                 }
//!             }
//!             PortEvent::Disconnected => lent.clear(), // lcores drop their queues
//!             PortEvent::Connected => {}
//!         }
//!     }
//!     // On an lcore: `rx_queue.enqueue_burst(&mbufs)` / `tx_queue.dequeue_burst(&mut mbufs)`,
//!     // or `vhost_user::forward_burst(&mut tx_of_a, &mut rx_of_b, 32)` between two split
//!     // rings of two pods.
//!     # let _ = VecBuffer::with_capacity(0);
//!     # break;
//! }
//! # Ok::<(), vhost_user::Error>(())
//! ```
//!
//! Vring `2p` is queue pair `p`'s guest RX (the backend enqueues), `2p + 1` its guest TX (the
//! backend dequeues). Checksum and segmentation offloads (CSUM, GUEST_CSUM, HOST/GUEST_TSO4/6,
//! ECN, USO) are offered: what a guest sends is checked and handed over with the packet
//! ([`PacketBuffer::set_net_hdr`]), and what the driver gives with a packet is written for the
//! guest ([`PacketBuffer::net_hdr`]); [`net_hdr`] says what each field means.

pub mod codec;
pub mod connection;
pub mod error;
#[cfg(any(test, feature = "test-frontend"))]
pub mod frontend;
pub mod memory;
/// The virtio-net header, defined once for every port that speaks it.
pub use virtio_net_hdr as net_hdr;
pub mod port;
pub mod session;
#[cfg(test)]
mod test_support;
pub mod virtqueue;

pub use error::{DecodeError, Error, MemoryError};
pub use net_hdr::NetHdr;
pub use port::{Mode, PortConfig, PortEvent, PortState, VhostUserPort};
pub use session::{Session, SessionConfig};
pub use virtqueue::{
    forward_burst, PackedQueue, PacketBuffer, QueueStats, SplitQueue, VecBuffer, Virtqueue,
};
