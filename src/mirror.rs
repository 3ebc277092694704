//! Port mirroring on the forwarding lcore: the API's mirror as the lcore applies it, and copies
//! made as fresh mbufs from the packet pool, cut to the mirror's length; which packets are
//! copied, and backing off while an analyzer's queue is full, is `vrouter::mirror`'s. Copies
//! are sent like any packet to the analyzer vif, so a full analyzer queue drops copies
//! (counted there as `tx_queue_full`) and never holds the mirrored traffic back.

use std::net::IpAddr;

use control_api::api::{Mirror, MirrorDirection, Proto};
use pmd_shim::{Mbuf, Mempool};
use vrouter::mirror::{Filter, MirrorCfg};
use vrouter::pipeline::encap::Template;

/// The API's mirror `m`, to vif index `to` (with `remote`'s headers for a collector).
pub fn cfg(m: &Mirror, to: u16, remote: Option<(Template, u32)>) -> MirrorCfg {
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

    fn cfg_of(json: &str) -> MirrorCfg {
        cfg(&serde_json::from_str::<Mirror>(json).unwrap(), 9, None)
    }

    #[test]
    fn the_api_mirror_becomes_what_the_lcore_applies() {
        let all = cfg_of(r#"{"to":"a"}"#);
        assert!(all.ingress && all.egress && all.sample == 1 && all.snaplen == u32::MAX);
        assert_eq!(all.filter, Filter::default());
        let c = cfg_of(
            r#"{"to":"a","direction":"ingress","snaplen":96,"sample":4,"filter":{"proto":"udp","cidr":"198.18.1.0/24","ports":"53"}}"#,
        );
        assert!(c.ingress && !c.egress && c.to == 9);
        assert_eq!((c.snaplen, c.sample), (96, 4));
        assert_eq!(
            c.filter,
            Filter {
                proto: Some(17),
                cidr: Some((u128::from(u32::from_be_bytes([198, 18, 1, 0])), 24, false)),
                ports: Some((53, 53)),
            }
        );
        let e = cfg_of(r#"{"to":"a","direction":"egress","filter":{"cidr":"2001:db8::/32"}}"#);
        assert!(!e.ingress && e.egress);
        assert_eq!(
            e.filter.cidr,
            Some((
                u128::from("2001:db8::".parse::<std::net::Ipv6Addr>().unwrap()),
                32,
                true
            ))
        );
    }
}
