#!/usr/bin/env bash
# The main job, on a fresh Debian 12 machine as root: installs what is missing, reserves
# hugepages, builds vrouterd and vrouterctl (release), starts vrouterd, attaches two DPDK pods
# (dpdk-testpmd over virtio-user), each in its own socket directory — pod A on a server-mode vif
# (vrouterd owns the socket), pod B on a client-mode vif (the pod owns it) — routes A → B in
# VRF 1 with vrouterctl, shows the live packet rate for DEMO_SECONDS (default 5), and tears
# everything down (pods, vrouterd, sockets, temp dir, DPDK runtime files) even on failure.
# Exits 0 only if packets went through. Works on a 2-core machine.
set -euo pipefail
cd "$(dirname "$0")/.."

[[ $(id -u) -eq 0 ]] || { echo "demo.sh: run as root (hugepages, DPDK)" >&2; exit 1; }
seconds=${DEMO_SECONDS:-5}
[[ $seconds =~ ^[0-9]+$ ]] && ((seconds > 0)) || { echo "demo.sh: DEMO_SECONDS must be a positive number, got '$seconds'" >&2; exit 2; }

scripts/install-deps.sh
scripts/hugepages.sh "${VROUTER_HUGEPAGES:-1024}"
echo "demo: building vrouterd and vrouterctl (release)"
cargo build --release --locked --bin vrouterd
cargo build --release --locked -p control-api --bin vrouterctl
bin=${CARGO_TARGET_DIR:-target}/release

tmp=$(mktemp -d /tmp/vrouter-demo.XXXXXX)
control=$tmp/vrouter.sock
base=$tmp/pods
mkdir -m 0700 "$base"
tag=vrdemo$$
vr_pid='' pod_a_pid='' pod_b_pid='' pod_a_in='' pod_b_in=''

ctl() { "$bin/vrouterctl" --socket "$control" "$@"; }

# Removes a DPDK process's hugepage files and runtime directory (by its --file-prefix).
dpdk_cleanup() {
    local prefix=$1 mnt
    for mnt in $(awk '$3 == "hugetlbfs" { print $2 }' /proc/mounts); do
        rm -f "$mnt/${prefix}map_"* 2>/dev/null || true
    done
    rm -rf "/var/run/dpdk/$prefix"
}

stop_pid() { # pid, signal, seconds to wait before SIGKILL
    local pid=$1 sig=$2 wait=$3 i
    [[ -n $pid ]] && kill -0 "$pid" 2>/dev/null || return 0
    kill "-$sig" "$pid" 2>/dev/null || true
    for ((i = 0; i < wait * 10; i++)); do
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.1
    done
    kill -KILL "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
}

teardown() {
    local status=$?
    trap - EXIT INT TERM
    echo "demo: tearing down"
    stop_pid "$pod_a_pid" TERM 5
    stop_pid "$pod_b_pid" TERM 5
    [[ -z $pod_a_in ]] || exec {pod_a_in}>&-
    [[ -z $pod_b_in ]] || exec {pod_b_in}>&-
    stop_pid "$vr_pid" TERM 20
    dpdk_cleanup "${tag}a"
    dpdk_cleanup "${tag}b"
    dpdk_cleanup "${tag}vr"
    if ((status != 0)); then
        for log in "$tmp"/*.log; do
            [[ -f $log ]] && { echo "--- $log (last lines) ---"; tail -n 20 "$log"; }
        done
    fi
    rm -rf "$tmp"
    echo "demo: done (exit $status)"
    exit "$status"
}
trap teardown EXIT
trap '' PIPE # a pod that died makes writing to its FIFO an error, not a fatal signal
trap 'exit 130' INT TERM

echo "demo: starting vrouterd (control socket $control, socket base $base)"
"$bin/vrouterd" --control-socket "$control" --socket-base "$base" \
    -- --no-pci -m 256 "--file-prefix=${tag}vr" >"$tmp/vrouterd.log" 2>&1 &
vr_pid=$!
for ((i = 0; i < 300; i++)); do
    ctl health >/dev/null 2>&1 && break
    kill -0 "$vr_pid" 2>/dev/null || { echo "demo: vrouterd exited" >&2; exit 1; }
    sleep 0.1
done
ctl health >/dev/null

mac_a=02:00:00:00:0a:01 mac_b=02:00:00:00:0b:01
ctl vrf add 1
# Pod A: server mode, vrouterd creates pod-a/ (0700) and listens on pod-a/net0.
ctl vif add podA --type vhost-user --vrf 1 --mac $mac_a \
    --socket-dir "$base/pod-a" --socket-file net0 --mode server
# Pod B: client mode, the pod creates pod-b/net0 and vrouterd connects to it (with retry).
mkdir -m 0700 "$base/pod-b"
ctl vif add podB --type vhost-user --vrf 1 --mac $mac_b \
    --socket-dir "$base/pod-b" --socket-file net0 --mode client
ctl nh set 1 encap --vif podA --dmac $mac_a
ctl nh set 2 encap --vif podB --dmac $mac_b
ctl route add --vrf 1 198.18.1.2/32 --nh 1
ctl route add --vrf 1 198.18.2.2/32 --nh 2

# testpmd exits when its stdin reaches EOF: each pod reads a FIFO this shell holds open.
start_pod() { # name, prefix, socket, server, forward mode, extra args...
    local name=$1 prefix=$2 socket=$3 server=$4 mode=$5
    shift 5
    mkfifo "$tmp/$name.in"
    dpdk-testpmd -l0,1 --no-pci --single-file-segments "--file-prefix=$prefix" -m256 \
        "--vdev=net_virtio_user0,path=$socket,queues=1,queue_size=256,mrg_rxbuf=1,server=$server" \
        -- "--forward-mode=$mode" --rxq=1 --txq=1 --rxd=256 --txd=256 --nb-cores=1 \
        --auto-start --total-num-mbufs=8192 "$@" <"$tmp/$name.in" >"$tmp/$name.log" 2>&1 &
}
start_pod podB "${tag}b" "$base/pod-b/net0" 1 rxonly
pod_b_pid=$!
exec {pod_b_in}>"$tmp/podB.in"
start_pod podA "${tag}a" "$base/pod-a/net0" 0 txonly \
    --eth-peer=0,00:00:5e:00:01:00 --tx-ip=198.18.1.2,198.18.2.2
pod_a_pid=$!
exec {pod_a_in}>"$tmp/podA.in"

for vif in podA podB; do
    for ((i = 0; i < 300; i++)); do
        [[ $(ctl --json vif show $vif | jq -r .state) == connected ]] && break
        sleep 0.1
    done
    state=$(ctl --json vif show $vif | jq -r .state)
    [[ $state == connected ]] || { echo "demo: $vif did not connect (state $state)" >&2; exit 1; }
    echo "demo: $vif connected"
done

echo "demo: pod A (198.18.1.2) → vrouterd VRF 1 → pod B (198.18.2.2), for ${seconds}s"
ctl vif list
counts() { ctl --json vif list | jq -r 'map({(.name): .counters}) | add | "\(.podA.rx_packets) \(.podB.tx_packets)"'; }
read -r a_prev b_prev < <(counts)
t_prev=$(date +%s.%N)
total_pps=0
for ((s = 1; s <= seconds; s++)); do
    sleep 1
    read -r a_now b_now < <(counts)
    t_now=$(date +%s.%N)
    read -r rx_pps tx_pps < <(awk -v a=$((a_now - a_prev)) -v b=$((b_now - b_prev)) \
        -v t1="$t_prev" -v t2="$t_now" 'BEGIN { dt = t2 - t1; printf "%d %d\n", a / dt, b / dt }')
    printf 'demo: %2ds  from pod A %10d pps   to pod B %10d pps\n' "$s" "$rx_pps" "$tx_pps"
    total_pps=$((total_pps + tx_pps))
    a_prev=$a_now b_prev=$b_now t_prev=$t_now
done
ctl vif list
ctl stats

# Enter stops testpmd's forwarding: it prints its accumulated statistics and exits.
echo >&"$pod_a_in" || true
echo >&"$pod_b_in" || true
for pid in "$pod_a_pid" "$pod_b_pid"; do
    for ((i = 0; i < 100; i++)); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
done
echo "demo: pod A sent $(grep -A4 'Accumulated forward statistics' "$tmp/podA.log" | grep -o 'TX-packets: [0-9]*' | tail -n1)"
echo "demo: pod B got  $(grep -A4 'Accumulated forward statistics' "$tmp/podB.log" | grep -o 'RX-packets: [0-9]*' | tail -n1)"
ctl route del --vrf 1 198.18.1.2/32
ctl route del --vrf 1 198.18.2.2/32
ctl nh del 1
ctl nh del 2
ctl vif del podA
ctl vif del podB
[[ ! -e $base/pod-a ]] || { echo "demo: vif delete left $base/pod-a behind" >&2; exit 1; }
((total_pps > 0)) || { echo "demo: no packets reached pod B" >&2; exit 1; }
echo "demo: ok"
