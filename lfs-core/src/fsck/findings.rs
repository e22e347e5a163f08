//! What fsck finds: each finding, whether it is damage or crash residue, whether fsck may
//! repair it (and without asking: `-p`), and how it reads.

use crate::format::inode::FileKind;
use crate::format::summary::{BlockKind, SummaryEntry};
use crate::format::SegNo;
use crate::format::{BlockAddr, Ino};
use serde::Serialize;
use std::fmt;

/// What a block belongs to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Owner {
    ImapBlock { index: u64 },
    Inode { ino: Ino },
    Xattr { ino: Ino },
    Data { ino: Ino, index: u64 },
    Indirect { ino: Ino, height: u8, first: u64 },
}

impl Owner {
    pub(crate) fn of(e: &SummaryEntry) -> Owner {
        match e.kind {
            BlockKind::Indirect => Owner::Indirect {
                ino: e.ino,
                height: e.height,
                first: e.index,
            },
            BlockKind::Xattr => Owner::Xattr { ino: e.ino },
            _ => Owner::Data {
                ino: e.ino,
                index: e.index,
            },
        }
    }
}

impl fmt::Display for Owner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Owner::ImapBlock { index } => write!(f, "inode-map block {index}"),
            Owner::Inode { ino } => write!(f, "inode {ino}"),
            Owner::Xattr { ino } => write!(f, "xattr block of inode {ino}"),
            Owner::Data { ino, index } => write!(f, "inode {ino} data block {index}"),
            Owner::Indirect { ino, height, first } => write!(
                f,
                "inode {ino} indirect block (height {height}, from block {first})"
            ),
        }
    }
}

/// One thing fsck found.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "finding", rename_all = "snake_case")]
pub enum Finding {
    // Crash residue: what a power cut leaves, and mount puts right.
    /// Write units after the checkpoint that mount will roll forward.
    RollForward {
        units: u64,
        inodes: u64,
    },
    /// An inode with no links left that was open at the crash; mount frees it.
    Orphan {
        ino: Ino,
    },
    /// One checkpoint region does not verify (a checkpoint write cut short, or damage); the
    /// other one is used and the next checkpoints rewrite it.
    CheckpointRegionInvalid {
        region: char,
        error: String,
    },

    // Damage.
    /// The newest checkpoint's inode-map or usage blocks (or what they lead to) do not
    /// decode; mount used the other region's checkpoint and rolled forward from it.
    CheckpointTablesDamaged {
        region: char,
        error: String,
    },
    /// A superblock copy ("primary" or "backup") does not decode.
    SuperblockInvalid {
        copy: &'static str,
        error: String,
    },
    /// The filesystem cannot be mounted at all (nothing further was checked).
    Unmountable {
        error: String,
    },
    /// An allocated inode cannot be read (its map entry, block or slot is wrong).
    InodeUnreadable {
        ino: Ino,
        error: String,
    },
    /// A directory's blocks cannot be read.
    DirectoryUnreadable {
        dir: Ino,
        error: String,
    },
    BlockOutsideLog {
        owner: Owner,
        addr: BlockAddr,
    },
    BlockClaimedTwice {
        addr: BlockAddr,
        first: Owner,
        second: Owner,
    },
    UsageMismatch {
        segment: SegNo,
        stored: u64,
        recomputed: u64,
    },
    /// The engine saw a segment's live count go below zero (an accounting error).
    UsageUnderflow {
        count: u64,
    },
    /// A live block that no whole unit of its segment describes.
    BlockUnsummarized {
        owner: Owner,
        addr: BlockAddr,
    },
    /// A live block whose summary entry names another owner.
    SummaryMismatch {
        owner: Owner,
        addr: BlockAddr,
        summary: String,
    },
    /// A directory entry naming an inode that is not allocated.
    DanglingEntry {
        dir: Ino,
        name: String,
        ino: Ino,
    },
    /// A directory entry whose type is not the inode's.
    EntryKindMismatch {
        dir: Ino,
        name: String,
        ino: Ino,
        entry: FileKind,
        inode: FileKind,
    },
    /// A second name for a directory.
    DirectoryLinkedTwice {
        dir: Ino,
        name: String,
        ino: Ino,
    },
    /// A directory whose parent field is not the directory holding its name.
    WrongParent {
        dir: Ino,
        recorded: Ino,
        actual: Ino,
    },
    /// An allocated inode no directory reaches.
    Unreachable {
        ino: Ino,
        kind: FileKind,
        nlink: u32,
    },
    LinkCount {
        ino: Ino,
        stored: u32,
        counted: u32,
    },
    /// Inode flags no build knows (`FL_KNOWN`); the repair clears them.
    UnknownFlags {
        ino: Ino,
        flags: u32,
    },
}

impl Finding {
    /// Damage, as opposed to what a crash leaves and mount puts right.
    pub fn is_damage(&self) -> bool {
        !matches!(
            self,
            Finding::RollForward { .. }
                | Finding::Orphan { .. }
                | Finding::CheckpointRegionInvalid { .. }
        )
    }

    /// Whether fsck-lfs can repair it (with -y; -p repairs only what [`Finding::preen_safe`]
    /// allows).
    pub fn fixable(&self) -> bool {
        !matches!(
            self,
            Finding::Unmountable { .. }
                | Finding::InodeUnreadable { .. }
                | Finding::DirectoryUnreadable { .. }
                | Finding::BlockOutsideLog { .. }
                | Finding::BlockClaimedTwice { .. }
                | Finding::BlockUnsummarized { .. }
                | Finding::SummaryMismatch { .. }
        )
    }

    /// Repairs that lose nothing a user made and need no judgement: what fsck -p does alone.
    pub fn preen_safe(&self) -> bool {
        matches!(
            self,
            Finding::RollForward { .. }
                | Finding::Orphan { .. }
                | Finding::CheckpointRegionInvalid { .. }
                | Finding::SuperblockInvalid { .. }
                | Finding::UsageMismatch { .. }
                | Finding::UsageUnderflow { .. }
                | Finding::LinkCount { .. }
                | Finding::WrongParent { .. }
                | Finding::UnknownFlags { .. }
        )
    }
}

fn show(name: &str) -> String {
    format!("{name:?}")
}

impl fmt::Display for Finding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        use Finding::*;
        match self {
            RollForward { units, inodes } => write!(
                f,
                "log after the checkpoint: {units} write units to roll forward ({inodes} inodes)"
            ),
            Orphan { ino } => write!(f, "inode {ino}: orphan (unlinked while open), to be freed"),
            CheckpointRegionInvalid { region, error } => {
                write!(f, "checkpoint region {region} invalid: {error}")
            }
            CheckpointTablesDamaged { region, error } => write!(
                f,
                "newest checkpoint (region {region}) unusable, the other region's was used: {error}"
            ),
            SuperblockInvalid { copy, error } => write!(f, "{copy} superblock invalid: {error}"),
            Unmountable { error } => write!(f, "cannot mount: {error}"),
            InodeUnreadable { ino, error } => write!(f, "inode {ino} unreadable: {error}"),
            DirectoryUnreadable { dir, error } => {
                write!(f, "directory {dir} unreadable: {error}")
            }
            BlockOutsideLog { owner, addr } => {
                write!(f, "{owner}: block {addr} is outside the log")
            }
            BlockClaimedTwice {
                addr,
                first,
                second,
            } => write!(f, "block {addr} claimed by {first} and by {second}"),
            UsageMismatch {
                segment,
                stored,
                recomputed,
            } => write!(
                f,
                "segment {segment}: usage table says {stored} live bytes, recomputed {recomputed}"
            ),
            UsageUnderflow { count } => {
                write!(f, "segment usage went negative {count} times")
            }
            BlockUnsummarized { owner, addr } => write!(
                f,
                "{owner}: block {addr} is not described by any whole unit of its segment"
            ),
            SummaryMismatch {
                owner,
                addr,
                summary,
            } => write!(f, "{owner}: block {addr} is described as {summary}"),
            DanglingEntry { dir, name, ino } => write!(
                f,
                "directory {dir}: entry {} names inode {ino}, which is not allocated",
                show(name)
            ),
            EntryKindMismatch {
                dir,
                name,
                ino,
                entry,
                inode,
            } => write!(
                f,
                "directory {dir}: entry {} says {entry:?} but inode {ino} is {inode:?}",
                show(name)
            ),
            DirectoryLinkedTwice { dir, name, ino } => write!(
                f,
                "directory {dir}: entry {} is a second name for directory {ino}",
                show(name)
            ),
            WrongParent {
                dir,
                recorded,
                actual,
            } => write!(
                f,
                "directory {dir}: parent recorded as {recorded}, but it is named in {actual}"
            ),
            Unreachable { ino, kind, nlink } => write!(
                f,
                "inode {ino} ({kind:?}, {nlink} links) is not reachable from the root"
            ),
            LinkCount {
                ino,
                stored,
                counted,
            } => write!(f, "inode {ino}: link count {stored}, counted {counted}"),
            UnknownFlags { ino, flags } => {
                write!(f, "inode {ino}: unknown flags {flags:#x}")
            }
        }
    }
}
