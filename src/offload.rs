//! Finishing offloads at the egress: whatever a packet's egress port cannot take as it is (a
//! partial checksum, a GSO packet far larger than the MTU) is done here in software, on the
//! forwarding core, right before the packet leaves: the checksum summed in place, the GSO
//! packet cut into segments taken from the packet pool.

use pmd_shim::Mempool;
use vhost_user::net_hdr;
use vrouter::offload::csum::{self, OffloadError};
use vrouter::offload::{gso, Csum, TxCaps};
use vrouter::PacketBuf;

use crate::packet::Pkt;

/// Payload bytes copied into one segment mbuf at a time (its room, 2 KiB of data).
const SEGMENT_ROOM: usize = 2048;

/// What a guest takes, by the features it negotiated.
pub fn virtio_caps(features: u64) -> TxCaps {
    let has = |f: u64| features & f == f;
    TxCaps {
        csum: has(net_hdr::F_GUEST_CSUM),
        tso4: has(net_hdr::F_GUEST_CSUM | net_hdr::F_GUEST_TSO4),
        tso6: has(net_hdr::F_GUEST_CSUM | net_hdr::F_GUEST_TSO6),
        uso: has(net_hdr::F_GUEST_CSUM | net_hdr::F_GUEST_USO4 | net_hdr::F_GUEST_USO6),
        ecn: has(net_hdr::F_GUEST_ECN),
        // Tunnelled packets leave on the fabric, never toward a guest.
        tunnel: false,
    }
}

/// What a kernel interface written with its virtio-net header takes: everything the header can
/// describe. Not tunnelled packets: the header has no way to say where an inner packet starts,
/// so the kernel would take a tunnel's GSO packet for a plain one (they never go to a kernel
/// pod's vif anyway).
pub const KERNEL_CAPS: TxCaps = TxCaps {
    tunnel: false,
    ..TxCaps::ALL
};

/// How many packets `p` becomes for a port with `caps`: 1, or its segment count.
pub fn count_after(p: &Pkt, caps: TxCaps) -> usize {
    let o = p.offload();
    if caps.takes(o) || o.gso().is_none() {
        return 1;
    }
    gso::Plan::new(p.0.data(), p.frame_len(), o).map_or(1, |plan| plan.count())
}

/// Makes `p` fit a port with `caps`, pushing the result (it, or its segments) onto `out`.
/// On failure nothing is pushed; the caller frees `p` and counts it.
pub fn finish(
    mut p: Pkt,
    caps: TxCaps,
    pool: &Mempool,
    out: &mut Vec<Pkt>,
) -> Result<(), OffloadError> {
    let o = p.offload();
    if caps.takes(o) {
        out.push(p);
        return Ok(());
    }
    if o.gso().is_some() {
        return segment(&p, caps, pool, out);
    }
    complete_csum(&mut p)?;
    out.push(p);
    Ok(())
}

/// Completes a partial checksum in place (the field must lie in the first segment).
pub fn complete_csum(p: &mut Pkt) -> Result<(), OffloadError> {
    let o = p.offload();
    let Csum::Partial { start, offset } = o.csum() else {
        return Ok(());
    };
    let (start, offset) = (usize::from(start), usize::from(offset));
    let sum = csum::sum_from(p.0.segments(), start);
    csum::store(p.0.data_mut(), start, offset, sum)?;
    p.set_offload(o.with_csum_done());
    Ok(())
}

/// Cuts a GSO packet into segments pushed onto `out`, their checksums completed unless the port
/// takes partial ones. All or nothing: on failure `out` is as it was.
fn segment(p: &Pkt, caps: TxCaps, pool: &Mempool, out: &mut Vec<Pkt>) -> Result<(), OffloadError> {
    let plan = gso::Plan::new(p.0.data(), p.frame_len(), p.offload())?;
    let seg_offload = plan.segment_offload();
    let keep_partial = caps.takes(seg_offload);
    let base = out.len();
    let mut hdr = [0u8; gso::MAX_HEADERS];
    for i in 0..plan.count() {
        match cut_one(p, &plan, i, &mut hdr, pool) {
            Ok(mut seg) => {
                seg.set_offload(seg_offload);
                if !keep_partial {
                    if let Err(e) = complete_csum(&mut seg) {
                        out.truncate(base);
                        return Err(e);
                    }
                }
                out.push(seg);
            }
            Err(e) => {
                out.truncate(base);
                return Err(e);
            }
        }
    }
    Ok(())
}

/// Segment `i` of `p`: its headers, then its payload copied from `p`'s chain.
fn cut_one(
    p: &Pkt,
    plan: &gso::Plan,
    i: usize,
    hdr: &mut [u8; gso::MAX_HEADERS],
    pool: &Mempool,
) -> Result<Pkt, OffloadError> {
    let mut m = pool.alloc().ok_or(OffloadError::NoBuffer)?;
    let range = plan.segment(i, hdr);
    let h = plan.header_len();
    m.append(h as u16)
        .map_err(|_| OffloadError::NoBuffer)?
        .copy_from_slice(&hdr[..h]);
    let mut at = range.start;
    // The first piece fills what the headers left of the first segment.
    let mut room = usize::from(m.tailroom());
    while at < range.end {
        let n = (range.end - at).min(if room > 0 { room } else { SEGMENT_ROOM });
        room = 0;
        let dst = m
            .append_grow(n as u16)
            .map_err(|_| OffloadError::NoBuffer)?;
        if p.0.copy_out(at, dst) != n {
            return Err(OffloadError::Headers(
                "payload shorter than the headers say",
            ));
        }
        at += n;
    }
    Ok(Pkt(m))
}

/// What a DPDK port's device finishes itself, by the TX offloads it has enabled. Chained packets
/// are sent as they are (every driver vrouterd uses takes multi-segment packets).
pub fn eth_caps(o: pmd_shim::TxOffloads) -> TxCaps {
    let csum = o.l4_csum();
    TxCaps {
        csum,
        tso4: csum && o.tso(),
        tso6: csum && o.tso(),
        uso: csum && o.uso(),
        // Whether a NIC keeps CWR on the first segment only is not promised: ECN TSO is cut here.
        ecn: false,
        tunnel: csum && o.tunnels(),
    }
}

/// Asks the device to finish what `p`'s offload state leaves to it (the port's capabilities
/// said it takes that): DPDK's TX flags and header lengths. Nothing to ask for a packet whose
/// checksums are complete.
pub fn request_from_device(p: &mut Pkt) -> Result<(), OffloadError> {
    use pmd_shim::tx_flags as f;
    let o = p.offload();
    let gso = o.gso();
    let Csum::Partial { start, .. } = o.csum() else {
        return match gso {
            None => Ok(()),
            Some(_) => Err(OffloadError::Headers("GSO without a partial checksum")),
        };
    };
    let d = p.0.data();
    let bad = OffloadError::Headers;
    let byte = |at: usize| d.get(at).copied().ok_or(bad("truncated"));
    let mut req = pmd_shim::TxOffloadRequest::default();
    let inner = usize::from(o.inner());
    let (l3, l2_from) = if inner > 0 {
        // Our own outer headers: Ethernet, IPv4, then UDP (VXLAN, MPLS) or GRE.
        let outer_l3 = vrouter::wire::ethernet::HEADER_LEN;
        let ihl = usize::from(byte(outer_l3)? & 0x0f) * 4;
        let tunnel = match byte(outer_l3 + 9)? {
            vrouter::wire::ipv4::proto::GRE => f::TUNNEL_GRE,
            vrouter::wire::ipv4::proto::UDP => {
                let port =
                    u16::from_be_bytes([byte(outer_l3 + ihl + 2)?, byte(outer_l3 + ihl + 3)?]);
                if port == vrouter::wire::udp::PORT_VXLAN {
                    f::TUNNEL_VXLAN
                } else {
                    f::TUNNEL_MPLSINUDP
                }
            }
            _ => return Err(bad("tunnel is neither UDP nor GRE")),
        };
        req.outer_l2_len = outer_l3 as u16;
        req.outer_l3_len = ihl as u16;
        req.flags |= f::OUTER_IPV4 | tunnel;
        if gso.is_some() {
            req.flags |= f::OUTER_IP_CKSUM;
        }
        let l3 = if o.inner_is_ip() {
            inner
        } else {
            inner + vrouter::wire::ethernet::HEADER_LEN
        };
        (l3, outer_l3 + ihl)
    } else {
        let ty = u16::from_be_bytes([byte(12)?, byte(13)?]);
        let l3 = if ty == vrouter::wire::ethernet::ethertype::VLAN {
            18
        } else {
            14
        };
        (l3, 0)
    };
    let v4 = byte(l3)? >> 4 == 4;
    let (l3_len, proto) = if v4 {
        (usize::from(byte(l3)? & 0x0f) * 4, byte(l3 + 9)?)
    } else {
        (40, byte(l3 + 6)?)
    };
    if l3 + l3_len != usize::from(start) {
        return Err(bad("checksum start is not right behind the IP header"));
    }
    let (l4_flag, l4_len, seg_flag) = match proto {
        vrouter::wire::ipv4::proto::TCP => (
            f::TCP_CKSUM,
            usize::from(byte(l3 + l3_len + 12)? >> 4) * 4,
            f::TCP_SEG,
        ),
        vrouter::wire::ipv4::proto::UDP => (f::UDP_CKSUM, 8, f::UDP_SEG),
        _ => return Err(bad("neither TCP nor UDP")),
    };
    req.l2_len = (l3 - l2_from) as u16;
    req.l3_len = l3_len as u16;
    req.l4_len = l4_len as u16;
    req.flags |= l4_flag | if v4 { f::IPV4 } else { f::IPV6 };
    if let Some(g) = gso {
        req.flags |= seg_flag | if v4 { f::IP_CKSUM } else { 0 };
        req.tso_segsz = g.size;
    }
    p.0.request_tx_offload(&req);
    Ok(())
}
