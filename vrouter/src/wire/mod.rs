//! Typed views over packet bytes, in the smoltcp `wire` style. Each header module names its
//! layout in a `field` module of byte ranges; its `Packet` (or `Frame`, `Entry`) view is checked
//! once by `new_checked(bytes)` (lengths, and the fixed fields a forwarder relies on), after
//! which every accessor is infallible and every setter writes in place. The headers vrouterd
//! writes also have a `Repr`: the header's meaning as plain values, `parse`d from a view and
//! `emit`ted into one. No view allocates or copies.

pub mod arp;
pub mod checksum;
pub mod dhcp;
pub mod ethernet;
pub mod field;
pub mod gre;
pub mod icmp;
pub mod ipv4;
pub mod ipv6;
pub mod mpls;
pub mod tcp;
pub mod udp;
pub mod vxlan;

/// Why bytes are not a valid header of the asked kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum WireError {
    /// Fewer bytes than the header (or its own length fields) need.
    #[error("truncated header")]
    Truncated,
    /// A fixed field holds a value this header never has (version, lengths, flags).
    #[error("malformed header")]
    Malformed,
    /// The header checksum does not verify.
    #[error("bad header checksum")]
    Checksum,
    /// A valid header that a `Repr` does not describe (an IPv4 fragment, an ICMP message
    /// vrouterd never sends).
    #[error("header not representable")]
    Unsupported,
}

/// An Ethernet MAC address.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, PartialOrd, Ord)]
pub struct MacAddr(pub [u8; 6]);

impl MacAddr {
    pub const BROADCAST: MacAddr = MacAddr([0xff; 6]);
    /// The vrouter's default MAC, as in Tungsten Fabric (`00:00:5e:00:01:00`).
    pub const VROUTER_DEFAULT: MacAddr = MacAddr([0x00, 0x00, 0x5e, 0x00, 0x01, 0x00]);

    #[inline]
    pub fn is_multicast(&self) -> bool {
        self.0[0] & 1 == 1
    }
    /// The 48 bits as an integer (for table keys).
    #[inline]
    pub fn to_u64(self) -> u64 {
        let m = self.0;
        u64::from_be_bytes([0, 0, m[0], m[1], m[2], m[3], m[4], m[5]])
    }
    #[inline]
    pub fn from_u64(v: u64) -> Self {
        let b = v.to_be_bytes();
        MacAddr([b[2], b[3], b[4], b[5], b[6], b[7]])
    }
}

impl std::fmt::Display for MacAddr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let m = self.0;
        write!(
            f,
            "{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}",
            m[0], m[1], m[2], m[3], m[4], m[5]
        )
    }
}

impl std::str::FromStr for MacAddr {
    type Err = crate::Error;
    #[inline]
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || crate::Error::BadMac(s.to_string());
        let mut out = [0u8; 6];
        let mut parts = s.split(':');
        for o in out.iter_mut() {
            let p = parts.next().ok_or_else(bad)?;
            if p.len() != 2 {
                return Err(bad());
            }
            *o = u8::from_str_radix(p, 16).map_err(|_| bad())?;
        }
        if parts.next().is_some() {
            return Err(bad());
        }
        Ok(MacAddr(out))
    }
}
