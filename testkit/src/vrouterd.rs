//! vrouterd under test: started with its own control socket, socket base and EAL file prefix
//! (so tests run side by side), driven through the real control API, stopped with SIGTERM.

use std::path::{Path, PathBuf};
use std::process::ExitStatus;
use std::time::Duration;

use control_api::api::{MacAddr, VhostUserMode, VifInfo, VifRequest, VifType};
use control_api::BlockingClient;

use crate::process::TestProcess;

/// A running vrouterd with a private directory for its sockets.
pub struct Vrouterd {
    pub process: TestProcess,
    dir: PathBuf,
    /// The private directory when this instance made it (removed on drop); `None` when the
    /// caller owns it ([`Vrouterd::start_in`]).
    _owned: Option<tempfile::TempDir>,
    client: BlockingClient,
}

impl Vrouterd {
    /// Starts `binary` with `args` (vrouterd options, before the EAL ones) and `eal` (after `--`;
    /// `--no-pci`, a memory size and a unique file prefix are added), and waits until its control
    /// API answers.
    pub fn start(binary: &Path, args: &[&str], eal: &[&str]) -> Vrouterd {
        Self::start_netns(None, binary, args, eal)
    }

    /// As [`Vrouterd::start`], inside network namespace `netns` when given: a compute node of
    /// its own, whose fabric and pod interfaces live there (and whose AF_PACKET fanout groups
    /// cannot collide with another vrouterd's).
    pub fn start_netns(
        netns: Option<&crate::netns::Netns>,
        binary: &Path,
        args: &[&str],
        eal: &[&str],
    ) -> Vrouterd {
        let dir = tempfile::Builder::new()
            .prefix("vrouterd-test")
            .tempdir()
            .expect("temporary directory");
        let mut vr = Vrouterd::start_in_netns(dir.path(), netns, binary, args, eal);
        vr._owned = Some(dir);
        vr
    }

    /// Like [`Vrouterd::start`], but in a directory the caller owns (control socket
    /// `dir/vrouter.sock`, socket base `dir/pods`, EAL file prefix derived from `dir`), so a
    /// second vrouterd can be started with the same configuration after the first one stopped.
    pub fn start_in(dir: &Path, binary: &Path, args: &[&str], eal: &[&str]) -> Vrouterd {
        Self::start_in_netns(dir, None, binary, args, eal)
    }

    /// [`Vrouterd::start_in`] inside an optional network namespace.
    pub fn start_in_netns(
        dir: &Path,
        netns: Option<&crate::netns::Netns>,
        binary: &Path,
        args: &[&str],
        eal: &[&str],
    ) -> Vrouterd {
        crate::hugepages::ensure(1024);
        let control = dir.join("vrouter.sock");
        let base = dir.join("pods");
        std::fs::create_dir_all(&base).expect("socket base");
        let prefix = format!(
            "--file-prefix=vrt{}x{}",
            std::process::id(),
            dir.file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default()
        );
        let mut full: Vec<String> = vec![
            "--control-socket".into(),
            control.display().to_string(),
            "--socket-base".into(),
            base.display().to_string(),
        ];
        full.extend(args.iter().map(|a| a.to_string()));
        full.push("--".into());
        full.extend(["--no-pci".into(), "-m".into(), "256".into(), prefix]);
        full.extend(eal.iter().map(|a| a.to_string()));
        let mut process = match netns {
            None => TestProcess::spawn(binary, &full),
            Some(ns) => {
                let mut wrapped: Vec<String> = vec![
                    "netns".into(),
                    "exec".into(),
                    ns.name().into(),
                    binary.display().to_string(),
                ];
                wrapped.extend(full);
                TestProcess::spawn(Path::new("/usr/sbin/ip"), &wrapped)
            }
        };
        // Generous: EAL start-up on a loaded 2-core machine can take a while.
        process.wait_for_output("control API listening", Duration::from_secs(120));
        let client = BlockingClient::new(&control).expect("control client");
        Vrouterd {
            process,
            dir: dir.to_path_buf(),
            _owned: None,
            client,
        }
    }

    /// The directory vhost-user socket directories must lie under.
    pub fn socket_base(&self) -> PathBuf {
        self.dir.join("pods")
    }

    pub fn control_socket(&self) -> PathBuf {
        self.dir.join("vrouter.sock")
    }

    /// Runs control API calls: `vr.api(|c| async move { c.vifs().await })`.
    pub fn api<T, F, Fut>(&self, f: F) -> T
    where
        F: FnOnce(control_api::Client) -> Fut,
        Fut: std::future::Future<Output = T>,
    {
        self.client.run(f)
    }

    /// `GET /vifs/{name}`; panics (failing the test) if it errs.
    pub fn vif(&self, name: &str) -> VifInfo {
        let name = name.to_owned();
        self.api(|c| async move { c.vif(&name).await })
            .expect("GET /vifs/{name}")
    }

    /// Polls `GET /vifs/{name}` until `until` holds (returning that view) or `timeout` passes
    /// (failing the test with `what`, the last view and vrouterd's output).
    pub fn wait_vif(
        &self,
        name: &str,
        timeout: Duration,
        what: &str,
        until: impl Fn(&VifInfo) -> bool,
    ) -> VifInfo {
        match crate::wait::poll(timeout, || self.vif(name), until) {
            Ok(v) => v,
            Err(v) => panic!(
                "{what}: not within {timeout:?}; {name} is {v:?}\n{}",
                self.process.outputs()
            ),
        }
    }

    /// `GET /health`; panics (failing the test) if it errs.
    pub fn health(&self) -> control_api::api::Health {
        self.api(|c| async move { c.health().await })
            .expect("GET /health")
    }

    /// How many file descriptors the process has open (entries of `/proc/<pid>/fd`).
    pub fn open_fds(&self) -> usize {
        std::fs::read_dir(format!("/proc/{}/fd", self.process.pid()))
            .map(|d| d.count())
            .unwrap_or(0)
    }

    /// How many memory mappings the process has (lines of `/proc/<pid>/maps`).
    pub fn mappings(&self) -> usize {
        std::fs::read_to_string(format!("/proc/{}/maps", self.process.pid()))
            .map(|m| m.lines().count())
            .unwrap_or(0)
    }

    /// Its resident set size in KiB (`VmRSS` of `/proc/<pid>/status`).
    pub fn rss_kib(&self) -> u64 {
        std::fs::read_to_string(format!("/proc/{}/status", self.process.pid()))
            .unwrap_or_default()
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.split_whitespace().next()?.parse().ok())
            .unwrap_or(0)
    }

    /// SIGKILL (a crash: nothing cleaned up), then waits for the exit; returns the status.
    pub fn kill(mut self) -> ExitStatus {
        self.process.signal("KILL");
        self.process.wait(Duration::from_secs(30))
    }

    /// SIGTERM, then waits for the exit; returns the status.
    pub fn stop(mut self) -> ExitStatus {
        self.process.signal("TERM");
        self.process.wait(Duration::from_secs(30))
    }
}

/// A vhost-user vif in VRF 1 with its socket at `dir/file`, vrouterd in `mode` on it.
pub fn vhost_user_vif(
    name: &str,
    mac: MacAddr,
    dir: &Path,
    file: &str,
    mode: VhostUserMode,
) -> VifRequest {
    let mut req = VifRequest::new(name, VifType::VhostUser, 1, mac);
    req.vhostsocket_dir = Some(dir.to_path_buf());
    req.vhostsocket_filename = Some(file.to_owned());
    req.vhostuser_mode = Some(mode);
    req
}
