//! `vrouterctl trace`: the next packets a vif receives, each with what vrouterd did with it.

use std::time::{Duration, Instant};

use clap::Args;
use control_api::api::{TraceResult, TracedPacket};
use control_api::Client;

use crate::output::Out;

#[derive(Args)]
pub struct TraceArgs {
    /// The vif whose received packets are traced.
    #[arg(long)]
    vif: String,
    /// How many packets (1..=1000).
    #[arg(long, default_value_t = 10)]
    count: u32,
    /// Seconds to wait for them; what was traced by then is shown.
    #[arg(long, default_value_t = 10.0)]
    timeout: f64,
}

pub async fn run(a: TraceArgs, c: &Client, out: &Out) -> anyhow::Result<()> {
    c.trace_start(&a.vif, a.count).await?;
    let deadline = Instant::now() + Duration::from_secs_f64(a.timeout.clamp(0.0, 3600.0));
    let mut all = TraceResult {
        vif: a.vif.clone(),
        running: true,
        packets: Vec::new(),
    };
    loop {
        let r = c.trace_read(&a.vif).await?;
        all.packets.extend(r.packets);
        all.running = r.running;
        if !r.running || all.packets.len() >= a.count as usize || Instant::now() >= deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    if all.running {
        // Timed out: stop it, so later packets are not traced for nobody.
        c.trace_stop(&a.vif).await?;
        all.running = false;
    }
    out.show(&all, |r| {
        let mut s = String::new();
        for (i, p) in r.packets.iter().enumerate() {
            s.push_str(&packet(i + 1, p));
        }
        if r.packets.len() < a.count as usize {
            s.push_str(&format!(
                "{} of {} packets traced within {} s\n",
                r.packets.len(),
                a.count,
                a.timeout
            ));
        }
        s
    })
}

fn packet(n: usize, p: &TracedPacket) -> String {
    let decision = match (&p.out_vif, &p.drop_reason) {
        (Some(v), _) => format!("sent out of {v}"),
        (None, Some(r)) => format!("dropped: {r}"),
        (None, None) => p.verdict.clone(),
    };
    let mut s = format!(
        "#{n} vrf {} {} bytes\n  in   {}\n  then {decision}\n",
        p.vrf, p.length, p.received
    );
    if let Some(sent) = &p.sent {
        s.push_str(&format!("  out  {sent}\n"));
    }
    s
}
