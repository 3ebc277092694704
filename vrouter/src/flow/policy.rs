//! Per-vif security policy: ordered allow / deny rules and a default, evaluated once per new
//! flow. Mirrors the control API's policy document in plain types.
//!
//! Direction is the vrouter's: a vif's `ingress` rules apply to packets the vrouter receives
//! from that vif (remote = destination), its `egress` rules to packets it sends to that vif
//! (remote = source). Port ranges match the destination port of the flow's first packet.

use super::table::FlowKey;
use crate::Error;
use std::net::IpAddr;

/// Allow or deny.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    Allow,
    Deny,
    /// Hand the flow's first packet to the agent (pkt0), which decides the flow; until it
    /// does, its packets go to the agent too (rate-limited). Where a flow is set up without
    /// a routed or bridged lookup (a VIP's, a link-local service's, a floating IP's inbound
    /// flow), it counts as deny.
    Agent,
}

/// An address prefix (IPv4 or IPv6), host bits clear.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    addr: IpAddr,
    len: u8,
}

impl Cidr {
    pub fn new(addr: IpAddr, len: u8) -> Result<Cidr, Error> {
        let (a, max) = split(addr);
        if len > max {
            return Err(Error::PrefixLen { addr, len, max });
        }
        if a & !mask(len, max) != 0 {
            return Err(Error::PrefixHostBits { addr, len });
        }
        Ok(Cidr { addr, len })
    }

    pub fn addr(&self) -> IpAddr {
        self.addr
    }
    pub fn len(&self) -> u8 {
        self.len
    }
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Whether `addr` (a flow-key address of family `v6`) is inside.
    #[inline]
    pub fn contains(&self, addr: u128, v6: bool) -> bool {
        let (a, max) = split(self.addr);
        (max == 128) == v6 && addr & mask(self.len, max) == a
    }
}

fn split(addr: IpAddr) -> (u128, u8) {
    match addr {
        IpAddr::V4(a) => (u128::from(u32::from(a)), 32),
        IpAddr::V6(a) => (u128::from(a), 128),
    }
}

fn mask(len: u8, max: u8) -> u128 {
    if len == 0 {
        0
    } else {
        let full = if max == 32 {
            u128::from(u32::MAX)
        } else {
            u128::MAX
        };
        full & !(full >> len)
    }
}

/// One rule. `None` fields match anything.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rule {
    pub action: Action,
    /// IP protocol number (`None`: any).
    pub proto: Option<u8>,
    /// Remote prefix (`None`: any address of either family).
    pub cidr: Option<Cidr>,
    /// Destination port range, inclusive (`None`: any; a rule with ports only matches TCP,
    /// UDP and SCTP).
    pub ports: Option<(u16, u16)>,
}

impl Rule {
    #[inline]
    fn matches(&self, key: &FlowKey, remote: u128) -> bool {
        self.proto.is_none_or(|p| p == key.proto)
            && self.cidr.is_none_or(|c| c.contains(remote, key.v6))
            && self.ports.is_none_or(|(lo, hi)| {
                matches!(key.proto, 6 | 17 | 132) && (lo..=hi).contains(&key.dport)
            })
    }
}

/// One vif's policy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Policy {
    pub default: Action,
    pub ingress: Vec<Rule>,
    pub egress: Vec<Rule>,
}

impl Policy {
    /// Rejects port ranges whose start is above their end.
    pub fn validate(&self) -> Result<(), Error> {
        for r in self.ingress.iter().chain(&self.egress) {
            if let Some((lo, hi)) = r.ports {
                if lo > hi {
                    return Err(Error::NoSuchEntry {
                        table: "port range (start above end)",
                        key: format!("{lo}-{hi}"),
                    });
                }
            }
        }
        Ok(())
    }

    fn first_match(rules: &[Rule], key: &FlowKey, remote: u128, default: Action) -> Action {
        rules
            .iter()
            .find(|r| r.matches(key, remote))
            .map_or(default, |r| r.action)
    }

    /// A packet received from this vif: first matching ingress rule, else the default.
    pub fn ingress_action(&self, key: &FlowKey) -> Action {
        Self::first_match(&self.ingress, key, key.dst, self.default)
    }

    /// A packet sent to this vif: first matching egress rule, else the default.
    pub fn egress_action(&self, key: &FlowKey) -> Action {
        Self::first_match(&self.egress, key, key.src, self.default)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(src: &str, dst: &str, proto: u8, dport: u16) -> FlowKey {
        let (s, v6) = split(src.parse().unwrap());
        let (d, _) = split(dst.parse().unwrap());
        FlowKey {
            vrf: 1,
            v6: v6 == 128,
            proto,
            src: s,
            dst: d,
            sport: 40000,
            dport,
        }
    }

    #[test]
    fn cidr_checks_length_host_bits_and_family() {
        assert!(Cidr::new("198.18.0.0".parse().unwrap(), 33).is_err());
        assert!(Cidr::new("198.18.0.1".parse().unwrap(), 24).is_err());
        let c = Cidr::new("198.18.0.0".parse().unwrap(), 15).unwrap();
        let (a, _) = split("198.19.255.1".parse().unwrap());
        assert!(c.contains(a, false));
        assert!(!c.contains(a, true));
        let (b, _) = split("198.20.0.1".parse().unwrap());
        assert!(!c.contains(b, false));
        let any = Cidr::new("::".parse().unwrap(), 0).unwrap();
        assert!(any.contains(5, true));
    }

    #[test]
    fn first_match_wins_then_default() {
        let p = Policy {
            default: Action::Deny,
            ingress: vec![
                Rule {
                    action: Action::Deny,
                    proto: Some(6),
                    cidr: None,
                    ports: Some((22, 22)),
                },
                Rule {
                    action: Action::Allow,
                    proto: Some(6),
                    cidr: Some(Cidr::new("198.51.100.0".parse().unwrap(), 24).unwrap()),
                    ports: Some((1, 1024)),
                },
            ],
            egress: vec![],
        };
        assert_eq!(
            p.ingress_action(&key("198.18.0.1", "198.51.100.7", 6, 80)),
            Action::Allow
        );
        assert_eq!(
            p.ingress_action(&key("198.18.0.1", "198.51.100.7", 6, 22)),
            Action::Deny
        );
        assert_eq!(
            p.ingress_action(&key("198.18.0.1", "198.51.100.7", 6, 2000)),
            Action::Deny
        );
        assert_eq!(
            p.ingress_action(&key("198.18.0.1", "192.0.2.7", 6, 80)),
            Action::Deny
        );
        // Ports never match ICMP.
        assert_eq!(
            p.ingress_action(&key("198.18.0.1", "198.51.100.7", 1, 0)),
            Action::Deny
        );
        assert_eq!(
            p.egress_action(&key("198.18.0.1", "198.51.100.7", 6, 80)),
            Action::Deny
        );
        let bad = Policy {
            ingress: vec![Rule {
                action: Action::Allow,
                proto: None,
                cidr: None,
                ports: Some((9, 8)),
            }],
            ..p
        };
        assert!(bad.validate().is_err());
    }
}
