//! GRE headers (RFC 2784 / RFC 2890): flags, protocol and the optional checksum, key and
//! sequence words.

use super::field::{check_len, get, set, view, Field};
use super::WireError;

pub mod field {
    use crate::wire::field::Field;
    /// Checksum, key and sequence present (bits 0, 2, 3), routing (bit 1, never set), version
    /// (bits 13..16, zero).
    pub const FLAGS_VERSION: Field = 0..2;
    pub const PROTOCOL: Field = 2..4;
    /// Where the optional words start: checksum (and reserved), key, sequence number, each
    /// 4 bytes, those present in that order.
    pub const OPTIONAL: usize = 4;
}

pub const BASE_LEN: usize = field::OPTIONAL;
const C: u16 = 0x8000;
const R: u16 = 0x4000;
const K: u16 = 0x2000;
const S: u16 = 0x1000;
const VERSION: u16 = 0x0007;
const WORD: usize = 4;

view! {
    /// A GRE header and what follows it.
    pub struct Packet;
    flags: u16 = field::FLAGS_VERSION;
    protocol / set_protocol: u16 = field::PROTOCOL;
}

impl<T: AsRef<[u8]>> Packet<T> {
    /// Checks version 0, no routing bit, and that the optional words fit.
    #[inline]
    pub fn check(&self) -> Result<(), WireError> {
        check_len(self.buf.as_ref(), BASE_LEN)?;
        if self.flags() & (VERSION | R) != 0 {
            return Err(WireError::Malformed);
        }
        check_len(self.buf.as_ref(), self.header_len())
    }
    #[inline]
    pub fn has_checksum(&self) -> bool {
        self.flags() & C != 0
    }
    #[inline]
    pub fn has_key(&self) -> bool {
        self.flags() & K != 0
    }
    #[inline]
    pub fn has_seq(&self) -> bool {
        self.flags() & S != 0
    }
    #[inline]
    pub fn header_len(&self) -> usize {
        BASE_LEN
            + WORD
                * (usize::from(self.has_checksum())
                    + usize::from(self.has_key())
                    + usize::from(self.has_seq()))
    }
    /// The key word's bytes, when present.
    #[inline]
    fn key_field(&self) -> Field {
        let at = BASE_LEN + WORD * usize::from(self.has_checksum());
        at..at + WORD
    }
    /// The sequence number word's bytes, when present.
    #[inline]
    fn seq_field(&self) -> Field {
        let at = self.key_field().start + WORD * usize::from(self.has_key());
        at..at + WORD
    }
    #[inline]
    pub fn key(&self) -> Option<u32> {
        self.has_key()
            .then(|| get(self.buf.as_ref(), self.key_field()))
    }
    #[inline]
    pub fn seq(&self) -> Option<u32> {
        self.has_seq()
            .then(|| get(self.buf.as_ref(), self.seq_field()))
    }
}

/// A GRE header as values. A checksum word is skipped when parsing and never written: vrouterd
/// sends none.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Repr {
    pub protocol: u16,
    pub key: Option<u32>,
    pub seq: Option<u32>,
}

impl Repr {
    pub fn parse<T: AsRef<[u8]> + ?Sized>(p: &Packet<&T>) -> Result<Repr, WireError> {
        p.check()?;
        Ok(Repr {
            protocol: p.protocol(),
            key: p.key(),
            seq: p.seq(),
        })
    }

    /// Bytes [`Repr::emit`] writes.
    pub const fn buffer_len(&self) -> usize {
        BASE_LEN + WORD * (self.key.is_some() as usize + self.seq.is_some() as usize)
    }

    /// Writes the header into the first [`Repr::buffer_len`] bytes of `p`.
    #[inline]
    pub fn emit<T: AsRef<[u8]> + AsMut<[u8]> + ?Sized>(&self, p: &mut Packet<&mut T>) {
        let flags = if self.key.is_some() { K } else { 0 } | if self.seq.is_some() { S } else { 0 };
        set(p.buf.as_mut(), field::FLAGS_VERSION, flags);
        p.set_protocol(self.protocol);
        if let Some(key) = self.key {
            let f = p.key_field();
            set(p.buf.as_mut(), f, key);
        }
        if let Some(seq) = self.seq {
            let f = p.seq_field();
            set(p.buf.as_mut(), f, seq);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::ethernet::ethertype;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn emit_then_parse_round_trips(protocol in any::<u16>(), key in any::<Option<u32>>(), seq in any::<Option<u32>>()) {
            let r = Repr { protocol, key, seq };
            let mut b = vec![0xee; r.buffer_len()];
            r.emit(&mut Packet::new_unchecked(&mut b[..]));
            let p = Packet::new_checked(&b[..]).unwrap();
            prop_assert_eq!(p.header_len(), r.buffer_len());
            prop_assert_eq!(Repr::parse(&p), Ok(r));
        }
    }

    /// etherparse has no GRE: the oracle is the RFC 2784 / 2890 layout, byte by byte.
    #[test]
    fn agrees_with_the_rfc_layout() {
        let mut b = [0xeeu8; BASE_LEN];
        let basic = Repr {
            protocol: ethertype::MPLS,
            key: None,
            seq: None,
        };
        basic.emit(&mut Packet::new_unchecked(&mut b[..]));
        assert_eq!(b, [0, 0, 0x88, 0x47]);
        // Checksum (skipped), key 1, sequence 2.
        let full = [
            0xb0, 0, 0x88, 0x47, 0xab, 0xcd, 0, 0, 0, 0, 0, 1, 0, 0, 0, 2,
        ];
        let p = Packet::new_checked(&full[..]).unwrap();
        assert_eq!(p.header_len(), 16);
        assert_eq!(
            Repr::parse(&p),
            Ok(Repr {
                protocol: ethertype::MPLS,
                key: Some(1),
                seq: Some(2)
            })
        );
        let with_key = [0x20, 0, 0x88, 0x47, 0, 0, 0, 1];
        let r = Repr::parse(&Packet::new_unchecked(&with_key[..])).unwrap();
        assert_eq!(r.key, Some(1));
        let mut b = [0u8; 8];
        r.emit(&mut Packet::new_unchecked(&mut b[..]));
        assert_eq!(b, with_key);
    }

    #[test]
    fn routing_versions_and_short_headers_are_refused() {
        let with_key = [0x20, 0, 0x88, 0x47, 0, 0, 0, 1];
        assert_eq!(
            Packet::new_checked(&with_key[..6]).unwrap_err(),
            WireError::Truncated
        );
        for bad in [[0, 1, 0x88, 0x47], [0x40, 0, 0x88, 0x47]] {
            assert_eq!(
                Packet::new_checked(&bad[..]).unwrap_err(),
                WireError::Malformed
            );
        }
    }
}
