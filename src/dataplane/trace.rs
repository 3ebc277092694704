//! Traced packets as an operator reads them: the headers each came in and went out with, in
//! one line each, and what the pipeline decided. The records hold only the first bytes of a
//! packet, so the headers are read at fixed offsets, each only as far as the bytes go.

use std::fmt::Write;
use std::net::{Ipv4Addr, Ipv6Addr};

use control_api::api::TracedPacket;
use vrouter::pipeline::trace::TraceRecord;
use vrouter::pipeline::Verdict;

use super::VrouterDataplane;

impl VrouterDataplane {
    /// Whether the trace still runs, and the packets traced since the last call, described.
    pub(super) fn traced_packets(&self) -> (bool, Vec<TracedPacket>) {
        let records = self.tracer.drain();
        let running = self.tracer.vif().is_some();
        let reg = self.registry();
        let name = |vif: u16| {
            reg.vifs
                .get(&vif)
                .map_or_else(|| format!("vif {vif}"), |v| v.name.clone())
        };
        let packets = records.iter().map(|r| describe(r, &name)).collect();
        (running, packets)
    }
}

/// The bytes of a record's buffer that belong to the packet.
fn seen(bytes: &[u8], len: u32) -> &[u8] {
    &bytes[..bytes.len().min(len as usize)]
}

fn describe(r: &TraceRecord, name: &impl Fn(u16) -> String) -> TracedPacket {
    let received = frame(seen(&r.input, r.in_len));
    let (verdict, out_vif, drop_reason) = match r.verdict {
        Verdict::Tx(v) => ("sent", Some(name(v)), None),
        Verdict::Host => ("to host", None, None),
        Verdict::Drop(reason) => ("dropped", None, Some(reason.name().to_owned())),
        Verdict::Agent(_) => ("to agent", None, None),
    };
    TracedPacket {
        vrf: u32::from(r.vrf),
        length: r.in_len,
        received,
        verdict: verdict.to_owned(),
        out_vif,
        drop_reason,
        sent: (r.out_len > 0).then(|| sent(seen(&r.output, r.out_len))),
    }
}

const ETH_IPV4: u16 = 0x0800;
const ETH_IPV6: u16 = 0x86dd;
const ETH_ARP: u16 = 0x0806;
const ETH_VLAN: u16 = 0x8100;
const ETH_MPLS: u16 = 0x8847;

fn be16(b: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_be_bytes(b.get(at..at + 2)?.try_into().ok()?))
}

fn mac(b: &[u8]) -> String {
    b.iter()
        .map(|x| format!("{x:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

/// An Ethernet frame: `dst > src, ` and what it carries.
pub(super) fn frame(b: &[u8]) -> String {
    let (Some(dst), Some(src), Some(et)) = (b.get(0..6), b.get(6..12), be16(b, 12)) else {
        return format!("{} bytes, shorter than an Ethernet header", b.len());
    };
    format!("{} > {}, {}", mac(dst), mac(src), l3(b, 14, et))
}

/// What follows an Ethernet header (or a VLAN tag) at `off`, of type `et`.
fn l3(b: &[u8], off: usize, et: u16) -> String {
    match et {
        ETH_IPV4 => ipv4(b, off),
        ETH_IPV6 => ipv6(b, off),
        ETH_ARP => match (
            be16(b, off + 6),
            b.get(off + 14..off + 18),
            b.get(off + 24..off + 28),
        ) {
            (Some(op), Some(spa), Some(tpa)) => {
                let ip = |a: &[u8]| Ipv4Addr::new(a[0], a[1], a[2], a[3]);
                match op {
                    1 => format!("arp who-has {} tell {}", ip(tpa), ip(spa)),
                    2 => format!("arp reply {} is-at {}", ip(spa), mac(&b[off + 8..off + 14])),
                    _ => format!("arp op {op}"),
                }
            }
            _ => "arp (truncated)".into(),
        },
        ETH_VLAN => match (be16(b, off), be16(b, off + 2)) {
            (Some(tci), Some(inner)) => format!("vlan {}, {}", tci & 0xfff, l3(b, off + 4, inner)),
            _ => "vlan (truncated)".into(),
        },
        other => format!("ethertype {other:#06x}"),
    }
}

/// Source and destination ports of TCP / UDP, or the ICMP type, at `l4`.
fn l4(b: &[u8], l4: usize, proto: u8) -> (String, String, String) {
    match proto {
        6 | 17 => match (be16(b, l4), be16(b, l4 + 2)) {
            (Some(s), Some(d)) => (
                format!(":{s}"),
                format!(":{d}"),
                if proto == 6 { "tcp" } else { "udp" }.into(),
            ),
            _ => (String::new(), String::new(), format!("proto {proto}")),
        },
        1 | 58 => (
            String::new(),
            String::new(),
            b.get(l4)
                .map_or("icmp".into(), |t| format!("icmp type {t}")),
        ),
        47 => (String::new(), String::new(), "gre".into()),
        _ => (String::new(), String::new(), format!("proto {proto}")),
    }
}

fn ipv4(b: &[u8], off: usize) -> String {
    let Some(h) = b.get(off..off + 20) else {
        return "ipv4 (truncated)".into();
    };
    let ihl = usize::from(h[0] & 0xf) * 4;
    let (src, dst) = (
        Ipv4Addr::new(h[12], h[13], h[14], h[15]),
        Ipv4Addr::new(h[16], h[17], h[18], h[19]),
    );
    let (sp, dp, what) = l4(b, off + ihl, h[9]);
    let df = if h[6] & 0x40 != 0 { " df" } else { "" };
    format!("{src}{sp} > {dst}{dp} {what} ttl {}{df}", h[8])
}

fn ipv6(b: &[u8], off: usize) -> String {
    let Some(h) = b.get(off..off + 40) else {
        return "ipv6 (truncated)".into();
    };
    let addr = |a: &[u8]| {
        let o: [u8; 16] = a.try_into().unwrap_or([0; 16]);
        Ipv6Addr::from(o)
    };
    let (sp, dp, what) = l4(b, off + 40, h[6]);
    format!(
        "{}{sp} > {}{dp} {what} hlim {}",
        addr(&h[8..24]),
        addr(&h[24..40]),
        h[7]
    )
}

/// A bare IP packet (after an MPLS label), by its version nibble.
fn ip(b: &[u8], off: usize) -> String {
    match b.get(off).map(|v| v >> 4) {
        Some(4) => ipv4(b, off),
        Some(6) => ipv6(b, off),
        _ => "not IP".into(),
    }
}

/// A packet as it left: a tunnel's outer headers named for what they are, then the inner
/// packet; a plain frame otherwise.
pub(super) fn sent(b: &[u8]) -> String {
    if be16(b, 12) == Some(ETH_IPV4) {
        if let Some(h) = b.get(14..34) {
            let ihl = usize::from(h[0] & 0xf) * 4;
            let l4 = 14 + ihl;
            let outer = format!(
                "{} > {}",
                Ipv4Addr::new(h[12], h[13], h[14], h[15]),
                Ipv4Addr::new(h[16], h[17], h[18], h[19])
            );
            let label = |at: usize| {
                b.get(at..at + 3).map(|l| {
                    (u32::from(l[0]) << 12) | (u32::from(l[1]) << 4) | (u32::from(l[2]) >> 4)
                })
            };
            let mut s = String::new();
            match (h[9], be16(b, l4 + 2)) {
                (17, Some(4789)) => {
                    if let Some(v) = b.get(l4 + 12..l4 + 15) {
                        let vni =
                            (u32::from(v[0]) << 16) | (u32::from(v[1]) << 8) | u32::from(v[2]);
                        let _ = write!(
                            s,
                            "vxlan vni {vni} {outer}, inner {}",
                            frame(&b[(l4 + 16).min(b.len())..])
                        );
                        return s;
                    }
                }
                (17, Some(6635)) => {
                    if let Some(l) = label(l4 + 8) {
                        let _ = write!(
                            s,
                            "mpls-over-udp label {l} {outer}, inner {}",
                            ip(b, l4 + 12)
                        );
                        return s;
                    }
                }
                (47, _) if be16(b, l4 + 2) == Some(ETH_MPLS) => {
                    if let Some(l) = label(l4 + 4) {
                        let _ = write!(
                            s,
                            "mpls-over-gre label {l} {outer}, inner {}",
                            ip(b, l4 + 8)
                        );
                        return s;
                    }
                }
                _ => {}
            }
        }
    }
    frame(b)
}

#[cfg(test)]
mod tests {
    use super::*;
    use etherparse::PacketBuilder;

    const A: [u8; 6] = [2, 0, 0, 0, 0x0a, 1];
    const B: [u8; 6] = [2, 0, 0, 0, 0x0b, 1];

    fn udp(payload: &[u8]) -> Vec<u8> {
        let mut f = Vec::new();
        PacketBuilder::ethernet2(A, B)
            .ipv4([198, 18, 1, 2], [198, 18, 2, 2], 63)
            .udp(40000, 5001)
            .write(&mut f, payload)
            .unwrap();
        f
    }

    #[test]
    fn frames_and_tunnels_read_as_their_headers() {
        let inner = udp(b"x");
        assert_eq!(
            frame(&inner),
            // etherparse: source first; DF set.
            "02:00:00:00:0b:01 > 02:00:00:00:0a:01, 198.18.1.2:40000 > 198.18.2.2:5001 udp ttl 63 df"
        );
        let mut vx = Vec::new();
        PacketBuilder::ethernet2(A, B)
            .ipv4([198, 51, 100, 1], [198, 51, 100, 2], 64)
            .udp(50000, 4789)
            .write(
                &mut vx,
                &[&[8, 0, 0, 0, 0, 0x13, 0x88, 0][..], &inner].concat(),
            )
            .unwrap();
        assert_eq!(
            sent(&vx),
            format!(
                "vxlan vni 5000 198.51.100.1 > 198.51.100.2, inner {}",
                frame(&inner)
            )
        );
        let mut mpls = Vec::new();
        // Label 100, bottom of stack, TTL 63, then the inner IP packet.
        PacketBuilder::ethernet2(A, B)
            .ipv4([198, 51, 100, 1], [198, 51, 100, 2], 64)
            .udp(50000, 6635)
            .write(
                &mut mpls,
                &[&[0, 0x06, 0x41, 63][..], &inner[14..]].concat(),
            )
            .unwrap();
        assert_eq!(
            sent(&mpls),
            "mpls-over-udp label 100 198.51.100.1 > 198.51.100.2, inner 198.18.1.2:40000 > \
             198.18.2.2:5001 udp ttl 63 df"
        );
        // Only the first bytes of a long frame are kept: the headers still read.
        let long = udp(&[0u8; 1400]);
        assert_eq!(frame(&long[..160]), frame(&long));
        assert_eq!(
            frame(&[0u8; 10]),
            "10 bytes, shorter than an Ethernet header"
        );
        let mut stacked = inner[..12].to_vec();
        stacked.extend_from_slice(&[0x81, 0, 0, 7, 0x88, 0xb5]);
        assert!(
            frame(&stacked).ends_with("vlan 7, ethertype 0x88b5"),
            "{}",
            frame(&stacked)
        );
    }
}
