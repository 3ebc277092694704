//! Flow export: IPFIX records of the flow table's flows to a collector, from a thread of its
//! own (never a forwarding lcore). It reads the table every `poll` interval as `GET /flows`
//! does and keeps what it has reported of each flow: a flow gone from the table gets its final
//! record (what it did since its last one), a flow running longer than the active timeout a
//! periodic one. A flow leaves the table only after it has been idle for its protocol's
//! timeout, so its last counters are read before it goes, unless it ends faster than one
//! poll (a TCP flow closed and aged within it: its last packets are then in no record).
//! Templates go first and every `template_every`; records beyond `max_rate` per second are
//! dropped and counted.

pub mod ipfix;

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use tracing::{info, warn};
use vrouter::flow::{FlowInfo, FlowKey, FlowTable, FlowVerdict, TcpState};

use ipfix::{Encoder, EndReason, Record};

/// Where and how often to export.
#[derive(Debug, Clone)]
pub struct ExportConfig {
    pub collector: SocketAddr,
    /// A running flow is reported at least this often.
    pub active_timeout: Duration,
    /// How often the table is read.
    pub poll: Duration,
    /// Records per second at most; the rest are dropped (counted).
    pub max_rate: u32,
    pub template_every: Duration,
}

/// What the exporter has done, for logs and tests.
#[derive(Debug, Default)]
pub struct ExportStats {
    pub records: AtomicU64,
    pub messages: AtomicU64,
    pub dropped_records: AtomicU64,
    pub send_errors: AtomicU64,
}

/// What was last reported of one flow.
struct Reported {
    info: FlowInfo,
    start_ms: u64,
    /// Wall-clock ms of the last record sent, and the counters it covered up to.
    last_record_ms: u64,
    packets: u64,
    bytes: u64,
}

/// A flow as the exporter follows it: its slot and its key (a slot reused is a new flow).
type Id = (u32, FlowKey);

fn wall_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

fn addr(key: &FlowKey, a: u128) -> IpAddr {
    if key.v6 {
        IpAddr::V6(Ipv6Addr::from(a))
    } else {
        IpAddr::V4(Ipv4Addr::from(a as u32))
    }
}

/// Follows the table from poll to poll and turns what changed into records.
pub struct Exporter {
    cfg: ExportConfig,
    flows: HashMap<Id, Reported>,
    encoder: Encoder,
    /// Records left to send in the current second, and when it began.
    budget: u32,
    second: Instant,
    stats: Arc<ExportStats>,
}

impl Exporter {
    pub fn new(cfg: ExportConfig, stats: Arc<ExportStats>) -> Exporter {
        Exporter {
            budget: cfg.max_rate,
            cfg,
            flows: HashMap::new(),
            encoder: Encoder::new(1),
            second: Instant::now(),
            stats,
        }
    }

    /// One poll: the flows now in the table (`table_now_ms` is the table's clock, `now_ms` the
    /// wall clock at the same moment); returns the records due.
    pub fn poll(&mut self, current: Vec<FlowInfo>, table_now_ms: u64, now_ms: u64) -> Vec<Record> {
        let mut records = Vec::new();
        let mut seen: HashMap<Id, FlowInfo> =
            current.into_iter().map(|f| ((f.index, f.key), f)).collect();
        // Flows gone since the last poll: their final record.
        let gone: Vec<Id> = self
            .flows
            .keys()
            .filter(|id| !seen.contains_key(id))
            .copied()
            .collect();
        for id in gone {
            if let Some(r) = self.flows.remove(&id) {
                let end = now_ms.saturating_sub(table_now_ms.saturating_sub(r.info.last_seen));
                let reason = match r.info.tcp {
                    TcpState::Fin | TcpState::Rst => EndReason::EndOfFlow,
                    _ => EndReason::Idle,
                };
                records.push(record(&r, &r.info, end, reason));
            }
        }
        for (id, f) in seen.drain() {
            let end = now_ms.saturating_sub(table_now_ms.saturating_sub(f.last_seen));
            match self.flows.get_mut(&id) {
                None => {
                    // New: it began about when it was first seen (its first packet's time is
                    // not kept), at most one poll before.
                    let start = end.min(now_ms);
                    self.flows.insert(
                        id,
                        Reported {
                            info: f,
                            start_ms: start,
                            last_record_ms: now_ms,
                            packets: 0,
                            bytes: 0,
                        },
                    );
                }
                Some(r) if f.packets < r.info.packets => {
                    // Counters went back: the flow ended and one with the same key took its
                    // slot within a poll. The old one's final record, then the new one.
                    let last = now_ms.saturating_sub(table_now_ms.saturating_sub(r.info.last_seen));
                    records.push(record(r, &r.info, last, EndReason::Idle));
                    *r = Reported {
                        info: f,
                        start_ms: end.min(now_ms),
                        last_record_ms: now_ms,
                        packets: 0,
                        bytes: 0,
                    };
                }
                Some(r) => {
                    r.info = f;
                    let active = Duration::from_millis(now_ms.saturating_sub(r.last_record_ms));
                    if active >= self.cfg.active_timeout && r.info.packets > r.packets {
                        records.push(record(r, &r.info, end, EndReason::Active));
                        r.packets = r.info.packets;
                        r.bytes = r.info.bytes;
                        r.last_record_ms = now_ms;
                    }
                }
            }
        }
        // New flows with packets already wait for the active timeout or their end.
        self.limit(records)
    }

    /// Keeps at most the second's budget of `records`.
    fn limit(&mut self, mut records: Vec<Record>) -> Vec<Record> {
        if self.second.elapsed() >= Duration::from_secs(1) {
            self.second = Instant::now();
            self.budget = self.cfg.max_rate;
        }
        let keep = records.len().min(self.budget as usize);
        let dropped = records.len() - keep;
        records.truncate(keep);
        self.budget -= keep as u32;
        if dropped > 0 {
            self.stats
                .dropped_records
                .fetch_add(dropped as u64, Ordering::Relaxed);
        }
        records
    }
}

/// A record of what `f` did since `r`'s last record.
fn record(r: &Reported, f: &FlowInfo, end_ms: u64, reason: EndReason) -> Record {
    Record {
        src: addr(&f.key, f.key.src),
        dst: addr(&f.key, f.key.dst),
        sport: f.key.sport,
        dport: f.key.dport,
        proto: f.key.proto,
        vrf: u32::from(f.key.vrf),
        in_vif: u32::from(f.in_vif),
        out_vif: u32::from(f.out_vif),
        packets: f.packets.saturating_sub(r.packets),
        bytes: f.bytes.saturating_sub(r.bytes),
        start_ms: r.start_ms,
        end_ms: end_ms.max(r.start_ms),
        reason,
        dropped: f.verdict == FlowVerdict::Drop,
        translated: f.nat.filter(|k| !k.v6).map(|k| {
            (
                Ipv4Addr::from(k.src as u32),
                Ipv4Addr::from(k.dst as u32),
                k.sport,
                k.dport,
            )
        }),
    }
}

/// Every flow in `table`.
fn all_flows(table: &FlowTable) -> Vec<FlowInfo> {
    let mut flows = Vec::new();
    let mut cursor = 0;
    loop {
        let page = table.flows(None, 4096, cursor);
        flows.extend(page.flows);
        match page.next {
            Some(n) => cursor = n,
            None => return flows,
        }
    }
}

/// Starts the exporter thread; it runs until `stop`, then sends what the flows did since
/// their last records.
pub fn spawn(
    cfg: ExportConfig,
    table: Arc<FlowTable>,
    table_clock_ms: fn() -> u64,
    stop: Arc<AtomicBool>,
) -> std::io::Result<(std::thread::JoinHandle<()>, Arc<ExportStats>)> {
    let bind: SocketAddr = if cfg.collector.is_ipv4() {
        (Ipv4Addr::UNSPECIFIED, 0).into()
    } else {
        (Ipv6Addr::UNSPECIFIED, 0).into()
    };
    let socket = UdpSocket::bind(bind)?;
    socket.connect(cfg.collector)?;
    let stats = Arc::new(ExportStats::default());
    let thread_stats = Arc::clone(&stats);
    let handle = std::thread::Builder::new()
        .name("flow-export".into())
        .spawn(move || {
            info!(collector = %cfg.collector, "exporting flows over IPFIX");
            let mut exporter = Exporter::new(cfg.clone(), Arc::clone(&thread_stats));
            let mut last_templates: Option<Instant> = None;
            let send = |m: &[u8]| {
                if socket.send(m).is_err() {
                    thread_stats.send_errors.fetch_add(1, Ordering::Relaxed);
                } else {
                    thread_stats.messages.fetch_add(1, Ordering::Relaxed);
                }
            };
            loop {
                let stopping = stop.load(Ordering::Relaxed);
                let now_ms = wall_ms();
                let secs = (now_ms / 1000) as u32;
                let mut records = exporter.poll(all_flows(&table), table_clock_ms(), now_ms);
                if stopping {
                    // What every running flow did since its last record.
                    let left: Vec<Record> = exporter
                        .flows
                        .values()
                        .filter(|r| r.info.packets > r.packets)
                        .map(|r| record(r, &r.info, now_ms, EndReason::Forced))
                        .collect();
                    records.extend(left);
                }
                if last_templates.is_none_or(|t| t.elapsed() >= cfg.template_every) {
                    send(&exporter.encoder.templates(secs));
                    last_templates = Some(Instant::now());
                }
                if !records.is_empty() {
                    thread_stats
                        .records
                        .fetch_add(records.len() as u64, Ordering::Relaxed);
                    for m in exporter.encoder.data(&records, secs) {
                        send(&m);
                    }
                }
                if stopping {
                    break;
                }
                std::thread::sleep(cfg.poll);
            }
            let s = &thread_stats;
            let errors = s.send_errors.load(Ordering::Relaxed);
            if errors > 0 {
                warn!(errors, "flow export: messages the socket refused");
            }
            info!(
                records = s.records.load(Ordering::Relaxed),
                messages = s.messages.load(Ordering::Relaxed),
                dropped = s.dropped_records.load(Ordering::Relaxed),
                "flow export stopped"
            );
        })?;
    Ok((handle, stats))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn flow(index: u32, sport: u16, packets: u64, last_seen: u64) -> FlowInfo {
        FlowInfo {
            index,
            key: FlowKey {
                vrf: 1,
                v6: false,
                proto: 17,
                src: u128::from(u32::from(Ipv4Addr::new(198, 18, 1, 2))),
                dst: u128::from(u32::from(Ipv4Addr::new(198, 18, 2, 2))),
                sport,
                dport: 53,
            },
            verdict: FlowVerdict::Forward,
            tcp: TcpState::None,
            is_reverse: false,
            reverse: None,
            in_vif: 1,
            out_vif: 2,
            policy_gen: 0,
            nat: None,
            packets,
            bytes: packets * 100,
            last_seen,
        }
    }

    fn exporter() -> Exporter {
        Exporter::new(
            ExportConfig {
                collector: "127.0.0.1:4739".parse().unwrap(),
                active_timeout: Duration::from_secs(10),
                poll: Duration::from_secs(1),
                max_rate: 3,
                template_every: Duration::from_secs(60),
            },
            Arc::new(ExportStats::default()),
        )
    }

    #[test]
    fn flows_are_reported_when_they_end_and_while_they_run_long() {
        let mut e = exporter();
        // Table clock 5,000 ms = wall 1,000,000 ms.
        assert!(e
            .poll(vec![flow(1, 1000, 5, 4_900)], 5_000, 1_000_000)
            .is_empty());
        // Running 11 s: one active record with what it did so far.
        let r = e.poll(vec![flow(1, 1000, 50, 16_000)], 16_000, 1_011_000);
        assert_eq!(r.len(), 1);
        assert_eq!(
            (r[0].packets, r[0].bytes, r[0].reason),
            (50, 5000, EndReason::Active)
        );
        assert_eq!(r[0].start_ms, 999_900);
        // Then it ages out: the final record holds only what came after.
        let r = e.poll(vec![flow(1, 1000, 70, 17_000)], 18_000, 1_013_000);
        assert!(r.is_empty(), "not 10 s since the last record");
        let r = e.poll(vec![], 40_000, 1_035_000);
        assert_eq!(r.len(), 1);
        assert_eq!((r[0].packets, r[0].reason), (20, EndReason::Idle));
        assert_eq!(r[0].end_ms, 1_012_000, "it ended when it last saw a packet");
        // A slot reused by another flow is another flow.
        e.poll(vec![flow(2, 1000, 1, 40_000)], 40_000, 1_035_000);
        let r = e.poll(vec![flow(2, 2000, 3, 41_000)], 41_000, 1_036_000);
        assert_eq!(r.len(), 1);
        assert_eq!((r[0].sport, r[0].packets), (1000, 1));
    }

    #[test]
    fn a_flow_back_in_its_slot_within_a_poll_is_a_new_flow() {
        let mut e = exporter();
        assert!(e
            .poll(vec![flow(2, 1000, 1, 500)], 600, 1_000_000)
            .is_empty());
        assert!(e
            .poll(vec![flow(2, 1000, 5, 1_500)], 1_600, 1_001_000)
            .is_empty());
        // Counters went back: the old flow's final record (5 packets), the new one from zero.
        let r = e.poll(vec![flow(2, 1000, 2, 2_500)], 2_600, 1_002_000);
        assert_eq!(r.len(), 1);
        assert_eq!((r[0].packets, r[0].reason), (5, EndReason::Idle));
        let r = e.poll(vec![], 100_000, 1_100_000);
        assert_eq!((r.len(), r[0].packets), (1, 2), "the new flow's own count");
    }

    #[test]
    fn records_beyond_the_rate_are_dropped_and_counted() {
        let mut e = exporter();
        let flows: Vec<FlowInfo> = (0..5).map(|i| flow(i, 1000 + i as u16, 1, 0)).collect();
        e.poll(flows, 0, 1_000_000);
        let r = e.poll(vec![], 100_000, 1_100_000);
        assert_eq!(r.len(), 3, "max_rate 3 per second");
        assert_eq!(e.stats.dropped_records.load(Ordering::Relaxed), 2);
    }
}
