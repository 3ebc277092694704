//! A small vhost-user frontend: the driver side that a pod's virtio-user or a guest kernel plays.
//! It owns memfd "guest RAM", lays out split rings in it, posts TX/RX buffers and reaps used
//! entries, and speaks the protocol over a blocking unix socket. Used by this crate's tests, fuzz
//! targets and benchmarks; it trusts the backend and is not meant for production.

use std::io::{Read, Write};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::sync::Arc;

use rustix::net::{SendAncillaryBuffer, SendAncillaryMessage, SendFlags};

use crate::codec::{self, RequestCode, VringAddr, HEADER_LEN};
use crate::memory::{GuestMemory, RegionSpec};
use crate::virtqueue::layout::{avail, desc, used};
use crate::virtqueue::packed::{DESC_F_AVAIL as PACKED_F_AVAIL, DESC_F_USED as PACKED_F_USED};
use crate::virtqueue::{
    PackedQueue, QueueSetup, SplitQueue, DESC_F_INDIRECT, DESC_F_NEXT, DESC_F_WRITE,
};

/// Frontend-virtual address where the test guest RAM pretends to live.
pub const UVA_BASE: u64 = 0x7f00_0000_0000;
/// Guest-physical address of the test guest RAM.
pub const GPA_BASE: u64 = 0x1_0000_0000;

/// memfd-backed guest RAM with a bump allocator.
#[derive(Debug)]
pub struct GuestRam {
    fd: OwnedFd,
    mem: Arc<GuestMemory>,
    size: u64,
    next: u64,
}

impl GuestRam {
    /// `size` bytes of zeroed RAM.
    pub fn new(size: u64) -> std::io::Result<Self> {
        Self::with_flags(size, rustix::fs::MemfdFlags::empty())
    }

    /// `size` bytes (a multiple of 2 MiB) of zeroed RAM on hugetlbfs, as DPDK pods and QEMU
    /// guests with huge pages share it (needs free 2 MiB pages).
    pub fn new_huge(size: u64) -> std::io::Result<Self> {
        Self::with_flags(size, rustix::fs::MemfdFlags::HUGETLB)
    }

    fn with_flags(size: u64, flags: rustix::fs::MemfdFlags) -> std::io::Result<Self> {
        let fd =
            rustix::fs::memfd_create("vhost-test-guest", rustix::fs::MemfdFlags::CLOEXEC | flags)?;
        rustix::fs::ftruncate(&fd, size)?;
        let spec = Self::spec_for(size);
        let mem =
            GuestMemory::map(&[spec], vec![fd.try_clone()?]).map_err(std::io::Error::other)?;
        Ok(Self {
            fd,
            mem: Arc::new(mem),
            size,
            next: 0,
        })
    }

    fn spec_for(size: u64) -> RegionSpec {
        RegionSpec {
            guest_phys_addr: GPA_BASE,
            memory_size: size,
            userspace_addr: UVA_BASE,
            mmap_offset: 0,
        }
    }

    /// The region as `SET_MEM_TABLE` declares it.
    pub fn region(&self) -> RegionSpec {
        Self::spec_for(self.size)
    }

    /// The memfd.
    pub fn fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }

    /// The frontend's own view of the RAM.
    pub fn memory(&self) -> &Arc<GuestMemory> {
        &self.mem
    }

    /// Allocates `len` bytes aligned to `align`; returns the guest-physical address.
    pub fn alloc(&mut self, len: u64, align: u64) -> u64 {
        let at = self.next.div_ceil(align) * align;
        assert!(at + len <= self.size, "test guest RAM exhausted");
        self.next = at + len;
        GPA_BASE + at
    }

    /// Frontend-virtual address of `gpa`.
    pub fn uva(&self, gpa: u64) -> u64 {
        gpa - GPA_BASE + UVA_BASE
    }

    /// Writes guest bytes.
    pub fn write(&self, gpa: u64, data: &[u8]) {
        self.mem
            .write(gpa, data)
            .expect("test frontend write inside its own RAM");
    }

    /// Reads guest bytes.
    pub fn read(&self, gpa: u64, len: usize) -> Vec<u8> {
        let mut v = vec![0; len];
        self.mem
            .read(gpa, &mut v)
            .expect("test frontend read inside its own RAM");
        v
    }

    fn w16(&self, gpa: u64, v: u16) {
        self.write(gpa, &v.to_le_bytes());
    }

    fn r16(&self, gpa: u64) -> u16 {
        let b = self.read(gpa, 2);
        u16::from_le_bytes([b[0], b[1]])
    }

    fn r32(&self, gpa: u64) -> u32 {
        let b = self.read(gpa, 4);
        u32::from_le_bytes([b[0], b[1], b[2], b[3]])
    }
}

/// A raw descriptor as the driver writes it (tests use it to build hostile chains).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RawDesc {
    /// Buffer address.
    pub addr: u64,
    /// Buffer length.
    pub len: u32,
    /// Flags.
    pub flags: u16,
    /// Next index.
    pub next: u16,
}

impl RawDesc {
    /// Encodes the descriptor.
    pub fn to_bytes(self) -> [u8; 16] {
        let mut b = [0u8; 16];
        b[..8].copy_from_slice(&self.addr.to_le_bytes());
        b[8..12].copy_from_slice(&self.len.to_le_bytes());
        b[12..14].copy_from_slice(&self.flags.to_le_bytes());
        b[14..].copy_from_slice(&self.next.to_le_bytes());
        b
    }
}

/// The driver side of one split virtqueue in [`GuestRam`].
#[derive(Debug)]
pub struct DriverQueue {
    /// Queue size.
    pub size: u16,
    /// Descriptor table address.
    pub desc: u64,
    /// Avail ring address.
    pub avail: u64,
    /// Used ring address.
    pub used: u64,
    avail_idx: u16,
    last_used: u16,
    free: Vec<u16>,
    /// Per head: the descriptors it owns and its first buffer (for RX reads).
    owned: Vec<(Vec<u16>, u64)>,
    buf_size: u32,
    bufs: Vec<u64>,
}

impl DriverQueue {
    /// Lays out a queue of `size` entries with one `buf_size`-byte buffer per descriptor.
    pub fn new(ram: &mut GuestRam, size: u16, buf_size: u32) -> Self {
        let desc = ram.alloc(desc::table_len(size), desc::ALIGN);
        let avail = ram.alloc(avail::len(size), avail::ALIGN);
        let used = ram.alloc(used::len(size), used::ALIGN);
        let bufs = (0..size)
            .map(|_| ram.alloc(u64::from(buf_size), 64))
            .collect();
        Self {
            size,
            desc,
            avail,
            used,
            avail_idx: 0,
            last_used: 0,
            free: (0..size).rev().collect(),
            owned: vec![(Vec::new(), 0); usize::from(size)],
            buf_size,
            bufs,
        }
    }

    /// `SET_VRING_ADDR` payload fields for this queue.
    pub fn addr(&self, ram: &GuestRam, index: u32) -> VringAddr {
        VringAddr {
            index,
            flags: 0,
            desc: ram.uva(self.desc),
            used: ram.uva(self.used),
            avail: ram.uva(self.avail),
            log: 0,
        }
    }

    /// A backend queue over this ring sharing the frontend's own mapping (in-process tests and
    /// benchmarks that skip the socket).
    pub fn backend_queue(&self, ram: &GuestRam, index: u16, features: u64) -> SplitQueue {
        SplitQueue::new(QueueSetup {
            index,
            size: self.size,
            mem: Arc::clone(ram.memory()),
            desc_gpa: self.desc,
            avail_gpa: self.avail,
            used_gpa: self.used,
            base: 0,
            features,
            call: None,
        })
        .expect("test ring lies in test RAM")
    }

    /// Free descriptors.
    pub fn free_count(&self) -> usize {
        self.free.len()
    }

    /// Writes descriptor `i`.
    pub fn write_desc(&self, ram: &GuestRam, i: u16, d: RawDesc) {
        ram.write(self.desc + desc::at(i) as u64, &d.to_bytes());
    }

    /// Publishes `head` in the avail ring (and bumps avail->idx by one).
    pub fn publish(&mut self, ram: &GuestRam, head: u16) {
        let slot = usize::from(self.avail_idx & (self.size - 1));
        ram.w16(self.avail + avail::entry(slot) as u64, head);
        self.avail_idx = self.avail_idx.wrapping_add(1);
        ram.w16(self.avail + avail::IDX as u64, self.avail_idx);
    }

    /// Sets avail->idx directly (hostile tests).
    pub fn set_avail_idx(&mut self, ram: &GuestRam, idx: u16) {
        self.avail_idx = idx;
        ram.w16(self.avail + avail::IDX as u64, idx);
    }

    /// Sets avail->flags.
    pub fn set_avail_flags(&self, ram: &GuestRam, flags: u16) {
        ram.w16(self.avail + avail::FLAGS as u64, flags);
    }

    /// Sets used_event (EVENT_IDX).
    pub fn set_used_event(&self, ram: &GuestRam, v: u16) {
        ram.w16(self.avail + avail::used_event(self.size) as u64, v);
    }

    /// used->flags.
    pub fn used_flags(&self, ram: &GuestRam) -> u16 {
        ram.r16(self.used + used::FLAGS as u64)
    }

    /// used->idx.
    pub fn used_idx(&self, ram: &GuestRam) -> u16 {
        ram.r16(self.used + used::IDX as u64)
    }

    /// Posts a TX frame (virtio-net header of `hdr_len` zero bytes + `frame`) split across
    /// descriptors of at most `seg` bytes, directly or through an indirect table. Returns false
    /// when there are not enough free descriptors.
    pub fn add_tx(
        &mut self,
        ram: &mut GuestRam,
        hdr_len: usize,
        frame: &[u8],
        seg: usize,
        indirect: bool,
    ) -> bool {
        self.add_tx_with_hdr(ram, &vec![0u8; hdr_len], frame, seg, indirect)
    }

    /// As [`DriverQueue::add_tx`], with the virtio-net header's bytes given (offloads).
    pub fn add_tx_with_hdr(
        &mut self,
        ram: &mut GuestRam,
        hdr: &[u8],
        frame: &[u8],
        seg: usize,
        indirect: bool,
    ) -> bool {
        let mut bytes = hdr.to_vec();
        bytes.extend_from_slice(frame);
        let chunks: Vec<&[u8]> = bytes.chunks(seg.max(1)).collect();
        let needed = if indirect { 1 } else { chunks.len() };
        if self.free.len() < needed || chunks.iter().any(|c| c.len() > self.buf_size as usize) {
            return false;
        }
        if indirect {
            let head = self.free.pop().unwrap_or(0);
            let table = ram.alloc((desc::SIZE * chunks.len()) as u64, desc::ALIGN);
            for (k, c) in chunks.iter().enumerate() {
                let buf = ram.alloc(c.len() as u64, 8);
                ram.write(buf, c);
                let last = k + 1 == chunks.len();
                let d = RawDesc {
                    addr: buf,
                    len: c.len() as u32,
                    flags: if last { 0 } else { DESC_F_NEXT },
                    next: (k + 1) as u16,
                };
                ram.write(table + (desc::SIZE * k) as u64, &d.to_bytes());
            }
            self.write_desc(
                ram,
                head,
                RawDesc {
                    addr: table,
                    len: (desc::SIZE * chunks.len()) as u32,
                    flags: DESC_F_INDIRECT,
                    next: 0,
                },
            );
            self.owned[usize::from(head)] = (vec![head], table);
            self.publish(ram, head);
            return true;
        }
        let ids: Vec<u16> = (0..chunks.len()).filter_map(|_| self.free.pop()).collect();
        for (k, (c, &id)) in chunks.iter().zip(&ids).enumerate() {
            let buf = self.bufs[usize::from(id)];
            ram.write(buf, c);
            let next = ids.get(k + 1).copied();
            let d = RawDesc {
                addr: buf,
                len: c.len() as u32,
                flags: if next.is_some() { DESC_F_NEXT } else { 0 },
                next: next.unwrap_or(0),
            };
            self.write_desc(ram, id, d);
        }
        self.owned[usize::from(ids[0])] = (ids.clone(), self.bufs[usize::from(ids[0])]);
        self.publish(ram, ids[0]);
        true
    }

    /// Posts one writable RX buffer chain of `descs` descriptors of `len` bytes each.
    pub fn add_rx(&mut self, ram: &GuestRam, descs: usize, len: u32) -> bool {
        if self.free.len() < descs || len > self.buf_size {
            return false;
        }
        let ids: Vec<u16> = (0..descs).filter_map(|_| self.free.pop()).collect();
        for (k, &id) in ids.iter().enumerate() {
            let next = ids.get(k + 1).copied();
            let flags = DESC_F_WRITE | if next.is_some() { DESC_F_NEXT } else { 0 };
            self.write_desc(
                ram,
                id,
                RawDesc {
                    addr: self.bufs[usize::from(id)],
                    len,
                    flags,
                    next: next.unwrap_or(0),
                },
            );
        }
        self.owned[usize::from(ids[0])] = (ids.clone(), self.bufs[usize::from(ids[0])]);
        self.publish(ram, ids[0]);
        true
    }

    /// Reaps used entries: `(head, len)` pairs, freeing their descriptors.
    pub fn reap(&mut self, ram: &GuestRam) -> Vec<(u16, u32)> {
        let used_idx = self.used_idx(ram);
        let mut out = Vec::new();
        while self.last_used != used_idx {
            let entry =
                self.used + used::entry(usize::from(self.last_used & (self.size - 1))) as u64;
            let id = ram.r32(entry + used::ID as u64);
            let len = ram.r32(entry + used::LEN as u64);
            let head = (id as u16) & (self.size - 1);
            let (ids, _) = std::mem::take(&mut self.owned[usize::from(head)]);
            self.free.extend(ids);
            out.push((head, len));
            self.last_used = self.last_used.wrapping_add(1);
        }
        out
    }

    /// The bytes the device wrote to an RX chain with head `head` (`len` bytes over its
    /// descriptors, in order).
    pub fn rx_bytes(&self, ram: &GuestRam, head: u16, len: u32) -> Vec<u8> {
        let mut out = Vec::with_capacity(len as usize);
        let mut left = len as usize;
        let mut i = head;
        while left > 0 {
            let n = left.min(self.buf_size as usize);
            let d = ram.read(self.desc + desc::at(i) as u64, desc::SIZE);
            let addr = u64::from_le_bytes(d[..8].try_into().unwrap_or([0; 8]));
            let dlen = u32::from_le_bytes(d[8..12].try_into().unwrap_or([0; 4])) as usize;
            let n = n.min(dlen);
            out.extend(ram.read(addr, n));
            left -= n;
            i = u16::from_le_bytes([d[14], d[15]]);
        }
        out
    }

    /// Collects received frames from reaped RX entries, joining mergeable buffers by the
    /// header's `num_buffers`; each frame comes with its virtio-net header bytes apart.
    pub fn receive_with_hdr(
        &mut self,
        ram: &GuestRam,
        hdr_len: usize,
        mergeable: bool,
    ) -> Vec<(Vec<u8>, Vec<u8>)> {
        let used = self.reap(ram);
        join_rx_frames(used, hdr_len, mergeable, |head, len| {
            self.rx_bytes(ram, head, len)
        })
    }

    /// As [`DriverQueue::receive_with_hdr`], without the virtio-net headers.
    pub fn receive(&mut self, ram: &GuestRam, hdr_len: usize, mergeable: bool) -> Vec<Vec<u8>> {
        frames_only(self.receive_with_hdr(ram, hdr_len, mergeable))
    }

    /// The requests that configure and start vring `index` over this queue, in order: size,
    /// base 0, ring addresses, a kick without fd (polled) and enable.
    pub fn start_requests(&self, ram: &GuestRam, index: u32) -> [(RequestCode, Vec<u8>); 5] {
        [
            (
                RequestCode::SetVringNum,
                codec::vring_state_payload(index, u32::from(self.size)),
            ),
            (
                RequestCode::SetVringBase,
                codec::vring_state_payload(index, 0),
            ),
            (
                RequestCode::SetVringAddr,
                codec::vring_addr_payload(&self.addr(ram, index)),
            ),
            (
                RequestCode::SetVringKick,
                (u64::from(index) | codec::VRING_NOFD_MASK)
                    .to_le_bytes()
                    .to_vec(),
            ),
            (
                RequestCode::SetVringEnable,
                codec::vring_state_payload(index, 1),
            ),
        ]
    }
}

/// A raw packed-ring descriptor as the driver writes it (tests build hostile rings with it).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PackedDesc {
    /// Buffer address.
    pub addr: u64,
    /// Buffer length.
    pub len: u32,
    /// Buffer id.
    pub id: u16,
    /// Flags (NEXT, WRITE, INDIRECT, AVAIL, USED).
    pub flags: u16,
}

impl PackedDesc {
    /// Encodes the descriptor.
    pub fn to_bytes(self) -> [u8; 16] {
        let mut b = [0u8; 16];
        b[..8].copy_from_slice(&self.addr.to_le_bytes());
        b[8..12].copy_from_slice(&self.len.to_le_bytes());
        b[12..14].copy_from_slice(&self.id.to_le_bytes());
        b[14..].copy_from_slice(&self.flags.to_le_bytes());
        b
    }

    /// Decodes a descriptor.
    pub fn from_bytes(b: &[u8]) -> Self {
        let mut a = [0u8; 16];
        a.copy_from_slice(&b[..16]);
        Self {
            addr: u64::from_le_bytes([a[0], a[1], a[2], a[3], a[4], a[5], a[6], a[7]]),
            len: u32::from_le_bytes([a[8], a[9], a[10], a[11]]),
            id: u16::from_le_bytes([a[12], a[13]]),
            flags: u16::from_le_bytes([a[14], a[15]]),
        }
    }
}

/// The driver side of one packed virtqueue in [`GuestRam`]: a descriptor ring, the driver and
/// device event suppression areas, one `buf_size`-byte buffer per buffer id.
#[derive(Debug)]
pub struct PackedDriver {
    /// Queue size.
    pub size: u16,
    /// Descriptor ring address.
    pub ring: u64,
    /// Driver event suppression area.
    pub driver_event: u64,
    /// Device event suppression area.
    pub device_event: u64,
    /// Next slot to fill and the driver's wrap counter.
    avail: (u16, bool),
    /// Next slot to reap and the wrap counter its used descriptor will carry.
    used: (u16, bool),
    free_ids: Vec<u16>,
    /// Ring slots in use.
    in_flight: u16,
    /// Per buffer id: the slots its chain took and its buffers (address, length), in order.
    owned: Vec<(u16, Vec<(u64, u32)>)>,
    buf_size: u32,
    bufs: Vec<u64>,
}

impl PackedDriver {
    /// Lays out a queue of `size` slots.
    pub fn new(ram: &mut GuestRam, size: u16, buf_size: u32) -> Self {
        use crate::virtqueue::layout::packed::{desc as pdesc, event};
        let ring = ram.alloc(pdesc::ring_len(size), pdesc::ALIGN);
        let driver_event = ram.alloc(event::LEN, event::ALIGN);
        let device_event = ram.alloc(event::LEN, event::ALIGN);
        let bufs = (0..size)
            .map(|_| ram.alloc(u64::from(buf_size), 64))
            .collect();
        Self {
            size,
            ring,
            driver_event,
            device_event,
            avail: (0, true),
            used: (0, true),
            free_ids: (0..size).rev().collect(),
            in_flight: 0,
            owned: vec![(0, Vec::new()); usize::from(size)],
            buf_size,
            bufs,
        }
    }

    /// `SET_VRING_ADDR` payload fields for this queue.
    pub fn addr(&self, ram: &GuestRam, index: u32) -> VringAddr {
        VringAddr {
            index,
            flags: 0,
            desc: ram.uva(self.ring),
            used: ram.uva(self.device_event),
            avail: ram.uva(self.driver_event),
            log: 0,
        }
    }

    /// A backend queue over this ring sharing the frontend's mapping (`RING_PACKED` is added
    /// to `features`), starting where the driver stands.
    pub fn backend_queue(&self, ram: &GuestRam, index: u16, features: u64) -> PackedQueue {
        PackedQueue::new(QueueSetup {
            index,
            size: self.size,
            mem: Arc::clone(ram.memory()),
            desc_gpa: self.ring,
            avail_gpa: self.driver_event,
            used_gpa: self.device_event,
            base: self.base(),
            features: features | crate::virtqueue::feature::RING_PACKED,
            call: None,
        })
        .expect("test ring lies in test RAM")
    }

    /// The driver's avail position as `SET_VRING_BASE` gives it (bit 15: wrap counter).
    pub fn base(&self) -> u16 {
        self.avail.0 | if self.avail.1 { 1 << 15 } else { 0 }
    }

    /// The next slot the driver fills and its wrap counter.
    pub fn avail_pos(&self) -> (u16, bool) {
        self.avail
    }

    /// Ring slots free for new chains.
    pub fn free_slots(&self) -> u16 {
        self.size - self.in_flight
    }

    /// The AVAIL/USED bits that make a descriptor available under wrap counter `wrap`.
    pub fn avail_bits(wrap: bool) -> u16 {
        if wrap {
            PACKED_F_AVAIL
        } else {
            PACKED_F_USED
        }
    }

    /// Writes slot `slot` raw.
    pub fn write_slot(&self, ram: &GuestRam, slot: u16, d: PackedDesc) {
        ram.write(self.ring + 16 * u64::from(slot), &d.to_bytes());
    }

    /// Reads slot `slot`.
    pub fn read_slot(&self, ram: &GuestRam, slot: u16) -> PackedDesc {
        PackedDesc::from_bytes(&ram.read(self.ring + 16 * u64::from(slot), 16))
    }

    /// Makes a chain of `descs` (addr, len, flags without NEXT/AVAIL/USED) available under
    /// buffer id `id`, the head written last; returns false without room. Hostile tests give
    /// any id.
    pub fn post(&mut self, ram: &GuestRam, id: u16, descs: &[(u64, u32, u16)]) -> bool {
        let n = descs.len() as u16;
        if n == 0 || n > self.free_slots() {
            return false;
        }
        let head_slot = self.avail.0;
        let mut head = None;
        for (k, &(addr, len, flags)) in descs.iter().enumerate() {
            let last = k + 1 == descs.len();
            let d = PackedDesc {
                addr,
                len,
                id,
                flags: flags | if last { 0 } else { DESC_F_NEXT } | Self::avail_bits(self.avail.1),
            };
            if k == 0 {
                head = Some(d);
            } else {
                self.write_slot(ram, self.avail.0, d);
            }
            self.step_avail();
        }
        if let Some(d) = head {
            std::sync::atomic::fence(std::sync::atomic::Ordering::Release);
            self.write_slot(ram, head_slot, d);
        }
        if let Some(o) = self.owned.get_mut(usize::from(id)) {
            *o = (n, descs.iter().map(|&(a, l, _)| (a, l)).collect());
        }
        self.in_flight += n;
        true
    }

    fn step_avail(&mut self) {
        self.avail.0 += 1;
        if self.avail.0 == self.size {
            self.avail = (0, !self.avail.1);
        }
    }

    /// Posts a TX frame (`hdr` + `frame`) split across descriptors of at most `seg` bytes,
    /// directly or through an indirect table. Returns false when there is no room.
    pub fn add_tx_with_hdr(
        &mut self,
        ram: &mut GuestRam,
        hdr: &[u8],
        frame: &[u8],
        seg: usize,
        indirect: bool,
    ) -> bool {
        let mut bytes = hdr.to_vec();
        bytes.extend_from_slice(frame);
        let chunks: Vec<Vec<u8>> = bytes.chunks(seg.max(1)).map(<[u8]>::to_vec).collect();
        let needed = if indirect { 1 } else { chunks.len() as u16 };
        let Some(&id) = self.free_ids.last() else {
            return false;
        };
        if needed > self.free_slots() {
            return false;
        }
        let mut descs = Vec::new();
        for c in &chunks {
            let buf = ram.alloc(c.len().max(1) as u64, 8);
            ram.write(buf, c);
            descs.push((buf, c.len() as u32, 0));
        }
        self.free_ids.pop();
        if indirect {
            let table = ram.alloc(16 * descs.len() as u64, 16);
            for (k, &(a, l, f)) in descs.iter().enumerate() {
                let d = PackedDesc {
                    addr: a,
                    len: l,
                    id: 0,
                    flags: f,
                };
                ram.write(table + 16 * k as u64, &d.to_bytes());
            }
            let ok = self.post(
                ram,
                id,
                &[(table, 16 * descs.len() as u32, DESC_F_INDIRECT)],
            );
            if let Some(o) = self.owned.get_mut(usize::from(id)) {
                o.1 = descs.iter().map(|&(a, l, _)| (a, l)).collect();
            }
            return ok;
        }
        self.post(ram, id, &descs)
    }

    /// As [`PackedDriver::add_tx_with_hdr`] with a zeroed `hdr_len`-byte header.
    pub fn add_tx(
        &mut self,
        ram: &mut GuestRam,
        hdr_len: usize,
        frame: &[u8],
        seg: usize,
        indirect: bool,
    ) -> bool {
        self.add_tx_with_hdr(ram, &vec![0u8; hdr_len], frame, seg, indirect)
    }

    /// Posts one writable RX chain of `descs` buffers of `len` bytes (each a slice of the
    /// id's buffer when it fits, else freshly allocated).
    pub fn add_rx(&mut self, ram: &mut GuestRam, descs: usize, len: u32) -> bool {
        let Some(&id) = self.free_ids.last() else {
            return false;
        };
        if descs as u16 > self.free_slots() {
            return false;
        }
        let list: Vec<(u64, u32, u16)> = (0..descs)
            .map(|k| {
                let base = self.bufs[usize::from(id)];
                let addr = if (k as u64 + 1) * u64::from(len) <= u64::from(self.buf_size) {
                    base + k as u64 * u64::from(len)
                } else {
                    ram.alloc(u64::from(len).max(1), 64)
                };
                (addr, len, DESC_F_WRITE)
            })
            .collect();
        self.free_ids.pop();
        self.post(ram, id, &list)
    }

    /// Reaps used descriptors in order: `(id, len)`, freeing their ids and slots.
    pub fn reap(&mut self, ram: &GuestRam) -> Vec<(u16, u32)> {
        let mut out = Vec::new();
        while self.in_flight > 0 {
            let d = self.read_slot(ram, self.used.0);
            let avail = d.flags & PACKED_F_AVAIL != 0;
            let used = d.flags & PACKED_F_USED != 0;
            if avail != self.used.1 || used != self.used.1 {
                break;
            }
            let Some((slots, _)) = self.owned.get(usize::from(d.id)).cloned() else {
                break;
            };
            out.push((d.id, d.len));
            self.free_ids.push(d.id);
            self.in_flight -= slots;
            for _ in 0..slots {
                self.used.0 += 1;
                if self.used.0 == self.size {
                    self.used = (0, !self.used.1);
                }
            }
        }
        out
    }

    /// The bytes the device wrote into the buffers of id `id` (`len` bytes over them).
    pub fn rx_bytes(&self, ram: &GuestRam, id: u16, len: u32) -> Vec<u8> {
        let mut out = Vec::new();
        let mut left = len as usize;
        for &(addr, l) in &self.owned[usize::from(id)].1 {
            let n = left.min(l as usize);
            out.extend(ram.read(addr, n));
            left -= n;
        }
        out
    }

    /// Collects received frames, joining mergeable buffers by `num_buffers`; each with its
    /// virtio-net header bytes apart.
    pub fn receive_with_hdr(
        &mut self,
        ram: &GuestRam,
        hdr_len: usize,
        mergeable: bool,
    ) -> Vec<(Vec<u8>, Vec<u8>)> {
        let used = self.reap(ram);
        join_rx_frames(used, hdr_len, mergeable, |id, len| {
            self.rx_bytes(ram, id, len)
        })
    }

    /// As [`PackedDriver::receive_with_hdr`], without the headers.
    pub fn receive(&mut self, ram: &GuestRam, hdr_len: usize, mergeable: bool) -> Vec<Vec<u8>> {
        frames_only(self.receive_with_hdr(ram, hdr_len, mergeable))
    }

    /// Sets the driver event suppression structure (`flags`, and `off_wrap` for DESC).
    pub fn set_driver_event(&self, ram: &GuestRam, flags: u16, off_wrap: u16) {
        ram.w16(self.driver_event, off_wrap);
        ram.w16(self.driver_event + 2, flags);
    }

    /// The device event suppression flags the backend wrote.
    pub fn device_event_flags(&self, ram: &GuestRam) -> u16 {
        ram.r16(self.device_event + 2)
    }
}

/// Joins reaped RX completions (`(id, len)` in ring order, split or packed) into frames:
/// with mergeable buffers a frame takes as many completions as its header's `num_buffers`
/// says. Each frame comes with its `hdr_len` virtio-net header bytes apart; `bytes(id, len)`
/// reads what the device wrote into one completion.
fn join_rx_frames(
    used: Vec<(u16, u32)>,
    hdr_len: usize,
    mergeable: bool,
    mut bytes: impl FnMut(u16, u32) -> Vec<u8>,
) -> Vec<(Vec<u8>, Vec<u8>)> {
    let mut frames = Vec::new();
    let mut it = used.into_iter();
    while let Some((id, len)) = it.next() {
        let mut b = bytes(id, len);
        if mergeable && b.len() >= 12 {
            let nb = u16::from_le_bytes([b[10], b[11]]);
            for (id, len) in it.by_ref().take(usize::from(nb.saturating_sub(1))) {
                b.extend(bytes(id, len));
            }
        }
        let frame = b.split_off(hdr_len.min(b.len()));
        frames.push((b, frame));
    }
    frames
}

/// The frames of [`join_rx_frames`], without their headers.
fn frames_only(frames: Vec<(Vec<u8>, Vec<u8>)>) -> Vec<Vec<u8>> {
    frames.into_iter().map(|(_, f)| f).collect()
}

/// A blocking protocol client over a unix stream.
#[derive(Debug)]
pub struct Frontend {
    /// The connection.
    pub stream: UnixStream,
}

impl Frontend {
    /// Wraps a connected stream.
    pub fn new(stream: UnixStream) -> Self {
        Self { stream }
    }

    /// Connects to a backend's socket.
    pub fn connect(path: &std::path::Path) -> std::io::Result<Self> {
        Ok(Self::new(UnixStream::connect(path)?))
    }

    /// Sends raw bytes with fds attached (hostile tests send anything they like).
    pub fn send_raw(&mut self, bytes: &[u8], fds: &[BorrowedFd<'_>]) -> std::io::Result<()> {
        let mut space = vec![std::mem::MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(8))];
        let mut ctl = SendAncillaryBuffer::new(&mut space);
        if !fds.is_empty() && !ctl.push(SendAncillaryMessage::ScmRights(fds)) {
            return Err(std::io::Error::other("too many fds"));
        }
        let iov = [std::io::IoSlice::new(bytes)];
        let n = rustix::net::sendmsg(&self.stream, &iov, &mut ctl, SendFlags::empty())?;
        if n < bytes.len() {
            self.stream.write_all(&bytes[n..])?;
        }
        Ok(())
    }

    /// Sends a request.
    pub fn send(
        &mut self,
        request: RequestCode,
        need_reply: bool,
        payload: &[u8],
        fds: &[BorrowedFd<'_>],
    ) -> std::io::Result<()> {
        self.send_raw(&codec::encode_request(request, need_reply, payload), fds)
    }

    /// Reads one reply: `(request, payload)`.
    pub fn recv_reply(&mut self) -> std::io::Result<(u32, Vec<u8>)> {
        let mut h = [0u8; HEADER_LEN];
        self.stream.read_exact(&mut h)?;
        let request = u32::from_le_bytes([h[0], h[1], h[2], h[3]]);
        let size = u32::from_le_bytes([h[8], h[9], h[10], h[11]]) as usize;
        let mut p = vec![0; size];
        self.stream.read_exact(&mut p)?;
        Ok((request, p))
    }

    /// Sends a request and reads its u64 reply.
    pub fn get_u64(&mut self, request: RequestCode) -> std::io::Result<u64> {
        self.send(request, false, &[], &[])?;
        let (_, p) = self.recv_reply()?;
        Ok(u64::from_le_bytes(
            p.get(..8).and_then(|s| s.try_into().ok()).unwrap_or([0; 8]),
        ))
    }

    /// Sends a request with NEED_REPLY and returns the REPLY_ACK value (0 = success).
    pub fn acked(
        &mut self,
        request: RequestCode,
        payload: &[u8],
        fds: &[BorrowedFd<'_>],
    ) -> std::io::Result<u64> {
        self.send(request, true, payload, fds)?;
        let (_, p) = self.recv_reply()?;
        Ok(u64::from_le_bytes(
            p.get(..8)
                .and_then(|s| s.try_into().ok())
                .unwrap_or([u8::MAX; 8]),
        ))
    }

    /// Negotiates `features` and all offered protocol features (REPLY_ACK included), sets the
    /// owner and sends the memory table. Returns the backend's offered features.
    pub fn negotiate(&mut self, ram: &GuestRam, features: u64) -> std::io::Result<u64> {
        let offered = self.get_u64(RequestCode::GetFeatures)?;
        self.send(RequestCode::SetOwner, false, &[], &[])?;
        self.send(
            RequestCode::SetFeatures,
            false,
            &(features & offered).to_le_bytes(),
            &[],
        )?;
        let pf = self.get_u64(RequestCode::GetProtocolFeatures)?;
        self.send(
            RequestCode::SetProtocolFeatures,
            false,
            &pf.to_le_bytes(),
            &[],
        )?;
        let ack = self.acked(
            RequestCode::SetMemTable,
            &codec::mem_table_payload(&[ram.region()]),
            &[ram.fd()],
        )?;
        if ack != 0 {
            return Err(std::io::Error::other("memory table refused"));
        }
        Ok(offered)
    }

    /// Configures and starts vring `index` over `q` (no kick or call fds: polled both ways).
    pub fn start_vring(
        &mut self,
        ram: &GuestRam,
        index: u32,
        q: &DriverQueue,
    ) -> std::io::Result<()> {
        for (c, p) in q.start_requests(ram, index) {
            if self.acked(c, &p, &[])? != 0 {
                return Err(std::io::Error::other(format!("{} refused", c.name())));
            }
        }
        Ok(())
    }
}
