#!/usr/bin/env bash
# The main job, on a fresh Debian 12 machine as root: installs what is missing, reserves
# hugepages, builds vrouterd and runs it with its default configuration (forwarding lcore 1,
# vhost lcore 0) for DEMO_SECONDS (default 10; 0 = until Ctrl-C), then it shuts down cleanly.
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/install-deps.sh
scripts/hugepages.sh "${VROUTER_HUGEPAGES:-1024}"
cargo build --release --locked --bin vrouterd

seconds=${DEMO_SECONDS:-10}
echo "demo: starting vrouterd (default configuration) for ${seconds}s; Ctrl-C stops it cleanly"
exec target/release/vrouterd --run-for "$seconds" --idle-sleep-us "${IDLE_SLEEP_US:-0}" "$@"
