//! One burst through the stages: parse every packet, look the routed ones up back to back,
//! then take each to its verdict and queue it.

use super::{Ctx, FlowHook, Verdict, BURST};
use crate::buf::PacketBuf;
use crate::meta::{self, PacketMeta, L3};
use crate::offload::{Csum, Offload};
use crate::stats::{CoreStats, DropReason};
use crate::tables::{RouteTarget, Topology, VifKind, FABRIC_VRF};
use crate::wire::{ethernet, ipv4, ipv6, tcp, udp};
use arrayvec::ArrayVec;

use super::trace::{self, TraceRecord, Tracer, TRACE_BYTES};
use super::{dhcp, reply, TxBatches};

impl<'a, F: FlowHook> Ctx<'a, F> {
    /// One burst: every packet of `bufs` ends up in `out` (which empties `bufs`).
    pub(super) fn burst<B: PacketBuf>(
        &mut self,
        in_vif: u16,
        bufs: &mut ArrayVec<B, BURST>,
        out: &mut TxBatches<B>,
    ) {
        let topo: &'a Topology = self.topo;
        let stats: &'a CoreStats = self.stats;
        let in_counters = stats.vif(in_vif);
        let rx_bytes: usize = bufs.iter().map(|b| b.frame_len()).sum();
        in_counters.rx_packets.add(bufs.len() as u64);
        in_counters.rx_bytes.add(rx_bytes as u64);
        let Some(vif) = topo.vif(in_vif) else {
            for b in bufs.drain(..) {
                stats.count_drop(DropReason::InvalidVif);
                in_counters.drops.add(1);
                out.dropped.push(b);
            }
            return;
        };
        let mut metas = [PacketMeta::default(); BURST];
        let mut early: [Option<DropReason>; BURST] = [None; BURST];
        // Routed pod packets: their route is looked up in stage 2.
        let mut routed = [false; BURST];
        // DHCP for the vif's server (answered in stage 3, never routed).
        let mut dhcp_in = [false; BURST];
        let lease = topo.dhcp(in_vif);
        let mut targets: [Option<RouteTarget>; BURST] = [None; BURST];
        let pod_vrf = if vif.vrf == FABRIC_VRF {
            None
        } else {
            topo.vrf(vif.vrf)
        };
        let vrouter_mac = topo.fabric.vrouter_mac;
        let tracer = self.tracer.filter(|t| t.wants(in_vif));

        // Stage 1: parse.
        for (i, b) in bufs.iter().enumerate() {
            let d = b.data();
            if tracer.is_some() {
                trace::keep(d, &mut self.traced_in.bytes[i]);
                self.traced_in.lens[i] = u32::try_from(b.frame_len()).unwrap_or(u32::MAX);
            }
            if let Err(r) = meta::parse_frame_into(d, b.frame_len(), &mut metas[i]) {
                early[i] = Some(r);
                continue;
            }
            let o = b.offload();
            if !o.is_none() {
                if !offload_fits(o, &metas[i], b.frame_len()) {
                    early[i] = Some(DropReason::Offload);
                    continue;
                }
                if let Some(g) = o.gso() {
                    metas[i].mtu_len = gso_mtu_len(d, &metas[i], g.size);
                }
            }
            metas[i].vrf = vif.vrf;
            let m = &metas[i];
            if pod_vrf.is_some() && dhcp::for_server(m, lease) {
                dhcp_in[i] = true;
                continue;
            }
            routed[i] = pod_vrf.is_some()
                && matches!(m.l3, L3::Ipv4 | L3::Ipv6)
                && ethernet::Frame::new_unchecked(d).dst() == vrouter_mac
                && !(m.proto == ipv6::next_header::ICMPV6 && reply::ns_target(d, m).is_some());
        }

        // Stage 2: route lookups, back to back.
        if let Some(vrf) = pod_vrf {
            for i in 0..bufs.len() {
                if routed[i] {
                    let m = &metas[i];
                    targets[i] = if m.l3 == L3::Ipv4 {
                        vrf.route_v4(m.dst_v4())
                    } else {
                        vrf.route_v6(m.dst)
                    };
                    self.flow.prefetch(m);
                }
            }
        }

        // Stage 3: nexthop, rewrite, queue. Sends are counted by whoever hands the batches to
        // their queues: only they know what was accepted.
        for (i, mut b) in bufs.drain(..).enumerate() {
            let v = match (early[i], pod_vrf) {
                (Some(r), _) => Verdict::Drop(r),
                (None, _) if dhcp_in[i] => self.dhcp(vif, lease, &metas[i], &mut b),
                (None, Some(vrf)) if routed[i] => {
                    self.route(vrf, &mut metas[i], &mut b, Some(vif), Some(targets[i]))
                }
                // The host's own traffic (vhost0) leaves by the fabric as the host wrote it.
                (None, _) if vif.kind == VifKind::Host => match topo.fabric_vif {
                    Some(f) => Verdict::Tx(f),
                    None => Verdict::Drop(DropReason::NoTxQueue),
                },
                (None, _) if vif.vrf == FABRIC_VRF => self.fabric_ingress(vif, &metas[i], &mut b),
                // A pod vif (its VRF may be gone: pod_ingress drops as invalid_vrf).
                (None, _) => self.pod_ingress(vif, &mut metas[i], &mut b),
            };
            if let Some(t) = tracer {
                self.trace(t, in_vif, i, metas[i].vrf, v, &b);
            }
            match v {
                Verdict::Tx(vif) => out.push(vif, b),
                Verdict::Host => {
                    stats.to_host.add(1);
                    out.host.push(b);
                }
                Verdict::Drop(r) => {
                    stats.count_drop(r);
                    in_counters.drops.add(1);
                    out.dropped.push(b);
                }
                Verdict::Agent(reason) => out.push_agent(
                    b,
                    super::Trap {
                        reason,
                        vif: in_vif,
                        vrf: metas[i].vrf,
                    },
                ),
            }
        }
    }
}

impl<F: FlowHook> Ctx<'_, F> {
    /// Records packet `i` of a traced burst, with its verdict and the packet as it leaves.
    #[cold]
    fn trace<B: PacketBuf>(&self, t: &Tracer, in_vif: u16, i: usize, vrf: u16, v: Verdict, b: &B) {
        if !t.take_one(in_vif) {
            return;
        }
        let mut r = TraceRecord {
            in_vif,
            vrf,
            verdict: v,
            in_len: self.traced_in.lens[i],
            input: self.traced_in.bytes[i],
            out_len: 0,
            output: [0; TRACE_BYTES],
        };
        if !matches!(v, Verdict::Drop(_)) {
            trace::keep(b.data(), &mut r.output);
            r.out_len = u32::try_from(b.frame_len()).unwrap_or(u32::MAX);
        }
        t.push(r);
    }
}

/// Whether a packet's offload state fits the packet: a partial checksum field inside its IP
/// packet (what lies beyond is padding, trimmed on the way), GSO only for IP.
fn offload_fits(o: Offload, m: &PacketMeta, frame_len: usize) -> bool {
    let ip = matches!(m.l3, L3::Ipv4 | L3::Ipv6);
    let end = if ip {
        usize::from(m.l3_off) + usize::from(m.l3_len)
    } else {
        frame_len
    };
    let csum_ok = match o.csum() {
        Csum::Partial { start, offset } => {
            usize::from(start) + usize::from(offset) + 2 <= end.min(frame_len)
        }
        _ => true,
    };
    csum_ok && (o.gso().is_none() || ip)
}

/// The L3 length of the largest segment a GSO packet is cut into (its headers, up to the end
/// of the L4 header, and `size` payload bytes): what has to fit the egress MTU. A packet whose
/// headers do not match is left at its own length; cutting it fails later, counted.
fn gso_mtu_len(d: &[u8], m: &PacketMeta, size: u16) -> u16 {
    let l4 = usize::from(m.l4_off);
    let l4_len = match m.proto {
        ipv4::proto::TCP => d
            .get(l4 + tcp::field::FLAGS.start)
            .map_or(0, |b| usize::from(b >> 4) * 4),
        ipv4::proto::UDP => udp::HEADER_LEN,
        _ => return m.l3_len,
    };
    let seg = (l4 - usize::from(m.l3_off)) + l4_len + usize::from(size);
    u16::try_from(seg).map_or(m.l3_len, |s| s.min(m.l3_len))
}
