//! Checksum and segmentation offload: what a packet's ingress port said about its checksum and
//! segmentation (the meaning of a virtio-net header), carried with the packet to its egress
//! port, and the software that finishes what the egress cannot take ([`csum`] sums a partial
//! checksum, [`gso`] cuts a large TCP or UDP packet into segments that fit the MTU).
//!
//! Where it comes from: a guest that negotiated VIRTIO_NET_F_CSUM / HOST_TSO*, a kernel pod's
//! interface read with its virtio-net header. Where it goes: a guest that negotiated GUEST_CSUM
//! / GUEST_TSO*, a kernel interface written with the header, a NIC with the matching TX
//! offloads; everything else gets complete checksums and MTU-sized packets.
//!
//! The state is one `u64` ([`Offload`]), zero for "nothing to do": packets of ports without
//! offloads carry zero and cost one compare.

pub mod csum;
pub mod gso;

/// The L4 checksum state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Csum {
    /// Nothing known: the checksum is whatever the sender wrote (complete, for a receiver to
    /// check).
    #[default]
    None,
    /// The ingress verified the L4 checksum (virtio DATA_VALID, TP_STATUS_CSUM_VALID).
    Verified,
    /// The checksum field holds only the pseudo-header sum (folded, not complemented): sum the
    /// bytes from `start` to the end of the packet and store the complement at
    /// `start + offset` (Linux CHECKSUM_PARTIAL, virtio NEEDS_CSUM).
    Partial { start: u16, offset: u8 },
}

/// What a GSO packet is cut into.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GsoKind {
    /// TCP over IPv4.
    Tcp4,
    /// TCP over IPv6.
    Tcp6,
    /// UDP datagrams (UDP_L4 / USO: each segment a datagram of its own), over IPv4 or IPv6.
    Udp,
}

/// A packet larger than the MTU, to be cut into segments of `size` payload bytes each (the
/// last one shorter).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Gso {
    pub kind: GsoKind,
    /// Payload bytes per segment (TCP MSS, UDP datagram payload).
    pub size: u16,
    /// TCP with ECN: CWR stays on the first segment only.
    pub ecn: bool,
}

/// A packet's offload state, one word (see the module documentation). Offsets are from the
/// start of the frame; `inner` is the length of tunnel headers put in front of the packet the
/// state describes since it was recorded.
#[derive(Clone, Copy, PartialEq, Eq, Default, Hash)]
#[repr(transparent)]
pub struct Offload(u64);

const START_SHIFT: u32 = 0;
const OFFSET_SHIFT: u32 = 16;
const CSUM_SHIFT: u32 = 24;
const GSO_SHIFT: u32 = 26;
const ECN_BIT: u64 = 1 << 28;
const INNER_IP_BIT: u64 = 1 << 29;
const SIZE_SHIFT: u32 = 32;
const INNER_SHIFT: u32 = 48;

impl Offload {
    /// Nothing to do: complete checksums, no segmentation.
    pub const NONE: Offload = Offload(0);

    /// The state for `csum` and `gso` of a packet as received (not tunnelled since).
    pub fn new(csum: Csum, gso: Option<Gso>) -> Offload {
        let (kind, start, offset) = match csum {
            Csum::None => (0u64, 0u16, 0u8),
            Csum::Verified => (1, 0, 0),
            Csum::Partial { start, offset } => (2, start, offset),
        };
        let mut w = u64::from(start) << START_SHIFT
            | u64::from(offset) << OFFSET_SHIFT
            | kind << CSUM_SHIFT;
        if let Some(g) = gso {
            let k = match g.kind {
                GsoKind::Tcp4 => 1u64,
                GsoKind::Tcp6 => 2,
                GsoKind::Udp => 3,
            };
            w |= k << GSO_SHIFT | u64::from(g.size) << SIZE_SHIFT;
            if g.ecn {
                w |= ECN_BIT;
            }
        }
        Offload(w)
    }

    /// The state as stored in a packet buffer.
    #[inline(always)]
    pub const fn from_word(w: u64) -> Offload {
        Offload(w)
    }

    /// The word to store in a packet buffer.
    #[inline(always)]
    pub const fn word(self) -> u64 {
        self.0
    }

    /// Nothing to do.
    #[inline(always)]
    pub const fn is_none(self) -> bool {
        self.0 == 0
    }

    /// The checksum state.
    pub fn csum(self) -> Csum {
        match (self.0 >> CSUM_SHIFT) & 3 {
            1 => Csum::Verified,
            2 => Csum::Partial {
                start: (self.0 >> START_SHIFT) as u16,
                offset: (self.0 >> OFFSET_SHIFT) as u8,
            },
            _ => Csum::None,
        }
    }

    /// The segmentation asked for, if any.
    pub fn gso(self) -> Option<Gso> {
        let kind = match (self.0 >> GSO_SHIFT) & 3 {
            1 => GsoKind::Tcp4,
            2 => GsoKind::Tcp6,
            3 => GsoKind::Udp,
            _ => return None,
        };
        Some(Gso {
            kind,
            size: (self.0 >> SIZE_SHIFT) as u16,
            ecn: self.0 & ECN_BIT != 0,
        })
    }

    /// Bytes of tunnel headers in front of the packet the state describes (0: none).
    pub fn inner(self) -> u16 {
        (self.0 >> INNER_SHIFT) as u16
    }

    /// Whether the tunnelled packet starts with its IP header (MPLS) rather than Ethernet.
    pub fn inner_is_ip(self) -> bool {
        self.0 & INNER_IP_BIT != 0
    }

    /// The same packet after `outer` bytes of tunnel headers were put in front of it (the
    /// inner packet starting with IP when `inner_is_ip`); `None` if offsets would overflow.
    /// A verified checksum stays verified: it is the inner packet's.
    pub fn encapsulated(self, outer: u16, inner_is_ip: bool) -> Option<Offload> {
        if self.is_none() {
            return Some(self);
        }
        let mut w = self.0;
        if let Csum::Partial { start, .. } = self.csum() {
            let start = start.checked_add(outer)?;
            w = w & !(0xffff << START_SHIFT) | u64::from(start) << START_SHIFT;
        }
        let inner = self.inner().checked_add(outer)?;
        w = w & !(0xffff << INNER_SHIFT) | u64::from(inner) << INNER_SHIFT;
        w = if inner_is_ip {
            w | INNER_IP_BIT
        } else {
            w & !INNER_IP_BIT
        };
        Some(Offload(w))
    }

    /// The same packet after its first `removed` bytes (tunnel headers) were taken off; `None`
    /// when the state pointed into them (it cannot describe what is left). What the outer
    /// headers' receive checks verified says nothing of the inner packet.
    pub fn decapsulated(self, removed: u16) -> Option<Offload> {
        if self.is_none() {
            return Some(self);
        }
        let csum = match self.csum() {
            Csum::Partial { start, offset } => match start.checked_sub(removed) {
                Some(start) => Csum::Partial { start, offset },
                // Only the outer headers' own checksum was left to do (a Linux VXLAN peer's
                // UDP checksum, with the inner one done): it goes with them.
                None if self.gso().is_none()
                    && u32::from(start) + u32::from(offset) + 2 <= u32::from(removed) =>
                {
                    Csum::None
                }
                None => return None,
            },
            Csum::Verified | Csum::None => Csum::None,
        };
        let inner = self.inner().saturating_sub(removed);
        if self.inner() != 0 && self.inner() < removed {
            return None;
        }
        let mut o = Offload::new(csum, self.gso());
        o.0 |= u64::from(inner) << INNER_SHIFT;
        if inner != 0 && self.inner_is_ip() {
            o.0 |= INNER_IP_BIT;
        }
        Some(o)
    }

    /// The state of a segment cut from this packet: the same checksum and tunnel, no GSO.
    pub fn without_gso(self) -> Offload {
        Offload(self.0 & !(3 << GSO_SHIFT | ECN_BIT | 0xffff << SIZE_SHIFT))
    }

    /// The state once the checksum was completed in software: nothing left to do but what the
    /// GSO still asks.
    pub fn with_csum_done(self) -> Offload {
        let mut o = Offload::new(Csum::None, self.gso());
        if o.is_none() {
            return o;
        }
        o.0 |= self.0 & (0xffff << INNER_SHIFT | INNER_IP_BIT);
        o
    }
}

impl std::fmt::Debug for Offload {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Offload")
            .field("csum", &self.csum())
            .field("gso", &self.gso())
            .field("inner", &self.inner())
            .field("inner_is_ip", &self.inner_is_ip())
            .finish()
    }
}

/// What an egress port can finish itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct TxCaps {
    /// Takes a partial checksum (and completes or passes it on).
    pub csum: bool,
    /// Takes TCP-over-IPv4 GSO packets.
    pub tso4: bool,
    /// Takes TCP-over-IPv6 GSO packets.
    pub tso6: bool,
    /// Takes UDP (USO) GSO packets.
    pub uso: bool,
    /// Takes TCP GSO packets with ECN (CWR on the first segment only).
    pub ecn: bool,
    /// Takes all of the above for tunnelled packets too.
    pub tunnel: bool,
}

impl TxCaps {
    /// Everything (a kernel interface written with its virtio-net header).
    pub const ALL: TxCaps = TxCaps {
        csum: true,
        tso4: true,
        tso6: true,
        uso: true,
        ecn: true,
        tunnel: true,
    };

    /// Whether a port with these capabilities takes `o` as it is.
    #[inline]
    pub fn takes(self, o: Offload) -> bool {
        if o.is_none() {
            return true;
        }
        let partial = matches!(o.csum(), Csum::Partial { .. });
        let gso = o.gso();
        if !partial && gso.is_none() {
            // Complete or verified: nothing left to do.
            return true;
        }
        if o.inner() != 0 && !self.tunnel {
            return false;
        }
        let gso_ok = match gso {
            None => true,
            Some(g) if g.ecn && !self.ecn => false,
            Some(g) => match g.kind {
                GsoKind::Tcp4 => self.tso4,
                GsoKind::Tcp6 => self.tso6,
                GsoKind::Udp => self.uso,
            },
        };
        (!partial || self.csum) && gso_ok
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn csum_strategy() -> impl Strategy<Value = Csum> {
        prop_oneof![
            Just(Csum::None),
            Just(Csum::Verified),
            (any::<u16>(), any::<u8>()).prop_map(|(start, offset)| Csum::Partial { start, offset }),
        ]
    }

    fn gso_strategy() -> impl Strategy<Value = Option<Gso>> {
        proptest::option::of(
            (0u8..3, any::<u16>(), any::<bool>()).prop_map(|(k, size, ecn)| Gso {
                kind: [GsoKind::Tcp4, GsoKind::Tcp6, GsoKind::Udp][usize::from(k)],
                size,
                ecn,
            }),
        )
    }

    proptest! {
        #[test]
        fn the_word_keeps_what_was_put_in(csum in csum_strategy(), gso in gso_strategy()) {
            let o = Offload::from_word(Offload::new(csum, gso).word());
            prop_assert_eq!(o.csum(), csum);
            prop_assert_eq!(o.gso(), gso);
            prop_assert_eq!(o.inner(), 0);
            prop_assert_eq!(o.is_none(), csum == Csum::None && gso.is_none());
        }

        #[test]
        fn encapsulating_then_decapsulating_gives_the_packet_back(
            start in 0u16..2000, offset in 0u8..20, outer in 1u16..200, ip in any::<bool>(),
            gso in gso_strategy(),
        ) {
            let o = Offload::new(Csum::Partial { start, offset }, gso);
            let e = o.encapsulated(outer, ip).unwrap();
            prop_assert_eq!(e.csum(), Csum::Partial { start: start + outer, offset });
            prop_assert_eq!(e.gso(), gso);
            prop_assert_eq!(e.inner(), outer);
            prop_assert_eq!(e.inner_is_ip(), ip);
            prop_assert_eq!(e.decapsulated(outer), Some(o));
        }
    }

    #[test]
    fn decapsulation_through_the_described_headers_is_refused() {
        let o = Offload::new(
            Csum::Partial {
                start: 34,
                offset: 16,
            },
            None,
        );
        assert_eq!(
            o.decapsulated(50),
            None,
            "the checksum start lay in what was removed"
        );
        // The outer UDP checksum alone left to do (a Linux VXLAN peer): gone with the headers.
        let outer_udp = Offload::new(
            Csum::Partial {
                start: 34,
                offset: 6,
            },
            None,
        );
        assert_eq!(outer_udp.decapsulated(50), Some(Offload::NONE));
        let v = Offload::new(Csum::Verified, None);
        assert_eq!(
            v.decapsulated(50),
            Some(Offload::NONE),
            "the outer check says nothing of the inner"
        );
    }

    #[test]
    fn capabilities_decide_what_passes() {
        let partial = Offload::new(
            Csum::Partial {
                start: 34,
                offset: 16,
            },
            None,
        );
        let tso4 = Offload::new(
            Csum::Partial {
                start: 34,
                offset: 16,
            },
            Some(Gso {
                kind: GsoKind::Tcp4,
                size: 1448,
                ecn: false,
            }),
        );
        assert!(TxCaps::default().takes(Offload::NONE));
        assert!(TxCaps::default().takes(Offload::new(Csum::Verified, None)));
        assert!(!TxCaps::default().takes(partial));
        let csum_only = TxCaps {
            csum: true,
            ..TxCaps::default()
        };
        assert!(csum_only.takes(partial));
        assert!(!csum_only.takes(tso4));
        assert!(TxCaps {
            tso4: true,
            ..csum_only
        }
        .takes(tso4));
        let tunnelled = tso4.encapsulated(50, false).unwrap();
        assert!(!TxCaps {
            tso4: true,
            ..csum_only
        }
        .takes(tunnelled));
        assert!(TxCaps::ALL.takes(tunnelled));
        assert!(!TxCaps::default().takes(partial.encapsulated(50, false).unwrap()));
    }
}
