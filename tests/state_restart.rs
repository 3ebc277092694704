//! vrouterd killed (SIGKILL) under traffic and started again with the same `--state-dir`:
//! traffic from a DPDK pod on a server-mode vif, one on a client-mode vif and a kernel pod
//! resumes without a single configuring API call (only reads, to watch), the configuration
//! reads back as it was (vif indices and a policy included), and the directory the first
//! vrouterd created for a socket is still removed by the second one.
//!
//! Pods: A (testpmd txonly, a virtio-user *client*: its vif is server-mode) sends to B
//! (testpmd icmpecho, a virtio-user *server*: its vif is client-mode), which also answers the
//! pings of K (a namespace on a veth with the kernel's default offloads, an af-packet vif).

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use control_api::api::{
    MacAddr, Nexthop, Policy, PolicyAction, PolicyRule, PortRange, Proto, VhostUserMode, VifInfo,
    VifRequest, VifType,
};
use testkit::kernel_pod::KernelPod;
use testkit::netns::Netns;
use testkit::testpmd::{TestpmdConfig, TestpmdPod};
use testkit::vrouterd::{connected, vhost_user_vif as vhost_vif, Vrouterd};

const MAC_A: MacAddr = MacAddr([0x02, 0, 0, 0, 0x0a, 0x01]);
const MAC_B: MacAddr = MacAddr([0x02, 0, 0, 0, 0x0b, 0x01]);
const B_IP: &str = "198.18.2.2";

fn vrouterd_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_vrouterd"))
}

fn rx(vr: &Vrouterd, name: &str) -> u64 {
    vr.vif(name).status.counters.rx_packets
}

fn tx(vr: &Vrouterd, name: &str) -> u64 {
    vr.vif(name).status.counters.tx_packets
}

/// A's and B's vifs connected, A's packets reaching vrouterd and B, and K's pings answered.
fn wait_for_traffic(vr: &Vrouterd, k: &KernelPod, when: &str) {
    for vif in ["podA", "podB"] {
        vr.wait_vif(vif, &format!("{when}: {vif} connects"), connected);
    }
    let (a0, b0) = (rx(vr, "podA"), tx(vr, "podB"));
    vr.wait_until(
        &format!("{when}: A's traffic reaches B"),
        || (rx(vr, "podA"), tx(vr, "podB")),
        |&(a, b)| a >= a0 + 10_000 && b >= b0 + 10_000,
    );
    // B's ring is busy with A's packets: a ping may be dropped on the way, so ask until one
    // round trip completes.
    vr.wait_until(
        &format!("{when}: K's pings answered"),
        || {
            k.ns.command("ping")
                .args(["-c", "3", "-i", "0.2", "-W", "1", B_IP])
                .output()
                .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
                .unwrap_or_default()
        },
        |out| replies(out) > 0,
    );
    assert!(
        rx(vr, "podK") > 0 && tx(vr, "podK") > 0,
        "K's vif moved both ways"
    );
}

/// The replies a ping's summary line counts ("3 packets transmitted, 2 received, …").
fn replies(ping_output: &str) -> u32 {
    ping_output
        .split(", ")
        .find_map(|part| part.strip_suffix(" received"))
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or(0)
}

fn sender(socket: &Path) -> TestpmdPod {
    TestpmdConfig::sender(socket, "198.18.1.2", B_IP).start()
}

/// B answers ARP and ICMP echo (K's pings) and drops the rest (A's UDP), counting all of it.
fn echoer(socket: &Path) -> TestpmdPod {
    TestpmdConfig {
        forward_mode: "icmpecho".into(),
        ..TestpmdConfig::receiver(socket).as_server()
    }
    .start()
}

fn configure(vr: &Vrouterd, base: &Path, k: &KernelPod) {
    vr.api(|c| async move { c.vrf_add(1).await })
        .expect("vrf 1");
    let mut vif_k = VifRequest::new("podK", VifType::AfPacket, 1, MacAddr(k.mac));
    vif_k.iface = Some(k.host_side.clone());
    for req in [
        vhost_vif(
            "podA",
            MAC_A,
            &base.join("pod-a"),
            "net0",
            VhostUserMode::Server,
        ),
        vhost_vif(
            "podB",
            MAC_B,
            &base.join("pod-b"),
            "net0",
            VhostUserMode::Client,
        ),
        vif_k,
    ] {
        vr.add_vif(&req);
    }
    let nexthops = [
        (
            1,
            Nexthop::Encap {
                vif: "podA".into(),
                dmac: MAC_A,
            },
        ),
        (
            2,
            Nexthop::Encap {
                vif: "podB".into(),
                dmac: MAC_B,
            },
        ),
        (
            3,
            Nexthop::Encap {
                vif: "podK".into(),
                dmac: MacAddr(k.mac),
            },
        ),
        (4, Nexthop::Receive),
    ];
    for (id, nh) in nexthops {
        vr.set_nexthop(id, nh);
    }
    for (prefix, nexthop) in [
        ("198.18.1.2/32", 1),
        ("198.18.2.2/32", 2),
        ("198.18.3.2/32", 3),
        ("198.18.3.1/32", 4),
    ] {
        vr.set_route(prefix, nexthop);
    }
    // K's traffic goes through the flow table (flows themselves are not kept: they are set up
    // again by the first packets after the restart).
    let policy = Policy {
        default: PolicyAction::Allow,
        ingress: vec![PolicyRule {
            action: PolicyAction::Deny,
            proto: Proto::TCP,
            cidr: None,
            ports: Some(PortRange { first: 9, last: 9 }),
        }],
        egress: Vec::new(),
    };
    vr.api(|c| async move { c.policy_set("podK", &policy).await })
        .expect("policy");
}

/// What the API shows of the configuration, without live state.
fn configuration(vr: &Vrouterd) -> String {
    let vifs: Vec<VifInfo> = vr.api(|c| async move { c.vifs().await }).expect("vifs");
    let vifs: Vec<_> = vifs
        .into_iter()
        .map(|v| (v.index, v.config, v.socket))
        .collect();
    let nexthops = vr
        .api(|c| async move { c.nexthops().await })
        .expect("nexthops");
    let routes = vr
        .api(|c| async move { c.routes(1).await })
        .expect("routes");
    let policy = vr
        .api(|c| async move { c.policy("podK").await })
        .expect("policy");
    format!("{vifs:?}\n{nexthops:?}\n{routes:?}\n{policy:?}")
}

#[test]
fn vrouterd_killed_under_traffic_restores_its_state_and_traffic_resumes_without_api_calls() {
    let t0 = Instant::now();
    // The node's own namespace keeps its AF_PACKET fanout groups apart from other tests'.
    let node = Netns::new("stnode");
    let k = KernelPod::attached_to(Some(&node), "s", 3, 1500);
    let dir = tempfile::Builder::new()
        .prefix("vrouterd-state")
        .tempdir()
        .expect("temporary directory");
    let (base, state_dir) = (dir.path().join("pods"), dir.path().join("state"));
    let state_arg = state_dir.display().to_string();
    let args = ["--state-dir", state_arg.as_str()];
    // B's directory is the pod's (its CNI made it); A's is made by vrouterd for its socket.
    std::fs::create_dir_all(base.join("pod-b")).expect("pod-b dir");
    let (sock_a, sock_b) = (base.join("pod-a/net0"), base.join("pod-b/net0"));

    let vr = Vrouterd::start_in_netns(dir.path(), Some(&node), &vrouterd_bin(), &args, &[]);
    configure(&vr, &base, &k);
    let pod_b = echoer(&sock_b);
    let mut pod_a = sender(&sock_a);
    wait_for_traffic(&vr, &k, "first vrouterd");
    let before = configuration(&vr);
    eprintln!(
        "traffic through the first vrouterd after {:?}",
        t0.elapsed()
    );

    let status = vr.kill();
    assert_eq!(status.code(), None, "killed by a signal: {status}");
    assert!(
        sock_a.exists(),
        "a killed vrouterd leaves its server socket behind"
    );

    let t1 = Instant::now();
    let vr = Vrouterd::start_in_netns(dir.path(), Some(&node), &vrouterd_bin(), &args, &[]);
    eprintln!("second vrouterd answering after {:?}", t1.elapsed());
    // From here on: reads only.
    assert_eq!(
        configuration(&vr),
        before,
        "the configuration is back as it was"
    );
    // DPDK's virtio-user in client mode never reconnects once its backend went away (DPDK
    // 22.11 drivers/net/virtio/virtio_user/vhost_user.c, vhost_user_update_link_state: only a
    // server-mode port waits for a new backend; a client's link just stays down). So A is
    // restarted, as Kubernetes restarts a pod whose link went down; B (a virtio-user server)
    // and K reconnect by themselves.
    pod_a.stop(Duration::from_secs(10));
    let pod_a = sender(&sock_a);
    wait_for_traffic(&vr, &k, "second vrouterd");
    eprintln!(
        "traffic resumed {:?} after the restart ({:?} in all)",
        t1.elapsed(),
        t0.elapsed()
    );

    drop((pod_a, pod_b));
    let status = vr.stop();
    assert!(status.success(), "vrouterd exit {status}");
    assert!(!sock_a.exists(), "the server socket is removed");
    assert!(
        !base.join("pod-a").exists(),
        "and the directory the first vrouterd created for it"
    );
    assert!(base.join("pod-b").exists(), "the pod's own directory stays");
}
