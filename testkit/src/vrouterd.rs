//! vrouterd under test: started with its own control socket, socket base and EAL file prefix
//! (so tests run side by side), driven through the real control API, stopped with SIGTERM.

use std::fmt::Debug;
use std::path::{Path, PathBuf};
use std::process::ExitStatus;
use std::time::Duration;

use control_api::api::{
    IpPrefix, MacAddr, Nexthop, Route, VhostUserMode, VifInfo, VifRequest, VifState, VifType,
};
use control_api::BlockingClient;

use crate::process::TestProcess;
use crate::wait;

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

    /// Polls `GET /vifs/{name}` until `done` holds, and returns that view; fails the test with
    /// `what`, the last view and vrouterd's output if it does not hold within
    /// [`wait::DEADLINE`].
    pub fn wait_vif(&self, name: &str, what: &str, done: impl Fn(&VifInfo) -> bool) -> VifInfo {
        self.wait_until(what, || self.vif(name), done)
    }

    /// Waits until vif `name` is connected (a vhost-user peer attached, its rings polled).
    pub fn wait_connected(&self, name: &str) -> VifInfo {
        self.wait_vif(name, &format!("{name} connects"), connected)
    }

    /// [`wait::until`] with [`wait::DEADLINE`], failing the test with vrouterd's output too.
    pub fn wait_until<T: Debug>(
        &self,
        what: &str,
        observe: impl FnMut() -> T,
        done: impl Fn(&T) -> bool,
    ) -> T {
        match wait::poll(wait::DEADLINE, observe, done) {
            Ok(seen) => seen,
            Err(seen) => panic!(
                "{what}: not within {:?}; last seen: {seen:?}\n{}",
                wait::DEADLINE,
                self.process.outputs()
            ),
        }
    }

    /// `POST /vifs`; panics (failing the test) if it errs.
    pub fn add_vif(&self, req: &VifRequest) -> VifInfo {
        let (name, req) = (req.name.clone(), req.clone());
        self.api(|c| async move { c.vif_add(&req).await })
            .unwrap_or_else(|e| panic!("adding vif {name}: {e}"))
    }

    /// An af-packet vif `name` in VRF `vrf` on `pod`'s host-side veth end.
    pub fn add_af_packet_vif(&self, name: &str, vrf: u32, pod: &crate::kernel_pod::KernelPod) {
        let mut req = VifRequest::new(name, VifType::AfPacket, vrf, MacAddr(pod.mac));
        req.iface = Some(pod.host_side.clone());
        self.add_vif(&req);
    }

    /// `PUT /nexthops/{id}`; panics (failing the test) if it errs.
    pub fn set_nexthop(&self, id: u32, nh: Nexthop) {
        self.api(|c| async move { c.nexthop_set(id, &nh).await })
            .unwrap_or_else(|e| panic!("nexthop {id}: {e}"));
    }

    /// A route to `prefix` in VRF 1 through nexthop `nexthop`; panics (failing the test) if it
    /// is refused.
    pub fn set_route(&self, prefix: &str, nexthop: u32) {
        let route = Route {
            prefix: prefix
                .parse::<IpPrefix>()
                .unwrap_or_else(|e| panic!("prefix {prefix}: {e}")),
            nexthop,
            label: None,
        };
        self.api(|c| async move { c.route_set(1, &route).await })
            .unwrap_or_else(|e| panic!("route to {prefix}: {e}"));
    }

    /// VRF 1 and in it one vhost-user vif per pod `(nexthop id, name, mac, prefix)`, vrouterd
    /// the server on `net0` in the pod's own directory under the socket base, `prefix` routed
    /// to it; `tweak` sets what a test needs on each vif (MTU, queues). Returns the sockets.
    pub fn vhost_pods(
        &self,
        pods: &[(u32, &str, MacAddr, &str)],
        tweak: impl Fn(&mut VifRequest),
    ) -> Vec<PathBuf> {
        self.api(|c| async move { c.vrf_add(1).await })
            .expect("vrf 1");
        let base = self.socket_base();
        let mut socks = Vec::new();
        for &(id, name, mac, prefix) in pods {
            let dir = base.join(name);
            let mut v = vhost_user_vif(name, mac, &dir, "net0", VhostUserMode::Server);
            tweak(&mut v);
            self.add_vif(&v);
            self.route_to(id, name, mac, &[prefix]);
            socks.push(dir.join("net0"));
        }
        socks
    }

    /// Routes `prefixes` in VRF 1 to vif `vif`: nexthop `id` sends there, to `mac`.
    pub fn route_to(&self, id: u32, vif: &str, mac: MacAddr, prefixes: &[&str]) {
        self.set_nexthop(
            id,
            Nexthop::Encap {
                vif: vif.to_owned(),
                dmac: mac,
            },
        );
        for prefix in prefixes {
            self.set_route(prefix, id);
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

    /// Open fds, mappings and resident memory now, to compare over a test.
    pub fn usage(&self) -> Usage {
        Usage {
            fds: self.open_fds(),
            maps: self.mappings(),
            rss_kib: self.rss_kib(),
        }
    }

    /// Whether the process maps a file whose path contains `needle` (a pod's memory, say).
    pub fn maps_file(&self, needle: &str) -> bool {
        std::fs::read_to_string(format!("/proc/{}/maps", self.process.pid()))
            .unwrap_or_default()
            .lines()
            .any(|l| l.contains(needle))
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

/// What vrouterd holds of the machine at one moment, from [`Vrouterd::usage`].
#[derive(Debug, Clone, Copy)]
pub struct Usage {
    pub fds: usize,
    pub maps: usize,
    pub rss_kib: u64,
}

/// Whether the vif is connected (a vhost-user peer attached, its rings polled).
pub fn connected(v: &VifInfo) -> bool {
    v.status.state == VifState::Connected
}

/// Packets vrouterd received from the vif.
pub fn rx_packets(v: &VifInfo) -> u64 {
    v.status.counters.rx_packets
}

/// Packets vrouterd sent to the vif.
pub fn tx_packets(v: &VifInfo) -> u64 {
    v.status.counters.tx_packets
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

/// Builds vrouterctl (another package of the workspace) and returns its path, which is next to
/// `vrouterd` (the binary a test runs).
pub fn vrouterctl_bin(vrouterd: &Path) -> PathBuf {
    let workspace = Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("testkit lies in the workspace");
    let status = std::process::Command::new(env!("CARGO"))
        .current_dir(workspace)
        .args([
            "build",
            "--locked",
            "-p",
            "control-api",
            "--bin",
            "vrouterctl",
        ])
        .status()
        .expect("cargo build vrouterctl");
    assert!(status.success(), "building vrouterctl failed");
    let bin = vrouterd.with_file_name("vrouterctl");
    assert!(bin.is_file(), "{} after the build", bin.display());
    bin
}
