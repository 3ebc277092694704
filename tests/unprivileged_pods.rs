//! Pods that do not run as root reach their vif through `vhostsocket-group`, in both modes: a
//! testpmd pod running as `nobody:nogroup` connects to the socket vrouterd created (server mode)
//! and another one creates its socket in the directory vrouterd prepared (client mode), and
//! traffic flows between them. Without the group an unprivileged process cannot even connect.

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;

use control_api::api::{MacAddr, VhostUserMode};
use testkit::testpmd::{TestpmdConfig, TestpmdPod};
use testkit::vrouterd::{connected, vhost_user_vif as vhost_vif, Vrouterd};

const MAC_A: MacAddr = MacAddr([0x02, 0, 0, 0, 0x0a, 0x01]);
const MAC_B: MacAddr = MacAddr([0x02, 0, 0, 0, 0x0b, 0x01]);
const MAC_C: MacAddr = MacAddr([0x02, 0, 0, 0, 0x0c, 0x01]);
const USER: &str = "nobody";
const GROUP: &str = "nogroup";

fn vrouterd_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_vrouterd"))
}

fn gid_of(group: &str) -> u32 {
    let line = std::fs::read_to_string("/etc/group")
        .expect("/etc/group")
        .lines()
        .find(|l| l.starts_with(&format!("{group}:")))
        .map(str::to_owned)
        .unwrap_or_else(|| panic!("group {group} exists on Debian"));
    line.split(':')
        .nth(2)
        .and_then(|g| g.parse().ok())
        .expect("gid")
}

/// Whether `user:group` (no other groups) can connect to the unix socket at `path`.
fn can_connect_as(path: &Path) -> bool {
    let script = format!(
        "import socket; s = socket.socket(socket.AF_UNIX); s.connect({:?})",
        path.display().to_string()
    );
    let out = Command::new("setpriv")
        .args([
            &format!("--reuid={USER}"),
            &format!("--regid={GROUP}"),
            "--clear-groups",
            "/usr/bin/python3",
            "-c",
            &script,
        ])
        .output()
        .expect("running setpriv");
    eprintln!(
        "connect to {} as {USER}:{GROUP}: {} {}",
        path.display(),
        out.status,
        String::from_utf8_lossy(&out.stderr).trim()
    );
    out.status.success()
}

/// The pod `cfg` describes, run as `USER:GROUP` with no other groups.
fn unprivileged(cfg: TestpmdConfig) -> TestpmdPod {
    TestpmdConfig {
        run_as: Some((USER.into(), GROUP.into())),
        ..cfg
    }
    .start()
}

fn mode_of(p: &Path) -> u32 {
    std::fs::metadata(p)
        .unwrap_or_else(|e| panic!("{}: {e}", p.display()))
        .permissions()
        .mode()
        & 0o7777
}

#[test]
fn unprivileged_pods_in_the_socket_group_attach_in_both_modes() {
    let vr = Vrouterd::start(&vrouterd_bin(), &[], &[]);
    let base = vr.socket_base();
    // The test's private directory above the socket base must be passable, as
    // /var/run/vrouter is on a node.
    let top = base.parent().expect("socket base has a parent");
    std::fs::set_permissions(top, std::fs::Permissions::from_mode(0o711)).expect("chmod");
    let gid = gid_of(GROUP);
    let (dir_a, dir_b, dir_c) = (base.join("pod-a"), base.join("pod-b"), base.join("pod-c"));
    vr.api(|c| async move { c.vrf_add(1).await })
        .expect("vrf 1");
    let mut a = vhost_vif("podA", MAC_A, &dir_a, "net0", VhostUserMode::Server);
    a.vhostsocket_group = Some(GROUP.into());
    let mut b = vhost_vif("podB", MAC_B, &dir_b, "net0", VhostUserMode::Client);
    b.vhostsocket_group = Some(GROUP.into());
    let c = vhost_vif("podC", MAC_C, &dir_c, "net0", VhostUserMode::Server);
    for v in [a, b, c] {
        vr.add_vif(&v);
    }
    vr.route_to(1, "podB", MAC_B, &["198.18.2.2/32"]);

    // What vrouterd made, whatever the umask: the group reaches A's socket and may create B's.
    let (sock_a, sock_c) = (dir_a.join("net0"), dir_c.join("net0"));
    assert_eq!(mode_of(&dir_a), 0o750);
    assert_eq!(mode_of(&sock_a), 0o660);
    assert_eq!(std::fs::metadata(&sock_a).expect("socket").gid(), gid);
    assert_eq!(mode_of(&dir_b), 0o770);
    assert_eq!(std::fs::metadata(&dir_b).expect("dir").gid(), gid);
    assert_eq!(mode_of(&dir_c), 0o700, "no group: root's pods only");
    assert_eq!(mode_of(&sock_c), 0o600);
    assert!(
        can_connect_as(&sock_a),
        "a group member connects to A's socket"
    );
    assert!(
        !can_connect_as(&sock_c),
        "an outsider cannot connect to C's"
    );
    // That connection came and went; A listens again before its pod comes.
    vr.wait_vif("podA", "the probe's hang-up handled", |v| {
        v.status.state.to_string() == "listening"
    });

    // B: the pod creates its socket (virtio-user server) in the directory vrouterd prepared.
    let _pod_b = unprivileged(TestpmdConfig::receiver(dir_b.join("net0")).as_server());
    vr.wait_vif("podB", "the unprivileged client-mode pod", connected);
    // A: the pod connects to vrouterd's socket (virtio-user client).
    let _pod_a = unprivileged(TestpmdConfig::sender(&sock_a, "198.18.1.2", "198.18.2.2"));
    vr.wait_vif("podA", "the unprivileged server-mode pod", connected);
    vr.wait_vif("podB", "A's traffic reaches B", |v| {
        v.status.counters.tx_packets >= 1000
    });
    let status = vr.stop();
    assert!(status.success(), "vrouterd exit {status}");
}
