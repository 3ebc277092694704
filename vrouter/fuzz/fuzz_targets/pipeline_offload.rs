//! The pipeline with offload state, as a guest or a kernel pod hands packets over: an arbitrary
//! frame, split over two segments at an arbitrary point, arrives with a partial checksum inside
//! it (a port checks that much) and an arbitrary GSO kind and size. Whatever leaves is finished
//! as a port without offloads finishes it: GSO packets cut with `gso::Plan`, checksums completed.
//! Nothing may panic; every packet lands in exactly one place; a partial checksum that leaves
//! lies inside the frame; segments carry at most the GSO size of payload.
//!
//! Input: vif, flags (bit 0: partial checksum, bit 1: verified, bits 2-3: GSO kind, bit 4:
//! ECN), checksum start (2 bytes LE), checksum offset, GSO size (2 bytes LE), split point
//! (2 bytes LE), then the frame.
#![no_main]

use libfuzzer_sys::fuzz_target;
use std::sync::OnceLock;
use vrouter::offload::{csum, gso, Csum, Gso, GsoKind, Offload};
use vrouter::pipeline::{NoFlow, Pipeline, TxBatches};
use vrouter::{PacketBuf, SegBuf, StatsRegistry};

#[path = "../common/checks.rs"]
mod checks;
#[path = "../common/tables.rs"]
mod tables;
use tables::tables;

struct Bed {
    stats: StatsRegistry,
    pipe: Pipeline<NoFlow>,
    out: TxBatches<SegBuf>,
}

/// Finishes a packet for a port without offloads, checking what the finishing relies on.
fn finish(b: &SegBuf) {
    let o = b.offload();
    let frame = b.to_vec();
    if let Csum::Partial { start, offset } = o.csum() {
        assert!(
            usize::from(start) + usize::from(offset) + 2 <= frame.len(),
            "a partial checksum leaves inside the frame: {o:?}, {} bytes",
            frame.len()
        );
    }
    if o.gso().is_some() {
        // Headers that contradict the offload are refused (a counted drop), never a panic.
        let Ok(plan) = gso::Plan::new(b.data(), frame.len(), o) else {
            return;
        };
        let size = usize::from(o.gso().map_or(0, |g| g.size));
        let mut hdr = [0u8; gso::MAX_HEADERS];
        for i in 0..plan.count() {
            let range = plan.segment(i, &mut hdr);
            assert!(range.len() <= size && range.end <= frame.len());
            let mut seg = hdr[..plan.header_len()].to_vec();
            seg.extend_from_slice(&frame[range]);
            if let Csum::Partial { start, offset } = plan.segment_offload().csum() {
                csum::complete(&mut seg, usize::from(start), usize::from(offset))
                    .expect("a segment's checksum field is inside its headers");
            }
        }
    } else if let Csum::Partial { start, offset } = o.csum() {
        let mut f = frame;
        csum::complete(&mut f, usize::from(start), usize::from(offset))
            .expect("checked inside the frame above");
    }
}

fuzz_target!(|data: &[u8]| {
    static BED: OnceLock<std::sync::Mutex<Bed>> = OnceLock::new();
    let bed = BED.get_or_init(|| {
        let stats = StatsRegistry::default();
        let core = stats.new_core();
        std::sync::Mutex::new(Bed {
            stats,
            pipe: Pipeline::new(tables(), core, NoFlow),
            out: TxBatches::new(32),
        })
    });
    let [vif, flags, s0, s1, off, z0, z1, p0, p1, frame @ ..] = data else {
        return;
    };
    // As a port checked it: the checksum field inside the frame.
    let (start, offset) = (u16::from_le_bytes([*s0, *s1]), *off);
    let csum = if flags & 1 != 0 {
        if usize::from(start) + usize::from(offset) + 2 > frame.len() {
            return;
        }
        Csum::Partial { start, offset }
    } else if flags & 2 != 0 {
        Csum::Verified
    } else {
        Csum::None
    };
    let gso = match (flags >> 2) & 3 {
        1 => Some(GsoKind::Tcp4),
        2 => Some(GsoKind::Tcp6),
        3 => Some(GsoKind::Udp),
        _ => None,
    }
    .map(|kind| Gso {
        kind,
        size: u16::from_le_bytes([*z0, *z1]),
        ecn: flags & 16 != 0,
    });
    let split = usize::from(u16::from_le_bytes([*p0, *p1])).max(14);
    let mut b = SegBuf::split(frame, split);
    b.set_offload(Offload::new(csum, gso));

    let mut bed = bed.lock().unwrap_or_else(|e| e.into_inner());
    let Bed { stats, pipe, out } = &mut *bed;
    out.clear();
    let vif = u16::from(vif % 4);
    let before = checks::Tally::read(stats, vif);
    pipe.process(vif, [b], out);
    checks::packets_accounted(out, 1, before, checks::Tally::read(stats, vif));
    for &v in out.touched() {
        for b in out.tx(v) {
            finish(b);
        }
    }
    for b in &out.host {
        finish(b);
    }
});
