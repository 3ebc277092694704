#!/usr/bin/env python3
"""Writes the checked-in seed corpora (run from vhost-user/fuzz/)."""
import struct, os

def req(code, payload=b"", flags=1):
    return struct.pack("<III", code, flags, len(payload)) + payload

def st(i, n):
    return struct.pack("<II", i, n)

d = "corpus/session"
seeds = {
    "negotiate": req(1) + req(3) + req(2, struct.pack("<Q", (1 << 32) | (1 << 15) | (1 << 30)))
        + req(15) + req(16, struct.pack("<Q", 0x10009)) + req(17),
    "vring_setup": req(8, st(0, 256), 9) + req(10, st(0, 0), 9)
        + req(9, struct.pack("<IIQQQQ", 0, 0, 0x7f0000000000, 0x7f0000002000, 0x7f0000001000, 0), 9)
        + req(12, struct.pack("<Q", 0x100), 9) + req(18, st(0, 1), 9) + req(11, st(0, 0)),
    "mem_table_no_fds": req(5, struct.pack("<II", 1, 0) + struct.pack("<QQQQ", 0, 1 << 20, 0x7f0000000000, 0), 9),
    "config_status": req(24, struct.pack("<III", 0, 12, 0) + bytes(12)) + req(39, struct.pack("<Q", 15), 9) + req(40),
    "bad_sizes": req(2, b"\x01\x02\x03", 9) + req(9, bytes(39), 9) + req(999, b"abc", 9),
    "reset": req(4) + req(34) + req(39, struct.pack("<Q", 0)),
}
# A full set-up over the fuzz target's memfd (1 MiB at gpa 0, frontend address 0x7f0000000000):
# both rings of queue pair 0 started, then traffic, then the file truncated under them.
UVA = 0x7f0000000000
def vring(i, desc, used, avail):
    return (req(8, st(i, 256), 9) + req(10, st(i, 0), 9)
        + req(9, struct.pack("<IIQQQQ", i, 0, UVA + desc, UVA + used, UVA + avail, 0), 9)
        + req(12, struct.pack("<Q", 0x100 | i), 9) + req(18, st(i, 1), 9))
setup = (req(1) + req(3) + req(2, struct.pack("<Q", (1 << 32) | (1 << 15) | (1 << 28) | (1 << 29) | (1 << 30)))
    + req(15) + req(16, struct.pack("<Q", 0x10009))
    + req(5, struct.pack("<II", 1, 0) + struct.pack("<QQQQ", 0, 1 << 20, UVA, 0), 9)
    + vring(0, 0x10000, 0x14000, 0x12000) + vring(1, 0x20000, 0x24000, 0x22000))
seeds["full_setup"] = setup
seeds["truncate_half"] = setup + req(0x7ff0, struct.pack("<Q", 1 << 19))
seeds["truncate_all"] = setup + req(0x7ff0, struct.pack("<Q", 0))
seeds["new_table_while_running"] = setup + req(5, struct.pack("<II", 1, 0) + struct.pack("<QQQQ", 0, 1 << 19, UVA, 0), 9) + req(11, st(0, 0), 9)
# Live migration: LOG_SHMFD negotiated, the log at 0xF0000 of the guest file (32 bytes: 1 MiB
# of pages), LOG_ALL switched on while the rings run, the used rings logged at their own
# address, more traffic, GET_VRING_BASE; and logs the session must refuse.
LOG_ALL = 1 << 26
mig = (req(1) + req(3) + req(2, struct.pack("<Q", (1 << 32) | (1 << 15) | (1 << 28) | (1 << 29) | (1 << 30)))
    + req(15) + req(16, struct.pack("<Q", 0x1000b))
    + req(5, struct.pack("<II", 1, 0) + struct.pack("<QQQQ", 0, 1 << 20, UVA, 0), 9)
    + vring(0, 0x10000, 0x14000, 0x12000) + vring(1, 0x20000, 0x24000, 0x22000))
def vring_log(i, desc, used, avail):
    return req(9, struct.pack("<IIQQQQ", i, 1, UVA + desc, UVA + used, UVA + avail, used), 9)
seeds["log_all_while_running"] = (mig + req(6, struct.pack("<QQ", 32, 0xF0000))
    + req(2, struct.pack("<Q", (1 << 32) | (1 << 15) | (1 << 28) | (1 << 29) | (1 << 30) | LOG_ALL))
    + vring_log(0, 0x10000, 0x14000, 0x12000) + vring_log(1, 0x20000, 0x24000, 0x22000)
    + req(7, b"", 9) + req(11, st(0, 0)) + req(11, st(1, 0)))
seeds["log_then_truncate"] = seeds["log_all_while_running"] + req(0x7ff0, struct.pack("<Q", 0xF0000))
seeds["log_bad_offset"] = mig + req(6, struct.pack("<QQ", 32, 1 << 20))
seeds["log_zero_size"] = mig + req(6, struct.pack("<QQ", 0, 0))
seeds["log_short_payload"] = mig + req(6, struct.pack("<Q", 32))
for name, data in seeds.items():
    open(os.path.join(d, "seed-" + name), "wb").write(data)

# desc_chain: [size selector][features][RAM image]; size 8 -> selector 2.
GPA = 0x1_0000_0000
def ram_image(size, descs, heads, avail_idx, extra):
    desc = b"".join(struct.pack("<QIHH", *x) for x in descs).ljust(16 * size, b"\0")
    avail = struct.pack("<HH", 0, avail_idx) + b"".join(struct.pack("<H", h) for h in heads).ljust(2 * size, b"\0") + b"\0\0"
    img = desc + avail
    img = img.ljust((len(img) + 3) // 4 * 4, b"\0")
    img += bytes(6 + 8 * size)
    return img.ljust(8192, b"\0") + extra

d = "corpus/desc_chain"
BUF = GPA + 8192
bufdata = bytes(range(256)) * 16
seeds = {
    "single": ram_image(8, [(BUF, 72, 0, 0)], [0], 1, bufdata),
    "chained": ram_image(8, [(BUF, 12, 1, 1), (BUF + 64, 60, 1, 2), (BUF + 256, 100, 0, 0)], [0], 1, bufdata),
    "indirect": ram_image(8, [(BUF + 1024, 32, 4, 0)], [0], 1, bufdata[:1024]
        + struct.pack("<QIHH", BUF, 40, 1, 1) + struct.pack("<QIHH", BUF + 100, 40, 0, 0) + bufdata[:1024]),
    "rx_writable": ram_image(8, [(BUF, 2048, 2, 0), (BUF + 2048, 2048, 2, 0)], [0, 1], 2, bufdata),
    "loop": ram_image(8, [(BUF, 12, 1, 1), (BUF, 12, 1, 0)], [0], 1, bufdata),
}
for name, img in seeds.items():
    sel = 2
    open(os.path.join(d, "seed-" + name), "wb").write(bytes([sel, 0b011]) + img)

# packed_ring: [size - 1][features][base le16][RAM image]: the ring of `size` descriptors at
# offset 0, the driver and device event areas after it, buffers from 8 KiB.
AVAIL, USED, NEXT, WRITE, INDIRECT = 1 << 7, 1 << 15, 1, 2, 4
def packed_image(size, descs, extra):
    ring = b"".join(struct.pack("<QIHH", *x) for x in descs).ljust(16 * size, b"\0")
    return (ring + bytes(8)).ljust(8192, b"\0") + extra

d = "corpus/packed_ring"
os.makedirs(d, exist_ok=True)
seeds = {
    "single": bytes([7, 3]) + struct.pack("<H", 0x8000) + packed_image(8, [(BUF, 72, 0, AVAIL)], bufdata),
    "chained": bytes([7, 3]) + struct.pack("<H", 0x8000) + packed_image(8, [(BUF, 12, 0, AVAIL | NEXT), (BUF + 64, 60, 0, AVAIL | NEXT), (BUF + 256, 100, 5, AVAIL)], bufdata),
    "indirect": bytes([7, 3]) + struct.pack("<H", 0x8000) + packed_image(8, [(BUF + 1024, 32, 1, AVAIL | INDIRECT)], bufdata[:1024]
        + struct.pack("<QIHH", BUF, 40, 0, 0) + struct.pack("<QIHH", BUF + 100, 40, 0, 0) + bufdata[:1024]),
    "rx_writable": bytes([7, 1]) + struct.pack("<H", 0x8000) + packed_image(8, [(BUF + 2048 * i, 2048, i, AVAIL | WRITE) for i in range(8)], bufdata),
    "wrapped": bytes([7, 1]) + struct.pack("<H", 0x0006) + packed_image(8, [(BUF, 2048, 0, USED | WRITE)] * 8, bufdata),
}
for name, data in seeds.items():
    open(os.path.join(d, "seed-" + name), "wb").write(data)
