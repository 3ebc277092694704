//! A vhost-user port: the socket (server or client mode) and the session of its current frontend,
//! driven without blocking so one vhost thread can serve many ports.
//!
//! Driving it: poll [`VhostUserPort::poll_fd`] (an epoll fd that turns readable when the listener
//! or the connection has something) with a timeout of [`VhostUserPort::next_deadline`], then call
//! [`VhostUserPort::process`] and act on the [`PortEvent`]s:
//! - `QueueReady(i)`: [`VhostUserPort::take_queue`] and hand the queue to its forwarding thread;
//! - `QueueStop(i)`: fetch queue `i` back from that thread and [`VhostUserPort::return_queue`] it
//!   (the session holds the message that needs it until then);
//! - `Disconnected`: drop every queue of the port (their `Arc` on guest memory is the last thing
//!   keeping the mapping; it is unmapped when the last one goes).
//!
//! Each `process` call handles at most [`MESSAGE_BUDGET`] messages, so a flooding peer cannot
//! starve the other ports.

use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::fs::FileTypeExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use rustix::event::epoll;

use crate::connection::{Connection, Incoming};
use crate::error::Error;
use crate::session::{Output, Session, SessionConfig};
use crate::virtqueue::Virtqueue;

/// Messages handled per [`VhostUserPort::process`] call.
pub const MESSAGE_BUDGET: usize = 64;

/// Who creates the socket.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// The backend creates and listens; the pod connects.
    Server,
    /// The pod creates the socket; the backend connects, retrying and reconnecting.
    Client,
}

/// Port settings.
#[derive(Debug, Clone)]
pub struct PortConfig {
    /// Socket path.
    pub path: PathBuf,
    /// Server or client mode.
    pub mode: Mode,
    /// Session settings.
    pub session: SessionConfig,
    /// How long a peer may leave a message half-sent or replies unread.
    pub io_timeout: Duration,
    /// First reconnect delay (client mode).
    pub reconnect_min: Duration,
    /// Largest reconnect delay (client mode).
    pub reconnect_max: Duration,
    /// Server mode: the socket is made mode 0660 and owned by this group, so pods running as
    /// an unprivileged user in it can connect; without a group it is 0600 (root's pods only).
    /// Set explicitly after bind: the process umask does not decide.
    pub socket_group: Option<u32>,
}

impl PortConfig {
    /// Defaults for `path` in `mode`.
    pub fn new(path: impl Into<PathBuf>, mode: Mode) -> Self {
        let path = path.into();
        let session = SessionConfig {
            name: path.display().to_string(),
            ..SessionConfig::default()
        };
        Self {
            path,
            mode,
            session,
            io_timeout: Duration::from_secs(5),
            reconnect_min: Duration::from_millis(50),
            reconnect_max: Duration::from_secs(2),
            socket_group: None,
        }
    }
}

/// Connection state, for status reporting.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PortState {
    /// Server mode, no frontend.
    Listening,
    /// Client mode, not connected (retrying).
    Connecting,
    /// A frontend is attached.
    Connected,
}

/// What happened during [`VhostUserPort::process`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PortEvent {
    /// A frontend attached.
    Connected,
    /// Vring ready to be taken.
    QueueReady(u16),
    /// The session needs this lent vring back.
    QueueStop(u16),
    /// The frontend left (or was dropped): drop all queues of this port.
    Disconnected,
}

const TOKEN_LISTENER: u64 = 1;
const TOKEN_CONN: u64 = 2;

struct Attached {
    conn: Connection,
    session: Session,
}

/// One vhost-user socket and its current frontend.
pub struct VhostUserPort {
    cfg: PortConfig,
    epoll: OwnedFd,
    listener: Option<UnixListener>,
    attached: Option<Attached>,
    next_connect: Instant,
    backoff: Duration,
    out: Output,
    out_watch: bool,
    /// Why the last frontend was cut off for breaking the device (not a plain hang-up).
    fault: Option<String>,
}

impl std::fmt::Debug for VhostUserPort {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VhostUserPort")
            .field("path", &self.cfg.path)
            .field("state", &self.state())
            .finish()
    }
}

fn io_err(path: &std::path::Path, source: std::io::Error) -> Error {
    Error::Io {
        path: path.display().to_string(),
        source,
    }
}

impl VhostUserPort {
    /// Creates the port: in server mode binds and listens now (replacing a stale socket file,
    /// never another kind of file); in client mode connects on the first `process`.
    pub fn new(cfg: PortConfig) -> Result<Self, Error> {
        let epoll =
            epoll::create(epoll::CreateFlags::CLOEXEC).map_err(|e| io_err(&cfg.path, e.into()))?;
        let listener = match cfg.mode {
            Mode::Server => {
                if let Ok(md) = std::fs::symlink_metadata(&cfg.path) {
                    if !md.file_type().is_socket() {
                        return Err(io_err(
                            &cfg.path,
                            std::io::Error::other("exists and is not a socket"),
                        ));
                    }
                    std::fs::remove_file(&cfg.path).map_err(|e| io_err(&cfg.path, e))?;
                }
                let l = UnixListener::bind(&cfg.path).map_err(|e| io_err(&cfg.path, e))?;
                if let Err(e) = set_socket_access(&cfg.path, cfg.socket_group) {
                    let _ = std::fs::remove_file(&cfg.path);
                    return Err(io_err(&cfg.path, e));
                }
                l.set_nonblocking(true).map_err(|e| io_err(&cfg.path, e))?;
                epoll::add(
                    &epoll,
                    &l,
                    epoll::EventData::new_u64(TOKEN_LISTENER),
                    epoll::EventFlags::IN,
                )
                .map_err(|e| io_err(&cfg.path, e.into()))?;
                Some(l)
            }
            Mode::Client => None,
        };
        let backoff = cfg.reconnect_min;
        Ok(Self {
            cfg,
            epoll,
            listener,
            attached: None,
            next_connect: Instant::now(),
            backoff,
            out: Output::default(),
            out_watch: false,
            fault: None,
        })
    }

    /// The fd to poll for readability (an epoll set over the listener and the connection).
    pub fn poll_fd(&self) -> BorrowedFd<'_> {
        self.epoll.as_fd()
    }

    /// The socket path.
    pub fn path(&self) -> &std::path::Path {
        &self.cfg.path
    }

    /// Connection state.
    pub fn state(&self) -> PortState {
        match (&self.attached, self.cfg.mode) {
            (Some(_), _) => PortState::Connected,
            (None, Mode::Server) => PortState::Listening,
            (None, Mode::Client) => PortState::Connecting,
        }
    }

    /// The current frontend's session.
    pub fn session(&self) -> Option<&Session> {
        self.attached.as_ref().map(|a| &a.session)
    }

    /// When `process` must run again even if the fd stays quiet.
    pub fn next_deadline(&self) -> Option<Instant> {
        match &self.attached {
            Some(a) => a.conn.deadline(),
            None if self.cfg.mode == Mode::Client => Some(self.next_connect),
            None => None,
        }
    }

    /// Waits up to `timeout` for this port alone to have work (tests and single-port drivers).
    pub fn wait(&self, timeout: Duration) {
        let timeout = match self.next_deadline() {
            Some(d) => timeout.min(d.saturating_duration_since(Instant::now())),
            None => timeout,
        };
        let mut fds = [rustix::event::PollFd::new(
            &self.epoll,
            rustix::event::PollFlags::IN,
        )];
        let ts = rustix::time::Timespec {
            tv_sec: timeout.as_secs() as i64,
            tv_nsec: i64::from(timeout.subsec_nanos()),
        };
        let _ = rustix::event::poll(&mut fds, Some(&ts));
    }

    /// Does all work that is ready without blocking, appending events.
    pub fn process(&mut self, now: Instant, events: &mut Vec<PortEvent>) {
        self.accept(events);
        if self.attached.is_none() && self.cfg.mode == Mode::Client && now >= self.next_connect {
            self.connect(now, events);
        }
        if let Err(e) = self.serve(now, events) {
            tracing::warn!(port = %self.cfg.path.display(), %e, "frontend dropped");
            if matches!(e, Error::GuestMemoryFault { .. }) {
                self.fault = Some(e.to_string());
            }
            self.disconnect(now, events);
        }
    }

    /// Why the last frontend was cut off for breaking the device (a guest memory fault), until
    /// a new frontend attaches.
    pub fn fault(&self) -> Option<&str> {
        self.fault.as_deref()
    }

    fn accept(&mut self, events: &mut Vec<PortEvent>) {
        loop {
            let Some(l) = &self.listener else { return };
            match l.accept() {
                Ok((s, _)) => {
                    // The old frontend may have gone an instant ago (a pod restarting, QEMU
                    // reconnecting) with its hang-up not handled yet: only a live one keeps
                    // the port.
                    if self.attached.as_ref().is_some_and(|a| a.conn.peer_gone()) {
                        tracing::info!(port = %self.cfg.path.display(), "previous frontend hung up; the new one takes over");
                        self.disconnect(Instant::now(), events);
                    }
                    if self.attached.is_some() {
                        tracing::warn!(port = %self.cfg.path.display(), "second frontend refused: the port already has a live one");
                        drop(s);
                        continue;
                    }
                    self.attach(s, events);
                }
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return,
                Err(e) => {
                    tracing::warn!(port = %self.cfg.path.display(), %e, "accept failed");
                    return;
                }
            }
        }
    }

    fn connect(&mut self, now: Instant, events: &mut Vec<PortEvent>) {
        match connect_nonblocking(&self.cfg.path) {
            Ok(s) => {
                self.backoff = self.cfg.reconnect_min;
                self.attach(s, events);
            }
            Err(e) => {
                tracing::debug!(port = %self.cfg.path.display(), %e, retry_in = ?self.backoff, "connect failed");
                self.next_connect = now + self.backoff;
                self.backoff = (self.backoff * 2).min(self.cfg.reconnect_max);
            }
        }
    }

    fn attach(&mut self, s: UnixStream, events: &mut Vec<PortEvent>) {
        let conn = match Connection::new(s, self.cfg.io_timeout) {
            Ok(c) => c,
            Err(e) => {
                tracing::warn!(port = %self.cfg.path.display(), %e, "cannot set up connection");
                return;
            }
        };
        if let Err(e) = epoll::add(
            &self.epoll,
            conn.fd(),
            epoll::EventData::new_u64(TOKEN_CONN),
            epoll::EventFlags::IN,
        ) {
            tracing::warn!(port = %self.cfg.path.display(), %e, "cannot poll connection");
            return;
        }
        tracing::info!(port = %self.cfg.path.display(), "frontend attached");
        self.out_watch = false;
        self.fault = None;
        self.attached = Some(Attached {
            conn,
            session: Session::new(self.cfg.session.clone()),
        });
        events.push(PortEvent::Connected);
    }

    fn disconnect(&mut self, now: Instant, events: &mut Vec<PortEvent>) {
        if let Some(a) = self.attached.take() {
            let _ = epoll::delete(&self.epoll, a.conn.fd());
            // Dropping the session closes kick/call/err fds and releases the memory map (unmapped
            // once the data path drops its queues too).
            drop(a);
            tracing::info!(port = %self.cfg.path.display(), "frontend detached");
            events.push(PortEvent::Disconnected);
            self.next_connect = now + self.cfg.reconnect_min;
            self.backoff = self.cfg.reconnect_min;
        }
    }

    /// Drops the current frontend (e.g. the vif is being deleted).
    pub fn detach(&mut self, events: &mut Vec<PortEvent>) {
        self.disconnect(Instant::now(), events);
    }

    fn serve(&mut self, now: Instant, events: &mut Vec<PortEvent>) -> Result<(), Error> {
        let Some(a) = &mut self.attached else {
            return Ok(());
        };
        if let Some(f) = a.session.memory_fault() {
            return Err(Error::GuestMemoryFault { gpa: f.gpa });
        }
        if a.session.dirty_log().is_some_and(|l| l.faulted()) {
            // Our marks now land in private zeros: the migration QEMU runs would miss pages.
            return Err(Error::Peer(String::from(
                "truncated the dirty log file under us",
            )));
        }
        a.conn.flush(now)?;
        let mut budget = MESSAGE_BUDGET;
        // Backpressure: no new requests while replies are unread or a message is held.
        while budget > 0 && !a.conn.has_pending_output() && !a.session.is_blocked() {
            budget -= 1;
            match a.conn.read(now)? {
                None => break,
                Some(Incoming::Message(m)) => {
                    tracing::debug!(port = %self.cfg.path.display(), req = m.request.name(), "request");
                    self.out.clear();
                    a.session.handle(m, &mut self.out);
                    Self::emit(&self.out, events);
                    a.conn.send(&self.out.reply, now)?;
                    if let Some(why) = self.out.close.take() {
                        return Err(Error::Peer(why));
                    }
                }
                Some(Incoming::Malformed(h, e)) => {
                    if h.request == u32::from(crate::codec::RequestCode::SetLogBase) {
                        // The frontend waits for a reply that has no way to say "failed".
                        return Err(Error::Peer(format!("malformed SET_LOG_BASE: {e}")));
                    }
                    tracing::warn!(port = %self.cfg.path.display(), request = h.request, %e, "malformed request refused");
                    if h.need_reply()
                        && a.session.protocol_features() & crate::session::PF_REPLY_ACK != 0
                    {
                        let mut r = Vec::new();
                        h.reply(&1u64.to_le_bytes(), &mut r);
                        a.conn.send(&r, now)?;
                    }
                }
            }
        }
        a.conn.check_timeouts(now)?;
        // Watch for writability only while replies wait.
        let want_out = a.conn.has_pending_output();
        if want_out != self.out_watch {
            let flags = if want_out {
                epoll::EventFlags::IN | epoll::EventFlags::OUT
            } else {
                epoll::EventFlags::IN
            };
            let _ = epoll::modify(
                &self.epoll,
                a.conn.fd(),
                epoll::EventData::new_u64(TOKEN_CONN),
                flags,
            );
            self.out_watch = want_out;
        }
        Ok(())
    }

    fn emit(out: &Output, events: &mut Vec<PortEvent>) {
        events.extend(out.stop.iter().map(|&i| PortEvent::QueueStop(i)));
        events.extend(out.ready.iter().map(|&i| PortEvent::QueueReady(i)));
    }

    /// Takes a ready vring for the data path.
    pub fn take_queue(&mut self, index: u16) -> Result<Virtqueue, Error> {
        match &mut self.attached {
            Some(a) => a.session.take_queue(index),
            None => Err(Error::NotReady {
                index,
                why: "no frontend",
            }),
        }
    }

    /// Gives a vring back after `QueueStop` (or at any time). After a disconnect it is simply
    /// dropped, which releases its hold on the old guest memory.
    pub fn return_queue(&mut self, q: Virtqueue, events: &mut Vec<PortEvent>) {
        let now = Instant::now();
        let Some(a) = &mut self.attached else { return };
        self.out.clear();
        a.session.return_queue(q, &mut self.out);
        Self::emit(&self.out, events);
        let sent = a.conn.send(&self.out.reply, now);
        let failed = match (sent, self.out.close.take()) {
            (Err(e), _) => Some(e),
            (Ok(()), Some(why)) => Some(Error::Peer(why)),
            (Ok(()), None) => None,
        };
        if let Some(e) = failed {
            tracing::warn!(port = %self.cfg.path.display(), %e, "frontend dropped");
            self.disconnect(now, events);
        }
    }
}

/// Who may connect to a server-mode socket: its group when one is given (0660), else only its
/// owner (0600).
fn set_socket_access(path: &std::path::Path, group: Option<u32>) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    if let Some(gid) = group {
        std::os::unix::fs::chown(path, None, Some(gid))?;
    }
    let mode = if group.is_some() { 0o660 } else { 0o600 };
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
}

/// Connects without ever blocking: a blocking connect to a unix socket whose listener stopped
/// accepting (full backlog) would stall the vhost thread; non-blocking it fails with EAGAIN and
/// is retried with the backoff.
fn connect_nonblocking(path: &std::path::Path) -> std::io::Result<UnixStream> {
    use rustix::net::{AddressFamily, SocketAddrUnix, SocketFlags, SocketType};
    let fd = rustix::net::socket_with(
        AddressFamily::UNIX,
        SocketType::STREAM,
        SocketFlags::NONBLOCK | SocketFlags::CLOEXEC,
        None,
    )?;
    rustix::net::connect(&fd, &SocketAddrUnix::new(path)?)?;
    Ok(UnixStream::from(fd))
}

impl Drop for VhostUserPort {
    fn drop(&mut self) {
        if self.listener.is_some() {
            let _ = std::fs::remove_file(&self.cfg.path);
        }
    }
}
