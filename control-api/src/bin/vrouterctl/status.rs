//! `vrouterctl stats`, `dropstats`, `agent`, `health` and `metrics`: how vrouterd is doing.

use control_api::api::{AgentStats, DropStats, Health, Stats};

use crate::output::table;

/// Packet counters per lcore, then the totals.
pub fn stats(s: &Stats) -> String {
    let mut rows: Vec<Vec<String>> = s
        .lcores
        .iter()
        .map(|l| {
            vec![
                l.lcore.to_string(),
                l.rx_packets.to_string(),
                l.rx_bytes.to_string(),
                l.tx_packets.to_string(),
                l.tx_bytes.to_string(),
                l.drops.to_string(),
                l.queued_to_lcores.to_string(),
                l.taken_from_lcores.to_string(),
                l.packets_made.to_string(),
                format!("{:.0}%", l.busy_ratio * 100.0),
                l.poll_gaps.over_100us.to_string(),
            ]
        })
        .collect();
    rows.push(vec![
        "total".into(),
        s.rx_packets.to_string(),
        s.rx_bytes.to_string(),
        s.tx_packets.to_string(),
        s.tx_bytes.to_string(),
        s.drops.to_string(),
        String::new(),
        String::new(),
        String::new(),
        String::new(),
        String::new(),
    ]);
    table(
        &[
            "LCORE",
            "RX_PKTS",
            "RX_BYTES",
            "TX_PKTS",
            "TX_BYTES",
            "DROPS",
            "TO_LCORES",
            "FROM_LCORES",
            "MADE",
            "BUSY",
            "GAPS>100US",
        ],
        &rows,
    )
}

/// One row per underlay neighbour.
pub fn neighbours(n: &[control_api::api::Neighbour]) -> String {
    let rows: Vec<Vec<String>> = n
        .iter()
        .map(|n| {
            vec![
                n.address.to_string(),
                n.vif.clone(),
                serde_json::to_value(n.state)
                    .ok()
                    .and_then(|v| v.as_str().map(str::to_string))
                    .unwrap_or_default(),
                n.mac.map_or_else(|| "-".to_owned(), |m| m.to_string()),
                n.confirmed_secs_ago
                    .map_or_else(|| "-".to_owned(), |s| format!("{s}s")),
                n.requests.to_string(),
                n.learned.to_string(),
                n.mac_changes.to_string(),
                n.failures.to_string(),
            ]
        })
        .collect();
    table(
        &[
            "ADDRESS",
            "VIF",
            "STATE",
            "MAC",
            "CONFIRMED",
            "REQUESTS",
            "LEARNED",
            "CHANGES",
            "FAILURES",
        ],
        &rows,
    )
}

/// Drops per reason, then the total.
pub fn dropstats(d: &DropStats) -> String {
    let mut rows: Vec<Vec<String>> = d
        .reasons
        .iter()
        .map(|(r, n)| vec![r.clone(), n.to_string()])
        .collect();
    rows.push(vec!["total".into(), d.total.to_string()]);
    table(&["REASON", "PACKETS"], &rows)
}

/// The agent channel: whether it runs and an agent is connected, then one row per counter.
pub fn agent(a: &AgentStats) -> String {
    if !a.enabled {
        return "pkt0 not enabled (vrouterd --agent-socket)\n".into();
    }
    let mut s = format!(
        "pkt0 {}\n",
        if a.connected {
            "agent connected"
        } else {
            "no agent connected"
        }
    );
    let rows: Vec<Vec<String>> = [
        ("connections", a.connections),
        ("traps_sent", a.traps_sent),
        ("traps_lost", a.traps_lost),
        ("messages", a.messages),
        ("malformed", a.malformed),
        ("verdicts", a.verdicts),
        ("verdicts_failed", a.verdicts_failed),
        ("sends", a.sends),
        ("injects", a.injects),
        ("inject_failed", a.inject_failed),
        ("held_full", a.held_full),
        ("held_repeat", a.held_repeat),
    ]
    .iter()
    .map(|(k, v)| vec![(*k).to_string(), v.to_string()])
    .collect();
    s.push_str(&table(&["COUNTER", "VALUE"], &rows));
    s
}

/// The overall status and its problems, then one row per mempool, ring, lcore and vif.
pub fn health(h: &Health) -> String {
    let mut s = format!(
        "status {}\n",
        serde_json::to_value(h.status)
            .ok()
            .and_then(|v| v.as_str().map(str::to_string))
            .unwrap_or_default()
    );
    for p in &h.problems {
        s.push_str(&format!("problem: {p}\n"));
    }
    let mut rows: Vec<Vec<String>> = h
        .mempools
        .iter()
        .map(|m| {
            vec![
                "mempool".into(),
                m.name.clone(),
                format!("{}/{}", m.in_use, m.size),
            ]
        })
        .collect();
    rows.extend(h.rings.iter().map(|r| {
        vec![
            "ring".into(),
            r.name.clone(),
            format!("{}/{}", r.used, r.size),
        ]
    }));
    rows.extend(h.lcores.iter().map(|l| {
        vec![
            format!("lcore {}", l.role),
            l.lcore.to_string(),
            format!("{:.0}% busy", l.busy_ratio * 100.0),
        ]
    }));
    rows.extend(
        h.vifs
            .iter()
            .map(|v| vec!["vif".into(), v.name.clone(), v.state.to_string()]),
    );
    s.push_str(&table(&["KIND", "NAME", "STATE"], &rows));
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_agent_channel_shows_its_state_and_every_counter() {
        let a = AgentStats {
            enabled: true,
            connected: true,
            messages: 7,
            malformed: 2,
            ..AgentStats::default()
        };
        let out = agent(&a);
        let lines: Vec<&str> = out.lines().collect();
        assert_eq!(lines[0], "pkt0 agent connected");
        assert_eq!(lines.len(), 2 + 12, "{out}");
        assert!(lines
            .iter()
            .any(|l| l.split_whitespace().eq(["malformed", "2"])));
        assert!(lines
            .iter()
            .any(|l| l.split_whitespace().eq(["messages", "7"])));
        let off = agent(&AgentStats::default());
        assert!(off.starts_with("pkt0 not enabled"), "{off}");
    }
}
