//! Reads: vif status, counters, drops, health and the flow table, summed over the lcores.

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::time::Instant;

use control_api::api::{
    DropStats, FlowExportStats, FlowPage, FlowQuery, FlowStats, Health, HealthStatus, LcoreHealth,
    LcoreStats, MempoolHealth, PollGaps, RingHealth, Stats, VifCounters, VifQueue, VifState,
    VifStatus,
};
use control_api::{DataplaneError, VifSpec};
use pmd_shim::RingLevel;
use vrouter::stats::MAX_VIFS;
use vrouter::DropReason;

use crate::lcore::LoopCounters;

use super::convert::{flow_clock_ms, flow_entry};
use super::{rejected, VifIo, VrouterDataplane};

impl VrouterDataplane {
    /// vifs there are, and the total of those removed since.
    pub(super) fn kernel_ring_drops(&self) -> (HashMap<u32, u64>, u64) {
        let mut per_lcore = HashMap::new();
        let reg = self.registry();
        for rt in reg.vifs.values() {
            if let VifIo::Kernel { monitor } = &rt.io {
                let lcore = rt
                    .lcore
                    .and_then(|l| self.lcores.get(usize::from(l)))
                    .map_or(u32::MAX, |h| h.lcore);
                *per_lcore.entry(lcore).or_insert(0) += monitor.stats().rx_ring_full;
            }
        }
        (per_lcore, self.kernel_drops_retired.load(Ordering::Relaxed))
    }

    pub(super) fn vif_counters(&self, index: u16) -> VifCounters {
        let mut c = VifCounters::default();
        for l in &self.lcores {
            let v = l.stats.vif(index);
            c.rx_packets += v.rx_packets.get();
            c.rx_bytes += v.rx_bytes.get();
            c.tx_packets += v.tx_packets.get();
            c.tx_bytes += v.tx_bytes.get();
            c.drops += v.drops.get();
        }
        c
    }

    pub(super) fn status_of_vif(&self, vif: &VifSpec) -> VifStatus {
        let reg = self.registry();
        let Some(&index) = reg.by_name.get(&vif.name) else {
            return VifStatus {
                state: VifState::Down,
                features: None,
                queues_enabled: 0,
                lcore: None,
                broken: None,
                counters: VifCounters::default(),
                queue_pairs: Vec::new(),
            };
        };
        let rt = reg.vifs.get(&index);
        let counters = self.vif_counters(index);
        let lcore_id = |l: u8| self.lcores.get(usize::from(l)).map(|h| h.lcore);
        match rt.map(|r| &r.io) {
            Some(VifIo::Vhost) => {
                let st = self
                    .vhost_status
                    .lock()
                    .ok()
                    .and_then(|m| m.get(&index).cloned());
                let broken = st.as_ref().and_then(|s| s.broken.clone());
                let queues: Vec<VifQueue> = st
                    .as_ref()
                    .map(|s| {
                        s.queues
                            .iter()
                            .filter_map(|&(pair, l, pinned)| {
                                let rings = |ring: u16| {
                                    self.lcores
                                        .iter()
                                        .map(|h| h.counters.vring(index, ring))
                                        .sum::<u64>()
                                };
                                Some(VifQueue {
                                    queue: u32::from(pair),
                                    lcore: lcore_id(l)?,
                                    pinned,
                                    rx_packets: rings(2 * pair + 1),
                                    tx_packets: rings(2 * pair),
                                })
                            })
                            .collect()
                    })
                    .unwrap_or_default();
                let serving = st.as_ref().map(|s| s.lcore);
                // Connected once packets can flow both ways: a guest whose receive ring is not
                // with an lcore yet would lose what is sent to it.
                let (state, features, lent) = match st {
                    Some(s) if s.first_pair_lent => {
                        (VifState::Connected, s.features, s.queues_lent)
                    }
                    Some(s) => (
                        match s.state {
                            vhost_user::PortState::Listening => VifState::Listening,
                            vhost_user::PortState::Connecting => VifState::Connecting,
                            vhost_user::PortState::Connected => VifState::Connecting,
                        },
                        s.features,
                        0,
                    ),
                    None => (VifState::Down, None, 0),
                };
                VifStatus {
                    state,
                    features,
                    queues_enabled: lent / 2,
                    lcore: serving.or(rt.and_then(|r| r.lcore)).and_then(lcore_id),
                    broken,
                    counters,
                    queue_pairs: queues,
                }
            }
            Some(VifIo::Eth { port, .. }) => {
                let up = port.link().map(|l| l.up).unwrap_or(false);
                VifStatus {
                    state: if up { VifState::Up } else { VifState::Down },
                    features: None,
                    queues_enabled: 1,
                    lcore: rt.and_then(|r| r.lcore).and_then(lcore_id),
                    broken: None,
                    counters,
                    queue_pairs: Vec::new(),
                }
            }
            Some(VifIo::Kernel { monitor }) => {
                let mut counters = counters;
                // Frames the kernel could not put in the ring reached the vif and were
                // dropped: received and dropped, as in the lcore sums.
                let ring_full = monitor.stats().rx_ring_full;
                counters.rx_packets += ring_full;
                counters.drops += ring_full;
                VifStatus {
                    state: if monitor.link_up() {
                        VifState::Up
                    } else {
                        VifState::Down
                    },
                    features: None,
                    queues_enabled: 1,
                    lcore: rt.and_then(|r| r.lcore).and_then(lcore_id),
                    broken: None,
                    counters,
                    queue_pairs: Vec::new(),
                }
            }
            None => VifStatus {
                state: VifState::Down,
                features: None,
                queues_enabled: 0,
                lcore: None,
                broken: None,
                counters,
                queue_pairs: Vec::new(),
            },
        }
    }

    pub(super) fn counter_totals(&self) -> Result<Stats, DataplaneError> {
        let (kernel_drops, retired) = self.kernel_ring_drops();
        let mut total = Stats {
            rx_packets: 0,
            rx_bytes: 0,
            tx_packets: 0,
            tx_bytes: 0,
            drops: 0,
            nat_translated: 0,
            lcores: Vec::new(),
        };
        for l in &self.lcores {
            let mut s = LcoreStats {
                lcore: l.lcore,
                rx_packets: 0,
                rx_bytes: 0,
                tx_packets: 0,
                tx_bytes: 0,
                drops: 0,
                queued_to_lcores: l.stats.queued_to_lcores.get(),
                taken_from_lcores: l.stats.taken_from_lcores.get(),
                // ICMP errors are counted as the drops they replace, and sent.
                // Sent out of a vif for the agent: made here.
                packets_made: l.stats.segments_added.get()
                    + l.counters.frames_made.load(Ordering::Relaxed)
                    + l.stats.from_agent.get()
                    + l.stats.drops(DropReason::MtuIcmpSent)
                    + l.stats.drops(DropReason::TtlExceededIcmpSent)
                    + l.counters
                        .mirror_copies
                        .iter()
                        .map(|c| c.load(Ordering::Relaxed))
                        .sum::<u64>(),
                busy_ratio: busy_ratio(&l.counters),
                poll_gaps: poll_gaps(&l.counters),
            };
            for v in 0..MAX_VIFS as u16 {
                let c = l.stats.vif(v);
                s.rx_packets += c.rx_packets.get();
                s.rx_bytes += c.rx_bytes.get();
                s.tx_packets += c.tx_packets.get();
                s.tx_bytes += c.tx_bytes.get();
            }
            s.drops = DropReason::ALL.iter().map(|&r| l.stats.drops(r)).sum();
            // Frames the kernel dropped at a kernel vif's ring reached the vif, not vrouterd:
            // received and dropped, so the sums still balance.
            let ring_full = kernel_drops.get(&l.lcore).copied().unwrap_or(0);
            s.rx_packets += ring_full;
            s.drops += ring_full;
            // Handed to the agent (pkt0): sent, to the agent.
            s.tx_packets += l.stats.to_agent.get();
            total.nat_translated += l.stats.nat_translated.get();
            total.rx_packets += s.rx_packets;
            total.rx_bytes += s.rx_bytes;
            total.tx_packets += s.tx_packets;
            total.tx_bytes += s.tx_bytes;
            total.drops += s.drops;
            total.lcores.push(s);
        }
        total.rx_packets += retired;
        total.drops += retired;
        Ok(total)
    }

    pub(super) fn drop_totals(&self) -> Result<DropStats, DataplaneError> {
        let mut d = DropStats::default();
        for &r in DropReason::ALL {
            let n: u64 = self.lcores.iter().map(|l| l.stats.drops(r)).sum();
            d.reasons.insert(r.name().to_owned(), n);
            d.total += n;
        }
        let (kernel, retired) = self.kernel_ring_drops();
        let ring_full = kernel.values().sum::<u64>() + retired;
        d.reasons.insert("kernel_ring_full".to_owned(), ring_full);
        d.total += ring_full;
        // The agent thread's: traps the lcores handed over (counted to_agent there) that the
        // agent never got, and agent sends / injects that found no buffer or queue room.
        if let Some(a) = self.agent.get() {
            let c = &a.counters;
            for (name, n) in [
                ("agent_traps_lost", c.traps_lost.load(Ordering::Relaxed)),
                (
                    "agent_inject_failed",
                    c.inject_failed.load(Ordering::Relaxed),
                ),
                ("agent_held_full", c.held_full.load(Ordering::Relaxed)),
                ("agent_held_repeat", c.held_repeat.load(Ordering::Relaxed)),
            ] {
                d.reasons.insert(name.to_owned(), n);
                d.total += n;
            }
        }
        Ok(d)
    }

    /// The agent channel's own counters (GET /agent), all 0 without `--agent-socket`.
    pub(super) fn agent_counters(&self) -> control_api::api::AgentStats {
        let Some(a) = self.agent.get() else {
            return control_api::api::AgentStats::default();
        };
        let c = &a.counters;
        let n = |x: &std::sync::atomic::AtomicU64| x.load(Ordering::Relaxed);
        control_api::api::AgentStats {
            enabled: true,
            connected: a.connected.load(Ordering::Relaxed),
            connections: n(&c.connections),
            traps_sent: n(&c.traps_sent),
            traps_lost: n(&c.traps_lost),
            messages: n(&c.messages),
            malformed: n(&c.malformed),
            verdicts: n(&c.verdicts),
            verdicts_failed: n(&c.verdicts_failed),
            sends: n(&c.sends),
            injects: n(&c.injects),
            inject_failed: n(&c.inject_failed),
            held_full: n(&c.held_full),
            held_repeat: n(&c.held_repeat),
        }
    }

    pub(super) fn health_report(&self) -> Result<Health, DataplaneError> {
        let usage = self.pool.usage();
        let mut problems = Vec::new();
        if u64::from(usage.in_use) * 10 > u64::from(usage.size) * 9 {
            problems.push(format!(
                "mempool {} is {}% in use",
                self.pool.name(),
                usage.in_use * 100 / usage.size.max(1)
            ));
        }
        let rings: Vec<RingHealth> = self
            .lcores
            .iter()
            .map(|l| RingHealth {
                name: l.inbox.ring_name().to_owned(),
                used: u64::from(l.inbox.count()),
                size: u64::from(l.inbox.capacity()),
            })
            .collect();
        for r in &rings {
            if r.used * 10 > r.size * 9 {
                problems.push(format!(
                    "ring {} is nearly full ({}/{})",
                    r.name, r.used, r.size
                ));
            }
        }
        // A core whose loop counter stands still is stuck, not idle (idle ones still loop).
        {
            let now = Instant::now();
            let mut watch = self.progress.lock().unwrap_or_else(|e| e.into_inner());
            for (i, l) in self.lcores.iter().enumerate() {
                let polls = l.counters.polls.load(Ordering::Relaxed);
                if let Some(stuck) = watch.observe(i, polls, now) {
                    problems.push(format!(
                        "forwarding lcore {} has not polled for {:.1} s",
                        l.lcore,
                        stuck.as_secs_f64()
                    ));
                }
            }
            let loops = self.vhost_loops.load(Ordering::Relaxed);
            if let Some(stuck) = watch.observe(self.lcores.len(), loops, now) {
                problems.push(format!(
                    "the vhost core has not run for {:.1} s: vhost-user sockets go unserved",
                    stuck.as_secs_f64()
                ));
            }
        }
        // The status lock is released before the registry is taken (the lock order above).
        let broken: Vec<(u16, String)> = self.vhost_status.lock().map_or_else(
            |_| Vec::new(),
            |m| {
                m.iter()
                    .filter_map(|(&i, s)| s.broken.clone().map(|why| (i, why)))
                    .collect()
            },
        );
        if !broken.is_empty() {
            let reg = self.registry();
            for (idx, why) in broken {
                let name = reg.vifs.get(&idx).map_or("?", |r| r.name.as_str());
                problems.push(format!(
                    "vif {name}: {why}; its queues are stopped until the guest reconnects or \
                     resets them"
                ));
            }
        }
        Ok(Health {
            status: if problems.is_empty() {
                HealthStatus::Ok
            } else {
                HealthStatus::Degraded
            },
            mempools: vec![MempoolHealth {
                name: self.pool.name().to_owned(),
                in_use: u64::from(usage.in_use),
                size: u64::from(usage.size),
            }],
            rings,
            lcores: self
                .lcores
                .iter()
                .map(|l| LcoreHealth {
                    lcore: l.lcore,
                    role: "forwarding".to_owned(),
                    busy_ratio: busy_ratio(&l.counters),
                })
                .collect(),
            vifs: Vec::new(),
            problems,
        })
    }

    pub(super) fn flow_page(&self, q: &FlowQuery) -> Result<FlowPage, DataplaneError> {
        let vrf = q
            .vrf
            .map(|v| u16::try_from(v).map_err(|_| rejected(format!("vrf {v} is out of range"))))
            .transpose()?;
        let cursor = match &q.cursor {
            Some(c) => c
                .parse::<usize>()
                .map_err(|_| rejected(format!("cursor {c:?} is not one this API returned")))?,
            None => 0,
        };
        let limit = q.limit.unwrap_or(1000) as usize;
        let page = self.policies.table().flows(vrf, limit, cursor);
        let now = flow_clock_ms();
        Ok(FlowPage {
            flows: page.flows.iter().map(|f| flow_entry(f, now)).collect(),
            next_cursor: page.next.map(|n| n.to_string()),
        })
    }

    pub(super) fn flush_flow_table(&self) -> Result<u64, DataplaneError> {
        Ok(self.policies.table().flush() as u64)
    }

    pub(super) fn flow_table_stats(&self) -> Result<FlowStats, DataplaneError> {
        let s = self.policies.table().stats();
        Ok(FlowStats {
            capacity: s.capacity as u64,
            active: s.active as u64,
            created: s.created,
            aged: s.aged,
            evicted: s.evicted,
            table_full_drops: s.table_full,
            export: self
                .flow_export
                .get()
                .map(|(collector, e)| FlowExportStats {
                    collector: *collector,
                    records: e.records.load(Ordering::Relaxed),
                    messages: e.messages.load(Ordering::Relaxed),
                    dropped_records: e.dropped_records.load(Ordering::Relaxed),
                    send_errors: e.send_errors.load(Ordering::Relaxed),
                }),
        })
    }
}

fn poll_gaps(c: &LoopCounters) -> PollGaps {
    let [over_10us, over_100us, over_1ms] =
        c.poll_gaps.each_ref().map(|n| n.load(Ordering::Relaxed));
    PollGaps {
        over_10us,
        over_100us,
        over_1ms,
    }
}

pub(super) fn busy_ratio(c: &LoopCounters) -> f64 {
    let total = c.total_cycles.load(Ordering::Relaxed);
    if total == 0 {
        return 0.0;
    }
    c.busy_cycles.load(Ordering::Relaxed) as f64 / total as f64
}
