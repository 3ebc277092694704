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

/// Where every generated frame carries its sequence number (little endian, wrapping at 2^32):
/// after the send time, still inside the smallest frame's payload.
const SEQ: std::ops::Range<usize> = HEADERS + 12..HEADERS + 16;
/// The payload bytes after the magic, the send time and the sequence number hold a fixed
/// pattern ([`pattern_byte`]) from here on, which the sink can check.
const PATTERN_FROM: usize = HEADERS + 16;
/// Bytes at the end of a frame the sink checks by default: a truncated, padded or half-written
/// frame shows there, at the cost of one more cache line per frame.
pub const TAIL_CHECKED: usize = 16;

/// The template's byte at frame offset `at` of the payload pattern (from the magic's end on).
#[inline]
fn pattern_byte(at: usize) -> u8 {
    ((at - (HEADERS + 4)) % 251) as u8
}

/// Writes sequence number `seq` into a generated frame.
#[inline]
pub fn set_seq(frame: &mut [u8], seq: u32) {
    if let Some(s) = frame.get_mut(SEQ) {
        s.copy_from_slice(&seq.to_le_bytes());
    }
}

/// The sequence number a generated frame carries (see [`set_seq`]).
#[inline]
pub fn seq_of(frame: &[u8]) -> Option<u32> {
    let s: [u8; 4] = frame.get(SEQ)?.try_into().ok()?;
    Some(u32::from_le_bytes(s))
}

/// What the sink expects of every frame it receives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Expect {
    /// Bytes in the buffer (the frame size on the wire less the FCS).
    pub len: usize,
    /// Flows sent: frame `seq` belongs to flow `seq % flows`.
    pub flows: u32,
    /// Compare the whole payload pattern, not only the last [`TAIL_CHECKED`] bytes (reads every
    /// byte of every frame: a diagnosis, not a measurement).
    pub full: bool,
}

/// What a received frame turned out to be.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// One of ours, whole, as sent (but for what a switch rewrites: MACs, TTL, checksum, source
    /// address and port); its sequence number.
    Good(u32),
    /// Not one of ours (no magic where the generator puts it).
    Foreign,
    /// One of ours whose length is not the length sent.
    BadLength,
    /// One of ours of the right length whose headers or payload are not what was sent: IP or
    /// UDP length fields, the destination of its flow, or the payload pattern.
    BadContent,
}

/// Checks a received frame, given as its segments in order (`pkt_len` bytes in all), against
/// what the generator sent. Reads the first 58 bytes and, unless `expect.full`, only the last
/// [`TAIL_CHECKED`]; allocates nothing.
pub fn check_frame<'a>(
    mut segments: impl Iterator<Item = &'a [u8]>,
    pkt_len: usize,
    expect: &Expect,
) -> Verdict {
    let Some(head) = segments.next() else {
        return Verdict::Foreign;
    };
    if !is_generated(head) {
        return Verdict::Foreign;
    }
    if pkt_len != expect.len {
        return Verdict::BadLength;
    }
    let Some(seq) = seq_of(head) else {
        return Verdict::BadContent;
    };
    let field = |r: std::ops::Range<usize>| head.get(r).map(|b| u16::from_be_bytes([b[0], b[1]]));
    let f = flow(seq % expect.flows.max(1));
    let headers_ok = field(12..14) == Some(0x0800)
        && head.get(23) == Some(&17)
        && field(16..18) == u16::try_from(pkt_len - 14).ok()
        && field(38..40) == u16::try_from(pkt_len - 34).ok()
        && head.get(30..34) == Some(&f.dst_ip[..])
        && field(36..38) == Some(f.dst_port);
    if !headers_ok {
        return Verdict::BadContent;
    }
    let from = if expect.full {
        PATTERN_FROM
    } else {
        PATTERN_FROM.max(pkt_len.saturating_sub(TAIL_CHECKED))
    };
    // Walk the segments, comparing the bytes at and after `from`.
    let mut seg = head;
    let mut at = 0usize; // frame offset of `seg`'s first byte
    loop {
        let end = at + seg.len();
        if end > from {
            let skip = from.saturating_sub(at);
            let fine = seg[skip..]
                .iter()
                .zip(at + skip..)
                .all(|(&b, pos)| b == pattern_byte(pos));
            if !fine {
                return Verdict::BadContent;
            }
        }
        at = end;
        match segments.next() {
            Some(s) => seg = s,
            None => break,
        }
    }
    if at != pkt_len {
        // The segments do not hold the length the packet claims.
        return Verdict::BadLength;
    }
    Verdict::Good(seq)
}

/// Follows the sequence numbers of one flow's received frames: a switch keeps a flow's frames
/// in the order sent, some possibly lost (different flows may overtake each other). A frame
/// whose number was never given out, or is not after the flow's previous good frame's (a
/// duplicate, a stale buffer delivered again, a reordering within the flow) is out of sequence.
#[derive(Debug, Default, Clone, Copy)]
pub struct SeqCheck {
    last: Option<u32>,
}

impl SeqCheck {
    /// Whether frame `seq` is in sequence, when `given` sequence numbers (0, 1, ..; wrapping at
    /// 2^32) have been written into frames so far; an in-sequence frame becomes the last.
    #[inline]
    pub fn in_sequence(&mut self, seq: u32, given: u64) -> bool {
        // How far back from the next number to give out: 1 for the newest frame; 0 or a
        // "negative" (wrapped, huge) distance is a number never given out.
        let back = (given as u32).wrapping_sub(seq);
        if back == 0 || back > u32::MAX / 2 || u64::from(back) > given {
            return false;
        }
        if let Some(last) = self.last {
            let step = seq.wrapping_sub(last);
            if step == 0 || step > u32::MAX / 2 {
                return false;
            }
        }
        self.last = Some(seq);
        true
    }
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

    /// Frame `seq` as the generator sends it with `flows` flows, `size` bytes on the wire.
    fn sent(seq: u32, flows: u32, size: usize) -> Vec<u8> {
        let mut f = udp_frame(
            [2, 0, 0, 0, 0, 1],
            [2, 0, 0, 0, 0, 2],
            flow(seq % flows),
            size,
        );
        set_seq(&mut f, seq);
        f
    }

    fn expect(size: usize, flows: u32, full: bool) -> Expect {
        Expect {
            len: size - FCS_LEN,
            flows,
            full,
        }
    }

    /// `frame` checked as one segment.
    fn check(frame: &[u8], e: &Expect) -> Verdict {
        check_frame(std::iter::once(frame), frame.len(), e)
    }

    #[test]
    fn frames_as_sent_are_good_in_one_segment_or_several() {
        for size in [64, 65, 512, 1518] {
            for full in [false, true] {
                let e = expect(size, 4, full);
                let f = sent(70_001, 4, size);
                assert_eq!(check(&f, &e), Verdict::Good(70_001), "{size} B");
                // Chained as a receiving PMD may chain it: headers in the first segment.
                let len = size - FCS_LEN;
                let cuts = [58, (58 + len) / 2, len - 1];
                let segs = [
                    &f[..cuts[0]],
                    &f[cuts[0]..cuts[1]],
                    &f[cuts[1]..cuts[2]],
                    &f[cuts[2]..],
                ];
                assert_eq!(
                    check_frame(segs.iter().copied(), f.len(), &e),
                    Verdict::Good(70_001),
                    "{size} B in four segments"
                );
            }
        }
    }

    #[test]
    fn what_a_switch_rewrites_is_not_checked() {
        let e = expect(1518, 1, true);
        let mut f = sent(9, 1, 1518);
        // Routed: new MACs, TTL down, checksum updated; source NAT: new source and port.
        f[0..12].copy_from_slice(&[0xaa; 12]);
        f[22] -= 1;
        f[24..26].copy_from_slice(&[0x12, 0x34]);
        f[26..30].copy_from_slice(&[198, 51, 100, 64]);
        f[34..36].copy_from_slice(&4242u16.to_be_bytes());
        // The latency stamp, when the generator measures latency.
        stamp(&mut f, 0x0123_4567_89ab_cdef);
        assert_eq!(check(&f, &e), Verdict::Good(9));
        let mut small = sent(10, 1, 64);
        stamp(&mut small, u64::MAX);
        assert_eq!(check(&small, &expect(64, 1, true)), Verdict::Good(10));
    }

    #[test]
    fn short_long_or_half_written_frames_are_caught() {
        let e = expect(1518, 1, false);
        let f = sent(5, 1, 1518);
        // Truncated (to a first buffer's worth, or a few bytes), or padded.
        assert_eq!(check(&f[..1000], &e), Verdict::BadLength);
        assert_eq!(check(&f[..f.len() - 2], &e), Verdict::BadLength);
        let mut padded = f.clone();
        padded.extend_from_slice(&[0; 4]);
        assert_eq!(check(&padded, &e), Verdict::BadLength);
        // A packet whose segments hold fewer bytes than its length says.
        assert_eq!(
            check_frame([&f[..600], &f[600..1200]].into_iter(), f.len(), &e),
            Verdict::BadLength
        );
        // The right length, the end not written (a stale or zeroed buffer's bytes).
        let mut tail = f.clone();
        let n = tail.len();
        tail[n - 1] ^= 0xff;
        assert_eq!(check(&tail, &e), Verdict::BadContent);
        tail[n - 1] ^= 0xff;
        tail[n - TAIL_CHECKED] ^= 1;
        assert_eq!(check(&tail, &e), Verdict::BadContent);
        // A byte in the middle: only the full check reads it.
        let mut middle = f.clone();
        middle[700] ^= 0xff;
        assert_eq!(check(&middle, &e), Verdict::Good(5));
        assert_eq!(check(&middle, &expect(1518, 1, true)), Verdict::BadContent);
        // Length fields that disagree with the frame.
        let mut ip_len = f.clone();
        ip_len[16..18].copy_from_slice(&46u16.to_be_bytes());
        assert_eq!(check(&ip_len, &e), Verdict::BadContent);
        let mut udp_len = f.clone();
        udp_len[38..40].copy_from_slice(&26u16.to_be_bytes());
        assert_eq!(check(&udp_len, &e), Verdict::BadContent);
    }

    #[test]
    fn frames_of_another_flow_or_not_ours_are_told_apart() {
        let e = expect(64, 4, false);
        // Sequence number 6 is flow 2's; a frame to flow 3's destination carrying it is not.
        let mut f = udp_frame([2; 6], [4; 6], flow(3), 64);
        set_seq(&mut f, 6);
        assert_eq!(check(&f, &e), Verdict::BadContent);
        set_seq(&mut f, 7);
        assert_eq!(check(&f, &e), Verdict::Good(7));
        let mut port = f.clone();
        port[36..38].copy_from_slice(&53u16.to_be_bytes());
        assert_eq!(check(&port, &e), Verdict::BadContent);
        // No magic: an ARP request, a neighbour solicitation, a frame too short to tell.
        let mut arp = vec![0u8; 60];
        arp[12..14].copy_from_slice(&0x0806u16.to_be_bytes());
        assert_eq!(check(&arp, &e), Verdict::Foreign);
        assert_eq!(check(&f[..40], &e), Verdict::Foreign);
        assert_eq!(check_frame(std::iter::empty(), 0, &e), Verdict::Foreign);
    }

    #[test]
    fn sequence_numbers_must_have_been_given_and_go_forward() {
        let mut s = SeqCheck::default();
        assert!(!s.in_sequence(0, 0), "nothing given out yet");
        assert!(s.in_sequence(0, 10));
        assert!(s.in_sequence(1, 10));
        assert!(s.in_sequence(5, 10), "a gap is loss, not an error");
        assert!(!s.in_sequence(5, 10), "a duplicate");
        assert!(
            !s.in_sequence(3, 10),
            "an older frame (a stale buffer, a reordering)"
        );
        assert!(!s.in_sequence(10, 10), "never given out");
        assert!(!s.in_sequence(4_000_000, 10), "far in the future");
        assert!(
            s.in_sequence(9, 10),
            "bad frames do not move the last good one"
        );
        // Across the wrap of the 32-bit number.
        let mut w = SeqCheck::default();
        let given = (1u64 << 32) + 3;
        assert!(w.in_sequence(u32::MAX - 1, given));
        assert!(w.in_sequence(u32::MAX, given));
        assert!(w.in_sequence(0, given));
        assert!(w.in_sequence(2, given));
        assert!(!w.in_sequence(u32::MAX, given));
        assert!(!w.in_sequence(3, given));
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
