//! Integration with a real DPDK frontend: `dpdk-testpmd` pods with a `net_virtio_user` port.
//!
//! The backend enqueues generated frames into the pod's RX ring, testpmd forwards them back out
//! of the same port (`--forward-mode=io`), and the backend dequeues them from the pod's TX ring and
//! checks every byte. Both socket modes, mergeable buffers on and off, queue sizes 256 and 1024,
//! 64/1500/9000-byte frames, and pods killed and restarted with no fd or mapping leaked.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use testkit::testpmd::{TestpmdConfig, TestpmdPod};
use vhost_user::{Mode, PortConfig, PortEvent, VecBuffer, VhostUserPort, Virtqueue};

/// The backend under test and the queues it lent to its "data path" (this test thread).
struct Backend {
    port: VhostUserPort,
    /// Lent vrings by index: 2p is pair p's guest RX (we enqueue), 2p+1 its guest TX.
    queues: Vec<Option<Virtqueue>>,
    pairs: usize,
    events: Vec<PortEvent>,
    disconnects: usize,
}

impl Backend {
    fn new(path: &std::path::Path, mode: Mode, pairs: usize) -> Self {
        let mut cfg = PortConfig::new(path, mode);
        cfg.session.max_queue_pairs = 4;
        cfg.reconnect_min = Duration::from_millis(20);
        cfg.reconnect_max = Duration::from_millis(200);
        Self {
            port: VhostUserPort::new(cfg).expect("create port"),
            queues: (0..8).map(|_| None).collect(),
            pairs,
            events: Vec::new(),
            disconnects: 0,
        }
    }

    /// One round of the vhost thread's work.
    fn drive(&mut self) {
        self.port.wait(Duration::from_millis(5));
        self.events.clear();
        self.port.process(Instant::now(), &mut self.events);
        let mut i = 0;
        while i < self.events.len() {
            match self.events[i] {
                PortEvent::QueueReady(q) => match self.port.take_queue(q) {
                    Ok(queue) => self.queues[usize::from(q)] = Some(queue),
                    Err(e) => panic!("ready queue {q} could not be taken: {e}"),
                },
                PortEvent::QueueStop(q) => {
                    if let Some(queue) = self.queues[usize::from(q)].take() {
                        let mut more = Vec::new();
                        self.port.return_queue(queue, &mut more);
                        self.events.extend(more);
                    }
                }
                PortEvent::Disconnected => {
                    self.queues.iter_mut().for_each(|q| *q = None);
                    self.disconnects += 1;
                }
                PortEvent::Connected => {}
            }
            i += 1;
        }
    }

    fn all_lent(&self) -> bool {
        self.queues[..2 * self.pairs].iter().all(Option::is_some)
    }

    fn none_lent(&self) -> bool {
        self.queues.iter().all(Option::is_none)
    }

    fn wait_running(&mut self, pod: &mut TestpmdPod, timeout: Duration) {
        let end = Instant::now() + timeout;
        while Instant::now() < end {
            self.drive();
            if self.all_lent()
                && (0..self.pairs).all(|p| self.forwarding(p, Duration::from_millis(200)))
            {
                return;
            }
            assert!(
                pod.is_running(),
                "testpmd exited:\n{}",
                pod.log().join("\n")
            );
        }
        panic!(
            "queues not ready within {timeout:?}; testpmd said:\n{}",
            pod.log().join("\n")
        );
    }

    /// testpmd flushes its RX queues when forwarding starts: probe until a frame comes back on
    /// `pair`, then drain the probes.
    fn forwarding(&mut self, pair: usize, timeout: Duration) -> bool {
        let probe = [VecBuffer::from_frame(&frame(60, u32::MAX))];
        let mut got = false;
        let end = Instant::now() + timeout;
        if let Some(rx) = &mut self.queues[2 * pair] {
            rx.enqueue_burst(&probe);
        }
        let mut bufs: Vec<VecBuffer> = (0..32).map(|_| VecBuffer::with_capacity(10_000)).collect();
        while Instant::now() < end {
            self.drive();
            if let Some(tx) = &mut self.queues[2 * pair + 1] {
                got |= tx.dequeue_burst(&mut bufs) > 0;
            }
        }
        got
    }

    /// Sends `frames` through the pod on queue pair `pair` and returns what came back, in order.
    fn round_trip(&mut self, pair: usize, frames: &[Vec<u8>], timeout: Duration) -> Vec<Vec<u8>> {
        let bufs: Vec<VecBuffer> = frames.iter().map(|f| VecBuffer::from_frame(f)).collect();
        let mut sent = 0;
        let mut back = Vec::new();
        let mut rxbufs: Vec<VecBuffer> =
            (0..32).map(|_| VecBuffer::with_capacity(10_000)).collect();
        let end = Instant::now() + timeout;
        while back.len() < frames.len() && Instant::now() < end {
            self.drive();
            if let Some(rx) = &mut self.queues[2 * pair] {
                if sent < bufs.len() {
                    let top = (sent + 32).min(bufs.len());
                    sent += rx.enqueue_burst(&bufs[sent..top]);
                }
                assert_eq!(rx.broken(), None);
            }
            if let Some(tx) = &mut self.queues[2 * pair + 1] {
                let n = tx.dequeue_burst(&mut rxbufs);
                back.extend(rxbufs[..n].iter().map(|b| b.data().to_vec()));
                assert_eq!(tx.broken(), None);
            }
        }
        back
    }
}

fn frame(len: usize, seq: u32) -> Vec<u8> {
    let mut f = vec![0u8; len];
    f[..6].copy_from_slice(&[0x02, 0, 0, 0, 0, 1]);
    f[6..12].copy_from_slice(&[0x02, 0, 0, 0, 0, 2]);
    f[12..14].copy_from_slice(&0x88b5u16.to_be_bytes()); // local experimental ethertype
    f[14..18].copy_from_slice(&seq.to_be_bytes());
    for (i, b) in f.iter_mut().enumerate().skip(18) {
        *b = (i as u32).wrapping_mul(31).wrapping_add(seq) as u8;
    }
    f
}

struct TempDir(PathBuf);
impl TempDir {
    fn new(tag: &str) -> Self {
        let p = std::env::temp_dir().join(format!("vhost-it-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).expect("temp dir");
        Self(p)
    }
}
impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

struct Case {
    mode: Mode,
    queue_size: u16,
    mrg_rxbuf: bool,
    sizes: &'static [usize],
    pairs: usize,
}

fn init_logs() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "vhost_user=info".into()),
        )
        .with_test_writer()
        .try_init();
}

fn run_case(tag: &str, case: Case) {
    init_logs();
    let dir = TempDir::new(tag);
    let sock = dir.0.join("vhost.sock");
    let mut cfg = TestpmdConfig::new(&sock);
    cfg.queue_size = case.queue_size;
    cfg.mrg_rxbuf = case.mrg_rxbuf;
    cfg.server = case.mode == Mode::Client;
    cfg.queues = case.pairs as u16;
    if case.sizes.iter().any(|&s| s > 1514) {
        cfg.extra_app_args
            .extend(["--max-pkt-len=9600", "--enable-scatter"].map(String::from));
    }
    let mut backend = Backend::new(&sock, case.mode, case.pairs);
    let mut pod = TestpmdPod::start(cfg).expect("start testpmd");
    backend.wait_running(&mut pod, Duration::from_secs(30));
    let mut seq = 0;
    for (k, &size) in case.sizes.iter().enumerate() {
        let pair = k % case.pairs;
        let frames: Vec<Vec<u8>> = (0..200)
            .map(|_| {
                seq += 1;
                frame(size, seq)
            })
            .collect();
        let back = backend.round_trip(pair, &frames, Duration::from_secs(10));
        assert_eq!(
            back.len(),
            frames.len(),
            "{size}-byte frames on pair {pair}: {} of {} came back; testpmd:\n{}",
            back.len(),
            frames.len(),
            pod.log().join("\n")
        );
        for (i, (a, b)) in frames.iter().zip(&back).enumerate() {
            assert!(a == b, "{size}-byte frame {i} differs after the round trip");
        }
    }
}

#[test]
fn server_mode_mergeable_queue_256_carries_64_1500_9000_byte_frames() {
    run_case(
        "s256m",
        Case {
            mode: Mode::Server,
            queue_size: 256,
            mrg_rxbuf: true,
            sizes: &[64, 1500, 9000],
            pairs: 1,
        },
    );
}

#[test]
fn server_mode_without_mergeable_buffers_queue_1024_carries_64_and_1500_byte_frames() {
    run_case(
        "s1024n",
        Case {
            mode: Mode::Server,
            queue_size: 1024,
            mrg_rxbuf: false,
            sizes: &[64, 1500],
            pairs: 1,
        },
    );
}

#[test]
fn client_mode_mergeable_queue_1024_carries_64_1500_9000_byte_frames() {
    run_case(
        "c1024m",
        Case {
            mode: Mode::Client,
            queue_size: 1024,
            mrg_rxbuf: true,
            sizes: &[64, 1500, 9000],
            pairs: 1,
        },
    );
}

#[test]
fn client_mode_without_mergeable_buffers_queue_256_carries_64_and_1500_byte_frames() {
    run_case(
        "c256n",
        Case {
            mode: Mode::Client,
            queue_size: 256,
            mrg_rxbuf: false,
            sizes: &[64, 1500],
            pairs: 1,
        },
    );
}

fn fd_count() -> usize {
    std::fs::read_dir("/proc/self/fd")
        .map(|d| d.count())
        .unwrap_or(0)
}

fn map_count() -> usize {
    std::fs::read_to_string("/proc/self/maps")
        .map(|m| m.lines().count())
        .unwrap_or(0)
}

fn restart_case(tag: &str, mode: Mode) {
    init_logs();
    let dir = TempDir::new(tag);
    let sock = dir.0.join("vhost.sock");
    let mut backend = Backend::new(&sock, mode, 1);
    // Warm up once so lazily created process state (log buffers, thread-locals) is not counted.
    let mut fds_before = None;
    for round in 0..4u32 {
        let mut cfg = TestpmdConfig::new(&sock);
        cfg.server = mode == Mode::Client;
        let mut pod = TestpmdPod::start(cfg).expect("start testpmd");
        backend.wait_running(&mut pod, Duration::from_secs(30));
        let frames: Vec<Vec<u8>> = (0..64)
            .map(|i| frame(if i % 2 == 0 { 64 } else { 1500 }, round * 1000 + i))
            .collect();
        let back = backend.round_trip(0, &frames, Duration::from_secs(10));
        assert_eq!(
            back, frames,
            "round {round}: traffic did not resume intact after the restart"
        );
        pod.kill();
        // The backend notices the peer is gone and tears everything down.
        let end = Instant::now() + Duration::from_secs(10);
        let disconnects = backend.disconnects;
        while backend.disconnects == disconnects && Instant::now() < end {
            backend.drive();
        }
        assert_eq!(
            backend.disconnects,
            disconnects + 1,
            "round {round}: peer loss not noticed"
        );
        assert!(backend.none_lent());
        let now = (fd_count(), map_count());
        match fds_before {
            None => fds_before = Some(now),
            Some(before) => assert_eq!(
                now, before,
                "round {round}: (fds, mappings) leaked after peer loss"
            ),
        }
        if mode == Mode::Client {
            let _ = std::fs::remove_file(&sock);
        }
    }
}

#[test]
fn server_mode_pod_killed_and_restarted_resumes_traffic_without_leaks() {
    restart_case("srestart", Mode::Server);
}

#[test]
fn client_mode_pod_killed_and_restarted_resumes_traffic_without_leaks() {
    restart_case("crestart", Mode::Client);
}

#[test]
fn server_mode_two_queue_pairs_carry_traffic_on_each_pair() {
    run_case(
        "s2q",
        Case {
            mode: Mode::Server,
            queue_size: 256,
            mrg_rxbuf: true,
            sizes: &[64, 1500, 1500, 64],
            pairs: 2,
        },
    );
}

#[test]
fn client_mode_backend_restart_reattaches_to_a_running_pod() {
    init_logs();
    let dir = TempDir::new("brestart");
    let sock = dir.0.join("vhost.sock");
    let mut cfg = TestpmdConfig::new(&sock);
    cfg.server = true;
    let mut pod = TestpmdPod::start(cfg).expect("start testpmd");
    for round in 0..3u32 {
        // A fresh backend each round, as after a vrouterd restart; the pod keeps running.
        let mut backend = Backend::new(&sock, Mode::Client, 1);
        backend.wait_running(&mut pod, Duration::from_secs(30));
        let frames: Vec<Vec<u8>> = (0..64)
            .map(|i| frame(if i % 2 == 0 { 64 } else { 1500 }, round * 1000 + i))
            .collect();
        let back = backend.round_trip(0, &frames, Duration::from_secs(10));
        assert_eq!(
            back, frames,
            "round {round}: traffic after the backend reattached"
        );
        drop(backend);
    }
    assert!(pod.is_running(), "the pod survived three backend restarts");
}
