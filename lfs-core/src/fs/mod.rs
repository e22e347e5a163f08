//! The filesystem API, by inode number and free of FUSE types.
//!
//! [`Fs`] is shared between threads; all state sits behind one mutex (`Inner`), which keeps
//! every operation atomic with respect to the others and to flushes: a flush group is a
//! snapshot of whole operations, which is what makes directory operations crash-atomic.
//! Files here: `store` (the device, the log and the block cache under the maps), `inode`
//! (cached inodes, loading and flushing), `ops` (namespace operations, attributes, chattr
//! flags, space admission), `data` (read, write, truncate, fallocate), `reserve`
//! (fallocate's reservations), `xattr`, `acl` (POSIX ACLs), `checkpoint` (writing one),
//! `mount` (reading the newest region and its tables), `mkfs`, `scan` (the judge of write
//! units), `recovery` (roll-forward), `clean` (cleaning passes), `trim` (FITRIM), `inspect`
//! (what lfs-inspect shows). fsck's checks and repairs are in `crate::fsck`.

mod acl;
mod checkpoint;
use checkpoint::Durability;
mod clean;
mod data;
mod icache;
mod inode;
mod inspect;
mod mkfs;
mod mount;
mod ops;
mod recovery;
mod reserve;
pub(crate) mod scan;
mod space;
use space::Admission;
pub(crate) use space::Admit;
mod store;
mod trim;
mod xattr;

pub use crate::fsck::{Finding, Owner};
pub use clean::{CleanReport, SegmentCounts, SegmentView, VictimPicker};
pub use inspect::InodeInfo;
pub(crate) use mkfs::not_too_small;
pub use mkfs::{mkfs, plan, MkfsOptions};
pub use mount::MountReport;
pub use recovery::RollForward;
pub use scan::EndOfLog;
pub use scan::{ScannedUnit, SegmentScan};
pub(crate) use store::Store;

use crate::device::Device;
use crate::error::{FsError, Result};
use crate::format::inode::{FileKind, Timespec, FL_APPEND, FL_DIRSYNC, FL_IMMUTABLE, FL_KNOWN};
use crate::format::superblock::Superblock;
use crate::imap::Imap;
use icache::InodeCache;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;
pub use trim::Trimmed;

/// rename flags, as Linux numbers them.
pub const RENAME_NOREPLACE: u32 = 1;
pub const RENAME_EXCHANGE: u32 = 2;
/// Leave a whiteout (a character device 0:0, as overlayfs reads it) where the source was.
pub const RENAME_WHITEOUT: u32 = 4;
/// setxattr flags.
pub const XATTR_CREATE: u32 = 1;
pub const XATTR_REPLACE: u32 = 2;
/// fallocate modes.
pub const FALLOC_FL_KEEP_SIZE: u32 = 0x01;
pub const FALLOC_FL_PUNCH_HOLE: u32 = 0x02;
pub const FALLOC_FL_ZERO_RANGE: u32 = 0x10;
/// Largest xattr value (as Linux's XATTR_SIZE_MAX).
pub const XATTR_VALUE_MAX: usize = 65536;
/// Largest hard-link count.
pub const LINK_MAX: u32 = 65000;
/// Longest symlink target.
pub const SYMLINK_MAX: usize = 4095;

#[derive(Debug, Clone)]
pub struct MountOptions {
    pub read_only: bool,
    /// Do not roll forward past the checkpoint (only with `read_only`: what a crash left
    /// after the checkpoint is then invisible, and untouched).
    pub no_recovery: bool,
    /// Blocks kept in the read cache.
    pub cache_blocks: usize,
    /// Write a checkpoint when this much time has passed since the last one (see `tick`).
    pub checkpoint_interval: Duration,
    /// Make every change durable (a flush group and a device flush, as fsync) at most this
    /// long after it was made (see `tick`): ext4's `commit`, and what bounds the loss at a
    /// crash, since `sync` and `syncfs` never reach a FUSE daemon (docs/RECOVERY.md).
    pub commit_interval: Duration,
    /// ...or when this many blocks were appended since the last one.
    pub checkpoint_blocks: u64,
    /// Dirty file data (blocks) held in memory before it is written back to the log.
    pub writeback_blocks: u64,
    /// Picks segments to clean when a writer would otherwise get ENOSPC (foreground
    /// cleaning); `None`: no cleaning in the engine itself.
    pub cleaner: Option<Arc<dyn VictimPicker>>,
    /// Segments per foreground cleaning pass.
    pub clean_segments_per_pass: usize,
}

impl Default for MountOptions {
    fn default() -> Self {
        MountOptions {
            read_only: false,
            no_recovery: false,
            cache_blocks: 16384,
            checkpoint_interval: Duration::from_secs(30),
            commit_interval: Duration::from_secs(5),
            checkpoint_blocks: 65536,
            writeback_blocks: 2048,
            cleaner: None,
            clean_segments_per_pass: 8,
        }
    }
}

/// Attributes of an inode, as stat reports them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attr {
    pub ino: u64,
    pub generation: u32,
    pub size: u64,
    /// 512-byte units, as st_blocks.
    pub blocks: u64,
    pub atime: Timespec,
    pub mtime: Timespec,
    pub ctime: Timespec,
    pub crtime: Timespec,
    pub kind: FileKind,
    /// Permission bits (mode & 0o7777).
    pub perm: u32,
    pub nlink: u32,
    pub uid: u32,
    pub gid: u32,
    pub rdev: u64,
    pub blksize: u32,
    /// chattr's flags (`FL_*`).
    pub flags: u32,
}

/// Who is asking: owner of new files.
#[derive(Debug, Clone, Copy, Default)]
pub struct Creds {
    pub uid: u32,
    pub gid: u32,
    /// The creator's umask, applied to a new inode's mode unless its directory has a
    /// default ACL (which then takes its place, as POSIX says).
    pub umask: u32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TimeOrNow {
    Now,
    At(Timespec),
}

/// What setattr changes; `None` leaves a field alone.
#[derive(Debug, Clone, Default)]
pub struct SetAttr {
    pub mode: Option<u32>,
    pub uid: Option<u32>,
    pub gid: Option<u32>,
    pub size: Option<u64>,
    pub atime: Option<TimeOrNow>,
    pub mtime: Option<TimeOrNow>,
    pub ctime: Option<Timespec>,
    /// A chown(2) even with neither owner nor group given (chown(f, -1, -1)), which Linux
    /// treats as a change of owner: set-ID bits and the capability go. Implied by `uid` or
    /// `gid`.
    pub chown: bool,
    /// The caller lacks CAP_FSETID; its group: after the truncate, if any, and before the
    /// rest, do what `Fs::kill_privileges` does.
    pub kill_privileges: Option<u32>,
    /// The kernel recording the times of writes its cache took (mtime and ctime through a
    /// handle open for writing): passes chattr's `i` and `a`, which it would otherwise
    /// refuse, since the writes were accepted before the flag or are appends.
    pub cached_times: bool,
}

/// One readdir result; `cookie` resumes after it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DirEntryOut {
    pub ino: u64,
    pub cookie: u64,
    pub kind: FileKind,
    pub name: Vec<u8>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct StatFs {
    pub block_size: u32,
    pub blocks: u64,
    pub blocks_free: u64,
    pub blocks_avail: u64,
    pub files: u64,
    pub files_free: u64,
    pub name_max: u32,
}

/// Counters for benchmarks and the inspector.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct Stats {
    pub checkpoints: u64,
    /// fsync/fdatasync/fsyncdir calls made durable by a flush group alone.
    pub syncs: u64,
    pub flushes: u64,
    pub units_written: u64,
    pub segments_written: u64,
    pub blocks_appended: u64,
    pub cache_hits: u64,
    pub cache_misses: u64,
    pub clean_segments: u64,
    pub live_bytes: u64,
    pub usage_underflows: u64,
    /// Cleaner: passes, segments freed, blocks read (whole segments), blocks appended by
    /// the cleaner (moved blocks and its checkpoints), live blocks moved.
    pub cleaner_passes: u64,
    pub cleaner_segments: u64,
    pub cleaner_blocks_read: u64,
    pub cleaner_blocks_written: u64,
    pub cleaner_blocks_moved: u64,
    /// Victims taken, and the live bytes they held when taken (their mean utilization).
    pub cleaner_victims: u64,
    pub cleaner_victim_live_bytes: u64,
}

/// The engine's state, one part per layer, each a type of its own whose fields only its
/// file can touch (store.rs, icache.rs, checkpoint.rs, space.rs, reserve.rs; the inode map
/// in crate::imap). The four the checker reads are visible to `crate::fsck`; the rest only
/// here in `fs`.
pub(crate) struct Inner {
    /// Below the inodes: the device, the log, the segment usage table, the block cache.
    pub(crate) st: Store,
    pub(crate) imap: Imap,
    pub(crate) inodes: InodeCache,
    /// The checkpoint in force, and when things were last made durable.
    pub(crate) cp: Durability,
    opts: MountOptions,
    stats: Stats,
    /// [`Fs::shutdown`] ran: the final checkpoint is written and the device released; no
    /// more writes. Holds how the final checkpoint went, for every later caller.
    shut_down: Option<std::result::Result<(), String>>,
    /// Room kept for the kernel's writeback cache, and the last refusal (space.rs).
    space: Admission,
    /// Space fallocate granted, kept for the writes it was granted to (`reserve.rs`).
    reservations: reserve::Reservations,
    /// The operation under way changed an inode flagged `S` or a directory flagged `D`:
    /// `after_write` makes it durable before the call returns.
    sync_due: bool,
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

    pub(crate) fn lock(&self) -> MutexGuard<'_, Inner> {
        // A panic while holding the lock would leave state half-changed; we never panic on
        // data, and if it happened anyway the poison is the least of the problems.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// For writes: refuse on a read-only mount or after a failed write.
    fn lock_rw(&self) -> Result<MutexGuard<'_, Inner>> {
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

    pub fn getattr(&self, ino: u64) -> Result<Attr> {
        self.lock().getattr(ino)
    }
    pub fn lookup(&self, parent: u64, name: &[u8]) -> Result<Attr> {
        self.lock().lookup(parent, name)
    }
    pub fn setattr(&self, ino: u64, set: &SetAttr) -> Result<Attr> {
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
    pub fn kill_privileges(&self, ino: u64, caller_gid: Option<u32>) -> Result<bool> {
        let mut g = self.lock_rw()?;
        let changed = g.kill_privileges(ino, caller_gid)?;
        g.after_write()?;
        Ok(changed)
    }
    /// Create a regular file, fifo, socket or device node (the type is in `mode`).
    pub fn mknod(
        &self,
        parent: u64,
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
    pub fn create(&self, parent: u64, name: &[u8], perm: u32, creds: Creds) -> Result<Attr> {
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
    pub fn tmpfile(&self, parent: u64, perm: u32, creds: Creds) -> Result<Attr> {
        let mut g = self.lock_rw()?;
        let a = g.tmpfile(parent, perm, creds)?;
        g.after_write()?;
        Ok(a)
    }
    pub fn mkdir(&self, parent: u64, name: &[u8], perm: u32, creds: Creds) -> Result<Attr> {
        let mut g = self.lock_rw()?;
        let a = g.mkdir(parent, name, perm, creds)?;
        g.after_write()?;
        Ok(a)
    }
    pub fn symlink(&self, parent: u64, name: &[u8], target: &[u8], creds: Creds) -> Result<Attr> {
        let mut g = self.lock_rw()?;
        let a = g.symlink(parent, name, target, creds)?;
        g.after_write()?;
        Ok(a)
    }
    pub fn readlink(&self, ino: u64) -> Result<Vec<u8>> {
        self.lock().readlink(ino)
    }
    pub fn link(&self, ino: u64, parent: u64, name: &[u8]) -> Result<Attr> {
        let mut g = self.lock_rw()?;
        let a = g.link(ino, parent, name)?;
        g.after_write()?;
        Ok(a)
    }
    pub fn unlink(&self, parent: u64, name: &[u8]) -> Result<()> {
        let mut g = self.lock_rw()?;
        g.unlink(parent, name)?;
        g.after_write()
    }
    pub fn rmdir(&self, parent: u64, name: &[u8]) -> Result<()> {
        let mut g = self.lock_rw()?;
        g.rmdir(parent, name)?;
        g.after_write()
    }
    pub fn rename(
        &self,
        parent: u64,
        name: &[u8],
        new_parent: u64,
        new_name: &[u8],
        flags: u32,
    ) -> Result<()> {
        self.rename_by(parent, name, new_parent, new_name, flags, Creds::default())
    }
    /// rename(2) for a caller, whose credentials own the whiteout RENAME_WHITEOUT leaves.
    pub fn rename_by(
        &self,
        parent: u64,
        name: &[u8],
        new_parent: u64,
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
    pub fn open_with(&self, ino: u64, flags: i32) -> Result<Attr> {
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
    pub fn flags(&self, ino: u64) -> Result<u32> {
        Ok(self.lock().inode(ino)?.d.flags)
    }
    /// Set chattr's flags (FS_IOC_SETFLAGS). Flags this filesystem does not keep: EOPNOTSUPP;
    /// `D` on a non-directory is dropped, as ext4 drops it. Who may set `i` and `a`
    /// (CAP_LINUX_IMMUTABLE) and any flag (the owner) the kernel has checked.
    pub fn set_flags(&self, ino: u64, flags: u32) -> Result<Attr> {
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
    pub fn open(&self, ino: u64) -> Result<Attr> {
        let mut g = self.lock();
        g.load(ino)?;
        if let Some(i) = g.inodes.get_mut(ino) {
            i.open += 1;
        }
        g.getattr(ino)
    }
    pub fn release(&self, ino: u64) -> Result<()> {
        let mut g = self.lock();
        g.release(ino)
    }
    /// lseek's SEEK_DATA (`data`) and SEEK_HOLE from `offset` (see `Inner::seek_data_or_hole`).
    pub fn seek_data_or_hole(&self, ino: u64, offset: u64, data: bool) -> Result<u64> {
        self.lock().seek_data_or_hole(ino, offset, data)
    }
    pub fn read(&self, ino: u64, offset: u64, size: u32) -> Result<Vec<u8>> {
        self.lock().read(ino, offset, size)
    }
    pub fn write(&self, ino: u64, offset: u64, data: &[u8]) -> Result<u32> {
        let mut g = self.lock_rw()?;
        let n = g.write(ino, offset, data, false)?;
        g.after_write()?;
        Ok(n)
    }
    /// [`Fs::write`] of data the kernel's writeback cache accepted from a writer earlier:
    /// it may use the cache reserve ([`Fs::set_cache_reserve`]).
    pub fn write_cached(&self, ino: u64, offset: u64, data: &[u8]) -> Result<u32> {
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
    pub fn admit_cached_writer(&self, ino: u64) -> Result<()> {
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
    pub fn fsync(&self, ino: u64, _datasync: bool) -> Result<()> {
        let mut g = self.lock_rw()?;
        g.load(ino)?;
        g.commit()?;
        g.stats.syncs += 1;
        Ok(())
    }
    pub fn fsyncdir(&self, ino: u64) -> Result<()> {
        self.fsync(ino, false)
    }
    pub fn readdir(&self, ino: u64, cookie: u64, max: usize) -> Result<Vec<DirEntryOut>> {
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
    pub fn getxattr(&self, ino: u64, name: &[u8]) -> Result<Vec<u8>> {
        self.lock().getxattr(ino, name)
    }
    pub fn listxattr(&self, ino: u64) -> Result<Vec<Vec<u8>>> {
        self.lock().listxattr(ino)
    }
    pub fn setxattr(&self, ino: u64, name: &[u8], value: &[u8], flags: u32) -> Result<()> {
        self.setxattr_by(ino, name, value, flags, None)
    }
    /// [`Fs::setxattr`] by an unprivileged caller whose group is `caller_gid` (None:
    /// privileged): setting an access ACL then clears the set-group-ID bit of a file
    /// outside that group, as chmod would.
    pub fn setxattr_by(
        &self,
        ino: u64,
        name: &[u8],
        value: &[u8],
        flags: u32,
        caller_gid: Option<u32>,
    ) -> Result<()> {
        let mut g = self.lock_rw()?;
        g.setxattr(ino, name, value, flags, caller_gid)?;
        g.after_write()
    }
    pub fn removexattr(&self, ino: u64, name: &[u8]) -> Result<()> {
        let mut g = self.lock_rw()?;
        g.removexattr(ino, name)?;
        g.after_write()
    }
    pub fn fallocate(&self, ino: u64, offset: u64, len: u64, mode: u32) -> Result<()> {
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
    /// fsck's checks on the current state (see `check.rs`): every finding, crash residue
    /// included. Writes a checkpoint first on a read-write mount.
    pub fn check(&self) -> Result<Vec<Finding>> {
        self.lock().check()
    }
    /// The damage [`Fs::check`] finds, as sentences (empty when consistent): for tests.
    pub fn verify(&self) -> Result<Vec<String>> {
        Ok(self
            .check()?
            .iter()
            .filter(|f| f.is_damage())
            .map(|f| f.to_string())
            .collect())
    }
    /// Repair what `findings` name, where a repair exists, then checkpoint. Returns the
    /// findings acted on.
    pub fn repair(&self, findings: &[Finding]) -> Result<Vec<Finding>> {
        let mut g = self.lock_rw()?;
        let mut done = Vec::new();
        for f in findings {
            if g.repair(f)? {
                done.push(f.clone());
            }
        }
        g.checkpoint()?;
        Ok(done)
    }
    /// The whole units of segment `seg`, as a walk from its start finds them.
    pub fn scan_segment(&self, seg: u64) -> SegmentScan {
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
    pub fn clean(&self, victims: &[u64]) -> Result<CleanReport> {
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

impl Inner {
    pub(crate) fn stats(&self) -> Stats {
        let mut s = self.stats.clone();
        if let Some(l) = self.st.log() {
            s.units_written = l.units_written;
            s.segments_written = l.segments_written;
        }
        s.blocks_appended = self.st.appended();
        (s.cache_hits, s.cache_misses) = self.st.cache_counts();
        s.clean_segments = self.st.usage().clean_count();
        s.live_bytes = self.st.usage().total_live_bytes();
        s.usage_underflows = self.st.usage().underflows;
        s
    }

    fn has_changes(&self) -> bool {
        self.inodes.has_dirty() || self.cp.since_checkpoint(self.st.appended()) > 0
    }

    /// Anything not yet durable: dirty state in memory, or log written since the last
    /// device flush.
    fn has_uncommitted(&self) -> bool {
        self.inodes.has_dirty()
            || self.inodes.dirty_blocks() > 0
            || self.cp.since_commit(self.st.appended()) > 0
    }

    /// Make everything durable: one flush group for all that is dirty, one device flush
    /// (found again by roll-forward; no checkpoint).
    fn commit(&mut self) -> Result<()> {
        self.flush_all()?;
        self.st.sync()?;
        self.cp.committed(self.st.appended());
        Ok(())
    }

    /// After every modifying operation: write back dirty data past the threshold, and
    /// checkpoint when enough was written since the last one.
    fn after_write(&mut self) -> Result<()> {
        if std::mem::take(&mut self.sync_due) {
            self.commit()?;
            self.stats.syncs += 1;
        }
        if self.inodes.dirty_blocks() > self.opts.writeback_blocks {
            self.writeback()?;
        }
        if self.cp.since_checkpoint(self.st.appended()) > self.opts.checkpoint_blocks {
            self.checkpoint()?;
        }
        Ok(())
    }
}
