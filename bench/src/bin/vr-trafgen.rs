//! vr-trafgen: a DPDK traffic generator and sink. Sends IPv4/UDP frames over N flows on one port
//! (a virtio-user pod interface, usually) and counts what arrives on the other, at a fixed or
//! maximum rate; prints one JSON line per second and a JSON summary at the end.
//!
//! One process, one lcore, both ports: it measures the switch between them, not a scheduler
//! juggling two busy-polling pods on a shared core.
//!
//! Every frame carries a sequence number; the sink counts a frame as received only when it is
//! whole and as sent (length, length fields, flow, the end of its payload, or all of it with
//! `--check-payload`) and in sequence, and reports the others and the bytes received, so a rate
//! of short, stale or duplicated frames is never taken for a rate of forwarded ones.

use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use bench::frames::{self, Expect, SeqCheck, Verdict, FCS_LEN, MAX_FRAME, MIN_FRAME};
use bench::gaps::Gaps;
use bench::latency::Histogram;
use clap::Parser;
use control_api::api::MacAddr;
use pmd_shim::{Eal, EthPort, Mbuf, MbufBurst, Mempool, PortConfig};

#[derive(Debug, Parser)]
#[command(name = "vr-trafgen", about)]
struct Args {
    /// Port to send on (DPDK devargs, e.g. `net_virtio_user0,path=/run/a.sock`).
    #[arg(long)]
    tx: String,
    /// Port to count arrivals on (may equal --tx for a loop through one port).
    #[arg(long)]
    rx: String,
    /// Destination MAC of sent frames (the switch's router MAC for L3 cases).
    #[arg(long, default_value_t = MacAddr::VROUTER_DEFAULT)]
    dst_mac: MacAddr,
    /// Frame size on the wire, FCS included (64..=1518).
    #[arg(long, default_value_t = 64)]
    frame_bytes: usize,
    /// Distinct flows (source address and UDP port vary).
    #[arg(long, default_value_t = 1)]
    flows: u32,
    /// Packets per second to offer; 0 = as fast as possible.
    #[arg(long, default_value_t = 0)]
    rate_pps: u64,
    /// Seconds to send before measuring (at least).
    #[arg(long, default_value_t = 2)]
    warmup: u64,
    /// Keep warming up past `--warmup` until the receive rate is steady: three consecutive
    /// seconds within this many percent of each other. 0 = measure right after `--warmup`.
    #[arg(long, default_value_t = 0.0)]
    steady_pct: f64,
    /// Longest warm-up while waiting for a steady rate; measuring starts then anyway (and the
    /// summary says the rate never settled).
    #[arg(long, default_value_t = 30)]
    warmup_max: u64,
    /// Seconds measured.
    #[arg(long, default_value_t = 10)]
    duration: u64,
    /// Seconds to wait for both links to come up (the switch connects to the sockets).
    #[arg(long, default_value_t = 30)]
    link_timeout: u64,
    /// Burst size.
    #[arg(long, default_value_t = 32)]
    burst: usize,
    /// Stamp every frame with its send time and report one-way latency percentiles of the
    /// measured seconds (generator and sink share one core, so one TSC).
    #[arg(long)]
    latency: bool,
    /// Compare every received frame's whole payload with what was sent, not only its headers
    /// and last bytes (the sink then reads every byte: for checking a switch, not timing it).
    #[arg(long)]
    check_payload: bool,
    /// EAL arguments (after --); a core list such as `-l 0` belongs here.
    #[arg(last = true)]
    eal: Vec<String>,
}

/// Whether the last three warm-up seconds' receive rates lie within `pct` % of each other.
fn steady(rates: &[u64], pct: f64) -> bool {
    let Some(last3) = rates.len().checked_sub(3).map(|i| &rates[i..]) else {
        return false;
    };
    let (lo, hi) = (last3.iter().min(), last3.iter().max());
    match (lo, hi) {
        (Some(&lo), Some(&hi)) if hi > 0 => (hi - lo) as f64 <= hi as f64 * pct / 100.0,
        _ => false,
    }
}

#[derive(Default, Clone, Copy)]
struct Counts {
    tx: u64,
    tx_dropped: u64,
    /// Frames received whole, as sent and in sequence.
    rx: u64,
    rx_foreign: u64,
    /// Ours, but of another length than sent.
    rx_bad_length: u64,
    /// Ours, of the right length, but headers or payload not as sent.
    rx_bad_content: u64,
    /// Ours and as sent, but never sent yet or not after the previous one (duplicate, stale).
    rx_out_of_sequence: u64,
    /// Bytes of every frame of ours received, good or bad.
    rx_bytes: u64,
    /// Frames of ours received in more than one buffer.
    rx_chained: u64,
}

impl Counts {
    fn rx_bad(&self) -> u64 {
        self.rx_bad_length + self.rx_bad_content + self.rx_out_of_sequence
    }
}

/// Counts one received frame, `given` sequence numbers having been sent; whether it is good.
/// `seqs` follows each flow's sequence on its own: flows may overtake each other in a switch
/// (OVS's upcalls, several queues), a flow's own frames may not.
#[inline]
fn receive(m: &Mbuf, expect: &Expect, seqs: &mut [SeqCheck], given: u64, c: &mut Counts) -> bool {
    let len = m.pkt_len() as usize;
    let verdict = if m.is_contiguous() {
        frames::check_frame(std::iter::once(m.data()), len, expect)
    } else {
        frames::check_frame(m.segments(), len, expect)
    };
    if verdict != Verdict::Foreign {
        c.rx_bytes += len as u64;
        c.rx_chained += u64::from(!m.is_contiguous());
    }
    match verdict {
        Verdict::Good(seq)
            if seqs
                .get_mut((seq % expect.flows) as usize)
                .is_some_and(|f| f.in_sequence(seq, given)) =>
        {
            c.rx += 1;
            return true;
        }
        Verdict::Good(_) => c.rx_out_of_sequence += 1,
        Verdict::Foreign => c.rx_foreign += 1,
        Verdict::BadLength => c.rx_bad_length += 1,
        Verdict::BadContent => c.rx_bad_content += 1,
    }
    false
}

fn main() {
    if let Err(e) = run(Args::parse()) {
        eprintln!("vr-trafgen: {e:#}");
        std::process::exit(1);
    }
}

fn run(a: Args) -> Result<()> {
    if !(MIN_FRAME..=MAX_FRAME).contains(&a.frame_bytes) {
        bail!("--frame-bytes must be {MIN_FRAME}..={MAX_FRAME}");
    }
    if a.burst == 0 || a.burst > pmd_shim::BURST_MAX {
        bail!("--burst must be 1..={}", pmd_shim::BURST_MAX);
    }
    let dst_mac = a.dst_mac.0;
    let mut argv = vec!["vr-trafgen".to_owned()];
    argv.extend(a.eal.iter().cloned());
    let eal = Eal::init(&argv).context("EAL")?;
    let pool = Mempool::new(&eal, "trafgen", 16383, 256, 2176).context("mempool")?;

    let cfg = PortConfig::default();
    let mut tx_port = EthPort::open(&eal, &a.tx).with_context(|| format!("opening {}", a.tx))?;
    tx_port.configure(&cfg, &pool)?;
    let mut tx_queues = tx_port.start()?;
    let same = a.rx == a.tx;
    let mut rx_port = if same {
        None
    } else {
        let mut p = EthPort::open(&eal, &a.rx).with_context(|| format!("opening {}", a.rx))?;
        p.configure(&cfg, &pool)?;
        Some(p)
    };
    let mut rx_queues = match rx_port.as_mut() {
        Some(p) => p.start()?,
        None => pmd_shim::PortQueues {
            rx: std::mem::take(&mut tx_queues.rx),
            tx: Vec::new(),
        },
    };
    let (Some(mut txq), Some(mut rxq)) = (tx_queues.tx.pop(), rx_queues.rx.pop()) else {
        bail!("ports came up without queues");
    };

    let src_mac = tx_port.mac().unwrap_or([2, 0, 0, 0, 0, 1]);
    let expect = Expect {
        len: a.frame_bytes - FCS_LEN,
        flows: a.flows.max(1),
        full: a.check_payload,
    };
    let mut seqs = vec![SeqCheck::default(); expect.flows as usize];
    // Sequence numbers written into frames so far (frame n carries n, wrapping at 2^32).
    let mut given = 0u64;
    let templates: Vec<Vec<u8>> = (0..a.flows.max(1))
        .map(|i| frames::udp_frame(dst_mac, src_mac, frames::flow(i), a.frame_bytes))
        .collect();

    let deadline = Instant::now() + Duration::from_secs(a.link_timeout);
    loop {
        let up = tx_port.link().map(|l| l.up).unwrap_or(false)
            && rx_port
                .as_ref()
                .map_or(Ok(true), |p| p.link().map(|l| l.up))
                .unwrap_or(false);
        if up {
            break;
        }
        if Instant::now() > deadline {
            bail!(
                "links not up after {}s (is the switch connected?)",
                a.link_timeout
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }

    let hz = pmd_shim::cycles::tsc_hz();
    let cycles_per_pkt = if a.rate_pps > 0 {
        hz / a.rate_pps.max(1)
    } else {
        0
    };
    let start = pmd_shim::cycles::rdtsc();
    let mut next_send = start;
    let mut counts = Counts::default();
    let mut last = counts;
    let mut per_second = Vec::new();
    // When each measured second ended (Unix ms): to match them with the host's pace, probed
    // beside the run (vr-pace).
    let mut second_ends: Vec<u64> = Vec::new();
    // Receive rates of the warm-up seconds, and the second measuring began after.
    let mut warm_rates: Vec<u64> = Vec::new();
    let mut warmed_at: Option<u64> = None;
    // The counts when measuring began: a trial's loss is what it lost while measured (RFC 2544
    // trials follow the learning frames), not while the switch was taking its queues.
    let mut at_warm = Counts::default();
    let mut flow_i = 0usize;
    let mut out = MbufBurst::new();
    let mut inb = MbufBurst::new();
    let mut latencies = Histogram::new(hz);
    // The time the host took this core from the generator while measuring, as steps of the
    // loop of 100 µs or more: beside a latency step, how much of the tail is the host's, for
    // every switch alike (the switch's own core is not seen). Not from 10 µs, as vr-gaps
    // counts: a turn that takes in a full burst after the switch's own stall is itself that long.
    let mut stalls = Gaps::default();
    let ns_per_cycle = 1e9 / hz.max(1) as f64;
    let mut second = 0u64;
    loop {
        second += 1;
        if let Some(w) = warmed_at {
            if second > w + a.duration {
                break;
            }
        }
        let end = start + second * hz;
        // From the first look of each second: the printing between seconds is ours.
        let mut last_look: Option<u64> = None;
        loop {
            let now = pmd_shim::cycles::rdtsc();
            if now >= end {
                break;
            }
            if warmed_at.is_some() {
                if let Some(l) = last_look {
                    stalls.step((now.saturating_sub(l) as f64 * ns_per_cycle) as u64);
                }
                last_look = Some(now);
            }
            if cycles_per_pkt == 0 || now >= next_send {
                while out.len() < a.burst {
                    let Ok(mut m) = pool.alloc_with(&templates[flow_i]) else {
                        break;
                    };
                    if a.latency {
                        frames::stamp(m.data_mut(), now);
                    }
                    // Flow `given % flows`, as the sink expects.
                    frames::set_seq(m.data_mut(), given as u32);
                    given += 1;
                    flow_i = (flow_i + 1) % templates.len();
                    let _ = out.push(m);
                }
                let n = out.len() as u64;
                let sent = txq.tx_burst(&mut out) as u64;
                counts.tx += sent;
                counts.tx_dropped += n - sent;
                out.free_all();
                next_send += cycles_per_pkt * n.max(1);
            }
            if rxq.rx_burst(&mut inb) > 0 {
                let received = pmd_shim::cycles::rdtsc();
                let timing = a.latency && warmed_at.is_some();
                for m in inb.iter() {
                    if receive(m, &expect, &mut seqs, given, &mut counts) {
                        if let (true, Some(sent)) = (timing, frames::stamp_of(m.data())) {
                            latencies.record(sent, received);
                        }
                    }
                }
                inb.free_all();
            }
        }
        let d = Counts {
            tx: counts.tx - last.tx,
            tx_dropped: counts.tx_dropped - last.tx_dropped,
            rx: counts.rx - last.rx,
            rx_foreign: counts.rx_foreign - last.rx_foreign,
            rx_bytes: counts.rx_bytes - last.rx_bytes,
            ..Counts::default()
        };
        let bad = counts.rx_bad() - last.rx_bad();
        last = counts;
        let measuring = warmed_at.is_some();
        let ended = bench::unix_ms();
        println!(
            "{{\"second\":{second},\"unix_ms\":{ended},\"measuring\":{measuring},\"tx_pps\":{},\"tx_dropped\":{},\"rx_pps\":{},\"rx_foreign\":{},\"rx_bad\":{bad},\"rx_bytes\":{}}}",
            d.tx, d.tx_dropped, d.rx, d.rx_foreign, d.rx_bytes
        );
        if measuring {
            per_second.push(d.rx);
            second_ends.push(ended);
        } else {
            warm_rates.push(d.rx);
            let done = second >= a.warmup
                && (a.steady_pct <= 0.0
                    || steady(&warm_rates, a.steady_pct)
                    || second >= a.warmup_max);
            if done {
                warmed_at = Some(second);
                at_warm = counts;
            }
        }
    }
    let warmup_seconds = warmed_at.unwrap_or(second);
    let settled = a.steady_pct <= 0.0 || steady(&warm_rates, a.steady_pct);
    let measured_rates: Vec<f64> = per_second.iter().map(|&r| r as f64 / 1e6).collect();
    // How fast this core ran against the TSC right after measuring (a few ms, in the drain):
    // a host that lets its cores boost makes every switch faster in TSC cycles at once.
    let core_per_tsc = pmd_shim::cycles::core_per_tsc();
    // Let in-flight packets drain so loss is not overstated.
    let drain_end = Instant::now() + Duration::from_millis(200);
    while Instant::now() < drain_end {
        if rxq.rx_burst(&mut inb) > 0 {
            for m in inb.iter() {
                receive(m, &expect, &mut seqs, given, &mut counts);
            }
            inb.free_all();
        }
    }
    per_second.sort_unstable();
    let median = per_second.get(per_second.len() / 2).copied().unwrap_or(0);
    let summary = serde_json::json!({
        "summary": true,
        "frame_bytes": a.frame_bytes,
        "flows": a.flows,
        "seconds_measured": a.duration,
        "tx_packets": counts.tx,
        "tx_dropped": counts.tx_dropped,
        "measured": {
            "tx_packets": counts.tx - at_warm.tx,
            "tx_dropped": counts.tx_dropped - at_warm.tx_dropped,
            "rx_packets": counts.rx - at_warm.rx,
        },
        "rx_packets": counts.rx,
        "rx_foreign": counts.rx_foreign,
        // Bytes of every frame of ours received, and of the good ones alone: equal when
        // every frame came back as sent.
        "rx_bytes": counts.rx_bytes,
        "frame_len": expect.len,
        "rx_bad": counts.rx_bad(),
        "rx_bad_length": counts.rx_bad_length,
        "rx_bad_content": counts.rx_bad_content,
        "rx_out_of_sequence": counts.rx_out_of_sequence,
        "rx_chained": counts.rx_chained,
        "payload_checked": if a.check_payload { "all" } else { "tail" },
        "frames_ok": frames_ok(&counts, expect.len),
        "loss_ratio": if counts.tx > 0 { 1.0 - counts.rx as f64 / counts.tx as f64 } else { 0.0 },
        "rx_mpps_median": median as f64 / 1e6,
        "warmup_seconds": warmup_seconds,
        "steady": settled,
        "rx_mpps_per_second": measured_rates,
        "unix_ms_per_second": second_ends,
        "offered_pps": a.rate_pps,
        "latency": latencies.percentiles(),
        "generator_stalls": {
            "over_100us_per_s": stalls.per_second(stalls.over_100us),
            "over_1ms_per_s": stalls.per_second(stalls.over_1ms),
            "longest_us": stalls.longest_ns as f64 / 1e3,
        },
        "core_per_tsc": core_per_tsc,
    });
    println!("{summary}");
    drop((txq, rxq, tx_queues, rx_queues));
    tx_port.stop().ok();
    if let Some(p) = rx_port.as_mut() {
        p.stop().ok();
    }
    Ok(())
}

/// Whether every frame of ours that came back was whole, as sent and in sequence: no bad
/// frame, and the bytes received are those of the good frames.
fn frames_ok(c: &Counts, frame_len: usize) -> bool {
    c.rx_bad() == 0 && c.rx_bytes == c.rx * frame_len as u64
}

#[cfg(test)]
mod tests {
    use super::{frames_ok, steady, Counts};

    #[test]
    fn frames_are_ok_only_when_none_is_bad_and_the_bytes_add_up() {
        let good = Counts {
            tx: 10,
            rx: 10,
            rx_bytes: 10 * 1514,
            rx_foreign: 3,
            ..Counts::default()
        };
        assert!(
            frames_ok(&good, 1514),
            "foreign frames (ARP, ND) are not ours to judge"
        );
        assert!(
            !frames_ok(&good, 60),
            "bytes of 1514-byte frames where 60 were sent"
        );
        for bad in [
            Counts {
                rx_bad_length: 1,
                ..good
            },
            Counts {
                rx_bad_content: 1,
                ..good
            },
            Counts {
                rx_out_of_sequence: 1,
                ..good
            },
            Counts {
                rx_bytes: good.rx_bytes - 1,
                ..good
            },
        ] {
            assert!(!frames_ok(&bad, 1514));
        }
    }

    #[test]
    fn steady_means_three_last_seconds_within_the_share() {
        assert!(steady(&[10, 500, 1000, 1010, 1000], 2.0));
        assert!(!steady(&[1000, 1010, 1000, 900], 2.0), "the last one fell");
        assert!(!steady(&[1000, 1030, 1000], 2.0), "3 % apart");
        assert!(!steady(&[1000, 1000], 2.0), "two seconds are not three");
        assert!(!steady(&[0, 0, 0], 2.0), "nothing received is not a rate");
    }
}
