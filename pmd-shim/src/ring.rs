//! Lock-free rings of mbufs (`rte_ring`), for handing packets between lcores.

use std::ptr::NonNull;
use std::sync::Arc;

use crate::burst::MbufBurst;
use crate::eal::{last_errno, Eal};
use crate::error::{Error, Result};
use crate::mempool::checked_name;
use crate::sys;

/// Who may use each end of a ring.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RingMode {
    /// One producer thread, one consumer thread: the cheapest.
    SingleProducerSingleConsumer,
    /// Any number of producers (e.g. every forwarding lcore), one consumer.
    MultiProducerSingleConsumer,
}

struct RingInner {
    ring: NonNull<sys::rte_ring>,
    name: String,
    capacity: u32,
    mode: RingMode,
    _eal: Eal,
}

// SAFETY: rte_ring is a lock-free queue designed for cross-thread use; which thread may call
// which end is enforced by the producer/consumer handle types below.
unsafe impl Send for RingInner {}
// SAFETY: as above.
unsafe impl Sync for RingInner {}

impl Drop for RingInner {
    fn drop(&mut self) {
        // Free whatever is still queued, then the ring.
        let mut burst = MbufBurst::new();
        loop {
            // SAFETY: last reference to the ring; nobody else enqueues or dequeues.
            let n = unsafe {
                sys::vr_ring_dequeue_burst(
                    self.ring.as_ptr(),
                    burst.raw_free_slots().cast(),
                    burst.room() as u32,
                )
            };
            if n == 0 {
                break;
            }
            // SAFETY: the ring only ever holds owned mbufs put there by `RingProducer`.
            unsafe { burst.filled(n as usize) };
            burst.free_all();
        }
        // SAFETY: last reference; the ring is empty.
        unsafe { sys::rte_ring_free(self.ring.as_ptr()) };
    }
}

/// The sending end. `Clone` only for multi-producer rings.
pub struct RingProducer {
    inner: Arc<RingInner>,
}

/// The receiving end (always one).
pub struct RingConsumer {
    inner: Arc<RingInner>,
}

/// Creates a ring of mbufs with room for `capacity - 1` packets (`capacity` a power of two).
pub fn mbuf_ring(
    eal: &Eal,
    name: &str,
    capacity: u32,
    mode: RingMode,
) -> Result<(RingProducer, RingConsumer)> {
    let c_name = checked_name("ring", name, sys::VR_RING_NAMESIZE as usize)?;
    if !capacity.is_power_of_two() {
        return Err(Error::RingCreate {
            name: name.to_owned(),
            size: capacity,
            errno: crate::error::DpdkErrno(libc::EINVAL),
        });
    }
    let flags = match mode {
        RingMode::SingleProducerSingleConsumer => sys::VR_RING_F_SP_ENQ | sys::VR_RING_F_SC_DEQ,
        RingMode::MultiProducerSingleConsumer => sys::VR_RING_F_SC_DEQ,
    };
    // SAFETY: EAL initialised; valid name; DPDK copies the name.
    let raw = unsafe { sys::rte_ring_create(c_name.as_ptr(), capacity, sys::SOCKET_ID_ANY, flags) };
    let ring = NonNull::new(raw).ok_or_else(|| Error::RingCreate {
        name: name.to_owned(),
        size: capacity,
        errno: last_errno(),
    })?;
    let inner = Arc::new(RingInner {
        ring,
        name: name.to_owned(),
        capacity,
        mode,
        _eal: eal.clone(),
    });
    Ok((
        RingProducer {
            inner: Arc::clone(&inner),
        },
        RingConsumer { inner },
    ))
}

impl RingProducer {
    /// Moves mbufs from the front of `burst` into the ring; returns how many fit. The rest stay
    /// in `burst`.
    #[inline]
    pub fn enqueue_burst(&mut self, burst: &mut MbufBurst) -> usize {
        if burst.is_empty() {
            return 0;
        }
        // SAFETY: valid ring; for single-producer rings this handle is the only producer (it is
        // not cloneable), multi-producer rings allow concurrent enqueue; the first len slots are
        // owned mbufs.
        let n = unsafe {
            sys::vr_ring_enqueue_burst(
                self.inner.ring.as_ptr(),
                burst.raw_slots().cast(),
                burst.len() as u32,
            )
        };
        // SAFETY: the ring took ownership of the first n mbufs.
        unsafe { burst.consumed_front(n as usize) };
        n as usize
    }

    /// Another producer handle, for multi-producer rings only.
    pub fn try_clone(&self) -> Result<RingProducer> {
        match self.inner.mode {
            RingMode::MultiProducerSingleConsumer => Ok(RingProducer {
                inner: Arc::clone(&self.inner),
            }),
            RingMode::SingleProducerSingleConsumer => Err(Error::RingHandle {
                name: self.inner.name.clone(),
                why: "a single-producer ring has exactly one producer handle",
            }),
        }
    }

    pub fn name(&self) -> &str {
        &self.inner.name
    }
}

impl RingConsumer {
    /// Moves queued mbufs into the free slots of `burst`; returns how many.
    #[inline]
    pub fn dequeue_burst(&mut self, burst: &mut MbufBurst) -> usize {
        let room = burst.room() as u32;
        if room == 0 {
            return 0;
        }
        // SAFETY: valid ring; this handle is the only consumer; the free slots have room.
        let n = unsafe {
            sys::vr_ring_dequeue_burst(
                self.inner.ring.as_ptr(),
                burst.raw_free_slots().cast(),
                room,
            )
        };
        // SAFETY: the ring holds only owned mbufs; ownership moves into the burst.
        unsafe { burst.filled(n as usize) };
        n as usize
    }
}

/// Read-only view of a ring's fill level, for health reports.
pub trait RingLevel {
    fn ring_name(&self) -> &str;
    fn count(&self) -> u32;
    fn capacity(&self) -> u32;
}

macro_rules! ring_level {
    ($t:ty) => {
        impl RingLevel for $t {
            fn ring_name(&self) -> &str {
                &self.inner.name
            }
            fn count(&self) -> u32 {
                // SAFETY: reading the head/tail indices of a valid ring is always allowed.
                unsafe { sys::vr_ring_count(self.inner.ring.as_ptr()) }
            }
            fn capacity(&self) -> u32 {
                self.inner.capacity - 1
            }
        }
    };
}
ring_level!(RingProducer);
ring_level!(RingConsumer);
