//! Tables live forever, through the REST API of a real vrouterd.
//!
//! - 100 000 distinct routes (and, alongside, bridge entries, VNIs, MPLS labels and nexthops)
//!   are added and removed over the control socket while a forwarding core carries a testpmd
//!   pod's traffic to another pod through a route whose trie group is folded away and reused
//!   over and over: every packet the sender sent is accounted for (none dropped for want of a
//!   route), traffic flows through every stretch of the churn, and vrouterd's RSS stays within
//!   5 % of what it was after warm-up.
//! - vrouterd started with small table limits answers the request that would overflow a route
//!   or bridge table with 507 `table-full` naming the table and its limit, changes nothing,
//!   and takes the same request once a removal made room.

use std::collections::VecDeque;
use std::net::{IpAddr, Ipv4Addr};
use std::path::{Path, PathBuf};
use std::time::Instant;

use control_api::api::{BridgeEntry, IpPrefix, MacAddr, Nexthop, Route, VhostUserMode};
use control_api::Client;
use testkit::testpmd::{TestpmdConfig, TestpmdPod};
use testkit::traffic;
use testkit::vrouterd::{vhost_user_vif, Vrouterd};

const MAC_A: MacAddr = MacAddr([0x02, 0, 0, 0, 0x0a, 0x01]);
const MAC_B: MacAddr = MacAddr([0x02, 0, 0, 0, 0x0b, 0x01]);
/// Distinct routes added and removed.
const ROUTES: u32 = 100_000;
/// Churned routes present at a time.
const LIVE: usize = 256;

fn vrouterd_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_vrouterd"))
}

fn prefix(a: Ipv4Addr, len: u8) -> IpPrefix {
    IpPrefix::new(IpAddr::V4(a), len).expect("prefix")
}

/// A route to `p` through nexthop 3, which discards.
fn discarded(p: IpPrefix) -> Route {
    Route {
        prefix: p,
        nexthop: 3,
        label: None,
    }
}

/// The k-th churned route: a /32 in 198.18.0.0/15 (an odd multiplier permutes the 17 low
/// bits, so distinct k below 2^17 give distinct addresses), none in 198.18.1.0/24 or
/// 198.18.2.0/24, where the pods' routes are.
fn churned(k: u32) -> Option<IpPrefix> {
    let a = 0xc612_0000 | (k.wrapping_mul(0x9e37_79b1) & 0x1_ffff);
    if matches!(a >> 8, 0xc6_1201 | 0xc6_1202) {
        return None;
    }
    Some(prefix(Ipv4Addr::from(a), 32))
}

#[test]
fn a_hundred_thousand_routes_come_and_go_over_rest_while_pods_forward() {
    // Per-change log lines would cost more than the changes; the start-up line stays.
    let vr = Vrouterd::start(
        &vrouterd_bin(),
        &["--log-level", "warn,control_api::server=info"],
        &[],
    );
    let base = vr.socket_base();
    let (dir_a, dir_b) = (base.join("pod-a"), base.join("pod-b"));
    vr.api(|c| async move { c.vrf_add(1).await })
        .expect("vrf 1");
    let req_a = vhost_user_vif("podA", MAC_A, &dir_a, "a.sock", VhostUserMode::Server);
    vr.api(|c| async move { c.vif_add(&req_a).await })
        .expect("podA");
    let req_b = vhost_user_vif("podB", MAC_B, &dir_b, "b.sock", VhostUserMode::Server);
    vr.api(|c| async move { c.vif_add(&req_b).await })
        .expect("podB");
    vr.api(|c| async move {
        c.nexthop_set(
            1,
            &Nexthop::Encap {
                vif: "podA".into(),
                dmac: MAC_A,
            },
        )
        .await?;
        c.nexthop_set(
            2,
            &Nexthop::Encap {
                vif: "podB".into(),
                dmac: MAC_B,
            },
        )
        .await?;
        c.nexthop_set(3, &Nexthop::Discard).await?;
        // The sink's traffic follows the /24: a churned /32 beside it below (in 198.18.2.0/24)
        // gives the /24 a trie group of its own, which its removal folds away and retires,
        // and the next route elsewhere reuses. A lookup reading it after its reuse would find
        // another /24's routes (or none) and drop or misroute the packet.
        for (p, nh) in [("198.18.1.2/32", 1), ("198.18.2.0/24", 2)] {
            let route = Route {
                prefix: p.parse().expect("prefix"),
                nexthop: nh,
                label: None,
            };
            c.route_set(1, &route).await?;
        }
        Ok::<_, control_api::Error>(())
    })
    .expect("nexthops and the pods' routes");
    let mut pod_b = receiver(&dir_b.join("b.sock"));
    vr.wait_connected("podB");
    let mut pod_a = sender(&dir_a.join("a.sock"));
    vr.wait_connected("podA");

    let t0 = Instant::now();
    let mut live: VecDeque<IpPrefix> = VecDeque::new();
    let mut others: VecDeque<u32> = VecDeque::new();
    let (mut done, mut k) = (0u32, 0u32);
    let mut warm: Option<u64> = None;
    let mut samples = Vec::new();
    let mut delivered = vr.vif("podB").status.counters.tx_packets;
    let mut changes = 0u64;
    while done < ROUTES || !live.is_empty() {
        // A batch of changes on one runtime turn: a route added (and the oldest removed), and
        // every eighth turn the /32 beside the sink; every twentieth a bridge entry, VNI, label
        // and nexthop of their own, kept 64 at a time.
        let add = if done < ROUTES { churned(k) } else { None };
        k += 1;
        let drop_route = (add.is_some() && live.len() >= LIVE || done >= ROUTES)
            .then(|| live.pop_front())
            .flatten();
        let beside =
            (k % 8 == 0).then(|| prefix(Ipv4Addr::new(198, 18, 2, 3 + (k / 8 % 250) as u8), 32));
        let other_add = (k % 20 == 0 && add.is_some()).then_some(k / 20);
        let other_del = (others.len() >= 64 || (done >= ROUTES && !others.is_empty()))
            .then(|| others.pop_front())
            .flatten();
        vr.api(|c| async move {
            if let Some(p) = add {
                c.route_set(1, &discarded(p)).await?;
            }
            if let Some(p) = drop_route {
                c.route_del(1, &p).await?;
            }
            if let Some(p) = beside {
                c.route_set(1, &discarded(p)).await?;
                c.route_del(1, &p).await?;
            }
            if let Some(j) = other_add {
                other_set(&c, j).await?;
            }
            if let Some(j) = other_del {
                other_del_(&c, j).await?;
            }
            Ok::<_, control_api::Error>(())
        })
        .unwrap_or_else(|e| panic!("after {done} routes: {e}"));
        changes += u64::from(add.is_some())
            + u64::from(drop_route.is_some())
            + 2 * u64::from(beside.is_some())
            + 4 * u64::from(other_add.is_some())
            + 4 * u64::from(other_del.is_some());
        if let Some(p) = add {
            live.push_back(p);
            done += 1;
            if let Some(j) = other_add {
                others.push_back(j);
            }
            // After a tenth, then every twentieth: vrouterd's RSS, and traffic still flowing.
            if done >= ROUTES / 10 && done % (ROUTES / 20) == 0 {
                let rss = vr.rss_kib();
                let now = vr.vif("podB").status.counters.tx_packets;
                eprintln!(
                    "{done:>6} routes in {:5.1} s: RSS {rss} KiB, pod B got {} packets meanwhile",
                    t0.elapsed().as_secs_f64(),
                    now - delivered
                );
                assert!(
                    now > delivered,
                    "traffic flowed while routes {done} changed"
                );
                delivered = now;
                warm.get_or_insert(rss);
                samples.push(rss);
            }
        }
    }
    let elapsed = t0.elapsed().as_secs_f64();

    let tally = traffic::finish(&vr, &mut pod_a, "podA", &mut pod_b, "podB");
    let (sent, got) = (tally.sent, tally.got);
    let drops = vr
        .api(|c| async move { c.dropstats().await })
        .expect("dropstats");
    let warm = warm.expect("measured after warm-up");
    let max = samples.iter().copied().max().unwrap_or(warm);
    eprintln!(
        "{ROUTES} routes in {elapsed:.1} s ({changes} changes, {:.0}/s); RSS after warm-up \
         {warm} KiB, at most {max} KiB; pod A sent {}, pod B got {}; drops {:?}",
        changes as f64 / elapsed,
        sent.tx_packets,
        got.rx_packets,
        drops.reasons
    );
    assert!(
        max as f64 <= warm as f64 * 1.05,
        "RSS grew: {warm} KiB → {samples:?}"
    );
    assert!(sent.tx_packets > 10_000, "{sent:?}");
    tally.assert_exact();
    for (reason, n) in &drops.reasons {
        if reason != "tx_queue_full" {
            assert_eq!(*n, 0, "{reason}: {:?}", drops.reasons);
        }
    }
    let routes = vr
        .api(|c| async move { c.routes(1).await })
        .expect("routes");
    assert_eq!(
        routes.len(),
        2,
        "only the pods' routes are left: {routes:?}"
    );
    drop((pod_a, pod_b));
    let status = vr.stop();
    assert!(status.success(), "vrouterd exit {status}");
}

/// txonly from 198.18.1.2 to the sink 198.18.2.2, through the vrouter MAC.
fn sender(socket: &Path) -> TestpmdPod {
    TestpmdConfig::sender(socket, "198.18.1.2", "198.18.2.2").start()
}

fn receiver(socket: &Path) -> TestpmdPod {
    TestpmdConfig::receiver(socket).start()
}

fn other_mac(j: u32) -> MacAddr {
    let b = j.to_be_bytes();
    MacAddr([0x02, 0xb0, b[0], b[1], b[2], b[3]])
}

/// A bridge entry, VNI, MPLS label and nexthop of their own for `j` (distinct for the 64
/// consecutive ones kept at a time).
async fn other_set(c: &Client, j: u32) -> Result<(), control_api::Error> {
    c.nexthop_set(100 + j % 1000, &Nexthop::Discard).await?;
    let entry = BridgeEntry {
        mac: other_mac(j),
        nexthop: 2,
        label: None,
    };
    c.bridge_set(1, &entry).await?;
    c.vxlan_set(100_000 + j, 1).await?;
    c.mpls_set(1000 + j % 100_000, 2).await?;
    Ok(())
}

async fn other_del_(c: &Client, j: u32) -> Result<(), control_api::Error> {
    c.mpls_del(1000 + j % 100_000).await?;
    c.vxlan_del(100_000 + j).await?;
    c.bridge_del(1, other_mac(j)).await?;
    c.nexthop_del(100 + j % 1000).await?;
    Ok(())
}

/// `(status, code, message)` of a refused call.
fn refusal<T: std::fmt::Debug>(r: Result<T, control_api::Error>) -> (u16, String, String) {
    match r {
        Err(control_api::Error::Api {
            status,
            code,
            message,
        }) => (status, code, message),
        other => panic!("expected a refusal, got {other:?}"),
    }
}

#[test]
fn a_full_table_answers_507_naming_the_table_and_its_limit() {
    let vr = Vrouterd::start(
        &vrouterd_bin(),
        &[
            "--idle-sleep-us",
            "20",
            "--route-groups-v4",
            "4",
            "--route-groups-v6",
            "2",
            "--bridge-entries",
            "8",
        ],
        &[],
    );
    vr.api(|c| async move {
        c.vrf_add(1).await?;
        c.nexthop_set(1, &Nexthop::Discard).await
    })
    .expect("vrf and nexthop");
    let route = |a: &str, len: u8| Route {
        prefix: IpPrefix::new(a.parse().expect("address"), len).expect("prefix"),
        nexthop: 1,
        label: None,
    };
    // IPv4: a /24 takes one group below its /16; four /16s fill a table of four groups.
    for x in 0..4 {
        let r = route(&format!("10.{x}.1.0"), 24);
        vr.api(|c| async move { c.route_set(1, &r).await })
            .expect("route within the limit");
    }
    let fifth = route("10.9.1.0", 24);
    let r = fifth.clone();
    let (status, code, message) = refusal(vr.api(|c| async move { c.route_set(1, &r).await }));
    assert_eq!((status, code.as_str()), (507, "table-full"), "{message}");
    assert!(
        message.starts_with("IPv4 route table of VRF 1 is full (limit 4 trie groups)")
            && message.contains("--route-groups-v4"),
        "{message}"
    );
    // A route needing no new group still fits; the refused one left nothing behind.
    let r = route("10.0.2.0", 24);
    vr.api(|c| async move { c.route_set(1, &r).await })
        .expect("a route in an existing group");
    let routes = vr
        .api(|c| async move { c.routes(1).await })
        .expect("routes");
    assert_eq!(routes.len(), 5, "{routes:?}");
    // Room made by a removal is taken (the group comes back after the lcore's grace period).
    let gone = route("10.3.1.0", 24).prefix;
    vr.api(|c| async move { c.route_del(1, &gone).await })
        .expect("remove one");
    let r = fifth.clone();
    vr.api(|c| async move { c.route_set(1, &r).await })
        .expect("the refused route fits now");

    // IPv6: a /32 takes two groups (below its /16 and its /24): a /32 in another /16 fails.
    let r = route("2001:db8::", 32);
    vr.api(|c| async move { c.route_set(1, &r).await })
        .expect("first /32");
    let r = route("2002:db8::", 32);
    let (status, code, message) = refusal(vr.api(|c| async move { c.route_set(1, &r).await }));
    assert_eq!((status, code.as_str()), (507, "table-full"), "{message}");
    assert!(
        message.starts_with("IPv6 route table of VRF 1 is full (limit 2 trie groups)")
            && message.contains("--route-groups-v6"),
        "{message}"
    );

    // Bridge: eight entries per VRF.
    for i in 1..=8u8 {
        let e = BridgeEntry {
            mac: MacAddr([2, 0, 0, 0, 1, i]),
            nexthop: 1,
            label: None,
        };
        vr.api(|c| async move { c.bridge_set(1, &e).await })
            .expect("bridge entry within the limit");
    }
    let e = BridgeEntry {
        mac: MacAddr([2, 0, 0, 0, 1, 9]),
        nexthop: 1,
        label: None,
    };
    let e2 = e.clone();
    let (status, code, message) = refusal(vr.api(|c| async move { c.bridge_set(1, &e2).await }));
    assert_eq!((status, code.as_str()), (507, "table-full"), "{message}");
    assert!(
        message.starts_with("bridge table of VRF 1 is full (limit 8 entries)")
            && message.contains("--bridge-entries"),
        "{message}"
    );
    let bridge = vr
        .api(|c| async move { c.bridge(1).await })
        .expect("bridge");
    assert_eq!(bridge.len(), 8, "the refused entry left nothing behind");
    // Replacing an entry needs no room; removing one makes room for another MAC.
    let e3 = BridgeEntry {
        mac: MacAddr([2, 0, 0, 0, 1, 1]),
        nexthop: 1,
        label: None,
    };
    vr.api(|c| async move { c.bridge_set(1, &e3).await })
        .expect("replace an entry of a full table");
    vr.api(|c| async move { c.bridge_del(1, MacAddr([2, 0, 0, 0, 1, 4])).await })
        .expect("remove one");
    vr.api(|c| async move { c.bridge_set(1, &e).await })
        .expect("the refused entry fits now");

    let status = vr.stop();
    assert!(status.success(), "vrouterd exit {status}");
}
