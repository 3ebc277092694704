#!/usr/bin/env bash
# The main job, on a fresh Debian 12 machine as root: installs what is missing, reserves
# hugepages, builds vrouterd, vrouterctl and the vrouter-cni plugin (release), starts vrouterd,
# and attaches pods through the plugin exactly as a container runtime on a node would (CNI_*
# variables, the network configuration on stdin, the result on stdout):
#  1. two DPDK pods (dpdk-testpmd over virtio-user), each with a socket directory of its own —
#     pod A on a server-mode vif (vrouterd owns the socket), pod B on a client-mode vif (the pod
#     owns it) — pod A sending to pod B in VRF 1, the live packet rate shown for DEMO_SECONDS
#     (default 5);
#  2. a kernel pod (a network namespace; the plugin makes the veth and the af-packet vif) in pod
#     B's place as the receiver, for as long.
# Every pod is then deleted through the plugin, which must leave no vif behind. Tears everything
# down (pods, namespace, vrouterd, sockets, temp dir, DPDK runtime files) even on failure. Exits
# 0 only if packets went through both times.
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
echo "demo: building vrouterd, vrouterctl and vrouter-cni (release)"
cargo build --release --locked --bin vrouterd
cargo build --release --locked -p control-api --bin vrouterctl
cargo build --release --locked -p vrouter-cni
bin=$(realpath "${CARGO_TARGET_DIR:-target}/release")

tmp=$(mktemp -d /tmp/vrouter-demo.XXXXXX)
control=$tmp/vrouter.sock
base=$tmp/pods
mkdir -m 0700 "$base"
tag=vrdemo$$
kpod='' vr_pid='' pod_a_pid='' pod_b_pid='' pod_a_in='' pod_b_in=''
attached=() # "container-id ifname netns config" of every ADD, for the DELs

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

# The plugin, run as a runtime runs it: a clean environment, the CNI_* variables, the network
# configuration on stdin, the result (or a CNI error object) on stdout.
cni() { # command, container id, ifname, netns path (- for none), pod uid, config file
    env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin CNI_COMMAND="$1" CNI_CONTAINERID="$2" \
        CNI_IFNAME="$3" CNI_NETNS="${4#-}" CNI_PATH="$bin" \
        CNI_ARGS="IgnoreUnknown=1;K8S_POD_NAMESPACE=demo;K8S_POD_NAME=$2;K8S_POD_UID=$5" \
        "$bin/vrouter-cni" <"$6"
}

# ADD, result in $tmp/<container id>.result. Records the attachment first, in this shell, so
# that teardown deletes it even if the ADD fails half-way.
attach() { # container id, ifname, netns path (- for none), pod uid, config file
    attached+=("$*")
    cni ADD "$@" >"$tmp/$1.result" ||
        { echo "demo: vrouter-cni ADD $1 failed: $(cat "$tmp/$1.result")" >&2; return 1; }
}

detach_all() {
    local a
    for a in "${attached[@]}"; do
        # shellcheck disable=SC2086 # the fields are one word each
        set -- $a
        cni DEL "$1" "$2" "$3" "$4" "$5" >/dev/null || echo "demo: vrouter-cni DEL $1 failed" >&2
    done
    attached=()
}

teardown() {
    local status=$?
    trap - EXIT INT TERM
    echo "demo: tearing down"
    stop_pid "$pod_a_pid" TERM 5
    stop_pid "$pod_b_pid" TERM 5
    [[ -z $pod_a_in ]] || exec {pod_a_in}>&-
    [[ -z $pod_b_in ]] || exec {pod_b_in}>&-
    ((${#attached[@]} == 0)) || [[ -z $vr_pid ]] || detach_all
    stop_pid "$vr_pid" TERM 20
    dpdk_cleanup "${tag}a"
    dpdk_cleanup "${tag}b"
    dpdk_cleanup "${tag}vr"
    [[ -z $kpod ]] || ip netns del "$kpod" 2>/dev/null || true
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

# One network, VRF 1, one pool; DPDK pods in either vhost-user mode, kernel pods on veths.
network() { # interface type, extra JSON members
    jq -n --arg type "$1" --arg control "$control" --arg data "$tmp/cni" --argjson extra "$2" \
        '{cniVersion: "1.0.0", name: "demo", type: "vrouter-cni", interfaceType: $type,
          vrf: 1, controlSocket: $control, dataDir: $data,
          ipam: {type: "vrouter-ipam", pools: [{name: "demo", subnet: "198.18.0.0/24"}]}} + $extra'
}
network vhost-user "{\"socketBase\": \"$base\", \"vhostuserMode\": \"server\"}" >"$tmp/server.json"
network vhost-user "{\"socketBase\": \"$base\", \"vhostuserMode\": \"client\"}" >"$tmp/client.json"
network veth '{}' >"$tmp/veth.json"

# Container ids as a runtime makes them; the plugin names vifs after their first 12 characters.
cid_a=poda${tag}000000 cid_b=podb${tag}000000 cid_k=kpod${tag}000000
echo "demo: vrouter-cni ADD pod A (server mode) and pod B (client mode)"
attach "$cid_a" net1 - "uid-a-$tag" "$tmp/server.json"
attach "$cid_b" net1 - "uid-b-$tag" "$tmp/client.json"
res_a=$(cat "$tmp/$cid_a.result") res_b=$(cat "$tmp/$cid_b.result")
sock_a=$(jq -r '.interfaces[0].socketPath' <<<"$res_a")
sock_b=$(jq -r '.interfaces[0].socketPath' <<<"$res_b")
mac_a=$(jq -r '.interfaces[0].mac' <<<"$res_a")
mac_b=$(jq -r '.interfaces[0].mac' <<<"$res_b")
ip_a=$(jq -r '.ips[0].address | split("/")[0]' <<<"$res_a")
ip_b=$(jq -r '.ips[0].address | split("/")[0]' <<<"$res_b")
vif_a=${cid_a:0:12}-net1 vif_b=${cid_b:0:12}-net1
# What the application in a pod reads to know where to send: the facts file beside its socket.
vrouter_mac=$(jq -r .vrouterMac "${sock_a}.json")
echo "demo: pod A $ip_a socket $sock_a; pod B $ip_b socket $sock_b; vrouter MAC $vrouter_mac"

# testpmd exits when its stdin reaches EOF: each pod reads a FIFO this shell holds open. Its
# main lcore waits on that FIFO; its forwarding lcore polls, both on the pod's CPU. 16384-entry
# rings hold what arrives while a pod sharing a CPU waits for its turn.
start_pod() { # name, prefix, cpu, socket, server, mac, forward mode, extra args...
    local name=$1 prefix=$2 cpu=$3 socket=$4 server=$5 mac=$6 mode=$7
    shift 7
    [[ -p $tmp/$name.in ]] || mkfifo "$tmp/$name.in"
    dpdk-testpmd "--lcores=0@$cpu,1@$cpu" --no-pci --single-file-segments \
        "--file-prefix=$prefix" -m512 \
        "--vdev=net_virtio_user0,path=$socket,mac=$mac,queues=1,queue_size=16384,mrg_rxbuf=1,server=$server" \
        -- "--forward-mode=$mode" --rxq=1 --txq=1 --rxd=16384 --txd=16384 --nb-cores=1 \
        --auto-start --total-num-mbufs=49152 "$@" <"$tmp/$name.in" >"$tmp/$name.log" 2>&1 &
}
# Enter stops testpmd's forwarding: it prints its accumulated statistics and exits.
stop_pod() { # pid, FIFO fd
    echo >&"$2" || true
    for ((i = 0; i < 100; i++)); do kill -0 "$1" 2>/dev/null || break; sleep 0.1; done
}
wait_connected() { # vif
    local state
    for ((i = 0; i < 300; i++)); do
        state=$(ctl --json vif show "$1" | jq -r .state)
        [[ $state == connected ]] && break
        sleep 0.1
    done
    [[ $state == connected ]] || { echo "demo: $1 did not connect (state $state)" >&2; exit 1; }
    echo "demo: $1 connected"
}
start_pod podB "${tag}b" "$cpu_b" "$sock_b" 1 "$mac_b" rxonly
pod_b_pid=$!
exec {pod_b_in}>"$tmp/podB.in"
start_pod podA "${tag}a" "$cpu_a" "$sock_a" 0 "$mac_a" txonly \
    "--eth-peer=0,$vrouter_mac" "--tx-ip=$ip_a,$ip_b"
pod_a_pid=$!
exec {pod_a_in}>"$tmp/podA.in"
wait_connected "$vif_a"
wait_connected "$vif_b"

# Prints, once a second for $seconds, the rate pod A sends at and the rate vrouterd delivers to
# vif $1; their sum goes to $delivered.
counts() { # receiving vif
    ctl --json vif list | jq -r --arg from "$vif_a" --arg to "$1" \
        'map({(.name): .counters}) | add | "\(.[$from].rx_packets) \(.[$to].tx_packets)"'
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

echo "demo: pod A ($ip_a) → vrouterd VRF 1 → pod B ($ip_b), for ${seconds}s"
ctl vif list
live_rate "$vif_b" "pod B"
to_pod_b=$delivered
echo "demo: on average $((to_pod_b / seconds)) pps from pod A to pod B"
ctl vif list
ctl stats
stop_pod "$pod_b_pid" "$pod_b_in"
stop_pod "$pod_a_pid" "$pod_a_in"
echo "demo: pod B got $(grep -A4 'Accumulated forward statistics' "$tmp/podB.log" | grep -o 'RX-packets: [0-9]*' | tail -n1)"

# A kernel pod takes pod B's place: the plugin makes its veth (the kernel's default offloads
# on), its address and routes, and the af-packet vif.
kpod=$tag-kpod
ip netns add "$kpod"
echo "demo: vrouter-cni ADD a kernel pod (namespace $kpod)"
attach "$cid_k" eth0 "/var/run/netns/$kpod" "uid-k-$tag" "$tmp/veth.json"
res_k=$(cat "$tmp/$cid_k.result")
ip_k=$(jq -r '.ips[0].address | split("/")[0]' <<<"$res_k")
vif_k=${cid_k:0:12}-eth0
kpod_rx() { ip netns exec "$kpod" cat /sys/class/net/eth0/statistics/rx_packets; }
kpod_before=$(kpod_rx)
start_pod podA "${tag}a" "$cpu_a" "$sock_a" 0 "$mac_a" txonly \
    "--eth-peer=0,$vrouter_mac" "--tx-ip=$ip_a,$ip_k"
pod_a_pid=$!
wait_connected "$vif_a"
echo "demo: pod A ($ip_a) → vrouterd VRF 1 → kernel pod ($ip_k, a veth), for ${seconds}s"
live_rate "$vif_k" "kernel pod"
kpod_got=$(($(kpod_rx) - kpod_before))
echo "demo: on average $((delivered / seconds)) pps from pod A to the kernel pod;" \
    "its eth0 received $kpod_got packets"
ctl vif list
stop_pod "$pod_a_pid" "$pod_a_in"
echo "demo: pod A sent $(grep -A4 'Accumulated forward statistics' "$tmp/podA.log" | grep -o 'TX-packets: [0-9]*' | tail -n1)"

echo "demo: vrouter-cni DEL every pod"
detach_all
left=$(ctl --json vif list | jq length)
((left == 0)) || { echo "demo: DEL left $left vifs behind" >&2; ctl vif list; exit 1; }
[[ ! -e $sock_a ]] || { echo "demo: DEL left $sock_a behind" >&2; exit 1; }
((to_pod_b > 0)) || { echo "demo: no packets reached pod B" >&2; exit 1; }
((kpod_got > 0)) || { echo "demo: no packets reached the kernel pod" >&2; exit 1; }
echo "demo: ok"
