//! A translation written into a packet: an IPv4 or IPv6 address and a port (or ICMP / ICMPv6
//! echo identifier) replaced, with the IPv4 header checksum (IPv6 has none) and the TCP / UDP /
//! ICMP / ICMPv6 checksum updated incrementally (RFC 1624), never summed over the payload.

use crate::meta::{PacketMeta, L3};
use crate::stats::DropReason;
use crate::wire::checksum::{update16, update32};
use crate::wire::{icmp, ipv4};

/// Which end of the packet a translation rewrites.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum End {
    /// The source: a packet leaving through source NAT.
    Source,
    /// The destination: a reply coming back through it.
    Destination,
}

/// What a NAT flow does to each of its packets: `end`'s address becomes `addr` (host order: an
/// IPv4 address in the low 32 bits, as flow keys hold it, or an IPv6 address) and its port
/// `port` (for ICMP echo, the identifier, whichever the end).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Translation {
    pub end: End,
    pub addr: u128,
    pub port: u16,
}

/// Offsets in the IPv4 header and the L4 headers.
const IP_CSUM: usize = 10;
const IP_SRC: usize = 12;
const IP_DST: usize = 16;
const TCP_CSUM: usize = 16;
const UDP_CSUM: usize = 6;
const ICMP_CSUM: usize = 2;
const ICMP_ID: usize = 4;

/// Write `x` into the IPv4 packet `m` describes in `frame`. `l4_partial`: the L4 checksum
/// field holds only the pseudo-header sum (an offloaded checksum, finished later by software
/// or the egress device), so it follows the address but not the port, which the final sum
/// covers anyway. Fails (the packet is dropped, counted) for a protocol NAT does not
/// translate or a header shorter than the parse promised.
pub fn translate(
    frame: &mut [u8],
    m: &PacketMeta,
    x: Translation,
    l4_partial: bool,
) -> Result<(), DropReason> {
    if m.l3 == L3::Ipv6 {
        return translate_v6(frame, m, x, l4_partial);
    }
    let addr = x.addr as u32;
    let (l3, l4) = (usize::from(m.l3_off), usize::from(m.l4_off));
    let ip_at = match x.end {
        End::Source => l3 + IP_SRC,
        End::Destination => l3 + IP_DST,
    };
    let old_addr = read32(frame, ip_at)?;
    let (l4_csum, port_at) = match (m.proto, x.end) {
        (ipv4::proto::TCP, End::Source) => (l4 + TCP_CSUM, l4),
        (ipv4::proto::TCP, End::Destination) => (l4 + TCP_CSUM, l4 + 2),
        (ipv4::proto::UDP, End::Source) => (l4 + UDP_CSUM, l4),
        (ipv4::proto::UDP, End::Destination) => (l4 + UDP_CSUM, l4 + 2),
        (ipv4::proto::ICMP, _) => (l4 + ICMP_CSUM, l4 + ICMP_ID),
        _ => return Err(DropReason::NatUnsupported),
    };
    let old_port = read16(frame, port_at)?;
    let l4_sum = read16(frame, l4_csum)?;
    let ip_sum = read16(frame, l3 + IP_CSUM)?;

    write32(frame, ip_at, addr)?;
    write16(frame, l3 + IP_CSUM, update32(ip_sum, old_addr, addr))?;
    write16(frame, port_at, x.port)?;
    let pseudo = m.proto != ipv4::proto::ICMP;
    let new_sum = if l4_partial {
        // Only the pseudo-header's address is in the field (folded, not complemented).
        if pseudo {
            !update32(!l4_sum, old_addr, addr)
        } else {
            l4_sum
        }
    } else if m.proto == ipv4::proto::UDP && l4_sum == 0 {
        // No checksum sent (IPv4 allows it): none to keep.
        0
    } else {
        let s = if pseudo {
            update32(l4_sum, old_addr, addr)
        } else {
            l4_sum
        };
        let s = update16(s, old_port, x.port);
        // Zero means "no checksum" in UDP: a sum of zero is sent as all ones (RFC 768).
        if m.proto == ipv4::proto::UDP && s == 0 {
            0xffff
        } else {
            s
        }
    };
    write16(frame, l4_csum, new_sum)
}

/// Offsets in the IPv6 header and the ICMPv6 header.
const IP6_SRC: usize = 8;
const IP6_DST: usize = 24;

/// [`translate`] for IPv6: no header checksum; every L4 checksum (TCP, UDP, ICMPv6) covers the
/// pseudo-header, so each follows the 128-bit address, and the port (identifier) unless the
/// field holds only the pseudo-header sum.
fn translate_v6(
    frame: &mut [u8],
    m: &PacketMeta,
    x: Translation,
    l4_partial: bool,
) -> Result<(), DropReason> {
    let (l3, l4) = (usize::from(m.l3_off), usize::from(m.l4_off));
    let ip_at = match x.end {
        End::Source => l3 + IP6_SRC,
        End::Destination => l3 + IP6_DST,
    };
    let (l4_csum, port_at) = match (m.proto, x.end) {
        (ipv4::proto::TCP, End::Source) => (l4 + TCP_CSUM, l4),
        (ipv4::proto::TCP, End::Destination) => (l4 + TCP_CSUM, l4 + 2),
        (ipv4::proto::UDP, End::Source) => (l4 + UDP_CSUM, l4),
        (ipv4::proto::UDP, End::Destination) => (l4 + UDP_CSUM, l4 + 2),
        (ipv4::proto::ICMPV6, _) => (l4 + ICMP_CSUM, l4 + ICMP_ID),
        _ => return Err(DropReason::NatUnsupported),
    };
    let old_addr = read128(frame, ip_at)?;
    let old_port = read16(frame, port_at)?;
    let l4_sum = read16(frame, l4_csum)?;
    write128(frame, ip_at, x.addr)?;
    write16(frame, port_at, x.port)?;
    let new_sum = if l4_partial {
        !update128(!l4_sum, old_addr, x.addr)
    } else {
        let s = update16(update128(l4_sum, old_addr, x.addr), old_port, x.port);
        if m.proto == ipv4::proto::UDP && s == 0 {
            0xffff
        } else {
            s
        }
    };
    write16(frame, l4_csum, new_sum)
}

/// [`update32`] over a 128-bit field.
fn update128(hc: u16, old: u128, new: u128) -> u16 {
    (0..4).fold(hc, |s, i| {
        let sh = 96 - 32 * i;
        update32(s, (old >> sh) as u32, (new >> sh) as u32)
    })
}

/// The ICMPv4 error types that quote the packet they answer (RFC 792): destination
/// unreachable, time exceeded, parameter problem.
const QUOTING_ERRORS: [u8; 3] = [
    icmp::v4::DEST_UNREACHABLE,
    icmp::v4::TIME_EXCEEDED,
    PARAMETER_PROBLEM,
];
const PARAMETER_PROBLEM: u8 = 12;
/// The quoted packet starts after the ICMP header (type, code, checksum, 4 unused bytes).
const QUOTE_AT: usize = 8;

/// The ICMPv6 error types that quote the packet they answer (RFC 4443): destination
/// unreachable, packet too big, time exceeded, parameter problem.
const QUOTING_ERRORS_V6: [u8; 4] = [1, 2, 3, 4];

/// The packet an ICMP / ICMPv6 error quotes, as it left: protocol, family, source and
/// destination (as flow keys hold them) and ports (for a quoted echo: identifier and type, as
/// flow keys hold them).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Quoted {
    pub proto: u8,
    pub v6: bool,
    pub src: u128,
    pub dst: u128,
    pub sport: u16,
    pub dport: u16,
}

/// What the ICMP or ICMPv6 error `m` describes quotes, if it is an error that quotes a TCP, UDP
/// or echo packet whose ports lie in `frame`.
pub fn quoted(frame: &[u8], m: &PacketMeta) -> Option<Quoted> {
    if m.l3 == L3::Ipv6 {
        return quoted_v6(frame, m);
    }
    let l4 = usize::from(m.l4_off);
    if m.proto != ipv4::proto::ICMP || m.fragment || !QUOTING_ERRORS.contains(frame.get(l4)?) {
        return None;
    }
    let (e, el4) = quote_offsets(frame, l4)?;
    let proto = *frame.get(e + 9)?;
    let (sport, dport) = match proto {
        ipv4::proto::TCP | ipv4::proto::UDP => {
            (read16(frame, el4).ok()?, read16(frame, el4 + 2).ok()?)
        }
        ipv4::proto::ICMP => (
            read16(frame, el4 + ICMP_ID).ok()?,
            u16::from(*frame.get(el4)?),
        ),
        _ => return None,
    };
    Some(Quoted {
        proto,
        v6: false,
        src: u128::from(read32(frame, e + IP_SRC).ok()?),
        dst: u128::from(read32(frame, e + IP_DST).ok()?),
        sport,
        dport,
    })
}

/// [`quoted`] for ICMPv6 (the quoted header's next header must be the L4 one: no extension
/// headers in the quote).
fn quoted_v6(frame: &[u8], m: &PacketMeta) -> Option<Quoted> {
    let l4 = usize::from(m.l4_off);
    if m.proto != ipv4::proto::ICMPV6 || m.fragment || !QUOTING_ERRORS_V6.contains(frame.get(l4)?) {
        return None;
    }
    let (e, el4, proto) = quote_offsets_v6(frame, l4)?;
    let (sport, dport) = match proto {
        ipv4::proto::TCP | ipv4::proto::UDP => {
            (read16(frame, el4).ok()?, read16(frame, el4 + 2).ok()?)
        }
        _ => (
            read16(frame, el4 + ICMP_ID).ok()?,
            u16::from(*frame.get(el4)?),
        ),
    };
    Some(Quoted {
        proto,
        v6: true,
        src: read128(frame, e + IP6_SRC).ok()?,
        dst: read128(frame, e + IP6_DST).ok()?,
        sport,
        dport,
    })
}

/// Where the quoted IPv6 header and its L4 header start, and the L4 protocol (TCP, UDP or
/// ICMPv6), for an ICMPv6 message at `l4`.
fn quote_offsets_v6(frame: &[u8], l4: usize) -> Option<(usize, usize, u8)> {
    let e = l4 + QUOTE_AT;
    let proto = *frame.get(e + 6)?;
    (*frame.get(e)? >> 4 == 6
        && matches!(
            proto,
            ipv4::proto::TCP | ipv4::proto::UDP | ipv4::proto::ICMPV6
        ))
    .then_some((e, e + IPV6_HEADER_LEN, proto))
}

const IPV6_HEADER_LEN: usize = 40;

/// [`translate_icmp_error`] for ICMPv6: no IP header checksums; the ICMPv6 checksum covers the
/// pseudo-header (the outer addresses) and the quote, so it follows every address and the
/// port that moved.
fn translate_icmp_error_v6(
    frame: &mut [u8],
    m: &PacketMeta,
    x: Translation,
) -> Result<(), DropReason> {
    let (l3, l4) = (usize::from(m.l3_off), usize::from(m.l4_off));
    let (e, el4, proto) = quote_offsets_v6(frame, l4).ok_or(DropReason::Malformed)?;
    let port_at = match (proto, x.end) {
        (ipv4::proto::TCP | ipv4::proto::UDP, End::Destination) => el4,
        (ipv4::proto::TCP | ipv4::proto::UDP, End::Source) => el4 + 2,
        _ => el4 + ICMP_ID,
    };
    let (outer_at, quoted_at) = match x.end {
        End::Destination => (l3 + IP6_DST, e + IP6_SRC),
        End::Source => (l3 + IP6_SRC, e + IP6_DST),
    };
    let old_outer = read128(frame, outer_at)?;
    let old_quoted = read128(frame, quoted_at)?;
    let old_port = read16(frame, port_at)?;
    let mut s = read16(frame, l4 + ICMP_CSUM)?;
    if x.end == End::Destination || old_outer == old_quoted {
        write128(frame, outer_at, x.addr)?;
        s = update128(s, old_outer, x.addr);
    }
    write128(frame, quoted_at, x.addr)?;
    write16(frame, port_at, x.port)?;
    let s = update16(update128(s, old_quoted, x.addr), old_port, x.port);
    write16(frame, l4 + ICMP_CSUM, s)
}

/// Where the quoted IPv4 header and its L4 header start, for an ICMP message at `l4`.
fn quote_offsets(frame: &[u8], l4: usize) -> Option<(usize, usize)> {
    let e = l4 + QUOTE_AT;
    let ver_ihl = *frame.get(e)?;
    let ihl = usize::from(ver_ihl & 0x0f) * 4;
    (ver_ihl >> 4 == 4 && ihl >= ipv4::MIN_HEADER_LEN).then_some((e, e + ihl))
}

/// Translate an ICMPv4 error about a translated flow, as the flow's entry for the error's
/// direction translates that direction's packets (`x.end`), with the outer IPv4, quoted IPv4 and
/// ICMP checksums updated. The quoted L4 checksum is left as it is: nobody checks a quote's (and
/// it is often cut off).
///
/// - [`End::Destination`] (coming back through source NAT or a floating IP, or toward a VIP's
///   backend): the error's destination and the source of the packet it quotes become `x`'s
///   address and port (the pod's, or the backend's).
/// - [`End::Source`] (leaving through source NAT or a floating IP, or from a VIP's backend): the
///   destination of the packet it quotes becomes `x`'s address and port (the pool pair, the
///   floating IP, the VIP), and so does the error's source if it is that quoted destination
///   (the translated host itself answered; a router on the way keeps its own address).
pub fn translate_icmp_error(
    frame: &mut [u8],
    m: &PacketMeta,
    x: Translation,
) -> Result<(), DropReason> {
    if m.l3 == L3::Ipv6 {
        return translate_icmp_error_v6(frame, m, x);
    }
    let addr = x.addr as u32;
    let (l3, l4) = (usize::from(m.l3_off), usize::from(m.l4_off));
    let (e, el4) = quote_offsets(frame, l4).ok_or(DropReason::Malformed)?;
    let port_at = match (frame.get(e + 9).copied(), x.end) {
        (Some(ipv4::proto::TCP | ipv4::proto::UDP), End::Destination) => el4,
        (Some(ipv4::proto::TCP | ipv4::proto::UDP), End::Source) => el4 + 2,
        (Some(ipv4::proto::ICMP), _) => el4 + ICMP_ID,
        _ => return Err(DropReason::NatUnsupported),
    };
    let (outer_at, quoted_at) = match x.end {
        End::Destination => (l3 + IP_DST, e + IP_SRC),
        End::Source => (l3 + IP_SRC, e + IP_DST),
    };
    let old_outer = read32(frame, outer_at)?;
    let ip_sum = read16(frame, l3 + IP_CSUM)?;
    let old_quoted = read32(frame, quoted_at)?;
    let quote_sum = read16(frame, e + IP_CSUM)?;
    let old_port = read16(frame, port_at)?;
    let icmp_sum = read16(frame, l4 + ICMP_CSUM)?;

    if x.end == End::Destination || old_outer == old_quoted {
        write32(frame, outer_at, addr)?;
        write16(frame, l3 + IP_CSUM, update32(ip_sum, old_outer, addr))?;
    }
    let new_quote_sum = update32(quote_sum, old_quoted, addr);
    write32(frame, quoted_at, addr)?;
    write16(frame, e + IP_CSUM, new_quote_sum)?;
    write16(frame, port_at, x.port)?;
    // The ICMP checksum covers the whole quote: its address, header checksum and port moved.
    let s = update32(icmp_sum, old_quoted, addr);
    let s = update16(s, quote_sum, new_quote_sum);
    let s = update16(s, old_port, x.port);
    write16(frame, l4 + ICMP_CSUM, s)
}

fn read16(d: &[u8], at: usize) -> Result<u16, DropReason> {
    d.get(at..at + 2)
        .map(|b| u16::from_be_bytes([b[0], b[1]]))
        .ok_or(DropReason::Truncated)
}

fn read32(d: &[u8], at: usize) -> Result<u32, DropReason> {
    d.get(at..at + 4)
        .map(|b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
        .ok_or(DropReason::Truncated)
}

fn read128(d: &[u8], at: usize) -> Result<u128, DropReason> {
    d.get(at..at + 16)
        .and_then(|b| <[u8; 16]>::try_from(b).ok())
        .map(u128::from_be_bytes)
        .ok_or(DropReason::Truncated)
}

fn write128(d: &mut [u8], at: usize, v: u128) -> Result<(), DropReason> {
    d.get_mut(at..at + 16)
        .ok_or(DropReason::Truncated)?
        .copy_from_slice(&v.to_be_bytes());
    Ok(())
}

fn write16(d: &mut [u8], at: usize, v: u16) -> Result<(), DropReason> {
    d.get_mut(at..at + 2)
        .ok_or(DropReason::Truncated)?
        .copy_from_slice(&v.to_be_bytes());
    Ok(())
}

fn write32(d: &mut [u8], at: usize, v: u32) -> Result<(), DropReason> {
    d.get_mut(at..at + 4)
        .ok_or(DropReason::Truncated)?
        .copy_from_slice(&v.to_be_bytes());
    Ok(())
}

#[cfg(test)]
mod tests {
    //! etherparse is the oracle: it builds the packets (checksums computed over everything)
    //! and recomputes the checksums of what `translate` left, from scratch.
    use super::*;
    use crate::meta::parse_ethernet;
    use etherparse::{PacketBuilder, SlicedPacket, TransportSlice};
    use proptest::prelude::*;

    #[derive(Debug, Clone, Copy)]
    enum Proto {
        Tcp,
        Udp,
        UdpNoChecksum,
        Echo,
        EchoReply,
    }

    fn build(proto: Proto, src: [u8; 4], dst: [u8; 4], sp: u16, dp: u16, pay: &[u8]) -> Vec<u8> {
        let b = PacketBuilder::ethernet2([2, 0, 0, 0, 0, 1], [2, 0, 0, 0, 0, 2]).ipv4(src, dst, 64);
        let mut out = Vec::new();
        match proto {
            Proto::Tcp => b
                .tcp(sp, dp, 0x0102_0304, 4096)
                .syn()
                .write(&mut out, pay)
                .unwrap(),
            Proto::Udp | Proto::UdpNoChecksum => b.udp(sp, dp).write(&mut out, pay).unwrap(),
            Proto::Echo => b.icmpv4_echo_request(sp, dp).write(&mut out, pay).unwrap(),
            Proto::EchoReply => b.icmpv4_echo_reply(sp, dp).write(&mut out, pay).unwrap(),
        }
        if let Proto::UdpNoChecksum = proto {
            out[14 + 20 + 6] = 0;
            out[14 + 20 + 7] = 0;
        }
        out
    }

    /// One's-complement equality: 0x0000 and 0xffff are both zero.
    fn same_sum(a: u16, b: u16) -> bool {
        a == b || (a | b == 0xffff && (a == 0 || b == 0))
    }

    /// The checksums etherparse computes for the packet as it now is, and those it carries.
    fn check(frame: &[u8]) -> Result<(), TestCaseError> {
        let p =
            SlicedPacket::from_ethernet(frame).map_err(|e| TestCaseError::fail(e.to_string()))?;
        let Some(etherparse::NetSlice::Ipv4(ip)) = &p.net else {
            return Err(TestCaseError::fail("not IPv4"));
        };
        let h = ip.header().to_header();
        prop_assert_eq!(h.header_checksum, h.calc_header_checksum());
        let payload = ip.payload().payload;
        match &p.transport {
            Some(TransportSlice::Tcp(t)) => {
                let want = t
                    .to_header()
                    .calc_checksum_ipv4(
                        &h,
                        payload_after(payload, t.slice().len() - t.payload().len()),
                    )
                    .unwrap();
                prop_assert!(
                    same_sum(t.checksum(), want),
                    "tcp {:#x} want {:#x}",
                    t.checksum(),
                    want
                );
            }
            Some(TransportSlice::Udp(u)) => {
                if u.checksum() != 0 {
                    let want = u.to_header().calc_checksum_ipv4(&h, u.payload()).unwrap();
                    prop_assert!(
                        same_sum(u.checksum(), want),
                        "udp {:#x} want {:#x}",
                        u.checksum(),
                        want
                    );
                }
            }
            Some(TransportSlice::Icmpv4(i)) => {
                let want = i.header().icmp_type.calc_checksum(i.payload());
                prop_assert!(
                    same_sum(i.checksum(), want),
                    "icmp {:#x} want {:#x}",
                    i.checksum(),
                    want
                );
            }
            _ => return Err(TestCaseError::fail("no transport header")),
        }
        Ok(())
    }

    fn payload_after(ip_payload: &[u8], header_len: usize) -> &[u8] {
        &ip_payload[header_len..]
    }

    fn proto() -> impl Strategy<Value = Proto> {
        prop_oneof![
            Just(Proto::Tcp),
            Just(Proto::Udp),
            Just(Proto::UdpNoChecksum),
            Just(Proto::Echo),
            Just(Proto::EchoReply),
        ]
    }

    proptest! {
        #[test]
        fn translated_packets_carry_the_checksums_etherparse_computes(
            proto in proto(),
            src in any::<[u8; 4]>(),
            dst in any::<[u8; 4]>(),
            sp in any::<u16>(),
            dp in any::<u16>(),
            pay in proptest::collection::vec(any::<u8>(), 0..64),
            source in any::<bool>(),
            addr in any::<u32>(),
            port in any::<u16>(),
        ) {
            let mut f = build(proto, src, dst, sp, dp, &pay);
            let m = parse_ethernet(&f).unwrap();
            let end = if source { End::Source } else { End::Destination };
            translate(&mut f, &m, Translation { end, addr: u128::from(addr), port }, false).unwrap();
            check(&f)?;
            let after = parse_ethernet(&f).unwrap();
            let icmp = matches!(proto, Proto::Echo | Proto::EchoReply);
            match end {
                End::Source => {
                    prop_assert_eq!(after.src_v4(), addr);
                    prop_assert_eq!(after.dst, m.dst);
                    if !icmp { prop_assert_eq!((after.sport, after.dport), (port, m.dport)); }
                }
                End::Destination => {
                    prop_assert_eq!(after.dst_v4(), addr);
                    prop_assert_eq!(after.src, m.src);
                    if !icmp { prop_assert_eq!((after.sport, after.dport), (m.sport, port)); }
                }
            }
            if icmp {
                // The echo identifier, in the metadata's source port.
                prop_assert_eq!(after.sport, port);
            }
            if let Proto::UdpNoChecksum = proto {
                prop_assert_eq!(&f[14 + 20 + 6..14 + 20 + 8], &[0, 0]);
            }
        }

        /// A partial checksum (offloaded) follows the address only: finished over the
        /// translated packet, it is the checksum etherparse computes.
        #[test]
        fn partial_checksums_finish_to_the_right_sum(
            tcp in any::<bool>(),
            src in any::<[u8; 4]>(),
            dst in any::<[u8; 4]>(),
            sp in any::<u16>(),
            dp in any::<u16>(),
            pay in proptest::collection::vec(any::<u8>(), 0..64),
            source in any::<bool>(),
            addr in any::<u32>(),
            port in any::<u16>(),
        ) {
            let proto = if tcp { Proto::Tcp } else { Proto::Udp };
            let mut f = build(proto, src, dst, sp, dp, &pay);
            let m = parse_ethernet(&f).unwrap();
            let l4 = usize::from(m.l4_off);
            let at = l4 + if tcp { TCP_CSUM } else { UDP_CSUM };
            // What a sender offloading the checksum leaves: the pseudo-header sum.
            let l4_len = f.len() - l4;
            let pseudo = crate::wire::checksum::pseudo_v4(src, dst, m.proto, l4_len as u16);
            f[at..at + 2].copy_from_slice(&crate::wire::checksum::fold(pseudo).to_be_bytes());
            let end = if source { End::Source } else { End::Destination };
            translate(&mut f, &m, Translation { end, addr: u128::from(addr), port }, true).unwrap();
            // Finish it as the egress would: sum from the L4 header on, complement.
            let s = crate::wire::checksum::sum(0, &f[l4..]);
            let mut done = !crate::wire::checksum::fold(s);
            if !tcp && done == 0 { done = 0xffff; }
            f[at..at + 2].copy_from_slice(&done.to_be_bytes());
            check(&f)?;
        }
    }

    /// An ICMP error from `from` to `to` quoting the first 28 bytes (IPv4 header and 8 more)
    /// of `quoted`'s IP packet, as a router sends it; checksums computed by etherparse.
    fn icmp_error(from: [u8; 4], to: [u8; 4], quoted: &[u8]) -> Vec<u8> {
        let b = PacketBuilder::ethernet2([2, 0, 0, 0, 0, 1], [2, 0, 0, 0, 0, 2]).ipv4(from, to, 64);
        let mut out = Vec::new();
        b.icmpv4(etherparse::Icmpv4Type::TimeExceeded(
            etherparse::icmpv4::TimeExceededCode::TtlExceededInTransit,
        ))
        .write(&mut out, &quoted[14..14 + 28])
        .unwrap();
        out
    }

    proptest! {
        /// An ICMP error translated either way carries the checksums etherparse computes, outside
        /// and in the quote, and the addresses and port the translation says: the error's
        /// destination and the quote's source, or the quote's destination (and the error's
        /// source when the quoted destination sent it).
        #[test]
        fn translated_icmp_errors_carry_valid_checksums(
            tcp in any::<bool>(),
            src in any::<[u8; 4]>(),
            dst in any::<[u8; 4]>(),
            sp in any::<u16>(),
            dp in any::<u16>(),
            router in any::<[u8; 4]>(),
            from_dst in any::<bool>(),
            source in any::<bool>(),
            addr in any::<u32>(),
            port in any::<u16>(),
        ) {
            let proto = if tcp { Proto::Tcp } else { Proto::Udp };
            let quoted = build(proto, src, dst, sp, dp, b"payload!");
            // Translated back (destination): the error goes to the quote's source. Translated
            // on its way out (source): it comes from the quote's destination or a router.
            let from = if !source || from_dst { dst } else { router };
            let mut f = icmp_error(from, src, &quoted);
            let m = crate::meta::parse_ethernet(&f).unwrap();
            let end = if source { End::Source } else { End::Destination };
            translate_icmp_error(&mut f, &m, Translation { end, addr: u128::from(addr), port }).unwrap();
            check(&f)?;
            let e = 14 + 20 + 8;
            let q = etherparse::Ipv4HeaderSlice::from_slice(&f[e..e + 20]).unwrap().to_header();
            prop_assert_eq!(q.header_checksum, q.calc_header_checksum());
            let outer = etherparse::Ipv4HeaderSlice::from_slice(&f[14..34]).unwrap().to_header();
            let at = |o: usize| u16::from_be_bytes([f[o], f[o + 1]]);
            let a = std::net::Ipv4Addr::from(addr).octets();
            match end {
                End::Destination => {
                    prop_assert_eq!((outer.source, outer.destination), (from, a));
                    prop_assert_eq!((q.source, q.destination), (a, dst));
                    prop_assert_eq!((at(e + 20), at(e + 22)), (port, dp));
                }
                End::Source => {
                    let outer_src = if from == dst { a } else { from };
                    prop_assert_eq!((outer.source, outer.destination), (outer_src, src));
                    prop_assert_eq!((q.source, q.destination), (src, a));
                    prop_assert_eq!((at(e + 20), at(e + 22)), (sp, port));
                }
            }
        }
    }

    fn build6(proto: Proto, src: u128, dst: u128, sp: u16, dp: u16, pay: &[u8]) -> Vec<u8> {
        let b = PacketBuilder::ethernet2([2, 0, 0, 0, 0, 1], [2, 0, 0, 0, 0, 2]).ipv6(
            src.to_be_bytes(),
            dst.to_be_bytes(),
            64,
        );
        let mut out = Vec::new();
        match proto {
            Proto::Tcp => b.tcp(sp, dp, 7, 4096).syn().write(&mut out, pay).unwrap(),
            Proto::Udp | Proto::UdpNoChecksum => b.udp(sp, dp).write(&mut out, pay).unwrap(),
            Proto::Echo => b.icmpv6_echo_request(sp, dp).write(&mut out, pay).unwrap(),
            Proto::EchoReply => b.icmpv6_echo_reply(sp, dp).write(&mut out, pay).unwrap(),
        }
        out
    }

    /// The L4 checksum etherparse computes for the IPv6 packet as it now is, against the one
    /// it carries.
    fn check6(frame: &[u8]) -> Result<(), TestCaseError> {
        let p =
            SlicedPacket::from_ethernet(frame).map_err(|e| TestCaseError::fail(e.to_string()))?;
        let Some(etherparse::NetSlice::Ipv6(ip)) = &p.net else {
            return Err(TestCaseError::fail("not IPv6"));
        };
        let h = ip.header().to_header();
        let (carried, want) = match &p.transport {
            Some(TransportSlice::Tcp(t)) => (
                t.checksum(),
                t.to_header()
                    .calc_checksum_ipv6_raw(h.source, h.destination, t.payload())
                    .unwrap(),
            ),
            Some(TransportSlice::Udp(u)) => (
                u.checksum(),
                u.to_header()
                    .calc_checksum_ipv6_raw(h.source, h.destination, u.payload())
                    .unwrap(),
            ),
            Some(TransportSlice::Icmpv6(i)) => (
                i.checksum(),
                i.icmp_type()
                    .calc_checksum(h.source, h.destination, i.payload())
                    .unwrap(),
            ),
            _ => return Err(TestCaseError::fail("no transport header")),
        };
        prop_assert!(
            same_sum(carried, want),
            "checksum {:#x} want {:#x}",
            carried,
            want
        );
        Ok(())
    }

    proptest! {
        /// IPv6: TCP, UDP and ICMPv6 echo translated at either end carry the checksum
        /// etherparse computes over the whole packet (pseudo-header with both 128-bit
        /// addresses included), and the address and port the translation says.
        #[test]
        fn translated_ipv6_packets_carry_the_checksums_etherparse_computes(
            proto in proto(),
            src in any::<u128>(),
            dst in any::<u128>(),
            sp in any::<u16>(),
            dp in any::<u16>(),
            pay in proptest::collection::vec(any::<u8>(), 0..64),
            source in any::<bool>(),
            addr in any::<u128>(),
            port in any::<u16>(),
            partial in any::<bool>(),
        ) {
            let mut f = build6(proto, src, dst, sp, dp, &pay);
            let m = parse_ethernet(&f).unwrap();
            prop_assert_eq!(m.l3, L3::Ipv6);
            let l4 = usize::from(m.l4_off);
            let at = l4 + match proto {
                Proto::Tcp => TCP_CSUM,
                Proto::Udp | Proto::UdpNoChecksum => UDP_CSUM,
                _ => ICMP_CSUM,
            };
            let partial = partial && matches!(proto, Proto::Tcp | Proto::Udp);
            if partial {
                let l4_len = (f.len() - l4) as u32;
                let pseudo = crate::wire::checksum::pseudo_v6(
                    src.to_be_bytes(), dst.to_be_bytes(), m.proto, l4_len);
                f[at..at + 2].copy_from_slice(&crate::wire::checksum::fold(pseudo).to_be_bytes());
            }
            let end = if source { End::Source } else { End::Destination };
            translate(&mut f, &m, Translation { end, addr, port }, partial).unwrap();
            if partial {
                let s = crate::wire::checksum::sum(0, &f[l4..]);
                let mut done = !crate::wire::checksum::fold(s);
                if done == 0 { done = 0xffff; }
                f[at..at + 2].copy_from_slice(&done.to_be_bytes());
            }
            check6(&f)?;
            let after = parse_ethernet(&f).unwrap();
            let icmp = matches!(proto, Proto::Echo | Proto::EchoReply);
            match end {
                End::Source => {
                    prop_assert_eq!((after.src, after.dst), (addr, dst));
                    if !icmp { prop_assert_eq!((after.sport, after.dport), (port, m.dport)); }
                }
                End::Destination => {
                    prop_assert_eq!((after.src, after.dst), (src, addr));
                    if !icmp { prop_assert_eq!((after.sport, after.dport), (m.sport, port)); }
                }
            }
            if icmp {
                prop_assert_eq!(after.sport, port);
            }
        }
    }

    proptest! {
        /// An ICMPv6 error (port unreachable, packet too big or time exceeded) translated either
        /// way carries the ICMPv6 checksum etherparse computes (pseudo-header and quote), and
        /// the addresses and port the translation says, outside and in the quote.
        #[test]
        fn translated_icmpv6_errors_carry_valid_checksums(
            tcp in any::<bool>(),
            kind in 0u8..3,
            src in any::<u128>(),
            dst in any::<u128>(),
            sp in any::<u16>(),
            dp in any::<u16>(),
            router in any::<u128>(),
            from_dst in any::<bool>(),
            source in any::<bool>(),
            addr in any::<u128>(),
            port in any::<u16>(),
        ) {
            let proto = if tcp { Proto::Tcp } else { Proto::Udp };
            let sent = build6(proto, src, dst, sp, dp, b"payload!");
            let from = if !source || from_dst { dst } else { router };
            let ty = match kind {
                0 => etherparse::Icmpv6Type::DestinationUnreachable(
                    etherparse::icmpv6::DestUnreachableCode::Port,
                ),
                1 => etherparse::Icmpv6Type::PacketTooBig { mtu: 1280 },
                _ => etherparse::Icmpv6Type::TimeExceeded(
                    etherparse::icmpv6::TimeExceededCode::HopLimitExceeded,
                ),
            };
            let mut f = Vec::new();
            PacketBuilder::ethernet2([2, 0, 0, 0, 0, 1], [2, 0, 0, 0, 0, 2])
                .ipv6(from.to_be_bytes(), src.to_be_bytes(), 64)
                .icmpv6(ty)
                .write(&mut f, &sent[14..])
                .unwrap();
            let m = parse_ethernet(&f).unwrap();
            let q = quoted(&f, &m).expect("an error that quotes");
            prop_assert_eq!((q.v6, q.src, q.dst, q.sport, q.dport), (true, src, dst, sp, dp));
            let end = if source { End::Source } else { End::Destination };
            translate_icmp_error(&mut f, &m, Translation { end, addr, port }).unwrap();
            check6(&f)?;
            let at128 = |o: usize| u128::from_be_bytes(f[o..o + 16].try_into().unwrap());
            let at16 = |o: usize| u16::from_be_bytes([f[o], f[o + 1]]);
            let e = 14 + 40 + 8;
            let (outer_src, outer_dst) = (at128(14 + 8), at128(14 + 24));
            let (q_src, q_dst) = (at128(e + 8), at128(e + 24));
            match end {
                End::Destination => {
                    prop_assert_eq!((outer_src, outer_dst), (from, addr));
                    prop_assert_eq!((q_src, q_dst), (addr, dst));
                    prop_assert_eq!((at16(e + 40), at16(e + 42)), (port, dp));
                }
                End::Source => {
                    let want_src = if from == dst { addr } else { from };
                    prop_assert_eq!((outer_src, outer_dst), (want_src, src));
                    prop_assert_eq!((q_src, q_dst), (src, addr));
                    prop_assert_eq!((at16(e + 40), at16(e + 42)), (sp, port));
                }
            }
        }
    }

    #[test]
    fn other_protocols_and_short_headers_are_refused() {
        let mut f = build(Proto::Udp, [198, 18, 0, 1], [203, 0, 113, 1], 1, 2, b"x");
        let mut m = parse_ethernet(&f).unwrap();
        let x = Translation {
            end: End::Source,
            addr: 1,
            port: 1,
        };
        let mut gre = m;
        gre.proto = 47;
        assert_eq!(
            translate(&mut f, &gre, x, false),
            Err(DropReason::NatUnsupported)
        );
        m.l4_off = f.len() as u16 - 4;
        assert_eq!(translate(&mut f, &m, x, false), Err(DropReason::Truncated));
    }
}
