//! Test traffic: IPv4/UDP frames in the benchmarking range 198.18.0.0/15, one template per flow.

/// Ethernet FCS: counted in a frame's size on the wire, not carried in the buffer.
pub const FCS_LEN: usize = 4;
/// Smallest and largest frame sizes (with FCS) the generator sends.
pub const MIN_FRAME: usize = 64;
pub const MAX_FRAME: usize = 1518;
/// Marks generator payloads, so stray frames are not counted as received traffic.
pub const MAGIC: [u8; 4] = *b"VRTG";
const HEADERS: usize = 14 + 20 + 8;

/// One flow's addresses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Flow {
    pub src_ip: [u8; 4],
    pub dst_ip: [u8; 4],
    pub src_port: u16,
    pub dst_port: u16,
}

/// Flow `i`: from 198.18.0.1 to destination `i` of 198.19.0.0/16 (the prefix a benchmark routes),
/// so 65,536 flows are 65,536 destinations a switch can match one rule each; the UDP source port
/// varies too.
pub fn flow(i: u32) -> Flow {
    let host = i % 65_536;
    Flow {
        src_ip: [198, 18, 0, 1],
        dst_ip: [198, 19, (host >> 8) as u8, (host & 0xff) as u8],
        src_port: 1024 + (i % 60_000) as u16,
        dst_port: 5001,
    }
}

/// A complete frame (without FCS) of `frame_bytes` on the wire.
pub fn udp_frame(dst_mac: [u8; 6], src_mac: [u8; 6], f: Flow, frame_bytes: usize) -> Vec<u8> {
    let len = frame_bytes.clamp(MIN_FRAME, 9018) - FCS_LEN;
    let mut b = vec![0u8; len];
    b[0..6].copy_from_slice(&dst_mac);
    b[6..12].copy_from_slice(&src_mac);
    b[12..14].copy_from_slice(&0x0800u16.to_be_bytes());
    let ip_len = (len - 14) as u16;
    let ip = &mut b[14..34];
    ip[0] = 0x45;
    ip[2..4].copy_from_slice(&ip_len.to_be_bytes());
    ip[6] = 0x40; // DF
    ip[8] = 64; // TTL
    ip[9] = 17; // UDP
    ip[12..16].copy_from_slice(&f.src_ip);
    ip[16..20].copy_from_slice(&f.dst_ip);
    let csum = ipv4_checksum(ip);
    ip[10..12].copy_from_slice(&csum.to_be_bytes());
    let udp = &mut b[34..42];
    udp[0..2].copy_from_slice(&f.src_port.to_be_bytes());
    udp[2..4].copy_from_slice(&f.dst_port.to_be_bytes());
    udp[4..6].copy_from_slice(&(ip_len - 20).to_be_bytes());
    // UDP checksum 0: allowed for IPv4, and keeps templates cheap.
    b[HEADERS..HEADERS + 4].copy_from_slice(&MAGIC);
    for (i, byte) in b[HEADERS + 4..].iter_mut().enumerate() {
        *byte = (i % 251) as u8;
    }
    b
}

/// Where a frame carries its send time (TSC) when the generator measures latency: right after
/// the magic, inside the payload of the smallest frame (18 bytes).
const STAMP: std::ops::Range<usize> = HEADERS + 4..HEADERS + 12;

/// Writes the send time `tsc` into a generated frame.
#[inline]
pub fn stamp(frame: &mut [u8], tsc: u64) {
    if let Some(s) = frame.get_mut(STAMP) {
        s.copy_from_slice(&tsc.to_le_bytes());
    }
}

/// The send time a generated frame carries (see [`stamp`]).
#[inline]
pub fn stamp_of(frame: &[u8]) -> Option<u64> {
    let s: [u8; 8] = frame.get(STAMP)?.try_into().ok()?;
    Some(u64::from_le_bytes(s))
}

/// Whether a received frame is one of ours (the magic survives any L2/L3 rewrite a switch does).
#[inline]
pub fn is_generated(frame: &[u8]) -> bool {
    frame.get(HEADERS..HEADERS + 4) == Some(&MAGIC[..])
}

pub fn ipv4_checksum(header: &[u8]) -> u16 {
    let mut sum: u32 = 0;
    for (i, pair) in header.chunks(2).enumerate() {
        if i == 5 {
            continue; // the checksum field itself
        }
        let word = u16::from_be_bytes([pair[0], *pair.get(1).unwrap_or(&0)]);
        sum += u32::from(word);
    }
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

#[cfg(test)]
mod tests {
    use super::*;
    use etherparse::{NetSlice, SlicedPacket, TransportSlice};

    #[test]
    fn frames_parse_with_etherparse_and_have_the_asked_size() {
        for (i, size) in [(0u32, 64usize), (77, 512), (65_535, 1518)] {
            let f = flow(i);
            let frame = udp_frame([2, 0, 0, 0, 0, 1], [2, 0, 0, 0, 0, 2], f, size);
            assert_eq!(frame.len() + FCS_LEN, size);
            let p = SlicedPacket::from_ethernet(&frame).expect("parses");
            let Some(NetSlice::Ipv4(ip)) = p.net else {
                panic!("not IPv4")
            };
            assert_eq!(ip.header().source(), f.src_ip);
            assert_eq!(ip.header().destination(), f.dst_ip);
            assert_eq!(ip.header().ttl(), 64);
            let header = ip.header().to_header();
            assert_eq!(header.header_checksum, header.calc_header_checksum());
            let Some(TransportSlice::Udp(udp)) = p.transport else {
                panic!("not UDP")
            };
            assert_eq!(udp.source_port(), f.src_port);
            assert!(is_generated(&frame));
        }
    }

    #[test]
    fn flows_differ_and_stay_in_the_benchmark_range() {
        let a = flow(1);
        let b = flow(2);
        assert_ne!((a.dst_ip, a.src_port), (b.dst_ip, b.src_port));
        let distinct: std::collections::HashSet<[u8; 4]> =
            (0..65_536).map(|i| flow(i).dst_ip).collect();
        assert_eq!(distinct.len(), 65_536, "one destination per flow");
        for i in [0, 1, 65_535, 1_000_000] {
            let f = flow(i);
            assert_eq!(&f.src_ip[..2], &[198, 18]);
            assert_eq!(&f.dst_ip[..2], &[198, 19]);
        }
    }
}
