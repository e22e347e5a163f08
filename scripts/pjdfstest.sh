#!/usr/bin/env bash
# pjdfstest (the POSIX conformance suite, crate pjdfstest) against a real lfs-fuse mount.
#   scripts/pjdfstest.sh [PATTERN...]
# Installs pjdfstest when missing. Prints the suite's own lines, then a summary
# "pjdfstest: N passed, N failed, N skipped"; exits 1 if a test outside
# tests/pjdfstest-exclusions.txt failed.
set -euo pipefail
cd "$(dirname "$0")/.."
command -v pjdfstest >/dev/null 2>&1 || cargo install --locked pjdfstest@0.2.2
source scripts/lib-mount.sh
lfs_setup lfs-pjd 512M
chmod 755 "$W"            # the suite switches to unprivileged users, who must reach the mount
mkdir "$W/sec"
LFS_EXTRA_CLEANUP='mountpoint -q "$W/sec" && umount "$W/sec"'
mount -t tmpfs -o size=16M tmpfs "$W/sec"
cat > "$W/pjd.toml" <<'TOML'
[features]
posix_fallocate = {}
rename_ctime = {}
utime_now = {}
utimensat = {}

[dummy_auth]
entries = [["nobody", "nogroup"], ["daemon", "daemon"]]

[settings]
naptime = 0.01
TOML
lfs_mount -o allow_other
chmod 777 "$W/mnt"
cd "$W/mnt"
set +e
pjdfstest -c "$W/pjd.toml" -p "$W/mnt" -s "$W/sec" "$@" > "$W/out.txt" 2>&1
set -e
cd /
grep -E '^[a-z_0-9:]+\s+(ok|FAILED|skipped.*)$' "$W/out.txt" | sed 's/  */ /g' > "$W/results.txt" || true
# The suite's own "Summary: F failed, S skipped, P passed, ..." line has the totals.
summary=$(grep -E '^Summary:' "$W/out.txt" | tail -1)
num() { echo "$summary" | grep -oE "[0-9]+ $1" | grep -oE '^[0-9]+' || echo 0; }
pass=$(num passed); fail=$(num failed); skip=$(num skipped)
[ -n "$summary" ] || { tail -20 "$W/out.txt"; echo "pjdfstest.sh: the suite did not finish"; exit 1; }
grep -E ' FAILED$' "$W/results.txt" | awk '{print $1}' | sort > "$W/failed.txt" || true
touch "$ROOT/tests/pjdfstest-exclusions.txt"
unexpected=$(grep -vxF -f <(grep -v '^#' "$ROOT/tests/pjdfstest-exclusions.txt" | awk '{print $1}' | grep .) "$W/failed.txt" || true)
[ -n "${PJD_KEEP:-}" ] && cp "$W/out.txt" "$PJD_KEEP"
echo "failed tests:"; sed 's/^/  /' "$W/failed.txt"
cd /
mountpoint -q "$W/sec" && umount "$W/sec"
lfs_unmount
echo "pjdfstest: $pass passed, $fail failed, $skip skipped"
if [ -n "$unexpected" ]; then
  echo "pjdfstest.sh: failures not in tests/pjdfstest-exclusions.txt:"; echo "$unexpected" | sed 's/^/  /'
  exit 1
fi
