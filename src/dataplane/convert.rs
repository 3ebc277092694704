//! API objects as the forwarding plane holds them.

use std::net::IpAddr;

use control_api::api::{
    FlowAction as ApiFlowAction, FlowEntry, FlowTuple, Nexthop as ApiNexthop, PolicyAction, Proto,
    TunnelEncap as ApiEncap,
};
use control_api::DataplaneError;
use vrouter::flow;
use vrouter::tables::{Nexthop, TunnelEncap};

use super::{rejected, table_err, VrouterDataplane};

impl VrouterDataplane {
    pub(super) fn nexthop(&self, nh: &ApiNexthop) -> Result<Nexthop, DataplaneError> {
        let reg = self.registry();
        Ok(match nh {
            ApiNexthop::Discard => Nexthop::Discard,
            ApiNexthop::Receive => Nexthop::Receive,
            ApiNexthop::Encap { vif, dmac } => Nexthop::Encap {
                vif: Self::vif_index(&reg, vif)?,
                dmac: *dmac,
            },
            ApiNexthop::Tunnel {
                encap,
                vif,
                sip,
                dip,
                dmac,
                label,
            } => {
                let (IpAddr::V4(sip), IpAddr::V4(dip)) = (sip, dip) else {
                    return Err(rejected(
                        "tunnel endpoints must be IPv4 (the fabric is IPv4)",
                    ));
                };
                Nexthop::Tunnel {
                    encap: match encap {
                        ApiEncap::Vxlan => TunnelEncap::Vxlan,
                        ApiEncap::Mplsoudp => TunnelEncap::MplsUdp,
                        ApiEncap::Mplsogre => TunnelEncap::MplsGre,
                    },
                    vif: Self::vif_index(&reg, vif)?,
                    sip: *sip,
                    dip: *dip,
                    // None: resolved by ARP (the neighbour table), all zero here.
                    dmac: dmac.unwrap_or(vrouter::MacAddr([0; 6])),
                    label: *label,
                }
            }
            ApiNexthop::Ecmp { members } => Nexthop::ecmp(members).map_err(table_err)?,
        })
    }
}

/// The forwarding lcores' flow clock: milliseconds of TSC.
pub(crate) fn flow_clock_ms() -> u64 {
    pmd_shim::cycles::rdtsc() / (pmd_shim::cycles::tsc_hz() / 1000).max(1)
}

/// A policy of the API as the flow stage holds it.
pub(super) fn flow_policy(p: &control_api::api::Policy) -> Result<flow::Policy, DataplaneError> {
    let action = |a: PolicyAction| match a {
        PolicyAction::Allow => flow::Action::Allow,
        PolicyAction::Deny => flow::Action::Deny,
        PolicyAction::Agent => flow::Action::Agent,
    };
    let rules = |rs: &[control_api::api::PolicyRule]| -> Result<Vec<flow::Rule>, DataplaneError> {
        rs.iter()
            .map(|r| {
                Ok(flow::Rule {
                    action: action(r.action),
                    proto: match r.proto {
                        Proto::Any => None,
                        Proto::Number(n) => Some(n),
                    },
                    cidr: r
                        .cidr
                        .map(|c| flow::Cidr::new(c.addr(), c.prefix_len()))
                        .transpose()
                        .map_err(table_err)?,
                    ports: r.ports.map(|p| (p.first, p.last)),
                })
            })
            .collect()
    };
    Ok(flow::Policy {
        default: action(p.default),
        ingress: rules(&p.ingress)?,
        egress: rules(&p.egress)?,
    })
}

pub(super) fn flow_entry(f: &flow::FlowInfo, now_ms: u64) -> FlowEntry {
    let of = |v6: bool, a: u128| {
        if v6 {
            IpAddr::V6(std::net::Ipv6Addr::from(a))
        } else {
            IpAddr::V4(std::net::Ipv4Addr::from(a as u32))
        }
    };
    let addr = |a: u128| of(f.key.v6, a);
    FlowEntry {
        // The tuple it leaves with (floating IPv6, NAT66, IPv6 VIPs: of the key's family).
        translated: f.nat.map(|k| FlowTuple {
            vrf: u32::from(k.vrf),
            src: of(k.v6, k.src),
            dst: of(k.v6, k.dst),
            sport: k.sport,
            dport: k.dport,
        }),
        index: u64::from(f.index),
        vrf: u32::from(f.key.vrf),
        src: addr(f.key.src),
        dst: addr(f.key.dst),
        proto: f.key.proto,
        sport: f.key.sport,
        dport: f.key.dport,
        action: match f.verdict {
            flow::FlowVerdict::Forward => ApiFlowAction::Forward,
            flow::FlowVerdict::Drop => ApiFlowAction::Drop,
        },
        reverse: f.reverse.map(u64::from),
        packets: f.packets,
        bytes: f.bytes,
        tcp_state: (f.key.proto == 6).then(|| {
            match f.tcp {
                flow::TcpState::None => "none",
                flow::TcpState::Syn => "syn",
                flow::TcpState::Established => "established",
                flow::TcpState::Fin => "fin",
                flow::TcpState::Rst => "rst",
            }
            .to_owned()
        }),
        idle_ms: now_ms.saturating_sub(f.last_seen),
    }
}
