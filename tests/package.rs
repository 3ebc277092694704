//! The Debian package, as an operator meets it:
//! - `scripts/package.sh` builds it: vrouterd, vrouterctl, the CNI plugins in /usr/lib/cni,
//!   the vrouterd service (Type=notify,
//!   restarted on failure, `--config /etc/vrouter/vrouterd.toml`, state and runtime
//!   directories), the configuration file as a conffile, and dependencies on Debian's DPDK;
//!   vrouterd reads the shipped configuration, refuses a bad one naming the file and key, and
//!   the service's hugepage check says what to do when none are free;
//! - on a fresh Debian 12 booted with systemd (`systemd-nspawn --boot` over the tree
//!   `scripts/systemd-image.sh` builds, no network), `apt-get install ./vrouter_*.deb` brings
//!   the DPDK it needs (from apt's cache in the image), the unit passes
//!   `systemd-analyze verify`, `systemctl start vrouterd` returns once vrouterd said READY=1
//!   (its status in `systemctl show`), vrouterctl drives it, an upgrade to a later version
//!   restarts it with what was configured (state directory) and the operator's edit of the
//!   configuration file kept, and a purge leaves nothing behind.
//!
//! vrouterd in the container takes the host's hugepages as on the host: EAL runs
//! `--in-memory`, mapping anonymous hugepages, so no hugetlbfs mount is needed there; the
//! test reserves them on the host.
//!
//! Both package the test build's binaries (`package.sh --bin-dir`): the package is the same,
//! without a release build in the test's time.

use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use testkit::hugepages;

/// Builds the package into a directory of the test's own and returns its path; `version`
/// replaces the one package.sh makes up.
fn package(test: &str, version: Option<&str>) -> PathBuf {
    let out = Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join("package")
        .join(test);
    let _ = std::fs::remove_dir_all(&out);
    let script = hugepages::workspace_root().join("scripts/package.sh");
    // vrouterctl and the CNI plugins are other packages' binaries: built beside vrouterd (a
    // no-op when the whole workspace was built for the tests).
    let status = Command::new(env!("CARGO"))
        .current_dir(hugepages::workspace_root())
        .args([
            "build",
            "--locked",
            "-p",
            "control-api",
            "--bin",
            "vrouterctl",
            "-p",
            "vrouter-bgp",
            "-p",
            "vrouter-cni",
            "--bins",
        ])
        .status()
        .expect("cargo build vrouterctl, vrouter-bgp and the plugins");
    assert!(
        status.success(),
        "building vrouterctl and the plugins failed"
    );
    let bin_dir = Path::new(env!("CARGO_BIN_EXE_vrouterd"))
        .parent()
        .expect("binary directory");
    for bin in ["vrouterctl", "vrouter-bgp", "vrouter-cni", "vrouter-ipam"] {
        assert!(
            bin_dir.join(bin).is_file(),
            "no {bin} beside vrouterd in {}",
            bin_dir.display()
        );
    }
    let mut cmd = Command::new("bash");
    if let Some(version) = version {
        cmd.env("VROUTER_DEB_VERSION", version);
    }
    let res = cmd
        .arg(&script)
        .arg("--bin-dir")
        .arg(bin_dir)
        .arg("--out")
        .arg(&out)
        .output()
        .unwrap_or_else(|e| panic!("running {}: {e}", script.display()));
    assert!(
        res.status.success(),
        "{} failed:\n{}",
        script.display(),
        String::from_utf8_lossy(&res.stderr)
    );
    let deb = PathBuf::from(String::from_utf8_lossy(&res.stdout).trim());
    assert!(
        deb.is_file() && deb.parent() == Some(out.as_path()),
        "package.sh printed {deb:?}, not a .deb in {}",
        out.display()
    );
    deb
}

/// Runs `program` and returns its output, panicking with it unless it succeeded.
fn run(program: impl AsRef<OsStr>, args: &[&str]) -> String {
    let out = output(Command::new(program.as_ref()).args(args));
    assert!(
        out.status.success(),
        "{} {args:?}: {}\n{}{}",
        program.as_ref().to_string_lossy(),
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn output(cmd: &mut Command) -> Output {
    cmd.output()
        .unwrap_or_else(|e| panic!("running {cmd:?}: {e} (scripts/install-deps.sh installs it)"))
}

/// `key=value` lines of a unit file's `[Service]` section with this key.
fn unit_values<'a>(unit: &'a str, key: &str) -> Vec<&'a str> {
    unit.lines()
        .filter_map(|l| l.split_once('='))
        .filter(|(k, _)| k.trim() == key)
        .map(|(_, v)| v.trim())
        .collect()
}

#[test]
fn the_package_holds_vrouterd_its_service_and_its_configuration() {
    let deb = package("contents", None);
    let deb = deb.to_str().expect("UTF-8 path");

    let field = |name: &str| run("dpkg-deb", &["--field", deb, name]).trim().to_owned();
    assert_eq!(field("Package"), "vrouter");
    let depends = field("Depends");
    // Linked (from the binaries, with versions), and loaded at run time by EAL: the mempool
    // driver every packet buffer comes from and the buses NICs and vdevs sit on.
    for dep in [
        "libc6",
        "librte-eal23",
        "librte-ethdev23",
        "librte-mbuf23",
        "librte-mempool-ring23",
        "librte-bus-pci23",
        "librte-bus-vdev23",
    ] {
        assert!(
            depends
                .split(", ")
                .any(|d| d == dep || d.starts_with(&format!("{dep} ("))),
            "Depends lacks {dep}: {depends}"
        );
    }
    assert_eq!(
        run("dpkg-deb", &["--info", deb, "conffiles"]).trim(),
        "/etc/vrouter/vrouterd.toml\n/etc/vrouter/vrouter-bgp.conf"
    );

    // Files, their modes and owners.
    let listing = run("dpkg-deb", &["--contents", deb]);
    for (path, mode) in [
        ("./usr/bin/vrouterd", "-rwxr-xr-x"),
        ("./usr/bin/vrouterctl", "-rwxr-xr-x"),
        ("./usr/bin/vrouter-bgp", "-rwxr-xr-x"),
        ("./usr/lib/cni/vrouter-cni", "-rwxr-xr-x"),
        ("./usr/lib/cni/vrouter-ipam", "-rwxr-xr-x"),
        ("./usr/libexec/vrouter/check-hugepages", "-rwxr-xr-x"),
        ("./lib/systemd/system/vrouterd.service", "-rw-r--r--"),
        ("./etc/vrouter/vrouterd.toml", "-rw-r--r--"),
        ("./lib/systemd/system/vrouter-bgp.service", "-rw-r--r--"),
        ("./etc/vrouter/vrouter-bgp.conf", "-rw-r--r--"),
        ("./usr/share/doc/vrouter/copyright", "-rw-r--r--"),
    ] {
        let line = listing
            .lines()
            .find(|l| l.ends_with(&format!(" {path}")))
            .unwrap_or_else(|| panic!("{path} is not in the package:\n{listing}"));
        assert!(
            line.starts_with(&format!("{mode} root/root")),
            "{path}: {line}"
        );
    }

    let root = tempfile::tempdir().expect("tempdir");
    let root = root.path();
    run(
        "dpkg-deb",
        &["--extract", deb, root.to_str().expect("UTF-8 path")],
    );

    let unit = std::fs::read_to_string(root.join("lib/systemd/system/vrouterd.service"))
        .expect("unit file");
    for (key, want) in [
        ("Type", "notify"),
        ("Restart", "on-failure"),
        (
            "ExecStart",
            "/usr/bin/vrouterd --config /etc/vrouter/vrouterd.toml",
        ),
        ("ExecStartPre", "/usr/libexec/vrouter/check-hugepages"),
        ("StateDirectory", "vrouter"),
        ("RuntimeDirectory", "vrouter"),
        ("WantedBy", "multi-user.target"),
    ] {
        assert_eq!(unit_values(&unit, key), [want], "{key}= in\n{unit}");
    }
    // vrouter-bgp's unit takes its options from its conffile, after vrouterd and gobgpd.
    let bgp_unit = std::fs::read_to_string(root.join("lib/systemd/system/vrouter-bgp.service"))
        .expect("vrouter-bgp unit file");
    for (key, want) in [
        ("EnvironmentFile", "/etc/vrouter/vrouter-bgp.conf"),
        ("ExecStart", "/usr/bin/vrouter-bgp $VROUTER_BGP_OPTIONS"),
        ("After", "vrouterd.service gobgpd.service"),
        ("Restart", "on-failure"),
    ] {
        assert_eq!(unit_values(&bgp_unit, key), [want], "{key}= in\n{bgp_unit}");
    }
    let help = run(root.join("usr/bin/vrouter-bgp"), &["--help"]);
    assert!(help.contains("--fabric-ip"), "{help}");
    // (systemd's own reading of the unit, `systemd-analyze verify`, needs a system with systemd
    // to resolve its dependencies against: the other test runs it where the package is
    // installed.)

    // vrouterd reads the shipped configuration: the state directory is the service's.
    let vrouterd = root.join("usr/bin/vrouterd");
    let config = root.join("etc/vrouter/vrouterd.toml");
    let config = config.to_str().expect("UTF-8 path");
    let effective = run(&vrouterd, &["--config", config, "--check-config"]);
    assert!(
        effective.contains("\nstate-dir = \"/var/lib/vrouter\"\n"),
        "{effective}"
    );
    assert!(
        unit.contains("StateDirectory=vrouter\n") && unit.contains("RuntimeDirectory=vrouter\n"),
        "{unit}"
    );
    assert!(
        effective.contains("# control-socket = \"/var/run/vrouter/vrouter.sock\"\n"),
        "the control socket should be in the service's runtime directory:\n{effective}"
    );
    // A mistake in it stops vrouterd before anything starts, naming the file, line and key.
    let bad = root.join("etc/vrouter/bad.toml");
    let text = std::fs::read_to_string(root.join("etc/vrouter/vrouterd.toml")).expect("config");
    std::fs::write(&bad, format!("{text}fwd-lcore = \"2\"\n")).expect("write");
    let line = text.lines().count() + 1;
    let refused = output(Command::new(&vrouterd).arg("--config").arg(&bad));
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert_eq!(refused.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains(&format!(
            "{}:{line}: fwd-lcore: unknown key (did you mean fwd-lcores?)",
            bad.display()
        )),
        "{stderr}"
    );
    assert!(!stderr.contains("EAL"), "{stderr}");

    // The hugepage check passes with free hugepages, and without any says what to do.
    hugepages::ensure(64);
    let check = root.join("usr/libexec/vrouter/check-hugepages");
    let said = run(&check, &[]);
    assert!(said.contains("MiB of hugepages free"), "{said}");
    let none = output(
        Command::new("unshare")
            .args(["--mount", "sh", "-c"])
            .arg("mount -t tmpfs none /sys/kernel/mm/hugepages && exec \"$0\"")
            .arg(&check),
    );
    let stderr = String::from_utf8_lossy(&none.stderr);
    assert_eq!(none.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("no free hugepages") && stderr.contains("vm.nr_hugepages"),
        "{stderr}"
    );
}

/// A Debian 12 booted with systemd in a container; powered off (or killed) on drop.
struct Machine {
    nspawn: Child,
    /// The container's PID 1 (systemd), as the host sees it.
    init: u32,
}

impl Machine {
    /// Boots `rootfs` with a throwaway overlay (the tree stays as it is) and `share` mounted
    /// read-only at /mnt/share; returns once systemd has finished starting up.
    fn boot(rootfs: &Path, share: &Path, log: &Path) -> Machine {
        let log = std::fs::File::create(log).expect("console log");
        // With a parent-death signal, so that a test killed before it powers the container off
        // (nextest's time limit) leaves no machine running: systemd-nspawn stops it on SIGTERM.
        let nspawn = Command::new("setpriv")
            .args(["--pdeathsig", "TERM", "systemd-nspawn"])
            .arg("--directory")
            .arg(rootfs)
            .args([
                "--volatile=overlay",
                "--boot",
                "--console=passive",
                // Nothing to reach: the DPDK runtime is in apt's cache in the image.
                "--private-network",
                // No systemd on the host to register with or run a scope under.
                "--register=no",
                "--keep-unit",
                &format!("--machine=vrouter-pkg-{}", std::process::id()),
            ])
            .arg(format!("--bind-ro={}:/mnt/share", share.display()))
            // With a network namespace of its own the container gets a /sys without module/,
            // where EAL looks whether vfio is loaded (and gives up when it cannot tell).
            .arg("--bind-ro=/sys/module")
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .spawn()
            .expect("systemd-nspawn (package systemd-container; scripts/install-deps.sh)");
        let deadline = Instant::now() + Duration::from_secs(60);
        // systemd-nspawn forks a short-lived helper that forks the container's init: the
        // descendant that is PID 1 in a PID namespace of its own.
        let init = loop {
            if let Some(pid) = container_init(nspawn.id()) {
                break pid;
            }
            assert!(
                Instant::now() < deadline,
                "systemd-nspawn started no container"
            );
            std::thread::sleep(Duration::from_millis(50));
        };
        let machine = Machine { nspawn, init };
        // Waits for start-up to finish: "running", or "degraded" if some unit of the bare image
        // failed (nothing this test needs). Until systemd has its private bus up, systemctl
        // says "offline".
        let deadline = Instant::now() + Duration::from_secs(90);
        loop {
            let out = machine.try_sh("timeout 60 systemctl is-system-running --wait");
            let state = String::from_utf8_lossy(&out.stdout).trim().to_owned();
            if matches!(state.as_str(), "running" | "degraded") {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "the container's systemd says {state:?}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            std::thread::sleep(Duration::from_millis(200));
        }
        machine
    }

    /// Runs a shell command inside the container (its namespaces, root directory and a clean
    /// environment) and returns what it did.
    fn try_sh(&self, script: &str) -> Output {
        output(
            Command::new("nsenter")
                .args(["--target", &self.init.to_string(), "--all", "--"])
                .args(["/usr/bin/env", "-i"])
                .args([
                    "PATH=/usr/sbin:/usr/bin:/sbin:/bin",
                    "LANG=C.UTF-8",
                    "DEBIAN_FRONTEND=noninteractive",
                    "/bin/sh",
                    "-c",
                    script,
                ]),
        )
    }

    /// `try_sh`, panicking with the output (and the service's log) unless it succeeded.
    fn sh(&self, script: &str) -> String {
        let out = self.try_sh(script);
        if !out.status.success() {
            let journal = self.try_sh("journalctl --no-pager -n 50 -u vrouterd");
            panic!(
                "in the container: {script}: {}\n{}{}\n-- journalctl -u vrouterd:\n{}",
                out.status,
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr),
                String::from_utf8_lossy(&journal.stdout)
            );
        }
        String::from_utf8_lossy(&out.stdout).into_owned()
    }
}

impl Drop for Machine {
    fn drop(&mut self) {
        let _ = self.try_sh("systemctl poweroff --no-block");
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.nspawn.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        // systemd-nspawn stops the container on SIGTERM.
        let _ = Command::new("kill")
            .args(["-TERM", &self.nspawn.id().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.nspawn.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        // Killing the container's init ends every process in it; killing systemd-nspawn alone
        // would leave the container running.
        let _ = Command::new("kill")
            .args(["-KILL", &self.init.to_string()])
            .status();
        let _ = self.nspawn.kill();
        let _ = self.nspawn.wait();
    }
}

/// The descendant of `ancestor` that is PID 1 of a PID namespace of its own.
fn container_init(ancestor: u32) -> Option<u32> {
    let mut pending = vec![ancestor];
    while let Some(pid) = pending.pop() {
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
        let nspid: Vec<&str> = status
            .lines()
            .find_map(|l| l.strip_prefix("NSpid:"))
            .map(|l| l.split_whitespace().collect())
            .unwrap_or_default();
        if pid != ancestor && nspid.len() > 1 && nspid.last() == Some(&"1") {
            return Some(pid);
        }
        let children =
            std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children")).unwrap_or_default();
        pending.extend(
            children
                .split_whitespace()
                .filter_map(|c| c.parse::<u32>().ok()),
        );
    }
    None
}

#[test]
fn the_package_installs_and_runs_under_systemd() {
    let deb = package("systemd", None);
    let name = deb
        .file_name()
        .and_then(OsStr::to_str)
        .expect("package name")
        .to_owned();
    // The next version, for an upgrade.
    let version = run(
        "dpkg-deb",
        &["--field", deb.to_str().expect("UTF-8"), "Version"],
    );
    let next = format!("{}.1", version.trim());
    let upgrade = package("systemd/upgrade", Some(&next));
    let upgrade_name = upgrade
        .file_name()
        .and_then(OsStr::to_str)
        .expect("package name")
        .to_owned();
    let repo = hugepages::workspace_root();
    let image = repo.join("target/systemd-image");
    let built = output(
        Command::new("bash")
            .arg(repo.join("scripts/systemd-image.sh"))
            .arg(&image),
    );
    assert!(
        built.status.success(),
        "scripts/systemd-image.sh failed (it needs root and scripts/install-deps.sh):\n{}{}",
        String::from_utf8_lossy(&built.stdout),
        String::from_utf8_lossy(&built.stderr)
    );
    // vrouterd's mempool and rings: about 80 MiB.
    hugepages::ensure(128);

    let share = deb.parent().expect("package directory");
    let log = share.join("console.log");
    let node = Machine::boot(&image.join("rootfs"), share, &log);

    // Installing brings the DPDK libraries and drivers vrouterd needs (the image has none
    // installed, only in apt's cache: the container has no network).
    let install = node.try_sh(&format!(
        "apt-get install -y -q --no-install-recommends /mnt/share/{name}"
    ));
    assert!(
        install.status.success(),
        "installing the package failed; if it needs a package the image has not cached, add it \
         to scripts/systemd-image.sh's list:\n{}{}",
        String::from_utf8_lossy(&install.stdout),
        String::from_utf8_lossy(&install.stderr)
    );
    // Installed, known to systemd, but neither enabled nor started: the node may lack
    // hugepages or its NIC until the operator has prepared it.
    assert_eq!(
        node.sh("systemctl is-enabled vrouterd || true").trim(),
        "disabled"
    );
    assert_eq!(
        node.sh("systemctl is-active vrouterd || true").trim(),
        "inactive"
    );
    let verify = node.try_sh("systemd-analyze verify --man=no vrouterd.service");
    assert!(
        verify.status.success() && verify.stderr.is_empty(),
        "systemd-analyze verify in the container: {}",
        String::from_utf8_lossy(&verify.stderr)
    );
    assert_eq!(
        node.sh("systemctl is-enabled vrouter-bgp || true").trim(),
        "disabled"
    );
    let verify = node.try_sh("systemd-analyze verify --man=no vrouter-bgp.service");
    assert!(
        verify.status.success(),
        "systemd-analyze verify vrouter-bgp.service in the container: {}",
        String::from_utf8_lossy(&verify.stderr)
    );

    // What an operator does: adjust the configuration, start, configure through vrouterctl.
    // Idle naps keep the forwarding lcore from taking a shared test machine's CPU.
    node.sh("echo 'idle-sleep-us = 1000' >> /etc/vrouter/vrouterd.toml");
    node.sh("timeout 120 systemctl start vrouterd");
    // Type=notify: start returned once vrouterd said it was ready, with its API up; the status
    // is vrouterd's own.
    let show = |node: &Machine| {
        node.sh("systemctl show -p ActiveState,SubState,StatusText,NRestarts,MainPID vrouterd")
    };
    let shown = show(&node);
    for want in [
        "ActiveState=active",
        "SubState=running",
        "StatusText=control API on /var/run/vrouter/vrouter.sock",
        "NRestarts=0",
    ] {
        assert!(shown.lines().any(|l| l == want), "{want} not in\n{shown}");
    }
    let main_pid = |shown: &str| {
        shown
            .lines()
            .find_map(|l| l.strip_prefix("MainPID="))
            .map(str::to_owned)
            .expect("MainPID")
    };
    let first_pid = main_pid(&shown);
    node.sh("vrouterctl vrf add 7");
    let has_vrf_7 = |vrfs: &str| {
        vrfs.lines()
            .any(|l| l.split_whitespace().next() == Some("7"))
    };
    let vrfs = node.sh("vrouterctl vrf list");
    assert!(has_vrf_7(&vrfs), "{vrfs}");
    node.sh("vrouterctl vif list");
    // The CNI plugins are where a container runtime on a Debian node looks for them.
    let versions =
        node.sh("echo '{\"cniVersion\":\"1.0.0\"}' | CNI_COMMAND=VERSION /usr/lib/cni/vrouter-cni");
    assert!(versions.contains("\"1.0.0\""), "{versions}");
    node.sh("test -x /usr/lib/cni/vrouter-ipam");
    // vrouter-bgp as shipped has no options yet: started, it says what it lacks.
    node.sh("systemctl start vrouter-bgp");
    let said = node.try_sh(
        "for i in $(seq 100); do journalctl --no-pager -o cat -u vrouter-bgp | grep -- --fabric-ip \
         && exit 0; sleep 0.1; done; exit 1",
    );
    assert!(
        said.status.success(),
        "vrouter-bgp without options did not name --fabric-ip:\n{}",
        node.sh("journalctl --no-pager -o cat -u vrouter-bgp")
    );
    node.sh("systemctl stop vrouter-bgp");

    // An upgrade restarts the running vrouterd, which restores what was configured from
    // /var/lib/vrouter; the operator's changes to the configuration file stay.
    node.sh(&format!(
        "apt-get install -y -q --no-install-recommends /mnt/share/upgrade/{upgrade_name}"
    ));
    assert_eq!(
        node.sh("dpkg-query -W -f '${Version}' vrouter").trim(),
        next
    );
    let shown = show(&node);
    assert!(shown.lines().any(|l| l == "ActiveState=active"), "{shown}");
    assert_ne!(
        main_pid(&shown),
        first_pid,
        "the upgrade did not restart vrouterd"
    );
    let vrfs = node.sh("vrouterctl vrf list");
    assert!(has_vrf_7(&vrfs), "{vrfs}");
    assert!(node.sh("ls /var/lib/vrouter").contains("journal"));
    node.sh("grep -qx 'idle-sleep-us = 1000' /etc/vrouter/vrouterd.toml");

    node.sh("timeout 120 systemctl stop vrouterd");
    let journal = node.sh("journalctl --no-pager -o cat -u vrouterd");
    assert!(journal.contains("MiB of hugepages free"), "{journal}");
    assert!(journal.contains("stopped cleanly"), "{journal}");

    // A purge takes the configuration and the saved state with it.
    node.sh("apt-get purge -y -q vrouter");
    node.sh("test ! -e /etc/vrouter && test ! -e /var/lib/vrouter && ! command -v vrouterd");
}
