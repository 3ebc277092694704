//! Launching work on EAL worker lcores (threads EAL pinned to one CPU each) and stopping it.

use std::ffi::{c_int, c_void};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use crate::eal::Eal;
use crate::error::{Error, Result};
use crate::sys;

/// Shared flag a launched loop polls to know when to return.
#[derive(Clone, Debug, Default)]
pub struct StopFlag(Arc<AtomicBool>);

impl StopFlag {
    pub fn new() -> StopFlag {
        StopFlag::default()
    }

    /// True once [`StopFlag::stop`] ran; everything the stopping thread did before (such as
    /// enqueueing the last packets on a ring) is then visible to the caller, so a loop that
    /// reads this flag before its final poll of a ring misses nothing (Acquire pairs with the
    /// Release in `stop`; both are plain moves on x86).
    #[inline]
    pub fn should_stop(&self) -> bool {
        self.0.load(Ordering::Acquire)
    }

    pub fn stop(&self) {
        self.0.store(true, Ordering::Release);
    }
}

/// Work running on one worker lcore. Dropping it stops and joins the work.
#[derive(Debug)]
pub struct LcoreHandle {
    lcore: u32,
    stop: StopFlag,
    joined: Option<i32>,
    _eal: Eal,
}

type Job = Box<dyn FnOnce() -> i32 + Send + 'static>;

unsafe extern "C" fn trampoline(arg: *mut c_void) -> c_int {
    // SAFETY: `arg` is the Box<Job> leaked by `launch` for exactly this one call.
    let job: Box<Job> = unsafe { Box::from_raw(arg.cast::<Job>()) };
    // A panic must not unwind into DPDK's C frames.
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(job)).unwrap_or(-1)
}

impl Eal {
    /// Runs `work` on worker lcore `lcore` (pinned to its CPU by EAL). `work` gets a
    /// [`StopFlag`] to poll and returns an exit code. Must be called from the main lcore.
    pub fn launch<F>(&self, lcore: u32, work: F) -> Result<LcoreHandle>
    where
        F: FnOnce(StopFlag) -> i32 + Send + 'static,
    {
        let fail = |why: String| Error::Lcore { lcore, why };
        if Eal::current_lcore() != Some(self.main_lcore()) {
            return Err(fail(
                "lcores can only be launched from the main lcore's thread".into(),
            ));
        }
        if lcore == self.main_lcore() {
            return Err(fail(
                "is the main lcore; give forwarding its own lcores".into(),
            ));
        }
        if lcore >= sys::RTE_MAX_LCORE {
            return Err(fail(format!(
                "is above RTE_MAX_LCORE ({})",
                sys::RTE_MAX_LCORE
            )));
        }
        // SAFETY: EAL initialised; id below RTE_MAX_LCORE.
        if unsafe { sys::rte_lcore_is_enabled(lcore) } == 0 {
            return Err(fail(format!(
                "is not in the EAL core list (enabled: {:?}); add it to -l",
                self.enabled_lcores()
            )));
        }
        let stop = StopFlag::new();
        let flag = stop.clone();
        let job: Box<Job> = Box::new(Box::new(move || work(flag)));
        let arg = Box::into_raw(job).cast::<c_void>();
        // SAFETY: called on the main lcore for an enabled worker; on success the trampoline
        // takes ownership of `arg` and runs it once.
        let ret = unsafe { sys::rte_eal_remote_launch(Some(trampoline), arg, lcore) };
        if ret != 0 {
            // SAFETY: the launch failed, so the trampoline never ran: reclaim the job.
            drop(unsafe { Box::from_raw(arg.cast::<Job>()) });
            return Err(fail(format!(
                "is busy (rte_eal_remote_launch returned {ret}): join its previous work first"
            )));
        }
        Ok(LcoreHandle {
            lcore,
            stop,
            joined: None,
            _eal: self.clone(),
        })
    }
}

impl LcoreHandle {
    pub fn lcore(&self) -> u32 {
        self.lcore
    }

    /// The flag the work polls.
    pub fn stop_flag(&self) -> &StopFlag {
        &self.stop
    }

    /// Asks the work to return.
    pub fn stop(&self) {
        self.stop.stop();
    }

    /// Waits for the work to return and gives its exit code (-1 if it panicked).
    pub fn join(mut self) -> i32 {
        self.wait()
    }

    fn wait(&mut self) -> i32 {
        if let Some(code) = self.joined {
            return code;
        }
        // SAFETY: the lcore was launched by us; waiting on it is always allowed.
        let code = unsafe { sys::rte_eal_wait_lcore(self.lcore) };
        self.joined = Some(code);
        code
    }
}

impl Drop for LcoreHandle {
    fn drop(&mut self) {
        self.stop();
        self.wait();
    }
}
