//! Unsolicited router advertisements: every `--ra-interval-secs`, each vif whose configuration
//! has an `ip6` (so the forwarding plane answers its router solicitations) is also sent an
//! advertisement to all nodes. Linux and most stacks solicit only when their link comes up; a
//! pod that ran longer than one router lifetime (9000 s) without relinking would lose its IPv6
//! default route without these (RFC 4861 section 6.2.4).

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam::channel::Sender;
use pmd_shim::Mempool;
use tracing::debug;
use vrouter::pipeline::reply::router_advert;
use vrouter::tables::{RouterAdvert, Tables};
use vrouter::VecBuf;

use crate::lcore::LcoreCmd;

const TICK: Duration = Duration::from_millis(500);
/// Advertisements handed to the lcore per tick: half its outbox (the neighbour resolver's
/// requests share it, and what does not fit is dropped). Vifs due beyond that stay due and go
/// in the next ticks, so many vifs added at once are spread out instead of the same ones
/// always missing their turn.
const PER_TICK: usize = 8;

pub struct Advertiser {
    tables: Arc<Tables>,
    pool: Mempool,
    /// The lcore that sends them (it hands each to the vif's owner if not its own).
    lcore: Sender<LcoreCmd>,
    interval: Duration,
}

impl Advertiser {
    pub fn new(
        tables: Arc<Tables>,
        pool: Mempool,
        lcore: Sender<LcoreCmd>,
        interval: Duration,
    ) -> Self {
        Advertiser {
            tables,
            pool,
            lcore,
            interval,
        }
    }

    /// Advertises on every vif that has an advertisement, one interval after it appeared (it
    /// answered the pod's solicitation meanwhile) and every interval after, until `stop`.
    pub fn spawn(self: Arc<Self>, stop: Arc<AtomicBool>) -> std::io::Result<JoinHandle<()>> {
        std::thread::Builder::new()
            .name("ra".into())
            .spawn(move || {
                let mut due: BTreeMap<u16, (RouterAdvert, Instant)> = BTreeMap::new();
                while !stop.load(Ordering::Relaxed) {
                    self.tick(Instant::now(), &mut due);
                    std::thread::sleep(TICK);
                }
            })
    }

    fn tick(&self, now: Instant, due: &mut BTreeMap<u16, (RouterAdvert, Instant)>) {
        let topo = self.tables.topology_handle().load_full();
        let mac = topo.fabric.vrouter_mac;
        advertise_due(&topo.ra, now, self.interval, due, |vif, ra| {
            let sent = self.send(vif, ra, mac);
            if !sent {
                debug!(vif, "router advertisement not sent (no buffer or lcore)");
            }
            sent
        });
    }

    fn send(&self, vif: u16, ra: &RouterAdvert, mac: vrouter::MacAddr) -> bool {
        let mut frame = VecBuf::from_frame(&[]);
        if router_advert(&mut frame, ra, mac).is_err() {
            return false;
        }
        let bytes = vrouter::PacketBuf::data(&frame);
        let Ok(len) = u16::try_from(bytes.len()) else {
            return false;
        };
        let Some(mut pkt) = self.pool.alloc() else {
            return false;
        };
        match pkt.append(len) {
            Ok(d) => d.copy_from_slice(bytes),
            Err(_) => return false,
        }
        self.lcore.send(LcoreCmd::SendFrame { vif, pkt }).is_ok()
    }
}

/// Calls `send` for the vifs of `ra` (by index) whose advertisement is due at `now`, at most
/// [`PER_TICK`] of them; a vif is due one `interval` after it first has an advertisement (or
/// after it changed), and again one `interval` after each one `send` took. `due` keeps the
/// schedule between calls.
fn advertise_due(
    ra: &[Option<RouterAdvert>],
    now: Instant,
    interval: Duration,
    due: &mut BTreeMap<u16, (RouterAdvert, Instant)>,
    mut send: impl FnMut(u16, &RouterAdvert) -> bool,
) {
    let current: BTreeMap<u16, RouterAdvert> = ra
        .iter()
        .enumerate()
        .filter_map(|(i, ra)| Some((u16::try_from(i).ok()?, (*ra)?)))
        .collect();
    // A vif gone, or whose advertisement changed, starts over.
    due.retain(|vif, (ra, _)| current.get(vif) == Some(ra));
    let mut sent = 0;
    for (vif, ra) in current {
        let (_, at) = due.entry(vif).or_insert((ra, now + interval));
        if now < *at || sent == PER_TICK {
            continue;
        }
        sent += 1;
        if send(vif, &ra) {
            *at = now + interval;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ra(n: u16) -> Option<RouterAdvert> {
        Some(RouterAdvert {
            prefix: std::net::Ipv6Addr::new(0x2001, 0xdb8, 0x18, n, 0, 0, 0, 0),
            autonomous: true,
            mtu: 1500,
        })
    }

    /// Twenty vifs added together: none before one interval, then eight a tick, every vif in
    /// turn; one whose send failed is asked again at the next tick; a changed advertisement
    /// starts its vif's interval over.
    #[test]
    fn many_vifs_are_spread_over_ticks_and_none_is_skipped_for_good() {
        let interval = Duration::from_secs(10);
        let mut vifs: Vec<Option<RouterAdvert>> = (0..20).map(ra).collect();
        vifs.insert(3, None);
        let mut due = BTreeMap::new();
        let t0 = Instant::now();
        let mut sent = Vec::new();
        let tick = |at: Duration, due: &mut BTreeMap<_, _>, vifs: &[_], fail: Option<u16>| {
            let mut got = Vec::new();
            advertise_due(vifs, t0 + at, interval, due, |vif, _| {
                got.push(vif);
                Some(vif) != fail
            });
            got
        };
        assert!(tick(Duration::ZERO, &mut due, &vifs, None).is_empty());
        assert!(tick(Duration::from_secs(9), &mut due, &vifs, None).is_empty());
        let first = tick(Duration::from_secs(10), &mut due, &vifs, Some(2));
        assert_eq!(first, vec![0, 1, 2, 4, 5, 6, 7, 8], "eight, in vif order");
        sent.extend(first.iter().filter(|&&v| v != 2));
        let second = tick(Duration::from_millis(10_500), &mut due, &vifs, None);
        assert_eq!(second[0], 2, "the failed one first again");
        assert_eq!(second.len(), PER_TICK);
        sent.extend(&second);
        loop {
            let more = tick(Duration::from_secs(11), &mut due, &vifs, None);
            if more.is_empty() {
                break;
            }
            sent.extend(more);
        }
        sent.sort_unstable();
        let want: Vec<u16> = (0..21).filter(|&v| v != 3).collect();
        assert_eq!(sent, want, "every vif with an advertisement, once");
        assert!(tick(Duration::from_secs(15), &mut due, &vifs, None).is_empty());
        // Vif 0's prefix changes: its interval starts over from now.
        vifs[0] = ra(99);
        assert!(tick(Duration::from_secs(16), &mut due, &vifs, None).is_empty());
        let again = tick(Duration::from_secs(21), &mut due, &vifs, None);
        assert!(!again.contains(&0) && again.len() == PER_TICK, "{again:?}");
        assert!(tick(Duration::from_secs(26), &mut due, &vifs, None).contains(&0));
    }
}
