//! One frontend connection: non-blocking framing of requests (with their SCM_RIGHTS fds) and
//! buffered replies. Bounded both ways so a hostile peer costs a fixed amount of memory, and
//! timed so a peer that stops mid-message or never reads its replies is dropped instead of
//! stalling the vhost thread.

use std::io::{IoSliceMut, Write};
use std::mem::MaybeUninit;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::time::{Duration, Instant};

use rustix::io::Errno;
use rustix::net::{RecvAncillaryBuffer, RecvAncillaryMessage, RecvFlags};

use crate::codec::{decode, Header, Message, HEADER_LEN, MAX_FDS, MAX_PAYLOAD};
use crate::error::{DecodeError, Error};

/// Largest reply backlog kept for a peer that does not read.
pub const MAX_PENDING_REPLIES: usize = 64 * 1024;

/// What one read attempt produced.
#[derive(Debug)]
pub enum Incoming {
    /// A complete, well-formed request.
    Message(Message),
    /// A complete request the decoder refused (its fds are already closed).
    Malformed(Header, DecodeError),
}

/// A connected frontend.
#[derive(Debug)]
pub struct Connection {
    stream: UnixStream,
    hdr: [u8; HEADER_LEN],
    hdr_got: usize,
    header: Option<Header>,
    payload: Vec<u8>,
    payload_got: usize,
    fds: Vec<OwnedFd>,
    partial_since: Option<Instant>,
    out: Vec<u8>,
    out_since: Option<Instant>,
    timeout: Duration,
}

impl Connection {
    /// Wraps a connected stream (made non-blocking here).
    pub fn new(stream: UnixStream, timeout: Duration) -> std::io::Result<Self> {
        stream.set_nonblocking(true)?;
        Ok(Self {
            stream,
            hdr: [0; HEADER_LEN],
            hdr_got: 0,
            header: None,
            payload: vec![0; MAX_PAYLOAD],
            payload_got: 0,
            fds: Vec::new(),
            partial_since: None,
            out: Vec::new(),
            out_since: None,
            timeout,
        })
    }

    /// The socket, for polling.
    pub fn fd(&self) -> BorrowedFd<'_> {
        self.stream.as_fd()
    }

    /// Whether the peer has closed its end (or the connection was reset), even if bytes it sent
    /// before are still unread: a frontend that hung up is gone, whatever it left behind.
    pub fn peer_gone(&self) -> bool {
        use rustix::event::{PollFd, PollFlags};
        let mut fds = [PollFd::new(&self.stream, PollFlags::RDHUP)];
        let zero = rustix::time::Timespec {
            tv_sec: 0,
            tv_nsec: 0,
        };
        match rustix::event::poll(&mut fds, Some(&zero)) {
            Ok(0) => false,
            Ok(_) => fds[0]
                .revents()
                .intersects(PollFlags::RDHUP | PollFlags::HUP | PollFlags::ERR),
            // Cannot tell: keep the connection (a live frontend must never lose its port).
            Err(_) => false,
        }
    }

    /// Replies are waiting for the peer to read.
    pub fn has_pending_output(&self) -> bool {
        !self.out.is_empty()
    }

    /// When this connection times out if nothing changes.
    pub fn deadline(&self) -> Option<Instant> {
        let a = self.partial_since.map(|t| t + self.timeout);
        let b = self.out_since.map(|t| t + self.timeout);
        match (a, b) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Fails if the peer left a message half-sent or replies unread for longer than the timeout.
    pub fn check_timeouts(&self, now: Instant) -> Result<(), Error> {
        if let Some(t) = self.partial_since {
            if now.duration_since(t) >= self.timeout {
                return Err(Error::Peer(format!(
                    "sent half a message and went quiet for {:?}",
                    self.timeout
                )));
            }
        }
        if let Some(t) = self.out_since {
            if now.duration_since(t) >= self.timeout {
                return Err(Error::Peer(format!(
                    "did not read its replies for {:?}",
                    self.timeout
                )));
            }
        }
        Ok(())
    }

    /// One non-blocking receive into `buf`, collecting fds. `Ok(0)` means the peer closed.
    fn recv(&mut self, at_header: bool) -> Result<Option<usize>, Error> {
        let mut space = [MaybeUninit::<u8>::uninit(); rustix::cmsg_space!(ScmRights(MAX_FDS))];
        let mut ctl = RecvAncillaryBuffer::new(&mut space);
        let r = if at_header {
            let mut iov = [IoSliceMut::new(&mut self.hdr[self.hdr_got..])];
            rustix::net::recvmsg(
                &self.stream,
                &mut iov,
                &mut ctl,
                RecvFlags::DONTWAIT | RecvFlags::CMSG_CLOEXEC,
            )
        } else {
            let size = self.header.map_or(0, |h| h.size as usize);
            let mut iov = [IoSliceMut::new(&mut self.payload[self.payload_got..size])];
            rustix::net::recvmsg(
                &self.stream,
                &mut iov,
                &mut ctl,
                RecvFlags::DONTWAIT | RecvFlags::CMSG_CLOEXEC,
            )
        };
        let msg = match r {
            Ok(m) => m,
            Err(Errno::AGAIN) | Err(Errno::INTR) => return Ok(None),
            Err(e) => return Err(Error::Peer(format!("recvmsg failed: {e}"))),
        };
        for m in ctl.drain() {
            if let RecvAncillaryMessage::ScmRights(fds) = m {
                self.fds.extend(fds);
            }
        }
        if msg.flags.contains(rustix::net::ReturnFlags::CTRUNC) || self.fds.len() > MAX_FDS {
            return Err(Error::Peer(format!(
                "sent more than {MAX_FDS} fds with one message"
            )));
        }
        Ok(Some(msg.bytes))
    }

    /// Reads as far as the socket allows. Returns a complete request, or `None` when the socket
    /// has no more bytes for now. An error means the stream is unusable and must be closed.
    pub fn read(&mut self, now: Instant) -> Result<Option<Incoming>, Error> {
        loop {
            if self.header.is_none() {
                let Some(n) = self.recv(true)? else {
                    return Ok(None);
                };
                if n == 0 {
                    return Err(Error::Peer(String::from("closed the connection")));
                }
                self.partial_since.get_or_insert(now);
                self.hdr_got += n;
                if self.hdr_got < HEADER_LEN {
                    continue;
                }
                // A header we cannot trust loses the framing: nothing after it can be parsed.
                let h = Header::parse(&self.hdr)
                    .map_err(|e| Error::Peer(format!("sent a bad header: {e}")))?;
                self.header = Some(h);
                self.payload_got = 0;
            }
            let Some(h) = self.header else { continue };
            if self.payload_got < h.size as usize {
                let Some(n) = self.recv(false)? else {
                    return Ok(None);
                };
                if n == 0 {
                    return Err(Error::Peer(String::from(
                        "closed the connection mid-message",
                    )));
                }
                self.payload_got += n;
                continue;
            }
            self.header = None;
            self.hdr_got = 0;
            self.partial_since = None;
            let fds = std::mem::take(&mut self.fds);
            let payload = &self.payload[..h.size as usize];
            return Ok(Some(match decode(h, payload, fds) {
                Ok(m) => Incoming::Message(m),
                Err(e) => Incoming::Malformed(h, e),
            }));
        }
    }

    /// Queues reply bytes and sends what the socket takes now.
    pub fn send(&mut self, bytes: &[u8], now: Instant) -> Result<(), Error> {
        if self.out.len() + bytes.len() > MAX_PENDING_REPLIES {
            return Err(Error::Peer(format!(
                "left more than {MAX_PENDING_REPLIES} bytes of replies unread"
            )));
        }
        self.out.extend_from_slice(bytes);
        self.flush(now)
    }

    /// Sends buffered replies until the socket would block.
    pub fn flush(&mut self, now: Instant) -> Result<(), Error> {
        while !self.out.is_empty() {
            match self.stream.write(&self.out) {
                Ok(0) => return Err(Error::Peer(String::from("closed the connection"))),
                Ok(n) => {
                    self.out.drain(..n);
                    self.out_since = None;
                }
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                    self.out_since.get_or_insert(now);
                    return Ok(());
                }
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => return Err(Error::Peer(format!("write failed: {e}"))),
            }
        }
        self.out_since = None;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::{self, Request, RequestCode};
    use crate::frontend::Frontend;
    use std::os::fd::AsFd;

    fn pair() -> (Frontend, Connection) {
        let (a, b) = UnixStream::pair().unwrap();
        (
            Frontend::new(a),
            Connection::new(b, Duration::from_millis(200)).unwrap(),
        )
    }

    fn memfd() -> OwnedFd {
        rustix::fs::memfd_create("conn-test", rustix::fs::MemfdFlags::CLOEXEC).unwrap()
    }

    #[test]
    fn reassembles_a_message_sent_in_pieces_with_its_fd() {
        let (mut fe, mut conn) = pair();
        let r = crate::memory::RegionSpec {
            guest_phys_addr: 0,
            memory_size: 4096,
            userspace_addr: 0,
            mmap_offset: 0,
        };
        let bytes = codec::encode_request(
            RequestCode::SetMemTable,
            true,
            &codec::mem_table_payload(&[r]),
        );
        let fd = memfd();
        let now = Instant::now();
        fe.send_raw(&bytes[..5], &[fd.as_fd()]).unwrap();
        assert!(conn.read(now).unwrap().is_none(), "half a header");
        assert!(
            conn.deadline().is_some(),
            "a partial message arms the timeout"
        );
        fe.send_raw(&bytes[5..20], &[]).unwrap();
        assert!(conn.read(now).unwrap().is_none());
        fe.send_raw(&bytes[20..], &[]).unwrap();
        match conn.read(now).unwrap() {
            Some(Incoming::Message(m)) => {
                assert!(m.header.need_reply());
                assert!(
                    matches!(m.request, Request::SetMemTable(ref s, ref f) if s.len() == 1 && f.len() == 1)
                );
            }
            other => panic!("{other:?}"),
        }
        assert!(conn.deadline().is_none());
    }

    #[test]
    fn back_to_back_messages_are_split_correctly() {
        let (mut fe, mut conn) = pair();
        let mut bytes = codec::encode_request(RequestCode::GetFeatures, false, &[]);
        bytes.extend(codec::encode_request(
            RequestCode::SetFeatures,
            false,
            &5u64.to_le_bytes(),
        ));
        fe.send_raw(&bytes, &[]).unwrap();
        let now = Instant::now();
        assert!(matches!(
            conn.read(now).unwrap(),
            Some(Incoming::Message(Message {
                request: Request::GetFeatures,
                ..
            }))
        ));
        assert!(matches!(
            conn.read(now).unwrap(),
            Some(Incoming::Message(Message {
                request: Request::SetFeatures(5),
                ..
            }))
        ));
        assert!(conn.read(now).unwrap().is_none());
    }

    #[test]
    fn too_many_fds_close_the_connection() {
        let (mut fe, mut conn) = pair();
        let fds: Vec<OwnedFd> = (0..8).map(|_| memfd()).collect();
        let borrowed: Vec<BorrowedFd<'_>> = fds.iter().map(AsFd::as_fd).collect();
        let bytes = codec::encode_request(RequestCode::GetFeatures, false, &[]);
        fe.send_raw(&bytes[..4], &borrowed).unwrap();
        fe.send_raw(&bytes[4..], &borrowed[..1]).unwrap();
        let mut result = Ok(None);
        for _ in 0..3 {
            result = conn.read(Instant::now());
            if result.is_err() {
                break;
            }
        }
        assert!(
            matches!(result, Err(Error::Peer(_))),
            "9 fds for one message: {result:?}"
        );
    }

    #[test]
    fn half_message_times_out_and_unread_replies_are_bounded() {
        let (mut fe, mut conn) = pair();
        fe.send_raw(&[1, 0, 0], &[]).unwrap();
        let t0 = Instant::now();
        assert!(conn.read(t0).unwrap().is_none());
        assert!(conn.check_timeouts(t0 + Duration::from_millis(100)).is_ok());
        assert!(conn
            .check_timeouts(t0 + Duration::from_millis(250))
            .is_err());
        // The peer never reads: replies pile up to the bound, then the peer is refused.
        let reply = vec![0u8; 4096];
        let mut outcome = Ok(());
        for _ in 0..1024 {
            outcome = conn.send(&reply, t0);
            if outcome.is_err() {
                break;
            }
        }
        assert!(matches!(outcome, Err(Error::Peer(_))));
        assert!(conn.has_pending_output());
    }

    #[test]
    fn bad_header_and_peer_close_are_errors() {
        let (mut fe, mut conn) = pair();
        let mut bytes = codec::encode_request(RequestCode::GetFeatures, false, &[]);
        bytes[4] = 0x5; // reply flag in a request
        fe.send_raw(&bytes, &[]).unwrap();
        assert!(conn.read(Instant::now()).is_err());
        let (fe, mut conn) = pair();
        drop(fe);
        assert!(conn.read(Instant::now()).is_err());
    }
}
