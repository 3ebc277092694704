//! The small exact-match tables: MPLS label → nexthop or VRF, VXLAN VNI → VRF, and the per-VRF bridge
//! table MAC → (nexthop, label). Entries are updated in place, one at a time; a removed entry's
//! slot is free again at once (nothing here needs a grace period: a slot holds a whole entry,
//! never a link to other storage).

use super::seqcell::SeqCell;
use super::{OwnLines, RouteTarget};
use crate::wire::{mpls, MacAddr};
use crate::Error;
use std::sync::atomic::{fence, AtomicU32, AtomicU64, Ordering};

/// Where an incoming MPLS label leads: a nexthop (the label names the pod or tunnel the
/// packet goes to, as Tungsten Fabric's per-interface labels do) or a VRF (a per-VRF label, as
/// BGP L3VPN routes carry: the inner packet is routed in that VRF).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LabelTarget {
    Nexthop(u32),
    /// The VRF's internal id (the slot the tables keep it in).
    Vrf(u16),
}

/// Incoming MPLS label → [`LabelTarget`]. A direct array over the whole 20-bit label space
/// (4 MiB): one load per lookup.
#[derive(Debug)]
pub struct LabelTable {
    /// 0 = no entry; `VRF_TARGET | id` a VRF; otherwise `nexthop + 1`.
    entries: Box<[AtomicU32]>,
}

/// Marks a label entry that leads to a VRF (nexthop ids never reach bit 31).
const VRF_TARGET: u32 = 1 << 31;

impl Default for LabelTable {
    fn default() -> Self {
        LabelTable {
            entries: (0..=mpls::MAX_LABEL).map(|_| AtomicU32::new(0)).collect(),
        }
    }
}

impl LabelTable {
    #[inline(always)]
    pub fn get(&self, label: u32) -> Option<LabelTarget> {
        let v = self.entries.get(label as usize)?.load(Ordering::Relaxed);
        decode(v)
    }
    fn check(label: u32) -> Result<(), Error> {
        if !(16..=mpls::MAX_LABEL).contains(&label) {
            return Err(Error::LabelOutOfRange(label));
        }
        Ok(())
    }
    pub(crate) fn set(&self, label: u32, target: LabelTarget) -> Result<(), Error> {
        Self::check(label)?;
        let v = match target {
            LabelTarget::Nexthop(nh) if nh < VRF_TARGET - 1 => nh + 1,
            LabelTarget::Nexthop(id) => {
                return Err(Error::NexthopOutOfRange {
                    id,
                    capacity: VRF_TARGET - 1,
                })
            }
            LabelTarget::Vrf(id) => VRF_TARGET | u32::from(id),
        };
        self.entries[label as usize].store(v, Ordering::Relaxed);
        Ok(())
    }
    pub(crate) fn remove(&self, label: u32) -> Result<(), Error> {
        Self::check(label)?;
        if self.entries[label as usize].swap(0, Ordering::Relaxed) == 0 {
            return Err(Error::NoSuchEntry {
                table: "mpls",
                key: label.to_string(),
            });
        }
        Ok(())
    }
    pub fn entries(&self) -> Vec<(u32, LabelTarget)> {
        self.entries
            .iter()
            .enumerate()
            .filter_map(|(l, e)| decode(e.load(Ordering::Relaxed)).map(|t| (l as u32, t)))
            .collect()
    }
}

#[inline(always)]
fn decode(v: u32) -> Option<LabelTarget> {
    if v & VRF_TARGET != 0 {
        // The id was a u16 when stored.
        Some(LabelTarget::Vrf((v & 0xffff) as u16))
    } else {
        v.checked_sub(1).map(LabelTarget::Nexthop)
    }
}

const VNI_SLOTS: usize = 1 << 16;
const OCCUPIED: u64 = 1 << 63;
const MAC_MASK: u64 = 0xffff_ffff_ffff;
/// Times a lookup that found nothing looks again because a removal moved entries meanwhile.
const MISS_TRIES: usize = 16;

/// The open-addressing tables below use linear probing without tombstones: a removal moves the
/// entries after the removed one that may sit nearer their home slot back along their probe
/// chain (backward-shift deletion), so a slot freed is free for any key at once and probe
/// chains stay as short as the entries present make them, however long keys churn.
///
/// A lookup running beside such a move may find its key neither where it was nor where it goes.
/// So a removal that moves anything makes this counter odd for the while, and a lookup that
/// found nothing checks that the counter neither was odd nor moved meanwhile before it answers
/// "absent" (a sequence lock on the miss path only: a lookup that finds its key is done).
#[derive(Debug, Default)]
struct Moves(OwnLines<AtomicU64>);

impl Moves {
    #[inline(always)]
    fn read_begin(&self) -> u64 {
        self.0 .0.load(Ordering::Acquire)
    }
    /// Whether nothing moved since `read_begin` returned `before`.
    #[inline(always)]
    fn still(&self, before: u64) -> bool {
        fence(Ordering::Acquire);
        before & 1 == 0 && self.0 .0.load(Ordering::Relaxed) == before
    }
    fn write_begin(&self) {
        let v = self.0 .0.load(Ordering::Relaxed);
        self.0 .0.store(v.wrapping_add(1), Ordering::Relaxed);
        fence(Ordering::Release);
    }
    fn write_end(&self) {
        let v = self.0 .0.load(Ordering::Relaxed);
        self.0 .0.store(v.wrapping_add(1), Ordering::Release);
    }

    /// Writer side: empty slot `i` of a table of `n` slots by backward-shift deletion, this
    /// counter odd while entries move. `entry(at)` is the entry in slot `at` and its home slot,
    /// or `None` where the probe chain ends; `store(at, e)` writes slot `at` (`None`: empty).
    fn backward_shift_delete<E>(
        &self,
        n: usize,
        i: usize,
        entry: impl Fn(usize) -> Option<(E, usize)>,
        store: impl Fn(usize, Option<E>),
    ) {
        let (mut hole, mut at, mut moved) = (i, i, false);
        for _ in 1..n {
            at = (at + 1) % n;
            let Some((e, home)) = entry(at) else {
                break;
            };
            if may_fill(home, hole, at, n) {
                if !moved {
                    self.write_begin();
                    moved = true;
                }
                // Copied first, its old slot overwritten later: a lookup that misses it in
                // between sees the counter move and looks again.
                store(hole, Some(e));
                hole = at;
            }
        }
        store(hole, None);
        if moved {
            self.write_end();
        }
    }
}

/// Whether the entry at `at`, whose home slot is `home`, may move back to `hole` (the hole lies
/// on its probe chain from `home` to `at`) in a table of `n` slots.
#[inline]
fn may_fill(home: usize, hole: usize, at: usize, n: usize) -> bool {
    let dist = |from: usize| (at + n - from) % n;
    dist(home) >= dist(hole)
}

/// VXLAN VNI → VRF: linear probing (see [`Moves`]) over single-word entries (`occupied |
/// vrf << 24 | vni`), so a reader always sees a whole entry.
#[derive(Debug)]
pub struct VniTable {
    slots: Box<[AtomicU64]>,
    /// `slots.len() - 1`: the length is a power of two, so a slot index is a mask away (a
    /// division per probe would cost the decap path more than the probe).
    mask: usize,
    moves: Moves,
}

impl Default for VniTable {
    fn default() -> Self {
        Self::with_slots(VNI_SLOTS)
    }
}

#[inline(always)]
fn vni_home(vni: u32, mask: usize) -> usize {
    (vni.wrapping_mul(0x9E37_79B9) >> 16) as usize & mask
}

impl VniTable {
    /// A table of `n` slots rounded up to a power of two (tests use small ones to make probe
    /// chains long).
    pub(crate) fn with_slots(n: usize) -> Self {
        let n = n.max(1).next_power_of_two();
        VniTable {
            slots: (0..n).map(|_| AtomicU64::new(0)).collect(),
            mask: n - 1,
            moves: Moves::default(),
        }
    }

    #[inline(always)]
    pub fn get(&self, vni: u32) -> Option<u16> {
        for _ in 0..MISS_TRIES {
            let before = self.moves.read_begin();
            let mut i = vni_home(vni, self.mask);
            for _ in 0..self.slots.len() {
                let e = self.slots[i].load(Ordering::Relaxed);
                if e & OCCUPIED == 0 {
                    break;
                }
                if (e & 0xff_ffff) as u32 == vni {
                    return Some(((e >> 24) & 0xfff) as u16);
                }
                i = (i + 1) & self.mask;
            }
            if self.moves.still(before) {
                return None;
            }
        }
        None
    }
    fn check(vni: u32) -> Result<(), Error> {
        if vni == 0 || vni > 0xff_ffff {
            return Err(Error::VniOutOfRange(vni));
        }
        Ok(())
    }
    /// Writer side: the slot holding `vni`, or the free slot ending its probe chain.
    fn find_slot(&self, vni: u32) -> Option<usize> {
        let mut i = vni_home(vni, self.mask);
        for _ in 0..self.slots.len() {
            let e = self.slots[i].load(Ordering::Relaxed);
            if e & OCCUPIED == 0 || (e & 0xff_ffff) as u32 == vni {
                return Some(i);
            }
            i = (i + 1) & self.mask;
        }
        None
    }
    pub(crate) fn set(&self, vni: u32, vrf: u16) -> Result<(), Error> {
        Self::check(vni)?;
        let i = self.find_slot(vni).ok_or(Error::TableFull {
            table: "vxlan",
            capacity: self.slots.len(),
        })?;
        let e = OCCUPIED | (u64::from(vrf & 0xfff) << 24) | u64::from(vni);
        self.slots[i].store(e, Ordering::Relaxed);
        Ok(())
    }
    pub(crate) fn remove(&self, vni: u32) -> Result<(), Error> {
        Self::check(vni)?;
        let missing = || Error::NoSuchEntry {
            table: "vxlan",
            key: vni.to_string(),
        };
        let i = self.find_slot(vni).ok_or_else(missing)?;
        if self.slots[i].load(Ordering::Relaxed) & OCCUPIED == 0 {
            return Err(missing());
        }
        self.moves.backward_shift_delete(
            self.slots.len(),
            i,
            |at| {
                let e = self.slots[at].load(Ordering::Relaxed);
                (e & OCCUPIED != 0).then(|| (e, vni_home((e & 0xff_ffff) as u32, self.mask)))
            },
            |at, e| self.slots[at].store(e.unwrap_or(0), Ordering::Relaxed),
        );
        Ok(())
    }
    pub fn entries(&self) -> Vec<(u32, u16)> {
        self.slots
            .iter()
            .map(|s| s.load(Ordering::Relaxed))
            .filter(|e| e & OCCUPIED != 0)
            .map(|e| ((e & 0xff_ffff) as u32, ((e >> 24) & 0xfff) as u16))
            .collect()
    }
    /// Whether any VNI maps to `vrf`.
    pub fn uses_vrf(&self, vrf: u16) -> bool {
        self.entries().iter().any(|&(_, v)| v == vrf)
    }
    /// Slots holding an entry (equal to the entries present: removed ones leave nothing).
    pub fn occupied(&self) -> usize {
        self.entries().len()
    }
    pub fn capacity(&self) -> usize {
        self.slots.len()
    }
}

/// Per-VRF bridge table: MAC → (nexthop, label). Linear probing (see [`Moves`]); each slot is a
/// [`SeqCell`] of (key, value) so a reader never pairs one MAC with another's value.
#[derive(Debug)]
pub struct BridgeTable {
    slots: Box<[SeqCell<2>]>,
    moves: Moves,
}

impl BridgeTable {
    pub fn new(capacity: usize) -> Self {
        BridgeTable {
            slots: (0..capacity.max(1)).map(|_| SeqCell::default()).collect(),
            moves: Moves::default(),
        }
    }

    #[inline(always)]
    fn home(&self, mac: u64) -> usize {
        (mac.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 32) as usize % self.slots.len()
    }

    #[inline(always)]
    pub fn get(&self, mac: MacAddr) -> Option<RouteTarget> {
        let key = mac.to_u64();
        let n = self.slots.len();
        for _ in 0..MISS_TRIES {
            let before = self.moves.read_begin();
            let mut i = self.home(key);
            for _ in 0..n {
                let [k, v] = self.slots[i].read()?;
                if k & OCCUPIED == 0 {
                    break;
                }
                if k & MAC_MASK == key {
                    return Some(RouteTarget::from_payload(v));
                }
                i = (i + 1) % n;
            }
            if self.moves.still(before) {
                return None;
            }
        }
        None
    }

    /// Writer side: the slot holding `key`, or the free slot ending its probe chain.
    fn find_slot(&self, key: u64) -> Option<usize> {
        let n = self.slots.len();
        let mut i = self.home(key);
        for _ in 0..n {
            let [k, _] = self.slots[i].read()?;
            if k & OCCUPIED == 0 || k & MAC_MASK == key {
                return Some(i);
            }
            i = (i + 1) % n;
        }
        None
    }

    pub(crate) fn set(&self, mac: MacAddr, target: RouteTarget) -> Result<(), Error> {
        let key = mac.to_u64();
        let i = self.find_slot(key).ok_or(Error::TableFull {
            table: "bridge",
            capacity: self.slots.len(),
        })?;
        self.slots[i].write([OCCUPIED | key, target.to_payload()]);
        Ok(())
    }

    pub(crate) fn remove(&self, mac: MacAddr) -> Result<(), Error> {
        let key = mac.to_u64();
        let missing = || Error::NoSuchEntry {
            table: "bridge",
            key: mac.to_string(),
        };
        let i = self.find_slot(key).ok_or_else(missing)?;
        if !matches!(self.slots[i].read(), Some([k, _]) if k & OCCUPIED != 0) {
            return Err(missing());
        }
        self.moves.backward_shift_delete(
            self.slots.len(),
            i,
            |at| {
                // The writer's own reads never overlap a write: always `Some`.
                let [k, v] = self.slots[at].read()?;
                (k & OCCUPIED != 0).then(|| ([k, v], self.home(k & MAC_MASK)))
            },
            |at, e| self.slots[at].write(e.unwrap_or([0, 0])),
        );
        Ok(())
    }

    pub fn entries(&self) -> Vec<(MacAddr, RouteTarget)> {
        self.slots
            .iter()
            .filter_map(|s| s.read())
            .filter(|[k, _]| k & OCCUPIED != 0)
            .map(|[k, v]| {
                (
                    MacAddr::from_u64(k & MAC_MASK),
                    RouteTarget::from_payload(v),
                )
            })
            .collect()
    }

    /// Slots holding an entry (equal to the entries present: removed ones leave nothing).
    pub fn occupied(&self) -> usize {
        self.entries().len()
    }

    pub fn capacity(&self) -> usize {
        self.slots.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::HashMap;

    #[derive(Debug, Clone)]
    enum Op {
        Set(u32, u16),
        Del(u32),
    }

    /// Keys from a pool a few times the table's size, as many removals as additions.
    fn ops(keys: u32) -> impl Strategy<Value = Vec<Op>> {
        let op = prop_oneof![
            1 => (1..=keys, 0u16..4096).prop_map(|(k, v)| Op::Set(k, v)),
            1 => (1..=keys).prop_map(Op::Del),
        ];
        proptest::collection::vec(op, 1..250)
    }

    fn mac(k: u32) -> MacAddr {
        // Keys spread over the whole MAC, so homes collide as real ones do.
        MacAddr::from_u64(u64::from(k).wrapping_mul(0x9e37_79b9_7f4a_7c15) & MAC_MASK)
    }

    fn target(v: u16) -> RouteTarget {
        RouteTarget {
            nexthop: u32::from(v),
            label: Some(u32::from(v) + 1),
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(128))]

        /// Against a map: every key answers as the map does after every step, the table is
        /// full only when it holds `slots` entries, and it never holds a slot for a removed key.
        #[test]
        fn vni_table_matches_a_map_under_churn(slots in 1usize..40, o in ops(80)) {
            let t = VniTable::with_slots(slots);
            let slots = t.capacity();
            let mut m: HashMap<u32, u16> = HashMap::new();
            for op in o {
                match op {
                    Op::Set(k, v) => match t.set(k, v) {
                        Ok(()) => { m.insert(k, v); }
                        Err(Error::TableFull { capacity, .. }) => {
                            prop_assert_eq!(capacity, slots);
                            prop_assert_eq!(m.len(), slots);
                            prop_assert!(!m.contains_key(&k));
                        }
                        Err(e) => prop_assert!(false, "{}", e),
                    },
                    Op::Del(k) => prop_assert_eq!(t.remove(k).is_ok(), m.remove(&k).is_some()),
                }
                for k in 1..=80 {
                    prop_assert_eq!(t.get(k), m.get(&k).copied(), "vni {}", k);
                }
                prop_assert_eq!(t.occupied(), m.len());
            }
        }

        #[test]
        fn bridge_table_matches_a_map_under_churn(slots in 1usize..40, o in ops(80)) {
            let t = BridgeTable::new(slots);
            let mut m: HashMap<u32, u16> = HashMap::new();
            for op in o {
                match op {
                    Op::Set(k, v) => match t.set(mac(k), target(v)) {
                        Ok(()) => { m.insert(k, v); }
                        Err(Error::TableFull { capacity, .. }) => {
                            prop_assert_eq!(capacity, slots);
                            prop_assert_eq!(m.len(), slots);
                            prop_assert!(!m.contains_key(&k));
                        }
                        Err(e) => prop_assert!(false, "{}", e),
                    },
                    Op::Del(k) => prop_assert_eq!(t.remove(mac(k)).is_ok(), m.remove(&k).is_some()),
                }
                for k in 1..=80 {
                    prop_assert_eq!(t.get(mac(k)), m.get(&k).map(|&v| target(v)), "key {}", k);
                }
                prop_assert_eq!(t.occupied(), m.len());
            }
        }
    }

    /// A writer adds ever new keys and removes the oldest, keeping a table of 64 slots
    /// three-quarters full, so removals keep moving later keys back along their probe chains.
    /// A reader looks up keys the writer has published as added and not yet as going: a key
    /// missed while the writer still had not announced its removal once the lookup was over was
    /// present throughout the lookup, and is a failure.
    #[test]
    fn lookups_never_miss_a_present_key_while_others_are_removed() {
        use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64};
        const SLOTS: usize = 64;
        const WINDOW: u32 = 48;
        let vnis = VniTable::with_slots(SLOTS);
        let bridge = BridgeTable::new(SLOTS);
        let vrf = |k: u32| (k & 0xfff) as u16;
        // Keys lo..=hi are present.
        let (lo, hi) = (AtomicU32::new(1), AtomicU32::new(0));
        let stop = AtomicBool::new(false);
        let reads = AtomicU64::new(0);
        std::thread::scope(|s| {
            let reader = s.spawn(|| {
                let (mut n, mut x) = (0u64, 7u32);
                while !stop.load(Ordering::Relaxed) {
                    let (l, h) = (lo.load(Ordering::Acquire), hi.load(Ordering::Acquire));
                    if h < l {
                        continue;
                    }
                    x ^= x << 13;
                    x ^= x >> 17;
                    x ^= x << 5;
                    let k = l + x % (h - l + 1);
                    let (v, b) = (vnis.get(k), bridge.get(mac(k)));
                    fence(Ordering::Acquire);
                    let going = lo.load(Ordering::Relaxed) > k;
                    assert!(v == Some(vrf(k)) || v.is_none() && going, "vni {k}: {v:?}");
                    assert!(
                        b == Some(target(vrf(k))) || b.is_none() && going,
                        "mac {k}: {b:?}"
                    );
                    n += 1;
                    reads.store(n, Ordering::Relaxed);
                }
                n
            });
            // No clock: the writer goes on until the reader has checked a good number of keys
            // while it wrote, so the checks ran against removals however the threads were
            // scheduled (and stops if the reader's checks failed).
            let mut k = 1u32;
            while (k < 20_000 || reads.load(Ordering::Relaxed) < 200_000)
                && !reader.is_finished()
                && k < 0xff_0000
            {
                vnis.set(k, vrf(k)).unwrap();
                bridge.set(mac(k), target(vrf(k))).unwrap();
                hi.store(k, Ordering::Release);
                if k >= WINDOW {
                    let old = k + 1 - WINDOW;
                    // Announced before the removal's first write (a reader that sees one
                    // of those sees this).
                    lo.store(old + 1, Ordering::Relaxed);
                    fence(Ordering::Release);
                    vnis.remove(old).unwrap();
                    bridge.remove(mac(old)).unwrap();
                }
                k += 1;
            }
            stop.store(true, Ordering::Relaxed);
            assert!(reader.join().expect("the reader's checks held") >= 200_000);
        });
        assert_eq!(vnis.occupied(), WINDOW as usize - 1);
        assert_eq!(bridge.occupied(), WINDOW as usize - 1);
    }

    #[test]
    fn label_vni_and_bridge_tables_add_find_remove() {
        let l = LabelTable::default();
        let nh = LabelTarget::Nexthop;
        l.set(100, nh(7)).unwrap();
        assert_eq!(l.get(100), Some(nh(7)));
        assert_eq!(l.get(101), None);
        l.set(101, nh(0)).unwrap();
        assert_eq!(l.get(101), Some(nh(0)), "nexthop 0 is an entry, not a hole");
        l.set(102, LabelTarget::Vrf(4095)).unwrap();
        assert_eq!(l.get(102), Some(LabelTarget::Vrf(4095)));
        l.set(102, LabelTarget::Vrf(0)).unwrap();
        assert_eq!(l.get(102), Some(LabelTarget::Vrf(0)), "vrf 0 too");
        assert_eq!(
            l.entries(),
            vec![(100, nh(7)), (101, nh(0)), (102, LabelTarget::Vrf(0))]
        );
        assert!(l.set(103, nh(u32::MAX)).is_err());
        assert_eq!(l.get(103), None);
        l.remove(101).unwrap();
        l.remove(102).unwrap();
        assert_eq!(l.set(3, nh(1)), Err(Error::LabelOutOfRange(3)));
        assert_eq!(l.set(1 << 20, nh(1)), Err(Error::LabelOutOfRange(1 << 20)));
        l.remove(100).unwrap();
        assert_eq!(l.get(100), None);
        assert!(l.remove(100).is_err());

        let v = VniTable::default();
        for vni in 1..2000 {
            v.set(vni, (vni % 4096) as u16).unwrap();
        }
        assert_eq!(v.get(1999), Some(1999));
        v.remove(5).unwrap();
        assert_eq!(v.get(5), None);
        assert_eq!(v.get(6), Some(6), "removals keep probe chains");
        v.set(5, 9).unwrap();
        assert_eq!(v.get(5), Some(9));
        assert_eq!(v.set(0, 1), Err(Error::VniOutOfRange(0)));

        let b = BridgeTable::new(8);
        let t = RouteTarget {
            nexthop: 3,
            label: Some(77),
        };
        for i in 0..8u8 {
            b.set(MacAddr([2, 0, 0, 0, 0, i]), t).unwrap();
        }
        assert!(matches!(
            b.set(MacAddr([2, 0, 0, 0, 1, 0]), t),
            Err(Error::TableFull { .. })
        ));
        assert_eq!(b.get(MacAddr([2, 0, 0, 0, 0, 4])), Some(t));
        b.remove(MacAddr([2, 0, 0, 0, 0, 4])).unwrap();
        assert_eq!(b.get(MacAddr([2, 0, 0, 0, 0, 4])), None);
        assert_eq!(b.get(MacAddr([2, 0, 0, 0, 0, 5])), Some(t));
        assert_eq!(b.entries().len(), 7);
    }
}
