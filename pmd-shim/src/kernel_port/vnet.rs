//! The virtio-net header the kernel puts in front of every frame of a `PACKET_VNET_HDR` socket
//! and expects in front of every frame sent on one.

/// Bytes of the virtio-net header in front of every frame (no `num_buffers`).
pub const VNET_HDR_LEN: usize = 10;

/// The virtio-net header of one frame (virtio 1.x 5.1.6, little endian), as the kernel wrote
/// it or as it is to be sent. What the fields mean, and whether they add up, is the caller's
/// business: this port only carries them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct VnetHdr {
    pub flags: u8,
    pub gso_type: u8,
    pub hdr_len: u16,
    pub gso_size: u16,
    pub csum_start: u16,
    pub csum_offset: u16,
}

impl VnetHdr {
    /// `flags`: the checksum is partial, to be completed from `csum_start` into
    /// `csum_start + csum_offset`.
    pub const NEEDS_CSUM: u8 = 1;
    /// `flags`: the checksum was verified.
    pub const DATA_VALID: u8 = 2;
    /// `gso_type`: TCP over IPv4.
    pub const GSO_TCPV4: u8 = 1;
    /// `gso_type`: TCP over IPv6.
    pub const GSO_TCPV6: u8 = 4;
    /// `gso_type`: UDP segmentation.
    pub const GSO_UDP_L4: u8 = 5;
    /// `gso_type` flag: TCP with ECN.
    pub const GSO_ECN: u8 = 0x80;

    /// Nothing to finish: complete checksum, no segmentation.
    pub const NONE: VnetHdr = VnetHdr {
        flags: 0,
        gso_type: 0,
        hdr_len: 0,
        gso_size: 0,
        csum_start: 0,
        csum_offset: 0,
    };

    pub fn from_bytes(b: &[u8; VNET_HDR_LEN]) -> VnetHdr {
        VnetHdr {
            flags: b[0],
            gso_type: b[1],
            hdr_len: u16::from_le_bytes([b[2], b[3]]),
            gso_size: u16::from_le_bytes([b[4], b[5]]),
            csum_start: u16::from_le_bytes([b[6], b[7]]),
            csum_offset: u16::from_le_bytes([b[8], b[9]]),
        }
    }

    pub fn to_bytes(self) -> [u8; VNET_HDR_LEN] {
        let mut b = [0u8; VNET_HDR_LEN];
        b[0] = self.flags;
        b[1] = self.gso_type;
        b[2..4].copy_from_slice(&self.hdr_len.to_le_bytes());
        b[4..6].copy_from_slice(&self.gso_size.to_le_bytes());
        b[6..8].copy_from_slice(&self.csum_start.to_le_bytes());
        b[8..10].copy_from_slice(&self.csum_offset.to_le_bytes());
        b
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_header_is_little_endian_in_virtio_order() {
        let h = VnetHdr {
            flags: VnetHdr::NEEDS_CSUM,
            gso_type: VnetHdr::GSO_TCPV6 | VnetHdr::GSO_ECN,
            hdr_len: 0x0102,
            gso_size: 1428,
            csum_start: 54,
            csum_offset: 16,
        };
        let b = h.to_bytes();
        assert_eq!(b, [1, 0x84, 2, 1, 0x94, 5, 54, 0, 16, 0]);
        assert_eq!(VnetHdr::from_bytes(&b), h);
    }
}
