#!/usr/bin/python3
"""Writes the seed corpus of the pipeline_offload target (run from vrouter/fuzz/): GSO and
partial-checksum packets from pod 1 to a pod, into each tunnel, over IPv6, and a UDP run."""
import os, struct
from scapy.all import Ether, IP, IPv6, TCP, UDP, Raw

VROUTER = "00:00:5e:00:01:00"
POD_A = "02:00:00:00:00:0a"

def seed(vif, frame, l4, off, kind, size, split, partial=True):
    flags = (1 if partial else 0) | (kind << 2)
    return struct.pack("<BBHBHH", vif, flags, l4, off, size, split) + bytes(frame)

def tcp4(dst, n):
    return Ether(src=POD_A, dst=VROUTER) / IP(src="198.18.1.10", dst=dst, flags="DF") / TCP(sport=40000, dport=5201, flags="PA") / Raw(bytes(range(256)) * (n // 256))

seeds = {
    "tso4_to_pod": seed(1, tcp4("198.18.1.11", 3072), 34, 16, 1, 500, 200),
    "tso4_to_vxlan": seed(1, tcp4("198.18.2.7", 4096), 34, 16, 1, 1000, 300),
    "tso4_to_mplsoudp": seed(1, tcp4("198.18.3.7", 4096), 34, 16, 1, 1000, 300),
    "tso4_to_mplsogre": seed(1, tcp4("198.18.4.7", 4096), 34, 16, 1, 1000, 300),
    "tso4_ecmp": seed(1, tcp4("198.18.5.7", 4096), 34, 16, 1, 1000, 300),
    "tso6_to_pod": seed(1, Ether(src=POD_A, dst=VROUTER) / IPv6(src="2001:db8:1::a", dst="2001:db8:1::b") / TCP(sport=1, dport=2) / Raw(bytes(3000)), 54, 16, 2, 1000, 200),
    "uso_to_mplsoudp": seed(1, Ether(src=POD_A, dst=VROUTER) / IP(src="198.18.1.10", dst="198.18.3.7") / UDP(sport=1, dport=2) / Raw(bytes(3000)), 34, 6, 3, 1200, 100),
    "partial_only": seed(1, tcp4("198.18.1.11", 256), 34, 16, 0, 0, 2000),
}
for name, data in seeds.items():
    open(os.path.join("corpus/pipeline_offload", "seed-" + name), "wb").write(data)
