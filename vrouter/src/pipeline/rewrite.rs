//! Header edits the routing paths share: padding trimmed, the offload state kept in step with
//! removed headers, TTL decremented, a routed frame made into a tunnel's payload.

use crate::buf::PacketBuf;
use crate::meta::{PacketMeta, L3};
use crate::nat::{self, Translation};
use crate::offload::Csum;
use crate::stats::DropReason;
use crate::tables::TunnelEncap;
use crate::wire::{ethernet, ipv4, ipv6, MacAddr};

/// Drop Ethernet padding behind the IP packet: it must not be carried into a tunnel (nor out
/// of a local vif as part of the packet).
#[inline(always)]
pub(super) fn trim_padding<B: PacketBuf>(b: &mut B, m: &PacketMeta) -> Result<(), DropReason> {
    let end = usize::from(m.l3_off) + usize::from(m.l3_len);
    let len = b.frame_len();
    if len > end && b.trim(len - end).is_err() {
        return Err(DropReason::Truncated);
    }
    Ok(())
}

/// The longest frame the packet puts on the wire: itself, or for a GSO packet its largest
/// segment.
#[inline(always)]
pub(super) fn wire_len<B: PacketBuf>(b: &B, m: &PacketMeta) -> usize {
    if m.mtu_len < m.l3_len && matches!(m.l3, L3::Ipv4 | L3::Ipv6) {
        usize::from(m.l3_off) + usize::from(m.mtu_len)
    } else {
        b.frame_len()
    }
}

/// Write a NAT flow's translation into the packet, minding an offloaded L4 checksum (which
/// then holds only the pseudo-header sum). An ICMP error about a translated flow has the packet
/// it quotes translated as well (its addresses as the error's own direction sees them).
#[inline]
pub(super) fn translate<B: PacketBuf>(
    b: &mut B,
    m: &PacketMeta,
    x: Translation,
) -> Result<(), DropReason> {
    if matches!(m.proto, ipv4::proto::ICMP | ipv4::proto::ICMPV6)
        && super::route::is_icmp_error(b.data(), m)
    {
        return nat::translate_icmp_error(b.data_mut(), m, x);
    }
    let partial = matches!(b.offload().csum(), Csum::Partial { .. });
    nat::translate(b.data_mut(), m, x, partial)
}

/// Tells the packet's offload state that its first `removed` bytes were taken off.
#[inline(always)]
pub(super) fn shift_offload<B: PacketBuf>(b: &mut B, removed: usize) -> Result<(), ()> {
    let o = b.offload();
    if o.is_none() {
        return Ok(());
    }
    let removed = u16::try_from(removed).map_err(|_| ())?;
    b.set_offload(o.decapsulated(removed).ok_or(())?);
    Ok(())
}

/// Turn a routed frame into what a tunnel carries: TTL decremented, then the inner Ethernet
/// header addressed vrouter to vrouter (VXLAN) or stripped down to the IP packet (MPLS).
/// Returns the new TTL (the MPLS entry's).
#[inline(always)]
pub(super) fn tunnel_payload<B: PacketBuf>(
    b: &mut B,
    m: &PacketMeta,
    encap: TunnelEncap,
    vrouter_mac: MacAddr,
) -> Result<u8, DropReason> {
    let ttl = decrement_ttl(b, m);
    if encap == TunnelEncap::Vxlan {
        let mut e = ethernet::Frame::new_unchecked(b.data_mut());
        e.set_dst(vrouter_mac);
        e.set_src(vrouter_mac);
    } else {
        if b.adj(usize::from(m.l3_off)).is_err() {
            return Err(DropReason::Truncated);
        }
        shift_offload(b, usize::from(m.l3_off)).map_err(|_| DropReason::Offload)?;
    }
    Ok(ttl)
}

/// Decrement the TTL / hop limit of the IP packet at `m.l3_off`; returns the new value.
#[inline(always)]
pub(super) fn decrement_ttl<B: PacketBuf>(b: &mut B, m: &PacketMeta) -> u8 {
    decrement_ttl_in(b.data_mut(), m)
}

/// [`decrement_ttl`] on the frame bytes. The parse checked that the IP header is there; the
/// fixed part is taken as an array so the field updates need no further bounds checks.
#[inline(always)]
pub(super) fn decrement_ttl_in(d: &mut [u8], m: &PacketMeta) -> u8 {
    let ip = d.get_mut(usize::from(m.l3_off)..).unwrap_or_default();
    if m.l3 == L3::Ipv4 {
        match ip.first_chunk_mut::<{ ipv4::MIN_HEADER_LEN }>() {
            Some(h) => ipv4::Packet::new_unchecked(h).decrement_ttl(),
            None => m.ttl,
        }
    } else {
        let t = m.ttl.saturating_sub(1);
        if let Some(h) = ip.first_chunk_mut::<{ ipv6::HEADER_LEN }>() {
            ipv6::Packet::new_unchecked(h).set_hop_limit(t);
        }
        t
    }
}
