//! Huge-page backing for the large tables that live on the ordinary heap (the flow table).
//!
//! A random lookup over a few hundred MiB of 4 KiB pages misses the TLB almost every time, and
//! in a VM each miss is a two-dimensional page walk. Transparent huge pages cut that to a
//! handful of TLB entries. The kernel is asked for them with `madvise`: `MADV_HUGEPAGE` marks
//! the range (later faults and khugepaged use huge pages, even when THP is in `madvise` mode)
//! and `MADV_COLLAPSE` (Linux 6.1+) turns the pages already there into huge pages now.
//! Neither changes the contents of the memory, which is why a safe function may call them on
//! any range.

use std::io;

/// The huge page size THP uses on x86-64.
pub const HUGE_PAGE: usize = 2 << 20;

/// What [`back_with_huge_pages`] got from the kernel for one range.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HugeBacking {
    /// Bytes of the range that lie in whole 2 MiB pages (only those can be huge).
    pub eligible: usize,
    /// Bytes of the range the kernel reports as backed by huge pages afterwards
    /// (`AnonHugePages` of the mappings inside the range, from `/proc/self/smaps`).
    pub huge: usize,
    /// Why the kernel refused the collapse, if it did (e.g. THP disabled, or a kernel before
    /// 6.1 without `MADV_COLLAPSE`; `huge` then says what khugepaged managed so far).
    pub collapse_error: Option<i32>,
}

/// The whole 2 MiB pages inside `start..start + len`.
fn aligned_interior(start: usize, len: usize) -> Option<(usize, usize)> {
    let end = start.checked_add(len)?;
    let first = start.checked_add(HUGE_PAGE - 1)? & !(HUGE_PAGE - 1);
    let last = end & !(HUGE_PAGE - 1);
    (last > first).then(|| (first, last - first))
}

/// Ask for huge pages over the whole 2 MiB pages of `start..start + len`, an address range of
/// this process's anonymous memory (a table's allocation, as `as_ptr() as usize` and its size
/// in bytes), and report what the kernel did. Errors only when the range cannot be advised at
/// all (`MADV_HUGEPAGE` failed); a refused collapse is reported in [`HugeBacking`].
pub fn back_with_huge_pages(start: usize, len: usize) -> io::Result<HugeBacking> {
    let Some((first, size)) = aligned_interior(start, len) else {
        return Ok(HugeBacking {
            eligible: 0,
            huge: 0,
            collapse_error: None,
        });
    };
    // SAFETY: madvise with MADV_HUGEPAGE only sets a flag on the mappings of the range; it
    // neither reads nor changes the memory, so no Rust reference to it can be invalidated.
    // A range with unmapped holes makes the call fail with ENOMEM (the flag may then be set on
    // the mapped parts, which is as harmless), returned below as an error.
    let rc = unsafe { libc::madvise(first as *mut libc::c_void, size, libc::MADV_HUGEPAGE) };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    let mut collapse_error = None;
    for _ in 0..COLLAPSE_TRIES {
        // SAFETY: MADV_COLLAPSE copies the range's pages into huge pages and remaps them with
        // the same contents (the kernel makes this atomic for concurrent readers and writers);
        // the memory's values and validity are unchanged. Failure is reported, not fatal.
        let rc = unsafe { libc::madvise(first as *mut libc::c_void, size, libc::MADV_COLLAPSE) };
        collapse_error = (rc != 0).then(|| io::Error::last_os_error().raw_os_error().unwrap_or(0));
        // EAGAIN: a transient failure (pages locked, or no free huge page just then).
        if collapse_error != Some(libc::EAGAIN) {
            break;
        }
    }
    Ok(HugeBacking {
        eligible: size,
        huge: huge_bytes(first, size)?,
        collapse_error,
    })
}

/// Attempts at a collapse the kernel calls transient (EAGAIN) before reporting it.
const COLLAPSE_TRIES: usize = 3;

/// Bytes of `start..start + len` backed by anonymous huge pages, from `/proc/self/smaps`.
///
/// smaps counts `AnonHugePages` per mapping, not per address. Advising a range splits its
/// mappings at the range's ends, so a freshly advised range is usually exactly its own
/// mappings; but the kernel merges it back with a neighbour that carries the same flags (one
/// advised before, e.g. by glibc's `glibc.malloc.hugetlb` tunable), and such a mapping's huge
/// pages cannot be placed. A mapping that only overlaps the range therefore contributes at
/// most the size of the overlap: exact for mappings inside the range, an upper bound for one
/// that sticks out.
pub fn huge_bytes(start: usize, len: usize) -> io::Result<usize> {
    huge_bytes_in(&std::fs::read_to_string("/proc/self/smaps")?, start, len)
}

/// [`huge_bytes`] over the text of an smaps file.
fn huge_bytes_in(smaps: &str, start: usize, len: usize) -> io::Result<usize> {
    let end = start.saturating_add(len);
    // The overlap of the current mapping with the range (0 when they do not meet).
    let mut overlap = 0usize;
    let mut total = 0usize;
    for line in smaps.lines() {
        if let Some((lo, hi)) = mapping_header(line) {
            overlap = hi.min(end).saturating_sub(lo.max(start));
            continue;
        }
        if overlap == 0 {
            continue;
        }
        if let Some(kb) = line.strip_prefix("AnonHugePages:") {
            let kb: usize = kb
                .trim()
                .trim_end_matches("kB")
                .trim()
                .parse()
                .map_err(|e| io::Error::other(format!("smaps AnonHugePages {kb:?}: {e}")))?;
            total += kb.saturating_mul(1024).min(overlap);
        }
    }
    Ok(total)
}

/// The address range of an smaps mapping header (`lo-hi perms offset dev inode [path]`).
fn mapping_header(line: &str) -> Option<(usize, usize)> {
    let (range, _) = line.split_once(' ')?;
    let (lo, hi) = range.split_once('-')?;
    Some((
        usize::from_str_radix(lo, 16).ok()?,
        usize::from_str_radix(hi, 16).ok()?,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_interior_is_the_whole_huge_pages_of_a_range() {
        assert_eq!(aligned_interior(0, HUGE_PAGE - 1), None);
        assert_eq!(
            aligned_interior(1, 2 * HUGE_PAGE),
            Some((HUGE_PAGE, HUGE_PAGE))
        );
        assert_eq!(
            aligned_interior(HUGE_PAGE, 3 * HUGE_PAGE + 5),
            Some((HUGE_PAGE, 3 * HUGE_PAGE))
        );
        assert_eq!(aligned_interior(usize::MAX - 10, 100), None);
    }

    const SMAPS: &str = "\
00400000-00600000 r--p 00000000 fd:00 42   /usr/bin/vrouterd
Size:               2048 kB
AnonHugePages:      2048 kB
7f0000000000-7f0000800000 rw-p 00000000 00:00 0
Size:               8192 kB
AnonHugePages:      6144 kB
VmFlags: rd wr mr mw me ac hg
7f0000800000-7f0001000000 rw-p 00000000 00:00 0
Size:               8192 kB
AnonHugePages:      8192 kB
VmFlags: rd wr mr mw me ac hg
";

    #[test]
    fn mappings_inside_the_range_count_in_full() {
        let (start, end) = (0x7f00_0000_0000, 0x7f00_0100_0000);
        assert_eq!(
            huge_bytes_in(SMAPS, start, end - start).unwrap(),
            (6144 + 8192) << 10
        );
        assert_eq!(
            huge_bytes_in(SMAPS, 0x7f00_0080_0000, 8 << 20).unwrap(),
            8 << 20
        );
    }

    #[test]
    fn a_mapping_that_sticks_out_of_the_range_counts_at_most_its_overlap() {
        // The last 4 MiB of the 8 MiB mapping that holds 6 MiB of huge pages, and 2 MiB of the
        // next one: before, a mapping merged with an advised neighbour read as 0.
        let start = 0x7f00_0040_0000;
        assert_eq!(
            huge_bytes_in(SMAPS, start, 6 << 20).unwrap(),
            (4 << 20) + (2 << 20)
        );
    }

    #[test]
    fn mappings_outside_the_range_do_not_count() {
        assert_eq!(huge_bytes_in(SMAPS, 0x1000_0000, 1 << 30).unwrap(), 0);
        assert_eq!(huge_bytes_in(SMAPS, 0x7f00_0000_0000, 0).unwrap(), 0);
    }

    #[test]
    fn an_unreadable_count_is_an_error() {
        let bad = "7f0000000000-7f0000200000 rw-p 0 00:00 0\nAnonHugePages: lots kB\n";
        assert!(huge_bytes_in(bad, 0x7f00_0000_0000, 1 << 21).is_err());
    }
}
