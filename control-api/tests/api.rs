//! Request → response through the real HTTP server on a real unix socket.

mod common;

use std::os::unix::fs::symlink;
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};

use common::{call, raw, refused, TestServer};
use control_api::api::{FlowAction, FlowEntry, FlowQuery, MplsTarget, VifCounters};
use control_api::server::ROUTES;
use control_api::{DataplaneErrorKind, ServeOptions};
use hyper::Method;
use serde_json::{json, Value};

fn vhost(name: &str, dir: &std::path::Path, file: &str, mode: &str) -> Value {
    json!({"name": name, "type": "vhost-user", "vrf": 1, "mac": "02:00:00:00:01:01",
           "vhostsocket-dir": dir, "vhostsocket-filename": file, "vhostuser-mode": mode})
}

#[tokio::test]
async fn control_socket_is_private_replaces_stale_and_is_removed_on_shutdown() {
    let mut s = TestServer::start();
    let meta = std::fs::symlink_metadata(&s.socket).unwrap();
    assert!(meta.file_type().is_socket());
    assert_eq!(meta.permissions().mode() & 0o777, 0o600);
    // A live socket cannot be taken over by a second server.
    assert!(control_api::ControlSocket::bind(&s.socket).is_err());
    let (st, _) = call(&s, Method::GET, "/health", None).await;
    assert_eq!(st, 200);
    s.stop().unwrap();
    assert!(!s.socket.exists(), "socket must be removed on shutdown");

    // A stale socket (nobody listening) is replaced.
    let stale = s.tmp.path().join("stale.sock");
    drop(std::os::unix::net::UnixListener::bind(&stale).unwrap());
    let sock = control_api::ControlSocket::bind(&stale).unwrap();
    assert_eq!(
        std::fs::metadata(&stale).unwrap().permissions().mode() & 0o777,
        0o600
    );
    drop(sock);
    // A regular file is never replaced.
    let file = s.tmp.path().join("file");
    std::fs::write(&file, b"x").unwrap();
    assert!(control_api::ControlSocket::bind(&file).is_err());
    assert_eq!(std::fs::read(&file).unwrap(), b"x");
}

#[tokio::test]
async fn vhost_user_vif_lifecycle_creates_and_removes_its_socket_and_dirs() {
    let s = TestServer::start();
    assert_eq!(call(&s, Method::PUT, "/vrfs/1", None).await.0, 201);
    assert_eq!(
        call(&s, Method::PUT, "/vrfs/1", Some(json!({}))).await.0,
        200
    );
    let dir = s.base.join("pod-1234/net");
    let (st, v) = call(
        &s,
        Method::POST,
        "/vifs",
        Some(vhost("pod1", &dir, "abc-net1", "server")),
    )
    .await;
    assert_eq!(st, 201, "{v}");
    assert_eq!(v["index"], 0);
    assert_eq!(v["socket"], dir.join("abc-net1").to_str().unwrap());
    assert_eq!(v["state"], "listening");
    assert_eq!(v["vrouter_mac"], "00:00:5e:00:01:00");
    assert_eq!(v["mtu"], 1500);
    assert_eq!(v["queues"], 1);
    for d in [s.base.join("pod-1234"), dir.clone()] {
        assert_eq!(
            std::fs::metadata(&d).unwrap().permissions().mode() & 0o777,
            0o700,
            "{}",
            d.display()
        );
    }
    assert!(std::fs::symlink_metadata(dir.join("abc-net1"))
        .unwrap()
        .file_type()
        .is_socket());

    s.dp.with(|st| {
        st.counters.insert(
            "pod1".into(),
            VifCounters {
                rx_packets: 7,
                rx_bytes: 700,
                tx_packets: 5,
                tx_bytes: 500,
                drops: 1,
            },
        )
    });
    let (st, v) = call(&s, Method::GET, "/vifs/pod1", None).await;
    assert_eq!(st, 200);
    assert_eq!(v["counters"]["rx_packets"], 7);
    assert_eq!(v["lcore"], 1);
    let health = s.client().health().await.unwrap();
    assert_eq!(health.vifs.len(), 1);
    assert_eq!(
        (health.vifs[0].name.as_str(), health.vifs[0].state),
        ("pod1", control_api::api::VifState::Listening)
    );
    let vifs = s.client().vifs().await.unwrap();
    assert_eq!(vifs.len(), 1);
    assert_eq!(vifs[0].config.name, "pod1");

    assert_eq!(call(&s, Method::DELETE, "/vifs/pod1", None).await.0, 204);
    assert!(!dir.join("abc-net1").exists(), "socket removed");
    assert!(!s.base.join("pod-1234").exists(), "created dirs removed");
    assert!(s.base.exists(), "the base stays");
    refused(
        call(&s, Method::GET, "/vifs/pod1", None).await,
        404,
        "not-found",
        "pod1",
    );
    assert_eq!(s.dp.with(|st| st.vifs.len()), 0);
}

#[tokio::test]
async fn a_group_makes_created_dirs_group_owned_and_group_writable_for_client_mode() {
    let s = TestServer::start();
    call(&s, Method::PUT, "/vrfs/1", None).await;
    let dir = s.base.join("pod-g");
    let mut body = vhost("g", &dir, "s", "client");
    body["vhostsocket-group"] = json!("daemon");
    let (st, v) = call(&s, Method::POST, "/vifs", Some(body)).await;
    assert_eq!(st, 201, "{v}");
    assert_eq!(v["state"], "connecting");
    let meta = std::fs::metadata(&dir).unwrap();
    // Client mode: the pod (in the group) creates its socket here.
    assert_eq!(meta.permissions().mode() & 0o777, 0o770);
    assert_eq!(
        meta.gid(),
        nix::unistd::Group::from_name("daemon")
            .unwrap()
            .unwrap()
            .gid
            .as_raw()
    );
    // Client mode: the pod's socket is not ours; the (empty) dir we created goes on delete.
    assert_eq!(call(&s, Method::DELETE, "/vifs/g", None).await.0, 204);
    assert!(!dir.exists());
}

#[tokio::test]
async fn isolation_attempts_are_refused_and_change_nothing_on_disk() {
    let s = TestServer::start();
    call(&s, Method::PUT, "/vrfs/1", None).await;
    let outside = s.tmp.path().join("outside");
    std::fs::create_dir(&outside).unwrap();
    symlink(&outside, s.base.join("evil")).unwrap();
    let ok_dir = s.base.join("pod-ok");
    assert_eq!(
        call(
            &s,
            Method::POST,
            "/vifs",
            Some(vhost("ok", &ok_dir, "s", "server"))
        )
        .await
        .0,
        201
    );

    let long = "f".repeat(120);
    let cases: Vec<(Value, u16, &str, &str)> = vec![
        (
            vhost("a", &s.base.join("../outside"), "s", "server"),
            400,
            "socket-outside-base",
            "not below the socket base",
        ),
        (
            vhost("a", &s.base.join("new/../../outside/x"), "s", "server"),
            400,
            "socket-outside-base",
            "outside",
        ),
        (
            vhost("a", &s.base.join("evil"), "s", "server"),
            400,
            "socket-outside-base",
            "evil",
        ),
        (
            vhost("a", &s.base.join("evil/deeper"), "s", "server"),
            400,
            "socket-outside-base",
            "deeper",
        ),
        (
            vhost("a", &s.base, "s", "server"),
            400,
            "socket-outside-base",
            "not below",
        ),
        (
            vhost("a", &s.base.join("p"), "../s", "server"),
            400,
            "socket-filename-invalid",
            "single path component",
        ),
        (
            vhost("a", &s.base.join("p"), "..", "server"),
            400,
            "socket-filename-invalid",
            "single path component",
        ),
        (
            vhost("a", &s.base.join("p"), "", "server"),
            400,
            "socket-filename-invalid",
            "empty",
        ),
        (
            vhost("a", &s.base.join("p"), &long, "server"),
            400,
            "socket-path-too-long",
            "at most 107",
        ),
        (
            vhost("a", std::path::Path::new("relative/p"), "s", "server"),
            400,
            "socket-dir-invalid",
            "absolute",
        ),
        (
            vhost("a", &ok_dir, "s", "client"),
            409,
            "socket-path-in-use",
            "vif ok",
        ),
        // `..` after a symlink climbs from the symlink's target, as the kernel does.
        (
            vhost("a", &s.base.join("evil/../pod-ok"), "s", "server"),
            400,
            "socket-outside-base",
            "not below",
        ),
        (
            vhost("a", &s.base.join("new/../pod-ok"), "s", "server"),
            409,
            "socket-path-in-use",
            "vif ok",
        ),
    ];
    for (body, status, code, needle) in cases {
        let before = s.snapshot();
        refused(
            call(&s, Method::POST, "/vifs", Some(body.clone())).await,
            status,
            code,
            needle,
        );
        assert_eq!(before, s.snapshot(), "refused {body} changed the disk");
    }
    assert!(
        std::fs::read_dir(&outside).unwrap().next().is_none(),
        "nothing created outside"
    );
    assert_eq!(s.client().vifs().await.unwrap().len(), 1);
}

#[tokio::test]
async fn bad_requests_get_4xx_naming_what_was_wrong() {
    let s = TestServer::start_with(ServeOptions {
        body_limit: 4096,
        ..ServeOptions::default()
    });
    let d = s.base.join("p");
    refused(
        raw(&s, Method::POST, "/vifs", Some(b"{\"name\":".to_vec())).await,
        400,
        "invalid-json",
        "not valid JSON",
    );
    refused(
        raw(&s, Method::POST, "/vifs", Some(b"".to_vec())).await,
        400,
        "invalid-json",
        "empty",
    );
    // Form-labelled JSON (what `curl -d` sends) is parsed as JSON rather than refused.
    {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut c = tokio::net::UnixStream::connect(&s.socket).await.unwrap();
        c.write_all(b"PUT /vrfs/3 HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: 2\r\n\r\n{}")
            .await
            .unwrap();
        let mut answer = String::new();
        c.read_to_string(&mut answer).await.unwrap();
        assert!(answer.starts_with("HTTP/1.1 201"), "{answer}");
    }
    assert_eq!(call(&s, Method::DELETE, "/vrfs/3", None).await.0, 204);
    let mut b = vhost("a", &d, "s", "server");
    b["vrf"] = json!("one");
    refused(
        call(&s, Method::POST, "/vifs", Some(b)).await,
        400,
        "invalid-field",
        "vrf",
    );
    let mut b = vhost("a", &d, "s", "server");
    b["mac"] = json!("02:00:00:00:01");
    refused(
        call(&s, Method::POST, "/vifs", Some(b)).await,
        400,
        "invalid-field",
        "mac",
    );
    let mut b = vhost("a", &d, "s", "server");
    b["colour"] = json!("blue");
    refused(
        call(&s, Method::POST, "/vifs", Some(b)).await,
        400,
        "invalid-field",
        "colour",
    );
    let mut b = vhost("a", &d, "s", "server");
    b.as_object_mut().unwrap().remove("vhostuser-mode");
    b["vrf"] = json!(0);
    refused(
        call(&s, Method::POST, "/vifs", Some(b)).await,
        400,
        "missing-field",
        "vhostuser-mode",
    );
    let b = json!({"name":"x","type":"af-packet","vrf":0,"mac":"02:00:00:00:00:01","iface":"veth0","mtu":20});
    refused(
        call(&s, Method::POST, "/vifs", Some(b)).await,
        400,
        "invalid-field",
        "mtu",
    );
    let b = json!({"name":"x","type":"warp-drive","vrf":0,"mac":"02:00:00:00:00:01"});
    refused(
        call(&s, Method::POST, "/vifs", Some(b)).await,
        400,
        "invalid-field",
        "type",
    );
    refused(
        call(&s, Method::PUT, "/vrfs/4096", None).await,
        400,
        "invalid-path-param",
        "vrf",
    );
    refused(
        call(&s, Method::PUT, "/vrfs/abc", None).await,
        400,
        "invalid-path-param",
        "vrf",
    );
    refused(
        call(&s, Method::PUT, "/mpls/15", Some(json!({"nexthop":1}))).await,
        400,
        "invalid-path-param",
        "label",
    );
    refused(
        call(&s, Method::PUT, "/mpls/1048576", Some(json!({"nexthop":1}))).await,
        400,
        "invalid-path-param",
        "label",
    );
    refused(
        call(&s, Method::PUT, "/vxlan/16777216", Some(json!({"vrf":0}))).await,
        400,
        "invalid-path-param",
        "vni",
    );
    refused(
        call(
            &s,
            Method::PUT,
            "/nexthops/0",
            Some(json!({"type":"discard"})),
        )
        .await,
        400,
        "invalid-path-param",
        "id",
    );
    refused(
        call(&s, Method::GET, "/flows?limit=lots", None).await,
        400,
        "invalid-query",
        "limit",
    );
    refused(
        call(&s, Method::GET, "/flows?limit=0", None).await,
        400,
        "invalid-query",
        "limit",
    );
    refused(
        call(&s, Method::GET, "/flows?color=red", None).await,
        400,
        "invalid-query",
        "color",
    );
    refused(
        call(&s, Method::GET, "/no/such/thing", None).await,
        404,
        "unknown-path",
        "/no/such/thing",
    );
    refused(
        call(&s, Method::PATCH, "/vifs", None).await,
        405,
        "method-not-allowed",
        "PATCH",
    );
    refused(
        call(&s, Method::DELETE, "/health", None).await,
        405,
        "method-not-allowed",
        "/health",
    );
    let big = format!("{{\"name\":\"{}\"}}", "x".repeat(5000));
    refused(
        raw(&s, Method::POST, "/vifs", Some(big.into_bytes())).await,
        413,
        "payload-too-large",
        "4096",
    );
    assert!(s.client().vifs().await.unwrap().is_empty());
    assert_eq!(
        s.dp.with(|st| st.log.clone()),
        ["vrf_add", "vrf_del"],
        "no refused request reached the dataplane"
    );
}

#[tokio::test]
async fn references_and_duplicates_are_enforced() {
    let s = TestServer::start();
    let c = s.client();
    call(&s, Method::PUT, "/vrfs/1", None).await;
    refused(
        call(
            &s,
            Method::PUT,
            "/nexthops/1",
            Some(json!({"type":"encap","vif":"pod1","dmac":"02:00:00:00:00:01"})),
        )
        .await,
        409,
        "unknown-reference",
        "vif pod1",
    );
    let b = json!({"name":"pod1","type":"af-packet","vrf":1,"mac":"02:00:00:00:00:01","iface":"veth-p1","ip":"198.18.1.2"});
    assert_eq!(
        call(&s, Method::POST, "/vifs", Some(b.clone())).await.0,
        201
    );
    refused(
        call(&s, Method::POST, "/vifs", Some(b)).await,
        409,
        "already-exists",
        "pod1",
    );
    let (st, v) = call(
        &s,
        Method::PUT,
        "/nexthops/1",
        Some(json!({"type":"encap","vif":"pod1","dmac":"02:00:00:00:00:01"})),
    )
    .await;
    assert_eq!(st, 201, "{v}");
    assert_eq!(v["type"], "encap");
    refused(
        call(
            &s,
            Method::PUT,
            "/vrfs/1/routes",
            Some(json!({"prefix":"198.18.1.2/32","nexthop":2})),
        )
        .await,
        409,
        "unknown-reference",
        "nexthop 2",
    );
    refused(
        call(
            &s,
            Method::PUT,
            "/vrfs/1/routes",
            Some(json!({"prefix":"198.18.1.2/24","nexthop":1})),
        )
        .await,
        400,
        "invalid-field",
        "198.18.1.0/24",
    );
    refused(
        call(
            &s,
            Method::PUT,
            "/vrfs/2/routes",
            Some(json!({"prefix":"198.18.1.2/32","nexthop":1})),
        )
        .await,
        404,
        "not-found",
        "vrf 2",
    );
    assert_eq!(
        call(
            &s,
            Method::PUT,
            "/vrfs/1/routes",
            Some(json!({"prefix":"198.18.1.2/32","nexthop":1}))
        )
        .await
        .0,
        201
    );
    assert_eq!(
        call(
            &s,
            Method::PUT,
            "/vrfs/1/routes",
            Some(json!({"prefix":"198.18.1.2/32","nexthop":1}))
        )
        .await
        .0,
        200
    );
    refused(
        call(&s, Method::DELETE, "/nexthops/1", None).await,
        409,
        "in-use",
        "route 198.18.1.2/32 in vrf 1",
    );
    refused(
        call(&s, Method::DELETE, "/vifs/pod1", None).await,
        409,
        "in-use",
        "nexthop 1",
    );
    refused(
        call(&s, Method::DELETE, "/vrfs/1", None).await,
        409,
        "in-use",
        "vif pod1",
    );
    refused(
        call(&s, Method::DELETE, "/vrfs/0", None).await,
        409,
        "conflict",
        "fabric",
    );
    let (st, v) = call(&s, Method::GET, "/nexthops/1", None).await;
    assert_eq!(st, 200);
    assert_eq!(v["used_by"][0], "route 198.18.1.2/32 in vrf 1");
    // Unescaped and escaped prefixes both address the route.
    refused(
        call(&s, Method::DELETE, "/vrfs/1/routes/198.18.9.0/24", None).await,
        404,
        "not-found",
        "198.18.9.0/24",
    );
    refused(
        call(&s, Method::DELETE, "/vrfs/1/routes/banana", None).await,
        400,
        "invalid-path-param",
        "prefix",
    );
    assert_eq!(
        call(&s, Method::DELETE, "/vrfs/1/routes/198.18.1.2%2F32", None)
            .await
            .0,
        204
    );
    assert!(c.routes(1).await.unwrap().is_empty());
    assert_eq!(call(&s, Method::DELETE, "/nexthops/1", None).await.0, 204);
    assert_eq!(call(&s, Method::DELETE, "/vifs/pod1", None).await.0, 204);
    assert_eq!(call(&s, Method::DELETE, "/vrfs/1", None).await.0, 204);
    assert_eq!(c.vrfs().await.unwrap().len(), 1);
}

#[tokio::test]
async fn a_dataplane_error_rolls_everything_back() {
    let s = TestServer::start();
    call(&s, Method::PUT, "/vrfs/1", None).await;
    let dir = s.base.join("pod-rb/deep");
    let before = s.snapshot();
    s.dp.fail_next(DataplaneErrorKind::Unavailable, "vhost core is restarting");
    refused(
        call(
            &s,
            Method::POST,
            "/vifs",
            Some(vhost("rb", &dir, "s", "server")),
        )
        .await,
        503,
        "dataplane-unavailable",
        "vhost core",
    );
    assert_eq!(before, s.snapshot(), "created directories removed again");
    assert!(s.client().vifs().await.unwrap().is_empty());

    s.dp.fail_next(DataplaneErrorKind::Rejected, "device does not probe");
    let b = json!({"name":"f","type":"physical","vrf":0,"mac":"02:00:00:00:00:09","device":"net_tap0,iface=vr0"});
    refused(
        call(&s, Method::POST, "/vifs", Some(b.clone())).await,
        400,
        "dataplane-rejected",
        "probe",
    );
    assert_eq!(
        call(&s, Method::POST, "/vifs", Some(b)).await.0,
        201,
        "the same request works once the dataplane does"
    );

    assert_eq!(
        call(
            &s,
            Method::PUT,
            "/nexthops/3",
            Some(json!({"type":"discard"}))
        )
        .await
        .0,
        201
    );
    s.dp.fail_next(DataplaneErrorKind::Exhausted, "route table full");
    refused(
        call(
            &s,
            Method::PUT,
            "/vrfs/1/routes",
            Some(json!({"prefix":"198.18.0.0/15","nexthop":3})),
        )
        .await,
        507,
        "dataplane-exhausted",
        "full",
    );
    assert!(s.client().routes(1).await.unwrap().is_empty());
    assert_eq!(
        s.client().nexthop(3).await.unwrap().used_by,
        Vec::<String>::new()
    );
    // A full table: 507 table-full, the dataplane's message as it is (no prefix), and the
    // client reports status, code and message.
    let full = "IPv4 route table of VRF 1 is full (limit 8 trie groups); remove routes";
    s.dp.fail_next(DataplaneErrorKind::TableFull, full);
    let (st, v) = call(
        &s,
        Method::PUT,
        "/vrfs/1/routes",
        Some(json!({"prefix":"198.18.0.0/15","nexthop":3})),
    )
    .await;
    assert_eq!(
        (st, &v),
        (507, &json!({"error":"table-full","message":full}))
    );
    assert!(s.client().routes(1).await.unwrap().is_empty());
    s.dp.fail_next(DataplaneErrorKind::TableFull, full);
    let route: control_api::api::Route =
        serde_json::from_value(json!({"prefix":"198.18.0.0/15","nexthop":3})).unwrap();
    match s.client().route_set(1, &route).await {
        Err(control_api::Error::Api {
            status: 507,
            code,
            message,
        }) => assert_eq!((code.as_str(), message.as_str()), ("table-full", full)),
        other => panic!("{other:?}"),
    }
    s.dp.fail_next(DataplaneErrorKind::Internal, "boom");
    refused(
        call(&s, Method::DELETE, "/nexthops/3", None).await,
        500,
        "dataplane-internal",
        "boom",
    );
    assert_eq!(
        s.client().nexthops().await.unwrap().len(),
        1,
        "a failed delete keeps the nexthop"
    );
}

#[tokio::test]
async fn tunnels_labels_vnis_bridge_and_ecmp_round_trip() {
    let s = TestServer::start();
    let c = s.client();
    call(&s, Method::PUT, "/vrfs/1", None).await;
    let fabric = json!({"name":"fabric0","type":"physical","vrf":0,"mac":"02:00:00:00:00:aa","device":"net_af_packet0,iface=veth0","ip":"192.0.2.1"});
    assert_eq!(call(&s, Method::POST, "/vifs", Some(fabric)).await.0, 201);
    for (id, encap) in [(10, "vxlan"), (11, "mplsoudp"), (12, "mplsogre")] {
        let nh = json!({"type":"tunnel","encap":encap,"vif":"fabric0","sip":"192.0.2.1","dip":"192.0.2.2","dmac":"02:00:00:00:00:bb"});
        assert_eq!(
            call(&s, Method::PUT, &format!("/nexthops/{id}"), Some(nh))
                .await
                .0,
            201
        );
    }
    refused(call(&s, Method::PUT, "/nexthops/13", Some(json!({"type":"tunnel","encap":"vxlan","vif":"fabric0","sip":"192.0.2.1","dip":"2001:db8::2","dmac":"02:00:00:00:00:bb"}))).await,
        400, "invalid-field", "same address family");
    // Without dmac: resolved by vrouterd, shown without one; a zero dmac is refused.
    let bare = json!({"type":"tunnel","encap":"mplsoudp","vif":"fabric0","sip":"192.0.2.1","dip":"192.0.2.3"});
    assert_eq!(
        call(&s, Method::PUT, "/nexthops/14", Some(bare.clone()))
            .await
            .0,
        201
    );
    let (status, got) = call(&s, Method::GET, "/nexthops/14", None).await;
    assert_eq!(status, 200);
    assert_eq!(got["dip"], "192.0.2.3");
    assert!(got.get("dmac").is_none(), "no dmac shown: {got}");
    let mut zero = bare;
    zero["dmac"] = json!("00:00:00:00:00:00");
    refused(
        call(&s, Method::PUT, "/nexthops/15", Some(zero)).await,
        400,
        "invalid-field",
        "dmac",
    );
    // A tunnel's own label: shown by GET, in its encapsulation's range, and it stands in for
    // the route's.
    let own = json!({"type":"tunnel","encap":"mplsogre","vif":"fabric0","sip":"192.0.2.1","dip":"192.0.2.4","label":2004});
    assert_eq!(
        call(&s, Method::PUT, "/nexthops/16", Some(own.clone()))
            .await
            .0,
        201
    );
    let (status, got) = call(&s, Method::GET, "/nexthops/16", None).await;
    assert_eq!((status, &got["label"]), (200, &json!(2004)), "{got}");
    let mut reserved = own;
    reserved["label"] = json!(3);
    refused(
        call(&s, Method::PUT, "/nexthops/17", Some(reserved)).await,
        400,
        "invalid-field",
        "mplsogre",
    );
    let unlabelled = json!({"prefix":"198.18.6.0/24","nexthop":16});
    assert_eq!(
        call(&s, Method::PUT, "/vrfs/1/routes", Some(unlabelled))
            .await
            .0,
        201
    );
    assert_eq!(
        call(&s, Method::DELETE, "/vrfs/1/routes/198.18.6.0%2F24", None)
            .await
            .0,
        204
    );
    assert_eq!(call(&s, Method::DELETE, "/nexthops/16", None).await.0, 204);
    let (status, neigh) = call(&s, Method::GET, "/neighbours", None).await;
    assert_eq!(
        (status, neigh),
        (200, json!([])),
        "the fake dataplane resolves none"
    );
    assert_eq!(call(&s, Method::DELETE, "/nexthops/14", None).await.0, 204);
    assert_eq!(
        call(
            &s,
            Method::PUT,
            "/nexthops/20",
            Some(json!({"type":"ecmp","members":[11,12]}))
        )
        .await
        .0,
        201
    );
    refused(
        call(
            &s,
            Method::PUT,
            "/nexthops/21",
            Some(json!({"type":"ecmp","members":[20]})),
        )
        .await,
        409,
        "conflict",
        "nest",
    );
    refused(
        call(
            &s,
            Method::PUT,
            "/vrfs/1/routes",
            Some(json!({"prefix":"198.18.2.0/24","nexthop":10})),
        )
        .await,
        409,
        "conflict",
        "label",
    );
    refused(
        call(
            &s,
            Method::PUT,
            "/vrfs/1/routes",
            Some(json!({"prefix":"198.18.2.0/24","nexthop":20,"label":2000000})),
        )
        .await,
        409,
        "conflict",
        "label",
    );
    assert_eq!(
        call(
            &s,
            Method::PUT,
            "/vrfs/1/routes",
            Some(json!({"prefix":"198.18.2.0/24","nexthop":10,"label":5001}))
        )
        .await
        .0,
        201
    );
    assert_eq!(
        call(
            &s,
            Method::PUT,
            "/vrfs/1/routes",
            Some(json!({"prefix":"2001:db8:1::/48","nexthop":20,"label":100}))
        )
        .await
        .0,
        201
    );
    assert_eq!(
        call(
            &s,
            Method::PUT,
            "/vrfs/1/bridge",
            Some(json!({"mac":"02:00:00:00:02:02","nexthop":10,"label":5001}))
        )
        .await
        .0,
        201
    );
    assert_eq!(
        call(&s, Method::PUT, "/mpls/100", Some(json!({"nexthop":20})))
            .await
            .0,
        201
    );
    assert_eq!(
        call(&s, Method::PUT, "/mpls/100", Some(json!({"nexthop":11})))
            .await
            .0,
        200
    );
    refused(
        call(&s, Method::PUT, "/mpls/101", Some(json!({"nexthop":99}))).await,
        409,
        "unknown-reference",
        "nexthop 99",
    );
    // A per-VRF label: the inner packet is routed in the VRF.
    assert_eq!(
        call(&s, Method::PUT, "/mpls/102", Some(json!({"vrf":1})))
            .await
            .0,
        201
    );
    refused(
        call(&s, Method::PUT, "/mpls/103", Some(json!({"vrf":7}))).await,
        409,
        "unknown-reference",
        "vrf 7",
    );
    for body in [json!({}), json!({"nexthop":11,"vrf":1})] {
        refused(
            call(&s, Method::PUT, "/mpls/103", Some(body)).await,
            400,
            "invalid-field",
            "exactly one of `nexthop`",
        );
    }
    refused(
        call(&s, Method::DELETE, "/vrfs/1", None).await,
        409,
        "in-use",
        "mpls label 102",
    );
    assert_eq!(
        call(&s, Method::PUT, "/vxlan/5001", Some(json!({"vrf":1})))
            .await
            .0,
        201
    );
    refused(
        call(&s, Method::PUT, "/vxlan/5002", Some(json!({"vrf":7}))).await,
        409,
        "unknown-reference",
        "vrf 7",
    );

    let routes = c.routes(1).await.unwrap();
    assert_eq!(routes.len(), 2);
    assert_eq!(c.bridge(1).await.unwrap()[0].label, Some(5001));
    let mpls = c.mpls().await.unwrap();
    assert_eq!(mpls[0].target(), Some(MplsTarget::Nexthop(11)));
    assert_eq!(mpls[1].target(), Some(MplsTarget::Vrf(1)));
    assert_eq!(mpls.len(), 2);
    assert_eq!(c.vxlan().await.unwrap()[0].vrf, 1);
    // The dataplane got exactly what the model holds.
    s.dp.with(|st| {
        assert_eq!(st.routes.len(), 2);
        assert_eq!(st.mpls.get(&100), Some(&MplsTarget::Nexthop(11)));
        assert_eq!(st.mpls.get(&102), Some(&MplsTarget::Vrf(1)));
        assert_eq!(st.vxlan.get(&5001), Some(&1));
        assert_eq!(st.nexthops.len(), 4);
    });
    assert_eq!(
        call(&s, Method::DELETE, "/vrfs/1/bridge/02:00:00:00:02:02", None)
            .await
            .0,
        204
    );
    assert_eq!(
        call(&s, Method::DELETE, "/vrfs/1/routes/2001:db8:1::/48", None)
            .await
            .0,
        204
    );
    assert_eq!(call(&s, Method::DELETE, "/mpls/100", None).await.0, 204);
    assert_eq!(call(&s, Method::DELETE, "/vxlan/5001", None).await.0, 204);
    refused(
        call(&s, Method::DELETE, "/vxlan/5001", None).await,
        404,
        "not-found",
        "5001",
    );
    assert_eq!(call(&s, Method::DELETE, "/nexthops/20", None).await.0, 204);
}

#[tokio::test]
async fn policy_flows_stats_health_and_metrics() {
    let s = TestServer::start();
    let c = s.client();
    let b = json!({"name":"pod1","type":"tap","vrf":0,"mac":"02:00:00:00:00:01","iface":"tap-p1"});
    assert_eq!(call(&s, Method::POST, "/vifs", Some(b)).await.0, 201);
    refused(
        call(&s, Method::GET, "/vifs/pod1/policy", None).await,
        404,
        "not-found",
        "skips the flow table",
    );
    let policy = json!({"default":"deny","ingress":[{"action":"allow","proto":"tcp","cidr":"198.18.0.0/15","ports":"80-90"}],
                        "egress":[{"action":"allow","proto":"any"}]});
    assert_eq!(
        call(&s, Method::PUT, "/vifs/pod1/policy", Some(policy.clone()))
            .await
            .0,
        201
    );
    let (st, v) = call(&s, Method::GET, "/vifs/pod1/policy", None).await;
    assert_eq!(st, 200);
    assert_eq!(v["ingress"][0]["ports"], "80-90");
    refused(
        call(
            &s,
            Method::PUT,
            "/vifs/pod1/policy",
            Some(
                json!({"default":"deny","ingress":[{"action":"allow","proto":"icmp","ports":"1"}]}),
            ),
        )
        .await,
        400,
        "invalid-field",
        "ingress[0].ports",
    );
    refused(
        call(
            &s,
            Method::PUT,
            "/vifs/pod1/policy",
            Some(json!({"default":"maybe"})),
        )
        .await,
        400,
        "invalid-field",
        "default",
    );
    assert_eq!(
        c.policy("pod1").await.unwrap().ingress.len(),
        1,
        "refused update kept the old policy"
    );
    assert!(s.dp.with(|st| st.policies.contains_key(&0)));
    assert_eq!(
        call(&s, Method::DELETE, "/vifs/pod1/policy", None).await.0,
        204
    );
    assert!(s.dp.with(|st| st.policies.is_empty()));

    s.dp.with(|st| {
        for i in 0..5u64 {
            st.flows.push(FlowEntry {
                index: i,
                vrf: if i < 3 { 1 } else { 2 },
                src: "198.18.1.2".parse().unwrap(),
                dst: "198.18.2.2".parse().unwrap(),
                proto: 6,
                sport: 40000 + i as u16,
                dport: 80,
                action: FlowAction::Forward,
                reverse: None,
                packets: i,
                bytes: i * 100,
                tcp_state: Some("established".into()),
                idle_ms: 10,
                translated: None,
            });
        }
        st.counters.insert(
            "pod1".into(),
            VifCounters {
                rx_packets: 11,
                rx_bytes: 1100,
                tx_packets: 9,
                tx_bytes: 900,
                drops: 2,
            },
        );
        st.drops.insert("no_route".into(), 4);
    });
    let p1 = c
        .flows(&FlowQuery {
            vrf: Some(1),
            limit: Some(2),
            cursor: None,
        })
        .await
        .unwrap();
    assert_eq!(p1.flows.len(), 2);
    let p2 = c
        .flows(&FlowQuery {
            vrf: Some(1),
            limit: Some(2),
            cursor: p1.next_cursor.clone(),
        })
        .await
        .unwrap();
    assert_eq!(p2.flows.len(), 1);
    assert_eq!(p2.flows[0].index, 2);
    assert!(p2.next_cursor.is_none());
    refused(
        call(&s, Method::GET, "/flows?cursor=zzz", None).await,
        400,
        "dataplane-rejected",
        "cursor",
    );
    assert_eq!(c.flow_stats().await.unwrap().active, 5);
    assert_eq!(c.flush_flows().await.unwrap().flushed, 5);
    assert_eq!(c.flow_stats().await.unwrap().active, 0);

    let stats = c.stats().await.unwrap();
    assert_eq!((stats.rx_packets, stats.lcores.len()), (11, 1));
    assert_eq!(c.dropstats().await.unwrap().reasons["no_route"], 4);
    let h = c.health().await.unwrap();
    assert_eq!(h.mempools[0].size, 8192);
    let resp = c.raw(Method::GET, "/metrics", None).await.unwrap();
    assert!(resp
        .content_type
        .unwrap()
        .starts_with("text/plain; version=0.0.4"));
    let text = String::from_utf8(resp.body.to_vec()).unwrap();
    for line in [
        "vrouter_rx_packets_total 11",
        "vrouter_vif_rx_packets_total{vif=\"pod1\",index=\"0\"} 11",
        "vrouter_vif_up{vif=\"pod1\",state=\"up\"} 1",
        "vrouter_drops_total{reason=\"no_route\"} 4",
        "vrouter_mempool_in_use{pool=\"mbuf_pool_0\"} 512",
        "vrouter_flows_created_total 10",
        "vrouter_lcore_poll_gaps_total{lcore=\"1\",over=\"100us\"} 2",
        "vrouter_lcore_poll_gaps_total{lcore=\"1\",over=\"1ms\"} 1",
        "# TYPE vrouter_rx_packets_total counter",
    ] {
        assert!(
            text.lines().any(|l| l == line),
            "missing {line:?} in\n{text}"
        );
    }
}

#[tokio::test]
async fn every_route_in_the_table_is_served() {
    let s = TestServer::start();
    for (method, path) in ROUTES {
        let concrete = path
            .replace("{vrf}", "0")
            .replace("{*prefix}", "198.18.0.0/15")
            .replace("{mac}", "02:00:00:00:00:01")
            .replace("{name}", "nope")
            .replace("{id}", "1")
            .replace("{label}", "100")
            .replace("{vni}", "1");
        let m = Method::from_bytes(method.as_bytes()).unwrap();
        let (st, v) = call(&s, m, &concrete, None).await;
        assert_ne!(st, 405, "{method} {path}: {v}");
        assert_ne!(v["error"], "unknown-path", "{method} {path}");
    }
}

#[test]
fn openapi_document_lists_exactly_the_served_routes() {
    let doc: serde_yaml::Value = serde_yaml::from_str(
        &std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/openapi.yaml")).unwrap(),
    )
    .unwrap();
    assert!(doc["openapi"].as_str().unwrap().starts_with("3."));
    let mut documented = std::collections::BTreeSet::new();
    for (path, item) in doc["paths"].as_mapping().unwrap() {
        for (method, _) in item.as_mapping().unwrap() {
            let m = method.as_str().unwrap();
            if ["get", "put", "post", "delete", "patch"].contains(&m) {
                documented.insert((m.to_uppercase(), path.as_str().unwrap().to_string()));
            }
        }
    }
    let served: std::collections::BTreeSet<(String, String)> = ROUTES
        .iter()
        .map(|(m, p)| (m.to_string(), p.replace("{*", "{")))
        .collect();
    let missing: Vec<_> = served.difference(&documented).collect();
    let extra: Vec<_> = documented.difference(&served).collect();
    assert!(
        missing.is_empty(),
        "served but not in openapi.yaml: {missing:?}"
    );
    assert!(
        extra.is_empty(),
        "in openapi.yaml but not served: {extra:?}"
    );
}

#[test]
fn openapi_document_gives_507_table_full_where_a_table_can_fill() {
    let doc: serde_yaml::Value = serde_yaml::from_str(
        &std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/openapi.yaml")).unwrap(),
    )
    .unwrap();
    for (path, method) in [
        ("/vrfs/{vrf}/routes", "put"),
        ("/vrfs/{vrf}/bridge", "put"),
        ("/vxlan/{vni}", "put"),
        ("/vifs", "post"),
    ] {
        let r = &doc["paths"][path][method]["responses"]["507"]["$ref"];
        assert_eq!(
            r.as_str(),
            Some("#/components/responses/TableFull"),
            "{method} {path}"
        );
    }
    let codes = doc["components"]["schemas"]["Error"]["properties"]["error"]["description"]
        .as_str()
        .unwrap();
    assert!(
        codes
            .lines()
            .any(|l| l.starts_with("507:") && l.contains("table-full")),
        "{codes}"
    );
}

#[tokio::test]
async fn shutdown_is_not_held_up_by_an_idle_client_and_removes_vif_sockets() {
    let mut s = TestServer::start_with(ServeOptions {
        shutdown_grace: std::time::Duration::from_millis(300),
        ..ServeOptions::default()
    });
    call(&s, Method::PUT, "/vrfs/1", None).await;
    let a = s.base.join("pod-a/x");
    let b = s.base.join("pod-b");
    assert_eq!(
        call(
            &s,
            Method::POST,
            "/vifs",
            Some(vhost("a", &a, "s", "server"))
        )
        .await
        .0,
        201
    );
    assert_eq!(
        call(
            &s,
            Method::POST,
            "/vifs",
            Some(vhost("b", &b, "s", "client"))
        )
        .await
        .0,
        201
    );
    // A client that connects and never sends a request.
    let mut idle = tokio::net::UnixStream::connect(&s.socket).await.unwrap();
    s.stop().unwrap();
    // Shutdown finished with the client still there: the server closed its connection rather
    // than wait for it.
    // Closed either way: end of stream if the server had accepted it, a reset if it was still
    // waiting in the listen backlog when the listener closed.
    use tokio::io::AsyncReadExt;
    match idle.read(&mut [0u8; 1]).await {
        Ok(0) => {}
        Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => {}
        other => panic!("the idle client's connection was not closed: {other:?}"),
    }
    assert!(!s.socket.exists());
    assert!(
        a.join("s").exists(),
        "vif sockets stay until vrouterd says so"
    );
    s.ctrl.remove_socket_files();
    assert!(
        !s.base.join("pod-a").exists() && !b.exists(),
        "sockets and created dirs removed"
    );
    assert!(s.base.exists());
}

#[tokio::test]
async fn hostile_clients_do_not_take_the_server_down() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let s = TestServer::start();
    for junk in [
        &b"GARBAGE\r\n\r\n"[..],
        b"GET /health HTTP/1.1\r\nContent-Length: -5\r\n\r\n",
        b"POST /vifs HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n{\"na",
        b"\x00\x01\x02\xff\xfe",
    ] {
        let mut c = tokio::net::UnixStream::connect(&s.socket).await.unwrap();
        c.write_all(junk).await.unwrap();
        c.shutdown().await.unwrap();
        let mut answer = Vec::new();
        let _ = tokio::time::timeout(
            std::time::Duration::from_secs(5),
            c.read_to_end(&mut answer),
        )
        .await;
    }
    let (st, _) = call(&s, Method::GET, "/health", None).await;
    assert_eq!(st, 200);
    assert!(s.client().vifs().await.unwrap().is_empty());
}

/// Collects what the fmt subscriber writes.
#[derive(Clone, Default)]
struct LogBuffer(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);

impl std::io::Write for LogBuffer {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[tokio::test]
async fn control_operations_are_logged_in_spans_naming_the_object() {
    let logs = LogBuffer::default();
    let writer = logs.clone();
    tracing::subscriber::set_global_default(
        tracing_subscriber::fmt()
            .with_ansi(false)
            .with_max_level(tracing::Level::INFO)
            .with_writer(move || writer.clone())
            .finish(),
    )
    .unwrap();
    let s = TestServer::start();
    call(&s, Method::PUT, "/vrfs/1", None).await;
    let dir = s.base.join("pod-log");
    assert_eq!(
        call(
            &s,
            Method::POST,
            "/vifs",
            Some(vhost("pod-log", &dir, "s", "server"))
        )
        .await
        .0,
        201
    );
    assert_eq!(call(&s, Method::DELETE, "/vifs/pod-log", None).await.0, 204);
    let kernel = json!({"name":"kpod-log","type":"af-packet","vrf":1,"mac":"02:00:00:00:00:01","iface":"veth-log"});
    assert_eq!(call(&s, Method::POST, "/vifs", Some(kernel)).await.0, 201);
    let text = String::from_utf8(logs.0.lock().unwrap().clone()).unwrap();
    assert!(
        text.lines()
            .any(|l| l.contains("vif added") && l.contains("interface veth-log")),
        "a kernel vif's log line names its interface: {text}"
    );
    let socket = dir.join("s").display().to_string();
    assert!(
        text.lines().any(|l| l.contains("vif_add{vif=pod-log}")
            && l.contains("vif added")
            && l.contains(&socket)),
        "{text}"
    );
    assert!(
        text.lines()
            .any(|l| l.contains("vif_del{vif=pod-log}") && l.contains("vif removed")),
        "{text}"
    );
    assert!(text.lines().any(|l| l.contains("vrf_add{vrf=1}")), "{text}");
}

#[tokio::test]
async fn reads_answer_while_a_change_waits_on_the_dataplane() {
    let s = TestServer::start();
    assert_eq!(call(&s, Method::PUT, "/vrfs/1", None).await.0, 201);
    let dir = s.base.join("pods/a");
    let (st, v) = call(
        &s,
        Method::POST,
        "/vifs",
        Some(vhost("a0", &dir, "a0.sock", "server")),
    )
    .await;
    assert_eq!(st, 201, "{v}");

    // The next vif add stops inside the dataplane, as vrouterd's does while its vhost core
    // opens the socket (up to seconds).
    s.dp.hold.arm();
    let held = {
        let client = s.client();
        let body = serde_json::to_vec(&vhost("b0", &s.base.join("pods/b"), "b0.sock", "server"));
        tokio::spawn(async move { client.raw(Method::POST, "/vifs", Some(body.unwrap())).await })
    };
    let dp = s.dp.clone();
    let waiting = tokio::task::spawn_blocking(move || {
        dp.hold.wait_for_waiter(std::time::Duration::from_secs(30))
    });
    assert!(
        waiting.await.unwrap(),
        "the vif add never reached the dataplane"
    );

    // Every read answers meanwhile, and sees the model from before the add. (Without separate
    // lanes and an unlocked model across the dataplane call, each of these waits for the
    // gate, which opens only below: the timeout turns that hang into a failure.)
    let limit = std::time::Duration::from_secs(20);
    for path in [
        "/health",
        "/metrics",
        "/vifs",
        "/vifs/a0",
        "/stats",
        "/dropstats",
        "/vrfs",
    ] {
        let got = tokio::time::timeout(limit, s.client().raw(Method::GET, path, None)).await;
        let resp = got
            .unwrap_or_else(|_| panic!("GET {path} waited for a change in progress"))
            .unwrap();
        assert_eq!(resp.status, 200, "GET {path}");
    }
    let (_, vifs) = call(&s, Method::GET, "/vifs", None).await;
    let names: Vec<&str> = vifs
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|v| v["name"].as_str())
        .collect();
    assert_eq!(names, ["a0"], "a change shows only once committed");
    let (_, health) = call(&s, Method::GET, "/health", None).await;
    assert_eq!(health["vifs"].as_array().map(Vec::len), Some(1), "{health}");
    // The controller itself answers reads without waiting either (not only the server).
    let ctrl = s.ctrl.clone();
    let direct = tokio::task::spawn_blocking(move || ctrl.health().map(|h| h.vifs.len()));
    let direct = tokio::time::timeout(limit, direct).await;
    assert_eq!(
        direct.expect("Controller::health waited").unwrap().unwrap(),
        1
    );

    // Changes still go one at a time: a second one waits for the first.
    let queued = {
        let client = s.client();
        tokio::spawn(async move { client.vrf_add(7).await })
    };
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    assert!(!queued.is_finished(), "a change overtook one in progress");
    assert!(!s.dp.with(|m| m.vrfs.contains(&7)));

    s.dp.hold.release();
    let resp = held.await.unwrap().unwrap();
    assert_eq!(resp.status, 201);
    queued.await.unwrap().unwrap();
    let (_, vifs) = call(&s, Method::GET, "/vifs", None).await;
    assert_eq!(vifs.as_array().map(Vec::len), Some(2), "{vifs}");
    assert_eq!(
        s.dp.with(|m| m.log.iter().rev().take(2).cloned().collect::<Vec<_>>()),
        ["vrf_add", "vif_add"]
    );
}

#[tokio::test]
async fn explicit_nulls_and_fields_beside_a_plain_nexthop_are_refused() {
    let s = TestServer::start();
    call(&s, Method::PUT, "/vrfs/1", None).await;
    refused(
        call(
            &s,
            Method::PUT,
            "/nexthops/1",
            Some(json!({"type":"discard","vif":"pod1"})),
        )
        .await,
        400,
        "invalid-json",
        "vif",
    );
    assert_eq!(
        call(
            &s,
            Method::PUT,
            "/nexthops/1",
            Some(json!({"type":"discard"}))
        )
        .await
        .0,
        201
    );
    refused(
        call(
            &s,
            Method::PUT,
            "/vrfs/1/routes",
            Some(json!({"prefix":"198.18.2.0/24","nexthop":1,"label":null})),
        )
        .await,
        400,
        "invalid-field",
        "null",
    );
    let (status, v) = call(
        &s,
        Method::PUT,
        "/nexthops/2",
        Some(json!({"type":"ecmp","members":[1]})),
    )
    .await;
    assert_eq!(status, 409, "ECMP members are encap or tunnel: {v}");
    refused(
        call(
            &s,
            Method::PUT,
            "/nexthops/3",
            Some(json!({"type":"encap","vif":null,"dmac":"02:00:00:00:00:01"})),
        )
        .await,
        400,
        "invalid-field",
        "vif",
    );
    assert!(
        call(&s, Method::GET, "/vrfs/1/routes", None).await.1 == json!([]),
        "nothing refused was applied"
    );
}

/// The document's ranges are the model's: a limit changed in one place and not the other fails
/// here, before an agent's generated client finds out.
#[test]
fn openapi_document_states_the_models_limits() {
    use control_api::model::{
        ECMP_MEMBERS_MAX, MPLS_LABEL_MAX, MPLS_LABEL_MIN, MTU_DEFAULT, MTU_MAX, MTU_MIN,
        MTU_MIN_IPV6, NEXTHOP_ID_MAX, POLICY_RULES_MAX, QUEUES_MAX, VIF_NAME_MAX, VNI_MAX, VRF_MAX,
    };
    let doc: serde_yaml::Value = serde_yaml::from_str(
        &std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/openapi.yaml")).unwrap(),
    )
    .unwrap();
    let schemas = &doc["components"]["schemas"];
    let range = |s: &serde_yaml::Value| (s["minimum"].as_u64(), s["maximum"].as_u64());
    let n = |v: u32| Some(u64::from(v));
    assert_eq!(range(&schemas["Vrf"]), (Some(0), n(VRF_MAX)));
    assert_eq!(range(&schemas["NexthopId"]), (Some(1), n(NEXTHOP_ID_MAX)));
    assert_eq!(
        range(&schemas["MplsLabel"]),
        (n(MPLS_LABEL_MIN), n(MPLS_LABEL_MAX))
    );
    assert_eq!(range(&schemas["Label"]), (Some(0), n(VNI_MAX)));
    let vni = &doc["paths"]["/vxlan/{vni}"]["parameters"][0]["schema"];
    assert_eq!(range(vni), (Some(1), n(VNI_MAX)));
    assert_eq!(range(&schemas["Mtu"]), (n(MTU_MIN), n(MTU_MAX)));
    assert_eq!(schemas["Mtu"]["default"].as_u64(), n(MTU_DEFAULT));
    for kind in [
        "VhostUserVifRequest",
        "PhysicalVifRequest",
        "AfPacketVifRequest",
    ] {
        let ipv6_mtu = &schemas[kind]["anyOf"][1]["properties"]["mtu"]["minimum"];
        assert_eq!(ipv6_mtu.as_u64(), n(MTU_MIN_IPV6), "{kind}");
    }
    let queues = &schemas["VhostUserVifRequest"]["properties"]["queues"];
    assert_eq!(range(queues), (Some(1), n(QUEUES_MAX)));
    let members = &schemas["EcmpNexthop"]["properties"]["members"];
    assert_eq!(members["maxItems"].as_u64(), Some(ECMP_MEMBERS_MAX as u64));
    for dir in ["ingress", "egress"] {
        let rules = &schemas["Policy"]["properties"][dir]["maxItems"];
        assert_eq!(rules.as_u64(), Some(POLICY_RULES_MAX as u64), "{dir}");
    }
    let name = schemas["Name"]["pattern"].as_str().unwrap();
    assert!(
        name.ends_with(&format!("{{0,{}}}$", VIF_NAME_MAX - 1)),
        "{name}"
    );
}

/// An answer given before the request's body was read (a method the path does not take, a path
/// parameter refused, a request that takes no body) still leaves the connection open for the
/// client's next request, whose answer comes back on it: the body is read whole first, even
/// when its last bytes arrive after the answer was written.
#[tokio::test]
async fn early_answers_keep_the_connection_for_the_next_request() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let s = TestServer::start();
    for (head, status) in [
        ("TRACE /mpls/16", "405"),
        ("PUT /vrfs/-151701", "400"),
        ("PUT /nowhere", "404"),
    ] {
        let mut c = tokio::net::UnixStream::connect(&s.socket).await.unwrap();
        c.write_all(
            format!("{head} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 14\r\n\r\n")
                .as_bytes(),
        )
        .await
        .unwrap();
        // The body follows once the server had time to answer the headers.
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        c.write_all(b"{\"nexthop\": 1}").await.unwrap();
        c.write_all(b"GET /vrfs HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            .await
            .unwrap();
        let mut answers = String::new();
        c.read_to_string(&mut answers).await.unwrap();
        assert!(
            answers.starts_with(&format!("HTTP/1.1 {status}")),
            "{head}: {answers}"
        );
        assert!(
            answers.contains("HTTP/1.1 200"),
            "{head}: the next request on the connection is answered: {answers}"
        );
    }
}

#[tokio::test]
async fn a_mirror_is_refused_naming_what_is_wrong() {
    let s = TestServer::start();
    assert_eq!(call(&s, Method::PUT, "/vrfs/1", None).await.0, 201);
    let b = json!({"name":"pod1","type":"af-packet","vrf":1,"mac":"02:00:00:00:00:01","iface":"veth-m1"});
    assert_eq!(call(&s, Method::POST, "/vifs", Some(b)).await.0, 201);
    let cases = [
        ("/vifs/pod1/mirror", json!({"to":"pod1"}), 400, "itself"),
        ("/vifs/pod1/mirror", json!({"to":"nope"}), 409, "nope"),
        ("/vifs/nope/mirror", json!({"to":"pod1"}), 404, "nope"),
        (
            "/vifs/pod1/mirror",
            json!({"to":"x","snaplen":10}),
            400,
            "snaplen",
        ),
        (
            "/vifs/pod1/mirror",
            json!({"to":"x","sample":0}),
            400,
            "sample",
        ),
        (
            "/vifs/pod1/mirror",
            json!({"to":"x","filter":{"ports":"53"}}),
            400,
            "filter.ports",
        ),
        (
            "/vifs/pod1/mirror",
            json!({"to":"x","direction":"sideways"}),
            400,
            "sideways",
        ),
    ];
    for (path, body, status, names) in cases {
        let (st, v) = call(&s, Method::PUT, path, Some(body.clone())).await;
        assert_eq!(st, status, "{body}: {v}");
        assert!(v.to_string().contains(names), "{body}: {v}");
    }
    assert_eq!(
        call(&s, Method::GET, "/vifs/pod1/mirror", None).await.0,
        404
    );
    assert_eq!(
        call(&s, Method::DELETE, "/vifs/pod1/mirror", None).await.0,
        404
    );
}

#[tokio::test]
async fn the_change_stream_follows_every_accepted_change_in_order() {
    let s = TestServer::start();
    let c = s.client();
    let start = c.events(0, None, 0).await.expect("events");
    assert!(!start.reset);
    let (epoch, from) = (start.epoch.clone(), start.revision);

    // A reader waiting for the next change wakes when it is accepted.
    let waiter = {
        let c = s.client();
        let epoch = epoch.clone();
        tokio::spawn(async move { c.events(from, Some(&epoch), 10_000).await })
    };
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    assert_eq!(call(&s, Method::PUT, "/vrfs/1", None).await.0, 201);
    let woke = waiter.await.unwrap().expect("the waiting read");
    assert_eq!(woke.events.len(), 1, "{woke:?}");
    assert_eq!(woke.events[0].change["op"], "vrf-add");
    assert_eq!(woke.events[0].change["vrf"], 1);

    let nh = json!({"type":"encap","vif":"pod1","dmac":"02:00:00:00:01:01"});
    let dir = s.base.join("pod1");
    assert_eq!(
        call(
            &s,
            Method::POST,
            "/vifs",
            Some(vhost("pod1", &dir, "s", "server"))
        )
        .await
        .0,
        201
    );
    assert_eq!(call(&s, Method::PUT, "/nexthops/5", Some(nh)).await.0, 201);
    let route = json!({"prefix":"198.18.1.0/24","nexthop":5});
    assert_eq!(
        call(&s, Method::PUT, "/vrfs/1/routes", Some(route)).await.0,
        201
    );
    // Refused changes are not in the stream.
    refused(
        call(
            &s,
            Method::PUT,
            "/vrfs/1/routes",
            Some(json!({"prefix":"198.18.2.0/24","nexthop":99})),
        )
        .await,
        409,
        "unknown-reference",
        "99",
    );
    assert_eq!(
        call(&s, Method::DELETE, "/vrfs/1/routes/198.18.1.0/24", None)
            .await
            .0,
        204
    );

    let page = c
        .events(woke.revision, Some(&epoch), 0)
        .await
        .expect("events");
    let ops: Vec<&str> = page
        .events
        .iter()
        .map(|e| e.change["op"].as_str().unwrap())
        .collect();
    assert_eq!(
        ops,
        ["vif-add", "nexthop-set", "route-set", "route-del"],
        "{page:?}"
    );
    let revs: Vec<u64> = page.events.iter().map(|e| e.revision).collect();
    assert_eq!(
        revs,
        (woke.revision + 1..=woke.revision + 4).collect::<Vec<_>>()
    );
    assert_eq!(page.revision, woke.revision + 4);
    let vif = &page.events[0].change;
    assert_eq!(vif["vif"]["name"], "pod1");
    assert!(
        vif.get("created_dirs").is_none(),
        "vrouterd's housekeeping stays out: {vif}"
    );
    assert_eq!(page.events[2].change["route"]["prefix"], "198.18.1.0/24");

    // Nothing new: an empty page at once without wait_ms, after it with one.
    let t0 = std::time::Instant::now();
    let idle = c
        .events(page.revision, Some(&epoch), 300)
        .await
        .expect("events");
    assert!(idle.events.is_empty() && !idle.reset);
    assert!(t0.elapsed() >= std::time::Duration::from_millis(250));

    // Another run's revisions mean nothing here: reset, with the latest revision.
    let other = c.events(2, Some("another-run"), 0).await.expect("events");
    assert!(other.reset && other.events.is_empty());
    assert_eq!(other.revision, page.revision);

    refused(
        raw(&s, Method::GET, "/events?since=x", None).await,
        400,
        "invalid-query",
        "since",
    );
    refused(
        raw(&s, Method::GET, "/events?wait_ms=600000", None).await,
        400,
        "invalid-query",
        "wait_ms",
    );
    refused(
        raw(&s, Method::GET, "/events?from=1", None).await,
        400,
        "invalid-query",
        "from",
    );
    refused(
        raw(&s, Method::GET, "/events?limit=0", None).await,
        400,
        "invalid-query",
        "limit",
    );
}

#[tokio::test]
async fn a_vrf_routing_identity_is_checked_listed_published_and_blocks_the_vrf_delete() {
    let s = TestServer::start();
    let c = s.client();
    let start = c.events(0, None, 0).await.expect("events");
    let good = json!({"rd": "64512:1", "import_targets": ["target:64512:1"],
                      "export_targets": ["target:64512:1", "64512:100"], "vni": 1001});
    refused(
        call(&s, Method::PUT, "/vrfs/1/routing", Some(good.clone())).await,
        404,
        "not-found",
        "vrf",
    );
    assert_eq!(call(&s, Method::PUT, "/vrfs/1", None).await.0, 201);
    assert_eq!(call(&s, Method::PUT, "/vrfs/2", None).await.0, 201);
    refused(
        call(&s, Method::GET, "/vrfs/1/routing", None).await,
        404,
        "not-found",
        "routing",
    );
    let put = |body: Value| call(&s, Method::PUT, "/vrfs/1/routing", Some(body));
    let with = |k: &str, v: Value| {
        let mut b = good.clone();
        if v.is_null() {
            b.as_object_mut().unwrap().remove(k);
        } else {
            b[k] = v;
        }
        b
    };
    for (body, field) in [
        (with("rd", json!("64512")), "rd"),
        (with("rd", json!("4200000000:70000")), "rd"),
        (with("rd", json!("x:1")), "rd"),
        (with("import_targets", json!([])), "import_targets"),
        (
            with("export_targets", json!(["64512:1", "64512:1"])),
            "export_targets",
        ),
        (with("rd", json!("064512:1")), "rd"),
        (
            with("export_targets", json!(["target:nope"])),
            "export_targets",
        ),
        (with("vni", json!(0)), "vni"),
        (with("vni", json!(16_777_216)), "vni"),
        (with("vni", Value::Null), "vni"),
        (with("label", json!(15)), "label"),
    ] {
        let (st, v) = put(body.clone()).await;
        assert_eq!(st, 400, "{body}: {v}");
        assert!(
            v["message"].as_str().unwrap().contains(field),
            "{body}: {v}"
        );
    }
    refused(
        call(&s, Method::PUT, "/vrfs/0/routing", Some(good.clone())).await,
        409,
        "conflict",
        "fabric",
    );
    assert_eq!(put(with("bogus", json!(1))).await.0, 400);

    let (st, v) = put(good.clone()).await;
    assert_eq!((st, &v), (201, &good));
    assert_eq!(put(good.clone()).await.0, 200);
    assert_eq!(
        call(&s, Method::GET, "/vrfs/1/routing", None).await,
        (200, good.clone())
    );
    let (_, vrfs) = call(&s, Method::GET, "/vrfs", None).await;
    assert_eq!(vrfs[1]["routing"], good, "{vrfs}");
    assert!(vrfs[2].get("routing").is_none(), "{vrfs}");

    // Another VRF may not reuse the RD, VNI or label, nor name a VNI mapped elsewhere.
    let other = |rd: &str, vni: u32| json!({"rd": rd, "import_targets": ["64512:2"], "export_targets": ["64512:2"], "vni": vni});
    refused(
        call(
            &s,
            Method::PUT,
            "/vrfs/2/routing",
            Some(other("64512:1", 1002)),
        )
        .await,
        409,
        "conflict",
        "route distinguisher",
    );
    refused(
        call(
            &s,
            Method::PUT,
            "/vrfs/2/routing",
            Some(other("64512:2", 1001)),
        )
        .await,
        409,
        "conflict",
        "vni 1001",
    );
    assert_eq!(
        call(&s, Method::PUT, "/vxlan/1003", Some(json!({"vrf": 1})))
            .await
            .0,
        201
    );
    refused(
        call(
            &s,
            Method::PUT,
            "/vrfs/2/routing",
            Some(other("64512:2", 1003)),
        )
        .await,
        409,
        "conflict",
        "mapped to vrf 1",
    );

    refused(
        call(&s, Method::DELETE, "/vrfs/1", None).await,
        409,
        "in-use",
        "routing identity",
    );
    assert_eq!(
        call(&s, Method::DELETE, "/vrfs/1/routing", None).await.0,
        204
    );
    assert_eq!(
        call(&s, Method::DELETE, "/vrfs/1/routing", None).await.0,
        404
    );

    let page = c
        .events(start.revision, Some(&start.epoch), 0)
        .await
        .expect("events");
    let routing: Vec<&Value> = page
        .events
        .iter()
        .map(|e| &e.change)
        .filter(|c| c["op"].as_str().unwrap().starts_with("vrf-routing"))
        .collect();
    assert_eq!(
        routing,
        [
            &json!({"op": "vrf-routing-set", "vrf": 1, "routing": good}),
            &json!({"op": "vrf-routing-del", "vrf": 1}),
        ],
        "{page:?}"
    );
}
