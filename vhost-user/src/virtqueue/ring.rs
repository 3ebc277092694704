//! The avail and used rings: the avail index and head entries the guest publishes, the used
//! entries this side publishes, cache hints for a burst, and notifications both ways.

use std::sync::atomic::{fence, Ordering};

use super::layout::{avail, desc, used};
use super::{Broken, SplitQueue, AVAIL_F_NO_INTERRUPT};

impl SplitQueue {
    pub(super) fn suppress_kicks(&self) {
        if self.event_idx {
            // avail_event just behind our position: the guest's need_event test stays false
            // until it wraps the whole index space.
            let _ = self.used.store_u16(
                used::avail_event(self.size),
                self.last_avail.wrapping_sub(1),
            );
        }
    }

    /// Loads `avail->idx` once for the burst and checks it against the queue size.
    pub(super) fn avail_window(&mut self) -> Option<u16> {
        if self.broken.is_some() {
            return None;
        }
        if self.mem.faulted() {
            let gpa = self.mem.fault().map_or(0, |f| f.gpa);
            self.mark_broken(Broken::MemoryFault { gpa });
            return None;
        }
        let Some(avail_idx) = self.avail.load_u16_acquire(avail::IDX) else {
            self.mark_broken(Broken::RingAccess);
            return None;
        };
        if avail_idx.wrapping_sub(self.last_avail) > self.size {
            self.mark_broken(Broken::AvailIdxJump {
                last: self.last_avail,
                avail: avail_idx,
            });
            return None;
        }
        Some(avail_idx)
    }

    pub(super) fn avail_head(&self, idx: u16) -> Result<u16, Broken> {
        let slot = usize::from(idx & (self.size - 1));
        let head = self
            .avail
            .load_u16(avail::entry(slot))
            .ok_or(Broken::RingAccess)?;
        if head >= self.size {
            return Err(Broken::HeadOutOfRange { head });
        }
        Ok(head)
    }

    /// Cache hints for the `count` chains at avail entries `from..`: the buffer each head
    /// descriptor names, `want(k)` bytes of the `k`-th (write intent for RX), then the used
    /// entries these chains will complete. The descriptor loads here are independent of one
    /// another, so the core overlaps their misses by itself (a separate descriptor-prefetch pass
    /// measured no faster cold and slower warm). Hints only: nothing read here is trusted or
    /// kept; the walk that follows validates every chain as before, and a hint at an unmapped
    /// address is ignored.
    pub(super) fn prefetch_chains(
        &self,
        from: u16,
        count: u16,
        device_writes: bool,
        want: impl Fn(u16) -> u64,
    ) {
        let mask = self.size - 1;
        for k in 0..count {
            let slot = usize::from(from.wrapping_add(k) & mask);
            let Some(h) = self
                .avail
                .load_u16(avail::entry(slot))
                .filter(|&h| h < self.size)
            else {
                continue;
            };
            let off = desc::at(h);
            let (Some(addr), Some(len)) = (
                self.desc.load_u64(off + desc::ADDR),
                self.desc.load_u32(off + desc::LEN),
            ) else {
                continue;
            };
            let len = u64::from(len).min(want(k));
            if device_writes {
                self.mem.prefetch_write(addr, len);
            } else {
                self.mem.prefetch(addr, len);
            }
        }
        let first = usize::from(self.used_idx.wrapping_add(self.shadow.len() as u16) & mask);
        let n = usize::from(count).min(usize::from(self.size));
        let to_end = n.min(usize::from(self.size) - first);
        self.used
            .prefetch_write(used::entry(first), used::ENTRY_SIZE * to_end);
        if n > to_end {
            self.used
                .prefetch_write(used::entry(0), used::ENTRY_SIZE * (n - to_end));
        }
    }

    pub(super) fn push_used(&mut self, head: u16, len: u32) {
        self.shadow.push((u32::from(head), len));
    }

    /// Publishes the shadow used entries with one release store, then kicks if asked.
    pub(super) fn flush_used(&mut self) {
        if self.shadow.is_empty() {
            return;
        }
        let old = self.used_idx;
        let mask = self.size - 1;
        let mut idx = old;
        for &(id, len) in &self.shadow {
            let off = used::entry(usize::from(idx & mask));
            if self.used.store_u32(off + used::ID, id).is_none()
                || self.used.store_u32(off + used::LEN, len).is_none()
            {
                self.mark_broken(Broken::RingAccess);
                return;
            }
            idx = idx.wrapping_add(1);
        }
        self.shadow.clear();
        self.used_idx = idx;
        if self.used.store_u16_release(used::IDX, idx).is_none() {
            self.mark_broken(Broken::RingAccess);
            return;
        }
        self.suppress_kicks();
        self.kick_if_asked(old, idx);
    }

    fn kick_if_asked(&mut self, old: u16, new: u16) {
        let Some(call) = &self.call else { return };
        // The used index store must be visible before we read the guest's wish.
        fence(Ordering::SeqCst);
        let wanted = if self.event_idx {
            match self.avail.load_u16(avail::used_event(self.size)) {
                // vring_need_event: did [old, new) cross used_event?
                Some(used_event) => {
                    new.wrapping_sub(used_event).wrapping_sub(1) < new.wrapping_sub(old)
                }
                None => true,
            }
        } else {
            self.avail
                .load_u16(avail::FLAGS)
                .is_some_and(|f| f & AVAIL_F_NO_INTERRUPT == 0)
        };
        if wanted {
            // A full eventfd counter (EAGAIN) still means the guest will wake: nothing to do.
            let _ = rustix::io::write(call.as_ref(), &1u64.to_ne_bytes());
            self.stats.kicks += 1;
        }
    }
}
