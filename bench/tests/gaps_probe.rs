//! vr-gaps watches CPUs for the time taken from a busy poller: a real-time hog on the watched
//! CPU is a stall of its length, and the figures hang together.

use std::process::{Command, Stdio};
use std::time::Duration;

fn lines(out: &[u8]) -> Vec<serde_json::Value> {
    String::from_utf8_lossy(out)
        .lines()
        .map(|l| serde_json::from_str(l).expect("a JSON line"))
        .collect()
}

#[test]
fn a_hog_on_the_watched_cpu_is_a_stall_of_its_length() {
    let gaps = Command::new(env!("CARGO_BIN_EXE_vr-gaps"))
        .args(["--cpus", "0", "--ms", "800"])
        .stdout(Stdio::piped())
        .spawn()
        .expect("vr-gaps starts");
    std::thread::sleep(Duration::from_millis(200));
    // 60 ms of CPU 0 at real-time priority, which the watching thread (normal priority, on
    // CPU 0 only) must wait out.
    let hog = Command::new("chrt")
        .args(["-f", "10", "taskset", "-c", "0", "python3", "-c"])
        .arg("import time\ne = time.monotonic() + 0.06\nwhile time.monotonic() < e: pass")
        .status()
        .expect("chrt, taskset and python3 run");
    assert!(hog.success(), "the real-time hog failed: {hog}");
    let out = gaps.wait_with_output().expect("vr-gaps ends");
    assert!(out.status.success());
    let cpus = lines(&out.stdout);
    assert_eq!(cpus.len(), 1, "one line per watched CPU");
    let c = &cpus[0];
    assert_eq!(c["cpu"], 0);
    let longest = c["longest_us"].as_f64().unwrap();
    assert!(
        longest >= 50_000.0,
        "longest stall {longest} µs, the hog ran 60 ms"
    );
    assert!(c["stalls_per_s"]["over_1ms"].as_f64().unwrap() >= 1.0 / 0.9);
    // 60 ms of about 800: at least 6 % lost.
    let lost = c["lost_pct"].as_f64().unwrap();
    assert!((6.0..100.0).contains(&lost), "lost {lost} %");
}

#[test]
fn each_cpu_is_watched_for_the_time_asked() {
    let out = Command::new(env!("CARGO_BIN_EXE_vr-gaps"))
        .args(["--cpus", "0,1", "--ms", "300"])
        .output()
        .expect("vr-gaps runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let cpus = lines(&out.stdout);
    let ids: Vec<_> = cpus.iter().map(|c| c["cpu"].as_u64().unwrap()).collect();
    assert_eq!(ids, [0, 1]);
    for c in &cpus {
        let secs = c["seconds"].as_f64().unwrap();
        assert!((0.29..0.6).contains(&secs), "watched {secs} s of 0.3");
        let s = &c["stalls_per_s"];
        let (a, b, m) = (
            s["over_10us"].as_f64().unwrap(),
            s["over_100us"].as_f64().unwrap(),
            s["over_1ms"].as_f64().unwrap(),
        );
        assert!(a >= b && b >= m, "{c}");
        let longest = c["longest_us"].as_f64().unwrap();
        assert_eq!(longest >= 10.0, a > 0.0, "{c}");
    }
}
