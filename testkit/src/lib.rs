//! Shared helpers for tests that use real peers. One place for them, so no test copies its own.
//!
//! - [`hugepages`]: make sure 2 MiB pages are reserved and hugetlbfs is mounted.
//! - [`netns`]: network namespaces, veth pairs and commands run inside them.
//! - [`kernel_pod`]: a namespace pod on a veth, and TCP transfers checked end to end.
//! - [`overlay`]: compute nodes (vrouterd in a namespace, a fabric, a kernel pod) and tunnels
//!   between them.
//! - [`testpmd`]: `dpdk-testpmd` pods attached over virtio-user.
//! - [`traffic`]: a testpmd pod's traffic to another through vrouterd, counted exactly.
//! - [`frontend_pod`]: a vhost-user pod played by the in-repo frontend (hostile on cue).
//! - [`process`]: a child process under test, its output captured, stopped by signal.
//! - [`vrouterd`]: vrouterd started with private sockets and driven through its control API.
//! - [`vm`]: real Linux guests under QEMU (TCG) on vhost-user, driven by a command agent;
//!   negotiated virtio features and TCP transfers checked end to end.
//! - [`wait`]: waiting on a condition (never on the clock), failing with what was seen last.

pub mod bgp;
pub mod frontend_pod;
pub mod hugepages;
pub mod icmp;
pub mod kernel_pod;
pub mod netns;
pub mod overlay;
pub mod process;
pub mod testpmd;
pub mod traffic;
pub mod vm;
pub mod vrouterd;
pub mod wait;
