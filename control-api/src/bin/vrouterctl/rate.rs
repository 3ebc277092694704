//! Live views: `vif list --rate`, `stats --rate` and `flows top` sample vrouterd's counters
//! every interval and show what changed per second, redrawn in place on a terminal like `top`;
//! with `--json`, one JSON line per interval for scripts.

use std::collections::HashMap;
use std::io::{IsTerminal, Write};
use std::net::IpAddr;
use std::time::{Duration, Instant};

use clap::Args;
use control_api::api::{FlowEntry, FlowQuery, Stats, VifInfo};
use control_api::Client;
use serde::Serialize;

use crate::output::table;

/// How often and how many times a live view refreshes.
#[derive(Args, Clone, Copy)]
pub struct Refresh {
    /// Seconds between refreshes.
    #[arg(long, default_value_t = 1.0, value_parser = positive_seconds)]
    pub interval: f64,
    /// Stop after this many refreshes (default: until interrupted).
    #[arg(long)]
    pub count: Option<u64>,
}

fn positive_seconds(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(v) if v.is_finite() && (0.05..=3600.0).contains(&v) => Ok(v),
        _ => Err(format!("{s:?}: seconds between 0.05 and 3600")),
    }
}

/// Per-second rates of one vif between two samples.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct VifRate {
    pub name: String,
    pub state: String,
    pub rx_pps: f64,
    pub rx_mbit_s: f64,
    pub tx_pps: f64,
    pub tx_mbit_s: f64,
    pub drops_per_s: f64,
}

/// Per-second rates of one lcore between two samples.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LcoreRate {
    pub lcore: u32,
    pub rx_pps: f64,
    pub tx_pps: f64,
    pub drops_per_s: f64,
    /// Share of polls that found work, as vrouterd reports it now.
    pub busy_pct: f64,
}

/// Per-second rates of one flow between two samples.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct FlowRate {
    pub vrf: u32,
    pub src: String,
    pub dst: String,
    pub proto: u8,
    pub pps: f64,
    pub mbit_s: f64,
    pub packets: u64,
    pub bytes: u64,
}

/// `now - before` over `secs`, never negative (a counter that went back, e.g. a vif removed
/// and added again, reads as no traffic rather than a huge rate).
fn per_second(now: u64, before: u64, secs: f64) -> f64 {
    now.saturating_sub(before) as f64 / secs
}

fn mbit(bytes_per_s: f64) -> f64 {
    bytes_per_s * 8.0 / 1e6
}

/// Rates of the vifs of `now`; a vif not in `before` counts from zero.
pub fn vif_rates(before: &[VifInfo], now: &[VifInfo], secs: f64) -> Vec<VifRate> {
    let old: HashMap<&str, _> = before
        .iter()
        .map(|v| (v.config.name.as_str(), v.status.counters))
        .collect();
    now.iter()
        .map(|v| {
            let c = v.status.counters;
            let b = old.get(v.config.name.as_str()).copied().unwrap_or_default();
            VifRate {
                name: v.config.name.clone(),
                state: v.status.state.to_string(),
                rx_pps: per_second(c.rx_packets, b.rx_packets, secs),
                rx_mbit_s: mbit(per_second(c.rx_bytes, b.rx_bytes, secs)),
                tx_pps: per_second(c.tx_packets, b.tx_packets, secs),
                tx_mbit_s: mbit(per_second(c.tx_bytes, b.tx_bytes, secs)),
                drops_per_s: per_second(c.drops, b.drops, secs),
            }
        })
        .collect()
}

/// Rates of the lcores of `now`.
pub fn lcore_rates(before: &Stats, now: &Stats, secs: f64) -> Vec<LcoreRate> {
    now.lcores
        .iter()
        .map(|l| {
            let b = before.lcores.iter().find(|b| b.lcore == l.lcore);
            let (rx, tx, drops) = b.map_or((0, 0, 0), |b| (b.rx_packets, b.tx_packets, b.drops));
            LcoreRate {
                lcore: l.lcore,
                rx_pps: per_second(l.rx_packets, rx, secs),
                tx_pps: per_second(l.tx_packets, tx, secs),
                drops_per_s: per_second(l.drops, drops, secs),
                busy_pct: l.busy_ratio * 100.0,
            }
        })
        .collect()
}

/// A flow as it is identified across samples: its slot and its tuple (a slot reused by
/// another flow is another flow).
type FlowKey = (u64, u32, IpAddr, IpAddr, u8, u16, u16);

fn key(f: &FlowEntry) -> FlowKey {
    (f.index, f.vrf, f.src, f.dst, f.proto, f.sport, f.dport)
}

/// The `n` flows of `now` that moved the most bytes per second since `before` (a flow new
/// since then counts from zero), largest first.
pub fn top_flows(before: &[FlowEntry], now: &[FlowEntry], secs: f64, n: usize) -> Vec<FlowRate> {
    let old: HashMap<FlowKey, (u64, u64)> = before
        .iter()
        .map(|f| (key(f), (f.packets, f.bytes)))
        .collect();
    let mut rates: Vec<FlowRate> = now
        .iter()
        .map(|f| {
            let (p, b) = old.get(&key(f)).copied().unwrap_or((0, 0));
            FlowRate {
                vrf: f.vrf,
                src: format!("{}:{}", f.src, f.sport),
                dst: format!("{}:{}", f.dst, f.dport),
                proto: f.proto,
                pps: per_second(f.packets, p, secs),
                mbit_s: mbit(per_second(f.bytes, b, secs)),
                packets: f.packets,
                bytes: f.bytes,
            }
        })
        .collect();
    rates.sort_by(|a, b| b.mbit_s.total_cmp(&a.mbit_s).then(b.pps.total_cmp(&a.pps)));
    rates.truncate(n);
    rates
}

fn fmt_rate(v: f64) -> String {
    if v >= 1e6 {
        format!("{:.2}M", v / 1e6)
    } else if v >= 1e3 {
        format!("{:.1}k", v / 1e3)
    } else {
        format!("{v:.0}")
    }
}

pub fn vif_table(rates: &[VifRate]) -> String {
    let rows: Vec<Vec<String>> = rates
        .iter()
        .map(|r| {
            vec![
                r.name.clone(),
                r.state.clone(),
                fmt_rate(r.rx_pps),
                format!("{:.1}", r.rx_mbit_s),
                fmt_rate(r.tx_pps),
                format!("{:.1}", r.tx_mbit_s),
                fmt_rate(r.drops_per_s),
            ]
        })
        .collect();
    table(
        &[
            "NAME",
            "STATE",
            "RX_PPS",
            "RX_MBIT/S",
            "TX_PPS",
            "TX_MBIT/S",
            "DROPS/S",
        ],
        &rows,
    )
}

pub fn lcore_table(rates: &[LcoreRate]) -> String {
    let rows: Vec<Vec<String>> = rates
        .iter()
        .map(|r| {
            vec![
                r.lcore.to_string(),
                fmt_rate(r.rx_pps),
                fmt_rate(r.tx_pps),
                fmt_rate(r.drops_per_s),
                format!("{:.0}%", r.busy_pct),
            ]
        })
        .collect();
    table(&["LCORE", "RX_PPS", "TX_PPS", "DROPS/S", "BUSY"], &rows)
}

pub fn flow_table(rates: &[FlowRate]) -> String {
    let rows: Vec<Vec<String>> = rates
        .iter()
        .map(|r| {
            vec![
                r.vrf.to_string(),
                r.src.clone(),
                r.dst.clone(),
                r.proto.to_string(),
                fmt_rate(r.pps),
                format!("{:.1}", r.mbit_s),
                r.packets.to_string(),
                r.bytes.to_string(),
            ]
        })
        .collect();
    table(
        &[
            "VRF",
            "SOURCE",
            "DESTINATION",
            "PROTO",
            "PPS",
            "MBIT/S",
            "PACKETS",
            "BYTES",
        ],
        &rows,
    )
}

/// Every flow, following cursors to the end.
pub async fn all_flows(c: &Client) -> anyhow::Result<Vec<FlowEntry>> {
    let mut query = FlowQuery::default();
    let mut page = c.flows(&query).await?;
    let mut flows = std::mem::take(&mut page.flows);
    while let Some(cursor) = page.next_cursor.take() {
        query.cursor = Some(cursor);
        page = c.flows(&query).await?;
        flows.append(&mut page.flows);
    }
    Ok(flows)
}

/// Samples with `sample` every `refresh.interval`, and after each interval shows what
/// `rates` makes of the last two samples: redrawn in place on a terminal, a JSON line each
/// with `json`.
pub async fn watch<S, R, Fut>(
    refresh: Refresh,
    json: bool,
    mut sample: impl FnMut() -> Fut,
    rates: impl Fn(&S, &S, f64) -> Vec<R>,
    render: impl Fn(&[R]) -> String,
) -> anyhow::Result<()>
where
    Fut: std::future::Future<Output = anyhow::Result<S>>,
    R: Serialize,
{
    let interval = Duration::from_secs_f64(refresh.interval);
    let redraw = !json && std::io::stdout().is_terminal();
    let mut before = sample().await?;
    let mut then = Instant::now();
    let mut shown = 0u64;
    while refresh.count.is_none_or(|n| shown < n) {
        tokio::time::sleep(interval.saturating_sub(then.elapsed())).await;
        let now = sample().await?;
        let at = Instant::now();
        let secs = at.duration_since(then).as_secs_f64().max(1e-3);
        let r = rates(&before, &now, secs);
        let mut out = std::io::stdout().lock();
        if json {
            writeln!(out, "{}", serde_json::to_string(&r)?)?;
        } else {
            if redraw {
                // Home and clear, as top does.
                write!(out, "\x1b[H\x1b[2J")?;
            } else if shown > 0 {
                writeln!(out)?;
            }
            write!(out, "{}", render(&r))?;
        }
        out.flush()?;
        (before, then) = (now, at);
        shown += 1;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use control_api::api::LcoreStats;

    fn vif(name: &str, rx: u64, rx_bytes: u64, drops: u64) -> VifInfo {
        let mut v: VifInfo = serde_json::from_value(serde_json::json!({
            "name": name, "type": "tap", "vrf": 0, "mac": "02:00:00:00:00:01", "iface": "t0",
            "index": 1, "vrouter_mac": "00:00:5e:00:01:00", "state": "up", "queues_enabled": 1,
            "counters": {"rx_packets": 0, "rx_bytes": 0, "tx_packets": 0, "tx_bytes": 0, "drops": 0}
        }))
        .unwrap();
        v.status.counters.rx_packets = rx;
        v.status.counters.rx_bytes = rx_bytes;
        v.status.counters.drops = drops;
        v
    }

    #[test]
    fn vif_rates_are_differences_per_second() {
        let before = [vif("a", 100, 10_000, 0), vif("gone", 5, 5, 5)];
        let now = [vif("a", 2100, 260_000, 10), vif("new", 50, 500, 0)];
        let r = vif_rates(&before, &now, 2.0);
        assert_eq!(r.len(), 2);
        assert_eq!(
            (r[0].rx_pps, r[0].rx_mbit_s, r[0].drops_per_s),
            (1000.0, 1.0, 5.0)
        );
        assert_eq!(
            r[1].rx_pps, 25.0,
            "a vif new since the last sample counts from zero"
        );
        // A counter that went back (vif re-added) is no traffic, not a wrapped huge rate.
        let r = vif_rates(&now, &before, 1.0);
        assert_eq!(r[0].rx_pps, 0.0);
    }

    #[test]
    fn lcore_rates_follow_each_lcore() {
        let l = |lcore, rx, busy| LcoreStats {
            lcore,
            rx_packets: rx,
            busy_ratio: busy,
            ..LcoreStats::default()
        };
        let before = Stats {
            lcores: vec![l(1, 1000, 0.1), l(3, 0, 0.0)],
            ..Stats::default()
        };
        let now = Stats {
            lcores: vec![l(1, 4000, 0.5), l(3, 500, 0.25)],
            ..Stats::default()
        };
        let r = lcore_rates(&before, &now, 0.5);
        assert_eq!((r[0].lcore, r[0].rx_pps, r[0].busy_pct), (1, 6000.0, 50.0));
        assert_eq!((r[1].lcore, r[1].rx_pps, r[1].busy_pct), (3, 1000.0, 25.0));
    }

    #[test]
    fn top_flows_ranks_by_recent_bytes_not_totals() {
        let f = |index, sport, packets, bytes| FlowEntry {
            index,
            vrf: 1,
            src: "198.18.1.2".parse().unwrap(),
            dst: "198.18.2.2".parse().unwrap(),
            proto: 17,
            sport,
            dport: 53,
            action: control_api::api::FlowAction::Forward,
            reverse: None,
            packets,
            bytes,
            tcp_state: None,
            idle_ms: 0,
            translated: None,
        };
        // Flow 1 is the biggest in total but idle now; flow 2 moves the most; slot 3 was
        // reused by another flow (other port), which counts from zero.
        let before = [
            f(1, 1000, 1_000_000, 1_000_000_000),
            f(2, 2000, 10, 1000),
            f(3, 3000, 5, 500),
        ];
        let now = [
            f(1, 1000, 1_000_000, 1_000_000_000),
            f(2, 2000, 1010, 1_001_000),
            f(3, 3001, 100, 10_000),
        ];
        let top = top_flows(&before, &now, 1.0, 2);
        assert_eq!(top.len(), 2);
        assert_eq!(top[0].src, "198.18.1.2:2000");
        assert_eq!((top[0].pps, top[0].mbit_s), (1000.0, 8.0));
        assert_eq!(top[1].src, "198.18.1.2:3001");
        assert_eq!(top[1].pps, 100.0);
    }
}
