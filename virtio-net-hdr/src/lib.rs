//! The virtio-net header's offload fields (virtio 1.x, 5.1.6): how a guest that negotiated
//! checksum and segmentation offloads describes a packet it sends (a partial checksum, a
//! segment far larger than the MTU), and how the device describes one it delivers.
//!
//! What the guest writes is checked against what it negotiated and against the frame before
//! anyone relies on it ([`NetHdr::parse_tx`]); a header that does not add up drops the packet
//! (counted), it never reaches the forwarding plane.
//!
//! The same header fronts every frame of a Linux `PACKET_VNET_HDR` socket, so vhost-user's
//! virtqueues and the kernel-interface ports both read and write it through this crate.

/// VIRTIO_NET_F_CSUM: the guest may send partial checksums.
pub const F_CSUM: u64 = 1 << 0;
/// VIRTIO_NET_F_GUEST_CSUM: the guest takes partial checksums.
pub const F_GUEST_CSUM: u64 = 1 << 1;
/// VIRTIO_NET_F_GUEST_TSO4.
pub const F_GUEST_TSO4: u64 = 1 << 7;
/// VIRTIO_NET_F_GUEST_TSO6.
pub const F_GUEST_TSO6: u64 = 1 << 8;
/// VIRTIO_NET_F_GUEST_ECN.
pub const F_GUEST_ECN: u64 = 1 << 9;
/// VIRTIO_NET_F_HOST_TSO4.
pub const F_HOST_TSO4: u64 = 1 << 11;
/// VIRTIO_NET_F_HOST_TSO6.
pub const F_HOST_TSO6: u64 = 1 << 12;
/// VIRTIO_NET_F_HOST_ECN.
pub const F_HOST_ECN: u64 = 1 << 13;
/// VIRTIO_NET_F_GUEST_USO4.
pub const F_GUEST_USO4: u64 = 1 << 54;
/// VIRTIO_NET_F_GUEST_USO6.
pub const F_GUEST_USO6: u64 = 1 << 55;
/// VIRTIO_NET_F_HOST_USO.
pub const F_HOST_USO: u64 = 1 << 56;

/// Every offload feature the backend offers.
pub const OFFLOAD_FEATURES: u64 = F_CSUM
    | F_GUEST_CSUM
    | F_GUEST_TSO4
    | F_GUEST_TSO6
    | F_GUEST_ECN
    | F_HOST_TSO4
    | F_HOST_TSO6
    | F_HOST_ECN
    | F_GUEST_USO4
    | F_GUEST_USO6
    | F_HOST_USO;

/// The largest checksum field offset from `csum_start` a guest may give (TCP's is 16, UDP's 6,
/// SCTP's 8): anything further is not a transport checksum.
pub const MAX_CSUM_OFFSET: u16 = 64;

/// `flags`: the checksum needs completing from `csum_start`, stored at `+ csum_offset`.
pub const FLAG_NEEDS_CSUM: u8 = 1;
/// `flags`: the checksum was verified.
pub const FLAG_DATA_VALID: u8 = 2;

/// `gso_type` values.
pub mod gso {
    /// Not a GSO packet.
    pub const NONE: u8 = 0;
    /// TCP over IPv4.
    pub const TCPV4: u8 = 1;
    /// UDP fragmentation offload (not offered).
    pub const UDP: u8 = 3;
    /// TCP over IPv6.
    pub const TCPV6: u8 = 4;
    /// UDP segmentation (USO).
    pub const UDP_L4: u8 = 5;
    /// Flag: TCP with ECN (CWR on the first segment only).
    pub const ECN: u8 = 0x80;
}

/// Bytes of the offload part of the header, the whole header when `num_buffers` is not in use
/// (a `PACKET_VNET_HDR` socket's, a ring's without MRG_RXBUF in legacy layout).
pub const LEN: usize = 10;

/// The offload part of a virtio-net header (its first 10 bytes; `num_buffers` is the queue's
/// business).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct NetHdr {
    pub flags: u8,
    pub gso_type: u8,
    pub hdr_len: u16,
    pub gso_size: u16,
    pub csum_start: u16,
    pub csum_offset: u16,
}

/// Why a guest's header was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum NetHdrError {
    /// A partial checksum without CSUM negotiated.
    #[error("NEEDS_CSUM without the CSUM feature")]
    CsumNotNegotiated,
    /// A checksum field offset no transport header has.
    #[error("checksum offset {0} is implausible")]
    CsumOffset(u16),
    /// The checksum field lies beyond the frame.
    #[error("checksum at {start}+{offset} outside the {len}-byte frame")]
    CsumOutside { start: u16, offset: u16, len: usize },
    /// A GSO type the guest did not negotiate, or an unknown one.
    #[error("GSO type {0:#x} not negotiated")]
    GsoNotNegotiated(u8),
    /// A GSO packet without a partial checksum, or with a zero segment size.
    #[error("GSO packet without NEEDS_CSUM or with gso_size 0")]
    GsoInconsistent,
}

impl NetHdr {
    /// Nothing to do: complete checksums, no segmentation.
    pub const NONE: NetHdr = NetHdr {
        flags: 0,
        gso_type: 0,
        hdr_len: 0,
        gso_size: 0,
        csum_start: 0,
        csum_offset: 0,
    };

    /// Whether the header asks nothing of anyone.
    pub fn is_none(&self) -> bool {
        self.flags & FLAG_NEEDS_CSUM == 0 && self.gso_type == gso::NONE
    }

    /// Reads the 10 offload bytes (little-endian, virtio 1.x).
    pub fn from_bytes(b: &[u8; LEN]) -> NetHdr {
        NetHdr {
            flags: b[0],
            gso_type: b[1],
            hdr_len: u16::from_le_bytes([b[2], b[3]]),
            gso_size: u16::from_le_bytes([b[4], b[5]]),
            csum_start: u16::from_le_bytes([b[6], b[7]]),
            csum_offset: u16::from_le_bytes([b[8], b[9]]),
        }
    }

    /// The 10 offload bytes.
    pub fn to_bytes(self) -> [u8; LEN] {
        let mut b = [0u8; LEN];
        b[0] = self.flags;
        b[1] = self.gso_type;
        b[2..4].copy_from_slice(&self.hdr_len.to_le_bytes());
        b[4..6].copy_from_slice(&self.gso_size.to_le_bytes());
        b[6..8].copy_from_slice(&self.csum_start.to_le_bytes());
        b[8..10].copy_from_slice(&self.csum_offset.to_le_bytes());
        b
    }

    /// Checks a header a guest sent with a `frame_len`-byte frame, given the negotiated
    /// `features`; returns what the forwarding plane may rely on (DATA_VALID, meaningless on
    /// transmit, is dropped).
    pub fn parse_tx(self, features: u64, frame_len: usize) -> Result<NetHdr, NetHdrError> {
        let mut h = self;
        h.flags &= FLAG_NEEDS_CSUM;
        if h.flags & FLAG_NEEDS_CSUM != 0 {
            if features & F_CSUM == 0 {
                return Err(NetHdrError::CsumNotNegotiated);
            }
            if h.csum_offset > MAX_CSUM_OFFSET {
                return Err(NetHdrError::CsumOffset(h.csum_offset));
            }
            let end = usize::from(h.csum_start) + usize::from(h.csum_offset) + 2;
            if end > frame_len {
                return Err(NetHdrError::CsumOutside {
                    start: h.csum_start,
                    offset: h.csum_offset,
                    len: frame_len,
                });
            }
        } else {
            h.csum_start = 0;
            h.csum_offset = 0;
        }
        let kind = h.gso_type & !gso::ECN;
        let needed = match kind {
            gso::NONE => {
                h.gso_type = gso::NONE;
                h.gso_size = 0;
                h.hdr_len = 0;
                return Ok(h);
            }
            gso::TCPV4 => F_HOST_TSO4,
            gso::TCPV6 => F_HOST_TSO6,
            gso::UDP_L4 => F_HOST_USO,
            other => return Err(NetHdrError::GsoNotNegotiated(other)),
        };
        if features & needed == 0 || (h.gso_type & gso::ECN != 0 && features & F_HOST_ECN == 0) {
            return Err(NetHdrError::GsoNotNegotiated(h.gso_type));
        }
        if h.flags & FLAG_NEEDS_CSUM == 0 || h.gso_size == 0 {
            return Err(NetHdrError::GsoInconsistent);
        }
        Ok(h)
    }

    /// Whether a guest that negotiated `features` may be given this header on receive.
    pub fn fits_rx(&self, features: u64) -> bool {
        if self.flags & (FLAG_NEEDS_CSUM | FLAG_DATA_VALID) != 0 && features & F_GUEST_CSUM == 0 {
            return false;
        }
        let needed = match self.gso_type & !gso::ECN {
            gso::NONE => return true,
            gso::TCPV4 => F_GUEST_TSO4,
            gso::TCPV6 => F_GUEST_TSO6,
            gso::UDP_L4 => F_GUEST_USO4 | F_GUEST_USO6,
            _ => return false,
        };
        let ecn_ok = self.gso_type & gso::ECN == 0 || features & F_GUEST_ECN != 0;
        features & needed != 0 && ecn_ok
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ALL: u64 = OFFLOAD_FEATURES;

    fn partial(start: u16, offset: u16) -> NetHdr {
        NetHdr {
            flags: FLAG_NEEDS_CSUM,
            csum_start: start,
            csum_offset: offset,
            ..NetHdr::NONE
        }
    }

    #[test]
    fn bytes_round_trip_little_endian() {
        let h = NetHdr {
            flags: 1,
            gso_type: gso::TCPV6 | gso::ECN,
            hdr_len: 0x0102,
            gso_size: 1428,
            csum_start: 54,
            csum_offset: 16,
        };
        let b = h.to_bytes();
        assert_eq!(&b[2..4], &[0x02, 0x01]);
        assert_eq!(NetHdr::from_bytes(&b), h);
    }

    #[test]
    fn what_a_guest_sends_is_checked_against_features_and_frame() {
        assert_eq!(NetHdr::NONE.parse_tx(0, 60), Ok(NetHdr::NONE));
        // Fields that mean nothing without their flag are cleared, DATA_VALID dropped.
        let junk = NetHdr {
            flags: FLAG_DATA_VALID,
            hdr_len: 9,
            gso_size: 7,
            csum_start: 3,
            csum_offset: 4,
            ..NetHdr::NONE
        };
        assert_eq!(junk.parse_tx(ALL, 60), Ok(NetHdr::NONE));
        assert_eq!(partial(34, 16).parse_tx(ALL, 60), Ok(partial(34, 16)));
        assert_eq!(
            partial(34, 16).parse_tx(0, 60),
            Err(NetHdrError::CsumNotNegotiated)
        );
        assert!(matches!(
            partial(34, 16).parse_tx(ALL, 51),
            Err(NetHdrError::CsumOutside { .. })
        ));
        assert!(
            partial(34, 16).parse_tx(ALL, 52).is_ok(),
            "the field ends the frame"
        );
        assert_eq!(
            partial(0, 300).parse_tx(ALL, 4000),
            Err(NetHdrError::CsumOffset(300))
        );
        let tso = NetHdr {
            gso_type: gso::TCPV4,
            gso_size: 1448,
            hdr_len: 66,
            ..partial(34, 16)
        };
        assert_eq!(tso.parse_tx(ALL, 65000), Ok(tso));
        assert_eq!(
            tso.parse_tx(ALL & !F_HOST_TSO4, 65000),
            Err(NetHdrError::GsoNotNegotiated(gso::TCPV4))
        );
        let ecn = NetHdr {
            gso_type: gso::TCPV4 | gso::ECN,
            ..tso
        };
        assert!(ecn.parse_tx(ALL & !F_HOST_ECN, 65000).is_err());
        assert_eq!(
            NetHdr { flags: 0, ..tso }.parse_tx(ALL, 65000),
            Err(NetHdrError::GsoInconsistent)
        );
        assert_eq!(
            NetHdr { gso_size: 0, ..tso }.parse_tx(ALL, 65000),
            Err(NetHdrError::GsoInconsistent)
        );
        assert!(NetHdr {
            gso_type: gso::UDP,
            ..tso
        }
        .parse_tx(ALL, 65000)
        .is_err());
    }

    #[test]
    fn a_guest_is_only_given_what_it_negotiated() {
        assert!(NetHdr::NONE.fits_rx(0));
        assert!(!partial(34, 16).fits_rx(0));
        assert!(partial(34, 16).fits_rx(F_GUEST_CSUM));
        let tso6 = NetHdr {
            gso_type: gso::TCPV6,
            gso_size: 1428,
            ..partial(54, 16)
        };
        assert!(!tso6.fits_rx(F_GUEST_CSUM | F_GUEST_TSO4));
        assert!(tso6.fits_rx(F_GUEST_CSUM | F_GUEST_TSO6));
        let valid = NetHdr {
            flags: FLAG_DATA_VALID,
            ..NetHdr::NONE
        };
        assert!(!valid.fits_rx(0));
        assert!(valid.fits_rx(F_GUEST_CSUM));
    }
}
