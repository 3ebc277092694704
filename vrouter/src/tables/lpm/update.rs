//! Route updates: an insert or a removal paints its prefix's value into every entry the
//! prefix covers, creating groups below where it ends, and a removal then folds groups left
//! uniform into their parent entries.

use std::sync::atomic::{AtomicU64, Ordering};

use arrayvec::ArrayVec;

use super::{
    depth_of, leaf, mask_low_n, Lpm, LpmError, Writer, EXT, GROUP_BITS, MAX_DEPTH, PAYLOAD_MASK,
    ROOT_BITS, VALID,
};

/// A group entered on the way down: the entry pointing at it, its index, and the key bits
/// above it (what an inherited value's depth is at most).
type Step<'a> = (&'a AtomicU64, u32, u8);

#[derive(Clone, Copy, PartialEq, Eq)]
enum Mode {
    Insert,
    Delete,
}

impl Lpm {
    fn check(&self, prefix: u128, len: u8) -> Result<(), LpmError> {
        if len > self.bits {
            return Err(LpmError::BadLength);
        }
        if prefix & mask_low_n(self.bits, len) != 0 {
            return Err(LpmError::HostBits);
        }
        if self.bits < 128 && prefix >> self.bits != 0 {
            return Err(LpmError::HostBits);
        }
        Ok(())
    }

    /// Add or replace the route `prefix/len` with `payload` (at most [`PAYLOAD_BITS`] bits).
    ///
    /// [`PAYLOAD_BITS`]: super::PAYLOAD_BITS
    pub fn insert(&self, prefix: u128, len: u8, payload: u64) -> Result<(), LpmError> {
        self.check(prefix, len)?;
        let mut w = self.lock();
        // Checked before anything is written, so a refused insert leaves no empty groups.
        self.make_room(&mut w, self.groups_needed(prefix, len))?;
        let mut path = ArrayVec::new();
        self.paint(
            &mut w,
            prefix,
            len,
            leaf(payload, len),
            Mode::Insert,
            &mut path,
        )?;
        w.rules.insert((prefix, len), payload & PAYLOAD_MASK);
        Ok(())
    }

    /// Remove the route `prefix/len`; addresses it covered fall back to the next shorter route.
    pub fn remove(&self, prefix: u128, len: u8) -> Result<(), LpmError> {
        self.check(prefix, len)?;
        let mut w = self.lock();
        if w.rules.remove(&(prefix, len)).is_none() {
            return Err(LpmError::NotFound);
        }
        let fallback = (0..len)
            .rev()
            .find_map(|l| {
                let p = prefix & !mask_low_n(self.bits, l);
                w.rules.get(&(p, l)).map(|&v| leaf(v, l))
            })
            .unwrap_or(0);
        let mut path = ArrayVec::new();
        let painted = self.paint(&mut w, prefix, len, fallback, Mode::Delete, &mut path);
        self.collapse(&mut w, &path);
        self.bound_backlog(&mut w);
        painted
    }

    /// Write `new` into every entry `prefix/len` covers, creating groups down to the level
    /// where the prefix ends (insert) and recursing into deeper groups. `path` gets the groups
    /// entered on the way down.
    fn paint<'a>(
        &'a self,
        w: &mut Writer,
        prefix: u128,
        len: u8,
        new: u64,
        mode: Mode,
        path: &mut ArrayVec<Step<'a>, MAX_DEPTH>,
    ) -> Result<(), LpmError> {
        let full = LpmError::Full {
            limit: self.max_groups,
        };
        let mut start: u8 = 0;
        let mut stride = ROOT_BITS;
        let mut table: &[AtomicU64] = self.root.get_or_init(|| {
            (0..1usize << ROOT_BITS)
                .map(|_| AtomicU64::new(0))
                .collect()
        });
        loop {
            let end = start + stride;
            let shift = u32::from(self.bits - end);
            let slot = ((prefix >> shift) & ((1u128 << stride) - 1)) as usize;
            if len <= end {
                let count = 1usize << (end - len);
                for e in &table[slot..slot + count] {
                    self.paint_entry(e, new, len, mode);
                }
                return Ok(());
            }
            let parent = &table[slot];
            let e = parent.load(Ordering::Acquire);
            let g = if e & EXT != 0 {
                (e & 0xffff_ffff) as usize
            } else {
                if mode == Mode::Delete {
                    // Nothing was ever painted below here.
                    return Ok(());
                }
                let g = self.alloc_group(w, e)?;
                // The group is complete before the pointer to it becomes visible.
                parent.store(EXT | g as u64, Ordering::Release);
                g
            };
            table = self.group(g).ok_or(full)?;
            path.try_push((parent, g as u32, end)).map_err(|_| full)?;
            start = end;
            stride = GROUP_BITS;
        }
    }

    fn paint_entry(&self, e: &AtomicU64, new: u64, len: u8, mode: Mode) {
        let cur = e.load(Ordering::Acquire);
        if cur & EXT != 0 {
            if let Some(g) = self.group((cur & 0xffff_ffff) as usize) {
                for c in g {
                    self.paint_entry(c, new, len, mode);
                }
            }
            return;
        }
        let replace = match mode {
            Mode::Insert => cur & VALID == 0 || depth_of(cur) <= len,
            Mode::Delete => cur & VALID != 0 && depth_of(cur) == len,
        };
        if replace {
            e.store(new, Ordering::Release);
        }
    }

    /// After a removal: from the deepest group on `path` up, fold each group left holding one
    /// value everywhere into its parent entry and retire it, until one still differs.
    ///
    /// Only a value inherited from above (no deeper than the bits above the group) or no route
    /// folds: a uniform group of longer routes (two /17s side by side) stays, since an entry
    /// above it cannot say which of them a later removal splits off.
    fn collapse(&self, w: &mut Writer, path: &[Step<'_>]) {
        let mut unlinked: ArrayVec<u32, MAX_DEPTH> = ArrayVec::new();
        for &(parent, g, above) in path.iter().rev() {
            let Some(group) = self.group(g as usize) else {
                break;
            };
            let first = group[0].load(Ordering::Relaxed);
            let inherited = first & EXT == 0 && (first & VALID == 0 || depth_of(first) <= above);
            if !inherited || group.iter().any(|e| e.load(Ordering::Relaxed) != first) {
                break;
            }
            // Readers that come later stop at the parent; those already inside read on the
            // unchanged group until their grace period ends.
            parent.store(first, Ordering::Release);
            unlinked.push(g);
        }
        w.unlinked.extend(unlinked);
    }
}
