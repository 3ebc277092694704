//! Vifs: `POST /vifs`, `GET /vifs[/{name}]`, and the live status the dataplane reports.

use std::fmt;
use std::net::{Ipv4Addr, Ipv6Addr};
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::{IpPrefix, MacAddr};

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
    /// The prefix length of `ip`'s subnet. With `ip`, the vif answers DHCP (see
    /// [`VifRequest::gateway`] and the fields after it).
    #[serde(
        rename = "prefix-len",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub prefix_len: Option<u8>,
    /// DHCP: the pod's gateway, the vrouter (answered ARP for); default the subnet's first
    /// address.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gateway: Option<Ipv4Addr>,
    /// DHCP: DNS servers (option 6), at most 4.
    #[serde(rename = "dns-servers", default, skip_serializing_if = "Vec::is_empty")]
    pub dns_servers: Vec<Ipv4Addr>,
    /// DHCP: classless static routes (option 121), at most 16.
    #[serde(
        rename = "static-routes",
        default,
        skip_serializing_if = "Vec::is_empty"
    )]
    pub static_routes: Vec<StaticRoute>,
    /// DHCP: lease time in seconds (60..=4294967295, the last meaning infinite); default 86400.
    #[serde(
        rename = "lease-time",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub lease_time: Option<u32>,
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
            prefix_len: None,
            gateway: None,
            dns_servers: Vec::new(),
            static_routes: Vec::new(),
            lease_time: None,
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

/// A classless static route a vif's DHCP answers hand out: `prefix` via `via` (an address in
/// the vif's subnet).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StaticRoute {
    pub prefix: IpPrefix,
    pub via: Ipv4Addr,
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
    /// vhost-user: each queue pair up, the forwarding lcore serving it and what went through it.
    /// (Not `queues`: that is the configured count, in the same object.)
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub queue_pairs: Vec<VifQueue>,
}

/// One queue pair of a vhost-user vif, as `GET /vifs/{name}` shows it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct VifQueue {
    /// Queue pair number (vrings `2 * queue` and `2 * queue + 1`).
    pub queue: u32,
    /// The forwarding lcore serving both of its rings.
    pub lcore: u32,
    /// It is there because it was pinned there (`PUT /vifs/{name}/queues/{queue}`).
    #[serde(default)]
    pub pinned: bool,
    /// Packets vrouterd took from the guest's TX ring, and delivered into its RX ring.
    pub rx_packets: u64,
    pub tx_packets: u64,
}

/// `PUT /vifs/{name}/queues/{queue}`: the forwarding lcore that serves the queue pair from
/// now on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QueuePin {
    pub lcore: u32,
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

#[cfg(test)]
mod tests {
    use super::*;

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
                queue_pairs: Vec::new(),
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
