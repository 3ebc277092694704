//! Pushing outer headers: Ethernet + IPv4 + (UDP + VXLAN | UDP + MPLS | GRE + MPLS).

use crate::buf::PacketBuf;
use crate::stats::DropReason;
use crate::tables::{FabricConfig, TunnelEncap, Vif};
use crate::wire::{ethernet, gre, ipv4, mpls, udp, vxlan, MacAddr};
use std::net::Ipv4Addr;

pub const OUTER_IP_LEN: usize = ipv4::MIN_HEADER_LEN;

/// Bytes pushed in front of the payload (which is an Ethernet frame for VXLAN and an IP packet
/// for the MPLS encapsulations).
pub fn overhead(encap: TunnelEncap) -> usize {
    ethernet::HEADER_LEN
        + OUTER_IP_LEN
        + match encap {
            TunnelEncap::Vxlan => udp::HEADER_LEN + vxlan::HEADER_LEN,
            TunnelEncap::MplsUdp => udp::HEADER_LEN + mpls::ENTRY_LEN,
            TunnelEncap::MplsGre => gre::BASE_LEN + mpls::ENTRY_LEN,
        }
}

/// The outer UDP source port: the inner flow hash folded into 49152..=65535 (RFC 7510 / 7348
/// entropy), so ECMP in the fabric keeps each inner flow on one path.
#[inline(always)]
pub fn entropy_port(hash: u32) -> u16 {
    0xc000 | ((hash ^ (hash >> 16)) as u16 & 0x3fff)
}

/// Where and how a tunnel packet goes.
#[derive(Debug, Clone, Copy)]
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

/// Push the outer headers in front of the current data. The outer IPv4 header checksum is
/// complete; the UDP checksum is zero (allowed for IPv4, and what Linux sends by default).
#[inline]
pub fn push<B: PacketBuf>(
    buf: &mut B,
    o: &Outer,
    out_vif: &Vif,
    fabric: &FabricConfig,
    hash: u32,
    ip_id: u16,
) -> Result<(), DropReason> {
    let h = overhead(o.encap);
    let inner_len = buf.len();
    buf.prepend(h).map_err(|_| DropReason::NoHeadroom)?;
    let d = buf.data_mut();
    let (eth, rest) = d.split_at_mut(ethernet::HEADER_LEN);
    let mut e = ethernet::Frame::new_unchecked(eth);
    e.set_dst(o.dmac);
    e.set_src(out_vif.mac);
    e.set_ethertype(ethernet::ethertype::IPV4);

    let (iph, rest) = rest.split_at_mut(OUTER_IP_LEN);
    let mut ip = ipv4::Packet::new_unchecked(iph);
    ip.set_version_and_len(OUTER_IP_LEN);
    ip.set_dscp_ecn(0);
    ip.set_total_len((h - ethernet::HEADER_LEN + inner_len) as u16);
    ip.set_ident(ip_id);
    ip.set_flags_unfragmented(fabric.outer_df);
    ip.set_ttl(fabric.outer_ttl);
    ip.set_protocol(if o.encap == TunnelEncap::MplsGre {
        ipv4::proto::GRE
    } else {
        ipv4::proto::UDP
    });
    ip.set_src(o.sip);
    ip.set_dst(o.dip);
    ip.fill_checksum();

    match o.encap {
        TunnelEncap::Vxlan | TunnelEncap::MplsUdp => {
            let (uh, rest) = rest.split_at_mut(udp::HEADER_LEN);
            let mut u = udp::Packet::new_unchecked(uh);
            u.set_src_port(entropy_port(hash));
            u.set_dst_port(if o.encap == TunnelEncap::Vxlan {
                udp::PORT_VXLAN
            } else {
                udp::PORT_MPLS_UDP
            });
            u.set_len((h - ethernet::HEADER_LEN - OUTER_IP_LEN + inner_len) as u16);
            u.set_checksum(0);
            if o.encap == TunnelEncap::Vxlan {
                vxlan::Packet::new_unchecked_mut(&mut rest[..vxlan::HEADER_LEN]).fill(o.label);
            } else {
                write_label(rest, o);
            }
        }
        TunnelEncap::MplsGre => {
            let (gh, rest) = rest.split_at_mut(gre::BASE_LEN);
            gre::Packet::new_unchecked(gh).fill_basic(ethernet::ethertype::MPLS);
            write_label(rest, o);
        }
    }
    Ok(())
}

fn write_label(rest: &mut [u8], o: &Outer) {
    if let Ok(mut m) = mpls::Entry::new_checked(&mut rest[..mpls::ENTRY_LEN]) {
        m.set(o.label, 0, true, o.mpls_ttl);
    }
}
