//! Jumbo frames: 8,000-byte frames cross vrouterd between guests on MTU 9000 vifs whole (mbuf
//! chains in, mergeable buffers out), a frame over the egress MTU with DF set gets
//! "fragmentation needed", and an MTU a device cannot carry is refused when the vif is added,
//! with the device's limit in the message; the same device given jumbo frame slots takes it.

use std::path::PathBuf;

use control_api::api::{MacAddr, VifRequest, VifType};
use etherparse::{NetHeaders, PacketBuilder, PacketHeaders, TransportHeader};
use testkit::frontend_pod::{FrontendPod, Memory};
use testkit::netns::HostVeth;
use testkit::vrouterd::Vrouterd;
use testkit::wait;

const MAC_A: MacAddr = MacAddr([0x02, 0, 0, 0, 0x0a, 0x01]);
const MAC_B: MacAddr = MacAddr([0x02, 0, 0, 0, 0x0b, 0x01]);

fn vrouterd_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_vrouterd"))
}

/// A UDP/IPv4 frame from pod A to pod B with DF set and `len` bytes of payload.
fn udp_df(len: usize) -> (Vec<u8>, Vec<u8>) {
    let payload: Vec<u8> = (0..len).map(|i| (i * 13 % 251) as u8).collect();
    let mut f = Vec::new();
    PacketBuilder::ethernet2(MAC_A.0, MacAddr::VROUTER_DEFAULT.0)
        .ipv4([198, 18, 1, 2], [198, 18, 2, 2], 64)
        .udp(40000, 5001)
        .write(&mut f, &payload)
        .unwrap();
    f[20] |= 0x40; // DF
    let mut ip = etherparse::Ipv4HeaderSlice::from_slice(&f[14..])
        .unwrap()
        .to_header();
    ip.header_checksum = ip.calc_header_checksum();
    f[24..26].copy_from_slice(&ip.header_checksum.to_be_bytes());
    (f, payload)
}

fn wait_frames(pod: &mut FrontendPod, what: &str) -> Vec<Vec<u8>> {
    wait::until(
        what,
        wait::DEADLINE,
        || pod.receive(),
        |got| !got.is_empty(),
    )
}

#[test]
fn eight_thousand_byte_frames_cross_between_guests_on_mtu_9000_vifs() {
    let vr = Vrouterd::start(&vrouterd_bin(), &[], &[]);
    let socks = vr.vhost_pods(
        &[
            (1, "podA", MAC_A, "198.18.1.2/32"),
            (2, "podB", MAC_B, "198.18.2.2/32"),
        ],
        |v| v.mtu = Some(9000),
    );
    let mut a = FrontendPod::connect(&socks[0], Memory::Memfd).expect("pod A");
    let mut b = FrontendPod::connect(&socks[1], Memory::Memfd).expect("pod B");
    for n in ["podA", "podB"] {
        vr.wait_connected(n);
    }

    // 8,000 bytes of payload: a 8,042-byte frame over four descriptors in, five buffers out.
    let (f, payload) = udp_df(8000);
    assert_eq!(a.send(&f, 1), 1);
    let got = wait_frames(&mut b, "the jumbo frame");
    assert_eq!(got.len(), 1);
    let h = PacketHeaders::from_ethernet_slice(&got[0]).unwrap();
    assert_eq!(h.payload.slice(), &payload[..], "whole, byte for byte");
    let (NetHeaders::Ipv4(ip, _), TransportHeader::Udp(u)) = (h.net.unwrap(), h.transport.unwrap())
    else {
        panic!("UDP over IPv4");
    };
    assert_eq!(ip.time_to_live, 63);
    assert_eq!(ip.header_checksum, ip.calc_header_checksum());
    assert_eq!(u.checksum, u.calc_checksum_ipv4(&ip, &payload).unwrap());

    // Beyond the egress MTU with DF: the sender hears the MTU back.
    let (f, _) = udp_df(9100);
    assert_eq!(a.send(&f, 1), 1);
    let back = wait_frames(&mut a, "fragmentation needed");
    let icmp = etherparse::Icmpv4Slice::from_slice(&back[0][34..]).unwrap();
    assert_eq!((icmp.type_u8(), icmp.code_u8()), (3, 4));
    assert_eq!(
        u16::from_be_bytes([icmp.bytes5to8()[2], icmp.bytes5to8()[3]]),
        9000
    );
    assert!(b.receive().is_empty(), "nothing too big reached B");
    let status = vr.stop();
    assert!(status.success(), "vrouterd exit {status}");
}

#[test]
fn an_mtu_a_device_cannot_carry_is_refused_naming_its_limit() {
    let veth = HostVeth::new(
        &format!("vj{}a", std::process::id()),
        &format!("vj{}b", std::process::id()),
    );
    let vr = Vrouterd::start(&vrouterd_bin(), &[], &[]);
    let physical = |name: &str, devargs: String, mtu: u32| {
        let mut req = VifRequest::new(name, VifType::Physical, 0, MacAddr([2, 0, 0, 0, 0x0d, 1]));
        req.device = Some(devargs);
        req.mtu = Some(mtu);
        req
    };
    // net_af_packet (DPDK 22.11) receives at most standard frames: MTU 9000 does not fit.
    let plain = format!("net_af_packet_j1,iface={}", veth.a());
    let req = physical("fab", plain.clone(), 9000);
    let err = vr
        .api(|c| async move { c.vif_add(&req).await })
        .expect_err("MTU 9000 on 2 KiB frame slots");
    let msg = format!("{err:?}");
    assert!(
        msg.contains("cannot take MTU 9000") && msg.contains("its largest is"),
        "the refusal names the limit: {msg}"
    );
    let vifs = vr.api(|c| async move { c.vifs().await }).expect("vifs");
    assert!(vifs.is_empty(), "nothing added: {vifs:?}");
    // A device that can (net_ring) takes it, receiving into large buffers: it cannot spread a
    // frame over several.
    let req = physical("fab", String::from("net_ring_j2"), 9000);
    let v = vr
        .api(|c| async move { c.vif_add(&req).await })
        .expect("MTU 9000 with 9 KiB frame slots");
    assert_eq!(v.config.mtu, Some(9000));
    let status = vr.stop();
    assert!(status.success(), "vrouterd exit {status}");
}
