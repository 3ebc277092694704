//! `PATCH /vrfs/{vrf}/routes` through the real server: many routes set and removed as one
//! change, counted in the answer, each on the change stream; a bad item (by its place), a
//! repeated prefix, too many items or too large a body refuses the whole batch and changes
//! nothing, and a dataplane refusal halfway undoes what the dataplane took.

mod common;

use common::{refused_naming, TestServer};
use control_api::api::{IpPrefix, Route, RouteBatch, ROUTE_BATCH_MAX};
use control_api::{DataplaneError, DataplaneErrorKind};
use hyper::Method;
use serde_json::{json, Value};

async fn patch(s: &TestServer, vrf: u32, body: Value) -> (u16, Value) {
    let body = serde_json::to_vec(&body).unwrap();
    let r = s
        .client()
        .raw(Method::PATCH, &format!("/vrfs/{vrf}/routes"), Some(body))
        .await
        .unwrap();
    (
        r.status,
        serde_json::from_slice(&r.body).unwrap_or(Value::Null),
    )
}

fn route(p: &str, nexthop: u32) -> Route {
    Route {
        prefix: p.parse().unwrap(),
        nexthop,
        label: None,
    }
}

/// The routes of VRF 1 in the model, and in the dataplane, as sorted prefix/nexthop pairs.
async fn both(s: &TestServer) -> (Vec<(String, u32)>, Vec<(String, u32)>) {
    let mut model: Vec<(String, u32)> = s
        .client()
        .routes(1)
        .await
        .unwrap()
        .into_iter()
        .map(|r| (r.prefix.to_string(), r.nexthop))
        .collect();
    model.sort();
    let dp = s.dp.with(|st| {
        st.routes
            .values()
            .map(|r| (r.prefix.to_string(), r.nexthop))
            .collect::<Vec<_>>()
    });
    (model, dp)
}

#[tokio::test]
async fn a_batch_sets_and_removes_routes_as_one_change() {
    let s = TestServer::start();
    let c = s.client();
    c.vrf_add(1).await.unwrap();
    for id in [3, 4] {
        c.nexthop_set(
            id,
            &serde_json::from_value(json!({"type": "discard"})).unwrap(),
        )
        .await
        .unwrap();
    }
    c.route_set(1, &route("198.18.9.0/24", 3)).await.unwrap();
    let rev = c.events(0, None, 0).await.unwrap().revision;

    let b = RouteBatch {
        set: vec![
            route("198.18.1.0/24", 3),
            route("2001:db8:1::/64", 4),
            route("198.18.9.0/24", 4),
        ],
        delete: Vec::new(),
    };
    let got = c.routes_batch(1, &b).await.unwrap();
    assert_eq!((got.created, got.replaced, got.deleted), (2, 1, 0));
    let want = vec![
        ("198.18.1.0/24".to_string(), 3),
        ("198.18.9.0/24".to_string(), 4),
        ("2001:db8:1::/64".to_string(), 4),
    ];
    assert_eq!(both(&s).await, (want.clone(), want));
    // The nexthop's users follow: 3 lost 198.18.9.0/24 to 4.
    assert_eq!(c.nexthop(3).await.unwrap().use_count, 1);
    assert_eq!(c.nexthop(4).await.unwrap().use_count, 2);

    let b = RouteBatch {
        set: vec![route("198.18.2.0/24", 3)],
        delete: vec![
            "198.18.1.0/24".parse().unwrap(),
            "2001:db8:1::/64".parse().unwrap(),
        ],
    };
    let got = c.routes_batch(1, &b).await.unwrap();
    assert_eq!((got.created, got.replaced, got.deleted), (1, 0, 2));
    let want = vec![
        ("198.18.2.0/24".to_string(), 3),
        ("198.18.9.0/24".to_string(), 4),
    ];
    assert_eq!(both(&s).await, (want.clone(), want));

    // On the change stream: each item, in order.
    let page = c.events(rev, None, 0).await.unwrap();
    let ops: Vec<String> = page
        .events
        .iter()
        .map(|e| format!("{} {}", e.change["op"], e.change["route"]["prefix"]))
        .collect();
    assert_eq!(
        ops,
        [
            "\"route-set\" \"198.18.1.0/24\"",
            "\"route-set\" \"2001:db8:1::/64\"",
            "\"route-set\" \"198.18.9.0/24\"",
            "\"route-set\" \"198.18.2.0/24\"",
            "\"route-del\" null",
            "\"route-del\" null",
        ]
    );
    // An empty batch changes nothing.
    let (st, v) = patch(&s, 1, json!({})).await;
    assert_eq!(
        (st, v),
        (200, json!({"created": 0, "replaced": 0, "deleted": 0}))
    );
}

#[tokio::test]
async fn a_bad_item_refuses_the_whole_batch_naming_it() {
    let s = TestServer::start();
    let c = s.client();
    c.vrf_add(1).await.unwrap();
    c.nexthop_set(
        3,
        &serde_json::from_value(json!({"type": "discard"})).unwrap(),
    )
    .await
    .unwrap();
    c.route_set(1, &route("198.18.9.0/24", 3)).await.unwrap();
    let before = both(&s).await;
    let rev = c.events(0, None, 0).await.unwrap().revision;

    // A nexthop that does not exist, second of the sets: 409, by its place and prefix.
    refused_naming(
        patch(
            &s,
            1,
            json!({"set": [{"prefix": "198.18.1.0/24", "nexthop": 3},
                           {"prefix": "198.18.2.0/24", "nexthop": 77}],
                   "delete": ["198.18.9.0/24"]}),
        )
        .await,
        409,
        "unknown-reference",
        &["set[1] (198.18.2.0/24)", "77"],
    );
    // A route to delete that does not exist: 404.
    refused_naming(
        patch(
            &s,
            1,
            json!({"set": [{"prefix": "198.18.1.0/24", "nexthop": 3}],
                   "delete": ["198.18.9.0/24", "198.18.5.0/24"]}),
        )
        .await,
        404,
        "not-found",
        &["delete[1]", "198.18.5.0/24"],
    );
    // A prefix named twice: 409, naming both places.
    refused_naming(
        patch(
            &s,
            1,
            json!({"set": [{"prefix": "198.18.1.0/24", "nexthop": 3}],
                   "delete": ["198.18.1.0/24"]}),
        )
        .await,
        409,
        "conflict",
        &["delete[0]", "set[0]"],
    );
    // Malformed items and unknown fields: 400.
    refused_naming(
        patch(
            &s,
            1,
            json!({"set": [{"prefix": "198.18.1.0/33", "nexthop": 3}]}),
        )
        .await,
        400,
        "invalid-field",
        &["set[0].prefix", "198.18.1.0"],
    );
    refused_naming(
        patch(&s, 1, json!({"sets": []})).await,
        400,
        "invalid-field",
        &["sets"],
    );
    // A VRF that does not exist.
    refused_naming(
        patch(&s, 2, json!({"delete": ["198.18.9.0/24"]})).await,
        404,
        "not-found",
        &["delete[0]", "vrf 2"],
    );
    // Too many items: 400 naming the limit.
    let many: Vec<Value> = (0..=ROUTE_BATCH_MAX)
        .map(|i| json!({"prefix": format!("198.18.{}.{}/32", i / 256, i % 256), "nexthop": 3}))
        .collect();
    refused_naming(
        patch(&s, 1, json!({ "set": many })).await,
        400,
        "invalid-field",
        &["`set`: 4097 items", "at most 4096"],
    );
    assert_eq!(both(&s).await, before, "a refused batch changed something");
    assert!(
        c.events(rev, None, 0).await.unwrap().events.is_empty(),
        "a refused batch was published"
    );
    // A body beyond the server's limit: 413 naming it.
    let small = TestServer::start_with(control_api::ServeOptions {
        body_limit: 4096,
        ..control_api::ServeOptions::default()
    });
    small.client().vrf_add(1).await.unwrap();
    let huge: Vec<Value> = (0..200)
        .map(|i| json!({"prefix": format!("198.18.0.{i}/32"), "nexthop": 3}))
        .collect();
    refused_naming(
        patch(&small, 1, json!({ "set": huge })).await,
        413,
        "payload-too-large",
        &["4096-byte"],
    );
}

#[tokio::test]
async fn a_dataplane_refusal_halfway_undoes_the_items_it_took() {
    let s = TestServer::start();
    let c = s.client();
    c.vrf_add(1).await.unwrap();
    for id in [3, 4] {
        c.nexthop_set(
            id,
            &serde_json::from_value(json!({"type": "discard"})).unwrap(),
        )
        .await
        .unwrap();
    }
    c.route_set(1, &route("198.18.9.0/24", 3)).await.unwrap();
    c.route_set(1, &route("198.18.8.0/24", 3)).await.unwrap();
    let before = both(&s).await;
    // The dataplane takes a replacement and a new route, then refuses the third item.
    let full = "IPv4 route table of VRF 1 is full (limit 8 trie groups); remove routes";
    *s.dp.fail_after.lock().unwrap() =
        Some((2, DataplaneError::new(DataplaneErrorKind::TableFull, full)));
    let b = RouteBatch {
        set: vec![
            route("198.18.9.0/24", 4),
            route("198.18.1.0/24", 4),
            route("198.18.2.0/24", 4),
        ],
        delete: vec!["198.18.8.0/24".parse::<IpPrefix>().unwrap()],
    };
    match c.routes_batch(1, &b).await {
        Err(control_api::Error::Api {
            status: 507,
            code,
            message,
        }) => {
            assert_eq!(code, "table-full");
            assert!(message.contains("set[2] (198.18.2.0/24)"), "{message}");
            assert!(message.contains(full), "{message}");
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(both(&s).await, before, "the refused batch was not undone");
    assert_eq!(c.nexthop(4).await.unwrap().use_count, 0);
    // The same batch goes through once the dataplane takes it.
    let got = c.routes_batch(1, &b).await.unwrap();
    assert_eq!((got.created, got.replaced, got.deleted), (2, 1, 1));
}
