#!/usr/bin/python3
"""Writes the source-NAT seeds of the pipeline_flows target (run from vrouter/fuzz/): pod 2 and
pod 1 leaving for 203.0.113.0/24 through the pool (198.51.100.64, ports 40000-40003), replies
from the fabric to the pairs handed out first, ICMP errors quoting them, exhaustion, aging,
detach/attach, pod 1's floating IPs (198.51.100.200, 2001:db8:64::c8) both ways, packets NAT
cannot translate, and both pods' flows to the link-local metadata service."""
import os, struct
from scapy.all import Ether, IP, IPv6, TCP, UDP, ICMP, ICMPv6EchoRequest, ICMPv6EchoReply, ICMPv6DestUnreach, Raw

VROUTER = "00:00:5e:00:01:00"
POD_A, POD_B, PEER = "02:00:00:00:00:0a", "02:00:00:00:00:0b", "02:00:00:00:00:f2"
POOL, REMOTE = "198.51.100.64", "203.0.113.7"
POD_A6, REMOTE6, FLOATING6 = "2001:db8:1::a", "2001:db8:ff::7", "2001:db8:64::c8"

def rec(vif, ctl, frame):
    b = bytes(frame)
    return struct.pack("<BBH", vif, ctl, len(b)) + b

def pod2(l4, dst=REMOTE, **ip):
    return Ether(src=POD_B, dst=VROUTER) / IP(src="198.18.1.11", dst=dst, **ip) / l4

def fabric(l4):
    return Ether(src=PEER, dst="02:00:00:00:00:f1") / IP(src=REMOTE, dst=POOL) / l4

def metadata(mac, ip, l4):
    return Ether(src=mac, dst=VROUTER) / IP(src=ip, dst="169.254.169.254") / l4

def from_metadata(to, l4):
    return Ether(src=PEER, dst="02:00:00:00:00:f1") / IP(src="198.51.100.80", dst=to) / l4

seeds = {
    "nat_udp_and_reply": rec(2, 1, pod2(UDP(sport=1000, dport=53) / Raw(b"q")))
    + rec(0, 1, fabric(UDP(sport=53, dport=40000) / Raw(b"a"))),
    "nat_tcp_handshake": rec(2, 1, pod2(TCP(sport=1000, dport=80, flags="S")))
    + rec(0, 1, fabric(TCP(sport=80, dport=40000, flags="SA")))
    + rec(2, 1, pod2(TCP(sport=1000, dport=80, flags="A")))
    + rec(2, 1, pod2(TCP(sport=1000, dport=80, flags="FA")))
    + rec(0, 1, fabric(TCP(sport=80, dport=40000, flags="FA"))),
    "nat_echo_pod1": rec(1, 1, Ether(src=POD_A, dst=VROUTER) / IP(src="198.18.1.10", dst=REMOTE) / ICMP(type=8, id=7) / Raw(b"p"))
    + rec(0, 1, fabric(ICMP(type=0, id=40000) / Raw(b"p"))),
    "nat_exhausted_burst": rec(2, 1, pod2(UDP(sport=2000, dport=53)))
    + b"".join(rec(2, 0, pod2(UDP(sport=2001 + i, dport=53))) for i in range(6))
    + rec(0, 1, fabric(UDP(sport=53, dport=40003))),
    "nat_age_detach_attach": rec(2, 1, pod2(UDP(sport=3000, dport=53)))
    + rec(2, 0x7f, pod2(UDP(sport=3001, dport=53)))
    + rec(0x12, 1, pod2(UDP(sport=3002, dport=53)))
    + rec(0x10, 1, fabric(UDP(sport=53, dport=40000)))
    + rec(2, 1, pod2(UDP(sport=3003, dport=53))),
    "nat_icmp_errors": rec(2, 1, pod2(UDP(sport=1000, dport=53)))
    + rec(1, 1, Ether(src=POD_A, dst=VROUTER) / IP(src="198.18.1.10", dst=REMOTE) / ICMP(type=8, id=7))
    + rec(0, 1, fabric(ICMP(type=3, code=3) / IP(src=POOL, dst=REMOTE) / UDP(sport=40000, dport=53)))
    + rec(0, 1, fabric(ICMP(type=11) / IP(src=POOL, dst=REMOTE, ttl=1) / ICMP(type=8, id=40001))),
    "nat_floating_ip": rec(0, 1, Ether(src=PEER, dst="02:00:00:00:00:f1") / IP(src=REMOTE, dst="198.51.100.200") / UDP(sport=7, dport=53))
    + rec(1, 1, Ether(src=POD_A, dst=VROUTER) / IP(src="198.18.1.10", dst=REMOTE) / ICMP(type=8, id=5))
    + rec(0, 1, Ether(src=PEER, dst="02:00:00:00:00:f1") / IP(src=REMOTE, dst="198.51.100.200") / ICMP(type=0, id=5))
    + rec(0, 1, Ether(src=PEER, dst="02:00:00:00:00:f1") / IP(src=REMOTE, dst="198.51.100.200") / ICMP(type=8, id=6))
    + rec(0x21, 1, Ether(src=PEER, dst="02:00:00:00:00:f1") / IP(src=REMOTE, dst="198.51.100.200") / ICMP(type=8, id=6)),
    "nat_unsupported": rec(2, 1, pod2(UDP(sport=1, dport=2), flags="MF"))
    + rec(2, 1, pod2(Raw(b"gre"), proto=47)),
    # Both pods to the metadata service (169.254.169.254:80 -> 198.51.100.80:8775) from the
    # same port, the service's answers to each vif's link-local source, a request, aging, a FIN.
    "link_local_metadata": rec(1, 1, metadata(POD_A, "198.18.1.10", TCP(sport=4000, dport=80, flags="S")))
    + rec(2, 1, metadata(POD_B, "198.18.1.11", TCP(sport=4000, dport=80, flags="S")))
    + rec(0, 1, from_metadata("169.254.1.1", TCP(sport=8775, dport=4000, flags="SA")))
    + rec(0, 0, from_metadata("169.254.1.2", TCP(sport=8775, dport=4000, flags="SA")))
    + rec(1, 1, metadata(POD_A, "198.18.1.10", TCP(sport=4000, dport=80, flags="A") / Raw(b"GET /")))
    + rec(1, 0x7f, metadata(POD_A, "198.18.1.10", TCP(sport=4000, dport=80, flags="FA")))
    + rec(0, 1, from_metadata("169.254.1.1", TCP(sport=8775, dport=4000, flags="FA"))),
    # Pod 1 to the VIP (198.18.1.100:80) balanced by least flows (vif bit 6), three connections
    # from three ports, backend 198.18.1.10:8081 taken out (bit 3) and put back.
    "vip_least_flows": rec(0x41, 1, Ether(src=POD_A, dst=VROUTER) / IP(src="198.18.1.10", dst="198.18.1.100") / TCP(sport=5000, dport=80, flags="S"))
    + rec(1, 0, Ether(src=POD_A, dst=VROUTER) / IP(src="198.18.1.10", dst="198.18.1.100") / TCP(sport=5001, dport=80, flags="S"))
    + rec(2, 1, Ether(src=POD_B, dst=VROUTER) / IP(src="198.18.1.11", dst="198.18.1.100") / TCP(sport=5002, dport=80, flags="S"))
    + rec(9, 1, Ether(src=POD_A, dst=VROUTER) / IP(src="198.18.1.10", dst="198.18.1.100") / TCP(sport=5003, dport=80, flags="S"))
    + rec(0x49, 1, Ether(src=POD_A, dst=VROUTER) / IP(src="198.18.1.10", dst="198.18.1.100") / TCP(sport=5004, dport=80, flags="S")),
    # A pod's own ICMP errors about replies that came through source NAT and through its
    # floating IP: they leave from the pool pair and the floating address.
    "pod_icmp_errors_through_nat": rec(2, 1, pod2(UDP(sport=1000, dport=53)))
    + rec(0, 1, fabric(UDP(sport=53, dport=40000) / Raw(b"a")))
    + rec(2, 1, pod2(ICMP(type=3, code=3) / IP(src=REMOTE, dst="198.18.1.11") / UDP(sport=53, dport=1000)))
    + rec(0, 1, Ether(src=PEER, dst="02:00:00:00:00:f1") / IP(src=REMOTE, dst="198.51.100.200") / UDP(sport=7, dport=53))
    + rec(1, 1, Ether(src=POD_A, dst=VROUTER) / IP(src="198.18.1.10", dst=REMOTE) / ICMP(type=3, code=3) / IP(src=REMOTE, dst="198.18.1.10") / UDP(sport=7, dport=53)),
    # Pod 1's floating IPv6 (2001:db8:64::c8 for 2001:db8:1::a): a TCP connection to it from
    # the fabric and the pod's answer, the pod's ping out and its reply, an ICMPv6 error about
    # the pod's packet, then the floating IPs removed (vif bit 5) and a packet to it again.
    "nat_floating_ipv6": rec(0, 1, Ether(src=PEER, dst="02:00:00:00:00:f1") / IPv6(src=REMOTE6, dst=FLOATING6) / TCP(sport=7000, dport=80, flags="S"))
    + rec(1, 1, Ether(src=POD_A, dst=VROUTER) / IPv6(src=POD_A6, dst=REMOTE6) / TCP(sport=80, dport=7000, flags="SA"))
    + rec(1, 1, Ether(src=POD_A, dst=VROUTER) / IPv6(src=POD_A6, dst=REMOTE6) / ICMPv6EchoRequest(id=9) / Raw(b"p"))
    + rec(0, 0, Ether(src=PEER, dst="02:00:00:00:00:f1") / IPv6(src=REMOTE6, dst=FLOATING6) / ICMPv6EchoReply(id=9) / Raw(b"p"))
    + rec(0, 1, Ether(src=PEER, dst="02:00:00:00:00:f1") / IPv6(src=REMOTE6, dst=FLOATING6) / ICMPv6DestUnreach(code=4) / IPv6(src=FLOATING6, dst=REMOTE6) / TCP(sport=80, dport=7000, flags="SA"))
    + rec(0x20, 1, Ether(src=PEER, dst="02:00:00:00:00:f1") / IPv6(src=REMOTE6, dst=FLOATING6) / TCP(sport=7001, dport=80, flags="S")),
    # Hairpin: pod 2 (behind the pool) to pod 1's floating IP, a TCP connection and a ping;
    # pod 1 answers the pool pairs (no route to them in VRF 5), then the floating IPs go.
    "nat_hairpin": rec(2, 1, pod2(TCP(sport=1000, dport=80, flags="S"), dst="198.51.100.200"))
    + rec(1, 1, Ether(src=POD_A, dst=VROUTER) / IP(src="198.18.1.10", dst=POOL) / TCP(sport=80, dport=40000, flags="SA"))
    + rec(2, 0, pod2(ICMP(type=8, id=5) / Raw(b"p"), dst="198.51.100.200"))
    + rec(1, 1, Ether(src=POD_A, dst=VROUTER) / IP(src="198.18.1.10", dst=POOL) / ICMP(type=0, id=40001) / Raw(b"p"))
    + rec(0x22, 1, pod2(TCP(sport=1000, dport=80, flags="A"), dst="198.51.100.200")),
}
for name, data in seeds.items():
    open(os.path.join("corpus/pipeline_flows", "seed-" + name), "wb").write(data)
