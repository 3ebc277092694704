//! VXLAN headers (RFC 7348): flags (I bit), 24-bit VNI.

use super::field::{check_len, get, set, view};
use super::WireError;

pub mod field {
    use crate::wire::field::Field;
    pub const FLAGS: Field = 0..1;
    pub const RESERVED: Field = 1..4;
    /// The 24-bit VNI and the reserved byte after it, read and written as one word.
    pub const VNI: Field = 4..8;
}

pub const HEADER_LEN: usize = field::VNI.end;
const FLAG_I: u8 = 0x08;
const VNI_MASK: u32 = 0x00ff_ffff;
const VNI_SHIFT: u32 = 8;

view! {
    /// A VXLAN header and the Ethernet frame behind it.
    pub struct Packet;
    flags: u8 = field::FLAGS;
}

impl<T: AsRef<[u8]>> Packet<T> {
    /// Checks the length and that the I flag (valid VNI) is set.
    #[inline]
    pub fn check(&self) -> Result<(), WireError> {
        check_len(self.buf.as_ref(), HEADER_LEN)?;
        if self.flags() & FLAG_I == 0 {
            return Err(WireError::Malformed);
        }
        Ok(())
    }
    #[inline]
    pub fn vni(&self) -> u32 {
        get::<u32>(self.buf.as_ref(), field::VNI) >> VNI_SHIFT
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Packet<T> {
    /// Sets the VNI (its low 24 bits), and the reserved byte after it to zero.
    #[inline(always)]
    pub fn set_vni(&mut self, vni: u32) {
        set(self.buf.as_mut(), field::VNI, (vni & VNI_MASK) << VNI_SHIFT);
    }
}

/// A VXLAN header as values.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Repr {
    /// 24 bits; higher ones are not written.
    pub vni: u32,
}

impl Repr {
    pub fn parse<T: AsRef<[u8]> + ?Sized>(p: &Packet<&T>) -> Result<Repr, WireError> {
        p.check()?;
        Ok(Repr { vni: p.vni() })
    }

    /// Bytes [`Repr::emit`] writes.
    pub const fn buffer_len(&self) -> usize {
        HEADER_LEN
    }

    /// Writes flags = I, reserved zero and the VNI into the first [`Repr::buffer_len`] bytes
    /// of `p`.
    #[inline]
    pub fn emit<T: AsRef<[u8]> + AsMut<[u8]> + ?Sized>(&self, p: &mut Packet<&mut T>) {
        let b = p.buf.as_mut();
        set(b, field::FLAGS, FLAG_I);
        b[field::RESERVED].fill(0);
        p.set_vni(self.vni);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn emit_then_parse_round_trips(vni in 0..=VNI_MASK) {
            let r = Repr { vni };
            let mut b = [0xeeu8; HEADER_LEN];
            r.emit(&mut Packet::new_unchecked(&mut b[..]));
            prop_assert_eq!(Repr::parse(&Packet::new_unchecked(&b[..])), Ok(r));
        }
    }

    /// etherparse has no VXLAN: the oracle is RFC 7348's layout, byte by byte.
    #[test]
    fn agrees_with_the_rfc_layout() {
        let mut b = [0xeeu8; HEADER_LEN];
        Repr { vni: 0xabcdef }.emit(&mut Packet::new_unchecked(&mut b[..]));
        assert_eq!(b, [0x08, 0, 0, 0, 0xab, 0xcd, 0xef, 0]);
        assert_eq!(
            Repr::parse(&Packet::new_unchecked(&b[..])),
            Ok(Repr { vni: 0xabcdef })
        );
        // No I flag: the VNI is not valid.
        assert_eq!(
            Packet::new_checked(&[0u8; HEADER_LEN][..]).unwrap_err(),
            WireError::Malformed
        );
    }
}
