//! The vocabulary of the filesystem API: the flags callers pass, the options of a mount,
//! what an inode's attributes and a directory entry look like, the counters, and what a
//! cleaning policy sees of a segment. Plain data:
//! every other file of `fs` may use it, and it uses nothing of theirs.

use crate::format::inode::{FileKind, Timespec};
use crate::format::{Ino, SegNo};
use serde::Serialize;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

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
    /// Inodes kept in memory between operations (those with unwritten changes or open
    /// handles stay whatever the number; the least recently used of the others go).
    pub inode_cache: usize,
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
            inode_cache: 16384,
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
    pub ino: Ino,
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
    pub ino: Ino,
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
    /// Inodes in memory now (at most the mount's `inode_cache`, plus any with unwritten
    /// changes or open handles).
    pub cached_inodes: u64,
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

/// A Full segment as a cleaning policy sees it.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct SegmentView {
    pub segment: SegNo,
    pub live_bytes: u64,
    pub seg_bytes: u64,
    /// When the segment was last written (the cleaner's output counts as new).
    pub write_time_ns: u64,
}

impl SegmentView {
    /// Utilization, 0.0..=1.0.
    pub fn utilization(&self) -> f64 {
        if self.seg_bytes == 0 {
            return 1.0;
        }
        (self.live_bytes as f64 / self.seg_bytes as f64).min(1.0)
    }
    /// Bytes cleaning the segment would give back.
    pub fn dead_bytes(&self) -> u64 {
        self.seg_bytes.saturating_sub(self.live_bytes)
    }
}

/// Chooses victims; implemented by lfs-cleaner's policies. The engine calls it itself when
/// a writer would otherwise get ENOSPC (foreground cleaning).
pub trait VictimPicker: Send + Sync + fmt::Debug {
    /// Up to `max` segments to clean from `segs` (all Full segments), in the order to clean.
    fn pick(&self, segs: &[SegmentView], now_ns: u64, max: usize) -> Vec<SegNo>;
    /// Victims for a writer out of space when [`VictimPicker::pick`]'s choice freed nothing
    /// (cost-benefit may prefer old segments that are nearly full): the segments that give
    /// the most back, emptiest first (greedy), leaving out those with nothing to give.
    fn pick_emptiest(&self, segs: &[SegmentView], max: usize) -> Vec<SegNo> {
        let mut v: Vec<&SegmentView> = segs.iter().filter(|s| s.dead_bytes() > 0).collect();
        v.sort_by_key(|s| (s.live_bytes, s.segment));
        v.iter().take(max).map(|s| s.segment).collect()
    }
}
