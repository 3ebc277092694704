//! Real Linux guests: QEMU (TCG) booting a Debian kernel and a busybox initramfs, attached to
//! vrouterd over vhost-user, driven through a command agent on a virtio-serial port.
//!
//! The guest is built by `scripts/vm-image.sh` (run once per test process, a no-op when built).
//! Its `/init` loads the virtio modules, configures `eth0` from the kernel command line
//! (`vr.ip=`, `vr.gw=`, `vr.mtu=`) and serves requests on the port named `vr.agent`: one line
//! `ID BASE64(COMMAND)` in, one line `@@ID EXIT_CODE BASE64(OUTPUT)` out. The test owns the
//! listening end of that channel (QEMU connects to it), so there is no race at start-up: the
//! first answer is the boot-complete signal.
//!
//! Why TCG: KVM guests hang at boot on these machines. Why fd-backed shared RAM: a vhost-user
//! backend maps the guest's memory from the file descriptors QEMU sends it.

use std::io::{ErrorKind, Read, Write};
use std::net::{IpAddr, Ipv4Addr};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use control_api::api::{MacAddr, Nexthop, VhostUserMode};

use crate::kernel_pod::KernelPod;
use crate::process::TestProcess;
use crate::vrouterd::{vhost_user_vif, Vrouterd};

/// Virtio-net feature bits (virtio 1.2, 5.1.3), as the guest reports them.
pub mod feature {
    pub const CSUM: u32 = 0;
    pub const GUEST_CSUM: u32 = 1;
    pub const CTRL_GUEST_OFFLOADS: u32 = 2;
    pub const MTU: u32 = 3;
    pub const MAC: u32 = 5;
    pub const GUEST_TSO4: u32 = 7;
    pub const GUEST_TSO6: u32 = 8;
    pub const GUEST_ECN: u32 = 9;
    pub const GUEST_UFO: u32 = 10;
    pub const HOST_TSO4: u32 = 11;
    pub const HOST_TSO6: u32 = 12;
    pub const HOST_ECN: u32 = 13;
    pub const HOST_UFO: u32 = 14;
    pub const MRG_RXBUF: u32 = 15;
    pub const STATUS: u32 = 16;
    pub const CTRL_VQ: u32 = 17;
    pub const CTRL_RX: u32 = 18;
    pub const CTRL_VLAN: u32 = 19;
    pub const GUEST_ANNOUNCE: u32 = 21;
    pub const MQ: u32 = 22;
    pub const CTRL_MAC_ADDR: u32 = 23;
    pub const ANY_LAYOUT: u32 = 27;
    pub const INDIRECT_DESC: u32 = 28;
    pub const EVENT_IDX: u32 = 29;
    /// VHOST_USER_F_PROTOCOL_FEATURES: a vhost-user bit, in the backend's view only.
    pub const PROTOCOL_FEATURES: u32 = 30;
    pub const VERSION_1: u32 = 32;
    pub const ACCESS_PLATFORM: u32 = 33;
    pub const RING_PACKED: u32 = 34;
    pub const IN_ORDER: u32 = 35;

    /// Names of the bits set in `bits` (unknown ones as `bit<N>`), for logs and messages.
    pub fn names(bits: u64) -> Vec<String> {
        const KNOWN: &[(u32, &str)] = &[
            (CSUM, "CSUM"),
            (GUEST_CSUM, "GUEST_CSUM"),
            (CTRL_GUEST_OFFLOADS, "CTRL_GUEST_OFFLOADS"),
            (MTU, "MTU"),
            (MAC, "MAC"),
            (GUEST_TSO4, "GUEST_TSO4"),
            (GUEST_TSO6, "GUEST_TSO6"),
            (GUEST_ECN, "GUEST_ECN"),
            (GUEST_UFO, "GUEST_UFO"),
            (HOST_TSO4, "HOST_TSO4"),
            (HOST_TSO6, "HOST_TSO6"),
            (HOST_ECN, "HOST_ECN"),
            (HOST_UFO, "HOST_UFO"),
            (MRG_RXBUF, "MRG_RXBUF"),
            (STATUS, "STATUS"),
            (CTRL_VQ, "CTRL_VQ"),
            (CTRL_RX, "CTRL_RX"),
            (CTRL_VLAN, "CTRL_VLAN"),
            (GUEST_ANNOUNCE, "GUEST_ANNOUNCE"),
            (MQ, "MQ"),
            (CTRL_MAC_ADDR, "CTRL_MAC_ADDR"),
            (ANY_LAYOUT, "ANY_LAYOUT"),
            (INDIRECT_DESC, "INDIRECT_DESC"),
            (EVENT_IDX, "EVENT_IDX"),
            (PROTOCOL_FEATURES, "PROTOCOL_FEATURES"),
            (VERSION_1, "VERSION_1"),
            (ACCESS_PLATFORM, "ACCESS_PLATFORM"),
            (RING_PACKED, "RING_PACKED"),
            (IN_ORDER, "IN_ORDER"),
        ];
        (0..64)
            .filter(|b| bits & (1u64 << b) != 0)
            .map(|b| {
                KNOWN
                    .iter()
                    .find(|(k, _)| *k == b)
                    .map_or_else(|| format!("bit{b}"), |(_, n)| (*n).to_owned())
            })
            .collect()
    }
}

/// Where the guest's RAM comes from. Either way it is shared and fd-backed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GuestRam {
    /// A file on hugetlbfs (2 MiB pages), as DPDK compute nodes run their VMs.
    Hugepages,
    /// A memfd of ordinary pages: takes no hugepages from the pool the DPDK processes share.
    Memfd,
}

/// How to boot one guest.
#[derive(Debug, Clone)]
pub struct VmConfig {
    /// A short name for logs and messages.
    pub name: String,
    /// The vhost-user socket path.
    pub socket: PathBuf,
    /// vrouterd's role on the socket (as in the vif request): `Server` = vrouterd creates and
    /// listens, QEMU connects as client; `Client` = QEMU creates and listens, vrouterd connects.
    pub vrouterd_mode: VhostUserMode,
    pub mac: [u8; 6],
    pub ip: Ipv4Addr,
    pub prefix: u8,
    pub gateway: Ipv4Addr,
    pub mtu: u32,
    /// Guest RAM in MiB (a multiple of 2 for hugepages).
    pub memory_mb: u32,
    pub ram: GuestRam,
    /// More `virtio-net-pci` properties, e.g. `csum=off` or `mrg_rxbuf=off`.
    pub net_device_props: Vec<String>,
    /// Packed virtqueues (`packed=on`, VIRTIO_F_RING_PACKED) instead of split ones.
    pub packed: bool,
    /// How long boot may take until the agent answers.
    pub boot_timeout: Duration,
    /// Start as the destination of a live migration listening at this QEMU URI
    /// (`unix:PATH` or `tcp:HOST:PORT`) instead of booting: see [`Vm::incoming`].
    pub incoming: Option<String>,
}

impl VmConfig {
    /// Guest `n`: `eth0` = `198.18.<n>.2/24` via `198.18.<n>.1`, MAC `02:00:00:00:<n>:02` (the
    /// same scheme as [`KernelPod`], so pick an `n` no pod uses), MTU 1500, 256 MiB of
    /// hugepage-backed RAM, socket at `socket` with vrouterd in `mode`.
    pub fn new(name: &str, n: u8, socket: impl Into<PathBuf>, mode: VhostUserMode) -> VmConfig {
        VmConfig {
            name: name.to_owned(),
            socket: socket.into(),
            vrouterd_mode: mode,
            mac: [0x02, 0, 0, 0, n, 0x02],
            ip: Ipv4Addr::new(198, 18, n, 2),
            prefix: 24,
            gateway: Ipv4Addr::new(198, 18, n, 1),
            mtu: 1500,
            memory_mb: 256,
            ram: GuestRam::Hugepages,
            net_device_props: Vec::new(),
            packed: false,
            // Measured: 2.5-4 s of guest time, 7-10 s of wall time on this 2-core machine; a
            // loaded machine with a busy-polling vrouterd beside it can be several times slower.
            boot_timeout: Duration::from_secs(120),
            incoming: None,
        }
    }

    fn mac_text(&self) -> String {
        self.mac
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect::<Vec<_>>()
            .join(":")
    }

    /// The QEMU command line (program arguments) this config boots with.
    pub fn qemu_args(&self, image: &VmImage, agent: &Path) -> Vec<String> {
        let mem = self.memory_mb;
        let ram = match self.ram {
            GuestRam::Hugepages => format!(
                "memory-backend-file,id=mem,size={mem}M,mem-path={},share=on",
                crate::testpmd::hugetlbfs_mounts()
                    .first()
                    .map_or_else(|| "/dev/hugepages".into(), |p| p.display().to_string())
            ),
            GuestRam::Memfd => format!("memory-backend-memfd,id=mem,size={mem}M,share=on"),
        };
        let chardev = match self.vrouterd_mode {
            // QEMU connects; vrouterd's socket exists once the vif is added.
            VhostUserMode::Server => format!(
                "socket,id=vu,path={},reconnect-ms=1000",
                self.socket.display()
            ),
            // QEMU listens and, by default, waits for vrouterd before it runs the guest.
            VhostUserMode::Client => {
                format!("socket,id=vu,path={},server=on", self.socket.display())
            }
        };
        let mut nic = format!(
            "virtio-net-pci,netdev=n0,mac={},romfile=,host_mtu={}",
            self.mac_text(),
            self.mtu
        );
        if self.packed {
            nic.push_str(",packed=on");
        }
        for p in &self.net_device_props {
            nic.push(',');
            nic.push_str(p);
        }
        let append = format!(
            "console=ttyS0 loglevel=4 panic=-1 mitigations=off vr.ip={}/{} vr.gw={} vr.mtu={}",
            self.ip, self.prefix, self.gateway, self.mtu
        );
        [
            "-name",
            &self.name,
            "-accel",
            "tcg",
            "-machine",
            "pc",
            "-cpu",
            "max",
            "-smp",
            "1",
            "-m",
            &format!("{mem}M"),
            "-object",
            &ram,
            "-numa",
            "node,memdev=mem",
            "-nodefaults",
            "-no-user-config",
            "-display",
            "none",
            "-serial",
            "stdio",
            "-no-reboot",
            "-kernel",
            &image.kernel.display().to_string(),
            "-initrd",
            &image.initramfs.display().to_string(),
            "-append",
            &append,
            // The agent channel first: QEMU connects it before it may block on the NIC's socket.
            "-chardev",
            &format!("socket,id=agent,path={}", agent.display()),
            "-device",
            "virtio-serial-pci",
            "-device",
            "virtserialport,chardev=agent,name=vr.agent",
            "-chardev",
            &chardev,
            "-netdev",
            "vhost-user,id=n0,chardev=vu",
            "-device",
            &nic,
        ]
        .iter()
        .map(|s| s.to_string())
        .collect()
    }
}

/// The guest kernel and initramfs built by `scripts/vm-image.sh`.
#[derive(Debug, Clone)]
pub struct VmImage {
    pub kernel: PathBuf,
    pub initramfs: PathBuf,
}

/// Builds the guest image if needed (once per process) and returns where it is. Panics with the
/// script's output if it fails: the VM tests must not run without it, nor skip silently.
pub fn image() -> VmImage {
    static IMAGE: OnceLock<VmImage> = OnceLock::new();
    IMAGE
        .get_or_init(|| {
            let root = crate::hugepages::workspace_root();
            let out = root.join("target/vm");
            let script = root.join("scripts/vm-image.sh");
            let res = std::process::Command::new("bash")
                .arg(&script)
                .arg(&out)
                .output()
                .unwrap_or_else(|e| panic!("running {}: {e}", script.display()));
            assert!(
                res.status.success(),
                "{} failed (it needs root and scripts/install-deps.sh):\n{}{}",
                script.display(),
                String::from_utf8_lossy(&res.stdout),
                String::from_utf8_lossy(&res.stderr)
            );
            VmImage {
                kernel: out.join("vmlinuz"),
                initramfs: out.join("initramfs.cpio.gz"),
            }
        })
        .clone()
}

/// A running guest. QEMU is killed and its files removed on drop.
pub struct Vm {
    cfg: VmConfig,
    /// QEMU; its stdout is the guest's serial console.
    pub process: TestProcess,
    agent: UnixStream,
    pending: Vec<u8>,
    next_id: AtomicU64,
    boot_time: Duration,
    /// When QEMU started, or when the guest landed here by migration.
    started: Instant,
    qmp_path: PathBuf,
    _dir: tempfile::TempDir,
}

impl Vm {
    /// Boots the guest and waits until its agent answers (panicking with the console output if
    /// it does not within `cfg.boot_timeout`). With vrouterd as client, QEMU holds the guest
    /// until vrouterd connected, so the vif may be added before or after this call; with
    /// vrouterd as server the vif (and its socket) must exist first.
    pub fn boot(cfg: VmConfig) -> Vm {
        assert!(
            cfg.incoming.is_none(),
            "use Vm::incoming for a migration target"
        );
        let mut vm = Vm::start(cfg);
        vm.wait_booted();
        vm
    }

    /// Starts QEMU as the destination of a live migration (`cfg.incoming` set): the guest runs
    /// once a source migrates into it ([`Vm::migrate_to`]). vrouterd's vif for `cfg.socket`
    /// must exist (server mode) as for [`Vm::boot`]: QEMU sets the vhost-user device up at
    /// start.
    /// Returns once QEMU listens for the migration: with vrouterd as client, QEMU first waits
    /// for vrouterd to connect to its vhost-user socket.
    pub fn incoming(cfg: VmConfig) -> Vm {
        let uri = cfg
            .incoming
            .clone()
            .expect("a migration target needs cfg.incoming");
        let mut vm = Vm::start(cfg);
        let ready = crate::wait::poll(
            vm.cfg.boot_timeout,
            || {
                assert!(
                    vm.process.try_wait().is_none(),
                    "QEMU for {} exited\n{}",
                    vm.cfg.name,
                    vm.process.outputs()
                );
                let listening = uri
                    .strip_prefix("unix:")
                    .is_none_or(|p| Path::new(p).exists());
                listening
                    && vm
                        .qmp("query-status", serde_json::json!({}))
                        .is_ok_and(|s| {
                            s.get("status").and_then(|v| v.as_str()) == Some("inmigrate")
                        })
            },
            |ok| *ok,
        );
        assert!(
            ready.is_ok(),
            "{} does not wait for a migration at {uri} within {:?}\n{}",
            vm.cfg.name,
            vm.cfg.boot_timeout,
            vm.process.outputs()
        );
        vm
    }

    fn start(cfg: VmConfig) -> Vm {
        crate::netns::require_root();
        let image = image();
        if cfg.ram == GuestRam::Hugepages {
            crate::hugepages::ensure(1024);
        }
        if let Some(parent) = cfg.socket.parent() {
            std::fs::create_dir_all(parent).expect("socket directory");
        }
        let dir = tempfile::Builder::new()
            .prefix("testkit-vm")
            .tempdir()
            .expect("temporary directory");
        let agent_path = dir.path().join("agent.sock");
        let listener = UnixListener::bind(&agent_path).expect("agent socket");
        listener.set_nonblocking(true).expect("nonblocking");
        let start = Instant::now();
        let qmp_path = dir.path().join("qmp.sock");
        let mut args = cfg.qemu_args(&image, &agent_path);
        args.push("-qmp".into());
        args.push(format!("unix:{},server=on,wait=off", qmp_path.display()));
        if let Some(uri) = &cfg.incoming {
            // Paused when the migration lands (-S), so its memory can be compared with the
            // source's before it runs on: see `Vm::migrate_to`.
            args.push("-S".into());
            args.push("-incoming".into());
            args.push(uri.clone());
        }
        let mut process = TestProcess::spawn(Path::new("qemu-system-x86_64"), &args);
        // QEMU connects to the agent socket while it starts: accept, or fail with its output.
        let accepted = crate::wait::poll(
            cfg.boot_timeout,
            || match listener.accept() {
                Ok((s, _)) => Some(s),
                Err(e) if e.kind() == ErrorKind::WouldBlock => {
                    assert!(
                        process.try_wait().is_none(),
                        "QEMU for {} exited at start-up\n{}",
                        cfg.name,
                        process.outputs()
                    );
                    None
                }
                Err(e) => panic!("accepting the agent of {}: {e}", cfg.name),
            },
            Option::is_some,
        );
        let Ok(Some(agent)) = accepted else {
            panic!(
                "QEMU for {} did not connect its agent channel within {:?}\n{}",
                cfg.name,
                cfg.boot_timeout,
                process.outputs()
            );
        };
        agent.set_nonblocking(false).expect("blocking agent");
        Vm {
            boot_time: Duration::ZERO,
            started: start,
            cfg,
            process,
            agent,
            pending: Vec::new(),
            next_id: AtomicU64::new(1),
            qmp_path,
            _dir: dir,
        }
    }

    /// Waits until the guest's agent answers (boot done, or a migration landed).
    fn wait_booted(&mut self) {
        let vm = self;
        let start = vm.started;
        let left = vm.cfg.boot_timeout.saturating_sub(start.elapsed());
        match vm.try_run("cat /proc/uptime", left) {
            Ok((0, up)) => {
                vm.boot_time = start.elapsed();
                eprintln!(
                    "{}: booted in {:?} (guest uptime {} s)",
                    vm.cfg.name,
                    vm.boot_time,
                    up.split_whitespace().next().unwrap_or("?")
                );
            }
            other => panic!(
                "{} did not boot within {:?}: {other:?}\n{}",
                vm.cfg.name,
                vm.cfg.boot_timeout,
                vm.process.outputs()
            ),
        }
    }

    /// Runs one QMP command on this QEMU (a fresh monitor connection each time) and returns
    /// its `return` value, or the error QEMU gave.
    pub fn qmp(
        &self,
        command: &str,
        arguments: serde_json::Value,
    ) -> Result<serde_json::Value, String> {
        qmp_execute(&self.qmp_path, command, arguments)
    }

    /// Live-migrates this guest into `dest` (started with [`Vm::incoming`] at its URI) while it
    /// runs, and waits until the migration completed. Then, with both QEMUs paused (the source
    /// after migrating, the destination by `-S`), compares the guest's memory on both sides
    /// page by page; then lets the guest run on at the destination and waits until it answers
    /// there. This QEMU is left paused (`postmigrate`), as after any migration.
    pub fn migrate_to(&mut self, dest: &mut Vm, timeout: Duration) -> Result<Migration, String> {
        let uri = dest
            .cfg
            .incoming
            .clone()
            .ok_or("the destination was not started with Vm::incoming")?;
        let start = Instant::now();
        self.qmp("migrate", serde_json::json!({ "uri": uri }))?;
        let done = |vm: &Vm| {
            crate::wait::poll(
                timeout,
                || vm.qmp("query-migrate", serde_json::json!({})),
                |r| {
                    r.as_ref().map_or(true, |v| {
                        matches!(
                            v.get("status").and_then(|s| s.as_str()),
                            Some("completed" | "failed" | "cancelled")
                        )
                    })
                },
            )
            .map_err(|last| format!("migration not done within {timeout:?}: {last:?}"))?
        };
        let info = done(self)?;
        let status = info.get("status").and_then(|s| s.as_str()).unwrap_or("?");
        if status != "completed" {
            return Err(format!(
                "migration {status}: {info}\nsource:\n{}\ndestination:\n{}",
                self.process.outputs(),
                dest.process.outputs()
            ));
        }
        let took = start.elapsed();
        let downtime = info.get("downtime").and_then(|d| d.as_u64()).unwrap_or(0);
        // The destination has loaded everything once its side says completed too.
        let landed = done(dest)?;
        if landed.get("status").and_then(|s| s.as_str()) != Some("completed") {
            return Err(format!("destination: incoming migration {landed}"));
        }
        eprintln!(
            "{} -> {}: migration completed in {took:?}, downtime {downtime} ms",
            self.cfg.name, dest.cfg.name
        );
        let differing_pages = self.compare_memory(dest)?;
        dest.qmp("cont", serde_json::json!({}))?;
        dest.started = Instant::now();
        dest.wait_booted();
        Ok(Migration {
            took,
            downtime_ms: downtime,
            differing_pages,
        })
    }

    /// Guest-physical 4 KiB pages whose contents differ between this guest and `other` (both
    /// paused), from `pmemsave` dumps of all their RAM.
    fn compare_memory(&self, other: &Vm) -> Result<Vec<u64>, String> {
        let size = u64::from(self.cfg.memory_mb) << 20;
        let dump = |vm: &Vm, file: &Path| {
            vm.qmp(
                "pmemsave",
                serde_json::json!({ "val": 0, "size": size, "filename": file }),
            )
            .map(|_| ())
        };
        let a = self._dir.path().join("mem.dump");
        let b = other._dir.path().join("mem.dump");
        dump(self, &a)?;
        dump(other, &b)?;
        let read = |p: &Path| std::fs::read(p).map_err(|e| format!("{}: {e}", p.display()));
        let (da, db) = (read(&a)?, read(&b)?);
        let _ = std::fs::remove_file(&a);
        let _ = std::fs::remove_file(&b);
        if da.len() != db.len() || da.len() as u64 != size {
            return Err(format!(
                "memory dumps of {} and {} bytes, expected {size}",
                da.len(),
                db.len()
            ));
        }
        Ok(da
            .chunks(4096)
            .zip(db.chunks(4096))
            .enumerate()
            .filter(|(_, (x, y))| x != y)
            .map(|(i, _)| i as u64)
            .collect())
    }

    pub fn config(&self) -> &VmConfig {
        &self.cfg
    }

    /// Wall time from starting QEMU to the agent's first answer.
    pub fn boot_time(&self) -> Duration {
        self.boot_time
    }

    /// What the guest printed on its serial console (kernel messages, `/init`'s lines).
    pub fn console(&self) -> String {
        self.process.outputs()
    }

    /// Runs `cmd` with `sh` in the guest and returns (exit code, stdout and stderr); panics with
    /// the console output if no answer comes within `timeout` or QEMU is gone.
    pub fn run_timeout(&mut self, cmd: &str, timeout: Duration) -> (i32, String) {
        self.try_run(cmd, timeout).unwrap_or_else(|e| {
            panic!(
                "{}: running {cmd:?}: {e}\n{}",
                self.cfg.name,
                self.process.outputs()
            )
        })
    }

    /// [`Vm::run_timeout`] with a 60 s limit.
    pub fn run(&mut self, cmd: &str) -> (i32, String) {
        self.run_timeout(cmd, Duration::from_secs(60))
    }

    /// Runs `cmd` and returns its output, panicking unless it exits 0.
    pub fn check(&mut self, cmd: &str) -> String {
        let (rc, out) = self.run(cmd);
        assert_eq!(rc, 0, "{}: {cmd:?} exited {rc}: {out}", self.cfg.name);
        out
    }

    /// Sends one request and waits for its answer; `Err` says why none came.
    pub fn try_run(&mut self, cmd: &str, timeout: Duration) -> Result<(i32, String), String> {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let line = format!("{id} {}\n", base64_encode(cmd.as_bytes()));
        self.agent
            .write_all(line.as_bytes())
            .map_err(|e| format!("writing to the agent: {e}"))?;
        let want = format!("@@{id} ");
        let deadline = Instant::now() + timeout;
        loop {
            while let Some(nl) = self.pending.iter().position(|&b| b == b'\n') {
                let line: Vec<u8> = self.pending.drain(..=nl).collect();
                let line = String::from_utf8_lossy(&line[..nl]).into_owned();
                // Answers to earlier requests that timed out are skipped.
                let Some(rest) = line.strip_prefix(&want) else {
                    continue;
                };
                let mut parts = rest.splitn(2, ' ');
                let rc = parts
                    .next()
                    .and_then(|c| c.parse::<i32>().ok())
                    .ok_or_else(|| format!("malformed answer {line:?}"))?;
                let out = base64_decode(parts.next().unwrap_or(""))
                    .ok_or_else(|| format!("undecodable output in {line:?}"))?;
                return Ok((rc, String::from_utf8_lossy(&out).into_owned()));
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(format!("no answer within {timeout:?}"));
            }
            self.agent
                .set_read_timeout(Some(left.min(Duration::from_millis(500))))
                .map_err(|e| format!("agent read timeout: {e}"))?;
            let mut buf = [0u8; 64 * 1024];
            match self.agent.read(&mut buf) {
                Ok(0) => return Err("the agent channel closed (QEMU exited?)".into()),
                Ok(n) => self.pending.extend_from_slice(&buf[..n]),
                Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) => return Err(format!("reading from the agent: {e}")),
            }
        }
    }

    /// Starts `cmd` in the background in the guest (output to `log` in the guest) and returns
    /// its process id there.
    pub fn spawn(&mut self, cmd: &str, log: &str) -> u32 {
        let out = self.check(&format!("( {cmd} ) > {log} 2>&1 &\necho $!"));
        out.trim()
            .parse()
            .unwrap_or_else(|_| panic!("{}: no pid from starting {cmd:?}: {out:?}", self.cfg.name))
    }

    /// Polls `cmd` in the guest until it exits 0; `Err` with its last output after `timeout`.
    pub fn wait_until(&mut self, cmd: &str, timeout: Duration) -> Result<(), String> {
        crate::wait::poll(timeout, || self.run(cmd), |(rc, _)| *rc == 0)
            .map(|_| ())
            .map_err(|(rc, out)| {
                format!(
                    "{}: {cmd:?} still exits {rc} after {timeout:?}: {out}",
                    self.cfg.name
                )
            })
    }

    /// The virtio features the guest driver negotiated on `eth0`, from
    /// `/sys/class/net/eth0/device/features` (one `0`/`1` character per bit, bit 0 first).
    pub fn negotiated_features(&mut self) -> u64 {
        let text = self.check("cat /sys/class/net/eth0/device/features");
        text.trim()
            .chars()
            .take(64)
            .enumerate()
            .filter(|(_, c)| *c == '1')
            .fold(0u64, |acc, (i, _)| acc | (1u64 << i))
    }

    /// The guest's count of TCP segments dropped for a bad checksum (`InCsumErrors` in
    /// `/proc/net/snmp`).
    pub fn tcp_checksum_errors(&mut self) -> u64 {
        let snmp = self.check("cat /proc/net/snmp");
        let mut tcp = snmp.lines().filter(|l| l.starts_with("Tcp:"));
        let (Some(names), Some(values)) = (tcp.next(), tcp.next()) else {
            panic!("{}: no Tcp lines in /proc/net/snmp: {snmp}", self.cfg.name);
        };
        names
            .split_whitespace()
            .zip(values.split_whitespace())
            .find(|(n, _)| *n == "InCsumErrors")
            .and_then(|(_, v)| v.parse().ok())
            .unwrap_or_else(|| panic!("{}: no InCsumErrors in {snmp}", self.cfg.name))
    }

    /// Pings `dst` (IPv4 or IPv6) from the guest `count` times; returns (all answered,
    /// ping's output).
    pub fn ping(&mut self, dst: impl Into<IpAddr>, count: u32) -> (bool, String) {
        let dst: IpAddr = dst.into();
        let (rc, out) = self.run(&format!("ping -c {count} -i 0.2 -W 2 {dst}"));
        (
            rc == 0 && out.contains(&format!("{count} packets received")),
            out,
        )
    }

    /// Starts a TCP receiver (`nc -l`) on `port` that stores what arrives, and waits until it
    /// listens.
    pub fn tcp_receiver(&mut self, port: u16) -> Result<VmTcpReceiver, String> {
        let file = format!("/tmp/rx-{port}");
        self.run(&format!("rm -f {file}"));
        // Busybox nc half-closes the connection when its stdin ends and exits when the socket
        // ends: a FIFO opened read-write is a stdin that never ends, so the sender's FIN alone
        // ends it (with /dev/null the sender's nc would see our FIN and quit before its data).
        let fifo = format!("/tmp/rx-{port}.hold");
        let pid = self.spawn(
            &format!("rm -f {fifo}; mkfifo {fifo}; nc -l -p {port} 0<> {fifo} > {file}"),
            &format!("/tmp/rx-{port}.log"),
        );
        self.wait_until(
            &format!("netstat -ltn | grep -q ':{port} '"),
            Duration::from_secs(30),
        )?;
        Ok(VmTcpReceiver { pid, port, file })
    }

    /// Sends `bytes` of random data (made in the guest, kept for the next send of that size)
    /// to `dst:port` (IPv4 or IPv6) over TCP; returns `"<bytes> <sha256>"` of what was sent.
    pub fn tcp_send(
        &mut self,
        dst: impl Into<IpAddr>,
        port: u16,
        bytes: u64,
        timeout: Duration,
    ) -> Result<String, String> {
        let dst: IpAddr = dst.into();
        let file = format!("/tmp/tx-{bytes}");
        let sum = self.check(&format!(
            "[ \"$(stat -c %s {file} 2>/dev/null)\" = {bytes} ] || head -c {bytes} /dev/urandom > {file}\n\
             echo \"$(wc -c < {file}) $(sha256sum < {file} | cut -d' ' -f1)\""
        ));
        let secs = timeout.as_secs().max(1);
        let start = Instant::now();
        let (rc, out) = self.run_timeout(
            &format!("timeout {secs} nc -w 30 {dst} {port} < {file}"),
            timeout + Duration::from_secs(30),
        );
        if rc != 0 {
            return Err(format!(
                "{}: nc to {dst}:{port} exited {rc} after {:?}: {out}",
                self.cfg.name,
                start.elapsed()
            ));
        }
        eprintln!(
            "{}: sent {bytes} B to {dst}:{port} in {:?}",
            self.cfg.name,
            start.elapsed()
        );
        Ok(sum.trim().to_owned())
    }
}

impl Drop for Vm {
    fn drop(&mut self) {
        // QEMU is killed when `process` drops right after this; a socket it listened on would
        // outlive it (a killed QEMU removes nothing), so remove it as a pod's teardown would.
        if self.cfg.vrouterd_mode == VhostUserMode::Client {
            let _ = std::fs::remove_file(&self.cfg.socket);
        }
    }
}

/// What [`Vm::migrate_to`] saw.
#[derive(Debug, Clone)]
pub struct Migration {
    /// From the `migrate` command to completion.
    pub took: Duration,
    /// The downtime QEMU measured.
    pub downtime_ms: u64,
    /// Guest pages (guest-physical address / 4 KiB) that differ between source and destination
    /// once both are paused: a page a vhost-user backend wrote and did not log shows up here.
    pub differing_pages: Vec<u64>,
}

/// One QMP command over a fresh connection to the monitor at `path`: greeting, capabilities
/// negotiation, the command; events in between are skipped.
fn qmp_execute(
    path: &Path,
    command: &str,
    arguments: serde_json::Value,
) -> Result<serde_json::Value, String> {
    use std::io::BufRead;
    let stream = UnixStream::connect(path).map_err(|e| format!("QMP {}: {e}", path.display()))?;
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .map_err(|e| e.to_string())?;
    let mut writer = stream.try_clone().map_err(|e| e.to_string())?;
    let mut reader = std::io::BufReader::new(stream);
    let answer = |reader: &mut std::io::BufReader<UnixStream>, want_greeting: bool| loop {
        let mut line = String::new();
        match reader.read_line(&mut line) {
            Ok(0) => return Err("QMP connection closed".to_owned()),
            Ok(_) => {}
            Err(e) => return Err(format!("QMP read: {e}")),
        }
        let v: serde_json::Value =
            serde_json::from_str(&line).map_err(|e| format!("QMP said {line:?}: {e}"))?;
        if want_greeting && v.get("QMP").is_some() {
            return Ok(v);
        }
        if let Some(r) = v.get("return") {
            return Ok(r.clone());
        }
        if let Some(e) = v.get("error") {
            return Err(format!("QMP error: {e}"));
        }
    };
    answer(&mut reader, true)?;
    for (cmd, args) in [
        ("qmp_capabilities", serde_json::json!({})),
        (command, arguments),
    ] {
        let req = serde_json::json!({ "execute": cmd, "arguments": args });
        writer
            .write_all(format!("{req}\n").as_bytes())
            .map_err(|e| format!("QMP write: {e}"))?;
        let r = answer(&mut reader, false)?;
        if cmd == command {
            return Ok(r);
        }
    }
    Err("unreachable".to_owned())
}

/// A TCP receiver in a guest, from [`Vm::tcp_receiver`].
pub struct VmTcpReceiver {
    pid: u32,
    port: u16,
    file: String,
}

impl VmTcpReceiver {
    /// Waits (up to `timeout`) for the connection to end; returns `"<bytes> <sha256>"` of what
    /// arrived, and removes the file.
    pub fn finish(self, vm: &mut Vm, timeout: Duration) -> Result<String, String> {
        let waited = vm.wait_until(&format!("! kill -0 {} 2>/dev/null", self.pid), timeout);
        let (_, log) = vm.run(&format!("cat /tmp/rx-{}.log", self.port));
        if let Err(e) = waited {
            vm.run(&format!("kill {}; rm -f {}", self.pid, self.file));
            return Err(format!(
                "receiver on port {}: {e}; nc said: {log}",
                self.port
            ));
        }
        let out = vm.check(&format!(
            "echo \"$(wc -c < {f}) $(sha256sum < {f} | cut -d' ' -f1)\"; rm -f {f}",
            f = self.file
        ));
        Ok(out.trim().to_owned())
    }
}

/// One TCP transfer's two ends, each `"<bytes> <sha256>"`: equal when the data arrived intact.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transfer {
    pub sent: String,
    pub received: String,
}

impl Transfer {
    /// Whether every byte arrived as sent (and there were some).
    pub fn verified(&self) -> bool {
        self.sent == self.received && !self.sent.starts_with("0 ")
    }
}

const TCP_PORT: u16 = 5201;

/// `bytes` of TCP from guest `from` to guest `to`, checked by SHA-256 at both ends.
pub fn tcp_vm_to_vm(from: &mut Vm, to: &mut Vm, bytes: u64) -> Result<Transfer, String> {
    let rx = to.tcp_receiver(TCP_PORT)?;
    let sent = from.tcp_send(to.cfg.ip, TCP_PORT, bytes, transfer_timeout(bytes));
    let received = rx.finish(to, after_send(&sent));
    Ok(Transfer {
        sent: sent?,
        received: received?,
    })
}

/// `bytes` of TCP from guest `from` to kernel pod `to`, checked by SHA-256 at both ends.
pub fn tcp_vm_to_pod(from: &mut Vm, to: &KernelPod, bytes: u64) -> Result<Transfer, String> {
    let server = to.tcp_server();
    let sent = from.tcp_send(to.ip, server.port(), bytes, transfer_timeout(bytes))?;
    let received = server.finish()?;
    Ok(Transfer { sent, received })
}

/// `bytes` of TCP from kernel pod `from` to guest `to`, checked by SHA-256 at both ends.
pub fn tcp_pod_to_vm(from: &KernelPod, to: &mut Vm, bytes: u64) -> Result<Transfer, String> {
    let rx = to.tcp_receiver(TCP_PORT)?;
    let sent = from.tcp_send(to.cfg.ip, TCP_PORT, bytes);
    let received = rx.finish(to, after_send(&sent));
    Ok(Transfer {
        sent: sent?,
        received: received?,
    })
}

/// How long a receiver may take to see the end of a connection once the sender is done: long
/// when the sender succeeded (the last segments may still be on their way), short when it
/// failed (no connection, or one that stalled: nothing more is coming).
fn after_send(sent: &Result<String, String>) -> Duration {
    Duration::from_secs(if sent.is_ok() { 30 } else { 2 })
}

/// A generous bound for `bytes` through TCG guests: 1 MB/s plus a minute.
fn transfer_timeout(bytes: u64) -> Duration {
    Duration::from_secs(60 + bytes / 1_000_000)
}

/// Adds `vm`'s vhost-user vif `name` to `vr` in VRF 1 (created if missing) with an encap
/// nexthop `nexthop` to its MAC, a /32 route to its address, and its gateway's /32 to the
/// receive nexthop `receive` (set here), so vrouterd answers its ARP and routes for it.
pub fn route_vm_in_vrf1(vr: &Vrouterd, name: &str, vm: &VmConfig, nexthop: u32, receive: u32) {
    vr.api(|c| async move { c.vrf_add(1).await })
        .expect("vrf 1");
    vr.set_nexthop(receive, Nexthop::Receive);
    let dir = vm.socket.parent().expect("socket directory");
    let file = vm
        .socket
        .file_name()
        .expect("socket file name")
        .to_string_lossy()
        .into_owned();
    let mut req = vhost_user_vif(name, MacAddr(vm.mac), dir, &file, vm.vrouterd_mode);
    req.ip = Some(vm.ip);
    req.mtu = Some(vm.mtu);
    vr.add_vif(&req);
    vr.route_to(nexthop, name, MacAddr(vm.mac), &[&format!("{}/32", vm.ip)]);
    vr.set_route(&format!("{}/32", vm.gateway), receive);
}

const B64: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

fn base64_encode(data: &[u8]) -> String {
    let mut out = String::with_capacity(data.len().div_ceil(3) * 4);
    for chunk in data.chunks(3) {
        let b = [
            chunk[0],
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let n = u32::from(b[0]) << 16 | u32::from(b[1]) << 8 | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(B64[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

fn base64_decode(text: &str) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(text.len() / 4 * 3);
    let mut acc = 0u32;
    let mut bits = 0;
    for c in text.trim().bytes() {
        if c == b'=' {
            break;
        }
        let v = B64.iter().position(|&x| x == c)? as u32;
        acc = acc << 6 | v;
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
            acc &= (1 << bits) - 1;
        }
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_round_trips() {
        for s in [
            "",
            "a",
            "ab",
            "abc",
            "abcd",
            "line\nwith 'quotes' and \u{1F600}",
        ] {
            let e = base64_encode(s.as_bytes());
            assert_eq!(base64_decode(&e).as_deref(), Some(s.as_bytes()), "{e}");
        }
        assert_eq!(base64_encode(b"abcd"), "YWJjZA==");
    }

    #[test]
    fn feature_names_name_the_offloads() {
        let bits = 1 << feature::CSUM | 1 << feature::HOST_TSO6 | 1 << 63;
        assert_eq!(feature::names(bits), ["CSUM", "HOST_TSO6", "bit63"]);
    }
}
