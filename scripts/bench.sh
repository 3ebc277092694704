#!/usr/bin/env bash
# Side-by-side benchmark: vrouterd vs DPDK's own vhost switch (testpmd, io forwarding over two
# net_vhost ports: the ceiling) and OVS-DPDK, on the same machine, in one run, same traffic.
# Each switch gets one forwarding core (CPU 1); the generator (vr-trafgen, two virtio-user ports)
# runs on CPU 0. Each case: warm-up until the rate is steady (three consecutive seconds within
# 2 %, at least 2 s, at most BENCH_WARMUP_MAX s: OVS spends its first seconds of many flows in
# upcalls), then BENCH_SECONDS measured, BENCH_REPS times, at 64 B and 1518 B. Writes
# bench/results/<date>.{json,md,png}, the per-second rates and warm-up times included.
# The sink checks every frame (length, headers, the end of the payload, sequence): a run in
# which any came back otherwise gets no rate, only a FRAMES NOT AS SENT line and its counts.
# Beside every run vr-pace probes where the host has put the two CPUs (near or far: every
# switch runs about 1.6 x faster near), and the report takes each ratio at one placement.
#
#   scripts/bench.sh            (as root, on a fresh Debian 12 machine)
#   BENCH_SECONDS=10 BENCH_REPS=3 BENCH_SIZES="64 1518" BENCH_CASES="testpmd-ceiling vrouterd-l3"
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD

SECONDS_MEASURED=${BENCH_SECONDS:-10}
REPS=${BENCH_REPS:-3}
SIZES=${BENCH_SIZES:-"64 1518"}
# Cases whose latency (at 10, 50 and 90 % of their peak) and zero-loss rate are measured too.
LATENCY_CASES=${BENCH_LATENCY_CASES:-"testpmd-ceiling ovs-l3-flows-1 vrouterd-l3"}
LATENCY_SECONDS=${BENCH_LATENCY_SECONDS:-5}
CASES=${BENCH_CASES:-"testpmd-ceiling testpmd-ceiling-packed ovs-port ovs-l3-flows-1 ovs-l3-flows-65536 ovs-snat-flows-65536 vrouterd-l3 vrouterd-l3-packed vrouterd-l3-flows-1 vrouterd-l3-flows-65536 vrouterd-snat-flows-65536 vrouterd-l3-mirror-deaf vrouterd-overlay-vxlan vrouterd-overlay-mplsoudp vrouterd-overlay-mplsogre tcp"}
WARMUP=2
WARMUP_MAX=${BENCH_WARMUP_MAX:-60}
STEADY_PCT=2
SWITCH_CPU=1
GEN_CPU=0
VROUTER_MAC=00:00:5e:00:01:00

scripts/install-deps.sh
missing=()
for p in openvswitch-switch-dpdk python3-matplotlib; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
    echo "bench: installing ${missing[*]}"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
scripts/hugepages.sh 1536
cargo build --release --locked -p vrouterd -p control-api -p bench --bins

# Follow CARGO_TARGET_DIR, or a build there would leave older binaries here to be measured.
bin=${CARGO_TARGET_DIR:-$root/target}/release
work=$(mktemp -d /tmp/vrbench.XXXXXX)
date_tag=$(date -u +%Y-%m-%dT%H%MZ)
raw=$work/raw.jsonl
: > "$raw"
pids=()

cleanup() {
    [[ -n ${pace_pid:-} ]] && kill "$pace_pid" 2>/dev/null || true
    for p in "${pids[@]:-}"; do [[ -n $p ]] && kill "$p" 2>/dev/null || true; done
    sleep 1
    for p in "${pids[@]:-}"; do [[ -n $p ]] && kill -9 "$p" 2>/dev/null || true; done
    if [[ -f $work/ovs/vswitchd.pid ]]; then kill "$(cat "$work/ovs/vswitchd.pid")" 2>/dev/null || true; fi
    if [[ -f $work/ovs/ovsdb.pid ]]; then kill "$(cat "$work/ovs/ovsdb.pid")" 2>/dev/null || true; fi
    rm -rf /var/run/dpdk/vrbench-* 2>/dev/null || true
    for d in /dev/hugepages /mnt/huge; do rm -f "$d"/vrbench-* 2>/dev/null || true; done
    rm -rf "$work"
}
trap cleanup EXIT

# vr-trafgen against two socket paths; prints the summary JSON line. $1 $2 = devargs of tx / rx;
# the run's timing ($6, default: warm up until steady, then BENCH_SECONDS) and further
# vr-trafgen arguments (a fixed rate, latency) follow.
trafgen() {
    local tx=$1 rx=$2 size=$3 flows=$4 prefix=$5
    local timing=${6:-"--warmup $WARMUP --steady-pct $STEADY_PCT --warmup-max $WARMUP_MAX --duration $SECONDS_MEASURED"}
    shift $(($# < 6 ? $# : 6))
    # shellcheck disable=SC2086 # $timing is a list of arguments
    taskset -c $GEN_CPU "$bin/vr-trafgen" --tx "$tx" --rx "$rx" --frame-bytes "$size" --flows "$flows" \
        $timing --dst-mac "$VROUTER_MAC" "$@" -- \
        -l $GEN_CPU --no-pci --in-memory --single-file-segments -m 512 --file-prefix="vrbench-gen-$prefix" \
        --log-level=warning 2>"$work/trafgen.err" | tail -1
}

# The host's pace beside a run: vr-pace times a cache line's round trip between the switch's
# and the generator's CPUs (about 50 or 400 ns on a shared host that moves its vCPUs, and every
# switch forwards at one of two paces with it) for 1 ms every 500 ms, as JSON lines in
# $work/pace.jsonl. pace_start before the run, pace_stop after prints [[unix ms, ns], ...].
# Real-time priority (chrt): beside busy-polling threads a probe timed the scheduler, not the
# CPUs, unless both its sides preempt at once; 2 ms a second is far below RT throttling.
vr_pace() {
    chrt -f 10 "$bin/vr-pace" --cpu $SWITCH_CPU --beside $GEN_CPU "$@"
}
# vr-pace's lines on stdin as [[unix ms, ns], ...] (probes that timed nothing left out; [] if
# there are none or they do not parse).
probes() {
    local p
    p=$(jq -sc '[.[] | select(.round_trip_ns != null) | [.unix_ms, .round_trip_ns]]' 2>/dev/null) || p='[]'
    echo "${p:-[]}"
}
pace_start() {
    : > "$work/pace.jsonl"
    vr_pace --ms 1 --every-ms 500 >> "$work/pace.jsonl" 2>"$work/pace.err" &
    pace_pid=$!
}
pace_stop() {
    kill "$pace_pid" 2>/dev/null || true
    wait "$pace_pid" 2>/dev/null || true
    probes < "$work/pace.jsonl"
}
# The host's stalls of each CPU (vr-gaps, 2 s, both CPUs spinning at normal priority as the
# switch and generator do), before the first case and after the last, while no switch runs:
# where every switch's latency tail lies, and how long a stall a ring must ride out.
host_gaps() {
    local when=$1 cpus
    cpus=$("$bin/vr-gaps" --cpus $GEN_CPU,$SWITCH_CPU --ms 2000 2>/dev/null | jq -sc .) || cpus="[]"
    echo "{\"host_gaps\":{\"when\":\"$when\",\"cpus\":${cpus:-[]}}}" >> "$raw"
    echo "bench: host stalls $when: $(jq -r 'map("CPU \(.cpu) \(.lost_pct) % lost, \(.stalls_per_s.over_1ms)/s over 1 ms, longest \(.longest_us) µs") | join("; ")' <<<"${cpus:-[]}")"
}

# One probe (5 ms), as [[unix ms, ns]]: before and after each latency step, not during it (a
# probe takes both CPUs for its milliseconds, which the latency tail would show).
pace_once() {
    vr_pace --ms 5 2>/dev/null | probes
}

# Whether a summary line ($1) says every frame of ours came back whole, as sent and in sequence
# (a summary without the check, from an older generator, is not taken on trust either).
frames_ok() {
    jq -e '.frames_ok == true' <<<"$1" >/dev/null
}

# What was wrong with the frames of a summary line ($1), in words.
frames_wrong() {
    jq -r '"\(.rx_bad) of \(.rx_packets + .rx_bad) frames not as sent (length \(.rx_bad_length), content \(.rx_bad_content), out of sequence \(.rx_out_of_sequence); \(.rx_chained) chained), \(.rx_bytes) bytes received where the good frames make \(.rx_packets * .frame_len)"' <<<"$1"
}

# One run at a fixed offered rate ($6 packets/s), LATENCY_SECONDS long, stamping every frame;
# prints the summary line (empty if the run failed).
offered() {
    local tx=$1 rx=$2 size=$3 flows=$4 prefix=$5 pps=$6
    trafgen "$tx" "$rx" "$size" "$flows" "$prefix" "--warmup 1 --duration $LATENCY_SECONDS" \
        --rate-pps "$pps" --latency --burst 8 || true
}

# The forwarding lcore's poll gaps (GET /stats) while vrouterd is the switch under test, else
# "null": turns of its loop that began late, the lcore busy or its CPU taken from it.
vrouterd_poll_gaps() {
    local gaps
    gaps=$("$bin/vrouterctl" --socket "$work/vr/ctl.sock" --json stats 2>/dev/null | jq -c '.lcores[0].poll_gaps // null' 2>/dev/null) || true
    echo "${gaps:-null}"
}

# The peak (pps) of case $1 at $2 bytes at the host's pace of probe $3 (nanoseconds, or null),
# from the case's throughput runs just made, as {"pps", "at_step_pace"}: the median of their
# seconds measured at that pace (a second takes the pace of the probes within it: near below 2 ×
# the fastest of those runs' probes and $3, else far), or, where that pace has fewer than two seconds,
# the median of the runs (at_step_pace false). bench/report.py cuts the same way over the whole
# run's probes.
peak_at_pace() {
    jq -sc --arg c "$1" --argjson s "$2" --argjson ns "$3" --argjson n "$REPS" '
        [.[] | select(.case == $c and .rep != null and .result.frame_bytes == $s)] | .[-$n:]
        | . as $runs
        | ([$runs[] | .pace[]?[1], $ns | select(. != null and . < 5000)] | min) as $fastest
        | (if $fastest == null or $ns == null or $ns >= 5000 then null
           elif $ns < 2 * $fastest then "near" else "far" end) as $want
        | [$runs[] | .pace as $p | .result | select(.unix_ms_per_second != null) | . as $r
           | range(0; $r.rx_mpps_per_second | length) as $i
           | $r.unix_ms_per_second[$i] as $ended
           | [$p[]? | select(.[0] > $ended - 1000 and .[0] <= $ended and .[1] < 5000)
              | if .[1] < 2 * $fastest then "near" else "far" end] | unique
           | select(. == [$want]) | $r.rx_mpps_per_second[$i]] | sort as $at
        | if $want != null and ($at | length) >= 2
          then {pps: ($at[($at | length) / 2 | floor] * 1e6 | floor), at_step_pace: true}
          else {pps: (([$runs[].result.rx_mpps_median] | sort | .[length / 2 | floor] // 0) * 1e6 | floor),
                at_step_pace: false} end' "$raw"
}

# Latency at 10, 50 and 90 % of the case's measured peak at the pace the host is in just before
# each step (a peak of the other pace would make "50 %" 30 or 80 %), then the zero-loss rate: a
# bisection (7 steps) between 0 and the peak of all paces for the highest offered rate at which
# nothing is lost while measured (a trial's warm-up second, the switch taking its queues, does
# not count).
latency_and_zero_loss() {
    local case=$1 tx=$2 rx=$3 flows=$4 size=$5
    local peak_pps
    # The peak of the runs just made, of all paces (a case may come twice in one bench run).
    peak_pps=$(peak_at_pace "$case" "$size" null | jq .pps)
    if ((peak_pps == 0)); then echo "bench: $case ${size}B: no peak to take latency at"; return; fi
    for pct in 10 50 90; do
        local line gaps_before gaps pace_before pace step_peak
        gaps_before=$(vrouterd_poll_gaps)
        pace_before=$(pace_once)
        step_peak=$(peak_at_pace "$case" "$size" "$(jq -c '.[-1][1] // null' <<<"$pace_before")")
        line=$(offered "$tx" "$rx" "$size" "$flows" "$case-$size-lat$pct" $(($(jq .pps <<<"$step_peak") * pct / 100)))
        pace=$(jq -nc --argjson a "$pace_before" --argjson b "$(pace_once)" '$a + $b')
        gaps=$(jq -nc --argjson a "$gaps_before" --argjson b "$(vrouterd_poll_gaps)" \
            'if $a == null or $b == null then null else $b | with_entries(.value -= $a[.key]) end')
        if [[ $line == *'"summary":true'* ]] && ! frames_ok "$line"; then
            echo "{\"case\":\"$case\",\"latency_load_pct\":$pct,\"frames_wrong\":$line}" >> "$raw"
            echo "bench: $case ${size}B at $pct %: FRAMES NOT AS SENT, no latency quoted: $(frames_wrong "$line")"
        elif [[ $line == *'"summary":true'* ]]; then
            echo "{\"case\":\"$case\",\"latency_load_pct\":$pct,\"result\":$line,\"switch_poll_gaps\":$gaps,\"pace\":$pace,\"peak\":$step_peak}" >> "$raw"
            echo "bench: $case ${size}B at $pct % of $(jq -r '"\(.pps / 1e6) Mpps\(if .at_step_pace then "" else " (all paces)" end)"' <<<"$step_peak"): latency $(jq -c '.latency | del(.share_over_us)' <<<"$line") µs$([[ $gaps == null ]] || echo ", vrouterd lcore poll gaps $gaps")"
        fi
    done
    local lo=0 hi=$peak_pps
    for step in 1 2 3 4 5 6 7; do
        local mid=$(((lo + hi) / 2)) line
        line=$(offered "$tx" "$rx" "$size" "$flows" "$case-$size-zl$step" "$mid")
        if [[ $line == *'"summary":true'* ]] && jq -e '(.measured // .) as $m | $m.tx_dropped == 0 and $m.rx_packets >= $m.tx_packets and .frames_ok == true' <<<"$line" >/dev/null; then
            lo=$mid
        else
            hi=$mid
        fi
    done
    echo "{\"case\":\"$case\",\"zero_loss\":{\"frame_bytes\":$size,\"pps\":$lo,\"peak_pps\":$peak_pps}}" >> "$raw"
    echo "bench: $case ${size}B: zero-loss $lo pps ($(awk -v a=$lo -v b=$peak_pps 'BEGIN { printf "%.2f", a / b }') × peak)"
}

# Runs the generator REPS times per frame size and records each summary under case $1; for the
# LATENCY_CASES, latency and the zero-loss rate after.
measure() {
    local case=$1 tx=$2 rx=$3 flows=$4
    for size in $SIZES; do
        for rep in $(seq 1 "$REPS"); do
            local line pace
            pace_start
            line=$(trafgen "$tx" "$rx" "$size" "$flows" "$case-$size-$rep") || line=""
            pace=$(pace_stop)
            if [[ $line == *'"summary":true'* ]] && ! frames_ok "$line"; then
                # Never a rate: what came back is not what was sent.
                echo "{\"case\":\"$case\",\"rep\":$rep,\"frames_wrong\":$line}" >> "$raw"
                echo "bench: $case ${size}B rep $rep: FRAMES NOT AS SENT, no rate quoted: $(frames_wrong "$line")"
            elif [[ $line == *'"summary":true'* ]]; then
                echo "{\"case\":\"$case\",\"rep\":$rep,\"result\":$line,\"pace\":$pace}" >> "$raw"
                echo "bench: $case ${size}B rep $rep: $(jq -r '.rx_mpps_median' <<<"$line") Mpps (loss $(jq -r '.loss_ratio' <<<"$line"), warm-up $(jq -r '.warmup_seconds' <<<"$line") s$(jq -r 'if .steady then "" else ", never steady" end' <<<"$line"); frames as sent: $(jq -r '"\(.rx_bytes) bytes in \(.rx_packets) frames of \(.frame_len)"' <<<"$line"); round trip between the CPUs $(jq -r 'map(.[1]) | if length == 0 then "not probed" else "\(min | round)–\(max | round) ns" end' <<<"$pace"))"
            else
                echo "bench: $case ${size}B rep $rep: no result ($(tail -2 "$work/trafgen.err" | tr '\n' ' '))"
            fi
        done
        if [[ " $LATENCY_CASES " == *" $case "* ]]; then
            latency_and_zero_loss "$case" "$tx" "$rx" "$flows" "$size"
        fi
    done
}

stop_pids() {
    for p in "${pids[@]:-}"; do [[ -n $p ]] && kill "$p" 2>/dev/null || true; done
    for p in "${pids[@]:-}"; do [[ -n $p ]] && { for _ in $(seq 50); do kill -0 "$p" 2>/dev/null || break; sleep 0.1; done; kill -9 "$p" 2>/dev/null || true; }; done
    pids=()
}

# $1: the case name; $2: extra virtio-user devargs for both pods (",packed_vq=1": packed rings).
case_testpmd_ceiling() {
    local name=$1 ring=${2:-}
    local s=$work/tp; mkdir -p "$s"
    dpdk-testpmd -l $GEN_CPU,$SWITCH_CPU --main-lcore $GEN_CPU --no-pci --in-memory --single-file-segments \
        -m 512 --file-prefix=vrbench-testpmd \
        --vdev "net_vhost0,iface=$s/a.sock" --vdev "net_vhost1,iface=$s/b.sock" -- \
        --forward-mode=io --nb-cores=1 --auto-start --stats-period 5 --txd=1024 --rxd=1024 > "$work/testpmd.log" 2>&1 &
    pids+=($!)
    for _ in $(seq 100); do [[ -S $s/b.sock ]] && break; sleep 0.1; done
    measure "$name" "net_virtio_user0,path=$s/a.sock,queue_size=1024$ring" "net_virtio_user1,path=$s/b.sock,queue_size=1024$ring" 1
    stop_pids
}

ovs_start() {
    local o=$work/ovs; mkdir -p "$o/sock"
    ovsdb-tool create "$o/conf.db" /usr/share/openvswitch/vswitch.ovsschema
    ovsdb-server "$o/conf.db" --remote="punix:$o/db.sock" --pidfile="$o/ovsdb.pid" --detach \
        --log-file="$o/ovsdb.log" --unixctl="$o/ovsdb.ctl"
    VS="ovs-vsctl --db=unix:$o/db.sock"
    $VS --no-wait init
    $VS --no-wait set Open_vSwitch . other_config:dpdk-init=true other_config:dpdk-lcore-mask=0x1 \
        other_config:pmd-cpu-mask=0x$((1 << SWITCH_CPU)) other_config:dpdk-socket-mem=512 \
        "other_config:dpdk-extra=--in-memory --no-pci --file-prefix=vrbench-ovs"
    OVS_RUNDIR=$o /usr/lib/openvswitch-switch-dpdk/ovs-vswitchd-dpdk "unix:$o/db.sock" --pidfile="$o/vswitchd.pid" \
        --detach --log-file="$o/vswitchd.log" --unixctl="$o/vswitchd.ctl"
    $VS add-br br0 -- set bridge br0 datapath_type=netdev
    $VS add-port br0 vhu0 -- set Interface vhu0 type=dpdkvhostuserclient options:vhost-server-path="$o/sock/a.sock" ofport_request=1
    $VS add-port br0 vhu1 -- set Interface vhu1 type=dpdkvhostuserclient options:vhost-server-path="$o/sock/b.sock" ofport_request=2
}

# ovs-ofctl COMMAND [ARGS] against the benchmark's bridge (the switch goes after the command);
# a rule that does not install must stop the case, or OVS would be measured with its default
# NORMAL flow instead of the rules the case names.
OF() {
    local cmd=$1; shift
    ovs-ofctl "$cmd" "unix:$work/ovs/br0.mgmt" "$@" || { echo "bench: ovs-ofctl $cmd failed"; return 1; }
}

ovs_stop() {
    local o=$work/ovs
    [[ -f $o/vswitchd.pid ]] && kill "$(cat "$o/vswitchd.pid")" 2>/dev/null || true
    [[ -f $o/ovsdb.pid ]] && kill "$(cat "$o/ovsdb.pid")" 2>/dev/null || true
    sleep 2
    rm -rf "$o" /var/run/dpdk/vrbench-ovs
}

case_ovs() {
    local name=$1 rules=$2 flows=$3
    ovs_start
    local o=$work/ovs
    OF del-flows || { ovs_stop; return 1; }
    if [[ $rules == port ]]; then
        OF add-flow "in_port=1,actions=output:2" || { ovs_stop; return 1; }
    elif [[ $rules == snat ]]; then
        # Source NAT as OVS does it: conntrack commits each flow with a source from the pool
        # (the same 4 addresses × 64,512 ports as vrouterd's), then the routed rewrite.
        OF add-flow "table=0,priority=10,ip,in_port=1,nw_dst=198.19.0.0/16,actions=ct(commit,nat(src=$SNAT_POOL_FIRST-$SNAT_POOL_LAST:1024-65535),table=1)" || { ovs_stop; return 1; }
        OF add-flow "table=1,priority=10,ip,in_port=1,actions=mod_dl_src:00:00:5e:00:01:00,mod_dl_dst:02:00:00:00:0b:01,dec_ttl,output:2" || { ovs_stop; return 1; }
    else
        python3 - "$rules" > "$o/flows.txt" <<'PY'
import sys
n = int(sys.argv[1])
if n == 1:
    print("table=0,priority=10,ip,in_port=1,nw_dst=198.19.0.0/16,actions=mod_dl_src:00:00:5e:00:01:00,mod_dl_dst:02:00:00:00:0b:01,dec_ttl,output:2")
else:
    for i in range(n):
        print(f"table=0,priority=10,ip,in_port=1,nw_dst=198.19.{i >> 8}.{i & 255},actions=mod_dl_src:00:00:5e:00:01:00,mod_dl_dst:02:00:00:00:0b:01,dec_ttl,output:2")
PY
        OF add-flows "$o/flows.txt" || { ovs_stop; return 1; }
    fi
    # What is installed is what is measured: say how many rules the bridge holds.
    echo "bench: $name: $(OF dump-flows --no-stats | grep -c actions) OpenFlow rules on br0"
    measure "$name" "net_virtio_user0,path=$o/sock/a.sock,server=1,queue_size=1024" \
        "net_virtio_user1,path=$o/sock/b.sock,server=1,queue_size=1024" "$flows"
    if [[ $rules == snat ]]; then
        echo "bench: $name: $(ovs-appctl -t "$o/vswitchd.ctl" dpctl/dump-conntrack 2>/dev/null | grep -c "dst=198\.51\.100\.6[4-7],") conntrack entries translated to the pool"
    fi
    ovs_stop
}

# vrouterctl against the benchmark's vrouterd; says what failed and why.
CTL() {
    if ! "$bin/vrouterctl" --socket "$work/vr/ctl.sock" "$@" >/dev/null 2>"$work/ctl.err"; then
        echo "bench: vrouterctl $* failed: $(cat "$work/ctl.err")"
        tail -5 "$work/vrouterd.log"
        return 1
    fi
}

# The source-NAT cases' pool: 4 addresses of TEST-NET-2, ports 1024-65535.
SNAT_POOL_FIRST=198.51.100.64
SNAT_POOL_LAST=198.51.100.67

# vrouterd with two server-mode vhost-user vifs in VRF 1 (B in VRF $B_VRF if set) routing
# 198.19.0.0/16 to B.
vrouterd_start() {
    local v=$work/vr; rm -rf "$v"; mkdir -p "$v/pods"
    local extra=("$@")
    "$bin/vrouterd" --control-socket "$v/ctl.sock" --socket-base "$v/pods" --fwd-lcores $SWITCH_CPU \
        --vhost-lcore $GEN_CPU --log-level warn "${extra[@]}" -- --no-pci -m 512 --file-prefix=vrbench-vr \
        > "$work/vrouterd.log" 2>&1 &
    pids+=($!)
    for _ in $(seq 600); do [[ -S $v/ctl.sock ]] && break; sleep 0.1; done
    if [[ ! -S $v/ctl.sock ]]; then
        echo "bench: vrouterd did not start:"; tail -20 "$work/vrouterd.log"; return 1
    fi
    CTL vrf add 1 || return 1
    CTL vif add podA --type vhost-user --vrf 1 --mac 02:00:00:00:0a:01 --socket-dir "$v/pods/a" --socket-file a.sock --mode server || return 1
    CTL vif add podB --type vhost-user --vrf "${B_VRF:-1}" --mac 02:00:00:00:0b:01 --socket-dir "$v/pods/b" --socket-file b.sock --mode server || return 1
    CTL nh set 1 encap --vif podA --dmac 02:00:00:00:0a:01 || return 1
    CTL nh set 2 encap --vif podB --dmac 02:00:00:00:0b:01 || return 1
    CTL route add --vrf 1 198.18.0.0/16 --nh 1 || return 1
    VR_A="net_virtio_user0,path=$v/pods/a/a.sock,queue_size=1024"
    VR_B="net_virtio_user1,path=$v/pods/b/b.sock,queue_size=1024"
}

# $4: extra virtio-user devargs for both pods (",packed_vq=1": packed rings).
case_vrouterd_l3() {
    local name=$1 flows=$2 policy=$3 ring=${4:-}
    vrouterd_start || { stop_pids; return 1; }
    VR_A+=$ring
    VR_B+=$ring
    CTL route add --vrf 1 198.19.0.0/16 --nh 2 || return 1
    if [[ $policy == yes ]]; then
        if ! CTL policy set podA --default allow; then
            echo "bench: $name skipped (no policy support)"
            stop_pids
            return
        fi
    fi
    measure "$name" "$VR_A" "$VR_B" "$flows"
    stop_pids
}

# vrouterd-l3 with pod A's received packets mirrored to an analyzer pod that never reads (a
# DPDK pod whose port is up and whose forwarding never starts): its ring fills, the copies are
# dropped and counted, and pod A's throughput should not move (compare with vrouterd-l3).
case_vrouterd_l3_mirror_deaf() {
    local name=$1
    vrouterd_start || { stop_pids; return 1; }
    CTL route add --vrf 1 198.19.0.0/16 --nh 2 || return 1
    CTL vif add deaf --type vhost-user --vrf 1 --mac 02:00:00:00:0d:01 --socket-dir "$work/vr/pods/d" --socket-file d.sock --mode server || return 1
    # testpmd at its prompt, on a fifo held open, with nothing ever typed: ports started, no
    # forwarding (its forwarding lcore, which testpmd insists on, waits on the generator's CPU).
    rm -f "$work/deaf.in"; mkfifo "$work/deaf.in"
    taskset -c $GEN_CPU dpdk-testpmd --lcores "0@$GEN_CPU,1@$GEN_CPU" --no-pci --in-memory --single-file-segments -m 256 \
        --file-prefix=vrbench-deaf --vdev "net_virtio_user0,path=$work/vr/pods/d/d.sock,queue_size=1024" -- \
        -i --rxd=1024 --txd=1024 < "$work/deaf.in" > "$work/deaf.log" 2>&1 &
    pids+=($!)
    exec 9> "$work/deaf.in"
    local state=""
    for _ in $(seq 100); do
        state=$("$bin/vrouterctl" --socket "$work/vr/ctl.sock" --json vif show deaf 2>/dev/null | jq -r '.state' || true)
        [[ $state == connected ]] && break
        sleep 0.1
    done
    if [[ $state != connected ]]; then
        echo "bench: $name: the analyzer pod did not connect ($state): $(tail -3 "$work/deaf.log")"
        exec 9>&-; stop_pids; return 1
    fi
    CTL mirror set podA --to deaf --direction ingress || { exec 9>&-; return 1; }
    measure "$name" "$VR_A" "$VR_B" 1
    local m
    m=$("$bin/vrouterctl" --socket "$work/vr/ctl.sock" --json mirror show podA 2>/dev/null | jq -c . || echo '{}')
    echo "bench: $name: copies $(jq -c '{copies, copy_failures, copies_skipped}' <<<"$m")"
    echo "{\"case\":\"$name\",\"mirror\":$m}" >> "$raw"
    exec 9>&-
    stop_pids
}

# Source NAT: pod A's VRF 1 is attached to a pool of VRF 0, where pod B is: every flow leaves
# from a pair of the pool, set up inline on the forwarding core with its reverse entry.
case_vrouterd_snat() {
    local name=$1 flows=$2
    B_VRF=0 vrouterd_start || { stop_pids; return 1; }
    CTL route add --vrf 1 198.19.0.0/16 --nh 2 || return 1
    CTL nat pool-set bench --vrf 0 "$SNAT_POOL_FIRST" "$SNAT_POOL_LAST" --ports 1024-65535 || return 1
    CTL nat attach 1 bench || return 1
    measure "$name" "$VR_A" "$VR_B" "$flows"
    # What was measured is translated: say how many pairs the flows hold.
    echo "bench: $name: $("$bin/vrouterctl" --socket "$work/vr/ctl.sock" nat pools 2>/dev/null | tail -n +2 | tr -s ' ')"
    stop_pids
}

case_vrouterd_overlay() {
    local name=$1 encap=$2
    # The fabric is a net_ring port: what it sends, it receives. Pod A's traffic is tunnelled to
    # the vrouter's own fabric address, decapsulated, and delivered to pod B from VRF 2. The
    # fabric runs jumbo frames, as underlays do, so 1518-byte frames fit once encapsulated.
    vrouterd_start --fabric net_ring0 --fabric-ip 198.19.255.254 --fabric-mac 02:00:00:00:fa:01 --fabric-mtu 9000 || { stop_pids; return 1; }
    CTL vrf add 2 || return 1
    CTL nh set 3 tunnel --encap "$encap" --vif fabric0 --sip 198.19.255.254 --dip 198.19.255.254 --dmac 02:00:00:00:fa:01 || return 1
    CTL route add --vrf 1 198.19.0.0/16 --nh 3 --label 200 || return 1
    CTL vxlan set 200 --vrf 2 || return 1
    CTL mpls set 200 --nh 2 || return 1
    CTL route add --vrf 2 198.19.0.0/16 --nh 2 || return 1
    measure "$name" "$VR_A" "$VR_B" 1
    stop_pids
}

# TCP between kernel pods with default offloads, through vrouterd, through two vrouterd nodes
# over a VXLAN fabric (kernel:IFACE), and through the kernel's own routing, at MTU 1500 and
# 9000, 1 and 4 streams; and a TCG guest to a pod (vr-tcpbench). Each configuration REPS times;
# SECONDS_MEASURED per iperf3 run.
case_tcp() {
    scripts/vm-image.sh >/dev/null
    for rep in $(seq 1 "$REPS"); do
        local cases=kernel,vrouterd,fabric
        ((rep == 1)) && cases=$cases,vm
        "$bin/vr-tcpbench" --vrouterd "$bin/vrouterd" --seconds "$SECONDS_MEASURED" --cases "$cases" \
            2>"$work/tcpbench.err" | while read -r line; do
            echo "{\"tcp\":$line,\"rep\":$rep}" >> "$raw"
            echo "bench: tcp rep $rep: $line"
        done
        [[ ${PIPESTATUS[0]} -eq 0 ]] || { echo "bench: vr-tcpbench failed: $(tail -5 "$work/tcpbench.err")"; return 1; }
    done
}

run_case() {
    local c=$1
    case $c in
        testpmd-ceiling) case_testpmd_ceiling testpmd-ceiling ;;
        testpmd-ceiling-packed) case_testpmd_ceiling testpmd-ceiling-packed ,packed_vq=1 ;;
        ovs-port) case_ovs ovs-port port 1 ;;
        ovs-l3-flows-1) case_ovs ovs-l3-flows-1 1 1 ;;
        ovs-l3-flows-65536) case_ovs ovs-l3-flows-65536 65536 65536 ;;
        ovs-snat-flows-65536) case_ovs ovs-snat-flows-65536 snat 65536 ;;
        vrouterd-l3) case_vrouterd_l3 vrouterd-l3 1 no ;;
        vrouterd-l3-packed) case_vrouterd_l3 vrouterd-l3-packed 1 no ,packed_vq=1 ;;
        vrouterd-l3-flows-1) case_vrouterd_l3 vrouterd-l3-flows-1 1 yes ;;
        vrouterd-l3-flows-65536) case_vrouterd_l3 vrouterd-l3-flows-65536 65536 yes ;;
        vrouterd-l3-mirror-deaf) case_vrouterd_l3_mirror_deaf vrouterd-l3-mirror-deaf ;;
        vrouterd-snat-flows-65536) case_vrouterd_snat vrouterd-snat-flows-65536 65536 ;;
        vrouterd-overlay-vxlan) case_vrouterd_overlay vrouterd-overlay-vxlan vxlan ;;
        vrouterd-overlay-mplsoudp) case_vrouterd_overlay vrouterd-overlay-mplsoudp mplsoudp ;;
        vrouterd-overlay-mplsogre) case_vrouterd_overlay vrouterd-overlay-mplsogre mplsogre ;;
        tcp) case_tcp ;;
        *) echo "bench: unknown case $c" >&2; return 2 ;;
    esac
}

host_gaps before
for c in $CASES; do
    echo "bench: === $c"
    run_case "$c" || { echo "bench: $c failed; its processes are stopped, going on"; stop_pids; }
done
host_gaps after

tsc_khz=$(awk -F: '/cpu MHz/ {printf "%d", $2 * 1000; exit}' /proc/cpuinfo)
machine="$(nproc) CPUs, $(awk -F: '/model name/ {gsub(/^ +/, "", $2); print $2; exit}' /proc/cpuinfo), $(free -g | awk '/Mem:/ {print $2}') GiB, Linux $(uname -r)"
/usr/bin/python3 bench/report.py "$raw" "bench/results/$date_tag" "$tsc_khz" "$machine" "$0 (BENCH_SECONDS=$SECONDS_MEASURED BENCH_REPS=$REPS)"
cp "$raw" "bench/results/$date_tag.raw.jsonl" # every run, so the report can be redrawn
echo "bench: wrote bench/results/$date_tag.json, .md and .png"
