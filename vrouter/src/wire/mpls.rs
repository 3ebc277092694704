//! One MPLS label stack entry (RFC 3032): label (20 bits), traffic class (3), bottom of stack
//! (1), TTL (8).

use super::field::{check_len, get, set, view};
use super::WireError;

pub mod field {
    use crate::wire::field::Field;
    /// The whole entry, one 32-bit word: label, traffic class and bottom-of-stack bits, TTL.
    pub const ENTRY: Field = 0..4;
    pub const TTL: Field = 3..4;
}

pub const ENTRY_LEN: usize = field::ENTRY.end;
/// Largest label value.
pub const MAX_LABEL: u32 = (1 << 20) - 1;
const LABEL_SHIFT: u32 = 12;
const TC_SHIFT: u32 = 9;
const TC_MASK: u32 = 7;
const BOTTOM_OF_STACK: u32 = 0x100;

view! {
    /// A label stack entry.
    pub struct Entry;
    ttl: u8 = field::TTL;
}

impl<T: AsRef<[u8]>> Entry<T> {
    /// Checks that the entry fits.
    #[inline]
    pub fn check(&self) -> Result<(), WireError> {
        check_len(self.buf.as_ref(), ENTRY_LEN)
    }
    #[inline]
    fn word(&self) -> u32 {
        get(self.buf.as_ref(), field::ENTRY)
    }
    #[inline]
    pub fn label(&self) -> u32 {
        self.word() >> LABEL_SHIFT
    }
    #[inline]
    pub fn tc(&self) -> u8 {
        ((self.word() >> TC_SHIFT) & TC_MASK) as u8
    }
    #[inline]
    pub fn bottom_of_stack(&self) -> bool {
        self.word() & BOTTOM_OF_STACK != 0
    }
}

/// A label stack entry as values.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Repr {
    /// At most [`MAX_LABEL`]; higher bits are not written.
    pub label: u32,
    /// 3 bits; higher ones are not written.
    pub tc: u8,
    pub bottom_of_stack: bool,
    pub ttl: u8,
}

impl Repr {
    pub fn parse<T: AsRef<[u8]> + ?Sized>(e: &Entry<&T>) -> Result<Repr, WireError> {
        e.check()?;
        Ok(Repr {
            label: e.label(),
            tc: e.tc(),
            bottom_of_stack: e.bottom_of_stack(),
            ttl: e.ttl(),
        })
    }

    /// Bytes [`Repr::emit`] writes.
    pub const fn buffer_len(&self) -> usize {
        ENTRY_LEN
    }

    /// Writes the entry into the first [`Repr::buffer_len`] bytes of `e`.
    #[inline(always)]
    pub fn emit<T: AsRef<[u8]> + AsMut<[u8]> + ?Sized>(&self, e: &mut Entry<&mut T>) {
        let v = ((self.label & MAX_LABEL) << LABEL_SHIFT)
            | ((u32::from(self.tc) & TC_MASK) << TC_SHIFT)
            | if self.bottom_of_stack {
                BOTTOM_OF_STACK
            } else {
                0
            }
            | u32::from(self.ttl);
        set(e.buf.as_mut(), field::ENTRY, v);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn emit_then_parse_round_trips(label in 0..=MAX_LABEL, tc in 0u8..8, bottom_of_stack in any::<bool>(), ttl in any::<u8>()) {
            let r = Repr { label, tc, bottom_of_stack, ttl };
            let mut b = [0xeeu8; ENTRY_LEN];
            r.emit(&mut Entry::new_unchecked(&mut b[..]));
            prop_assert_eq!(Repr::parse(&Entry::new_unchecked(&b[..])), Ok(r));
        }
    }

    /// etherparse has no MPLS: the oracle is RFC 3032's layout, bit by bit.
    #[test]
    fn agrees_with_the_rfc_layout() {
        let r = Repr {
            label: 0x12345,
            tc: 5,
            bottom_of_stack: true,
            ttl: 64,
        };
        let mut b = [0u8; ENTRY_LEN];
        r.emit(&mut Entry::new_unchecked(&mut b[..]));
        // Label 0001 0010 0011 0100 0101, TC 101, S 1, TTL 64.
        assert_eq!(b, [0x12, 0x34, 0x5b, 64]);
        assert_eq!(Repr::parse(&Entry::new_unchecked(&b[..])), Ok(r));
        assert_eq!(
            Repr::parse(&Entry::new_unchecked(&b[..3])),
            Err(WireError::Truncated)
        );
    }
}
