//! Packet-buffer pools (`rte_pktmbuf_pool_create`).

use std::ffi::CString;
use std::ptr::NonNull;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use crate::burst::MbufBurst;
use crate::eal::{last_errno, Eal, CLEANUP_UNSAFE};
use crate::error::{Error, Result};
use crate::mbuf::Mbuf;
use crate::sys;

/// A pool of packet buffers. Cheap to clone; freed when the last clone drops and no mbuf of it is
/// still out (otherwise it is kept until exit, so an outstanding [`Mbuf`] never dangles).
#[derive(Clone)]
pub struct Mempool {
    inner: Arc<PoolInner>,
}

struct PoolInner {
    pool: NonNull<sys::rte_mempool>,
    name: String,
    size: u32,
    cache: u32,
    data_room: u16,
    _eal: Eal,
}

// SAFETY: a DPDK mempool is multi-thread safe for get/put (its per-lcore caches are indexed by
// the calling lcore, and non-EAL threads use the shared ring); the rest is immutable.
unsafe impl Send for PoolInner {}
// SAFETY: as above; no method gives out interior mutable state.
unsafe impl Sync for PoolInner {}

/// Counts read from a pool; `in_use + available == size` at quiet times.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MempoolUsage {
    pub size: u32,
    pub in_use: u32,
    pub available: u32,
}

impl Mempool {
    /// Creates a pool of `size` mbufs with a per-lcore cache of `cache` and `data_room` bytes
    /// of buffer (headroom included) on the caller's NUMA socket.
    pub fn new(eal: &Eal, name: &str, size: u32, cache: u32, data_room: u16) -> Result<Mempool> {
        // Before any mbuf exists: every packet may carry an offload word.
        crate::mbuf::register_offload()?;
        let c_name = checked_name("mempool", name, sys::VR_MEMPOOL_NAMESIZE as usize)?;
        // SAFETY: EAL is initialised (we hold `eal`); the name is a valid C string; DPDK copies it.
        let raw = unsafe {
            sys::rte_pktmbuf_pool_create(
                c_name.as_ptr(),
                size,
                cache,
                0,
                data_room,
                sys::SOCKET_ID_ANY,
            )
        };
        let pool = NonNull::new(raw).ok_or_else(|| Error::MempoolCreate {
            name: name.to_owned(),
            size,
            cache,
            data_room,
            errno: last_errno(),
        })?;
        Ok(Mempool {
            inner: Arc::new(PoolInner {
                pool,
                name: name.to_owned(),
                size,
                cache,
                data_room,
                _eal: eal.clone(),
            }),
        })
    }

    pub fn name(&self) -> &str {
        &self.inner.name
    }

    pub fn size(&self) -> u32 {
        self.inner.size
    }

    pub fn cache_size(&self) -> u32 {
        self.inner.cache
    }

    /// Buffer bytes per mbuf, headroom included.
    pub fn data_room(&self) -> u16 {
        self.inner.data_room
    }

    /// Mbufs currently allocated (including those held by port RX descriptors).
    pub fn in_use(&self) -> u32 {
        // SAFETY: the pool is alive while `self` is.
        unsafe { sys::rte_mempool_in_use_count(self.inner.pool.as_ptr()) }
    }

    /// Mbufs free in the pool and its per-lcore caches.
    pub fn available(&self) -> u32 {
        // SAFETY: the pool is alive while `self` is.
        unsafe { sys::rte_mempool_avail_count(self.inner.pool.as_ptr()) }
    }

    pub fn usage(&self) -> MempoolUsage {
        let available = self.available();
        MempoolUsage {
            size: self.size(),
            in_use: self.size().saturating_sub(available),
            available,
        }
    }

    /// One reset mbuf (data_len 0, default headroom), or `None` when the pool is empty.
    pub fn alloc(&self) -> Option<Mbuf> {
        // SAFETY: the pool is alive; rte_pktmbuf_alloc returns an owned mbuf or NULL.
        let raw = unsafe { sys::vr_pktmbuf_alloc(self.inner.pool.as_ptr()) };
        // SAFETY: a non-null result is a freshly allocated mbuf nobody else owns.
        NonNull::new(raw).map(|p| unsafe { Mbuf::from_raw(p) })
    }

    /// Fills the free slots of `burst` with up to `n` reset mbufs in one call; all or nothing
    /// (returns 0 when the pool cannot supply `n`).
    pub fn alloc_bulk(&self, burst: &mut MbufBurst, n: usize) -> usize {
        let n = n.min(burst.room());
        if n == 0 {
            return 0;
        }
        // SAFETY: the pool is alive; the free slots have room for n pointers; on success DPDK
        // wrote n owned mbufs there, on failure nothing.
        let ret = unsafe {
            sys::vr_pktmbuf_alloc_bulk(self.inner.pool.as_ptr(), burst.raw_free_slots(), n as u32)
        };
        if ret != 0 {
            return 0;
        }
        // SAFETY: as above, n slots now hold owned mbufs.
        unsafe { burst.filled(n) };
        n
    }

    /// An mbuf holding a copy of `bytes` (chained over several segments if it does not fit one).
    pub fn alloc_with(&self, bytes: &[u8]) -> Result<Mbuf> {
        let mut head = self.alloc().ok_or_else(|| self.exhausted())?;
        let mut rest = bytes;
        let first = rest.len().min(usize::from(head.tailroom()));
        head.append(first as u16)?.copy_from_slice(&rest[..first]);
        rest = &rest[first..];
        while !rest.is_empty() {
            let mut seg = self.alloc().ok_or_else(|| self.exhausted())?;
            // Follow-on segments carry no headroom need: start them at the buffer's start.
            seg.reset_headroom_to_zero();
            let n = rest.len().min(usize::from(seg.tailroom()));
            seg.append(n as u16)?.copy_from_slice(&rest[..n]);
            rest = &rest[n..];
            head.chain(seg)?;
        }
        Ok(head)
    }

    fn exhausted(&self) -> Error {
        Error::MempoolExhausted {
            name: self.inner.name.clone(),
            in_use: self.in_use(),
            size: self.inner.size,
        }
    }

    pub(crate) fn as_ptr(&self) -> *mut sys::rte_mempool {
        self.inner.pool.as_ptr()
    }
}

impl std::fmt::Debug for Mempool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Mempool")
            .field("name", &self.inner.name)
            .field("size", &self.inner.size)
            .field("usage", &self.usage())
            .finish()
    }
}

impl Drop for PoolInner {
    fn drop(&mut self) {
        // SAFETY: the pool is alive until the free below.
        let in_use = unsafe { sys::rte_mempool_in_use_count(self.pool.as_ptr()) };
        if in_use != 0 {
            // An mbuf of this pool is still owned somewhere; freeing would leave it dangling.
            CLEANUP_UNSAFE.store(true, Ordering::Release);
            eprintln!(
                "pmd-shim: mempool {:?} dropped with {in_use} mbufs still in use; kept until exit",
                self.name
            );
            return;
        }
        // SAFETY: no mbuf of the pool is outstanding and this is the last handle.
        unsafe { sys::rte_mempool_free(self.pool.as_ptr()) };
    }
}

/// A DPDK object name: non-empty, ASCII printable, shorter than DPDK's limit (NUL included).
pub(crate) fn checked_name(what: &'static str, name: &str, limit: usize) -> Result<CString> {
    let bad = |why| Error::InvalidName {
        what,
        name: name.to_owned(),
        why,
    };
    if name.is_empty() {
        return Err(bad("empty"));
    }
    if name.len() >= limit {
        return Err(bad("too long for DPDK's name limit"));
    }
    if !name.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(bad("only printable ASCII without spaces is allowed"));
    }
    CString::new(name).map_err(|_| bad("contains NUL"))
}

/// Reads a NUL-terminated C string out of a DPDK-filled array.
pub(crate) fn c_text(bytes: &[std::ffi::c_char]) -> String {
    let text: Vec<u8> = bytes
        .iter()
        .take_while(|&&c| c != 0)
        .map(|&c| c as u8)
        .collect();
    String::from_utf8_lossy(&text).into_owned()
}
