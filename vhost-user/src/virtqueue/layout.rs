//! Where each field of a split virtqueue lies in guest memory (virtio 1.x, "Split Virtqueues"):
//! byte offsets into the descriptor table, the avail ring and the used ring, their lengths and
//! alignments. All fields are little-endian. The backend's ring accesses and the test
//! frontend's driver side both read the layout from here.

/// `struct virtq_desc`: one entry of a descriptor table (direct or indirect).
pub mod desc {
    /// Bytes per descriptor.
    pub const SIZE: usize = 16;
    /// `le64 addr`: guest-physical address of the buffer.
    pub const ADDR: usize = 0;
    /// `le32 len`: buffer length.
    pub const LEN: usize = 8;
    /// `le16 flags`.
    pub const FLAGS: usize = 12;
    /// `le16 next`: the chain's next descriptor, with `DESC_F_NEXT`.
    pub const NEXT: usize = 14;
    /// Alignment the table must have.
    pub const ALIGN: u64 = 16;

    /// Offset of descriptor `i` in its table.
    #[inline(always)]
    pub const fn at(i: u16) -> usize {
        SIZE * i as usize
    }

    /// Bytes of a table of `size` descriptors.
    pub const fn table_len(size: u16) -> u64 {
        at(size) as u64
    }
}

/// `struct virtq_avail`: `le16 flags`, `le16 idx`, `le16 ring[size]` (head descriptor
/// indexes), then `le16 used_event` (EVENT_IDX).
pub mod avail {
    /// `le16 flags` (`AVAIL_F_NO_INTERRUPT`).
    pub const FLAGS: usize = 0;
    /// `le16 idx`: where the driver will put the next entry.
    pub const IDX: usize = 2;
    /// `ring[0]`.
    const RING: usize = 4;
    /// Alignment the ring must have.
    pub const ALIGN: u64 = 2;

    /// Offset of ring entry `slot`.
    #[inline(always)]
    pub const fn entry(slot: usize) -> usize {
        RING + 2 * slot
    }

    /// Offset of `used_event`, after the last of `size` entries.
    #[inline(always)]
    pub const fn used_event(size: u16) -> usize {
        entry(size as usize)
    }

    /// Bytes of a ring of `size` entries, `used_event` included.
    pub const fn len(size: u16) -> u64 {
        used_event(size) as u64 + 2
    }
}

/// `struct virtq_used`: `le16 flags`, `le16 idx`, `ring[size]` of `{ le32 id; le32 len; }`,
/// then `le16 avail_event` (EVENT_IDX).
pub mod used {
    /// `le16 flags` (`USED_F_NO_NOTIFY`).
    pub const FLAGS: usize = 0;
    /// `le16 idx`: where the device will put the next entry.
    pub const IDX: usize = 2;
    /// `ring[0]`.
    const RING: usize = 4;
    /// Bytes per ring entry.
    pub const ENTRY_SIZE: usize = 8;
    /// `le32 id` in an entry: the head of the completed chain.
    pub const ID: usize = 0;
    /// `le32 len` in an entry: bytes the device wrote into the chain.
    pub const LEN: usize = 4;
    /// Alignment the ring must have.
    pub const ALIGN: u64 = 4;

    /// Offset of ring entry `slot`.
    #[inline(always)]
    pub const fn entry(slot: usize) -> usize {
        RING + ENTRY_SIZE * slot
    }

    /// Offset of `avail_event`, after the last of `size` entries.
    #[inline(always)]
    pub const fn avail_event(size: u16) -> usize {
        entry(size as usize)
    }

    /// Bytes of a ring of `size` entries, `avail_event` included.
    pub const fn len(size: u16) -> u64 {
        avail_event(size) as u64 + 2
    }
}

/// The packed virtqueue (virtio 1.2, "Packed Virtqueues"): one descriptor ring the driver and the
/// device both write, and two event suppression structures (driver area and device area).
pub mod packed {
    /// `struct pvirtq_desc`: `le64 addr; le32 len; le16 id; le16 flags;`.
    pub mod desc {
        /// Bytes per descriptor (ring entry or indirect table entry).
        pub const SIZE: usize = 16;
        /// `le64 addr`: guest-physical address of the buffer.
        pub const ADDR: usize = 0;
        /// `le32 len`: buffer length (used: bytes the device wrote).
        pub const LEN: usize = 8;
        /// `le16 id`: buffer id (in the chain's last descriptor; returned in the used one).
        pub const ID: usize = 12;
        /// `le16 flags`, with the AVAIL and USED bits that hand the slot over.
        pub const FLAGS: usize = 14;
        /// Alignment the ring must have.
        pub const ALIGN: u64 = 16;

        /// Offset of descriptor `i` in the ring (or an indirect table).
        #[inline(always)]
        pub const fn at(i: u16) -> usize {
            SIZE * i as usize
        }

        /// Bytes of a ring of `size` descriptors.
        pub const fn ring_len(size: u16) -> u64 {
            at(size) as u64
        }
    }

    /// `struct pvirtq_event_suppress`: `le16 desc` (bits 0-14 offset, bit 15 wrap counter),
    /// `le16 flags` (ENABLE, DISABLE, DESC). The driver area is the driver's (read by the
    /// device: when to interrupt), the device area the device's (read by the driver: when to
    /// kick).
    pub mod event {
        /// `le16 desc`: the descriptor offset and wrap counter for `RING_EVENT_FLAGS_DESC`.
        pub const OFF_WRAP: usize = 0;
        /// `le16 flags`.
        pub const FLAGS: usize = 2;
        /// Bytes of the structure.
        pub const LEN: u64 = 4;
        /// Alignment the structure must have.
        pub const ALIGN: u64 = 4;
    }
}
