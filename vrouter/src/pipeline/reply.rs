//! Packets the vrouter answers itself, rewritten in place in the buffer that asked: ARP replies,
//! IPv6 neighbour advertisements, ICMP / ICMPv6 errors.

use crate::buf::PacketBuf;
use crate::meta::{PacketMeta, L3};
use crate::stats::DropReason;
use crate::wire::{arp, checksum, ethernet, icmp, ipv4, ipv6, MacAddr};
use std::net::{Ipv4Addr, Ipv6Addr};

/// Turn the ARP request in `buf` (ARP at `l3_off`) into the reply "`ip` is at `mac`".
pub fn arp_reply<B: PacketBuf>(buf: &mut B, l3_off: usize, ip: Ipv4Addr, mac: MacAddr) {
    // A reply is a packet of our own: nothing of the request's offload state applies.
    buf.set_offload(crate::offload::Offload::NONE);
    let d = buf.data_mut();
    let (eth, a) = d.split_at_mut(l3_off);
    let mut req = arp::Packet::new_unchecked(&mut a[..arp::PACKET_LEN]);
    let (smac, sip) = (req.sender_mac(), req.sender_ip());
    req.set_operation(arp::OP_REPLY);
    req.set_sender_mac(mac);
    req.set_sender_ip(ip);
    req.set_target_mac(smac);
    req.set_target_ip(sip);
    let mut e = ethernet::Frame::new_unchecked(eth);
    e.set_dst(smac);
    e.set_src(mac);
}

/// If `buf` is an IPv6 neighbour solicitation, its target address.
pub fn ns_target(data: &[u8], m: &PacketMeta) -> Option<Ipv6Addr> {
    if m.l3 != L3::Ipv6 || m.proto != ipv6::next_header::ICMPV6 {
        return None;
    }
    let icmp = data.get(usize::from(m.l4_off)..)?;
    if icmp.len() < icmp::v6::ND_LEN || icmp[0] != icmp::v6::NEIGHBOR_SOLICIT {
        return None;
    }
    let mut t = [0u8; 16];
    t.copy_from_slice(&icmp[8..24]);
    Some(Ipv6Addr::from(t))
}

/// Turn the neighbour solicitation in `buf` into the advertisement "`target` is at `mac`"
/// (router, solicited, override; with the target link-layer address option).
pub fn na_reply<B: PacketBuf>(
    buf: &mut B,
    m: &PacketMeta,
    target: Ipv6Addr,
    mac: MacAddr,
) -> Result<(), DropReason> {
    const NA_LEN: usize = icmp::v6::ND_LEN + 8;
    let l3 = usize::from(m.l3_off);
    let want = l3 + ipv6::HEADER_LEN + NA_LEN;
    let have = buf.len();
    buf.set_offload(crate::offload::Offload::NONE);
    if have > want {
        buf.truncate(want).map_err(|_| DropReason::Truncated)?;
    } else if have < want {
        buf.append(want - have).map_err(|_| DropReason::Truncated)?;
    }
    let d = buf.data_mut();
    let (eth, ip) = d.split_at_mut(l3);
    let mut e = ethernet::Frame::new_unchecked(eth);
    let asker_mac = e.src();
    e.set_dst(asker_mac);
    e.set_src(mac);
    let mut p = ipv6::Packet::new_unchecked(&mut ip[..]);
    let asker = p.src();
    let dst = if asker.is_unspecified() {
        Ipv6Addr::new(0xff02, 0, 0, 0, 0, 0, 0, 1)
    } else {
        asker
    };
    p.set_version_tc_flow(0, 0);
    p.set_payload_len(NA_LEN as u16);
    p.set_next_header(ipv6::next_header::ICMPV6);
    p.set_hop_limit(255);
    p.set_src(target);
    p.set_dst(dst);
    let body = &mut ip[ipv6::HEADER_LEN..];
    body[0] = icmp::v6::NEIGHBOR_ADVERT;
    body[1] = 0;
    body[2..4].copy_from_slice(&[0, 0]);
    let mut flags = icmp::v6::NA_ROUTER | icmp::v6::NA_OVERRIDE;
    if !asker.is_unspecified() {
        flags |= icmp::v6::NA_SOLICITED;
    }
    body[4..8].copy_from_slice(&flags.to_be_bytes());
    body[8..24].copy_from_slice(&target.octets());
    body[24] = icmp::v6::OPT_TARGET_LLADDR;
    body[25] = 1;
    body[26..32].copy_from_slice(&mac.0);
    let c = !checksum::fold(checksum::sum(
        checksum::pseudo_v6(
            target.octets(),
            dst.octets(),
            ipv6::next_header::ICMPV6,
            NA_LEN as u32,
        ),
        &body[..NA_LEN],
    ));
    body[2..4].copy_from_slice(&c.to_be_bytes());
    Ok(())
}

/// What ICMP error to send.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IcmpError {
    TimeExceeded,
    /// Fragmentation needed / packet too big, with the MTU to advertise.
    TooBig(u16),
}

/// Replace the IP packet in `buf` (an Ethernet frame from `asker_mac`... the frame's source)
/// with an ICMP error about it, addressed back to its source from `from4` / `from6`, sent from
/// `mac`. Quotes the original header and 8 bytes (IPv4) or as much as fits 1280 (IPv6).
pub fn icmp_error<B: PacketBuf>(
    buf: &mut B,
    m: &PacketMeta,
    kind: IcmpError,
    mac: MacAddr,
    from4: Ipv4Addr,
    from6: Ipv6Addr,
) -> Result<(), DropReason> {
    let l3 = usize::from(m.l3_off);
    let (dst_mac, _) = {
        let e = ethernet::Frame::new_checked(buf.data()).map_err(DropReason::from)?;
        (e.src(), e.dst())
    };
    let v4 = m.ethertype == ethernet::ethertype::IPV4;
    let quote = if v4 {
        usize::from(m.l4_off) - l3 + 8
    } else {
        1280 - ipv6::HEADER_LEN - icmp::HEADER_LEN
    };
    let quote = quote.min(buf.len() - l3).min(usize::from(m.l3_len));
    // Keep only the quoted bytes (from the first segment; any further ones go), then push
    // Ethernet + IP + ICMP in front of them. The reply is a packet of our own: no offloads.
    buf.adj(l3).map_err(|_| DropReason::Truncated)?;
    buf.truncate(quote).map_err(|_| DropReason::Truncated)?;
    buf.set_offload(crate::offload::Offload::NONE);
    let ip_len = if v4 {
        ipv4::MIN_HEADER_LEN
    } else {
        ipv6::HEADER_LEN
    };
    buf.prepend(ethernet::HEADER_LEN + ip_len + icmp::HEADER_LEN)
        .map_err(|_| DropReason::NoHeadroom)?;
    let d = buf.data_mut();
    let (eth, rest) = d.split_at_mut(ethernet::HEADER_LEN);
    let mut e = ethernet::Frame::new_unchecked(eth);
    e.set_dst(dst_mac);
    e.set_src(mac);
    e.set_ethertype(m.ethertype);
    let (iph, ic) = rest.split_at_mut(ip_len);
    let icmp_len = icmp::HEADER_LEN + quote;
    let mut msg = icmp::Packet::new_unchecked(&mut ic[..]);
    if v4 {
        let (t, code, rest) = match kind {
            IcmpError::TimeExceeded => (icmp::v4::TIME_EXCEEDED, 0, 0),
            IcmpError::TooBig(mtu) => (
                icmp::v4::DEST_UNREACHABLE,
                icmp::v4::CODE_FRAG_NEEDED,
                u32::from(mtu),
            ),
        };
        msg.set_msg_type(t);
        msg.set_code(code);
        msg.set_rest(rest);
        msg.set_checksum(0);
        let c = checksum::checksum(&ic[..icmp_len]);
        ic[2..4].copy_from_slice(&c.to_be_bytes());
        let mut ip = ipv4::Packet::new_unchecked(iph);
        ip.set_version_and_len(ipv4::MIN_HEADER_LEN);
        ip.set_dscp_ecn(0);
        ip.set_total_len((ipv4::MIN_HEADER_LEN + icmp_len) as u16);
        ip.set_ident(0);
        ip.set_flags_unfragmented(false);
        ip.set_ttl(64);
        ip.set_protocol(ipv4::proto::ICMP);
        ip.set_src(from4);
        ip.set_dst(Ipv4Addr::from(m.src as u32));
        ip.fill_checksum();
    } else {
        let (t, rest) = match kind {
            IcmpError::TimeExceeded => (icmp::v6::TIME_EXCEEDED, 0),
            IcmpError::TooBig(mtu) => (icmp::v6::PACKET_TOO_BIG, u32::from(mtu)),
        };
        msg.set_msg_type(t);
        msg.set_code(0);
        msg.set_rest(rest);
        msg.set_checksum(0);
        let dst = Ipv6Addr::from(m.src);
        let c = !checksum::fold(checksum::sum(
            checksum::pseudo_v6(
                from6.octets(),
                dst.octets(),
                ipv6::next_header::ICMPV6,
                icmp_len as u32,
            ),
            &ic[..icmp_len],
        ));
        ic[2..4].copy_from_slice(&c.to_be_bytes());
        let mut ip = ipv6::Packet::new_unchecked(iph);
        ip.set_version_tc_flow(0, 0);
        ip.set_payload_len(icmp_len as u16);
        ip.set_next_header(ipv6::next_header::ICMPV6);
        ip.set_hop_limit(64);
        ip.set_src(from6);
        ip.set_dst(dst);
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
