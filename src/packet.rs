//! A DPDK mbuf as the packet buffer of the forwarding plane (`vrouter::PacketBuf`) and of the
//! vhost-user fast path (`vhost_user::PacketBuffer`), and the translation between a virtio-net
//! header and the forwarding plane's offload state, which rides in the mbuf.

use pmd_shim::Mbuf;
use vhost_user::net_hdr::{self, NetHdr};
use vrouter::offload::{Csum, Gso, GsoKind, Offload};
use vrouter::{BufError, DropReason, PacketBuf};

/// One packet in one mbuf, or for large packets (jumbo frames, GSO) a chain of them: every
/// header is in the first segment, which is what the pipeline reads; later segments hold
/// payload only.
#[repr(transparent)]
#[derive(Debug)]
pub struct Pkt(pub Mbuf);

impl Pkt {
    pub fn into_mbuf(self) -> Mbuf {
        self.0
    }
}

fn u16_len(n: usize) -> Option<u16> {
    u16::try_from(n).ok()
}

/// Takes `n` of the `have` bytes off the packet with `cut` (an mbuf edit that refuses more than
/// it holds); too many is `TooShort` either way.
#[inline(always)]
fn shorten<E>(
    m: &mut Mbuf,
    n: usize,
    have: usize,
    cut: impl FnOnce(&mut Mbuf, u16) -> Result<(), E>,
) -> Result<(), BufError> {
    match u16_len(n) {
        Some(len) if n <= have => cut(m, len).map_err(|_| BufError::TooShort { need: n, have }),
        _ => Err(BufError::TooShort { need: n, have }),
    }
}

impl PacketBuf for Pkt {
    #[inline(always)]
    fn data(&self) -> &[u8] {
        self.0.data()
    }

    #[inline(always)]
    fn data_mut(&mut self) -> &mut [u8] {
        self.0.data_mut()
    }

    #[inline(always)]
    fn headroom(&self) -> usize {
        usize::from(self.0.headroom())
    }

    #[inline(always)]
    fn tailroom(&self) -> usize {
        usize::from(self.0.tailroom())
    }

    #[inline]
    fn prepend(&mut self, n: usize) -> Result<(), BufError> {
        let have = self.headroom();
        match u16_len(n) {
            Some(len) if n <= have => self
                .0
                .prepend(len)
                .map(|_| ())
                .map_err(|_| BufError::NoHeadroom { need: n, have }),
            _ => Err(BufError::NoHeadroom { need: n, have }),
        }
    }

    #[inline]
    fn adj(&mut self, n: usize) -> Result<(), BufError> {
        let have = self.0.data().len();
        shorten(&mut self.0, n, have, |m, len| m.adj(len))
    }

    /// From the last segment, as DPDK trims (Ethernet padding at the end of a frame).
    #[inline]
    fn trim(&mut self, n: usize) -> Result<(), BufError> {
        let have = self.0.pkt_len() as usize;
        shorten(&mut self.0, n, have, |m, len| m.trim(len))
    }

    #[inline(always)]
    fn frame_len(&self) -> usize {
        self.0.pkt_len() as usize
    }

    #[inline]
    fn truncate(&mut self, n: usize) -> Result<(), BufError> {
        let have = self.0.data().len();
        shorten(&mut self.0, n, have, |m, len| m.truncate(len))
    }

    #[inline(always)]
    fn offload(&self) -> Offload {
        Offload::from_word(self.0.offload())
    }

    #[inline(always)]
    fn set_offload(&mut self, o: Offload) {
        self.0.set_offload(o.word());
    }

    #[inline]
    fn append(&mut self, n: usize) -> Result<(), BufError> {
        let have = self.tailroom();
        match u16_len(n) {
            Some(len) if n <= have && self.0.is_contiguous() => self
                .0
                .append(len)
                .map(|_| ())
                .map_err(|_| BufError::NoTailroom { need: n, have }),
            _ => Err(BufError::NoTailroom { need: n, have }),
        }
    }
}

/// Guest frames larger than one mbuf (jumbo frames, 64 KB TSO segments) grow into a chain
/// from the packet's own pool; the virtqueue appends at most 2 KiB at a time, so the headers
/// always land in the first segment.
impl vhost_user::PacketBuffer for Pkt {
    #[inline]
    fn reset(&mut self) {
        // Resetting clears ol_flags, and with them the offload word's validity.
        self.0.reset();
    }

    #[inline]
    fn append(&mut self, len: usize) -> Option<&mut [u8]> {
        self.0.append_grow(u16_len(len)?).ok()
    }

    #[inline]
    fn set_net_hdr(&mut self, hdr: NetHdr) {
        // An empty header is the common case: the buffer was just reset, nothing to clear.
        if hdr != NetHdr::NONE {
            self.0.set_offload(offload_of(hdr).word());
        }
    }

    #[inline]
    fn net_hdr(&self) -> NetHdr {
        let o = Offload::from_word(self.0.offload());
        if o.is_none() {
            return NetHdr::NONE;
        }
        net_hdr_of(o, self.0.data())
    }

    #[inline(always)]
    fn len(&self) -> usize {
        self.0.pkt_len() as usize
    }

    #[inline]
    fn piece(&self, i: usize) -> Option<&[u8]> {
        if i == 0 {
            // The common case, without walking the chain.
            return Some(self.0.data());
        }
        self.0.segments().nth(i)
    }
}

/// The offload state a (checked) virtio-net header describes.
pub fn offload_of(h: NetHdr) -> Offload {
    if h.is_none() && h.flags & net_hdr::FLAG_DATA_VALID == 0 {
        return Offload::NONE;
    }
    let csum = if h.flags & net_hdr::FLAG_NEEDS_CSUM != 0 {
        // The header was checked: the offset is a plausible field offset (TCP 16, UDP 6).
        Csum::Partial {
            start: h.csum_start,
            offset: u8::try_from(h.csum_offset).unwrap_or(u8::MAX),
        }
    } else if h.flags & net_hdr::FLAG_DATA_VALID != 0 {
        Csum::Verified
    } else {
        Csum::None
    };
    let kind = match h.gso_type & !net_hdr::gso::ECN {
        net_hdr::gso::TCPV4 => Some(GsoKind::Tcp4),
        net_hdr::gso::TCPV6 => Some(GsoKind::Tcp6),
        net_hdr::gso::UDP_L4 => Some(GsoKind::Udp),
        _ => None,
    };
    let gso = kind.map(|kind| Gso {
        kind,
        size: h.gso_size,
        ecn: h.gso_type & net_hdr::gso::ECN != 0,
    });
    Offload::new(csum, gso)
}

/// The virtio-net header that describes offload state `o` of the frame whose first segment is
/// `head` (for a GSO packet, `hdr_len` is its headers' length, read from the L4 header).
pub fn net_hdr_of(o: Offload, head: &[u8]) -> NetHdr {
    let mut h = NetHdr::NONE;
    match o.csum() {
        Csum::Partial { start, offset } => {
            h.flags = net_hdr::FLAG_NEEDS_CSUM;
            h.csum_start = start;
            h.csum_offset = u16::from(offset);
        }
        Csum::Verified => h.flags = net_hdr::FLAG_DATA_VALID,
        Csum::None => {}
    }
    if let Some(g) = o.gso() {
        h.gso_type = match g.kind {
            GsoKind::Tcp4 => net_hdr::gso::TCPV4,
            GsoKind::Tcp6 => net_hdr::gso::TCPV6,
            GsoKind::Udp => net_hdr::gso::UDP_L4,
        } | if g.ecn { net_hdr::gso::ECN } else { 0 };
        h.gso_size = g.size;
        let l4 = usize::from(h.csum_start);
        let l4_len = match g.kind {
            GsoKind::Udp => 8,
            _ => head.get(l4 + 12).map_or(20, |b| usize::from(b >> 4) * 4),
        };
        h.hdr_len = u16::try_from(l4 + l4_len).unwrap_or(u16::MAX);
    }
    h
}

/// The longest frame a kernel interface may hand over as one GSO packet: a 64 KB IPv6 payload
/// behind its header, a VLAN tag and Ethernet (IPv4's 64 KB total length is shorter). Longer
/// ones (BIG TCP) have lengths their IP headers cannot state.
pub const KERNEL_GSO_FRAME_MAX: usize = 14 + 4 + 40 + 65_535;

/// Ethernet header and a VLAN tag: what a frame may carry beyond its vif's MTU.
const L2_OVERHEAD: usize = 18;

/// The offload state of a `frame_len`-byte frame a kernel interface handed over with header
/// `h`. The header is checked as a guest's is (the forwarding plane relies on it: a checksum
/// field outside the frame, a GSO packet without a partial checksum are refused), and the frame
/// against its vif's `mtu` (GSO packets excepted, up to [`KERNEL_GSO_FRAME_MAX`]); a refusal
/// names the drop reason to count.
pub fn kernel_rx_offload(raw: NetHdr, frame_len: usize, mtu: u16) -> Result<Offload, DropReason> {
    let checked = raw
        .parse_tx(net_hdr::OFFLOAD_FEATURES, frame_len)
        .map_err(|_| DropReason::Offload)?;
    let limit = if checked.gso_type == net_hdr::gso::NONE {
        usize::from(mtu) + L2_OVERHEAD
    } else {
        KERNEL_GSO_FRAME_MAX
    };
    if frame_len > limit {
        return Err(DropReason::Mtu);
    }
    // Unlike a guest's, the kernel's DATA_VALID means something: it checked the checksum.
    if checked.is_none() && raw.flags & net_hdr::FLAG_DATA_VALID != 0 {
        return Ok(Offload::new(Csum::Verified, None));
    }
    Ok(offload_of(checked))
}

/// The header that tells a kernel interface what is left to finish of `p`.
pub fn kernel_tx_hdr(p: &Pkt) -> NetHdr {
    let o = Offload::from_word(p.0.offload());
    if o.is_none() {
        return NetHdr::NONE;
    }
    net_hdr_of(o, p.0.data())
}

/// A hash of an Ethernet frame's flow: its IP addresses, protocol and (TCP, UDP, SCTP,
/// unfragmented) ports, or its MAC addresses for anything else. Every packet of a flow hashes
/// the same, so a multi-queue vif gets a flow on one queue. Reads headers only; never fails.
#[inline]
pub fn flow_hash(frame: &[u8]) -> u32 {
    const K: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut h: u64 = 0;
    let mut mix = |bytes: &[u8]| {
        for chunk in bytes.chunks(8) {
            let mut w = [0u8; 8];
            w[..chunk.len()].copy_from_slice(chunk);
            h = (h.rotate_left(5) ^ u64::from_le_bytes(w)).wrapping_mul(K);
        }
    };
    let mut off = 12;
    let mut ethertype = frame
        .get(12..14)
        .map_or(0, |b| u16::from_be_bytes([b[0], b[1]]));
    // 802.1Q / 802.1ad tags.
    while matches!(ethertype, 0x8100 | 0x88a8) {
        off += 4;
        ethertype = frame
            .get(off..off + 2)
            .map_or(0, |b| u16::from_be_bytes([b[0], b[1]]));
    }
    let l3 = off + 2;
    let ports = |at: usize| frame.get(at..at + 4);
    match ethertype {
        0x0800 => {
            let Some(ip) = frame.get(l3..l3 + 20) else {
                mix(frame.get(..12).unwrap_or(frame));
                return fold(h);
            };
            let ihl = usize::from(ip[0] & 0x0f) * 4;
            let proto = ip[9];
            mix(&ip[12..20]);
            mix(&[proto]);
            // Not a fragment (offset 0, MF clear): the ports are there in every packet.
            let unfragmented = u16::from_be_bytes([ip[6], ip[7]]) & 0x3fff == 0;
            if unfragmented && matches!(proto, 6 | 17 | 132) {
                if let Some(p) = ports(l3 + ihl) {
                    mix(p);
                }
            }
        }
        0x86dd => {
            let Some(ip) = frame.get(l3..l3 + 40) else {
                mix(frame.get(..12).unwrap_or(frame));
                return fold(h);
            };
            let next = ip[6];
            mix(&ip[8..40]);
            mix(&[next]);
            if matches!(next, 6 | 17 | 132) {
                if let Some(p) = ports(l3 + 40) {
                    mix(p);
                }
            }
        }
        _ => mix(frame.get(..12).unwrap_or(frame)),
    }
    fold(h)
}

#[inline(always)]
fn fold(h: u64) -> u32 {
    ((h >> 32) ^ h) as u32
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_kernel_header_is_checked_before_it_becomes_offload_state() {
        let tso = NetHdr {
            flags: net_hdr::FLAG_NEEDS_CSUM,
            gso_type: net_hdr::gso::TCPV4,
            hdr_len: 1514, // the kernel's linear length, not the headers': not relied on
            gso_size: 1448,
            csum_start: 34,
            csum_offset: 16,
        };
        let o = kernel_rx_offload(tso, 65_000, 1500).expect("a TSO frame from a pod");
        assert_eq!(
            o.gso(),
            Some(Gso {
                kind: GsoKind::Tcp4,
                size: 1448,
                ecn: false
            })
        );
        assert_eq!(
            o.csum(),
            Csum::Partial {
                start: 34,
                offset: 16
            }
        );
        assert_eq!(
            kernel_rx_offload(tso, KERNEL_GSO_FRAME_MAX + 1, 1500),
            Err(DropReason::Mtu),
            "beyond what IP lengths can say"
        );
        let partial = NetHdr {
            flags: net_hdr::FLAG_NEEDS_CSUM,
            csum_start: 34,
            csum_offset: 6,
            ..NetHdr::NONE
        };
        assert!(kernel_rx_offload(partial, 60, 1500).is_ok());
        assert_eq!(
            kernel_rx_offload(partial, 41, 1500),
            Err(DropReason::Offload),
            "checksum field past the end"
        );
        assert_eq!(
            kernel_rx_offload(NetHdr::NONE, 1518, 1500),
            Ok(Offload::NONE)
        );
        assert_eq!(
            kernel_rx_offload(NetHdr::NONE, 1519, 1500),
            Err(DropReason::Mtu),
            "no GSO: the vif's MTU holds"
        );
        assert_eq!(
            kernel_rx_offload(NetHdr { gso_size: 0, ..tso }, 65_000, 1500),
            Err(DropReason::Offload)
        );
        assert_eq!(
            kernel_rx_offload(NetHdr { gso_type: 3, ..tso }, 65_000, 1500),
            Err(DropReason::Offload),
            "UFO is not a type we take"
        );
        let valid = NetHdr {
            flags: net_hdr::FLAG_DATA_VALID,
            ..NetHdr::NONE
        };
        assert_eq!(
            kernel_rx_offload(valid, 100, 1500).map(Offload::csum),
            Ok(Csum::Verified)
        );
    }

    #[test]
    fn a_header_and_the_offload_state_translate_both_ways() {
        let mut tcp = vec![0u8; 100];
        tcp[34 + 12] = 8 << 4; // a 32-byte TCP header
        let cases = [
            NetHdr::NONE,
            NetHdr {
                flags: net_hdr::FLAG_NEEDS_CSUM,
                csum_start: 34,
                csum_offset: 16,
                ..NetHdr::NONE
            },
            NetHdr {
                flags: net_hdr::FLAG_DATA_VALID,
                ..NetHdr::NONE
            },
            NetHdr {
                flags: net_hdr::FLAG_NEEDS_CSUM,
                gso_type: net_hdr::gso::TCPV4 | net_hdr::gso::ECN,
                gso_size: 1448,
                hdr_len: 66,
                csum_start: 34,
                csum_offset: 16,
            },
            NetHdr {
                flags: net_hdr::FLAG_NEEDS_CSUM,
                gso_type: net_hdr::gso::UDP_L4,
                gso_size: 1400,
                hdr_len: 42,
                csum_start: 34,
                csum_offset: 6,
            },
        ];
        for h in cases {
            assert_eq!(net_hdr_of(offload_of(h), &tcp), h, "{h:?}");
        }
        assert!(offload_of(NetHdr::NONE).is_none());
    }

    #[test]
    fn a_flow_hashes_the_same_and_flows_spread() {
        let frame = |sport: u16, dport: u16| {
            let mut f = Vec::new();
            etherparse::PacketBuilder::ethernet2([2, 0, 0, 0, 0, 1], [2, 0, 0, 0, 0, 2])
                .ipv4([198, 18, 1, 2], [198, 18, 2, 2], 64)
                .udp(sport, dport)
                .write(&mut f, &[0u8; 18])
                .expect("frame");
            f
        };
        assert_eq!(flow_hash(&frame(1000, 53)), flow_hash(&frame(1000, 53)));
        // Payload does not count: only the headers.
        let mut other_payload = frame(1000, 53);
        if let Some(b) = other_payload.last_mut() {
            *b = 0xff;
        }
        assert_eq!(flow_hash(&other_payload), flow_hash(&frame(1000, 53)));
        // Sixteen flows over two queues land on both.
        let on_one = (0..16u16)
            .filter(|i| flow_hash(&frame(1000 + i, 53)).is_multiple_of(2))
            .count();
        assert!((1..16).contains(&on_one), "{on_one} of 16 flows on queue 0");
        // Short and odd frames hash too, without panicking.
        for f in [&[][..], &[0u8; 13][..], &[0x81u8; 40][..]] {
            let _ = flow_hash(f);
        }
    }
}
