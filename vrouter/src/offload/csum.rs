//! Completing a partial checksum in software (what `skb_checksum_help` does in Linux): sum the
//! bytes from the checksum start to the end of the packet, the field included (it holds the
//! pseudo-header sum), and store the complement.

use crate::wire::checksum;

/// Why a packet's offload could not be finished; the packet is dropped and counted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum OffloadError {
    /// The checksum field lies outside the packet (or outside its first segment, where the
    /// headers must be).
    #[error("checksum field at {start}+{offset} is outside the first {len} bytes")]
    CsumOutside {
        start: usize,
        offset: usize,
        len: usize,
    },
    /// The headers a GSO packet is cut by are not what its offload claims.
    #[error("GSO packet headers: {0}")]
    Headers(&'static str),
    /// A GSO packet that would give more segments than allowed, or none.
    #[error("GSO packet of {payload} payload bytes in segments of {size}")]
    Size { payload: usize, size: usize },
    /// No buffer for a segment.
    #[error("no packet buffer for a segment")]
    NoBuffer,
}

/// The one's-complement sum, folded and not complemented, of the packet given as its
/// contiguous `pieces` in order, from byte `start` to the end. Pieces of odd length are
/// handled: a piece that starts at an odd offset contributes its sum byte-swapped.
pub fn sum_from<'a>(pieces: impl IntoIterator<Item = &'a [u8]>, start: usize) -> u16 {
    let mut acc: u64 = 0;
    let mut at = 0usize;
    let mut odd = false;
    for piece in pieces {
        let end = at + piece.len();
        if end > start {
            let bytes = &piece[start.saturating_sub(at)..];
            let s = checksum::fold(checksum::sum(0, bytes));
            acc += u64::from(if odd { s.swap_bytes() } else { s });
            odd ^= bytes.len() % 2 == 1;
        }
        at = end;
    }
    let acc = (acc & 0xffff_ffff) + (acc >> 32);
    checksum::fold(((acc & 0xffff_ffff) + (acc >> 32)) as u32)
}

/// The value to store for a folded sum: its complement, with zero sent as all-ones (a UDP
/// checksum of zero means "none"; for TCP both mean the same).
#[inline]
pub fn field_value(folded: u16) -> u16 {
    match !folded {
        0 => 0xffff,
        v => v,
    }
}

/// Completes the partial checksum of a packet whose checksum field (at `start + offset`) lies
/// in `first`, the first of its `pieces`; `sum` is [`sum_from`] over all of them.
pub fn store(first: &mut [u8], start: usize, offset: usize, sum: u16) -> Result<(), OffloadError> {
    let at = start + offset;
    let field = first.get_mut(at..at + 2).ok_or(OffloadError::CsumOutside {
        start,
        offset,
        len: 0,
    })?;
    field.copy_from_slice(&field_value(sum).to_be_bytes());
    Ok(())
}

/// Completes the partial checksum of a contiguous `frame`.
pub fn complete(frame: &mut [u8], start: usize, offset: usize) -> Result<(), OffloadError> {
    if start
        .checked_add(offset + 2)
        .is_none_or(|end| end > frame.len())
    {
        return Err(OffloadError::CsumOutside {
            start,
            offset,
            len: frame.len(),
        });
    }
    let sum = sum_from([&*frame], start);
    store(frame, start, offset, sum)
}

#[cfg(test)]
mod tests {
    use super::*;
    use etherparse::{NetHeaders, PacketBuilder, PacketHeaders, TransportHeader};
    use proptest::prelude::*;

    /// A frame whose L4 checksum field holds only the pseudo-header sum, as a sender with
    /// checksum offload hands it over; and where the checksum starts and sits.
    fn partial_frame(v6: bool, tcp: bool, payload: &[u8]) -> (Vec<u8>, usize, usize) {
        let eth = PacketBuilder::ethernet2([2, 0, 0, 0, 0, 1], [2, 0, 0, 0, 0, 2]);
        let ip = if v6 {
            eth.ipv6(
                [0x20, 1, 0xd, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1],
                [0x20, 1, 0xd, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2],
                64,
            )
        } else {
            eth.ipv4([198, 18, 1, 2], [198, 18, 2, 2], 64)
        };
        let mut f = Vec::new();
        if tcp {
            ip.tcp(40000, 5201, 7, 64000)
                .ack(1)
                .psh()
                .write(&mut f, payload)
                .unwrap();
        } else {
            ip.udp(40000, 5201).write(&mut f, payload).unwrap();
        }
        let l4 = if v6 { 54 } else { 34 };
        let offset = if tcp { 16 } else { 6 };
        let len = f.len() - l4;
        let pseudo = if v6 {
            checksum::pseudo_v6(
                f[22..38].try_into().unwrap(),
                f[38..54].try_into().unwrap(),
                if tcp { 6 } else { 17 },
                len as u32,
            )
        } else {
            checksum::pseudo_v4(
                f[26..30].try_into().unwrap(),
                f[30..34].try_into().unwrap(),
                if tcp { 6 } else { 17 },
                len as u16,
            )
        };
        f[l4 + offset..l4 + offset + 2].copy_from_slice(&checksum::fold(pseudo).to_be_bytes());
        (f, l4, offset)
    }

    /// The L4 checksum etherparse computes for `frame`, and the one it carries.
    fn oracle(frame: &[u8]) -> (u16, u16) {
        let h = PacketHeaders::from_ethernet_slice(frame).unwrap();
        let payload = h.payload.slice();
        match (h.net.unwrap(), h.transport.unwrap()) {
            (NetHeaders::Ipv4(ip, _), TransportHeader::Tcp(t)) => {
                (t.calc_checksum_ipv4(&ip, payload).unwrap(), t.checksum)
            }
            (NetHeaders::Ipv6(ip, _), TransportHeader::Tcp(t)) => {
                (t.calc_checksum_ipv6(&ip, payload).unwrap(), t.checksum)
            }
            (NetHeaders::Ipv4(ip, _), TransportHeader::Udp(u)) => {
                (u.calc_checksum_ipv4(&ip, payload).unwrap(), u.checksum)
            }
            (NetHeaders::Ipv6(ip, _), TransportHeader::Udp(u)) => {
                (u.calc_checksum_ipv6(&ip, payload).unwrap(), u.checksum)
            }
            other => panic!("unexpected headers {other:?}"),
        }
    }

    proptest! {
        #[test]
        fn completed_checksums_are_what_etherparse_computes(
            v6 in any::<bool>(), tcp in any::<bool>(),
            payload in proptest::collection::vec(any::<u8>(), 0..3000),
        ) {
            let (mut f, start, offset) = partial_frame(v6, tcp, &payload);
            complete(&mut f, start, offset).unwrap();
            let (want, got) = oracle(&f);
            prop_assert_eq!(got, want);
        }

        #[test]
        fn a_sum_over_pieces_is_the_sum_over_the_whole(
            bytes in proptest::collection::vec(any::<u8>(), 0..600),
            cuts in proptest::collection::vec(0usize..600, 0..6),
            start in 0usize..600,
        ) {
            let mut cuts: Vec<usize> = cuts.into_iter().map(|c| c.min(bytes.len())).collect();
            cuts.sort_unstable();
            let mut pieces = Vec::new();
            let mut at = 0;
            for c in cuts.into_iter().chain([bytes.len()]) {
                pieces.push(&bytes[at..c]);
                at = c;
            }
            let start = start.min(bytes.len());
            let whole = sum_from([&bytes[..]], start);
            let split = sum_from(pieces, start);
            // One's-complement: 0x0000 and 0xffff are the same value.
            let norm = |s: u16| if s == 0xffff { 0 } else { s };
            prop_assert_eq!(norm(split), norm(whole));
            prop_assert_eq!(norm(whole), norm(checksum::fold(checksum::sum(0, &bytes[start..]))));
        }
    }

    #[test]
    fn a_field_outside_the_frame_is_refused() {
        let mut f = vec![0u8; 40];
        assert!(matches!(
            complete(&mut f, 34, 16),
            Err(OffloadError::CsumOutside { .. })
        ));
        assert!(matches!(
            complete(&mut f, usize::MAX - 4, 16),
            Err(OffloadError::CsumOutside { .. })
        ));
        assert!(complete(&mut f, 20, 16).is_ok());
    }

    #[test]
    fn a_zero_checksum_is_sent_as_all_ones() {
        assert_eq!(field_value(0xffff), 0xffff);
        assert_eq!(field_value(0x1234), !0x1234);
    }
}
