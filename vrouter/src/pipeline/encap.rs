//! Pushing outer headers: Ethernet + IPv4 + (UDP + VXLAN | UDP + MPLS | GRE + MPLS).

use crate::buf::PacketBuf;
use crate::stats::DropReason;
use crate::tables::{FabricConfig, TunnelEncap, Vif};
use crate::wire::{checksum, ethernet, gre, ipv4, mpls, udp, vxlan, MacAddr};
use std::net::Ipv4Addr;

pub const OUTER_IP_LEN: usize = ipv4::MIN_HEADER_LEN;

/// Bytes pushed in front of the payload (which is an Ethernet frame for VXLAN and an IP packet
/// for the MPLS encapsulations).
#[inline(always)]
pub fn overhead(encap: TunnelEncap) -> usize {
    match encap {
        TunnelEncap::Vxlan => VXLAN_LEN,
        TunnelEncap::MplsUdp => MPLS_UDP_LEN,
        TunnelEncap::MplsGre => MPLS_GRE_LEN,
    }
}

/// The outer IP length of a routed packet whose IP length is `inner_l3` once tunnelled: the
/// tunnel headers, plus the inner Ethernet header VXLAN carries.
#[inline(always)]
pub fn outer_l3_len(encap: TunnelEncap, inner_l3: u16) -> usize {
    let inner = usize::from(inner_l3)
        + if encap == TunnelEncap::Vxlan {
            ethernet::HEADER_LEN
        } else {
            0
        };
    inner + overhead(encap) - ethernet::HEADER_LEN
}

/// The outer UDP source port: the inner flow hash folded into 49152..=65535 (RFC 7510 / 7348
/// entropy), so ECMP in the fabric keeps each inner flow on one path.
#[inline(always)]
pub fn entropy_port(hash: u32) -> u16 {
    0xc000 | ((hash ^ (hash >> 16)) as u16 & 0x3fff)
}

/// Where and how a tunnel packet goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Outer {
    pub encap: TunnelEncap,
    pub sip: Ipv4Addr,
    pub dip: Ipv4Addr,
    pub dmac: MacAddr,
    /// VNI (VXLAN) or label (MPLS).
    pub label: u32,
    /// TTL for the MPLS entry (the inner TTL after decrement).
    pub mpls_ttl: u8,
}

impl Outer {
    /// Same outer headers apart from the per-packet label and TTL.
    pub fn same_tunnel(&self, o: &Outer) -> bool {
        (self.encap, self.sip, self.dip, self.dmac) == (o.encap, o.sip, o.dip, o.dmac)
    }
}

/// The outer headers of one tunnel nexthop, prebuilt (as Contrail keeps "rewrite data" on its
/// nexthops): pushing them is one copy plus patching the fields that vary per packet (lengths,
/// IP id and checksum, entropy port, label / VNI).
#[derive(Debug, Clone, Copy)]
pub struct Template {
    bytes: [u8; MAX_OVERHEAD],
    len: usize,
    encap: TunnelEncap,
    /// One's-complement sum of the outer IPv4 header with length, id and checksum zero.
    ip_sum: u32,
}

const MAX_OVERHEAD: usize =
    ethernet::HEADER_LEN + OUTER_IP_LEN + udp::HEADER_LEN + vxlan::HEADER_LEN;
const VXLAN_LEN: usize = MAX_OVERHEAD;
const MPLS_UDP_LEN: usize = ethernet::HEADER_LEN + OUTER_IP_LEN + udp::HEADER_LEN + mpls::ENTRY_LEN;
const MPLS_GRE_LEN: usize = ethernet::HEADER_LEN + OUTER_IP_LEN + gre::BASE_LEN + mpls::ENTRY_LEN;
const IP_AT: usize = ethernet::HEADER_LEN;
const L4_AT: usize = IP_AT + OUTER_IP_LEN;
/// Where the VXLAN header or the MPLS entry starts behind UDP.
const TUNNEL_AT: usize = L4_AT + udp::HEADER_LEN;

impl Template {
    pub fn new(o: &Outer, out_vif: &Vif, fabric: &FabricConfig) -> Self {
        let len = overhead(o.encap);
        let mut bytes = [0u8; MAX_OVERHEAD];
        let (eth, rest) = bytes.split_at_mut(IP_AT);
        let e = ethernet::Repr {
            dst: o.dmac,
            src: out_vif.mac,
            ethertype: ethernet::ethertype::IPV4,
        };
        e.emit(&mut ethernet::Frame::new_unchecked(eth));
        let (iph, rest) = rest.split_at_mut(OUTER_IP_LEN);
        let ip = ipv4::Repr {
            src: o.sip,
            dst: o.dip,
            protocol: if o.encap == TunnelEncap::MplsGre {
                ipv4::proto::GRE
            } else {
                ipv4::proto::UDP
            },
            payload_len: 0,
            ttl: fabric.outer_ttl,
            ident: 0,
            dont_frag: fabric.outer_df,
            dscp_ecn: 0,
        };
        let mut ip_view = ipv4::Packet::new_unchecked(&mut iph[..]);
        ip.emit(&mut ip_view);
        // Length, id and checksum are per packet: the sum leaves them out (id is zero already).
        ip_view.set_total_len(0);
        ip_view.set_checksum(0);
        let ip_sum = checksum::sum(0, iph);
        match o.encap {
            TunnelEncap::Vxlan | TunnelEncap::MplsUdp => {
                let (udph, rest) = rest.split_at_mut(udp::HEADER_LEN);
                // Source port and length are per packet (see `fill`).
                let u = udp::Repr {
                    src_port: 0,
                    dst_port: if o.encap == TunnelEncap::Vxlan {
                        udp::PORT_VXLAN
                    } else {
                        udp::PORT_MPLS_UDP
                    },
                    payload_len: 0,
                };
                u.emit(&mut udp::Packet::new_unchecked(udph));
                if o.encap == TunnelEncap::Vxlan {
                    // The VNI is per packet (see `push`).
                    vxlan::Repr { vni: 0 }.emit(&mut vxlan::Packet::new_unchecked(rest));
                }
            }
            TunnelEncap::MplsGre => {
                let g = gre::Repr {
                    protocol: ethernet::ethertype::MPLS,
                    key: None,
                    seq: None,
                };
                g.emit(&mut gre::Packet::new_unchecked(rest));
            }
        }
        Template {
            bytes,
            len,
            encap: o.encap,
            ip_sum,
        }
    }

    pub fn encap(&self) -> TunnelEncap {
        self.encap
    }

    /// Push the headers in front of the current data. The outer IPv4 header checksum is
    /// complete; the UDP checksum is zero (allowed for IPv4, and what Linux sends by default).
    #[inline]
    pub fn push<B: PacketBuf>(
        &self,
        buf: &mut B,
        label: u32,
        mpls_ttl: u8,
        hash: u32,
        ip_id: u16,
    ) -> Result<(), DropReason> {
        let inner_len = buf.frame_len();
        buf.prepend(self.len).map_err(|_| DropReason::NoHeadroom)?;
        // A GSO packet may not fit the field: its segments get their own lengths when cut.
        let ip_len = (self.len - IP_AT + inner_len).min(usize::from(u16::MAX)) as u16;
        let d = buf.data_mut();
        // Each encapsulation has a header size known at compile time: the copy is inline moves
        // and every field write below is at a constant offset in a fixed-size array.
        let done = match self.encap {
            TunnelEncap::Vxlan => d.first_chunk_mut::<VXLAN_LEN>().map(|h| {
                self.fill(h, ip_len, ip_id, hash);
                vxlan::Packet::new_unchecked(&mut h[TUNNEL_AT..]).set_vni(label);
            }),
            TunnelEncap::MplsUdp => d.first_chunk_mut::<MPLS_UDP_LEN>().map(|h| {
                self.fill(h, ip_len, ip_id, hash);
                mpls_entry(label, mpls_ttl)
                    .emit(&mut mpls::Entry::new_unchecked(&mut h[TUNNEL_AT..]));
            }),
            TunnelEncap::MplsGre => d.first_chunk_mut::<MPLS_GRE_LEN>().map(|h| {
                self.fill(h, ip_len, ip_id, hash);
                mpls_entry(label, mpls_ttl).emit(&mut mpls::Entry::new_unchecked(
                    &mut h[L4_AT + gre::BASE_LEN..],
                ));
            }),
        };
        done.ok_or(DropReason::NoHeadroom)?;
        let o = buf.offload();
        if !o.is_none() {
            // What the offload state describes now sits behind the tunnel headers (an IP packet
            // for the MPLS encapsulations, an Ethernet frame for VXLAN).
            let o = o
                .encapsulated(self.len as u16, self.encap != TunnelEncap::Vxlan)
                .ok_or(DropReason::Offload)?;
            buf.set_offload(o);
        }
        Ok(())
    }

    /// Copy the template into `h` and patch the outer IP length, id and checksum and, for UDP
    /// encapsulations, the entropy port and UDP length.
    #[inline(always)]
    fn fill<const N: usize>(&self, h: &mut [u8; N], ip_len: u16, ip_id: u16, hash: u32) {
        if let Some(t) = self.bytes.first_chunk::<N>() {
            *h = *t;
        }
        let mut ip = ipv4::Packet::new_unchecked(&mut h[IP_AT..L4_AT]);
        ip.set_total_len(ip_len);
        ip.set_ident(ip_id);
        ip.set_checksum(!checksum::fold(
            self.ip_sum + u32::from(ip_len) + u32::from(ip_id),
        ));
        if self.encap != TunnelEncap::MplsGre {
            let mut u = udp::Packet::new_unchecked(&mut h[L4_AT..TUNNEL_AT]);
            u.set_src_port(entropy_port(hash));
            u.set_len(ip_len - OUTER_IP_LEN as u16);
        }
    }
}

/// The one label entry of a tunnelled packet.
#[inline(always)]
fn mpls_entry(label: u32, ttl: u8) -> mpls::Repr {
    mpls::Repr {
        label,
        tc: 0,
        bottom_of_stack: true,
        ttl,
    }
}

/// Push the outer headers in front of the current data (builds the template on the spot; the
/// pipeline keeps one per burst instead).
#[inline]
pub fn push<B: PacketBuf>(
    buf: &mut B,
    o: &Outer,
    out_vif: &Vif,
    fabric: &FabricConfig,
    hash: u32,
    ip_id: u16,
) -> Result<(), DropReason> {
    Template::new(o, out_vif, fabric).push(buf, o.label, o.mpls_ttl, hash, ip_id)
}
