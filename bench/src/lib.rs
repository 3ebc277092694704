//! Benchmarks of vrouter: the traffic generator / sink used by `scripts/bench.sh` (over
//! pmd-shim and virtio-user ports) and the frame templates it sends.

pub mod frames;
