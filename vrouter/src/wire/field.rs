//! Header fields as byte ranges, and the values they hold in network byte order.
//!
//! Each header module declares its layout once, in a `field` module of named ranges
//! (`pub const TTL: Field = 8..9;`); accessors read `&buf[field::TTL]` and nothing else names an
//! offset. With the range a constant and the view's buffer checked (or a fixed-size array), the
//! compiler folds each access to one bounds check, or none.

use super::{MacAddr, WireError};
use std::net::{Ipv4Addr, Ipv6Addr};

/// The bytes of one field: `&buf[field]`.
pub type Field = core::ops::Range<usize>;
/// Everything from an offset on: a header's options or payload.
pub type Rest = core::ops::RangeFrom<usize>;

/// A value one field holds, big-endian on the wire. `read` and `write` take exactly the field's
/// bytes (a slice of another length is a wrongly declared field, and panics).
pub trait FieldValue: Sized {
    fn read(b: &[u8]) -> Self;
    fn write(self, b: &mut [u8]);
}

impl FieldValue for u8 {
    #[inline(always)]
    fn read(b: &[u8]) -> Self {
        b[0]
    }
    #[inline(always)]
    fn write(self, b: &mut [u8]) {
        b[0] = self;
    }
}

impl FieldValue for u16 {
    #[inline(always)]
    fn read(b: &[u8]) -> Self {
        u16::from_be_bytes(array(b))
    }
    #[inline(always)]
    fn write(self, b: &mut [u8]) {
        b.copy_from_slice(&self.to_be_bytes());
    }
}

impl FieldValue for u32 {
    #[inline(always)]
    fn read(b: &[u8]) -> Self {
        u32::from_be_bytes(array(b))
    }
    #[inline(always)]
    fn write(self, b: &mut [u8]) {
        b.copy_from_slice(&self.to_be_bytes());
    }
}

impl FieldValue for MacAddr {
    #[inline(always)]
    fn read(b: &[u8]) -> Self {
        MacAddr(array(b))
    }
    #[inline(always)]
    fn write(self, b: &mut [u8]) {
        b.copy_from_slice(&self.0);
    }
}

impl FieldValue for Ipv4Addr {
    #[inline(always)]
    fn read(b: &[u8]) -> Self {
        Ipv4Addr::from(array::<4>(b))
    }
    #[inline(always)]
    fn write(self, b: &mut [u8]) {
        b.copy_from_slice(&self.octets());
    }
}

impl FieldValue for Ipv6Addr {
    #[inline(always)]
    fn read(b: &[u8]) -> Self {
        Ipv6Addr::from(array::<16>(b))
    }
    #[inline(always)]
    fn write(self, b: &mut [u8]) {
        b.copy_from_slice(&self.octets());
    }
}

/// The field's bytes as an array (one load for the sizes above).
#[inline(always)]
pub fn array<const N: usize>(b: &[u8]) -> [u8; N] {
    let mut a = [0u8; N];
    a.copy_from_slice(b);
    a
}

/// The value of field `f` of header bytes `b`.
#[inline(always)]
pub fn get<V: FieldValue>(b: &[u8], f: Field) -> V {
    V::read(&b[f])
}

/// Writes `v` into field `f` of header bytes `b`.
#[inline(always)]
pub fn set<V: FieldValue>(b: &mut [u8], f: Field, v: V) {
    v.write(&mut b[f]);
}

/// `Ok` if a view's buffer `b` holds the `len` bytes its header needs.
#[inline(always)]
pub fn check_len(b: &[u8], len: usize) -> Result<(), WireError> {
    if b.len() < len {
        return Err(WireError::Truncated);
    }
    Ok(())
}

/// Declares a view: a buffer `T` read as one header, smoltcp style. It gets `new_unchecked`,
/// `new_checked` (which runs the type's own `check`, so every accessor is infallible
/// afterwards), `into_inner`, and a getter (and, given `/ setter`, a setter) for each plain
/// field listed. Fields packed into bits are written out by hand beside it.
macro_rules! view {
    (
        $(#[$attr:meta])*
        pub struct $name:ident;
        $(
            $(#[$fattr:meta])*
            $get:ident $(/ $set:ident)? : $ty:ty = $field:expr;
        )*
    ) => {
        $(#[$attr])*
        #[derive(Debug, Clone, Copy)]
        pub struct $name<T: AsRef<[u8]>> {
            buf: T,
        }

        impl<T: AsRef<[u8]>> $name<T> {
            /// A view of `buf` without any check: accessors panic where it is too short.
            #[inline(always)]
            pub fn new_unchecked(buf: T) -> Self {
                $name { buf }
            }
            /// A view of `buf` once `check` accepts it.
            #[inline(always)]
            pub fn new_checked(buf: T) -> Result<Self, $crate::wire::WireError> {
                let v = Self::new_unchecked(buf);
                v.check()?;
                Ok(v)
            }
            #[inline]
            pub fn into_inner(self) -> T {
                self.buf
            }
            $(
                $(#[$fattr])*
                #[inline(always)]
                pub fn $get(&self) -> $ty {
                    $crate::wire::field::get::<$ty>(self.buf.as_ref(), $field)
                }
            )*
        }

        impl<T: AsRef<[u8]> + AsMut<[u8]>> $name<T> {
            $($(
                #[inline(always)]
                pub fn $set(&mut self, v: $ty) {
                    $crate::wire::field::set::<$ty>(self.buf.as_mut(), $field, v);
                }
            )?)*
        }
    };
}
pub(crate) use view;

/// For a view whose length field may reach past its buffer (the header in a packet's first
/// segment, its payload in further ones): `new_checked_in(buf, frame_avail)`, which checks the
/// length field against `frame_avail`, the bytes the whole frame holds from the header on; and
/// `check`, the same against the buffer alone. The view writes `check_in(frame_avail)`.
macro_rules! checked_in_frame {
    ($name:ident) => {
        impl<T: AsRef<[u8]>> $name<T> {
            /// [`Self::new_checked`] for a header whose packet continues in further segments.
            #[inline(always)]
            pub fn new_checked_in(
                buf: T,
                frame_avail: usize,
            ) -> Result<Self, $crate::wire::WireError> {
                let v = Self::new_unchecked(buf);
                v.check_in(frame_avail)?;
                Ok(v)
            }
            /// [`Self::check_in`] with the buffer as the whole packet.
            #[inline(always)]
            pub fn check(&self) -> Result<(), $crate::wire::WireError> {
                self.check_in(self.buf.as_ref().len())
            }
        }
    };
}
pub(crate) use checked_in_frame;
