//! What a packet from a pod or from the fabric is: ARP and neighbour solicitations the vrouter
//! answers, routed or bridged pod traffic, tunnels to decapsulate, or traffic for the host.

use super::rewrite::{shift_offload, translate};
use super::{dhcp, reply, Ctx, FlowHook, Inbound, Verdict};
use crate::buf::PacketBuf;
use crate::meta::{self, PacketMeta, L3};
use crate::stats::DropReason;
use crate::tables::{LabelTarget, Nexthop, RouteTarget, Topology, Vif, Vrf};
use crate::wire::dhcp::Lease;
use crate::wire::{arp, ethernet, gre, ipv4, mpls, udp, vxlan};
use std::net::Ipv6Addr;

impl<'a, F: FlowHook> Ctx<'a, F> {
    /// The VRF, borrowed from the burst's topology snapshot (no reference count touched).
    #[inline(always)]
    pub(super) fn vrf(&self, id: u16) -> Result<&'a Vrf, DropReason> {
        let topo: &'a Topology = self.topo;
        topo.vrf(id).map(|v| &**v).ok_or(DropReason::InvalidVrf)
    }

    /// Whether the vrouter answers ARP / ND for `dst` in `vrf`: it has a route that does not
    /// discard.
    /// Never for an address that routes back to the asking vif itself: that is the asker's own
    /// address (duplicate address detection, ARP probes), and answering would make it give the
    /// address up.
    fn proxies(&self, target: Option<RouteTarget>, asker: u16) -> bool {
        match target.and_then(|t| self.tables.nexthops.get(t.nexthop)) {
            None | Some(Nexthop::Discard) => false,
            Some(Nexthop::Encap { vif, .. }) => vif != asker,
            Some(_) => true,
        }
    }

    pub(super) fn pod_ingress<B: PacketBuf>(
        &mut self,
        vif: &Vif,
        m: &mut PacketMeta,
        b: &mut B,
    ) -> Verdict {
        let vrf = match self.vrf(vif.vrf) {
            Ok(v) => v,
            Err(r) => return Verdict::Drop(r),
        };
        let dmac = ethernet::Frame::new_unchecked(b.data()).dst();
        let vrouter_mac = self.topo.fabric.vrouter_mac;
        if m.l3 == L3::Arp {
            return self.pod_arp(vif, vrf, m, b);
        }
        if m.l3 == L3::Ipv6 {
            if let Some(ra) = self.topo.ra(vif.index) {
                if reply::is_router_solicit(b.data(), m) {
                    let ra = *ra;
                    return self.replied(reply::ra_reply(b, m, &ra, vrouter_mac), vif);
                }
            }
            if let Some(t) = reply::ns_target(b.data(), m) {
                let src = Ipv6Addr::from(m.src);
                // The vrouter's own link-local address: the router its advertisements name.
                let own = t == reply::link_local(vrouter_mac);
                if t != src && (own || self.proxies(vrf.route_v6(u128::from(t)), vif.index)) {
                    return self.replied(reply::na_reply(b, m, t, vrouter_mac), vif);
                }
                return Verdict::Drop(DropReason::ArpNotForUs);
            }
        }
        if dmac == vrouter_mac {
            return self.route(vrf, m, b, Some(vif), None);
        }
        if dmac.is_multicast() {
            return Verdict::Drop(DropReason::Multicast);
        }
        self.bridge(vrf, m, dmac, b)
    }

    /// An answer written into the asking packet goes back out of the vif it came from.
    fn replied(&self, answer: Result<(), DropReason>, vif: &Vif) -> Verdict {
        match answer {
            Ok(()) => {
                self.stats.replies.add(1);
                Verdict::Tx(vif.index)
            }
            Err(r) => Verdict::Drop(r),
        }
    }

    /// DHCP for the vif's server: answered from its lease, sent back out of it.
    pub(super) fn dhcp<B: PacketBuf>(
        &mut self,
        vif: &Vif,
        lease: Option<&Lease>,
        m: &PacketMeta,
        b: &mut B,
    ) -> Verdict {
        let Some(lease) = lease else {
            // No address to hand out: the agent's (dropped as dhcp_no_address without one).
            return Verdict::Agent(super::TrapReason::Dhcp);
        };
        match dhcp::answer(b, m, lease, self.topo.fabric.vrouter_mac) {
            Ok(dhcp::Answer::Replied) => self.replied(Ok(()), vif),
            Ok(dhcp::Answer::Ignored) => Verdict::Drop(DropReason::DhcpIgnored),
            Err(r) => Verdict::Drop(r),
        }
    }

    fn pod_arp<B: PacketBuf>(
        &mut self,
        vif: &Vif,
        vrf: &Vrf,
        m: &PacketMeta,
        b: &mut B,
    ) -> Verdict {
        let l3 = usize::from(m.l3_off);
        let a = arp::Packet::new_unchecked(&b.data()[l3..]);
        let (op, sip, tip) = (a.operation(), a.sender_ip(), a.target_ip());
        // The vif's DHCP gateway is the vrouter's, routed or not.
        let gateway = self.topo.dhcp(vif.index).map(|l| l.gateway);
        // A gratuitous ARP (request or reply): the pod announcing its address here, as a guest
        // does after a live migration. The agent's to act on (dropped as before without one).
        if tip == sip && !sip.is_unspecified() && (op == arp::OP_REQUEST || op == arp::OP_REPLY) {
            return Verdict::Agent(super::TrapReason::Garp);
        }
        if op != arp::OP_REQUEST
            || tip == sip
            || (gateway != Some(tip) && !self.proxies(vrf.route_v4(u32::from(tip)), vif.index))
        {
            return Verdict::Drop(DropReason::ArpNotForUs);
        }
        self.replied(
            reply::arp_reply(b, l3, tip, self.topo.fabric.vrouter_mac),
            vif,
        )
    }

    pub(super) fn fabric_ingress<B: PacketBuf>(
        &mut self,
        vif: &Vif,
        m: &PacketMeta,
        b: &mut B,
    ) -> Verdict {
        let fabric_ip = self.topo.fabric.fabric_ip;
        let l3 = usize::from(m.l3_off);
        match m.l3 {
            L3::Arp => {
                let a = arp::Packet::new_unchecked(&b.data()[l3..]);
                // Any ARP from an underlay neighbour we resolve tells its MAC (a reply to our
                // request, its own request, a gratuitous one after its MAC changed).
                self.tables.neighbours.learn(a.sender_ip(), a.sender_mac());
                if a.operation() == arp::OP_REQUEST
                    && a.target_ip() == fabric_ip
                    && !fabric_ip.is_unspecified()
                {
                    return self.replied(reply::arp_reply(b, l3, fabric_ip, vif.mac), vif);
                }
                Verdict::Host
            }
            L3::Ipv4 if m.dst_v4() == u32::from(fabric_ip) => {
                let tunnel = matches!(
                    (m.proto, m.dport),
                    (ipv4::proto::UDP, udp::PORT_VXLAN | udp::PORT_MPLS_UDP)
                        | (ipv4::proto::GRE, _)
                );
                if m.fragment {
                    // A later fragment has no port to tell; a tunnel packet must not be fragmented.
                    if tunnel || m.proto == ipv4::proto::UDP {
                        return Verdict::Drop(DropReason::FragmentedTunnel);
                    }
                    return Verdict::Host;
                }
                let l4 = usize::from(m.l4_off);
                // The tunnel packet ends where the outer IP says: drop any Ethernet padding
                // (from the end of the whole frame: a jumbo one continues past its first
                // segment).
                let end = usize::from(m.l3_off) + usize::from(m.l3_len);
                if b.trim(b.frame_len().saturating_sub(end)).is_err() {
                    return Verdict::Drop(DropReason::Truncated);
                }
                match (m.proto, m.dport) {
                    (ipv4::proto::UDP, udp::PORT_VXLAN) => {
                        self.decap_vxlan(l4 + udp::HEADER_LEN, b)
                    }
                    (ipv4::proto::UDP, udp::PORT_MPLS_UDP) => {
                        self.decap_mpls(l4 + udp::HEADER_LEN, b)
                    }
                    (ipv4::proto::GRE, _) => {
                        let g = match gre::Packet::new_checked(&b.data()[l4..]) {
                            Ok(g) => g,
                            Err(e) => return Verdict::Drop(e.into()),
                        };
                        if g.protocol() != ethernet::ethertype::MPLS {
                            return Verdict::Drop(DropReason::UnsupportedTunnel);
                        }
                        let off = l4 + g.header_len();
                        self.decap_mpls(off, b)
                    }
                    _ => Verdict::Host,
                }
            }
            L3::Ipv4 | L3::Ipv6 => self.fabric_nat(m, b),
            _ => Verdict::Host,
        }
    }

    /// A plain IPv4 or IPv6 packet from the fabric: a reply to a source-NAT flow, an ICMP error about
    /// one of its packets, or a packet to a floating IP, is translated and routed in the pod's
    /// VRF (no ICMP error goes back to the fabric); anything else is the host's.
    fn fabric_nat<B: PacketBuf>(&mut self, m: &PacketMeta, b: &mut B) -> Verdict {
        let (vrf_id, x, source) = match self.flow.on_fabric(m, b.data()) {
            Inbound::Host => return Verdict::Host,
            Inbound::Drop(r) => return Verdict::Drop(r),
            Inbound::Translate(vrf, x) => (vrf, x, None),
            Inbound::Translate2(vrf, x, y) => (vrf, x, Some(y)),
        };
        let vrf = match self.vrf(vrf_id) {
            Ok(v) => v,
            Err(r) => return Verdict::Drop(r),
        };
        if let Err(r) = translate(b, m, x) {
            return Verdict::Drop(r);
        }
        if let Some(y) = source {
            if let Err(r) = translate(b, m, y) {
                return Verdict::Drop(r);
            }
        }
        self.stats.nat_translated.add(1);
        let mut m = *m;
        m.dst = x.addr;
        m.vrf = vrf_id;
        let route = if m.l3 == L3::Ipv6 {
            vrf.route_v6(x.addr)
        } else {
            vrf.route_v4(x.addr as u32)
        };
        let Some(t) = route else {
            return Verdict::Drop(DropReason::NoRoute);
        };
        self.route_nexthop(t, &mut m, b, None)
    }

    fn decap_vxlan<B: PacketBuf>(&mut self, off: usize, b: &mut B) -> Verdict {
        let vni = match vxlan::Packet::new_checked(&b.data()[off..]) {
            Ok(v) => v.vni(),
            Err(e) => return Verdict::Drop(e.into()),
        };
        // A burst from the fabric mostly carries one VNI: look it up once.
        let vrf_id = match self.memo.vni {
            Some((v, id)) if v == vni => id,
            _ => {
                let Some(id) = self.tables.vnis.get(vni) else {
                    return Verdict::Drop(DropReason::InvalidVni);
                };
                self.memo.vni = Some((vni, id));
                id
            }
        };
        let vrf = match self.vrf(vrf_id) {
            Ok(v) => v,
            Err(r) => return Verdict::Drop(r),
        };
        if b.adj(off + vxlan::HEADER_LEN).is_err() {
            return Verdict::Drop(DropReason::Truncated);
        }
        if shift_offload(b, off + vxlan::HEADER_LEN).is_err() {
            return Verdict::Drop(DropReason::Offload);
        }
        // The inner frame's headers are in the first segment; a jumbo frame's payload
        // continues in further ones.
        let mut m = PacketMeta::default();
        if let Err(r) = meta::parse_frame_into(b.data(), b.frame_len(), &mut m) {
            return Verdict::Drop(r);
        }
        m.vrf = vrf_id;
        let dmac = ethernet::Frame::new_unchecked(b.data()).dst();
        if dmac == self.topo.fabric.vrouter_mac {
            let target = match m.l3 {
                L3::Ipv4 | L3::Ipv6 => Some(self.memo.decap_route(vrf_id, vrf, &m)),
                _ => None,
            };
            return self.route(vrf, &mut m, b, None, target);
        }
        if dmac.is_multicast() {
            return Verdict::Drop(DropReason::Multicast);
        }
        self.bridge(vrf, &m, dmac, b)
    }

    fn decap_mpls<B: PacketBuf>(&mut self, off: usize, b: &mut B) -> Verdict {
        let label = match mpls::Entry::new_checked(&b.data()[off..]) {
            Ok(e) if e.bottom_of_stack() => e.label(),
            Ok(_) => return Verdict::Drop(DropReason::InvalidLabel),
            Err(e) => return Verdict::Drop(e.into()),
        };
        let ip_off = off + mpls::ENTRY_LEN;
        let nh_id = match self.tables.labels.get(label) {
            Some(LabelTarget::Nexthop(nh)) => nh,
            Some(LabelTarget::Vrf(vrf)) => return self.decap_mpls_to_vrf(vrf, ip_off, b),
            None => return Verdict::Drop(DropReason::InvalidLabel),
        };
        let m = match meta::parse_ip(b.data(), b.frame_len(), ip_off) {
            Ok(m) => m,
            Err(r) => return Verdict::Drop(r),
        };
        let nh = match self.resolve(nh_id, &m) {
            Ok(nh) => nh,
            Err(r) => return Verdict::Drop(r),
        };
        match nh {
            Nexthop::Encap { vif, dmac } => {
                let Some(out) = self.topo.vif(vif) else {
                    return Verdict::Drop(DropReason::InvalidVif);
                };
                if m.mtu_len > out.mtu {
                    return Verdict::Drop(DropReason::Mtu);
                }
                // Replace everything up to the inner IP packet with a fresh Ethernet header.
                if b.adj(ip_off - ethernet::HEADER_LEN).is_err() {
                    return Verdict::Drop(DropReason::Truncated);
                }
                if shift_offload(b, ip_off - ethernet::HEADER_LEN).is_err() {
                    return Verdict::Drop(DropReason::Offload);
                }
                let mut e = ethernet::Frame::new_unchecked(b.data_mut());
                e.set_dst(dmac);
                e.set_src(self.topo.fabric.vrouter_mac);
                e.set_ethertype(m.ethertype);
                Verdict::Tx(vif)
            }
            Nexthop::Receive => Verdict::Host,
            Nexthop::Discard => Verdict::Drop(DropReason::DiscardNexthop),
            Nexthop::Tunnel { .. } | Nexthop::Ecmp { .. } => {
                Verdict::Drop(DropReason::InvalidTunnel)
            }
        }
    }

    /// A per-VRF label: the inner IP packet, given an Ethernet header to the vrouter, is routed
    /// in VRF `vrf_id` as a decapsulated VXLAN packet to the vrouter's MAC is.
    fn decap_mpls_to_vrf<B: PacketBuf>(
        &mut self,
        vrf_id: u16,
        ip_off: usize,
        b: &mut B,
    ) -> Verdict {
        let vrf = match self.vrf(vrf_id) {
            Ok(v) => v,
            Err(r) => return Verdict::Drop(r),
        };
        let ethertype = match b.data().get(ip_off).map(|v| v >> 4) {
            Some(4) => ethernet::ethertype::IPV4,
            Some(6) => ethernet::ethertype::IPV6,
            Some(_) => return Verdict::Drop(DropReason::UnsupportedEthertype),
            None => return Verdict::Drop(DropReason::Truncated),
        };
        let eth_off = ip_off - ethernet::HEADER_LEN;
        if b.adj(eth_off).is_err() {
            return Verdict::Drop(DropReason::Truncated);
        }
        if shift_offload(b, eth_off).is_err() {
            return Verdict::Drop(DropReason::Offload);
        }
        let vrouter_mac = self.topo.fabric.vrouter_mac;
        let mut e = ethernet::Frame::new_unchecked(b.data_mut());
        e.set_dst(vrouter_mac);
        e.set_src(vrouter_mac);
        e.set_ethertype(ethertype);
        let mut m = PacketMeta::default();
        if let Err(r) = meta::parse_frame_into(b.data(), b.frame_len(), &mut m) {
            return Verdict::Drop(r);
        }
        m.vrf = vrf_id;
        let target = Some(self.memo.decap_route(vrf_id, vrf, &m));
        self.route(vrf, &mut m, b, None, target)
    }
}
