use super::*;
use std::io::Write;

fn memfd(len: u64) -> OwnedFd {
    let fd = rustix::fs::memfd_create("test-guest", rustix::fs::MemfdFlags::CLOEXEC).unwrap();
    rustix::fs::ftruncate(&fd, len).unwrap();
    fd
}

fn dup(fd: &OwnedFd) -> OwnedFd {
    fd.try_clone().unwrap()
}

fn spec(gpa: u64, size: u64, uva: u64, off: u64) -> RegionSpec {
    RegionSpec {
        guest_phys_addr: gpa,
        memory_size: size,
        userspace_addr: uva,
        mmap_offset: off,
    }
}

#[test]
fn reads_back_what_was_written_and_translates_uva() {
    let fd = memfd(8192);
    let mem = GuestMemory::map(&[spec(0x1000, 8192, 0x7000_0000, 0)], vec![fd]).unwrap();
    mem.write(0x1010, b"hello").unwrap();
    let mut b = [0u8; 5];
    mem.read(0x1010, &mut b).unwrap();
    assert_eq!(&b, b"hello");
    assert_eq!(mem.uva_to_gpa(0x7000_0010, 5).unwrap(), 0x1010);
    assert!(mem.uva_to_gpa(0x7000_0000 + 8190, 4).is_err());
}

#[test]
fn mmap_offset_selects_the_region_inside_its_file() {
    use std::io::{Seek, SeekFrom};
    let fd = memfd(3 * 4096);
    let mut f = std::fs::File::from(fd.try_clone().unwrap());
    f.seek(SeekFrom::Start(4096 + 100)).unwrap();
    f.write_all(b"offset!").unwrap();
    // Region starts 4000 bytes into the file (not page aligned).
    let mem = GuestMemory::map(&[spec(0x10_0000, 8192, 0, 4000)], vec![fd]).unwrap();
    let mut b = [0u8; 7];
    mem.read(0x10_0000 + 196, &mut b).unwrap();
    assert_eq!(&b, b"offset!");
    assert!(mem.read(0x10_0000 + 8190, &mut b).is_err());
}

#[test]
fn out_of_range_and_overflowing_accesses_are_refused() {
    let mem = GuestMemory::map(&[spec(0x1000, 4096, 0, 0)], vec![memfd(4096)]).unwrap();
    let mut b = [0u8; 8];
    assert!(mem.read(0x0fff, &mut b).is_err());
    assert!(
        mem.read(0x1000 + 4090, &mut b).is_err(),
        "straddles the end of the only region"
    );
    assert!(mem.read(u64::MAX - 3, &mut b).is_err(), "u64 overflow");
    assert!(mem.write(u64::MAX, &b).is_err());
    assert!(mem.check_range(0x1000, u64::MAX).is_err());
}

#[test]
fn straddling_adjacent_regions_is_split_correctly() {
    let a = memfd(4096);
    let b = memfd(4096);
    let mem = GuestMemory::map(
        &[spec(0, 4096, 0x10_0000, 0), spec(4096, 4096, 0x20_0000, 0)],
        vec![dup(&a), dup(&b)],
    )
    .unwrap();
    let data: Vec<u8> = (0..64u8).collect();
    mem.write(4096 - 32, &data).unwrap();
    let mut back = vec![0u8; 64];
    mem.read(4096 - 32, &mut back).unwrap();
    assert_eq!(back, data);
    // The bytes really landed in both files.
    let mut fa = std::fs::File::from(a);
    let mut fb = std::fs::File::from(b);
    let mut tail = [0u8; 32];
    let mut head = [0u8; 32];
    use std::io::{Read, Seek, SeekFrom};
    fa.seek(SeekFrom::Start(4096 - 32)).unwrap();
    fa.read_exact(&mut tail).unwrap();
    fb.read_exact(&mut head).unwrap();
    assert_eq!(&tail[..], &data[..32]);
    assert_eq!(&head[..], &data[32..]);
    fb.flush().unwrap();
}

#[test]
fn region_larger_than_its_file_is_refused_before_mapping() {
    let err = GuestMemory::map(&[spec(0, 1 << 20, 0, 0)], vec![memfd(4096)]).unwrap_err();
    assert!(matches!(err, MemoryError::FileTooSmall { .. }), "{err}");
    let err = GuestMemory::map(&[spec(0, 4096, 0, 4096)], vec![memfd(4096)]).unwrap_err();
    assert!(
        matches!(err, MemoryError::FileTooSmall { .. }),
        "offset pushes it past the end: {err}"
    );
}

#[test]
fn overlapping_overflowing_and_miscounted_tables_are_refused() {
    let e = GuestMemory::map(
        &[spec(0, 8192, 0, 0), spec(4096, 4096, 0x10_0000, 0)],
        vec![memfd(8192), memfd(8192)],
    );
    assert!(matches!(e, Err(MemoryError::Overlap { .. })));
    let e = GuestMemory::map(
        &[spec(0, 4096, 0, 0), spec(0x10_0000, 4096, 0, 0)],
        vec![memfd(8192), memfd(8192)],
    );
    assert!(
        matches!(e, Err(MemoryError::Overlap { .. })),
        "overlapping frontend addresses"
    );
    let e = GuestMemory::map(&[spec(u64::MAX - 10, 4096, 0, 0)], vec![memfd(4096)]);
    assert!(matches!(e, Err(MemoryError::Overflow { .. })));
    let e = GuestMemory::map(&[spec(0, 4096, 0, u64::MAX)], vec![memfd(4096)]);
    assert!(matches!(e, Err(MemoryError::Overflow { .. })));
    let e = GuestMemory::map(&[spec(0, 4096, 0, 0)], vec![]);
    assert!(matches!(e, Err(MemoryError::FdCount { .. })));
    let e = GuestMemory::map(&[spec(0, 0, 0, 0)], vec![memfd(4096)]);
    assert!(matches!(e, Err(MemoryError::EmptyRegion(0))));
}

#[test]
fn ring_area_is_bounds_and_alignment_checked() {
    let mem = Arc::new(GuestMemory::map(&[spec(0, 4096, 0, 0)], vec![memfd(4096)]).unwrap());
    let r = mem.ring_area(64, 64, 4).unwrap();
    r.store_u16_release(2, 7).unwrap();
    assert_eq!(r.load_u16_acquire(2), Some(7));
    assert_eq!(r.load_u16(64), None);
    assert_eq!(r.load_u16(63), None);
    assert_eq!(r.store_u32(62, 1), None);
    assert!(mem.ring_area(4000, 200, 2).is_err());
    assert!(mem.ring_area(3, 8, 2).is_err());
    let mut b = [0u8; 2];
    mem.read(66, &mut b).unwrap();
    assert_eq!(u16::from_le_bytes(b), 7);
}

#[test]
fn line_offsets_name_one_address_inside_each_touched_line() {
    let lines = |start, len| line_offsets(start, len).collect::<Vec<_>>();
    assert_eq!(lines(0x1000, 0), Vec::<usize>::new());
    assert_eq!(lines(0x1000, 1), vec![0]);
    assert_eq!(lines(0x1000, 64), vec![0]);
    assert_eq!(lines(0x1000, 65), vec![0, 64]);
    assert_eq!(
        lines(0x1030, 76),
        vec![0, 16],
        "header + 64-byte frame: two lines"
    );
    assert_eq!(lines(0x1030, 100), vec![0, 16, 80]);
    assert_eq!(lines(0x103f, 2), vec![0, 1]);
    assert_eq!(lines(0x103f, 1), vec![0]);
    for start in 0x1000..0x1080usize {
        for len in 0..300usize {
            let offs = lines(start, len);
            let touched = if len == 0 {
                0
            } else {
                (start + len - 1) / 64 - start / 64 + 1
            };
            assert_eq!(offs.len(), touched, "start {start:#x} len {len}");
            assert!(offs.iter().all(|&o| o < len));
        }
    }
}

#[test]
fn prefetch_and_eviction_ignore_unmapped_ranges_and_change_nothing() {
    let a = memfd(8192);
    let mem = Arc::new(GuestMemory::map(&[spec(0x1000, 8192, 0, 0)], vec![a]).unwrap());
    let data: Vec<u8> = (0..8192u32).map(|i| (i * 13) as u8).collect();
    mem.write(0x1000, &data).unwrap();
    let ring = mem.ring_area(0x1000, 256, 16).unwrap();
    for (gpa, len) in [
        (0u64, 64u64),
        (0x1000, 0),
        (0x1000, u64::MAX),
        (0x1000 + 8191, 4096),
        (0x1000 + 8192, 64),
        (u64::MAX, u64::MAX),
        (0x1010, 76),
    ] {
        mem.prefetch(gpa, len);
        mem.prefetch_write(gpa, len);
        mem.evict(gpa, len);
        let off = usize::try_from(gpa.wrapping_sub(0x1000)).unwrap_or(usize::MAX);
        ring.prefetch_write(off, len as usize);
    }
    let mut back = vec![0u8; 8192];
    mem.read(0x1000, &mut back).unwrap();
    assert_eq!(
        back, data,
        "hints and evictions leave the bytes as they were"
    );
}

#[test]
fn unmaps_when_the_last_owner_drops() {
    let count = || {
        std::fs::read_to_string("/proc/self/maps")
            .unwrap()
            .matches("memfd:vhost-unmap-test")
            .count()
    };
    let fd = rustix::fs::memfd_create("vhost-unmap-test", rustix::fs::MemfdFlags::CLOEXEC).unwrap();
    rustix::fs::ftruncate(&fd, 4096).unwrap();
    let mem = Arc::new(GuestMemory::map(&[spec(0, 4096, 0, 0)], vec![fd]).unwrap());
    let ring = mem.ring_area(0, 16, 2).unwrap();
    assert_eq!(count(), 1);
    drop(mem);
    assert_eq!(count(), 1, "a ring still holds the mapping");
    drop(ring);
    assert_eq!(count(), 0);
}
