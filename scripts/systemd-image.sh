#!/usr/bin/env bash
# Builds the fresh machine the package test (tests/package.rs) installs vrouter on: a minimal
# Debian 12 root file system with systemd and apt, nothing else installed (no DPDK: installing
# the package must bring what it needs, from apt's cache). The test boots it with systemd-nspawn --boot --volatile=overlay, so
# the tree itself is never changed and serves every run.
#   target/systemd-image/rootfs   the tree (mmdebstrap, variant apt, plus systemd and dbus; the
#                                 DPDK runtime's .debs in /var/cache/apt/archives)
# Idempotent: does nothing when target/systemd-image/stamp matches this script (rebuilds after
# it changed). Run as root after scripts/install-deps.sh (mmdebstrap, systemd-container).
# Usage: scripts/systemd-image.sh [OUT_DIR]     (default target/systemd-image)
set -euo pipefail
cd "$(dirname "$0")/.."
out=$(realpath -m "${1:-target/systemd-image}")
want="$(sha256sum "$0" | cut -d' ' -f1)"

built() { [[ -f $out/stamp && $(head -n1 "$out/stamp") == "$want" && -x $out/rootfs/lib/systemd/systemd ]]; }
if built; then
    echo "systemd-image: already built in $out ($(sed -n 2p "$out/stamp"))"
    exit 0
fi
for tool in mmdebstrap systemd-nspawn; do
    command -v "$tool" >/dev/null || { echo "systemd-image: $tool is missing; run scripts/install-deps.sh" >&2; exit 1; }
done

mkdir -p "$out"
# Serialise concurrent builds (two test processes starting at once).
exec 9>"$out/.lock"
flock 9
if built; then
    echo "systemd-image: built meanwhile in $out"
    exit 0
fi

# The mirror apt already uses for bookworm, so this works wherever apt does.
mirror=$(apt-get indextargets --format '$(REPO_URI) $(RELEASE)' 2>/dev/null | awk '$2 == "bookworm" { print $1; exit }')
mirror=${mirror:-http://deb.debian.org/debian/}
rm -rf "$out/rootfs" "$out/rootfs.new"
echo "systemd-image: bootstrapping Debian 12 from $mirror"
# The DPDK runtime the package depends on is downloaded into apt's cache, not installed, so that
# the test installs the package without network (the container has none) and still finds the
# machine without DPDK. Package lists stay in the image for the same reason.
dpdk_runtime=(librte-eal23 librte-ethdev23 librte-mbuf23 librte-mempool23 librte-ring23
    librte-mempool-ring23 librte-bus-pci23 librte-bus-vdev23 librte-net-tap23)
mmdebstrap --quiet --variant=apt --include=systemd,systemd-sysv,dbus \
    --skip=cleanup/apt/lists --skip=cleanup/apt/cache \
    --customize-hook='rm -f "$1"/var/cache/apt/archives/*.deb' \
    --customize-hook="chroot \"\$1\" apt-get install -y -q --download-only --no-install-recommends ${dpdk_runtime[*]}" \
    bookworm "$out/rootfs.new" "$mirror"
mv "$out/rootfs.new" "$out/rootfs"
printf '%s\n%s\n' "$want" "built $(date -u +%FT%TZ)" > "$out/stamp"
echo "systemd-image: built in $out ($(du -sh "$out/rootfs" | cut -f1))"
