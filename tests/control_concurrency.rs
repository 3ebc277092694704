//! The real vrouterd's control API used from two clients at once: one adds and removes
//! vhost-user vifs (each add waits for the vhost core) while the other polls health, metrics
//! and vif status, which read the same registry and status map from the other lane. Neither
//! may deadlock or fail; a listed vif is listening (or down while its removal is under way);
//! afterwards nothing is left over, and an idle vrouterd's cores do not look stuck.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use control_api::api::{HealthStatus, MacAddr, VhostUserMode, VifState};
use control_api::BlockingClient;
use testkit::vrouterd::{vhost_user_vif, Vrouterd};

#[test]
fn probes_keep_answering_while_vifs_come_and_go() {
    let dir = tempfile::Builder::new()
        .prefix("vrouterd-conc")
        .tempdir()
        .expect("temporary directory");
    let bin = PathBuf::from(env!("CARGO_BIN_EXE_vrouterd"));
    let vr = Vrouterd::start_in(dir.path(), &bin, &["--idle-sleep-us", "20"], &[]);
    vr.api(|c| async move { c.vrf_add(1).await })
        .expect("vrf 1");
    let pod_dir = vr.socket_base().join("churn");
    let socket = pod_dir.join("churn.sock");
    const ROUNDS: usize = 25;

    let done = AtomicBool::new(false);
    let probes = AtomicU64::new(0);
    std::thread::scope(|s| {
        let prober = s.spawn(|| {
            let client = BlockingClient::new(vr.control_socket()).expect("second client");
            while !done.load(Ordering::Acquire) {
                let health = client
                    .run(|c| async move { c.health().await })
                    .expect("GET /health during changes");
                assert_eq!(health.status, HealthStatus::Ok, "{:?}", health.problems);
                let metrics = client
                    .run(|c| async move { c.metrics().await })
                    .expect("GET /metrics during changes");
                assert!(metrics.contains("vrouter_rx_packets_total"));
                // A vif is listed only once added whole (its socket already listening), and
                // until its removal is done (down meanwhile: the dataplane lets go first).
                for v in client
                    .run(|c| async move { c.vifs().await })
                    .expect("GET /vifs during changes")
                {
                    assert!(
                        matches!(v.status.state, VifState::Listening | VifState::Down),
                        "{}: {:?}",
                        v.config.name,
                        v.status.state
                    );
                }
                probes.fetch_add(1, Ordering::Release);
            }
        });
        // The changes start once the prober is under way, so the two overlap.
        while probes.load(Ordering::Acquire) == 0 && !prober.is_finished() {
            std::thread::yield_now();
        }
        for round in 0..ROUNDS {
            let req = vhost_user_vif(
                "churn",
                MacAddr([2, 0, 0, 0, 0x0e, 1]),
                &pod_dir,
                "churn.sock",
                VhostUserMode::Server,
            );
            let info = vr
                .api(|c| async move { c.vif_add(&req).await })
                .unwrap_or_else(|e| panic!("round {round}: vif add: {e}"));
            assert_eq!(info.status.state, VifState::Listening, "round {round}");
            assert!(socket.exists(), "round {round}: socket listening");
            vr.api(|c| async move { c.vif_del("churn").await })
                .unwrap_or_else(|e| panic!("round {round}: vif delete: {e}"));
            assert!(!socket.exists(), "round {round}: socket removed");
        }
        done.store(true, Ordering::Release);
        prober.join().expect("the prober's checks held");
    });
    let probes = probes.load(Ordering::Acquire);
    eprintln!("{probes} probe rounds alongside {ROUNDS} vif add/remove rounds");
    assert!(probes > 0);

    // Nothing left over, and vrouterd still healthy and answering.
    let vifs = vr
        .api(|c| async move { c.vifs().await })
        .expect("GET /vifs");
    assert!(vifs.is_empty(), "{vifs:?}");
    let health = vr.api(|c| async move { c.health().await }).expect("health");
    assert_eq!(health.status, HealthStatus::Ok, "{:?}", health.problems);
    assert!(
        !pod_dir.exists(),
        "the pod directory vrouterd created is gone"
    );
    // Idle is not stuck: with no traffic and no vifs, every core still loops, so health reads
    // taken further apart than a stall's limit find them all moving.
    std::thread::sleep(Duration::from_millis(2500));
    let health = vr.api(|c| async move { c.health().await }).expect("health");
    assert_eq!(health.status, HealthStatus::Ok, "{:?}", health.problems);
    let status = vr.stop();
    assert!(status.success(), "vrouterd exit status {status}");
}
