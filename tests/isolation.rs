//! Socket isolation through the real vrouterd's control API: traversal out of --socket-base,
//! symlink escapes, bad filenames, duplicate paths and paths longer than sun_path are refused
//! with the documented 4xx and code and leave the filesystem exactly as it was; directories
//! vrouterd creates get 0700 (0750 and the group with `vhostsocket-group`); deleting a vif
//! removes its socket and the directories vrouterd created, not the ones it found. The same
//! for devices: one backs one vif, and one that fails to open is left free.

use std::collections::BTreeMap;
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use control_api::api::{MacAddr, VhostUserMode, VifRequest, VifType};
use testkit::vrouterd::Vrouterd;

fn vrouterd_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_vrouterd"))
}

/// A private directory for one test's vrouterd, named after `prefix`.
fn private_dir(prefix: &str) -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix(prefix)
        .tempdir()
        .expect("temporary directory")
}

/// vrouterd in `dir` (the test's, so it outlives vrouterd and can be inspected after the stop).
fn start(dir: &tempfile::TempDir) -> Vrouterd {
    let vr = Vrouterd::start_in(dir.path(), &vrouterd_bin(), &["--idle-sleep-us", "20"], &[]);
    vr.api(|c| async move { c.vrf_add(1).await })
        .expect("vrf 1");
    vr
}

fn vhost_vif(name: &str, n: u8, dir: &Path, file: &str) -> VifRequest {
    let mut req = VifRequest::new(
        name,
        VifType::VhostUser,
        1,
        MacAddr([0x02, 0, 0, 0, 0x0c, n]),
    );
    req.vhostsocket_dir = Some(dir.to_path_buf());
    req.vhostsocket_filename = Some(file.to_owned());
    req.vhostuser_mode = Some(VhostUserMode::Server);
    req
}

fn add(vr: &Vrouterd, req: &VifRequest) -> Result<(), control_api::Error> {
    let req = req.clone();
    vr.api(|c| async move { c.vif_add(&req).await }).map(|_| ())
}

fn del(vr: &Vrouterd, name: &str) {
    let name = name.to_owned();
    vr.api(|c| async move { c.vif_del(&name).await })
        .expect("vif delete");
}

fn vif_names(vr: &Vrouterd) -> Vec<String> {
    vr.api(|c| async move { c.vifs().await })
        .expect("GET /vifs")
        .into_iter()
        .map(|v| v.config.name)
        .collect()
}

/// Everything under `root` (not following symlinks): kind, mode, owner, group, symlink target.
fn snapshot(root: &Path) -> BTreeMap<PathBuf, String> {
    let mut out = BTreeMap::new();
    let mut todo = vec![root.to_path_buf()];
    while let Some(p) = todo.pop() {
        let Ok(md) = std::fs::symlink_metadata(&p) else {
            continue;
        };
        let ft = md.file_type();
        let kind = if ft.is_symlink() {
            format!(
                "symlink->{}",
                std::fs::read_link(&p).unwrap_or_default().display()
            )
        } else if ft.is_dir() {
            "dir".to_owned()
        } else if ft.is_socket() {
            "socket".to_owned()
        } else {
            format!("file:{}", md.len())
        };
        out.insert(
            p.clone(),
            format!("{kind} {:o} {}:{}", md.mode() & 0o7777, md.uid(), md.gid()),
        );
        if ft.is_dir() {
            for e in std::fs::read_dir(&p).expect("read_dir").flatten() {
                todo.push(e.path());
            }
        }
    }
    out
}

/// Sends `req`, expects the refusal `status`/`code`, and checks nothing changed on disk or in
/// the vif table.
fn assert_refused(vr: &Vrouterd, root: &Path, req: &VifRequest, status: u16, code: &str) {
    let before = snapshot(root);
    let vifs_before = vif_names(vr);
    let err = add(vr, req).expect_err(&format!(
        "{:?}/{:?} must be refused",
        req.vhostsocket_dir, req.vhostsocket_filename
    ));
    assert_eq!(
        (err.status(), err.code()),
        (status, code),
        "{:?}/{:?}: {err}",
        req.vhostsocket_dir,
        req.vhostsocket_filename
    );
    assert!(
        !err.to_string().is_empty(),
        "the refusal says what was wrong"
    );
    assert_eq!(
        snapshot(root),
        before,
        "refusing {:?}/{:?} left the filesystem unchanged",
        req.vhostsocket_dir,
        req.vhostsocket_filename
    );
    assert_eq!(vif_names(vr), vifs_before, "and the vif table unchanged");
}

#[test]
fn escapes_bad_names_duplicates_and_long_paths_are_refused_and_change_nothing() {
    let dir = private_dir("vrouterd-iso");
    let vr = start(&dir);
    let base = vr.socket_base();
    // The whole private directory: the base, and "outside" (a sibling the escapes aim at).
    let root = base.parent().expect("base has a parent").to_path_buf();
    let outside = root.join("outside");
    std::fs::create_dir(&outside).expect("outside dir");
    std::fs::write(outside.join("keep"), b"not vrouterd's").expect("file outside");
    std::fs::create_dir(base.join("pod-a")).expect("pod-a");
    std::os::unix::fs::symlink(&outside, base.join("escape")).expect("symlink out");
    std::os::unix::fs::symlink("../../outside", base.join("pod-a/rel-escape"))
        .expect("rel symlink");

    // `..` traversal out of the base, with and without an existing directory on the way.
    for dir in [
        base.join("../outside"),
        base.join("pod-a/../../outside"),
        base.join("new-dir/../../outside/sub"),
        base.join(".."),
        base.clone(), // strictly below the base, not the base itself
        PathBuf::from("/tmp"),
    ] {
        assert_refused(
            &vr,
            &root,
            &vhost_vif("esc", 1, &dir, "sock"),
            400,
            "socket-outside-base",
        );
    }
    // Symlinks inside the base pointing outside it: as the directory, as an ancestor of a
    // directory to be created, relative, and `..` climbing from the symlink's target.
    for dir in [
        base.join("escape"),
        base.join("escape/new"),
        base.join("pod-a/rel-escape"),
        base.join("escape/../outside"),
    ] {
        assert_refused(
            &vr,
            &root,
            &vhost_vif("sym", 2, &dir, "sock"),
            400,
            "socket-outside-base",
        );
    }
    // The filename is one path component.
    for file in ["a/b", "../sock", ".", "..", ""] {
        assert_refused(
            &vr,
            &root,
            &vhost_vif("name", 3, &base.join("pod-b"), file),
            400,
            "socket-filename-invalid",
        );
    }
    // A resolved path longer than sun_path (107 bytes + NUL).
    let len = base.join("pod-c").as_os_str().len() + 1;
    let long_file = "s".repeat(108 - len.min(100));
    assert!(base.join("pod-c").join(&long_file).as_os_str().len() > 107);
    assert_refused(
        &vr,
        &root,
        &vhost_vif("long", 4, &base.join("pod-c"), &long_file),
        400,
        "socket-path-too-long",
    );
    let long_dir = base.join("d".repeat(120));
    assert_refused(
        &vr,
        &root,
        &vhost_vif("long", 4, &long_dir, "s"),
        400,
        "socket-path-too-long",
    );
    // Exactly 107 bytes fits.
    let fits = "f".repeat(107 - len);
    assert_eq!(base.join("pod-c").join(&fits).as_os_str().len(), 107);
    add(&vr, &vhost_vif("fits", 5, &base.join("pod-c"), &fits)).expect("a 107-byte path fits");
    assert!(base.join("pod-c").join(&fits).exists());

    // Two vifs on one path: refused, however the second spells it.
    add(&vr, &vhost_vif("first", 6, &base.join("pod-a"), "net0")).expect("first vif");
    let sock = base.join("pod-a/net0");
    let ino = std::fs::symlink_metadata(&sock).expect("socket").ino();
    for dir in [
        base.join("pod-a"),
        base.join("pod-c/../pod-a"),
        base.join("./pod-a/"),
    ] {
        assert_refused(
            &vr,
            &root,
            &vhost_vif("second", 7, &dir, "net0"),
            409,
            "socket-path-in-use",
        );
    }
    assert_eq!(
        std::fs::symlink_metadata(&sock).expect("socket").ino(),
        ino,
        "the first vif's socket was not replaced"
    );
    // A vif name already taken is a conflict too, and does not touch the new path.
    let err = add(&vr, &vhost_vif("first", 8, &base.join("pod-d"), "net0")).expect_err("dup name");
    assert_eq!(err.status(), 409, "{err}");
    assert!(
        !base.join("pod-d").exists(),
        "no directory for a refused vif"
    );

    // Nothing outside the base was touched by any of it.
    assert_eq!(
        std::fs::read(outside.join("keep")).expect("file outside"),
        b"not vrouterd's"
    );
    assert_eq!(
        std::fs::read_dir(&outside).expect("outside").count(),
        1,
        "nothing was created outside the base"
    );
    let status = vr.stop();
    assert!(status.success(), "vrouterd exit {status}");
}

fn mode_and_gid(p: &Path) -> (u32, u32) {
    let md = std::fs::metadata(p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
    (md.permissions().mode() & 0o7777, md.gid())
}

#[test]
fn created_directories_have_the_documented_modes_and_go_with_their_vif() {
    let dir = private_dir("vrouterd-iso");
    let vr = start(&dir);
    let base = vr.socket_base();
    // Nested directories, all created by vrouterd: 0700.
    let nested = base.join("ns1/pod-uid-1/net");
    add(&vr, &vhost_vif("plain", 1, &nested, "sock")).expect("plain");
    for d in [base.join("ns1"), base.join("ns1/pod-uid-1"), nested.clone()] {
        assert_eq!(mode_and_gid(&d).0, 0o700, "{} is 0700", d.display());
    }
    assert!(std::fs::symlink_metadata(nested.join("sock"))
        .expect("socket")
        .file_type()
        .is_socket());

    // With a group by name and by gid: 0750 and that group.
    let by_name = base.join("grp-name");
    let mut req = vhost_vif("grpname", 2, &by_name, "sock");
    req.vhostsocket_group = Some("daemon".into());
    add(&vr, &req).expect("group by name");
    assert_eq!(mode_and_gid(&by_name), (0o750, 1), "0750, group daemon");
    let by_gid = base.join("grp-gid/inner");
    let mut req = vhost_vif("grpgid", 3, &by_gid, "sock");
    req.vhostsocket_group = Some("4".into());
    add(&vr, &req).expect("group by gid");
    assert_eq!(mode_and_gid(&base.join("grp-gid")), (0o750, 4));
    assert_eq!(mode_and_gid(&by_gid), (0o750, 4));
    // An unknown group is refused before anything is created.
    let mut req = vhost_vif("grpbad", 4, &base.join("grp-bad"), "sock");
    req.vhostsocket_group = Some("no-such-group-vrt".into());
    let err = add(&vr, &req).expect_err("unknown group");
    assert_eq!((err.status(), err.code()), (400, "socket-group-unknown"));
    assert!(!base.join("grp-bad").exists());

    // A directory that already existed is the test's: vrouterd keeps its mode and never
    // removes it; the one it created below it goes with the vif.
    let theirs = base.join("theirs");
    std::fs::create_dir(&theirs).expect("theirs");
    std::fs::set_permissions(&theirs, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    add(&vr, &vhost_vif("mixed", 5, &theirs.join("mine"), "sock")).expect("mixed");
    assert_eq!(
        mode_and_gid(&theirs).0,
        0o755,
        "an existing directory keeps its mode"
    );
    assert_eq!(mode_and_gid(&theirs.join("mine")).0, 0o700);
    del(&vr, "mixed");
    assert!(!theirs.join("mine/sock").exists(), "the socket is gone");
    assert!(
        !theirs.join("mine").exists(),
        "the directory vrouterd made is gone"
    );
    assert!(theirs.is_dir(), "the directory it found stays");

    // A created directory shared by two vifs stays until the last one goes.
    add(&vr, &vhost_vif("share1", 6, &base.join("shared"), "a")).expect("share1");
    add(&vr, &vhost_vif("share2", 7, &base.join("shared"), "b")).expect("share2");
    del(&vr, "share1");
    assert!(!base.join("shared/a").exists());
    assert!(
        base.join("shared/b").exists(),
        "the other vif's socket stays"
    );
    del(&vr, "share2");
    assert!(!base.join("shared").exists(), "removed with its last vif");

    // A directory vrouterd created but that holds a file of someone else's is not removed.
    std::fs::write(nested.join("pod-file"), b"x").expect("pod file");
    del(&vr, "plain");
    assert!(!nested.join("sock").exists(), "the socket is gone");
    assert!(
        nested.join("pod-file").exists(),
        "a non-empty directory stays"
    );
    std::fs::remove_file(nested.join("pod-file")).expect("rm");

    del(&vr, "grpname");
    del(&vr, "grpgid");
    assert!(!by_name.exists() && !base.join("grp-gid").exists());

    // On shutdown a server-mode vif's socket and the directory created for it go too.
    add(&vr, &vhost_vif("atexit", 8, &base.join("exit-dir"), "sock")).expect("atexit");
    assert!(base.join("exit-dir/sock").exists());
    let status = vr.stop();
    assert!(status.success(), "vrouterd exit {status}");
    assert!(
        !base.join("exit-dir/sock").exists(),
        "socket removed on shutdown"
    );
    assert!(!base.join("exit-dir").exists(), "its directory too");
    assert!(theirs.is_dir(), "not the directory it found");
}

#[test]
fn a_device_that_fails_to_open_stays_free_and_a_device_backs_one_vif() {
    let dir = private_dir("vrouterd-dev");
    let vr = start(&dir);
    let physical = |name: &str, device: &str| {
        let mut req = VifRequest::new(name, VifType::Physical, 0, MacAddr([2, 0, 0, 0, 0x0d, 1]));
        req.device = Some(device.to_owned());
        req
    };
    // The null PMD refuses an argument it does not know: the port never opens.
    let err = add(&vr, &physical("fab-a", "net_null7,no-such-arg=1"))
        .expect_err("a device that cannot open is refused");
    assert_eq!(
        (err.status(), err.code()),
        (400, "dataplane-rejected"),
        "{err}"
    );
    assert!(vif_names(&vr).is_empty());
    // The device is still free for the vif that gets it right.
    add(&vr, &physical("fab-a", "net_null7")).expect("the same device, opened properly");
    // And it backs that vif only, however the next one words its arguments.
    for devargs in ["net_null7", "net_null7,size=64"] {
        let err = add(&vr, &physical("fab-b", devargs)).expect_err("one device per vif");
        assert_eq!(
            (err.status(), err.code()),
            (409, "already-exists"),
            "{devargs}: {err}"
        );
        assert!(
            err.to_string().contains("fab-a"),
            "names the vif using it: {err}"
        );
    }
    assert_eq!(vif_names(&vr), ["fab-a"]);
    del(&vr, "fab-a");
    add(&vr, &physical("fab-b", "net_null7")).expect("free again once its vif is gone");
    assert_eq!(vif_names(&vr), ["fab-b"]);
}
