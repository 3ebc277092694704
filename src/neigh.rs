//! The underlay neighbour resolver: a control-side thread that keeps the forwarding plane's
//! neighbour table (`vrouter::tables::Neighbours`) holding exactly the far ends of tunnel
//! nexthops without a `dmac`, asks for their MACs by ARP out of the fabric vif, and keeps each
//! entry's state: `incomplete` (asked, up to [`PROBES`] times a second apart), `reachable` (an
//! ARP from it seen within the reachable time), `stale` (older: still used while asked again),
//! `failed` (no answer: its MAC is forgotten, packets to it are dropped as
//! `neighbour_unresolved`, and it is asked every [`FAILED_RETRY`]). The forwarding cores learn
//! MACs themselves from any ARP the fabric brings (replies, requests, gratuitous ARP after a
//! MAC change); this thread only reads what they learnt.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use control_api::api::NeighbourState;
use crossbeam::channel::Sender;
use pmd_shim::Mempool;
use tracing::{info, warn};
use vrouter::tables::{Nexthop, Tables};
use vrouter::wire::{arp, ethernet};
use vrouter::MacAddr;

use crate::lcore::LcoreCmd;

/// Requests sent, a second apart, before a neighbour is `failed`.
pub const PROBES: u32 = 3;
const PROBE_EVERY: Duration = Duration::from_secs(1);
/// How often a `failed` neighbour is asked again.
pub const FAILED_RETRY: Duration = Duration::from_secs(5);
const TICK: Duration = Duration::from_millis(100);
/// A minimum-size Ethernet frame: an ARP packet and its padding.
const ARP_FRAME: usize = 60;

/// One neighbour as the resolver keeps it.
#[derive(Debug, Clone)]
pub struct Entry {
    pub vif: u16,
    pub state: NeighbourState,
    pub mac: Option<MacAddr>,
    pub confirmed: Option<Instant>,
    pub requests: u64,
    pub learned: u64,
    pub mac_changes: u64,
    pub failures: u64,
    probes: u32,
    next_probe: Instant,
}

pub struct Resolver {
    tables: Arc<Tables>,
    pool: Mempool,
    /// The lcore that sends the requests (it hands them to the fabric's owner if not its own).
    lcore: Sender<LcoreCmd>,
    reachable: Duration,
    entries: Mutex<BTreeMap<Ipv4Addr, Entry>>,
    /// The last scan of the nexthop table and its change count then: the scan reads every
    /// slot (hundreds of microseconds at 64 K), too long to repeat ten times a second on a CPU
    /// that may also run a generator or a pod.
    wanted: Mutex<(Option<u64>, BTreeMap<Ipv4Addr, u16>)>,
}

impl Resolver {
    pub fn new(
        tables: Arc<Tables>,
        pool: Mempool,
        lcore: Sender<LcoreCmd>,
        reachable: Duration,
    ) -> Self {
        Resolver {
            tables,
            pool,
            lcore,
            reachable,
            entries: Mutex::new(BTreeMap::new()),
            wanted: Mutex::new((None, BTreeMap::new())),
        }
    }

    /// The neighbours as of the last tick.
    pub fn snapshot(&self) -> Vec<(Ipv4Addr, Entry)> {
        let e = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        e.iter().map(|(ip, e)| (*ip, e.clone())).collect()
    }

    /// Runs [`Resolver::tick`] every 100 ms until `stop`.
    pub fn spawn(self: Arc<Self>, stop: Arc<AtomicBool>) -> std::io::Result<JoinHandle<()>> {
        std::thread::Builder::new()
            .name("neigh".into())
            .spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    self.tick(Instant::now());
                    std::thread::sleep(TICK);
                }
            })
    }

    /// The addresses tunnel nexthops without a `dmac` send to, with their fabric vif (scanned
    /// again only when the nexthop table has changed).
    fn wanted(&self) -> BTreeMap<Ipv4Addr, u16> {
        let mut cache = self.wanted.lock().unwrap_or_else(|e| e.into_inner());
        let changes = self.tables.nexthops.changes();
        if cache.0 != Some(changes) {
            *cache = (Some(changes), self.scan());
        }
        cache.1.clone()
    }

    fn scan(&self) -> BTreeMap<Ipv4Addr, u16> {
        self.tables
            .nexthops
            .entries()
            .into_iter()
            .filter_map(|(_, nh)| match nh {
                Nexthop::Tunnel { vif, dip, dmac, .. } if dmac.to_u64() == 0 => Some((dip, vif)),
                _ => None,
            })
            .collect()
    }

    pub fn tick(&self, now: Instant) {
        let wanted = self.wanted();
        let table = &self.tables.neighbours;
        let mut entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        entries.retain(|ip, _| {
            let keep = wanted.contains_key(ip);
            if !keep {
                table.remove(*ip);
            }
            keep
        });
        for (&ip, &vif) in &wanted {
            if let Some(e) = entries.get_mut(&ip) {
                e.vif = vif;
                continue;
            }
            if !table.insert(ip) {
                warn!(%ip, "the neighbour table is full: tunnels to it need a dmac");
                continue;
            }
            entries.insert(
                ip,
                Entry {
                    vif,
                    state: NeighbourState::Incomplete,
                    mac: None,
                    confirmed: None,
                    requests: 0,
                    learned: 0,
                    mac_changes: 0,
                    failures: 0,
                    probes: 0,
                    next_probe: now,
                },
            );
        }
        for (&ip, e) in entries.iter_mut() {
            let Some((mac, learned)) = table.get(ip) else {
                continue;
            };
            if learned != e.learned && mac.is_some() {
                if e.mac.is_some() && e.mac != mac {
                    e.mac_changes += 1;
                    info!(%ip, old = ?e.mac, new = ?mac, "underlay neighbour's MAC changed");
                } else if e.state != NeighbourState::Reachable {
                    info!(%ip, mac = ?mac, "underlay neighbour resolved");
                }
                e.learned = learned;
                e.mac = mac;
                e.confirmed = Some(now);
                e.state = NeighbourState::Reachable;
                e.probes = 0;
            }
            match e.state {
                NeighbourState::Reachable => {
                    if e.confirmed.is_none_or(|c| now >= c + self.reachable) {
                        e.state = NeighbourState::Stale;
                        e.probes = 0;
                        e.next_probe = now;
                    }
                }
                NeighbourState::Incomplete | NeighbourState::Stale => {
                    if now < e.next_probe {
                        continue;
                    }
                    if e.probes >= PROBES {
                        warn!(%ip, "underlay neighbour does not answer ARP");
                        table.forget(ip);
                        e.mac = None;
                        e.state = NeighbourState::Failed;
                        e.failures += 1;
                        e.next_probe = now + FAILED_RETRY;
                        continue;
                    }
                    e.probes += 1;
                    e.next_probe = now + PROBE_EVERY;
                    if self.request(ip) {
                        e.requests += 1;
                    }
                }
                NeighbourState::Failed => {
                    if now >= e.next_probe {
                        e.next_probe = now + FAILED_RETRY;
                        if self.request(ip) {
                            e.requests += 1;
                        }
                    }
                }
            }
        }
    }

    /// Broadcasts "who has `ip`" out of the fabric vif, from the fabric address and MAC.
    fn request(&self, ip: Ipv4Addr) -> bool {
        let topo = self.tables.topology_handle().load_full();
        let fabric_ip = topo.fabric.fabric_ip;
        let Some(vif) = topo.fabric_vif.and_then(|v| topo.vif(v)).copied() else {
            return false;
        };
        if fabric_ip.is_unspecified() {
            return false;
        }
        let frame = arp_request(vif.mac, fabric_ip, ip);
        let Some(mut pkt) = self.pool.alloc() else {
            return false;
        };
        match pkt.append(ARP_FRAME as u16) {
            Ok(d) => d.copy_from_slice(&frame),
            Err(_) => return false,
        }
        self.lcore
            .send(LcoreCmd::SendFrame {
                vif: vif.index,
                pkt,
            })
            .is_ok()
    }
}

/// A broadcast ARP request for `target` from `mac` / `ip`.
pub fn arp_request(mac: MacAddr, ip: Ipv4Addr, target: Ipv4Addr) -> [u8; ARP_FRAME] {
    let mut f = [0u8; ARP_FRAME];
    let (eth, rest) = f.split_at_mut(ethernet::HEADER_LEN);
    ethernet::Repr {
        dst: MacAddr::BROADCAST,
        src: mac,
        ethertype: ethernet::ethertype::ARP,
    }
    .emit(&mut ethernet::Frame::new_unchecked(eth));
    arp::Repr {
        operation: arp::OP_REQUEST,
        sender_mac: mac,
        sender_ip: ip,
        target_mac: MacAddr([0; 6]),
        target_ip: target,
    }
    .emit(&mut arp::Packet::new_unchecked(rest));
    f
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_request_is_a_broadcast_who_has_from_the_fabric() {
        let mac = MacAddr([2, 0, 0, 0, 0, 1]);
        let f = arp_request(
            mac,
            Ipv4Addr::new(198, 51, 100, 1),
            Ipv4Addr::new(198, 51, 100, 2),
        );
        assert_eq!(&f[0..6], &[0xff; 6]);
        assert_eq!(&f[6..12], &mac.0);
        assert_eq!(&f[12..14], &[0x08, 0x06]);
        let a = arp::Repr::parse(&arp::Packet::new_unchecked(&f[14..])).unwrap();
        assert_eq!(a.operation, arp::OP_REQUEST);
        assert_eq!(a.sender_mac, mac);
        assert_eq!(a.sender_ip, Ipv4Addr::new(198, 51, 100, 1));
        assert_eq!(a.target_ip, Ipv4Addr::new(198, 51, 100, 2));
    }
}
