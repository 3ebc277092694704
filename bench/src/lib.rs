//! Benchmarks of vrouter: the traffic generator / sink used by `scripts/bench.sh` (over
//! pmd-shim and virtio-user ports) and the frame templates it sends.

pub mod frames;
pub mod gaps;
pub mod latency;

/// A line for the end of a micro-benchmark's report: how fast the core ran against the TSC,
/// measured now. The cycle figures are TSC cycles (what DPDK's `rte_rdtsc` counts); times
/// this ratio, they are the core's own cycles.
pub fn clock_note() -> String {
    match pmd_shim::cycles::core_per_tsc() {
        Some(r) => format!(
            "core clock / TSC at the end: {r:.2} (figures are TSC cycles; core cycles = TSC \
             cycles x {r:.2})"
        ),
        None => "core clock / TSC: not measurable on this CPU".to_string(),
    }
}

/// Pins the calling thread to CPU `cpu` (vr-pace's and vr-gaps' threads: each measures one
/// CPU, so it must not move).
pub fn pin_to_cpu(cpu: usize) -> anyhow::Result<()> {
    use anyhow::Context;
    let mut set = rustix::thread::CpuSet::new();
    set.set(cpu);
    rustix::thread::sched_setaffinity(None, &set).with_context(|| format!("pinning to CPU {cpu}"))
}

/// Wall-clock milliseconds since the Unix epoch (0 if the clock is before it): what the
/// generator's seconds and vr-pace's probes are matched on in the report.
pub fn unix_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}
