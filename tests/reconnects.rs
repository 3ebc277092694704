//! A thousand reconnects on one server-mode vif, each new frontend arriving right after the old
//! one went (before vrouterd has necessarily handled the hang-up), in every way a frontend goes:
//! - a raw connection that asks one question and closes;
//! - an in-repo frontend with memory mapped, rings running and frames sent, that closes;
//! - the same frontend's connection held by another process that is killed with SIGKILL;
//! - a connection that sends a request and closes without reading the answer;
//! - every 100th, a real testpmd (virtio-user) pod whose traffic is checked end to end, then
//!   killed with SIGKILL or quit gracefully, in turn.
//!
//! Every new frontend must be served (a refused one fails its first request), and vrouterd's
//! open fds, mappings and resident memory must not grow from the first hundred to the last.

use std::io::{Read, Write};
use std::os::fd::OwnedFd;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use control_api::api::{MacAddr, VhostUserMode};
use testkit::frontend_pod::{udp_frame, FrontendPod, Memory};
use testkit::testpmd::{TestpmdConfig, TestpmdPod};
use testkit::vrouterd::{connected, rx_packets, tx_packets, vhost_user_vif as vhost_vif, Vrouterd};
use vhost_user::codec::{self, RequestCode};
use vhost_user::session::OFFERED_FEATURES;

const MAC_F: MacAddr = MacAddr([0x02, 0, 0, 0, 0x0f, 0x01]);
const MAC_B: MacAddr = MacAddr([0x02, 0, 0, 0, 0x0b, 0x01]);
const RECONNECTS: usize = 1000;

fn vrouterd_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_vrouterd"))
}

/// Connects and asks for the features: fails if vrouterd refused the connection.
fn served(socket: &Path) -> UnixStream {
    let mut s = UnixStream::connect(socket).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    s.write_all(&codec::encode_request(RequestCode::GetFeatures, false, &[]))
        .expect("send GET_FEATURES");
    let mut reply = [0u8; codec::HEADER_LEN + 8];
    s.read_exact(&mut reply)
        .expect("vrouterd served the new frontend (a refused one is closed)");
    let features = u64::from_le_bytes(reply[codec::HEADER_LEN..].try_into().expect("8 bytes"));
    assert_eq!(features, OFFERED_FEATURES, "the reply is GET_FEATURES'");
    s
}

/// A full frontend that sends a burst of frames toward the sink.
fn running_frontend(socket: &Path) -> FrontendPod {
    let mut f = FrontendPod::connect(socket, Memory::Memfd).expect("frontend");
    let frame = udp_frame(
        MAC_F.0,
        MacAddr::VROUTER_DEFAULT.0,
        [198, 18, 1, 2],
        [198, 18, 2, 2],
    );
    f.send(&frame, 32);
    f
}

/// Hands `conn` to a separate process (as its stdin) and kills that process with SIGKILL: the
/// kernel closes the connection as it does for a crashed pod.
fn killed_holder(conn: OwnedFd) {
    let mut holder = Command::new("sleep")
        .arg("600")
        .stdin(Stdio::from(conn))
        .stdout(Stdio::null())
        .spawn()
        .expect("spawning the holder");
    holder.kill().expect("SIGKILL");
    holder.wait().expect("reaping the holder");
}

fn testpmd_sender(socket: &Path) -> TestpmdPod {
    TestpmdConfig::sender(socket, "198.18.1.2", "198.18.2.2").start()
}

fn sink(socket: &Path) -> TestpmdPod {
    TestpmdConfig::receiver(socket).as_server().start()
}

#[test]
fn a_thousand_reconnects_of_every_kind_are_served_without_growth() {
    let vr = Vrouterd::start(&vrouterd_bin(), &[], &[]);
    let base = vr.socket_base();
    let (dir_f, dir_b) = (base.join("pod-f"), base.join("pod-b"));
    std::fs::create_dir(&dir_b).expect("pod-b dir");
    let (sock_f, sock_b) = (dir_f.join("net0"), dir_b.join("net0"));
    vr.api(|c| async move { c.vrf_add(1).await })
        .expect("vrf 1");
    for v in [
        vhost_vif("podF", MAC_F, &dir_f, "net0", VhostUserMode::Server),
        vhost_vif("podB", MAC_B, &dir_b, "net0", VhostUserMode::Client),
    ] {
        vr.add_vif(&v);
    }
    vr.route_to(1, "podB", MAC_B, &["198.18.2.2/32"]);
    let _sink = sink(&sock_b);
    vr.wait_vif("podB", "the sink connects", connected);

    let started = Instant::now();
    let mut after_first_hundred = None;
    let mut previous: Option<UnixStream> = None;
    for i in 1..=RECONNECTS {
        // The previous frontend goes now; the next one connects at once.
        drop(previous.take());
        if i % 100 == 0 {
            let mut pod = testpmd_sender(&sock_f);
            vr.wait_vif(
                "podF",
                &format!("reconnect {i}: testpmd connects"),
                connected,
            );
            let (f0, b0) = (rx_packets(&vr.vif("podF")), tx_packets(&vr.vif("podB")));
            vr.wait_vif("podF", &format!("reconnect {i}: testpmd's traffic"), |v| {
                rx_packets(v) >= f0 + 1000
            });
            vr.wait_vif("podB", &format!("reconnect {i}: reaches the sink"), |v| {
                tx_packets(v) >= b0 + 1000
            });
            if i % 200 == 0 {
                pod.stop(Duration::from_secs(10));
            } else {
                pod.kill();
            }
            drop(pod);
            if i == 100 {
                // Let the first hundred settle (a dead pod's memory unmapped), then measure.
                vr.wait_vif("podF", "testpmd's hang-up handled", |v| !connected(v));
                after_first_hundred = Some(vr.usage());
            }
            continue;
        }
        match i % 4 {
            0 => drop(served(&sock_f)),
            1 => {
                let f = running_frontend(&sock_f);
                previous = Some(f.fe.stream);
            }
            2 => {
                let f = running_frontend(&sock_f);
                let conn = OwnedFd::from(f.fe.stream);
                killed_holder(conn);
            }
            _ => {
                let mut s = UnixStream::connect(&sock_f).expect("connect");
                s.write_all(&codec::encode_request(RequestCode::GetFeatures, false, &[]))
                    .expect("send");
                s.write_all(&codec::encode_request(RequestCode::SetOwner, false, &[]))
                    .expect("send");
                previous = Some(s);
            }
        }
    }
    drop(previous);
    vr.wait_vif("podF", "the last hang-up handled", |v| !connected(v));
    let elapsed = started.elapsed();
    let (first, last) = (after_first_hundred.expect("measured at 100"), vr.usage());
    eprintln!(
        "{RECONNECTS} reconnects in {elapsed:?}: after 100 {first:?}, after {RECONNECTS} {last:?}"
    );
    // One leaked fd or mapping per reconnect would show as hundreds.
    assert!(last.fds <= first.fds + 2, "fds grew: {first:?} → {last:?}");
    assert!(
        last.maps <= first.maps + 8,
        "mappings grew: {first:?} → {last:?}"
    );
    assert!(
        last.rss_kib <= first.rss_kib + 4096,
        "resident memory grew: {first:?} → {last:?}"
    );
    let out = vr.process.outputs();
    assert!(
        !out.contains("second frontend refused"),
        "a reconnecting frontend was refused:\n{out}"
    );
    let status = vr.stop();
    assert!(status.success(), "vrouterd exit {status}");
}
