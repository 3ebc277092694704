//! The vrouter's tunnel frames against real implementations: the Linux kernel's vxlan device
//! (same inner frame in, outer frames compared field by field) and tshark's dissectors for
//! MPLS over UDP and MPLS over GRE. Needs root (CI runs as root); never skipped.

mod common;
use common::*;
use std::net::Ipv4Addr;
use std::process::Command;
use std::time::Duration;
use testkit::netns::{Netns, PcapFile};

/// An L2 frame from pod A to a MAC that lives behind the peer's VXLAN tunnel.
fn inner_frame() -> Vec<u8> {
    let mut f = udp4(
        POD_A_IP,
        Ipv4Addr::new(198, 18, 1, 99),
        64,
        b"same frame, two encapsulators",
    );
    f[0..6].copy_from_slice(&REMOTE_MAC.0);
    f
}

/// Capture what the kernel's vxlan device makes of `inner`, configured like the vrouter's
/// tunnel (VNI 5000, DF set, TTL 64, no UDP checksum) from `local` to `remote`.
fn kernel_vxlan_frame(inner: &[u8], local: Ipv4Addr, remote: Ipv4Addr) -> Vec<u8> {
    let ns = Netns::new("vr-vxlan");
    // No IPv6 autoconfiguration chatter (MLD, RS) through the tunnel: only our frame.
    ns.exec(&["sysctl", "-qw", "net.ipv6.conf.all.disable_ipv6=1"]);
    ns.exec(&["sysctl", "-qw", "net.ipv6.conf.default.disable_ipv6=1"]);
    ns.veth("fab0", "fab1", None);
    ns.ip(&["link", "set", "fab0", "address", &FABRIC_MAC.to_string()]);
    ns.ip(&["addr", "add", &format!("{local}/24"), "dev", "fab0"]);
    ns.ip(&[
        "neigh",
        "replace",
        &remote.to_string(),
        "lladdr",
        &PEER_MAC.to_string(),
        "dev",
        "fab0",
        "nud",
        "permanent",
    ]);
    ns.ip(&[
        "link",
        "add",
        "vx0",
        "type",
        "vxlan",
        "id",
        &VNI.to_string(),
        "local",
        &local.to_string(),
        "remote",
        &remote.to_string(),
        "dstport",
        "4789",
        "dev",
        "fab0",
        "ttl",
        "64",
        "df",
        "set",
        "noudpcsum",
        "nolearning",
    ]);
    ns.ip(&["link", "set", "vx0", "up"]);
    let cap = ns.capture("fab1", "udp dst port 4789", 1);
    ns.send_raw("vx0", inner);
    let mut frames = cap.frames(Duration::from_secs(10));
    assert_eq!(frames.len(), 1, "the kernel sent one VXLAN frame");
    frames.remove(0)
}

#[test]
fn vxlan_frame_matches_the_linux_kernel_field_by_field() {
    let inner = inner_frame();
    let kernel = kernel_vxlan_frame(&inner, FABRIC_IP, PEER_IP);
    let mut bed = bed();
    let ours = bed.forward(POD_A, &inner, FABRIC);

    assert_eq!(ours.len(), kernel.len(), "same length");
    let field = |name: &str, r: std::ops::Range<usize>| {
        assert_eq!(
            ours[r.clone()],
            kernel[r.clone()],
            "{name} differs: ours {:02x?} kernel {:02x?}",
            &ours[r.clone()],
            &kernel[r]
        );
    };
    field("outer destination MAC", 0..6);
    field("outer source MAC", 6..12);
    field("ethertype", 12..14);
    field("IP version/IHL", 14..15);
    field("IP TOS", 15..16);
    field("IP total length", 16..18);
    // 18..20: IP identification legitimately differs.
    field("IP flags/fragment offset (DF)", 20..22);
    field("IP TTL", 22..23);
    field("IP protocol", 23..24);
    // 24..26: the header checksum covers the identification; check ours is right instead.
    field("IP source", 26..30);
    field("IP destination", 30..34);
    // 34..36: UDP source port (entropy) legitimately differs; ours must be in 49152..=65535.
    assert!(u16::from_be_bytes([ours[34], ours[35]]) >= 49152);
    field("UDP destination port", 36..38);
    field("UDP length", 38..40);
    // 40..42: UDP checksum (zero from both here, but allowed to differ).
    field("VXLAN header", 42..50);
    field("inner frame", 50..ours.len());
    let oh = etherparse::Ipv4HeaderSlice::from_slice(&ours[14..]).unwrap();
    assert_eq!(oh.header_checksum(), oh.to_header().calc_header_checksum());
}

#[test]
fn vxlan_frame_from_the_linux_kernel_is_decapsulated_to_the_pod() {
    // The kernel plays the peer node: it tunnels a frame for pod B to our fabric IP.
    let mut inner = udp4(
        Ipv4Addr::new(198, 18, 1, 99),
        POD_B_IP,
        64,
        b"from a kernel peer",
    );
    inner[0..6].copy_from_slice(&POD_B_MAC.0);
    inner[6..12].copy_from_slice(&REMOTE_MAC.0);
    let kernel = kernel_vxlan_frame(&inner, PEER_IP, FABRIC_IP);
    let mut bed = bed();
    assert_eq!(
        bed.forward(FABRIC, &kernel, POD_B),
        inner,
        "pod B gets the inner frame unchanged"
    );
}

fn tshark(pcap: &PcapFile, fields: &[&str]) -> Vec<Vec<String>> {
    let mut args = vec![
        "-r".to_string(),
        pcap.path.display().to_string(),
        "-d".into(),
        "udp.port==6635,mpls".into(),
    ];
    args.extend(
        [
            "-o",
            "ip.check_checksum:TRUE",
            "-T",
            "fields",
            "-E",
            "separator=|",
            "-E",
            "occurrence=a",
            "-E",
            "aggregator=,",
        ]
        .map(String::from),
    );
    for f in fields {
        args.push("-e".into());
        args.push(f.to_string());
    }
    let out = Command::new("tshark")
        .args(&args)
        .output()
        .expect("tshark runs (Debian package tshark)");
    assert!(
        out.status.success(),
        "tshark failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| l.split('|').map(String::from).collect())
        .collect()
}

#[test]
fn tshark_dissects_mpls_over_udp_and_gre_with_the_inner_packet_intact() {
    let mut bed = bed();
    let udp_frame = bed.forward(
        POD_A,
        &udp4(POD_A_IP, REMOTE_MPLS_UDP, 64, b"mpls over udp"),
        FABRIC,
    );
    let gre_frame = bed.forward(
        POD_A,
        &udp4(POD_A_IP, REMOTE_MPLS_GRE, 64, b"mpls over gre"),
        FABRIC,
    );
    let pcap = PcapFile::write(&[udp_frame, gre_frame]).unwrap();
    let rows = tshark(
        &pcap,
        &[
            "frame.protocols",
            "mpls.label",
            "mpls.bottom",
            "mpls.ttl",
            "ip.src",
            "ip.dst",
            "ip.ttl",
            "ip.checksum.status",
            "udp.dstport",
            "data.data",
        ],
    );
    assert_eq!(rows.len(), 2, "{rows:?}");
    let hex = |s: &[u8]| s.iter().map(|b| format!("{b:02x}")).collect::<String>();
    for (row, (label, inner_dst, proto, payload)) in rows.iter().zip([
        (
            LABEL_UDP,
            REMOTE_MPLS_UDP,
            "eth:ethertype:ip:udp:mpls:ip:udp:data",
            &b"mpls over udp"[..],
        ),
        (
            LABEL_GRE,
            REMOTE_MPLS_GRE,
            "eth:ethertype:ip:gre:mpls:ip:udp:data",
            &b"mpls over gre"[..],
        ),
    ]) {
        assert_eq!(row[0], proto, "protocol stack");
        assert_eq!(row[1], label.to_string(), "label");
        assert_eq!(row[2], "1", "bottom of stack");
        assert_eq!(row[3], "63", "label TTL");
        assert_eq!(
            row[4],
            format!("{FABRIC_IP},{POD_A_IP}"),
            "outer, inner source"
        );
        assert_eq!(
            row[5],
            format!("{PEER_IP},{inner_dst}"),
            "outer, inner destination"
        );
        assert_eq!(row[6], "64,63", "outer TTL, inner TTL decremented");
        assert_eq!(
            row[7], "1,1",
            "tshark validated both IPv4 header checksums as good"
        );
        assert!(
            row[8].ends_with("5001"),
            "inner UDP destination port: {}",
            row[8]
        );
        assert_eq!(row[9], hex(payload), "inner payload intact");
    }
}
