#!/usr/bin/env bash
# Bounded fuzzing of what a guest, the network or the agent controls: vhost-user's message
# decoder and descriptor-chain walk, the forwarding pipeline on arbitrary frames, without and
# with the flow stage (bursts with prefetch checked against one packet at a time), and the
# control API's request bodies and the agent channel's (pkt0) message decoder. Each target runs for FUZZ_SECONDS (default 30) from its
# checked-in seed corpus; a crash fails the run.
# cargo-fuzz needs nightly -Z flags: stable with RUSTC_BOOTSTRAP=1 does.
#   scripts/fuzz.sh [crate ...]      (default: vhost-user vrouter control-api)
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
secs=${FUZZ_SECONDS:-30}
crates=("$@")
((${#crates[@]})) || crates=(vhost-user vrouter control-api)
command -v cargo-fuzz >/dev/null || cargo install --locked cargo-fuzz
export RUSTC_BOOTSTRAP=1
export CARGO_TARGET_DIR=${FUZZ_TARGET_DIR:-$root/target/fuzz}
for crate in "${crates[@]}"; do
    cd "$root/$crate/fuzz"
    for src in fuzz_targets/*.rs; do
        target=$(basename "$src" .rs)
        work=$(mktemp -d)
        if [[ -d corpus/$target ]]; then cp -r corpus/"$target"/. "$work"/; fi
        echo "fuzz: $crate/$target for ${secs}s"
        status=0
        cargo fuzz run -O "$target" "$work" -- -max_total_time="$secs" -rss_limit_mb=2048 \
            -print_final_stats=1 > "$work.log" 2>&1 || status=$?
        grep -E "^(Done|stat::number_of_executed_units|SUMMARY)|panicked" "$work.log" || true
        if ((status != 0)); then
            tail -40 "$work.log"
            echo "fuzz: $crate/$target FAILED (reproducer in $crate/fuzz/artifacts/$target)"
            exit 1
        fi
        rm -rf "$work" "$work.log"
    done
done
echo "fuzz: all targets ran ${secs}s without a crash"
