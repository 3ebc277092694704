//! Longest-prefix match as a multibit trie with controlled prefix expansion: a 16-bit first
//! level (65 536 entries, the "DIR-16" of DIR-16-8-8) followed by 8-bit groups. IPv4 takes at
//! most three memory reads; IPv6 uses the same structure with up to fifteen levels.
//!
//! Forwarding reads entries with plain atomic loads while a writer updates them in place: a new
//! group is filled before the entry pointing at it is published (release / acquire). An update
//! touches only the entries its prefix covers, never the whole table.
//!
//! Groups are reclaimed: when a removal leaves a group holding one value everywhere, a value
//! inherited from above (or none), that value is written into the group's parent entry, so
//! readers arriving later no longer enter the group, and the group is retired to the table's
//! [`Qsbr`] domain. Once every registered reader has passed a quiescent state it goes back to
//! the free list, and is refilled before it is published again. Unlinked groups are retired
//! and checked in batches (a grace check reads every reader's cache line), so a table holds a
//! few dozen groups more than it uses. Memory therefore follows the routes present, not every
//! route there ever was. Readers on other threads must be registered with [`Lpm::grace`] (the
//! forwarding cores are); [`Lpm::lookup_locked`] is for the control side.
//!
//! The group pool is bounded at construction; an insert that would exceed it (after waiting a
//! bounded time for retired groups) fails cleanly, changing nothing.
//!
//! The rules themselves are also kept, writer-side only, to find the covering route a delete
//! falls back to.
//!
//! The rooms: this module holds the trie's layout and its lookups (the forwarding side) and
//! the control side's queries; `update` writes routes into the trie and folds emptied groups;
//! `pool` hands out groups and takes them back once readers have left them.

use std::collections::{BTreeMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

use super::OwnLines;
use crate::qsbr::{Qsbr, Ticket};

mod pool;
#[cfg(test)]
mod tests;
mod update;

const ROOT_BITS: u8 = 16;
const GROUP_BITS: u8 = 8;
const GROUP_SIZE: usize = 1 << GROUP_BITS;
const GROUPS_PER_CHUNK: usize = 64;
/// Groups on one path below the root: 14 for a 128-bit key.
const MAX_DEPTH: usize = (128 - ROOT_BITS as usize) / GROUP_BITS as usize;

const EXT: u64 = 1 << 63;
const VALID: u64 = 1 << 62;
const DEPTH_SHIFT: u32 = 48;
/// Bits of payload a leaf stores.
pub const PAYLOAD_BITS: u32 = 48;
const PAYLOAD_MASK: u64 = (1 << PAYLOAD_BITS) - 1;

/// Why an LPM update failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LpmError {
    BadLength,
    HostBits,
    /// The group pool (`limit` groups) cannot hold the route.
    Full {
        limit: usize,
    },
    NotFound,
}

/// Group accounting (control side).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct LpmStats {
    pub routes: usize,
    /// Groups linked into the trie.
    pub groups_in_use: usize,
    /// Unlinked groups waiting for readers' grace period.
    pub groups_retired: usize,
    /// Groups ready for reuse.
    pub groups_free: usize,
    /// Groups ever handed out: the storage the table holds (it never shrinks, nor grows while
    /// freed groups are reused).
    pub groups_allocated: usize,
    /// The pool's bound.
    pub groups_limit: usize,
}

#[derive(Debug, Default)]
struct Writer {
    rules: BTreeMap<(u128, u8), u64>,
    /// Groups handed out so far (`0..next_group`): used, retired or free.
    next_group: usize,
    free: Vec<u32>,
    /// Groups unlinked since the last reclaim (no ticket yet: their grace period starts when
    /// they get one).
    unlinked: Vec<u32>,
    /// Unlinked groups, oldest first, with the ticket their grace period waits for.
    retired: VecDeque<(Ticket, u32)>,
    /// Retired groups a removal lets pile up before it waits (0: `RETIRED_HIGH`).
    patience: usize,
}

/// One address family's route table (keys are `bits` wide, left-aligned in nothing: an IPv4
/// key is the address as a `u128` below 2^32).
#[derive(Debug)]
pub struct Lpm {
    bits: u8,
    /// The 16-bit first level (512 KiB), allocated with the first route: a VRF that never
    /// gets routes of this family costs nothing for it.
    root: OnceLock<Box<[AtomicU64]>>,
    chunks: Box<[OnceLock<Box<[AtomicU64]>>]>,
    max_groups: usize,
    grace: Arc<Qsbr>,
    /// Apart from `root` and `chunks`, which every lookup reads: taking the lock writes it,
    /// and beside them each route update would evict them from the forwarding cores' caches.
    writer: OwnLines<Mutex<Writer>>,
}

#[inline(always)]
fn leaf(payload: u64, depth: u8) -> u64 {
    VALID | (u64::from(depth) << DEPTH_SHIFT) | (payload & PAYLOAD_MASK)
}
#[inline(always)]
fn depth_of(e: u64) -> u8 {
    (e >> DEPTH_SHIFT) as u8
}

impl Lpm {
    /// A table for `bits`-wide keys (32 or 128) with room for `max_groups` 8-bit groups, and a
    /// reclamation domain of its own.
    ///
    /// # Panics
    /// If `bits` is neither 32 nor 128 (a programming error: the tables only make these two).
    pub fn new(bits: u8, max_groups: usize) -> Self {
        Self::with_grace(bits, max_groups, Qsbr::new())
    }

    /// As [`Lpm::new`], retiring groups to `grace` (shared by all of a [`super::Tables`]'
    /// tries, whose readers are the forwarding cores).
    ///
    /// # Panics
    /// If `bits` is neither 32 nor 128.
    pub fn with_grace(bits: u8, max_groups: usize, grace: Arc<Qsbr>) -> Self {
        assert!(
            bits == 32 || bits == 128,
            "LPM key width is 32 or 128, got {bits}"
        );
        // Group indexes live in the low 32 bits of an entry.
        let max_groups = max_groups.min(u32::MAX as usize);
        let chunks = max_groups.div_ceil(GROUPS_PER_CHUNK);
        Lpm {
            bits,
            root: OnceLock::new(),
            chunks: (0..chunks).map(|_| OnceLock::new()).collect(),
            max_groups,
            grace,
            writer: OwnLines::default(),
        }
    }

    pub fn bits(&self) -> u8 {
        self.bits
    }

    /// The domain readers of this table register with.
    pub fn grace(&self) -> &Arc<Qsbr> {
        &self.grace
    }

    #[inline(always)]
    fn group(&self, g: usize) -> Option<&[AtomicU64]> {
        let chunk = self.chunks.get(g / GROUPS_PER_CHUNK)?.get()?;
        let at = (g % GROUPS_PER_CHUNK) * GROUP_SIZE;
        chunk.get(at..at + GROUP_SIZE)
    }

    /// The payload of the longest prefix covering `key`. From a thread registered with
    /// [`Lpm::grace`] (or with no writer running).
    #[inline(always)]
    pub fn lookup(&self, key: u128) -> Option<u64> {
        let mut shift = u32::from(self.bits - ROOT_BITS);
        let root = self.root.get()?;
        let mut e = root[((key >> shift) & 0xffff) as usize].load(Ordering::Acquire);
        while e & EXT != 0 {
            shift = shift.checked_sub(u32::from(GROUP_BITS))?;
            let g = self.group((e & 0xffff_ffff) as usize)?;
            e = g[((key >> shift) & 0xff) as usize].load(Ordering::Acquire);
        }
        if e & VALID != 0 {
            Some(e & PAYLOAD_MASK)
        } else {
            None
        }
    }

    /// [`Lpm::lookup`] for a 32-bit table, unrolled, in 32-bit arithmetic (the IPv4 fast path).
    #[inline(always)]
    pub fn lookup_v4(&self, key: u32) -> Option<u64> {
        if self.bits != 32 {
            return self.lookup(u128::from(key));
        }
        let root = self.root.get()?;
        let mut e = root.get((key >> 16) as usize)?.load(Ordering::Acquire);
        if e & EXT != 0 {
            let g = self.group((e & 0xffff_ffff) as usize)?;
            e = g.get(((key >> 8) & 0xff) as usize)?.load(Ordering::Acquire);
            if e & EXT != 0 {
                let g = self.group((e & 0xffff_ffff) as usize)?;
                e = g.get((key & 0xff) as usize)?.load(Ordering::Acquire);
            }
        }
        if e & VALID != 0 {
            Some(e & PAYLOAD_MASK)
        } else {
            None
        }
    }

    /// [`Lpm::lookup`] from any thread, registered or not: under the writers' lock, so no group
    /// is recycled meanwhile (control side).
    pub fn lookup_locked(&self, key: u128) -> Option<u64> {
        let _w = self.lock();
        self.lookup(key)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Writer> {
        // The trie stays consistent entry by entry; a panicked writer leaves nothing half-made
        // that a reader could misread, so a poisoned lock is still usable.
        self.writer.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The exact route `prefix/len`, if present (control side).
    pub fn get(&self, prefix: u128, len: u8) -> Option<u64> {
        self.lock().rules.get(&(prefix, len)).copied()
    }

    /// All routes (control side).
    pub fn routes(&self) -> Vec<(u128, u8, u64)> {
        self.lock()
            .rules
            .iter()
            .map(|(&(p, l), &v)| (p, l, v))
            .collect()
    }

    pub fn len(&self) -> usize {
        self.lock().rules.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Groups linked into the trie.
    pub fn groups_used(&self) -> usize {
        self.stats().groups_in_use
    }

    /// Group accounting; also recycles retired groups whose grace period is over.
    pub fn stats(&self) -> LpmStats {
        let mut w = self.lock();
        self.reclaim(&mut w);
        LpmStats {
            routes: w.rules.len(),
            groups_in_use: w.next_group - w.free.len() - Self::backlog(&w),
            groups_retired: w.retired.len(),
            groups_free: w.free.len(),
            groups_allocated: w.next_group,
            groups_limit: self.max_groups,
        }
    }
}

/// Mask of the low `bits` bits.
fn mask_low(bits: u8) -> u128 {
    if bits >= 128 {
        u128::MAX
    } else {
        (1u128 << bits) - 1
    }
}

/// Mask of the host part of a `len`-bit prefix in a `bits`-wide key.
fn mask_low_n(bits: u8, len: u8) -> u128 {
    mask_low(bits - len)
}
