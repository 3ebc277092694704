#!/usr/bin/env python3
"""Turns the generator summaries of one scripts/bench.sh run into the results JSON, a markdown
table and a PNG chart.

usage: report.py RAW_JSONL OUT_STEM TSC_KHZ MACHINE COMMAND
"""
import json
import statistics
import sys

raw, stem, tsc_khz, machine, command = sys.argv[1:6]
hz = int(tsc_khz) * 1000

# Which OVS-DPDK case a vrouterd case is compared with.
OVS_MATCH = {
    "vrouterd-l3": "ovs-l3-flows-1",
    "vrouterd-l3-flows-1": "ovs-l3-flows-1",
    "vrouterd-l3-flows-65536": "ovs-l3-flows-65536",
    "vrouterd-snat-flows-65536": "ovs-snat-flows-65536",
}

# A vrouterd case measured against another vrouterd case of the same run (what a feature
# costs): case -> the case without the feature.
BASE_MATCH = {
    "vrouterd-l3-mirror-deaf": "vrouterd-l3",
    # Packed rings against split ones (issue 21's goal: at least 1.15 x at 64 B).
    "vrouterd-l3-packed": "vrouterd-l3",
    "testpmd-ceiling-packed": "testpmd-ceiling",
}

runs = {}
# The host's pace probed beside each run (vr-pace: a cache line's round trip between the two
# CPUs, [[unix ms, ns], ...]): (case, frame) -> one list per run, None where it was not probed.
run_paces = {}


def lat_run(case, size, new):
    """The latest latency run of (case, size), or a new one."""
    for lr in reversed(lat_runs):
        if (lr["case"], lr["frame"]) == (case, size):
            if not new:
                return lr
            break
    lat_runs.append({"case": case, "frame": size, "steps": {}, "zero_loss": None})
    return lat_runs[-1]

# A mirror case's mirror counters after its runs: case -> GET /vifs/{name}/mirror.
mirrors = {}
# TCP cases (vr-tcpbench): (case, mtu, streams) -> Gbit/s of each run.
tcp = {}
# Ping round trips (vr-tcpbench): (case, mtu) -> microseconds of each run.
rtt = {}
# Latency runs, in order: each the steps at 10, 50 and 90 % of the case's peak and the
# zero-loss bisection after them, {"case", "frame", "steps": {load %: {"latency", "gaps",
# "probes"}}, "zero_loss"}. A case measured twice in one run (at two paces, say) has two.
lat_runs = []
# The host's stalls of each CPU, watched before the first case and after the last (vr-gaps):
# [{"when", "cpus": [{"cpu", "lost_pct", "stalls_per_s", "longest_us", ...}]}].
host_gaps = []
# Runs whose frames did not come back as sent (no rate is taken from them): (case, frame) ->
# the generator's summaries.
wrong = {}
with open(raw) as f:
    for line in f:
        line = line.strip()
        if not line:
            continue
        r = json.loads(line)
        if "tcp" in r:
            t = r["tcp"]
            if "rtt_us" in t:
                rtt.setdefault((t["case"], t["mtu"]), []).append(t["rtt_us"])
                continue
            tcp.setdefault((t["case"], t["mtu"], t["streams"]), []).append(t["gbit_per_s"])
            continue
        if "mirror" in r:
            mirrors[r["case"]] = r["mirror"]
            continue
        if "host_gaps" in r:
            host_gaps.append(r["host_gaps"])
            continue
        if "zero_loss" in r:
            z = r["zero_loss"]
            lat_run(r["case"], z["frame_bytes"], new=False)["zero_loss"] = z
            continue
        if "frames_wrong" in r:
            res = r["frames_wrong"]
            wrong.setdefault((r["case"], res["frame_bytes"]), []).append(res)
            continue
        if "latency_load_pct" in r:
            res = r["result"]
            pct = r["latency_load_pct"]
            lr = lat_run(r["case"], res["frame_bytes"], new=(pct == 10))
            lr["steps"][pct] = {"latency": res.get("latency"), "gaps": r.get("switch_poll_gaps"),
                                "probes": r.get("pace"), "peak": r.get("peak"),
                                "stalls": res.get("generator_stalls")}
            continue
        res = r["result"]
        key = (r["case"], res["frame_bytes"])
        runs.setdefault(key, []).append(res)
        run_paces.setdefault(key, []).append(r.get("pace"))

cases = list(dict.fromkeys(case for case, _ in runs))
sizes = sorted({s for _, s in runs})

# Paces. The host moves this VM's vCPUs: the round trip between the two CPUs is then about 50
# or about 400 ns, and every switch forwards at one of two rates with it. A probe within
# PACE_SPLIT x the fastest probe of the whole run is "near" (the fast pace), any other "far".
# Each measured second takes the pace of the probes within it (none or both: left out of the
# per-pace figures), and two cases are compared at one pace, near first, where both have at
# least PACE_MIN_SECONDS seconds at it. Results without probes are compared as before.
# Near and far are relative to the run's fastest probe: a run the host never moved is all
# near. A probe over PROBE_VALID_NS timed the scheduler (one side off its CPU), not a
# placement, and is left out.
PACE_SPLIT = 2.0
PACE_MIN_SECONDS = 2
PROBE_VALID_NS = 5000
probe_ns = [ns for ps in run_paces.values() for p in ps if p for _, ns in p]
probe_ns += [ns for lr in lat_runs for st in lr["steps"].values() for _, ns in st["probes"] or []]
probe_ns = [ns for ns in probe_ns if ns <= PROBE_VALID_NS]
near_below = PACE_SPLIT * min(probe_ns) if probe_ns else None


def pace_of_probes(probes):
    """"near", "far", or None (no valid probe, or both paces)."""
    kinds = {"near" if ns < near_below else "far" for _, ns in probes if ns <= PROBE_VALID_NS}
    return kinds.pop() if len(kinds) == 1 else None


def second_paces(res, probes):
    """[(Mpps, pace)] for each measured second of a run; None if the run was not probed."""
    ends = res.get("unix_ms_per_second")
    if not probes or not ends or near_below is None:
        return None
    out = []
    for rate, end in zip(res["rx_mpps_per_second"], ends):
        within = [p for p in probes if end - 1000 < p[0] <= end]
        out.append((rate, pace_of_probes(within)))
    return out


def by_pace(case, size):
    """{"near": Mpps median, "far": ..., "seconds": {...}} over every run of the case; None
    when its runs were not probed."""
    rs = runs.get((case, size))
    if not rs:
        return None
    per = [second_paces(res, probes) for res, probes in zip(rs, run_paces[(case, size)])]
    if any(p is None for p in per):
        return None
    out = {"seconds": {"near": 0, "far": 0, "both or none": 0}}
    for kind in ("near", "far"):
        vals = [rate for secs in per for rate, p in secs if p == kind]
        out["seconds"][kind] = len(vals)
        out[kind] = round(statistics.median(vals), 4) if vals else None
    out["seconds"]["both or none"] = sum(1 for secs in per for _, p in secs if p is None)
    return out


def compare(case, other, size):
    """(ratio, pace, refusal) of case's rate to other's: at one pace where both were probed;
    no ratio (and no refusal) if other was not measured."""
    if other is None or median_mpps(other, size) is None:
        return None, None, None
    a, b = by_pace(case, size), by_pace(other, size)
    if a is None or b is None:
        m, o = median_mpps(case, size), median_mpps(other, size)
        return (round(m / o, 3) if m and o else None), None, None
    for kind in ("near", "far"):
        if min(a["seconds"][kind], b["seconds"][kind]) >= PACE_MIN_SECONDS and a[kind] and b[kind]:
            return round(a[kind] / b[kind], 3), kind, None
    return None, None, (f"no {PACE_MIN_SECONDS} seconds at one pace in both "
                        f"({a['seconds']} against {b['seconds']})")


def median_mpps(case, size):
    rs = runs.get((case, size))
    if not rs:
        return None
    return statistics.median(r["rx_mpps_median"] for r in rs)

records = []
for case in cases:
    for size in sizes:
        m = median_mpps(case, size)
        if m is None:
            continue
        ovs_case = OVS_MATCH.get(case)
        base_case = BASE_MATCH.get(case)
        to_ceiling = compare(case, "testpmd-ceiling", size)
        to_ovs = compare(case, ovs_case, size)
        to_base = compare(case, base_case, size)
        refused = {o: c[2] for o, c in (("testpmd-ceiling", to_ceiling), (ovs_case, to_ovs), (base_case, to_base)) if c[2]}
        rs = runs[(case, size)]
        records.append({
            "case": case,
            "frame_bytes": size,
            "mpps_median": round(m, 4),
            "mpps_runs": [round(r["rx_mpps_median"], 4) for r in rs],
            "loss_ratio_max": round(max(r["loss_ratio"] for r in rs), 6),
            # Seconds each run warmed up before its rate was steady (older results: unknown).
            "warmup_seconds_runs": [r.get("warmup_seconds") for r in rs],
            "steady_runs": [r.get("steady") for r in rs],
            "mpps_per_second_runs": [r.get("rx_mpps_per_second") for r in rs],
            # Rates at each of the host's paces (see PACE_SPLIT), and the ratios: at one pace
            # (which one beside each), never across two.
            "mpps_by_pace": by_pace(case, size),
            "ratio_to_ceiling": to_ceiling[0],
            "ratio_to_ceiling_pace": to_ceiling[1],
            "ratio_to_ovs": to_ovs[0],
            "ratio_to_ovs_pace": to_ovs[1],
            "ovs_case": ovs_case,
            "ratio_to_base": to_base[0],
            "ratio_to_base_pace": to_base[1],
            "base_case": base_case,
            "ratios_refused": refused or None,
            # A mirror case: its mirror's counters after the runs.
            "mirror": mirrors.get(case),
            # The switch core busy-polls: every cycle of it is spent on the packets it forwards.
            "switch_cycles_per_packet": round(hz / (m * 1e6), 1) if m > 0 else None,
            "frames_wrong_runs": len(wrong.get((case, size), [])),
        })


def wrong_counts(res):
    """What was wrong with one run's frames."""
    keys = ("rx_packets", "rx_bad_length", "rx_bad_content", "rx_out_of_sequence", "rx_chained", "rx_bytes", "frame_len")
    return {k: res.get(k) for k in keys}


# Cases of which no run came back as sent: no rate, only what was wrong.
for (case, size), rs in wrong.items():
    if (case, size) not in runs:
        records.append({"case": case, "frame_bytes": size, "frames_wrong_runs": len(rs),
                        "frames_wrong": [wrong_counts(r) for r in rs]})

tcp_records = []
for (case, mtu, streams), vals in sorted(tcp.items()):
    m = statistics.median(vals)
    kernel = tcp.get(("tcp-kernel-routing", mtu, streams))
    mtu1500 = tcp.get((case, 1500, streams))
    tcp_records.append({
        "case": case,
        "mtu": mtu,
        "streams": streams,
        "gbit_per_s_median": round(m, 3),
        "gbit_per_s_runs": [round(v, 3) for v in vals],
        "ratio_to_kernel_routing": round(m / statistics.median(kernel), 3) if kernel and case == "tcp-vrouterd" else None,
        "ratio_to_mtu_1500": round(m / statistics.median(mtu1500), 3) if mtu1500 and mtu != 1500 else None,
    })
records.extend(tcp_records)
rtt_records = []
for (case, mtu), vals in sorted(rtt.items()):
    m = statistics.median(vals)
    kernel = rtt.get(("rtt-kernel-routing", mtu))
    rtt_records.append({
        "case": case,
        "mtu": mtu,
        "rtt_us_median": round(m, 1),
        "rtt_us_runs": [round(v, 1) for v in vals],
        "ratio_to_kernel_routing": round(m / statistics.median(kernel), 3) if kernel and case == "rtt-vrouterd" else None,
    })
records.extend(rtt_records)

latency_records = []
for lr in sorted(lat_runs, key=lambda lr: (lr["frame"], lr["case"])):
    z = lr["zero_loss"]
    steps = {str(p): lr["steps"].get(p) or {} for p in (10, 50, 90)}
    latency_records.append({
        "case": lr["case"],
        "frame_bytes": lr["frame"],
        "kind": "latency",
        # One-way, generator to sink through the switch, at 10 / 50 / 90 % of the case's peak.
        "latency_us": {p: st.get("latency") for p, st in steps.items()},
        "switch_poll_gaps": {p: st.get("gaps") for p, st in steps.items()},
        # The host's stalls of the generator's CPU during each step (vr-trafgen): how much of
        # the tail is the host's, whatever the switch.
        "generator_stalls": {p: st.get("stalls") for p, st in steps.items()},
        "zero_loss_mpps": round(z["pps"] / 1e6, 4) if z else None,
        "zero_loss_ratio_to_peak": round(z["pps"] / z["peak_pps"], 3) if z and z["peak_pps"] else None,
        # The host's pace before and after each step: near, far, or None (both, or unprobed).
        "pace": {p: (pace_of_probes(st["probes"]) if st.get("probes") and near_below else None)
                 for p, st in steps.items()},
        # The peak each step's share was taken of: of the seconds at the pace probed just
        # before the step (true), or of all the case's runs (false: none at that pace; None:
        # from before the bench took it per step).
        "peak_at_step_pace": {p: (st.get("peak") or {}).get("at_step_pace") for p, st in steps.items()},
    })
records.extend(latency_records)
# Each ring of the bench's ports (virtio-user queue_size): a stall longer than it holds at the
# offered rate loses packets, whatever the switch does.
RING_ENTRIES = 1024
for g in host_gaps:
    for c in g["cpus"]:
        longest = c.get("longest_us") or 0
        # The highest rate at which a ring rides out the longest stall: a zero-loss trial above
        # it that meets such a stall fails, whatever the switch.
        c["ring_outlasts_longest_stall_below_mpps"] = round(RING_ENTRIES / longest, 3) if longest else None
    records.append({"kind": "host_gaps", **g})

meta = {"machine": machine, "command": command, "tsc_hz": hz, "results": records}
with open(stem + ".json", "w") as f:
    json.dump(records, f, indent=2)
    f.write("\n")
with open(stem + ".meta.json", "w") as f:
    json.dump(meta, f, indent=2)
    f.write("\n")

def fmt(v, spec="{:.2f}"):
    return "–" if v is None else spec.format(v)


def ratio(r, key, other):
    """A ratio cell: the figure and the pace it was taken at (n: near, f: far), or "≠ pace"."""
    if r[key] is None:
        return "≠ pace" if other in (r.get("ratios_refused") or {}) else "–"
    p = r.get(key + "_pace")
    return fmt(r[key]) + (f" {p[0]}" if p else "")


def paced(r):
    p = r.get("mpps_by_pace")
    if not p:
        return "–"
    return f"{fmt(p['near'], '{:.2f}')} / {fmt(p['far'], '{:.2f}')}"

lines = [
    f"Machine: {machine}  ",
    f"Command: `{command}`  ",
    "Mpps = median over the runs of each run's median per-second receive rate, measured once",
    "the rate was steady (warm-up s: per run; * = never steady within the bound). The host moves",
    "this VM's CPUs: a cache line's round trip between them is then near (fast pace) or far",
    "(slow), probed every 500 ms; near / far = the median of the seconds at each pace. A ratio is",
    "taken at one pace (n: near, f: far), never across two; ≠ pace: no seconds at one pace in both.",
    "",
    "| case | frame | Mpps (median) | Mpps near / far | × testpmd ceiling | × OVS-DPDK | cycles/pkt on the switch core | warm-up s |",
    "|---|---:|---:|---:|---:|---:|---:|---:|",
]


def warmups(r):
    """Warm-up seconds of each run, `*` where the rate never settled."""
    ws = [
        "?" if w is None else f"{w}{'' if st in (True, None) else '*'}"
        for w, st in zip(r["warmup_seconds_runs"], r["steady_runs"])
    ]
    return ", ".join(ws)


for r in records:
    if "mpps_median" not in r:
        continue  # TCP, round-trip and latency records have tables of their own
    lines.append(
        f"| {r['case']} | {r['frame_bytes']} B | {r['mpps_median']:.3f} | {paced(r)} | "
        f"{ratio(r, 'ratio_to_ceiling', 'testpmd-ceiling')} | {ratio(r, 'ratio_to_ovs', r['ovs_case'])} | "
        f"{fmt(r['switch_cycles_per_packet'], '{:.0f}')} | {warmups(r)} |"
    )
if wrong:
    lines += ["", "Runs whose frames did not all come back as sent (wrong length or content, out of",
              "sequence): **no rate is quoted from them**.", ""]
    for (case, size), rs in sorted(wrong.items()):
        for r in rs:
            lines.append(
                f"- {case} {size} B: {r.get('rx_bad')} bad of {r.get('rx_packets', 0) + (r.get('rx_bad') or 0)} frames "
                f"(length {r.get('rx_bad_length')}, content {r.get('rx_bad_content')}, out of sequence "
                f"{r.get('rx_out_of_sequence')}), {r.get('rx_bytes')} bytes received")
based = [r for r in records if r.get("ratio_to_base") is not None]
if based:
    lines += ["", "A feature's cost: a vrouterd case against the same case without it, same run.", ""]
    for r in based:
        m = mirrors.get(r["case"], {})
        extra = ""
        if m:
            extra = (f" (mirror copies made {m.get('copies', 0)}, skipped while the analyzer was full "
                     f"{m.get('copies_skipped', 0)})")
        at = f" (at the {r['ratio_to_base_pace']} pace)" if r.get("ratio_to_base_pace") else ""
        lines.append(f"- {r['case']} {r['frame_bytes']} B: {r['ratio_to_base']:.3f} × {r['base_case']}{at}{extra}")
refusals = [(r, other, why) for r in records for other, why in (r.get("ratios_refused") or {}).items()]
if refusals:
    lines += ["", "Not compared (the two cases have no seconds measured at one pace):", ""]
    for r, other, why in refusals:
        lines.append(f"- {r['case']} {r['frame_bytes']} B against {other}: {why}")


def pcts(d):
    if not d:
        return "–"
    # null: beyond the generator's 10 ms histogram.
    return " / ".join("> 10000" if d[k] is None else f"{d[k]:.1f}" for k in ("p50_us", "p99_us", "p999_us"))


if latency_records:
    lines += [
        "",
        "One-way latency (µs, p50 / p99 / p99.9; generator and sink on one core, bursts of 8) at a",
        "share of each case's peak, and the zero-loss rate (bisection, 7 steps below the peak);",
        "for vrouterd, its forwarding lcore's poll gaps over 10 µs / 100 µs / 1 ms during the 50 % run;",
        "the host's stalls of the generator's CPU a second over 1 ms during the 50 % run (vr-trafgen);",
        "the host's pace probed before and after each of the three steps (n: near, f: far, ?: both or",
        "unprobed; * where the step's share is of the peak of all paces, none having been measured at",
        "its own): compare steps of one pace only.",
        "",
        "| case | frame | at 10 % | at 50 % | at 90 % | zero-loss Mpps | × peak | lcore gaps at 50 % | host stalls/s at 50 % | pace |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in latency_records:
        l = r["latency_us"]
        g = r["switch_poll_gaps"]["50"]
        g = f"{g['over_10us']} / {g['over_100us']} / {g['over_1ms']}" if g else "–"
        st = r["generator_stalls"]["50"]
        st = f"{st['over_1ms_per_s']:.1f}" if st else "–"
        lines.append(
            f"| {r['case']} | {r['frame_bytes']} B | {pcts(l['10'])} | {pcts(l['50'])} | {pcts(l['90'])} | "
            f"{fmt(r['zero_loss_mpps'], '{:.3f}')} | {fmt(r['zero_loss_ratio_to_peak'])} | {g} | {st} | "
            f"{' '.join((r['pace'][p] or '?')[0] + ('*' if r['peak_at_step_pace'][p] is False else '') for p in ('10', '50', '90'))} |"
        )
if host_gaps:
    lines += [
        "",
        "The host's stalls of each CPU (vr-gaps: a poller on each CPU at once, 2 s, no switch",
        "running): time lost in stalls of 10 µs or more, stalls a second over 10 µs / 100 µs / 1 ms,",
        f"the longest, and the rate above which a {RING_ENTRIES}-entry ring overflows during it (a",
        "zero-loss trial above that rate which meets such a stall loses packets, whatever the switch).",
        "",
        "| when | CPU | lost | stalls/s | longest µs | ring outlasts it below Mpps |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for g in host_gaps:
        for c in g["cpus"]:
            st = c["stalls_per_s"]
            lines.append(
                f"| {g['when']} | {c['cpu']} | {c['lost_pct']:.2f} % | "
                f"{st['over_10us']:.0f} / {st['over_100us']:.1f} / {st['over_1ms']:.1f} | {c['longest_us']:.0f} | "
                f"{fmt(c['ring_outlasts_longest_stall_below_mpps'], '{:.3f}')} |"
            )
if tcp_records:
    lines += [
        "",
        "TCP between kernel pods with default offloads (iperf3) and from a TCG guest to a pod;",
        "Gbit/s = median over the runs.",
        "",
        "| case | MTU | streams | Gbit/s (median) | × kernel routing | × MTU 1500 |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for r in tcp_records:
        lines.append(
            f"| {r['case']} | {r['mtu']} | {r['streams']} | {r['gbit_per_s_median']:.2f} | "
            f"{fmt(r['ratio_to_kernel_routing'])} | {fmt(r['ratio_to_mtu_1500'])} |"
        )
if rtt_records:
    lines += [
        "",
        "Ping round trip between the same kernel pods (100 pings, 10 ms apart, after the TCP runs).",
        "",
        "| case | MTU | µs (median) | × kernel routing |",
        "|---|---:|---:|---:|",
    ]
    for r in rtt_records:
        lines.append(
            f"| {r['case']} | {r['mtu']} | {r['rtt_us_median']:.0f} | {fmt(r['ratio_to_kernel_routing'])} |"
        )
with open(stem + ".md", "w") as f:
    f.write("\n".join(lines) + "\n")

try:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = 2 if latency_records else 1
    fig, axes = plt.subplots(rows, max(len(sizes), 1), figsize=(6 * max(len(sizes), 1), 5 * rows), squeeze=False)
    for ax, size in zip(axes[0], sizes):
        rs = [r for r in records if r.get("frame_bytes") == size and "mpps_median" in r]
        names = [r["case"] for r in rs]
        vals = [r["mpps_median"] for r in rs]
        colors = ["#4a7" if n.startswith("vrouterd") else "#888" if n.startswith("testpmd") else "#58c" for n in names]
        ax.barh(names, vals, color=colors)
        ax.invert_yaxis()
        ax.set_xlabel("Mpps (median)")
        ax.set_title(f"{size}-byte frames, one forwarding core")
        for i, v in enumerate(vals):
            ax.text(v, i, f" {v:.2f}", va="center", fontsize=8)
    # Second row: p99 one-way latency at 10 / 50 / 90 % of each case's peak (log scale).
    for ax, size in zip(axes[1] if rows == 2 else [], sizes):
        rs = [r for r in latency_records if r["frame_bytes"] == size]
        for j, pct in enumerate(("10", "50", "90")):
            vals = [(r["latency_us"][pct] or {}).get("p99_us") or 0 for r in rs]
            ax.barh([i + (j - 1) * 0.27 for i in range(len(rs))], vals, height=0.27, label=f"at {pct} %")
        ax.set_yticks(range(len(rs)), [r["case"] for r in rs])
        ax.invert_yaxis()
        ax.set_xscale("log")
        ax.set_xlabel("p99 one-way latency, µs (log)")
        ax.set_title(f"{size}-byte frames: p99 latency at a share of the peak")
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(stem + ".png", dpi=100)
except ImportError:
    print("report: matplotlib missing, no chart", file=sys.stderr)

print("\n".join(lines))
