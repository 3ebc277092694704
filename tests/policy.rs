//! Security policy through the real vrouterd: a policy on a pod's vif makes every packet to it
//! go through the flow table; allowed flows and their replies pass, denied ones are dropped and
//! counted, a policy change takes effect on flows that already exist, and the flows are listed,
//! counted and flushed through the API.

use std::io::{BufRead, BufReader, Read};
use std::path::PathBuf;

use control_api::api::{FlowQuery, Policy, PolicyAction, PolicyRule, Proto};
use testkit::kernel_pod::{route_in_vrf1, KernelPod};
use testkit::netns::Netns;
use testkit::vrouterd::Vrouterd;

fn vrouterd_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_vrouterd"))
}

fn rule(action: PolicyAction, proto: Proto, cidr: &str, ports: Option<&str>) -> PolicyRule {
    PolicyRule {
        action,
        proto,
        cidr: Some(cidr.parse().expect("cidr")),
        ports: ports.map(|p| p.parse().expect("ports")),
    }
}

#[test]
fn policy_allows_denies_and_changes_take_effect_on_existing_flows() {
    let node = Netns::new("polnode");
    let pod1 = KernelPod::attached_to(Some(&node), "p1", 1, 1500);
    let pod2 = KernelPod::attached_to(Some(&node), "p2", 2, 1500);
    let vr = Vrouterd::start_netns(
        Some(&node),
        &vrouterd_bin(),
        &["--idle-sleep-us", "20", "--flow-entries", "4096"],
        &[],
    );
    route_in_vrf1(&vr, &[("pod1", &pod1), ("pod2", &pod2)]);
    let out = pod1.ping("198.18.2.2", 2);
    assert!(
        out.contains("2 received"),
        "no policy: everything passes: {out}"
    );

    // pod2 accepts ICMP and TCP 5201 from pod1's subnet, nothing else.
    let policy = Policy {
        default: PolicyAction::Deny,
        ingress: vec![],
        egress: vec![
            rule(PolicyAction::Allow, Proto::ICMP, "198.18.1.0/24", None),
            rule(
                PolicyAction::Allow,
                Proto::TCP,
                "198.18.1.0/24",
                Some("5201"),
            ),
        ],
    };
    vr.api(|c| async move { c.policy_set("pod2", &policy).await })
        .expect("policy");
    let out = pod1.ping("198.18.2.2", 3);
    assert!(
        out.contains("3 received"),
        "ICMP allowed, replies too: {out}"
    );
    let (sent, got) = pod1.tcp_transfer(&pod2, 2_000_000);
    assert_eq!(sent, got, "allowed TCP flow and its replies pass intact");
    let before = vr
        .api(|c| async move { c.dropstats().await })
        .expect("dropstats");
    let flow_drops =
        |d: &control_api::api::DropStats| d.reasons.get("flow_drop").copied().unwrap_or(0);
    // UDP is denied: sent, never answered, counted.
    pod1.ns.exec(&["python3", "-c", "import socket; s=socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\nfor i in range(20): s.sendto(b'x'*64, ('198.18.2.2', 9999))"]);
    vr.wait_until(
        "denied UDP counted",
        || {
            vr.api(|c| async move { c.dropstats().await })
                .expect("dropstats")
        },
        |after| flow_drops(after) >= flow_drops(&before) + 20,
    );

    let stats = vr
        .api(|c| async move { c.flow_stats().await })
        .expect("flow stats");
    assert!(stats.created >= 3 && stats.active >= 2, "{stats:?}");
    let page = vr
        .api(|c| async move {
            c.flows(&FlowQuery {
                vrf: Some(1),
                limit: Some(100),
                cursor: None,
            })
            .await
        })
        .expect("flows");
    assert!(
        page.flows
            .iter()
            .any(|f| f.proto == 1 && f.dst.to_string() == "198.18.2.2"),
        "the ICMP flow is listed: {page:?}"
    );

    // A running ping's flow exists once a reply came back through it; the new policy denies
    // ICMP and must stop it.
    let mut ping = pod1
        .ns
        .command("ping")
        .args(["-c", "40", "-i", "0.1", "-W", "1", "198.18.2.2"])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("ping");
    let mut out = BufReader::new(ping.stdout.take().expect("ping's output"));
    let mut text = String::new();
    while !text.contains("bytes from") {
        let n = out.read_line(&mut text).expect("ping's output");
        assert!(n > 0, "ping ended before a reply came: {text}");
    }
    let deny_icmp = Policy {
        default: PolicyAction::Deny,
        ingress: vec![],
        egress: vec![rule(
            PolicyAction::Allow,
            Proto::TCP,
            "198.18.1.0/24",
            Some("5201"),
        )],
    };
    vr.api(|c| async move { c.policy_set("pod2", &deny_icmp).await })
        .expect("policy change");
    out.read_to_string(&mut text).expect("ping's output");
    ping.wait().expect("ping exits");
    let received: u32 = text
        .lines()
        .find(|l| l.contains("received"))
        .and_then(|l| l.split(", ").nth(1))
        .and_then(|p| p.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or(0);
    assert!(
        (1..30).contains(&received),
        "replies stopped once the rule was gone: {text}"
    );

    let flushed = vr
        .api(|c| async move { c.flush_flows().await })
        .expect("flush");
    assert!(flushed.flushed >= 1, "{flushed:?}");
    vr.api(|c| async move { c.policy_del("pod2").await })
        .expect("policy removed");
    let out = pod1.ping("198.18.2.2", 2);
    assert!(out.contains("2 received"), "no policy again: {out}");
    assert!(vr.stop().success());
}
