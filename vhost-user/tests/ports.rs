//! Ports over real unix sockets, driven by the in-repo test frontend: traffic, server and client
//! modes, reconnects, teardown on peer loss, and hostile peers that must not stall other ports.

use std::io::{Read, Write};
use std::os::fd::AsFd;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::thread;
use std::time::{Duration, Instant};

use vhost_user::codec::{self, RequestCode};
use vhost_user::frontend::{DriverQueue, Frontend, GuestRam};
use vhost_user::session::OFFERED_FEATURES;
use vhost_user::virtqueue::feature;
use vhost_user::{Mode, PortConfig, PortEvent, VecBuffer, VhostUserPort, Virtqueue};

struct TempDir(PathBuf);
impl TempDir {
    fn new(tag: &str) -> Self {
        let p = std::env::temp_dir().join(format!("vhost-ports-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).expect("temp dir");
        Self(p)
    }
    fn sock(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }
}
impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn port(path: &Path, mode: Mode) -> VhostUserPort {
    let mut cfg = PortConfig::new(path, mode);
    cfg.io_timeout = Duration::from_millis(300);
    cfg.reconnect_min = Duration::from_millis(10);
    cfg.reconnect_max = Duration::from_millis(100);
    VhostUserPort::new(cfg).expect("port")
}

/// Drives ports (as one vhost thread would), taking ready queues, until `done` or timeout.
fn drive(
    ports: &mut [&mut VhostUserPort],
    queues: &mut Vec<Virtqueue>,
    events: &mut Vec<PortEvent>,
    timeout: Duration,
    mut done: impl FnMut(&[PortEvent], &[Virtqueue]) -> bool,
) -> bool {
    let end = Instant::now() + timeout;
    while Instant::now() < end {
        for p in ports.iter_mut() {
            p.wait(Duration::from_millis(2));
            let mut ev = Vec::new();
            p.process(Instant::now(), &mut ev);
            // Returning a queue can produce more events (replies released, rings ready again).
            let mut k = 0;
            while k < ev.len() {
                match ev[k] {
                    PortEvent::QueueReady(i) => match p.take_queue(i) {
                        Ok(q) => queues.push(q),
                        Err(e) => panic!("ready queue {i} could not be taken: {e}"),
                    },
                    PortEvent::QueueStop(i) => {
                        if let Some(j) = queues.iter().position(|q| q.index() == i) {
                            let q = queues.remove(j);
                            let mut more = Vec::new();
                            p.return_queue(q, &mut more);
                            ev.extend(more);
                        }
                    }
                    PortEvent::Disconnected => queues.clear(),
                    PortEvent::Connected => {}
                }
                k += 1;
            }
            events.extend(ev);
        }
        if done(events, queues) {
            return true;
        }
    }
    false
}

struct Guest {
    fe: Frontend,
    ram: GuestRam,
    rx: DriverQueue,
    tx: DriverQueue,
}

/// Everything offered, split rings (the test driver lays out split rings).
const SPLIT: u64 = OFFERED_FEATURES & !feature::RING_PACKED;

fn setup_guest(fe: Frontend) -> Guest {
    let mut fe = fe;
    let mut ram = GuestRam::new(4 << 20).expect("ram");
    let rx = DriverQueue::new(&mut ram, 256, 2048);
    let tx = DriverQueue::new(&mut ram, 256, 2048);
    fe.negotiate(&ram, SPLIT).expect("negotiate");
    fe.start_vring(&ram, 0, &rx).expect("start rx");
    fe.start_vring(&ram, 1, &tx).expect("start tx");
    Guest { fe, ram, rx, tx }
}

fn maps_of(name: &str) -> usize {
    std::fs::read_to_string("/proc/self/maps")
        .unwrap_or_default()
        .lines()
        .filter(|l| l.contains(name))
        .count()
}

#[test]
fn server_port_carries_traffic_both_ways_and_tears_down_on_peer_loss() {
    let dir = TempDir::new("traffic");
    let path = dir.sock("a.sock");
    let mut p = port(&path, Mode::Server);
    let maps_before = maps_of("vhost-test-guest");
    let fe = Frontend::connect(&path).expect("connect");
    let guest = thread::spawn(move || setup_guest(fe));
    let (mut queues, mut events) = (Vec::new(), Vec::new());
    assert!(drive(
        &mut [&mut p],
        &mut queues,
        &mut events,
        Duration::from_secs(5),
        |_, q| q.len() == 2
    ));
    let mut g = guest.join().expect("guest thread");
    assert_eq!(
        maps_of("vhost-test-guest"),
        maps_before + 2,
        "guest RAM mapped by frontend and backend"
    );
    queues.sort_by_key(Virtqueue::index);
    let (rxq, txq) = queues.split_at_mut(1);
    let (rxq, txq) = (&mut rxq[0], &mut txq[0]);

    // Backend → guest.
    for _ in 0..8 {
        assert!(g.rx.add_rx(&g.ram, 1, 2048));
    }
    let frames: Vec<VecBuffer> = (0..8u8)
        .map(|i| VecBuffer::from_frame(&vec![i; 60 + usize::from(i) * 100]))
        .collect();
    assert_eq!(rxq.enqueue_burst(&frames), 8);
    let got = g.rx.receive(&g.ram, 12, true);
    assert_eq!(
        got,
        frames.iter().map(|f| f.data().to_vec()).collect::<Vec<_>>()
    );
    // Guest → backend.
    for f in &frames {
        assert!(g.tx.add_tx(&mut g.ram, 12, f.data(), 512, false));
    }
    let mut bufs: Vec<VecBuffer> = (0..16).map(|_| VecBuffer::with_capacity(2048)).collect();
    assert_eq!(txq.dequeue_burst(&mut bufs), 8);
    for (b, f) in bufs.iter().zip(&frames) {
        assert_eq!(b.data(), f.data());
    }

    // Peer loss: the port notices, the session lets go; the mapping lives while a queue is held.
    drop(g.fe);
    let held = queues.pop();
    let mut q2 = Vec::new();
    assert!(drive(
        &mut [&mut p],
        &mut q2,
        &mut events,
        Duration::from_secs(5),
        |e, _| e.contains(&PortEvent::Disconnected)
    ));
    queues.clear();
    assert_eq!(
        maps_of("vhost-test-guest"),
        maps_before + 2,
        "a queue still in use keeps the memory mapped"
    );
    drop(held);
    assert_eq!(
        maps_of("vhost-test-guest"),
        maps_before + 1,
        "unmapped when the data path let go"
    );
    drop(g.ram);

    // Accepts the next frontend.
    events.clear();
    let fe = Frontend::connect(&path).expect("reconnect");
    let guest = thread::spawn(move || setup_guest(fe));
    assert!(drive(
        &mut [&mut p],
        &mut q2,
        &mut events,
        Duration::from_secs(5),
        |_, q| q.len() == 2
    ));
    drop(guest.join());
}

#[test]
fn second_frontend_is_refused_while_the_first_keeps_working() {
    let dir = TempDir::new("second");
    let path = dir.sock("a.sock");
    let mut p = port(&path, Mode::Server);
    let mut first = Frontend::connect(&path).expect("connect");
    let (mut queues, mut events) = (Vec::new(), Vec::new());
    assert!(drive(
        &mut [&mut p],
        &mut queues,
        &mut events,
        Duration::from_secs(2),
        |e, _| e.contains(&PortEvent::Connected)
    ));
    let mut second = UnixStream::connect(&path).expect("second connect");
    second
        .set_read_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
    drive(
        &mut [&mut p],
        &mut queues,
        &mut events,
        Duration::from_millis(100),
        |_, _| false,
    );
    let mut b = [0u8; 1];
    assert_eq!(
        second.read(&mut b).expect("read"),
        0,
        "second frontend closed by the backend"
    );
    let t = thread::spawn(move || {
        first
            .get_u64(RequestCode::GetFeatures)
            .expect("first still served")
    });
    drive(
        &mut [&mut p],
        &mut queues,
        &mut events,
        Duration::from_millis(200),
        |_, _| false,
    );
    assert_eq!(t.join().expect("thread"), OFFERED_FEATURES);
    assert_eq!(
        events
            .iter()
            .filter(|e| **e == PortEvent::Connected)
            .count(),
        1
    );
}

/// A good frontend on another port is served while `hostile` misbehaves on `bad`.
fn good_port_unaffected(
    good: &mut VhostUserPort,
    bad: &mut VhostUserPort,
    good_path: &Path,
) -> Vec<PortEvent> {
    let mut fe = Frontend::connect(good_path).expect("connect good");
    let t = thread::spawn(move || {
        let v = fe.get_u64(RequestCode::GetFeatures).expect("good served");
        (v, fe)
    });
    let (mut queues, mut events) = (Vec::new(), Vec::new());
    // Nothing but its I/O timeout drops a peer that keeps its connection open.
    assert!(
        drive(
            &mut [bad, good],
            &mut queues,
            &mut events,
            Duration::from_secs(5),
            |e, _| e.contains(&PortEvent::Disconnected)
        ),
        "hostile peer dropped for its I/O timeout"
    );
    let (v, _fe) = t.join().expect("thread");
    assert_eq!(v, OFFERED_FEATURES);
    events
}

#[test]
fn peer_that_sends_half_a_message_is_dropped_after_the_timeout_without_stalling_others() {
    let dir = TempDir::new("half");
    let (bad_path, good_path) = (dir.sock("bad.sock"), dir.sock("good.sock"));
    let (mut bad, mut good) = (
        port(&bad_path, Mode::Server),
        port(&good_path, Mode::Server),
    );
    let mut hostile = UnixStream::connect(&bad_path).expect("connect");
    hostile
        .write_all(&codec::encode_request(RequestCode::SetFeatures, false, &[0; 8])[..7])
        .expect("half");
    let events = good_port_unaffected(&mut good, &mut bad, &good_path);
    assert!(events.contains(&PortEvent::Disconnected));
    hostile
        .set_read_timeout(Some(Duration::from_secs(2)))
        .expect("timeout");
    assert_eq!(
        hostile.read(&mut [0u8; 8]).expect("read"),
        0,
        "hostile peer was closed"
    );
}

#[test]
fn peer_that_floods_without_reading_replies_is_dropped_without_stalling_others() {
    let dir = TempDir::new("flood");
    let (bad_path, good_path) = (dir.sock("bad.sock"), dir.sock("good.sock"));
    let (mut bad, mut good) = (
        port(&bad_path, Mode::Server),
        port(&good_path, Mode::Server),
    );
    let hostile = UnixStream::connect(&bad_path).expect("connect");
    hostile.set_nonblocking(true).expect("nonblocking");
    let flooder = thread::spawn(move || {
        let req = codec::encode_request(RequestCode::GetFeatures, false, &[]);
        let mut h = &hostile;
        let end = Instant::now() + Duration::from_secs(3);
        let mut sent = 0usize;
        while Instant::now() < end {
            match h.write(&req) {
                Ok(n) => sent += n,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                    thread::sleep(Duration::from_millis(1))
                }
                Err(_) => break, // closed by the backend
            }
        }
        sent
    });
    let events = good_port_unaffected(&mut good, &mut bad, &good_path);
    assert!(events.contains(&PortEvent::Disconnected));
    assert!(flooder.join().expect("flooder") > 0);
}

#[test]
fn bad_header_drops_the_peer_but_malformed_payloads_are_refused_and_fds_closed() {
    let dir = TempDir::new("malformed");
    let path = dir.sock("a.sock");
    let mut p = port(&path, Mode::Server);
    let (mut queues, mut events) = (Vec::new(), Vec::new());

    // A well-framed but malformed request: refused with REPLY_ACK 1, its fd closed, session kept.
    let mut fe = Frontend::connect(&path).expect("connect");
    let t = thread::spawn(move || {
        let pf = fe
            .get_u64(RequestCode::GetProtocolFeatures)
            .expect("get pf");
        fe.send(
            RequestCode::SetProtocolFeatures,
            false,
            &pf.to_le_bytes(),
            &[],
        )
        .expect("set pf");
        let extra = rustix::fs::memfd_create("extra-fd-probe", rustix::fs::MemfdFlags::CLOEXEC)
            .expect("memfd");
        // GET_FEATURES with an fd, SET_FEATURES with a 3-byte payload, a kick without its fd.
        let a = fe
            .acked(RequestCode::SetFeatures, &[1, 2, 3], &[])
            .expect("ack");
        fe.send(RequestCode::GetFeatures, true, &[], &[extra.as_fd()])
            .expect("send");
        let b = fe.recv_reply().expect("reply");
        let c = fe
            .acked(RequestCode::SetVringKick, &0u64.to_le_bytes(), &[])
            .expect("ack");
        let d = fe.get_u64(RequestCode::GetQueueNum).expect("still served");
        (a, b, c, d, fe)
    });
    // Count only the probe fd's copies: other tests in this process open fds concurrently.
    let eventfds = || {
        std::fs::read_dir("/proc/self/fd")
            .map(|d| {
                d.flatten()
                    .filter(|e| {
                        std::fs::read_link(e.path())
                            .is_ok_and(|l| l.to_string_lossy().contains("extra-fd-probe"))
                    })
                    .count()
            })
            .unwrap_or(0)
    };
    let fds_before = eventfds();
    drive(
        &mut [&mut p],
        &mut queues,
        &mut events,
        Duration::from_millis(500),
        |_, _| false,
    );
    let (a, b, c, d, _fe) = t.join().expect("thread");
    assert_eq!(a, 1);
    assert_eq!(
        (b.0, b.1),
        (
            u32::from(RequestCode::GetFeatures),
            1u64.to_le_bytes().to_vec()
        ),
        "extra fd: refused"
    );
    assert_eq!(c, 1);
    assert_eq!(d, 4);
    assert!(!events.contains(&PortEvent::Disconnected));
    let fds_after = eventfds();
    assert!(
        fds_after == fds_before,
        "refused fds were closed ({fds_before} -> {fds_after})"
    );

    // A header with the wrong version loses framing: the peer is dropped.
    p.detach(&mut events);
    events.clear();
    let mut bad = UnixStream::connect(&path).expect("connect");
    let mut h = codec::encode_request(RequestCode::GetFeatures, false, &[]);
    h[4] = 2;
    bad.write_all(&h).expect("write");
    assert!(drive(
        &mut [&mut p],
        &mut queues,
        &mut events,
        Duration::from_secs(2),
        |e, _| e.contains(&PortEvent::Disconnected)
    ));
}

#[test]
fn client_port_retries_until_the_socket_appears_and_reconnects_after_the_peer_restarts() {
    let dir = TempDir::new("client");
    let path = dir.sock("pod.sock");
    let mut p = port(&path, Mode::Client);
    let (mut queues, mut events) = (Vec::new(), Vec::new());
    assert!(!drive(
        &mut [&mut p],
        &mut queues,
        &mut events,
        Duration::from_millis(150),
        |e, _| e.contains(&PortEvent::Connected)
    ));
    for round in 0..3 {
        let listener = UnixListener::bind(&path).expect("bind");
        events.clear();
        assert!(
            drive(
                &mut [&mut p],
                &mut queues,
                &mut events,
                Duration::from_secs(3),
                |e, _| e.contains(&PortEvent::Connected)
            ),
            "round {round}: connected"
        );
        let (s, _) = listener.accept().expect("accept");
        let fe = Frontend::new(s);
        let guest = thread::spawn(move || setup_guest(fe));
        assert!(
            drive(
                &mut [&mut p],
                &mut queues,
                &mut events,
                Duration::from_secs(3),
                |_, q| q.len() == 2
            ),
            "round {round}: rings"
        );
        // The pod goes away (its socket too) and comes back.
        drop(guest.join().expect("guest"));
        drop(listener);
        std::fs::remove_file(&path).expect("rm");
        assert!(drive(
            &mut [&mut p],
            &mut queues,
            &mut events,
            Duration::from_secs(3),
            |e, _| e.contains(&PortEvent::Disconnected)
        ));
        assert!(queues.is_empty());
    }
}

#[test]
fn server_port_refuses_to_replace_a_non_socket_file_and_removes_its_socket_on_drop() {
    let dir = TempDir::new("files");
    let path = dir.sock("plain");
    std::fs::write(&path, b"not a socket").expect("write");
    assert!(VhostUserPort::new(PortConfig::new(&path, Mode::Server)).is_err());
    assert_eq!(std::fs::read(&path).expect("still there"), b"not a socket");
    let sock = dir.sock("s.sock");
    let p = VhostUserPort::new(PortConfig::new(&sock, Mode::Server)).expect("port");
    assert!(sock.exists());
    drop(p);
    assert!(!sock.exists());
}

#[test]
fn client_port_never_blocks_on_a_pod_socket_that_stops_accepting() {
    use rustix::net::{AddressFamily, SocketAddrUnix, SocketFlags, SocketType};
    let dir = TempDir::new("backlog");
    let path = dir.sock("stuck.sock");
    // A listener with a backlog of one that never accepts, and one connection filling it.
    let l = rustix::net::socket_with(
        AddressFamily::UNIX,
        SocketType::STREAM,
        SocketFlags::CLOEXEC,
        None,
    )
    .expect("socket");
    rustix::net::bind(&l, &SocketAddrUnix::new(&path).expect("addr")).expect("bind");
    rustix::net::listen(&l, 0).expect("listen");
    let mut fillers = Vec::new();
    for _ in 0..4 {
        let s = rustix::net::socket_with(
            AddressFamily::UNIX,
            SocketType::STREAM,
            SocketFlags::NONBLOCK | SocketFlags::CLOEXEC,
            None,
        )
        .expect("socket");
        if rustix::net::connect(&s, &SocketAddrUnix::new(&path).expect("addr")).is_err() {
            break;
        }
        fillers.push(s);
    }
    assert!(fillers.len() < 4, "the backlog filled up");
    let (tx, rx) = std::sync::mpsc::channel();
    let p2 = path.clone();
    let t = thread::spawn(move || {
        let mut p = port(&p2, Mode::Client);
        let mut ev = Vec::new();
        for _ in 0..5 {
            p.process(Instant::now(), &mut ev);
            thread::sleep(Duration::from_millis(20));
        }
        let _ = tx.send(ev);
    });
    let ev = rx
        .recv_timeout(Duration::from_secs(5))
        .expect("the port's process() returned without blocking");
    assert!(
        !ev.contains(&PortEvent::Connected),
        "a full backlog is a failed attempt, retried later"
    );
    t.join().expect("thread");
    drop(fillers);
}

#[test]
fn interrupt_driven_guest_gets_call_eventfd_kicks_through_the_session() {
    let dir = TempDir::new("kicks");
    let path = dir.sock("a.sock");
    let mut p = port(&path, Mode::Server);
    let mut fe = Frontend::connect(&path).expect("connect");
    let call = rustix::event::eventfd(
        0,
        rustix::event::EventfdFlags::NONBLOCK | rustix::event::EventfdFlags::CLOEXEC,
    )
    .expect("eventfd");
    let kick = rustix::event::eventfd(0, rustix::event::EventfdFlags::CLOEXEC).expect("eventfd");
    let (call2, kick2) = (
        call.try_clone().expect("dup"),
        kick.try_clone().expect("dup"),
    );
    let guest = thread::spawn(move || {
        let mut ram = GuestRam::new(4 << 20).expect("ram");
        let rx = DriverQueue::new(&mut ram, 64, 2048);
        fe.negotiate(&ram, SPLIT).expect("negotiate");
        // Like a kernel guest: a call fd to be interrupted, a kick fd to notify.
        assert_eq!(
            fe.acked(
                RequestCode::SetVringCall,
                &0u64.to_le_bytes(),
                &[call2.as_fd()]
            )
            .expect("call"),
            0
        );
        fe.start_vring(&ram, 0, &rx).expect("start");
        assert_eq!(
            fe.acked(
                RequestCode::SetVringKick,
                &0u64.to_le_bytes(),
                &[kick2.as_fd()]
            )
            .expect("kick"),
            0
        );
        (fe, ram, rx)
    });
    let (mut queues, mut events) = (Vec::new(), Vec::new());
    // Serve the guest until its setup is done; a kick fd arriving while the ring is lent goes
    // through the hand-back handshake and the ring comes back ready.
    assert!(drive(
        &mut [&mut p],
        &mut queues,
        &mut events,
        Duration::from_secs(5),
        |_, q| { guest.is_finished() && !q.is_empty() }
    ));
    let (_fe, ram, mut rx) = guest.join().expect("guest");
    let q = &mut queues[0];
    assert_eq!(
        rx.used_flags(&ram),
        vhost_user::virtqueue::USED_F_NO_NOTIFY,
        "the backend polls: no kicks wanted"
    );
    assert!(rx.add_rx(&ram, 1, 2048));
    assert_eq!(q.enqueue_burst(&[VecBuffer::from_frame(&[5u8; 100])]), 1);
    let mut b = [0u8; 8];
    assert_eq!(
        rustix::io::read(&call, &mut b).expect("the guest was interrupted"),
        8
    );
    assert_eq!(u64::from_ne_bytes(b), 1);
    assert_eq!(rx.receive(&ram, 12, true), vec![vec![5u8; 100]]);
}

/// The queue of index `i` among `queues`.
fn queue(queues: &mut [Virtqueue], i: u16) -> &mut Virtqueue {
    queues
        .iter_mut()
        .find(|q| q.index() == i)
        .expect("queue lent")
}

/// Guest `g` sends `n` frames and the backend's TX queue dequeues them all.
fn guest_sends(g: &mut Guest, txq: &mut Virtqueue, n: usize) -> usize {
    let frame = vec![0x5a; 64];
    for _ in 0..n {
        assert!(g.tx.add_tx(&mut g.ram, 12, &frame, 512, false));
    }
    let mut bufs: Vec<VecBuffer> = (0..n).map(|_| VecBuffer::with_capacity(2048)).collect();
    let got = txq.dequeue_burst(&mut bufs);
    g.tx.reap(&g.ram);
    got
}

/// Two guests on two ports; guest A truncates the file behind its memory while both send. A's
/// queue stops with the fault named, A's frontend is dropped and the port says why; B keeps
/// going; a new frontend with new memory on A's socket works again.
fn truncated_guest_memory_breaks_only_its_own_port(huge: bool) {
    if huge {
        testkit::hugepages::ensure(64);
    }
    let ram = |size| {
        if huge {
            GuestRam::new_huge(size).expect("hugetlbfs guest RAM")
        } else {
            GuestRam::new(size).expect("guest RAM")
        }
    };
    let dir = TempDir::new(if huge { "fault-huge" } else { "fault-memfd" });
    let (path_a, path_b) = (dir.sock("a.sock"), dir.sock("b.sock"));
    let (mut pa, mut pb) = (port(&path_a, Mode::Server), port(&path_b, Mode::Server));
    let setup = |path: &Path, ram: GuestRam| {
        let fe = Frontend::connect(path).expect("connect");
        thread::spawn(move || {
            let mut fe = fe;
            let mut ram = ram;
            let rx = DriverQueue::new(&mut ram, 256, 2048);
            let tx = DriverQueue::new(&mut ram, 256, 2048);
            fe.negotiate(&ram, SPLIT).expect("negotiate");
            fe.start_vring(&ram, 0, &rx).expect("start rx");
            fe.start_vring(&ram, 1, &tx).expect("start tx");
            Guest { fe, ram, rx, tx }
        })
    };
    let ga = setup(&path_a, ram(4 << 20));
    let gb = setup(&path_b, ram(4 << 20));
    let (mut qa, mut qb, mut events) = (Vec::new(), Vec::new(), Vec::new());
    assert!(drive(
        &mut [&mut pa],
        &mut qa,
        &mut events,
        Duration::from_secs(5),
        |_, q| q.len() == 2
    ));
    assert!(drive(
        &mut [&mut pb],
        &mut qb,
        &mut events,
        Duration::from_secs(5),
        |_, q| q.len() == 2
    ));
    let (mut ga, mut gb) = (ga.join().expect("guest a"), gb.join().expect("guest b"));
    assert_eq!(guest_sends(&mut ga, queue(&mut qa, 1), 8), 8);
    assert_eq!(guest_sends(&mut gb, queue(&mut qb, 1), 8), 8);

    rustix::fs::ftruncate(ga.ram.fd(), 0).expect("truncate guest A's memory");

    // The backend's next burst on A touches the vanished pages: it completes, and stops.
    let mut bufs: Vec<VecBuffer> = (0..8).map(|_| VecBuffer::with_capacity(2048)).collect();
    let _ = queue(&mut qa, 1).dequeue_burst(&mut bufs);
    assert_eq!(queue(&mut qa, 1).dequeue_burst(&mut bufs), 0);
    let broken = queue(&mut qa, 1).broken();
    assert!(
        matches!(
            broken,
            Some(vhost_user::virtqueue::Broken::MemoryFault { .. })
        ),
        "A's queue names the fault: {broken:?}"
    );
    let frames = [VecBuffer::from_frame(&[1u8; 60])];
    assert_eq!(
        queue(&mut qa, 0).enqueue_burst(&frames),
        0,
        "A's RX queue stops too"
    );
    // The port drops A's frontend and says why.
    events.clear();
    assert!(drive(
        &mut [&mut pa],
        &mut qa,
        &mut events,
        Duration::from_secs(5),
        |e, _| e.contains(&PortEvent::Disconnected)
    ));
    let why = pa.fault().expect("the port records why").to_owned();
    assert!(why.contains("memory fault"), "{why}");
    let mut b = [0u8; 1];
    ga.fe
        .stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
    assert_eq!(
        ga.fe.stream.read(&mut b).expect("read"),
        0,
        "A's frontend was cut off"
    );

    // B never noticed.
    assert_eq!(guest_sends(&mut gb, queue(&mut qb, 1), 8), 8);
    assert!(queue(&mut qb, 1).broken().is_none());

    // A fresh frontend with fresh memory on A's socket works, and the fault is forgotten.
    drop(ga);
    let ga = setup(&path_a, ram(4 << 20));
    qa.clear();
    assert!(drive(
        &mut [&mut pa],
        &mut qa,
        &mut events,
        Duration::from_secs(5),
        |_, q| q.len() == 2
    ));
    let mut ga = ga.join().expect("guest a again");
    assert_eq!(guest_sends(&mut ga, queue(&mut qa, 1), 8), 8);
    assert_eq!(pa.fault(), None);
}

#[test]
fn a_guest_truncating_its_memfd_breaks_only_its_own_port() {
    truncated_guest_memory_breaks_only_its_own_port(false);
}

#[test]
fn a_guest_truncating_its_hugetlbfs_memory_breaks_only_its_own_port() {
    truncated_guest_memory_breaks_only_its_own_port(true);
}

/// A frontend that hangs up and reconnects at once: the new connection arrives before the port
/// has handled the old one's hang-up, and is accepted (a live second frontend is still refused:
/// `second_frontend_is_refused_while_the_first_keeps_working`).
#[test]
fn a_frontend_reconnecting_before_its_hangup_is_handled_is_accepted() {
    let dir = TempDir::new("fast-reconnect");
    let path = dir.sock("a.sock");
    let mut p = port(&path, Mode::Server);
    let (mut queues, mut events) = (Vec::new(), Vec::new());
    // Ways to go: a plain close, a close with requests left unread, and a close after a full
    // set-up with rings lent to the data path.
    for round in 0..3 {
        let fe = Frontend::connect(&path).expect("connect");
        let old = thread::spawn(move || match round {
            0 => fe,
            1 => {
                let mut fe = fe;
                fe.send(RequestCode::GetFeatures, false, &[], &[])
                    .expect("send");
                fe.send(RequestCode::SetOwner, false, &[], &[])
                    .expect("send");
                fe
            }
            _ => setup_guest(fe).fe,
        });
        events.clear();
        assert!(drive(
            &mut [&mut p],
            &mut queues,
            &mut events,
            Duration::from_secs(5),
            |e, q| { e.contains(&PortEvent::Connected) && (round < 2 || q.len() == 2) }
        ));
        let old = old.join().expect("old frontend");
        // Hang up and reconnect before the port runs again.
        drop(old);
        let mut new = Frontend::connect(&path).expect("reconnect");
        new.stream
            .set_read_timeout(Some(Duration::from_secs(5)))
            .expect("timeout");
        events.clear();
        let t = thread::spawn(move || (new.get_u64(RequestCode::GetFeatures), new));
        drive(
            &mut [&mut p],
            &mut queues,
            &mut events,
            Duration::from_millis(300),
            |_, _| false,
        );
        let (served, new) = t.join().expect("thread");
        assert_eq!(
            served.ok(),
            Some(OFFERED_FEATURES),
            "round {round}: the reconnecting frontend is served"
        );
        let order: Vec<_> = events
            .iter()
            .filter(|e| matches!(e, PortEvent::Connected | PortEvent::Disconnected))
            .collect();
        assert_eq!(
            order,
            [&PortEvent::Disconnected, &PortEvent::Connected],
            "round {round}: the old frontend is let go before the new one attaches"
        );
        assert!(
            queues.is_empty(),
            "round {round}: the old rings went with it"
        );
        // Close this one too before the next round (a plain hang-up, handled normally).
        drop(new);
        drive(
            &mut [&mut p],
            &mut queues,
            &mut events,
            Duration::from_millis(20),
            |_, _| false,
        );
    }
}

/// A memfd of `len` bytes, as QEMU shares its dirty log.
fn log_memfd(len: u64) -> std::os::fd::OwnedFd {
    let fd = rustix::fs::memfd_create("dirty-log", rustix::fs::MemfdFlags::CLOEXEC).expect("memfd");
    rustix::fs::ftruncate(&fd, len).expect("ftruncate");
    fd
}

#[test]
fn set_log_base_is_answered_once_and_an_unusable_log_drops_the_frontend() {
    let dir = TempDir::new("logbase");
    let path = dir.sock("a.sock");
    let mut p = port(&path, Mode::Server);
    let (mut queues, mut events) = (Vec::new(), Vec::new());
    let log_bytes = (vhost_user::frontend::GPA_BASE + (4 << 20)) / 4096 / 8;

    // A good log, sent the way QEMU sends it while the rings run: one empty reply, traffic goes
    // on and lands in the log once LOG_ALL is on.
    let fe = Frontend::connect(&path).expect("connect");
    let t = thread::spawn(move || {
        let mut g = setup_guest(fe);
        let log = log_memfd(log_bytes);
        let area = codec::LogArea {
            size: log_bytes,
            offset: 0,
        };
        g.fe.send(
            RequestCode::SetLogBase,
            false,
            &codec::log_base_payload(&area),
            &[log.as_fd()],
        )
        .expect("send");
        let reply = g.fe.recv_reply().expect("SET_LOG_BASE reply");
        g.fe.send(RequestCode::SetFeatures, false, &SPLIT.to_le_bytes(), &[])
            .expect("LOG_ALL on");
        let queue_num =
            g.fe.get_u64(RequestCode::GetQueueNum)
                .expect("still served");
        (reply, queue_num, g, log)
    });
    // Served until the frontend is done (a fixed time is too short on a loaded machine, and
    // joining a frontend still waiting for replies would hang).
    assert!(drive(
        &mut [&mut p],
        &mut queues,
        &mut events,
        Duration::from_secs(30),
        |_, q| t.is_finished() && q.len() == 2,
    ));
    let (reply, queue_num, mut g, log) = t.join().expect("thread");
    assert_eq!(reply, (u32::from(RequestCode::SetLogBase), vec![]));
    assert_eq!(queue_num, 4);
    assert!(!events.contains(&PortEvent::Disconnected));
    let logged = p
        .session()
        .and_then(|s| s.dirty_log().cloned())
        .expect("log mapped");
    assert!(p.session().is_some_and(|s| s.logging()));
    assert!(g.rx.add_rx(&g.ram, 1, 2048));
    let rxq = queue(&mut queues, 0);
    assert_eq!(rxq.enqueue_burst(&[VecBuffer::from_frame(&[9u8; 200])]), 1);
    assert!(logged.is_dirty(g.rx.used / 4096), "used ring logged");
    let mut b = [0u8; 1];
    rustix::io::pread(&log, &mut b, g.rx.used / 4096 / 8).expect("pread");
    assert_ne!(b[0], 0, "the bit is in the frontend's file");

    // The frontend truncates its log under us: the next mark faults, is contained, and the
    // frontend is dropped (its migration would miss pages).
    rustix::fs::ftruncate(&log, 0).expect("truncate the log");
    assert!(g.rx.add_rx(&g.ram, 1, 2048));
    let rxq = queue(&mut queues, 0);
    assert_eq!(rxq.enqueue_burst(&[VecBuffer::from_frame(&[8u8; 200])]), 1);
    assert!(logged.faulted());
    assert!(
        drive(
            &mut [&mut p],
            &mut queues,
            &mut events,
            Duration::from_secs(2),
            |e, _| e.contains(&PortEvent::Disconnected)
        ),
        "a frontend that truncates its log is dropped"
    );

    // Unusable logs: the frontend is dropped, with no reply it could take for success.
    for (what, payload, with_fd, file) in [
        ("no fd", 16usize, false, 4096u64),
        ("short payload", 8, true, 4096),
        ("size 0", 16, true, 4096),
        ("log past the end of its file", 16, true, 16),
    ] {
        p.detach(&mut events);
        queues.clear();
        events.clear();
        let mut fe = Frontend::connect(&path).expect("connect");
        let log = log_memfd(file);
        let t = thread::spawn(move || {
            let pf = fe.get_u64(RequestCode::GetProtocolFeatures).expect("pf");
            fe.send(
                RequestCode::SetProtocolFeatures,
                false,
                &pf.to_le_bytes(),
                &[],
            )
            .expect("set pf");
            let size = if what == "size 0" { 0u64 } else { 32 };
            let area = codec::LogArea { size, offset: 0 };
            let body = codec::log_base_payload(&area);
            let fds = [log.as_fd()];
            fe.send(
                RequestCode::SetLogBase,
                false,
                &body[..payload],
                if with_fd { &fds } else { &[] },
            )
            .expect("send");
            fe.stream
                .set_read_timeout(Some(Duration::from_secs(2)))
                .expect("timeout");
            let mut b = [0u8; 1];
            fe.stream.read(&mut b)
        });
        assert!(
            drive(
                &mut [&mut p],
                &mut queues,
                &mut events,
                Duration::from_secs(2),
                |e, _| e.contains(&PortEvent::Disconnected)
            ),
            "{what}: frontend dropped"
        );
        let read = t.join().expect("thread");
        assert!(
            matches!(read, Ok(0)),
            "{what}: the frontend sees the connection close, no reply: {read:?}"
        );
    }
    drop(g);
}
