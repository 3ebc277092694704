//! pkt0, the agent channel, through the real vrouterd and kernel pods: an agent written with
//! control-api's pkt0 client receives the first packet of each new flow a vif policy leaves to
//! it, allows the flow and injects the packet back; later packets pass without it. Without an
//! agent such packets are counted as `no_agent`; a pod flooding new flows is rate-limited
//! (`agent_rate_limited`) while other pods keep forwarding and still reach the agent;
//! malformed agent messages are logged and skipped and change nothing else; the agent
//! channel's own counters (`GET /agent`, `/metrics`) show the messages, the malformed ones, the
//! verdicts, injects and sends; DHCP from a vif without an address reaches the agent; every
//! lcore's counters balance.

use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use control_api::api::{AgentStats, DropStats, Policy, PolicyAction, Stats};
use control_api::pkt0::{Connection, FlowTuple, Message, Reason, Verdict};
use testkit::kernel_pod::{route_in_vrf1, KernelPod};
use testkit::netns::{temp_path, Netns};
use testkit::vrouterd::Vrouterd;

fn vrouterd_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_vrouterd"))
}

/// What the test agent saw: (reason, vif, vrf, tuple) per trapped packet.
type Seen = Arc<Mutex<Vec<(Reason, u16, u16, Option<FlowTuple>)>>>;

/// An agent that allows every new flow trapped from `decide_vif` (and injects its packet
/// back), and only records the others.
fn agent(
    conn: Connection,
    decide_vif: u16,
    stop: Arc<AtomicBool>,
) -> (Seen, std::thread::JoinHandle<Connection>) {
    let seen: Seen = Arc::default();
    let s = Arc::clone(&seen);
    let mut conn = conn;
    conn.stream()
        .set_read_timeout(Some(Duration::from_millis(100)))
        .expect("timeout");
    let h = std::thread::spawn(move || {
        while !stop.load(Ordering::Relaxed) {
            let m = match conn.recv() {
                Ok(m) => m,
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) =>
                {
                    continue
                }
                Err(e) => panic!("pkt0: {e}"),
            };
            let Message::Trap {
                reason,
                vif,
                vrf,
                frame,
                ..
            } = m
            else {
                panic!("vrouterd sent {m:?}");
            };
            let tuple = FlowTuple::of_frame(&frame);
            s.lock().unwrap().push((reason, vif, vrf, tuple));
            if let (Reason::NewFlow, Some(t), true) = (reason, tuple, vif == decide_vif) {
                conn.send(&Message::Verdict(Verdict {
                    vif,
                    vrf,
                    allow: true,
                    tuple: t,
                }))
                .expect("verdict");
                conn.send(&Message::Inject { vif, frame }).expect("inject");
            }
        }
        conn
    });
    (seen, h)
}

fn drops(vr: &Vrouterd) -> DropStats {
    vr.api(|c| async move { c.dropstats().await })
        .expect("dropstats")
}

fn reason(d: &DropStats, r: &str) -> u64 {
    d.reasons.get(r).copied().unwrap_or(0)
}

fn agent_stats(vr: &Vrouterd) -> AgentStats {
    vr.api(|c| async move { c.agent_stats().await })
        .expect("GET /agent")
}

fn stats(vr: &Vrouterd) -> Stats {
    vr.api(|c| async move { c.stats().await }).expect("stats")
}

#[test]
fn an_agent_decides_trapped_first_packets_and_a_flooding_pod_is_rate_limited() {
    testkit::netns::require_root();
    let node = Netns::new("agentnode");
    let pod1 = KernelPod::attached_to(Some(&node), "ag1", 1, 1500);
    let pod2 = KernelPod::attached_to(Some(&node), "ag2", 2, 1500);
    let pod3 = KernelPod::attached_to(Some(&node), "ag3", 3, 1500);
    let sock = temp_path("pkt0", "sock");
    let vr = Vrouterd::start_netns(
        Some(&node),
        &vrouterd_bin(),
        &[
            "--idle-sleep-us",
            "20",
            "--flow-entries",
            "4096",
            "--agent-socket",
            sock.to_str().unwrap(),
            "--agent-trap-rate",
            "20",
            "--agent-trap-burst",
            "10",
            "--agent-max-held",
            "16",
            "--agent-held-ms",
            "20000",
        ],
        &[],
    );
    let mode = std::fs::metadata(&sock)
        .expect("agent socket")
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600, "agent socket mode {mode:o}");
    route_in_vrf1(&vr, &[("pod1", &pod1), ("pod2", &pod2), ("pod3", &pod3)]);
    let vif1 = vr.vif("pod1").index as u16;
    let vif3 = vr.vif("pod3").index as u16;
    let to_agent = Policy {
        default: PolicyAction::Agent,
        ingress: vec![],
        egress: vec![],
    };
    for pod in ["pod1", "pod3"] {
        let p = to_agent.clone();
        vr.api(|c| async move { c.policy_set(pod, &p).await })
            .expect("policy");
    }

    // No agent yet: the first packet is dropped and counted.
    let a0 = agent_stats(&vr);
    assert!(a0.enabled && !a0.connected, "{a0:?}");
    assert_eq!(a0.connections, 0, "{a0:?}");
    let d0 = drops(&vr);
    let out = pod1
        .ns
        .command("ping")
        .args(["-c", "1", "-W", "1", "198.18.2.2"])
        .output()
        .expect("ping");
    assert!(!out.status.success(), "no agent, no verdict, no reply");
    assert!(reason(&drops(&vr), "no_agent") > reason(&d0, "no_agent"));

    // The agent connects, allows pod 1's flows and injects their first packets back.
    let stop = Arc::new(AtomicBool::new(false));
    let conn = Connection::connect(&sock).expect("connect to pkt0");
    let (seen, agent_thread) = agent(conn, vif1, Arc::clone(&stop));
    std::thread::sleep(Duration::from_millis(200));
    let out = pod1.ping("198.18.2.2", 3);
    assert!(out.contains("3 received"), "decided by the agent: {out}");
    let from1 = |seen: &Seen| {
        seen.lock()
            .unwrap()
            .iter()
            .filter(|(r, v, _, _)| *r == Reason::NewFlow && *v == vif1)
            .count()
    };
    assert_eq!(from1(&seen), 1, "only the first packet went to the agent");
    {
        let s = seen.lock().unwrap();
        let (_, _, vrf, t) = s[0];
        assert_eq!(vrf, 1);
        let t = t.expect("an IPv4 tuple");
        assert_eq!((t.proto, t.dport), (1, 8), "an echo request");
        assert_eq!(t.src, pod1.ip);
    }
    let flows = vr
        .api(|c| async move { c.flow_stats().await })
        .expect("flow stats");
    assert_eq!(flows.active, 2, "the flow and its reverse: {flows:?}");
    // The channel's own counters: one trap out; a verdict and an inject in.
    let a1 = agent_stats(&vr);
    assert!(a1.connected, "{a1:?}");
    assert_eq!(
        (
            a1.connections,
            a1.traps_sent,
            a1.messages,
            a1.verdicts,
            a1.injects
        ),
        (1, 1, 2, 1, 1),
        "{a1:?}"
    );
    assert_eq!(
        (a1.malformed, a1.sends, a1.inject_failed),
        (0, 0, 0),
        "{a1:?}"
    );

    // Malformed messages: logged and skipped; nothing else changes and the channel goes on.
    let bad_version = [
        9u8, 4, 0, 4, 0, 0, 0, 1, 0, 0, 0, 0, 0xff, 0xff, 0xff, 0xff, 1, 2, 3, 4,
    ];
    let mut bad_verdict = Vec::new();
    Message::Verdict(Verdict {
        vif: vif1,
        vrf: 1,
        allow: true,
        tuple: FlowTuple {
            proto: 17,
            src: pod1.ip.into(),
            dst: pod2.ip.into(),
            sport: 1,
            dport: 2,
        },
    })
    .encode(&mut bad_verdict);
    bad_verdict[16] = 5; // address family 5
    stop.store(true, Ordering::Relaxed);
    let mut conn = agent_thread.join().expect("agent thread");
    conn.send_raw(&bad_version).expect("send");
    conn.send_raw(&bad_verdict).expect("send");
    std::thread::sleep(Duration::from_millis(300));
    let flows2 = vr
        .api(|c| async move { c.flow_stats().await })
        .expect("flow stats");
    assert_eq!(flows2.active, flows.active, "no flow from a bad verdict");
    // Each is logged as an error and counted, and nothing else moved.
    let logged = |what: &str| {
        let out = vr.process.outputs();
        out.lines()
            .filter(|l| l.contains("ERROR"))
            .filter(|l| l.contains("pkt0: malformed message from the agent skipped"))
            .any(|l| l.contains(what))
    };
    for what in ["unsupported pkt0 version 9", "verdict for address family 5"] {
        assert!(
            logged(what),
            "no error logged for {what}:\n{}",
            vr.process.outputs()
        );
    }
    let a2 = agent_stats(&vr);
    assert_eq!((a2.messages, a2.malformed), (a1.messages + 2, 2), "{a2:?}");
    assert_eq!(
        (a2.verdicts, a2.verdicts_failed, a2.injects, a2.sends),
        (a1.verdicts, a1.verdicts_failed, a1.injects, a1.sends),
        "{a2:?}"
    );
    let metrics = vr
        .api(|c| async move { c.metrics().await })
        .expect("metrics");
    for line in [
        "vrouter_agent_connected 1",
        "vrouter_agent_malformed_total 2",
        &format!("vrouter_agent_messages_total {}", a2.messages),
        &format!("vrouter_agent_verdicts_total {}", a2.verdicts),
        &format!("vrouter_agent_injects_total {}", a2.injects),
    ] {
        assert!(metrics.lines().any(|l| l == line), "{line} in:\n{metrics}");
    }
    // A frame the agent sends out of a vif (an experimental EtherType pod 2 ignores) counts as
    // a send.
    let mut frame = Vec::from(pod2.mac);
    frame.extend_from_slice(&[0x02, 0, 0, 0, 0, 0x99, 0x88, 0xb5]);
    frame.resize(60, 0);
    let vif2 = vr.vif("pod2").index as u16;
    conn.send(&Message::Send { vif: vif2, frame })
        .expect("send");
    let sent = testkit::wait::poll(
        Duration::from_secs(5),
        || agent_stats(&vr),
        |a| a.sends == 1,
    );
    assert!(sent.is_ok(), "the send counted: {:?}", agent_stats(&vr));
    let stop = Arc::new(AtomicBool::new(false));
    let (seen, agent_thread) = agent(conn, vif1, Arc::clone(&stop));

    // Pod 3 floods new flows: rate-limited, while a new flow of pod 1 (a new ping, a new echo
    // id) still reaches the agent, is decided and passes.
    let before = drops(&vr);
    let mut flood = pod3
        .ns
        .command("python3")
        .args([
            "-c",
            "import socket, time\n\
             s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\n\
             t = time.time(); i = 0\n\
             while time.time() - t < 2.0:\n\
             \x20   s.sendto(b'x' * 32, ('198.18.2.2', 1024 + i % 60000)); i += 1\n",
        ])
        .spawn()
        .expect("flood");
    std::thread::sleep(Duration::from_millis(300));
    let out = pod1.ping("198.18.2.2", 5);
    assert!(
        out.contains("5 received"),
        "pod 1 unaffected by pod 3: {out}"
    );
    assert!(flood.wait().expect("flood").success());
    let after = drops(&vr);
    let limited = reason(&after, "agent_rate_limited") - reason(&before, "agent_rate_limited");
    let from3 = seen
        .lock()
        .unwrap()
        .iter()
        .filter(|(_, v, _, _)| *v == vif3)
        .count();
    assert!(
        limited > 1000,
        "the flood is rate-limited: {limited} {after:?}"
    );
    // Never decided: at most 16 of its flows are held for the agent, the rest counted.
    assert_eq!(from3, 16, "pod 3's held flows");
    let held_full = reason(&after, "agent_held_full") - reason(&before, "agent_held_full");
    assert!(held_full > 0, "{after:?}");
    assert_eq!(
        reason(&after, "agent_queue_full"),
        0,
        "the queue never filled: {after:?}"
    );
    assert_eq!(from1(&seen), 1, "pod 1's new flow reached the agent once");

    // DHCP from a vif without an address goes to the agent (pod 2's vif has none).
    let run = pod2
        .ns
        .command("busybox")
        .args([
            "udhcpc", "-i", "eth0", "-f", "-q", "-n", "-t", "1", "-T", "1",
        ])
        .args(["-s", "/bin/true"])
        .output()
        .expect("busybox udhcpc");
    assert!(!run.status.success(), "the agent does not answer it");
    let dhcp = seen
        .lock()
        .unwrap()
        .iter()
        .filter(|(r, v, _, _)| *r == Reason::Dhcp && *v == vif2)
        .count();
    assert!(dhcp >= 1, "DHCP reached the agent");

    // A pod's gratuitous ARP (what a guest sends when a live migration landed it on a vif)
    // reaches the agent, which owns the routes to move.
    let ip2 = pod2.ip.to_string();
    let run = pod2
        .ns
        .command("busybox")
        .args([
            "arping", "-U", "-c", "1", "-w", "1", "-I", "eth0", "-s", &ip2, &ip2,
        ])
        .output()
        .expect("busybox arping");
    let garp = |seen: &Seen| {
        seen.lock()
            .unwrap()
            .iter()
            .filter(|(r, v, _, _)| *r == Reason::Garp && *v == vif2)
            .count()
    };
    let got = testkit::wait::poll(Duration::from_secs(5), || garp(&seen), |n| *n >= 1);
    assert!(got.is_ok(), "the GARP reached the agent (arping: {run:?})");

    // Every lcore balances, traps and injected packets included.
    let s = stats(&vr);
    for l in &s.lcores {
        let ins = l.rx_packets + l.taken_from_lcores + l.packets_made;
        let outs = l.tx_packets + l.queued_to_lcores + l.drops;
        assert_eq!(ins, outs, "lcore {} balances: {l:?}", l.lcore);
    }

    stop.store(true, Ordering::Relaxed);
    drop(agent_thread.join());
    assert!(vr.stop().success());
    assert!(!sock.exists(), "the agent socket is removed at shutdown");
}
