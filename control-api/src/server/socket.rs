//! The control socket: bound 0600 before anyone can connect, a stale one replaced, a live one
//! left alone.

use std::fs;
use std::io;
use std::os::unix::fs::{DirBuilderExt, FileTypeExt, PermissionsExt};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};

use crate::error::Error;
use crate::socket_path;

/// Mode of the control socket: only root (vrouterd's user) may drive the vrouter.
pub const CONTROL_SOCKET_MODE: u32 = 0o600;

/// The control socket, bound with mode 0600 and ready to serve.
pub struct ControlSocket {
    pub(super) listener: UnixListener,
    pub(super) path: PathBuf,
    /// The socket file's identity when bound, so only our own file is removed at the end.
    pub(super) identity: Option<(u64, u64)>,
}

pub(super) fn sock_err(action: &'static str, path: &Path, source: io::Error) -> Error {
    Error::Filesystem {
        action,
        path: path.to_path_buf(),
        source,
    }
}

impl ControlSocket {
    /// Bind `path` with mode 0600. A stale socket file (nobody listening) is replaced; a live
    /// one or a non-socket file is an error. The socket appears at `path` already 0600: it is
    /// bound in a private directory and renamed into place.
    pub fn bind(path: &Path) -> Result<ControlSocket, Error> {
        let parent = path
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        if !parent.exists() {
            fs::DirBuilder::new()
                .recursive(true)
                .mode(0o755)
                .create(parent)
                .map_err(|e| sock_err("create directory", parent, e))?;
        }
        match fs::symlink_metadata(path) {
            Ok(meta) if meta.file_type().is_socket() => {
                if UnixStream::connect(path).is_ok() {
                    return Err(sock_err(
                        "bind control socket",
                        path,
                        io::Error::new(
                            io::ErrorKind::AddrInUse,
                            "another process is serving on it",
                        ),
                    ));
                }
                tracing::info!(socket = %path.display(), "replacing stale control socket");
            }
            Ok(_) => {
                return Err(sock_err(
                    "bind control socket",
                    path,
                    io::Error::new(
                        io::ErrorKind::AlreadyExists,
                        "a non-socket file is in the way",
                    ),
                ))
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(sock_err("inspect", path, e)),
        }
        let staging = parent.join(format!(".vrctl-{}", std::process::id()));
        let _ = fs::remove_dir_all(&staging);
        fs::DirBuilder::new()
            .mode(0o700)
            .create(&staging)
            .map_err(|e| sock_err("create directory", &staging, e))?;
        let staged = staging.join("s");
        let result = (|| -> Result<UnixListener, Error> {
            let listener = UnixListener::bind(&staged).map_err(|e| sock_err("bind", &staged, e))?;
            fs::set_permissions(&staged, fs::Permissions::from_mode(CONTROL_SOCKET_MODE))
                .map_err(|e| sock_err("set mode of", &staged, e))?;
            fs::rename(&staged, path).map_err(|e| sock_err("move control socket to", path, e))?;
            Ok(listener)
        })();
        let _ = fs::remove_file(&staged);
        let _ = fs::remove_dir(&staging);
        let listener = result?;
        listener
            .set_nonblocking(true)
            .map_err(|e| sock_err("configure", path, e))?;
        Ok(ControlSocket {
            listener,
            path: path.to_path_buf(),
            identity: socket_path::identity(path),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}
