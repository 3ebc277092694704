//! A pod played by vhost-user's in-repo frontend, inside the test process: it negotiates with
//! vrouterd, shares memfd (or hugetlbfs) memory, runs both rings and sends and receives frames.
//! Tests use it where they need what a DPDK pod cannot do on cue: misbehave precisely (truncate
//! its memory mid-traffic), or connect and hang up a thousand times in a few seconds.

use std::path::Path;
use std::time::Duration;

use etherparse::PacketBuilder;
use vhost_user::frontend::{DriverQueue, Frontend, GuestRam};
use vhost_user::session::OFFERED_FEATURES;
use vhost_user::NetHdr;

/// Ring size of both queues.
const RING: u16 = 256;
/// Virtio-net header length with VERSION_1 (or MRG_RXBUF), which vrouterd always offers.
const HDR_LEN: usize = 12;

/// Guest memory the pod shares: 4 MiB, on a plain memfd or on 2 MiB huge pages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Memory {
    Memfd,
    Hugetlbfs,
}

/// A connected, running frontend pod.
pub struct FrontendPod {
    pub fe: Frontend,
    pub ram: GuestRam,
    pub rx: DriverQueue,
    pub tx: DriverQueue,
}

impl FrontendPod {
    /// Connects to `socket` (retrying until it exists and accepts, up to
    /// [`crate::wait::DEADLINE`]), negotiates every feature vrouterd offers (split rings), maps `memory` and
    /// starts queue pair 0 with RX buffers posted.
    pub fn connect(socket: &Path, memory: Memory) -> std::io::Result<FrontendPod> {
        Self::connect_with(socket, memory, OFFERED_FEATURES)
    }

    /// As [`FrontendPod::connect`], negotiating only `features` of what vrouterd offers (e.g.
    /// no offloads, as a DPDK pod with its defaults).
    pub fn connect_with(
        socket: &Path,
        memory: Memory,
        features: u64,
    ) -> std::io::Result<FrontendPod> {
        let connected = crate::wait::poll(
            crate::wait::DEADLINE,
            || Frontend::connect(socket),
            Result::is_ok,
        )
        .unwrap_or_else(|last_try| last_try)?;
        Self::attach_with(connected, memory, features)
    }

    /// Sets a pod up on a connection already made.
    pub fn attach(fe: Frontend, memory: Memory) -> std::io::Result<FrontendPod> {
        Self::attach_with(fe, memory, OFFERED_FEATURES)
    }

    fn attach_with(
        mut fe: Frontend,
        memory: Memory,
        features: u64,
    ) -> std::io::Result<FrontendPod> {
        fe.stream.set_read_timeout(Some(Duration::from_secs(10)))?;
        let mut ram = match memory {
            Memory::Memfd => GuestRam::new(4 << 20)?,
            Memory::Hugetlbfs => {
                crate::hugepages::ensure(64);
                GuestRam::new_huge(4 << 20)?
            }
        };
        let mut rx = DriverQueue::new(&mut ram, RING, 2048);
        let tx = DriverQueue::new(&mut ram, RING, 2048);
        // Its rings are split ones: packed rings are not asked for even when offered.
        fe.negotiate(
            &ram,
            features & !vhost_user::virtqueue::feature::RING_PACKED,
        )?;
        fe.start_vring(&ram, 0, &rx)?;
        fe.start_vring(&ram, 1, &tx)?;
        while rx.add_rx(&ram, 1, 2048) {}
        Ok(FrontendPod { fe, ram, rx, tx })
    }

    /// Posts as many copies of `frame` as the TX ring has room for (up to `n`), after reaping
    /// what the backend has consumed; returns how many were posted.
    pub fn send(&mut self, frame: &[u8], n: usize) -> usize {
        self.tx.reap(&self.ram);
        let mut posted = 0;
        while posted < n && self.tx.add_tx(&mut self.ram, HDR_LEN, frame, 2048, false) {
            posted += 1;
        }
        posted
    }

    /// Posts one frame with the offload header `hdr` (a partial checksum, a TSO packet up to
    /// 64 KB); false when the ring is full.
    pub fn send_with_hdr(&mut self, hdr: NetHdr, frame: &[u8]) -> bool {
        self.tx.reap(&self.ram);
        let mut h = hdr.to_bytes().to_vec();
        h.extend_from_slice(&[0, 0]);
        self.tx
            .add_tx_with_hdr(&mut self.ram, &h, frame, 2048, false)
    }

    /// Posts one chain of the raw bytes `hdr` then `frame` (a header of any length: a hostile
    /// guest's chain shorter than the virtio-net header); false when the ring is full.
    pub fn send_with_hdr_bytes(&mut self, hdr: &[u8], frame: &[u8]) -> bool {
        self.tx.reap(&self.ram);
        self.tx
            .add_tx_with_hdr(&mut self.ram, hdr, frame, 2048, false)
    }

    /// Frames vrouterd delivered since the last call with their offload headers (RX buffers
    /// are posted again).
    pub fn receive_with_hdr(&mut self) -> Vec<(NetHdr, Vec<u8>)> {
        let frames = self
            .rx
            .receive_with_hdr(&self.ram, HDR_LEN, true)
            .into_iter()
            .map(|(h, f)| {
                let mut b = [0u8; 10];
                b.copy_from_slice(&h[..10]);
                (NetHdr::from_bytes(&b), f)
            })
            .collect();
        while self.rx.add_rx(&self.ram, 1, 2048) {}
        frames
    }

    /// Frames vrouterd delivered since the last call (RX buffers are posted again).
    pub fn receive(&mut self) -> Vec<Vec<u8>> {
        let frames = self.rx.receive(&self.ram, HDR_LEN, true);
        while self.rx.add_rx(&self.ram, 1, 2048) {}
        frames
    }

    /// Takes the pod's memory away under the backend, as a hostile pod would: the file behind
    /// its memory table is truncated to nothing.
    pub fn truncate_memory(&self) -> std::io::Result<()> {
        rustix::fs::ftruncate(self.ram.fd(), 0)?;
        Ok(())
    }
}

/// A pod with several queue pairs (VIRTIO_NET_F_MQ), each started and enabled: for tests of
/// a vif whose queues are spread over forwarding lcores.
pub struct MultiQueuePod {
    pub fe: Frontend,
    pub ram: GuestRam,
    /// (guest RX, guest TX) of each queue pair, by pair.
    pub pairs: Vec<(DriverQueue, DriverQueue)>,
}

impl MultiQueuePod {
    /// Connects to `socket` as [`FrontendPod::connect`] does, then starts `pairs` queue pairs
    /// (vrings 0 to `2 * pairs - 1`) with RX buffers posted on each.
    pub fn connect(socket: &Path, pairs: u16) -> std::io::Result<MultiQueuePod> {
        let mut fe = crate::wait::poll(
            crate::wait::DEADLINE,
            || Frontend::connect(socket),
            Result::is_ok,
        )
        .unwrap_or_else(|last_try| last_try)?;
        fe.stream.set_read_timeout(Some(Duration::from_secs(10)))?;
        let mut ram = GuestRam::new((4 << 20) + u64::from(pairs) * (2 << 20))?;
        let mut queues = Vec::new();
        for _ in 0..pairs {
            let rx = DriverQueue::new(&mut ram, RING, 2048);
            let tx = DriverQueue::new(&mut ram, RING, 2048);
            queues.push((rx, tx));
        }
        // Split rings, as for the single-queue pod.
        fe.negotiate(
            &ram,
            OFFERED_FEATURES & !vhost_user::virtqueue::feature::RING_PACKED,
        )?;
        for (i, (rx, tx)) in queues.iter_mut().enumerate() {
            let i = i as u32;
            fe.start_vring(&ram, 2 * i, rx)?;
            fe.start_vring(&ram, 2 * i + 1, tx)?;
            while rx.add_rx(&ram, 1, 2048) {}
        }
        Ok(MultiQueuePod {
            fe,
            ram,
            pairs: queues,
        })
    }

    /// Posts `frame` on queue pair `pair`'s TX ring after reaping what the backend consumed;
    /// false when the ring is full.
    pub fn send_on(&mut self, pair: usize, frame: &[u8]) -> bool {
        let Some((_, tx)) = self.pairs.get_mut(pair) else {
            return false;
        };
        tx.reap(&self.ram);
        tx.add_tx(&mut self.ram, HDR_LEN, frame, 2048, false)
    }

    /// Frames delivered on queue pair `pair`'s RX ring since the last call (buffers posted
    /// again).
    pub fn receive_on(&mut self, pair: usize) -> Vec<Vec<u8>> {
        let Some((rx, _)) = self.pairs.get_mut(pair) else {
            return Vec::new();
        };
        let frames = rx.receive(&self.ram, HDR_LEN, true);
        while rx.add_rx(&self.ram, 1, 2048) {}
        frames
    }
}

/// An Ethernet/IPv4/UDP frame of 64 bytes on the wire (without FCS) from `src` to `dst`,
/// addressed to `dst_mac`, with correct checksums.
pub fn udp_frame(src_mac: [u8; 6], dst_mac: [u8; 6], src: [u8; 4], dst: [u8; 4]) -> Vec<u8> {
    let payload = [0x42u8; 18];
    let builder = PacketBuilder::ethernet2(src_mac, dst_mac)
        .ipv4(src, dst, 64)
        .udp(40000, 40001);
    let mut frame = Vec::with_capacity(builder.size(payload.len()));
    // Writing into a Vec cannot fail.
    let _ = builder.write(&mut frame, &payload);
    frame
}
