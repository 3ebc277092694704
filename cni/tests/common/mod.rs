//! Running the plugins exactly as a container runtime does: `CNI_*` environment, network
//! configuration on stdin, result or error object on stdout, exit code; and vrouterd started as
//! the root package's tests start it.

#![allow(dead_code)]

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use serde_json::Value;
use testkit::netns::Netns;
use testkit::vrouterd::Vrouterd;

pub const CNI_BIN: &str = env!("CARGO_BIN_EXE_vrouter-cni");
pub const IPAM_BIN: &str = env!("CARGO_BIN_EXE_vrouter-ipam");
/// Debian's containernetworking-plugins.
pub const SYSTEM_CNI_DIR: &str = "/usr/lib/cni";

/// vrouterd, built beside this crate's binaries (the root package's binary: `cargo build
/// --bin vrouterd` first when running only this crate's tests).
pub fn vrouterd_bin() -> PathBuf {
    let here = Path::new(CNI_BIN);
    let bin = here
        .parent()
        .map(|d| d.join("vrouterd"))
        .unwrap_or_default();
    assert!(
        bin.is_file(),
        "{} is missing: build it with `cargo build --bin vrouterd` first",
        bin.display()
    );
    bin
}

/// A directory on `CNI_PATH` holding this crate's plugins, then Debian's.
pub fn cni_path(dir: &Path) -> String {
    let plugins = dir.join("bin");
    std::fs::create_dir_all(&plugins).expect("plugin dir");
    for (name, src) in [("vrouter-cni", CNI_BIN), ("vrouter-ipam", IPAM_BIN)] {
        let dst = plugins.join(name);
        if !dst.exists() {
            std::os::unix::fs::symlink(src, &dst).expect("plugin link");
        }
    }
    format!("{}:{SYSTEM_CNI_DIR}", plugins.display())
}

/// What one plugin run printed and returned.
#[derive(Debug, Clone)]
pub struct Out {
    pub code: i32,
    pub json: Value,
    pub stdout: String,
    pub stderr: String,
}

impl Out {
    /// The result of a run that must have succeeded.
    #[track_caller]
    pub fn ok(self) -> Value {
        assert_eq!(
            self.code, 0,
            "plugin failed: {}\n{}",
            self.stdout, self.stderr
        );
        self.json
    }

    /// The error object of a run that must have failed with `code`.
    #[track_caller]
    pub fn err(self, code: u64) -> String {
        assert_ne!(self.code, 0, "plugin succeeded: {}", self.stdout);
        assert_eq!(
            self.json["code"].as_u64(),
            Some(code),
            "error code: {}",
            self.stdout
        );
        assert!(self.json["cniVersion"].is_string(), "{}", self.stdout);
        self.json["msg"].as_str().unwrap_or_default().to_string()
    }
}

/// One invocation: which plugin, which command, for which container.
pub struct Call<'a> {
    pub plugin: &'a str,
    pub command: &'a str,
    pub container_id: &'a str,
    pub ifname: &'a str,
    pub netns: Option<&'a Path>,
    pub args: &'a str,
    pub cni_path: &'a str,
    /// Run inside this network namespace (the node's, where vrouterd runs).
    pub node: Option<&'a Netns>,
}

impl Call<'_> {
    pub fn run(&self, config: &Value) -> Out {
        let mut cmd = match self.node {
            Some(n) => {
                let mut c = Command::new("ip");
                c.args(["netns", "exec", n.name(), self.plugin]);
                c
            }
            None => Command::new(self.plugin),
        };
        cmd.env_clear()
            .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
            .env("CNI_COMMAND", self.command)
            .env("CNI_CONTAINERID", self.container_id)
            .env("CNI_IFNAME", self.ifname)
            .env("CNI_ARGS", self.args)
            .env("CNI_PATH", self.cni_path)
            .env(
                "CNI_NETNS",
                self.netns
                    .map(|p| p.display().to_string())
                    .unwrap_or_default(),
            )
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = cmd.spawn().expect("starting the plugin");
        child
            .stdin
            .take()
            .expect("stdin")
            .write_all(config.to_string().as_bytes())
            .expect("writing the configuration");
        let out = child.wait_with_output().expect("plugin output");
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        Out {
            code: out.status.code().unwrap_or(-1),
            json: serde_json::from_str(&stdout).unwrap_or(Value::Null),
            stdout,
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }
}

/// What the runtime adds to a plugin's configuration for CHECK and DEL and for the next
/// plugin of a chain.
pub fn with_prev(config: &Value, prev: &Value) -> Value {
    let mut c = config.clone();
    c["prevResult"] = prev.clone();
    c
}

/// vrouterd as a compute node in its own namespace, its forwarding lcore napping when idle.
pub fn start_vrouterd(node: &Netns) -> Vrouterd {
    Vrouterd::start_netns(Some(node), &vrouterd_bin(), &["--idle-sleep-us", "20"], &[])
}

/// Whether interface `name` exists in namespace `ns`.
pub fn link_exists(ns: &str, name: &str) -> bool {
    Command::new("ip")
        .args(["-n", ns, "link", "show", "dev", name])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .map(|s| s.success())
        .unwrap_or(false)
}

/// `/var/run/netns/<name>`: what a runtime passes as `CNI_NETNS`.
pub fn netns_path(ns: &Netns) -> PathBuf {
    PathBuf::from("/var/run/netns").join(ns.name())
}

/// The store's state file, parsed (empty object when absent).
pub fn store(dir: &Path) -> Value {
    std::fs::read(dir.join("state.json"))
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .unwrap_or(Value::Object(Default::default()))
}

/// A container id as runtimes make them (64 hex digits), unique per test process and `n`.
pub fn container_id(n: u32) -> String {
    format!("{:06x}{n:06x}{:052x}", std::process::id(), 0xc0de)
}
