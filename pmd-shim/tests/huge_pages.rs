//! Huge-page backing of heap memory, checked against what the kernel reports in
//! /proc/self/smaps (no DPDK, no hugetlbfs: transparent huge pages).

use pmd_shim::memory::{back_with_huge_pages, huge_bytes, HUGE_PAGE};

fn thp_mode() -> String {
    std::fs::read_to_string("/sys/kernel/mm/transparent_hugepage/enabled").unwrap_or_default()
}

#[test]
fn a_filled_heap_table_ends_up_in_huge_pages_with_its_contents_unchanged() {
    assert!(
        !thp_mode().contains("[never]"),
        "transparent huge pages are disabled on this machine \
         (/sys/kernel/mm/transparent_hugepage/enabled: {}); vrouterd's flow table then runs \
         on 4 KiB pages",
        thp_mode().trim()
    );
    // 64 MiB of words, every page written (as a table built at start is).
    let words = 8 << 20;
    let table: Vec<u64> = (0..words as u64)
        .map(|i| i.wrapping_mul(0x9e37_79b9_7f4a_7c15))
        .collect();
    let (start, len) = (table.as_ptr() as usize, words * 8);
    // In madvise mode nothing asked for huge pages yet (in "always" mode faults may already
    // have brought some); the mapping around the Vec sticks out of its range by malloc's
    // header, so this also reads a mapping that only overlaps the range.
    if thp_mode().contains("[madvise]") {
        assert_eq!(huge_bytes(start, len).expect("smaps"), 0, "not huge before");
    }

    // A machine whose free memory is fragmented (guests and hugetlbfs reservations beside the
    // test) has no free 2 MiB page just then: the kernel says ENOMEM. Compacting memory makes
    // some, as khugepaged would wait for; the collapse must then succeed.
    let mut got = back_with_huge_pages(start, len).expect("madvise");
    for _ in 0..3 {
        if got.collapse_error != Some(libc::ENOMEM) {
            break;
        }
        let _ = std::fs::write("/proc/sys/vm/compact_memory", "1");
        got = back_with_huge_pages(start, len).expect("madvise");
    }
    assert!(
        got.eligible >= len - 2 * HUGE_PAGE,
        "all but the unaligned ends are eligible: {got:?}"
    );
    assert_eq!(got.collapse_error, None, "the kernel collapsed the range");
    assert_eq!(
        got.huge, got.eligible,
        "every eligible byte is in a huge page: {got:?}"
    );
    assert_eq!(huge_bytes(start, len).expect("smaps"), got.huge);
    assert!(
        table
            .iter()
            .enumerate()
            .all(|(i, &w)| w == (i as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15)),
        "contents survive the collapse"
    );
}

#[test]
fn a_range_smaller_than_a_huge_page_is_left_alone() {
    let small = vec![1u8; HUGE_PAGE / 2];
    let got = back_with_huge_pages(small.as_ptr() as usize, small.len()).expect("no-op");
    assert_eq!((got.eligible, got.huge), (0, 0));
}
