//! ARP for Ethernet / IPv4 (RFC 826). Other hardware or protocol types are `Malformed`.

use super::field::{check_len, view};
use super::{MacAddr, WireError};
use std::net::Ipv4Addr;

pub mod field {
    use crate::wire::field::Field;
    pub const HTYPE: Field = 0..2;
    pub const PTYPE: Field = 2..4;
    pub const HLEN: Field = 4..5;
    pub const PLEN: Field = 5..6;
    pub const OPER: Field = 6..8;
    pub const SHA: Field = 8..14;
    pub const SPA: Field = 14..18;
    pub const THA: Field = 18..24;
    pub const TPA: Field = 24..28;
}

pub const PACKET_LEN: usize = field::TPA.end;
pub const OP_REQUEST: u16 = 1;
pub const OP_REPLY: u16 = 2;

/// The fixed fields of Ethernet / IPv4 ARP: hardware type Ethernet, protocol type IPv4, and
/// their address sizes.
const HTYPE_ETHERNET: u16 = 1;
const PTYPE_IPV4: u16 = super::ethernet::ethertype::IPV4;
const HLEN_ETHERNET: u8 = 6;
const PLEN_IPV4: u8 = 4;

view! {
    /// An ARP packet.
    pub struct Packet;
    htype / set_htype: u16 = field::HTYPE;
    ptype / set_ptype: u16 = field::PTYPE;
    hlen / set_hlen: u8 = field::HLEN;
    plen / set_plen: u8 = field::PLEN;
    operation / set_operation: u16 = field::OPER;
    sender_mac / set_sender_mac: MacAddr = field::SHA;
    sender_ip / set_sender_ip: Ipv4Addr = field::SPA;
    target_mac / set_target_mac: MacAddr = field::THA;
    target_ip / set_target_ip: Ipv4Addr = field::TPA;
}

impl<T: AsRef<[u8]>> Packet<T> {
    /// Checks the length and that it is Ethernet / IPv4 ARP.
    #[inline]
    pub fn check(&self) -> Result<(), WireError> {
        check_len(self.buf.as_ref(), PACKET_LEN)?;
        if self.htype() != HTYPE_ETHERNET
            || self.ptype() != PTYPE_IPV4
            || self.hlen() != HLEN_ETHERNET
            || self.plen() != PLEN_IPV4
        {
            return Err(WireError::Malformed);
        }
        Ok(())
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Packet<T> {
    /// Write the fixed Ethernet/IPv4 fields (hardware/protocol types and sizes).
    #[inline]
    pub fn fill_fixed(&mut self) {
        self.set_htype(HTYPE_ETHERNET);
        self.set_ptype(PTYPE_IPV4);
        self.set_hlen(HLEN_ETHERNET);
        self.set_plen(PLEN_IPV4);
    }
}

/// An Ethernet / IPv4 ARP packet as values.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Repr {
    pub operation: u16,
    pub sender_mac: MacAddr,
    pub sender_ip: Ipv4Addr,
    pub target_mac: MacAddr,
    pub target_ip: Ipv4Addr,
}

impl Repr {
    pub fn parse<T: AsRef<[u8]> + ?Sized>(p: &Packet<&T>) -> Result<Repr, WireError> {
        p.check()?;
        Ok(Repr {
            operation: p.operation(),
            sender_mac: p.sender_mac(),
            sender_ip: p.sender_ip(),
            target_mac: p.target_mac(),
            target_ip: p.target_ip(),
        })
    }

    /// The reply to this request: "`ip` is at `mac`", to the asker.
    pub fn reply(&self, ip: Ipv4Addr, mac: MacAddr) -> Repr {
        Repr {
            operation: OP_REPLY,
            sender_mac: mac,
            sender_ip: ip,
            target_mac: self.sender_mac,
            target_ip: self.sender_ip,
        }
    }

    /// Bytes [`Repr::emit`] writes.
    pub const fn buffer_len(&self) -> usize {
        PACKET_LEN
    }

    /// Writes the packet into the first [`Repr::buffer_len`] bytes of `p`.
    #[inline]
    pub fn emit<T: AsRef<[u8]> + AsMut<[u8]> + ?Sized>(&self, p: &mut Packet<&mut T>) {
        p.fill_fixed();
        p.set_operation(self.operation);
        p.set_sender_mac(self.sender_mac);
        p.set_sender_ip(self.sender_ip);
        p.set_target_mac(self.target_mac);
        p.set_target_ip(self.target_ip);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn repr() -> impl Strategy<Value = Repr> {
        (
            1u16..=2,
            any::<[u8; 6]>(),
            any::<[u8; 4]>(),
            any::<[u8; 6]>(),
            any::<[u8; 4]>(),
        )
            .prop_map(|(operation, sha, spa, tha, tpa)| Repr {
                operation,
                sender_mac: MacAddr(sha),
                sender_ip: Ipv4Addr::from(spa),
                target_mac: MacAddr(tha),
                target_ip: Ipv4Addr::from(tpa),
            })
    }

    proptest! {
        #[test]
        fn emit_then_parse_round_trips(r in repr()) {
            let mut b = [0xeeu8; PACKET_LEN];
            r.emit(&mut Packet::new_unchecked(&mut b[..]));
            prop_assert_eq!(Repr::parse(&Packet::new_unchecked(&b[..])), Ok(r));
        }
    }

    /// etherparse 0.16 has no ARP: the oracle is RFC 826's layout, written out byte by byte
    /// (a reply "192.0.2.1 is at 02:00:00:00:00:01" to 192.0.2.2 at 02:00:00:00:00:02).
    const RFC826_REPLY: [u8; PACKET_LEN] = [
        0x00, 0x01, // hardware: Ethernet
        0x08, 0x00, // protocol: IPv4
        6, 4, // address sizes
        0x00, 0x02, // reply
        0x02, 0, 0, 0, 0, 0x01, 192, 0, 2, 1, // sender
        0x02, 0, 0, 0, 0, 0x02, 192, 0, 2, 2, // target
    ];

    #[test]
    fn agrees_with_the_rfc_layout() {
        let request = Repr {
            operation: OP_REQUEST,
            sender_mac: MacAddr([2, 0, 0, 0, 0, 2]),
            sender_ip: Ipv4Addr::new(192, 0, 2, 2),
            target_mac: MacAddr::default(),
            target_ip: Ipv4Addr::new(192, 0, 2, 1),
        };
        let reply = request.reply(Ipv4Addr::new(192, 0, 2, 1), MacAddr([2, 0, 0, 0, 0, 1]));
        let mut b = [0u8; PACKET_LEN];
        reply.emit(&mut Packet::new_unchecked(&mut b[..]));
        assert_eq!(b, RFC826_REPLY);
        assert_eq!(
            Repr::parse(&Packet::new_unchecked(&RFC826_REPLY[..])),
            Ok(reply)
        );
    }

    #[test]
    fn other_hardware_or_protocols_are_malformed() {
        for (at, v) in [(0, 6u8), (2, 0x86), (4, 8), (5, 16)] {
            let mut b = RFC826_REPLY;
            b[at] = v;
            assert_eq!(
                Packet::new_checked(&b[..]).unwrap_err(),
                WireError::Malformed
            );
        }
        assert_eq!(
            Packet::new_checked(&RFC826_REPLY[..PACKET_LEN - 1]).unwrap_err(),
            WireError::Truncated
        );
    }
}
