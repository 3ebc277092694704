//! What one burst remembers between its packets, so that the common case (a burst of packets
//! to one place) looks its nexthop up and builds its rewrite once.

use super::encap;
use crate::meta::{PacketMeta, L3};
use crate::tables::{Nexthop, RouteTarget, Vrf};
use crate::wire::ethernet;

/// What one burst remembers between its packets. Valid for one burst only: the next burst may
/// see a newer version of the tables, so it starts from `BurstMemo::default()`.
#[derive(Default)]
pub(super) struct BurstMemo {
    /// The last nexthop read in this burst: packets of a burst mostly share nexthops, and a
    /// burst may see one consistent version of a nexthop.
    pub(super) nh: Option<(u32, Nexthop)>,
    /// The outer-header template of the last tunnel used in this burst.
    pub(super) tpl: Option<(u16, encap::Outer, encap::Template)>,
    /// The last route target that led straight (not through ECMP) to a local vif, with
    /// everything its rewrite needs: the common case of a burst to one pod costs one compare.
    pub(super) encap: Option<EncapMemo>,
    /// The same for the last route target that led straight to a tunnel.
    pub(super) tunnel: Option<TunnelMemo>,
    /// The last inner route looked up after a VXLAN decap. A pod-bound burst is looked up
    /// back to back before the packets are handled, so the lookups overlap; a decapsulated
    /// packet is looked up only once its outer headers are off, one after the other, and a
    /// burst of them to one pod would wait on the same lookup each time.
    pub(super) decap_route: Option<DecapRoute>,
    /// The last VNI looked up after a VXLAN decap, and its VRF: the VNI table is hashed, and
    /// its lookup is on the chain of dependent loads each decapsulated packet waits on before
    /// its inner route. A burst sees one version of it, as of its first packet with that VNI.
    pub(super) vni: Option<(u32, u16)>,
}

/// See `BurstMemo::decap_route`.
#[derive(Clone, Copy)]
pub(super) struct DecapRoute {
    vrf: u16,
    l3: L3,
    dst: u128,
    target: Option<RouteTarget>,
}

impl BurstMemo {
    /// The route for `m`'s destination in VRF `id` (`vrf`), remembered for the next packet.
    #[inline(always)]
    pub(super) fn decap_route(
        &mut self,
        id: u16,
        vrf: &Vrf,
        m: &PacketMeta,
    ) -> Option<RouteTarget> {
        match self.decap_route {
            Some(r) if r.vrf == id && r.l3 == m.l3 && r.dst == m.dst => r.target,
            _ => {
                let target = if m.l3 == L3::Ipv4 {
                    vrf.route_v4(m.dst_v4())
                } else {
                    vrf.route_v6(m.dst)
                };
                self.decap_route = Some(DecapRoute {
                    vrf: id,
                    l3: m.l3,
                    dst: m.dst,
                    target,
                });
                target
            }
        }
    }
}

/// See `BurstMemo::encap`.
#[derive(Clone, Copy)]
pub(super) struct EncapMemo {
    pub(super) nexthop: u32,
    pub(super) vif: u16,
    pub(super) mtu: u16,
    /// Destination then source MAC, as they go on the wire.
    pub(super) macs: [u8; ethernet::field::ADDRESSES.end],
}

/// See `BurstMemo::tunnel`.
pub(super) struct TunnelMemo {
    pub(super) nexthop: u32,
    /// The tunnel's own label, pushed instead of the route's when set.
    pub(super) label: Option<u32>,
    /// The fabric vif and its MTU.
    pub(super) vif: u16,
    pub(super) mtu: u16,
    pub(super) tpl: encap::Template,
}
