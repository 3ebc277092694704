//! vrouterctl end to end: the real binary against a running server on a unix socket.

mod common;

use std::process::{Command, Output};

use common::TestServer;
use control_api::api::{FlowAction, FlowEntry, VifCounters};

fn ctl(s: &TestServer, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_vrouterctl"))
        .arg("--socket")
        .arg(&s.socket)
        .args(args)
        .output()
        .unwrap()
}

/// Run, expect success, return stdout.
#[track_caller]
fn ok(s: &TestServer, args: &[&str]) -> String {
    let out = ctl(s, args);
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "vrouterctl {args:?} failed: {}{stdout}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

/// Run, expect failure, return stderr.
#[track_caller]
fn fails(s: &TestServer, args: &[&str]) -> String {
    let out = ctl(s, args);
    assert!(
        !out.status.success(),
        "vrouterctl {args:?} should have failed"
    );
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn vrouterctl_drives_the_whole_api() {
    let s = TestServer::start();
    let dir = s.base.join("pod-1");
    let dir_s = dir.to_str().unwrap();

    assert_eq!(ok(&s, &["vrf", "add", "1"]).trim(), "vrf 1 present");
    let out = ok(
        &s,
        &[
            "vif",
            "add",
            "pod1",
            "--type",
            "vhost-user",
            "--vrf",
            "1",
            "--mac",
            "02:00:00:00:01:01",
            "--ip",
            "198.18.1.2",
            "--socket-dir",
            dir_s,
            "--socket-file",
            "net1",
            "--mode",
            "server",
        ],
    );
    assert!(
        out.contains("vif pod1 added: index 0, state listening"),
        "{out}"
    );
    assert!(out.contains(dir.join("net1").to_str().unwrap()), "{out}");
    assert!(dir.join("net1").exists());
    ok(
        &s,
        &[
            "vif",
            "add",
            "fabric0",
            "--type",
            "physical",
            "--vrf",
            "0",
            "--mac",
            "02:00:00:00:00:aa",
            "--device",
            "net_af_packet0,iface=veth0",
            // Room for the pods' 1500 bytes and a tunnel's headers.
            "--mtu",
            "9000",
        ],
    );

    s.dp.with(|st| {
        st.counters.insert(
            "pod1".into(),
            VifCounters {
                rx_packets: 42,
                rx_bytes: 4200,
                tx_packets: 40,
                tx_bytes: 4000,
                drops: 0,
            },
        )
    });
    let list = ok(&s, &["vif", "list"]);
    let mut lines = list.lines();
    let header = lines.next().unwrap();
    assert!(
        header.starts_with("INDEX") && header.contains("STATE") && header.contains("RX_PKTS"),
        "{list}"
    );
    let row = lines.find(|l| l.contains("pod1")).unwrap();
    assert!(
        row.contains("listening") && row.contains(" 42 ") && row.contains("198.18.1.2"),
        "{row}"
    );
    let show = ok(&s, &["vif", "show", "pod1"]);
    assert!(
        show.contains("rx           42 packets, 4200 bytes"),
        "{show}"
    );
    let json: serde_json::Value =
        serde_json::from_str(&ok(&s, &["--json", "vif", "show", "pod1"])).unwrap();
    assert_eq!(json["index"], 0);
    assert_eq!(json["vhostuser-mode"], "server");

    ok(
        &s,
        &[
            "nh",
            "set",
            "1",
            "encap",
            "--vif",
            "pod1",
            "--dmac",
            "02:00:00:00:01:01",
        ],
    );
    ok(
        &s,
        &[
            "nh",
            "set",
            "2",
            "tunnel",
            "--encap",
            "mplsoudp",
            "--vif",
            "fabric0",
            "--sip",
            "192.0.2.1",
            "--dip",
            "192.0.2.2",
            "--dmac",
            "02:00:00:00:00:bb",
        ],
    );
    ok(&s, &["nh", "set", "3", "ecmp", "--members", "1,2"]);
    // A tunnel with its own label: shown in the list.
    ok(
        &s,
        &[
            "nh",
            "set",
            "4",
            "tunnel",
            "--encap",
            "mplsogre",
            "--vif",
            "fabric0",
            "--sip",
            "192.0.2.1",
            "--dip",
            "192.0.2.3",
            "--label",
            "2003",
        ],
    );
    let nhs = ok(&s, &["nh", "list"]);
    assert!(
        nhs.lines()
            .any(|l| l.starts_with("4 ") && l.contains("192.0.2.3") && l.contains("label 2003")),
        "{nhs}"
    );
    ok(&s, &["nh", "del", "4"]);
    ok(
        &s,
        &["route", "add", "--vrf", "1", "198.18.1.2/32", "--nh", "1"],
    );
    ok(
        &s,
        &[
            "route",
            "add",
            "--vrf",
            "1",
            "198.18.2.0/24",
            "--nh",
            "2",
            "--label",
            "100",
        ],
    );
    let routes = ok(&s, &["route", "list", "--vrf", "1"]);
    assert!(
        routes
            .lines()
            .any(|l| l.starts_with("198.18.2.0/24") && l.ends_with("100")),
        "{routes}"
    );
    let nhs = ok(&s, &["nh", "list"]);
    assert!(
        nhs.lines()
            .any(|l| l.starts_with("3 ") && l.contains("members 1,2")),
        "{nhs}"
    );
    let err = fails(&s, &["nh", "del", "1"]);
    assert!(
        err.contains("409 in-use") && err.contains("route 198.18.1.2/32 in vrf 1"),
        "{err}"
    );
    let err = fails(
        &s,
        &["route", "add", "--vrf", "1", "198.18.3.0/24", "--nh", "2"],
    );
    assert!(
        err.contains("409 conflict") && err.contains("label"),
        "{err}"
    );

    ok(&s, &["mpls", "set", "100", "--nh", "1"]);
    ok(&s, &["mpls", "set", "101", "--vrf", "1"]);
    let labels = ok(&s, &["mpls", "list"]);
    let rows: Vec<Vec<&str>> = labels
        .lines()
        .map(|l| l.split_whitespace().collect())
        .collect();
    assert!(rows.contains(&vec!["100", "nexthop", "1"]), "{labels}");
    assert!(rows.contains(&vec!["101", "vrf", "1"]), "{labels}");
    let err = fails(&s, &["mpls", "set", "102"]);
    assert!(err.contains("--nh") && err.contains("--vrf"), "{err}");
    ok(&s, &["vxlan", "set", "5001", "--vrf", "1"]);
    assert!(ok(&s, &["vxlan", "list"]).contains("5001"));
    ok(
        &s,
        &[
            "bridge",
            "add",
            "--vrf",
            "1",
            "02:00:00:00:01:01",
            "--nh",
            "1",
        ],
    );
    assert!(ok(&s, &["bridge", "list", "--vrf", "1"]).contains("02:00:00:00:01:01"));

    ok(
        &s,
        &[
            "policy",
            "set",
            "pod1",
            "--default",
            "deny",
            "--ingress",
            "allow tcp 198.18.0.0/15 80",
            "--egress",
            "allow",
        ],
    );
    let pol = ok(&s, &["policy", "show", "pod1"]);
    assert!(pol.starts_with("default deny"), "{pol}");
    assert!(
        pol.lines().any(|l| l.starts_with("ingress")
            && l.contains("tcp")
            && l.contains("198.18.0.0/15")
            && l.ends_with("80")),
        "{pol}"
    );
    assert_eq!(s.dp.with(|st| st.policies.len()), 1);

    s.dp.with(|st| {
        for i in 0..3u64 {
            st.flows.push(FlowEntry {
                index: i,
                vrf: 1,
                src: "198.18.1.2".parse().unwrap(),
                dst: "198.18.2.9".parse().unwrap(),
                proto: 17,
                sport: 5000 + i as u16,
                dport: 53,
                action: FlowAction::Forward,
                reverse: None,
                packets: 1,
                bytes: 60,
                tcp_state: None,
                idle_ms: 5,
                translated: None,
            });
        }
        st.drops.insert("invalid_packet".into(), 3);
    });
    let page = ok(&s, &["flows", "list", "--limit", "2"]);
    assert!(page.contains("more: --cursor 2"), "{page}");
    let all = ok(&s, &["flows", "list", "--limit", "2", "--all"]);
    assert_eq!(
        all.lines().filter(|l| l.contains("198.18.2.9:53")).count(),
        3,
        "{all}"
    );
    let fstats = ok(&s, &["flows", "stats"]);
    let cells: Vec<&str> = fstats.lines().nth(1).unwrap().split_whitespace().collect();
    assert_eq!(cells[..2], ["524288", "3"], "{fstats}");
    assert_eq!(ok(&s, &["flows", "flush"]).trim(), "3 flows flushed");
    let stats = ok(&s, &["stats"]);
    assert!(
        stats
            .lines()
            .any(|l| l.starts_with("total") && l.contains("42")),
        "{stats}"
    );
    assert!(ok(&s, &["dropstats"])
        .lines()
        .any(|l| l.starts_with("invalid_packet") && l.ends_with('3')));
    // This dataplane has no agent channel.
    assert_eq!(
        ok(&s, &["agent"]).trim(),
        "pkt0 not enabled (vrouterd --agent-socket)"
    );
    let aj: serde_json::Value = serde_json::from_str(&ok(&s, &["--json", "agent"])).unwrap();
    assert_eq!(
        (&aj["enabled"], &aj["malformed"]),
        (&false.into(), &0.into())
    );
    let health = ok(&s, &["health"]);
    assert!(
        health.starts_with("status ok") && health.contains("mbuf_pool_0"),
        "{health}"
    );
    let hj: serde_json::Value = serde_json::from_str(&ok(&s, &["--json", "health"])).unwrap();
    assert_eq!(hj["status"], "ok");
    assert!(
        ok(&s, &["metrics"]).contains("vrouter_vif_rx_packets_total{vif=\"pod1\",index=\"0\"} 42")
    );

    // Isolation refusals come back as errors and leave nothing behind.
    let before = s.snapshot();
    let escape = format!("{}/../escape", s.base.display());
    let err = fails(
        &s,
        &[
            "vif",
            "add",
            "evil",
            "--type",
            "vhost-user",
            "--vrf",
            "1",
            "--mac",
            "02:00:00:00:01:09",
            "--socket-dir",
            &escape,
            "--socket-file",
            "s",
            "--mode",
            "server",
        ],
    );
    assert!(err.contains("socket-outside-base"), "{err}");
    assert_eq!(before, s.snapshot());

    // Tear down in dependency order; the socket and its directory go with the vif.
    ok(&s, &["policy", "del", "pod1"]);
    ok(&s, &["bridge", "del", "--vrf", "1", "02:00:00:00:01:01"]);
    ok(&s, &["mpls", "del", "100"]);
    ok(&s, &["mpls", "del", "101"]);
    ok(&s, &["vxlan", "del", "5001"]);
    ok(&s, &["route", "del", "--vrf", "1", "198.18.1.2/32"]);
    ok(&s, &["route", "del", "--vrf", "1", "198.18.2.0/24"]);
    for id in ["3", "2", "1"] {
        ok(&s, &["nh", "del", id]);
    }
    assert_eq!(ok(&s, &["vif", "del", "pod1"]).trim(), "vif pod1 removed");
    assert!(!dir.exists());
    ok(&s, &["vif", "del", "fabric0"]);
    ok(&s, &["vrf", "del", "1"]);
    let vrfs = ok(&s, &["vrf", "list"]);
    assert_eq!(vrfs.lines().count(), 2, "{vrfs}");
}

#[test]
fn vrouterctl_says_when_vrouterd_is_not_there() {
    let tmp = tempfile::tempdir().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_vrouterctl"))
        .arg("--socket")
        .arg(tmp.path().join("nope.sock"))
        .arg("health")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("nope.sock") && err.contains("is vrouterd running"),
        "{err}"
    );
}

#[test]
fn the_blocking_client_works_without_a_runtime() {
    let s = TestServer::start();
    let c = control_api::BlockingClient::new(&s.socket).unwrap();
    c.run(|c| async move { c.vrf_add(9).await }).unwrap();
    let vrfs = c.run(|c| async move { c.vrfs().await }).unwrap();
    assert_eq!(vrfs.iter().map(|v| v.vrf).collect::<Vec<_>>(), [0, 9]);
    let err = c.run(|c| async move { c.vrf_del(0).await }).unwrap_err();
    assert_eq!((err.status(), err.code()), (409, "conflict"));
}

/// `vif list --rate` and `stats --rate` show what moved between two samples, per second: the
/// counters grow while vrouterctl watches, and the lines it prints (`--json`, one per refresh)
/// say so.
#[test]
fn live_views_show_per_second_rates() {
    let s = TestServer::start();
    ok(&s, &["vrf", "add", "1"]);
    ok(
        &s,
        &[
            "vif",
            "add",
            "kpod",
            "--type",
            "af-packet",
            "--vrf",
            "1",
            "--mac",
            "02:00:00:00:00:0b",
            "--iface",
            "veth-rate",
        ],
    );
    let set = |rx: u64| {
        s.dp.with(|st| {
            st.counters.insert(
                "kpod".into(),
                VifCounters {
                    rx_packets: rx,
                    rx_bytes: rx * 100,
                    tx_packets: 0,
                    tx_bytes: 0,
                    drops: rx / 10,
                },
            )
        })
    };
    set(1000);
    let watch = |args: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_vrouterctl"))
            .arg("--socket")
            .arg(&s.socket)
            .args(args)
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap()
    };
    let vifs = watch(&[
        "--json",
        "vif",
        "list",
        "--rate",
        "--interval",
        "1",
        "--count",
        "2",
    ]);
    let lcores = watch(&[
        "--json",
        "stats",
        "--rate",
        "--interval",
        "1",
        "--count",
        "2",
    ]);
    // Within the first interval the vif receives 50,000 packets more; in the second, none.
    std::thread::sleep(std::time::Duration::from_millis(300));
    set(51_000);
    let lines = |child: std::process::Child| -> Vec<serde_json::Value> {
        let out = child.wait_with_output().unwrap();
        assert!(out.status.success());
        String::from_utf8(out.stdout)
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    };
    let v = lines(vifs);
    assert_eq!(v.len(), 2, "one line per refresh: {v:?}");
    let first = &v[0][0];
    assert_eq!(first["name"], "kpod");
    let pps = first["rx_pps"].as_f64().unwrap();
    // 50,000 packets over one interval of about a second (a loaded machine stretches it).
    assert!((20_000.0..=50_000.0).contains(&pps), "{first}");
    let mbit = first["rx_mbit_s"].as_f64().unwrap();
    assert!(
        (mbit - pps * 800.0 / 1e6).abs() < 1e-6 * pps.max(1.0),
        "{first}"
    );
    assert!(
        (first["drops_per_s"].as_f64().unwrap() - pps / 10.0).abs() < 1.0,
        "{first}"
    );
    assert_eq!(
        v[1][0]["rx_pps"], 0.0,
        "nothing moved in the second interval"
    );
    let l = lines(lcores);
    assert_eq!(l.len(), 2);
    assert!(l[0][0]["rx_pps"].as_f64().unwrap() >= 20_000.0, "{l:?}");
    // A human table otherwise; a bad interval is refused up front.
    let table = ok(
        &s,
        &["vif", "list", "--rate", "--interval", "0.1", "--count", "1"],
    );
    assert!(
        table.starts_with("NAME") && table.contains("kpod"),
        "{table}"
    );
    let top = ok(&s, &["flows", "top", "--interval", "0.1", "--count", "1"]);
    assert!(top.starts_with("VRF") && top.contains("MBIT/S"), "{top}");
    let err = fails(&s, &["stats", "--rate", "--interval", "0"]);
    assert!(err.contains("seconds between"), "{err}");
}

#[test]
fn vrouterctl_sets_nat_pools_and_attachments() {
    let s = TestServer::start();
    ok(&s, &["vrf", "add", "5"]);
    let out = ok(
        &s,
        &[
            "nat",
            "pool-set",
            "egress",
            "198.51.100.64",
            "198.51.100.65",
            "--ports",
            "40000-40999",
        ],
    );
    assert!(
        out.contains("198.51.100.64-198.51.100.65 in vrf 0, ports 40000-40999 (2000 pairs)"),
        "{out}"
    );
    assert!(
        ok(&s, &["nat", "attach", "5", "egress"]).contains("vrf 5 leaves through nat pool egress")
    );
    let list = ok(&s, &["nat", "pools"]);
    let row = list
        .lines()
        .find(|l| l.starts_with("egress"))
        .expect("a row for the pool");
    assert!(
        row.contains("0/2000") && row.trim_end().ends_with('5'),
        "{row}"
    );
    let json = ok(&s, &["--json", "nat", "pools"]);
    let v: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(v[0]["attached"], serde_json::json!([5]));
    assert!(fails(&s, &["nat", "pool-del", "egress"]).contains("in-use"));
    assert!(fails(
        &s,
        &["nat", "pool-set", "x", "198.51.100.9", "198.51.100.1"]
    )
    .contains("below first"));
    assert!(ok(
        &s,
        &[
            "nat",
            "fip-set",
            "198.51.100.200",
            "--vrf",
            "5",
            "--ip",
            "198.18.1.11"
        ]
    )
    .contains("floating ip 198.51.100.200 is 198.18.1.11 in vrf 5"));
    let fips = ok(&s, &["nat", "fips"]);
    assert!(
        fips.lines()
            .any(|l| l.starts_with("198.51.100.200") && l.trim_end().ends_with("198.18.1.11")),
        "{fips}"
    );
    assert!(fails(
        &s,
        &[
            "nat",
            "fip-set",
            "198.51.100.64",
            "--vrf",
            "5",
            "--ip",
            "198.18.1.12"
        ]
    )
    .contains("nat pool egress"));
    ok(&s, &["nat", "fip-del", "198.51.100.200"]);
    // IPv6: a floating IPv6 and a NAT66 pool; mixed families refused, naming them.
    let out = ok(
        &s,
        &[
            "nat",
            "fip-set",
            "2001:db8:64::c8",
            "--vrf",
            "5",
            "--ip",
            "2001:db8:18:1::2",
        ],
    );
    assert!(
        out.contains("floating ip 2001:db8:64::c8 is 2001:db8:18:1::2 in vrf 5"),
        "{out}"
    );
    assert!(ok(&s, &["nat", "fips"]).contains("2001:db8:64::c8"));
    assert!(fails(
        &s,
        &[
            "nat",
            "fip-set",
            "2001:db8:64::c9",
            "--vrf",
            "5",
            "--ip",
            "198.18.1.13"
        ]
    )
    .contains("different address families"));
    ok(&s, &["nat", "fip-del", "2001:db8:64::c8"]);
    ok(
        &s,
        &[
            "nat",
            "pool-set",
            "egress6",
            "2001:db8:64::40",
            "2001:db8:64::41",
            "--ports",
            "40000-40999",
        ],
    );
    assert!(ok(&s, &["nat", "pools"]).contains("2001:db8:64::40"));
    assert!(fails(
        &s,
        &[
            "nat",
            "pool-set",
            "mixed",
            "2001:db8:64::50",
            "198.51.100.99"
        ]
    )
    .contains("different address families"));
    ok(&s, &["nat", "pool-del", "egress6"]);
    let out = ok(
        &s,
        &[
            "nat",
            "svc-set",
            "web",
            "--vrf",
            "5",
            "--balance",
            "least-flows",
            "198.18.1.100:80",
            "198.18.1.11:8080",
            "198.18.1.12:8080",
        ],
    );
    assert!(
        out.contains("service web set: 198.18.1.100:80 in vrf 5, 2 backends"),
        "{out}"
    );
    let svcs = ok(&s, &["nat", "svcs"]);
    assert!(
        svcs.lines().any(|l| l.starts_with("web")
            && l.contains("198.18.1.100:80")
            && l.contains("tcp")
            && l.contains("least-flows")
            && l.contains("198.18.1.12:8080=0")),
        "{svcs}"
    );
    assert!(fails(
        &s,
        &[
            "nat",
            "svc-set",
            "x",
            "--vrf",
            "5",
            "198.18.1.101:80",
            "nope"
        ]
    )
    .contains("ADDRESS:PORT"));
    assert!(fails(
        &s,
        &[
            "nat",
            "svc-set",
            "x",
            "--vrf",
            "7",
            "198.18.1.101:80",
            "198.18.1.11:1"
        ]
    )
    .contains("vrf 7"));
    ok(&s, &["nat", "svc-del", "web"]);
    assert!(!ok(&s, &["nat", "svcs"]).contains("web"));
    ok(&s, &["nat", "detach", "5"]);
    ok(&s, &["nat", "pool-del", "egress"]);
    assert!(!ok(&s, &["nat", "pools"]).contains("egress"));
}

#[test]
fn events_lists_the_changes_and_follow_waits_for_more() {
    let s = TestServer::start();
    ok(&s, &["vrf", "add", "3"]);
    ok(&s, &["vrf", "add", "4"]);
    let out = ok(&s, &["events"]);
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 2, "{out}");
    assert!(
        lines[0].contains("vrf-add") && lines[0].contains("\"vrf\":3"),
        "{out}"
    );
    let json = ok(&s, &["--json", "events", "--since", "1"]);
    let v: serde_json::Value = serde_json::from_str(json.trim()).expect("a JSON line");
    assert_eq!(
        (v["revision"].as_u64(), v["change"]["vrf"].as_u64()),
        (Some(2), Some(4))
    );

    // --follow prints a change accepted while it waits.
    let mut follow = Command::new(env!("CARGO_BIN_EXE_vrouterctl"))
        .args([
            "--socket",
            s.socket.to_str().unwrap(),
            "events",
            "--since",
            "2",
            "--follow",
        ])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("vrouterctl events --follow");
    std::thread::sleep(std::time::Duration::from_millis(300));
    ok(&s, &["vrf", "del", "4"]);
    let mut line = String::new();
    let mut reader = std::io::BufReader::new(follow.stdout.take().unwrap());
    std::io::BufRead::read_line(&mut reader, &mut line).expect("a line");
    let _ = follow.kill();
    let _ = follow.wait();
    assert!(
        line.contains("vrf-del") && line.contains("\"vrf\":4"),
        "{line}"
    );
}

#[test]
fn vrouterctl_sets_lists_and_removes_a_vrf_routing_identity() {
    let s = TestServer::start();
    ok(&s, &["vrf", "add", "7"]);
    let out = ok(
        &s,
        &[
            "vrf",
            "routing",
            "7",
            "--rd",
            "64512:7",
            "--import",
            "target:64512:7",
            "--import",
            "64512:70",
            "--export",
            "target:64512:7",
            "--vni",
            "7007",
            "--label",
            "7000",
        ],
    );
    assert!(out.contains("vrf 7 routing identity set"), "{out}");
    let list = ok(&s, &["vrf", "list"]);
    let row = list.lines().find(|l| l.starts_with('7')).expect(&list);
    for cell in ["64512:7", "target:64512:7,64512:70", "7007", "7000"] {
        assert!(row.contains(cell), "{cell} in {row}");
    }
    let err = fails(
        &s,
        &[
            "vrf", "routing", "7", "--rd", "nope", "--import", "1:1", "--export", "1:1", "--vni",
            "1",
        ],
    );
    assert!(err.contains("rd"), "{err}");
    let err = fails(&s, &["vrf", "del", "7"]);
    assert!(err.contains("routing identity"), "{err}");
    ok(&s, &["vrf", "routing-del", "7"]);
    ok(&s, &["vrf", "del", "7"]);
}
