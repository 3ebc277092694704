//! `vrouterctl flows`: the flow table.

use clap::Subcommand;
use control_api::api::{FlowQuery, Proto};
use control_api::Client;

use crate::output::{table, Out};

#[derive(Subcommand)]
pub enum FlowsCmd {
    /// List flows, a page at a time.
    List {
        /// Only flows of this VRF.
        #[arg(long)]
        vrf: Option<u32>,
        /// Flows per page (vrouterd's default when not given).
        #[arg(long)]
        limit: Option<u32>,
        /// Start where an earlier page said `more: --cursor ...`.
        #[arg(long)]
        cursor: Option<String>,
        /// Follow cursors to the end.
        #[arg(long)]
        all: bool,
    },
    /// Remove every flow (the next packets create them anew).
    Flush,
    /// Flow table occupancy and counters.
    Stats,
    /// The flows moving the most bytes now, refreshed in place like top (`--json`: a line per
    /// refresh).
    Top {
        /// How many flows to show.
        #[arg(long, default_value_t = 10)]
        rows: usize,
        #[command(flatten)]
        refresh: crate::rate::Refresh,
    },
}

pub async fn run(cmd: FlowsCmd, c: &Client, out: &Out) -> anyhow::Result<()> {
    match cmd {
        FlowsCmd::Top { rows, refresh } => {
            crate::rate::watch(
                refresh,
                out.json,
                || crate::rate::all_flows(c),
                |a: &Vec<_>, b: &Vec<_>, secs| crate::rate::top_flows(a, b, secs, rows),
                crate::rate::flow_table,
            )
            .await?
        }
        FlowsCmd::List {
            vrf,
            limit,
            cursor,
            all,
        } => {
            let mut query = FlowQuery { vrf, limit, cursor };
            let mut page = c.flows(&query).await?;
            while all && page.next_cursor.is_some() {
                query.cursor = page.next_cursor.take();
                let next = c.flows(&query).await?;
                page.flows.extend(next.flows);
                page.next_cursor = next.next_cursor;
            }
            out.show(&page, |p| {
                let rows: Vec<Vec<String>> = p
                    .flows
                    .iter()
                    .map(|f| {
                        vec![
                            f.index.to_string(),
                            f.vrf.to_string(),
                            format!("{}:{}", f.src, f.sport),
                            format!("{}:{}", f.dst, f.dport),
                            Proto::Number(f.proto).to_string(),
                            format!("{:?}", f.action).to_lowercase(),
                            f.packets.to_string(),
                            f.bytes.to_string(),
                            f.tcp_state.clone().unwrap_or_else(|| "-".into()),
                            f.translated.as_ref().map_or_else(
                                || "-".into(),
                                |t| format!("{}:{} > {}:{}", t.src, t.sport, t.dst, t.dport),
                            ),
                        ]
                    })
                    .collect();
                let mut s = table(
                    &[
                        "INDEX",
                        "VRF",
                        "SOURCE",
                        "DESTINATION",
                        "PROTO",
                        "ACTION",
                        "PACKETS",
                        "BYTES",
                        "TCP",
                        "TRANSLATED",
                    ],
                    &rows,
                );
                if let Some(c) = &p.next_cursor {
                    s.push_str(&format!("more: --cursor {c}\n"));
                }
                s
            })?;
        }
        FlowsCmd::Flush => {
            let r = c.flush_flows().await?;
            out.show(&r, |r| format!("{} flows flushed\n", r.flushed))?;
        }
        FlowsCmd::Stats => out.show(&c.flow_stats().await?, |s| {
            let export = s.export.map_or(String::new(), |e| {
                format!(
                    "\nIPFIX export to {}: {} records in {} messages, {} records dropped \
                     (rate limit), {} send errors\n",
                    e.collector, e.records, e.messages, e.dropped_records, e.send_errors
                )
            });
            let t = table(
                &[
                    "CAPACITY",
                    "ACTIVE",
                    "CREATED",
                    "AGED",
                    "EVICTED",
                    "TABLE_FULL_DROPS",
                ],
                &[vec![
                    s.capacity.to_string(),
                    s.active.to_string(),
                    s.created.to_string(),
                    s.aged.to_string(),
                    s.evicted.to_string(),
                    s.table_full_drops.to_string(),
                ]],
            );
            t + &export
        })?,
    }
    Ok(())
}
