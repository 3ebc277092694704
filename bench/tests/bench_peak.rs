//! `scripts/bench.sh` offers each latency step its share of the peak measured at the pace the
//! host is in just before the step: its `peak_at_pace` on made-up runs whose seconds and
//! probes are known.

use std::path::PathBuf;
use std::process::Command;

use serde_json::{json, Value};

/// A throughput run at 64 B: `rates` (Mpps) a second, second i ending at 1000 × (i + 1) ms
/// after `start_ms`, with one probe of `ns[i]` within each second.
fn run(rates: &[f64], start_ms: u64, ns: &[f64]) -> Value {
    let ends: Vec<u64> = (1..=rates.len() as u64)
        .map(|i| start_ms + i * 1000)
        .collect();
    let pace: Vec<Value> = ends
        .iter()
        .zip(ns)
        .map(|(e, n)| json!([e - 200, n]))
        .collect();
    let mut sorted = rates.to_vec();
    sorted.sort_by(f64::total_cmp);
    json!({"case": "vrouterd-l3", "rep": 1, "pace": pace, "result": {
        "frame_bytes": 64, "rx_mpps_median": sorted[sorted.len() / 2],
        "rx_mpps_per_second": rates, "unix_ms_per_second": ends}})
}

/// `peak_at_pace vrouterd-l3 64 <probe>` over `runs` (REPS = their number).
fn peak(name: &str, runs: &[Value], probe: &str) -> Value {
    let dir = std::env::temp_dir().join(format!("vr-bench-peak-{name}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let raw = dir.join("raw.jsonl");
    std::fs::write(
        &raw,
        runs.iter().map(|r| format!("{r}\n")).collect::<String>(),
    )
    .unwrap();
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../scripts/bench.sh");
    let out = Command::new("bash")
        .arg("-c")
        .arg(r#"eval "$(sed -n '/^peak_at_pace()/,/^}/p' "$1")"; raw=$2 REPS=$3 peak_at_pace vrouterd-l3 64 "$4""#)
        .arg("bash")
        .arg(&script)
        .arg(&raw)
        .arg(runs.len().to_string())
        .arg(probe)
        .output()
        .expect("bash and jq run");
    let _ = std::fs::remove_dir_all(&dir);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("one JSON object")
}

#[test]
fn a_step_takes_the_peak_of_its_own_pace() {
    // One run near (50 ns) for three seconds, then far (400 ns) for three.
    let runs = [run(
        &[12.0, 12.2, 12.4, 7.0, 7.2, 7.4],
        1_000_000,
        &[50.0, 50.0, 50.0, 400.0, 400.0, 400.0],
    )];
    assert_eq!(
        peak("near", &runs, "52"),
        json!({"pps": 12_200_000, "at_step_pace": true})
    );
    assert_eq!(
        peak("far", &runs, "410"),
        json!({"pps": 7_200_000, "at_step_pace": true})
    );
    // No probe before the step, or one that timed the scheduler: the median of the runs (of
    // each run's median: here the one run's, 12.0).
    for probe in ["null", "9000"] {
        assert_eq!(
            peak("none", &runs, probe),
            json!({"pps": 12_000_000, "at_step_pace": false}),
            "probe {probe}"
        );
    }
}

#[test]
fn a_step_at_a_pace_the_runs_never_met_is_marked() {
    // Every second far; the step's probe is near: the runs' own fastest probe must not make
    // their far seconds "near".
    let runs = [
        run(&[7.0, 7.1, 7.2], 1_000_000, &[400.0, 410.0, 420.0]),
        run(&[6.8, 6.9, 7.0], 2_000_000, &[400.0, 400.0, 400.0]),
    ];
    assert_eq!(
        peak("unmet", &runs, "50"),
        json!({"pps": 7_100_000, "at_step_pace": false})
    );
    assert_eq!(
        peak("met", &runs, "405"),
        json!({"pps": 7_000_000, "at_step_pace": true})
    );
}
