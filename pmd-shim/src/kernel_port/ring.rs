//! The receive ring of a kernel port as mapped into our memory: a TPACKET_V2 ring of fixed-size
//! slots, each handed to us by the kernel the moment its frame is written (its status word
//! turns `TP_STATUS_USER`) and given back by us when we have copied it out.
//!
//! Every offset and length the kernel writes into a slot is checked against the slot before
//! anything is read through it ([`RxRing::slot`]).

use std::io;
use std::os::fd::{AsRawFd, OwnedFd};
use std::ptr::NonNull;
use std::sync::atomic::{AtomicU32, Ordering};

use virtio_net_hdr::{NetHdr, LEN as VNET_HDR_LEN};

// `tpacket2_hdr`.
const FR_STATUS: usize = 0;
const FR_LEN: usize = 4;
const FR_SNAPLEN: usize = 8;
const FR_MAC: usize = 12;
const FR_VLAN_TCI: usize = 24;
const FR_VLAN_TPID: usize = 26;
/// `tpacket2_hdr` 16-aligned plus `sockaddr_ll`: nothing of the frame (nor its virtio-net
/// header, right in front of it) may start before this.
pub(super) const TPACKET2_HDRLEN: usize = 32 + 20;

pub(super) const TPACKET_V2: libc::c_int = 1;
const TP_STATUS_KERNEL: u32 = 0;
const TP_STATUS_USER: u32 = 1;
/// The slot holds the head of a frame too long for it; the whole frame waits in the socket's
/// receive queue (`PACKET_COPY_THRESH`), in the order of such slots.
const TP_STATUS_COPY: u32 = 1 << 1;
const TP_STATUS_VLAN_VALID: u32 = 1 << 4;
const TP_STATUS_VLAN_TPID_VALID: u32 = 1 << 6;

const ETH_HLEN: usize = 14;

/// Where the kernel puts the Ethernet header in a slot (TPACKET_ALIGN(hdrlen + 16) + the
/// virtio-net header - 14): how much of a slot goes to a frame.
pub(super) const SLOT_OVERHEAD: usize =
    (TPACKET2_HDRLEN + 16).next_multiple_of(16) + VNET_HDR_LEN - ETH_HLEN;

/// What a slot handed to us holds, checked against the slot.
pub(super) enum Slot<'r> {
    /// The whole frame, with its virtio-net header and the VLAN tag the kernel took off (to go
    /// back after the MAC addresses).
    Frame {
        hdr: NetHdr,
        frame: &'r [u8],
        vlan: Option<[u8; 4]>,
    },
    /// The frame is longer than a slot: read it whole from the socket (then put `vlan` back).
    InQueue { vlan: Option<[u8; 4]> },
    /// Cut short (longer than a slot and no room left in the socket to queue it whole), or
    /// shorter than an Ethernet header: dropped.
    Truncated,
    /// Offsets that do not fit the slot: dropped (and if the frame was queued whole, that copy
    /// is to be read and dropped too, to keep the queue in step with the ring).
    Malformed { queued: bool },
}

/// The ring mapping: `slots` slots of `slot_size` bytes, `per_block` to a block of
/// `block_size` bytes (a slot never straddles blocks).
#[derive(Debug)]
pub(super) struct RxRing {
    base: NonNull<u8>,
    len: usize,
    block_size: usize,
    slot_size: usize,
    per_block: usize,
    slots: usize,
}

impl RxRing {
    /// Maps the ring set up on `fd` with this geometry (exactly what PACKET_RX_RING was given).
    pub(super) fn map(
        fd: &OwnedFd,
        block_size: usize,
        blocks: usize,
        slot_size: usize,
    ) -> io::Result<RxRing> {
        let len = block_size * blocks;
        // SAFETY: maps the socket's ring (set up just before, exactly `len` bytes) shared with
        // the kernel; a failure returns MAP_FAILED and maps nothing.
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                fd.as_raw_fd(),
                0,
            )
        };
        if p == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        let base = NonNull::new(p.cast::<u8>()).ok_or_else(|| io::Error::other("mmap gave 0"))?;
        let per_block = block_size / slot_size;
        Ok(RxRing {
            base,
            len,
            block_size,
            slot_size,
            per_block,
            slots: per_block * blocks,
        })
    }

    pub(super) fn slots(&self) -> usize {
        self.slots
    }

    /// Offset of slot `i` in the mapping.
    fn offset(&self, i: usize) -> usize {
        (i / self.per_block) * self.block_size + (i % self.per_block) * self.slot_size
    }

    /// The status word of slot `i`, through which the kernel and we hand it over.
    fn status(&self, i: usize) -> &AtomicU32 {
        let off = self.offset(i);
        assert!(i < self.slots && off + 4 <= self.len);
        // SAFETY: the word lies inside the mapping (asserted), 4-aligned (slots are 16-aligned
        // and blocks start on pages), and lives as long as `self`; the kernel and we only ever
        // access it whole.
        unsafe { AtomicU32::from_ptr(self.base.as_ptr().add(off + FR_STATUS).cast()) }
    }

    /// Bytes `at..at + len` of slot `i`; the caller keeps them within the slot. Only read while
    /// the slot is ours (the kernel leaves it alone until we give it back).
    fn bytes(&self, i: usize, at: usize, len: usize) -> &[u8] {
        let off = self.offset(i);
        assert!(
            i < self.slots && at.checked_add(len).is_some_and(|e| e <= self.slot_size),
            "slot bytes in bounds"
        );
        // SAFETY: in bounds of the slot, hence of the mapping (asserted); the kernel does not
        // write a slot handed to us, and the slice does not outlive the borrow of the ring
        // (nor, by the caller's use, the slot's hand-back).
        unsafe { std::slice::from_raw_parts(self.base.as_ptr().add(off + at), len) }
    }

    fn u32_at(&self, i: usize, at: usize) -> u32 {
        let b = self.bytes(i, at, 4);
        u32::from_ne_bytes([b[0], b[1], b[2], b[3]])
    }

    fn u16_at(&self, i: usize, at: usize) -> u16 {
        let b = self.bytes(i, at, 2);
        u16::from_ne_bytes([b[0], b[1]])
    }

    /// Slot `i` if the kernel has handed it to us, checked: its frame, its virtio-net header
    /// and its header fields must all lie within the slot.
    pub(super) fn slot(&self, i: usize) -> Option<Slot<'_>> {
        let status = self.status(i).load(Ordering::Acquire);
        if status & TP_STATUS_USER == 0 {
            return None;
        }
        let queued = status & TP_STATUS_COPY != 0;
        let len = self.u32_at(i, FR_LEN) as usize;
        let snaplen = self.u32_at(i, FR_SNAPLEN) as usize;
        let mac = usize::from(self.u16_at(i, FR_MAC));
        if mac < TPACKET2_HDRLEN + VNET_HDR_LEN
            || mac.checked_add(snaplen).is_none_or(|e| e > self.slot_size)
            || snaplen > len
        {
            return Some(Slot::Malformed { queued });
        }
        let vlan = (status & TP_STATUS_VLAN_VALID != 0).then(|| {
            let tci = self.u16_at(i, FR_VLAN_TCI);
            let tpid = if status & TP_STATUS_VLAN_TPID_VALID != 0 {
                self.u16_at(i, FR_VLAN_TPID)
            } else {
                0x8100
            };
            let mut tag = [0u8; 4];
            tag[..2].copy_from_slice(&tpid.to_be_bytes());
            tag[2..].copy_from_slice(&tci.to_be_bytes());
            tag
        });
        if queued {
            return Some(Slot::InQueue { vlan });
        }
        if snaplen < len || len < ETH_HLEN {
            return Some(Slot::Truncated);
        }
        let mut hdr = [0u8; VNET_HDR_LEN];
        hdr.copy_from_slice(self.bytes(i, mac - VNET_HDR_LEN, VNET_HDR_LEN));
        Some(Slot::Frame {
            hdr: NetHdr::from_bytes(&hdr),
            frame: self.bytes(i, mac, len),
            vlan,
        })
    }

    /// Gives slot `i` back to the kernel.
    pub(super) fn release(&self, i: usize) {
        self.status(i).store(TP_STATUS_KERNEL, Ordering::Release);
    }
}

impl Drop for RxRing {
    fn drop(&mut self) {
        // SAFETY: unmaps exactly what `map` mapped; no slice into it outlives `self`.
        unsafe { libc::munmap(self.base.as_ptr().cast(), self.len) };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kernel_layout_constants_match_libc() {
        use std::mem::offset_of;
        assert_eq!(libc::TPACKET2_HDRLEN, TPACKET2_HDRLEN);
        assert_eq!(
            libc::tpacket_versions::TPACKET_V2 as libc::c_int,
            TPACKET_V2
        );
        assert_eq!(libc::TP_STATUS_USER, TP_STATUS_USER);
        assert_eq!(libc::TP_STATUS_COPY, TP_STATUS_COPY);
        assert_eq!(libc::TP_STATUS_VLAN_VALID, TP_STATUS_VLAN_VALID);
        assert_eq!(libc::TP_STATUS_VLAN_TPID_VALID, TP_STATUS_VLAN_TPID_VALID);
        assert_eq!(offset_of!(libc::tpacket2_hdr, tp_status), FR_STATUS);
        assert_eq!(offset_of!(libc::tpacket2_hdr, tp_len), FR_LEN);
        assert_eq!(offset_of!(libc::tpacket2_hdr, tp_snaplen), FR_SNAPLEN);
        assert_eq!(offset_of!(libc::tpacket2_hdr, tp_mac), FR_MAC);
        assert_eq!(offset_of!(libc::tpacket2_hdr, tp_vlan_tci), FR_VLAN_TCI);
        assert_eq!(offset_of!(libc::tpacket2_hdr, tp_vlan_tpid), FR_VLAN_TPID);
    }

    #[test]
    fn a_standard_frame_fits_a_2_kib_slot() {
        // Where the kernel puts the MAC header: TPACKET_ALIGN(52 + 16) + 10 - 14.
        assert_eq!(SLOT_OVERHEAD, 76);
        const { assert!(SLOT_OVERHEAD + 1518 + 4 <= 2048) };
    }
}
