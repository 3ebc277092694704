//! The routing decision: a route or bridge target through the flow hook to a nexthop (ECMP
//! resolved by the flow hash), and the rewrite for it: a local vif, a tunnel, the host, or an
//! ICMP error back to the sender.

use super::memo::{EncapMemo, TunnelMemo};
use super::reply::{self, IcmpError};
use super::rewrite::{
    decrement_ttl, decrement_ttl_in, shift_offload, translate, trim_padding, tunnel_payload,
    wire_len,
};
use super::{encap, Ctx, FlowAction, FlowHook, Verdict};
use crate::buf::PacketBuf;
use crate::meta::{PacketMeta, L3};
use crate::stats::DropReason;
use crate::tables::{Nexthop, RouteTarget, TunnelEncap, Vif, Vrf, FABRIC_VRF};
use crate::wire::{ethernet, icmp, ipv4, MacAddr};

impl<'a, F: FlowHook> Ctx<'a, F> {
    /// Whether the nexthop just resolved was the target's own, not an ECMP member picked by
    /// hash: only then does the target id name the rewrite, so it may be memoised under it.
    #[inline(always)]
    pub(super) fn resolved_directly(&self) -> bool {
        !matches!(self.memo.nh, Some((_, Nexthop::Ecmp { .. })))
    }

    /// The nexthop for `id`, with ECMP resolved to one member by `m`'s flow hash.
    #[inline(always)]
    pub(super) fn resolve(&mut self, id: u32, m: &PacketMeta) -> Result<Nexthop, DropReason> {
        let nh = match self.memo.nh {
            Some((memo_id, nh)) if memo_id == id => nh,
            _ => {
                let nh = self
                    .tables
                    .nexthops
                    .get(id)
                    .ok_or(DropReason::InvalidNexthop)?;
                self.memo.nh = Some((id, nh));
                nh
            }
        };
        if let Nexthop::Ecmp { members, count } = nh {
            let m = Nexthop::ecmp_pick(&members, count, m.flow_hash())
                .ok_or(DropReason::EcmpNoMember)?;
            return match self.tables.nexthops.get(u32::from(m)) {
                Some(nh @ (Nexthop::Encap { .. } | Nexthop::Tunnel { .. })) => self.neighbour(nh),
                _ => Err(DropReason::EcmpNoMember),
            };
        }
        self.neighbour(nh)
    }

    /// A tunnel nexthop without a `dmac` (all zero) sends to its far end's MAC from the
    /// neighbour table; unresolved, the packet is dropped (the resolver is asking by ARP).
    #[inline(always)]
    fn neighbour(&self, nh: Nexthop) -> Result<Nexthop, DropReason> {
        match nh {
            Nexthop::Tunnel {
                encap,
                vif,
                sip,
                dip,
                dmac,
                label,
            } if dmac.to_u64() == 0 => match self.tables.neighbours.mac(dip) {
                Some(dmac) => Ok(Nexthop::Tunnel {
                    encap,
                    vif,
                    sip,
                    dip,
                    dmac,
                    label,
                }),
                None => Err(DropReason::NeighbourUnresolved),
            },
            nh => Ok(nh),
        }
    }

    pub(super) fn bridge<B: PacketBuf>(
        &mut self,
        vrf: &Vrf,
        m: &PacketMeta,
        dmac: MacAddr,
        b: &mut B,
    ) -> Verdict {
        let Some(t) = vrf.bridge.get(dmac) else {
            return Verdict::Drop(DropReason::BridgeMiss);
        };
        let t = match self.flow.on_lookup(m, b.data_mut(), t) {
            FlowAction::Forward(t) => t,
            FlowAction::Nat(t, x) => match translate(b, m, x) {
                Ok(()) => {
                    self.stats.nat_translated.add(1);
                    t
                }
                Err(r) => return Verdict::Drop(r),
            },
            FlowAction::Nat2(t, x, y) => {
                match translate(b, m, x).and_then(|()| translate(b, m, y)) {
                    Ok(()) => {
                        self.stats.nat_translated.add(1);
                        t
                    }
                    Err(r) => return Verdict::Drop(r),
                }
            }
            FlowAction::Drop => return Verdict::Drop(DropReason::FlowDrop),
            FlowAction::Refused(r) => return Verdict::Drop(r),
            FlowAction::Agent => return Verdict::Agent(super::TrapReason::NewFlow),
        };
        let nh = match self.resolve(t.nexthop, m) {
            Ok(nh) => nh,
            Err(r) => return Verdict::Drop(r),
        };
        match nh {
            // A bridged frame may keep its 802.1Q tag on top of the MTU.
            Nexthop::Encap { vif, .. } => match self.topo.vif(vif) {
                Some(out)
                    if usize::from(out.mtu) + ethernet::HEADER_LEN + ethernet::VLAN_TAG_LEN
                        >= wire_len(b, m) =>
                {
                    Verdict::Tx(vif)
                }
                Some(_) => Verdict::Drop(DropReason::Mtu),
                None => Verdict::Drop(DropReason::InvalidVif),
            },
            Nexthop::Tunnel {
                encap: TunnelEncap::Vxlan,
                vif,
                sip,
                dip,
                dmac,
                label,
            } => {
                // The tunnel's own VNI (an ECMP member toward a node with its own) wins.
                let Some(vni) = label.or(t.label) else {
                    return Verdict::Drop(DropReason::InvalidVni);
                };
                let o = encap::Outer {
                    encap: TunnelEncap::Vxlan,
                    sip,
                    dip,
                    dmac,
                    label: vni,
                    mpls_ttl: 0,
                };
                self.tunnel(vif, &o, m, b, None, None)
            }
            Nexthop::Tunnel { .. } => Verdict::Drop(DropReason::UnsupportedTunnel),
            Nexthop::Receive => Verdict::Host,
            Nexthop::Discard => Verdict::Drop(DropReason::DiscardNexthop),
            Nexthop::Ecmp { .. } => Verdict::Drop(DropReason::EcmpNoMember),
        }
    }

    /// L3: route lookup in `vrf`, flow hook, nexthop, rewrite. `local` is the ingress vif when
    /// the packet came from a pod (ICMP errors go back to it). Inlined into the burst loop for
    /// its common ending (the memoised local vif); everything else is in [`Ctx::route_nexthop`].
    #[inline(always)]
    pub(super) fn route<B: PacketBuf>(
        &mut self,
        vrf: &Vrf,
        m: &mut PacketMeta,
        b: &mut B,
        local: Option<&Vif>,
        looked_up: Option<Option<RouteTarget>>,
    ) -> Verdict {
        let target = match (looked_up, m.l3) {
            (Some(t), _) => t,
            (None, L3::Ipv4) => vrf.route_v4(m.dst_v4()),
            (None, L3::Ipv6) => vrf.route_v6(m.dst),
            _ => return Verdict::Drop(DropReason::UnsupportedEthertype),
        };
        let Some(target) = target.or_else(|| self.flow.unrouted(m, b.data())) else {
            return Verdict::Drop(DropReason::NoRoute);
        };
        let t = match self.flow.on_lookup(m, b.data_mut(), target) {
            FlowAction::Forward(t) => t,
            // A packet about to expire keeps its header: the ICMP error sent back to the pod
            // must quote what the pod sent.
            FlowAction::Nat(t, _) | FlowAction::Nat2(t, _, _) if m.ttl <= 1 => t,
            FlowAction::Nat(t, x) => match translate(b, m, x) {
                Ok(()) => {
                    self.stats.nat_translated.add(1);
                    t
                }
                Err(r) => return Verdict::Drop(r),
            },
            FlowAction::Nat2(t, x, y) => {
                match translate(b, m, x).and_then(|()| translate(b, m, y)) {
                    Ok(()) => {
                        self.stats.nat_translated.add(1);
                        t
                    }
                    Err(r) => return Verdict::Drop(r),
                }
            }
            FlowAction::Drop => return Verdict::Drop(DropReason::FlowDrop),
            FlowAction::Refused(r) => return Verdict::Drop(r),
            FlowAction::Agent => return Verdict::Agent(super::TrapReason::NewFlow),
        };
        if let Some(e) = self.memo.encap {
            // Everything the slow path below checks, in the same order of outcomes.
            if e.nexthop == t.nexthop && m.ttl > 1 && m.vlan.is_none() && m.mtu_len <= e.mtu {
                if let Err(r) = trim_padding(b, m) {
                    return Verdict::Drop(r);
                }
                let d = b.data_mut();
                decrement_ttl_in(d, m);
                if let Some(eth) = d.first_chunk_mut::<{ ethernet::field::ADDRESSES.end }>() {
                    *eth = e.macs;
                }
                return Verdict::Tx(e.vif);
            }
        }
        if let Some((e, label)) = self
            .memo
            .tunnel
            .as_ref()
            .and_then(|e| Some((e, e.label.or(t.label)?)))
        {
            let encap = e.tpl.encap();
            if e.nexthop == t.nexthop
                && m.ttl > 1
                && m.vlan.is_none()
                && encap::outer_l3_len(encap, m.mtu_len) <= usize::from(e.mtu)
            {
                let (vif, vrouter_mac) = (e.vif, self.topo.fabric.vrouter_mac);
                if let Err(r) = trim_padding(b, m) {
                    return Verdict::Drop(r);
                }
                let ttl = match tunnel_payload(b, m, encap, vrouter_mac) {
                    Ok(ttl) => ttl,
                    Err(r) => return Verdict::Drop(r),
                };
                *self.ip_id = self.ip_id.wrapping_add(1);
                return match e.tpl.push(b, label, ttl, m.flow_hash(), *self.ip_id) {
                    Ok(()) => Verdict::Tx(vif),
                    Err(r) => Verdict::Drop(r),
                };
            }
        }
        self.route_nexthop(t, m, b, local)
    }

    /// The rest of [`Ctx::route`]: resolve the target's nexthop and rewrite for it.
    #[inline(never)]
    pub(super) fn route_nexthop<B: PacketBuf>(
        &mut self,
        t: RouteTarget,
        m: &mut PacketMeta,
        b: &mut B,
        local: Option<&Vif>,
    ) -> Verdict {
        let nh = match self.resolve(t.nexthop, m) {
            Ok(nh) => nh,
            Err(r) => return Verdict::Drop(r),
        };
        let out = match nh {
            Nexthop::Receive => return Verdict::Host,
            Nexthop::Discard => return Verdict::Drop(DropReason::DiscardNexthop),
            Nexthop::Ecmp { .. } => return Verdict::Drop(DropReason::EcmpNoMember),
            Nexthop::Encap { vif, .. } | Nexthop::Tunnel { vif, .. } => match self.topo.vif(vif) {
                Some(v) => *v,
                None => return Verdict::Drop(DropReason::InvalidVif),
            },
        };
        if m.ttl <= 1 {
            return self.icmp_error(
                b,
                m,
                local,
                IcmpError::TimeExceeded,
                DropReason::TtlExceeded,
            );
        }
        // Strip an 802.1Q tag: routed frames leave untagged.
        if m.vlan.is_some() {
            b.data_mut()
                .copy_within(ethernet::field::ADDRESSES, ethernet::VLAN_TAG_LEN);
            if b.adj(ethernet::VLAN_TAG_LEN).is_err() {
                return Verdict::Drop(DropReason::Truncated);
            }
            if shift_offload(b, ethernet::VLAN_TAG_LEN).is_err() {
                return Verdict::Drop(DropReason::Offload);
            }
            ethernet::Frame::new_unchecked(b.data_mut()).set_ethertype(m.ethertype);
            m.l3_off -= ethernet::VLAN_TAG_LEN as u16;
            m.l4_off -= ethernet::VLAN_TAG_LEN as u16;
            m.vlan = None;
        }
        if let Err(r) = trim_padding(b, m) {
            return Verdict::Drop(r);
        }
        let vrouter_mac = self.topo.fabric.vrouter_mac;
        match nh {
            Nexthop::Encap { vif, dmac } => {
                if self.resolved_directly() {
                    let mut macs = [0u8; ethernet::field::ADDRESSES.end];
                    let mut e = ethernet::Frame::new_unchecked(&mut macs[..]);
                    e.set_dst(dmac);
                    e.set_src(vrouter_mac);
                    self.memo.encap = Some(EncapMemo {
                        nexthop: t.nexthop,
                        vif,
                        mtu: out.mtu,
                        macs,
                    });
                }
                if m.mtu_len > out.mtu {
                    return self.too_big(b, m, local, out.mtu);
                }
                decrement_ttl(b, m);
                let mut e = ethernet::Frame::new_unchecked(b.data_mut());
                e.set_dst(dmac);
                e.set_src(vrouter_mac);
                Verdict::Tx(vif)
            }
            Nexthop::Tunnel {
                encap,
                vif,
                sip,
                dip,
                dmac,
                label: own,
            } => {
                // The tunnel's own label (an ECMP member toward a node that allocated its own)
                // wins over the route's.
                let Some(label) = own.or(t.label) else {
                    return Verdict::Drop(if encap == TunnelEncap::Vxlan {
                        DropReason::InvalidVni
                    } else {
                        DropReason::InvalidLabel
                    });
                };
                let outer_l3 = encap::outer_l3_len(encap, m.mtu_len);
                if outer_l3 > usize::from(out.mtu) {
                    let inner_mtu =
                        usize::from(out.mtu).saturating_sub(outer_l3 - usize::from(m.mtu_len));
                    return self.too_big(b, m, local, inner_mtu as u16);
                }
                let ttl = match tunnel_payload(b, m, encap, vrouter_mac) {
                    Ok(ttl) => ttl,
                    Err(r) => return Verdict::Drop(r),
                };
                let o = encap::Outer {
                    encap,
                    sip,
                    dip,
                    dmac,
                    label,
                    mpls_ttl: ttl,
                };
                let memo_for = self.resolved_directly().then_some((t.nexthop, own));
                self.tunnel(vif, &o, m, b, Some(out), memo_for)
            }
            _ => Verdict::Drop(DropReason::InvalidNexthop),
        }
    }

    pub(super) fn tunnel<B: PacketBuf>(
        &mut self,
        vif: u16,
        o: &encap::Outer,
        m: &PacketMeta,
        b: &mut B,
        out: Option<Vif>,
        memo_for: Option<(u32, Option<u32>)>,
    ) -> Verdict {
        let out = match out.or_else(|| self.topo.vif(vif).copied()) {
            Some(v) if v.vrf == FABRIC_VRF => v,
            Some(_) => return Verdict::Drop(DropReason::InvalidTunnel),
            None => return Verdict::Drop(DropReason::InvalidVif),
        };
        if wire_len(b, m) + encap::overhead(o.encap) - ethernet::HEADER_LEN > usize::from(out.mtu) {
            return Verdict::Drop(DropReason::Mtu);
        }
        *self.ip_id = self.ip_id.wrapping_add(1);
        let tpl = match &self.memo.tpl {
            Some((v, memo_o, t)) if *v == vif && memo_o.same_tunnel(o) => t,
            _ => {
                let t = encap::Template::new(o, &out, &self.topo.fabric);
                &self.memo.tpl.insert((vif, *o, t)).2
            }
        };
        if let Some((nexthop, label)) = memo_for {
            self.memo.tunnel = Some(TunnelMemo {
                nexthop,
                label,
                vif,
                mtu: out.mtu,
                tpl: *tpl,
            });
        }
        match tpl.push(b, o.label, o.mpls_ttl, m.flow_hash(), *self.ip_id) {
            Ok(()) => Verdict::Tx(vif),
            Err(r) => Verdict::Drop(r),
        }
    }

    pub(super) fn too_big<B: PacketBuf>(
        &mut self,
        b: &mut B,
        m: &PacketMeta,
        local: Option<&Vif>,
        mtu: u16,
    ) -> Verdict {
        if !m.dont_frag {
            // No fragmentation in the data path.
            return Verdict::Drop(DropReason::Mtu);
        }
        self.icmp_error(b, m, local, IcmpError::TooBig(mtu), DropReason::Mtu)
    }

    fn icmp_error<B: PacketBuf>(
        &mut self,
        b: &mut B,
        m: &PacketMeta,
        local: Option<&Vif>,
        kind: IcmpError,
        otherwise: DropReason,
    ) -> Verdict {
        // Never answer an ICMP error with one (RFC 1812 4.3.2.7), and only toward a local vif.
        let Some(vif) = local else {
            return Verdict::Drop(otherwise);
        };
        if is_icmp_error(b.data(), m) {
            return Verdict::Drop(otherwise);
        }
        let f = &self.topo.fabric;
        let from6 = reply::link_local(f.vrouter_mac);
        match reply::icmp_error(b, m, kind, f.vrouter_mac, f.fabric_ip, from6) {
            Ok(()) => {
                // Counted as the drop it replaces, under the "ICMP sent" variant.
                self.stats.count_drop(match otherwise {
                    DropReason::TtlExceeded => DropReason::TtlExceededIcmpSent,
                    _ => DropReason::MtuIcmpSent,
                });
                Verdict::Tx(vif.index)
            }
            Err(r) => Verdict::Drop(r),
        }
    }
}

/// Whether the packet is an ICMP error (ICMPv4 other than echo; ICMPv6 types below 128).
pub(super) fn is_icmp_error(data: &[u8], m: &PacketMeta) -> bool {
    let t = data
        .get(usize::from(m.l4_off) + icmp::field::TYPE.start)
        .copied()
        .unwrap_or(0);
    match m.proto {
        ipv4::proto::ICMP => !matches!(t, icmp::v4::ECHO_REQUEST | icmp::v4::ECHO_REPLY),
        ipv4::proto::ICMPV6 => t < ICMPV6_INFORMATIONAL,
        _ => false,
    }
}

/// ICMPv6 types from here on are informational; those below are errors (RFC 4443 2.1).
const ICMPV6_INFORMATIONAL: u8 = 128;
