//! Checksum and segmentation offloads between vhost-user guests through the real vrouterd: a
//! guest that negotiated them sends 60 KB TSO packets and partial checksums; a guest that took
//! TSO and GUEST_CSUM gets them whole, with the header that says what to finish; a guest that
//! negotiated no offload (as a DPDK pod with its defaults) gets MSS-sized segments with complete
//! checksums, which etherparse checks, and the payload intact.

use std::path::PathBuf;

use control_api::api::{MacAddr, VhostUserMode};
use etherparse::{NetHeaders, PacketBuilder, PacketHeaders, TransportHeader};
use testkit::frontend_pod::{FrontendPod, Memory};
use testkit::vrouterd::{vhost_user_vif as vhost_vif, Vrouterd};
use testkit::wait;
use vhost_user::net_hdr::{self, NetHdr};
use vhost_user::session::OFFERED_FEATURES;

const MAC_A: MacAddr = MacAddr([0x02, 0, 0, 0, 0x0a, 0x01]);
const MAC_B: MacAddr = MacAddr([0x02, 0, 0, 0, 0x0b, 0x01]);
const MAC_C: MacAddr = MacAddr([0x02, 0, 0, 0, 0x0c, 0x01]);
const A: [u8; 4] = [198, 18, 1, 2];
const B: [u8; 4] = [198, 18, 2, 2];
const C: [u8; 4] = [198, 18, 3, 2];
const A6: [u8; 16] = [0x20, 1, 0xd, 0xb8, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2];
const B6: [u8; 16] = [0x20, 1, 0xd, 0xb8, 0, 2, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2];

fn vrouterd_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_vrouterd"))
}

/// A TCP frame from pod A to `dst` (IPv4 or IPv6) with `payload`, its checksum field holding
/// the pseudo-header sum as a guest with checksum offload writes it; and the header saying so
/// (TSO with `mss` when the payload is larger than it).
fn guest_tcp(
    dst4: Option<[u8; 4]>,
    dst6: Option<[u8; 16]>,
    payload: &[u8],
    mss: u16,
) -> (NetHdr, Vec<u8>) {
    let eth = PacketBuilder::ethernet2(MAC_A.0, MacAddr::VROUTER_DEFAULT.0);
    let mut f = Vec::new();
    let (l4, v6) = match (dst4, dst6) {
        (Some(d), _) => {
            eth.ipv4(A, d, 64)
                .tcp(40000, 5201, 1, 64000)
                .ack(1)
                .psh()
                .write(&mut f, payload)
                .unwrap();
            (34usize, false)
        }
        (None, Some(d)) => {
            eth.ipv6(A6, d, 64)
                .tcp(40000, 5201, 1, 64000)
                .ack(1)
                .psh()
                .write(&mut f, payload)
                .unwrap();
            (54, true)
        }
        _ => unreachable!(),
    };
    let len = f.len() - l4;
    let sum = if v6 {
        ones(&f[22..54]) + 6 + len as u32
    } else {
        ones(&f[26..34]) + 6 + len as u32
    };
    f[l4 + 16..l4 + 18].copy_from_slice(&fold(sum).to_be_bytes());
    let mut h = NetHdr {
        flags: net_hdr::FLAG_NEEDS_CSUM,
        csum_start: l4 as u16,
        csum_offset: 16,
        ..NetHdr::NONE
    };
    if payload.len() > usize::from(mss) {
        h.gso_type = if v6 {
            net_hdr::gso::TCPV6
        } else {
            net_hdr::gso::TCPV4
        };
        h.gso_size = mss;
        h.hdr_len = (l4 + 20) as u16;
    }
    (h, f)
}

fn ones(b: &[u8]) -> u32 {
    b.chunks(2)
        .map(|c| u32::from(u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)])))
        .sum()
}

fn fold(mut s: u32) -> u16 {
    while s > 0xffff {
        s = (s & 0xffff) + (s >> 16);
    }
    s as u16
}

/// The TCP payload of a frame whose IP and TCP checksums etherparse finds right.
fn checked_payload(frame: &[u8]) -> Vec<u8> {
    let h = PacketHeaders::from_ethernet_slice(frame).unwrap();
    let payload = h.payload.slice().to_vec();
    match (h.net.unwrap(), h.transport.unwrap()) {
        (NetHeaders::Ipv4(ip, _), TransportHeader::Tcp(t)) => {
            assert_eq!(ip.header_checksum, ip.calc_header_checksum());
            assert_eq!(
                t.checksum,
                t.calc_checksum_ipv4(&ip, &payload).unwrap(),
                "TCP checksum"
            );
        }
        (NetHeaders::Ipv6(ip, _), TransportHeader::Tcp(t)) => {
            assert_eq!(
                t.checksum,
                t.calc_checksum_ipv6(&ip, &payload).unwrap(),
                "TCP checksum"
            );
        }
        other => panic!("{other:?}"),
    }
    payload
}

/// Waits for `n` frames at `pod`.
fn receive_n(pod: &mut FrontendPod, n: usize, what: &str) -> Vec<(NetHdr, Vec<u8>)> {
    let mut got = Vec::new();
    let counted = wait::until(
        &format!("{what}: {n} frames arrive"),
        wait::DEADLINE,
        || {
            got.extend(pod.receive_with_hdr());
            got.len()
        },
        |&len| len >= n,
    );
    assert_eq!(counted, n, "{what}: no more than {n}");
    got
}

#[test]
fn guests_get_tso_packets_whole_or_cut_by_what_they_negotiated() {
    let vr = Vrouterd::start(&vrouterd_bin(), &[], &[]);
    let base = vr.socket_base();
    vr.api(|c| async move { c.vrf_add(1).await })
        .expect("vrf 1");
    let mut socks = Vec::new();
    for (id, name, mac, p4, p6) in [
        (1, "podA", MAC_A, "198.18.1.2/32", "2001:db8:1::2/128"),
        (2, "podB", MAC_B, "198.18.2.2/32", "2001:db8:2::2/128"),
        (3, "podC", MAC_C, "198.18.3.2/32", "2001:db8:3::2/128"),
    ] {
        let dir = base.join(name);
        let v = vhost_vif(name, mac, &dir, "net0", VhostUserMode::Server);
        vr.add_vif(&v);
        vr.route_to(id, name, mac, &[p4, p6]);
        socks.push(dir.join("net0"));
    }
    // A and C negotiate every offload vrouterd offers; B none (a DPDK pod's defaults).
    let mut a = FrontendPod::connect(&socks[0], Memory::Memfd).expect("pod A");
    let no_offloads = OFFERED_FEATURES & !net_hdr::OFFLOAD_FEATURES;
    let mut b = FrontendPod::connect_with(&socks[1], Memory::Memfd, no_offloads).expect("pod B");
    let mut c = FrontendPod::connect(&socks[2], Memory::Memfd).expect("pod C");
    for n in ["podA", "podB", "podC"] {
        let v = vr.wait_connected(n);
        eprintln!("{n} negotiated {:#x}", v.status.features.unwrap_or(0));
    }
    let payload: Vec<u8> = (0..60_000u32).map(|i| (i * 7 % 251) as u8).collect();

    // 60 KB TSO to B, which takes nothing: 42 segments of 1448 bytes, checksums complete.
    let (h, f) = guest_tcp(Some(B), None, &payload, 1448);
    assert!(a.send_with_hdr(h, &f));
    let got = receive_n(&mut b, 60_000usize.div_ceil(1448), "B's segments");
    let mut joined = Vec::new();
    for (hdr, frame) in &got {
        assert!(hdr.is_none(), "B negotiated no offload: {hdr:?}");
        assert!(frame.len() <= 14 + 1500, "each segment fits the MTU");
        joined.extend(checked_payload(frame));
    }
    assert_eq!(joined, payload, "B: the payload, whole and in order");

    // The same to C, which took TSO and GUEST_CSUM: one packet, header as A sent it.
    let (h, f) = guest_tcp(Some(C), None, &payload, 1448);
    assert!(a.send_with_hdr(h, &f));
    let got = receive_n(&mut c, 1, "C's TSO packet");
    let (hdr, frame) = &got[0];
    assert_eq!(
        hdr.flags & net_hdr::FLAG_NEEDS_CSUM,
        net_hdr::FLAG_NEEDS_CSUM
    );
    assert_eq!((hdr.gso_type, hdr.gso_size), (net_hdr::gso::TCPV4, 1448));
    assert_eq!((hdr.csum_start, hdr.csum_offset), (34, 16));
    assert_eq!(frame.len(), f.len());
    assert_eq!(&frame[54..], &f[54..], "the TCP payload untouched");
    assert_eq!(frame[22], 63, "routed: TTL decremented");

    // IPv6 TSO to B: cut as well.
    let (h, f) = guest_tcp(None, Some(B6), &payload[..30_000], 1428);
    assert!(a.send_with_hdr(h, &f));
    let got = receive_n(&mut b, 30_000usize.div_ceil(1428), "B's IPv6 segments");
    let joined: Vec<u8> = got.iter().flat_map(|(_, f)| checked_payload(f)).collect();
    assert_eq!(joined, &payload[..30_000]);

    // A small packet with only a partial checksum: completed for B, passed on to C.
    let (h, f) = guest_tcp(Some(B), None, b"hello", 1448);
    assert!(a.send_with_hdr(h, &f));
    let got = receive_n(&mut b, 1, "B's small packet");
    assert_eq!(checked_payload(&got[0].1), b"hello");
    let (h, f) = guest_tcp(Some(C), None, b"hello", 1448);
    assert!(a.send_with_hdr(h, &f));
    let got = receive_n(&mut c, 1, "C's small packet");
    assert_eq!(
        got[0].0.flags,
        net_hdr::FLAG_NEEDS_CSUM,
        "C completes it itself"
    );

    let status = vr.stop();
    assert!(status.success(), "vrouterd exit {status}");
}
