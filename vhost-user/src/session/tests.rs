use super::*;
use crate::codec::{self, decode, Header, RequestCode, FLAG_NEED_REPLY, FLAG_VERSION_1};
use crate::error::Error;
use crate::frontend::{DriverQueue, GuestRam};
use crate::memory::RegionSpec;
use crate::test_support::bufs_of;
use crate::virtqueue::VecBuffer;
use std::os::fd::AsFd;

fn msg(request: impl Into<u32>, need_reply: bool, payload: &[u8], fds: Vec<OwnedFd>) -> Message {
    let flags = FLAG_VERSION_1 | if need_reply { FLAG_NEED_REPLY } else { 0 };
    decode(
        Header {
            request: request.into(),
            flags,
            size: payload.len() as u32,
        },
        payload,
        fds,
    )
    .unwrap()
}

/// Replies in `out`, as (request, payload) pairs.
fn replies(out: &Output) -> Vec<(u32, Vec<u8>)> {
    let mut v = Vec::new();
    let mut b = &out.reply[..];
    while b.len() >= 12 {
        let req = u32::from_le_bytes(b[0..4].try_into().unwrap());
        let size = u32::from_le_bytes(b[8..12].try_into().unwrap()) as usize;
        v.push((req, b[12..12 + size].to_vec()));
        b = &b[12 + size..];
    }
    v
}

/// A reply as [`replies`] lists it.
fn reply(request: RequestCode, payload: Vec<u8>) -> (u32, Vec<u8>) {
    (request.into(), payload)
}

fn send(s: &mut Session, m: Message) -> Output {
    let mut out = Output::default();
    s.handle(m, &mut out);
    out
}

/// Sends a request that asks for no reply, with no fds.
fn tell(s: &mut Session, request: impl Into<u32>, payload: &[u8]) -> Output {
    send(s, msg(request, false, payload, vec![]))
}

fn ack(s: &mut Session, request: impl Into<u32>, payload: &[u8], fds: Vec<OwnedFd>) -> u64 {
    let request = request.into();
    let out = send(s, msg(request, true, payload, fds));
    let r = replies(&out);
    assert_eq!(r.len(), 1, "one REPLY_ACK for request {request}");
    u64::from_le_bytes(r[0].1[..8].try_into().unwrap())
}

fn u64p(v: u64) -> Vec<u8> {
    v.to_le_bytes().to_vec()
}

fn dup(ram: &GuestRam) -> OwnedFd {
    ram.fd().try_clone_to_owned().unwrap()
}

/// A session with features, REPLY_ACK and memory negotiated.
fn negotiated(ram: &GuestRam, features: u64) -> Session {
    let mut s = Session::new(SessionConfig {
        max_queue_pairs: 2,
        ..SessionConfig::default()
    });
    tell(&mut s, RequestCode::SetOwner, &[]);
    tell(&mut s, RequestCode::SetFeatures, &u64p(features));
    tell(
        &mut s,
        RequestCode::SetProtocolFeatures,
        &u64p(OFFERED_PROTOCOL_FEATURES),
    );
    let mt = codec::mem_table_payload(&[ram.region()]);
    assert_eq!(
        ack(&mut s, RequestCode::SetMemTable, &mt, vec![dup(ram)]),
        0
    );
    s
}

/// Configures and enables vring `index`; returns every ready event the sequence produced.
fn start(s: &mut Session, ram: &GuestRam, index: u32, q: &DriverQueue) -> Output {
    let mut all = Output::default();
    for (c, p) in q.start_requests(ram, index) {
        let out = send(s, msg(c, true, &p, vec![]));
        assert_eq!(replies(&out), vec![reply(c, u64p(0))], "{c:?}");
        all.ready.extend(out.ready);
        all.stop.extend(out.stop);
    }
    all
}

/// Everything offered, split rings (the test driver here lays out split rings).
const F: u64 = OFFERED_FEATURES & !feature::RING_PACKED;

#[test]
fn offers_features_protocol_features_and_queue_count() {
    let mut s = Session::new(SessionConfig {
        max_queue_pairs: 3,
        ..SessionConfig::default()
    });
    let get = |s: &mut Session, c| {
        let out = send(s, msg(c, false, &[], vec![]));
        u64::from_le_bytes(replies(&out)[0].1[..8].try_into().unwrap())
    };
    assert_eq!(get(&mut s, RequestCode::GetFeatures), OFFERED_FEATURES);
    assert_eq!(
        get(&mut s, RequestCode::GetProtocolFeatures),
        PF_MQ | PF_LOG_SHMFD | PF_REPLY_ACK | PF_STATUS
    );
    assert_eq!(get(&mut s, RequestCode::GetQueueNum), 3);
    assert_eq!(s.vring_count(), 6);
    for f in [
        feature::VERSION_1,
        feature::MRG_RXBUF,
        F_MQ,
        F_PROTOCOL_FEATURES,
        feature::EVENT_IDX,
        feature::INDIRECT_DESC,
        F_LOG_ALL,
        F_GUEST_ANNOUNCE,
    ] {
        assert_ne!(OFFERED_FEATURES & f, 0);
    }
}

#[test]
fn refused_settings_leave_no_state_behind() {
    let ram = GuestRam::new(1 << 20).unwrap();
    let mut s = negotiated(&ram, F);
    // Unoffered feature bits.
    assert_eq!(
        ack(&mut s, RequestCode::SetFeatures, &u64p(F | 1 << 40), vec![]),
        1
    );
    assert_eq!(s.features(), F);
    // Unknown protocol feature bits.
    assert_eq!(
        ack(
            &mut s,
            RequestCode::SetProtocolFeatures,
            &u64p(1 << 60),
            vec![]
        ),
        1
    );
    assert_eq!(s.protocol_features(), OFFERED_PROTOCOL_FEATURES);
    // Invalid queue sizes.
    for bad in [0u32, 3, 100, 65536] {
        assert_eq!(
            ack(
                &mut s,
                RequestCode::SetVringNum,
                &codec::vring_state_payload(0, bad),
                vec![]
            ),
            1,
            "size {bad}"
        );
        assert_eq!(s.vring(0).unwrap().size, None);
    }
    assert_eq!(
        ack(
            &mut s,
            RequestCode::SetVringNum,
            &codec::vring_state_payload(0, 256),
            vec![]
        ),
        0
    );
    assert_eq!(
        ack(
            &mut s,
            RequestCode::SetVringNum,
            &codec::vring_state_payload(0, 300),
            vec![]
        ),
        1
    );
    assert_eq!(
        s.vring(0).unwrap().size,
        Some(256),
        "the earlier valid size stays"
    );
    // Vring indexes beyond the device.
    assert_eq!(
        ack(
            &mut s,
            RequestCode::SetVringNum,
            &codec::vring_state_payload(4, 256),
            vec![]
        ),
        1
    );
    assert_eq!(
        ack(
            &mut s,
            RequestCode::SetVringEnable,
            &codec::vring_state_payload(0, 7),
            vec![]
        ),
        1
    );
    assert_eq!(
        ack(
            &mut s,
            RequestCode::SetVringBase,
            &codec::vring_state_payload(0, 70000),
            vec![]
        ),
        1
    );
    assert_eq!(s.vring(0).unwrap().base, 0);
    // A memory table whose file is too small keeps the old table.
    let small = GuestRam::new(4096).unwrap();
    let lie = RegionSpec {
        memory_size: 1 << 30,
        ..small.region()
    };
    assert_eq!(
        ack(
            &mut s,
            RequestCode::SetMemTable,
            &codec::mem_table_payload(&[lie]),
            vec![dup(&small)]
        ),
        1
    );
    assert!(s.has_memory());
    // Misaligned ring addresses.
    let a = VringAddr {
        index: 0,
        desc: 0x1001,
        ..Default::default()
    };
    assert_eq!(
        ack(
            &mut s,
            RequestCode::SetVringAddr,
            &codec::vring_addr_payload(&a),
            vec![]
        ),
        1
    );
    // Unknown requests.
    assert_eq!(ack(&mut s, 77u32, &[1, 2, 3], vec![]), 1);
}

#[test]
fn overlapping_regions_are_refused() {
    let ram = GuestRam::new(1 << 20).unwrap();
    let mut s = negotiated(&ram, F);
    let r = ram.region();
    let r2 = RegionSpec {
        guest_phys_addr: r.guest_phys_addr + 4096,
        userspace_addr: r.userspace_addr + (1 << 30),
        ..r
    };
    let p = codec::mem_table_payload(&[r, r2]);
    assert_eq!(
        ack(
            &mut s,
            RequestCode::SetMemTable,
            &p,
            vec![dup(&ram), dup(&ram)]
        ),
        1
    );
}

#[test]
fn queue_becomes_ready_only_when_fully_configured_and_enabled() {
    let mut ram = GuestRam::new(1 << 20).unwrap();
    let q = DriverQueue::new(&mut ram, 64, 2048);
    let mut s = negotiated(&ram, F);
    // Out of order: kick first, then the rest; ring does not start until it is enabled.
    assert_eq!(
        ack(
            &mut s,
            RequestCode::SetVringKick,
            &u64p(1 | codec::VRING_NOFD_MASK),
            vec![]
        ),
        0
    );
    assert_eq!(
        ack(
            &mut s,
            RequestCode::SetVringAddr,
            &codec::vring_addr_payload(&q.addr(&ram, 1)),
            vec![]
        ),
        0
    );
    let out = tell(
        &mut s,
        RequestCode::SetVringNum,
        &codec::vring_state_payload(1, 64),
    );
    assert!(out.ready.is_empty(), "not enabled yet");
    assert!(s.take_queue(1).is_err());
    let out = tell(
        &mut s,
        RequestCode::SetVringEnable,
        &codec::vring_state_payload(1, 1),
    );
    assert_eq!(out.ready, vec![1]);
    let vq = s.take_queue(1).unwrap();
    assert!(s.vring(1).unwrap().lent);
    assert!(s.take_queue(1).is_err(), "cannot be lent twice");
    drop(vq);
}

#[test]
fn ring_messages_before_the_memory_table_wait_for_it() {
    let mut ram = GuestRam::new(1 << 20).unwrap();
    let q = DriverQueue::new(&mut ram, 64, 2048);
    let mut s = Session::new(SessionConfig::default());
    // GET_VRING_BASE for a ring nobody configured: answered, nothing created.
    let out = tell(
        &mut s,
        RequestCode::GetVringBase,
        &codec::vring_state_payload(3, 0),
    );
    assert_eq!(
        replies(&out),
        vec![reply(
            RequestCode::GetVringBase,
            codec::vring_state_payload(3, 0)
        )]
    );
    let out = tell(
        &mut s,
        RequestCode::GetVringBase,
        &codec::vring_state_payload(99, 0),
    );
    assert_eq!(
        replies(&out).len(),
        1,
        "even a ring that does not exist gets its reply"
    );
    tell(&mut s, RequestCode::SetFeatures, &u64p(F));
    let mut ready = Vec::new();
    for (c, p) in [
        (RequestCode::SetVringKick, u64p(codec::VRING_NOFD_MASK)),
        (
            RequestCode::SetVringEnable,
            codec::vring_state_payload(0, 1),
        ),
        (
            RequestCode::SetVringAddr,
            codec::vring_addr_payload(&q.addr(&ram, 0)),
        ),
        (RequestCode::SetVringNum, codec::vring_state_payload(0, 64)),
    ] {
        ready.extend(tell(&mut s, c, &p).ready);
    }
    assert!(ready.is_empty(), "no memory yet");
    assert!(s.take_queue(0).is_err());
    let out = send(
        &mut s,
        msg(
            RequestCode::SetMemTable,
            false,
            &codec::mem_table_payload(&[ram.region()]),
            vec![dup(&ram)],
        ),
    );
    assert_eq!(out.ready, vec![0]);
    assert!(s.take_queue(0).is_ok());
}

#[test]
fn without_protocol_features_rings_start_enabled() {
    let mut ram = GuestRam::new(1 << 20).unwrap();
    let q = DriverQueue::new(&mut ram, 64, 2048);
    let mut s = Session::new(SessionConfig::default());
    tell(&mut s, RequestCode::SetFeatures, &u64p(feature::VERSION_1));
    send(
        &mut s,
        msg(
            RequestCode::SetMemTable,
            false,
            &codec::mem_table_payload(&[ram.region()]),
            vec![dup(&ram)],
        ),
    );
    let mut ready = Vec::new();
    for (c, p) in [
        (RequestCode::SetVringNum, codec::vring_state_payload(0, 64)),
        (
            RequestCode::SetVringAddr,
            codec::vring_addr_payload(&q.addr(&ram, 0)),
        ),
        (RequestCode::SetVringKick, u64p(codec::VRING_NOFD_MASK)),
    ] {
        let out = tell(&mut s, c, &p);
        assert!(
            out.reply.is_empty(),
            "no REPLY_ACK without the protocol feature"
        );
        ready.extend(out.ready);
    }
    assert_eq!(ready, vec![0]);
}

#[test]
fn get_vring_base_on_a_lent_ring_waits_for_the_data_path_and_reports_its_position() {
    let mut ram = GuestRam::new(1 << 20).unwrap();
    let mut dq = DriverQueue::new(&mut ram, 64, 2048);
    let mut s = negotiated(&ram, F);
    assert_eq!(start(&mut s, &ram, 1, &dq).ready, vec![1]);
    let mut vq = s.take_queue(1).unwrap();
    for _ in 0..5 {
        assert!(dq.add_tx(&mut ram, 12, &[7u8; 60], 2048, false));
    }
    let mut bufs = bufs_of(8, 2048);
    assert_eq!(vq.dequeue_burst(&mut bufs), 5);
    assert_eq!(bufs[4].data(), &[7u8; 60]);

    let out = tell(
        &mut s,
        RequestCode::GetVringBase,
        &codec::vring_state_payload(1, 0),
    );
    assert_eq!(out.stop, vec![1]);
    assert!(out.reply.is_empty(), "reply held until the ring is back");
    assert!(s.is_blocked());
    let mut out = Output::default();
    s.return_queue(vq, &mut out);
    assert!(!s.is_blocked());
    let r = replies(&out);
    assert_eq!(
        r,
        vec![reply(
            RequestCode::GetVringBase,
            codec::vring_state_payload(1, 5)
        )]
    );
    let v = s.vring(1).unwrap();
    assert!(!v.started && !v.lent, "GET_VRING_BASE stops the ring");
    assert!(out.ready.is_empty());
}

#[test]
fn new_memory_table_while_rings_run_takes_them_back_first_and_restarts_them() {
    let mut ram = GuestRam::new(1 << 20).unwrap();
    let dq = DriverQueue::new(&mut ram, 64, 2048);
    let mut s = negotiated(&ram, F);
    start(&mut s, &ram, 0, &dq);
    let vq = s.take_queue(0).unwrap();
    let out = send(
        &mut s,
        msg(
            RequestCode::SetMemTable,
            true,
            &codec::mem_table_payload(&[ram.region()]),
            vec![dup(&ram)],
        ),
    );
    assert_eq!(out.stop, vec![0]);
    let mut out = Output::default();
    s.return_queue(vq, &mut out);
    assert_eq!(
        replies(&out),
        vec![reply(RequestCode::SetMemTable, u64p(0))]
    );
    assert_eq!(out.ready, vec![0], "ring restarts over the new table");
}

#[test]
fn rings_outside_mapped_memory_are_refused_at_start() {
    let mut ram = GuestRam::new(1 << 20).unwrap();
    let dq = DriverQueue::new(&mut ram, 64, 2048);
    let mut s = negotiated(&ram, F);
    let mut a = dq.addr(&ram, 0);
    a.used = 0x1000; // not in the table
    for (c, p) in [
        (RequestCode::SetVringNum, codec::vring_state_payload(0, 64)),
        (RequestCode::SetVringAddr, codec::vring_addr_payload(&a)),
        (RequestCode::SetVringKick, u64p(codec::VRING_NOFD_MASK)),
        (
            RequestCode::SetVringEnable,
            codec::vring_state_payload(0, 1),
        ),
    ] {
        assert_eq!(ack(&mut s, c, &p, vec![]), 0);
    }
    let e = s.take_queue(0).unwrap_err();
    assert!(matches!(e, Error::Memory(_)), "{e}");
    assert!(s.vring(0).unwrap().failed);
    // A ring straddling the end of memory is refused too.
    let mut a = dq.addr(&ram, 0);
    a.desc = ram.uva(crate::frontend::GPA_BASE + (1 << 20) - 16 * 8);
    assert_eq!(
        ack(
            &mut s,
            RequestCode::SetVringAddr,
            &codec::vring_addr_payload(&a),
            vec![]
        ),
        0
    );
    assert!(s.take_queue(0).is_err());
}

#[test]
fn broken_queue_returned_signals_the_err_eventfd_and_stays_down_until_reconfigured() {
    let mut ram = GuestRam::new(1 << 20).unwrap();
    let mut dq = DriverQueue::new(&mut ram, 8, 2048);
    let mut s = negotiated(&ram, F);
    let err = rustix::event::eventfd(0, rustix::event::EventfdFlags::NONBLOCK).unwrap();
    assert_eq!(
        ack(
            &mut s,
            RequestCode::SetVringErr,
            &u64p(1),
            vec![err.try_clone().unwrap()]
        ),
        0
    );
    start(&mut s, &ram, 1, &dq);
    let mut vq = s.take_queue(1).unwrap();
    dq.set_avail_idx(&ram, 100);
    assert_eq!(vq.dequeue_burst(&mut [VecBuffer::with_capacity(64)]), 0);
    assert!(vq.broken().is_some());
    let mut out = Output::default();
    s.return_queue(vq, &mut out);
    assert!(out.ready.is_empty());
    assert!(s.vring(1).unwrap().failed);
    let mut b = [0u8; 8];
    assert_eq!(
        rustix::io::read(&err, &mut b).unwrap(),
        8,
        "error eventfd signalled"
    );
    // Reconfiguring the ring brings it back.
    dq.set_avail_idx(&ram, 0);
    assert_eq!(start(&mut s, &ram, 1, &dq).ready, vec![1]);
}

#[test]
fn reset_and_status_zero_drop_rings_and_memory() {
    let mut ram = GuestRam::new(1 << 20).unwrap();
    let dq = DriverQueue::new(&mut ram, 64, 2048);
    let mut s = negotiated(&ram, F);
    start(&mut s, &ram, 0, &dq);
    assert_eq!(ack(&mut s, RequestCode::SetStatus, &u64p(0x0f), vec![]), 0);
    let out = tell(&mut s, RequestCode::GetStatus, &[]);
    assert_eq!(replies(&out)[0].1, u64p(0x0f));
    let vq = s.take_queue(0).unwrap();
    let out = tell(&mut s, RequestCode::SetStatus, &u64p(0));
    assert_eq!(out.stop, vec![0]);
    let mut out = Output::default();
    s.return_queue(vq, &mut out);
    assert!(!s.has_memory());
    assert_eq!(s.vring(0).unwrap().size, None);
    assert_eq!(s.status(), 0);
    assert_eq!(ack(&mut s, RequestCode::ResetOwner, &[], vec![]), 0);
}

#[test]
fn get_config_reports_the_net_config_space_and_refuses_out_of_range() {
    let cfg = SessionConfig {
        mac: [2, 0, 0, 0, 0, 9],
        mtu: 9000,
        max_queue_pairs: 2,
        ..SessionConfig::default()
    };
    let mut s = Session::new(cfg);
    let p = [0u32.to_le_bytes(), 12u32.to_le_bytes(), 0u32.to_le_bytes()].concat();
    let p = [p, vec![0; 12]].concat();
    let out = tell(&mut s, RequestCode::GetConfig, &p);
    let r = &replies(&out)[0].1;
    assert_eq!(&r[12..18], &[2, 0, 0, 0, 0, 9]);
    assert_eq!(u16::from_le_bytes([r[20], r[21]]), 2);
    assert_eq!(u16::from_le_bytes([r[22], r[23]]), 9000);
    let p = [
        250u32.to_le_bytes(),
        12u32.to_le_bytes(),
        0u32.to_le_bytes(),
    ]
    .concat();
    let p = [p, vec![0; 12]].concat();
    let out = tell(&mut s, RequestCode::GetConfig, &p);
    assert_eq!(
        replies(&out)[0].1.len(),
        12,
        "failure: empty config payload"
    );
}

#[test]
fn call_fd_change_on_a_running_ring_goes_through_the_handshake() {
    let mut ram = GuestRam::new(1 << 20).unwrap();
    let dq = DriverQueue::new(&mut ram, 64, 2048);
    let mut s = negotiated(&ram, F);
    start(&mut s, &ram, 0, &dq);
    let vq = s.take_queue(0).unwrap();
    let call = rustix::event::eventfd(0, rustix::event::EventfdFlags::empty()).unwrap();
    let out = send(
        &mut s,
        msg(RequestCode::SetVringCall, true, &u64p(0), vec![call]),
    );
    assert_eq!(out.stop, vec![0]);
    // The session refuses to take more messages meanwhile.
    let out = send(&mut s, msg(RequestCode::SetOwner, true, &[], vec![]));
    assert_eq!(replies(&out), vec![reply(RequestCode::SetOwner, u64p(1))]);
    let mut out = Output::default();
    s.return_queue(vq, &mut out);
    assert_eq!(
        replies(&out),
        vec![reply(RequestCode::SetVringCall, u64p(0))]
    );
    assert_eq!(out.ready, vec![0]);
    let _ = ram.fd().as_fd();
}

/// A memfd holding a zeroed dirty log of `len` bytes.
fn log_fd(len: u64) -> OwnedFd {
    let fd = rustix::fs::memfd_create("log", rustix::fs::MemfdFlags::CLOEXEC).unwrap();
    rustix::fs::ftruncate(&fd, len).unwrap();
    fd
}

fn log_base(size: u64, offset: u64) -> Vec<u8> {
    codec::log_base_payload(&codec::LogArea { size, offset })
}

/// Bytes of log covering the test RAM (which lies at `GPA_BASE`, 1 MiB of it).
const LOG_BYTES: u64 = (crate::frontend::GPA_BASE + (1 << 20)) / 4096 / 8;

/// Guest pages (absolute page numbers) whose bytes differ between two snapshots of the RAM.
fn changed_pages(before: &[u8], after: &[u8]) -> Vec<u64> {
    before
        .chunks(4096)
        .zip(after.chunks(4096))
        .enumerate()
        .filter(|(_, (a, b))| a != b)
        .map(|(i, _)| crate::frontend::GPA_BASE / 4096 + i as u64)
        .collect()
}

/// Dirty pages of the log over the whole test RAM.
fn dirty(log: &DirtyLog) -> Vec<u64> {
    let first = crate::frontend::GPA_BASE / 4096;
    (first..first + 256).filter(|&p| log.is_dirty(p)).collect()
}

#[test]
fn set_log_base_maps_the_log_and_replies_once_without_payload() {
    let ram = GuestRam::new(1 << 20).unwrap();
    let mut s = negotiated(&ram, F);
    // NEED_REPLY set as well: still exactly one reply, the SET_LOG_BASE answer QEMU waits for.
    let out = send(
        &mut s,
        msg(
            RequestCode::SetLogBase,
            true,
            &log_base(32, 0),
            vec![log_fd(4096)],
        ),
    );
    assert_eq!(replies(&out), vec![reply(RequestCode::SetLogBase, vec![])]);
    assert!(out.close.is_none());
    assert_eq!(s.dirty_log().map(|l| l.size()), Some(32));
    assert!(s.logging(), "LOG_ALL negotiated and a log set");
    // SET_LOG_FD: kept, acked.
    assert_eq!(ack(&mut s, RequestCode::SetLogFd, &[], vec![log_fd(8)]), 0);
}

#[test]
fn unusable_logs_drop_the_frontend_instead_of_replying() {
    let ram = GuestRam::new(1 << 20).unwrap();
    for (size, offset, file) in [
        (0, 0, 4096),
        (4096, 1, 4096),
        (16, 8192, 4096),
        (16, u64::MAX, 4096),
    ] {
        let mut s = negotiated(&ram, F);
        let out = send(
            &mut s,
            msg(
                RequestCode::SetLogBase,
                true,
                &log_base(size, offset),
                vec![log_fd(file)],
            ),
        );
        assert!(
            out.reply.is_empty(),
            "{size}@{offset}: no reply that looks like success"
        );
        assert!(out.close.is_some(), "{size}@{offset}: frontend dropped");
        assert!(s.dirty_log().is_none());
    }
    // Without LOG_SHMFD negotiated the log cannot be shared memory: dropped too.
    let mut s = negotiated(&ram, F);
    tell(
        &mut s,
        RequestCode::SetProtocolFeatures,
        &u64p(PF_REPLY_ACK),
    );
    let out = send(
        &mut s,
        msg(
            RequestCode::SetLogBase,
            false,
            &log_base(32, 0),
            vec![log_fd(4096)],
        ),
    );
    assert!(out.close.is_some() && out.reply.is_empty());
}

#[test]
fn every_page_written_is_logged_while_log_all_is_on_and_none_when_off() {
    const LOG_AT: u64 = crate::frontend::GPA_BASE + 0xF_0000;
    let mut ram = GuestRam::new(1 << 20).unwrap();
    let mut rx = DriverQueue::new(&mut ram, 64, 2048);
    let mut tx = DriverQueue::new(&mut ram, 64, 2048);
    let mut s = negotiated(&ram, F & !F_LOG_ALL);
    start(&mut s, &ram, 0, &rx);
    start(&mut s, &ram, 1, &tx);
    let out = send(
        &mut s,
        msg(
            RequestCode::SetLogBase,
            false,
            &log_base(LOG_BYTES, 0),
            vec![log_fd(LOG_BYTES)],
        ),
    );
    assert_eq!(replies(&out), vec![reply(RequestCode::SetLogBase, vec![])]);
    let log = Arc::clone(s.dirty_log().unwrap());
    let mut q0 = s.take_queue(0).unwrap();
    let mut q1 = s.take_queue(1).unwrap();
    let frame = |n: u8| vec![n; 1500];

    // Logging off: traffic both ways writes guest memory and logs nothing.
    for _ in 0..8 {
        assert!(rx.add_rx(&ram, 1, 2048));
        assert!(tx.add_tx(&mut ram, 12, &frame(1), 2048, false));
    }
    let mut bufs = bufs_of(8, 2048);
    assert_eq!(q1.dequeue_burst(&mut bufs), 8);
    assert_eq!(q0.enqueue_burst(&bufs[..4]), 4);
    assert_eq!(rx.receive(&ram, 12, true).len(), 4);
    assert_eq!(dirty(&log), Vec::<u64>::new());

    // QEMU starts migrating: LOG_ALL on (both rings come back and go out again), then the
    // used rings' log addresses (vring 0 logs its used ring at another page on purpose).
    let out = tell(&mut s, RequestCode::SetFeatures, &u64p(F));
    let mut stop = out.stop.clone();
    stop.sort_unstable();
    assert_eq!(stop, vec![0, 1]);
    let mut out = Output::default();
    s.return_queue(q0, &mut out);
    s.return_queue(q1, &mut out);
    assert!(s.logging());
    for (i, q) in [(0u32, &rx), (1, &tx)] {
        let mut a = q.addr(&ram, i);
        a.flags = codec::VRING_F_LOG;
        a.log = if i == 0 { LOG_AT } else { tx.used };
        let out = tell(
            &mut s,
            RequestCode::SetVringAddr,
            &codec::vring_addr_payload(&a),
        );
        assert!(out.stop.is_empty(), "not lent: applied at once");
    }
    let mut q0 = s.take_queue(0).unwrap();
    let mut q1 = s.take_queue(1).unwrap();

    // Mergeable RX: a 1500-byte frame spreads over three 600-byte buffers.
    for _ in 0..6 {
        assert!(rx.add_rx(&ram, 1, 600));
        assert!(tx.add_tx(&mut ram, 12, &frame(2), 2048, false));
    }
    let before = ram.read(crate::frontend::GPA_BASE, 1 << 20);
    assert_eq!(q1.dequeue_burst(&mut bufs), 6);
    assert_eq!(q0.enqueue_burst(&bufs[..2]), 2);
    let after = ram.read(crate::frontend::GPA_BASE, 1 << 20);
    let written = changed_pages(&before, &after);
    // RX buffers over several pages, and both used rings.
    assert!(written.len() >= 3, "{written:?}");
    for p in &written {
        // The RX used ring is logged at its log address instead of where it lies.
        if *p != rx.used / 4096 {
            assert!(log.is_dirty(*p), "page {p} written but not logged");
        }
    }
    assert!(
        log.is_dirty(LOG_AT / 4096),
        "RX used ring logged at its log address"
    );
    assert!(log.is_dirty(tx.used / 4096), "TX used ring logged");
    assert_eq!(
        rx.receive(&ram, 12, true),
        vec![frame(2), frame(2)],
        "data intact"
    );
    drop((q0, q1));
}

#[test]
fn set_log_base_while_rings_run_takes_them_back_and_lends_them_with_the_new_log() {
    let mut ram = GuestRam::new(1 << 20).unwrap();
    let mut rx = DriverQueue::new(&mut ram, 64, 2048);
    let mut s = negotiated(&ram, F);
    start(&mut s, &ram, 0, &rx);
    let q0 = s.take_queue(0).unwrap();
    let out = send(
        &mut s,
        msg(
            RequestCode::SetLogBase,
            false,
            &log_base(LOG_BYTES, 0),
            vec![log_fd(LOG_BYTES)],
        ),
    );
    assert_eq!(out.stop, vec![0]);
    assert!(out.reply.is_empty(), "answered once the ring is back");
    let mut out = Output::default();
    s.return_queue(q0, &mut out);
    assert_eq!(replies(&out), vec![reply(RequestCode::SetLogBase, vec![])]);
    assert_eq!(out.ready, vec![0]);
    let mut q0 = s.take_queue(0).unwrap();
    let log = Arc::clone(s.dirty_log().unwrap());
    assert!(rx.add_rx(&ram, 1, 2048));
    let b = VecBuffer::from_frame(&[3u8; 100]);
    assert_eq!(q0.enqueue_burst(std::slice::from_ref(&b)), 1);
    assert!(
        log.is_dirty(rx.used / 4096),
        "the relent ring logs into the new log"
    );
}

#[test]
fn a_vring_taken_while_a_message_waits_for_the_others_is_asked_back_too() {
    // The driver handles a batch of events in order: vring 1 became ready, then SET_LOG_BASE
    // asked for the lent vring 0. It takes vring 1 before returning vring 0; the held message
    // needs vring 1 back as well, and must say so, or the frontend waits forever.
    let mut ram = GuestRam::new(1 << 20).unwrap();
    let rx = DriverQueue::new(&mut ram, 64, 2048);
    let tx = DriverQueue::new(&mut ram, 64, 2048);
    let mut s = negotiated(&ram, F);
    start(&mut s, &ram, 0, &rx);
    let q0 = s.take_queue(0).unwrap();
    assert_eq!(start(&mut s, &ram, 1, &tx).ready, vec![1]);
    let out = send(
        &mut s,
        msg(
            RequestCode::SetLogBase,
            false,
            &log_base(LOG_BYTES, 0),
            vec![log_fd(LOG_BYTES)],
        ),
    );
    assert_eq!(out.stop, vec![0]);
    let q1 = s.take_queue(1).unwrap();
    let mut out = Output::default();
    s.return_queue(q0, &mut out);
    assert_eq!(out.stop, vec![1], "vring 1 asked back");
    assert!(out.reply.is_empty() && s.is_blocked());
    let mut out = Output::default();
    s.return_queue(q1, &mut out);
    assert_eq!(replies(&out), vec![reply(RequestCode::SetLogBase, vec![])]);
    let mut ready = out.ready.clone();
    ready.sort_unstable();
    assert_eq!(ready, vec![0, 1]);
}

#[test]
fn packed_rings_are_built_packed_and_carry_their_wrap_counter_through_vring_base() {
    use crate::frontend::PackedDriver;
    let mut ram = GuestRam::new(1 << 20).unwrap();
    let mut d = PackedDriver::new(&mut ram, 8, 2048);
    let mut s = negotiated(&ram, OFFERED_FEATURES);
    assert_ne!(
        s.features() & feature::RING_PACKED,
        0,
        "packed rings are offered"
    );
    // QEMU sends the used position in bits 16-31; DPDK virtio-user only bit 15.
    for (c, p) in [
        (RequestCode::SetVringNum, codec::vring_state_payload(1, 8)),
        (
            RequestCode::SetVringBase,
            codec::vring_state_payload(1, 0x8000_8000),
        ),
        (
            RequestCode::SetVringAddr,
            codec::vring_addr_payload(&d.addr(&ram, 1)),
        ),
        (RequestCode::SetVringKick, u64p(1 | codec::VRING_NOFD_MASK)),
        (
            RequestCode::SetVringEnable,
            codec::vring_state_payload(1, 1),
        ),
    ] {
        let out = send(&mut s, msg(c, true, &p, vec![]));
        assert_eq!(replies(&out), vec![reply(c, u64p(0))], "{c:?}");
    }
    let mut vq = s.take_queue(1).unwrap();
    assert!(vq.is_packed());
    let mut bufs = bufs_of(8, 2048);
    // Eleven frames: one lap and three slots, the wrap counter now 0.
    for i in 0..11u8 {
        assert!(d.add_tx(&mut ram, 12, &[i; 60], 2048, false));
        assert_eq!(vq.dequeue_burst(&mut bufs), 1);
        assert_eq!(bufs[0].data(), &[i; 60]);
        d.reap(&ram);
    }
    let out = tell(
        &mut s,
        RequestCode::GetVringBase,
        &codec::vring_state_payload(1, 0),
    );
    assert_eq!(out.stop, vec![1]);
    let mut out = Output::default();
    s.return_queue(vq, &mut out);
    let r = replies(&out);
    assert_eq!(r.len(), 1);
    let mut want = 1u32.to_le_bytes().to_vec();
    want.extend_from_slice(&(3u32 | 3 << 16).to_le_bytes());
    assert_eq!(
        r[0],
        reply(RequestCode::GetVringBase, want),
        "slot 3, wrap 0, for avail (bits 0-15) and used (bits 16-31)"
    );
}
