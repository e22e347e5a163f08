#!/usr/bin/env bash
# The whole test suite, bounded to run well inside CI's limit on 2 cores.
# Heavier runs: see README ("Longer runs").
set -euo pipefail
cd "$(dirname "$0")/.."
# The code as it is kept: formatted, and clippy-clean with warnings as errors.
cargo fmt --all -- --check
cargo clippy --workspace --all-targets -- -D warnings
# The tools as users build them: without lfs-core's test-only code (`testing`) and without
# the simulator in the mount daemon; this build must stand on its own, warnings included.
cargo clippy -p mkfs-lfs -p lfs-fuse -p lfs-tools -- -D warnings
# lfs-core's module graph: no layer reaches upward, no cycle among its files.
python3 scripts/module-graph.py
cargo build --workspace --all-targets
cargo test --workspace -- --test-threads=2
# POSIX conformance against a real mount (installs pjdfstest when missing).
scripts/pjdfstest.sh
# fsx with every operation kind, 100 000 operations over 4 unmount/remount cycles.
scripts/fsx.sh 25000 4
# A real workload: unpack crate sources, compare, git commit + fsck, remount, delete.
scripts/workload.sh
# The README's main command, run twice: the second run mounts what the first made.
scripts/run-twice.sh
# xfstests, a bounded list covering each difference from ext4 found (tests/xfstests/).
scripts/xfstests.sh $(grep -v '^#' tests/xfstests/suite.list)
# The cleaner on a real mount, bounded: 128 MiB, once its capacity at 75% and 90% full.
scripts/cleaner-bench.sh 128 1
# Concurrent load with verification while the cleaner runs, bounded: 60 s of stress-ng's
# filesystem stressors and fio (crc32c, fsync), then fsck and fio's check after remount.
scripts/stress.sh 60
