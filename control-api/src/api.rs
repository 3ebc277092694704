//! The contract: request and response bodies of control API v1 (DESIGN.md) and the flow/policy
//! additions of issue 4. Field names here are the wire names; changing one breaks agents.

use std::collections::BTreeMap;
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::PathBuf;
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

/// The error body every 4xx/5xx carries.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorBody {
    /// A short stable code, e.g. `invalid-field`, `in-use`, `socket-outside-base`.
    pub error: String,
    /// What was wrong and how to fix it.
    pub message: String,
}

// ---------------------------------------------------------------------------------------------
// VRFs

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VrfInfo {
    pub vrf: u32,
    pub vifs: u32,
    pub routes: u32,
    pub bridge_entries: u32,
}

// ---------------------------------------------------------------------------------------------
// vifs

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum VifType {
    VhostUser,
    Physical,
    AfPacket,
    Tap,
}

impl VifType {
    pub fn as_str(&self) -> &'static str {
        match self {
            VifType::VhostUser => "vhost-user",
            VifType::Physical => "physical",
            VifType::AfPacket => "af-packet",
            VifType::Tap => "tap",
        }
    }
}

impl fmt::Display for VifType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The vrouter's role on a vhost-user socket.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum VhostUserMode {
    /// vrouterd creates the socket and listens; the pod's virtio-user connects.
    Server,
    /// vrouterd connects to the pod's socket, retrying until it appears.
    Client,
}

impl fmt::Display for VhostUserMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            VhostUserMode::Server => "server",
            VhostUserMode::Client => "client",
        })
    }
}

/// `POST /vifs`. One flat body for every type; which optional fields are required or allowed
/// depends on `type` and is checked by the model with a message naming the field.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VifRequest {
    pub name: String,
    #[serde(rename = "type")]
    pub vif_type: VifType,
    pub vrf: u32,
    pub mac: MacAddr,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ip: Option<Ipv4Addr>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ip6: Option<Ipv6Addr>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mtu: Option<u32>,
    #[serde(
        rename = "vhostsocket-dir",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub vhostsocket_dir: Option<PathBuf>,
    #[serde(
        rename = "vhostsocket-filename",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub vhostsocket_filename: Option<String>,
    #[serde(
        rename = "vhostuser-mode",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub vhostuser_mode: Option<VhostUserMode>,
    #[serde(
        rename = "vhostsocket-group",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub vhostsocket_group: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub queues: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub device: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub iface: Option<String>,
}

impl VifRequest {
    /// A request with only the fields every type needs; fill in the rest per type.
    pub fn new(name: &str, vif_type: VifType, vrf: u32, mac: MacAddr) -> Self {
        VifRequest {
            name: name.to_string(),
            vif_type,
            vrf,
            mac,
            ip: None,
            ip6: None,
            mtu: None,
            vhostsocket_dir: None,
            vhostsocket_filename: None,
            vhostuser_mode: None,
            vhostsocket_group: None,
            queues: None,
            device: None,
            iface: None,
        }
    }
}

/// Live state of a vif as the dataplane reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum VifState {
    /// vhost-user server: socket bound, waiting for the pod.
    Listening,
    /// vhost-user client: trying to reach the pod's socket.
    Connecting,
    /// vhost-user: rings ready and owned by an lcore.
    Connected,
    /// A kernel or physical port that is up.
    Up,
    Down,
}

impl fmt::Display for VifState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            VifState::Listening => "listening",
            VifState::Connecting => "connecting",
            VifState::Connected => "connected",
            VifState::Up => "up",
            VifState::Down => "down",
        })
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct VifCounters {
    pub rx_packets: u64,
    pub rx_bytes: u64,
    pub tx_packets: u64,
    pub tx_bytes: u64,
    pub drops: u64,
}

/// What the dataplane knows about a vif right now.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VifStatus {
    pub state: VifState,
    /// Negotiated virtio feature bits (vhost-user, once connected).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub features: Option<u64>,
    /// Queue pairs enabled by the peer.
    #[serde(default)]
    pub queues_enabled: u32,
    /// The forwarding lcore that polls this vif.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lcore: Option<u32>,
    /// Why the guest's device was stopped (it broke a virtqueue's rules, or took its memory away
    /// under vrouterd), until a new frontend connects. Other vifs are not affected.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub broken: Option<String>,
    pub counters: VifCounters,
}

/// `POST /vifs` (201) and `GET /vifs[/{name}]`: the configuration as accepted (defaults filled
/// in), where it lives, and its live status.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VifInfo {
    #[serde(flatten)]
    pub config: VifRequest,
    pub index: u32,
    /// The resolved socket path (vhost-user only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub socket: Option<PathBuf>,
    pub vrouter_mac: MacAddr,
    #[serde(flatten)]
    pub status: VifStatus,
}

// ---------------------------------------------------------------------------------------------
// nexthops

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TunnelEncap {
    Vxlan,
    Mplsoudp,
    Mplsogre,
}

impl TunnelEncap {
    /// Whether the route/bridge `label` toward this tunnel is an MPLS label (else a VNI).
    pub fn carries_mpls(&self) -> bool {
        !matches!(self, TunnelEncap::Vxlan)
    }
}

impl fmt::Display for TunnelEncap {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            TunnelEncap::Vxlan => "vxlan",
            TunnelEncap::Mplsoudp => "mplsoudp",
            TunnelEncap::Mplsogre => "mplsogre",
        })
    }
}

/// `PUT /nexthops/{id}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "lowercase", deny_unknown_fields)]
pub enum Nexthop {
    /// Deliver to a local vif, rewriting the L2 header to `dmac`.
    Encap {
        vif: String,
        dmac: MacAddr,
    },
    /// Encapsulate toward another node through the fabric vif `vif`.
    Tunnel {
        encap: TunnelEncap,
        vif: String,
        sip: IpAddr,
        dip: IpAddr,
        dmac: MacAddr,
    },
    /// Spread flows over members by flow hash.
    Ecmp {
        members: Vec<u32>,
    },
    Discard,
    /// Hand to the vrouter itself (ARP, its own addresses).
    Receive,
}

impl Nexthop {
    pub fn type_name(&self) -> &'static str {
        match self {
            Nexthop::Encap { .. } => "encap",
            Nexthop::Tunnel { .. } => "tunnel",
            Nexthop::Ecmp { .. } => "ecmp",
            Nexthop::Discard => "discard",
            Nexthop::Receive => "receive",
        }
    }

    /// The vif this nexthop sends through, if any.
    pub fn vif(&self) -> Option<&str> {
        match self {
            Nexthop::Encap { vif, .. } | Nexthop::Tunnel { vif, .. } => Some(vif),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NexthopInfo {
    pub id: u32,
    #[serde(flatten)]
    pub nexthop: Nexthop,
    /// Who points at this nexthop (routes, bridge entries, labels, ECMP groups): the first
    /// ten, then "and N more".
    pub used_by: Vec<String>,
    /// How many things point at it.
    #[serde(default)]
    pub use_count: u64,
}

// ---------------------------------------------------------------------------------------------
// routes, bridge entries, labels, VNIs

/// `PUT /vrfs/{vrf}/routes`; also an element of `GET /vrfs/{vrf}/routes`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Route {
    pub prefix: IpPrefix,
    pub nexthop: u32,
    /// MPLS label (MPLSoUDP/MPLSoGRE) or VNI (VXLAN) pushed toward a tunnel nexthop.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub label: Option<u32>,
}

/// `PUT /vrfs/{vrf}/bridge`; also an element of `GET /vrfs/{vrf}/bridge`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BridgeEntry {
    pub mac: MacAddr,
    pub nexthop: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub label: Option<u32>,
}

/// `PUT /mpls/{label}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MplsRequest {
    pub nexthop: u32,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MplsEntry {
    pub label: u32,
    pub nexthop: u32,
}

/// `PUT /vxlan/{vni}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VxlanRequest {
    pub vrf: u32,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VxlanEntry {
    pub vni: u32,
    pub vrf: u32,
}

// ---------------------------------------------------------------------------------------------
// policy (issue 4)

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PolicyAction {
    Allow,
    Deny,
}

impl fmt::Display for PolicyAction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            PolicyAction::Allow => "allow",
            PolicyAction::Deny => "deny",
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

// ---------------------------------------------------------------------------------------------
// flows (issue 4)

/// `GET /flows?vrf=&limit=&cursor=`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FlowQuery {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vrf: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limit: Option<u32>,
    /// Opaque: the `next_cursor` of the previous page.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cursor: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FlowAction {
    Forward,
    Drop,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FlowEntry {
    pub index: u64,
    pub vrf: u32,
    pub src: IpAddr,
    pub dst: IpAddr,
    pub proto: u8,
    /// Source port; for ICMP / ICMPv6 the echo identifier (0 for other messages).
    pub sport: u16,
    /// Destination port; for ICMP / ICMPv6 the message type.
    pub dport: u16,
    pub action: FlowAction,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reverse: Option<u64>,
    pub packets: u64,
    pub bytes: u64,
    /// TCP state for aging (`syn`, `established`, `fin`, `rst`), absent for other protocols.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tcp_state: Option<String>,
    /// Milliseconds since the flow last saw a packet.
    pub idle_ms: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FlowPage {
    pub flows: Vec<FlowEntry>,
    /// Pass as `cursor` to get the next page; absent on the last page.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_cursor: Option<String>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct FlowStats {
    pub capacity: u64,
    pub active: u64,
    pub created: u64,
    pub aged: u64,
    pub evicted: u64,
    pub table_full_drops: u64,
}

/// `DELETE /flows`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct FlushResult {
    pub flushed: u64,
}

// ---------------------------------------------------------------------------------------------
// stats, dropstats, health

#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct LcoreStats {
    pub lcore: u32,
    pub rx_packets: u64,
    pub rx_bytes: u64,
    pub tx_packets: u64,
    pub tx_bytes: u64,
    pub drops: u64,
    /// Share of recent poll iterations that found work, 0.0..=1.0.
    pub busy_ratio: f64,
}

/// `GET /stats`: totals and the per-lcore breakdown they are the sum of.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Stats {
    pub rx_packets: u64,
    pub rx_bytes: u64,
    pub tx_packets: u64,
    pub tx_bytes: u64,
    pub drops: u64,
    pub lcores: Vec<LcoreStats>,
}

/// `GET /dropstats`: packets dropped per named reason.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DropStats {
    pub total: u64,
    pub reasons: BTreeMap<String, u64>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum HealthStatus {
    Ok,
    Degraded,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MempoolHealth {
    pub name: String,
    pub in_use: u64,
    pub size: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RingHealth {
    pub name: String,
    pub used: u64,
    pub size: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LcoreHealth {
    pub lcore: u32,
    /// `forwarding`, `vhost` or `control`.
    pub role: String,
    pub busy_ratio: f64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VifHealth {
    pub name: String,
    pub state: VifState,
}

/// `GET /health`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Health {
    pub status: HealthStatus,
    pub mempools: Vec<MempoolHealth>,
    pub rings: Vec<RingHealth>,
    pub lcores: Vec<LcoreHealth>,
    #[serde(default)]
    pub vifs: Vec<VifHealth>,
    /// Why the status is degraded, one line each.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub problems: Vec<String>,
}

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

    #[test]
    fn nexthop_bodies_use_the_contract_names() {
        let nh: Nexthop = serde_json::from_str(
            r#"{"type":"tunnel","encap":"mplsoudp","vif":"fabric0","sip":"192.0.2.1","dip":"192.0.2.2","dmac":"02:00:00:00:00:02"}"#,
        )
        .unwrap();
        assert!(matches!(
            nh,
            Nexthop::Tunnel {
                encap: TunnelEncap::Mplsoudp,
                ..
            }
        ));
        let nh: Nexthop = serde_json::from_str(r#"{"type":"discard"}"#).unwrap();
        assert_eq!(nh, Nexthop::Discard);
        assert!(serde_json::from_str::<Nexthop>(
            r#"{"type":"encap","vif":"a","dmac":"02:00:00:00:00:02","x":1}"#
        )
        .is_err());
    }

    #[test]
    fn vif_info_flattens_config_and_status() {
        let mut config =
            VifRequest::new("pod1", VifType::VhostUser, 1, MacAddr([2, 0, 0, 0, 0, 1]));
        config.vhostsocket_dir = Some("/var/run/vrouter/p1".into());
        let info = VifInfo {
            config,
            index: 3,
            socket: Some("/var/run/vrouter/p1/s".into()),
            vrouter_mac: MacAddr::VROUTER_DEFAULT,
            status: VifStatus {
                state: VifState::Listening,
                features: None,
                queues_enabled: 0,
                lcore: Some(1),
                broken: None,
                counters: VifCounters::default(),
            },
        };
        let v = serde_json::to_value(&info).unwrap();
        assert_eq!(v["vhostsocket-dir"], "/var/run/vrouter/p1");
        assert_eq!(v["state"], "listening");
        assert_eq!(v["vrouter_mac"], "00:00:5e:00:01:00");
        let back: VifInfo = serde_json::from_value(v).unwrap();
        assert_eq!(back, info);
    }
}
