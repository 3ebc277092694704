//! ICMP errors as captured on the wire, checked the way a host's stack would take them: every
//! checksum valid (outer IPv4, ICMP, and the quoted IPv4 header), then read.

use std::net::Ipv4Addr;

use etherparse::{Ipv4HeaderSlice, NetSlice, SlicedPacket, TransportSlice};

/// An ICMPv4 error: its outer addresses and what it quotes of the packet it is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Icmp4Error {
    pub src: Ipv4Addr,
    pub dst: Ipv4Addr,
    /// The quoted packet's source address and port, destination address and port.
    pub quoted: (Ipv4Addr, u16, Ipv4Addr, u16),
}

/// Reads ICMPv4 error frame `f`; panics (failing the test) if it is not one or a checksum is
/// wrong.
pub fn icmp4_error(f: &[u8]) -> Icmp4Error {
    let p = SlicedPacket::from_ethernet(f).expect("a frame etherparse reads");
    let Some(NetSlice::Ipv4(ip)) = &p.net else {
        panic!("not IPv4: {f:02x?}")
    };
    let h = ip.header().to_header();
    assert_eq!(h.header_checksum, h.calc_header_checksum(), "IPv4 checksum");
    let Some(TransportSlice::Icmpv4(i)) = &p.transport else {
        panic!("not ICMP: {f:02x?}")
    };
    assert_eq!(
        i.checksum(),
        i.header().icmp_type.calc_checksum(i.payload()),
        "ICMP checksum"
    );
    let quote = i.payload();
    let ihl = usize::from(quote[0] & 0x0f) * 4;
    let q = Ipv4HeaderSlice::from_slice(&quote[..ihl])
        .expect("the quoted header")
        .to_header();
    assert_eq!(
        q.header_checksum,
        q.calc_header_checksum(),
        "quoted IPv4 checksum"
    );
    let port = |at: usize| u16::from_be_bytes([quote[ihl + at], quote[ihl + at + 1]]);
    Icmp4Error {
        src: Ipv4Addr::from(h.source),
        dst: Ipv4Addr::from(h.destination),
        quoted: (
            Ipv4Addr::from(q.source),
            port(0),
            Ipv4Addr::from(q.destination),
            port(2),
        ),
    }
}
