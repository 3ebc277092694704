//! Start-up and shutdown notices to the service manager (sd_notify(3)): under systemd with
//! `Type=notify`, `systemctl start vrouterd` returns when vrouterd says READY=1, i.e. once its
//! control API answers, and units ordered after it (an agent) find the API up.
//!
//! The protocol is one datagram of `KEY=value` lines to the unix socket `$NOTIFY_SOCKET` names
//! (a path, or an abstract name after `@`); without it (not started by systemd) nothing is sent.

use std::os::unix::net::UnixDatagram;

use tracing::warn;

/// Sends `state` (newline-separated `KEY=value` lines) to `$NOTIFY_SOCKET`, if set. A failure
/// is logged, not fatal: the service manager then decides (a start times out).
pub fn notify(state: &str) {
    let Some(target) = std::env::var_os("NOTIFY_SOCKET") else {
        return;
    };
    if let Err(e) = send(&target, state) {
        warn!(socket = ?target, "could not notify the service manager: {e}");
    }
}

fn send(target: &std::ffi::OsStr, state: &str) -> std::io::Result<()> {
    use std::os::unix::ffi::OsStrExt;
    let socket = UnixDatagram::unbound()?;
    let bytes = target.as_bytes();
    let sent = match bytes.strip_prefix(b"@") {
        Some(name) => {
            use std::os::linux::net::SocketAddrExt;
            let addr = std::os::unix::net::SocketAddr::from_abstract_name(name)?;
            socket.send_to_addr(state.as_bytes(), &addr)?
        }
        None => socket.send_to(state.as_bytes(), target)?,
    };
    if sent != state.len() {
        return Err(std::io::Error::other("short datagram"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn states_arrive_at_a_path_and_an_abstract_socket() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("notify");
        let listener = UnixDatagram::bind(&path).unwrap();
        send(path.as_os_str(), "READY=1\nSTATUS=up").unwrap();
        let mut buf = [0u8; 64];
        let n = listener.recv(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"READY=1\nSTATUS=up");

        use std::os::linux::net::SocketAddrExt;
        let name = format!("vrouterd-notify-test-{}", std::process::id());
        let addr = std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes()).unwrap();
        let listener = UnixDatagram::bind_addr(&addr).unwrap();
        send(std::ffi::OsStr::new(&format!("@{name}")), "STOPPING=1").unwrap();
        let n = listener.recv(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"STOPPING=1");
    }
}
