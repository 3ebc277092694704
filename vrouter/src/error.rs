//! Errors of the control-side operations (table updates, configuration). The fast path never
//! returns these: it returns verdicts and counts drops by reason.

use std::net::IpAddr;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    #[error(
        "invalid MAC address {0:?}: expected six hex octets separated by ':', like 02:00:00:00:00:01"
    )]
    BadMac(String),
    #[error("VRF {0} is out of range (0..={max})", max = crate::tables::MAX_VRFS - 1)]
    VrfOutOfRange(u32),
    #[error("VRF {0} does not exist")]
    NoSuchVrf(u16),
    #[error("VRF {0} still has vifs or VNIs pointing at it")]
    VrfInUse(u16),
    #[error("vif index {0} is out of range (0..{max})", max = crate::stats::MAX_VIFS)]
    VifOutOfRange(u32),
    #[error("vif {0} does not exist")]
    NoSuchVif(u16),
    #[error("nexthop table is full (limit {capacity} ids, 0..{capacity}): id {id} does not fit")]
    NexthopOutOfRange { id: u32, capacity: u32 },
    #[error("nexthop {0} does not exist")]
    NoSuchNexthop(u32),
    #[error("ECMP nexthop has {0} members; 1..={max} are allowed", max = crate::tables::nexthop::MAX_ECMP_MEMBERS)]
    EcmpMemberCount(usize),
    #[error("ECMP member {0} must be an encap or tunnel nexthop")]
    EcmpBadMember(u32),
    #[error("MPLS label {0} is out of range (16..=1048575; 0-15 are reserved)")]
    LabelOutOfRange(u32),
    #[error("VXLAN VNI {0} is out of range (1..=16777215)")]
    VniOutOfRange(u32),
    #[error("prefix {addr}/{len} has an invalid length (max {max})")]
    PrefixLen { addr: IpAddr, len: u8, max: u8 },
    #[error("prefix {addr}/{len} has host bits set")]
    PrefixHostBits { addr: IpAddr, len: u8 },
    /// `limit` counts 8-bit trie groups (2 KiB each): one below every /16 (IPv4) holding
    /// longer routes, one more below every /24 holding longer ones, and so on.
    #[error("{family} route table of VRF {vrf} is full (limit {limit} trie groups)")]
    RouteTableFull {
        vrf: u16,
        family: &'static str,
        limit: usize,
    },
    #[error("{table} table is full (limit {capacity} entries)")]
    TableFull {
        table: &'static str,
        capacity: usize,
    },
    #[error("bridge table of VRF {vrf} is full (limit {capacity} entries)")]
    BridgeTableFull { vrf: u16, capacity: usize },
    #[error("no route {addr}/{len} in VRF {vrf}")]
    NoSuchRoute { vrf: u16, addr: IpAddr, len: u8 },
    #[error("no {table} entry {key}")]
    NoSuchEntry { table: &'static str, key: String },
    #[error("label/VNI {0} does not fit the 24 bits a tunnel carries")]
    RouteLabelOutOfRange(u32),
    #[error("bad NAT pool range: {0}")]
    NatBadRange(String),
    #[error("NAT pool {pool} shares addresses with pool {other} in the same VRF")]
    NatPoolOverlap { pool: String, other: String },
    #[error("NAT pool {0} does not exist")]
    NoSuchNatPool(String),
    #[error("NAT pool {0} has VRFs attached to it: detach them first")]
    NatPoolInUse(String),
    #[error(
        "VRF {vrf} cannot be attached to NAT pool {pool}, whose addresses are in VRF {vrf} itself"
    )]
    NatSameVrf { vrf: u16, pool: String },
    #[error("{inside} in VRF {vrf} has floating IP {outside} already")]
    NatFloatingTaken {
        inside: std::net::IpAddr,
        vrf: u16,
        outside: std::net::IpAddr,
    },
    #[error("bad service VIP: {0}")]
    NatBadService(String),
    #[error("floating IP {outside} is an address of NAT pool {pool}")]
    NatFloatingInPool {
        outside: std::net::IpAddr,
        pool: String,
    },
    #[error("bad floating IP: {0}")]
    NatBadFloating(String),
}
