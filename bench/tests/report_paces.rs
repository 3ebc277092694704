//! `bench/report.py` compares two cases only at one pace of the host (what it reads from the
//! placement probes beside each run) and keeps the host's stalls per CPU, on made-up runs.

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::{json, Value};

/// A probe every 500 ms from `from_ms` to `to_ms` (exclusive), each `ns`.
fn probes(from_ms: u64, to_ms: u64, ns: f64) -> Vec<Value> {
    (from_ms..to_ms)
        .step_by(500)
        .map(|t| json!([t + 450, ns]))
        .collect()
}

/// A throughput run of `case` at 64 B: one rate a second, each second ending at 1000 ms
/// steps from `start_ms`, with `probes` beside it (none: a run from before the probes).
fn run(case: &str, rates: &[f64], start_ms: u64, probes: Option<Vec<Value>>) -> Value {
    let ends: Vec<u64> = (1..=rates.len() as u64)
        .map(|i| start_ms + i * 1000)
        .collect();
    let mut sorted = rates.to_vec();
    sorted.sort_by(f64::total_cmp);
    let mut result = json!({
        "summary": true,
        "frame_bytes": 64,
        "rx_mpps_median": sorted[sorted.len() / 2],
        "rx_mpps_per_second": rates,
        "loss_ratio": 0.0,
        "warmup_seconds": 3,
        "steady": true,
    });
    let mut line = json!({"case": case, "rep": 1});
    if let Some(p) = probes {
        result["unix_ms_per_second"] = json!(ends);
        line["pace"] = json!(p);
    }
    line["result"] = result;
    line
}

/// Runs report.py on `lines`; its records by (case, frame).
fn report(dir: &Path, lines: &[Value]) -> Vec<Value> {
    std::fs::create_dir_all(dir).unwrap();
    let raw = dir.join("raw.jsonl");
    let text: String = lines.iter().map(|l| format!("{l}\n")).collect();
    std::fs::write(&raw, text).unwrap();
    let stem = dir.join("out");
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("report.py");
    let out = Command::new("/usr/bin/python3")
        .arg(&script)
        .arg(&raw)
        .arg(&stem)
        .args(["2500000", "test machine", "test"])
        .output()
        .expect("python3 runs");
    assert!(
        out.status.success(),
        "report.py failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let json = std::fs::read_to_string(stem.with_extension("json")).unwrap();
    serde_json::from_str(&json).unwrap()
}

fn record<'a>(records: &'a [Value], case: &str) -> &'a Value {
    records
        .iter()
        .find(|r| r["case"] == case && r["frame_bytes"] == 64 && r.get("mpps_median").is_some())
        .unwrap_or_else(|| panic!("no record of {case}"))
}

fn scratch(name: &str) -> PathBuf {
    std::env::temp_dir().join(format!("vr-report-{name}-{}", std::process::id()))
}

#[test]
fn ratios_are_taken_at_one_pace_and_refused_across_two() {
    const NEAR: f64 = 50.0;
    const FAR: f64 = 400.0;
    let dir = scratch("paces");
    // The ceiling: three seconds near at 20 Mpps, then the host moves the CPUs apart and it
    // runs two at 13. vrouterd-l3 runs near only, the flow case far only; the flows-1 case
    // near only against an OVS case that ran far only.
    let mut ceiling_probes = probes(0, 3000, NEAR);
    ceiling_probes.extend(probes(3000, 5000, FAR));
    let records = report(
        &dir,
        &[
            run(
                "testpmd-ceiling",
                &[20.0, 20.0, 20.0, 13.0, 13.0],
                0,
                Some(ceiling_probes),
            ),
            run(
                "ovs-l3-flows-1",
                &[6.0, 6.0, 6.0],
                10_000,
                Some(probes(10_000, 13_000, FAR)),
            ),
            run(
                "vrouterd-l3",
                &[12.0, 12.0, 12.0],
                20_000,
                Some(probes(20_000, 23_000, NEAR)),
            ),
            run(
                "vrouterd-l3-flows-1",
                &[11.0, 11.0],
                30_000,
                Some(probes(30_000, 32_000, NEAR)),
            ),
            run(
                "vrouterd-l3-flows-65536",
                &[7.0, 7.0, 7.0],
                40_000,
                Some(probes(40_000, 43_000, FAR)),
            ),
        ],
    );

    let ceiling = record(&records, "testpmd-ceiling");
    assert_eq!(ceiling["mpps_by_pace"]["near"], 20.0);
    assert_eq!(ceiling["mpps_by_pace"]["far"], 13.0);
    assert_eq!(ceiling["mpps_by_pace"]["seconds"]["near"], 3);
    assert_eq!(ceiling["mpps_by_pace"]["seconds"]["far"], 2);

    // Near against near: 12 / 20, not against the ceiling's median over both paces.
    let l3 = record(&records, "vrouterd-l3");
    assert_eq!(l3["ratio_to_ceiling"], 0.6);
    assert_eq!(l3["ratio_to_ceiling_pace"], "near");

    // Far against far: 7 / 13.
    let flows = record(&records, "vrouterd-l3-flows-65536");
    assert_eq!(flows["ratio_to_ceiling"], 0.538);
    assert_eq!(flows["ratio_to_ceiling_pace"], "far");

    // No pace in common with OVS: no ratio, and the reason.
    let flows1 = record(&records, "vrouterd-l3-flows-1");
    assert_eq!(flows1["ratio_to_ceiling"], 0.55);
    assert_eq!(flows1["ratio_to_ovs"], Value::Null);
    let why = flows1["ratios_refused"]["ovs-l3-flows-1"]
        .as_str()
        .expect("the refusal says why");
    assert!(why.contains("one pace"), "{why}");
    let md = std::fs::read_to_string(dir.join("out.md")).unwrap();
    assert!(md.contains("≠ pace"), "{md}");
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn results_from_before_the_probes_are_compared_as_they_were() {
    let dir = scratch("unprobed");
    let records = report(
        &dir,
        &[
            run("testpmd-ceiling", &[20.0, 20.0, 13.0], 0, None),
            run("vrouterd-l3", &[10.0, 10.0, 10.0], 10_000, None),
        ],
    );
    let l3 = record(&records, "vrouterd-l3");
    assert_eq!(l3["ratio_to_ceiling"], 0.5);
    assert_eq!(l3["ratio_to_ceiling_pace"], Value::Null);
    assert_eq!(l3["mpps_by_pace"], Value::Null);
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn a_probe_that_timed_the_scheduler_does_not_decide_a_pace() {
    // Near probes with one of 8 ms among them (one side off its CPU): still one pace.
    let dir = scratch("scheduler");
    let mut p = probes(0, 3000, 50.0);
    p[2] = json!([1450, 8_000_000.0]);
    let records = report(
        &dir,
        &[
            run("testpmd-ceiling", &[20.0, 20.0, 20.0], 0, Some(p)),
            run(
                "vrouterd-l3",
                &[12.0, 12.0, 12.0],
                10_000,
                Some(probes(10_000, 13_000, 52.0)),
            ),
        ],
    );
    let ceiling = record(&records, "testpmd-ceiling");
    assert_eq!(ceiling["mpps_by_pace"]["seconds"]["near"], 3);
    assert_eq!(ceiling["mpps_by_pace"]["seconds"]["far"], 0);
    assert_eq!(record(&records, "vrouterd-l3")["ratio_to_ceiling"], 0.6);
    std::fs::remove_dir_all(&dir).ok();
}

/// The host's stalls (vr-gaps before and after the run) are kept per CPU, each with the rate
/// above which a 1024-entry ring overflows during its longest stall, and shown in the table.
#[test]
fn host_stalls_bound_the_rate_a_ring_rides_out() {
    let dir = scratch("host-gaps");
    let cpu = |cpu: u64, longest_us: f64| {
        json!({"cpu": cpu, "seconds": 2.0, "lost_pct": 0.8, "longest_us": longest_us,
               "stalls_per_s": {"over_10us": 370.0, "over_100us": 2.5, "over_1ms": 0.5}})
    };
    let records = report(
        &dir,
        &[
            json!({"host_gaps": {"when": "before", "cpus": [cpu(0, 2048.0), cpu(1, 512.0)]}}),
            run("testpmd-ceiling", &[10.0, 10.0, 10.0], 1_000_000, None),
            json!({"host_gaps": {"when": "after", "cpus": [cpu(0, 0.0), cpu(1, 1024.0)]}}),
        ],
    );
    let gaps: Vec<&Value> = records
        .iter()
        .filter(|r| r["kind"] == "host_gaps")
        .collect();
    assert_eq!(gaps.len(), 2);
    assert_eq!(gaps[0]["when"], "before");
    let bound =
        |g: &Value, i: usize| g["cpus"][i]["ring_outlasts_longest_stall_below_mpps"].clone();
    // 1024 packets in 2048 µs: 0.5 Mpps; in 512 µs, 2 Mpps; no stall, no bound.
    assert_eq!(bound(gaps[0], 0), json!(0.5));
    assert_eq!(bound(gaps[0], 1), json!(2.0));
    assert_eq!(bound(gaps[1], 0), Value::Null);
    assert_eq!(bound(gaps[1], 1), json!(1.0));
    let md = std::fs::read_to_string(dir.join("out.md")).unwrap();
    assert!(
        md.contains("| before | 0 | 0.80 % | 370 / 2.5 / 0.5 | 2048 | 0.500 |"),
        "{md}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// A latency step keeps the host's stalls of the generator's CPU and whether its share was
/// taken of a peak at its own pace; the table marks the steps that were not (`*`).
#[test]
fn latency_steps_say_which_peak_they_took_a_share_of() {
    let dir = scratch("step-peak");
    let step = |pct: u64, at_step_pace: Option<bool>, stalls: f64| {
        let mut line = json!({
            "case": "vrouterd-l3",
            "latency_load_pct": pct,
            "result": {"summary": true, "frame_bytes": 64,
                       "latency": {"samples": 1000, "p50_us": 1.0, "p99_us": 9.0, "p999_us": 40.0, "max_us": 90.0},
                       "generator_stalls": {"over_100us_per_s": 2.0, "over_1ms_per_s": stalls, "longest_us": 1500.0}},
            "switch_poll_gaps": null,
            "pace": [[1_000_000, 50.0], [1_006_000, 50.0]],
        });
        if let Some(b) = at_step_pace {
            line["peak"] = json!({"pps": 12_000_000, "at_step_pace": b});
        }
        line
    };
    let records = report(
        &dir,
        &[
            run(
                "vrouterd-l3",
                &[12.0, 12.0, 12.0],
                900_000,
                Some(probes(900_000, 903_000, 50.0)),
            ),
            step(10, Some(true), 0.5),
            step(50, Some(false), 3.0),
            step(90, None, 0.0),
        ],
    );
    let lat = records
        .iter()
        .find(|r| r["kind"] == "latency")
        .expect("a latency record");
    assert_eq!(
        lat["peak_at_step_pace"],
        json!({"10": true, "50": false, "90": null})
    );
    assert_eq!(lat["generator_stalls"]["50"]["over_1ms_per_s"], 3.0);
    let md = std::fs::read_to_string(dir.join("out.md")).unwrap();
    let row = md
        .lines()
        .find(|l| l.starts_with("| vrouterd-l3 | 64 B | 1.0 / 9.0"))
        .unwrap_or_else(|| panic!("no latency row in {md}"));
    assert!(row.ends_with("| 3.0 | n n* n |"), "{row}");
    let _ = std::fs::remove_dir_all(&dir);
}
