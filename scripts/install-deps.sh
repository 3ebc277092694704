#!/usr/bin/env bash
# Installs what vrouter builds and tests with, on Debian 12 as root. Idempotent: installs only
# what is missing, so a second run is quick and touches nothing.
#   DPDK 22.11 (runtime, dev files, dpdk-testpmd), libclang for bindgen, pkg-config, iproute2,
#   and the tools the tests use as peers and oracles (ping, tcpdump, tshark, iperf3, scapy),
#   the standard CNI plugins vrouter-cni is chained with (host-local, tuning in /usr/lib/cni),
#   and for the VM tests QEMU (from bookworm-backports), busybox-static and cpio
#   (scripts/vm-image.sh builds the guest from Debian packages); for the package (scripts/package.sh)
#   dpkg-dev, and for its test a Debian tree booted with systemd (mmdebstrap, systemd-nspawn);
#   GoBGP (gobgpd, gobgp) for vrouter-bgp and the cluster tests, FRR (bgpd) as their other route
#   reflector (the tests run /usr/lib/frr/bgpd in a namespace; the frr service is not needed);
#   for building vrouter-bgp's gRPC client GoBGP's .proto files (its Go source), protoc and the
#   protobuf well-known types.
set -euo pipefail

[[ $(id -u) -eq 0 ]] || { echo "install-deps.sh: run as root (apt-get install)" >&2; exit 1; }

packages=(
    dpdk dpdk-dev libdpdk-dev          # DPDK 22.11: librte_*, headers, dpdk-testpmd
    libclang-dev clang pkg-config gcc make   # bindgen and the C shim
    iproute2 iputils-ping tcpdump tshark iperf3 python3-scapy   # test peers and oracles
    ethtool jq curl procps kmod
    socat python3-venv                  # scripts/api-contract.sh: relay to the control socket, schemathesis
    nfdump                              # flow export: nfcapd as the IPFIX collector, nfdump to read it
    containernetworking-plugins util-linux   # vrouter-cni's chaining tests (host-local, tuning), nsenter
    busybox-static cpio zstd xz-utils   # the VM tests' initramfs (modules may be .ko.xz/.zst)
    dpkg-dev binutils                    # scripts/package.sh: dpkg-shlibdeps, objcopy
    mmdebstrap systemd-container         # the package test's machine (scripts/systemd-image.sh)
    gobgpd                               # vrouter-bgp's BGP speaker and route reflector (gobgp CLI included)
    frr                                  # FRR's bgpd: the second route reflector implementation (bgp_cluster)
    golang-github-osrg-gobgp-dev         # GoBGP's api/*.proto (under /usr/share/gocode): vrouter-bgp's build.rs
    protobuf-compiler libprotobuf-dev    # protoc and google/protobuf/*.proto for them
)
# From bookworm-backports: the image may carry qemu-utils from there, and bookworm's own
# qemu-system-x86 would pull qemu-utils back to 7.2 (removing it); the two must match.
backports=(qemu-system-x86)
missing=()
for p in "${packages[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
missing_bpo=()
for p in "${backports[@]}"; do
    # Installed from bookworm itself (7.2) counts as missing: the tests use QEMU 9.2+ options.
    { dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" \
        && dpkg-query -W -f='${Version}' "$p" | grep -q '~bpo12'; } || missing_bpo+=("$p")
done
if ((${#missing[@]} + ${#missing_bpo[@]})); then
    echo "install-deps: installing ${missing[*]} ${missing_bpo[*]}"
    export DEBIAN_FRONTEND=noninteractive
    # tshark asks whether non-root users may capture; the answer does not matter here.
    echo "wireshark-common wireshark-common/install-setuid boolean false" | debconf-set-selections
    if ((${#missing_bpo[@]})) && ! grep -rqs bookworm-backports /etc/apt/sources.list /etc/apt/sources.list.d/; then
        # Same mirror as the configured bookworm suite, so this works wherever apt already does.
        apt-get update -qq
        mirror=$(apt-get indextargets --format '$(REPO_URI) $(RELEASE)' | awk '$2 == "bookworm" { print $1; exit }')
        [[ -n $mirror ]] || { echo "install-deps: no bookworm suite configured in apt to add bookworm-backports beside" >&2; exit 1; }
        echo "install-deps: adding bookworm-backports from $mirror"
        printf 'Types: deb\nURIs: %s\nSuites: bookworm-backports\nComponents: main\nSigned-By: /usr/share/keyrings/debian-archive-keyring.gpg\n' \
            "$mirror" > /etc/apt/sources.list.d/bookworm-backports.sources
    fi
    apt-get update -qq
    if ((${#missing[@]})); then
        apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
    fi
    if ((${#missing_bpo[@]})); then
        apt-get install -y -qq --no-install-recommends -t bookworm-backports "${missing_bpo[@]}" >/dev/null
    fi
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
