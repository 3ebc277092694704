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

/// Nanoseconds the calling thread has spent on a CPU, to the nanosecond (the kernel adds the
/// running slice when asked; `/proc/thread-self/schedstat` only moves at scheduler ticks, 4 ms
/// here, too coarse for benchmark runs of a few tens of milliseconds).
pub fn thread_cpu_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec for the call's duration;
    // CLOCK_THREAD_CPUTIME_ID exists on every Linux this builds for.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    if rc != 0 {
        return 0;
    }
    u64::try_from(ts.tv_sec).unwrap_or(0) * 1_000_000_000 + u64::try_from(ts.tv_nsec).unwrap_or(0)
}

/// The core's clock over the TSC's, measured now: a chain of `n` dependent multiplies takes
/// `3 n` core cycles (IMUL's latency on Intel's big cores since Nehalem and AMD's since Zen;
/// not on Atom-class or Bulldozer cores, where this ratio is off) at whatever frequency
/// the core runs (turbo, or slowed by its sibling's load), against the TSC's fixed rate.
/// Multiply TSC cycles by it for core cycles. (Not adds of an immediate: recent cores fold
/// those chains at rename.) None where the loop cannot be written (not x86_64).
pub fn core_per_tsc() -> Option<f64> {
    #[cfg(target_arch = "x86_64")]
    {
        const MULS: u64 = 2_000_000;
        const LATENCY: f64 = 3.0;
        let mut best = u64::MAX;
        // The fastest of three: a preemption only ever adds TSC time.
        for _ in 0..3 {
            let t0 = rdtsc();
            let mut x = 1u64;
            // SAFETY: register-only arithmetic on `x` and a counter; no memory, no stack, no
            // flags the compiler relies on across the block.
            unsafe {
                core::arch::asm!(
                    "2:",
                    "imul {x}, {x}",
                    "imul {x}, {x}",
                    "imul {x}, {x}",
                    "imul {x}, {x}",
                    "sub {n}, 4",
                    "jnz 2b",
                    x = inout(reg) x,
                    n = inout(reg) MULS => _,
                    options(nomem, nostack),
                );
            }
            best = best.min(rdtsc().saturating_sub(t0).max(1));
            std::hint::black_box(x);
        }
        Some(MULS as f64 * LATENCY / best as f64)
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn thread_cpu_time_counts_work_finely_and_not_sleep() {
        let t0 = thread_cpu_ns();
        let mut x = 0u64;
        for i in 0..2_000_000u64 {
            x = std::hint::black_box(x.wrapping_add(i));
        }
        let t1 = thread_cpu_ns();
        assert!(t1 > t0, "work took CPU time");
        // Finer than a scheduler tick: two reads in a row differ by far less than 1 ms.
        let (a, b) = (thread_cpu_ns(), thread_cpu_ns());
        assert!(b >= a && b - a < 1_000_000);
        std::thread::sleep(Duration::from_millis(50));
        let t2 = thread_cpu_ns();
        assert!(
            t2 - t1 < 25_000_000,
            "sleeping is not CPU time: {} ns",
            t2 - t1
        );
    }

    #[cfg(target_arch = "x86_64")]
    #[test]
    fn core_clock_ratio_is_plausible() {
        // Between 0.2 and 4 core cycles per TSC tick: any real CPU, throttled or boosted.
        let r = core_per_tsc().expect("measured on x86_64");
        assert!((0.2..4.0).contains(&r), "core/TSC = {r}");
        eprintln!("core/TSC = {r:.3}");
    }
}
