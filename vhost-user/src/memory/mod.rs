//! Guest memory: the frontend's regions mapped `MAP_SHARED`, and the only place in this crate that
//! touches raw pointers.
//!
//! Everything the frontend declares is untrusted: sizes are checked against the file (`fstat`)
//! before mapping, because touching a page past the end of a shared file raises SIGBUS; address
//! arithmetic is done with checked `u64` operations; overlapping regions are refused. The rest of
//! the crate reaches guest memory only through the bounds-checked accessors here: byte copies
//! ([`GuestMemory::read`], [`GuestMemory::write`], [`copy_guest_to_guest`]) and [`RingArea`], a
//! validated window over a virtqueue ring with volatile and atomic accessors for the fields the
//! guest writes concurrently.
//!
//! Lifetime: a [`GuestMemory`] is unmapped when its last `Arc` is dropped. Every [`RingArea`] and
//! every virtqueue hold such an `Arc`, so the mapping stays valid for as long as a forwarding
//! thread can still touch it, whatever the control thread does meanwhile.
//!
//! A frontend that shrinks its file after we mapped it makes the next access fault; [`fault`]
//! contains that to the guest's own memory: the access completes on zeros, and
//! [`GuestMemory::fault`] tells the data path to stop.
#![allow(unsafe_code)]

pub mod fault;
pub mod log;

use std::os::fd::OwnedFd;
use std::ptr::NonNull;
use std::sync::atomic::{AtomicU16, Ordering};
use std::sync::Arc;

use rustix::mm::{MapFlags, ProtFlags};

use crate::error::MemoryError;
pub use log::DirtyLog;

/// The most regions a memory table may hold (`VHOST_MEMORY_BASELINE_NREGIONS`).
pub const MAX_REGIONS: usize = 8;

/// One region as the frontend declares it in `SET_MEM_TABLE`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct RegionSpec {
    /// Guest-physical address of the region's first byte.
    pub guest_phys_addr: u64,
    /// Length of the region in bytes.
    pub memory_size: u64,
    /// The frontend's own virtual address of the region's first byte (ring addresses use it).
    pub userspace_addr: u64,
    /// Where the region starts inside the shared file.
    pub mmap_offset: u64,
}

/// One mapped region.
#[derive(Debug)]
struct MappedRegion {
    gpa: u64,
    size: u64,
    uva: u64,
    /// Host address of the byte at `gpa`.
    host: NonNull<u8>,
    map_base: NonNull<u8>,
    map_len: usize,
}

/// The mapped regions of one memory table; unmapped when the last [`GuestMemory`] view of it
/// goes.
#[derive(Debug)]
struct Table {
    regions: Vec<MappedRegion>,
    /// The mappings as the fault handler knows them; `None` only while `map` builds the table
    /// and during `drop` (unregistered before unmapping).
    registration: Option<fault::Registration>,
}

/// The frontend's memory table, mapped into this process, and the dirty log its writes go to
/// while the frontend migrates the guest.
///
/// The log is fixed for the life of a value: a session that starts or stops logging builds a
/// new view over the same mappings ([`GuestMemory::with_log`]) and hands it to queues built
/// afterwards, so the data path never sees the log change under it and needs no lock.
#[derive(Debug)]
pub struct GuestMemory {
    table: Arc<Table>,
    log: Option<Arc<DirtyLog>>,
}

/// A fault in guest memory: the frontend took pages away under us (truncated, shrank or
/// punched a hole in the file behind a region).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GuestFault {
    /// Guest-physical address of the first access that faulted (the region's start if the
    /// fault was outside the region proper).
    pub gpa: u64,
}

// SAFETY: the raw pointers refer to MAP_SHARED mappings owned by this value for its whole life;
// all access goes through methods that bounds-check and copy, so sharing between threads is no
// different from sharing the underlying file.
unsafe impl Send for Table {}
// SAFETY: as above; no method hands out references into guest memory, only copies, volatile
// accesses and atomics.
unsafe impl Sync for Table {}

impl GuestMemory {
    /// Maps the regions of a memory table, one fd per region (fds are closed once mapped).
    ///
    /// Refuses, mapping nothing, when: the counts differ, a region is empty, any address range
    /// overflows `u64`, guest-physical or frontend-virtual ranges overlap, or a file is shorter
    /// than `mmap_offset + memory_size`.
    pub fn map(specs: &[RegionSpec], fds: Vec<OwnedFd>) -> Result<Self, MemoryError> {
        if specs.is_empty() || specs.len() > MAX_REGIONS {
            return Err(MemoryError::RegionCount(specs.len()));
        }
        if specs.len() != fds.len() {
            return Err(MemoryError::FdCount {
                regions: specs.len(),
                fds: fds.len(),
            });
        }
        for (i, s) in specs.iter().enumerate() {
            if s.memory_size == 0 {
                return Err(MemoryError::EmptyRegion(i));
            }
            let overflow = s.guest_phys_addr.checked_add(s.memory_size).is_none()
                || s.userspace_addr.checked_add(s.memory_size).is_none()
                || s.mmap_offset.checked_add(s.memory_size).is_none();
            if overflow {
                return Err(MemoryError::Overflow {
                    region: i,
                    spec: *s,
                });
            }
            for (j, o) in specs.iter().enumerate().take(i) {
                let gpa_overlap = s.guest_phys_addr < o.guest_phys_addr + o.memory_size
                    && o.guest_phys_addr < s.guest_phys_addr + s.memory_size;
                let uva_overlap = s.userspace_addr < o.userspace_addr + o.memory_size
                    && o.userspace_addr < s.userspace_addr + s.memory_size;
                if gpa_overlap || uva_overlap {
                    return Err(MemoryError::Overlap { a: j, b: i });
                }
            }
        }
        // On any error below, `mem` drops and unmaps what was already mapped.
        let mut mem = Table {
            regions: Vec::with_capacity(specs.len()),
            registration: None,
        };
        for (i, (s, fd)) in specs.iter().zip(fds).enumerate() {
            let stat = rustix::fs::fstat(&fd).map_err(|e| MemoryError::Stat {
                region: i,
                errno: e,
            })?;
            let file_size = u64::try_from(stat.st_size).unwrap_or(0);
            let needed = s.mmap_offset + s.memory_size;
            if needed > file_size {
                return Err(MemoryError::FileTooSmall {
                    region: i,
                    needed,
                    file_size,
                });
            }
            // Map from offset 0 (mmap wants page-aligned offsets, the frontend's need not be) and
            // round the length up to the file's block size: hugetlbfs mappings must be whole pages.
            let blk = u64::try_from(stat.st_blksize).unwrap_or(4096).max(4096);
            let map_len = if blk.is_power_of_two() {
                needed.div_ceil(blk) * blk
            } else {
                needed
            };
            let map_len = usize::try_from(map_len.min(file_size.max(needed))).map_err(|_| {
                MemoryError::Overflow {
                    region: i,
                    spec: *s,
                }
            })?;
            let off = usize::try_from(s.mmap_offset).map_err(|_| MemoryError::Overflow {
                region: i,
                spec: *s,
            })?;
            // SAFETY: a fresh shared mapping of a file we were handed; no existing Rust object
            // aliases it (we pass a null hint so the kernel picks an unused range).
            let ptr = unsafe {
                rustix::mm::mmap(
                    std::ptr::null_mut(),
                    map_len,
                    ProtFlags::READ | ProtFlags::WRITE,
                    MapFlags::SHARED,
                    &fd,
                    0,
                )
            }
            .map_err(|e| MemoryError::Mmap {
                region: i,
                len: map_len,
                errno: e,
            })?;
            let map_base = NonNull::new(ptr.cast::<u8>()).ok_or(MemoryError::Mmap {
                region: i,
                len: map_len,
                errno: rustix::io::Errno::INVAL,
            })?;
            // SAFETY: off + memory_size <= needed <= map_len, so the result stays inside the
            // mapping just created.
            let host = unsafe { map_base.add(off) };
            mem.regions.push(MappedRegion {
                gpa: s.guest_phys_addr,
                size: s.memory_size,
                uva: s.userspace_addr,
                host,
                map_base,
                map_len,
            });
        }
        mem.regions.sort_by_key(|r| r.gpa);
        let ranges: Vec<(usize, usize)> = mem
            .regions
            .iter()
            .map(|r| (r.map_base.as_ptr() as usize, r.map_len))
            .collect();
        mem.registration = Some(fault::register(&ranges).map_err(|e| match e {
            fault::RegisterError::Full => MemoryError::TooManyTables(fault::MAX_TABLES),
            fault::RegisterError::NoHandler => MemoryError::NoFaultHandler,
        })?);
        Ok(GuestMemory {
            table: Arc::new(mem),
            log: None,
        })
    }

    /// A view of the same mapped memory whose writes are logged to `log` (or, with `None`, not
    /// logged). Cheap: the mappings are shared, not mapped again.
    pub fn with_log(&self, log: Option<Arc<DirtyLog>>) -> GuestMemory {
        GuestMemory {
            table: Arc::clone(&self.table),
            log,
        }
    }

    /// The dirty log this view's writes are recorded in, if logging is on.
    pub fn log(&self) -> Option<&Arc<DirtyLog>> {
        self.log.as_ref()
    }

    /// Records `[gpa, gpa+len)` as written, if this view logs. Every write helper here calls it
    /// after its store, so the page is marked only once its new contents are in place.
    #[inline]
    pub fn log_write(&self, gpa: u64, len: u64) {
        if let Some(l) = &self.log {
            l.mark(gpa, len);
        }
    }

    /// The first fault in this table's memory, if the frontend took pages away under us. Once
    /// set it stays set: the faulting region now reads as zeros, so nothing in it may be used.
    pub fn fault(&self) -> Option<GuestFault> {
        let addr = self.table.registration.as_ref()?.fault()?;
        let r = self.table.regions.iter().find(|r| {
            let base = r.map_base.as_ptr() as usize;
            addr.wrapping_sub(base) < r.map_len
        })?;
        let host = r.host.as_ptr() as usize;
        let gpa = if addr >= host && ((addr - host) as u64) < r.size {
            r.gpa + (addr - host) as u64
        } else {
            r.gpa
        };
        Some(GuestFault { gpa })
    }

    /// Whether any access to this memory has faulted: one load, for the data path's bursts.
    #[inline]
    pub fn faulted(&self) -> bool {
        self.table
            .registration
            .as_ref()
            .is_some_and(|r| r.fault().is_some())
    }

    /// Number of mapped regions.
    pub fn region_count(&self) -> usize {
        self.table.regions.len()
    }

    /// Translates a frontend-virtual range to guest-physical; the range must lie in one region.
    pub fn uva_to_gpa(&self, uva: u64, len: u64) -> Result<u64, MemoryError> {
        let end = uva
            .checked_add(len)
            .ok_or(MemoryError::OutOfRange { addr: uva, len })?;
        self.table
            .regions
            .iter()
            .find(|r| uva >= r.uva && end <= r.uva + r.size)
            .map(|r| r.gpa + (uva - r.uva))
            .ok_or(MemoryError::OutOfRange { addr: uva, len })
    }

    /// The region containing `gpa`, and how many bytes remain in it from there.
    #[inline]
    fn span(&self, gpa: u64) -> Option<(NonNull<u8>, u64)> {
        for r in &self.table.regions {
            if gpa >= r.gpa && gpa - r.gpa < r.size {
                let off = gpa - r.gpa;
                // SAFETY: off < size, so the pointer stays inside this region's mapping.
                let p = unsafe { r.host.add(off as usize) };
                return Some((p, r.size - off));
            }
        }
        None
    }

    /// Checks that `[gpa, gpa+len)` is fully mapped (possibly across adjacent regions).
    pub fn check_range(&self, gpa: u64, len: u64) -> Result<(), MemoryError> {
        gpa.checked_add(len)
            .ok_or(MemoryError::OutOfRange { addr: gpa, len })?;
        let (mut at, mut left) = (gpa, len);
        while left > 0 {
            let (_, avail) = self
                .span(at)
                .ok_or(MemoryError::OutOfRange { addr: gpa, len })?;
            let n = avail.min(left);
            at += n;
            left -= n;
        }
        Ok(())
    }

    /// Copies guest bytes at `gpa` into `buf`; an access straddling two adjacent regions is split.
    pub fn read(&self, gpa: u64, buf: &mut [u8]) -> Result<(), MemoryError> {
        let len = buf.len() as u64;
        self.check_range(gpa, len)?;
        let mut done = 0usize;
        while done < buf.len() {
            let (p, avail) = self
                .span(gpa + done as u64)
                .ok_or(MemoryError::OutOfRange { addr: gpa, len })?;
            let n = (avail.min((buf.len() - done) as u64)) as usize;
            // SAFETY: `p` points at `avail >= n` mapped bytes; `buf[done..done+n]` is ours. The
            // guest may write the source concurrently: we copy raw bytes and treat them as
            // untrusted data, never as Rust values with invariants.
            unsafe { std::ptr::copy_nonoverlapping(p.as_ptr(), buf.as_mut_ptr().add(done), n) };
            done += n;
        }
        Ok(())
    }

    /// Copies `data` into guest memory at `gpa`, split across adjacent regions when needed.
    pub fn write(&self, gpa: u64, data: &[u8]) -> Result<(), MemoryError> {
        let len = data.len() as u64;
        self.check_range(gpa, len)?;
        let mut done = 0usize;
        while done < data.len() {
            let (p, avail) = self
                .span(gpa + done as u64)
                .ok_or(MemoryError::OutOfRange { addr: gpa, len })?;
            let n = (avail.min((data.len() - done) as u64)) as usize;
            // SAFETY: `p` points at `avail >= n` mapped, writable bytes that no Rust reference
            // aliases (guest memory is only ever reached through raw copies).
            unsafe { std::ptr::copy_nonoverlapping(data.as_ptr().add(done), p.as_ptr(), n) };
            done += n;
        }
        self.log_write(gpa, len);
        Ok(())
    }

    /// Hints the CPU to start loading the cache lines of `[gpa, gpa+len)` for reading, so a
    /// later copy finds them close instead of taking each miss in turn. Purely advisory: a range
    /// that is not mapped is ignored, one that leaves its region is cut at the region's end, and
    /// at most [`PREFETCH_MAX`] bytes are hinted (the hardware prefetcher follows longer streams).
    #[inline]
    pub fn prefetch(&self, gpa: u64, len: u64) {
        self.hint(gpa, len, prefetch_line_read);
    }

    /// As [`GuestMemory::prefetch`], with intent to write: the lines are asked for in exclusive
    /// state (`prefetchw`), so the store that follows does not wait for the other core's copy to
    /// be invalidated.
    #[inline]
    pub fn prefetch_write(&self, gpa: u64, len: u64) {
        self.hint(gpa, len, prefetch_line_write);
    }

    #[inline]
    fn hint<F: Fn(*const u8)>(&self, gpa: u64, len: u64, line: F) {
        let Some((p, avail)) = self.span(gpa) else {
            return;
        };
        let len = len.min(avail).min(PREFETCH_MAX) as usize;
        for off in line_offsets(p.as_ptr() as usize, len) {
            // SAFETY: off < len <= avail, the bytes mapped from `p` on, so the pointer stays
            // inside this region's mapping.
            line(unsafe { p.as_ptr().add(off) });
        }
    }

    /// Evicts the cache lines of `[gpa, gpa+len)` from every cache (`clflush`), so the next
    /// access misses as a cold one does: benchmarks use it to model buffers another core just
    /// wrote. Unmapped parts are ignored.
    #[cfg(feature = "test-frontend")]
    pub fn evict(&self, gpa: u64, len: u64) {
        let (mut at, end) = (gpa, gpa.saturating_add(len));
        while at < end {
            let Some((p, avail)) = self.span(at) else {
                return;
            };
            let n = avail.min(end - at) as usize;
            for off in line_offsets(p.as_ptr() as usize, n) {
                // SAFETY: off < n <= avail, inside this region's mapping.
                flush_line(unsafe { p.as_ptr().add(off) });
            }
            at += n as u64;
        }
    }

    /// A validated window over `len` bytes at `gpa` for ring access. The window must lie inside
    /// one region and start on an `align`-byte boundary of the host mapping.
    pub fn ring_area(
        self: &Arc<Self>,
        gpa: u64,
        len: u64,
        align: u64,
    ) -> Result<RingArea, MemoryError> {
        let (p, avail) = self
            .span(gpa)
            .ok_or(MemoryError::OutOfRange { addr: gpa, len })?;
        if avail < len {
            return Err(MemoryError::OutOfRange { addr: gpa, len });
        }
        if !align.is_power_of_two()
            || (p.as_ptr() as usize) & (align as usize - 1) != 0
            || gpa & (align - 1) != 0
        {
            return Err(MemoryError::Misaligned { addr: gpa, align });
        }
        Ok(RingArea {
            mem: Arc::clone(self),
            ptr: p,
            len: len as usize,
            log_gpa: gpa,
        })
    }
}

impl Drop for Table {
    fn drop(&mut self) {
        // The fault handler must forget the ranges before they are unmapped (and reused).
        drop(self.registration.take());
        for r in &self.regions {
            // SAFETY: map_base/map_len are exactly what mmap returned in `map`; nothing refers to
            // the mapping any more (we are the last owner and all accessors copy).
            if let Err(e) = unsafe { rustix::mm::munmap(r.map_base.as_ptr().cast(), r.map_len) } {
                tracing::error!(gpa = r.gpa, len = r.map_len, %e, "munmap of guest region failed");
            }
        }
    }
}

/// Cache-line size the prefetch hints step by (every x86_64 part this runs on).
const CACHE_LINE: usize = 64;
/// The most bytes one prefetch hint covers: the header and the start of a frame. Longer buffers
/// are sequential streams the hardware prefetcher picks up on its own.
pub const PREFETCH_MAX: u64 = 256;

/// Offsets into `[start, start+len)` (an address range), one inside each cache line the range
/// touches: the first is 0, the rest are line starts.
#[inline]
fn line_offsets(start: usize, len: usize) -> LineOffsets {
    LineOffsets { start, len, off: 0 }
}

/// Iterator behind [`line_offsets`]: a plain counter, cheap enough to run per packet.
struct LineOffsets {
    start: usize,
    len: usize,
    off: usize,
}

impl Iterator for LineOffsets {
    type Item = usize;

    #[inline(always)]
    fn next(&mut self) -> Option<usize> {
        if self.off >= self.len {
            return None;
        }
        let at = self.off;
        // The next line starts where this address's line ends.
        self.off = ((self.start + at) | (CACHE_LINE - 1)) + 1 - self.start;
        Some(at)
    }
}

#[cfg(target_arch = "x86_64")]
#[inline(always)]
fn prefetch_line_read(p: *const u8) {
    // SAFETY: prefetcht0 is a hint: it never faults, whatever the address, and SSE (which
    // `_mm_prefetch` needs) is part of the x86_64 baseline. Callers pass mapped addresses anyway.
    unsafe { std::arch::x86_64::_mm_prefetch::<{ std::arch::x86_64::_MM_HINT_T0 }>(p.cast()) };
}

#[cfg(target_arch = "x86_64")]
#[inline(always)]
fn prefetch_line_write(p: *const u8) {
    // SAFETY: prefetchw is a hint that never faults; every AMD64 part implements it and Intel
    // parts before Broadwell decode it as a NOP. It changes no register or memory the program
    // can observe, and callers pass mapped addresses anyway.
    unsafe {
        std::arch::asm!("prefetchw [{p}]", p = in(reg) p, options(nostack, preserves_flags, readonly))
    };
}

#[cfg(all(target_arch = "x86_64", feature = "test-frontend"))]
fn flush_line(p: *const u8) {
    // SAFETY: clflush on a mapped address (callers guarantee it) only writes the line back and
    // evicts it; the memory's contents do not change. SSE2 is part of the x86_64 baseline.
    unsafe { std::arch::x86_64::_mm_clflush(p) };
}

#[cfg(not(target_arch = "x86_64"))]
#[inline(always)]
fn prefetch_line_read(_: *const u8) {}

#[cfg(not(target_arch = "x86_64"))]
#[inline(always)]
fn prefetch_line_write(_: *const u8) {}

#[cfg(all(not(target_arch = "x86_64"), feature = "test-frontend"))]
fn flush_line(_: *const u8) {}

/// Copies `len` bytes from one guest's memory straight into another's (the one-copy forwarding
/// path between two vhost-user devices). Both ranges are bounds-checked first.
pub fn copy_guest_to_guest(
    src: &GuestMemory,
    src_gpa: u64,
    dst: &GuestMemory,
    dst_gpa: u64,
    len: u64,
) -> Result<(), MemoryError> {
    src.check_range(src_gpa, len)?;
    dst.check_range(dst_gpa, len)?;
    let mut done = 0u64;
    while done < len {
        let (sp, savail) = src
            .span(src_gpa + done)
            .ok_or(MemoryError::OutOfRange { addr: src_gpa, len })?;
        let (dp, davail) = dst
            .span(dst_gpa + done)
            .ok_or(MemoryError::OutOfRange { addr: dst_gpa, len })?;
        let n = savail.min(davail).min(len - done) as usize;
        // SAFETY: both pointers have at least `n` mapped bytes. The two may be the same guest
        // (a pod looping to itself), so use `copy`, which tolerates overlap.
        unsafe { std::ptr::copy(sp.as_ptr(), dp.as_ptr(), n) };
        done += n as u64;
    }
    dst.log_write(dst_gpa, len);
    Ok(())
}

/// A bounds-checked window over a virtqueue ring (descriptor table, avail or used ring) inside
/// one mapped region. Keeps the mapping alive.
///
/// Stores through the window are recorded in the memory's dirty log (when it has one) at
/// `log_gpa + offset`: the window's own guest-physical address unless the frontend named
/// another log address for the ring ([`RingArea::set_log_addr`]).
#[derive(Debug)]
pub struct RingArea {
    mem: Arc<GuestMemory>,
    ptr: NonNull<u8>,
    len: usize,
    log_gpa: u64,
}

// SAFETY: the window points into a shared mapping kept alive by `mem`; all access is by copy,
// volatile or atomic operations.
unsafe impl Send for RingArea {}

impl RingArea {
    /// Logs stores at `log_gpa + offset` instead of at the window's own address: the split
    /// used ring's `log_guest_addr` when the frontend sets `VHOST_VRING_F_LOG`.
    pub fn set_log_addr(&mut self, log_gpa: u64) {
        self.log_gpa = log_gpa;
    }

    #[inline]
    fn logged(&self, off: usize, size: usize) {
        if let Some(l) = &self.mem.log {
            l.mark(self.log_gpa.wrapping_add(off as u64), size as u64);
        }
    }

    /// Size of the window in bytes.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether the window is empty.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    #[inline]
    fn at(&self, off: usize, size: usize) -> Option<*mut u8> {
        let end = off.checked_add(size)?;
        // `size` is 2, 4 or 8.
        if end > self.len || off & (size - 1) != 0 {
            return None;
        }
        // SAFETY: off + size <= len, inside the window; the window base is aligned to at least
        // the ring alignment, and `off` is a multiple of `size`, so the access is aligned.
        Some(unsafe { self.ptr.as_ptr().add(off) })
    }

    /// Hints the CPU to load the lines of `[off, off+len)` of the window (cut at its end) with
    /// intent to write: the used-ring entries of a burst, about to be filled.
    #[inline]
    pub fn prefetch_write(&self, off: usize, len: usize) {
        self.hint(off, len, prefetch_line_write);
    }

    #[inline]
    fn hint<F: Fn(*const u8)>(&self, off: usize, len: usize, line: F) {
        if off >= self.len {
            return;
        }
        let len = len.min(self.len - off);
        for at in line_offsets(self.ptr.as_ptr() as usize + off, len) {
            // SAFETY: off + at < off + len <= self.len, inside the window.
            line(unsafe { self.ptr.as_ptr().add(off + at) });
        }
    }

    /// Volatile read of a little-endian u16 the guest may change concurrently.
    #[inline]
    pub fn load_u16(&self, off: usize) -> Option<u16> {
        let p = self.at(off, 2)?;
        // SAFETY: `p` is in bounds and 2-byte aligned (see `at`).
        Some(u16::from_le(unsafe {
            std::ptr::read_volatile(p.cast::<u16>())
        }))
    }

    /// Acquire load of a u16 index the guest publishes (`avail->idx`): reads of the entries it
    /// covers happen after it.
    #[inline]
    pub fn load_u16_acquire(&self, off: usize) -> Option<u16> {
        let p = self.at(off, 2)?;
        // SAFETY: `p` is in bounds and 2-byte aligned; AtomicU16 has u16's layout, and the
        // location is only ever accessed atomically or by the other process.
        let a = unsafe { &*(p.cast::<AtomicU16>()) };
        Some(u16::from_le(a.load(Ordering::Acquire)))
    }

    /// Volatile store of a little-endian u16.
    #[inline]
    pub fn store_u16(&self, off: usize, v: u16) -> Option<()> {
        let p = self.at(off, 2)?;
        // SAFETY: `p` is in bounds and 2-byte aligned.
        unsafe { std::ptr::write_volatile(p.cast::<u16>(), v.to_le()) };
        self.logged(off, 2);
        Some(())
    }

    /// Release store of a u16 index the device publishes (`used->idx`): the entries written
    /// before it are visible to the guest before the new index is.
    #[inline]
    pub fn store_u16_release(&self, off: usize, v: u16) -> Option<()> {
        let p = self.at(off, 2)?;
        // SAFETY: as `load_u16_acquire`.
        let a = unsafe { &*(p.cast::<AtomicU16>()) };
        a.store(v.to_le(), Ordering::Release);
        self.logged(off, 2);
        Some(())
    }

    /// Volatile store of a little-endian u32.
    #[inline]
    pub fn store_u32(&self, off: usize, v: u32) -> Option<()> {
        let p = self.at(off, 4)?;
        // SAFETY: `p` is in bounds and 4-byte aligned.
        unsafe { std::ptr::write_volatile(p.cast::<u32>(), v.to_le()) };
        self.logged(off, 4);
        Some(())
    }

    /// Volatile read of a little-endian u32.
    #[inline]
    pub fn load_u32(&self, off: usize) -> Option<u32> {
        let p = self.at(off, 4)?;
        // SAFETY: `p` is in bounds and 4-byte aligned.
        Some(u32::from_le(unsafe {
            std::ptr::read_volatile(p.cast::<u32>())
        }))
    }

    /// Volatile read of a little-endian u64.
    #[inline]
    pub fn load_u64(&self, off: usize) -> Option<u64> {
        let p = self.at(off, 8)?;
        // SAFETY: `p` is in bounds and 8-byte aligned.
        Some(u64::from_le(unsafe {
            std::ptr::read_volatile(p.cast::<u64>())
        }))
    }
}

#[cfg(test)]
mod tests;
