//! A flow's identity and where it lives: [`FlowKey`], its keyed hash, and its [`Place`] (tag
//! and two candidate buckets).

use super::FlowTable;

/// A flow's identity. Addresses are `u128` (IPv4 in the low 32 bits), as in
/// [`crate::meta::PacketMeta`]. For ICMP / ICMPv6 the echo identifier stands in the source port
/// (0 for other messages) and the message type in the destination port, so an echo request and
/// its reply are a flow and its reverse ([`FlowKey::reverse`] swaps request and reply types),
/// while other messages between the same hosts are flows of their own.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct FlowKey {
    pub vrf: u16,
    pub v6: bool,
    pub proto: u8,
    pub src: u128,
    pub dst: u128,
    pub sport: u16,
    pub dport: u16,
}

impl FlowKey {
    /// The key of the replies: addresses and ports swapped. ICMP keeps its identifier and turns
    /// a query type into its reply type and back (echo, and ICMPv4 timestamp, information and
    /// address mask); other ICMP types stay as they are.
    pub fn reverse(&self) -> FlowKey {
        if is_icmp(self.proto) {
            return FlowKey {
                src: self.dst,
                dst: self.src,
                dport: icmp_reply_type(self.proto, self.dport),
                ..*self
            };
        }
        FlowKey {
            src: self.dst,
            dst: self.src,
            sport: self.dport,
            dport: self.sport,
            ..*self
        }
    }

    pub(crate) fn words(&self) -> [u64; 5] {
        [
            u64::from(self.vrf) << 48
                | u64::from(self.proto) << 40
                | u64::from(self.v6) << 32
                | u64::from(self.sport) << 16
                | u64::from(self.dport),
            (self.src >> 64) as u64,
            self.src as u64,
            (self.dst >> 64) as u64,
            self.dst as u64,
        ]
    }

    pub(super) fn from_words(w: [u64; 5]) -> FlowKey {
        FlowKey {
            vrf: (w[0] >> 48) as u16,
            proto: (w[0] >> 40) as u8,
            v6: (w[0] >> 32) & 1 == 1,
            sport: (w[0] >> 16) as u16,
            dport: w[0] as u16,
            src: u128::from(w[1]) << 64 | u128::from(w[2]),
            dst: u128::from(w[3]) << 64 | u128::from(w[4]),
        }
    }
}

/// The ICMP type answering `ty` (and the query answered by a reply type); any other type
/// unchanged.
pub(super) fn icmp_reply_type(proto: u8, ty: u16) -> u16 {
    use crate::wire::{icmp, ipv4};
    let pairs: &[(u8, u8)] = match proto {
        ipv4::proto::ICMP => &icmp::v4::QUERY_REPLY_PAIRS,
        ipv4::proto::ICMPV6 => &icmp::v6::QUERY_REPLY_PAIRS,
        _ => return ty,
    };
    for &(query, reply) in pairs {
        if ty == u16::from(query) {
            return u16::from(reply);
        }
        if ty == u16::from(reply) {
            return u16::from(query);
        }
    }
    ty
}

/// The keyed hash of a key's words: four independent 64x64->128 multiplies (folded), so its
/// latency is two multiplies, not five in a chain. Keyed by a per-table random seed, so a peer
/// cannot aim many flows at one bucket pair.
#[inline(always)]
pub(super) fn hash_words(seed: &[u64; 6], w: &[u64; 5]) -> u64 {
    #[inline(always)]
    fn fold(a: u64, b: u64) -> u64 {
        let p = u128::from(a) * u128::from(b);
        (p as u64) ^ ((p >> 64) as u64)
    }
    let a = fold(w[0] ^ seed[0], w[1] ^ seed[1]);
    let b = fold(w[2] ^ seed[2], w[3] ^ seed[3]);
    let c = fold(w[4] ^ seed[4], seed[5]);
    fold(a ^ c, b ^ seed[2])
}

/// Six per-table hash keys from the standard library's random hasher seed.
pub(super) fn random_seed() -> [u64; 6] {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    std::array::from_fn(|i| {
        h.write_usize(i);
        // Odd, so no key multiplies by zero through its seed alone.
        h.finish() | 1
    })
}

/// The pool port a NAT flow's reply key holds: the destination port, or for ICMP echo the
/// identifier (which keys keep in the source port).
pub(crate) fn nat_port_of_reply(reply: &FlowKey) -> u16 {
    if is_icmp(reply.proto) {
        reply.sport
    } else {
        reply.dport
    }
}

fn is_icmp(proto: u8) -> bool {
    proto == 1 || proto == 58
}

/// Where a key may live: its words, tag and two candidate buckets, computed once per packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) struct Place {
    pub(super) words: [u64; 5],
    pub(super) tag: u32,
    pub(super) b1: usize,
    pub(super) b2: usize,
}

impl Place {
    /// The key placed here.
    pub(crate) fn key(&self) -> FlowKey {
        FlowKey::from_words(self.words)
    }

    /// Whether this is the place of a key with these words (without a `memcmp` call).
    #[inline(always)]
    pub(crate) fn is_of(&self, w: &[u64; 5]) -> bool {
        let p = &self.words;
        (p[0] ^ w[0]) | (p[1] ^ w[1]) | (p[2] ^ w[2]) | (p[3] ^ w[3]) | (p[4] ^ w[4]) == 0
    }
}

impl FlowTable {
    #[inline(always)]
    pub(crate) fn place(&self, key: &FlowKey) -> Place {
        self.place_words(key.words())
    }

    #[inline(always)]
    pub(crate) fn place_words(&self, words: [u64; 5]) -> Place {
        let h = hash_words(&self.seed, &words);
        let nb = self.groups.len() as u64;
        let b1 = (((h & 0xffff_ffff) * nb) >> 32) as usize;
        let mut b2 = (((h >> 32) * nb) >> 32) as usize;
        if b2 == b1 {
            b2 = (b1 + 1) % self.groups.len();
        }
        Place {
            words,
            tag: (h.rotate_left(17) as u32) | 1,
            b1,
            b2,
        }
    }
}
