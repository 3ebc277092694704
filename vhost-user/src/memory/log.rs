//! The dirty-page log of live migration: one bit per 4 KiB guest-physical page, in memory the
//! frontend shares with us (`VHOST_USER_SET_LOG_BASE` with `VHOST_USER_PROTOCOL_F_LOG_SHMFD`).
//!
//! While `VHOST_F_LOG_ALL` is negotiated the frontend copies guest memory to the destination
//! while the guest runs, and re-sends every page whose bit it finds set (clearing the bits as
//! it reads them). So every store the backend makes into guest memory (packet buffers, virtio-net
//! headers, used-ring entries and index) must set its page's bit, after the store: a bit set
//! before the data lands could be read and cleared, the page copied, and the new bytes never sent.
//!
//! Bits are set with an atomic `fetch_or` on the byte that holds them: the frontend clears them
//! concurrently, and several forwarding threads may log into one log. A log is never remapped in
//! place: the session maps a new one and hands it to queues it builds afterwards, and the old
//! mapping lives until the last queue using it is dropped (an `Arc`).
//!
//! Pages beyond the log are not logged (the frontend sizes the log for all of guest memory; a
//! guest address past it is not guest RAM). The file behind the log is registered with the
//! SIGBUS containment of [`super::fault`], like guest memory: a frontend that truncates it cannot
//! crash the process, and [`DirtyLog::faulted`] says so.

use std::os::fd::OwnedFd;
use std::ptr::NonNull;
use std::sync::atomic::{AtomicU8, Ordering};

use rustix::mm::{MapFlags, ProtFlags};

use super::fault;

/// Guest page size the log counts in (`VHOST_LOG_PAGE`).
pub const LOG_PAGE: u64 = 0x1000;
/// Largest log accepted: one bit per 4 KiB page, so 256 MiB covers 8 TiB of guest memory.
pub const MAX_LOG_SIZE: u64 = 256 << 20;

/// Why a log could not be mapped.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LogError {
    /// A zero or oversized log.
    #[error("log size {0} is not in 1..={MAX_LOG_SIZE}")]
    Size(u64),
    /// `offset + size` overflows or does not fit the file.
    #[error("log {offset:#x}+{size} does not fit its file of {file_size} bytes")]
    Range {
        offset: u64,
        size: u64,
        file_size: u64,
    },
    /// fstat or mmap failed.
    #[error("log {what} failed: {errno}")]
    Sys {
        what: &'static str,
        errno: rustix::io::Errno,
    },
    /// The SIGBUS containment could not take the mapping.
    #[error("log mapping could not be registered with the fault handler")]
    Register,
}

/// A mapped dirty-page log.
#[derive(Debug)]
pub struct DirtyLog {
    /// First byte of the log (`map_base + offset`).
    bits: NonNull<u8>,
    /// Bytes of log: pages `0..size * 8` can be logged.
    size: u64,
    map_base: NonNull<u8>,
    map_len: usize,
    registration: Option<fault::Registration>,
}

// SAFETY: the pointers refer to a MAP_SHARED mapping this value owns for its whole life; it is
// only ever accessed through atomic byte operations, which any thread may do.
unsafe impl Send for DirtyLog {}
// SAFETY: as above: no reference into the mapping is handed out, every access is atomic.
unsafe impl Sync for DirtyLog {}

impl DirtyLog {
    /// Maps `size` bytes of log at `offset` in `fd`. Refuses a zero or oversized log and one
    /// that does not fit its file (touching a page past the end of a shared file raises SIGBUS).
    pub fn map(fd: &OwnedFd, size: u64, offset: u64) -> Result<Self, LogError> {
        if size == 0 || size > MAX_LOG_SIZE {
            return Err(LogError::Size(size));
        }
        let stat = rustix::fs::fstat(fd).map_err(|errno| LogError::Sys {
            what: "fstat",
            errno,
        })?;
        let file_size = u64::try_from(stat.st_size).unwrap_or(0);
        let range = LogError::Range {
            offset,
            size,
            file_size,
        };
        let end = offset.checked_add(size).ok_or(range.clone())?;
        if end > file_size {
            return Err(range);
        }
        // Map from the page holding `offset` (mmap wants a page-aligned offset, the frontend's
        // need not be): a log deep in a large file maps only its own pages. A hugetlbfs file's
        // block size is its huge page size, which its mappings must be aligned to.
        let page = u64::try_from(stat.st_blksize)
            .ok()
            .filter(|b| b.is_power_of_two() && *b >= 4096)
            .unwrap_or(4096);
        let map_offset = offset - offset % page;
        let map_len = usize::try_from(end - map_offset).map_err(|_| range.clone())?;
        let off = usize::try_from(offset - map_offset).map_err(|_| range)?;
        // SAFETY: a fresh shared mapping of a file we were handed; the kernel picks an unused
        // range (null hint), so no Rust object aliases it.
        let ptr = unsafe {
            rustix::mm::mmap(
                std::ptr::null_mut(),
                map_len,
                ProtFlags::READ | ProtFlags::WRITE,
                MapFlags::SHARED,
                fd,
                map_offset,
            )
        }
        .map_err(|errno| LogError::Sys {
            what: "mmap",
            errno,
        })?;
        let map_base = NonNull::new(ptr.cast::<u8>()).ok_or(LogError::Sys {
            what: "mmap",
            errno: rustix::io::Errno::INVAL,
        })?;
        // SAFETY: off + size == end - map_offset == map_len, so the pointer stays inside the
        // mapping.
        let bits = unsafe { map_base.add(off) };
        let mut log = DirtyLog {
            bits,
            size,
            map_base,
            map_len,
            registration: None,
        };
        // On failure `log` drops and unmaps.
        log.registration = Some(
            fault::register(&[(map_base.as_ptr() as usize, map_len)])
                .map_err(|_| LogError::Register)?,
        );
        Ok(log)
    }

    /// Bytes of log.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// Whether the frontend took the log's pages away under us (the bits now go to private
    /// zeros it never reads: the migration it runs would miss pages).
    pub fn faulted(&self) -> bool {
        self.registration
            .as_ref()
            .is_some_and(|r| r.fault().is_some())
    }

    #[inline]
    fn byte(&self, i: u64) -> Option<&AtomicU8> {
        if i >= self.size {
            return None;
        }
        // SAFETY: i < size, inside the mapping, which lives as long as `self`; AtomicU8 has
        // u8's layout and alignment, and the byte is only accessed atomically here (the
        // frontend uses atomics on its side too).
        Some(unsafe { &*self.bits.as_ptr().add(i as usize).cast::<AtomicU8>() })
    }

    /// Marks every page `[gpa, gpa+len)` touches as dirty (nothing for `len == 0`).
    #[inline]
    pub fn mark(&self, gpa: u64, len: u64) {
        if len == 0 {
            return;
        }
        let first = gpa / LOG_PAGE;
        let last = gpa.saturating_add(len - 1) / LOG_PAGE;
        let mut page = first;
        while page <= last {
            let Some(b) = self.byte(page / 8) else {
                return;
            };
            // All the range's pages in this byte at once.
            let hi = last.min(page | 7);
            let lo_bit = page % 8;
            let n = hi - page + 1;
            let mask = (((1u16 << n) - 1) << lo_bit) as u8;
            // Release: the data stores before this are visible to whoever sees the bit.
            b.fetch_or(mask, Ordering::Release);
            page = hi + 1;
        }
    }

    /// Whether page `page` is marked (tests and diagnostics).
    pub fn is_dirty(&self, page: u64) -> bool {
        self.byte(page / 8)
            .is_some_and(|b| b.load(Ordering::Acquire) & (1 << (page % 8)) != 0)
    }

    /// Pages marked, counted over the whole log (tests and diagnostics).
    pub fn dirty_pages(&self) -> u64 {
        (0..self.size)
            .filter_map(|i| self.byte(i))
            .map(|b| u64::from(b.load(Ordering::Relaxed).count_ones()))
            .sum()
    }
}

impl Drop for DirtyLog {
    fn drop(&mut self) {
        drop(self.registration.take());
        // SAFETY: map_base/map_len are what mmap returned; nothing refers to the mapping any
        // more (no reference outlives a method call, and we are being dropped).
        if let Err(e) = unsafe { rustix::mm::munmap(self.map_base.as_ptr().cast(), self.map_len) } {
            tracing::error!(len = self.map_len, %e, "munmap of the dirty log failed");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn memfd(len: u64) -> OwnedFd {
        let fd = rustix::fs::memfd_create("log", rustix::fs::MemfdFlags::CLOEXEC).unwrap();
        rustix::fs::ftruncate(&fd, len).unwrap();
        fd
    }

    #[test]
    fn marks_each_page_a_range_touches_and_nothing_else() {
        let fd = memfd(4096);
        let log = DirtyLog::map(&fd, 64, 16).unwrap();
        log.mark(0x1000, 1);
        log.mark(0x2fff, 2); // pages 2 and 3
        log.mark(0x10_000, 0x8001); // pages 16..=24, crossing bytes
        let want: Vec<u64> = [1, 2, 3].into_iter().chain(16..=24).collect();
        for p in 0..64 * 8 {
            assert_eq!(log.is_dirty(p), want.contains(&p), "page {p}");
        }
        assert_eq!(log.dirty_pages(), want.len() as u64);
        // Beyond the log: ignored, no fault.
        log.mark(64 * 8 * LOG_PAGE, 4096);
        log.mark(u64::MAX - 10, 100);
        assert_eq!(log.dirty_pages(), want.len() as u64);
        // The bits are in the shared file at the offset the frontend gave.
        let mut b = [0u8; 1];
        rustix::io::pread(&fd, &mut b, 16).unwrap();
        assert_eq!(b[0], 0b1110);
    }

    #[test]
    fn a_log_deep_in_its_file_maps_from_its_own_page() {
        // 64 MiB file, log at an unaligned offset near its end: only the log's pages are mapped.
        let size = 64 << 20;
        let fd = memfd(size);
        let offset = size - 8192 + 24;
        let log = DirtyLog::map(&fd, 100, offset).unwrap();
        assert!(log.map_len <= 8192, "mapped {} bytes", log.map_len);
        log.mark(9 * LOG_PAGE, 1);
        let mut b = [0u8; 2];
        rustix::io::pread(&fd, &mut b, offset).unwrap();
        assert_eq!(b, [0, 0b10]);
    }

    #[test]
    fn refuses_logs_that_do_not_fit_their_file() {
        let fd = memfd(4096);
        assert_eq!(DirtyLog::map(&fd, 0, 0).unwrap_err(), LogError::Size(0));
        assert!(matches!(
            DirtyLog::map(&fd, 4096, 1),
            Err(LogError::Range { .. })
        ));
        assert!(matches!(
            DirtyLog::map(&fd, 16, 8192),
            Err(LogError::Range { .. })
        ));
        assert!(matches!(
            DirtyLog::map(&fd, 16, u64::MAX - 4),
            Err(LogError::Range { .. })
        ));
        assert!(matches!(
            DirtyLog::map(&fd, MAX_LOG_SIZE + 1, 0),
            Err(LogError::Size(_))
        ));
        assert!(DirtyLog::map(&fd, 4096, 0).is_ok());
    }
}
