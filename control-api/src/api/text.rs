//! Values written as strings on the wire (MAC addresses, prefixes, port ranges) and why a
//! string is not one.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// An Ethernet address, written `02:00:5e:00:01:00` on the wire: the forwarding plane's own
/// type, so an address crosses from the API to the tables as it is.
pub use vrouter::MacAddr;

/// Why a string is not a MAC address, a prefix, a port range, ...
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SyntaxError(pub String);

impl fmt::Display for SyntaxError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for SyntaxError {}

/// An IPv4 or IPv6 prefix, written `198.18.2.0/24`; host bits must be zero.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct IpPrefix {
    addr: IpAddr,
    len: u8,
}

impl IpPrefix {
    pub fn new(addr: IpAddr, len: u8) -> Result<Self, SyntaxError> {
        let max = match addr {
            IpAddr::V4(_) => 32,
            IpAddr::V6(_) => 128,
        };
        if len > max {
            return Err(SyntaxError(format!(
                "prefix length {len} is longer than {max} bits for {addr}"
            )));
        }
        let masked = mask(addr, len);
        if masked != addr {
            return Err(SyntaxError(format!(
                "{addr}/{len} has host bits set; did you mean {masked}/{len}?"
            )));
        }
        Ok(IpPrefix { addr, len })
    }

    pub fn addr(&self) -> IpAddr {
        self.addr
    }

    pub fn prefix_len(&self) -> u8 {
        self.len
    }

    pub fn is_ipv4(&self) -> bool {
        self.addr.is_ipv4()
    }

    /// Whether `ip` lies inside this prefix.
    pub fn contains(&self, ip: IpAddr) -> bool {
        ip.is_ipv4() == self.addr.is_ipv4() && mask(ip, self.len) == self.addr
    }
}

fn mask(addr: IpAddr, len: u8) -> IpAddr {
    match addr {
        IpAddr::V4(a) => {
            let bits = u32::from(a);
            let m = if len == 0 {
                0
            } else {
                u32::MAX << (32 - u32::from(len.min(32)))
            };
            IpAddr::V4(Ipv4Addr::from(bits & m))
        }
        IpAddr::V6(a) => {
            let bits = u128::from(a);
            let m = if len == 0 {
                0
            } else {
                u128::MAX << (128 - u32::from(len.min(128)))
            };
            IpAddr::V6(Ipv6Addr::from(bits & m))
        }
    }
}

impl fmt::Display for IpPrefix {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.len)
    }
}

impl FromStr for IpPrefix {
    type Err = SyntaxError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (addr, len) = s.split_once('/').ok_or_else(|| {
            SyntaxError(format!(
                "invalid prefix {s:?}: expected ADDRESS/LENGTH, like 198.18.2.0/24"
            ))
        })?;
        let addr: IpAddr = addr.parse().map_err(|_| {
            SyntaxError(format!(
                "invalid prefix {s:?}: {addr:?} is not an IP address"
            ))
        })?;
        let len: u8 = len.parse().map_err(|_| {
            SyntaxError(format!(
                "invalid prefix {s:?}: {len:?} is not a prefix length"
            ))
        })?;
        IpPrefix::new(addr, len)
    }
}

/// A port or an inclusive port range, written `80` or `1000-2000`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PortRange {
    pub first: u16,
    pub last: u16,
}

impl PortRange {
    pub fn contains(&self, port: u16) -> bool {
        (self.first..=self.last).contains(&port)
    }
}

impl fmt::Display for PortRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.first == self.last {
            write!(f, "{}", self.first)
        } else {
            write!(f, "{}-{}", self.first, self.last)
        }
    }
}

impl FromStr for PortRange {
    type Err = SyntaxError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || {
            SyntaxError(format!(
                "invalid port range {s:?}: expected a port (80) or FIRST-LAST (1000-2000), ports 0..=65535"
            ))
        };
        let (first, last) = match s.split_once('-') {
            Some((a, b)) => (
                a.parse::<u16>().map_err(|_| bad())?,
                b.parse::<u16>().map_err(|_| bad())?,
            ),
            None => {
                let p = s.parse::<u16>().map_err(|_| bad())?;
                (p, p)
            }
        };
        if first > last {
            return Err(SyntaxError(format!(
                "invalid port range {s:?}: the first port is above the last"
            )));
        }
        Ok(PortRange { first, last })
    }
}

macro_rules! serde_via_str {
    ($t:ty, $what:literal) => {
        impl Serialize for $t {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.collect_str(self)
            }
        }
        impl<'de> Deserialize<'de> for $t {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                struct V;
                impl serde::de::Visitor<'_> for V {
                    type Value = $t;
                    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                        f.write_str($what)
                    }
                    fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<$t, E> {
                        v.parse().map_err(|e: SyntaxError| E::custom(e.0))
                    }
                }
                d.deserialize_str(V)
            }
        }
    };
}

serde_via_str!(IpPrefix, "a prefix string like \"198.18.2.0/24\"");
serde_via_str!(PortRange, "a port string like \"80\" or \"1000-2000\"");

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mac_round_trips_and_rejects_garbage() {
        let m: MacAddr = "02:00:5E:00:01:0a".parse().unwrap();
        assert_eq!(m.to_string(), "02:00:5e:00:01:0a");
        for bad in [
            "",
            "02:00:5e:00:01",
            "02:00:5e:00:01:0a:00",
            "0g:00:00:00:00:00",
            "2:0:0:0:0:0",
        ] {
            assert!(bad.parse::<MacAddr>().is_err(), "{bad}");
        }
        assert!(MacAddr([1, 0, 0, 0, 0, 0]).is_multicast());
    }

    #[test]
    fn prefix_checks_length_and_host_bits() {
        let p: IpPrefix = "198.18.2.0/24".parse().unwrap();
        assert!(p.contains("198.18.2.77".parse().unwrap()));
        assert!(!p.contains("198.18.3.1".parse().unwrap()));
        let e = "198.18.2.1/24".parse::<IpPrefix>().unwrap_err();
        assert!(e.0.contains("did you mean 198.18.2.0/24"), "{e}");
        assert!("198.18.2.0/33".parse::<IpPrefix>().is_err());
        assert!("2001:db8::/129".parse::<IpPrefix>().is_err());
        assert_eq!(
            "2001:db8::/32".parse::<IpPrefix>().unwrap().prefix_len(),
            32
        );
        assert!("0.0.0.0/0".parse::<IpPrefix>().is_ok());
        assert!("198.18.2.0".parse::<IpPrefix>().is_err());
    }
}
