//! The filesystem API, by inode number and free of FUSE types.
//!
//! [`Fs`] is shared between threads; all state sits behind one mutex (`Inner`), which keeps
//! every operation atomic with respect to the others and to flushes: a flush group is a
//! snapshot of whole operations, which is what makes directory operations crash-atomic.
//! Files, bottom up (each uses only files above it; scripts/module-graph.py checks):
//! - vocabulary: `types` (flags, options, attributes, counters, what a cleaning policy sees);
//! - state, each a type with private fields: `admission` (space admission's classes and
//!   memory), `durability` (the checkpoint in force, the clocks of durability), `icache`
//!   (cached inodes and dirty accounting), `reserve` (fallocate's reservations), `store` (the
//!   device, the log, the usage table, the block cache); `inner` gathers them into `Inner`;
//! - operations on `Inner`: `scan` (the judge of write units), `inode` (loading, freeing,
//!   flush groups), `ops` (namespace, attributes, chattr flags), `acl`, `xattr`, `data`
//!   (read, write, truncate, fallocate), `space` (statfs, admission, making room),
//!   `checkpoint`, `clean`, `recovery` (roll-forward), `trim`, `inspect`, `mkfs`, `mount`;
//! - this file: [`Fs`], the lock and the API.
//!
//! fsck's checks and repairs are in `crate::fsck`, which adds [`Fs::check`], [`Fs::verify`]
//! and [`Fs::repair`] (this layer never calls it).

// The files; their order bottom up is in the header above.
mod acl;
mod admission;
mod checkpoint;
mod clean;
mod data;
mod durability;
mod icache;
mod inner;
mod inode;
mod inspect;
mod mkfs;
mod mount;
mod ops;
mod recovery;
mod reserve;
pub(crate) mod scan;
mod space;
mod store;
mod trim;
mod types;
mod xattr;

pub use clean::{CleanReport, SegmentCounts};
pub use inspect::InodeInfo;
pub(crate) use mkfs::not_too_small;
pub use mkfs::{mkfs, plan, MkfsOptions};
pub use mount::MountReport;
pub use recovery::RollForward;
pub use scan::EndOfLog;
pub use scan::{ScannedUnit, SegmentScan};
pub use types::*;

use crate::format::table::ImapEntry;
use crate::format::{BlockAddr, Ino, SegNo};
use crate::usage::SegInfo;
pub(crate) use admission::Admit;
pub(crate) use inner::Inner;

use crate::device::Device;
use crate::error::{FsError, Result};
use crate::format::inode::{FileKind, FL_APPEND, FL_DIRSYNC, FL_IMMUTABLE, FL_KNOWN};
use crate::format::superblock::Superblock;
use std::sync::{Arc, Mutex, MutexGuard};
pub use trim::Trimmed;

/// The engine's lock, held for one operation. When the operation is over (the guard is
/// dropped, nothing in `Inner` is borrowed any more) the inode cache is trimmed to its
/// budget: the one place where inodes may leave memory.
pub(crate) struct InnerGuard<'a>(MutexGuard<'a, Inner>);

impl std::ops::Deref for InnerGuard<'_> {
    type Target = Inner;
    fn deref(&self) -> &Inner {
        &self.0
    }
}

impl std::ops::DerefMut for InnerGuard<'_> {
    fn deref_mut(&mut self) -> &mut Inner {
        &mut self.0
    }
}

impl Drop for InnerGuard<'_> {
    fn drop(&mut self) {
        self.0.inodes.trim();
    }
}

pub struct Fs {
    inner: Mutex<Inner>,
    sb: Arc<Superblock>,
    read_only: bool,
    report: MountReport,
}

impl Fs {
    /// Mount the filesystem on `dev`.
    pub fn mount(dev: Arc<dyn Device>, opts: MountOptions) -> Result<Fs> {
        let read_only = opts.read_only;
        let (inner, report) = Inner::mount(dev, opts)?;
        let sb = inner.st.sb().clone();
        Ok(Fs {
            inner: Mutex::new(inner),
            sb,
            read_only,
            report,
        })
    }

    pub(crate) fn lock(&self) -> InnerGuard<'_> {
        // A panic while holding the lock would leave state half-changed; we never panic on
        // data, and if it happened anyway the poison is the least of the problems.
        InnerGuard(self.inner.lock().unwrap_or_else(|e| e.into_inner()))
    }

    /// For writes: refuse on a read-only mount or after a failed write.
    pub(crate) fn lock_rw(&self) -> Result<InnerGuard<'_>> {
        if self.read_only {
            return Err(FsError::ReadOnly);
        }
        let mut g = self.lock();
        if g.shut_down.is_some() {
            return Err(FsError::ShutDown);
        }
        if g.st.poisoned() {
            return Err(FsError::Poisoned);
        }
        // Left set only by an operation that failed after setting it: not this one's.
        g.sync_due = false;
        Ok(g)
    }

    pub fn superblock(&self) -> &Superblock {
        &self.sb
    }
    pub fn mount_report(&self) -> &MountReport {
        &self.report
    }
    pub fn is_read_only(&self) -> bool {
        self.read_only
    }

    pub fn getattr(&self, ino: Ino) -> Result<Attr> {
        self.lock().getattr(ino)
    }
    pub fn lookup(&self, parent: Ino, name: &[u8]) -> Result<Attr> {
        self.lock().lookup(parent, name)
    }
    pub fn setattr(&self, ino: Ino, set: &SetAttr) -> Result<Attr> {
        let mut g = self.lock_rw()?;
        let a = g.setattr(ino, set)?;
        g.after_write()?;
        Ok(a)
    }
    /// What Linux does to `ino` before a write or truncate: drop the file capability and,
    /// when the caller lacks CAP_FSETID (`caller_gid` is then its group), clear set-user-ID
    /// and set-group-ID. Set-group-ID stays only on a file its group may not execute and
    /// whose group is `caller_gid` (Linux also counts the caller's supplementary groups,
    /// which FUSE does not pass). lfs-fuse calls it when the kernel leaves killing
    /// privileges to the filesystem. Returns whether the mode changed.
    pub fn kill_privileges(&self, ino: Ino, caller_gid: Option<u32>) -> Result<bool> {
        let mut g = self.lock_rw()?;
        let changed = g.kill_privileges(ino, caller_gid)?;
        g.after_write()?;
        Ok(changed)
    }
    /// Create a regular file, fifo, socket or device node (the type is in `mode`).
    pub fn mknod(
        &self,
        parent: Ino,
        name: &[u8],
        mode: u32,
        rdev: u64,
        creds: Creds,
    ) -> Result<Attr> {
        let mut g = self.lock_rw()?;
        let a = g.mknod(parent, name, mode, rdev, creds)?;
        g.after_write()?;
        Ok(a)
    }
    pub fn create(&self, parent: Ino, name: &[u8], perm: u32, creds: Creds) -> Result<Attr> {
        self.mknod(
            parent,
            name,
            crate::format::inode::S_IFREG | (perm & 0o7777),
            0,
            creds,
        )
    }
    /// open(2) with O_TMPFILE in `parent`: an open regular file with no name (counted as
    /// one open, released as any); linkat(2) may name it ([`Fs::link`]).
    pub fn tmpfile(&self, parent: Ino, perm: u32, creds: Creds) -> Result<Attr> {
        let mut g = self.lock_rw()?;
        let a = g.tmpfile(parent, perm, creds)?;
        g.after_write()?;
        Ok(a)
    }
    pub fn mkdir(&self, parent: Ino, name: &[u8], perm: u32, creds: Creds) -> Result<Attr> {
        let mut g = self.lock_rw()?;
        let a = g.mkdir(parent, name, perm, creds)?;
        g.after_write()?;
        Ok(a)
    }
    pub fn symlink(&self, parent: Ino, name: &[u8], target: &[u8], creds: Creds) -> Result<Attr> {
        let mut g = self.lock_rw()?;
        let a = g.symlink(parent, name, target, creds)?;
        g.after_write()?;
        Ok(a)
    }
    pub fn readlink(&self, ino: Ino) -> Result<Vec<u8>> {
        self.lock().readlink(ino)
    }
    pub fn link(&self, ino: Ino, parent: Ino, name: &[u8]) -> Result<Attr> {
        let mut g = self.lock_rw()?;
        let a = g.link(ino, parent, name)?;
        g.after_write()?;
        Ok(a)
    }
    pub fn unlink(&self, parent: Ino, name: &[u8]) -> Result<()> {
        let mut g = self.lock_rw()?;
        g.unlink(parent, name)?;
        g.after_write()
    }
    pub fn rmdir(&self, parent: Ino, name: &[u8]) -> Result<()> {
        let mut g = self.lock_rw()?;
        g.rmdir(parent, name)?;
        g.after_write()
    }
    pub fn rename(
        &self,
        parent: Ino,
        name: &[u8],
        new_parent: Ino,
        new_name: &[u8],
        flags: u32,
    ) -> Result<()> {
        self.rename_by(parent, name, new_parent, new_name, flags, Creds::default())
    }
    /// rename(2) for a caller, whose credentials own the whiteout RENAME_WHITEOUT leaves.
    pub fn rename_by(
        &self,
        parent: Ino,
        name: &[u8],
        new_parent: Ino,
        new_name: &[u8],
        flags: u32,
        creds: Creds,
    ) -> Result<()> {
        let mut g = self.lock_rw()?;
        g.rename(parent, name, new_parent, new_name, flags, creds)?;
        g.after_write()
    }
    /// [`Fs::open`] with open(2)'s flags: EPERM where chattr's `i` or `a` forbid the access
    /// (writing or truncating an immutable file; writing an append-only one without
    /// O_APPEND, or truncating it).
    pub fn open_with(&self, ino: Ino, flags: i32) -> Result<Attr> {
        let mut g = self.lock();
        g.load(ino)?;
        let f = g.inode(ino)?.d.flags;
        let write = flags & libc::O_ACCMODE != libc::O_RDONLY;
        let trunc = flags & libc::O_TRUNC != 0;
        let denied = (f & FL_IMMUTABLE != 0 && (write || trunc))
            || (f & FL_APPEND != 0 && ((write && flags & libc::O_APPEND == 0) || trunc));
        if denied {
            return Err(FsError::NotPermitted);
        }
        g.inode(ino)?.open += 1;
        g.getattr(ino)
    }
    /// chattr's flags of `ino` (`FL_*`, FS_IOC_GETFLAGS' numbering).
    pub fn flags(&self, ino: Ino) -> Result<u32> {
        Ok(self.lock().inode(ino)?.d.flags)
    }
    /// Set chattr's flags (FS_IOC_SETFLAGS). Flags this filesystem does not keep: EOPNOTSUPP;
    /// `D` on a non-directory is dropped, as ext4 drops it. Who may set `i` and `a`
    /// (CAP_LINUX_IMMUTABLE) and any flag (the owner) the kernel has checked.
    pub fn set_flags(&self, ino: Ino, flags: u32) -> Result<Attr> {
        if flags & !FL_KNOWN != 0 {
            return Err(FsError::NotSupported);
        }
        let mut g = self.lock_rw()?;
        g.check_space(2, Admit::Meta)?;
        let i = g.inode(ino)?;
        let flags = if i.kind() == FileKind::Directory {
            flags
        } else {
            flags & !FL_DIRSYNC
        };
        if i.d.flags != flags {
            i.d.flags = flags;
            i.d.ctime = inode::now();
            g.touch(ino);
        }
        let a = g.getattr(ino)?;
        g.after_write()?;
        Ok(a)
    }
    /// Note an open file handle (an unlinked file lives until its last release).
    pub fn open(&self, ino: Ino) -> Result<Attr> {
        let mut g = self.lock();
        g.load(ino)?;
        if let Some(i) = g.inodes.get_mut(ino) {
            i.open += 1;
        }
        g.getattr(ino)
    }
    pub fn release(&self, ino: Ino) -> Result<()> {
        let mut g = self.lock();
        g.release(ino)
    }
    /// lseek's SEEK_DATA (`data`) and SEEK_HOLE from `offset` (see `Inner::seek_data_or_hole`).
    pub fn seek_data_or_hole(&self, ino: Ino, offset: u64, data: bool) -> Result<u64> {
        self.lock().seek_data_or_hole(ino, offset, data)
    }
    pub fn read(&self, ino: Ino, offset: u64, size: u32) -> Result<Vec<u8>> {
        self.lock().read(ino, offset, size)
    }
    pub fn write(&self, ino: Ino, offset: u64, data: &[u8]) -> Result<u32> {
        let mut g = self.lock_rw()?;
        let n = g.write(ino, offset, data, false)?;
        g.after_write()?;
        Ok(n)
    }
    /// [`Fs::write`] of data the kernel's writeback cache accepted from a writer earlier:
    /// it may use the cache reserve ([`Fs::set_cache_reserve`]).
    pub fn write_cached(&self, ino: Ino, offset: u64, data: &[u8]) -> Result<u32> {
        let mut g = self.lock_rw()?;
        let n = g.write(ino, offset, data, true)?;
        g.after_write()?;
        Ok(n)
    }
    /// Keep `bytes` free for data held in the kernel's writeback cache: ordinary writes
    /// and [`Fs::admit_cached_writer`] leave that much, writes from the cache may use it.
    /// The caller bounds what the kernel may cache to this (docs/RECOVERY.md, "A full
    /// disk").
    pub fn set_cache_reserve(&self, bytes: u64) {
        self.lock()
            .space
            .set_cache_reserve(bytes.div_ceil(crate::format::BLOCK_BYTES));
    }
    /// May a writer of `ino` add more to the kernel's writeback cache? Yes while the cache
    /// reserve is intact above the cleaner's (cleaning to make it so if need be), or while
    /// the file holds space fallocate granted (its writes draw on that); NoSpace otherwise.
    pub fn admit_cached_writer(&self, ino: Ino) -> Result<()> {
        let mut g = self.lock_rw()?;
        // Its writes draw on the reservation while it covers what the kernel may hold.
        if g.reservations.unwritten(ino) * 2 >= g.space.cache_reserve() {
            return Ok(());
        }
        g.check_space(0, Admit::Data)
    }
    /// Blocks that could still be written, cleaning what can be cleaned, keeping every
    /// reserve — roughly (dead space counts less a 32nd for what moving live blocks costs,
    /// as `statfs` counts it) and cheaply (no walk over the segments): for deciding how
    /// careful a caller must be, not for promising anything.
    pub fn headroom_blocks(&self) -> u64 {
        self.lock().headroom_blocks()
    }
    /// Make `ino` durable, and with it everything else dirty: one flush group (a partial
    /// segment) and one device flush, found again by roll-forward; no checkpoint. See
    /// docs/RECOVERY.md for what this covers.
    pub fn fsync(&self, ino: Ino, _datasync: bool) -> Result<()> {
        let mut g = self.lock_rw()?;
        g.load(ino)?;
        g.commit()?;
        g.stats.syncs += 1;
        Ok(())
    }
    pub fn fsyncdir(&self, ino: Ino) -> Result<()> {
        self.fsync(ino, false)
    }
    pub fn readdir(&self, ino: Ino, cookie: u64, max: usize) -> Result<Vec<DirEntryOut>> {
        self.lock().readdir(ino, cookie, max)
    }
    /// FITRIM: discard the free segments in `[start, start + len)` bytes, in runs of at
    /// least `minlen` bytes (see fs/trim.rs).
    pub fn trim(&self, start: u64, len: u64, minlen: u64) -> Result<Trimmed> {
        self.lock_rw()?.trim(start, len, minlen)
    }
    pub fn statfs(&self) -> Result<StatFs> {
        Ok(self.lock().statfs())
    }
    pub fn getxattr(&self, ino: Ino, name: &[u8]) -> Result<Vec<u8>> {
        self.lock().getxattr(ino, name)
    }
    pub fn listxattr(&self, ino: Ino) -> Result<Vec<Vec<u8>>> {
        self.lock().listxattr(ino)
    }
    pub fn setxattr(&self, ino: Ino, name: &[u8], value: &[u8], flags: u32) -> Result<()> {
        self.setxattr_by(ino, name, value, flags, None)
    }
    /// [`Fs::setxattr`] by an unprivileged caller whose group is `caller_gid` (None:
    /// privileged): setting an access ACL then clears the set-group-ID bit of a file
    /// outside that group, as chmod would.
    pub fn setxattr_by(
        &self,
        ino: Ino,
        name: &[u8],
        value: &[u8],
        flags: u32,
        caller_gid: Option<u32>,
    ) -> Result<()> {
        let mut g = self.lock_rw()?;
        g.setxattr(ino, name, value, flags, caller_gid)?;
        g.after_write()
    }
    pub fn removexattr(&self, ino: Ino, name: &[u8]) -> Result<()> {
        let mut g = self.lock_rw()?;
        g.removexattr(ino, name)?;
        g.after_write()
    }
    pub fn fallocate(&self, ino: Ino, offset: u64, len: u64, mode: u32) -> Result<()> {
        let mut g = self.lock_rw()?;
        g.fallocate(ino, offset, len, mode)?;
        g.after_write()
    }
    /// Write a checkpoint now.
    pub fn checkpoint(&self) -> Result<()> {
        self.lock_rw()?.checkpoint()
    }
    /// Periodic work: a checkpoint when its interval has passed, else a commit (everything
    /// durable, as fsync) when the commit interval has. Call every second or so.
    pub fn tick(&self) -> Result<()> {
        if self.read_only {
            return Ok(());
        }
        let mut g = self.lock_rw()?;
        if g.cp.checkpoint_age() >= g.opts.checkpoint_interval && g.has_changes() {
            g.checkpoint()?;
        } else if g.cp.commit_age() >= g.opts.commit_interval && g.has_uncommitted() {
            g.commit()?;
        }
        Ok(())
    }
    /// The whole units of segment `seg`, as a walk from its start finds them.
    pub fn scan_segment(&self, seg: SegNo) -> SegmentScan {
        self.lock().scan_segment(scan::Source::Device, seg)
    }
    pub fn stats(&self) -> Stats {
        self.lock().stats()
    }
    /// Full segments, as cleaning policies see them.
    pub fn segment_views(&self) -> Vec<SegmentView> {
        self.lock().segment_views()
    }
    /// Segments by state.
    pub fn segment_counts(&self) -> SegmentCounts {
        self.lock().segment_counts()
    }
    /// One cleaning pass over `victims` (see `clean.rs`); Full segments only, others are
    /// skipped. Freed victims are Clean when it returns.
    pub fn clean(&self, victims: &[SegNo]) -> Result<CleanReport> {
        let mut g = self.lock_rw()?;
        g.clean(victims)
    }
    /// Final checkpoint and stop the writer. The filesystem must not be used afterwards.
    pub fn unmount(self) -> Result<()> {
        self.shutdown()
    }

    /// The end of a mount, through a shared reference: the final (clean) checkpoint, the
    /// writer stopped, the device released (its lock dropped). Afterwards every change is
    /// refused with [`FsError::ShutDown`] and nothing more is written, so the image belongs
    /// to whoever opens it next — what FUSE_DESTROY needs while the session still holds the
    /// filesystem, so that `umount` returns with the image durable and free. Idempotent: a
    /// second call does nothing. On an error the filesystem is shut down all the same (the
    /// roll-forward at the next mount recovers what the last flush made durable); a later
    /// call reports that error again.
    pub fn shutdown(&self) -> Result<()> {
        let mut g = self.lock();
        if let Some(r) = &g.shut_down {
            return r.clone().map_err(FsError::ShutDownFailed);
        }
        let poisoned = g.st.poisoned();
        let r = if self.read_only {
            Ok(())
        } else if poisoned {
            Err(FsError::Poisoned)
        } else {
            g.checkpoint_with(true)
        };
        g.st.close_log();
        g.st.release_device();
        g.shut_down = Some(r.as_ref().map(|_| ()).map_err(|e| e.to_string()));
        r
    }

    /// Whether [`Fs::shutdown`] ran.
    pub fn is_shut_down(&self) -> bool {
        self.lock().shut_down.is_some()
    }
}

/// What lfs-inspect shows (inspect.rs).
impl Fs {
    /// Inode `ino` with its map entry and block list (as of the last flush: blocks still
    /// dirty in memory have no address yet).
    pub fn inode_info(&self, ino: Ino) -> Result<InodeInfo> {
        self.lock().inode_info(ino)
    }
    /// The inode map's entry for `ino`, allocated or not.
    pub fn imap_entry(&self, ino: Ino) -> Option<ImapEntry> {
        self.lock().imap.get(ino).copied()
    }
    /// Addresses of the inode-map and segment-usage blocks of the checkpoint in use.
    pub fn table_addrs(&self) -> (Vec<BlockAddr>, Vec<BlockAddr>) {
        let g = self.lock();
        (g.cp.imap_addrs().to_vec(), g.cp.usage_addrs().to_vec())
    }
    /// The segment usage table as the filesystem keeps it now.
    pub fn usage_table(&self) -> Vec<(SegNo, SegInfo)> {
        self.lock()
            .st
            .usage()
            .iter()
            .map(|(s, i)| (s, *i))
            .collect()
    }
}
