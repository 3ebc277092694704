#!/usr/bin/env bash
# Three compute nodes exchanging overlay routes over BGP, on this machine, as root:
#   a "fabric" namespace with bridge br0; per node a namespace with vrouterd (its fabric port
#   kernel:fab0 on the bridge, fabric address 198.19.0.K), gobgpd (BGP from ctl0, 198.51.100.K,
#   on the same bridge), vrouter-bgp, and two kernel pods in VRF 1 (198.18.K1.2, 198.18.K2.2),
#   VRF 1's routing identity being RD 198.19.0.K:1, route target 64512:1, VNI 1001; and a GoBGP
#   route reflector (198.51.100.254). Private ASN 64512, EVPN type-5 routes, VXLAN tunnels.
#   CLUSTER_DEMO_OVERLAY=mpls gives VRF 1 the MPLS label 200K instead of the VNI (vrouter-bgp
#   maps it): VPNv4 routes, MPLS-over-GRE toward node 2 (its --mpls-encap gre), MPLS-over-UDP
#   toward nodes 1 and 3.
# Waits for the routes, then pings every pod from every pod on another node and prints the
# matrix; then restarts the last node's gobgpd (graceful restart) under pings from the first
# node. Exits non-zero when any pair cannot talk or pings are lost across the restart.
# Everything it made goes on exit.
#   CLUSTER_DEMO_RELEASE=1 builds release binaries (slower to build) instead of debug ones.
set -euo pipefail
cd "$(dirname "$0")/.."

[[ $(id -u) -eq 0 ]] || { echo "cluster-demo.sh: run as root (namespaces, hugepages, DPDK)" >&2; exit 1; }

scripts/install-deps.sh
scripts/hugepages.sh "${VROUTER_HUGEPAGES:-1024}"
overlay=${CLUSTER_DEMO_OVERLAY:-evpn}
[[ $overlay == evpn || $overlay == mpls ]] || { echo "cluster-demo.sh: CLUSTER_DEMO_OVERLAY is evpn or mpls" >&2; exit 1; }
profile=debug build=()
if [[ ${CLUSTER_DEMO_RELEASE:-0} == 1 ]]; then profile=release build=(--release); fi
echo "cluster-demo: building vrouterd, vrouterctl, vrouter-bgp ($profile)"
cargo build "${build[@]}" --locked --bin vrouterd
cargo build "${build[@]}" --locked -p control-api --bin vrouterctl
cargo build "${build[@]}" --locked -p vrouter-bgp
bin=$(realpath "${CARGO_TARGET_DIR:-target}/$profile")

tmp=$(mktemp -d /tmp/vrouter-cluster.XXXXXX)
tag=cd$$
nodes=(1 2 3)
pids=()
gobgpd_pid=()
namespaces=()

cleanup() {
    local p ns
    for p in "${pids[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
    sleep 1
    for p in "${pids[@]}"; do kill -KILL "$p" 2>/dev/null || true; wait "$p" 2>/dev/null || true; done
    for ns in "${namespaces[@]}"; do ip netns delete "$ns" 2>/dev/null || true; done
    rm -rf "$tmp"
}
trap cleanup EXIT

netns() { ip netns add "$1"; ip -n "$1" link set lo up; namespaces+=("$1"); }
ctl() { local k=$1; shift; "$bin/vrouterctl" --socket "$tmp/n$k.sock" "$@" >/dev/null; }

# gobgpd.toml: router id, then neighbours; the reflector (passive, reflecting) when $3 = rr.
gobgpd_toml() {
    local id=$1 peers=$2 role=${3:-} n
    printf '[global.config]\n  as = 64512\n  router-id = "%s"\n' "$id"
    if [[ $role == rr ]]; then printf '  local-address-list = ["%s"]\n' "$id"; else printf '  port = -1\n'; fi
    for n in $peers; do
        printf '[[neighbors]]\n  [neighbors.config]\n    neighbor-address = "%s"\n    peer-as = 64512\n' "$n"
        printf '  [neighbors.timers.config]\n    hold-time = 3\n    keepalive-interval = 1\n    connect-retry = 1\n'
        # Graceful restart (RFC 4724): a peer whose gobgpd restarts keeps its routes for 20 s.
        printf '  [neighbors.graceful-restart.config]\n    enabled = true\n    restart-time = 20\n'
        if [[ $role == rr ]]; then
            printf '  [neighbors.transport.config]\n    passive-mode = true\n'
            printf '  [neighbors.route-reflector.config]\n    route-reflector-client = true\n    route-reflector-cluster-id = "%s"\n' "$id"
        fi
        for family in l2vpn-evpn l3vpn-ipv4-unicast l3vpn-ipv6-unicast; do
            printf '  [[neighbors.afi-safis]]\n    [neighbors.afi-safis.config]\n      afi-safi-name = "%s"\n' "$family"
            printf '    [neighbors.afi-safis.mp-graceful-restart.config]\n      enabled = true\n'
        done
    done
}

start() { # namespace, log file, command...
    local ns=$1 log=$2
    shift 2
    ip netns exec "$ns" "$@" >"$log" 2>&1 &
    pids+=($!)
}

echo "cluster-demo: fabric bridge and route reflector"
fab=${tag}fab rr=${tag}rr
netns "$fab"
ip -n "$fab" link add br0 type bridge
ip -n "$fab" link set br0 up
netns "$rr"
ip -n "$fab" link add crr type veth peer name ctl0 netns "$rr"
ip -n "$fab" link set crr master br0 up
ip -n "$rr" link set ctl0 up
ip -n "$rr" addr add 198.51.100.254/24 dev ctl0
gobgpd_toml 198.51.100.254 "198.51.100.1 198.51.100.2 198.51.100.3" rr >"$tmp/rr.toml"
start "$rr" "$tmp/rr.log" gobgpd -f "$tmp/rr.toml" -t toml --api-hosts 127.0.0.1:50051 --pprof-disable

for k in "${nodes[@]}"; do
    ns=${tag}n$k
    echo "cluster-demo: node $k (namespace $ns)"
    netns "$ns"
    ip -n "$fab" link add "f$k" type veth peer name fab0 netns "$ns"
    ip -n "$fab" link set "f$k" master br0 mtu 1450 up
    ip -n "$ns" link set fab0 mtu 1450 up
    ip -n "$fab" link add "c$k" type veth peer name ctl0 netns "$ns"
    ip -n "$fab" link set "c$k" master br0 up
    ip -n "$ns" link set ctl0 up
    ip -n "$ns" addr add "198.51.100.$k/24" dev ctl0
    mkdir -m 0700 "$tmp/n$k-pods"
    start "$ns" "$tmp/vrouterd-$k.log" "$bin/vrouterd" --control-socket "$tmp/n$k.sock" \
        --socket-base "$tmp/n$k-pods" --fwd-lcores 1 --vhost-lcore 0 --idle-sleep-us 50 \
        --fabric kernel:fab0 --fabric-mtu 1450 --fabric-ip "198.19.0.$k" --fabric-mac "02:00:00:00:fa:0$k" \
        -- --no-pci -m 256 "--file-prefix=${tag}n$k"
    for ((i = 0; i < 600; i++)); do
        "$bin/vrouterctl" --socket "$tmp/n$k.sock" health >/dev/null 2>&1 && break
        sleep 0.2
    done
    ctl "$k" health
    ctl "$k" vrf add 1
    ctl "$k" nh set 10 receive
    for j in 1 2; do
        pod=${tag}p$k$j host=vh$$x$k$j mac=02:00:00:00:$k$j:02 n=$k$j
        netns "$pod"
        ip -n "$ns" link add "$host" mtu 1400 type veth peer name eth0 netns "$pod"
        ip -n "$ns" link set "$host" up
        ip -n "$pod" link set eth0 address "$mac" mtu 1400 up
        ip -n "$pod" addr add "198.18.$n.2/24" dev eth0
        ip -n "$pod" route add default via "198.18.$n.1"
        ctl "$k" vif add "pod$j" --type af-packet --iface "$host" --vrf 1 --mac "$mac" --mtu 1400
        ctl "$k" nh set "$j" encap --vif "pod$j" --dmac "$mac"
        ctl "$k" route add --vrf 1 "198.18.$n.2/32" --nh "$j"
        ctl "$k" route add --vrf 1 "198.18.$n.1/32" --nh 10
    done
    encap=()
    if [[ $overlay == mpls ]]; then
        ctl "$k" vrf routing 1 --rd "198.19.0.$k:1" --import target:64512:1 --export target:64512:1 --label "200$k"
        if ((k == 2)); then encap=(--mpls-encap gre); else encap=(--mpls-encap udp); fi
    else
        ctl "$k" vxlan set 1001 --vrf 1
        ctl "$k" vrf routing 1 --rd "198.19.0.$k:1" --import target:64512:1 --export target:64512:1 --vni 1001
    fi
    gobgpd_toml "198.51.100.$k" 198.51.100.254 >"$tmp/n$k.toml"
    start "$ns" "$tmp/gobgpd-$k.log" gobgpd -f "$tmp/n$k.toml" -t toml --api-hosts 127.0.0.1:50051 --pprof-disable
    gobgpd_pid[k]=${pids[-1]}
    start "$ns" "$tmp/vrouter-bgp-$k.log" "$bin/vrouter-bgp" --vrouter-socket "$tmp/n$k.sock" --fabric-ip "198.19.0.$k" "${encap[@]}"
done

echo "cluster-demo: waiting for every node to learn the 4 pod routes of the others"
for k in "${nodes[@]}"; do
    for ((i = 0; i < 150; i++)); do
        learned=$("$bin/vrouterctl" --socket "$tmp/n$k.sock" route list --vrf 1 --json 2>/dev/null |
            jq '[.[] | select(.nexthop >= 60000)] | length' 2>/dev/null || echo 0)
        ((learned == 4)) && break
        sleep 0.2
    done
    echo "cluster-demo: node $k has $learned remote pod routes"
done
if [[ $overlay == mpls ]]; then
    echo "cluster-demo: the reflector's VPNv4 table"
    ip netns exec "$rr" gobgp global rib -a vpnv4 || true
else
    echo "cluster-demo: the reflector's EVPN table"
    ip netns exec "$rr" gobgp global rib -a evpn || true
fi

echo "cluster-demo: ping matrix (from → to)"
failed=0
for k in "${nodes[@]}"; do
    for j in 1 2; do
        row="198.18.$k$j.2 →"
        for k2 in "${nodes[@]}"; do
            ((k2 == k)) && continue
            for j2 in 1 2; do
                dst=198.18.$k2$j2.2 ok=0
                for ((t = 0; t < 5; t++)); do
                    if ip netns exec "${tag}p$k$j" ping -c 1 -W 1 -q "$dst" >/dev/null 2>&1; then ok=1; break; fi
                done
                if ((ok)); then row+=" $dst:ok"; else row+=" $dst:FAIL"; failed=$((failed + 1)); fi
            done
        done
        echo "  $row"
    done
done
if ((failed == 0)); then
    # Graceful restart: node 3's gobgpd killed and started again as a restarting speaker (-r)
    # while a pod on node 1 pings a pod on node 3 every 50 ms; the routes stay everywhere and
    # traffic keeps flowing.
    last=${nodes[-1]} first=${nodes[0]}
    echo "cluster-demo: graceful restart: node $last's gobgpd killed and started again under pings"
    ip netns exec "${tag}p${first}1" ping -i 0.05 -W 1 -q "198.18.${last}1.2" >"$tmp/gr-ping.log" 2>&1 &
    gr_ping=$!
    sleep 1
    { kill -9 "${gobgpd_pid[last]}" && wait "${gobgpd_pid[last]}"; } 2>/dev/null || true
    sleep 1.5
    start "${tag}n$last" "$tmp/gobgpd-$last-again.log" gobgpd -r -f "$tmp/n$last.toml" -t toml \
        --api-hosts 127.0.0.1:50051 --pprof-disable
    state=""
    for ((i = 0; i < 100; i++)); do
        state=$(ip netns exec "$rr" gobgp neighbor "198.51.100.$last" -j 2>/dev/null |
            jq -r '.state.session_state // empty' 2>/dev/null || true)
        if [[ $state == 6 || $state == ESTABLISHED ]]; then state=established; break; fi
        sleep 0.2
    done
    echo "  node $last's session to the reflector after the restart: ${state:-unknown}"
    sleep 2
    kill -INT "$gr_ping"
    wait "$gr_ping" || true
    summary=$(grep transmitted "$tmp/gr-ping.log" || true)
    sent=$(awk '{print $1}' <<<"$summary") received=$(awk '{print $4}' <<<"$summary")
    echo "  $summary"
    if [[ -z $sent ]] || ((sent < 40 || sent - received > 3)); then
        echo "cluster-demo: pings lost across node $last's gobgpd restart" >&2
        failed=$((failed + 1))
    fi
    ip netns exec "$rr" gobgp neighbor || true
fi
if ((failed)); then
    echo "cluster-demo: $failed checks failed (above); logs:" >&2
    tail -n 20 "$tmp"/vrouter-bgp-*.log >&2 || true
    exit 1
fi
echo "cluster-demo: every pod reaches every pod on the other nodes"
