//! The Internet checksum (RFC 1071) and its incremental update (RFC 1624).

use std::net::Ipv6Addr;

/// One's-complement sum of `data` as big-endian 16-bit words (odd tail padded with zero), added
/// to `acc`. Not folded: fold with [`fold`]. The result stays below 2^17 plus `acc`'s high
/// part, so callers may add a few small values before folding.
#[inline(always)]
pub fn sum(acc: u32, data: &[u8]) -> u32 {
    let s = add_words(u64::from(acc), data, u32::from_be_bytes);
    (s & 0xffff) + (s >> 16)
}

/// Whether `data` (a header including its checksum field) sums to the all-ones checksum.
/// One's-complement addition does not depend on byte order (RFC 1071 2(B)) and all-ones reads
/// the same either way, so this sums native-order words: no byte swaps. Nor does it fold:
/// 2^16 = 1 (mod 0xffff), so folding keeps a sum's residue mod 0xffff and a nonzero sum folds
/// to its residue in 1..=0xffff; it folds to all-ones exactly when it is a nonzero multiple of
/// 0xffff (a multiply and a shift, not four dependent folding steps).
#[inline(always)]
pub fn verifies(data: &[u8]) -> bool {
    let wide = add_words_wide(0, data, u32::from_ne_bytes);
    wide != 0 && wide.is_multiple_of(0xffff)
}

/// Add `data` as 32-bit words read by `word` (tail padded with zeros) into a 64-bit
/// accumulator, where no carry can be lost, and fold it to 32 bits: one's-complement addition
/// does not care about the word size (RFC 1071, section 2).
#[inline(always)]
fn add_words(wide: u64, data: &[u8], word: fn([u8; 4]) -> u32) -> u32 {
    let wide = add_words_wide(wide, data, word);
    let s = (wide & 0xffff_ffff) + (wide >> 32);
    let s = (s & 0xffff_ffff) + (s >> 32);
    s as u32
}

/// [`add_words`] before the fold.
#[inline(always)]
fn add_words_wide(mut wide: u64, data: &[u8], word: fn([u8; 4]) -> u32) -> u64 {
    let mut chunks = data.chunks_exact(4);
    for c in &mut chunks {
        wide += u64::from(word([c[0], c[1], c[2], c[3]]));
    }
    let mut rest = [0u8; 4];
    rest[..chunks.remainder().len()].copy_from_slice(chunks.remainder());
    wide + u64::from(word(rest))
}

/// Fold a 32-bit accumulator into 16 bits (end-around carry).
#[inline(always)]
pub fn fold(acc: u32) -> u16 {
    // Two end-around carries always suffice for 32 bits: the first leaves at most 0x1fffe, the
    // second at most 0xffff.
    let acc = (acc & 0xffff) + (acc >> 16);
    let acc = (acc & 0xffff) + (acc >> 16);
    acc as u16
}

/// The checksum field value for `data` (whose checksum field must be zero, or the result
/// verifies as 0 when it holds the right value).
#[inline]
pub fn checksum(data: &[u8]) -> u16 {
    !fold(sum(0, data))
}

/// RFC 1624 eqn. 3: the new checksum after one 16-bit word of the covered data changes from
/// `old` to `new`: HC' = ~(~HC + ~m + m').
#[inline(always)]
pub fn update16(hc: u16, old: u16, new: u16) -> u16 {
    let acc = u32::from(!hc) + u32::from(!old) + u32::from(new);
    !fold(acc)
}

/// [`update16`] for the IPv4 TTL/protocol word when the TTL drops by one, on the checksum field
/// as it lies in memory (`u16::from_ne_bytes` of its two bytes). The word loses 0x0100, so
/// ~m + m' is the constant 0xfeff; one's-complement sums commute with a byte swap (RFC 1071
/// 2(B)), so in native order on a little-endian machine the constant is 0xfffe and no field
/// needs swapping. Same result as `update16`, bit for bit.
#[inline(always)]
pub fn ttl_decremented_ne(hc_ne: u16) -> u16 {
    const NOT_OLD_PLUS_NEW: u16 = 0xfeff;
    !fold(u32::from(!hc_ne) + u32::from(u16::from_ne_bytes(NOT_OLD_PLUS_NEW.to_be_bytes())))
}

/// [`update16`] for a 32-bit field (two words).
#[inline(always)]
pub fn update32(hc: u16, old: u32, new: u32) -> u16 {
    let acc = u32::from(!hc)
        + u32::from(!(old >> 16) as u16)
        + u32::from(!(old as u16))
        + (new >> 16)
        + (new & 0xffff);
    !fold(acc)
}

/// Pseudo-header sum for IPv4 upper-layer checksums.
#[inline]
pub fn pseudo_v4(src: [u8; 4], dst: [u8; 4], proto: u8, len: u16) -> u32 {
    let acc = sum(0, &src);
    let acc = sum(acc, &dst);
    acc + u32::from(proto) + u32::from(len)
}

/// Pseudo-header sum for IPv6 upper-layer checksums.
#[inline]
pub fn pseudo_v6(src: [u8; 16], dst: [u8; 16], next: u8, len: u32) -> u32 {
    let acc = sum(0, &src);
    let acc = sum(acc, &dst);
    acc + (len >> 16) + (len & 0xffff) + u32::from(next)
}

/// The checksum field value for the upper-layer message `data` (its checksum field zero) sent
/// over IPv6 from `src` to `dst` with next header `next`: the sum covers the pseudo-header
/// too (RFC 8200 section 8.1).
#[inline]
pub fn upper_layer_v6(src: Ipv6Addr, dst: Ipv6Addr, next: u8, data: &[u8]) -> u16 {
    let pseudo = pseudo_v6(src.octets(), dst.octets(), next, data.len() as u32);
    !fold(sum(pseudo, data))
}

#[cfg(test)]
mod tests {
    use super::*;

    proptest::proptest! {
        #[test]
        fn verifies_agrees_with_the_big_endian_sum(data in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..80), fix in proptest::prelude::any::<bool>()) {
            let mut data = data;
            if fix && data.len() >= 12 {
                // Make it a valid "header": write the checksum over bytes 10..12.
                data[10] = 0;
                data[11] = 0;
                let c = checksum(&data);
                data[10..12].copy_from_slice(&c.to_be_bytes());
            }
            proptest::prop_assert_eq!(verifies(&data), fold(sum(0, &data)) == 0xffff);
            if fix && data.len() >= 12 {
                proptest::prop_assert!(verifies(&data));
            }
        }
    }
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn ttl_decrement_in_native_order_matches_update16(hc in any::<u16>(), ttl in 1u8.., proto in any::<u8>()) {
            let old = u16::from_be_bytes([ttl, proto]);
            let new = u16::from_be_bytes([ttl - 1, proto]);
            let hc_ne = u16::from_ne_bytes(hc.to_be_bytes());
            let got = u16::from_be_bytes(ttl_decremented_ne(hc_ne).to_ne_bytes());
            prop_assert_eq!(got, update16(hc, old, new));
        }
    }

    #[test]
    fn verifies_at_the_edges_of_the_residue_shortcut() {
        // Zero sums to zero, not to all-ones (the shortcut must not take 0 as a multiple).
        assert!(!verifies(&[0; 20]));
        assert!(!verifies(&[]));
        // All-ones words, and words that carry into all-ones.
        assert!(verifies(&[0xff; 20]));
        assert!(verifies(&[0x00, 0x01, 0xff, 0xfe]));
        assert!(verifies(&[0x80, 0x00, 0x7f, 0xff, 0x00, 0x00]));
        // One off either way.
        assert!(!verifies(&[0x00, 0x01, 0xff, 0xfd]));
        assert!(!verifies(&[0x00, 0x02, 0xff, 0xfe]));
    }

    #[test]
    fn rfc1071_example() {
        // RFC 1071 section 3 example words: 0001 f203 f4f5 f6f7 → sum ddf2, checksum 220d.
        let data = [0x00, 0x01, 0xf2, 0x03, 0xf4, 0xf5, 0xf6, 0xf7];
        assert_eq!(fold(sum(0, &data)), 0xddf2);
        assert_eq!(checksum(&data), 0x220d);
    }

    proptest! {
        #[test]
        fn incremental_update_matches_full_recomputation(
            mut data in proptest::collection::vec(any::<u8>(), 4..200),
            word in any::<prop::sample::Index>(),
            new16 in any::<u16>(),
            new32 in any::<u32>(),
        ) {
            if data.len() % 2 == 1 { data.pop(); }
            let words = data.len() / 2;
            // A checksum field at word 0 holding the right value.
            data[0] = 0; data[1] = 0;
            let c = checksum(&data);
            data[0..2].copy_from_slice(&c.to_be_bytes());
            prop_assert_eq!(checksum(&data), 0);

            let w = 1 + word.index(words - 1);
            let at = 2 * w;
            let old = u16::from_be_bytes([data[at], data[at + 1]]);
            data[at..at + 2].copy_from_slice(&new16.to_be_bytes());
            let inc = update16(c, old, new16);
            data[0] = 0; data[1] = 0;
            let full = checksum(&data);
            // One's complement has two zeros; both verify. Compare by verification and value
            // modulo the 0x0000/0xffff ambiguity.
            prop_assert!(inc == full || (inc == 0xffff && full == 0) || (inc == 0 && full == 0xffff),
                "inc {:04x} full {:04x}", inc, full);
            data[0..2].copy_from_slice(&inc.to_be_bytes());
            prop_assert_eq!(fold(sum(0, &data)), 0xffff);

            if words >= 3 {
                let at = 2 + 2 * word.index(words - 2);
                let at = at.min(data.len() - 4);
                let at = at.max(2);
                let c = u16::from_be_bytes([data[0], data[1]]);
                let old = u32::from_be_bytes([data[at], data[at+1], data[at+2], data[at+3]]);
                data[at..at + 4].copy_from_slice(&new32.to_be_bytes());
                let inc = update32(c, old, new32);
                data[0..2].copy_from_slice(&inc.to_be_bytes());
                prop_assert_eq!(fold(sum(0, &data)), 0xffff);
            }
        }
    }
}
