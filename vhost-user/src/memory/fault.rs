//! Containing guest-memory faults: a frontend that shrinks its memory file cannot kill us.
//!
//! A frontend hands over its memory as files (memfd, hugetlbfs) and may truncate, shrink or punch
//! holes in them at any time after we mapped them. The next access to a page that no longer
//! exists raises SIGBUS, which by default kills the whole process, and with it every other
//! pod's network. The size check at map time cannot prevent it, and sealing cannot be required
//! (DPDK virtio-user and QEMU hand over unsealed files).
//!
//! So every mapping of guest memory is registered here, and a process-wide SIGBUS handler looks
//! the faulting address up. When it lies in a registered mapping, the handler replaces that
//! whole mapping, in place, with private anonymous memory (one `mmap(MAP_FIXED)`), records the
//! fault in the memory table's slot and returns: the access that faulted is executed again and
//! now reads zeros, or writes into memory no one else sees. Whatever instruction touched the
//! page (a `memcpy` of a frame, a volatile ring load, an atomic index) needs no change and the
//! fast path pays nothing for the protection. The data path checks
//! [`GuestMemory::faulted`](super::GuestMemory::faulted) once per burst and stops the queues;
//! the vhost thread drops the frontend. A fresh connection maps fresh memory.
//!
//! Any other SIGBUS is passed to the handler that was installed before ours (Rust's runtime
//! installs one that reports stack overflows and otherwise restores the default action), so a
//! real bug still ends the process with SIGBUS as before.
//!
//! What the handler relies on, and why it is sound:
//! - It only calls `mmap`, `sigaction` and atomic loads and stores: raw system calls and plain
//!   instructions, async-signal-safe; it takes no lock and allocates nothing.
//! - A mapping is registered after `mmap` returns and before any access to it, and unregistered
//!   before `munmap`; its accessors hold the [`super::GuestMemory`] (through an `Arc`) for the
//!   whole access. So while an access faults, its mapping is registered and stays mapped: the
//!   handler never replaces memory that is not guest memory we own, and no two live registered
//!   mappings overlap (the kernel does not hand out one address range twice).
//! - Each slot is guarded by a sequence counter (odd while it is written); the handler skips a
//!   slot that changes under it. A slot in transition never holds the faulting mapping (see the
//!   previous point), so skipping it loses nothing.
//! - Replacing the mapping keeps its address range, so every pointer into it stays valid; the
//!   contents become zeros, which the data path already treats as untrusted guest bytes.

use std::sync::atomic::{fence, AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Once, OnceLock};

use super::MAX_REGIONS;

/// Memory tables that may be mapped at once (each vhost-user device holds one, briefly two while
/// a new table replaces the old one).
pub const MAX_TABLES: usize = 4096;

/// One mapped memory table: the address ranges of its region mappings, and its fault.
struct Slot {
    /// Claimed by a live table.
    used: AtomicBool,
    /// Even: `ranges` is stable; odd: being written.
    seq: AtomicU64,
    /// `(start, len)` of each region's mapping; `len == 0`: no region.
    ranges: [[AtomicUsize; 2]; MAX_REGIONS],
    /// The first faulting address (0: none).
    fault: AtomicUsize,
}

impl Slot {
    const fn new() -> Self {
        Slot {
            used: AtomicBool::new(false),
            seq: AtomicU64::new(0),
            ranges: [const { [AtomicUsize::new(0), AtomicUsize::new(0)] }; MAX_REGIONS],
            fault: AtomicUsize::new(0),
        }
    }
}

static SLOTS: [Slot; MAX_TABLES] = [const { Slot::new() }; MAX_TABLES];
/// One past the highest slot ever claimed: the handler scans no further.
static HIGH_WATER: AtomicUsize = AtomicUsize::new(0);
/// The SIGBUS action that was installed before ours.
static PREVIOUS: OnceLock<PreviousAction> = OnceLock::new();
static INSTALL: Once = Once::new();
static INSTALLED: AtomicBool = AtomicBool::new(false);

struct PreviousAction(libc::sigaction);

/// A registered memory table; unregisters on drop. Drop it before unmapping.
#[derive(Debug)]
pub struct Registration {
    slot: usize,
}

/// Why a table could not be registered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RegisterError {
    /// [`MAX_TABLES`] tables are mapped already.
    Full,
    /// The SIGBUS handler could not be installed.
    NoHandler,
}

/// Registers the mappings `(start, len)` of one memory table, installing the SIGBUS handler on
/// first use. The ranges must be live mappings this process owns, and stay mapped until the
/// returned [`Registration`] is dropped.
pub fn register(ranges: &[(usize, usize)]) -> Result<Registration, RegisterError> {
    if !install() {
        return Err(RegisterError::NoHandler);
    }
    let slot = SLOTS
        .iter()
        .position(|s| {
            s.used
                .compare_exchange(false, true, Ordering::Acquire, Ordering::Relaxed)
                .is_ok()
        })
        .ok_or(RegisterError::Full)?;
    let s = &SLOTS[slot];
    s.seq.fetch_add(1, Ordering::AcqRel);
    fence(Ordering::Release);
    for (i, r) in s.ranges.iter().enumerate() {
        let (start, len) = ranges.get(i).copied().unwrap_or((0, 0));
        r[0].store(start, Ordering::Relaxed);
        r[1].store(len, Ordering::Relaxed);
    }
    s.fault.store(0, Ordering::Relaxed);
    s.seq.fetch_add(1, Ordering::Release);
    HIGH_WATER.fetch_max(slot + 1, Ordering::Release);
    Ok(Registration { slot })
}

impl Registration {
    /// The first address that faulted in this table's mappings, if any (one relaxed load: cheap
    /// enough for every burst).
    #[inline]
    pub fn fault(&self) -> Option<usize> {
        fault_of(self.slot)
    }
}

/// The fault recorded in slot `slot`.
#[inline]
fn fault_of(slot: usize) -> Option<usize> {
    match SLOTS.get(slot)?.fault.load(Ordering::Relaxed) {
        0 => None,
        a => Some(a),
    }
}

impl Drop for Registration {
    fn drop(&mut self) {
        let s = &SLOTS[self.slot];
        s.seq.fetch_add(1, Ordering::AcqRel);
        fence(Ordering::Release);
        for r in &s.ranges {
            r[1].store(0, Ordering::Relaxed);
            r[0].store(0, Ordering::Relaxed);
        }
        s.fault.store(0, Ordering::Relaxed);
        s.seq.fetch_add(1, Ordering::Release);
        s.used.store(false, Ordering::Release);
    }
}

/// Installs the handler once per process (mapping guest memory does it too); false if that
/// failed. A process that also runs DPDK calls it right after EAL start-up: DPDK swaps in a
/// SIGBUS handler of its own while it allocates huge pages and puts back the one it found, so
/// ours must be in place before any such allocation can overlap our first mapping.
pub fn install() -> bool {
    INSTALL.call_once(|| {
        // SAFETY: sigaction with a null new action only reads the current one into `old`, a
        // zeroed (valid) sigaction owned by this frame.
        let mut old: libc::sigaction = unsafe { std::mem::zeroed() };
        // SAFETY: as above.
        if unsafe { libc::sigaction(libc::SIGBUS, std::ptr::null(), &mut old) } != 0 {
            return;
        }
        // Recorded before ours goes in, so the handler always finds what to chain to.
        let _ = PREVIOUS.set(PreviousAction(old));
        // SAFETY: a zeroed sigaction is valid; we fill in the handler, flags and an empty mask.
        let mut new: libc::sigaction = unsafe { std::mem::zeroed() };
        new.sa_sigaction = on_sigbus as *const () as libc::sighandler_t;
        // SA_ONSTACK: threads with an alternate signal stack (Rust's) use it; SA_SIGINFO: we
        // need the faulting address.
        new.sa_flags = libc::SA_SIGINFO | libc::SA_ONSTACK;
        // SAFETY: `new.sa_mask` is a valid sigset_t owned by this frame.
        unsafe { libc::sigemptyset(&mut new.sa_mask) };
        // SAFETY: installs a handler that is async-signal-safe (see the module documentation).
        if unsafe { libc::sigaction(libc::SIGBUS, &new, std::ptr::null_mut()) } == 0 {
            INSTALLED.store(true, Ordering::Release);
        } else {
            tracing::error!(
                "cannot install the SIGBUS handler: guest memory will not be mapped, since a \
                 guest that truncates it would crash the process"
            );
        }
    });
    INSTALLED.load(Ordering::Acquire)
}

/// The SIGBUS handler (see the module documentation for what it may and may not do).
extern "C" fn on_sigbus(sig: libc::c_int, info: *mut libc::siginfo_t, ctx: *mut libc::c_void) {
    // SAFETY: the kernel passes a valid siginfo for a SA_SIGINFO handler; for SIGBUS `si_addr`
    // is the faulting address.
    let addr = unsafe { (*info).si_addr() } as usize;
    if contain(addr) {
        return;
    }
    chain(sig, info, ctx);
}

/// If `addr` lies in a registered mapping, replaces that mapping with anonymous memory and
/// records the fault; true if it did.
fn contain(addr: usize) -> bool {
    let high = HIGH_WATER.load(Ordering::Acquire).min(MAX_TABLES);
    for s in &SLOTS[..high] {
        let seq = s.seq.load(Ordering::Acquire);
        if seq & 1 == 1 {
            continue;
        }
        let hit = s.ranges.iter().find_map(|r| {
            let (start, len) = (r[0].load(Ordering::Relaxed), r[1].load(Ordering::Relaxed));
            (len != 0 && addr.wrapping_sub(start) < len).then_some((start, len))
        });
        fence(Ordering::Acquire);
        if s.seq.load(Ordering::Relaxed) != seq {
            continue;
        }
        let Some((start, len)) = hit else { continue };
        // SAFETY: [start, start+len) is a live guest mapping this process owns (registered and
        // not yet unregistered, and the faulting access holds it: see the module documentation).
        // MAP_FIXED replaces it atomically with zero-filled private memory of the same size;
        // every pointer into it stays valid. mmap is a plain system call, async-signal-safe.
        let r = unsafe {
            libc::mmap(
                start as *mut libc::c_void,
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_FIXED | libc::MAP_NORESERVE,
                -1,
                0,
            )
        };
        if r == libc::MAP_FAILED {
            // Out of address space or memory: nothing contains this fault.
            return false;
        }
        let _ = s
            .fault
            .compare_exchange(0, addr, Ordering::Release, Ordering::Relaxed);
        return true;
    }
    false
}

/// Hands a SIGBUS that is not ours to the previous action.
fn chain(sig: libc::c_int, info: *mut libc::siginfo_t, ctx: *mut libc::c_void) {
    let prev = PREVIOUS.get().map(|p| p.0);
    match prev {
        Some(p)
            if p.sa_sigaction != libc::SIG_DFL
                && p.sa_sigaction != libc::SIG_IGN
                && p.sa_flags & libc::SA_SIGINFO != 0 =>
        {
            // SAFETY: the previous action was installed with SA_SIGINFO, so `sa_sigaction` holds
            // a three-argument handler; we pass it the kernel's own arguments.
            let f: extern "C" fn(libc::c_int, *mut libc::siginfo_t, *mut libc::c_void) =
                unsafe { std::mem::transmute(p.sa_sigaction) };
            f(sig, info, ctx);
        }
        Some(p) if p.sa_sigaction != libc::SIG_DFL && p.sa_sigaction != libc::SIG_IGN => {
            // SAFETY: without SA_SIGINFO, `sa_sigaction` holds a one-argument handler.
            let f: extern "C" fn(libc::c_int) = unsafe { std::mem::transmute(p.sa_sigaction) };
            f(sig);
        }
        _ => {
            // Default (or an ignored SIGBUS, which would fault forever): restore the default
            // action; returning re-executes the access, which now ends the process as it would
            // have without us.
            // SAFETY: a zeroed sigaction is SIG_DFL with an empty mask; sigaction is
            // async-signal-safe.
            unsafe {
                let mut dfl: libc::sigaction = std::mem::zeroed();
                dfl.sa_sigaction = libc::SIG_DFL;
                libc::sigaction(sig, &dfl, std::ptr::null_mut());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::{GuestMemory, RegionSpec};
    use std::os::fd::{AsRawFd, OwnedFd};
    use std::sync::Arc;

    fn memfd(name: &str, len: u64, flags: rustix::fs::MemfdFlags) -> OwnedFd {
        let fd = rustix::fs::memfd_create(name, rustix::fs::MemfdFlags::CLOEXEC | flags).unwrap();
        rustix::fs::ftruncate(&fd, len).unwrap();
        fd
    }

    fn map_one(fd: &OwnedFd, gpa: u64, len: u64) -> Arc<GuestMemory> {
        let spec = RegionSpec {
            guest_phys_addr: gpa,
            memory_size: len,
            userspace_addr: 0x7f00_0000_0000,
            mmap_offset: 0,
        };
        Arc::new(GuestMemory::map(&[spec], vec![fd.try_clone().unwrap()]).unwrap())
    }

    /// Truncates the file under a live mapping, then touches the memory every way the data path
    /// does: the accesses complete, the fault is reported with its guest address, and another
    /// guest's memory is untouched.
    fn truncation_is_contained(page: u64, flags: rustix::fs::MemfdFlags) {
        let len = 4 * page;
        let guilty_fd = memfd("guilty-guest", len, flags);
        let other_fd = memfd("other-guest", len, flags);
        let guilty = map_one(&guilty_fd, 0x10_0000, len);
        let other = map_one(&other_fd, 0x10_0000, len);
        let ring = guilty.ring_area(0x10_0000, 64, 16).unwrap();
        guilty.write(0x10_0000 + page + 8, b"before").unwrap();
        other.write(0x10_0000 + 8, b"innocent").unwrap();
        assert_eq!(guilty.fault(), None);

        rustix::fs::ftruncate(&guilty_fd, 0).unwrap();

        let mut buf = [0xffu8; 6];
        guilty
            .read(0x10_0000 + page + 8, &mut buf)
            .expect("a read of truncated memory completes");
        assert_eq!(&buf, &[0u8; 6], "the truncated pages read as zeros");
        let fault = guilty.fault().expect("the fault is recorded");
        assert_eq!(
            fault.gpa,
            0x10_0000 + page + 8,
            "the faulting guest address"
        );
        assert!(guilty.faulted());
        // Writes, ring loads and stores, and guest-to-guest copies complete too.
        guilty.write(0x10_0000 + 3 * page, b"after").unwrap();
        assert_eq!(ring.load_u16_acquire(2), Some(0));
        ring.store_u16_release(2, 9).unwrap();
        super::super::copy_guest_to_guest(&guilty, 0x10_0000, &other, 0x10_0000 + page, 64)
            .unwrap();
        assert_eq!(
            guilty.fault().unwrap().gpa,
            fault.gpa,
            "the first fault is kept"
        );

        let mut b = [0u8; 8];
        other.read(0x10_0000 + 8, &mut b).unwrap();
        assert_eq!(&b, b"innocent");
        assert_eq!(
            other.fault(),
            None,
            "another guest's memory is not affected"
        );
    }

    #[test]
    fn a_truncated_memfd_faults_into_zeros_and_is_reported() {
        truncation_is_contained(4096, rustix::fs::MemfdFlags::empty());
    }

    #[test]
    fn a_truncated_hugetlbfs_file_faults_into_zeros_and_is_reported() {
        testkit::hugepages::ensure(64);
        truncation_is_contained(2 << 20, rustix::fs::MemfdFlags::HUGETLB);
    }

    #[test]
    fn a_released_slot_is_reused_and_forgets_its_fault() {
        let fd = memfd("reused", 4096, rustix::fs::MemfdFlags::empty());
        let first = map_one(&fd, 0, 4096);
        rustix::fs::ftruncate(&fd, 0).unwrap();
        let mut b = [0u8; 1];
        first.read(0, &mut b).unwrap();
        assert!(first.faulted());
        let slot = first.table.registration.as_ref().unwrap().slot;
        drop(first);
        rustix::fs::ftruncate(&fd, 4096).unwrap();
        let second = map_one(&fd, 0, 4096);
        assert_eq!(second.table.registration.as_ref().unwrap().slot, slot);
        assert!(!second.faulted(), "a new table starts without a fault");
    }

    /// Runs `child` in a forked process and returns how it ended. The child must only make
    /// system calls and touch memory prepared before the fork (no allocation: another test
    /// thread may have held the allocator's lock when we forked).
    fn in_child(child: impl FnOnce()) -> Ended {
        // SAFETY: the child runs `child` (system calls and memory accesses only, see above)
        // and leaves with _exit, never returning into the test harness.
        let pid = unsafe { libc::fork() };
        assert!(pid >= 0, "fork failed");
        if pid == 0 {
            child();
            // SAFETY: ends the child without running the parent's atexit handlers or unwinding.
            unsafe { libc::_exit(0) };
        }
        let mut status = 0;
        // SAFETY: waits for the child just forked; `status` is ours to write.
        assert_eq!(unsafe { libc::waitpid(pid, &mut status, 0) }, pid);
        if libc::WIFSIGNALED(status) {
            Ended::Signal(libc::WTERMSIG(status))
        } else {
            Ended::Exit(libc::WEXITSTATUS(status))
        }
    }

    #[derive(Debug, PartialEq, Eq)]
    enum Ended {
        Exit(i32),
        Signal(i32),
    }

    #[test]
    fn a_sigbus_outside_guest_memory_still_ends_the_process() {
        // Guest memory exists (the handler is installed) ...
        let guest_fd = memfd("guest", 4096, rustix::fs::MemfdFlags::empty());
        let guest = map_one(&guest_fd, 0, 4096);
        // ... and the process maps a file of its own, outside any guest table.
        let own_fd = memfd("not-guest", 4096, rustix::fs::MemfdFlags::empty());
        // SAFETY: a fresh shared mapping of our own memfd.
        let own = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                4096,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                own_fd.as_raw_fd(),
                0,
            )
        };
        assert_ne!(own, libc::MAP_FAILED);
        let (own_raw, guest_raw) = (own_fd.as_raw_fd(), guest_fd.as_raw_fd());

        let status = in_child(|| {
            // SAFETY: truncating our own file, then reading the mapping that now lies past its
            // end: the SIGBUS this raises is what the test is about.
            unsafe {
                libc::ftruncate(own_raw, 0);
                std::ptr::read_volatile(own.cast::<u8>());
            }
        });
        assert_eq!(
            status,
            Ended::Signal(libc::SIGBUS),
            "a fault outside guest memory is not swallowed"
        );

        let status = in_child(|| {
            let mut b = [0u8; 1];
            // SAFETY: truncates the guest's file (a syscall on a valid fd).
            unsafe { libc::ftruncate(guest_raw, 0) };
            let ok = guest.read(0, &mut b).is_ok() && guest.faulted();
            // SAFETY: leaves the child with a status the parent checks.
            unsafe { libc::_exit(if ok { 0 } else { 3 }) };
        });
        assert_eq!(status, Ended::Exit(0), "a guest fault is contained");
        // SAFETY: unmaps the mapping made above; nothing refers to it any more.
        unsafe { libc::munmap(own, 4096) };
    }
}
