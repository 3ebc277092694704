#!/usr/bin/env bash
# Installs what vrouter builds and tests with, on Debian 12 as root. Idempotent: installs only
# what is missing, so a second run is quick and touches nothing.
#   DPDK 22.11 (runtime, dev files, dpdk-testpmd), libclang for bindgen, pkg-config, iproute2,
#   and the tools the tests use as peers and oracles (ping, tcpdump, tshark, iperf3, scapy).
set -euo pipefail

[[ $(id -u) -eq 0 ]] || { echo "install-deps.sh: run as root (apt-get install)" >&2; exit 1; }

packages=(
    dpdk dpdk-dev libdpdk-dev          # DPDK 22.11: librte_*, headers, dpdk-testpmd
    libclang-dev clang pkg-config gcc make   # bindgen and the C shim
    iproute2 iputils-ping tcpdump tshark iperf3 python3-scapy   # test peers and oracles
    ethtool jq curl procps kmod
)
missing=()
for p in "${packages[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
    echo "install-deps: installing ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    # tshark asks whether non-root users may capture; the answer does not matter here.
    echo "wireshark-common wireshark-common/install-setuid boolean false" | debconf-set-selections
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
else
    echo "install-deps: Debian packages already installed"
fi

if ! command -v cargo >/dev/null; then
    echo "install-deps: cargo is missing; install Rust (rustup) first" >&2
    exit 1
fi
if ! cargo nextest --version >/dev/null 2>&1; then
    echo "install-deps: installing cargo-nextest"
    cargo install --locked cargo-nextest
fi
pkg-config --atleast-version=22.11 libdpdk || { echo "install-deps: DPDK >= 22.11 not found by pkg-config" >&2; exit 1; }
echo "install-deps: DPDK $(pkg-config --modversion libdpdk), $(cargo --version)"
