#!/usr/bin/env bash
# The main job, on a fresh Debian 12 machine as root: installs what is missing, reserves
# hugepages, builds vrouterd and vrouterctl (release), starts vrouterd, attaches two DPDK pods
# (dpdk-testpmd over virtio-user), each in its own socket directory — pod A on a server-mode vif
# (vrouterd owns the socket), pod B on a client-mode vif (the pod owns it) — routes A → B in
# VRF 1 with vrouterctl and shows the live packet rate for DEMO_SECONDS (default 5); then a
# kernel pod (a network namespace on a veth, attached as an af-packet vif) takes pod A's place
# as the receiver for as long. Tears everything down (pods, namespace, vrouterd, sockets, temp
# dir, DPDK runtime files) even on failure. Exits 0 only if packets went through both times.
#
# CPUs: vrouterd forwards on CPU 1 and serves vhost-user and its API on CPU 0. The pods poll on
# CPUs of their own when there are any (2 and 3); on a 2-CPU machine both share CPU 0, where
# they take turns, and their rings are sized to ride out the other pod's turn.
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
kpod='' host_if='' vr_pid='' pod_a_pid='' pod_b_pid='' pod_a_in='' pod_b_in=''

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
    [[ -z $kpod ]] || ip netns del "$kpod" 2>/dev/null || true
    [[ -z $host_if ]] || ip link del "$host_if" 2>/dev/null || true
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

# Where each pod polls: CPUs of their own if there are any, else CPU 0 (see the top).
ncpu=$(nproc)
if ((ncpu >= 4)); then cpu_a=2 cpu_b=3
elif ((ncpu == 3)); then cpu_a=2 cpu_b=2
else cpu_a=0 cpu_b=0
fi
echo "demo: $ncpu CPUs: vrouterd forwards on CPU 1 (vhost-user and API on CPU 0);" \
    "pod A polls on CPU $cpu_a, pod B on CPU $cpu_b"

echo "demo: starting vrouterd (control socket $control, socket base $base)"
"$bin/vrouterd" --control-socket "$control" --socket-base "$base" \
    --fwd-lcores 1 --vhost-lcore 0 \
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

# testpmd exits when its stdin reaches EOF: each pod reads a FIFO this shell holds open. Its
# main lcore waits on that FIFO; its forwarding lcore polls, both on the pod's CPU. 4096-entry
# rings hold what arrives while a pod sharing a CPU waits for its turn.
start_pod() { # name, prefix, cpu, socket, server, forward mode, extra args...
    local name=$1 prefix=$2 cpu=$3 socket=$4 server=$5 mode=$6
    shift 6
    mkfifo "$tmp/$name.in"
    dpdk-testpmd "--lcores=0@$cpu,1@$cpu" --no-pci --single-file-segments \
        "--file-prefix=$prefix" -m512 \
        "--vdev=net_virtio_user0,path=$socket,queues=1,queue_size=16384,mrg_rxbuf=1,server=$server" \
        -- "--forward-mode=$mode" --rxq=1 --txq=1 --rxd=16384 --txd=16384 --nb-cores=1 \
        --auto-start --total-num-mbufs=49152 "$@" <"$tmp/$name.in" >"$tmp/$name.log" 2>&1 &
}
start_pod podB "${tag}b" "$cpu_b" "$base/pod-b/net0" 1 rxonly
pod_b_pid=$!
exec {pod_b_in}>"$tmp/podB.in"
start_pod podA "${tag}a" "$cpu_a" "$base/pod-a/net0" 0 txonly \
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

# Prints, once a second for $seconds, the rate pod A sends at and the rate vrouterd delivers to
# vif $1; the sum of the delivered rates goes to $delivered.
counts() { # receiving vif
    ctl --json vif list | jq -r --arg to "$1" \
        'map({(.name): .counters}) | add | "\(.podA.rx_packets) \(.[$to].tx_packets)"'
}
delivered=0
live_rate() { # receiving vif, its label
    local to=$1 label=$2 a_prev b_prev a_now b_now t_prev t_now rx_pps tx_pps s
    read -r a_prev b_prev < <(counts "$to")
    t_prev=$(date +%s.%N)
    delivered=0
    for ((s = 1; s <= seconds; s++)); do
        sleep 1
        read -r a_now b_now < <(counts "$to")
        t_now=$(date +%s.%N)
        read -r rx_pps tx_pps < <(awk -v a=$((a_now - a_prev)) -v b=$((b_now - b_prev)) \
            -v t1="$t_prev" -v t2="$t_now" 'BEGIN { dt = t2 - t1; printf "%d %d\n", a / dt, b / dt }')
        printf 'demo: %2ds  from pod A %10d pps   to %s %10d pps\n' "$s" "$rx_pps" "$label" "$tx_pps"
        delivered=$((delivered + tx_pps))
        a_prev=$a_now b_prev=$b_now t_prev=$t_now
    done
}

echo "demo: pod A (198.18.1.2) → vrouterd VRF 1 → pod B (198.18.2.2), for ${seconds}s"
ctl vif list
live_rate podB "pod B"
to_pod_b=$delivered
echo "demo: on average $((to_pod_b / seconds)) pps from pod A to pod B"
ctl vif list
ctl stats

# Enter stops testpmd's forwarding: pod B prints its accumulated statistics and exits.
echo >&"$pod_b_in" || true
for ((i = 0; i < 100; i++)); do kill -0 "$pod_b_pid" 2>/dev/null || break; sleep 0.1; done
echo "demo: pod B got $(grep -A4 'Accumulated forward statistics' "$tmp/podB.log" | grep -o 'RX-packets: [0-9]*' | tail -n1)"
ctl route del --vrf 1 198.18.2.2/32
ctl nh del 2
ctl vif del podB

# A kernel pod takes pod B's place: a namespace with the veth end eth0 (the kernel's default
# offloads on) holding 198.18.2.2; vrouterd sends into the other end through an af-packet vif.
kpod=$tag-kpod
ip netns add "$kpod"
host_if=vd$$k
ip link add "$host_if" type veth peer name eth0 netns "$kpod"
ip link set "$host_if" up
mac_k=02:00:00:00:0c:01
ip -n "$kpod" link set eth0 address $mac_k up
ip -n "$kpod" addr add 198.18.2.2/24 dev eth0
ip -n "$kpod" route add default via 198.18.2.1
ctl vif add kpod --type af-packet --vrf 1 --mac 02:00:00:00:0c:02 --iface "$host_if"
ctl nh set 3 encap --vif kpod --dmac $mac_k
ctl route add --vrf 1 198.18.2.2/32 --nh 3
kpod_rx() { ip netns exec "$kpod" cat /sys/class/net/eth0/statistics/rx_packets; }
kpod_before=$(kpod_rx)
echo "demo: pod A (198.18.1.2) → vrouterd VRF 1 → kernel pod (198.18.2.2, a veth), for ${seconds}s"
live_rate kpod "kernel pod"
kpod_got=$(($(kpod_rx) - kpod_before))
echo "demo: on average $((delivered / seconds)) pps from pod A to the kernel pod;" \
    "its eth0 received $kpod_got packets"
ctl vif list

echo >&"$pod_a_in" || true
for ((i = 0; i < 100; i++)); do kill -0 "$pod_a_pid" 2>/dev/null || break; sleep 0.1; done
echo "demo: pod A sent $(grep -A4 'Accumulated forward statistics' "$tmp/podA.log" | grep -o 'TX-packets: [0-9]*' | tail -n1)"
ctl route del --vrf 1 198.18.1.2/32
ctl route del --vrf 1 198.18.2.2/32
ctl nh del 1
ctl nh del 3
ctl vif del podA
ctl vif del kpod
[[ ! -e $base/pod-a ]] || { echo "demo: vif delete left $base/pod-a behind" >&2; exit 1; }
((to_pod_b > 0)) || { echo "demo: no packets reached pod B" >&2; exit 1; }
((kpod_got > 0)) || { echo "demo: no packets reached the kernel pod" >&2; exit 1; }
echo "demo: ok"
