//! Nexthops: what to do with a packet once its destination is looked up. Stored as fixed-size
//! records in [`SeqCell`]s indexed by id, so one can be replaced while cores forward through it.

use super::seqcell::SeqCell;
use crate::wire::MacAddr;
use crate::Error;
use std::net::Ipv4Addr;
use std::sync::atomic::{AtomicU64, Ordering};

/// Most members an ECMP nexthop holds (they are packed into the fixed record).
pub const MAX_ECMP_MEMBERS: usize = 12;

/// In a tunnel's record: its own label follows in the low 32 bits.
const LABEL_SET: u64 = 1 << 32;

/// Tunnel encapsulations the fabric speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TunnelEncap {
    /// RFC 7348, UDP 4789, carries an Ethernet frame.
    Vxlan,
    /// RFC 7510, UDP 6635, carries an IP packet under one label.
    MplsUdp,
    /// RFC 4023, GRE protocol 0x8847, carries an IP packet under one label.
    MplsGre,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Nexthop {
    /// Drop (counted as `discard`).
    Discard,
    /// For the vrouter itself: handed to the host / agent.
    Receive,
    /// To a local vif, with the Ethernet rewrite (destination MAC; the source is the vrouter MAC).
    Encap { vif: u16, dmac: MacAddr },
    /// Into a tunnel out of fabric vif `vif`, outer `sip` → `dip`, next-hop MAC `dmac`,
    /// pushing `label` (MPLS label or VNI) when set, else the route's or bridge entry's.
    Tunnel {
        encap: TunnelEncap,
        vif: u16,
        sip: Ipv4Addr,
        dip: Ipv4Addr,
        dmac: MacAddr,
        label: Option<u32>,
    },
    /// One of `members[..count]`, chosen by the flow hash.
    Ecmp {
        members: [u16; MAX_ECMP_MEMBERS],
        count: u8,
    },
}

impl Nexthop {
    /// An ECMP nexthop over `members` (ids of encap / tunnel nexthops).
    pub fn ecmp(members: &[u32]) -> Result<Self, Error> {
        if members.is_empty() || members.len() > MAX_ECMP_MEMBERS {
            return Err(Error::EcmpMemberCount(members.len()));
        }
        let mut m = [0u16; MAX_ECMP_MEMBERS];
        for (slot, &id) in m.iter_mut().zip(members) {
            *slot = u16::try_from(id).map_err(|_| Error::EcmpBadMember(id))?;
        }
        Ok(Nexthop::Ecmp {
            members: m,
            count: members.len() as u8,
        })
    }

    /// The ECMP member for a flow: `hash` → always the same member while the member list is
    /// unchanged.
    #[inline(always)]
    pub fn ecmp_pick(members: &[u16; MAX_ECMP_MEMBERS], count: u8, hash: u32) -> Option<u16> {
        if count == 0 {
            return None;
        }
        // Multiply-shift maps the hash onto 0..count without a division.
        let i = ((u64::from(hash) * u64::from(count)) >> 32) as usize;
        members.get(i).copied()
    }

    fn encode(&self) -> [u64; 4] {
        match *self {
            Nexthop::Discard => [1, 0, 0, 0],
            Nexthop::Receive => [2, 0, 0, 0],
            Nexthop::Encap { vif, dmac } => [3 | (u64::from(vif) << 16), 0, dmac.to_u64(), 0],
            Nexthop::Tunnel {
                encap,
                vif,
                sip,
                dip,
                dmac,
                label,
            } => {
                let e = match encap {
                    TunnelEncap::Vxlan => 0u64,
                    TunnelEncap::MplsUdp => 1,
                    TunnelEncap::MplsGre => 2,
                };
                [
                    4 | (e << 8) | (u64::from(vif) << 16),
                    (u64::from(u32::from(sip)) << 32) | u64::from(u32::from(dip)),
                    dmac.to_u64(),
                    // Bit 32 says a label is there (a VNI may be 0).
                    label.map_or(0, |l| LABEL_SET | u64::from(l)),
                ]
            }
            Nexthop::Ecmp { members, count } => {
                let mut w = [5 | (u64::from(count) << 8), 0, 0, 0];
                for (i, &m) in members.iter().enumerate() {
                    w[1 + i / 4] |= u64::from(m) << (16 * (i % 4));
                }
                w
            }
        }
    }

    #[inline(always)]
    fn decode(w: [u64; 4]) -> Option<Self> {
        let vif = (w[0] >> 16) as u16;
        Some(match w[0] & 0xff {
            1 => Nexthop::Discard,
            2 => Nexthop::Receive,
            3 => Nexthop::Encap {
                vif,
                dmac: MacAddr::from_u64(w[2]),
            },
            4 => Nexthop::Tunnel {
                encap: match (w[0] >> 8) & 0xff {
                    0 => TunnelEncap::Vxlan,
                    1 => TunnelEncap::MplsUdp,
                    _ => TunnelEncap::MplsGre,
                },
                vif,
                sip: Ipv4Addr::from((w[1] >> 32) as u32),
                dip: Ipv4Addr::from(w[1] as u32),
                dmac: MacAddr::from_u64(w[2]),
                label: (w[3] & LABEL_SET != 0).then_some(w[3] as u32),
            },
            5 => {
                let members = std::array::from_fn(|i| (w[1 + i / 4] >> (16 * (i % 4))) as u16);
                Nexthop::Ecmp {
                    members,
                    count: ((w[0] >> 8) & 0xff) as u8,
                }
            }
            _ => return None,
        })
    }
}

/// Nexthops by id (`0..capacity`).
#[derive(Debug)]
pub struct NexthopTable {
    slots: Box<[SeqCell<4>]>,
    /// Bumped after every change, for control-side readers that cache a scan of the table.
    changes: AtomicU64,
}

impl NexthopTable {
    pub fn new(capacity: usize) -> Self {
        NexthopTable {
            slots: (0..capacity).map(|_| SeqCell::default()).collect(),
            changes: AtomicU64::new(0),
        }
    }

    /// How many changes the table has seen: a scan made when this read `n` is current while it
    /// still reads `n` (read it before scanning).
    pub fn changes(&self) -> u64 {
        self.changes.load(Ordering::Acquire)
    }

    pub fn capacity(&self) -> usize {
        self.slots.len()
    }

    fn slot(&self, id: u32) -> Result<&SeqCell<4>, Error> {
        self.slots.get(id as usize).ok_or(Error::NexthopOutOfRange {
            id,
            capacity: self.slots.len() as u32,
        })
    }

    /// The nexthop `id` (fast path: one consistent read of its record).
    #[inline(always)]
    pub fn get(&self, id: u32) -> Option<Nexthop> {
        Nexthop::decode(self.slots.get(id as usize)?.read()?)
    }

    /// Add or replace nexthop `id`. Callers serialise writers.
    pub(crate) fn set(&self, id: u32, nh: Nexthop) -> Result<(), Error> {
        let slot = self.slot(id)?;
        if let Nexthop::Ecmp { members, count } = nh {
            for &m in &members[..usize::from(count)] {
                match self.get(u32::from(m)) {
                    Some(Nexthop::Encap { .. } | Nexthop::Tunnel { .. }) => {}
                    _ => return Err(Error::EcmpBadMember(u32::from(m))),
                }
            }
        }
        slot.write(nh.encode());
        self.changes.fetch_add(1, Ordering::Release);
        Ok(())
    }

    /// Every configured nexthop (control side: scans the whole id space).
    pub fn entries(&self) -> Vec<(u32, Nexthop)> {
        (0..self.slots.len() as u32)
            .filter_map(|id| self.get(id).map(|nh| (id, nh)))
            .collect()
    }

    pub(crate) fn remove(&self, id: u32) -> Result<(), Error> {
        let slot = self.slot(id)?;
        if slot.read().and_then(Nexthop::decode).is_none() {
            return Err(Error::NoSuchNexthop(id));
        }
        slot.write([0; 4]);
        self.changes.fetch_add(1, Ordering::Release);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_kind_round_trips_through_its_record() {
        let t = NexthopTable::new(8);
        let dmac = MacAddr([2, 0, 0, 0, 0, 9]);
        let all = [
            Nexthop::Discard,
            Nexthop::Receive,
            Nexthop::Encap { vif: 513, dmac },
            Nexthop::Tunnel {
                encap: TunnelEncap::MplsGre,
                vif: 1,
                sip: Ipv4Addr::new(198, 51, 100, 1),
                dip: Ipv4Addr::new(203, 0, 113, 7),
                dmac,
                label: None,
            },
            Nexthop::Tunnel {
                encap: TunnelEncap::Vxlan,
                vif: 1,
                sip: Ipv4Addr::new(198, 51, 100, 1),
                dip: Ipv4Addr::new(203, 0, 113, 8),
                dmac,
                label: Some(0),
            },
            Nexthop::Tunnel {
                encap: TunnelEncap::MplsUdp,
                vif: 1,
                sip: Ipv4Addr::new(198, 51, 100, 1),
                dip: Ipv4Addr::new(203, 0, 113, 9),
                dmac,
                label: Some((1 << 20) - 1),
            },
        ];
        for (i, nh) in all.iter().enumerate() {
            t.set(i as u32, *nh).unwrap();
            assert_eq!(t.get(i as u32), Some(*nh));
        }
        let e = Nexthop::ecmp(&[2, 3, 2]).unwrap();
        t.set(7, e).unwrap();
        assert_eq!(t.get(7), Some(e));
        assert_eq!(
            t.set(6, Nexthop::ecmp(&[0]).unwrap()),
            Err(Error::EcmpBadMember(0))
        );
        assert_eq!(
            t.set(8, Nexthop::Discard),
            Err(Error::NexthopOutOfRange { id: 8, capacity: 8 })
        );
        assert_eq!(t.get(6), None);
        assert_eq!(t.entries().len(), 7);
        t.remove(7).unwrap();
        assert_eq!(t.get(7), None);
        assert_eq!(t.remove(7), Err(Error::NoSuchNexthop(7)));
    }

    #[test]
    fn every_change_and_only_a_change_moves_the_change_count() {
        let t = NexthopTable::new(4);
        let before = t.changes();
        t.set(1, Nexthop::Discard).unwrap();
        t.set(1, Nexthop::Receive).unwrap();
        assert_eq!(t.changes(), before + 2);
        // Refused writes change nothing.
        assert!(t.set(9, Nexthop::Discard).is_err());
        assert!(t.set(2, Nexthop::ecmp(&[1]).unwrap()).is_err());
        assert!(t.remove(3).is_err());
        assert_eq!(t.changes(), before + 2);
        t.remove(1).unwrap();
        assert_eq!(t.changes(), before + 3);
    }

    #[test]
    fn ecmp_is_stable_per_flow_and_uses_every_member() {
        let members: Vec<u32> = (10..14).collect();
        let Nexthop::Ecmp { members: m, count } = Nexthop::ecmp(&members).unwrap() else {
            unreachable!()
        };
        let mut used = [0u32; 4];
        for h in 0..20_000u32 {
            let hash = h.wrapping_mul(0x9E37_79B9);
            let a = Nexthop::ecmp_pick(&m, count, hash).unwrap();
            // Same flow hash, same member, every time.
            for _ in 0..3 {
                assert_eq!(Nexthop::ecmp_pick(&m, count, hash), Some(a));
            }
            used[usize::from(a - 10)] += 1;
        }
        for u in used {
            assert!((4000..6000).contains(&u), "uneven spread {used:?}");
        }
        assert_eq!(Nexthop::ecmp(&[]), Err(Error::EcmpMemberCount(0)));
        assert_eq!(Nexthop::ecmp(&[1; 13]), Err(Error::EcmpMemberCount(13)));
    }
}
