//! Packets the vrouter answers itself, rewritten in place in the buffer that asked: ARP replies,
//! IPv6 neighbour advertisements, ICMP / ICMPv6 errors (DHCP answers are [`super::dhcp`]'s).

use crate::buf::PacketBuf;
use crate::meta::{PacketMeta, L3};
use crate::offload::Offload;
use crate::stats::DropReason;
use crate::wire::{arp, ethernet, icmp, ipv4, ipv6, MacAddr};
use std::net::{Ipv4Addr, Ipv6Addr};

/// The all-nodes multicast address: where an advertisement answering an unspecified source
/// (duplicate address detection) goes.
const ALL_NODES: Ipv6Addr = Ipv6Addr::new(0xff02, 0, 0, 0, 0, 0, 0, 1);
/// What the vrouter puts in the hop limit / TTL of its ICMP errors.
const ERROR_TTL: u8 = 64;
/// Neighbour discovery messages go with hop limit 255, the proof that they are on-link
/// (RFC 4861 section 7.1.2).
const ND_HOP_LIMIT: u8 = 255;
/// An ICMPv4 error quotes the IP header and this much of what follows it (RFC 792).
const V4_QUOTED_PAYLOAD: usize = 8;
/// An ICMPv6 error quotes as much of the packet as keeps the error within the IPv6 minimum
/// MTU (RFC 4443 section 2.4).
const IPV6_MIN_MTU: usize = 1280;

/// Readdress `eth`, the L2 header of a frame that asked (up to its L3 header), as the
/// answer's: from `mac` to `dst`, or back to the asker when `dst` is `None`. The ethertype, and
/// any 802.1Q tag behind the addresses, stay.
pub(super) fn answer_ethernet(
    eth: &mut [u8],
    dst: Option<MacAddr>,
    mac: MacAddr,
) -> Result<(), DropReason> {
    let asked = ethernet::Repr::parse(&ethernet::Frame::new_unchecked(&*eth))?;
    let answer = ethernet::Repr {
        dst: dst.unwrap_or(asked.src),
        src: mac,
        ..asked
    };
    answer.emit(&mut ethernet::Frame::new_unchecked(eth));
    Ok(())
}

/// Turn the ARP request in `buf` (ARP at `l3_off`) into the reply "`ip` is at `mac`".
pub fn arp_reply<B: PacketBuf>(
    buf: &mut B,
    l3_off: usize,
    ip: Ipv4Addr,
    mac: MacAddr,
) -> Result<(), DropReason> {
    // A reply is a packet of our own: nothing of the request's offload state applies.
    buf.set_offload(Offload::NONE);
    let (eth, a) = buf.data_mut().split_at_mut(l3_off);
    let request = arp::Repr::parse(&arp::Packet::new_unchecked(&*a))?;
    request
        .reply(ip, mac)
        .emit(&mut arp::Packet::new_unchecked(a));
    answer_ethernet(eth, Some(request.sender_mac), mac)
}

/// If `buf` is an IPv6 neighbour solicitation, its target address.
pub fn ns_target(data: &[u8], m: &PacketMeta) -> Option<Ipv6Addr> {
    if m.l3 != L3::Ipv6 || m.proto != ipv6::next_header::ICMPV6 {
        return None;
    }
    let msg = data.get(usize::from(m.l4_off)..)?;
    if msg.len() < icmp::v6::ND_LEN {
        return None;
    }
    let ns = icmp::Packet::new_unchecked(msg);
    (ns.msg_type() == icmp::v6::NEIGHBOR_SOLICIT).then(|| ns.nd_target())
}

/// Turn the neighbour solicitation in `buf` into the advertisement "`target` is at `mac`"
/// (router, solicited, override; with the target link-layer address option).
pub fn na_reply<B: PacketBuf>(
    buf: &mut B,
    m: &PacketMeta,
    target: Ipv6Addr,
    mac: MacAddr,
) -> Result<(), DropReason> {
    let l3 = usize::from(m.l3_off);
    let asker = Ipv6Addr::from(m.src);
    let (dst, flags) = if asker.is_unspecified() {
        (ALL_NODES, icmp::v6::NA_ROUTER | icmp::v6::NA_OVERRIDE)
    } else {
        let f = icmp::v6::NA_ROUTER | icmp::v6::NA_OVERRIDE | icmp::v6::NA_SOLICITED;
        (asker, f)
    };
    let na = icmp::v6::Repr::NeighborAdvert {
        flags,
        target,
        lladdr: Some(mac),
    };
    answer_nd(buf, l3, None, mac, target, dst, &na)
}

/// Rewrite the neighbour-discovery message in `buf` (its IPv6 header at `l3`) into `msg` from
/// `src` to `dst`, sent to `eth_dst` (`None`: back to the asker's MAC) from `mac`: the buffer
/// cut or grown to the answer's length, no offload left on it.
fn answer_nd<B: PacketBuf>(
    buf: &mut B,
    l3: usize,
    eth_dst: Option<MacAddr>,
    mac: MacAddr,
    src: Ipv6Addr,
    dst: Ipv6Addr,
    msg: &icmp::v6::Repr,
) -> Result<(), DropReason> {
    let ip = ipv6::Repr {
        src,
        dst,
        next_header: ipv6::next_header::ICMPV6,
        payload_len: msg.buffer_len(),
        hop_limit: ND_HOP_LIMIT,
    };
    let want = l3 + ip.buffer_len() + msg.buffer_len();
    let have = buf.len();
    buf.set_offload(Offload::NONE);
    if have > want {
        buf.truncate(want).map_err(|_| DropReason::Truncated)?;
    } else if have < want {
        buf.append(want - have).map_err(|_| DropReason::Truncated)?;
    }
    let (eth, rest) = buf.data_mut().split_at_mut(l3);
    // By default to the asker's MAC (its message came from it), whatever the IPv6 destination.
    answer_ethernet(eth, eth_dst, mac)?;
    let (iph, body) = rest.split_at_mut(ip.buffer_len());
    ip.emit(&mut ipv6::Packet::new_unchecked(iph));
    msg.emit(src, dst, &mut icmp::Packet::new_unchecked(body));
    Ok(())
}

/// Whether `data` is an IPv6 router solicitation (`m` parsed it).
pub fn is_router_solicit(data: &[u8], m: &PacketMeta) -> bool {
    m.l3 == L3::Ipv6
        && m.proto == ipv6::next_header::ICMPV6
        && data.get(usize::from(m.l4_off)) == Some(&icmp::v6::ROUTER_SOLICIT)
}

/// How long a pod takes the vrouter as its default router from one advertisement: the most
/// RFC 4861 allows (section 6.2.1). Besides answering solicitations, vrouterd advertises
/// unsolicited ([`router_advert`]) well within it, so a pod that never solicits again keeps
/// its default route.
pub const ROUTER_LIFETIME: u16 = 9000;
/// The prefix's lifetimes: RFC 4861's defaults (30 and 7 days).
const VALID_LIFETIME: u32 = 2_592_000;
const PREFERRED_LIFETIME: u32 = 604_800;

/// Turn the router solicitation in `buf` into an advertisement of `ra` from the vrouter
/// (`mac`, and the link-local address made from it): to the asker, or to all nodes when it
/// asked from the unspecified address.
pub fn ra_reply<B: PacketBuf>(
    buf: &mut B,
    m: &PacketMeta,
    ra: &crate::tables::RouterAdvert,
    mac: MacAddr,
) -> Result<(), DropReason> {
    let l3 = usize::from(m.l3_off);
    let asker = Ipv6Addr::from(m.src);
    let dst = if asker.is_unspecified() {
        ALL_NODES
    } else {
        asker
    };
    answer_nd(buf, l3, None, mac, link_local(mac), dst, &advert(ra, mac))
}

/// What vif advertisement `ra` says, from the vrouter's `mac`.
fn advert(ra: &crate::tables::RouterAdvert, mac: MacAddr) -> icmp::v6::Repr {
    icmp::v6::Repr::RouterAdvert {
        router_lifetime: ROUTER_LIFETIME,
        lladdr: mac,
        mtu: u32::from(ra.mtu),
        prefix: ra.prefix,
        prefix_len: 64,
        prefix_flags: icmp::v6::PREFIX_ON_LINK
            | if ra.autonomous {
                icmp::v6::PREFIX_AUTONOMOUS
            } else {
                0
            },
        valid_lifetime: VALID_LIFETIME,
        preferred_lifetime: PREFERRED_LIFETIME,
    }
}

/// The MAC IPv6 all-nodes multicast maps to (RFC 2464 section 7).
const ALL_NODES_MAC: MacAddr = MacAddr([0x33, 0x33, 0, 0, 0, 1]);

/// Write into `buf` (whatever it held) an unsolicited advertisement of `ra` from the vrouter
/// (`mac` and its link-local address) to all nodes: what keeps a pod's default route alive
/// past one router lifetime when it never solicits again.
pub fn router_advert<B: PacketBuf>(
    buf: &mut B,
    ra: &crate::tables::RouterAdvert,
    mac: MacAddr,
) -> Result<(), DropReason> {
    let l3 = ethernet::HEADER_LEN;
    let have = buf.len();
    if have < l3 {
        buf.append(l3 - have).map_err(|_| DropReason::Truncated)?;
    }
    ethernet::Repr {
        dst: ALL_NODES_MAC,
        src: mac,
        ethertype: ethernet::ethertype::IPV6,
    }
    .emit(&mut ethernet::Frame::new_unchecked(
        &mut buf.data_mut()[..l3],
    ));
    answer_nd(
        buf,
        l3,
        Some(ALL_NODES_MAC),
        mac,
        link_local(mac),
        ALL_NODES,
        &advert(ra, mac),
    )
}

/// What ICMP error to send.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IcmpError {
    TimeExceeded,
    /// Fragmentation needed / packet too big, with the MTU to advertise.
    TooBig(u16),
}

/// Replace the IP packet in `buf` with an ICMP error about it, sent back to the frame's source
/// from `mac` and from `from4` / `from6`. Quotes the original header and 8 bytes (IPv4) or as
/// much as fits the IPv6 minimum MTU.
pub fn icmp_error<B: PacketBuf>(
    buf: &mut B,
    m: &PacketMeta,
    kind: IcmpError,
    mac: MacAddr,
    from4: Ipv4Addr,
    from6: Ipv6Addr,
) -> Result<(), DropReason> {
    let l3 = usize::from(m.l3_off);
    let asker_mac = ethernet::Frame::new_checked(buf.data())?.src();
    let v4 = m.ethertype == ethernet::ethertype::IPV4;
    let quote = if v4 {
        usize::from(m.l4_off) - l3 + V4_QUOTED_PAYLOAD
    } else {
        IPV6_MIN_MTU - ipv6::HEADER_LEN - icmp::HEADER_LEN
    };
    let quote = quote.min(buf.len() - l3).min(usize::from(m.l3_len));
    // Keep only the quoted bytes (from the first segment; any further ones go), then push
    // Ethernet + IP + ICMP in front of them. The reply is a packet of our own: no offloads.
    buf.adj(l3).map_err(|_| DropReason::Truncated)?;
    buf.truncate(quote).map_err(|_| DropReason::Truncated)?;
    buf.set_offload(Offload::NONE);
    let ip_len = if v4 {
        ipv4::MIN_HEADER_LEN
    } else {
        ipv6::HEADER_LEN
    };
    buf.prepend(ethernet::HEADER_LEN + ip_len + icmp::HEADER_LEN)
        .map_err(|_| DropReason::NoHeadroom)?;
    let (eth, rest) = buf.data_mut().split_at_mut(ethernet::HEADER_LEN);
    let e = ethernet::Repr {
        dst: asker_mac,
        src: mac,
        ethertype: m.ethertype,
    };
    e.emit(&mut ethernet::Frame::new_unchecked(eth));
    let (iph, msg) = rest.split_at_mut(ip_len);
    let icmp_len = icmp::HEADER_LEN + quote;
    let mut msg = icmp::Packet::new_unchecked(&mut msg[..icmp_len]);
    if v4 {
        let error = match kind {
            IcmpError::TimeExceeded => icmp::v4::Repr::TimeExceeded,
            IcmpError::TooBig(mtu) => icmp::v4::Repr::FragNeeded { mtu },
        };
        error.emit(&mut msg);
        let ip = ipv4::Repr {
            src: from4,
            dst: Ipv4Addr::from(m.src as u32),
            protocol: ipv4::proto::ICMP,
            payload_len: icmp_len,
            ttl: ERROR_TTL,
            ident: 0,
            dont_frag: false,
            dscp_ecn: 0,
        };
        ip.emit(&mut ipv4::Packet::new_unchecked(iph));
    } else {
        let dst = Ipv6Addr::from(m.src);
        let error = match kind {
            IcmpError::TimeExceeded => icmp::v6::Repr::TimeExceeded,
            IcmpError::TooBig(mtu) => icmp::v6::Repr::PacketTooBig {
                mtu: u32::from(mtu),
            },
        };
        error.emit(from6, dst, &mut msg);
        let ip = ipv6::Repr {
            src: from6,
            dst,
            next_header: ipv6::next_header::ICMPV6,
            payload_len: icmp_len,
            hop_limit: ERROR_TTL,
        };
        ip.emit(&mut ipv6::Packet::new_unchecked(iph));
    }
    Ok(())
}

/// The IPv6 link-local address made from a MAC (modified EUI-64), the source of the vrouter's
/// ICMPv6 errors.
pub fn link_local(mac: MacAddr) -> Ipv6Addr {
    let m = mac.0;
    Ipv6Addr::from([
        0xfe,
        0x80,
        0,
        0,
        0,
        0,
        0,
        0,
        m[0] ^ 2,
        m[1],
        m[2],
        0xff,
        0xfe,
        m[3],
        m[4],
        m[5],
    ])
}
