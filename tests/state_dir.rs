//! `vrouterd --state-dir` and damaged files, against the real process:
//! - a record cut short at the end of the journal (a crash mid-append) is dropped with a
//!   warning naming the file and offset, and the rest is restored;
//! - a flipped byte inside the journal stops start-up (exit 1) with a message naming the file
//!   and the byte offset of the damaged record, before DPDK starts or the control socket opens,
//!   and the file is left as it was;
//! - without `--state-dir` nothing is written.

use std::path::{Path, PathBuf};
use std::time::Duration;

use control_api::journal::{Loaded, JOURNAL};
use testkit::process::TestProcess;
use testkit::vrouterd::Vrouterd;

fn vrouterd_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_vrouterd"))
}

fn vrfs(vr: &Vrouterd) -> Vec<u32> {
    vr.api(|c| async move { c.vrfs().await })
        .expect("GET /vrfs")
        .iter()
        .map(|v| v.vrf)
        .collect()
}

/// Byte offsets of the journal's records (read while no vrouterd holds the directory).
fn record_offsets(state: &Path) -> Vec<u64> {
    let loaded = Loaded::open(state).expect("state readable");
    loaded.records.iter().map(|r| r.offset).collect()
}

/// Every path below `dir`, relative to it.
fn tree(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        for e in std::fs::read_dir(&d).expect("read_dir").flatten() {
            let p = e.path();
            out.push(p.strip_prefix(dir).expect("below").to_path_buf());
            if p.is_dir() {
                todo.push(p);
            }
        }
    }
    out.sort();
    out
}

#[test]
fn torn_journal_tail_is_dropped_and_a_corrupt_record_stops_start_up_naming_file_and_offset() {
    let dir = tempfile::Builder::new()
        .prefix("vrouterd-state")
        .tempdir()
        .expect("temporary directory");
    let state = dir.path().join("state");
    let state_arg = state.display().to_string();
    let args = ["--state-dir", state_arg.as_str(), "--idle-sleep-us", "100"];

    let vr = Vrouterd::start_in(dir.path(), &vrouterd_bin(), &args, &[]);
    for vrf in [1, 2, 3] {
        vr.api(|c| async move { c.vrf_add(vrf).await })
            .expect("vrf add");
    }
    let status = vr.stop();
    assert!(status.success(), "vrouterd exit {status}");

    // Torn: the last record (vrf 3) loses its last bytes, as a crash mid-append leaves it.
    let journal = state.join(JOURNAL);
    let offsets = record_offsets(&state);
    assert_eq!(offsets.len(), 3, "one record per change");
    let len = std::fs::metadata(&journal).expect("journal").len();
    std::fs::OpenOptions::new()
        .write(true)
        .open(&journal)
        .and_then(|f| f.set_len(len - 4))
        .expect("cut the journal");
    let vr = Vrouterd::start_in(dir.path(), &vrouterd_bin(), &args, &[]);
    assert_eq!(vrfs(&vr), [0, 1, 2], "the torn change is not restored");
    let err = vr.process.stderr();
    assert!(
        err.contains(&format!("journal={}", journal.display()))
            && err.contains(&format!("offset={}", offsets[2]))
            && err.contains("cut short"),
        "a warning names the file and offset:\n{err}"
    );
    let status = vr.stop();
    assert!(status.success(), "vrouterd exit {status}");

    // Corrupt: one bit of the first record's payload flips.
    let mut bytes = std::fs::read(&journal).expect("journal");
    let at = offsets[0] + 12 + 5;
    bytes[at as usize] ^= 0x04;
    std::fs::write(&journal, &bytes).expect("write journal");
    let control = dir.path().join("vrouter.sock");
    let argv: Vec<String> = [
        "--control-socket",
        &control.display().to_string(),
        "--socket-base",
        &dir.path().join("pods").display().to_string(),
        "--state-dir",
        &state_arg,
        // Should it start after all, it stops by itself and the assertions below say why.
        "--run-for",
        "10",
        "--",
        "--no-pci",
        "-m",
        "256",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let mut p = TestProcess::spawn(&vrouterd_bin(), &argv);
    let status = p.wait(Duration::from_secs(60));
    let err = p.stderr();
    assert_eq!(status.code(), Some(1), "exit status {status}:\n{err}");
    assert!(
        err.contains(&journal.display().to_string())
            && err.contains(&format!("byte offset {}", offsets[0]))
            && err.contains("checksum mismatch"),
        "the error names the file and offset:\n{err}"
    );
    assert!(
        !err.contains("EAL"),
        "it stopped before DPDK started:\n{err}"
    );
    assert!(!control.exists(), "the control socket never opened");
    assert_eq!(
        std::fs::read(&journal).expect("journal"),
        bytes,
        "the damaged file is left for inspection"
    );
}

#[test]
fn without_state_dir_nothing_is_written() {
    let dir = tempfile::Builder::new()
        .prefix("vrouterd-nostate")
        .tempdir()
        .expect("temporary directory");
    let vr = Vrouterd::start_in(
        dir.path(),
        &vrouterd_bin(),
        &["--idle-sleep-us", "100"],
        &[],
    );
    vr.api(|c| async move { c.vrf_add(1).await })
        .expect("vrf add");
    let status = vr.stop();
    assert!(status.success(), "vrouterd exit {status}");
    assert_eq!(tree(dir.path()), [PathBuf::from("pods")]);
}
