//! `GET /metrics`: the dataplane's counters in the Prometheus text exposition format (0.0.4).

use std::fmt::Write;

use crate::api::{HealthStatus, VifState};
use crate::controller::Controller;
use crate::error::Error;

pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Escape a label value: backslash, double quote and newline.
fn esc(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

struct Doc(String);

/// A family read from each item: `(kind, name, help, the item's value)`.
type ItemFamily<'a, T> = (&'a str, &'a str, &'a str, fn(&T) -> u64);

impl Doc {
    fn family(&mut self, name: &str, kind: &str, help: &str) {
        let _ = writeln!(self.0, "# HELP {name} {help}");
        let _ = writeln!(self.0, "# TYPE {name} {kind}");
    }

    fn sample(&mut self, name: &str, labels: &[(&str, &str)], value: impl std::fmt::Display) {
        self.0.push_str(name);
        if !labels.is_empty() {
            self.0.push('{');
            for (i, (k, v)) in labels.iter().enumerate() {
                if i > 0 {
                    self.0.push(',');
                }
                let _ = write!(self.0, "{k}=\"{}\"", esc(v));
            }
            self.0.push('}');
        }
        let _ = writeln!(self.0, " {value}");
    }

    /// Counter families of one sample each, all with `labels`: `(name, help, value)`.
    fn counters(&mut self, labels: &[(&str, &str)], rows: &[(&str, &str, u64)]) {
        for (name, help, v) in rows {
            self.family(name, "counter", help);
            self.sample(name, labels, v);
        }
    }

    /// Families with one sample per item, labelled `label` = the item's name. Nothing when
    /// there are no items.
    fn per_item<T>(&mut self, label: &str, items: &[(&str, &T)], rows: &[ItemFamily<T>]) {
        if items.is_empty() {
            return;
        }
        for (kind, name, help, value) in rows {
            self.family(name, kind, help);
            for (item, t) in items {
                self.sample(name, &[(label, item)], value(t));
            }
        }
    }
}

/// Render every counter the controller can read. Fails only if the dataplane cannot be read.
pub fn render(ctrl: &Controller) -> Result<String, Error> {
    let stats = ctrl.stats()?;
    let drops = ctrl.dropstats()?;
    let health = ctrl.health()?;
    let flows = ctrl.flow_stats()?;
    let vifs = ctrl.vifs();
    let mut d = Doc(String::new());

    for (name, help, total, per) in [
        (
            "vrouter_rx_packets_total",
            "Packets received by forwarding lcores.",
            stats.rx_packets,
            0,
        ),
        (
            "vrouter_rx_bytes_total",
            "Bytes received by forwarding lcores.",
            stats.rx_bytes,
            1,
        ),
        (
            "vrouter_tx_packets_total",
            "Packets sent by forwarding lcores.",
            stats.tx_packets,
            2,
        ),
        (
            "vrouter_tx_bytes_total",
            "Bytes sent by forwarding lcores.",
            stats.tx_bytes,
            3,
        ),
    ] {
        d.family(name, "counter", help);
        d.sample(name, &[], total);
        for l in &stats.lcores {
            let v = [l.rx_packets, l.rx_bytes, l.tx_packets, l.tx_bytes][per];
            d.sample(name, &[("lcore", &l.lcore.to_string())], v);
        }
    }
    for (name, help, pick) in [
        (
            "vrouter_lcore_queued_to_lcores_total",
            "Packets queued to the lcore that transmits for their vif.",
            0,
        ),
        (
            "vrouter_lcore_taken_from_lcores_total",
            "Packets taken from other lcores to transmit.",
            1,
        ),
        (
            "vrouter_lcore_packets_made_total",
            "Packets made: GSO segments cut in software, ICMP errors sent, mirror copies.",
            2,
        ),
    ] {
        d.family(name, "counter", help);
        for l in &stats.lcores {
            let v = [l.queued_to_lcores, l.taken_from_lcores, l.packets_made][pick];
            d.sample(name, &[("lcore", &l.lcore.to_string())], v);
        }
    }
    d.family(
        "vrouter_lcore_busy_ratio",
        "gauge",
        "Share of recent poll loops that found work.",
    );
    for l in &stats.lcores {
        d.sample(
            "vrouter_lcore_busy_ratio",
            &[("lcore", &l.lcore.to_string())],
            l.busy_ratio,
        );
    }
    d.family(
        "vrouter_lcore_poll_gaps_total",
        "counter",
        "Poll loop turns that began more than `over` after the turn before.",
    );
    for l in &stats.lcores {
        let g = l.poll_gaps;
        for (over, n) in [
            ("10us", g.over_10us),
            ("100us", g.over_100us),
            ("1ms", g.over_1ms),
        ] {
            d.sample(
                "vrouter_lcore_poll_gaps_total",
                &[("lcore", &l.lcore.to_string()), ("over", over)],
                n,
            );
        }
    }
    d.family(
        "vrouter_drops_total",
        "counter",
        "Packets dropped, by reason.",
    );
    for (reason, n) in &drops.reasons {
        d.sample("vrouter_drops_total", &[("reason", reason)], n);
    }

    for (name, help, pick) in [
        (
            "vrouter_vif_rx_packets_total",
            "Packets received on a vif.",
            0usize,
        ),
        ("vrouter_vif_rx_bytes_total", "Bytes received on a vif.", 1),
        ("vrouter_vif_tx_packets_total", "Packets sent on a vif.", 2),
        ("vrouter_vif_tx_bytes_total", "Bytes sent on a vif.", 3),
        ("vrouter_vif_drops_total", "Packets dropped on a vif.", 4),
    ] {
        d.family(name, "counter", help);
        for v in &vifs {
            let c = v.status.counters;
            let value = [c.rx_packets, c.rx_bytes, c.tx_packets, c.tx_bytes, c.drops][pick];
            d.sample(
                name,
                &[("vif", &v.config.name), ("index", &v.index.to_string())],
                value,
            );
        }
    }
    for (name, help, tx) in [
        (
            "vrouter_vif_queue_rx_packets_total",
            "Packets taken from a vhost-user vif's queue pair (the guest's TX ring); label lcore serves it.",
            false,
        ),
        (
            "vrouter_vif_queue_tx_packets_total",
            "Packets delivered into a vhost-user vif's queue pair (the guest's RX ring); label lcore serves it.",
            true,
        ),
    ] {
        d.family(name, "counter", help);
        for v in &vifs {
            for q in &v.status.queue_pairs {
                d.sample(
                    name,
                    &[
                        ("vif", &v.config.name),
                        ("queue", &q.queue.to_string()),
                        ("lcore", &q.lcore.to_string()),
                    ],
                    if tx { q.tx_packets } else { q.rx_packets },
                );
            }
        }
    }
    d.family(
        "vrouter_vif_up",
        "gauge",
        "1 if the vif is connected or up, else 0; label state says which.",
    );
    for v in &vifs {
        let up = matches!(v.status.state, VifState::Connected | VifState::Up);
        d.sample(
            "vrouter_vif_up",
            &[
                ("vif", &v.config.name),
                ("state", &v.status.state.to_string()),
            ],
            u8::from(up),
        );
    }

    d.family(
        "vrouter_health_ok",
        "gauge",
        "1 if GET /health says ok, 0 if degraded.",
    );
    d.sample(
        "vrouter_health_ok",
        &[],
        u8::from(health.status == HealthStatus::Ok),
    );
    d.family(
        "vrouter_mempool_in_use",
        "gauge",
        "Mbufs in use per mempool.",
    );
    for m in &health.mempools {
        d.sample("vrouter_mempool_in_use", &[("pool", &m.name)], m.in_use);
    }
    d.family("vrouter_mempool_size", "gauge", "Mbufs per mempool.");
    for m in &health.mempools {
        d.sample("vrouter_mempool_size", &[("pool", &m.name)], m.size);
    }
    d.family("vrouter_ring_used", "gauge", "Entries waiting in a ring.");
    for r in &health.rings {
        d.sample("vrouter_ring_used", &[("ring", &r.name)], r.used);
    }
    d.family("vrouter_ring_size", "gauge", "Capacity of a ring.");
    for r in &health.rings {
        d.sample("vrouter_ring_size", &[("ring", &r.name)], r.size);
    }

    d.family("vrouter_flows_active", "gauge", "Flows in the flow table.");
    d.sample("vrouter_flows_active", &[], flows.active);
    d.family("vrouter_flows_capacity", "gauge", "Flow table size.");
    d.sample("vrouter_flows_capacity", &[], flows.capacity);
    d.counters(
        &[],
        &[
            (
                "vrouter_flows_created_total",
                "Flows set up.",
                flows.created,
            ),
            (
                "vrouter_flows_aged_total",
                "Flows removed by aging.",
                flows.aged,
            ),
            (
                "vrouter_flows_evicted_total",
                "Flows evicted to make room.",
                flows.evicted,
            ),
            (
                "vrouter_flows_table_full_drops_total",
                "New flows dropped because the table was full.",
                flows.table_full_drops,
            ),
        ],
    );
    if let Some(e) = &flows.export {
        let collector = e.collector.to_string();
        d.counters(
            &[("collector", &collector)],
            &[
                (
                    "vrouter_flow_export_records_total",
                    "IPFIX flow records sent.",
                    e.records,
                ),
                (
                    "vrouter_flow_export_messages_total",
                    "IPFIX messages sent (records and templates).",
                    e.messages,
                ),
                (
                    "vrouter_flow_export_dropped_records_total",
                    "IPFIX flow records not sent: past --ipfix-max-rate.",
                    e.dropped_records,
                ),
                (
                    "vrouter_flow_export_send_errors_total",
                    "IPFIX messages the socket refused.",
                    e.send_errors,
                ),
            ],
        );
    }

    let agent = ctrl.agent_stats()?;
    if agent.enabled {
        d.family(
            "vrouter_agent_connected",
            "gauge",
            "1 if an agent is connected to pkt0 (--agent-socket), else 0.",
        );
        d.sample("vrouter_agent_connected", &[], u8::from(agent.connected));
        d.counters(
            &[],
            &[
            (
                "vrouter_agent_connections_total",
                "Agents that connected to pkt0.",
                agent.connections,
            ),
            (
                "vrouter_agent_traps_sent_total",
                "Trapped packets written to the agent.",
                agent.traps_sent,
            ),
            (
                "vrouter_agent_traps_lost_total",
                "Trapped packets lost after the lcores handed them over (no agent, or one not reading).",
                agent.traps_lost,
            ),
            (
                "vrouter_agent_messages_total",
                "Messages received from the agent, malformed ones included.",
                agent.messages,
            ),
            (
                "vrouter_agent_malformed_total",
                "Messages from the agent that were malformed: logged and skipped.",
                agent.malformed,
            ),
            (
                "vrouter_agent_verdicts_total",
                "Agent verdicts installed as flows.",
                agent.verdicts,
            ),
            (
                "vrouter_agent_verdicts_failed_total",
                "Agent verdicts that could not be installed.",
                agent.verdicts_failed,
            ),
            (
                "vrouter_agent_sends_total",
                "Frames the agent sent out of a vif.",
                agent.sends,
            ),
            (
                "vrouter_agent_injects_total",
                "Frames the agent injected as received on a vif.",
                agent.injects,
            ),
            (
                "vrouter_agent_inject_failed_total",
                "Agent sends and injects that could not be handed on.",
                agent.inject_failed,
            ),
            (
                "vrouter_agent_held_full_total",
                "First packets not passed to the agent: their vif held --agent-max-held flows.",
                agent.held_full,
            ),
            (
                "vrouter_agent_held_repeat_total",
                "Later packets of flows already waiting for the agent's verdict.",
                agent.held_repeat,
            ),
        ]);
    }

    let mirrors = ctrl.mirror_list();
    let mirrors: Vec<(&str, &crate::api::MirrorInfo)> =
        mirrors.iter().map(|(vif, m)| (vif.as_str(), m)).collect();
    d.per_item(
        "vif",
        &mirrors,
        &[
            (
                "counter",
                "vrouter_mirror_copies_total",
                "Mirror copies made of a vif's packets (since its mirror was set).",
                |m| m.copies,
            ),
            (
                "counter",
                "vrouter_mirror_copy_failures_total",
                "Mirror copies that found no buffer.",
                |m| m.copy_failures,
            ),
            (
                "counter",
                "vrouter_mirror_copies_skipped_total",
                "Mirror copies not made while the analyzer's queue was full.",
                |m| m.copies_skipped,
            ),
        ],
    );

    d.family(
        "vrouter_nat_translated_packets_total",
        "counter",
        "Packets whose addresses source NAT rewrote (both directions).",
    );
    d.sample(
        "vrouter_nat_translated_packets_total",
        &[],
        stats.nat_translated,
    );
    let pools = ctrl.nat_pools()?;
    let pools: Vec<(&str, &crate::api::NatPoolInfo)> =
        pools.iter().map(|p| (p.name.as_str(), p)).collect();
    d.per_item(
        "pool",
        &pools,
        &[
            (
                "gauge",
                "vrouter_nat_pool_pairs",
                "Address and port pairs a NAT pool holds.",
                |p| p.capacity,
            ),
            (
                "gauge",
                "vrouter_nat_pool_pairs_in_use",
                "Pairs of a NAT pool held by flows now.",
                |p| p.in_use,
            ),
            (
                "counter",
                "vrouter_nat_pool_exhausted_total",
                "New flows dropped because their NAT pool had no free pair.",
                |p| p.exhausted,
            ),
        ],
    );
    let services = ctrl.services()?;
    d.family(
        "vrouter_nat_service_backend_flows",
        "gauge",
        "Flows a service VIP's backend holds now.",
    );
    for s in &services {
        for b in &s.backends {
            let backend = format!("{}:{}", b.address, b.port);
            d.sample(
                "vrouter_nat_service_backend_flows",
                &[("service", &s.name), ("backend", &backend)],
                b.flows,
            );
        }
    }
    Ok(d.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn label_values_are_escaped() {
        assert_eq!(esc("a\"b\\c\nd"), "a\\\"b\\\\c\\nd");
        let mut d = Doc(String::new());
        d.sample("m", &[("vif", "x\"y")], 3);
        assert_eq!(d.0, "m{vif=\"x\\\"y\"} 3\n");
    }
}
