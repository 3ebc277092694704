//! The flow table: preallocated, bucketised open addressing, built only from atomics.
//!
//! - A key hashes to two candidate buckets of [`SLOTS_PER_BUCKET`] slots; a flow lives in the
//!   less loaded one. Slot `i` of bucket `b` is entry `b * SLOTS_PER_BUCKET + i`, so an entry's
//!   index is stable for its life (the reverse-flow index points at it) and no free list exists.
//! - Each bucket has a sequence word: even = stable, odd = a writer holds it. Readers never
//!   write it: they read the bucket's tags and the candidate entry's key, then check that the
//!   sequence did not move (bounded retries), so lookups from many cores share no lock.
//! - Writers (setup, removal, aging) take the bucket(s) they change by moving the sequence to
//!   odd, always in ascending bucket order, so two writers never deadlock.
//! - Counters, last-seen time and TCP state of a hit entry are updated with plain atomic
//!   operations outside the sequence: an entry removed and reused between a reader's check and
//!   its counter update can be credited one packet that was not its own (accepted; counters are
//!   statistics, never decisions).
//!
//! Memory layout, for lookups in large tables (which wait on memory, not on instructions): a
//! bucket's line (sequence and tags), its eight entry lines (key, verdict, reverse index, vifs,
//! policy generation, last seen: what a lookup reads) and its counters (written on a hit, never
//! read by a lookup) are one contiguous 704-byte group, so a key found in a bucket costs one
//! page walk, not three. The key hash is keyed per table (a peer cannot aim flows at one
//! bucket pair) and computed once per packet: [`crate::flow::FlowStage`] places the keys of a
//! burst in `prefetch`, loads their first buckets (a key lives there while that bucket is at
//! most half full; the second is loaded only for keys the first does not hold), then (at the
//! burst's first lookup) the entries the tags point at, so the burst's misses overlap.
//!
//! The rooms: `key` (a flow's identity, its hash and place), `state` (verdicts, TCP state,
//! timeouts), `layout` (buckets, entries, counters and their words), `lookup` (the forwarding
//! cores' lock-free reads), `writer` (setups, removals, evictions, moves under bucket locks),
//! `credit` (capacity reserved ahead of setups), `aging` and `dump` (walks over the table).

mod aging;
mod credit;
mod dump;
mod key;
mod layout;
mod lookup;
mod state;
#[cfg(test)]
mod tests;
mod writer;

pub use credit::SetupCredit;
pub use key::FlowKey;
pub(crate) use key::{nat_port_of_reply, Place};
pub use state::{FlowTimeouts, FlowVerdict, TcpState};

use crate::nat::PortPools;
use crate::sync::{AtomicU64, AtomicUsize};
use crate::tables::OwnLines;
use key::random_seed;
use layout::{Bucket, Counters, Entry, Group};

/// Slots per bucket (one bucket line of sequence and tags).
pub const SLOTS_PER_BUCKET: usize = 8;
/// The largest table (entry indexes must fit the 32-bit reverse index, minus the "none" mark).
pub const MAX_ENTRIES: usize = 1 << 26;
/// The default table size (`--flow-entries`).
pub const DEFAULT_ENTRIES: usize = 512 * 1024;
/// "No vif" (the egress of a receive / discard nexthop).
pub const NO_VIF: u16 = u16::MAX;
const NO_REVERSE: u32 = u32::MAX;
const READ_TRIES: usize = 16;
/// Cuckoo steps beyond the first when both of a new key's buckets are full: with one more,
/// tables fill to capacity reliably whatever the hash seed.
const RELOCATE_DEPTH: u32 = 1;

/// Sizes and timeouts fixed at start.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FlowConfig {
    /// At most this many entries (a flow and its reverse are two). Slots are allocated with an
    /// eighth more, so the two-choice placement rarely finds both buckets full below capacity.
    /// Each forwarding core holds back at most 64 of them for its next setups (in tables of
    /// 64 K entries or more), so with several cores a table can report full that many short.
    pub entries: usize,
    pub timeouts: FlowTimeouts,
}

impl Default for FlowConfig {
    fn default() -> Self {
        FlowConfig {
            entries: DEFAULT_ENTRIES,
            timeouts: FlowTimeouts::default(),
        }
    }
}

/// Why a flow could not be installed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InsertError {
    /// No room (counted as `table_full`).
    Full,
    /// Another core installed one of the two keys at the same time; look up again.
    Raced,
}

/// A snapshot of one entry (for the API dump and tests).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FlowInfo {
    pub index: u32,
    pub key: FlowKey,
    pub verdict: FlowVerdict,
    pub tcp: TcpState,
    /// This entry is the reply direction of a flow.
    pub is_reverse: bool,
    /// The other direction's entry.
    pub reverse: Option<u32>,
    /// The vif the flow's first packet came in on, and the one it went out of.
    pub in_vif: u16,
    pub out_vif: u16,
    /// The policy generation it was last evaluated against.
    pub policy_gen: u32,
    /// A translated flow: its packets as they leave translated (the partner's key reversed:
    /// for the forward entry the tuple on the pool's side, for the reverse entry the pod's).
    pub nat: Option<FlowKey>,
    pub packets: u64,
    pub bytes: u64,
    pub last_seen: u64,
}

/// One page of [`FlowTable::flows`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FlowPage {
    pub flows: Vec<FlowInfo>,
    /// Pass as `cursor` for the next page; `None` at the end of the table.
    pub next: Option<usize>,
}

/// Table counters.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct FlowStats {
    pub capacity: usize,
    pub active: usize,
    /// Flows set up (a flow and its reverse count once).
    pub created: u64,
    /// Flows removed by aging.
    pub aged: u64,
    /// Flows removed to make room for new ones, or flushed / re-evaluated away.
    pub evicted: u64,
    /// New flows dropped because the table was full.
    pub table_full: u64,
    /// Setups that lost a race with another core (the packet was decided without installing).
    pub setup_races: u64,
}

/// A lookup hit: where the entry is and what it says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Hit {
    pub index: u32,
    pub verdict: FlowVerdict,
    pub in_vif: u16,
    pub out_vif: u16,
    pub policy_gen: u32,
    pub is_reverse: bool,
    /// A translated flow (see [`crate::nat`]).
    pub nat: bool,
    /// A translated entry whose packets have their destination rewritten (else their source).
    pub nat_dst: bool,
    /// A translated flow with both ends rewritten (a link-local service's).
    pub nat_both: bool,
    /// The other direction's entry.
    pub partner: Option<u32>,
}

/// What to install.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NewFlow {
    pub key: FlowKey,
    pub verdict: FlowVerdict,
    /// Install the reply direction too (allowed flows); denied flows are installed alone, so
    /// the opposite direction is evaluated on its own.
    pub with_reverse: bool,
    pub in_vif: u16,
    pub out_vif: u16,
    pub policy_gen: u32,
    pub now: u64,
    /// Source NAT: the reverse entry goes under this key (the replies as they arrive on the
    /// pool's side), and both entries record the pool the pair came from.
    pub nat: Option<NatSetup>,
}

/// The NAT part of a [`NewFlow`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NatSetup {
    pub reverse: FlowKey,
    /// The pool's slot in [`FlowTable::nat_pools`] (0: no pool, a floating IP).
    pub pool: u8,
    /// The forward entry rewrites its packets' destination and the reverse entry their
    /// source (a floating IP reached from outside); else the other way round (source NAT).
    pub forward_rewrites_dst: bool,
    /// Both entries rewrite both ends of their packets (a link-local service), each from its
    /// partner's key; `forward_rewrites_dst` then says which entry replies come in by.
    pub both: bool,
}

impl NewFlow {
    /// The key the reverse entry goes under.
    pub fn reverse_key(&self) -> FlowKey {
        match self.nat {
            Some(n) => n.reverse,
            None => self.key.reverse(),
        }
    }
}

/// The flow table. Share it as `Arc<FlowTable>` between the forwarding cores and the control side.
#[derive(Debug)]
pub struct FlowTable {
    groups: Box<[Group]>,
    seed: [u64; 6],
    capacity: usize,
    timeouts: FlowTimeouts,
    /// Written as flows come and go; apart from the fields above, which every lookup reads, so
    /// that one core's credit refills and aging steps do not evict them from another's cache.
    tally: OwnLines<Tally>,
    /// The NAT pools whose pairs flows hold: removing a NAT flow gives its pair back.
    nat_pools: PortPools,
}

/// The table's shared counters and cursor.
#[derive(Debug, Default)]
struct Tally {
    /// Entries in use plus those held in setup credits: never above `capacity`.
    reserved: AtomicUsize,
    aged: AtomicU64,
    evicted: AtomicU64,
    table_full: AtomicU64,
    setup_races: AtomicU64,
    /// Where the next aging slice starts (in buckets).
    age_cursor: AtomicUsize,
}

impl FlowTable {
    /// A table for `config.entries` entries, all memory allocated now (about 90 bytes per entry:
    /// a 64-byte entry line, 16 bytes of counters, an eighth of a bucket line, an eighth more
    /// slots than entries).
    pub fn new(config: FlowConfig) -> Result<FlowTable, crate::Error> {
        FlowTable::with_memory_advice(config, None)
    }

    /// [`FlowTable::new`] with fixed hash keys (each made odd): for fuzzing, where a crash must
    /// replay in another process. Real tables take random keys, so that a peer cannot aim its
    /// flows at one bucket pair.
    #[doc(hidden)]
    pub fn with_fixed_seed(config: FlowConfig, seed: [u64; 6]) -> Result<FlowTable, crate::Error> {
        let mut t = FlowTable::new(config)?;
        t.seed = seed.map(|k| k | 1);
        Ok(t)
    }

    /// [`FlowTable::new`], then `advise(start, len)` on the table's memory (address and length
    /// in bytes) before anyone else sees it: vrouterd passes a function that asks the kernel
    /// for huge pages there (this crate does no system calls). A lookup in a large table mostly
    /// waits on TLB misses, which huge pages all but remove.
    pub fn with_memory_advice(
        config: FlowConfig,
        advise: Option<&dyn Fn(usize, usize)>,
    ) -> Result<FlowTable, crate::Error> {
        if config.entries < 2 || config.entries > MAX_ENTRIES {
            return Err(crate::Error::TableFull {
                table: "flow (entries must be 2..=67108864)",
                capacity: config.entries,
            });
        }
        let slots = config.entries + config.entries / 8;
        let nb = slots.div_ceil(SLOTS_PER_BUCKET).max(2);
        let groups: Box<[Group]> = (0..nb).map(|_| Group::default()).collect();
        if let Some(advise) = advise {
            advise(groups.as_ptr() as usize, std::mem::size_of_val(&*groups));
        }
        Ok(FlowTable {
            groups,
            seed: random_seed(),
            capacity: config.entries,
            timeouts: config.timeouts,
            tally: OwnLines::default(),
            nat_pools: PortPools::default(),
        })
    }

    #[inline(always)]
    fn bucket(&self, b: usize) -> Option<&Bucket> {
        self.groups.get(b).map(|g| &g.bucket)
    }

    #[inline(always)]
    fn entry(&self, idx: usize) -> Option<&Entry> {
        self.groups
            .get(idx / SLOTS_PER_BUCKET)?
            .entries
            .get(idx % SLOTS_PER_BUCKET)
    }

    /// Entry `idx` and its counters, from one group lookup.
    #[inline(always)]
    fn entry_and_counters(&self, idx: usize) -> Option<(&Entry, &Counters)> {
        let g = self.groups.get(idx / SLOTS_PER_BUCKET)?;
        let i = idx % SLOTS_PER_BUCKET;
        Some((g.entries.get(i)?, g.counters.get(i)?))
    }

    #[inline(always)]
    fn counter(&self, idx: usize) -> Option<&Counters> {
        self.groups
            .get(idx / SLOTS_PER_BUCKET)?
            .counters
            .get(idx % SLOTS_PER_BUCKET)
    }

    fn slots(&self) -> usize {
        self.groups.len() * SLOTS_PER_BUCKET
    }

    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// Bytes of memory the table holds.
    pub fn memory_bytes(&self) -> usize {
        std::mem::size_of_val(&*self.groups)
    }

    pub fn timeouts(&self) -> FlowTimeouts {
        self.timeouts
    }

    /// The registry of NAT pools whose pairs this table's flows hold.
    pub fn nat_pools(&self) -> &PortPools {
        &self.nat_pools
    }
}
