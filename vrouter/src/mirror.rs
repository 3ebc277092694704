//! Port mirroring's decisions, on any packet buffer: which packets of a vif are copied
//! (direction, filter, sampling), the copies with a collector's headers pushed, and backing off
//! while the analyzer's queue is full. A forwarding core owns one [`Mirrors`]; how a copy's
//! buffer is made (an mbuf from the core's pool in vrouterd, a spare buffer in the
//! micro-benchmark) is the caller's. Without a mirror a vif costs one check a burst.

use crate::buf::PacketBuf;
use crate::meta;
use crate::pipeline::encap::Template;

/// Bursts of a mirrored vif whose copies are not made after the analyzer's queue refused
/// some: a copy that would be refused costs a buffer, a copy and a free on the forwarding
/// core for nothing. A burst's copies are tried again after this many.
pub const BACKOFF_BURSTS: u32 = 32;

/// A mirror as a forwarding core applies it.
#[derive(Debug, Clone, Copy)]
pub struct MirrorCfg {
    /// The analyzer vif, or the fabric vif toward the collector.
    pub to: u16,
    /// For a collector: the VXLAN headers to push, and the VNI.
    pub remote: Option<(Template, u32)>,
    pub ingress: bool,
    pub egress: bool,
    /// Bytes a copy is cut to.
    pub snaplen: u32,
    /// One packet in `sample` is copied.
    pub sample: u32,
    pub filter: Filter,
}

/// Only packets matching every part given are copied.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Filter {
    pub proto: Option<u8>,
    /// Address (IPv4 in the low 32 bits), prefix length, IPv6.
    pub cidr: Option<(u128, u8, bool)>,
    pub ports: Option<(u16, u16)>,
}

impl Filter {
    fn is_empty(&self) -> bool {
        *self == Filter::default()
    }

    /// Whether `frame` matches (a frame that does not parse matches only an empty filter).
    pub fn matches(&self, frame: &[u8]) -> bool {
        if self.is_empty() {
            return true;
        }
        let Ok(m) = meta::parse_ethernet(frame) else {
            return false;
        };
        let v6 = m.l3 == meta::L3::Ipv6;
        if !matches!(m.l3, meta::L3::Ipv4 | meta::L3::Ipv6) {
            return false;
        }
        let proto_ok = self.proto.is_none_or(|p| p == m.proto);
        let in_prefix = |a: u128, (net, len, net_v6): (u128, u8, bool)| {
            let bits: u32 = if net_v6 { 128 } else { 32 };
            let len = u32::from(len).min(bits);
            net_v6 == v6 && (len == 0 || (a ^ net) >> (bits - len) == 0)
        };
        let cidr_ok = self
            .cidr
            .is_none_or(|c| in_prefix(m.src, c) || in_prefix(m.dst, c));
        let ports_ok = self
            .ports
            .is_none_or(|(lo, hi)| (lo..=hi).contains(&m.sport) || (lo..=hi).contains(&m.dport));
        proto_ok && cidr_ok && ports_ok
    }
}

/// What mirroring one burst did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct CopyCounts {
    /// Copies made (each a packet the core sends or drops, and counts).
    pub made: u64,
    /// Copies wanted that found no buffer or no room for a collector's headers.
    pub failed: u64,
    /// Copies wanted and not made because the analyzer's queue was full.
    pub skipped: u64,
}

/// A mirror with its sampling position and back-off, held by one forwarding core.
#[derive(Debug)]
pub struct MirrorState {
    pub cfg: MirrorCfg,
    seen: u32,
    /// Bursts left whose copies are skipped.
    backoff: u32,
}

impl MirrorState {
    pub fn new(cfg: MirrorCfg) -> MirrorState {
        MirrorState {
            cfg,
            seen: 0,
            backoff: 0,
        }
    }

    /// Whether this packet is copied: it matches, and it is the sample's turn.
    #[inline]
    pub fn wants(&mut self, frame: &[u8]) -> bool {
        if !self.cfg.filter.matches(frame) {
            return false;
        }
        self.seen += 1;
        if self.seen >= self.cfg.sample {
            self.seen = 0;
            true
        } else {
            false
        }
    }

    /// Copies the packets of `pkts` this mirror wants into `out` (at most to its capacity:
    /// more are failures), made by `copy(packet, snaplen)`, with a collector's headers pushed.
    /// While backing off, wanted copies are only counted as skipped.
    #[inline]
    pub fn copy_burst<'a, P, C>(
        &mut self,
        pkts: impl Iterator<Item = &'a P>,
        out: &mut Vec<C>,
        mut copy: impl FnMut(&P, u32) -> Option<C>,
    ) -> CopyCounts
    where
        P: AsRef<[u8]> + ?Sized + 'a,
        C: PacketBuf,
    {
        let mut n = CopyCounts::default();
        let skipping = self.backoff > 0;
        self.backoff = self.backoff.saturating_sub(1);
        for p in pkts {
            if !self.wants(p.as_ref()) {
                continue;
            }
            if skipping {
                n.skipped += 1;
                continue;
            }
            if out.len() == out.capacity() {
                // More than a burst at once: the copy is lost, and counted.
                n.failed += 1;
                continue;
            }
            let made = copy(p, self.cfg.snaplen).and_then(|mut c| match &self.cfg.remote {
                // For a collector, in VXLAN (a fresh buffer's headroom takes the headers).
                Some((tpl, vni)) => tpl.push(&mut c, *vni, 0, 0, 0).ok().map(|()| c),
                None => Some(c),
            });
            match made {
                Some(c) => {
                    out.push(c);
                    n.made += 1;
                }
                None => n.failed += 1,
            }
        }
        n
    }

    /// The analyzer's queue refused `refused` of the copies last sent: back off when any.
    #[inline]
    pub fn sent(&mut self, refused: u64) {
        if refused > 0 {
            self.backoff = BACKOFF_BURSTS;
        }
    }
}

/// The mirrors of one forwarding core, by mirrored vif.
#[derive(Debug)]
pub struct Mirrors {
    by_vif: Box<[Option<MirrorState>]>,
}

impl Mirrors {
    /// Room for vifs `0..vifs`.
    pub fn new(vifs: usize) -> Mirrors {
        Mirrors {
            by_vif: (0..vifs).map(|_| None).collect(),
        }
    }

    /// Sets (or with `None` removes) vif `vif`'s mirror; sampling and back-off start afresh.
    pub fn set(&mut self, vif: u16, cfg: Option<MirrorCfg>) {
        if let Some(slot) = self.by_vif.get_mut(usize::from(vif)) {
            *slot = cfg.map(MirrorState::new);
        }
    }

    /// Vif `vif` is gone: its mirror, and every mirror to it, stop.
    pub fn forget_vif(&mut self, vif: u16) {
        for m in self.by_vif.iter_mut() {
            if m.as_ref().is_some_and(|m| m.cfg.to == vif) {
                *m = None;
            }
        }
        self.set(vif, None);
    }

    /// Vif `vif`'s mirror when it copies packets received on it (`ingress`) or sent to it:
    /// the one check a vif without a mirror pays per burst.
    #[inline(always)]
    pub fn get(&mut self, vif: u16, ingress: bool) -> Option<&mut MirrorState> {
        match self.by_vif.get_mut(usize::from(vif)) {
            Some(Some(m)) if (ingress && m.cfg.ingress) || (!ingress && m.cfg.egress) => Some(m),
            _ => None,
        }
    }

    /// Vif `vif`'s mirror, whatever its direction.
    #[inline]
    pub fn of(&mut self, vif: u16) -> Option<&mut MirrorState> {
        self.by_vif
            .get_mut(usize::from(vif))
            .and_then(Option::as_mut)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::VecBuf;
    use etherparse::PacketBuilder;

    fn udp(src: [u8; 4], dport: u16) -> Vec<u8> {
        let mut f = Vec::new();
        PacketBuilder::ethernet2([2, 0, 0, 0, 0, 1], [2, 0, 0, 0, 0, 2])
            .ipv4(src, [198, 18, 2, 2], 64)
            .udp(40000, dport)
            .write(&mut f, b"x")
            .unwrap();
        f
    }

    fn cfg(sample: u32, filter: Filter) -> MirrorCfg {
        MirrorCfg {
            to: 9,
            remote: None,
            ingress: true,
            egress: false,
            snaplen: 20,
            sample,
            filter,
        }
    }

    #[test]
    fn filters_and_sampling_pick_the_packets_copied() {
        let mut all = MirrorState::new(cfg(1, Filter::default()));
        assert!((0..5).all(|_| all.wants(&udp([198, 18, 1, 2], 53))));
        assert!(all.wants(&[0u8; 10]), "no filter: even what does not parse");
        let mut f = MirrorState::new(cfg(
            1,
            Filter {
                proto: Some(17),
                cidr: Some((u128::from(u32::from_be_bytes([198, 18, 1, 0])), 24, false)),
                ports: Some((53, 53)),
            },
        ));
        assert!(f.wants(&udp([198, 18, 1, 2], 53)));
        assert!(!f.wants(&udp([198, 18, 7, 2], 53)), "outside the prefix");
        assert!(!f.wants(&udp([198, 18, 1, 2], 80)), "another port");
        assert!(!f.wants(&[0u8; 10]), "a filter needs a packet it can read");
        let mut third = MirrorState::new(cfg(3, Filter::default()));
        let picked: Vec<bool> = (0..6)
            .map(|_| third.wants(&udp([198, 18, 1, 2], 53)))
            .collect();
        assert_eq!(picked, [false, false, true, false, false, true]);
    }

    fn copy_cut(p: &VecBuf, snaplen: u32) -> Option<VecBuf> {
        let n = p.len().min(snaplen as usize);
        Some(VecBuf::from_frame(&p.data()[..n]))
    }

    #[test]
    fn copies_are_cut_and_a_full_analyzer_makes_the_mirror_back_off() {
        let pkts: Vec<VecBuf> = (0..4)
            .map(|_| VecBuf::from_frame(&udp([198, 18, 1, 2], 53)))
            .collect();
        let mut m = MirrorState::new(cfg(1, Filter::default()));
        let mut out = Vec::with_capacity(3);
        let n = m.copy_burst(pkts.iter(), &mut out, copy_cut);
        assert_eq!((n.made, n.failed, n.skipped), (3, 1, 0), "room for three");
        assert!(out.iter().all(|c| c.data() == &pkts[0].data()[..20]));
        out.clear();
        // Everything taken: no back-off.
        m.sent(0);
        assert_eq!(m.copy_burst(pkts.iter(), &mut out, copy_cut).made, 3);
        out.clear();
        // Refused: the next BACKOFF_BURSTS bursts only count, then copies are made again.
        m.sent(2);
        for _ in 0..BACKOFF_BURSTS {
            let n = m.copy_burst(pkts.iter(), &mut out, copy_cut);
            assert_eq!((n.made, n.skipped), (0, 4));
        }
        assert!(out.is_empty());
        assert_eq!(m.copy_burst(pkts.iter(), &mut out, copy_cut).made, 3);
        // No buffer: a failure.
        out.clear();
        let n = m.copy_burst(pkts.iter(), &mut out, |_: &VecBuf, _| None::<VecBuf>);
        assert_eq!((n.made, n.failed), (0, 4));
    }

    #[test]
    fn mirrors_answer_by_direction_and_forget_a_vif() {
        let mut ms = Mirrors::new(16);
        ms.set(3, Some(cfg(1, Filter::default())));
        assert!(ms.get(3, true).is_some());
        assert!(ms.get(3, false).is_none(), "ingress only");
        assert!(ms.get(4, true).is_none() && ms.get(999, true).is_none());
        ms.forget_vif(9);
        assert!(ms.of(3).is_none(), "its analyzer went");
    }
}
