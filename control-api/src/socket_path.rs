//! Socket isolation rules (seed 000): where a vhost-user vif's unix socket may live.
//!
//! - `vhostsocket-dir` must be absolute and resolve strictly below `--socket-base` after `..` and
//!   symlinks are resolved; a directory that does not exist yet is resolved through its nearest
//!   existing ancestor (so `base/new/../../etc` and `base/link-to-etc/new` are both caught).
//! - `vhostsocket-filename` is one path component: not empty, no `/`, not `.` or `..`, no NUL.
//! - The resolved path fits `sun_path` (107 bytes plus the terminating NUL).
//! - No two vifs share a path (checked by the controller against the model).
//! - Missing directories are created only after every check passed, mode 0700, or 0750 and
//!   group-owned when `vhostsocket-group` is given; the created ones are remembered so deleting
//!   the vif removes them again when they are empty.
//!
//! [`SocketBase::plan`] only reads the filesystem; [`SocketPlan::create_dirs`] is the one step
//! that writes, so a refused request leaves the disk as it was.

use std::fs;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{DirBuilderExt, FileTypeExt, MetadataExt, PermissionsExt};
use std::path::{Component, Path, PathBuf};

use crate::error::Error;

/// Longest socket path in bytes: `sun_path` is 108 bytes including the NUL.
pub const SUN_PATH_MAX: usize = 107;

/// Mode of directories vrouterd creates for a pod with no group given.
pub const PRIVATE_DIR_MODE: u32 = 0o700;
/// Mode of directories vrouterd creates for a pod whose socket a group must reach.
pub const GROUP_DIR_MODE: u32 = 0o750;
/// Mode of the socket's own directory when the pod (in the group) creates the socket there
/// (vhost-user client mode: the pod's virtio-user is the server).
pub const GROUP_WRITABLE_DIR_MODE: u32 = 0o770;

/// Which isolation rule a request broke; decides the status and error code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SocketRule {
    /// `vhostsocket-dir` is relative or contains NUL.
    DirSyntax,
    /// The directory resolves outside (or onto) `--socket-base`.
    OutsideBase,
    /// The filename is not a single path component.
    Filename,
    /// The whole path does not fit `sun_path`.
    TooLong,
    /// Another vif already uses this socket path.
    InUse,
    /// A path component is not a directory, a symlink dangles, or a non-socket file is in the way.
    NotUsable,
    /// `vhostsocket-group` names no group.
    Group,
}

impl SocketRule {
    pub fn code(&self) -> &'static str {
        match self {
            SocketRule::DirSyntax => "socket-dir-invalid",
            SocketRule::OutsideBase => "socket-outside-base",
            SocketRule::Filename => "socket-filename-invalid",
            SocketRule::TooLong => "socket-path-too-long",
            SocketRule::InUse => "socket-path-in-use",
            SocketRule::NotUsable => "socket-path-unusable",
            SocketRule::Group => "socket-group-unknown",
        }
    }

    pub fn status(&self) -> u16 {
        match self {
            SocketRule::InUse => 409,
            _ => 400,
        }
    }
}

fn refuse(rule: SocketRule, message: String) -> Error {
    Error::Socket { rule, message }
}

fn fs_error(action: &'static str, path: &Path, source: io::Error) -> Error {
    Error::Filesystem {
        action,
        path: path.to_path_buf(),
        source,
    }
}

/// The canonical `--socket-base` every pod socket directory must lie below.
#[derive(Debug, Clone)]
pub struct SocketBase {
    root: PathBuf,
}

/// A checked socket location: nothing has been created yet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SocketPlan {
    /// The resolved directory (canonical where it exists).
    pub dir: PathBuf,
    /// The resolved socket path: what vrouterd binds or connects to.
    pub path: PathBuf,
    /// Directories that do not exist yet, outermost first.
    pub missing: Vec<PathBuf>,
    /// Group to own created directories (and a server-mode socket), if the request named one.
    pub group: Option<u32>,
    /// The pod creates the socket itself (vhost-user client mode): the group may write the
    /// socket's directory.
    pub pod_creates_socket: bool,
}

impl SocketBase {
    /// Use `base` (created with mode 0755 if missing) as the socket base.
    pub fn new(base: &Path) -> Result<Self, Error> {
        if !base.is_absolute() {
            return Err(refuse(
                SocketRule::DirSyntax,
                format!("--socket-base {} must be an absolute path", base.display()),
            ));
        }
        if !base.exists() {
            fs::DirBuilder::new()
                .recursive(true)
                .mode(0o755)
                .create(base)
                .map_err(|e| fs_error("create socket base", base, e))?;
        }
        let root = fs::canonicalize(base).map_err(|e| fs_error("resolve socket base", base, e))?;
        if !root.is_dir() {
            return Err(refuse(
                SocketRule::NotUsable,
                format!("--socket-base {} is not a directory", base.display()),
            ));
        }
        Ok(SocketBase { root })
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Check `dir`/`filename` against every rule (reading the filesystem, never writing it).
    pub fn plan(
        &self,
        dir: &Path,
        filename: &str,
        group: Option<&str>,
    ) -> Result<SocketPlan, Error> {
        check_filename(filename)?;
        if dir.as_os_str().as_bytes().contains(&0) {
            return Err(refuse(
                SocketRule::DirSyntax,
                "vhostsocket-dir contains a NUL byte".to_string(),
            ));
        }
        if !dir.is_absolute() {
            return Err(refuse(
                SocketRule::DirSyntax,
                format!(
                    "vhostsocket-dir {} must be an absolute path below the socket base {}",
                    dir.display(),
                    self.root.display()
                ),
            ));
        }
        let resolved = resolve(dir)?;
        if !resolved.starts_with(&self.root) || resolved == self.root {
            return Err(refuse(
                SocketRule::OutsideBase,
                format!(
                    "vhostsocket-dir {} resolves to {}, which is not below the socket base {}; \
                     give a directory unique to the pod inside the base",
                    dir.display(),
                    resolved.display(),
                    self.root.display()
                ),
            ));
        }
        let path = resolved.join(filename);
        // Both the path vrouterd uses and the one the pod was given must fit.
        for candidate in [&path, &dir.join(filename)] {
            let len = candidate.as_os_str().as_bytes().len();
            if len > SUN_PATH_MAX {
                return Err(refuse(
                    SocketRule::TooLong,
                    format!(
                        "socket path {} is {len} bytes; a unix socket path holds at most {SUN_PATH_MAX}: \
                         use a shorter directory or filename",
                        candidate.display()
                    ),
                ));
            }
        }
        match fs::symlink_metadata(&path) {
            Ok(meta) if !meta.file_type().is_socket() => {
                return Err(refuse(
                    SocketRule::NotUsable,
                    format!(
                        "{} exists and is not a socket; remove it or pick another filename",
                        path.display()
                    ),
                ))
            }
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(fs_error("inspect", &path, e)),
        }
        let missing = missing_dirs(&resolved);
        let group = group.map(resolve_group).transpose()?;
        Ok(SocketPlan {
            dir: resolved,
            path,
            missing,
            group,
            pod_creates_socket: false,
        })
    }
}

fn check_filename(name: &str) -> Result<(), Error> {
    let why = if name.is_empty() {
        Some("is empty")
    } else if name.contains('/') {
        Some("contains '/'")
    } else if name == "." || name == ".." {
        Some("is '.' or '..'")
    } else if name.contains('\0') {
        Some("contains a NUL byte")
    } else {
        None
    };
    match why {
        Some(why) => Err(refuse(
            SocketRule::Filename,
            format!("vhostsocket-filename {name:?} {why}; it must be a single path component"),
        )),
        None => Ok(()),
    }
}

/// Resolve `..`, `.` and symlinks in an absolute path whose tail may not exist yet.
fn resolve(dir: &Path) -> Result<PathBuf, Error> {
    let mut out = PathBuf::from("/");
    for comp in dir.components() {
        match comp {
            Component::RootDir | Component::Prefix(_) | Component::CurDir => {}
            Component::ParentDir => {
                out.pop();
            }
            Component::Normal(name) => {
                let next = out.join(name);
                match fs::symlink_metadata(&next) {
                    Ok(_) => {
                        // Exists (possibly a symlink): follow it to where it really is.
                        let real = fs::canonicalize(&next).map_err(|e| {
                            refuse(
                                SocketRule::NotUsable,
                                format!(
                                    "{} cannot be resolved ({e}); is it a dangling symlink?",
                                    next.display()
                                ),
                            )
                        })?;
                        if !real.is_dir() {
                            return Err(refuse(
                                SocketRule::NotUsable,
                                format!("{} is not a directory", next.display()),
                            ));
                        }
                        out = real;
                    }
                    Err(e) if e.kind() == io::ErrorKind::NotFound => out = next,
                    Err(e) => return Err(fs_error("inspect", &next, e)),
                }
            }
        }
    }
    Ok(out)
}

/// The ancestors of `dir` (and `dir` itself) that do not exist, outermost first.
fn missing_dirs(dir: &Path) -> Vec<PathBuf> {
    let mut missing: Vec<PathBuf> = dir
        .ancestors()
        .take_while(|p| fs::symlink_metadata(p).is_err())
        .map(Path::to_path_buf)
        .collect();
    missing.reverse();
    missing
}

/// A group name or a numeric gid.
pub fn resolve_group(group: &str) -> Result<u32, Error> {
    if let Ok(gid) = group.parse::<u32>() {
        return Ok(gid);
    }
    match nix::unistd::Group::from_name(group) {
        Ok(Some(g)) => Ok(g.gid.as_raw()),
        Ok(None) => Err(refuse(
            SocketRule::Group,
            format!(
                "vhostsocket-group {group:?} is not a group on this host; give a group name or gid"
            ),
        )),
        Err(e) => Err(refuse(
            SocketRule::Group,
            format!("vhostsocket-group {group:?} could not be looked up: {e}"),
        )),
    }
}

impl SocketPlan {
    /// The same plan for a vif in `mode`: in client mode the pod creates the socket, so with a
    /// group the socket's directory is made group-writable.
    pub fn for_mode(mut self, mode: crate::api::VhostUserMode) -> Self {
        self.pod_creates_socket = mode == crate::api::VhostUserMode::Client;
        self
    }

    /// Create the missing directories (mode 0700, or 0750 and group-owned; 0770 for the
    /// socket's own directory when the pod creates the socket) and return them,
    /// outermost first. On failure removes what it created and leaves the disk as it was.
    pub fn create_dirs(&self, base: &SocketBase) -> Result<Vec<PathBuf>, Error> {
        let mut created = Vec::new();
        for dir in &self.missing {
            if let Err(e) = self.create_one(dir) {
                remove_created_dirs(&created);
                return Err(e);
            }
            created.push(dir.clone());
        }
        // Someone may have swapped a component for a symlink between plan and create.
        let real = fs::canonicalize(&self.dir).map_err(|e| fs_error("resolve", &self.dir, e));
        match real {
            Ok(real) if real == self.dir && real.starts_with(base.root()) => Ok(created),
            Ok(real) => {
                remove_created_dirs(&created);
                Err(refuse(
                    SocketRule::OutsideBase,
                    format!(
                        "{} changed under us and now resolves to {}; refusing it",
                        self.dir.display(),
                        real.display()
                    ),
                ))
            }
            Err(e) => {
                remove_created_dirs(&created);
                Err(e)
            }
        }
    }

    fn create_one(&self, dir: &Path) -> Result<(), Error> {
        let mode = match self.group {
            Some(_) if self.pod_creates_socket && dir == self.dir => GROUP_WRITABLE_DIR_MODE,
            Some(_) => GROUP_DIR_MODE,
            None => PRIVATE_DIR_MODE,
        };
        fs::DirBuilder::new()
            .mode(mode)
            .create(dir)
            .map_err(|e| fs_error("create directory", dir, e))?;
        // The umask may have narrowed the mode; set it exactly.
        let finish = || -> io::Result<()> {
            fs::set_permissions(dir, fs::Permissions::from_mode(mode))?;
            if let Some(gid) = self.group {
                std::os::unix::fs::chown(dir, None, Some(gid))?;
            }
            Ok(())
        };
        finish().map_err(|e| {
            let _ = fs::remove_dir(dir);
            fs_error("set mode/group of", dir, e)
        })
    }
}

/// Remove directories vrouterd created (given outermost first) if they are empty, innermost
/// first. Directories that are not empty or already gone are left alone.
pub fn remove_created_dirs(created: &[PathBuf]) {
    for dir in created.iter().rev() {
        match fs::remove_dir(dir) {
            Ok(()) => tracing::debug!(dir = %dir.display(), "removed socket directory"),
            Err(e) => tracing::debug!(dir = %dir.display(), error = %e, "kept socket directory"),
        }
    }
}

/// Remove a vif's socket file, but only if it is a socket (never a file someone put there).
pub fn remove_socket_file(path: &Path) {
    if let Ok(meta) = fs::symlink_metadata(path) {
        if meta.file_type().is_socket() {
            if let Err(e) = fs::remove_file(path) {
                tracing::warn!(socket = %path.display(), error = %e, "could not remove socket");
            }
        }
    }
}

/// `(dev, ino)` of a path, to tell whether a socket file is still the one we created.
pub fn identity(path: &Path) -> Option<(u64, u64)> {
    fs::symlink_metadata(path).ok().map(|m| (m.dev(), m.ino()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    /// A real temporary tree: `<tmp>/base` is the socket base, `<tmp>/outside` is not.
    struct Tree {
        tmp: tempfile::TempDir,
        base: SocketBase,
    }

    impl Tree {
        fn new() -> Tree {
            let tmp = tempfile::tempdir().unwrap();
            fs::create_dir(tmp.path().join("base")).unwrap();
            fs::create_dir(tmp.path().join("outside")).unwrap();
            let base = SocketBase::new(&tmp.path().join("base")).unwrap();
            Tree { tmp, base }
        }
        fn base(&self) -> PathBuf {
            self.base.root().to_path_buf()
        }
        fn outside(&self) -> PathBuf {
            fs::canonicalize(self.tmp.path().join("outside")).unwrap()
        }
        /// Every path in the tree, to show that a refusal changed nothing.
        fn snapshot(&self) -> Vec<PathBuf> {
            fn walk(p: &Path, out: &mut Vec<PathBuf>) {
                out.push(p.to_path_buf());
                if fs::symlink_metadata(p).map(|m| m.is_dir()).unwrap_or(false) {
                    let mut entries: Vec<_> = fs::read_dir(p)
                        .unwrap()
                        .map(|e| e.unwrap().path())
                        .collect();
                    entries.sort();
                    for e in entries {
                        walk(&e, out);
                    }
                }
            }
            let mut out = Vec::new();
            walk(self.tmp.path(), &mut out);
            out
        }
        fn refused(&self, dir: &Path, file: &str) -> SocketRule {
            let before = self.snapshot();
            let err = self.base.plan(dir, file, None).unwrap_err();
            assert_eq!(before, self.snapshot(), "a refused plan touched the disk");
            match err {
                Error::Socket { rule, message } => {
                    assert!(!message.is_empty());
                    rule
                }
                other => panic!("expected a socket rule error, got {other:?}"),
            }
        }
    }

    #[test]
    fn a_new_pod_directory_is_planned_then_created_private() {
        let t = Tree::new();
        let dir = t.base().join("pod-a/net");
        let plan = t.base.plan(&dir, "sock0", None).unwrap();
        assert_eq!(plan.path, dir.join("sock0"));
        assert_eq!(plan.missing, vec![t.base().join("pod-a"), dir.clone()]);
        assert!(!dir.exists(), "planning must not create anything");
        let created = plan.create_dirs(&t.base).unwrap();
        assert_eq!(created, plan.missing);
        for d in &created {
            let mode = fs::metadata(d).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode, PRIVATE_DIR_MODE, "{}", d.display());
        }
        remove_created_dirs(&created);
        assert!(!t.base().join("pod-a").exists());
    }

    #[test]
    fn a_group_gets_0750_and_ownership() {
        let t = Tree::new();
        let dir = t.base().join("pod-g");
        // gid 1 is "daemon" on Debian; any gid works for root.
        let plan = t.base.plan(&dir, "s", Some("1")).unwrap();
        let created = plan.create_dirs(&t.base).unwrap();
        let meta = fs::metadata(&dir).unwrap();
        assert_eq!(meta.permissions().mode() & 0o777, GROUP_DIR_MODE);
        assert_eq!(meta.gid(), 1);
        remove_created_dirs(&created);
        assert!(t.base.plan(&dir, "s", Some("no-such-group-xyz")).is_err());
    }

    #[test]
    fn a_pod_that_creates_its_socket_gets_a_group_writable_directory() {
        let t = Tree::new();
        let dir = t.base().join("pod-c/net");
        let plan = t
            .base
            .plan(&dir, "s", Some("1"))
            .unwrap()
            .for_mode(crate::api::VhostUserMode::Client);
        // A umask that would otherwise take the group's bits away.
        let created = plan.create_dirs(&t.base).unwrap();
        let mode = |d: &Path| fs::metadata(d).unwrap().permissions().mode() & 0o7777;
        assert_eq!(
            mode(&t.base().join("pod-c")),
            GROUP_DIR_MODE,
            "outer: search only"
        );
        assert_eq!(
            mode(&dir),
            GROUP_WRITABLE_DIR_MODE,
            "the socket's own directory"
        );
        assert_eq!(fs::metadata(&dir).unwrap().gid(), 1);
        remove_created_dirs(&created);
        // Server mode: vrouterd creates the socket; the directory stays 0750.
        let plan = t
            .base
            .plan(&dir, "s", Some("1"))
            .unwrap()
            .for_mode(crate::api::VhostUserMode::Server);
        let created = plan.create_dirs(&t.base).unwrap();
        assert_eq!(mode(&dir), GROUP_DIR_MODE);
        remove_created_dirs(&created);
    }

    #[test]
    fn dotdot_escapes_are_refused() {
        let t = Tree::new();
        let b = t.base();
        assert_eq!(
            t.refused(&b.join("../outside"), "s"),
            SocketRule::OutsideBase
        );
        // Through a directory that does not exist yet.
        assert_eq!(
            t.refused(&b.join("new/../../outside/x"), "s"),
            SocketRule::OutsideBase
        );
        assert_eq!(
            t.refused(&b.join("a/b/../../.."), "s"),
            SocketRule::OutsideBase
        );
        // The base itself is not a pod directory.
        assert_eq!(t.refused(&b.join("x/.."), "s"), SocketRule::OutsideBase);
        // `..` that stays inside is fine.
        let p = t.base.plan(&b.join("x/../pod"), "s", None).unwrap();
        assert_eq!(p.dir, b.join("pod"));
    }

    #[test]
    fn symlink_escapes_are_refused() {
        let t = Tree::new();
        let b = t.base();
        symlink(t.outside(), b.join("evil")).unwrap();
        assert_eq!(t.refused(&b.join("evil"), "s"), SocketRule::OutsideBase);
        assert_eq!(
            t.refused(&b.join("evil/new-dir"), "s"),
            SocketRule::OutsideBase
        );
        symlink(b.join("missing-target"), b.join("dangling")).unwrap();
        assert_eq!(t.refused(&b.join("dangling/x"), "s"), SocketRule::NotUsable);
        // A symlink that stays inside the base resolves to its target.
        fs::create_dir(b.join("real")).unwrap();
        symlink(b.join("real"), b.join("alias")).unwrap();
        let p = t.base.plan(&b.join("alias/pod"), "s", None).unwrap();
        assert_eq!(p.dir, b.join("real/pod"));
    }

    #[test]
    fn filenames_must_be_one_component() {
        let t = Tree::new();
        let d = t.base().join("pod");
        for bad in ["", "a/b", ".", "..", "../x", "a\0b"] {
            assert_eq!(t.refused(&d, bad), SocketRule::Filename, "{bad:?}");
        }
        assert_eq!(
            t.refused(Path::new("relative/pod"), "s"),
            SocketRule::DirSyntax
        );
    }

    #[test]
    fn paths_longer_than_sun_path_are_refused() {
        let t = Tree::new();
        let d = t.base().join("pod");
        let room = SUN_PATH_MAX - d.as_os_str().len() - 1;
        assert!(t.base.plan(&d, &"f".repeat(room), None).is_ok());
        assert_eq!(t.refused(&d, &"f".repeat(room + 1)), SocketRule::TooLong);
        // A requested path that only fits once resolved is still refused: the pod uses it as given.
        fs::create_dir(&d).unwrap();
        let detour = t.base().join(format!("{}/../pod", "x".repeat(room)));
        assert_eq!(t.refused(&detour, "f"), SocketRule::TooLong);
    }

    #[test]
    fn a_file_in_the_way_is_refused() {
        let t = Tree::new();
        let d = t.base().join("pod");
        fs::create_dir(&d).unwrap();
        fs::write(d.join("sock"), b"not a socket").unwrap();
        assert_eq!(t.refused(&d, "sock"), SocketRule::NotUsable);
        fs::write(t.base().join("file"), b"x").unwrap();
        assert_eq!(
            t.refused(&t.base().join("file/sub"), "s"),
            SocketRule::NotUsable
        );
    }

    #[test]
    fn removal_keeps_non_empty_directories_and_foreign_files() {
        let t = Tree::new();
        let dir = t.base().join("pod-r");
        let plan = t.base.plan(&dir, "s", None).unwrap();
        let created = plan.create_dirs(&t.base).unwrap();
        fs::write(dir.join("keep"), b"x").unwrap();
        remove_socket_file(&dir.join("keep"));
        assert!(dir.join("keep").exists(), "only sockets are removed");
        remove_created_dirs(&created);
        assert!(dir.exists());
        fs::remove_file(dir.join("keep")).unwrap();
        let listener = std::os::unix::net::UnixListener::bind(dir.join("s")).unwrap();
        drop(listener);
        remove_socket_file(&dir.join("s"));
        remove_created_dirs(&created);
        assert!(!dir.exists());
    }
}
