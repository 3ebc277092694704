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
        let current: BTreeMap<u16, RouterAdvert> = topo
            .ra
            .iter()
            .enumerate()
            .filter_map(|(i, ra)| Some((u16::try_from(i).ok()?, (*ra)?)))
            .collect();
        // A vif gone, or whose advertisement changed, starts over.
        due.retain(|vif, (ra, _)| current.get(vif) == Some(ra));
        for (vif, ra) in current {
            let (_, at) = due.entry(vif).or_insert((ra, now + self.interval));
            if now < *at {
                continue;
            }
            *at = now + self.interval;
            if !self.send(vif, &ra, mac) {
                debug!(vif, "router advertisement not sent (no buffer or lcore)");
            }
        }
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
