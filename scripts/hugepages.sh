#!/usr/bin/env bash
# Reserve N 2 MiB hugepages (default 1024) and make sure hugetlbfs is mounted.
# Idempotent: never lowers a reservation that is already large enough. Says what it did.
# Usage: scripts/hugepages.sh [N]
set -euo pipefail

want=${1:-${VROUTER_HUGEPAGES:-1024}}
[[ $want =~ ^[0-9]+$ ]] || { echo "hugepages.sh: N must be a number of 2 MiB pages, got '$want'" >&2; exit 2; }
[[ $(id -u) -eq 0 ]] || { echo "hugepages.sh: must run as root (writes /proc/sys/vm/nr_hugepages, mounts hugetlbfs)" >&2; exit 1; }

nr=/sys/kernel/mm/hugepages/hugepages-2048kB/nr_hugepages
[[ -w $nr ]] || nr=/proc/sys/vm/nr_hugepages
have=$(cat "$nr")
if (( have >= want )); then
    echo "hugepages: $have x 2 MiB already reserved (wanted $want)"
else
    echo "$want" > "$nr"
    got=$(cat "$nr")
    if (( got < want )); then
        # Memory may be fragmented: compact and try once more before giving up.
        echo 1 > /proc/sys/vm/compact_memory 2>/dev/null || true
        echo "$want" > "$nr"
        got=$(cat "$nr")
    fi
    (( got >= want )) || { echo "hugepages: asked for $want x 2 MiB, the kernel gave $got" >&2; exit 1; }
    echo "hugepages: reserved $got x 2 MiB (was $have)"
fi

if grep -qs ' hugetlbfs ' /proc/mounts; then
    echo "hugetlbfs: already mounted at $(awk '$3=="hugetlbfs"{print $2; exit}' /proc/mounts)"
else
    mkdir -p /dev/hugepages
    mount -t hugetlbfs -o pagesize=2M nodev /dev/hugepages
    echo "hugetlbfs: mounted at /dev/hugepages"
fi
echo "hugepages: $(grep HugePages_Free /proc/meminfo | awk '{print $2}') free of $(grep HugePages_Total /proc/meminfo | awk '{print $2}')"
