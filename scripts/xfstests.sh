#!/usr/bin/env bash
# xfstests (fstests) against lfs-fuse, and with --ext4 against kernel ext4 on loop devices in
# the same campaign, on image files in a temporary directory.
#   scripts/xfstests.sh [--ext4|--only-ext4] [TEST...]   e.g. generic/015 (default: -g quick)
# It builds fstests from ../shared/peer-suites/ once (into $XFSTESTS_DIR, default
# /var/tmp/lfs-xfstests; the packages it needs come from apt), adapts common/rc so that
# FSTYP=fuse formats and checks a real lfs image (tests/xfstests/adapt-common-rc.py), and
# installs the mount helper /sbin/mount.fuse.lfs-fuse for the run. Results: $W/results-*.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
EXT4=0 LFS=1
case "${1:-}" in
  --ext4) EXT4=1; shift ;;
  --only-ext4) EXT4=1; LFS=0; shift ;;   # the peer alone, e.g. to refresh its baseline
esac
TESTS=("$@")
[ ${#TESTS[@]} -gt 0 ] || TESTS=(-g quick)
XDIR=${XFSTESTS_DIR:-/var/tmp/lfs-xfstests}
SRC=$XDIR/xfstests

# Some tests' awk scripts need gawk (asort); Debian's default awk is mawk.
command -v gawk > /dev/null 2>&1 || { apt-get update -qq; DEBIAN_FRONTEND=noninteractive apt-get install -y -qq gawk > /dev/null; }
if [ ! -x "$SRC/ltp/fsstress" ]; then
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq autoconf automake libtool libtool-bin make gcc pkg-config xfsprogs \
    xfslibs-dev uuid-dev uuid-runtime libattr1-dev libacl1-dev libaio-dev liburing-dev \
    libgdbm-dev libcap-dev attr acl bc dump psmisc quota fio e2fsprogs gawk > /dev/null
  mkdir -p "$XDIR"
  tar -xzf "$(ls "$ROOT"/../shared/peer-suites/xfstests-*.tar.gz | head -1)" -C "$XDIR"
  make -C "$SRC" -j2 > "$XDIR/make.log" 2>&1 || { tail -30 "$XDIR/make.log"; exit 1; }
fi
python3 "$ROOT/tests/xfstests/adapt-common-rc.py" "$SRC/common/rc"
for u in fsgqa fsgqa2 123456-fsgqa; do id "$u" > /dev/null 2>&1 || useradd -m "$u"; done

cargo build --release -q -p mkfs-lfs -p lfs-fuse -p lfs-tools
W=$(mktemp -d /tmp/lfs-xfstests.XXXXXX)
chmod 755 "$W"   # tests run commands as the user fsgqa
HELPER=/sbin/mount.fuse.lfs-fuse
cleanup() {
  set +e
  for m in "$W"/test "$W"/scratch "$W"/ext4-test "$W"/ext4-scratch; do
    mountpoint -q "$m" && umount "$m"
  done
  for l in "${LOOPS[@]:-}"; do [ -n "$l" ] && losetup -d "$l"; done
  if [ -f "$W/helper.saved" ]; then mv -f "$W/helper.saved" "$HELPER"; else rm -f "$HELPER"; fi
  rm -rf "$W/test.img" "$W/scratch.img" "$W/ext4-"*.img
}
trap cleanup EXIT
# The helper always runs this checkout's lfs-fuse (one left by another checkout, or by a
# run that was killed, would test other binaries); whatever was there comes back at exit.
[ -e "$HELPER" ] && cp -p "$HELPER" "$W/helper.saved"
printf '#!/bin/sh\nexec %s "$@"\n' "$ROOT/target/release/lfs-fuse" > "$HELPER"
chmod +x "$HELPER"
mkdir -p "$W/test" "$W/scratch" "$W/ext4-test" "$W/ext4-scratch"

run() { # NAME CONFIG: prints the per-test lines and a count; returns check's status
  local name=$1 rc=0
  # HOST_OPTIONS, not local.config: every test re-reads it, so a shared file would let two
  # campaigns on one machine run each other's configuration.
  (cd "$SRC" && HOST_OPTIONS=$2 RESULT_BASE="$W/results-$name" ./check "${TESTS[@]}") \
    > "$W/$name.log" 2>&1 || rc=$?
  grep -E "^(generic|shared)/|^Ran|^Not run|^Failures|^Passed" "$W/$name.log" || true
  local ran failed notrun
  ran=$(grep -oP '^Ran: \K.*' "$W/$name.log" | wc -w)
  failed=$(grep -oP '^Failures: \K.*' "$W/$name.log" | wc -w)
  notrun=$(grep -oP '^Not run: \K.*' "$W/$name.log" | wc -w)
  # check lists every test it looked at under "Ran", the ones it did not run included.
  echo "xfstests $name: $((ran - failed - notrun)) passed, $failed failed, $notrun skipped"
  return $rc
}

truncate -s 4G "$W/test.img" "$W/scratch.img"
# Both filesystems on loop devices, as ext4's are below, so the two campaigns differ in the
# filesystem alone: tests that need a block device (dm targets, a device's sector size for
# O_DIRECT alignment) run for both. LFS_XFSTESTS_IMAGE=1 puts the test filesystem in the
# image file itself (the other way of using lfs; our own suites mount image files too).
LOOPS=("$(losetup -f --show "$W/scratch.img")")
TEST_DEV=$W/test.img
if [ "${LFS_XFSTESTS_IMAGE:-0}" != 1 ]; then
  LOOPS+=("$(losetup -f --show "$W/test.img")")
  TEST_DEV=${LOOPS[1]}
fi
"$ROOT/target/release/mkfs-lfs" -q "$TEST_DEV"
cat > "$W/lfs.config" <<CFG
export FSTYP=fuse
export FUSE_SUBTYP=.lfs-fuse
export TEST_DEV=$TEST_DEV
export TEST_DIR=$W/test
export SCRATCH_DEV=${LOOPS[0]}
export SCRATCH_MNT=$W/scratch
export MOUNT_OPTIONS="-o allow_other"
export TEST_FS_MOUNT_OPTS="-o allow_other"
export FUSE_MKFS_PROG=$ROOT/target/release/mkfs-lfs
export FUSE_FSCK_PROG=$ROOT/target/release/fsck-lfs
CFG
status=0
if [ "$LFS" = 1 ]; then
  echo "== lfs-fuse"
  run lfs "$W/lfs.config" || status=$?
fi

if [ "$EXT4" = 1 ]; then
  truncate -s 4G "$W/ext4-test.img" "$W/ext4-scratch.img"
  E=${#LOOPS[@]}
  LOOPS+=("$(losetup -f --show "$W/ext4-test.img")" "$(losetup -f --show "$W/ext4-scratch.img")")
  mkfs.ext4 -q -F "${LOOPS[$E]}"
  cat > "$W/ext4.config" <<CFG
export FSTYP=ext4
export TEST_DEV=${LOOPS[$E]}
export TEST_DIR=$W/ext4-test
export SCRATCH_DEV=${LOOPS[$((E + 1))]}
export SCRATCH_MNT=$W/ext4-scratch
CFG
  echo "== ext4"
  run ext4 "$W/ext4.config" || true
fi
echo "xfstests.sh: logs and results in $W"
exit $status
