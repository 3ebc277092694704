//! Port mirroring on the forwarding lcore: copies of a vif's packets (as received, or as sent
//! to it) for an analyzer vif. A copy is a fresh mbuf from the packet pool, cut to the
//! mirror's length; the original goes on untouched. Copies are sent like any packet to the
//! analyzer vif, so a full analyzer queue drops copies (counted there as `tx_queue_full`)
//! and never holds the mirrored traffic back. Without a mirror a vif costs one check a burst.

use std::net::IpAddr;

use control_api::api::{Mirror, MirrorDirection, Proto};
use pmd_shim::{Mbuf, Mempool};
use vrouter::meta;
use vrouter::pipeline::encap::Template;

/// A mirror as the lcore applies it.
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

impl MirrorCfg {
    /// The API's mirror, to vif index `to` (with `remote`'s headers for a collector).
    pub fn new(m: &Mirror, to: u16, remote: Option<(Template, u32)>) -> MirrorCfg {
        let f = m.filter.clone().unwrap_or_default();
        MirrorCfg {
            to,
            remote,
            ingress: m.direction != MirrorDirection::Egress,
            egress: m.direction != MirrorDirection::Ingress,
            snaplen: m.snaplen.unwrap_or(u32::MAX),
            sample: m.sample.unwrap_or(1).max(1),
            filter: Filter {
                proto: match f.proto {
                    Some(Proto::Number(n)) => Some(n),
                    Some(Proto::Any) | None => None,
                },
                cidr: f.cidr.map(|c| match c.addr() {
                    IpAddr::V4(a) => (u128::from(u32::from(a)), c.prefix_len(), false),
                    IpAddr::V6(a) => (u128::from(a), c.prefix_len(), true),
                }),
                ports: f.ports.map(|p| (p.first, p.last)),
            },
        }
    }
}

impl Filter {
    fn is_empty(&self) -> bool {
        *self == Filter::default()
    }

    /// Whether `frame` matches (a frame that does not parse matches only an empty filter).
    fn matches(&self, frame: &[u8]) -> bool {
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

/// A mirror with its sampling position, held by one lcore.
#[derive(Debug)]
pub struct MirrorState {
    pub cfg: MirrorCfg,
    seen: u32,
}

impl MirrorState {
    pub fn new(cfg: MirrorCfg) -> MirrorState {
        MirrorState { cfg, seen: 0 }
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
}

/// A copy of `m`'s frame cut to `snaplen` bytes, from `pool`; `None` when the pool is short.
pub fn copy(pool: &Mempool, m: &Mbuf, snaplen: u32) -> Option<Mbuf> {
    let mut c = pool.alloc()?;
    let mut left = usize::try_from(snaplen).unwrap_or(usize::MAX);
    for seg in m.segments() {
        if left == 0 {
            break;
        }
        let take = seg.len().min(left);
        // The copy grows in pieces one mbuf's data room can hold.
        for piece in seg[..take].chunks(2048) {
            let len = u16::try_from(piece.len()).ok()?;
            c.append_grow(len).ok()?.copy_from_slice(piece);
        }
        left -= take;
    }
    Some(c)
}

#[cfg(test)]
mod tests {
    use super::*;
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

    fn cfg(json: &str) -> MirrorCfg {
        MirrorCfg::new(&serde_json::from_str::<Mirror>(json).unwrap(), 9, None)
    }

    #[test]
    fn filters_and_sampling_pick_the_packets_copied() {
        let mut all = MirrorState::new(cfg(r#"{"to":"a"}"#));
        assert!((0..5).all(|_| all.wants(&udp([198, 18, 1, 2], 53))));
        assert!(all.wants(&[0u8; 10]), "no filter: even what does not parse");
        let c = cfg(
            r#"{"to":"a","direction":"ingress","filter":{"proto":"udp","cidr":"198.18.1.0/24","ports":"53"}}"#,
        );
        assert!(c.ingress && !c.egress && c.to == 9);
        let mut f = MirrorState::new(c);
        assert!(f.wants(&udp([198, 18, 1, 2], 53)));
        assert!(!f.wants(&udp([198, 18, 7, 2], 53)), "outside the prefix");
        assert!(!f.wants(&udp([198, 18, 1, 2], 80)), "another port");
        assert!(!f.wants(&[0u8; 10]), "a filter needs a packet it can read");
        let mut third = MirrorState::new(cfg(r#"{"to":"a","sample":3}"#));
        let picked: Vec<bool> = (0..6)
            .map(|_| third.wants(&udp([198, 18, 1, 2], 53)))
            .collect();
        assert_eq!(picked, [false, false, true, false, false, true]);
    }
}
