//! The small exact-match tables: MPLS label → nexthop, VXLAN VNI → VRF, and the per-VRF bridge
//! table MAC → (nexthop, label). Entries are updated in place, one at a time.

use super::seqcell::SeqCell;
use super::RouteTarget;
use crate::wire::{mpls, MacAddr};
use crate::Error;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};

/// Incoming MPLS label → nexthop id. A direct array over the whole 20-bit label space (4 MiB):
/// one load per lookup.
#[derive(Debug)]
pub struct LabelTable {
    /// `nexthop + 1`, 0 = no entry.
    entries: Box<[AtomicU32]>,
}

impl Default for LabelTable {
    fn default() -> Self {
        LabelTable {
            entries: (0..=mpls::MAX_LABEL).map(|_| AtomicU32::new(0)).collect(),
        }
    }
}

impl LabelTable {
    #[inline(always)]
    pub fn get(&self, label: u32) -> Option<u32> {
        let v = self.entries.get(label as usize)?.load(Ordering::Relaxed);
        v.checked_sub(1)
    }
    fn check(label: u32) -> Result<(), Error> {
        if !(16..=mpls::MAX_LABEL).contains(&label) {
            return Err(Error::LabelOutOfRange(label));
        }
        Ok(())
    }
    pub(crate) fn set(&self, label: u32, nexthop: u32) -> Result<(), Error> {
        Self::check(label)?;
        self.entries[label as usize].store(nexthop.saturating_add(1), Ordering::Relaxed);
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
    pub fn entries(&self) -> Vec<(u32, u32)> {
        self.entries
            .iter()
            .enumerate()
            .filter_map(|(l, e)| {
                e.load(Ordering::Relaxed)
                    .checked_sub(1)
                    .map(|n| (l as u32, n))
            })
            .collect()
    }
}

const VNI_SLOTS: usize = 1 << 16;
const OCCUPIED: u64 = 1 << 63;
const LIVE: u64 = 1 << 62;

/// VXLAN VNI → VRF: open addressing over single-word entries (`occupied | live | vrf << 24 |
/// vni`), so a reader always sees a whole entry. A removed entry keeps its slot (not live) so
/// probe chains stay intact; re-adding the VNI reuses it.
#[derive(Debug)]
pub struct VniTable {
    slots: Box<[AtomicU64]>,
}

impl Default for VniTable {
    fn default() -> Self {
        VniTable {
            slots: (0..VNI_SLOTS).map(|_| AtomicU64::new(0)).collect(),
        }
    }
}

#[inline(always)]
fn vni_home(vni: u32) -> usize {
    (vni.wrapping_mul(0x9E37_79B9) >> 16) as usize % VNI_SLOTS
}

impl VniTable {
    #[inline(always)]
    pub fn get(&self, vni: u32) -> Option<u16> {
        let mut i = vni_home(vni);
        for _ in 0..VNI_SLOTS {
            let e = self.slots[i].load(Ordering::Relaxed);
            if e & OCCUPIED == 0 {
                return None;
            }
            if (e & 0xff_ffff) as u32 == vni {
                return (e & LIVE != 0).then_some(((e >> 24) & 0xfff) as u16);
            }
            i = (i + 1) % VNI_SLOTS;
        }
        None
    }
    fn check(vni: u32) -> Result<(), Error> {
        if vni == 0 || vni > 0xff_ffff {
            return Err(Error::VniOutOfRange(vni));
        }
        Ok(())
    }
    fn find_slot(&self, vni: u32) -> Option<usize> {
        let mut i = vni_home(vni);
        for _ in 0..VNI_SLOTS {
            let e = self.slots[i].load(Ordering::Relaxed);
            if e & OCCUPIED == 0 || (e & 0xff_ffff) as u32 == vni {
                return Some(i);
            }
            i = (i + 1) % VNI_SLOTS;
        }
        None
    }
    pub(crate) fn set(&self, vni: u32, vrf: u16) -> Result<(), Error> {
        Self::check(vni)?;
        let i = self.find_slot(vni).ok_or(Error::TableFull {
            table: "vxlan",
            capacity: VNI_SLOTS,
        })?;
        let e = OCCUPIED | LIVE | (u64::from(vrf & 0xfff) << 24) | u64::from(vni);
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
        let e = self.slots[i].load(Ordering::Relaxed);
        if e & LIVE == 0 {
            return Err(missing());
        }
        self.slots[i].store(e & !LIVE, Ordering::Relaxed);
        Ok(())
    }
    pub fn entries(&self) -> Vec<(u32, u16)> {
        self.slots
            .iter()
            .map(|s| s.load(Ordering::Relaxed))
            .filter(|e| e & LIVE != 0)
            .map(|e| ((e & 0xff_ffff) as u32, ((e >> 24) & 0xfff) as u16))
            .collect()
    }
    /// Whether any VNI maps to `vrf`.
    pub fn uses_vrf(&self, vrf: u16) -> bool {
        self.entries().iter().any(|&(_, v)| v == vrf)
    }
}

/// Per-VRF bridge table: MAC → (nexthop, label). Open addressing; each slot is a [`SeqCell`] of
/// (key, value) so a reader never pairs one MAC with another's value. Removed entries stay as
/// tombstones for their MAC (reused when it comes back).
#[derive(Debug)]
pub struct BridgeTable {
    slots: Box<[SeqCell<2>]>,
}

impl BridgeTable {
    pub fn new(capacity: usize) -> Self {
        BridgeTable {
            slots: (0..capacity.max(1)).map(|_| SeqCell::default()).collect(),
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
        let mut i = self.home(key);
        for _ in 0..n {
            let [k, v] = self.slots[i].read()?;
            if k & OCCUPIED == 0 {
                return None;
            }
            if k & 0xffff_ffff_ffff == key {
                return (k & LIVE != 0).then(|| RouteTarget::from_payload(v));
            }
            i = (i + 1) % n;
        }
        None
    }

    fn find_slot(&self, key: u64) -> Option<usize> {
        let n = self.slots.len();
        let mut i = self.home(key);
        for _ in 0..n {
            let [k, _] = self.slots[i].read()?;
            if k & OCCUPIED == 0 || k & 0xffff_ffff_ffff == key {
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
        self.slots[i].write([OCCUPIED | LIVE | key, target.to_payload()]);
        Ok(())
    }

    pub(crate) fn remove(&self, mac: MacAddr) -> Result<(), Error> {
        let key = mac.to_u64();
        let missing = || Error::NoSuchEntry {
            table: "bridge",
            key: mac.to_string(),
        };
        let i = self.find_slot(key).ok_or_else(missing)?;
        match self.slots[i].read() {
            Some([k, _]) if k & LIVE != 0 => {
                self.slots[i].write([OCCUPIED | key, 0]);
                Ok(())
            }
            _ => Err(missing()),
        }
    }

    pub fn entries(&self) -> Vec<(MacAddr, RouteTarget)> {
        self.slots
            .iter()
            .filter_map(|s| s.read())
            .filter(|[k, _]| k & LIVE != 0)
            .map(|[k, v]| {
                (
                    MacAddr::from_u64(k & 0xffff_ffff_ffff),
                    RouteTarget::from_payload(v),
                )
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn label_vni_and_bridge_tables_add_find_remove() {
        let l = LabelTable::default();
        l.set(100, 7).unwrap();
        assert_eq!(l.get(100), Some(7));
        assert_eq!(l.get(101), None);
        assert_eq!(l.set(3, 1), Err(Error::LabelOutOfRange(3)));
        assert_eq!(l.set(1 << 20, 1), Err(Error::LabelOutOfRange(1 << 20)));
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
        assert_eq!(v.get(6), Some(6), "tombstones keep probe chains");
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
