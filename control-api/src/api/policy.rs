//! Per-vif security policy: `/vifs/{name}/policy`.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::{IpPrefix, PortRange, SyntaxError};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PolicyAction {
    Allow,
    Deny,
    /// The flow's first packet goes to the agent over pkt0 (`vrouterd --agent-socket`), which
    /// decides the flow; without an agent such packets are dropped (`no_agent`).
    Agent,
}

impl fmt::Display for PolicyAction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            PolicyAction::Allow => "allow",
            PolicyAction::Deny => "deny",
            PolicyAction::Agent => "agent",
        })
    }
}

/// `"tcp"`, `"udp"`, `"icmp"`, `"any"` or an IP protocol number.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Proto {
    Any,
    Number(u8),
}

impl Proto {
    pub const TCP: Proto = Proto::Number(6);
    pub const UDP: Proto = Proto::Number(17);
    pub const ICMP: Proto = Proto::Number(1);

    /// Whether rules for this protocol may name ports.
    pub fn has_ports(&self) -> bool {
        matches!(self, Proto::Number(6 | 17 | 132))
    }
}

impl fmt::Display for Proto {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Proto::Any => f.write_str("any"),
            Proto::Number(6) => f.write_str("tcp"),
            Proto::Number(17) => f.write_str("udp"),
            Proto::Number(1) => f.write_str("icmp"),
            Proto::Number(n) => write!(f, "{n}"),
        }
    }
}

impl FromStr for Proto {
    type Err = SyntaxError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "any" => Ok(Proto::Any),
            "tcp" => Ok(Proto::TCP),
            "udp" => Ok(Proto::UDP),
            "icmp" => Ok(Proto::ICMP),
            n => n.parse::<u8>().map(Proto::Number).map_err(|_| {
                SyntaxError(format!(
                    "invalid protocol {s:?}: expected \"tcp\", \"udp\", \"icmp\", \"any\" or a number 0..=255"
                ))
            }),
        }
    }
}

impl Serialize for Proto {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Proto::Number(n) if !matches!(n, 1 | 6 | 17) => s.serialize_u8(*n),
            other => s.collect_str(other),
        }
    }
}

impl<'de> Deserialize<'de> for Proto {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl serde::de::Visitor<'_> for V {
            type Value = Proto;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("\"tcp\", \"udp\", \"icmp\", \"any\" or a protocol number 0..=255")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Proto, E> {
                v.parse().map_err(|e: SyntaxError| E::custom(e.0))
            }
            fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<Proto, E> {
                u8::try_from(v)
                    .map(Proto::Number)
                    .map_err(|_| E::custom(format!("protocol number {v} is above 255")))
            }
            fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<Proto, E> {
                u8::try_from(v)
                    .map(Proto::Number)
                    .map_err(|_| E::custom(format!("protocol number {v} is outside 0..=255")))
            }
        }
        d.deserialize_any(V)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PolicyRule {
    pub action: PolicyAction,
    #[serde(default = "proto_any")]
    pub proto: Proto,
    /// Remote addresses the rule matches; absent = any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cidr: Option<IpPrefix>,
    /// Remote (egress) or local (ingress) ports; only for tcp/udp/sctp.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ports: Option<PortRange>,
}

fn proto_any() -> Proto {
    Proto::Any
}

/// `PUT /vifs/{name}/policy`: the first matching rule decides; otherwise `default`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Policy {
    pub default: PolicyAction,
    #[serde(default)]
    pub ingress: Vec<PolicyRule>,
    #[serde(default)]
    pub egress: Vec<PolicyRule>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ports_and_protocols_parse() {
        assert_eq!(
            "80".parse::<PortRange>().unwrap(),
            PortRange {
                first: 80,
                last: 80
            }
        );
        assert_eq!("1000-2000".parse::<PortRange>().unwrap().last, 2000);
        assert!("2000-1000".parse::<PortRange>().is_err());
        assert!("70000".parse::<PortRange>().is_err());
        let r: PolicyRule =
            serde_json::from_str(r#"{"action":"allow","proto":47,"cidr":"198.18.0.0/15"}"#)
                .unwrap();
        assert_eq!(r.proto, Proto::Number(47));
        let r: PolicyRule =
            serde_json::from_str(r#"{"action":"deny","proto":"tcp","ports":"22"}"#).unwrap();
        assert_eq!(serde_json::to_value(&r).unwrap()["proto"], "tcp");
        assert!(serde_json::from_str::<PolicyRule>(r#"{"action":"deny","proto":300}"#).is_err());
    }
}
