#!/usr/bin/env bash
# The API contract test: checks control-api/openapi.yaml as an OpenAPI 3 document, then runs
# schemathesis (pinned, in a virtual environment this script creates under target/) with every
# check on and every phase — examples, coverage, fuzzing, stateful — against a real vrouterd
# reached through its control socket, and fails on any difference between the document and
# what the server does. Afterwards vrouterd must still answer and stop cleanly.
#
# vrouterd runs in a network namespace of its own, with a veth for the af-packet vifs the
# generated requests add (tap vifs are created there too). scripts/api-contract/hooks.py gives
# the generator the formats a regular expression cannot say and points schema-valid vif
# requests at this machine's socket base, interfaces and groups.
#
#   CONTRACT_MAX_EXAMPLES  test cases per operation and phase (default 30: about 1,500 requests)
#   CONTRACT_MAX_SECONDS   time budget of the schemathesis run (default 120): fuzzing and the
#                          stateful phase repeat until it is spent
set -euo pipefail
cd "$(dirname "$0")/.."

[[ $(id -u) -eq 0 ]] || { echo "api-contract.sh: run as root (network namespace, DPDK)" >&2; exit 1; }
max_examples=${CONTRACT_MAX_EXAMPLES:-30}
max_seconds=${CONTRACT_MAX_SECONDS:-120}

target_dir=$(cargo metadata --format-version 1 --no-deps | jq -r .target_directory)
venv=$target_dir/schemathesis-venv
if [[ ! -x $venv/bin/schemathesis ]] || ! "$venv/bin/schemathesis" --version | grep -q '4\.32\.5'; then
    echo "api-contract: creating $venv"
    rm -rf "$venv"
    python3 -m venv "$venv"
    "$venv/bin/pip" install --quiet --disable-pip-version-check \
        'schemathesis==4.32.5' 'openapi-spec-validator==0.9.0'
fi

echo "api-contract: validating control-api/openapi.yaml as OpenAPI 3"
"$venv/bin/openapi-spec-validator" control-api/openapi.yaml

cargo build --locked --bin vrouterd
bin=$target_dir/debug/vrouterd

tmp=$(mktemp -d /tmp/vrouter-contract.XXXXXX)
ns=vrcontract$$
tag=vrct$$
vr_pid='' bridge_pid=''
cleanup() {
    local status=$?
    trap - EXIT INT TERM
    [[ -z $bridge_pid ]] || kill "$bridge_pid" 2>/dev/null || true
    if [[ -n $vr_pid ]] && kill -0 "$vr_pid" 2>/dev/null; then
        kill -KILL "$vr_pid" 2>/dev/null || true
        wait "$vr_pid" 2>/dev/null || true
    fi
    ip netns del "$ns" 2>/dev/null || true
    rm -rf "/var/run/dpdk/${tag}"
    if ((status != 0)) && [[ -f $tmp/vrouterd.log ]]; then
        echo "--- vrouterd log (last lines) ---"
        tail -n 30 "$tmp/vrouterd.log"
    fi
    rm -rf "$tmp"
    exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

ip netns add "$ns"
ip -n "$ns" link set lo up
ip -n "$ns" link add vrct0 type veth peer name vrct0p
ip -n "$ns" link set vrct0 up
ip -n "$ns" link set vrct0p up
in_ns() { ip netns exec "$ns" "$@"; }
# Background processes are started with `ip netns exec` itself, not through in_ns: $! must be
# the process (ip execs it), not a subshell that a signal would stop without it.

mkdir -m 0700 "$tmp/pods"
ip netns exec "$ns" "$bin" --control-socket "$tmp/vrouter.sock" --socket-base "$tmp/pods" --idle-sleep-us 200 \
    -- --no-pci -m 128 "--file-prefix=$tag" >"$tmp/vrouterd.log" 2>&1 &
vr_pid=$!
for ((i = 0; i < 300; i++)); do
    [[ -S $tmp/vrouter.sock ]] && break
    kill -0 "$vr_pid" 2>/dev/null || { echo "api-contract: vrouterd exited" >&2; exit 1; }
    sleep 0.1
done
# Schemathesis speaks TCP: a relay on the namespace's loopback carries each connection to the
# control socket unchanged.
port=18080
# (Its complaints about clients that hung up first are not the server's business.)
ip netns exec "$ns" socat "TCP-LISTEN:$port,bind=127.0.0.1,fork,reuseaddr" "UNIX-CONNECT:$tmp/vrouter.sock" \
    2>/dev/null &
bridge_pid=$!
for ((i = 0; i < 100; i++)); do
    in_ns curl -sf "http://127.0.0.1:$port/health" >/dev/null && break
    sleep 0.1
done

echo "api-contract: schemathesis, all checks, all phases, $max_examples examples per operation"
report=$tmp/report
status=0
# From the temporary directory: schemathesis keeps a cache of its findings in the current one.
repo=$PWD
(cd "$tmp" && in_ns env CONTRACT_SOCKET_BASE="$tmp/pods" CONTRACT_AF_PACKET_IFACE=vrct0 \
    CONTRACT_TAP_IFACE=vrcttap0 CONTRACT_FWD_LCORE=1 SCHEMATHESIS_HOOKS=hooks PYTHONPATH="$repo/scripts/api-contract" \
    "$venv/bin/schemathesis" --config-file "$repo/scripts/api-contract/schemathesis.toml" \
    run "$repo/control-api/openapi.yaml" --url "http://127.0.0.1:$port" \
    --checks all --phases examples,coverage,fuzzing,stateful --generation-deterministic \
    --max-examples "$max_examples" --max-time "$max_seconds" --workers 1 --no-color \
    --report ndjson --report-dir "$report") || status=$?

((status == 0)) || { echo "api-contract: the document and the server disagree (above)" >&2; exit 1; }
# The run must have been a real one: count the requests it sent.
requests=$(cat "$report"/*.ndjson | jq -s '[.[] | .ScenarioFinished? // empty | .recorder.interactions // {} | length] | add // 0')
echo "api-contract: $requests requests sent"
((requests >= 1000)) || { echo "api-contract: only $requests requests; expected at least 1000" >&2; exit 1; }

kill -0 "$vr_pid" 2>/dev/null || { echo "api-contract: vrouterd died during the run" >&2; exit 1; }
in_ns curl -sf "http://127.0.0.1:$port/health" >/dev/null || { echo "api-contract: vrouterd stopped answering" >&2; exit 1; }
kill -TERM "$vr_pid"
wait "$vr_pid" || { echo "api-contract: vrouterd did not exit cleanly" >&2; exit 1; }
vr_pid=''
echo "api-contract: ok"
