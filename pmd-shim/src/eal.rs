//! EAL: initialised once per process, cleaned up when the last handle goes away.
//!
//! Every DPDK object made through this crate (mempools, ports, rings, lcore launches) holds an
//! [`Eal`] handle, so `rte_eal_cleanup` can only run after all of them are gone.

use std::ffi::{c_char, CStr, CString};
use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};
use std::sync::Arc;

use crate::error::{DpdkErrno, Error, Result};
use crate::sys;

const UNINIT: u8 = 0;
const RUNNING: u8 = 1;
const CLEANED: u8 = 2;
const FAILED: u8 = 3;
static STATE: AtomicU8 = AtomicU8::new(UNINIT);

/// Set when a mempool had to be leaked because mbufs were still out; EAL memory must then stay
/// mapped until the process exits, so cleanup is skipped.
pub(crate) static CLEANUP_UNSAFE: AtomicBool = AtomicBool::new(false);

/// A handle on the initialised EAL. Cheap to clone; EAL is cleaned up when the last clone drops.
#[derive(Clone)]
pub struct Eal {
    inner: Arc<EalInner>,
}

struct EalInner {
    main_lcore: u32,
    runtime_dir: std::path::PathBuf,
}

impl std::fmt::Debug for Eal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Eal")
            .field("main_lcore", &self.inner.main_lcore)
            .finish()
    }
}

impl Eal {
    /// Initialise EAL with `args` (as on a DPDK command line; `args[0]` is the program name).
    ///
    /// Only the first call in a process can succeed: DPDK cannot be initialised twice, not even
    /// after a failed attempt or a cleanup.
    pub fn init<S: AsRef<str>>(args: &[S]) -> Result<Eal> {
        let owned: Vec<String> = args.iter().map(|a| a.as_ref().to_owned()).collect();
        let mut c_args = Vec::with_capacity(owned.len());
        for a in &owned {
            c_args.push(CString::new(a.as_str()).map_err(|_| Error::EalArgument(a.clone()))?);
        }
        match STATE.compare_exchange(UNINIT, RUNNING, Ordering::AcqRel, Ordering::Acquire) {
            Ok(_) => {}
            Err(RUNNING) => return Err(Error::EalOnce("initialised")),
            Err(CLEANED) => return Err(Error::EalOnce("initialised and cleaned up")),
            Err(_) => return Err(Error::EalOnce("tried, and that attempt failed")),
        }
        // EAL keeps pointers into argv (e.g. for its log identity and devargs) for the life of
        // the process, so the strings are leaked on purpose: a one-time start-up cost.
        let mut argv: Vec<*mut c_char> = c_args.into_iter().map(CString::into_raw).collect();
        argv.push(std::ptr::null_mut());
        let argv = Box::leak(argv.into_boxed_slice());
        let argc = i32::try_from(argv.len() - 1).unwrap_or(i32::MAX);
        // SAFETY: argv holds argc valid NUL-terminated strings followed by a NULL, all leaked so
        // they outlive EAL; STATE guarantees this is the only call in the process.
        let ret = unsafe { sys::rte_eal_init(argc, argv.as_mut_ptr()) };
        if ret < 0 {
            STATE.store(FAILED, Ordering::Release);
            let errno = last_errno();
            return Err(Error::EalInit {
                errno,
                hint: init_failure_hint(errno.0, &owned),
            });
        }
        // SAFETY: EAL is initialised; this only reads its configuration.
        let main_lcore = unsafe { sys::rte_get_main_lcore() };
        // SAFETY: EAL is initialised; the returned string is static for the process lifetime.
        let runtime_dir = unsafe { CStr::from_ptr(sys::rte_eal_get_runtime_dir()) };
        let runtime_dir = std::path::PathBuf::from(runtime_dir.to_string_lossy().into_owned());
        Ok(Eal {
            inner: Arc::new(EalInner {
                main_lcore,
                runtime_dir,
            }),
        })
    }

    /// The lcore EAL runs the initialising thread on.
    pub fn main_lcore(&self) -> u32 {
        self.inner.main_lcore
    }

    /// The lcores enabled by the EAL core list (`-l`), main lcore included.
    pub fn enabled_lcores(&self) -> Vec<u32> {
        let max = sys::RTE_MAX_LCORE;
        (0..max)
            // SAFETY: EAL is initialised and the id is below RTE_MAX_LCORE.
            .filter(|&id| unsafe { sys::rte_lcore_is_enabled(id) } != 0)
            .collect()
    }

    /// EAL's runtime directory (`/var/run/dpdk/<file-prefix>`).
    pub fn runtime_dir(&self) -> &std::path::Path {
        &self.inner.runtime_dir
    }

    /// Removes the runtime directory if it is empty (`--in-memory` leaves it so), for an EAL
    /// that is never dropped (e.g. held in a static by a test binary).
    pub fn remove_empty_runtime_dir(&self) {
        let _ = std::fs::remove_dir(&self.inner.runtime_dir);
    }

    /// The EAL lcore id of the calling thread, or `None` for a thread EAL does not know.
    pub fn current_lcore() -> Option<u32> {
        // SAFETY: reads a thread-local; valid on any thread.
        let id = unsafe { sys::vr_lcore_id() };
        (id < sys::RTE_MAX_LCORE).then_some(id)
    }

    /// Whether EAL found usable hugepage memory.
    pub fn has_hugepages(&self) -> bool {
        // SAFETY: EAL is initialised.
        unsafe { sys::rte_eal_has_hugepages() != 0 }
    }
}

impl Drop for EalInner {
    fn drop(&mut self) {
        if CLEANUP_UNSAFE.load(Ordering::Acquire) {
            // Some mbufs outlived their pool: their memory must stay valid until exit.
            return;
        }
        // SAFETY: this is the last handle, so every mempool, port, ring and launched lcore made
        // through this crate is gone (each holds an `Eal`); EAL was initialised exactly once.
        unsafe { sys::rte_eal_cleanup() };
        STATE.store(CLEANED, Ordering::Release);
        // EAL leaves its runtime directory (config, fbarrays, mp_socket) behind; it belongs to
        // this primary process alone, so remove it.
        let _ = std::fs::remove_dir_all(&self.runtime_dir);
    }
}

/// DPDK's text for an errno value (its own codes above 1000 and the C library's below).
pub fn strerror(errno: i32) -> String {
    // SAFETY: rte_strerror returns a pointer to a static or thread-local NUL-terminated string,
    // valid until the next call on this thread; it is copied out at once.
    let text = unsafe { CStr::from_ptr(sys::rte_strerror(errno)) };
    text.to_string_lossy().into_owned()
}

/// The calling thread's `rte_errno`.
pub(crate) fn last_errno() -> DpdkErrno {
    // SAFETY: reads a thread-local integer.
    DpdkErrno(unsafe { sys::vr_errno() })
}

/// Turns an errno from a failed `rte_eal_init` into an instruction an operator can act on.
fn init_failure_hint(errno: i32, args: &[String]) -> String {
    match errno {
        libc::ENOMEM => format!(
            "EAL could not reserve the memory it needs ({}). Reserve 2 MiB hugepages with \
             scripts/hugepages.sh, or lower -m/--socket-mem",
            hugepage_summary()
        ),
        libc::EACCES | libc::EPERM => "permission denied: run as root (vrouterd needs hugepages, \
             /dev/vfio and raw sockets)"
            .to_owned(),
        libc::EINVAL => format!(
            "invalid EAL arguments {:?}: DPDK printed the offending option above",
            args.get(1..).unwrap_or(&[])
        ),
        libc::EALREADY => "EAL was already initialised in this process".to_owned(),
        libc::ENODEV => {
            "no usable devices or memory: check --vdev/-a arguments and hugepages".to_owned()
        }
        libc::EFAULT | libc::ENOEXEC => format!(
            "EAL could not set up its memory ({}); another DPDK process with the same \
             --file-prefix may be running",
            hugepage_summary()
        ),
        _ => "see DPDK's log lines above".to_owned(),
    }
}

fn hugepage_summary() -> String {
    let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    let field = |name: &str| {
        meminfo
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .unwrap_or("?")
            .to_owned()
    };
    format!(
        "hugepages: {} free of {} total, {} kB each",
        field("HugePages_Free:"),
        field("HugePages_Total:"),
        field("Hugepagesize:")
    )
}
