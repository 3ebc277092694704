//! Drives a session with arbitrary bytes, read as a stream of requests, the way a hostile
//! frontend would: every decoded request goes to the session; requests that carry fds (the
//! memory table, kick/call/err) get real ones, so memory is mapped and rings start; the rings
//! taken from the session are run (dequeue and enqueue bursts) over guest memory whose contents
//! are the input itself; and a pseudo-request truncates the file behind guest memory, as a
//! frontend may at any moment. Nothing may panic or crash the process, and once a fault is
//! recorded every queue on that memory stops with it named.
//!
//! Live migration's messages take part too: `SET_LOG_BASE` gets the guest file as its log fd
//! (so the log's size and offset are checked against a real file, and truncating it faults the
//! log too), `SET_LOG_FD` an fd, and `F_LOG_ALL` in `SET_FEATURES` makes the queues lent
//! afterwards log every write. A log the session refuses must drop the frontend without a reply
//! that looks like success (QEMU reads any reply to `SET_LOG_BASE` as one).
#![no_main]

use std::os::fd::OwnedFd;

use libfuzzer_sys::fuzz_target;
use vhost_user::codec::{decode, Header, HEADER_LEN};
use vhost_user::session::{Output, Session, SessionConfig};
use vhost_user::virtqueue::Broken;
use vhost_user::{DecodeError, Virtqueue, VecBuffer};

/// Size of the guest's memory file.
const MEM: u64 = 1 << 20;
/// Not a vhost-user request: "the frontend truncates its memory file to the u64 in the payload".
const TRUNCATE: u32 = 0x7ff0;

struct GuestFile(OwnedFd);

impl GuestFile {
    /// A memfd of `MEM` bytes that starts with the input, so rings placed in it read fuzzed data.
    fn new(data: &[u8]) -> Option<GuestFile> {
        let fd = rustix::fs::memfd_create("fuzz-guest", rustix::fs::MemfdFlags::CLOEXEC).ok()?;
        rustix::fs::ftruncate(&fd, MEM).ok()?;
        let n = data.len().min(MEM as usize);
        rustix::io::pwrite(&fd, &data[..n], 0).ok()?;
        Some(GuestFile(fd))
    }

    fn fds(&self, n: usize) -> Vec<OwnedFd> {
        (0..n).filter_map(|_| self.0.try_clone().ok()).collect()
    }
}

/// Runs one burst each way on every lent queue.
fn run_queues(lent: &mut [Virtqueue], bufs: &mut [VecBuffer], frames: &[VecBuffer]) {
    for q in lent.iter_mut() {
        if q.index() % 2 == 1 {
            let _ = q.dequeue_burst(bufs);
        } else {
            let _ = q.enqueue_burst(frames);
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let Some(file) = GuestFile::new(data) else {
        return;
    };
    let mut session = Session::new(SessionConfig {
        max_queue_pairs: 2,
        ..SessionConfig::default()
    });
    let mut out = Output::default();
    let mut lent: Vec<Virtqueue> = Vec::new();
    let mut bufs: Vec<VecBuffer> = (0..8).map(|_| VecBuffer::with_capacity(2048)).collect();
    let frames: Vec<VecBuffer> = [60usize, 1514, 3000]
        .iter()
        .map(|&n| VecBuffer::from_frame(&vec![0xab; n]))
        .collect();
    let mut rest = data;
    while rest.len() >= HEADER_LEN {
        let mut h = [0u8; HEADER_LEN];
        h.copy_from_slice(&rest[..HEADER_LEN]);
        rest = &rest[HEADER_LEN..];
        let Ok(header) = Header::parse(&h) else {
            return;
        };
        let size = (header.size as usize).min(rest.len());
        let (payload, tail) = rest.split_at(size);
        rest = tail;

        if header.request == TRUNCATE {
            let len = payload
                .get(..8)
                .and_then(|b| b.try_into().ok())
                .map_or(0, u64::from_le_bytes)
                % (MEM + 1);
            // Queues the guest already broke keep their first reason.
            let running: Vec<u16> = lent
                .iter()
                .filter(|q| q.broken().is_none())
                .map(Virtqueue::index)
                .collect();
            let _ = rustix::fs::ftruncate(&file.0, len);
            // Twice: a queue that ran before another one met the fault meets it next time.
            run_queues(&mut lent, &mut bufs, &frames);
            run_queues(&mut lent, &mut bufs, &frames);
            for q in &lent {
                if q.memory_faulted() && running.contains(&q.index()) {
                    assert!(
                        matches!(q.broken(), Some(Broken::MemoryFault { .. })),
                        "queue {} ran on faulted memory and is {:?}",
                        q.index(),
                        q.broken()
                    );
                }
            }
            continue;
        }

        // Requests that carry fds get as many as they ask for.
        let msg = match decode(header, payload, Vec::new()) {
            Err(DecodeError::FdCount { expected, .. }) if expected <= 8 => {
                decode(header, payload, file.fds(expected))
            }
            other => other,
        };
        let Ok(msg) = msg else { continue };
        out.clear();
        if session.is_blocked() {
            continue;
        }
        let log_base = msg.request.code() == Some(vhost_user::codec::RequestCode::SetLogBase);
        session.handle(msg, &mut out);
        if log_base && !session.is_blocked() {
            assert!(
                out.close.is_some() != (out.reply.len() == HEADER_LEN),
                "SET_LOG_BASE must be answered with one empty reply or drop the frontend: close {:?}, {} reply bytes",
                out.close,
                out.reply.len()
            );
        }
        // Hand back what the session asks for (it holds the message until then) and take what
        // is ready, until it settles.
        for _ in 0..8 {
            let (stop, ready) = (std::mem::take(&mut out.stop), std::mem::take(&mut out.ready));
            if stop.is_empty() && ready.is_empty() {
                break;
            }
            for i in stop {
                if let Some(k) = lent.iter().position(|q| q.index() == i) {
                    session.return_queue(lent.swap_remove(k), &mut out);
                }
            }
            if out.close.is_some() {
                break;
            }
            for i in ready {
                if let Ok(q) = session.take_queue(i) {
                    lent.push(q);
                }
            }
        }
        if out.close.is_some() {
            // The driver drops the frontend: its queues and session go.
            return;
        }
        run_queues(&mut lent, &mut bufs, &frames);
    }
});
