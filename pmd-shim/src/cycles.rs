//! CPU cycle counting for benchmarks and busy-ratio accounting.

use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// The time-stamp counter: a cheap, monotonic (invariant TSC) cycle count.
#[inline]
pub fn rdtsc() -> u64 {
    #[cfg(target_arch = "x86_64")]
    {
        // SAFETY: RDTSC exists on every x86_64 CPU and has no memory effects.
        unsafe { core::arch::x86_64::_rdtsc() }
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        // SAFETY: DPDK's rte_rdtsc reads the platform's cycle counter.
        unsafe { crate::sys::vr_rdtsc() }
    }
}

/// TSC ticks per second, measured once against the monotonic clock (about 20 ms).
/// Works without EAL, so benchmarks of pure-Rust code can use it.
pub fn tsc_hz() -> u64 {
    static HZ: OnceLock<u64> = OnceLock::new();
    *HZ.get_or_init(|| {
        let t0 = Instant::now();
        let c0 = rdtsc();
        std::thread::sleep(Duration::from_millis(20));
        let c1 = rdtsc();
        let ns = t0.elapsed().as_nanos().max(1);
        ((u128::from(c1.wrapping_sub(c0)) * 1_000_000_000) / ns) as u64
    })
}
