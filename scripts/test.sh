#!/usr/bin/env bash
# The whole test suite, on a fresh Debian 12 machine as root: installs what it needs, reserves
# hugepages, builds the VM tests' guest, checks formatting and lints, runs every test (one
# process per test: DPDK's EAL initialises once per process), the API contract test, the demo,
# and bounded fuzzing.
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/install-deps.sh
scripts/hugepages.sh "${VROUTER_HUGEPAGES:-1024}"
# The VM tests' guest (a Debian kernel and a busybox initramfs); built here so its download does
# not count against a test's time. The tests build it too when it is missing.
scripts/vm-image.sh
# The package test's machine (a Debian tree with systemd), for the same reason.
scripts/systemd-image.sh

echo "== no merge conflict left in a tracked file"
if git grep -nE '^(<<<<<<<|>>>>>>>)( |$)|^=======$' -- ':!*.proptest-regressions'; then
    echo "merge conflict markers above" >&2
    exit 1
fi
echo "== cargo fmt --check"
cargo fmt --all --check
echo "== cargo clippy"
cargo clippy --workspace --all-targets --locked -- -D warnings
echo "== cargo nextest"
profile=default
[[ -n ${CI:-} ]] && profile=ci
cargo nextest run --workspace --locked --profile "$profile"
echo "== loom (the flow table's synchronisation)"
# The flow table rebuilt on loom's atomics; its own target directory, so that the cfg does not
# make later builds start over.
RUSTFLAGS="--cfg loom" cargo test -p vrouter --test flow_loom --release --locked --target-dir target/loom
echo "== API contract (openapi.yaml against a real vrouterd, schemathesis)"
scripts/api-contract.sh
echo "== demo (the README's first command, as a new user runs it)"
DEMO_SECONDS=${DEMO_SECONDS:-3} scripts/demo.sh
echo "== fuzz (bounded)"
FUZZ_SECONDS=${FUZZ_SECONDS:-20} scripts/fuzz.sh
