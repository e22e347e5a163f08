//! The engine's error type. Every variant maps to one errno in lfs-fuse's table; the data in
//! the variants is for logs and for fsck.

use crate::format::{BlockAddr, FormatError, Ino};

#[derive(Debug, thiserror::Error)]
pub enum FsError {
    #[error("no such file or directory")]
    NotFound,
    #[error("file exists")]
    Exists,
    #[error("directory not empty")]
    NotEmpty,
    #[error("not a directory")]
    NotDir,
    #[error("is a directory")]
    IsDir,
    #[error("file name too long (more than 255 bytes)")]
    NameTooLong,
    #[error("invalid argument: {0}")]
    Invalid(&'static str),
    #[error("no space left on device")]
    NoSpace,
    #[error("file too large")]
    FileTooBig,
    #[error("too many links")]
    TooManyLinks,
    #[error("no such attribute")]
    NoAttr,
    #[error("result does not fit the buffer")]
    Range,
    #[error("attribute list too long")]
    TooBig,
    #[error("operation not permitted")]
    NotPermitted,
    #[error("permission denied")]
    AccessDenied,
    #[error("no data or hole at or past that offset (past the end of the file)")]
    NoSuchOffset,
    #[error("read-only filesystem")]
    ReadOnly,
    #[error("operation not supported")]
    NotSupported,
    #[error("stale file handle (inode {0} no longer exists)")]
    Stale(Ino),
    #[error("device I/O error: {0}")]
    Io(#[from] std::io::Error),
    #[error("corrupt {what} at block {addr}: {source}")]
    Corrupt {
        what: &'static str,
        addr: BlockAddr,
        source: FormatError,
    },
    /// What was read decodes, but does not hold together (a pointer out of range, a size no
    /// structure can have, a tree that does not reach the root).
    #[error("filesystem damaged: {0}")]
    Damaged(Damage),
    /// mkfs: no filesystem can be laid out with these parameters on this device (too small,
    /// a bad segment size…). Not damage: nothing was there yet.
    #[error("{0}")]
    Layout(FormatError),
    /// mount (and fsck, lfs-inspect): the filesystem found cannot be mounted as it stands.
    #[error("{0}")]
    Mount(MountError),
    /// Not an LFS filesystem at all (no superblock; a device too small for one).
    #[error("not an LFS filesystem ({0})")]
    NotLfs(NotLfs),
    /// One of our own structures failed to encode: a bug in this code, never damage.
    #[error("internal error (a bug): {what}: {source}")]
    Bug { what: String, source: FormatError },
    #[error(
        "an earlier write or flush failed; the filesystem refuses writes until it is mounted again"
    )]
    Poisoned,
    #[error("the filesystem was shut down (unmounted)")]
    ShutDown,
    /// A second [`crate::Fs::shutdown`] after the first failed: that failure, as it read.
    #[error("the final checkpoint at unmount failed: {0}")]
    ShutDownFailed(String),
}

/// Damage found in structures that decoded: each kind with the numbers that place it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Damage {
    #[error("block address {addr} is outside the log")]
    AddrOutsideLog { addr: BlockAddr },
    #[error("a run of {len} blocks at block {addr} lies beyond any device")]
    RunBeyondDevice { addr: BlockAddr, len: u64 },
    #[error("inode {ino} is allocated but was never written")]
    InodeNeverWritten { ino: Ino },
    #[error("inode {ino}: slot {slot} missing in block {addr}")]
    InodeSlotMissing { ino: Ino, slot: u8, addr: BlockAddr },
    #[error("inode {ino}: the inode map points at another inode (block {addr}, slot {slot})")]
    InodeMismatch { ino: Ino, addr: BlockAddr, slot: u8 },
    #[error("inode block {addr}: inode number {ino} is beyond the inode map")]
    InodeBeyondMap { ino: Ino, addr: BlockAddr },
    #[error("directory inode {ino} claims {size} bytes")]
    DirectoryTooLarge { ino: Ino, size: u64 },
    #[error("symlink inode {ino} claims a target of {size} bytes")]
    SymlinkSize { ino: Ino, size: u64 },
    #[error("the parent chain from directory {ino} does not reach the root")]
    ParentChainBroken { ino: Ino },
    #[error("block {vblock} at {addr}: its checksum does not match (stored {stored:#010x}, read {computed:#010x}){}", if *copies > 1 { " in either copy" } else { "" })]
    BlockChecksum {
        vblock: u64,
        addr: BlockAddr,
        stored: u32,
        computed: u32,
        copies: u8,
    },
    #[error("virtual block {vblock} is not allocated, yet something points at it")]
    VBlockFree { vblock: u64 },
    #[error("the root directory is not allocated")]
    RootUnallocated,
    #[error("/lost+found exists and is not a directory")]
    LostFoundNotDirectory,
}

/// Why a filesystem that is there cannot be mounted.
#[derive(Debug, thiserror::Error)]
pub enum MountError {
    #[error("the device holds {have} bytes but the filesystem needs {need}")]
    DeviceTooSmall { have: u64, need: u64 },
    #[error("no valid checkpoint (region A: {a}; region B: {b})")]
    NoCheckpoint { a: FormatError, b: FormatError },
    /// Both checkpoints are valid, but mounting from either finds damage.
    #[error("{newest} (and from the other checkpoint region: {older})")]
    NeitherRegion {
        newest: Box<FsError>,
        older: Box<FsError>,
    },
}

/// Why a device holds no LFS filesystem.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NotLfs {
    #[error("the device holds only {len} bytes")]
    TooSmall { len: u64 },
    /// Something else's signature where our superblock would be.
    #[error("{0}")]
    Foreign(FormatError),
    #[error("no valid superblock (primary: {primary}; backup: {backup})")]
    NoSuperblock {
        primary: FormatError,
        backup: FormatError,
    },
}

impl From<Damage> for FsError {
    fn from(d: Damage) -> FsError {
        FsError::Damaged(d)
    }
}

impl From<MountError> for FsError {
    fn from(e: MountError) -> FsError {
        FsError::Mount(e)
    }
}

impl From<NotLfs> for FsError {
    fn from(e: NotLfs) -> FsError {
        FsError::NotLfs(e)
    }
}

pub type Result<T> = std::result::Result<T, FsError>;

impl FsError {
    pub(crate) fn corrupt(
        what: &'static str,
        addr: BlockAddr,
    ) -> impl FnOnce(FormatError) -> FsError {
        move |source| FsError::Corrupt { what, addr, source }
    }
}
