//! Flow export to a real collector: Debian's nfcapd receives vrouterd's IPFIX records and
//! nfdump reads them back; the flows a pod generated (three UDP flows, 300 packets in all,
//! sent in two rounds either side of the active timeout) come back with their tuples, packets
//! and bytes, split into a periodic record and a final one.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use control_api::api::{MacAddr, Policy, PolicyAction};
use testkit::frontend_pod::{udp_frame, FrontendPod, Memory};
use testkit::process::TestProcess;
use testkit::vrouterd::Vrouterd;

const MAC_A: MacAddr = MacAddr([0x02, 0, 0, 0, 0x0a, 0x01]);
const MAC_B: MacAddr = MacAddr([0x02, 0, 0, 0, 0x0b, 0x01]);
const VROUTER_MAC: [u8; 6] = [0x00, 0x00, 0x5e, 0x00, 0x01, 0x00];

fn vrouterd_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_vrouterd"))
}

/// A UDP port nothing listens on now (the collector takes it next).
fn free_udp_port() -> u16 {
    let s = std::net::UdpSocket::bind("127.0.0.1:0").expect("bind");
    s.local_addr().expect("addr").port()
}

/// Pod A's frame to pod B from source port `sport`.
fn frame(sport: u16) -> Vec<u8> {
    let mut f = udp_frame(MAC_A.0, VROUTER_MAC, [198, 18, 1, 2], [198, 18, 2, 2]);
    f[34..36].copy_from_slice(&sport.to_be_bytes());
    // UDP checksum off (allowed for IPv4): the port changed under it.
    f[40..42].copy_from_slice(&[0, 0]);
    f
}

#[test]
fn nfcapd_receives_the_flows_a_pod_made() {
    for tool in ["nfcapd", "nfdump"] {
        assert!(
            Command::new("sh")
                .args(["-c", &format!("command -v {tool}")])
                .status()
                .is_ok_and(|s| s.success()),
            "{tool} is missing: scripts/install-deps.sh installs nfdump"
        );
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let port = free_udp_port();
    let mut collector = TestProcess::spawn(
        std::path::Path::new("/usr/bin/nfcapd"),
        &[
            "-w",
            dir.path().to_str().unwrap(),
            "-b",
            "127.0.0.1",
            "-p",
            &port.to_string(),
            "-t",
            "3600",
        ],
    );
    let target = format!("127.0.0.1:{port}");
    let vr = Vrouterd::start(
        &vrouterd_bin(),
        &[
            "--idle-sleep-us",
            "20",
            "--ipfix-collector",
            &target,
            "--ipfix-active-timeout",
            "2",
        ],
        &[],
    );
    let socks = vr.vhost_pods(
        &[
            (1, "podA", MAC_A, "198.18.1.2/32"),
            (2, "podB", MAC_B, "198.18.2.2/32"),
        ],
        |_| {},
    );
    // A policy puts pod A's traffic through the flow table.
    let allow = Policy {
        default: PolicyAction::Allow,
        ingress: vec![],
        egress: vec![],
    };
    vr.api(|c| async move { c.policy_set("podA", &allow).await })
        .expect("policy");
    let mut a = FrontendPod::connect(&socks[0], Memory::Memfd).expect("pod A");
    let mut b = FrontendPod::connect(&socks[1], Memory::Memfd).expect("pod B");
    for n in ["podA", "podB"] {
        vr.wait_connected(n);
    }

    // Flows 1000, 2000, 3000: 100 packets each, 40 now and 60 after the active timeout.
    let sports = [1000u16, 2000, 3000];
    let mut received = 0usize;
    for round in [40usize, 60] {
        for &sp in &sports {
            let f = frame(sp);
            let mut left = round;
            while left > 0 {
                left -= a.send(&f, left);
                received += b.receive().len();
            }
        }
        let want = if round == 40 { 120 } else { 300 };
        let _ = testkit::wait::poll(
            Duration::from_secs(20),
            || {
                received += b.receive().len();
                received
            },
            |&n| n >= want,
        );
        assert_eq!(received, want, "pod B got every packet so far");
        if round == 40 {
            // Past the 2 s active timeout: the next poll sends a periodic record.
            std::thread::sleep(Duration::from_millis(3500));
        }
    }
    let flows = vr
        .api(|c| async move { c.flows(&Default::default()).await })
        .expect("flows");
    let table_bytes: BTreeMap<u16, (u64, u64)> = flows
        .flows
        .iter()
        .filter(|f| f.dst.to_string() == "198.18.2.2")
        .map(|f| (f.sport, (f.packets, f.bytes)))
        .collect();
    assert_eq!(table_bytes.len(), 3, "{flows:?}");
    // The exporter's own counters: the periodic records of the three flows, at least, sent.
    let export = vr
        .api(|c| async move { c.flow_stats().await })
        .expect("flow stats")
        .export
        .expect("export counters while exporting");
    assert_eq!(export.collector.to_string(), target);
    assert!(export.records >= 3 && export.messages >= 2, "{export:?}");
    assert_eq!((export.dropped_records, export.send_errors), (0, 0));
    let metrics = vr
        .api(|c| async move { c.metrics().await })
        .expect("metrics");
    let sample = format!("vrouter_flow_export_records_total{{collector=\"{target}\"}} ");
    let line = metrics
        .lines()
        .find(|l| l.starts_with(&sample))
        .unwrap_or_else(|| panic!("no {sample} in /metrics"));
    let in_metrics: u64 = line[sample.len()..].parse().expect("a count");
    assert!(in_metrics >= export.records, "{line} vs {export:?}");
    // Stopping sends what the flows did since their periodic records; then the collector
    // writes its file.
    assert!(vr.stop().success());
    // nfcapd writes its file when told to stop.
    std::thread::sleep(Duration::from_millis(300));
    collector.signal("TERM");
    collector.wait(Duration::from_secs(10));
    eprintln!("nfcapd: {}", collector.outputs());

    let out = Command::new("nfdump")
        .args(["-R", dir.path().to_str().unwrap(), "-q", "-N", "-o"])
        .arg("fmt:%sa,%da,%sp,%dp,%pr,%pkt,%byt")
        .output()
        .expect("nfdump");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    eprintln!("{text}");
    // Per flow: the records nfdump read, and the packets and bytes they add up to.
    let mut got: BTreeMap<u16, (usize, u64, u64)> = BTreeMap::new();
    for line in text.lines().filter(|l| l.contains("198.18.2.2")) {
        let f: Vec<&str> = line.split(',').map(str::trim).collect();
        assert_eq!(
            (f[0], f[1], f[3], f[4]),
            ("198.18.1.2", "198.18.2.2", "40001", "17"),
            "{line}"
        );
        let e = got.entry(f[2].parse().unwrap()).or_default();
        e.0 += 1;
        e.1 += f[5].parse::<u64>().unwrap();
        e.2 += f[6].parse::<u64>().unwrap();
    }
    for sp in sports {
        let (records, packets, bytes) = got.get(&sp).copied().unwrap_or_default();
        assert_eq!(packets, 100, "flow {sp}: {got:?}");
        assert_eq!(
            (packets, bytes),
            table_bytes[&sp],
            "flow {sp}: as the flow table counted"
        );
        assert!(
            records >= 2,
            "flow {sp}: a periodic record and a final one: {got:?}"
        );
    }
}
