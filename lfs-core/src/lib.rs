//! lfs-core: the log-structured filesystem engine.
//!
//! Layered bottom-up; nothing reaches upward:
//! `format` (pure encode/decode) → `device` (one narrow trait) → `writer` + `log` (segment
//! buffer, write units, back-end thread) → `imap`, `usage`, `dirty`, `bmap`, `dir`
//! (in-memory maps and tables) → `fs` (the filesystem API, free of FUSE types: mkfs, mount,
//! checkpoints, recovery, cleaning) → `fsck` (the checker's driver over `fs`). Beside them:
//! `error`, `cli` (what every tool's main shares) and `fuzz` (entry points of the fuzz
//! targets).
pub mod bmap;
pub mod cli;
pub mod device;
pub mod dir;
pub mod dirty;
pub mod error;
pub mod format;
pub mod fs;
pub mod fsck;
#[cfg(feature = "testing")]
pub mod fuzz;
pub mod imap;
pub mod log;
pub mod usage;
pub mod writer;

pub use error::{Damage, FsError, MountError, NotLfs, Result};
pub use fs::{mkfs, Fs, MkfsOptions, MountOptions};
