//! The engine's error type. Every variant maps to one errno in lfs-fuse's table; the data in
//! the variants is for logs and for fsck.

use crate::format::FormatError;

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
    Stale(u64),
    #[error("device I/O error: {0}")]
    Io(#[from] std::io::Error),
    #[error("corrupt {what} at block {addr}: {source}")]
    Corrupt {
        what: &'static str,
        addr: u64,
        source: FormatError,
    },
    #[error("filesystem damaged: {0}")]
    Damaged(String),
    /// mkfs: no filesystem can be laid out with these parameters on this device (too small,
    /// a bad segment size…). Not damage: nothing was there yet.
    #[error("{0}")]
    Layout(FormatError),
    /// Not an LFS filesystem at all (no superblock; a device too small for one).
    #[error("not an LFS filesystem ({0})")]
    NotLfs(String),
    /// One of our own structures failed to encode: a bug in this code, never damage.
    #[error("internal error (a bug): {0}")]
    Bug(String),
    #[error(
        "an earlier write or flush failed; the filesystem refuses writes until it is mounted again"
    )]
    Poisoned,
    #[error("the filesystem was shut down (unmounted)")]
    ShutDown,
}

pub type Result<T> = std::result::Result<T, FsError>;

impl FsError {
    pub(crate) fn corrupt(what: &'static str, addr: u64) -> impl FnOnce(FormatError) -> FsError {
        move |source| FsError::Corrupt { what, addr, source }
    }
}
