//! The kernel port on veths with the kernel's default offloads.
//!
//! Two pods (namespaces on veths) talk TCP through two kernel ports and a relay that passes
//! every frame on with the virtio-net header it came with: the pods' 64 KB segments with
//! partial checksums must arrive at the ports whole, with headers that say so (and add up), and
//! leave through the other port as the same GSO packets, so that 20 MB of TCP each way, over
//! IPv4 and IPv6, arrive intact. And frames we craft with a partial checksum or a GSO header
//! come out of the kernel finished: right checksums, MSS-sized segments.

mod common;

use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use pmd_shim::kernel_port::{RxBurst, TxBurst};
use pmd_shim::{KernelPort, KernelPortConfig, MbufBurst, Mempool, BURST_MAX};
use testkit::kernel_pod::KernelPod;
use virtio_net_hdr::NetHdr;

fn sum16(data: &[u8], mut acc: u64) -> u64 {
    let mut chunks = data.chunks_exact(2);
    for c in &mut chunks {
        acc += u64::from(u16::from_be_bytes([c[0], c[1]]));
    }
    if let [b] = chunks.remainder() {
        acc += u64::from(*b) << 8;
    }
    acc
}

fn fold(mut s: u64) -> u16 {
    while s >> 16 != 0 {
        s = (s & 0xffff) + (s >> 16);
    }
    s as u16
}

/// The pseudo-header sum of the IP packet starting at `l3` of `frame` for `l4_len` bytes of
/// protocol `proto`.
fn pseudo(frame: &[u8], l3: usize, proto: u8, l4_len: usize) -> u64 {
    let addrs = if frame[l3] >> 4 == 4 {
        &frame[l3 + 12..l3 + 20]
    } else {
        &frame[l3 + 8..l3 + 40]
    };
    sum16(addrs, u64::from(proto) + l4_len as u64)
}

/// Whether the transport checksum of the (complete) IPv4 / IPv6 frame `f` is right.
fn l4_checksum_ok(f: &[u8]) -> bool {
    let (proto, l4) = match u16::from_be_bytes([f[12], f[13]]) {
        0x0800 => (f[23], 14 + usize::from(f[14] & 0xf) * 4),
        0x86dd => (f[20], 54),
        _ => return false,
    };
    fold(sum16(&f[l4..], pseudo(f, 14, proto, f.len() - l4))) == 0xffff
}

/// What the relay saw of the headers the kernel gave it.
#[derive(Debug, Default)]
struct Seen {
    frames: u64,
    gso: [u64; 2],
    gso_sizes: Vec<u16>,
    largest: usize,
    partial: u64,
    /// Partial checksums that, completed, gave a right checksum (frames without GSO).
    partial_ok: u64,
    bad: Vec<String>,
    rx: RxBurst,
    tx: TxBurst,
}

fn check(seen: &mut Seen, m: &pmd_shim::Mbuf, h: NetHdr) {
    let f = m.to_vec();
    seen.frames += 1;
    seen.largest = seen.largest.max(f.len());
    let ethertype = u16::from_be_bytes([f[12], f[13]]);
    let l4 = match ethertype {
        0x0800 => 14 + usize::from(f[14] & 0xf) * 4,
        0x86dd => 54,
        _ => return,
    };
    let proto = if ethertype == 0x0800 { f[23] } else { f[20] };
    if h.gso_type != 0 {
        let (kind, i) = if ethertype == 0x0800 {
            (virtio_net_hdr::gso::TCPV4, 0)
        } else {
            (virtio_net_hdr::gso::TCPV6, 1)
        };
        if h.gso_type & !virtio_net_hdr::gso::ECN != kind || h.gso_size == 0 || proto != 6 {
            seen.bad.push(format!(
                "GSO header {h:?} on a {ethertype:#x}/{proto} frame"
            ));
        }
        seen.gso[i] += 1;
        if !seen.gso_sizes.contains(&h.gso_size) {
            seen.gso_sizes.push(h.gso_size);
        }
    }
    if h.flags & virtio_net_hdr::FLAG_NEEDS_CSUM != 0 {
        seen.partial += 1;
        let want = if proto == 6 { 16 } else { 6 };
        if usize::from(h.csum_start) != l4 || h.csum_offset != want {
            seen.bad
                .push(format!("checksum at {h:?}, L4 at {l4}, proto {proto}"));
        } else if h.gso_type == 0 {
            // Complete it as the kernel would, then check it as a receiver would.
            let mut full = f.clone();
            let at = l4 + usize::from(h.csum_offset);
            let c = !fold(sum16(&full[l4..], 0));
            full[at..at + 2].copy_from_slice(&c.to_be_bytes());
            if l4_checksum_ok(&full) {
                seen.partial_ok += 1;
            } else {
                seen.bad
                    .push(format!("partial checksum does not complete right: {h:?}"));
            }
        }
    } else if h.gso_type != 0 {
        seen.bad
            .push(format!("GSO without a partial checksum: {h:?}"));
    }
}

/// Passes frames between two ports with their headers until `stop`.
fn relay(mut a: KernelPort, mut b: KernelPort, stop: Arc<AtomicBool>, seen: Arc<Mutex<Seen>>) {
    let mut burst = MbufBurst::new();
    let mut hdrs = [NetHdr::NONE; BURST_MAX];
    let mut local = Seen::default();
    while !stop.load(Ordering::Relaxed) {
        let mut moved = 0;
        for dir in 0..2 {
            let (from, to) = if dir == 0 {
                (&mut a, &mut b)
            } else {
                (&mut b, &mut a)
            };
            let r = from.rx_burst(&mut burst, &mut hdrs);
            local.rx.received += r.received;
            local.rx.truncated += r.truncated;
            local.rx.malformed += r.malformed;
            local.rx.no_mbuf += r.no_mbuf;
            if r.received == 0 {
                continue;
            }
            moved += r.received;
            for (m, h) in burst.iter().zip(hdrs.iter()) {
                check(&mut local, m, *h);
            }
            let t = to.tx_burst(burst.iter().zip(hdrs.iter().copied()));
            local.tx.sent += t.sent;
            local.tx.busy += t.busy;
            local.tx.rejected += t.rejected;
            burst.free_all();
        }
        if moved == 0 {
            std::thread::yield_now();
        }
    }
    *seen.lock().expect("seen") = local;
}

#[test]
fn tcp_between_pods_with_default_offloads_crosses_two_kernel_ports_intact() {
    let eal = common::eal();
    let pool = Mempool::new(&eal, "kport", 8191, 0, 2176).expect("mempool");
    let a = KernelPod::new("ra", 1, 1500);
    let b = KernelPod::new("rb", 2, 1500);
    // The relay forwards frames as they are: each pod's gateway is the other pod's MAC.
    for (pod, other) in [(&a, &b), (&b, &a)] {
        let mac = other
            .mac
            .iter()
            .map(|x| format!("{x:02x}"))
            .collect::<Vec<_>>()
            .join(":");
        for gw in [pod.gateway().to_string(), pod.gateway6().to_string()] {
            pod.ns.ip(&[
                "neigh",
                "replace",
                &gw,
                "lladdr",
                &mac,
                "dev",
                "eth0",
                "nud",
                "permanent",
            ]);
        }
    }
    let cfg = KernelPortConfig::default();
    let pa = KernelPort::open(&a.host_side, &pool, &cfg).expect("port a");
    let pb = KernelPort::open(&b.host_side, &pool, &cfg).expect("port b");
    let (ma, mb) = (pa.monitor(), pb.monitor());
    assert!(ma.link_up() && mb.link_up(), "both veths are up");
    let stop = Arc::new(AtomicBool::new(false));
    let seen = Arc::new(Mutex::new(Seen::default()));
    let relay = {
        let (stop, seen) = (stop.clone(), seen.clone());
        std::thread::spawn(move || relay(pa, pb, stop, seen))
    };

    const BYTES: u64 = 20_000_000;
    for (from, to, addr) in [
        (&a, &b, IpAddr::V4(b.ip)),
        (&b, &a, IpAddr::V4(a.ip)),
        (&a, &b, IpAddr::V6(b.ip6)),
        (&b, &a, IpAddr::V6(a.ip6)),
    ] {
        let t0 = Instant::now();
        let (sent, got) = from.tcp_transfer_to(to, addr, BYTES);
        let secs = t0.elapsed().as_secs_f64();
        assert!(sent.starts_with(&format!("{BYTES} ")), "{addr}: {sent}");
        assert_eq!(sent, got, "{addr}: bytes and SHA-256 at both ends");
        eprintln!("checksummed transfer to {addr}: {BYTES} bytes in {secs:.2} s");
    }
    let perf = a.iperf3(&b, IpAddr::V4(b.ip), 200_000_000);
    eprintln!(
        "iperf3 through the relay: {} bytes received in {:.2} s, {:.2} Gbit/s",
        perf.received, perf.seconds, perf.gbit_per_s
    );

    stop.store(true, Ordering::Relaxed);
    relay.join().expect("relay");
    let seen = seen.lock().expect("seen");
    eprintln!(
        "relay: {} frames, GSO v4/v6 {:?}, gso sizes {:?}, largest {} B, partial {} \
         ({} without GSO checked), rx {:?}, tx {:?}",
        seen.frames,
        seen.gso,
        seen.gso_sizes,
        seen.largest,
        seen.partial,
        seen.partial_ok,
        seen.rx,
        seen.tx
    );
    assert!(
        seen.bad.is_empty(),
        "headers that do not add up: {:?}",
        seen.bad
    );
    assert!(
        seen.gso[0] > 100 && seen.gso[1] > 100,
        "TCP over both families came as GSO packets: {:?}",
        seen.gso
    );
    assert!(
        seen.gso_sizes.contains(&1448) && seen.gso_sizes.contains(&1428),
        "MSS of a 1500-byte MTU with timestamps, IPv4 and IPv6: {:?}",
        seen.gso_sizes
    );
    assert!(
        seen.largest > 30_000,
        "frames far larger than the MTU arrive whole: {}",
        seen.largest
    );
    assert!(
        seen.partial_ok > 0,
        "partial checksums of small frames checked"
    );
    assert_eq!(
        (seen.rx.truncated, seen.rx.malformed, seen.rx.no_mbuf),
        (0, 0, 0),
        "{:?}",
        seen.rx
    );
    assert_eq!(
        seen.tx.rejected, 0,
        "the kernel took every header: {:?}",
        seen.tx
    );
    let (sa, sb) = (ma.stats(), mb.stats());
    assert_eq!(sa.rx_packets + sb.rx_packets, seen.frames);
    assert_eq!(sa.tx_packets + sb.tx_packets, seen.tx.sent as u64);
    assert!(
        sa.rx_bytes > BYTES * 2 && sb.rx_bytes > BYTES * 2,
        "{sa:?} {sb:?}"
    );
}

/// An Ethernet + IPv4 header for `l4_len` bytes of `proto` from 198.18.9.9 to `dst`.
fn ipv4_frame(pod: &KernelPod, proto: u8, l4: &[u8]) -> Vec<u8> {
    let mut f = Vec::with_capacity(34 + l4.len());
    f.extend_from_slice(&pod.mac);
    f.extend_from_slice(&[0x02, 0, 0, 0, 0x99, 0x01]);
    f.extend_from_slice(&[0x08, 0x00]);
    let total = (20 + l4.len()) as u16;
    let mut ip = [0u8; 20];
    ip[0] = 0x45;
    ip[2..4].copy_from_slice(&total.to_be_bytes());
    ip[6] = 0x40; // DF
    ip[8] = 64;
    ip[9] = proto;
    ip[12..16].copy_from_slice(&[198, 18, 9, 9]);
    ip[16..20].copy_from_slice(&pod.ip.octets());
    let c = !fold(sum16(&ip, 0));
    ip[10..12].copy_from_slice(&c.to_be_bytes());
    f.extend_from_slice(&ip);
    f.extend_from_slice(l4);
    f
}

/// Receives the next `n` frames from 198.18.9.9 on the pod's eth0 with the offload header the kernel gives each (an
/// AF_PACKET socket with PACKET_VNET_HDR, from python3's stdlib, in the pod's namespace):
/// each as (header, frame). Ready once the returned reader says so.
struct PodReader {
    child: std::process::Child,
}

impl PodReader {
    fn start(pod: &KernelPod, n: usize) -> PodReader {
        use std::io::{BufRead, BufReader};
        let script = [
            "import socket,sys",
            "s=socket.socket(socket.AF_PACKET,socket.SOCK_RAW,socket.htons(0x0800))",
            // SOL_PACKET, PACKET_VNET_HDR
            "s.setsockopt(263,15,1)",
            "s.bind(('eth0',0))",
            "s.settimeout(10)",
            "print('ready',flush=True)",
            "got=0",
            "while got<int(sys.argv[1]):",
            " d=s.recv(70000)",
            // Only ours: from 198.18.9.9 (after the 10-byte header and 26 bytes of frame).
            " if d[36:40]==bytes([198,18,9,9]):",
            "  print(d.hex(),flush=True)",
            "  got+=1",
        ]
        .join("\n");
        let mut child = pod
            .ns
            .command("python3")
            .args(["-c", &script, &n.to_string()])
            .stdout(std::process::Stdio::piped())
            .spawn()
            .expect("python3 reader");
        let mut first = String::new();
        let out = child.stdout.as_mut().expect("stdout");
        BufReader::new(out).read_line(&mut first).expect("reader");
        assert_eq!(first.trim(), "ready");
        PodReader { child }
    }

    fn frames(self) -> Vec<(NetHdr, Vec<u8>)> {
        let out = self.child.wait_with_output().expect("reader");
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(|l| {
                let b: Vec<u8> = (0..l.len() / 2)
                    .map(|i| u8::from_str_radix(&l[2 * i..2 * i + 2], 16).expect("hex"))
                    .collect();
                let h: [u8; 10] = b[..10].try_into().expect("header");
                (NetHdr::from_bytes(&h), b[10..].to_vec())
            })
            .collect()
    }
}

/// Completes a frame's partial checksum as the header describes, the way a device would.
fn complete(f: &mut [u8], h: &NetHdr) {
    let (start, at) = (
        usize::from(h.csum_start),
        usize::from(h.csum_start + h.csum_offset),
    );
    let c = !fold(sum16(&f[start..], 0));
    f[at..at + 2].copy_from_slice(&c.to_be_bytes());
}

#[test]
fn frames_sent_with_a_partial_checksum_or_gso_reach_the_pod_with_their_offload_header() {
    let eal = common::eal();
    let pool = Mempool::new(&eal, "kport", 1023, 0, 2176).expect("mempool");
    let pod = KernelPod::new("fx", 3, 1500);
    // The veth keeps its default offloads: the kernel passes the partial checksum and the GSO
    // packet through to the pod as it passes a pod's own, with the header that describes them.
    // What reaches the pod, read with that header, completes and cuts into the right frames.
    let mut port =
        KernelPort::open(&pod.host_side, &pool, &KernelPortConfig::default()).expect("port");
    let reader = PodReader::start(&pod, 2);
    // UDP with its checksum field holding the pseudo-header sum only.
    let mut udp = vec![0u8; 8 + 100];
    udp[0..2].copy_from_slice(&4000u16.to_be_bytes());
    udp[2..4].copy_from_slice(&9u16.to_be_bytes());
    let udp_len = udp.len() as u16;
    udp[4..6].copy_from_slice(&udp_len.to_be_bytes());
    for (i, b) in udp[8..].iter_mut().enumerate() {
        *b = i as u8;
    }
    let mut f_udp = ipv4_frame(&pod, 17, &udp);
    let p = fold(pseudo(&f_udp, 14, 17, udp.len()));
    f_udp[40..42].copy_from_slice(&p.to_be_bytes());
    let h_udp = NetHdr {
        flags: virtio_net_hdr::FLAG_NEEDS_CSUM,
        csum_start: 34,
        csum_offset: 6,
        ..NetHdr::NONE
    };

    // A TCP packet of 4000 payload bytes to be cut into segments of 1000.
    let mut tcp = vec![0u8; 20 + 4000];
    tcp[0..2].copy_from_slice(&4001u16.to_be_bytes());
    tcp[2..4].copy_from_slice(&7777u16.to_be_bytes());
    tcp[4..8].copy_from_slice(&1_000_000u32.to_be_bytes());
    tcp[8..12].copy_from_slice(&1u32.to_be_bytes());
    tcp[12] = 5 << 4;
    tcp[13] = 0x18; // PSH ACK
    tcp[14..16].copy_from_slice(&65535u16.to_be_bytes());
    for (i, b) in tcp[20..].iter_mut().enumerate() {
        *b = (i % 251) as u8;
    }
    let mut f_tcp = ipv4_frame(&pod, 6, &tcp);
    let p = fold(pseudo(&f_tcp, 14, 6, tcp.len()));
    f_tcp[50..52].copy_from_slice(&p.to_be_bytes());
    let h_tcp = NetHdr {
        flags: virtio_net_hdr::FLAG_NEEDS_CSUM,
        gso_type: virtio_net_hdr::gso::TCPV4,
        gso_size: 1000,
        hdr_len: 54,
        csum_start: 34,
        csum_offset: 16,
    };

    let m_udp = pool.alloc_with(&f_udp).expect("udp mbuf");
    // Chained over several segments, as a GSO packet from a guest or the pipeline is.
    let m_tcp = pool.alloc_with(&f_tcp).expect("tcp mbuf");
    assert!(m_tcp.nb_segs() > 1);
    let t = port.tx_burst([(&m_udp, h_udp), (&m_tcp, h_tcp)]);
    assert_eq!((t.sent, t.busy, t.rejected), (2, 0, 0), "{t:?}");

    let got = reader.frames();
    assert_eq!(
        got.len(),
        2,
        "the datagram and the GSO packet, whole: {got:?}"
    );
    let (hu, mut fu) = got
        .iter()
        .find(|(_, f)| f[23] == 17)
        .cloned()
        .expect("the datagram");
    assert_eq!(
        (
            hu.flags & virtio_net_hdr::FLAG_NEEDS_CSUM,
            hu.csum_start,
            hu.csum_offset
        ),
        (virtio_net_hdr::FLAG_NEEDS_CSUM, 34, 6),
        "the partial checksum's header came through"
    );
    complete(&mut fu, &hu);
    assert!(l4_checksum_ok(&fu), "UDP checksum right once completed");
    assert_eq!(&fu[42..], &udp[8..], "payload intact");

    let (ht, mut ft) = got
        .iter()
        .find(|(_, f)| f[23] == 6)
        .cloned()
        .expect("the TCP packet");
    assert_eq!(
        (ht.gso_type, ht.gso_size),
        (virtio_net_hdr::gso::TCPV4, 1000),
        "the GSO header came through: {ht:?}"
    );
    assert_eq!(ft.len(), f_tcp.len(), "whole, 4000 bytes of payload");
    assert_eq!(&ft[54..], &tcp[20..]);
    // Cut as a device would: each segment its share of the payload, its sequence number, its
    // lengths and checksums right.
    complete(&mut ft, &ht);
    let hdr = &ft[..54];
    for i in 0..4usize {
        let mut seg = hdr.to_vec();
        seg.extend_from_slice(&ft[54 + 1000 * i..54 + 1000 * (i + 1)]);
        let ip_len = (seg.len() - 14) as u16;
        seg[16..18].copy_from_slice(&ip_len.to_be_bytes());
        seg[24..26].copy_from_slice(&[0, 0]);
        let c = !fold(sum16(&seg[14..34], 0));
        seg[24..26].copy_from_slice(&c.to_be_bytes());
        let seq = 1_000_000 + 1000 * i as u32;
        seg[38..42].copy_from_slice(&seq.to_be_bytes());
        seg[50..52].copy_from_slice(&[0, 0]);
        let p = fold(pseudo(&seg, 14, 6, seg.len() - 34));
        seg[50..52].copy_from_slice(&p.to_be_bytes());
        complete(&mut seg, &ht);
        assert!(l4_checksum_ok(&seg), "segment {i}: TCP checksum right");
    }
    let st = port.monitor().stats();
    assert_eq!((st.tx_packets, st.tx_rejected), (2, 0), "{st:?}");
    assert_eq!(st.tx_bytes, (f_udp.len() + f_tcp.len()) as u64);
}

#[test]
fn a_header_the_kernel_refuses_is_counted_and_the_rest_still_goes() {
    let eal = common::eal();
    let pool = Mempool::new(&eal, "kport", 1023, 0, 2176).expect("mempool");
    let pod = KernelPod::new("rj", 4, 1500);
    let mut port =
        KernelPort::open(&pod.host_side, &pool, &KernelPortConfig::default()).expect("port");
    let f = ipv4_frame(&pod, 17, &[0u8; 28]);
    let good = pool.alloc_with(&f).expect("mbuf");
    let bad = pool.alloc_with(&f).expect("mbuf");
    // A checksum field beyond the frame.
    let h_bad = NetHdr {
        flags: virtio_net_hdr::FLAG_NEEDS_CSUM,
        csum_start: 60,
        csum_offset: 6,
        ..NetHdr::NONE
    };
    let big = pool.alloc_with(&vec![0u8; 3000]).expect("mbuf");
    let t = port.tx_burst([
        (&good, NetHdr::NONE),
        (&bad, h_bad),
        // Longer than the MTU and no GSO header.
        (&big, NetHdr::NONE),
        (&good, NetHdr::NONE),
    ]);
    assert_eq!((t.sent, t.rejected), (2, 2), "{t:?}");
    let st = port.monitor().stats();
    assert_eq!((st.tx_packets, st.tx_rejected), (2, 2), "{st:?}");
    assert_eq!(
        port.monitor().mtu(),
        Some(1500),
        "the limit the big frame broke"
    );
    drop(pod);
    // The interface is gone: the port says so, and sending fails without panicking.
    assert!(!port.monitor().link_up());
    assert_eq!(port.monitor().mtu(), None);
    let t = port.tx_burst([(&good, NetHdr::NONE)]);
    assert_eq!(t.sent, 0, "{t:?}");
}

#[test]
fn a_vlan_tag_the_kernel_took_off_is_put_back() {
    let eal = common::eal();
    let pool = Mempool::new(&eal, "kport", 1023, 0, 2176).expect("mempool");
    let pod = KernelPod::new("vl", 5, 1500);
    let mut port =
        KernelPort::open(&pod.host_side, &pool, &KernelPortConfig::default()).expect("port");
    // A tagged UDP datagram, sent raw: the receiving side takes the tag off into the packet's
    // metadata before any packet socket sees it.
    let mut udp = vec![0u8; 8 + 64];
    udp[0..2].copy_from_slice(&4000u16.to_be_bytes());
    udp[2..4].copy_from_slice(&9u16.to_be_bytes());
    let udp_len = udp.len() as u16;
    udp[4..6].copy_from_slice(&udp_len.to_be_bytes());
    let mut frame = ipv4_frame(&pod, 17, &udp);
    let c = !fold(sum16(&frame[34..], pseudo(&frame, 14, 17, udp.len())));
    frame[40..42].copy_from_slice(&c.to_be_bytes());
    assert!(l4_checksum_ok(&frame));
    // Priority 5, VLAN 100.
    frame.splice(12..12, [0x81, 0x00, 0xa0, 0x64]);
    pod.ns.send_raw("eth0", &frame);

    let mut burst = MbufBurst::new();
    let mut hdrs = [NetHdr::NONE; BURST_MAX];
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut got = Vec::new();
    while got.is_empty() && Instant::now() < deadline {
        port.rx_burst(&mut burst, &mut hdrs);
        got.extend(
            burst
                .iter()
                .map(|m| m.to_vec())
                .filter(|f| f[..6] == frame[..6]),
        );
        burst.free_all();
        std::thread::sleep(Duration::from_millis(5));
    }
    assert_eq!(got, vec![frame], "the frame as sent, tag in place");
}
