#!/usr/bin/env bash
# Bounded fuzz run of this crate alone (CI runs it through scripts/fuzz.sh): each target for
# SECONDS (default 60) from the checked-in seeds.
# Needs cargo-fuzz (`cargo install cargo-fuzz`) and a nightly toolchain, or stable with
# RUSTC_BOOTSTRAP=1 (cargo-fuzz passes -Z flags). Exits non-zero if a target crashes.
set -euo pipefail
secs=${1:-60}
cd "$(dirname "$0")"
toolchain=()
if rustup toolchain list 2>/dev/null | grep -q '^nightly'; then toolchain=(+nightly); else export RUSTC_BOOTSTRAP=1; fi
for target in session desc_chain packed_ring; do
    work=$(mktemp -d)
    cp corpus/"$target"/seed-* "$work"/
    echo "fuzz: $target for ${secs}s"
    cargo "${toolchain[@]}" fuzz run -O "$target" "$work" corpus/"$target" -- -max_total_time="$secs" -rss_limit_mb=2048
    rm -rf "$work"
done
