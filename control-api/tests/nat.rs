//! Source-NAT pools and attachments through the real HTTP server: the validation each request
//! gets (4xx naming the problem), state conflicts (409), and what the dataplane is told.

mod common;

use common::{call, refused, TestServer};
use hyper::Method;
use serde_json::{json, Value};

fn pool(vrf: u32, first: &str, last: &str) -> Value {
    json!({"vrf": vrf, "first": first, "last": last, "ports": {"first": 1024, "last": 2047}})
}

#[tokio::test]
async fn pools_and_attachments_round_trip_and_reach_the_dataplane() {
    let s = TestServer::start();
    assert_eq!(call(&s, Method::PUT, "/vrfs/5", None).await.0, 201);

    let (st, v) = call(
        &s,
        Method::PUT,
        "/nat/pools/egress",
        Some(pool(0, "198.51.100.64", "198.51.100.65")),
    )
    .await;
    assert_eq!(st, 201, "{v}");
    assert_eq!(v["capacity"], 2 * 1024);
    assert_eq!(v["attached"], json!([]));
    // The same pool again: confirmed, nothing applied.
    let (st, _) = call(
        &s,
        Method::PUT,
        "/nat/pools/egress",
        Some(pool(0, "198.51.100.64", "198.51.100.65")),
    )
    .await;
    assert_eq!(st, 200);
    // Ports default to 1024-65535.
    let (st, v) = call(
        &s,
        Method::PUT,
        "/nat/pools/wide",
        Some(json!({"vrf": 0, "first": "203.0.113.1", "last": "203.0.113.1"})),
    )
    .await;
    assert_eq!(st, 201, "{v}");
    assert_eq!(v["ports"], json!({"first": 1024, "last": 65535}));

    let (st, v) = call(
        &s,
        Method::PUT,
        "/vrfs/5/snat",
        Some(json!({"pool": "egress"})),
    )
    .await;
    assert_eq!((st, v), (201, json!({"pool": "egress"})));
    assert_eq!(
        call(
            &s,
            Method::PUT,
            "/vrfs/5/snat",
            Some(json!({"pool": "egress"}))
        )
        .await
        .0,
        200
    );
    assert_eq!(
        call(&s, Method::GET, "/vrfs/5/snat", None).await.1,
        json!({"pool": "egress"})
    );
    let (_, v) = call(&s, Method::GET, "/nat/pools/egress", None).await;
    assert_eq!(v["attached"], json!([5]));
    let (_, v) = call(&s, Method::GET, "/nat/pools", None).await;
    assert_eq!(v.as_array().unwrap().len(), 2);

    // Each accepted change went to the dataplane once, in order.
    let log = s.dp.with(|st| st.log.clone());
    let nat: Vec<&str> = log
        .iter()
        .map(String::as_str)
        .filter(|o| o.contains("nat"))
        .collect();
    assert_eq!(nat, ["nat_pool_set", "nat_pool_set", "snat_set"]);

    assert_eq!(call(&s, Method::DELETE, "/vrfs/5/snat", None).await.0, 204);
    refused(
        call(&s, Method::GET, "/vrfs/5/snat", None).await,
        404,
        "not-found",
        "snat attachment of vrf 5",
    );
    assert_eq!(
        call(&s, Method::DELETE, "/nat/pools/egress", None).await.0,
        204
    );
    refused(
        call(&s, Method::GET, "/nat/pools/egress", None).await,
        404,
        "not-found",
        "nat pool egress",
    );
}

#[tokio::test]
async fn bad_pools_get_400_naming_the_field() {
    let s = TestServer::start();
    let put = |body| call(&s, Method::PUT, "/nat/pools/p", Some(body));
    refused(
        put(pool(0, "198.51.100.9", "198.51.100.8")).await,
        400,
        "invalid-field",
        "below first",
    );
    refused(
        put(pool(0, "198.18.0.0", "198.18.1.0")).await,
        400,
        "invalid-field",
        "at most 256",
    );
    refused(
        put(pool(0, "0.0.0.0", "0.0.0.1")).await,
        400,
        "invalid-field",
        "unicast",
    );
    refused(
        put(pool(0, "224.0.0.1", "224.0.0.1")).await,
        400,
        "invalid-field",
        "unicast",
    );
    refused(
        put(json!({"vrf": 0, "first": "198.51.100.1", "last": "198.51.100.1", "ports": {"first": 9, "last": 2}})).await,
        400,
        "invalid-field",
        "ports",
    );
    refused(
        put(json!({"vrf": 0, "first": "198.51.100.1", "last": "198.51.100.1", "ports": {"first": 0, "last": 2}})).await,
        400,
        "invalid-field",
        "ports",
    );
    refused(
        put(json!({"vrf": 0, "first": "198.51.100.1"})).await,
        400,
        "invalid-json",
        "last",
    );
    refused(
        put(json!({"vrf": 0, "first": "x", "last": "198.51.100.1"})).await,
        400,
        "invalid-field",
        "first",
    );
    refused(
        call(
            &s,
            Method::PUT,
            "/nat/pools/-bad",
            Some(pool(0, "198.51.100.1", "198.51.100.1")),
        )
        .await,
        400,
        "invalid-path-param",
        "not a valid name",
    );
    refused(
        call(&s, Method::GET, "/nat/pools/-bad", None).await,
        400,
        "invalid-path-param",
        "name",
    );
    assert!(
        s.dp.with(|st| st.log.iter().all(|o| !o.contains("nat"))),
        "nothing applied"
    );
}

#[tokio::test]
async fn conflicts_with_the_configuration_get_409() {
    let s = TestServer::start();
    assert_eq!(call(&s, Method::PUT, "/vrfs/5", None).await.0, 201);
    // Pools live in the fabric VRF for now.
    refused(
        call(
            &s,
            Method::PUT,
            "/nat/pools/a",
            Some(pool(9, "198.51.100.1", "198.51.100.4")),
        )
        .await,
        400,
        "invalid-field",
        "VRF 0",
    );
    assert_eq!(
        call(
            &s,
            Method::PUT,
            "/nat/pools/a",
            Some(pool(0, "198.51.100.1", "198.51.100.4"))
        )
        .await
        .0,
        201
    );
    refused(
        call(
            &s,
            Method::PUT,
            "/nat/pools/b",
            Some(pool(0, "198.51.100.4", "198.51.100.9")),
        )
        .await,
        409,
        "conflict",
        "overlaps nat pool a",
    );
    assert_eq!(
        call(
            &s,
            Method::PUT,
            "/nat/pools/b",
            Some(pool(0, "198.51.100.5", "198.51.100.9"))
        )
        .await
        .0,
        201
    );
    // Attachments: unknown VRF (path) 404, unknown pool 409, a pool of the VRF itself 409.
    refused(
        call(&s, Method::PUT, "/vrfs/7/snat", Some(json!({"pool": "a"}))).await,
        404,
        "not-found",
        "vrf 7",
    );
    refused(
        call(&s, Method::PUT, "/vrfs/5/snat", Some(json!({"pool": "zz"}))).await,
        409,
        "unknown-reference",
        "nat pool zz",
    );
    refused(
        call(&s, Method::PUT, "/vrfs/0/snat", Some(json!({"pool": "b"}))).await,
        409,
        "conflict",
        "vrf 0 itself",
    );
    assert_eq!(
        call(&s, Method::PUT, "/vrfs/5/snat", Some(json!({"pool": "a"})))
            .await
            .0,
        201
    );
    // In use: the pool cannot change or go, the VRFs cannot go.
    refused(
        call(
            &s,
            Method::PUT,
            "/nat/pools/a",
            Some(pool(0, "198.51.100.1", "198.51.100.2")),
        )
        .await,
        409,
        "conflict",
        "snat of vrf 5",
    );
    refused(
        call(&s, Method::DELETE, "/nat/pools/a", None).await,
        409,
        "in-use",
        "snat of vrf 5",
    );
    refused(
        call(&s, Method::DELETE, "/vrfs/5", None).await,
        409,
        "in-use",
        "snat attachment to nat pool a",
    );
    refused(
        call(&s, Method::DELETE, "/vrfs/5/snat/x", None).await,
        404,
        "unknown-path",
        "",
    );
    assert_eq!(call(&s, Method::DELETE, "/vrfs/5/snat", None).await.0, 204);
    refused(
        call(&s, Method::DELETE, "/vrfs/5/snat", None).await,
        404,
        "not-found",
        "snat",
    );
    assert_eq!(call(&s, Method::DELETE, "/nat/pools/a", None).await.0, 204);
    assert_eq!(call(&s, Method::DELETE, "/nat/pools/b", None).await.0, 204);
    assert_eq!(call(&s, Method::DELETE, "/vrfs/5", None).await.0, 204);
}

#[tokio::test]
async fn floating_ips_round_trip_and_refuse_what_would_clash() {
    let s = TestServer::start();
    assert_eq!(call(&s, Method::PUT, "/vrfs/5", None).await.0, 201);
    let fip = |vrf: u32, ip: &str| Some(json!({"vrf": vrf, "ip": ip}));
    let (st, v) = call(
        &s,
        Method::PUT,
        "/nat/floating-ips/198.51.100.200",
        fip(5, "198.18.1.11"),
    )
    .await;
    assert_eq!(st, 201, "{v}");
    assert_eq!(
        v,
        json!({"address": "198.51.100.200", "vrf": 5, "ip": "198.18.1.11"})
    );
    let again = call(
        &s,
        Method::PUT,
        "/nat/floating-ips/198.51.100.200",
        fip(5, "198.18.1.11"),
    )
    .await;
    assert_eq!(again.0, 200);
    let (_, list) = call(&s, Method::GET, "/nat/floating-ips", None).await;
    assert_eq!(list.as_array().unwrap().len(), 1);

    refused(
        call(
            &s,
            Method::PUT,
            "/nat/floating-ips/224.0.0.1",
            fip(5, "198.18.1.12"),
        )
        .await,
        400,
        "invalid-path-param",
        "unicast",
    );
    refused(
        call(
            &s,
            Method::PUT,
            "/nat/floating-ips/nope",
            fip(5, "198.18.1.12"),
        )
        .await,
        400,
        "invalid-path-param",
        "not an IPv4 or IPv6 address",
    );
    refused(
        call(
            &s,
            Method::PUT,
            "/nat/floating-ips/198.51.100.201",
            fip(0, "198.18.1.12"),
        )
        .await,
        400,
        "invalid-field",
        "fabric",
    );
    refused(
        call(
            &s,
            Method::PUT,
            "/nat/floating-ips/198.51.100.201",
            fip(9, "198.18.1.12"),
        )
        .await,
        409,
        "unknown-reference",
        "vrf 9",
    );
    refused(
        call(
            &s,
            Method::PUT,
            "/nat/floating-ips/198.51.100.201",
            fip(5, "198.18.1.11"),
        )
        .await,
        409,
        "conflict",
        "has floating IP 198.51.100.200 already",
    );
    // Pools and floating IPs never share an address.
    refused(
        call(
            &s,
            Method::PUT,
            "/nat/pools/p",
            Some(pool(0, "198.51.100.192", "198.51.100.223")),
        )
        .await,
        409,
        "conflict",
        "holds floating IP 198.51.100.200",
    );
    assert_eq!(
        call(
            &s,
            Method::PUT,
            "/nat/pools/p",
            Some(pool(0, "198.51.100.64", "198.51.100.65"))
        )
        .await
        .0,
        201
    );
    refused(
        call(
            &s,
            Method::PUT,
            "/nat/floating-ips/198.51.100.64",
            fip(5, "198.18.1.12"),
        )
        .await,
        409,
        "conflict",
        "nat pool p",
    );
    // The pod's VRF cannot go while a floating IP maps into it.
    refused(
        call(&s, Method::DELETE, "/vrfs/5", None).await,
        409,
        "in-use",
        "floating IP 198.51.100.200",
    );

    assert_eq!(
        call(&s, Method::DELETE, "/nat/floating-ips/198.51.100.200", None)
            .await
            .0,
        204
    );
    refused(
        call(&s, Method::GET, "/nat/floating-ips/198.51.100.200", None).await,
        404,
        "not-found",
        "floating IP 198.51.100.200",
    );
    let log = s.dp.with(|st| st.log.clone());
    let fips: Vec<&str> = log
        .iter()
        .map(String::as_str)
        .filter(|o| o.contains("floating"))
        .collect();
    assert_eq!(fips, ["floating_ip_set", "floating_ip_del"]);
    assert_eq!(call(&s, Method::DELETE, "/vrfs/5", None).await.0, 204);
}

#[tokio::test]
async fn ipv6_services_round_trip_and_refuse_mixed_families() {
    let s = TestServer::start();
    assert_eq!(call(&s, Method::PUT, "/vrfs/5", None).await.0, 201);
    let svc = |address: &str, backends: Value| {
        Some(
            json!({"vrf": 5, "address": address, "port": 80, "proto": "tcp", "backends": backends}),
        )
    };
    let v6 = json!([{"address": "2001:db8:1::b", "port": 8080}, {"address": "2001:db8:1::c", "port": 8080}]);
    let (st, v) = call(
        &s,
        Method::PUT,
        "/nat/services/web6",
        svc("2001:db8:1::100", v6),
    )
    .await;
    assert_eq!(st, 201, "{v}");
    assert_eq!(v["address"], "2001:db8:1::100");
    assert_eq!(
        v["backends"][1],
        json!({"address": "2001:db8:1::c", "port": 8080, "flows": 0})
    );
    // A backend of the other family: 400 naming it, for either family of VIP.
    let mixed = json!([{"address": "2001:db8:1::b", "port": 8080}, {"address": "198.18.1.11", "port": 8080}]);
    refused(
        call(
            &s,
            Method::PUT,
            "/nat/services/x",
            svc("2001:db8:1::101", mixed.clone()),
        )
        .await,
        400,
        "invalid-field",
        "198.18.1.11 is not of the address family of the VIP 2001:db8:1::101",
    );
    refused(
        call(
            &s,
            Method::PUT,
            "/nat/services/x",
            svc("198.18.1.101", mixed),
        )
        .await,
        400,
        "invalid-field",
        "2001:db8:1::b is not of the address family",
    );
    refused(
        call(
            &s,
            Method::PUT,
            "/nat/services/x",
            svc("ff02::1", json!([{"address": "2001:db8:1::b", "port": 1}])),
        )
        .await,
        400,
        "invalid-field",
        "not a unicast address",
    );
    // A /128 host route of the VRF is not a VIP.
    assert_eq!(
        call(
            &s,
            Method::PUT,
            "/nexthops/1",
            Some(json!({"type": "discard"}))
        )
        .await
        .0,
        201
    );
    let (st, v) = call(
        &s,
        Method::PUT,
        "/vrfs/5/routes",
        Some(json!({"prefix": "2001:db8:1::102/128", "nexthop": 1})),
    )
    .await;
    assert!(st == 201 || st == 200, "{st} {v}");
    refused(
        call(
            &s,
            Method::PUT,
            "/nat/services/x",
            svc(
                "2001:db8:1::102",
                json!([{"address": "2001:db8:1::b", "port": 1}]),
            ),
        )
        .await,
        409,
        "conflict",
        "is route 2001:db8:1::102/128",
    );
    let (_, list) = call(&s, Method::GET, "/nat/services", None).await;
    assert_eq!(list.as_array().unwrap().len(), 1, "{list}");
}

#[tokio::test]
async fn services_round_trip_and_refuse_bad_backends_and_clashes() {
    let s = TestServer::start();
    assert_eq!(call(&s, Method::PUT, "/vrfs/5", None).await.0, 201);
    let svc = |vrf: u32, address: &str, backends: Value| {
        Some(
            json!({"vrf": vrf, "address": address, "port": 80, "proto": "tcp", "backends": backends}),
        )
    };
    let two =
        json!([{"address": "198.18.1.11", "port": 8080}, {"address": "198.18.1.12", "port": 8080}]);
    let (st, v) = call(
        &s,
        Method::PUT,
        "/nat/services/web",
        svc(5, "198.18.1.100", two.clone()),
    )
    .await;
    assert_eq!(st, 201, "{v}");
    assert_eq!(
        v["backends"][1],
        json!({"address": "198.18.1.12", "port": 8080, "flows": 0})
    );
    let again = call(
        &s,
        Method::PUT,
        "/nat/services/web",
        svc(5, "198.18.1.100", two.clone()),
    )
    .await;
    assert_eq!(again.0, 200);
    let one = json!([{"address": "198.18.1.11", "port": 8080}]);
    assert_eq!(
        call(
            &s,
            Method::PUT,
            "/nat/services/web",
            svc(5, "198.18.1.100", one)
        )
        .await
        .0,
        200
    );
    let (_, list) = call(&s, Method::GET, "/nat/services", None).await;
    assert_eq!(list.as_array().unwrap().len(), 1);
    assert_eq!(list[0]["backends"].as_array().unwrap().len(), 1);
    assert_eq!(list[0]["balance"], "hash", "the default");

    // Balanced by least flows, or refused for a balance that does not exist.
    let with_balance = |balance: &str| {
        let mut v = svc(5, "198.18.1.100", two.clone()).unwrap();
        v["balance"] = json!(balance);
        Some(v)
    };
    let (st, v) = call(
        &s,
        Method::PUT,
        "/nat/services/web",
        with_balance("least-flows"),
    )
    .await;
    assert_eq!((st, &v["balance"]), (200, &json!("least-flows")), "{v}");
    let (st, v) = call(
        &s,
        Method::PUT,
        "/nat/services/web",
        with_balance("round-robin"),
    )
    .await;
    assert_eq!(st, 400, "{v}");
    assert!(v.to_string().contains("least-flows"), "{v}");
    let (_, list) = call(&s, Method::GET, "/nat/services", None).await;
    assert_eq!(
        list[0]["balance"], "least-flows",
        "unchanged by the refusal"
    );

    refused(
        call(
            &s,
            Method::PUT,
            "/nat/services/x",
            svc(5, "198.18.1.101", json!([])),
        )
        .await,
        400,
        "invalid-field",
        "at least one backend",
    );
    let dup = json!([{"address": "198.18.1.11", "port": 1}, {"address": "198.18.1.11", "port": 1}]);
    refused(
        call(
            &s,
            Method::PUT,
            "/nat/services/x",
            svc(5, "198.18.1.101", dup),
        )
        .await,
        400,
        "invalid-field",
        "listed twice",
    );
    refused(
        call(
            &s,
            Method::PUT,
            "/nat/services/x",
            svc(9, "198.18.1.101", two.clone()),
        )
        .await,
        409,
        "unknown-reference",
        "vrf 9",
    );
    refused(
        call(
            &s,
            Method::PUT,
            "/nat/services/x",
            svc(5, "198.18.1.100", two.clone()),
        )
        .await,
        409,
        "conflict",
        "service web",
    );
    refused(
        call(
            &s,
            Method::PUT,
            "/nat/services/web",
            svc(5, "198.18.1.101", two.clone()),
        )
        .await,
        409,
        "conflict",
        "remove it to move it",
    );
    // A host route of the VRF, or a pool address, is not a VIP.
    assert_eq!(
        call(
            &s,
            Method::PUT,
            "/nexthops/1",
            Some(json!({"type": "discard"}))
        )
        .await
        .0,
        201
    );
    let (st, v) = call(
        &s,
        Method::PUT,
        "/vrfs/5/routes",
        Some(json!({"prefix": "198.18.1.102/32", "nexthop": 1})),
    )
    .await;
    assert!(st == 201 || st == 200, "{st} {v}");
    refused(
        call(
            &s,
            Method::PUT,
            "/nat/services/x",
            svc(5, "198.18.1.102", two.clone()),
        )
        .await,
        409,
        "conflict",
        "is route 198.18.1.102/32",
    );
    assert_eq!(
        call(
            &s,
            Method::PUT,
            "/nat/pools/p",
            Some(pool(0, "198.51.100.64", "198.51.100.65"))
        )
        .await
        .0,
        201
    );
    refused(
        call(
            &s,
            Method::PUT,
            "/nat/services/x",
            svc(0, "198.51.100.64", two),
        )
        .await,
        409,
        "conflict",
        "nat pool p",
    );
    // Nor does a VIP become a host route.
    refused(
        call(
            &s,
            Method::PUT,
            "/vrfs/5/routes",
            Some(json!({"prefix": "198.18.1.100/32", "nexthop": 1})),
        )
        .await,
        409,
        "conflict",
        "VIP of service web",
    );
    // The VRF cannot go while a service lives in it.
    refused(
        call(&s, Method::DELETE, "/vrfs/5", None).await,
        409,
        "in-use",
        "service web",
    );
    assert_eq!(
        call(&s, Method::DELETE, "/nat/services/web", None).await.0,
        204
    );
    refused(
        call(&s, Method::GET, "/nat/services/web", None).await,
        404,
        "not-found",
        "service web",
    );
    let log = s.dp.with(|st| st.log.clone());
    let ops: Vec<&str> = log
        .iter()
        .map(String::as_str)
        .filter(|o| o.starts_with("service"))
        .collect();
    // Created, one backend less, least flows, deleted.
    assert_eq!(
        ops,
        ["service_set", "service_set", "service_set", "service_del"]
    );
}

/// IPv6 floating IPs and NAT66 pools: accepted and listed as IPv6; a floating IP or a pool of
/// mixed families gets a 400 naming the families; overlaps and clashes are checked within a
/// family only (an IPv4 pool and an IPv6 pool of the same low bits coexist).
#[tokio::test]
async fn ipv6_floating_ips_and_pools_round_trip_and_refuse_mixed_families() {
    let s = TestServer::start();
    assert_eq!(call(&s, Method::PUT, "/vrfs/5", None).await.0, 201);
    let fip = |ip: &str| Some(json!({"vrf": 5, "ip": ip}));
    let (st, v) = call(
        &s,
        Method::PUT,
        "/nat/floating-ips/2001:db8:64::c8",
        fip("2001:db8:18:1::2"),
    )
    .await;
    assert_eq!(st, 201, "{v}");
    assert_eq!(
        v,
        json!({"address": "2001:db8:64::c8", "vrf": 5, "ip": "2001:db8:18:1::2"})
    );
    refused(
        call(
            &s,
            Method::PUT,
            "/nat/floating-ips/2001:db8:64::c9",
            fip("198.18.1.2"),
        )
        .await,
        400,
        "invalid-field",
        "different address families",
    );
    refused(
        call(
            &s,
            Method::PUT,
            "/nat/floating-ips/198.51.100.9",
            fip("2001:db8:18:1::3"),
        )
        .await,
        400,
        "invalid-field",
        "different address families",
    );
    refused(
        call(
            &s,
            Method::PUT,
            "/nat/floating-ips/ff02::1",
            fip("2001:db8:18:1::3"),
        )
        .await,
        400,
        "invalid-path-param",
        "unicast",
    );
    // A pod address has one floating IP.
    refused(
        call(
            &s,
            Method::PUT,
            "/nat/floating-ips/2001:db8:64::c9",
            fip("2001:db8:18:1::2"),
        )
        .await,
        409,
        "conflict",
        "has floating IP 2001:db8:64::c8 already",
    );

    let put = |name: &str, body: Value| {
        let path = format!("/nat/pools/{name}");
        let s = &s;
        async move { call(s, Method::PUT, &path, Some(body)).await }
    };
    refused(
        put("m", pool(0, "198.51.100.64", "2001:db8:64::41")).await,
        400,
        "invalid-field",
        "different address families",
    );
    refused(
        put("w", pool(0, "2001:db8:64::", "2001:db8:64::1:0")).await,
        400,
        "invalid-field",
        "at most 256",
    );
    refused(
        put("u", pool(0, "::", "::1")).await,
        400,
        "invalid-field",
        "unicast",
    );
    let (st, v) = put("egress6", pool(0, "2001:db8:64::40", "2001:db8:64::41")).await;
    assert_eq!(st, 201, "{v}");
    let (_, v) = call(&s, Method::GET, "/nat/pools/egress6", None).await;
    assert_eq!(
        (&v["first"], &v["last"], &v["capacity"]),
        (
            &json!("2001:db8:64::40"),
            &json!("2001:db8:64::41"),
            &json!(2048)
        ),
        "{v}"
    );
    refused(
        put("other6", pool(0, "2001:db8:64::41", "2001:db8:64::50")).await,
        409,
        "conflict",
        "overlaps nat pool egress6",
    );
    refused(
        put("fip6", pool(0, "2001:db8:64::c0", "2001:db8:64::cf")).await,
        409,
        "conflict",
        "holds floating IP 2001:db8:64::c8",
    );
    // An IPv4 pool whose bits an IPv6 one shares: no overlap across families.
    assert_eq!(
        put("v4", pool(0, "198.51.100.64", "198.51.100.65")).await.0,
        201
    );
    assert_eq!(
        put("twin6", pool(0, "::c633:6440", "::c633:6441")).await.0,
        201
    );
    assert_eq!(
        call(
            &s,
            Method::PUT,
            "/vrfs/5/snat",
            Some(json!({"pool": "egress6"}))
        )
        .await
        .0,
        201
    );
    assert_eq!(
        call(
            &s,
            Method::DELETE,
            "/nat/floating-ips/2001:db8:64::c8",
            None
        )
        .await
        .0,
        204
    );
}
