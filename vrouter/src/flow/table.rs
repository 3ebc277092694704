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
//! burst in `prefetch`, loads their buckets, then (at the burst's first lookup) the entries the
//! tags point at, so the burst's misses overlap.

use crate::tables::OwnLines;
use prefetch_index::prefetch_index;
use std::sync::atomic::{fence, AtomicU32, AtomicU64, AtomicUsize, Ordering};

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

/// A flow's identity. Addresses are `u128` (IPv4 in the low 32 bits), as in
/// [`crate::meta::PacketMeta`]. For ICMP / ICMPv6 the echo identifier stands in the source port
/// (0 for other messages) and the message type in the destination port, so an echo request and
/// its reply are a flow and its reverse ([`FlowKey::reverse`] swaps request and reply types),
/// while other messages between the same hosts are flows of their own.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct FlowKey {
    pub vrf: u16,
    pub v6: bool,
    pub proto: u8,
    pub src: u128,
    pub dst: u128,
    pub sport: u16,
    pub dport: u16,
}

impl FlowKey {
    /// The key of the replies: addresses and ports swapped. ICMP keeps its identifier and turns
    /// a query type into its reply type and back (echo, and ICMPv4 timestamp, information and
    /// address mask); other ICMP types stay as they are.
    pub fn reverse(&self) -> FlowKey {
        if is_icmp(self.proto) {
            return FlowKey {
                src: self.dst,
                dst: self.src,
                dport: icmp_reply_type(self.proto, self.dport),
                ..*self
            };
        }
        FlowKey {
            src: self.dst,
            dst: self.src,
            sport: self.dport,
            dport: self.sport,
            ..*self
        }
    }

    pub(crate) fn words(&self) -> [u64; 5] {
        [
            u64::from(self.vrf) << 48
                | u64::from(self.proto) << 40
                | u64::from(self.v6) << 32
                | u64::from(self.sport) << 16
                | u64::from(self.dport),
            (self.src >> 64) as u64,
            self.src as u64,
            (self.dst >> 64) as u64,
            self.dst as u64,
        ]
    }

    fn from_words(w: [u64; 5]) -> FlowKey {
        FlowKey {
            vrf: (w[0] >> 48) as u16,
            proto: (w[0] >> 40) as u8,
            v6: (w[0] >> 32) & 1 == 1,
            sport: (w[0] >> 16) as u16,
            dport: w[0] as u16,
            src: u128::from(w[1]) << 64 | u128::from(w[2]),
            dst: u128::from(w[3]) << 64 | u128::from(w[4]),
        }
    }
}

/// The ICMP type answering `ty` (and the query answered by a reply type); any other type
/// unchanged.
fn icmp_reply_type(proto: u8, ty: u16) -> u16 {
    use crate::wire::{icmp, ipv4};
    let pairs: &[(u8, u8)] = match proto {
        ipv4::proto::ICMP => &icmp::v4::QUERY_REPLY_PAIRS,
        ipv4::proto::ICMPV6 => &icmp::v6::QUERY_REPLY_PAIRS,
        _ => return ty,
    };
    for &(query, reply) in pairs {
        if ty == u16::from(query) {
            return u16::from(reply);
        }
        if ty == u16::from(reply) {
            return u16::from(query);
        }
    }
    ty
}

/// The keyed hash of a key's words: four independent 64x64->128 multiplies (folded), so its
/// latency is two multiplies, not five in a chain. Keyed by a per-table random seed, so a peer
/// cannot aim many flows at one bucket pair.
#[inline(always)]
fn hash_words(seed: &[u64; 6], w: &[u64; 5]) -> u64 {
    #[inline(always)]
    fn fold(a: u64, b: u64) -> u64 {
        let p = u128::from(a) * u128::from(b);
        (p as u64) ^ ((p >> 64) as u64)
    }
    let a = fold(w[0] ^ seed[0], w[1] ^ seed[1]);
    let b = fold(w[2] ^ seed[2], w[3] ^ seed[3]);
    let c = fold(w[4] ^ seed[4], seed[5]);
    fold(a ^ c, b ^ seed[2])
}

/// Six per-table hash keys from the standard library's random hasher seed.
fn random_seed() -> [u64; 6] {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    std::array::from_fn(|i| {
        h.write_usize(i);
        // Odd, so no key multiplies by zero through its seed alone.
        h.finish() | 1
    })
}

pub(crate) fn is_icmp(proto: u8) -> bool {
    proto == 1 || proto == 58
}

/// What a flow does with its packets. Room is left in the entry for NAT and mirror actions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FlowVerdict {
    Forward,
    Drop,
}

/// TCP connection state, for aging. Ordered: the pair's state is the later of its two entries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default)]
pub enum TcpState {
    /// Not TCP, or no flags seen yet.
    #[default]
    None,
    /// A SYN without ACK seen.
    Syn,
    Established,
    /// A FIN seen.
    Fin,
    /// A RST seen.
    Rst,
}

impl TcpState {
    fn from_u8(v: u8) -> TcpState {
        match v {
            1 => TcpState::Syn,
            2 => TcpState::Established,
            3 => TcpState::Fin,
            4 => TcpState::Rst,
            _ => TcpState::None,
        }
    }

    /// The state after a segment with TCP `flags` (the byte at offset 13 of the header).
    pub fn next(self, flags: u8) -> TcpState {
        const FIN: u8 = 0x01;
        const SYN: u8 = 0x02;
        const RST: u8 = 0x04;
        const ACK: u8 = 0x10;
        if flags & RST != 0 {
            TcpState::Rst
        } else if flags & FIN != 0 {
            self.max(TcpState::Fin)
        } else if flags & SYN != 0 && flags & ACK == 0 {
            self.max(TcpState::Syn)
        } else if flags & ACK != 0 && self <= TcpState::Syn {
            TcpState::Established
        } else {
            self
        }
    }
}

/// Idle timeouts, in the caller's time unit (the `now` values it passes; milliseconds in
/// `vrouterd`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FlowTimeouts {
    pub tcp_established: u64,
    /// TCP after FIN or RST, and half-open (SYN only).
    pub tcp_closing: u64,
    pub udp: u64,
    pub icmp: u64,
    /// Any other protocol.
    pub other: u64,
}

impl Default for FlowTimeouts {
    fn default() -> Self {
        FlowTimeouts {
            tcp_established: 7_200_000,
            tcp_closing: 10_000,
            udp: 180_000,
            icmp: 30_000,
            other: 180_000,
        }
    }
}

impl FlowTimeouts {
    fn for_flow(&self, proto: u8, tcp: TcpState) -> u64 {
        match proto {
            6 if tcp == TcpState::Established => self.tcp_established,
            6 => self.tcp_closing,
            17 => self.udp,
            1 | 58 => self.icmp,
            _ => self.other,
        }
    }
}

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
}

#[derive(Debug, Default)]
#[repr(align(64))]
struct Bucket {
    seq: AtomicU32,
    /// Non-zero: the slot is in use and this is its key's tag.
    tags: [AtomicU32; SLOTS_PER_BUCKET],
    /// Flows whose forward entry was installed in this bucket: counted here, under its lock,
    /// with a plain store (no counter that every core's setups write).
    created: AtomicU64,
}

/// Entries a forwarding core reserves against the table's capacity at a time: one shared
/// counter update per this many setups, not one per setup.
const CREDIT_CHUNK: usize = 64;

/// Tables smaller than this are reserved from exactly as needed (a few stranded chunks would
/// be a noticeable share of them).
const CHUNKED_FROM: usize = 64 * 1024;

/// Entries reserved against a table's capacity and not used yet, owned by one setter-up (a
/// forwarding core's [`super::FlowStage`]), so that most setups leave the table's shared
/// counter alone. What a credit holds counts as taken until [`FlowTable::release`] gives it
/// back: at most `CREDIT_CHUNK` entries per core.
#[derive(Debug, Default)]
pub struct SetupCredit {
    entries: usize,
    chunked: bool,
}

impl SetupCredit {
    /// A credit that reserves `CREDIT_CHUNK` entries at a time (in tables of
    /// `CHUNKED_FROM` entries or more). Give it back with [`FlowTable::release`].
    pub fn chunked() -> SetupCredit {
        SetupCredit {
            entries: 0,
            chunked: true,
        }
    }

    /// Entries it holds.
    pub fn entries(&self) -> usize {
        self.entries
    }
}

/// What a lookup reads, in one cache line of its own. Words: `meta` = verdict (8) | tcp state
/// (8) | flags (8) | reserved (8) | reverse index (32); `vifs` = in vif (16) | out vif (16) |
/// policy generation (32).
#[derive(Debug, Default)]
#[repr(align(64))]
struct Entry {
    key: [AtomicU64; 5],
    meta: AtomicU64,
    vifs: AtomicU64,
    seen: AtomicU64,
}

impl Entry {
    /// Whether the entry holds the key with these words: all five compared without branching
    /// (one test instead of a branch per word).
    #[inline(always)]
    fn is_of(&self, w: &[u64; 5]) -> bool {
        self.key
            .iter()
            .zip(w)
            .fold(0, |d, (k, w)| d | (k.load(Ordering::Relaxed) ^ w))
            == 0
    }
}

/// An entry's packet and byte counters, beside the entries (four per cache line): only
/// written on a hit, never read by a lookup, so they stay out of the entry's line.
#[derive(Debug, Default)]
struct Counters {
    packets: AtomicU64,
    bytes: AtomicU64,
}

const FLAG_REVERSE: u64 = 1;

fn meta_word(verdict: FlowVerdict, tcp: TcpState, reverse_flag: bool, rev: u32) -> u64 {
    let v = match verdict {
        FlowVerdict::Forward => 1u64,
        FlowVerdict::Drop => 2,
    };
    v << 56 | (tcp as u64) << 48 | u64::from(reverse_flag) << 40 | u64::from(rev)
}

fn meta_verdict(m: u64) -> FlowVerdict {
    if (m >> 56) as u8 == 1 {
        FlowVerdict::Forward
    } else {
        FlowVerdict::Drop
    }
}
fn meta_tcp(m: u64) -> TcpState {
    TcpState::from_u8((m >> 48) as u8)
}
fn meta_is_reverse(m: u64) -> bool {
    (m >> 40) & FLAG_REVERSE == 1
}
fn meta_rev(m: u64) -> Option<u32> {
    let r = m as u32;
    (r != NO_REVERSE).then_some(r)
}
fn vifs_word(in_vif: u16, out_vif: u16, gen: u32) -> u64 {
    u64::from(in_vif) << 48 | u64::from(out_vif) << 32 | u64::from(gen)
}

#[inline(always)]
fn hit(idx: usize, m: u64, v: u64) -> Hit {
    Hit {
        index: idx as u32,
        verdict: meta_verdict(m),
        is_reverse: meta_is_reverse(m),
        in_vif: (v >> 48) as u16,
        out_vif: (v >> 32) as u16,
        policy_gen: v as u32,
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

/// A bucket with its slots' entries and counters, contiguous: a lookup that finds its key in
/// its first bucket touches one page, not three (page walks are what a large table's lookups
/// wait for most).
#[derive(Debug, Default)]
#[repr(C, align(64))]
struct Group {
    bucket: Bucket,
    entries: [Entry; SLOTS_PER_BUCKET],
    counters: [Counters; SLOTS_PER_BUCKET],
}

/// Where a key may live: its words, tag and two candidate buckets, computed once per packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) struct Place {
    pub(super) words: [u64; 5],
    tag: u32,
    b1: usize,
    b2: usize,
}

impl Place {
    /// The key placed here.
    pub(crate) fn key(&self) -> FlowKey {
        FlowKey::from_words(self.words)
    }

    /// Whether this is the place of a key with these words (without a `memcmp` call).
    #[inline(always)]
    pub(crate) fn is_of(&self, w: &[u64; 5]) -> bool {
        let p = &self.words;
        (p[0] ^ w[0]) | (p[1] ^ w[1]) | (p[2] ^ w[2]) | (p[3] ^ w[3]) | (p[4] ^ w[4]) == 0
    }
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

    /// Entries in use (a flow and its reverse are two) or held in setup credits: one load,
    /// at most `CREDIT_CHUNK` per core above [`FlowStats::active`] (which reads the whole
    /// table, and can be one off while an entry moves to its other bucket).
    #[inline]
    pub fn reserved_entries(&self) -> usize {
        self.tally.reserved.load(Ordering::Relaxed)
    }

    /// Take `need` entries from `credit`, refilling it from the table's capacity if short.
    /// False if the table cannot spare them.
    fn reserve(&self, credit: &mut SetupCredit, need: usize) -> bool {
        if credit.entries < need {
            let short = need - credit.entries;
            // Top up to a whole chunk, so a credit never holds more than `CREDIT_CHUNK`
            // (including what a failed insert hands back).
            let chunk = if credit.chunked && self.capacity >= CHUNKED_FROM {
                (CREDIT_CHUNK - credit.entries.min(CREDIT_CHUNK)).max(short)
            } else {
                short
            };
            let take = |r: usize| {
                if r + chunk <= self.capacity {
                    Some(chunk)
                } else {
                    (r + short <= self.capacity).then_some(short)
                }
            };
            match self
                .tally
                .reserved
                .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |r| {
                    take(r).map(|n| r + n)
                }) {
                Ok(before) => credit.entries += take(before).unwrap_or(0),
                Err(_) => return false,
            }
        }
        credit.entries -= need;
        true
    }

    /// Give back what `credit` holds (a setter-up going away).
    pub fn release(&self, credit: &mut SetupCredit) {
        self.tally
            .reserved
            .fetch_sub(credit.entries, Ordering::Relaxed);
        credit.entries = 0;
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

    #[inline(always)]
    pub(crate) fn place(&self, key: &FlowKey) -> Place {
        self.place_words(key.words())
    }

    #[inline(always)]
    pub(crate) fn place_words(&self, words: [u64; 5]) -> Place {
        let h = hash_words(&self.seed, &words);
        let nb = self.groups.len() as u64;
        let b1 = (((h & 0xffff_ffff) * nb) >> 32) as usize;
        let mut b2 = (((h >> 32) * nb) >> 32) as usize;
        if b2 == b1 {
            b2 = (b1 + 1) % self.groups.len();
        }
        Place {
            words,
            tag: (h.rotate_left(17) as u32) | 1,
            b1,
            b2,
        }
    }

    /// Find `key`'s entry. Lock-free; `None` on a miss (or when writers kept the buckets busy
    /// for every retry: the caller's setup path then finds the entry under the lock).
    #[inline]
    pub fn lookup(&self, key: &FlowKey) -> Option<Hit> {
        self.lookup_placed(&self.place(key))
    }

    /// [`Self::lookup`] of a key already placed.
    #[inline(always)]
    pub(crate) fn lookup_placed(&self, p: &Place) -> Option<Hit> {
        if let Some(h) = self.lookup_in(p, p.b1) {
            return Some(h);
        }
        self.lookup_in(p, p.b2)
    }

    /// Start loading `p`'s two buckets (prefetches: nothing waits for them, so the misses of
    /// a whole burst's keys are in flight at once).
    #[inline(always)]
    pub(crate) fn warm_buckets(&self, p: &Place) {
        prefetch_index(&*self.groups, p.b1);
        prefetch_index(&*self.groups, p.b2);
    }

    /// With `p`'s buckets loaded: the slot whose tag matches, whose entry and counter lines
    /// this starts loading.
    #[inline(always)]
    pub(crate) fn warm_entry(&self, p: &Place) -> Option<usize> {
        for b in [p.b1, p.b2] {
            let Some(g) = self.groups.get(b) else {
                continue;
            };
            if let Some(i) = g
                .bucket
                .tags
                .iter()
                .position(|t| t.load(Ordering::Relaxed) == p.tag)
            {
                prefetch_index(&g.entries, i);
                prefetch_index(&g.counters, i);
                return Some(b * SLOTS_PER_BUCKET + i);
            }
        }
        None
    }

    /// With `p`'s buckets loaded: start loading the entry and counter lines of the slot a
    /// setup of `p`'s key would most likely take ([`Self::preferred_free_slot`]); the setup
    /// writes both.
    #[inline(always)]
    pub(crate) fn warm_free_slot(&self, p: &Place) {
        if let Some(i) = self.preferred_free_slot(p) {
            if let Some(g) = self.groups.get(i / SLOTS_PER_BUCKET) {
                prefetch_index(&g.entries, i % SLOTS_PER_BUCKET);
                prefetch_index(&g.counters, i % SLOTS_PER_BUCKET);
            }
        }
    }

    /// [`Self::lookup_placed`], trying slot `hint` (from [`Self::warm_entry`]) first.
    #[inline(always)]
    pub(crate) fn lookup_hinted(&self, p: &Place, hint: Option<usize>) -> Option<Hit> {
        if let Some(h) = hint.and_then(|idx| self.lookup_slot(p, idx)) {
            return Some(h);
        }
        self.lookup_placed(p)
    }

    /// [`Self::lookup`] for a burst of keys (`out[i]` for `keys[i]`): the candidate buckets
    /// and entries of all keys are read first, back to back, so their cache misses overlap
    /// instead of queueing one behind another.
    pub fn lookup_burst(&self, keys: &[FlowKey], out: &mut [Option<Hit>]) {
        const MAX: usize = 64;
        for (keys, out) in keys.chunks(MAX).zip(out.chunks_mut(MAX)) {
            let mut places = [Place::default(); MAX];
            let mut hints = [None; MAX];
            for (p, k) in places.iter_mut().zip(keys) {
                *p = self.place(k);
                self.warm_buckets(p);
            }
            for (p, h) in places[..keys.len()].iter().zip(&mut hints) {
                *h = self.warm_entry(p);
            }
            for ((o, p), h) in out.iter_mut().zip(&places[..keys.len()]).zip(hints) {
                *o = self.lookup_hinted(p, h);
            }
        }
    }

    /// Entry `idx` if it holds `p`'s key (a consistent read of its bucket), else `None`.
    #[inline(always)]
    fn lookup_slot(&self, p: &Place, idx: usize) -> Option<Hit> {
        let bucket = self.bucket(idx / SLOTS_PER_BUCKET)?;
        let tag = bucket.tags.get(idx % SLOTS_PER_BUCKET)?;
        let e = self.entry(idx)?;
        let s1 = bucket.seq.load(Ordering::Acquire);
        if s1 & 1 == 1 || tag.load(Ordering::Relaxed) != p.tag {
            return None;
        }
        let same = e.is_of(&p.words);
        let (m, v) = (
            e.meta.load(Ordering::Relaxed),
            e.vifs.load(Ordering::Relaxed),
        );
        fence(Ordering::Acquire);
        if !same || bucket.seq.load(Ordering::Relaxed) != s1 {
            return None;
        }
        Some(hit(idx, m, v))
    }

    #[inline(always)]
    fn lookup_in(&self, p: &Place, b: usize) -> Option<Hit> {
        let group = self.groups.get(b)?;
        match Self::read_bucket(group, p, b) {
            Some(found) => found,
            None => self.lookup_in_again(p, b),
        }
    }

    /// One read of bucket `b` (its `group`) for `p`'s key: `None` if a writer held or changed
    /// the bucket meanwhile (read again), else what it holds.
    #[inline(always)]
    fn read_bucket(group: &Group, p: &Place, b: usize) -> Option<Option<Hit>> {
        let bucket = &group.bucket;
        let s1 = bucket.seq.load(Ordering::Acquire);
        if s1 & 1 == 1 {
            return None;
        }
        let mut found = None;
        // Slot and entry side by side from the group: no index arithmetic per slot.
        for (i, (t, e)) in bucket.tags.iter().zip(&group.entries).enumerate() {
            if t.load(Ordering::Relaxed) == p.tag && e.is_of(&p.words) {
                found = Some((
                    b * SLOTS_PER_BUCKET + i,
                    e.meta.load(Ordering::Relaxed),
                    e.vifs.load(Ordering::Relaxed),
                ));
                break;
            }
        }
        fence(Ordering::Acquire);
        if bucket.seq.load(Ordering::Relaxed) != s1 {
            return None;
        }
        Some(found.map(|(idx, m, v)| hit(idx, m, v)))
    }

    /// [`Self::lookup_in`] after a read that raced a writer: out of line, so the loop that
    /// retries does not make the compiler keep every slot's address ready for the first read.
    #[cold]
    #[inline(never)]
    fn lookup_in_again(&self, p: &Place, b: usize) -> Option<Hit> {
        let group = self.groups.get(b)?;
        for _ in 1..READ_TRIES {
            std::hint::spin_loop();
            if let Some(found) = Self::read_bucket(group, p, b) {
                return found;
            }
        }
        None
    }

    /// Account a packet of `len` bytes to entry `index` at time `now`; for TCP, `tcp_flags` moves
    /// the state. Lock-free and without atomic read-modify-writes: each direction of a flow is
    /// its own entry and normally forwarded by one core (RSS), so plain load + store counters
    /// suffice; two cores hitting the same entry at once may lose an increment.
    #[inline]
    pub fn touch(&self, index: u32, len: u64, now: u64, tcp_flags: Option<u8>) {
        let Some((e, c)) = self.entry_and_counters(index as usize) else {
            return;
        };
        c.packets.store(
            c.packets.load(Ordering::Relaxed).wrapping_add(1),
            Ordering::Relaxed,
        );
        c.bytes.store(
            c.bytes.load(Ordering::Relaxed).wrapping_add(len),
            Ordering::Relaxed,
        );
        if e.seen.load(Ordering::Relaxed) < now {
            e.seen.store(now, Ordering::Relaxed);
        }
        if let Some(flags) = tcp_flags {
            let m = e.meta.load(Ordering::Relaxed);
            let next = meta_tcp(m).next(flags);
            if next != meta_tcp(m) {
                // Only the state byte changes; a concurrent removal makes the CAS fail harmlessly.
                let new = (m & !(0xff << 48)) | (next as u64) << 48;
                let _ = e
                    .meta
                    .compare_exchange(m, new, Ordering::Relaxed, Ordering::Relaxed);
            }
        }
    }

    /// Record that entry `index` was re-evaluated against policy generation `gen` with the same
    /// verdict.
    pub fn set_policy_gen(&self, index: u32, gen: u32) {
        if let Some(e) = self.entry(index as usize) {
            let v = e.vifs.load(Ordering::Relaxed);
            let _ = e.vifs.compare_exchange(
                v,
                (v & !0xffff_ffff) | u64::from(gen),
                Ordering::Relaxed,
                Ordering::Relaxed,
            );
        }
    }

    fn lock(&self, b: usize) {
        let Some(bucket) = self.bucket(b) else {
            return;
        };
        loop {
            let s = bucket.seq.load(Ordering::Relaxed);
            if s & 1 == 0
                && bucket
                    .seq
                    .compare_exchange_weak(
                        s,
                        s.wrapping_add(1),
                        Ordering::Acquire,
                        Ordering::Relaxed,
                    )
                    .is_ok()
            {
                fence(Ordering::Release);
                return;
            }
            std::hint::spin_loop();
        }
    }

    fn try_lock(&self, b: usize) -> bool {
        let Some(bucket) = self.bucket(b) else {
            return false;
        };
        let s = bucket.seq.load(Ordering::Relaxed);
        if s & 1 == 0
            && bucket
                .seq
                .compare_exchange(s, s.wrapping_add(1), Ordering::Acquire, Ordering::Relaxed)
                .is_ok()
        {
            fence(Ordering::Release);
            return true;
        }
        false
    }

    fn unlock(&self, b: usize) {
        if let Some(bucket) = self.bucket(b) {
            // We hold it, so no other writer moves it: a plain release store (no locked
            // instruction that would wait for this setup's entry writes to reach memory).
            let s = bucket.seq.load(Ordering::Relaxed);
            bucket.seq.store(s.wrapping_add(1), Ordering::Release);
        }
    }

    /// Lock a set of buckets in ascending order (duplicates once); returns them sorted.
    fn lock_all<const N: usize>(&self, mut bs: [usize; N]) -> ([usize; N], usize) {
        bs.sort_unstable();
        let mut n = 0;
        for i in 0..N {
            if i == 0 || bs[i] != bs[n - 1] {
                bs[n] = bs[i];
                n += 1;
            }
        }
        for &b in &bs[..n] {
            self.lock(b);
        }
        (bs, n)
    }

    fn unlock_all(&self, bs: &[usize]) {
        for &b in bs.iter().rev() {
            self.unlock(b);
        }
    }

    /// Under the lock of `p`'s buckets: the entry holding `p`'s key.
    fn find_locked(&self, p: &Place) -> Option<usize> {
        [p.b1, p.b2].into_iter().find_map(|b| {
            let mut tagged = self.slots_tagged(b, p.tag);
            while let Some(idx) = Self::first_slot(b, tagged) {
                tagged &= tagged - 1;
                if self.entry(idx).is_some_and(|e| e.is_of(&p.words)) {
                    return Some(idx);
                }
            }
            None
        })
    }

    /// The slots of bucket `b` whose tag is `tag` (0: the free ones), one bit each: the
    /// bucket's tags read once, then counted or searched as bits.
    #[inline(always)]
    fn slots_tagged(&self, b: usize, tag: u32) -> u32 {
        self.bucket(b).map_or(0, |bk| {
            bk.tags.iter().enumerate().fold(0, |m, (i, t)| {
                m | (u32::from(t.load(Ordering::Relaxed) == tag) << i)
            })
        })
    }

    /// The first slot of the `mask` of bucket `b`, as an entry index.
    #[inline(always)]
    fn first_slot(b: usize, mask: u32) -> Option<usize> {
        (mask != 0).then(|| b * SLOTS_PER_BUCKET + mask.trailing_zeros() as usize)
    }

    fn free_slot(&self, b: usize) -> Option<usize> {
        Self::first_slot(b, self.slots_tagged(b, 0))
    }

    fn free_slots(&self, b: usize) -> usize {
        self.slots_tagged(b, 0).count_ones() as usize
    }

    /// The free slot a new entry placed at `p` takes: the first free slot of the bucket with
    /// more free slots, the first bucket on a tie (preferring the first for long, so that more
    /// lookups end in the first bucket, made a table of 100 K fill to only 98 %).
    #[inline(always)]
    fn preferred_free_slot(&self, p: &Place) -> Option<usize> {
        let (f1, f2) = (self.slots_tagged(p.b1, 0), self.slots_tagged(p.b2, 0));
        if f1.count_ones() >= f2.count_ones() {
            Self::first_slot(p.b1, f1)
        } else {
            Self::first_slot(p.b2, f2)
        }
    }

    /// Under the lock of bucket `b`: a free slot, or one freed by evicting a closed or expired
    /// flow.
    fn claim_slot(
        &self,
        b: usize,
        held: &[usize],
        now: u64,
        pinned: Option<usize>,
    ) -> Option<usize> {
        let bucket = self.bucket(b)?;
        if let Some(i) = bucket
            .tags
            .iter()
            .position(|t| t.load(Ordering::Relaxed) == 0)
        {
            return Some(b * SLOTS_PER_BUCKET + i);
        }
        self.evict_in(b, held, now)
            .or_else(|| self.relocate_from(b, held, pinned, RELOCATE_DEPTH))
    }

    /// Under the lock of bucket `b` (full): move one of its entries to that entry's other
    /// candidate bucket if it has room, or (`depth` > 0) if room can be made there the same way
    /// (cuckoo steps), updating the moved entries' partners' reverse indexes. Buckets not in
    /// `held` are only taken without waiting. `pinned` is never moved. Returns the freed slot.
    fn relocate_from(
        &self,
        b: usize,
        held: &[usize],
        pinned: Option<usize>,
        depth: u32,
    ) -> Option<usize> {
        for i in 0..SLOTS_PER_BUCKET {
            let idx = b * SLOTS_PER_BUCKET + i;
            if Some(idx) == pinned {
                continue;
            }
            let e = self.entry(idx)?;
            let words: [u64; 5] = std::array::from_fn(|w| e.key[w].load(Ordering::Relaxed));
            let p = self.place_words(words);
            let alt = if p.b1 == b { p.b2 } else { p.b1 };
            if alt == b || (depth == 0 && self.free_slots(alt) == 0) {
                continue;
            }
            let mine = held.contains(&alt);
            let took_alt = !mine && self.try_lock(alt);
            if !mine && !took_alt {
                continue;
            }
            let mut with_alt = [usize::MAX; 8];
            let n = held.len().min(with_alt.len() - 1);
            with_alt[..n].copy_from_slice(&held[..n]);
            with_alt[n] = alt;
            let to = self.free_slot(alt).or_else(|| {
                (depth > 0)
                    .then(|| self.relocate_from(alt, &with_alt[..=n], pinned, depth - 1))
                    .flatten()
            });
            let moved = to.is_some_and(|to| {
                // The partner is read only now: a step made above may have moved it.
                let partner = meta_rev(e.meta.load(Ordering::Relaxed));
                let pb = partner.map(|r| r as usize / SLOTS_PER_BUCKET);
                let need_pb = pb.filter(|&x| x != alt && !held.contains(&x));
                let took_pb = need_pb.is_some_and(|x| self.try_lock(x));
                let ok = need_pb.is_none() || took_pb;
                if ok {
                    self.move_entry(idx, to, p.tag);
                    if let Some(pe) = partner.and_then(|r| self.entry(r as usize)) {
                        let pm = pe.meta.load(Ordering::Relaxed);
                        pe.meta
                            .store((pm & !0xffff_ffff) | to as u64, Ordering::Relaxed);
                    }
                }
                if let (true, Some(x)) = (took_pb, need_pb) {
                    self.unlock(x);
                }
                ok
            });
            if took_alt {
                self.unlock(alt);
            }
            if moved {
                return Some(idx);
            }
        }
        None
    }

    /// Under the locks of both buckets: copy entry `from` to the free slot `to` and free `from`.
    fn move_entry(&self, from: usize, to: usize, tag: u32) {
        let (Some(a), Some(z)) = (self.entry(from), self.entry(to)) else {
            return;
        };
        for (k, src) in z.key.iter().zip(&a.key) {
            k.store(src.load(Ordering::Relaxed), Ordering::Relaxed);
        }
        for (dst, src) in [(&z.meta, &a.meta), (&z.vifs, &a.vifs), (&z.seen, &a.seen)] {
            dst.store(src.load(Ordering::Relaxed), Ordering::Relaxed);
        }
        if let (Some(cf), Some(ct)) = (self.counter(from), self.counter(to)) {
            ct.packets
                .store(cf.packets.load(Ordering::Relaxed), Ordering::Relaxed);
            ct.bytes
                .store(cf.bytes.load(Ordering::Relaxed), Ordering::Relaxed);
        }
        let tag_of = |i: usize| {
            self.bucket(i / SLOTS_PER_BUCKET)
                .and_then(|bk| bk.tags.get(i % SLOTS_PER_BUCKET))
        };
        if let (Some(tf), Some(tt)) = (tag_of(from), tag_of(to)) {
            tt.store(tag, Ordering::Relaxed);
            tf.store(0, Ordering::Relaxed);
        }
    }

    /// Under the lock of bucket `b`: evict one closed or expired flow of it whose partner's
    /// bucket is `held` or can be taken without waiting. Returns the freed slot.
    fn evict_in(&self, b: usize, held: &[usize], now: u64) -> Option<usize> {
        let bucket = self.bucket(b)?;
        for i in 0..SLOTS_PER_BUCKET {
            let idx = b * SLOTS_PER_BUCKET + i;
            if bucket.tags[i].load(Ordering::Relaxed) == 0 || !self.evictable(idx, now) {
                continue;
            }
            let partner = self
                .entry(idx)
                .and_then(|e| meta_rev(e.meta.load(Ordering::Relaxed)));
            match partner {
                None => self.clear_locked(idx),
                Some(r) => {
                    let pb = r as usize / SLOTS_PER_BUCKET;
                    let mine = held.contains(&pb);
                    let took = !mine && self.try_lock(pb);
                    if !mine && !took {
                        continue;
                    }
                    self.clear_locked(idx);
                    self.clear_locked(r as usize);
                    if took {
                        self.unlock(pb);
                    }
                }
            }
            self.tally.evicted.fetch_add(1, Ordering::Relaxed);
            return Some(idx);
        }
        None
    }

    /// Closed (FIN / RST) or idle beyond its timeout.
    fn evictable(&self, idx: usize, now: u64) -> bool {
        let Some(e) = self.entry(idx) else {
            return false;
        };
        let m = e.meta.load(Ordering::Relaxed);
        let (tcp, seen) = self.pair_state(m, e);
        let proto = (e.key[0].load(Ordering::Relaxed) >> 40) as u8;
        tcp >= TcpState::Fin || now.saturating_sub(seen) > self.timeouts.for_flow(proto, tcp)
    }

    /// The later TCP state and last-seen time of an entry and its partner.
    fn pair_state(&self, m: u64, e: &Entry) -> (TcpState, u64) {
        let mut tcp = meta_tcp(m);
        let mut seen = e.seen.load(Ordering::Relaxed);
        if let Some(p) = meta_rev(m).and_then(|r| self.entry(r as usize)) {
            tcp = tcp.max(meta_tcp(p.meta.load(Ordering::Relaxed)));
            seen = seen.max(p.seen.load(Ordering::Relaxed));
        }
        (tcp, seen)
    }

    /// Under the lock of its bucket: free entry `idx`.
    fn clear_locked(&self, idx: usize) {
        let b = idx / SLOTS_PER_BUCKET;
        if let Some(t) = self
            .bucket(b)
            .and_then(|bk| bk.tags.get(idx % SLOTS_PER_BUCKET))
        {
            // Under the bucket's lock: no other writer, so no locked exchange is needed.
            if t.load(Ordering::Relaxed) != 0 {
                t.store(0, Ordering::Relaxed);
                self.tally.reserved.fetch_sub(1, Ordering::Relaxed);
            }
        }
    }

    fn write_entry(&self, idx: usize, p: &Place, meta: u64, vifs: u64, now: u64) {
        let Some(e) = self.entry(idx) else {
            return;
        };
        for (k, w) in e.key.iter().zip(&p.words) {
            k.store(*w, Ordering::Relaxed);
        }
        e.meta.store(meta, Ordering::Relaxed);
        e.vifs.store(vifs, Ordering::Relaxed);
        e.seen.store(now, Ordering::Relaxed);
        if let Some(c) = self.counter(idx) {
            c.packets.store(0, Ordering::Relaxed);
            c.bytes.store(0, Ordering::Relaxed);
        }
        if let Some(t) = self
            .bucket(idx / SLOTS_PER_BUCKET)
            .and_then(|bk| bk.tags.get(idx % SLOTS_PER_BUCKET))
        {
            t.store(p.tag, Ordering::Relaxed);
        }
    }

    /// Install a flow (and its reverse when `f.with_reverse`) at once: both or neither. Returns
    /// the forward entry's index. Takes the buckets of both keys (at most four) in order.
    pub fn insert(&self, f: &NewFlow) -> Result<u32, InsertError> {
        let fwd = self.place(&f.key);
        let rev = f.with_reverse.then(|| self.place(&f.key.reverse()));
        // An unchunked credit reserves exactly what a setup needs; a failed insert hands its
        // reservation back to the credit, which must then go back to the table.
        let mut credit = SetupCredit::default();
        let installed = self.insert_placed(f, &fwd, rev.as_ref(), &mut credit);
        self.release(&mut credit);
        installed
    }

    /// [`Self::insert`] of keys already placed (`rev`: the reverse key's place, if installed),
    /// reserving the entries from `credit`.
    pub(crate) fn insert_placed(
        &self,
        f: &NewFlow,
        fwd: &Place,
        rev: Option<&Place>,
        credit: &mut SetupCredit,
    ) -> Result<u32, InsertError> {
        // Load all candidate buckets at once before locking them one by one: a lock is a
        // locked instruction, which would otherwise wait for each bucket's miss in turn.
        self.warm_buckets(fwd);
        if let Some(r) = rev {
            self.warm_buckets(r);
        }
        let need = 1 + usize::from(rev.is_some());
        let r = match rev {
            Some(rv) => {
                let (bs, n) = self.lock_all([fwd.b1, fwd.b2, rv.b1, rv.b2]);
                let r = self.insert_locked(f, fwd, Some(rv), &bs[..n], need, credit);
                self.unlock_all(&bs[..n]);
                r
            }
            None => {
                let (bs, n) = self.lock_all([fwd.b1, fwd.b2]);
                let r = self.insert_locked(f, fwd, None, &bs[..n], need, credit);
                self.unlock_all(&bs[..n]);
                r
            }
        };
        match r {
            Ok(_) => {}
            Err(InsertError::Full) => {
                self.tally.table_full.fetch_add(1, Ordering::Relaxed);
            }
            Err(InsertError::Raced) => {
                self.tally.setup_races.fetch_add(1, Ordering::Relaxed);
            }
        }
        r
    }

    fn insert_locked(
        &self,
        f: &NewFlow,
        fwd: &Place,
        rev: Option<&Place>,
        held: &[usize],
        need: usize,
        credit: &mut SetupCredit,
    ) -> Result<u32, InsertError> {
        if self.find_locked(fwd).is_some() || rev.is_some_and(|r| self.find_locked(r).is_some()) {
            return Err(InsertError::Raced);
        }
        // At capacity: make room by evicting a closed or expired flow near the new one.
        while !self.reserve(credit, need) {
            if self.evict_in(fwd.b1, held, f.now).is_none()
                && self.evict_in(fwd.b2, held, f.now).is_none()
            {
                return Err(InsertError::Full);
            }
        }
        // A key goes to the less loaded of its two buckets; when both are full, to a slot
        // freed by eviction or by moving an entry to its other bucket.
        let claim = |p: &Place, pinned: Option<usize>| {
            self.preferred_free_slot(p).or_else(|| {
                [p.b1, p.b2]
                    .into_iter()
                    .find_map(|b| self.claim_slot(b, held, f.now, pinned))
            })
        };
        // Entries reserved but not written go back to the credit.
        let Some(fi) = claim(fwd, None) else {
            credit.entries += need;
            return Err(InsertError::Full);
        };
        let vifs = vifs_word(f.in_vif, f.out_vif, f.policy_gen);
        // The forward entry goes in first (so the reverse cannot take its slot) and learns its
        // partner's index after; readers see neither until the buckets are released.
        let m = meta_word(f.verdict, TcpState::None, false, NO_REVERSE);
        self.write_entry(fi, fwd, m, vifs, f.now);
        if let Some(rp) = rev {
            let Some(ri) = claim(rp, Some(fi)) else {
                // `clear_locked` gives the forward entry's reservation back to the table.
                self.clear_locked(fi);
                credit.entries += 1;
                return Err(InsertError::Full);
            };
            self.write_entry(
                ri,
                rp,
                meta_word(f.verdict, TcpState::None, true, fi as u32),
                vifs,
                f.now,
            );
            if let Some(e) = self.entry(fi) {
                e.meta.store(
                    meta_word(f.verdict, TcpState::None, false, ri as u32),
                    Ordering::Relaxed,
                );
            }
        }
        // The forward entry's bucket is one of `held`: no other writer.
        if let Some(bk) = self.bucket(fi / SLOTS_PER_BUCKET) {
            let n = bk.created.load(Ordering::Relaxed);
            bk.created.store(n + 1, Ordering::Relaxed);
        }
        Ok(fi as u32)
    }

    /// Remove `key`'s flow and its partner. Returns whether it was there.
    pub fn remove(&self, key: &FlowKey) -> bool {
        let p = self.place(key);
        let mut partner_bucket = p.b1;
        loop {
            let (bs, n) = self.lock_all([p.b1, p.b2, partner_bucket]);
            let Some(idx) = self.find_locked(&p) else {
                self.unlock_all(&bs[..n]);
                return false;
            };
            let partner = self
                .entry(idx)
                .and_then(|e| meta_rev(e.meta.load(Ordering::Relaxed)));
            match partner {
                Some(r) if !bs[..n].contains(&(r as usize / SLOTS_PER_BUCKET)) => {
                    // The partner lives elsewhere: take its bucket too and look again.
                    partner_bucket = r as usize / SLOTS_PER_BUCKET;
                    self.unlock_all(&bs[..n]);
                }
                _ => {
                    self.clear_locked(idx);
                    if let Some(r) = partner {
                        self.clear_locked(r as usize);
                    }
                    self.unlock_all(&bs[..n]);
                    return true;
                }
            }
        }
    }

    /// A consistent copy of entry `idx`, if in use.
    fn read_entry(&self, idx: usize) -> Option<FlowInfo> {
        let b = idx / SLOTS_PER_BUCKET;
        let bucket = self.bucket(b)?;
        let e = self.entry(idx)?;
        let c = self.counter(idx)?;
        for _ in 0..READ_TRIES {
            let s1 = bucket.seq.load(Ordering::Acquire);
            if s1 & 1 == 1 {
                std::hint::spin_loop();
                continue;
            }
            let tag = bucket
                .tags
                .get(idx % SLOTS_PER_BUCKET)?
                .load(Ordering::Relaxed);
            let key: [u64; 5] = std::array::from_fn(|i| e.key[i].load(Ordering::Relaxed));
            let m = e.meta.load(Ordering::Relaxed);
            let v = e.vifs.load(Ordering::Relaxed);
            fence(Ordering::Acquire);
            if bucket.seq.load(Ordering::Relaxed) != s1 {
                continue;
            }
            if tag == 0 {
                return None;
            }
            return Some(FlowInfo {
                index: idx as u32,
                key: FlowKey::from_words(key),
                verdict: meta_verdict(m),
                tcp: meta_tcp(m),
                is_reverse: meta_is_reverse(m),
                reverse: meta_rev(m),
                in_vif: (v >> 48) as u16,
                out_vif: (v >> 32) as u16,
                policy_gen: v as u32,
                packets: c.packets.load(Ordering::Relaxed),
                bytes: c.bytes.load(Ordering::Relaxed),
                last_seen: e.seen.load(Ordering::Relaxed),
            });
        }
        None
    }

    /// Age up to `budget` buckets (each `SLOTS_PER_BUCKET` entries) from where the last call
    /// stopped: flows idle past their timeout at `now` are removed with their reverse. Cores
    /// calling it at once age disjoint slices. Returns the number of flows aged.
    pub fn age_slice(&self, now: u64, budget: usize) -> usize {
        let nb = self.groups.len();
        let budget = budget.min(nb);
        let start = self.tally.age_cursor.fetch_add(budget, Ordering::Relaxed) % nb;
        let mut aged = 0;
        for k in 0..budget {
            let b = (start + k) % nb;
            for i in 0..SLOTS_PER_BUCKET {
                let idx = b * SLOTS_PER_BUCKET + i;
                let Some(info) = self.read_entry(idx) else {
                    continue;
                };
                // A pair is aged from its forward entry.
                if info.is_reverse && info.reverse.is_some() {
                    continue;
                }
                if self.expired(&info, now) && self.remove(&info.key) {
                    aged += 1;
                }
            }
        }
        self.tally.aged.fetch_add(aged as u64, Ordering::Relaxed);
        aged
    }

    fn expired(&self, info: &FlowInfo, now: u64) -> bool {
        let (mut tcp, mut seen) = (info.tcp, info.last_seen);
        if let Some(p) = info.reverse.and_then(|r| self.entry(r as usize)) {
            tcp = tcp.max(meta_tcp(p.meta.load(Ordering::Relaxed)));
            seen = seen.max(p.seen.load(Ordering::Relaxed));
        }
        now.saturating_sub(seen) > self.timeouts.for_flow(info.key.proto, tcp)
    }

    /// Number of buckets (an aging budget of this many covers the whole table).
    pub fn buckets(&self) -> usize {
        self.groups.len()
    }

    /// A page of flows: up to `limit` entries from entry index `cursor` on, only of `vrf` if given.
    pub fn flows(&self, vrf: Option<u16>, limit: usize, cursor: usize) -> FlowPage {
        let mut flows = Vec::with_capacity(limit.min(4096));
        let mut idx = cursor;
        while idx < self.slots() && flows.len() < limit {
            if let Some(f) = self.read_entry(idx) {
                if vrf.is_none_or(|v| v == f.key.vrf) {
                    flows.push(f);
                }
            }
            idx += 1;
        }
        FlowPage {
            flows,
            next: (idx < self.slots()).then_some(idx),
        }
    }

    /// Every flow for which `remove_if` says so is removed with its reverse (counted as
    /// evicted). Returns how many flows were removed.
    pub fn remove_where(&self, mut remove_if: impl FnMut(&FlowInfo) -> bool) -> usize {
        let mut n = 0;
        for idx in 0..self.slots() {
            let Some(info) = self.read_entry(idx) else {
                continue;
            };
            if info.is_reverse && info.reverse.is_some() {
                continue;
            }
            if remove_if(&info) && self.remove(&info.key) {
                n += 1;
            }
        }
        self.tally.evicted.fetch_add(n as u64, Ordering::Relaxed);
        n
    }

    /// Remove every flow. Returns how many were removed.
    pub fn flush(&self) -> usize {
        self.remove_where(|_| true)
    }

    /// The table's counters. Entries in use and flows created are summed over every bucket
    /// (a control-path read of the whole table: about a millisecond per million entries).
    pub fn stats(&self) -> FlowStats {
        let (mut active, mut created) = (0, 0);
        for g in self.groups.iter() {
            let b = &g.bucket;
            active += b
                .tags
                .iter()
                .filter(|t| t.load(Ordering::Relaxed) != 0)
                .count();
            created += b.created.load(Ordering::Relaxed);
        }
        FlowStats {
            capacity: self.capacity,
            active,
            created,
            aged: self.tally.aged.load(Ordering::Relaxed),
            evicted: self.tally.evicted.load(Ordering::Relaxed),
            table_full: self.tally.table_full.load(Ordering::Relaxed),
            setup_races: self.tally.setup_races.load(Ordering::Relaxed),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(i: u32, proto: u8) -> FlowKey {
        FlowKey {
            vrf: 3,
            v6: false,
            proto,
            src: u128::from(0xc612_0000u32 | i),
            dst: u128::from(0xc633_6407u32),
            sport: 1024 + (i % 50000) as u16,
            dport: 80,
        }
    }

    fn new_flow(key: FlowKey, verdict: FlowVerdict, now: u64) -> NewFlow {
        NewFlow {
            key,
            verdict,
            with_reverse: verdict == FlowVerdict::Forward,
            in_vif: 1,
            out_vif: 2,
            policy_gen: 0,
            now,
        }
    }

    fn table(entries: usize) -> FlowTable {
        FlowTable::new(FlowConfig {
            entries,
            timeouts: FlowTimeouts {
                tcp_established: 1000,
                tcp_closing: 10,
                udp: 100,
                icmp: 50,
                other: 100,
            },
        })
        .unwrap()
    }

    #[test]
    fn a_bucket_entry_and_group_have_the_intended_layout() {
        use std::mem::{align_of, size_of};
        assert_eq!((size_of::<Bucket>(), align_of::<Bucket>()), (64, 64));
        assert_eq!((size_of::<Entry>(), align_of::<Entry>()), (64, 64));
        assert_eq!(size_of::<Counters>(), 16);
        assert_eq!(size_of::<Group>(), 64 + 8 * 64 + 8 * 16);
        // 1 M flows (2 M entries, an eighth more slots) within 256 MiB.
        let entries = 2_000_000usize;
        let groups = (entries + entries / 8).div_ceil(SLOTS_PER_BUCKET);
        assert!(groups * size_of::<Group>() <= 256 << 20);
        let t = table(1000);
        assert_eq!(
            t.memory_bytes(),
            (1000 + 125usize).div_ceil(SLOTS_PER_BUCKET) * size_of::<Group>()
        );
    }

    #[test]
    fn icmp_queries_and_replies_answer_each_other_and_other_types_stay() {
        for (q, r) in [(8, 0), (13, 14), (15, 16), (17, 18)] {
            assert_eq!(icmp_reply_type(1, q), r, "ICMPv4 {q}");
            assert_eq!(icmp_reply_type(1, r), q, "ICMPv4 {r}");
        }
        assert_eq!(icmp_reply_type(58, 128), 129);
        assert_eq!(icmp_reply_type(58, 129), 128);
        // Errors and neighbour discovery are not queries; TCP/UDP ports are not types.
        for (proto, ty) in [(1, 3), (1, 11), (58, 1), (58, 135), (6, 8), (17, 128)] {
            assert_eq!(icmp_reply_type(proto, ty), ty, "proto {proto} type {ty}");
        }
    }

    #[test]
    fn the_memory_advice_covers_the_whole_table_once_before_it_is_used() {
        let calls = std::cell::RefCell::new(Vec::new());
        let t = FlowTable::with_memory_advice(
            FlowConfig {
                entries: 5000,
                ..FlowConfig::default()
            },
            Some(&|start, len| calls.borrow_mut().push((start, len))),
        )
        .unwrap();
        let range = t.groups.as_ptr_range();
        assert_eq!(
            *calls.borrow(),
            [(range.start as usize, t.memory_bytes())],
            "one call, over every group"
        );
        // ... which holds every slot the table was sized for.
        let advised_slots = t.memory_bytes() / std::mem::size_of::<Group>() * SLOTS_PER_BUCKET;
        assert!(advised_slots >= 5000, "{advised_slots} slots advised");
        // The table works as any other afterwards.
        assert!(t
            .insert(&new_flow(key(1, 17), FlowVerdict::Forward, 1))
            .is_ok());
        assert!(t.lookup(&key(1, 17)).is_some());
    }

    #[test]
    fn bad_sizes_are_refused() {
        assert!(FlowTable::new(FlowConfig {
            entries: 0,
            ..FlowConfig::default()
        })
        .is_err());
        assert!(FlowTable::new(FlowConfig {
            entries: MAX_ENTRIES + 1,
            ..FlowConfig::default()
        })
        .is_err());
    }

    #[test]
    fn insert_installs_forward_and_reverse_linked() {
        let t = table(64);
        let k = key(1, 6);
        assert_eq!(t.lookup(&k), None);
        let fi = t.insert(&new_flow(k, FlowVerdict::Forward, 5)).unwrap();
        let f = t.lookup(&k).unwrap();
        let r = t.lookup(&k.reverse()).unwrap();
        assert_eq!(f.index, fi);
        assert!(!f.is_reverse && r.is_reverse);
        assert_eq!((f.in_vif, f.out_vif), (1, 2));
        let page = t.flows(None, 10, 0);
        assert_eq!(page.flows.len(), 2);
        let fwd = page.flows.iter().find(|x| x.index == fi).unwrap();
        assert_eq!(fwd.reverse, Some(r.index));
        assert_eq!(fwd.key, k);
        assert_eq!(t.stats().active, 2);
        assert_eq!(t.stats().created, 1);
        // A second setup of the same key is a race, not a duplicate.
        assert_eq!(
            t.insert(&new_flow(k, FlowVerdict::Forward, 5)),
            Err(InsertError::Raced)
        );
        assert_eq!(t.stats().active, 2);
    }

    #[test]
    fn denied_flows_are_installed_alone() {
        let t = table(64);
        let k = key(2, 17);
        t.insert(&new_flow(k, FlowVerdict::Drop, 0)).unwrap();
        assert_eq!(t.lookup(&k).unwrap().verdict, FlowVerdict::Drop);
        assert_eq!(t.lookup(&k.reverse()), None);
    }

    #[test]
    fn icmp_reverse_keeps_the_identifier_and_pairs_query_and_reply_types() {
        for (proto, request, reply) in [(1u8, 8u16, 0u16), (1, 13, 14), (58, 128, 129)] {
            let k = FlowKey {
                dport: request,
                ..key(3, proto)
            };
            let r = k.reverse();
            assert_eq!((r.sport, r.dport), (k.sport, reply));
            assert_eq!((r.src, r.dst), (k.dst, k.src));
            assert_eq!(r.reverse(), k);
        }
        // Other types keep their type: an error is not the reverse of an echo.
        let unreachable = FlowKey {
            dport: 3,
            ..key(3, 1)
        };
        assert_eq!(unreachable.reverse().dport, 3);
        let echo = FlowKey {
            dport: 8,
            ..key(3, 1)
        };
        assert_ne!(echo.reverse(), unreachable.reverse());
        // ICMPv6 numbers mean other things in ICMPv4 and back.
        let v4_128 = FlowKey {
            dport: 128,
            ..key(3, 1)
        };
        assert_eq!(v4_128.reverse().dport, 128);
        let u = key(3, 17).reverse();
        assert_eq!((u.sport, u.dport), (80, key(3, 17).sport));
    }

    /// Install `f` (and its reverse) from `credit`, as a forwarding core's stage does.
    fn insert_from(
        t: &FlowTable,
        f: &NewFlow,
        credit: &mut SetupCredit,
    ) -> Result<u32, InsertError> {
        let rev = f.with_reverse.then(|| t.place(&f.key.reverse()));
        t.insert_placed(f, &t.place(&f.key), rev.as_ref(), credit)
    }

    #[test]
    fn setup_credits_reserve_in_chunks_and_never_exceed_capacity() {
        let t = table(CHUNKED_FROM);
        let (mut a, mut b) = (SetupCredit::chunked(), SetupCredit::chunked());
        let flow = |i| new_flow(key(i, 17), FlowVerdict::Forward, 0);
        // The first setup takes a chunk; the next 31 (two entries each) take from it.
        insert_from(&t, &flow(0), &mut a).unwrap();
        assert_eq!(
            (t.reserved_entries(), a.entries()),
            (CREDIT_CHUNK, CREDIT_CHUNK - 2)
        );
        for i in 1..32 {
            insert_from(&t, &flow(i), &mut a).unwrap();
        }
        assert_eq!((t.reserved_entries(), a.entries()), (CREDIT_CHUNK, 0));
        assert_eq!((t.stats().active, t.stats().created), (64, 32));

        // Two setters-up taking turns until neither gets a flow in.
        let (mut installed, mut fails_in_a_row) = (32u64, 0);
        for i in 32u32.. {
            let c = if i % 2 == 0 { &mut a } else { &mut b };
            match insert_from(&t, &flow(i), c) {
                Ok(_) => (installed, fails_in_a_row) = (installed + 1, 0),
                Err(e) => {
                    assert_eq!(e, InsertError::Full);
                    fails_in_a_row += 1;
                    if fails_in_a_row == 2 {
                        break;
                    }
                }
            }
            assert!(t.reserved_entries() <= t.capacity());
            if i % 4096 == 0 {
                let held = a.entries() + b.entries();
                assert_eq!(t.reserved_entries(), t.stats().active + held);
            }
        }
        let s = t.stats();
        assert_eq!(s.created, installed);
        assert_eq!(s.active as u64, 2 * installed);
        // Only what the credits hold is left unused: less than a chunk each.
        assert_eq!(s.active + a.entries() + b.entries(), t.capacity());
        assert!(a.entries() < CREDIT_CHUNK && b.entries() < CREDIT_CHUNK);
        t.release(&mut a);
        t.release(&mut b);
        assert_eq!(t.reserved_entries(), s.active);
        // What flows free goes back to the table.
        assert!(t.remove(&key(0, 17)));
        assert_eq!(t.reserved_entries(), s.active - 2);
        assert_eq!(t.stats().active, s.active - 2);
    }

    #[test]
    fn small_tables_reserve_exactly_what_a_setup_needs() {
        let t = table(16);
        let mut c = SetupCredit::chunked();
        insert_from(&t, &new_flow(key(1, 17), FlowVerdict::Forward, 0), &mut c).unwrap();
        assert_eq!((t.reserved_entries(), c.entries()), (2, 0));
    }

    #[test]
    fn an_insert_refused_for_full_buckets_gives_its_reservation_back() {
        // Fill both buckets of one key with drop flows that never go idle (now = 0, looked at
        // at 0) while the table as a whole has room: that key's insert is refused after it
        // has reserved its entry, which must go back to the table, not vanish.
        let t = table(64);
        let target = key(0, 17);
        let pair = |p: &Place| (p.b1.min(p.b2), p.b1.max(p.b2));
        let want = pair(&t.place(&target));
        let mut filled = 0;
        for i in 1u32.. {
            if filled == 2 * SLOTS_PER_BUCKET {
                break;
            }
            let k = key(i, 17);
            if pair(&t.place(&k)) == want {
                t.insert(&new_flow(k, FlowVerdict::Drop, 0)).unwrap();
                filled += 1;
            }
        }
        assert_eq!(t.stats().active, 2 * SLOTS_PER_BUCKET);
        for _ in 0..5 {
            assert_eq!(
                t.insert(&new_flow(target, FlowVerdict::Drop, 0)),
                Err(InsertError::Full)
            );
            assert_eq!(t.reserved_entries(), t.stats().active);
        }
        t.flush();
        assert_eq!((t.reserved_entries(), t.stats().active), (0, 0));
        // And the whole capacity is there to be used again.
        let fits = (1000..2000u32)
            .filter(|&i| t.insert(&new_flow(key(i, 6), FlowVerdict::Drop, 0)).is_ok())
            .count();
        assert!(
            fits >= 60,
            "only {fits} of 64 entries usable after the refusals"
        );
    }

    #[test]
    fn a_credit_never_holds_more_than_a_chunk() {
        let t = table(CHUNKED_FROM);
        let mut c = SetupCredit::chunked();
        // One entry left, a two-entry setup: topped up to a chunk, not a chunk more.
        assert!(t.reserve(&mut c, 1));
        assert_eq!(c.entries(), CREDIT_CHUNK - 1);
        for _ in 0..CREDIT_CHUNK - 2 {
            assert!(t.reserve(&mut c, 1));
        }
        assert_eq!(c.entries(), 1);
        assert!(t.reserve(&mut c, 2));
        assert_eq!(c.entries(), CREDIT_CHUNK - 2);
        // A refused insert hands its two entries back: a chunk at most.
        c.entries += 2;
        assert!(c.entries() <= CREDIT_CHUNK);
        assert_eq!(t.reserved_entries(), 2 * CREDIT_CHUNK - 1);
        t.release(&mut c);
        assert_eq!(t.reserved_entries(), CREDIT_CHUNK - 1);
    }

    #[test]
    fn full_table_refuses_then_counts() {
        let t = table(16);
        let mut ok = 0;
        for i in 0..16 {
            if t.insert(&new_flow(key(i, 17), FlowVerdict::Forward, 0))
                .is_ok()
            {
                ok += 1;
            }
        }
        assert_eq!(ok, 8);
        assert_eq!(t.stats().active, 16);
        assert_eq!(t.stats().table_full, 8);
        // Existing flows still hit.
        for i in 0..16 {
            if let Some(h) = t.lookup(&key(i, 17)) {
                assert_eq!(h.verdict, FlowVerdict::Forward);
            }
        }
        // Once idle past the UDP timeout they can be evicted for a new flow.
        t.insert(&new_flow(key(100, 17), FlowVerdict::Forward, 1000))
            .unwrap();
        assert!(t.stats().evicted >= 1);
        assert!(t.stats().active <= 16);
    }

    #[test]
    fn aging_respects_per_protocol_timeouts_and_the_later_direction() {
        let t = table(64);
        let udp = key(1, 17);
        let icmp = key(2, 1);
        let tcp = key(3, 6);
        for k in [udp, icmp, tcp] {
            t.insert(&new_flow(k, FlowVerdict::Forward, 0)).unwrap();
        }
        // Establish the TCP flow; the reply direction keeps the UDP flow alive.
        let h = t.lookup(&tcp).unwrap();
        t.touch(h.index, 60, 0, Some(0x02));
        let r = t.lookup(&tcp.reverse()).unwrap();
        t.touch(r.index, 60, 0, Some(0x12));
        let ur = t.lookup(&udp.reverse()).unwrap();
        t.touch(ur.index, 60, 90, None);
        let all = t.buckets();
        assert_eq!(t.age_slice(50, all), 0);
        assert_eq!(t.age_slice(51, all), 1); // ICMP, 50 idle
        assert!(t.lookup(&icmp).is_none() && t.lookup(&icmp.reverse()).is_none());
        assert_eq!(t.age_slice(190, all), 0); // UDP reply seen at 90
        assert_eq!(t.age_slice(191, all), 1);
        assert_eq!(t.age_slice(1000, all), 0); // TCP established: 1000
        t.touch(h.index, 60, 1000, Some(0x11)); // FIN: closing timeout
        assert_eq!(t.age_slice(1010, all), 0);
        assert_eq!(t.age_slice(1011, all), 1);
        let s = t.stats();
        assert_eq!((s.aged, s.active, s.created), (3, 0, 3));
    }

    #[test]
    fn age_slice_covers_the_table_in_steps() {
        let t = table(256);
        for i in 0..50 {
            t.insert(&new_flow(key(i, 17), FlowVerdict::Forward, 0))
                .unwrap();
        }
        let mut aged = 0;
        for _ in 0..t.buckets() {
            aged += t.age_slice(1000, 1);
        }
        assert_eq!(aged, 50);
        assert_eq!(t.stats().active, 0);
    }

    #[test]
    fn fills_to_capacity_by_moving_entries_between_their_buckets() {
        // Each table has its own random hash seed: small ones are filled many times over.
        let sizes = [64; 40]
            .into_iter()
            .chain([1000; 20])
            .chain([2000; 20])
            .chain([200_000]);
        for entries in sizes {
            let t = table(entries);
            for i in 0..(entries / 2) as u32 {
                let k = FlowKey {
                    sport: (i % 60_000) as u16,
                    src: u128::from(i / 60_000),
                    ..key(0, 17)
                };
                t.insert(&new_flow(k, FlowVerdict::Forward, 0))
                    .unwrap_or_else(|e| panic!("{entries}: flow {i}: {e:?}"));
            }
            assert_eq!(t.stats().active, entries);
            assert_eq!(t.stats().evicted, 0);
            // Every flow is still found and linked to its reverse after the moves.
            for f in t.flows(None, usize::MAX, 0).flows {
                let r = f.reverse.unwrap();
                let rv = t.flows(None, 1, r as usize).flows;
                assert_eq!(rv[0].key, f.key.reverse());
                assert_eq!(rv[0].reverse, Some(f.index));
                assert_eq!(t.lookup(&f.key).unwrap().index, f.index);
            }
        }
    }

    #[test]
    fn tcp_state_machine() {
        use TcpState::*;
        assert_eq!(None.next(0x02), Syn);
        assert_eq!(Syn.next(0x12), Established);
        assert_eq!(Syn.next(0x10), Established);
        assert_eq!(Established.next(0x10), Established);
        assert_eq!(Established.next(0x11), Fin);
        assert_eq!(Fin.next(0x10), Fin);
        assert_eq!(Established.next(0x04), Rst);
    }

    #[test]
    fn burst_lookup_matches_single_lookups() {
        let t = table(1024);
        for i in 0..100 {
            t.insert(&new_flow(key(i, 17), FlowVerdict::Forward, 0))
                .unwrap();
        }
        let keys: Vec<FlowKey> = (0..150)
            .map(|i| key(i, 17))
            .chain((0..50).map(|i| key(i, 17).reverse()))
            .collect();
        let mut out = vec![None; keys.len()];
        t.lookup_burst(&keys, &mut out);
        for (k, o) in keys.iter().zip(&out) {
            assert_eq!(*o, t.lookup(k));
        }
        assert_eq!(out.iter().filter(|o| o.is_some()).count(), 150);
    }

    #[test]
    fn dump_pages_filter_and_flush() {
        let t = table(256);
        for i in 0..30 {
            let mut k = key(i, 6);
            k.vrf = if i % 3 == 0 { 7 } else { 3 };
            t.insert(&new_flow(k, FlowVerdict::Forward, 0)).unwrap();
        }
        let mut seen = Vec::new();
        let mut cursor = Some(0);
        while let Some(c) = cursor {
            let p = t.flows(Some(7), 4, c);
            assert!(p.flows.len() <= 4);
            seen.extend(p.flows);
            cursor = p.next;
        }
        assert_eq!(seen.len(), 20);
        assert!(seen.iter().all(|f| f.key.vrf == 7));
        assert_eq!(t.flush(), 30);
        assert_eq!(t.stats().active, 0);
        assert!(t.flows(None, 100, 0).flows.is_empty());
    }
}
