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
