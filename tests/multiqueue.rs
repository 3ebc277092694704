//! A vhost-user vif's queue pairs spread over forwarding lcores: two pods with two queue pairs
//! each, on a vrouterd with two forwarding lcores (sharing one CPU on a small machine). Every
//! queue is served, each on its own lcore; sixteen UDP flows with sequence numbers go from one
//! pod to the other and every flow arrives on one queue, in order. Pinning a queue pair to the
//! other lcore through the API moves it while the traffic keeps flowing, still in order.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use control_api::api::{MacAddr, VhostUserMode, VifInfo};
use etherparse::{PacketBuilder, SlicedPacket, TransportSlice};
use testkit::frontend_pod::{udp_frame, FrontendPod, Memory, MultiQueuePod};
use testkit::testpmd::TestpmdConfig;
use testkit::vrouterd::{vhost_user_vif, Vrouterd};

const MAC_A: MacAddr = MacAddr([0x02, 0, 0, 0, 0x0a, 0x01]);
const MAC_B: MacAddr = MacAddr([0x02, 0, 0, 0, 0x0b, 0x01]);
const VROUTER_MAC: [u8; 6] = [0x00, 0x00, 0x5e, 0x00, 0x01, 0x00];
const FLOWS: u16 = 16;
/// Packets per flow per round (16 flows × 8 = 128, half a ring per queue pair).
const PER_ROUND: u32 = 8;

fn vrouterd_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_vrouterd"))
}

/// Flow `flow`'s packet `seq`: UDP from port 1000 + flow, the flow and sequence number in the
/// payload.
fn frame(flow: u16, seq: u32) -> Vec<u8> {
    let mut payload = Vec::with_capacity(18);
    payload.extend_from_slice(&flow.to_be_bytes());
    payload.extend_from_slice(&seq.to_be_bytes());
    payload.resize(18, 0x42);
    let b = PacketBuilder::ethernet2(MAC_A.0, VROUTER_MAC)
        .ipv4([198, 18, 1, 2], [198, 18, 2, 2], 64)
        .udp(1000 + flow, 5000);
    let mut f = Vec::with_capacity(b.size(payload.len()));
    b.write(&mut f, &payload).expect("frame");
    f
}

/// (flow, seq) of a frame the test sent.
fn parse(frame: &[u8]) -> Option<(u16, u32)> {
    let p = SlicedPacket::from_ethernet(frame).ok()?;
    let Some(TransportSlice::Udp(u)) = p.transport else {
        return None;
    };
    let d = u.payload();
    Some((
        u16::from_be_bytes([d[0], d[1]]),
        u32::from_be_bytes([d[2], d[3], d[4], d[5]]),
    ))
}

/// What pod B saw: per flow, the queue pairs it arrived on and its sequence numbers in order.
#[derive(Default)]
struct Seen {
    queues: BTreeMap<u16, std::collections::BTreeSet<usize>>,
    last: BTreeMap<u16, u32>,
    received: u64,
    reordered: Vec<String>,
}

impl Seen {
    fn take(&mut self, pair: usize, frames: Vec<Vec<u8>>) {
        for f in frames {
            let Some((flow, seq)) = parse(&f) else {
                continue;
            };
            self.received += 1;
            self.queues.entry(flow).or_default().insert(pair);
            if let Some(&last) = self.last.get(&flow) {
                if seq <= last {
                    self.reordered
                        .push(format!("flow {flow}: {seq} after {last} (queue {pair})"));
                }
            }
            self.last.insert(flow, seq);
        }
    }
}

/// Sends `rounds` rounds of every flow from A (flow f on A's pair f % 2) and takes what B
/// receives on both of its pairs after each round.
fn run(a: &mut MultiQueuePod, b: &mut MultiQueuePod, next: &mut u32, rounds: u32, seen: &mut Seen) {
    for _ in 0..rounds {
        let first = *next;
        for k in 0..PER_ROUND {
            for flow in 0..FLOWS {
                let pair = usize::from(flow % 2);
                let f = frame(flow, first + k);
                let deadline = Instant::now() + Duration::from_secs(5);
                while !a.send_on(pair, &f) {
                    assert!(
                        Instant::now() < deadline,
                        "pod A's TX ring {pair} stays full"
                    );
                    std::thread::sleep(Duration::from_millis(1));
                }
            }
        }
        *next += PER_ROUND;
        // Everything, or (a queue moving: a few lost in flight) until nothing more comes.
        let want = seen.received + u64::from(PER_ROUND) * u64::from(FLOWS);
        let deadline = Instant::now() + Duration::from_secs(5);
        let mut progress = Instant::now();
        while seen.received < want
            && Instant::now() < deadline
            && progress.elapsed() < Duration::from_millis(300)
        {
            let before = seen.received;
            for pair in 0..2 {
                let frames = b.receive_on(pair);
                seen.take(pair, frames);
            }
            if seen.received > before {
                progress = Instant::now();
            }
            std::thread::sleep(Duration::from_millis(1));
        }
    }
}

/// Queue pair → lcore, as `GET /vifs/{name}` shows it.
fn placement(v: &VifInfo) -> BTreeMap<u32, u32> {
    v.status
        .queue_pairs
        .iter()
        .map(|q| (q.queue, q.lcore))
        .collect()
}

#[test]
fn queue_pairs_spread_over_lcores_keep_each_flow_on_one_queue_in_order() {
    let vr = Vrouterd::start(
        &vrouterd_bin(),
        // Two forwarding lcores on CPU 1: this machine may have two CPUs only.
        &["--fwd-lcores", "1,2@1", "--idle-sleep-us", "20"],
        &[],
    );
    let socks = vr.vhost_pods(
        &[
            (1, "podA", MAC_A, "198.18.1.2/32"),
            (2, "podB", MAC_B, "198.18.2.2/32"),
        ],
        |v| v.queues = Some(2),
    );
    let mut a = MultiQueuePod::connect(&socks[0], 2).expect("pod A");
    let mut b = MultiQueuePod::connect(&socks[1], 2).expect("pod B");

    // Both pairs of each pod up, each on its own lcore.
    for name in ["podA", "podB"] {
        let v = vr.wait_vif(name, &format!("{name}: two queue pairs up"), |v| {
            v.status.queue_pairs.len() == 2
        });
        let at = placement(&v);
        assert_eq!(
            at.keys().copied().collect::<Vec<_>>(),
            [0, 1],
            "{name}: {:?}",
            v.status.queue_pairs
        );
        let lcores: std::collections::BTreeSet<u32> = at.values().copied().collect();
        assert_eq!(
            lcores,
            [1, 2].into(),
            "{name}: each queue pair on its own lcore: {:?}",
            v.status.queue_pairs
        );
    }

    let mut seen = Seen::default();
    let mut next = 0u32;
    run(&mut a, &mut b, &mut next, 20, &mut seen);
    let sent = u64::from(next) * u64::from(FLOWS);
    assert_eq!(
        seen.received, sent,
        "every packet arrived (nothing is dropped on a quiet machine)"
    );
    assert!(seen.reordered.is_empty(), "reordered: {:?}", seen.reordered);
    for (flow, queues) in &seen.queues {
        assert_eq!(queues.len(), 1, "flow {flow} arrived on queues {queues:?}");
    }
    let used: std::collections::BTreeSet<usize> = seen.queues.values().flatten().copied().collect();
    assert_eq!(used, [0, 1].into(), "the flow hash uses both of B's queues");
    // Both queues served, per queue: A's guest TX rings read, B's guest RX rings written.
    let va = vr.vif("podA");
    let vb = vr.vif("podB");
    for q in &va.status.queue_pairs {
        assert!(
            q.rx_packets > 0,
            "podA queue {} received nothing: {q:?}",
            q.queue
        );
    }
    for q in &vb.status.queue_pairs {
        assert!(
            q.tx_packets > 0,
            "podB queue {} was sent nothing: {q:?}",
            q.queue
        );
    }
    // The same per queue in /metrics, with the lcore serving it.
    let metrics = vr
        .api(|c| async move { c.metrics().await })
        .expect("metrics");
    for q in &vb.status.queue_pairs {
        let line = format!(
            "vrouter_vif_queue_tx_packets_total{{vif=\"podB\",queue=\"{}\",lcore=\"{}\"}} ",
            q.queue, q.lcore
        );
        assert!(
            metrics.contains(&line),
            "{line} not in /metrics:\n{metrics}"
        );
    }
    let a_sum: u64 = va.status.queue_pairs.iter().map(|q| q.rx_packets).sum();
    let b_sum: u64 = vb.status.queue_pairs.iter().map(|q| q.tx_packets).sum();
    assert_eq!((a_sum, b_sum), (sent, sent), "per-queue counters add up");

    // Move B's pair 0 and A's pair 1 back and forth between the lcores while traffic flows
    // (A's pair 1: a guest TX ring taken over mid-stream; B's pair 0: a guest RX ring), ending
    // on the other lcore, pinned.
    let b0 = placement(&vb)[&0];
    let a1 = placement(&va)[&1];
    let other = |l: u32| if l == 1 { 2 } else { 1 };
    let before_b0 = vb.status.queue_pairs[0].tx_packets;
    let before_a1 = va.status.queue_pairs[1].rx_packets;
    let moving = std::sync::atomic::AtomicBool::new(true);
    let moves = std::thread::scope(|s| {
        let mover = s.spawn(|| {
            let client =
                control_api::BlockingClient::new(vr.control_socket()).expect("second client");
            let mut moves = 0;
            for k in 0..101 {
                let (to_b, to_a) = if k % 2 == 0 {
                    (other(b0), other(a1))
                } else {
                    (b0, a1)
                };
                client
                    .run(|c| async move {
                        c.queue_pin("podB", 0, to_b).await?;
                        c.queue_pin("podA", 1, to_a).await
                    })
                    .expect("pins");
                moves += 2;
                std::thread::sleep(Duration::from_millis(2));
            }
            moving.store(false, std::sync::atomic::Ordering::Release);
            moves
        });
        while moving.load(std::sync::atomic::Ordering::Acquire) {
            run(&mut a, &mut b, &mut next, 1, &mut seen);
        }
        mover.join().expect("mover")
    });
    run(&mut a, &mut b, &mut next, 5, &mut seen);
    eprintln!(
        "{moves} moves; {} of {} packets arrived",
        seen.received,
        u64::from(next) * u64::from(FLOWS)
    );
    let vb = vr.vif("podB");
    let va = vr.vif("podA");
    assert_eq!(placement(&vb)[&0], other(b0), "{:?}", vb.status.queue_pairs);
    assert!(vb.status.queue_pairs[0].pinned);
    assert_eq!(placement(&va)[&1], other(a1), "{:?}", va.status.queue_pairs);
    assert!(
        vb.status.queue_pairs[0].tx_packets > before_b0,
        "B's pair 0 still served"
    );
    assert!(
        va.status.queue_pairs[1].rx_packets > before_a1,
        "A's pair 1 still served"
    );
    assert!(seen.reordered.is_empty(), "reordered: {:?}", seen.reordered);
    for (flow, queues) in &seen.queues {
        assert_eq!(queues.len(), 1, "flow {flow} arrived on queues {queues:?}");
    }
    // A move may cost a few packets in flight at the hand-over, never their order.
    let sent = u64::from(next) * u64::from(FLOWS);
    assert!(
        seen.received * 10 >= sent * 9,
        "received {} of {sent}",
        seen.received
    );

    // Refusals name what is wrong.
    let err = |r: Result<(), control_api::Error>| {
        let e = r.expect_err("refused");
        (e.status(), e.to_string())
    };
    let (status, msg) = err(vr.api(|c| async move { c.queue_pin("nope", 0, 1).await }));
    assert_eq!(status, 404, "{msg}");
    assert!(msg.contains("nope"), "{msg}");
    let (status, msg) = err(vr.api(|c| async move { c.queue_pin("podA", 5, 1).await }));
    assert_eq!(status, 404, "{msg}");
    assert!(msg.contains("queue pair"), "{msg}");
    let (status, msg) = err(vr.api(|c| async move { c.queue_pin("podA", 0, 7).await }));
    assert_eq!(status, 400, "{msg}");
    assert!(msg.contains("lcore 7"), "{msg}");
}

#[test]
fn a_pinned_queue_pair_stays_pinned_across_a_restart_with_state_dir() {
    let dir = tempfile::Builder::new()
        .prefix("vrouterd-mq-state")
        .tempdir()
        .expect("temporary directory");
    let state = dir.path().join("state");
    let state_arg = state.display().to_string();
    let args = [
        "--fwd-lcores",
        "1,2@1",
        "--state-dir",
        state_arg.as_str(),
        "--idle-sleep-us",
        "100",
    ];
    let vr = Vrouterd::start_in(dir.path(), &vrouterd_bin(), &args, &[]);
    vr.api(|c| async move { c.vrf_add(1).await })
        .expect("vrf 1");
    let sock_dir = vr.socket_base().join("podP");
    let mut v = vhost_user_vif("podP", MAC_A, &sock_dir, "net0", VhostUserMode::Server);
    v.queues = Some(2);
    vr.add_vif(&v);
    // Both pairs on lcore 2, where load alone would put pair 0 on lcore 1.
    vr.api(|c| async move {
        c.queue_pin("podP", 0, 2).await?;
        c.queue_pin("podP", 1, 2).await
    })
    .expect("pins");
    let status = vr.stop();
    assert!(status.success(), "vrouterd exit {status}");

    let vr = Vrouterd::start_in(dir.path(), &vrouterd_bin(), &args, &[]);
    let _pod = MultiQueuePod::connect(&sock_dir.join("net0"), 2).expect("pod");
    let v = vr.wait_vif("podP", "both pairs up", |v| v.status.queue_pairs.len() == 2);
    for q in &v.status.queue_pairs {
        assert_eq!((q.lcore, q.pinned), (2, true), "{:?}", v.status.queue_pairs);
    }
    let status = vr.stop();
    assert!(status.success(), "vrouterd exit {status}");
}

/// DPDK pods (testpmd over virtio-user, `queues=2`): a sender whose flows vary by source
/// address (`--txonly-multi-flow`) and a receiver. Each pod's two queue pairs are up on the two
/// lcores and every one of the four rings is served.
#[test]
fn testpmd_pods_with_two_queue_pairs_are_served_on_both_lcores() {
    let vr = Vrouterd::start(
        &vrouterd_bin(),
        &["--fwd-lcores", "1,2@1", "--idle-sleep-us", "20"],
        &[],
    );
    let socks = vr.vhost_pods(
        &[
            (1, "tpodA", MAC_A, "198.18.1.0/24"),
            (2, "tpodB", MAC_B, "198.18.2.2/32"),
        ],
        |v| v.queues = Some(2),
    );
    let t0 = Instant::now();
    let _rx = TestpmdConfig {
        queues: 2,
        ..TestpmdConfig::receiver(&socks[1])
    }
    .start();
    let mut sender = TestpmdConfig::sender(&socks[0], "198.18.1.2", "198.18.2.2");
    sender.queues = 2;
    sender
        .extra_app_args
        .push(String::from("--txonly-multi-flow"));
    let _tx = sender.start();
    for name in ["tpodA", "tpodB"] {
        let v = vr.wait_vif(name, &format!("{name}: two queue pairs up"), |v| {
            v.status.queue_pairs.len() == 2
        });
        let lcores: std::collections::BTreeSet<u32> = placement(&v).values().copied().collect();
        assert_eq!(lcores, [1, 2].into(), "{name}: {:?}", v.status.queue_pairs);
    }
    eprintln!("pairs up after {:?}", t0.elapsed());
    // Every ring moves: A's guest TX rings read on both lcores, B's guest RX rings written.
    vr.wait_vif("tpodA", "both of A's TX rings read", |v| {
        v.status.queue_pairs.iter().all(|q| q.rx_packets > 1000)
    });
    eprintln!("A's rings after {:?}", t0.elapsed());
    let v = vr.wait_vif("tpodB", "both of B's RX rings written", |v| {
        v.status.queue_pairs.iter().all(|q| q.tx_packets > 1000)
    });
    eprintln!(
        "B's rings after {:?}: {:?}",
        t0.elapsed(),
        v.status.queue_pairs
    );
}

/// Queues are rebalanced when a vif goes: three single-queue pods on two lcores (two on one),
/// the one alone removed: one of the other two moves to the idle lcore, and traffic between
/// them still flows.
#[test]
fn removing_a_vif_rebalances_queues_over_the_lcores() {
    let vr = Vrouterd::start(
        &vrouterd_bin(),
        &["--fwd-lcores", "1,2@1", "--idle-sleep-us", "20"],
        &[],
    );
    let base = vr.socket_base();
    vr.api(|c| async move { c.vrf_add(1).await })
        .expect("vrf 1");
    let mac_c = MacAddr([0x02, 0, 0, 0, 0x0c, 0x01]);
    let mut pods = Vec::new();
    for (id, name, mac, prefix) in [
        (1, "podX", MAC_A, "198.18.1.2/32"),
        (2, "podY", MAC_B, "198.18.3.2/32"),
        (3, "podZ", mac_c, "198.18.2.2/32"),
    ] {
        let dir = base.join(name);
        vr.add_vif(&vhost_user_vif(
            name,
            mac,
            &dir,
            "net0",
            VhostUserMode::Server,
        ));
        if name != "podY" {
            // Y, removed later, is not routed to (no nexthop holds it).
            vr.route_to(id, name, mac, &[prefix]);
        }
        // One at a time: each takes the least loaded lcore as its queue comes up.
        let pod = FrontendPod::connect(&dir.join("net0"), Memory::Memfd).expect("pod");
        vr.wait_connected(name);
        pods.push(pod);
    }
    let lcore = |name: &str| vr.vif(name).status.lcore;
    let (x, y, z) = (lcore("podX"), lcore("podY"), lcore("podZ"));
    assert_ne!(x, y, "the second vif goes to the idle lcore");
    assert_eq!(x, z, "the third to the one with fewer queues, the first's");
    let y_pod = pods.remove(1);
    vr.api(|c| async move { c.vif_del("podY").await })
        .expect("del podY");
    drop(y_pod);
    vr.wait_until(
        "podX and podZ on different lcores",
        || (lcore("podX"), lcore("podZ")),
        |(x, z)| x != z,
    );
    // Still forwarding after the move: X to Z.
    let (mut px, mut pz) = (pods.remove(0), pods.remove(0));
    let f = udp_frame(MAC_A.0, VROUTER_MAC, [198, 18, 1, 2], [198, 18, 2, 2]);
    let got = vr.wait_until(
        "a frame from X reaches Z",
        || {
            px.send(&f, 1);
            std::thread::sleep(Duration::from_millis(20));
            pz.receive().len()
        },
        |&n| n > 0,
    );
    assert!(got > 0);
}
