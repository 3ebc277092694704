#!/usr/bin/env bash
# Builds the Debian package of vrouter: vrouterd, vrouterctl, vrouter-bgp, the vrouter-cni and
# vrouter-ipam CNI plugins (in /usr/lib/cni, beside Debian's containernetworking-plugins), the
# vrouterd and vrouter-bgp services and their configuration files (packaging/), depending on
# Debian's DPDK runtime. Prints the .deb's path.
#
#   scripts/package.sh [--bin-dir DIR] [--out DIR]
#
#   --bin-dir  package the binaries already built in DIR (the package test uses its own
#              build's) instead of building them with cargo build --release
#   --out      where the .deb goes (default target/debian)
#
# The version is the workspace's, plus +git<commits>.<hash> when built from a git checkout, so
# that each build from a later commit upgrades the one before; VROUTER_DEB_VERSION overrides it.
# Needs dpkg-dev (dpkg-shlibdeps) and the DPDK the binaries link against installed.
set -euo pipefail

bin_dir=
out=
while (($#)); do
    case $1 in
    --bin-dir) bin_dir=$2; shift 2 ;;
    --out) out=$2; shift 2 ;;
    *) echo "package.sh: unknown argument $1 (see the top of $0)" >&2; exit 2 ;;
    esac
done
[[ -z $bin_dir ]] || bin_dir=$(realpath "$bin_dir")
[[ -z $out ]] || out=$(realpath -m "$out")
cd "$(dirname "$0")/.."

target_dir=$(cargo metadata --format-version 1 --no-deps | jq -r .target_directory)
out=${out:-$target_dir/debian}
if [[ -z $bin_dir ]]; then
    echo "package: building vrouterd, vrouterctl, vrouter-bgp and the CNI plugins (release)" >&2
    cargo build --locked --release -p vrouterd -p control-api -p vrouter-bgp -p vrouter-cni --bins >&2
    bin_dir=$target_dir/release
fi
for bin in vrouterd vrouterctl vrouter-bgp vrouter-cni vrouter-ipam; do
    [[ -x $bin_dir/$bin ]] || { echo "package: no $bin in $bin_dir" >&2; exit 1; }
done

version=${VROUTER_DEB_VERSION:-}
if [[ -z $version ]]; then
    version=$(cargo metadata --format-version 1 --no-deps |
        jq -r '.packages[] | select(.name == "vrouterd") | .version')
    if git rev-parse --git-dir >/dev/null 2>&1; then
        version+="+git$(git rev-list --count HEAD).$(git rev-parse --short=8 HEAD)"
    fi
fi
arch=$(dpkg --print-architecture)

mkdir -p "$out"
stage=$(mktemp -d "$out/.stage.XXXXXX")
trap 'rm -rf "$stage"' EXIT
# Laid out as a source tree's debian/ directory, where dpkg-shlibdeps expects binaries to be.
root=$stage/debian/vrouter

# Debug info stays out (the release profile keeps line tables for profiling); symbols stay,
# so that perf and backtraces still name functions.
install -d "$root/usr/bin" "$root/usr/lib/cni"
for bin in usr/bin/vrouterd usr/bin/vrouterctl usr/bin/vrouter-bgp usr/lib/cni/vrouter-cni \
    usr/lib/cni/vrouter-ipam; do
    objcopy --strip-debug "$bin_dir/${bin##*/}" "$root/$bin"
    chmod 755 "$root/$bin"
done
install -D -m 644 packaging/vrouterd.service "$root/lib/systemd/system/vrouterd.service"
install -D -m 644 packaging/vrouterd.toml "$root/etc/vrouter/vrouterd.toml"
install -D -m 644 packaging/vrouter-bgp.service "$root/lib/systemd/system/vrouter-bgp.service"
install -D -m 644 packaging/vrouter-bgp.conf "$root/etc/vrouter/vrouter-bgp.conf"
install -D -m 755 packaging/check-hugepages "$root/usr/libexec/vrouter/check-hugepages"
install -D -m 644 packaging/debian/copyright "$root/usr/share/doc/vrouter/copyright"
install -D -m 644 README.md "$root/usr/share/doc/vrouter/README.md"

# The libraries the binaries link, with the versions they need, from the installed packages'
# shlibs files; the DPDK drivers vrouterd loads at run time are named in the control file.
# (It finds the package's root by its DEBIAN directory.)
install -d "$root/DEBIAN"
printf 'Source: vrouter\n\nPackage: vrouter\nArchitecture: any\n' > "$stage/debian/control"
shlibs=$(cd "$stage" && dpkg-shlibdeps -O debian/vrouter/usr/bin/vrouterd debian/vrouter/usr/bin/vrouterctl \
    debian/vrouter/usr/bin/vrouter-bgp debian/vrouter/usr/lib/cni/vrouter-cni debian/vrouter/usr/lib/cni/vrouter-ipam |
    sed -n 's/^shlibs:Depends=//p')
[[ -n $shlibs ]] || { echo "package: dpkg-shlibdeps found no dependencies" >&2; exit 1; }

installed_size=$(du -sk --exclude=DEBIAN "$root" | cut -f1)
sed -e "s/@VERSION@/$version/" -e "s/@ARCH@/$arch/" -e "s/@INSTALLED_SIZE@/$installed_size/" \
    -e "s/@SHLIBS@/$shlibs/" packaging/debian/control > "$root/DEBIAN/control"
install -m 644 packaging/debian/conffiles "$root/DEBIAN/conffiles"
install -m 755 packaging/debian/postinst packaging/debian/prerm packaging/debian/postrm "$root/DEBIAN/"
(cd "$root" && find . -path ./DEBIAN -prune -o -type f -printf '%P\0' | sort -z |
    xargs -0 md5sum) > "$root/DEBIAN/md5sums"

deb=$out/vrouter_${version}_${arch}.deb
# zstd: as small as xz for these binaries at a fraction of the time (dpkg >= 1.21.18, Debian 12).
dpkg-deb -Zzstd --root-owner-group --build "$root" "$deb" >&2
echo "$deb"
