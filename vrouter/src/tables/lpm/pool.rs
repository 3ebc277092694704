//! The group pool: groups are handed out from a free list (or fresh storage, up to the
//! table's bound), and groups a removal unlinked come back to the free list only once every
//! registered reader has passed a quiescent state since (the table's
//! [`Qsbr`](crate::qsbr::Qsbr) domain).

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use super::{Lpm, LpmError, Writer, EXT, GROUPS_PER_CHUNK, GROUP_BITS, GROUP_SIZE, ROOT_BITS};

/// How long an insert that finds the pool exhausted waits for retired groups to come back
/// (readers that nap are offline; busy ones announce every few microseconds).
pub(super) const FULL_WAIT: Duration = Duration::from_secs(1);
/// Unlinked groups an insert lets gather (using fresh storage meanwhile) before it retires them
/// and checks which are reusable: one grace check per batch, not per update.
pub(super) const RECLAIM_BATCH: usize = 32;
/// Retired groups (512 KiB) beyond which a removal waits for the older half's grace period
/// (bounded by `FULL_WAIT`), so a reader that is slow for a while (descheduled) costs a writer
/// some latency rather than the table fresh storage. A reader that does not move within the
/// wait is stuck (health reports it): removals wait again only once twice as many piled up.
pub(super) const RETIRED_HIGH: usize = 256;

impl Lpm {
    /// Make room for the `need` groups an insert will link: reclaim, and if that is not
    /// enough wait (bounded) for retired groups; fails, before anything is written, if the
    /// pool still cannot hold them.
    pub(super) fn make_room(&self, w: &mut Writer, need: usize) -> Result<(), LpmError> {
        if need > w.free.len() && (Self::backlog(w) >= RECLAIM_BATCH || need > self.available(w)) {
            self.reclaim(w);
        }
        if need > self.available(w) {
            self.wait_for_retired(w, need);
            if need > self.available(w) {
                return Err(LpmError::Full {
                    limit: self.max_groups,
                });
            }
        }
        Ok(())
    }

    /// After a removal unlinked groups: keep the retired ones from piling up past the
    /// patience (see [`RETIRED_HIGH`]).
    pub(super) fn bound_backlog(&self, w: &mut Writer) {
        let patience = w.patience.max(RETIRED_HIGH);
        if Self::backlog(w) > patience {
            self.reclaim(w);
            if w.retired.len() > patience {
                if let Some(&(t, _)) = w.retired.get(w.retired.len() / 2) {
                    self.grace.wait(t, FULL_WAIT);
                    self.reclaim(w);
                }
                if w.retired.len() > patience {
                    w.patience = w.retired.len() * 2;
                }
            }
        } else if Self::backlog(w) <= RETIRED_HIGH {
            w.patience = 0;
        }
    }

    /// Groups an allocation can take now.
    fn available(&self, w: &Writer) -> usize {
        w.free.len() + (self.max_groups - w.next_group)
    }

    /// Unlinked groups not yet reusable.
    pub(super) fn backlog(w: &Writer) -> usize {
        w.unlinked.len() + w.retired.len()
    }

    /// Groups unlinked since the last call get a ticket; retired groups whose grace period is
    /// over go to the free list.
    pub(super) fn reclaim(&self, w: &mut Writer) {
        if !w.unlinked.is_empty() {
            let t = self.grace.retire();
            let Writer {
                unlinked, retired, ..
            } = w;
            retired.extend(unlinked.drain(..).map(|g| (t, g)));
        }
        if w.retired.is_empty() {
            return;
        }
        let oldest = self.grace.oldest();
        while let Some(&(t, g)) = w.retired.front() {
            if t > oldest {
                break;
            }
            w.retired.pop_front();
            w.free.push(g);
        }
    }

    /// The pool is short of `need` groups: wait (bounded) for retired ones to come back.
    fn wait_for_retired(&self, w: &mut Writer, need: usize) {
        let deadline = Instant::now() + FULL_WAIT;
        while need > self.available(w) {
            let short = need - self.available(w);
            let Some(&(t, _)) = w.retired.get(short - 1) else {
                return;
            };
            let left = deadline.saturating_duration_since(Instant::now());
            if !self.grace.wait(t, left) {
                return;
            }
            self.reclaim(w);
        }
    }

    /// New groups an insert of `prefix/len` would link (the levels below where the existing
    /// path of groups ends).
    pub(super) fn groups_needed(&self, prefix: u128, len: u8) -> usize {
        let Some(mut table) = self.root.get().map(|r| &r[..]) else {
            return self.levels_below(len, ROOT_BITS);
        };
        let mut end = ROOT_BITS;
        let mut stride = ROOT_BITS;
        loop {
            if len <= end {
                return 0;
            }
            let shift = u32::from(self.bits - end);
            let slot = ((prefix >> shift) & ((1u128 << stride) - 1)) as usize;
            let e = table[slot].load(Ordering::Acquire);
            match (e & EXT != 0)
                .then(|| self.group((e & 0xffff_ffff) as usize))
                .flatten()
            {
                Some(g) => table = g,
                None => return self.levels_below(len, end),
            }
            end += GROUP_BITS;
            stride = GROUP_BITS;
        }
    }

    /// Groups from the level ending at `end` bits down to the one where a `len`-bit prefix ends.
    fn levels_below(&self, len: u8, end: u8) -> usize {
        usize::from(len.saturating_sub(end)).div_ceil(usize::from(GROUP_BITS))
    }

    pub(super) fn alloc_group(&self, w: &mut Writer, fill: u64) -> Result<usize, LpmError> {
        let full = LpmError::Full {
            limit: self.max_groups,
        };
        let g = match w.free.pop() {
            Some(g) => g as usize,
            None if w.next_group < self.max_groups => {
                let g = w.next_group;
                self.chunks
                    .get(g / GROUPS_PER_CHUNK)
                    .ok_or(full)?
                    .get_or_init(|| {
                        (0..GROUPS_PER_CHUNK * GROUP_SIZE)
                            .map(|_| AtomicU64::new(0))
                            .collect()
                    });
                w.next_group += 1;
                g
            }
            None => return Err(full),
        };
        // Fresh or recycled (no reader is inside a recycled one any more), it is filled before
        // the entry pointing at it is published.
        for e in self.group(g).ok_or(full)? {
            e.store(fill, Ordering::Relaxed);
        }
        Ok(g)
    }
}
