//! `dpdk-testpmd` pods attached over a `net_virtio_user` vdev: the real DPDK frontend that
//! vhost-user tests talk to.
//!
//! Each pod gets its own `--file-prefix`, runs `--no-pci` with `--single-file-segments` (the
//! virtio-user frontend shares its memory one file per segment list, which keeps the memory table
//! within the 8 regions vhost-user allows), and is stopped on drop, after which its hugepage files
//! and runtime directory are removed. Hugepages are set up with `scripts/hugepages.sh` first.
//!
//! The pod runs testpmd's interactive prompt on its stdin, forwarding from the start: a test can
//! ask it for its counts while it runs ([`TestpmdPod::totals`]), which is how it knows the pod
//! has taken everything vrouterd delivered before stopping it.
//!
//! Stopping is graceful (`quit` at the prompt, as an operator quits it), with SIGKILL only when
//! that does not work in time. Why: on this machine's kernel (6.18, a firecracker guest), when
//! vrouterd runs with `--idle-sleep-us` on the pods' CPU, reaping a stopped testpmd sometimes
//! spins the reaping thread inside `wait4` (release_task → proc_invalidate_siblings_dcache →
//! shrink_dcache_parent) for minutes, at 100 % of a core. A signal makes it likely, a graceful
//! quit rare; without idle sleep it was not seen.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::hugepages;
use crate::wait;

/// How to start one testpmd pod.
#[derive(Debug, Clone)]
pub struct TestpmdConfig {
    /// The vhost-user socket path.
    pub socket: PathBuf,
    /// `server=1`: testpmd creates the socket (the backend is the client).
    pub server: bool,
    /// Virtqueue size (`queue_size=`).
    pub queue_size: u16,
    /// Queue pairs (`queues=`).
    pub queues: u16,
    /// `mrg_rxbuf=` on or off.
    pub mrg_rxbuf: bool,
    /// `packed_vq=`: packed virtqueues (`VIRTIO_F_RING_PACKED`) instead of split ones.
    pub packed_vq: bool,
    /// `--forward-mode=` (io, macswap, rxonly, txonly, …).
    pub forward_mode: String,
    /// `-l` lcore list (testpmd needs a main lcore plus one forwarding lcore).
    pub lcores: String,
    /// Memory for the pod in MiB (`-m`).
    pub memory_mb: u32,
    /// `--file-prefix`; unique per process by default.
    pub file_prefix: String,
    /// More testpmd application arguments (after `--`), e.g. `--max-pkt-len=9600`.
    pub extra_app_args: Vec<String>,
    /// Run as this unprivileged `(user, group)` (through `setpriv`), as a pod that is not root.
    /// Such a pod cannot create hugetlbfs files or read physical addresses, so it runs
    /// `--in-memory` (memfd huge pages) with IOVA as VA.
    pub run_as: Option<(String, String)>,
}

static NEXT: AtomicU32 = AtomicU32::new(0);

impl TestpmdConfig {
    /// A config for `socket` with defaults: client mode (the backend serves), queue size 256, one
    /// queue pair, mergeable buffers on, io forwarding, lcores 0,1, 256 MiB, unique prefix.
    pub fn new(socket: impl Into<PathBuf>) -> Self {
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        Self {
            socket: socket.into(),
            server: false,
            queue_size: 256,
            queues: 1,
            mrg_rxbuf: true,
            packed_vq: false,
            forward_mode: String::from("io"),
            lcores: String::from("0,1"),
            memory_mb: 256,
            file_prefix: format!("tpmd{}x{}", std::process::id(), n),
            extra_app_args: Vec::new(),
            run_as: None,
        }
    }

    /// A pod that sends UDP from `src` to `dst` as fast as it can (`txonly`), addressed to the
    /// vrouter's gateway MAC, in 64 MiB; a virtio-user client (its vif is in server mode).
    pub fn sender(socket: impl Into<PathBuf>, src: &str, dst: &str) -> Self {
        Self {
            forward_mode: String::from("txonly"),
            memory_mb: 64,
            extra_app_args: vec![
                String::from("--eth-peer=0,00:00:5e:00:01:00"),
                format!("--tx-ip={src},{dst}"),
            ],
            ..Self::new(socket)
        }
    }

    /// A pod that counts what it receives and drops it (`rxonly`), in 64 MiB; a virtio-user
    /// client (its vif is in server mode).
    pub fn receiver(socket: impl Into<PathBuf>) -> Self {
        Self {
            forward_mode: String::from("rxonly"),
            memory_mb: 64,
            ..Self::new(socket)
        }
    }

    /// The pod as virtio-user server: it creates the socket, and its vif is in client mode.
    pub fn as_server(self) -> Self {
        Self {
            server: true,
            ..self
        }
    }

    /// The pod with packed virtqueues (`packed_vq=1`).
    pub fn packed(self) -> Self {
        Self {
            packed_vq: true,
            ..self
        }
    }

    /// Starts the pod; fails the test if it cannot.
    pub fn start(self) -> TestpmdPod {
        let what = format!("starting testpmd ({})", self.forward_mode);
        TestpmdPod::start(self).unwrap_or_else(|e| panic!("{what}: {e}"))
    }

    /// The command line this config runs.
    pub fn args(&self) -> Vec<String> {
        let vdev = format!(
            "net_virtio_user0,path={},queues={},queue_size={},mrg_rxbuf={},server={}{}",
            self.socket.display(),
            self.queues,
            self.queue_size,
            u8::from(self.mrg_rxbuf),
            u8::from(self.server),
            if self.packed_vq { ",packed_vq=1" } else { "" }
        );
        let mut a = vec![
            format!("-l{}", self.lcores),
            String::from("--no-pci"),
            String::from("--single-file-segments"),
            format!("--file-prefix={}", self.file_prefix),
            format!("-m{}", self.memory_mb),
            format!("--vdev={vdev}"),
            String::from("--log-level=user1,info"),
            String::from("--"),
            String::from("--interactive"),
            format!("--forward-mode={}", self.forward_mode),
            format!("--rxq={}", self.queues),
            format!("--txq={}", self.queues),
            format!("--rxd={}", self.queue_size),
            format!("--txd={}", self.queue_size),
            String::from("--nb-cores=1"),
            String::from("--auto-start"),
            String::from("--total-num-mbufs=8192"),
        ];
        a.extend(self.extra_app_args.iter().cloned());
        if self.run_as.is_some() {
            a.insert(1, String::from("--in-memory"));
            a.insert(2, String::from("--iova-mode=va"));
        }
        a
    }

    /// The program and arguments that start the pod (behind `setpriv` when unprivileged).
    /// testpmd's output is line-buffered (`stdbuf`): into a pipe it would otherwise sit in
    /// testpmd's buffer, and what it answers at its prompt would not be seen until it exits.
    pub fn command(&self) -> (String, Vec<String>) {
        let mut a = Vec::new();
        if let Some((user, group)) = &self.run_as {
            a.extend([
                String::from("setpriv"),
                format!("--reuid={user}"),
                format!("--regid={group}"),
                String::from("--clear-groups"),
            ]);
        }
        a.extend(["stdbuf", "-oL", "-eL", "dpdk-testpmd"].map(String::from));
        a.extend(self.args());
        let program = a.remove(0);
        (program, a)
    }
}

/// A running testpmd pod. Killed (SIGKILL) and cleaned up on drop.
#[derive(Debug)]
pub struct TestpmdPod {
    child: Option<Child>,
    stdin: Option<ChildStdin>,
    cfg: TestpmdConfig,
    log: Arc<Mutex<Vec<String>>>,
    readers: Vec<std::thread::JoinHandle<()>>,
}

impl TestpmdPod {
    /// Starts testpmd (reserving hugepages first). Returns once the process runs; use
    /// [`TestpmdPod::wait_for_log`] to wait for a given line.
    pub fn start(cfg: TestpmdConfig) -> std::io::Result<Self> {
        hugepages::ensure(512);
        let (program, args) = cfg.command();
        let mut child = Command::new(program)
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()?;
        let log = Arc::new(Mutex::new(Vec::new()));
        let mut readers = Vec::new();
        for out in [
            child
                .stdout
                .take()
                .map(|s| Box::new(s) as Box<dyn std::io::Read + Send>),
            child
                .stderr
                .take()
                .map(|s| Box::new(s) as Box<dyn std::io::Read + Send>),
        ]
        .into_iter()
        .flatten()
        {
            let log = Arc::clone(&log);
            readers.push(std::thread::spawn(move || {
                for line in BufReader::new(out).lines().map_while(Result::ok) {
                    if let Ok(mut l) = log.lock() {
                        l.push(line);
                    }
                }
            }));
        }
        // Keep stdin open: testpmd without `-i` exits when it reads EOF there.
        let stdin = child.stdin.take();
        Ok(Self {
            child: Some(child),
            stdin,
            cfg,
            log,
            readers,
        })
    }

    /// The config it runs with.
    pub fn config(&self) -> &TestpmdConfig {
        &self.cfg
    }

    /// Everything testpmd printed so far.
    pub fn log(&self) -> Vec<String> {
        self.log.lock().map(|l| l.clone()).unwrap_or_default()
    }

    /// Whether a line containing `needle` was printed within `timeout`.
    pub fn wait_for_log(&self, needle: &str, timeout: Duration) -> bool {
        wait::poll(
            timeout,
            || self.log().iter().any(|l| l.contains(needle)),
            |&printed| printed,
        )
        .is_ok()
    }

    /// What the pod has counted so far, asked at its prompt while it forwards; `None` if it
    /// does not answer within `timeout`.
    pub fn totals(&mut self, timeout: Duration) -> Option<PodTotals> {
        let asked = self.log().len();
        self.enter("show fwd stats all");
        // The answer is complete with the rule under the accumulated block.
        wait::poll(
            timeout,
            || {
                let log = self.log();
                let answer = log.get(asked..).unwrap_or_default();
                let block = answer
                    .iter()
                    .position(|l| l.contains(ACCUMULATED))
                    .map(|at| &answer[at..]);
                block
                    .filter(|b| b.iter().skip(1).any(|l| l.trim().starts_with("++++")))
                    .and_then(PodTotals::parse)
            },
            Option::is_some,
        )
        .ok()
        .flatten()
    }

    /// Types `line` at the pod's prompt.
    fn enter(&mut self, line: &str) {
        use std::io::Write;
        if let Some(stdin) = self.stdin.as_mut() {
            let _ = writeln!(stdin, "{line}");
            let _ = stdin.flush();
        }
    }

    /// Whether the process is still running.
    pub fn is_running(&mut self) -> bool {
        matches!(self.child.as_mut().map(|c| c.try_wait()), Some(Ok(None)))
    }

    /// Stops forwarding the way an operator would (`quit` at its prompt), waits for it to print
    /// its accumulated statistics and exit, and returns them. `None` if it did not exit within
    /// `timeout` or printed no statistics (it is killed then).
    pub fn finish(&mut self, timeout: Duration) -> Option<PodTotals> {
        self.enter("quit");
        let exited = wait::poll(timeout, || self.is_running(), |&running| !running).is_ok();
        self.kill();
        if !exited {
            return None;
        }
        PodTotals::parse(&self.log())
    }

    /// Stops the pod gracefully, as [`TestpmdPod::finish`] does, falling back to SIGKILL after
    /// `timeout`; cleans up its files either way.
    pub fn stop(&mut self, timeout: Duration) {
        let _ = self.finish(timeout);
    }

    /// The process id, while the pod runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Freezes the pod (SIGSTOP): it stops touching its memory and rings but keeps its
    /// connection open, so what happens next is the backend's doing alone.
    pub fn freeze(&self) {
        if let Some(pid) = self.pid() {
            let status = Command::new("kill")
                .args(["-STOP", &pid.to_string()])
                .status()
                .expect("running kill");
            assert!(status.success(), "kill -STOP {pid} failed");
        }
    }

    /// Kills the pod now (SIGKILL, like a crashed pod) and cleans up its files. See the module
    /// notes before using it in a test that must not stall: prefer [`TestpmdPod::stop`].
    pub fn kill(&mut self) {
        let mut reaped = true;
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            // Bounded: on a loaded machine a killed pod can take long to be reaped, and a test
            // must not hang on it (the kernel finishes the exit on its own).
            reaped = wait::poll(
                Duration::from_secs(10),
                || matches!(c.try_wait(), Ok(Some(_))),
                |&gone| gone,
            )
            .is_ok();
        }
        // The output readers end at EOF; join them so their pipes and stacks are gone too
        // (tests count fds and mappings after a pod dies). If the pod is not gone yet they may
        // not have seen EOF: leave them to finish on their own.
        for r in self.readers.drain(..) {
            if reaped || r.is_finished() {
                let _ = r.join();
            }
        }
        cleanup_prefix(&self.cfg.file_prefix);
    }
}

/// The heading of testpmd's totals over all ports.
const ACCUMULATED: &str = "Accumulated forward statistics for all ports";

/// What testpmd's forwarding engine counted over its whole run, from its accumulated
/// statistics: packets received, packets the port accepted for sending, and packets it refused.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PodTotals {
    pub rx_packets: u64,
    pub tx_packets: u64,
    pub tx_dropped: u64,
}

impl PodTotals {
    /// Parses the last block after `Accumulated forward statistics for all ports`.
    pub fn parse(log: &[String]) -> Option<PodTotals> {
        let start = log.iter().rposition(|l| l.contains(ACCUMULATED))?;
        let mut t = PodTotals::default();
        let field = |line: &str, name: &str| -> Option<u64> {
            let rest = line.split(name).nth(1)?;
            rest.split_whitespace().next()?.parse().ok()
        };
        for line in &log[start..] {
            if let Some(v) = field(line, "RX-packets:") {
                t.rx_packets = v;
            }
            if let Some(v) = field(line, "TX-packets:") {
                t.tx_packets = v;
            }
            if let Some(v) = field(line, "TX-dropped:") {
                t.tx_dropped = v;
            }
        }
        Some(t)
    }
}

impl Drop for TestpmdPod {
    fn drop(&mut self) {
        self.stop(Duration::from_secs(10));
        if self.cfg.server {
            let _ = std::fs::remove_file(&self.cfg.socket);
        }
    }
}

/// Removes the hugepage files and runtime directory a DPDK process with `prefix` left behind.
pub fn cleanup_prefix(prefix: &str) {
    for f in hugepage_files(prefix) {
        let _ = std::fs::remove_file(f);
    }
    let _ = std::fs::remove_dir_all(Path::new("/var/run/dpdk").join(prefix));
}

/// The hugetlbfs files of a DPDK process with `prefix` (one per memory segment list with
/// `--single-file-segments`): the memory its virtio-user frontend shares with the backend.
pub fn hugepage_files(prefix: &str) -> Vec<PathBuf> {
    let mut files = Vec::new();
    for dir in hugetlbfs_mounts() {
        if let Ok(rd) = std::fs::read_dir(&dir) {
            for e in rd.flatten() {
                if e.file_name()
                    .to_string_lossy()
                    .starts_with(&format!("{prefix}map_"))
                {
                    files.push(e.path());
                }
            }
        }
    }
    files
}

/// Mount points of hugetlbfs, from /proc/mounts.
pub(crate) fn hugetlbfs_mounts() -> Vec<PathBuf> {
    std::fs::read_to_string("/proc/mounts")
        .unwrap_or_default()
        .lines()
        .filter_map(|l| {
            let mut f = l.split_whitespace();
            let (_, dir, fs) = (f.next()?, f.next()?, f.next()?);
            (fs == "hugetlbfs").then(|| PathBuf::from(dir))
        })
        .collect()
}
