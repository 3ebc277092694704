//! The node's record of addresses and attachments: one JSON file, changed only under an
//! exclusive `flock` on a lock file beside it and replaced whole (written to a temporary file,
//! synced, renamed over the old one, directory synced). A plugin killed at any point leaves
//! either the old file or the new one, never a mix, and the kernel drops its lock.

use std::collections::{BTreeMap, BTreeSet};
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::net::IpAddr;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::error::{CniError, Result};

pub const STATE_FILE: &str = "state.json";
const LOCK_FILE: &str = "lock";

/// A pool in use on the node: registered while it holds addresses, so that pools of other
/// networks in the same VRF cannot overlap it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PoolRecord {
    pub network: String,
    pub pool: String,
    pub vrf: u32,
    pub subnet: String,
}

/// One address handed out.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Allocation {
    pub network: String,
    pub pool: String,
    pub container_id: String,
    pub ifname: String,
}

/// What ADD made for one (container, interface): everything DEL has to take away.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Attachment {
    pub container_id: String,
    pub ifname: String,
    pub network: String,
    pub kind: crate::config::InterfaceType,
    pub control_socket: PathBuf,
    pub vrf: u32,
    pub vif: String,
    pub mac: String,
    pub mtu: u32,
    pub nexthop: u32,
    /// Host routes (`/32`, `/128`) to the pod.
    pub routes: Vec<String>,
    /// Gateway keys (`vrf/address`) this attachment uses: a gateway's route goes with the last
    /// attachment naming it.
    pub gateways: Vec<String>,
    /// `address/len` with its gateway.
    pub ips: Vec<(String, String)>,
    #[serde(default)]
    pub socket_dir: Option<PathBuf>,
    #[serde(default)]
    pub socket_file: Option<String>,
    #[serde(default)]
    pub mode: Option<crate::config::Mode>,
    #[serde(default)]
    pub info_file: Option<PathBuf>,
    #[serde(default)]
    pub host_veth: Option<String>,
    #[serde(default)]
    pub netns: Option<PathBuf>,
    /// The delegated IPAM plugin, when not the built-in pools.
    #[serde(default)]
    pub delegate: Option<String>,
    /// Whether ADD created the VRF (and DEL of the VRF's last attachment removes it).
    #[serde(default)]
    pub created_vrf: bool,
    /// False from the moment the plan is recorded until everything is in place.
    pub complete: bool,
    #[serde(default)]
    pub result: Option<serde_json::Value>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct State {
    #[serde(default)]
    pub pools: BTreeMap<String, PoolRecord>,
    #[serde(default)]
    pub allocations: BTreeMap<IpAddr, Allocation>,
    /// The last address handed out per pool: the next search starts after it, so a released
    /// address is not reused at once.
    #[serde(default)]
    pub last: BTreeMap<String, IpAddr>,
    #[serde(default)]
    pub attachments: BTreeMap<String, Attachment>,
    #[serde(default)]
    pub receive_nexthop: Option<u32>,
    /// VRFs the plugin created, with the attachments in them.
    #[serde(default)]
    pub vrfs: BTreeMap<u32, BTreeSet<String>>,
}

pub fn attachment_key(container_id: &str, ifname: &str) -> String {
    format!("{container_id}/{ifname}")
}

/// The store, locked for as long as this value lives.
pub struct Store {
    dir: PathBuf,
    _lock: File,
}

impl Store {
    /// Opens (creating, mode 0700) the directory and takes the lock, waiting for other
    /// invocations to finish.
    pub fn lock(dir: &Path) -> Result<Store> {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(|e| CniError::io(format!("creating the store {}: {e}", dir.display())))?;
        let path = dir.join(LOCK_FILE);
        let lock = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .mode(0o600)
            .open(&path)
            .map_err(|e| CniError::io(format!("opening {}: {e}", path.display())))?;
        lock.lock()
            .map_err(|e| CniError::io(format!("locking {}: {e}", path.display())))?;
        Ok(Store {
            dir: dir.to_path_buf(),
            _lock: lock,
        })
    }

    pub fn path(&self) -> PathBuf {
        self.dir.join(STATE_FILE)
    }

    pub fn load(&self) -> Result<State> {
        let path = self.path();
        match std::fs::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes).map_err(|e| {
                CniError::io(format!(
                    "{} is not a store this plugin wrote ({e}); move it aside to start afresh",
                    path.display()
                ))
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(State::default()),
            Err(e) => Err(CniError::io(format!("reading {}: {e}", path.display()))),
        }
    }

    /// Replaces the file with `state`, atomically and durably.
    pub fn save(&self, state: &State) -> Result<()> {
        let path = self.path();
        let tmp = self
            .dir
            .join(format!("{STATE_FILE}.tmp.{}", std::process::id()));
        let bytes = serde_json::to_vec_pretty(state)
            .map_err(|e| CniError::io(format!("encoding the store: {e}")))?;
        write_atomically(&tmp, &path, &bytes)?;
        if let Ok(d) = File::open(&self.dir) {
            let _ = d.sync_all();
        }
        Ok(())
    }
}

/// Writes `bytes` to `tmp`, syncs it and renames it over `path`.
pub fn write_atomically(tmp: &Path, path: &Path, bytes: &[u8]) -> Result<()> {
    let io = |what: &str, e: std::io::Error| CniError::io(format!("{what} {}: {e}", tmp.display()));
    let mut f = OpenOptions::new()
        .create(true)
        .truncate(true)
        .write(true)
        .mode(0o600)
        .open(tmp)
        .map_err(|e| io("creating", e))?;
    f.write_all(bytes).map_err(|e| io("writing", e))?;
    f.sync_all().map_err(|e| io("syncing", e))?;
    drop(f);
    std::fs::rename(tmp, path).map_err(|e| {
        let _ = std::fs::remove_file(tmp);
        CniError::io(format!(
            "renaming {} to {}: {e}",
            tmp.display(),
            path.display()
        ))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_saved_state_loads_back_and_a_stale_temp_file_is_ignored() {
        let dir = tempfile::tempdir().expect("tmp");
        let store = Store::lock(dir.path()).expect("lock");
        assert_eq!(store.load().expect("empty"), State::default());
        let mut s = State::default();
        s.allocations.insert(
            "198.18.1.2".parse().expect("ip"),
            Allocation {
                network: "n".into(),
                pool: "p".into(),
                container_id: "c".into(),
                ifname: "eth0".into(),
            },
        );
        store.save(&s).expect("save");
        // What a plugin killed between writing and renaming leaves behind.
        std::fs::write(dir.path().join("state.json.tmp.99999"), b"{\"allocat").expect("junk");
        assert_eq!(store.load().expect("load"), s);
    }

    #[test]
    fn a_corrupt_store_is_an_error_naming_the_file() {
        let dir = tempfile::tempdir().expect("tmp");
        std::fs::write(dir.path().join(STATE_FILE), b"{not json").expect("write");
        let store = Store::lock(dir.path()).expect("lock");
        let e = store.load().expect_err("corrupt");
        assert!(e.msg.contains("state.json"), "{e}");
    }

    #[test]
    fn the_lock_excludes_a_second_holder_until_dropped() {
        let dir = tempfile::tempdir().expect("tmp");
        let first = Store::lock(dir.path()).expect("lock");
        let f = OpenOptions::new()
            .write(true)
            .open(dir.path().join(LOCK_FILE))
            .expect("open");
        assert!(f.try_lock().is_err(), "held by the first store");
        drop(first);
        assert!(f.try_lock().is_ok(), "free once dropped");
    }
}
