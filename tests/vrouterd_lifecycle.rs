//! vrouterd as a process: it starts with a vdev fabric, polls on its forwarding lcore, exits 0
//! after --run-for or on SIGTERM/SIGINT, and leaves nothing behind in hugetlbfs or /var/run/dpdk.

use std::path::{Path, PathBuf};
use std::time::Duration;

use testkit::process::TestProcess;
use testkit::wait;

fn vrouterd() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_vrouterd"))
}

fn hugetlbfs_files() -> Vec<String> {
    let mounts = std::fs::read_to_string("/proc/mounts").unwrap_or_default();
    let mut files = Vec::new();
    for dir in mounts
        .lines()
        .filter(|l| l.split_whitespace().nth(2) == Some("hugetlbfs"))
    {
        if let Some(path) = dir.split_whitespace().nth(1) {
            if let Ok(entries) = std::fs::read_dir(path) {
                files.extend(entries.flatten().map(|e| e.path().display().to_string()));
            }
        }
    }
    files.sort();
    files
}

/// Asserts the process left no EAL runtime directory and no hugepage files of its own.
fn assert_nothing_left(prefix: &str, hugepage_files_before: &[String]) {
    let runtime = Path::new("/var/run/dpdk").join(prefix);
    assert!(!runtime.exists(), "{} was left behind", runtime.display());
    let after = hugetlbfs_files();
    let new: Vec<_> = after
        .iter()
        .filter(|f| !hugepage_files_before.contains(f))
        .collect();
    assert!(new.is_empty(), "hugetlbfs files left behind: {new:?}");
}

/// vrouterd's command line: `first`, then a forwarding lcore that naps 100 µs when idle and a
/// ring device as its fabric; per-test control socket and socket base (so tests run side by
/// side) and EAL file prefix.
fn args(dir: &tempfile::TempDir, prefix: &str, first: &[&str]) -> Vec<String> {
    let control = dir.path().join("vrouter.sock").display().to_string();
    let base = dir.path().join("pods").display().to_string();
    let file_prefix = format!("--file-prefix={prefix}");
    let mut args = vec!["--control-socket", &control, "--socket-base", &base];
    args.extend_from_slice(first);
    args.extend([
        "--idle-sleep-us",
        "100",
        "--mbufs",
        "4095",
        "--fabric",
        "net_ring0",
        "--",
        "--no-pci",
        "-m",
        "128",
        &file_prefix,
    ]);
    args.into_iter().map(String::from).collect()
}

/// How often the forwarding lcore (EAL's `rte-worker-1` thread of `pid`) gave up its CPU:
/// with `--idle-sleep-us` it naps after every idle poll.
fn lcore_naps(pid: u32) -> u64 {
    let tasks = format!("/proc/{pid}/task");
    std::fs::read_dir(&tasks)
        .into_iter()
        .flatten()
        .flatten()
        .filter(|t| {
            std::fs::read_to_string(t.path().join("comm"))
                .is_ok_and(|comm| comm.trim() == "rte-worker-1")
        })
        .filter_map(|t| std::fs::read_to_string(t.path().join("status")).ok())
        .filter_map(|status| {
            status
                .lines()
                .find_map(|l| l.strip_prefix("voluntary_ctxt_switches:"))
                .and_then(|n| n.trim().parse::<u64>().ok())
        })
        .sum()
}

fn polls_reported(stdout: &str) -> u64 {
    stdout
        .lines()
        .find_map(|l| l.strip_prefix("vrouterd: lcore 1: "))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or(0)
}

#[test]
fn run_for_two_seconds_with_a_vdev_fabric_then_exit_clean() {
    testkit::hugepages::ensure(512);
    let before = hugetlbfs_files();
    let prefix = format!("vr-life-{}", std::process::id());
    let dir = tempfile::tempdir().expect("tempdir");
    let args = args(
        &dir,
        &prefix,
        &["--run-for", "2", "--fwd-lcores", "1", "--vhost-lcore", "0"],
    );
    let mut p = TestProcess::spawn(&vrouterd(), &args);
    let status = p.wait(Duration::from_secs(30));
    assert!(status.success(), "exit status {status}\n{}", p.outputs());
    // It stopped on its own, because its --run-for time was up (by its own clock).
    assert!(
        p.stderr().contains("reason=\"--run-for elapsed\""),
        "{}",
        p.outputs()
    );
    let out = p.stdout();
    assert!(
        polls_reported(&out) > 0,
        "the forwarding lcore never polled\n{}",
        p.outputs()
    );
    assert!(out.contains("stopped cleanly"), "{}", p.outputs());
    assert!(p.stderr().contains("fabric port up"), "{}", p.outputs());
    assert_nothing_left(&prefix, &before);
    assert!(
        !dir.path().join("vrouter.sock").exists(),
        "control socket removed"
    );
}

#[test]
fn sigterm_and_sigint_stop_it_cleanly() {
    testkit::hugepages::ensure(512);
    for signal in ["TERM", "INT"] {
        let before = hugetlbfs_files();
        let prefix = format!("vr-sig{signal}-{}", std::process::id());
        let dir = tempfile::tempdir().expect("tempdir");
        let mut p = TestProcess::spawn(&vrouterd(), &args(&dir, &prefix, &[]));
        p.wait_for_output("forwarding lcore polling", Duration::from_secs(30));
        // Launched is not yet polled: the lcore has polled once it napped after idle polls
        // (more than the few times its thread waited before it was launched).
        let naps = wait::until(
            "the forwarding lcore polls",
            wait::DEADLINE,
            || lcore_naps(p.pid()),
            |&naps| naps >= 100,
        );
        eprintln!("SIG{signal}: the forwarding lcore napped {naps} times");
        p.signal(signal);
        let status = p.wait(Duration::from_secs(15));
        assert!(
            status.success(),
            "SIG{signal}: exit status {status}\n{}",
            p.outputs()
        );
        assert!(p.stderr().contains("reason=\"signal\""), "{}", p.outputs());
        assert!(polls_reported(&p.stdout()) > 0, "{}", p.outputs());
        assert_nothing_left(&prefix, &before);
        assert!(
            !dir.path().join("vrouter.sock").exists(),
            "control socket removed"
        );
    }
}

#[test]
fn help_documents_every_option() {
    let out = std::process::Command::new(vrouterd())
        .arg("--help")
        .output()
        .expect("vrouterd --help");
    assert!(out.status.success());
    let help = String::from_utf8_lossy(&out.stdout);
    for option in [
        "--control-socket",
        "--socket-base",
        "--fwd-lcores",
        "--vhost-lcore",
        "--fabric",
        "--run-for",
        "--idle-sleep-us",
        "--mbufs",
        "--log-level",
        "--state-dir",
        "EAL ARGS",
    ] {
        assert!(
            help.contains(option),
            "--help does not mention {option}:\n{help}"
        );
    }
}

#[test]
fn bad_options_are_refused_with_a_reason() {
    let out = std::process::Command::new(vrouterd())
        .args(["--fwd-lcores", "0", "--vhost-lcore", "0"])
        .output()
        .expect("vrouterd");
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("--vhost-lcore 0 is also in --fwd-lcores"),
        "{err}"
    );
}

#[test]
fn eal_failure_exits_nonzero_with_dpdk_reason() {
    testkit::hugepages::ensure(512);
    let prefix = format!("vr-ealfail-{}", std::process::id());
    let out = std::process::Command::new(vrouterd())
        .args([
            "--run-for",
            "1",
            "--",
            "--no-pci",
            "-m",
            "10000000",
            &format!("--file-prefix={prefix}"),
        ])
        .output()
        .expect("vrouterd");
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("starting DPDK: EAL initialisation failed"),
        "{err}"
    );
    assert!(err.contains("scripts/hugepages.sh"), "{err}");
    let _ = std::fs::remove_dir_all(Path::new("/var/run/dpdk").join(prefix));
}

/// `GET /stats` for the one forwarding lcore.
fn lcore_gaps(vr: &testkit::vrouterd::Vrouterd) -> control_api::api::PollGaps {
    let stats = vr.api(|c| async move { c.stats().await }).expect("stats");
    assert_eq!(stats.lcores.len(), 1, "{stats:?}");
    stats.lcores[0].poll_gaps
}

/// A forwarding lcore counts the turns it began late (here: the whole process stopped, as a
/// CPU taken from it would), but not the turns after its own idle naps.
#[test]
fn an_lcore_counts_its_poll_gaps_but_not_its_naps() {
    testkit::hugepages::ensure(512);
    let busy = testkit::vrouterd::Vrouterd::start(&vrouterd(), &[], &[]);
    // A gap is counted from the lcore's previous turn: let it start turning first.
    std::thread::sleep(Duration::from_millis(300));
    for stop in 1..=3 {
        let before = lcore_gaps(&busy);
        busy.process.signal("STOP");
        std::thread::sleep(Duration::from_millis(20));
        busy.process.signal("CONT");
        // Counted when the lcore next turns its loop, which on a loaded machine may be a
        // while after the process is let go (and before the next stop, or the two would make
        // one gap).
        wait::poll(
            Duration::from_secs(10),
            || lcore_gaps(&busy),
            |g| g.over_1ms > before.over_1ms,
        )
        .unwrap_or_else(|last| panic!("stop {stop} of 20 ms: gaps {before:?} -> {last:?}"));
    }
    let after = lcore_gaps(&busy);
    assert!(after.over_10us >= after.over_100us && after.over_100us >= after.over_1ms);
    busy.stop();

    // Naps of 5 ms for a second: some 200 turns began 5 ms after the one before.
    let napping =
        testkit::vrouterd::Vrouterd::start(&vrouterd(), &["--idle-sleep-us", "5000"], &[]);
    let before = lcore_gaps(&napping);
    std::thread::sleep(Duration::from_secs(1));
    let after = lcore_gaps(&napping);
    assert!(
        after.over_1ms - before.over_1ms < 20,
        "naps counted as gaps: {before:?} -> {after:?}"
    );
    napping.stop();
}
