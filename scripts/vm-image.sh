#!/usr/bin/env bash
# Builds the guest the VM tests boot (testkit/src/vm.rs), from Debian packages only:
#   target/vm/vmlinuz          the kernel of Debian's linux-image-amd64 (bookworm), extracted
#                              with apt-get download + dpkg-deb -x, never installed on the host
#   target/vm/initramfs.cpio.gz  busybox-static, the modules for virtio-net and virtio-serial over
#                              PCI (with their dependencies from modules.dep), and an /init that
#                              loads them, configures eth0 from the kernel command line and runs a
#                              command agent on the virtio-serial port "vr.agent"
# Idempotent: does nothing when target/vm/stamp matches this script (rebuilds after it changed).
# Run as root after scripts/install-deps.sh (busybox-static, cpio, kmod).
# Usage: scripts/vm-image.sh [OUT_DIR]     (default target/vm; or VM_IMAGE_DIR)
set -euo pipefail
cd "$(dirname "$0")/.."
out=$(realpath -m "${1:-${VM_IMAGE_DIR:-target/vm}}")
want="$(sha256sum "$0" | cut -d' ' -f1)"

if [[ -f $out/stamp && $(head -n1 "$out/stamp") == "$want" && -s $out/vmlinuz && -s $out/initramfs.cpio.gz ]]; then
    echo "vm-image: already built in $out ($(sed -n 2p "$out/stamp"))"
    exit 0
fi
for tool in busybox cpio depmod dpkg-deb apt-get gzip; do
    command -v "$tool" >/dev/null || { echo "vm-image: $tool is missing; run scripts/install-deps.sh" >&2; exit 1; }
done
busybox=/bin/busybox
# ldd fails on a static executable: the guest has no libc to link against.
[[ -x $busybox ]] && ! ldd "$busybox" >/dev/null 2>&1 \
    || { echo "vm-image: $busybox is not the static busybox (package busybox-static)" >&2; exit 1; }

mkdir -p "$out"
# Serialise concurrent builds (two test processes starting at once).
exec 9>"$out/.lock"
flock 9
if [[ -f $out/stamp && $(head -n1 "$out/stamp") == "$want" ]]; then
    echo "vm-image: built meanwhile in $out"
    exit 0
fi

# The versioned package linux-image-amd64 points at (bookworm's 6.1 unless pinned otherwise).
kpkg() { apt-cache depends linux-image-amd64 2>/dev/null | awk '/Depends: linux-image-[0-9]/ { print $2; exit }'; }
pkg=$(kpkg)
if [[ -z $pkg ]]; then
    apt-get update -qq
    pkg=$(kpkg)
fi
[[ -n $pkg ]] || { echo "vm-image: apt knows no linux-image-amd64" >&2; exit 1; }

work=$out/work
rm -rf "$work"
mkdir -p "$work/debs" "$work/kernel" "$work/root"
debs=$out/debs
mkdir -p "$debs"
if ! ls "$debs/${pkg}"_*.deb >/dev/null 2>&1; then
    echo "vm-image: downloading $pkg"
    # apt's sandbox user cannot write into root-owned target/: download in a world-writable dir.
    dl=$(mktemp -d)
    chmod 0777 "$dl"
    (cd "$dl" && apt-get download -qq "$pkg")
    mv "$dl"/*.deb "$debs/"
    rmdir "$dl"
fi
deb=$(ls "$debs/${pkg}"_*.deb | tail -n1)
echo "vm-image: extracting $(basename "$deb")"
dpkg-deb -x "$deb" "$work/kernel"
kver=$(ls "$work/kernel/lib/modules")
mods=$work/kernel/lib/modules/$kver
# The package ships no modules.dep (its postinst runs depmod): make one for the extracted tree.
depmod -b "$work/kernel" "$kver"

# Modules the guest needs, dependencies first (modules.dep lists each module's dependencies).
wanted=(virtio_pci virtio_net virtio_console)
declare -A seen=()
order=()
visit() {
    local rel=$1 dep
    [[ -n ${seen[$rel]:-} ]] && return
    seen[$rel]=1
    for dep in $(awk -F': *' -v r="$rel" '$1 == r { print $2; exit }' "$mods/modules.dep"); do
        visit "$dep"
    done
    order+=("$rel")
}
for m in "${wanted[@]}"; do
    if grep -q "/$m.ko" "$mods/modules.builtin"; then
        continue
    fi
    rel=$(awk -F: -v m="$m" '{ n = $1; sub(/.*\//, "", n); sub(/\.ko(\.(xz|zst|gz))?$/, "", n) } n == m { print $1; exit }' "$mods/modules.dep")
    [[ -n $rel ]] || { echo "vm-image: module $m is neither built in nor in modules.dep of $kver" >&2; exit 1; }
    visit "$rel"
done

root=$work/root
mkdir -p "$root"/{bin,dev,proc,sys,tmp,run,etc,lib/modules}
cp "$busybox" "$root/bin/busybox"
ln -s busybox "$root/bin/sh"
: > "$root/etc/modules"
for rel in "${order[@]}"; do
    name=$(basename "$rel")
    case $name in
        *.ko.xz) xz -dc "$mods/$rel" > "$root/lib/modules/${name%.xz}"; name=${name%.xz} ;;
        *.ko.zst) zstd -qdc "$mods/$rel" > "$root/lib/modules/${name%.zst}"; name=${name%.zst} ;;
        *.ko.gz) gzip -dc "$mods/$rel" > "$root/lib/modules/${name%.gz}"; name=${name%.gz} ;;
        *) cp "$mods/$rel" "$root/lib/modules/$name" ;;
    esac
    echo "$name" >> "$root/etc/modules"
done

cat > "$root/init" <<'INIT'
#!/bin/sh
# PID 1 of the test guest: modules, eth0 from the kernel command line, then the command agent.
/bin/busybox --install -s /bin
export PATH=/bin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
mount -t tmpfs -o size=90% tmpfs /tmp
for m in $(cat /etc/modules); do
    insmod "/lib/modules/$m" || echo "init: insmod $m failed"
done

ip=; gw=; mtu=1500
for arg in $(cat /proc/cmdline); do
    case $arg in
        vr.ip=*) ip=${arg#vr.ip=} ;;
        vr.gw=*) gw=${arg#vr.gw=} ;;
        vr.mtu=*) mtu=${arg#vr.mtu=} ;;
    esac
done
ip link set lo up
# The NIC may show up a moment after its module loaded: wait for it (bounded).
i=0
while [ ! -e /sys/class/net/eth0 ] && [ $i -lt 100 ]; do usleep 50000; i=$((i + 1)); done
ip link set eth0 mtu "$mtu" up
[ -n "$ip" ] && ip addr add "$ip" dev eth0
[ -n "$gw" ] && ip route add default via "$gw"

# The agent's port: the virtio-serial port QEMU names "vr.agent".
port=
i=0
while [ -z "$port" ] && [ $i -lt 100 ]; do
    for p in /sys/class/virtio-ports/*; do
        [ "$(cat "$p/name" 2>/dev/null)" = vr.agent ] && port=/dev/${p##*/}
    done
    [ -z "$port" ] && usleep 50000
    i=$((i + 1))
done
echo "init: eth0 ${ip:-unconfigured} gw ${gw:-none} mtu $mtu; agent on ${port:-NOTHING}; up $(cut -d' ' -f1 /proc/uptime) s"
[ -n "$port" ] || { echo "init: no agent port"; poweroff -f; }

# The agent. A request is one line "ID BASE64(COMMAND)"; the command runs in sh with stdin from
# /dev/null, and the answer is one line "@@ID EXIT_CODE BASE64(STDOUT AND STDERR)". Base64 both
# ways: commands and outputs may hold any byte and any number of lines.
mkdir -p /tmp/agent
exec 3<>"$port"
while read -r id cmd <&3; do
    echo "$cmd" | base64 -d > /tmp/agent/cmd
    sh /tmp/agent/cmd < /dev/null > /tmp/agent/out 2>&1 3<&-
    rc=$?
    echo "@@$id $rc $(base64 -w 0 /tmp/agent/out)" >&3
done
echo "init: agent port closed"
poweroff -f
INIT
chmod 0755 "$root/init"

(cd "$root" && find . | sort | cpio -o -H newc --quiet | gzip -1) > "$work/initramfs.cpio.gz"
cp "$work/kernel/boot/vmlinuz-$kver" "$out/vmlinuz.new"
mv "$work/initramfs.cpio.gz" "$out/initramfs.cpio.gz"
mv "$out/vmlinuz.new" "$out/vmlinuz"
loaded=$(tr '\n' ' ' < "$root/etc/modules")
rm -rf "$work"
printf '%s\nkernel %s, modules %s\n' "$want" "$kver" "$loaded" > "$out/stamp"
echo "vm-image: built $out/vmlinuz ($kver) and $out/initramfs.cpio.gz ($(du -h "$out/initramfs.cpio.gz" | cut -f1))"
