#!/usr/bin/env python3
"""Adapt fstests' common/rc so that FSTYP=fuse tests a real filesystem (lfs-fuse).

Unmodified, fstests treats FSTYP=fuse as a pass-through of some directory: _scratch_mkfs
only empties SCRATCH_MNT, _scratch_mkfs_sized refuses ("not supported"), no fsck runs after
a test, and the device size comes from blockdev, which fails on an image file. With
FUSE_MKFS_PROG and FUSE_FSCK_PROG set (scripts/xfstests.sh sets them), these edits make
scratch tests format a real image (sized when asked), check the image after every test, and
take the size of an image file. They also let _fs_type report our mount (fuseblk.lfs-fuse
in /proc/mounts, see lfs-fuse/src/mount.rs) as FSTYP says, and give lfs its own row where
a test keeps a table of limits per filesystem type (generic/020). Everything else is
untouched.
Usage: adapt-common-rc.py PATH/TO/common/rc   (idempotent: the first run keeps the original
as common/rc.orig and every run edits that, so a changed edit reaches an old build)
"""
import os
import sys

MARK = "# lfs-fuse: adapted"


def edit(text: str, old: str, new: str) -> str:
    if text.count(old) < 1:
        sys.exit(f"adapt-common-rc.py: pattern not found:\n{old}")
    return text.replace(old, new, 1)


def main() -> None:
    path = sys.argv[1]
    orig = path + ".orig"
    if not os.path.exists(orig):
        s = open(path).read()
        if MARK in s:
            sys.exit(f"adapt-common-rc.py: {path} was adapted before copies were kept; "
                     "extract fstests again")
        open(orig, "w").write(s)
    s = open(orig).read()
    # _scratch_mkfs: a real mkfs at the image's full size.
    s = edit(s, """	case $FSTYP in
	nfs*|afs|cifs|ceph|overlay|glusterfs|pvfs2|9p|fuse|virtiofs)
		# unable to re-create this fstyp""", """	case $FSTYP in
	fuse)
		""" + MARK + """
		if [ -n "$FUSE_MKFS_PROG" ]; then
			[ -f "$SCRATCH_DEV" ] && truncate -s "${SCRATCH_DEV_SIZE:-$(stat -c %s $SCRATCH_DEV)}" "$SCRATCH_DEV"
			$FUSE_MKFS_PROG -f -q $SCRATCH_DEV
			return $?
		fi
		_scratch_cleanup_files
		return $?
		;;
	nfs*|afs|cifs|ceph|overlay|glusterfs|pvfs2|9p|virtiofs)
		# unable to re-create this fstyp""")
    # _try_scratch_mkfs_sized: a real mkfs of the asked size (the image file is cut to it;
    # the next unsized mkfs restores SCRATCH_DEV_SIZE).
    s = edit(s, """	case $FSTYP in
	xfs)
		local rt_ops""", """	case $FSTYP in
	fuse)
		[ -n "$FUSE_MKFS_PROG" ] || _notrun "Filesystem fuse without FUSE_MKFS_PROG"
		[ -f "$SCRATCH_DEV" ] && truncate -s $fssize $SCRATCH_DEV
		$FUSE_MKFS_PROG -f -q $SCRATCH_DEV $fssize
		;;
	xfs)
		local rt_ops""")
    # fsck after every test, of both filesystems.
    s = edit(s, """    fuse)
	# no way to check consistency for fuse
	;;
    virtiofs)
	# no way to check consistency for virtiofs
	;;
    ceph|ceph-fuse)""", """    fuse)
	[ -n "$FUSE_FSCK_PROG" ] && _check_generic_filesystem_fuse $TEST_DEV
	;;
    virtiofs)
	# no way to check consistency for virtiofs
	;;
    ceph|ceph-fuse)""")
    s = edit(s, """    fuse)
	# no way to check consistency for fuse
	;;""", """    fuse)
	[ -n "$FUSE_FSCK_PROG" ] && _check_generic_filesystem_fuse $device
	;;""")
    s = edit(s, """_check_scratch_fs()
{""", """# Unmount $1 if mounted, fsck it with FUSE_FSCK_PROG, mount it again if it was.
_check_generic_filesystem_fuse()
{
	local device=$1
	local mountpoint=`findmnt -rncv -S $device -o TARGET | head -1`
	if [ -n "$mountpoint" ]; then
		$UMOUNT_PROG $mountpoint || return 1
	fi
	local ok=0
	if ! $FUSE_FSCK_PROG -n -f $device > $tmp.fsck 2>&1; then
		_log_err "_check_generic_filesystem_fuse: filesystem on $device is inconsistent"
		cat $tmp.fsck >> $seqres.full
		ok=1
	fi
	if [ -n "$mountpoint" ]; then
		if [ "$device" = "$SCRATCH_DEV" ]; then _scratch_mount; else _test_mount; fi
	fi
	return $ok
}

_check_scratch_fs()
{""")
    # An image file's size.
    s = edit(s, """_get_device_size()
{
	echo $(($(blockdev --getsz $1) >> 1))""", """_get_device_size()
{
	if [ -f "$1" ]; then echo $(( $(stat -c %s $1) >> 10 )); return; fi
	echo $(($(blockdev --getsz $1) >> 1))""")
    # Our mounts are fuseblk.lfs-fuse (or fuse.lfs-fuse without root): FSTYP=fuse.
    s = edit(s, """        sed -e 's/nfs4/nfs/' -e 's/fuse.glusterfs/glusterfs/' \\
            -e 's/fuse.ceph-fuse/ceph-fuse/'""", """        sed -e 's/nfs4/nfs/' -e 's/fuse.glusterfs/glusterfs/' \\
            -e 's/fuse.ceph-fuse/ceph-fuse/' -e 's/^fuse\\(blk\\)\\?\\.lfs-fuse$/fuse/'""")
    # What lfs-fuse is, where fstests asks per filesystem type (upstream lists each kernel
    # filesystem there; FSTYP=fuse alone says nothing of the filesystem behind it):
    # timestamps are i64 seconds on disk and the kernel gives a FUSE superblock the full
    # time64 range; names are raw bytes, as on ext4.
    s = edit(s, """	btrfs)
		echo "$s64min $s64max"
		;;""", """	btrfs)
		echo "$s64min $s64max"
		;;
	fuse)
		if [ "$FUSE_SUBTYP" = .lfs-fuse ]; then echo "$s64min $s64max"; else echo "-1 -1"; fi
		;;""")
    s = edit(s, """        case "$FSTYP" in
        ext2|ext3|ext4|f2fs|xfs|btrfs)
		# do nothing
	        ;;""", """        case "$FSTYP" in
        ext2|ext3|ext4|f2fs|xfs|btrfs)
		# do nothing
	        ;;
	fuse)
		[ "$FUSE_SUBTYP" = .lfs-fuse ] || \
			_notrun "$FSTYP does not allow unrestricted byte streams for names"
		;;""")
    # Some tests mount with `-t $FSTYP` where the common helpers say `-t $FSTYP$FUSE_SUBTYP`;
    # for FSTYP=fuse that runs mount.fuse, which takes the device for a program to start.
    s = edit(s, """_mount()
{
    $MOUNT_PROG $*
}""", """_mount()
{
    if [ "$FSTYP" = fuse ] && [ -n "$FUSE_SUBTYP" ]; then
        $MOUNT_PROG $(echo " $* " | sed -e "s/ -t fuse / -t fuse$FUSE_SUBTYP /")
        return
    fi
    $MOUNT_PROG $*
}""")
    # _mkfs_dev (a filesystem on another device, e.g. a loop device over a file): a real one.
    s = edit(s, """_try_mkfs_dev()
{
    case $FSTYP in
    nfs*)
	# do nothing for nfs
	;;
    afs*)
	# do nothing for afs
	;;
    9p)
	# do nothing for 9p
	;;
    fuse)
	# do nothing for fuse
	;;""", """_try_mkfs_dev()
{
    case $FSTYP in
    nfs*)
	# do nothing for nfs
	;;
    afs*)
	# do nothing for afs
	;;
    9p)
	# do nothing for 9p
	;;
    fuse)
	if [ -n "$FUSE_MKFS_PROG" ]; then $FUSE_MKFS_PROG -f -q $*; fi
	;;""")
    # Replace, not rewrite: a campaign running now sources the file again for every test.
    open(path + ".new", "w").write(s)
    os.replace(path + ".new", path)
    adapt_020(os.path.join(os.path.dirname(path), "..", "tests", "generic", "020"))


def adapt_020(path: str) -> None:
    """generic/020 keeps its own table of xattr limits, with one row for every FUSE filesystem
    (1000 xattrs, 64 KiB values). lfs keeps an inode's xattrs in one 4 KiB block, as ext4
    does: give it ext4's row for the count and the one-block default for the value size."""
    orig = path + ".orig"
    if not os.path.exists(orig):
        open(orig, "w").write(open(path).read())
    s = open(orig).read()
    s = edit(s, """	case "$FSTYP" in
	xfs|udf|pvfs2|9p|ceph|fuse|nfs|ceph-fuse)
		max_attrs=1000
		;;
	ext2|ext3|ext4)""", """	local fstyp=$FSTYP
	[ "$FSTYP$FUSE_SUBTYP" = fuse.lfs-fuse ] && fstyp=ext4  """ + MARK + """
	case "$fstyp" in
	xfs|udf|pvfs2|9p|ceph|fuse|nfs|ceph-fuse)
		max_attrs=1000
		;;
	ext2|ext3|ext4)""")
    s = edit(s, """	# Set max attr value size in bytes based on fs type
	case "$FSTYP" in""", """	# Set max attr value size in bytes based on fs type
	local fstyp=$FSTYP
	[ "$FSTYP$FUSE_SUBTYP" = fuse.lfs-fuse ] && fstyp=lfs  """ + MARK + """
	case "$fstyp" in""")
    open(path + ".new", "w").write(s)
    os.replace(path + ".new", path)


main()
