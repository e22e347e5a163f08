#!/usr/bin/env bash
# The cleaner on a real mount: hot-and-cold overwrites at 75% and 90% full, many times the
# disk's capacity, each policy; measured write cost beside the simulator's for the same
# setting; fails on ENOSPC, a content mismatch or fsck damage.
#   scripts/cleaner-bench.sh [MIB] [CAPACITIES]      (defaults: 256 10; the suite runs 128 1)
# Work files go under $BENCH_DIR (default /var/tmp).
set -euo pipefail
cd "$(dirname "$0")/.."
MIB=${1:-256}
CAPACITIES=${2:-10}
cargo build --release -q -p lfs-tests -p lfs-fuse -p mkfs-lfs -p lfs-tools -p lfs-cleaner
target/release/cleaner-bench --mib "$MIB" --capacities "$CAPACITIES" \
  --warmup "$(awk "BEGIN { print ($CAPACITIES >= 5) ? 2 : 0.5 }")" --dir "${BENCH_DIR:-/var/tmp}"
