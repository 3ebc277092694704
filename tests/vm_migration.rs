//! Live migration of a QEMU guest between two vhost-user vifs of one vrouterd, while traffic
//! flows: a Linux guest (TCG) on vif `vm6a` receives a TCP stream from a kernel pod and pings
//! it; a second QEMU waits with `-incoming` on vif `vm6b` (same MAC, same address: the vif an
//! agent prepares on the destination node); the source migrates through QMP. Meanwhile QEMU
//! switches vrouterd's dirty-page logging on (SET_LOG_BASE, VHOST_F_LOG_ALL, VHOST_VRING_F_LOG)
//! with the rings running, copies the guest while vrouterd writes received frames into it,
//! then stops the rings (GET_VRING_BASE) and starts them on the destination at that position.
//!
//! The guest negotiated VIRTIO_NET_F_GUEST_ANNOUNCE, so once it runs at the destination QEMU
//! asks it to announce itself: its gratuitous ARP reaches the agent on pkt0 (a small agent in
//! this test), which moves the guest's /32 to the vif the ARP came in by through the REST API,
//! as the agent that owns the routes would. What must hold:
//! - the guest's memory at the destination equals the source's once both are paused (the
//!   destination QEMU runs with `-S` until compared): a page vrouterd wrote during the copy and
//!   did not log would reach the destination stale. (TCP alone would not show it: the guest
//!   writes most of those pages itself soon after, and a lost frame is retransmitted.);
//! - the transfer completes and its SHA-256 matches at both ends;
//! - the guest's gratuitous ARP reaches the agent from the destination vif, and the route moves;
//! - the guest's ping loses at most a few packets around the switch-over;
//! - the guest works afterwards (pings both ways, a second transfer).

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use control_api::api::{MacAddr, VhostUserMode};
use control_api::pkt0::{Connection, Message, Reason};
use testkit::kernel_pod::{route_in_vrf1, KernelPod};
use testkit::netns::{temp_path, Netns};
use testkit::vm::{feature, route_vm_in_vrf1, tcp_pod_to_vm, GuestRam, Vm, VmConfig};
use testkit::vrouterd::{vhost_user_vif, Vrouterd};

/// Long enough to be in flight during the whole migration of a TCG guest (which takes 1-3 s;
/// a TCG guest receives some 15 MB/s here), so the stream goes through both vifs. The guest
/// keeps what it receives in its tmpfs to hash it at the end: [`GUEST_MB`] holds it.
const BYTES: u64 = 160 << 20;
/// The stream's pace, bytes a second: [`BYTES`] last at least 8 s even when the host lets the
/// guest take them faster (it has taken all of them before the route moved, some 4 s into the
/// migration).
const PACE: u64 = 20 << 20;
/// Guest RAM, in MiB.
const GUEST_MB: u32 = 512;
/// Bytes each vif must have carried to the guest of the stream across the migration: the
/// copy met the stream on the source, and the stream went on at the destination.
const BYTES_EACH_SIDE_MIN: u64 = 4 << 20;
/// Pings sent across the migration, 5 a second.
const PINGS: u32 = 150;
/// Pings the switch-over may cost (migration downtime plus the route move).
const PINGS_LOST_MAX: u32 = 10;

fn vrouterd_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_vrouterd"))
}

fn guest_config(name: &str, socket: PathBuf, mode: VhostUserMode) -> VmConfig {
    let mut cfg = VmConfig::new(name, 6, socket, mode);
    // Ordinary shared pages: two guests' worth of hugepages is more than the pool other tests
    // share, and logging is per 4 KiB page either way.
    cfg.ram = GuestRam::Memfd;
    cfg.memory_mb = GUEST_MB;
    // Big receive buffers (no mergeable buffers): the driver recycles whole pages it never
    // writes itself, so a page vrouterd wrote and did not log stays stale at the destination
    // (with mergeable buffers the guest writes most of those pages soon after, which hides a
    // missed one from the comparison).
    cfg.net_device_props.push("mrg_rxbuf=off".into());
    cfg
}

fn live_migration_under_traffic(mode: VhostUserMode) {
    let start = Instant::now();
    let node = Netns::new("vmmig");
    let pod = KernelPod::attached_to(Some(&node), "p", 1, 1500);
    let agent_sock = temp_path("pkt0-mig", "sock");
    let vr = Vrouterd::start_netns(
        Some(&node),
        &vrouterd_bin(),
        &[
            "--idle-sleep-us",
            "20",
            "--agent-socket",
            agent_sock.to_str().expect("utf-8 path"),
        ],
        &[],
    );
    // Nexthop 1 to the pod, 2 = receive, 3 to the guest on the source vif, 4 on the destination.
    route_in_vrf1(&vr, &[("pod1", &pod)]);
    let dir = vr.socket_base().join("vm-uid-6");
    let src_cfg = guest_config("vm6-src", dir.join("vm6-a"), mode);
    route_vm_in_vrf1(&vr, "vm6a", &src_cfg, 3, 2);
    // The destination vif, ready before the guest arrives: same MAC and address, no route yet.
    let mut dst_cfg = guest_config("vm6-dst", dir.join("vm6-b"), mode);
    let mig_dir = tempfile::tempdir().expect("tempdir");
    dst_cfg.incoming = Some(format!(
        "unix:{}",
        mig_dir.path().join("mig.sock").display()
    ));
    let mut req = vhost_user_vif("vm6b", MacAddr(dst_cfg.mac), &dir, "vm6-b", mode);
    req.ip = Some(dst_cfg.ip);
    req.mtu = Some(dst_cfg.mtu);
    vr.add_vif(&req);

    let mut src = Vm::boot(src_cfg);
    vr.wait_connected("vm6a");
    src.wait_until(
        "grep -q 1 /sys/class/net/eth0/carrier",
        Duration::from_secs(30),
    )
    .unwrap_or_else(|e| panic!("{e}\n{}", src.console()));
    let (ok, out) = src.ping(pod.ip, 3);
    assert!(ok, "guest → pod before migration: {out}");
    let negotiated = src.negotiated_features();
    eprintln!("guest negotiated {:?}", feature::names(negotiated));
    assert_ne!(
        negotiated & 1 << feature::GUEST_ANNOUNCE,
        0,
        "GUEST_ANNOUNCE offered and taken"
    );
    // Its vif comes up only once the guest runs there (the rings start after the migration).
    let mut dst = Vm::incoming(dst_cfg);

    // Traffic across the migration: the pod streams into the guest (vrouterd writes guest
    // memory all along), and the guest pings the pod.
    let rx = src.tcp_receiver(5201).expect("receiver in the guest");
    let ping_pid = src.spawn(
        &format!("ping -c {PINGS} -i 0.2 -W 1 {}", pod.ip),
        "/tmp/ping.log",
    );
    let vm_ip = src.config().ip;
    let vm_mac = MacAddr(src.config().mac);
    let vifs = [
        (vr.vif("vm6a").index as u16, "vm6a"),
        (vr.vif("vm6b").index as u16, "vm6b"),
    ];
    // The agent: the guest's gratuitous ARP says which vif it is behind now; its /32 follows.
    let announced: Mutex<Vec<(&str, Instant)>> = Mutex::default();
    let stop = AtomicBool::new(false);
    let mut conn = Connection::connect(&agent_sock).expect("connect to pkt0");
    conn.stream()
        .set_read_timeout(Some(Duration::from_millis(100)))
        .expect("timeout");
    let (sent, migrated) = std::thread::scope(|s| {
        s.spawn(|| {
            while !stop.load(Ordering::Relaxed) {
                let Ok(Message::Trap {
                    reason: Reason::Garp,
                    vif,
                    frame,
                    ..
                }) = conn.recv()
                else {
                    continue;
                };
                // The ARP's sender address (Ethernet 14 + ARP 14 bytes in).
                let sender = frame.get(28..32).map(|a| [a[0], a[1], a[2], a[3]]);
                let Some(&(_, name)) = vifs.iter().find(|(i, _)| *i == vif) else {
                    continue;
                };
                if sender == Some(vm_ip.octets()) {
                    vr.route_to(4, name, vm_mac, &[&format!("{vm_ip}/32")]);
                    announced.lock().expect("lock").push((name, Instant::now()));
                }
            }
        });
        let sender = s.spawn(|| pod.tcp_send_paced(vm_ip, 5201, BYTES, PACE));
        // Let the stream get going, so the copy meets it at full speed.
        std::thread::sleep(Duration::from_secs(1));
        let t0 = Instant::now();
        let migrated = src.migrate_to(&mut dst, Duration::from_secs(300));
        // The guest announces itself once it runs at the destination.
        let moved = testkit::wait::poll(
            Duration::from_secs(30),
            || {
                announced
                    .lock()
                    .expect("lock")
                    .iter()
                    .any(|(n, _)| *n == "vm6b")
            },
            |m| *m,
        );
        eprintln!(
            "the guest's GARP from vm6b moved its route {:?} after the migration started",
            announced
                .lock()
                .expect("lock")
                .iter()
                .find(|(n, _)| *n == "vm6b")
                .map(|(_, t)| t.saturating_duration_since(t0))
        );
        let sent = sender.join().expect("sender thread");
        stop.store(true, Ordering::Relaxed);
        (sent, migrated.map(|m| (m, moved.is_ok())))
    });
    let (migration, moved) = migrated.unwrap_or_else(|e| panic!("{e}\n{}", vr.process.outputs()));
    assert!(
        moved,
        "no gratuitous ARP from the guest reached the agent by vm6b: {:?}\n{}",
        announced.lock().expect("lock"),
        dst.console()
    );
    eprintln!(
        "migration took {:?}, downtime {} ms, {} page(s) differ",
        migration.took,
        migration.downtime_ms,
        migration.differing_pages.len()
    );
    // The guest's memory at the destination is the source's, byte for byte: every page
    // vrouterd wrote while QEMU copied was logged and sent again.
    assert!(
        migration.differing_pages.is_empty(),
        "guest pages differ after migration (written by vrouterd, not logged?): {:x?}",
        &migration.differing_pages[..migration.differing_pages.len().min(64)]
    );
    let received = rx.finish(
        &mut dst,
        Duration::from_secs(if sent.is_ok() { 120 } else { 5 }),
    );
    let (sent, received) = match (sent, received) {
        (Ok(s), Ok(r)) => (s, r),
        (s, r) => {
            let (_, netstat) = dst.run("netstat -s; ip -s link show eth0");
            panic!(
                "pod → guest TCP across the migration: sent {s:?}, received {r:?}\n\
                 guest: {netstat}\nguest console:\n{}\nvrouterd:\n{}",
                dst.console(),
                vr.process.outputs()
            )
        }
    };
    assert_eq!(
        sent, received,
        "pod → guest TCP across the migration: data differs"
    );
    eprintln!("pod → guest TCP across the migration: verified, {sent}");
    let (on_src, on_dst) = (
        vr.vif("vm6a").status.counters.tx_bytes,
        vr.vif("vm6b").status.counters.tx_bytes,
    );
    eprintln!("stream bytes to the guest: {on_src} on the source vif, {on_dst} on the destination");
    assert!(
        on_src >= BYTES_EACH_SIDE_MIN && on_dst >= BYTES_EACH_SIDE_MIN,
        "the stream did not run across the migration: {on_src} B on vm6a, {on_dst} B on vm6b"
    );
    let out = vr.process.outputs();
    assert!(
        out.contains("dirty log mapped"),
        "QEMU never gave vrouterd its dirty log:\n{out}"
    );

    dst.wait_until(
        &format!("! kill -0 {ping_pid} 2>/dev/null"),
        Duration::from_secs(120),
    )
    .expect("ping ends");
    let log = dst.check("cat /tmp/ping.log");
    let received: u32 = log
        .lines()
        .find(|l| l.contains("packets received"))
        .and_then(|l| l.split(", ").nth(1))
        .and_then(|r| r.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no summary in the ping log: {log}"));
    let lost = PINGS - received;
    eprintln!("ping across the migration lost {lost} of {PINGS}");
    assert!(
        lost <= PINGS_LOST_MAX,
        "ping lost {lost} of {PINGS} across the migration (at most {PINGS_LOST_MAX}): {log}"
    );

    // The guest works where it landed.
    let (ok, out) = dst.ping(pod.ip, 5);
    assert!(ok, "guest → pod after migration: {out}");
    let out = pod.ping(&vm_ip.to_string(), 5);
    assert!(
        out.contains("5 received"),
        "pod → guest after migration: {out}"
    );
    let t = tcp_pod_to_vm(&pod, &mut dst, 8 << 20).expect("TCP after migration");
    assert!(t.verified(), "TCP after migration: {t:?}");
    let b = vr.vif("vm6b").status.counters;
    eprintln!(
        "vm6a {:?}\nvm6b {b:?}\ntest took {:?}",
        vr.vif("vm6a").status.counters,
        start.elapsed()
    );
    drop(src);
    drop(dst);
    let status = vr.stop();
    assert!(status.success(), "vrouterd exit {status}");
}

#[test]
fn live_migration_between_server_mode_vifs_under_traffic() {
    live_migration_under_traffic(VhostUserMode::Server);
}

#[test]
fn live_migration_between_client_mode_vifs_under_traffic() {
    live_migration_under_traffic(VhostUserMode::Client);
}
